//! OTLP trace receivers for tracelake: OTLP/gRPC (`TraceService/Export`) and OTLP/HTTP
//! (`POST /v1/traces`, protobuf or JSON), with span validation and Prometheus counters.
//!
//! ```text
//!  OTLP/gRPC ──┐  tenant (x-scope-orgid), size limit,  ┌─ all spans invalid ──> partial success
//!              ├─ decode, validate (drop bad spans) ───┤
//!  OTLP/HTTP ──┘                                       └─ valid spans ──> SpanSink::export
//!                                                          (WAL append -> sampler -> buffer)
//! ```
//!
//! Receivers know nothing about storage: they hand validated spans to a [`SpanSink`] and map its
//! [`SinkError`] to `UNAVAILABLE` + `google.rpc.RetryInfo` (gRPC) or `503` + `Retry-After` (HTTP).
//!
//! ```
//! use std::sync::Arc;
//! use tracelake_proto::otlp::collector::trace::v1::ExportTraceServiceRequest;
//! use tracelake_ingest::{http_router, IngestMetrics, ReceiverConfig, SinkError, SpanSink};
//!
//! struct Discard;
//!
//! #[async_trait::async_trait]
//! impl SpanSink for Discard {
//!     async fn export(&self, _tenant: &str, _req: ExportTraceServiceRequest) -> Result<(), SinkError> {
//!         Ok(())
//!     }
//! }
//!
//! let mut registry = prometheus_client::registry::Registry::default();
//! let metrics = IngestMetrics::register(&mut registry);
//! let router: axum::Router = http_router(Arc::new(Discard), ReceiverConfig::default(), metrics);
//! # drop(router);
//! ```

use std::sync::Arc;

use tracelake_proto::otlp::collector::trace::v1::{
    ExportTracePartialSuccess, ExportTraceServiceRequest, ExportTraceServiceResponse,
};

mod error;
mod grpc;
mod http;
pub mod metrics;
pub mod pipeline;
pub mod sampling;
pub mod validate;

pub use error::{Error, Result, SinkError};
pub use grpc::{grpc_service, serve_grpc, TraceGrpcService};
pub use http::{http_router, serve_http, TRACES_PATH};
pub use metrics::{IngestMetrics, Outcome, Protocol};
pub use validate::{validate, Validation, TENANT_HEADER};

/// Where validated spans go. Implemented by the pipeline (WAL append, then sampler, then buffer).
#[async_trait::async_trait]
pub trait SpanSink: Send + Sync + 'static {
    /// Takes the valid spans of one request for `tenant`. Returns once the spans are durable in
    /// the WAL. Never called with an empty request.
    async fn export(
        &self,
        tenant: &str,
        request: ExportTraceServiceRequest,
    ) -> Result<(), SinkError>;
}

/// Settings shared by both receivers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReceiverConfig {
    /// Largest accepted request, measured on the wire and again after decompression.
    /// Default 4 MiB; values are clamped to `1..=64 MiB`.
    pub max_request_bytes: usize,
    /// Tenant of requests without an `x-scope-orgid` header. Must itself be a valid tenant id,
    /// otherwise such requests are rejected as having an invalid tenant.
    pub default_tenant: String,
}

impl ReceiverConfig {
    /// Default of [`ReceiverConfig::max_request_bytes`].
    pub const DEFAULT_MAX_REQUEST_BYTES: usize = 4 * 1024 * 1024;
    /// Ceiling of [`ReceiverConfig::max_request_bytes`].
    pub const MAX_REQUEST_BYTES_CEILING: usize = 64 * 1024 * 1024;

    /// The size limit actually enforced.
    pub fn effective_max_request_bytes(&self) -> usize {
        self.max_request_bytes
            .clamp(1, Self::MAX_REQUEST_BYTES_CEILING)
    }
}

impl Default for ReceiverConfig {
    fn default() -> Self {
        Self {
            max_request_bytes: Self::DEFAULT_MAX_REQUEST_BYTES,
            default_tenant: "default".to_owned(),
        }
    }
}

/// Requests with more spans than this are validated on the blocking pool.
const INLINE_VALIDATION_MAX_SPANS: usize = 2048;

/// Validates `request`, off the IO threads when it is large.
async fn validate_off_thread(
    mut request: ExportTraceServiceRequest,
) -> Result<(ExportTraceServiceRequest, Validation)> {
    if validate::span_count(&request) <= INLINE_VALIDATION_MAX_SPANS {
        let validation = validate(&mut request);
        return Ok((request, validation));
    }
    tokio::task::spawn_blocking(move || {
        let validation = validate(&mut request);
        (request, validation)
    })
    .await
    .map_err(|e| SinkError::Internal(format!("validation task failed: {e}")).into())
}

/// Hands the valid part of an already validated request to the sink and builds the OTLP reply.
/// Records span and request counters.
async fn deliver(
    sink: &dyn SpanSink,
    metrics: &IngestMetrics,
    protocol: Protocol,
    tenant: &str,
    request: ExportTraceServiceRequest,
    validation: Validation,
) -> Result<ExportTraceServiceResponse> {
    metrics.record_validation(protocol, validation.accepted, validation.rejected);
    if validation.accepted > 0 {
        if let Err(e) = sink.export(tenant, request).await {
            let e = Error::from(e);
            metrics.record_request(protocol, e.outcome());
            return Err(e);
        }
        metrics.record_accepted(protocol, validation.accepted);
    }
    let partial_success = (validation.rejected > 0).then(|| ExportTracePartialSuccess {
        rejected_spans: i64::try_from(validation.rejected).unwrap_or(i64::MAX),
        error_message: validation.error_message.unwrap_or_default(),
    });
    let outcome = if partial_success.is_some() {
        Outcome::PartialSuccess
    } else {
        Outcome::Success
    };
    metrics.record_request(protocol, outcome);
    Ok(ExportTraceServiceResponse { partial_success })
}

/// Shared state of one receiver.
struct Receiver {
    sink: Arc<dyn SpanSink>,
    metrics: Arc<IngestMetrics>,
    max_request_bytes: usize,
    default_tenant: String,
}

impl Receiver {
    fn new(sink: Arc<dyn SpanSink>, cfg: &ReceiverConfig, metrics: Arc<IngestMetrics>) -> Self {
        Self {
            sink,
            metrics,
            max_request_bytes: cfg.effective_max_request_bytes(),
            default_tenant: cfg.default_tenant.clone(),
        }
    }
}
