//! TraceQL metrics (`{ ... } | rate() by (...)`): time series of the spans a filter matches,
//! served from the `span_metrics_1m` rollups when they can answer exactly, else from `spans`.
//!
//! ```text
//!  { cond } | f() by (a, b)      step buckets [start + i·step, start + (i+1)·step), end exclusive
//!    rollups  span_metrics_1m WHERE minute in window AND cond'   cond' = cond over rollup columns
//!             GROUP BY bucket, a', b':  Σ count | ddsketch_merge(duration_sketch)
//!    spans    spans WHERE start in window AND cond
//!             GROUP BY bucket, a, b [, 2^⌈log2 duration⌉]:  Σ adjusted_count | ddsketch(duration)
//!    -> per group: rate = Σ/step seconds, count_over_time = Σ, quantiles (seconds) per `p`,
//!       histogram counts per `__bucket` (upper bound, seconds)
//! ```
//!
//! Every count is weighted by `adjusted_count` (1 when absent), so aggregates stay unbiased
//! under tail sampling; sketches count each span `round(adjusted_count)` times, as the rollups
//! do. Quantiles come from DDSketches (1 % relative accuracy) on both paths.
//!
//! The rollups serve a query when all of these hold (see [`MetricsPlan::rollup`]):
//! - the function is `rate()`, `count_over_time()` or `quantile_over_time(duration, ...)`
//!   (`histogram_over_time` needs power-of-two buckets, which per-minute sketches cannot give
//!   exactly);
//! - the filter only compares `resource.service.name`, `span.http.route` and `name` with
//!   strings (any operator), `kind` with a kind, and `status` with `error` (`=` or `!=`:
//!   the rollups' status class folds `ok` and `unset` into HTTP classes), joined by `&&`, `||`
//!   and `!`;
//! - `by()` names only `resource.service.name`, `span.http.route`, `name` and `kind`;
//! - start, end and step are whole minutes.
//!
//! Rollups are written at flush: spans still in the write buffer are counted only by the
//! spans path.

use std::collections::{BTreeMap, HashMap};

use arrow::array::{Array, ArrayRef, AsArray};
use arrow::datatypes::{DataType, Float64Type, Int64Type};
use datafusion::execution::FunctionRegistry as _;
use datafusion::functions::core::expr_fn::coalesce;
use datafusion::functions::math::expr_fn::{ceil, log2, power};
use datafusion::functions_aggregate::expr_fn::sum;
use datafusion::logical_expr::{cast, when, Expr};
use datafusion::prelude::{col, lit, SessionContext};
use sketches_ddsketch::DDSketch;
use tracelake_proto::columns;
use tracelake_storage::rollup::{rollup_columns as rc, ROLLUP_DATASET};

use crate::engine::{partition_filter, window_filter};
use crate::error::{Error, Result};
use crate::search::{read_value, value_expr, with_trace_columns, Value};
use crate::sketch::{decode, new_sketch};
use crate::traceql::compile::{self, TraceColumns};
use crate::traceql::{
    Attribute, AttributeScope, CompareOp, Comparison, Condition, Field, Intrinsic, Literal,
    MetricsFunction, Query, SpansetExpr, Status,
};
use crate::{QueryEngine, TimeRange};

/// At most this many points per series (as Prometheus).
pub const MAX_POINTS: u64 = 11_000;

/// At most this many series per answer (Tempo's default `max_response_series`).
pub const MAX_SERIES: usize = 1_000;

const MINUTE_NANOS: u64 = 60_000_000_000;

/// A TraceQL metrics query over a window.
#[derive(Debug, Clone)]
pub struct MetricsRequest {
    /// The parsed query; it must end with a metrics function.
    pub query: Query,
    /// Window start, unix nanoseconds (inclusive).
    pub start_unix_nano: u64,
    /// Window end, unix nanoseconds (exclusive).
    pub end_unix_nano: u64,
    /// Nanoseconds per point; the instant form uses the whole window.
    pub step_nanos: u64,
}

