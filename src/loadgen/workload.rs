//! Deterministic trace generation: walks the [`topology`](super::topology) with a seeded RNG.
//!
//! For each trace: pick an entry operation (or a health probe), then recursively "serve" it:
//! a server span, its self time (log-normal with slow outliers), and its downstream calls, each a
//! client span wrapping the callee's server span (or a DB / external / producer span). Failures
//! are decided on the way back up: a critical downstream failure usually fails the caller, a
//! non-critical one is absorbed. Children always lie within their parent's time range, except
//! Kafka consumer spans, which start after their producer span like real asynchronous work.

use std::time::Duration;

use opentelemetry_proto::tonic::common::v1::{
    any_value::Value, AnyValue, ArrayValue, InstrumentationScope, KeyValue,
};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::span::{Event, SpanKind};
use opentelemetry_proto::tonic::trace::v1::status::StatusCode;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span, Status};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use super::topology::{
    lang, op, service, Call, DbQuery, DbSystem, External, OpKind, Repeat, Svc, Target, ENTRIES,
    HEALTH_WEIGHT, MAX_PODS, O, SERVICES,
};

/// Upper bound on spans per trace; calls beyond it are skipped.
pub(crate) const MAX_SPANS: usize = 64;
const SCHEMA_URL: &str = "https://opentelemetry.io/schemas/1.34.0";
const SAMPLED: u32 = 0x1;
const HAS_IS_REMOTE: u32 = 0x100;
const IS_REMOTE: u32 = 0x200;
/// Probability that an internal call times out on the client side.
const P_TIMEOUT: f64 = 0.0008;
/// Probability that a DB query or an external API call fails.
const P_DB_ERROR: f64 = 0.003;
const P_EXTERNAL_5XX: f64 = 0.008;
const P_EXTERNAL_TIMEOUT: f64 = 0.001;
/// Probability that a self-time sample is a slow outlier (GC pause, lock wait, cold cache).
const P_OUTLIER: f64 = 0.015;
const NANOS_PER_MS: f64 = 1_000_000.0;

const USER_AGENTS_WEB: &[&str] = &[
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/139.0.0.0 Safari/537.36",
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/18.6 Safari/605.1.15",
    "Mozilla/5.0 (iPhone; CPU iPhone OS 18_6 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/18.6 Mobile/15E148 Safari/604.1",
    "Mozilla/5.0 (X11; Linux x86_64; rv:142.0) Gecko/20100101 Firefox/142.0",
    "Mozilla/5.0 (Linux; Android 15; Pixel 9) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/139.0.0.0 Mobile Safari/537.36",
];
const USER_AGENTS_MOBILE: &[&str] = &[
    "ShopApp/5.12.1 (iPhone15,3; iOS 18.6; Scale/3.00)",
    "ShopApp/5.12.0 (iPhone14,5; iOS 17.7; Scale/3.00)",
    "ShopApp/5.12.1 (Android 15; Pixel 8)",
    "okhttp/4.12.0",
];
const COUNTRIES: &[&str] = &["DE", "FR", "GB", "NL", "US", "ES", "IT", "PL", "SE"];
const CATEGORIES: &[&str] = &["shoes", "jackets", "bags", "accessories", "sale", "new-in"];
const K8S_ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";

/// Deterministic synthetic trace generator.
///
/// The same `seed`, base time and trace interval always produce the same traces, byte for byte.
/// Trace `i` starts at `base_time_unix_nano + i * trace_interval` plus a seeded jitter below one
/// interval.
pub(crate) struct Workload {
    rng: StdRng,
    base_time_unix_nano: u64,
    trace_interval_nanos: u64,
    traces: u64,
    kafka_offset: i64,
    /// Multiplies the probabilities of timeouts, DB errors and external failures.
    failure_scale: f64,
    pods: Vec<Vec<Pod>>,
    scopes: Vec<InstrumentationScope>,
}

struct Pod {
    resource: Resource,
    ip: String,
    node_ip: String,
}

impl Workload {
    /// A workload with a trace every 10 ms of simulated time (100 traces/s).
    pub(crate) fn new(seed: u64, base_time_unix_nano: u64) -> Self {
        let mut rng = StdRng::seed_from_u64(seed);
        let nodes: Vec<(String, String)> = (0..6)
            .map(|_| {
                let (a, b) = (rng.random_range(1..=3u8), rng.random_range(2..=250u8));
                (
                    format!("ip-10-0-{a}-{b}.eu-west-1.compute.internal"),
                    format!("10.0.{a}.{b}"),
                )
            })
            .collect();
        let pods = SERVICES
            .iter()
            .map(|def| {
                let replicaset = k8s_suffix(&mut rng, 10);
                (0..def.pods)
                    .map(|i| {
                        let (node, node_ip) = &nodes[rng.random_range(0..nodes.len())];
                        let ip = format!(
                            "10.1.{}.{}",
                            rng.random_range(0..=63u8),
                            rng.random_range(2..=254u8)
                        );
                        let canary = def.pods >= 3 && i + 1 == def.pods;
                        let version = if canary {
                            def.canary_version
                        } else {
                            def.version
                        };
                        let pod_name =
                            format!("{}-{replicaset}-{}", def.name, k8s_suffix(&mut rng, 5));
                        let lang = lang(def.lang);
                        let attributes = vec![
                            kv("service.name", def.name),
                            kv("service.namespace", def.namespace),
                            kv("service.version", version),
                            kv("service.instance.id", uuid(&mut rng)),
                            kv("deployment.environment.name", "production"),
                            kv("cloud.provider", "aws"),
                            kv("cloud.region", "eu-west-1"),
                            kv("host.name", node.clone()),
                            kv("host.arch", "amd64"),
                            kv("os.type", "linux"),
                            kv("k8s.cluster.name", "prod-eu-west-1"),
                            kv("k8s.namespace.name", def.namespace),
                            kv("k8s.deployment.name", def.name),
                            kv("k8s.pod.name", pod_name),
                            kv("k8s.node.name", node.clone()),
                            kv("process.runtime.name", lang.runtime.0),
                            kv("process.runtime.version", lang.runtime.1),
                            kv("telemetry.sdk.name", "opentelemetry"),
                            kv("telemetry.sdk.language", lang.sdk_language),
                            kv("telemetry.sdk.version", lang.sdk_version),
                        ];
                        Pod {
                            resource: Resource {
                                attributes,
                                ..Default::default()
                            },
                            ip,
                            node_ip: node_ip.clone(),
                        }
                    })
                    .collect()
            })
            .collect();
        let scopes = SERVICES
            .iter()
            .map(|def| {
                let (name, version) = lang(def.lang).scope;
                InstrumentationScope {
                    name: name.to_owned(),
                    version: version.to_owned(),
                    ..Default::default()
                }
            })
            .collect();
        Workload {
            rng,
            base_time_unix_nano,
            trace_interval_nanos: 10_000_000,
            traces: 0,
            kafka_offset: 1_000_000,
            failure_scale: 1.0,
            pods,
            scopes,
        }
    }

