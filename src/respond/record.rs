//! The `response_actions` table: each action recorded before its first write call and after
//! its last, with the lease that keeps two actions off one resource and the idempotency key
//! that makes a replayed request do nothing.

use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::Value;
use sqlx::PgPool;

use super::{Action, RespondError};

/// How long a lease holds without its action finishing (a process that died mid-action):
/// longer than the slowest action (snapshots of many volumes, each call bounded by the SDK's
/// operation timeout).
const LEASE_MINUTES: f64 = 30.0;

/// One recorded action.
#[derive(Clone, Debug, Serialize, utoipa::ToSchema)]
pub struct ResponseRecord {
    pub id: String,
    pub account_id: String,
    pub region: String,
    pub kind: String,
    pub target: String,
    /// The action as parsed (`kind` and its fields).
    pub params: Value,
    pub alert_id: Option<String>,
    /// awaiting_approval, planned, applied, failed, undone, undo_awaiting_approval (its undo
    /// waits for a second person) or dry_run (what automatic containment would have done).
    pub status: String,
    /// The state read just before the first write call.
    pub state_before: Option<Value>,
    /// What the action left (for a failed action: what it changed before failing).
    pub state_after: Option<Value>,
    /// Every AWS call made, with its answer.
    pub calls: Value,
    pub error: Option<String>,
    pub actor: String,
    pub reason: String,
    /// The second person who approved it, when its kind needs one.
    pub approved_by: Option<String>,
    pub approval_reason: Option<String>,
    pub approved_at: Option<DateTime<Utc>>,
    pub undo_state: Option<Value>,
    pub undone_by: Option<String>,
    pub undo_reason: Option<String>,
    pub undo_error: Option<String>,
    pub created_at: DateTime<Utc>,
    pub applied_at: Option<DateTime<Utc>>,
    pub undone_at: Option<DateTime<Utc>>,
    /// Who asked for the undo, when its kind needs a second person's approval.
    pub undo_requested_by: Option<String>,
    pub undo_request_reason: Option<String>,
    pub undo_requested_at: Option<DateTime<Utc>>,
    pub undo_approved_by: Option<String>,
    pub undo_approval_reason: Option<String>,
    pub undo_approved_at: Option<DateTime<Utc>>,
    /// When its apply or undo was found abandoned (the lease ran out with no outcome recorded).
    pub abandoned_at: Option<DateTime<Utc>>,
    /// The rule of policies/response.yaml, for an automatic action (actor `automatic`).
    pub automatic_rule: Option<String>,
    /// revoke-principal-ingress: the rules fixed when it was asked for (rule id, region, group,
    /// the event that opened each and its protocol, ports and source), exactly what apply
    /// revokes once each is re-checked live.
    pub plan: Option<Value>,
}

impl ResponseRecord {
    /// The action it recorded.
    pub fn action(&self) -> Result<Action, RespondError> {
        let action: Action = serde_json::from_value(self.params.clone())
            .map_err(|e| RespondError::Invalid { field: "params", reason: e.to_string() })?;
        action.validated()
    }
}

/// What claiming an action found.
pub enum Claim {
    /// A new row, leased to the caller.
    New(String),
    /// The idempotency key's earlier action: nothing is done again.
    Replayed(Box<ResponseRecord>),
}

/// What a new action row holds.
pub struct NewAction<'a> {
    pub account_id: &'a str,
    pub action: &'a Action,
    pub alert_id: Option<&'a str>,
    pub actor: &'a str,
    pub reason: &'a str,
    pub idempotency_key: &'a str,
    pub lease_owner: &'a str,
    /// Its kind needs a second person's approval: recorded, not leased, not run.
    pub awaiting_approval: bool,
    pub automatic_rule: Option<&'a str>,
}

async fn lock_resource(tx: &mut sqlx::PgConnection, account_id: &str, resource: &str) -> Result<(), sqlx::Error> {
    let key = format!("skywarden-respond:{account_id}/{resource}");
    sqlx::query!("SELECT pg_advisory_xact_lock(hashtext($1))", key).fetch_one(&mut *tx).await?;
    Ok(())
}

