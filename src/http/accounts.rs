//! Accounts: onboarding and settings (admins), the list and each poll job's health (viewers),
//! the S3 objects its jobs could not read (viewers) and "retry now" for them (analysts), "poll
//! now" (analysts), the role check and removal (admins), and the CloudFormation template of the
//! role.

use axum::Json;
use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::{get, post};
use serde::Deserialize;
use serde_json::{Value, json};

use super::ApiContext;
use super::error::{ApiError, ErrorBody};
use super::extractor::{Caller, RequireRole};
use super::query::{Limit, TypedQuery};
use crate::accounts::{self, Account, AccountChange, AccountError, LogSources, NewAccount, PollIntervals, TestResult};
use crate::auth::Role;
use crate::pollers::Source;
use crate::pollers::jobs::{self, JobStatus};
use crate::pollers::s3_objects::{self, FailedObject};

pub fn router() -> Router<ApiContext> {
    Router::new()
        .route("/api/v1/accounts", get(list).post(onboard))
        .route("/api/v1/accounts/template", get(template))
        .route("/api/v1/accounts/organizations", post(onboard_organization))
        .route("/api/v1/accounts/log-archives", post(add_log_archive))
        .route("/api/v1/accounts/{id}", get(one).patch(configure).delete(remove))
        .route("/api/v1/accounts/{id}/status", get(status))
        .route("/api/v1/accounts/{id}/test", post(test))
        .route("/api/v1/accounts/{id}/poll-now", post(poll_now))
        .route("/api/v1/accounts/{id}/failed-objects", get(failed_objects))
        .route("/api/v1/accounts/{id}/failed-objects/retry", post(retry_failed_objects))
}

fn account_error(error: AccountError) -> ApiError {
    match error {
        AccountError::Arn(e) => ApiError::bad("role_arn", e.to_string()),
        AccountError::Region(_) => ApiError::bad("regions", error.to_string()),
        AccountError::Invalid { field, reason } => ApiError::bad(field, reason),
        AccountError::NoRegions | AccountError::DescribeRegions(_) => ApiError::Conflict(error.to_string()),
        AccountError::NoMembers | AccountError::Organizations(_) => ApiError::Conflict(error.to_string()),
        AccountError::AlreadyOnboarded(..) => ApiError::Conflict(error.to_string()),
        AccountError::NotOnboarded(_) => ApiError::NotFound,
        AccountError::Database(error) => ApiError::from(error),
        other => ApiError::Internal(other.into()),
    }
}

/// A 12-digit account id, or an organization's or a log archive's entry.
fn valid_account_id(id: &str) -> Result<(), ApiError> {
    if let Some(account) = id.strip_prefix(accounts::organization::ENTRY_PREFIX) {
        return valid_account_id(account);
    }
    if let Some(bucket) = id.strip_prefix(accounts::log_archive::ENTRY_PREFIX) {
        let ok = (3..=63).contains(&bucket.len())
            && bucket.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.');
        return if ok { Ok(()) } else { Err(ApiError::bad("id", format!("`{bucket}` is not an S3 bucket name"))) };
    }
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

/// Each job's health: last success, next run, lag, last error, whether it is parked after
/// panicking, and the S3 objects it could not read (given up, retrying, the newest failure).
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

/// The parameters of `GET /api/v1/accounts/{id}/failed-objects`.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
struct FailedObjectQuery {
    /// How many, given up first.
    #[serde(default)]
    #[param(inline)]
    limit: FailedObjectLimit,
}

type FailedObjectLimit = Limit<1000, 100>;

/// The S3 objects the account's jobs could not read: those given up after their last try (never
/// read until retried) first, then those waiting for their next try.
#[utoipa::path(get, path = "/api/v1/accounts/{id}/failed-objects", tag = "accounts", params(("id" = String, Path, description = "12-digit account id, or a log archive's entry"), FailedObjectQuery), responses((status = 200, description = "OK", body = Vec<FailedObject>), (status = 400, description = "A bad parameter; `field` names it", body = ErrorBody), (status = 401, description = "No valid token or session", body = ErrorBody), (status = 404, description = "Not found", body = ErrorBody)), security(("bearer" = []), ("session" = [])))]
async fn failed_objects(
    _caller: Caller,
    State(context): State<ApiContext>,
    Path(id): Path<String>,
    TypedQuery(query): TypedQuery<FailedObjectQuery>,
) -> Result<Json<Vec<FailedObject>>, ApiError> {
    valid_account_id(&id)?;
    accounts::load(&context.db, &id).await.map_err(account_error)?;
    Ok(Json(s3_objects::failed_objects(&context.db, Some(&id), query.limit.0).await?))
}

/// Which given-up objects to try again; without members, all of the account's.
#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct RetryRequest {
    /// Only the objects in this bucket.
    bucket: Option<String>,
    /// Only this object (with `bucket`).
    key: Option<String>,
}

