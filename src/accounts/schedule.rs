//! What an account's pollers poll: one job per (region, source, target), created and retired
//! as the account's settings change. `pollers` runs the jobs; this module only says which exist.

use std::time::Duration;

use sqlx::PgConnection;

/// What a job polls.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Source {
    /// Management events from CloudTrail's LookupEvents API.
    CloudTrailLookup,
    /// Trail files delivered to S3.
    CloudTrailS3,
    /// VPC flow log files delivered to S3.
    FlowLogsS3,
    /// VPC flow logs in a CloudWatch Logs group.
    FlowLogsCloudWatch,
    /// Security groups, instances, VPCs, flow-log settings (regional) or IAM and trails (global).
    ConfigSnapshot,
    /// The account's enabled regions (`ec2:DescribeRegions`), which decide its regional jobs.
    Regions,
    /// Trail files announced on an SQS queue by S3 event notifications (near-real-time).
    CloudTrailSqs,
    /// Flow log files announced on an SQS queue.
    FlowLogsSqs,
    /// An organization's member accounts (`organizations:ListAccounts`), which decide the
    /// members onboarded and those suspended.
    Organization,
    /// A central log archive's trail files: every member's, read once, each event stored under
    /// its own account.
    CloudTrailArchive,
    /// GuardDuty findings of one region (`pollers::findings`), imported as alerts.
    GuardDutyFindings,
    /// Security Hub findings (ASFF) of one region, imported as alerts.
    SecurityHubFindings,
}

/// The target of a Security Hub findings job that leaves out the GuardDuty findings Security Hub
/// relays, because the account imports them from GuardDuty itself.
pub const WITHOUT_GUARDDUTY_TARGET: &str = "without-guardduty";

/// The target of the LookupEvents job in the global-events region when the account does not
/// poll that region: it keeps only the events of global services (IAM, STS, sign-in, ...).
pub const GLOBAL_SERVICES_TARGET: &str = "global-services";

impl Source {
    pub const ALL: [Source; 12] = [
        Source::CloudTrailLookup,
        Source::CloudTrailS3,
        Source::FlowLogsS3,
        Source::FlowLogsCloudWatch,
        Source::ConfigSnapshot,
        Source::Regions,
        Source::CloudTrailSqs,
        Source::FlowLogsSqs,
        Source::Organization,
        Source::CloudTrailArchive,
        Source::GuardDutyFindings,
        Source::SecurityHubFindings,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Source::CloudTrailLookup => "cloudtrail-lookup",
            Source::CloudTrailS3 => "cloudtrail-s3",
            Source::FlowLogsS3 => "flowlogs-s3",
            Source::FlowLogsCloudWatch => "flowlogs-cloudwatch",
            Source::ConfigSnapshot => "config-snapshot",
            Source::Regions => "regions",
            Source::CloudTrailSqs => "cloudtrail-sqs",
            Source::FlowLogsSqs => "flowlogs-sqs",
            Source::Organization => "organization",
            Source::CloudTrailArchive => "cloudtrail-archive",
            Source::GuardDutyFindings => "guardduty-findings",
            Source::SecurityHubFindings => "securityhub-findings",
        }
    }

    pub fn parse(value: &str) -> Option<Self> {
        Source::ALL.into_iter().find(|s| s.as_str() == value)
    }

    /// How often its jobs run unless the account says otherwise.
    pub fn default_interval(self) -> Duration {
        Duration::from_secs(match self {
            Source::CloudTrailLookup
            | Source::CloudTrailS3
            | Source::FlowLogsS3
            | Source::FlowLogsCloudWatch
            | Source::CloudTrailArchive
            | Source::GuardDutyFindings
            | Source::SecurityHubFindings => 300,
            Source::ConfigSnapshot => 900,
            // Regions are enabled rarely, and a new one is caught within a day.
            // Accounts join and leave an organization rarely; a new one is caught within a day.
            Source::Regions | Source::Organization => 24 * 3600,
            // A queue job is due again a second after a run: its runs are long-polls, so it
            // waits on the queue, not on the schedule (see `pollers::sqs`).
            Source::CloudTrailSqs | Source::FlowLogsSqs => 1,
        })
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
/// (their checkpoints are kept in case they come back). A job that comes back is due at once,
/// and resumes from its checkpoint; a shorter interval applies from now, not after the next run.
pub async fn sync_jobs(conn: &mut PgConnection, account_id: &str, specs: &[JobSpec]) -> Result<(), sqlx::Error> {
    let regions: Vec<String> = specs.iter().map(|s| s.region.clone()).collect();
    let sources: Vec<String> = specs.iter().map(|s| s.source.as_str().to_owned()).collect();
    let targets: Vec<String> = specs.iter().map(|s| s.target.clone()).collect();
    let intervals: Vec<i32> = specs.iter().map(|s| s.interval.as_secs().min(i32::MAX as u64) as i32).collect();
    sqlx::query!(
        "INSERT INTO poll_jobs (account_id, region, source, target, interval_seconds)
         SELECT $1, * FROM unnest($2::text[], $3::text[], $4::text[], $5::int[])
         ON CONFLICT (account_id, region, source, target)
         DO UPDATE SET enabled = true, interval_seconds = EXCLUDED.interval_seconds,
             next_run_at = CASE WHEN NOT poll_jobs.enabled THEN now()
                 ELSE LEAST(poll_jobs.next_run_at, now() + make_interval(secs => EXCLUDED.interval_seconds)) END",
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
