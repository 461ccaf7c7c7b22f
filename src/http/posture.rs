//! Posture over HTTP: scores per account and section (with the trend), findings with their
//! cause and history, the checks and their framework controls, suppressions, and a run now.

use axum::Json;
use axum::Router;
use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::{delete, get, post};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::ApiContext;
use super::error::{ApiError, ErrorBody};
use super::extractor::{Caller, RequireRole};
use super::query::{Cursor, CursorKey, Limit, TypedQuery, page};
use crate::auth::{Role, audit};
use crate::posture::findings::{
    self, FindingFilter, FindingPageKey, FindingView, FindingsError, ScoreKey, ScoreView, Suppression,
};

pub fn router() -> Router<ApiContext> {
    Router::new()
        .route("/api/v1/posture/scores", get(scores))
        .route("/api/v1/posture/findings", get(list_findings))
        .route("/api/v1/posture/findings/{id}", get(one_finding))
        .route("/api/v1/posture/checks", get(checks))
        .route("/api/v1/posture/suppressions", get(list_suppressions).post(create_suppression))
        .route("/api/v1/posture/suppressions/{id}", delete(delete_suppression))
        .route("/api/v1/posture/run", post(run_now))
}

fn internal(error: impl Into<anyhow::Error>) -> ApiError {
    ApiError::Internal(error.into())
}

/// An id or name from the client: bounded, and without control characters (PostgreSQL cannot
/// even store a NUL).
fn check_text(field: &'static str, value: &str, max: usize) -> Result<(), ApiError> {
    if value.is_empty() || value.len() > max || value.chars().any(char::is_control) {
        return Err(ApiError::bad(field, format!("{field} is 1 to {max} characters, without control characters")));
    }
    Ok(())
}

fn check_optional(field: &'static str, value: Option<&str>, max: usize) -> Result<(), ApiError> {
    value.map_or(Ok(()), |value| check_text(field, value, max))
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
struct ScoreQuery {
    /// Only this account (12 digits).
    account: Option<String>,
    /// Every evaluation instead of the latest.
    #[serde(default)]
    trend: bool,
    /// Scores per page, by account, section and time.
    #[serde(default)]
    #[param(inline)]
    limit: Limit<5000, 1000>,
    /// `next_cursor` of the previous page.
    #[serde(default)]
    #[param(value_type = Option<String>)]
    cursor: Option<Cursor<ScoreKey>>,
}

impl CursorKey for ScoreKey {
    const KIND: &'static str = "scores";
}

impl CursorKey for FindingPageKey {
    const KIND: &'static str = "findings";
}

/// A suppression's position: its id.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct SuppressionKey(i64);

impl CursorKey for SuppressionKey {
    const KIND: &'static str = "suppressions";
}

/// A page of scores, by account, section and evaluation time.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ScorePage {
    pub scores: Vec<ScoreView>,
    /// The next page's `cursor`; absent on the last page.
    pub next_cursor: Option<String>,
}

/// Latest score per account and section; `trend=true` gives every evaluation, oldest first
/// within each account and section. A page at a time.
#[utoipa::path(get, path = "/api/v1/posture/scores", tag = "posture", params(ScoreQuery), responses((status = 200, body = ScorePage), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody)), security(("bearer" = []), ("session" = [])))]
async fn scores(
    _caller: Caller,
    State(context): State<ApiContext>,
    TypedQuery(query): TypedQuery<ScoreQuery>,
) -> Result<Json<ScorePage>, ApiError> {
    check_optional("account", query.account.as_deref(), 64)?;
    let after = query.cursor.map(|c| c.0);
    let limit = query.limit.0;
    let rows = findings::scores_page(&context.db, query.account.as_deref(), !query.trend, after.as_ref(), limit + 1)
        .await
        .map_err(internal)?;
    let (scores, next_cursor) = page(rows, limit, ScoreKey::of);
    Ok(Json(ScorePage { scores, next_cursor }))
}

/// Which findings, by where they stand.
#[derive(Debug, Clone, Copy, Default, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
enum FindingStatus {
    #[default]
    Open,
    Resolved,
    All,
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
struct FindingQuery {
    /// `open` (the default), `resolved` or `all`.
    #[serde(default)]
    #[param(inline)]
    status: FindingStatus,
    /// Only this account (12 digits).
    account: Option<String>,
    /// Only this check (its id).
    check: Option<String>,
    /// Only checks of this section.
    section: Option<String>,
    /// Only this resource (its id).
    resource: Option<String>,
    /// Findings per page, highest severity first.
    #[serde(default)]
    #[param(inline)]
    limit: Limit<1000, 200>,
    /// `next_cursor` of the previous page.
    #[serde(default)]
    #[param(value_type = Option<String>)]
    cursor: Option<Cursor<FindingPageKey>>,
}

/// A page of findings, highest severity first, then by check and resource.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct FindingPage {
    pub findings: Vec<FindingView>,
    /// The next page's `cursor`; absent on the last page.
    pub next_cursor: Option<String>,
}

