//! Tempo search: `GET /api/search` with TraceQL (`q`) or logfmt tags.

use axum::Router;

use crate::ApiState;

/// The routes of this module, merged into the `--http-addr` router.
pub(crate) fn routes() -> Router<ApiState> {
    Router::new()
}
