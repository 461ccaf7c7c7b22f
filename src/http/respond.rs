//! Response: the actions that fit an alert and those recorded (viewers), their dry run, apply
//! (with a reason and an `Idempotency-Key`) and undo (analysts and admins).

use axum::Json;
use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::routing::{get, post};
use serde::Deserialize;

use super::ApiContext;
use super::error::{ApiError, ErrorBody};
use super::extractor::{Caller, RequireRole};
use super::query::{Limit, TypedQuery};
use crate::auth::Role;
use crate::respond::suggest::Applicable;
use crate::respond::{self, Action, ApplyRequest, Plan, RespondError, ResponseContext, ResponseRecord};

pub fn router() -> Router<ApiContext> {
    Router::new()
        .route("/api/v1/alerts/{id}/responses", get(for_alert))
        .route("/api/v1/responses", get(list).post(apply))
        .route("/api/v1/responses/plan", post(plan))
        .route("/api/v1/responses/{id}", get(one))
        .route("/api/v1/responses/{id}/undo", post(undo))
        .route("/api/v1/responses/{id}/approve", post(approve))
        .route("/api/v1/responses/approval", get(approval_kinds).put(set_approval))
}

fn respond_error(error: RespondError) -> ApiError {
    match error {
        RespondError::Invalid { field, reason } => ApiError::bad(field, reason),
        RespondError::Database(error) => ApiError::from(error),
        RespondError::Account(error) => ApiError::Internal(error.into()),
        // The rest are refusals and AWS answers the analyst must read: none holds a secret.
        other => ApiError::Conflict(other.to_string()),
    }
}

fn context(context: &ApiContext) -> Result<ResponseContext, ApiError> {
    let Some(aws) = context.aws.clone() else {
        return Err(ApiError::Conflict("this server has no AWS configuration; no action can run".into()));
    };
    let (settings, base) = &*aws;
    Ok(ResponseContext {
        pool: context.db.clone(),
        settings: settings.clone(),
        base: base.clone(),
        trusted_cidrs: context.trusted_cidrs.to_vec(),
    })
}

fn json_body<T: serde::de::DeserializeOwned>(body: &Bytes) -> Result<T, ApiError> {
    serde_json::from_slice(body).map_err(|e| ApiError::bad("body", e.to_string()))
}

/// An action: `kind`, `target` as the CLI takes it, and the resource's `region` (EC2, CloudTrail).
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct ActionBody {
    account_id: String,
    /// revoke-ingress-rule, deactivate-access-key, delete-login-profile, quarantine,
    /// detach-role-policy, disassociate-instance-profile, stop-instance, start-logging,
    /// revoke-principal-ingress.
    kind: String,
    /// sgr-… (or sg-…:sgr-…); USER:AKIA…; USER; user/NAME or role/NAME; ROLE:POLICY_ARN; i-…; trail
    /// name or ARN; user/NAME or role/NAME (revoke-principal-ingress).
    target: String,
    region: Option<String>,
}

impl ActionBody {
    fn action(&self) -> Result<Action, ApiError> {
        crate::aws::AccountId::parse(&self.account_id).map_err(|e| ApiError::bad("account_id", e.to_string()))?;
        Action::parse(&self.kind, &self.target, self.region.as_deref()).map_err(respond_error)
    }
}

/// An action to apply, with why.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct ApplyBody {
    account_id: String,
    /// As in the dry run.
    kind: String,
    target: String,
    region: Option<String>,
    /// Required: why, for the record and the audit log.
    reason: Option<String>,
    /// The alert the action contains.
    alert_id: Option<String>,
}

/// What an undo needs.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct UndoBody {
    reason: Option<String>,
}

/// The actions that fit an alert (from its events), whether its account has a responder role
/// (else the command that enables it), and the actions already recorded for it.
#[utoipa::path(get, path = "/api/v1/alerts/{id}/responses", tag = "response", params(("id" = String, Path, description = "Alert id")), responses((status = 200, description = "OK", body = Applicable), (status = 401, description = "No valid token or session", body = ErrorBody), (status = 404, description = "No such alert", body = ErrorBody)), security(("bearer" = []), ("session" = [])))]
async fn for_alert(
    _caller: Caller,
    State(context): State<ApiContext>,
    Path(id): Path<String>,
) -> Result<Json<Applicable>, ApiError> {
    let applicable =
        respond::suggest::for_alert(&context.db, &id, &context.trusted_cidrs).await.map_err(respond_error)?;
    applicable.map(Json).ok_or(ApiError::NotFound)
}

/// The parameters of `GET /api/v1/responses`.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
struct ListQuery {
    /// Only this account's actions.
    account_id: Option<String>,
    #[serde(default)]
    #[param(inline)]
    limit: Limit<1000, 100>,
}

