//! Plan, apply and undo: the safety checks around every action (responder role, protected
//! tag, lease, idempotency key), its record before and after, and the audit log.

use serde::Serialize;
use serde_json::{Value, json};
use sqlx::PgPool;

use super::action::deny_all_arn;
use super::record::{self, Claim, NewAction, ResponseRecord, UndoOutcome};
use super::{Action, ApiCall, CallLog, Observed, RespondError, Undo, ec2, iam, trail};
use crate::accounts::responder;
use crate::aws::{AccountSession, AwsSettings};

/// What the actions need besides the action itself.
#[derive(Clone)]
pub struct ResponseContext {
    pub pool: PgPool,
    pub settings: AwsSettings,
    pub base: aws_types::SdkConfig,
}

/// A dry run: the calls apply would make and the live state they would change.
#[derive(Clone, Debug, Serialize, utoipa::ToSchema)]
pub struct Plan {
    pub account_id: String,
    pub kind: &'static str,
    pub target: String,
    pub region: String,
    /// The state read now, with the responder role.
    #[schema(value_type = Object)]
    pub current: Value,
    /// The write calls apply would make, in order (none when nothing would change).
    pub calls: Vec<ApiCall>,
    /// Whether apply would change anything (false: already contained).
    pub changes: bool,
    /// Tagged skywarden:protected: apply refuses.
    pub protected: bool,
    pub undo: Undo,
}

/// An action to apply: who, why, and the key that makes a replay do nothing.
#[derive(Clone, Debug)]
pub struct ApplyRequest {
    pub account_id: String,
    pub action: Action,
    pub actor: String,
    pub reason: String,
    pub idempotency_key: String,
    pub alert_id: Option<String>,
    /// The rule of policies/response.yaml when automatic containment asks.
    pub automatic_rule: Option<String>,
}

/// A reason a person can read later: 1 to 2000 bytes (as the alerts' reasons), no control
/// characters.
pub fn check_reason(reason: &str) -> Result<(), RespondError> {
    let reason = reason.trim();
    if reason.is_empty() || reason.len() > 2000 || reason.chars().any(char::is_control) {
        return Err(RespondError::Invalid {
            field: "reason",
            reason: "a reason is required: 1 to 2000 bytes, without control characters".into(),
        });
    }
    Ok(())
}

/// An idempotency key: 8 to 200 printable ASCII characters.
pub fn check_key(key: &str) -> Result<(), RespondError> {
    if (8..=200).contains(&key.len()) && key.bytes().all(|b| b.is_ascii_graphic()) {
        Ok(())
    } else {
        Err(RespondError::Invalid {
            field: "idempotency_key",
            reason: "an idempotency key is 8 to 200 printable ASCII characters".into(),
        })
    }
}

/// The responder session of an account, with what its role was deployed to allow.
struct Responding {
    session: AccountSession,
    /// AWSDenyAll's ARN in the account's partition.
    deny_all: String,
}

fn not_enabled(account_id: &str) -> RespondError {
    RespondError::NotEnabled { account_id: account_id.to_owned(), command: responder::enable_command(account_id) }
}

/// The responder session of the account, or "not enabled" with the command that enables it.
async fn session(ctx: &ResponseContext, account_id: &str) -> Result<Responding, RespondError> {
    let Some(responder) = responder::load(&ctx.pool, account_id).await? else {
        return Err(not_enabled(account_id));
    };
    let session = AccountSession::assume(&ctx.base, &ctx.settings, &responder.assume_target())
        .await
        .map_err(RespondError::AssumeRole)?;
    Ok(Responding { session, deny_all: deny_all_arn(responder.role_arn.partition()) })
}