/// The action holding a live lease on the resource, if any.
async fn lease_holder(
    tx: &mut sqlx::PgConnection,
    account_id: &str,
    resource: &str,
) -> Result<Option<String>, sqlx::Error> {
    sqlx::query_scalar!(
        r#"SELECT id::text AS "id!" FROM response_actions
           WHERE account_id = $1 AND resource = $2 AND lease_owner IS NOT NULL AND lease_expires_at > now()
           LIMIT 1"#,
        account_id,
        resource
    )
    .fetch_optional(&mut *tx)
    .await
}

/// Records a planned action and leases its resource, or finds the key's earlier action.
pub async fn claim(pool: &PgPool, new: &NewAction<'_>) -> Result<Claim, RespondError> {
    claim_planned(pool, new, None).await
}

/// [`claim`], recording the plan the action must run (revoke-principal-ingress).
pub async fn claim_planned(pool: &PgPool, new: &NewAction<'_>, plan: Option<&Value>) -> Result<Claim, RespondError> {
    let resource = new.action.resource();
    let params = serde_json::to_value(new.action).map_err(|e| RespondError::Conflict(e.to_string()))?;
    let mut tx = crate::db::begin(pool).await?;
    lock_resource(&mut tx, new.account_id, &resource).await?;
    if let Some(earlier) = by_key(&mut tx, new.idempotency_key).await? {
        // Another caller's key says nothing of their action.
        if earlier.actor != new.actor {
            return Err(RespondError::KeyReused("another caller's request".to_string()));
        }
        if earlier.account_id != new.account_id || earlier.params != params {
            return Err(RespondError::KeyReused(format!(
                "{} {} on {}",
                earlier.kind, earlier.target, earlier.account_id
            )));
        }
        return Ok(Claim::Replayed(Box::new(earlier)));
    }
    if let Some(holder) = lease_holder(&mut tx, new.account_id, &resource).await? {
        return Err(RespondError::Busy { resource, action_id: holder });
    }
    let id = sqlx::query_scalar!(
        r#"INSERT INTO response_actions (account_id, region, kind, target, resource, params, alert_id, status, actor,
                                         reason, idempotency_key, lease_owner, lease_expires_at, automatic_rule, plan)
           VALUES ($1, $2, $3, $4, $5, $6, $7::text::uuid, CASE WHEN $13 THEN 'awaiting_approval' ELSE 'planned' END,
                   $8, $9, $10, CASE WHEN $13 THEN NULL ELSE $11 END,
                   CASE WHEN $13 THEN NULL ELSE now() + make_interval(mins => $12::float8::int) END, $14, $15)
           ON CONFLICT (idempotency_key) DO NOTHING
           RETURNING id::text AS "id!""#,
        new.account_id,
        new.action.region(),
        new.action.kind(),
        new.action.target(),
        resource,
        params,
        new.alert_id,
        new.actor,
        new.reason,
        new.idempotency_key,
        new.lease_owner,
        LEASE_MINUTES,
        new.awaiting_approval,
        new.automatic_rule,
        plan
    )
    .fetch_optional(&mut *tx)
    .await?;
    tx.commit().await?;
    match id {
        Some(id) => Ok(Claim::New(id)),
        // The same key for another resource, committed meanwhile.
        None => Err(RespondError::KeyReused(new.idempotency_key.chars().take(8).collect())),
    }
}

macro_rules! select_record {
    ($where:literal, $($arg:expr),*) => {
        sqlx::query_as!(
            ResponseRecord,
            r#"SELECT id::text AS "id!", account_id, region, kind, target, params, alert_id::text AS alert_id, status,
                      state_before, state_after, calls, error, actor, reason, approved_by, approval_reason, approved_at,
                      undo_state, undone_by, undo_reason, undo_error, created_at, applied_at, undone_at,
                      undo_requested_by, undo_request_reason, undo_requested_at, undo_approved_by,
                      undo_approval_reason, undo_approved_at,
                      abandoned_at, automatic_rule, plan
               FROM response_actions "# + $where,
            $($arg),*
        )
    };
}

async fn by_key(tx: &mut sqlx::PgConnection, key: &str) -> Result<Option<ResponseRecord>, sqlx::Error> {
    select_record!("WHERE idempotency_key = $1", key).fetch_optional(&mut *tx).await
}

