//! CloudTrail LookupEvents: management events of one region, newest first, 50 a page.
//!
//! Each run reads a window [start, end): from the last covered time less an overlap (CloudTrail
//! can make an event visible several minutes after it happened) up to the run's start. The
//! window and the page token are checkpointed after every page, with that page's events, so a
//! run killed between pages resumes at the next page. Events read twice are dropped by the
//! events table's key.

use std::time::Instant;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::{PollContext, PollError, RunOutcome, with_jitter};
use crate::aws::{AccountSession, AwsError};
use crate::geo::GeoCache;
use crate::ingest::cloudtrail::CloudTrailEvent;
use crate::pollers::Job;
use crate::pollers::rows::PageRows;

#[derive(Debug, Default, Serialize, Deserialize, PartialEq)]
struct Checkpoint {
    /// Every event before this time has been read.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    covered_until: Option<DateTime<Utc>>,
    /// The window being read, if a run stopped inside one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    window: Option<Window>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
struct Window {
    start: DateTime<Utc>,
    end: DateTime<Utc>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    next_token: Option<String>,
}

const PAGE_SIZE: i32 = 50;

pub async fn run(ctx: &PollContext, session: &AccountSession, job: &mut Job) -> Result<RunOutcome, PollError> {
    let client = session.cloudtrail_without_retries(&job.region);
    let checkpoint: Checkpoint = serde_json::from_value(job.checkpoint.clone()).unwrap_or_default();
    let covered_until = checkpoint.covered_until;
    let mut window = checkpoint.window.unwrap_or_else(|| {
        let end = Utc::now();
        let start = match covered_until {
            Some(covered) => covered - ctx.options.overlap,
            None => end - ctx.options.lookback,
        };
        Window { start, end, next_token: None }
    });
    let mut outcome = RunOutcome::default();
    let mut geo = GeoCache::new(ctx.geo.clone());
    let mut last_request: Option<Instant> = None;

    for _ in 0..ctx.options.max_pages_per_run.max(1) {
        let mut attempt = 0;
        let page = loop {
            if let Some(previous) = last_request {
                let wait = ctx.options.lookup_min_interval.saturating_sub(previous.elapsed());
                if !wait.is_zero() {
                    tokio::time::sleep(wait).await;
                }
            }
            last_request = Some(Instant::now());
            let sent = client
                .lookup_events()
                .start_time(aws_smithy_types::DateTime::from_millis(window.start.timestamp_millis()))
                .end_time(aws_smithy_types::DateTime::from_millis(window.end.timestamp_millis()))
                .max_results(PAGE_SIZE)
                .set_next_token(window.next_token.clone())
                .send()
                .await;
            match sent {
                Ok(page) => break page,
                Err(error) => {
                    let error = AwsError::from_sdk("cloudtrail:LookupEvents", &job.region, error);
                    if !error.is_throttling() || attempt >= ctx.options.max_throttle_retries {
                        return Err(error.into());
                    }
                    outcome.throttled += 1;
                    job.throttled += 1;
                    let delay = with_jitter(ctx.options.throttle_backoff * 2u32.saturating_pow(attempt));
                    tracing::info!(
                        job_id = job.job_id,
                        attempt,
                        delay_ms = delay.as_millis() as u64,
                        "LookupEvents throttled; backing off"
                    );
                    attempt += 1;
                    tokio::time::sleep(delay).await;
                }
            }
        };

        let mut rows = PageRows::default();
        for event in page.events() {
            let Some(raw) = event.cloud_trail_event() else {
                rows.reject(format!("event {} has no CloudTrailEvent", event.event_id().unwrap_or("?")));
                continue;
            };
            match CloudTrailEvent::parse(raw, Some(&job.account_id)) {
                Ok(parsed) => rows.add_event(&parsed, &mut geo),
                Err(error) => rows.reject(format!("event {}: {error}", event.event_id().unwrap_or("?"))),
            }
        }
        let next_token = page.next_token().filter(|t| !t.is_empty()).map(str::to_owned);
        let (next_checkpoint, covered) = match &next_token {
            Some(token) => (
                Checkpoint {
                    covered_until,
                    window: Some(Window { next_token: Some(token.clone()), ..window.clone() }),
                },
                None,
            ),
            None => (Checkpoint { covered_until: Some(window.end), window: None }, Some(window.end)),
        };
        let checkpoint = serde_json::to_value(&next_checkpoint).expect("checkpoint serialises");
        rows.prepare(ctx).await?;
        let mut tx = ctx.pool.begin().await?;
        let stored = rows.store(&mut tx).await?;
        job.save_checkpoint(&mut tx, checkpoint, covered, stored).await?;
        tx.commit().await?;
        rows.log_rejected(job);
        outcome.stored += stored;
        match next_token {
            Some(token) => window.next_token = Some(token),
            None => return Ok(outcome),
        }
    }
    outcome.more_pending = true;
    Ok(outcome)
}
