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
use super::error::ApiError;
use super::extractor::{Caller, RequireRole};
use crate::accounts::{self, AccountError, LogSources, NewAccount, PollIntervals};
use crate::auth::Role;
use crate::pollers::jobs;

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
        other => ApiError::Internal(other.into()),
    }
}

fn valid_account_id(id: &str) -> Result<(), ApiError> {
    crate::aws::AccountId::parse(id).map(|_| ()).map_err(|e| ApiError::bad("id", e.to_string()))
}

async fn list(_caller: Caller, State(context): State<ApiContext>) -> Result<Json<Vec<accounts::Account>>, ApiError> {
    Ok(Json(accounts::list(&context.db).await.map_err(account_error)?))
}

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

async fn status(
    _caller: Caller,
    State(context): State<ApiContext>,
    Path(id): Path<String>,
) -> Result<Json<Vec<jobs::JobStatus>>, ApiError> {
    valid_account_id(&id)?;
    accounts::load(&context.db, &id).await.map_err(account_error)?;
    Ok(Json(jobs::statuses(&context.db, Some(&id)).await?))
}

async fn template(_caller: Caller) -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "application/yaml")], accounts::ROLE_TEMPLATE)
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Onboarding {
    role_arn: String,
    name: Option<String>,
    regions: Vec<String>,
    #[serde(default)]
    sources: LogSources,
}

/// Onboards an account. The answer carries the external ID: the only time the API shows it.
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
