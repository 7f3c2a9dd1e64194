//! Service level objectives: definitions from the config file, evaluated from the
//! `span_metrics_1m` rollups (or from the spans when the rollups cannot answer exactly).
//!
//! ```text
//!  [[slo]] config ──compile──▶ Slo { rollup filter over dimensions | span filter, good }
//!
//!  status at t:  windows [end - w, end), end = the minute after t's minute,
//!                w = the SLO window, 5m, 30m, 1h, 6h, 1d, 3d
//!    rollups: per rollup file, its totals per dimension (cached: files are immutable) when
//!             every window holds the whole file; its minute rows when a window edge cuts it
//!    spans:   Σ adjusted_count per minute of the matching spans, from DataFusion
//!  ──▶ total, good, SLI, error budget, burn rates, alert state
//! ```
//!
//! A span is *good* for an availability SLO when its status is not ERROR and its HTTP status
//! (if any) is below 500; for a latency SLO when its duration is at most the threshold. Counts
//! are weighted by `adjusted_count`, so the figures stay unbiased under tail sampling.
//!
//! The rollups answer an SLO exactly when its filter reads only rollup dimensions
//! (`resource.service.name`, `name`, `kind`, `status = error`, `span.http.route`, with string
//! comparisons) and, for latency, when the threshold is one of
//! [`LATENCY_BOUNDS_MS`](tracelake_storage::rollup::LATENCY_BOUNDS_MS). Any other SLO is
//! computed from the spans: exact too, but it reads every matching span of its window.
//!
//! Alerts follow the multi-window, multi-burn-rate rules of the Google SRE workbook: `page`
//! when the burn rate is at least 14.4 over both 1h and 5m, `ticket` when it is at least 6
//! over both 6h and 30m, `ok` otherwise.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use arrow::array::{Array, ArrayRef, AsArray, Float64Array, Int64Array, RecordBatch, StringArray};
use arrow::datatypes::{
    DataType, Field as ArrowField, Float64Type, Int32Type, Int64Type, Schema, SchemaRef,
};
use datafusion::catalog::{Session, TableFunctionArgs, TableFunctionImpl, TableProvider};
use datafusion::common::DFSchema;
use datafusion::datasource::memory::MemorySourceConfig;
use datafusion::datasource::TableType;
use datafusion::error::DataFusionError;
use datafusion::execution::SessionState;
use datafusion::functions::expr_fn::coalesce;
use datafusion::functions_aggregate::expr_fn::sum;
use datafusion::logical_expr::{case, Expr};
use datafusion::physical_expr::PhysicalExpr;
use datafusion::physical_plan::ExecutionPlan;
use datafusion::prelude::{col, lit, SessionContext};
use futures::{StreamExt, TryStreamExt};
use parking_lot::{Mutex, RwLock};
use serde::{Deserialize, Serialize};
use tracelake_proto::columns;
use tracelake_storage::rollup::{
    latency_bound_index, read_rollup_file, rollup_columns as rc, rollup_files, RollupFile,
    LATENCY_BOUNDS_MS,
};

use crate::engine::window_filter;
use crate::error::{Error, Result};
use crate::traceql::{self, Condition, SpansetExpr};
use crate::{QueryEngine, TimeRange};

const MINUTE_NANOS: i64 = 60_000_000_000;
const SECOND_NANOS: i64 = 1_000_000_000;

/// The burn-rate windows every status reports, with their names.
pub const BURN_WINDOWS: [(&str, u64); 6] = [
    ("5m", 300),
    ("30m", 1_800),
    ("1h", 3_600),
    ("6h", 21_600),
    ("1d", 86_400),
    ("3d", 259_200),
];

/// Burn rate at or above which (over 1h and 5m) an SLO pages.
pub const PAGE_BURN_RATE: f64 = 14.4;
/// Burn rate at or above which (over 6h and 30m) an SLO opens a ticket.
pub const TICKET_BURN_RATE: f64 = 6.0;

/// What a good event is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SloKind {
    /// Good: status not ERROR and HTTP status (if any) below 500.
    Availability,
    /// Good: duration at most the threshold.
    Latency,
}

impl SloKind {
    /// `availability` or `latency`.
    pub fn as_str(self) -> &'static str {
        match self {
            SloKind::Availability => "availability",
            SloKind::Latency => "latency",
        }
    }
}

/// One `[[slo]]` entry of the config file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SloConfig {
    /// Unique per tenant; used in the API paths.
    pub name: String,
    /// The tenant whose spans count (default `default`).
    #[serde(default = "default_tenant")]
    pub tenant: String,
    /// The service (`service.name`) the SLO is about.
    pub service: String,
    /// A TraceQL span filter the spans must also match, e.g.
    /// `{ span.http.route =~ "/api/checkout/.*" && kind = server }`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub filter: Option<String>,
    /// The target fraction of good events, in (0, 1), e.g. 0.999.
    pub objective: f64,
    /// `availability` or `latency`.
    pub kind: SloKind,
    /// For latency SLOs: good when the duration is at most this.
    #[serde(
        default,
        with = "humantime_serde",
        skip_serializing_if = "Option::is_none"
    )]
    pub threshold: Option<Duration>,
    /// The compliance window, e.g. `30d`.
    #[serde(with = "humantime_serde")]
    pub window: Duration,
    /// Free text shown in the API.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
}

fn default_tenant() -> String {
    "default".to_string()
}

/// A rollup dimension: one row's service, span name, kind, status class and route.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct Dim {
    service: Option<String>,
    name: Option<String>,
    kind: Option<i32>,
    class: String,
    route: Option<String>,
}

/// An SLO's filter over rollup dimensions: the rollup condition of TraceQL metrics
/// ([`crate::metrics::rollup_condition`], with the service), evaluated on batches of
/// dimensions. A NULL result (a comparison with a missing value) does not count, as in SQL.
#[derive(Debug, Clone)]
struct DimFilter(Arc<dyn PhysicalExpr>);

/// The columns a [`DimFilter`] reads, typed as the rollups store them.
static DIM_SCHEMA: std::sync::LazyLock<SchemaRef> = std::sync::LazyLock::new(|| {
    Arc::new(Schema::new(vec![
        ArrowField::new(rc::SERVICE_NAME, DataType::Utf8, true),
        ArrowField::new(rc::SPAN_NAME, DataType::Utf8, true),
        ArrowField::new(rc::SPAN_KIND, DataType::Int32, true),
        ArrowField::new(rc::STATUS_CLASS, DataType::Utf8, false),
        ArrowField::new(rc::HTTP_ROUTE, DataType::Utf8, true),
    ]))
});

