//! One detection pass at a time over every process (migration 0044): `serve` and each
//! `skywarden worker` run detection after they store rows, and two passes at once would do the
//! work twice and could withdraw each other's login evidence. The lease is a row taken with a
//! conditional UPDATE and renewed on a connection of its own while the pass runs, never a
//! session lock, so it works through a pooler in transaction mode and a small pool never starves
//! its renewal; a dead holder's lease expires and the next caller takes it over.
//!
//! Every caller first leaves a request (`detection_requests`: its rows' earliest ingest time and
//! when they were all stored), then tries the lease; one that finds it held returns. A request is
//! deleted only by the pass that covers it, when that pass succeeds, in the transaction that
//! moves the watermark and only while its process still holds the lease: whatever happens to a
//! holder (killed, panicking, cut short), the requests stay for the next pass, whoever runs it.

use std::time::Duration;

use chrono::{DateTime, Utc};
use sqlx::{Connection, PgConnection, PgPool};
use tokio::sync::watch;
use tokio::time::Instant;

/// Passes one holding runs back to back for requests before it lets the lease go: under
/// sustained polling by other processes the holder is not kept from its own polls for ever.
/// Requests left then wait for the next pass, whoever runs it.
pub const MAX_PASSES: u32 = 8;

/// How often a caller waiting for the lease looks again.
const WAIT_STEP: Duration = Duration::from_millis(500);

/// Tries of take-else-skip before a caller gives up on seeing a live holder (its request is
/// recorded by then, so the next pass covers its rows either way).
const MAX_TRIES: u32 = 5;

/// How long a lease lasts and how it is kept.
#[derive(Clone, Copy, Debug)]
pub struct Timing {
    /// How long a lease lasts unless renewed: how long detection waits after its holder died.
    pub lease: Duration,
    /// How often a running pass renews it.
    pub renew_every: Duration,
    /// A pass stops when its last successful renewal is older than this (before the lease can
    /// expire and another process take it over).
    pub lost_after: Duration,
}

impl Default for Timing {
    fn default() -> Self {
        Self {
            lease: Duration::from_secs(90),
            renew_every: Duration::from_secs(15),
            lost_after: Duration::from_secs(60),
        }
    }
}

/// The outcome of [`acquire`].
pub enum Acquired {
    Taken(Lease),
    /// Another live pass holds the lease (named here); the caller's request is left to it.
    Held(String),
}

/// Leaves a request for detection of the rows ingested from `since` (all committed by now, so
/// a pass that begins reading after this covers them). Durable: the pass that covers it deletes it.
pub async fn leave_request(pool: &PgPool, since: DateTime<Utc>) -> Result<(), sqlx::Error> {
    sqlx::query!("INSERT INTO detection_requests (since) VALUES ($1)", since).execute(pool).await?;
    Ok(())
}

/// Takes the lease, waiting up to `wait` for a live holder to let it go (`waiting` hears its
/// name once); then counts a skip and names the holder. The caller left its request first.
pub async fn acquire(
    pool: &PgPool,
    timing: Timing,
    wait: Duration,
    waiting: &(dyn Fn(&str) + Sync),
) -> Result<Acquired, sqlx::Error> {
    let owner = new_owner();
    let deadline = Instant::now() + wait;
    let mut told = false;
    for _ in 0..MAX_TRIES {
        loop {
            let sent = Instant::now();
            if take(pool, &owner, timing).await? {
                return Ok(Acquired::Taken(Lease::start(pool, owner, timing, sent)));
            }
            if Instant::now() >= deadline {
                break;
            }
            if !told && let Some(holder) = holder(pool).await? {
                waiting(&holder);
                told = true;
            }
            tokio::time::sleep(WAIT_STEP.min(deadline - Instant::now())).await;
        }
        if let Some(holder) = count_skip(pool).await? {
            return Ok(Acquired::Held(holder));
        }
        // Let go between the two statements: try again.
    }
    Ok(Acquired::Held("a pass that just began".into()))
}

/// A pass's lease owner: unique to the call, naming its process (`host/pid/run`).
fn new_owner() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_owned())
        .or_else(|_| std::env::var("HOSTNAME"))
        .unwrap_or_else(|_| "host".into());
    let run = getrandom::u64().unwrap_or_default();
    format!("{host}/{}/{run:016x}", std::process::id())
}