async fn observe(r: &Responding, action: &Action) -> Result<Observed, RespondError> {
    let session = &r.session;
    match action {
        Action::RevokeIngressRule { region, rule_id } => ec2::observe_rule(&session.ec2(region), region, rule_id).await,
        Action::DeactivateAccessKey { user_name, access_key_id } => {
            iam::observe_key(&session.iam(), user_name, access_key_id).await
        }
        Action::DeleteLoginProfile { user_name } => iam::observe_login_profile(&session.iam(), user_name).await,
        Action::Quarantine { principal } => iam::observe_quarantine(&session.iam(), principal, &r.deny_all).await,
        Action::DetachRolePolicy { role_name, policy_arn } => {
            iam::observe_role_policy(&session.iam(), role_name, policy_arn).await
        }
        Action::DisassociateInstanceProfile { region, instance_id } => {
            ec2::observe_profile(&session.ec2(region), region, instance_id).await
        }
        Action::StopInstance { region, instance_id } => {
            ec2::observe_stop(&session.ec2(region), region, instance_id).await
        }
        Action::StartLogging { region, trail } => trail::observe(&session.cloudtrail(region), region, trail).await,
    }
}

fn write_calls(action: &Action, state: &Value, deny_all: &str) -> Vec<ApiCall> {
    match action {
        Action::RevokeIngressRule { .. } => vec![ec2::revoke_call(state)],
        Action::DeactivateAccessKey { .. } => vec![iam::key_call(state, "Inactive")],
        Action::DeleteLoginProfile { user_name } => vec![iam::delete_login_call(user_name)],
        Action::Quarantine { principal } => vec![iam::quarantine_call(principal, deny_all)],
        Action::DetachRolePolicy { role_name, policy_arn } => {
            vec![iam::role_policy_call("iam:DetachRolePolicy", role_name, policy_arn)]
        }
        Action::DisassociateInstanceProfile { .. } => vec![ec2::disassociate_call(state)],
        Action::StopInstance { .. } => ec2::stop_calls(state),
        Action::StartLogging { .. } => vec![trail::start_call(state)],
    }
}

/// The dry run: reads the live state with the responder role and changes nothing.
pub async fn plan(ctx: &ResponseContext, account_id: &str, action: &Action) -> Result<Plan, RespondError> {
    let responding = session(ctx, account_id).await?;
    let observed = observe(&responding, action).await?;
    let calls = if observed.changes { write_calls(action, &observed.state, &responding.deny_all) } else { Vec::new() };
    Ok(Plan {
        account_id: account_id.to_owned(),
        kind: action.kind(),
        target: action.target(),
        region: action.region().to_owned(),
        current: observed.state,
        calls,
        changes: observed.changes,
        protected: observed.protected,
        undo: action.undo(),
    })
}

/// The write calls, each logged with its answer; `after` holds what changed so far.
async fn execute(
    r: &Responding,
    action: &Action,
    action_id: &str,
    before: &Value,
    log: &mut CallLog,
    after: &mut Value,
) -> Result<(), RespondError> {
    let session = &r.session;
    *after = match action {
        Action::RevokeIngressRule { region, .. } => ec2::revoke_rule(&session.ec2(region), region, before, log).await?,
        Action::DeactivateAccessKey { .. } => iam::set_key_status(&session.iam(), before, "Inactive", log).await?,
        Action::DeleteLoginProfile { user_name } => iam::delete_login_profile(&session.iam(), user_name, log).await?,
        Action::Quarantine { principal } => iam::quarantine(&session.iam(), principal, &r.deny_all, log).await?,
        Action::DetachRolePolicy { role_name, policy_arn } => {
            iam::detach(&session.iam(), role_name, policy_arn, log).await?
        }
        Action::DisassociateInstanceProfile { region, .. } => {
            ec2::disassociate_profile(&session.ec2(region), region, before, log).await?
        }
        Action::StopInstance { region, .. } => {
            return ec2::stop_instance(&session.ec2(region), region, action_id, before, log, after).await;
        }
        Action::StartLogging { region, .. } => {
            trail::start_logging(&session.cloudtrail(region), region, before, log).await?
        }
    };
    Ok(())
}

/// The actor of automatic containment (policies/response.yaml) in records and the audit log.
pub const AUTOMATIC_ACTOR: &str = "automatic";