impl DimFilter {
    /// The filter of `service` and `condition`, or `None` when the rollups cannot tell.
    fn new(service: &str, condition: Option<&Condition>) -> Option<DimFilter> {
        let mut expr = col(rc::SERVICE_NAME).eq(lit(service.to_string()));
        if let Some(c) = condition {
            expr = expr.and(crate::metrics::rollup_condition(c)?);
        }
        let schema = DFSchema::try_from(DIM_SCHEMA.as_ref().clone()).ok()?;
        // Planned as any query expression is: types coerced, then simplified.
        SessionContext::new()
            .create_physical_expr(expr, &schema)
            .ok()
            .map(DimFilter)
    }

    /// Per dimension: `Some(true)` when its spans count, `None` when unknown (SQL NULL).
    fn eval_all(&self, dims: &[Dim]) -> Result<Vec<Option<bool>>> {
        let strings = |f: &dyn Fn(&Dim) -> Option<&str>| -> ArrayRef {
            Arc::new(StringArray::from_iter(dims.iter().map(f)))
        };
        let batch = RecordBatch::try_new(
            DIM_SCHEMA.clone(),
            vec![
                strings(&|d| d.service.as_deref()),
                strings(&|d| d.name.as_deref()),
                Arc::new(arrow::array::Int32Array::from_iter(
                    dims.iter().map(|d| d.kind),
                )),
                strings(&|d| Some(d.class.as_str())),
                strings(&|d| d.route.as_deref()),
            ],
        )
        .map_err(|e| Error::Internal(format!("SLO dimensions: {e}")))?;
        let values = self.0.evaluate(&batch)?.into_array(dims.len())?;
        Ok(values.as_boolean().iter().collect())
    }

    /// [`DimFilter::eval_all`] of one dimension.
    #[cfg(test)]
    fn eval(&self, d: &Dim) -> Option<bool> {
        self.eval_all(std::slice::from_ref(d)).ok()?[0]
    }
}

/// Where an SLO's figures come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SloSource {
    /// `span_metrics_1m`.
    Rollups,
    /// `spans`.
    Spans,
}

impl SloSource {
    /// `rollups` or `spans`.
    pub fn as_str(self) -> &'static str {
        match self {
            SloSource::Rollups => "rollups",
            SloSource::Spans => "spans",
        }
    }
}

/// A validated SLO, ready to evaluate.
#[derive(Debug)]
pub struct Slo {
    /// The definition as configured.
    pub config: SloConfig,
    /// The rollup path: the filter over dimensions (with the service), and for latency the
    /// threshold's position in the ladder.
    rollup: Option<(DimFilter, Option<usize>)>,
    /// The spans path: which spans count, and which of them are good.
    spans: (Expr, Expr),
    /// Per dimension id of the tenant's interner: whether the SLO counts it (grows lazily).
    matches: Mutex<Vec<bool>>,
}

impl Slo {
    /// Validates a definition; the error names the SLO and what to fix.
    pub fn compile(config: SloConfig) -> std::result::Result<Slo, String> {
        let name = config.name.clone();
        let fail = |what: String| format!("slo {name:?}: {what}");
        if name.trim().is_empty()
            || !name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        {
            return Err(fail(
                "name must be non-empty and use only letters, digits, '-', '_' and '.' (it is \
                 part of /api/slo/{name})"
                    .into(),
            ));
        }
        tracelake_storage::validate_tenant(&config.tenant).map_err(|e| fail(e.to_string()))?;
        if config.service.is_empty() {
            return Err(fail("service is required".into()));
        }
        if !(config.objective > 0.0 && config.objective < 1.0) {
            return Err(fail(format!(
                "objective {} must be between 0 and 1 (exclusive), e.g. 0.999",
                config.objective
            )));
        }
        let minute = Duration::from_secs(60);
        if config.window < minute
            || config.window.subsec_nanos() != 0
            || !config.window.as_secs().is_multiple_of(60)
            || config.window > Duration::from_secs(400 * 86_400)
        {
            return Err(fail(format!(
                "window {} must be whole minutes, from 1m to 400d (e.g. 30d)",
                humantime::format_duration(config.window)
            )));
        }
        let le_index = match (config.kind, config.threshold) {
            (SloKind::Latency, None) => {
                return Err(fail(
                    "a latency SLO needs a threshold, e.g. \"300ms\"".into(),
                ))
            }
            (SloKind::Latency, Some(t)) if t.is_zero() => {
                return Err(fail("threshold must be positive".into()))
            }
            (SloKind::Latency, Some(t)) => latency_bound_index(t),
            (SloKind::Availability, Some(_)) => {
                return Err(fail(
                    "threshold is only for latency SLOs (kind = \"latency\")".into(),
                ))
            }
            (SloKind::Availability, None) => None,
        };
        let condition = match config.filter.as_deref().map(str::trim) {
            None | Some("") => None,
            Some(text) => {
                let query = traceql::parse(text).map_err(|e| fail(format!("filter: {e}")))?;
                let single = match &query.spansets {
                    SpansetExpr::Filter(f) if query.pipeline.is_empty() && !query.is_metrics() => {
                        Some(f.condition.clone())
                    }
                    _ => None,
                };
                let Some(condition) = single else {
                    return Err(fail(
                        "filter must be one span filter `{ ... }`, without pipelines or \
                         structural operators"
                            .into(),
                    ));
                };
                condition
            }
        };
        let span_condition = match &condition {
            None => lit(true),
            Some(c) => {
                let mut fields = Vec::new();
                traceql::compile::condition_fields(c, &mut fields);
                if fields.iter().any(|f| traceql::compile::needs_trace(f)) {
                    return Err(fail(
                        "filter may only read fields of the span itself (no trace-level \
                         intrinsics)"
                            .into(),
                    ));
                }
                traceql::compile::exact(c).map_err(|e| fail(format!("filter: {e}")))?
            }
        };
        let dims = DimFilter::new(&config.service, condition.as_ref());
        let rollup = match (dims, config.kind, le_index) {
            (Some(f), SloKind::Availability, _) => Some((f, None)),
            (Some(f), SloKind::Latency, Some(i)) => Some((f, Some(i))),
            _ => None,
        };
        let counted = col(columns::SERVICE_NAME)
            .eq(lit(config.service.clone()))
            .and(span_condition);
        let good = match config.kind {
            SloKind::Availability => coalesce(vec![col(columns::STATUS_CODE), lit(0)])
                .not_eq(lit(2))
                .and(
                    coalesce(vec![col(columns::HTTP_RESPONSE_STATUS_CODE), lit(0i64)])
                        .lt(lit(500i64)),
                ),
            SloKind::Latency => {
                let nanos = config.threshold.unwrap_or_default().as_nanos();
                col(columns::DURATION_NANO).lt_eq(lit(i64::try_from(nanos).unwrap_or(i64::MAX)))
            }
        };
        Ok(Slo {
            config,
            rollup,
            spans: (counted, good),
            matches: Mutex::default(),
        })
    }