impl MetricsRequest {
    /// Points per series: `ceil((end - start) / step)`.
    pub fn points(&self) -> u64 {
        self.end_unix_nano
            .saturating_sub(self.start_unix_nano)
            .div_ceil(self.step_nanos.max(1))
    }

    /// Checks the window and step; the error says what to change.
    pub fn validate(&self) -> Result<()> {
        if self.end_unix_nano <= self.start_unix_nano {
            return Err(Error::InvalidRequest(format!(
                "end ({}) must be after start ({})",
                self.end_unix_nano / 1_000_000_000,
                self.start_unix_nano / 1_000_000_000
            )));
        }
        if self.step_nanos == 0 {
            return Err(Error::InvalidRequest(
                "step must be positive: write it like 60s, 5m or 300".into(),
            ));
        }
        let points = self.points();
        if points > MAX_POINTS {
            return Err(Error::InvalidRequest(format!(
                "{points} points per series; at most {MAX_POINTS}: use a larger step or a \
                 shorter window"
            )));
        }
        Ok(())
    }
}

/// Which table answered a metrics query.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MetricsSource {
    /// The per-minute rollups (`span_metrics_1m`).
    Rollups,
    /// The raw spans.
    Spans,
}

impl MetricsSource {
    /// The table's name.
    pub fn as_str(self) -> &'static str {
        match self {
            MetricsSource::Rollups => ROLLUP_DATASET,
            MetricsSource::Spans => "spans",
        }
    }
}

/// A series label's value, typed as OTLP `AnyValue`s are.
#[derive(Debug, Clone, PartialEq)]
pub enum LabelValue {
    /// Text (also statuses, kinds and ids).
    String(String),
    /// An integer (also durations, in nanoseconds).
    Int(i64),
    /// A float (the quantile `p`, the histogram `__bucket`).
    Float(f64),
    /// A boolean.
    Bool(bool),
    /// No spans of the series had the attribute.
    Nil,
}

impl From<Option<Value>> for LabelValue {
    fn from(v: Option<Value>) -> Self {
        match v {
            None => LabelValue::Nil,
            Some(Value::String(s)) => LabelValue::String(s),
            Some(Value::Int(n) | Value::Duration(n)) => LabelValue::Int(n),
            Some(Value::Float(f)) => LabelValue::Float(f),
            Some(Value::Bool(b)) => LabelValue::Bool(b),
            Some(Value::Status(s)) => LabelValue::String(s.as_str().into()),
            Some(Value::Kind(k)) => LabelValue::String(k.as_str().into()),
            Some(Value::Id(id)) => {
                LabelValue::String(id.iter().map(|b| format!("{b:02x}")).collect())
            }
        }
    }
}

/// One point of a series.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct MetricsSample {
    /// Start of the step, unix milliseconds.
    pub timestamp_ms: i64,
    /// The function's value over the step.
    pub value: f64,
}

/// One series: a combination of `by()` values (and quantile or histogram bucket).
#[derive(Debug, Clone, PartialEq)]
pub struct MetricsSeries {
    /// `(key, value)` labels: the `by()` fields that have a value, then `p` or `__bucket`;
    /// `__name__` = the function when there is no other.
    pub labels: Vec<(String, LabelValue)>,
    /// Oldest first. `rate`, `count_over_time` and `histogram_over_time` have every step
    /// (0 without spans); quantiles only the steps with spans.
    pub samples: Vec<MetricsSample>,
}

/// The answer to a metrics query.
#[derive(Debug, Clone, PartialEq)]
pub struct MetricsResponse {
    /// Series ordered by their `by()` values, then `p` or `__bucket`.
    pub series: Vec<MetricsSeries>,
    /// The table that answered.
    pub source: MetricsSource,
}

/// What is computed per step and group.
#[derive(Debug, Clone, PartialEq)]
enum Function {
    /// Σ weight; divided by the step's seconds for `rate()`.
    Count { per_second: bool },
    /// The duration quantiles, in seconds.
    Quantiles(Vec<f64>),
    /// Σ weight per power-of-two duration bucket.
    Histogram,
}

/// A metrics query, checked and prepared.
#[derive(Debug, Clone)]
pub(crate) struct MetricsPlan {
    name: &'static str,
    function: Function,
    /// The span condition; `None` matches every span.
    condition: Option<Condition>,
    by: Vec<Field>,
}

