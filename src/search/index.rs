//! The full-text index of the audit trail, kept off the import path: after events are stored,
//! [`run`] copies the projection `q` matches (`skywarden_event_search_text(raw)`, migration
//! 0036) of every event stored since its watermark into `event_search`, whose trigram index
//! answers `q`. What is not indexed yet (the tail) is matched by computing the same projection,
//! so a search is exact whether the indexer has run or not (see `search::events`).

use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU32, AtomicU64, Ordering};
use std::time::Duration;

use chrono::{DateTime, Utc};
use futures_util::future::BoxFuture;
use serde::Serialize;
use sqlx::Connection;

/// Events indexed by one transaction, which also moves the watermark past them: a run over a
/// long backlog (a large import) keeps what each chunk did, and a crash redoes one chunk.
pub const CHUNK: usize = 5_000;

/// How often `serve` and `skywarden worker` run the indexer.
pub const INTERVAL: Duration = Duration::from_secs(30);

/// How long after its last note a scheduled indexer (`serve`, a worker) counts as alive: two
/// intervals, so one late start is not taken for a stopped process.
pub const SCHEDULED_ALIVE: Duration = Duration::from_secs(2 * INTERVAL.as_secs());

/// How far the watermark stays behind while another role's session, which pg_stat_activity
/// hides from an unprivileged role, holds a transaction open (a snapshot or a transaction id).
pub const HIDDEN_HOLD_BACK: Duration = Duration::from_secs(15 * 60);

/// How long a run's lease on the indexer lasts unless renewed (every chunk renews it). Only a
/// process that dies mid-run leaves it to expire: a run that ends, fails or is dropped releases it.
pub const LEASE: Duration = Duration::from_secs(120);

/// Runs locked out in a row (the lease held elsewhere) after which each further one warns:
/// about five minutes at [`INTERVAL`].
pub const LOCKOUT_WARN_AFTER: u32 = 10;

/// How far behind the mark may be before a run logs the session holding it back.
pub const STUCK_AFTER: Duration = Duration::from_secs(5 * 60);

/// What one run did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct IndexRun {
    /// Events added to the index (re-seen ones in the overlap are not counted).
    pub indexed: u64,
    /// False when another run held the indexer's lease: this run did nothing.
    pub ran: bool,
    /// Who held the lease when this run did not run (`host/pid/run`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub held_by: Option<String>,
}

/// How far behind the index is, for `/metrics` and the search API.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct IndexLag {
    /// Every event stored before this is indexed (absent: nothing indexed yet).
    pub indexed_until: Option<DateTime<Utc>>,
    pub last_run_at: Option<DateTime<Utc>>,
    /// Events in the tail not in the index, counted up to [`LAG_COUNT_CAP`].
    pub rows_behind: i64,
    /// When the oldest of them was stored.
    pub oldest_unindexed: Option<DateTime<Utc>>,
}

/// The lag count stops here: it scans the tail, which is small unless the indexer is stuck.
pub const LAG_COUNT_CAP: i64 = 100_000;

/// This process's runs locked out in a row (0 after a run that ran).
static LOCKOUTS_IN_A_ROW: AtomicU32 = AtomicU32::new(0);
/// Lag queries (`/metrics`) that failed since the process started.
static LAG_FAILURES: AtomicU64 = AtomicU64::new(0);
/// Whether this process's role sees every session's transaction start: -1 not checked yet.
static SEES_ALL_SESSIONS: AtomicI64 = AtomicI64::new(-1);

/// This process's indexer runs locked out in a row by another's lease (0: the last one ran).
pub fn lockouts_in_a_row() -> u32 {
    LOCKOUTS_IN_A_ROW.load(Ordering::Relaxed)
}

/// Lag queries that failed in this process (each also logged).
pub fn lag_failures() -> u64 {
    LAG_FAILURES.load(Ordering::Relaxed)
}

/// Counts and logs a failed [`lag`] query: `/metrics` shows the count instead of silently
/// leaving the lag gauges out.
pub fn note_lag_failure(error: &sqlx::Error) {
    LAG_FAILURES.fetch_add(1, Ordering::Relaxed);
    tracing::warn!(error = %error, "could not read the full-text index lag");
}

/// Whether this process's role may read every session in `pg_stat_activity` (superuser or
/// `pg_read_all_stats`), as last checked by a run; `None` before the first check.
pub fn sees_all_sessions() -> Option<bool> {
    match SEES_ALL_SESSIONS.load(Ordering::Relaxed) {
        -1 => None,
        seen => Some(seen == 1),
    }
}

