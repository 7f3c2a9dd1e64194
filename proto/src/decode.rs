//! Arrow -> OTLP: rows back into `ResourceSpans`, regrouped by resource and scope.
//!
//! Columns are looked up by name and conformed to the canonical type first, so batches from
//! DataFusion (view types, dictionaries, large offsets, other timestamp units, reordered or missing
//! optional columns) decode the same as batches from [`crate::resource_spans_to_batch`].

use std::collections::HashMap;
use std::ops::Range;
use std::sync::Arc;

use arrow::array::{
    new_null_array, Array, ArrayRef, AsArray, BinaryArray, BooleanArray, Float64Array, Int32Array,
    Int64Array, Int8Array, ListArray, MapArray, StringArray, StructArray,
    TimestampMicrosecondArray,
};
use arrow::buffer::OffsetBuffer;
use arrow::compute::cast;
use arrow::datatypes::DataType;
use arrow::record_batch::RecordBatch;
use prost::Message;

use crate::otlp::common::v1::{
    any_value::Value, AnyValue, EntityRef, InstrumentationScope, KeyValue,
};
use crate::otlp::resource::v1::Resource;
use crate::otlp::trace::v1::{span, ResourceSpans, ScopeSpans, Span, Status, TracesData};
use crate::schema::{attr_type, columns as col, span_schema};
use crate::{Error, Result};

/// Converts span rows back into OTLP.
///
/// Rows are grouped into one `ResourceSpans` per distinct (resource attributes, resource dropped
/// count, resource entity refs, resource schema url) and within it one `ScopeSpans` per distinct (scope name, version,
/// attributes, dropped count, schema url). Groups keep first-seen order; spans keep row order.
///
/// Only `trace_id` and `span_id` are required. Other missing columns read as null, and nulls read
/// as the OTLP default (empty string/bytes/list, 0). When `start_time_unix_nano` is missing it is
/// derived from `start_time`; a missing `end_time_unix_nano` from start + `duration_nano`. Every
/// span gets a `Status`, every group a `Resource` / `InstrumentationScope` (possibly empty).
pub fn batches_to_traces_data(batches: &[RecordBatch]) -> Result<TracesData> {
    let mut grouper = Grouper::default();
    for batch in batches {
        let columns = Columns::new(batch)?;
        for row in 0..batch.num_rows() {
            grouper.push(&columns, row)?;
        }
    }
    Ok(TracesData {
        resource_spans: grouper.resource_spans,
    })
}

/// Converts `array` to the canonical `target` type: structs are matched by field name (missing
/// nullable fields become null, extra fields are dropped), list and map containers are rebuilt
/// around conformed children, and leaves go through `arrow::compute::cast`.
pub(crate) fn conform(array: &ArrayRef, target: &DataType, path: &str) -> Result<ArrayRef> {
    if array.data_type() == target {
        return Ok(array.clone());
    }
    let type_error = |reason: String| Error::ColumnType {
        column: path.to_string(),
        found: array.data_type().clone(),
        expected: target.clone(),
        reason,
    };
    match (array.data_type(), target) {
        (DataType::Struct(_), DataType::Struct(fields)) => {
            let input = array.as_struct();
            let children = fields
                .iter()
                .map(|field| match input.column_by_name(field.name()) {
                    Some(child) => conform(
                        child,
                        field.data_type(),
                        &format!("{path}.{}", field.name()),
                    ),
                    None if field.is_nullable() => {
                        Ok(new_null_array(field.data_type(), input.len()))
                    }
                    None => Err(type_error(format!("field `{}` is missing", field.name()))),
                })
                .collect::<Result<Vec<_>>>()?;
            let conformed = StructArray::try_new_with_length(
                fields.clone(),
                children,
                input.nulls().cloned(),
                input.len(),
            )?;
            Ok(Arc::new(conformed))
        }
        (DataType::List(_), DataType::List(item)) => {
            let input = array.as_list::<i32>();
            let values = conform(input.values(), item.data_type(), path)?;
            let conformed = ListArray::try_new(
                item.clone(),
                input.offsets().clone(),
                values,
                input.nulls().cloned(),
            )?;
            Ok(Arc::new(conformed))
        }
        (
            DataType::LargeList(item)
            | DataType::ListView(item)
            | DataType::LargeListView(item)
            | DataType::FixedSizeList(item, _),
            DataType::List(_),
        ) => {
            // Change only the container first, then conform the items like any List.
            let as_list = cast(array, &DataType::List(item.clone()))
                .map_err(|e| type_error(e.to_string()))?;
            conform(&as_list, target, path)
        }
        (DataType::Map(_, _), DataType::Map(entries, ordered)) => {
            let input = array.as_map();
            let DataType::Struct(entry_fields) = entries.data_type() else {
                return Err(type_error("map entries are not a struct".into()));
            };
            let keys = conform(
                input.keys(),
                entry_fields[0].data_type(),
                &format!("{path}.{}", entry_fields[0].name()),
            )?;
            let values = conform(
                input.values(),
                entry_fields[1].data_type(),
                &format!("{path}.{}", entry_fields[1].name()),
            )?;
            let entries_array =
                StructArray::try_new(entry_fields.clone(), vec![keys, values], None)?;
            let conformed = MapArray::try_new(
                entries.clone(),
                input.offsets().clone(),
                entries_array,
                input.nulls().cloned(),
                *ordered,
            )?;
            Ok(Arc::new(conformed))
        }
        _ => cast(array, target).map_err(|e| type_error(e.to_string())),
    }
}

