//! OTLP -> Jaeger JSON (the `ui` model of jaeger-query), as the OpenTelemetry Collector's Jaeger
//! translator maps it:
//!
//! - each distinct resource of a trace is a process (`p1`, `p2`, ... in first-seen order):
//!   `service.name` is its serviceName, the other resource attributes its tags;
//! - span attributes are tags, plus `otel.scope.name`/`otel.scope.version`, `span.kind`
//!   (unless unspecified), `otel.status_code` (`OK`/`ERROR`, unless unset), `error=true` on
//!   error, `otel.status_description` and `w3c.tracestate` when not empty;
//! - events are logs whose first field is `event` = the event name;
//! - the parent is the first reference (`CHILD_OF`), links follow as `FOLLOWS_FROM`;
//! - KV types are string, bool, int64, float64 and binary (base64); arrays and maps become
//!   JSON strings.

use std::collections::HashMap;

use serde_json::{json, Map, Value as Json};
use tracelake_proto::otlp::common::v1::{
    any_value::Value, AnyValue, InstrumentationScope, KeyValue,
};
use tracelake_proto::otlp::resource::v1::Resource;
use tracelake_proto::otlp::trace::v1::{Span, TracesData};

/// serviceName of a resource without `service.name` (the translator's placeholder).
const NO_SERVICE_NAME: &str = "OTLPResourceNoServiceName";

/// Jaeger's trace id text: 32 hex digits, or 16 when the high half is zero.
pub(crate) fn trace_id_hex(id: &[u8]) -> String {
    if id.len() == 16 && id[..8].iter().all(|b| *b == 0) {
        hex::encode(&id[8..])
    } else {
        hex::encode(id)
    }
}

fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let n = (u32::from(chunk[0]) << 16)
            | (u32::from(*chunk.get(1).unwrap_or(&0)) << 8)
            | u32::from(*chunk.get(2).unwrap_or(&0));
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

fn double_json(d: f64) -> Json {
    serde_json::Number::from_f64(d).map_or_else(|| Json::String(d.to_string()), Json::Number)
}

/// The plain JSON of an attribute value (arrays and maps nest, bytes are base64).
fn plain_json(value: Option<&AnyValue>) -> Json {
    match value.and_then(|v| v.value.as_ref()) {
        None => Json::Null,
        Some(Value::StringValue(s)) => Json::String(s.clone()),
        Some(Value::BoolValue(b)) => Json::Bool(*b),
        Some(Value::IntValue(i)) => Json::from(*i),
        Some(Value::DoubleValue(d)) => double_json(*d),
        Some(Value::BytesValue(b)) => Json::String(base64(b)),
        Some(Value::ArrayValue(a)) => {
            Json::Array(a.values.iter().map(|v| plain_json(Some(v))).collect())
        }
        Some(Value::KvlistValue(kv)) => Json::Object(
            kv.values
                .iter()
                .map(|kv| (kv.key.clone(), plain_json(kv.value.as_ref())))
                .collect::<Map<_, _>>(),
        ),
        Some(Value::StringValueStrindex(i)) => Json::from(*i),
    }
}

/// A Jaeger KV: `{key, type, value}`.
pub(crate) fn kv_json(key: &str, value: Option<&AnyValue>) -> Json {
    let (ty, value) = match value.and_then(|v| v.value.as_ref()) {
        None => ("string", Json::String(String::new())),
        Some(Value::StringValue(s)) => ("string", Json::String(s.clone())),
        Some(Value::BoolValue(b)) => ("bool", Json::Bool(*b)),
        Some(Value::IntValue(i)) => ("int64", Json::from(*i)),
        Some(Value::DoubleValue(d)) => ("float64", double_json(*d)),
        Some(Value::BytesValue(b)) => ("binary", Json::String(base64(b))),
        Some(Value::StringValueStrindex(i)) => ("int64", Json::from(*i)),
        Some(Value::ArrayValue(_) | Value::KvlistValue(_)) => {
            ("string", Json::String(plain_json(value).to_string()))
        }
    };
    json!({ "key": key, "type": ty, "value": value })
}

fn str_kv(key: &str, value: &str) -> Json {
    json!({ "key": key, "type": "string", "value": value })
}

fn kvs(attributes: &[KeyValue]) -> Vec<Json> {
    attributes
        .iter()
        .map(|kv| kv_json(&kv.key, kv.value.as_ref()))
        .collect()
}

