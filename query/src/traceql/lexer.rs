//! TraceQL lexer: text to tokens with byte spans.
//!
//! Lexing is context-free. Attribute names are one token (`span.http.method`, `."a b"`), and
//! so are `scope:name` intrinsics. On a lexical error the token list ends with
//! [`Tok::Error`] and the error is returned beside it, so the parser reports whichever problem
//! comes first in the text.

use std::time::Duration;

use super::ast::{ends_attribute_name, DURATION_UNITS};
use super::ParseError;

/// A token kind.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Tok {
    LBrace,
    RBrace,
    LParen,
    RParen,
    Comma,
    /// `|`
    Pipe,
    /// `&&`
    AndAnd,
    /// `||`
    OrOr,
    /// `!`
    Bang,
    /// `=`
    Eq,
    /// `!=`
    Ne,
    /// `>`
    Gt,
    /// `>=`
    Ge,
    /// `<`
    Lt,
    /// `<=`
    Le,
    /// `=~`
    Re,
    /// `!~`
    Nre,
    /// `>>`
    Desc,
    /// `<<`
    Anc,
    /// `~`
    Tilde,
    /// `-`
    Minus,
    /// A bare word: keyword, legacy intrinsic, function name, or an unknown word.
    Ident(String),
    /// `.name` (scope `None`) or `word.name` (scope `Some(word)`, not yet checked).
    Attr {
        scope: Option<String>,
        name: String,
    },
    /// `word:name`, e.g. `span:id` (not yet checked).
    Colon {
        scope: String,
        name: String,
    },
    /// A string literal, escapes decoded.
    Str(String),
    /// An integer literal (magnitude; the parser applies `-` and checks the range).
    Int(u64),
    /// A finite float literal.
    Float(f64),
    /// A duration literal.
    Duration(Duration),
    /// End of input.
    Eof,
    /// A lexical error; the error itself is returned by [`lex`].
    Error,
}

/// A token and where it is in the text.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Token {
    pub(crate) tok: Tok,
    /// Byte offset of the first character.
    pub(crate) start: usize,
    /// Byte offset just past the last character.
    pub(crate) end: usize,
}

/// Splits `text` into tokens. The list always ends with `Eof`, or with `Error` when the second
/// value is `Some`.
pub(crate) fn lex(text: &str) -> (Vec<Token>, Option<ParseError>) {
    let mut lexer = Lexer { text, pos: 0 };
    let mut tokens = Vec::new();
    loop {
        lexer.skip_whitespace();
        let start = lexer.pos;
        match lexer.token() {
            Ok(Tok::Eof) => {
                tokens.push(Token {
                    tok: Tok::Eof,
                    start,
                    end: start,
                });
                return (tokens, None);
            }
            Ok(tok) => tokens.push(Token {
                tok,
                start,
                end: lexer.pos,
            }),
            Err(e) => {
                tokens.push(Token {
                    tok: Tok::Error,
                    start: e.offset,
                    end: e.offset,
                });
                return (tokens, Some(e));
            }
        }
    }
}

struct Lexer<'a> {
    text: &'a str,
    pos: usize,
}

