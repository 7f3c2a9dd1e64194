//! The `traces` view and the `traces(start, end)` table function: one row per trace, from the
//! tenant's spans.
//!
//! ```sql
//! SELECT trace_id_hex, root_service, root_name, duration_nano / 1e6 AS ms, span_count, services
//! FROM traces('2026-11-28T10:00:00Z', '2026-11-28T11:00:00Z') WHERE error_count > 0
//! ORDER BY duration_nano DESC LIMIT 10
//! ```
//!
//! | column | meaning |
//! | --- | --- |
//! | `trace_id`, `trace_id_hex` | the id, as bytes and as lowercase hex |
//! | `root_service`, `root_name` | service and name of the span without a parent (null if none arrived) |
//! | `start_time_unix_nano`, `duration_nano` | first span start; last span end minus that |
//! | `span_count`, `error_count` | spans stored; spans with status ERROR or HTTP status ≥ 500 |
//! | `services` | the services the trace went through, sorted |
//!
//! The view aggregates every span it reads, and a filter on its columns cannot prune the
//! spans: `traces(start, end)` reads only the spans that start in the window (partitions,
//! file statistics), so it is the one to use on a large table. `start`/`end` are RFC 3339
//! timestamps or unix seconds.

use std::sync::Arc;

use datafusion::catalog::{TableFunctionArgs, TableFunctionImpl, TableProvider};
use datafusion::datasource::provider_as_source;
use datafusion::datasource::ViewTable;
use datafusion::error::{DataFusionError, Result};
use datafusion::execution::SessionState;
use datafusion::logical_expr::{Expr, LogicalPlanBuilder};
use datafusion::prelude::{col, SessionContext};
use datafusion::scalar::ScalarValue;
use tracelake_proto::columns as c;

use crate::engine::window_filter;
use crate::TimeRange;

const ROOT: &str = "parent_span_id IS NULL OR parent_span_id = X''";

/// The per-trace plan over `spans`, only the spans starting in `range` when given.
fn plan(
    ctx: &SessionContext,
    spans: Arc<dyn TableProvider>,
    range: Option<TimeRange>,
) -> Result<ViewTable> {
    let mut builder = LogicalPlanBuilder::scan("spans", provider_as_source(spans), None)?;
    if let Some(range) = range {
        builder = builder.filter(window_filter(range))?;
    }
    let schema = Arc::clone(builder.schema());
    let expr = |sql: &str| ctx.parse_sql_expr(sql, &schema);
    let aggregates = vec![
        expr(&format!(
            "max(CASE WHEN {ROOT} THEN {} END)",
            c::SERVICE_NAME
        ))?
        .alias("root_service"),
        expr(&format!("max(CASE WHEN {ROOT} THEN {} END)", c::NAME))?.alias("root_name"),
        expr(&format!("min({})", c::START_TIME_UNIX_NANO))?.alias("start_time_unix_nano"),
        expr(&format!("max({})", c::END_TIME_UNIX_NANO))?.alias("end_time_unix_nano"),
        expr("count(*)")?.alias("span_count"),
        expr(&format!(
            "sum(CASE WHEN {} = 2 OR {} >= 500 THEN 1 ELSE 0 END)",
            c::STATUS_CODE,
            c::HTTP_RESPONSE_STATUS_CODE
        ))?
        .alias("error_count"),
        expr(&format!("array_agg(DISTINCT {})", c::SERVICE_NAME))?.alias("services"),
    ];
    let builder = builder.aggregate(vec![col(c::TRACE_ID)], aggregates)?;
    let schema = Arc::clone(builder.schema());
    let expr = |sql: &str| ctx.parse_sql_expr(sql, &schema);
    let projection = vec![
        col(c::TRACE_ID),
        expr(&format!("encode({}, 'hex')", c::TRACE_ID))?.alias("trace_id_hex"),
        col("root_service"),
        col("root_name"),
        col("start_time_unix_nano"),
        expr("CAST(end_time_unix_nano AS BIGINT) - CAST(start_time_unix_nano AS BIGINT)")?
            .alias("duration_nano"),
        col("span_count"),
        expr("coalesce(error_count, 0)")?.alias("error_count"),
        expr("array_sort(services)")?.alias("services"),
    ];
    Ok(ViewTable::new(builder.project(projection)?.build()?, None))
}

/// Registers the `traces` view and the `traces(start, end)` function over `spans`.
pub(crate) fn register(ctx: &SessionContext, spans: Arc<dyn TableProvider>) -> Result<()> {
    ctx.register_table("traces", Arc::new(plan(ctx, Arc::clone(&spans), None)?))?;
    ctx.register_udtf("traces", Arc::new(TracesFunction { spans }));
    Ok(())
}

struct TracesFunction {
    spans: Arc<dyn TableProvider>,
}

impl std::fmt::Debug for TracesFunction {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TracesFunction")
    }
}

/// Unix nanoseconds of a `traces()` argument: RFC 3339 text or unix seconds.
fn instant(e: &Expr, which: &str) -> Result<u64> {
    let fail = || {
        DataFusionError::Plan(format!(
            "traces(start, end): {which} must be an RFC 3339 timestamp ('2026-11-28T10:00:00Z') \
             or unix seconds"
        ))
    };
    let Expr::Literal(value, _) = e else {
        return Err(fail());
    };
    let nanos = match value {
        ScalarValue::Int64(Some(s)) => s.checked_mul(1_000_000_000),
        ScalarValue::Float64(Some(s)) => Some((s * 1e9) as i64),
        v => match v.try_as_str().flatten() {
            Some(text) => chrono::DateTime::parse_from_rfc3339(text.trim())
                .ok()
                .and_then(|t| t.timestamp_nanos_opt()),
            None => None,
        },
    };
    nanos.and_then(|n| u64::try_from(n).ok()).ok_or_else(fail)
}

impl TableFunctionImpl for TracesFunction {
    fn call_with_args(&self, args: TableFunctionArgs) -> Result<Arc<dyn TableProvider>> {
        let [start, end] = args.exprs() else {
            return Err(DataFusionError::Plan(
                "traces takes two arguments: traces(start, end), e.g. \
                 traces('2026-11-28T10:00:00Z', '2026-11-28T11:00:00Z')"
                    .into(),
            ));
        };
        let (start, end) = (instant(start, "start")?, instant(end, "end")?);
        if end <= start {
            return Err(DataFusionError::Plan(format!(
                "traces(start, end): end ({end} ns) must be after start ({start} ns)"
            )));
        }
        let range = TimeRange {
            start_unix_nano: start,
            end_unix_nano: end - 1,
        };
        let state = args
            .session()
            .as_any()
            .downcast_ref::<SessionState>()
            .ok_or_else(|| DataFusionError::Internal("traces(): unexpected session".into()))?;
        let ctx = SessionContext::new_with_state(state.clone());
        Ok(Arc::new(plan(&ctx, Arc::clone(&self.spans), Some(range))?))
    }
}
