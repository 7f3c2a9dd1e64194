//! Tempo API endpoints besides search: trace by id v2, tags and tag values, build info, and
//! TraceQL metrics.
//!
//! ```text
//!  GET /api/v2/traces/{id}                  TraceByIDResponse, protobuf or JSON by Accept
//!  GET /api/search/tags?scope=              {"tagNames": [...]}
//!  GET /api/v2/search/tags?scope=           {"scopes": [{"name", "tags"}]}
//!  GET /api/search/tag/{tag}/values         {"tagValues": ["..."]}
//!  GET /api/v2/search/tag/{tag}/values?q=   {"tagValues": [{"type", "value"}]}
//!  GET /api/status/buildinfo                {"version", "revision", "branch", ...}
//!  GET /api/metrics/query_range?q&start&end&step   TraceQL metrics: {"series": [{labels,
//!                                           promLabels, samples: [{timestampMs, value}]}]}
//!  GET /api/metrics/query?q&start&end       the instant form: one value per series
//! ```

mod metrics;
mod proto;
mod tag_name;
mod tags;
mod trace_v2;

use serde::Serialize;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::ApiState;

/// The routes of this module, merged into the `--http-addr` router.
pub(crate) fn routes() -> OpenApiRouter<ApiState> {
    OpenApiRouter::new()
        .routes(routes!(trace_v2::trace_by_id_v2))
        .routes(routes!(tags::tags_v1))
        .routes(routes!(tags::tags_v2))
        .routes(routes!(tags::tag_values_v1))
        .routes(routes!(tags::tag_values_v2))
        .routes(routes!(build_info))
        .routes(routes!(metrics::query_range))
        .routes(routes!(metrics::query_instant))
}

/// Tempo's build information shape (Prometheus `common/version` fields, camelCase).
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
struct BuildInfo {
    /// tracelake's version.
    #[schema(example = "0.1.0")]
    version: &'static str,
    /// The commit built, or `unknown`.
    revision: &'static str,
    /// The branch built, or `unknown`.
    branch: &'static str,
    /// Who built it, or `unknown`.
    build_user: &'static str,
    /// When it was built, or `unknown`.
    build_date: &'static str,
    /// Tempo reports its Go version here; tracelake is not written in Go.
    #[schema(example = "none (rust)")]
    go_version: &'static str,
}

/// `GET /api/status/buildinfo`. Revision, branch, user and date come from the
/// `TRACELAKE_BUILD_REVISION`, `_BRANCH`, `_USER` and `_DATE` environment variables at compile
/// time, when set.
#[utoipa::path(
    get,
    path = "/api/status/buildinfo",
    tag = "tempo",
    summary = "Build information (Tempo's shape)",
    responses((status = 200, description = "Version and build details", body = BuildInfo))
)]
async fn build_info() -> axum::Json<BuildInfo> {
    axum::Json(BuildInfo {
        version: env!("CARGO_PKG_VERSION"),
        revision: option_env!("TRACELAKE_BUILD_REVISION").unwrap_or("unknown"),
        branch: option_env!("TRACELAKE_BUILD_BRANCH").unwrap_or("unknown"),
        build_user: option_env!("TRACELAKE_BUILD_USER").unwrap_or("unknown"),
        build_date: option_env!("TRACELAKE_BUILD_DATE").unwrap_or("unknown"),
        go_version: "none (rust)",
    })
}
