//! tracelake HTTP APIs for UIs and tools, served on `--http-addr` (default :3200).
//!
//! ```text
//!  GET  /api/traces/{id}     Tempo v1 trace by id: {"batches": [...]} or protobuf
//!  POST /api/sql             read-only SQL: JSON rows, CSV or Arrow IPC
//!  GET  /ready, /api/echo    readiness and Grafana's "Save & test"
//!  GET  /metrics             Prometheus text
//! ```
//!
//! Every endpoint reads the tenant from the `X-Scope-OrgID` header (default `default`).
//!
//! ```
//! use tracelake_ui_api::tenant_from_headers;
//! let mut headers = axum::http::HeaderMap::new();
//! assert_eq!(tenant_from_headers(&headers), "default");
//! headers.insert("x-scope-orgid", "acme".parse().unwrap());
//! assert_eq!(tenant_from_headers(&headers), "acme");
//! ```

mod error;
pub mod jaeger;
mod search;
mod sql;
mod tempo;
mod traces;

use std::sync::Arc;

use axum::extract::{MatchedPath, Request, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::IntoResponse;
use axum::routing::{get, post};
use axum::Router;
use prometheus_client::registry::Registry;
use tower_http::trace::TraceLayer;
use tracelake_query::QueryEngine;

pub use error::ApiError;

/// The header that selects the tenant.
pub const TENANT_HEADER: &str = "x-scope-orgid";

/// Shared state of the HTTP API.
#[derive(Clone)]
pub struct ApiState {
    /// The query engine.
    pub engine: Arc<QueryEngine>,
    /// The process's Prometheus registry, rendered at `/metrics`.
    pub registry: Arc<Registry>,
    /// The tail sampler's status and reload, when there is one.
    pub sampling: Option<Arc<dyn SamplingControl>>,
}

/// What the HTTP API can see and do of the tail sampler.
pub trait SamplingControl: Send + Sync + 'static {
    /// Rules, effective probabilities, buffer occupancy and counters, as JSON.
    fn status(&self) -> serde_json::Value;
    /// Reads the rules again (from the config file) and applies them. The error says what is
    /// wrong with the new rules; the old ones stay in force.
    fn reload(&self) -> Result<serde_json::Value, String>;
}

/// The tenant named by `X-Scope-OrgID`, or `default`.
pub fn tenant_from_headers(headers: &HeaderMap) -> String {
    headers
        .get(TENANT_HEADER)
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
        .filter(|v| !v.is_empty())
        .unwrap_or("default")
        .to_string()
}

/// The router of every endpoint on `--http-addr`.
pub fn router(state: ApiState) -> Router {
    Router::new()
        .route("/api/traces/{id}", get(traces::trace_by_id_v1))
        .route("/api/sql", post(sql::sql))
        .route("/api/sampling", get(sampling_status))
        .route("/api/sampling/reload", post(sampling_reload))
        .route("/api/echo", get(|| async { "echo" }))
        .route("/ready", get(|| async { "ready" }))
        .route("/metrics", get(metrics))
        .merge(tempo::routes())
        .merge(search::routes())
        .with_state(state)
        .layer(TraceLayer::new_for_http().make_span_with(|req: &Request| {
            let route = req
                .extensions()
                .get::<MatchedPath>()
                .map_or(req.uri().path(), MatchedPath::as_str);
            tracing::debug_span!("http", method = %req.method(), route = %route)
        }))
}

fn sampler(state: &ApiState) -> Result<&Arc<dyn SamplingControl>, ApiError> {
    state
        .sampling
        .as_ref()
        .ok_or_else(|| ApiError::NotFound("this server has no sampler".into()))
}

async fn sampling_status(State(state): State<ApiState>) -> Result<impl IntoResponse, ApiError> {
    Ok(axum::Json(sampler(&state)?.status()))
}

async fn sampling_reload(State(state): State<ApiState>) -> Result<impl IntoResponse, ApiError> {
    let sampler = Arc::clone(sampler(&state)?);
    // Reading and compiling the rules touches the file system: keep it off the IO threads.
    let result = tokio::task::spawn_blocking(move || sampler.reload())
        .await
        .map_err(|e| ApiError::Internal(format!("reload task: {e}")))?;
    match result {
        Ok(status) => Ok(axum::Json(status)),
        Err(message) => Err(ApiError::BadRequest(format!(
            "sampling rules not reloaded, the previous ones stay in force: {message}"
        ))),
    }
}

async fn metrics(State(state): State<ApiState>) -> impl IntoResponse {
    let mut body = String::new();
    match prometheus_client::encoding::text::encode(&mut body, &state.registry) {
        Ok(()) => (
            StatusCode::OK,
            [(
                header::CONTENT_TYPE,
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
            )],
            body,
        )
            .into_response(),
        Err(e) => ApiError::Internal(format!("encoding metrics: {e}")).into_response(),
    }
}

/// Serves `router` on an already-bound listener until `shutdown` resolves.
pub async fn serve(
    listener: tokio::net::TcpListener,
    state: ApiState,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, router(state))
        .with_graceful_shutdown(shutdown)
        .await
}
