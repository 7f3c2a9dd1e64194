//! Tag names and tag values, v1 and v2.
//!
//! - Names are the keys of the span and resource attribute maps (dedicated columns such as
//!   `service_name` are copies of keys that stay in the maps, so each key is listed once), plus,
//!   in the `intrinsic` scope, Tempo's list of intrinsics. `event`, `link` and `instrumentation`
//!   attribute keys are listed when that scope is asked for by name; `all` (the v2 default) is
//!   resource, span and intrinsic, which keeps Grafana's autocomplete to two scans.
//! - Without `start`/`end` the window is the last 24 hours (and the next hour, for clocks
//!   that run ahead). Tempo without them reads only its
//!   live store (recent spans); 24 h is the same idea with a predictable bound. The window prunes
//!   `date`/`hour` partitions, so it is widened to whole hours.
//! - At most `limit` names per scope and `limit` values (default and ceiling [`MAX_ITEMS`]), and
//!   values stop at [`MAX_VALUE_BYTES`] bytes, like Tempo's `max_bytes_per_tag_values_query`.

use std::time::{SystemTime, UNIX_EPOCH};

use axum::extract::{Path, Query, State};
use axum::http::HeaderMap;
use axum::Json;
use datafusion::logical_expr::Expr;
use serde::{Deserialize, Serialize};
use tracelake_query::tags::{TagList, TagValue, LISTABLE_SCOPES};
use tracelake_query::traceql::{Attribute, AttributeScope, Field, Intrinsic};
use tracelake_query::TimeRange;

use utoipa::{IntoParams, ToSchema};

use super::tag_name::{decode_until_stable, parse_v2};
use crate::openapi::{ErrorBody, QueryErrors, TenantHeader};
use crate::traces::WindowParams;
use crate::{tenant_from_headers, ApiError, ApiState};

/// Most names per scope, and most values, one request returns (Grafana asks for 5000).
pub(crate) const MAX_ITEMS: usize = 5000;
/// Most bytes of values one request returns (Tempo's default `max_bytes_per_tag_values_query`).
pub(crate) const MAX_VALUE_BYTES: usize = 1024 * 1024;
/// The window when the request gives neither `start` nor `end`: the last 24 hours ...
const DEFAULT_WINDOW_NANOS: u64 = 24 * HOUR_NANOS;
/// ... and the next hour, for clients whose clocks run ahead.
const DEFAULT_FUTURE_NANOS: u64 = HOUR_NANOS;
const HOUR_NANOS: u64 = 3600 * 1_000_000_000;

/// What Tempo lists in the `intrinsic` scope (its `search.GetVirtualIntrinsicValues`), plus
/// `span:id` and `trace:id`, which tracelake's TraceQL also supports. Sorted, as Tempo sorts.
const INTRINSIC_TAGS: [&str; 22] = [
    "duration",
    "event:name",
    "event:timeSinceStart",
    "instrumentation:name",
    "instrumentation:version",
    "kind",
    "name",
    "rootName",
    "rootServiceName",
    "span:duration",
    "span:id",
    "span:kind",
    "span:name",
    "span:status",
    "span:statusMessage",
    "status",
    "statusMessage",
    "trace:duration",
    "trace:id",
    "trace:rootName",
    "trace:rootService",
    "traceDuration",
];

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub(crate) struct TagParams {
    /// `resource`, `span`, `intrinsic`, `event`, `link`, `instrumentation`, or `all`
    /// (resource, span and intrinsic). Ignored by the tag values endpoints.
    #[param(example = "span")]
    scope: Option<String>,
    /// Most names per scope, or most values (default and ceiling 5000).
    #[param(example = 5000)]
    limit: Option<usize>,
    /// A TraceQL spanset filter: only the spans it matches are looked at. An incomplete or
    /// unparseable query, or one that needs more than one span (structural operators,
    /// pipelines, trace-level intrinsics), gives the unfiltered list.
    #[param(example = r#"{ resource.service.name = "cart" }"#)]
    q: Option<String>,
}

