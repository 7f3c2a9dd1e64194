//! The eval's traffic: loadgen traces with injected incidents, the ground truth of each trace,
//! and the split of some traces into an on-time part and a late part.
//!
//! Incidents are drawn from their own seeded RNG, so the loadgen stream itself is the same as
//! `tracelake loadgen --seed S` would send:
//! - error bursts: in a few windows of consecutive traces, one service's (non-root) server spans fail
//!   (OTLP ERROR, HTTP 503 / gRPC UNAVAILABLE), the failure shows on the calling client span,
//!   and half the time on the root too;
//! - slow tails: on top of loadgen's own outliers, a few traces get a stall of 0.5 to 3 s in
//!   one span, which every ancestor waits for;
//! - rare routes: a few edge requests become `POST /api/payment/refund`.

use std::collections::HashMap;

use opentelemetry_proto::tonic::common::v1::{any_value::Value, AnyValue, KeyValue};
use opentelemetry_proto::tonic::trace::v1::status::StatusCode;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span, Status};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tracelake_ingest::sampling::rules::SpanFacts;
use tracelake_ingest::sampling::{trace_id_of, Rules};

use crate::loadgen::Workload;

/// Routes injected into a few traces; the eval config gives them a route rule.
pub(crate) const RARE_ROUTES: &[&str] = &["/api/payment/refund"];
/// Share of edge traces turned into a rare route.
const P_RARE: f64 = 0.0005;
/// Share of traces that get an extra stall.
const P_SLOW: f64 = 0.002;
/// Services whose server spans fail during a burst.
const BURST_SERVICES: &[&str] = &["cart", "catalog", "inventory", "auth", "payment", "user"];
/// Bursts per run, and their length as a share of the run's traces.
const BURSTS: usize = 3;
const BURST_SHARE: f64 = 0.01;
/// Probability that a server span of the burst's service fails during the burst.
const BURST_FAIL: f64 = 0.5;
/// Probability that a burst failure also fails the root.
const BURST_TO_ROOT: f64 = 0.5;
/// Base time of the generated spans (2026-01-01T00:00:00Z); the eval's clock is virtual.
const BASE_TIME_UNIX_NANO: u64 = 1_767_225_600 * 1_000_000_000;
const STATUS_ERROR: i32 = StatusCode::Error as i32;
const KIND_SERVER: i32 = 2;
const KIND_CONSUMER: i32 = 5;

/// What is known about one generated trace.
#[derive(Debug, Clone, Default)]
pub(crate) struct Truth {
    /// Trace id, as the sampler sees it.
    pub(crate) id: u128,
    /// All spans, on time and late.
    pub(crate) spans: u32,
    /// Spans delivered after the decision wait.
    pub(crate) late_spans: u32,
    /// Root `service.name`, as an index into [`Names::services`].
    pub(crate) root_service: u16,
    /// Root route subject (`http.route`, else `url.path`, else the name), an index into
    /// [`Names::routes`].
    pub(crate) root_route: u16,
    /// Root span duration in nanoseconds.
    pub(crate) root_duration: i64,
    /// The root span errored (OTLP ERROR or HTTP >= 500).
    pub(crate) root_error: bool,
    /// Some span errored.
    pub(crate) error: bool,
    /// Some on-time span errored (the sampler can see the error when it decides).
    pub(crate) error_on_time: bool,
    /// The root service is in a tier scored 1.0.
    pub(crate) critical_tier_root: bool,
    /// Some span's service is in a tier scored 1.0.
    pub(crate) critical_tier_any: bool,
    /// The root route is one of [`RARE_ROUTES`].
    pub(crate) rare_route: bool,
    /// A force-drop route rule matches and nothing errored: dropped by policy, not sampled.
    pub(crate) force_dropped: bool,
}

/// Interned service and route names.
#[derive(Debug, Default)]
pub(crate) struct Names {
    /// Root services.
    pub(crate) services: Vec<String>,
    /// Root routes.
    pub(crate) routes: Vec<String>,
    service_ix: HashMap<String, u16>,
    route_ix: HashMap<String, u16>,
}

impl Names {
    fn intern(names: &mut Vec<String>, ix: &mut HashMap<String, u16>, name: &str) -> u16 {
        if let Some(&i) = ix.get(name) {
            return i;
        }
        let i = u16::try_from(names.len()).unwrap_or(u16::MAX);
        names.push(name.to_owned());
        ix.insert(name.to_owned(), i);
        i
    }
}