/// Takes the lease if it is free or expired.
async fn take(pool: &PgPool, owner: &str, timing: Timing) -> Result<bool, sqlx::Error> {
    let previous = sqlx::query_scalar!(
        r#"WITH old AS (SELECT owner FROM detection_lease WHERE only_row FOR UPDATE)
           UPDATE detection_lease l
           SET owner = $1, expires_at = clock_timestamp() + make_interval(secs => $2), taken_at = clock_timestamp(),
               takeovers_total = l.takeovers_total + (old.owner IS NOT NULL)::int
           FROM old WHERE l.expires_at < clock_timestamp()
           RETURNING old.owner AS previous"#,
        owner,
        timing.lease.as_secs_f64(),
    )
    .fetch_optional(pool)
    .await?;
    match previous {
        None => Ok(false),
        Some(Some(previous)) => {
            tracing::warn!(%previous, %owner, "detection lease taken over from a holder that stopped renewing it");
            Ok(true)
        }
        Some(None) => Ok(true),
    }
}

/// The live holder, if any.
async fn holder(pool: &PgPool) -> Result<Option<String>, sqlx::Error> {
    let holder = sqlx::query_scalar!("SELECT owner FROM detection_lease WHERE expires_at >= clock_timestamp()")
        .fetch_optional(pool)
        .await?;
    Ok(holder.flatten())
}

/// Counts a skip and names the holder if a live pass holds the lease; `None` when it is free.
async fn count_skip(pool: &PgPool) -> Result<Option<String>, sqlx::Error> {
    let holder = sqlx::query_scalar!(
        "UPDATE detection_lease SET skips_total = skips_total + 1
         WHERE expires_at >= clock_timestamp() RETURNING owner"
    )
    .fetch_optional(pool)
    .await?;
    Ok(holder.flatten())
}

/// Counts a pass that failed or was cut short (best effort: the log has it otherwise).
pub async fn count_failed_pass(pool: &PgPool) {
    let counted =
        sqlx::query!("UPDATE detection_lease SET passes_failed_total = passes_failed_total + 1").execute(pool).await;
    if let Err(error) = counted {
        tracing::warn!(%error, "cannot count the failed detection pass");
    }
}

/// A held lease: renewed in the background until released; released by a task of its own if
/// dropped first (a panic, a cancelled task), so the next pass need not wait for it to expire.
pub struct Lease {
    pool: PgPool,
    owner: String,
    timing: Timing,
    renewal: tokio::task::JoinHandle<()>,
    lost: watch::Receiver<bool>,
    released: bool,
}

/// What a pass reads and where it began, from [`Lease::begin_pass`].
#[derive(Clone, Copy, Debug)]
pub struct PassStart {
    /// When the pass began reading (database clock): rows committed before are visible to it.
    pub scan_from: DateTime<Utc>,
    /// The earliest ingest time a waiting request asks for.
    pub requested: Option<DateTime<Utc>>,
    /// The watermark: rows ingested from here may not have been through detection.
    pub pending: Option<DateTime<Utc>>,
}

#[derive(Debug, thiserror::Error)]
#[error("the detection lease was lost (not renewed in time) and another process may hold it")]
pub struct LeaseLost;

impl Lease {
    fn start(pool: &PgPool, owner: String, timing: Timing, sent: Instant) -> Self {
        let (lost_tx, lost) = watch::channel(false);
        let renewal = tokio::spawn(renew(pool.clone(), owner.clone(), timing, sent, lost_tx));
        Self { pool: pool.clone(), owner, timing, renewal, lost, released: false }
    }

    pub fn owner(&self) -> &str {
        &self.owner
    }

    /// Runs `pass`, cut short if the lease is lost meanwhile (another process may be running
    /// the same pass: stopping leaves the rest to it; what this one stored is idempotent).
    pub async fn guard<T>(&self, pass: impl Future<Output = T>) -> Result<T, LeaseLost> {
        let mut lost = self.lost.clone();
        tokio::select! {
            result = pass => Ok(result),
            _ = lost.wait_for(|lost| *lost) => Err(LeaseLost),
        }
    }

    /// Whether this process still holds the lease. A write another holder's pass could undo
    /// (withdrawing login evidence) checks instead inside its own transaction, holding the lease
    /// row until it commits (`alerts::store::retract_login_evidence`): a check before it races
    /// with a takeover.
    pub async fn still_held(&self) -> Result<(), LeaseError> {
        if *self.lost.borrow() {
            return Err(LeaseLost.into());
        }
        let held = sqlx::query_scalar!(
            r#"SELECT count(*) AS "held!" FROM detection_lease WHERE owner = $1 AND expires_at >= clock_timestamp()"#,
            self.owner,
        )
        .fetch_one(&self.pool)
        .await?;
        if held == 1 { Ok(()) } else { Err(LeaseLost.into()) }
    }

