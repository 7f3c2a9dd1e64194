//! The Jaeger query API (v1 and api_v3), served on `--jaeger-addr` (default :16686), for
//! Grafana's Jaeger data source and the Jaeger UI.
//!
//! ```text
//!  GET /api/services                        {data: [service], total, limit, offset, errors}
//!  GET /api/services/{service}/operations   {data: [operation name], ...}
//!  GET /api/operations?service=&spanKind=   {data: [{name, spanKind}], ...}
//!  GET /api/traces?service=&operation=&tags=&tag=k:v&minDuration=&maxDuration=&start=&end=&limit=&traceID=
//!                                           {data: [jaeger trace], ...}
//!  GET /api/traces/{id}?start=&end=         {data: [jaeger trace], ...}, 404 when absent
//!  GET /api/dependencies?endTs=&lookback=   {data: [{parent, child, callCount}], ...}
//!  GET /api/v3/services                     {services: [...]}
//!  GET /api/v3/operations?service=&spanKind= {operations: [{name, spanKind}]}
//!  GET /api/v3/traces/{trace_id}            {result: {resourceSpans: [...]}} (OTLP JSON)
//!  GET /api/v3/traces?query.serviceName=&query.startTimeMin=&...   same shape
//! ```
//!
//! Errors carry real status codes (400 bad parameter, 404 not found, 500, 504 timeout): v1 in
//! the envelope's `errors: [{code, msg}]`, v3 as `{"error": {"httpCode", "message"}}`. Every
//! endpoint reads the tenant from `X-Scope-OrgID`. v1 times are unix microseconds (search) or
//! milliseconds (dependencies), v3 times RFC 3339; durations are Go durations (`1.5s`, `1h30m`).
//! The OTLP -> Jaeger mapping is described in `model`. The listener's OpenAPI 3 document is
//! at `GET /api/openapi.json` ([`openapi`]); see the crate's `openapi` module for why it is
//! separate from `--http-addr`'s.

mod doc;
mod model;
mod params;

use std::sync::OnceLock;
use std::time::{SystemTime, UNIX_EPOCH};

use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::{Json, Router};
use serde_json::{json, Value};
use tracelake_query::jaeger::{JaegerSearch, SPAN_KINDS};
use tracelake_query::{parse_trace_id, TimeRange};
use utoipa::OpenApi as _;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use self::doc::{
    JaegerApiDoc, V1Envelope, V1ErrorItem, V1ServerErrors, V3ErrorBody, V3ErrorDetail,
    V3ServerErrors,
};
use crate::openapi::TenantHeader;
use crate::{tenant_from_headers, ApiError, ApiState};

/// Default number of traces a search returns.
const DEFAULT_LIMIT: usize = 100;
/// Largest `limit` accepted: each trace is fetched whole.
const MAX_LIMIT: usize = 10_000;
/// Default search window: the two days before `end`.
const DEFAULT_LOOKBACK_NANOS: u64 = 2 * 86_400 * 1_000_000_000;
/// Default window of `/api/dependencies`: one day.
const DEFAULT_DEPENDENCY_LOOKBACK_MS: u64 = 86_400_000;
/// Traces found in a window are fetched from a window this much wider on both sides, so spans
/// of a trace that started just before (or ended just after) the window come along.
const FETCH_SLACK_NANOS: u64 = 3_600 * 1_000_000_000;

/// Every route on `--jaeger-addr`, each with its documentation.
pub(crate) fn routes() -> OpenApiRouter<ApiState> {
    OpenApiRouter::with_openapi(JaegerApiDoc::openapi())
        .routes(routes!(services))
        .routes(routes!(service_operations))
        .routes(routes!(operations))
        .routes(routes!(search))
        .routes(routes!(trace_by_id))
        .routes(routes!(dependencies))
        .routes(routes!(v3_services))
        .routes(routes!(v3_operations))
        .routes(routes!(v3_search))
        .routes(routes!(v3_trace_by_id))
        .routes(routes!(openapi_json))
}

/// The OpenAPI 3 document of every endpoint on `--jaeger-addr`, as served at
/// `GET /api/openapi.json` there.
pub fn openapi() -> utoipa::openapi::OpenApi {
    routes().into_openapi()
}

/// The router of every endpoint on `--jaeger-addr`.
pub fn router(state: ApiState) -> Router {
    crate::serving(routes(), state, "jaeger")
}

/// Serves [`router`] on an already-bound listener until `shutdown` resolves.
pub async fn serve(
    listener: tokio::net::TcpListener,
    state: ApiState,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    crate::serve_router(listener, router(state), shutdown).await
}

// ---------------------------------------------------------------------------------------------
// Errors

/// Status and client message of an error; internal details are logged under a request id.
fn status_and_message(error: ApiError) -> (StatusCode, String) {
    error.status_and_message()
}

/// An error of the v1 API: the Jaeger envelope with `errors: [{code, msg}]`.
struct V1Error(ApiError);

impl<E: Into<ApiError>> From<E> for V1Error {
    fn from(e: E) -> Self {
        V1Error(e.into())
    }
}

impl IntoResponse for V1Error {
    fn into_response(self) -> Response {
        let (status, msg) = status_and_message(self.0);
        let errors = vec![V1ErrorItem {
            code: status.as_u16(),
            msg,
            trace_id: None,
        }];
        (status, Json(envelope(Value::Null, 0, Some(errors)))).into_response()
    }
}

