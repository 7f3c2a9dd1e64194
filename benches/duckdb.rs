//! Raw SQL aggregation, tracelake vs DuckDB over the same Parquet files: p99 span duration by
//! service over the whole `spans` table.
//!
//! ```text
//!  serve ─► loadgen SPANS over one hour ─► SIGTERM ─► tracelake compact ─► serve again
//!  the same query, exact and approximate, RUNS times each (after WARMUP):
//!    tracelake   POST /api/sql                         (DataFusion over the Delta table)
//!    DuckDB      read_parquet([the Delta table's current files])   (Python duckdb, in-process)
//! ```
//!
//! Both run on this machine's cores; DuckDB reads exactly the files of the table's current
//! version (from the Delta log, through the `deltalake` Python package), so files replaced
//! by compaction but not yet vacuumed are not counted twice. tracelake's times include HTTP
//! and JSON; DuckDB's do not.
//!
//! ```sh
//! cargo bench --workspace --bench duckdb        # SPANS=3000000; needs python3 (a venv with
//!                                               # duckdb and deltalake is made in target/)
//! ```
//!
//! Settings (environment variables, or `--name value` after `--`): `SPANS` (3000000), `RUNS`
//! (10), `WARMUP` (2), `BASE` (unix seconds of the hour, 2026-11-02T10:00:00Z), `PYTHON` (a
//! python with duckdb and deltalake, instead of the venv).

#[allow(dead_code)]
mod common;
#[allow(dead_code, unreachable_pub)]
#[path = "../tests/e2e/server.rs"]
mod server;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use common::{number, percentile, setting};
use server::TestServer;

/// (label, tracelake SQL, DuckDB SQL over the view `spans`, whether the p99 is exact).
const QUERIES: [(&str, &str, &str, bool); 2] = [
    (
        "exact p99 by service",
        "SELECT service_name, percentile_cont(0.99) WITHIN GROUP (ORDER BY duration_nano) AS p99 \
         FROM spans GROUP BY service_name ORDER BY service_name",
        "SELECT service_name, quantile_cont(duration_nano, 0.99) AS p99 \
         FROM spans GROUP BY service_name ORDER BY service_name",
        true,
    ),
    (
        "approximate p99 by service",
        "SELECT service_name, approx_percentile_cont(duration_nano, 0.99) AS p99 \
         FROM spans GROUP BY service_name ORDER BY service_name",
        "SELECT service_name, approx_quantile(duration_nano, 0.99) AS p99 \
         FROM spans GROUP BY service_name ORDER BY service_name",
        false,
    ),
];

const DUCKDB_SCRIPT: &str = r#"
import json, sys, time
import duckdb, deltalake
table, runs, warmup = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
queries = json.loads(sys.argv[4])
files = deltalake.DeltaTable(table).file_uris()
con = duckdb.connect()
con.execute("SET threads = %d" % int(sys.argv[5]))
con.execute("CREATE VIEW spans AS SELECT * FROM read_parquet(%s)" % json.dumps(files).replace('"', "'"))
out = []
for q in queries:
    times = []
    for i in range(warmup + runs):
        t = time.perf_counter()
        rows = con.execute(q).fetchall()
        if i >= warmup:
            times.append(time.perf_counter() - t)
    out.append({"times": times, "rows": [[r[0], float(r[1])] for r in rows]})
print(json.dumps({"files": len(files), "results": out}))
"#;

/// A python with duckdb and deltalake: `PYTHON`, or a venv made once under `target/`.
fn python() -> PathBuf {
    if let Some(p) = setting("PYTHON") {
        return p.into();
    }
    let venv = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/bench-duckdb-venv");
    let py = venv.join("bin/python");
    if !py.exists() {
        let ok = Command::new("python3")
            .args(["-m", "venv"])
            .arg(&venv)
            .status()
            .unwrap()
            .success();
        assert!(ok, "python3 -m venv failed");
    }
    let ok = Command::new(&py)
        .args(["-m", "pip", "install", "-q", "duckdb", "deltalake"])
        .status()
        .unwrap()
        .success();
    assert!(ok, "pip install duckdb deltalake failed");
    py
}

