//! OTLP/JSON codec for traces, per the OTLP specification's "JSON Protobuf Encoding".
//!
//! We do not use `opentelemetry-proto`'s serde impls because they fall short of the spec:
//! `doubleValue` rejects `"NaN"`/`"Infinity"`, NaN serialises as `null`, 32-bit integers given as
//! strings are rejected, `null` is rejected for non-message fields, URL-safe base64 is rejected,
//! and serialising emits `null` for absent messages. This module decodes straight from the byte stream (errors carry
//! serde_json's line and column) and encodes with explicit rules.
//!
//! Decoding accepts: lower-case or upper-case hex `traceId`/`spanId`/`parentSpanId`; 64-bit
//! integers as decimal strings or JSON numbers (32-bit ones too); `bytesValue` as standard or
//! URL-safe base64, padded or not; `doubleValue` as a number, a numeric string, `"NaN"`,
//! `"Infinity"` or `"-Infinity"`; enums as integers (and, leniently, as their protobuf names);
//! `null` anywhere as the field's default. Unknown fields are ignored.
//!
//! Encoding produces: lowerCamelCase keys, lower-case hex ids, 64-bit integers as decimal strings,
//! enums as integers, standard padded base64, non-finite doubles as the strings above. Fields at
//! their default value are omitted, except the span's identity, name, kind and times and the
//! `scopeSpans`/`spans`/`attributes` arrays, which are always present.

use std::fmt;
use std::marker::PhantomData;

use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig};
use base64::engine::DecodePaddingMode;
use base64::{alphabet, Engine as _};
use serde::de::{self, Deserializer, IgnoredAny, MapAccess, Visitor};
use serde::Deserialize;
use serde_json::{Map, Value as Json};

use crate::otlp::collector::trace::v1::{ExportTraceServiceRequest, ExportTraceServiceResponse};
use crate::otlp::common::v1::{
    any_value::Value, AnyValue, ArrayValue, EntityRef, InstrumentationScope, KeyValue, KeyValueList,
};
use crate::otlp::resource::v1::Resource;
use crate::otlp::trace::v1::{span, status, ResourceSpans, ScopeSpans, Span, Status};
use crate::Result;

/// Decodes an OTLP/JSON `ExportTraceServiceRequest` body (`POST /v1/traces`,
/// `Content-Type: application/json`). Errors name the problem with line and column.
pub fn decode_export_request(body: &[u8]) -> Result<ExportTraceServiceRequest> {
    let request: Msg<JsonRequest> = serde_json::from_slice(body)?;
    Ok(ExportTraceServiceRequest {
        resource_spans: values(request.0.resource_spans),
    })
}

/// Encodes an `ExportTraceServiceResponse`: `{}` for full success, else
/// `{"partialSuccess":{"rejectedSpans":"<n>","errorMessage":"..."}}`.
pub fn encode_export_response(resp: &ExportTraceServiceResponse) -> Vec<u8> {
    let mut out = Map::new();
    if let Some(partial) = &resp.partial_success {
        let mut p = Map::new();
        p.insert(
            "rejectedSpans".into(),
            Json::String(partial.rejected_spans.to_string()),
        );
        if !partial.error_message.is_empty() {
            p.insert(
                "errorMessage".into(),
                Json::String(partial.error_message.clone()),
            );
        }
        out.insert("partialSuccess".into(), Json::Object(p));
    }
    Json::Object(out).to_string().into_bytes()
}

/// Encodes resource spans as a JSON array of OTLP/JSON `ResourceSpans` objects (the value of
/// `resourceSpans` in a request, or of `batches` in Tempo's trace-by-id response).
pub fn resource_spans_to_json(rs: &[ResourceSpans]) -> Json {
    Json::Array(rs.iter().map(resource_spans_json).collect())
}

// ---------------------------------------------------------------------------------------------
// Encoding

/// A JSON object builder that skips default values.
struct Obj(Map<String, Json>);

impl Obj {
    fn new() -> Self {
        Self(Map::new())
    }
    fn put(mut self, key: &str, value: Json) -> Self {
        self.0.insert(key.into(), value);
        self
    }
    fn str(self, key: &str, value: &str) -> Self {
        if value.is_empty() {
            return self;
        }
        self.put(key, Json::String(value.into()))
    }
    fn u32(self, key: &str, value: u32) -> Self {
        if value == 0 {
            return self;
        }
        self.put(key, Json::from(value))
    }
    fn hex(self, key: &str, value: &[u8]) -> Self {
        if value.is_empty() {
            return self;
        }
        self.put(key, Json::String(hex::encode(value)))
    }
    fn list<T>(self, key: &str, items: &[T], f: impl Fn(&T) -> Json) -> Self {
        if items.is_empty() {
            return self;
        }
        self.put(key, Json::Array(items.iter().map(f).collect()))
    }
    fn done(self) -> Json {
        Json::Object(self.0)
    }
}

fn attributes_json(attributes: &[KeyValue]) -> Json {
    Json::Array(attributes.iter().map(key_value_json).collect())
}

fn key_value_json(kv: &KeyValue) -> Json {
    let mut obj = Obj::new().put("key", Json::String(kv.key.clone()));
    if let Some(value) = &kv.value {
        obj = obj.put("value", any_value_json(value));
    }
    if kv.key_strindex != 0 {
        obj = obj.put("keyStrindex", Json::from(kv.key_strindex));
    }
    obj.done()
}

fn double_json(d: f64) -> Json {
    match serde_json::Number::from_f64(d) {
        Some(n) => Json::Number(n),
        None if d.is_nan() => Json::String("NaN".into()),
        None if d > 0.0 => Json::String("Infinity".into()),
        None => Json::String("-Infinity".into()),
    }
}