/// An error of api_v3: `{"error": {"httpCode", "message"}}`.
struct V3Error(ApiError);

impl<E: Into<ApiError>> From<E> for V3Error {
    fn from(e: E) -> Self {
        V3Error(e.into())
    }
}

impl IntoResponse for V3Error {
    fn into_response(self) -> Response {
        let (status, message) = status_and_message(self.0);
        let body = V3ErrorBody {
            error: V3ErrorDetail {
                http_code: status.as_u16(),
                message,
            },
        };
        (status, Json(body)).into_response()
    }
}

fn bad(message: impl Into<String>) -> ApiError {
    ApiError::BadRequest(message.into())
}

fn query_rejection(e: QueryRejection) -> ApiError {
    bad(format!("malformed query string: {}", e.body_text()))
}

/// Jaeger's `structuredResponse`.
fn envelope(data: Value, total: usize, errors: Option<Vec<V1ErrorItem>>) -> V1Envelope {
    V1Envelope {
        data,
        total,
        limit: 0,
        offset: 0,
        errors,
    }
}

// ---------------------------------------------------------------------------------------------
// Parameters

fn now_nanos() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
}

/// The query string as (name, value) pairs, repeated names kept.
struct Params(Vec<(String, String)>);

impl Params {
    /// The first value of the first of `names` present (Go's `Form.Get`), with the name used.
    fn get<'a>(&'a self, names: &[&'a str]) -> Option<(&'a str, &'a str)> {
        names.iter().find_map(|name| {
            self.0
                .iter()
                .find(|(k, _)| k == name)
                .map(|(_, v)| (*name, v.as_str()))
        })
    }

    /// A non-empty value.
    fn text(&self, names: &[&str]) -> Option<String> {
        self.get(names)
            .map(|(_, v)| v.trim())
            .filter(|v| !v.is_empty())
            .map(str::to_string)
    }

