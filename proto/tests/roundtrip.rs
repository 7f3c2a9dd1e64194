//! Property tests: OTLP -> Arrow -> OTLP is lossless up to the documented normalisations and
//! regrouping, and OTLP -> OTLP/JSON -> OTLP is exact.

use proptest::collection::vec;
use proptest::prelude::*;
use prost::Message;
use tracelake_proto::otlp::collector::trace::v1::ExportTraceServiceRequest;
use tracelake_proto::otlp::common::v1::{
    any_value::Value, AnyValue, ArrayValue, EntityRef, InstrumentationScope, KeyValue, KeyValueList,
};
use tracelake_proto::otlp::resource::v1::Resource;
use tracelake_proto::otlp::trace::v1::{span, ResourceSpans, ScopeSpans, Span, Status};
use tracelake_proto::{batches_to_traces_data, json, resource_spans_to_batch};

fn bytes_id(len: usize) -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        4 => vec(any::<u8>(), len),
        1 => Just(Vec::new()),
        1 => vec(any::<u8>(), 0..20),
    ]
}

fn text() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => "[a-z.]{0,8}",
        1 => "\\PC{0,6}",
        1 => Just(String::new()),
    ]
}

/// A small key space so that keys repeat (duplicate keys must survive).
fn key() -> impl Strategy<Value = String> {
    prop_oneof![3 => "[a-c]{1,2}", 1 => text()]
}

fn double() -> impl Strategy<Value = f64> {
    prop_oneof![
        4 => any::<f64>(),
        1 => Just(f64::NAN),
        1 => Just(-f64::NAN),
        1 => Just(f64::from_bits(0x7ff8_dead_beef_0001)),
        1 => Just(f64::INFINITY),
        1 => Just(f64::NEG_INFINITY),
        1 => Just(-0.0),
    ]
}

fn timestamp() -> impl Strategy<Value = u64> {
    prop_oneof![
        3 => 1_600_000_000_000_000_000u64..1_800_000_000_000_000_000,
        1 => any::<u64>(),
        1 => Just(0u64),
        1 => Just(u64::MAX),
        1 => (i64::MAX as u64)..=u64::MAX,
    ]
}

fn leaf_value() -> impl Strategy<Value = Option<Value>> {
    prop_oneof![
        1 => Just(None),
        3 => text().prop_map(|s| Some(Value::StringValue(s))),
        1 => any::<bool>().prop_map(|b| Some(Value::BoolValue(b))),
        2 => any::<i64>().prop_map(|i| Some(Value::IntValue(i))),
        2 => double().prop_map(|d| Some(Value::DoubleValue(d))),
        1 => vec(any::<u8>(), 0..8).prop_map(|b| Some(Value::BytesValue(b))),
    ]
}

/// AnyValue with arrays and kvlists nested up to depth 2.
fn any_value() -> impl Strategy<Value = AnyValue> {
    leaf_value()
        .prop_map(|value| AnyValue { value })
        .prop_recursive(2, 24, 4, |inner| {
            prop_oneof![
                vec(inner.clone(), 0..4).prop_map(|values| AnyValue {
                    value: Some(Value::ArrayValue(ArrayValue { values }))
                }),
                vec(
                    (key(), proptest::option::weighted(0.9, inner), 0..3i32),
                    0..4
                )
                .prop_map(|entries| {
                    let values = entries
                        .into_iter()
                        .map(|(key, value, key_strindex)| KeyValue {
                            key,
                            value,
                            key_strindex,
                        })
                        .collect();
                    AnyValue {
                        value: Some(Value::KvlistValue(KeyValueList { values })),
                    }
                }),
            ]
        })
}

fn attributes() -> impl Strategy<Value = Vec<KeyValue>> {
    vec(
        (key(), proptest::option::weighted(0.9, any_value())).prop_map(|(key, value)| KeyValue {
            key,
            value,
            key_strindex: 0,
        }),
        0..4,
    )
}

fn event() -> impl Strategy<Value = span::Event> {
    (timestamp(), text(), attributes(), any::<u32>()).prop_map(
        |(time_unix_nano, name, attributes, dropped_attributes_count)| span::Event {
            time_unix_nano,
            name,
            attributes,
            dropped_attributes_count,
        },
    )
}

fn link() -> impl Strategy<Value = span::Link> {
    (
        bytes_id(16),
        bytes_id(8),
        text(),
        attributes(),
        any::<u32>(),
        any::<u32>(),
    )
        .prop_map(
            |(trace_id, span_id, trace_state, attributes, dropped_attributes_count, flags)| {
                span::Link {
                    trace_id,
                    span_id,
                    trace_state,
                    attributes,
                    dropped_attributes_count,
                    flags,
                }
            },
        )
}

fn status() -> impl Strategy<Value = Option<Status>> {
    proptest::option::of(
        (text(), prop_oneof![0..3i32, any::<i32>()])
            .prop_map(|(message, code)| Status { message, code }),
    )
}