#[utoipa::path(get, path = "/api/v1/posture/findings", tag = "posture", params(FindingQuery), responses((status = 200, body = FindingPage), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody)), security(("bearer" = []), ("session" = [])))]
async fn list_findings(
    _caller: Caller,
    State(context): State<ApiContext>,
    TypedQuery(query): TypedQuery<FindingQuery>,
) -> Result<Json<FindingPage>, ApiError> {
    check_optional("account", query.account.as_deref(), 64)?;
    check_optional("check", query.check.as_deref(), MAX_CHECK_ID)?;
    check_optional("section", query.section.as_deref(), 256)?;
    check_optional("resource", query.resource.as_deref(), MAX_RESOURCE_ID)?;
    let status = match query.status {
        FindingStatus::Open => Some("open".to_string()),
        FindingStatus::Resolved => Some("resolved".to_string()),
        FindingStatus::All => None,
    };
    let filter = FindingFilter {
        status,
        account_id: query.account,
        check_id: query.check,
        section: query.section,
        resource_id: query.resource,
        id: None,
    };
    let after = query.cursor.map(|c| c.0);
    let limit = query.limit.0;
    let rows = findings::page(&context.db, &filter, after.as_ref(), limit + 1).await.map_err(internal)?;
    let (findings, next_cursor) = page(rows, limit, FindingPageKey::of);
    Ok(Json(FindingPage { findings, next_cursor }))
}

/// One finding with its history (opened, changed, resolved, reopened).
#[utoipa::path(get, path = "/api/v1/posture/findings/{id}", tag = "posture", params(("id" = i64, Path)), responses((status = 200, body = Object), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody)), security(("bearer" = []), ("session" = [])))]
async fn one_finding(
    _caller: Caller,
    State(context): State<ApiContext>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let id: i64 = id.parse().map_err(|_| ApiError::bad("id", "a finding id is an integer"))?;
    let filter = FindingFilter { id: Some(id), ..Default::default() };
    let finding = findings::page(&context.db, &filter, None, 1)
        .await
        .map_err(internal)?
        .into_iter()
        .next()
        .ok_or(ApiError::NotFound)?;
    let history = findings::history_of(&context.db, id).await.map_err(internal)?;
    Ok(Json(json!({"finding": finding, "history": history})))
}

#[utoipa::path(get, path = "/api/v1/posture/checks", tag = "posture", responses((status = 200, description = "Every check with its severity, resource type, remediation and framework controls", body = Vec<Object>), (status = 401, body = ErrorBody)), security(("bearer" = []), ("session" = [])))]
async fn checks(_caller: Caller, State(context): State<ApiContext>) -> Result<Json<Vec<Value>>, ApiError> {
    Ok(Json(findings::stored_checks(&context.db).await.map_err(internal)?))
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
struct SuppressionQuery {
    /// Only suppressions of this check (its id).
    check: Option<String>,
    /// Suppressions per page, oldest first.
    #[serde(default)]
    #[param(inline)]
    limit: Limit<1000, 200>,
    /// `next_cursor` of the previous page.
    #[serde(default)]
    #[param(value_type = Option<String>)]
    cursor: Option<Cursor<SuppressionKey>>,
}

/// A page of suppressions, oldest first.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct SuppressionPage {
    pub suppressions: Vec<Suppression>,
    /// The next page's `cursor`; absent on the last page.
    pub next_cursor: Option<String>,
}

#[utoipa::path(get, path = "/api/v1/posture/suppressions", tag = "posture", params(SuppressionQuery), responses((status = 200, body = SuppressionPage), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody)), security(("bearer" = []), ("session" = [])))]
async fn list_suppressions(
    _caller: Caller,
    State(context): State<ApiContext>,
    TypedQuery(query): TypedQuery<SuppressionQuery>,
) -> Result<Json<SuppressionPage>, ApiError> {
    check_optional("check", query.check.as_deref(), MAX_CHECK_ID)?;
    let after = query.cursor.map(|c| c.0.0);
    let limit = query.limit.0;
    let rows =
        findings::suppressions_page(&context.db, query.check.as_deref(), after, limit + 1).await.map_err(internal)?;
    let (suppressions, next_cursor) = page(rows, limit, |s: &Suppression| SuppressionKey(s.id));
    Ok(Json(SuppressionPage { suppressions, next_cursor }))
}

