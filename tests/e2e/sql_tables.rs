//! The `traces` view and `traces(start, end)` through `POST /api/sql`, against the same
//! figures computed from `spans`.

use std::time::Duration;

use crate::server::{run_loadgen, TestServer};

#[tokio::test]
async fn the_traces_view_and_function_agree_with_the_spans() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(dir.path(), &["--flush-interval", "200ms"]).await;
    let now = crate::data::now_nanos() / 1_000_000_000;
    let start = now - now % 3600 - 2 * 3600;
    let summary = run_loadgen(&[
        "--traces",
        "200",
        "--rate",
        "0",
        "--seed",
        "8",
        "--start-time",
        &start.to_string(),
        "--time-spread",
        "30m",
        "--endpoint",
        &server.grpc_url(),
    ]);
    let acked = summary["spans_acked"].as_u64().unwrap();
    server
        .eventually(Duration::from_secs(20), "spans queryable", || async {
            server.count("").await == acked
        })
        .await;

    let view = server
        .sql(
            "SELECT trace_id_hex, root_service, root_name, start_time_unix_nano, duration_nano, \
             span_count, error_count, array_to_string(services, ',') AS services \
             FROM traces ORDER BY trace_id_hex",
        )
        .await;
    let truth = server
        .sql(
            "SELECT encode(trace_id, 'hex') AS trace_id_hex, \
             max(CASE WHEN parent_span_id IS NULL OR parent_span_id = X'' \
                 THEN service_name END) AS root_service, \
             max(CASE WHEN parent_span_id IS NULL OR parent_span_id = X'' \
                 THEN name END) AS root_name, \
             min(start_time_unix_nano) AS start_time_unix_nano, \
             CAST(max(end_time_unix_nano) AS BIGINT) - CAST(min(start_time_unix_nano) AS BIGINT) AS duration_nano, \
             count(*) AS span_count, \
             sum(CASE WHEN status_code = 2 OR http_response_status_code >= 500 THEN 1 ELSE 0 END) AS error_count, \
             array_to_string(array_sort(array_agg(DISTINCT service_name)), ',') AS services \
             FROM spans GROUP BY trace_id ORDER BY 1",
        )
        .await;
    assert_eq!(view.len(), 200);
    assert_eq!(view, truth);
    assert!(view.iter().any(|r| r["error_count"].as_u64().unwrap() > 0));
    assert!(view.iter().all(|r| r["root_service"].is_string()));
    let spans: u64 = view.iter().map(|r| r["span_count"].as_u64().unwrap()).sum();
    assert_eq!(spans, acked);

    // The function reads a window: all of it, then none.
    let all = server
        .sql(&format!(
            "SELECT count(*) AS n, sum(span_count) AS s FROM traces({start}, {})",
            start + 3600
        ))
        .await;
    assert_eq!(all[0]["n"], 200);
    assert_eq!(all[0]["s"].as_u64().unwrap(), acked);
    let none = server
        .sql("SELECT count(*) AS n FROM traces('2020-01-01T00:00:00Z', '2020-01-01T01:00:00Z')")
        .await;
    assert_eq!(none[0]["n"], 0);

    for (sql, want) in [
        ("SELECT * FROM traces('yesterday', 'today')", "RFC 3339"),
        ("SELECT * FROM traces(1)", "two arguments"),
        ("SELECT * FROM traces(20, 10)", "must be after start"),
    ] {
        let resp = reqwest::Client::new()
            .post(server.url("/api/sql"))
            .body(sql)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 400, "{sql}");
        let text = resp.text().await.unwrap();
        assert!(text.contains(want), "{sql}: {text}");
    }
}
