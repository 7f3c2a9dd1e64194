//! `tracelake loadgen`: a synthetic OTLP trace workload for load tests and demos.
//!
//! ```text
//!  generator thread                       tokio runtime
//!  ─────────────────                      ─────────────────────────────────────────────
//!  Workload (seeded) ─► batch ─► encode ─► channel ─► token schedule ─► semaphore
//!                                                      (trace i due at i/rate)  (concurrency)
//!                                                                │
//!                                                   export task: send, retry, count
//! ```
//!
//! The [`Workload`] models a shop of 12 services (edge frontend and API gateway, checkout,
//! payment, cart, catalog, inventory, user, auth, recommendation, shipping, email) with
//! Postgres/Redis clients, third-party APIs, Kafka producer/consumer spans and health probes.
//! It is deterministic for a seed and base time, so tests can generate it without a network.

mod export;
mod gzip;
mod topology;
mod workload;

use std::io::IsTerminal as _;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context as _};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use rand::Rng as _;
use tokio::sync::{mpsc, OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinSet;
use tokio::time::Instant;

use export::{ExportError, Exporter, Payload, RequestEncoder};
pub(crate) use workload::Workload;

/// Retries after the first attempt for retryable failures.
const MAX_RETRIES: u32 = 3;
/// Simulated time between traces when sending as fast as possible.
const UNLIMITED_RATE_INTERVAL: Duration = Duration::from_micros(50);
const DEFAULT_TRACES: u64 = 1000;

/// Wire protocol of the OTLP exporter.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Protocol {
    /// OTLP/gRPC (`TraceService/Export`)
    Grpc,
    /// OTLP/HTTP with a protobuf body
    HttpProto,
    /// OTLP/HTTP with a JSON body
    HttpJson,
}

/// Send a synthetic, realistic trace workload to an OTLP endpoint.
#[derive(clap::Args, Debug, Clone)]
pub(crate) struct LoadgenArgs {
    /// OTLP endpoint. Default: http://127.0.0.1:4317 for grpc, http://127.0.0.1:4318 for
    /// http-* (`/v1/traces` is appended unless present)
    #[arg(long, env = "TRACELAKE_LOADGEN_ENDPOINT")]
    pub(crate) endpoint: Option<String>,
    /// Wire protocol
    #[arg(long, value_enum, default_value = "grpc")]
    pub(crate) protocol: Protocol,
    /// Traces per second (0 = as fast as possible)
    #[arg(long, default_value_t = 100.0)]
    pub(crate) rate: f64,
    /// Stop after this long (e.g. 30s, 5m)
    #[arg(long, value_parser = humantime::parse_duration)]
    pub(crate) duration: Option<Duration>,
    /// Stop after this many traces (default: 1000 if neither --duration nor --traces is given)
    #[arg(long)]
    pub(crate) traces: Option<u64>,
    /// Seed of the workload; the same seed and --start-time give the same spans
    #[arg(long, default_value_t = 1)]
    pub(crate) seed: u64,
    /// Export requests in flight at once
    #[arg(long, default_value_t = 4)]
    pub(crate) concurrency: usize,
    /// Traces per export request (smaller at low rates, so a request leaves every ~100 ms)
    #[arg(long, default_value_t = 50)]
    pub(crate) batch_traces: usize,
    /// Tenant sent as X-Scope-OrgID
    #[arg(long)]
    pub(crate) tenant: Option<String>,
    /// Gzip request bodies
    #[arg(long)]
    pub(crate) gzip: bool,
    /// Do not show a progress bar (it is also hidden when stderr is not a terminal)
    #[arg(long)]
    pub(crate) no_progress: bool,
    /// Print the summary as one JSON line instead of text
    #[arg(long)]
    pub(crate) json: bool,
    /// Base start time of generated spans (unix seconds); default now. Lets tests place data in
    /// a known hour.
    #[arg(long)]
    pub(crate) start_time: Option<u64>,
    /// Spread the traces' start times evenly over this much simulated time (e.g. 60s), however
    /// fast they are sent; needs --traces. By default they are 1/rate apart (50 µs when sending
    /// as fast as possible).
    #[arg(long, value_parser = humantime::parse_duration)]
    pub(crate) time_spread: Option<Duration>,
}