/// How many given-up objects will be tried again.
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
struct RetryAnswer {
    account_id: String,
    bucket: Option<String>,
    key: Option<String>,
    /// Objects due for one more try; their jobs run next.
    objects: u64,
}

impl RetryRequest {
    /// Bucket names and keys as S3 allows them (PostgreSQL text holds no NUL).
    fn check(&self) -> Result<(), ApiError> {
        if let Some(bucket) = &self.bucket
            && !((3..=63).contains(&bucket.len())
                && bucket.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.'))
        {
            return Err(ApiError::bad("bucket", format!("`{bucket}` is not an S3 bucket name")));
        }
        match &self.key {
            Some(_) if self.bucket.is_none() => Err(ApiError::bad("bucket", "a key needs its bucket")),
            Some(key) if key.is_empty() || key.len() > 1024 || key.contains('\0') => {
                Err(ApiError::bad("key", "an S3 key is 1 to 1024 bytes, without NUL"))
            }
            _ => Ok(()),
        }
    }
}

/// "Retry now" for analysts and admins: the account's given-up objects (all, one bucket's, or
/// one) get one more try at their job's next run, which is made due now. The body is optional.
#[utoipa::path(post, path = "/api/v1/accounts/{id}/failed-objects/retry", tag = "accounts", params(("id" = String, Path, description = "12-digit account id, or a log archive's entry")), request_body(content = RetryRequest, description = "Optional: which objects"), responses((status = 200, description = "The objects made due", body = RetryAnswer), (status = 400, description = "A bad parameter; `field` names it", body = ErrorBody), (status = 401, description = "No valid token or session", body = ErrorBody), (status = 403, description = "The role is too low, or the CSRF token is missing", body = ErrorBody), (status = 404, description = "No such account, or no such given-up object", body = ErrorBody)), security(("bearer" = []), ("session" = [])))]
async fn retry_failed_objects(
    caller: Caller,
    State(context): State<ApiContext>,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<Json<RetryAnswer>, ApiError> {
    caller.require(Role::Analyst)?;
    valid_account_id(&id)?;
    let request: RetryRequest = json_body(&body)?;
    request.check()?;
    accounts::load(&context.db, &id).await.map_err(account_error)?;
    let (bucket, key) = (request.bucket.as_deref(), request.key.as_deref());
    let objects = s3_objects::retry_now(&context.db, &id, bucket, key).await?;
    if objects == 0 && key.is_some() {
        return Err(ApiError::NotFound);
    }
    tracing::info!(account_id = %id, bucket, key, objects, by = %caller.name, "failed S3 objects retried");
    let details = json!({"bucket": bucket, "key": key, "objects": objects});
    crate::auth::audit::record(&context.db, &caller.actor(), "account.retry_failed_objects", Some(&id), None, details)
        .await;
    Ok(Json(RetryAnswer { account_id: id, bucket: request.bucket, key: request.key, objects }))
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
    /// Poll only these regions; absent or empty: every region the account has enabled.
    #[serde(default)]
    regions: Vec<String>,
    #[serde(default)]
    sources: LogSources,
    /// Poll intervals in seconds by source (`{"cloudtrail-lookup": 60}`); other sources keep
    /// their defaults.
    #[serde(default)]
    #[schema(value_type = Option<std::collections::BTreeMap<String, u64>>)]
    intervals: PollIntervals,
}

/// Reads a JSON body, naming `body` in the 400 when it is not one.
fn json_body<T: serde::de::DeserializeOwned + Default>(body: &Bytes) -> Result<T, ApiError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(T::default());
    }
    serde_json::from_slice(body).map_err(|e| {
        let message = e.to_string();
        // Serde names the member in its message ("intervals: …" from our own checks).
        let field = if message.starts_with("intervals") { "intervals" } else { "body" };
        ApiError::bad(field, message)
    })
}

