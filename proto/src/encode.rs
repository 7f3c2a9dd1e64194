//! OTLP -> Arrow: one row per span, built column-wise with pre-sized builders.

use std::sync::Arc;

use arrow::array::{
    ArrayRef, BinaryBuilder, BooleanBuilder, Float64Array, Float64Builder, Int32Array, Int64Array,
    Int64Builder, Int8Array, ListArray, MapArray, StringBuilder, StructArray,
    TimestampMicrosecondArray,
};
use arrow::buffer::{OffsetBuffer, ScalarBuffer};
use arrow::datatypes::DataType;
use arrow::record_batch::RecordBatch;
use chrono::DateTime;
use prost::Message;

use crate::attr::{render_json, ResourceColumns, SpanColumns};
use crate::otlp::common::v1::{any_value::Value, AnyValue, InstrumentationScope, KeyValue};
use crate::otlp::resource::v1::Resource;
use crate::otlp::trace::v1::{span, ResourceSpans, Span};
use crate::schema::{
    attr_type, span_schema, ATTR_ENTRIES_FIELD, ATTR_VALUE_FIELDS, EVENT_FIELDS, EVENT_ITEM_FIELD,
    LINK_FIELDS, LINK_ITEM_FIELD, UTC,
};
use crate::{Error, Result};

const NANOS_PER_HOUR: u64 = 3_600_000_000_000;
/// 9999-12-31T23:59:59Z: keeps the partition date at four year digits whatever the input.
const MAX_PARTITION_SECS: u64 = 253_402_300_799;

/// The `date` (`YYYY-MM-DD`) and `hour` (`HH`) partition values, in UTC, of a span starting at
/// `start_time_unix_nano`. Never panics: times past year 9999 are clamped to its last second
/// (u64 nanoseconds only reach year 2554, so the clamp is a guard, not a policy).
pub fn partition_values(start_time_unix_nano: u64) -> (String, String) {
    let secs = (start_time_unix_nano / 1_000_000_000).min(MAX_PARTITION_SECS);
    // `secs` fits in i64 and in chrono's range after the clamp; UNIX_EPOCH is unreachable.
    let time = i64::try_from(secs)
        .ok()
        .and_then(|secs| DateTime::from_timestamp(secs, 0))
        .unwrap_or(DateTime::UNIX_EPOCH);
    (
        time.format("%Y-%m-%d").to_string(),
        time.format("%H").to_string(),
    )
}

/// Converts OTLP resource spans into one [`RecordBatch`] of [`span_schema`], one row per span, in
/// input order. `adjusted_count` is 1.0 and `sampling_rule` null (sampling sets them later).
///
/// Normalisations (the only ways the conversion is not bit-exact, see the crate docs): an absent
/// `Resource` or `InstrumentationScope` is stored as an empty one, an absent `Status` as the default
/// one, an attribute without a value as an empty `AnyValue`, top-level `KeyValue.key_strindex`
/// (profiles-only) is not stored, and `ResourceSpans`/`ScopeSpans` without spans produce no rows.
///
/// Fails only if the batch would exceed Arrow's 2 GiB per-column limit.
pub fn resource_spans_to_batch(resource_spans: &[ResourceSpans]) -> Result<RecordBatch> {
    let sizes = Sizes::measure(resource_spans)?;
    let mut builder = BatchBuilder::with_capacity(&sizes);
    for rs in resource_spans {
        let empty_resource = Resource::default();
        let resource = rs.resource.as_ref().unwrap_or(&empty_resource);
        let resource_columns = ResourceColumns::extract(&resource.attributes);
        let entity_refs = encode_entity_refs(resource);
        for ss in &rs.scope_spans {
            let empty_scope = InstrumentationScope::default();
            let scope = ss.scope.as_ref().unwrap_or(&empty_scope);
            let ctx = Context {
                resource,
                resource_schema_url: &rs.schema_url,
                resource_entity_refs: entity_refs.as_deref(),
                resource_columns: &resource_columns,
                scope,
                scope_schema_url: &ss.schema_url,
            };
            for span in &ss.spans {
                builder.append(&ctx, span)?;
            }
        }
    }
    builder.finish()
}

/// Counts gathered before building, to pre-size every builder and to refuse batches whose string
/// columns could overflow Arrow's i32 offsets.
#[derive(Default)]
struct Sizes {
    spans: usize,
    span_attrs: usize,
    resource_attrs: usize,
    scope_attrs: usize,
    events: usize,
    event_attrs: usize,
    links: usize,
    link_attrs: usize,
}

/// Upper bound for bytes in any one variable-length column, relative to the protobuf size of the
/// data copied into it: JSON renderings of arrays/kvlists can escape a byte into six (`\u0001`).
const WORST_CASE_EXPANSION: usize = 6;
/// Fixed per-span bytes not accounted for by the protobuf size (the partition strings).
const PER_SPAN_OVERHEAD: usize = 16;

