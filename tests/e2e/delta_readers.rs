//! The Delta table is readable by other Delta readers (the Python `deltalake` package).

use crate::data::{request, rich_trace, trace_id};
use crate::server::TestServer;
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_client::TraceServiceClient;

/// The Python interpreter with the packages of `.ci/requirements.txt` (deltalake, psycopg, the
/// ADBC Flight SQL driver): `TRACELAKE_TEST_PYTHON`, which `.ci/test` sets to its virtualenv.
pub(crate) fn python() -> String {
    std::env::var("TRACELAKE_TEST_PYTHON").unwrap_or_else(|_| {
        panic!(
            "TRACELAKE_TEST_PYTHON is not set: run the tests with `bash .ci/test`, which creates \
             a virtualenv with .ci/requirements.txt and sets it"
        )
    })
}

#[tokio::test]
async fn python_deltalake_reads_the_same_rows() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = TestServer::start(dir.path(), &[]).await;
    let mut client = TraceServiceClient::connect(server.grpc_url())
        .await
        .unwrap();
    for n in 0..12 {
        client
            .export(request(vec![rich_trace(&trace_id(n), "py", 5)]))
            .await
            .unwrap();
    }
    drop(client);
    assert!(server.terminate().success());
    let table = dir.path().join("tenants/default/spans");
    let script = r#"
import os, sys, deltalake
t = deltalake.DeltaTable(sys.argv[1])
pa = t.to_pyarrow_table()
names = set(pa.column("service_name").to_pylist())
ids = set(bytes(x).hex() for x in pa.column("trace_id").to_pylist())
print(pa.num_rows, len(ids), ",".join(sorted(names)), ",".join(t.metadata().partition_columns))
sys.stdout.flush()
# Skip interpreter teardown: pyarrow's thread pools occasionally abort there
# ("terminate called without an active exception"), after the work is done.
os._exit(0)
"#;
    let out = std::process::Command::new(python())
        .args(["-c", script])
        .arg(&table)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "python deltalake failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let line = String::from_utf8_lossy(&out.stdout).trim().to_string();
    assert_eq!(line, "60 12 py date,hour", "python saw: {line}");

    let server = TestServer::start(dir.path(), &[]).await;
    assert_eq!(server.count("").await, 60);
}
