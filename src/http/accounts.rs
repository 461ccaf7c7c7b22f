//! Accounts: onboarding (admins), the list and each poll job's health (viewers), the role check
//! and removal (admins), and the CloudFormation template of the role.

use axum::Json;
use axum::Router;
use axum::extract::{Path, State};
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::{get, post};
use serde::Deserialize;
use serde_json::{Value, json};

use super::ApiContext;
use super::error::{ApiError, ErrorBody};
use super::extractor::{Caller, RequireRole};
use crate::accounts::{self, Account, AccountError, LogSources, NewAccount, PollIntervals, TestResult};
use crate::auth::Role;
use crate::pollers::jobs::{self, JobStatus};

pub fn router() -> Router<ApiContext> {
    Router::new()
        .route("/api/v1/accounts", get(list).post(onboard))
        .route("/api/v1/accounts/template", get(template))
        .route("/api/v1/accounts/{id}", get(one).delete(remove))
        .route("/api/v1/accounts/{id}/status", get(status))
        .route("/api/v1/accounts/{id}/test", post(test))
}

fn account_error(error: AccountError) -> ApiError {
    match error {
        AccountError::Arn(e) => ApiError::bad("role_arn", e.to_string()),
        AccountError::Region(_) => ApiError::bad("regions", error.to_string()),
        AccountError::Invalid { field, reason } => ApiError::bad(field, reason),
        AccountError::AlreadyOnboarded(..) => ApiError::Conflict(error.to_string()),
        AccountError::NotOnboarded(_) => ApiError::NotFound,
        AccountError::Database(error) => ApiError::from(error),
        other => ApiError::Internal(other.into()),
    }
}

fn valid_account_id(id: &str) -> Result<(), ApiError> {
    crate::aws::AccountId::parse(id).map(|_| ()).map_err(|e| ApiError::bad("id", e.to_string()))
}

#[utoipa::path(get, path = "/api/v1/accounts", tag = "accounts", responses((status = 200, description = "OK", body = Vec<Account>), (status = 400, description = "A bad parameter; `field` names it", body = ErrorBody), (status = 401, description = "No valid token or session", body = ErrorBody)), security(("bearer" = []), ("session" = [])))]
async fn list(_caller: Caller, State(context): State<ApiContext>) -> Result<Json<Vec<accounts::Account>>, ApiError> {
    Ok(Json(accounts::list(&context.db).await.map_err(account_error)?))
}

#[utoipa::path(get, path = "/api/v1/accounts/{id}", tag = "accounts", params(("id" = String, Path, description = "12-digit account id")), responses((status = 200, description = "OK", body = Object), (status = 400, description = "A bad parameter; `field` names it", body = ErrorBody), (status = 401, description = "No valid token or session", body = ErrorBody), (status = 404, description = "Not found", body = ErrorBody)), security(("bearer" = []), ("session" = [])))]
async fn one(
    _caller: Caller,
    State(context): State<ApiContext>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    valid_account_id(&id)?;
    let account = accounts::load(&context.db, &id).await.map_err(account_error)?;
    let jobs = jobs::statuses(&context.db, Some(&id)).await?;
    Ok(Json(json!({"account": account, "jobs": jobs})))
}

#[utoipa::path(get, path = "/api/v1/accounts/{id}/status", tag = "accounts", params(("id" = String, Path)), responses((status = 200, description = "OK", body = Vec<JobStatus>), (status = 400, description = "A bad parameter; `field` names it", body = ErrorBody), (status = 401, description = "No valid token or session", body = ErrorBody), (status = 404, description = "Not found", body = ErrorBody)), security(("bearer" = []), ("session" = [])))]
async fn status(
    _caller: Caller,
    State(context): State<ApiContext>,
    Path(id): Path<String>,
) -> Result<Json<Vec<jobs::JobStatus>>, ApiError> {
    valid_account_id(&id)?;
    accounts::load(&context.db, &id).await.map_err(account_error)?;
    Ok(Json(jobs::statuses(&context.db, Some(&id)).await?))
}

