//! Tail sampling end to end: the same loadgen workload goes to a keep-all server (the ground
//! truth) and to a sampling server, and the two are compared over SQL.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use serde_json::Value;

use crate::server::{run_loadgen, TestServer};

/// Sampling rules for the loadgen topology: most user traffic lands in the middle band.
const CONFIG: &str = r#"
[storage]
flush_interval = "200ms"

[sampling]
enabled = true
decision_wait = "1s"
max_trace_wait = "5s"
mid_probability = 0.1
low_probability = 0.2

[[sampling.routes]]
regex = "^/api/(cart|checkout|products)"
score = 1.0

[[sampling.routes]]
regex = "^(/healthz|grpc\\.health\\.v1\\.Health/Check)$"
force = "drop"

[sampling.tiers]
services = { "payment" = "critical", "checkout" = "critical", "recommendation" = "best_effort" }
"#;

const TRACES: &str = "3000";
const SEED: &str = "11";
const START: &str = "1764000000";

async fn start_with_config(dir: &Path, config: &str, extra: &[&str]) -> TestServer {
    std::fs::create_dir_all(dir).unwrap();
    let path = dir.join("tracelake.toml");
    std::fs::write(&path, config).unwrap();
    let mut args = vec!["--config", path.to_str().unwrap()];
    args.extend_from_slice(extra);
    TestServer::start(dir, &args).await
}

fn loadgen(server: &TestServer, traces: &str) {
    run_loadgen(&[
        "--traces",
        traces,
        "--rate",
        "0",
        "--seed",
        SEED,
        "--start-time",
        START,
        "--endpoint",
        &server.grpc_url(),
    ]);
}

async fn reload(server: &TestServer) -> (reqwest::StatusCode, String) {
    let resp = reqwest::Client::new()
        .post(server.url("/api/sampling/reload"))
        .send()
        .await
        .unwrap();
    (resp.status(), resp.text().await.unwrap())
}

async fn sampling_status(server: &TestServer) -> Value {
    let resp = reqwest::get(server.url("/api/sampling")).await.unwrap();
    assert_eq!(resp.status(), 200);
    resp.json().await.unwrap()
}

fn decided_traces(status: &Value) -> u64 {
    status["stats"]["bands"]
        .as_object()
        .unwrap()
        .values()
        .map(|b| b["kept_traces"].as_u64().unwrap() + b["dropped_traces"].as_u64().unwrap())
        .sum()
}