    fn all<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.0
            .iter()
            .filter(move |(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    fn unsigned(&self, names: &[&str], unit: &str) -> Result<Option<u64>, ApiError> {
        match self.get(names) {
            Some((_, v)) if v.trim().is_empty() => Ok(None),
            Some((name, v)) => v.trim().parse::<u64>().map(Some).map_err(|_| {
                bad(format!(
                    "malformed parameter '{name}': expected a non-negative integer ({unit}), got {v:?}"
                ))
            }),
            None => Ok(None),
        }
    }

    fn duration(&self, names: &[&str]) -> Result<Option<i64>, ApiError> {
        match self.get(names) {
            Some((_, v)) if v.trim().is_empty() => Ok(None),
            Some((name, v)) => {
                let nanos = params::parse_go_duration(v.trim())
                    .map_err(|e| bad(format!("malformed parameter '{name}': {e}")))?;
                if nanos < 0 {
                    return Err(bad(format!(
                        "malformed parameter '{name}': the duration {v:?} is negative"
                    )));
                }
                Ok(Some(nanos))
            }
            None => Ok(None),
        }
    }

    fn limit(&self, names: &[&str]) -> Result<usize, ApiError> {
        let limit = self.unsigned(names, "a number of traces")?;
        match limit {
            None | Some(0) => Ok(DEFAULT_LIMIT),
            Some(n) if n > MAX_LIMIT as u64 => Err(bad(format!(
                "malformed parameter '{}': at most {MAX_LIMIT} traces per search, got {n}",
                names[0]
            ))),
            Some(n) => Ok(n as usize),
        }
    }

    fn span_kind(&self, names: &[&str]) -> Result<Option<i32>, ApiError> {
        match self.get(names) {
            None => Ok(None),
            Some((_, v)) if v.trim().is_empty() => Ok(None),
            Some((name, v)) => SPAN_KINDS
                .iter()
                .find(|(kind, _)| kind.eq_ignore_ascii_case(v.trim()))
                .map(|(_, k)| Some(*k))
                .ok_or_else(|| {
                    bad(format!(
                        "malformed parameter '{name}': unknown span kind {v:?}, expected one of \
                         internal, server, client, producer, consumer"
                    ))
                }),
        }
    }
}

fn check_durations(
    min: Option<i64>,
    max: Option<i64>,
    names: (&str, &str),
) -> Result<(), ApiError> {
    if let (Some(min), Some(max)) = (min, max) {
        if max < min {
            return Err(bad(format!(
                "'{}' should be greater than '{}' (got {}ns < {}ns)",
                names.1, names.0, max, min
            )));
        }
    }
    Ok(())
}

fn widen(window: TimeRange) -> TimeRange {
    TimeRange {
        start_unix_nano: window.start_unix_nano.saturating_sub(FETCH_SLACK_NANOS),
        end_unix_nano: window.end_unix_nano.saturating_add(FETCH_SLACK_NANOS),
    }
}

/// A v1 search: trace ids to fetch, or a search.
enum V1Search {
    Ids(Vec<(String, Vec<u8>)>),
    Find(JaegerSearch),
}

fn parse_v1_search(params: &Params, now: u64) -> Result<V1Search, ApiError> {
    let ids: Vec<&str> = params
        .all("traceID")
        .filter(|v| !v.trim().is_empty())
        .collect();
    if !ids.is_empty() {
        let ids = ids
            .into_iter()
            .map(|id| {
                let parsed = parse_trace_id(id)
                    .map_err(|e| bad(format!("malformed parameter 'traceID': {e}")))?;
                Ok((id.trim().to_string(), parsed.to_vec()))
            })
            .collect::<Result<_, ApiError>>()?;
        return Ok(V1Search::Ids(ids));
    }
    let service = params
        .text(&["service"])
        .ok_or_else(|| bad("parameter 'service' is required"))?;
    let end = params
        .unsigned(&["end"], "unix microseconds")?
        .map_or(now, |us| us.saturating_mul(1_000).saturating_add(999));
    let start = params
        .unsigned(&["start"], "unix microseconds")?
        .map_or(end.saturating_sub(DEFAULT_LOOKBACK_NANOS), |us| {
            us.saturating_mul(1_000)
        });
    if start > end {
        return Err(bad("parameter 'start' is after 'end'"));
    }
    let min = params.duration(&["minDuration"])?;
    let max = params.duration(&["maxDuration"])?;
    check_durations(min, max, ("minDuration", "maxDuration"))?;
    let mut tags = Vec::new();
    for text in params.all("tags").filter(|t| !t.trim().is_empty()) {
        tags.extend(params::parse_tags_json("tags", text).map_err(bad)?);
    }
    for text in params.all("tag") {
        tags.push(params::parse_tag(text).map_err(bad)?);
    }
    Ok(V1Search::Find(JaegerSearch {
        service: Some(service),
        operation: params.text(&["operation"]),
        tags,
        window: TimeRange {
            start_unix_nano: start,
            end_unix_nano: end,
        },
        min_duration_nano: min,
        max_duration_nano: max,
        limit: params.limit(&["limit"])?,
    }))
}

// ---------------------------------------------------------------------------------------------
// Fetching and mapping

/// Fetches the given traces and maps them on the blocking pool (Jaeger JSON of many traces is
/// CPU work). Returns the traces in the order of `ids`; absent ones are left out.
async fn fetch_jaeger(
    state: &ApiState,
    tenant: &str,
    ids: &[Vec<u8>],
    window: Option<TimeRange>,
) -> Result<Vec<(Vec<u8>, Value)>, ApiError> {
    let batches = state.engine.jaeger_traces(tenant, ids, window).await?;
    let order: Vec<Vec<u8>> = ids.to_vec();
    tokio::task::spawn_blocking(move || {
        let data = tracelake_proto::batches_to_traces_data(&batches)
            .map_err(|e| ApiError::Internal(format!("decoding stored spans: {e}")))?;
        let mut traces = model::jaeger_traces(&data);
        let rank = |id: &Vec<u8>| order.iter().position(|o| o == id).unwrap_or(usize::MAX);
        traces.sort_by_key(|(id, _)| rank(id));
        Ok(traces)
    })
    .await
    .map_err(|e| ApiError::Internal(format!("mapping task: {e}")))?
}

/// Fetches the given traces as OTLP JSON `resourceSpans`, or `None` when there are no spans.
async fn fetch_otlp(
    state: &ApiState,
    tenant: &str,
    ids: &[Vec<u8>],
    window: Option<TimeRange>,
) -> Result<Option<Value>, ApiError> {
    let batches = state.engine.jaeger_traces(tenant, ids, window).await?;
    if batches.iter().all(|b| b.num_rows() == 0) {
        return Ok(None);
    }
    tokio::task::spawn_blocking(move || {
        let data = tracelake_proto::batches_to_traces_data(&batches)
            .map_err(|e| ApiError::Internal(format!("decoding stored spans: {e}")))?;
        Ok(Some(tracelake_proto::json::resource_spans_to_json(
            &data.resource_spans,
        )))
    })
    .await
    .map_err(|e| ApiError::Internal(format!("mapping task: {e}")))?
}

// ---------------------------------------------------------------------------------------------
// v1

#[utoipa::path(
    get,
    path = "/api/services",
    tag = "jaeger-v1",
    summary = "Service names",
    params(TenantHeader),
    responses(
        (status = 200, description = "The service names, sorted", body = V1Envelope,
         example = json!({"data": ["cart", "checkout", "frontend"], "total": 3, "limit": 0, "offset": 0, "errors": null})),
        V1ServerErrors,
    )
)]
async fn services(
    State(state): State<ApiState>,
    headers: HeaderMap,
) -> Result<Json<V1Envelope>, V1Error> {
    let tenant = tenant_from_headers(&headers);
    let services = state.engine.jaeger_services(&tenant).await?;
    let total = services.len();
    Ok(Json(envelope(json!(services), total, None)))
}

#[utoipa::path(
    get,
    path = "/api/services/{service}/operations",
    tag = "jaeger-v1",
    summary = "Operation names of a service",
    params(
        ("service" = String, Path, description = "The service name", example = "cart"),
        TenantHeader,
    ),
    responses(
        (status = 200, description = "The span names of the service, sorted", body = V1Envelope,
         example = json!({"data": ["GET /cart", "POST /cart/items"], "total": 2, "limit": 0, "offset": 0, "errors": null})),
        V1ServerErrors,
    )
)]
async fn service_operations(
    State(state): State<ApiState>,
    Path(service): Path<String>,
    headers: HeaderMap,
) -> Result<Json<V1Envelope>, V1Error> {
    let tenant = tenant_from_headers(&headers);
    let operations = state
        .engine
        .jaeger_operations(&tenant, &service, None)
        .await?;
    let mut names: Vec<String> = operations.into_iter().map(|(name, _)| name).collect();
    names.dedup();
    let total = names.len();
    Ok(Json(envelope(json!(names), total, None)))
}

