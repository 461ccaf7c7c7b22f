//! VPC flow logs (or CloudTrail events) in a CloudWatch Logs group, read with FilterLogEvents.
//!
//! Like LookupEvents, a window at a time (see `window`; log events can be ingested after their
//! timestamp). Records read twice are dropped by their hash key. Besides:
//! - lines are read with the `LogFormat` of the flow logs that deliver to the group (from the
//!   inventory's flow-log configs), so custom formats are parsed; until the inventory has seen
//!   the region's flow logs, a page with lines of unknown layout waits (for an hour at most)
//!   rather than being stored as errors;
//! - a group is read in the region it lives in: flow logs deliver to a group of their own
//!   region, so the job of another region skips a group the inventory places elsewhere;
//! - FilterLogEvents is paced per account and region, within its quota (5 requests per second),
//!   by every job of every worker process (see [`super::pacing`]).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};

use super::{Job, PollContext, PollError, RunOutcome, with_jitter};
use crate::aws::{AccountSession, AwsError};
use crate::geo::GeoCache;
use crate::ingest::flowlogs::FlowFormat;
use crate::ingest::{ParseContext, parse_log_messages};
use crate::inventory::collect::FLOW_LOG;
use crate::pollers::rows::PageRows;
use crate::pollers::window::{Window, WindowCheckpoint};

/// FilterLogEvents allows 5 requests per second per account and region.
const FILTER_MIN_INTERVAL: Duration = Duration::from_millis(200);
/// How long after a job's creation a page of unknown layout waits for the inventory.
const FORMAT_WAIT: Duration = Duration::from_secs(3600);
/// Log events are text lines: nothing is ever copied to disk to be read.
const NO_SPOOL: u64 = 0;

pub async fn run(ctx: &PollContext, session: &AccountSession, job: &mut Job) -> Result<RunOutcome, PollError> {
    let group = job.target.clone();
    let home = GroupHome::load(ctx, job, &group).await?;
    if home.lives_elsewhere(&job.region) {
        tracing::debug!(job_id = job.job_id, group, regions = ?home.regions, "log group lives in another region");
        return Ok(RunOutcome::default());
    }
    let client = session.logs(&job.region);
    let checkpoint = WindowCheckpoint::load(&job.checkpoint);
    let mut window = checkpoint.window(&ctx.options, Utc::now());
    let label = Arc::new(PathBuf::from(format!("cloudwatch-logs://{}/{group}", job.region)));
    let context = ParseContext::for_account(&job.account_id, home.formats.clone(), NO_SPOOL);
    let mut geo = GeoCache::new(ctx.geo.clone());
    let mut outcome = RunOutcome::default();

    for _ in 0..ctx.options.max_pages_per_run.max(1) {
        let page = filter_page(ctx, &client, job, &group, &mut window, &mut outcome).await?;
        let mut rows = PageRows::default();
        let messages = page.events().iter().filter_map(|e| Some((e.message()?, e.timestamp())));
        let owner = Some(job.account_id.clone());
        let report = parse_log_messages(messages, label.clone(), owner, &context, &mut geo, &mut |batch| {
            rows.add_batch(batch);
            true
        });
        if report.unknown_layouts > 0 && home.waits_for_inventory(ctx, job).await? {
            tracing::info!(
                job_id = job.job_id,
                group,
                lines = report.unknown_layouts,
                "flow log lines of unknown layout: waiting for the inventory's flow-log formats"
            );
            return Ok(outcome);
        }
        for error in report.errors {
            rows.reject(format!("{}: {error}", label.display()));
        }
        let next_token = page.next_token().filter(|t| !t.is_empty()).map(str::to_owned);
        let (saved, covered) = checkpoint.after_page(&window, next_token.as_deref());
        outcome.stored += rows.commit_with_checkpoint(ctx, job, saved, covered).await?;
        match next_token {
            Some(token) => window.next_token = Some(token),
            None => return Ok(outcome),
        }
    }
    outcome.more_pending = true;
    Ok(outcome)
}