/// Looks `name` up in the batch and conforms it to its type in the span schema.
fn column(batch: &RecordBatch, name: &'static str) -> Result<Option<ArrayRef>> {
    let Some(array) = batch.column_by_name(name) else {
        return Ok(None);
    };
    let schema = span_schema();
    let field = schema.field_with_name(name)?;
    conform(array, field.data_type(), name).map(Some)
}

fn required(batch: &RecordBatch, name: &'static str) -> Result<ArrayRef> {
    column(batch, name)?.ok_or(Error::MissingColumn { column: name })
}

fn binary(batch: &RecordBatch, name: &'static str) -> Result<Option<BinaryArray>> {
    Ok(column(batch, name)?.map(|a| a.as_binary::<i32>().clone()))
}

fn string(batch: &RecordBatch, name: &'static str) -> Result<Option<StringArray>> {
    Ok(column(batch, name)?.map(|a| a.as_string::<i32>().clone()))
}

fn int64(batch: &RecordBatch, name: &'static str) -> Result<Option<Int64Array>> {
    Ok(column(batch, name)?.map(|a| a.as_primitive().clone()))
}

fn int32(batch: &RecordBatch, name: &'static str) -> Result<Option<Int32Array>> {
    Ok(column(batch, name)?.map(|a| a.as_primitive().clone()))
}

fn attr_map(batch: &RecordBatch, name: &'static str) -> Result<Option<AttrMap>> {
    Ok(column(batch, name)?.map(|a| AttrMap::new(a.as_map(), name.to_string())))
}

fn str_at(array: Option<&StringArray>, row: usize) -> &str {
    match array {
        Some(a) if a.is_valid(row) => a.value(row),
        _ => "",
    }
}

fn bytes_at(array: Option<&BinaryArray>, row: usize) -> &[u8] {
    match array {
        Some(a) if a.is_valid(row) => a.value(row),
        _ => &[],
    }
}

fn i64_at(array: Option<&Int64Array>, row: usize) -> Option<i64> {
    array.filter(|a| a.is_valid(row)).map(|a| a.value(row))
}

fn i32_at(array: Option<&Int32Array>, row: usize) -> i32 {
    array
        .filter(|a| a.is_valid(row))
        .map_or(0, |a| a.value(row))
}

/// Value `index` of an Int64 column holding an OTLP uint32 / fixed32 (`row` is the batch row, for
/// errors); out-of-range values are corrupt data.
fn u32_at(array: Option<&Int64Array>, index: usize, column: &str, row: usize) -> Result<u32> {
    let value = i64_at(array, index).unwrap_or(0);
    u32::try_from(value).map_err(|_| Error::InvalidValue {
        column: column.to_string(),
        row,
        reason: format!("{value} is not a valid uint32"),
    })
}

fn write_bytes(out: &mut Vec<u8>, bytes: &[u8]) {
    out.extend_from_slice(&(bytes.len() as u64).to_le_bytes());
    out.extend_from_slice(bytes);
}

/// A conformed attribute map column, split into its typed children.
struct AttrMap {
    column: String,
    offsets: OffsetBuffer<i32>,
    map: MapArray,
    keys: StringArray,
    values: StructArray,
    kind: Int8Array,
    str: StringArray,
    int: Int64Array,
    double: Float64Array,
    boolean: BooleanArray,
    bytes: BinaryArray,
}

impl AttrMap {
    fn new(map: &MapArray, column: String) -> Self {
        let values = map.values().as_struct().clone();
        // Canonical AttrValue field order: type, str, int, double, bool, bytes.
        Self {
            column,
            offsets: map.offsets().clone(),
            map: map.clone(),
            keys: map.keys().as_string::<i32>().clone(),
            kind: values.column(0).as_primitive().clone(),
            str: values.column(1).as_string::<i32>().clone(),
            int: values.column(2).as_primitive().clone(),
            double: values.column(3).as_primitive().clone(),
            boolean: values.column(4).as_boolean().clone(),
            bytes: values.column(5).as_binary::<i32>().clone(),
            values,
        }
    }

    fn entries(&self, row: usize) -> Range<usize> {
        if self.map.is_null(row) {
            return 0..0;
        }
        self.offsets[row] as usize..self.offsets[row + 1] as usize
    }

    /// Appends an injective encoding of the row's entries (used as a grouping key).
    fn write_key(&self, row: usize, out: &mut Vec<u8>) {
        let entries = self.entries(row);
        out.extend_from_slice(&(entries.len() as u64).to_le_bytes());
        for i in entries {
            write_bytes(out, self.keys.value(i).as_bytes());
            let present = self.values.is_valid(i);
            out.push(u8::from(present));
            if !present {
                continue;
            }
            out.push(if self.kind.is_valid(i) {
                self.kind.value(i) as u8
            } else {
                u8::MAX
            });
            let str = self.str.is_valid(i).then(|| self.str.value(i).as_bytes());
            let bytes = self.bytes.is_valid(i).then(|| self.bytes.value(i));
            for part in [str, bytes] {
                out.push(u8::from(part.is_some()));
                write_bytes(out, part.unwrap_or_default());
            }
            let int = self.int.is_valid(i).then(|| self.int.value(i));
            let double = self
                .double
                .is_valid(i)
                .then(|| self.double.value(i).to_bits());
            let boolean = self.boolean.is_valid(i).then(|| self.boolean.value(i));
            out.push(u8::from(int.is_some()));
            out.extend_from_slice(&int.unwrap_or(0).to_le_bytes());
            out.push(u8::from(double.is_some()));
            out.extend_from_slice(&double.unwrap_or(0).to_le_bytes());
            out.push(boolean.map_or(2, u8::from));
        }
    }

