//! Poll jobs in PostgreSQL: leases shared by any number of workers, checkpoints saved with the
//! data they cover, and the status `accounts status` shows.

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::Value;
use sqlx::{PgConnection, PgPool};

use super::{PollError, Source};

/// A job leased by one worker.
#[derive(Clone, Debug)]
pub struct Job {
    pub job_id: i64,
    pub account_id: String,
    pub region: String,
    pub source: Source,
    pub target: String,
    pub interval: Duration,
    pub checkpoint: Value,
    /// The worker holding the lease.
    pub owner: String,
    pub lease: Duration,
    /// Throttling answers this run received (recorded even when the run fails).
    pub throttled: u64,
}

/// Leases the most overdue job, if any is due and not parked. `FOR UPDATE SKIP LOCKED` lets
/// workers claim at the same moment without waiting on each other; the lease makes the claim
/// outlive this statement, and expires if the worker dies.
pub async fn claim_due(pool: &PgPool, owner: &str, lease: Duration) -> Result<Option<Job>, sqlx::Error> {
    let row = sqlx::query!(
        r#"UPDATE poll_jobs SET lease_owner = $1, lease_expires_at = now() + make_interval(secs => $2),
                last_started_at = now()
           WHERE job_id = (
               SELECT p.job_id FROM poll_jobs p JOIN accounts a USING (account_id)
               WHERE p.enabled AND a.enabled AND p.parked_at IS NULL AND p.next_run_at <= now()
                 AND (p.lease_expires_at IS NULL OR p.lease_expires_at < now())
               ORDER BY p.next_run_at
               LIMIT 1
               FOR UPDATE OF p SKIP LOCKED)
           RETURNING job_id, account_id, region, source, target, interval_seconds, checkpoint"#,
        owner,
        lease.as_secs_f64(),
    )
    .fetch_optional(pool)
    .await?;
    let Some(row) = row else { return Ok(None) };
    let Some(source) = Source::parse(&row.source) else {
        // A job written by a newer release: leave it to a worker that knows it.
        tracing::warn!(job_id = row.job_id, source = %row.source, "unknown poll job source; skipping");
        release(pool, row.job_id, owner, Duration::from_secs(3600)).await?;
        return Ok(None);
    };
    Ok(Some(Job {
        job_id: row.job_id,
        account_id: row.account_id,
        region: row.region,
        source,
        target: row.target,
        interval: Duration::from_secs(row.interval_seconds.max(1) as u64),
        checkpoint: row.checkpoint,
        owner: owner.to_owned(),
        lease,
        throttled: 0,
    }))
}

/// How long until the next job a worker could claim is due (zero if one is due now), or `None`
/// when none is scheduled. Mirrors `claim_due`'s conditions, so an idle worker sleeps until a
/// job's slot, not a fixed poll interval past it; a running job counts from its lease's end.
pub async fn next_due_in(pool: &PgPool) -> Result<Option<Duration>, sqlx::Error> {
    let seconds = sqlx::query_scalar!(
        r#"SELECT EXTRACT(EPOCH FROM p.next_run_at - now())::float8 AS "seconds!"
           FROM poll_jobs p JOIN accounts a USING (account_id)
           WHERE p.enabled AND a.enabled AND p.parked_at IS NULL
             AND (p.lease_expires_at IS NULL OR p.lease_expires_at < now())
           ORDER BY p.next_run_at
           LIMIT 1"#
    )
    .fetch_optional(pool)
    .await?;
    Ok(seconds.map(|s| Duration::from_secs_f64(s.max(0.0))))
}

async fn release(pool: &PgPool, job_id: i64, owner: &str, delay: Duration) -> Result<(), sqlx::Error> {
    sqlx::query!(
        "UPDATE poll_jobs SET lease_owner = NULL, lease_expires_at = NULL,
                next_run_at = now() + make_interval(secs => $3)
         WHERE job_id = $1 AND lease_owner = $2",
        job_id,
        owner,
        delay.as_secs_f64()
    )
    .execute(pool)
    .await?;
    Ok(())
}

impl Job {
    /// Saves the checkpoint inside the transaction that stored the data it covers, and renews
    /// the lease. Fails with `LeaseLost` if another worker took the job (our lease expired):
    /// the caller's transaction must then roll back, so the data is stored once.
    pub async fn save_checkpoint(
        &mut self,
        tx: &mut PgConnection,
        checkpoint: Value,
        covered_until: Option<DateTime<Utc>>,
        items: u64,
    ) -> Result<(), PollError> {
        let updated = sqlx::query!(
            "UPDATE poll_jobs SET checkpoint = $3, covered_until = GREATEST(covered_until, $4),
                    items_total = items_total + $5, lease_expires_at = now() + make_interval(secs => $6)
             WHERE job_id = $1 AND lease_owner = $2 AND lease_expires_at > clock_timestamp()",
            self.job_id,
            self.owner,
            checkpoint,
            covered_until,
            items as i64,
            self.lease.as_secs_f64(),
        )
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if updated == 0 {
            return Err(PollError::LeaseLost);
        }
        self.checkpoint = checkpoint;
        Ok(())
    }

