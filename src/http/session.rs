//! Dashboard login: `POST /api/v1/session` with a user name and password (or an API token)
//! sets a session cookie (HttpOnly, Secure, SameSite=Strict) and returns the CSRF token the page
//! sends back in `X-CSRF-Token` on every change. Failed logins are rate-limited per user name and
//! per client. `GET /api/v1/audit-log` shows Skywarden's own audit log to admins.

use std::collections::HashMap;
use std::net::SocketAddr;

use axum::Json;
use axum::Router;
use axum::extract::{ConnectInfo, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde::Deserialize;
use serde_json::json;

use super::ApiContext;
use super::error::{ApiError, ErrorBody};
use super::extractor::{Caller, RequireRole, SESSION_COOKIE, session_cookie};
use super::params::Params;
use crate::auth::audit::AuditEntry;
use crate::auth::{self, Role, audit, sessions, users};

pub fn router() -> Router<ApiContext> {
    Router::new()
        .route("/api/v1/session", get(current).post(login).delete(logout))
        .route("/api/v1/audit-log", get(audit_log))
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct Login {
    username: Option<String>,
    password: Option<String>,
    token: Option<String>,
}

/// The client's address as the server saw it (a proxy in front shows up as itself).
pub fn client_of(connect: Option<&ConnectInfo<SocketAddr>>) -> String {
    connect.map(|c| c.0.ip().to_string()).unwrap_or_else(|| "unknown".into())
}

#[utoipa::path(post, path = "/api/v1/session", tag = "session", request_body = Login, responses((status = 200, description = "Signed in; sets the session cookie", body = Object), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 429, description = "Too many failed logins", body = ErrorBody)))]
async fn login(
    State(context): State<ApiContext>,
    extensions: axum::http::Extensions,
    body: Result<Json<Login>, axum::extract::rejection::JsonRejection>,
) -> Result<Response, ApiError> {
    let Json(login) = body.map_err(|e| ApiError::bad("body", e.body_text()))?;
    for (field, value) in [("username", &login.username), ("password", &login.password), ("token", &login.token)] {
        if value.as_ref().is_some_and(|v| v.contains('\0') || v.len() > 1024) {
            return Err(ApiError::bad(field, format!("{field} is not a valid value")));
        }
    }
    let client = client_of(extensions.get::<ConnectInfo<SocketAddr>>());
    let internal = |e: auth::AuthError| ApiError::Internal(e.into());
    let (principal, display, role) = match (&login.username, &login.password, &login.token) {
        (Some(username), Some(password), None) => {
            if sessions::login_blocked(&context.db, username, &client).await.map_err(internal)? {
                audit::record(
                    &context.db,
                    &format!("user:{username}"),
                    "login.blocked",
                    None,
                    Some(&client),
                    json!({}),
                )
                .await;
                return Err(ApiError::TooManyRequests(sessions::FAILURE_WINDOW_MINUTES * 60));
            }
            match users::verify(&context.db, username, password).await.map_err(internal)? {
                Some(role) => (format!("user:{username}"), username.clone(), role),
                None => {
                    sessions::record_failure(&context.db, username, &client).await.map_err(internal)?;
                    audit::record(
                        &context.db,
                        &format!("user:{username}"),
                        "login.failed",
                        None,
                        Some(&client),
                        json!({}),
                    )
                    .await;
                    return Err(ApiError::LoginFailed);
                }
            }
        }
        (None, None, Some(token)) => {
            // Rate-limited under the token's id, so guessing secrets for one id is slowed too.
            // Only the id part of a well-formed token: a pasted secret must never become a name
            // in the audit log.
            let id = token
                .trim()
                .strip_prefix("swk_")
                .and_then(|rest| rest.split_once('_'))
                .map(|(id, _)| id)
                .filter(|id| (1..=32).contains(&id.len()) && id.bytes().all(|b| b.is_ascii_alphanumeric()))
                .unwrap_or("malformed")
                .to_owned();
            if sessions::login_blocked(&context.db, &format!("token:{id}"), &client).await.map_err(internal)? {
                return Err(ApiError::TooManyRequests(sessions::FAILURE_WINDOW_MINUTES * 60));
            }
            match auth::verify(&context.db, token.trim()).await.map_err(internal)? {
                Some(caller) => (format!("token:{}", caller.token_id), caller.name, caller.role),
                None => {
                    sessions::record_failure(&context.db, &format!("token:{id}"), &client).await.map_err(internal)?;
                    audit::record(&context.db, &format!("token:{id}"), "login.failed", None, Some(&client), json!({}))
                        .await;
                    return Err(ApiError::LoginFailed);
                }
            }
        }
        _ => return Err(ApiError::bad("body", "send a username and password, or a token")),
    };
    let session = sessions::create(&context.db, &principal, &display, role).await.map_err(internal)?;
    audit::record(&context.db, &principal, "login", None, Some(&client), json!({"role": role})).await;
    let cookie = format!(
        "{SESSION_COOKIE}={}; Path=/; HttpOnly; Secure; SameSite=Strict; Max-Age={}",
        session.cookie,
        sessions::MAX_AGE_HOURS * 3600
    );
    let mut response = Json(json!({
        "user": display, "role": role, "csrf_token": session.csrf_token, "expires_at": session.expires_at
    }))
    .into_response();
    response
        .headers_mut()
        .insert(header::SET_COOKIE, HeaderValue::from_str(&cookie).map_err(|e| ApiError::Internal(e.into()))?);
    Ok(response)
}

/// The session behind the cookie, with its CSRF token (the page reloads it after a refresh).
#[utoipa::path(get, path = "/api/v1/session", tag = "session", responses((status = 200, body = Object), (status = 401, body = ErrorBody)), security(("session" = [])))]
async fn current(State(context): State<ApiContext>, headers: HeaderMap) -> Result<Json<serde_json::Value>, ApiError> {
    let cookie = session_cookie(&headers).ok_or(ApiError::Unauthorized)?;
    let (caller, csrf) = sessions::verify(&context.db, &cookie)
        .await
        .map_err(|e| ApiError::Internal(e.into()))?
        .ok_or(ApiError::Unauthorized)?;
    Ok(Json(json!({"user": caller.name, "role": caller.role, "csrf_token": csrf})))
}

#[utoipa::path(delete, path = "/api/v1/session", tag = "session", responses((status = 204, description = "Signed out"), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody)), security(("bearer" = []), ("session" = [])))]
async fn logout(caller: Caller, State(context): State<ApiContext>, headers: HeaderMap) -> Result<Response, ApiError> {
    if let Some(cookie) = session_cookie(&headers) {
        sessions::delete(&context.db, &cookie).await.map_err(|e| ApiError::Internal(e.into()))?;
    }
    audit::record(&context.db, &caller.actor(), "logout", None, None, json!({})).await;
    let mut response = StatusCode::NO_CONTENT.into_response();
    let expired = format!("{SESSION_COOKIE}=; Path=/; HttpOnly; Secure; SameSite=Strict; Max-Age=0");
    response
        .headers_mut()
        .insert(header::SET_COOKIE, HeaderValue::from_str(&expired).map_err(|e| ApiError::Internal(e.into()))?);
    Ok(response)
}

#[utoipa::path(get, path = "/api/v1/audit-log", tag = "session", params(("actor" = Option<String>, Query, description = ""), ("action" = Option<String>, Query, description = ""), ("limit" = Option<i64>, Query, description = "")), responses((status = 200, description = "OK", body = Vec<AuditEntry>), (status = 400, description = "A bad parameter; `field` names it", body = ErrorBody), (status = 401, description = "No valid token or session", body = ErrorBody), (status = 403, description = "The role is too low, or the CSRF token is missing", body = ErrorBody)), security(("bearer" = []), ("session" = [])))]
async fn audit_log(
    caller: Caller,
    State(context): State<ApiContext>,
    Query(query): Query<HashMap<String, String>>,
) -> Result<Json<Vec<audit::AuditEntry>>, ApiError> {
    caller.require(Role::Admin)?;
    let params = Params::new(&query, &["actor", "action", "limit"])?;
    let limit = params.limit(100, 1000)?;
    Ok(Json(audit::list(&context.db, params.text("actor").as_deref(), params.text("action").as_deref(), limit).await?))
}
