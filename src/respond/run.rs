//! Plan, apply and undo: the safety checks around every action (responder role, protected
//! tag, lease, idempotency key), its record before and after, and the audit log.

use serde::Serialize;
use serde_json::{Value, json};
use sqlx::PgPool;

use super::action::Principal;
use super::action::deny_all_arn;
use super::record::{self, Claim, Lease, NewAction, ResponseRecord, UndoOutcome};
use super::{Action, ApiCall, CallLog, Observed, RespondError, Undo, ec2, iam, principal_ingress, trail};
use crate::accounts::responder;
use crate::aws::{AccountSession, AwsSettings};
use crate::net::Cidr;

/// What the actions need besides the action itself.
#[derive(Clone)]
pub struct ResponseContext {
    pub pool: PgPool,
    pub settings: AwsSettings,
    pub base: aws_types::SdkConfig,
    /// The detector's `security_group_ingress.trusted_cidrs` (read by the caller: `respond`
    /// may not import `detect`): a rule widened to one of them is not exposed, so not opened.
    pub trusted_cidrs: Vec<Cidr>,
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
    /// Why apply would fail before any call (e.g. the principal's quota of managed policies is
    /// full), when it would.
    pub will_fail: Option<String>,
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
        Action::RevokeIngressRule { region, rule_id, group_id } => {
            let observed = ec2::observe_rule(&session.ec2(region), region, rule_id).await?;
            let found = observed.state["group_id"].as_str();
            if let (Some(group), Some(found)) = (group_id.as_deref(), found)
                && group != found
            {
                return Err(RespondError::Invalid {
                    field: "target",
                    reason: format!("{rule_id} is a rule of {found}, not of {group}"),
                });
            }
            Ok(observed)
        }
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
        Action::RevokePrincipalIngress { .. } => {
            Err(RespondError::Conflict("revoke-principal-ingress is observed rule by rule (principal_ingress)".into()))
        }
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
        Action::RevokePrincipalIngress { .. } => Vec::new(),
    }
}

/// The dry run: reads the live state with the responder role and changes nothing.
pub async fn plan(ctx: &ResponseContext, account_id: &str, action: &Action) -> Result<Plan, RespondError> {
    let responding = session(ctx, account_id).await?;
    if let Action::RevokePrincipalIngress { principal } = action {
        return plan_principal_ingress(ctx, &responding, account_id, action, principal).await;
    }
    let observed = observe(&responding, action).await?;
    let calls = if observed.changes { write_calls(action, &observed.state, &responding.deny_all) } else { Vec::new() };
    Ok(Plan {
        account_id: account_id.to_owned(),
        kind: action.kind(),
        target: action.target(),
        region: action.region().to_owned(),
        will_fail: will_fail(&observed.state),
        current: observed.state,
        calls,
        changes: observed.changes,
        protected: observed.protected,
        undo: action.undo(),
    })
}

/// Why apply would fail before any call, as the dry run read it.
fn will_fail(state: &Value) -> Option<String> {
    state.get(iam::WILL_FAIL).and_then(Value::as_str).map(str::to_owned)
}