    /// The attributes of map `index`; `row` is the batch row, for errors.
    fn decode(&self, index: usize, row: usize) -> Result<Vec<KeyValue>> {
        self.entries(index)
            .map(|i| {
                Ok(KeyValue {
                    key: self.keys.value(i).to_string(),
                    value: Some(self.value(i, row)?),
                    key_strindex: 0,
                })
            })
            .collect()
    }

    fn value(&self, i: usize, row: usize) -> Result<AnyValue> {
        if self.values.is_null(i) || self.kind.is_null(i) {
            return Ok(AnyValue { value: None });
        }
        let str = || str_at(Some(&self.str), i);
        let bytes = || bytes_at(Some(&self.bytes), i);
        let int = || i64_at(Some(&self.int), i).unwrap_or(0);
        let invalid = |reason: String| Error::InvalidValue {
            column: self.column.clone(),
            row,
            reason,
        };
        let value = match self.kind.value(i) {
            attr_type::EMPTY => None,
            attr_type::STRING => Some(Value::StringValue(str().to_string())),
            attr_type::BOOL => Some(Value::BoolValue(
                self.boolean.is_valid(i) && self.boolean.value(i),
            )),
            attr_type::INT => Some(Value::IntValue(int())),
            attr_type::DOUBLE => Some(Value::DoubleValue(if self.double.is_valid(i) {
                self.double.value(i)
            } else {
                0.0
            })),
            attr_type::BYTES => Some(Value::BytesValue(bytes().to_vec())),
            attr_type::STRING_STRINDEX => {
                let index = i32::try_from(int())
                    .map_err(|_| invalid(format!("string index {} is out of range", int())))?;
                Some(Value::StringValueStrindex(index))
            }
            attr_type::ARRAY | attr_type::KVLIST => {
                let key = self.keys.value(i);
                if self.bytes.is_null(i) {
                    return Err(invalid(format!(
                        "attribute `{key}` is an array/kvlist without its encoded bytes"
                    )));
                }
                return AnyValue::decode(bytes()).map_err(|e| {
                    invalid(format!(
                        "attribute `{key}` holds an invalid encoded value: {e}"
                    ))
                });
            }
            other => return Err(invalid(format!("unknown attribute value type {other}"))),
        };
        Ok(AnyValue { value })
    }
}

/// The conformed `events` column.
struct EventColumns {
    list: ListArray,
    items: StructArray,
    time: Int64Array,
    name: StringArray,
    attributes: AttrMap,
    dropped: Int64Array,
}

impl EventColumns {
    fn new(batch: &RecordBatch) -> Result<Option<Self>> {
        let Some(array) = column(batch, col::EVENTS)? else {
            return Ok(None);
        };
        let list = array.as_list::<i32>().clone();
        let items = list.values().as_struct().clone();
        Ok(Some(Self {
            time: items.column(0).as_primitive().clone(),
            name: items.column(1).as_string::<i32>().clone(),
            attributes: AttrMap::new(
                items.column(2).as_map(),
                format!("{}.{}", col::EVENTS, col::events::ATTRIBUTES),
            ),
            dropped: items.column(3).as_primitive().clone(),
            list,
            items,
        }))
    }

    fn decode(&self, row: usize) -> Result<Vec<span::Event>> {
        if self.list.is_null(row) {
            return Ok(Vec::new());
        }
        let offsets = self.list.offsets();
        (offsets[row] as usize..offsets[row + 1] as usize)
            .filter(|&i| self.items.is_valid(i))
            .map(|i| {
                Ok(span::Event {
                    time_unix_nano: i64_at(Some(&self.time), i).unwrap_or(0) as u64,
                    name: str_at(Some(&self.name), i).to_string(),
                    attributes: self.attributes.decode(i, row)?,
                    dropped_attributes_count: u32_at(
                        Some(&self.dropped),
                        i,
                        "events.dropped_attributes_count",
                        row,
                    )?,
                })
            })
            .collect()
    }
}

/// The conformed `links` column.
struct LinkColumns {
    list: ListArray,
    items: StructArray,
    trace_id: BinaryArray,
    span_id: BinaryArray,
    trace_state: StringArray,
    attributes: AttrMap,
    dropped: Int64Array,
    flags: Int64Array,
}

impl LinkColumns {
    fn new(batch: &RecordBatch) -> Result<Option<Self>> {
        let Some(array) = column(batch, col::LINKS)? else {
            return Ok(None);
        };
        let list = array.as_list::<i32>().clone();
        let items = list.values().as_struct().clone();
        Ok(Some(Self {
            trace_id: items.column(0).as_binary::<i32>().clone(),
            span_id: items.column(1).as_binary::<i32>().clone(),
            trace_state: items.column(2).as_string::<i32>().clone(),
            attributes: AttrMap::new(
                items.column(3).as_map(),
                format!("{}.{}", col::LINKS, col::links::ATTRIBUTES),
            ),
            dropped: items.column(4).as_primitive().clone(),
            flags: items.column(5).as_primitive().clone(),
            list,
            items,
        }))
    }