/// The rollup form of a plan: filter and grouping over `span_metrics_1m` columns.
#[derive(Debug)]
pub(crate) struct RollupPlan {
    filter: Option<Expr>,
    groups: Vec<Expr>,
}

fn unsupported(what: impl Into<String>) -> Error {
    Error::Unsupported(what.into())
}

/// The condition a span must meet to be in `e`'s result, for expressions whose result is
/// decided span by span (`{ }` and `||` of them); `Ok(None)` matches every span.
fn span_condition(e: &SpansetExpr) -> Result<Option<Condition>> {
    match e {
        SpansetExpr::Filter(f) => Ok(f.condition.clone()),
        SpansetExpr::Or(es) => {
            let mut parts = Vec::with_capacity(es.len());
            for e in es {
                match span_condition(e)? {
                    None => return Ok(None),
                    Some(Condition::Or(cs)) => parts.extend(cs),
                    Some(c) => parts.push(c),
                }
            }
            Ok(Some(Condition::Or(parts)))
        }
        SpansetExpr::And(_) | SpansetExpr::Structural { .. } => Err(unsupported(
            "metrics over `&&` or structural operators (>>, >, <<, <, ~) between spansets are \
             not supported yet: use one spanset filter { ... } (|| between filters works)",
        )),
    }
}

fn is_duration(f: &Field) -> bool {
    matches!(f, Field::Intrinsic(Intrinsic::SpanDuration))
}

impl MetricsPlan {
    /// Checks that `query` is a metrics query tracelake can answer.
    pub(crate) fn new(query: &Query) -> Result<Self> {
        let Some(metrics) = &query.metrics else {
            return Err(Error::InvalidRequest(
                "not a metrics query: end it with | rate(), | count_over_time(), \
                 | quantile_over_time(duration, 0.99) or | histogram_over_time(duration)"
                    .into(),
            ));
        };
        if !query.pipeline.is_empty() {
            return Err(unsupported(
                "pipeline stages before a metrics function are not supported yet: write \
                 { conditions } | rate()",
            ));
        }
        let function = match &metrics.function {
            MetricsFunction::Rate => Function::Count { per_second: true },
            MetricsFunction::CountOverTime => Function::Count { per_second: false },
            MetricsFunction::QuantileOverTime { field, quantiles } if is_duration(field) => {
                Function::Quantiles(quantiles.clone())
            }
            MetricsFunction::HistogramOverTime(field) if is_duration(field) => Function::Histogram,
            MetricsFunction::QuantileOverTime { field, .. }
            | MetricsFunction::HistogramOverTime(field) => {
                return Err(unsupported(format!(
                    "{}({field}) is not supported yet: only duration",
                    metrics.function.name()
                )))
            }
            other => {
                return Err(unsupported(format!(
                    "{}() is not supported yet: use rate(), count_over_time(), \
                     quantile_over_time(duration, ...) or histogram_over_time(duration)",
                    other.name()
                )))
            }
        };
        let plan = Self {
            name: metrics.function.name(),
            function,
            condition: span_condition(&query.spansets)?,
            by: metrics.by.clone(),
        };
        // Fail early on fields that cannot be read.
        if let Some(c) = &plan.condition {
            compile::exact(c)?;
        }
        for f in &plan.by {
            group_expr(f)?;
        }
        Ok(plan)
    }

    /// The rollup form of this plan for `req`'s window, or `None` when the rollups cannot
    /// answer exactly (see the module docs).
    pub(crate) fn rollup(&self, req: &MetricsRequest) -> Option<RollupPlan> {
        let aligned = [req.start_unix_nano, req.end_unix_nano, req.step_nanos]
            .iter()
            .all(|n| n % MINUTE_NANOS == 0);
        if !aligned || self.function == Function::Histogram {
            return None;
        }
        let filter = match &self.condition {
            Some(c) => Some(rollup_condition(c)?.is_true()),
            None => None,
        };
        let groups = self
            .by
            .iter()
            .map(rollup_group)
            .collect::<Option<Vec<_>>>()?;
        Some(RollupPlan { filter, groups })
    }

