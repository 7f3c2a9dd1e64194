//! Test fixtures shared by the unit tests.

use prost::Message;

use crate::otlp::common::v1::{
    any_value::Value, AnyValue, ArrayValue, EntityRef, InstrumentationScope, KeyValue, KeyValueList,
};
use crate::otlp::resource::v1::Resource;
use crate::otlp::trace::v1::{span, ResourceSpans, ScopeSpans, Span, Status};

pub(crate) fn any(value: Value) -> AnyValue {
    AnyValue { value: Some(value) }
}

pub(crate) fn kv(key: &str, value: Value) -> KeyValue {
    KeyValue {
        key: key.into(),
        value: Some(any(value)),
        key_strindex: 0,
    }
}

pub(crate) fn string(s: &str) -> Value {
    Value::StringValue(s.into())
}

pub(crate) fn array_value() -> Value {
    Value::ArrayValue(ArrayValue {
        values: vec![
            any(Value::IntValue(1)),
            any(string("a")),
            any(Value::ArrayValue(ArrayValue {
                values: vec![any(Value::BoolValue(true))],
            })),
        ],
    })
}

pub(crate) fn kvlist_value() -> Value {
    Value::KvlistValue(KeyValueList {
        values: vec![
            kv("a", Value::IntValue(1)),
            kv(
                "b",
                Value::KvlistValue(KeyValueList {
                    values: vec![kv("c", string("x"))],
                }),
            ),
        ],
    })
}

/// Every attribute value kind, in order: string, bool, int, double, NaN, bytes, array, kvlist,
/// no value, a duplicated key.
pub(crate) fn all_kinds_attributes() -> Vec<KeyValue> {
    vec![
        kv("s", string("text")),
        kv("b", Value::BoolValue(true)),
        kv("i", Value::IntValue(-42)),
        kv("d", Value::DoubleValue(2.5)),
        kv("nan", Value::DoubleValue(f64::NAN)),
        kv("bytes", Value::BytesValue(vec![0, 1, 255])),
        kv("arr", array_value()),
        kv("kvl", kvlist_value()),
        KeyValue {
            key: "none".into(),
            value: None,
            key_strindex: 0,
        },
        kv("s", string("duplicate")),
    ]
}

pub(crate) const START: u64 = 1_700_000_000_123_456_789; // 2023-11-14T22:13:20Z

pub(crate) fn checkout_resource() -> Resource {
    Resource {
        attributes: vec![
            kv("service.name", string("checkout")),
            kv("service.namespace", string("shop")),
            kv("deployment.environment", string("prod")),
            kv("k8s.namespace.name", string("ns")),
            kv("k8s.pod.name", string("pod-1")),
            kv("k8s.deployment.name", string("checkout-dep")),
            kv("k8s.node.name", string("node-a")),
            kv("k8s.cluster.name", string("eu-1")),
        ],
        dropped_attributes_count: 1,
        entity_refs: checkout_entity_refs(),
    }
}

/// Two entity refs, one with every field set and one with only the required ones.
pub(crate) fn checkout_entity_refs() -> Vec<EntityRef> {
    vec![
        EntityRef {
            schema_url: "https://opentelemetry.io/schemas/1.30.0".into(),
            r#type: "service".into(),
            id_keys: vec!["service.name".into(), "service.namespace".into()],
            description_keys: vec!["deployment.environment".into()],
        },
        EntityRef {
            r#type: "k8s.pod".into(),
            id_keys: vec!["k8s.pod.name".into()],
            ..Default::default()
        },
    ]
}