    fn decode(&self, row: usize) -> Result<Vec<span::Link>> {
        if self.list.is_null(row) {
            return Ok(Vec::new());
        }
        let offsets = self.list.offsets();
        (offsets[row] as usize..offsets[row + 1] as usize)
            .filter(|&i| self.items.is_valid(i))
            .map(|i| {
                Ok(span::Link {
                    trace_id: bytes_at(Some(&self.trace_id), i).to_vec(),
                    span_id: bytes_at(Some(&self.span_id), i).to_vec(),
                    trace_state: str_at(Some(&self.trace_state), i).to_string(),
                    attributes: self.attributes.decode(i, row)?,
                    dropped_attributes_count: u32_at(
                        Some(&self.dropped),
                        i,
                        "links.dropped_attributes_count",
                        row,
                    )?,
                    flags: u32_at(Some(&self.flags), i, "links.flags", row)?,
                })
            })
            .collect()
    }
}

/// Every column decoding reads, conformed and downcast once per batch.
struct Columns {
    trace_id: BinaryArray,
    span_id: BinaryArray,
    parent_span_id: Option<BinaryArray>,
    trace_state: Option<StringArray>,
    flags: Option<Int64Array>,
    name: Option<StringArray>,
    kind: Option<Int32Array>,
    start: Option<Int64Array>,
    start_time: Option<TimestampMicrosecondArray>,
    end: Option<Int64Array>,
    duration: Option<Int64Array>,
    status_code: Option<Int32Array>,
    status_message: Option<StringArray>,
    span_attributes: Option<AttrMap>,
    dropped_attributes: Option<Int64Array>,
    events: Option<EventColumns>,
    dropped_events: Option<Int64Array>,
    links: Option<LinkColumns>,
    dropped_links: Option<Int64Array>,
    resource_attributes: Option<AttrMap>,
    resource_dropped: Option<Int64Array>,
    resource_schema_url: Option<StringArray>,
    resource_entity_refs: Option<BinaryArray>,
    scope_name: Option<StringArray>,
    scope_version: Option<StringArray>,
    scope_attributes: Option<AttrMap>,
    scope_dropped: Option<Int64Array>,
    scope_schema_url: Option<StringArray>,
}

impl Columns {
    fn new(batch: &RecordBatch) -> Result<Self> {
        Ok(Self {
            trace_id: required(batch, col::TRACE_ID)?.as_binary::<i32>().clone(),
            span_id: required(batch, col::SPAN_ID)?.as_binary::<i32>().clone(),
            parent_span_id: binary(batch, col::PARENT_SPAN_ID)?,
            trace_state: string(batch, col::TRACE_STATE)?,
            flags: int64(batch, col::FLAGS)?,
            name: string(batch, col::NAME)?,
            kind: int32(batch, col::KIND)?,
            start: int64(batch, col::START_TIME_UNIX_NANO)?,
            start_time: column(batch, col::START_TIME)?.map(|a| a.as_primitive().clone()),
            end: int64(batch, col::END_TIME_UNIX_NANO)?,
            duration: int64(batch, col::DURATION_NANO)?,
            status_code: int32(batch, col::STATUS_CODE)?,
            status_message: string(batch, col::STATUS_MESSAGE)?,
            span_attributes: attr_map(batch, col::SPAN_ATTRIBUTES)?,
            dropped_attributes: int64(batch, col::DROPPED_ATTRIBUTES_COUNT)?,
            events: EventColumns::new(batch)?,
            dropped_events: int64(batch, col::DROPPED_EVENTS_COUNT)?,
            links: LinkColumns::new(batch)?,
            dropped_links: int64(batch, col::DROPPED_LINKS_COUNT)?,
            resource_attributes: attr_map(batch, col::RESOURCE_ATTRIBUTES)?,
            resource_dropped: int64(batch, col::RESOURCE_DROPPED_ATTRIBUTES_COUNT)?,
            resource_schema_url: string(batch, col::RESOURCE_SCHEMA_URL)?,
            resource_entity_refs: binary(batch, col::RESOURCE_ENTITY_REFS)?,
            scope_name: string(batch, col::SCOPE_NAME)?,
            scope_version: string(batch, col::SCOPE_VERSION)?,
            scope_attributes: attr_map(batch, col::SCOPE_ATTRIBUTES)?,
            scope_dropped: int64(batch, col::SCOPE_DROPPED_ATTRIBUTES_COUNT)?,
            scope_schema_url: string(batch, col::SCOPE_SCHEMA_URL)?,
        })
    }

    fn write_resource_key(&self, row: usize, out: &mut Vec<u8>) {
        if let Some(map) = &self.resource_attributes {
            map.write_key(row, out);
        }
        out.extend_from_slice(
            &i64_at(self.resource_dropped.as_ref(), row)
                .unwrap_or(0)
                .to_le_bytes(),
        );
        write_bytes(
            out,
            str_at(self.resource_schema_url.as_ref(), row).as_bytes(),
        );
        // Null and empty both mean "no entity refs" and share a key.
        write_bytes(out, bytes_at(self.resource_entity_refs.as_ref(), row));
    }