impl Sizes {
    fn measure(resource_spans: &[ResourceSpans]) -> Result<Self> {
        let mut sizes = Sizes::default();
        let mut bytes = 0usize;
        for rs in resource_spans {
            let resource_attrs = rs.resource.as_ref().map_or(0, |r| r.attributes.len());
            let resource_len =
                rs.resource.as_ref().map_or(0, |r| r.encoded_len()) + rs.schema_url.len();
            for ss in &rs.scope_spans {
                let scope_attrs = ss.scope.as_ref().map_or(0, |s| s.attributes.len());
                let scope_len =
                    ss.scope.as_ref().map_or(0, |s| s.encoded_len()) + ss.schema_url.len();
                let repeated = resource_len + scope_len + PER_SPAN_OVERHEAD;
                for span in &ss.spans {
                    sizes.spans += 1;
                    sizes.span_attrs += span.attributes.len();
                    sizes.resource_attrs += resource_attrs;
                    sizes.scope_attrs += scope_attrs;
                    sizes.events += span.events.len();
                    sizes.event_attrs += span
                        .events
                        .iter()
                        .map(|e| e.attributes.len())
                        .sum::<usize>();
                    sizes.links += span.links.len();
                    sizes.link_attrs +=
                        span.links.iter().map(|l| l.attributes.len()).sum::<usize>();
                    bytes = bytes.saturating_add(span.encoded_len() + repeated);
                }
            }
        }
        if bytes.saturating_mul(WORST_CASE_EXPANSION) > i32::MAX as usize {
            return Err(Error::BatchTooLarge { bytes });
        }
        Ok(sizes)
    }
}

/// The `resource_entity_refs` value: a `Resource` holding only the entity refs, prost-encoded
/// (see [`crate::columns::RESOURCE_ENTITY_REFS`]); `None` when there are none. Encoded once per
/// `ResourceSpans`, not per span.
fn encode_entity_refs(resource: &Resource) -> Option<Vec<u8>> {
    (!resource.entity_refs.is_empty()).then(|| {
        Resource {
            entity_refs: resource.entity_refs.clone(),
            ..Default::default()
        }
        .encode_to_vec()
    })
}

/// Everything a span row repeats from its resource and scope.
struct Context<'a> {
    resource: &'a Resource,
    resource_schema_url: &'a str,
    resource_entity_refs: Option<&'a [u8]>,
    resource_columns: &'a ResourceColumns<'a>,
    scope: &'a InstrumentationScope,
    scope_schema_url: &'a str,
}

/// Reusable buffers so attribute encoding does not allocate per value.
#[derive(Default)]
struct Scratch {
    bytes: Vec<u8>,
    text: String,
}

fn offset(len: usize) -> Result<i32> {
    i32::try_from(len).map_err(|_| Error::BatchTooLarge { bytes: len })
}

fn non_empty(s: &str) -> Option<&str> {
    (!s.is_empty()).then_some(s)
}

fn non_empty_bytes(b: &[u8]) -> Option<&[u8]> {
    (!b.is_empty()).then_some(b)
}

fn int64_array(values: Vec<i64>) -> ArrayRef {
    Arc::new(Int64Array::new(ScalarBuffer::from(values), None))
}

/// The non-null slots of one AttrValue.
#[derive(Default)]
struct Slots<'a> {
    str: Option<&'a str>,
    int: Option<i64>,
    double: Option<f64>,
    boolean: Option<bool>,
    bytes: Option<&'a [u8]>,
}

/// Builds the AttrValue struct column.
struct AttrValueBuilder {
    kind: Vec<i8>,
    str: StringBuilder,
    int: Int64Builder,
    double: Float64Builder,
    boolean: BooleanBuilder,
    bytes: BinaryBuilder,
}

impl AttrValueBuilder {
    fn with_capacity(values: usize) -> Self {
        Self {
            kind: Vec::with_capacity(values),
            str: StringBuilder::with_capacity(values, values * 16),
            int: Int64Builder::with_capacity(values),
            double: Float64Builder::with_capacity(values),
            boolean: BooleanBuilder::with_capacity(values),
            bytes: BinaryBuilder::with_capacity(values, 0),
        }
    }

    fn append(&mut self, value: Option<&AnyValue>, scratch: &mut Scratch) -> Result<()> {
        let mut slots = Slots::default();
        let kind = match value.and_then(|v| v.value.as_ref()) {
            None => attr_type::EMPTY,
            Some(Value::StringValue(s)) => {
                slots.str = Some(s);
                attr_type::STRING
            }
            Some(Value::BoolValue(b)) => {
                slots.boolean = Some(*b);
                attr_type::BOOL
            }
            Some(Value::IntValue(i)) => {
                slots.int = Some(*i);
                attr_type::INT
            }
            Some(Value::DoubleValue(d)) => {
                slots.double = Some(*d);
                attr_type::DOUBLE
            }
            Some(Value::BytesValue(b)) => {
                slots.bytes = Some(b);
                attr_type::BYTES
            }
            Some(Value::StringValueStrindex(i)) => {
                slots.int = Some(i64::from(*i));
                attr_type::STRING_STRINDEX
            }
            Some(nested @ (Value::ArrayValue(_) | Value::KvlistValue(_))) => {
                scratch.text.clear();
                render_json(value, &mut scratch.text);
                scratch.bytes.clear();
                if let Some(value) = value {
                    value.encode(&mut scratch.bytes)?;
                }
                slots.str = Some(&scratch.text);
                slots.bytes = Some(&scratch.bytes);
                match nested {
                    Value::ArrayValue(_) => attr_type::ARRAY,
                    _ => attr_type::KVLIST,
                }
            }
        };
        self.kind.push(kind);
        self.str.append_option(slots.str);
        self.int.append_option(slots.int);
        self.double.append_option(slots.double);
        self.boolean.append_option(slots.boolean);
        self.bytes.append_option(slots.bytes);
        Ok(())
    }

