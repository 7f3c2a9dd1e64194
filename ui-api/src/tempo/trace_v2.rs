//! `GET /api/v2/traces/{id}`: the trace wrapped in Tempo's `TraceByIDResponse`.
//!
//! Grafana calls this first, with `Accept: application/protobuf`, and falls back to v1 on a 404.
//! The JSON form follows Tempo's (gogo jsonpb, defaults omitted):
//! `{"trace": {"resourceSpans": [...]}, "metrics": {}}`, plus `"status": "PARTIAL"` and
//! `"message"` when the trace is partial (never, today: a lookup reads every file of the trace).

use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use prost::Message;
use serde_json::{Map, Value};

use super::proto::{PartialStatus, Trace, TraceByIdMetrics, TraceByIdResponse};
use crate::openapi::{ErrorBody, QueryErrors, TenantHeader};
use crate::traces::{load_trace, wants_protobuf, WindowParams};
use crate::{ApiError, ApiState};

/// `GET /api/v2/traces/{id}`.
#[utoipa::path(
    get,
    path = "/api/v2/traces/{id}",
    tag = "tempo",
    summary = "Trace by id (Tempo v2, `TraceByIDResponse`)",
    description = "Tempo's `TraceByIDResponse`: protobuf with `Accept: application/protobuf`, \
                   else its JSON form (`trace.resourceSpans` in OTLP/JSON, `metrics`, and \
                   `status`/`message` when partial).",
    params(
        ("id" = String, Path, description = "Trace id in hex, up to 32 digits (leading zeros may be left out)", example = "4bf92f3577b34da6a3ce929d0e0e4736"),
        WindowParams,
        TenantHeader,
        ("Accept" = Option<String>, Header, description = "`application/protobuf` for protobuf, else JSON"),
    ),
    responses(
        (status = 200, description = "The trace", content(
            (Object = "application/json", example = example_v2_trace),
            (Vec<u8> = "application/protobuf")
        )),
        (status = 400, description = "Malformed trace id or window", body = ErrorBody),
        (status = 404, description = "No span of this trace is stored", body = ErrorBody),
        QueryErrors,
    )
)]
pub(crate) async fn trace_by_id_v2(
    State(state): State<ApiState>,
    Path(id): Path<String>,
    Query(window): Query<WindowParams>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let traces = load_trace(&state, &headers, &id, &window).await?;
    let response = TraceByIdResponse {
        trace: Some(Trace {
            resource_spans: traces.resource_spans,
        }),
        metrics: Some(TraceByIdMetrics {}),
        status: PartialStatus::Complete as i32,
        message: String::new(),
    };
    if wants_protobuf(&headers) {
        return Ok((
            StatusCode::OK,
            [(header::CONTENT_TYPE, "application/protobuf")],
            response.encode_to_vec(),
        )
            .into_response());
    }
    Ok((StatusCode::OK, axum::Json(to_json(&response))).into_response())
}

/// The protobuf-JSON form of the response, default values omitted as Tempo's marshaler does.
fn to_json(response: &TraceByIdResponse) -> Value {
    let mut out = Map::new();
    if let Some(trace) = &response.trace {
        let mut t = Map::new();
        t.insert(
            "resourceSpans".into(),
            tracelake_proto::json::resource_spans_to_json(&trace.resource_spans),
        );
        out.insert("trace".into(), Value::Object(t));
    }
    if response.metrics.is_some() {
        out.insert("metrics".into(), Value::Object(Map::new()));
    }
    let status = response.status();
    if status != PartialStatus::Complete {
        out.insert("status".into(), Value::String(status.json_name().into()));
    }
    if !response.message.is_empty() {
        out.insert("message".into(), Value::String(response.message.clone()));
    }
    Value::Object(out)
}

/// An example answer for the OpenAPI document.
fn example_v2_trace() -> serde_json::Value {
    serde_json::json!({"trace": {"resourceSpans": crate::openapi::example_resource_spans()}, "metrics": {}})
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_omits_defaults_like_jsonpb() {
        let complete = TraceByIdResponse {
            trace: Some(Trace {
                resource_spans: Vec::new(),
            }),
            metrics: Some(TraceByIdMetrics {}),
            status: 0,
            message: String::new(),
        };
        assert_eq!(
            to_json(&complete),
            serde_json::json!({"trace": {"resourceSpans": []}, "metrics": {}})
        );
        let partial = TraceByIdResponse {
            status: PartialStatus::Partial as i32,
            message: "one block failed".into(),
            ..complete
        };
        let json = to_json(&partial);
        assert_eq!(json["status"], "PARTIAL");
        assert_eq!(json["message"], "one block failed");
    }
}