/// One generated trace: its truth, the spans sent at once, and those sent late.
#[derive(Debug)]
pub(crate) struct GenTrace {
    /// Ground truth.
    pub(crate) truth: Truth,
    /// Spans sent when the trace arrives.
    pub(crate) on_time: Vec<ResourceSpans>,
    /// Spans sent after the decision wait (empty for most traces).
    pub(crate) late: Vec<ResourceSpans>,
    /// How long after the decision wait (counted from the trace's arrival) the late spans are
    /// sent, in seconds.
    pub(crate) late_after: f64,
}

#[derive(Debug, Clone)]
struct Burst {
    start: u64,
    end: u64,
    service: &'static str,
}

/// Generates the eval's traces.
pub(crate) struct Traffic {
    workload: Workload,
    rng: StdRng,
    bursts: Vec<Burst>,
    index: u64,
    total: u64,
    late_fraction: f64,
    /// Interned root names of the traces so far.
    pub(crate) names: Names,
}

impl Traffic {
    /// Traffic of `total` traces (bursts are placed within them) from `seed`; a share
    /// `late_fraction` of traces send one service's spans late.
    pub(crate) fn new(seed: u64, total: u64, late_fraction: f64) -> Self {
        let mut rng = StdRng::seed_from_u64(seed ^ 0x5eed_f00d_e7a1_u64);
        let len = ((total as f64 * BURST_SHARE) as u64).max(10).min(total);
        let bursts = (0..BURSTS)
            .map(|_| {
                let start = rng.random_range(0..=total - len);
                Burst {
                    start,
                    end: start + len,
                    service: BURST_SERVICES[rng.random_range(0..BURST_SERVICES.len())],
                }
            })
            .collect();
        Self {
            workload: Workload::new(seed, BASE_TIME_UNIX_NANO),
            rng,
            bursts,
            index: 0,
            total,
            late_fraction,
            names: Names::default(),
        }
    }

    /// Scales loadgen's failure probabilities, and resizes the bursts to `burst_share` of the
    /// traces each (0 removes them).
    pub(crate) fn with_failures(mut self, failure_scale: f64, burst_share: f64) -> Self {
        let total = self.total;
        self.workload = std::mem::replace(&mut self.workload, Workload::new(0, 0))
            .with_failure_scale(failure_scale);
        let len = (total as f64 * burst_share) as u64;
        if len == 0 {
            self.bursts.clear();
        }
        for b in &mut self.bursts {
            let len = len.min(total);
            b.start = b.start.min(total - len);
            b.end = b.start + len;
        }
        self
    }

    /// The services that fail in bursts, with their trace index ranges.
    pub(crate) fn bursts(&self) -> Vec<(String, u64, u64)> {
        self.bursts
            .iter()
            .map(|b| (b.service.to_owned(), b.start, b.end))
            .collect()
    }

    /// The next trace.
    pub(crate) fn next_trace(&mut self, rules: &Rules) -> GenTrace {
        let index = self.index;
        self.index += 1;
        let mut rs = self.workload.next_trace();
        let mut view = TraceView::new(&rs);
        let bursts: Vec<&'static str> = self
            .bursts
            .iter()
            .filter(|b| (b.start..b.end).contains(&index))
            .map(|b| b.service)
            .collect();
        for service in bursts {
            self.burst(&mut rs, &view, service);
        }
        if view.spans.len() > 1 && self.rng.random_bool(P_SLOW) {
            self.stall(&mut rs, &view);
        }
        if view.spans.len() > 1 && self.rng.random_bool(P_RARE) {
            let route = RARE_ROUTES[self.rng.random_range(0..RARE_ROUTES.len())];
            rare_route(&mut rs, &view, route);
        }
        view = TraceView::new(&rs);
        let mut truth = self.truth(&rs, &view, rules);
        let (late, late_after) = if view.resources() > 1 && self.rng.random_bool(self.late_fraction)
        {
            (
                self.split_late(&mut rs, &view),
                self.rng.random_range(0.5..3.0),
            )
        } else {
            (Vec::new(), 0.0)
        };
        truth.late_spans = late.iter().map(span_count).sum::<usize>() as u32;
        truth.error_on_time = rs.iter().flat_map(spans_of).any(errored);
        GenTrace {
            truth,
            on_time: rs,
            late,
            late_after,
        }
    }

