//! tracelake HTTP APIs for UIs and tools, served on `--http-addr` (default :3200).
//!
//! ```text
//!  GET  /api/traces/{id}     Tempo v1 trace by id: {"batches": [...]} or protobuf
//!  GET  /api/search, /api/v2/traces/{id}, tags, tag values, buildinfo   (Tempo, see `tempo`)
//!  GET  /api/metrics/query_range, /api/metrics/query   TraceQL metrics (Tempo, see `tempo`)
//!  GET  /api/metrics/red, /api/service-graph   RED series and service graph from the rollups
//!  POST /api/sql             read-only SQL: JSON rows, CSV or Arrow IPC
//!  GET  /api/sampling, POST /api/sampling/reload   the tail sampler's status and rules
//!  GET  /api/slo, /api/slo/{name}, /api/slo/{name}/series, POST /api/slo/reload   SLOs
//!  GET  /ready, /api/echo    readiness and Grafana's "Save & test"
//!  GET  /metrics             Prometheus text
//!  GET  /api/openapi.json    the OpenAPI 3 document of all of the above ([`openapi`])
//! ```
//!
//! Every endpoint reads the tenant from the `X-Scope-OrgID` header (default `default`).
//! Routes are registered with `utoipa_axum::routes!` from each handler's `#[utoipa::path]`
//! annotation, so the router and the OpenAPI document cannot disagree.
//!
//! ```
//! use tracelake_ui_api::tenant_from_headers;
//! let mut headers = axum::http::HeaderMap::new();
//! assert_eq!(tenant_from_headers(&headers), "default");
//! headers.insert("x-scope-orgid", "acme".parse().unwrap());
//! assert_eq!(tenant_from_headers(&headers), "acme");
//! ```

mod auth;
mod error;
pub mod flight;
mod graph;
pub mod jaeger;
mod openapi;
pub mod pg;
mod red;
mod search;
mod slo;
mod sql;
mod tempo;
mod traces;

use std::sync::{Arc, OnceLock};

use axum::extract::{MatchedPath, Request, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::IntoResponse;
use axum::Router;
use prometheus_client::registry::Registry;
use tower_http::trace::TraceLayer;
use tracelake_query::QueryEngine;
use utoipa::OpenApi as _;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::openapi::ErrorBody;

pub use auth::SqlAuth;
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
    /// Reads the SLO definitions again (from the config file): how many are now in force,
    /// or what is wrong with them (the old ones stay).
    pub slo_reload: Option<Arc<SloReload>>,
}

/// See [`ApiState::slo_reload`].
pub type SloReload = dyn Fn() -> Result<usize, String> + Send + Sync;

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

/// The document's fixed parts; the paths come from the handlers.
#[derive(utoipa::OpenApi)]
#[openapi(
    info(
        title = "tracelake HTTP API (--http-addr)",
        description = "The Tempo query API (Grafana's Tempo data source), read-only SQL, the tail \
                       sampler, probes and metrics. Every endpoint that reads data takes the \
                       tenant from the `X-Scope-OrgID` header (default `default`). The Jaeger \
                       query API is served on `--jaeger-addr`, with its own document at \
                       `/api/openapi.json` there."
    ),
    tags(
        (name = "tempo", description = "Grafana Tempo's HTTP API"),
        (name = "sql", description = "Read-only SQL over the spans table"),
        (name = "metrics", description = "RED metrics and SLOs from the per-minute rollups, and the service graph"),
        (name = "sampling", description = "The tail sampler"),
        (name = "ops", description = "Probes, metrics and this document")
    )
)]
struct HttpApiDoc;

/// Every route on `--http-addr`, each with its documentation.
fn routes() -> OpenApiRouter<ApiState> {
    OpenApiRouter::with_openapi(HttpApiDoc::openapi())
        .routes(routes!(traces::trace_by_id_v1))
        .routes(routes!(sql::sql))
        .routes(routes!(red::red))
        .routes(routes!(graph::service_graph))
        .routes(routes!(slo::list))
        .routes(routes!(slo::one))
        .routes(routes!(slo::series))
        .routes(routes!(slo::reload))
        .routes(routes!(sampling_status))
        .routes(routes!(sampling_reload))
        .routes(routes!(echo))
        .routes(routes!(ready))
        .routes(routes!(metrics))
        .routes(routes!(openapi_json))
        .merge(tempo::routes())
        .merge(search::routes())
}

