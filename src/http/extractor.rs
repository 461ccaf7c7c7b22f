//! Authentication as an extractor: a handler that takes [`Caller`] runs only for a valid bearer
//! token or dashboard session, and `caller.require(role)` checks what it may do. A session
//! (cookie) request that changes anything must carry the session's CSRF token.

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::{HeaderMap, Method};

use super::ApiContext;
use super::error::ApiError;
pub use crate::auth::Caller;
use crate::auth::{self, Role, sessions};

pub const SESSION_COOKIE: &str = "skywarden_session";
pub const CSRF_HEADER: &str = "x-csrf-token";

/// The session cookie's value, if the request has one.
pub fn session_cookie(headers: &HeaderMap) -> Option<String> {
    headers
        .get_all(axum::http::header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| *name == SESSION_COOKIE)
        .map(|(_, value)| value.to_owned())
}

impl FromRequestParts<ApiContext> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, context: &ApiContext) -> Result<Self, Self::Rejection> {
        let internal = |e: auth::AuthError| ApiError::Internal(e.into());
        let header = parts.headers.get(axum::http::header::AUTHORIZATION).and_then(|v| v.to_str().ok());
        if let Some(token) = header.and_then(|h| h.strip_prefix("Bearer ")) {
            return auth::verify(&context.db, token.trim()).await.map_err(internal)?.ok_or(ApiError::Unauthorized);
        }
        let Some(cookie) = session_cookie(&parts.headers) else {
            return Err(ApiError::Unauthorized);
        };
        let (caller, csrf) =
            sessions::verify(&context.db, &cookie).await.map_err(internal)?.ok_or(ApiError::Unauthorized)?;
        let safe = matches!(parts.method, Method::GET | Method::HEAD | Method::OPTIONS);
        if !safe {
            let sent = parts.headers.get(CSRF_HEADER).and_then(|v| v.to_str().ok()).unwrap_or_default();
            if !constant_time_eq(sent.as_bytes(), csrf.as_bytes()) {
                return Err(ApiError::Csrf);
            }
        }
        Ok(caller)
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

pub trait RequireRole {
    fn require(&self, role: Role) -> Result<(), ApiError>;
}

impl RequireRole for Caller {
    fn require(&self, role: Role) -> Result<(), ApiError> {
        if self.role >= role {
            Ok(())
        } else {
            Err(ApiError::Forbidden(match role {
                Role::Viewer => "viewer",
                Role::Analyst => "analyst",
                Role::Admin => "admin",
            }))
        }
    }
}
