//! The end-to-end system benchmark: the release `tracelake` binary, fed by `tracelake loadgen`.
//!
//! Measures ingest throughput (keep-all, then with tail sampling on the same workload), bytes
//! per span on disk next to the raw OTLP protobuf bytes of the same spans, and trace-by-id
//! latency (`/api/traces/{id}`, JSON and protobuf).
//!
//! ```sh
//! cargo bench --bench e2e -- --traces 20000
//! ```

#[allow(dead_code)]
mod common;

#[allow(dead_code, unreachable_pub)]
#[path = "../tests/e2e/server.rs"]
mod server;

use std::time::Instant;

use common::{dir_bytes, percentile};
use server::TestServer;

struct Args {
    traces: u64,
    lookups: usize,
    concurrency: u64,
}

fn parse_args() -> Args {
    let mut args = Args {
        traces: 20_000,
        lookups: 300,
        concurrency: 8,
    };
    let argv: Vec<String> = std::env::args().skip(1).collect();
    let mut i = 0;
    while i < argv.len() {
        let value = || argv.get(i + 1).and_then(|v| v.parse().ok());
        match argv[i].as_str() {
            "--traces" => args.traces = value().expect("--traces N"),
            "--lookups" => args.lookups = value().expect("--lookups N") as usize,
            "--concurrency" => args.concurrency = value().expect("--concurrency N"),
            _ => {} // cargo bench passes --bench
        }
        i += 1;
    }
    args
}

/// The tail sampling rules for the loadgen topology.
const SAMPLING: &str = include_str!("../examples/sampling.toml");

/// Runs loadgen against `srv`; returns its JSON summary.
fn loadgen(srv: &TestServer, args: &Args) -> serde_json::Value {
    server::run_loadgen(&[
        "--rate",
        "0",
        "--seed",
        "1",
        "--traces",
        &args.traces.to_string(),
        "--concurrency",
        &args.concurrency.to_string(),
        "--batch-traces",
        "100",
        "--endpoint",
        &srv.grpc_url(),
    ])
}

fn spans_per_sec(summary: &serde_json::Value) -> f64 {
    summary["spans_per_sec"].as_f64().unwrap_or_else(|| {
        summary["spans_acked"].as_f64().unwrap() / summary["elapsed_secs"].as_f64().unwrap()
    })
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let args = parse_args();
    let dir = tempfile::tempdir().unwrap();
    let mut srv = TestServer::start(dir.path(), &["--flush-interval", "5s"]).await;

    // 1. Ingest throughput, keep-all.
    let summary = loadgen(&srv, &args);
    let spans = summary["spans_acked"].as_u64().unwrap();
    let raw_bytes = summary["bytes_sent"].as_u64().unwrap();
    let keep_all_rate = spans_per_sec(&summary);

    // 2. Bytes on disk after the final flush.
    let stopped = Instant::now();
    assert!(srv.terminate().success());
    let final_flush = stopped.elapsed();
    let (parquet_bytes, files) = dir_bytes(&dir.path().join("tenants"), "parquet");

    // 3. Trace by id, from Parquet after a restart.
    let srv = TestServer::start(dir.path(), &["--flush-interval", "5s"]).await;
    assert_eq!(srv.count("").await, spans);
    let ids: Vec<String> = srv
        .sql(&format!(
            "SELECT DISTINCT encode(trace_id, 'hex') AS id FROM spans LIMIT {}",
            args.lookups
        ))
        .await
        .into_iter()
        .map(|r| r["id"].as_str().unwrap().to_string())
        .collect();
    let client = reqwest::Client::new();
    let mut timings = Vec::new();
    for accept in ["application/json", "application/protobuf"] {
        let mut lat = Vec::with_capacity(ids.len());
        for id in &ids {
            let t = Instant::now();
            let resp = client
                .get(srv.url(&format!("/api/traces/{id}")))
                .header("Accept", accept)
                .send()
                .await
                .unwrap();
            assert_eq!(resp.status(), 200);
            let _ = resp.bytes().await.unwrap();
            lat.push(t.elapsed());
        }
        lat.sort();
        timings.push((accept, lat));
    }
    let probes =
        "WHERE coalesce(http_route, url_path, name) IN ('/healthz', 'grpc.health.v1.Health/Check')";
    let probe_spans = srv.count(probes).await;
    drop(srv);

    // 4. Ingest throughput with tail sampling on, same workload; then what it stored.
    let sampled_dir = tempfile::tempdir().unwrap();
    let config = sampled_dir.path().join("tracelake.toml");
    std::fs::write(&config, SAMPLING).unwrap();
    let mut srv = TestServer::start(
        sampled_dir.path(),
        &[
            "--flush-interval",
            "5s",
            "--config",
            config.to_str().unwrap(),
        ],
    )
    .await;
    let sampled = loadgen(&srv, &args);
    let sampled_rate = spans_per_sec(&sampled);
    assert!(srv.terminate().success());
    let srv = TestServer::start(sampled_dir.path(), &["--flush-interval", "5s"]).await;
    let stored = srv.count("").await;
    let weighted = srv.sql("SELECT sum(adjusted_count) AS w FROM spans").await[0]["w"]
        .as_f64()
        .unwrap();

    println!(
        "## tracelake end-to-end ({} traces, {} spans)",
        args.traces, spans
    );
    println!("| figure | value |");
    println!("| --- | --- |");
    println!(
        "| ingest, keep-all, OTLP/gRPC, {} concurrent | {:.0} spans/s |",
        args.concurrency, keep_all_rate
    );
    println!(
        "| ingest, tail sampling on (examples/sampling.toml rules) | {:.0} spans/s ({:.2}x keep-all) |",
        sampled_rate,
        sampled_rate / keep_all_rate
    );
    println!(
        "| stored with tail sampling | {} of {} spans ({:.1}%) |",
        stored,
        spans,
        100.0 * stored as f64 / spans as f64,
    );
    let estimable = (spans - probe_spans) as f64;
    println!(
        "| SUM(adjusted_count) vs spans sent outside force-dropped health probes | {:.0} vs {:.0} ({:+.2}%) |",
        weighted,
        estimable,
        100.0 * (weighted - estimable) / estimable
    );
    println!(
        "| raw OTLP protobuf | {:.1} bytes/span |",
        raw_bytes as f64 / spans as f64
    );
    println!(
        "| on disk (Parquet, {} files) | {:.1} bytes/span ({:.1}x smaller) |",
        files,
        parquet_bytes as f64 / spans as f64,
        raw_bytes as f64 / parquet_bytes as f64
    );
    println!(
        "| final flush on SIGTERM | {:.2} s |",
        final_flush.as_secs_f64()
    );
    for (accept, lat) in &timings {
        println!(
            "| trace by id ({accept}), {} lookups | median {:.1} ms, p90 {:.1} ms, p99 {:.1} ms |",
            lat.len(),
            percentile(lat, 0.5).as_secs_f64() * 1e3,
            percentile(lat, 0.9).as_secs_f64() * 1e3,
            percentile(lat, 0.99).as_secs_f64() * 1e3,
        );
    }
}