/// The OpenAPI 3 document of every endpoint on `--http-addr`, as served at
/// `GET /api/openapi.json`.
pub fn openapi() -> utoipa::openapi::OpenApi {
    routes().into_openapi()
}

/// The router of every endpoint on `--http-addr`.
pub fn router(state: ApiState) -> Router {
    serving(routes(), state, "http")
}

/// A listener's routes with their state and a request span (`listener`, method, route).
pub(crate) fn serving(
    routes: utoipa_axum::router::OpenApiRouter<ApiState>,
    state: ApiState,
    listener: &'static str,
) -> Router {
    let (router, _) = routes.split_for_parts();
    router
        .with_state(state)
        .layer(
            TraceLayer::new_for_http().make_span_with(move |req: &Request| {
                let route = req
                    .extensions()
                    .get::<MatchedPath>()
                    .map_or(req.uri().path(), MatchedPath::as_str);
                tracing::debug_span!("request", listener, method = %req.method(), route = %route)
            }),
        )
}

fn sampler(state: &ApiState) -> Result<&Arc<dyn SamplingControl>, ApiError> {
    state
        .sampling
        .as_ref()
        .ok_or_else(|| ApiError::NotFound("this server has no sampler".into()))
}

/// `GET /api/openapi.json`: this listener's OpenAPI document.
#[utoipa::path(
    get,
    path = "/api/openapi.json",
    tag = "ops",
    summary = "This OpenAPI 3 document",
    responses((
        status = 200,
        description = "The OpenAPI 3 document of every endpoint on `--http-addr`",
        body = Object,
        content_type = "application/json"
    ))
)]
async fn openapi_json() -> axum::Json<&'static utoipa::openapi::OpenApi> {
    static DOCUMENT: OnceLock<utoipa::openapi::OpenApi> = OnceLock::new();
    axum::Json(DOCUMENT.get_or_init(openapi))
}

/// `GET /api/echo`: Grafana's "Save & test" of a Tempo data source.
#[utoipa::path(
    get,
    path = "/api/echo",
    tag = "ops",
    summary = "Connection test (Grafana's \"Save & test\")",
    responses((status = 200, description = "The word `echo`", body = String, content_type = "text/plain", example = "echo"))
)]
async fn echo() -> &'static str {
    "echo"
}

/// `GET /ready`: the server accepts requests.
#[utoipa::path(
    get,
    path = "/ready",
    tag = "ops",
    summary = "Readiness probe",
    responses((status = 200, description = "The word `ready`", body = String, content_type = "text/plain", example = "ready"))
)]
async fn ready() -> &'static str {
    "ready"
}

/// `GET /api/sampling`: the tail sampler's status.
#[utoipa::path(
    get,
    path = "/api/sampling",
    tag = "sampling",
    summary = "Tail sampler status",
    description = "Rules, effective probabilities, buffer occupancy and counters of the tail sampler.",
    responses(
        (status = 200, description = "The sampler's status (free-form JSON)", body = Object, content_type = "application/json"),
        (status = 404, description = "This server runs without a tail sampler", body = ErrorBody),
    )
)]
async fn sampling_status(State(state): State<ApiState>) -> Result<impl IntoResponse, ApiError> {
    Ok(axum::Json(sampler(&state)?.status()))
}

/// `POST /api/sampling/reload`: reads the sampling rules again and applies them.
#[utoipa::path(
    post,
    path = "/api/sampling/reload",
    tag = "sampling",
    summary = "Reload the sampling rules",
    description = "Reads the rules again from the config file and applies them. Invalid rules \
                   are rejected and the previous ones stay in force.",
    responses(
        (status = 200, description = "The sampler's status with the new rules (free-form JSON)", body = Object, content_type = "application/json"),
        (status = 400, description = "The new rules are invalid; the message says why", body = ErrorBody),
        (status = 404, description = "This server runs without a tail sampler", body = ErrorBody),
        (status = 500, description = "Internal error", body = ErrorBody),
    )
)]
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