/// What a load run did.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct Summary {
    pub(crate) traces_sent: u64,
    /// Spans in export requests that were sent (each span counted once, however many retries).
    pub(crate) spans_sent: u64,
    /// Spans the server accepted: successful responses minus `partial_success.rejected_spans`.
    pub(crate) spans_acked: u64,
    /// Spans the server reported as rejected in a partial success.
    pub(crate) spans_rejected: u64,
    /// Spans whose request failed for good (transport error, error status, retries exhausted).
    pub(crate) spans_failed: u64,
    /// Export attempts, retries included.
    pub(crate) requests: u64,
    /// Request payload bytes over all attempts (gRPC: protobuf size before gzip).
    pub(crate) bytes_sent: u64,
    pub(crate) elapsed: Duration,
}

impl Summary {
    /// Acknowledged spans per second of wall time.
    pub(crate) fn spans_per_sec(&self) -> f64 {
        let secs = self.elapsed.as_secs_f64();
        if secs > 0.0 {
            self.spans_acked as f64 / secs
        } else {
            0.0
        }
    }

    /// Prints the summary to stdout: one text line, or one JSON object.
    pub(crate) fn print(&self, json: bool) {
        if json {
            println!("{}", self.to_json());
        } else {
            println!("{self}");
        }
    }

    fn to_json(&self) -> String {
        format!(
            concat!(
                "{{\"traces_sent\":{},\"spans_sent\":{},\"spans_acked\":{},\"spans_rejected\":{},",
                "\"spans_failed\":{},\"requests\":{},\"bytes_sent\":{},\"elapsed_secs\":{:.3},",
                "\"spans_per_sec\":{:.1}}}"
            ),
            self.traces_sent,
            self.spans_sent,
            self.spans_acked,
            self.spans_rejected,
            self.spans_failed,
            self.requests,
            self.bytes_sent,
            self.elapsed.as_secs_f64(),
            self.spans_per_sec(),
        )
    }
}

impl std::fmt::Display for Summary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "spans sent {}, acked {}, rejected {}, failed {}, {:.1} spans/s over {:.2}s",
            self.spans_sent,
            self.spans_acked,
            self.spans_rejected,
            self.spans_failed,
            self.spans_per_sec(),
            self.elapsed.as_secs_f64()
        )
    }
}

/// Validated run parameters.
struct Plan {
    endpoint: String,
    /// Traces per second; `None` = unlimited.
    rate: Option<f64>,
    duration: Option<Duration>,
    traces: Option<u64>,
    concurrency: usize,
    batch_traces: u64,
    base_time_unix_nano: u64,
    trace_interval: Duration,
}

impl Plan {
    fn new(args: &LoadgenArgs) -> anyhow::Result<Self> {
        if !args.rate.is_finite() || args.rate < 0.0 {
            bail!(
                "--rate must be a number >= 0 (0 = as fast as possible), got {}",
                args.rate
            );
        }
        if args.concurrency == 0 {
            bail!("--concurrency must be at least 1");
        }
        if args.batch_traces == 0 {
            bail!("--batch-traces must be at least 1");
        }
        let endpoint = match (&args.endpoint, args.protocol) {
            (Some(e), _) => e.trim_end_matches('/').to_owned(),
            (None, Protocol::Grpc) => "http://127.0.0.1:4317".to_owned(),
            (None, _) => "http://127.0.0.1:4318".to_owned(),
        };
        let endpoint = match args.protocol {
            Protocol::Grpc => endpoint,
            _ if endpoint.ends_with("/v1/traces") => endpoint,
            _ => format!("{endpoint}/v1/traces"),
        };
        let rate = (args.rate > 0.0).then_some(args.rate);
        // At low rates, batch ~100 ms of traces so requests flow steadily.
        let batch_traces = match rate {
            Some(r) => (r / 10.0).ceil().clamp(1.0, args.batch_traces as f64) as u64,
            None => args.batch_traces as u64,
        };
        let base_time_unix_nano = match args.start_time {
            Some(secs) => secs
                .checked_mul(1_000_000_000)
                .context("--start-time is too large; give unix seconds")?,
            None => {
                let now = SystemTime::now()
                    .duration_since(UNIX_EPOCH)
                    .unwrap_or_default();
                u64::try_from(now.as_nanos()).unwrap_or(u64::MAX)
            }
        };
        let traces = match (args.traces, args.duration) {
            (None, None) => Some(DEFAULT_TRACES),
            (traces, _) => traces,
        };
        let trace_interval = match (args.time_spread, args.traces) {
            (Some(spread), Some(n)) => spread / u32::try_from(n.max(1)).unwrap_or(u32::MAX),
            (Some(_), None) => bail!("--time-spread needs --traces (how many traces to spread)"),
            (None, _) => rate.map_or(UNLIMITED_RATE_INTERVAL, |r| {
                Duration::from_secs_f64(1.0 / r)
            }),
        };
        Ok(Plan {
            endpoint,
            rate,
            duration: args.duration,
            traces,
            concurrency: args.concurrency,
            batch_traces,
            base_time_unix_nano,
            trace_interval,
        })
    }
}