/// Whether the connection's role is a superuser or a member of `pg_read_all_stats`. Without
/// either, an idle transaction of another role that has written nothing shows no start, no
/// transaction id and no snapshot: the watermark cannot wait for it.
pub async fn check_sees_all_sessions(conn: &mut sqlx::PgConnection) -> Result<bool, sqlx::Error> {
    sqlx::query_scalar!(
        r#"SELECT rolsuper OR pg_has_role(current_user, 'pg_read_all_stats', 'MEMBER') AS "sees!"
           FROM pg_roles WHERE rolname = current_user"#
    )
    .fetch_one(conn)
    .await
}

/// Checks once a process (the first run) and warns if the role is blind to other roles' idle
/// transactions; a failed check is retried by the next run.
async fn check_visibility_once(conn: &mut sqlx::PgConnection) {
    if SEES_ALL_SESSIONS.load(Ordering::Relaxed) != -1 {
        return;
    }
    match check_sees_all_sessions(conn).await {
        Ok(sees) => {
            if SEES_ALL_SESSIONS.swap(i64::from(sees), Ordering::Relaxed) == -1 && !sees {
                tracing::warn!(
                    "the database role is neither superuser nor a member of pg_read_all_stats: an idle \
                     transaction of another role that writes events later can be missed by the full-text \
                     index (searches by `q` may then miss its events); run \
                     `GRANT pg_read_all_stats TO <role>` (docs/scaling.md, Full text)"
                );
            }
        }
        Err(error) => tracing::warn!(error = %error, "could not check the role's view of pg_stat_activity"),
    }
}

/// Indexes every event stored since the watermark, [`CHUNK`] events a transaction, moving the
/// watermark with each. One run at a time over all processes (a lease on the watermark row); a
/// second one returns at once with `ran: false`. Idempotent: events already indexed are
/// skipped, and a run cut short keeps every chunk it committed.
pub async fn run(pool: &sqlx::PgPool) -> Result<IndexRun, sqlx::Error> {
    run_in_chunks(pool, CHUNK).await
}

/// [`run`] with chunks of `chunk_rows` events.
pub fn run_in_chunks(pool: &sqlx::PgPool, chunk_rows: usize) -> BoxFuture<'_, Result<IndexRun, sqlx::Error>> {
    Box::pin(async move { run_until(pool, chunk_rows, &AtomicBool::new(false)).await })
}

/// [`run_in_chunks`] that stops after the chunk in progress once `stop` is set (shutdown).
///
/// One connection of the pool at a time, never two held together: a run holding one
/// connection while it waits for another could wait for ever beside writers that hold the rest
/// of the pool. Every statement stands alone or in a short transaction of its own (no session
/// state: no advisory lock, no cursor), so a run works through a pooler in transaction mode.
/// (Boxed so the future's `Send` bound is proven here, with concrete lifetimes, rather than in
/// the task that spawns [`schedule`].)
pub fn run_until<'a>(
    pool: &'a sqlx::PgPool,
    chunk_rows: usize,
    stop: &'a AtomicBool,
) -> BoxFuture<'a, Result<IndexRun, sqlx::Error>> {
    Box::pin(run_leased(pool, chunk_rows.max(1), stop))
}

async fn run_leased(pool: &sqlx::PgPool, chunk_rows: usize, stop: &AtomicBool) -> Result<IndexRun, sqlx::Error> {
    let mut conn = Held { conn: pool.acquire().await?, clean: false };
    check_visibility_once(&mut conn.conn).await;
    let owner = new_owner();
    if let Some(holder) = take_lease(&mut conn.conn, &owner).await? {
        conn.clean = true;
        note_lockout(&holder);
        return Ok(IndexRun { indexed: 0, ran: false, held_by: Some(holder) });
    }
    LOCKOUTS_IN_A_ROW.store(0, Ordering::Relaxed);
    let mut lease = Lease { pool: pool.clone(), owner, released: false };
    let result = index_backlog(&mut conn.conn, &lease.owner, chunk_rows, stop).await;
    if lease.release(&mut conn.conn).await.is_ok() {
        conn.clean = result.is_ok();
    }
    let indexed = result?;
    if indexed > 0 {
        tracing::info!(indexed, "full-text index updated");
    }
    Ok(IndexRun { indexed, ran: true, held_by: None })
}