#[utoipa::path(get, path = "/api/v1/accounts/template", tag = "accounts", responses((status = 200, description = "OK", body = String), (status = 400, description = "A bad parameter; `field` names it", body = ErrorBody), (status = 401, description = "No valid token or session", body = ErrorBody)), security(("bearer" = []), ("session" = [])))]
async fn template(_caller: Caller) -> impl IntoResponse {
    // Plain text: CloudFormation tags (!Ref, !Sub) are not generic YAML, so no YAML parser
    // should be invited to read it.
    ([(header::CONTENT_TYPE, "text/plain; charset=utf-8")], accounts::ROLE_TEMPLATE)
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct Onboarding {
    role_arn: String,
    name: Option<String>,
    regions: Vec<String>,
    #[serde(default)]
    sources: LogSources,
}

/// Onboards an account. The answer carries the external ID: the only time the API shows it.
#[utoipa::path(post, path = "/api/v1/accounts", tag = "accounts", request_body = Onboarding, responses((status = 201, description = "Onboarded; the answer carries the external ID, shown only now", body = Object), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 409, description = "Already onboarded", body = ErrorBody)), security(("bearer" = []), ("session" = [])))]
async fn onboard(
    caller: Caller,
    State(context): State<ApiContext>,
    body: Result<Json<Onboarding>, axum::extract::rejection::JsonRejection>,
) -> Result<(axum::http::StatusCode, Json<Value>), ApiError> {
    caller.require(Role::Admin)?;
    let Json(request) = body.map_err(|e| ApiError::bad("body", e.body_text()))?;
    // Endpoint overrides are for operators and tests (CLI), not for API callers: an API-set
    // endpoint would let a token holder point AssumeRole at a server of theirs.
    let new = NewAccount {
        role_arn: request.role_arn,
        name: request.name,
        regions: request.regions,
        endpoint_url: None,
        sources: request.sources,
    };
    let account = accounts::onboard(&context.db, &new, &PollIntervals::default()).await.map_err(account_error)?;
    tracing::info!(account_id = %account.account_id, by = %caller.name, "account onboarded through the API");
    let details = json!({"role_arn": account.role_arn.as_str(), "regions": account.regions});
    crate::auth::audit::record(
        &context.db,
        &caller.actor(),
        "account.onboard",
        Some(&account.account_id),
        None,
        details,
    )
    .await;
    let mut body = serde_json::to_value(&account).map_err(|e| ApiError::Internal(e.into()))?;
    body["external_id"] = json!(account.external_id);
    Ok((axum::http::StatusCode::CREATED, Json(body)))
}

#[utoipa::path(post, path = "/api/v1/accounts/{id}/test", tag = "accounts", params(("id" = String, Path)), responses((status = 200, description = "OK", body = TestResult), (status = 400, description = "A bad parameter; `field` names it", body = ErrorBody), (status = 401, description = "No valid token or session", body = ErrorBody), (status = 403, description = "The role is too low, or the CSRF token is missing", body = ErrorBody), (status = 404, description = "Not found", body = ErrorBody)), security(("bearer" = []), ("session" = [])))]
async fn test(
    caller: Caller,
    State(context): State<ApiContext>,
    Path(id): Path<String>,
) -> Result<Json<accounts::TestResult>, ApiError> {
    caller.require(Role::Admin)?;
    valid_account_id(&id)?;
    let Some(aws) = context.aws.clone() else {
        return Err(ApiError::Internal(anyhow::anyhow!("this server has no AWS configuration")));
    };
    let (settings, base) = &*aws;
    let result = accounts::test(&context.db, base, settings, &id).await.map_err(account_error)?;
    crate::auth::audit::record(&context.db, &caller.actor(), "account.test", Some(&id), None, json!({"ok": result.ok}))
        .await;
    Ok(Json(result))
}

#[utoipa::path(delete, path = "/api/v1/accounts/{id}", tag = "accounts", params(("id" = String, Path)), responses((status = 200, description = "OK", body = Object), (status = 400, description = "A bad parameter; `field` names it", body = ErrorBody), (status = 401, description = "No valid token or session", body = ErrorBody), (status = 403, description = "The role is too low, or the CSRF token is missing", body = ErrorBody), (status = 404, description = "Not found", body = ErrorBody)), security(("bearer" = []), ("session" = [])))]
async fn remove(
    caller: Caller,
    State(context): State<ApiContext>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    caller.require(Role::Admin)?;
    valid_account_id(&id)?;
    accounts::remove(&context.db, &id).await.map_err(account_error)?;
    tracing::info!(account_id = %id, by = %caller.name, "account removed through the API");
    crate::auth::audit::record(&context.db, &caller.actor(), "account.remove", Some(&id), None, json!({})).await;
    Ok(Json(json!({"removed": id})))
}