/// The dry run of revoke-principal-ingress: every rule the principal opened, with its state now;
/// one RevokeSecurityGroupIngress per rule that exists and is not protected.
async fn plan_principal_ingress(
    ctx: &ResponseContext,
    responding: &Responding,
    account_id: &str,
    action: &Action,
    principal: &Principal,
) -> Result<Plan, RespondError> {
    let observed =
        principal_ingress::observe(&ctx.pool, &responding.session, (account_id, principal), None, &ctx.trusted_cidrs)
            .await?;
    let calls = observed.calls();
    let existing = observed.rules.iter().filter(|r| r.exists && r.problem.is_none()).count();
    Ok(Plan {
        account_id: account_id.to_owned(),
        kind: action.kind(),
        target: action.target(),
        region: action.region().to_owned(),
        current: observed.state,
        changes: !calls.is_empty(),
        // Every rule left is protected: apply refuses them all.
        protected: existing > 0 && calls.is_empty(),
        will_fail: None,
        calls,
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
        Action::RevokePrincipalIngress { .. } => {
            return Err(RespondError::Conflict("revoke-principal-ingress runs rule by rule".into()));
        }
    };
    Ok(())
}

/// Whether the action (or its undo) waits for a second person: its kind needs one, or it is
/// made of actions whose kind does (revoke-principal-ingress of revoke-ingress-rule).
async fn needs_approval(pool: &PgPool, action: &Action) -> Result<bool, RespondError> {
    if record::approval_required(pool, action.kind()).await? {
        return Ok(true);
    }
    Ok(matches!(action, Action::RevokePrincipalIngress { .. })
        && record::approval_required(pool, super::KINDS[0]).await?)
}

/// The actor of automatic containment (policies/response.yaml) in records and the audit log.
pub const AUTOMATIC_ACTOR: &str = "automatic";

/// Applies an action once per idempotency key: records it planned (leasing its resource), reads
/// and records the state before, makes the calls, records what it left; a failure half-way is
/// recorded with what it changed. A replayed key returns the earlier record and calls nothing.
pub async fn apply(ctx: &ResponseContext, request: &ApplyRequest) -> Result<ResponseRecord, RespondError> {
    let result = apply_with(ctx, request, true).await;
    // Refused before anything was recorded: the attempt is audited all the same.
    if let Err(error @ (RespondError::NotEnabled { .. } | RespondError::Busy { .. } | RespondError::KeyReused(_))) =
        &result
    {
        let (account, action) = (&request.account_id, &request.action);
        audit_refusal(&ctx.pool, &request.actor, "response.apply_refused", (account, action), error).await;
    }
    result
}

/// [`apply`]; `approval: false` for the rules of an action already asked for (and approved
/// where its kind needs it) as a whole.
async fn apply_with(
    ctx: &ResponseContext,
    request: &ApplyRequest,
    approval: bool,
) -> Result<ResponseRecord, RespondError> {
    check_reason(&request.reason)?;
    check_key(&request.idempotency_key)?;
    if let Some(alert_id) = request.alert_id.as_deref() {
        record::check_alert(&ctx.pool, alert_id, &request.account_id).await?;
    }
    // Refused before anything is recorded: no responder role, no action.
    if responder::load(&ctx.pool, &request.account_id).await?.is_none() {
        return Err(not_enabled(&request.account_id));
    }
    let awaiting_approval = approval && needs_approval(&ctx.pool, &request.action).await?;
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
    let plan = match &request.action {
        Action::RevokePrincipalIngress { principal } if awaiting_approval => {
            request_plan(ctx, &request.account_id, &request.idempotency_key, principal).await?
        }
        _ => None,
    };
    let id = match record::claim_planned(&ctx.pool, &new, plan.as_ref()).await? {
        Claim::Replayed(earlier) => return Ok(*earlier),
        Claim::New(id) => id,
    };
    if awaiting_approval {
        let record = fetch(&ctx.pool, &id).await?;
        audit(&ctx.pool, &request.actor, "response.request", &record, &Value::Array(Vec::new())).await;
        return Ok(record);
    }
    let lease = Lease { id: &id, owner: &lease_owner };
    let outcome = with_heartbeat(&ctx.pool, lease, run_any(ctx, &request.account_id, &request.action, lease)).await;
    let record = fetch(&ctx.pool, &id).await?;
    audit(&ctx.pool, &request.actor, "response.apply", &record, &record.calls).await;
    outcome.map(|()| record)
}

/// The plan a revoke-principal-ingress asked for now fixes for its approval: the rules its dry
/// run shows (read with the responder role). None for a replayed key (its record has its plan).
async fn request_plan(
    ctx: &ResponseContext,
    account_id: &str,
    key: &str,
    principal: &Principal,
) -> Result<Option<Value>, RespondError> {
    if record::get_by_key(&ctx.pool, key).await?.is_some() {
        return Ok(None);
    }
    let read = async {
        let responding = session(ctx, account_id).await?;
        principal_ingress::observe(&ctx.pool, &responding.session, (account_id, principal), None, &ctx.trusted_cidrs)
            .await
    };
    match read.await {
        Ok(observed) => Ok(Some(principal_ingress::plan_of(&observed))),
        // Our own database failing is the request's error; AWS (a throttle, AssumeRole) is not:
        // the request is recorded and audited with a plan that says why it could not be read.
        Err(error @ RespondError::Database(_)) => Err(error),
        Err(error) => {
            tracing::warn!(account_id, principal = %principal.label(), error = %error,
                "revoke-principal-ingress: the plan could not be read; recorded as unreadable");
            Ok(Some(principal_ingress::unreadable_plan(&error)))
        }
    }
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
    if record.status == "awaiting_approval"
        && let Some(why) = record.plan.as_ref().and_then(principal_ingress::plan_unreadable)
    {
        return Err(RespondError::Conflict(format!(
            "action {id} has no plan to approve: its rules could not be read when it was asked for ({why}); \
             ask for it again (a new request reads them again)"
        )));
    }
    let lease_owner = new_lease_owner()?;
    if let Claim::Replayed(record) =
        record::claim_approval(&ctx.pool, id, approver, reason.trim(), &lease_owner).await?
    {
        return Ok(*record);
    }
    let lease = Lease { id, owner: &lease_owner };
    let outcome = with_heartbeat(&ctx.pool, lease, run_any(ctx, &record.account_id, &record.action()?, lease)).await;
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
    let lease = Lease { id: &record.id, owner: &lease_owner };
    let (outcome, calls) =
        with_heartbeat(&ctx.pool, lease, run_undo(ctx, record, &action, &requester, &request_reason, lease)).await?;
    let record = fetch(&ctx.pool, &record.id).await?;
    audit(&ctx.pool, approver, "response.approve_undo", &record, &calls).await;
    outcome.map(|()| record)
}

/// How often a running action renews its lease: a slow action that is alive is never swept.
const HEARTBEAT: std::time::Duration = std::time::Duration::from_secs(60);

/// Runs `work` while renewing its `lease` every [`HEARTBEAT`] (an undo's too). A lease that ran
/// out (the sweep may have ended the action) or is another run's is not renewed: `work` is
/// dropped there, before its next call, and the run answers that it lost its lease.
pub async fn with_heartbeat<T>(
    pool: &PgPool,
    lease: Lease<'_>,
    work: impl std::future::Future<Output = Result<T, RespondError>>,
) -> Result<T, RespondError> {
    with_heartbeat_every(pool, lease, HEARTBEAT, work).await
}

/// [`with_heartbeat`] at any period (tests).
pub async fn with_heartbeat_every<T>(
    pool: &PgPool,
    lease: Lease<'_>,
    period: std::time::Duration,
    work: impl std::future::Future<Output = Result<T, RespondError>>,
) -> Result<T, RespondError> {
    tokio::pin!(work);
    let mut ticks = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
    loop {
        tokio::select! {
            done = &mut work => return done,
            _ = ticks.tick() => {
                match record::renew_lease(pool, lease).await {
                    Ok(true) => {}
                    Ok(false) => {
                        tracing::error!(action_id = lease.id, "a response action lost its lease mid-run: it stops");
                        return Err(record::lease_lost(lease.id));
                    }
                    Err(error) => {
                        tracing::warn!(action_id = lease.id, error = %error, "could not renew a response action's lease");
                    }
                }
            }
        }
    }
}

/// The run of a claimed action, whatever its kind.
async fn run_any(
    ctx: &ResponseContext,
    account_id: &str,
    action: &Action,
    lease: Lease<'_>,
) -> Result<(), RespondError> {
    match action {
        Action::RevokePrincipalIngress { principal } => run_principal_ingress(ctx, principal, lease).await,
        _ => run_claimed(ctx, account_id, action, lease).await,
    }
}

/// Revokes every rule the principal opened that exists, is the event's and is not protected,
/// each as its own `revoke-ingress-rule` (recorded, leased by its rule id, keyed by this
/// action and the rule so a re-run does nothing twice). The action is applied only when nothing
/// was left (cut off, unresolved, mismatched, unreadable, refused or failed); else failed, with
/// each rule's outcome in `state_after` (what was changed) and what was left in the error.
async fn run_principal_ingress(
    ctx: &ResponseContext,
    principal: &Principal,
    lease: Lease<'_>,
) -> Result<(), RespondError> {
    let parent = fetch(&ctx.pool, lease.id).await?;
    let fail = |error, after, log| failed(&ctx.pool, lease, error, after, log);
    let responding = match session(ctx, &parent.account_id).await {
        Ok(responding) => responding,
        Err(error) => return fail(error, None, CallLog::default()).await,
    };
    let observed = match observe_planned(ctx, &responding, &parent, principal, lease).await {
        Ok(observed) => observed,
        Err(error) => return fail(error, None, CallLog::default()).await,
    };
    record::record_before(&ctx.pool, lease, &observed.state).await?;
    let mut outcomes = Vec::new();
    let mut calls = Vec::new();
    let mut left = observed.incomplete.clone();
    for live in &observed.rules {
        let (outcome, made) = revoke_one(ctx, &parent, live, &mut left).await;
        outcomes.push(outcome);
        calls.extend(made);
    }
    let after = json!({"principal": principal.label(), "rules": outcomes});
    let calls = Value::Array(calls);
    if left.is_empty() {
        return Ok(record::finish_leased(&ctx.pool, lease, "applied", Some(&after), &calls, None).await?);
    }
    let error = format!("partial: {} of the principal's rules or events were left: {}", left.len(), left.join("; "));
    record::finish_leased(&ctx.pool, lease, "failed", Some(&after), &calls, Some(&error)).await?;
    Err(RespondError::Conflict(error))
}

/// The rules a revoke-principal-ingress action runs: exactly its stored plan (what was shown
/// when it was asked for and approved), each rule re-read live; without one (applied at once,
/// or asked for before plans were stored) the events stored by the time it was asked for, and
/// that plan is recorded.
async fn observe_planned(
    ctx: &ResponseContext,
    responding: &Responding,
    parent: &ResponseRecord,
    principal: &Principal,
    lease: Lease<'_>,
) -> Result<principal_ingress::Observed, RespondError> {
    if let Some(plan) = &parent.plan {
        return principal_ingress::observe_plan(&responding.session, principal, plan).await;
    }
    let as_of = Some(parent.created_at);
    let observed = principal_ingress::observe(
        &ctx.pool,
        &responding.session,
        (&parent.account_id, principal),
        as_of,
        &ctx.trusted_cidrs,
    )
    .await?;
    record::set_plan(&ctx.pool, lease, &principal_ingress::plan_of(&observed)).await?;
    Ok(observed)
}

/// One rule of a revoke-principal-ingress action: its outcome and the calls it made. A rule
/// that fails (or whose record cannot be read back) is added to `left`, never an early return:
/// the action's `state_after` always holds what was changed.
async fn revoke_one(
    ctx: &ResponseContext,
    parent: &ResponseRecord,
    live: &principal_ingress::LiveRule,
    left: &mut Vec<String>,
) -> (Value, Vec<Value>) {
    let rule = &live.rule;
    let mut outcome = json!({"rule_id": rule.rule_id, "region": rule.region, "group_id": live.state["group_id"]});
    if let Some((problem, why)) = &live.problem {
        outcome["status"] = json!(problem);
        outcome["error"] = json!(why);
        return (outcome, Vec::new());
    }
    if !live.exists {
        outcome["status"] = json!("gone");
        return (outcome, Vec::new());
    }
    if live.protected {
        outcome["status"] = json!("refused");
        outcome["error"] = json!(RespondError::Protected { resource: rule.rule_id.clone() }.to_string());
        return (outcome, Vec::new());
    }
    let child = match principal_ingress::child_action(live) {
        Ok(action) => child_request(parent, action, &rule.rule_id),
        Err(error) => {
            outcome["status"] = json!("mismatch");
            outcome["error"] = json!(error.to_string());
            left.push(format!("{}: {error}", rule.rule_id));
            return (outcome, Vec::new());
        }
    };
    let result = Box::pin(apply_with(ctx, &child, false)).await;
    let done = match &result {
        Ok(done) => Ok(Some(done.clone())),
        Err(_) => record::get_by_key(&ctx.pool, &child.idempotency_key).await,
    };
    let done = done.unwrap_or_else(|error| {
        left.push(format!("{}: its record could not be read: {error}", rule.rule_id));
        None
    });
    if let Some(done) = &done
        && let Err(error) = record::inherit_approval(&ctx.pool, &done.id, &parent.id).await
    {
        left.push(format!("{}: the approval was not copied to its record: {error}", rule.rule_id));
    }
    outcome["action_id"] = json!(done.as_ref().map(|d| d.id.clone()));
    let made = done.as_ref().and_then(|d| d.calls.as_array().cloned()).unwrap_or_default();
    match result {
        Ok(done) => outcome["status"] = json!(done.status),
        Err(error) => {
            outcome["status"] = json!("failed");
            outcome["error"] = json!(error.to_string());
            left.push(format!("{}: {error}", rule.rule_id));
        }
    }
    (outcome, made)
}

/// The `revoke-ingress-rule` of one rule of a revoke-principal-ingress action: same person,
/// reason, alert and rule; keyed by the action and the rule.
fn child_request(parent: &ResponseRecord, action: Action, rule_id: &str) -> ApplyRequest {
    let suffix = format!(" (part of action {})", parent.id);
    let mut reason = parent.reason.clone();
    if reason.len() + suffix.len() > 2000 {
        let mut cut = 2000 - suffix.len();
        while !reason.is_char_boundary(cut) {
            cut -= 1;
        }
        reason.truncate(cut);
    }
    ApplyRequest {
        account_id: parent.account_id.clone(),
        action,
        actor: parent.actor.clone(),
        reason: reason + &suffix,
        idempotency_key: format!("{}:{rule_id}", parent.id),
        alert_id: parent.alert_id.clone(),
        automatic_rule: parent.automatic_rule.clone(),
    }
}

/// Undoes every rule a revoke-principal-ingress action revoked (each rule's own undo, which
/// re-authorizes exactly that rule). What each undo did is in the answer, also on failure.
async fn undo_principal_ingress(
    ctx: &ResponseContext,
    record: &ResponseRecord,
    actor: &str,
    reason: &str,
) -> Result<Value, RespondError> {
    // Read again: an approved undo's approver is recorded by its claim.
    let parent = fetch(&ctx.pool, &record.id).await?;
    let rules = parent.state_after.as_ref().and_then(|a| a["rules"].as_array().cloned()).unwrap_or_default();
    let mut outcomes = Vec::new();
    let mut failures = Vec::new();
    for rule in rules {
        let Some(child_id) = rule["action_id"].as_str() else { continue };
        let mut outcome = json!({"rule_id": rule["rule_id"], "action_id": child_id});
        match Box::pin(undo_child(ctx, &parent, child_id, actor, reason)).await {
            Ok(done) => {
                outcome["status"] = json!(done.status);
                outcome["undo_state"] = done.undo_state.unwrap_or(Value::Null);
            }
            Err(error) => {
                outcome["status"] = json!("failed");
                outcome["error"] = json!(error.to_string());
                failures.push(format!("{child_id}: {error}"));
            }
        }
        outcomes.push(outcome);
    }
    if failures.is_empty() {
        return Ok(json!({"rules": outcomes}));
    }
    Err(RespondError::Conflict(format!(
        "{} rules were not restored: {}; the rules restored: {}",
        failures.len(),
        failures.join("; "),
        Value::Array(outcomes)
    )))
}

/// The undo of one rule of a revoke-principal-ingress action. Its kind's approval is the whole
/// action's: refused unless a second person approved the parent's undo when the kind needs one.
async fn undo_child(
    ctx: &ResponseContext,
    parent: &ResponseRecord,
    id: &str,
    actor: &str,
    reason: &str,
) -> Result<ResponseRecord, RespondError> {
    let record = fetch(&ctx.pool, id).await?;
    let action = record.action()?;
    check_undo_allowed(ctx, &record, &action).await?;
    if record.status != "undone"
        && parent.undo_approved_by.is_none()
        && record::approval_required(&ctx.pool, action.kind()).await?
    {
        return Err(RespondError::Conflict(format!(
            "the undo of {} needs a second person's approval: ask for the undo of action {} and have it approved",
            action.kind(),
            parent.id
        )));
    }
    let lease_owner = new_lease_owner()?;
    if let Claim::Replayed(done) = record::claim_undo(&ctx.pool, id, &lease_owner).await? {
        return Ok(*done);
    }
    let (outcome, calls) = run_undo(ctx, &record, &action, actor, reason, Lease { id, owner: &lease_owner }).await?;
    let record = fetch(&ctx.pool, id).await?;
    audit(&ctx.pool, actor, "response.undo", &record, &calls).await;
    outcome.map(|()| record)
}

/// Everything after the claim; every way out records the outcome and releases the lease.
async fn run_claimed(
    ctx: &ResponseContext,
    account_id: &str,
    action: &Action,
    lease: Lease<'_>,
) -> Result<(), RespondError> {
    let id = lease.id;
    let fail = |error, after, log| failed(&ctx.pool, lease, error, after, log);
    let responding = match session(ctx, account_id).await {
        Ok(responding) => responding,
        Err(error) => return fail(error, None, CallLog::default()).await,
    };
    let observed = match observe(&responding, action).await {
        Ok(observed) => observed,
        Err(error) => return fail(error, None, CallLog::default()).await,
    };
    record::record_before(&ctx.pool, lease, &observed.state).await?;
    if observed.protected {
        let error = RespondError::Protected { resource: format!("{} {}", action.kind(), action.target()) };
        return fail(error, None, CallLog::default()).await;
    }
    if let Some(why) = will_fail(&observed.state) {
        // Refused before any call: nothing is half-done.
        return fail(RespondError::Conflict(why), None, CallLog::default()).await;
    }
    let mut log = CallLog::default();
    if !observed.changes {
        // Already contained: applied, with nothing called and nothing for undo to restore.
        let calls = log.into_value();
        return Ok(record::finish_leased(&ctx.pool, lease, "applied", Some(&observed.state), &calls, None).await?);
    }
    let mut after = Value::Null;
    match execute(&responding, action, id, &observed.state, &mut log, &mut after).await {
        Ok(()) => Ok(record::finish_leased(&ctx.pool, lease, "applied", Some(&after), &log.into_value(), None).await?),
        Err(error) => {
            let partial = (!after.is_null()).then_some(&after);
            fail(error, partial, log).await
        }
    }
}

/// Records a failure with what it changed (`after`) and its calls; the lease is released.
async fn failed(
    pool: &PgPool,
    lease: Lease<'_>,
    error: RespondError,
    after: Option<&Value>,
    log: CallLog,
) -> Result<(), RespondError> {
    record::finish_leased(pool, lease, "failed", after, &log.into_value(), Some(&error.to_string())).await?;
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
        Action::RevokePrincipalIngress { .. } => {
            Err(RespondError::Conflict("revoke-principal-ingress is undone rule by rule".into()))
        }
        Action::DeleteLoginProfile { .. } | Action::StartLogging { .. } => match action.undo() {
            Undo::Impossible(why) => Err(RespondError::NoUndo { kind: action.kind(), why }),
            Undo::Possible(_) => Ok(Value::Null),
        },
    }
}

