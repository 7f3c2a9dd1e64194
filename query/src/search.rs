//! Trace search: TraceQL compiled to DataFusion plans.
//!
//! A search runs in two phases, so that no more than the candidate traces' spans are ever
//! loaded into memory, over time slices of the window, newest first, until `limit` traces
//! match:
//!
//! ```text
//!  1. find   spans WHERE slice AND (prune(f1) OR prune(f2) ...)       the filters go into the
//!            GROUP BY trace_id                                        Parquet reader (partitions,
//!            HAVING <spanset formula over bool_or(prune(fi))>         start-time statistics,
//!            ORDER BY max(start) DESC  [LIMIT limit: one filter]      bloom filters, pushdown)
//!  2. check  for pages of candidates, newest first, until `limit` traces match:
//!            spans WHERE trace_id IN (page) AND near the page's time  exact conditions
//!            [⋈ per-trace columns] -> per trace: spanset algebra (&&, ||, structural), then
//!            the pipeline (by, count(), avg(), select, filters), in memory over few spans
//! ```
//!
//! Phase 1's formula is a necessary condition: `&&` and the structural operators need every
//! side to match somewhere in the trace, `||` either side. Phase 2 decides exactly. A trace is
//! judged on its spans within five minutes (`TRACE_SPREAD_NANOS`) of its newest matching span.
//!
//! **Structural operators** are evaluated in phase 2, over the parent links of each candidate
//! trace (a hash map from span id to span). Join plans on `(trace_id, parent_span_id)` work for
//! `>`, `<` and `~`, but `>>` and `<<` need a join per tree level (or a recursive query) over
//! the whole window; precomputed nested-set bounds would need every trace complete before
//! compaction, which late spans and the write buffer break. Phase 1 already restricts the work
//! to traces where both sides match, and a trace's spans fit in memory by construction, so
//! walking parent links there is both exact and the cheapest plan.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use arrow::array::{
    Array, ArrayRef, AsArray, BinaryArray, BooleanArray, Int32Array, Int64Array, RecordBatch,
    StringArray, StructArray,
};
use arrow::datatypes::DataType;
use datafusion::dataframe::DataFrame;
use datafusion::functions::core::expr_fn::coalesce;
use datafusion::functions_aggregate::expr_fn::{bool_or, count, max, min};
use datafusion::logical_expr::{when, Expr, JoinType};
use datafusion::prelude::{col, lit, SessionContext};
use datafusion::scalar::ScalarValue;
use tracelake_proto::{attr_type, columns};

use crate::error::{Error, Result};
use crate::traceql::compile::{
    self, TraceColumns, CHILD_COUNT, ROOT_NAME, ROOT_SERVICE, TRACE_DURATION,
};
use crate::traceql::{
    Aggregate, Attribute, AttributeScope, CompareOp, Field, Intrinsic, Literal, Query, SpanKind,
    SpansetExpr, Stage, Status, StructuralOp,
};
use crate::QueryEngine;

/// The most traces one search returns.
pub const MAX_LIMIT: usize = 10_000;

/// How far apart a trace's spans are assumed to be at most: its spans are looked for this far
/// around its newest matching span, and `&&` and structural operators relate spans this far
/// apart. A longer trace is judged on the spans within it.
const TRACE_SPREAD_NANOS: u64 = 5 * 60 * 1_000_000_000;

/// Spans in the first slice a search scans (it doubles after each slice).
const FIRST_SLICE_ROWS: f64 = 100_000.0;

/// The shortest slice, whatever the density.
const MIN_SLICE_SPAN_NANOS: u64 = 1_000_000_000;

/// Where a tenant's spans are in time: `(min start, max start, rows)` per file (from Delta
/// statistics) and per buffered batch. Rows are taken as spread evenly over each range; files
/// hold a flush's few seconds or a compacted minute, so the estimate is close.
#[derive(Debug, Clone, Default)]
pub(crate) struct Density {
    ranges: Arc<Vec<(i64, i64, u64)>>,
    buffered: Vec<(i64, i64, u64)>,
}

impl Density {
    pub(crate) fn new(ranges: Arc<Vec<(i64, i64, u64)>>, buffered: &[RecordBatch]) -> Self {
        let buffered = buffered
            .iter()
            .filter_map(|b| {
                let starts = b
                    .column_by_name(columns::START_TIME_UNIX_NANO)?
                    .as_any()
                    .downcast_ref::<Int64Array>()?;
                let lo = arrow::compute::min(starts)?;
                let hi = arrow::compute::max(starts)?;
                Some((lo, hi, b.num_rows() as u64))
            })
            .collect();
        Self { ranges, buffered }
    }

    /// Estimated spans starting in `[lo, hi]`.
    fn rows(&self, lo: u64, hi: u64) -> f64 {
        let (lo, hi) = (
            i64::try_from(lo).unwrap_or(i64::MAX),
            i64::try_from(hi).unwrap_or(i64::MAX),
        );
        self.ranges
            .iter()
            .chain(&self.buffered)
            .map(|&(min, max, n)| {
                let (a, b) = (min.max(lo), max.min(hi));
                if a > b {
                    0.0
                } else if max == min {
                    n as f64
                } else {
                    n as f64 * ((b - a) as f64 + 1.0) / ((max - min) as f64 + 1.0)
                }
            })
            .sum()
    }

    /// The start of a slice ending at `hi` that holds about `rows` spans (at least
    /// [`MIN_SLICE_SPAN_NANOS`] long, at most back to `start`); `None` without statistics.
    fn slice_start(&self, start: u64, hi: u64, rows: f64) -> Option<u64> {
        if self.ranges.is_empty() && self.buffered.is_empty() {
            return None;
        }
        let latest = hi.saturating_sub(MIN_SLICE_SPAN_NANOS).max(start);
        if self.rows(start, hi) <= rows {
            return Some(start);
        }
        // The latest lo whose slice holds at least `rows` (rows(lo, hi) falls as lo rises).
        let (mut a, mut b) = (start, latest);
        while b - a > 1_000_000 {
            let mid = a + (b - a) / 2;
            if self.rows(mid, hi) >= rows {
                a = mid;
            } else {
                b = mid;
            }
        }
        Some(a.min(latest))
    }
}

/// The shortest first time slice a search scans without statistics (it doubles after each
/// slice).
const MIN_SLICE_NANOS: u64 = 60 * 1_000_000_000;

/// A trace search.
#[derive(Debug, Clone)]
pub struct SearchRequest {
    /// The parsed TraceQL query (not a metrics query).
    pub query: Query,
    /// Spans starting in `[start, end]` (unix nanoseconds) can match.
    pub start_unix_nano: u64,
    /// Inclusive end of the window.
    pub end_unix_nano: u64,
    /// Only traces at least this long.
    pub min_duration: Option<Duration>,
    /// Only traces at most this long.
    pub max_duration: Option<Duration>,
    /// At most this many traces, newest first.
    pub limit: usize,
    /// At most this many spans listed per spanset (`matched` still counts all of them).
    pub spans_per_spanset: usize,
}