fn span() -> impl Strategy<Value = Span> {
    let identity = (bytes_id(16), bytes_id(8), text(), bytes_id(8), any::<u32>());
    let body = (
        text(),
        prop_oneof![0..6i32, any::<i32>()],
        timestamp(),
        timestamp(),
        attributes(),
    );
    let counts = (any::<u32>(), any::<u32>(), any::<u32>());
    let children = (vec(event(), 0..3), vec(link(), 0..3), status());
    (identity, body, counts, children).prop_map(
        |(
            (trace_id, span_id, trace_state, parent_span_id, flags),
            (name, kind, start_time_unix_nano, end_time_unix_nano, attributes),
            (dropped_attributes_count, dropped_events_count, dropped_links_count),
            (events, links, status),
        )| Span {
            trace_id,
            span_id,
            trace_state,
            parent_span_id,
            flags,
            name,
            kind,
            start_time_unix_nano,
            end_time_unix_nano,
            attributes,
            dropped_attributes_count,
            events,
            dropped_events_count,
            links,
            dropped_links_count,
            status,
        },
    )
}

/// Schema urls and counts from small domains, so that equal resources and scopes recur and
/// decoding has to merge them.
fn small_count() -> impl Strategy<Value = u32> {
    prop_oneof![3 => Just(0u32), 1 => any::<u32>()]
}

fn schema_url() -> impl Strategy<Value = String> {
    prop_oneof![
        Just(String::new()),
        Just("https://opentelemetry.io/schemas/1.26.0".to_string()),
        text()
    ]
}

fn small_attributes() -> impl Strategy<Value = Vec<KeyValue>> {
    prop_oneof![
        2 => Just(Vec::new()),
        2 => Just(vec![KeyValue {
            key: "service.name".into(),
            value: Some(AnyValue { value: Some(Value::StringValue("checkout".into())) }),
            key_strindex: 0,
        }]),
        1 => attributes(),
    ]
}

fn scope_spans() -> impl Strategy<Value = ScopeSpans> {
    let scope = (
        prop_oneof![Just("lib".to_string()), text()],
        text(),
        small_attributes(),
        small_count(),
    )
        .prop_map(|(name, version, attributes, dropped_attributes_count)| {
            InstrumentationScope {
                name,
                version,
                attributes,
                dropped_attributes_count,
            }
        });
    (
        proptest::option::weighted(0.8, scope),
        vec(span(), 0..4),
        schema_url(),
    )
        .prop_map(|(scope, spans, schema_url)| ScopeSpans {
            scope,
            spans,
            schema_url,
        })
}

fn entity_ref() -> impl Strategy<Value = EntityRef> {
    (schema_url(), text(), vec(key(), 0..3), vec(key(), 0..3)).prop_map(
        |(schema_url, r#type, id_keys, description_keys)| EntityRef {
            schema_url,
            r#type,
            id_keys,
            description_keys,
        },
    )
}

/// Mostly none or one fixed list, so resources that differ only in entity refs recur.
fn entity_refs() -> impl Strategy<Value = Vec<EntityRef>> {
    prop_oneof![
        2 => Just(Vec::new()),
        1 => Just(vec![EntityRef {
            r#type: "service".into(),
            id_keys: vec!["service.name".into()],
            ..Default::default()
        }]),
        1 => vec(entity_ref(), 0..3),
    ]
}

fn resource_spans() -> impl Strategy<Value = ResourceSpans> {
    let resource = (small_attributes(), small_count(), entity_refs()).prop_map(
        |(attributes, dropped_attributes_count, entity_refs)| Resource {
            attributes,
            dropped_attributes_count,
            entity_refs,
        },
    );
    (
        proptest::option::weighted(0.8, resource),
        vec(scope_spans(), 0..3),
        schema_url(),
    )
        .prop_map(|(resource, scope_spans, schema_url)| ResourceSpans {
            resource,
            scope_spans,
            schema_url,
        })
}

fn request() -> impl Strategy<Value = Vec<ResourceSpans>> {
    vec(resource_spans(), 0..4)
}

fn normalize_attributes(attributes: &mut [KeyValue]) {
    for kv in attributes {
        kv.value.get_or_insert_with(AnyValue::default);
    }
}

/// The documented normalisations: absent resource/scope/status become empty ones, top-level
/// attributes without a value get an empty AnyValue.
fn normalize(resource_spans: &[ResourceSpans]) -> Vec<ResourceSpans> {
    let mut out = resource_spans.to_vec();
    for rs in &mut out {
        let resource = rs.resource.get_or_insert_with(Resource::default);
        normalize_attributes(&mut resource.attributes);
        for ss in &mut rs.scope_spans {
            let scope = ss.scope.get_or_insert_with(InstrumentationScope::default);
            normalize_attributes(&mut scope.attributes);
            for span in &mut ss.spans {
                span.status.get_or_insert_with(Status::default);
                normalize_attributes(&mut span.attributes);
                span.events
                    .iter_mut()
                    .for_each(|e| normalize_attributes(&mut e.attributes));
                span.links
                    .iter_mut()
                    .for_each(|l| normalize_attributes(&mut l.attributes));
            }
        }
    }
    out
}