    fn write_scope_key(&self, row: usize, out: &mut Vec<u8>) {
        write_bytes(out, str_at(self.scope_name.as_ref(), row).as_bytes());
        write_bytes(out, str_at(self.scope_version.as_ref(), row).as_bytes());
        if let Some(map) = &self.scope_attributes {
            map.write_key(row, out);
        }
        out.extend_from_slice(
            &i64_at(self.scope_dropped.as_ref(), row)
                .unwrap_or(0)
                .to_le_bytes(),
        );
        write_bytes(out, str_at(self.scope_schema_url.as_ref(), row).as_bytes());
    }

    fn resource_spans(&self, row: usize) -> Result<ResourceSpans> {
        let attributes = match &self.resource_attributes {
            Some(map) => map.decode(row, row)?,
            None => Vec::new(),
        };
        Ok(ResourceSpans {
            resource: Some(Resource {
                attributes,
                dropped_attributes_count: u32_at(
                    self.resource_dropped.as_ref(),
                    row,
                    col::RESOURCE_DROPPED_ATTRIBUTES_COUNT,
                    row,
                )?,
                entity_refs: self.entity_refs(row)?,
            }),
            scope_spans: Vec::new(),
            schema_url: str_at(self.resource_schema_url.as_ref(), row).to_string(),
        })
    }

    /// Decodes `resource_entity_refs` (a prost-encoded `Resource` holding only `entity_refs`);
    /// null or empty is no entity refs.
    fn entity_refs(&self, row: usize) -> Result<Vec<EntityRef>> {
        let bytes = bytes_at(self.resource_entity_refs.as_ref(), row);
        let resource = Resource::decode(bytes).map_err(|e| Error::InvalidValue {
            column: col::RESOURCE_ENTITY_REFS.to_string(),
            row,
            reason: format!("invalid encoded entity refs: {e}"),
        })?;
        Ok(resource.entity_refs)
    }

    fn scope_spans(&self, row: usize) -> Result<ScopeSpans> {
        let attributes = match &self.scope_attributes {
            Some(map) => map.decode(row, row)?,
            None => Vec::new(),
        };
        Ok(ScopeSpans {
            scope: Some(InstrumentationScope {
                name: str_at(self.scope_name.as_ref(), row).to_string(),
                version: str_at(self.scope_version.as_ref(), row).to_string(),
                attributes,
                dropped_attributes_count: u32_at(
                    self.scope_dropped.as_ref(),
                    row,
                    col::SCOPE_DROPPED_ATTRIBUTES_COUNT,
                    row,
                )?,
            }),
            spans: Vec::new(),
            schema_url: str_at(self.scope_schema_url.as_ref(), row).to_string(),
        })
    }

    fn span(&self, row: usize) -> Result<Span> {
        let start = match (&self.start, &self.start_time) {
            (Some(start), _) => i64_at(Some(start), row).unwrap_or(0) as u64,
            (None, Some(micros)) if micros.is_valid(row) => {
                (micros.value(row) as u64).saturating_mul(1_000)
            }
            _ => 0,
        };
        let end = match (&self.end, &self.duration) {
            (Some(end), _) => i64_at(Some(end), row).unwrap_or(0) as u64,
            (None, Some(duration)) => {
                start.saturating_add(i64_at(Some(duration), row).unwrap_or(0).max(0) as u64)
            }
            _ => 0,
        };
        Ok(Span {
            trace_id: bytes_at(Some(&self.trace_id), row).to_vec(),
            span_id: bytes_at(Some(&self.span_id), row).to_vec(),
            trace_state: str_at(self.trace_state.as_ref(), row).to_string(),
            parent_span_id: bytes_at(self.parent_span_id.as_ref(), row).to_vec(),
            flags: u32_at(self.flags.as_ref(), row, col::FLAGS, row)?,
            name: str_at(self.name.as_ref(), row).to_string(),
            kind: i32_at(self.kind.as_ref(), row),
            start_time_unix_nano: start,
            end_time_unix_nano: end,
            attributes: match &self.span_attributes {
                Some(map) => map.decode(row, row)?,
                None => Vec::new(),
            },
            dropped_attributes_count: u32_at(
                self.dropped_attributes.as_ref(),
                row,
                col::DROPPED_ATTRIBUTES_COUNT,
                row,
            )?,
            events: match &self.events {
                Some(events) => events.decode(row)?,
                None => Vec::new(),
            },
            dropped_events_count: u32_at(
                self.dropped_events.as_ref(),
                row,
                col::DROPPED_EVENTS_COUNT,
                row,
            )?,
            links: match &self.links {
                Some(links) => links.decode(row)?,
                None => Vec::new(),
            },
            dropped_links_count: u32_at(
                self.dropped_links.as_ref(),
                row,
                col::DROPPED_LINKS_COUNT,
                row,
            )?,
            status: Some(Status {
                message: str_at(self.status_message.as_ref(), row).to_string(),
                code: i32_at(self.status_code.as_ref(), row),
            }),
        })
    }
}

/// Regroups rows by resource and scope, keyed by an injective byte encoding of the stored values
/// (so OTLP objects are only built for the first row of each group).
#[derive(Default)]
struct Grouper {
    resource_spans: Vec<ResourceSpans>,
    resources: HashMap<Vec<u8>, usize>,
    scopes: HashMap<Vec<u8>, (usize, usize)>,
    key: Vec<u8>,
    last_key: Vec<u8>,
    last_group: (usize, usize),
}