/// This process, for the operator: `host/pid`.
fn process_name() -> String {
    let host = std::env::var("HOSTNAME").unwrap_or_else(|_| "host".into());
    format!("{host}/{}", std::process::id())
}

/// A run's lease owner: unique to the run, naming its process for the operator.
fn new_owner() -> String {
    let run = getrandom::u64().unwrap_or_default();
    format!("{}/{run:016x}", process_name())
}

/// Takes the lease if it is free or expired: `None`, or who holds it.
async fn take_lease(conn: &mut sqlx::PgConnection, owner: &str) -> Result<Option<String>, sqlx::Error> {
    let taken = sqlx::query_scalar!(
        r#"UPDATE event_search_watermark
           SET lease_owner = $1, lease_until = now() + make_interval(secs => $2)
           WHERE lease_until < now() OR lease_owner = $1
           RETURNING true AS "taken!""#,
        owner,
        LEASE.as_secs_f64(),
    )
    .fetch_optional(&mut *conn)
    .await?;
    if taken.is_some() {
        return Ok(None);
    }
    let holder = sqlx::query_scalar!("SELECT lease_owner FROM event_search_watermark").fetch_one(&mut *conn).await?;
    Ok(Some(holder.unwrap_or_default()))
}

fn note_lockout(holder: &str) {
    let in_a_row = LOCKOUTS_IN_A_ROW.fetch_add(1, Ordering::Relaxed) + 1;
    if in_a_row >= LOCKOUT_WARN_AFTER {
        tracing::warn!(holder, in_a_row, "full-text indexing locked out again: another run holds the lease");
    } else {
        tracing::debug!(holder, "full-text indexing skipped: another process is indexing");
    }
}

/// A run's connection: closed rather than returned to the pool unless the run ended cleanly
/// (an error, a panic, a cancelled task may leave it mid-statement).
struct Held {
    conn: sqlx::pool::PoolConnection<sqlx::Postgres>,
    clean: bool,
}

impl Drop for Held {
    fn drop(&mut self) {
        if !self.clean {
            self.conn.close_on_drop();
        }
    }
}

/// A run's lease: released when the run ends, and, if the run is dropped first (a cancelled
/// task, a panic), by a task of its own, so the next run need not wait for it to expire.
struct Lease {
    pool: sqlx::PgPool,
    owner: String,
    released: bool,
}

impl Lease {
    async fn release(&mut self, conn: &mut sqlx::PgConnection) -> Result<(), sqlx::Error> {
        release_lease(conn, &self.owner).await?;
        self.released = true;
        Ok(())
    }
}

async fn release_lease(conn: &mut sqlx::PgConnection, owner: &str) -> Result<(), sqlx::Error> {
    sqlx::query!(
        "UPDATE event_search_watermark SET lease_owner = NULL, lease_until = '-infinity' WHERE lease_owner = $1",
        owner
    )
    .execute(conn)
    .await?;
    Ok(())
}

impl Drop for Lease {
    fn drop(&mut self) {
        if self.released {
            return;
        }
        let (pool, owner) = (self.pool.clone(), std::mem::take(&mut self.owner));
        let Ok(runtime) = tokio::runtime::Handle::try_current() else { return };
        runtime.spawn(async move {
            let released = async { release_lease(&mut *pool.acquire().await?, &owner).await };
            if let Err(error) = released.await {
                tracing::warn!(error = %error, "could not release the full-text indexer's lease; it expires by itself");
            }
        });
    }
}

/// The position of a page: the key of the last event indexed, in the order pages go.
struct Position {
    stored: DateTime<Utc>,
    time: DateTime<Utc>,
    account: String,
    id: String,
}

/// The first window of `ingested_at` a page reads; then adapted to what the pages hold.
const FIRST_WINDOW: chrono::Duration = chrono::Duration::seconds(60);
const MAX_WINDOW: chrono::Duration = chrono::Duration::days(1);
const MIN_GROWN_WINDOW: chrono::Duration = chrono::Duration::seconds(1);