/// A typed value of a field, as read from a span.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// A string.
    String(String),
    /// An integer.
    Int(i64),
    /// A float.
    Float(f64),
    /// A boolean.
    Bool(bool),
    /// A duration in nanoseconds.
    Duration(i64),
    /// A span status.
    Status(Status),
    /// A span kind.
    Kind(SpanKind),
    /// An id (span or trace), as bytes.
    Id(Vec<u8>),
}

impl Value {
    fn number(&self) -> Option<f64> {
        match self {
            Value::Int(n) | Value::Duration(n) => Some(*n as f64),
            Value::Float(f) => Some(*f),
            _ => None,
        }
    }

    /// A hashable key for grouping (`by`).
    pub(crate) fn group_key(&self) -> String {
        match self {
            Value::String(s) => format!("s{s}"),
            Value::Int(n) => format!("i{n}"),
            Value::Float(f) => format!("f{f}"),
            Value::Bool(b) => format!("b{b}"),
            Value::Duration(n) => format!("d{n}"),
            Value::Status(s) => format!("t{}", s.as_str()),
            Value::Kind(k) => format!("k{}", k.as_str()),
            Value::Id(id) => format!("x{}", hex_string(id)),
        }
    }
}

fn hex_string(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// One span of a matched spanset.
#[derive(Debug, Clone)]
pub struct MatchedSpan {
    /// The span id.
    pub span_id: Vec<u8>,
    /// The span name.
    pub name: String,
    /// Start, unix nanoseconds.
    pub start_unix_nano: u64,
    /// Duration, nanoseconds.
    pub duration_nanos: u64,
    /// The attributes the query refers to or selects, by name, when the span has them.
    pub attributes: Vec<(String, Value)>,
}

/// A spanset of a matched trace.
#[derive(Debug, Clone)]
pub struct MatchedSpanset {
    /// Up to `spans_per_spanset` of its spans, earliest first.
    pub spans: Vec<MatchedSpan>,
    /// How many spans it holds.
    pub matched: usize,
    /// Grouping values (`by(...)`) and aggregates (`count()`, ...), by their TraceQL text.
    pub attributes: Vec<(String, Value)>,
}

/// A trace that matched.
#[derive(Debug, Clone)]
pub struct TraceMatch {
    /// The trace id.
    pub trace_id: [u8; 16],
    /// The root span's service, when the root span is stored.
    pub root_service: Option<String>,
    /// The root span's name, when the root span is stored.
    pub root_name: Option<String>,
    /// The earliest span start, unix nanoseconds.
    pub start_unix_nano: u64,
    /// From the earliest start to the latest end, nanoseconds.
    pub duration_nanos: u64,
    /// The matched spansets.
    pub spansets: Vec<MatchedSpanset>,
}

/// The answer to a search.
#[derive(Debug, Clone, Default)]
pub struct SearchResponse {
    /// Matching traces, newest first.
    pub traces: Vec<TraceMatch>,
    /// Traces found by phase 1 (each has spans matching the query's filters).
    pub candidate_traces: u64,
    /// Candidate traces checked exactly.
    pub inspected_traces: u64,
    /// Spans read to check them.
    pub inspected_spans: u64,
}

impl QueryEngine {
    /// Runs a TraceQL search for `tenant`.
    pub async fn search(&self, tenant: &str, request: SearchRequest) -> Result<SearchResponse> {
        if request.query.is_metrics() {
            return Err(Error::Unsupported(
                "metrics queries (rate(), count_over_time(), ...) are answered by \
                 /api/metrics/query_range, not by search"
                    .into(),
            ));
        }
        if request.end_unix_nano < request.start_unix_nano {
            return Err(Error::Unsupported(
                "the search window ends before it starts".into(),
            ));
        }
        let plan = Arc::new(SearchPlan::new(&request.query)?);
        let ctx = self.context(tenant)?;
        let densities = self.densities();
        let tenant = tenant.to_string();
        self.run(async move {
            let started = std::time::Instant::now();
            let density = densities.get(&tenant).await?;
            let planned = started.elapsed();
            let result = search(ctx, plan, request, density).await;
            tracing::debug!(
                density_ms = planned.as_secs_f64() * 1e3,
                total_ms = started.elapsed().as_secs_f64() * 1e3,
                "search done"
            );
            result
        })
        .await
    }

    /// The physical plan of a search's first phase (the scan that finds candidate traces), as
    /// DataFusion prints it: it shows the filters pushed into the Parquet scan and the files
    /// left after partition pruning.
    pub async fn search_plan(&self, tenant: &str, request: SearchRequest) -> Result<String> {
        let plan = SearchPlan::new(&request.query)?;
        let ctx = self.context(tenant)?;
        self.run(async move {
            let df = candidates_frame(&ctx, &plan, &request, request.start_unix_nano).await?;
            let physical = df.create_physical_plan().await?;
            let text = datafusion::physical_plan::displayable(physical.as_ref())
                .indent(true)
                .to_string();
            Ok(text)
        })
        .await
    }
}

/// What a query needs, prepared once.
struct SearchPlan {
    query: Query,
    /// Exact condition of each spanset filter (phase 2), in leaf order; `None` is `{ }`.
    exact: Vec<Option<Expr>>,
    /// Necessary per-span condition of each filter (phase 1); `None` matches every span.
    prune: Vec<Option<Expr>>,
    /// The fields whose values are read per span (for by/select/aggregates and output).
    fields: Vec<Field>,
    /// Per-trace columns phase 2 needs.
    trace_columns: TraceColumns,
    /// The query is one spanset filter on span rows (no pipeline, no trace-level fields):
    /// every trace phase 1 finds matches, so phase 1 can stop at `limit` traces.
    single_filter: bool,
}

impl SearchPlan {
    fn new(query: &Query) -> Result<Self> {
        let leaves = compile::query_leaves(&query.spansets, &query.pipeline);
        let mut exact = Vec::with_capacity(leaves.len());
        let mut prune = Vec::with_capacity(leaves.len());
        let mut condition_fields = Vec::new();
        for leaf in &leaves {
            match leaf {
                Some(c) => {
                    exact.push(Some(compile::exact(c)?));
                    prune.push(compile::prune(c)?);
                    compile::condition_fields(c, &mut condition_fields);
                }
                None => {
                    exact.push(None);
                    prune.push(None);
                }
            }
        }
        let mut fields: Vec<Field> = Vec::new();
        let mut push = |f: &Field| {
            if !fields.contains(f) {
                fields.push(f.clone());
            }
        };
        for f in condition_fields.iter().copied() {
            if matches!(f, Field::Attribute(_)) {
                push(f);
            }
        }
        for stage in &query.pipeline {
            match stage {
                Stage::By(fs) | Stage::Select(fs) => fs.iter().for_each(&mut push),
                Stage::ScalarFilter(s) => match &s.aggregate {
                    Aggregate::Count => {}
                    Aggregate::Avg(f)
                    | Aggregate::Min(f)
                    | Aggregate::Max(f)
                    | Aggregate::Sum(f) => push(f),
                },
                Stage::Filter(_) | Stage::Coalesce => {}
            }
        }
        let trace_columns = TraceColumns::of(condition_fields.into_iter().chain(fields.iter()));
        // Fail early on fields that cannot be read.
        for f in &fields {
            value_expr(f)?;
        }
        let single_filter = query.pipeline.is_empty()
            && matches!(query.spansets, SpansetExpr::Filter(_))
            && trace_columns == TraceColumns::default();
        Ok(Self {
            query: query.clone(),
            exact,
            prune,
            fields,
            trace_columns,
            single_filter,
        })
    }
}

/// Spans starting within `[start, end]` (partitions and start-time statistics prune).
fn time_filter(start_unix_nano: u64, end_unix_nano: u64) -> Expr {
    crate::engine::window_filter(crate::TimeRange {
        start_unix_nano,
        end_unix_nano,
    })
}

/// Phase 1's HAVING formula over the `bool_or` columns, leaf by leaf.
fn formula(e: &SpansetExpr, next: &mut usize, leaf: &dyn Fn(usize) -> Expr) -> Expr {
    match e {
        SpansetExpr::Filter(_) => {
            let i = *next;
            *next += 1;
            leaf(i)
        }
        SpansetExpr::And(es) => es
            .iter()
            .map(|e| formula(e, next, leaf))
            .reduce(Expr::and)
            .unwrap_or_else(|| lit(true)),
        SpansetExpr::Or(es) => es
            .iter()
            .map(|e| formula(e, next, leaf))
            .reduce(Expr::or)
            .unwrap_or_else(|| lit(true)),
        SpansetExpr::Structural { lhs, rhs, .. } => {
            formula(lhs, next, leaf).and(formula(rhs, next, leaf))
        }
    }
}

const LAST_START: &str = "__tl_last_start";

/// Phase 1's plan: ids of traces that may match, newest first.
/// `req`'s window is the spans scanned; only traces whose newest matching span starts at or
/// after `newest_from` are returned (the scan may reach back further, so that the filters of a
/// `&&` or structural query see a trace's earlier spans too).
async fn candidates_frame(
    ctx: &SessionContext,
    plan: &SearchPlan,
    req: &SearchRequest,
    newest_from: u64,
) -> Result<DataFrame> {
    let window = time_filter(req.start_unix_nano, req.end_unix_nano);
    let any_all = plan.prune.iter().any(Option::is_none);
    let filter = if any_all {
        window
    } else {
        let any = plan
            .prune
            .iter()
            .flatten()
            .cloned()
            .reduce(Expr::or)
            .unwrap_or_else(|| lit(true));
        window.and(any)
    };
    let mut aggregates = vec![max(col(columns::START_TIME_UNIX_NANO)).alias(LAST_START)];
    for (i, p) in plan.prune.iter().enumerate() {
        if let Some(p) = p {
            aggregates.push(bool_or(p.clone().is_true()).alias(format!("__tl_m{i}")));
        }
    }
    let leaf = |i: usize| match &plan.prune[i] {
        Some(_) => col(format!("__tl_m{i}")),
        None => lit(true),
    };
    let mut next = 0;
    let mut having = formula(&plan.query.spansets, &mut next, &leaf);
    if newest_from > req.start_unix_nano {
        having =
            having.and(col(LAST_START).gt_eq(lit(i64::try_from(newest_from).unwrap_or(i64::MAX))));
    }
    for stage in &plan.query.pipeline {
        if let Stage::Filter(e) = stage {
            having = having.and(formula(e, &mut next, &leaf));
        }
    }
    let spans = ctx.table("spans").await?.filter(filter)?;
    let df = if plan.single_filter
        && req.min_duration.is_none()
        && req.max_duration.is_none()
        && newest_from <= req.start_unix_nano
    {
        // Every trace with a matching span matches: the newest `limit` are the answer. Grouped
        // by trace id, ordered by max(start) alone and limited, which DataFusion runs as a
        // top-k aggregation (a bounded priority map instead of a full hash table and sort).
        spans
            .aggregate(
                vec![col(columns::TRACE_ID)],
                vec![max(col(columns::START_TIME_UNIX_NANO)).alias(LAST_START)],
            )?
            .sort(vec![col(LAST_START).sort(false, false)])?
            .limit(0, Some(req.limit.clamp(1, MAX_LIMIT)))?
            .select(vec![col(columns::TRACE_ID), col(LAST_START)])?
    } else {
        spans
            .aggregate(vec![col(columns::TRACE_ID)], aggregates)?
            .filter(having)?
            .sort(vec![
                col(LAST_START).sort(false, false),
                col(columns::TRACE_ID).sort(true, false),
            ])?
            .select(vec![col(columns::TRACE_ID), col(LAST_START)])?
    };
    Ok(df)
}

async fn collect_candidates(df: DataFrame) -> Result<Vec<([u8; 16], i64)>> {
    let mut out = Vec::new();
    for batch in df.collect().await? {
        let ids = batch.column(0).as_binary::<i32>();
        let last = batch
            .column(1)
            .as_any()
            .downcast_ref::<Int64Array>()
            .ok_or_else(|| Error::Internal("search: unexpected type of max(start)".into()))?;
        for row in 0..batch.num_rows() {
            if let Ok(id) = <[u8; 16]>::try_from(ids.value(row)) {
                out.push((id, last.value(row)));
            }
        }
    }
    Ok(out)
}

/// Runs both phases over time slices of the window, newest first, until `limit` traces match.
///
/// Each slice's first phase scans only that slice (for queries with several filters, also
/// [`TRACE_SPREAD_NANOS`] before it, so that `&&` and structural operators see a trace's
/// earlier spans), pruned by the files' and row groups' start-time statistics: files hold a
/// flush's spans or a compacted minute, so they are clustered in time. A trace is found in the
/// slice of its newest matching span, so results come newest first. Slices are sized by the
/// spans they hold ([`Density`]): the first about [`FIRST_SLICE_ROWS`], each next one twice as
/// many, so a common match reads only the newest spans, a rare one a few more slices, and an
/// empty stretch at the end of the window (the window reaches past the newest span) costs
/// nothing.
async fn search(
    ctx: SessionContext,
    plan: Arc<SearchPlan>,
    req: SearchRequest,
    density: Density,
) -> Result<SearchResponse> {
    let limit = req.limit.clamp(1, MAX_LIMIT);
    let mut response = SearchResponse::default();
    let mut seen = HashSet::new();
    let reach_back = if plan.prune.len() > 1 {
        TRACE_SPREAD_NANOS
    } else {
        0
    };
    let mut slice = ((req.end_unix_nano - req.start_unix_nano) / 64).max(MIN_SLICE_NANOS);
    let mut rows = FIRST_SLICE_ROWS;
    let mut hi = req.end_unix_nano;
    loop {
        let lo = match density.slice_start(req.start_unix_nano, hi, rows) {
            Some(lo) => lo,
            // No statistics: by time.
            None => hi.saturating_sub(slice).max(req.start_unix_nano),
        };
        let scan = SearchRequest {
            start_unix_nano: lo.saturating_sub(reach_back).max(req.start_unix_nano),
            end_unix_nano: hi,
            ..req.clone()
        };
        let started = std::time::Instant::now();
        let found = collect_candidates(candidates_frame(&ctx, &plan, &scan, lo).await?).await?;
        let phase1 = started.elapsed();
        let candidates: Vec<([u8; 16], i64)> = found
            .into_iter()
            .filter(|(id, _)| seen.insert(*id))
            .collect();
        response.candidate_traces += candidates.len() as u64;
        check(&ctx, &plan, &req, &candidates, limit, &mut response).await?;
        tracing::debug!(
            slice_secs = (hi - lo) / 1_000_000_000,
            candidates = candidates.len(),
            matched = response.traces.len(),
            phase1_ms = phase1.as_secs_f64() * 1e3,
            phase2_ms = (started.elapsed() - phase1).as_secs_f64() * 1e3,
            "search slice"
        );
        if response.traces.len() >= limit || lo <= req.start_unix_nano {
            break;
        }
        hi = lo - 1;
        slice = slice.saturating_mul(2);
        rows *= 2.0;
    }
    Ok(response)
}

/// Phase 2 over candidates, newest first, in pages, until `limit` traces match.
async fn check(
    ctx: &SessionContext,
    plan: &SearchPlan,
    req: &SearchRequest,
    candidates: &[([u8; 16], i64)],
    limit: usize,
    response: &mut SearchResponse,
) -> Result<()> {
    let mut page_size = (limit * 2).clamp(50, 1000);
    let mut rest = candidates;
    while !rest.is_empty() && response.traces.len() < limit {
        let (page, tail) = rest.split_at(page_size.min(rest.len()));
        rest = tail;
        page_size = (page_size * 2).min(2000);
        let traces = fetch(ctx, plan, req, page).await?;
        response.inspected_traces += page.len() as u64;
        let mut by_id: HashMap<[u8; 16], TraceRows> =
            traces.into_iter().map(|t| (t.trace_id, t)).collect();
        for (id, _) in page {
            let Some(trace) = by_id.remove(id) else {
                continue;
            };
            response.inspected_spans += trace.spans.len() as u64;
            if let Some(m) = evaluate(plan, req, &trace) {
                response.traces.push(m);
                if response.traces.len() == limit {
                    break;
                }
            }
        }
    }
    Ok(())
}

/// One span of a candidate trace, as phase 2 reads it.
#[derive(Debug)]
struct SpanRow {
    span_id: Vec<u8>,
    parent: Option<Vec<u8>>,
    name: String,
    service: Option<String>,
    start: u64,
    end: u64,
    /// Per spanset filter: does the span match (within the window)?
    matches: Vec<bool>,
    /// Per plan field: the span's value.
    values: Vec<Option<Value>>,
}

#[derive(Debug)]
struct TraceRows {
    trace_id: [u8; 16],
    spans: Vec<SpanRow>,
}

/// How a field's value is read in phase 2 (and by metrics queries).
pub(crate) fn value_expr(f: &Field) -> Result<Expr> {
    Ok(match f {
        Field::Attribute(Attribute {
            scope: AttributeScope::Unscoped,
            name,
        }) => coalesce(vec![
            compile::attribute_value(AttributeScope::Span, name)?,
            compile::attribute_value(AttributeScope::Resource, name)?,
        ]),
        Field::Attribute(a) => compile::attribute_value(a.scope, &a.name)?,
        Field::Intrinsic(i) => col(match i {
            Intrinsic::SpanName => columns::NAME,
            Intrinsic::SpanStatus => columns::STATUS_CODE,
            Intrinsic::SpanStatusMessage => columns::STATUS_MESSAGE,
            Intrinsic::SpanKind => columns::KIND,
            Intrinsic::SpanDuration => columns::DURATION_NANO,
            Intrinsic::SpanId => columns::SPAN_ID,
            Intrinsic::SpanParentId => columns::PARENT_SPAN_ID,
            Intrinsic::SpanChildCount => CHILD_COUNT,
            Intrinsic::TraceRootName => ROOT_NAME,
            Intrinsic::TraceRootService => ROOT_SERVICE,
            Intrinsic::TraceDuration => TRACE_DURATION,
            Intrinsic::TraceId => columns::TRACE_ID,
            Intrinsic::InstrumentationName => columns::SCOPE_NAME,
            Intrinsic::InstrumentationVersion => columns::SCOPE_VERSION,
            Intrinsic::EventName
            | Intrinsic::EventTimeSinceStart
            | Intrinsic::LinkTraceId
            | Intrinsic::LinkSpanId => {
                return Err(Error::Unsupported(format!(
                    "{} is not supported yet: event and link fields cannot be searched",
                    i.as_str()
                )))
            }
        }),
    })
}

/// Phase 2: every span of `ids` (within the slack around the window), with the exact
/// conditions and field values.
async fn fetch(
    ctx: &SessionContext,
    plan: &SearchPlan,
    req: &SearchRequest,
    page: &[([u8; 16], i64)],
) -> Result<Vec<TraceRows>> {
    let list = page
        .iter()
        .map(|(id, _)| lit(ScalarValue::Binary(Some(id.to_vec()))))
        .collect();
    // The page's traces are near their newest matching spans: read only that stretch of time
    // (partitions and start-time statistics), not every file the trace ids could be in.
    let newest = |f: fn(i64, i64) -> i64| {
        page.iter()
            .map(|(_, last)| *last)
            .reduce(f)
            .map_or(0, |t| u64::try_from(t).unwrap_or(0))
    };
    let wide = time_filter(
        newest(i64::min).saturating_sub(TRACE_SPREAD_NANOS),
        newest(i64::max).saturating_add(TRACE_SPREAD_NANOS),
    );
    let spans = ctx
        .table("spans")
        .await?
        .filter(wide.and(col(columns::TRACE_ID).in_list(list, false)))?;
    let spans = with_trace_columns(spans, plan.trace_columns)?;
    let in_window = col(columns::START_TIME_UNIX_NANO).between(
        lit(i64::try_from(req.start_unix_nano).unwrap_or(i64::MAX)),
        lit(i64::try_from(req.end_unix_nano).unwrap_or(i64::MAX)),
    );
    let mut select = vec![
        col(columns::TRACE_ID),
        col(columns::SPAN_ID),
        col(columns::PARENT_SPAN_ID),
        col(columns::NAME),
        col(columns::SERVICE_NAME),
        col(columns::START_TIME_UNIX_NANO),
        col(columns::END_TIME_UNIX_NANO),
    ];
    for (i, e) in plan.exact.iter().enumerate() {
        let m = match e {
            Some(e) => e.clone().and(in_window.clone()),
            None => in_window.clone(),
        };
        select.push(m.is_true().alias(format!("__tl_m{i}")));
    }
    for (i, f) in plan.fields.iter().enumerate() {
        select.push(value_expr(f)?.alias(format!("__tl_v{i}")));
    }
    let batches = spans.select(select)?.collect().await?;
    let mut traces: HashMap<[u8; 16], Vec<SpanRow>> = HashMap::new();
    for batch in &batches {
        read_rows(batch, plan, &mut traces)?;
    }
    Ok(traces
        .into_iter()
        .map(|(trace_id, spans)| TraceRows { trace_id, spans })
        .collect())
}

/// Joins the per-trace columns the conditions need: trace duration, root name and service,
/// and child counts.
pub(crate) fn with_trace_columns(spans: DataFrame, need: TraceColumns) -> Result<DataFrame> {
    let mut spans = spans;
    if need.child_count {
        let children = spans
            .clone()
            .select(vec![
                col(columns::TRACE_ID).alias("__tl_c_trace"),
                col(columns::PARENT_SPAN_ID).alias("__tl_c_parent"),
            ])?
            .aggregate(
                vec![col("__tl_c_trace"), col("__tl_c_parent")],
                vec![count(lit(1)).alias("__tl_c_count")],
            )?;
        spans = spans
            .join(
                children,
                JoinType::Left,
                &[columns::TRACE_ID, columns::SPAN_ID],
                &["__tl_c_trace", "__tl_c_parent"],
                None,
            )?
            .with_column(CHILD_COUNT, coalesce(vec![col("__tl_c_count"), lit(0i64)]))?;
    }
    if need.trace_level {
        // Not `is_present_id(..).is_not_true()`: DataFusion 55 plans `IS NOT TRUE` as nullable
        // physically but not logically, and its schema check then fails.
        let parent = || col(columns::PARENT_SPAN_ID);
        let is_root = parent()
            .is_null()
            .or(parent().eq(lit(ScalarValue::Binary(Some(Vec::new())))));
        let per_trace = spans
            .clone()
            .aggregate(
                vec![col(columns::TRACE_ID)],
                vec![
                    min(col(columns::START_TIME_UNIX_NANO)).alias("__tl_t_start"),
                    max(col(columns::END_TIME_UNIX_NANO)).alias("__tl_t_end"),
                    max(when(is_root.clone(), col(columns::NAME)).end()?).alias(ROOT_NAME),
                    max(when(is_root, col(columns::SERVICE_NAME)).end()?).alias(ROOT_SERVICE),
                ],
            )?
            .select(vec![
                col(columns::TRACE_ID).alias("__tl_t_trace"),
                (col("__tl_t_end") - col("__tl_t_start")).alias(TRACE_DURATION),
                col(ROOT_NAME),
                col(ROOT_SERVICE),
            ])?;
        spans = spans.join(
            per_trace,
            JoinType::Inner,
            &[columns::TRACE_ID],
            &["__tl_t_trace"],
            None,
        )?;
    }
    Ok(spans)
}

fn read_rows(
    batch: &RecordBatch,
    plan: &SearchPlan,
    traces: &mut HashMap<[u8; 16], Vec<SpanRow>>,
) -> Result<()> {
    let bad = |what: &str| Error::Internal(format!("search: unexpected type of {what}"));
    let binary = |i: usize| {
        batch
            .column(i)
            .as_any()
            .downcast_ref::<BinaryArray>()
            .ok_or_else(|| bad("an id column"))
    };
    let string = |i: usize| {
        batch
            .column(i)
            .as_any()
            .downcast_ref::<StringArray>()
            .ok_or_else(|| bad("a string column"))
    };
    let int64 = |i: usize| {
        batch
            .column(i)
            .as_any()
            .downcast_ref::<Int64Array>()
            .ok_or_else(|| bad("a time column"))
    };
    let (trace_ids, span_ids, parents) = (binary(0)?, binary(1)?, binary(2)?);
    let (names, services) = (string(3)?, string(4)?);
    let (starts, ends) = (int64(5)?, int64(6)?);
    let leaves = plan.exact.len();
    let matches: Vec<&BooleanArray> = (0..leaves)
        .map(|i| {
            batch
                .column(7 + i)
                .as_any()
                .downcast_ref::<BooleanArray>()
                .ok_or_else(|| bad("a condition"))
        })
        .collect::<Result<_>>()?;
    let values: Vec<&ArrayRef> = (0..plan.fields.len())
        .map(|i| batch.column(7 + leaves + i))
        .collect();
    for row in 0..batch.num_rows() {
        let Ok(trace_id) = <[u8; 16]>::try_from(trace_ids.value(row)) else {
            continue;
        };
        let parent = (!parents.is_null(row) && !parents.value(row).is_empty())
            .then(|| parents.value(row).to_vec());
        let span = SpanRow {
            span_id: span_ids.value(row).to_vec(),
            parent,
            name: names.value(row).to_string(),
            service: (!services.is_null(row)).then(|| services.value(row).to_string()),
            start: u64::try_from(starts.value(row)).unwrap_or(0),
            end: u64::try_from(ends.value(row)).unwrap_or(0),
            matches: matches.iter().map(|m| m.value(row)).collect(),
            values: plan
                .fields
                .iter()
                .zip(&values)
                .map(|(f, a)| read_value(f, a, row))
                .collect(),
        };
        traces.entry(trace_id).or_default().push(span);
    }
    Ok(())
}

/// The typed value of `field` at `row` of `array` (a column [`value_expr`] selected).
pub(crate) fn read_value(field: &Field, array: &ArrayRef, row: usize) -> Option<Value> {
    if array.is_null(row) {
        return None;
    }
    let intrinsic = match field {
        Field::Intrinsic(i) => Some(*i),
        Field::Attribute(_) => None,
    };
    match array.data_type() {
        DataType::Struct(_) => attribute_value(array.as_any().downcast_ref::<StructArray>()?, row),
        DataType::Utf8 => Some(Value::String(
            array.as_string::<i32>().value(row).to_string(),
        )),
        DataType::Binary => Some(Value::Id(array.as_binary::<i32>().value(row).to_vec())),
        DataType::Int32 => {
            let v = array.as_any().downcast_ref::<Int32Array>()?.value(row);
            match intrinsic {
                Some(Intrinsic::SpanStatus) => Some(Value::Status(match v {
                    1 => Status::Ok,
                    2 => Status::Error,
                    _ => Status::Unset,
                })),
                Some(Intrinsic::SpanKind) => Some(Value::Kind(match v {
                    1 => SpanKind::Internal,
                    2 => SpanKind::Server,
                    3 => SpanKind::Client,
                    4 => SpanKind::Producer,
                    5 => SpanKind::Consumer,
                    _ => SpanKind::Unspecified,
                })),
                _ => Some(Value::Int(i64::from(v))),
            }
        }
        DataType::Int64 => {
            let v = array.as_any().downcast_ref::<Int64Array>()?.value(row);
            match intrinsic {
                Some(Intrinsic::SpanDuration | Intrinsic::TraceDuration) => {
                    Some(Value::Duration(v))
                }
                _ => Some(Value::Int(v)),
            }
        }
        _ => None,
    }
}

/// The typed value of an attribute struct `{type, str, int, double, bool, bytes}`.
fn attribute_value(s: &StructArray, row: usize) -> Option<Value> {
    use columns::attr_value::*;
    let t = s
        .column_by_name(TYPE)?
        .as_primitive::<arrow::datatypes::Int8Type>();
    if t.is_null(row) {
        return None;
    }
    let str_col = || s.column_by_name(STR).map(|c| c.as_string::<i32>());
    match t.value(row) {
        attr_type::STRING | attr_type::ARRAY | attr_type::KVLIST => {
            let c = str_col()?;
            (!c.is_null(row)).then(|| Value::String(c.value(row).to_string()))
        }
        attr_type::INT => {
            let c = s
                .column_by_name(INT)?
                .as_primitive::<arrow::datatypes::Int64Type>();
            (!c.is_null(row)).then(|| Value::Int(c.value(row)))
        }
        attr_type::DOUBLE => {
            let c = s
                .column_by_name(DOUBLE)?
                .as_primitive::<arrow::datatypes::Float64Type>();
            (!c.is_null(row)).then(|| Value::Float(c.value(row)))
        }
        attr_type::BOOL => {
            let c = s.column_by_name(BOOL)?.as_boolean();
            (!c.is_null(row)).then(|| Value::Bool(c.value(row)))
        }
        attr_type::BYTES => {
            let c = s.column_by_name(BYTES)?.as_binary::<i32>();
            (!c.is_null(row)).then(|| Value::String(hex_string(c.value(row))))
        }
        _ => None,
    }
}

/// A set of spans of one trace, by index.
type SpanSet = Vec<bool>;

/// Named values shown with a span or spanset.
type Attributes = Vec<(String, Value)>;

fn union(a: &SpanSet, b: &SpanSet) -> SpanSet {
    a.iter().zip(b).map(|(x, y)| *x || *y).collect()
}

fn is_empty(s: &SpanSet) -> bool {
    !s.iter().any(|x| *x)
}

/// Parent links of one trace.
struct Tree<'a> {
    spans: &'a [SpanRow],
    by_id: HashMap<&'a [u8], usize>,
}