/// One encoded export request and what is in it.
struct Batch {
    /// Index of the batch's first trace in the run.
    first_trace: u64,
    traces: u64,
    spans: u64,
    bytes: u64,
    payload: Payload,
}

#[derive(Default)]
struct Stats {
    traces_sent: AtomicU64,
    spans_sent: AtomicU64,
    spans_acked: AtomicU64,
    spans_rejected: AtomicU64,
    spans_failed: AtomicU64,
    requests: AtomicU64,
    bytes_sent: AtomicU64,
    warned: AtomicBool,
}

impl Stats {
    fn summary(&self, elapsed: Duration) -> Summary {
        Summary {
            traces_sent: self.traces_sent.load(Ordering::Relaxed),
            spans_sent: self.spans_sent.load(Ordering::Relaxed),
            spans_acked: self.spans_acked.load(Ordering::Relaxed),
            spans_rejected: self.spans_rejected.load(Ordering::Relaxed),
            spans_failed: self.spans_failed.load(Ordering::Relaxed),
            requests: self.requests.load(Ordering::Relaxed),
            bytes_sent: self.bytes_sent.load(Ordering::Relaxed),
            elapsed,
        }
    }
}

/// Runs the load: generates, sends and counts until `--traces` or `--duration` is reached (or
/// Ctrl-C; a second Ctrl-C abandons requests still in flight). Export failures are counted in
/// the summary, not returned as errors.
pub(crate) async fn run(args: LoadgenArgs) -> anyhow::Result<Summary> {
    let plan = Plan::new(&args)?;
    let client = reqwest::Client::builder()
        .timeout(export::REQUEST_TIMEOUT)
        .build()
        .context("cannot create the HTTP client")?;
    let exporter = Arc::new(match args.protocol {
        Protocol::Grpc => Exporter::grpc(&plan.endpoint, args.gzip, args.tenant.as_deref())?,
        Protocol::HttpProto | Protocol::HttpJson => {
            reqwest::Url::parse(&plan.endpoint).with_context(|| {
                format!(
                    "invalid OTLP/HTTP endpoint {:?}; expected e.g. http://127.0.0.1:4318",
                    plan.endpoint
                )
            })?;
            Exporter::http(client.clone())
        }
    });
    let encoder = RequestEncoder::new(
        args.protocol,
        args.gzip,
        args.tenant.clone(),
        plan.endpoint.clone(),
        client,
    );
    let workload =
        Workload::new(args.seed, plan.base_time_unix_nano).with_trace_interval(plan.trace_interval);

    let (tx, mut rx) = mpsc::channel::<Batch>(plan.concurrency * 2);
    let (limit, batch_traces) = (plan.traces, plan.batch_traces);
    let generator = std::thread::Builder::new()
        .name("loadgen-generator".to_owned())
        .spawn(move || generate(workload, &encoder, limit, batch_traces, &tx))
        .context("cannot start the generator thread")?;

    let stats = Arc::new(Stats::default());
    let progress = Progress::start(&args, &plan, Arc::clone(&stats));
    let semaphore = Arc::new(Semaphore::new(plan.concurrency));
    let mut tasks = JoinSet::new();
    let start = Instant::now();
    let deadline = plan.duration.map(|d| start + d);
    let interrupt = ctrl_c();
    tokio::pin!(interrupt);
    let mut interrupted = false;

    'dispatch: loop {
        let batch = tokio::select! {
            biased;
            () = &mut interrupt => { interrupted = true; break 'dispatch; }
            () = until(deadline) => break 'dispatch,
            batch = rx.recv() => match batch {
                Some(batch) => batch,
                None => break 'dispatch,
            },
        };
        if let Some(rate) = plan.rate {
            // Token schedule: a batch leaves once all its traces' tokens have accrued, measured
            // from the start, so delays never accumulate into drift.
            let tokens = (batch.first_trace + batch.traces) as f64;
            let due = start + Duration::from_secs_f64(tokens / rate);
            if deadline.is_some_and(|d| due > d) {
                break;
            }
            tokio::select! {
                biased;
                () = &mut interrupt => { interrupted = true; break 'dispatch; }
                () = tokio::time::sleep_until(due) => {}
            }
        }
        let permit = tokio::select! {
            biased;
            () = &mut interrupt => { interrupted = true; break 'dispatch; }
            () = until(deadline) => break 'dispatch,
            permit = Arc::clone(&semaphore).acquire_owned() => permit.context("semaphore closed")?,
        };
        stats.traces_sent.fetch_add(batch.traces, Ordering::Relaxed);
        stats.spans_sent.fetch_add(batch.spans, Ordering::Relaxed);
        tasks.spawn(send(
            Arc::clone(&exporter),
            batch,
            Arc::clone(&stats),
            permit,
        ));
        while tasks.try_join_next().is_some() {}
    }
    drop(rx);

    if interrupted {
        progress
            .println("interrupted: waiting for requests in flight (Ctrl-C again to abandon them)");
        let second = ctrl_c();
        tokio::pin!(second);
        loop {
            let abandon = tokio::select! {
                () = &mut second => true,
                next = tasks.join_next() => match next {
                    Some(_) => false,
                    None => break,
                },
            };
            if abandon {
                tasks.abort_all();
                break;
            }
        }
    }
    while tasks.join_next().await.is_some() {}
    let summary = stats.summary(start.elapsed());
    progress.finish();

    let generated = tokio::task::spawn_blocking(move || generator.join())
        .await
        .context("generator join task failed")?;
    match generated {
        Ok(result) => result?,
        Err(_) => bail!("the workload generator thread panicked"),
    }
    Ok(summary)
}

/// Generator thread: builds and encodes batches until the limit or until the receiver is gone.
fn generate(
    mut workload: Workload,
    encoder: &RequestEncoder,
    limit: Option<u64>,
    batch_traces: u64,
    tx: &mpsc::Sender<Batch>,
) -> anyhow::Result<()> {
    let mut first_trace = 0u64;
    loop {
        let traces = match limit {
            Some(limit) => batch_traces.min(limit.saturating_sub(first_trace)),
            None => batch_traces,
        };
        if traces == 0 {
            return Ok(());
        }
        let (resource_spans, spans) = workload.next_batch(traces as usize);
        let (payload, bytes) = encoder.encode(resource_spans)?;
        let batch = Batch {
            first_trace,
            traces,
            spans: spans as u64,
            bytes,
            payload,
        };
        if tx.blocking_send(batch).is_err() {
            return Ok(());
        }
        first_trace += traces;
    }
}

/// Sends one batch with retries, then records the outcome.
async fn send(
    exporter: Arc<Exporter>,
    batch: Batch,
    stats: Arc<Stats>,
    _permit: OwnedSemaphorePermit,
) {
    let mut attempt = 0;
    loop {
        stats.requests.fetch_add(1, Ordering::Relaxed);
        stats.bytes_sent.fetch_add(batch.bytes, Ordering::Relaxed);
        match exporter.export(&batch.payload).await {
            Ok(rejected) => {
                let rejected = rejected.min(batch.spans);
                stats
                    .spans_acked
                    .fetch_add(batch.spans - rejected, Ordering::Relaxed);
                stats.spans_rejected.fetch_add(rejected, Ordering::Relaxed);
                return;
            }
            Err(ExportError::Retryable { delay, reason }) if attempt < MAX_RETRIES => {
                attempt += 1;
                let delay = delay.unwrap_or_else(|| backoff(attempt));
                tracing::debug!(attempt, ?delay, %reason, "retrying export");
                tokio::time::sleep(delay).await;
            }
            Err(e) => {
                stats.spans_failed.fetch_add(batch.spans, Ordering::Relaxed);
                if stats.warned.swap(true, Ordering::Relaxed) {
                    tracing::debug!(error = %e, spans = batch.spans, "export failed");
                } else {
                    tracing::warn!(error = %e, spans = batch.spans, "export failed (further failures are logged at debug level)");
                }
                return;
            }
        }
    }
}

/// Exponential backoff from 100 ms with ±25% jitter.
fn backoff(attempt: u32) -> Duration {
    let base = 100.0 * f64::from(1u32 << attempt.saturating_sub(1).min(10));
    let jitter = rand::rng().random_range(0.75..1.25);
    Duration::from_secs_f64(base * jitter / 1000.0)
}

async fn until(deadline: Option<Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}

/// Resolves on Ctrl-C; never, if the handler cannot be installed.
async fn ctrl_c() {
    if tokio::signal::ctrl_c().await.is_err() {
        std::future::pending::<()>().await;
    }
}

/// The progress bar and the task refreshing it.
struct Progress {
    bar: ProgressBar,
    ticker: Option<tokio::task::JoinHandle<()>>,
}

impl Progress {
    fn start(args: &LoadgenArgs, plan: &Plan, stats: Arc<Stats>) -> Self {
        if args.no_progress || !std::io::stderr().is_terminal() {
            return Progress {
                bar: ProgressBar::hidden(),
                ticker: None,
            };
        }
        let (len, template) = match (plan.traces, plan.duration) {
            (Some(traces), _) => (traces, "{bar:30.cyan/blue} {pos}/{len} traces  {msg}"),
            (None, Some(d)) => (d.as_secs().max(1), "{bar:30.cyan/blue} {pos}/{len}s  {msg}"),
            (None, None) => (0, "{spinner} {msg}"),
        };
        let bar = ProgressBar::with_draw_target(Some(len), ProgressDrawTarget::stderr());
        if let Ok(style) = ProgressStyle::with_template(template) {
            bar.set_style(style.progress_chars("=> "));
        }
        let by_time = plan.traces.is_none();
        let ticker_bar = bar.clone();
        let ticker = tokio::spawn(async move {
            let start = Instant::now();
            let mut interval = tokio::time::interval(Duration::from_millis(200));
            loop {
                interval.tick().await;
                let elapsed = start.elapsed();
                let s = stats.summary(elapsed);
                ticker_bar.set_position(if by_time {
                    elapsed.as_secs()
                } else {
                    s.traces_sent
                });
                ticker_bar.set_message(format!(
                    "spans sent {} acked {} rejected {} failed {}  {:.0} spans/s",
                    s.spans_sent,
                    s.spans_acked,
                    s.spans_rejected,
                    s.spans_failed,
                    s.spans_per_sec()
                ));
            }
        });
        Progress {
            bar,
            ticker: Some(ticker),
        }
    }

    fn println(&self, message: &str) {
        if self.bar.is_hidden() {
            eprintln!("{message}");
        } else {
            self.bar.println(message);
        }
    }

    fn finish(self) {
        if let Some(ticker) = self.ticker {
            ticker.abort();
        }
        self.bar.finish_and_clear();
    }
}

#[cfg(test)]
mod tests {
    use std::io::Read as _;
    use std::net::SocketAddr;
    use std::sync::Mutex;

    use clap::Parser as _;
    use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
        TraceService, TraceServiceServer,
    };
    use opentelemetry_proto::tonic::collector::trace::v1::{
        ExportTracePartialSuccess, ExportTraceServiceRequest, ExportTraceServiceResponse,
    };
    use prost::Message as _;
    use tokio::io::{AsyncBufReadExt as _, AsyncReadExt as _, AsyncWriteExt as _, BufReader};

    use super::*;

    #[derive(clap::Parser)]
    struct Cli {
        #[command(flatten)]
        args: LoadgenArgs,
    }

    fn args(extra: &[&str]) -> LoadgenArgs {
        let argv = ["loadgen", "--no-progress", "--start-time", "1767225600"];
        Cli::try_parse_from(argv.iter().chain(extra)).unwrap().args
    }

    fn spans_in(request: &ExportTraceServiceRequest) -> u64 {
        request
            .resource_spans
            .iter()
            .flat_map(|rs| &rs.scope_spans)
            .map(|ss| ss.spans.len() as u64)
            .sum()
    }

    #[test]
    fn plan_defaults_and_validation() {
        let plan = Plan::new(&args(&[])).unwrap();
        assert_eq!(plan.endpoint, "http://127.0.0.1:4317");
        assert_eq!(plan.traces, Some(DEFAULT_TRACES));
        assert_eq!(plan.rate, Some(100.0));
        assert_eq!(plan.batch_traces, 10, "100 traces/s -> ~100 ms batches");
        assert_eq!(plan.base_time_unix_nano, 1_767_225_600_000_000_000);

        let plan = Plan::new(&args(&["--protocol", "http-json", "--rate", "0"])).unwrap();
        assert_eq!(plan.endpoint, "http://127.0.0.1:4318/v1/traces");
        assert_eq!((plan.rate, plan.batch_traces), (None, 50));
        let plan = Plan::new(&args(&[
            "--protocol",
            "http-proto",
            "--endpoint",
            "http://h:1/v1/traces",
        ]))
        .unwrap();
        assert_eq!(plan.endpoint, "http://h:1/v1/traces");
        let plan = Plan::new(&args(&["--duration", "1m 30s", "--rate", "5000"])).unwrap();
        assert_eq!(plan.duration, Some(Duration::from_secs(90)));
        assert_eq!(plan.traces, None, "a duration alone means no trace limit");
        assert_eq!(plan.batch_traces, 50);

        assert!(Plan::new(&args(&["--rate=-1"])).is_err());
        assert!(Plan::new(&args(&["--concurrency", "0"])).is_err());
        assert!(Plan::new(&args(&["--batch-traces", "0"])).is_err());
        assert!(Cli::try_parse_from(["loadgen", "--duration", "soon"]).is_err());

        // --time-spread spaces the traces over simulated time, whatever the send rate.
        let plan = Plan::new(&args(&[
            "--rate",
            "0",
            "--traces",
            "600",
            "--time-spread",
            "1m",
        ]))
        .unwrap();
        assert_eq!(plan.trace_interval, Duration::from_millis(100));
        assert_eq!(plan.rate, None);
        let Err(err) = Plan::new(&args(&["--duration", "5s", "--time-spread", "1m"])) else {
            panic!("--time-spread without --traces must be refused");
        };
        assert!(
            err.to_string().contains("--time-spread needs --traces"),
            "{err}"
        );
    }

    #[test]
    fn summary_formats() {
        let summary = Summary {
            traces_sent: 10,
            spans_sent: 120,
            spans_acked: 100,
            spans_rejected: 5,
            spans_failed: 15,
            requests: 3,
            bytes_sent: 4096,
            elapsed: Duration::from_millis(2500),
        };
        assert_eq!(summary.spans_per_sec(), 40.0);
        assert_eq!(
            summary.to_string(),
            "spans sent 120, acked 100, rejected 5, failed 15, 40.0 spans/s over 2.50s"
        );
        let json: serde_json::Value = serde_json::from_str(&summary.to_json()).unwrap();
        assert_eq!(json["spans_acked"], 100);
        assert_eq!(json["bytes_sent"], 4096);
        assert_eq!(json["elapsed_secs"], 2.5);
        assert_eq!(Summary::default().spans_per_sec(), 0.0);
    }

    /// A gRPC collector that fails its first request with UNAVAILABLE and reports one rejected
    /// span on every later one.
    #[derive(Default)]
    struct Collector {
        calls: AtomicU64,
        spans: AtomicU64,
        tenants: Mutex<Vec<String>>,
    }

    struct CollectorService(Arc<Collector>);

    #[tonic::async_trait]
    impl TraceService for CollectorService {
        async fn export(
            &self,
            request: tonic::Request<ExportTraceServiceRequest>,
        ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
            let this = &self.0;
            let tenant = request
                .metadata()
                .get("x-scope-orgid")
                .and_then(|v| v.to_str().ok());
            this.tenants
                .lock()
                .unwrap()
                .push(tenant.unwrap_or_default().to_owned());
            if this.calls.fetch_add(1, Ordering::SeqCst) == 0 {
                return Err(tonic::Status::unavailable("warming up"));
            }
            this.spans
                .fetch_add(spans_in(request.get_ref()), Ordering::SeqCst);
            Ok(tonic::Response::new(ExportTraceServiceResponse {
                partial_success: Some(ExportTracePartialSuccess {
                    rejected_spans: 1,
                    error_message: "one span too old".to_owned(),
                }),
            }))
        }
    }

    async fn grpc_collector() -> (SocketAddr, Arc<Collector>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let collector = Arc::new(Collector::default());
        let service = TraceServiceServer::new(CollectorService(Arc::clone(&collector)))
            .accept_compressed(tonic::codec::CompressionEncoding::Gzip);
        let incoming = tonic::transport::server::TcpIncoming::from(listener);
        tokio::spawn(
            tonic::transport::Server::builder()
                .add_service(service)
                .serve_with_incoming(incoming),
        );
        (addr, collector)
    }

    #[tokio::test]
    async fn grpc_export_counts_acks_rejections_and_retries() {
        let (addr, collector) = grpc_collector().await;
        let endpoint = format!("http://{addr}");
        let summary = run(args(&[
            "--endpoint",
            &endpoint,
            "--traces",
            "120",
            "--rate",
            "0",
            "--batch-traces",
            "50",
            "--concurrency",
            "2",
            "--gzip",
            "--tenant",
            "acme",
            "--seed",
            "42",
        ]))
        .await
        .unwrap();

        let mut w = Workload::new(42, 0);
        let expected: usize = [50, 50, 20].iter().map(|&n| w.next_batch(n).1).sum();
        assert_eq!(summary.traces_sent, 120);
        assert_eq!(summary.spans_sent, expected as u64);
        assert_eq!(collector.spans.load(Ordering::SeqCst), summary.spans_sent);
        assert_eq!(summary.spans_rejected, 3, "one per accepted request");
        assert_eq!(summary.spans_acked, summary.spans_sent - 3);
        assert_eq!(summary.spans_failed, 0);
        assert_eq!(summary.requests, 4, "3 batches + 1 retry");
        assert_eq!(collector.calls.load(Ordering::SeqCst), 4);
        assert!(collector
            .tenants
            .lock()
            .unwrap()
            .iter()
            .all(|t| t == "acme"));
        assert!(summary.bytes_sent > summary.spans_sent * 100);
    }

    struct Received {
        headers: Vec<(String, String)>,
        body: Vec<u8>,
    }

    impl Received {
        fn header(&self, name: &str) -> Option<&str> {
            self.headers
                .iter()
                .find(|(k, _)| k.eq_ignore_ascii_case(name))
                .map(|(_, v)| v.as_str())
        }

        fn request(&self) -> ExportTraceServiceRequest {
            let mut body = self.body.clone();
            if self.header("content-encoding") == Some("gzip") {
                let mut out = Vec::new();
                flate2::read::GzDecoder::new(body.as_slice())
                    .read_to_end(&mut out)
                    .unwrap();
                body = out;
            }
            match self.header("content-type") {
                Some("application/json") => serde_json::from_slice(&body).unwrap(),
                Some("application/x-protobuf") => {
                    ExportTraceServiceRequest::decode(body.as_slice()).unwrap()
                }
                other => panic!("unexpected content type {other:?}"),
            }
        }
    }

    /// (status, extra headers, content type, body)
    type Reply = (
        u16,
        Vec<(&'static str, &'static str)>,
        &'static str,
        Vec<u8>,
    );
    type Responder = Arc<dyn Fn(usize) -> Reply + Send + Sync>;

    /// A minimal keep-alive HTTP/1.1 server recording requests; `respond(n)` answers request n.
    async fn http_collector(respond: Responder) -> (SocketAddr, Arc<Mutex<Vec<Received>>>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let received = Arc::new(Mutex::new(Vec::new()));
        let log = Arc::clone(&received);
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                let (log, respond) = (Arc::clone(&log), Arc::clone(&respond));
                tokio::spawn(async move {
                    let mut stream = BufReader::new(stream);
                    loop {
                        let mut headers = Vec::new();
                        let mut line = String::new();
                        loop {
                            line.clear();
                            if stream.read_line(&mut line).await.unwrap_or(0) == 0 {
                                return;
                            }
                            let line = line.trim_end();
                            if line.is_empty() {
                                break;
                            }
                            if let Some((k, v)) = line.split_once(':') {
                                headers.push((k.trim().to_owned(), v.trim().to_owned()));
                            }
                        }
                        let len = headers
                            .iter()
                            .find(|(k, _)| k.eq_ignore_ascii_case("content-length"))
                            .map_or(0, |(_, v)| v.parse().unwrap());
                        let mut body = vec![0; len];
                        stream.read_exact(&mut body).await.unwrap();
                        let n = {
                            let mut log = log.lock().unwrap();
                            log.push(Received { headers, body });
                            log.len() - 1
                        };
                        let (status, extra, content_type, body) = respond(n);
                        let mut head = format!(
                            "HTTP/1.1 {status} X\r\ncontent-type: {content_type}\r\ncontent-length: {}\r\n",
                            body.len()
                        );
                        for (k, v) in extra {
                            head.push_str(&format!("{k}: {v}\r\n"));
                        }
                        head.push_str("\r\n");
                        let stream = stream.get_mut();
                        stream.write_all(head.as_bytes()).await.unwrap();
                        stream.write_all(&body).await.unwrap();
                    }
                });
            }
        });
        (addr, received)
    }

    #[tokio::test]
    async fn http_json_gzip_honours_retry_after_and_partial_success() {
        let respond: Responder = Arc::new(|n| match n {
            0 => (
                503,
                vec![("retry-after", "0")],
                "text/plain",
                b"busy".to_vec(),
            ),
            _ => (
                200,
                vec![],
                "application/json",
                br#"{"partialSuccess":{"rejectedSpans":"2","errorMessage":"late"}}"#.to_vec(),
            ),
        });
        let (addr, received) = http_collector(respond).await;
        let endpoint = format!("http://{addr}");
        let summary = run(args(&[
            "--endpoint",
            &endpoint,
            "--protocol",
            "http-json",
            "--gzip",
            "--tenant",
            "acme",
            "--traces",
            "30",
            "--rate",
            "0",
            "--batch-traces",
            "10",
        ]))
        .await
        .unwrap();

        let received = received.lock().unwrap();
        assert_eq!(received.len(), 4, "3 batches + 1 retry");
        assert_eq!(summary.requests, 4);
        let mut spans = 0;
        for r in received.iter() {
            assert_eq!(r.header("x-scope-orgid"), Some("acme"));
            assert_eq!(r.header("content-encoding"), Some("gzip"));
            spans += spans_in(&r.request());
        }
        // The first request was answered 503 and re-sent with the same body.
        assert_eq!(received[0].body, received[1].body);
        assert_eq!(spans - spans_in(&received[0].request()), summary.spans_sent);
        assert_eq!(summary.spans_rejected, 6);
        assert_eq!(summary.spans_acked, summary.spans_sent - 6);
        assert_eq!(summary.spans_failed, 0);
        assert_eq!(
            summary.bytes_sent,
            received.iter().map(|r| r.body.len() as u64).sum::<u64>()
        );
    }

    #[tokio::test]
    async fn http_proto_permanent_errors_fail_without_retry() {
        let respond: Responder = Arc::new(|n| match n {
            0 => (400, vec![], "text/plain", b"bad request".to_vec()),
            _ => (200, vec![], "application/x-protobuf", Vec::new()),
        });
        let (addr, received) = http_collector(respond).await;
        let endpoint = format!("http://{addr}/");
        let summary = run(args(&[
            "--endpoint",
            &endpoint,
            "--protocol",
            "http-proto",
            "--traces",
            "20",
            "--rate",
            "0",
            "--batch-traces",
            "10",
            "--concurrency",
            "1",
        ]))
        .await
        .unwrap();
        let received = received.lock().unwrap();
        assert_eq!(received.len(), 2);
        let first = spans_in(&received[0].request());
        assert_eq!(summary.spans_failed, first);
        assert_eq!(summary.spans_acked, summary.spans_sent - first);
        assert_eq!(summary.requests, 2);
    }

    #[tokio::test]
    async fn rate_and_duration_bound_the_run() {
        let ok: Responder = Arc::new(|_| (200, vec![], "application/x-protobuf", Vec::new()));
        let (addr, received) = http_collector(ok).await;
        let endpoint = format!("http://{addr}");

        // 200 traces/s in batches of 20: the 5th batch is due 500 ms after the start.
        let summary = run(args(&[
            "--endpoint",
            &endpoint,
            "--protocol",
            "http-proto",
            "--traces",
            "100",
            "--rate",
            "200",
        ]))
        .await
        .unwrap();
        assert_eq!(summary.traces_sent, 100);
        assert_eq!(received.lock().unwrap().len(), 5);
        assert!(
            summary.elapsed >= Duration::from_millis(500),
            "{:?}",
            summary.elapsed
        );

        // 100 traces/s for 350 ms: batches of 10 due at 100, 200 and 300 ms.
        let summary = run(args(&[
            "--endpoint",
            &endpoint,
            "--protocol",
            "http-proto",
            "--duration",
            "350ms",
        ]))
        .await
        .unwrap();
        assert_eq!(summary.traces_sent, 30);
        assert_eq!(summary.spans_acked, summary.spans_sent);
    }
}
