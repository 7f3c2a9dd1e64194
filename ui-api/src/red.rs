//! `GET /api/metrics/red`: rate, error rate and latency quantiles of one service, per operation
//! or route, from the `span_metrics_1m` rollups.

use axum::extract::{Query, State};
use axum::http::HeaderMap;
use axum::Json;
use serde::{Deserialize, Serialize};
use tracelake_query::red::{RedGroupBy, RedPoint, RedRequest, RedSeries};
use utoipa::{IntoParams, ToSchema};

use crate::openapi::{ErrorBody, QueryErrors, TenantHeader};
use crate::search::{minute_step, now_secs, window_secs};
use crate::{tenant_from_headers, ApiError, ApiState};

/// The window when `start` is absent: the hour before `end`.
const DEFAULT_WINDOW_SECS: u64 = 3600;

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(rename_all = "camelCase")]
pub(crate) struct RedParams {
    /// The service (`service.name`); required.
    service: Option<String>,
    /// `operation` (span name, the default) or `route` (`http.route`).
    group_by: Option<String>,
    /// `server` (the default), `client`, `internal`, `producer`, `consumer`, or `all`.
    kind: Option<String>,
    /// Window start, unix seconds (default: an hour before `end`).
    start: Option<String>,
    /// Window end, unix seconds (default: now).
    end: Option<String>,
    /// Step between points: a duration in whole minutes (`1m`, `5m`, `1h`) or seconds
    /// (`300`). Default: the window / 60, rounded up to a minute.
    step: Option<String>,
}

impl RedParams {
    fn request(&self, now_secs: u64) -> Result<RedRequest, ApiError> {
        let service = self
            .service
            .as_deref()
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .ok_or_else(|| ApiError::BadRequest("service is required: ?service=<name>".into()))?
            .to_string();
        let group_by = match self.group_by.as_deref().map(str::trim) {
            None | Some("") | Some("operation") => RedGroupBy::Operation,
            Some("route") => RedGroupBy::Route,
            Some(other) => {
                return Err(ApiError::BadRequest(format!(
                    "invalid groupBy {other:?}: expected operation or route"
                )))
            }
        };
        let kind = match self.kind.as_deref().map(str::trim) {
            None | Some("") | Some("server") => Some(2),
            Some("all") => None,
            Some("internal") => Some(1),
            Some("client") => Some(3),
            Some("producer") => Some(4),
            Some("consumer") => Some(5),
            Some(other) => {
                return Err(ApiError::BadRequest(format!(
                    "invalid kind {other:?}: expected server, client, internal, producer, \
                     consumer or all"
                )))
            }
        };
        let (start, end) = window_secs(&self.start, &self.end, now_secs, DEFAULT_WINDOW_SECS)?;
        let step_secs = minute_step(&self.step, end.saturating_sub(start), 60)?;
        let request = RedRequest {
            service,
            group_by,
            kind,
            start_secs: start,
            end_secs: end,
            step_secs,
        };
        request.validate()?;
        Ok(request)
    }
}

/// Rate, error rate and latency quantiles over a step (or the whole window).
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub(crate) struct RedPointJson {
    /// Start of the step (for totals, of the window), unix seconds.
    #[schema(example = 1714564800)]
    timestamp: u64,
    /// Spans before sampling (Σ adjusted_count).
    #[schema(example = 1200.0)]
    count: f64,
    /// Spans per second.
    #[schema(example = 20.0)]
    rate: f64,
    /// Error spans (status ERROR or HTTP status ≥ 500) / spans.
    #[schema(example = 0.01)]
    error_rate: f64,
    /// Median duration, milliseconds.
    #[schema(example = 12.5)]
    p50: Option<f64>,
    /// 90th percentile duration, milliseconds.
    #[schema(example = 48.0)]
    p90: Option<f64>,
    /// 99th percentile duration, milliseconds.
    #[schema(example = 210.0)]
    p99: Option<f64>,
}

impl From<&RedPoint> for RedPointJson {
    fn from(p: &RedPoint) -> Self {
        Self {
            timestamp: p.timestamp_secs,
            count: p.count,
            rate: p.rate,
            error_rate: p.error_rate,
            p50: p.p50_ms,
            p90: p.p90_ms,
            p99: p.p99_ms,
        }
    }
}

/// One operation's or route's series.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct RedSeriesJson {
    /// The span name or route (`""` for spans without a route).
    #[schema(example = "GET /cart")]
    group: String,
    /// The whole window.
    total: RedPointJson,
    /// One point per step with spans, oldest first (steps without spans are left out).
    points: Vec<RedPointJson>,
}

/// The reply of `/api/metrics/red`.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub(crate) struct RedResponse {
    /// The service asked for.
    service: String,
    /// `operation` or `route`.
    group_by: String,
    /// Window start, unix seconds.
    start: u64,
    /// Window end, unix seconds.
    end: u64,
    /// Seconds per point.
    step: u64,
    /// One series per operation or route, by name.
    series: Vec<RedSeriesJson>,
}

/// `GET /api/metrics/red`.
#[utoipa::path(
    get,
    path = "/api/metrics/red",
    tag = "metrics",
    summary = "RED metrics of a service: rate, error rate, p50/p90/p99",
    description = "Per operation (span name) or per route, from the per-minute rollups written \
                   at flush (so the newest seconds appear after the next flush). Counts are \
                   weighted by `adjusted_count`, so rates stay right under sampling; quantiles \
                   come from merged DDSketches (1 % relative accuracy).",
    params(RedParams, TenantHeader),
    responses(
        (status = 200, description = "The series", body = RedResponse),
        (status = 400, description = "A missing service, or an invalid groupBy, kind, window or step; the message says which", body = ErrorBody),
        QueryErrors,
    )
)]
pub(crate) async fn red(
    State(state): State<ApiState>,
    Query(params): Query<RedParams>,
    headers: HeaderMap,
) -> Result<Json<RedResponse>, ApiError> {
    let tenant = tenant_from_headers(&headers);
    let request = params.request(now_secs())?;
    let series = state.engine.red(&tenant, request.clone()).await?;
    Ok(Json(RedResponse {
        service: request.service,
        group_by: match request.group_by {
            RedGroupBy::Operation => "operation".into(),
            RedGroupBy::Route => "route".into(),
        },
        start: request.start_secs,
        end: request.end_secs,
        step: request.step_secs,
        series: series.iter().map(series_json).collect(),
    }))
}

fn series_json(s: &RedSeries) -> RedSeriesJson {
    RedSeriesJson {
        group: s.group.clone(),
        total: (&s.total).into(),
        points: s.points.iter().map(RedPointJson::from).collect(),
    }
}
