//! Helpers shared by the system benchmarks (`e2e`, `search`).

use std::path::Path;
use std::time::Duration;

/// Bytes and number of files ending in `.ext` below `dir`.
pub(crate) fn dir_bytes(dir: &Path, ext: &str) -> (u64, usize) {
    let (mut bytes, mut files) = (0, 0);
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in entries.flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else if p.extension().is_some_and(|x| x == ext) {
                bytes += e.metadata().map(|m| m.len()).unwrap_or(0);
                files += 1;
            }
        }
    }
    (bytes, files)
}

/// The `p` quantile (0..=1) of sorted durations, nearest rank.
pub(crate) fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let idx = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[idx.min(sorted.len() - 1)]
}

/// A setting: `--name value` after `--` (name lowercased, `_` as `-`), else the environment
/// variable `NAME`; blank counts as unset.
pub(crate) fn setting(name: &str) -> Option<String> {
    let argv: Vec<String> = std::env::args().skip(1).collect();
    let flag = format!("--{}", name.to_lowercase().replace('_', "-"));
    argv.iter()
        .position(|a| *a == flag)
        .and_then(|i| argv.get(i + 1).cloned())
        .or_else(|| std::env::var(name).ok())
        .filter(|v| !v.trim().is_empty())
}

/// A non-negative integer setting (`_` separators allowed), or `default`.
pub(crate) fn number(name: &str, default: u64) -> u64 {
    setting(name).map_or(default, |v| {
        v.trim()
            .replace('_', "")
            .parse()
            .unwrap_or_else(|_| panic!("{name}: expected a non-negative integer, got {v:?}"))
    })
}

/// `tracelake loadgen` of `traces` traces whose starts spread over the hour from `base`
/// (unix seconds), sent as fast as the server takes them. Returns the spans acknowledged.
pub(crate) fn loadgen_hour(endpoint: &str, base: u64, traces: u64, seed: u64) -> u64 {
    let summary = crate::server::run_loadgen(&[
        "--rate",
        "0",
        "--seed",
        &seed.to_string(),
        "--start-time",
        &base.to_string(),
        "--traces",
        &traces.to_string(),
        "--time-spread",
        "3540s",
        "--concurrency",
        "8",
        "--batch-traces",
        "100",
        "--endpoint",
        endpoint,
    ]);
    summary["spans_acked"].as_u64().unwrap()
}

/// Runs `tracelake compact` over a stopped server's data directory; returns what it printed.
pub(crate) fn compact_dir(dir: &Path) -> String {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_tracelake"))
        .args(["compact", "--data-dir"])
        .arg(dir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "tracelake compact failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}
