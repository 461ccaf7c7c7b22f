//! Config snapshots: the current state of security groups, instances, VPCs, flow-log
//! configurations, trails and IAM, stored as resource versions with a diff for each change.
//!
//! The inventory: [`collect`] reads AWS (one file per service) and converts SDK types into
//! [`ResourceConfig`]s (pure conversion), [`store`] versions them, [`diff`] compares versions,
//! [`dump`] replays snapshots kept in a file. Imports `aws`, `db` and `model`; never `ingest`,
//! `detect` or `posture` (they read the inventory, not the reverse).

#[cfg(feature = "aws")]
pub mod collect;
pub mod diff;
pub mod dump;
pub mod resource_types;
pub mod store;

use serde_json::Value;

/// One resource as seen by one snapshot.
#[derive(Clone, Debug, PartialEq)]
pub struct ResourceConfig {
    /// `service:kind`, e.g. `ec2:security-group`, `iam:role`.
    pub resource_type: &'static str,
    /// The id an analyst searches for: `sg-…`, `i-…`, `vpc-…`, `fl-…`, a user or role name, a
    /// trail or policy ARN.
    pub resource_id: String,
    /// The region, or `global` for IAM.
    pub region: String,
    pub arn: Option<String>,
    pub name: Option<String>,
    /// The configuration as a JSON object with deterministic content: arrays whose order AWS
    /// does not define are sorted. A top-level `observed` member holds values that change
    /// without anyone changing the resource (last-used dates, instance state): it is stored but
    /// not compared.
    pub config: Value,
}

pub use crate::model::GLOBAL_REGION;