fn any_value_json(value: &AnyValue) -> Json {
    let obj = Obj::new();
    match &value.value {
        None => obj,
        Some(Value::StringValue(s)) => obj.put("stringValue", Json::String(s.clone())),
        Some(Value::BoolValue(b)) => obj.put("boolValue", Json::Bool(*b)),
        Some(Value::IntValue(i)) => obj.put("intValue", Json::String(i.to_string())),
        Some(Value::DoubleValue(d)) => obj.put("doubleValue", double_json(*d)),
        Some(Value::ArrayValue(a)) => obj.put(
            "arrayValue",
            Obj::new()
                .put(
                    "values",
                    Json::Array(a.values.iter().map(any_value_json).collect()),
                )
                .done(),
        ),
        Some(Value::KvlistValue(kv)) => obj.put(
            "kvlistValue",
            Obj::new().put("values", attributes_json(&kv.values)).done(),
        ),
        Some(Value::BytesValue(b)) => obj.put(
            "bytesValue",
            Json::String(base64::engine::general_purpose::STANDARD.encode(b)),
        ),
        Some(Value::StringValueStrindex(i)) => obj.put("stringValueStrindex", Json::from(*i)),
    }
    .done()
}

fn resource_json(resource: &Resource) -> Json {
    Obj::new()
        .put("attributes", attributes_json(&resource.attributes))
        .u32("droppedAttributesCount", resource.dropped_attributes_count)
        .list("entityRefs", &resource.entity_refs, |e| {
            Obj::new()
                .str("schemaUrl", &e.schema_url)
                .str("type", &e.r#type)
                .list("idKeys", &e.id_keys, |k| Json::String(k.clone()))
                .list("descriptionKeys", &e.description_keys, |k| {
                    Json::String(k.clone())
                })
                .done()
        })
        .done()
}

fn scope_json(scope: &InstrumentationScope) -> Json {
    Obj::new()
        .str("name", &scope.name)
        .str("version", &scope.version)
        .put("attributes", attributes_json(&scope.attributes))
        .u32("droppedAttributesCount", scope.dropped_attributes_count)
        .done()
}

fn resource_spans_json(rs: &ResourceSpans) -> Json {
    let mut obj = Obj::new();
    if let Some(resource) = &rs.resource {
        obj = obj.put("resource", resource_json(resource));
    }
    obj.put(
        "scopeSpans",
        Json::Array(rs.scope_spans.iter().map(scope_spans_json).collect()),
    )
    .str("schemaUrl", &rs.schema_url)
    .done()
}

fn scope_spans_json(ss: &ScopeSpans) -> Json {
    let mut obj = Obj::new();
    if let Some(scope) = &ss.scope {
        obj = obj.put("scope", scope_json(scope));
    }
    obj.put(
        "spans",
        Json::Array(ss.spans.iter().map(span_json).collect()),
    )
    .str("schemaUrl", &ss.schema_url)
    .done()
}

fn span_json(span: &Span) -> Json {
    let mut obj = Obj::new()
        .put("traceId", Json::String(hex::encode(&span.trace_id)))
        .put("spanId", Json::String(hex::encode(&span.span_id)))
        .str("traceState", &span.trace_state)
        .hex("parentSpanId", &span.parent_span_id)
        .u32("flags", span.flags)
        .put("name", Json::String(span.name.clone()))
        .put("kind", Json::from(span.kind))
        .put(
            "startTimeUnixNano",
            Json::String(span.start_time_unix_nano.to_string()),
        )
        .put(
            "endTimeUnixNano",
            Json::String(span.end_time_unix_nano.to_string()),
        )
        .put("attributes", attributes_json(&span.attributes))
        .u32("droppedAttributesCount", span.dropped_attributes_count)
        .list("events", &span.events, |e| {
            Obj::new()
                .put("timeUnixNano", Json::String(e.time_unix_nano.to_string()))
                .str("name", &e.name)
                .list("attributes", &e.attributes, key_value_json)
                .u32("droppedAttributesCount", e.dropped_attributes_count)
                .done()
        })
        .u32("droppedEventsCount", span.dropped_events_count)
        .list("links", &span.links, |l| {
            Obj::new()
                .hex("traceId", &l.trace_id)
                .hex("spanId", &l.span_id)
                .str("traceState", &l.trace_state)
                .list("attributes", &l.attributes, key_value_json)
                .u32("droppedAttributesCount", l.dropped_attributes_count)
                .u32("flags", l.flags)
                .done()
        })
        .u32("droppedLinksCount", span.dropped_links_count);
    if let Some(status) = &span.status {
        let mut s = Obj::new().str("message", &status.message);
        if status.code != 0 {
            s = s.put("code", Json::from(status.code));
        }
        obj = obj.put("status", s.done());
    }
    obj.done()
}

// ---------------------------------------------------------------------------------------------
// Decoding: mirror structs deserialised straight from the bytes, then moved into prost types.

/// A field whose `null` means "default".
#[derive(Default)]
struct N<T>(T);

impl<'de, T: Deserialize<'de> + Default> Deserialize<'de> for N<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Ok(N(Option::<T>::deserialize(d)?.unwrap_or_default()))
    }
}

/// An integer field: a JSON number (integral floats included) or a decimal string; `null` is 0.
#[derive(Default)]
struct Int<T>(T);

