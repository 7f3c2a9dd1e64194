//! SLO status over 30 days of rollups, and TraceQL metrics over 24 hours of them: the release
//! `tracelake` binary, one real hour of `tracelake loadgen` spans, its `span_metrics_1m` rows
//! repeated over the days before it.
//!
//! ```text
//!  serve ─► loadgen SPANS over the hour BASE ─► SIGTERM ─► tracelake compact (the hour's
//!    rollups fold into one file, as every closed hour's do)
//!  the hour's rollup rows, shifted back 1 .. DAYS*24-1 hours ─► one file per hour, one Delta
//!    commit per day (what DAYS of that traffic leaves after compaction)
//!  serve with 50 SLOs (config) ─►
//!    GET /api/slo?time=END                  first call (cold: every file read), then warm runs
//!    GET /api/slo/{name}?time=END           one SLO
//!    SELECT * FROM slo_status()             the SQL table function (evaluated now)
//!    GET /api/metrics/query_range  quantile_over_time(duration, .5, .99) by service, 24 h, 5m
//!    the same over the real hour: rollups vs spans (a `duration >= 0` filter forces spans)
//! ```
//!
//! ```sh
//! cargo bench --workspace --bench slo                 # SPANS=1000000 DAYS=30
//! SPANS=200000 DAYS=7 cargo bench --workspace --bench slo
//! ```
//!
//! Settings (environment variables, or `--name value` after `--`): `SPANS` (1000000), `DAYS`
//! (30), `RUNS` (20), `WARMUP` (3), `BASE` (unix seconds of the real hour,
//! 2026-11-02T10:00:00Z), `DATA_DIR` (keep the data there).

#[allow(dead_code)]
mod common;

#[allow(dead_code, unreachable_pub)]
#[path = "../tests/e2e/server.rs"]
mod server;

use std::sync::Arc;
use std::time::{Duration, Instant};

use arrow::array::{ArrayRef, AsArray, Int64Array, RecordBatch, StringArray};
use arrow::datatypes::Int64Type;
use common::{number, percentile, setting};
use server::TestServer;
use tracelake_storage::rollup::{
    append_rollups, read_rollup_file, rollup_columns, rollup_files, rollup_schema,
};

fn ms(d: Duration) -> String {
    format!("{:.1}", d.as_secs_f64() * 1e3)
}

/// Sorted latencies of `runs` calls after `warmup` untimed ones; the last reply.
async fn time_get(
    client: &reqwest::Client,
    url: &str,
    warmup: usize,
    runs: usize,
) -> (Vec<Duration>, serde_json::Value) {
    let mut latencies = Vec::with_capacity(runs);
    let mut last = serde_json::Value::Null;
    for i in 0..warmup + runs {
        let t = Instant::now();
        let resp = client.get(url).send().await.unwrap();
        let status = resp.status();
        let body = resp.bytes().await.unwrap();
        let elapsed = t.elapsed();
        assert!(
            status.is_success(),
            "{url}: {status} {}",
            String::from_utf8_lossy(&body)
        );
        last = serde_json::from_slice(&body).unwrap();
        if i >= warmup {
            latencies.push(elapsed);
        }
    }
    latencies.sort();
    (latencies, last)
}

fn row(label: &str, l: &[Duration]) {
    println!(
        "| {label} | {} | {} | {} | {} |",
        l.len(),
        ms(percentile(l, 0.5)),
        ms(percentile(l, 0.9)),
        ms(*l.last().unwrap())
    );
}

/// The hour's rollup rows shifted back by `hours`, with their partition columns.
fn shifted(batches: &[RecordBatch], hours: i64) -> Vec<RecordBatch> {
    let schema = rollup_schema();
    batches
        .iter()
        .map(|b| {
            let minutes = b
                .column_by_name(rollup_columns::MINUTE)
                .unwrap()
                .as_primitive::<Int64Type>();
            let shift = hours * 3_600_000_000_000;
            let moved: Int64Array = minutes.unary(|m| m - shift);
            let (date, hour) = tracelake_proto::partition_values(
                u64::try_from(moved.value(0)).expect("minutes after 1970"),
            );
            let mut columns: Vec<ArrayRef> = Vec::with_capacity(schema.fields().len());
            for field in schema.fields().iter() {
                columns.push(match field.name().as_str() {
                    rollup_columns::MINUTE => Arc::new(moved.clone()),
                    "date" => Arc::new(StringArray::from(vec![date.as_str(); b.num_rows()])),
                    "hour" => Arc::new(StringArray::from(vec![hour.as_str(); b.num_rows()])),
                    name => Arc::clone(b.column_by_name(name).unwrap()),
                });
            }
            RecordBatch::try_new(Arc::clone(&schema), columns).unwrap()
        })
        .collect()
}

