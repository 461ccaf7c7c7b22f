//! The full-text index of the audit trail, kept off the import path: after events are stored,
//! [`run`] copies the projection `q` matches (`skywarden_event_search_text(raw)`, migration
//! 0036) of every event stored since its watermark into `event_search`, whose trigram index
//! answers `q`. What is not indexed yet (the tail) is matched by computing the same projection,
//! so a search is exact whether the indexer has run or not (see `search::events`).

use std::time::Duration;

use chrono::{DateTime, Utc};
use futures_util::TryStreamExt;
use serde::Serialize;

/// Events written by one `INSERT`: bounded work and memory per statement.
pub const BATCH: usize = 5_000;

/// How often `serve` and `skywarden worker` run the indexer.
pub const INTERVAL: Duration = Duration::from_secs(30);

/// How far the watermark stays behind while pg_stat_activity hides some session's transaction.
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

/// Indexes every event stored since the watermark, then moves the watermark. One run at a time
/// over all processes (an advisory lock); a second one returns at once. Idempotent: events
/// already indexed are skipped, and a run cut short only leaves more for the next one.
pub async fn run(pool: &sqlx::PgPool) -> Result<IndexRun, sqlx::Error> {
    let mut reader = pool.begin().await?;
    let locked: bool =
        sqlx::query_scalar!(r#"SELECT pg_try_advisory_xact_lock(hashtext('skywarden-event-search-index')) AS "l!""#)
            .fetch_one(&mut *reader)
            .await?;
    if !locked {
        return Ok(IndexRun::default());
    }
    // `ingested_at` is the inserting transaction's start time, and a transaction may commit
    // long after it: the new watermark stays at or before the start of every transaction open
    // now, so rows this run cannot see yet are all newer than it. pg_stat_activity hides other
    // roles' transactions from an unprivileged role: while any is hidden, the watermark stays
    // [`HIDDEN_HOLD_BACK`] behind instead.
    let mark: DateTime<Utc> = sqlx::query_scalar!(
        r#"SELECT LEAST(clock_timestamp(),
                        (SELECT min(xact_start) FROM pg_stat_activity
                         WHERE datname = current_database() AND pid <> pg_backend_pid()),
                        (SELECT clock_timestamp() - make_interval(secs => $1) FROM pg_stat_activity
                         WHERE datname = current_database() AND query = '<insufficient privilege>'
                         LIMIT 1)) AS "mark!""#,
        HIDDEN_HOLD_BACK.as_secs_f64(),
    )
    .fetch_one(&mut *reader)
    .await?;
    let mut indexed = 0u64;
    {
        // A new snapshot (read committed), taken after the mark.
        let mut rows = sqlx::query!(
            r#"SELECT c.account_id, c.event_time, c.event_id, skywarden_event_search_text(c.raw) AS "search_text!"
               FROM cloudtrail_events c
               WHERE c.ingested_at >= skywarden_event_search_tail_start()
                 AND NOT EXISTS (SELECT 1 FROM event_search s
                                 WHERE s.account_id = c.account_id AND s.event_time = c.event_time
                                   AND s.event_id = c.event_id)"#
        )
        .fetch(&mut *reader);
        let mut batch = Batch::default();
        while let Some(row) = rows.try_next().await? {
            batch.push(row.account_id, row.event_time, row.event_id, row.search_text);
            if batch.len() >= BATCH {
                indexed += batch.write(pool).await?;
            }
        }
        indexed += batch.write(pool).await?;
    }
    sqlx::query!(
        "UPDATE event_search_watermark
         SET indexed_until = GREATEST(indexed_until, $1), last_run_at = now(), last_indexed = $2",
        mark,
        i64::try_from(indexed).unwrap_or(i64::MAX),
    )
    .execute(&mut *reader)
    .await?;
    reader.commit().await?;
    if indexed > 0 {
        tracing::info!(indexed, "full-text index updated");
    }
    Ok(IndexRun { indexed, ran: true })
}

/// Up to [`BATCH`] rows for `event_search`, as columns.
#[derive(Default)]
struct Batch {
    accounts: Vec<String>,
    times: Vec<DateTime<Utc>>,
    ids: Vec<String>,
    texts: Vec<String>,
}

impl Batch {
    fn len(&self) -> usize {
        self.ids.len()
    }

    fn push(&mut self, account: String, time: DateTime<Utc>, id: String, text: String) {
        self.accounts.push(account);
        self.times.push(time);
        self.ids.push(id);
        self.texts.push(text);
    }

    /// Writes and empties the batch; returns the rows added.
    async fn write(&mut self, pool: &sqlx::PgPool) -> Result<u64, sqlx::Error> {
        if self.ids.is_empty() {
            return Ok(0);
        }
        let written = sqlx::query!(
            "INSERT INTO event_search (account_id, event_time, event_id, search_text)
             SELECT * FROM unnest($1::text[], $2::timestamptz[], $3::text[], $4::text[])
             ON CONFLICT DO NOTHING",
            &self.accounts,
            &self.times,
            &self.ids,
            &self.texts,
        )
        .execute(pool)
        .await?
        .rows_affected();
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
