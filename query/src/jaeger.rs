//! Queries behind the Jaeger API: services, operations, trace search, traces by id and the
//! service dependency graph.
//!
//! Every query filters on the `date`/`hour` partition columns of its time window, so the Delta
//! scan prunes whole partitions, and on `start_time_unix_nano`, so file statistics prune the
//! rest. A search never loads spans wholesale: it first finds the ids of the matching traces
//! (filter, group by trace id, newest first, `LIMIT`), then fetches only those traces with an
//! `IN` list on `trace_id` that the Parquet bloom filters answer.
//!
//! ```text
//!  JaegerSearch ─> filter(window ∧ service ∧ operation ∧ duration ∧ tags) ─> group by trace_id
//!                  ─> order by max(start) desc ─> limit ─> ids ─> jaeger_traces(ids) ─> spans
//! ```
//!
//! Tags match span or resource attributes (typed: `"500"` matches the string `"500"`, the int
//! 500 and the double 500.0), the dedicated columns where one holds the attribute, and the
//! pseudo tags the Jaeger mapping adds (`error`, `span.kind`, `otel.status_code`, ...):
//!
//! ```
//! use tracelake_query::jaeger::tag_filter;
//! let expr = tag_filter("span.kind", "server");
//! assert!(expr.to_string().contains("kind"));
//! ```

use arrow::array::{Array, AsArray, RecordBatch};
use arrow::datatypes::{DataType, Float64Type, Int32Type};
use datafusion::functions::core::expr_fn::get_field_path;
use datafusion::functions_aggregate::expr_fn::max;
use datafusion::prelude::{col, lit, Expr};
use datafusion::scalar::ScalarValue;
use tracelake_proto::columns;

use crate::error::{Error, Result};
use crate::{QueryEngine, TimeRange};

/// OTLP span kinds by their Jaeger `span.kind` tag value.
pub const SPAN_KINDS: [(&str, i32); 5] = [
    ("internal", 1),
    ("server", 2),
    ("client", 3),
    ("producer", 4),
    ("consumer", 5),
];

/// OTLP status code of an error.
const STATUS_ERROR: i32 = 2;
/// OTLP status code of OK.
const STATUS_OK: i32 = 1;

/// A Jaeger trace search: every condition must hold on one span of the trace.
#[derive(Debug, Clone, PartialEq)]
pub struct JaegerSearch {
    /// `service.name` of the matching span.
    pub service: Option<String>,
    /// Name of the matching span.
    pub operation: Option<String>,
    /// `key = value` pairs, each matching a span or resource attribute or a Jaeger pseudo tag.
    pub tags: Vec<(String, String)>,
    /// The span starts within this window (inclusive, unix nanoseconds).
    pub window: TimeRange,
    /// Shortest span duration, in nanoseconds.
    pub min_duration_nano: Option<i64>,
    /// Longest span duration, in nanoseconds.
    pub max_duration_nano: Option<i64>,
    /// At most this many traces, the most recent first.
    pub limit: usize,
}

/// One edge of the service dependency graph.
#[derive(Debug, Clone, PartialEq)]
pub struct Dependency {
    /// The calling service.
    pub parent: String,
    /// The called service.
    pub child: String,
    /// Calls over the window, weighted by the children's `adjusted_count`, rounded.
    pub call_count: u64,
    /// Calls (weighted, unrounded) over the window.
    pub calls: f64,
    /// Of those, calls whose child span failed (status ERROR or HTTP status ≥ 500), weighted.
    pub errors: f64,
}

/// The partition and start-time predicate of a window: `date`/`hour` prune partitions, the
/// start time bounds the rows.
pub fn window_filter(window: TimeRange) -> Expr {
    crate::engine::window_filter(window)
}

