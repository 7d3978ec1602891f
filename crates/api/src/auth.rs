//! Who may use the API: bearer tokens from a file, each with a role. Reads (GET, HEAD)
//! need a `read` token, everything else a `read-write` one.
//!
//! The file has one token per line, `ROLE TOKEN`, where ROLE is `read` or `read-write`;
//! blank lines and lines starting with `#` are skipped. Only the tokens' BLAKE3 hashes are
//! kept, and a presented token is hashed and compared with every entry, each comparison
//! in constant time (`blake3::Hash`'s `==`), so neither the time an answer takes nor the
//! daemon's memory tells a token apart.

use std::path::Path;
use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{HeaderValue, Method, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::error::{ApiError, ErrorCode};

/// Shorter tokens are refused when the file is read: they could be guessed.
const TOKEN_MIN_LEN: usize = 32;

/// What a token lets its holder do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Role {
    Read,
    ReadWrite,
}

#[derive(Debug, thiserror::Error)]
pub enum TokensError {
    #[error("cannot read API tokens {path}: {source}")]
    Read { path: String, source: std::io::Error },
    #[error("API tokens {path}, line {line}: {reason}")]
    Malformed { path: String, line: usize, reason: String },
    #[error("API tokens {path}: no token in it")]
    Empty { path: String },
}

/// The tokens a daemon accepts.
#[derive(Clone)]
pub struct ApiTokens(Arc<Vec<(blake3::Hash, Role)>>);

impl std::fmt::Debug for ApiTokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ApiTokens({} tokens)", self.0.len())
    }
}

impl ApiTokens {
    pub fn load(path: &Path) -> Result<Self, TokensError> {
        let shown = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|source| TokensError::Read { path: shown.clone(), source })?;
        Self::parse(&text, &shown)
    }

    /// The tokens of a tokens file's `text`; errors name the file as `shown`.
    pub fn parse(text: &str, shown: &str) -> Result<Self, TokensError> {
        let mut tokens = Vec::new();
        for (index, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let malformed =
                |reason: &str| TokensError::Malformed { path: shown.into(), line: index + 1, reason: reason.into() };
            let (role, token) = line.split_once(char::is_whitespace).ok_or_else(|| malformed("expected ROLE TOKEN"))?;
            let role = match role {
                "read" => Role::Read,
                "read-write" => Role::ReadWrite,
                _ => return Err(malformed("the role must be read or read-write")),
            };
            let token = token.trim();
            if token.len() < TOKEN_MIN_LEN || !token.bytes().all(|b| b.is_ascii_graphic()) {
                return Err(malformed("a token is at least 32 printable characters without spaces"));
            }
            tokens.push((blake3::hash(token.as_bytes()), role));
        }
        if tokens.is_empty() {
            return Err(TokensError::Empty { path: shown.into() });
        }
        Ok(Self(Arc::new(tokens)))
    }

    /// The role of a presented token, if it is one of ours.
    fn role_of(&self, presented: &str) -> Option<Role> {
        let presented = blake3::hash(presented.as_bytes());
        // Every entry is compared, so the time taken does not say which one matched.
        self.0.iter().fold(None, |found, (token, role)| if *token == presented { Some(*role) } else { found })
    }
}

/// Middleware: answers 401 to a request without a valid token and 403 to a write with a
/// read token; the route never runs for either.
pub(crate) async fn authorize(State(tokens): State<ApiTokens>, request: Request, next: Next) -> Response {
    let needed = if matches!(*request.method(), Method::GET | Method::HEAD) { Role::Read } else { Role::ReadWrite };
    let presented = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.strip_prefix("Bearer "));
    match presented.and_then(|token| tokens.role_of(token)) {
        None => {
            let why = if presented.is_some() { "the token is not valid here" } else { "a bearer token is needed" };
            let mut response = ApiError::new(ErrorCode::Unauthorized, why).into_response();
            response.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            response
        }
        Some(role) if role < needed => ApiError::new(ErrorCode::Forbidden, "this token may only read").into_response(),
        Some(_) => next.run(request).await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tokens(text: &str) -> Result<ApiTokens, TokensError> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tokens");
        std::fs::write(&path, text).unwrap();
        ApiTokens::load(&path)
    }

    const READER: &str = "r0000000000000000000000000000000000000000";
    const WRITER: &str = "w0000000000000000000000000000000000000000";

    #[test]
    fn each_token_has_its_role_and_nothing_else_has_one() {
        let tokens = tokens(&format!("# ops\nread {READER}\n\nread-write  {WRITER}\n")).unwrap();
        assert_eq!(tokens.role_of(READER), Some(Role::Read));
        assert_eq!(tokens.role_of(WRITER), Some(Role::ReadWrite));
        assert_eq!(tokens.role_of(&READER[1..]), None);
        assert_eq!(tokens.role_of(""), None);
        assert_eq!(format!("{tokens:?}"), "ApiTokens(2 tokens)", "tokens never reach the logs");
    }

    #[test]
    fn a_bad_tokens_file_is_a_one_line_error_naming_the_line() {
        for (text, expected) in [
            (format!("read {READER}\nwrite {WRITER}\n"), "line 2: the role must be read or read-write"),
            ("read short\n".to_owned(), "line 1: a token is at least 32 printable characters"),
            ("read\n".to_owned(), "line 1: expected ROLE TOKEN"),
            ("# nothing\n".to_owned(), "no token in it"),
        ] {
            let error = tokens(&text).unwrap_err().to_string();
            assert!(error.contains(expected) && !error.contains('\n'), "{error}");
        }
    }
}
