//! The tail sampler's state machine, free of IO and of the clock (`now` is passed in), so that
//! it can be driven by the server, by WAL replay and by `tracelake sampler-eval` alike.
//!
//! A trace's life: spans arrive ([`TailCore::admit`]) and wait in `pending` until
//! `decision_wait` after the last one (capped at `max_trace_wait` after the first), or until the
//! buffer is over its limits, oldest first. [`TailCore::take_due`] hands the due traces out;
//! they are scored and decided off the lock ([`decide`]); [`TailCore::complete`] then releases
//! the kept spans and remembers the decision for late spans.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Instant;

use arrow::array::UInt32Array;
use arrow::array::{ArrayRef, AsArray, Float64Array, RecordBatch, StringArray};
use arrow::compute::{concat_batches, take_record_batch};
use arrow::datatypes::Float64Type;
use serde::Serialize;
use tracelake_proto::{columns, span_schema};

use super::prepare::{Prepared, TraceId};
use super::rules::{FactColumns, Rules, SpanFacts};
use super::state::{trace_random, Adaptive, DecisionCache, Kept, Key, ProbTable};

/// Which part of the policy decided a trace.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Band {
    /// A force-keep rule matched.
    ForceKeep,
    /// A force-drop route matched and nothing errored.
    ForceDrop,
    /// Weight above `high_threshold`.
    High,
    /// Weight in (`low_threshold`, `high_threshold`].
    Mid,
    /// Weight at or below `low_threshold`.
    Low,
}

impl Band {
    /// All bands, in display order.
    pub const ALL: [Band; 5] = [
        Band::ForceKeep,
        Band::ForceDrop,
        Band::High,
        Band::Mid,
        Band::Low,
    ];

    /// The label, and the `sampling_rule` of band decisions.
    pub fn as_str(self) -> &'static str {
        match self {
            Band::ForceKeep => "force_keep",
            Band::ForceDrop => "force_drop",
            Band::High => "high",
            Band::Mid => "mid",
            Band::Low => "low",
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// The decision for one trace.
#[derive(Debug, Clone)]
pub struct Decision {
    /// Tenant of the trace.
    pub tenant: Arc<str>,
    /// The trace.
    pub trace_id: TraceId,
    /// Keep probability.
    pub p: f64,
    /// `trace_random(trace_id) < p`.
    pub keep: bool,
    /// What goes into `sampling_rule`.
    pub rule: Arc<str>,
    /// The band (None for a decision replayed from the WAL).
    pub band: Option<Band>,
    /// Adaptive key (middle band only).
    pub key: Option<Key>,
    /// Spans seen when deciding.
    pub spans: usize,
    /// Highest span weight.
    pub weight: f64,
}

/// The spans of one trace that came in one WAL record: rows of that record's batch.
#[derive(Debug, Clone)]
pub struct Part {
    /// WAL sequence number of the record.
    pub seq: u64,
    /// The record's spans (shared by every trace of the record).
    pub batch: RecordBatch,
    /// This trace's rows in `batch`.
    pub rows: Arc<[u32]>,
}

impl Part {
    /// Takes this trace's rows and stamps them.
    fn release(&self, tenant: &Arc<str>, p: f64, rule: &str) -> Release {
        Release {
            tenant: Arc::clone(tenant),
            seq: self.seq,
            spans: stamp(&take_rows(&self.batch, &self.rows), p, rule),
        }
    }
}

/// The given rows of `batch` (the batch itself when that is all of it, in order).
fn take_rows(batch: &RecordBatch, rows: &[u32]) -> RecordBatch {
    let all =
        rows.len() == batch.num_rows() && rows.iter().enumerate().all(|(i, &r)| r as usize == i);
    if all {
        return batch.clone();
    }
    take_record_batch(batch, &UInt32Array::from(rows.to_vec())).expect("row indices are in range")
}

/// A trace handed out for deciding.
#[derive(Debug, Clone)]
pub struct Due {
    /// Tenant name.
    pub tenant: Arc<str>,
    tenant_ix: u32,
    /// The trace.
    pub trace_id: TraceId,
    /// Its spans so far.
    pub parts: Vec<Part>,
    /// Decided early because the buffer was full.
    pub early: bool,
}

/// Spans released by a decision (or by a remembered one), to buffer for commit.
#[derive(Debug, Clone)]
pub struct Release {
    /// Tenant name.
    pub tenant: Arc<str>,
    /// WAL sequence number the spans came in with.
    pub seq: u64,
    /// The stamped spans.
    pub spans: RecordBatch,
}

#[derive(Debug)]
struct Pending {
    tenant: Arc<str>,
    parts: Vec<Part>,
    first: Instant,
    /// None while being decided.
    deadline: Option<(Instant, u64)>,
    bytes: usize,
    min_seq: u64,
    /// Parts already handed out by `take_due`.
    handed_out: usize,
}

/// Counters, per band and overall.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Stats {
    /// Per band (indexed like [`Band::ALL`], shown by name): traces and spans kept and dropped.
    #[serde(serialize_with = "bands_by_name")]
    pub bands: [BandStats; 5],
    /// Spans that arrived after their trace was decided, and were kept (the trace was kept).
    pub late_spans_kept: u64,
    /// Late spans of dropped traces.
    pub late_spans_dropped: u64,
    /// Traces decided before their wait was over because the buffer was full.
    pub decided_early: u64,
    /// Spans passed through untouched while sampling was disabled.
    pub passthrough_spans: u64,
}

fn bands_by_name<S: serde::Serializer>(bands: &[BandStats; 5], s: S) -> Result<S::Ok, S::Error> {
    use serde::ser::SerializeMap;
    let mut map = s.serialize_map(Some(bands.len()))?;
    for (band, stats) in Band::ALL.iter().zip(bands) {
        map.serialize_entry(band.as_str(), stats)?;
    }
    map.end()
}

/// Counters of one band.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct BandStats {
    /// Traces kept.
    pub kept_traces: u64,
    /// Traces dropped.
    pub dropped_traces: u64,
    /// Spans kept.
    pub kept_spans: u64,
    /// Spans dropped.
    pub dropped_spans: u64,
}

