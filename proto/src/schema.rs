//! The canonical Arrow schema: one row per span.
//!
//! Every field is nullable (top level and nested) so that the schema unions cleanly with what Delta
//! readers and DataFusion hand back. The only non-nullable fields are the ones Arrow itself requires
//! to be non-nullable: a map's entries struct (`key_value`) and its `key`.

use std::sync::{Arc, LazyLock};

use arrow::datatypes::{DataType, Field, FieldRef, Fields, Schema, SchemaRef, TimeUnit};

/// Names of the top-level columns of [`span_schema`], in schema order, plus the names of the nested
/// fields of `events`, `links` and attribute values.
pub mod columns {
    /// Binary, 16 bytes for valid spans (any length is stored as-is).
    pub const TRACE_ID: &str = "trace_id";
    /// Binary, 8 bytes for valid spans.
    pub const SPAN_ID: &str = "span_id";
    /// Binary, null for root spans (empty in OTLP).
    pub const PARENT_SPAN_ID: &str = "parent_span_id";
    /// Utf8, W3C tracestate, null when empty.
    pub const TRACE_STATE: &str = "trace_state";
    /// Int64 holding OTLP's fixed32 span flags.
    pub const FLAGS: &str = "flags";
    /// Utf8 span name.
    pub const NAME: &str = "name";
    /// Int32, raw OTLP `SpanKind` value.
    pub const KIND: &str = "kind";
    /// Int64, the OTLP u64 bit-cast with `as i64` (read back with `as u64`).
    pub const START_TIME_UNIX_NANO: &str = "start_time_unix_nano";
    /// Int64, the OTLP u64 bit-cast with `as i64` (read back with `as u64`).
    pub const END_TIME_UNIX_NANO: &str = "end_time_unix_nano";
    /// Int64, `end - start` in nanoseconds, 0 when end < start.
    pub const DURATION_NANO: &str = "duration_nano";
    /// Timestamp(Microsecond, UTC), span start for SQL convenience.
    pub const START_TIME: &str = "start_time";
    /// Int32, raw OTLP `StatusCode` value.
    pub const STATUS_CODE: &str = "status_code";
    /// Utf8, null when empty.
    pub const STATUS_MESSAGE: &str = "status_message";
    /// Map<Utf8, AttrValue>.
    pub const SPAN_ATTRIBUTES: &str = "span_attributes";
    /// Int64.
    pub const DROPPED_ATTRIBUTES_COUNT: &str = "dropped_attributes_count";
    /// `List<Struct>`, see [`events`].
    pub const EVENTS: &str = "events";
    /// Int64.
    pub const DROPPED_EVENTS_COUNT: &str = "dropped_events_count";
    /// `List<Struct>`, see [`links`].
    pub const LINKS: &str = "links";
    /// Int64.
    pub const DROPPED_LINKS_COUNT: &str = "dropped_links_count";
    /// Map<Utf8, AttrValue>.
    pub const RESOURCE_ATTRIBUTES: &str = "resource_attributes";
    /// Int64.
    pub const RESOURCE_DROPPED_ATTRIBUTES_COUNT: &str = "resource_dropped_attributes_count";
    /// Utf8, `ResourceSpans.schema_url`, null when empty.
    pub const RESOURCE_SCHEMA_URL: &str = "resource_schema_url";
    /// Binary, `Resource.entity_refs` (a development-stage OTLP field), null when there are none.
    /// Holds the prost encoding of a `Resource` with only `entity_refs` set (each `EntityRef` as a
    /// length-delimited field 3), so any protobuf reader can decode it as
    /// `opentelemetry.proto.resource.v1.Resource` and take `entity_refs`.
    pub const RESOURCE_ENTITY_REFS: &str = "resource_entity_refs";
    /// Utf8, null when empty.
    pub const SCOPE_NAME: &str = "scope_name";
    /// Utf8, null when empty.
    pub const SCOPE_VERSION: &str = "scope_version";
    /// Map<Utf8, AttrValue>.
    pub const SCOPE_ATTRIBUTES: &str = "scope_attributes";
    /// Int64.
    pub const SCOPE_DROPPED_ATTRIBUTES_COUNT: &str = "scope_dropped_attributes_count";
    /// Utf8, `ScopeSpans.schema_url`, null when empty.
    pub const SCOPE_SCHEMA_URL: &str = "scope_schema_url";
    /// Utf8 copy of resource attribute `service.name`.
    pub const SERVICE_NAME: &str = "service_name";
    /// Utf8 copy of resource attribute `service.namespace`.
    pub const SERVICE_NAMESPACE: &str = "service_namespace";
    /// Utf8 copy of `deployment.environment.name`, else `deployment.environment`.
    pub const DEPLOYMENT_ENVIRONMENT: &str = "deployment_environment";
    /// Utf8 copy of `k8s.namespace.name`.
    pub const K8S_NAMESPACE_NAME: &str = "k8s_namespace_name";
    /// Utf8 copy of `k8s.pod.name`.
    pub const K8S_POD_NAME: &str = "k8s_pod_name";
    /// Utf8 copy of `k8s.deployment.name`.
    pub const K8S_DEPLOYMENT_NAME: &str = "k8s_deployment_name";
    /// Utf8 copy of `k8s.node.name`.
    pub const K8S_NODE_NAME: &str = "k8s_node_name";
    /// Utf8 copy of `k8s.cluster.name`.
    pub const K8S_CLUSTER_NAME: &str = "k8s_cluster_name";
    /// Utf8 copy of span attribute `http.request.method`, else `http.method`.
    pub const HTTP_REQUEST_METHOD: &str = "http_request_method";
    /// Int64 copy of `http.response.status_code`, else `http.status_code` (int, or a string that parses).
    pub const HTTP_RESPONSE_STATUS_CODE: &str = "http_response_status_code";
    /// Utf8 copy of `http.route`.
    pub const HTTP_ROUTE: &str = "http_route";
    /// Utf8 copy of `url.path`, else the path part of `http.target`.
    pub const URL_PATH: &str = "url_path";
    /// Utf8 copy of `db.system.name`, else `db.system`.
    pub const DB_SYSTEM: &str = "db_system";
    /// Utf8 copy of `rpc.service`.
    pub const RPC_SERVICE: &str = "rpc_service";
    /// Float64, how many spans this row stands for (1.0 unless sampled).
    pub const ADJUSTED_COUNT: &str = "adjusted_count";
    /// Utf8, which sampling rule kept the span (null when not sampled).
    pub const SAMPLING_RULE: &str = "sampling_rule";
    /// Utf8 partition column `YYYY-MM-DD` (UTC of span start).
    pub const DATE: &str = "date";
    /// Utf8 partition column `HH` (UTC of span start).
    pub const HOUR: &str = "hour";