    /// Records a finished run and schedules the next: at the interval, at once when the run
    /// stopped with work left (a long backfill yields between runs) or a user asked for a run
    /// while this one ran ("poll now"), or after a back-off that grows with consecutive failures.
    pub async fn finish(&self, pool: &PgPool, result: &Result<RunOutcome, PollError>) -> Result<(), sqlx::Error> {
        match result {
            Ok(outcome) => {
                let delay = if outcome.more_pending { Duration::ZERO } else { self.interval };
                sqlx::query!(
                    "UPDATE poll_jobs SET lease_owner = NULL, lease_expires_at = NULL, last_success_at = now(),
                            last_error = NULL, consecutive_failures = 0, consecutive_panics = 0,
                            throttled_total = throttled_total + $3,
                            next_run_at = CASE WHEN run_requested_at > last_started_at THEN now()
                                               ELSE now() + make_interval(secs => $4) END
                     WHERE job_id = $1 AND lease_owner = $2",
                    self.job_id,
                    self.owner,
                    self.throttled as i64,
                    delay.as_secs_f64(),
                )
                .execute(pool)
                .await?;
            }
            Err(error) => {
                sqlx::query!(
                    "UPDATE poll_jobs SET lease_owner = NULL, lease_expires_at = NULL, last_error = $3,
                            last_error_at = now(), consecutive_failures = consecutive_failures + 1,
                            consecutive_panics = 0, throttled_total = throttled_total + $5,
                            next_run_at = CASE WHEN run_requested_at > last_started_at THEN now()
                                ELSE now() + make_interval(secs => LEAST($4 * power(2, LEAST(consecutive_failures, 6)), 3600)) END
                     WHERE job_id = $1 AND lease_owner = $2",
                    self.job_id,
                    self.owner,
                    error.to_string(),
                    RETRY_BASE.as_secs_f64(),
                    self.throttled as i64,
                )
                .execute(pool)
                .await?;
            }
        }
        Ok(())
    }

    /// Records a run that panicked: a failure like any other (lease released, back-off, the
    /// panic as `last_error`), and the [`PARK_AFTER_PANICS`]th panic in a row parks the job.
    /// Returns whether it is parked now.
    pub async fn finish_panicked(&self, pool: &PgPool, error: &str) -> Result<bool, sqlx::Error> {
        let parked = sqlx::query_scalar!(
            r#"UPDATE poll_jobs SET lease_owner = NULL, lease_expires_at = NULL, last_error = $3,
                      last_error_at = now(), consecutive_failures = consecutive_failures + 1,
                      consecutive_panics = consecutive_panics + 1, throttled_total = throttled_total + $5,
                      parked_at = CASE WHEN consecutive_panics + 1 >= $6 THEN now() END,
                      next_run_at = CASE WHEN run_requested_at > last_started_at THEN now()
                          ELSE now() + make_interval(secs => LEAST($4 * power(2, LEAST(consecutive_failures, 6)), 3600)) END
               WHERE job_id = $1 AND lease_owner = $2
               RETURNING parked_at IS NOT NULL AS "parked!""#,
            self.job_id,
            self.owner,
            error,
            RETRY_BASE.as_secs_f64(),
            self.throttled as i64,
            PARK_AFTER_PANICS,
        )
        .fetch_optional(pool)
        .await?;
        Ok(parked.unwrap_or(false))
    }
}

/// First delay after a failure; doubled for each further failure, up to an hour.
const RETRY_BASE: Duration = Duration::from_secs(30);

/// Panics in a row after which a job is parked: a bug that a job's input sets off every time is
/// not retried for ever, and shows as parked, with its panic, until someone asks for a run.
pub const PARK_AFTER_PANICS: i32 = 3;

/// What one run of a job did.
#[derive(Debug, Default, Clone, Serialize)]
pub struct RunOutcome {
    /// New rows stored (events, flow records, resource versions).
    pub stored: u64,
    /// The run stopped before catching up; run again at once.
    pub more_pending: bool,
    /// Throttling answers received (and waited out).
    pub throttled: u64,
}

/// The state of one job, for `accounts status` and the API.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct JobStatus {
    pub job_id: i64,
    pub account_id: String,
    pub region: String,
    pub source: String,
    pub target: String,
    pub enabled: bool,
    pub interval_seconds: i32,
    /// When the job runs next (a disabled job does not run).
    pub next_run_at: DateTime<Utc>,
    /// The worker running it now.
    pub running_on: Option<String>,
    /// The last "poll now" asked of it.
    pub run_requested_at: Option<DateTime<Utc>>,
    pub last_success_at: Option<DateTime<Utc>>,
    pub last_error: Option<String>,
    pub last_error_at: Option<DateTime<Utc>>,
    pub consecutive_failures: i32,
    /// Runs in a row that panicked; [`PARK_AFTER_PANICS`] of them park the job.
    pub consecutive_panics: i32,
    /// When the job was parked after panicking: it does not run until "poll now" asks for it.
    pub parked_at: Option<DateTime<Utc>>,
    pub covered_until: Option<DateTime<Utc>>,
    /// Seconds between now and the newest data covered.
    pub lag_seconds: Option<f64>,
    pub items_total: i64,
    pub throttled_total: i64,
    /// S3 objects given up after their last try: never read, until retried.
    pub objects_failed: i64,
    /// The most tries an object given up had.
    pub objects_failed_tries: Option<i32>,
    /// S3 objects that failed and wait for their next try.
    pub objects_retrying: i64,
    /// The object that failed last (`s3://bucket/key`), its error and when.
    pub newest_failure_object: Option<String>,
    pub newest_failure_error: Option<String>,
    pub newest_failure_at: Option<DateTime<Utc>>,
    /// What the job found at its source, when it says (`not-enabled`: GuardDuty or Security Hub
    /// is off in the region, which is not an error).
    pub state: Option<String>,
}

