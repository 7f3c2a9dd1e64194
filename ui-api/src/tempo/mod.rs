//! Tempo API endpoints besides search: trace by id v2, tags and tag values, build info.
//!
//! ```text
//!  GET /api/v2/traces/{id}                  TraceByIDResponse, protobuf or JSON by Accept
//!  GET /api/search/tags?scope=              {"tagNames": [...]}
//!  GET /api/v2/search/tags?scope=           {"scopes": [{"name", "tags"}]}
//!  GET /api/search/tag/{tag}/values         {"tagValues": ["..."]}
//!  GET /api/v2/search/tag/{tag}/values?q=   {"tagValues": [{"type", "value"}]}
//!  GET /api/status/buildinfo                {"version", "revision", "branch", ...}
//! ```

mod proto;
mod tag_name;
mod tags;
mod trace_v2;

use axum::routing::get;
use axum::Router;
use serde::Serialize;

use crate::ApiState;

/// The routes of this module, merged into the `--http-addr` router.
pub(crate) fn routes() -> Router<ApiState> {
    Router::new()
        .route("/api/v2/traces/{id}", get(trace_v2::trace_by_id_v2))
        .route("/api/search/tags", get(tags::tags_v1))
        .route("/api/v2/search/tags", get(tags::tags_v2))
        .route("/api/search/tag/{tag}/values", get(tags::tag_values_v1))
        .route("/api/v2/search/tag/{tag}/values", get(tags::tag_values_v2))
        .route("/api/status/buildinfo", get(build_info))
}

/// Tempo's build information shape (Prometheus `common/version` fields, camelCase).
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct BuildInfo {
    version: &'static str,
    revision: &'static str,
    branch: &'static str,
    build_user: &'static str,
    build_date: &'static str,
    /// Tempo reports its Go version here; tracelake is not written in Go.
    go_version: &'static str,
}

/// `GET /api/status/buildinfo`. Revision, branch, user and date come from the
/// `TRACELAKE_BUILD_REVISION`, `_BRANCH`, `_USER` and `_DATE` environment variables at compile
/// time, when set.
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
