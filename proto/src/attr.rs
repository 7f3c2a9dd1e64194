//! Attribute helpers shared by the encoder: the readable JSON rendering of array/kvlist values and
//! the extraction of the dedicated (typed) attribute columns.

use std::fmt::Write as _;

use base64::Engine as _;

use crate::otlp::common::v1::{any_value::Value, AnyValue, KeyValue};

/// Appends a readable JSON rendering of `value` to `out`: arrays become JSON arrays of plain values,
/// kvlists JSON objects (keys in order, duplicates kept), bytes base64 strings, empty values `null`,
/// and non-finite doubles the strings `"NaN"`, `"Infinity"` and `"-Infinity"`.
pub(crate) fn render_json(value: Option<&AnyValue>, out: &mut String) {
    match value.and_then(|v| v.value.as_ref()) {
        None => out.push_str("null"),
        Some(Value::StringValue(s)) => push_json_string(s, out),
        Some(Value::BoolValue(b)) => out.push_str(if *b { "true" } else { "false" }),
        Some(Value::IntValue(i)) => {
            let _ = write!(out, "{i}");
        }
        Some(Value::DoubleValue(d)) => push_json_double(*d, out),
        Some(Value::ArrayValue(array)) => {
            out.push('[');
            for (i, item) in array.values.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                render_json(Some(item), out);
            }
            out.push(']');
        }
        Some(Value::KvlistValue(list)) => {
            out.push('{');
            for (i, kv) in list.values.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                push_json_string(&kv.key, out);
                out.push(':');
                render_json(kv.value.as_ref(), out);
            }
            out.push('}');
        }
        Some(Value::BytesValue(bytes)) => {
            out.push('"');
            base64::engine::general_purpose::STANDARD.encode_string(bytes, out);
            out.push('"');
        }
        Some(Value::StringValueStrindex(i)) => {
            let _ = write!(out, "{i}");
        }
    }
}

/// A finite double as a JSON number (`{:?}` never prints `inf`/`NaN` for finite values and uses
/// exponents JSON accepts), a non-finite one as the protobuf-JSON string spelling.
fn push_json_double(d: f64, out: &mut String) {
    if d.is_nan() {
        out.push_str("\"NaN\"");
    } else if d.is_infinite() {
        out.push_str(if d > 0.0 {
            "\"Infinity\""
        } else {
            "\"-Infinity\""
        });
    } else {
        let _ = write!(out, "{d:?}");
    }
}

fn push_json_string(s: &str, out: &mut String) {
    out.push('"');
    let mut plain_from = 0;
    for (i, c) in s.char_indices() {
        let escape = match c {
            '"' => "\\\"",
            '\\' => "\\\\",
            '\n' => "\\n",
            '\r' => "\\r",
            '\t' => "\\t",
            c if (c as u32) < 0x20 => "",
            _ => continue,
        };
        out.push_str(&s[plain_from..i]);
        if escape.is_empty() {
            let _ = write!(out, "\\u{:04x}", c as u32);
        } else {
            out.push_str(escape);
        }
        plain_from = i + c.len_utf8();
    }
    out.push_str(&s[plain_from..]);
    out.push('"');
}

fn str_value(kv: &KeyValue) -> Option<&str> {
    match kv.value.as_ref()?.value.as_ref()? {
        Value::StringValue(s) => Some(s),
        _ => None,
    }
}

fn int_value(kv: &KeyValue) -> Option<i64> {
    match kv.value.as_ref()?.value.as_ref()? {
        Value::IntValue(i) => Some(*i),
        Value::StringValue(s) => s.trim().parse().ok(),
        _ => None,
    }
}

/// Sets `slot` from the first attribute that provides a value.
fn first<T>(slot: &mut Option<T>, value: Option<T>) {
    if slot.is_none() {
        *slot = value;
    }
}