/// Three `ResourceSpans`: a rich one with two scopes, one without a resource, and one repeating
/// the first resource (so decoding merges it into the first group).
pub(crate) fn sample() -> Vec<ResourceSpans> {
    let root = Span {
        trace_id: vec![0xab; 16],
        span_id: vec![1; 8],
        trace_state: "vendor=x".into(),
        parent_span_id: vec![],
        flags: 0x301,
        name: "POST /orders".into(),
        kind: span::SpanKind::Server as i32,
        start_time_unix_nano: START,
        end_time_unix_nano: START + 1_500,
        attributes: {
            let mut attrs = all_kinds_attributes();
            attrs.extend([
                kv("http.request.method", string("POST")),
                kv("http.response.status_code", Value::IntValue(201)),
                kv("http.route", string("/orders")),
                kv("url.path", string("/orders")),
                kv("db.system", string("postgresql")),
                kv("rpc.service", string("Orders")),
            ]);
            attrs
        },
        dropped_attributes_count: 2,
        events: vec![
            span::Event {
                time_unix_nano: START + 10,
                name: "exception".into(),
                attributes: vec![kv("exception.type", string("E")), kv("arr", array_value())],
                dropped_attributes_count: 3,
            },
            span::Event {
                time_unix_nano: u64::MAX,
                name: String::new(),
                attributes: vec![],
                dropped_attributes_count: 0,
            },
        ],
        dropped_events_count: 4,
        links: vec![span::Link {
            trace_id: vec![0xcd; 16],
            span_id: vec![9; 8],
            trace_state: "l=1".into(),
            attributes: vec![kv("link.kind", string("follows"))],
            dropped_attributes_count: 5,
            flags: 0x100,
        }],
        dropped_links_count: 6,
        status: Some(Status {
            message: "boom".into(),
            code: 2,
        }),
    };
    let child = Span {
        trace_id: vec![0xab; 16],
        span_id: vec![2; 8],
        parent_span_id: vec![1; 8],
        name: "SELECT".into(),
        kind: span::SpanKind::Client as i32,
        start_time_unix_nano: u64::MAX - 5,
        end_time_unix_nano: 10,
        attributes: vec![
            kv("http.method", string("GET")),
            kv("http.status_code", string("404")),
            kv("http.target", string("/a/b?c=d")),
        ],
        status: None,
        ..Default::default()
    };
    let other_scope_span = Span {
        trace_id: vec![0xab; 16],
        span_id: vec![3; 8],
        name: "internal".into(),
        start_time_unix_nano: START,
        end_time_unix_nano: START,
        ..Default::default()
    };
    vec![
        ResourceSpans {
            resource: Some(checkout_resource()),
            scope_spans: vec![
                ScopeSpans {
                    scope: Some(InstrumentationScope {
                        name: "io.opentelemetry.http".into(),
                        version: "1.2.0".into(),
                        attributes: vec![kv("lib.flag", Value::BoolValue(false))],
                        dropped_attributes_count: 7,
                    }),
                    spans: vec![root, child],
                    schema_url: "https://opentelemetry.io/schemas/1.26.0".into(),
                },
                ScopeSpans {
                    scope: None,
                    spans: vec![other_scope_span],
                    schema_url: String::new(),
                },
            ],
            schema_url: "https://opentelemetry.io/schemas/1.21.0".into(),
        },
        ResourceSpans {
            resource: None,
            scope_spans: vec![ScopeSpans {
                scope: None,
                spans: vec![Span {
                    trace_id: vec![7; 16],
                    span_id: vec![7; 8],
                    name: "orphan".into(),
                    ..Default::default()
                }],
                schema_url: String::new(),
            }],
            schema_url: String::new(),
        },
        ResourceSpans {
            resource: Some(checkout_resource()),
            scope_spans: vec![ScopeSpans {
                scope: Some(InstrumentationScope {
                    name: "io.opentelemetry.http".into(),
                    version: "1.2.0".into(),
                    attributes: vec![kv("lib.flag", Value::BoolValue(false))],
                    dropped_attributes_count: 7,
                }),
                spans: vec![Span {
                    trace_id: vec![0xab; 16],
                    span_id: vec![4; 8],
                    name: "late".into(),
                    ..Default::default()
                }],
                schema_url: "https://opentelemetry.io/schemas/1.26.0".into(),
            }],
            schema_url: "https://opentelemetry.io/schemas/1.21.0".into(),
        },
    ]
}

fn normalize_attributes(attributes: &mut [KeyValue]) {
    for kv in attributes {
        kv.value.get_or_insert_with(AnyValue::default);
    }
}

/// Applies the documented normalisations and flattens to sorted prost-encoded
/// (resource, resource schema url, scope, scope schema url, span) tuples.
pub(crate) fn flatten(resource_spans: &[ResourceSpans]) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    for rs in resource_spans {
        let mut resource = rs.resource.clone().unwrap_or_default();
        normalize_attributes(&mut resource.attributes);
        for ss in &rs.scope_spans {
            let mut scope = ss.scope.clone().unwrap_or_default();
            normalize_attributes(&mut scope.attributes);
            for span in &ss.spans {
                let mut span = span.clone();
                span.status.get_or_insert_with(Status::default);
                normalize_attributes(&mut span.attributes);
                span.events
                    .iter_mut()
                    .for_each(|e| normalize_attributes(&mut e.attributes));
                span.links
                    .iter_mut()
                    .for_each(|l| normalize_attributes(&mut l.attributes));
                let mut key = Vec::new();
                for part in [
                    resource.encode_to_vec(),
                    rs.schema_url.clone().into_bytes(),
                    scope.encode_to_vec(),
                    ss.schema_url.clone().into_bytes(),
                    span.encode_to_vec(),
                ] {
                    key.extend_from_slice(&(part.len() as u64).to_le_bytes());
                    key.extend_from_slice(&part);
                }
                out.push(key);
            }
        }
    }
    out.sort();
    out
}