    /// Where this SLO's figures come from.
    pub fn source(&self) -> SloSource {
        if self.rollup.is_some() {
            SloSource::Rollups
        } else {
            SloSource::Spans
        }
    }
}

/// The SLO definitions in force; replaced whole on reload.
#[derive(Debug, Default)]
pub struct SloRegistry {
    current: RwLock<Arc<Vec<Arc<Slo>>>>,
}

impl SloRegistry {
    /// Validates `configs` and, when all are valid and names are unique per tenant, puts them
    /// in force. On error the previous definitions stay.
    pub fn replace(&self, configs: &[SloConfig]) -> std::result::Result<usize, String> {
        let compiled = compile_all(configs)?;
        let n = compiled.len();
        *self.current.write() = Arc::new(compiled);
        Ok(n)
    }

    /// The tenants that have SLOs.
    pub fn tenants(&self) -> Vec<String> {
        let mut tenants: Vec<String> = self
            .current
            .read()
            .iter()
            .map(|s| s.config.tenant.clone())
            .collect();
        tenants.sort();
        tenants.dedup();
        tenants
    }

    /// The SLOs of `tenant`, in config order.
    pub fn of_tenant(&self, tenant: &str) -> Vec<Arc<Slo>> {
        self.current
            .read()
            .iter()
            .filter(|s| s.config.tenant == tenant)
            .cloned()
            .collect()
    }
}

/// Validates every definition and checks names are unique per tenant.
pub fn compile_all(configs: &[SloConfig]) -> std::result::Result<Vec<Arc<Slo>>, String> {
    let mut seen = std::collections::HashSet::new();
    let mut out = Vec::with_capacity(configs.len());
    for c in configs {
        if !seen.insert((c.tenant.clone(), c.name.clone())) {
            return Err(format!(
                "slo {:?} is defined twice for tenant {:?}",
                c.name, c.tenant
            ));
        }
        out.push(Arc::new(Slo::compile(c.clone())?));
    }
    Ok(out)
}

/// Weighted total and good events.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Counts {
    /// Σ adjusted_count of the SLO's spans.
    pub total: f64,
    /// Σ adjusted_count of its good spans.
    pub good: f64,
}

impl Counts {
    /// Bad events.
    pub fn bad(&self) -> f64 {
        (self.total - self.good).max(0.0)
    }

    /// good / total, or `None` without events.
    pub fn sli(&self) -> Option<f64> {
        (self.total > 0.0).then(|| self.good / self.total)
    }

    /// The error rate relative to the budget's (1 - objective); 0 without events.
    pub fn burn_rate(&self, objective: f64) -> f64 {
        if self.total > 0.0 {
            (self.bad() / self.total) / (1.0 - objective)
        } else {
            0.0
        }
    }
}

/// The error budget over the SLO window, in events.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ErrorBudget {
    /// (1 - objective) × total events.
    pub total: f64,
    /// Bad events.
    pub consumed: f64,
    /// total - consumed (negative once exhausted).
    pub remaining: f64,
    /// remaining / total (1 without events).
    pub remaining_ratio: f64,
}

/// The alert state of the multi-window, multi-burn-rate rules.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AlertState {
    /// Burn rate ≥ 14.4 over 1h and over 5m.
    Page,
    /// Burn rate ≥ 6 over 6h and over 30m.
    Ticket,
    /// Neither.
    Ok,
}

impl AlertState {
    /// `page`, `ticket` or `ok`.
    pub fn as_str(self) -> &'static str {
        match self {
            AlertState::Page => "page",
            AlertState::Ticket => "ticket",
            AlertState::Ok => "ok",
        }
    }
}

/// One SLO's state at an instant.
#[derive(Debug, Clone)]
pub struct SloStatus {
    /// The definition.
    pub config: SloConfig,
    /// Where the figures come from.
    pub source: SloSource,
    /// The SLO window `[start, end)`, unix seconds.
    pub window: (u64, u64),
    /// Events over the window.
    pub counts: Counts,
    /// The error budget over the window.
    pub budget: ErrorBudget,
    /// Burn rate per [`BURN_WINDOWS`] entry, in that order.
    pub burn_rates: Vec<(&'static str, f64)>,
    /// The alert state.
    pub alert: AlertState,
}

/// One step of an SLO series.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SloPoint {
    /// Start of the step, unix seconds.
    pub timestamp_secs: u64,
    /// Events in the step.
    pub counts: Counts,
    /// The step's burn rate.
    pub burn_rate: f64,
}

/// An SLO's SLI and burn rate per step.
#[derive(Debug, Clone)]
pub struct SloSeries {
    /// The definition.
    pub config: SloConfig,
    /// Where the figures come from.
    pub source: SloSource,
    /// Seconds per step.
    pub step_secs: u64,
    /// One point per step of `[start, end)`, empty steps included.
    pub points: Vec<SloPoint>,
}

/// At most this many points per series.
pub const MAX_SLO_POINTS: u64 = 11_000;