    /// Fails `service`'s server spans at random, with their callers and maybe the root.
    fn burst(&mut self, rs: &mut [ResourceSpans], view: &TraceView, service: &str) {
        let mut failed = false;
        for (i, s) in view.spans.iter().enumerate() {
            // Roots are edge requests or health probes; the failure reaches them from below.
            if i == view.root || view.service_of(i) != service {
                continue;
            }
            let span = &rs[s.0].scope_spans[s.1].spans[s.2];
            if !(span.kind == KIND_SERVER || span.kind == KIND_CONSUMER) {
                continue;
            }
            if !self.rng.random_bool(BURST_FAIL) {
                continue;
            }
            let server = span.kind == KIND_SERVER;
            fail(
                view.span_mut(rs, i),
                503,
                "injected: upstream connect error",
            );
            if let (Some(p), true) = (view.parent[i], server) {
                fail(view.span_mut(rs, p), 503, "");
            }
            failed = true;
        }
        if failed && self.rng.random_bool(BURST_TO_ROOT) {
            fail(view.span_mut(rs, view.root), 502, "");
        }
    }

    /// Stalls one non-root span by 0.5 to 3 s; its ancestors end that much later too.
    fn stall(&mut self, rs: &mut [ResourceSpans], view: &TraceView) {
        let candidates: Vec<usize> = (0..view.spans.len()).filter(|&i| i != view.root).collect();
        let mut i = candidates[self.rng.random_range(0..candidates.len())];
        let delay = (self.rng.random_range(0.5..3.0) * 1e9) as u64;
        loop {
            let span = view.span_mut(rs, i);
            span.end_time_unix_nano += delay;
            match view.parent[i] {
                Some(p) => i = p,
                None => break,
            }
        }
    }

    fn truth(&mut self, rs: &[ResourceSpans], view: &TraceView, rules: &Rules) -> Truth {
        let tiers = &rules.config.tiers;
        let critical = |service: &str| {
            let tier = tiers.services.get(service).unwrap_or(&tiers.default);
            tiers.scores.get(tier).is_some_and(|&s| s >= 1.0)
        };
        let mut t = Truth::default();
        let (mut force_drop, mut force_keep, mut errored_any) = (false, false, false);
        for (i, &(r, s, k)) in view.spans.iter().enumerate() {
            let span = &rs[r].scope_spans[s].spans[k];
            let service = view.service_of(i);
            let facts = facts(span, service);
            let score = rules.score(&facts);
            force_drop |= score.force_drop.is_some();
            force_keep |= score.force_keep.is_some();
            errored_any |= score.errored;
            t.spans += 1;
            t.error |= errored(span);
            t.critical_tier_any |= critical(service);
            if i == view.root {
                t.id = trace_id_of(&span.trace_id);
                t.root_duration = facts.duration_nanos;
                t.root_error = errored(span);
                t.critical_tier_root = critical(service);
                let route = facts.route_subject();
                t.rare_route = RARE_ROUTES.contains(&route);
                t.root_service = Names::intern(
                    &mut self.names.services,
                    &mut self.names.service_ix,
                    service,
                );
                t.root_route =
                    Names::intern(&mut self.names.routes, &mut self.names.route_ix, route);
            }
        }
        t.force_dropped = force_drop && !force_keep && !errored_any;
        t
    }

    /// Moves the spans of one resource (a service pod whose exporter is slow), never the
    /// root's, into a late part.
    fn split_late(&mut self, rs: &mut Vec<ResourceSpans>, view: &TraceView) -> Vec<ResourceSpans> {
        let root_resource = view.spans[view.root].0;
        let candidates: Vec<usize> = (0..rs.len()).filter(|&r| r != root_resource).collect();
        let pick = candidates[self.rng.random_range(0..candidates.len())];
        vec![rs.remove(pick)]
    }
}

/// Index of a trace's spans: positions, parents, root.
struct TraceView {
    /// (resource, scope, span) of each span.
    spans: Vec<(usize, usize, usize)>,
    parent: Vec<Option<usize>>,
    root: usize,
    services: Vec<String>,
}

