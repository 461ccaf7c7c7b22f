//! API tokens, for admins: list (never a secret), create (the token is in the answer, and
//! nowhere else, ever), revoke. Each change is in Skywarden's audit log.

use axum::Json;
use axum::Router;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::{delete, get};
use serde::Deserialize;
use serde_json::{Value, json};

use super::ApiContext;
use super::error::{ApiError, ErrorBody};
use super::extractor::{Caller, RequireRole};
use crate::auth::{self, AuthError, Role, TokenInfo, audit};

pub fn router() -> Router<ApiContext> {
    Router::new().route("/api/v1/tokens", get(list).post(create)).route("/api/v1/tokens/{id}", delete(revoke))
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct NewToken {
    name: String,
    role: Role,
}

#[utoipa::path(get, path = "/api/v1/tokens", tag = "session", responses((status = 200, body = Vec<TokenInfo>), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody)), security(("bearer" = []), ("session" = [])))]
async fn list(caller: Caller, State(context): State<ApiContext>) -> Result<Json<Vec<TokenInfo>>, ApiError> {
    caller.require(Role::Admin)?;
    Ok(Json(auth::list(&context.db).await.map_err(|e| ApiError::Internal(e.into()))?))
}

#[utoipa::path(post, path = "/api/v1/tokens", tag = "session", request_body = NewToken, responses((status = 201, description = "Created; the token is shown only now", body = Object), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody)), security(("bearer" = []), ("session" = [])))]
async fn create(
    caller: Caller,
    State(context): State<ApiContext>,
    body: Result<Json<NewToken>, axum::extract::rejection::JsonRejection>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    caller.require(Role::Admin)?;
    let Json(request) = body.map_err(|e| ApiError::bad("body", e.body_text()))?;
    let name = request.name.trim();
    if name.is_empty() || name.len() > 128 || name.chars().any(char::is_control) {
        return Err(ApiError::bad("name", "a token name is 1 to 128 characters, without control characters"));
    }
    let (id, token) = auth::create(&context.db, name, request.role).await.map_err(|e| ApiError::Internal(e.into()))?;
    audit::record(
        &context.db,
        &caller.actor(),
        "token.create",
        Some(&id),
        None,
        json!({"name": name, "role": request.role}),
    )
    .await;
    Ok((StatusCode::CREATED, Json(json!({"id": id, "name": name, "role": request.role, "token": token}))))
}

#[utoipa::path(delete, path = "/api/v1/tokens/{id}", tag = "session", params(("id" = String, Path)), responses((status = 200, body = Object), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)), security(("bearer" = []), ("session" = [])))]
async fn revoke(
    caller: Caller,
    State(context): State<ApiContext>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    caller.require(Role::Admin)?;
    if id.len() > 64 || !id.bytes().all(|b| b.is_ascii_alphanumeric()) {
        return Err(ApiError::bad("id", "a token id is letters and digits"));
    }
    match auth::revoke(&context.db, &id).await {
        Ok(()) => {}
        Err(AuthError::NotFound(_)) => return Err(ApiError::NotFound),
        Err(error) => return Err(ApiError::Internal(error.into())),
    }
    audit::record(&context.db, &caller.actor(), "token.revoke", Some(&id), None, json!({})).await;
    Ok(Json(json!({"revoked": id})))
}