/// One page of the window, paced, with back-off when throttled.
async fn filter_page(
    ctx: &PollContext,
    client: &aws_sdk_cloudwatchlogs::Client,
    job: &mut Job,
    group: &str,
    window: &mut Window,
    outcome: &mut RunOutcome,
) -> Result<aws_sdk_cloudwatchlogs::operation::filter_log_events::FilterLogEventsOutput, PollError> {
    let mut attempt = 0;
    loop {
        super::pacing::pace(&ctx.pool, "logs:FilterLogEvents", &job.account_id, &job.region, FILTER_MIN_INTERVAL)
            .await?;
        let sent = client
            .filter_log_events()
            .log_group_name(group)
            .start_time(window.start.timestamp_millis())
            .end_time(window.end.timestamp_millis())
            .set_next_token(window.next_token.clone())
            .send()
            .await;
        let error = match sent {
            Ok(page) => return Ok(page),
            Err(error) => AwsError::from_sdk("logs:FilterLogEvents", &job.region, error),
        };
        if window.refused_token(&error, job.job_id) {
            continue;
        }
        if !error.is_throttling() || attempt >= ctx.options.max_throttle_retries {
            return Err(error.into());
        }
        outcome.throttled += 1;
        job.throttled += 1;
        let delay = with_jitter(ctx.options.throttle_backoff * 2u32.saturating_pow(attempt));
        tracing::info!(job_id = job.job_id, attempt, delay_ms = delay.as_millis() as u64, "FilterLogEvents throttled");
        attempt += 1;
        tokio::time::sleep(delay).await;
    }
}

/// What the inventory says of a log group: where its flow logs are, and their formats.
struct GroupHome {
    /// Regions whose flow logs deliver to a group of this name.
    regions: Vec<String>,
    /// The `LogFormat`s of the job region's flow logs into the group, current ones first.
    formats: Vec<FlowFormat>,
}

impl GroupHome {
    async fn load(ctx: &PollContext, job: &Job, group: &str) -> Result<Self, sqlx::Error> {
        let rows = sqlx::query!(
            r#"SELECT region, config->>'log_format' AS log_format FROM resources
               WHERE account_id = $1 AND resource_type = $2 AND config->>'log_group_name' = $3
               ORDER BY deleted_at IS NULL DESC, last_changed DESC"#,
            job.account_id,
            FLOW_LOG,
            group
        )
        .fetch_all(&ctx.pool)
        .await?;
        let mut home = Self { regions: Vec::new(), formats: Vec::new() };
        for row in rows {
            if !home.regions.contains(&row.region) {
                home.regions.push(row.region.clone());
            }
            let format = row.log_format.filter(|_| row.region == job.region).and_then(|f| FlowFormat::parse(&f).ok());
            if let Some(format) = format.filter(|f| !home.formats.contains(f)) {
                home.formats.push(format);
            }
        }
        Ok(home)
    }

    /// Whether the inventory places the group's flow logs in other regions only.
    fn lives_elsewhere(&self, region: &str) -> bool {
        !self.regions.is_empty() && !self.regions.iter().any(|r| r == region)
    }

    /// Whether lines of unknown layout should wait: the inventory has not collected the
    /// region's flow logs yet (their formats may be custom), and the job is new.
    async fn waits_for_inventory(&self, ctx: &PollContext, job: &Job) -> Result<bool, sqlx::Error> {
        let row = sqlx::query!(
            r#"SELECT (SELECT collected_at FROM resource_collections
                       WHERE account_id = $1 AND region = $2 AND resource_type = $3) AS collected_at,
                      (SELECT created_at FROM poll_jobs WHERE job_id = $4) AS created_at"#,
            job.account_id,
            job.region,
            FLOW_LOG,
            job.job_id
        )
        .fetch_one(&ctx.pool)
        .await?;
        let young =
            |created: DateTime<Utc>| Utc::now() - created < chrono::Duration::from_std(FORMAT_WAIT).unwrap_or_default();
        Ok(row.collected_at.is_none() && row.created_at.is_some_and(young))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_group_known_in_other_regions_only_is_skipped() {
        let home = GroupHome { regions: vec!["eu-west-1".into()], formats: Vec::new() };
        assert!(home.lives_elsewhere("us-east-1"));
        assert!(!home.lives_elsewhere("eu-west-1"));
        let unknown = GroupHome { regions: Vec::new(), formats: Vec::new() };
        assert!(!unknown.lives_elsewhere("us-east-1"), "unknown to the inventory: polled");
    }
}