impl<'de, T> Deserialize<'de> for Int<T>
where
    T: TryFrom<i128> + Default,
{
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct IntVisitor<T>(PhantomData<T>);

        impl<T: TryFrom<i128>> IntVisitor<T> {
            fn convert<E: de::Error>(value: i128) -> Result<T, E> {
                T::try_from(value).map_err(|_| {
                    E::custom(format!(
                        "integer {value} is out of range for {}",
                        std::any::type_name::<T>()
                    ))
                })
            }
        }

        impl<T: TryFrom<i128> + Default> Visitor<'_> for IntVisitor<T> {
            type Value = Int<T>;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an integer as a JSON number or a decimal string")
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Self::Value, E> {
                Self::convert(i128::from(v)).map(Int)
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Self::Value, E> {
                Self::convert(i128::from(v)).map(Int)
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<Self::Value, E> {
                // 2^64 is exact in f64; anything integral below it in magnitude converts exactly.
                if v.fract() != 0.0 || !v.is_finite() || v.abs() >= 18_446_744_073_709_551_616.0 {
                    return Err(E::custom(format!("{v} is not an integer")));
                }
                Self::convert(v as i128).map(Int)
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
                let parsed = v
                    .parse::<i128>()
                    .map_err(|_| E::custom(format!("\"{v}\" is not a decimal integer")))?;
                Self::convert(parsed).map(Int)
            }
            fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
                Ok(Int(T::default()))
            }
        }

        d.deserialize_any(IntVisitor(PhantomData))
    }
}

/// An enum field: an integer (OTLP/JSON), or leniently the protobuf enum name; `null` is 0.
struct Enum<K>(i32, PhantomData<K>);

impl<K> Default for Enum<K> {
    fn default() -> Self {
        Enum(0, PhantomData)
    }
}

/// Maps protobuf enum names to values for [`Enum`].
trait EnumNames {
    fn from_name(name: &str) -> Option<i32>;
}

impl EnumNames for span::SpanKind {
    fn from_name(name: &str) -> Option<i32> {
        Self::from_str_name(name).map(|k| k as i32)
    }
}

impl EnumNames for status::StatusCode {
    fn from_name(name: &str) -> Option<i32> {
        Self::from_str_name(name).map(|k| k as i32)
    }
}

impl<'de, K: EnumNames> Deserialize<'de> for Enum<K> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct EnumVisitor<K>(PhantomData<K>);

        impl<K: EnumNames> Visitor<'_> for EnumVisitor<K> {
            type Value = Enum<K>;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an enum value as an integer")
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Self::Value, E> {
                i32::try_from(v)
                    .map(|v| Enum(v, PhantomData))
                    .map_err(|_| E::custom(format!("enum value {v} is out of range")))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Self::Value, E> {
                i32::try_from(v)
                    .map(|v| Enum(v, PhantomData))
                    .map_err(|_| E::custom(format!("enum value {v} is out of range")))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
                K::from_name(v)
                    .map(|v| Enum(v, PhantomData))
                    .ok_or_else(|| E::custom(format!("unknown enum value \"{v}\"; use an integer")))
            }
            fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
                Ok(Enum(0, PhantomData))
            }
        }

        d.deserialize_any(EnumVisitor(PhantomData))
    }
}

/// A trace or span id: a case-insensitive hex string; `null` or `""` is empty.
#[derive(Default)]
struct Hex(Vec<u8>);

impl<'de> Deserialize<'de> for Hex {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct HexVisitor;

        impl Visitor<'_> for HexVisitor {
            type Value = Hex;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a hex-encoded id string")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Hex, E> {
                hex::decode(v)
                    .map(Hex)
                    .map_err(|e| E::custom(format!("invalid hex id \"{v}\": {e}")))
            }
            fn visit_unit<E: de::Error>(self) -> Result<Hex, E> {
                Ok(Hex(Vec::new()))
            }
        }

        d.deserialize_any(HexVisitor)
    }
}

const BASE64_STANDARD: GeneralPurpose = GeneralPurpose::new(
    &alphabet::STANDARD,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);
const BASE64_URL_SAFE: GeneralPurpose = GeneralPurpose::new(
    &alphabet::URL_SAFE,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// A `bytesValue`: base64, standard or URL-safe alphabet, padding optional.
struct Base64(Vec<u8>);

impl<'de> Deserialize<'de> for Base64 {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Base64Visitor;

        impl Visitor<'_> for Base64Visitor {
            type Value = Base64;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a base64 string")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Base64, E> {
                let engine = if v.contains(['-', '_']) {
                    &BASE64_URL_SAFE
                } else {
                    &BASE64_STANDARD
                };
                engine
                    .decode(v)
                    .map(Base64)
                    .map_err(|e| E::custom(format!("invalid base64 in bytesValue: {e}")))
            }
        }

        d.deserialize_str(Base64Visitor)
    }
}

/// A `doubleValue`: a JSON number, a numeric string, or `"NaN"`, `"Infinity"`, `"-Infinity"`.
struct Double(f64);

impl<'de> Deserialize<'de> for Double {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct DoubleVisitor;

        impl Visitor<'_> for DoubleVisitor {
            type Value = Double;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a number, or \"NaN\", \"Infinity\" or \"-Infinity\"")
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<Double, E> {
                Ok(Double(v))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Double, E> {
                Ok(Double(v as f64))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Double, E> {
                Ok(Double(v as f64))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Double, E> {
                match v {
                    "NaN" => Ok(Double(f64::NAN)),
                    "Infinity" => Ok(Double(f64::INFINITY)),
                    "-Infinity" => Ok(Double(f64::NEG_INFINITY)),
                    _ => v
                        .parse::<f64>()
                        .ok()
                        .filter(|d| d.is_finite())
                        .map(Double)
                        .ok_or_else(|| E::custom(format!("\"{v}\" is not a number"))),
                }
            }
        }

        d.deserialize_any(DoubleVisitor)
    }
}