/// Onboards an account. The answer carries the external ID: the only time the API shows it.
#[utoipa::path(post, path = "/api/v1/accounts", tag = "accounts", request_body = Onboarding, responses((status = 201, description = "Onboarded; the answer carries the external ID, shown only now", body = Object), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 409, description = "Already onboarded", body = ErrorBody)), security(("bearer" = []), ("session" = [])))]
async fn onboard(
    caller: Caller,
    State(context): State<ApiContext>,
    body: Result<Json<Onboarding>, axum::extract::rejection::JsonRejection>,
) -> Result<(axum::http::StatusCode, Json<Value>), ApiError> {
    caller.require(Role::Admin)?;
    let Json(request) = body.map_err(|e| {
        let text = e.body_text();
        // The intervals' own check (a source name, a range) names its member.
        if text.contains("intervals: ") { ApiError::bad("intervals", text) } else { ApiError::bad("body", text) }
    })?;
    // Endpoint overrides are for operators and tests (CLI), not for API callers: an API-set
    // endpoint would let a token holder point AssumeRole at a server of theirs.
    let new = NewAccount {
        role_arn: request.role_arn,
        name: request.name,
        regions: request.regions,
        endpoint_url: None,
        sources: request.sources,
    };
    let account = accounts::onboard(&context.db, &new, &request.intervals).await.map_err(account_error)?;
    tracing::info!(account_id = %account.account_id, by = %caller.name, "account onboarded through the API");
    let details =
        json!({"role_arn": account.role_arn.as_str(), "regions": account.regions, "intervals": account.intervals});
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

/// A change of an account's settings; members left out stay as they are.
#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct Configuration {
    /// Poll only these regions; `[]`: every region the account has enabled.
    regions: Option<Vec<String>>,
    /// Poll intervals in seconds by source, replacing the account's earlier choices (`{}`: the
    /// defaults for every source).
    #[schema(value_type = Option<std::collections::BTreeMap<String, u64>>)]
    intervals: Option<PollIntervals>,
    /// SQS queue announcing new trail files (near-real-time); `""` removes it.
    trail_queue_url: Option<String>,
    /// SQS queue announcing new flow log files; `""` removes it.
    flow_queue_url: Option<String>,
    /// Import GuardDuty findings as alerts (true) or stop (false).
    guardduty_findings: Option<bool>,
    /// Import Security Hub findings as alerts (true) or stop (false).
    security_hub_findings: Option<bool>,
}

/// Changes an account's region restriction or poll intervals; its jobs follow (jobs no longer
/// wanted are disabled, their checkpoints kept).
#[utoipa::path(patch, path = "/api/v1/accounts/{id}", tag = "accounts", params(("id" = String, Path, description = "12-digit account id")), request_body = Configuration, responses((status = 200, description = "The account as it is now", body = Account), (status = 400, description = "A bad parameter; `field` names it", body = ErrorBody), (status = 401, description = "No valid token or session", body = ErrorBody), (status = 403, description = "The role is too low, or the CSRF token is missing", body = ErrorBody), (status = 404, description = "Not found", body = ErrorBody)), security(("bearer" = []), ("session" = [])))]
async fn configure(
    caller: Caller,
    State(context): State<ApiContext>,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<Json<Account>, ApiError> {
    caller.require(Role::Admin)?;
    valid_account_id(&id)?;
    let request: Configuration = json_body(&body)?;
    let change = AccountChange {
        regions: request.regions,
        intervals: request.intervals,
        trail_queue_url: request.trail_queue_url,
        flow_queue_url: request.flow_queue_url,
        guardduty_findings: request.guardduty_findings,
        security_hub_findings: request.security_hub_findings,
    };
    let account = accounts::configure(&context.db, &id, &change).await.map_err(account_error)?;
    let details = json!({"regions": change.regions, "intervals": change.intervals,
                         "trail_queue_url": change.trail_queue_url, "flow_queue_url": change.flow_queue_url,
                         "guardduty_findings": change.guardduty_findings,
                         "security_hub_findings": change.security_hub_findings});
    crate::auth::audit::record(&context.db, &caller.actor(), "account.configure", Some(&id), None, details).await;
    Ok(Json(account))
}

/// Which jobs to run now.
#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct PollNowRequest {
    /// Only the jobs of this source (`cloudtrail-lookup`, `cloudtrail-s3`, `flowlogs-s3`,
    /// `flowlogs-cloudwatch`, `config-snapshot`, `regions`, `organization`,
    /// `cloudtrail-archive`, ...); absent: every job.
    source: Option<String>,
}

