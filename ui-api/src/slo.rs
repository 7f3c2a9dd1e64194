//! `GET /api/slo`, `/api/slo/{name}`, `/api/slo/{name}/series` and `POST /api/slo/reload`:
//! the SLOs of the config file with their SLI, error budget, burn rates and alert state (see
//! `tracelake_query::slo`).

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::http::HeaderMap;
use axum::Json;
use serde::{Deserialize, Serialize};
use tracelake_query::slo::{SloConfig, SloSeries, SloStatus};
use utoipa::{IntoParams, ToSchema};

use crate::openapi::{ErrorBody, QueryErrors, TenantHeader};
use crate::search::{minute_step, now_secs, number, window_secs};
use crate::{tenant_from_headers, ApiError, ApiState};

/// The definition as configured.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub(crate) struct SloDefinitionJson {
    #[schema(example = "checkout-availability")]
    name: String,
    #[schema(example = "checkout")]
    service: String,
    /// The TraceQL span filter, if any.
    #[schema(example = "{ span.http.route =~ \"/api/checkout/.*\" && kind = server }")]
    #[serde(skip_serializing_if = "Option::is_none")]
    filter: Option<String>,
    /// `availability` or `latency`.
    #[schema(example = "availability")]
    kind: String,
    #[schema(example = 0.999)]
    objective: f64,
    /// Latency SLOs: the threshold, e.g. `300ms`.
    #[serde(skip_serializing_if = "Option::is_none")]
    threshold: Option<String>,
    /// The compliance window, e.g. `30days`.
    #[schema(example = "30days")]
    window: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    description: Option<String>,
}

impl From<&SloConfig> for SloDefinitionJson {
    fn from(c: &SloConfig) -> Self {
        Self {
            name: c.name.clone(),
            service: c.service.clone(),
            filter: c.filter.clone(),
            kind: c.kind.as_str().to_string(),
            objective: c.objective,
            threshold: c
                .threshold
                .map(|t| humantime::format_duration(t).to_string()),
            window: humantime::format_duration(c.window).to_string(),
            description: c.description.clone(),
        }
    }
}

/// The error budget over the SLO window, in events (weighted spans).
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub(crate) struct ErrorBudgetJson {
    /// (1 - objective) × events.
    #[schema(example = 120.0)]
    total: f64,
    /// Bad events.
    #[schema(example = 30.0)]
    consumed: f64,
    /// total - consumed; negative once the budget is exhausted.
    #[schema(example = 90.0)]
    remaining: f64,
    /// remaining / total (1 without events).
    #[schema(example = 0.75)]
    remaining_ratio: f64,
}

/// The alert state of the multi-window, multi-burn-rate rules.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct AlertJson {
    /// `page` (burn rate ≥ 14.4 over 1h and 5m), `ticket` (≥ 6 over 6h and 30m) or `ok`.
    #[schema(example = "ok")]
    state: String,
    /// Which rule fired, in words.
    #[schema(example = "burn rate below 6 over 6h or 30m")]
    reason: String,
}

/// One SLO's state now (or at `time`).
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub(crate) struct SloStatusJson {
    definition: SloDefinitionJson,
    /// `rollups` (span_metrics_1m) or `spans` (when the rollups cannot answer exactly).
    #[schema(example = "rollups")]
    source: String,
    /// The SLO window, unix seconds: whole minutes, up to the end of the current minute.
    #[schema(example = 1712000000)]
    window_start: u64,
    #[schema(example = 1714592000)]
    window_end: u64,
    /// Events (Σ adjusted_count) in the window.
    #[schema(example = 120000.0)]
    total: f64,
    /// Good events.
    #[schema(example = 119970.0)]
    good: f64,
    /// Bad events.
    #[schema(example = 30.0)]
    bad: f64,
    /// good / total; null without events.
    #[schema(example = 0.99975)]
    sli: Option<f64>,
    error_budget: ErrorBudgetJson,
    /// Burn rate over 5m, 30m, 1h, 6h, 1d and 3d: the error rate over the budget's
    /// (1 - objective); 1 spends the budget exactly over the window.
    burn_rates: BTreeMap<String, f64>,
    alert: AlertJson,
}