/// `GET /metrics`: the process's metrics.
#[utoipa::path(
    get,
    path = "/metrics",
    tag = "ops",
    summary = "Prometheus metrics",
    responses(
        (status = 200, description = "OpenMetrics text", body = String, content_type = "application/openmetrics-text; version=1.0.0; charset=utf-8"),
        (status = 500, description = "Internal error", body = ErrorBody),
    )
)]
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
    serve_router(listener, router(state), shutdown).await
}

/// Serves `router` on `listener` until `shutdown` resolves, finishing requests in flight.
pub(crate) async fn serve_router(
    listener: tokio::net::TcpListener,
    router: Router,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, router)
        .with_graceful_shutdown(shutdown)
        .await
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use utoipa::openapi::path::Operation;

    use super::*;

    /// `(in, name)` of each parameter of `op`.
    fn parameters(op: &Operation) -> BTreeSet<(String, String)> {
        let json = serde_json::to_value(op).unwrap();
        json["parameters"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|p| {
                let text = |k: &str| p[k].as_str().unwrap_or_default().to_string();
                (text("in"), text("name"))
            })
            .collect()
    }

    fn operations(item: &utoipa::openapi::PathItem) -> Vec<(&'static str, &Operation)> {
        [
            ("get", &item.get),
            ("post", &item.post),
            ("put", &item.put),
            ("delete", &item.delete),
            ("patch", &item.patch),
        ]
        .into_iter()
        .filter_map(|(m, op)| op.as_ref().map(|op| (m, op)))
        .collect()
    }

    /// The router's real paths (as axum matches them) are exactly the document's paths, on
    /// both listeners, and every operation documents its path parameters and a 200.
    #[test]
    fn every_route_is_documented() {
        for (listener, routes, expected) in [
            ("--http-addr", routes(), 23),
            ("--jaeger-addr", jaeger::routes(), 11),
        ] {
            let (router, doc) = routes.split_for_parts();
            let routed = openapi::router_paths(&router);
            let documented: BTreeSet<String> = doc.paths.paths.keys().cloned().collect();
            assert_eq!(routed.len(), expected, "{listener}: {routed:?}");
            assert_eq!(routed, documented, "{listener}");
            for (path, item) in &doc.paths.paths {
                let ops = operations(item);
                assert!(!ops.is_empty(), "{listener} {path}: no operation");
                for (method, op) in ops {
                    let path_params: BTreeSet<String> = parameters(op)
                        .into_iter()
                        .filter(|(at, _)| at == "path")
                        .map(|(_, name)| name)
                        .collect();
                    let in_template: BTreeSet<String> = path
                        .split('/')
                        .filter_map(|s| s.strip_prefix('{')?.strip_suffix('}'))
                        .map(str::to_string)
                        .collect();
                    assert_eq!(path_params, in_template, "{listener} {method} {path}");
                    assert!(
                        op.responses.responses.contains_key("200"),
                        "{listener} {method} {path}: no 200"
                    );
                    assert!(
                        op.summary.is_some(),
                        "{listener} {method} {path}: no summary"
                    );
                }
            }
        }
    }

    /// The check above notices a route added without documentation.
    #[test]
    fn an_undocumented_route_is_noticed() {
        let (router, doc) = routes()
            .route("/api/undocumented", axum::routing::get(|| async { "" }))
            .split_for_parts();
        let routed = openapi::router_paths(&router);
        assert!(routed.contains("/api/undocumented"));
        assert!(!doc.paths.paths.contains_key("/api/undocumented"));
    }

    /// Data endpoints document the tenant header; the document serializes as OpenAPI 3.
    #[test]
    fn tenant_header_and_version() {
        for doc in [openapi(), jaeger::openapi()] {
            let json = serde_json::to_value(&doc).unwrap();
            assert!(
                json["openapi"].as_str().unwrap().starts_with("3."),
                "{json}"
            );
            for path in ["/api/traces/{id}", "/api/openapi.json"] {
                let op = doc.paths.paths[path].get.as_ref().unwrap();
                let tenant =
                    parameters(op).contains(&("header".to_string(), "X-Scope-OrgID".to_string()));
                assert_eq!(tenant, path != "/api/openapi.json", "{path}");
            }
        }
    }
}
