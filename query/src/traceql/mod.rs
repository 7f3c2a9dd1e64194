//! TraceQL: parsing Tempo's trace query language into a typed syntax tree.
//!
//! ```text
//!  text ──> lexer (tokens with byte spans) ──> recursive-descent parser ──> Query
//!                                                 │ resolves scopes and intrinsics,
//!                                                 │ types literals, checks comparisons
//!                                                 └─> ParseError { line, column, expected, found }
//! ```
//!
//! The supported language (SPECS.md §5, plus a few newer Tempo forms):
//!
//! ```text
//! query      = spansets { "|" stage } [ "|" metrics ]
//! spansets   = or ;  or = and { "||" and } ;  and = struct { "&&" struct }
//! struct     = primary { (">" | ">>" | "<" | "<<" | "~") primary }      (left-associative)
//! primary    = "{" [ cond ] "}" | "(" spansets ")"
//! cond       = cand { "||" cand } ;  cand = unary { "&&" unary }
//! unary      = "!" unary | "(" cond ")" | "true" | "false" | operand cmp operand
//! cmp        = "=" | "!=" | ">" | ">=" | "<" | "<=" | "=~" | "!~"
//! operand    = field | literal
//! field      = "." name | scope "." name | intrinsic
//! scope      = span | resource | event | link | instrumentation
//! name       = unquoted run (ends at whitespace or one of {}()=~!<>&|^,"`) | quoted string
//! intrinsic  = duration | name | status | statusMessage | kind | childCount | rootName
//!            | rootServiceName | traceDuration | span:name | span:id | trace:id | ...
//! literal    = string | int | float | duration | true | false | nil | ok | error | unset
//!            | unspecified | internal | server | client | producer | consumer
//! stage      = spansets | by(fields) | select(fields) | coalesce()
//!            | (count() | avg(f) | min(f) | max(f) | sum(f)) cmp number-or-duration
//! metrics    = (rate() | count_over_time() | quantile_over_time(f, q, ...)
//!            | min_over_time(f) | max_over_time(f) | avg_over_time(f) | sum_over_time(f)
//!            | histogram_over_time(f)) [ by(fields) ]
//! ```
//!
//! Strings are `"..."` (escapes `\" \\ \n \r \t \xHH \uHHHH ...`) or raw `` `...` ``.
//! Durations take `ns us µs ms s m h` and may be compound (`1h30m`) or fractional (`1.5s`).
//! Conditions and `&&`/`||` between spansets follow the usual precedence (`&&` binds tighter
//! than `||`); Tempo's own parser gives the two the same precedence, so write parentheses when
//! mixing them in queries meant for both.
//!
//! ```
//! use tracelake_query::traceql::{self, Condition, SpansetExpr};
//!
//! let q = traceql::parse(r#"{ resource.service.name = "cart" && duration > 200ms } | count() > 2"#)?;
//! let SpansetExpr::Filter(filter) = &q.spansets else { panic!("a single filter") };
//! assert!(matches!(filter.condition, Some(Condition::And(ref c)) if c.len() == 2));
//! // Display prints canonical TraceQL, which parses back to the same tree.
//! assert_eq!(
//!     q.to_string(),
//!     r#"{ resource.service.name = "cart" && span:duration > 200ms } | count() > 2"#
//! );
//! assert_eq!(traceql::parse(&q.to_string())?, q);
//!
//! let err = traceql::parse("{ span.foo = }").unwrap_err();
//! assert_eq!(
//!     err.to_string(),
//!     r#"parse error at line 1, column 14: expected a value after "=", found "}""#
//! );
//! # Ok::<(), traceql::ParseError>(())
//! ```

use std::fmt;
use std::str::FromStr;

mod ast;
pub(crate) mod compile;
mod lexer;
mod parser;
#[cfg(test)]
mod tests;

pub use ast::*;

/// Longest TraceQL text accepted, in bytes.
pub const MAX_QUERY_BYTES: usize = 64 * 1024;

/// Deepest nesting accepted: parentheses, `!`, `{ }` and structural-operator chains each count.
pub const MAX_DEPTH: usize = 64;

/// Parses a TraceQL query.
///
/// Never panics; every failure is a [`ParseError`] that points at the offending text.
pub fn parse(text: &str) -> Result<Query, ParseError> {
    parser::parse(text)
}

/// Parses a duration written as in TraceQL and Go (`200ms`, `1.5s`, `1h30m`, `10us`, `10µs`),
/// as search parameters such as `minDuration` take them. A bare `0` is zero.
///
/// ```
/// use std::time::Duration;
/// use tracelake_query::traceql::parse_duration;
/// assert_eq!(parse_duration("1h30m").unwrap(), Duration::from_secs(5400));
/// assert_eq!(parse_duration("1.5ms").unwrap(), Duration::from_micros(1500));
/// assert!(parse_duration("5 apples").is_err());
/// ```
pub fn parse_duration(text: &str) -> Result<std::time::Duration, String> {
    let text = text.trim();
    if text == "0" {
        return Ok(std::time::Duration::ZERO);
    }
    let (tokens, error) = lexer::lex(text);
    if let Some(e) = error {
        return Err(format!(
            "{text:?} is not a duration: expected {}, found {}",
            e.expected, e.found
        ));
    }
    match tokens.as_slice() {
        [lexer::Token {
            tok: lexer::Tok::Duration(d),
            ..
        }, lexer::Token {
            tok: lexer::Tok::Eof,
            ..
        }] => Ok(*d),
        _ => Err(format!(
            "{text:?} is not a duration: write it like 200ms, 1.5s or 1h30m"
        )),
    }
}

impl FromStr for Query {
    type Err = ParseError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        parse(text)
    }
}

/// Why a TraceQL query does not parse, and where.
///
/// Displays as `parse error at line 1, column 14: expected a value after "=", found "}"`,
/// followed by `; <note>` when there is a hint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParseError {
    /// Byte offset of the offending text in the query.
    pub offset: usize,
    /// 1-based line of `offset`.
    pub line: usize,
    /// 1-based column of `offset`, in characters.
    pub column: usize,
    /// What the parser expected there, e.g. `a value after "="`.
    pub expected: String,
    /// What it found: the offending text in quotes, or `end of input`.
    pub found: String,
    /// A hint on how to fix the query, if there is one.
    pub note: Option<String>,
}

impl ParseError {
    /// Builds an error at byte `offset` of `text`, computing line and column.
    pub(crate) fn new(
        text: &str,
        offset: usize,
        expected: impl Into<String>,
        found: impl Into<String>,
    ) -> ParseError {
        let (line, column) = line_column(text, offset);
        ParseError {
            offset,
            line,
            column,
            expected: expected.into(),
            found: found.into(),
            note: None,
        }
    }

    /// Adds a hint, unless the error has one already: a lexical error surfacing where the
    /// parser wanted something else keeps the lexer's more specific hint.
    pub(crate) fn with_note(mut self, note: impl Into<String>) -> ParseError {
        if self.note.is_none() {
            self.note = Some(note.into());
        }
        self
    }
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "parse error at line {}, column {}: expected {}, found {}",
            self.line, self.column, self.expected, self.found
        )?;
        if let Some(note) = &self.note {
            write!(f, "; {note}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ParseError {}

/// 1-based line and character column of byte `offset` (clamped to the text).
pub(crate) fn line_column(text: &str, offset: usize) -> (usize, usize) {
    let mut line = 1;
    let mut column = 1;
    for (i, c) in text.char_indices() {
        if i >= offset {
            break;
        }
        if c == '\n' {
            line += 1;
            column = 1;
        } else {
            column += 1;
        }
    }
    (line, column)
}