/// Typed copies of common resource attributes. Only string values are copied.
#[derive(Default)]
pub(crate) struct ResourceColumns<'a> {
    pub(crate) service_name: Option<&'a str>,
    pub(crate) service_namespace: Option<&'a str>,
    pub(crate) deployment_environment: Option<&'a str>,
    pub(crate) k8s_namespace_name: Option<&'a str>,
    pub(crate) k8s_pod_name: Option<&'a str>,
    pub(crate) k8s_deployment_name: Option<&'a str>,
    pub(crate) k8s_node_name: Option<&'a str>,
    pub(crate) k8s_cluster_name: Option<&'a str>,
}

impl<'a> ResourceColumns<'a> {
    pub(crate) fn extract(attributes: &'a [KeyValue]) -> Self {
        let mut out = Self::default();
        let mut legacy_environment = None;
        for kv in attributes {
            let slot = match kv.key.as_str() {
                "service.name" => &mut out.service_name,
                "service.namespace" => &mut out.service_namespace,
                "deployment.environment.name" => &mut out.deployment_environment,
                "deployment.environment" => &mut legacy_environment,
                "k8s.namespace.name" => &mut out.k8s_namespace_name,
                "k8s.pod.name" => &mut out.k8s_pod_name,
                "k8s.deployment.name" => &mut out.k8s_deployment_name,
                "k8s.node.name" => &mut out.k8s_node_name,
                "k8s.cluster.name" => &mut out.k8s_cluster_name,
                _ => continue,
            };
            first(slot, str_value(kv));
        }
        first(&mut out.deployment_environment, legacy_environment);
        out
    }
}

/// Typed copies of common span attributes; current semantic-convention names win over legacy ones.
#[derive(Default)]
pub(crate) struct SpanColumns<'a> {
    pub(crate) http_request_method: Option<&'a str>,
    pub(crate) http_response_status_code: Option<i64>,
    pub(crate) http_route: Option<&'a str>,
    pub(crate) url_path: Option<&'a str>,
    pub(crate) db_system: Option<&'a str>,
    pub(crate) rpc_service: Option<&'a str>,
}

impl<'a> SpanColumns<'a> {
    pub(crate) fn extract(attributes: &'a [KeyValue]) -> Self {
        let mut out = Self::default();
        let mut legacy_method = None;
        let mut legacy_status = None;
        let mut legacy_target = None;
        let mut legacy_db = None;
        for kv in attributes {
            match kv.key.as_str() {
                "http.request.method" => first(&mut out.http_request_method, str_value(kv)),
                "http.method" => first(&mut legacy_method, str_value(kv)),
                "http.response.status_code" => {
                    first(&mut out.http_response_status_code, int_value(kv))
                }
                "http.status_code" => first(&mut legacy_status, int_value(kv)),
                "http.route" => first(&mut out.http_route, str_value(kv)),
                "url.path" => first(&mut out.url_path, str_value(kv)),
                "http.target" => first(&mut legacy_target, str_value(kv).map(path_of_target)),
                "db.system.name" => first(&mut out.db_system, str_value(kv)),
                "db.system" => first(&mut legacy_db, str_value(kv)),
                "rpc.service" => first(&mut out.rpc_service, str_value(kv)),
                _ => {}
            }
        }
        first(&mut out.http_request_method, legacy_method);
        first(&mut out.http_response_status_code, legacy_status);
        first(&mut out.url_path, legacy_target);
        first(&mut out.db_system, legacy_db);
        out
    }
}

