//! Whether detection keeps up: the durable mark of what still awaits detection, when a run last
//! succeeded, and since when runs fail. A detection run that fails after polling leaves its events
//! stored (the next run covers them again), but until then nothing alerts: `accounts status`, the
//! API and `/metrics` show it from here.

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::PgPool;

/// The longest error kept: a cause chain, not a dump.
const MAX_ERROR_CHARS: i32 = 2000;

#[derive(Clone, Debug, Default, PartialEq, Serialize, utoipa::ToSchema)]
pub struct DetectionHealth {
    /// Rows stored from this time on may not have been through detection yet.
    pub pending_since: Option<DateTime<Utc>>,
    pub last_success_at: Option<DateTime<Utc>>,
    /// Set while the latest runs failed: when the first of them failed.
    pub failing_since: Option<DateTime<Utc>>,
    pub consecutive_failures: i32,
    pub last_error: Option<String>,
    /// Work detectors skipped or left for later runs because a per-run bound was reached.
    #[serde(default)]
    pub skips: Vec<DetectionSkip>,
    /// Who runs detection now (one pass at a time over every process), what waits for a pass,
    /// and how often callers found it held and left their rows to it. None when it could not
    /// be read (the rest of the health still is).
    pub lease: Option<super::lease::LeaseState>,
}

/// A detector that reached a per-run bound: what it skipped or deferred, and whether that is
/// still outstanding (no later run of it finished with nothing left over).
#[derive(Clone, Debug, Default, PartialEq, Serialize, utoipa::ToSchema)]
pub struct DetectionSkip {
    pub policy_id: String,
    pub last_skipped_at: DateTime<Utc>,
    /// Items (principals, sources, connections, hours) the latest such run skipped or deferred.
    pub last_skipped: i64,
    pub skipped_total: i64,
    pub note: String,
    /// Still behind: no run of the detector since finished with nothing left over.
    pub outstanding: bool,
    /// When work was last dropped unevaluated (backlog past its age, or a detector switched off
    /// with work left): kept when a later run clears the skip.
    pub last_dropped_at: Option<DateTime<Utc>>,
    /// Items (principals, hours) dropped that time.
    pub last_dropped: i64,
    pub dropped_total: i64,
    pub dropped_note: Option<String>,
}

impl DetectionHealth {
    pub fn failing(&self) -> bool {
        self.consecutive_failures > 0
    }
}

pub async fn read(pool: &PgPool) -> Result<DetectionHealth, sqlx::Error> {
    let row = sqlx::query!(
        "SELECT pending_since AS \"pending_since?\", last_success_at, failing_since, consecutive_failures,
                last_error
         FROM detection_watermark"
    )
    .fetch_optional(pool)
    .await?;
    let mut health = row.map_or_else(DetectionHealth::default, |r| DetectionHealth {
        pending_since: r.pending_since,
        last_success_at: r.last_success_at,
        failing_since: r.failing_since,
        consecutive_failures: r.consecutive_failures,
        last_error: r.last_error,
        ..DetectionHealth::default()
    });
    health.skips = skips(pool).await?;
    health.lease = super::lease::state(pool)
        .await
        .inspect_err(|error| tracing::warn!(%error, "cannot read the detection lease for detection health"))
        .ok();
    Ok(health)
}

/// What detectors skipped or deferred, by policy.
pub async fn skips(pool: &PgPool) -> Result<Vec<DetectionSkip>, sqlx::Error> {
    sqlx::query_as!(
        DetectionSkip,
        r#"SELECT policy_id, last_skipped_at, last_skipped, skipped_total, note,
                  (cleared_at IS NULL OR cleared_at < last_skipped_at) AS "outstanding!",
                  last_dropped_at, last_dropped, dropped_total, dropped_note
           FROM detection_skips ORDER BY policy_id"#
    )
    .fetch_all(pool)
    .await
}

/// Records that `policy` reached a per-run bound and skipped or deferred `skipped` items (and
/// logs it): detection health, the API and `/metrics` show it. `new`: how many of them no
/// earlier run had deferred already (the running total counts each item once).
pub async fn record_skip(pool: &PgPool, policy: &str, skipped: i64, new: i64, note: &str) -> Result<(), sqlx::Error> {
    tracing::warn!(policy, skipped, new, note, "detector reached its per-run bound");
    sqlx::query!(
        "INSERT INTO detection_skips (policy_id, last_skipped_at, last_skipped, skipped_total, note)
         VALUES ($1, clock_timestamp(), $2, $3, $4)
         ON CONFLICT (policy_id) DO UPDATE
         SET last_skipped_at = clock_timestamp(), last_skipped = $2,
             skipped_total = detection_skips.skipped_total + $3, note = $4",
        policy,
        skipped,
        new,
        note,
    )
    .execute(pool)
    .await?;
    Ok(())
}