/// An `AnyValue` object: at most one `*Value` key is expected; unknown keys are ignored and, as in
/// protobuf, the last value given wins.
struct JsonAnyValue(AnyValue);

#[derive(Deserialize)]
#[serde(field_identifier, rename_all = "camelCase")]
enum AnyValueField {
    StringValue,
    BoolValue,
    IntValue,
    DoubleValue,
    ArrayValue,
    KvlistValue,
    BytesValue,
    StringValueStrindex,
    #[serde(other)]
    Unknown,
}

impl<'de> Deserialize<'de> for JsonAnyValue {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct AnyValueVisitor;

        impl<'de> Visitor<'de> for AnyValueVisitor {
            type Value = JsonAnyValue;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an AnyValue object")
            }

            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<JsonAnyValue, A::Error> {
                let mut value = None;
                while let Some(field) = map.next_key::<AnyValueField>()? {
                    let parsed = match field {
                        AnyValueField::StringValue => {
                            map.next_value::<Option<String>>()?.map(Value::StringValue)
                        }
                        AnyValueField::BoolValue => {
                            map.next_value::<Option<bool>>()?.map(Value::BoolValue)
                        }
                        AnyValueField::IntValue => map
                            .next_value::<Option<Int<i64>>>()?
                            .map(|v| Value::IntValue(v.0)),
                        AnyValueField::DoubleValue => map
                            .next_value::<Option<Double>>()?
                            .map(|v| Value::DoubleValue(v.0)),
                        AnyValueField::ArrayValue => map
                            .next_value::<Option<Msg<JsonArrayValue>>>()?
                            .map(|v| Value::ArrayValue(v.0.into())),
                        AnyValueField::KvlistValue => map
                            .next_value::<Option<Msg<JsonKeyValueList>>>()?
                            .map(|v| Value::KvlistValue(v.0.into())),
                        AnyValueField::BytesValue => map
                            .next_value::<Option<Base64>>()?
                            .map(|v| Value::BytesValue(v.0)),
                        AnyValueField::StringValueStrindex => map
                            .next_value::<Option<Int<i32>>>()?
                            .map(|v| Value::StringValueStrindex(v.0)),
                        AnyValueField::Unknown => {
                            map.next_value::<IgnoredAny>()?;
                            None
                        }
                    };
                    if parsed.is_some() {
                        value = parsed;
                    }
                }
                Ok(JsonAnyValue(AnyValue { value }))
            }
        }

        d.deserialize_map(AnyValueVisitor)
    }
}

/// A message field: must be a JSON object (serde would also accept a positional array).
struct Msg<T>(T);

impl<'de, T: Deserialize<'de>> Deserialize<'de> for Msg<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct MsgVisitor<T>(PhantomData<T>);

        impl<'de, T: Deserialize<'de>> Visitor<'de> for MsgVisitor<T> {
            type Value = Msg<T>;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Msg<T>, A::Error> {
                T::deserialize(de::value::MapAccessDeserializer::new(map)).map(Msg)
            }
        }

        d.deserialize_map(MsgVisitor(PhantomData))
    }
}

fn values<T: Into<U>, U>(list: N<Vec<Msg<T>>>) -> Vec<U> {
    list.0.into_iter().map(|m| m.0.into()).collect()
}

