//! Hot paths of the span data model: OTLP -> Arrow (ingest), Arrow -> OTLP (trace lookup) and
//! OTLP/JSON decoding, on 10k realistic spans.
//!
//! Run with `cargo bench -p tracelake-proto --bench convert`.

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use tracelake_proto::otlp::common::v1::{
    any_value::Value, AnyValue, ArrayValue, InstrumentationScope, KeyValue,
};
use tracelake_proto::otlp::resource::v1::Resource;
use tracelake_proto::otlp::trace::v1::{span, ResourceSpans, ScopeSpans, Span, Status};
use tracelake_proto::{batches_to_traces_data, json, resource_spans_to_batch};

const SPANS: usize = 10_000;
const SERVICES: usize = 10;
const SPANS_PER_TRACE: usize = 20;

fn kv(key: &str, value: Value) -> KeyValue {
    KeyValue {
        key: key.into(),
        value: Some(AnyValue { value: Some(value) }),
        key_strindex: 0,
    }
}

fn s(value: impl Into<String>) -> Value {
    Value::StringValue(value.into())
}

/// 10 services, each with a typical k8s resource and one HTTP scope; spans have ~10 attributes,
/// every fifth an event, every tenth a link.
fn realistic_spans() -> Vec<ResourceSpans> {
    let start = 1_700_000_000_000_000_000u64;
    (0..SERVICES)
        .map(|service| {
            let resource = Resource {
                attributes: vec![
                    kv("service.name", s(format!("service-{service}"))),
                    kv("service.version", s("1.4.2")),
                    kv("deployment.environment.name", s("production")),
                    kv("k8s.namespace.name", s("shop")),
                    kv(
                        "k8s.pod.name",
                        s(format!("service-{service}-7d9f8b6c5-x2x4z")),
                    ),
                    kv(
                        "k8s.node.name",
                        s("ip-10-0-12-34.eu-west-1.compute.internal"),
                    ),
                    kv("telemetry.sdk.language", s("rust")),
                    kv("telemetry.sdk.version", s("0.33.0")),
                ],
                dropped_attributes_count: 0,
                entity_refs: vec![],
            };
            let spans = (0..SPANS / SERVICES)
                .map(|i| {
                    let n = (service * SPANS / SERVICES + i) as u64;
                    let trace = n / SPANS_PER_TRACE as u64;
                    let mut trace_id = [0u8; 16];
                    trace_id[..8].copy_from_slice(&trace.to_be_bytes());
                    trace_id[8..].copy_from_slice(&(trace * 7919).to_be_bytes());
                    let begin = start + n * 1_000_000;
                    Span {
                        trace_id: trace_id.to_vec(),
                        span_id: (n + 1).to_be_bytes().to_vec(),
                        parent_span_id: if n.is_multiple_of(SPANS_PER_TRACE as u64) {
                            vec![]
                        } else {
                            n.to_be_bytes().to_vec()
                        },
                        flags: 0x101,
                        name: format!("GET /api/v1/items/{{id}} {}", i % 7),
                        kind: span::SpanKind::Server as i32,
                        start_time_unix_nano: begin,
                        end_time_unix_nano: begin + 3_000_000 + n % 1_000,
                        attributes: vec![
                            kv("http.request.method", s("GET")),
                            kv("http.route", s("/api/v1/items/{id}")),
                            kv("url.path", s(format!("/api/v1/items/{n}"))),
                            kv("url.scheme", s("https")),
                            kv("http.response.status_code", Value::IntValue(200)),
                            kv("server.address", s("api.example.com")),
                            kv("network.protocol.version", s("1.1")),
                            kv("user_agent.original", s("Mozilla/5.0 (X11; Linux x86_64)")),
                            kv("app.cache_hit", Value::BoolValue(n.is_multiple_of(3))),
                            kv(
                                "app.items",
                                Value::ArrayValue(ArrayValue {
                                    values: vec![AnyValue {
                                        value: Some(Value::IntValue(n as i64)),
                                    }],
                                }),
                            ),
                        ],
                        events: if n.is_multiple_of(5) {
                            vec![span::Event {
                                time_unix_nano: begin + 1_000,
                                name: "cache.miss".into(),
                                attributes: vec![kv("cache.key", s(format!("item:{n}")))],
                                dropped_attributes_count: 0,
                            }]
                        } else {
                            vec![]
                        },
                        links: if n.is_multiple_of(10) {
                            vec![span::Link {
                                trace_id: trace_id.to_vec(),
                                span_id: vec![9; 8],
                                ..Default::default()
                            }]
                        } else {
                            vec![]
                        },
                        status: Some(Status::default()),
                        ..Default::default()
                    }
                })
                .collect();
            ResourceSpans {
                resource: Some(resource),
                scope_spans: vec![ScopeSpans {
                    scope: Some(InstrumentationScope {
                        name: "opentelemetry-http".into(),
                        version: "0.33.0".into(),
                        ..Default::default()
                    }),
                    spans,
                    schema_url: String::new(),
                }],
                schema_url: "https://opentelemetry.io/schemas/1.26.0".into(),
            }
        })
        .collect()
}

fn convert(c: &mut Criterion) {
    let input = realistic_spans();
    let batch = resource_spans_to_batch(&input).expect("encode");
    let body = serde_json::json!({ "resourceSpans": json::resource_spans_to_json(&input) })
        .to_string()
        .into_bytes();

    let mut group = c.benchmark_group("convert");
    group.throughput(Throughput::Elements(SPANS as u64));
    group.bench_function("otlp_to_arrow_10k", |b| {
        b.iter(|| resource_spans_to_batch(black_box(&input)).expect("encode"))
    });
    group.bench_function("arrow_to_otlp_10k", |b| {
        b.iter(|| batches_to_traces_data(black_box(std::slice::from_ref(&batch))).expect("decode"))
    });
    group.bench_function("otlp_json_decode_10k", |b| {
        b.iter(|| json::decode_export_request(black_box(&body)).expect("json"))
    });
    group.finish();
}

criterion_group!(benches, convert);
criterion_main!(benches);