/// The tail sampler state. Not thread-safe by itself: the server wraps it in a mutex.
#[derive(Debug)]
pub struct TailCore {
    rules: Arc<Rules>,
    tenants: HashMap<Arc<str>, u32>,
    pending: HashMap<(u32, TraceId), Pending>,
    deadlines: BTreeMap<(Instant, u64), (u32, TraceId)>,
    min_seqs: BTreeMap<u64, usize>,
    next_id: u64,
    bytes: usize,
    /// Bytes of traces handed out by `take_due` and not yet completed.
    deciding_bytes: usize,
    cache: DecisionCache,
    adaptive: Adaptive,
    stats: Stats,
}

impl TailCore {
    /// A sampler with `rules`, starting at `now`.
    pub fn new(rules: Arc<Rules>, now: Instant) -> Self {
        let c = &rules.config;
        Self {
            cache: DecisionCache::new(c.kept_cache_size, c.dropped_cache_size),
            adaptive: Adaptive::new(
                c.budget_spans_per_sec,
                c.adjust_interval,
                c.mid_probability,
                c.low_probability,
                now,
            ),
            rules,
            tenants: HashMap::new(),
            pending: HashMap::new(),
            deadlines: BTreeMap::new(),
            min_seqs: BTreeMap::new(),
            next_id: 0,
            bytes: 0,
            deciding_bytes: 0,
            stats: Stats::default(),
        }
    }

    /// The rules in force.
    pub fn rules(&self) -> &Arc<Rules> {
        &self.rules
    }

    /// Swaps the rules. Buffered traces stay, and are decided with the new rules.
    pub fn set_rules(&mut self, rules: Arc<Rules>) {
        let c = &rules.config;
        self.adaptive.reconfigure(
            c.budget_spans_per_sec,
            c.adjust_interval,
            c.mid_probability,
            c.low_probability,
        );
        self.rules = rules;
    }

    fn tenant_ix(&mut self, tenant: &str) -> (u32, Arc<str>) {
        if let Some((name, ix)) = self.tenants.get_key_value(tenant) {
            return (*ix, Arc::clone(name));
        }
        let ix = self.tenants.len() as u32;
        let name: Arc<str> = Arc::from(tenant);
        self.tenants.insert(Arc::clone(&name), ix);
        (ix, name)
    }

