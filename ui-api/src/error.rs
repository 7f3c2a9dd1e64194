//! HTTP error mapping: the one place query and storage errors become status codes.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::openapi::ErrorBody;

/// An error answered to an HTTP client.
#[derive(Debug)]
pub enum ApiError {
    /// 400 with a message the client can act on.
    BadRequest(String),
    /// 404.
    NotFound(String),
    /// 500: the detail is logged with a request id; the client sees only the id.
    Internal(String),
    /// 504 or 400-class timeout.
    Timeout(String),
    /// 429 with `Retry-After: 1`: too many queries at once.
    Busy(String),
}

static REQUEST_IDS: AtomicU64 = AtomicU64::new(1);

impl From<tracelake_query::Error> for ApiError {
    fn from(e: tracelake_query::Error) -> Self {
        match e {
            tracelake_query::Error::Timeout(_) => ApiError::Timeout(e.to_string()),
            tracelake_query::Error::NotFound(m) => ApiError::NotFound(m),
            tracelake_query::Error::Busy(m) => ApiError::Busy(m),
            e if e.is_client_error() => ApiError::BadRequest(e.to_string()),
            e => ApiError::Internal(e.to_string()),
        }
    }
}

impl ApiError {
    /// The status and the message a client sees; an internal error's detail is logged under a
    /// request id, which is all the client gets.
    pub(crate) fn status_and_message(self) -> (StatusCode, String) {
        match self {
            ApiError::BadRequest(m) => (StatusCode::BAD_REQUEST, m),
            ApiError::NotFound(m) => (StatusCode::NOT_FOUND, m),
            ApiError::Timeout(m) => (StatusCode::GATEWAY_TIMEOUT, m),
            ApiError::Busy(m) => (StatusCode::TOO_MANY_REQUESTS, m),
            ApiError::Internal(detail) => {
                let id = REQUEST_IDS.fetch_add(1, Ordering::Relaxed);
                tracing::error!(request_id = id, error = %detail, "internal error");
                (
                    StatusCode::INTERNAL_SERVER_ERROR,
                    format!("internal error (request id {id})"),
                )
            }
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, message) = self.status_and_message();
        let position = crate::openapi::ErrorPosition::find(&message);
        let body = Json(ErrorBody {
            error: message,
            position,
        });
        if status == StatusCode::TOO_MANY_REQUESTS {
            return (status, [(axum::http::header::RETRY_AFTER, "1")], body).into_response();
        }
        (status, body).into_response()
    }
}