impl TagParams {
    fn limit(&self) -> usize {
        match self.limit {
            None | Some(0) => MAX_ITEMS,
            Some(n) => n.min(MAX_ITEMS),
        }
    }
}

/// The span filter a tag request's `q` selects: the condition of a complete single-spanset
/// query (`{ resource.service.name = "cart" }`), applied to the spans scan, so only the names
/// and values of matching spans are listed. An empty, incomplete or unparseable `q` (Grafana
/// sends `{ resource.cluster = }` while the user types), or one that needs more than a span's
/// own row (structural operators, pipelines, trace-level intrinsics), gives `None`: the
/// unfiltered list, never an error, as Tempo does.
fn span_filter_from_q(q: Option<&str>) -> Option<Expr> {
    q.map(str::trim)
        .filter(|q| !q.is_empty())
        .and_then(tracelake_query::search::span_filter)
}

/// A scope of the tags endpoints.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Scope {
    Attributes(AttributeScope),
    Intrinsic,
}

impl Scope {
    fn name(self) -> &'static str {
        match self {
            Scope::Intrinsic => "intrinsic",
            Scope::Attributes(AttributeScope::Resource) => "resource",
            Scope::Attributes(AttributeScope::Span) => "span",
            Scope::Attributes(AttributeScope::Event) => "event",
            Scope::Attributes(AttributeScope::Link) => "link",
            Scope::Attributes(AttributeScope::Instrumentation) => "instrumentation",
            Scope::Attributes(AttributeScope::Unscoped) => "unscoped",
        }
    }
}

const ALL_SCOPES: [Scope; 3] = [
    Scope::Attributes(AttributeScope::Resource),
    Scope::Attributes(AttributeScope::Span),
    Scope::Intrinsic,
];

/// The scopes `scope` asks for; `default` when it is absent.
fn parse_scope(scope: Option<&str>, default: &[Scope]) -> Result<Vec<Scope>, ApiError> {
    let Some(scope) = scope.map(str::trim) else {
        return Ok(default.to_vec());
    };
    if matches!(scope, "" | "all" | "none") {
        return Ok(ALL_SCOPES.to_vec());
    }
    if scope == "intrinsic" {
        return Ok(vec![Scope::Intrinsic]);
    }
    LISTABLE_SCOPES
        .into_iter()
        .map(Scope::Attributes)
        .find(|s| s.name() == scope)
        .map(|s| vec![s])
        .ok_or_else(|| {
            ApiError::BadRequest(format!(
                "invalid scope: {scope:?}; use resource, span, intrinsic, event, link, \
                 instrumentation or all"
            ))
        })
}

fn window(window: &WindowParams) -> Result<TimeRange, ApiError> {
    if let Some(range) = window.range()? {
        return Ok(range);
    }
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX));
    Ok(TimeRange {
        start_unix_nano: now.saturating_sub(DEFAULT_WINDOW_NANOS),
        end_unix_nano: now.saturating_add(DEFAULT_FUTURE_NANOS),
    })
}