    fn finish(mut self) -> Result<StructArray> {
        let columns: Vec<ArrayRef> = vec![
            Arc::new(Int8Array::new(ScalarBuffer::from(self.kind), None)),
            Arc::new(self.str.finish()),
            Arc::new(self.int.finish()),
            Arc::new(self.double.finish()),
            Arc::new(self.boolean.finish()),
            Arc::new(self.bytes.finish()),
        ];
        Ok(StructArray::try_new(
            ATTR_VALUE_FIELDS.clone(),
            columns,
            None,
        )?)
    }
}

/// Builds one `Map<Utf8, AttrValue>` column. Maps are never null: no attributes is an empty map.
struct AttrMapBuilder {
    offsets: Vec<i32>,
    keys: StringBuilder,
    values: AttrValueBuilder,
}

impl AttrMapBuilder {
    fn with_capacity(rows: usize, entries: usize) -> Self {
        let mut offsets = Vec::with_capacity(rows + 1);
        offsets.push(0);
        Self {
            offsets,
            keys: StringBuilder::with_capacity(entries, entries * 16),
            values: AttrValueBuilder::with_capacity(entries),
        }
    }

    fn append(&mut self, attributes: &[KeyValue], scratch: &mut Scratch) -> Result<()> {
        for kv in attributes {
            self.keys.append_value(&kv.key);
            self.values.append(kv.value.as_ref(), scratch)?;
        }
        self.offsets.push(offset(self.values.kind.len())?);
        Ok(())
    }

    fn finish(mut self) -> Result<MapArray> {
        let DataType::Struct(entry_fields) = ATTR_ENTRIES_FIELD.data_type() else {
            unreachable!("the attribute map entries field is a struct")
        };
        let entries = StructArray::try_new(
            entry_fields.clone(),
            vec![
                Arc::new(self.keys.finish()),
                Arc::new(self.values.finish()?),
            ],
            None,
        )?;
        Ok(MapArray::try_new(
            ATTR_ENTRIES_FIELD.clone(),
            OffsetBuffer::new(ScalarBuffer::from(self.offsets)),
            entries,
            None,
            false,
        )?)
    }
}

/// Builds the `events` column: List<Struct{time_unix_nano, name, attributes, dropped}>.
struct EventsBuilder {
    offsets: Vec<i32>,
    time: Vec<i64>,
    name: StringBuilder,
    attributes: AttrMapBuilder,
    dropped: Vec<i64>,
}

impl EventsBuilder {
    fn with_capacity(rows: usize, events: usize, attributes: usize) -> Self {
        let mut offsets = Vec::with_capacity(rows + 1);
        offsets.push(0);
        Self {
            offsets,
            time: Vec::with_capacity(events),
            name: StringBuilder::with_capacity(events, events * 16),
            attributes: AttrMapBuilder::with_capacity(events, attributes),
            dropped: Vec::with_capacity(events),
        }
    }

    fn append(&mut self, events: &[span::Event], scratch: &mut Scratch) -> Result<()> {
        for event in events {
            self.time.push(event.time_unix_nano as i64);
            self.name.append_value(&event.name);
            self.attributes.append(&event.attributes, scratch)?;
            self.dropped.push(i64::from(event.dropped_attributes_count));
        }
        self.offsets.push(offset(self.time.len())?);
        Ok(())
    }

    fn finish(mut self) -> Result<ArrayRef> {
        let items = StructArray::try_new(
            EVENT_FIELDS.clone(),
            vec![
                int64_array(self.time),
                Arc::new(self.name.finish()),
                Arc::new(self.attributes.finish()?),
                int64_array(self.dropped),
            ],
            None,
        )?;
        Ok(Arc::new(ListArray::try_new(
            EVENT_ITEM_FIELD.clone(),
            OffsetBuffer::new(ScalarBuffer::from(self.offsets)),
            Arc::new(items),
            None,
        )?))
    }
}

/// Builds the `links` column: List<Struct{trace_id, span_id, trace_state, attributes, dropped, flags}>.
struct LinksBuilder {
    offsets: Vec<i32>,
    trace_id: BinaryBuilder,
    span_id: BinaryBuilder,
    trace_state: StringBuilder,
    attributes: AttrMapBuilder,
    dropped: Vec<i64>,
    flags: Vec<i64>,
}

impl LinksBuilder {
    fn with_capacity(rows: usize, links: usize, attributes: usize) -> Self {
        let mut offsets = Vec::with_capacity(rows + 1);
        offsets.push(0);
        Self {
            offsets,
            trace_id: BinaryBuilder::with_capacity(links, links * 16),
            span_id: BinaryBuilder::with_capacity(links, links * 8),
            trace_state: StringBuilder::with_capacity(links, 0),
            attributes: AttrMapBuilder::with_capacity(links, attributes),
            dropped: Vec::with_capacity(links),
            flags: Vec::with_capacity(links),
        }
    }

    fn append(&mut self, links: &[span::Link], scratch: &mut Scratch) -> Result<()> {
        for link in links {
            self.trace_id.append_value(&link.trace_id);
            self.span_id.append_value(&link.span_id);
            self.trace_state.append_option(non_empty(&link.trace_state));
            self.attributes.append(&link.attributes, scratch)?;
            self.dropped.push(i64::from(link.dropped_attributes_count));
            self.flags.push(i64::from(link.flags));
        }
        self.offsets.push(offset(self.dropped.len())?);
        Ok(())
    }

