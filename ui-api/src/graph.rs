//! `GET /api/service-graph`: parent -> child service edges over a window, with call and error
//! counts weighted by `adjusted_count` (the same edges as Jaeger's `/api/dependencies`).

use axum::extract::{Query, State};
use axum::http::HeaderMap;
use axum::Json;
use serde::{Deserialize, Serialize};
use tracelake_query::TimeRange;
use utoipa::{IntoParams, ToSchema};

use crate::openapi::{ErrorBody, QueryErrors, TenantHeader};
use crate::search::{now_secs, window_secs};
use crate::{tenant_from_headers, ApiError, ApiState};

/// The window when `start` is absent: the hour before `end`.
const DEFAULT_WINDOW_SECS: u64 = 3600;

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub(crate) struct GraphParams {
    /// Window start, unix seconds (default: an hour before `end`).
    start: Option<String>,
    /// Window end, unix seconds (default: now).
    end: Option<String>,
}

/// One caller -> callee edge.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub(crate) struct Edge {
    /// The calling service.
    #[schema(example = "frontend")]
    parent: String,
    /// The called service.
    #[schema(example = "cart")]
    child: String,
    /// Calls (child spans whose parent span is of the other service), Σ adjusted_count.
    #[schema(example = 1200.0)]
    calls: f64,
    /// Calls whose child span failed (status ERROR or HTTP status ≥ 500), Σ adjusted_count.
    #[schema(example = 12.0)]
    errors: f64,
    /// errors / calls.
    #[schema(example = 0.01)]
    error_rate: f64,
}

/// The reply of `/api/service-graph`.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct ServiceGraph {
    /// Window start, unix seconds.
    start: u64,
    /// Window end, unix seconds.
    end: u64,
    /// Every service on an edge, sorted.
    services: Vec<String>,
    /// The edges, by parent then child.
    edges: Vec<Edge>,
}

/// `GET /api/service-graph`.
#[utoipa::path(
    get,
    path = "/api/service-graph",
    tag = "metrics",
    summary = "Service graph: caller -> callee edges with weighted call and error counts",
    description = "Edges from spans starting in the window whose parent span (found in the same \
                   window) belongs to another service. Counts are weighted by `adjusted_count`, \
                   so they stay right under sampling.",
    params(GraphParams, TenantHeader),
    responses(
        (status = 200, description = "The graph", body = ServiceGraph),
        (status = 400, description = "An invalid start or end; the message says which", body = ErrorBody),
        QueryErrors,
    )
)]
pub(crate) async fn service_graph(
    State(state): State<ApiState>,
    Query(params): Query<GraphParams>,
    headers: HeaderMap,
) -> Result<Json<ServiceGraph>, ApiError> {
    let tenant = tenant_from_headers(&headers);
    let (start, end) = window_secs(&params.start, &params.end, now_secs(), DEFAULT_WINDOW_SECS)?;
    if end <= start {
        return Err(ApiError::BadRequest(format!(
            "end ({end}) must be after start ({start})"
        )));
    }
    let window = TimeRange {
        start_unix_nano: start.saturating_mul(1_000_000_000),
        end_unix_nano: end.saturating_mul(1_000_000_000).saturating_sub(1),
    };
    let dependencies = state.engine.jaeger_dependencies(&tenant, window).await?;
    let mut services: Vec<String> = dependencies
        .iter()
        .flat_map(|d| [d.parent.clone(), d.child.clone()])
        .collect();
    services.sort();
    services.dedup();
    let edges = dependencies
        .into_iter()
        .map(|d| Edge {
            error_rate: if d.calls > 0.0 {
                d.errors / d.calls
            } else {
                0.0
            },
            parent: d.parent,
            child: d.child,
            calls: d.calls,
            errors: d.errors,
        })
        .collect();
    Ok(Json(ServiceGraph {
        start,
        end,
        services,
        edges,
    }))
}
