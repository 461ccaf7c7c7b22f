//! Resource versions and config changes in PostgreSQL.
//!
//! A snapshot is compared with the stored current state, resource by resource: an unchanged
//! resource only has its `last_seen` moved; a changed, new or vanished one gets a new version
//! and a change record with the diff. Change records are then linked to the CloudTrail event
//! that explains them (the latest successful write that named the resource between the two
//! snapshots), and again on later snapshots while events are still arriving.

use std::collections::{HashMap, HashSet};

use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::{Value, json};
use sqlx::PgConnection;

use super::ResourceConfig;
use super::diff::{config_hash, diff};

/// What recording one snapshot did.
#[derive(Debug, Default, Clone, Serialize, PartialEq)]
pub struct SnapshotOutcome {
    pub resources: u64,
    pub created: u64,
    pub modified: u64,
    pub deleted: u64,
    pub unchanged: u64,
}

impl SnapshotOutcome {
    pub fn versions(&self) -> u64 {
        self.created + self.modified + self.deleted
    }
}

struct Stored {
    version: i32,
    hash: Vec<u8>,
    config: Value,
    deleted: bool,
}

/// Where and when a snapshot was taken: what the versions and changes it writes carry.
struct Snapshot<'a> {
    account_id: &'a str,
    region: &'a str,
    now: DateTime<Utc>,
    previous_at: Option<DateTime<Utc>>,
}

/// What a snapshot did to a resource it saw.
enum Seen {
    Unchanged,
    /// New, or back after its deletion.
    Created,
    Modified,
}

