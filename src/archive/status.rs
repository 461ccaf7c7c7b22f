//! The archive's runs and months as recorded: the lock one run holds, the run rows, what
//! `skywarden archive status` prints and what /metrics exports.

use std::fmt::Write as _;

use chrono::{DateTime, Utc};
use sqlx::{PgConnection, PgPool};

use super::{ArchiveOptions, RunReport};

/// Session advisory lock key of archive runs ("skywarden archive").
const LOCK_KEY: i64 = 0x736b_7977_6172_6368;

pub async fn try_lock(conn: &mut PgConnection) -> Result<bool, sqlx::Error> {
    sqlx::query_scalar!(r#"SELECT pg_try_advisory_lock($1) AS "locked!""#, LOCK_KEY).fetch_one(conn).await
}

pub async fn unlock(conn: &mut PgConnection) -> Result<(), sqlx::Error> {
    sqlx::query_scalar!(r#"SELECT pg_advisory_unlock($1) AS "unlocked!""#, LOCK_KEY).fetch_one(conn).await?;
    Ok(())
}

/// Runs still `running` while we hold the lock were killed: say so.
pub async fn fail_interrupted_runs(pool: &PgPool) -> Result<(), sqlx::Error> {
    let ended = sqlx::query!(
        "UPDATE archive_runs SET status = 'failed', finished_at = now(), error = 'interrupted (the process ended mid-run)'
         WHERE status = 'running'"
    )
    .execute(pool)
    .await?;
    if ended.rows_affected() > 0 {
        tracing::warn!(
            runs = ended.rows_affected(),
            "earlier archive runs were interrupted; this run resumes their months"
        );
    }
    Ok(())
}

pub async fn start_run(pool: &PgPool, options: &ArchiveOptions) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar!(
        "INSERT INTO archive_runs (destination, older_than_days, dry_run) VALUES ($1, $2, $3) RETURNING run_id",
        options.destination_text,
        i32::try_from(options.older_than_days).unwrap_or(i32::MAX),
        options.dry_run
    )
    .fetch_one(pool)
    .await
}

pub async fn finish_run(
    pool: &PgPool,
    run_id: i64,
    report: &RunReport,
    objects: usize,
    error: Option<&str>,
) -> Result<(), sqlx::Error> {
    let failed = report.failed();
    let error = error.map(str::to_owned).or_else(|| (failed > 0).then(|| format!("{failed} months failed")));
    let rows: i64 =
        report.months.iter().filter(|m| m.outcome == "dropped" || m.outcome == "verified").map(|m| m.rows).sum();
    sqlx::query!(
        "UPDATE archive_runs SET finished_at = now(), status = $2, error = $3, partitions = $4, objects = $5,
                rows_archived = $6
         WHERE run_id = $1",
        run_id,
        if error.is_some() { "failed" } else { "done" },
        error,
        i32::try_from(report.months.len()).unwrap_or(i32::MAX),
        i32::try_from(objects).unwrap_or(i32::MAX),
        rows
    )
    .execute(pool)
    .await?;
    Ok(())
}

#[derive(Clone, Debug, serde::Serialize)]
pub struct RunStatus {
    pub run_id: i64,
    pub destination: String,
    pub older_than_days: i32,
    pub dry_run: bool,
    pub started_at: DateTime<Utc>,
    pub finished_at: Option<DateTime<Utc>>,
    pub status: String,
    pub error: Option<String>,
    pub partitions: i32,
    pub objects: i32,
    pub rows_archived: i64,
}

#[derive(Clone, Debug, serde::Serialize)]
pub struct MonthStatus {
    pub source: String,
    pub month_start: DateTime<Utc>,
    pub generation: i32,
    pub destination: String,
    pub state: String,
    pub run_id: i64,
    pub objects: i32,
    pub row_count: i64,
    /// Rows of a month that came back which an earlier generation already held: dropped, not
    /// written again.
    pub already_archived: i64,
    pub error: Option<String>,
    pub updated_at: DateTime<Utc>,
}

/// The latest `limit` runs, newest first.
pub async fn runs(pool: &PgPool, limit: i64) -> Result<Vec<RunStatus>, sqlx::Error> {
    sqlx::query_as!(
        RunStatus,
        "SELECT run_id, destination, older_than_days, dry_run, started_at, finished_at, status, error, partitions,
                objects, rows_archived
         FROM archive_runs ORDER BY run_id DESC LIMIT $1",
        limit
    )
    .fetch_all(pool)
    .await
}

/// Every archived or archiving month.
pub async fn months(pool: &PgPool) -> Result<Vec<MonthStatus>, sqlx::Error> {
    sqlx::query_as!(
        MonthStatus,
        r#"SELECT source, month_start, generation, destination, state, run_id,
                  coalesce(cardinality(objects), 0) AS "objects!", row_count, already_archived, error, updated_at
           FROM archive_partitions ORDER BY source, month_start, generation"#
    )
    .fetch_all(pool)
    .await
}

/// Prometheus lines: months by source and state, months whose last attempt failed, and the
/// last run's end and outcome.
pub async fn write_metrics(out: &mut String, pool: &PgPool) {
    let Ok(months) = months(pool).await else { return };
    let Ok(runs) = runs(pool, 1).await else { return };
    out.push_str("# HELP skywarden_archive_months Archived months by source and state (writing, verified, dropped).\n");
    out.push_str("# TYPE skywarden_archive_months gauge\n");
    let mut counts = std::collections::BTreeMap::new();
    for month in &months {
        *counts.entry((month.source.as_str(), month.state.as_str())).or_insert(0u64) += 1;
    }
    for ((source, state), count) in &counts {
        let _ = writeln!(out, "skywarden_archive_months{{source=\"{source}\",state=\"{state}\"}} {count}");
    }
    let deferred = |m: &&MonthStatus| m.error.as_deref().is_some_and(|e| e.starts_with(super::DEFERRED_PREFIX));
    out.push_str("# HELP skywarden_archive_month_errors Months whose last archive attempt failed.\n");
    out.push_str("# TYPE skywarden_archive_month_errors gauge\n");
    let errors = months.iter().filter(|m| m.error.is_some() && !deferred(m)).count();
    let _ = writeln!(out, "skywarden_archive_month_errors {errors}");
    out.push_str(
        "# HELP skywarden_archive_months_deferred Verified months left attached because a long transaction held their table.\n",
    );
    out.push_str("# TYPE skywarden_archive_months_deferred gauge\n");
    let _ = writeln!(out, "skywarden_archive_months_deferred {}", months.iter().filter(deferred).count());
    out.push_str(
        "# HELP skywarden_archive_rows_already_archived Rows of returning months dropped because an earlier generation holds them.\n",
    );
    out.push_str("# TYPE skywarden_archive_rows_already_archived gauge\n");
    let _ = writeln!(
        out,
        "skywarden_archive_rows_already_archived {}",
        months.iter().map(|m| m.already_archived).sum::<i64>()
    );
    // A month a killed run left detached (or half-detached) is invisible to search and refuses
    // late rows until the next run: it must show.
    if let Ok(detached) = detached_months(pool).await {
        out.push_str(
            "# HELP skywarden_archive_detached_partitions Month tables taken out of their parent and not yet dropped (the next run finishes them).\n",
        );
        out.push_str("# TYPE skywarden_archive_detached_partitions gauge\n");
        let _ = writeln!(out, "skywarden_archive_detached_partitions {detached}");
    }
    if let Some(run) = runs.first() {
        out.push_str(
            "# HELP skywarden_archive_last_run_failed Whether the latest archive run failed (1) or not (0).\n",
        );
        out.push_str("# TYPE skywarden_archive_last_run_failed gauge\n");
        let _ = writeln!(out, "skywarden_archive_last_run_failed {}", u8::from(run.status == "failed"));
        out.push_str("# HELP skywarden_archive_last_run_rows Rows the latest archive run archived.\n");
        out.push_str("# TYPE skywarden_archive_last_run_rows gauge\n");
        let _ = writeln!(out, "skywarden_archive_last_run_rows {}", run.rows_archived);
        if let Some(finished) = run.finished_at {
            out.push_str(
                "# HELP skywarden_archive_last_run_finished_seconds When the latest archive run ended (Unix time).\n",
            );
            out.push_str("# TYPE skywarden_archive_last_run_finished_seconds gauge\n");
            let _ = writeln!(out, "skywarden_archive_last_run_finished_seconds {}", finished.timestamp());
        }
    }
}

/// Month tables of events or flows detached (or pending detach) and not dropped.
pub async fn detached_months(pool: &PgPool) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar!(
        r#"SELECT count(*) AS "n!" FROM pg_class c LEFT JOIN pg_inherits i ON i.inhrelid = c.oid
           WHERE c.relkind = 'r' AND (i.inhrelid IS NULL OR i.inhdetachpending)
             AND c.relnamespace = (SELECT relnamespace FROM pg_class WHERE oid = 'cloudtrail_events'::regclass)
             AND (c.relname ~ '^cloudtrail_events_p[0-9]{6}$' OR c.relname ~ '^flow_records_p[0-9]{6}$')"#
    )
    .fetch_one(pool)
    .await
}
