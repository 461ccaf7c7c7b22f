//! CloudTrail LookupEvents: management events of one region, newest first, 50 a page.
//!
//! Each run reads a window (see `window`): from the last covered time less an overlap
//! (CloudTrail can make an event visible several minutes after it happened) up to the run's
//! start, checkpointing window and page token with every page's events. Events read twice are
//! dropped by the events table's key (account, event time, event id), so an event that also
//! arrives in a trail file, or through another job, is stored once.
//!
//! The job whose target is `global-services` reads the global-events region (us-east-1) for an
//! account that does not poll it, and keeps only global services' events (IAM, STS, sign-in,
//! CloudFront, ...), which CloudTrail shows in that region alone.

use std::time::Instant;

use chrono::Utc;

use super::{PollContext, PollError, RunOutcome, with_jitter};
use crate::accounts::schedule::GLOBAL_SERVICES_TARGET;
use crate::aws::{AccountSession, AwsError, GLOBAL_SERVICE_EVENT_SOURCES};
use crate::geo::GeoCache;
use crate::ingest::cloudtrail::CloudTrailEvent;
use crate::pollers::Job;
use crate::pollers::rows::PageRows;
use crate::pollers::window::WindowCheckpoint;

const PAGE_SIZE: i32 = 50;

pub async fn run(ctx: &PollContext, session: &AccountSession, job: &mut Job) -> Result<RunOutcome, PollError> {
    let client = session.cloudtrail_without_retries(&job.region);
    let checkpoint = WindowCheckpoint::load(&job.checkpoint);
    let mut window = checkpoint.window(&ctx.options, Utc::now());
    let mut outcome = RunOutcome::default();
    let mut geo = GeoCache::new(ctx.geo.clone());
    let mut last_request: Option<Instant> = None;
    let global_services_only = job.target == GLOBAL_SERVICES_TARGET;

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
                    if window.refused_token(&error, job.job_id) {
                        continue;
                    }
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
            if global_services_only && !is_global_service(event) {
                continue;
            }
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

/// Whether an event comes from a global service (IAM, STS, sign-in, ...), by its source.
fn is_global_service(event: &aws_sdk_cloudtrail::types::Event) -> bool {
    event.event_source().is_some_and(|source| GLOBAL_SERVICE_EVENT_SOURCES.contains(&source))
}
