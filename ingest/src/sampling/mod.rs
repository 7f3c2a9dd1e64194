//! Dynamic weighted tail sampling.
//!
//! ```text
//!  export ─> prepare (split by trace, upstream rates) ─> WAL append ─> admit ─┬─> buffer (decided)
//!            [blocking pool]                              [ack point]   [hook] └─> pending traces
//!                                                                                     │ decision_wait
//!  run(): take_due ─> decide [blocking pool] ─> WAL "#sampling-decisions" ─> complete ─> buffer
//! ```
//!
//! Every trace gets a weight from its spans' status, route and service tier ([`rules`]), a band
//! from the weight, and a keep probability p from the band (the middle band's p adapts to a
//! budget when one is set). It is kept iff `trace_random(trace_id) < p`, and its spans get
//! `adjusted_count = upstream / p` and `sampling_rule`.
//!
//! Durability: spans are acknowledged once in the WAL, before any of this. Undecided spans
//! hold back WAL truncation and Delta commits ([`TailSampler::hold`]). Decisions are written to
//! the WAL before their spans are buffered, so a replay after a crash gives a partly committed
//! trace the same decision.

pub mod config;
mod prepare;
pub mod rules;
mod state;
pub mod tail;

use std::sync::Arc;
use std::time::{Duration, Instant};

use arrow::array::RecordBatch;
use parking_lot::Mutex;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use prost::Message;
use serde::Serialize;
use tokio::sync::Notify;
use tracelake_proto::otlp::collector::trace::v1::ExportTraceServiceRequest;
use tracelake_proto::resource_spans_to_batch;
use tracelake_storage::wal::WalRecord;
use tracelake_storage::{HoldFn, Storage};
use tracing::{info, warn};

pub use config::SamplingConfig;
pub use prepare::{prepare, threshold_probability, trace_id_of, Prepared, TraceId};
pub use rules::Rules;
pub use state::{trace_random, Key, ProbTable};
pub use tail::{decide, release_kept, Band, Decision, Due, Part, Release, Status, TailCore};

/// The WAL system stream holding sampling decisions.
pub const DECISIONS_STREAM: &str = "#sampling-decisions";

/// The tail sampler of a running server: a [`TailCore`] behind a lock, driven by
/// [`TailSampler::run`].
pub struct TailSampler {
    core: Mutex<TailCore>,
    wake: Notify,
    metrics: SamplingMetrics,
}

impl std::fmt::Debug for TailSampler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TailSampler").finish_non_exhaustive()
    }
}

/// What `GET /api/sampling` returns.
#[derive(Debug, Clone, Serialize)]
pub struct SamplingStatus {
    /// The rules in force, as configured.
    pub config: SamplingConfig,
    /// Live state and counters.
    #[serde(flatten)]
    pub state: Status,
}

impl TailSampler {
    /// A sampler with `rules`, registering its metrics in `registry`.
    pub fn new(rules: Rules, registry: &mut Registry) -> Arc<Self> {
        Arc::new(Self {
            core: Mutex::new(TailCore::new(Arc::new(rules), Instant::now())),
            wake: Notify::new(),
            metrics: SamplingMetrics::register(registry),
        })
    }

    /// The rules in force.
    pub fn rules(&self) -> Arc<Rules> {
        Arc::clone(self.core.lock().rules())
    }

    /// Splits a converted request by trace. CPU work: call it on the blocking pool.
    pub fn prepare(&self, batch: RecordBatch) -> Result<Prepared, arrow::error::ArrowError> {
        let rules = self.rules();
        prepare(batch, &rules.config.upstream_rate_attributes)
    }

    /// Takes in the spans of WAL record `seq`; returns those to buffer at once. Quick: runs on
    /// the WAL writer thread.
    pub fn admit(&self, tenant: &str, seq: u64, prepared: Prepared) -> Option<RecordBatch> {
        let mut core = self.core.lock();
        let out = core.admit(tenant, seq, prepared, Instant::now());
        if core.over_limits() {
            self.wake.notify_one();
        }
        out
    }