/// The action recorded under an idempotency key, if any.
pub async fn get_by_key(pool: &PgPool, key: &str) -> Result<Option<ResponseRecord>, sqlx::Error> {
    let mut connection = pool.acquire().await?;
    by_key(&mut connection, key).await
}

/// Records the plan a leased action runs (one asked for before plans were stored, or applied at
/// once: its plan is read when it runs).
pub async fn set_plan(pool: &PgPool, lease: Lease<'_>, plan: &Value) -> Result<(), sqlx::Error> {
    sqlx::query!(
        "UPDATE response_actions SET plan = $3 WHERE id = $1::text::uuid AND lease_owner = $2 AND plan IS NULL",
        lease.id,
        lease.owner,
        plan
    )
    .execute(pool)
    .await?;
    Ok(())
}

/// One recorded action (its id checked as a UUID first).
pub async fn get(pool: &PgPool, id: &str) -> Result<Option<ResponseRecord>, sqlx::Error> {
    if !crate::model::is_alert_id(id) {
        return Ok(None);
    }
    select_record!("WHERE id = $1::text::uuid", id).fetch_optional(pool).await
}

/// Recorded actions, newest first: of one account, of one alert, or all.
pub async fn list(
    pool: &PgPool,
    account_id: Option<&str>,
    alert_id: Option<&str>,
    limit: i64,
) -> Result<Vec<ResponseRecord>, sqlx::Error> {
    if alert_id.is_some_and(|id| !crate::model::is_alert_id(id)) {
        return Ok(Vec::new());
    }
    select_record!(
        "WHERE ($1::text IS NULL OR account_id = $1) AND ($2::text IS NULL OR alert_id = $2::text::uuid)
         ORDER BY created_at DESC, id LIMIT $3",
        account_id,
        alert_id,
        limit
    )
    .fetch_all(pool)
    .await
}

/// Records an automatic action that calls nothing: what dry-run mode would have done (status
/// `dry_run`: the state it read and the calls it would make, or why it could not tell), or one
/// not run (status `failed`, with why). Once per key: `None` when the key was recorded before.
pub async fn record_unrun(
    pool: &PgPool,
    new: &NewAction<'_>,
    status: &str,
    state: Option<&Value>,
    calls: &Value,
    error: Option<&str>,
) -> Result<Option<String>, RespondError> {
    let params = serde_json::to_value(new.action).map_err(|e| RespondError::Conflict(e.to_string()))?;
    let id = sqlx::query_scalar!(
        r#"INSERT INTO response_actions (account_id, region, kind, target, resource, params, alert_id, status, actor,
                                         reason, idempotency_key, state_before, calls, error, automatic_rule)
           VALUES ($1, $2, $3, $4, $5, $6, $7::text::uuid, $15, $8, $9, $10, $11, $12, $13, $14)
           ON CONFLICT (idempotency_key) DO NOTHING
           RETURNING id::text AS "id!""#,
        new.account_id,
        new.action.region(),
        new.action.kind(),
        new.action.target(),
        new.action.resource(),
        params,
        new.alert_id,
        new.actor,
        new.reason,
        new.idempotency_key,
        state,
        calls,
        error,
        new.automatic_rule,
        status
    )
    .fetch_optional(pool)
    .await?;
    Ok(id)
}

/// The lease of one run (apply or undo) of an action: every write of the run names its owner, so a
/// run whose lease ran out (and was swept, or claimed by another run) changes nothing recorded.
#[derive(Clone, Copy, Debug)]
pub struct Lease<'a> {
    pub id: &'a str,
    pub owner: &'a str,
}

/// The heartbeat of a running action (or undo): its lease runs [`LEASE_MINUTES`] from now again.
/// A lease already run out, or now another run's, is left alone (the sweep may have ended the
/// action). Whether it was renewed: if not, the run must stop.
pub async fn renew_lease(pool: &PgPool, lease: Lease<'_>) -> Result<bool, sqlx::Error> {
    let renewed = sqlx::query!(
        "UPDATE response_actions SET lease_expires_at = now() + make_interval(mins => $2::float8::int)
         WHERE id = $1::text::uuid AND lease_owner = $3 AND lease_expires_at > now()",
        lease.id,
        LEASE_MINUTES,
        lease.owner
    )
    .execute(pool)
    .await?
    .rows_affected();
    Ok(renewed == 1)
}