fn status_of(slo: &Slo, window: (u64, u64), counts: &[Counts]) -> SloStatus {
    let objective = slo.config.objective;
    let main = counts[0];
    let budget_total = (1.0 - objective) * main.total;
    let consumed = main.bad();
    let budget = ErrorBudget {
        total: budget_total,
        consumed,
        remaining: budget_total - consumed,
        remaining_ratio: if budget_total > 0.0 {
            1.0 - consumed / budget_total
        } else {
            1.0
        },
    };
    let burn_rates: Vec<(&'static str, f64)> = BURN_WINDOWS
        .iter()
        .zip(&counts[1..])
        .map(|((name, _), c)| (*name, c.burn_rate(objective)))
        .collect();
    let mut status = SloStatus {
        config: slo.config.clone(),
        source: slo.source(),
        window,
        counts: main,
        budget,
        burn_rates,
        alert: AlertState::Ok,
    };
    let burn = |name: &str| status.burn_rate(name);
    status.alert = if burn("1h") >= PAGE_BURN_RATE && burn("5m") >= PAGE_BURN_RATE {
        AlertState::Page
    } else if burn("6h") >= TICKET_BURN_RATE && burn("30m") >= TICKET_BURN_RATE {
        AlertState::Ticket
    } else {
        AlertState::Ok
    };
    status
}

impl SloStatus {
    /// The burn rate over one of [`BURN_WINDOWS`] (`"1h"`, ...); 0 for an unknown name.
    pub fn burn_rate(&self, window: &str) -> f64 {
        self.burn_rates
            .iter()
            .find(|(n, _)| *n == window)
            .map_or(0.0, |(_, b)| *b)
    }
}

/// Rollup aggregates of one dimension: weighted count, errors and `duration_le`.
#[derive(Debug, Clone, Copy)]
struct Agg {
    count: f64,
    errors: f64,
    le: [f64; LATENCY_BOUNDS_MS.len()],
}

impl Agg {
    const ZERO: Agg = Agg {
        count: 0.0,
        errors: 0.0,
        le: [0.0; LATENCY_BOUNDS_MS.len()],
    };

    fn add(&mut self, o: &Agg) {
        self.count += o.count;
        self.errors += o.errors;
        for (a, b) in self.le.iter_mut().zip(&o.le) {
            *a += b;
        }
    }

    fn counts(&self, le_index: Option<usize>) -> Counts {
        let good = match le_index {
            Some(i) => self.le[i],
            None => self.count - self.errors,
        };
        Counts {
            total: self.count,
            good,
        }
    }
}

/// Dimension ids of one tenant (never shrinks: dimensions are few and stable).
#[derive(Default)]
struct Interner {
    ids: HashMap<Dim, u32>,
    dims: Vec<Dim>,
}

impl Interner {
    fn id(&mut self, d: Dim) -> u32 {
        if let Some(id) = self.ids.get(&d) {
            return *id;
        }
        let id = u32::try_from(self.dims.len()).unwrap_or(u32::MAX);
        self.dims.push(d.clone());
        self.ids.insert(d, id);
        id
    }
}

/// A rollup file's rows: per dimension and minute.
struct FileRows {
    rows: Vec<(u32, i64, Agg)>,
}

impl FileRows {
    /// Per dimension totals.
    fn totals(&self) -> Vec<(u32, Agg)> {
        let mut by: HashMap<u32, Agg> = HashMap::new();
        for (d, _, a) in &self.rows {
            by.entry(*d).or_insert(Agg::ZERO).add(a);
        }
        by.into_iter().collect()
    }
}

#[derive(Default)]
struct TenantCache {
    interner: Interner,
    /// Per-dimension totals of each file read, by path.
    totals: HashMap<String, Arc<Vec<(u32, Agg)>>>,
}

/// Evaluates SLOs; caches per-file rollup totals and dimension ids per tenant.
#[derive(Default)]
pub(crate) struct SloCache {
    tenants: Mutex<HashMap<String, TenantCache>>,
}

fn cast_column(b: &RecordBatch, name: &str, to: &DataType) -> Result<arrow::array::ArrayRef> {
    let c = b
        .column_by_name(name)
        .ok_or_else(|| Error::Internal(format!("rollup file has no column {name}")))?;
    arrow::compute::cast(c, to).map_err(|e| Error::Internal(format!("rollup column {name}: {e}")))
}

impl SloCache {
    /// Decodes a rollup file's rows, interning their dimensions.
    fn decode(&self, tenant: &str, batches: &[RecordBatch]) -> Result<FileRows> {
        let mut rows = Vec::new();
        for b in batches {
            let minute = cast_column(b, rc::MINUTE, &DataType::Int64)?;
            let service = cast_column(b, rc::SERVICE_NAME, &DataType::Utf8)?;
            let name = cast_column(b, rc::SPAN_NAME, &DataType::Utf8)?;
            let kind = cast_column(b, rc::SPAN_KIND, &DataType::Int32)?;
            let class = cast_column(b, rc::STATUS_CLASS, &DataType::Utf8)?;
            let route = cast_column(b, rc::HTTP_ROUTE, &DataType::Utf8)?;
            let count = cast_column(b, rc::COUNT, &DataType::Float64)?;
            let errors = cast_column(b, rc::ERROR_COUNT, &DataType::Float64)?;
            let le = cast_column(
                b,
                rc::DURATION_LE,
                &DataType::new_list(DataType::Float64, true),
            )?;
            let (minute, kind) = (
                minute.as_primitive::<Int64Type>(),
                kind.as_primitive::<Int32Type>(),
            );
            let (service, name, class, route) = (
                service.as_string::<i32>(),
                name.as_string::<i32>(),
                class.as_string::<i32>(),
                route.as_string::<i32>(),
            );
            let (count, errors, le) = (
                count.as_primitive::<Float64Type>(),
                errors.as_primitive::<Float64Type>(),
                le.as_list::<i32>(),
            );
            let offsets = le.value_offsets();
            let values = le.values().as_primitive::<Float64Type>();
            // Dimension ids of this batch, by borrowed key: the shared interner (and its
            // lock) is only reached for dimensions new to the batch.
            type Key<'a> = (
                Option<&'a str>,
                Option<&'a str>,
                Option<i32>,
                &'a str,
                Option<&'a str>,
            );
            let mut local: HashMap<Key<'_>, u32> = HashMap::new();
            for i in 0..b.num_rows() {
                let key: Key<'_> = (
                    opt_str(service, i),
                    opt_str(name, i),
                    kind.is_valid(i).then(|| kind.value(i)),
                    class.value(i),
                    opt_str(route, i),
                );
                let dim = match local.get(&key) {
                    Some(id) => *id,
                    None => {
                        let id = self
                            .tenants
                            .lock()
                            .entry(tenant.to_string())
                            .or_default()
                            .interner
                            .id(Dim {
                                service: key.0.map(str::to_string),
                                name: key.1.map(str::to_string),
                                kind: key.2,
                                class: key.3.to_string(),
                                route: key.4.map(str::to_string),
                            });
                        local.insert(key, id);
                        id
                    }
                };
                let mut agg = Agg {
                    count: count.value(i),
                    errors: errors.value(i),
                    le: [0.0; LATENCY_BOUNDS_MS.len()],
                };
                if le.is_valid(i) {
                    let (from, to) = (offsets[i] as usize, offsets[i + 1] as usize);
                    for (slot, v) in agg.le.iter_mut().zip(&values.values()[from..to]) {
                        *slot = *v;
                    }
                }
                rows.push((dim, minute.value(i), agg));
            }
        }
        Ok(FileRows { rows })
    }

    /// Whether each dimension id counts for `slo` (computed for new ids only).
    fn matches(&self, tenant: &str, slo: &Slo) -> Result<Vec<bool>> {
        let Some((filter, _)) = &slo.rollup else {
            return Ok(Vec::new());
        };
        let tenants = self.tenants.lock();
        let Some(cache) = tenants.get(tenant) else {
            return Ok(Vec::new());
        };
        let mut matches = slo.matches.lock();
        let known = matches.len();
        let new = filter.eval_all(&cache.interner.dims[known..])?;
        matches.extend(new.into_iter().map(|m| m == Some(true)));
        Ok(matches.clone())
    }
}