#[utoipa::path(
    get,
    path = "/api/operations",
    tag = "jaeger-v1",
    summary = "Operations of a service, with span kinds",
    params(
        ("service" = String, Query, description = "The service name (required)", example = "cart"),
        ("spanKind" = Option<String>, Query, description = "Only this kind: internal, server, client, producer or consumer", example = "server"),
        TenantHeader,
    ),
    responses(
        (status = 200, description = "The operations", body = V1Envelope,
         example = json!({"data": [{"name": "GET /cart", "spanKind": "server"}], "total": 1, "limit": 0, "offset": 0, "errors": null})),
        (status = 400, description = "A malformed parameter; the envelope's `errors` names it", body = V1Envelope),
        V1ServerErrors,
    )
)]
async fn operations(
    State(state): State<ApiState>,
    query: Result<Query<Vec<(String, String)>>, QueryRejection>,
    headers: HeaderMap,
) -> Result<Json<V1Envelope>, V1Error> {
    let tenant = tenant_from_headers(&headers);
    let params = Params(query.map_err(query_rejection)?.0);
    let service = params
        .text(&["service"])
        .ok_or_else(|| bad("parameter 'service' is required"))?;
    let kind = params.span_kind(&["spanKind"])?;
    let operations = state
        .engine
        .jaeger_operations(&tenant, &service, kind)
        .await?;
    let data: Vec<Value> = operations
        .into_iter()
        .map(|(name, kind)| json!({ "name": name, "spanKind": model::span_kind_name(kind).unwrap_or("") }))
        .collect();
    let total = data.len();
    Ok(Json(envelope(json!(data), total, None)))
}

#[utoipa::path(
    get,
    path = "/api/traces",
    tag = "jaeger-v1",
    summary = "Search traces, or fetch traces by id",
    description = "With `traceID` (repeatable): those traces, and a 404 entry in `errors` for \
                   each one not found. Otherwise a search: `service` is required.",
    params(
        ("service" = Option<String>, Query, description = "The service (required unless `traceID` is given)", example = "cart"),
        ("operation" = Option<String>, Query, description = "The span name", example = "GET /cart"),
        ("tags" = Option<String>, Query, description = "A JSON object of tags every matching trace has on one span", example = r#"{"http.response.status_code":"500"}"#),
        ("tag" = Option<Vec<String>>, Query, description = "`key:value`, repeatable", example = "error:true"),
        ("minDuration" = Option<String>, Query, description = "Smallest span duration, Go duration", example = "100ms"),
        ("maxDuration" = Option<String>, Query, description = "Largest span duration, Go duration", example = "5s"),
        ("start" = Option<u64>, Query, description = "Start of the window, unix microseconds (default: two days before `end`)", example = 1714564800000000_u64),
        ("end" = Option<u64>, Query, description = "End of the window, unix microseconds (default: now)", example = 1714568400000000_u64),
        ("limit" = Option<u32>, Query, description = "Most traces returned (default 100, at most 10000)", example = 20),
        ("lookback" = Option<String>, Query, description = "Sent by the Jaeger UI; the window comes from `start` and `end`"),
        ("traceID" = Option<Vec<String>>, Query, description = "Trace ids in hex to fetch instead of searching, repeatable"),
        TenantHeader,
    ),
    responses(
        (status = 200, description = "The traces in Jaeger's JSON model", body = V1Envelope,
         example = example_v1_traces),
        (status = 400, description = "A malformed parameter; the envelope's `errors` names it", body = V1Envelope),
        V1ServerErrors,
    )
)]
async fn search(
    State(state): State<ApiState>,
    query: Result<Query<Vec<(String, String)>>, QueryRejection>,
    headers: HeaderMap,
) -> Result<Json<V1Envelope>, V1Error> {
    let tenant = tenant_from_headers(&headers);
    let params = Params(query.map_err(query_rejection)?.0);
    match parse_v1_search(&params, now_nanos())? {
        V1Search::Ids(ids) => {
            let raw: Vec<Vec<u8>> = ids.iter().map(|(_, id)| id.clone()).collect();
            let traces = fetch_jaeger(&state, &tenant, &raw, None).await?;
            let errors: Vec<V1ErrorItem> = ids
                .iter()
                .filter(|(_, id)| !traces.iter().any(|(t, _)| t == id))
                .map(|(text, _)| V1ErrorItem {
                    code: 404,
                    msg: "trace not found".into(),
                    trace_id: Some(text.clone()),
                })
                .collect();
            let data: Vec<Value> = traces.into_iter().map(|(_, t)| t).collect();
            let errors = (!errors.is_empty()).then_some(errors);
            Ok(Json(envelope(json!(data), 0, errors)))
        }
        V1Search::Find(search) => {
            let ids = state.engine.jaeger_find_trace_ids(&tenant, &search).await?;
            let traces = fetch_jaeger(&state, &tenant, &ids, Some(widen(search.window))).await?;
            let data: Vec<Value> = traces.into_iter().map(|(_, t)| t).collect();
            Ok(Json(envelope(json!(data), 0, None)))
        }
    }
}