/// Records that `policy` dropped `dropped` items unevaluated (and logs it): apart from the skip,
/// so the next run's [`clear_skip`] does not hide it.
pub async fn record_dropped(pool: &PgPool, policy: &str, dropped: i64, note: &str) -> Result<(), sqlx::Error> {
    tracing::warn!(policy, dropped, note, "detector dropped work unevaluated");
    sqlx::query!(
        "INSERT INTO detection_skips (policy_id, last_skipped_at, last_skipped, skipped_total, note, cleared_at,
                                      last_dropped_at, last_dropped, dropped_total, dropped_note)
         VALUES ($1, clock_timestamp(), 0, 0, '', clock_timestamp(), clock_timestamp(), $2, $2, $3)
         ON CONFLICT (policy_id) DO UPDATE
         SET last_dropped_at = clock_timestamp(), last_dropped = $2,
             dropped_total = detection_skips.dropped_total + $2, dropped_note = $3",
        policy,
        dropped,
        note,
    )
    .execute(pool)
    .await?;
    Ok(())
}

/// Records that a run of `policy` finished with nothing left over.
pub async fn clear_skip(pool: &PgPool, policy: &str) -> Result<(), sqlx::Error> {
    sqlx::query!(
        "UPDATE detection_skips SET cleared_at = clock_timestamp()
         WHERE policy_id = $1 AND (cleared_at IS NULL OR cleared_at < last_skipped_at)",
        policy,
    )
    .execute(pool)
    .await?;
    Ok(())
}

/// Clock hours `policy` left for a later run, with the scope they were left from.
pub async fn backlog(pool: &PgPool, policy: &str) -> Result<Vec<(DateTime<Utc>, Option<DateTime<Utc>>)>, sqlx::Error> {
    let rows = sqlx::query!("SELECT hour, since FROM detection_backlog WHERE policy_id = $1 ORDER BY hour", policy)
        .fetch_all(pool)
        .await?;
    Ok(rows.into_iter().map(|r| (r.hour, r.since)).collect())
}

/// Leaves `hours` for a later run of `policy` (the earliest scope wins for an hour left twice).
pub async fn defer(
    pool: &PgPool,
    policy: &str,
    hours: &[DateTime<Utc>],
    since: Option<DateTime<Utc>>,
) -> Result<(), sqlx::Error> {
    sqlx::query!(
        "INSERT INTO detection_backlog (policy_id, hour, since) SELECT $1, unnest($2::timestamptz[]), $3
         ON CONFLICT (policy_id, hour) DO UPDATE
         SET since = CASE WHEN detection_backlog.since IS NULL OR EXCLUDED.since IS NULL THEN NULL
                          ELSE least(detection_backlog.since, EXCLUDED.since) END",
        policy,
        hours,
        since,
    )
    .execute(pool)
    .await?;
    Ok(())
}

/// Removes `hours` from `policy`'s backlog: they were evaluated.
pub async fn done(pool: &PgPool, policy: &str, hours: &[DateTime<Utc>]) -> Result<(), sqlx::Error> {
    sqlx::query!("DELETE FROM detection_backlog WHERE policy_id = $1 AND hour = ANY($2)", policy, hours)
        .execute(pool)
        .await?;
    Ok(())
}

/// A piece of paged work a detector left for a later run (migration 0041): the items of `key`'s
/// scope active from `from` to `until`, resuming after `after` (in the detector's order; empty
/// when none was judged yet).
#[derive(Clone, Debug, PartialEq)]
pub struct Cursor {
    pub key: String,
    pub from: DateTime<Utc>,
    pub until: DateTime<Utc>,
    pub after: String,
    pub added_at: DateTime<Utc>,
}

/// The paged work left under keys starting with `prefix`, oldest first.
pub async fn cursors(pool: &PgPool, prefix: &str) -> Result<Vec<Cursor>, sqlx::Error> {
    sqlx::query_as!(
        Cursor,
        r#"SELECT policy_id AS key, hour AS from, until AS "until!", coalesce(cursor, '') AS "after!", added_at
           FROM detection_backlog WHERE starts_with(policy_id, $1) AND until IS NOT NULL
           ORDER BY added_at, policy_id, hour"#,
        prefix,
    )
    .fetch_all(pool)
    .await
}