/// Which of `intervals` hold a file whole, and whether any cuts it.
fn classify(minutes: (i64, i64), intervals: &[(i64, i64)]) -> (Vec<usize>, bool) {
    let (lo, hi) = minutes;
    let mut whole = Vec::new();
    let mut cut = false;
    for (i, (s, e)) in intervals.iter().enumerate() {
        if lo >= *s && hi < *e {
            whole.push(i);
        } else if lo < *e && hi >= *s {
            cut = true;
        }
    }
    (whole, cut)
}

fn opt_str(a: &arrow::array::StringArray, i: usize) -> Option<&str> {
    a.is_valid(i).then(|| a.value(i))
}

/// The rollup columns SLOs read (not the sketches, the largest).
const ROLLUP_READ: [&str; 9] = [
    rc::MINUTE,
    rc::SERVICE_NAME,
    rc::SPAN_NAME,
    rc::SPAN_KIND,
    rc::STATUS_CLASS,
    rc::HTTP_ROUTE,
    rc::COUNT,
    rc::ERROR_COUNT,
    rc::DURATION_LE,
];

/// Rollup files read at once.
const READ_CONCURRENCY: usize = 8;

impl QueryEngine {
    /// The SLO definitions in force.
    pub fn slos(&self) -> &SloRegistry {
        &self.slo_registry
    }

    pub(crate) fn slo_eval(&self) -> SloEval {
        SloEval {
            storage: Arc::clone(self.storage()),
            registry: Arc::clone(&self.slo_registry),
            cache: Arc::clone(&self.slo_cache),
        }
    }

    /// The status at `at_secs` of every SLO of `tenant` (only `name`'s when given; an unknown
    /// name is an error).
    pub async fn slo_status(
        &self,
        tenant: &str,
        name: Option<&str>,
        at_secs: u64,
    ) -> Result<Vec<SloStatus>> {
        let (eval, ctx) = (self.slo_eval(), self.context(tenant)?);
        let (tenant, name) = (tenant.to_string(), name.map(str::to_string));
        self.run(async move { eval.status(&ctx, &tenant, name.as_deref(), at_secs).await })
            .await
    }

    /// The SLI and burn rate of SLO `name` per step of `[start, end)` (unix seconds; `step` a
    /// positive whole number of minutes).
    pub async fn slo_series(
        &self,
        tenant: &str,
        name: &str,
        start_secs: u64,
        end_secs: u64,
        step_secs: u64,
    ) -> Result<SloSeries> {
        let (eval, ctx) = (self.slo_eval(), self.context(tenant)?);
        let (tenant, name) = (tenant.to_string(), name.to_string());
        self.run(async move {
            eval.series(&ctx, &tenant, &name, start_secs, end_secs, step_secs)
                .await
        })
        .await
    }
}

/// What SLO evaluation needs of the engine; usable inside a query (`slo_status()`).
#[derive(Clone)]
pub(crate) struct SloEval {
    storage: Arc<tracelake_storage::Storage>,
    registry: Arc<SloRegistry>,
    cache: Arc<SloCache>,
}

impl SloEval {
    /// The status at `at_secs` of every SLO of `tenant` (only `name`'s when given; unknown
    /// names are an error).
    pub(crate) async fn status(
        &self,
        ctx: &SessionContext,
        tenant: &str,
        name: Option<&str>,
        at_secs: u64,
    ) -> Result<Vec<SloStatus>> {
        let slos = self.select_slos(tenant, name)?;
        let end = (at_secs / 60 + 1) * 60;
        let mut out = Vec::with_capacity(slos.len());
        let intervals_of = |slo: &Slo| -> Vec<(u64, u64)> {
            std::iter::once(slo.config.window.as_secs())
                .chain(BURN_WINDOWS.iter().map(|(_, w)| *w))
                .map(|w| (end.saturating_sub(w), end))
                .collect()
        };
        let counts = self
            .slo_counts(ctx, tenant, &slos, &|slo| intervals_of(slo))
            .await?;
        for (slo, counts) in slos.iter().zip(counts) {
            let window = intervals_of(slo)[0];
            out.push(status_of(slo, window, &counts));
        }
        Ok(out)
    }

    /// The SLI and burn rate of SLO `name` per step of `[start, end)` (unix seconds; `step` a
    /// positive whole number of minutes).
    pub(crate) async fn series(
        &self,
        ctx: &SessionContext,
        tenant: &str,
        name: &str,
        start_secs: u64,
        end_secs: u64,
        step_secs: u64,
    ) -> Result<SloSeries> {
        let slos = self.select_slos(tenant, Some(name))?;
        if step_secs == 0 || !step_secs.is_multiple_of(60) {
            return Err(Error::InvalidRequest(format!(
                "step {step_secs}s must be a positive whole number of minutes"
            )));
        }
        let start = start_secs - start_secs % 60;
        if end_secs <= start {
            return Err(Error::InvalidRequest(format!(
                "end ({end_secs}) must be after start ({start_secs})"
            )));
        }
        let points = (end_secs - start).div_ceil(step_secs);
        if points > MAX_SLO_POINTS {
            return Err(Error::InvalidRequest(format!(
                "{points} points; at most {MAX_SLO_POINTS}: use a larger step or a shorter window"
            )));
        }
        let intervals: Vec<(u64, u64)> = (0..points)
            .map(|i| {
                let s = start + i * step_secs;
                (s, s + step_secs)
            })
            .collect();
        let counts = self
            .slo_counts(ctx, tenant, &slos, &|_| intervals.clone())
            .await?;
        let slo = &slos[0];
        let points = intervals
            .iter()
            .zip(&counts[0])
            .map(|((s, _), c)| SloPoint {
                timestamp_secs: *s,
                counts: *c,
                burn_rate: c.burn_rate(slo.config.objective),
            })
            .collect();
        Ok(SloSeries {
            config: slo.config.clone(),
            source: slo.source(),
            step_secs,
            points,
        })
    }

    fn select_slos(&self, tenant: &str, name: Option<&str>) -> Result<Vec<Arc<Slo>>> {
        tracelake_storage::validate_tenant(tenant)?;
        let mut slos = self.registry.of_tenant(tenant);
        if let Some(name) = name {
            slos.retain(|s| s.config.name == name);
            if slos.is_empty() {
                return Err(Error::NotFound(format!(
                    "no SLO named {name:?} for tenant {tenant:?}: GET /api/slo lists them; \
                     SLOs are [[slo]] entries of the config file"
                )));
            }
        }
        Ok(slos)
    }