impl<'a> Tree<'a> {
    fn new(spans: &'a [SpanRow]) -> Self {
        let by_id = spans
            .iter()
            .enumerate()
            .map(|(i, s)| (s.span_id.as_slice(), i))
            .collect();
        Self { spans, by_id }
    }

    fn parent(&self, i: usize) -> Option<usize> {
        self.spans[i]
            .parent
            .as_deref()
            .and_then(|p| self.by_id.get(p).copied())
    }

    /// Ancestors of `i`, nearest first (stops at a cycle).
    fn ancestors(&self, i: usize) -> impl Iterator<Item = usize> + '_ {
        let mut seen = HashSet::new();
        seen.insert(i);
        let mut cur = i;
        std::iter::from_fn(move || {
            let p = self.parent(cur)?;
            if !seen.insert(p) {
                return None;
            }
            cur = p;
            Some(p)
        })
    }

    fn related(&self, op: StructuralOp, lhs: &SpanSet, rhs: &SpanSet) -> SpanSet {
        let n = self.spans.len();
        let mut out = vec![false; n];
        match op {
            StructuralOp::Child => {
                for r in (0..n).filter(|&r| rhs[r]) {
                    out[r] = self.parent(r).is_some_and(|p| lhs[p]);
                }
            }
            StructuralOp::Descendant => {
                for r in (0..n).filter(|&r| rhs[r]) {
                    out[r] = self.ancestors(r).any(|a| lhs[a]);
                }
            }
            StructuralOp::Parent => {
                for l in (0..n).filter(|&l| lhs[l]) {
                    if let Some(p) = self.parent(l).filter(|&p| rhs[p]) {
                        out[p] = true;
                    }
                }
            }
            StructuralOp::Ancestor => {
                for l in (0..n).filter(|&l| lhs[l]) {
                    for a in self.ancestors(l) {
                        if rhs[a] {
                            out[a] = true;
                        }
                    }
                }
            }
            StructuralOp::Sibling => {
                let mut lhs_parents: HashMap<&[u8], usize> = HashMap::new();
                for l in (0..n).filter(|&l| lhs[l]) {
                    if let Some(p) = self.spans[l].parent.as_deref() {
                        *lhs_parents.entry(p).or_default() += 1;
                    }
                }
                for r in (0..n).filter(|&r| rhs[r]) {
                    if let Some(p) = self.spans[r].parent.as_deref() {
                        let others = lhs_parents.get(p).copied().unwrap_or(0) - usize::from(lhs[r]);
                        out[r] = others > 0;
                    }
                }
            }
        }
        out
    }
}