/// Applies an action once per idempotency key: records it planned (leasing its resource), reads
/// and records the state before, makes the calls, records what it left; a failure half-way is
/// recorded with what it changed. A replayed key returns the earlier record and calls nothing.
pub async fn apply(ctx: &ResponseContext, request: &ApplyRequest) -> Result<ResponseRecord, RespondError> {
    check_reason(&request.reason)?;
    check_key(&request.idempotency_key)?;
    if let Some(alert_id) = request.alert_id.as_deref() {
        record::check_alert(&ctx.pool, alert_id, &request.account_id).await?;
    }
    // Refused before anything is recorded: no responder role, no action.
    if responder::load(&ctx.pool, &request.account_id).await?.is_none() {
        return Err(not_enabled(&request.account_id));
    }
    let awaiting_approval = record::approval_required(&ctx.pool, request.action.kind()).await?;
    // A second person is only a second person if the first one is a person too.
    if awaiting_approval && request.actor != AUTOMATIC_ACTOR {
        record::check_person(&ctx.pool, &request.actor, "asking for an action that needs approval").await?;
    }
    let lease_owner = new_lease_owner()?;
    let new = NewAction {
        account_id: &request.account_id,
        action: &request.action,
        alert_id: request.alert_id.as_deref(),
        actor: &request.actor,
        reason: request.reason.trim(),
        idempotency_key: &request.idempotency_key,
        lease_owner: &lease_owner,
        awaiting_approval,
        automatic_rule: request.automatic_rule.as_deref(),
    };
    let id = match record::claim(&ctx.pool, &new).await? {
        Claim::Replayed(earlier) => return Ok(*earlier),
        Claim::New(id) => id,
    };
    if awaiting_approval {
        let record = fetch(&ctx.pool, &id).await?;
        audit(&ctx.pool, &request.actor, "response.request", &record, &Value::Array(Vec::new())).await;
        return Ok(record);
    }
    let outcome = run_claimed(ctx, &request.account_id, &request.action, &id).await;
    let record = fetch(&ctx.pool, &id).await?;
    audit(&ctx.pool, &request.actor, "response.apply", &record, &record.calls).await;
    outcome.map(|()| record)
}

fn new_lease_owner() -> Result<String, RespondError> {
    crate::auth::random_secret(12).map_err(|e| RespondError::Conflict(e.to_string()))
}

async fn fetch(pool: &PgPool, id: &str) -> Result<ResponseRecord, RespondError> {
    record::get(pool, id).await?.ok_or_else(|| RespondError::NotFound(format!("no response action {id}")))
}

/// Runs what waits for a second person: an action awaiting approval, or the undo of one whose
/// kind needs approval. The approver must be an enabled dashboard user (`user:NAME`) other than
/// the one who asked. Anything no longer waiting is returned as it is.
pub async fn approve(
    ctx: &ResponseContext,
    id: &str,
    approver: &str,
    reason: &str,
) -> Result<ResponseRecord, RespondError> {
    check_reason(reason)?;
    // A dashboard session's user only: the CLI's `--as` names a user it cannot prove it is.
    if !approver.starts_with("user:") || approver.contains(' ') {
        return Err(RespondError::ApproveInDashboard { id: id.to_owned(), actor: approver.to_owned() });
    }
    record::check_person(&ctx.pool, approver, "approving an action").await?;
    let record = fetch(&ctx.pool, id).await?;
    if record.status == "undo_awaiting_approval" {
        return approve_undo(ctx, &record, approver, reason).await;
    }
    let lease_owner = new_lease_owner()?;
    if let Claim::Replayed(record) =
        record::claim_approval(&ctx.pool, id, approver, reason.trim(), &lease_owner).await?
    {
        return Ok(*record);
    }
    let outcome = run_claimed(ctx, &record.account_id, &record.action()?, id).await;
    let record = fetch(&ctx.pool, id).await?;
    audit(&ctx.pool, approver, "response.approve", &record, &record.calls).await;
    outcome.map(|()| record)
}

async fn approve_undo(
    ctx: &ResponseContext,
    record: &ResponseRecord,
    approver: &str,
    reason: &str,
) -> Result<ResponseRecord, RespondError> {
    let action = record.action()?;
    check_undo_allowed(ctx, record, &action).await?;
    let lease_owner = new_lease_owner()?;
    if let Claim::Replayed(done) =
        record::claim_undo_approval(&ctx.pool, &record.id, approver, reason.trim(), &lease_owner).await?
    {
        return Ok(*done);
    }
    let requester = record.undo_requested_by.clone().unwrap_or_else(|| approver.to_owned());
    let request_reason = record.undo_request_reason.clone().unwrap_or_else(|| reason.to_owned());
    let (outcome, calls) = run_undo(ctx, record, &action, &requester, &request_reason).await?;
    let record = fetch(&ctx.pool, &record.id).await?;
    audit(&ctx.pool, approver, "response.approve_undo", &record, &calls).await;
    outcome.map(|()| record)
}