/// The state read before the first write call, recorded before it is made; refused (Conflict)
/// when the run no longer holds its lease, so that no write call follows.
pub async fn record_before(pool: &PgPool, lease: Lease<'_>, state: &Value) -> Result<(), RespondError> {
    let updated = sqlx::query!(
        "UPDATE response_actions SET state_before = $2 WHERE id = $1::text::uuid AND lease_owner = $3",
        lease.id,
        state,
        lease.owner
    )
    .execute(pool)
    .await?
    .rows_affected();
    if updated == 1 { Ok(()) } else { Err(lease_lost(lease.id)) }
}

/// The error of a run that lost its lease (it ran out and was swept or claimed again).
pub fn lease_lost(id: &str) -> RespondError {
    RespondError::Conflict(format!(
        "action {id} lost its lease mid-run (it ran out): the run stopped; compare its state_before with AWS"
    ))
}

/// [`finish`] by the run holding the lease only: a run that lost it records nothing (warned).
pub async fn finish_leased(
    pool: &PgPool,
    lease: Lease<'_>,
    status: &str,
    after: Option<&Value>,
    calls: &Value,
    error: Option<&str>,
) -> Result<(), sqlx::Error> {
    let updated = sqlx::query!(
        "UPDATE response_actions SET status = $2, state_after = $3, calls = $4, error = $5,
                applied_at = CASE WHEN $2 = 'applied' THEN now() END, lease_owner = NULL, lease_expires_at = NULL
         WHERE id = $1::text::uuid AND lease_owner = $6",
        lease.id,
        status,
        after,
        calls,
        error,
        lease.owner
    )
    .execute(pool)
    .await?
    .rows_affected();
    if updated == 0 {
        tracing::warn!(action_id = lease.id, status, calls = %calls, after = ?after,
            "a response action's run lost its lease: its outcome is not recorded over the sweep's");
    }
    Ok(())
}

/// The outcome of an apply: status, what it left, its calls; the lease is released. For a record
/// no run holds (tests, imports); a run uses [`finish_leased`].
pub async fn finish(
    pool: &PgPool,
    id: &str,
    status: &str,
    after: Option<&Value>,
    calls: &Value,
    error: Option<&str>,
) -> Result<(), sqlx::Error> {
    sqlx::query!(
        "UPDATE response_actions SET status = $2, state_after = $3, calls = $4, error = $5,
                applied_at = CASE WHEN $2 = 'applied' THEN now() END, lease_owner = NULL, lease_expires_at = NULL
         WHERE id = $1::text::uuid",
        id,
        status,
        after,
        calls,
        error
    )
    .execute(pool)
    .await?;
    Ok(())
}

/// Leases an applied action's resource for its undo; an action already undone is returned as
/// it is (`Replayed`).
pub async fn claim_undo(pool: &PgPool, id: &str, lease_owner: &str) -> Result<Claim, RespondError> {
    let record = get(pool, id).await?.ok_or_else(|| RespondError::NotFound(format!("no response action {id}")))?;
    let resource = record.action()?.resource();
    let mut tx = crate::db::begin(pool).await?;
    lock_resource(&mut tx, &record.account_id, &resource).await?;
    let Some(record) = select_record!("WHERE id = $1::text::uuid", id).fetch_optional(&mut *tx).await? else {
        return Err(RespondError::NotFound(format!("no response action {id}")));
    };
    match record.status.as_str() {
        "undone" => return Ok(Claim::Replayed(Box::new(record))),
        "applied" => {}
        // Partly done: the rules it did revoke are restored.
        "failed" if revoked_some(&record) => {}
        other => return Err(RespondError::NotUndoable { id: id.to_owned(), status: other.to_owned() }),
    }
    if let Some(holder) = lease_holder(&mut tx, &record.account_id, &resource).await? {
        return Err(RespondError::Busy { resource, action_id: holder });
    }
    sqlx::query!(
        "UPDATE response_actions SET lease_owner = $2, lease_expires_at = now() + make_interval(mins => $3::float8::int)
         WHERE id = $1::text::uuid",
        id,
        lease_owner,
        LEASE_MINUTES
    )
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(Claim::New(id.to_owned()))
}

