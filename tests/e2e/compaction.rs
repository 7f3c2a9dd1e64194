//! Compaction through the real binary: the server's background compactor and `tracelake
//! compact` merge a closed hour's files, and every trace, search and count is unchanged.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use opentelemetry_proto::tonic::trace::v1::ResourceSpans;

use crate::data::{flatten, rich_trace, send, trace_id};
use crate::durability::parquet_files;
use crate::otlp::get_trace_proto;
use crate::server::TestServer;

/// Two days: the spans land in an hour that closed long ago.
const AGE_NANOS: u64 = 48 * 3600 * 1_000_000_000;

/// `rich_trace`, moved two days into the past.
fn old_trace(id: &[u8], service: &str, spans: u64) -> ResourceSpans {
    let mut rs = rich_trace(id, service, spans);
    for span in rs.scope_spans.iter_mut().flat_map(|ss| ss.spans.iter_mut()) {
        span.start_time_unix_nano -= AGE_NANOS;
        span.end_time_unix_nano -= AGE_NANOS;
        for event in &mut span.events {
            event.time_unix_nano -= AGE_NANOS;
        }
    }
    rs
}

/// A counter's value from `/metrics` (0 when absent).
pub(crate) async fn metric(server: &TestServer, name: &str) -> u64 {
    let text = reqwest::get(server.url("/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse::<f64>().ok())
        .map_or(0, |v| v as u64)
}

/// Sends `batches` batches of traces, each flushed before the next, so that each becomes its
/// own Parquet file. Returns the traces sent.
async fn send_in_flushes(server: &TestServer, batches: u64) -> Vec<(String, ResourceSpans)> {
    let mut sent = Vec::new();
    let mut spans = 0;
    for b in 0..batches {
        let mut batch = Vec::new();
        for t in 0..3 {
            let id = trace_id(b * 10 + t);
            let rs = old_trace(&id, &format!("svc-{t}"), 4);
            batch.push(rs.clone());
            sent.push((hex(&id), rs));
        }
        send(server, "default", batch).await;
        spans += 12;
        server
            .eventually(
                Duration::from_secs(20),
                "the batch to be flushed",
                || async { metric(server, "tracelake_spans_flushed_total").await >= spans },
            )
            .await;
    }
    sent
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Every trace comes back exactly as sent, over v1 protobuf.
async fn assert_traces(server: &TestServer, sent: &[(String, ResourceSpans)]) {
    for (id, rs) in sent {
        let got = get_trace_proto(server, id).await;
        assert_eq!(
            flatten(&got.resource_spans),
            flatten(std::slice::from_ref(rs)),
            "trace {id}"
        );
    }
    assert_eq!(server.count("").await, sent.len() as u64 * 4);
}

/// Trace ids a TraceQL search over the old day finds, sorted.
async fn search(server: &TestServer, q: &str) -> Vec<String> {
    let now = crate::data::now_nanos() / 1_000_000_000;
    let (start, end) = (now - 3 * 86_400, now);
    let body: serde_json::Value = reqwest::Client::new()
        .get(server.url("/api/search"))
        .query(&[
            ("q", q.to_string()),
            ("start", start.to_string()),
            ("end", end.to_string()),
            ("limit", "1000".to_string()),
        ])
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let mut ids: Vec<String> = body["traces"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| format!("{:0>32}", t["traceID"].as_str().unwrap()))
        .collect();
    ids.sort();
    ids
}

/// A config file with no grace period, the data directory, and the server flags.
fn setup(dir: &Path, compaction_interval: &str) -> (String, PathBuf, Vec<String>) {
    let path = dir.join("tracelake.toml");
    std::fs::write(&path, "[compaction]\ngrace = \"0s\"\n").unwrap();
    let config = path.to_str().unwrap().to_string();
    let flags = [
        "--config",
        &config,
        "--flush-interval",
        "100ms",
        "--compaction-interval",
        compaction_interval,
    ]
    .map(String::from)
    .to_vec();
    (config, dir.join("data"), flags)
}

/// Runs `tracelake compact` on a stopped server's data; its stdout.
fn compact_cli(config: &str, data: &Path) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_tracelake"))
        .args(["compact", "--config", config, "--data-dir"])
        .arg(data)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

#[tokio::test]
async fn the_background_compactor_merges_closed_hours_and_answers_stay_the_same() {
    let dir = tempfile::tempdir().unwrap();
    let (config, data, flags) = setup(dir.path(), "1s");
    let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
    let mut server = TestServer::start(&data, &flags).await;
    let sent = send_in_flushes(&server, 6).await;
    // Each batch sends svc-0, svc-1 and svc-2 in that order: svc-1 is every third trace.
    let mut svc1: Vec<String> = sent
        .iter()
        .skip(1)
        .step_by(3)
        .map(|(id, _)| id.clone())
        .collect();
    svc1.sort();
    assert_eq!(svc1.len(), 6);

    // A pass that starts after the last flush sees every file: wait for two more passes.
    let passes = metric(&server, "tracelake_compaction_passes_total").await;
    server
        .eventually(
            Duration::from_secs(30),
            "two more compaction passes",
            || async { metric(&server, "tracelake_compaction_passes_total").await >= passes + 2 },
        )
        .await;
    assert!(metric(&server, "tracelake_compaction_files_removed_total").await >= 6);
    assert!(metric(&server, "tracelake_compaction_files_added_total").await >= 1);
    // Passes that ran between flushes rewrote a bucket again when a new file joined it.
    assert!(metric(&server, "tracelake_compaction_spans_total").await >= sent.len() as u64 * 4);
    // The compacted hour got its trace index, so the lookups below go through it.
    assert!(metric(&server, "tracelake_compaction_hours_indexed_total").await >= 1);
    assert_traces(&server, &sent).await;
    assert_eq!(
        search(&server, r#"{ resource.service.name = "svc-1" }"#).await,
        svc1
    );

    // After a restart, from Parquet only: the same answers, and nothing left to compact.
    assert!(server.terminate().success());
    let stdout = compact_cli(&config, &data);
    assert!(
        stdout.contains("tenant=default hours=0 files_removed=0"),
        "{stdout}"
    );
    let server = TestServer::start(&data, &flags).await;
    assert_traces(&server, &sent).await;
    assert_eq!(
        search(&server, r#"{ resource.service.name = "svc-1" }"#).await,
        svc1
    );
}

#[tokio::test]
async fn tracelake_compact_merges_a_stopped_servers_files() {
    let dir = tempfile::tempdir().unwrap();
    let (config, data, flags) = setup(dir.path(), "0s");
    let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
    let mut server = TestServer::start(&data, &flags).await;
    let sent = send_in_flushes(&server, 4).await;
    assert!(server.terminate().success());
    assert_eq!(
        parquet_files(&data),
        4,
        "compaction is off: one file per flush"
    );

    let stdout = compact_cli(&config, &data);
    // The four flushes were seconds apart: one 1-minute bucket, two if they straddle a
    // boundary. The hour is then indexed.
    let added: u64 = stdout
        .split_whitespace()
        .find_map(|kv| kv.strip_prefix("files_added="))
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("{stdout}"));
    assert!(
        stdout.contains("tenant=default hours=1 files_removed=4 ")
            && (1..=2).contains(&added)
            && stdout.contains(&format!("spans={}", sent.len() * 4))
            && stdout.contains("hours_indexed=1"),
        "{stdout}"
    );

    let server = TestServer::start(&data, &flags).await;
    assert_traces(&server, &sent).await;
}