    fn finish(mut self) -> Result<ArrayRef> {
        let items = StructArray::try_new(
            LINK_FIELDS.clone(),
            vec![
                Arc::new(self.trace_id.finish()),
                Arc::new(self.span_id.finish()),
                Arc::new(self.trace_state.finish()),
                Arc::new(self.attributes.finish()?),
                int64_array(self.dropped),
                int64_array(self.flags),
            ],
            None,
        )?;
        Ok(Arc::new(ListArray::try_new(
            LINK_ITEM_FIELD.clone(),
            OffsetBuffer::new(ScalarBuffer::from(self.offsets)),
            Arc::new(items),
            None,
        )?))
    }
}

/// Caches the partition strings of the last hour seen: spans of a request cluster in time.
struct PartitionCache {
    hour_bucket: Option<u64>,
    date: String,
    hour: String,
}

impl PartitionCache {
    fn get(&mut self, start_time_unix_nano: u64) -> (&str, &str) {
        let bucket = start_time_unix_nano / NANOS_PER_HOUR;
        if self.hour_bucket != Some(bucket) {
            (self.date, self.hour) = partition_values(start_time_unix_nano);
            self.hour_bucket = Some(bucket);
        }
        (&self.date, &self.hour)
    }
}

/// All top-level columns, in schema order.
struct BatchBuilder {
    scratch: Scratch,
    partitions: PartitionCache,
    trace_id: BinaryBuilder,
    span_id: BinaryBuilder,
    parent_span_id: BinaryBuilder,
    trace_state: StringBuilder,
    flags: Vec<i64>,
    name: StringBuilder,
    kind: Vec<i32>,
    start: Vec<i64>,
    end: Vec<i64>,
    duration: Vec<i64>,
    start_time: Vec<i64>,
    status_code: Vec<i32>,
    status_message: StringBuilder,
    span_attributes: AttrMapBuilder,
    dropped_attributes: Vec<i64>,
    events: EventsBuilder,
    dropped_events: Vec<i64>,
    links: LinksBuilder,
    dropped_links: Vec<i64>,
    resource_attributes: AttrMapBuilder,
    resource_dropped: Vec<i64>,
    resource_schema_url: StringBuilder,
    resource_entity_refs: BinaryBuilder,
    scope_name: StringBuilder,
    scope_version: StringBuilder,
    scope_attributes: AttrMapBuilder,
    scope_dropped: Vec<i64>,
    scope_schema_url: StringBuilder,
    service_name: StringBuilder,
    service_namespace: StringBuilder,
    deployment_environment: StringBuilder,
    k8s_namespace_name: StringBuilder,
    k8s_pod_name: StringBuilder,
    k8s_deployment_name: StringBuilder,
    k8s_node_name: StringBuilder,
    k8s_cluster_name: StringBuilder,
    http_request_method: StringBuilder,
    http_response_status_code: Int64Builder,
    http_route: StringBuilder,
    url_path: StringBuilder,
    db_system: StringBuilder,
    rpc_service: StringBuilder,
    date: StringBuilder,
    hour: StringBuilder,
}

impl BatchBuilder {
    fn with_capacity(sizes: &Sizes) -> Self {
        let n = sizes.spans;
        let strings = |avg: usize| StringBuilder::with_capacity(n, n * avg);
        Self {
            scratch: Scratch::default(),
            partitions: PartitionCache {
                hour_bucket: None,
                date: String::new(),
                hour: String::new(),
            },
            trace_id: BinaryBuilder::with_capacity(n, n * 16),
            span_id: BinaryBuilder::with_capacity(n, n * 8),
            parent_span_id: BinaryBuilder::with_capacity(n, n * 8),
            trace_state: strings(0),
            flags: Vec::with_capacity(n),
            name: strings(24),
            kind: Vec::with_capacity(n),
            start: Vec::with_capacity(n),
            end: Vec::with_capacity(n),
            duration: Vec::with_capacity(n),
            start_time: Vec::with_capacity(n),
            status_code: Vec::with_capacity(n),
            status_message: strings(0),
            span_attributes: AttrMapBuilder::with_capacity(n, sizes.span_attrs),
            dropped_attributes: Vec::with_capacity(n),
            events: EventsBuilder::with_capacity(n, sizes.events, sizes.event_attrs),
            dropped_events: Vec::with_capacity(n),
            links: LinksBuilder::with_capacity(n, sizes.links, sizes.link_attrs),
            dropped_links: Vec::with_capacity(n),
            resource_attributes: AttrMapBuilder::with_capacity(n, sizes.resource_attrs),
            resource_dropped: Vec::with_capacity(n),
            resource_schema_url: strings(0),
            resource_entity_refs: BinaryBuilder::with_capacity(n, 0),
            scope_name: strings(16),
            scope_version: strings(8),
            scope_attributes: AttrMapBuilder::with_capacity(n, sizes.scope_attrs),
            scope_dropped: Vec::with_capacity(n),
            scope_schema_url: strings(0),
            service_name: strings(16),
            service_namespace: strings(0),
            deployment_environment: strings(0),
            k8s_namespace_name: strings(0),
            k8s_pod_name: strings(0),
            k8s_deployment_name: strings(0),
            k8s_node_name: strings(0),
            k8s_cluster_name: strings(0),
            http_request_method: strings(0),
            http_response_status_code: Int64Builder::with_capacity(n),
            http_route: strings(0),
            url_path: strings(0),
            db_system: strings(0),
            rpc_service: strings(0),
            date: strings(10),
            hour: strings(2),
        }
    }