/// The value of attribute `key` in the map column `map` equals `value`, compared as a string
/// and, where `value` parses as one, as an int, a double or a bool.
fn attribute_matches(map: &str, key: &str, value: &str) -> Expr {
    let field = |slot: &str| get_field_path(col(map), vec![lit(key), lit(slot)]);
    let mut expr = field(columns::attr_value::STR).eq(lit(value));
    if let Ok(i) = value.parse::<i64>() {
        expr = expr.or(field(columns::attr_value::INT).eq(lit(i)));
    }
    if let Ok(f) = value.parse::<f64>() {
        expr = expr.or(field(columns::attr_value::DOUBLE).eq(lit(f)));
    }
    if let Ok(b) = value.parse::<bool>() {
        expr = expr.or(field(columns::attr_value::BOOL).eq(lit(b)));
    }
    expr
}

/// How a dedicated column holds an attribute.
enum Dedicated {
    /// The column is exactly the (string) attribute: filter on it alone.
    Exact(&'static str),
    /// The column is the attribute or a legacy fallback: the column prunes, the map decides.
    Fallback(&'static str, &'static str, bool),
}

fn dedicated(key: &str) -> Option<Dedicated> {
    use columns::*;
    Some(match key {
        "service.name" => Dedicated::Exact(SERVICE_NAME),
        "service.namespace" => Dedicated::Exact(SERVICE_NAMESPACE),
        "k8s.namespace.name" => Dedicated::Exact(K8S_NAMESPACE_NAME),
        "k8s.pod.name" => Dedicated::Exact(K8S_POD_NAME),
        "k8s.deployment.name" => Dedicated::Exact(K8S_DEPLOYMENT_NAME),
        "k8s.node.name" => Dedicated::Exact(K8S_NODE_NAME),
        "k8s.cluster.name" => Dedicated::Exact(K8S_CLUSTER_NAME),
        "http.route" => Dedicated::Exact(HTTP_ROUTE),
        "rpc.service" => Dedicated::Exact(RPC_SERVICE),
        "deployment.environment.name" => {
            Dedicated::Fallback(DEPLOYMENT_ENVIRONMENT, RESOURCE_ATTRIBUTES, false)
        }
        "http.request.method" => Dedicated::Fallback(HTTP_REQUEST_METHOD, SPAN_ATTRIBUTES, false),
        "http.response.status_code" => {
            Dedicated::Fallback(HTTP_RESPONSE_STATUS_CODE, SPAN_ATTRIBUTES, true)
        }
        "url.path" => Dedicated::Fallback(URL_PATH, SPAN_ATTRIBUTES, false),
        "db.system.name" => Dedicated::Fallback(DB_SYSTEM, SPAN_ATTRIBUTES, false),
        _ => return None,
    })
}

/// The tag the Jaeger mapping derives from a span field rather than an attribute, as a
/// predicate on that field; `None` when `key` is no pseudo tag or `value` cannot match it.
fn pseudo_tag(key: &str, value: &str) -> Option<Expr> {
    match key {
        "error" if value == "true" => Some(col(columns::STATUS_CODE).eq(lit(STATUS_ERROR))),
        "span.kind" => SPAN_KINDS
            .iter()
            .find(|(name, _)| *name == value)
            .map(|(_, kind)| col(columns::KIND).eq(lit(*kind))),
        "otel.status_code" => match value {
            "ERROR" => Some(col(columns::STATUS_CODE).eq(lit(STATUS_ERROR))),
            "OK" => Some(col(columns::STATUS_CODE).eq(lit(STATUS_OK))),
            _ => None,
        },
        "otel.status_description" => Some(col(columns::STATUS_MESSAGE).eq(lit(value))),
        "otel.scope.name" => Some(col(columns::SCOPE_NAME).eq(lit(value))),
        "otel.scope.version" => Some(col(columns::SCOPE_VERSION).eq(lit(value))),
        "w3c.tracestate" => Some(col(columns::TRACE_STATE).eq(lit(value))),
        _ => None,
    }
}

/// The predicate of one Jaeger search tag `key=value` on a span row: a span or resource
/// attribute equal to `value` (dedicated columns where one holds the attribute), or the Jaeger
/// pseudo tag of that name.
pub fn tag_filter(key: &str, value: &str) -> Expr {
    let attributes = match dedicated(key) {
        Some(Dedicated::Exact(column)) => col(column).eq(lit(value)),
        Some(Dedicated::Fallback(column, map, is_int)) => {
            let pruning = if is_int {
                match value.parse::<i64>() {
                    Ok(i) => col(column).eq(lit(i)),
                    Err(_) => lit(false),
                }
            } else {
                col(column).eq(lit(value))
            };
            pruning.and(attribute_matches(map, key, value))
        }
        None => attribute_matches(columns::SPAN_ATTRIBUTES, key, value).or(attribute_matches(
            columns::RESOURCE_ATTRIBUTES,
            key,
            value,
        )),
    };
    match pseudo_tag(key, value) {
        Some(pseudo) => pseudo.or(attributes),
        None => attributes,
    }
}

impl JaegerSearch {
    /// The predicate a span must satisfy.
    pub fn filter(&self) -> Expr {
        let mut filter = window_filter(self.window);
        if let Some(service) = &self.service {
            filter = filter.and(col(columns::SERVICE_NAME).eq(lit(service.as_str())));
        }
        if let Some(operation) = &self.operation {
            filter = filter.and(col(columns::NAME).eq(lit(operation.as_str())));
        }
        if let Some(min) = self.min_duration_nano {
            filter = filter.and(col(columns::DURATION_NANO).gt_eq(lit(min)));
        }
        if let Some(max) = self.max_duration_nano {
            filter = filter.and(col(columns::DURATION_NANO).lt_eq(lit(max)));
        }
        for (key, value) in &self.tags {
            filter = filter.and(tag_filter(key, value));
        }
        filter
    }
}

/// Casts a result column (a cast, so dictionary or view encodings read the same).
fn cast(array: &arrow::array::ArrayRef, to: &DataType) -> Result<arrow::array::ArrayRef> {
    arrow::compute::cast(array, to)
        .map_err(|e| Error::Internal(format!("reading a {to} result column: {e}")))
}

fn binary_values(batches: &[RecordBatch], column: usize) -> Result<Vec<Vec<u8>>> {
    let mut out = Vec::new();
    for batch in batches {
        let array = batch.column(column);
        let array = array.as_binary_opt::<i32>().ok_or_else(|| {
            Error::Internal(format!("expected binary ids, got {}", array.data_type()))
        })?;
        out.extend(array.iter().flatten().map(<[u8]>::to_vec));
    }
    Ok(out)
}

fn string_values(batches: &[RecordBatch], column: usize) -> Result<Vec<Option<String>>> {
    let mut out = Vec::new();
    for batch in batches {
        let array = cast(batch.column(column), &DataType::Utf8)?;
        out.extend(
            array
                .as_string::<i32>()
                .iter()
                .map(|s| s.map(str::to_string)),
        );
    }
    Ok(out)
}

impl QueryEngine {
    /// Distinct `service.name`s of the tenant's spans, sorted.
    pub async fn jaeger_services(&self, tenant: &str) -> Result<Vec<String>> {
        let ctx = self.context(tenant)?;
        self.run(async move {
            let batches = ctx
                .table("spans")
                .await?
                .filter(col(columns::SERVICE_NAME).is_not_null())?
                .select_columns(&[columns::SERVICE_NAME])?
                .distinct()?
                .sort(vec![col(columns::SERVICE_NAME).sort(true, true)])?
                .collect()
                .await?;
            Ok(string_values(&batches, 0)?.into_iter().flatten().collect())
        })
        .await
    }