    /// Fields of the struct inside the `events` list.
    pub mod events {
        /// Int64, bit-cast u64.
        pub const TIME_UNIX_NANO: &str = "time_unix_nano";
        /// Utf8.
        pub const NAME: &str = "name";
        /// Map<Utf8, AttrValue>.
        pub const ATTRIBUTES: &str = "attributes";
        /// Int64.
        pub const DROPPED_ATTRIBUTES_COUNT: &str = "dropped_attributes_count";
    }

    /// Fields of the struct inside the `links` list.
    pub mod links {
        /// Binary.
        pub const TRACE_ID: &str = "trace_id";
        /// Binary.
        pub const SPAN_ID: &str = "span_id";
        /// Utf8, null when empty.
        pub const TRACE_STATE: &str = "trace_state";
        /// Map<Utf8, AttrValue>.
        pub const ATTRIBUTES: &str = "attributes";
        /// Int64.
        pub const DROPPED_ATTRIBUTES_COUNT: &str = "dropped_attributes_count";
        /// Int64 holding the fixed32 link flags.
        pub const FLAGS: &str = "flags";
    }

    /// Names inside every `Map<Utf8, AttrValue>` column (Parquet's standard map layout).
    pub mod map {
        /// The entries struct.
        pub const ENTRIES: &str = "key_value";
        /// The attribute key (the only non-nullable leaf).
        pub const KEY: &str = "key";
        /// The [`AttrValue`](super::attr_value) struct.
        pub const VALUE: &str = "value";
    }

    /// Fields of the AttrValue struct (the value of every attribute map).
    pub mod attr_value {
        /// Int8 type tag, see [`crate::attr_type`].
        pub const TYPE: &str = "type";
        /// Utf8: the string value, or a readable JSON rendering for arrays and kvlists.
        pub const STR: &str = "str";
        /// Int64.
        pub const INT: &str = "int";
        /// Float64.
        pub const DOUBLE: &str = "double";
        /// Boolean.
        pub const BOOL: &str = "bool";
        /// Binary: bytes values, or the prost-encoded `AnyValue` for arrays and kvlists.
        pub const BYTES: &str = "bytes";
    }

    /// Name of the item field of the `events` and `links` lists (Parquet's standard list layout).
    pub const LIST_ITEM: &str = "element";
}