    /// Weighted (total, good) of each SLO over each of its intervals (unix seconds, `[s, e)`,
    /// whole minutes).
    async fn slo_counts(
        &self,
        ctx: &SessionContext,
        tenant: &str,
        slos: &[Arc<Slo>],
        intervals_of: &(dyn Fn(&Slo) -> Vec<(u64, u64)> + Sync),
    ) -> Result<Vec<Vec<Counts>>> {
        let nanos = |(s, e): (u64, u64)| (s as i64 * SECOND_NANOS, e as i64 * SECOND_NANOS);
        let all: Vec<Vec<(i64, i64)>> = slos
            .iter()
            .map(|s| intervals_of(s).into_iter().map(nanos).collect())
            .collect();
        let mut out: Vec<Vec<Counts>> = all
            .iter()
            .map(|i| vec![Counts::default(); i.len()])
            .collect();
        let rollup_slos: Vec<usize> = (0..slos.len())
            .filter(|i| slos[*i].rollup.is_some())
            .collect();
        if !rollup_slos.is_empty() {
            self.rollup_counts(tenant, slos, &rollup_slos, &all, &mut out)
                .await?;
        }
        for i in (0..slos.len()).filter(|i| slos[*i].rollup.is_none()) {
            out[i] = span_counts(ctx, &slos[i], &all[i]).await?;
        }
        Ok(out)
    }

    async fn rollup_counts(
        &self,
        tenant: &str,
        slos: &[Arc<Slo>],
        which: &[usize],
        intervals: &[Vec<(i64, i64)>],
        out: &mut [Vec<Counts>],
    ) -> Result<()> {
        let snapshot = self.storage.snapshot(tenant).await?;
        let Some(table) = snapshot.rollups else {
            return Ok(());
        };
        let files =
            rollup_files(&table).map_err(|e| Error::Internal(format!("rollup files: {e}")))?;
        let cache = Arc::clone(&self.cache);
        {
            let mut tenants = cache.tenants.lock();
            let c = tenants.entry(tenant.to_string()).or_default();
            let live: std::collections::HashSet<&str> =
                files.iter().map(|f| f.path.as_str()).collect();
            c.totals.retain(|p, _| live.contains(p.as_str()));
        }
        // Per file: the SLO intervals holding it whole, and whether it needs its minute rows.
        struct Plan<'a> {
            file: &'a RollupFile,
            whole: Vec<Vec<usize>>,
            cut: bool,
        }
        let mut plans = Vec::new();
        for file in &files {
            let mut whole = Vec::with_capacity(which.len());
            let mut cut = false;
            for &s in which {
                let (w, c) = classify(file.minutes, &intervals[s]);
                cut |= c;
                whole.push(w);
            }
            if cut || whole.iter().any(|w| !w.is_empty()) {
                plans.push(Plan { file, whole, cut });
            }
        }
        // Read what the cache lacks: files cut by an interval edge, and new files.
        let needs_read: Vec<RollupFile> = {
            let tenants = cache.tenants.lock();
            let totals = tenants.get(tenant).map(|c| &c.totals);
            plans
                .iter()
                .filter(|p| p.cut || !totals.is_some_and(|t| t.contains_key(&p.file.path)))
                .map(|p| p.file.clone())
                .collect()
        };
        let read: HashMap<String, FileRows> = futures::stream::iter(needs_read)
            .map(|f| {
                let table = table.clone();
                let cache = Arc::clone(&cache);
                let tenant = tenant.to_string();
                async move {
                    let batches = read_rollup_file(&table, &f, Some(&ROLLUP_READ))
                        .await
                        .map_err(|e| Error::Internal(format!("rollups: {e}")))?;
                    let rows = cache.decode(&tenant, &batches)?;
                    Ok::<_, Error>((f.path.clone(), rows))
                }
            })
            .buffer_unordered(READ_CONCURRENCY)
            .try_collect()
            .await?;
        {
            let mut tenants = cache.tenants.lock();
            let c = tenants.entry(tenant.to_string()).or_default();
            for (path, rows) in &read {
                c.totals
                    .entry(path.clone())
                    .or_insert_with(|| Arc::new(rows.totals()));
            }
        }
        let matches: Vec<Vec<bool>> = which
            .iter()
            .map(|&s| cache.matches(tenant, &slos[s]))
            .collect::<Result<_>>()?;
        let le = |s: usize| slos[s].rollup.as_ref().and_then(|(_, i)| *i);
        for plan in &plans {
            if plan.cut {
                let rows = &read[&plan.file.path];
                for (k, &s) in which.iter().enumerate() {
                    for (dim, minute, agg) in &rows.rows {
                        if !matches[k].get(*dim as usize).copied().unwrap_or(false) {
                            continue;
                        }
                        let c = agg.counts(le(s));
                        for (i, (a, b)) in intervals[s].iter().enumerate() {
                            if minute >= a && minute < b {
                                out[s][i].total += c.total;
                                out[s][i].good += c.good;
                            }
                        }
                    }
                }
                continue;
            }
            let totals = {
                let tenants = cache.tenants.lock();
                tenants
                    .get(tenant)
                    .and_then(|c| c.totals.get(&plan.file.path).cloned())
                    .ok_or_else(|| Error::Internal("rollup totals missing".into()))?
            };
            for (k, &s) in which.iter().enumerate() {
                if plan.whole[k].is_empty() {
                    continue;
                }
                let mut sum = Counts::default();
                for (dim, agg) in totals.iter() {
                    if matches[k].get(*dim as usize).copied().unwrap_or(false) {
                        let c = agg.counts(le(s));
                        sum.total += c.total;
                        sum.good += c.good;
                    }
                }
                for &i in &plan.whole[k] {
                    out[s][i].total += sum.total;
                    out[s][i].good += sum.good;
                }
            }
        }
        Ok(())
    }
}