/// A revoke-principal-ingress action that failed part-way but revoked some rules (each with its
/// own record): its undo restores those.
pub(super) fn revoked_some(record: &ResponseRecord) -> bool {
    record.kind == super::KINDS[8]
        && record
            .state_after
            .as_ref()
            .and_then(|a| a["rules"].as_array())
            .is_some_and(|rules| rules.iter().any(|r| r["action_id"].is_string() && r["status"] == "applied"))
}

/// Records on a rule of a revoke-principal-ingress action the second person who approved the
/// whole action, if one did.
pub async fn inherit_approval(pool: &PgPool, child_id: &str, parent_id: &str) -> Result<(), sqlx::Error> {
    sqlx::query!(
        "UPDATE response_actions c SET approved_by = p.approved_by, approval_reason = p.approval_reason,
                approved_at = p.approved_at
         FROM response_actions p
         WHERE c.id = $1::text::uuid AND p.id = $2::text::uuid AND p.approved_by IS NOT NULL AND c.approved_by IS NULL",
        child_id,
        parent_id
    )
    .execute(pool)
    .await?;
    Ok(())
}

/// The outcome of an undo; the lease is released. A failed undo leaves the action applied,
/// with the error and what the undo changed.
pub struct UndoOutcome<'a> {
    pub undone: bool,
    pub state: Option<&'a Value>,
    pub calls: &'a Value,
    pub error: Option<&'a str>,
    pub actor: &'a str,
    pub reason: &'a str,
}

/// The undo's outcome, by the run holding the lease only: a run that lost it records nothing.
pub async fn finish_undo(pool: &PgPool, lease: Lease<'_>, outcome: &UndoOutcome<'_>) -> Result<(), sqlx::Error> {
    let updated = sqlx::query!(
        "UPDATE response_actions SET status = CASE WHEN $2 THEN 'undone' ELSE status END, undo_state = $3,
                calls = calls || $4, undo_error = $5, undone_by = $6, undo_reason = $7,
                undone_at = CASE WHEN $2 THEN now() END, lease_owner = NULL, lease_expires_at = NULL
         WHERE id = $1::text::uuid AND lease_owner = $8",
        lease.id,
        outcome.undone,
        outcome.state,
        outcome.calls,
        outcome.error,
        outcome.actor,
        outcome.reason,
        lease.owner
    )
    .execute(pool)
    .await?
    .rows_affected();
    if updated == 0 {
        tracing::warn!(action_id = lease.id, calls = %outcome.calls, error = ?outcome.error,
            "a response action's undo lost its lease: its outcome is not recorded over the sweep's");
    }
    Ok(())
}

/// Records the undo of an applied action as asked for, to wait for a second person; asked
/// again, the waiting record is returned as it is.
pub async fn request_undo(pool: &PgPool, id: &str, actor: &str, reason: &str) -> Result<ResponseRecord, RespondError> {
    let partly = get(pool, id).await?.is_some_and(|record| revoked_some(&record));
    let updated = sqlx::query!(
        "UPDATE response_actions SET status = 'undo_awaiting_approval', undo_requested_by = $2,
                undo_request_reason = $3, undo_requested_at = now(), undo_error = NULL
         WHERE id = $1::text::uuid AND (status = 'applied' OR (status = 'failed' AND $4))
           AND (lease_owner IS NULL OR lease_expires_at <= now())",
        id,
        actor,
        reason,
        partly
    )
    .execute(pool)
    .await?
    .rows_affected();
    let record = get(pool, id).await?.ok_or_else(|| RespondError::NotFound(format!("no response action {id}")))?;
    match record.status.as_str() {
        _ if updated == 1 => Ok(record),
        "undo_awaiting_approval" | "undone" => Ok(record),
        "applied" => Err(RespondError::Busy { resource: record.target.clone(), action_id: record.id.clone() }),
        other => Err(RespondError::NotUndoable { id: id.to_owned(), status: other.to_owned() }),
    }
}