    /// True when so many traces are buffered that new spans should be refused for a while.
    pub fn overloaded(&self) -> bool {
        self.core.lock().overloaded()
    }

    /// The function that tells storage which WAL records the sampler still holds.
    pub fn hold(self: &Arc<Self>) -> Box<HoldFn> {
        let me = Arc::downgrade(self);
        Box::new(move || me.upgrade().and_then(|s| s.core.lock().min_seq()))
    }

    /// Replays one WAL record: decisions are remembered, spans are admitted again.
    pub fn replay(&self, record: &WalRecord) -> tracelake_storage::Result<Option<RecordBatch>> {
        if record.tenant == DECISIONS_STREAM {
            let decisions = decode_decisions(&record.data).map_err(|message| {
                tracelake_storage::Error::Decode {
                    seq: record.seq,
                    message,
                }
            })?;
            let mut core = self.core.lock();
            for d in decisions {
                core.remember(&d.tenant, d.trace_id, d.p, d.keep, d.rule);
            }
            return Ok(None);
        }
        if record
            .tenant
            .starts_with(tracelake_storage::SYSTEM_STREAM_PREFIX)
        {
            return Ok(None);
        }
        let request = ExportTraceServiceRequest::decode(record.data.as_slice()).map_err(|e| {
            tracelake_storage::Error::Decode {
                seq: record.seq,
                message: e.to_string(),
            }
        })?;
        let batch = resource_spans_to_batch(&request.resource_spans)?;
        let prepared = self.prepare(batch)?;
        Ok(self.admit(&record.tenant, record.seq, prepared))
    }

    /// Decides due traces until `shutdown` resolves.
    pub async fn run(
        self: Arc<Self>,
        storage: Arc<Storage>,
        shutdown: impl std::future::Future<Output = ()>,
    ) {
        tokio::pin!(shutdown);
        loop {
            let wait = {
                let core = self.core.lock();
                let tick = core
                    .rules()
                    .config
                    .adjust_interval
                    .min(Duration::from_millis(250));
                core.next_deadline().map_or(tick, |d| {
                    d.saturating_duration_since(Instant::now()).min(tick)
                })
            };
            tokio::select! {
                _ = &mut shutdown => return,
                _ = tokio::time::sleep(wait) => {}
                _ = self.wake.notified() => {}
            }
            self.step(&storage, false).await;
        }
    }

    /// Decides every buffered trace now (at shutdown, so the WAL can be truncated).
    pub async fn decide_all(&self, storage: &Storage) {
        let mut total = 0;
        loop {
            let n = self.step(storage, true).await;
            if n == 0 {
                break;
            }
            total += n;
        }
        if total > 0 {
            info!(traces = total, "decided buffered traces at shutdown");
        }
    }

    /// One round: decide the due traces, log the decisions, buffer the kept spans.
    async fn step(&self, storage: &Storage, all: bool) -> usize {
        let now = Instant::now();
        let (due, rules, table) = {
            let mut core = self.core.lock();
            core.adjust(now);
            let due = core.take_due(now, all);
            (due, Arc::clone(core.rules()), core.probabilities())
        };
        self.sync_metrics();
        if due.is_empty() {
            return 0;
        }
        let n = due.len();
        let decided = tokio::task::spawn_blocking(move || {
            let decided: Vec<(Due, Decision)> = due
                .into_iter()
                .map(|d| {
                    let decision = decide(&rules, &table, &d);
                    (d, decision)
                })
                .collect();
            let record = encode_decisions(decided.iter().map(|(_, d)| d));
            let releases = release_kept(&decided);
            (decided, releases, record)
        })
        .await;
        let (decided, releases, record) = match decided {
            Ok(v) => v,
            Err(e) => {
                // Only a panic gets here; the traces stay buffered and are retried after restart.
                warn!(error = %e, "sampling decision task failed");
                return 0;
            }
        };
        // Decisions are durable before their spans can be committed, so a replay agrees.
        if let Err(e) = storage.append_system(DECISIONS_STREAM, record).await {
            warn!(error = %e, "could not log sampling decisions; a crash now may decide these traces again");
        }
        {
            let mut core = self.core.lock();
            let late = core.complete(decided);
            // Insert under the lock: a trace leaves the hold and enters the buffer atomically.
            for r in releases.into_iter().chain(late) {
                storage.insert(&r.tenant, r.seq, r.spans);
            }
        }
        self.sync_metrics();
        n
    }