/// Leaves paged work for a later run. Work not yet started (`after` empty) merges into the key's
/// piece not yet started, over the wider span: a key has at most that one and the one being
/// drained, so the backlog and its probes stay bounded, and new work never resets the place of
/// the piece being drained (one cursor for both would, and under sustained import it would never
/// drain). A piece left with progress is its key's only one (the earlier ones got the budget
/// first). Two pieces never share a start: a new one starts a microsecond earlier (judging the
/// principals active in it too changes nothing; missing one would).
async fn leave(pool: &PgPool, cursor: &Cursor) -> Result<(), sqlx::Error> {
    sqlx::query!(
        "WITH merged AS (
             UPDATE detection_backlog b
             SET hour = least(b.hour, $2) - CASE WHEN EXISTS (
                            SELECT FROM detection_backlog o
                            WHERE o.policy_id = $1 AND o.hour = least(b.hour, $2) AND o.hour <> b.hour)
                        THEN interval '1 microsecond' ELSE interval '0' END,
                 until = greatest(b.until, $3)
             WHERE b.policy_id = $1 AND b.until IS NOT NULL AND coalesce(b.cursor, '') = $4 AND $4 = ''
             RETURNING 1)
         INSERT INTO detection_backlog (policy_id, hour, until, cursor)
         SELECT $1, $2 - CASE WHEN EXISTS (SELECT FROM detection_backlog WHERE policy_id = $1 AND hour = $2)
                         THEN interval '1 microsecond' ELSE interval '0' END, $3, $4
         WHERE NOT EXISTS (SELECT FROM merged)
         ON CONFLICT (policy_id, hour) DO UPDATE
         SET until = greatest(detection_backlog.until, EXCLUDED.until),
             cursor = least(coalesce(detection_backlog.cursor, ''), EXCLUDED.cursor)",
        cursor.key,
        cursor.from,
        cursor.until,
        cursor.after,
    )
    .execute(pool)
    .await?;
    Ok(())
}

/// Moves resumed paged work on to `after`, or removes it (`None`: finished), unless another run
/// changed it meanwhile (then it stays as that run left it, to be resumed again).
async fn resume(pool: &PgPool, was: &Cursor, after: Option<&str>) -> Result<(), sqlx::Error> {
    let (key, from, until, old) = (&was.key, was.from, was.until, &was.after);
    match after {
        Some(after) => {
            // Progress: the piece is drained, not stuck, so its age starts again.
            sqlx::query!(
                "UPDATE detection_backlog SET cursor = $5, added_at = CASE WHEN $5 <> $4 THEN now() ELSE added_at END
                 WHERE policy_id = $1 AND hour = $2 AND until = $3 AND coalesce(cursor, '') = $4",
                key,
                from,
                until,
                old,
                after,
            )
            .execute(pool)
            .await?
        }
        None => {
            sqlx::query!(
                "DELETE FROM detection_backlog
                 WHERE policy_id = $1 AND hour = $2 AND until = $3 AND coalesce(cursor, '') = $4",
                key,
                from,
                until,
                old,
            )
            .execute(pool)
            .await?
        }
    };
    Ok(())
}

/// Records a failed run (best effort: when the database itself is the failure, the log has it).
pub async fn record_failure(pool: &PgPool, error: &str) {
    let recorded = sqlx::query!(
        "INSERT INTO detection_watermark (pending_since, failing_since, consecutive_failures, last_error)
         VALUES (now(), now(), 1, left($1, $2))
         ON CONFLICT (only_row) DO UPDATE
         SET failing_since = COALESCE(detection_watermark.failing_since, now()),
             consecutive_failures = detection_watermark.consecutive_failures + 1,
             last_error = left($1, $2)",
        error,
        MAX_ERROR_CHARS,
    )
    .execute(pool)
    .await;
    if let Err(record_error) = recorded {
        tracing::warn!(%record_error, detection_error = %error, "cannot record the failed detection run");
    }
}

/// What a detection run changes in the backlog and the skips, kept until its alerts are stored
/// ([`StateChanges::apply`]): a run that fails before storing leaves the backlog as it was, and
/// one that stores nothing (a backtest) changes nothing.
#[derive(Debug, Default)]
pub struct StateChanges {
    changes: Vec<Change>,
}

#[derive(Debug)]
enum Change {
    Done { policy: String, hours: Vec<DateTime<Utc>> },
    Defer { policy: String, hours: Vec<DateTime<Utc>>, since: Option<DateTime<Utc>> },
    Skip { policy: String, skipped: i64, new: i64, note: String },
    Dropped { policy: String, dropped: i64, note: String },
    Clear { policy: String },
    Expire { key: String, policy: String },
    ExpirePrefix { prefix: String, policy: String },
    Leave { cursor: Cursor },
    Resume { was: Cursor, after: Option<String> },
}

/// Backlog rows older than this are dropped unevaluated (and detection health says so): a
/// detector that can never catch up must not carry them for ever.
pub const BACKLOG_MAX_DAYS: i32 = 7;

impl StateChanges {
    pub fn done(&mut self, policy: &str, hours: &[DateTime<Utc>]) {
        if !hours.is_empty() {
            self.changes.push(Change::Done { policy: policy.to_string(), hours: hours.to_vec() });
        }
    }