fn status_json(s: &SloStatus) -> SloStatusJson {
    let burn = |w: &str| s.burn_rate(w);
    let reason = match s.alert {
        tracelake_query::slo::AlertState::Page => format!(
            "burn rate {:.1} over 1h and {:.1} over 5m, both at least {}",
            burn("1h"),
            burn("5m"),
            tracelake_query::slo::PAGE_BURN_RATE
        ),
        tracelake_query::slo::AlertState::Ticket => format!(
            "burn rate {:.1} over 6h and {:.1} over 30m, both at least {}",
            burn("6h"),
            burn("30m"),
            tracelake_query::slo::TICKET_BURN_RATE
        ),
        tracelake_query::slo::AlertState::Ok => "no burn-rate rule fires".to_string(),
    };
    SloStatusJson {
        definition: (&s.config).into(),
        source: s.source.as_str().to_string(),
        window_start: s.window.0,
        window_end: s.window.1,
        total: s.counts.total,
        good: s.counts.good,
        bad: s.counts.bad(),
        sli: s.counts.sli(),
        error_budget: ErrorBudgetJson {
            total: s.budget.total,
            consumed: s.budget.consumed,
            remaining: s.budget.remaining,
            remaining_ratio: s.budget.remaining_ratio,
        },
        burn_rates: s
            .burn_rates
            .iter()
            .map(|(n, b)| (n.to_string(), *b))
            .collect(),
        alert: AlertJson {
            state: s.alert.as_str().to_string(),
            reason,
        },
    }
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub(crate) struct AtParams {
    /// Evaluate as of this instant, unix seconds (default: now).
    time: Option<String>,
}

/// The reply of `GET /api/slo`.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct SloListJson {
    /// Every SLO of the tenant, in config order.
    slos: Vec<SloStatusJson>,
}

/// `GET /api/slo`.
#[utoipa::path(
    get,
    path = "/api/slo",
    tag = "metrics",
    summary = "Every SLO: SLI, error budget, burn rates and alert state",
    description = "The `[[slo]]` entries of the config file for the tenant. Counts are weighted \
                   by `adjusted_count`, so they stay unbiased under tail sampling.",
    params(AtParams, TenantHeader),
    responses(
        (status = 200, description = "The SLOs", body = SloListJson),
        (status = 400, description = "An invalid time", body = ErrorBody),
        QueryErrors,
    )
)]
pub(crate) async fn list(
    State(state): State<ApiState>,
    Query(params): Query<AtParams>,
    headers: HeaderMap,
) -> Result<Json<SloListJson>, ApiError> {
    let at = number::<u64>("time", &params.time)?.unwrap_or_else(now_secs);
    let statuses = state
        .engine
        .slo_status(&tenant_from_headers(&headers), None, at)
        .await?;
    Ok(Json(SloListJson {
        slos: statuses.iter().map(status_json).collect(),
    }))
}

/// `GET /api/slo/{name}`.
#[utoipa::path(
    get,
    path = "/api/slo/{name}",
    tag = "metrics",
    summary = "One SLO: SLI, error budget, burn rates and alert state",
    params(("name" = String, Path, description = "The SLO name"), AtParams, TenantHeader),
    responses(
        (status = 200, description = "The SLO", body = SloStatusJson),
        (status = 400, description = "An invalid time", body = ErrorBody),
        (status = 404, description = "No SLO of that name for the tenant", body = ErrorBody),
        QueryErrors,
    )
)]
pub(crate) async fn one(
    State(state): State<ApiState>,
    Path(name): Path<String>,
    Query(params): Query<AtParams>,
    headers: HeaderMap,
) -> Result<Json<SloStatusJson>, ApiError> {
    let at = number::<u64>("time", &params.time)?.unwrap_or_else(now_secs);
    let statuses = state
        .engine
        .slo_status(&tenant_from_headers(&headers), Some(&name), at)
        .await?;
    statuses
        .first()
        .map(|s| Json(status_json(s)))
        .ok_or_else(|| ApiError::NotFound(format!("no SLO named {name:?}")))
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub(crate) struct SeriesParams {
    /// Start, unix seconds (default: a day before `end`); rounded down to the minute.
    start: Option<String>,
    /// End, unix seconds (default: now).
    end: Option<String>,
    /// Step: whole minutes (`5m`, `1h`) or seconds (`300`). Default: the window / 100, rounded
    /// up to a minute.
    step: Option<String>,
}

/// One step of the series.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub(crate) struct SloPointJson {
    /// Start of the step, unix seconds.
    #[schema(example = 1714564800)]
    timestamp: u64,
    /// Events in the step.
    total: f64,
    /// Good events in the step.
    good: f64,
    /// good / total; null without events.
    sli: Option<f64>,
    /// The step's burn rate (0 without events).
    burn_rate: f64,
}