/// [`restore`], unless the resource has been tagged `skywarden:protected` since: an undo is a
/// write like any other, refused (and recorded so) on a protected resource.
async fn restore_unprotected(
    r: &Responding,
    action: &Action,
    before: &Value,
    log: &mut CallLog,
) -> Result<Value, RespondError> {
    let protected = match action {
        Action::RevokeIngressRule { region, .. } => match before["group_id"].as_str() {
            Some(group) if before["exists"] == json!(true) => {
                ec2::group_protected(&r.session.ec2(region), region, group).await?
            }
            _ => false,
        },
        // Rule by rule (each its own undo); or no undo at all.
        Action::RevokePrincipalIngress { .. } | Action::DeleteLoginProfile { .. } | Action::StartLogging { .. } => {
            false
        }
        _ => Box::pin(observe(r, action)).await?.protected,
    };
    if protected {
        return Err(RespondError::Protected { resource: format!("{} {}", action.kind(), action.target()) });
    }
    restore(r, action, before, log).await
}

/// Refuses at once the undo of what Skywarden did not apply (planned, a dry run, awaiting
/// approval, failed before changing anything): there is nothing of Skywarden's to restore.
fn check_undoable(record: &ResponseRecord) -> Result<(), RespondError> {
    match record.status.as_str() {
        "applied" | "undone" | "undo_awaiting_approval" => Ok(()),
        "failed" if record::revoked_some(record) => Ok(()),
        other => Err(RespondError::NotUndoable { id: record.id.clone(), status: other.to_owned() }),
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
    let allowed = match check_undoable(&record) {
        Ok(()) => check_undo_allowed(ctx, &record, &action).await,
        Err(error) => Err(error),
    };
    if let Err(error) = allowed {
        audit_refusal(&ctx.pool, actor, "response.undo_refused", (&record.account_id, &action), &error).await;
        return Err(error);
    }
    if record.status != "undone" && needs_approval(&ctx.pool, &action).await? {
        record::check_person(&ctx.pool, actor, "asking for the undo of an action that needs approval").await?;
        let record = record::request_undo(&ctx.pool, id, actor, reason.trim()).await?;
        audit(&ctx.pool, actor, "response.undo_request", &record, &Value::Array(Vec::new())).await;
        return Ok(record);
    }
    let lease_owner = new_lease_owner()?;
    match record::claim_undo(&ctx.pool, id, &lease_owner).await {
        Ok(Claim::Replayed(done)) => return Ok(*done),
        Ok(Claim::New(_)) => {}
        Err(error) => {
            audit_refusal(&ctx.pool, actor, "response.undo_refused", (&record.account_id, &action), &error).await;
            return Err(error);
        }
    }
    let lease = Lease { id, owner: &lease_owner };
    let (outcome, calls) =
        with_heartbeat(&ctx.pool, lease, run_undo(ctx, &record, &action, actor, reason, lease)).await?;
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
    lease: Lease<'_>,
) -> Result<(Result<(), RespondError>, Value), RespondError> {
    let before = record.state_before.clone().unwrap_or(Value::Null);
    let mut log = CallLog::default();
    let result = match (action, session(ctx, &record.account_id).await) {
        (Action::RevokePrincipalIngress { .. }, Ok(_)) => undo_principal_ingress(ctx, record, actor, reason).await,
        // Boxed: the undo's future stays small (callers poll it on their own stack).
        (_, Ok(responding)) => Box::pin(restore_unprotected(&responding, action, &before, &mut log)).await,
        (_, Err(error)) => Err(error),
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
    record::finish_undo(&ctx.pool, lease, &outcome).await?;
    Ok((result.map(|_| ()), calls))
}

/// An attempt refused before it ran (not enabled, busy, key reused, not undoable): who tried
/// what, and why it was refused.
async fn audit_refusal(
    pool: &PgPool,
    actor: &str,
    what: &str,
    (account_id, action): (&str, &Action),
    error: &RespondError,
) {
    let details = json!({"kind": action.kind(), "target": action.target(), "region": action.region(),
                         "refused": true, "error": error.to_string()});
    let target = format!("{account_id}:{}", action.target());
    crate::auth::audit::record(pool, actor, what, Some(&target), None, super::mask_secrets(&details)).await;
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
