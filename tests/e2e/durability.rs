//! Acknowledged spans survive restarts and crashes, exactly once.

use opentelemetry_proto::tonic::collector::trace::v1::trace_service_client::TraceServiceClient;

use crate::data::{request, rich_trace, trace_id};
use crate::server::TestServer;

async fn send_traces(server: &TestServer, first: u64, traces: u64, spans: u64) {
    let mut client = TraceServiceClient::connect(server.grpc_url())
        .await
        .unwrap();
    for n in first..first + traces {
        let resp = client
            .export(request(vec![rich_trace(&trace_id(n), "durable", spans)]))
            .await
            .unwrap()
            .into_inner();
        assert!(resp.partial_success.is_none());
    }
}

/// Parquet files under the data directory's tables.
/// Parquet files of the default tenant's `spans` table (not its rollups or trace index).
pub(crate) fn parquet_files(data_dir: &std::path::Path) -> usize {
    crate::common::dir_bytes(&data_dir.join("tenants/default/spans"), "parquet").1
}

#[tokio::test]
async fn spans_survive_a_graceful_restart() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = TestServer::start(dir.path(), &[]).await;
    send_traces(&server, 0, 20, 5).await;
    assert_eq!(server.count("").await, 100);
    let status = server.terminate();
    assert!(status.success(), "{status:?}\n{}", server.log());
    // SIGTERM flushed: the spans are in Parquet, and the WAL holds nothing to replay.
    assert!(parquet_files(dir.path()) > 0);

    let server = TestServer::start(dir.path(), &[]).await;
    assert_eq!(server.count("").await, 100);
    assert!(
        !server.log().contains("replayed write-ahead log"),
        "{}",
        server.log()
    );
}

#[tokio::test]
async fn kill_9_before_flush_replays_the_wal_exactly_once() {
    let dir = tempfile::tempdir().unwrap();
    // A flush interval far beyond the test: nothing reaches Parquet before the kill.
    let mut server = TestServer::start(dir.path(), &["--flush-interval", "1h"]).await;
    send_traces(&server, 100, 30, 4).await;
    assert_eq!(server.count("").await, 120);
    server.kill9();
    assert_eq!(
        parquet_files(dir.path()),
        0,
        "nothing was flushed before the kill"
    );

    // Restart: the acknowledged spans come back from the WAL.
    let mut server = TestServer::start(dir.path(), &["--flush-interval", "1h"]).await;
    assert!(
        server.log().contains("replayed write-ahead log"),
        "{}",
        server.log()
    );
    assert_eq!(server.count("").await, 120);
    // Crash again before any flush: still exactly once.
    server.kill9();
    let mut server = TestServer::start(dir.path(), &["--flush-interval", "1h"]).await;
    assert_eq!(server.count("").await, 120);
    // A graceful stop commits them; the next start finds them in the table, not twice.
    assert!(server.terminate().success());
    assert!(parquet_files(dir.path()) > 0);
    let server = TestServer::start(dir.path(), &["--flush-interval", "1h"]).await;
    assert_eq!(server.count("").await, 120);
    assert_eq!(
        server
            .sql("SELECT count(DISTINCT span_id) AS n FROM spans")
            .await[0]["n"],
        120
    );
}

#[tokio::test]
async fn periodic_flush_commits_and_truncates_the_wal() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = TestServer::start(dir.path(), &["--flush-interval", "200ms"]).await;
    send_traces(&server, 200, 10, 3).await;
    let data = dir.path().to_path_buf();
    server
        .eventually(std::time::Duration::from_secs(30), "a flush", || {
            let data = data.clone();
            async move { parquet_files(&data) > 0 }
        })
        .await;
    assert_eq!(server.count("").await, 30);
    // Killing now must not duplicate anything: the WAL is committed (txn) or truncated.
    server.kill9();
    let server = TestServer::start(dir.path(), &["--flush-interval", "200ms"]).await;
    assert_eq!(server.count("").await, 30);
}

#[tokio::test]
async fn a_second_process_on_the_same_data_dir_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let _server = TestServer::start(dir.path(), &[]).await;
    let stderr = TestServer::start_failure(dir.path(), &[]);
    assert!(
        stderr.contains("another tracelake process is using the write-ahead log"),
        "{stderr}"
    );
}
