//! Queries behind Tempo's tag endpoints: attribute names by scope and their values.
//!
//! ```text
//!  spans ─ filter(date/hour partitions of the window)
//!    ├─ names:  map_keys(attributes) ─ unnest ─ DISTINCT ─ LIMIT
//!    └─ values: attributes['key'] ─ (type, str, int, double, bool) ─ DISTINCT ─ LIMIT
//! ```
//!
//! Every query is a DataFusion aggregation: the spans are streamed through a `DISTINCT` with a
//! `LIMIT` (DataFusion stops the aggregation once it holds `limit` groups), never collected. The
//! window is applied to the `date`/`hour` partition columns only, so it prunes whole Delta
//! partitions and its granularity is one hour.
//!
//! An optional span filter (a TraceQL spanset filter compiled by
//! [`crate::search::span_filter`]) is applied as a `WHERE` on the spans scan, before the
//! attributes are read: only the names and values of the spans it matches are listed. For event
//! and link scopes the filter selects the spans whose events or links are read.
//!
//! Event and link attributes live in lists of structs: they are unnested first. Resource
//! attributes that have a dedicated string column (`service.name`, `k8s.pod.name`, ...) read that
//! small column instead of the attribute map; those columns copy string values only, so a
//! non-string `service.name` (against the semantic conventions) is not listed.

use std::collections::BTreeSet;

use arrow::array::{Array, AsArray, RecordBatch};
use arrow::datatypes::{DataType, Float64Type, Int64Type, Int8Type};
use datafusion::dataframe::DataFrame;
use datafusion::functions::core::expr_fn::get_field;
use datafusion::functions_nested::expr_fn::map_keys;
use datafusion::logical_expr::Expr;
use datafusion::prelude::{col, lit, SessionContext};
use tracelake_proto::{attr_type, columns};

use crate::error::{Error, Result};
use crate::traceql::{AttributeScope, Field, Intrinsic};
use crate::{QueryEngine, TimeRange};

/// The type of a tag value, as Tempo's `/api/v2/search/tag/{tag}/values` names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum TagValueType {
    /// A string attribute, or a string intrinsic (`name`, `rootServiceName`, ...).
    String,
    /// An integer attribute.
    Int,
    /// A double attribute.
    Float,
    /// A boolean attribute.
    Bool,
}

impl TagValueType {
    /// Tempo's spelling: `string`, `int`, `float` or `bool`.
    pub fn as_str(self) -> &'static str {
        match self {
            TagValueType::String => "string",
            TagValueType::Int => "int",
            TagValueType::Float => "float",
            TagValueType::Bool => "bool",
        }
    }
}

/// One distinct value of a tag, rendered as text (Tempo's wire form) with its type.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct TagValue {
    /// The value as text: integers in decimal, doubles in their shortest round-trip form,
    /// booleans as `true`/`false`.
    pub value: String,
    /// The type of the stored value.
    pub value_type: TagValueType,
}

/// Distinct tag names or values, sorted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TagList<T> {
    /// At most the requested number of items, sorted.
    pub items: Vec<T>,
    /// True when more distinct items exist than were returned.
    pub truncated: bool,
}

/// The attribute scopes whose keys can be listed. [`AttributeScope::Unscoped`] stands for the
/// span and resource scopes together.
pub const LISTABLE_SCOPES: [AttributeScope; 5] = [
    AttributeScope::Resource,
    AttributeScope::Span,
    AttributeScope::Event,
    AttributeScope::Link,
    AttributeScope::Instrumentation,
];

/// Resource attributes copied, as strings, into a dedicated column.
const DEDICATED_RESOURCE_STRINGS: [(&str, &str); 7] = [
    ("service.name", columns::SERVICE_NAME),
    ("service.namespace", columns::SERVICE_NAMESPACE),
    ("k8s.namespace.name", columns::K8S_NAMESPACE_NAME),
    ("k8s.pod.name", columns::K8S_POD_NAME),
    ("k8s.deployment.name", columns::K8S_DEPLOYMENT_NAME),
    ("k8s.node.name", columns::K8S_NODE_NAME),
    ("k8s.cluster.name", columns::K8S_CLUSTER_NAME),
];