    fn append(&mut self, ctx: &Context<'_>, span: &Span) -> Result<()> {
        let scratch = &mut self.scratch;
        self.trace_id.append_value(&span.trace_id);
        self.span_id.append_value(&span.span_id);
        self.parent_span_id
            .append_option(non_empty_bytes(&span.parent_span_id));
        self.trace_state.append_option(non_empty(&span.trace_state));
        self.flags.push(i64::from(span.flags));
        self.name.append_value(&span.name);
        self.kind.push(span.kind);

        let (start, end) = (span.start_time_unix_nano, span.end_time_unix_nano);
        self.start.push(start as i64);
        self.end.push(end as i64);
        self.duration
            .push(i64::try_from(end.saturating_sub(start)).unwrap_or(i64::MAX));
        // u64::MAX / 1000 < i64::MAX, so this never wraps.
        self.start_time.push((start / 1_000) as i64);

        let (code, message) = span
            .status
            .as_ref()
            .map_or((0, ""), |s| (s.code, s.message.as_str()));
        self.status_code.push(code);
        self.status_message.append_option(non_empty(message));

        self.span_attributes.append(&span.attributes, scratch)?;
        self.dropped_attributes
            .push(i64::from(span.dropped_attributes_count));
        self.events.append(&span.events, scratch)?;
        self.dropped_events
            .push(i64::from(span.dropped_events_count));
        self.links.append(&span.links, scratch)?;
        self.dropped_links.push(i64::from(span.dropped_links_count));

        self.resource_attributes
            .append(&ctx.resource.attributes, scratch)?;
        self.resource_dropped
            .push(i64::from(ctx.resource.dropped_attributes_count));
        self.resource_schema_url
            .append_option(non_empty(ctx.resource_schema_url));
        self.resource_entity_refs
            .append_option(ctx.resource_entity_refs);
        self.scope_name.append_option(non_empty(&ctx.scope.name));
        self.scope_version
            .append_option(non_empty(&ctx.scope.version));
        self.scope_attributes
            .append(&ctx.scope.attributes, scratch)?;
        self.scope_dropped
            .push(i64::from(ctx.scope.dropped_attributes_count));
        self.scope_schema_url
            .append_option(non_empty(ctx.scope_schema_url));

        let res = ctx.resource_columns;
        self.service_name.append_option(res.service_name);
        self.service_namespace.append_option(res.service_namespace);
        self.deployment_environment
            .append_option(res.deployment_environment);
        self.k8s_namespace_name
            .append_option(res.k8s_namespace_name);
        self.k8s_pod_name.append_option(res.k8s_pod_name);
        self.k8s_deployment_name
            .append_option(res.k8s_deployment_name);
        self.k8s_node_name.append_option(res.k8s_node_name);
        self.k8s_cluster_name.append_option(res.k8s_cluster_name);

        let cols = SpanColumns::extract(&span.attributes);
        self.http_request_method
            .append_option(cols.http_request_method);
        self.http_response_status_code
            .append_option(cols.http_response_status_code);
        self.http_route.append_option(cols.http_route);
        self.url_path.append_option(cols.url_path);
        self.db_system.append_option(cols.db_system);
        self.rpc_service.append_option(cols.rpc_service);

        let (date, hour) = self.partitions.get(start);
        self.date.append_value(date);
        self.hour.append_value(hour);
        Ok(())
    }

    fn finish(mut self) -> Result<RecordBatch> {
        let rows = self.kind.len();
        let columns: Vec<ArrayRef> = vec![
            Arc::new(self.trace_id.finish()),
            Arc::new(self.span_id.finish()),
            Arc::new(self.parent_span_id.finish()),
            Arc::new(self.trace_state.finish()),
            int64_array(self.flags),
            Arc::new(self.name.finish()),
            Arc::new(Int32Array::new(ScalarBuffer::from(self.kind), None)),
            int64_array(self.start),
            int64_array(self.end),
            int64_array(self.duration),
            Arc::new(
                TimestampMicrosecondArray::new(ScalarBuffer::from(self.start_time), None)
                    .with_timezone(UTC),
            ),
            Arc::new(Int32Array::new(ScalarBuffer::from(self.status_code), None)),
            Arc::new(self.status_message.finish()),
            Arc::new(self.span_attributes.finish()?),
            int64_array(self.dropped_attributes),
            self.events.finish()?,
            int64_array(self.dropped_events),
            self.links.finish()?,
            int64_array(self.dropped_links),
            Arc::new(self.resource_attributes.finish()?),
            int64_array(self.resource_dropped),
            Arc::new(self.resource_schema_url.finish()),
            Arc::new(self.resource_entity_refs.finish()),
            Arc::new(self.scope_name.finish()),
            Arc::new(self.scope_version.finish()),
            Arc::new(self.scope_attributes.finish()?),
            int64_array(self.scope_dropped),
            Arc::new(self.scope_schema_url.finish()),
            Arc::new(self.service_name.finish()),
            Arc::new(self.service_namespace.finish()),
            Arc::new(self.deployment_environment.finish()),
            Arc::new(self.k8s_namespace_name.finish()),
            Arc::new(self.k8s_pod_name.finish()),
            Arc::new(self.k8s_deployment_name.finish()),
            Arc::new(self.k8s_node_name.finish()),
            Arc::new(self.k8s_cluster_name.finish()),
            Arc::new(self.http_request_method.finish()),
            Arc::new(self.http_response_status_code.finish()),
            Arc::new(self.http_route.finish()),
            Arc::new(self.url_path.finish()),
            Arc::new(self.db_system.finish()),
            Arc::new(self.rpc_service.finish()),
            Arc::new(Float64Array::new(ScalarBuffer::from(vec![1.0; rows]), None)),
            arrow::array::new_null_array(&DataType::Utf8, rows),
            Arc::new(self.date.finish()),
            Arc::new(self.hour.finish()),
        ];
        Ok(RecordBatch::try_new(span_schema(), columns)?)
    }
}