    /// Takes in the spans of WAL record `seq`. Returns the spans to buffer at once: those of
    /// traces already decided as kept, or all of them when sampling is off.
    pub fn admit(
        &mut self,
        tenant: &str,
        seq: u64,
        prepared: Prepared,
        now: Instant,
    ) -> Option<RecordBatch> {
        let batch = prepared.batch?;
        if !self.rules.config.enabled && self.pending.is_empty() {
            self.stats.passthrough_spans += batch.num_rows() as u64;
            return Some(batch);
        }
        let (ix, name) = self.tenant_ix(tenant);
        let wait = self.rules.config.decision_wait;
        let cap = self.rules.config.max_trace_wait;
        let mut released = Vec::new();
        let mut passthrough: Vec<u32> = Vec::new();
        for ((id, rows), bytes) in prepared.traces.into_iter().zip(prepared.bytes) {
            let key = (ix, id);
            let part = Part {
                seq,
                batch: batch.clone(),
                rows,
            };
            if let Some(p) = self.pending.get_mut(&key) {
                p.parts.push(part);
                p.bytes += bytes;
                self.bytes += bytes;
                if p.deadline.is_none() {
                    self.deciding_bytes += bytes;
                }
                if let Some(old) = p.deadline {
                    self.deadlines.remove(&old);
                    let at = (now + wait).min(p.first + cap);
                    let new = (at, self.next_id);
                    self.next_id += 1;
                    self.deadlines.insert(new, key);
                    p.deadline = Some(new);
                }
                continue;
            }
            if let Some(kept) = self.cache.kept(ix, id) {
                self.stats.late_spans_kept += part.rows.len() as u64;
                released.push(part.release(&name, kept.p, &kept.rule).spans);
                continue;
            }
            if self.cache.was_dropped(ix, id) {
                // An error that shows up after its trace was dropped is still kept: errors are
                // what the on-call engineer looks for. The trace is kept from here on.
                if let Some(rule) = self.forced_keep(&part) {
                    self.stats.late_spans_kept += part.rows.len() as u64;
                    released.push(part.release(&name, 1.0, &rule).spans);
                    self.cache.keep(ix, id, Kept { p: 1.0, rule });
                    continue;
                }
                self.stats.late_spans_dropped += part.rows.len() as u64;
                continue;
            }
            if !self.rules.config.enabled {
                self.stats.passthrough_spans += part.rows.len() as u64;
                passthrough.extend_from_slice(&part.rows);
                continue;
            }
            let deadline = (now + wait, self.next_id);
            self.next_id += 1;
            self.deadlines.insert(deadline, key);
            *self.min_seqs.entry(seq).or_default() += 1;
            self.bytes += bytes;
            self.pending.insert(
                key,
                Pending {
                    tenant: Arc::clone(&name),
                    parts: vec![part],
                    first: now,
                    deadline: Some(deadline),
                    bytes,
                    min_seq: seq,
                    handed_out: 0,
                },
            );
        }
        if !passthrough.is_empty() {
            released.push(take_rows(&batch, &passthrough));
        }
        concat(released)
    }

    /// The force-keep rule one of the part's spans matches, if any.
    fn forced_keep(&self, part: &Part) -> Option<Arc<str>> {
        let cols = FactColumns::new(&part.batch);
        part.rows.iter().find_map(|&i| {
            self.rules
                .score(&cols.row(i as usize))
                .force_keep
                .map(|r| Arc::from(self.rules.force_keep_name(r)))
        })
    }

    /// Seeds a decision read back from the WAL, so the trace's replayed spans get it too.
    pub fn remember(
        &mut self,
        tenant: &str,
        trace_id: TraceId,
        p: f64,
        keep: bool,
        rule: Arc<str>,
    ) {
        let (ix, _) = self.tenant_ix(tenant);
        if keep {
            self.cache.keep(ix, trace_id, Kept { p, rule });
        } else {
            self.cache.drop_trace(ix, trace_id);
        }
    }