/// Indexes the backlog on `conn` in keyset pages of `chunk_rows` events, each page in a short
/// transaction of its own with the watermark and the lease's renewal; returns the rows added.
///
/// Pages go in (ingested_at, event_time, account_id, event_id) order, the full key, so events
/// stored at the same instant are neither skipped nor read twice. Each reads one window of
/// `ingested_at` (the BRIN index answers a window; an open-ended `ingested_at >= x` would re-read
/// the rest of the backlog every page): a full page narrows the next window to the span it
/// took, a short one moves to the next window and widens it. `OFFSET 0` keeps the check that an
/// event is not indexed yet a probe of `event_search`'s key per row read: planned as an anti-join,
/// it could hash the whole of `event_search` for every page (seen at 10M events). (Boxed for
/// `Send`: see [`run_until`].)
// One loop over pages, read best whole; its steps are the SQL.
#[allow(clippy::too_many_lines)]
fn index_backlog<'a>(
    conn: &'a mut sqlx::PgConnection,
    owner: &'a str,
    chunk_rows: usize,
    stop: &'a AtomicBool,
) -> BoxFuture<'a, Result<u64, sqlx::Error>> {
    Box::pin(async move {
        let mark = hold_back(&mut *conn).await?;
        let bounds = sqlx::query!(
            r#"SELECT clock_timestamp() AS "end!",
                      (SELECT min(c.ingested_at) FROM cloudtrail_events c
                       WHERE c.ingested_at >= skywarden_event_search_tail_start()) AS first"#
        )
        .fetch_one(&mut *conn)
        .await?;
        if bounds.end - mark > chrono::Duration::from_std(STUCK_AFTER).unwrap_or(chrono::Duration::MAX) {
            log_holder(conn, mark).await;
        }
        let end = bounds.end;
        let mut from = bounds.first.unwrap_or(end);
        let mut window = FIRST_WINDOW;
        let mut after: Option<Position> = None;
        let mut indexed = 0u64;
        let limit = i64::try_from(chunk_rows).unwrap_or(i64::MAX);
        while from < end {
            let to = (from + window).min(end);
            // `Held` closes this connection, rather than lend it on, unless the run ends cleanly.
            #[allow(clippy::disallowed_methods)]
            let mut tx = conn.begin().await?;
            let rows = sqlx::query!(
                r#"SELECT c.account_id, c.event_time, c.event_id, c.ingested_at
                   FROM cloudtrail_events c
                   WHERE c.ingested_at >= $1 AND c.ingested_at < $2
                     AND ($3::timestamptz IS NULL
                          OR (c.ingested_at, c.event_time, c.account_id, c.event_id)
                             > ($3::timestamptz, $4::timestamptz, $5::text, $6::text))
                     AND NOT EXISTS (SELECT 1 FROM event_search s
                                     WHERE s.account_id = c.account_id AND s.event_time = c.event_time
                                       AND s.event_id = c.event_id
                                     OFFSET 0)
                   ORDER BY c.ingested_at, c.event_time, c.account_id, c.event_id
                   LIMIT $7"#,
                from,
                to,
                after.as_ref().map(|p| p.stored),
                after.as_ref().map(|p| p.time),
                after.as_ref().map(|p| p.account.as_str()),
                after.as_ref().map(|p| p.id.as_str()),
                limit,
            )
            .fetch_all(&mut *tx)
            .await?;
            let full = rows.len() >= chunk_rows;
            let mut chunk = Chunk::default();
            for row in &rows {
                chunk.push(row.account_id.clone(), row.event_time, row.event_id.clone());
            }
            // A full page: events stored at its last one's instant may come in the next page
            // (the watermark is exclusive). A short one: every event stored before `to` is in.
            let last = rows.last().map(|r| r.ingested_at);
            let until = match (full, last) {
                (true, Some(last)) => last.min(mark),
                _ => to.min(mark),
            };
            let Some(written) = chunk.write(&mut tx, owner, until, indexed).await? else {
                tx.rollback().await?;
                tracing::warn!("full-text indexing stopped: the run's lease was taken over");
                return Ok(indexed);
            };
            tx.commit().await?;
            indexed += written;
            match rows.into_iter().last().filter(|_| full) {
                Some(row) => {
                    window = (row.ingested_at - from).max(chrono::Duration::microseconds(1));
                    from = row.ingested_at;
                    after = Some(Position {
                        stored: row.ingested_at,
                        time: row.event_time,
                        account: row.account_id,
                        id: row.event_id,
                    });
                }
                None => {
                    from = to;
                    after = None;
                    // At least a second: a window narrowed to a tie of one instant need not grow
                    // back a microsecond at a time.
                    window = (window * 2).clamp(MIN_GROWN_WINDOW, MAX_WINDOW);
                }
            }
            if stop.load(Ordering::Relaxed) {
                tracing::info!(indexed, "full-text indexing stopped between chunks (shutdown)");
                return Ok(indexed);
            }
        }
        // Nothing (left) to read: the watermark still moves to the mark, and the run is recorded.
        // `Held` closes this connection, rather than lend it on, unless the run ends cleanly.
        #[allow(clippy::disallowed_methods)]
        let mut tx = conn.begin().await?;
        if Chunk::default().write(&mut tx, owner, mark, indexed).await?.is_some() {
            tx.commit().await?;
        }
        Ok(indexed)
    })
}

