//! Tempo API endpoints besides search: trace by id v2, tags and tag values, build info.

use axum::Router;

use crate::ApiState;

/// The routes of this module, merged into the `--http-addr` router.
pub(crate) fn routes() -> Router<ApiState> {
    Router::new()
}