    /// True when the traces not yet being decided are over `max_traces` or
    /// `max_buffer_bytes`.
    pub fn over_limits(&self) -> bool {
        self.undecided() > self.rules.config.max_traces
            || self.bytes - self.deciding_bytes > self.rules.config.max_buffer_bytes
    }

    /// True when the buffer is so far over its limits that new spans should be refused.
    pub fn overloaded(&self) -> bool {
        self.pending.len() > 2 * self.rules.config.max_traces
            || self.bytes > 2 * self.rules.config.max_buffer_bytes
    }

    fn undecided(&self) -> usize {
        self.deadlines.len()
    }

    /// Hands out the traces due at `now` (all of them when `all`), and the oldest ones while
    /// the buffer is over its limits. They stay buffered (spans arriving meanwhile join them)
    /// until [`TailCore::complete`].
    pub fn take_due(&mut self, now: Instant, all: bool) -> Vec<Due> {
        let mut due = Vec::new();
        while let Some((&(at, n), _)) = self.deadlines.first_key_value() {
            let early = at > now && !all;
            if early && !self.over_limits() {
                break;
            }
            let key = self.deadlines.remove(&(at, n)).expect("first key exists");
            let p = self
                .pending
                .get_mut(&key)
                .expect("deadline of a pending trace");
            p.deadline = None;
            p.handed_out = p.parts.len();
            self.deciding_bytes += p.bytes;
            if early {
                self.stats.decided_early += 1;
            }
            due.push(Due {
                tenant: Arc::clone(&p.tenant),
                tenant_ix: key.0,
                trace_id: key.1,
                parts: p.parts.clone(),
                early,
            });
        }
        due
    }

    /// The current middle-band probabilities, for [`decide`].
    pub fn probabilities(&self) -> Arc<ProbTable> {
        self.adaptive.table()
    }

    /// Applies decisions made for traces from [`TailCore::take_due`]: forgets the traces and
    /// remembers the decisions. The kept spans of the parts handed out come from
    /// [`release_kept`]; this returns those of parts that arrived since, stamped.
    pub fn complete(&mut self, decided: Vec<(Due, Decision)>) -> Vec<Release> {
        let mut late: Vec<(Arc<str>, Part, f64, Arc<str>)> = Vec::new();
        for (due, d) in decided {
            let key = (due.tenant_ix, due.trace_id);
            let Some(p) = self.pending.remove(&key) else {
                continue;
            };
            self.bytes -= p.bytes;
            self.deciding_bytes -= p.bytes;
            if let Some(c) = self.min_seqs.get_mut(&p.min_seq) {
                *c -= 1;
                if *c == 0 {
                    self.min_seqs.remove(&p.min_seq);
                }
            }
            let total: usize = p.parts.iter().map(|part| part.rows.len()).sum();
            let band = d.band.unwrap_or(Band::Mid);
            let stats = &mut self.stats.bands[band.index()];
            if d.keep {
                stats.kept_traces += 1;
                stats.kept_spans += total as u64;
                for part in &p.parts[p.handed_out..] {
                    late.push((
                        Arc::clone(&p.tenant),
                        part.clone(),
                        d.p,
                        Arc::clone(&d.rule),
                    ));
                }
                self.cache.keep(
                    key.0,
                    key.1,
                    Kept {
                        p: d.p,
                        rule: Arc::clone(&d.rule),
                    },
                );
            } else {
                stats.dropped_traces += 1;
                stats.dropped_spans += total as u64;
                self.cache.drop_trace(key.0, key.1);
            }
            let mid_key = if band == Band::Mid {
                d.key.as_ref()
            } else {
                None
            };
            self.adaptive.observe(mid_key, d.spans, d.keep);
        }
        release_grouped(late.iter().map(|(t, part, p, rule)| (t, part, *p, rule)))
    }

    /// Recomputes the adaptive probabilities when their interval is over.
    pub fn adjust(&mut self, now: Instant) -> bool {
        self.adaptive.adjust(now)
    }

    /// The oldest WAL sequence number whose spans are still buffered here.
    pub fn min_seq(&self) -> Option<u64> {
        self.min_seqs.first_key_value().map(|(s, _)| *s)
    }

