//! Arrow Flight SQL on `--flight-addr`, through arrow-flight's own `FlightSqlServiceClient`:
//! the same answers as `POST /api/sql`, prepared statements with bound parameters, the
//! catalog, the read-only guard, tenants and tokens.

use std::sync::Arc;
use std::time::Duration;

use arrow::array::{Array, ArrayRef, AsArray, Int32Array, RecordBatch, StringArray, UnionArray};
use arrow::datatypes::{DataType, Schema};
use arrow_flight::error::FlightError;
use arrow_flight::flight_service_client::FlightServiceClient;
use arrow_flight::sql::client::FlightSqlServiceClient;
use arrow_flight::sql::{CommandGetDbSchemas, CommandGetTables, SqlInfo};
use arrow_flight::{Empty, FlightInfo, IpcMessage};
use futures::TryStreamExt;
use serde_json::Value;
use tonic::transport::Channel;
use tonic::Code;

use crate::data;
use crate::server::{loaded_server, TestServer};

type Client = FlightSqlServiceClient<Channel>;

async fn channel(server: &TestServer) -> Channel {
    Channel::from_shared(format!("http://{}", server.flight))
        .unwrap()
        .connect()
        .await
        .unwrap()
}

pub(crate) async fn connect(server: &TestServer) -> Client {
    FlightSqlServiceClient::new(channel(server).await)
}

/// Redeems every endpoint of `info`.
async fn fetch(client: &mut Client, info: FlightInfo) -> Result<Vec<RecordBatch>, FlightError> {
    let mut batches = Vec::new();
    for endpoint in info.endpoint {
        let ticket = endpoint.ticket.expect("an endpoint with a ticket");
        let stream = client.do_get(ticket).await?;
        batches.extend(stream.try_collect::<Vec<_>>().await?);
    }
    Ok(batches)
}

/// Runs `sql` as a statement: `GetFlightInfo` then `DoGet`.
pub(crate) async fn query(client: &mut Client, sql: &str) -> Result<Vec<RecordBatch>, FlightError> {
    let info = client.execute(sql.to_string(), None).await?;
    fetch(client, info).await
}

/// The rows as `POST /api/sql` renders them (the same Arrow JSON writer).
fn json_rows(batches: &[RecordBatch]) -> Vec<Value> {
    let mut buf = Vec::new();
    let mut writer = arrow::json::ArrayWriter::new(&mut buf);
    for b in batches {
        writer.write(b).unwrap();
    }
    writer.finish().unwrap();
    drop(writer);
    if buf.is_empty() {
        return Vec::new();
    }
    serde_json::from_slice(&buf).unwrap()
}

/// The gRPC code and message of a failed call.
pub(crate) fn status_of(e: FlightError) -> (Code, String) {
    match e {
        FlightError::Tonic(status) => (status.code(), status.message().to_string()),
        other => panic!("not a gRPC status: {other}"),
    }
}

/// The values of the string column `name`.
fn strings(batches: &[RecordBatch], name: &str) -> Vec<String> {
    batches
        .iter()
        .flat_map(|b| {
            let column = b.column_by_name(name).unwrap().as_string::<i32>();
            (0..column.len())
                .map(|i| column.value(i).to_string())
                .collect::<Vec<_>>()
        })
        .collect()
}

fn one_row(value: ArrayRef) -> RecordBatch {
    RecordBatch::try_from_iter([("$1", value)]).unwrap()
}