/// The reply of `GET /api/slo/{name}/series`.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub(crate) struct SloSeriesJson {
    definition: SloDefinitionJson,
    /// `rollups` or `spans`.
    source: String,
    /// Seconds per step.
    step: u64,
    /// One point per step, oldest first, empty steps included.
    points: Vec<SloPointJson>,
}

fn series_json(s: &SloSeries) -> SloSeriesJson {
    SloSeriesJson {
        definition: (&s.config).into(),
        source: s.source.as_str().to_string(),
        step: s.step_secs,
        points: s
            .points
            .iter()
            .map(|p| SloPointJson {
                timestamp: p.timestamp_secs,
                total: p.counts.total,
                good: p.counts.good,
                sli: p.counts.sli(),
                burn_rate: p.burn_rate,
            })
            .collect(),
    }
}

/// `GET /api/slo/{name}/series`.
#[utoipa::path(
    get,
    path = "/api/slo/{name}/series",
    tag = "metrics",
    summary = "An SLO's SLI and burn rate per step (the service health trend)",
    params(("name" = String, Path, description = "The SLO name"), SeriesParams, TenantHeader),
    responses(
        (status = 200, description = "The series", body = SloSeriesJson),
        (status = 400, description = "An invalid window or step; the message says which", body = ErrorBody),
        (status = 404, description = "No SLO of that name for the tenant", body = ErrorBody),
        QueryErrors,
    )
)]
pub(crate) async fn series(
    State(state): State<ApiState>,
    Path(name): Path<String>,
    Query(params): Query<SeriesParams>,
    headers: HeaderMap,
) -> Result<Json<SloSeriesJson>, ApiError> {
    let (start, end) = window_secs(&params.start, &params.end, now_secs(), 86_400)?;
    let step = minute_step(&params.step, end.saturating_sub(start), 100)?;
    let series = state
        .engine
        .slo_series(&tenant_from_headers(&headers), &name, start, end, step)
        .await?;
    Ok(Json(series_json(&series)))
}

/// The reply of `POST /api/slo/reload`.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct ReloadJson {
    reloaded: bool,
    /// SLOs now in force, over all tenants.
    #[schema(example = 2)]
    slos: usize,
}

/// `POST /api/slo/reload`.
#[utoipa::path(
    post,
    path = "/api/slo/reload",
    tag = "metrics",
    summary = "Reload the SLO definitions",
    description = "Reads the `[[slo]]` entries of the config file again (the server also does \
                   when the file changes). Invalid definitions are rejected and the previous \
                   ones stay in force.",
    responses(
        (status = 200, description = "The SLOs in force", body = ReloadJson),
        (status = 400, description = "The new definitions are invalid, or there is no config file; the message says why", body = ErrorBody),
        (status = 404, description = "This server cannot reload SLOs", body = ErrorBody),
        (status = 500, description = "Internal error", body = ErrorBody),
    )
)]
pub(crate) async fn reload(State(state): State<ApiState>) -> Result<Json<ReloadJson>, ApiError> {
    let reload = state
        .slo_reload
        .as_ref()
        .map(Arc::clone)
        .ok_or_else(|| ApiError::NotFound("this server cannot reload SLOs".into()))?;
    // Reading and compiling touches the file system: keep it off the IO threads.
    let result = tokio::task::spawn_blocking(move || reload())
        .await
        .map_err(|e| ApiError::Internal(format!("reload task: {e}")))?;
    match result {
        Ok(slos) => Ok(Json(ReloadJson {
            reloaded: true,
            slos,
        })),
        Err(message) => Err(ApiError::BadRequest(format!(
            "SLOs not reloaded, the previous ones stay in force: {message}"
        ))),
    }
}