/// Evaluates a spanset expression over the spans of one trace restricted to `within`.
fn eval_spansets(e: &SpansetExpr, tree: &Tree<'_>, within: &SpanSet, next: &mut usize) -> SpanSet {
    match e {
        SpansetExpr::Filter(_) => {
            let i = *next;
            *next += 1;
            tree.spans
                .iter()
                .zip(within)
                .map(|(s, w)| *w && s.matches[i])
                .collect()
        }
        SpansetExpr::And(es) => {
            let sets: Vec<SpanSet> = es
                .iter()
                .map(|e| eval_spansets(e, tree, within, next))
                .collect();
            if sets.iter().any(is_empty) {
                vec![false; tree.spans.len()]
            } else {
                sets.iter()
                    .fold(vec![false; tree.spans.len()], |a, b| union(&a, b))
            }
        }
        SpansetExpr::Or(es) => {
            let sets: Vec<SpanSet> = es
                .iter()
                .map(|e| eval_spansets(e, tree, within, next))
                .collect();
            sets.iter()
                .fold(vec![false; tree.spans.len()], |a, b| union(&a, b))
        }
        SpansetExpr::Structural { op, lhs, rhs } => {
            let l = eval_spansets(lhs, tree, within, next);
            let r = eval_spansets(rhs, tree, within, next);
            tree.related(*op, &l, &r)
        }
    }
}

