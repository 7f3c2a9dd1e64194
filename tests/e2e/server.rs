//! Starts the real `tracelake` binary on port-0 listeners and talks to it over HTTP.

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde_json::Value;

/// Runs `tracelake loadgen --no-progress --json` with `args`; asserts that it succeeded and
/// that no span failed, and returns its JSON summary.
pub(crate) fn run_loadgen(args: &[&str]) -> Value {
    let out = Command::new(env!("CARGO_BIN_EXE_tracelake"))
        .arg("loadgen")
        .args(args)
        .args(["--no-progress", "--json"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "loadgen failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    let summary: Value = serde_json::from_str(stdout.lines().last().unwrap()).unwrap();
    assert_eq!(summary["spans_failed"], 0, "{summary}");
    summary
}

/// A server (flushing every 200 ms, plus `extra` flags) with `traces` loadgen traces of `seed`
/// sent and queryable; returns it and the number of spans acknowledged.
pub(crate) async fn loaded_server(
    dir: &Path,
    extra: &[&str],
    traces: u32,
    seed: u32,
) -> (TestServer, u64) {
    let mut args = vec!["--flush-interval", "200ms"];
    args.extend_from_slice(extra);
    let server = TestServer::start(dir, &args).await;
    let summary = run_loadgen(&[
        "--traces",
        &traces.to_string(),
        "--rate",
        "0",
        "--seed",
        &seed.to_string(),
        "--endpoint",
        &server.grpc_url(),
    ]);
    let acked = summary["spans_acked"].as_u64().unwrap();
    server
        .eventually(Duration::from_secs(20), "spans queryable", || async {
            server.count("").await == acked
        })
        .await;
    (server, acked)
}

/// A running `tracelake serve`. Killed on drop.
pub(crate) struct TestServer {
    child: Option<Child>,
    pub(crate) grpc: SocketAddr,
    pub(crate) otlp_http: SocketAddr,
    pub(crate) http: SocketAddr,
    pub(crate) jaeger: SocketAddr,
    /// The PostgreSQL wire protocol listener.
    pub(crate) pg: SocketAddr,
    /// The Arrow Flight SQL listener.
    pub(crate) flight: SocketAddr,
    stderr_path: PathBuf,
}

impl TestServer {
    /// `tracelake serve` on `data_dir` with port-0 listeners and extra flags.
    fn command(data_dir: &Path, extra: &[&str]) -> Command {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_tracelake"));
        cmd.arg("serve")
            .arg("--data-dir")
            .arg(data_dir)
            .args(["--otlp-grpc-addr", "127.0.0.1:0"])
            .args(["--otlp-http-addr", "127.0.0.1:0"])
            .args(["--http-addr", "127.0.0.1:0"])
            .args(["--jaeger-addr", "127.0.0.1:0"])
            .args(["--pg-addr", "127.0.0.1:0"])
            .args(["--flight-addr", "127.0.0.1:0"])
            .args(extra);
        cmd
    }

    /// Starts a server on `data_dir` with extra flags, waits for its listeners and `/ready`.
    pub(crate) async fn start(data_dir: &Path, extra: &[&str]) -> TestServer {
        std::fs::create_dir_all(data_dir).unwrap();
        Self::launch(Self::command(data_dir, extra), data_dir).await
    }

    /// Runs a server that is expected to refuse to start; returns its stderr.
    pub(crate) fn start_failure(data_dir: &Path, extra: &[&str]) -> String {
        let out = Self::command(data_dir, extra).output().unwrap();
        assert!(
            !out.status.success(),
            "the server started, but should not have"
        );
        String::from_utf8_lossy(&out.stderr).into_owned()
    }

    /// Starts `tracelake serve` with no flags at all, in `cwd`: the README's first command.
    pub(crate) async fn start_with_defaults(cwd: &Path) -> TestServer {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_tracelake"));
        cmd.arg("serve").current_dir(cwd);
        Self::launch(cmd, cwd).await
    }

    async fn launch(mut cmd: Command, log_dir: &Path) -> TestServer {
        let stderr_path = log_dir.join(format!(
            "server-{}.log",
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos()
        ));
        let stderr = std::fs::File::create(&stderr_path).unwrap();
        let mut child = cmd
            .env("TRACELAKE_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(stderr)
            .spawn()
            .expect("spawn tracelake");
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let mut addrs = HashMap::new();
        let deadline = Instant::now() + Duration::from_secs(60);
        const LISTENERS: [&str; 6] = ["otlp-grpc", "otlp-http", "http", "jaeger", "pg", "flight"];
        while !LISTENERS.iter().all(|name| addrs.contains_key(*name)) {
            let left = deadline.saturating_duration_since(Instant::now());
            match rx.recv_timeout(left) {
                Ok(line) => {
                    let parts: Vec<_> = line.split_whitespace().collect();
                    if let ["listening", name, addr] = parts.as_slice() {
                        addrs.insert(name.to_string(), addr.parse::<SocketAddr>().unwrap());
                    }
                }
                Err(_) => {
                    let log = std::fs::read_to_string(&stderr_path).unwrap_or_default();
                    let status = child.try_wait();
                    let _ = child.kill();
                    panic!("server did not print its listeners (status {status:?}); log:\n{log}");
                }
            }
        }
        let server = TestServer {
            child: Some(child),
            grpc: addrs["otlp-grpc"],
            otlp_http: addrs["otlp-http"],
            http: addrs["http"],
            jaeger: addrs["jaeger"],
            pg: addrs["pg"],
            flight: addrs["flight"],
            stderr_path,
        };
        server.wait_ready().await;
        server
    }

    async fn wait_ready(&self) {
        let client = reqwest::Client::new();
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(r) = client.get(self.url("/ready")).send().await {
                if r.status().is_success() {
                    return;
                }
            }
            assert!(
                Instant::now() < deadline,
                "server not ready: {}",
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub(crate) fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.http, path)
    }

    /// A URL on the Jaeger query API listener.
    pub(crate) fn jaeger_url(&self, path: &str) -> String {
        format!("http://{}{}", self.jaeger, path)
    }

    pub(crate) fn otlp_http_url(&self) -> String {
        format!("http://{}/v1/traces", self.otlp_http)
    }

    pub(crate) fn grpc_url(&self) -> String {
        format!("http://{}", self.grpc)
    }

    pub(crate) fn log(&self) -> String {
        std::fs::read_to_string(&self.stderr_path).unwrap_or_default()
    }

    /// Runs SQL through `POST /api/sql` and returns the JSON rows; panics on an error status.
    pub(crate) async fn sql(&self, sql: &str) -> Vec<Value> {
        self.sql_tenant(sql, "default").await
    }

    pub(crate) async fn sql_tenant(&self, sql: &str, tenant: &str) -> Vec<Value> {
        let resp = reqwest::Client::new()
            .post(self.url("/api/sql"))
            .header("X-Scope-OrgID", tenant)
            .body(sql.to_string())
            .send()
            .await
            .unwrap();
        let status = resp.status();
        let body = resp.text().await.unwrap();
        assert!(status.is_success(), "sql {sql:?} failed: {status} {body}");
        serde_json::from_str(&body).unwrap()
    }

    /// `SELECT count(*)` as a number.
    pub(crate) async fn count(&self, where_clause: &str) -> u64 {
        let rows = self
            .sql(&format!("SELECT count(*) AS n FROM spans {where_clause}"))
            .await;
        rows[0]["n"].as_u64().unwrap()
    }

    /// Polls until `f` holds, or panics after `timeout`.
    pub(crate) async fn eventually<F, Fut>(&self, timeout: Duration, what: &str, mut f: F)
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = bool>,
    {
        let deadline = Instant::now() + timeout;
        while !f().await {
            assert!(Instant::now() < deadline, "timed out waiting for {what}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Sends SIGTERM and waits for the process to exit.
    pub(crate) fn terminate(&mut self) -> ExitStatus {
        let mut child = self.child.take().expect("server running");
        let ok = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status()
            .unwrap()
            .success();
        assert!(ok, "kill -TERM failed");
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "server did not exit after SIGTERM"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// `kill -9`: no shutdown, no flush.
    pub(crate) fn kill9(&mut self) {
        let mut child = self.child.take().expect("server running");
        child.kill().unwrap();
        child.wait().unwrap();
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}
