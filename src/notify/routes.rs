//! Routes: which alerts go to which channel (by policy, severity, account and ATT&CK tag), one
//! message per alert or a digest per period, and whether status changes follow.

use serde::{Deserialize, Serialize};
use sqlx::PgPool;

use super::channels::{ChannelError, ChannelKind};
use crate::model::Severity;

/// A route as submitted.
#[derive(Debug, Clone, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RouteSpec {
    pub name: String,
    /// The channel, by name.
    pub channel: String,
    /// Policy ids; `*` matches any run of characters (`aws-iam-*`). Empty: every policy.
    #[serde(default)]
    pub policies: Vec<String>,
    #[serde(default)]
    pub accounts: Vec<String>,
    /// ATT&CK tactic or technique ids (`TA0001`, `T1078`); empty: any.
    #[serde(default)]
    pub tags: Vec<String>,
    #[serde(default = "lowest")]
    pub min_severity: Severity,
    /// One message every this many minutes listing new alerts, instead of one per alert.
    #[serde(default)]
    pub digest_minutes: Option<i32>,
    #[serde(default = "yes")]
    pub status_updates: bool,
    #[serde(default = "yes")]
    pub enabled: bool,
}

fn lowest() -> Severity {
    Severity::Info
}

fn yes() -> bool {
    true
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct RouteView {
    pub id: i64,
    pub name: String,
    pub channel_id: i64,
    pub channel: String,
    pub policies: Vec<String>,
    pub accounts: Vec<String>,
    pub tags: Vec<String>,
    pub min_severity: Severity,
    pub digest_minutes: Option<i32>,
    pub status_updates: bool,
    pub managed_by: String,
    pub enabled: bool,
}

fn invalid(field: &str, message: impl Into<String>) -> ChannelError {
    ChannelError::invalid(field, message)
}

/// The most entries a route's lists take.
pub const MAX_POLICIES: usize = 500;
pub const MAX_ACCOUNTS: usize = 1000;
pub const MAX_TAGS: usize = 200;

fn check_name(field: &str, value: &str) -> Result<(), ChannelError> {
    let value = value.trim();
    if value.is_empty() || value.len() > 128 || value.chars().any(char::is_control) {
        return Err(invalid(field, "1 to 128 characters, without control characters"));
    }
    Ok(())
}

fn check_count(field: &str, count: usize, max: usize) -> Result<(), ChannelError> {
    if count > max {
        return Err(invalid(field, format!("at most {max} entries, not {count}")));
    }
    Ok(())
}

/// Checks a route's own fields; the channel is checked against the database.
pub fn validate(spec: &RouteSpec) -> Result<(), ChannelError> {
    check_name("name", &spec.name)?;
    check_name("channel", &spec.channel)?;
    check_count("policies", spec.policies.len(), MAX_POLICIES)?;
    check_count("accounts", spec.accounts.len(), MAX_ACCOUNTS)?;
    check_count("tags", spec.tags.len(), MAX_TAGS)?;
    for policy in &spec.policies {
        if policy.is_empty() || policy.len() > 200 || policy.chars().any(|c| c.is_control() || c.is_whitespace()) {
            return Err(invalid("policies", format!("{policy:?} is not a policy id or pattern")));
        }
    }
    for account in &spec.accounts {
        if account.len() != 12 || !account.bytes().all(|b| b.is_ascii_digit()) {
            return Err(invalid("accounts", format!("{account:?} is not a 12-digit AWS account id")));
        }
    }
    for tag in &spec.tags {
        let upper = tag.to_ascii_uppercase();
        let tactic = upper.strip_prefix("TA").is_some_and(|d| d.len() == 4 && d.bytes().all(|b| b.is_ascii_digit()));
        let technique = upper.strip_prefix('T').is_some_and(|rest| {
            let (id, sub) = rest.split_once('.').unwrap_or((rest, "000"));
            id.len() == 4
                && id.bytes().all(|b| b.is_ascii_digit())
                && sub.len() == 3
                && sub.bytes().all(|b| b.is_ascii_digit())
        });
        if !tactic && !technique {
            return Err(invalid(
                "tags",
                format!("{tag:?} is not an ATT&CK tactic (TA0001) or technique (T1078, T1078.004) id"),
            ));
        }
    }
    if let Some(minutes) = spec.digest_minutes
        && !(1..=10080).contains(&minutes)
    {
        return Err(invalid("digest_minutes", "1 to 10080 minutes (a week)"));
    }
    Ok(())
}

async fn channel_for(pool: &PgPool, spec: &RouteSpec) -> Result<i64, ChannelError> {
    let channel = sqlx::query!("SELECT id, kind FROM notification_channels WHERE name = $1", spec.channel.trim())
        .fetch_optional(pool)
        .await?
        .ok_or_else(|| invalid("channel", format!("no channel named {:?}", spec.channel)))?;
    let kind: ChannelKind = channel.kind.parse()?;
    if spec.digest_minutes.is_some() && !kind.takes_digests() {
        return Err(invalid("digest_minutes", format!("a {kind} channel gets one message per alert, not digests")));
    }
    Ok(channel.id)
}

fn normalised_tags(spec: &RouteSpec) -> Vec<String> {
    spec.tags.iter().map(|t| t.to_ascii_uppercase()).collect()
}

pub async fn create(pool: &PgPool, spec: &RouteSpec) -> Result<RouteView, ChannelError> {
    validate(spec)?;
    let channel_id = channel_for(pool, spec).await?;
    let id = sqlx::query_scalar!(
        "INSERT INTO notification_routes (name, channel_id, policy_ids, account_ids, tags, min_severity, digest_minutes,
                                          status_updates, enabled)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) ON CONFLICT (name) DO NOTHING RETURNING id",
        spec.name.trim(),
        channel_id,
        &spec.policies,
        &spec.accounts,
        &normalised_tags(spec),
        spec.min_severity as Severity,
        spec.digest_minutes,
        spec.status_updates,
        spec.enabled,
    )
    .fetch_optional(pool)
    .await?
    .ok_or_else(|| ChannelError::Conflict(format!("a route named {:?} exists", spec.name.trim())))?;
    view(pool, id).await
}

