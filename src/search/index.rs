//! The full-text index of the audit trail, kept off the import path: after events are stored,
//! [`run`] copies the projection `q` matches (`skywarden_event_search_text(raw)`, migration
//! 0036) of every event stored since its watermark into `event_search`, whose trigram index
//! answers `q`. What is not indexed yet (the tail) is matched by computing the same projection,
//! so a search is exact whether the indexer has run or not (see `search::events`).

use std::time::Duration;

use chrono::{DateTime, Utc};
use futures_util::future::BoxFuture;
use serde::Serialize;
use sqlx::{Connection, Row};

/// Events indexed by one transaction, which also moves the watermark past them: a run over a
/// long backlog (a large import) keeps what each chunk did, and a crash redoes one chunk.
pub const CHUNK: usize = 5_000;

/// How often `serve` and `skywarden worker` run the indexer.
pub const INTERVAL: Duration = Duration::from_secs(30);

/// How far the watermark stays behind while another role's session, which pg_stat_activity
/// hides from an unprivileged role, holds a transaction open (a snapshot or a transaction id).
pub const HIDDEN_HOLD_BACK: Duration = Duration::from_secs(15 * 60);

/// What one run did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct IndexRun {
    /// Events added to the index (re-seen ones in the overlap are not counted).
    pub indexed: u64,
    /// False when another process held the indexer's lock: this run did nothing.
    pub ran: bool,
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

/// Indexes every event stored since the watermark, [`CHUNK`] events a transaction, moving the
/// watermark with each. One run at a time over all processes (an advisory lock); a second one
/// returns at once. Idempotent: events already indexed are skipped, and a run cut short keeps
/// every chunk it committed.
pub async fn run(pool: &sqlx::PgPool) -> Result<IndexRun, sqlx::Error> {
    run_in_chunks(pool, CHUNK).await
}

/// [`run`] with chunks of `chunk_rows` events.
///
/// One connection of the pool throughout, never two: a run holding one connection while it
/// waits for another could wait for ever beside writers that hold the rest of the pool.
/// (Boxed so the future's `Send` bound is proven here, with concrete lifetimes, rather than in
/// the task that spawns [`schedule`].)
pub fn run_in_chunks(pool: &sqlx::PgPool, chunk_rows: usize) -> BoxFuture<'_, Result<IndexRun, sqlx::Error>> {
    Box::pin(run_on_one_connection(pool, chunk_rows))
}

