//! The PostgreSQL wire protocol with a real client (`tokio-postgres`, and `psql` when it is
//! installed): the same answers as `POST /api/sql`, PostgreSQL's catalog for tools, the
//! guard, tenants by database name, and token passwords.

use std::time::Duration;

use serde_json::Value;
use tokio_postgres::error::SqlState;
use tokio_postgres::{Client, NoTls, SimpleQueryMessage};

use crate::server::{loaded_server, run_loadgen, TestServer};

/// Connects to the server's PostgreSQL listener.
pub(crate) async fn connect(
    server: &TestServer,
    database: &str,
    password: Option<&str>,
) -> Result<Client, tokio_postgres::Error> {
    let mut config = tokio_postgres::Config::new();
    config
        .host("127.0.0.1")
        .port(server.pg.port())
        .user("analyst")
        .dbname(database)
        .connect_timeout(Duration::from_secs(10));
    if let Some(p) = password {
        config.password(p);
    }
    let (client, connection) = config.connect(NoTls).await?;
    tokio::spawn(connection);
    Ok(client)
}

/// The rows of a simple query, as text (NULL as None).
pub(crate) async fn simple(client: &Client, sql: &str) -> Vec<Vec<Option<String>>> {
    client
        .simple_query(sql)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e:?}"))
        .into_iter()
        .filter_map(|m| match m {
            SimpleQueryMessage::Row(row) => Some(
                (0..row.len())
                    .map(|i| row.get(i).map(str::to_string))
                    .collect(),
            ),
            _ => None,
        })
        .collect()
}

/// The rows of `/api/sql`'s JSON as text, in column order, as PostgreSQL prints them.
fn http_rows(rows: &[Value], columns: &[&str]) -> Vec<Vec<Option<String>>> {
    rows.iter()
        .map(|r| {
            columns
                .iter()
                .map(|c| match &r[*c] {
                    Value::Null => None,
                    Value::String(s) => Some(s.clone()),
                    other => Some(other.to_string()),
                })
                .collect()
        })
        .collect()
}

/// The SQLSTATE and message of a failed statement.
fn sql_error(e: &tokio_postgres::Error) -> (SqlState, String) {
    let db = e
        .as_db_error()
        .unwrap_or_else(|| panic!("not a server error: {e:?}"));
    (db.code().clone(), db.message().to_string())
}