    /// Swaps in new rules; buffered traces are kept and decided with them.
    pub fn reload(&self, config: &SamplingConfig) -> Result<(), String> {
        let result = config.compile();
        match result {
            Ok(rules) => {
                self.core.lock().set_rules(Arc::new(rules));
                self.metrics
                    .reloads
                    .get_or_create(&vec![("result".into(), "ok".into())])
                    .inc();
                info!("sampling rules reloaded");
                Ok(())
            }
            Err(e) => {
                self.metrics
                    .reloads
                    .get_or_create(&vec![("result".into(), "error".into())])
                    .inc();
                Err(e)
            }
        }
    }

    /// Rules, state and counters.
    pub fn status(&self) -> SamplingStatus {
        let core = self.core.lock();
        SamplingStatus {
            config: core.rules().config.clone(),
            state: core.status(),
        }
    }

    fn sync_metrics(&self) {
        let status = self.core.lock().status();
        self.metrics.sync(&status);
    }
}

type Labels = Vec<(String, String)>;

/// Prometheus metrics of the sampler, mirrored from [`Status`].
#[derive(Debug, Default)]
struct SamplingMetrics {
    traces: Family<Labels, Counter>,
    spans: Family<Labels, Counter>,
    late_spans: Family<Labels, Counter>,
    decided_early: Counter,
    buffered_traces: Gauge,
    buffered_bytes: Gauge,
    mid_probability: Gauge<f64, std::sync::atomic::AtomicU64>,
    kept_spans_per_sec: Gauge<f64, std::sync::atomic::AtomicU64>,
    reloads: Family<Labels, Counter>,
    last: Mutex<Option<tail::Stats>>,
}

impl SamplingMetrics {
    fn register(registry: &mut Registry) -> Self {
        let m = Self::default();
        let r = registry.sub_registry_with_prefix("tracelake_sampling");
        r.register(
            "traces",
            "Traces decided, by band and decision",
            m.traces.clone(),
        );
        r.register(
            "spans",
            "Spans decided, by band and decision",
            m.spans.clone(),
        );
        r.register(
            "late_spans",
            "Spans that arrived after their trace was decided, by decision",
            m.late_spans.clone(),
        );
        r.register(
            "decided_early",
            "Traces decided before their wait was over because the buffer was full",
            m.decided_early.clone(),
        );
        r.register(
            "buffered_traces",
            "Traces waiting for a decision",
            m.buffered_traces.clone(),
        );
        r.register(
            "buffered_bytes",
            "Estimated bytes of spans waiting for a decision",
            m.buffered_bytes.clone(),
        );
        r.register(
            "mid_probability",
            "Middle-band keep probability (for keys without their own)",
            m.mid_probability.clone(),
        );
        r.register(
            "kept_spans_per_second",
            "Kept spans per second (moving average)",
            m.kept_spans_per_sec.clone(),
        );
        r.register("reloads", "Rule reloads, by result", m.reloads.clone());
        m
    }

    fn sync(&self, status: &Status) {
        let mut last = self.last.lock();
        let prev = last.clone().unwrap_or_default();
        let s = &status.stats;
        let label = |band: &str, decision: &str| -> Labels {
            vec![
                ("band".into(), band.into()),
                ("decision".into(), decision.into()),
            ]
        };
        for (i, band) in Band::ALL.iter().enumerate() {
            let (now, was) = (&s.bands[i], &prev.bands[i]);
            let b = band.as_str();
            self.traces
                .get_or_create(&label(b, "kept"))
                .inc_by(now.kept_traces - was.kept_traces);
            self.traces
                .get_or_create(&label(b, "dropped"))
                .inc_by(now.dropped_traces - was.dropped_traces);
            self.spans
                .get_or_create(&label(b, "kept"))
                .inc_by(now.kept_spans - was.kept_spans);
            self.spans
                .get_or_create(&label(b, "dropped"))
                .inc_by(now.dropped_spans - was.dropped_spans);
        }
        let decision = |d: &str| -> Labels { vec![("decision".into(), d.into())] };
        self.late_spans
            .get_or_create(&decision("kept"))
            .inc_by(s.late_spans_kept - prev.late_spans_kept);
        self.late_spans
            .get_or_create(&decision("dropped"))
            .inc_by(s.late_spans_dropped - prev.late_spans_dropped);
        self.decided_early
            .inc_by(s.decided_early - prev.decided_early);
        self.buffered_traces.set(status.buffered_traces as i64);
        self.buffered_bytes.set(status.buffered_bytes as i64);
        self.mid_probability.set(status.mid_probability);
        self.kept_spans_per_sec.set(status.kept_spans_per_sec);
        *last = Some(s.clone());
    }
}

