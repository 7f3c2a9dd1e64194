//! Tests of the tail sampler core: bands, forced decisions, consistency, late spans, limits,
//! hot reload, the decision log and upstream sampling.

use std::sync::Arc;
use std::time::{Duration, Instant};

use arrow::array::{AsArray, RecordBatch};
use arrow::datatypes::Float64Type;
use tracelake_proto::columns;
use tracelake_proto::otlp::common::v1::{any_value, AnyValue, KeyValue};
use tracelake_proto::otlp::resource::v1::Resource;
use tracelake_proto::otlp::trace::v1::{
    status, ResourceSpans, ScopeSpans, Span, Status as SpanStatus,
};

use super::config::SamplingConfig;
use super::*;

/// One span of a test trace.
#[derive(Clone)]
struct S {
    service: &'static str,
    route: &'static str,
    http: i64,
    error: bool,
    ms: u64,
    root: bool,
    trace_state: &'static str,
}

fn s(service: &'static str, route: &'static str, http: i64) -> S {
    S {
        service,
        route,
        http,
        error: false,
        ms: 5,
        root: true,
        trace_state: "",
    }
}

fn kv(k: &str, v: any_value::Value) -> KeyValue {
    KeyValue {
        key: k.into(),
        value: Some(AnyValue { value: Some(v) }),
        ..Default::default()
    }
}

fn id_bytes(trace: u128) -> Vec<u8> {
    trace.to_be_bytes().to_vec()
}

fn request(spans: &[(u128, S)]) -> RecordBatch {
    let rs: Vec<ResourceSpans> = spans
        .iter()
        .enumerate()
        .map(|(i, (trace, sp))| ResourceSpans {
            resource: Some(Resource {
                attributes: vec![kv(
                    "service.name",
                    any_value::Value::StringValue(sp.service.into()),
                )],
                ..Default::default()
            }),
            scope_spans: vec![ScopeSpans {
                spans: vec![Span {
                    trace_id: id_bytes(*trace),
                    span_id: (i as u64 + 1).to_be_bytes().to_vec(),
                    parent_span_id: if sp.root { vec![] } else { vec![9; 8] },
                    name: "op".into(),
                    kind: 2,
                    trace_state: sp.trace_state.into(),
                    start_time_unix_nano: 1_700_000_000_000_000_000,
                    end_time_unix_nano: 1_700_000_000_000_000_000 + sp.ms * 1_000_000,
                    attributes: vec![
                        kv("http.route", any_value::Value::StringValue(sp.route.into())),
                        kv(
                            "http.response.status_code",
                            any_value::Value::IntValue(sp.http),
                        ),
                    ],
                    status: sp.error.then(|| SpanStatus {
                        code: status::StatusCode::Error as i32,
                        message: "boom".into(),
                    }),
                    ..Default::default()
                }],
                ..Default::default()
            }],
            ..Default::default()
        })
        .collect();
    tracelake_proto::resource_spans_to_batch(&rs).unwrap()
}

/// The issue's example rules, changed by `f`.
fn rules(f: impl FnOnce(&mut SamplingConfig)) -> Arc<Rules> {
    let mut c = config::issue_example();
    f(&mut c);
    Arc::new(c.compile().unwrap())
}

/// Drives a core with a virtual clock and collects what it releases.
struct Harness {
    core: TailCore,
    t0: Instant,
    now: Instant,
    seq: u64,
    kept: Vec<RecordBatch>,
    decisions: Vec<Decision>,
}

impl Harness {
    fn new(rules: Arc<Rules>) -> Self {
        let t0 = Instant::now();
        Self {
            core: TailCore::new(rules, t0),
            t0,
            now: t0,
            seq: 0,
            kept: Vec::new(),
            decisions: Vec::new(),
        }
    }

    fn send(&mut self, spans: &[(u128, S)]) {
        self.seq += 1;
        let rules = Arc::clone(self.core.rules());
        let prepared = prepare(request(spans), &rules.config.upstream_rate_attributes).unwrap();
        if let Some(b) = self.core.admit("t", self.seq, prepared, self.now) {
            self.kept.push(b);
        }
    }