    /// Sets the simulated time between consecutive trace starts (default 10 ms).
    pub(crate) fn with_trace_interval(mut self, interval: Duration) -> Self {
        self.trace_interval_nanos = u64::try_from(interval.as_nanos()).unwrap_or(u64::MAX);
        self
    }

    /// Scales the failure probabilities (own 4xx and 5xx, timeouts, DB errors, external 5xx
    /// and timeouts); 1.0
    /// is the default mix, where about 6% of traces hold an error.
    #[cfg_attr(not(test), allow(dead_code, reason = "used by sampler-eval"))]
    pub(crate) fn with_failure_scale(mut self, scale: f64) -> Self {
        self.failure_scale = scale.clamp(0.0, 1.0 / (P_EXTERNAL_5XX + P_EXTERNAL_TIMEOUT));
        self
    }

    /// The next trace, one [`ResourceSpans`] per (service, pod) it touches.
    #[cfg_attr(
        not(test),
        allow(dead_code, reason = "API for tests and benches; `run` batches")
    )]
    pub(crate) fn next_trace(&mut self) -> Vec<ResourceSpans> {
        self.next_batch(1).0
    }

    /// The next `traces` traces merged by resource, as a collector would batch them.
    /// Returns the resource spans and the number of spans in them.
    pub(crate) fn next_batch(&mut self, traces: usize) -> (Vec<ResourceSpans>, usize) {
        let mut grouper = Grouper::new();
        let mut spans = 0;
        for _ in 0..traces {
            let trace = self.generate();
            spans += trace.len();
            for (key, span) in trace {
                grouper.push(self, key, span);
            }
        }
        (grouper.out, spans)
    }

    fn generate(&mut self) -> Vec<(ResKey, Span)> {
        let index = self.traces;
        self.traces += 1;
        // Always one draw, so trace contents do not depend on the time parameters.
        let jitter = (self.rng.random::<f64>() * self.trace_interval_nanos as f64) as u64;
        let start = self
            .base_time_unix_nano
            .saturating_add(index.saturating_mul(self.trace_interval_nanos))
            .saturating_add(jitter);
        let mut trace_id = [0u8; 16];
        while trace_id == [0; 16] {
            self.rng.fill(&mut trace_id);
        }
        let ctx = TraceCtx::new(&mut self.rng);
        let mut gen = TraceGen {
            w: self,
            trace_id,
            ctx,
            spans: Vec::with_capacity(24),
        };
        let total: u32 = ENTRIES.iter().map(|(_, w)| w).sum::<u32>() + HEALTH_WEIGHT;
        let mut pick = gen.w.rng.random_range(0..total);
        let entry = ENTRIES.iter().find(|(_, w)| {
            if pick < *w {
                true
            } else {
                pick -= w;
                false
            }
        });
        match entry {
            Some((o, _)) => {
                gen.serve(*o, start, None);
            }
            None => gen.health_probe(start),
        }
        gen.spans
    }
}

/// Index of a (service, pod) resource.
type ResKey = usize;

fn res_key(svc: Svc, pod: usize) -> ResKey {
    svc as usize * MAX_PODS + pod
}

/// Merges spans into one `ResourceSpans` per resource, in order of first appearance.
struct Grouper {
    index: Vec<Option<usize>>,
    out: Vec<ResourceSpans>,
}

impl Grouper {
    fn new() -> Self {
        Grouper {
            index: vec![None; SERVICES.len() * MAX_PODS],
            out: Vec::new(),
        }
    }

    fn push(&mut self, w: &Workload, key: ResKey, span: Span) {
        let i = *self.index[key].get_or_insert_with(|| {
            let (svc, pod) = (key / MAX_PODS, key % MAX_PODS);
            self.out.push(ResourceSpans {
                resource: Some(w.pods[svc][pod].resource.clone()),
                scope_spans: vec![ScopeSpans {
                    scope: Some(w.scopes[svc].clone()),
                    spans: Vec::new(),
                    schema_url: SCHEMA_URL.to_owned(),
                }],
                schema_url: SCHEMA_URL.to_owned(),
            });
            self.out.len() - 1
        });
        self.out[i].scope_spans[0].spans.push(span);
    }
}

/// Per-trace business context shared by all spans of a trace.
struct TraceCtx {
    user_id: String,
    session_id: String,
    order_id: String,
    product_id: String,
    cart_items: u32,
    client_ip: String,
    country: &'static str,
    category: &'static str,
    page: u32,
}

impl TraceCtx {
    fn new(rng: &mut StdRng) -> Self {
        // Geometric cart size, 1..=8, mean about 2.2: a long tail of big carts.
        let mut cart_items = 1;
        while cart_items < 8 && rng.random_bool(0.55) {
            cart_items += 1;
        }
        TraceCtx {
            user_id: format!("u{:07}", rng.random_range(1..=250_000u32)),
            session_id: hex16(rng),
            order_id: uuid(rng),
            product_id: product_id(rng),
            cart_items,
            client_ip: format!(
                "{}.{}.{}.{}",
                [31u8, 46, 77, 85, 91, 109, 185, 212][rng.random_range(0..8)],
                rng.random_range(0..=255u8),
                rng.random_range(0..=255u8),
                rng.random_range(1..=254u8)
            ),
            country: COUNTRIES[rng.random_range(0..COUNTRIES.len())],
            category: CATEGORIES[rng.random_range(0..CATEGORIES.len())],
            page: 1 + (rng.random::<f64>().powi(3) * 12.0) as u32,
        }
    }

    /// Replaces `{productId}`, `{userId}`, `{orderId}` and `{sessionId}` in a template.
    fn fill(&self, template: &str) -> String {
        let mut out = String::with_capacity(template.len() + 24);
        let mut rest = template;
        while let Some(open) = rest.find('{') {
            out.push_str(&rest[..open]);
            let Some(close) = rest[open..].find('}') else {
                break;
            };
            let name = &rest[open + 1..open + close];
            match name {
                "productId" => out.push_str(&self.product_id),
                "userId" => out.push_str(&self.user_id),
                "orderId" => out.push_str(&self.order_id),
                "sessionId" => out.push_str(&self.session_id),
                _ => out.push_str(&rest[open..=open + close]),
            }
            rest = &rest[open + close + 1..];
        }
        out.push_str(rest);
        out
    }
}

/// The result of a call as seen by the caller: an HTTP-style status code or a client timeout.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Outcome {
    Code(u16),
    Timeout,
}

/// Who called a server span.
struct Caller {
    span_id: [u8; 8],
    /// The calling pod; `None` for Kafka consumers (no direct peer).
    from: Option<(Svc, usize)>,
}

struct Served {
    end: u64,
    code: u16,
    index: usize,
}

