//! Dashboard users, for admins: list them (never a password hash), disable one (their sessions
//! end at once and they cannot sign in) or enable them again. Each change is in the audit log.

use axum::Json;
use axum::Router;
use axum::extract::{Path, State};
use axum::routing::{get, post};
use serde_json::{Value, json};

use super::ApiContext;
use super::error::{ApiError, ErrorBody};
use super::extractor::{Caller, RequireRole};
use crate::auth::users::{self, UserInfo};
use crate::auth::{AuthError, Role, audit};

pub fn router() -> Router<ApiContext> {
    Router::new()
        .route("/api/v1/users", get(list))
        .route("/api/v1/users/{name}/disable", post(disable))
        .route("/api/v1/users/{name}/enable", post(enable))
}

#[utoipa::path(get, path = "/api/v1/users", tag = "session", responses((status = 200, body = Vec<UserInfo>), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody)), security(("bearer" = []), ("session" = [])))]
async fn list(caller: Caller, State(context): State<ApiContext>) -> Result<Json<Vec<UserInfo>>, ApiError> {
    caller.require(Role::Admin)?;
    Ok(Json(users::list(&context.db).await.map_err(|e| ApiError::Internal(e.into()))?))
}

/// Disables the user and ends their dashboard sessions at once.
#[utoipa::path(post, path = "/api/v1/users/{name}/disable", tag = "session", params(("name" = String, Path)), responses((status = 200, body = Object), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody), (status = 409, description = "An admin cannot disable their own user", body = ErrorBody)), security(("bearer" = []), ("session" = [])))]
async fn disable(
    caller: Caller,
    State(context): State<ApiContext>,
    Path(name): Path<String>,
) -> Result<Json<Value>, ApiError> {
    caller.require(Role::Admin)?;
    // Locking oneself out from the dashboard is never what was meant; the CLI still can.
    if caller.actor() == format!("user:{name}") {
        return Err(ApiError::Conflict("you cannot disable your own user".into()));
    }
    change(&caller, &context, &name, true).await
}

#[utoipa::path(post, path = "/api/v1/users/{name}/enable", tag = "session", params(("name" = String, Path)), responses((status = 200, body = Object), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)), security(("bearer" = []), ("session" = [])))]
async fn enable(
    caller: Caller,
    State(context): State<ApiContext>,
    Path(name): Path<String>,
) -> Result<Json<Value>, ApiError> {
    caller.require(Role::Admin)?;
    change(&caller, &context, &name, false).await
}

async fn change(caller: &Caller, context: &ApiContext, name: &str, disabled: bool) -> Result<Json<Value>, ApiError> {
    if !users::is_username(name) {
        return Err(ApiError::bad("name", "a user name is 1 to 64 letters, digits, or . _ @ -"));
    }
    match users::set_disabled(&context.db, name, disabled).await {
        Ok(()) => {}
        Err(AuthError::NoUser(_)) => return Err(ApiError::NotFound),
        Err(error) => return Err(ApiError::Internal(error.into())),
    }
    let action = if disabled { "user.disable" } else { "user.enable" };
    audit::record(&context.db, &caller.actor(), action, Some(name), None, json!({})).await;
    Ok(Json(json!({"user": name, "disabled": disabled})))
}
