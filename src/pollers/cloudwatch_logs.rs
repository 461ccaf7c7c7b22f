//! VPC flow logs (or CloudTrail events) in a CloudWatch Logs group, read with FilterLogEvents.
//!
//! Like LookupEvents, a window at a time (see `window`; log events can be ingested after their
//! timestamp). Records read twice are dropped by their hash key.

use std::path::PathBuf;
use std::sync::Arc;

use chrono::Utc;

use super::{Job, PollContext, PollError, RunOutcome};
use crate::aws::{AccountSession, AwsError};
use crate::geo::GeoCache;
use crate::ingest::{ParseContext, parse_log_messages};
use crate::pollers::rows::PageRows;
use crate::pollers::window::WindowCheckpoint;

pub async fn run(ctx: &PollContext, session: &AccountSession, job: &mut Job) -> Result<RunOutcome, PollError> {
    let client = session.logs(&job.region);
    let group = job.target.clone();
    let checkpoint = WindowCheckpoint::load(&job.checkpoint);
    let mut window = checkpoint.window(&ctx.options, Utc::now());
    let label = Arc::new(PathBuf::from(format!("cloudwatch-logs://{}/{group}", job.region)));
    let context = ParseContext { default_account: Some(job.account_id.clone()), flow_format: None, batch_rows: 10_000 };
    let mut geo = GeoCache::new(ctx.geo.clone());
    let mut outcome = RunOutcome::default();

    for _ in 0..ctx.options.max_pages_per_run.max(1) {
        let page = loop {
            let sent = client
                .filter_log_events()
                .log_group_name(&group)
                .start_time(window.start.timestamp_millis())
                .end_time(window.end.timestamp_millis())
                .set_next_token(window.next_token.clone())
                .send()
                .await;
            match sent {
                Ok(page) => break page,
                Err(error) => {
                    let error = AwsError::from_sdk("logs:FilterLogEvents", &job.region, error);
                    if !window.refused_token(&error, job.job_id) {
                        return Err(error.into());
                    }
                }
            }
        };
        let mut rows = PageRows::default();
        let messages = page.events().iter().filter_map(|e| Some((e.message()?, e.timestamp())));
        let report = parse_log_messages(
            messages,
            label.clone(),
            Some(job.account_id.clone()),
            &context,
            &mut geo,
            &mut |batch| {
                rows.add_batch(batch);
                true
            },
        );
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
