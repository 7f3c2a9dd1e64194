//! The OpenAPI pieces of the Jaeger listener: its document's fixed parts and the shapes of its
//! envelopes and errors (the handlers build them with `json!`; the tests in `super` check that
//! these shapes serialize to the same JSON).

use std::collections::BTreeMap;

use serde::Serialize;
use serde_json::Value;
use utoipa::openapi::{RefOr, Response};
use utoipa::{IntoResponses, PartialSchema, ToSchema};

/// The fixed parts of the `--jaeger-addr` document; the paths come from the handlers.
#[derive(utoipa::OpenApi)]
#[openapi(
    info(
        title = "tracelake Jaeger query API (--jaeger-addr)",
        description = "Jaeger's query API, v1 (what the Jaeger UI and Grafana's Jaeger data source \
                       call) and api_v3, over the same data as the Tempo API on `--http-addr` \
                       (whose own document is at `/api/openapi.json` there). Every endpoint \
                       takes the tenant from the `X-Scope-OrgID` header (default `default`). \
                       v1 times are unix microseconds (search) or milliseconds (dependencies), \
                       v3 times RFC 3339; durations are Go durations (`1.5s`, `1h30m`)."
    ),
    tags(
        (name = "jaeger-v1", description = "Jaeger query API v1 (`structuredResponse` envelope)"),
        (name = "jaeger-v3", description = "Jaeger api_v3 (OTLP/JSON traces)"),
        (name = "ops", description = "This document")
    )
)]
pub(super) struct JaegerApiDoc;

/// One entry of a v1 envelope's `errors`.
#[derive(Debug, Serialize, ToSchema)]
pub(super) struct V1ErrorItem {
    /// The HTTP status of this error.
    #[schema(example = 400)]
    pub(super) code: u16,
    /// What went wrong.
    #[schema(example = "parameter 'service' is required")]
    pub(super) msg: String,
    /// The trace id this error is about (trace id lookups by `traceID` only).
    #[serde(rename = "traceID", skip_serializing_if = "Option::is_none")]
    pub(super) trace_id: Option<String>,
}

/// Jaeger's v1 `structuredResponse`.
#[derive(Debug, Serialize, ToSchema)]
pub(super) struct V1Envelope {
    /// The answer (services, operations, traces or dependency links); `null` on error.
    pub(super) data: Value,
    /// Number of items in `data` (0 for traces, as Jaeger does).
    pub(super) total: usize,
    /// Always 0.
    pub(super) limit: usize,
    /// Always 0.
    pub(super) offset: usize,
    /// `null`, or the errors; the HTTP status is the first error's code.
    pub(super) errors: Option<Vec<V1ErrorItem>>,
}

/// The inner object of an api_v3 error.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub(super) struct V3ErrorDetail {
    /// The HTTP status.
    #[schema(example = 404)]
    pub(super) http_code: u16,
    /// What went wrong.
    #[schema(example = "No traces found")]
    pub(super) message: String,
}

/// An api_v3 error: `{"error": {"httpCode", "message"}}`.
#[derive(Debug, Serialize, ToSchema)]
pub(super) struct V3ErrorBody {
    /// The error.
    pub(super) error: V3ErrorDetail,
}

/// 500 and 504 of the v1 endpoints.
pub(super) struct V1ServerErrors;

impl IntoResponses for V1ServerErrors {
    fn responses() -> BTreeMap<String, RefOr<Response>> {
        crate::openapi::server_errors(V1Envelope::schema())
    }
}

/// 500 and 504 of the api_v3 endpoints.
pub(super) struct V3ServerErrors;

impl IntoResponses for V3ServerErrors {
    fn responses() -> BTreeMap<String, RefOr<Response>> {
        crate::openapi::server_errors(V3ErrorBody::schema())
    }
}