#[cfg(test)]
mod tests {
    use arrow::array::{Array, AsArray};
    use arrow::datatypes::{Float64Type, Int32Type, Int64Type, Int8Type, TimestampMicrosecondType};

    use super::*;
    use crate::columns as col;
    use crate::testing::{array_value, checkout_entity_refs, kvlist_value, sample, START};

    fn i64s(batch: &RecordBatch, name: &str) -> Vec<Option<i64>> {
        let array = batch
            .column_by_name(name)
            .unwrap()
            .as_primitive::<Int64Type>();
        array.iter().collect()
    }

    fn strs(batch: &RecordBatch, name: &str) -> Vec<Option<String>> {
        let array = batch.column_by_name(name).unwrap().as_string::<i32>();
        array.iter().map(|s| s.map(str::to_string)).collect()
    }

    fn bins(batch: &RecordBatch, name: &str) -> Vec<Option<Vec<u8>>> {
        let array = batch.column_by_name(name).unwrap().as_binary::<i32>();
        array.iter().map(|b| b.map(<[u8]>::to_vec)).collect()
    }

    #[test]
    fn one_row_per_span_in_input_order_with_the_canonical_schema() {
        let batch = resource_spans_to_batch(&sample()).unwrap();
        assert_eq!(batch.schema(), span_schema());
        assert_eq!(batch.num_rows(), 5);
        assert_eq!(
            strs(&batch, col::NAME),
            ["POST /orders", "SELECT", "internal", "orphan", "late"].map(|s| Some(s.to_string()))
        );
    }

    #[test]
    fn empty_input_gives_an_empty_batch() {
        let batch = resource_spans_to_batch(&[]).unwrap();
        assert_eq!(batch.num_rows(), 0);
        assert_eq!(batch.schema(), span_schema());
    }

    #[test]
    fn identity_times_and_status_columns() {
        let batch = resource_spans_to_batch(&sample()).unwrap();
        let ids = bins(&batch, col::SPAN_ID);
        assert_eq!(ids[0], Some(vec![1; 8]));
        assert_eq!(bins(&batch, col::TRACE_ID)[0], Some(vec![0xab; 16]));
        assert_eq!(
            bins(&batch, col::PARENT_SPAN_ID)[..2],
            [None, Some(vec![1; 8])]
        );
        assert_eq!(
            strs(&batch, col::TRACE_STATE)[..2],
            [Some("vendor=x".into()), None]
        );
        assert_eq!(i64s(&batch, col::FLAGS)[0], Some(0x301));
        let kinds = batch
            .column_by_name(col::KIND)
            .unwrap()
            .as_primitive::<Int32Type>();
        assert_eq!(kinds.values()[..2], [2, 3]);

        let starts = i64s(&batch, col::START_TIME_UNIX_NANO);
        assert_eq!(starts[0], Some(START as i64));
        // u64 above i64::MAX is bit-cast, so it reads back exactly with `as u64`.
        assert_eq!(starts[1].map(|v| v as u64), Some(u64::MAX - 5));
        let durations = i64s(&batch, col::DURATION_NANO);
        assert_eq!(durations[..3], [Some(1_500), Some(0), Some(0)]);
        let micros = batch
            .column_by_name(col::START_TIME)
            .unwrap()
            .as_primitive::<TimestampMicrosecondType>();
        assert_eq!(micros.value(0), (START / 1_000) as i64);
        assert_eq!(micros.value(1), ((u64::MAX - 5) / 1_000) as i64);

        let codes = batch
            .column_by_name(col::STATUS_CODE)
            .unwrap()
            .as_primitive::<Int32Type>();
        assert_eq!(codes.values()[..2], [2, 0]);
        assert_eq!(
            strs(&batch, col::STATUS_MESSAGE)[..2],
            [Some("boom".into()), None]
        );
        assert_eq!(i64s(&batch, col::DROPPED_ATTRIBUTES_COUNT)[0], Some(2));
        assert_eq!(i64s(&batch, col::DROPPED_EVENTS_COUNT)[0], Some(4));
        assert_eq!(i64s(&batch, col::DROPPED_LINKS_COUNT)[0], Some(6));
    }

    #[test]
    fn resource_and_scope_columns_repeat_per_span_and_absent_ones_are_empty() {
        let batch = resource_spans_to_batch(&sample()).unwrap();
        let resource_attrs = batch
            .column_by_name(col::RESOURCE_ATTRIBUTES)
            .unwrap()
            .as_map();
        assert_eq!(resource_attrs.value_length(0), 8);
        assert_eq!(resource_attrs.value_length(2), 8);
        assert_eq!(
            resource_attrs.value_length(3),
            0,
            "absent resource -> empty map"
        );
        assert!(resource_attrs.is_valid(3));
        assert_eq!(
            i64s(&batch, col::RESOURCE_DROPPED_ATTRIBUTES_COUNT)[..4],
            [Some(1), Some(1), Some(1), Some(0)]
        );
        let url = Some("https://opentelemetry.io/schemas/1.21.0".to_string());
        assert_eq!(
            strs(&batch, col::RESOURCE_SCHEMA_URL)[..4],
            [url.clone(), url.clone(), url, None]
        );
        assert_eq!(
            strs(&batch, col::SCOPE_NAME)[..3],
            [
                Some("io.opentelemetry.http".into()),
                Some("io.opentelemetry.http".into()),
                None
            ]
        );
        assert_eq!(
            strs(&batch, col::SCOPE_VERSION)[0].as_deref(),
            Some("1.2.0")
        );
        assert_eq!(
            i64s(&batch, col::SCOPE_DROPPED_ATTRIBUTES_COUNT)[..3],
            [Some(7), Some(7), Some(0)]
        );
        let scope_attrs = batch
            .column_by_name(col::SCOPE_ATTRIBUTES)
            .unwrap()
            .as_map();
        assert_eq!(scope_attrs.value_length(0), 1);
        assert_eq!(scope_attrs.value_length(2), 0);
        assert_eq!(
            strs(&batch, col::SCOPE_SCHEMA_URL)[..3],
            [
                Some("https://opentelemetry.io/schemas/1.26.0".into()),
                Some("https://opentelemetry.io/schemas/1.26.0".into()),
                None
            ]
        );
    }