/// The names of each of `scopes`, queried concurrently.
async fn names_by_scope(
    state: &ApiState,
    tenant: &str,
    scopes: &[Scope],
    range: TimeRange,
    filter: Option<Expr>,
    limit: usize,
) -> Result<Vec<(Scope, Vec<String>)>, ApiError> {
    let lookups = scopes.iter().map(|&scope| {
        let filter = filter.clone();
        async move {
            let names = match scope {
                Scope::Intrinsic => INTRINSIC_TAGS
                    .iter()
                    .take(limit)
                    .map(|s| s.to_string())
                    .collect(),
                Scope::Attributes(attributes) => {
                    let TagList { items, .. } = state
                        .engine
                        .tag_names(tenant, attributes, range, filter, limit)
                        .await?;
                    items
                }
            };
            Ok::<_, ApiError>((scope, names))
        }
    });
    futures::future::try_join_all(lookups).await
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub(crate) struct TagNamesV1 {
    /// Attribute keys, sorted, each once.
    #[schema(example = json!(["http.route", "service.name"]))]
    tag_names: Vec<String>,
}

/// `GET /api/search/tags`: the names of the span and resource scopes (or of `scope`), merged.
#[utoipa::path(
    get,
    path = "/api/search/tags",
    tag = "tempo",
    summary = "Attribute names (Tempo v1)",
    description = "The span and resource attribute keys (or those of `scope`) seen in the window \
                   (default: the last 24 hours), merged and sorted.",
    params(TagParams, WindowParams, TenantHeader),
    responses(
        (status = 200, description = "The names", body = TagNamesV1),
        (status = 400, description = "Invalid scope or window", body = ErrorBody),
        QueryErrors,
    )
)]
pub(crate) async fn tags_v1(
    State(state): State<ApiState>,
    Query(window_params): Query<WindowParams>,
    Query(params): Query<TagParams>,
    headers: HeaderMap,
) -> Result<Json<TagNamesV1>, ApiError> {
    let tenant = tenant_from_headers(&headers);
    let scopes = parse_scope(
        params.scope.as_deref(),
        &[Scope::Attributes(AttributeScope::Unscoped)],
    )?;
    let range = window(&window_params)?;
    let filter = span_filter_from_q(params.q.as_deref());
    let by_scope = names_by_scope(&state, &tenant, &scopes, range, filter, params.limit()).await?;
    let mut tag_names: Vec<String> = by_scope.into_iter().flat_map(|(_, n)| n).collect();
    tag_names.sort();
    tag_names.dedup();
    Ok(Json(TagNamesV1 { tag_names }))
}

#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct TagScopeV2 {
    /// The scope: `resource`, `span`, `intrinsic`, `event`, `link` or `instrumentation`.
    #[schema(example = "span")]
    name: &'static str,
    /// Its names, sorted.
    #[schema(example = json!(["http.request.method", "http.route"]))]
    tags: Vec<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct TagNamesV2 {
    /// One entry per scope asked for.
    scopes: Vec<TagScopeV2>,
}

/// `GET /api/v2/search/tags`: names per scope; resource, span and intrinsic by default.
#[utoipa::path(
    get,
    path = "/api/v2/search/tags",
    tag = "tempo",
    summary = "Attribute names by scope (Tempo v2)",
    description = "Names per scope in the window (default: the last 24 hours): resource, span \
                   and intrinsic unless `scope` says otherwise. `q` narrows the attribute \
                   names to the spans it matches.",
    params(TagParams, WindowParams, TenantHeader),
    responses(
        (status = 200, description = "The names by scope", body = TagNamesV2),
        (status = 400, description = "Invalid scope or window", body = ErrorBody),
        QueryErrors,
    )
)]
pub(crate) async fn tags_v2(
    State(state): State<ApiState>,
    Query(window_params): Query<WindowParams>,
    Query(params): Query<TagParams>,
    headers: HeaderMap,
) -> Result<Json<TagNamesV2>, ApiError> {
    let tenant = tenant_from_headers(&headers);
    let scopes = parse_scope(params.scope.as_deref(), &ALL_SCOPES)?;
    let range = window(&window_params)?;
    let filter = span_filter_from_q(params.q.as_deref());
    let by_scope = names_by_scope(&state, &tenant, &scopes, range, filter, params.limit()).await?;
    Ok(Json(TagNamesV2 {
        scopes: by_scope
            .into_iter()
            .map(|(scope, tags)| TagScopeV2 {
                name: scope.name(),
                tags,
            })
            .collect(),
    }))
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub(crate) struct TagValuesV1 {
    /// The values as text, sorted.
    #[schema(example = json!(["cart", "checkout"]))]
    tag_values: Vec<String>,
}

/// `GET /api/search/tag/{tag}/values`: every scalar value of the span or resource attribute
/// `tag` (the whole, decoded name is the attribute key), as strings.
#[utoipa::path(
    get,
    path = "/api/search/tag/{tag}/values",
    tag = "tempo",
    summary = "Values of an attribute (Tempo v1)",
    description = "Every scalar value of the span or resource attribute `tag` in the window \
                   (default: the last 24 hours), as strings, at most `limit` and 1 MiB. `q` \
                   narrows them to the spans it matches.",
    params(
        ("tag" = String, Path, description = "The attribute key, URL-encoded (Grafana encodes it twice; both are accepted)", example = "service.name"),
        TagParams,
        WindowParams,
        TenantHeader,
    ),
    responses(
        (status = 200, description = "The values", body = TagValuesV1),
        (status = 400, description = "Empty tag name, or invalid window", body = ErrorBody),
        QueryErrors,
    )
)]
pub(crate) async fn tag_values_v1(
    State(state): State<ApiState>,
    Path(tag): Path<String>,
    Query(window_params): Query<WindowParams>,
    Query(params): Query<TagParams>,
    headers: HeaderMap,
) -> Result<Json<TagValuesV1>, ApiError> {
    let tenant = tenant_from_headers(&headers);
    let tag = decode_until_stable(&tag)?;
    if tag.trim().is_empty() {
        return Err(ApiError::BadRequest(
            "the tag name is empty: give an attribute key such as service.name".into(),
        ));
    }
    let range = window(&window_params)?;
    let filter = span_filter_from_q(params.q.as_deref());
    let field = Field::Attribute(Attribute {
        scope: AttributeScope::Unscoped,
        name: tag,
    });
    let values = state
        .engine
        .tag_values(&tenant, field, range, filter, params.limit())
        .await?;
    let mut tag_values: Vec<String> = values.items.into_iter().map(|v| v.value).collect();
    tag_values.sort();
    tag_values.dedup();
    let tag_values = within_byte_budget(tag_values, String::len);
    Ok(Json(TagValuesV1 { tag_values }))
}