/// Values of the AttrValue `type` tag.
pub mod attr_type {
    /// No value (`AnyValue` with no field set, or a `KeyValue` without a value).
    pub const EMPTY: i8 = 0;
    /// `str` holds the string.
    pub const STRING: i8 = 1;
    /// `bool` holds the value.
    pub const BOOL: i8 = 2;
    /// `int` holds the value.
    pub const INT: i8 = 3;
    /// `double` holds the value.
    pub const DOUBLE: i8 = 4;
    /// `bytes` holds the prost-encoded `AnyValue`; `str` a JSON array rendering.
    pub const ARRAY: i8 = 5;
    /// `bytes` holds the prost-encoded `AnyValue`; `str` a JSON object rendering.
    pub const KVLIST: i8 = 6;
    /// `bytes` holds the value.
    pub const BYTES: i8 = 7;
    /// `int` holds OTLP's `string_value_strindex` (a profiles-only dictionary index).
    pub const STRING_STRINDEX: i8 = 8;
}

/// The partition columns of the Delta table, in order (the last two columns of [`span_schema`]).
pub const PARTITION_COLUMNS: [&str; 2] = [columns::DATE, columns::HOUR];

fn nullable(name: &str, data_type: DataType) -> Field {
    Field::new(name, data_type, true)
}

pub(crate) static ATTR_VALUE_FIELDS: LazyLock<Fields> = LazyLock::new(|| {
    use columns::attr_value::*;
    Fields::from(vec![
        nullable(TYPE, DataType::Int8),
        nullable(STR, DataType::Utf8),
        nullable(INT, DataType::Int64),
        nullable(DOUBLE, DataType::Float64),
        nullable(BOOL, DataType::Boolean),
        nullable(BYTES, DataType::Binary),
    ])
});

/// The entries field of an attribute map: `key_value: Struct{key: Utf8 (non-null), value: AttrValue}`.
pub(crate) static ATTR_ENTRIES_FIELD: LazyLock<FieldRef> = LazyLock::new(|| {
    let entries = Fields::from(vec![
        Field::new(columns::map::KEY, DataType::Utf8, false),
        nullable(
            columns::map::VALUE,
            DataType::Struct(ATTR_VALUE_FIELDS.clone()),
        ),
    ]);
    Arc::new(Field::new(
        columns::map::ENTRIES,
        DataType::Struct(entries),
        false,
    ))
});

pub(crate) static ATTR_MAP_TYPE: LazyLock<DataType> =
    LazyLock::new(|| DataType::Map(ATTR_ENTRIES_FIELD.clone(), false));

pub(crate) static EVENT_FIELDS: LazyLock<Fields> = LazyLock::new(|| {
    use columns::events::*;
    Fields::from(vec![
        nullable(TIME_UNIX_NANO, DataType::Int64),
        nullable(NAME, DataType::Utf8),
        nullable(ATTRIBUTES, ATTR_MAP_TYPE.clone()),
        nullable(DROPPED_ATTRIBUTES_COUNT, DataType::Int64),
    ])
});

pub(crate) static LINK_FIELDS: LazyLock<Fields> = LazyLock::new(|| {
    use columns::links::*;
    Fields::from(vec![
        nullable(TRACE_ID, DataType::Binary),
        nullable(SPAN_ID, DataType::Binary),
        nullable(TRACE_STATE, DataType::Utf8),
        nullable(ATTRIBUTES, ATTR_MAP_TYPE.clone()),
        nullable(DROPPED_ATTRIBUTES_COUNT, DataType::Int64),
        nullable(FLAGS, DataType::Int64),
    ])
});

pub(crate) static EVENT_ITEM_FIELD: LazyLock<FieldRef> = LazyLock::new(|| {
    Arc::new(nullable(
        columns::LIST_ITEM,
        DataType::Struct(EVENT_FIELDS.clone()),
    ))
});

pub(crate) static LINK_ITEM_FIELD: LazyLock<FieldRef> = LazyLock::new(|| {
    Arc::new(nullable(
        columns::LIST_ITEM,
        DataType::Struct(LINK_FIELDS.clone()),
    ))
});

pub(crate) const UTC: &str = "UTC";

