//! Span and tenant validation shared by both receivers.
//!
//! Invalid spans are removed from the request (and `ScopeSpans`/`ResourceSpans` left empty are
//! dropped); the receivers report them to the client as an OTLP partial success.

use tracelake_proto::otlp::collector::trace::v1::ExportTraceServiceRequest;
use tracelake_proto::otlp::trace::v1::Span;

use crate::error::{truncate_for_message, Error, Result};

/// Header (HTTP) and metadata key (gRPC) that carries the tenant id. Matched case-insensitively.
pub const TENANT_HEADER: &str = "x-scope-orgid";

/// Longest accepted tenant id.
pub const MAX_TENANT_LEN: usize = 64;

/// Result of [`validate`].
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Validation {
    /// Spans left in the request.
    pub accepted: u64,
    /// Spans removed from the request.
    pub rejected: u64,
    /// `"<n> span(s) rejected: <first reason>"` when `rejected > 0`.
    pub error_message: Option<String>,
}

/// Removes invalid spans from `req` and says how many were kept and dropped.
///
/// A span is invalid when its `trace_id` is not 16 bytes or all zeros, its `span_id` is not 8 bytes
/// or all zeros, its `parent_span_id` is neither empty nor 8 bytes, or it ends before it starts.
pub fn validate(req: &mut ExportTraceServiceRequest) -> Validation {
    let mut accepted = 0u64;
    let mut rejected = 0u64;
    let mut first_reason: Option<String> = None;
    for resource_spans in &mut req.resource_spans {
        for scope_spans in &mut resource_spans.scope_spans {
            scope_spans.spans.retain(|span| match span_problem(span) {
                None => {
                    accepted += 1;
                    true
                }
                Some(problem) => {
                    rejected += 1;
                    if first_reason.is_none() {
                        first_reason = Some(format!(
                            "span {} in trace {}: {problem}",
                            id_for_message(&span.span_id),
                            id_for_message(&span.trace_id)
                        ));
                    }
                    false
                }
            });
        }
        resource_spans
            .scope_spans
            .retain(|scope_spans| !scope_spans.spans.is_empty());
    }
    req.resource_spans
        .retain(|resource_spans| !resource_spans.scope_spans.is_empty());
    let error_message = first_reason.map(|reason| {
        let noun = if rejected == 1 { "span" } else { "spans" };
        format!("{rejected} {noun} rejected: {reason}")
    });
    Validation {
        accepted,
        rejected,
        error_message,
    }
}

/// The first thing wrong with `span`, if any.
fn span_problem(span: &Span) -> Option<String> {
    if span.trace_id.len() != 16 {
        return Some(format!(
            "trace_id must be 16 bytes, got {}",
            span.trace_id.len()
        ));
    }
    if is_all_zero(&span.trace_id) {
        return Some("trace_id is all zeros".to_owned());
    }
    if span.span_id.len() != 8 {
        return Some(format!(
            "span_id must be 8 bytes, got {}",
            span.span_id.len()
        ));
    }
    if is_all_zero(&span.span_id) {
        return Some("span_id is all zeros".to_owned());
    }
    if !span.parent_span_id.is_empty() && span.parent_span_id.len() != 8 {
        return Some(format!(
            "parent_span_id must be empty or 8 bytes, got {}",
            span.parent_span_id.len()
        ));
    }
    if span.end_time_unix_nano < span.start_time_unix_nano {
        return Some("end_time_unix_nano is before start_time_unix_nano".to_owned());
    }
    None
}

fn is_all_zero(bytes: &[u8]) -> bool {
    bytes.iter().all(|b| *b == 0)
}

/// Hex of an id for an error message; oversized ids are cut short.
fn id_for_message(id: &[u8]) -> String {
    const MAX_BYTES: usize = 32;
    if id.is_empty() {
        "<empty>".to_owned()
    } else if id.len() > MAX_BYTES {
        format!("{}...", hex::encode(&id[..MAX_BYTES]))
    } else {
        hex::encode(id)
    }
}

/// Checks a tenant id: 1-64 characters from `[A-Za-z0-9_-]`.
pub fn check_tenant(tenant: &str) -> Result<()> {
    let valid = (1..=MAX_TENANT_LEN).contains(&tenant.len())
        && tenant
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
    if valid {
        Ok(())
    } else {
        Err(Error::InvalidTenant(truncate_for_message(
            tenant,
            MAX_TENANT_LEN,
        )))
    }
}

/// The tenant of a request: the raw header value if present (it must be valid), else `default`.
pub(crate) fn resolve_tenant(header: Option<&[u8]>, default: &str) -> Result<String> {
    let tenant = match header {
        None => default.to_owned(),
        Some(raw) => String::from_utf8_lossy(raw).into_owned(),
    };
    check_tenant(&tenant)?;
    Ok(tenant)
}

/// Number of spans in a request, without looking inside them.
pub(crate) fn span_count(req: &ExportTraceServiceRequest) -> usize {
    req.resource_spans
        .iter()
        .flat_map(|rs| &rs.scope_spans)
        .map(|ss| ss.spans.len())
        .sum()
}

#[cfg(test)]
mod tests {
    use tracelake_proto::otlp::trace::v1::{ResourceSpans, ScopeSpans};

    use super::*;