/// A spanset flowing through the pipeline.
struct Working {
    spans: SpanSet,
    attributes: Vec<(String, Value)>,
}

fn compare_numbers(a: f64, op: CompareOp, b: f64) -> bool {
    match op {
        CompareOp::Eq => a == b,
        CompareOp::Ne => a != b,
        CompareOp::Gt => a > b,
        CompareOp::Ge => a >= b,
        CompareOp::Lt => a < b,
        CompareOp::Le => a <= b,
        CompareOp::Regex | CompareOp::NotRegex => false,
    }
}

fn literal_number(l: &Literal) -> Option<f64> {
    match l {
        Literal::Int(n) => Some(*n as f64),
        Literal::Float(f) => Some(*f),
        Literal::Duration(d) => Some(d.as_nanos() as f64),
        _ => None,
    }
}

/// Runs the query over one candidate trace: `Some` when it matches.
fn evaluate(plan: &SearchPlan, req: &SearchRequest, trace: &TraceRows) -> Option<TraceMatch> {
    let spans = &trace.spans;
    let start = spans.iter().map(|s| s.start).min().unwrap_or(0);
    let end = spans
        .iter()
        .map(|s| s.end)
        .max()
        .unwrap_or(start)
        .max(start);
    let duration = end - start;
    if req
        .min_duration
        .is_some_and(|d| (duration as u128) < d.as_nanos())
        || req
            .max_duration
            .is_some_and(|d| (duration as u128) > d.as_nanos())
    {
        return None;
    }
    let tree = Tree::new(spans);
    let all = vec![true; spans.len()];
    let mut next = 0;
    let matched = eval_spansets(&plan.query.spansets, &tree, &all, &mut next);
    if is_empty(&matched) {
        return None;
    }
    let mut sets = vec![Working {
        spans: matched,
        attributes: Vec::new(),
    }];
    let field_index = |f: &Field| plan.fields.iter().position(|x| x == f);
    let mut selected: Vec<usize> = Vec::new();
    for stage in &plan.query.pipeline {
        match stage {
            Stage::Filter(e) => {
                let offset = next;
                let mut stage_leaves = Vec::new();
                compile::leaves(e, &mut stage_leaves);
                next += stage_leaves.len();
                for set in &mut sets {
                    let mut n = offset;
                    set.spans = eval_spansets(e, &tree, &set.spans, &mut n);
                }
                sets.retain(|s| !is_empty(&s.spans));
            }
            Stage::By(fields) => {
                let idx: Vec<Option<usize>> = fields.iter().map(field_index).collect();
                let mut out = Vec::new();
                for set in sets {
                    // (group key, by() values, members)
                    let mut groups: Vec<(String, Attributes, SpanSet)> = Vec::new();
                    for (i, _) in set.spans.iter().enumerate().filter(|(_, m)| **m) {
                        let vals: Vec<Option<Value>> = idx
                            .iter()
                            .map(|j| j.and_then(|j| spans[i].values[j].clone()))
                            .collect();
                        let key: String = vals
                            .iter()
                            .map(|v| v.as_ref().map_or("-".to_string(), Value::group_key))
                            .collect::<Vec<_>>()
                            .join("\u{1}");
                        let pos = match groups.iter().position(|g| g.0 == key) {
                            Some(p) => p,
                            None => {
                                let attrs = fields
                                    .iter()
                                    .zip(&vals)
                                    .filter_map(|(f, v)| v.clone().map(|v| (format!("by({f})"), v)))
                                    .collect();
                                groups.push((key, attrs, vec![false; spans.len()]));
                                groups.len() - 1
                            }
                        };
                        groups[pos].2[i] = true;
                    }
                    for (_, attrs, members) in groups {
                        let mut attributes = set.attributes.clone();
                        attributes.extend(attrs);
                        out.push(Working {
                            spans: members,
                            attributes,
                        });
                    }
                }
                sets = out;
            }
            Stage::ScalarFilter(filter) => {
                let want = literal_number(&filter.value)?;
                sets.retain_mut(|set| {
                    let members = (0..spans.len()).filter(|&i| set.spans[i]);
                    let (value, is_duration) = match &filter.aggregate {
                        Aggregate::Count => (Some(members.count() as f64), false),
                        Aggregate::Avg(f)
                        | Aggregate::Min(f)
                        | Aggregate::Max(f)
                        | Aggregate::Sum(f) => {
                            let Some(j) = field_index(f) else {
                                return false;
                            };
                            let mut is_duration = false;
                            let nums: Vec<f64> = members
                                .filter_map(|i| spans[i].values[j].as_ref())
                                .inspect(|v| is_duration |= matches!(v, Value::Duration(_)))
                                .filter_map(Value::number)
                                .collect();
                            let v = if nums.is_empty() {
                                None
                            } else {
                                Some(match &filter.aggregate {
                                    Aggregate::Avg(_) => {
                                        nums.iter().sum::<f64>() / nums.len() as f64
                                    }
                                    Aggregate::Min(_) => {
                                        nums.iter().copied().fold(f64::INFINITY, f64::min)
                                    }
                                    Aggregate::Max(_) => {
                                        nums.iter().copied().fold(f64::NEG_INFINITY, f64::max)
                                    }
                                    _ => nums.iter().sum::<f64>(),
                                })
                            };
                            (v, is_duration)
                        }
                    };
                    let Some(value) = value else {
                        return false;
                    };
                    if !compare_numbers(value, filter.op, want) {
                        return false;
                    }
                    let shown = if is_duration {
                        Value::Duration(value as i64)
                    } else if matches!(filter.aggregate, Aggregate::Count) {
                        Value::Int(value as i64)
                    } else {
                        Value::Float(value)
                    };
                    set.attributes.push((filter.aggregate.to_string(), shown));
                    true
                });
            }
            Stage::Select(fields) => {
                selected.extend(fields.iter().filter_map(field_index));
            }
            Stage::Coalesce => {
                if !sets.is_empty() {
                    let merged = sets
                        .iter()
                        .fold(vec![false; spans.len()], |a, s| union(&a, &s.spans));
                    sets = vec![Working {
                        spans: merged,
                        attributes: Vec::new(),
                    }];
                }
            }
        }
        if sets.is_empty() {
            return None;
        }
    }
    // Attributes shown on spans: those of conditions and by(), plus select()ed fields.
    let shown: Vec<usize> = (0..plan.fields.len())
        .filter(|&j| matches!(plan.fields[j], Field::Attribute(_)) || selected.contains(&j))
        .collect();
    let spansets = sets
        .into_iter()
        .map(|set| {
            let mut members: Vec<usize> = (0..spans.len()).filter(|&i| set.spans[i]).collect();
            members.sort_by_key(|&i| (spans[i].start, spans[i].span_id.clone()));
            let matched = members.len();
            let spans_out = members
                .into_iter()
                .take(req.spans_per_spanset)
                .map(|i| {
                    let s = &spans[i];
                    MatchedSpan {
                        span_id: s.span_id.clone(),
                        name: s.name.clone(),
                        start_unix_nano: s.start,
                        duration_nanos: s.end.saturating_sub(s.start),
                        attributes: shown
                            .iter()
                            .filter_map(|&j| {
                                let v = s.values[j].clone()?;
                                Some((field_label(&plan.fields[j]), v))
                            })
                            .collect(),
                    }
                })
                .collect();
            MatchedSpanset {
                spans: spans_out,
                matched,
                attributes: set.attributes,
            }
        })
        .collect();
    let root = spans
        .iter()
        .filter(|s| s.parent.is_none())
        .min_by_key(|s| s.start);
    Some(TraceMatch {
        trace_id: trace.trace_id,
        root_service: root.and_then(|r| r.service.clone()),
        root_name: root.map(|r| r.name.clone()),
        start_unix_nano: start,
        duration_nanos: duration,
        spansets,
    })
}