    fn advance(&mut self, d: Duration) {
        self.now += d;
        self.tick(false);
    }

    fn tick(&mut self, all: bool) {
        self.core.adjust(self.now);
        let due = self.core.take_due(self.now, all);
        let rules = Arc::clone(self.core.rules());
        let table = self.core.probabilities();
        let mut decided = Vec::new();
        for d in due {
            let decision = decide(&rules, &table, &d);
            self.decisions.push(decision.clone());
            decided.push((d, decision));
        }
        self.kept
            .extend(release_kept(&decided).into_iter().map(|r| r.spans));
        self.kept
            .extend(self.core.complete(decided).into_iter().map(|r| r.spans));
    }

    fn decision(&self, trace: u128) -> &Decision {
        self.decisions
            .iter()
            .find(|d| d.trace_id == trace)
            .unwrap_or_else(|| panic!("trace {trace} not decided"))
    }

    /// (trace id, adjusted_count, sampling_rule) of every kept span.
    fn kept_rows(&self) -> Vec<(u128, f64, String)> {
        let mut out = Vec::new();
        for b in &self.kept {
            let ids = b
                .column_by_name(columns::TRACE_ID)
                .unwrap()
                .as_binary::<i32>();
            let adj = b
                .column_by_name(columns::ADJUSTED_COUNT)
                .unwrap()
                .as_primitive::<Float64Type>();
            let rule = b
                .column_by_name(columns::SAMPLING_RULE)
                .unwrap()
                .as_string::<i32>();
            for i in 0..b.num_rows() {
                out.push((
                    trace_id_of(ids.value(i)),
                    adj.value(i),
                    rule.value(i).to_string(),
                ));
            }
        }
        out
    }
}

/// Trace ids spread over the id space.
fn tid(i: u64) -> u128 {
    (u128::from(i) + 1).wrapping_mul(0x9e37_79b9_7f4a_7c15_f39c_c060_5ced_c835)
}

#[test]
fn nothing_is_decided_before_the_wait_and_everything_after() {
    let mut h = Harness::new(rules(|_| {}));
    h.send(&[(tid(1), s("payment", "/api/payment/charge", 200))]);
    h.advance(Duration::from_secs(3));
    h.send(&[(
        tid(1),
        S {
            root: false,
            ..s("payment", "/api/payment/charge", 200)
        },
    )]);
    h.advance(Duration::from_secs(3));
    // The second span pushed the deadline to 3 + 5 s.
    assert!(h.decisions.is_empty());
    assert_eq!(h.core.min_seq(), Some(1));
    h.advance(Duration::from_secs(3));
    assert_eq!(h.decisions.len(), 1);
    assert_eq!(h.core.min_seq(), None);
    assert_eq!(h.decisions[0].spans, 2);
}

#[test]
fn the_hard_cap_decides_a_trace_that_keeps_growing() {
    let mut h = Harness::new(rules(|c| c.max_trace_wait = Duration::from_secs(12)));
    for _ in 0..10 {
        h.send(&[(tid(1), s("cart", "/api/cart", 200))]);
        h.advance(Duration::from_secs(2));
    }
    let d = h.decision(tid(1));
    assert!(
        d.spans <= 7,
        "decided after at most 12 s: {} spans",
        d.spans
    );
}

#[test]
fn bands_set_probability_and_rule() {
    let mut h = Harness::new(rules(|_| {}));
    let slow_payment = S {
        ms: 400,
        ..s("payment", "/api/payment/charge", 200)
    };
    h.send(&[(tid(1), slow_payment)]); // 0.5 + 0.3 + 0.2 = 1.0: high
    h.send(&[(tid(2), s("payment", "/api/payment/charge", 200))]); // 0.5: mid
    h.send(&[(tid(3), s("cart", "/api/cart", 200))]); // 0.1: low
    h.send(&[(tid(4), s("cart", "/healthz", 200))]); // forced drop
    h.advance(Duration::from_secs(6));
    let band = |t| (h.decision(t).band, h.decision(t).p);
    assert_eq!(band(tid(1)), (Some(Band::High), 1.0));
    assert_eq!(band(tid(2)), (Some(Band::Mid), 0.1));
    assert_eq!(band(tid(3)), (Some(Band::Low), 0.001));
    assert_eq!(band(tid(4)), (Some(Band::ForceDrop), 0.0));
    assert!(!h.decision(tid(4)).keep);
    let rows = h.kept_rows();
    assert!(rows.contains(&(tid(1), 1.0, "high".into())));
    for d in &h.decisions {
        assert_eq!(d.keep, trace_random(d.trace_id) < d.p, "consistent rule");
    }
}

