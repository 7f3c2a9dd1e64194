//! Replays the eval's traffic through a [`TailCore`] on a virtual clock (no sleeping), and
//! picks the uniform trace-id sampling rate that stores as many spans.
//!
//! ```text
//!  every 100 ms of virtual time:
//!    traces arrived since the last tick + late parts now due ─> one request ─> prepare ─> admit
//!    adjust ─> take_due ─> decide ─> complete
//!  kept spans (decided, late, released) ─> per trace: spans kept, root adjusted_count
//! ```

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use arrow::array::{Array, AsArray, RecordBatch};
use arrow::datatypes::Float64Type;
use opentelemetry_proto::tonic::trace::v1::ResourceSpans;
use tracelake_ingest::sampling::tail::Stats;
use tracelake_ingest::sampling::{
    decide, prepare, release_kept, trace_id_of, trace_random, Band, Due, Rules, TailCore,
};
use tracelake_proto::{columns, resource_spans_to_batch};

use super::traffic::{Names, Traffic, Truth};

/// Virtual time between sampler ticks (and between requests).
pub(crate) const TICK: Duration = Duration::from_millis(100);
const TENANT: &str = "eval";

/// When trace `i` arrives, in virtual seconds.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Schedule {
    /// `traces` traces at `rate` per second.
    Constant {
        /// Traces per second.
        rate: f64,
        /// Traces in all.
        traces: u64,
    },
    /// `rate` per second for `secs`, then `rate * factor` per second for `secs`.
    Step {
        /// Traces per second before the step.
        rate: f64,
        /// Length of each phase in seconds.
        secs: f64,
        /// Traffic multiplier of the second phase.
        factor: f64,
    },
}

impl Schedule {
    /// Traces in all.
    pub(crate) fn traces(self) -> u64 {
        match self {
            Schedule::Constant { traces, .. } => traces,
            Schedule::Step { rate, secs, factor } => {
                (rate * secs).round() as u64 + (rate * factor * secs).round() as u64
            }
        }
    }

    /// Arrival time of trace `i` in seconds.
    pub(crate) fn arrival(self, i: u64) -> f64 {
        match self {
            Schedule::Constant { rate, .. } => i as f64 / rate,
            Schedule::Step { rate, secs, factor } => {
                let first = (rate * secs).round() as u64;
                if i < first {
                    i as f64 / rate
                } else {
                    secs + (i - first) as f64 / (rate * factor)
                }
            }
        }
    }
}

/// What the tail sampler kept of a run, with the run's ground truth.
#[derive(Debug)]
pub(crate) struct TailRun {
    /// Ground truth per trace, in arrival order.
    pub(crate) truths: Vec<Truth>,
    /// Root names.
    pub(crate) names: Names,
    /// Spans kept per trace.
    pub(crate) kept_spans: Vec<u32>,
    /// `adjusted_count` of each trace's kept root span (0 when not kept).
    pub(crate) root_weight: Vec<f64>,
    /// Per virtual second: spans offered (by arrival).
    pub(crate) offered_by_sec: Vec<u64>,
    /// Per virtual second: spans kept (by release).
    pub(crate) kept_by_sec: Vec<u64>,
    /// Per virtual second: spans kept by a force-keep rule or the high band (by release).
    pub(crate) forced_by_sec: Vec<u64>,
    /// Per virtual second: middle-band spans decided, and kept.
    pub(crate) mid_by_sec: Vec<(u64, u64)>,
    /// Traces of the force-keep or high band that were not kept (must be 0).
    pub(crate) forced_not_kept: u64,
    /// The sampler's counters at the end.
    pub(crate) stats: Stats,
    /// Error bursts: service and trace index range.
    pub(crate) bursts: Vec<(String, u64, u64)>,
}

/// Records kept spans.
struct Recorder {
    ids: HashMap<u128, u32>,
    kept_spans: Vec<u32>,
    root_weight: Vec<f64>,
    kept_by_sec: Vec<u64>,
    forced_by_sec: Vec<u64>,
    mid_by_sec: Vec<(u64, u64)>,
    forced_not_kept: u64,
}