    /// Distinct (span name, OTLP span kind) of `service`, optionally of one kind, sorted.
    pub async fn jaeger_operations(
        &self,
        tenant: &str,
        service: &str,
        kind: Option<i32>,
    ) -> Result<Vec<(String, i32)>> {
        let ctx = self.context(tenant)?;
        let mut filter = col(columns::SERVICE_NAME)
            .eq(lit(service))
            .and(col(columns::NAME).is_not_null());
        if let Some(kind) = kind {
            filter = filter.and(col(columns::KIND).eq(lit(kind)));
        }
        self.run(async move {
            let batches = ctx
                .table("spans")
                .await?
                .filter(filter)?
                .select_columns(&[columns::NAME, columns::KIND])?
                .distinct()?
                .sort(vec![
                    col(columns::NAME).sort(true, true),
                    col(columns::KIND).sort(true, true),
                ])?
                .collect()
                .await?;
            let mut out = Vec::new();
            for batch in &batches {
                let names = cast(batch.column(0), &DataType::Utf8)?;
                let kinds = cast(batch.column(1), &DataType::Int32)?;
                let kinds = kinds.as_primitive::<Int32Type>();
                for (i, name) in names.as_string::<i32>().iter().enumerate() {
                    if let Some(name) = name {
                        let kind = if kinds.is_null(i) { 0 } else { kinds.value(i) };
                        out.push((name.to_string(), kind));
                    }
                }
            }
            Ok(out)
        })
        .await
    }

