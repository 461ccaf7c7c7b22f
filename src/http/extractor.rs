//! Authentication as an extractor: a handler that takes [`Caller`] runs only for a valid
//! bearer token, and `caller.require(role)` checks what it may do.

use axum::extract::FromRequestParts;
use axum::http::request::Parts;

use super::ApiContext;
use super::error::ApiError;
pub use crate::auth::Caller;
use crate::auth::{self, Role};

impl FromRequestParts<ApiContext> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, context: &ApiContext) -> Result<Self, Self::Rejection> {
        let header = parts.headers.get(axum::http::header::AUTHORIZATION).and_then(|v| v.to_str().ok());
        let Some(token) = header.and_then(|h| h.strip_prefix("Bearer ")) else {
            return Err(ApiError::Unauthorized);
        };
        match auth::verify(&context.db, token.trim()).await.map_err(|e| ApiError::Internal(e.into()))? {
            Some(caller) => Ok(caller),
            None => Err(ApiError::Unauthorized),
        }
    }
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