/// The longest check id and resource id (an ARN) a suppression or a filter takes.
const MAX_CHECK_ID: usize = 200;
const MAX_RESOURCE_ID: usize = 2048;

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct NewSuppression {
    check: String,
    /// One account; every account when absent.
    account: Option<String>,
    /// One resource; every resource when absent.
    resource: Option<String>,
    reason: String,
    /// When it ends; never when absent.
    until: Option<DateTime<Utc>>,
}

#[utoipa::path(post, path = "/api/v1/posture/suppressions", tag = "posture", request_body = NewSuppression, responses((status = 201, body = Suppression), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)), security(("bearer" = []), ("session" = [])))]
async fn create_suppression(
    caller: Caller,
    State(context): State<ApiContext>,
    body: Result<Json<NewSuppression>, JsonRejection>,
) -> Result<(StatusCode, Json<Suppression>), ApiError> {
    caller.require(Role::Analyst)?;
    let Json(request) = body.map_err(|e| ApiError::bad("body", e.body_text()))?;
    check_suppression(&request)?;
    let suppression = findings::suppress(
        &context.db,
        &request.check,
        request.account.as_deref(),
        request.resource.as_deref(),
        &request.reason,
        request.until,
        &caller.actor(),
    )
    .await
    .map_err(|error| match error {
        FindingsError::Invalid(message) => ApiError::bad("body", message),
        FindingsError::NotFound(_) => ApiError::NotFound,
        FindingsError::Db(error) => ApiError::from(error),
        other => internal(other),
    })?;
    audit::record(
        &context.db,
        &caller.actor(),
        "posture.suppress",
        Some(&suppression.id.to_string()),
        None,
        json!(suppression),
    )
    .await;
    Ok((StatusCode::CREATED, Json(suppression)))
}

fn check_suppression(request: &NewSuppression) -> Result<(), ApiError> {
    check_text("check", &request.check, MAX_CHECK_ID)?;
    check_optional("resource", request.resource.as_deref(), MAX_RESOURCE_ID)?;
    if request.reason.len() > 2000 || request.reason.chars().any(|c| c.is_control() && c != '\n') {
        return Err(ApiError::bad("reason", "a reason is up to 2000 characters"));
    }
    if let Some(account) = &request.account
        && (account.len() != 12 || !account.bytes().all(|b| b.is_ascii_digit()))
    {
        return Err(ApiError::bad("account", "an account id is 12 digits"));
    }
    Ok(())
}

#[utoipa::path(delete, path = "/api/v1/posture/suppressions/{id}", tag = "posture", params(("id" = i64, Path)), responses((status = 200, body = Object), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)), security(("bearer" = []), ("session" = [])))]
async fn delete_suppression(
    caller: Caller,
    State(context): State<ApiContext>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    caller.require(Role::Analyst)?;
    let id: i64 = id.parse().map_err(|_| ApiError::bad("id", "a suppression id is an integer"))?;
    if !findings::unsuppress(&context.db, id).await.map_err(internal)? {
        return Err(ApiError::NotFound);
    }
    audit::record(&context.db, &caller.actor(), "posture.unsuppress", Some(&id.to_string()), None, json!({})).await;
    Ok(Json(json!({"deleted": id})))
}

/// Evaluates every check now over the latest snapshots (admins).
#[utoipa::path(post, path = "/api/v1/posture/run", tag = "posture", responses((status = 200, body = Object), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody)), security(("bearer" = []), ("session" = [])))]
async fn run_now(caller: Caller, State(context): State<ApiContext>) -> Result<Json<Value>, ApiError> {
    caller.require(Role::Admin)?;
    let Some(posture) = context.posture.clone() else {
        return Err(ApiError::Conflict("this server has no posture checks loaded".into()));
    };
    let mut checks = posture.checks.lock().await;
    let report = crate::posture::run(&context.db, &mut checks, &[], posture.alert_at).await.map_err(internal)?;
    audit::record(&context.db, &caller.actor(), "posture.run", None, None, json!({"accounts": report.accounts.len()}))
        .await;
    Ok(Json(serde_json::to_value(&report).map_err(internal)?))
}