    /// The earliest deadline, to know when to wake up.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.deadlines.first_key_value().map(|((at, _), _)| *at)
    }

    /// A view for `GET /api/sampling` and the metrics.
    pub fn status(&self) -> Status {
        let (kept_cache, dropped_cache) = self.cache.sizes();
        Status {
            enabled: self.rules.config.enabled,
            buffered_traces: self.pending.len(),
            buffered_bytes: self.bytes,
            kept_cache,
            dropped_cache,
            budget_spans_per_sec: self.adaptive.budget(),
            budget_infeasible: self.adaptive.infeasible(),
            kept_spans_per_sec: self.adaptive.kept_rate,
            mid_probability: self.adaptive.table().default_p,
            keys: self
                .adaptive
                .snapshot(50)
                .into_iter()
                .map(|(k, rate, p)| KeyStatus {
                    service: k.service,
                    route: k.route,
                    status_class: k.class,
                    spans_per_sec: rate,
                    probability: p,
                })
                .collect(),
            stats: self.stats.clone(),
        }
    }
}

/// What `GET /api/sampling` shows of the sampler's state.
#[derive(Debug, Clone, Serialize)]
pub struct Status {
    /// Sampling on or off.
    pub enabled: bool,
    /// Traces waiting for a decision.
    pub buffered_traces: usize,
    /// Their estimated bytes.
    pub buffered_bytes: usize,
    /// Kept decisions remembered.
    pub kept_cache: usize,
    /// Dropped decisions remembered.
    pub dropped_cache: usize,
    /// The budget, if set.
    pub budget_spans_per_sec: Option<f64>,
    /// True when forced keeps and the high band alone exceed the budget: the middle band is at
    /// its floor and the budget cannot be met (those bands are never reduced).
    pub budget_infeasible: bool,
    /// Kept spans per second (moving average).
    pub kept_spans_per_sec: f64,
    /// Middle-band probability for keys without their own.
    pub mid_probability: f64,
    /// Effective middle-band probability per key, busiest first.
    pub keys: Vec<KeyStatus>,
    /// Counters.
    pub stats: Stats,
}

/// One adaptive key in [`Status`].
#[derive(Debug, Clone, Serialize)]
pub struct KeyStatus {
    /// Root service.
    pub service: String,
    /// Root route.
    pub route: String,
    /// Trace status class.
    pub status_class: &'static str,
    /// Middle-band traffic, spans per second (moving average).
    pub spans_per_sec: f64,
    /// Effective keep probability.
    pub probability: f64,
}