/// Alias of the working column inside these queries.
const K: &str = "__tag";
/// Alias of one element of the `events` or `links` list, once unnested.
const E: &str = "__element";

impl QueryEngine {
    /// The distinct attribute keys of `scope` among the spans of `range` that `filter` (a
    /// per-span predicate over the `spans` table, e.g. from [`crate::search::span_filter`])
    /// keeps, at most `limit`. [`AttributeScope::Unscoped`] lists span and resource keys
    /// together (each once).
    pub async fn tag_names(
        &self,
        tenant: &str,
        scope: AttributeScope,
        range: TimeRange,
        filter: Option<Expr>,
        limit: usize,
    ) -> Result<TagList<String>> {
        let ctx = self.context(tenant)?;
        self.run(async move {
            let scopes = match scope {
                AttributeScope::Unscoped => vec![AttributeScope::Span, AttributeScope::Resource],
                other => vec![other],
            };
            let mut names = BTreeSet::new();
            for scope in scopes {
                let df = attribute_maps(&ctx, scope, range, filter.clone()).await?;
                let df = df
                    .select(vec![map_keys(col(K)).alias(K)])?
                    .unnest_columns(&[K])?
                    .filter(col(K).is_not_null())?
                    .distinct()?
                    .limit(0, Some(limit.saturating_add(1)))?;
                for batch in df.collect().await? {
                    let keys = string_column(&batch, 0)?;
                    for i in 0..keys.len() {
                        if keys.is_valid(i) {
                            names.insert(keys.value(i).to_string());
                        }
                    }
                }
            }
            Ok(truncate(names, limit))
        })
        .await
    }

    /// The distinct values of `field` among the spans of `range` that `filter` (a per-span
    /// predicate over the `spans` table, e.g. from [`crate::search::span_filter`]) keeps, at
    /// most `limit`.
    ///
    /// Attributes give their scalar values (string, int, double, bool; arrays, kvlists and
    /// bytes are not listed); unscoped attributes look in the span and resource scopes. String
    /// intrinsics give the stored names: `name`, `statusMessage`, `rootName`,
    /// `rootServiceName`, `event:name`, `instrumentation:name` and `instrumentation:version`.
    /// Every other intrinsic (durations, ids, status and kind, whose values are fixed
    /// keywords) gives an empty list: the caller supplies keywords where it wants them.
    pub async fn tag_values(
        &self,
        tenant: &str,
        field: Field,
        range: TimeRange,
        filter: Option<Expr>,
        limit: usize,
    ) -> Result<TagList<TagValue>> {
        let ctx = self.context(tenant)?;
        self.run(async move {
            let mut values = BTreeSet::new();
            let fetch = Some(limit.saturating_add(1));
            match field {
                Field::Attribute(attr) => {
                    let scopes = match attr.scope {
                        AttributeScope::Unscoped => {
                            vec![AttributeScope::Span, AttributeScope::Resource]
                        }
                        other => vec![other],
                    };
                    for scope in scopes {
                        let dedicated = DEDICATED_RESOURCE_STRINGS.iter().find(|(key, _)| {
                            scope == AttributeScope::Resource && *key == attr.name
                        });
                        if let Some((_, column)) = dedicated {
                            let df = windowed(&ctx, range, filter.clone())
                                .await?
                                .select(vec![col(*column).alias(K)])?;
                            collect_strings(df, fetch, &mut values).await?;
                            continue;
                        }
                        let value = get_field(col(K), attr.name.as_str());
                        let df = attribute_maps(&ctx, scope, range, filter.clone())
                            .await?
                            .select(vec![
                                get_field(value.clone(), columns::attr_value::TYPE).alias("t"),
                                get_field(value.clone(), columns::attr_value::STR).alias("s"),
                                get_field(value.clone(), columns::attr_value::INT).alias("i"),
                                get_field(value.clone(), columns::attr_value::DOUBLE).alias("d"),
                                get_field(value, columns::attr_value::BOOL).alias("b"),
                            ])?
                            .filter(
                                col("t").in_list(
                                    [
                                        attr_type::STRING,
                                        attr_type::INT,
                                        attr_type::DOUBLE,
                                        attr_type::BOOL,
                                    ]
                                    .into_iter()
                                    .map(lit)
                                    .collect(),
                                    false,
                                ),
                            )?
                            .distinct()?
                            .limit(0, fetch)?;
                        for batch in df.collect().await? {
                            typed_values(&batch, &mut values)?;
                        }
                    }
                }
                Field::Intrinsic(intrinsic) => {
                    let Some(df) = intrinsic_strings(&ctx, intrinsic, range, filter).await? else {
                        return Ok(TagList {
                            items: Vec::new(),
                            truncated: false,
                        });
                    };
                    collect_strings(df, fetch, &mut values).await?;
                }
            }
            Ok(truncate(values, limit))
        })
        .await
    }
}

