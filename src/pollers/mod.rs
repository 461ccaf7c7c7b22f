//! Pollers keep onboarded accounts current: one job per (account, region, source), leased by
//! whichever worker is free (see `jobs`), each run resuming from a checkpoint that is committed
//! with the data it covers, so a crash never loses or repeats records.
//!
//! The orchestration layer under `serve` and `worker`: it imports the stages it drives
//! (`accounts`, `aws`, `ingest`, `inventory`, `detect`, `posture`) and nothing imports it but
//! `http` and the binary.

pub mod cloudwatch_logs;
pub mod findings;
pub mod jobs;
pub mod log_archive;
pub mod lookup_events;
pub mod organization;
pub mod pacing;
pub mod regions;
pub mod rows;
pub mod s3_objects;
pub mod snapshot;
pub mod sqs;
pub mod window;
pub mod worker;

use std::sync::Arc;
use std::time::Duration;

use aws_types::SdkConfig;
use sqlx::PgPool;

use crate::accounts::AccountError;
pub use crate::accounts::schedule::Source;
use crate::aws::{AwsError, AwsSettings};
use crate::db::partitions::PartitionCache;
use crate::geo::GeoDb;
pub use jobs::{Job, RunOutcome};

#[derive(Debug, thiserror::Error)]
pub enum PollError {
    #[error(transparent)]
    Aws(#[from] AwsError),
    #[error(transparent)]
    Account(#[from] AccountError),
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
    #[error("the job's lease expired and another worker took it over; this run's last page was rolled back")]
    LeaseLost,
    #[error("{0}")]
    Target(String),
}

/// Knobs of the pollers; the defaults suit AWS, tests shorten the waits.
#[derive(Clone, Debug)]
pub struct PollOptions {
    /// How far back LookupEvents reads on a job's first run (it keeps 90 days).
    pub lookback: Duration,
    /// How far back each LookupEvents run re-reads, for events CloudTrail makes visible late.
    pub overlap: Duration,
    /// Least time between two LookupEvents requests of one job (the API allows 2 per second
    /// per account and region).
    pub lookup_min_interval: Duration,
    /// First wait after a throttling answer; doubled on each retry, with jitter.
    pub throttle_backoff: Duration,
    pub max_throttle_retries: u32,
    /// Pages (or objects) one run handles before it yields the worker to other jobs.
    pub max_pages_per_run: usize,
    /// How long a lease lasts without renewal.
    pub lease: Duration,
}

impl Default for PollOptions {
    fn default() -> Self {
        Self {
            lookback: Duration::from_secs(90 * 24 * 3600),
            overlap: Duration::from_secs(15 * 60),
            lookup_min_interval: Duration::from_millis(550),
            throttle_backoff: Duration::from_secs(1),
            max_throttle_retries: 8,
            max_pages_per_run: 200,
            lease: Duration::from_secs(300),
        }
    }
}

/// What every job run needs.
#[derive(Clone)]
pub struct PollContext {
    pub pool: PgPool,
    /// Skywarden's own AWS configuration (its credentials).
    pub base: SdkConfig,
    pub settings: AwsSettings,
    pub options: PollOptions,
    pub geo: Option<Arc<GeoDb>>,
    pub partitions: Arc<PartitionCache>,
}

/// A delay of `base` scaled by a random factor in [0.5, 1.5), so workers that were throttled
/// together do not retry together.
pub fn with_jitter(base: Duration) -> Duration {
    let mut bytes = [0u8; 4];
    let fraction = match getrandom::fill(&mut bytes) {
        Ok(()) => u32::from_le_bytes(bytes) as f64 / u32::MAX as f64,
        Err(_) => 0.5,
    };
    base.mul_f64(0.5 + fraction)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sources_round_trip_their_names() {
        for source in Source::ALL {
            assert_eq!(Source::parse(source.as_str()), Some(source));
        }
        assert_eq!(Source::parse("nope"), None);
    }

    #[test]
    fn jitter_stays_within_half_and_one_and_a_half() {
        for _ in 0..100 {
            let delay = with_jitter(Duration::from_millis(1000));
            assert!(delay >= Duration::from_millis(500) && delay < Duration::from_millis(1500), "{delay:?}");
        }
    }
}
