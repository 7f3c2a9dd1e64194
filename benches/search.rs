//! Trace search and trace-by-id at scale: the release `tracelake` binary, one hour of
//! `tracelake loadgen` spans, read back from Parquet.
//!
//! ```text
//!  for each size in SIZES (ascending, one data directory, ingest only the difference):
//!    loadgen x CHUNKS ─► serve ─► SIGTERM (final flush) ─► tracelake compact (the hour is
//!      closed: its files merge, and its trace index is written) ─► serve again (Parquet only)
//!      chunk i: --start-time BASE + i * 3600/CHUNKS, --time-spread (slot - 15 s), own seed
//!    GET /api/search?q=...&start=BASE&end=BASE+3600&limit=20   WARMUP + RUNS per query
//!    GET /api/v2/traces/{id}, Accept: application/protobuf    LOOKUPS random ids (by SQL)
//!  print one markdown table per size, then the scaling curve
//! ```
//!
//! `tracelake loadgen` sends as fast as it can (`--rate 0`); `--time-spread` spaces the start
//! times of a chunk's traces evenly over most of its slot, so the hour holds a steady stream
//! (about 2,800 spans a second at 10M) rather than one burst per slot. Each chunk has its own
//! offset in the hour and its own seed (distinct trace ids).
//!
//! ```sh
//! cargo bench --workspace --bench search                        # SIZES=1000000,3000000,10000000
//! SIZES=100000 RUNS=5 cargo bench --workspace --bench search    # a quick look
//! ```
//!
//! Settings (environment variables, or `--name value` arguments after `--`):
//! `SIZES` (spans, comma separated; `SPANS` for one size), `RUNS` (timed runs per query, 10),
//! `WARMUP` (2), `LOOKUPS` (200), `CHUNKS` (120), `BASE` (unix seconds of the hour,
//! 2026-11-02T10:00:00Z), `QUERY_BUDGET_SECS` (stop timing a query after this long once 3
//! runs are in, 60), `DATA_DIR` (keep the data there instead of a temporary directory).

#[allow(dead_code)]
mod common;

#[allow(dead_code, unreachable_pub)]
#[path = "../tests/e2e/server.rs"]
mod server;

use std::time::{Duration, Instant};

use common::{dir_bytes, number, percentile, setting};
use server::TestServer;

/// Spans per trace of the loadgen workload, for sizing the first chunk; corrected as it goes.
const SPANS_PER_TRACE_GUESS: f64 = 10.85;

/// The queries: (what it shows, TraceQL).
const QUERIES: [(&str, &str); 7] = [
    (
        "selective attribute (dedicated column)",
        "{ span.http.response.status_code = 503 }",
    ),
    (
        "selective attribute (attribute map)",
        r#"{ span.app.payment.currency = "GBP" }"#,
    ),
    ("intrinsics", "{ status = error && kind = server }"),
    (
        "regex on name, duration",
        r#"{ name =~ "GET /api/.*" && duration > 100ms }"#,
    ),
    (
        "structural >>",
        r#"{ resource.service.name = "frontend" } >> { resource.service.name = "payment" }"#,
    ),
    (
        "pipeline by() count()",
        "{ kind = server } | by(resource.service.name) | count() > 1",
    ),
    ("match all", "{ }"),
];

struct Config {
    sizes: Vec<u64>,
    runs: usize,
    warmup: usize,
    lookups: usize,
    chunks: u64,
    base: u64,
    query_budget: Duration,
    data_dir: Option<String>,
}

fn config() -> Config {
    let sizes = setting("SIZES")
        .or_else(|| setting("SPANS"))
        .unwrap_or_else(|| "1000000,3000000,10000000".into());
    let mut sizes: Vec<u64> = sizes
        .split(',')
        .map(|s| {
            s.trim().replace('_', "").parse().unwrap_or_else(|_| {
                panic!("SIZES: expected span counts separated by commas, got {s:?}")
            })
        })
        .collect();
    sizes.sort_unstable();
    sizes.dedup();
    assert!(sizes[0] > 0, "SIZES: sizes must be positive");
    Config {
        sizes,
        runs: number("RUNS", 10).max(1) as usize,
        warmup: number("WARMUP", 2) as usize,
        lookups: number("LOOKUPS", 200).max(1) as usize,
        chunks: number("CHUNKS", 120).clamp(1, 3600),
        // 2026-11-02T10:00:00Z: a whole hour, so that the data sits in one (date, hour) partition.
        base: number("BASE", 1_793_613_600) / 3600 * 3600,
        query_budget: Duration::from_secs(number("QUERY_BUDGET_SECS", 60)),
        data_dir: setting("DATA_DIR"),
    }
}