impl Grouper {
    fn push(&mut self, columns: &Columns, row: usize) -> Result<()> {
        self.key.clear();
        columns.write_resource_key(row, &mut self.key);
        let resource_key_len = self.key.len();
        columns.write_scope_key(row, &mut self.key);

        let group = if !self.resource_spans.is_empty() && self.key == self.last_key {
            self.last_group
        } else if let Some(&group) = self.scopes.get(&self.key) {
            group
        } else {
            let resource_key = &self.key[..resource_key_len];
            let resource = match self.resources.get(resource_key) {
                Some(&index) => index,
                None => {
                    self.resource_spans.push(columns.resource_spans(row)?);
                    let index = self.resource_spans.len() - 1;
                    self.resources.insert(resource_key.to_vec(), index);
                    index
                }
            };
            let scope_spans = &mut self.resource_spans[resource].scope_spans;
            scope_spans.push(columns.scope_spans(row)?);
            let group = (resource, scope_spans.len() - 1);
            self.scopes.insert(self.key.clone(), group);
            group
        };
        self.last_key.clone_from(&self.key);
        self.last_group = group;
        let span = columns.span(row)?;
        self.resource_spans[group.0].scope_spans[group.1]
            .spans
            .push(span);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use arrow::array::{Int64Array, TimestampMillisecondArray};
    use arrow::datatypes::{Field, Fields, Int32Type, Schema, TimeUnit};

    use super::*;
    use crate::resource_spans_to_batch;
    use crate::testing::{checkout_entity_refs, checkout_resource, flatten, sample};

    fn names(data: &TracesData) -> Vec<Vec<Vec<&str>>> {
        data.resource_spans
            .iter()
            .map(|rs| {
                rs.scope_spans
                    .iter()
                    .map(|ss| ss.spans.iter().map(|s| s.name.as_str()).collect())
                    .collect()
            })
            .collect()
    }

    #[test]
    fn round_trip_is_lossless_modulo_grouping() {
        let input = sample();
        let batch = resource_spans_to_batch(&input).unwrap();
        let output = batches_to_traces_data(&[batch]).unwrap();
        assert_eq!(flatten(&output.resource_spans), flatten(&input));
    }

    #[test]
    fn groups_by_resource_then_scope_in_first_seen_order() {
        let batch = resource_spans_to_batch(&sample()).unwrap();
        let output = batches_to_traces_data(&[batch]).unwrap();
        assert_eq!(
            names(&output),
            vec![
                vec![vec!["POST /orders", "SELECT", "late"], vec!["internal"]],
                vec![vec!["orphan"]],
            ]
        );
        let first = &output.resource_spans[0];
        assert_eq!(first.resource.as_ref(), Some(&checkout_resource()));
        assert_eq!(first.schema_url, "https://opentelemetry.io/schemas/1.21.0");
        let scope = first.scope_spans[0].scope.as_ref().unwrap();
        assert_eq!(
            (
                scope.name.as_str(),
                scope.version.as_str(),
                scope.dropped_attributes_count
            ),
            ("io.opentelemetry.http", "1.2.0", 7)
        );
        assert_eq!(
            first.scope_spans[1].scope,
            Some(InstrumentationScope::default())
        );
        assert_eq!(output.resource_spans[1].resource, Some(Resource::default()));
        let child = &first.scope_spans[0].spans[1];
        assert_eq!(
            child.status,
            Some(Status::default()),
            "absent status reads back as default"
        );
        assert_eq!(child.start_time_unix_nano, u64::MAX - 5);
    }

    #[test]
    fn entity_refs_round_trip_and_split_resource_groups() {
        // The last ResourceSpans repeats the first resource except for its entity refs.
        let mut input = sample();
        input[2].resource.as_mut().unwrap().entity_refs.truncate(1);
        let batch = resource_spans_to_batch(&input).unwrap();
        let output = batches_to_traces_data(&[batch]).unwrap();
        assert_eq!(
            names(&output),
            vec![
                vec![vec!["POST /orders", "SELECT"], vec!["internal"]],
                vec![vec!["orphan"]],
                vec![vec!["late"]],
            ]
        );
        let refs = |i: usize| {
            output.resource_spans[i]
                .resource
                .as_ref()
                .unwrap()
                .entity_refs
                .clone()
        };
        assert_eq!(refs(0), checkout_entity_refs());
        assert_eq!(refs(1), vec![]);
        assert_eq!(refs(2), checkout_entity_refs()[..1]);
        assert_eq!(flatten(&output.resource_spans), flatten(&input));
    }

    #[test]
    fn groups_across_batches_and_slices() {
        let batch = resource_spans_to_batch(&sample()).unwrap();
        let parts = [batch.slice(0, 2), batch.slice(2, 2), batch.slice(4, 1)];
        let output = batches_to_traces_data(&parts).unwrap();
        assert_eq!(
            names(&output),
            vec![
                vec![vec!["POST /orders", "SELECT", "late"], vec!["internal"]],
                vec![vec!["orphan"]],
            ]
        );
        assert_eq!(flatten(&output.resource_spans), flatten(&sample()));
        let middle = batches_to_traces_data(&[batch.slice(1, 3)]).unwrap();
        assert_eq!(
            names(&middle),
            vec![vec![vec!["SELECT"], vec!["internal"]], vec![vec!["orphan"]]]
        );
    }

    /// The type DataFusion might hand back for `dt`: view types, large lists, nanosecond times.
    fn variant(dt: &DataType) -> DataType {
        let field = |f: &Field| f.as_ref().clone().with_data_type(variant(f.data_type()));
        match dt {
            DataType::Utf8 => DataType::Utf8View,
            DataType::Binary => DataType::BinaryView,
            DataType::Timestamp(_, tz) => DataType::Timestamp(TimeUnit::Nanosecond, tz.clone()),
            DataType::List(item) => DataType::LargeList(Arc::new(field(item))),
            DataType::Map(entries, sorted) => DataType::Map(Arc::new(field(entries)), *sorted),
            DataType::Struct(fields) => {
                DataType::Struct(fields.iter().map(|f| field(f)).collect::<Fields>())
            }
            other => other.clone(),
        }
    }

    #[test]
    fn decodes_variant_types_reordered_and_without_derived_columns() {
        let input = sample();
        let batch = resource_spans_to_batch(&input).unwrap();
        let dictionary = DataType::Dictionary(Box::new(DataType::Int32), Box::new(DataType::Utf8));
        let derived = [
            col::DURATION_NANO,
            col::SERVICE_NAME,
            col::DATE,
            col::HOUR,
            col::ADJUSTED_COUNT,
        ];
        let mut fields = Vec::new();
        let mut arrays = Vec::new();
        for (field, array) in batch.schema().fields().iter().zip(batch.columns()).rev() {
            if derived.contains(&field.name().as_str()) {
                continue;
            }
            let target = match field.name().as_str() {
                col::NAME | col::SCOPE_NAME => dictionary.clone(),
                col::TRACE_STATE => DataType::LargeUtf8,
                col::PARENT_SPAN_ID => DataType::LargeBinary,
                _ => variant(field.data_type()),
            };
            arrays.push(cast(array, &target).unwrap());
            fields.push(Field::new(field.name(), target, true));
        }
        let variant_batch = RecordBatch::try_new(Arc::new(Schema::new(fields)), arrays).unwrap();
        // The nested types really are variants.
        let attrs_type = variant_batch
            .column_by_name(col::SPAN_ATTRIBUTES)
            .unwrap()
            .data_type();
        assert!(attrs_type.to_string().contains("Utf8View"), "{attrs_type}");
        assert!(matches!(
            variant_batch
                .column_by_name(col::EVENTS)
                .unwrap()
                .data_type(),
            DataType::LargeList(_)
        ));

        let output = batches_to_traces_data(&[variant_batch]).unwrap();
        assert_eq!(flatten(&output.resource_spans), flatten(&input));
    }

    #[test]
    fn missing_optional_columns_read_as_defaults() {
        let batch = resource_spans_to_batch(&sample()).unwrap();
        let keep = [col::SPAN_ID, col::NAME, col::TRACE_ID];
        let projected = batch
            .project(&keep.map(|name| batch.schema().index_of(name).unwrap()))
            .unwrap();
        let output = batches_to_traces_data(&[projected]).unwrap();
        assert_eq!(
            output.resource_spans.len(),
            1,
            "all rows share the empty resource and scope"
        );
        let rs = &output.resource_spans[0];
        assert_eq!(rs.resource, Some(Resource::default()));
        assert_eq!(rs.scope_spans.len(), 1);
        let root = &rs.scope_spans[0].spans[0];
        assert_eq!(
            root,
            &Span {
                trace_id: vec![0xab; 16],
                span_id: vec![1; 8],
                name: "POST /orders".into(),
                status: Some(Status::default()),
                ..Default::default()
            }
        );
    }

    #[test]
    fn conform_matches_struct_fields_by_name_and_fills_missing_ones() {
        // An `events` item struct in another order, without `dropped_attributes_count` and with an
        // extra field; the name is a Utf8View.
        let items = StructArray::try_new(
            Fields::from(vec![
                Field::new("extra", DataType::Int32, true),
                Field::new(col::events::NAME, DataType::Utf8View, true),
                Field::new(col::events::TIME_UNIX_NANO, DataType::Int64, true),
            ]),
            vec![
                Arc::new(Int32Array::from(vec![1])),
                Arc::new(arrow::array::StringViewArray::from(vec!["ev"])),
                Arc::new(Int64Array::from(vec![5])),
            ],
            None,
        )
        .unwrap();
        let list = ListArray::try_new(
            Arc::new(Field::new("item", items.data_type().clone(), true)),
            OffsetBuffer::from_lengths([1]),
            Arc::new(items),
            None,
        )
        .unwrap();
        let schema = span_schema();
        let target = schema.field_with_name(col::EVENTS).unwrap().data_type();
        let conformed = conform(&(Arc::new(list) as ArrayRef), target, col::EVENTS).unwrap();
        assert_eq!(conformed.data_type(), target);
        let events = conformed.as_list::<i32>().value(0);
        let events = events.as_struct();
        assert_eq!(
            events
                .column(0)
                .as_primitive::<arrow::datatypes::Int64Type>()
                .value(0),
            5
        );
        assert_eq!(events.column(1).as_string::<i32>().value(0), "ev");
        assert!(events.column(2).is_null(0) && events.column(3).is_null(0));

        let err = conform(
            &(Arc::new(Int64Array::from(vec![1])) as ArrayRef),
            target,
            col::EVENTS,
        )
        .unwrap_err();
        assert!(
            err.to_string()
                .starts_with("column `events` has type Int64, which cannot be read as List("),
            "{err}"
        );
    }

    #[test]
    fn start_and_end_fall_back_to_start_time_and_duration() {
        let schema = Schema::new(vec![
            Field::new(col::TRACE_ID, DataType::Binary, true),
            Field::new(col::SPAN_ID, DataType::Binary, true),
            Field::new(
                col::START_TIME,
                DataType::Timestamp(TimeUnit::Millisecond, Some("UTC".into())),
                true,
            ),
            Field::new(col::DURATION_NANO, DataType::Int64, true),
        ]);
        let batch = RecordBatch::try_new(
            Arc::new(schema),
            vec![
                Arc::new(BinaryArray::from_vec(vec![&[1u8; 16]])),
                Arc::new(BinaryArray::from_vec(vec![&[2u8; 8]])),
                Arc::new(
                    TimestampMillisecondArray::from(vec![1_700_000_000_123]).with_timezone("UTC"),
                ),
                Arc::new(Int64Array::from(vec![5_000])),
            ],
        )
        .unwrap();
        let output = batches_to_traces_data(&[batch]).unwrap();
        let span = &output.resource_spans[0].scope_spans[0].spans[0];
        assert_eq!(span.start_time_unix_nano, 1_700_000_000_123_000_000);
        assert_eq!(span.end_time_unix_nano, 1_700_000_000_123_005_000);
    }

    fn replace_column(batch: &RecordBatch, name: &str, array: ArrayRef) -> RecordBatch {
        let index = batch.schema().index_of(name).unwrap();
        let mut fields: Vec<Field> = batch
            .schema()
            .fields()
            .iter()
            .map(|f| f.as_ref().clone())
            .collect();
        fields[index] = Field::new(name, array.data_type().clone(), true);
        let mut columns = batch.columns().to_vec();
        columns[index] = array;
        RecordBatch::try_new(Arc::new(Schema::new(fields)), columns).unwrap()
    }

    #[test]
    fn precise_errors() {
        let batch = resource_spans_to_batch(&sample()).unwrap();

        let without_span_id = batch.project(&[0]).unwrap();
        let err = batches_to_traces_data(&[without_span_id]).unwrap_err();
        assert!(
            matches!(
                err,
                Error::MissingColumn {
                    column: col::SPAN_ID
                }
            ),
            "{err}"
        );
        assert!(err.to_string().contains("`span_id`"));

        let flags = Arc::new(Int64Array::from(vec![0, 0, -1, 0, 0]));
        let err = batches_to_traces_data(&[replace_column(&batch, col::FLAGS, flags)]).unwrap_err();
        assert_eq!(
            err.to_string(),
            "column `flags`, row 2: -1 is not a valid uint32"
        );

        let kinds = Arc::new(arrow::array::Float64Array::from(vec![1.0; 5]));
        let err =
            batches_to_traces_data(&[replace_column(&batch, col::TRACE_ID, kinds)]).unwrap_err();
        assert!(
            matches!(&err, Error::ColumnType { column, .. } if column == col::TRACE_ID),
            "{err}"
        );

        let refs = Arc::new(BinaryArray::from_opt_vec(vec![
            None,
            None,
            None,
            Some(&[0x1a, 0x05, 0x0a][..]),
            None,
        ]));
        let err =
            batches_to_traces_data(&[replace_column(&batch, col::RESOURCE_ENTITY_REFS, refs)])
                .unwrap_err();
        assert!(
            err.to_string()
                .starts_with("column `resource_entity_refs`, row 3: invalid encoded entity refs: "),
            "{err}"
        );

        // An AttrValue with an unknown type tag.
        let attrs = batch
            .column_by_name(col::SCOPE_ATTRIBUTES)
            .unwrap()
            .as_map();
        let values = attrs.values().as_struct();
        let mut tags = values
            .column(0)
            .as_primitive::<arrow::datatypes::Int8Type>()
            .values()
            .to_vec();
        tags[0] = 42;
        let mut children = values.columns().to_vec();
        children[0] = Arc::new(Int8Array::from(tags));
        let values = StructArray::try_new(values.fields().clone(), children, None).unwrap();
        let entries = StructArray::try_new(
            attrs.entries().fields().clone(),
            vec![attrs.keys().clone(), Arc::new(values)],
            None,
        )
        .unwrap();
        let DataType::Map(entries_field, _) = attrs.data_type() else {
            unreachable!()
        };
        let map = MapArray::try_new(
            entries_field.clone(),
            attrs.offsets().clone(),
            entries,
            None,
            false,
        )
        .unwrap();
        let err =
            batches_to_traces_data(&[replace_column(&batch, col::SCOPE_ATTRIBUTES, Arc::new(map))])
                .unwrap_err();
        assert_eq!(
            err.to_string(),
            "column `scope_attributes`, row 0: unknown attribute value type 42"
        );
    }

    #[test]
    fn kind_and_status_code_keep_raw_enum_values() {
        let mut input = sample();
        let span = &mut input[1].scope_spans[0].spans[0];
        span.kind = 17;
        span.status = Some(Status {
            message: String::new(),
            code: 9,
        });
        let batch = resource_spans_to_batch(&input).unwrap();
        let kinds = batch
            .column_by_name(col::KIND)
            .unwrap()
            .as_primitive::<Int32Type>();
        assert_eq!(kinds.value(3), 17);
        let output = batches_to_traces_data(&[batch]).unwrap();
        let span = &output.resource_spans[1].scope_spans[0].spans[0];
        assert_eq!(
            (span.kind, span.status.as_ref().map(|s| s.code)),
            (17, Some(9))
        );
    }
}
