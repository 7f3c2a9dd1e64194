//! OpenAPI 3 documents, generated from the handlers' `#[utoipa::path]` annotations.
//!
//! ```text
//!  --http-addr   GET /api/openapi.json   Tempo API, SQL, sampling, probes, metrics
//!  --jaeger-addr GET /api/openapi.json   Jaeger query API v1 and api_v3
//! ```
//!
//! - **One document per listener.** The two listeners are separate servers whose paths overlap:
//!   `GET /api/traces/{id}` is Tempo's trace (OTLP JSON batches or protobuf) on `--http-addr`
//!   and Jaeger's (the `{data, total, limit, offset, errors}` envelope) on `--jaeger-addr`. One
//!   OpenAPI document holds one operation per method and path, and its `servers` cannot say
//!   "this path on that port" per operation; two documents, each served by its own listener,
//!   describe each server exactly and need no server URLs (they are relative to where they
//!   were fetched).
//! - **Routes and documentation cannot drift.** Routes are registered only through
//!   `utoipa_axum::routes!`, which takes the path and the methods from the handler's
//!   annotation, so the router and the document are built from the same text. The tests
//!   below compare the paths the axum router really matches with the document's paths; the
//!   end-to-end tests compare each documented path's methods with the `Allow` header the real
//!   server answers.

use std::collections::BTreeMap;

use serde::Serialize;
use utoipa::openapi::{ContentBuilder, RefOr, Response, ResponseBuilder};
use utoipa::{IntoParams, IntoResponses, PartialSchema, ToSchema};

/// The body of every error on `--http-addr`: a message a person can act on. A 500 gives only
/// a request id (the detail is in the server's log).
#[derive(Debug, Serialize, ToSchema)]
#[schema(example = json!({"error": "invalid scope: \"spans\"; use resource, span, intrinsic, event, link, instrumentation or all"}))]
pub(crate) struct ErrorBody {
    /// What went wrong and what to do about it.
    pub(crate) error: String,
    /// Where in the query text (SQL or TraceQL) the error is, when the parser says.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) position: Option<ErrorPosition>,
}

/// A 1-based line and column in a query's text.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
pub(crate) struct ErrorPosition {
    pub(crate) line: u64,
    pub(crate) column: u64,
}

impl ErrorPosition {
    /// The position in a parser message ("... at Line: 1, Column: 8" from the SQL parser,
    /// "line 1, column 8" from TraceQL's), if any.
    pub(crate) fn find(message: &str) -> Option<ErrorPosition> {
        let lower = message.to_ascii_lowercase();
        let number = |s: &str| -> Option<(u64, usize)> {
            let digits = s.len() - s.trim_start_matches([':', ' ']).len();
            let len = s[digits..]
                .find(|c: char| !c.is_ascii_digit())
                .unwrap_or(s.len() - digits);
            Some((s[digits..digits + len].parse().ok()?, digits + len))
        };
        lower.match_indices("line").find_map(|(at, _)| {
            let (line, used) = number(&lower[at + 4..])?;
            let rest = lower[at + 4 + used..].trim_start_matches([',', ' ']);
            let (column, _) = number(rest.strip_prefix("column")?)?;
            Some(ErrorPosition { line, column })
        })
    }
}

#[cfg(test)]
mod tests {
    use super::ErrorPosition;

    #[test]
    fn positions_are_read_from_parser_messages() {
        let at = |line, column| Some(ErrorPosition { line, column });
        assert_eq!(
            ErrorPosition::find("sql parse error: sql parser error: Expected: an expression, found: FROM at Line: 1, Column: 8"),
            at(1, 8)
        );
        assert_eq!(
            ErrorPosition::find("invalid TraceQL: parse error at line 2, column 14: expected }"),
            at(2, 14)
        );
        assert_eq!(
            ErrorPosition::find("deadline passed at line 3, column 4"),
            at(3, 4)
        );
        assert_eq!(ErrorPosition::find("table 'x' not found"), None);
        assert_eq!(ErrorPosition::find("a pipeline of 3 stages"), None);
    }
}

/// The tenant header, read by every endpoint that reads tenant data.
#[derive(IntoParams)]
#[into_params(parameter_in = Header)]
#[allow(dead_code)] // Documentation only: handlers read the header with `tenant_from_headers`.
pub(crate) struct TenantHeader {
    /// The tenant whose data is read; `default` when absent or empty.
    #[param(rename = "X-Scope-OrgID", example = "default")]
    tenant: Option<String>,
}

/// 500 and 504, which any endpoint that queries can answer, with [`ErrorBody`].
pub(crate) struct QueryErrors;

impl IntoResponses for QueryErrors {
    fn responses() -> BTreeMap<String, RefOr<Response>> {
        server_errors(ErrorBody::schema())
    }
}

/// 500 and 504 with `body` as their JSON body.
pub(crate) fn server_errors(
    body: RefOr<utoipa::openapi::schema::Schema>,
) -> BTreeMap<String, RefOr<Response>> {
    let response = |description: &str| {
        RefOr::T(
            ResponseBuilder::new()
                .description(description)
                .content(
                    "application/json",
                    ContentBuilder::new().schema(Some(body.clone())).build(),
                )
                .build(),
        )
    };
    BTreeMap::from([
        (
            "500".to_string(),
            response("Internal error: the body names a request id to find in the server's log"),
        ),
        (
            "504".to_string(),
            response("The query ran longer than the configured timeout"),
        ),
    ])
}

/// The paths an axum router matches, read from its `Debug` form (axum has no public route
/// list). Tests compare them with a document's paths.
#[cfg(test)]
pub(crate) fn router_paths<S>(router: &axum::Router<S>) -> std::collections::BTreeSet<String> {
    let text = format!("{router:?}");
    // The fallback router has routes of its own (`/` and a catch-all): read only the paths.
    let (paths, _fallback) = text
        .split_once("fallback_router")
        .expect("axum's Router Debug names its fallback_router");
    assert!(
        paths.contains("path_router"),
        "unexpected Debug form: {text}"
    );
    paths
        .split("RouteId(")
        .skip(1)
        .filter_map(|rest| {
            let rest = rest.split_once("): \"")?.1;
            Some(rest.split_once('"')?.0.to_string())
        })
        .filter(|path| !path.contains("__private__axum"))
        .collect()
}

/// The OTLP/JSON resource spans of one small trace, for examples in the documents.
pub(crate) fn example_resource_spans() -> serde_json::Value {
    serde_json::json!([{"resource": {"attributes": [{"key": "service.name", "value": {"stringValue": "cart"}}]}, "scopeSpans": [{"spans": [{"traceId": "4bf92f3577b34da6a3ce929d0e0e4736", "spanId": "00f067aa0ba902b7", "name": "GET /cart", "kind": 2, "startTimeUnixNano": "1714564800000000000", "endTimeUnixNano": "1714564800120000000"}]}]}])
}