impl Lexer<'_> {
    fn peek(&self) -> Option<char> {
        self.text[self.pos..].chars().next()
    }

    fn peek_nth(&self, n: usize) -> Option<char> {
        self.text[self.pos..].chars().nth(n)
    }

    fn bump(&mut self) -> Option<char> {
        let c = self.peek()?;
        self.pos += c.len_utf8();
        Some(c)
    }

    fn eat(&mut self, c: char) -> bool {
        if self.peek() == Some(c) {
            self.pos += c.len_utf8();
            true
        } else {
            false
        }
    }

    fn skip_whitespace(&mut self) {
        while self.peek().is_some_and(char::is_whitespace) {
            self.bump();
        }
    }

    fn error(
        &self,
        offset: usize,
        expected: impl Into<String>,
        found: impl Into<String>,
    ) -> ParseError {
        ParseError::new(self.text, offset, expected, found)
    }

    /// Lexes one token starting at `self.pos` (whitespace already skipped).
    fn token(&mut self) -> Result<Tok, ParseError> {
        let start = self.pos;
        let Some(c) = self.bump() else {
            return Ok(Tok::Eof);
        };
        Ok(match c {
            '{' => Tok::LBrace,
            '}' => Tok::RBrace,
            '(' => Tok::LParen,
            ')' => Tok::RParen,
            ',' => Tok::Comma,
            '~' => Tok::Tilde,
            '-' => Tok::Minus,
            '|' if self.eat('|') => Tok::OrOr,
            '|' => Tok::Pipe,
            '&' if self.eat('&') => Tok::AndAnd,
            '&' => {
                return Err(self
                    .error(start, "\"&&\"", "\"&\"")
                    .with_note("TraceQL writes logical and as &&"))
            }
            '!' if self.eat('=') => Tok::Ne,
            '!' if self.eat('~') => Tok::Nre,
            '!' => Tok::Bang,
            '=' if self.eat('~') => Tok::Re,
            '=' if self.peek() == Some('=') => {
                return Err(self
                    .error(
                        start,
                        "a comparison operator (=, !=, >, >=, <, <=, =~, !~)",
                        "\"==\"",
                    )
                    .with_note("TraceQL tests equality with a single ="))
            }
            '=' => Tok::Eq,
            '>' if self.eat('>') => Tok::Desc,
            '>' if self.eat('=') => Tok::Ge,
            '>' => Tok::Gt,
            '<' if self.eat('<') => Tok::Anc,
            '<' if self.eat('=') => Tok::Le,
            '<' => Tok::Lt,
            '"' => Tok::Str(self.quoted_string(start)?),
            '`' => Tok::Str(self.raw_string(start)?),
            '0'..='9' => {
                self.pos = start;
                self.number()?
            }
            '.' => self.after_dot(start)?,
            c if c.is_ascii_alphabetic() || c == '_' => {
                self.pos = start;
                self.word()?
            }
            '\'' => {
                return Err(self
                    .error(start, "a field, value, operator or bracket", "\"'\"")
                    .with_note("strings use double quotes or backticks: \"text\" or `text`"))
            }
            other => {
                return Err(self.error(
                    start,
                    "a field, value, operator or bracket",
                    format!("\"{}\"", other.escape_debug()),
                ))
            }
        })
    }

    /// After a `.` at `start`: a leading-dot float (`.99`), or an unscoped attribute.
    fn after_dot(&mut self, start: usize) -> Result<Tok, ParseError> {
        if self.peek().is_some_and(|c| c.is_ascii_digit()) {
            // `.99` followed by something that ends a name is a number (as in
            // `quantile_over_time(duration, .99)`); `.5xx` is an attribute.
            let mut end = self.pos;
            let rest = &self.text[self.pos..];
            let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
            end += digits;
            if let Some(exp) = exponent_len(&self.text[end..]) {
                end += exp;
            }
            let next = self.text[end..].chars().next();
            if next.is_none_or(ends_attribute_name) {
                let literal = &self.text[start..end];
                let value: f64 = format!("0{literal}")
                    .parse()
                    .map_err(|_| self.error(start, "a number", format!("\"{literal}\"")))?;
                self.pos = end;
                return self.finite(start, literal, value);
            }
        }
        let name = self.attribute_name(".")?;
        Ok(Tok::Attr { scope: None, name })
    }

    /// An attribute name after its `.`: an unquoted run or a quoted string.
    fn attribute_name(&mut self, prefix: &str) -> Result<String, ParseError> {
        let name_start = self.pos;
        match self.peek() {
            Some('"') => {
                self.bump();
                self.quoted_string(name_start)
            }
            Some('`') => {
                self.bump();
                self.raw_string(name_start)
            }
            Some(c) if !ends_attribute_name(c) => {
                while self.peek().is_some_and(|c| !ends_attribute_name(c)) {
                    self.bump();
                }
                Ok(self.text[name_start..self.pos].to_string())
            }
            other => Err(self
                .error(
                    name_start,
                    format!("an attribute name after \"{prefix}\""),
                    describe_char(other),
                )
                .with_note(format!(
                    "write the name right after the dot, e.g. {prefix}http.method or {prefix}\"a name\""
                ))),
        }
    }

    /// A word at `self.pos`: a keyword, `scope.attribute` or `scope:intrinsic`.
    fn word(&mut self) -> Result<Tok, ParseError> {
        let start = self.pos;
        while self
            .peek()
            .is_some_and(|c| c.is_ascii_alphanumeric() || c == '_')
        {
            self.bump();
        }
        let word = self.text[start..self.pos].to_string();
        match self.peek() {
            Some('.') => {
                self.bump();
                let name = self.attribute_name(&format!("{word}."))?;
                Ok(Tok::Attr {
                    scope: Some(word),
                    name,
                })
            }
            Some(':') => {
                self.bump();
                let name_start = self.pos;
                while self
                    .peek()
                    .is_some_and(|c| c.is_ascii_alphanumeric() || c == '_')
                {
                    self.bump();
                }
                if self.pos == name_start {
                    return Err(self.error(
                        name_start,
                        format!("an intrinsic name after \"{word}:\""),
                        describe_char(self.peek()),
                    ));
                }
                let name = self.text[name_start..self.pos].to_string();
                Ok(Tok::Colon { scope: word, name })
            }
            _ => Ok(Tok::Ident(word)),
        }
    }

    /// The body of a `"` string whose quote is at `start` (already consumed).
    fn quoted_string(&mut self, start: usize) -> Result<String, ParseError> {
        let mut out = String::new();
        loop {
            let at = self.pos;
            match self.bump() {
                None => {
                    return Err(self
                        .error(
                            start,
                            "a closing \" for the string that starts here",
                            "end of input",
                        )
                        .with_note("close the string with \" (write \\\" for a quote inside it)"))
                }
                Some('"') => return Ok(out),
                Some('\\') => out.push(self.escape(at)?),
                Some(c) => out.push(c),
            }
        }
    }

    /// One escape sequence whose backslash is at `at` (already consumed).
    fn escape(&mut self, at: usize) -> Result<char, ParseError> {
        let c = self.bump();
        Ok(match c {
            Some('"') => '"',
            Some('\\') => '\\',
            Some('\'') => '\'',
            Some('n') => '\n',
            Some('r') => '\r',
            Some('t') => '\t',
            Some('a') => '\u{7}',
            Some('b') => '\u{8}',
            Some('f') => '\u{c}',
            Some('v') => '\u{b}',
            Some('0') => '\0',
            Some('x') => self.hex_escape(at, 2, 'x')?,
            Some('u') => self.hex_escape(at, 4, 'u')?,
            Some('U') => self.hex_escape(at, 8, 'U')?,
            other => {
                let found = match other {
                    None => "end of input".to_string(),
                    Some(c) => format!("\"\\{c}\""),
                };
                return Err(self
                    .error(
                        at,
                        "an escape sequence (\\\\, \\\", \\n, \\r, \\t, \\xHH, \\uHHHH)",
                        found,
                    )
                    .with_note(
                        "write a backslash as \\\\, or use a backtick string for regexes: `a\\.b`",
                    ));
            }
        })
    }

    fn hex_escape(&mut self, at: usize, digits: usize, letter: char) -> Result<char, ParseError> {
        let hex_start = self.pos;
        let hex: String = self.text[hex_start..]
            .chars()
            .take(digits)
            .take_while(char::is_ascii_hexdigit)
            .collect();
        let expected = || {
            format!(
                "{digits} hex digits after \\{letter}{}",
                if letter == 'x' { " (00 to 7f)" } else { "" }
            )
        };
        if hex.len() != digits {
            let found = &self.text[at..hex_start + hex.len()];
            return Err(self.error(at, expected(), format!("\"{found}\"")));
        }
        self.pos += digits;
        let value = u32::from_str_radix(&hex, 16).unwrap_or(u32::MAX);
        match char::from_u32(value) {
            Some(c) if letter != 'x' || value < 0x80 => Ok(c),
            _ => Err(self.error(
                at,
                if letter == 'x' {
                    expected()
                } else {
                    "a valid Unicode code point".to_string()
                },
                format!("\"{}\"", &self.text[at..self.pos]),
            )),
        }
    }

    /// The body of a `` ` `` raw string whose backtick is at `start` (already consumed).
    fn raw_string(&mut self, start: usize) -> Result<String, ParseError> {
        let body_start = self.pos;
        match self.text[body_start..].find('`') {
            Some(len) => {
                self.pos = body_start + len + 1;
                Ok(self.text[body_start..body_start + len].to_string())
            }
            None => Err(self
                .error(
                    start,
                    "a closing ` for the string that starts here",
                    "end of input",
                )
                .with_note("close the raw string with a backtick")),
        }
    }

    /// An integer, float or duration starting at `self.pos` (a digit).
    fn number(&mut self) -> Result<Tok, ParseError> {
        let start = self.pos;
        let is_fraction = self.mantissa();
        let exponent = exponent_len(&self.text[self.pos..]);
        if let Some(len) = exponent {
            self.pos += len;
        }
        if self.peek().is_some_and(char::is_alphabetic) {
            if exponent.is_some() {
                let end = self.word_end();
                return Err(self
                    .error(
                        start,
                        "a number or a duration",
                        format!("\"{}\"", &self.text[start..end]),
                    )
                    .with_note("durations take no exponent: write 1000ms, not 1e3ms"));
            }
            self.pos = start;
            return self.duration();
        }
        let literal = &self.text[start..self.pos];
        if exponent.is_none() && !is_fraction {
            return literal.parse::<u64>().map(Tok::Int).map_err(|_| {
                self.error(
                    start,
                    "an integer up to 9223372036854775807",
                    format!("\"{literal}\""),
                )
            });
        }
        let value: f64 = literal
            .parse()
            .map_err(|_| self.error(start, "a number", format!("\"{literal}\"")))?;
        self.finite(start, literal, value)
    }

    fn finite(&self, start: usize, literal: &str, value: f64) -> Result<Tok, ParseError> {
        if value.is_finite() {
            Ok(Tok::Float(value))
        } else {
            Err(self.error(start, "a float within ±1.7e308", format!("\"{literal}\"")))
        }
    }

    /// Skips digits with an optional `.digits`; returns whether there was a fraction.
    fn mantissa(&mut self) -> bool {
        while self.peek().is_some_and(|c| c.is_ascii_digit()) {
            self.bump();
        }
        let mut fraction = false;
        if self.peek() == Some('.') && self.peek_nth(1).is_some_and(|c| c.is_ascii_digit()) {
            fraction = true;
            self.bump();
            while self.peek().is_some_and(|c| c.is_ascii_digit()) {
                self.bump();
            }
        }
        fraction
    }

    /// End of the run of letters, digits, `.` and `_` at `self.pos` (for error messages).
    fn word_end(&self) -> usize {
        let rest = &self.text[self.pos..];
        let len = rest
            .char_indices()
            .find(|(_, c)| !(c.is_alphanumeric() || *c == '.' || *c == '_'))
            .map_or(rest.len(), |(i, _)| i);
        self.pos + len
    }

    /// A duration such as `200ms`, `1h30m` or `1.5s` at `self.pos`.
    fn duration(&mut self) -> Result<Tok, ParseError> {
        let start = self.pos;
        let mut total: u128 = 0;
        loop {
            let part_start = self.pos;
            self.mantissa();
            let number = &self.text[part_start..self.pos];
            let unit_start = self.pos;
            while self.peek().is_some_and(char::is_alphabetic) {
                self.bump();
            }
            let unit = &self.text[unit_start..self.pos];
            if unit.is_empty() {
                return Err(self
                    .error(
                        unit_start,
                        format!("a unit after \"{number}\" (ns, us, µs, ms, s, m or h)"),
                        describe_char(self.peek()),
                    )
                    .with_note("each number in a duration needs a unit, e.g. 1h30m"));
            }
            let Some(size) = unit_nanos(unit) else {
                return Err(self
                    .error(
                        unit_start,
                        "a duration unit (ns, us, µs, ms, s, m or h)",
                        format!("\"{unit}\" in \"{}\"", &self.text[part_start..self.pos]),
                    )
                    .with_note("write durations like 200ms, 1.5s or 1h30m"));
            };
            let part = part_nanos(number, size).ok_or_else(|| self.too_long(start))?;
            total = total
                .checked_add(part)
                .ok_or_else(|| self.too_long(start))?;
            if total > i64::MAX as u128 {
                return Err(self.too_long(start));
            }
            if !self.peek().is_some_and(|c| c.is_ascii_digit()) {
                break;
            }
        }
        if self.peek().is_some_and(|c| c == '_' || c == '.') {
            let end = self.word_end();
            return Err(self.error(
                start,
                "a duration such as 200ms, 1.5s or 1h30m",
                format!("\"{}\"", &self.text[start..end]),
            ));
        }
        // `total` fits in i64, so in u64.
        Ok(Tok::Duration(Duration::from_nanos(total as u64)))
    }

    fn too_long(&self, start: usize) -> ParseError {
        let end = self.word_end().max(self.pos);
        self.error(
            start,
            "a duration up to about 292 years",
            format!("\"{}\"", &self.text[start..end]),
        )
    }
}

