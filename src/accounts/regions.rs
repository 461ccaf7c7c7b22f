//! The account's enabled regions, from `ec2:DescribeRegions`: found when its role is tested
//! (`accounts add`, `accounts test`) and daily by its `regions` job. They decide its regional
//! jobs: every enabled region, within the restriction the user gave (`--regions`), if any.
//!
//! A failed or empty answer changes nothing: not seeing a region is not a reason to stop
//! watching it. Retired jobs keep their checkpoints, so a region enabled again resumes.

use serde::Serialize;
use sqlx::{PgConnection, PgPool};

use super::{AccountError, load_in, schedule, validate_region};
use crate::aws::{AccountSession, AwsError};

/// What a discovery found and changed.
#[derive(Clone, Debug, Default, Serialize, PartialEq, utoipa::ToSchema)]
pub struct RegionChange {
    /// The account's enabled regions, as DescribeRegions named them.
    pub enabled: Vec<String>,
    /// Regions now polled that were not before.
    pub added: Vec<String>,
    /// Regions no longer polled (their jobs are disabled, their checkpoints kept).
    pub retired: Vec<String>,
}

/// The regions the account has enabled, asked in `region` (any enabled region answers for all).
pub async fn discover(session: &AccountSession, region: &str) -> Result<Vec<String>, AwsError> {
    // AllRegions: the opt-in regions the account has not enabled are listed too, with their
    // status, so an answer without them is distinguishable from one that lost them.
    let answer = session
        .ec2(region)
        .describe_regions()
        .all_regions(true)
        .send()
        .await
        .map_err(|e| AwsError::from_sdk("ec2:DescribeRegions", region, e))?;
    Ok(enabled_names(answer.regions().iter().map(|r| (r.region_name(), r.opt_in_status()))))
}

/// Discovers the account's regions with its role and records them (see [`record`]).
pub async fn discover_and_record(
    pool: &PgPool,
    session: &AccountSession,
    region: &str,
    account_id: &str,
) -> Result<RegionChange, AccountError> {
    let enabled = discover(session, region).await.map_err(AccountError::DescribeRegions)?;
    let mut tx = crate::db::begin(pool).await?;
    let change = record(&mut tx, account_id, &enabled).await?;
    tx.commit().await?;
    Ok(change)
}

/// The regions usable by the account: those that need no opt-in and those it opted in to
/// (`not-opted-in` ones are not), sorted; names that are not region names are dropped.
pub fn enabled_names<'a>(regions: impl IntoIterator<Item = (Option<&'a str>, Option<&'a str>)>) -> Vec<String> {
    let mut names: Vec<String> = regions
        .into_iter()
        .filter(|(_, status)| matches!(status, Some("opt-in-not-required" | "opted-in")))
        .filter_map(|(name, _)| name)
        .filter(|name| validate_region(name).is_ok())
        .map(str::to_owned)
        .collect();
    names.sort();
    names.dedup();
    names
}

/// Stores the account's enabled regions and creates and retires its regional jobs to match.
/// Refuses an empty list (an answer that lost every region is not believed).
pub async fn record(
    conn: &mut PgConnection,
    account_id: &str,
    enabled: &[String],
) -> Result<RegionChange, AccountError> {
    if enabled.is_empty() {
        return Err(AccountError::NoRegions);
    }
    // One discovery at a time per account (the daily job and an `accounts test`).
    let locked = sqlx::query_scalar!(
        "SELECT account_id FROM accounts WHERE account_id = $1 AND role_arn IS NOT NULL FOR UPDATE",
        account_id
    )
    .fetch_optional(&mut *conn)
    .await?;
    if locked.is_none() {
        return Err(AccountError::NotOnboarded(account_id.to_owned()));
    }
    let before = load_in(conn, account_id).await?;
    sqlx::query!(
        "UPDATE accounts SET enabled_regions = $2, regions_discovered_at = now() WHERE account_id = $1",
        account_id,
        enabled
    )
    .execute(&mut *conn)
    .await?;
    let after = load_in(conn, account_id).await?;
    schedule::sync_jobs(conn, account_id, &after.job_specs()).await?;
    let missing = |from: &[String], to: &[String]| from.iter().filter(|r| !to.contains(r)).cloned().collect();
    let change = RegionChange {
        enabled: enabled.to_vec(),
        added: missing(&after.polled_regions, &before.polled_regions),
        retired: missing(&before.polled_regions, &after.polled_regions),
    };
    if !change.added.is_empty() || !change.retired.is_empty() {
        tracing::info!(account_id, added = ?change.added, retired = ?change.retired, "the account's regions changed");
    }
    Ok(change)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn enabled_regions_are_those_needing_no_opt_in_and_those_opted_in() {
        let answer = [
            (Some("us-east-1"), Some("opt-in-not-required")),
            (Some("ap-east-1"), Some("opted-in")),
            (Some("me-south-1"), Some("not-opted-in")),
            (Some("eu-west-1"), Some("opt-in-not-required")),
            (Some("af-south-1"), None),
            (None, Some("opted-in")),
            (Some("not a region"), Some("opted-in")),
            (Some("eu-west-1"), Some("opt-in-not-required")),
        ];
        assert_eq!(enabled_names(answer), ["ap-east-1", "eu-west-1", "us-east-1"]);
    }
}