#[test]
fn errored_traces_are_kept_whole_even_on_dropped_routes() {
    let mut h = Harness::new(rules(|_| {}));
    let err = S {
        error: true,
        root: false,
        ..s("recommendation", "/healthz", 500)
    };
    // A low-weight trace whose error arrives in a later request.
    h.send(&[(tid(7), s("recommendation", "/healthz", 200))]);
    h.advance(Duration::from_secs(1));
    h.send(&[(tid(7), err.clone()), (tid(7), err)]);
    h.advance(Duration::from_secs(10));
    let d = h.decision(tid(7));
    assert_eq!(d.band, Some(Band::ForceKeep));
    assert_eq!(&*d.rule, "force_keep:status = error");
    let rows = h.kept_rows();
    assert_eq!(rows.len(), 3, "all three spans kept");
    assert!(rows.iter().all(|r| r.1 == 1.0));
}

#[test]
fn a_5xx_without_force_keep_still_blocks_a_forced_drop() {
    let mut h = Harness::new(rules(|c| c.force_keep.clear()));
    h.send(&[(tid(1), s("cart", "/healthz", 503))]);
    h.advance(Duration::from_secs(6));
    assert_ne!(h.decision(tid(1)).band, Some(Band::ForceDrop));
}

#[test]
fn the_middle_band_keeps_about_its_probability() {
    let mut h = Harness::new(rules(|_| {}));
    let n = 20_000;
    for i in 0..n {
        h.send(&[(tid(i), s("payment", "/api/payment/charge", 200))]);
    }
    h.advance(Duration::from_secs(6));
    let kept = h.decisions.iter().filter(|d| d.keep).count() as f64;
    // Binomial(20000, 0.1): sd = 42.4; allow 5 sd.
    assert!((kept - 2000.0).abs() < 5.0 * 42.5, "kept {kept}");
    // And the weighted count is unbiased.
    let weighted: f64 = h.kept_rows().iter().map(|r| r.1).sum();
    assert!(
        (weighted - n as f64).abs() / (n as f64) < 0.11,
        "{weighted}"
    );
}

#[test]
fn two_samplers_decide_the_same_traces_the_same_way() {
    let run = || {
        let mut h = Harness::new(rules(|_| {}));
        for i in 0..2000 {
            let http = [200, 404, 500, 200][i as usize % 4];
            h.send(&[(tid(i), s("payment", "/api/payment/x", http))]);
        }
        h.advance(Duration::from_secs(6));
        let mut v: Vec<_> = h
            .decisions
            .iter()
            .map(|d| (d.trace_id, d.keep, d.p))
            .collect();
        v.sort_by_key(|x| x.0);
        v
    };
    assert_eq!(run(), run());
}

#[test]
fn late_spans_follow_the_remembered_decision() {
    let mut h = Harness::new(rules(|_| {}));
    let err = S {
        error: true,
        ..s("cart", "/api/cart", 500)
    };
    h.send(&[(tid(1), err)]);
    h.send(&[(tid(2), s("cart", "/healthz", 200))]);
    h.advance(Duration::from_secs(6));
    let before = h.kept.len();
    h.send(&[(
        tid(1),
        S {
            root: false,
            ..s("cart", "/api/cart", 200)
        },
    )]);
    h.send(&[(
        tid(2),
        S {
            root: false,
            ..s("cart", "/healthz", 200)
        },
    )]);
    assert_eq!(
        h.kept.len(),
        before + 1,
        "the kept trace's late span is released at once"
    );
    let st = h.core.status();
    assert_eq!(st.stats.late_spans_kept, 1);
    assert_eq!(st.stats.late_spans_dropped, 1);
    assert_eq!(st.buffered_traces, 0, "late spans are not buffered again");
    let rows = h.kept_rows();
    assert_eq!(rows.iter().filter(|r| r.0 == tid(1)).count(), 2);
}