/// Records one snapshot of `resource_types` in one account and region. With `baseline` (the
/// first snapshot), new resources are stored without a `created` change: they were not created
/// now, Skywarden just had not looked. `previous_at` is when the last snapshot was taken.
pub async fn record_snapshot(
    tx: &mut PgConnection,
    account_id: &str,
    region: &str,
    resource_types: &[&'static str],
    resources: &[ResourceConfig],
    baseline: bool,
    previous_at: Option<DateTime<Utc>>,
) -> Result<SnapshotOutcome, sqlx::Error> {
    record_snapshot_at(tx, account_id, region, resource_types, resources, baseline, previous_at, None).await
}

/// [`record_snapshot`] for a snapshot taken at `captured_at` (an imported dump), not now.
#[allow(clippy::too_many_arguments)]
pub async fn record_snapshot_at(
    tx: &mut PgConnection,
    account_id: &str,
    region: &str,
    resource_types: &[&'static str],
    resources: &[ResourceConfig],
    baseline: bool,
    previous_at: Option<DateTime<Utc>>,
    captured_at: Option<DateTime<Utc>>,
) -> Result<SnapshotOutcome, sqlx::Error> {
    let now = match captured_at {
        Some(at) => at,
        None => sqlx::query_scalar!(r#"SELECT now() AS "now!""#).fetch_one(&mut *tx).await?,
    };
    let snapshot = Snapshot { account_id, region, now, previous_at };
    let types: Vec<String> = resource_types.iter().map(|t| (*t).to_owned()).collect();
    mark_collected(tx, &snapshot, &types).await?;
    let mut stored = stored_resources(tx, &snapshot, &types).await?;

    let mut outcome = SnapshotOutcome::default();
    let mut seen = HashSet::new();
    for resource in resources {
        outcome.resources += 1;
        let key = (resource.resource_type.to_owned(), resource.resource_id.clone());
        if !seen.insert(key.clone()) {
            continue;
        }
        match record_seen(tx, &snapshot, resource, stored.remove(&key), baseline).await? {
            Seen::Unchanged => outcome.unchanged += 1,
            Seen::Created => outcome.created += 1,
            Seen::Modified => outcome.modified += 1,
        }
    }
    // What the snapshot did not see any more was deleted.
    for ((resource_type, resource_id), current) in stored {
        if !current.deleted {
            record_deletion(tx, &snapshot, &resource_type, &resource_id, current).await?;
            outcome.deleted += 1;
        }
    }
    Ok(outcome)
}

/// Posture checks that fail on an absence ("no trail") look only at types collected here.
async fn mark_collected(tx: &mut PgConnection, snapshot: &Snapshot<'_>, types: &[String]) -> Result<(), sqlx::Error> {
    sqlx::query!(
        "INSERT INTO resource_collections (account_id, region, resource_type, collected_at)
         SELECT $1, $2, t, $4 FROM unnest($3::text[]) AS t
         ON CONFLICT (account_id, region, resource_type) DO UPDATE SET collected_at = EXCLUDED.collected_at",
        snapshot.account_id,
        snapshot.region,
        types,
        snapshot.now,
    )
    .execute(&mut *tx)
    .await?;
    Ok(())
}

/// The current state of the snapshot's resource types, by (type, id).
async fn stored_resources(
    tx: &mut PgConnection,
    snapshot: &Snapshot<'_>,
    types: &[String],
) -> Result<HashMap<(String, String), Stored>, sqlx::Error> {
    let rows = sqlx::query!(
        "SELECT resource_type, resource_id, version, config_hash, config, deleted_at IS NOT NULL AS \"deleted!\"
         FROM resources WHERE account_id = $1 AND region = $2 AND resource_type = ANY($3)",
        snapshot.account_id,
        snapshot.region,
        types
    )
    .fetch_all(&mut *tx)
    .await?;
    Ok(rows
        .into_iter()
        .map(|r| {
            (
                (r.resource_type, r.resource_id),
                Stored { version: r.version, hash: r.config_hash, config: r.config, deleted: r.deleted },
            )
        })
        .collect())
}

/// Records a resource the snapshot saw, against its `stored` state.
async fn record_seen(
    tx: &mut PgConnection,
    snapshot: &Snapshot<'_>,
    resource: &ResourceConfig,
    stored: Option<Stored>,
    baseline: bool,
) -> Result<Seen, sqlx::Error> {
    let hash = config_hash(&resource.config);
    let (resource_type, resource_id) = (resource.resource_type, resource.resource_id.as_str());
    match stored {
        Some(current) if !current.deleted && current.hash == hash => {
            sqlx::query!(
                "UPDATE resources SET last_seen = $4, config = $5, arn = $6, name = $7
                     WHERE account_id = $1 AND resource_type = $2 AND resource_id = $3",
                snapshot.account_id,
                resource_type,
                resource_id,
                snapshot.now,
                resource.config,
                resource.arn,
                resource.name
            )
            .execute(&mut *tx)
            .await?;
            Ok(Seen::Unchanged)
        }
        Some(current) => {
            let version = current.version + 1;
            let (seen, kind, old) = if current.deleted {
                (Seen::Created, "created", json!({}))
            } else {
                (Seen::Modified, "modified", current.config)
            };
            write_version(tx, snapshot.account_id, resource, version, snapshot.now, &hash).await?;
            insert_change(tx, snapshot, resource_type, resource_id, version, kind, changes(&old, &resource.config))
                .await?;
            Ok(seen)
        }
        None => {
            write_version(tx, snapshot.account_id, resource, 1, snapshot.now, &hash).await?;
            if !baseline {
                insert_change(
                    tx,
                    snapshot,
                    resource_type,
                    resource_id,
                    1,
                    "created",
                    changes(&json!({}), &resource.config),
                )
                .await?;
            }
            Ok(Seen::Created)
        }
    }
}

/// Records that a resource the snapshot did not see any more was deleted.
async fn record_deletion(
    tx: &mut PgConnection,
    snapshot: &Snapshot<'_>,
    resource_type: &str,
    resource_id: &str,
    current: Stored,
) -> Result<(), sqlx::Error> {
    let (account_id, now) = (snapshot.account_id, snapshot.now);
    let version = current.version + 1;
    sqlx::query!(
        "INSERT INTO resource_versions (account_id, resource_type, resource_id, version, captured_at, config, config_hash)
             VALUES ($1, $2, $3, $4, $5, NULL, NULL)",
        account_id,
        resource_type,
        resource_id,
        version,
        now
    )
    .execute(&mut *tx)
    .await?;
    sqlx::query!(
        "UPDATE resources SET version = $4, deleted_at = $5, last_changed = $5
             WHERE account_id = $1 AND resource_type = $2 AND resource_id = $3",
        account_id,
        resource_type,
        resource_id,
        version,
        now
    )
    .execute(&mut *tx)
    .await?;
    insert_change(tx, snapshot, resource_type, resource_id, version, "deleted", changes(&current.config, &json!({})))
        .await
}

/// The diff of a change, as stored.
fn changes(old: &Value, new: &Value) -> Value {
    serde_json::to_value(diff(old, new)).expect("diff serialises")
}

async fn write_version(
    tx: &mut PgConnection,
    account_id: &str,
    resource: &ResourceConfig,
    version: i32,
    now: DateTime<Utc>,
    hash: &[u8],
) -> Result<(), sqlx::Error> {
    sqlx::query!(
        "INSERT INTO resource_versions (account_id, resource_type, resource_id, version, captured_at, config, config_hash)
         VALUES ($1, $2, $3, $4, $5, $6, $7)",
        account_id,
        resource.resource_type,
        resource.resource_id,
        version,
        now,
        resource.config,
        hash
    )
    .execute(&mut *tx)
    .await?;
    sqlx::query!(
        "INSERT INTO resources (account_id, resource_type, resource_id, region, arn, name, version, config, config_hash,
                                first_seen, last_seen, last_changed)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $10, $10)
         ON CONFLICT (account_id, resource_type, resource_id) DO UPDATE SET
             region = EXCLUDED.region, arn = EXCLUDED.arn, name = EXCLUDED.name, version = EXCLUDED.version,
             config = EXCLUDED.config, config_hash = EXCLUDED.config_hash, last_seen = EXCLUDED.last_seen,
             last_changed = EXCLUDED.last_changed, deleted_at = NULL",
        account_id,
        resource.resource_type,
        resource.resource_id,
        resource.region,
        resource.arn,
        resource.name,
        version,
        resource.config,
        hash,
        now
    )
    .execute(&mut *tx)
    .await?;
    Ok(())
}

async fn insert_change(
    tx: &mut PgConnection,
    snapshot: &Snapshot<'_>,
    resource_type: &str,
    resource_id: &str,
    version: i32,
    kind: &str,
    changes: Value,
) -> Result<(), sqlx::Error> {
    sqlx::query!(
        "INSERT INTO config_changes (account_id, resource_type, resource_id, region, version, kind, detected_at,
                                     previous_at, diff)
         VALUES ($1, $2, $3, $4, $5, $6::text::config_change_kind, $7, $8, $9)",
        snapshot.account_id,
        resource_type,
        resource_id,
        snapshot.region,
        version,
        kind,
        snapshot.now,
        snapshot.previous_at,
        changes
    )
    .execute(&mut *tx)
    .await?;
    Ok(())
}