    /// Per-trace columns the spans path must join in.
    fn trace_columns(&self) -> TraceColumns {
        let mut fields = Vec::new();
        if let Some(c) = &self.condition {
            compile::condition_fields(c, &mut fields);
        }
        TraceColumns::of(fields.into_iter().chain(&self.by))
    }
}

/// A `spans` column with the same value as `field` has in the rollups' grouping column, so both
/// paths label series alike; else the field's value.
fn group_expr(field: &Field) -> Result<Expr> {
    if let Field::Attribute(a) = field {
        if let Some(column) = compile::exact_column(a.scope, &a.name) {
            return Ok(col(column));
        }
    }
    value_expr(field)
}

/// The rollup column that holds `field` exactly, if one does.
fn rollup_column(field: &Field) -> Option<&'static str> {
    match field {
        Field::Attribute(Attribute { scope, name }) => match (scope, name.as_str()) {
            (AttributeScope::Resource, "service.name") => Some(rc::SERVICE_NAME),
            (AttributeScope::Span, "http.route") => Some(rc::HTTP_ROUTE),
            _ => None,
        },
        Field::Intrinsic(Intrinsic::SpanName) => Some(rc::SPAN_NAME),
        _ => None,
    }
}

fn rollup_group(field: &Field) -> Option<Expr> {
    match field {
        Field::Intrinsic(Intrinsic::SpanKind) => Some(col(rc::SPAN_KIND)),
        f => rollup_column(f).map(col),
    }
}

/// The condition over rollup columns, true on a rollup row exactly when the `spans` condition
/// ([`compile::exact`]) is true on each of the row's spans; `None` when the rollups cannot tell.
/// Like `compile`'s, the result may be NULL where the comparison is (NULL counts as false).
pub(crate) fn rollup_condition(c: &Condition) -> Option<Expr> {
    Some(match c {
        Condition::Compare(cmp) => rollup_comparison(cmp)?,
        Condition::Bool(b) => lit(*b),
        Condition::Not(inner) => rollup_condition(inner)?.is_not_true(),
        Condition::And(cs) => cs
            .iter()
            .map(rollup_condition)
            .collect::<Option<Vec<_>>>()?
            .into_iter()
            .reduce(Expr::and)?,
        Condition::Or(cs) => cs
            .iter()
            .map(rollup_condition)
            .collect::<Option<Vec<_>>>()?
            .into_iter()
            .reduce(Expr::or)?,
    })
}

fn rollup_comparison(cmp: &Comparison) -> Option<Expr> {
    let op = cmp.op;
    match (&cmp.field, &cmp.value) {
        // The rollup columns copy the spans' dedicated columns, which `compile` compares.
        (field, Literal::String(s)) => Some(compile::compare(
            col(rollup_column(field)?),
            op,
            compile::string_rhs(op, s),
        )),
        (Field::Intrinsic(Intrinsic::SpanKind), Literal::Kind(k)) if !op.is_regex() => {
            Some(compile::compare(col(rc::SPAN_KIND), op, lit(k.otlp_code())))
        }
        // Status ERROR is the class `error`; other statuses hide behind HTTP classes.
        (Field::Intrinsic(Intrinsic::SpanStatus), Literal::Status(Status::Error))
            if matches!(op, CompareOp::Eq | CompareOp::Ne) =>
        {
            Some(compile::compare(col(rc::STATUS_CLASS), op, lit("error")))
        }
        _ => None,
    }
}

/// Per step and group: a weighted count or a sketch.
enum Agg {
    Count(f64),
    Sketch(DDSketch),
}

/// The rows of one series (before quantiles are split out).
struct SeriesAcc {
    values: Vec<Option<Value>>,
    bucket_le: Option<f64>,
    steps: BTreeMap<i64, Agg>,
}