/// Recorded actions, newest first.
#[utoipa::path(get, path = "/api/v1/responses", tag = "response", params(ListQuery), responses((status = 200, description = "OK", body = Vec<ResponseRecord>), (status = 400, description = "A bad parameter; `field` names it", body = ErrorBody), (status = 401, description = "No valid token or session", body = ErrorBody)), security(("bearer" = []), ("session" = [])))]
async fn list(
    _caller: Caller,
    State(context): State<ApiContext>,
    TypedQuery(query): TypedQuery<ListQuery>,
) -> Result<Json<Vec<ResponseRecord>>, ApiError> {
    let records = respond::record::list(&context.db, query.account_id.as_deref(), None, query.limit.0).await?;
    Ok(Json(records))
}

/// One recorded action: state before and after, every call and its answer.
#[utoipa::path(get, path = "/api/v1/responses/{id}", tag = "response", params(("id" = String, Path)), responses((status = 200, description = "OK", body = ResponseRecord), (status = 401, description = "No valid token or session", body = ErrorBody), (status = 404, description = "Not found", body = ErrorBody)), security(("bearer" = []), ("session" = [])))]
async fn one(
    _caller: Caller,
    State(context): State<ApiContext>,
    Path(id): Path<String>,
) -> Result<Json<ResponseRecord>, ApiError> {
    respond::record::get(&context.db, &id).await?.map(Json).ok_or(ApiError::NotFound)
}

/// The dry run: the exact calls and the live state they would change (read with the
/// responder role); changes nothing.
#[utoipa::path(post, path = "/api/v1/responses/plan", tag = "response", request_body = ActionBody, responses((status = 200, description = "The dry run", body = Plan), (status = 400, description = "A bad parameter; `field` names it", body = ErrorBody), (status = 401, description = "No valid token or session", body = ErrorBody), (status = 403, description = "The role is too low, or the CSRF token is missing", body = ErrorBody), (status = 409, description = "Not enabled for the account, or AWS refused", body = ErrorBody)), security(("bearer" = []), ("session" = [])))]
async fn plan(caller: Caller, State(context): State<ApiContext>, body: Bytes) -> Result<Json<Plan>, ApiError> {
    caller.require(Role::Analyst)?;
    let request: ActionBody = json_body(&body)?;
    let action = request.action()?;
    let ctx = self::context(&context)?;
    Ok(Json(respond::run::plan(&ctx, &request.account_id, &action).await.map_err(respond_error)?))
}

