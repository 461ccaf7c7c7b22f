//! What an account's pollers poll: one job per (region, source, target), created and retired
//! as the account's settings change. `pollers` runs the jobs; this module only says which exist.

use std::time::Duration;

use sqlx::PgConnection;

/// What a job polls.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Source {
    /// Management events from CloudTrail's LookupEvents API.
    CloudTrailLookup,
    /// Trail files delivered to S3.
    CloudTrailS3,
    /// VPC flow log files delivered to S3.
    FlowLogsS3,
    /// VPC flow logs in a CloudWatch Logs group.
    FlowLogsCloudWatch,
    /// Security groups, instances, VPCs, flow-log settings, trails (regional) or IAM (global).
    ConfigSnapshot,
}

impl Source {
    pub fn as_str(self) -> &'static str {
        match self {
            Source::CloudTrailLookup => "cloudtrail-lookup",
            Source::CloudTrailS3 => "cloudtrail-s3",
            Source::FlowLogsS3 => "flowlogs-s3",
            Source::FlowLogsCloudWatch => "flowlogs-cloudwatch",
            Source::ConfigSnapshot => "config-snapshot",
        }
    }

    pub fn parse(value: &str) -> Option<Self> {
        [
            Source::CloudTrailLookup,
            Source::CloudTrailS3,
            Source::FlowLogsS3,
            Source::FlowLogsCloudWatch,
            Source::ConfigSnapshot,
        ]
        .into_iter()
        .find(|s| s.as_str() == value)
    }
}

/// A job to create for an account.
#[derive(Clone, Debug, PartialEq)]
pub struct JobSpec {
    pub region: String,
    pub source: Source,
    pub target: String,
    pub interval: Duration,
}

/// Creates the account's jobs that do not exist yet, and disables those no longer wanted
/// (their checkpoints are kept in case they come back).
pub async fn sync_jobs(conn: &mut PgConnection, account_id: &str, specs: &[JobSpec]) -> Result<(), sqlx::Error> {
    let regions: Vec<String> = specs.iter().map(|s| s.region.clone()).collect();
    let sources: Vec<String> = specs.iter().map(|s| s.source.as_str().to_owned()).collect();
    let targets: Vec<String> = specs.iter().map(|s| s.target.clone()).collect();
    let intervals: Vec<i32> = specs.iter().map(|s| s.interval.as_secs().min(i32::MAX as u64) as i32).collect();
    sqlx::query!(
        "INSERT INTO poll_jobs (account_id, region, source, target, interval_seconds)
         SELECT $1, * FROM unnest($2::text[], $3::text[], $4::text[], $5::int[])
         ON CONFLICT (account_id, region, source, target)
         DO UPDATE SET enabled = true, interval_seconds = EXCLUDED.interval_seconds",
        account_id,
        &regions,
        &sources,
        &targets,
        &intervals
    )
    .execute(&mut *conn)
    .await?;
    sqlx::query!(
        "UPDATE poll_jobs SET enabled = false
         WHERE account_id = $1 AND (region, source, target) NOT IN
             (SELECT * FROM unnest($2::text[], $3::text[], $4::text[]))",
        account_id,
        &regions,
        &sources,
        &targets
    )
    .execute(&mut *conn)
    .await?;
    Ok(())
}

