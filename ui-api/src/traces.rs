//! Tempo trace-by-id (v1): `GET /api/traces/{id}`.

use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use prost::Message;
use serde::Deserialize;
use tracelake_query::{parse_trace_id, TimeRange};
use utoipa::IntoParams;

use crate::openapi::{ErrorBody, QueryErrors, TenantHeader};
use crate::{tenant_from_headers, ApiError, ApiState};

/// Optional window, unix seconds.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub(crate) struct WindowParams {
    /// Start of the window, unix seconds (inclusive). With `end`, narrows the partitions read.
    #[param(example = 1714564800)]
    start: Option<u64>,
    /// End of the window, unix seconds (inclusive).
    #[param(example = 1714568400)]
    end: Option<u64>,
}

impl WindowParams {
    pub(crate) fn range(&self) -> Result<Option<TimeRange>, ApiError> {
        match (self.start, self.end) {
            (None, None) => Ok(None),
            (start, end) => {
                let start = start.unwrap_or(0);
                let end = end.unwrap_or(u64::MAX / 1_000_000_000);
                if end < start {
                    return Err(ApiError::BadRequest(format!(
                        "end ({end}) is before start ({start})"
                    )));
                }
                Ok(Some(TimeRange {
                    start_unix_nano: start.saturating_mul(1_000_000_000),
                    end_unix_nano: end.saturating_add(1).saturating_mul(1_000_000_000),
                }))
            }
        }
    }
}

/// Every stored span of trace `id` for the request's tenant, within the optional window; a 404
/// when there is none.
pub(crate) async fn load_trace(
    state: &ApiState,
    headers: &HeaderMap,
    id: &str,
    window: &WindowParams,
) -> Result<opentelemetry_proto::tonic::trace::v1::TracesData, ApiError> {
    let tenant = tenant_from_headers(headers);
    let trace_id = parse_trace_id(id)?;
    let range = window.range()?;
    let batches = state.engine.trace_by_id(&tenant, trace_id, range).await?;
    if batches.iter().all(|b| b.num_rows() == 0) {
        return Err(ApiError::NotFound(format!("trace {id} not found")));
    }
    tracelake_proto::batches_to_traces_data(&batches)
        .map_err(|e| ApiError::Internal(format!("decoding stored spans: {e}")))
}

pub(crate) fn wants_protobuf(headers: &HeaderMap) -> bool {
    headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.contains("application/protobuf") || v.contains("application/x-protobuf"))
}

/// `GET /api/traces/{id}`.
#[utoipa::path(
    get,
    path = "/api/traces/{id}",
    tag = "tempo",
    summary = "Trace by id (Tempo v1)",
    description = "Every span of the trace. JSON (OTLP/JSON `ResourceSpans` under `batches`) by \
                   default; OTLP `TracesData` protobuf with `Accept: application/protobuf`.",
    params(
        ("id" = String, Path, description = "Trace id in hex, up to 32 digits (leading zeros may be left out)", example = "4bf92f3577b34da6a3ce929d0e0e4736"),
        WindowParams,
        TenantHeader,
        ("Accept" = Option<String>, Header, description = "`application/protobuf` for protobuf, else JSON"),
    ),
    responses(
        (status = 200, description = "The trace", content(
            (Object = "application/json", example = example_v1_trace),
            (Vec<u8> = "application/protobuf")
        )),
        (status = 400, description = "Malformed trace id or window", body = ErrorBody),
        (status = 404, description = "No span of this trace is stored", body = ErrorBody),
        QueryErrors,
    )
)]
pub(crate) async fn trace_by_id_v1(
    State(state): State<ApiState>,
    Path(id): Path<String>,
    Query(window): Query<WindowParams>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let traces = load_trace(&state, &headers, &id, &window).await?;
    if wants_protobuf(&headers) {
        return Ok((
            StatusCode::OK,
            [(header::CONTENT_TYPE, "application/protobuf")],
            traces.encode_to_vec(),
        )
            .into_response());
    }
    let body = serde_json::json!({
        "batches": tracelake_proto::json::resource_spans_to_json(&traces.resource_spans)
    });
    Ok((StatusCode::OK, axum::Json(body)).into_response())
}

/// An example answer for the OpenAPI document.
fn example_v1_trace() -> serde_json::Value {
    serde_json::json!({"batches": crate::openapi::example_resource_spans()})
}