/// Logs the session holding the watermark back, once it lags more than [`STUCK_AFTER`].
async fn log_holder(conn: &mut sqlx::PgConnection, mark: DateTime<Utc>) {
    let holder = sqlx::query!(
        r#"SELECT pid AS "pid!", application_name, xact_start, state, usename::text AS usename
           FROM pg_stat_activity
           WHERE datname = current_database() AND pid <> pg_backend_pid()
             AND backend_type = 'client backend' AND xact_start IS NOT NULL
           ORDER BY xact_start LIMIT 1"#
    )
    .fetch_optional(conn)
    .await;
    match holder {
        Ok(Some(h)) => tracing::warn!(
            %mark, pid = h.pid, application_name = h.application_name.as_deref().unwrap_or(""),
            xact_start = ?h.xact_start, state = h.state.as_deref().unwrap_or(""),
            user = h.usename.as_deref().unwrap_or(""),
            "the full-text index watermark is held back by an open transaction"
        ),
        Ok(None) => tracing::warn!(
            %mark,
            "the full-text index watermark is held back by a session this role cannot see (another role's)"
        ),
        Err(error) => tracing::warn!(error = %error, "could not look up what holds the full-text index back"),
    }
}

/// How far the watermark may go now: no later than the start of any transaction open in this
/// database, since `ingested_at` is the inserting transaction's start time and a transaction may
/// commit long after it; rows not visible yet are then all newer than the watermark.
///
/// Only client sessions in a transaction count: idle sessions (no `xact_start`), autovacuum,
/// parallel workers (their leader counts) and other background processes, and the caller's own
/// connection do not. pg_stat_activity hides other roles' sessions from an unprivileged role,
/// but not their `backend_xid`/`backend_xmin`: a hidden session holding either (a transaction
/// that wrote or is running a statement) keeps the watermark [`HIDDEN_HOLD_BACK`] behind; an idle
/// hidden one, or a hidden process with no user (autovacuum), does not.
pub async fn hold_back(conn: &mut sqlx::PgConnection) -> Result<DateTime<Utc>, sqlx::Error> {
    sqlx::query_scalar!(
        r#"SELECT LEAST(clock_timestamp(),
                        (SELECT min(xact_start) FROM pg_stat_activity
                         WHERE datname = current_database() AND pid <> pg_backend_pid()
                           AND backend_type = 'client backend'),
                        (SELECT clock_timestamp() - make_interval(secs => $1) FROM pg_stat_activity
                         WHERE datname = current_database() AND pid <> pg_backend_pid()
                           AND query = '<insufficient privilege>' AND usesysid IS NOT NULL
                           AND (backend_xid IS NOT NULL OR backend_xmin IS NOT NULL)
                         LIMIT 1)) AS "mark!""#,
        HIDDEN_HOLD_BACK.as_secs_f64(),
    )
    .fetch_one(conn)
    .await
}

/// The keys of up to one chunk of events for `event_search`, as columns.
#[derive(Default)]
struct Chunk {
    accounts: Vec<String>,
    times: Vec<DateTime<Utc>>,
    ids: Vec<String>,
}

impl Chunk {
    fn push(&mut self, account: String, time: DateTime<Utc>, id: String) {
        self.accounts.push(account);
        self.times.push(time);
        self.ids.push(id);
    }

