//! Skywarden's own audit log: who did what to Skywarden (logins, tokens, users, accounts, alert
//! triage), from where. Never holds a secret.

use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::Value;
use sqlx::PgPool;

/// Records one action. Failing to record is logged, not fatal: the action itself already
/// happened and its own table holds the outcome.
pub async fn record(
    pool: &PgPool,
    actor: &str,
    action: &str,
    target: Option<&str>,
    client: Option<&str>,
    details: Value,
) {
    let result = sqlx::query!(
        "INSERT INTO audit_log (actor, action, target, client, details) VALUES ($1, $2, $3, $4, $5)",
        actor,
        action,
        target,
        client,
        details
    )
    .execute(pool)
    .await;
    if let Err(error) = result {
        tracing::error!(%error, actor, action, "could not write the audit log");
    }
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct AuditEntry {
    pub id: i64,
    pub at: DateTime<Utc>,
    pub actor: String,
    pub action: String,
    pub target: Option<String>,
    pub client: Option<String>,
    pub details: Value,
}

pub async fn list(
    pool: &PgPool,
    actor: Option<&str>,
    action: Option<&str>,
    limit: i64,
) -> Result<Vec<AuditEntry>, sqlx::Error> {
    list_before(pool, actor, action, None, limit).await
}

/// Entries newest first, older than the entry `before` (a page's last), at most `limit`.
pub async fn list_before(
    pool: &PgPool,
    actor: Option<&str>,
    action: Option<&str>,
    before: Option<i64>,
    limit: i64,
) -> Result<Vec<AuditEntry>, sqlx::Error> {
    sqlx::query_as!(
        AuditEntry,
        "SELECT id, at, actor, action, target, client, details FROM audit_log
         WHERE ($1::text IS NULL OR actor = $1) AND ($2::text IS NULL OR action = $2)
           AND ($4::bigint IS NULL OR id < $4)
         ORDER BY id DESC LIMIT $3",
        actor,
        action,
        limit,
        before
    )
    .fetch_all(pool)
    .await
}
