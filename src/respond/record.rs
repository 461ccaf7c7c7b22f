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
    /// awaiting_approval, planned, applied, failed or undone.
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
    let resource = new.action.resource();
    let params = serde_json::to_value(new.action).map_err(|e| RespondError::Conflict(e.to_string()))?;
    let mut tx = pool.begin().await?;
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
                                         reason, idempotency_key, lease_owner, lease_expires_at)
           VALUES ($1, $2, $3, $4, $5, $6, $7::text::uuid, CASE WHEN $13 THEN 'awaiting_approval' ELSE 'planned' END,
                   $8, $9, $10, CASE WHEN $13 THEN NULL ELSE $11 END,
                   CASE WHEN $13 THEN NULL ELSE now() + make_interval(mins => $12::float8::int) END)
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
        new.awaiting_approval
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
                      undo_state, undone_by, undo_reason, undo_error, created_at, applied_at, undone_at
               FROM response_actions "# + $where,
            $($arg),*
        )
    };
}

async fn by_key(tx: &mut sqlx::PgConnection, key: &str) -> Result<Option<ResponseRecord>, sqlx::Error> {
    select_record!("WHERE idempotency_key = $1", key).fetch_optional(&mut *tx).await
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

/// The state read before the first write call, recorded before it is made.
pub async fn record_before(pool: &PgPool, id: &str, state: &Value) -> Result<(), sqlx::Error> {
    sqlx::query!("UPDATE response_actions SET state_before = $2 WHERE id = $1::text::uuid", id, state)
        .execute(pool)
        .await?;
    Ok(())
}

/// The outcome of an apply: status, what it left, its calls; the lease is released.
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
    let mut tx = pool.begin().await?;
    lock_resource(&mut tx, &record.account_id, &resource).await?;
    let Some(record) = select_record!("WHERE id = $1::text::uuid", id).fetch_optional(&mut *tx).await? else {
        return Err(RespondError::NotFound(format!("no response action {id}")));
    };
    match record.status.as_str() {
        "undone" => return Ok(Claim::Replayed(Box::new(record))),
        "applied" => {}
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

pub async fn finish_undo(pool: &PgPool, id: &str, outcome: &UndoOutcome<'_>) -> Result<(), sqlx::Error> {
    sqlx::query!(
        "UPDATE response_actions SET status = CASE WHEN $2 THEN 'undone' ELSE status END, undo_state = $3,
                calls = calls || $4, undo_error = $5, undone_by = $6, undo_reason = $7,
                undone_at = CASE WHEN $2 THEN now() END, lease_owner = NULL, lease_expires_at = NULL
         WHERE id = $1::text::uuid",
        id,
        outcome.undone,
        outcome.state,
        outcome.calls,
        outcome.error,
        outcome.actor,
        outcome.reason
    )
    .execute(pool)
    .await?;
    Ok(())
}

/// Leases an action awaiting approval for its run, approved by a second person.
pub async fn claim_approval(
    pool: &PgPool,
    id: &str,
    approver: &str,
    reason: &str,
    lease_owner: &str,
) -> Result<Claim, RespondError> {
    let record = get(pool, id).await?.ok_or_else(|| RespondError::NotFound(format!("no response action {id}")))?;
    let resource = record.action()?.resource();
    let mut tx = pool.begin().await?;
    lock_resource(&mut tx, &record.account_id, &resource).await?;
    let Some(record) = select_record!("WHERE id = $1::text::uuid", id).fetch_optional(&mut *tx).await? else {
        return Err(RespondError::NotFound(format!("no response action {id}")));
    };
    if record.status != "awaiting_approval" {
        return Ok(Claim::Replayed(Box::new(record)));
    }
    if record.actor == approver {
        return Err(RespondError::SecondPerson);
    }
    if let Some(holder) = lease_holder(&mut tx, &record.account_id, &resource).await? {
        return Err(RespondError::Busy { resource, action_id: holder });
    }
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