fn truncate<T: Ord>(set: BTreeSet<T>, limit: usize) -> TagList<T> {
    let truncated = set.len() > limit;
    TagList {
        items: set.into_iter().take(limit).collect(),
        truncated,
    }
}

/// The spans table restricted to the partitions of `range` and to the spans `filter` keeps.
async fn windowed(
    ctx: &SessionContext,
    range: TimeRange,
    filter: Option<Expr>,
) -> Result<DataFrame> {
    let spans = ctx
        .table("spans")
        .await?
        .filter(crate::engine::partition_filter(range))?;
    Ok(match filter {
        Some(filter) => spans.filter(filter)?,
        None => spans,
    })
}

/// One row per attribute map of `scope` (one per span, event or link), in column [`K`].
async fn attribute_maps(
    ctx: &SessionContext,
    scope: AttributeScope,
    range: TimeRange,
    filter: Option<Expr>,
) -> Result<DataFrame> {
    let spans = windowed(ctx, range, filter).await?;
    let map_column = match scope {
        AttributeScope::Span => columns::SPAN_ATTRIBUTES,
        AttributeScope::Resource => columns::RESOURCE_ATTRIBUTES,
        AttributeScope::Instrumentation => columns::SCOPE_ATTRIBUTES,
        AttributeScope::Event | AttributeScope::Link => {
            let (list, attributes) = if scope == AttributeScope::Event {
                (columns::EVENTS, columns::events::ATTRIBUTES)
            } else {
                (columns::LINKS, columns::links::ATTRIBUTES)
            };
            return Ok(spans
                .select(vec![col(list).alias(E)])?
                .unnest_columns(&[E])?
                .select(vec![get_field(col(E), attributes).alias(K)])?);
        }
        AttributeScope::Unscoped => {
            return Err(Error::Internal(
                "unscoped attributes have no single map: list span and resource".into(),
            ))
        }
    };
    Ok(spans.select(vec![col(map_column).alias(K)])?)
}

/// The string column an intrinsic's values come from, in column [`K`]; `None` for intrinsics
/// whose values are not listed from the data.
async fn intrinsic_strings(
    ctx: &SessionContext,
    intrinsic: Intrinsic,
    range: TimeRange,
    filter: Option<Expr>,
) -> Result<Option<DataFrame>> {
    let spans = windowed(ctx, range, filter).await?;
    let roots = || col(columns::PARENT_SPAN_ID).is_null();
    let df = match intrinsic {
        Intrinsic::SpanName => spans.select(vec![col(columns::NAME).alias(K)])?,
        Intrinsic::SpanStatusMessage => {
            spans.select(vec![col(columns::STATUS_MESSAGE).alias(K)])?
        }
        Intrinsic::TraceRootName => spans
            .filter(roots())?
            .select(vec![col(columns::NAME).alias(K)])?,
        Intrinsic::TraceRootService => spans
            .filter(roots())?
            .select(vec![col(columns::SERVICE_NAME).alias(K)])?,
        Intrinsic::InstrumentationName => spans.select(vec![col(columns::SCOPE_NAME).alias(K)])?,
        Intrinsic::InstrumentationVersion => {
            spans.select(vec![col(columns::SCOPE_VERSION).alias(K)])?
        }
        Intrinsic::EventName => spans
            .select(vec![col(columns::EVENTS).alias(E)])?
            .unnest_columns(&[E])?
            .select(vec![get_field(col(E), columns::events::NAME).alias(K)])?,
        _ => return Ok(None),
    };
    Ok(Some(df))
}