/// Applies an action once per `Idempotency-Key` (a replay returns the first answer and does
/// nothing); a reason is required.
#[utoipa::path(post, path = "/api/v1/responses", tag = "response", request_body = ApplyBody, params(("Idempotency-Key" = String, Header, description = "8 to 200 printable characters; a replay with the same key does nothing")), responses((status = 201, description = "Applied (or the earlier outcome of the same key)", body = ResponseRecord), (status = 202, description = "Recorded, awaiting a second person's approval", body = ResponseRecord), (status = 400, description = "A bad parameter; `field` names it", body = ErrorBody), (status = 401, description = "No valid token or session", body = ErrorBody), (status = 403, description = "The role is too low, or the CSRF token is missing", body = ErrorBody), (status = 409, description = "Not enabled, protected, busy, AWS refused (recorded as failed), or a kind needing approval asked for by an API token (no person)", body = ErrorBody)), security(("bearer" = []), ("session" = [])))]
async fn apply(
    caller: Caller,
    State(context): State<ApiContext>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<(StatusCode, Json<ResponseRecord>), ApiError> {
    caller.require(Role::Analyst)?;
    let Some(key) = headers.get("idempotency-key").and_then(|v| v.to_str().ok()) else {
        return Err(ApiError::bad("Idempotency-Key", "the Idempotency-Key header is required"));
    };
    let request: ApplyBody = json_body(&body)?;
    let spec = ActionBody {
        account_id: request.account_id,
        kind: request.kind,
        target: request.target,
        region: request.region,
    };
    let action = spec.action()?;
    let Some(reason) = request.reason else { return Err(ApiError::bad("reason", "a reason is required")) };
    super::alerts::check_reason(&reason)?;
    let apply = ApplyRequest {
        account_id: spec.account_id,
        action,
        actor: caller.actor(),
        reason,
        idempotency_key: key.to_owned(),
        alert_id: request.alert_id,
        automatic_rule: None,
    };
    let ctx = self::context(&context)?;
    let record = respond::run::apply(&ctx, &apply).await.map_err(respond_error)?;
    // A replayed key of an action that failed is that failure again, never a success.
    if record.status == "failed" {
        let error = record.error.as_deref().unwrap_or("it failed");
        return Err(ApiError::Conflict(format!("action {} failed: {error}", record.id)));
    }
    tracing::info!(action_id = %record.id, kind = %record.kind, status = %record.status, by = %caller.name, "response action");
    let status = if record.status == "awaiting_approval" { StatusCode::ACCEPTED } else { StatusCode::CREATED };
    Ok((status, Json(record)))
}

/// What an undo or an approval needs first: an analyst, a reason, an action that exists, AWS.
async fn reasoned_change(
    caller: &Caller,
    context: &ApiContext,
    id: &str,
    body: &Bytes,
) -> Result<(ResponseContext, String), ApiError> {
    caller.require(Role::Analyst)?;
    let request: UndoBody = json_body(body)?;
    let Some(reason) = request.reason else { return Err(ApiError::bad("reason", "a reason is required")) };
    super::alerts::check_reason(&reason)?;
    if respond::record::get(&context.db, id).await?.is_none() {
        return Err(ApiError::NotFound);
    }
    Ok((self::context(context)?, reason))
}

/// Undoes an applied action: restores exactly the state recorded before it.
#[utoipa::path(post, path = "/api/v1/responses/{id}/undo", tag = "response", params(("id" = String, Path)), request_body = UndoBody, responses((status = 200, description = "Undone", body = ResponseRecord), (status = 202, description = "Its kind needs a second person's approval: recorded as `undo_awaiting_approval`, not done yet", body = ResponseRecord), (status = 400, description = "A bad parameter; `field` names it", body = ErrorBody), (status = 401, description = "No valid token or session", body = ErrorBody), (status = 403, description = "The role is too low, or the CSRF token is missing", body = ErrorBody), (status = 404, description = "Not found", body = ErrorBody), (status = 409, description = "Cannot be undone, its undo would grant access and the responder role does not allow it, not asked by a dashboard user where approval is needed, busy, or AWS refused", body = ErrorBody)), security(("bearer" = []), ("session" = [])))]
async fn undo(
    caller: Caller,
    State(context): State<ApiContext>,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<(StatusCode, Json<ResponseRecord>), ApiError> {
    let (ctx, reason) = reasoned_change(&caller, &context, &id, &body).await?;
    let record = respond::run::undo(&ctx, &id, &caller.actor(), &reason).await.map_err(respond_error)?;
    // Its kind needs a second person: asked for, not done yet.
    let status = if record.status == "undo_awaiting_approval" { StatusCode::ACCEPTED } else { StatusCode::OK };
    Ok((status, Json(record)))
}

/// Approves an action awaiting approval (or the undo of one), which then runs; the approver must
/// be a dashboard user (a session, not an API token) other than the one who asked for it.
#[utoipa::path(post, path = "/api/v1/responses/{id}/approve", tag = "response", params(("id" = String, Path)), request_body = UndoBody, responses((status = 200, description = "Approved and run", body = ResponseRecord), (status = 400, description = "A bad parameter; `field` names it", body = ErrorBody), (status = 401, description = "No valid token or session", body = ErrorBody), (status = 403, description = "The role is too low, or the CSRF token is missing", body = ErrorBody), (status = 404, description = "Not found", body = ErrorBody), (status = 409, description = "The same person, not a dashboard user (API tokens name no person), busy, or AWS refused", body = ErrorBody)), security(("bearer" = []), ("session" = [])))]
async fn approve(
    caller: Caller,
    State(context): State<ApiContext>,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<Json<ResponseRecord>, ApiError> {
    let (ctx, reason) = reasoned_change(&caller, &context, &id, &body).await?;
    Ok(Json(respond::run::approve(&ctx, &id, &caller.actor(), &reason).await.map_err(respond_error)?))
}

/// Whether a kind of action needs a second person's approval.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct ApprovalSetting {
    kind: String,
    required: bool,
}

/// The kinds of action that need a second person's approval.
#[utoipa::path(get, path = "/api/v1/responses/approval", tag = "response", responses((status = 200, description = "OK", body = Vec<String>), (status = 401, description = "No valid token or session", body = ErrorBody)), security(("bearer" = []), ("session" = [])))]
async fn approval_kinds(_caller: Caller, State(context): State<ApiContext>) -> Result<Json<Vec<String>>, ApiError> {
    Ok(Json(respond::record::approval_kinds(&context.db).await?))
}

/// Requires (or stops requiring) a second person's approval for a kind of action (admins).
#[utoipa::path(put, path = "/api/v1/responses/approval", tag = "response", request_body = ApprovalSetting, responses((status = 200, description = "The kinds that need approval now", body = Vec<String>), (status = 400, description = "A bad parameter; `field` names it", body = ErrorBody), (status = 401, description = "No valid token or session", body = ErrorBody), (status = 403, description = "The role is too low, or the CSRF token is missing", body = ErrorBody)), security(("bearer" = []), ("session" = [])))]
async fn set_approval(
    caller: Caller,
    State(context): State<ApiContext>,
    body: Bytes,
) -> Result<Json<Vec<String>>, ApiError> {
    caller.require(Role::Admin)?;
    let request: ApprovalSetting = json_body(&body)?;
    respond::record::set_approval(&context.db, &request.kind, request.required, &caller.actor())
        .await
        .map_err(respond_error)?;
    let details = serde_json::json!({"kind": request.kind, "required": request.required});
    crate::auth::audit::record(&context.db, &caller.actor(), "response.approval_setting", None, None, details).await;
    Ok(Json(respond::record::approval_kinds(&context.db).await?))
}
