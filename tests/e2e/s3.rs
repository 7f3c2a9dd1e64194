//! The same server on a real S3-compatible store (Garage, started by `.ci/test`): the tables
//! live in the bucket, the local directory holds only the WAL.

use opentelemetry_proto::tonic::collector::trace::v1::trace_service_client::TraceServiceClient;

use crate::data::{request, rich_trace, trace_id};
use crate::server::TestServer;

/// `s3://bucket/prefix` of the test S3 server; `.ci/test` starts Garage and sets it, with the
/// `AWS_*` variables the server reads.
fn s3_url() -> String {
    std::env::var("TRACELAKE_TEST_S3_URL").unwrap_or_else(|_| {
        panic!(
            "TRACELAKE_TEST_S3_URL is not set: run the tests with `bash .ci/test`, which starts \
             a local Garage S3 server and sets it with the AWS_* variables"
        )
    })
}

#[tokio::test]
async fn spans_are_stored_in_s3_and_survive_losing_the_local_disk() {
    let url = format!("{}/run-{}", s3_url(), crate::data::now_nanos());
    let dir = tempfile::tempdir().unwrap();
    let local = dir.path().join("first");
    let mut server = TestServer::start(&local, &["--storage-url", &url]).await;
    let mut client = TraceServiceClient::connect(server.grpc_url())
        .await
        .unwrap();
    let ids: Vec<_> = (0..8).map(trace_id).collect();
    for id in &ids {
        client
            .export(request(vec![rich_trace(id, "s3", 4)]))
            .await
            .unwrap();
    }
    drop(client);
    assert_eq!(server.count("").await, 32);
    assert!(server.terminate().success(), "{}", server.log());
    assert!(
        !local.join("tenants").exists(),
        "with an s3:// storage url no table is written locally"
    );

    // A new local directory: everything must come from the bucket.
    let server = TestServer::start(&dir.path().join("second"), &["--storage-url", &url]).await;
    assert_eq!(server.count("").await, 32);
    let resp = reqwest::get(server.url(&format!("/api/traces/{}", hex::encode(&ids[3]))))
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let rows = server
        .sql("SELECT count(DISTINCT trace_id) AS t, min(service_name) AS s FROM spans")
        .await;
    assert_eq!(rows[0]["t"], 8);
    assert_eq!(rows[0]["s"], "s3");
}

#[tokio::test]
async fn a_missing_bucket_is_a_clear_startup_error() {
    let url = s3_url();
    let missing = url.replacen("s3://", "s3://no-such-bucket-", 1);
    let dir = tempfile::tempdir().unwrap();
    let stderr = TestServer::start_failure(dir.path(), &["--storage-url", &missing]);
    assert!(stderr.contains("no-such-bucket"), "{stderr}");
}