/// The action `id` reloaded under its resource's lock, for a second person's approval: the
/// transaction holding the lock when it still has `awaiting` status, `approver` is not who asked
/// (`asker`) and no other run holds the resource; else what to answer (`Replayed`).
async fn lock_for_approval(
    pool: &PgPool,
    id: &str,
    awaiting: &str,
    approver: &str,
    asker: fn(&ResponseRecord) -> Option<&str>,
) -> Result<Result<sqlx::Transaction<'static, sqlx::Postgres>, Claim>, RespondError> {
    let record = get(pool, id).await?.ok_or_else(|| RespondError::NotFound(format!("no response action {id}")))?;
    let resource = record.action()?.resource();
    let mut tx = crate::db::begin(pool).await?;
    lock_resource(&mut tx, &record.account_id, &resource).await?;
    let Some(record) = select_record!("WHERE id = $1::text::uuid", id).fetch_optional(&mut *tx).await? else {
        return Err(RespondError::NotFound(format!("no response action {id}")));
    };
    if record.status != awaiting {
        return Ok(Err(Claim::Replayed(Box::new(record))));
    }
    if asker(&record).is_some_and(|asker| same_person(asker, approver)) {
        return Err(RespondError::SecondPerson);
    }
    if let Some(holder) = lease_holder(&mut tx, &record.account_id, &resource).await? {
        return Err(RespondError::Busy { resource, action_id: holder });
    }
    Ok(Ok(tx))
}

/// Leases an undo awaiting approval for its run, approved by a second person (not the one who
/// asked for the undo); anything else is returned as it is (`Replayed`).
pub async fn claim_undo_approval(
    pool: &PgPool,
    id: &str,
    approver: &str,
    reason: &str,
    lease_owner: &str,
) -> Result<Claim, RespondError> {
    let asker: fn(&ResponseRecord) -> Option<&str> = |r| r.undo_requested_by.as_deref();
    let mut tx = match lock_for_approval(pool, id, "undo_awaiting_approval", approver, asker).await? {
        Ok(tx) => tx,
        Err(answer) => return Ok(answer),
    };
    sqlx::query!(
        "UPDATE response_actions SET status = 'applied', undo_approved_by = $2, undo_approved_at = now(),
                undo_approval_reason = $3, lease_owner = $4,
                lease_expires_at = now() + make_interval(mins => $5::float8::int)
         WHERE id = $1::text::uuid",
        id,
        approver,
        reason,
        lease_owner,
        LEASE_MINUTES
    )
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(Claim::New(id.to_owned()))
}

/// Leases an action awaiting approval for its run, approved by a second person.
pub async fn claim_approval(
    pool: &PgPool,
    id: &str,
    approver: &str,
    reason: &str,
    lease_owner: &str,
) -> Result<Claim, RespondError> {
    let asker: fn(&ResponseRecord) -> Option<&str> = |r| Some(r.actor.as_str());
    let mut tx = match lock_for_approval(pool, id, "awaiting_approval", approver, asker).await? {
        Ok(tx) => tx,
        Err(answer) => return Ok(answer),
    };
    sqlx::query!(
        "UPDATE response_actions SET status = 'planned', approved_by = $2, approval_reason = $3, approved_at = now(),
                lease_owner = $4, lease_expires_at = now() + make_interval(mins => $5::float8::int)
         WHERE id = $1::text::uuid",
        id,
        approver,
        reason,
        lease_owner,
        LEASE_MINUTES
    )
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(Claim::New(id.to_owned()))
}

/// Refuses an alert that does not exist or belongs to another account than the action's.
pub async fn check_alert(pool: &PgPool, alert_id: &str, account_id: &str) -> Result<(), RespondError> {
    let invalid = |reason: String| RespondError::Invalid { field: "alert_id", reason };
    if !crate::model::is_alert_id(alert_id) {
        return Err(invalid("an alert id is a UUID".into()));
    }
    let account =
        sqlx::query_scalar!("SELECT account_id FROM alerts WHERE alert_id = $1::text::uuid LIMIT 1", alert_id)
            .fetch_optional(pool)
            .await?;
    match account {
        None => Err(invalid(format!("no alert {alert_id}"))),
        Some(alert_account) if alert_account != account_id => {
            Err(invalid(format!("alert {alert_id} is not of account {account_id}")))
        }
        Some(_) => Ok(()),
    }
}

/// The dashboard user an actor names: `user:NAME` (a dashboard session), or the `NAME` of
/// `cli:LOGIN as user:NAME` (the CLI's `--as`); none for a token, a bare CLI login, `automatic`.
pub fn person_of(actor: &str) -> Option<&str> {
    let user = match actor.split_once(" as ") {
        Some((login, user)) if login.starts_with("cli:") => user,
        Some(_) => return None,
        None => actor,
    };
    user.strip_prefix("user:").filter(|name| !name.is_empty())
}