#[tokio::test]
async fn postgres_clients_get_the_answers_of_the_http_api() {
    let dir = tempfile::tempdir().unwrap();
    let (server, acked) = loaded_server(dir.path(), &[], 150, 21).await;
    let client = connect(&server, "default", None).await.unwrap();

    // The simple protocol: the same rows as /api/sql.
    for (sql, columns) in [
        (
            "SELECT service_name, count(*) AS spans, sum(duration_nano) AS total \
             FROM spans GROUP BY service_name ORDER BY service_name",
            &["service_name", "spans", "total"][..],
        ),
        (
            "SELECT trace_id_hex, root_service, span_count, error_count FROM traces \
             ORDER BY trace_id_hex LIMIT 20",
            &["trace_id_hex", "root_service", "span_count", "error_count"][..],
        ),
        (
            "SELECT name, kind, status_code FROM spans WHERE http_response_status_code >= 500 \
             ORDER BY name, kind, status_code LIMIT 50",
            &["name", "kind", "status_code"][..],
        ),
    ] {
        let pg = simple(&client, sql).await;
        let http = http_rows(&server.sql(sql).await, columns);
        assert!(!pg.is_empty(), "{sql}");
        assert_eq!(pg, http, "{sql}");
    }

    // The helper functions equal the expressions they stand for.
    let helpers = simple(
        &client,
        "SELECT hex_id(span_id) AS id, attr(span_attributes, 'http.route') AS route, \
         attr_int(span_attributes, 'http.response.status_code') AS code, \
         attr(span_attributes, 'http.response.status_code') AS code_text \
         FROM spans WHERE attr_int(span_attributes, 'http.response.status_code') >= 400 \
         ORDER BY id",
    )
    .await;
    let long_form = http_rows(
        &server
            .sql(
                "SELECT encode(span_id, 'hex') AS id, \
                 span_attributes['http.route']['str'] AS route, \
                 span_attributes['http.response.status_code']['int'] AS code, \
                 CAST(span_attributes['http.response.status_code']['int'] AS VARCHAR) AS code_text \
                 FROM spans WHERE span_attributes['http.response.status_code']['int'] >= 400 \
                 ORDER BY id",
            )
            .await,
        &["id", "route", "code", "code_text"],
    );
    assert!(!helpers.is_empty());
    assert_eq!(helpers, long_form);

    // The extended protocol with parameters, typed values back.
    let services = server
        .sql("SELECT service_name, count(*) AS n FROM spans GROUP BY service_name")
        .await;
    for row in &services {
        let service = row["service_name"].as_str().unwrap();
        let n: i64 = client
            .query_one(
                "SELECT count(*) AS n FROM spans WHERE service_name = $1",
                &[&service],
            )
            .await
            .unwrap()
            .get("n");
        assert_eq!(n, row["n"].as_i64().unwrap(), "{service}");
    }
    let total: i64 = client
        .query_one(
            "SELECT count(*) FROM spans WHERE duration_nano >= $1",
            &[&0i64],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(total as u64, acked);
    // A prepared statement runs again with other values.
    let statement = client
        .prepare("SELECT count(*) FROM spans WHERE duration_nano > $1")
        .await
        .unwrap();
    let all: i64 = client
        .query_one(&statement, &[&-1i64])
        .await
        .unwrap()
        .get(0);
    let none: i64 = client
        .query_one(&statement, &[&i64::MAX])
        .await
        .unwrap()
        .get(0);
    assert_eq!((all as u64, none), (acked, 0));

    // Types: timestamps, bytes, lists, maps as JSON.
    let row = client
        .query_one(
            "SELECT start_time, trace_id, encode(trace_id, 'hex') AS hex, span_attributes, \
             start_time_unix_nano FROM spans ORDER BY start_time_unix_nano LIMIT 1",
            &[],
        )
        .await
        .unwrap();
    let start: std::time::SystemTime = row.get("start_time");
    let nanos: i64 = row.get("start_time_unix_nano");
    let micros = start
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_micros() as i64;
    assert_eq!(micros, nanos / 1000);
    let id: Vec<u8> = row.get("trace_id");
    let hex: String = row.get("hex");
    assert_eq!(id.len(), 16);
    assert_eq!(hex::encode(&id), hex);
    let attributes: String = row.get("span_attributes");
    let attributes: Value = serde_json::from_str(&attributes).unwrap();
    assert!(attributes.is_object(), "{attributes}");
    let services: Vec<String> = client
        .query_one(
            "SELECT services FROM traces ORDER BY cardinality(services) DESC LIMIT 1",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert!(services.len() > 1, "{services:?}");
    // Every column of spans comes through (maps, lists of structs as JSON).
    let rows = client
        .query("SELECT * FROM spans LIMIT 3", &[])
        .await
        .unwrap();
    assert_eq!(rows.len(), 3);
    let everything = simple(&client, "SELECT * FROM spans LIMIT 3").await;
    assert_eq!(everything.len(), 3);

    // PostgreSQL's catalog, as psql's \dt and Grafana's table list ask for it.
    let dt = simple(
        &client,
        r#"SELECT n.nspname as "Schema", c.relname as "Name",
             CASE c.relkind WHEN 'r' THEN 'table' WHEN 'v' THEN 'view' WHEN 'm' THEN 'materialized view'
               WHEN 'i' THEN 'index' WHEN 'S' THEN 'sequence' WHEN 't' THEN 'TOAST table'
               WHEN 'f' THEN 'foreign table' WHEN 'p' THEN 'partitioned table'
               WHEN 'I' THEN 'partitioned index' END as "Type",
             pg_catalog.pg_get_userbyid(c.relowner) as "Owner"
           FROM pg_catalog.pg_class c
             LEFT JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
             LEFT JOIN pg_catalog.pg_am am ON am.oid = c.relam
           WHERE c.relkind IN ('r','p','')
             AND n.nspname <> 'pg_catalog'
             AND n.nspname !~ '^pg_toast'
             AND n.nspname <> 'information_schema'
             AND pg_catalog.pg_table_is_visible(c.oid)
           ORDER BY 1,2;"#,
    )
    .await;
    let names: Vec<_> = dt.iter().map(|r| r[1].clone().unwrap()).collect();
    assert!(names.contains(&"spans".to_string()), "{dt:?}");
    assert!(names.contains(&"span_metrics_1m".to_string()), "{dt:?}");
    let tables = simple(
        &client,
        "SELECT table_name FROM information_schema.tables WHERE table_schema = 'public' \
         ORDER BY table_name",
    )
    .await;
    let tables: Vec<_> = tables.into_iter().map(|r| r[0].clone().unwrap()).collect();
    for want in ["span_metrics_1m", "spans", "traces"] {
        assert!(tables.contains(&want.to_string()), "{tables:?}");
    }
    // Grafana's PostgreSQL data source: its table list, then a table's columns.
    let search_path = "SELECT CASE WHEN trim(s[i]) = '\"$user\"' THEN user ELSE trim(s[i]) END \
         FROM generate_series(\
           array_lower(string_to_array(current_setting('search_path'),','),1), \
           array_upper(string_to_array(current_setting('search_path'),','),1)) as i, \
         string_to_array(current_setting('search_path'),',') s";
    let grafana_tables = simple(
        &client,
        &format!(
            "SELECT CASE WHEN quote_ident(table_schema) IN ({search_path}) \
               THEN quote_ident(table_name) \
               ELSE quote_ident(table_schema) || '.' || quote_ident(table_name) END AS \"table\" \
             FROM information_schema.tables \
             WHERE quote_ident(table_schema) NOT IN ('information_schema', 'pg_catalog') \
             ORDER BY CASE WHEN quote_ident(table_schema) IN ({search_path}) \
               THEN 0 ELSE 1 END, 1"
        ),
    )
    .await;
    let grafana_tables: Vec<_> = grafana_tables
        .into_iter()
        .map(|r| r[0].clone().unwrap())
        .collect();
    // The search_path membership subquery is answered with no rows (datafusion-pg-catalog
    // replaces it), so Grafana lists the tables with their schema, which it then queries.
    assert_eq!(
        grafana_tables,
        ["public.span_metrics_1m", "public.spans", "public.traces"]
    );
    let grafana_columns = simple(
        &client,
        &format!(
            "SELECT quote_ident(column_name) AS \"column\", data_type AS \"type\" \
             FROM information_schema.columns \
             WHERE CASE WHEN array_length(parse_ident('public.spans'),1) = 2 \
               THEN quote_ident(table_schema) = (parse_ident('public.spans'))[1] \
                 AND quote_ident(table_name) = (parse_ident('public.spans'))[2] \
               ELSE quote_ident(table_name) = 'public.spans' \
                 AND quote_ident(table_schema) IN ({search_path}) END"
        ),
    )
    .await;
    let grafana_columns: Vec<_> = grafana_columns
        .into_iter()
        .map(|r| r[0].clone().unwrap())
        .collect();
    for want in ["trace_id", "service_name", "duration_nano", "start_time"] {
        assert!(
            grafana_columns.contains(&want.to_string()),
            "{grafana_columns:?}"
        );
    }
    assert_eq!(
        simple(
            &client,
            "SELECT current_database(), current_setting('search_path')"
        )
        .await,
        vec![vec![Some("default".into()), Some("public".into())]]
    );

    // Session statements clients send on their own.
    simple(&client, "BEGIN").await;
    simple(&client, "SET application_name = 'notebook'").await;
    assert_eq!(
        simple(&client, "SHOW application_name").await,
        vec![vec![Some("notebook".into())]]
    );
    assert_eq!(
        simple(&client, "SHOW transaction isolation level").await,
        vec![vec![Some("read committed".into())]]
    );
    simple(&client, "COMMIT").await;
    let mut client = client;
    let tx = client.transaction().await.unwrap();
    let n: i64 = tx
        .query_one("SELECT count(*) FROM spans", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(n as u64, acked);
    tx.commit().await.unwrap();

    // The guard, with SQLSTATEs; the session goes on after each refusal.
    for (sql, code, says) in [
        (
            "INSERT INTO spans (name) VALUES ('x')",
            SqlState::READ_ONLY_SQL_TRANSACTION,
            "read-only",
        ),
        (
            "DROP TABLE spans",
            SqlState::READ_ONLY_SQL_TRANSACTION,
            "read-only",
        ),
        (
            "COPY (SELECT 1) TO '/tmp/tracelake-pg-copy.csv'",
            SqlState::READ_ONLY_SQL_TRANSACTION,
            "read-only",
        ),
        (
            "SET datafusion.execution.batch_size = 1",
            SqlState::READ_ONLY_SQL_TRANSACTION,
            "may only set",
        ),
        (
            "SET work_mem = '8GB'",
            SqlState::READ_ONLY_SQL_TRANSACTION,
            "may only set",
        ),
        (
            "SELECT * FROM no_such_table",
            SqlState::SYNTAX_ERROR_OR_ACCESS_RULE_VIOLATION,
            "no_such_table",
        ),
        (
            "SELECT no_such_column FROM spans",
            SqlState::UNDEFINED_COLUMN,
            "no_such_column",
        ),
    ] {
        let err = client.simple_query(sql).await.expect_err(sql);
        let (got, message) = sql_error(&err);
        assert_eq!(got, code, "{sql}: {message}");
        assert!(message.contains(says), "{sql}: {message}");
        let n: i64 = client
            .query_one("SELECT count(*) FROM spans", &[])
            .await
            .unwrap()
            .get(0);
        assert_eq!(n as u64, acked, "after {sql}");
    }
    assert!(!std::path::Path::new("/tmp/tracelake-pg-copy.csv").exists());
    // A syntax error points at its place.
    let err = client
        .simple_query("SELECT (1 FROM spans")
        .await
        .unwrap_err();
    let (code, message) = sql_error(&err);
    assert_eq!(code, SqlState::SYNTAX_ERROR, "{message}");
    assert!(
        matches!(
            err.as_db_error().unwrap().position(),
            Some(tokio_postgres::error::ErrorPosition::Original(_))
        ),
        "{message}"
    );
    // The extended protocol refuses at Parse.
    let err = client
        .prepare("DELETE FROM spans WHERE name = $1")
        .await
        .unwrap_err();
    assert_eq!(
        sql_error(&err).0,
        SqlState::READ_ONLY_SQL_TRANSACTION,
        "{err:?}"
    );
    assert_eq!(server.count("").await, acked);
}

async fn count(client: &Client) -> u64 {
    let n: i64 = client
        .query_one("SELECT count(*) FROM spans", &[])
        .await
        .unwrap()
        .get(0);
    n as u64
}

#[tokio::test]
async fn the_database_name_selects_the_tenant() {
    let dir = tempfile::tempdir().unwrap();
    let (server, acked) = loaded_server(dir.path(), &[], 150, 21).await;
    let summary = run_loadgen(&[
        "--traces",
        "20",
        "--rate",
        "0",
        "--seed",
        "5",
        "--tenant",
        "acme",
        "--endpoint",
        &server.grpc_url(),
    ]);
    let acme = summary["spans_acked"].as_u64().unwrap();
    let default = connect(&server, "default", None).await.unwrap();
    let client = connect(&server, "acme", None).await.unwrap();
    for _ in 0..100 {
        if count(&client).await == acme {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(count(&client).await, acme);
    assert_eq!(count(&default).await, acked);
    assert_eq!(
        simple(&client, "SELECT current_database()").await,
        vec![vec![Some("acme".into())]]
    );
    let err = connect(&server, "no such tenant!", None)
        .await
        .expect_err("an invalid tenant name is refused");
    assert_eq!(sql_error(&err).0, SqlState::INVALID_CATALOG_NAME, "{err:?}");
}

#[tokio::test]
async fn token_passwords_and_the_row_limit() {
    let dir = tempfile::tempdir().unwrap();
    let token = "pg-test-token-0123456789";
    let config = dir.path().join("tracelake.toml");
    std::fs::write(
        &config,
        format!("[auth]\ntokens = [\"{token}\"]\n\n[query]\nmax_rows = 25\n"),
    )
    .unwrap();
    let (server, _) = loaded_server(
        &dir.path().join("data"),
        &["--config", config.to_str().unwrap()],
        150,
        21,
    )
    .await;

    for wrong in [None, Some("not-the-token-at-all")] {
        let err = connect(&server, "default", wrong)
            .await
            .expect_err("refused without the token");
        if wrong.is_some() {
            let (code, message) = sql_error(&err);
            assert_eq!(code, SqlState::INVALID_PASSWORD, "{message}");
            assert!(message.contains("[auth] tokens"), "{message}");
        }
    }
    let client = connect(&server, "default", Some(token)).await.unwrap();
    let rows = client
        .query("SELECT name FROM spans LIMIT 25", &[])
        .await
        .unwrap();
    assert_eq!(rows.len(), 25);
    // More rows than query.max_rows: an error that names the limit, not a silent cut.
    let err = client
        .query("SELECT name FROM spans", &[])
        .await
        .unwrap_err();
    let (code, message) = sql_error(&err);
    assert_eq!(code, SqlState::PROGRAM_LIMIT_EXCEEDED, "{message}");
    assert!(message.contains("max_rows"), "{message}");
    let n: i64 = client
        .query_one("SELECT count(*) FROM spans", &[])
        .await
        .unwrap()
        .get(0);
    assert!(n > 25);
}

/// `psql -c '\dt'`, when psql is installed (CI installs it and sets `TRACELAKE_REQUIRE_PSQL`).
#[tokio::test]
async fn psql_lists_the_tables() {
    let psql = std::process::Command::new("psql").arg("--version").output();
    if psql.is_err() {
        assert!(
            std::env::var_os("TRACELAKE_REQUIRE_PSQL").is_none(),
            "TRACELAKE_REQUIRE_PSQL is set but psql is not installed"
        );
        eprintln!("psql is not installed: skipping the psql check");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (server, acked) = loaded_server(dir.path(), &[], 150, 21).await;
    let port = server.pg.port().to_string();
    let run = |args: &[&str]| {
        let out = std::process::Command::new("psql")
            .args([
                "-h",
                "127.0.0.1",
                "-p",
                &port,
                "-U",
                "analyst",
                "-d",
                "default",
            ])
            .args(["-X", "-v", "ON_ERROR_STOP=1"])
            .args(args)
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        assert!(out.status.success(), "psql {args:?}: {stdout}\n{stderr}");
        stdout
    };
    let dt = run(&["-c", "\\dt"]);
    assert!(dt.contains("spans"), "{dt}");
    assert!(dt.contains("span_metrics_1m"), "{dt}");
    let described = run(&["-c", "\\d spans"]);
    for column in ["trace_id", "service_name", "duration_nano", "start_time"] {
        assert!(described.contains(column), "{described}");
    }
    let count = run(&["-A", "-t", "-c", "SELECT count(*) FROM spans"]);
    assert_eq!(count.trim(), acked.to_string());
}

/// The statements DBeaver (through PostgreSQL's JDBC driver) sends on connect and to list a
/// schema's tables.
#[tokio::test]
async fn dbeaver_connects_and_lists_the_tables() {
    let dir = tempfile::tempdir().unwrap();
    let (server, _) = loaded_server(dir.path(), &[], 20, 2).await;
    let client = connect(&server, "default", None).await.unwrap();
    for sql in [
        "SET extra_float_digits = 3",
        "SET application_name = 'PostgreSQL JDBC Driver'",
        "SET application_name = 'DBeaver 25.1.5 - Main <default>'",
        "SELECT current_schema(),session_user",
        "SHOW search_path",
        "SELECT version()",
        "SELECT db.oid,db.* FROM pg_catalog.pg_database db WHERE datname='default'",
        "SELECT * FROM pg_catalog.pg_settings where name='standard_conforming_strings'",
        "SELECT * FROM pg_catalog.pg_enum WHERE 1<>1 LIMIT 1",
        "SELECT reltype FROM pg_catalog.pg_class WHERE 1<>1 LIMIT 1",
    ] {
        client
            .simple_query(sql)
            .await
            .unwrap_or_else(|e| panic!("{sql}: {e:?}"));
    }
    let namespaces = simple(
        &client,
        "SELECT n.oid,n.*,d.description FROM pg_catalog.pg_namespace n \
         LEFT OUTER JOIN pg_catalog.pg_description d ON d.objoid=n.oid AND d.objsubid=0 \
         AND d.classoid='pg_namespace'::regclass ORDER BY nspname",
    )
    .await;
    let public = namespaces
        .iter()
        .find(|r| r[2].as_deref() == Some("public"))
        .unwrap_or_else(|| panic!("{namespaces:?}"))[0]
        .clone()
        .unwrap();
    let tables = simple(
        &client,
        &format!(
            "SELECT c.oid,c.relname,d.description,\
             pg_catalog.pg_get_expr(c.relpartbound, c.oid) as partition_expr, \
             pg_catalog.pg_get_partkeydef(c.oid) as partition_key \
             FROM pg_catalog.pg_class c \
             LEFT OUTER JOIN pg_catalog.pg_description d ON d.objoid=c.oid AND d.objsubid=0 \
             AND d.classoid='pg_class'::regclass \
             WHERE c.relnamespace={public} AND c.relkind not in ('i','I','c') ORDER BY c.relname"
        ),
    )
    .await;
    let names: Vec<_> = tables.iter().map(|r| r[1].clone().unwrap()).collect();
    for want in ["span_metrics_1m", "spans", "traces"] {
        assert!(names.contains(&want.to_string()), "{names:?}");
    }
}
