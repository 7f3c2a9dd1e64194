//! Tempo search: `GET /api/search` with TraceQL (`q`) or logfmt tags (`tags`).
//!
//! Parameters, as Tempo takes them: `q` or `tags`, `minDuration` and `maxDuration` (trace
//! duration, e.g. `100ms`), `limit` (default 20), `start` and `end` (unix seconds; default the
//! last 24 hours), `spss` (spans listed per spanset, default 3).

use std::time::Duration;

use axum::extract::{Query, State};
use axum::http::HeaderMap;
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value as JsonValue};
use tracelake_query::search::{
    tags_to_traceql, MatchedSpanset, SearchRequest, SearchResponse, TraceMatch, Value, MAX_LIMIT,
};
use tracelake_query::traceql;
use utoipa::IntoParams;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::openapi::{ErrorBody, QueryErrors, TenantHeader};
use crate::{tenant_from_headers, ApiError, ApiState};

/// The routes of this module, merged into the `--http-addr` router.
pub(crate) fn routes() -> OpenApiRouter<ApiState> {
    OpenApiRouter::new().routes(routes!(search))
}

/// What Tempo shows for a trace whose root span is not stored.
const NO_ROOT: &str = "<root span not yet received>";

const DEFAULT_LIMIT: usize = 20;
const DEFAULT_SPSS: usize = 3;
const DEFAULT_WINDOW_SECS: u64 = 24 * 3600;

#[derive(Debug, Deserialize, IntoParams)]
#[serde(rename_all = "camelCase")]
#[into_params(parameter_in = Query)]
pub(crate) struct SearchParams {
    /// A TraceQL query; takes precedence over `tags`. Neither: every trace (`{ }`).
    #[param(example = r#"{ resource.service.name = "cart" && status = error }"#)]
    q: Option<String>,
    /// Legacy logfmt tags, each a condition on span or resource attributes (`name` and
    /// `status` are the intrinsics).
    #[param(example = "service.name=cart http.response.status_code=500")]
    tags: Option<String>,
    /// Smallest trace duration, e.g. `100ms`.
    #[param(example = "100ms")]
    min_duration: Option<String>,
    /// Largest trace duration, e.g. `5s`.
    max_duration: Option<String>,
    /// Most traces returned (default 20).
    #[param(value_type = Option<u32>, example = 20)]
    limit: Option<String>,
    /// Start of the window, unix seconds (default: 24 hours before `end`).
    #[param(value_type = Option<u64>, example = 1714564800)]
    start: Option<String>,
    /// End of the window, unix seconds (default: now).
    #[param(value_type = Option<u64>, example = 1714568400)]
    end: Option<String>,
    /// Spans listed per spanset (default 3).
    #[param(value_type = Option<u32>, example = 3)]
    spss: Option<String>,
}

pub(crate) fn number<T: std::str::FromStr>(
    name: &str,
    value: &Option<String>,
) -> Result<Option<T>, ApiError> {
    match value.as_deref().map(str::trim) {
        None | Some("") => Ok(None),
        Some(v) => v.parse().map(Some).map_err(|_| {
            ApiError::BadRequest(format!(
                "invalid {name} {v:?}: expected a non-negative integer"
            ))
        }),
    }
}

/// Unix seconds now.
pub(crate) fn now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// `start`/`end` in unix seconds; `end` defaults to `now`, `start` to `default_secs` before it.
pub(crate) fn window_secs(
    start: &Option<String>,
    end: &Option<String>,
    now: u64,
    default_secs: u64,
) -> Result<(u64, u64), ApiError> {
    let end = number::<u64>("end", end)?.unwrap_or(now);
    let start = number::<u64>("start", start)?.unwrap_or_else(|| end.saturating_sub(default_secs));
    Ok((start, end))
}

/// A step in seconds for series over per-minute rollups: seconds (`300`) or a duration (`5m`);
/// when absent, about `points` steps over `window_secs`, rounded up to a whole minute. A step
/// that is not whole seconds comes back as 1, which the series' checks refuse as not whole
/// minutes.
pub(crate) fn minute_step(
    value: &Option<String>,
    window_secs: u64,
    points: u64,
) -> Result<u64, ApiError> {
    Ok(match value.as_deref().map(str::trim) {
        None | Some("") => (window_secs / points).div_ceil(60).max(1) * 60,
        Some(s) if s.bytes().all(|b| b.is_ascii_digit()) => {
            number::<u64>("step", value)?.unwrap_or(0)
        }
        Some(_) => duration("step", value)?.map_or(0, |d| {
            if d.subsec_nanos() == 0 {
                d.as_secs()
            } else {
                1
            }
        }),
    })
}

pub(crate) fn duration(name: &str, value: &Option<String>) -> Result<Option<Duration>, ApiError> {
    match value.as_deref().map(str::trim) {
        None | Some("") => Ok(None),
        Some(v) => traceql::parse_duration(v)
            .map(Some)
            .map_err(|e| ApiError::BadRequest(format!("invalid {name}: {e}"))),
    }
}