    /// Ids of the traces with a span matching `search`, the most recently active first, at
    /// most `search.limit`.
    pub async fn jaeger_find_trace_ids(
        &self,
        tenant: &str,
        search: &JaegerSearch,
    ) -> Result<Vec<Vec<u8>>> {
        let ctx = self.context(tenant)?;
        let filter = search.filter();
        let limit = search.limit;
        self.run(async move {
            let batches = ctx
                .table("spans")
                .await?
                .filter(filter)?
                .aggregate(
                    vec![col(columns::TRACE_ID)],
                    vec![max(col(columns::START_TIME_UNIX_NANO)).alias("last_start")],
                )?
                .sort(vec![
                    col("last_start").sort(false, false),
                    col(columns::TRACE_ID).sort(true, true),
                ])?
                .limit(0, Some(limit))?
                .select_columns(&[columns::TRACE_ID])?
                .collect()
                .await?;
            binary_values(&batches, 0)
        })
        .await
    }

    /// Every span of the given traces, ordered by trace id then start time. `window` narrows
    /// the partitions read (pass the search window widened by the longest trace you expect).
    pub async fn jaeger_traces(
        &self,
        tenant: &str,
        trace_ids: &[Vec<u8>],
        window: Option<TimeRange>,
    ) -> Result<Vec<RecordBatch>> {
        if trace_ids.is_empty() {
            return Ok(Vec::new());
        }
        let ctx = self.context(tenant)?;
        let ids = trace_ids
            .iter()
            .map(|id| lit(ScalarValue::Binary(Some(id.clone()))))
            .collect();
        let mut filter = col(columns::TRACE_ID).in_list(ids, false);
        if let Some(window) = window {
            filter = filter.and(window_filter(window));
        }
        self.run(async move {
            Ok(ctx
                .table("spans")
                .await?
                .filter(filter)?
                .sort(vec![
                    col(columns::TRACE_ID).sort(true, true),
                    col(columns::START_TIME_UNIX_NANO).sort(true, true),
                ])?
                .collect()
                .await?)
        })
        .await
    }