/// Replaces an API-owned route's definition.
pub async fn replace(pool: &PgPool, id: i64, spec: &RouteSpec) -> Result<RouteView, ChannelError> {
    validate(spec)?;
    let channel_id = channel_for(pool, spec).await?;
    let managed_by = sqlx::query_scalar!("SELECT managed_by FROM notification_routes WHERE id = $1", id)
        .fetch_optional(pool)
        .await?
        .ok_or_else(|| ChannelError::NotFound(id.to_string()))?;
    if managed_by == "file" {
        return Err(ChannelError::Conflict(
            "this route comes from the notifications config file; change it there".into(),
        ));
    }
    let updated = sqlx::query!(
        "UPDATE notification_routes SET name = $2, channel_id = $3, policy_ids = $4, account_ids = $5, tags = $6,
                min_severity = $7, digest_minutes = $8, status_updates = $9, enabled = $10
         WHERE id = $1 AND NOT EXISTS (SELECT 1 FROM notification_routes o WHERE o.name = $2 AND o.id <> $1)",
        id,
        spec.name.trim(),
        channel_id,
        &spec.policies,
        &spec.accounts,
        &normalised_tags(spec),
        spec.min_severity as Severity,
        spec.digest_minutes,
        spec.status_updates,
        spec.enabled,
    )
    .execute(pool)
    .await?;
    if updated.rows_affected() == 0 {
        return Err(ChannelError::Conflict(format!("a route named {:?} exists", spec.name.trim())));
    }
    view(pool, id).await
}

pub async fn delete(pool: &PgPool, id: i64) -> Result<String, ChannelError> {
    let row = sqlx::query!("SELECT name, managed_by FROM notification_routes WHERE id = $1", id)
        .fetch_optional(pool)
        .await?
        .ok_or_else(|| ChannelError::NotFound(id.to_string()))?;
    if row.managed_by == "file" {
        return Err(ChannelError::Conflict(
            "this route comes from the notifications config file; remove it there".into(),
        ));
    }
    sqlx::query!("DELETE FROM notification_routes WHERE id = $1", id).execute(pool).await?;
    Ok(row.name)
}

pub async fn list(pool: &PgPool) -> Result<Vec<RouteView>, ChannelError> {
    let rows = sqlx::query!(
        r#"SELECT r.id, r.name, r.channel_id, c.name AS channel, r.policy_ids, r.account_ids, r.tags,
                  r.min_severity AS "min_severity: Severity", r.digest_minutes, r.status_updates, r.managed_by, r.enabled
           FROM notification_routes r JOIN notification_channels c ON c.id = r.channel_id
           ORDER BY r.name"#
    )
    .fetch_all(pool)
    .await?;
    Ok(rows
        .into_iter()
        .map(|r| RouteView {
            id: r.id,
            name: r.name,
            channel_id: r.channel_id,
            channel: r.channel,
            policies: r.policy_ids,
            accounts: r.account_ids,
            tags: r.tags,
            min_severity: r.min_severity,
            digest_minutes: r.digest_minutes,
            status_updates: r.status_updates,
            managed_by: r.managed_by,
            enabled: r.enabled,
        })
        .collect())
}