#[derive(Debug, Serialize, PartialEq, Eq, ToSchema)]
pub(crate) struct TypedValue {
    /// `string`, `int`, `float`, `bool`, or `keyword` (the fixed values of status and kind).
    #[serde(rename = "type")]
    #[schema(example = "string")]
    value_type: &'static str,
    /// The value as text.
    #[schema(example = "cart")]
    value: String,
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub(crate) struct TagValuesV2 {
    /// The typed values.
    tag_values: Vec<TypedValue>,
}

/// `GET /api/v2/search/tag/{tag}/values`: typed values of a TraceQL identifier.
#[utoipa::path(
    get,
    path = "/api/v2/search/tag/{tag}/values",
    tag = "tempo",
    summary = "Typed values of a TraceQL identifier (Tempo v2)",
    description = "The values of a scoped or unscoped attribute (`resource.service.name`, \
                   `span.http.route`, `.name`) or intrinsic (`name`, `status`, `kind`, \
                   `rootServiceName`, ...) in the window (default: the last 24 hours), typed, \
                   at most `limit` and 1 MiB. `q` narrows them to the spans it matches; an \
                   incomplete `q` gives the unfiltered list.",
    params(
        ("tag" = String, Path, description = "A TraceQL identifier, URL-encoded (Grafana encodes it twice; both are accepted)", example = "resource.service.name"),
        TagParams,
        WindowParams,
        TenantHeader,
    ),
    responses(
        (status = 200, description = "The typed values", body = TagValuesV2),
        (status = 400, description = "Not a TraceQL identifier (unknown intrinsic, empty attribute name), or invalid window", body = ErrorBody),
        QueryErrors,
    )
)]
pub(crate) async fn tag_values_v2(
    State(state): State<ApiState>,
    Path(tag): Path<String>,
    Query(window_params): Query<WindowParams>,
    Query(params): Query<TagParams>,
    headers: HeaderMap,
) -> Result<Json<TagValuesV2>, ApiError> {
    let tenant = tenant_from_headers(&headers);
    let field = parse_v2(&decode_until_stable(&tag)?)?;
    let range = window(&window_params)?;
    let filter = span_filter_from_q(params.q.as_deref());
    if let Field::Intrinsic(intrinsic) = field {
        if let Some(keywords) = keyword_values(intrinsic) {
            let tag_values = keywords
                .iter()
                .map(|k| TypedValue {
                    value_type: "keyword",
                    value: (*k).to_string(),
                })
                .collect();
            return Ok(Json(TagValuesV2 { tag_values }));
        }
    }
    let values = state
        .engine
        .tag_values(&tenant, field, range, filter, params.limit())
        .await?;
    let tag_values = values
        .items
        .into_iter()
        .map(|TagValue { value, value_type }| TypedValue {
            value_type: value_type.as_str(),
            value,
        })
        .collect();
    let tag_values = within_byte_budget(tag_values, |v: &TypedValue| v.value.len());
    Ok(Json(TagValuesV2 { tag_values }))
}