/// The path part of an `http.target` (`/path?query#fragment` -> `/path`).
fn path_of_target(target: &str) -> &str {
    target.find(['?', '#']).map_or(target, |end| &target[..end])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::otlp::common::v1::{ArrayValue, KeyValueList};

    fn kv(key: &str, value: Value) -> KeyValue {
        KeyValue {
            key: key.into(),
            value: Some(AnyValue { value: Some(value) }),
            ..Default::default()
        }
    }

    fn render(value: Value) -> String {
        let mut out = String::new();
        render_json(Some(&AnyValue { value: Some(value) }), &mut out);
        out
    }

    #[test]
    fn renders_arrays_and_kvlists_as_valid_json() {
        let nested = Value::KvlistValue(KeyValueList {
            values: vec![
                kv("s", Value::StringValue("a\"b\\c\n\u{1}é".into())),
                kv("i", Value::IntValue(-7)),
                kv("d", Value::DoubleValue(1e300)),
                kv("nan", Value::DoubleValue(f64::NAN)),
                kv("inf", Value::DoubleValue(f64::NEG_INFINITY)),
                kv("b", Value::BoolValue(true)),
                kv("bytes", Value::BytesValue(vec![0, 255])),
                KeyValue {
                    key: "empty".into(),
                    ..Default::default()
                },
            ],
        });
        let array = Value::ArrayValue(ArrayValue {
            values: vec![
                AnyValue {
                    value: Some(Value::DoubleValue(0.5)),
                },
                AnyValue {
                    value: Some(nested),
                },
                AnyValue::default(),
            ],
        });
        let text = render(array);
        let parsed: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(
            parsed,
            serde_json::json!([0.5, {
                "s": "a\"b\\c\n\u{1}é", "i": -7, "d": 1e300, "nan": "NaN", "inf": "-Infinity",
                "b": true, "bytes": "AP8=", "empty": null
            }, null])
        );
    }

    #[test]
    fn dedicated_resource_columns_prefer_current_names() {
        let attrs = vec![
            kv(
                "deployment.environment",
                Value::StringValue("legacy".into()),
            ),
            kv("service.name", Value::StringValue("checkout".into())),
            kv("service.name", Value::StringValue("second".into())),
            kv(
                "deployment.environment.name",
                Value::StringValue("prod".into()),
            ),
            kv("k8s.pod.name", Value::IntValue(3)),
        ];
        let cols = ResourceColumns::extract(&attrs);
        assert_eq!(cols.service_name, Some("checkout"));
        assert_eq!(cols.deployment_environment, Some("prod"));
        assert_eq!(cols.k8s_pod_name, None, "non-string values are not copied");
        let cols = ResourceColumns::extract(&attrs[..1]);
        assert_eq!(cols.deployment_environment, Some("legacy"));
    }

    #[test]
    fn dedicated_span_columns_fall_back_to_legacy_names() {
        let attrs = vec![
            kv("http.method", Value::StringValue("GET".into())),
            kv("http.status_code", Value::StringValue(" 404 ".into())),
            kv(
                "http.target",
                Value::StringValue("/users/1?x=2#frag".into()),
            ),
            kv("db.system", Value::StringValue("postgresql".into())),
            kv("rpc.service", Value::StringValue("Greeter".into())),
        ];
        let cols = SpanColumns::extract(&attrs);
        assert_eq!(cols.http_request_method, Some("GET"));
        assert_eq!(cols.http_response_status_code, Some(404));
        assert_eq!(cols.url_path, Some("/users/1"));
        assert_eq!(cols.db_system, Some("postgresql"));
        assert_eq!(cols.rpc_service, Some("Greeter"));
        assert_eq!(cols.http_route, None);

        let mut attrs = attrs;
        attrs.extend([
            kv("http.request.method", Value::StringValue("POST".into())),
            kv("http.response.status_code", Value::IntValue(201)),
            kv("url.path", Value::StringValue("/orders".into())),
            kv("db.system.name", Value::StringValue("mysql".into())),
            kv("http.route", Value::StringValue("/orders/{id}".into())),
        ]);
        let cols = SpanColumns::extract(&attrs);
        assert_eq!(cols.http_request_method, Some("POST"));
        assert_eq!(cols.http_response_status_code, Some(201));
        assert_eq!(cols.url_path, Some("/orders"));
        assert_eq!(cols.db_system, Some("mysql"));
        assert_eq!(cols.http_route, Some("/orders/{id}"));
        let bad = [kv("http.status_code", Value::StringValue("ok".into()))];
        assert_eq!(SpanColumns::extract(&bad).http_response_status_code, None);
    }
}