    pub fn defer(&mut self, policy: &str, hours: &[DateTime<Utc>], since: Option<DateTime<Utc>>) {
        if !hours.is_empty() {
            self.changes.push(Change::Defer { policy: policy.to_string(), hours: hours.to_vec(), since });
        }
    }

    pub fn record_skip(&mut self, policy: &str, skipped: i64, new: i64, note: String) {
        self.changes.push(Change::Skip { policy: policy.to_string(), skipped, new, note });
    }

    /// Records work dropped unevaluated ([`record_dropped`]).
    pub fn record_dropped(&mut self, policy: &str, dropped: i64, note: String) {
        self.changes.push(Change::Dropped { policy: policy.to_string(), dropped, note });
    }

    pub fn clear_skip(&mut self, policy: &str) {
        self.changes.push(Change::Clear { policy: policy.to_string() });
    }

    /// Drops the rows of backlog `key` older than [`BACKLOG_MAX_DAYS`] once the rest is applied,
    /// as a skip of `policy`.
    pub fn expire(&mut self, key: &str, policy: &str) {
        self.changes.push(Change::Expire { key: key.to_string(), policy: policy.to_string() });
    }

    /// [`Self::expire`] for every backlog key starting with `prefix` (paged work, a key a scope).
    pub fn expire_prefix(&mut self, prefix: &str, policy: &str) {
        self.changes.push(Change::ExpirePrefix { prefix: prefix.to_string(), policy: policy.to_string() });
    }

    /// Leaves paged work for a later run ([`cursors`] reads it back).
    pub fn leave(&mut self, cursor: Cursor) {
        self.changes.push(Change::Leave { cursor });
    }

    /// Moves paged work an earlier run left on to `after`, or drops it once finished (`None`).
    pub fn resume(&mut self, was: &Cursor, after: Option<String>) {
        self.changes.push(Change::Resume { was: was.clone(), after });
    }

    pub fn is_empty(&self) -> bool {
        self.changes.is_empty()
    }

    /// Writes the changes, in the order they were made, and forgets them.
    pub async fn apply(&mut self, pool: &PgPool) -> Result<(), sqlx::Error> {
        for change in std::mem::take(&mut self.changes) {
            match change {
                Change::Done { policy, hours } => done(pool, &policy, &hours).await?,
                Change::Defer { policy, hours, since } => defer(pool, &policy, &hours, since).await?,
                Change::Skip { policy, skipped, new, note } => record_skip(pool, &policy, skipped, new, &note).await?,
                Change::Dropped { policy, dropped, note } => record_dropped(pool, &policy, dropped, &note).await?,
                Change::Clear { policy } => clear_skip(pool, &policy).await?,
                Change::Expire { key, policy } => expire(pool, &key, &policy).await?,
                Change::ExpirePrefix { prefix, policy } => expire_prefix(pool, &prefix, &policy).await?,
                Change::Leave { cursor } => leave(pool, &cursor).await?,
                Change::Resume { was, after } => resume(pool, &was, after.as_deref()).await?,
            }
        }
        Ok(())
    }
}

/// Drops the rows of backlog `key` older than [`BACKLOG_MAX_DAYS`], as a skip of `policy`.
async fn expire(pool: &PgPool, key: &str, policy: &str) -> Result<(), sqlx::Error> {
    let expired = sqlx::query_scalar!(
        r#"WITH gone AS (DELETE FROM detection_backlog
                         WHERE policy_id = $1 AND added_at < now() - make_interval(days => $2) RETURNING 1)
           SELECT count(*) AS "n!" FROM gone"#,
        key,
        BACKLOG_MAX_DAYS,
    )
    .fetch_one(pool)
    .await?;
    if expired > 0 {
        let note = format!(
            "{expired} clock hours left in the backlog for more than {BACKLOG_MAX_DAYS} days were dropped unevaluated"
        );
        record_dropped(pool, policy, expired, &note).await?;
    }
    Ok(())
}

/// Drops the backlog rows under keys starting with `prefix` older than [`BACKLOG_MAX_DAYS`], as
/// a skip of `policy`.
async fn expire_prefix(pool: &PgPool, prefix: &str, policy: &str) -> Result<(), sqlx::Error> {
    let expired = sqlx::query_scalar!(
        r#"WITH gone AS (DELETE FROM detection_backlog
                         WHERE starts_with(policy_id, $1) AND added_at < now() - make_interval(days => $2) RETURNING 1)
           SELECT count(*) AS "n!" FROM gone"#,
        prefix,
        BACKLOG_MAX_DAYS,
    )
    .fetch_one(pool)
    .await?;
    if expired > 0 {
        let note = format!(
            "{expired} pieces of work left in the backlog for more than {BACKLOG_MAX_DAYS} days were dropped unevaluated"
        );
        record_dropped(pool, policy, expired, &note).await?;
    }
    Ok(())
}