/// Sorted prost-encoded (resource, scope, span) triples: equality modulo grouping and order.
fn flatten(resource_spans: &[ResourceSpans]) -> Vec<(Vec<u8>, Vec<u8>, Vec<u8>)> {
    let mut out = Vec::new();
    for rs in resource_spans {
        let resource = ResourceSpans {
            scope_spans: Vec::new(),
            ..rs.clone()
        }
        .encode_to_vec();
        for ss in &rs.scope_spans {
            let scope = ScopeSpans {
                spans: Vec::new(),
                ..ss.clone()
            }
            .encode_to_vec();
            for span in &ss.spans {
                out.push((resource.clone(), scope.clone(), span.encode_to_vec()));
            }
        }
    }
    out.sort();
    out
}

/// The exact grouping `batches_to_traces_data` promises: one ResourceSpans per distinct resource
/// (+ schema url), one ScopeSpans per distinct scope (+ schema url) within it, first-seen order,
/// spans in input order.
fn regroup(resource_spans: &[ResourceSpans]) -> Vec<ResourceSpans> {
    let mut out: Vec<ResourceSpans> = Vec::new();
    for rs in resource_spans {
        let shell = ResourceSpans {
            scope_spans: Vec::new(),
            ..rs.clone()
        };
        for ss in rs.scope_spans.iter().filter(|ss| !ss.spans.is_empty()) {
            let group = match out.iter().position(|g| {
                ResourceSpans {
                    scope_spans: Vec::new(),
                    ..g.clone()
                }
                .encode_to_vec()
                    == shell.encode_to_vec()
            }) {
                Some(i) => i,
                None => {
                    out.push(shell.clone());
                    out.len() - 1
                }
            };
            let scope_shell = ScopeSpans {
                spans: Vec::new(),
                ..ss.clone()
            };
            let scopes = &mut out[group].scope_spans;
            let scope = match scopes.iter().position(|s| {
                ScopeSpans {
                    spans: Vec::new(),
                    ..s.clone()
                }
                .encode_to_vec()
                    == scope_shell.encode_to_vec()
            }) {
                Some(i) => i,
                None => {
                    scopes.push(scope_shell);
                    scopes.len() - 1
                }
            };
            scopes[scope].spans.extend(ss.spans.iter().cloned());
        }
    }
    out
}

fn encoded(resource_spans: Vec<ResourceSpans>) -> Vec<u8> {
    ExportTraceServiceRequest { resource_spans }.encode_to_vec()
}

/// What OTLP/JSON can carry of a double: every NaN is spelled `"NaN"` (payload and sign are lost),
/// and serde_json's default float parser (the workspace does not enable `float_roundtrip`) can be
/// off by an ulp for 16-17 digit numbers, so finite values go through the same text round trip.
fn through_json_text(value: &mut AnyValue) {
    match &mut value.value {
        Some(Value::DoubleValue(d)) if d.is_nan() => *d = f64::NAN,
        Some(Value::DoubleValue(d)) if d.is_finite() => {
            *d = serde_json::from_str(&serde_json::to_string(d).unwrap()).unwrap();
        }
        Some(Value::ArrayValue(array)) => array.values.iter_mut().for_each(through_json_text),
        Some(Value::KvlistValue(list)) => list
            .values
            .iter_mut()
            .filter_map(|kv| kv.value.as_mut())
            .for_each(through_json_text),
        _ => {}
    }
}

fn doubles_through_json_text(resource_spans: &mut [ResourceSpans]) {
    let fix = |attributes: &mut Vec<KeyValue>| {
        attributes
            .iter_mut()
            .filter_map(|kv| kv.value.as_mut())
            .for_each(through_json_text)
    };
    for rs in resource_spans {
        if let Some(r) = &mut rs.resource {
            fix(&mut r.attributes);
        }
        for ss in &mut rs.scope_spans {
            if let Some(s) = &mut ss.scope {
                fix(&mut s.attributes);
            }
            for span in &mut ss.spans {
                fix(&mut span.attributes);
                span.events.iter_mut().for_each(|e| fix(&mut e.attributes));
                span.links.iter_mut().for_each(|l| fix(&mut l.attributes));
            }
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn otlp_arrow_otlp_is_lossless(input in request()) {
        let batch = resource_spans_to_batch(&input).unwrap();
        let spans: usize = input.iter().flat_map(|rs| &rs.scope_spans).map(|ss| ss.spans.len()).sum();
        prop_assert_eq!(batch.num_rows(), spans);

        let output = batches_to_traces_data(&[batch]).unwrap().resource_spans;
        let expected = normalize(&input);
        // Same spans with the same resource and scope, whatever the grouping...
        prop_assert_eq!(flatten(&output), flatten(&expected));
        // ...and exactly the promised grouping and order.
        prop_assert_eq!(encoded(output), encoded(regroup(&expected)));
    }

    #[test]
    fn otlp_json_otlp_is_exact(input in request()) {
        let body = serde_json::json!({ "resourceSpans": json::resource_spans_to_json(&input) }).to_string();
        let decoded = json::decode_export_request(body.as_bytes()).unwrap();
        let mut expected = input;
        doubles_through_json_text(&mut expected);
        prop_assert_eq!(decoded.encode_to_vec(), encoded(expected));
    }
}