impl SearchParams {
    fn request(&self, now_secs: u64) -> Result<SearchRequest, ApiError> {
        let query_text = match (&self.q, &self.tags) {
            (Some(q), _) if !q.trim().is_empty() => q.clone(),
            (_, Some(tags)) => tags_to_traceql(tags).map_err(ApiError::from)?,
            _ => "{ }".to_string(),
        };
        let query = traceql::parse(&query_text)
            .map_err(|e| ApiError::BadRequest(format!("invalid TraceQL query: {e}")))?;
        let limit = number::<usize>("limit", &self.limit)?.unwrap_or(DEFAULT_LIMIT);
        if limit == 0 || limit > MAX_LIMIT {
            return Err(ApiError::BadRequest(format!(
                "invalid limit {limit}: expected 1 to {MAX_LIMIT}"
            )));
        }
        let spss = number::<usize>("spss", &self.spss)?.unwrap_or(DEFAULT_SPSS);
        let (start, end) = window_secs(&self.start, &self.end, now_secs, DEFAULT_WINDOW_SECS)?;
        if end < start {
            return Err(ApiError::BadRequest(format!(
                "end ({end}) is before start ({start})"
            )));
        }
        let min_duration = duration("minDuration", &self.min_duration)?;
        let max_duration = duration("maxDuration", &self.max_duration)?;
        if let (Some(min), Some(max)) = (min_duration, max_duration) {
            if max < min {
                return Err(ApiError::BadRequest(format!(
                    "maxDuration ({max:?}) is less than minDuration ({min:?})"
                )));
            }
        }
        Ok(SearchRequest {
            query,
            start_unix_nano: start.saturating_mul(1_000_000_000),
            end_unix_nano: end
                .saturating_add(1)
                .saturating_mul(1_000_000_000)
                .saturating_sub(1),
            min_duration,
            max_duration,
            limit,
            spans_per_spanset: spss,
        })
    }
}

/// `GET /api/search`.
#[utoipa::path(
    get,
    path = "/api/search",
    tag = "tempo",
    summary = "Search traces with TraceQL or logfmt tags (Tempo)",
    params(SearchParams, TenantHeader),
    responses(
        (status = 200, description = "Matching traces, each with its root span's service and name, start, duration and matching spansets", body = Object, content_type = "application/json",
         example = json!({
            "traces": [{
                "traceID": "4bf92f3577b34da6a3ce929d0e0e4736",
                "rootServiceName": "frontend",
                "rootTraceName": "GET /checkout",
                "startTimeUnixNano": "1714564800000000000",
                "durationMs": 120,
                "spanSet": {"spans": [{"spanID": "00f067aa0ba902b7", "name": "GET /cart", "startTimeUnixNano": "1714564800010000000", "durationNanos": "35000000", "attributes": [{"key": "service.name", "value": {"stringValue": "cart"}}]}], "matched": 1},
                "spanSets": [{"spans": [{"spanID": "00f067aa0ba902b7", "name": "GET /cart", "startTimeUnixNano": "1714564800010000000", "durationNanos": "35000000", "attributes": [{"key": "service.name", "value": {"stringValue": "cart"}}]}], "matched": 1}]
            }],
            "metrics": {"inspectedTraces": 1, "inspectedSpans": "12", "inspectedBytes": "0", "candidateTraces": 1, "completedJobs": 1, "totalJobs": 1}
         })),
        (status = 400, description = "Invalid TraceQL (the message names the line, column and what was expected) or parameter", body = ErrorBody),
        QueryErrors,
    )
)]
async fn search(
    State(state): State<ApiState>,
    Query(params): Query<SearchParams>,
    headers: HeaderMap,
) -> Result<Json<JsonValue>, ApiError> {
    let tenant = tenant_from_headers(&headers);
    let request = params.request(now_secs())?;
    let response = state.engine.search(&tenant, request).await?;
    Ok(Json(response_json(&response)))
}

/// Tempo's hex form of a trace id: leading zeros trimmed.
fn trace_id_hex(id: &[u8; 16]) -> String {
    let hex = hex::encode(id);
    let trimmed = hex.trim_start_matches('0');
    if trimmed.is_empty() {
        "0".into()
    } else {
        trimmed.into()
    }
}

/// An OTLP JSON `AnyValue`.
fn any_value(v: &Value) -> JsonValue {
    match v {
        Value::String(s) => json!({ "stringValue": s }),
        Value::Int(n) | Value::Duration(n) => json!({ "intValue": n.to_string() }),
        Value::Float(f) => json!({ "doubleValue": f }),
        Value::Bool(b) => json!({ "boolValue": b }),
        Value::Status(s) => json!({ "stringValue": s.as_str() }),
        Value::Kind(k) => json!({ "stringValue": k.as_str() }),
        Value::Id(id) => json!({ "stringValue": hex::encode(id) }),
    }
}