impl TraceView {
    fn new(rs: &[ResourceSpans]) -> Self {
        let mut spans = Vec::new();
        for (r, res) in rs.iter().enumerate() {
            for (s, scope) in res.scope_spans.iter().enumerate() {
                for k in 0..scope.spans.len() {
                    spans.push((r, s, k));
                }
            }
        }
        let get = |&(r, s, k): &(usize, usize, usize)| &rs[r].scope_spans[s].spans[k];
        let by_id: HashMap<&[u8], usize> = spans
            .iter()
            .enumerate()
            .map(|(i, p)| (get(p).span_id.as_slice(), i))
            .collect();
        let parent: Vec<Option<usize>> = spans
            .iter()
            .map(|p| by_id.get(get(p).parent_span_id.as_slice()).copied())
            .collect();
        let root = spans
            .iter()
            .position(|p| get(p).parent_span_id.is_empty())
            .unwrap_or(0);
        let services = rs
            .iter()
            .map(|res| {
                res.resource
                    .as_ref()
                    .and_then(|r| str_attr(&r.attributes, "service.name"))
                    .unwrap_or("")
                    .to_owned()
            })
            .collect();
        Self {
            spans,
            parent,
            root,
            services,
        }
    }

    fn resources(&self) -> usize {
        self.services.len()
    }

    fn service_of(&self, i: usize) -> &str {
        &self.services[self.spans[i].0]
    }

    fn span_mut<'a>(&self, rs: &'a mut [ResourceSpans], i: usize) -> &'a mut Span {
        let (r, s, k) = self.spans[i];
        &mut rs[r].scope_spans[s].spans[k]
    }
}

fn spans_of(rs: &ResourceSpans) -> impl Iterator<Item = &Span> {
    rs.scope_spans
        .iter()
        .flat_map(|s: &ScopeSpans| s.spans.iter())
}

fn span_count(rs: &ResourceSpans) -> usize {
    rs.scope_spans.iter().map(|s| s.spans.len()).sum()
}

/// OTLP ERROR or HTTP status >= 500: the eval's definition of an error.
fn errored(span: &Span) -> bool {
    span.status.as_ref().is_some_and(|s| s.code == STATUS_ERROR)
        || int_attr(&span.attributes, "http.response.status_code").is_some_and(|c| c >= 500)
}

/// The rules' view of a span, as `tracelake_proto` would convert it.
fn facts<'a>(span: &'a Span, service: &'a str) -> SpanFacts<'a> {
    SpanFacts {
        status_code: span.status.as_ref().map_or(0, |s| s.code),
        http_status: int_attr(&span.attributes, "http.response.status_code"),
        duration_nanos: i64::try_from(
            span.end_time_unix_nano
                .saturating_sub(span.start_time_unix_nano),
        )
        .unwrap_or(i64::MAX),
        service: Some(service),
        name: Some(span.name.as_str()),
        http_route: str_attr(&span.attributes, "http.route"),
        url_path: str_attr(&span.attributes, "url.path"),
        kind: span.kind,
        is_root: span.parent_span_id.is_empty(),
    }
}

/// Marks a span failed: OTLP ERROR, and the HTTP or gRPC status code if it has one.
fn fail(span: &mut Span, http: i64, message: &str) {
    span.status = Some(Status {
        message: message.to_owned(),
        code: STATUS_ERROR,
    });
    for kv in &mut span.attributes {
        let value = match kv.key.as_str() {
            "http.response.status_code" => Value::IntValue(http),
            "rpc.grpc.status_code" => Value::IntValue(14),
            _ => continue,
        };
        kv.value = Some(AnyValue { value: Some(value) });
    }
}

/// Rewrites an edge trace's root into a request to `route`.
fn rare_route(rs: &mut [ResourceSpans], view: &TraceView, route: &str) {
    let root = view.span_mut(rs, view.root);
    if str_attr(&root.attributes, "http.route").is_none() {
        return;
    }
    root.name = format!("POST {route}");
    for kv in &mut root.attributes {
        let value = match kv.key.as_str() {
            "http.route" | "url.path" => route,
            "http.request.method" => "POST",
            _ => continue,
        };
        kv.value = Some(AnyValue {
            value: Some(Value::StringValue(value.to_owned())),
        });
    }
}

fn attr<'a>(attrs: &'a [KeyValue], key: &str) -> Option<&'a Value> {
    attrs
        .iter()
        .find(|kv| kv.key == key)
        .and_then(|kv| kv.value.as_ref()?.value.as_ref())
}

fn str_attr<'a>(attrs: &'a [KeyValue], key: &str) -> Option<&'a str> {
    match attr(attrs, key) {
        Some(Value::StringValue(s)) => Some(s),
        _ => None,
    }
}

fn int_attr(attrs: &[KeyValue], key: &str) -> Option<i64> {
    match attr(attrs, key) {
        Some(Value::IntValue(i)) => Some(*i),
        _ => None,
    }
}