/// Plain array types for [`read_value`]: string views and dictionaries cast to `Utf8`.
fn plain(array: &ArrayRef) -> Result<ArrayRef> {
    let to = match array.data_type() {
        DataType::Utf8View | DataType::LargeUtf8 => DataType::Utf8,
        DataType::Dictionary(_, v) => match v.as_ref() {
            DataType::Utf8View | DataType::LargeUtf8 => DataType::Utf8,
            other => other.clone(),
        },
        DataType::BinaryView | DataType::LargeBinary => DataType::Binary,
        _ => return Ok(array.clone()),
    };
    arrow::compute::cast(array, &to).map_err(|e| Error::Internal(format!("metrics groups: {e}")))
}

/// `adjusted_count` as a float, 1 where absent: what each span stands for.
pub(crate) fn weight() -> Expr {
    coalesce(vec![
        cast(col(columns::ADJUSTED_COUNT), DataType::Float64),
        lit(1.0f64),
    ])
}

impl QueryEngine {
    /// Runs a TraceQL metrics query for `tenant` (see the module docs).
    pub async fn metrics_query_range(
        &self,
        tenant: &str,
        req: MetricsRequest,
    ) -> Result<MetricsResponse> {
        req.validate()?;
        let plan = MetricsPlan::new(&req.query)?;
        let ctx = self.context(tenant)?;
        self.run(async move {
            let started = std::time::Instant::now();
            let (source, batches) = match plan.rollup(&req) {
                Some(rollup) => (
                    MetricsSource::Rollups,
                    rollup_batches(&ctx, &plan, &rollup, &req).await?,
                ),
                None => (
                    MetricsSource::Spans,
                    spans_batches(&ctx, &plan, &req).await?,
                ),
            };
            let series = assemble(&plan, &req, &batches)?;
            tracing::debug!(
                source = source.as_str(),
                series = series.len(),
                ms = started.elapsed().as_secs_f64() * 1e3,
                "metrics query done"
            );
            Ok(MetricsResponse { series, source })
        })
        .await
    }
}