fn ms(d: Duration) -> String {
    format!("{:.1}", d.as_secs_f64() * 1e3)
}

/// A line of system facts: cores, memory, load, date.
fn system_facts() -> String {
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let mem_gib = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            m.lines()
                .find(|l| l.starts_with("MemTotal:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse::<f64>().ok())
        })
        .map_or(0.0, |kib| kib / 1024.0 / 1024.0);
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let load: Vec<&str> = load.split_whitespace().take(3).collect();
    let date = std::process::Command::new("date")
        .args(["-u", "+%Y-%m-%d %H:%M UTC"])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default();
    format!(
        "{cores} cores, {mem_gib:.0} GiB, load average {}, {date}",
        load.join(" ")
    )
}

/// Sends about `spans` more spans, spread over the hour in `config.chunks` loadgen runs.
/// Returns (spans acked, traces sent, seconds).
fn ingest(srv: &TestServer, config: &Config, stage: u64, spans: u64) -> (u64, u64, f64) {
    let started = Instant::now();
    let (mut acked, mut traces) = (0u64, 0u64);
    let step = 3600 / config.chunks;
    for i in 0..config.chunks {
        let per_trace = if traces == 0 {
            SPANS_PER_TRACE_GUESS
        } else {
            acked as f64 / traces as f64
        };
        let left = spans.saturating_sub(acked) as f64 / (config.chunks - i) as f64;
        let chunk_traces = (left / per_trace).round().max(1.0) as u64;
        // Stage s starts s seconds into each slot, so that stages do not share start times;
        // the last slot still ends well inside the hour (loadgen's longest span is 10 s).
        let start = config.base + i * step + stage.min(step.saturating_sub(15));
        // The chunk's traces start evenly over most of its slot (as a steady stream would),
        // not within the instant that sending them takes.
        let spread = step.saturating_sub(15 + stage).max(1);
        let summary = server::run_loadgen(&[
            "--rate",
            "0",
            "--seed",
            &(stage * 100_000 + i + 1).to_string(),
            "--start-time",
            &start.to_string(),
            "--traces",
            &chunk_traces.to_string(),
            "--time-spread",
            &format!("{spread}s"),
            "--concurrency",
            "8",
            "--batch-traces",
            "100",
            "--endpoint",
            &srv.grpc_url(),
        ]);
        acked += summary["spans_acked"].as_u64().unwrap();
        traces += summary["traces_sent"].as_u64().unwrap();
    }
    (acked, traces, started.elapsed().as_secs_f64())
}

/// Timings of one query: sorted latencies, traces in the reply, candidate traces, or an error.
struct QueryResult {
    label: &'static str,
    query: &'static str,
    latencies: Vec<Duration>,
    traces: usize,
    candidates: u64,
    error: Option<String>,
}

async fn time_search(
    client: &reqwest::Client,
    srv: &TestServer,
    config: &Config,
    label: &'static str,
    query: &'static str,
) -> QueryResult {
    let start = config.base.to_string();
    let end = (config.base + 3600).to_string();
    let mut result = QueryResult {
        label,
        query,
        latencies: Vec::new(),
        traces: 0,
        candidates: 0,
        error: None,
    };
    let began = Instant::now();
    for run in 0..config.warmup + config.runs {
        let t = Instant::now();
        let resp = client
            .get(srv.url("/api/search"))
            .query(&[
                ("q", query),
                ("start", &start),
                ("end", &end),
                ("limit", "20"),
            ])
            .send()
            .await
            .unwrap();
        let status = resp.status();
        let body = resp.bytes().await.unwrap();
        let elapsed = t.elapsed();
        if !status.is_success() {
            result.error = Some(format!("{status}: {}", String::from_utf8_lossy(&body)));
            break;
        }
        let json: serde_json::Value = serde_json::from_slice(&body).unwrap();
        result.traces = json["traces"].as_array().map_or(0, Vec::len);
        result.candidates = json["metrics"]["candidateTraces"].as_u64().unwrap_or(0);
        if run >= config.warmup {
            result.latencies.push(elapsed);
            if result.latencies.len() >= 3 && began.elapsed() > config.query_budget {
                break;
            }
        }
    }
    result.latencies.sort();
    result
}