/// An optional window given in unix microseconds (`start`/`end`).
fn micros_window(params: &Params) -> Result<Option<TimeRange>, ApiError> {
    let start = params.unsigned(&["start"], "unix microseconds")?;
    let end = params.unsigned(&["end"], "unix microseconds")?;
    if start.is_none() && end.is_none() {
        return Ok(None);
    }
    let start = start.unwrap_or(0).saturating_mul(1_000);
    let end = end.map_or(u64::MAX, |us| us.saturating_mul(1_000).saturating_add(999));
    if start > end {
        return Err(bad("parameter 'start' is after 'end'"));
    }
    Ok(Some(TimeRange {
        start_unix_nano: start,
        end_unix_nano: end,
    }))
}

#[utoipa::path(
    get,
    path = "/api/traces/{id}",
    tag = "jaeger-v1",
    summary = "Trace by id",
    params(
        ("id" = String, Path, description = "Trace id in hex, up to 32 digits", example = "4bf92f3577b34da6a3ce929d0e0e4736"),
        ("start" = Option<u64>, Query, description = "Start of the window read, unix microseconds"),
        ("end" = Option<u64>, Query, description = "End of the window read, unix microseconds"),
        TenantHeader,
    ),
    responses(
        (status = 200, description = "The trace in Jaeger's JSON model", body = V1Envelope,
         example = example_v1_traces),
        (status = 404, description = "No span of this trace is stored", body = V1Envelope,
         example = json!({"data": null, "total": 0, "limit": 0, "offset": 0, "errors": [{"code": 404, "msg": "trace not found"}]})),
        (status = 400, description = "A malformed parameter; the envelope's `errors` names it", body = V1Envelope),
        V1ServerErrors,
    )
)]
async fn trace_by_id(
    State(state): State<ApiState>,
    Path(id): Path<String>,
    query: Result<Query<Vec<(String, String)>>, QueryRejection>,
    headers: HeaderMap,
) -> Result<Json<V1Envelope>, V1Error> {
    let tenant = tenant_from_headers(&headers);
    let params = Params(query.map_err(query_rejection)?.0);
    let trace_id = parse_trace_id(&id)?;
    let window = micros_window(&params)?;
    let traces = fetch_jaeger(&state, &tenant, &[trace_id.to_vec()], window).await?;
    if traces.is_empty() {
        return Err(ApiError::NotFound("trace not found".into()).into());
    }
    let data: Vec<Value> = traces.into_iter().map(|(_, t)| t).collect();
    Ok(Json(envelope(json!(data), 0, None)))
}

#[utoipa::path(
    get,
    path = "/api/dependencies",
    tag = "jaeger-v1",
    summary = "Service dependency links",
    description = "Parent/child service pairs of spans in the window, with call counts.",
    params(
        ("endTs" = Option<u64>, Query, description = "End of the window, unix milliseconds (default: now)", example = 1714568400000_u64),
        ("lookback" = Option<u64>, Query, description = "Length of the window, milliseconds (default: one day)", example = 3600000),
        TenantHeader,
    ),
    responses(
        (status = 200, description = "The links", body = V1Envelope,
         example = json!({"data": [{"parent": "frontend", "child": "cart", "callCount": 42}], "total": 1, "limit": 0, "offset": 0, "errors": null})),
        (status = 400, description = "A malformed parameter; the envelope's `errors` names it", body = V1Envelope),
        V1ServerErrors,
    )
)]
async fn dependencies(
    State(state): State<ApiState>,
    query: Result<Query<Vec<(String, String)>>, QueryRejection>,
    headers: HeaderMap,
) -> Result<Json<V1Envelope>, V1Error> {
    let tenant = tenant_from_headers(&headers);
    let params = Params(query.map_err(query_rejection)?.0);
    let end_ms = params
        .unsigned(&["endTs"], "unix milliseconds")?
        .unwrap_or(now_nanos() / 1_000_000);
    let lookback = params
        .unsigned(&["lookback"], "milliseconds")?
        .unwrap_or(DEFAULT_DEPENDENCY_LOOKBACK_MS);
    let window = TimeRange {
        start_unix_nano: end_ms.saturating_sub(lookback).saturating_mul(1_000_000),
        end_unix_nano: end_ms.saturating_mul(1_000_000).saturating_add(999_999),
    };
    let edges = state.engine.jaeger_dependencies(&tenant, window).await?;
    let data: Vec<Value> = edges
        .into_iter()
        .map(|d| json!({ "parent": d.parent, "child": d.child, "callCount": d.call_count }))
        .collect();
    let total = data.len();
    Ok(Json(envelope(json!(data), total, None)))
}

// ---------------------------------------------------------------------------------------------
// api_v3

#[utoipa::path(
    get,
    path = "/api/v3/services",
    tag = "jaeger-v3",
    summary = "Service names (api_v3)",
    params(TenantHeader),
    responses(
        (status = 200, description = "The service names, sorted", body = Object, content_type = "application/json",
         example = json!({"services": ["cart", "checkout", "frontend"]})),
        V3ServerErrors,
    )
)]
async fn v3_services(
    State(state): State<ApiState>,
    headers: HeaderMap,
) -> Result<Json<Value>, V3Error> {
    let tenant = tenant_from_headers(&headers);
    let services = state.engine.jaeger_services(&tenant).await?;
    Ok(Json(json!({ "services": services })))
}