    /// In `tx`: indexes the chunk's events, moves the watermark to `until` (never back) and
    /// renews the lease. Returns the rows added, or `None` when `owner` no longer holds the
    /// lease (the caller rolls back). `before` is what the run added so far.
    async fn write(
        &self,
        tx: &mut sqlx::PgConnection,
        owner: &str,
        until: DateTime<Utc>,
        before: u64,
    ) -> Result<Option<u64>, sqlx::Error> {
        let written = if self.ids.is_empty() {
            0
        } else {
            sqlx::query!(
                "INSERT INTO event_search (account_id, event_time, event_id, search_text)
                 SELECT c.account_id, c.event_time, c.event_id, skywarden_event_search_text(c.raw)
                 FROM unnest($1::text[], $2::timestamptz[], $3::text[]) AS k(account_id, event_time, event_id)
                 JOIN cloudtrail_events c ON c.account_id = k.account_id AND c.event_time = k.event_time
                                         AND c.event_id = k.event_id
                 ON CONFLICT DO NOTHING",
                &self.accounts,
                &self.times,
                &self.ids,
            )
            .execute(&mut *tx)
            .await?
            .rows_affected()
        };
        let renewed = sqlx::query!(
            "UPDATE event_search_watermark
             SET indexed_until = GREATEST(indexed_until, $1), last_run_at = now(), last_indexed = $2,
                 lease_until = now() + make_interval(secs => $4)
             WHERE lease_owner = $3",
            until,
            i64::try_from(before + written).unwrap_or(i64::MAX),
            owner,
            LEASE.as_secs_f64(),
        )
        .execute(&mut *tx)
        .await?
        .rows_affected();
        Ok((renewed == 1).then_some(written))
    }
}

/// Runs the indexer every [`INTERVAL`] until `shutdown`; a failed or panicked run is logged
/// and the loop goes on (the next run takes over from the same watermark). Shutdown during a
/// run stops it after the chunk in progress, which then releases its lease.
///
/// Before each run it notes itself alive ([`live_scheduled_indexer`]), so that `skywarden import`
/// leaves what it stores to it; it clears the note when it stops.
pub async fn schedule(pool: sqlx::PgPool, shutdown: impl std::future::Future<Output = ()>) {
    tokio::pin!(shutdown);
    let stop = AtomicBool::new(false);
    let me = process_name();
    loop {
        note_scheduled(&pool, &me).await;
        let run = crate::supervise::catch_panic(run_until(&pool, CHUNK, &stop));
        tokio::pin!(run);
        let (outcome, stopping) = tokio::select! {
            outcome = &mut run => (outcome, false),
            () = &mut shutdown => {
                stop.store(true, Ordering::Relaxed);
                (run.await, true)
            }
        };
        match outcome {
            Ok(Ok(IndexRun { ran: false, held_by, .. })) => {
                tracing::debug!(
                    holder = held_by.as_deref().unwrap_or(""),
                    "full-text indexing skipped: another process is indexing"
                )
            }
            Ok(Ok(_)) => {}
            Ok(Err(error)) => {
                tracing::error!(error = %error, "full-text indexing failed; searches scan the tail meanwhile")
            }
            Err(panic) => tracing::error!(panic = %panic, "full-text indexing panicked"),
        }
        if stopping {
            break;
        }
        tokio::select! {
            () = &mut shutdown => break,
            () = tokio::time::sleep(INTERVAL) => {}
        }
    }
    leave_schedule(&pool, &me).await;
}

/// Notes that `me` runs the indexer on a schedule. A failure only means imports index for
/// themselves meanwhile.
async fn note_scheduled(pool: &sqlx::PgPool, me: &str) {
    let noted = sqlx::query!("UPDATE event_search_watermark SET scheduled_at = now(), scheduled_by = $1", me)
        .execute(pool)
        .await;
    if let Err(error) = noted {
        tracing::warn!(error = %error, "could not note the scheduled indexer as alive; imports index for themselves");
    }
}

/// Clears `me`'s note when it stops, so imports do not leave their events to a stopped process.
async fn leave_schedule(pool: &sqlx::PgPool, me: &str) {
    let left = sqlx::query!("UPDATE event_search_watermark SET scheduled_at = NULL WHERE scheduled_by = $1", me)
        .execute(pool)
        .await;
    if let Err(error) = left {
        tracing::warn!(error = %error, "could not clear the scheduled indexer's note; it lapses by itself");
    }
}