struct TraceGen<'w> {
    w: &'w mut Workload,
    trace_id: [u8; 16],
    ctx: TraceCtx,
    spans: Vec<(ResKey, Span)>,
}

impl TraceGen<'_> {
    fn rng(&mut self) -> &mut StdRng {
        &mut self.w.rng
    }

    fn span_id(&mut self) -> [u8; 8] {
        let mut id = [0u8; 8];
        while id == [0; 8] || self.spans.iter().any(|(_, s)| s.span_id == id) {
            self.w.rng.fill(&mut id);
        }
        id
    }

    fn reserve(&mut self, key: ResKey, span_id: [u8; 8]) -> usize {
        self.spans.push((
            key,
            Span {
                span_id: span_id.to_vec(),
                ..Default::default()
            },
        ));
        self.spans.len() - 1
    }

    #[allow(clippy::too_many_arguments)]
    fn fill(
        &mut self,
        index: usize,
        parent: Option<([u8; 8], bool)>,
        name: String,
        kind: SpanKind,
        start: u64,
        end: u64,
        attributes: Vec<KeyValue>,
        error: Option<String>,
        events: Vec<Event>,
    ) {
        let flags = match parent {
            Some((_, true)) => SAMPLED | HAS_IS_REMOTE | IS_REMOTE,
            _ => SAMPLED | HAS_IS_REMOTE,
        };
        let span = &mut self.spans[index].1;
        span.trace_id = self.trace_id.to_vec();
        span.parent_span_id = parent.map(|(p, _)| p.to_vec()).unwrap_or_default();
        span.flags = flags;
        span.name = name;
        span.kind = kind as i32;
        span.start_time_unix_nano = start;
        span.end_time_unix_nano = end.max(start);
        span.attributes = attributes;
        span.events = events;
        span.status = error.map(|message| Status {
            message,
            code: StatusCode::Error as i32,
        });
    }

    /// A log-normal duration in nanoseconds with occasional slow outliers.
    fn latency(&mut self, median_ms: f64, sigma: f64) -> u64 {
        let rng = self.rng();
        let mut ms = median_ms * (sigma * std_normal(rng)).exp();
        if rng.random_bool(P_OUTLIER) {
            ms *= rng.random_range(5.0..25.0);
        }
        ((ms * NANOS_PER_MS) as u64).max(1_000)
    }

    fn exception(&mut self, svc: Svc, at: u64) -> (String, Event) {
        let def = service(svc);
        let choices = lang(def.lang).exceptions;
        let (ty, message, stack) = choices[self.rng().random_range(0..choices.len())];
        let event = Event {
            time_unix_nano: at,
            name: "exception".to_owned(),
            attributes: vec![
                kv("exception.type", ty),
                kv("exception.message", message),
                kv("exception.stacktrace", stack.replace("{svc}", def.name)),
            ],
            dropped_attributes_count: 0,
        };
        (message.to_owned(), event)
    }

    fn pick_pod(&mut self, svc: Svc) -> usize {
        let pods = service(svc).pods;
        self.rng().random_range(0..pods)
    }

    /// Serves operation `o` starting at `start`: its server (or consumer) span and all calls.
    fn serve(&mut self, o: O, start: u64, caller: Option<Caller>) -> Served {
        let op = op(o);
        let def = service(op.svc);
        let pod = self.pick_pod(op.svc);
        let span_id = self.span_id();
        let index = self.reserve(res_key(op.svc, pod), span_id);
        let self_time = self.latency(op.self_ms, 0.7);
        let pre = (self_time as f64 * self.rng().random_range(0.2..0.6)) as u64;
        let mut cursor = start + pre;
        let miss = self.rng().random_bool(op.miss_rate);

        let mut code = op.ok_code;
        let mut error_event = None;
        let p4xx = (op.p4xx * self.w.failure_scale).min(1.0);
        let own_4xx = self.rng().random_bool(p4xx);
        let p5xx = (op.p5xx * self.w.failure_scale).min(1.0);
        let own_5xx_at = if self.rng().random_bool(p5xx) {
            Some(self.rng().random_range(0..=op.calls.len()))
        } else {
            None
        };
        if own_4xx {
            code = op.codes4xx[self.rng().random_range(0..op.codes4xx.len())];
        } else {
            let group_start = cursor;
            let mut group_end = cursor;
            'calls: for (i, call) in op.calls.iter().enumerate() {
                if own_5xx_at == Some(i) {
                    break;
                }
                if (call.miss_only && !miss) || !self.rng().random_bool(call.p) {
                    continue;
                }
                let repeat = match call.repeat {
                    Repeat::Once => 1,
                    Repeat::PerItem => self.ctx.cart_items,
                };
                for _ in 0..repeat {
                    if self.spans.len() + 3 > MAX_SPANS {
                        break 'calls;
                    }
                    if matches!(call.repeat, Repeat::PerItem) {
                        self.ctx.product_id = product_id(self.rng());
                    }
                    let at = if op.parallel {
                        group_start + self.rng().random_range(20_000..200_000)
                    } else {
                        cursor + self.rng().random_range(10_000..150_000)
                    };
                    let (end, outcome) = self.call(call, (op.svc, pod), span_id, at);
                    if op.parallel {
                        group_end = group_end.max(end);
                    } else {
                        cursor = end;
                    }
                    if let Some(failed) = self.propagate(call, outcome, def.public_host.is_some()) {
                        code = failed;
                        if failed >= 500 && self.rng().random_bool(0.4) {
                            error_event = Some(self.exception(op.svc, cursor.max(group_end)));
                        }
                        break 'calls;
                    }
                }
            }
            cursor = cursor.max(group_end);
            if own_5xx_at.is_some() && code < 400 {
                code = if self.rng().random_bool(0.8) {
                    500
                } else {
                    503
                };
                error_event = Some(self.exception(op.svc, cursor));
            }
        }
        let end = cursor + (self_time - pre);

        let attributes = self.server_attributes(o, pod, code, caller.as_ref(), miss);
        let name = match (op.kind, def.grpc) {
            (OpKind::Consumer { topic }, _) => format!("{} {topic}", op.route),
            (OpKind::Server, Some(grpc)) => format!("{grpc}/{}", op.route),
            (OpKind::Server, None) => format!("{} {}", op.method, op.route),
        };
        let kind = match op.kind {
            OpKind::Consumer { .. } => SpanKind::Consumer,
            OpKind::Server => SpanKind::Server,
        };
        let (error, events) = match error_event {
            Some((message, event)) => (Some(message), vec![event]),
            None if code >= 500 => (Some(String::new()), Vec::new()),
            None => (None, Vec::new()),
        };
        let parent = caller.map(|c| (c.span_id, true));
        self.fill(
            index, parent, name, kind, start, end, attributes, error, events,
        );
        Served { end, code, index }
    }

    /// Decides whether a failed call fails the caller; returns the caller's status code if so.
    fn propagate(&mut self, call: &Call, outcome: Outcome, edge: bool) -> Option<u16> {
        match outcome {
            Outcome::Code(c) if c < 400 => None,
            Outcome::Code(c) if c < 500 => call.critical.then_some(c),
            _ => {
                let p = if call.critical { 0.85 } else { 0.05 };
                if !self.rng().random_bool(p) {
                    return None;
                }
                Some(match (outcome, edge) {
                    (Outcome::Timeout, true) => 504,
                    (_, true) => 502,
                    (_, false) if self.rng().random_bool(0.85) => 500,
                    _ => 503,
                })
            }
        }
    }

    /// Makes one call from pod `from`; returns when the caller sees the response.
    fn call(
        &mut self,
        call: &Call,
        from: (Svc, usize),
        parent: [u8; 8],
        at: u64,
    ) -> (u64, Outcome) {
        match call.target {
            Target::Op(o) => self.call_service(o, from, parent, at),
            Target::Db(q) => self.call_db(q, from, parent, at),
            Target::External(x) => self.call_external(x, from, parent, at),
            Target::Publish { topic, consumers } => {
                self.publish(topic, consumers, from, parent, at)
            }
        }
    }

    fn call_service(
        &mut self,
        o: O,
        from: (Svc, usize),
        parent: [u8; 8],
        at: u64,
    ) -> (u64, Outcome) {
        let callee = op(o);
        let def = service(callee.svc);
        let span_id = self.span_id();
        let index = self.reserve(res_key(from.0, from.1), span_id);
        let net_out = self.latency(0.25, 0.5);
        let net_back = self.latency(0.15, 0.5);
        let served = self.serve(
            o,
            at + net_out,
            Some(Caller {
                span_id,
                from: Some(from),
            }),
        );
        let mut end = served.end + net_back;
        let mut outcome = Outcome::Code(served.code);
        let deadline = at + if def.grpc.is_some() { 2_000 } else { 5_000 } * 1_000_000;
        let p_timeout = (P_TIMEOUT * self.w.failure_scale).min(1.0);
        if end < deadline && self.rng().random_bool(p_timeout) {
            // The callee got stuck after its last call; the client gives up at its deadline.
            end = deadline;
            let server = &mut self.spans[served.index].1;
            server.end_time_unix_nano = server.end_time_unix_nano.max(end - net_back);
            outcome = Outcome::Timeout;
        }

        let mut attributes = Vec::with_capacity(8);
        let host = format!("{}.{}.svc.cluster.local", def.name, def.namespace);
        let name = match def.grpc {
            Some(grpc) => {
                attributes.push(kv("rpc.system", "grpc"));
                attributes.push(kv("rpc.service", grpc));
                attributes.push(kv("rpc.method", callee.route));
                attributes.push(kv("rpc.grpc.status_code", grpc_code(outcome)));
                format!("{grpc}/{}", callee.route)
            }
            None => {
                attributes.push(kv("http.request.method", callee.method));
                let path = self.ctx.fill(callee.route);
                attributes.push(kv("url.full", format!("http://{host}:{}{path}", def.port)));
                if let Outcome::Code(c) = outcome {
                    attributes.push(kv("http.response.status_code", i64::from(c)));
                }
                callee.method.to_owned()
            }
        };
        attributes.push(kv("server.address", host));
        attributes.push(kv("server.port", i64::from(def.port)));
        let peer = self.w.pods[callee.svc as usize][0].ip.clone();
        attributes.push(kv("network.peer.address", peer));
        let error = match outcome {
            Outcome::Timeout => {
                attributes.push(kv("error.type", "timeout"));
                Some(if def.grpc.is_some() {
                    "deadline exceeded"
                } else {
                    "request timed out"
                })
            }
            Outcome::Code(c) if c >= 400 => {
                attributes.push(kv("error.type", c.to_string()));
                Some("")
            }
            Outcome::Code(_) => None,
        };
        let error = error.map(str::to_owned);
        let parent = Some((parent, false));
        self.fill(
            index,
            parent,
            name,
            SpanKind::Client,
            at,
            end,
            attributes,
            error,
            Vec::new(),
        );
        (end, outcome)
    }

    fn call_db(
        &mut self,
        q: &DbQuery,
        from: (Svc, usize),
        parent: [u8; 8],
        at: u64,
    ) -> (u64, Outcome) {
        let span_id = self.span_id();
        let index = self.reserve(res_key(from.0, from.1), span_id);
        let mut duration = self.latency(q.median_ms, 0.6);
        let def = service(from.0);
        let (system, name, address, port) = match q.system {
            DbSystem::Postgres => (
                "postgresql",
                format!("{} {}", q.operation, q.collection),
                format!("pg-{}-primary.data.svc.cluster.local", def.namespace),
                5432,
            ),
            DbSystem::Redis => (
                "redis",
                q.operation.to_owned(),
                format!("redis-{}.cache.svc.cluster.local", def.name),
                6379,
            ),
        };
        let mut attributes = vec![
            kv("db.system", system),
            kv(
                "db.namespace",
                if q.system == DbSystem::Redis {
                    "0"
                } else {
                    def.namespace
                },
            ),
            kv("db.operation.name", q.operation),
        ];
        if !q.collection.is_empty() {
            attributes.push(kv("db.collection.name", q.collection));
        }
        attributes.push(kv("db.statement", self.ctx.fill(q.statement)));
        attributes.push(kv("server.address", address));
        attributes.push(kv("server.port", port));
        let p_db_error = (P_DB_ERROR * self.w.failure_scale).min(1.0);
        let (error, events, outcome) = if self.rng().random_bool(p_db_error) {
            let (ty, message) = match q.system {
                DbSystem::Postgres => (
                    "PgError",
                    "ERROR: canceling statement due to lock timeout (SQLSTATE 55P03)",
                ),
                DbSystem::Redis => (
                    "RedisError",
                    "READONLY You can't write against a read only replica.",
                ),
            };
            duration += self.latency(40.0, 0.8);
            attributes.push(kv("error.type", ty));
            let event = Event {
                time_unix_nano: at + duration,
                name: "exception".to_owned(),
                attributes: vec![kv("exception.type", ty), kv("exception.message", message)],
                dropped_attributes_count: 0,
            };
            (Some(message.to_owned()), vec![event], Outcome::Code(500))
        } else {
            (None, Vec::new(), Outcome::Code(200))
        };
        let end = at + duration;
        let parent = Some((parent, false));
        self.fill(
            index,
            parent,
            name,
            SpanKind::Client,
            at,
            end,
            attributes,
            error,
            events,
        );
        (end, outcome)
    }

    fn call_external(
        &mut self,
        x: &External,
        from: (Svc, usize),
        parent: [u8; 8],
        at: u64,
    ) -> (u64, Outcome) {
        let span_id = self.span_id();
        let index = self.reserve(res_key(from.0, from.1), span_id);
        let r: f64 = self.rng().random();
        let (p_timeout, p_5xx) = (
            P_EXTERNAL_TIMEOUT * self.w.failure_scale,
            P_EXTERNAL_5XX * self.w.failure_scale,
        );
        let (duration, outcome) = if r < p_timeout {
            (10_000 * 1_000_000, Outcome::Timeout)
        } else if r < p_timeout + p_5xx {
            (self.latency(x.median_ms * 2.0, 0.7), Outcome::Code(503))
        } else {
            (self.latency(x.median_ms, 0.45), Outcome::Code(200))
        };
        let mut attributes = vec![
            kv("http.request.method", x.method),
            kv("url.full", format!("https://{}{}", x.host, x.path)),
            kv("server.address", x.host),
            kv("server.port", 443),
        ];
        let error = match outcome {
            Outcome::Code(c) => {
                attributes.push(kv("http.response.status_code", i64::from(c)));
                (c >= 400).then(|| {
                    attributes.push(kv("error.type", c.to_string()));
                    String::new()
                })
            }
            Outcome::Timeout => {
                attributes.push(kv("error.type", "timeout"));
                Some("request timed out".to_owned())
            }
        };
        let end = at + duration;
        let parent = Some((parent, false));
        let kind = SpanKind::Client;
        self.fill(
            index,
            parent,
            x.method.to_owned(),
            kind,
            at,
            end,
            attributes,
            error,
            Vec::new(),
        );
        (end, outcome)
    }

    fn publish(
        &mut self,
        topic: &'static str,
        consumers: &'static [O],
        from: (Svc, usize),
        parent: [u8; 8],
        at: u64,
    ) -> (u64, Outcome) {
        let span_id = self.span_id();
        let index = self.reserve(res_key(from.0, from.1), span_id);
        let end = at + self.latency(1.5, 0.5);
        let partition = self.rng().random_range(0..12u32);
        let attributes = vec![
            kv("messaging.system", "kafka"),
            kv("messaging.destination.name", topic),
            kv("messaging.operation.type", "send"),
            kv("messaging.operation.name", "publish"),
            kv("messaging.destination.partition.id", partition.to_string()),
            kv("messaging.kafka.message.key", self.ctx.order_id.clone()),
            kv("server.address", "kafka-0.kafka.data.svc.cluster.local"),
            kv("server.port", 9092),
        ];
        let name = format!("publish {topic}");
        let parent_ref = Some((parent, false));
        let kind = SpanKind::Producer;
        self.fill(
            index,
            parent_ref,
            name,
            kind,
            at,
            end,
            attributes,
            None,
            Vec::new(),
        );
        for &consumer in consumers {
            if self.spans.len() + 3 > MAX_SPANS {
                break;
            }
            let lag = self.latency(25.0, 1.0);
            // Consumer failures are retried by the consumer group, never seen by the producer.
            self.serve(
                consumer,
                end + lag,
                Some(Caller {
                    span_id,
                    from: None,
                }),
            );
        }
        (end, Outcome::Code(200))
    }

    fn health_probe(&mut self, start: u64) {
        let svc = SERVICES[self.rng().random_range(0..SERVICES.len())].svc;
        let def = service(svc);
        let pod = self.pick_pod(svc);
        let span_id = self.span_id();
        let index = self.reserve(res_key(svc, pod), span_id);
        let end = start + self.latency(0.08, 0.4);
        let node_ip = self.w.pods[svc as usize][pod].node_ip.clone();
        let ip = self.w.pods[svc as usize][pod].ip.clone();
        let (name, attributes) = match def.grpc {
            Some(_) => (
                "grpc.health.v1.Health/Check".to_owned(),
                vec![
                    kv("rpc.system", "grpc"),
                    kv("rpc.service", "grpc.health.v1.Health"),
                    kv("rpc.method", "Check"),
                    kv("rpc.grpc.status_code", 0),
                    kv("server.address", ip),
                    kv("server.port", i64::from(def.port)),
                    kv("client.address", node_ip),
                ],
            ),
            None => (
                "GET /healthz".to_owned(),
                vec![
                    kv("http.request.method", "GET"),
                    kv("http.route", "/healthz"),
                    kv("url.path", "/healthz"),
                    kv("url.scheme", "http"),
                    kv("http.response.status_code", 200),
                    kv("server.address", ip),
                    kv("server.port", i64::from(def.port)),
                    kv("client.address", node_ip),
                    kv("user_agent.original", "kube-probe/1.33"),
                    kv("network.protocol.version", "1.1"),
                ],
            ),
        };
        let kind = SpanKind::Server;
        self.fill(
            index,
            None,
            name,
            kind,
            start,
            end,
            attributes,
            None,
            Vec::new(),
        );
    }

    fn server_attributes(
        &mut self,
        o: O,
        pod: usize,
        code: u16,
        caller: Option<&Caller>,
        cache_miss: bool,
    ) -> Vec<KeyValue> {
        let op = op(o);
        let def = service(op.svc);
        let mut a = Vec::with_capacity(16);
        let edge = caller.is_none();
        let client_ip = match caller.and_then(|c| c.from) {
            Some((svc, pod)) => self.w.pods[svc as usize][pod].ip.clone(),
            None => self.ctx.client_ip.clone(),
        };
        match (op.kind, def.grpc) {
            (OpKind::Consumer { topic }, _) => {
                a.push(kv("messaging.system", "kafka"));
                a.push(kv("messaging.destination.name", topic));
                a.push(kv("messaging.operation.type", "process"));
                a.push(kv("messaging.operation.name", "process"));
                a.push(kv("messaging.consumer.group.name", def.name));
                a.push(kv("messaging.kafka.message.key", self.ctx.order_id.clone()));
                self.w.kafka_offset += 1;
                a.push(kv("messaging.kafka.offset", self.w.kafka_offset));
            }
            (OpKind::Server, Some(grpc)) => {
                a.push(kv("rpc.system", "grpc"));
                a.push(kv("rpc.service", grpc));
                a.push(kv("rpc.method", op.route));
                a.push(kv("rpc.grpc.status_code", grpc_code(Outcome::Code(code))));
                a.push(kv(
                    "server.address",
                    self.w.pods[op.svc as usize][pod].ip.clone(),
                ));
                a.push(kv("server.port", i64::from(def.port)));
                a.push(kv("client.address", client_ip));
            }
            (OpKind::Server, None) => {
                a.push(kv("http.request.method", op.method));
                a.push(kv("http.route", op.route));
                a.push(kv("url.path", self.ctx.fill(op.route)));
                if o == O::CatList || o == O::GwProducts {
                    let q = format!("category={}&page={}", self.ctx.category, self.ctx.page);
                    a.push(kv("url.query", q));
                }
                a.push(kv("http.response.status_code", i64::from(code)));
                let host = match def.public_host {
                    Some(host) => host.to_owned(),
                    None => format!("{}.{}.svc.cluster.local", def.name, def.namespace),
                };
                a.push(kv("server.address", host));
                a.push(kv(
                    "server.port",
                    if edge { 443 } else { i64::from(def.port) },
                ));
                a.push(kv("url.scheme", if edge { "https" } else { "http" }));
                a.push(kv(
                    "network.protocol.version",
                    if edge { "2" } else { "1.1" },
                ));
                a.push(kv("client.address", client_ip));
                if edge {
                    let agents = if op.svc == Svc::Gateway {
                        USER_AGENTS_MOBILE
                    } else {
                        USER_AGENTS_WEB
                    };
                    let agent = agents[self.rng().random_range(0..agents.len())];
                    a.push(kv("user_agent.original", agent));
                    let size = self.rng().random_range(300..120_000i64);
                    a.push(kv("http.response.body.size", size));
                }
                if code >= 500 {
                    a.push(kv("error.type", code.to_string()));
                }
            }
        }
        if edge {
            a.push(kv("user.id", self.ctx.user_id.clone()));
            a.push(kv("session.id", self.ctx.session_id.clone()));
            a.push(kv("geo.country.iso_code", self.ctx.country));
        }
        self.app_attributes(o, &mut a);
        if op.miss_rate > 0.0 {
            a.push(kv("app.cache.hit", !cache_miss));
        }
        a
    }

    /// Business attributes, as teams add them by hand.
    fn app_attributes(&mut self, o: O, a: &mut Vec<KeyValue>) {
        match o {
            O::CatGet | O::FeProduct | O::GwProduct => {
                a.push(kv("app.product.id", self.ctx.product_id.clone()));
            }
            O::CartGet | O::FeCart => a.push(kv("app.cart.items", i64::from(self.ctx.cart_items))),
            O::CoPlaceOrder | O::ShipConsume | O::EmailConsume => {
                a.push(kv("app.order.id", self.ctx.order_id.clone()));
                a.push(kv("app.order.items", i64::from(self.ctx.cart_items)));
            }
            O::PayCharge => {
                let max = 40_000 * i64::from(self.ctx.cart_items);
                let cents = self.rng().random_range(999..max);
                a.push(kv("app.payment.amount", cents as f64 / 100.0));
                a.push(kv(
                    "app.payment.currency",
                    if self.ctx.country == "GB" {
                        "GBP"
                    } else {
                        "EUR"
                    },
                ));
            }
            O::RecList => {
                let n = self.rng().random_range(4..=12usize);
                let ids: Vec<AnyValue> =
                    (0..n).map(|_| str_value(product_id(self.rng()))).collect();
                a.push(kv("app.recommendation.count", n as i64));
                a.push(KeyValue {
                    key: "app.product.ids".to_owned(),
                    value: Some(AnyValue {
                        value: Some(Value::ArrayValue(ArrayValue { values: ids })),
                    }),
                    ..Default::default()
                });
            }
            _ => {}
        }
    }
}