async fn run_on_one_connection(pool: &sqlx::PgPool, chunk_rows: usize) -> Result<IndexRun, sqlx::Error> {
    let mut session = Session { conn: pool.acquire().await?, clean: false };
    let locked: bool =
        sqlx::query_scalar!(r#"SELECT pg_try_advisory_lock(hashtext('skywarden-event-search-index')) AS "l!""#)
            .fetch_one(&mut *session.conn)
            .await?;
    if !locked {
        session.clean = true;
        return Ok(IndexRun::default());
    }
    let indexed = index_backlog(&mut session.conn, chunk_rows.max(1)).await?;
    sqlx::query(&format!("CLOSE {CURSOR}")).persistent(false).execute(&mut *session.conn).await?;
    sqlx::query_scalar!(r#"SELECT pg_advisory_unlock(hashtext('skywarden-event-search-index')) AS "u!""#)
        .fetch_one(&mut *session.conn)
        .await?;
    session.clean = true;
    if indexed > 0 {
        tracing::info!(indexed, "full-text index updated");
    }
    Ok(IndexRun { indexed, ran: true })
}

/// The cursor over the keys a run indexes (one run a session: the advisory lock).
const CURSOR: &str = "skywarden_index_backlog";

/// A run's connection, which holds the advisory lock and the cursor between chunks: unless the
/// run released both, it is closed rather than returned to the pool (an error, a panic caught
/// by the scheduler, a cancelled task), which releases them.
struct Session {
    conn: sqlx::pool::PoolConnection<sqlx::Postgres>,
    clean: bool,
}

impl Drop for Session {
    fn drop(&mut self) {
        if !self.clean {
            self.conn.close_on_drop();
        }
    }
}

/// Indexes the backlog on `conn`, `chunk_rows` events a transaction; returns the rows added.
/// (Boxed for `Send`: see [`run_in_chunks`].)
fn index_backlog(conn: &mut sqlx::PgConnection, chunk_rows: usize) -> BoxFuture<'_, Result<u64, sqlx::Error>> {
    Box::pin(async move {
        let mut tx = conn.begin().await?;
        let mark = hold_back(&mut tx).await?;
        // The keys to index, oldest stored first, so that after each chunk every event stored
        // before the chunk's last one is indexed (the event time only makes the chunks the same
        // from run to run). A cursor WITH HOLD: its snapshot is taken now, after the mark, and
        // its rows (keys only: the projection is computed as each chunk is written) are kept
        // when this transaction commits, so no lock on `cloudtrail_events` is held while the
        // chunks are written (an import creating a partition would wait for it). Not
        // compile-checked: the query macros cannot describe DECLARE or FETCH; each is sent
        // unnamed, never cached.
        sqlx::query(&format!(
            "DECLARE {CURSOR} NO SCROLL CURSOR WITH HOLD FOR
             SELECT c.account_id, c.event_time, c.event_id, c.ingested_at
             FROM cloudtrail_events c
             WHERE c.ingested_at >= skywarden_event_search_tail_start()
               AND NOT EXISTS (SELECT 1 FROM event_search s
                               WHERE s.account_id = c.account_id AND s.event_time = c.event_time
                                 AND s.event_id = c.event_id)
             ORDER BY c.ingested_at, c.event_time"
        ))
        .persistent(false)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        let mut indexed = 0u64;
        loop {
            let rows = sqlx::query(&format!("FETCH FORWARD {chunk_rows} FROM {CURSOR}"))
                .persistent(false)
                .fetch_all(&mut *conn)
                .await?;
            let mut chunk = Chunk::default();
            for row in &rows {
                chunk.push(row.try_get(0)?, row.try_get(1)?, row.try_get(2)?, row.try_get(3)?);
            }
            if rows.len() < chunk_rows {
                // The last chunk: every event stored before the mark was in the cursor.
                return Ok(indexed + chunk.write(conn, mark, indexed).await?);
            }
            // Events stored at the same instant as the chunk's last one may be in the next chunk:
            // the watermark stops at that instant (it is exclusive).
            let until = chunk.last_stored.map_or(mark, |stored| stored.min(mark));
            indexed += chunk.write(conn, until, indexed).await?;
        }
    })
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
    /// When the last event pushed was stored (the stream is in that order).
    last_stored: Option<DateTime<Utc>>,
}

impl Chunk {
    fn push(&mut self, account: String, time: DateTime<Utc>, id: String, stored: DateTime<Utc>) {
        self.accounts.push(account);
        self.times.push(time);
        self.ids.push(id);
        self.last_stored = Some(stored);
    }

    /// In one transaction: indexes the chunk's events and moves the watermark to `until` (never
    /// back). Empties the chunk; returns the rows added. `before` is what the run added so far.
    async fn write(
        &mut self,
        conn: &mut sqlx::PgConnection,
        until: DateTime<Utc>,
        before: u64,
    ) -> Result<u64, sqlx::Error> {
        let mut tx = conn.begin().await?;
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
        sqlx::query!(
            "UPDATE event_search_watermark
             SET indexed_until = GREATEST(indexed_until, $1), last_run_at = now(), last_indexed = $2",
            until,
            i64::try_from(before + written).unwrap_or(i64::MAX),
        )
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        *self = Self::default();
        Ok(written)
    }
}

/// Runs the indexer every [`INTERVAL`] until `shutdown`; a failed or panicked run is logged
/// and the loop goes on (the next run takes over from the same watermark).
pub async fn schedule(pool: sqlx::PgPool, shutdown: impl std::future::Future<Output = ()>) {
    tokio::pin!(shutdown);
    loop {
        match crate::supervise::catch_panic(run(&pool)).await {
            Ok(Ok(_)) => {}
            Ok(Err(error)) => {
                tracing::error!(error = %error, "full-text indexing failed; searches scan the tail meanwhile")
            }
            Err(panic) => tracing::error!(panic = %panic, "full-text indexing panicked"),
        }
        tokio::select! {
            () = &mut shutdown => return,
            () = tokio::time::sleep(INTERVAL) => {}
        }
    }
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