    #[test]
    fn entity_refs_are_stored_prost_encoded_and_null_when_empty() {
        let batch = resource_spans_to_batch(&sample()).unwrap();
        let schema = batch.schema();
        let index = schema.index_of(col::RESOURCE_ENTITY_REFS).unwrap();
        assert_eq!(schema.field(index - 1).name(), col::RESOURCE_SCHEMA_URL);
        assert_eq!(schema.field(index).data_type(), &DataType::Binary);

        let values = bins(&batch, col::RESOURCE_ENTITY_REFS);
        let expected = Resource {
            entity_refs: checkout_entity_refs(),
            ..Default::default()
        }
        .encode_to_vec();
        // Rows: three checkout spans, the orphan (no resource), the late checkout span.
        assert_eq!(
            values,
            [
                Some(expected.clone()),
                Some(expected.clone()),
                Some(expected.clone()),
                None,
                Some(expected)
            ]
        );
        let decoded = Resource::decode(values[0].as_deref().unwrap()).unwrap();
        assert_eq!(decoded.entity_refs, checkout_entity_refs());
        assert!(decoded.attributes.is_empty() && decoded.dropped_attributes_count == 0);

        // A resource with attributes but no entity refs stores null, not an empty value.
        let mut input = sample();
        input[0].resource.as_mut().unwrap().entity_refs.clear();
        let batch = resource_spans_to_batch(&input).unwrap();
        assert_eq!(bins(&batch, col::RESOURCE_ENTITY_REFS)[0], None);
    }