/// Distinct non-empty strings of column [`K`] of `df`, as string tag values.
async fn collect_strings(
    df: DataFrame,
    fetch: Option<usize>,
    out: &mut BTreeSet<TagValue>,
) -> Result<()> {
    let df = df
        .filter(col(K).is_not_null().and(col(K).not_eq(lit(""))))?
        .distinct()?
        .limit(0, fetch)?;
    for batch in df.collect().await? {
        let strings = string_column(&batch, 0)?;
        for i in 0..strings.len() {
            if strings.is_valid(i) {
                out.insert(TagValue {
                    value: strings.value(i).to_string(),
                    value_type: TagValueType::String,
                });
            }
        }
    }
    Ok(())
}

fn string_column(batch: &RecordBatch, i: usize) -> Result<&arrow::array::StringArray> {
    let column = batch.column(i);
    match column.data_type() {
        DataType::Utf8 => Ok(column.as_string::<i32>()),
        other => Err(Error::Internal(format!(
            "tag query returned {other} where a string column was expected"
        ))),
    }
}

/// Renders rows of `(type, str, int, double, bool)` as typed tag values.
fn typed_values(batch: &RecordBatch, out: &mut BTreeSet<TagValue>) -> Result<()> {
    let mismatch = || Error::Internal("tag value query returned unexpected column types".into());
    let types = batch
        .column(0)
        .as_primitive_opt::<Int8Type>()
        .ok_or_else(mismatch)?;
    let strings = batch
        .column(1)
        .as_string_opt::<i32>()
        .ok_or_else(mismatch)?;
    let ints = batch
        .column(2)
        .as_primitive_opt::<Int64Type>()
        .ok_or_else(mismatch)?;
    let doubles = batch
        .column(3)
        .as_primitive_opt::<Float64Type>()
        .ok_or_else(mismatch)?;
    let bools = batch.column(4).as_boolean_opt().ok_or_else(mismatch)?;
    for row in 0..batch.num_rows() {
        if types.is_null(row) {
            continue;
        }
        let value = match types.value(row) {
            attr_type::STRING if strings.is_valid(row) => TagValue {
                value: strings.value(row).to_string(),
                value_type: TagValueType::String,
            },
            attr_type::INT if ints.is_valid(row) => TagValue {
                value: ints.value(row).to_string(),
                value_type: TagValueType::Int,
            },
            attr_type::DOUBLE if doubles.is_valid(row) => TagValue {
                value: doubles.value(row).to_string(),
                value_type: TagValueType::Float,
            },
            attr_type::BOOL if bools.is_valid(row) => TagValue {
                value: bools.value(row).to_string(),
                value_type: TagValueType::Bool,
            },
            _ => continue,
        };
        out.insert(value);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;
    use std::sync::Arc;

    use arrow::array::AsArray;
    use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
    use opentelemetry_proto::tonic::common::v1::{any_value::Value as V, AnyValue, KeyValue};
    use opentelemetry_proto::tonic::resource::v1::Resource;
    use opentelemetry_proto::tonic::trace::v1::span::Event;
    use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span};
    use prost::Message;
    use tracelake_storage::{Storage, StorageConfig, StorageLocation, StorageMetrics};

    use super::*;
    use crate::traceql::Attribute;
    use crate::QueryConfig;

    const HOUR: u64 = 3_600_000_000_000;
    /// 2026-01-01T00:00:00Z
    const BASE: u64 = 1_767_225_600_000_000_000;

    fn kv(key: &str, value: V) -> KeyValue {
        KeyValue {
            key: key.into(),
            value: Some(AnyValue { value: Some(value) }),
            ..Default::default()
        }
    }

    /// One root span and one child at `BASE + hour`, with the span attribute `key` = `value`.
    fn spans(n: u8, hour: u64, service: &str, key: &str, value: V) -> ResourceSpans {
        let start = BASE + hour * HOUR;
        let span = |i: u8, parent: Vec<u8>| Span {
            trace_id: vec![n; 16],
            span_id: vec![n, i, 1, 1, 1, 1, 1, 1],
            parent_span_id: parent,
            name: format!("op-{n}-{i}"),
            start_time_unix_nano: start,
            end_time_unix_nano: start + 1_000,
            attributes: vec![kv(key, value.clone())],
            events: vec![Event {
                name: format!("event-{n}"),
                ..Default::default()
            }],
            ..Default::default()
        };
        ResourceSpans {
            resource: Some(Resource {
                attributes: vec![kv("service.name", V::StringValue(service.into()))],
                ..Default::default()
            }),
            scope_spans: vec![ScopeSpans {
                spans: vec![span(0, Vec::new()), span(1, vec![n, 0, 1, 1, 1, 1, 1, 1])],
                ..Default::default()
            }],
            ..Default::default()
        }
    }

    async fn append(storage: &Storage, traces: Vec<ResourceSpans>) {
        let batch = tracelake_proto::resource_spans_to_batch(&traces).unwrap();
        let wal = ExportTraceServiceRequest {
            resource_spans: traces,
        }
        .encode_to_vec();
        storage.append("default", wal, Some(batch)).await.unwrap();
    }

    fn hours(from: u64, to: u64) -> TimeRange {
        TimeRange {
            start_unix_nano: BASE + from * HOUR,
            end_unix_nano: BASE + to * HOUR - 1,
        }
    }

    fn attr(scope: AttributeScope, name: &str) -> Field {
        Field::Attribute(Attribute {
            scope,
            name: name.into(),
        })
    }

    fn typed(list: TagList<TagValue>) -> Vec<(&'static str, String)> {
        list.items
            .into_iter()
            .map(|v| (v.value_type.as_str(), v.value))
            .collect()
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn names_and_values_by_window_over_table_and_buffer() {
        let dir = tempfile::tempdir().unwrap();
        let location =
            StorageLocation::parse(dir.path().join("t").to_str().unwrap(), HashMap::new()).unwrap();
        let config = StorageConfig::for_location(location, dir.path().join("wal"));
        let storage = Storage::open(config, Arc::new(StorageMetrics::default()), &mut |_| {
            Ok(None)
        })
        .await
        .unwrap();
        let engine = QueryEngine::new(Arc::clone(&storage), QueryConfig::default()).unwrap();

        // Hour 0 and hour 2 of day one flushed to the Delta table; hour 1 of day two buffered.
        append(
            &storage,
            vec![
                spans(1, 0, "svc-zero", "k.zero", V::IntValue(7)),
                spans(2, 2, "svc-two", "k.two", V::DoubleValue(1.5)),
                spans(3, 2, "svc-two", "k.two", V::BoolValue(true)),
            ],
        )
        .await;
        storage.flush().await.unwrap();
        append(
            &storage,
            vec![spans(
                4,
                25,
                "svc-next",
                "k.next",
                V::StringValue("x".into()),
            )],
        )
        .await;

        let names = |scope, range| engine.tag_names("default", scope, range, None, 100);
        let span_names = names(AttributeScope::Span, hours(0, 26)).await.unwrap();
        assert_eq!(span_names.items, ["k.next", "k.two", "k.zero"]);
        assert!(!span_names.truncated);
        assert_eq!(
            names(AttributeScope::Span, hours(0, 1))
                .await
                .unwrap()
                .items,
            ["k.zero"]
        );
        // Across midnight: hour 2 of day one to hour 1 of day two.
        assert_eq!(
            names(AttributeScope::Span, hours(2, 26))
                .await
                .unwrap()
                .items,
            ["k.next", "k.two"]
        );
        assert!(names(AttributeScope::Span, hours(3, 25))
            .await
            .unwrap()
            .items
            .is_empty());
        assert_eq!(
            names(AttributeScope::Unscoped, hours(0, 1))
                .await
                .unwrap()
                .items,
            ["k.zero", "service.name"]
        );
        let limited = engine
            .tag_names("default", AttributeScope::Span, hours(0, 26), None, 2)
            .await
            .unwrap();
        assert_eq!(limited.items.len(), 2);
        assert!(limited.truncated);

        // The window reaches the Delta scan: only the files of its partitions are read.
        let ctx = engine.context("default").unwrap();
        let plan = attribute_maps(&ctx, AttributeScope::Span, hours(0, 1), None)
            .await
            .unwrap()
            .explain(false, false)
            .unwrap()
            .collect()
            .await
            .unwrap();
        let text: String = plan
            .iter()
            .flat_map(|b| {
                let c = b.column(1).as_string::<i32>();
                (0..c.len())
                    .map(|i| c.value(i).to_string())
                    .collect::<Vec<_>>()
            })
            .collect();
        assert!(text.contains("hour=00"), "{text}");
        assert!(!text.contains("hour=02"), "hour 02 was not pruned:\n{text}");

        // Values, typed, from maps, the dedicated column and intrinsic columns.
        let values = |field, range| engine.tag_values("default", field, range, None, 100);
        assert_eq!(
            typed(
                values(attr(AttributeScope::Span, "k.two"), hours(0, 26))
                    .await
                    .unwrap()
            ),
            [("float", "1.5".into()), ("bool", "true".into())]
        );
        assert_eq!(
            typed(
                values(attr(AttributeScope::Unscoped, "k.zero"), hours(0, 1))
                    .await
                    .unwrap()
            ),
            [("int", "7".into())]
        );
        assert!(
            values(attr(AttributeScope::Resource, "k.zero"), hours(0, 26))
                .await
                .unwrap()
                .items
                .is_empty()
        );
        assert_eq!(
            typed(
                values(attr(AttributeScope::Resource, "service.name"), hours(2, 26))
                    .await
                    .unwrap()
            ),
            [("string", "svc-next".into()), ("string", "svc-two".into())]
        );
        assert_eq!(
            typed(
                values(Field::Intrinsic(Intrinsic::TraceRootName), hours(0, 3))
                    .await
                    .unwrap()
            ),
            [
                ("string", "op-1-0".into()),
                ("string", "op-2-0".into()),
                ("string", "op-3-0".into())
            ]
        );
        assert_eq!(
            typed(
                values(Field::Intrinsic(Intrinsic::EventName), hours(25, 26))
                    .await
                    .unwrap()
            ),
            [("string", "event-4".into())]
        );
        assert!(
            values(Field::Intrinsic(Intrinsic::SpanDuration), hours(0, 26))
                .await
                .unwrap()
                .items
                .is_empty()
        );
        let limited = values(Field::Intrinsic(Intrinsic::SpanName), hours(0, 26))
            .await
            .unwrap();
        assert_eq!(limited.items.len(), 8);
        let limited = engine
            .tag_values(
                "default",
                Field::Intrinsic(Intrinsic::SpanName),
                hours(0, 26),
                None,
                3,
            )
            .await
            .unwrap();
        assert_eq!(limited.items.len(), 3);
        assert!(limited.truncated);

        // A span filter narrows names and values to the spans it matches.
        let filter = |q: &str| Some(crate::search::span_filter(q).expect("a complete filter"));
        let filtered = engine
            .tag_names(
                "default",
                AttributeScope::Span,
                hours(0, 26),
                filter(r#"{ resource.service.name = "svc-zero" }"#),
                100,
            )
            .await
            .unwrap();
        assert_eq!(filtered.items, ["k.zero"]);
        let filtered = engine
            .tag_values(
                "default",
                attr(AttributeScope::Span, "k.two"),
                hours(0, 26),
                filter("{ span.k.two = true }"),
                100,
            )
            .await
            .unwrap();
        assert_eq!(typed(filtered), [("bool", "true".into())]);
        let filtered = engine
            .tag_values(
                "default",
                attr(AttributeScope::Resource, "service.name"),
                hours(0, 26),
                filter(r#"{ name = "op-4-1" }"#),
                100,
            )
            .await
            .unwrap();
        assert_eq!(typed(filtered), [("string", "svc-next".into())]);
        let filtered = engine
            .tag_values(
                "default",
                Field::Intrinsic(Intrinsic::SpanName),
                hours(0, 26),
                filter(r#"{ resource.service.name = "svc-zero" }"#),
                100,
            )
            .await
            .unwrap();
        assert_eq!(
            typed(filtered),
            [("string", "op-1-0".into()), ("string", "op-1-1".into())]
        );
    }
}