fn ms(d: Duration) -> String {
    format!("{:.1}", d.as_secs_f64() * 1e3)
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let spans = number("SPANS", 3_000_000);
    let runs = number("RUNS", 10).max(1) as usize;
    let warmup = number("WARMUP", 2) as usize;
    let base = number("BASE", 1_793_613_600) / 3600 * 3600;
    let py = python();
    let temp = tempfile::tempdir().unwrap();
    let dir = temp.path();

    let mut srv = TestServer::start(dir, &["--compaction-interval", "0s"]).await;
    let acked = common::loadgen_hour(
        &srv.grpc_url(),
        base,
        (spans as f64 / 10.85).round() as u64,
        9,
    );
    assert!(srv.terminate().success());
    common::compact_dir(dir);
    let srv = TestServer::start(dir, &["--compaction-interval", "0s"]).await;
    let client = reqwest::Client::new();

    let mut ours = Vec::new();
    for (_, sql, _, _) in QUERIES {
        let mut times = Vec::new();
        let mut rows = serde_json::Value::Null;
        for i in 0..warmup + runs {
            let t = Instant::now();
            let resp = client
                .post(srv.url("/api/sql"))
                .body(sql)
                .send()
                .await
                .unwrap();
            let status = resp.status();
            let body = resp.text().await.unwrap();
            assert!(status.is_success(), "{sql}: {status} {body}");
            if i >= warmup {
                times.push(t.elapsed());
            }
            rows = serde_json::from_str(&body).unwrap();
        }
        times.sort();
        ours.push((times, rows));
    }

    let duck_queries: Vec<&str> = QUERIES.iter().map(|q| q.2).collect();
    let threads = std::thread::available_parallelism().map_or(2, |n| n.get());
    let out = Command::new(&py)
        .arg("-c")
        .arg(DUCKDB_SCRIPT)
        .arg(dir.join("tenants/default/spans"))
        .arg(runs.to_string())
        .arg(warmup.to_string())
        .arg(serde_json::to_string(&duck_queries).unwrap())
        .arg(threads.to_string())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "duckdb: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let duck: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();

    println!(
        "\n### p99 span duration by service over the whole table: {acked} spans, {} Parquet files\n",
        duck["files"]
    );
    println!("| query | tracelake median ms | p90 | DuckDB median ms | p90 | tracelake / DuckDB | largest relative p99 gap |");
    println!("| --- | --- | --- | --- | --- | --- | --- |");
    for (i, (label, _, _, exact)) in QUERIES.iter().enumerate() {
        let (times, rows) = &ours[i];
        let mut d: Vec<Duration> = duck["results"][i]["times"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| Duration::from_secs_f64(t.as_f64().unwrap()))
            .collect();
        d.sort();
        // The two engines' p99s per service, relative gap.
        let theirs = duck["results"][i]["rows"].as_array().unwrap();
        let ours = rows.as_array().unwrap();
        assert_eq!(ours.len(), theirs.len(), "{label}: as many services");
        let mut gap = 0.0f64;
        for (a, b) in ours.iter().zip(theirs) {
            assert_eq!(a["service_name"], b[0], "same services in the same order");
            let (x, y) = (a["p99"].as_f64().unwrap(), b[1].as_f64().unwrap());
            gap = gap.max((x - y).abs() / y.abs().max(1.0));
        }
        if *exact {
            // Both interpolate between the same two ranks, but DataFusion's percentile_cont
            // (whose results ours reproduces bit for bit) quantizes the interpolation weight to
            // 1e-6 and DuckDB does not: the answers may differ by up to (upper - lower) * 1e-6,
            // in practice in their 10th or later digit. A sanity check: query/src/percentile.rs
            // tests the results against DataFusion's own function, bit for bit.
            assert!(
                gap < 1e-6,
                "{label}: exact p99s differ from DuckDB's by {gap:e} (relative)"
            );
        }
        println!(
            "| {label} | {} | {} | {} | {} | {:.2}x | {:.1e} |",
            ms(percentile(times, 0.5)),
            ms(percentile(times, 0.9)),
            ms(percentile(&d, 0.5)),
            ms(percentile(&d, 0.9)),
            percentile(times, 0.5).as_secs_f64() / percentile(&d, 0.5).as_secs_f64(),
            100.0 * gap
        );
    }
}
