//! Snapshot dumps: configuration snapshots kept in a file (`skywarden.snapshot/v1`), for
//! incident response on collected data and for the demo. A dump lists snapshots in time order,
//! each with the resources of every region and the types it collected; recording them in order
//! gives the same versions and changes (linked to CloudTrail events) as live polling would.

use std::collections::BTreeMap;
use std::path::Path;

use chrono::{DateTime, Utc};
use serde::Deserialize;
use serde_json::Value;
use sqlx::PgPool;

use super::resource_types::RESOURCE_TYPES;
use super::{ResourceConfig, store};

pub const FORMAT: &str = "skywarden.snapshot/v1";

#[derive(Debug, thiserror::Error)]
pub enum DumpError {
    #[error("{path}: {message}")]
    Invalid { path: String, message: String },
    #[error("database error")]
    Db(#[from] sqlx::Error),
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SnapshotDump {
    pub format: String,
    pub account_id: String,
    pub snapshots: Vec<Snapshot>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Snapshot {
    pub captured_at: DateTime<Utc>,
    /// Region (or `global`) → what was collected there.
    pub regions: BTreeMap<String, RegionSnapshot>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegionSnapshot {
    /// The types collected, even those with no resource (so "no trail" means none).
    pub collected: Vec<String>,
    pub resources: Vec<DumpedResource>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DumpedResource {
    #[serde(rename = "type")]
    pub resource_type: String,
    pub id: String,
    #[serde(default)]
    pub arn: Option<String>,
    #[serde(default)]
    pub name: Option<String>,
    pub config: Value,
}

fn known_type(text: &str) -> Option<&'static str> {
    RESOURCE_TYPES.into_iter().find(|t| *t == text)
}

impl SnapshotDump {
    pub fn load(path: &Path) -> Result<Self, DumpError> {
        let shown = path.display().to_string();
        let invalid = |message: String| DumpError::Invalid { path: shown.clone(), message };
        let text = std::fs::read_to_string(path).map_err(|e| invalid(e.to_string()))?;
        let dump: SnapshotDump = serde_json::from_str(&text).map_err(|e| invalid(e.to_string()))?;
        if dump.format != FORMAT {
            return Err(invalid(format!("format is {:?}; this reads {FORMAT}", dump.format)));
        }
        if dump.account_id.len() != 12 || !dump.account_id.bytes().all(|b| b.is_ascii_digit()) {
            return Err(invalid(format!("account_id {:?} is not a 12-digit account id", dump.account_id)));
        }
        for (i, snapshot) in dump.snapshots.iter().enumerate() {
            if i > 0 && snapshot.captured_at <= dump.snapshots[i - 1].captured_at {
                return Err(invalid(format!("snapshots[{i}].captured_at: snapshots must be in time order")));
            }
            for (region, content) in &snapshot.regions {
                for kind in content.collected.iter().chain(content.resources.iter().map(|r| &r.resource_type)) {
                    if known_type(kind).is_none() {
                        return Err(invalid(format!(
                            "snapshots[{i}].regions.{region}: unknown resource type {kind:?}"
                        )));
                    }
                }
                for resource in &content.resources {
                    if !content.collected.contains(&resource.resource_type) {
                        return Err(invalid(format!(
                            "snapshots[{i}].regions.{region}: {} {} is of a type not listed in `collected`",
                            resource.resource_type, resource.id
                        )));
                    }
                    if !resource.config.is_object() {
                        return Err(invalid(format!(
                            "snapshots[{i}].regions.{region}: {}'s config is not an object",
                            resource.id
                        )));
                    }
                }
            }
        }
        Ok(dump)
    }

    /// Records every snapshot in order. Returns how many resource versions were written.
    pub async fn record(&self, pool: &PgPool) -> Result<u64, DumpError> {
        let mut versions = 0;
        for index in 0..self.snapshots.len() {
            versions += self.record_one(pool, index).await?;
        }
        Ok(versions)
    }

    /// Records snapshot `index` (after those before it), then links its changes to CloudTrail
    /// events already stored. Returns how many resource versions were written.
    pub async fn record_one(&self, pool: &PgPool, index: usize) -> Result<u64, DumpError> {
        let Some(snapshot) = self.snapshots.get(index) else { return Ok(0) };
        let previous_at = index.checked_sub(1).map(|i| self.snapshots[i].captured_at);
        let mut versions = 0;
        let mut tx = crate::db::begin(pool).await?;
        {
            for (region, content) in &snapshot.regions {
                let types: Vec<&'static str> = content.collected.iter().filter_map(|t| known_type(t)).collect();
                let resources: Vec<ResourceConfig> = content
                    .resources
                    .iter()
                    .filter_map(|r| {
                        Some(ResourceConfig {
                            resource_type: known_type(&r.resource_type)?,
                            resource_id: r.id.clone(),
                            region: region.clone(),
                            arn: r.arn.clone(),
                            name: r.name.clone(),
                            config: r.config.clone(),
                        })
                    })
                    .collect();
                // A region the previous snapshot did not have starts with a baseline.
                let before =
                    previous_at.filter(|_| index > 0 && self.snapshots[index - 1].regions.contains_key(region));
                let outcome = store::record_snapshot_at(
                    &mut tx,
                    &self.account_id,
                    region,
                    &types,
                    &resources,
                    before.is_none(),
                    before,
                    Some(snapshot.captured_at),
                )
                .await?;
                versions += outcome.versions();
            }
        }
        if let Some(first) = self.snapshots.first() {
            store::link_changes_since(&mut tx, &self.account_id, Some(first.captured_at - chrono::Duration::days(1)))
                .await?;
        }
        tx.commit().await?;
        Ok(versions)
    }
}