/// Length of an exponent (`e7`, `E-3`, `e+10`) at the start of `rest`, if there is one.
fn exponent_len(rest: &str) -> Option<usize> {
    let bytes = rest.as_bytes();
    if !matches!(bytes.first(), Some(b'e' | b'E')) {
        return None;
    }
    let sign = usize::from(matches!(bytes.get(1), Some(b'+' | b'-')));
    let digits = bytes[1 + sign..]
        .iter()
        .take_while(|b| b.is_ascii_digit())
        .count();
    (digits > 0).then_some(1 + sign + digits)
}

/// Nanoseconds in one `unit`, or `None` for an unknown unit.
fn unit_nanos(unit: &str) -> Option<u128> {
    let unit = match unit {
        "µs" | "μs" => "us",
        other => other,
    };
    DURATION_UNITS
        .into_iter()
        .find(|(name, _)| *name == unit)
        .map(|(_, size)| size)
}

/// `number` (digits, optional `.digits`) times `size` nanoseconds, truncated to whole
/// nanoseconds; `None` on overflow.
fn part_nanos(number: &str, size: u128) -> Option<u128> {
    let (whole, fraction) = number.split_once('.').unwrap_or((number, ""));
    let whole: u128 = if whole.len() > 30 {
        return None;
    } else {
        whole.parse().ok()?
    };
    let mut nanos = whole.checked_mul(size)?;
    // Digits past the 19th cannot change a count of at most 3.6e12 ns per unit.
    let fraction = &fraction[..fraction.len().min(19)];
    if !fraction.is_empty() {
        let scale = 10u128.pow(fraction.len() as u32);
        let digits: u128 = fraction.parse().ok()?;
        nanos = nanos.checked_add(digits * size / scale)?;
    }
    Some(nanos)
}

fn describe_char(c: Option<char>) -> String {
    match c {
        None => "end of input".to_string(),
        Some(c) if c.is_whitespace() => "a space".to_string(),
        Some(c) => format!("\"{c}\""),
    }
}
