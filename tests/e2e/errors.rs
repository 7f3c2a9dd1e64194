//! Bad input gets the documented error, loses nothing, and the server keeps serving.

use opentelemetry_proto::tonic::collector::trace::v1::trace_service_client::TraceServiceClient;
use prost::Message;
use serde_json::Value;

use crate::data::{request, rich_trace, trace_id};
use crate::server::TestServer;

async fn post_otlp(server: &TestServer, content_type: &str, body: Vec<u8>) -> (u16, Vec<u8>) {
    let resp = reqwest::Client::new()
        .post(server.otlp_http_url())
        .header("Content-Type", content_type)
        .body(body)
        .send()
        .await
        .unwrap();
    (resp.status().as_u16(), resp.bytes().await.unwrap().to_vec())
}

#[tokio::test]
async fn malformed_and_oversize_requests_are_refused_and_nothing_is_lost() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(dir.path(), &[]).await;
    let good = rich_trace(&trace_id(1), "errors", 3);
    let (status, _) = post_otlp(
        &server,
        "application/x-protobuf",
        request(vec![good.clone()]).encode_to_vec(),
    )
    .await;
    assert_eq!(status, 200);

    // Malformed protobuf.
    let (status, body) = post_otlp(&server, "application/x-protobuf", vec![0xff; 64]).await;
    assert_eq!(status, 400);
    assert!(!body.is_empty(), "a google.rpc.Status body");
    // Malformed JSON: the message says what is wrong.
    let (status, body) = post_otlp(
        &server,
        "application/json",
        b"{\"resourceSpans\": [".to_vec(),
    )
    .await;
    assert_eq!(status, 400);
    let status_body: Value = serde_json::from_slice(&body).unwrap();
    assert!(
        status_body["message"].as_str().unwrap_or_default().len() > 5,
        "{status_body}"
    );
    // Oversize: over the 4 MiB default after decompression.
    let (status, _) = post_otlp(&server, "application/x-protobuf", vec![0; 5 * 1024 * 1024]).await;
    assert_eq!(status, 413);
    // Over gRPC too: RESOURCE_EXHAUSTED.
    let mut client = TraceServiceClient::connect(server.grpc_url())
        .await
        .unwrap();
    let mut huge = rich_trace(&trace_id(2), "errors", 1);
    huge.scope_spans[0].spans[0].name = "x".repeat(5 * 1024 * 1024);
    let err = client.export(request(vec![huge])).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::ResourceExhausted, "{err:?}");

    // Bad ids: partial success, the valid spans are kept.
    let mut mixed = rich_trace(&trace_id(3), "errors", 4);
    mixed.scope_spans[0].spans[1].trace_id = vec![0; 16];
    mixed.scope_spans[0].spans[2].span_id = vec![1, 2, 3];
    let resp = client
        .export(request(vec![mixed]))
        .await
        .unwrap()
        .into_inner();
    let partial = resp.partial_success.expect("partial success");
    assert_eq!(partial.rejected_spans, 2);
    assert!(!partial.error_message.is_empty());

    // Still serving, and exactly the accepted spans are stored.
    assert_eq!(server.count("").await, 3 + 2);
    let (status, _) = post_otlp(
        &server,
        "application/x-protobuf",
        request(vec![rich_trace(&trace_id(4), "errors", 1)]).encode_to_vec(),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(server.count("").await, 6);
}

#[tokio::test]
async fn sql_that_writes_or_reads_files_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(dir.path(), &[]).await;
    let client = reqwest::Client::new();
    for sql in [
        "DROP TABLE spans",
        "INSERT INTO spans (name) VALUES ('x')",
        "DELETE FROM spans",
        "CREATE TABLE t AS SELECT 1",
        "CREATE EXTERNAL TABLE t STORED AS CSV LOCATION '/etc/passwd'",
        "COPY (SELECT 1) TO '/tmp/tracelake-copy.csv'",
        "SET datafusion.execution.target_partitions = 1",
        "SELECT 1; DROP TABLE spans",
        "SELECT * FROM '/etc/passwd'",
        "SELECT * FROM read_csv('/etc/passwd')",
        "SELEC 1",
    ] {
        let resp = client
            .post(server.url("/api/sql"))
            .body(sql)
            .send()
            .await
            .unwrap();
        let status = resp.status().as_u16();
        let body: Value = resp.json().await.unwrap();
        assert_eq!(status, 400, "{sql}: {body}");
        assert!(
            body["error"].as_str().is_some_and(|m| !m.is_empty()),
            "{sql}: {body}"
        );
    }
    assert!(!std::path::Path::new("/tmp/tracelake-copy.csv").exists());
    // Still serving.
    assert_eq!(server.count("").await, 0);
    let rows = server.sql("SELECT 1 + 1 AS two").await;
    assert_eq!(rows[0]["two"], 2);
}

#[tokio::test]
async fn unknown_trace_is_404_and_bad_id_is_400() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(dir.path(), &[]).await;
    let resp = reqwest::get(server.url("/api/traces/0123456789abcdef0123456789abcdef"))
        .await
        .unwrap();
    assert_eq!(resp.status(), 404);
    let resp = reqwest::get(server.url("/api/traces/not-hex"))
        .await
        .unwrap();
    assert_eq!(resp.status(), 400);
    let resp = reqwest::get(server.url("/api/echo")).await.unwrap();
    assert_eq!(resp.text().await.unwrap(), "echo");
    let metrics = reqwest::get(server.url("/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for name in [
        "tracelake_spans_flushed",
        "tracelake_buffer_bytes",
        "tracelake_wal_disk_bytes",
    ] {
        assert!(
            metrics.contains(name),
            "{name} missing from /metrics:\n{metrics}"
        );
    }
}

#[tokio::test]
async fn a_full_buffer_pushes_back_with_retry_hints() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("tracelake.toml");
    // A one-byte memory limit: full as soon as anything is buffered.
    std::fs::write(&config, "[storage]\nmax_buffer_bytes = 1\n").unwrap();
    let server = TestServer::start(
        dir.path(),
        &[
            "--config",
            config.to_str().unwrap(),
            "--flush-interval",
            "1h",
        ],
    )
    .await;
    let body = |n| request(vec![rich_trace(&trace_id(n), "pressure", 2)]).encode_to_vec();
    let (status, _) = post_otlp(&server, "application/x-protobuf", body(1)).await;
    assert_eq!(status, 200);

    let resp = reqwest::Client::new()
        .post(server.otlp_http_url())
        .header("Content-Type", "application/x-protobuf")
        .body(body(2))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 503);
    let retry_after: u64 = resp.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(retry_after >= 1);

    let mut client = TraceServiceClient::connect(server.grpc_url())
        .await
        .unwrap();
    let err = client
        .export(request(vec![rich_trace(&trace_id(3), "pressure", 2)]))
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::Unavailable, "{err:?}");
    let details = tonic_types::StatusExt::get_error_details(&err);
    assert!(
        details.retry_info().is_some(),
        "UNAVAILABLE carries RetryInfo: {err:?}"
    );

    // Refused spans were not stored; accepted ones were.
    assert_eq!(server.count("").await, 2);
}