    /// Parent -> child service edges of spans starting in `window` whose parent span is of
    /// another service (the parent is looked up in the same window), with call and error
    /// counts weighted by `adjusted_count`: the service graph.
    pub async fn jaeger_dependencies(
        &self,
        tenant: &str,
        window: TimeRange,
    ) -> Result<Vec<Dependency>> {
        use columns::*;
        let ctx = self.context(tenant)?;
        self.run(async move {
            let parents = ctx
                .table("spans")
                .await?
                .filter(window_filter(window).and(col(SERVICE_NAME).is_not_null()))?
                .select(vec![
                    col(TRACE_ID).alias("p_trace"),
                    col(SPAN_ID).alias("p_span"),
                    col(SERVICE_NAME).alias("parent"),
                ])?;
            let children = ctx
                .table("spans")
                .await?
                .filter(
                    window_filter(window)
                        .and(col(PARENT_SPAN_ID).is_not_null())
                        .and(col(SERVICE_NAME).is_not_null()),
                )?
                .select(vec![
                    col(TRACE_ID).alias("c_trace"),
                    col(PARENT_SPAN_ID).alias("c_parent"),
                    col(SERVICE_NAME).alias("child"),
                    datafusion::functions::expr_fn::coalesce(vec![
                        col(ADJUSTED_COUNT),
                        lit(1.0f64),
                    ])
                    .alias("weight"),
                    datafusion::logical_expr::when(
                        col(STATUS_CODE)
                            .eq(lit(2i32))
                            .or(col(HTTP_RESPONSE_STATUS_CODE).gt_eq(lit(500i64))),
                        lit(1.0f64),
                    )
                    .otherwise(lit(0.0f64))?
                    .alias("failed"),
                ])?;
            let batches = children
                .join(
                    parents,
                    datafusion::logical_expr::JoinType::Inner,
                    &["c_trace", "c_parent"],
                    &["p_trace", "p_span"],
                    None,
                )?
                .filter(col("parent").not_eq(col("child")))?
                .aggregate(
                    vec![col("parent"), col("child")],
                    vec![
                        datafusion::functions_aggregate::expr_fn::sum(col("weight")).alias("calls"),
                        datafusion::functions_aggregate::expr_fn::sum(
                            col("weight") * col("failed"),
                        )
                        .alias("errors"),
                    ],
                )?
                .sort(vec![
                    col("parent").sort(true, true),
                    col("child").sort(true, true),
                ])?
                .collect()
                .await?;
            let mut out = Vec::new();
            for batch in &batches {
                let parents = string_values(std::slice::from_ref(batch), 0)?;
                let children = string_values(std::slice::from_ref(batch), 1)?;
                let calls = cast(batch.column(2), &DataType::Float64)?;
                let calls = calls.as_primitive::<Float64Type>();
                let errors = cast(batch.column(3), &DataType::Float64)?;
                let errors = errors.as_primitive::<Float64Type>();
                for (i, (parent, child)) in parents.into_iter().zip(children).enumerate() {
                    if let (Some(parent), Some(child)) = (parent, child) {
                        let weight = if calls.is_null(i) {
                            0.0
                        } else {
                            calls.value(i)
                        };
                        out.push(Dependency {
                            parent,
                            child,
                            call_count: weight.round().max(0.0) as u64,
                            calls: weight,
                            errors: if errors.is_null(i) {
                                0.0
                            } else {
                                errors.value(i)
                            },
                        });
                    }
                }
            }
            Ok(out)
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn window_within_one_day_prunes_by_hour() {
        let start = 1_700_000_000_000_000_000u64; // 2023-11-14T22:13:20Z
        let f = window_filter(TimeRange {
            start_unix_nano: start,
            end_unix_nano: start + 60_000_000_000,
        })
        .to_string();
        assert!(f.contains("date = Utf8(\"2023-11-14\")"), "{f}");
        assert!(
            f.contains("hour BETWEEN Utf8(\"22\") AND Utf8(\"22\")"),
            "{f}"
        );
    }

    #[test]
    fn window_over_days_prunes_first_and_last_day_by_hour() {
        let start = 1_700_000_000_000_000_000u64;
        let f = window_filter(TimeRange {
            start_unix_nano: start,
            end_unix_nano: start + 2 * 86_400_000_000_000,
        })
        .to_string();
        assert!(
            f.contains("BETWEEN Utf8(\"2023-11-14\") AND Utf8(\"2023-11-16\")"),
            "{f}"
        );
        assert!(f.contains("hour >= Utf8(\"22\")"), "{f}");
    }

    #[test]
    fn tags_use_dedicated_columns_and_pseudo_tags() {
        assert_eq!(
            tag_filter("http.route", "/x").to_string(),
            "http_route = Utf8(\"/x\")"
        );
        let status = tag_filter("http.response.status_code", "500").to_string();
        assert!(
            status.starts_with("http_response_status_code = Int64(500) AND"),
            "{status}"
        );
        let error = tag_filter("error", "true").to_string();
        assert!(error.starts_with("status_code = Int32(2) OR"), "{error}");
        let kind = tag_filter("span.kind", "client").to_string();
        assert!(kind.starts_with("kind = Int32(3) OR"), "{kind}");
        let other = tag_filter("customer.tier", "gold").to_string();
        assert!(other.contains("span_attributes") && other.contains("resource_attributes"));
        assert!(
            !other.contains("Int64"),
            "a non-number is not compared as one: {other}"
        );
    }
}