    /// Marks that a pass begins reading now, renewing the lease: what the waiting requests and
    /// the watermark ask it to read.
    pub async fn begin_pass(&self) -> Result<PassStart, LeaseError> {
        let row = sqlx::query!(
            r#"UPDATE detection_lease SET expires_at = clock_timestamp() + make_interval(secs => $2)
               WHERE owner = $1 AND expires_at >= clock_timestamp()
               RETURNING clock_timestamp() AS "scan_from!",
                         (SELECT min(since) FROM detection_requests) AS requested,
                         (SELECT pending_since FROM detection_watermark) AS pending"#,
            self.owner,
            self.timing.lease.as_secs_f64(),
        )
        .fetch_optional(&self.pool)
        .await?
        .ok_or(LeaseLost)?;
        Ok(PassStart { scan_from: row.scan_from, requested: row.requested, pending: row.pending })
    }

    /// After a pass that read rows ingested from `since` succeeded: in one transaction, and only
    /// while this process holds the lease, moves the watermark to where the pass began reading,
    /// deletes the requests it covered and counts it.
    pub async fn finish_pass(&self, since: DateTime<Utc>, start: &PassStart) -> Result<(), LeaseError> {
        let mut tx = crate::db::begin(&self.pool).await?;
        let held = sqlx::query!(
            "UPDATE detection_lease SET passes_total = passes_total + 1 WHERE owner = $1 AND expires_at >= clock_timestamp()",
            self.owner,
        )
        .execute(&mut *tx)
        .await?;
        if held.rows_affected() != 1 {
            return Err(LeaseLost.into());
        }
        sqlx::query!(
            "INSERT INTO detection_watermark (pending_since, last_success_at) VALUES ($1, now())
             ON CONFLICT (only_row) DO UPDATE
             SET pending_since = GREATEST(detection_watermark.pending_since, EXCLUDED.pending_since),
                 last_success_at = now(), failing_since = NULL, consecutive_failures = 0, last_error = NULL",
            start.scan_from,
        )
        .execute(&mut *tx)
        .await?;
        sqlx::query!("DELETE FROM detection_requests WHERE since >= $1 AND stored_by < $2", since, start.scan_from)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(())
    }

    /// After a finished pass: true when requests wait for another one; otherwise lets the lease
    /// go (unless one came meanwhile) and returns false.
    pub async fn next_pass(&mut self) -> Result<bool, LeaseError> {
        let released = sqlx::query!(
            "UPDATE detection_lease SET owner = NULL, expires_at = '-infinity'
             WHERE owner = $1 AND NOT EXISTS (SELECT 1 FROM detection_requests)",
            self.owner,
        )
        .execute(&self.pool)
        .await?
        .rows_affected()
            == 1;
        if released {
            self.stop_renewing();
            return Ok(false);
        }
        // A request is waiting (its caller found the lease held), or the lease was lost.
        self.still_held().await?;
        Ok(true)
    }

    /// Lets the lease go; waiting requests stay for the next pass, whoever runs it.
    pub async fn release(&mut self) -> Result<(), sqlx::Error> {
        self.stop_renewing();
        release(&self.pool, &self.owner).await
    }

    /// Whether the lease was let go already.
    pub fn is_released(&self) -> bool {
        self.released
    }

    fn stop_renewing(&mut self) {
        self.renewal.abort();
        self.released = true;
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        self.renewal.abort();
        if self.released {
            return;
        }
        let (pool, owner) = (self.pool.clone(), std::mem::take(&mut self.owner));
        let Ok(runtime) = tokio::runtime::Handle::try_current() else { return };
        runtime.spawn(async move {
            if let Err(error) = release(&pool, &owner).await {
                tracing::warn!(error = %error, "could not release the detection lease; it expires by itself");
            }
        });
    }
}

async fn release(pool: &PgPool, owner: &str) -> Result<(), sqlx::Error> {
    let released =
        sqlx::query!("UPDATE detection_lease SET owner = NULL, expires_at = '-infinity' WHERE owner = $1", owner)
            .execute(pool)
            .await?;
    if released.rows_affected() != 1 {
        tracing::warn!(%owner, "detection lease already lost when released: another process took it over");
    }
    Ok(())
}

/// Renews the lease every [`Timing::renew_every`] on a connection of its own (the pass may hold
/// every connection of the pool) until aborted; says so on `lost` once another process holds
/// it or the last successful renewal is older than [`Timing::lost_after`].
async fn renew(pool: PgPool, owner: String, timing: Timing, taken: Instant, lost: watch::Sender<bool>) {
    let mut renewed_at = taken;
    let mut conn: Option<PgConnection> = None;
    loop {
        let lost_at = renewed_at + timing.lost_after;
        tokio::time::sleep_until((Instant::now() + timing.renew_every).min(lost_at)).await;
        if Instant::now() >= lost_at {
            tracing::warn!(%owner, "detection lease lost: not renewed in time");
            let _ = lost.send(true);
            return;
        }
        let sent = Instant::now();
        let attempt = tokio::time::timeout(timing.renew_every, renew_once(&pool, &mut conn, &owner, timing)).await;
        match attempt {
            Ok(Ok(true)) => renewed_at = sent,
            Ok(Ok(false)) => {
                tracing::warn!(%owner, "detection lease lost: another process took it over");
                let _ = lost.send(true);
                return;
            }
            Ok(Err(error)) => {
                tracing::warn!(%owner, error = %error, "detection lease renewal failed");
                conn = None;
            }
            Err(_) => {
                tracing::warn!(%owner, "detection lease renewal timed out");
                conn = None;
            }
        }
    }
}