fn bump<T: Default + Clone>(v: &mut Vec<T>, i: usize) -> &mut T {
    if v.len() <= i {
        v.resize(i + 1, T::default());
    }
    &mut v[i]
}

impl Recorder {
    fn record(&mut self, batch: &RecordBatch, sec: usize) -> anyhow::Result<()> {
        let col = |name: &str| {
            batch
                .column_by_name(name)
                .with_context(|| format!("kept spans without column {name}"))
        };
        let ids = col(columns::TRACE_ID)?.as_binary::<i32>();
        let parents = col(columns::PARENT_SPAN_ID)?.as_binary::<i32>();
        let adjusted = col(columns::ADJUSTED_COUNT)?.as_primitive::<Float64Type>();
        let rules = col(columns::SAMPLING_RULE)?.as_string::<i32>();
        for i in 0..batch.num_rows() {
            let id = trace_id_of(ids.value(i));
            let ix = *self
                .ids
                .get(&id)
                .with_context(|| format!("kept a span of unknown trace {id:032x}"))?
                as usize;
            self.kept_spans[ix] += 1;
            if parents.is_null(i) || parents.value(i).is_empty() {
                self.root_weight[ix] = adjusted.value(i);
            }
            *bump(&mut self.kept_by_sec, sec) += 1;
            let rule = if rules.is_valid(i) {
                rules.value(i)
            } else {
                ""
            };
            if rule != Band::Mid.as_str() && rule != Band::Low.as_str() {
                *bump(&mut self.forced_by_sec, sec) += 1;
            }
        }
        Ok(())
    }

    /// Decides `due` traces and completes them, recording what is kept.
    fn settle(
        &mut self,
        core: &mut TailCore,
        rules: &Rules,
        due: Vec<Due>,
        sec: usize,
    ) -> anyhow::Result<()> {
        if due.is_empty() {
            return Ok(());
        }
        let table = core.probabilities();
        let mut decided = Vec::with_capacity(due.len());
        for d in due {
            let decision = decide(rules, &table, &d);
            match decision.band {
                Some(Band::ForceKeep | Band::High) if !decision.keep => self.forced_not_kept += 1,
                Some(Band::Mid) => {
                    let m = bump(&mut self.mid_by_sec, sec);
                    m.0 += decision.spans as u64;
                    if decision.keep {
                        m.1 += decision.spans as u64;
                    }
                }
                _ => {}
            }
            decided.push((d, decision));
        }
        for r in release_kept(&decided) {
            self.record(&r.spans, sec)?;
        }
        for r in core.complete(decided) {
            self.record(&r.spans, sec)?;
        }
        Ok(())
    }
}