/// `GET /api/v2/traces/{id}` (protobuf) for `ids`; sorted latencies and total bytes.
async fn time_lookups(
    client: &reqwest::Client,
    srv: &TestServer,
    ids: &[String],
) -> (Vec<Duration>, u64) {
    let mut latencies = Vec::with_capacity(ids.len());
    let mut bytes = 0;
    for id in ids {
        let t = Instant::now();
        let resp = client
            .get(srv.url(&format!("/api/v2/traces/{id}")))
            .header("Accept", "application/protobuf")
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200, "trace {id}");
        let body = resp.bytes().await.unwrap();
        latencies.push(t.elapsed());
        assert!(!body.is_empty(), "trace {id}: empty reply");
        bytes += body.len() as u64;
    }
    latencies.sort();
    (latencies, bytes)
}

/// p99 duration by service over the hour, from raw spans and from the rollups (issue 5).
const P99_RAW: &str = "SELECT service_name AS s, \
     ddsketch_quantile(ddsketch(duration_nano, adjusted_count), 0.99) AS p99 FROM spans \
     WHERE date = '2026-11-02' AND hour = '10' GROUP BY 1 ORDER BY 1";
const P99_ROLLUPS: &str = "SELECT service_name AS s, \
     ddsketch_quantile(ddsketch_merge(duration_sketch), 0.99) AS p99 FROM span_metrics_1m \
     WHERE date = '2026-11-02' AND hour = '10' GROUP BY 1 ORDER BY 1";

/// Times `sql` over `/api/sql` (warm-up, then `runs`); sorted latencies and the last reply.
async fn time_sql(
    client: &reqwest::Client,
    srv: &TestServer,
    config: &Config,
    sql: &str,
) -> (Vec<Duration>, serde_json::Value) {
    let mut latencies = Vec::new();
    let mut last = serde_json::Value::Null;
    for run in 0..config.warmup + config.runs {
        let t = Instant::now();
        let resp = client
            .post(srv.url("/api/sql"))
            .body(sql.to_string())
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200, "{sql}");
        last = resp.json().await.unwrap();
        if run >= config.warmup {
            latencies.push(t.elapsed());
        }
    }
    latencies.sort();
    (latencies, last)
}

/// The largest relative difference between two `[{s, p99}]` replies, service by service.
fn max_relative_gap(a: &serde_json::Value, b: &serde_json::Value) -> f64 {
    let (a, b) = (a.as_array().unwrap(), b.as_array().unwrap());
    assert_eq!(a.len(), b.len(), "the same services");
    a.iter()
        .zip(b)
        .map(|(x, y)| {
            assert_eq!(x["s"], y["s"]);
            let (x, y) = (x["p99"].as_f64().unwrap(), y["p99"].as_f64().unwrap());
            (x - y).abs() / x.abs().max(1e-9)
        })
        .fold(0.0, f64::max)
}

/// What one size measured.
struct SizeResult {
    spans: u64,
    traces: u64,
    parquet_bytes: u64,
    files: usize,
    ingest_rate: f64,
    queries: Vec<QueryResult>,
    lookups: Vec<Duration>,
    lookup_bytes: u64,
    compaction: Compaction,
    /// p99 by service from raw spans and from rollups: latencies, and their largest gap.
    p99_raw: Vec<Duration>,
    p99_rollups: Vec<Duration>,
    p99_gap: f64,
}