static SPAN_SCHEMA: LazyLock<SchemaRef> = LazyLock::new(|| {
    use columns::*;
    let utf8 = || DataType::Utf8;
    let int64 = || DataType::Int64;
    let map = || ATTR_MAP_TYPE.clone();
    let fields = vec![
        nullable(TRACE_ID, DataType::Binary),
        nullable(SPAN_ID, DataType::Binary),
        nullable(PARENT_SPAN_ID, DataType::Binary),
        nullable(TRACE_STATE, utf8()),
        nullable(FLAGS, int64()),
        nullable(NAME, utf8()),
        nullable(KIND, DataType::Int32),
        nullable(START_TIME_UNIX_NANO, int64()),
        nullable(END_TIME_UNIX_NANO, int64()),
        nullable(DURATION_NANO, int64()),
        nullable(
            START_TIME,
            DataType::Timestamp(TimeUnit::Microsecond, Some(UTC.into())),
        ),
        nullable(STATUS_CODE, DataType::Int32),
        nullable(STATUS_MESSAGE, utf8()),
        nullable(SPAN_ATTRIBUTES, map()),
        nullable(DROPPED_ATTRIBUTES_COUNT, int64()),
        nullable(EVENTS, DataType::List(EVENT_ITEM_FIELD.clone())),
        nullable(DROPPED_EVENTS_COUNT, int64()),
        nullable(LINKS, DataType::List(LINK_ITEM_FIELD.clone())),
        nullable(DROPPED_LINKS_COUNT, int64()),
        nullable(RESOURCE_ATTRIBUTES, map()),
        nullable(RESOURCE_DROPPED_ATTRIBUTES_COUNT, int64()),
        nullable(RESOURCE_SCHEMA_URL, utf8()),
        nullable(RESOURCE_ENTITY_REFS, DataType::Binary),
        nullable(SCOPE_NAME, utf8()),
        nullable(SCOPE_VERSION, utf8()),
        nullable(SCOPE_ATTRIBUTES, map()),
        nullable(SCOPE_DROPPED_ATTRIBUTES_COUNT, int64()),
        nullable(SCOPE_SCHEMA_URL, utf8()),
        nullable(SERVICE_NAME, utf8()),
        nullable(SERVICE_NAMESPACE, utf8()),
        nullable(DEPLOYMENT_ENVIRONMENT, utf8()),
        nullable(K8S_NAMESPACE_NAME, utf8()),
        nullable(K8S_POD_NAME, utf8()),
        nullable(K8S_DEPLOYMENT_NAME, utf8()),
        nullable(K8S_NODE_NAME, utf8()),
        nullable(K8S_CLUSTER_NAME, utf8()),
        nullable(HTTP_REQUEST_METHOD, utf8()),
        nullable(HTTP_RESPONSE_STATUS_CODE, int64()),
        nullable(HTTP_ROUTE, utf8()),
        nullable(URL_PATH, utf8()),
        nullable(DB_SYSTEM, utf8()),
        nullable(RPC_SERVICE, utf8()),
        nullable(ADJUSTED_COUNT, DataType::Float64),
        nullable(SAMPLING_RULE, utf8()),
        nullable(DATE, utf8()),
        nullable(HOUR, utf8()),
    ];
    Arc::new(Schema::new(fields))
});

/// The canonical span schema (one row per span). Built once and shared; cloning is an `Arc` bump.
///
/// The partition columns ([`PARTITION_COLUMNS`]) come last.
pub fn span_schema() -> SchemaRef {
    SPAN_SCHEMA.clone()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partition_columns_are_last_and_every_field_is_nullable() {
        let schema = span_schema();
        let n = schema.fields().len();
        assert_eq!(schema.field(n - 2).name(), PARTITION_COLUMNS[0]);
        assert_eq!(schema.field(n - 1).name(), PARTITION_COLUMNS[1]);
        fn check(field: &Field, path: &str) {
            let path = format!("{path}.{}", field.name());
            let arrow_requires_non_null =
                field.name() == columns::map::ENTRIES || field.name() == columns::map::KEY;
            assert_eq!(field.is_nullable(), !arrow_requires_non_null, "{path}");
            match field.data_type() {
                DataType::Struct(fields) => fields.iter().for_each(|f| check(f, &path)),
                DataType::List(item) | DataType::Map(item, _) => check(item, &path),
                _ => {}
            }
        }
        schema.fields().iter().for_each(|f| check(f, ""));
    }

    #[test]
    fn schema_is_cached() {
        assert!(Arc::ptr_eq(&span_schema(), &span_schema()));
    }

    #[test]
    fn column_names_are_unique() {
        let schema = span_schema();
        let mut names: Vec<_> = schema.fields().iter().map(|f| f.name().clone()).collect();
        names.sort();
        names.dedup();
        assert_eq!(names.len(), schema.fields().len());
    }
}
