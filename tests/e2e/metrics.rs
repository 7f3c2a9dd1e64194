//! Tempo's TraceQL metrics API (`/api/metrics/query_range`, `/api/metrics/query`) against the
//! real binary: a tail-sampled loadgen hour (so `adjusted_count` varies), flushed with its
//! rollups, and every series compared with SQL over the raw spans, on the rollup path and on
//! the spans path.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::time::Duration;

use serde_json::Value;

use crate::compaction::metric;
use crate::server::{run_loadgen, TestServer};

/// Tail sampling keeps about 10 % of ordinary traces and stamps their spans' adjusted counts.
const CONFIG: &str = r#"
[storage]
flush_interval = "200ms"

[sampling]
enabled = true
decision_wait = "1s"
max_trace_wait = "5s"
mid_probability = 0.1
low_probability = 0.25
"#;

const TRACES: u64 = 800;
const NANOS: i64 = 1_000_000_000;

/// A closed hour two days ago (unix seconds).
fn old_hour() -> i64 {
    let now = (crate::data::now_nanos() / 1_000_000_000) as i64;
    now - now % 3600 - 48 * 3600
}

async fn start(dir: &Path) -> TestServer {
    let path = dir.join("tracelake.toml");
    std::fs::write(&path, CONFIG).unwrap();
    TestServer::start(dir, &["--config", path.to_str().unwrap()]).await
}

async fn get(server: &TestServer, path: &str, params: &[(&str, String)]) -> (u16, Value) {
    let response = reqwest::Client::new()
        .get(server.url(path))
        .query(params)
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap())
}

/// `query_range` of `q` over `[start, end)` (unix seconds) with `step`; asserts a 200 and the
/// table that answered.
async fn range(
    server: &TestServer,
    q: &str,
    (start, end): (i64, i64),
    step: &str,
    source: &str,
) -> Vec<Value> {
    let (status, body) = get(
        server,
        "/api/metrics/query_range",
        &[
            ("q", q.to_string()),
            ("start", start.to_string()),
            ("end", end.to_string()),
            ("step", step.to_string()),
        ],
    )
    .await;
    assert_eq!(status, 200, "{q}: {body}");
    assert_eq!(body["metrics"]["source"], source, "{q}");
    body["series"].as_array().unwrap().clone()
}

/// The string values of labels `keys` (comma-separated) of a series, joined by `|` (`""` for
/// an absent one).
fn label(series: &Value, keys: &str) -> String {
    keys.split(',')
        .map(|k| one_label(series, k))
        .collect::<Vec<_>>()
        .join("|")
}

fn one_label(series: &Value, key: &str) -> String {
    series["labels"]
        .as_array()
        .unwrap()
        .iter()
        .find(|l| l["key"] == key)
        .map(|l| {
            let v = &l["value"];
            v["stringValue"]
                .as_str()
                .map(str::to_string)
                .or_else(|| v["intValue"].as_str().map(str::to_string))
                .unwrap_or_default()
        })
        .unwrap_or_default()
}

fn double_label(series: &Value, key: &str) -> f64 {
    series["labels"]
        .as_array()
        .unwrap()
        .iter()
        .find(|l| l["key"] == key)
        .and_then(|l| l["value"]["doubleValue"].as_f64())
        .unwrap_or_else(|| panic!("no double label {key}: {series}"))
}

/// Σ adjusted_count per (group, step) over the spans in `[start, end)` that `filter` keeps.
async fn sql_counts(
    server: &TestServer,
    group: &str,
    filter: &str,
    (start, end): (i64, i64),
    step: i64,
) -> BTreeMap<(String, i64), f64> {
    let sql = format!(
        "SELECT coalesce(CAST({group} AS VARCHAR), '') AS g, \
         (start_time_unix_nano - {s}) / {step} AS b, \
         sum(coalesce(adjusted_count, 1.0)) AS c FROM spans \
         WHERE start_time_unix_nano >= {s} AND start_time_unix_nano < {e} AND ({filter}) \
         GROUP BY 1, 2",
        s = start * NANOS,
        e = end * NANOS,
        step = step * NANOS,
    );
    server
        .sql(&sql)
        .await
        .iter()
        .map(|r| {
            (
                (
                    r["g"].as_str().unwrap().to_string(),
                    r["b"].as_i64().unwrap(),
                ),
                r["c"].as_f64().unwrap(),
            )
        })
        .collect()
}