/// Scores and decides one trace. Pure: call it off the lock and off the IO threads; then
/// [`release_kept`] takes out the kept spans.
pub fn decide(rules: &Rules, table: &ProbTable, due: &Due) -> Decision {
    let mut weight: f64 = 0.0;
    let mut force_keep = None;
    let mut force_drop = None;
    let mut errored = false;
    let mut spans = 0;
    let mut root: Option<(String, String, &'static str)> = None;
    let mut first: Option<(String, String, &'static str)> = None;
    for part in &due.parts {
        let cols = FactColumns::new(&part.batch);
        for &i in part.rows.iter() {
            let f: SpanFacts<'_> = cols.row(i as usize);
            let s = rules.score(&f);
            weight = weight.max(s.weight);
            force_keep = force_keep.or(s.force_keep);
            force_drop = force_drop.or(s.force_drop);
            errored |= s.errored;
            spans += 1;
            let describe = || {
                (
                    f.service.unwrap_or("").to_string(),
                    f.route_subject().to_string(),
                    f.status_class(),
                )
            };
            if f.is_root && root.is_none() {
                root = Some(describe());
            } else if first.is_none() {
                first = Some(describe());
            }
        }
    }
    let c = &rules.config;
    let (band, p, rule): (Band, f64, Arc<str>) = if let Some(r) = force_keep {
        (Band::ForceKeep, 1.0, Arc::from(rules.force_keep_name(r)))
    } else if let (Some(r), false) = (force_drop, errored) {
        (Band::ForceDrop, 0.0, Arc::from(rules.route_name(r)))
    } else if weight > c.high_threshold {
        (Band::High, 1.0, Arc::from(Band::High.as_str()))
    } else if weight > c.low_threshold {
        (Band::Mid, 0.0, Arc::from(Band::Mid.as_str()))
    } else {
        (Band::Low, c.low_probability, Arc::from(Band::Low.as_str()))
    };
    let key = (band == Band::Mid).then(|| {
        let (service, route, class) = root.or(first).unwrap_or_default();
        Key {
            service,
            route,
            class: if errored { "error" } else { class },
        }
    });
    let p = match &key {
        Some(k) => table.get(k),
        None => p,
    };
    let keep = trace_random(due.trace_id) < p;
    Decision {
        tenant: Arc::clone(&due.tenant),
        trace_id: due.trace_id,
        p,
        keep,
        rule,
        band: Some(band),
        key,
        spans,
        weight,
    }
}

/// The stamped spans of the kept traces among `decided`, one batch per WAL record (a single
/// `take` per record, however many of its traces were kept).
pub fn release_kept(decided: &[(Due, Decision)]) -> Vec<Release> {
    release_grouped(decided.iter().filter(|(_, d)| d.keep).flat_map(|(due, d)| {
        due.parts
            .iter()
            .map(move |part| (&due.tenant, part, d.p, &d.rule))
    }))
}

type Group = (RecordBatch, Vec<u32>, Vec<f64>, Vec<Arc<str>>);

fn release_grouped<'a>(
    selected: impl Iterator<Item = (&'a Arc<str>, &'a Part, f64, &'a Arc<str>)>,
) -> Vec<Release> {
    let mut groups: BTreeMap<(Arc<str>, u64), Group> = BTreeMap::new();
    for (tenant, part, p, rule) in selected {
        let g = groups
            .entry((Arc::clone(tenant), part.seq))
            .or_insert_with(|| (part.batch.clone(), Vec::new(), Vec::new(), Vec::new()));
        g.1.extend_from_slice(&part.rows);
        g.2.extend(std::iter::repeat_n(1.0 / p, part.rows.len()));
        g.3.extend(std::iter::repeat_n(Arc::clone(rule), part.rows.len()));
    }
    groups
        .into_iter()
        .map(|((tenant, seq), (batch, rows, factors, rules))| Release {
            tenant,
            seq,
            spans: stamp_rows(&take_rows(&batch, &rows), &factors, &rules),
        })
        .collect()
}

/// Multiplies each row's `adjusted_count` by its factor and sets its `sampling_rule`.
fn stamp_rows(batch: &RecordBatch, factors: &[f64], rules: &[Arc<str>]) -> RecordBatch {
    let schema = batch.schema();
    let adj_ix = schema
        .index_of(columns::ADJUSTED_COUNT)
        .expect("adjusted_count");
    let rule_ix = schema
        .index_of(columns::SAMPLING_RULE)
        .expect("sampling_rule");
    let old = batch.column(adj_ix).as_primitive::<Float64Type>();
    let adjusted: Float64Array = old
        .iter()
        .zip(factors)
        .map(|(v, f)| Some(v.unwrap_or(1.0) * f))
        .collect();
    let rules = StringArray::from_iter_values(rules.iter().map(|r| &**r));
    let mut cols: Vec<ArrayRef> = batch.columns().to_vec();
    cols[adj_ix] = Arc::new(adjusted);
    cols[rule_ix] = Arc::new(rules);
    RecordBatch::try_new(schema, cols).expect("same schema, same lengths")
}

/// Sets `adjusted_count *= 1/p` and `sampling_rule = rule` on every span.
pub fn stamp(batch: &RecordBatch, p: f64, rule: &str) -> RecordBatch {
    let n = batch.num_rows();
    stamp_rows(batch, &vec![1.0 / p; n], &vec![Arc::from(rule); n])
}

/// Concatenates span batches, or None when there are none.
pub fn concat(batches: Vec<RecordBatch>) -> Option<RecordBatch> {
    match batches.len() {
        0 => None,
        1 => batches.into_iter().next(),
        _ => Some(concat_batches(&span_schema(), &batches).expect("span batches share a schema")),
    }
}