/// How many jobs were made due.
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
struct PollNowAnswer {
    account_id: String,
    source: Option<String>,
    /// Enabled jobs made due now; the next free worker runs them (a running one runs again
    /// when it ends, a parked one is un-parked for one more try).
    jobs: u64,
}

/// Makes the account's jobs (all, or one source's) due now, for analysts and admins; a job
/// parked after panicking gets one more try. The body is optional.
#[utoipa::path(post, path = "/api/v1/accounts/{id}/poll-now", tag = "accounts", params(("id" = String, Path, description = "12-digit account id")), request_body(content = PollNowRequest, description = "Optional: which source to poll"), responses((status = 200, description = "The jobs made due", body = PollNowAnswer), (status = 400, description = "A bad parameter; `field` names it", body = ErrorBody), (status = 401, description = "No valid token or session", body = ErrorBody), (status = 403, description = "The role is too low, or the CSRF token is missing", body = ErrorBody), (status = 404, description = "Not found", body = ErrorBody)), security(("bearer" = []), ("session" = [])))]
async fn poll_now(
    caller: Caller,
    State(context): State<ApiContext>,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<Json<PollNowAnswer>, ApiError> {
    caller.require(Role::Analyst)?;
    valid_account_id(&id)?;
    let request: PollNowRequest = json_body(&body)?;
    let source = match request.source.as_deref() {
        Some(name) => Some(Source::parse(name).ok_or_else(|| {
            let known: Vec<&str> = Source::ALL.iter().map(|s| s.as_str()).collect();
            ApiError::bad("source", format!("`{name}` is not a poll source (one of {})", known.join(", ")))
        })?),
        None => None,
    };
    accounts::load(&context.db, &id).await.map_err(account_error)?;
    let count = jobs::poll_now(&context.db, Some(&id), source).await?;
    tracing::info!(account_id = %id, source = ?request.source, jobs = count, by = %caller.name, "poll now");
    let details = json!({"source": request.source, "jobs": count});
    crate::auth::audit::record(&context.db, &caller.actor(), "account.poll_now", Some(&id), None, details).await;
    Ok(Json(PollNowAnswer { account_id: id, source: request.source, jobs: count }))
}

/// An organization to onboard through a role in its management or delegated-admin account.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct OrganizationOnboarding {
    /// The role that may call organizations:ListAccounts and DescribeOrganization.
    role_arn: String,
    /// The role every member has (deployed by the StackSet); default `SkywardenReadOnly`.
    member_role_name: Option<String>,
    name: Option<String>,
    /// Poll intervals in seconds by source, given to every member too.
    #[serde(default)]
    #[schema(value_type = Option<std::collections::BTreeMap<String, u64>>)]
    intervals: PollIntervals,
}

fn json_request<T>(body: Result<Json<T>, axum::extract::rejection::JsonRejection>) -> Result<T, ApiError> {
    body.map(|Json(request)| request).map_err(|e| {
        let text = e.body_text();
        if text.contains("intervals: ") { ApiError::bad("intervals", text) } else { ApiError::bad("body", text) }
    })
}