/// The fixed keyword values of status and kind (Tempo's `GetVirtualTagValuesV2`).
fn keyword_values(intrinsic: Intrinsic) -> Option<&'static [&'static str]> {
    match intrinsic {
        Intrinsic::SpanStatus => Some(&["ok", "error", "unset"]),
        Intrinsic::SpanKind => Some(&[
            "client",
            "server",
            "producer",
            "consumer",
            "internal",
            "unspecified",
        ]),
        _ => None,
    }
}

/// The longest prefix of `items` whose sizes add up to at most [`MAX_VALUE_BYTES`].
fn within_byte_budget<T>(mut items: Vec<T>, size: impl Fn(&T) -> usize) -> Vec<T> {
    let mut total = 0usize;
    let keep = items
        .iter()
        .take_while(|item| {
            total = total.saturating_add(size(item));
            total <= MAX_VALUE_BYTES
        })
        .count();
    items.truncate(keep);
    items
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scopes() {
        let v1_default = [Scope::Attributes(AttributeScope::Unscoped)];
        assert_eq!(parse_scope(None, &v1_default).unwrap(), v1_default);
        assert_eq!(parse_scope(Some("all"), &v1_default).unwrap(), ALL_SCOPES);
        assert_eq!(parse_scope(Some(""), &v1_default).unwrap(), ALL_SCOPES);
        assert_eq!(
            parse_scope(Some("span"), &ALL_SCOPES).unwrap(),
            [Scope::Attributes(AttributeScope::Span)]
        );
        assert_eq!(
            parse_scope(Some("event"), &ALL_SCOPES).unwrap(),
            [Scope::Attributes(AttributeScope::Event)]
        );
        assert_eq!(
            parse_scope(Some("intrinsic"), &ALL_SCOPES).unwrap(),
            [Scope::Intrinsic]
        );
        assert!(parse_scope(Some("unscoped"), &ALL_SCOPES).is_err());
        assert!(parse_scope(Some("spans"), &ALL_SCOPES).is_err());
    }

    #[test]
    fn intrinsic_tags_are_sorted_and_known_to_traceql() {
        let mut sorted = INTRINSIC_TAGS.to_vec();
        sorted.sort();
        assert_eq!(sorted, INTRINSIC_TAGS);
        for tag in INTRINSIC_TAGS {
            assert!(Intrinsic::from_name(tag).is_some(), "{tag}");
        }
    }

    #[test]
    fn byte_budget() {
        let items = vec!["a".repeat(MAX_VALUE_BYTES - 1), "bb".into(), "c".into()];
        assert_eq!(within_byte_budget(items, String::len).len(), 1);
        assert_eq!(
            within_byte_budget(vec!["x".to_string()], String::len).len(),
            1
        );
    }

    #[test]
    fn only_a_complete_single_spanset_q_filters() {
        assert!(span_filter_from_q(Some(r#"{ resource.service.name = "cart" }"#)).is_some());
        for q in [
            None,
            Some(""),
            Some("  "),
            Some("{ resource.cluster = }"),
            Some("{"),
            Some("garbage"),
            Some("{ }"),
            Some("{ .a = 1 } >> { .b = 2 }"),
        ] {
            assert!(span_filter_from_q(q).is_none(), "{q:?}");
        }
    }
}
