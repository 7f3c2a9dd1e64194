//! The crate's error type, and the one place where errors become gRPC codes and HTTP statuses.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use http::StatusCode;
use tonic::Code;

use crate::metrics::Outcome;

/// `Result` with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Why a [`SpanSink`](crate::SpanSink) could not take a batch.
#[derive(Debug, Clone, thiserror::Error)]
pub enum SinkError {
    /// Ingest is saturated (buffer full, WAL behind); the client should retry after `retry_after`.
    #[error("ingest is overloaded: retry in {retry_after:?}")]
    Overloaded {
        /// How long the client should wait before retrying.
        retry_after: Duration,
    },
    /// A temporary failure (e.g. shutting down, WAL unavailable); the client may retry.
    #[error("ingest is unavailable: {0}")]
    Unavailable(String),
    /// A bug or unexpected failure; the detail is logged, never sent to the client.
    #[error("internal error: {0}")]
    Internal(String),
}

/// Everything that can go wrong in the receivers.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The `x-scope-orgid` tenant header is malformed.
    #[error("invalid tenant id {0:?}: use 1-64 characters from [A-Za-z0-9_-]")]
    InvalidTenant(String),
    /// The request body, before or after decompression, is over the configured limit.
    #[error(
        "request is larger than the {limit}-byte limit (measured after decompression): \
         send smaller batches or raise max_request_bytes"
    )]
    TooLarge {
        /// The limit in bytes.
        limit: usize,
    },
    /// The body is not a valid OTLP `ExportTraceServiceRequest`.
    #[error("could not decode the request body as {format}: {detail}")]
    Decode {
        /// "protobuf", "json" or "gzip".
        format: &'static str,
        /// What the decoder said.
        detail: String,
    },
    /// The body could not be read from the connection.
    #[error("could not read the request body: {0}")]
    ReadBody(String),
    /// `Content-Type` is neither protobuf nor JSON.
    #[error("unsupported content type {0:?}: use application/x-protobuf or application/json")]
    UnsupportedContentType(String),
    /// `Content-Encoding` is neither gzip nor identity.
    #[error("unsupported content encoding {0:?}: use gzip or identity")]
    UnsupportedContentEncoding(String),
    /// The sink refused the batch; see [`SinkError`].
    #[error(transparent)]
    Sink(#[from] SinkError),
    /// The server failed to bind or serve.
    #[error("the {protocol} receiver failed: {source}")]
    Serve {
        /// "grpc" or "http".
        protocol: &'static str,
        /// The underlying error.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
}

/// Process-wide counter that ties an "internal error" reply to its log line.
static NEXT_REQUEST_ID: AtomicU64 = AtomicU64::new(1);

/// What a client is told: status codes and a message that never leaks internals.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Reply {
    pub(crate) grpc: Code,
    pub(crate) http: StatusCode,
    pub(crate) message: String,
    /// Set for overload: the client should wait this long (gRPC RetryInfo, HTTP Retry-After).
    pub(crate) retry_after: Option<Duration>,
}

impl Error {
    /// Maps the error to what the client sees. Internal errors are logged here with a request id,
    /// and the client gets only "internal error (request id N)".
    pub(crate) fn reply(&self) -> Reply {
        let reply = |grpc, http, message: String| Reply {
            grpc,
            http,
            message,
            retry_after: None,
        };
        match self {
            Error::InvalidTenant(_) | Error::Decode { .. } | Error::ReadBody(_) => reply(
                Code::InvalidArgument,
                StatusCode::BAD_REQUEST,
                self.to_string(),
            ),
            Error::TooLarge { .. } => reply(
                Code::ResourceExhausted,
                StatusCode::PAYLOAD_TOO_LARGE,
                self.to_string(),
            ),
            Error::UnsupportedContentType(_) | Error::UnsupportedContentEncoding(_) => reply(
                Code::InvalidArgument,
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                self.to_string(),
            ),
            Error::Sink(SinkError::Overloaded { retry_after }) => Reply {
                retry_after: Some(*retry_after),
                ..reply(
                    Code::Unavailable,
                    StatusCode::SERVICE_UNAVAILABLE,
                    self.to_string(),
                )
            },
            Error::Sink(SinkError::Unavailable(_)) => reply(
                Code::Unavailable,
                StatusCode::SERVICE_UNAVAILABLE,
                self.to_string(),
            ),
            Error::Sink(SinkError::Internal(_)) | Error::Serve { .. } => {
                let id = NEXT_REQUEST_ID.fetch_add(1, Ordering::Relaxed);
                tracing::error!(request_id = id, error = %self, "ingest request failed");
                reply(
                    Code::Internal,
                    StatusCode::INTERNAL_SERVER_ERROR,
                    format!("internal error (request id {id})"),
                )
            }
        }
    }

    /// The `outcome` label of the request counter.
    pub(crate) fn outcome(&self) -> Outcome {
        match self {
            Error::InvalidTenant(_) | Error::Decode { .. } | Error::ReadBody(_) => Outcome::Invalid,
            Error::TooLarge { .. } => Outcome::TooLarge,
            Error::UnsupportedContentType(_) | Error::UnsupportedContentEncoding(_) => {
                Outcome::Unsupported
            }
            Error::Sink(SinkError::Overloaded { .. }) => Outcome::Overloaded,
            Error::Sink(SinkError::Unavailable(_)) => Outcome::Unavailable,
            Error::Sink(SinkError::Internal(_)) | Error::Serve { .. } => Outcome::Internal,
        }
    }

    /// The gRPC status for this error, with a `google.rpc.RetryInfo` detail on overload.
    pub(crate) fn to_grpc_status(&self) -> tonic::Status {
        use tonic_types::{ErrorDetails, StatusExt};
        let reply = self.reply();
        match reply.retry_after {
            Some(delay) => tonic::Status::with_error_details(
                reply.grpc,
                reply.message,
                ErrorDetails::with_retry_info(Some(delay)),
            ),
            None => tonic::Status::new(reply.grpc, reply.message),
        }
    }
}

/// Shortens client-supplied text before it is echoed in an error message.
pub(crate) fn truncate_for_message(text: &str, max_chars: usize) -> String {
    match text.char_indices().nth(max_chars) {
        Some((cut, _)) => format!("{}...", &text[..cut]),
        None => text.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn internal_errors_do_not_leak_details() {
        let reply = Error::Sink(SinkError::Internal("disk /var/wal exploded".into())).reply();
        assert_eq!(reply.grpc, Code::Internal);
        assert_eq!(reply.http, StatusCode::INTERNAL_SERVER_ERROR);
        assert!(reply.message.starts_with("internal error (request id "));
        assert!(!reply.message.contains("wal"));
    }

    #[test]
    fn overload_carries_retry_delay() {
        let err = Error::Sink(SinkError::Overloaded {
            retry_after: Duration::from_millis(1500),
        });
        let reply = err.reply();
        assert_eq!(reply.grpc, Code::Unavailable);
        assert_eq!(reply.http, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(reply.retry_after, Some(Duration::from_millis(1500)));
        assert_eq!(err.outcome(), Outcome::Overloaded);
    }

    #[test]
    fn truncation_respects_char_boundaries() {
        assert_eq!(truncate_for_message("abc", 3), "abc");
        assert_eq!(truncate_for_message("abcd", 3), "abc...");
        assert_eq!(truncate_for_message("ééééé", 2), "éé...");
    }
}