/// Onboards an organization, then lists and onboards its active members when the server has an
/// AWS configuration (else, or when the roles do not exist yet, its daily job does). The answer
/// carries the external ID of the management role and every member role: the only time the API
/// shows it.
#[utoipa::path(post, path = "/api/v1/accounts/organizations", tag = "accounts", request_body = OrganizationOnboarding, responses((status = 201, description = "Onboarded; the answer carries the external ID, shown only now, and the members found", body = Object), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 409, description = "Already onboarded", body = ErrorBody)), security(("bearer" = []), ("session" = [])))]
async fn onboard_organization(
    caller: Caller,
    State(context): State<ApiContext>,
    body: Result<Json<OrganizationOnboarding>, axum::extract::rejection::JsonRejection>,
) -> Result<(axum::http::StatusCode, Json<Value>), ApiError> {
    caller.require(Role::Admin)?;
    let request = json_request(body)?;
    let new = accounts::organization::NewOrganization {
        role_arn: request.role_arn,
        member_role_name: request.member_role_name.unwrap_or_else(|| "SkywardenReadOnly".into()),
        name: request.name,
        endpoint_url: None,
    };
    let entry = accounts::organization::onboard(&context.db, &new, &request.intervals).await.map_err(account_error)?;
    let members = match context.aws.clone() {
        Some(aws) => {
            let (settings, base) = &*aws;
            match accounts::organization::sync(&context.db, base, settings, &entry.account_id).await {
                Ok(change) => json!(change),
                Err(error) => json!({"error": error.to_string()}),
            }
        }
        None => Value::Null,
    };
    let details = json!({"role_arn": entry.role_arn.as_str(), "member_role_name": new.member_role_name});
    crate::auth::audit::record(
        &context.db,
        &caller.actor(),
        "organization.onboard",
        Some(&entry.account_id),
        None,
        details,
    )
    .await;
    let mut body = serde_json::to_value(&entry).map_err(|e| ApiError::Internal(e.into()))?;
    body["external_id"] = json!(entry.external_id);
    body["members"] = members;
    Ok((axum::http::StatusCode::CREATED, Json(body)))
}

/// A central log archive to add.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct LogArchiveRequest {
    /// The role in the account holding the bucket.
    role_arn: String,
    bucket: String,
    /// The key prefix before `AWSLogs/`.
    prefix: Option<String>,
    /// An organization trail's organization id (`o-…`).
    organization_id: Option<String>,
    /// The bucket's region, if known.
    bucket_region: Option<String>,
    name: Option<String>,
    #[serde(default)]
    #[schema(value_type = Option<std::collections::BTreeMap<String, u64>>)]
    intervals: PollIntervals,
}

/// Adds a log archive: one trail bucket read once for every account under it, each event stored
/// under its own account. Accounts whose own jobs read the same files stop (`replaced`). The
/// answer carries the external ID, shown only now.
#[utoipa::path(post, path = "/api/v1/accounts/log-archives", tag = "accounts", request_body = LogArchiveRequest, responses((status = 201, description = "Added; the answer carries the external ID, shown only now", body = Object), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 409, description = "Already added", body = ErrorBody)), security(("bearer" = []), ("session" = [])))]
async fn add_log_archive(
    caller: Caller,
    State(context): State<ApiContext>,
    body: Result<Json<LogArchiveRequest>, axum::extract::rejection::JsonRejection>,
) -> Result<(axum::http::StatusCode, Json<Value>), ApiError> {
    caller.require(Role::Admin)?;
    let request = json_request(body)?;
    let new = accounts::log_archive::NewLogArchive {
        role_arn: request.role_arn,
        bucket: request.bucket,
        prefix: request.prefix,
        organization_id: request.organization_id,
        bucket_region: request.bucket_region,
        name: request.name,
        endpoint_url: None,
    };
    let added = accounts::log_archive::add(&context.db, &new, &request.intervals).await.map_err(account_error)?;
    let archive = &added.archive;
    let details = json!({"role_arn": archive.role_arn.as_str(), "bucket": new.bucket, "replaced": added.replaced});
    crate::auth::audit::record(
        &context.db,
        &caller.actor(),
        "log_archive.add",
        Some(&archive.account_id),
        None,
        details,
    )
    .await;
    let mut body = serde_json::to_value(archive).map_err(|e| ApiError::Internal(e.into()))?;
    body["external_id"] = json!(archive.external_id);
    body["replaced"] = json!(added.replaced);
    Ok((axum::http::StatusCode::CREATED, Json(body)))
}