fn nanos(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

/// Value column of the aggregate: Σ weight (Float64) or a sketch (Binary).
const VALUE: &str = "__tl_value";
const STEP: &str = "__tl_step";
const LE: &str = "__tl_le";

async fn rollup_batches(
    ctx: &SessionContext,
    plan: &MetricsPlan,
    rollup: &RollupPlan,
    req: &MetricsRequest,
) -> Result<Vec<arrow::array::RecordBatch>> {
    let (start, end) = (nanos(req.start_unix_nano), nanos(req.end_unix_nano));
    let minute = || col(rc::MINUTE);
    let mut filter = minute()
        .gt_eq(lit(start))
        .and(minute().lt(lit(end)))
        .and(partition_filter(TimeRange {
            start_unix_nano: req.start_unix_nano,
            end_unix_nano: req.end_unix_nano - 1,
        }));
    if let Some(f) = &rollup.filter {
        filter = filter.and(f.clone());
    }
    let mut groups = vec![((minute() - lit(start)) / lit(nanos(req.step_nanos))).alias(STEP)];
    groups.extend(
        rollup
            .groups
            .iter()
            .enumerate()
            .map(|(i, g)| g.clone().alias(format!("__tl_g{i}"))),
    );
    let value = match plan.function {
        Function::Count { .. } => sum(col(rc::COUNT)),
        Function::Quantiles(_) => ctx
            .udaf("ddsketch_merge")
            .map_err(|e| Error::Internal(format!("sketch functions: {e}")))?
            .call(vec![col(rc::DURATION_SKETCH)]),
        Function::Histogram => {
            return Err(Error::Internal(
                "histograms are not read from rollups".into(),
            ))
        }
    };
    Ok(ctx
        .table(ROLLUP_DATASET)
        .await?
        .filter(filter)?
        .aggregate(groups, vec![value.alias(VALUE)])?
        .collect()
        .await?)
}

async fn spans_batches(
    ctx: &SessionContext,
    plan: &MetricsPlan,
    req: &MetricsRequest,
) -> Result<Vec<arrow::array::RecordBatch>> {
    let start = nanos(req.start_unix_nano);
    let mut spans = ctx.table("spans").await?.filter(window_filter(TimeRange {
        start_unix_nano: req.start_unix_nano,
        end_unix_nano: req.end_unix_nano - 1,
    }))?;
    spans = with_trace_columns(spans, plan.trace_columns())?;
    if let Some(c) = &plan.condition {
        spans = spans.filter(compile::exact(c)?)?;
    }
    let duration = || col(columns::DURATION_NANO);
    let mut groups = vec![((col(columns::START_TIME_UNIX_NANO) - lit(start))
        / lit(nanos(req.step_nanos)))
    .alias(STEP)];
    for (i, f) in plan.by.iter().enumerate() {
        groups.push(group_expr(f)?.alias(format!("__tl_g{i}")));
    }
    let value = match plan.function {
        Function::Count { .. } => sum(weight()),
        Function::Histogram => {
            // Tempo's buckets: 2^ceil(log2(nanos)), spans shorter than 2 ns left out.
            spans = spans.filter(duration().gt_eq(lit(2i64)))?;
            groups.push(
                power(lit(2.0f64), ceil(log2(cast(duration(), DataType::Float64)))).alias(LE),
            );
            sum(weight())
        }
        Function::Quantiles(_) => {
            // As the rollups: negative durations count as 0.
            let clamped = when(duration().lt(lit(0i64)), lit(0i64)).otherwise(duration())?;
            ctx.udaf("ddsketch")
                .map_err(|e| Error::Internal(format!("sketch functions: {e}")))?
                .call(vec![clamped, weight()])
        }
    };
    Ok(spans
        .aggregate(groups, vec![value.alias(VALUE)])?
        .collect()
        .await?)
}

/// The series of the aggregated rows `[step, g0.., (le), value]`.
fn assemble(
    plan: &MetricsPlan,
    req: &MetricsRequest,
    batches: &[arrow::array::RecordBatch],
) -> Result<Vec<MetricsSeries>> {
    let bad = |what: &str| Error::Internal(format!("metrics: unexpected type of {what}"));
    let histogram = plan.function == Function::Histogram;
    let mut acc: HashMap<(Vec<String>, u64), SeriesAcc> = HashMap::new();
    for b in batches {
        let steps = plain(b.column(0))?;
        let steps = steps
            .as_primitive_opt::<Int64Type>()
            .ok_or_else(|| bad("the step"))?;
        let groups = (0..plan.by.len())
            .map(|i| plain(b.column(1 + i)))
            .collect::<Result<Vec<_>>>()?;
        let le = if histogram {
            let le = b.column(1 + plan.by.len());
            Some(
                le.as_primitive_opt::<Float64Type>()
                    .ok_or_else(|| bad("the bucket"))?
                    .clone(),
            )
        } else {
            None
        };
        let value = b.column(b.num_columns() - 1);
        let sketches = matches!(plan.function, Function::Quantiles(_))
            .then(|| plain(value))
            .transpose()?;
        for row in 0..b.num_rows() {
            let values: Vec<Option<Value>> = plan
                .by
                .iter()
                .zip(&groups)
                .map(|(f, a)| read_value(f, a, row))
                .collect();
            let keys = values
                .iter()
                .map(|v| v.as_ref().map_or_else(String::new, Value::group_key))
                .collect();
            let bucket_le = le.as_ref().map(|a| a.value(row));
            let entry = acc
                .entry((keys, bucket_le.map_or(0, f64::to_bits)))
                .or_insert_with(|| SeriesAcc {
                    values,
                    bucket_le,
                    steps: BTreeMap::new(),
                });
            let step = steps.value(row);
            match &sketches {
                Some(s) => {
                    let s = s.as_binary_opt::<i32>().ok_or_else(|| bad("a sketch"))?;
                    if s.is_null(row) {
                        continue;
                    }
                    let sketch = decode(s.value(row))?;
                    let into = entry
                        .steps
                        .entry(step)
                        .or_insert_with(|| Agg::Sketch(new_sketch()));
                    if let Agg::Sketch(into) = into {
                        into.merge(&sketch)
                            .map_err(|e| Error::Internal(format!("sketch merge: {e}")))?;
                    }
                }
                None => {
                    let v = value
                        .as_primitive_opt::<Float64Type>()
                        .ok_or_else(|| bad("a count"))?;
                    if let Agg::Count(c) = entry.steps.entry(step).or_insert(Agg::Count(0.0)) {
                        *c += v.value(row);
                    }
                }
            }
        }
    }
    let per_group = match &plan.function {
        Function::Quantiles(qs) => qs.len(),
        _ => 1,
    };
    if acc.len() * per_group > MAX_SERIES {
        return Err(Error::InvalidRequest(format!(
            "{} series; at most {MAX_SERIES}: filter more spans or group by fewer or coarser \
             fields",
            acc.len() * per_group
        )));
    }
    let mut ordered: Vec<((Vec<String>, u64), SeriesAcc)> = acc.into_iter().collect();
    ordered.sort_by(|(a, x), (b, y)| {
        a.0.cmp(&b.0).then(
            x.bucket_le
                .unwrap_or(0.0)
                .total_cmp(&y.bucket_le.unwrap_or(0.0)),
        )
    });
    let points = req.points();
    let step_secs = req.step_nanos as f64 / 1e9;
    let timestamp = |step: i64| {
        let t = req.start_unix_nano as i128 + step as i128 * req.step_nanos as i128;
        (t / 1_000_000) as i64
    };
    let mut out = Vec::new();
    for (_, s) in ordered {
        let labels = group_labels(plan, s.values);
        match &plan.function {
            Function::Count { per_second } => {
                let scale = if *per_second { step_secs } else { 1.0 };
                out.push(MetricsSeries {
                    labels: with_name(labels, plan.name),
                    samples: dense(&s.steps, points, timestamp, scale),
                });
            }
            Function::Histogram => {
                let mut labels = labels;
                let le = s.bucket_le.unwrap_or(0.0) / 1e9;
                labels.push(("__bucket".into(), LabelValue::Float(le)));
                out.push(MetricsSeries {
                    labels,
                    samples: dense(&s.steps, points, timestamp, 1.0),
                });
            }
            Function::Quantiles(qs) => {
                for &q in qs {
                    let mut labels = labels.clone();
                    labels.push(("p".into(), LabelValue::Float(q)));
                    let samples = s
                        .steps
                        .iter()
                        .filter_map(|(step, agg)| {
                            let Agg::Sketch(sketch) = agg else {
                                return None;
                            };
                            let nanos = sketch.quantile(q).ok().flatten()?;
                            Some(MetricsSample {
                                timestamp_ms: timestamp(*step),
                                value: nanos / 1e9,
                            })
                        })
                        .collect::<Vec<_>>();
                    if !samples.is_empty() {
                        out.push(MetricsSeries { labels, samples });
                    }
                }
            }
        }
    }
    Ok(out)
}

/// One sample per step, 0 for steps without spans.
fn dense(
    steps: &BTreeMap<i64, Agg>,
    points: u64,
    timestamp: impl Fn(i64) -> i64,
    divide_by: f64,
) -> Vec<MetricsSample> {
    (0..points as i64)
        .map(|step| {
            let v = match steps.get(&step) {
                Some(Agg::Count(c)) => *c,
                _ => 0.0,
            };
            MetricsSample {
                timestamp_ms: timestamp(step),
                value: v / divide_by,
            }
        })
        .collect()
}

/// The label key of a `by()` field: the attribute as written with its scope
/// (`resource.service.name`), or the intrinsic's short name (`name`, `kind`, `status`).
fn label_key(f: &Field) -> String {
    match f {
        Field::Attribute(a) => format!("{}{}", a.scope.prefix(), a.name),
        Field::Intrinsic(i) => i.legacy_name().unwrap_or(i.as_str()).to_string(),
    }
}

/// The `by()` labels of a group, as Tempo: fields without a value are left out, unless none
/// has one (then the first field is labelled nil).
fn group_labels(plan: &MetricsPlan, values: Vec<Option<Value>>) -> Vec<(String, LabelValue)> {
    let mut labels: Vec<(String, LabelValue)> = plan
        .by
        .iter()
        .zip(values)
        .filter(|(_, v)| v.is_some())
        .map(|(f, v)| (label_key(f), LabelValue::from(v)))
        .collect();
    if labels.is_empty() {
        if let Some(f) = plan.by.first() {
            labels.push((label_key(f), LabelValue::Nil));
        }
    }
    labels
}

/// `__name__` = the function when a series has no other label (no `by()`), as Tempo.
fn with_name(mut labels: Vec<(String, LabelValue)>, name: &str) -> Vec<(String, LabelValue)> {
    if labels.is_empty() {
        labels.push(("__name__".into(), LabelValue::String(name.into())));
    }
    labels
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::traceql::parse;

    fn request(q: &str, start_secs: u64, end_secs: u64, step_secs: u64) -> MetricsRequest {
        MetricsRequest {
            query: parse(q).unwrap(),
            start_unix_nano: start_secs * 1_000_000_000,
            end_unix_nano: end_secs * 1_000_000_000,
            step_nanos: step_secs * 1_000_000_000,
        }
    }

    fn source(q: &str, start: u64, end: u64, step: u64) -> Option<&'static str> {
        let req = request(q, start, end, step);
        let plan = MetricsPlan::new(&req.query).unwrap();
        Some(match plan.rollup(&req) {
            Some(_) => "rollups",
            None => "spans",
        })
    }

    #[test]
    fn rollups_serve_what_their_columns_hold_exactly() {
        let rollups = [
            "{ } | rate()",
            "{ resource.service.name = \"cart\" } | count_over_time() by (name)",
            "{ span.http.route =~ \"/api/.*\" && kind != client } | rate() by (span.http.route)",
            "{ status = error || !(name = \"GET\") } | quantile_over_time(duration, .5, .99) \
             by (resource.service.name, kind)",
            "{ resource.service.name != \"a\" } || { name = \"b\" } | rate()",
        ];
        for q in rollups {
            assert_eq!(source(q, 600, 4200, 60), Some("rollups"), "{q}");
        }
        let spans = [
            // Attributes the rollups do not have, or not exactly.
            "{ span.http.method = \"GET\" } | rate()",
            "{ .service.name = \"cart\" } | rate()",
            "{ status = ok } | rate()",
            "{ duration > 10ms } | rate()",
            "{ resource.service.name = nil } | rate()",
            "{ } | rate() by (status)",
            "{ } | rate() by (span.http.method)",
            // Exact power-of-two buckets need the spans.
            "{ } | histogram_over_time(duration)",
        ];
        for q in spans {
            assert_eq!(source(q, 600, 4200, 60), Some("spans"), "{q}");
        }
        // Windows and steps not in whole minutes.
        assert_eq!(source("{ } | rate()", 600, 4200, 90), Some("spans"));
        assert_eq!(source("{ } | rate()", 630, 4200, 60), Some("spans"));
        assert_eq!(source("{ } | rate()", 600, 4230, 60), Some("spans"));
    }

    #[test]
    fn unsupported_queries_say_what_works() {
        let error = |q: &str| {
            MetricsPlan::new(&parse(q).unwrap())
                .unwrap_err()
                .to_string()
        };
        assert!(error("{ }").contains("not a metrics query"));
        assert!(error("{ .a = 1 } >> { .b = 2 } | rate()").contains("structural"));
        assert!(error("{ .a = 1 } && { .b = 2 } | rate()").contains("one spanset filter"));
        assert!(error("{ } | min_over_time(duration)").contains("use rate()"));
        assert!(error("{ } | quantile_over_time(span.size, .5)").contains("only duration"));
        assert!(error("{ } | by(name) | rate()").contains("pipeline"));
    }

    #[test]
    fn windows_and_steps_are_checked() {
        let error = |start, end, step| {
            request("{ } | rate()", start, end, step)
                .validate()
                .unwrap_err()
                .to_string()
        };
        assert!(error(100, 100, 60).contains("must be after start"));
        assert!(error(0, 100, 0).contains("step must be positive"));
        assert!(error(0, 12_000, 1).contains("12000 points per series; at most 11000"));
        let ok = request("{ } | rate()", 0, 11_000, 1);
        assert!(ok.validate().is_ok());
        assert_eq!(request("{ } | rate()", 0, 61, 60).points(), 2);
    }
}