/// What `tracelake compact` did after a stage's ingest.
#[derive(Debug, Default, Clone, Copy)]
struct Compaction {
    files_removed: u64,
    bytes_removed: u64,
    files_added: u64,
    spans: u64,
    secs: f64,
}

/// Runs `tracelake compact` on the stopped server's data, as an operator (or the server's own
/// background compactor) would once the hour has closed.
fn compact(dir: &std::path::Path) -> Compaction {
    let started = Instant::now();
    let stdout = common::compact_dir(dir);
    let mut c = Compaction {
        secs: started.elapsed().as_secs_f64(),
        ..Compaction::default()
    };
    for line in stdout.lines() {
        for (key, value) in line.split_whitespace().filter_map(|kv| kv.split_once('=')) {
            let n = value.parse().unwrap_or(0);
            match key {
                "files_removed" => c.files_removed += n,
                "bytes_removed" => c.bytes_removed += n,
                "files_added" => c.files_added += n,
                "spans" => c.spans += n,
                _ => {}
            }
        }
    }
    eprintln!(
        "compacted {} files into {} ({} spans) in {:.1} s",
        c.files_removed, c.files_added, c.spans, c.secs
    );
    c
}

fn print_size(r: &SizeResult) {
    println!(
        "\n### {} spans, {} traces, one hour ({} Parquet files, {:.0} MB; ingest {:.0} spans/s; \
         compaction merged {} files into {} in {:.1} s)\n",
        r.spans,
        r.traces,
        r.files,
        r.parquet_bytes as f64 / 1e6,
        r.ingest_rate,
        r.compaction.files_removed,
        r.compaction.files_added,
        r.compaction.secs,
    );
    println!("| query | runs | median ms | p90 ms | p99 ms | traces | candidates |");
    println!("| --- | --- | --- | --- | --- | --- | --- |");
    for q in &r.queries {
        let query = format!("{}: `{}`", q.label, q.query.replace('|', "\\|"));
        match &q.error {
            Some(e) => println!("| {query} | failed: {} | | | | | |", e.replace('|', "\\|")),
            None => println!(
                "| {query} | {} | {} | {} | {} | {} | {} |",
                q.latencies.len(),
                ms(percentile(&q.latencies, 0.5)),
                ms(percentile(&q.latencies, 0.9)),
                ms(percentile(&q.latencies, 0.99)),
                q.traces,
                q.candidates,
            ),
        }
    }
    println!(
        "| `GET /api/v2/traces/{{id}}` protobuf, random ids ({:.0} bytes avg) | {} | {} | {} | {} | 1 | |",
        r.lookup_bytes as f64 / r.lookups.len() as f64,
        r.lookups.len(),
        ms(percentile(&r.lookups, 0.5)),
        ms(percentile(&r.lookups, 0.9)),
        ms(percentile(&r.lookups, 0.99)),
    );
    for (label, latencies) in [
        ("p99 by service over the hour, SQL over `spans`", &r.p99_raw),
        (
            "p99 by service over the hour, SQL over `span_metrics_1m`",
            &r.p99_rollups,
        ),
    ] {
        println!(
            "| {label} | {} | {} | {} | {} | | |",
            latencies.len(),
            ms(percentile(latencies, 0.5)),
            ms(percentile(latencies, 0.9)),
            ms(percentile(latencies, 0.99)),
        );
    }
    println!(
        "\nRollup p99s are within {:.3} % of the raw-span sketches' (largest gap over services).",
        r.p99_gap * 100.0
    );
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let config = config();
    let temp = tempfile::tempdir().unwrap();
    let dir = config
        .data_dir
        .as_deref()
        .map_or_else(|| temp.path().to_path_buf(), Into::into);
    println!("## tracelake trace search and lookup at scale");
    println!("{}", system_facts());
    println!(
        "sizes {:?}, {} chunks over the hour from {}, {} warm-up + {} runs per query, {} lookups; data in {}",
        config.sizes,
        config.chunks,
        config.base,
        config.warmup,
        config.runs,
        config.lookups,
        dir.display()
    );
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(120))
        .build()
        .unwrap();
    let flags = ["--flush-interval", "5s"];
    let (mut total_spans, mut total_traces) = (0u64, 0u64);
    let mut removed = (0u64, 0u64);
    let mut results = Vec::new();
    for (stage, &size) in config.sizes.iter().enumerate() {
        // Ingest the difference, then restart so that every span is read from Parquet.
        let mut srv = TestServer::start(&dir, &flags).await;
        let (acked, traces, secs) = ingest(
            &srv,
            &config,
            stage as u64,
            size.saturating_sub(total_spans),
        );
        total_spans += acked;
        total_traces += traces;
        assert!(srv.terminate().success());
        let compaction = compact(&dir);
        removed.0 += compaction.files_removed;
        removed.1 += compaction.bytes_removed;
        let srv = TestServer::start(&dir, &flags).await;
        assert_eq!(srv.count("").await, total_spans, "spans stored");
        // Files removed by compaction stay on disk (no vacuum here): count the live ones.
        let (disk_bytes, disk_files) = dir_bytes(&dir.join("tenants"), "parquet");
        let (parquet_bytes, files) = (disk_bytes - removed.1, disk_files - removed.0 as usize);
        eprintln!(
            "{total_spans} spans stored ({acked} new in {secs:.0} s); measuring at {}",
            system_facts()
        );

        let mut queries = Vec::new();
        for (label, query) in QUERIES {
            let r = time_search(&client, &srv, &config, label, query).await;
            eprintln!(
                "  {label}: median {} ms over {} runs{}",
                r.latencies
                    .first()
                    .map_or("-".into(), |_| ms(percentile(&r.latencies, 0.5))),
                r.latencies.len(),
                r.error
                    .as_deref()
                    .map_or(String::new(), |e| format!(", {e}"))
            );
            queries.push(r);
        }

        let ids: Vec<String> = srv
            .sql(&format!(
                "SELECT id FROM (SELECT DISTINCT encode(trace_id, 'hex') AS id FROM spans) \
                 ORDER BY random() LIMIT {}",
                config.lookups + 20
            ))
            .await
            .into_iter()
            .map(|r| r["id"].as_str().unwrap().to_string())
            .collect();
        let (warm, timed) = ids.split_at(ids.len().min(20).min(ids.len() / 2));
        let _ = time_lookups(&client, &srv, warm).await;
        let (lookups, lookup_bytes) = time_lookups(&client, &srv, timed).await;
        let (p99_raw, raw) = time_sql(&client, &srv, &config, P99_RAW).await;
        let (p99_rollups, rolled) = time_sql(&client, &srv, &config, P99_ROLLUPS).await;
        let p99_gap = max_relative_gap(&raw, &rolled);
        let result = SizeResult {
            p99_raw,
            p99_rollups,
            p99_gap,
            spans: total_spans,
            traces: total_traces,
            parquet_bytes,
            files,
            ingest_rate: acked as f64 / secs,
            queries,
            lookups,
            lookup_bytes,
            compaction,
        };
        print_size(&result);
        results.push(result);
    }

    println!("\n### Scaling curve (median / p99 ms)\n");
    let header: Vec<String> = results
        .iter()
        .map(|r| format!("{} spans", r.spans))
        .collect();
    println!("| query | {} |", header.join(" | "));
    println!("| --- |{}", " --- |".repeat(results.len()));
    for (i, (label, _)) in QUERIES.iter().enumerate() {
        let cells: Vec<String> = results
            .iter()
            .map(|r| {
                let q = &r.queries[i];
                if q.latencies.is_empty() {
                    "failed".into()
                } else {
                    format!(
                        "{} / {}",
                        ms(percentile(&q.latencies, 0.5)),
                        ms(percentile(&q.latencies, 0.99))
                    )
                }
            })
            .collect();
        println!("| {label} | {} |", cells.join(" | "));
    }
    let cells: Vec<String> = results
        .iter()
        .map(|r| {
            format!(
                "{} / {}",
                ms(percentile(&r.lookups, 0.5)),
                ms(percentile(&r.lookups, 0.99))
            )
        })
        .collect();
    println!(
        "| `/api/v2/traces/{{id}}` protobuf | {} |",
        cells.join(" | ")
    );
}
