//! Tempo's TraceQL metrics API: `GET /api/metrics/query_range` and `GET /api/metrics/query`.
//!
//! ```text
//!  q=<traceql ending in a metrics function>  start  end  step
//!    -> align start down / end up to a multiple of step (range form, as Tempo's frontend)
//!    -> QueryEngine::metrics_query_range: span_metrics_1m when exact, else spans
//!    -> {"series": [{"labels": [KeyValue], "promLabels": "{k=\"v\"}",
//!                    "samples": [{"timestampMs": "<int64>", "value": f}]}],
//!        "metrics": {"source": "span_metrics_1m" | "spans"}}
//! ```
//!
//! Times: unix seconds (fractions allowed); integers of 11 digits or more are read as
//! milliseconds, microseconds or nanoseconds by their size (Tempo takes nanoseconds too); or
//! RFC 3339. The default window is the hour before now. The default step gives about 100
//! points, rounded up to whole minutes so that the rollups can answer (at least one minute).

use std::time::Duration;

use axum::extract::{Query, State};
use axum::http::HeaderMap;
use axum::Json;
use serde::{Deserialize, Serialize};
use tracelake_query::metrics::{LabelValue, MetricsRequest, MetricsResponse, MetricsSeries};
use tracelake_query::traceql;
use utoipa::{IntoParams, ToSchema};

use crate::openapi::{ErrorBody, QueryErrors, TenantHeader};
use crate::{tenant_from_headers, ApiError, ApiState};

const NANOS: u64 = 1_000_000_000;
const MINUTE_NANOS: u64 = 60 * NANOS;
/// The window when `start` is absent: the hour before `end`.
const DEFAULT_WINDOW_NANOS: u64 = 3600 * NANOS;
/// Points the default step aims at.
const DEFAULT_POINTS: u64 = 100;

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub(crate) struct QueryRangeParams {
    /// A TraceQL metrics query: a spanset filter, then `rate()`, `count_over_time()`,
    /// `quantile_over_time(duration, q, ...)` or `histogram_over_time(duration)`, each with an
    /// optional `by(...)`.
    #[param(
        example = r#"{ resource.service.name = "cart" && status = error } | rate() by (name)"#
    )]
    q: Option<String>,
    /// Window start: unix seconds (or ms/µs/ns by size, or RFC 3339); default an hour before
    /// `end`. Rounded down to a multiple of `step`.
    #[param(value_type = Option<String>, example = "1714564800")]
    start: Option<String>,
    /// Window end (exclusive), as `start`; default now. Rounded up to a multiple of `step`.
    #[param(value_type = Option<String>, example = "1714568400")]
    end: Option<String>,
    /// Step between points: a duration (`60s`, `5m`, `1h`) or seconds (`300`). Default: about
    /// 100 points, in whole minutes.
    #[param(value_type = Option<String>, example = "60s")]
    step: Option<String>,
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub(crate) struct QueryInstantParams {
    /// A TraceQL metrics query, as for `/api/metrics/query_range`.
    #[param(example = r#"{ } | quantile_over_time(duration, 0.99) by (resource.service.name)"#)]
    q: Option<String>,
    /// Window start, as for `/api/metrics/query_range` (not rounded).
    #[param(value_type = Option<String>, example = "1714564800")]
    start: Option<String>,
    /// Window end (exclusive), as for `/api/metrics/query_range` (not rounded).
    #[param(value_type = Option<String>, example = "1714568400")]
    end: Option<String>,
}