fn close(got: f64, want: f64) -> bool {
    (got - want).abs() <= 1e-9 * want.abs().max(1.0)
}

/// Every series has every step, each value Σ weight / `divide_by`, and the series are the
/// groups SQL finds.
fn check_counts(
    series: &[Value],
    key: &str,
    truth: &BTreeMap<(String, i64), f64>,
    (start, end): (i64, i64),
    step: i64,
    divide_by: f64,
) {
    let groups: BTreeSet<String> = truth.keys().map(|(g, _)| g.clone()).collect();
    let got: BTreeSet<String> = series.iter().map(|s| label(s, key)).collect();
    assert_eq!(got, groups, "one series per group");
    assert_eq!(series.len(), groups.len(), "no duplicate series");
    let points = (end - start) / step;
    for s in series {
        let g = label(s, key);
        let samples = s["samples"].as_array().unwrap();
        assert_eq!(samples.len() as i64, points, "{s}");
        for (i, p) in samples.iter().enumerate() {
            let t: i64 = p["timestampMs"].as_str().unwrap().parse().unwrap();
            assert_eq!(t, (start + i as i64 * step) * 1000, "{p}");
            let want = truth.get(&(g.clone(), i as i64)).copied().unwrap_or(0.0) / divide_by;
            let value = p["value"].as_f64().unwrap();
            assert!(close(value, want), "{g} step {i}: {value} vs SQL {want}");
        }
    }
}

/// Durations (ns) per (group, step), each repeated round(adjusted_count) times, as sketches
/// count them.
async fn sql_durations(
    server: &TestServer,
    group: &str,
    filter: &str,
    (start, end): (i64, i64),
    step: i64,
) -> BTreeMap<(String, i64), Vec<f64>> {
    let sql = format!(
        "SELECT coalesce(CAST({group} AS VARCHAR), '') AS g, \
         (start_time_unix_nano - {s}) / {step} AS b, duration_nano AS d, \
         round(coalesce(adjusted_count, 1.0)) AS w FROM spans \
         WHERE start_time_unix_nano >= {s} AND start_time_unix_nano < {e} AND ({filter})",
        s = start * NANOS,
        e = end * NANOS,
        step = step * NANOS,
    );
    let mut out: BTreeMap<(String, i64), Vec<f64>> = BTreeMap::new();
    for r in server.sql(&sql).await {
        let values = out
            .entry((
                r["g"].as_str().unwrap().to_string(),
                r["b"].as_i64().unwrap(),
            ))
            .or_default();
        let d = r["d"].as_f64().unwrap().max(0.0);
        values.extend(std::iter::repeat_n(d, r["w"].as_f64().unwrap() as usize));
    }
    out
}

/// The value at rank floor(q (n - 1)), which DDSketch approximates within 1 %.
fn rank(values: &mut [f64], q: f64) -> f64 {
    values.sort_by(f64::total_cmp);
    values[(q * (values.len() - 1) as f64).floor() as usize]
}