fn grpc_code(outcome: Outcome) -> i64 {
    match outcome {
        Outcome::Timeout => 4,
        Outcome::Code(c) => match c {
            200..=299 => 0,
            400 | 422 => 3,
            401 => 16,
            402 => 9,
            403 => 7,
            404 => 5,
            409 => 6,
            429 => 8,
            503 | 502 => 14,
            504 => 4,
            _ => 13,
        },
    }
}

fn std_normal(rng: &mut StdRng) -> f64 {
    // Box-Muller; 1 - u keeps the logarithm's argument in (0, 1].
    let u1 = 1.0 - rng.random::<f64>();
    let u2: f64 = rng.random();
    (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
}

/// One of 5000 product ids, skewed towards popular products.
fn product_id(rng: &mut StdRng) -> String {
    let rank = (rng.random::<f64>().powi(3) * 5000.0) as u64;
    format!("P{:07}", (rank * 7919 + 104_729) % 10_000_000)
}

fn k8s_suffix(rng: &mut StdRng, len: usize) -> String {
    (0..len)
        .map(|_| K8S_ALPHABET[rng.random_range(0..K8S_ALPHABET.len())] as char)
        .collect()
}

fn hex16(rng: &mut StdRng) -> String {
    format!("{:016x}", rng.random::<u64>())
}

fn uuid(rng: &mut StdRng) -> String {
    let (a, b): (u64, u64) = (rng.random(), rng.random());
    let b = (b & 0x3fff_ffff_ffff_ffff) | 0x8000_0000_0000_0000;
    let a = (a & 0xffff_ffff_ffff_0fff) | 0x4000;
    format!(
        "{:08x}-{:04x}-{:04x}-{:04x}-{:012x}",
        a >> 32,
        (a >> 16) & 0xffff,
        a & 0xffff,
        b >> 48,
        b & 0xffff_ffff_ffff
    )
}

fn str_value(s: String) -> AnyValue {
    AnyValue {
        value: Some(Value::StringValue(s)),
    }
}

fn kv(key: &str, value: impl IntoValue) -> KeyValue {
    KeyValue {
        key: key.to_owned(),
        value: Some(AnyValue {
            value: Some(value.into_value()),
        }),
        ..Default::default()
    }
}

trait IntoValue {
    fn into_value(self) -> Value;
}

impl IntoValue for &str {
    fn into_value(self) -> Value {
        Value::StringValue(self.to_owned())
    }
}

impl IntoValue for String {
    fn into_value(self) -> Value {
        Value::StringValue(self)
    }
}

impl IntoValue for i64 {
    fn into_value(self) -> Value {
        Value::IntValue(self)
    }
}

impl IntoValue for i32 {
    fn into_value(self) -> Value {
        Value::IntValue(i64::from(self))
    }
}

impl IntoValue for f64 {
    fn into_value(self) -> Value {
        Value::DoubleValue(self)
    }
}

impl IntoValue for bool {
    fn into_value(self) -> Value {
        Value::BoolValue(self)
    }
}

#[cfg(test)]
mod tests {
    use std::collections::{HashMap, HashSet};

    use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
    use prost::Message as _;

    use super::*;
    use crate::loadgen::topology::OPS;

    const BASE: u64 = 1_767_225_600 * 1_000_000_000; // 2026-01-01T00:00:00Z

    fn attr<'a>(attrs: &'a [KeyValue], key: &str) -> Option<&'a Value> {
        attrs
            .iter()
            .find(|kv| kv.key == key)
            .and_then(|kv| kv.value.as_ref()?.value.as_ref())
    }

    fn int_attr(attrs: &[KeyValue], key: &str) -> Option<i64> {
        match attr(attrs, key) {
            Some(Value::IntValue(i)) => Some(*i),
            _ => None,
        }
    }

    fn str_attr<'a>(attrs: &'a [KeyValue], key: &str) -> Option<&'a str> {
        match attr(attrs, key) {
            Some(Value::StringValue(s)) => Some(s),
            _ => None,
        }
    }

    /// Spans of one trace with the service each belongs to.
    fn flatten(trace: &[ResourceSpans]) -> Vec<(String, Span)> {
        trace
            .iter()
            .flat_map(|rs| {
                let resource = rs.resource.as_ref().unwrap();
                let svc = str_attr(&resource.attributes, "service.name")
                    .unwrap()
                    .to_owned();
                rs.scope_spans.iter().flat_map(move |ss| {
                    ss.spans.iter().map({
                        let svc = svc.clone();
                        move |s| (svc.clone(), s.clone())
                    })
                })
            })
            .collect()
    }

    fn traces(seed: u64, n: usize) -> Vec<Vec<(String, Span)>> {
        let mut w = Workload::new(seed, BASE);
        (0..n).map(|_| flatten(&w.next_trace())).collect()
    }

    fn root(trace: &[(String, Span)]) -> &Span {
        let roots: Vec<&Span> = trace
            .iter()
            .map(|(_, s)| s)
            .filter(|s| s.parent_span_id.is_empty())
            .collect();
        assert_eq!(roots.len(), 1, "exactly one root span");
        roots[0]
    }

    #[test]
    fn ops_table_is_in_enum_order() {
        for (i, op) in OPS.iter().enumerate() {
            assert_eq!(op.id as usize, i, "{:?} is at the wrong index", op.id);
        }
    }

    #[test]
    fn same_seed_gives_the_same_bytes() {
        let encode = |seed: u64| {
            let mut w = Workload::new(seed, BASE);
            (0..20)
                .map(|_| {
                    let (resource_spans, _) = w.next_batch(25);
                    ExportTraceServiceRequest { resource_spans }.encode_to_vec()
                })
                .collect::<Vec<_>>()
        };
        let a = encode(7);
        assert_eq!(a, encode(7));
        assert_ne!(a, encode(8));
    }

    #[test]
    fn trace_contents_do_not_depend_on_time_parameters() {
        let shape = |w: &mut Workload| {
            (0..100)
                .flat_map(|_| flatten(&w.next_trace()))
                .map(|(_, s)| {
                    (
                        s.trace_id,
                        s.span_id,
                        s.name,
                        s.end_time_unix_nano - s.start_time_unix_nano,
                    )
                })
                .collect::<Vec<_>>()
        };
        let mut a = Workload::new(3, BASE);
        let mut b = Workload::new(3, BASE + 12_345).with_trace_interval(Duration::from_micros(50));
        assert_eq!(shape(&mut a), shape(&mut b));
    }

    #[test]
    fn traces_start_on_the_configured_schedule() {
        let mut w = Workload::new(1, BASE).with_trace_interval(Duration::from_millis(250));
        for i in 0..50u64 {
            let trace = flatten(&w.next_trace());
            let start = root(&trace).start_time_unix_nano;
            let slot = BASE + i * 250_000_000;
            assert!(
                (slot..slot + 250_000_000).contains(&start),
                "trace {i} starts at {start}"
            );
        }
    }

    #[test]
    fn topology_spans_at_least_eight_services() {
        let services: HashSet<String> = traces(1, 200)
            .into_iter()
            .flatten()
            .map(|(svc, _)| svc)
            .collect();
        assert!(services.len() >= 8, "only {services:?}");
        for expected in [
            "frontend",
            "api-gateway",
            "checkout",
            "payment",
            "catalog",
            "auth",
        ] {
            assert!(
                services.contains(expected),
                "{expected} missing from {services:?}"
            );
        }
    }

    #[test]
    fn ids_are_valid_and_parent_links_consistent() {
        let mut trace_ids = HashSet::new();
        for trace in traces(2, 500) {
            let trace_id = &trace[0].1.trace_id;
            assert_eq!(trace_id.len(), 16);
            assert!(trace_id.iter().any(|&b| b != 0), "all-zero trace id");
            assert!(trace_ids.insert(trace_id.clone()), "duplicate trace id");
            let ids: HashSet<&Vec<u8>> = trace.iter().map(|(_, s)| &s.span_id).collect();
            assert_eq!(ids.len(), trace.len(), "span ids unique within a trace");
            root(&trace);
            for (_, span) in &trace {
                assert_eq!(&span.trace_id, trace_id);
                assert_eq!(span.span_id.len(), 8);
                assert!(span.span_id.iter().any(|&b| b != 0), "all-zero span id");
                assert!(!span.name.is_empty());
                assert!(span.end_time_unix_nano >= span.start_time_unix_nano);
                assert_eq!(span.flags & SAMPLED, SAMPLED);
                if !span.parent_span_id.is_empty() {
                    assert!(
                        ids.contains(&span.parent_span_id),
                        "dangling parent in {}",
                        span.name
                    );
                }
            }
        }
    }

    #[test]
    fn children_lie_within_their_parents() {
        let mut consumers = 0;
        for trace in traces(3, 1000) {
            let by_id: HashMap<&Vec<u8>, &Span> =
                trace.iter().map(|(_, s)| (&s.span_id, s)).collect();
            for (_, span) in &trace {
                let Some(parent) = by_id.get(&span.parent_span_id) else {
                    continue;
                };
                assert!(
                    span.start_time_unix_nano >= parent.start_time_unix_nano,
                    "{}",
                    span.name
                );
                if span.kind == SpanKind::Consumer as i32 {
                    // Asynchronous: starts after the producer span, may outlive the whole trace.
                    assert_eq!(parent.kind, SpanKind::Producer as i32);
                    assert!(span.start_time_unix_nano >= parent.end_time_unix_nano);
                    consumers += 1;
                } else {
                    assert!(
                        span.end_time_unix_nano <= parent.end_time_unix_nano,
                        "{} ends after its parent {}",
                        span.name,
                        parent.name
                    );
                }
            }
        }
        assert!(consumers > 0, "no consumer spans in 1000 traces");
    }

    #[test]
    fn error_and_client_error_rates_are_realistic() {
        let traces = traces(4, 2000);
        let (mut server_errors, mut client_errors, mut exceptions) = (0, 0, 0);
        for trace in &traces {
            let root = root(trace);
            let code = int_attr(&root.attributes, "http.response.status_code")
                .or_else(|| int_attr(&root.attributes, "rpc.grpc.status_code").map(|_| 200))
                .expect("root has a status code");
            let is_error = root
                .status
                .as_ref()
                .is_some_and(|s| s.code == StatusCode::Error as i32);
            assert_eq!(is_error, code >= 500, "root status follows its HTTP code");
            match code {
                500.. => server_errors += 1,
                400..=499 => client_errors += 1,
                _ => {}
            }
            for (_, span) in trace {
                for event in span.events.iter().filter(|e| e.name == "exception") {
                    exceptions += 1;
                    assert!(str_attr(&event.attributes, "exception.type").is_some());
                    assert!(str_attr(&event.attributes, "exception.message").is_some());
                    assert!(event.time_unix_nano >= span.start_time_unix_nano);
                    assert!(event.time_unix_nano <= span.end_time_unix_nano);
                }
            }
        }
        let rate = |n: i32| f64::from(n) / traces.len() as f64;
        // Targets: ~1-3% 5xx and ~5% 4xx at the edge.
        assert!(
            (0.008..=0.04).contains(&rate(server_errors)),
            "5xx rate {}",
            rate(server_errors)
        );
        assert!(
            (0.03..=0.08).contains(&rate(client_errors)),
            "4xx rate {}",
            rate(client_errors)
        );
        assert!(exceptions > 0);
    }

    #[test]
    fn trace_sizes_have_a_long_tail() {
        let mut sizes: Vec<usize> = traces(5, 2000).iter().map(Vec::len).collect();
        let health = sizes.iter().filter(|&&n| n == 1).count();
        assert!(
            (40..=250).contains(&health),
            "{health} single-span health probes"
        );
        sizes.retain(|&n| n > 1);
        sizes.sort_unstable();
        assert!(
            sizes[0] >= 3,
            "smallest request trace has {} spans",
            sizes[0]
        );
        let median = sizes[sizes.len() / 2];
        let max = sizes[sizes.len() - 1];
        assert!((6..=20).contains(&median), "median {median}");
        assert!((30..=MAX_SPANS).contains(&max), "max {max}");
    }

    #[test]
    fn latencies_are_long_tailed() {
        let mut durations: Vec<u64> = traces(6, 3000)
            .into_iter()
            .flatten()
            .filter(|(_, s)| s.name == "GET /api/products/{productId}")
            .map(|(_, s)| s.end_time_unix_nano - s.start_time_unix_nano)
            .collect();
        assert!(durations.len() > 1000);
        durations.sort_unstable();
        let p50 = durations[durations.len() / 2] as f64;
        let p99 = durations[durations.len() * 99 / 100] as f64;
        assert!(
            (5.0..=40.0).contains(&(p99 / p50)),
            "p99/p50 = {}",
            p99 / p50
        );
    }

    #[test]
    fn spans_carry_semantic_convention_attributes() {
        let all: Vec<(String, Span)> = traces(7, 1000).into_iter().flatten().collect();
        let has = |pred: &dyn Fn(&Span) -> bool| all.iter().any(|(_, s)| pred(s));
        assert!(has(&|s| str_attr(&s.attributes, "db.system")
            == Some("postgresql")
            && str_attr(&s.attributes, "db.statement")
                .is_some_and(|q| q.contains("$1"))));
        assert!(has(
            &|s| str_attr(&s.attributes, "db.system") == Some("redis")
        ));
        assert!(has(&|s| s.kind == SpanKind::Producer as i32
            && str_attr(&s.attributes, "messaging.system") == Some("kafka")));
        assert!(has(
            &|s| str_attr(&s.attributes, "http.route") == Some("/healthz")
        ));
        assert!(has(
            &|s| str_attr(&s.attributes, "rpc.system") == Some("grpc")
        ));
        assert!(has(&|s| matches!(
            attr(&s.attributes, "app.product.ids"),
            Some(Value::ArrayValue(_))
        )));
        assert!(has(&|s| matches!(
            attr(&s.attributes, "app.payment.amount"),
            Some(Value::DoubleValue(_))
        )));
        // A concrete path for a templated route.
        assert!(has(&|s| str_attr(&s.attributes, "http.route")
            == Some("/api/products/{productId}")
            && str_attr(&s.attributes, "url.path")
                .is_some_and(|p| p.starts_with("/api/products/P"))));
        let users: HashSet<&str> = all
            .iter()
            .filter_map(|(_, s)| str_attr(&s.attributes, "user.id"))
            .collect();
        assert!(
            users.len() > 500,
            "user.id should be high-cardinality, got {}",
            users.len()
        );
    }

    #[test]
    fn resources_describe_pods() {
        let mut w = Workload::new(8, BASE);
        let mut pods: HashMap<String, HashSet<String>> = HashMap::new();
        for _ in 0..300 {
            for rs in w.next_trace() {
                let attrs = &rs.resource.as_ref().unwrap().attributes;
                for key in [
                    "service.name",
                    "service.version",
                    "service.namespace",
                    "deployment.environment.name",
                    "host.name",
                    "k8s.namespace.name",
                    "k8s.pod.name",
                    "telemetry.sdk.name",
                    "telemetry.sdk.language",
                    "telemetry.sdk.version",
                ] {
                    assert!(str_attr(attrs, key).is_some(), "resource lacks {key}");
                }
                let scope = rs.scope_spans[0].scope.as_ref().unwrap();
                assert!(!scope.name.is_empty() && !scope.version.is_empty());
                let svc = str_attr(attrs, "service.name").unwrap().to_owned();
                let pod = str_attr(attrs, "k8s.pod.name").unwrap().to_owned();
                assert!(pod.starts_with(&svc));
                pods.entry(svc).or_default().insert(pod);
            }
        }
        assert!(
            pods.values().any(|p| p.len() >= 3),
            "some services run several pods"
        );
    }

    #[test]
    fn batches_merge_spans_by_resource() {
        let mut w = Workload::new(9, BASE);
        let (resource_spans, spans) = w.next_batch(50);
        let counted: usize = resource_spans
            .iter()
            .map(|rs| rs.scope_spans[0].spans.len())
            .sum();
        assert_eq!(counted, spans);
        let resources: HashSet<Vec<u8>> = resource_spans
            .iter()
            .map(|rs| rs.resource.as_ref().unwrap().encode_to_vec())
            .collect();
        assert_eq!(
            resources.len(),
            resource_spans.len(),
            "one ResourceSpans per resource"
        );
    }

    #[test]
    fn otlp_json_uses_hex_ids() {
        let mut w = Workload::new(10, BASE);
        let request = ExportTraceServiceRequest {
            resource_spans: w.next_batch(5).0,
        };
        let json = serde_json::to_value(&request).unwrap();
        let span = &json["resourceSpans"][0]["scopeSpans"][0]["spans"][0];
        let trace_id = span["traceId"].as_str().unwrap();
        assert_eq!(trace_id.len(), 32);
        assert!(trace_id.chars().all(|c| c.is_ascii_hexdigit()));
        assert_eq!(span["spanId"].as_str().unwrap().len(), 16);
        let back: ExportTraceServiceRequest = serde_json::from_value(json).unwrap();
        assert_eq!(back, request);
    }

    #[test]
    fn templates_are_filled_from_the_trace_context() {
        let mut rng = StdRng::seed_from_u64(1);
        let ctx = TraceCtx::new(&mut rng);
        let filled = ctx.fill("/api/users/{userId}/orders/{orderId}?{unknown}");
        assert_eq!(
            filled,
            format!(
                "/api/users/{}/orders/{}?{{unknown}}",
                ctx.user_id, ctx.order_id
            )
        );
    }
}