/// A time parameter in unix nanoseconds.
fn time_nanos(name: &str, value: &Option<String>) -> Result<Option<u64>, ApiError> {
    let Some(v) = value.as_deref().map(str::trim).filter(|v| !v.is_empty()) else {
        return Ok(None);
    };
    let invalid = || {
        ApiError::BadRequest(format!(
            "invalid {name} {v:?}: expected unix seconds (or nanoseconds) or an RFC 3339 time"
        ))
    };
    if let Ok(n) = v.parse::<u64>() {
        // By size: seconds until the year 5138, then milliseconds, microseconds, nanoseconds.
        return Ok(Some(match n {
            0..100_000_000_000 => n.saturating_mul(NANOS),
            100_000_000_000..100_000_000_000_000 => n.saturating_mul(1_000_000),
            100_000_000_000_000..100_000_000_000_000_000 => n.saturating_mul(1_000),
            _ => n,
        }));
    }
    if let Ok(secs) = v.parse::<f64>() {
        if (0.0..1e11).contains(&secs) {
            return Ok(Some((secs * 1e9).round() as u64));
        }
        return Err(invalid());
    }
    let t = chrono::DateTime::parse_from_rfc3339(v).map_err(|_| invalid())?;
    t.timestamp_nanos_opt()
        .and_then(|n| u64::try_from(n).ok())
        .map(Some)
        .ok_or_else(invalid)
}

/// The step in nanoseconds: seconds (`300`, `0.5`) or a duration (`5m`, `1m30s`).
fn step_nanos(value: &Option<String>) -> Result<Option<u64>, ApiError> {
    let Some(v) = value.as_deref().map(str::trim).filter(|v| !v.is_empty()) else {
        return Ok(None);
    };
    let step = match v.parse::<f64>() {
        Ok(secs) if secs.is_finite() && secs >= 0.0 => Duration::from_secs_f64(secs),
        Ok(_) => Duration::ZERO,
        Err(_) => traceql::parse_duration(v).map_err(|e| {
            ApiError::BadRequest(format!("invalid step: {e}; or give seconds, like step=60"))
        })?,
    };
    let nanos = u64::try_from(step.as_nanos()).unwrap_or(u64::MAX);
    if nanos == 0 {
        return Err(ApiError::BadRequest(format!(
            "invalid step {v:?}: it must be positive, like 60s or 5m"
        )));
    }
    Ok(Some(nanos))
}

fn parse_query(q: &Option<String>) -> Result<traceql::Query, ApiError> {
    let text = q
        .as_deref()
        .map(str::trim)
        .filter(|q| !q.is_empty())
        .ok_or_else(|| {
            ApiError::BadRequest(
                "q is required: a TraceQL metrics query like { } | rate() by (resource.service.name)"
                    .into(),
            )
        })?;
    traceql::parse(text).map_err(|e| ApiError::BadRequest(format!("invalid TraceQL query: {e}")))
}

/// `(start, end)` in nanoseconds, with the defaults, checked to be in order.
fn window(
    start: &Option<String>,
    end: &Option<String>,
    now_nanos: u64,
) -> Result<(u64, u64), ApiError> {
    let end = time_nanos("end", end)?.unwrap_or(now_nanos);
    let start = time_nanos("start", start)?.unwrap_or(end.saturating_sub(DEFAULT_WINDOW_NANOS));
    if end <= start {
        return Err(ApiError::BadRequest(format!(
            "end ({}) must be after start ({})",
            end / NANOS,
            start / NANOS
        )));
    }
    Ok((start, end))
}

impl QueryRangeParams {
    fn request(&self, now_nanos: u64) -> Result<MetricsRequest, ApiError> {
        let query = parse_query(&self.q)?;
        let (start, end) = window(&self.start, &self.end, now_nanos)?;
        let step = match step_nanos(&self.step)? {
            Some(step) => step,
            None => (end - start)
                .div_ceil(DEFAULT_POINTS)
                .div_ceil(MINUTE_NANOS)
                .max(1)
                .saturating_mul(MINUTE_NANOS),
        };
        // Tempo aligns the window to the step, so that points fall on multiples of it.
        let start = start - start % step;
        let end = match end % step {
            0 => end,
            r => end.saturating_add(step - r),
        };
        let request = MetricsRequest {
            query,
            start_unix_nano: start,
            end_unix_nano: end,
            step_nanos: step,
        };
        request.validate()?;
        Ok(request)
    }
}

