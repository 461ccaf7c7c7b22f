//! Dashboard login: `POST /api/v1/session` with a user name and password (or an API token)
//! sets a session cookie (HttpOnly, Secure, SameSite=Strict) and returns the CSRF token the page
//! sends back in `X-CSRF-Token` on every change. Failed logins are rate-limited per user name and
//! per client, each attempt counted before its password or token is checked. `GET
//! /api/v1/audit-log` shows Skywarden's own audit log to admins.

use std::net::SocketAddr;

use axum::Json;
use axum::Router;
use axum::extract::{ConnectInfo, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde::Deserialize;
use serde_json::json;
use sqlx::PgPool;

use super::ApiContext;
use super::error::{ApiError, ErrorBody};
use super::extractor::{Caller, RequireRole, SESSION_COOKIE, session_cookie};
use super::query::{Cursor, CursorKey, Limit, TypedQuery, page};
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
    check_login_fields(&login)?;
    let client = client_of(extensions.get::<ConnectInfo<SocketAddr>>());
    let signed_in = match (&login.username, &login.password, &login.token) {
        (Some(username), Some(password), None) => password_login(&context.db, username, password, &client).await?,
        (None, None, Some(token)) => token_login(&context.db, token, &client).await?,
        _ => return Err(ApiError::bad("body", "send a username and password, or a token")),
    };
    start_session(&context.db, signed_in, &client).await
}

/// Who signed in: the principal the audit log names, the name shown, and the role.
struct SignedIn {
    principal: String,
    display: String,
    role: Role,
}

fn internal(error: auth::AuthError) -> ApiError {
    ApiError::Internal(error.into())
}

fn check_login_fields(login: &Login) -> Result<(), ApiError> {
    for (field, value) in [("username", &login.username), ("password", &login.password), ("token", &login.token)] {
        if value.as_ref().is_some_and(|v| v.contains('\0') || v.len() > 1024) {
            return Err(ApiError::bad(field, format!("{field} is not a valid value")));
        }
    }
    Ok(())
}

/// Counts the attempt before the password is checked (refusing it past the limit), and takes
/// the count back only when the password is right.
async fn password_login(db: &PgPool, username: &str, password: &str, client: &str) -> Result<SignedIn, ApiError> {
    let principal = format!("user:{username}");
    let Some(attempt) = sessions::reserve_attempt(db, username, client).await.map_err(internal)? else {
        audit::record(db, &principal, "login.blocked", None, Some(client), json!({})).await;
        return Err(ApiError::TooManyRequests(sessions::FAILURE_WINDOW_MINUTES * 60));
    };
    match users::verify(db, username, password).await.map_err(internal)? {
        Some(role) => {
            sessions::release(db, attempt).await.map_err(internal)?;
            Ok(SignedIn { principal, display: username.to_owned(), role })
        }
        None => {
            audit::record(db, &principal, "login.failed", None, Some(client), json!({})).await;
            Err(ApiError::LoginFailed)
        }
    }
}

/// The id part of a well-formed token, or `malformed`: a pasted secret must never become a
/// name in the audit log.
fn token_id(token: &str) -> &str {
    token
        .trim()
        .strip_prefix("swk_")
        .and_then(|rest| rest.split_once('_'))
        .map(|(id, _)| id)
        .filter(|id| (1..=32).contains(&id.len()) && id.bytes().all(|b| b.is_ascii_alphanumeric()))
        .unwrap_or("malformed")
}

async fn token_login(db: &PgPool, token: &str, client: &str) -> Result<SignedIn, ApiError> {
    // Rate-limited under the token's id, so guessing secrets for one id is slowed too.
    let name = format!("token:{}", token_id(token));
    let Some(attempt) = sessions::reserve_attempt(db, &name, client).await.map_err(internal)? else {
        audit::record(db, &name, "login.blocked", None, Some(client), json!({})).await;
        return Err(ApiError::TooManyRequests(sessions::FAILURE_WINDOW_MINUTES * 60));
    };
    match auth::verify(db, token.trim()).await.map_err(internal)? {
        Some(caller) => {
            sessions::release(db, attempt).await.map_err(internal)?;
            Ok(SignedIn { principal: format!("token:{}", caller.token_id), display: caller.name, role: caller.role })
        }
        None => {
            audit::record(db, &name, "login.failed", None, Some(client), json!({})).await;
            Err(ApiError::LoginFailed)
        }
    }
}

/// Creates the session, records the login and answers with the cookie and the CSRF token.
async fn start_session(db: &PgPool, signed_in: SignedIn, client: &str) -> Result<Response, ApiError> {
    let SignedIn { principal, display, role } = signed_in;
    let session = sessions::create(db, &principal, &display, role).await.map_err(internal)?;
    audit::record(db, &principal, "login", None, Some(client), json!({"role": role})).await;
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

type AuditLogLimit = Limit<1000, 100>;

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
struct AuditLogQuery {
    /// Only entries by this actor (`user:…` or `token:…`).
    actor: Option<String>,
    /// Only this action, e.g. `login.failed`.
    action: Option<String>,
    /// Entries per page, newest first.
    #[serde(default)]
    #[param(inline)]
    limit: AuditLogLimit,
    /// `next_cursor` of the previous page.
    #[serde(default)]
    #[param(value_type = Option<String>)]
    cursor: Option<Cursor<AuditKey>>,
}

/// An entry's position: its id (newest first).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, Deserialize)]
struct AuditKey(i64);

impl CursorKey for AuditKey {
    const KIND: &'static str = "audit-log";
}

/// A page of Skywarden's audit log, newest first.
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub struct AuditLogPage {
    pub entries: Vec<AuditEntry>,
    /// The next page's `cursor`; absent on the last page.
    pub next_cursor: Option<String>,
}

#[utoipa::path(get, path = "/api/v1/audit-log", tag = "session", params(AuditLogQuery), responses((status = 200, description = "OK", body = AuditLogPage), (status = 400, description = "A bad parameter; `field` names it", body = ErrorBody), (status = 401, description = "No valid token or session", body = ErrorBody), (status = 403, description = "The role is too low, or the CSRF token is missing", body = ErrorBody)), security(("bearer" = []), ("session" = [])))]
async fn audit_log(
    caller: Caller,
    State(context): State<ApiContext>,
    query: Result<TypedQuery<AuditLogQuery>, ApiError>,
) -> Result<Json<AuditLogPage>, ApiError> {
    caller.require(Role::Admin)?;
    let TypedQuery(query) = query?;
    let (actor, action, before) = (query.actor.as_deref(), query.action.as_deref(), query.cursor.map(|c| c.0.0));
    let rows = audit::list_before(&context.db, actor, action, before, query.limit.0 + 1).await?;
    let (entries, next_cursor) = page(rows, query.limit.0, |e: &AuditEntry| AuditKey(e.id));
    Ok(Json(AuditLogPage { entries, next_cursor }))
}