#[utoipa::path(
    get,
    path = "/api/v3/operations",
    tag = "jaeger-v3",
    summary = "Operations of a service (api_v3)",
    params(
        ("service" = String, Query, description = "The service name (required)", example = "cart"),
        ("spanKind" = Option<String>, Query, description = "Only this kind (also `span_kind`): internal, server, client, producer or consumer", example = "server"),
        TenantHeader,
    ),
    responses(
        (status = 200, description = "The operations", body = Object, content_type = "application/json",
         example = json!({"operations": [{"name": "GET /cart", "spanKind": "server"}]})),
        (status = 400, description = "A malformed parameter", body = V3ErrorBody),
        V3ServerErrors,
    )
)]
async fn v3_operations(
    State(state): State<ApiState>,
    query: Result<Query<Vec<(String, String)>>, QueryRejection>,
    headers: HeaderMap,
) -> Result<Json<Value>, V3Error> {
    let tenant = tenant_from_headers(&headers);
    let params = Params(query.map_err(query_rejection)?.0);
    let service = params
        .text(&["service"])
        .ok_or_else(|| bad("parameter 'service' is required"))?;
    let kind = params.span_kind(&["spanKind", "span_kind"])?;
    let operations = state
        .engine
        .jaeger_operations(&tenant, &service, kind)
        .await?;
    let operations: Vec<Value> = operations
        .into_iter()
        .map(|(name, kind)| {
            // api_v3 reports an unspecified kind as internal, as upstream does.
            json!({ "name": name, "spanKind": model::span_kind_name(kind).unwrap_or("internal") })
        })
        .collect();
    Ok(Json(json!({ "operations": operations })))
}

fn rfc3339_param(params: &Params, names: &[&str]) -> Result<Option<u64>, ApiError> {
    match params.get(names) {
        None => Ok(None),
        Some((_, v)) if v.trim().is_empty() => Ok(None),
        Some((name, v)) => {
            let nanos = params::parse_rfc3339(v.trim())
                .map_err(|e| bad(format!("malformed parameter {name}: {e}")))?;
            Ok(Some(u64::try_from(nanos).unwrap_or(0)))
        }
    }
}

/// A v1 answer holding one trace.
fn example_v1_traces() -> Value {
    json!({"data": [{"traceID": "4bf92f3577b34da6a3ce929d0e0e4736", "spans": [{"traceID": "4bf92f3577b34da6a3ce929d0e0e4736", "spanID": "00f067aa0ba902b7", "operationName": "GET /cart", "references": [], "startTime": 1714564800000000_u64, "duration": 120000, "tags": [{"key": "span.kind", "type": "string", "value": "server"}], "logs": [], "processID": "p1", "warnings": null}], "processes": {"p1": {"serviceName": "cart", "tags": []}}, "warnings": null}], "total": 0, "limit": 0, "offset": 0, "errors": null})
}

/// An api_v3 answer: OTLP/JSON resource spans.
fn example_v3_traces() -> Value {
    json!({"result": {"resourceSpans": crate::openapi::example_resource_spans()}})
}

fn no_traces() -> ApiError {
    ApiError::NotFound("No traces found".into())
}

#[utoipa::path(
    get,
    path = "/api/v3/traces/{trace_id}",
    tag = "jaeger-v3",
    summary = "Trace by id (api_v3, OTLP/JSON)",
    params(
        ("trace_id" = String, Path, description = "Trace id in hex, up to 32 digits", example = "4bf92f3577b34da6a3ce929d0e0e4736"),
        ("startTime" = Option<String>, Query, description = "Start of the window read, RFC 3339 (also `start_time`)", example = "2024-05-01T12:00:00Z"),
        ("endTime" = Option<String>, Query, description = "End of the window read, RFC 3339 (also `end_time`)", example = "2024-05-01T13:00:00Z"),
        TenantHeader,
    ),
    responses(
        (status = 200, description = "The trace as OTLP/JSON resource spans", body = Object, content_type = "application/json",
         example = example_v3_traces),
        (status = 404, description = "No span of this trace is stored", body = V3ErrorBody),
        (status = 400, description = "A malformed parameter", body = V3ErrorBody),
        V3ServerErrors,
    )
)]
async fn v3_trace_by_id(
    State(state): State<ApiState>,
    Path(id): Path<String>,
    query: Result<Query<Vec<(String, String)>>, QueryRejection>,
    headers: HeaderMap,
) -> Result<Json<Value>, V3Error> {
    let tenant = tenant_from_headers(&headers);
    let params = Params(query.map_err(query_rejection)?.0);
    let trace_id =
        parse_trace_id(&id).map_err(|e| bad(format!("malformed parameter trace_id: {e}")))?;
    let start = rfc3339_param(&params, &["startTime", "start_time"])?;
    let end = rfc3339_param(&params, &["endTime", "end_time"])?;
    let window = match (start, end) {
        (None, None) => None,
        (start, end) => {
            let window = TimeRange {
                start_unix_nano: start.unwrap_or(0),
                end_unix_nano: end.unwrap_or(u64::MAX),
            };
            if window.start_unix_nano > window.end_unix_nano {
                return Err(bad("parameter startTime is after endTime").into());
            }
            Some(window)
        }
    };
    let spans = fetch_otlp(&state, &tenant, &[trace_id.to_vec()], window)
        .await?
        .ok_or_else(no_traces)?;
    Ok(Json(json!({ "result": { "resourceSpans": spans } })))
}