/// The scheduled indexer (`host/pid`) that will index what was just stored, if one is alive: it
/// noted itself within [`SCHEDULED_ALIVE`], or it is in a run now (a long one renews its lease
/// every chunk but notes itself only between runs).
pub async fn live_scheduled_indexer(pool: &sqlx::PgPool) -> Result<Option<String>, sqlx::Error> {
    sqlx::query_scalar!(
        r#"SELECT scheduled_by AS "scheduled_by!" FROM event_search_watermark
           WHERE scheduled_by IS NOT NULL AND scheduled_at IS NOT NULL
             AND (scheduled_at > now() - make_interval(secs => $1)
                  OR (lease_until > now() AND starts_with(lease_owner, scheduled_by || '/')))"#,
        SCHEDULED_ALIVE.as_secs_f64(),
    )
    .fetch_optional(pool)
    .await
}

/// Where the tail starts: events stored since then may not be indexed yet.
pub async fn tail_start(db: &sqlx::PgPool) -> Result<DateTime<Utc>, sqlx::Error> {
    // `-infinity` (nothing indexed yet) comes back as the earliest time chrono has.
    sqlx::query_scalar!(
        r#"SELECT CASE WHEN isfinite(t) THEN t ELSE '4713-01-01 00:00:00+00 BC'::timestamptz END AS "t!"
           FROM skywarden_event_search_tail_start() t"#
    )
    .fetch_one(db)
    .await
}

/// How far behind the index is.
pub async fn lag(pool: &sqlx::PgPool) -> Result<IndexLag, sqlx::Error> {
    let mark = sqlx::query!(
        r#"SELECT CASE WHEN isfinite(indexed_until) THEN indexed_until END AS indexed_until, last_run_at
           FROM event_search_watermark"#
    )
    .fetch_one(pool)
    .await?;
    let behind = sqlx::query!(
        r#"SELECT count(*) AS "rows!", min(ingested_at) AS oldest FROM (
               SELECT c.ingested_at FROM cloudtrail_events c
               WHERE c.ingested_at >= skywarden_event_search_tail_start()
                 AND NOT EXISTS (SELECT 1 FROM event_search s
                                 WHERE s.account_id = c.account_id AND s.event_time = c.event_time
                                   AND s.event_id = c.event_id)
               LIMIT $1) tail"#,
        LAG_COUNT_CAP,
    )
    .fetch_one(pool)
    .await?;
    Ok(IndexLag {
        indexed_until: mark.indexed_until,
        last_run_at: mark.last_run_at,
        rows_behind: behind.rows,
        oldest_unindexed: behind.oldest,
    })
}

/// Removes the index entries of events in `[from, to)`: what the archive calls when it drops a
/// month of `cloudtrail_events`, so the index holds nothing the table no longer has.
pub async fn forget_range(
    conn: &mut sqlx::PgConnection,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
) -> Result<u64, sqlx::Error> {
    Ok(sqlx::query!("DELETE FROM event_search WHERE event_time >= $1 AND event_time < $2", from, to)
        .execute(conn)
        .await?
        .rows_affected())
}

/// Indexes every event of `partition` (a partition of `cloudtrail_events`, attached) not in
/// the index yet; returns the rows added. For the archive when it re-attaches a month: its
/// events were stored long before the watermark, so neither the indexer nor the tail would
/// ever cover them. One statement (`INSERT … ON CONFLICT DO NOTHING`): idempotent, safe beside
/// the indexer. Fails with `RowNotFound` when `partition` is not an attached partition.
pub async fn index_partition(conn: &mut sqlx::PgConnection, partition: &str) -> Result<u64, sqlx::Error> {
    let attached = sqlx::query_scalar!(
        r#"SELECT format('%I.%I', n.nspname, c.relname) AS "name!"
           FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid JOIN pg_namespace n ON n.oid = c.relnamespace
           WHERE i.inhparent = 'cloudtrail_events'::regclass AND c.relname = $1
             AND n.nspname = ANY (current_schemas(false))
           LIMIT 1"#,
        partition
    )
    .fetch_optional(&mut *conn)
    .await?
    .ok_or(sqlx::Error::RowNotFound)?;
    // The name comes quoted from PostgreSQL (`format('%I')`), checked to be a partition.
    let statement = format!(
        "INSERT INTO event_search (account_id, event_time, event_id, search_text)
         SELECT c.account_id, c.event_time, c.event_id, skywarden_event_search_text(c.raw)
         FROM {attached} c
         WHERE NOT EXISTS (SELECT 1 FROM event_search s WHERE s.account_id = c.account_id
                             AND s.event_time = c.event_time AND s.event_id = c.event_id)
         ON CONFLICT DO NOTHING"
    );
    Ok(sqlx::query(&statement).persistent(false).execute(conn).await?.rows_affected())
}