pub async fn view(pool: &PgPool, id: i64) -> Result<RouteView, ChannelError> {
    list(pool).await?.into_iter().find(|r| r.id == id).ok_or_else(|| ChannelError::NotFound(id.to_string()))
}

/// Replaces the routes owned by the config file with `specs`.
pub async fn sync_file_routes(tx: &mut sqlx::PgConnection, specs: &[RouteSpec]) -> Result<(), ChannelError> {
    let names: Vec<String> = specs.iter().map(|s| s.name.trim().to_string()).collect();
    sqlx::query!("DELETE FROM notification_routes WHERE managed_by = 'file' AND NOT (name = ANY($1))", &names)
        .execute(&mut *tx)
        .await?;
    for spec in specs {
        validate(spec).map_err(|error| match error {
            ChannelError::Invalid { field, message } => {
                ChannelError::Invalid { field: format!("routes.{}.{field}", spec.name), message }
            }
            other => other,
        })?;
        let channel = sqlx::query!("SELECT id, kind FROM notification_channels WHERE name = $1", spec.channel.trim())
            .fetch_optional(&mut *tx)
            .await?
            .ok_or_else(|| {
                invalid(&format!("routes.{}.channel", spec.name), format!("no channel named {:?}", spec.channel))
            })?;
        let kind: ChannelKind = channel.kind.parse()?;
        if spec.digest_minutes.is_some() && !kind.takes_digests() {
            return Err(invalid(
                &format!("routes.{}.digest_minutes", spec.name),
                format!("a {kind} channel gets one message per alert, not digests"),
            ));
        }
        let updated = sqlx::query!(
            "INSERT INTO notification_routes (name, channel_id, policy_ids, account_ids, tags, min_severity, digest_minutes,
                                              status_updates, enabled, managed_by)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, 'file')
             ON CONFLICT (name) DO UPDATE SET channel_id = EXCLUDED.channel_id, policy_ids = EXCLUDED.policy_ids,
                 account_ids = EXCLUDED.account_ids, tags = EXCLUDED.tags, min_severity = EXCLUDED.min_severity,
                 digest_minutes = EXCLUDED.digest_minutes, status_updates = EXCLUDED.status_updates, enabled = EXCLUDED.enabled
             WHERE notification_routes.managed_by = 'file'",
            spec.name.trim(),
            channel.id,
            &spec.policies,
            &spec.accounts,
            &normalised_tags(spec),
            spec.min_severity as Severity,
            spec.digest_minutes,
            spec.status_updates,
            spec.enabled,
        )
        .execute(&mut *tx)
        .await?;
        if updated.rows_affected() == 0 {
            return Err(ChannelError::Conflict(format!(
                "route {:?} in the config file has the name of a route made through the API",
                spec.name
            )));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn route(json: serde_json::Value) -> RouteSpec {
        serde_json::from_value(json).unwrap()
    }

    #[test]
    fn routes_check_their_fields() {
        assert!(validate(&route(serde_json::json!({"name": "hijack", "channel": "soc", "policies": ["aws-*"], "tags": ["ta0001", "T1078.004"]}))).is_ok());
        let bad = [
            serde_json::json!({"name": "", "channel": "soc"}),
            serde_json::json!({"name": "a", "channel": "soc", "accounts": ["12345"]}),
            serde_json::json!({"name": "a", "channel": "soc", "tags": ["initial-access"]}),
            serde_json::json!({"name": "a", "channel": "soc", "digest_minutes": 0}),
            serde_json::json!({"name": "a", "channel": "soc", "policies": ["two words"]}),
            serde_json::json!({"name": "a", "channel": "x".repeat(129)}),
            serde_json::json!({"name": "a", "channel": "so\u{0}c"}),
            serde_json::json!({"name": "a", "channel": "soc", "policies": vec!["aws-*"; MAX_POLICIES + 1]}),
            serde_json::json!({"name": "a", "channel": "soc", "accounts": vec!["111122223333"; MAX_ACCOUNTS + 1]}),
            serde_json::json!({"name": "a", "channel": "soc", "tags": vec!["T1078"; MAX_TAGS + 1]}),
        ];
        for spec in bad {
            assert!(validate(&route(spec.clone())).is_err(), "{spec}");
        }
        assert!(
            serde_json::from_value::<RouteSpec>(serde_json::json!({"name": "a", "channel": "b", "severity": "high"}))
                .is_err()
        );
    }
}