/// The Jaeger `span.kind` tag value of an OTLP span kind; `None` for unspecified.
pub(crate) fn span_kind_name(kind: i32) -> Option<&'static str> {
    tracelake_query::jaeger::SPAN_KINDS
        .iter()
        .find(|(_, k)| *k == kind)
        .map(|(name, _)| *name)
}

/// The Jaeger process of a resource.
pub(crate) fn process_json(resource: &Resource) -> Json {
    let mut service = None;
    let mut tags = Vec::new();
    for kv in &resource.attributes {
        match (
            &kv.key[..],
            kv.value.as_ref().and_then(|v| v.value.as_ref()),
        ) {
            ("service.name", Some(Value::StringValue(s))) if service.is_none() => {
                service = Some(s.clone())
            }
            _ => tags.push(kv_json(&kv.key, kv.value.as_ref())),
        }
    }
    json!({
        "serviceName": service.unwrap_or_else(|| NO_SERVICE_NAME.to_string()),
        "tags": tags,
    })
}

/// The Jaeger span (without its trace-level process table).
pub(crate) fn span_json(span: &Span, scope: &InstrumentationScope, process_id: &str) -> Json {
    let trace_id = trace_id_hex(&span.trace_id);
    let mut references = Vec::new();
    if !span.parent_span_id.is_empty() {
        references.push(json!({
            "refType": "CHILD_OF",
            "traceID": trace_id,
            "spanID": hex::encode(&span.parent_span_id),
        }));
    }
    for link in &span.links {
        references.push(json!({
            "refType": "FOLLOWS_FROM",
            "traceID": trace_id_hex(&link.trace_id),
            "spanID": hex::encode(&link.span_id),
        }));
    }
    let mut tags = kvs(&span.attributes);
    if !scope.name.is_empty() {
        tags.push(str_kv("otel.scope.name", &scope.name));
    }
    if !scope.version.is_empty() {
        tags.push(str_kv("otel.scope.version", &scope.version));
    }
    if let Some(kind) = span_kind_name(span.kind) {
        tags.push(str_kv("span.kind", kind));
    }
    let status = span.status.clone().unwrap_or_default();
    match status.code {
        1 => tags.push(str_kv("otel.status_code", "OK")),
        2 => {
            tags.push(str_kv("otel.status_code", "ERROR"));
            tags.push(json!({ "key": "error", "type": "bool", "value": true }));
        }
        _ => {}
    }
    if !status.message.is_empty() {
        tags.push(str_kv("otel.status_description", &status.message));
    }
    if !span.trace_state.is_empty() {
        tags.push(str_kv("w3c.tracestate", &span.trace_state));
    }
    let logs: Vec<Json> = span
        .events
        .iter()
        .map(|event| {
            let mut fields = Vec::with_capacity(event.attributes.len() + 1);
            if !event.name.is_empty() && !event.attributes.iter().any(|kv| kv.key == "event") {
                fields.push(str_kv("event", &event.name));
            }
            fields.extend(kvs(&event.attributes));
            json!({ "timestamp": event.time_unix_nano / 1_000, "fields": fields })
        })
        .collect();
    json!({
        "traceID": trace_id,
        "spanID": hex::encode(&span.span_id),
        "operationName": span.name,
        "references": references,
        "startTime": span.start_time_unix_nano / 1_000,
        "duration": span.end_time_unix_nano.saturating_sub(span.start_time_unix_nano) / 1_000,
        "tags": tags,
        "logs": logs,
        "processID": process_id,
        "warnings": null,
    })
}

/// One Jaeger trace being assembled.
struct TraceBuilder {
    trace_id: Vec<u8>,
    /// (start time, span id, span JSON) for sorting.
    spans: Vec<(u64, Vec<u8>, Json)>,
    processes: Map<String, Json>,
    /// Process JSON text -> its id, to share a process between resources that map the same.
    process_ids: HashMap<String, String>,
}