/// Each quantile series' samples are within 1 % of the exact weighted rank value, in seconds,
/// and each group has one series per quantile.
fn check_quantiles(
    series: &[Value],
    key: &str,
    truth: &mut BTreeMap<(String, i64), Vec<f64>>,
    (start, step): (i64, i64),
    quantiles: &[f64],
) {
    let groups: BTreeSet<String> = truth.keys().map(|(g, _)| g.clone()).collect();
    assert_eq!(series.len(), groups.len() * quantiles.len(), "{series:?}");
    let mut checked = 0;
    for s in series {
        let g = label(s, key);
        let q = double_label(s, "p");
        assert!(quantiles.contains(&q), "{s}");
        let samples = s["samples"].as_array().unwrap();
        let steps_with_spans = truth.keys().filter(|(tg, _)| *tg == g).count();
        assert_eq!(
            samples.len(),
            steps_with_spans,
            "{g}: only steps with spans"
        );
        for p in samples {
            let t: i64 = p["timestampMs"].as_str().unwrap().parse().unwrap();
            let step_index = (t / 1000 - start) / step;
            let values = truth.get_mut(&(g.clone(), step_index)).unwrap();
            let exact = rank(values, q) / 1e9;
            let got = p["value"].as_f64().unwrap();
            assert!(
                (got - exact).abs() <= 0.01 * exact + 1e-12,
                "{g} p{q} step {step_index}: {got} s vs exact {exact} s"
            );
            checked += 1;
        }
    }
    assert!(checked >= 4, "{checked} quantiles checked");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn traceql_metrics_match_sql_over_the_spans_on_both_paths() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path()).await;
    let hour = old_hour();
    run_loadgen(&[
        "--traces",
        &TRACES.to_string(),
        "--rate",
        "0",
        "--seed",
        "41",
        "--start-time",
        &hour.to_string(),
        "--time-spread",
        "30m",
        "--endpoint",
        &server.grpc_url(),
    ]);
    // Every trace decided, every kept span flushed (with its rollups).
    server
        .eventually(Duration::from_secs(60), "traces decided", || async {
            let (_, status) = get(&server, "/api/sampling", &[]).await;
            let decided: u64 = status["stats"]["bands"]
                .as_object()
                .unwrap()
                .values()
                .map(|b| b["kept_traces"].as_u64().unwrap() + b["dropped_traces"].as_u64().unwrap())
                .sum();
            decided >= TRACES && status["buffered_traces"] == 0
        })
        .await;
    server
        .eventually(Duration::from_secs(30), "spans flushed", || async {
            let stored = server.count("").await;
            stored > 0
                && metric(&server, "tracelake_spans_flushed_total").await >= stored
                && metric(&server, "tracelake_rollup_rows_total").await > 0
        })
        .await;
    // Sampling weighted the kept spans: counts below are weighted, not row counts.
    let weights = server
        .sql("SELECT count(*) AS n, sum(coalesce(adjusted_count, 1.0)) AS w FROM spans")
        .await;
    assert!(
        weights[0]["w"].as_f64().unwrap() > 1.5 * weights[0]["n"].as_f64().unwrap(),
        "{weights:?}"
    );

    let window = (hour, hour + 3600);
    let service = "resource.service.name";

    // Rollups: rate by service over 5-minute steps.
    let series = range(
        &server,
        "{ kind = server } | rate() by (resource.service.name)",
        window,
        "5m",
        "span_metrics_1m",
    )
    .await;
    let truth = sql_counts(&server, "service_name", "kind = 2", window, 300).await;
    assert!(truth.len() >= 10, "{truth:?}");
    check_counts(&series, service, &truth, window, 300, 300.0);
    let first = &series[0];
    assert_eq!(first["labels"][0]["key"], service);
    assert_eq!(
        first["promLabels"],
        format!("{{resource.service.name=\"{}\"}}", label(first, service))
    );

    // Rollups: errors without by(), labelled by the function's name.
    let series = range(
        &server,
        "{ status = error } | count_over_time()",
        window,
        "10m",
        "span_metrics_1m",
    )
    .await;
    let truth = sql_counts(&server, "''", "status_code = 2", window, 600).await;
    assert!(!truth.is_empty(), "the workload has errors");
    assert_eq!(series[0]["promLabels"], "{__name__=\"count_over_time\"}");
    check_counts(&series, "none", &truth, window, 600, 1.0);

    // Rollups: by span name and kind, with a regex on the route and a negated service.
    let q = r#"{ span.http.route =~ "/api/.*" && resource.service.name != "frontend" } | count_over_time() by (name, kind)"#;
    let series = range(&server, q, window, "15m", "span_metrics_1m").await;
    let kind = "CASE kind WHEN 1 THEN 'internal' WHEN 2 THEN 'server' WHEN 3 THEN 'client' \
                WHEN 4 THEN 'producer' WHEN 5 THEN 'consumer' ELSE 'unspecified' END";
    let truth = sql_counts(
        &server,
        &format!("name || '|' || {kind}"),
        "http_route LIKE '/api/%' AND service_name <> 'frontend'",
        window,
        900,
    )
    .await;
    assert!(truth.len() >= 3, "{truth:?}");
    check_counts(&series, "name,kind", &truth, window, 900, 1.0);
    assert!(series.iter().all(|s| s["labels"][1]["key"] == "kind"));

    // Spans: the same rate with a step that is not whole minutes.
    let series = range(
        &server,
        "{ kind = server } | rate() by (resource.service.name)",
        window,
        "90s",
        "spans",
    )
    .await;
    let truth = sql_counts(&server, "service_name", "kind = 2", window, 90).await;
    check_counts(&series, service, &truth, window, 90, 90.0);

    // Spans: a span attribute the rollups do not have, grouped by another.
    let method = "span_attributes['http.request.method']['str']";
    let series = range(
        &server,
        r#"{ span.http.request.method = "GET" } | count_over_time() by (span.server.port)"#,
        window,
        "5m",
        "spans",
    )
    .await;
    let truth = sql_counts(
        &server,
        "span_attributes['server.port']['int']",
        &format!("{method} = 'GET'"),
        window,
        300,
    )
    .await;
    assert!(truth.len() >= 2, "{truth:?}");
    check_counts(&series, "span.server.port", &truth, window, 300, 1.0);

    // Spans: a trace-level intrinsic (the root span's service), the traces wholly in the window.
    let series = range(
        &server,
        r#"{ rootServiceName = "frontend" && kind = server } | count_over_time() by (resource.service.name)"#,
        window,
        "10m",
        "spans",
    )
    .await;
    let truth = sql_counts(
        &server,
        "service_name",
        "kind = 2 AND trace_id IN (SELECT trace_id FROM spans WHERE service_name = 'frontend' \
         AND (parent_span_id IS NULL OR encode(parent_span_id, 'hex') = ''))",
        window,
        600,
    )
    .await;
    assert!(truth.len() >= 3, "{truth:?}");
    check_counts(&series, service, &truth, window, 600, 1.0);

    // Quantiles, rollups: merged per-minute sketches.
    let quantiles = [0.5, 0.9, 0.99];
    let series = range(
        &server,
        "{ kind = server } | quantile_over_time(duration, 0.5, 0.9, 0.99) by (resource.service.name)",
        window,
        "30m",
        "span_metrics_1m",
    )
    .await;
    let mut truth = sql_durations(&server, "service_name", "kind = 2", window, 1800).await;
    check_quantiles(&series, service, &mut truth, (hour, 1800), &quantiles);

    // Quantiles, spans: sketches of the matching spans.
    let series = range(
        &server,
        r#"{ span.http.request.method = "GET" && kind = server } | quantile_over_time(duration, 0.5, 0.99) by (resource.service.name)"#,
        window,
        "30m",
        "spans",
    )
    .await;
    let mut truth = sql_durations(
        &server,
        "service_name",
        &format!("{method} = 'GET' AND kind = 2"),
        window,
        1800,
    )
    .await;
    check_quantiles(&series, service, &mut truth, (hour, 1800), &[0.5, 0.99]);

    // Histogram (spans): power-of-two buckets, upper bounds in seconds.
    let series = range(
        &server,
        "{ kind = server } | histogram_over_time(duration) by (resource.service.name)",
        window,
        "1h",
        "spans",
    )
    .await;
    let rows = server
        .sql(&format!(
            "SELECT service_name AS g, duration_nano AS d, coalesce(adjusted_count, 1.0) AS w \
             FROM spans WHERE kind = 2 AND start_time_unix_nano >= {} \
             AND start_time_unix_nano < {}",
            window.0 * NANOS,
            window.1 * NANOS
        ))
        .await;
    let mut buckets: BTreeMap<(String, u64), f64> = BTreeMap::new();
    for r in &rows {
        let d = r["d"].as_u64().unwrap();
        if d >= 2 {
            *buckets
                .entry((r["g"].as_str().unwrap().to_string(), d.next_power_of_two()))
                .or_default() += r["w"].as_f64().unwrap();
        }
    }
    assert_eq!(
        series.len(),
        buckets.len(),
        "one series per service and bucket"
    );
    for s in &series {
        let le = double_label(s, "__bucket");
        let nanos = (le * 1e9).round() as u64;
        assert!(nanos.is_power_of_two(), "{s}");
        let want = buckets[&(label(s, service), nanos)];
        let got = s["samples"][0]["value"].as_f64().unwrap();
        assert!(close(got, want), "{s}: {got} vs {want}");
    }

    // Instant form: one value per series, over the whole window (rollups: whole minutes).
    for (end, source) in [(window.1, "span_metrics_1m"), (window.1 - 7, "spans")] {
        let (status, body) = get(
            &server,
            "/api/metrics/query",
            &[
                (
                    "q",
                    "{ kind = server } | rate() by (resource.service.name)".into(),
                ),
                ("start", hour.to_string()),
                ("end", end.to_string()),
            ],
        )
        .await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["metrics"]["source"], source);
        let truth = sql_counts(&server, "service_name", "kind = 2", (hour, end), end - hour).await;
        let series = body["series"].as_array().unwrap();
        assert_eq!(series.len(), truth.len());
        for s in series {
            let want = truth[&(label(s, service), 0)] / (end - hour) as f64;
            assert!(close(s["value"].as_f64().unwrap(), want), "{s} vs {want}");
        }
    }

    // Bad requests say what is wrong.
    let w = |s: i64, e: i64| vec![("start", s.to_string()), ("end", e.to_string())];
    let with_q = |q: &str, mut rest: Vec<(&'static str, String)>| {
        rest.push(("q", q.to_string()));
        rest
    };
    for (path, params, needle) in [
        (
            "/api/metrics/query_range",
            w(hour, hour + 60),
            "q is required",
        ),
        (
            "/api/metrics/query_range",
            with_q("{ name = }", w(hour, hour + 60)),
            "invalid TraceQL query: parse error at line 1, column 10",
        ),
        (
            "/api/metrics/query_range",
            with_q("{ kind = server }", w(hour, hour + 60)),
            "not a metrics query",
        ),
        (
            "/api/metrics/query",
            with_q("{ .a = 1 } >> { .b = 2 } | rate()", w(hour, hour + 60)),
            "structural operators",
        ),
        (
            "/api/metrics/query_range",
            with_q("{ } | min_over_time(duration)", w(hour, hour + 60)),
            "min_over_time() is not supported yet",
        ),
        (
            "/api/metrics/query_range",
            with_q("{ } | rate()", {
                let mut p = w(hour, hour + 60);
                p.push(("step", "fast".into()));
                p
            }),
            "invalid step",
        ),
        (
            "/api/metrics/query_range",
            with_q("{ } | rate()", {
                let mut p = w(hour - 86_400, hour);
                p.push(("step", "1s".into()));
                p
            }),
            "86400 points per series; at most 11000",
        ),
        (
            "/api/metrics/query",
            with_q("{ } | rate()", w(hour, hour - 60)),
            "must be after start",
        ),
        (
            "/api/metrics/query",
            with_q("{ } | count_over_time() by (span:id)", w(hour, hour + 3600)),
            "series; at most 1000",
        ),
    ] {
        let (status, body) = get(&server, path, &params).await;
        assert_eq!(status, 400, "{path} {params:?}: {body}");
        let message = body["error"].as_str().unwrap();
        assert!(message.contains(needle), "{path} {params:?}: {message}");
    }
}
