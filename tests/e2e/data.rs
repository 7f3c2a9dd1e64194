//! OTLP requests with known contents, and a grouping-insensitive comparison.

use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{
    any_value::Value as V, AnyValue, ArrayValue, InstrumentationScope, KeyValue, KeyValueList,
};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::span::{Event, Link};
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span, Status};
use prost::Message;

pub(crate) fn kv(key: &str, value: V) -> KeyValue {
    KeyValue {
        key: key.into(),
        value: Some(AnyValue { value: Some(value) }),
        ..Default::default()
    }
}

pub(crate) fn s(v: &str) -> V {
    V::StringValue(v.into())
}

/// Current time in unix nanoseconds.
pub(crate) fn now_nanos() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64
}

/// A trace id unique to this test run and `n`.
pub(crate) fn trace_id(n: u64) -> Vec<u8> {
    let mut id = now_nanos().to_be_bytes().to_vec();
    id.extend_from_slice(&(n + 1).to_be_bytes());
    id
}

pub(crate) fn span_id(trace: &[u8], n: u64) -> Vec<u8> {
    // Unique per (trace counter, n): the trace counter sits in the trace id's last bytes.
    let mut id = trace[12..16].to_vec();
    id.extend_from_slice(&((n + 1) as u32).to_be_bytes());
    id
}

/// One trace of `spans` spans exercising every field of the OTLP span model.
pub(crate) fn rich_trace(trace: &[u8], service: &str, spans: u64) -> ResourceSpans {
    let start = now_nanos() - 10_000_000_000;
    let mut out = Vec::new();
    for i in 0..spans {
        let id = span_id(trace, i);
        let parent = if i == 0 {
            Vec::new()
        } else {
            span_id(trace, 0)
        };
        out.push(Span {
            trace_id: trace.to_vec(),
            span_id: id,
            trace_state: if i == 0 {
                "vendor=a,other=b".into()
            } else {
                String::new()
            },
            parent_span_id: parent,
            flags: 0x101,
            name: format!("GET /api/items/{i}"),
            kind: if i == 0 { 2 } else { 3 },
            start_time_unix_nano: start + i * 1_000_000,
            end_time_unix_nano: start + i * 1_000_000 + 250_000_000,
            attributes: vec![
                kv("http.request.method", s("GET")),
                kv("http.response.status_code", V::IntValue(200 + i as i64)),
                kv("http.route", s("/api/items/{id}")),
                kv("url.path", s(&format!("/api/items/{i}"))),
                kv("ratio", V::DoubleValue(0.25)),
                kv("cached", V::BoolValue(i % 2 == 0)),
                kv("blob", V::BytesValue(vec![0, 1, 2, 255])),
                kv(
                    "tags",
                    V::ArrayValue(ArrayValue {
                        values: vec![
                            AnyValue {
                                value: Some(s("a")),
                            },
                            AnyValue {
                                value: Some(V::IntValue(7)),
                            },
                        ],
                    }),
                ),
                kv(
                    "nested",
                    V::KvlistValue(KeyValueList {
                        values: vec![kv("inner", V::DoubleValue(1.5))],
                    }),
                ),
            ],
            dropped_attributes_count: 1,
            events: vec![Event {
                time_unix_nano: start + i * 1_000_000 + 1_000,
                name: "exception".into(),
                attributes: vec![kv("exception.message", s("boom"))],
                dropped_attributes_count: 2,
            }],
            dropped_events_count: 3,
            links: vec![Link {
                trace_id: trace_id(999),
                span_id: vec![9; 8],
                trace_state: "k=v".into(),
                attributes: vec![kv("link.kind", s("follows"))],
                dropped_attributes_count: 0,
                flags: 1,
            }],
            dropped_links_count: 4,
            status: Some(Status {
                message: if i == 1 {
                    "bad thing".into()
                } else {
                    String::new()
                },
                code: if i == 1 { 2 } else { 1 },
            }),
        });
    }
    ResourceSpans {
        resource: Some(Resource {
            attributes: vec![
                kv("service.name", s(service)),
                kv("deployment.environment.name", s("test")),
                kv("k8s.pod.name", s("pod-1")),
            ],
            dropped_attributes_count: 0,
            entity_refs: Vec::new(),
        }),
        scope_spans: vec![ScopeSpans {
            scope: Some(InstrumentationScope {
                name: "e2e-scope".into(),
                version: "1.2.3".into(),
                attributes: vec![kv("scope.attr", V::IntValue(42))],
                dropped_attributes_count: 0,
            }),
            spans: out,
            schema_url: "https://opentelemetry.io/schemas/1.26.0".into(),
        }],
        schema_url: "https://opentelemetry.io/schemas/1.25.0".into(),
    }
}

pub(crate) fn request(resource_spans: Vec<ResourceSpans>) -> ExportTraceServiceRequest {
    ExportTraceServiceRequest { resource_spans }
}

/// Every span with its resource and scope, encoded, sorted: equal for two span sets that
/// differ only in how spans are grouped.
pub(crate) fn flatten(resource_spans: &[ResourceSpans]) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    for rs in resource_spans {
        for ss in &rs.scope_spans {
            for span in &ss.spans {
                let single = ResourceSpans {
                    resource: rs.resource.clone(),
                    scope_spans: vec![ScopeSpans {
                        scope: ss.scope.clone(),
                        spans: vec![span.clone()],
                        schema_url: ss.schema_url.clone(),
                    }],
                    schema_url: rs.schema_url.clone(),
                };
                out.push(single.encode_to_vec());
            }
        }
    }
    out.sort();
    out
}

/// Sends `resource_spans` to `server` over OTLP/HTTP protobuf as `tenant`; asserts a 200.
pub(crate) async fn send(
    server: &crate::server::TestServer,
    tenant: &str,
    resource_spans: Vec<ResourceSpans>,
) {
    use prost::Message;
    let resp = reqwest::Client::new()
        .post(server.otlp_http_url())
        .header("Content-Type", "application/x-protobuf")
        .header("X-Scope-OrgID", tenant)
        .body(request(resource_spans).encode_to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200, "{}", resp.text().await.unwrap());
}
