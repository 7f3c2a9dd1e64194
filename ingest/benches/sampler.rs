//! The tail sampler's cost per span: splitting a request by trace (`prepare`), scoring and
//! deciding traces (`decide`), and the whole path through the core (admit, take_due, decide,
//! complete), on 10k spans in 500 traces of 20 spans.
//!
//! Run with `cargo bench -p tracelake-ingest --bench sampler`.

use std::hint::black_box;
use std::sync::Arc;
use std::time::Instant;

use arrow::array::RecordBatch;
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use tracelake_ingest::sampling::{decide, prepare, release_kept, SamplingConfig, TailCore};
use tracelake_proto::otlp::common::v1::{any_value::Value, AnyValue, KeyValue};
use tracelake_proto::otlp::resource::v1::Resource;
use tracelake_proto::otlp::trace::v1::{span, status, ResourceSpans, ScopeSpans, Span, Status};

const SPANS: usize = 10_000;
const SPANS_PER_TRACE: usize = 20;
const SERVICES: [&str; 5] = ["frontend", "checkout", "payment", "cart", "recommendation"];
const ROUTES: [&str; 6] = [
    "/api/checkout/orders",
    "/api/payment/charge",
    "/api/cart/{userId}",
    "/api/products/{productId}",
    "/api/users/{userId}",
    "/healthz",
];

fn kv(key: &str, value: Value) -> KeyValue {
    KeyValue {
        key: key.into(),
        value: Some(AnyValue { value: Some(value) }),
        key_strindex: 0,
    }
}

fn spans() -> RecordBatch {
    let start = 1_700_000_000_000_000_000u64;
    let rs: Vec<ResourceSpans> = SERVICES
        .iter()
        .enumerate()
        .map(|(si, service)| {
            let spans = (0..SPANS / SERVICES.len())
                .map(|i| {
                    let n = (i * SERVICES.len() + si) as u64;
                    let trace = n / SPANS_PER_TRACE as u64;
                    let mut trace_id = [0u8; 16];
                    trace_id[..8].copy_from_slice(&trace.to_be_bytes());
                    trace_id[8..].copy_from_slice(&(trace.wrapping_mul(0x9e37_79b9)).to_be_bytes());
                    let http = if n.is_multiple_of(97) {
                        503
                    } else if n.is_multiple_of(13) {
                        404
                    } else {
                        200
                    };
                    Span {
                        trace_id: trace_id.to_vec(),
                        span_id: (n + 1).to_be_bytes().to_vec(),
                        parent_span_id: if n.is_multiple_of(SPANS_PER_TRACE as u64) {
                            vec![]
                        } else {
                            n.to_be_bytes().to_vec()
                        },
                        name: "GET".into(),
                        kind: span::SpanKind::Server as i32,
                        start_time_unix_nano: start + n * 1_000_000,
                        end_time_unix_nano: start + n * 1_000_000 + (n % 500) * 1_000_000,
                        attributes: vec![
                            kv("http.request.method", Value::StringValue("GET".into())),
                            kv(
                                "http.route",
                                Value::StringValue(ROUTES[(n % 6) as usize].into()),
                            ),
                            kv("http.response.status_code", Value::IntValue(http)),
                            kv(
                                "server.address",
                                Value::StringValue("api.example.com".into()),
                            ),
                            kv(
                                "user_agent.original",
                                Value::StringValue("Mozilla/5.0".into()),
                            ),
                        ],
                        status: Some(Status {
                            code: if http >= 500 {
                                status::StatusCode::Error as i32
                            } else {
                                0
                            },
                            message: String::new(),
                        }),
                        ..Default::default()
                    }
                })
                .collect();
            ResourceSpans {
                resource: Some(Resource {
                    attributes: vec![kv("service.name", Value::StringValue((*service).into()))],
                    ..Default::default()
                }),
                scope_spans: vec![ScopeSpans {
                    spans,
                    ..Default::default()
                }],
                schema_url: String::new(),
            }
        })
        .collect();
    tracelake_proto::resource_spans_to_batch(&rs).unwrap()
}

fn config() -> SamplingConfig {
    let text = r#"
enabled = true
[[routes]]
regex = "^/api/(checkout|payment)/.*"
score = 1.0
slow_threshold = "300ms"
[[routes]]
regex = "^/api/cart"
score = 0.6
[[routes]]
regex = "^/(healthz|readyz|metrics)$"
force = "drop"
[tiers]
services = { payment = "critical", checkout = "critical", recommendation = "best_effort" }
"#;
    toml::from_str(text).unwrap()
}

fn bench(c: &mut Criterion) {
    let batch = spans();
    let rules = Arc::new(config().compile().unwrap());
    let attrs = rules.config.upstream_rate_attributes.clone();
    let mut g = c.benchmark_group("sampler");
    g.throughput(Throughput::Elements(SPANS as u64));

    g.bench_function("prepare_10k_spans", |b| {
        b.iter(|| black_box(prepare(batch.clone(), &attrs).unwrap()))
    });

    let now = Instant::now();
    let mut core = TailCore::new(Arc::clone(&rules), now);
    core.admit("t", 1, prepare(batch.clone(), &attrs).unwrap(), now);
    let due = core.take_due(now, true);
    let table = core.probabilities();
    g.bench_function("decide_500_traces_10k_spans", |b| {
        b.iter(|| {
            for d in &due {
                black_box(decide(&rules, &table, d));
            }
        })
    });

    g.bench_function("full_path_10k_spans", |b| {
        b.iter(|| {
            let now = Instant::now();
            let mut core = TailCore::new(Arc::clone(&rules), now);
            let prepared = prepare(batch.clone(), &attrs).unwrap();
            core.admit("t", 1, prepared, now);
            let due = core.take_due(now, true);
            let table = core.probabilities();
            let decided: Vec<_> = due
                .into_iter()
                .map(|d| {
                    let decision = decide(&rules, &table, &d);
                    (d, decision)
                })
                .collect();
            black_box(release_kept(&decided));
            black_box(core.complete(decided))
        })
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