/// Waits until `traces` traces are decided and nothing is buffered.
async fn wait_decided(server: &TestServer, traces: u64) -> Value {
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let status = sampling_status(server).await;
        if decided_traces(&status) >= traces && status["buffered_traces"] == 0 {
            return status;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "traces not decided in time: {status}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Span counts of every trace with an errored span, by hex trace id.
async fn error_traces(server: &TestServer) -> BTreeMap<String, u64> {
    server
        .sql(
            "SELECT encode(trace_id, 'hex') AS t, count(*) AS n FROM spans \
             WHERE trace_id IN (SELECT trace_id FROM spans \
                                WHERE status_code = 2 OR http_response_status_code >= 500) \
             GROUP BY 1",
        )
        .await
        .into_iter()
        .map(|r| {
            (
                r["t"].as_str().unwrap().to_string(),
                r["n"].as_u64().unwrap(),
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tail_sampling_keeps_errors_whole_and_weights_stay_unbiased() {
    let dir = tempfile::tempdir().unwrap();
    let truth = TestServer::start(&dir.path().join("truth"), &["--flush-interval", "200ms"]).await;
    let sampled = start_with_config(&dir.path().join("sampled"), CONFIG, &[]).await;
    loadgen(&truth, TRACES);
    loadgen(&sampled, TRACES);
    let status = wait_decided(&sampled, 3000).await;

    // Every trace with an error is kept, with all of its spans.
    let want = error_traces(&truth).await;
    assert!(want.len() >= 5, "the workload has errors: {want:?}");
    let got = error_traces(&sampled).await;
    assert_eq!(got, want, "error traces kept whole");

    // The middle band keeps about 10% of its traces: within 4 binomial standard deviations.
    let mid = &status["stats"]["bands"]["mid"];
    let (kept, dropped) = (
        mid["kept_traces"].as_f64().unwrap(),
        mid["dropped_traces"].as_f64().unwrap(),
    );
    let n = kept + dropped;
    assert!(n >= 500.0, "most traffic is in the middle band: {status}");
    let sd = (n * 0.1 * 0.9).sqrt();
    assert!(
        (kept - 0.1 * n).abs() <= 4.0 * sd,
        "middle band kept {kept} of {n}"
    );
    let rows = sampled
        .sql("SELECT count(DISTINCT trace_id) AS t FROM spans WHERE sampling_rule = 'mid'")
        .await;
    assert_eq!(rows[0]["t"].as_f64().unwrap(), kept);

    // SUM(adjusted_count) estimates the spans sent (health probes are dropped on purpose, so
    // they are left out of the truth). The tolerance is 4 standard deviations of the
    // Horvitz-Thompson estimator, estimated from the kept traces: var = sum (a^2 - a) n^2.
    let probes =
        "coalesce(http_route, url_path, name) IN ('/healthz', 'grpc.health.v1.Health/Check')";
    let true_spans = truth.count(&format!("WHERE NOT ({probes})")).await as f64;
    let est = sampled
        .sql(
            "SELECT sum(a * n) AS est, sum((a * a - a) * n * n) AS var FROM \
             (SELECT max(adjusted_count) AS a, count(*) AS n FROM spans GROUP BY trace_id)",
        )
        .await;
    let (estimate, var) = (
        est[0]["est"].as_f64().unwrap(),
        est[0]["var"].as_f64().unwrap(),
    );
    let tolerance = 4.0 * var.sqrt();
    assert!(
        (estimate - true_spans).abs() <= tolerance,
        "weighted count {estimate} vs {true_spans} sent (tolerance {tolerance:.0})"
    );
    // With 10% of ~20-span traces kept, one standard deviation is several percent here.
    assert!(
        tolerance < 0.3 * true_spans,
        "the bound is meaningful: {tolerance} of {true_spans}"
    );
    eprintln!("weighted count {estimate:.0} vs {true_spans} sent, 4 sd = {tolerance:.0}");
    // Far fewer spans are stored than sent.
    let stored = sampled.count("").await as f64;
    assert!(stored < 0.5 * true_spans, "{stored} of {true_spans}");
    assert_eq!(
        sampled.count(&format!("WHERE {probes}")).await,
        0,
        "health probes are dropped"
    );

    // The figures are in /metrics too.
    let metrics = reqwest::get(sampled.url("/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains(r#"tracelake_sampling_traces_total{band="mid",decision="kept"}"#),
        "{metrics}"
    );
    assert!(metrics.contains("tracelake_sampling_buffered_traces 0"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn undecided_traces_survive_a_crash_and_are_committed_once() {
    let dir = tempfile::tempdir().unwrap();
    let truth = TestServer::start(&dir.path().join("truth"), &["--flush-interval", "200ms"]).await;
    loadgen(&truth, "400");
    let data = dir.path().join("sampled");
    let waiting = CONFIG.replace("decision_wait = \"1s\"", "decision_wait = \"10m\"");
    let waiting = waiting.replace("max_trace_wait = \"5s\"", "max_trace_wait = \"20m\"");
    let mut server = start_with_config(&data, &waiting, &[]).await;
    loadgen(&server, "400");
    // Acknowledged, but undecided: nothing is visible or committed yet.
    let status = sampling_status(&server).await;
    assert_eq!(status["buffered_traces"], 400, "{status}");
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(server.count("").await, 0);
    server.kill9();

    // The WAL still holds every span: after a restart they are decided.
    let server = start_with_config(&data, CONFIG, &[]).await;
    wait_decided(&server, 400).await;
    assert_eq!(error_traces(&server).await, error_traces(&truth).await);
    let rows = server
        .sql("SELECT count(*) AS n, count(DISTINCT span_id) AS d FROM spans")
        .await;
    assert_eq!(rows[0]["n"], rows[0]["d"], "no span stored twice");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rules_reload_on_request_and_on_file_change() {
    let dir = tempfile::tempdir().unwrap();
    let server = start_with_config(dir.path(), CONFIG, &[]).await;
    let status = sampling_status(&server).await;
    assert_eq!(status["config"]["mid_probability"], 0.1);
    assert_eq!(status["enabled"], true);

    // A bad rule is refused with the reason, and the old rules stay.
    let path = dir.path().join("tracelake.toml");
    std::fs::write(
        &path,
        CONFIG.replace("mid_probability = 0.1", "mid_probability = 1.5"),
    )
    .unwrap();
    let (status, body) = reload(&server).await;
    assert_eq!(status, 400);
    assert!(
        body.contains("sampling.mid_probability must be between 0 and 1"),
        "{body}"
    );
    assert_eq!(
        sampling_status(&server).await["config"]["mid_probability"],
        0.1
    );

    // A good one applies at once.
    std::fs::write(
        &path,
        CONFIG.replace("mid_probability = 0.1", "mid_probability = 0.25"),
    )
    .unwrap();
    let (status, body) = reload(&server).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        sampling_status(&server).await["config"]["mid_probability"],
        0.25
    );

    // Editing the file is enough.
    std::fs::write(
        &path,
        CONFIG.replace("mid_probability = 0.1", "mid_probability = 0.5"),
    )
    .unwrap();
    server
        .eventually(
            Duration::from_secs(15),
            "the file change to be applied",
            || async { sampling_status(&server).await["config"]["mid_probability"] == 0.5 },
        )
        .await;

    // Without --config there is nothing to reload from.
    let plain = TestServer::start(&dir.path().join("plain"), &[]).await;
    let (status, body) = reload(&plain).await;
    assert_eq!(status, 400);
    assert!(body.contains("without --config"), "{body}");
}

#[tokio::test]
async fn bad_sampling_config_is_refused_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.toml");
    std::fs::write(
        &path,
        "[sampling]\nenabled = true\n[[sampling.routes]]\nregex = \"([\"\n",
    )
    .unwrap();
    let stderr = TestServer::start_failure(dir.path(), &["--config", path.to_str().unwrap()]);
    assert!(
        stderr.contains("sampling.routes[0].regex \"([\" is not valid"),
        "{stderr}"
    );
}