/// Links recent unexplained changes of an account to the CloudTrail event that caused them: the
/// latest successful, non-read-only event naming the resource between the previous snapshot
/// (less a margin for clock skew) and the one that saw the change. Returns how many were linked.
pub async fn link_changes(conn: &mut PgConnection, account_id: &str) -> Result<u64, sqlx::Error> {
    link_changes_since(conn, account_id, None).await
}

/// [`link_changes`] for changes detected after `since` (default: the last two days).
pub async fn link_changes_since(
    conn: &mut PgConnection,
    account_id: &str,
    since: Option<DateTime<Utc>>,
) -> Result<u64, sqlx::Error> {
    let linked = sqlx::query!(
        "WITH found AS (
             SELECT c.change_id, e.event_time, e.event_id, e.event_name, e.principal_arn, e.source_ip_text
             FROM config_changes c
             CROSS JOIN LATERAL (
                 SELECT event_time, event_id, event_name, principal_arn, source_ip_text
                 FROM cloudtrail_events e
                 WHERE e.account_id = c.account_id
                   AND e.resource_ids @> ARRAY[c.resource_id]
                   AND e.event_time <= c.detected_at
                   AND e.event_time >= COALESCE(c.previous_at, c.detected_at - interval '1 day') - interval '5 minutes'
                   AND e.read_only IS NOT TRUE AND e.error_code IS NULL
                 ORDER BY e.event_time DESC
                 LIMIT 1) e
             WHERE c.account_id = $1 AND c.event_id IS NULL AND c.detected_at > coalesce($2, now() - interval '2 days'))
         UPDATE config_changes c SET event_time = f.event_time, event_id = f.event_id, event_name = f.event_name,
                principal_arn = f.principal_arn, source_ip = f.source_ip_text
         FROM found f WHERE c.change_id = f.change_id",
        account_id,
        since,
    )
    .execute(&mut *conn)
    .await?
    .rows_affected();
    Ok(linked)
}