/// Repeats the real hour's rollups (one compacted file) over the `days` before it.
async fn replicate(dir: &std::path::Path, days: u64) -> usize {
    let url = url::Url::from_directory_path(dir.join("tenants/default/span_metrics_1m")).unwrap();
    let mut table = tracelake_storage::table::open_or_create_table(
        &url,
        &Default::default(),
        &rollup_schema(),
        "span_metrics_1m",
        "",
    )
    .await
    .unwrap();
    let files = rollup_files(&table).unwrap();
    assert_eq!(
        files.len(),
        1,
        "the real hour's rollups are compacted into one file"
    );
    let hour = read_rollup_file(&table, &files[0], None).await.unwrap();
    let rows: usize = hour.iter().map(RecordBatch::num_rows).sum();
    for day in 0..days {
        let batches: Vec<RecordBatch> = (day * 24..(day + 1) * 24)
            .filter(|h| *h > 0)
            .flat_map(|h| shifted(&hour, h as i64))
            .collect();
        table = append_rollups(&table, batches).await.unwrap();
    }
    rows
}

fn slo_config(services: &[String], routes: &[(String, String)]) -> String {
    let mut bodies = Vec::new();
    let mut add = |body: String| bodies.push(body);
    for s in services {
        add(format!(
            "service = \"{s}\"\nfilter = '{{ kind = server }}'\nobjective = 0.999\nkind = \"availability\"\n"
        ));
        add(format!(
            "service = \"{s}\"\nobjective = 0.99\nkind = \"latency\"\nthreshold = \"300ms\"\n"
        ));
        add(format!(
            "service = \"{s}\"\nfilter = '{{ kind = server }}'\nobjective = 0.95\nkind = \"latency\"\nthreshold = \"1s\"\n"
        ));
    }
    for (s, r) in routes
        .iter()
        .cycle()
        .take(50usize.saturating_sub(3 * services.len()))
    {
        add(format!(
            "service = \"{s}\"\nfilter = '{{ span.http.route = \"{r}\" && status != error }}'\nobjective = 0.995\nkind = \"availability\"\n"
        ));
    }
    let mut out = String::from("[storage]\nflush_interval = \"5s\"\n");
    for (n, body) in bodies.iter().take(50).enumerate() {
        out.push_str(&format!(
            "\n[[slo]]\nname = \"slo-{}\"\nwindow = \"30d\"\n{body}",
            n + 1
        ));
    }
    out
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let spans = number("SPANS", 1_000_000);
    let days = number("DAYS", 30).max(1);
    let runs = number("RUNS", 20).max(1) as usize;
    let warmup = number("WARMUP", 3) as usize;
    let base = number("BASE", 1_793_613_600) / 3600 * 3600;
    let temp = tempfile::tempdir().unwrap();
    let dir = setting("DATA_DIR").map_or_else(|| temp.path().to_path_buf(), Into::into);
    std::fs::create_dir_all(&dir).unwrap();

    // One real hour of traffic.
    let mut srv = TestServer::start(&dir, &["--compaction-interval", "0s"]).await;
    let started = Instant::now();
    let acked = common::loadgen_hour(
        &srv.grpc_url(),
        base,
        (spans as f64 / 10.85).round() as u64,
        5,
    );
    eprintln!(
        "ingested {acked} spans in {:.0} s",
        started.elapsed().as_secs_f64()
    );
    let services: Vec<String> = srv
        .sql("SELECT DISTINCT service_name AS s FROM spans ORDER BY 1")
        .await
        .iter()
        .map(|r| r["s"].as_str().unwrap().to_string())
        .collect();
    let routes: Vec<(String, String)> = srv
        .sql(
            "SELECT service_name AS s, http_route AS r FROM spans WHERE kind = 2 \
             AND http_route IS NOT NULL GROUP BY 1, 2 ORDER BY count(*) DESC, 1, 2 LIMIT 40",
        )
        .await
        .iter()
        .map(|r| {
            (
                r["s"].as_str().unwrap().to_string(),
                r["r"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert!(srv.terminate().success());
    common::compact_dir(&dir);

    let t = Instant::now();
    let rows_per_hour = replicate(&dir, days).await;
    eprintln!(
        "replicated {rows_per_hour} rollup rows per hour over {days} days in {:.1} s",
        t.elapsed().as_secs_f64()
    );
    let config = dir.join("slo-bench.toml");
    std::fs::write(&config, slo_config(&services, &routes)).unwrap();
    let srv = TestServer::start(
        &dir,
        &[
            "--config",
            config.to_str().unwrap(),
            "--compaction-interval",
            "0s",
        ],
    )
    .await;
    let client = reqwest::Client::new();
    let end = base + 3600 - 1;

    let list = srv.url(&format!("/api/slo?time={end}"));
    let (cold, first) = time_get(&client, &list, 0, 1).await;
    let slos = first["slos"].as_array().unwrap();
    assert_eq!(slos.len(), 50);
    assert!(slos.iter().all(|s| s["source"] == "rollups"));
    let events: f64 = slos.iter().map(|s| s["total"].as_f64().unwrap()).sum();
    assert!(events > 0.0);
    let (warm, _) = time_get(&client, &list, warmup, runs).await;
    let (one, _) = time_get(
        &client,
        &srv.url(&format!("/api/slo/slo-1?time={end}")),
        warmup,
        runs,
    )
    .await;
    let sql = {
        let mut l = Vec::new();
        for i in 0..warmup + runs {
            let t = Instant::now();
            let rows = srv
                .sql("SELECT name, sli, burn_rate_1h, alert FROM slo_status()")
                .await;
            assert_eq!(rows.len(), 50);
            if i >= warmup {
                l.push(t.elapsed());
            }
        }
        l.sort();
        l
    };
    let q = "{ } | quantile_over_time(duration, 0.5, 0.99) by (resource.service.name)";
    let day_start = base + 3600 - 86_400;
    let range = |q: &str, start: u64, step: &str| {
        let mut u = reqwest::Url::parse(&srv.url("/api/metrics/query_range")).unwrap();
        u.query_pairs_mut()
            .append_pair("q", q)
            .append_pair("start", &start.to_string())
            .append_pair("end", &(base + 3600).to_string())
            .append_pair("step", step);
        u.to_string()
    };
    let (day, reply) = time_get(&client, &range(q, day_start, "5m"), warmup, runs).await;
    assert_eq!(reply["metrics"]["source"], "span_metrics_1m");
    let day_series = reply["series"].as_array().unwrap().len();
    let (hour_rollups, _) = time_get(&client, &range(q, base, "5m"), warmup, runs).await;
    let spans_q =
        "{ duration >= 0ms } | quantile_over_time(duration, 0.5, 0.99) by (resource.service.name)";
    let (hour_spans, reply) = time_get(&client, &range(spans_q, base, "5m"), 1, runs.min(5)).await;
    assert_eq!(reply["metrics"]["source"], "spans");

    println!(
        "\n### 50 SLOs over {days} days of rollups ({rows_per_hour} rollup rows per hour, {} files; \
         the real hour: {acked} spans)\n",
        days * 24
    );
    println!("| request | runs | median ms | p90 ms | max ms |");
    println!("| --- | --- | --- | --- | --- |");
    row(
        "`GET /api/slo` (50 SLOs), first call right after start (cold; the server's warm-up runs alongside)",
        &cold,
    );
    row("`GET /api/slo` (50 SLOs), warm", &warm);
    row("`GET /api/slo/{name}` (one SLO), warm", &one);
    row("`SELECT ... FROM slo_status()` over `/api/sql`, warm", &sql);
    println!(
        "\n### `quantile_over_time(duration, 0.5, 0.99) by (resource.service.name)`, step 5m\n"
    );
    println!("| window, source | runs | median ms | p90 ms | max ms |");
    println!("| --- | --- | --- | --- | --- |");
    row(
        &format!("24 h, span_metrics_1m ({day_series} series)"),
        &day,
    );
    row("the real hour, span_metrics_1m", &hour_rollups);
    row(
        &format!("the real hour, spans ({acked} spans; `{{ duration >= 0ms }}` forces them)"),
        &hour_spans,
    );
    println!(
        "\nmedian ratio, the real hour: spans / rollups = {:.1}x",
        percentile(&hour_spans, 0.5).as_secs_f64() / percentile(&hour_rollups, 0.5).as_secs_f64()
    );
}