/// (total, good) of an SLO per interval, from the spans.
async fn span_counts(
    ctx: &SessionContext,
    slo: &Slo,
    intervals: &[(i64, i64)],
) -> Result<Vec<Counts>> {
    let mut out = vec![Counts::default(); intervals.len()];
    let (Some(lo), Some(hi)) = (
        intervals.iter().map(|i| i.0).min(),
        intervals.iter().map(|i| i.1).max(),
    ) else {
        return Ok(out);
    };
    let (counted, good) = slo.spans.clone();
    let batches = {
        {
            let weight = crate::metrics::weight();
            let start = col(columns::START_TIME_UNIX_NANO);
            let minute = (start.clone() - start % lit(MINUTE_NANOS)).alias("minute");
            let range = TimeRange {
                start_unix_nano: lo as u64,
                end_unix_nano: (hi - 1) as u64,
            };
            let df = ctx
                .table("spans")
                .await?
                .filter(window_filter(range).and(counted))?
                .aggregate(
                    vec![minute],
                    vec![
                        sum(weight.clone()).alias("total"),
                        sum(case(good).when(lit(true), weight).otherwise(lit(0.0))?).alias("good"),
                    ],
                )?;
            df.collect().await?
        }
    };
    for b in &batches {
        let minutes = b.column(0).as_primitive::<Int64Type>();
        let totals = b.column(1).as_primitive::<Float64Type>();
        let goods = b.column(2).as_primitive::<Float64Type>();
        for r in 0..b.num_rows() {
            let m = minutes.value(r);
            for (i, (s, e)) in intervals.iter().enumerate() {
                if m >= *s && m < *e {
                    out[i].total += totals.value(r);
                    out[i].good += goods.value(r);
                }
            }
        }
    }
    Ok(out)
}

/// `slo_status()` / `slo_status('name')`: the SLO status table of the calling tenant.
pub(crate) struct SloStatusFunction {
    pub(crate) eval: SloEval,
    pub(crate) tenant: String,
}

impl std::fmt::Debug for SloStatusFunction {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SloStatusFunction")
            .field("tenant", &self.tenant)
            .finish_non_exhaustive()
    }
}

impl TableFunctionImpl for SloStatusFunction {
    fn call_with_args(
        &self,
        args: TableFunctionArgs,
    ) -> datafusion::error::Result<Arc<dyn TableProvider>> {
        let name = match args.exprs() {
            [] => None,
            [Expr::Literal(v, _)] if v.try_as_str().flatten().is_some() => {
                v.try_as_str().flatten().map(str::to_string)
            }
            _ => {
                return Err(DataFusionError::Plan(
                    "slo_status takes no argument (every SLO) or an SLO name as a string \
                     literal: SELECT * FROM slo_status('checkout-availability')"
                        .into(),
                ))
            }
        };
        Ok(Arc::new(SloStatusTable {
            eval: self.eval.clone(),
            tenant: self.tenant.clone(),
            name,
        }))
    }
}

struct SloStatusTable {
    eval: SloEval,
    tenant: String,
    name: Option<String>,
}

impl std::fmt::Debug for SloStatusTable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SloStatusTable")
            .field("tenant", &self.tenant)
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

static STATUS_SCHEMA: std::sync::LazyLock<SchemaRef> = std::sync::LazyLock::new(|| {
    let f = |name: &str, t: DataType, nullable: bool| ArrowField::new(name, t, nullable);
    let mut fields = vec![
        f("name", DataType::Utf8, false),
        f("service", DataType::Utf8, false),
        f("kind", DataType::Utf8, false),
        f("objective", DataType::Float64, false),
        f("window_seconds", DataType::Int64, false),
        f("source", DataType::Utf8, false),
        f("total", DataType::Float64, false),
        f("good", DataType::Float64, false),
        f("sli", DataType::Float64, true),
        f("budget_total", DataType::Float64, false),
        f("budget_consumed", DataType::Float64, false),
        f("budget_remaining", DataType::Float64, false),
        f("budget_remaining_ratio", DataType::Float64, false),
    ];
    fields.extend(
        BURN_WINDOWS
            .iter()
            .map(|(w, _)| f(&format!("burn_rate_{w}"), DataType::Float64, false)),
    );
    fields.push(f("alert", DataType::Utf8, false));
    Arc::new(Schema::new(fields))
});

fn status_batch(statuses: &[SloStatus]) -> datafusion::error::Result<RecordBatch> {
    let strings = |f: &dyn Fn(&SloStatus) -> String| -> ArrayRef {
        Arc::new(StringArray::from_iter_values(statuses.iter().map(f)))
    };
    let floats = |f: &dyn Fn(&SloStatus) -> Option<f64>| -> ArrayRef {
        Arc::new(Float64Array::from_iter(statuses.iter().map(f)))
    };
    let mut columns: Vec<ArrayRef> = vec![
        strings(&|s| s.config.name.clone()),
        strings(&|s| s.config.service.clone()),
        strings(&|s| s.config.kind.as_str().to_string()),
        floats(&|s| Some(s.config.objective)),
        Arc::new(Int64Array::from_iter_values(statuses.iter().map(|s| {
            i64::try_from(s.config.window.as_secs()).unwrap_or(i64::MAX)
        }))),
        strings(&|s| s.source.as_str().to_string()),
        floats(&|s| Some(s.counts.total)),
        floats(&|s| Some(s.counts.good)),
        floats(&|s| s.counts.sli()),
        floats(&|s| Some(s.budget.total)),
        floats(&|s| Some(s.budget.consumed)),
        floats(&|s| Some(s.budget.remaining)),
        floats(&|s| Some(s.budget.remaining_ratio)),
    ];
    for i in 0..BURN_WINDOWS.len() {
        columns.push(floats(&|s| s.burn_rates.get(i).map(|(_, b)| *b)));
    }
    columns.push(strings(&|s| s.alert.as_str().to_string()));
    Ok(RecordBatch::try_new(STATUS_SCHEMA.clone(), columns)?)
}

#[async_trait::async_trait]
impl TableProvider for SloStatusTable {
    fn schema(&self) -> SchemaRef {
        STATUS_SCHEMA.clone()
    }

    fn table_type(&self) -> TableType {
        TableType::Temporary
    }