impl QueryInstantParams {
    fn request(&self, now_nanos: u64) -> Result<MetricsRequest, ApiError> {
        let query = parse_query(&self.q)?;
        let (start, end) = window(&self.start, &self.end, now_nanos)?;
        let request = MetricsRequest {
            query,
            start_unix_nano: start,
            end_unix_nano: end,
            step_nanos: end - start,
        };
        request.validate()?;
        Ok(request)
    }
}

fn now_nanos() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
}

/// An OTLP `AnyValue` in protobuf JSON: exactly one field set (none for a missing value).
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub(crate) struct AnyValueJson {
    #[serde(skip_serializing_if = "Option::is_none")]
    string_value: Option<String>,
    /// int64, as a string (protobuf JSON).
    #[serde(skip_serializing_if = "Option::is_none")]
    int_value: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    double_value: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    bool_value: Option<bool>,
}

/// A series label: an OTLP `KeyValue`.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct LabelJson {
    /// `resource.service.name`, `name`, `p` (quantile), `__bucket` (histogram upper bound,
    /// seconds), or `__name__`.
    #[schema(example = "resource.service.name")]
    key: String,
    value: AnyValueJson,
}

/// One point.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub(crate) struct SampleJson {
    /// Start of the step, unix milliseconds, as a string (protobuf JSON int64).
    #[schema(example = "1714564800000")]
    timestamp_ms: String,
    /// Spans per second (`rate`), spans per step (`count_over_time`, `histogram_over_time`),
    /// or seconds (`quantile_over_time`).
    #[schema(example = 1.5)]
    value: f64,
}

/// A series of `/api/metrics/query_range`.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub(crate) struct RangeSeriesJson {
    labels: Vec<LabelJson>,
    /// The labels in Prometheus text form.
    #[schema(example = r#"{resource.service.name="cart"}"#)]
    prom_labels: String,
    /// Oldest first; rates and counts have every step (0 without spans), quantiles only steps
    /// with spans.
    samples: Vec<SampleJson>,
}

/// A series of `/api/metrics/query`.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub(crate) struct InstantSeriesJson {
    labels: Vec<LabelJson>,
    /// The labels in Prometheus text form.
    #[schema(example = r#"{resource.service.name="cart"}"#)]
    prom_labels: String,
    /// The function's value over the whole window.
    #[schema(example = 1.5)]
    value: f64,
}

/// How the query was answered.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct QueryMetricsJson {
    /// The table read: `span_metrics_1m` (the per-minute rollups) or `spans`.
    #[schema(example = "span_metrics_1m")]
    source: &'static str,
}

/// The reply of `/api/metrics/query_range`.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct QueryRangeResponse {
    /// One series per `by()` combination (and quantile or histogram bucket).
    series: Vec<RangeSeriesJson>,
    metrics: QueryMetricsJson,
}

/// The reply of `/api/metrics/query`.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct QueryInstantResponse {
    /// One series per `by()` combination (and quantile or histogram bucket).
    series: Vec<InstantSeriesJson>,
    metrics: QueryMetricsJson,
}

fn any_value(v: &LabelValue) -> AnyValueJson {
    let mut out = AnyValueJson {
        string_value: None,
        int_value: None,
        double_value: None,
        bool_value: None,
    };
    match v {
        LabelValue::String(s) => out.string_value = Some(s.clone()),
        LabelValue::Int(n) => out.int_value = Some(n.to_string()),
        LabelValue::Float(f) => out.double_value = Some(*f),
        LabelValue::Bool(b) => out.bool_value = Some(*b),
        LabelValue::Nil => {}
    }
    out
}

fn labels_json(s: &MetricsSeries) -> Vec<LabelJson> {
    s.labels
        .iter()
        .map(|(key, v)| LabelJson {
            key: key.clone(),
            value: any_value(v),
        })
        .collect()
}

/// `{k="v", k2="v2"}`, values escaped as Prometheus does.
fn prom_labels(s: &MetricsSeries) -> String {
    let pairs: Vec<String> = s
        .labels
        .iter()
        .map(|(key, v)| {
            let text = match v {
                LabelValue::String(s) => s.clone(),
                LabelValue::Int(n) => n.to_string(),
                LabelValue::Float(f) => f.to_string(),
                LabelValue::Bool(b) => b.to_string(),
                LabelValue::Nil => "nil".into(),
            };
            let escaped = text
                .replace('\\', r"\\")
                .replace('"', "\\\"")
                .replace('\n', r"\n");
            format!("{key}=\"{escaped}\"")
        })
        .collect();
    format!("{{{}}}", pairs.join(", "))
}