/// The key a field's value is shown under: the attribute name, or the intrinsic's name.
fn field_label(f: &Field) -> String {
    match f {
        Field::Attribute(a) => a.name.clone(),
        Field::Intrinsic(i) => i.legacy_name().unwrap_or(i.as_str()).to_string(),
    }
}

/// The per-span filter of a query that is a single spanset filter (`{ cond }`, as Grafana
/// sends with tag-value requests), for narrowing tag values to the spans it matches. `None`
/// when the text does not parse (Grafana sends half-typed queries: they mean "no filter"), is
/// `{ }`, or needs more than one span's row (pipelines, structural operators, trace-level
/// intrinsics), or reads fields that cannot be searched.
pub fn span_filter(q: &str) -> Option<Expr> {
    let query = crate::traceql::parse(q).ok()?;
    if !query.pipeline.is_empty() || query.is_metrics() {
        return None;
    }
    let SpansetExpr::Filter(filter) = &query.spansets else {
        return None;
    };
    let condition = filter.condition.as_ref()?;
    let mut fields = Vec::new();
    compile::condition_fields(condition, &mut fields);
    if TraceColumns::of(fields) != TraceColumns::default() {
        return None;
    }
    compile::exact(condition).ok()
}

/// Parses Tempo's legacy `tags` parameter (logfmt `key=value key2="v w"`) into a TraceQL query
/// with one condition per tag, each on span or resource attributes. `name` and `status`
/// are the intrinsics; values that parse as integers or booleans also match typed attributes.
pub fn tags_to_traceql(tags: &str) -> Result<String> {
    let mut conditions = Vec::new();
    for (key, value) in logfmt(tags)? {
        let quoted = format!("{value:?}");
        let c = match key.as_str() {
            "name" => format!("name = {quoted}"),
            "status" | "status.code" => match value.as_str() {
                "ok" | "error" | "unset" => format!("status = {value}"),
                _ => {
                    return Err(Error::Unsupported(format!(
                        "tag status={value}: expected ok, error or unset"
                    )))
                }
            },
            _ => {
                let field = format!(".{}", quote_attribute(&key));
                let mut alternatives = vec![format!("{field} = {quoted}")];
                if value.parse::<i64>().is_ok() || value == "true" || value == "false" {
                    alternatives.push(format!("{field} = {value}"));
                }
                format!("({})", alternatives.join(" || "))
            }
        };
        conditions.push(c);
    }
    Ok(if conditions.is_empty() {
        "{ }".to_string()
    } else {
        format!("{{ {} }}", conditions.join(" && "))
    })
}