/// One renewal on the renewal connection (opened if need be); false when another holds the lease.
async fn renew_once(
    pool: &PgPool,
    conn: &mut Option<PgConnection>,
    owner: &str,
    timing: Timing,
) -> Result<bool, sqlx::Error> {
    if conn.is_none() {
        let timeout = format!("{}ms", timing.renew_every.as_millis().max(1));
        let options = pool.connect_options().as_ref().clone().options([("statement_timeout", timeout)]);
        *conn = Some(PgConnection::connect_with(&options).await?);
    }
    let Some(conn) = conn.as_mut() else { return Ok(false) };
    let renewed = sqlx::query!(
        "UPDATE detection_lease SET expires_at = clock_timestamp() + make_interval(secs => $2)
         WHERE owner = $1 AND expires_at >= clock_timestamp()",
        owner,
        timing.lease.as_secs_f64(),
    )
    .execute(conn)
    .await?;
    Ok(renewed.rows_affected() == 1)
}

#[derive(Debug, thiserror::Error)]
pub enum LeaseError {
    #[error(transparent)]
    Lost(#[from] LeaseLost),
    #[error("reading or writing the detection lease")]
    Db(#[from] sqlx::Error),
}

/// The lease as an operator sees it (detection health, `/metrics`).
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize, utoipa::ToSchema)]
pub struct LeaseState {
    /// The process running a detection pass now (`host/pid/run`), if any.
    pub holder: Option<String>,
    pub held_since: Option<DateTime<Utc>>,
    pub expires_at: Option<DateTime<Utc>>,
    /// Requests waiting for a pass (callers whose rows no successful pass covered yet).
    pub waiting_requests: i64,
    /// How long the oldest waiting request has waited (seconds).
    pub oldest_request_age_secs: Option<f64>,
    /// The same, only while nobody holds the lease: requests nobody is running (a holder died
    /// or stopped at its limit of passes) wait for the next detection anywhere.
    pub unattended_request_age_secs: Option<f64>,
    /// Calls that found the lease held and left their rows to its holder.
    pub skips_total: i64,
    /// Passes that finished.
    pub passes_total: i64,
    /// Passes that failed or were cut short (their requests wait for the next).
    pub passes_failed_total: i64,
    /// Leases taken from a holder that stopped renewing (a crashed or stalled process).
    pub takeovers_total: i64,
}

pub async fn state(pool: &PgPool) -> Result<LeaseState, sqlx::Error> {
    let row = sqlx::query!(
        r#"SELECT CASE WHEN expires_at >= clock_timestamp() THEN owner END AS holder,
                  CASE WHEN expires_at >= clock_timestamp() THEN taken_at END AS held_since,
                  CASE WHEN expires_at >= clock_timestamp() THEN expires_at END AS expires_at,
                  r.waiting AS "waiting!", extract(epoch FROM clock_timestamp() - r.oldest)::float8 AS oldest_age,
                  skips_total, passes_total, passes_failed_total, takeovers_total
           FROM detection_lease,
                (SELECT count(*) AS waiting, min(stored_by) AS oldest FROM detection_requests) AS r"#
    )
    .fetch_optional(pool)
    .await?;
    Ok(row.map_or_else(LeaseState::default, |r| LeaseState {
        unattended_request_age_secs: r.oldest_age.filter(|_| r.holder.is_none()),
        holder: r.holder,
        held_since: r.held_since,
        expires_at: r.expires_at,
        waiting_requests: r.waiting,
        oldest_request_age_secs: r.oldest_age,
        skips_total: r.skips_total,
        passes_total: r.passes_total,
        passes_failed_total: r.passes_failed_total,
        takeovers_total: r.takeovers_total,
    }))
}

/// The earliest ingest time waiting requests ask for, when nobody holds the lease and the
/// oldest has waited at least `min_age` (a caller that just left one is about to take the lease).
pub async fn unattended(pool: &PgPool, min_age: Duration) -> Result<Option<DateTime<Utc>>, sqlx::Error> {
    sqlx::query_scalar!(
        "SELECT min(since) FROM detection_requests
         WHERE NOT EXISTS (SELECT 1 FROM detection_lease WHERE expires_at >= clock_timestamp())
         HAVING min(stored_by) <= clock_timestamp() - make_interval(secs => $1)",
        min_age.as_secs_f64(),
    )
    .fetch_optional(pool)
    .await
    .map(Option::flatten)
}