/// One decision as logged in the WAL.
#[derive(Debug, Clone, PartialEq)]
pub struct LoggedDecision {
    /// Tenant.
    pub tenant: String,
    /// Trace.
    pub trace_id: TraceId,
    /// Keep probability.
    pub p: f64,
    /// Kept or dropped.
    pub keep: bool,
    /// `sampling_rule`.
    pub rule: Arc<str>,
}

const DECISIONS_VERSION: u8 = 1;

/// `[u8 version][u32 count]` then per decision
/// `[u16 tenant_len][tenant][16 trace id][f64 p][u8 keep][u16 rule_len][rule]`, little-endian.
fn encode_decisions<'a>(decisions: impl Iterator<Item = &'a Decision>) -> Vec<u8> {
    let mut out = vec![DECISIONS_VERSION, 0, 0, 0, 0];
    let mut n: u32 = 0;
    for d in decisions {
        let tenant = d.tenant.as_bytes();
        let rule = &d.rule.as_bytes()[..d.rule.len().min(u16::MAX as usize)];
        out.extend_from_slice(&(tenant.len() as u16).to_le_bytes());
        out.extend_from_slice(tenant);
        out.extend_from_slice(&d.trace_id.to_be_bytes());
        out.extend_from_slice(&d.p.to_le_bytes());
        out.push(u8::from(d.keep));
        out.extend_from_slice(&(rule.len() as u16).to_le_bytes());
        out.extend_from_slice(rule);
        n += 1;
    }
    out[1..5].copy_from_slice(&n.to_le_bytes());
    out
}

fn decode_decisions(data: &[u8]) -> Result<Vec<LoggedDecision>, String> {
    struct Reader<'a>(&'a [u8]);
    impl<'a> Reader<'a> {
        fn take(&mut self, n: usize) -> Result<&'a [u8], String> {
            if self.0.len() < n {
                return Err("sampling decision record is truncated".into());
            }
            let (a, b) = self.0.split_at(n);
            self.0 = b;
            Ok(a)
        }
        fn u16(&mut self) -> Result<usize, String> {
            Ok(u16::from_le_bytes(self.take(2)?.try_into().expect("2 bytes")) as usize)
        }
        fn text(&mut self) -> Result<&'a str, String> {
            let n = self.u16()?;
            std::str::from_utf8(self.take(n)?)
                .map_err(|_| "decision record text is not utf-8".into())
        }
    }
    let mut r = Reader(data);
    let version = r.take(1)?[0];
    if version != DECISIONS_VERSION {
        return Err(format!(
            "unknown sampling decision record version {version}"
        ));
    }
    let count = u32::from_le_bytes(r.take(4)?.try_into().expect("4 bytes"));
    let mut out = Vec::with_capacity(count.min(1 << 20) as usize);
    for _ in 0..count {
        let tenant = r.text()?.to_string();
        let trace_id = u128::from_be_bytes(r.take(16)?.try_into().expect("16 bytes"));
        let p = f64::from_le_bytes(r.take(8)?.try_into().expect("8 bytes"));
        let keep = r.take(1)?[0] != 0;
        let rule = Arc::from(r.text()?);
        out.push(LoggedDecision {
            tenant,
            trace_id,
            p,
            keep,
            rule,
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests;