/// Starts a server and loads it with generated traces; returns the spans acknowledged.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flight_sql_answers_like_http_sql() {
    let dir = tempfile::tempdir().unwrap();
    let (mut server, acked) = loaded_server(dir.path(), &[], 300, 11).await;
    let mut client = connect(&server).await;

    let by_service =
        "SELECT service_name, count(*) AS n FROM spans GROUP BY service_name ORDER BY service_name";
    let services: Vec<String> = server
        .sql(by_service)
        .await
        .iter()
        .map(|r| r["service_name"].as_str().unwrap().to_string())
        .collect();
    assert!(services.len() > 1, "{services:?}");
    let queries = [
        by_service.to_string(),
        "SELECT trace_id_hex, root_service, root_name, span_count, error_count, \
         array_to_string(services, ',') AS services FROM traces ORDER BY trace_id_hex"
            .to_string(),
        format!(
            "SELECT name, duration_nano, http_response_status_code FROM spans \
             WHERE service_name = '{}' AND duration_nano > 1000 ORDER BY span_id",
            services[0]
        ),
    ];
    for sql in &queries {
        let http = server.sql(sql).await;
        assert!(!http.is_empty(), "{sql}: no rows to compare");
        let info = client.execute(sql.clone(), None).await.unwrap();
        let announced = info.clone().try_decode_schema().unwrap();
        let batches = fetch(&mut client, info).await.unwrap();
        for b in &batches {
            assert_eq!(
                *b.schema(),
                announced,
                "{sql}: FlightInfo and DoGet schemas"
            );
        }
        assert_eq!(json_rows(&batches), http, "{sql}");
    }

    // Every span arrives; a large result streams batch by batch (DataFusion's batches are at
    // most 8192 rows), not as one message.
    let batches = query(&mut client, "SELECT span_id, service_name FROM spans")
        .await
        .unwrap();
    let rows: usize = batches.iter().map(RecordBatch::num_rows).sum();
    assert_eq!(rows as u64, acked);
    let batches = query(&mut client, "SELECT * FROM generate_series(1, 50000)")
        .await
        .unwrap();
    let rows: usize = batches.iter().map(RecordBatch::num_rows).sum();
    assert_eq!(rows, 50_000);
    assert!(batches.len() >= 7, "{} batch(es)", batches.len());

    // A prepared statement, its parameter bound with DoPut, equals the literal over HTTP;
    // binding again replaces the value.
    let mut stmt = client
        .prepare(
            "SELECT count(*) AS n FROM spans WHERE service_name = $1".into(),
            None,
        )
        .await
        .unwrap();
    let params = stmt.parameter_schema().unwrap().clone();
    assert_eq!(params.fields().len(), 1, "{params:?}");
    assert_eq!(params.field(0).data_type(), &DataType::Utf8);
    assert_eq!(stmt.dataset_schema().unwrap().field(0).name(), "n");
    let (code, message) = status_of(stmt.execute().await.unwrap_err());
    assert_eq!(code, Code::InvalidArgument, "{message}");
    assert!(message.contains("without values"), "{message}");
    for service in services.iter().take(2) {
        let value: ArrayRef = Arc::new(StringArray::from(vec![service.as_str()]));
        stmt.set_parameters(one_row(value)).unwrap();
        let info = stmt.execute().await.unwrap();
        let flight = json_rows(&fetch(&mut client, info).await.unwrap());
        let http = server
            .sql(&format!(
                "SELECT count(*) AS n FROM spans WHERE service_name = '{service}'"
            ))
            .await;
        assert!(http[0]["n"].as_u64().unwrap() > 0, "{http:?}");
        assert_eq!(flight, http, "{service}");
    }
    stmt.close().await.unwrap();

    // A parameter of another type is cast to the placeholder's.
    let mut stmt = client
        .prepare(
            "SELECT count(*) AS n FROM spans WHERE duration_nano > $1".into(),
            None,
        )
        .await
        .unwrap();
    stmt.set_parameters(one_row(Arc::new(Int32Array::from(vec![5_000_000]))))
        .unwrap();
    let info = stmt.execute().await.unwrap();
    let flight = json_rows(&fetch(&mut client, info).await.unwrap());
    let http = server
        .sql("SELECT count(*) AS n FROM spans WHERE duration_nano > 5000000")
        .await;
    assert!(http[0]["n"].as_u64().unwrap() > 0, "{http:?}");
    assert_eq!(flight, http);
    // A value that does not convert is refused, not taken as null.
    stmt.set_parameters(one_row(Arc::new(StringArray::from(vec!["fast"]))))
        .unwrap();
    let (code, message) = status_of(stmt.execute().await.unwrap_err());
    assert_eq!(code, Code::InvalidArgument, "{message}");
    assert!(message.contains("parameter $1 is Utf8"), "{message}");
    // Two rows at once are refused.
    stmt.set_parameters(one_row(Arc::new(Int32Array::from(vec![1, 2]))))
        .unwrap();
    let (code, message) = status_of(stmt.execute().await.unwrap_err());
    assert_eq!(code, Code::InvalidArgument, "{message}");
    assert!(message.contains("one row"), "{message}");

    // The catalog.
    let info = client.get_catalogs().await.unwrap();
    let catalogs = strings(&fetch(&mut client, info).await.unwrap(), "catalog_name");
    assert!(catalogs.contains(&"tracelake".to_string()), "{catalogs:?}");

    let info = client
        .get_db_schemas(CommandGetDbSchemas {
            catalog: Some("tracelake".into()),
            db_schema_filter_pattern: None,
        })
        .await
        .unwrap();
    let schemas = strings(&fetch(&mut client, info).await.unwrap(), "db_schema_name");
    for want in ["public", "information_schema"] {
        assert!(schemas.contains(&want.to_string()), "{schemas:?}");
    }

    let tables = |pattern: Option<&str>, types: &[&str]| CommandGetTables {
        catalog: Some("tracelake".into()),
        db_schema_filter_pattern: Some("public".into()),
        table_name_filter_pattern: pattern.map(str::to_string),
        table_types: types.iter().map(|t| t.to_string()).collect(),
        include_schema: true,
    };
    let info = client.get_tables(tables(None, &[])).await.unwrap();
    let batches = fetch(&mut client, info).await.unwrap();
    let names = strings(&batches, "table_name");
    let types = strings(&batches, "table_type");
    let listed: Vec<(&str, &str)> = names
        .iter()
        .map(String::as_str)
        .zip(types.iter().map(String::as_str))
        .collect();
    for want in [
        ("span_metrics_1m", "TABLE"),
        ("spans", "TABLE"),
        ("traces", "VIEW"),
    ] {
        assert!(listed.contains(&want), "{listed:?}");
    }
    // The schema of `spans` as GetTables has it is the schema of `SELECT *` over it.
    let at = names.iter().position(|n| n == "spans").unwrap();
    let schemas: Vec<&[u8]> = batches
        .iter()
        .flat_map(|b| {
            let column = b.column_by_name("table_schema").unwrap().as_binary::<i32>();
            (0..column.len())
                .map(|i| column.value(i))
                .collect::<Vec<_>>()
        })
        .collect();
    let spans_schema = Schema::try_from(IpcMessage(schemas[at].to_vec().into())).unwrap();
    let select_star = client
        .execute("SELECT * FROM spans".into(), None)
        .await
        .unwrap()
        .try_decode_schema()
        .unwrap();
    let shape = |s: &Schema| -> Vec<(String, DataType)> {
        s.fields()
            .iter()
            .map(|f| (f.name().clone(), f.data_type().clone()))
            .collect()
    };
    assert_eq!(shape(&spans_schema), shape(&select_star));
    assert!(spans_schema.field_with_name("service_name").is_ok());

    let info = client.get_tables(tables(Some("span%"), &[])).await.unwrap();
    let mut names = strings(&fetch(&mut client, info).await.unwrap(), "table_name");
    names.sort();
    assert_eq!(names, ["span_metrics_1m", "spans"]);
    let info = client.get_tables(tables(None, &["VIEW"])).await.unwrap();
    let names = strings(&fetch(&mut client, info).await.unwrap(), "table_name");
    assert_eq!(names, ["traces"]);

    let info = client.get_table_types().await.unwrap();
    let types = strings(&fetch(&mut client, info).await.unwrap(), "table_type");
    for want in ["TABLE", "VIEW"] {
        assert!(types.contains(&want.to_string()), "{types:?}");
    }

    let info = client
        .get_sql_info(vec![
            SqlInfo::FlightSqlServerName,
            SqlInfo::FlightSqlServerReadOnly,
        ])
        .await
        .unwrap();
    let batches = fetch(&mut client, info).await.unwrap();
    let mut infos = Vec::new();
    for b in &batches {
        let names = b.column(0).as_primitive::<arrow::datatypes::UInt32Type>();
        let values = b.column(1).as_any().downcast_ref::<UnionArray>().unwrap();
        for i in 0..b.num_rows() {
            let value = values.value(i);
            let text = match value.data_type() {
                DataType::Utf8 => value.as_string::<i32>().value(0).to_string(),
                DataType::Boolean => value.as_boolean().value(0).to_string(),
                other => panic!("unexpected SqlInfo type {other}"),
            };
            infos.push((names.value(i), text));
        }
    }
    infos.sort();
    assert_eq!(
        infos,
        [
            (SqlInfo::FlightSqlServerName as u32, "tracelake".to_string()),
            (SqlInfo::FlightSqlServerReadOnly as u32, "true".to_string()),
        ]
    );

    // The handshake of a server without tokens succeeds and hands out no token.
    client.handshake("anyone", "anything").await.unwrap();
    assert_eq!(client.token(), None);

    // Shutdown finishes with a Flight client still connected.
    let status = server.terminate();
    assert!(status.success(), "{status:?}: {}", server.log());
}