#[test]
fn a_full_buffer_decides_the_oldest_early_and_loses_nothing() {
    let mut h = Harness::new(rules(|c| c.max_traces = 100));
    for i in 0..250 {
        h.send(&[(
            tid(i),
            S {
                error: true,
                ..s("cart", "/a", 500)
            },
        )]);
        h.now += Duration::from_millis(1);
    }
    h.tick(false);
    assert_eq!(h.decisions.len(), 150);
    assert!(
        h.decisions.iter().all(|d| d.trace_id != tid(249)),
        "newest stay"
    );
    assert!(
        h.decisions.iter().any(|d| d.trace_id == tid(0)),
        "oldest go first"
    );
    assert_eq!(h.core.status().stats.decided_early, 150);
    h.tick(true);
    assert_eq!(h.kept_rows().len(), 250, "every errored span kept");
}

#[test]
fn reload_keeps_buffered_traces_and_decides_them_with_new_rules() {
    let mut h = Harness::new(rules(|_| {}));
    for i in 0..50 {
        h.send(&[(tid(i), s("cart", "/api/cart", 200))]);
    }
    h.advance(Duration::from_secs(1));
    // Make everything on /api/cart forced-keep.
    h.core.set_rules(rules(|c| {
        c.force_keep.push(config::ForceKeepConfig {
            when: "route = /api/cart".into(),
            name: Some("cart".into()),
        })
    }));
    assert_eq!(h.core.status().buffered_traces, 50);
    h.advance(Duration::from_secs(6));
    assert_eq!(h.decisions.len(), 50);
    assert!(h.decisions.iter().all(|d| d.keep && &*d.rule == "cart"));
}

#[test]
fn upstream_sampling_multiplies_into_adjusted_count() {
    let mut h = Harness::new(rules(|_| {}));
    let sampled = S {
        error: true,
        trace_state: "ot=th:c",
        ..s("cart", "/a", 500)
    };
    h.send(&[(tid(1), sampled)]);
    h.advance(Duration::from_secs(6));
    assert_eq!(h.kept_rows()[0].1, 4.0, "1/0.25 upstream x 1/1 here");
    let mut h = Harness::new(rules(|_| {}));
    h.send(&[(
        tid(2),
        S {
            trace_state: "ot=th:8",
            ..s("payment", "/api/payment/a", 200)
        },
    )]);
    h.advance(Duration::from_secs(6));
    let d = h.decision(tid(2));
    if d.keep {
        assert_eq!(h.kept_rows()[0].1, 2.0 / d.p);
    }
}

#[test]
fn disabled_sampling_passes_spans_through_untouched() {
    let mut h = Harness::new(rules(|c| c.enabled = false));
    h.send(&[
        (tid(1), s("cart", "/healthz", 200)),
        (tid(2), s("cart", "/a", 200)),
    ]);
    let rows = h.kept_rows();
    assert_eq!(rows.len(), 2);
    assert!(rows.iter().all(|r| r.1 == 1.0));
    assert_eq!(h.core.min_seq(), None);
}