/// Whether two actors are one person: the same dashboard user, whatever the case of the name
/// or the way in (session or CLI `--as`); else the same actor.
pub fn same_person(a: &str, b: &str) -> bool {
    match (person_of(a), person_of(b)) {
        (Some(a), Some(b)) => a.to_lowercase() == b.to_lowercase(),
        _ => a.to_lowercase() == b.to_lowercase(),
    }
}

/// Refuses an actor who is not a person approvals can tell apart: an enabled dashboard user
/// with the analyst or admin role (never a viewer), named by a session or by the CLI's `--as`.
/// API tokens belong to no user, and a CLI login is not a dashboard user.
pub async fn check_person(pool: &PgPool, actor: &str, what: &'static str) -> Result<(), RespondError> {
    let refused = || RespondError::NotAPerson { what, actor: actor.to_owned() };
    let Some(name) = person_of(actor) else { return Err(refused()) };
    let enabled = sqlx::query_scalar!(
        "SELECT username FROM users WHERE username = $1 AND disabled_at IS NULL AND role IN ('analyst', 'admin')",
        name
    )
    .fetch_optional(pool)
    .await?;
    enabled.map(|_| ()).ok_or_else(refused)
}

/// Ends the actions whose process died mid-way: a lease that ran out with no outcome recorded.
/// An apply is recorded failed (abandoned), with what is known (the state before, if read); an
/// undo leaves the action applied with the undo's error. Returns how many were ended.
pub async fn sweep_abandoned(pool: &PgPool) -> Result<u64, sqlx::Error> {
    let swept = sqlx::query!(
        "UPDATE response_actions SET
                status = CASE WHEN status = 'planned' THEN 'failed' ELSE status END,
                error = CASE WHEN status = 'planned' THEN
                    'abandoned: the process running it stopped before recording its outcome (lease expired '
                    || to_char(lease_expires_at AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS') || ' UTC); '
                    || CASE WHEN state_before IS NULL THEN 'no AWS call had been made'
                            ELSE 'it read the state before and may have changed it: compare state_before with AWS' END
                    ELSE error END,
                undo_error = CASE WHEN status = 'planned' THEN undo_error ELSE
                    'abandoned: the undo stopped before recording its outcome; compare state_before with AWS' END,
                abandoned_at = now(), lease_owner = NULL, lease_expires_at = NULL
         WHERE lease_owner IS NOT NULL AND lease_expires_at <= now()"
    )
    .execute(pool)
    .await?
    .rows_affected();
    if swept > 0 {
        tracing::warn!(swept, "response actions abandoned mid-way were recorded as such");
    }
    Ok(swept)
}

/// Whether actions of this kind need a second person's approval.
pub async fn approval_required(pool: &PgPool, kind: &str) -> Result<bool, sqlx::Error> {
    let found = sqlx::query_scalar!("SELECT kind FROM response_approval_kinds WHERE kind = $1", kind)
        .fetch_optional(pool)
        .await?;
    Ok(found.is_some())
}

/// The kinds that need a second person's approval.
pub async fn approval_kinds(pool: &PgPool) -> Result<Vec<String>, sqlx::Error> {
    sqlx::query_scalar!("SELECT kind FROM response_approval_kinds ORDER BY kind").fetch_all(pool).await
}

/// Requires (or stops requiring) a second person's approval for a kind of action.
pub async fn set_approval(pool: &PgPool, kind: &str, required: bool, actor: &str) -> Result<(), RespondError> {
    if !super::KINDS.contains(&kind) {
        return Err(RespondError::Invalid {
            field: "kind",
            reason: format!("`{kind}` is not an action (one of {})", super::KINDS.join(", ")),
        });
    }
    if required {
        sqlx::query!(
            "INSERT INTO response_approval_kinds (kind, set_by) VALUES ($1, $2) ON CONFLICT (kind) DO NOTHING",
            kind,
            actor
        )
        .execute(pool)
        .await?;
    } else {
        sqlx::query!("DELETE FROM response_approval_kinds WHERE kind = $1", kind).execute(pool).await?;
    }
    Ok(())
}