/// Small limits, as in the HTTP guard test.
const GUARD_CONFIG: &str = r#"
[query]
timeout = "5s"
max_rows = 1000
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flight_sql_is_read_only_and_says_why() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("tracelake.toml");
    std::fs::write(&config, GUARD_CONFIG).unwrap();
    let server = TestServer::start(dir.path(), &["--config", config.to_str().unwrap()]).await;
    let mut client = connect(&server).await;
    let one = || vec![serde_json::json!({"one": 1})];

    let out = dir.path().join("out.csv");
    for (sql, want) in [
        (
            "INSERT INTO spans (name) VALUES ('x')".to_string(),
            "is not allowed",
        ),
        ("DROP TABLE spans".to_string(), "is not allowed"),
        (
            format!("COPY spans TO '{}'", out.display()),
            "COPY is not allowed",
        ),
        ("CREATE TABLE t (a INT)".to_string(), "is not allowed"),
        ("SELEC 1".to_string(), "sql parse error"),
        ("SELECT nope FROM spans".to_string(), "nope"),
        ("SELECT 1; SELECT 2".to_string(), "2 statements"),
    ] {
        let (code, message) = status_of(query(&mut client, &sql).await.unwrap_err());
        assert_eq!(code, Code::InvalidArgument, "{sql}: {message}");
        assert!(message.contains(want), "{sql}: {message}");
        // The server carries on.
        let rows = json_rows(&query(&mut client, "SELECT 1 AS one").await.unwrap());
        assert_eq!(rows, one(), "after {sql}");
    }
    assert!(!out.exists(), "COPY wrote a file");

    // Updates and prepared writes are refused with the guard's message, or a read-only one.
    let (code, message) = status_of(
        client
            .execute_update("DELETE FROM spans".into(), None)
            .await
            .unwrap_err(),
    );
    assert_eq!(code, Code::InvalidArgument, "{message}");
    assert!(message.contains("is not allowed"), "{message}");
    let (code, message) = status_of(
        client
            .execute_update("SELECT 1".into(), None)
            .await
            .unwrap_err(),
    );
    assert_eq!(code, Code::InvalidArgument, "{message}");
    assert!(message.contains("read-only"), "{message}");
    let (code, message) = status_of(
        client
            .prepare("DROP TABLE spans".into(), None)
            .await
            .unwrap_err(),
    );
    assert_eq!(code, Code::InvalidArgument, "{message}");
    assert!(message.contains("is not allowed"), "{message}");
    let (code, message) = status_of(client.begin_transaction().await.unwrap_err());
    assert_eq!(code, Code::Unimplemented, "{message}");
    assert!(message.contains("no transactions"), "{message}");

    // The row limit: the first rows arrive, then the stream ends with the limit's message.
    let info = client
        .execute("SELECT * FROM generate_series(1, 5000)".into(), None)
        .await
        .unwrap();
    let ticket = info.endpoint[0].ticket.clone().unwrap();
    let mut stream = client.do_get(ticket).await.unwrap();
    let mut rows = 0;
    let error = loop {
        match stream.try_next().await {
            Ok(Some(batch)) => rows += batch.num_rows(),
            Ok(None) => panic!("the stream ended without the row limit's error"),
            Err(e) => break e,
        }
    };
    assert_eq!(rows, 1000);
    let (code, message) = status_of(error);
    assert_eq!(code, Code::InvalidArgument, "{message}");
    assert!(message.contains("query.max_rows"), "{message}");

    // A malformed tenant is refused.
    client.set_header("x-scope-orgid", "no such/tenant");
    let (code, message) = status_of(query(&mut client, "SELECT 1 AS one").await.unwrap_err());
    assert_eq!(code, Code::InvalidArgument, "{message}");
    assert!(message.contains("invalid tenant id"), "{message}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_tenant_header_selects_the_tenant() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(dir.path(), &[]).await;
    data::send(
        &server,
        "acme",
        vec![data::rich_trace(&data::trace_id(1), "acme-svc", 3)],
    )
    .await;
    let sql = "SELECT service_name, count(*) AS n FROM spans GROUP BY service_name";
    server
        .eventually(Duration::from_secs(20), "acme's spans", || async {
            server.sql_tenant(sql, "acme").await.len() == 1
        })
        .await;
    let http = server.sql_tenant(sql, "acme").await;
    assert_eq!(
        http,
        [serde_json::json!({"service_name": "acme-svc", "n": 3})]
    );

    let mut acme = connect(&server).await;
    acme.set_header("x-scope-orgid", "acme");
    assert_eq!(json_rows(&query(&mut acme, sql).await.unwrap()), http);
    let mut default = connect(&server).await;
    assert!(json_rows(&query(&mut default, sql).await.unwrap()).is_empty());
    let count = "SELECT count(*) AS n FROM spans";
    assert_eq!(
        json_rows(&query(&mut default, count).await.unwrap()),
        [serde_json::json!({"n": 0})]
    );

    // A ticket, or a prepared statement, made for acme is not redeemed for another tenant.
    let info = acme.execute(count.into(), None).await.unwrap();
    let (code, message) = status_of(fetch(&mut default, info.clone()).await.unwrap_err());
    assert_eq!(code, Code::InvalidArgument, "{message}");
    assert!(message.contains("tenant"), "{message}");
    assert_eq!(
        json_rows(&fetch(&mut acme, info).await.unwrap()),
        [serde_json::json!({"n": 3})]
    );
    let mut stmt = acme.prepare(count.into(), None).await.unwrap();
    let info = stmt.execute().await.unwrap();
    let ticket = info.endpoint[0].ticket.clone().unwrap();
    let (code, message) = status_of(default.do_get(ticket).await.unwrap_err());
    assert_eq!(code, Code::InvalidArgument, "{message}");
    assert!(message.contains("tenant"), "{message}");
    assert_eq!(
        json_rows(&fetch(&mut acme, info).await.unwrap()),
        [serde_json::json!({"n": 3})]
    );
}