fn parse_v3_search(params: &Params) -> Result<JaegerSearch, ApiError> {
    const MIN: [&str; 2] = ["query.startTimeMin", "query.start_time_min"];
    const MAX: [&str; 2] = ["query.startTimeMax", "query.start_time_max"];
    let (Some(start), Some(end)) = (rfc3339_param(params, &MIN)?, rfc3339_param(params, &MAX)?)
    else {
        return Err(bad(format!("{} and {} are required", MIN[0], MAX[0])));
    };
    if start > end {
        return Err(bad(format!("{} is after {}", MIN[0], MAX[0])));
    }
    let min = params.duration(&["query.durationMin", "query.duration_min"])?;
    let max = params.duration(&["query.durationMax", "query.duration_max"])?;
    check_durations(min, max, ("query.durationMin", "query.durationMax"))?;
    let mut tags = Vec::new();
    for text in params
        .all("query.attributes")
        .filter(|t| !t.trim().is_empty())
    {
        tags.extend(params::parse_tags_json("query.attributes", text).map_err(bad)?);
    }
    Ok(JaegerSearch {
        service: params.text(&["query.serviceName", "query.service_name"]),
        operation: params.text(&["query.operationName", "query.operation_name"]),
        tags,
        window: TimeRange {
            start_unix_nano: start,
            end_unix_nano: end,
        },
        min_duration_nano: min,
        max_duration_nano: max,
        limit: params.limit(&[
            "query.searchDepth",
            "query.search_depth",
            "query.num_traces",
            "query.numTraces",
        ])?,
    })
}

#[utoipa::path(
    get,
    path = "/api/v3/traces",
    tag = "jaeger-v3",
    summary = "Search traces (api_v3, OTLP/JSON)",
    description = "Every parameter also has a snake_case spelling (`query.service_name`, ...).",
    params(
        ("query.serviceName" = Option<String>, Query, description = "The service", example = "cart"),
        ("query.operationName" = Option<String>, Query, description = "The span name", example = "GET /cart"),
        ("query.attributes" = Option<String>, Query, description = "A JSON object of attributes one span of each trace has", example = r#"{"http.route":"/cart"}"#),
        ("query.startTimeMin" = String, Query, description = "Start of the window, RFC 3339 (required)", example = "2024-05-01T12:00:00Z"),
        ("query.startTimeMax" = String, Query, description = "End of the window, RFC 3339 (required)", example = "2024-05-01T13:00:00Z"),
        ("query.durationMin" = Option<String>, Query, description = "Smallest span duration, Go duration", example = "10ms"),
        ("query.durationMax" = Option<String>, Query, description = "Largest span duration, Go duration", example = "5s"),
        ("query.searchDepth" = Option<u32>, Query, description = "Most traces returned (default 100; also `query.num_traces`)", example = 20),
        TenantHeader,
    ),
    responses(
        (status = 200, description = "The traces' spans as OTLP/JSON resource spans", body = Object, content_type = "application/json",
         example = example_v3_traces),
        (status = 404, description = "No trace matched", body = V3ErrorBody),
        (status = 400, description = "A malformed parameter", body = V3ErrorBody),
        V3ServerErrors,
    )
)]
async fn v3_search(
    State(state): State<ApiState>,
    query: Result<Query<Vec<(String, String)>>, QueryRejection>,
    headers: HeaderMap,
) -> Result<Json<Value>, V3Error> {
    let tenant = tenant_from_headers(&headers);
    let params = Params(query.map_err(query_rejection)?.0);
    let search = parse_v3_search(&params)?;
    let ids = state.engine.jaeger_find_trace_ids(&tenant, &search).await?;
    let spans = fetch_otlp(&state, &tenant, &ids, Some(widen(search.window)))
        .await?
        .ok_or_else(no_traces)?;
    Ok(Json(json!({ "result": { "resourceSpans": spans } })))
}