/// Everything after the claim; every way out records the outcome and releases the lease.
async fn run_claimed(ctx: &ResponseContext, account_id: &str, action: &Action, id: &str) -> Result<(), RespondError> {
    let fail = |error, after, log| failed(&ctx.pool, id, error, after, log);
    let responding = match session(ctx, account_id).await {
        Ok(responding) => responding,
        Err(error) => return fail(error, None, CallLog::default()).await,
    };
    let observed = match observe(&responding, action).await {
        Ok(observed) => observed,
        Err(error) => return fail(error, None, CallLog::default()).await,
    };
    record::record_before(&ctx.pool, id, &observed.state).await?;
    if observed.protected {
        let error = RespondError::Protected { resource: format!("{} {}", action.kind(), action.target()) };
        return fail(error, None, CallLog::default()).await;
    }
    let mut log = CallLog::default();
    if !observed.changes {
        // Already contained: applied, with nothing called and nothing for undo to restore.
        return Ok(record::finish(&ctx.pool, id, "applied", Some(&observed.state), &log.into_value(), None).await?);
    }
    let mut after = Value::Null;
    match execute(&responding, action, id, &observed.state, &mut log, &mut after).await {
        Ok(()) => Ok(record::finish(&ctx.pool, id, "applied", Some(&after), &log.into_value(), None).await?),
        Err(error) => {
            let partial = (!after.is_null()).then_some(&after);
            fail(error, partial, log).await
        }
    }
}

/// Records a failure with what it changed (`after`) and its calls; the lease is released.
async fn failed(
    pool: &PgPool,
    id: &str,
    error: RespondError,
    after: Option<&Value>,
    log: CallLog,
) -> Result<(), RespondError> {
    record::finish(pool, id, "failed", after, &log.into_value(), Some(&error.to_string())).await?;
    Err(error)
}

async fn restore(r: &Responding, action: &Action, before: &Value, log: &mut CallLog) -> Result<Value, RespondError> {
    let session = &r.session;
    match action {
        Action::RevokeIngressRule { region, .. } => ec2::restore_rule(&session.ec2(region), region, before, log).await,
        Action::DeactivateAccessKey { .. } => {
            let status = before["status"].as_str().unwrap_or("Inactive");
            if status == "Inactive" {
                return Ok(json!({"unchanged": true}));
            }
            iam::set_key_status(&session.iam(), before, status, log).await
        }
        Action::Quarantine { principal } => {
            if before["attached"] != json!(false) {
                // AWSDenyAll was there before Skywarden's action (or nothing was recorded): it stays.
                return Ok(json!({"unchanged": true}));
            }
            iam::release(&session.iam(), principal, &r.deny_all, log).await
        }
        Action::DetachRolePolicy { .. } => iam::reattach(&session.iam(), before, log).await,
        Action::DisassociateInstanceProfile { region, .. } => {
            ec2::restore_profile(&session.ec2(region), region, before, log).await
        }
        Action::StopInstance { region, .. } => ec2::restore_instance(&session.ec2(region), region, before, log).await,
        Action::DeleteLoginProfile { .. } | Action::StartLogging { .. } => match action.undo() {
            Undo::Impossible(why) => Err(RespondError::NoUndo { kind: action.kind(), why }),
            Undo::Possible(_) => Ok(Value::Null),
        },
    }
}

/// Refuses up front the undos the account's responder role cannot make: those that grant
/// access, unless it was deployed with AllowGrantingUndo=true.
async fn check_undo_allowed(
    ctx: &ResponseContext,
    record: &ResponseRecord,
    action: &Action,
) -> Result<(), RespondError> {
    if let Undo::Impossible(why) = action.undo() {
        return Err(RespondError::NoUndo { kind: action.kind(), why });
    }
    if !action.undo_grants() {
        return Ok(());
    }
    let Some(responder) = responder::load(&ctx.pool, &record.account_id).await? else {
        return Err(not_enabled(&record.account_id));
    };
    if responder.granting_undo {
        Ok(())
    } else {
        Err(RespondError::UndoGrants { kind: action.kind(), account_id: record.account_id.clone() })
    }
}

