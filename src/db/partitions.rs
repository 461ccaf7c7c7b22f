//! Monthly partitions of the time-partitioned tables, created on demand before a batch is
//! written. Each process remembers which months it has already ensured. `skywarden archive`
//! drops past months, possibly from another process, so that memory can be wrong for a month
//! that has ended. Two ways to live with it:
//! - [`PartitionCache::ensure`] trusts it only for months no archive run can have dropped yet
//!   (those not yet ended) and re-checks the others at every call, in one round trip: for
//!   callers that write inside a transaction they cannot simply repeat (the pollers' pages).
//! - [`PartitionCache::ensure_trusted`] trusts it for every month: no round trip once a month is
//!   known. The caller must handle the write failing with "no partition of relation found for
//!   row" ([`is_missing_partition`]): [`PartitionCache::forget`] the table and write again. The
//!   bulk writer (`ingest::store::BatchWriter`) does, so an import's batches cost no check.
//!
//! While an archive run has a month detached and not yet dropped, it holds the advisory lock
//! the partition creator takes for that month (migration 0039): creating the month waits for
//! the drop, then creates it anew, instead of failing on a partition nothing can see.

use std::collections::HashSet;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use chrono::{DateTime, Datelike, Duration, Months, TimeZone, Utc};
use futures_util::future::BoxFuture;
use sqlx::PgConnection;

/// Tables partitioned by month.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum PartitionedTable {
    CloudTrailEvents,
    FlowRecords,
}

impl PartitionedTable {
    pub fn name(self) -> &'static str {
        match self {
            Self::CloudTrailEvents => "cloudtrail_events",
            Self::FlowRecords => "flow_records",
        }
    }
}

/// First instant of the UTC month holding `time`.
pub fn month_start(time: DateTime<Utc>) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(time.year(), time.month(), 1, 0, 0, 0).single().unwrap_or(time)
}

/// The months this process has made sure of, per table (see the module's comment).
#[derive(Default)]
pub struct PartitionCache {
    known: Mutex<HashSet<(PartitionedTable, DateTime<Utc>)>>,
    /// Statements sent to create or check partitions: what the cache saves, for tests and
    /// benchmarks.
    round_trips: AtomicU64,
}

impl PartitionCache {
    /// Makes sure a partition exists for every month in `months`, re-checking the months that
    /// have ended even when they are known. (Boxed: see `BatchWriter::write`.)
    pub fn ensure<'a>(
        &'a self,
        conn: &'a mut PgConnection,
        table: PartitionedTable,
        months: Vec<DateTime<Utc>>,
    ) -> BoxFuture<'a, Result<(), sqlx::Error>> {
        Box::pin(self.ensure_months(conn, table, months, false))
    }

    /// Makes sure a partition exists for every month in `months` not known yet. A known month
    /// may have been dropped by an archive run since: the caller [`Self::forget`]s the table and
    /// tries again when its write fails with [`is_missing_partition`].
    pub fn ensure_trusted<'a>(
        &'a self,
        conn: &'a mut PgConnection,
        table: PartitionedTable,
        months: Vec<DateTime<Utc>>,
    ) -> BoxFuture<'a, Result<(), sqlx::Error>> {
        Box::pin(self.ensure_months(conn, table, months, true))
    }

    /// Forgets every month known for `table`: the next call checks (and re-creates) each.
    pub fn forget(&self, table: PartitionedTable) {
        self.known.lock().expect("partition cache poisoned").retain(|(t, _)| *t != table);
    }

    /// How many statements this cache has sent to create or check partitions.
    pub fn round_trips(&self) -> u64 {
        self.round_trips.load(Ordering::Relaxed)
    }

    async fn ensure_months(
        &self,
        conn: &mut PgConnection,
        table: PartitionedTable,
        months: Vec<DateTime<Utc>>,
        trust_ended: bool,
    ) -> Result<(), sqlx::Error> {
        let now = Utc::now();
        let mut missing = Vec::new();
        {
            let known = self.known.lock().expect("partition cache poisoned");
            for month in months {
                let month = month_start(month);
                let trusted = known.contains(&(table, month)) && (trust_ended || !droppable(month, now));
                if !trusted && !missing.contains(&month) {
                    missing.push(month);
                }
            }
        }
        if missing.is_empty() {
            return Ok(());
        }
        // The function creates only what is absent, under a per-partition lock held to the end
        // of this statement: always taken in month order, so two writers cannot deadlock. Every
        // month's lock is taken first (the one-time filter runs before any row), so a writer
        // waiting for a month an archive run is detaching (the run holds that month's lock)
        // has created nothing yet: creating a partition locks the parent, which the run's
        // detach would then wait for.
        missing.sort();
        self.round_trips.fetch_add(1, Ordering::Relaxed);
        sqlx::query!(
            "SELECT skywarden_ensure_month_partition($1, m) FROM unnest($2::timestamptz[]) AS m
             WHERE (SELECT count(*) FROM (
                      SELECT pg_advisory_xact_lock(hashtext($1 || '_p' || to_char(x AT TIME ZONE 'UTC', 'YYYYMM')))
                      FROM unnest($2::timestamptz[]) AS x) AS locks) >= 0",
            table.name(),
            &missing
        )
        .fetch_all(&mut *conn)
        .await?;
        self.known.lock().expect("partition cache poisoned").extend(missing.into_iter().map(|m| (table, m)));
        Ok(())
    }
}

/// Whether a write failed because no partition holds one of its rows: SQLSTATE 23514 with no
/// constraint named (a CHECK constraint's violation, the same code, names its constraint).
pub fn is_missing_partition(error: &sqlx::Error) -> bool {
    error.as_database_error().is_some_and(|e| e.code().is_some_and(|code| code == "23514") && e.constraint().is_none())
}

/// Whether the ensure function found the month's table detached (SQLSTATE 55000): an archive
/// run dropping it. The statement that waited for the archive's lock may still see the table in
/// its catalog snapshot; a new statement sees the drop, so the caller retries.
pub fn is_detached_partition(error: &sqlx::Error) -> bool {
    error.as_database_error().is_some_and(|e| {
        e.code().is_some_and(|code| code == "55000") && e.message().contains("is not an attached partition")
    })
}

/// Whether an archive run may have dropped the month's partition behind this process's back:
/// it archives only months that ended (`--older-than 0` at the least). A day of margin covers
/// clocks that disagree between hosts at the turn of a month.
fn droppable(month: DateTime<Utc>, now: DateTime<Utc>) -> bool {
    month.checked_add_months(Months::new(1)).is_none_or(|end| end <= now + Duration::days(1))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_months_not_yet_ended_are_trusted() {
        let now = Utc.with_ymd_and_hms(2026, 12, 10, 12, 0, 0).unwrap();
        assert!(!droppable(month_start(now), now));
        assert!(!droppable(Utc.with_ymd_and_hms(2027, 1, 1, 0, 0, 0).unwrap(), now));
        assert!(droppable(Utc.with_ymd_and_hms(2026, 11, 1, 0, 0, 0).unwrap(), now));
        // The last day of a month: another host may already be in the next one.
        let last_day = Utc.with_ymd_and_hms(2026, 12, 31, 8, 0, 0).unwrap();
        assert!(droppable(month_start(last_day), last_day));
    }
}