fn metrics_json(r: &MetricsResponse) -> QueryMetricsJson {
    QueryMetricsJson {
        source: r.source.as_str(),
    }
}

/// `GET /api/metrics/query_range`.
#[utoipa::path(
    get,
    path = "/api/metrics/query_range",
    tag = "tempo",
    summary = "TraceQL metrics over time (Tempo)",
    description = "Runs a TraceQL metrics query (`rate()`, `count_over_time()`, \
                   `quantile_over_time(duration, q...)`, `histogram_over_time(duration)`, each \
                   with an optional `by(...)`) over the spans a single spanset filter matches. \
                   Counts are weighted by `adjusted_count`, so they stay unbiased under tail \
                   sampling; quantiles are in seconds, within 1 % (DDSketch). Answered from the \
                   per-minute rollups when the filter and grouping use only service, span name, \
                   kind, `status = error` and `http.route` and the window and step are whole \
                   minutes (`metrics.source` = `span_metrics_1m`), else from the spans.",
    params(QueryRangeParams, TenantHeader),
    responses(
        (status = 200, description = "The series", body = QueryRangeResponse),
        (status = 400, description = "A missing or invalid query, a query that is not a metrics query or is not supported, or an invalid window or step; the message says which", body = ErrorBody),
        QueryErrors,
    )
)]
pub(crate) async fn query_range(
    State(state): State<ApiState>,
    Query(params): Query<QueryRangeParams>,
    headers: HeaderMap,
) -> Result<Json<QueryRangeResponse>, ApiError> {
    let tenant = tenant_from_headers(&headers);
    let request = params.request(now_nanos())?;
    let response = state.engine.metrics_query_range(&tenant, request).await?;
    Ok(Json(QueryRangeResponse {
        series: response
            .series
            .iter()
            .map(|s| RangeSeriesJson {
                labels: labels_json(s),
                prom_labels: prom_labels(s),
                samples: s
                    .samples
                    .iter()
                    .map(|p| SampleJson {
                        timestamp_ms: p.timestamp_ms.to_string(),
                        value: p.value,
                    })
                    .collect(),
            })
            .collect(),
        metrics: metrics_json(&response),
    }))
}

