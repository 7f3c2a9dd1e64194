//! Tag names in the path of the tag-values endpoints: percent-decoding and parsing into a
//! TraceQL field.
//!
//! Grafana URL-encodes the tag twice, so after axum's own decoding `resource.service.name` may
//! still read `resource%2Eservice%2Ename`: the name is decoded again until it stops changing.

use tracelake_query::traceql::{Attribute, AttributeScope, Field, Intrinsic};

use crate::ApiError;

/// More rounds than any client encodes; bounds the work on hostile input.
const MAX_DECODE_ROUNDS: usize = 8;

/// Percent-decodes `raw` until it is stable. A `%` not followed by two hex digits stays as it
/// is; `+` is not a space (this is a path, not a form).
pub(crate) fn decode_until_stable(raw: &str) -> Result<String, ApiError> {
    let mut current = raw.to_string();
    for _ in 0..MAX_DECODE_ROUNDS {
        let next = percent_decode(&current)?;
        if next == current {
            break;
        }
        current = next;
    }
    Ok(current)
}

fn percent_decode(s: &str) -> Result<String, ApiError> {
    if !s.contains('%') {
        return Ok(s.to_string());
    }
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            let hex = |b: u8| (b as char).to_digit(16);
            if let (Some(hi), Some(lo)) = (hex(bytes[i + 1]), hex(bytes[i + 2])) {
                out.push((hi * 16 + lo) as u8);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8(out).map_err(|_| {
        ApiError::BadRequest(format!(
            "tag name {:?} is not valid UTF-8 once percent-decoded",
            s.chars().take(200).collect::<String>()
        ))
    })
}

/// Parses a v2 tag name (a TraceQL identifier): `span.x`, `resource.x`, `event.x`, `link.x`,
/// `instrumentation.x`, unscoped `.x`, an intrinsic (`name`, `status`, `span:kind`, ...), or a
/// bare `x`, which like `.x` means the span or resource attribute `x`. The attribute part may
/// be quoted (`span."http status"`).
pub(crate) fn parse_v2(name: &str) -> Result<Field, ApiError> {
    let name = name.trim();
    if name.is_empty() {
        return Err(ApiError::BadRequest(
            "the tag name is empty: give an attribute such as resource.service.name or an \
             intrinsic such as name"
                .into(),
        ));
    }
    if let Some(intrinsic) = Intrinsic::from_name(name) {
        return Ok(Field::Intrinsic(intrinsic));
    }
    let (scope, rest) = if let Some(rest) = name.strip_prefix('.') {
        (AttributeScope::Unscoped, rest)
    } else {
        match name.split_once('.') {
            Some((word, rest)) => match AttributeScope::from_word(word) {
                Some(scope) => (scope, rest),
                None => (AttributeScope::Unscoped, name),
            },
            None => {
                if let Some((scope, _)) = name.split_once(':') {
                    if ["span", "trace", "event", "link", "instrumentation"].contains(&scope) {
                        return Err(ApiError::BadRequest(format!(
                            "unknown intrinsic {name:?}: known ones are {}",
                            known_intrinsics()
                        )));
                    }
                }
                (AttributeScope::Unscoped, name)
            }
        }
    };
    let attribute = unquote(rest)?;
    if attribute.is_empty() {
        return Err(ApiError::BadRequest(format!(
            "tag {name:?} names no attribute: write e.g. {}service.name",
            scope.prefix()
        )));
    }
    Ok(Field::Attribute(Attribute {
        scope,
        name: attribute,
    }))
}

fn known_intrinsics() -> String {
    Intrinsic::ALL
        .iter()
        .map(|i| i.as_str())
        .collect::<Vec<_>>()
        .join(", ")
}

/// `"a \"b\""` -> `a "b"`; anything not starting with a quote is returned as it is.
fn unquote(s: &str) -> Result<String, ApiError> {
    let Some(inner) = s.strip_prefix('"') else {
        return Ok(s.to_string());
    };
    let bad = || {
        ApiError::BadRequest(format!(
            "quoted attribute name {s:?} is not closed: write it as \"name\""
        ))
    };
    let inner = inner.strip_suffix('"').ok_or_else(bad)?;
    let mut out = String::with_capacity(inner.len());
    let mut chars = inner.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => match chars.next() {
                Some(escaped) => out.push(escaped),
                None => return Err(bad()),
            },
            '"' => return Err(bad()),
            c => out.push(c),
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn attr(scope: AttributeScope, name: &str) -> Field {
        Field::Attribute(Attribute {
            scope,
            name: name.into(),
        })
    }

    #[test]
    fn decodes_until_stable() {
        assert_eq!(
            decode_until_stable("resource%252Eservice%252Ename").unwrap(),
            "resource.service.name"
        );
        assert_eq!(
            decode_until_stable("resource%2Eservice%2Ename").unwrap(),
            "resource.service.name"
        );
        assert_eq!(decode_until_stable("span.a+b").unwrap(), "span.a+b");
        assert_eq!(decode_until_stable("100%").unwrap(), "100%");
        assert_eq!(decode_until_stable("a%zzb%4").unwrap(), "a%zzb%4");
        assert_eq!(decode_until_stable("%C3%A9t%C3%A9").unwrap(), "été");
        assert!(decode_until_stable("%FF").is_err());
    }

    #[test]
    fn parses_scopes_intrinsics_and_bare_names() {
        use AttributeScope::*;
        assert_eq!(
            parse_v2("resource.service.name").unwrap(),
            attr(Resource, "service.name")
        );
        assert_eq!(
            parse_v2("span.http.status_code").unwrap(),
            attr(Span, "http.status_code")
        );
        assert_eq!(
            parse_v2(".service.name").unwrap(),
            attr(Unscoped, "service.name")
        );
        assert_eq!(
            parse_v2("service.name").unwrap(),
            attr(Unscoped, "service.name")
        );
        assert_eq!(parse_v2("foo").unwrap(), attr(Unscoped, "foo"));
        assert_eq!(
            parse_v2("event.exception.type").unwrap(),
            attr(Event, "exception.type")
        );
        assert_eq!(
            parse_v2("span.\"a \\\"b\\\"\"").unwrap(),
            attr(Span, "a \"b\"")
        );
        assert_eq!(
            parse_v2("status").unwrap(),
            Field::Intrinsic(Intrinsic::SpanStatus)
        );
        assert_eq!(
            parse_v2("span:kind").unwrap(),
            Field::Intrinsic(Intrinsic::SpanKind)
        );
        assert_eq!(
            parse_v2("rootServiceName").unwrap(),
            Field::Intrinsic(Intrinsic::TraceRootService)
        );
        assert!(parse_v2("").is_err());
        assert!(parse_v2("span.").is_err());
        assert!(parse_v2("span:nope").is_err());
        assert!(parse_v2("span.\"open").is_err());
    }
}