fn message<T: Into<U>, U>(message: Option<Msg<T>>) -> Option<U> {
    message.map(|m| m.0.into())
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase", default)]
struct JsonRequest {
    resource_spans: N<Vec<Msg<JsonResourceSpans>>>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase", default)]
struct JsonArrayValue {
    values: N<Vec<Option<JsonAnyValue>>>,
}

impl From<JsonArrayValue> for ArrayValue {
    fn from(v: JsonArrayValue) -> Self {
        ArrayValue {
            values: v
                .values
                .0
                .into_iter()
                .map(|v| v.map_or_else(AnyValue::default, |v| v.0))
                .collect(),
        }
    }
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase", default)]
struct JsonKeyValueList {
    values: N<Vec<Msg<JsonKeyValue>>>,
}

impl From<JsonKeyValueList> for KeyValueList {
    fn from(v: JsonKeyValueList) -> Self {
        KeyValueList {
            values: values(v.values),
        }
    }
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase", default)]
struct JsonKeyValue {
    key: N<String>,
    value: Option<JsonAnyValue>,
    key_strindex: Int<i32>,
}

impl From<JsonKeyValue> for KeyValue {
    fn from(v: JsonKeyValue) -> Self {
        KeyValue {
            key: v.key.0,
            value: v.value.map(|v| v.0),
            key_strindex: v.key_strindex.0,
        }
    }
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase", default)]
struct JsonEntityRef {
    schema_url: N<String>,
    #[serde(rename = "type")]
    kind: N<String>,
    id_keys: N<Vec<String>>,
    description_keys: N<Vec<String>>,
}

impl From<JsonEntityRef> for EntityRef {
    fn from(v: JsonEntityRef) -> Self {
        EntityRef {
            schema_url: v.schema_url.0,
            r#type: v.kind.0,
            id_keys: v.id_keys.0,
            description_keys: v.description_keys.0,
        }
    }
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase", default)]
struct JsonResource {
    attributes: N<Vec<Msg<JsonKeyValue>>>,
    dropped_attributes_count: Int<u32>,
    entity_refs: N<Vec<Msg<JsonEntityRef>>>,
}

impl From<JsonResource> for Resource {
    fn from(v: JsonResource) -> Self {
        Resource {
            attributes: values(v.attributes),
            dropped_attributes_count: v.dropped_attributes_count.0,
            entity_refs: values(v.entity_refs),
        }
    }
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase", default)]
struct JsonScope {
    name: N<String>,
    version: N<String>,
    attributes: N<Vec<Msg<JsonKeyValue>>>,
    dropped_attributes_count: Int<u32>,
}

impl From<JsonScope> for InstrumentationScope {
    fn from(v: JsonScope) -> Self {
        InstrumentationScope {
            name: v.name.0,
            version: v.version.0,
            attributes: values(v.attributes),
            dropped_attributes_count: v.dropped_attributes_count.0,
        }
    }
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase", default)]
struct JsonResourceSpans {
    resource: Option<Msg<JsonResource>>,
    scope_spans: N<Vec<Msg<JsonScopeSpans>>>,
    schema_url: N<String>,
}

impl From<JsonResourceSpans> for ResourceSpans {
    fn from(v: JsonResourceSpans) -> Self {
        ResourceSpans {
            resource: message(v.resource),
            scope_spans: values(v.scope_spans),
            schema_url: v.schema_url.0,
        }
    }
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase", default)]
struct JsonScopeSpans {
    scope: Option<Msg<JsonScope>>,
    spans: N<Vec<Msg<JsonSpan>>>,
    schema_url: N<String>,
}

impl From<JsonScopeSpans> for ScopeSpans {
    fn from(v: JsonScopeSpans) -> Self {
        ScopeSpans {
            scope: message(v.scope),
            spans: values(v.spans),
            schema_url: v.schema_url.0,
        }
    }
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase", default)]
struct JsonSpan {
    trace_id: Hex,
    span_id: Hex,
    trace_state: N<String>,
    parent_span_id: Hex,
    flags: Int<u32>,
    name: N<String>,
    kind: Enum<span::SpanKind>,
    start_time_unix_nano: Int<u64>,
    end_time_unix_nano: Int<u64>,
    attributes: N<Vec<Msg<JsonKeyValue>>>,
    dropped_attributes_count: Int<u32>,
    events: N<Vec<Msg<JsonEvent>>>,
    dropped_events_count: Int<u32>,
    links: N<Vec<Msg<JsonLink>>>,
    dropped_links_count: Int<u32>,
    status: Option<Msg<JsonStatus>>,
}

impl From<JsonSpan> for Span {
    fn from(v: JsonSpan) -> Self {
        Span {
            trace_id: v.trace_id.0,
            span_id: v.span_id.0,
            trace_state: v.trace_state.0,
            parent_span_id: v.parent_span_id.0,
            flags: v.flags.0,
            name: v.name.0,
            kind: v.kind.0,
            start_time_unix_nano: v.start_time_unix_nano.0,
            end_time_unix_nano: v.end_time_unix_nano.0,
            attributes: values(v.attributes),
            dropped_attributes_count: v.dropped_attributes_count.0,
            events: values(v.events),
            dropped_events_count: v.dropped_events_count.0,
            links: values(v.links),
            dropped_links_count: v.dropped_links_count.0,
            status: v.status.map(|s| Status {
                message: s.0.message.0,
                code: s.0.code.0,
            }),
        }
    }
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase", default)]
struct JsonEvent {
    time_unix_nano: Int<u64>,
    name: N<String>,
    attributes: N<Vec<Msg<JsonKeyValue>>>,
    dropped_attributes_count: Int<u32>,
}

impl From<JsonEvent> for span::Event {
    fn from(v: JsonEvent) -> Self {
        span::Event {
            time_unix_nano: v.time_unix_nano.0,
            name: v.name.0,
            attributes: values(v.attributes),
            dropped_attributes_count: v.dropped_attributes_count.0,
        }
    }
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase", default)]
struct JsonLink {
    trace_id: Hex,
    span_id: Hex,
    trace_state: N<String>,
    attributes: N<Vec<Msg<JsonKeyValue>>>,
    dropped_attributes_count: Int<u32>,
    flags: Int<u32>,
}

impl From<JsonLink> for span::Link {
    fn from(v: JsonLink) -> Self {
        span::Link {
            trace_id: v.trace_id.0,
            span_id: v.span_id.0,
            trace_state: v.trace_state.0,
            attributes: values(v.attributes),
            dropped_attributes_count: v.dropped_attributes_count.0,
            flags: v.flags.0,
        }
    }
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase", default)]
struct JsonStatus {
    message: N<String>,
    code: Enum<status::StatusCode>,
}

#[cfg(test)]
mod tests {
    use prost::Message;
    use serde_json::json;

    use super::*;
    use crate::otlp::collector::trace::v1::ExportTracePartialSuccess;
    use crate::testing::{kv, sample, string};

    /// The OTLP repository's `examples/trace.json`, times as JSON numbers.
    const EXAMPLE: &str = r#"{"resourceSpans":[{"resource":{"attributes":[{"key":"service.name","value":{"stringValue":"my.service"}}]},"scopeSpans":[{"scope":{"name":"my.library","version":"1.0.0","attributes":[{"key":"my.scope.attribute","value":{"stringValue":"some scope attribute"}}]},"spans":[{"traceId":"5B8EFFF798038103D269B633813FC60C","spanId":"EEE19B7EC3C1B174","parentSpanId":"EEE19B7EC3C1B173","name":"I'm a server span","startTimeUnixNano":1544712660000000000,"endTimeUnixNano":1544712661000000000,"kind":2,"attributes":[{"key":"my.span.attr","value":{"stringValue":"some value"}}]}]}]}]}"#;

    fn expected_example() -> ExportTraceServiceRequest {
        ExportTraceServiceRequest {
            resource_spans: vec![ResourceSpans {
                resource: Some(Resource {
                    attributes: vec![kv("service.name", string("my.service"))],
                    dropped_attributes_count: 0,
                    entity_refs: vec![],
                }),
                scope_spans: vec![ScopeSpans {
                    scope: Some(InstrumentationScope {
                        name: "my.library".into(),
                        version: "1.0.0".into(),
                        attributes: vec![kv("my.scope.attribute", string("some scope attribute"))],
                        dropped_attributes_count: 0,
                    }),
                    spans: vec![Span {
                        trace_id: vec![
                            0x5B, 0x8E, 0xFF, 0xF7, 0x98, 0x03, 0x81, 0x03, 0xD2, 0x69, 0xB6, 0x33,
                            0x81, 0x3F, 0xC6, 0x0C,
                        ],
                        span_id: vec![0xEE, 0xE1, 0x9B, 0x7E, 0xC3, 0xC1, 0xB1, 0x74],
                        parent_span_id: vec![0xEE, 0xE1, 0x9B, 0x7E, 0xC3, 0xC1, 0xB1, 0x73],
                        name: "I'm a server span".into(),
                        start_time_unix_nano: 1_544_712_660_000_000_000,
                        end_time_unix_nano: 1_544_712_661_000_000_000,
                        kind: 2,
                        attributes: vec![kv("my.span.attr", string("some value"))],
                        ..Default::default()
                    }],
                    schema_url: String::new(),
                }],
                schema_url: String::new(),
            }],
        }
    }

    fn decode(value: serde_json::Value) -> ExportTraceServiceRequest {
        decode_export_request(value.to_string().as_bytes()).unwrap()
    }

    fn decode_err(body: &str) -> String {
        decode_export_request(body.as_bytes())
            .unwrap_err()
            .to_string()
    }

    /// Decodes a single span placed in a minimal request.
    fn span_of(span: serde_json::Value) -> Span {
        let request = decode(json!({"resourceSpans": [{"scopeSpans": [{"spans": [span]}]}]}));
        request.resource_spans[0].scope_spans[0].spans[0].clone()
    }

    fn attribute_of(value: serde_json::Value) -> Option<AnyValue> {
        let span = span_of(json!({"attributes": [{"key": "k", "value": value}]}));
        span.attributes[0].value.clone()
    }

    #[test]
    fn decodes_the_otlp_example_with_numeric_times() {
        assert_eq!(
            decode_export_request(EXAMPLE.as_bytes()).unwrap(),
            expected_example()
        );
    }

    #[test]
    fn decodes_the_otlp_example_as_published_with_string_times() {
        let body = EXAMPLE
            .replace("1544712660000000000", "\"1544712660000000000\"")
            .replace("1544712661000000000", "\"1544712661000000000\"");
        assert_eq!(
            decode_export_request(body.as_bytes()).unwrap(),
            expected_example()
        );
        // Lower-case ids decode to the same bytes.
        let lower = [
            "5B8EFFF798038103D269B633813FC60C",
            "EEE19B7EC3C1B174",
            "EEE19B7EC3C1B173",
        ]
        .iter()
        .fold(body, |body, id| body.replace(id, &id.to_lowercase()));
        assert!(lower.contains("5b8efff798038103d269b633813fc60c"));
        assert_eq!(
            decode_export_request(lower.as_bytes()).unwrap(),
            expected_example()
        );
    }

    #[test]
    fn empty_and_null_bodies() {
        assert_eq!(decode(json!({})), ExportTraceServiceRequest::default());
        assert_eq!(
            decode(json!({"resourceSpans": null})),
            ExportTraceServiceRequest::default()
        );
        let span = span_of(json!({
            "traceId": null, "name": null, "kind": null, "startTimeUnixNano": null,
            "attributes": null, "status": null, "events": null
        }));
        assert_eq!(span, Span::default());
        assert!(decode_err("").contains("EOF while parsing"));
    }

    #[test]
    fn integers_as_strings_or_numbers() {
        for value in [
            json!({"intValue": "-42"}),
            json!({"intValue": -42}),
            json!({"intValue": -42.0}),
        ] {
            assert_eq!(
                attribute_of(value).unwrap().value,
                Some(Value::IntValue(-42))
            );
        }
        let max = u64::MAX;
        for start in [json!(max), json!(max.to_string())] {
            let span = span_of(
                json!({"startTimeUnixNano": start, "endTimeUnixNano": "0", "flags": "257",
                "droppedAttributesCount": 3, "droppedEventsCount": "4", "droppedLinksCount": 5}),
            );
            assert_eq!(span.start_time_unix_nano, u64::MAX);
            assert_eq!(span.flags, 257);
            assert_eq!(
                (
                    span.dropped_attributes_count,
                    span.dropped_events_count,
                    span.dropped_links_count
                ),
                (3, 4, 5)
            );
        }
        let err = decode_err(
            r#"{"resourceSpans":[{"scopeSpans":[{"spans":[{"startTimeUnixNano":-1}]}]}]}"#,
        );
        assert!(
            err.contains("integer -1 is out of range for u64") && err.contains("line 1 column"),
            "{err}"
        );
        let err = decode_err(
            r#"{"resourceSpans":[{"scopeSpans":[{"spans":[{"attributes":[{"key":"k","value":{"intValue":"1x"}}]}]}]}]}"#,
        );
        assert!(err.contains("\"1x\" is not a decimal integer"), "{err}");
        let err =
            decode_err(r#"{"resourceSpans":[{"scopeSpans":[{"spans":[{"flags":4294967296}]}]}]}"#);
        assert!(err.contains("out of range for u32"), "{err}");
    }

    #[test]
    fn every_any_value_kind() {
        assert_eq!(
            attribute_of(json!({"stringValue": "s"})).unwrap().value,
            Some(string("s"))
        );
        assert_eq!(
            attribute_of(json!({"boolValue": true})).unwrap().value,
            Some(Value::BoolValue(true))
        );
        assert_eq!(
            attribute_of(json!({"doubleValue": 1.5})).unwrap().value,
            Some(Value::DoubleValue(1.5))
        );
        assert_eq!(
            attribute_of(json!({"doubleValue": 3})).unwrap().value,
            Some(Value::DoubleValue(3.0))
        );
        assert_eq!(
            attribute_of(json!({"doubleValue": "2.5"})).unwrap().value,
            Some(Value::DoubleValue(2.5))
        );
        assert_eq!(
            attribute_of(json!({"doubleValue": "Infinity"}))
                .unwrap()
                .value,
            Some(Value::DoubleValue(f64::INFINITY))
        );
        assert_eq!(
            attribute_of(json!({"doubleValue": "-Infinity"}))
                .unwrap()
                .value,
            Some(Value::DoubleValue(f64::NEG_INFINITY))
        );
        assert!(
            matches!(attribute_of(json!({"doubleValue": "NaN"})).unwrap().value, Some(Value::DoubleValue(d)) if d.is_nan())
        );
        for b64 in ["AP8A/w==", "AP8A/w", "AP8A_w=="] {
            assert_eq!(
                attribute_of(json!({"bytesValue": b64})).unwrap().value,
                Some(Value::BytesValue(vec![0, 255, 0, 255])),
                "{b64}"
            );
        }
        assert_eq!(attribute_of(json!({})), Some(AnyValue::default()));
        assert_eq!(
            attribute_of(json!({"stringValue": null})),
            Some(AnyValue::default())
        );
        assert_eq!(attribute_of(json!(null)), None);

        let nested = attribute_of(json!({"arrayValue": {"values": [
            {"intValue": "1"},
            {"kvlistValue": {"values": [{"key": "a", "value": {"arrayValue": {"values": [{"boolValue": false}]}}}, {"key": "b"}]}},
            {},
            null
        ]}}));
        let expected = Value::ArrayValue(ArrayValue {
            values: vec![
                AnyValue {
                    value: Some(Value::IntValue(1)),
                },
                AnyValue {
                    value: Some(Value::KvlistValue(KeyValueList {
                        values: vec![
                            kv(
                                "a",
                                Value::ArrayValue(ArrayValue {
                                    values: vec![AnyValue {
                                        value: Some(Value::BoolValue(false)),
                                    }],
                                }),
                            ),
                            KeyValue {
                                key: "b".into(),
                                value: None,
                                key_strindex: 0,
                            },
                        ],
                    })),
                },
                AnyValue::default(),
                AnyValue::default(),
            ],
        });
        assert_eq!(nested.unwrap().value, Some(expected));
        let err = decode_err(
            r#"{"resourceSpans":[{"scopeSpans":[{"spans":[{"attributes":[{"key":"k","value":{"bytesValue":"%%"}}]}]}]}]}"#,
        );
        assert!(err.contains("invalid base64"), "{err}");
        let err = decode_err(
            r#"{"resourceSpans":[{"scopeSpans":[{"spans":[{"attributes":[{"key":"k","value":{"doubleValue":"lots"}}]}]}]}]}"#,
        );
        assert!(err.contains("\"lots\" is not a number"), "{err}");
    }

    #[test]
    fn unknown_fields_are_ignored_everywhere() {
        let request = decode(json!({
            "future": {"nested": [1, 2]},
            "resourceSpans": [{
                "unknown": 1,
                "resource": {"attributes": [{"key": "k", "value": {"stringValue": "v", "newValueKind": {"x": 1}}, "extra": true}], "entityRefs": [{"type": "service", "idKeys": ["service.name"], "other": 0}]},
                "scopeSpans": [{"scope": {"name": "s", "what": []}, "spans": [{"name": "n", "dropped_attributes_count": 5, "newField": "x", "status": {"code": 2, "message": "m", "extra": null}}]}]
            }]
        }));
        let rs = &request.resource_spans[0];
        let resource = rs.resource.as_ref().unwrap();
        assert_eq!(resource.attributes, vec![kv("k", string("v"))]);
        assert_eq!(
            resource.entity_refs,
            vec![EntityRef {
                r#type: "service".into(),
                id_keys: vec!["service.name".into()],
                ..Default::default()
            }]
        );
        let span = &rs.scope_spans[0].spans[0];
        assert_eq!(span.name, "n");
        assert_eq!(
            span.dropped_attributes_count, 0,
            "snake_case keys are not OTLP/JSON and are ignored"
        );
        assert_eq!(
            span.status,
            Some(Status {
                message: "m".into(),
                code: 2
            })
        );
    }

    #[test]
    fn events_links_status_and_enums() {
        let span = span_of(json!({
            "traceId": "0102030405060708090A0B0C0D0E0F10",
            "spanId": "a1a2a3a4a5a6a7a8",
            "parentSpanId": "",
            "traceState": "k=v",
            "kind": "SPAN_KIND_CLIENT",
            "status": {"code": "STATUS_CODE_ERROR"},
            "events": [{"timeUnixNano": "1544712660500000000", "name": "ev", "attributes": [{"key": "e", "value": {"intValue": 7}}], "droppedAttributesCount": 1}],
            "links": [{"traceId": "FFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFF", "spanId": "0000000000000001", "traceState": "t", "attributes": [], "droppedAttributesCount": 2, "flags": 256}]
        }));
        assert_eq!(span.trace_id, (1..=16).collect::<Vec<u8>>());
        assert_eq!(
            span.span_id,
            vec![0xa1, 0xa2, 0xa3, 0xa4, 0xa5, 0xa6, 0xa7, 0xa8]
        );
        assert!(span.parent_span_id.is_empty());
        assert_eq!(span.trace_state, "k=v");
        assert_eq!(span.kind, 3);
        assert_eq!(
            span.status,
            Some(Status {
                message: String::new(),
                code: 2
            })
        );
        assert_eq!(
            span.events,
            vec![span::Event {
                time_unix_nano: 1_544_712_660_500_000_000,
                name: "ev".into(),
                attributes: vec![kv("e", Value::IntValue(7))],
                dropped_attributes_count: 1
            }]
        );
        assert_eq!(
            span.links,
            vec![span::Link {
                trace_id: vec![0xff; 16],
                span_id: vec![0, 0, 0, 0, 0, 0, 0, 1],
                trace_state: "t".into(),
                attributes: vec![],
                dropped_attributes_count: 2,
                flags: 256
            }]
        );
        let err =
            decode_err(r#"{"resourceSpans":[{"scopeSpans":[{"spans":[{"kind":"SERVER"}]}]}]}"#);
        assert!(err.contains("unknown enum value \"SERVER\""), "{err}");
    }

    #[test]
    fn errors_name_the_problem_and_position() {
        let body =
            "{\n  \"resourceSpans\": [{\"scopeSpans\": [{\"spans\": [{\"traceId\": \"zz\"}]}]}]\n}";
        let err = decode_err(body);
        assert!(
            err.starts_with("invalid OTLP/JSON request: invalid hex id \"zz\""),
            "{err}"
        );
        assert!(err.contains("line 2 column"), "{err}");
        assert!(decode_err("{\"resourceSpans\": [")
            .contains("EOF while parsing a list at line 1 column 19"));
        assert!(decode_err("[]").contains("invalid type: sequence, expected a JSON object"));
        assert!(decode_err("null").contains("invalid type: null, expected a JSON object"));
        let positional = r#"{"resourceSpans":[{"scopeSpans":[{"spans":[["00", "01"]]}]}]}"#;
        assert!(decode_err(positional).contains("expected a JSON object at line 1 column"));
    }

    #[test]
    fn encoding_is_spec_compliant() {
        let mut input = sample();
        input[0].scope_spans[0].spans[0]
            .attributes
            .push(kv("big", Value::IntValue(i64::MIN)));
        let json = resource_spans_to_json(&input);
        let root = &json[0]["scopeSpans"][0]["spans"][0];
        assert_eq!(root["traceId"], "abababababababababababababababab");
        assert_eq!(root["spanId"], "0101010101010101");
        assert!(root.get("parentSpanId").is_none());
        assert_eq!(root["kind"], 2);
        assert_eq!(root["flags"], 0x301);
        assert_eq!(root["startTimeUnixNano"], "1700000000123456789");
        assert_eq!(root["status"], json!({"code": 2, "message": "boom"}));
        let attrs = root["attributes"].as_array().unwrap();
        let find = |key: &str| attrs.iter().find(|a| a["key"] == key).unwrap()["value"].clone();
        assert_eq!(find("i"), json!({"intValue": "-42"}));
        assert_eq!(find("big"), json!({"intValue": "-9223372036854775808"}));
        assert_eq!(find("nan"), json!({"doubleValue": "NaN"}));
        assert_eq!(find("d"), json!({"doubleValue": 2.5}));
        assert_eq!(find("bytes"), json!({"bytesValue": "AAH/"}));
        assert_eq!(
            find("arr"),
            json!({"arrayValue": {"values": [{"intValue": "1"}, {"stringValue": "a"}, {"arrayValue": {"values": [{"boolValue": true}]}}]}})
        );
        assert!(attrs
            .iter()
            .any(|a| a["key"] == "none" && a.get("value").is_none()));
        assert_eq!(root["events"][0]["timeUnixNano"], "1700000000123456799");
        assert_eq!(root["events"][1]["timeUnixNano"], u64::MAX.to_string());
        assert_eq!(
            root["links"][0]["traceId"],
            "cdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcd"
        );
        let child = &json[0]["scopeSpans"][0]["spans"][1];
        assert_eq!(child["parentSpanId"], "0101010101010101");
        assert!(child.get("status").is_none());
        assert!(json[1].get("resource").is_none());
        assert_eq!(
            json[0]["resource"]["entityRefs"],
            json!([
                {
                    "schemaUrl": "https://opentelemetry.io/schemas/1.30.0",
                    "type": "service",
                    "idKeys": ["service.name", "service.namespace"],
                    "descriptionKeys": ["deployment.environment"]
                },
                {"type": "k8s.pod", "idKeys": ["k8s.pod.name"]}
            ])
        );

        // Encode -> decode is exact (compared as protobuf bytes, so NaN compares by bits).
        let body = json!({"resourceSpans": json}).to_string();
        let back = decode_export_request(body.as_bytes()).unwrap();
        let expected = ExportTraceServiceRequest {
            resource_spans: input,
        };
        assert_eq!(back.encode_to_vec(), expected.encode_to_vec());
    }

    #[test]
    fn export_responses() {
        assert_eq!(
            encode_export_response(&ExportTraceServiceResponse::default()),
            b"{}"
        );
        let partial = ExportTraceServiceResponse {
            partial_success: Some(ExportTracePartialSuccess {
                rejected_spans: 3,
                error_message: "too old".into(),
            }),
        };
        let body: serde_json::Value =
            serde_json::from_slice(&encode_export_response(&partial)).unwrap();
        assert_eq!(
            body,
            json!({"partialSuccess": {"rejectedSpans": "3", "errorMessage": "too old"}})
        );
    }
}