/// Replays `traffic` on `schedule` through a tail sampler with `rules`. `progress` is told the
/// traces generated so far.
pub(crate) fn run_tail(
    rules: Arc<Rules>,
    mut traffic: Traffic,
    schedule: Schedule,
    progress: &mut dyn FnMut(u64),
) -> anyhow::Result<TailRun> {
    let total = schedule.traces();
    let tick = TICK.as_secs_f64();
    let wait = rules.config.decision_wait.as_secs_f64();
    let base = Instant::now();
    let mut core = TailCore::new(Arc::clone(&rules), base);
    let mut rec = Recorder {
        ids: HashMap::with_capacity(total as usize),
        kept_spans: Vec::with_capacity(total as usize),
        root_weight: Vec::with_capacity(total as usize),
        kept_by_sec: Vec::new(),
        forced_by_sec: Vec::new(),
        mid_by_sec: Vec::new(),
        forced_not_kept: 0,
    };
    let mut truths = Vec::with_capacity(total as usize);
    let mut offered_by_sec: Vec<u64> = Vec::new();
    // Late parts by the tick they are sent at.
    let mut late: BTreeMap<u64, Vec<ResourceSpans>> = BTreeMap::new();
    let (mut next, mut seq, mut k) = (0u64, 0u64, 0u64);
    let report_every = (total / 10).max(1);
    let now = loop {
        k += 1;
        let t = k as f64 * tick;
        let sec = (t - 1e-9) as usize;
        let now = base + TICK * k as u32;
        let mut request: Vec<ResourceSpans> = Vec::new();
        while next < total && schedule.arrival(next) <= t {
            let g = traffic.next_trace(&rules);
            let ix = u32::try_from(next).context("too many traces")?;
            if rec.ids.insert(g.truth.id, ix).is_some() {
                anyhow::bail!("trace id {:032x} generated twice", g.truth.id);
            }
            rec.kept_spans.push(0);
            rec.root_weight.push(0.0);
            *bump(&mut offered_by_sec, sec) += u64::from(g.truth.spans);
            request.extend(g.on_time);
            if !g.late.is_empty() {
                let at = schedule.arrival(next) + wait + g.late_after;
                late.entry((at / tick).ceil() as u64)
                    .or_default()
                    .extend(g.late);
            }
            truths.push(g.truth);
            next += 1;
            if next.is_multiple_of(report_every) {
                progress(next);
            }
        }
        while let Some(entry) = late.first_entry() {
            if *entry.key() > k {
                break;
            }
            request.extend(entry.remove());
        }
        if !request.is_empty() {
            let batch = resource_spans_to_batch(&request)?;
            let prepared = prepare(batch, &rules.config.upstream_rate_attributes)?;
            if let Some(b) = core.admit(TENANT, seq, prepared, now) {
                rec.record(&b, sec)?;
            }
            seq += 1;
        }
        core.adjust(now);
        let due = core.take_due(now, false);
        rec.settle(&mut core, &rules, due, sec)?;
        if next >= total && late.is_empty() && core.next_deadline().is_none() {
            break now;
        }
    };
    let sec = (now - base).as_secs() as usize;
    let due = core.take_due(now, true);
    rec.settle(&mut core, &rules, due, sec)?;
    Ok(TailRun {
        truths,
        bursts: traffic.bursts(),
        names: std::mem::take(&mut traffic.names),
        kept_spans: rec.kept_spans,
        root_weight: rec.root_weight,
        offered_by_sec,
        kept_by_sec: rec.kept_by_sec,
        forced_by_sec: rec.forced_by_sec,
        mid_by_sec: rec.mid_by_sec,
        forced_not_kept: rec.forced_not_kept,
        stats: core.status().stats,
    })
}

/// The uniform trace-id sampling rate q (keep iff `trace_random(id) < q`) that stores
/// `target` spans of `truths`, within 1% when the trace sizes allow; and the spans it stores.
pub(crate) fn uniform_rate(truths: &[Truth], target: u64) -> (f64, u64) {
    let randoms: Vec<(f64, u64)> = truths
        .iter()
        .map(|t| (trace_random(t.id), u64::from(t.spans)))
        .collect();
    let total: u64 = randoms.iter().map(|r| r.1).sum();
    let stored = |q: f64| -> u64 { randoms.iter().filter(|r| r.0 < q).map(|r| r.1).sum() };
    if total == 0 {
        return (0.0, 0);
    }
    let mut q = (target as f64 / total as f64).min(1.0);
    let (mut lo, mut hi) = (0.0, 1.0);
    let mut best = (q, stored(q));
    let tolerance = target as f64 * 0.01;
    for _ in 0..64 {
        let s = stored(q);
        if (s as f64 - target as f64).abs() < (best.1 as f64 - target as f64).abs() {
            best = (q, s);
        }
        if (s as f64 - target as f64).abs() <= tolerance {
            return (q, s);
        }
        if s < target {
            lo = q;
        } else {
            hi = q;
        }
        q = (lo + hi) / 2.0;
    }
    best
}