/// Groups OTLP spans into Jaeger traces, in first-seen order of trace id; spans of a trace are
/// ordered by start time.
pub(crate) fn jaeger_traces(data: &TracesData) -> Vec<(Vec<u8>, Json)> {
    let mut traces: Vec<TraceBuilder> = Vec::new();
    let mut index: HashMap<Vec<u8>, usize> = HashMap::new();
    for rs in &data.resource_spans {
        let resource = rs.resource.clone().unwrap_or_default();
        let process = process_json(&resource);
        let process_text = process.to_string();
        for ss in &rs.scope_spans {
            let scope = ss.scope.clone().unwrap_or_default();
            for span in &ss.spans {
                let i = *index.entry(span.trace_id.clone()).or_insert_with(|| {
                    traces.push(TraceBuilder {
                        trace_id: span.trace_id.clone(),
                        spans: Vec::new(),
                        processes: Map::new(),
                        process_ids: HashMap::new(),
                    });
                    traces.len() - 1
                });
                let trace = &mut traces[i];
                let next_id = format!("p{}", trace.process_ids.len() + 1);
                let process_id = trace
                    .process_ids
                    .entry(process_text.clone())
                    .or_insert_with(|| {
                        trace.processes.insert(next_id.clone(), process.clone());
                        next_id
                    })
                    .clone();
                trace.spans.push((
                    span.start_time_unix_nano,
                    span.span_id.clone(),
                    span_json(span, &scope, &process_id),
                ));
            }
        }
    }
    traces
        .into_iter()
        .map(|mut t| {
            t.spans.sort_by(|a, b| (a.0, &a.1).cmp(&(b.0, &b.1)));
            let spans: Vec<Json> = t.spans.into_iter().map(|(_, _, s)| s).collect();
            let body = json!({
                "traceID": trace_id_hex(&t.trace_id),
                "spans": spans,
                "processes": t.processes,
                "warnings": null,
            });
            (t.trace_id, body)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use tracelake_proto::otlp::common::v1::{ArrayValue, KeyValueList};
    use tracelake_proto::otlp::trace::v1::span::{Event, Link};
    use tracelake_proto::otlp::trace::v1::{ResourceSpans, ScopeSpans, Status};

    fn kv(key: &str, value: Value) -> KeyValue {
        KeyValue {
            key: key.into(),
            value: Some(AnyValue { value: Some(value) }),
            ..Default::default()
        }
    }

    fn s(v: &str) -> Value {
        Value::StringValue(v.into())
    }

    fn tag<'a>(tags: &'a Json, key: &str) -> Option<&'a Json> {
        tags.as_array().unwrap().iter().find(|t| t["key"] == key)
    }

    #[test]
    fn base64_matches_the_standard_alphabet() {
        assert_eq!(base64(b""), "");
        assert_eq!(base64(b"f"), "Zg==");
        assert_eq!(base64(b"fo"), "Zm8=");
        assert_eq!(base64(b"foo"), "Zm9v");
        assert_eq!(base64(&[0, 1, 2, 255]), "AAEC/w==");
    }

    #[test]
    fn trace_ids_drop_a_zero_high_half() {
        let mut id = [0u8; 16];
        id[15] = 0xab;
        assert_eq!(trace_id_hex(&id), "00000000000000ab");
        id[0] = 1;
        assert_eq!(trace_id_hex(&id), "010000000000000000000000000000ab");
    }

    #[test]
    fn kv_types() {
        let cases = [
            (s("x"), json!({"key": "k", "type": "string", "value": "x"})),
            (
                Value::BoolValue(true),
                json!({"key": "k", "type": "bool", "value": true}),
            ),
            (
                Value::IntValue(-7),
                json!({"key": "k", "type": "int64", "value": -7}),
            ),
            (
                Value::DoubleValue(0.25),
                json!({"key": "k", "type": "float64", "value": 0.25}),
            ),
            (
                Value::BytesValue(vec![0, 1, 2, 255]),
                json!({"key": "k", "type": "binary", "value": "AAEC/w=="}),
            ),
            (
                Value::ArrayValue(ArrayValue {
                    values: vec![
                        AnyValue {
                            value: Some(s("a")),
                        },
                        AnyValue {
                            value: Some(Value::IntValue(7)),
                        },
                    ],
                }),
                json!({"key": "k", "type": "string", "value": "[\"a\",7]"}),
            ),
            (
                Value::KvlistValue(KeyValueList {
                    values: vec![kv("inner", Value::DoubleValue(1.5))],
                }),
                json!({"key": "k", "type": "string", "value": "{\"inner\":1.5}"}),
            ),
        ];
        for (value, expected) in cases {
            assert_eq!(
                kv_json("k", Some(&AnyValue { value: Some(value) })),
                expected
            );
        }
        assert_eq!(kv_json("k", None)["type"], "string");
    }

    fn sample() -> TracesData {
        let trace = vec![7u8; 16];
        let resource = |service: &str| Resource {
            attributes: vec![kv("service.name", s(service)), kv("host.name", s("h1"))],
            ..Default::default()
        };
        let span = |id: u8, parent: Option<u8>, start: u64| Span {
            trace_id: trace.clone(),
            span_id: vec![id; 8],
            parent_span_id: parent.map(|p| vec![p; 8]).unwrap_or_default(),
            name: format!("op{id}"),
            kind: 2,
            start_time_unix_nano: start,
            end_time_unix_nano: start + 2_500_000,
            attributes: vec![kv("http.route", s("/x"))],
            events: vec![Event {
                time_unix_nano: start + 1_000,
                name: "exception".into(),
                attributes: vec![kv("exception.message", s("boom"))],
                dropped_attributes_count: 0,
            }],
            links: vec![Link {
                trace_id: vec![9; 16],
                span_id: vec![8; 8],
                ..Default::default()
            }],
            status: Some(Status {
                message: "bad".into(),
                code: 2,
            }),
            trace_state: "a=b".into(),
            ..Default::default()
        };
        let scope = InstrumentationScope {
            name: "lib".into(),
            version: "1.0".into(),
            ..Default::default()
        };
        TracesData {
            resource_spans: vec![
                ResourceSpans {
                    resource: Some(resource("front")),
                    scope_spans: vec![ScopeSpans {
                        scope: Some(scope.clone()),
                        spans: vec![
                            span(2, Some(1), 3_000_000_000),
                            span(1, None, 1_000_000_000),
                        ],
                        ..Default::default()
                    }],
                    ..Default::default()
                },
                ResourceSpans {
                    resource: Some(resource("back")),
                    scope_spans: vec![ScopeSpans {
                        scope: Some(scope),
                        spans: vec![span(3, Some(2), 2_000_000_000)],
                        ..Default::default()
                    }],
                    ..Default::default()
                },
            ],
        }
    }

    #[test]
    fn maps_a_trace() {
        let traces = jaeger_traces(&sample());
        assert_eq!(traces.len(), 1);
        let trace = &traces[0].1;
        assert_eq!(trace["traceID"], "07".repeat(16));
        assert_eq!(
            trace["processes"],
            json!({
                "p1": {"serviceName": "front", "tags": [{"key": "host.name", "type": "string", "value": "h1"}]},
                "p2": {"serviceName": "back", "tags": [{"key": "host.name", "type": "string", "value": "h1"}]},
            })
        );
        let spans = trace["spans"].as_array().unwrap();
        let ids: Vec<_> = spans
            .iter()
            .map(|s| s["spanID"].as_str().unwrap())
            .collect();
        assert_eq!(
            ids,
            ["0101010101010101", "0303030303030303", "0202020202020202"]
        );
        let child = &spans[1];
        assert_eq!(child["processID"], "p2");
        assert_eq!(child["startTime"], 2_000_000);
        assert_eq!(child["duration"], 2_500);
        assert_eq!(child["operationName"], "op3");
        assert_eq!(
            child["references"],
            json!([
                {"refType": "CHILD_OF", "traceID": "07".repeat(16), "spanID": "0202020202020202"},
                {"refType": "FOLLOWS_FROM", "traceID": "09".repeat(16), "spanID": "0808080808080808"},
            ])
        );
        assert_eq!(
            spans[0]["references"].as_array().unwrap()[0]["refType"],
            "FOLLOWS_FROM"
        );
        let tags = &child["tags"];
        for (key, value) in [
            ("http.route", json!("/x")),
            ("span.kind", json!("server")),
            ("otel.status_code", json!("ERROR")),
            ("error", json!(true)),
            ("otel.status_description", json!("bad")),
            ("otel.scope.name", json!("lib")),
            ("otel.scope.version", json!("1.0")),
            ("w3c.tracestate", json!("a=b")),
        ] {
            assert_eq!(tag(tags, key).map(|t| &t["value"]), Some(&value), "{key}");
        }
        assert_eq!(
            child["logs"],
            json!([{"timestamp": 2_000_001, "fields": [
                {"key": "event", "type": "string", "value": "exception"},
                {"key": "exception.message", "type": "string", "value": "boom"},
            ]}])
        );
    }

    #[test]
    fn unset_status_and_kind_add_no_tags() {
        let span = Span {
            trace_id: vec![1; 16],
            span_id: vec![2; 8],
            ..Default::default()
        };
        let json = span_json(&span, &InstrumentationScope::default(), "p1");
        assert_eq!(json["tags"], json!([]));
        assert_eq!(json["references"], json!([]));
        assert_eq!(
            process_json(&Resource::default())["serviceName"],
            NO_SERVICE_NAME
        );
    }
}