const TOKEN: &str = "flight-test-token-0123456789";
/// `anyone:flight-test-token-0123456789`, base64.
const BASIC: &str = "Basic YW55b25lOmZsaWdodC10ZXN0LXRva2VuLTAxMjM0NTY3ODk=";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_guard_every_call() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("tracelake.toml");
    std::fs::write(&config, format!("[auth]\ntokens = [\"{TOKEN}\"]\n")).unwrap();
    let server = TestServer::start(dir.path(), &["--config", config.to_str().unwrap()]).await;
    let one = || vec![serde_json::json!({"one": 1})];

    // No token: every call is refused, with how to authenticate.
    let mut client = connect(&server).await;
    let (code, message) = status_of(query(&mut client, "SELECT 1 AS one").await.unwrap_err());
    assert_eq!(code, Code::Unauthenticated, "{message}");
    assert!(message.contains("Bearer <token>"), "{message}");
    let (code, _) = status_of(client.get_catalogs().await.unwrap_err());
    assert_eq!(code, Code::Unauthenticated);
    let mut raw = FlightServiceClient::new(channel(&server).await);
    let refused = raw.list_actions(Empty {}).await.unwrap_err();
    assert_eq!(refused.code(), Code::Unauthenticated, "{refused}");

    // A wrong token.
    client.set_token("wrong-token-0123456789".into());
    let (code, message) = status_of(query(&mut client, "SELECT 1 AS one").await.unwrap_err());
    assert_eq!(code, Code::Unauthenticated, "{message}");
    assert!(message.contains("not accepted"), "{message}");
    client.clear_token();

    // A wrong password in the handshake.
    let e = client
        .handshake("anyone", "wrong-password")
        .await
        .unwrap_err();
    assert!(e.to_string().contains("not accepted"), "{e}");
    assert_eq!(client.token(), None);

    // Basic auth opens the handshake only.
    let mut basic = connect(&server).await;
    basic.set_header("authorization", BASIC);
    let (code, message) = status_of(query(&mut basic, "SELECT 1 AS one").await.unwrap_err());
    assert_eq!(code, Code::Unauthenticated, "{message}");
    assert!(message.contains("only for the handshake"), "{message}");

    // The handshake hands out the bearer token, which the client then sends.
    let payload = client.handshake("anyone", TOKEN).await.unwrap();
    assert_eq!(payload, TOKEN.as_bytes());
    assert_eq!(client.token().map(String::as_str), Some(TOKEN));
    assert_eq!(
        json_rows(&query(&mut client, "SELECT 1 AS one").await.unwrap()),
        one()
    );
    let info = client.get_catalogs().await.unwrap();
    assert!(!fetch(&mut client, info).await.unwrap().is_empty());

    // A bearer token set directly works too.
    let mut bearer = connect(&server).await;
    bearer.set_token(TOKEN.into());
    assert_eq!(
        json_rows(&query(&mut bearer, "SELECT 1 AS one").await.unwrap()),
        one()
    );
}