    #[test]
    fn every_attribute_kind_is_stored_in_its_slot() {
        let batch = resource_spans_to_batch(&sample()).unwrap();
        let map = batch.column_by_name(col::SPAN_ATTRIBUTES).unwrap().as_map();
        let keys = map.keys().as_string::<i32>();
        let values = map.values().as_struct();
        let kind = values.column(0).as_primitive::<Int8Type>();
        let str = values.column(1).as_string::<i32>();
        let int = values.column(2).as_primitive::<Int64Type>();
        let double = values.column(3).as_primitive::<Float64Type>();
        let boolean = values.column(4).as_boolean();
        let bytes = values.column(5).as_binary::<i32>();
        let row0 = map.value_offsets()[0] as usize..map.value_offsets()[1] as usize;
        let key_order: Vec<_> = row0.clone().map(|i| keys.value(i)).collect();
        assert_eq!(
            key_order[..10],
            ["s", "b", "i", "d", "nan", "bytes", "arr", "kvl", "none", "s"],
            "attribute order and duplicate keys are kept"
        );
        let at = |k: usize| row0.start + k;

        assert_eq!(
            (kind.value(at(0)), str.value(at(0))),
            (attr_type::STRING, "text")
        );
        assert!(
            int.is_null(at(0))
                && double.is_null(at(0))
                && boolean.is_null(at(0))
                && bytes.is_null(at(0))
        );
        assert_eq!(
            (kind.value(at(1)), boolean.value(at(1))),
            (attr_type::BOOL, true)
        );
        assert!(str.is_null(at(1)));
        assert_eq!((kind.value(at(2)), int.value(at(2))), (attr_type::INT, -42));
        assert_eq!(
            (kind.value(at(3)), double.value(at(3))),
            (attr_type::DOUBLE, 2.5)
        );
        assert!(double.value(at(4)).is_nan());
        assert_eq!(
            (kind.value(at(5)), bytes.value(at(5))),
            (attr_type::BYTES, &[0u8, 1, 255][..])
        );

        assert_eq!(kind.value(at(6)), attr_type::ARRAY);
        assert_eq!(str.value(at(6)), r#"[1,"a",[true]]"#);
        let decoded = AnyValue::decode(bytes.value(at(6))).unwrap();
        assert_eq!(decoded.value, Some(array_value()));
        assert_eq!(kind.value(at(7)), attr_type::KVLIST);
        assert_eq!(str.value(at(7)), r#"{"a":1,"b":{"c":"x"}}"#);
        assert_eq!(
            AnyValue::decode(bytes.value(at(7))).unwrap().value,
            Some(kvlist_value())
        );

        assert_eq!(kind.value(at(8)), attr_type::EMPTY);
        assert!(
            str.is_null(at(8))
                && int.is_null(at(8))
                && bytes.is_null(at(8))
                && boolean.is_null(at(8))
        );
        assert_eq!(str.value(at(9)), "duplicate");
    }

    #[test]
    fn events_and_links() {
        let batch = resource_spans_to_batch(&sample()).unwrap();
        let events = batch.column_by_name(col::EVENTS).unwrap().as_list::<i32>();
        assert_eq!(events.value_length(0), 2);
        assert_eq!(events.value_length(1), 0);
        assert!(events.is_valid(1), "no events is an empty list, not null");
        let first = events.value(0);
        let first = first.as_struct();
        let time = first.column(0).as_primitive::<Int64Type>();
        assert_eq!(time.value(0) as u64, START + 10);
        assert_eq!(time.value(1) as u64, u64::MAX);
        assert_eq!(first.column(1).as_string::<i32>().value(0), "exception");
        assert_eq!(first.column(2).as_map().value_length(0), 2);
        assert_eq!(first.column(3).as_primitive::<Int64Type>().value(0), 3);

        let links = batch.column_by_name(col::LINKS).unwrap().as_list::<i32>();
        assert_eq!(links.value_length(0), 1);
        let link = links.value(0);
        let link = link.as_struct();
        assert_eq!(link.column(0).as_binary::<i32>().value(0), &[0xcd; 16]);
        assert_eq!(link.column(1).as_binary::<i32>().value(0), &[9; 8]);
        assert_eq!(link.column(2).as_string::<i32>().value(0), "l=1");
        let link_attrs = link.column(3).as_map();
        assert_eq!(link_attrs.keys().as_string::<i32>().value(0), "link.kind");
        assert_eq!(link.column(4).as_primitive::<Int64Type>().value(0), 5);
        assert_eq!(link.column(5).as_primitive::<Int64Type>().value(0), 0x100);
    }

    #[test]
    fn dedicated_columns() {
        let batch = resource_spans_to_batch(&sample()).unwrap();
        let first = |name: &str| strs(&batch, name)[0].clone();
        assert_eq!(first(col::SERVICE_NAME).as_deref(), Some("checkout"));
        assert_eq!(first(col::SERVICE_NAMESPACE).as_deref(), Some("shop"));
        assert_eq!(first(col::DEPLOYMENT_ENVIRONMENT).as_deref(), Some("prod"));
        assert_eq!(first(col::K8S_NAMESPACE_NAME).as_deref(), Some("ns"));
        assert_eq!(first(col::K8S_POD_NAME).as_deref(), Some("pod-1"));
        assert_eq!(
            first(col::K8S_DEPLOYMENT_NAME).as_deref(),
            Some("checkout-dep")
        );
        assert_eq!(first(col::K8S_NODE_NAME).as_deref(), Some("node-a"));
        assert_eq!(first(col::K8S_CLUSTER_NAME).as_deref(), Some("eu-1"));
        assert_eq!(
            strs(&batch, col::SERVICE_NAME)[3],
            None,
            "no resource -> null"
        );

        assert_eq!(
            strs(&batch, col::HTTP_REQUEST_METHOD)[..3],
            [Some("POST".into()), Some("GET".into()), None]
        );
        assert_eq!(
            i64s(&batch, col::HTTP_RESPONSE_STATUS_CODE)[..3],
            [Some(201), Some(404), None]
        );
        assert_eq!(
            strs(&batch, col::HTTP_ROUTE)[..2],
            [Some("/orders".into()), None]
        );
        assert_eq!(
            strs(&batch, col::URL_PATH)[..2],
            [Some("/orders".into()), Some("/a/b".into())]
        );
        assert_eq!(
            strs(&batch, col::DB_SYSTEM)[..2],
            [Some("postgresql".into()), None]
        );
        assert_eq!(
            strs(&batch, col::RPC_SERVICE)[..2],
            [Some("Orders".into()), None]
        );
        // The attribute also stays in the map.
        let map = batch.column_by_name(col::SPAN_ATTRIBUTES).unwrap().as_map();
        assert_eq!(map.value_length(1), 3);
    }

    #[test]
    fn sampling_and_partition_columns() {
        let batch = resource_spans_to_batch(&sample()).unwrap();
        let adjusted = batch
            .column_by_name(col::ADJUSTED_COUNT)
            .unwrap()
            .as_primitive::<Float64Type>();
        assert!(adjusted.values().iter().all(|&v| v == 1.0));
        assert_eq!(
            batch
                .column_by_name(col::SAMPLING_RULE)
                .unwrap()
                .null_count(),
            5
        );
        assert_eq!(
            strs(&batch, col::DATE)[..4],
            ["2023-11-14", "2554-07-21", "2023-11-14", "1970-01-01"].map(|s| Some(s.to_string()))
        );
        assert_eq!(
            strs(&batch, col::HOUR)[..4],
            ["22", "23", "22", "00"].map(|s| Some(s.to_string()))
        );
    }

    #[test]
    fn partition_values_are_utc_and_never_panic() {
        assert_eq!(partition_values(0), ("1970-01-01".into(), "00".into()));
        assert_eq!(partition_values(START), ("2023-11-14".into(), "22".into()));
        // One nanosecond before midnight and midnight itself.
        let midnight = 1_700_006_400_000_000_000; // 2023-11-15T00:00:00Z
        assert_eq!(
            partition_values(midnight - 1),
            ("2023-11-14".into(), "23".into())
        );
        assert_eq!(
            partition_values(midnight),
            ("2023-11-15".into(), "00".into())
        );
        assert_eq!(
            partition_values(u64::MAX),
            ("2554-07-21".into(), "23".into())
        );
        assert_eq!(partition_values(i64::MAX as u64 + 1).0, "2262-04-11");
    }
}