/// Every job's state (of one account, or all), with the S3 objects it failed to read.
pub async fn statuses(pool: &PgPool, account_id: Option<&str>) -> Result<Vec<JobStatus>, sqlx::Error> {
    sqlx::query_as!(
        JobStatus,
        r#"SELECT j.job_id, j.account_id, j.region, j.source, j.target, j.enabled, j.interval_seconds, j.next_run_at,
                  CASE WHEN j.lease_expires_at > now() THEN j.lease_owner END AS running_on, j.run_requested_at,
                  j.last_success_at, j.last_error, j.last_error_at, j.consecutive_failures, j.consecutive_panics,
                  j.parked_at, j.covered_until,
                  EXTRACT(EPOCH FROM now() - j.covered_until)::float8 AS lag_seconds,
                  j.items_total, j.throttled_total,
                  f.failed AS "objects_failed!", f.tries AS objects_failed_tries, f.retrying AS "objects_retrying!",
                  n.object AS "newest_failure_object?", n.last_error AS "newest_failure_error?",
                  n.last_failed_at AS "newest_failure_at?", j.checkpoint->>'state' AS state
           FROM poll_jobs j
           CROSS JOIN LATERAL (
               SELECT count(*) FILTER (WHERE next_attempt_at IS NULL) AS failed,
                      max(attempts) FILTER (WHERE next_attempt_at IS NULL) AS tries,
                      count(*) FILTER (WHERE next_attempt_at IS NOT NULL) AS retrying
               FROM s3_object_failures WHERE job_id = j.job_id) f
           LEFT JOIN LATERAL (
               SELECT 's3://' || bucket || '/' || object_key AS object, last_error, last_failed_at
               FROM s3_object_failures WHERE job_id = j.job_id
               ORDER BY last_failed_at DESC LIMIT 1) n ON true
           WHERE $1::text IS NULL OR j.account_id = $1
           ORDER BY j.account_id, j.source, j.region, j.target"#,
        account_id
    )
    .fetch_all(pool)
    .await
}

/// Makes an account's enabled jobs (of one source, or all) due now: "poll now" for users, and
/// for tests that drive workers step by step. Returns how many jobs were made due.
pub async fn run_now(pool: &PgPool, account_id: &str, source: Option<Source>) -> Result<u64, sqlx::Error> {
    poll_now(pool, Some(account_id), source).await
}

/// "Poll now": makes the enabled jobs of one account (or of every account), of one source (or
/// all), due now; the next free worker runs them. A job running now runs again once it ends. A
/// parked job is un-parked for one more try: it keeps its count of panics, so one more panic
/// parks it again. Returns how many jobs were made due.
pub async fn poll_now(pool: &PgPool, account_id: Option<&str>, source: Option<Source>) -> Result<u64, sqlx::Error> {
    let source = source.map(Source::as_str);
    let made_due = sqlx::query!(
        r#"UPDATE poll_jobs p SET next_run_at = now(), run_requested_at = now(), parked_at = NULL
           FROM poll_jobs before
           WHERE before.job_id = p.job_id AND p.enabled
             AND ($1::text IS NULL OR p.account_id = $1) AND ($2::text IS NULL OR p.source = $2)
           RETURNING p.job_id, p.account_id, p.source, before.parked_at IS NOT NULL AS "was_parked!""#,
        account_id,
        source
    )
    .fetch_all(pool)
    .await?;
    for job in made_due.iter().filter(|job| job.was_parked) {
        tracing::info!(job_id = job.job_id, account_id = %job.account_id, source = %job.source, "parked poll job un-parked by poll now");
    }
    Ok(made_due.len() as u64)
}

/// Extends a lease this worker still holds; false if it was lost.
pub async fn renew_lease(pool: &PgPool, job_id: i64, owner: &str, lease: Duration) -> Result<bool, sqlx::Error> {
    let renewed = sqlx::query!(
        "UPDATE poll_jobs SET lease_expires_at = now() + make_interval(secs => $3)
         WHERE job_id = $1 AND lease_owner = $2 AND lease_expires_at > now()",
        job_id,
        owner,
        lease.as_secs_f64()
    )
    .execute(pool)
    .await?
    .rows_affected();
    Ok(renewed == 1)
}
