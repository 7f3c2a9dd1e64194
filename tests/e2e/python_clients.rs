//! Python's SQL clients against the real server: psycopg 3 over the PostgreSQL protocol and the
//! ADBC Flight SQL driver, each giving the same rows as `POST /api/sql`
//! (`tests/e2e/python/sql_clients.py`, run with `.ci/test`'s virtualenv).

use std::time::Duration;

use serde_json::Value;

use crate::delta_readers::python;
use crate::server::loaded_server;

const QUERIES: &[&str] = &[
    "SELECT service_name, count(*) AS spans, sum(duration_nano) AS total \
     FROM spans GROUP BY service_name ORDER BY service_name",
    "SELECT trace_id_hex, root_service, root_name, span_count, error_count \
     FROM traces ORDER BY trace_id_hex LIMIT 25",
    "SELECT hex_id(span_id) AS id, name, kind, http_response_status_code AS code \
     FROM spans WHERE http_response_status_code >= 400 ORDER BY id",
    "SELECT count(*) AS n FROM span_metrics_1m",
];

#[tokio::test]
async fn psycopg_and_adbc_flight_sql_get_the_answers_of_the_http_api() {
    let dir = tempfile::tempdir().unwrap();
    let (server, acked) = loaded_server(dir.path(), &[], 120, 13).await;
    server
        .eventually(Duration::from_secs(20), "rollups written", || async {
            server.count("").await == acked
                && server
                    .sql("SELECT count(*) AS n FROM span_metrics_1m")
                    .await[0]["n"]
                    .as_u64()
                    .unwrap()
                    > 0
        })
        .await;

    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/e2e/python/sql_clients.py"
    );
    let out = tokio::process::Command::new(python())
        .arg(script)
        .arg(server.pg.port().to_string())
        .arg(server.flight.port().to_string())
        .arg(serde_json::to_string(QUERIES).unwrap())
        .output()
        .await
        .unwrap();
    assert!(
        out.status.success(),
        "{}\n{}",
        String::from_utf8_lossy(&out.stderr),
        server.log()
    );
    let got: Value = serde_json::from_slice(&out.stdout).unwrap();

    for (i, sql) in QUERIES.iter().enumerate() {
        let http = Value::Array(server.sql(sql).await);
        assert!(!http.as_array().unwrap().is_empty(), "{sql}");
        assert_eq!(got["pg"][i], http, "psycopg: {sql}");
        assert_eq!(got["flight"][i], http, "adbc flight sql: {sql}");
    }
    let frontend = &server
        .sql("SELECT count(*) AS n FROM spans WHERE service_name = 'frontend'")
        .await[0]["n"];
    assert!(frontend.as_u64().unwrap() > 0);
    assert_eq!(&got["pg_params"], frontend);
    assert_eq!(&got["flight_params"], frontend);

    let pg_error = &got["errors"]["pg"];
    assert_eq!(pg_error[0], "25006", "{pg_error}");
    assert!(
        pg_error[1].as_str().unwrap().contains("read-only"),
        "{pg_error}"
    );
    let flight_error = &got["errors"]["flight"];
    assert!(
        flight_error[1].as_str().unwrap().contains("read-only"),
        "{flight_error}"
    );
    let tables: Vec<&str> = got["flight_tables"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t.as_str().unwrap())
        .collect();
    for want in ["span_metrics_1m", "spans", "traces"] {
        assert!(tables.contains(&want), "{tables:?}");
    }
    assert_eq!(server.count("").await, acked);
}