/// `GET /api/metrics/query`.
#[utoipa::path(
    get,
    path = "/api/metrics/query",
    tag = "tempo",
    summary = "TraceQL metrics over a window, one value per series (Tempo)",
    description = "The instant form of `/api/metrics/query_range`: one step spanning \
                   `[start, end)`. The rollups answer when `start` and `end` are whole minutes \
                   and the query allows it.",
    params(QueryInstantParams, TenantHeader),
    responses(
        (status = 200, description = "The series", body = QueryInstantResponse),
        (status = 400, description = "A missing or invalid query, a query that is not a metrics query or is not supported, or an invalid window; the message says which", body = ErrorBody),
        QueryErrors,
    )
)]
pub(crate) async fn query_instant(
    State(state): State<ApiState>,
    Query(params): Query<QueryInstantParams>,
    headers: HeaderMap,
) -> Result<Json<QueryInstantResponse>, ApiError> {
    let tenant = tenant_from_headers(&headers);
    let request = params.request(now_nanos())?;
    let response = state.engine.metrics_query_range(&tenant, request).await?;
    Ok(Json(QueryInstantResponse {
        series: response
            .series
            .iter()
            .filter_map(|s| {
                Some(InstantSeriesJson {
                    labels: labels_json(s),
                    prom_labels: prom_labels(s),
                    value: s.samples.first()?.value,
                })
            })
            .collect(),
        metrics: metrics_json(&response),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn range(pairs: &[(&str, &str)]) -> Result<MetricsRequest, String> {
        let get = |k: &str| {
            pairs
                .iter()
                .find(|(key, _)| *key == k)
                .map(|(_, v)| v.to_string())
        };
        let params = QueryRangeParams {
            q: get("q"),
            start: get("start"),
            end: get("end"),
            step: get("step"),
        };
        params.request(7_200 * NANOS).map_err(|e| match e {
            ApiError::BadRequest(m) => m,
            other => panic!("expected a 400, got {other:?}"),
        })
    }

    #[test]
    fn times_steps_and_defaults() {
        let q = ("q", "{ } | rate()");
        let r = range(&[q, ("start", "600"), ("end", "1200"), ("step", "1m")]).unwrap();
        assert_eq!(
            (r.start_unix_nano, r.end_unix_nano, r.step_nanos),
            (600 * NANOS, 1200 * NANOS, 60 * NANOS)
        );
        // Step seconds; the window is aligned to the step.
        let r = range(&[q, ("start", "610"), ("end", "1199"), ("step", "30")]).unwrap();
        assert_eq!(
            (r.start_unix_nano, r.end_unix_nano, r.step_nanos),
            (600 * NANOS, 1200 * NANOS, 30 * NANOS)
        );
        // Seconds, milliseconds, nanoseconds and RFC 3339 name the same time.
        for t in [
            "1700000000",
            "1700000000000",
            "1700000000000000",
            "1700000000000000000",
            "2023-11-14T22:13:20Z",
            "2023-11-14T23:13:20+01:00",
        ] {
            assert_eq!(
                time_nanos("start", &Some(t.into())).ok().flatten(),
                Some(1_700_000_000 * NANOS),
                "{t}"
            );
        }
        let r = range(&[q, ("start", "600.5"), ("end", "601"), ("step", "500ms")]).unwrap();
        assert_eq!(r.start_unix_nano, 600_500_000_000);
        // Defaults: the hour before now, ~100 points in whole minutes.
        let r = range(&[q]).unwrap();
        assert_eq!(
            (r.start_unix_nano, r.end_unix_nano, r.step_nanos),
            (3_600 * NANOS, 7_200 * NANOS, 60 * NANOS)
        );
        let r = range(&[q, ("start", "0"), ("end", "86400")]).unwrap();
        assert_eq!(r.step_nanos, 15 * 60 * NANOS);
    }

    #[test]
    fn bad_parameters_say_what_to_fix() {
        let q = ("q", "{ } | rate()");
        assert!(range(&[]).unwrap_err().contains("q is required"));
        assert!(range(&[("q", "{ name = }")])
            .unwrap_err()
            .contains("invalid TraceQL query: parse error at line 1"));
        assert!(range(&[q, ("step", "soon")])
            .unwrap_err()
            .contains("invalid step"));
        assert!(range(&[q, ("step", "0s")])
            .unwrap_err()
            .contains("must be positive"));
        assert!(range(&[q, ("start", "yesterday")])
            .unwrap_err()
            .contains("invalid start \"yesterday\""));
        assert!(range(&[q, ("start", "900"), ("end", "600")])
            .unwrap_err()
            .contains("must be after start"));
        assert!(
            range(&[q, ("start", "0"), ("end", "100000"), ("step", "1s")])
                .unwrap_err()
                .contains("points per series")
        );
    }

    #[test]
    fn labels_print_as_prometheus_text() {
        let s = MetricsSeries {
            labels: vec![
                (
                    "resource.service.name".into(),
                    LabelValue::String("a\"b".into()),
                ),
                ("p".into(), LabelValue::Float(0.99)),
            ],
            samples: vec![],
        };
        assert_eq!(
            prom_labels(&s),
            r#"{resource.service.name="a\"b", p="0.99"}"#
        );
        let json = serde_json::to_value(labels_json(&s)).unwrap();
        assert_eq!(
            json,
            serde_json::json!([
                {"key": "resource.service.name", "value": {"stringValue": "a\"b"}},
                {"key": "p", "value": {"doubleValue": 0.99}}
            ])
        );
    }
}
