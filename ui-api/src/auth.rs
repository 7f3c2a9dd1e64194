//! Tokens of the SQL front-ends: the PostgreSQL password and the Flight SQL bearer token.
//!
//! With no tokens configured every client is accepted; with tokens, a client must present one
//! of them. (A later issue brings the full tenant and token model.)

use std::sync::Arc;

/// The tokens SQL clients must present (`[auth] tokens`).
#[derive(Debug, Clone, Default)]
pub struct SqlAuth {
    tokens: Arc<[String]>,
}

impl SqlAuth {
    /// Accepts any of `tokens`; none means no authentication.
    pub fn new(tokens: Vec<String>) -> Self {
        Self {
            tokens: tokens.into(),
        }
    }

    /// True when clients must present a token.
    pub fn required(&self) -> bool {
        !self.tokens.is_empty()
    }

    /// True when `token` is one of the configured tokens, or when none are configured.
    pub fn accepts(&self, token: &str) -> bool {
        !self.required()
            || self
                .tokens
                .iter()
                .any(|t| constant_time_eq(t.as_bytes(), token.as_bytes()))
    }
}

/// Compares without stopping at the first difference, so the time taken does not tell how
/// much of a guess was right.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn open_without_tokens_and_exact_with_them() {
        assert!(!SqlAuth::default().required());
        assert!(SqlAuth::default().accepts(""));
        let auth = SqlAuth::new(vec!["0123456789abcdef".into()]);
        assert!(auth.required());
        assert!(auth.accepts("0123456789abcdef"));
        for wrong in [
            "",
            "0123456789abcdeF",
            "0123456789abcdef0",
            "0123456789abcde",
        ] {
            assert!(!auth.accepts(wrong), "{wrong}");
        }
    }
}
