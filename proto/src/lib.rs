//! The tracelake span data model: the OTLP types, one Arrow schema with one row per span, and
//! lossless conversions between them (plus the OTLP/JSON codec).
//!
//! ```text
//!  OTLP/gRPC (prost)  ─┐                                   ┌─> Parquet / Delta (storage)
//!  OTLP/JSON ─ json::decode_export_request ─> ResourceSpans ─ resource_spans_to_batch ─> RecordBatch
//!                                                                                          │
//!  json::resource_spans_to_json <─ TracesData <─ batches_to_traces_data <─ DataFusion ─────┘
//! ```
//!
//! # Schema
//!
//! [`span_schema`] has one row per span. Resource and scope fields are repeated on every row;
//! attributes are `Map<Utf8, AttrValue>` columns where AttrValue is a struct with a type tag
//! ([`attr_type`]) and one typed slot per kind; arrays and kvlists keep their exact prost encoding
//! in `bytes` plus a readable JSON rendering in `str`. Common attributes are also copied into typed
//! columns (`service_name`, `http_response_status_code`, ...) for fast SQL; the maps stay complete.
//! Column names are in [`columns`]; the Delta partition columns ([`PARTITION_COLUMNS`]) come last.
//!
//! # Losslessness
//!
//! OTLP -> Arrow -> OTLP gives back the same spans, except for these normalisations: spans are
//! regrouped by (resource, scope) (first-seen order, spans in row order); an absent `Resource`,
//! `InstrumentationScope` or `Status` comes back present but empty; a `KeyValue` without a value
//! comes back with an empty `AnyValue`; `ResourceSpans`/`ScopeSpans` without spans vanish; and the
//! profiles-only top-level `KeyValue.key_strindex` is not stored (inside array/kvlist values
//! everything is kept, as those are stored encoded). The development-stage `Resource.entity_refs`
//! is kept, prost-encoded, in `resource_entity_refs` and is part of the resource grouping key.
//!
//! # Example
//!
//! ```
//! use tracelake_proto::otlp::common::v1::{any_value::Value, AnyValue, KeyValue};
//! use tracelake_proto::otlp::resource::v1::Resource;
//! use tracelake_proto::otlp::trace::v1::{ResourceSpans, ScopeSpans, Span};
//! use tracelake_proto::{batches_to_traces_data, columns, resource_spans_to_batch};
//!
//! let service = KeyValue {
//!     key: "service.name".into(),
//!     value: Some(AnyValue { value: Some(Value::StringValue("checkout".into())) }),
//!     ..Default::default()
//! };
//! let input = vec![ResourceSpans {
//!     resource: Some(Resource { attributes: vec![service], ..Default::default() }),
//!     scope_spans: vec![ScopeSpans {
//!         spans: vec![Span {
//!             trace_id: vec![1; 16],
//!             span_id: vec![2; 8],
//!             name: "GET /cart".into(),
//!             start_time_unix_nano: 1_700_000_000_000_000_000,
//!             end_time_unix_nano: 1_700_000_000_250_000_000,
//!             ..Default::default()
//!         }],
//!         ..Default::default()
//!     }],
//!     ..Default::default()
//! }];
//!
//! let batch = resource_spans_to_batch(&input)?;
//! assert_eq!(batch.num_rows(), 1);
//! assert!(batch.column_by_name(columns::SERVICE_NAME).is_some());
//!
//! let back = batches_to_traces_data(&[batch])?;
//! let span = &back.resource_spans[0].scope_spans[0].spans[0];
//! assert_eq!(span.name, "GET /cart");
//! assert_eq!(span.end_time_unix_nano - span.start_time_unix_nano, 250_000_000);
//! # Ok::<(), tracelake_proto::Error>(())
//! ```

mod attr;
mod decode;
mod encode;
mod error;
pub mod json;
mod schema;

#[cfg(test)]
mod testing;

pub use opentelemetry_proto::tonic as otlp;

pub use decode::batches_to_traces_data;
pub use encode::{partition_values, resource_spans_to_batch};
pub use error::{Error, Result};
pub use schema::{attr_type, columns, span_schema, PARTITION_COLUMNS};