    fn span(trace: u8, id: u8) -> Span {
        Span {
            trace_id: vec![trace; 16],
            span_id: vec![id; 8],
            name: "op".into(),
            start_time_unix_nano: 10,
            end_time_unix_nano: 20,
            ..Default::default()
        }
    }

    fn request(groups: Vec<Vec<Vec<Span>>>) -> ExportTraceServiceRequest {
        ExportTraceServiceRequest {
            resource_spans: groups
                .into_iter()
                .map(|scopes| ResourceSpans {
                    scope_spans: scopes
                        .into_iter()
                        .map(|spans| ScopeSpans {
                            spans,
                            ..Default::default()
                        })
                        .collect(),
                    ..Default::default()
                })
                .collect(),
        }
    }

    fn problem_of(mutate: impl FnOnce(&mut Span)) -> Option<String> {
        let mut s = span(1, 2);
        mutate(&mut s);
        span_problem(&s)
    }

    #[test]
    fn each_rule_has_a_reason() {
        assert_eq!(problem_of(|_| {}), None);
        assert_eq!(
            problem_of(|s| s.trace_id = vec![1; 15]).as_deref(),
            Some("trace_id must be 16 bytes, got 15")
        );
        assert_eq!(
            problem_of(|s| s.trace_id = vec![0; 16]).as_deref(),
            Some("trace_id is all zeros")
        );
        assert_eq!(
            problem_of(|s| s.span_id.clear()).as_deref(),
            Some("span_id must be 8 bytes, got 0")
        );
        assert_eq!(
            problem_of(|s| s.span_id = vec![0; 8]).as_deref(),
            Some("span_id is all zeros")
        );
        assert_eq!(
            problem_of(|s| s.parent_span_id = vec![3; 4]).as_deref(),
            Some("parent_span_id must be empty or 8 bytes, got 4")
        );
        assert_eq!(problem_of(|s| s.parent_span_id = vec![3; 8]), None);
        assert_eq!(
            problem_of(|s| s.end_time_unix_nano = 9).as_deref(),
            Some("end_time_unix_nano is before start_time_unix_nano")
        );
        assert_eq!(problem_of(|s| s.end_time_unix_nano = 10), None);
    }

    #[test]
    fn removes_invalid_spans_and_empty_groups() {
        let mut bad_time = span(1, 0x0a);
        bad_time.end_time_unix_nano = 0;
        let mut req = request(vec![
            // resource 0: one scope all bad, one scope mixed
            vec![vec![bad_time, span(0, 1)], vec![span(1, 1), span(1, 0)]],
            // resource 1: all bad
            vec![vec![span(2, 0)]],
            // resource 2: all good
            vec![vec![span(3, 3)]],
        ]);
        let v = validate(&mut req);
        assert_eq!(v.accepted, 2);
        assert_eq!(v.rejected, 4);
        assert_eq!(
            v.error_message.as_deref(),
            Some(
                "4 spans rejected: span 0a0a0a0a0a0a0a0a in trace 01010101010101010101010101010101: \
                 end_time_unix_nano is before start_time_unix_nano"
            )
        );
        assert_eq!(req.resource_spans.len(), 2);
        assert_eq!(req.resource_spans[0].scope_spans.len(), 1);
        assert_eq!(req.resource_spans[0].scope_spans[0].spans, vec![span(1, 1)]);
        assert_eq!(req.resource_spans[1].scope_spans[0].spans, vec![span(3, 3)]);
    }

    #[test]
    fn single_rejection_and_empty_ids_read_well() {
        let mut s = span(1, 1);
        s.span_id.clear();
        let mut req = request(vec![vec![vec![s]]]);
        let v = validate(&mut req);
        assert_eq!(v.accepted, 0);
        assert!(req.resource_spans.is_empty());
        assert_eq!(
            v.error_message.as_deref(),
            Some(
                "1 span rejected: span <empty> in trace 01010101010101010101010101010101: \
                 span_id must be 8 bytes, got 0"
            )
        );
    }

    #[test]
    fn huge_ids_are_truncated_in_messages() {
        let mut s = span(1, 1);
        s.trace_id = vec![0xab; 10_000];
        let mut req = request(vec![vec![vec![s]]]);
        let message = validate(&mut req).error_message.unwrap();
        assert!(message.len() < 300, "{message}");
        assert!(message.contains(&format!("{}...", "ab".repeat(32))));
    }

    #[test]
    fn empty_request_is_clean() {
        let mut req = ExportTraceServiceRequest::default();
        assert_eq!(validate(&mut req), Validation::default());
    }

    #[test]
    fn tenants() {
        assert!(check_tenant("team-a_1").is_ok());
        assert!(check_tenant(&"a".repeat(64)).is_ok());
        for bad in ["", "a b", "a/b", "é", "x.y"] {
            let err = check_tenant(bad).unwrap_err();
            assert!(
                err.to_string()
                    .ends_with(": use 1-64 characters from [A-Za-z0-9_-]"),
                "{err}"
            );
        }
        let err = check_tenant(&"a".repeat(65)).unwrap_err().to_string();
        assert!(err.starts_with(&format!("invalid tenant id \"{}...\"", "a".repeat(64))));
        assert_eq!(resolve_tenant(None, "default").unwrap(), "default");
        assert_eq!(resolve_tenant(Some(b"acme"), "default").unwrap(), "acme");
        assert!(resolve_tenant(Some(b"\xff"), "default").is_err());
    }
}