fn key_values(kvs: &[(String, Value)]) -> Vec<JsonValue> {
    kvs.iter()
        .map(|(k, v)| json!({ "key": k, "value": any_value(v) }))
        .collect()
}

fn spanset_json(set: &MatchedSpanset) -> JsonValue {
    let spans: Vec<JsonValue> = set
        .spans
        .iter()
        .map(|s| {
            let mut span = json!({
                "spanID": hex::encode(&s.span_id),
                "name": s.name,
                "startTimeUnixNano": s.start_unix_nano.to_string(),
                "durationNanos": s.duration_nanos.to_string(),
            });
            if !s.attributes.is_empty() {
                span["attributes"] = json!(key_values(&s.attributes));
            }
            span
        })
        .collect();
    let mut out = json!({ "spans": spans, "matched": set.matched });
    if !set.attributes.is_empty() {
        out["attributes"] = json!(key_values(&set.attributes));
    }
    out
}

fn trace_json(t: &TraceMatch) -> JsonValue {
    let spansets: Vec<JsonValue> = t.spansets.iter().map(spanset_json).collect();
    let mut out = json!({
        "traceID": trace_id_hex(&t.trace_id),
        "rootServiceName": t.root_service.as_deref().unwrap_or(NO_ROOT),
        "startTimeUnixNano": t.start_unix_nano.to_string(),
        "durationMs": t.duration_nanos / 1_000_000,
    });
    if let Some(name) = &t.root_name {
        out["rootTraceName"] = json!(name);
    }
    if let Some(first) = spansets.first() {
        // Older Grafana versions read the first spanset from `spanSet`.
        out["spanSet"] = first.clone();
    }
    out["spanSets"] = json!(spansets);
    out
}

fn response_json(r: &SearchResponse) -> JsonValue {
    json!({
        "traces": r.traces.iter().map(trace_json).collect::<Vec<_>>(),
        "metrics": {
            "inspectedTraces": r.inspected_traces,
            "inspectedSpans": r.inspected_spans.to_string(),
            "inspectedBytes": "0",
            "candidateTraces": r.candidate_traces,
            "completedJobs": 1,
            "totalJobs": 1,
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(pairs: &[(&str, &str)]) -> SearchParams {
        let query: String = pairs
            .iter()
            .map(|(k, v)| format!("{k}={}", urlencode(v)))
            .collect::<Vec<_>>()
            .join("&");
        let uri: axum::http::Uri = format!("/api/search?{query}").parse().unwrap();
        Query::<SearchParams>::try_from_uri(&uri).unwrap().0
    }

    fn urlencode(s: &str) -> String {
        s.bytes()
            .map(|b| match b {
                b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'-' | b'_' | b'.' => {
                    (b as char).to_string()
                }
                b => format!("%{b:02X}"),
            })
            .collect()
    }

    fn error(pairs: &[(&str, &str)]) -> String {
        match params(pairs).request(1_000_000) {
            Err(ApiError::BadRequest(m)) => m,
            other => panic!("expected a 400, got {other:?}"),
        }
    }

    #[test]
    fn parameters_are_checked_with_clear_errors() {
        let ok = params(&[
            ("q", "{ status = error }"),
            ("limit", "5"),
            ("start", "10"),
            ("end", "20"),
        ])
        .request(1_000_000)
        .unwrap();
        assert_eq!(ok.limit, 5);
        assert_eq!(ok.start_unix_nano, 10_000_000_000);
        assert_eq!(ok.end_unix_nano, 20_999_999_999);
        let default = params(&[]).request(1_000_000).unwrap();
        assert_eq!(default.limit, DEFAULT_LIMIT);
        assert_eq!(default.spans_per_spanset, DEFAULT_SPSS);
        assert_eq!(
            default.start_unix_nano,
            (1_000_000 - DEFAULT_WINDOW_SECS) * 1_000_000_000
        );

        assert!(error(&[("q", "{ span.foo = }")]).contains("line 1, column 14"));
        assert!(error(&[("limit", "x")]).contains("invalid limit"));
        assert!(error(&[("limit", "0")]).contains("expected 1 to"));
        assert!(error(&[("start", "20"), ("end", "10")]).contains("before start"));
        assert!(error(&[("minDuration", "5 apples")]).contains("not a duration"));
        assert!(error(&[("minDuration", "2s"), ("maxDuration", "1s")]).contains("less than"));
        assert!(error(&[("tags", "novalue")]).contains("logfmt"));
        let tags = params(&[("tags", "service.name=cart")]).request(1).unwrap();
        assert_eq!(tags.query.to_string(), r#"{ .service.name = "cart" }"#);
    }

    #[test]
    fn trace_ids_drop_leading_zeros_as_tempo_does() {
        let mut id = [0u8; 16];
        id[15] = 0xab;
        assert_eq!(trace_id_hex(&id), "ab");
        assert_eq!(trace_id_hex(&[0u8; 16]), "0");
        assert_eq!(trace_id_hex(&[0x12; 16]), "12".repeat(16));
    }
}