/// Undoes an action Skywarden applied, restoring exactly the state it recorded before. When
/// its kind needs a second person's approval, the undo is recorded as asked for and waits for
/// [`approve`]. An action already undone is returned as it is.
pub async fn undo(ctx: &ResponseContext, id: &str, actor: &str, reason: &str) -> Result<ResponseRecord, RespondError> {
    check_reason(reason)?;
    let record = fetch(&ctx.pool, id).await?;
    let action = record.action()?;
    check_undo_allowed(ctx, &record, &action).await?;
    if record.status != "undone" && record::approval_required(&ctx.pool, action.kind()).await? {
        record::check_person(&ctx.pool, actor, "asking for the undo of an action that needs approval").await?;
        let record = record::request_undo(&ctx.pool, id, actor, reason.trim()).await?;
        audit(&ctx.pool, actor, "response.undo_request", &record, &Value::Array(Vec::new())).await;
        return Ok(record);
    }
    let lease_owner = new_lease_owner()?;
    if let Claim::Replayed(done) = record::claim_undo(&ctx.pool, id, &lease_owner).await? {
        return Ok(*done);
    }
    let (outcome, calls) = run_undo(ctx, &record, &action, actor, reason).await?;
    let record = fetch(&ctx.pool, id).await?;
    audit(&ctx.pool, actor, "response.undo", &record, &calls).await;
    outcome.map(|()| record)
}

/// The undo after its claim; every way out records the outcome and releases the lease. The
/// outcome, and the calls this undo made (for the audit log).
async fn run_undo(
    ctx: &ResponseContext,
    record: &ResponseRecord,
    action: &Action,
    actor: &str,
    reason: &str,
) -> Result<(Result<(), RespondError>, Value), RespondError> {
    let before = record.state_before.clone().unwrap_or(Value::Null);
    let mut log = CallLog::default();
    let result = match session(ctx, &record.account_id).await {
        Ok(responding) => restore(&responding, action, &before, &mut log).await,
        Err(error) => Err(error),
    };
    let error = result.as_ref().err().map(ToString::to_string);
    let calls = log.into_value();
    let outcome = UndoOutcome {
        undone: result.is_ok(),
        state: result.as_ref().ok(),
        calls: &calls,
        error: error.as_deref(),
        actor,
        reason: reason.trim(),
    };
    record::finish_undo(&ctx.pool, &record.id, &outcome).await?;
    Ok((result.map(|_| ()), calls))
}

/// Who did what, why, the calls (of this apply or undo) and their answers; secrets masked.
async fn audit(pool: &PgPool, actor: &str, what: &str, record: &ResponseRecord, calls: &Value) {
    let details = json!({
        "action_id": record.id,
        "kind": record.kind,
        "target": record.target,
        "region": record.region,
        "status": record.status,
        "reason": match what {
            "response.undo" => record.undo_reason.clone(),
            "response.approve" => record.approval_reason.clone(),
            "response.undo_request" | "response.approve_undo" => record.undo_request_reason.clone(),
            _ => Some(record.reason.clone()),
        },
        "requested_by": record.actor,
        "approved_by": record.approved_by,
        "undo_requested_by": record.undo_requested_by,
        "undo_approved_by": record.undo_approved_by,
        "undo_approval_reason": record.undo_approval_reason,
        "automatic_rule": record.automatic_rule,
        "alert_id": record.alert_id,
        "state_before": record.state_before,
        "state_after": if what.contains("undo") { record.undo_state.clone() } else { record.state_after.clone() },
        "calls": calls,
        "error": if what.contains("undo") { record.undo_error.clone() } else { record.error.clone() },
    });
    let target = format!("{}:{}", record.account_id, record.target);
    crate::auth::audit::record(pool, actor, what, Some(&target), None, super::mask_secrets(&details)).await;
}