    async fn scan(
        &self,
        state: &dyn Session,
        projection: Option<&Vec<usize>>,
        _filters: &[Expr],
        _limit: Option<usize>,
    ) -> datafusion::error::Result<Arc<dyn ExecutionPlan>> {
        let state = state
            .as_any()
            .downcast_ref::<SessionState>()
            .ok_or_else(|| DataFusionError::Internal("slo_status: unexpected session".into()))?;
        let ctx = SessionContext::new_with_state(state.clone());
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let statuses = self
            .eval
            .status(&ctx, &self.tenant, self.name.as_deref(), now)
            .await
            .map_err(|e| DataFusionError::Plan(e.to_string()))?;
        let batch = status_batch(&statuses)?;
        Ok(MemorySourceConfig::try_new_exec(
            &[vec![batch]],
            STATUS_SCHEMA.clone(),
            projection.cloned(),
        )?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(filter: Option<&str>, kind: SloKind, threshold: Option<&str>) -> SloConfig {
        SloConfig {
            name: "s".into(),
            tenant: "default".into(),
            service: "checkout".into(),
            filter: filter.map(str::to_string),
            objective: 0.99,
            kind,
            threshold: threshold.map(|t| humantime::parse_duration(t).unwrap()),
            window: Duration::from_secs(30 * 86_400),
            description: None,
        }
    }

    fn dim(route: Option<&str>, kind: i32, class: &str) -> Dim {
        Dim {
            service: Some("checkout".into()),
            name: Some("POST /api/checkout".into()),
            kind: Some(kind),
            class: class.into(),
            route: route.map(str::to_string),
        }
    }

    #[test]
    fn rollup_filters_follow_the_compiled_sql_semantics() {
        let slo = Slo::compile(config(
            Some(r#"{ span.http.route =~ "/api/checkout/.*" && kind = server }"#),
            SloKind::Availability,
            None,
        ))
        .unwrap();
        assert_eq!(slo.source(), SloSource::Rollups);
        let (f, _) = slo.rollup.as_ref().unwrap();
        assert_eq!(
            f.eval(&dim(Some("/api/checkout/pay"), 2, "2xx")),
            Some(true)
        );
        assert_eq!(f.eval(&dim(Some("/api/cart"), 2, "2xx")), Some(false));
        assert_eq!(
            f.eval(&dim(Some("/api/checkout/pay"), 3, "2xx")),
            Some(false)
        );
        // No route: unknown, so not counted; its negation is `IS NOT TRUE`, so counted.
        assert_eq!(f.eval(&dim(None, 2, "2xx")), None);
        let not = Slo::compile(config(
            Some(r#"{ !(span.http.route = "/x") && status != error }"#),
            SloKind::Availability,
            None,
        ))
        .unwrap();
        let (f, _) = not.rollup.as_ref().unwrap();
        assert_eq!(f.eval(&dim(None, 2, "5xx")), Some(true));
        assert_eq!(f.eval(&dim(Some("/x"), 2, "5xx")), Some(false));
        assert_eq!(f.eval(&dim(Some("/y"), 2, "error")), Some(false));
    }

    #[test]
    fn what_the_rollups_cannot_answer_goes_to_the_spans() {
        let on_ladder = Slo::compile(config(None, SloKind::Latency, Some("300ms"))).unwrap();
        assert_eq!(on_ladder.source(), SloSource::Rollups);
        let off_ladder = Slo::compile(config(None, SloKind::Latency, Some("330ms"))).unwrap();
        assert_eq!(off_ladder.source(), SloSource::Spans);
        let attribute = Slo::compile(config(
            Some(r#"{ span.http.request.method = "POST" }"#),
            SloKind::Availability,
            None,
        ))
        .unwrap();
        assert_eq!(attribute.source(), SloSource::Spans);
        let status_ok =
            Slo::compile(config(Some("{ status = ok }"), SloKind::Availability, None)).unwrap();
        assert_eq!(status_ok.source(), SloSource::Spans);
    }

    #[test]
    fn bad_definitions_say_what_to_fix() {
        let err = |c: SloConfig| Slo::compile(c).unwrap_err();
        let mut c = config(None, SloKind::Availability, None);
        c.objective = 1.0;
        assert!(err(c).contains("objective 1 must be between 0 and 1"));
        assert!(err(config(None, SloKind::Latency, None)).contains("needs a threshold"));
        assert!(err(config(None, SloKind::Availability, Some("1s"))).contains("only for latency"));
        assert!(err(config(Some("{ span.x = "), SloKind::Availability, None)).contains("filter"));
        assert!(err(config(
            Some("{ .a = 1 } >> { .b = 2 }"),
            SloKind::Availability,
            None
        ))
        .contains("one span filter"));
        assert!(err(config(
            Some("{ traceDuration > 1s }"),
            SloKind::Availability,
            None
        ))
        .contains("no trace-level"));
        let mut c = config(None, SloKind::Availability, None);
        c.window = Duration::from_secs(90);
        assert!(err(c).contains("whole minutes"));
        let mut c = config(None, SloKind::Availability, None);
        c.name = "a b".into();
        assert!(err(c).contains("name must"));
        let dup = vec![
            config(None, SloKind::Availability, None),
            config(None, SloKind::Availability, None),
        ];
        assert!(compile_all(&dup).unwrap_err().contains("defined twice"));
    }

    #[test]
    fn burn_rates_and_alert_states() {
        let slo = Slo::compile(config(None, SloKind::Availability, None)).unwrap();
        let c = |total: f64, bad: f64| Counts {
            total,
            good: total - bad,
        };
        // window, 5m, 30m, 1h, 6h, 1d, 3d; budget 1 %.
        let page = status_of(
            &slo,
            (0, 60),
            &[
                c(1000.0, 20.0),
                c(10.0, 2.0),
                c(10.0, 2.0),
                c(100.0, 15.0),
                c(100.0, 1.0),
                c(1.0, 0.0),
                c(1.0, 0.0),
            ],
        );
        assert_eq!(page.alert, AlertState::Page);
        assert!((page.burn_rates[0].1 - 20.0).abs() < 1e-9);
        assert!((page.budget.total - 10.0).abs() < 1e-9);
        assert!((page.budget.remaining + 10.0).abs() < 1e-9);
        assert!((page.budget.remaining_ratio + 1.0).abs() < 1e-9);
        let ticket = status_of(
            &slo,
            (0, 60),
            &[
                c(1000.0, 5.0),
                c(100.0, 1.0),
                c(100.0, 7.0),
                c(100.0, 10.0),
                c(100.0, 6.5),
                c(1.0, 0.0),
                c(1.0, 0.0),
            ],
        );
        assert_eq!(ticket.alert, AlertState::Ticket);
        let quiet = status_of(&slo, (0, 60), &[Counts::default(); 7]);
        assert_eq!(quiet.alert, AlertState::Ok);
        assert_eq!(quiet.counts.sli(), None);
        assert_eq!(quiet.budget.remaining_ratio, 1.0);
    }

    #[test]
    fn files_are_classified_against_interval_edges() {
        let m = MINUTE_NANOS;
        let intervals = [(0, 60 * m), (30 * m, 60 * m), (59 * m, 60 * m)];
        assert_eq!(classify((0, 10 * m), &intervals), (vec![0], false));
        assert_eq!(classify((20 * m, 40 * m), &intervals), (vec![0], true));
        assert_eq!(
            classify((59 * m, 59 * m), &intervals),
            (vec![0, 1, 2], false)
        );
        assert_eq!(classify((60 * m, 61 * m), &intervals), (vec![], false));
    }
}