/// `GET /api/openapi.json`: this listener's OpenAPI document.
#[utoipa::path(
    get,
    path = "/api/openapi.json",
    tag = "ops",
    summary = "This OpenAPI 3 document",
    responses((
        status = 200,
        description = "The OpenAPI 3 document of every endpoint on `--jaeger-addr`",
        body = Object,
        content_type = "application/json"
    ))
)]
async fn openapi_json() -> Json<&'static utoipa::openapi::OpenApi> {
    static DOCUMENT: OnceLock<utoipa::openapi::OpenApi> = OnceLock::new();
    Json(DOCUMENT.get_or_init(openapi))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(pairs: &[(&str, &str)]) -> Params {
        Params(
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        )
    }

    fn message(e: ApiError) -> String {
        match e {
            ApiError::BadRequest(m) => m,
            other => panic!("expected a bad request, got {other:?}"),
        }
    }

    #[test]
    fn envelopes_and_errors_keep_jaegers_shape() {
        let ok = serde_json::to_value(envelope(json!(["a"]), 1, None)).unwrap();
        assert_eq!(
            ok,
            json!({"data": ["a"], "total": 1, "limit": 0, "offset": 0, "errors": null})
        );
        let missing = V1ErrorItem {
            code: 404,
            msg: "trace not found".into(),
            trace_id: Some("ab".into()),
        };
        let err = serde_json::to_value(envelope(json!([]), 0, Some(vec![missing]))).unwrap();
        assert_eq!(
            err["errors"],
            json!([{"code": 404, "msg": "trace not found", "traceID": "ab"}])
        );
        let v3 = serde_json::to_value(V3ErrorBody {
            error: V3ErrorDetail {
                http_code: 400,
                message: "m".into(),
            },
        })
        .unwrap();
        assert_eq!(v3, json!({"error": {"httpCode": 400, "message": "m"}}));
    }

    #[test]
    fn v1_search_parameters() {
        let now = 1_700_000_000_000_000_000;
        let p = params(&[
            ("service", "cart"),
            ("operation", "GET /cart"),
            ("start", "1699999990000000"),
            ("end", "1700000000000000"),
            ("limit", "5"),
            ("minDuration", "1.5ms"),
            ("maxDuration", "1h30m"),
            ("tags", r#"{"error":"true"}"#),
            ("tag", "http.route:/a:b"),
            ("lookback", "1h"),
        ]);
        let V1Search::Find(s) = parse_v1_search(&p, now).unwrap() else {
            panic!("expected a search")
        };
        assert_eq!(s.service.as_deref(), Some("cart"));
        assert_eq!(s.operation.as_deref(), Some("GET /cart"));
        assert_eq!(s.window.start_unix_nano, 1_699_999_990_000_000_000);
        assert_eq!(s.window.end_unix_nano, 1_700_000_000_000_000_999);
        assert_eq!(s.limit, 5);
        assert_eq!(s.min_duration_nano, Some(1_500_000));
        assert_eq!(s.max_duration_nano, Some(5_400_000_000_000));
        assert_eq!(
            s.tags,
            vec![
                ("error".to_string(), "true".to_string()),
                ("http.route".to_string(), "/a:b".to_string())
            ]
        );

        let V1Search::Find(d) = parse_v1_search(&params(&[("service", "x")]), now).unwrap() else {
            panic!("expected a search")
        };
        assert_eq!(d.limit, DEFAULT_LIMIT);
        assert_eq!(d.window.end_unix_nano, now);
        assert_eq!(d.window.start_unix_nano, now - DEFAULT_LOOKBACK_NANOS);

        let V1Search::Ids(ids) =
            parse_v1_search(&params(&[("traceID", "abc"), ("traceID", "01")]), now).unwrap()
        else {
            panic!("expected ids")
        };
        assert_eq!(ids.len(), 2);
        assert_eq!(ids[0].1[15], 0xbc);
    }

    #[test]
    fn v1_search_errors_name_the_parameter() {
        let now = 1_700_000_000_000_000_000;
        for (pairs, needle) in [
            (vec![], "'service' is required"),
            (
                vec![("service", "a"), ("minDuration", "5")],
                "'minDuration'",
            ),
            (
                vec![("service", "a"), ("maxDuration", "1d")],
                "unknown unit",
            ),
            (
                vec![
                    ("service", "a"),
                    ("minDuration", "2s"),
                    ("maxDuration", "1s"),
                ],
                "'maxDuration' should be greater than 'minDuration'",
            ),
            (vec![("service", "a"), ("start", "yesterday")], "'start'"),
            (vec![("service", "a"), ("limit", "-1")], "'limit'"),
            (vec![("service", "a"), ("tag", "novalue")], "key:value"),
            (vec![("service", "a"), ("tags", "{bad")], "'tags'"),
            (vec![("traceID", "xyz")], "'traceID'"),
            (
                vec![("service", "a"), ("start", "20"), ("end", "10")],
                "after 'end'",
            ),
        ] {
            let err = parse_v1_search(&params(&pairs), now)
                .err()
                .expect("an error");
            let msg = message(err);
            assert!(msg.contains(needle), "{pairs:?}: {msg}");
        }
    }

    #[test]
    fn v3_search_parameters() {
        let p = params(&[
            ("query.service_name", "cart"),
            ("query.startTimeMin", "2024-05-01T12:00:00Z"),
            ("query.start_time_max", "2024-05-01T13:00:00.5Z"),
            ("query.durationMin", "10ms"),
            ("query.search_depth", "7"),
            ("query.attributes", r#"{"http.route":"/x"}"#),
        ]);
        let s = parse_v3_search(&p).unwrap();
        assert_eq!(s.service.as_deref(), Some("cart"));
        assert_eq!(s.window.start_unix_nano, 1_714_564_800_000_000_000);
        assert_eq!(s.window.end_unix_nano, 1_714_568_400_500_000_000);
        assert_eq!(s.min_duration_nano, Some(10_000_000));
        assert_eq!(s.limit, 7);
        assert_eq!(s.tags, vec![("http.route".to_string(), "/x".to_string())]);

        let missing = message(parse_v3_search(&params(&[("query.serviceName", "a")])).unwrap_err());
        assert!(missing.contains("are required"), "{missing}");
        let bad_time = message(
            parse_v3_search(&params(&[
                ("query.startTimeMin", "yesterday"),
                ("query.startTimeMax", "2024-05-01T13:00:00Z"),
            ]))
            .unwrap_err(),
        );
        assert!(bad_time.contains("query.startTimeMin"), "{bad_time}");
    }
}