#[test]
fn decisions_survive_the_wal_codec_and_seed_a_new_core() {
    let d = |t, keep, p, rule: &str| Decision {
        tenant: Arc::from("acme"),
        trace_id: t,
        p,
        keep,
        rule: Arc::from(rule),
        band: None,
        key: None,
        spans: 1,
        weight: 0.0,
    };
    let decisions = [
        d(tid(1), true, 0.1, "mid"),
        d(tid(2), false, 0.0, "route:x"),
    ];
    let bytes = encode_decisions(decisions.iter());
    let back = decode_decisions(&bytes).unwrap();
    assert_eq!(back.len(), 2);
    assert_eq!(back[0].trace_id, tid(1));
    assert_eq!(back[0].p, 0.1);
    assert!(back[0].keep && !back[1].keep);
    assert_eq!(&*back[1].rule, "route:x");
    assert!(decode_decisions(&bytes[..bytes.len() - 1]).is_err());
    assert!(decode_decisions(&[9]).is_err());

    let mut core = TailCore::new(rules(|_| {}), Instant::now());
    for l in back {
        core.remember(&l.tenant, l.trace_id, l.p, l.keep, l.rule);
    }
    let prepared = prepare(request(&[(tid(1), s("cart", "/a", 200))]), &[]).unwrap();
    let out = core.admit("acme", 5, prepared, Instant::now()).unwrap();
    let adj = out
        .column_by_name(columns::ADJUSTED_COUNT)
        .unwrap()
        .as_primitive::<Float64Type>();
    assert!((adj.value(0) - 10.0).abs() < 1e-9);
    let prepared = prepare(request(&[(tid(2), s("cart", "/a", 200))]), &[]).unwrap();
    assert!(core.admit("acme", 6, prepared, Instant::now()).is_none());
    assert_eq!(core.min_seq(), None);
}

#[test]
fn a_budget_adapts_the_middle_band() {
    let mut h = Harness::new(rules(|c| {
        c.budget_spans_per_sec = Some(50.0);
        c.decision_wait = Duration::from_millis(100);
        c.max_trace_wait = Duration::from_millis(100);
    }));
    // 1000 mid-band traces per second for 20 s.
    let mut i = 0;
    for _ in 0..200 {
        for _ in 0..100 {
            h.send(&[(tid(i), s("payment", "/api/payment/charge", 200))]);
            i += 1;
        }
        h.advance(Duration::from_millis(100));
    }
    let late: Vec<_> = h.decisions[h.decisions.len() - 5000..]
        .iter()
        .filter(|d| d.keep)
        .collect();
    // Last 5 s: budget 50/s -> about 250 kept.
    let rate = late.len() as f64 / 5.0;
    assert!((rate - 50.0).abs() < 15.0, "kept {rate}/s against 50/s");
    assert!(h.core.status().keys[0].probability < 0.1);
    let _ = h.t0;
}

#[test]
fn a_late_error_of_a_dropped_trace_is_still_kept() {
    let mut h = Harness::new(rules(|_| {}));
    h.send(&[(tid(3), s("cart", "/healthz", 200))]);
    h.advance(Duration::from_secs(6));
    assert!(!h.decision(tid(3)).keep);
    let err = S {
        error: true,
        root: false,
        ..s("cart", "/db", 200)
    };
    h.send(&[(tid(3), err)]);
    h.send(&[(
        tid(3),
        S {
            root: false,
            ..s("cart", "/db", 200)
        },
    )]);
    let rows = h.kept_rows();
    assert_eq!(rows.len(), 2, "the error and what follows it are kept");
    assert!(rows
        .iter()
        .all(|r| r.1 == 1.0 && r.2 == "force_keep:status = error"));
}

#[test]
fn release_takes_each_record_once_and_keeps_per_trace_stamps() {
    let mut h = Harness::new(rules(|_| {}));
    let high = S {
        ms: 400,
        ..s("payment", "/api/payment/charge", 200)
    };
    // One request with three traces: two kept (forced, high), one dropped (health).
    h.send(&[
        (
            tid(1),
            S {
                error: true,
                ..s("cart", "/a", 500)
            },
        ),
        (tid(2), high),
        (tid(3), s("cart", "/healthz", 200)),
    ]);
    h.advance(Duration::from_secs(6));
    assert_eq!(h.kept.len(), 1, "one batch for the record");
    let mut rows = h.kept_rows();
    rows.sort_by_key(|r| r.0);
    let mut want = vec![
        (tid(1), 1.0, "force_keep:status = error".to_string()),
        (tid(2), 1.0, "high".to_string()),
    ];
    want.sort_by_key(|r| r.0);
    assert_eq!(rows, want);
}