/// An attribute name as TraceQL text: bare when it is a plain dotted name, quoted otherwise.
fn quote_attribute(name: &str) -> String {
    let plain = !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | '/' | ':'));
    if plain {
        name.to_string()
    } else {
        format!("{name:?}")
    }
}

/// `k=v k2="quoted value"` pairs.
fn logfmt(s: &str) -> Result<Vec<(String, String)>> {
    let mut out = Vec::new();
    let mut chars = s.chars().peekable();
    loop {
        while chars.peek().is_some_and(|c| c.is_whitespace()) {
            chars.next();
        }
        if chars.peek().is_none() {
            return Ok(out);
        }
        let mut key = String::new();
        while let Some(&c) = chars.peek() {
            if c == '=' || c.is_whitespace() {
                break;
            }
            key.push(c);
            chars.next();
        }
        if chars.next() != Some('=') || key.is_empty() {
            return Err(Error::Unsupported(format!(
                "tags must be logfmt key=value pairs; {key:?} has no value"
            )));
        }
        let mut value = String::new();
        if chars.peek() == Some(&'"') {
            chars.next();
            let mut closed = false;
            while let Some(c) = chars.next() {
                match c {
                    '\\' => {
                        if let Some(n) = chars.next() {
                            value.push(n);
                        }
                    }
                    '"' => {
                        closed = true;
                        break;
                    }
                    c => value.push(c),
                }
            }
            if !closed {
                return Err(Error::Unsupported(format!(
                    "tags: the quoted value of {key:?} is not closed"
                )));
            }
        } else {
            while let Some(&c) = chars.peek() {
                if c.is_whitespace() {
                    break;
                }
                value.push(c);
                chars.next();
            }
        }
        out.push((key, value));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn span_filters_come_only_from_single_complete_spanset_filters() {
        assert!(span_filter(r#"{ resource.service.name = "cart" }"#).is_some());
        assert!(
            span_filter(r#"{ resource.service.name = "cart" && span.http.method = }"#).is_none()
        );
        assert!(span_filter("{ }").is_none());
        assert!(span_filter("{ traceDuration > 1s }").is_none());
        assert!(span_filter("{ .a = 1 } | count() > 2").is_none());
        assert!(span_filter("{ .a = 1 } > { .b = 2 }").is_none());
        assert!(span_filter("{ event.a = 1 }").is_none());
    }

    #[test]
    fn logfmt_tags_become_traceql() {
        let q = tags_to_traceql(r#"service.name=cart http.status_code=500 name="GET /x""#).unwrap();
        assert_eq!(
            q,
            r#"{ (.service.name = "cart") && (.http.status_code = "500" || .http.status_code = 500) && name = "GET /x" }"#
        );
        crate::traceql::parse(&q).unwrap();
        assert_eq!(tags_to_traceql("  ").unwrap(), "{ }");
        assert!(tags_to_traceql("novalue").is_err());
        assert!(tags_to_traceql(r#"a="open"#).is_err());
        assert!(tags_to_traceql("status=bad").is_err());
        let quoted = tags_to_traceql(r#"k8s:pod=a "x y"=b"#);
        assert!(quoted.is_err(), "a quoted key is not logfmt: {quoted:?}");
    }

    #[test]
    fn slices_hold_the_requested_spans() {
        const MIN: u64 = 60_000_000_000;
        let hour = 1_793_613_600_000_000_000u64;
        // Sixty one-minute files of 120k spans, then a window reaching 53 min past the data.
        let files: Vec<(i64, i64, u64)> = (0..60)
            .map(|m| {
                let lo = (hour + m * MIN) as i64;
                (lo, lo + MIN as i64 - 1, 120_000)
            })
            .collect();
        let density = Density::new(Arc::new(files), &[]);
        let end = hour + 113 * MIN;
        // 100k spans: the last 50 seconds of the data, not the empty minutes after it.
        let lo = density.slice_start(hour, end, 100_000.0).unwrap();
        let back = hour + 60 * MIN - lo;
        assert!((49_000_000_000..=51_000_000_000).contains(&back), "{back}");
        assert!((density.rows(lo, end) - 100_000.0).abs() < 100.0);
        // Twice as many from there: the slice is twice as long.
        let lo2 = density.slice_start(hour, lo - 1, 200_000.0).unwrap();
        assert!(((lo - lo2) as f64 / back as f64 - 2.0).abs() < 0.05);
        // More than the window holds: the whole rest of it.
        assert_eq!(density.slice_start(hour, end, 1e9), Some(hour));
        // Dense data: never shorter than a second.
        let dense = Density::new(Arc::new(vec![(0, 1_000_000_000, 10_000_000)]), &[]);
        assert_eq!(dense.slice_start(0, 1_000_000_000, 10.0), Some(0));
        // Without statistics the caller slices by time.
        assert_eq!(Density::default().slice_start(hour, end, 100_000.0), None);
    }
}
