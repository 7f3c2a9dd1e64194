//! The README's first command, `tracelake serve` with no flags: default listeners, data under
//! `./data`. This test binds the documented default ports, so nothing else may hold them.

use opentelemetry_proto::tonic::collector::trace::v1::trace_service_client::TraceServiceClient;

use crate::data::{request, rich_trace, trace_id};
use crate::server::TestServer;

#[tokio::test]
async fn serve_with_no_flags_uses_the_documented_defaults() {
    let cwd = tempfile::tempdir().unwrap();
    let mut server = TestServer::start_with_defaults(cwd.path()).await;
    assert_eq!(server.grpc.to_string(), "127.0.0.1:4317");
    assert_eq!(server.otlp_http.to_string(), "127.0.0.1:4318");
    assert_eq!(server.http.to_string(), "127.0.0.1:3200");
    let mut client = TraceServiceClient::connect(server.grpc_url())
        .await
        .unwrap();
    client
        .export(request(vec![rich_trace(&trace_id(1), "defaults", 3)]))
        .await
        .unwrap();
    drop(client);
    assert_eq!(server.count("").await, 3);
    assert!(server.terminate().success());
    let table = cwd.path().join("data/tenants/default/spans/_delta_log");
    assert!(table.is_dir(), "no Delta table under ./data");
    assert!(cwd.path().join("data/wal").is_dir());
}
