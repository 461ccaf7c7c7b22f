//! Monthly partitions of the time-partitioned tables, created on demand before a batch is
//! written. Each process remembers which months it has already ensured.

use std::collections::HashSet;
use std::sync::Mutex;

use chrono::{DateTime, Datelike, TimeZone, Utc};
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

#[derive(Default)]
pub struct PartitionCache {
    known: Mutex<HashSet<(PartitionedTable, DateTime<Utc>)>>,
}

impl PartitionCache {
    /// Makes sure a partition exists for every month in `months`. (Boxed: see `BatchWriter::write`.)
    pub fn ensure<'a>(
        &'a self,
        conn: &'a mut PgConnection,
        table: PartitionedTable,
        months: Vec<DateTime<Utc>>,
    ) -> BoxFuture<'a, Result<(), sqlx::Error>> {
        Box::pin(self.ensure_months(conn, table, months))
    }

    async fn ensure_months(
        &self,
        conn: &mut PgConnection,
        table: PartitionedTable,
        months: Vec<DateTime<Utc>>,
    ) -> Result<(), sqlx::Error> {
        let mut missing = Vec::new();
        {
            let known = self.known.lock().expect("partition cache poisoned");
            for month in months {
                let month = month_start(month);
                if !known.contains(&(table, month)) && !missing.contains(&month) {
                    missing.push(month);
                }
            }
        }
        for month in missing {
            sqlx::query!("SELECT skywarden_ensure_month_partition($1, $2)", table.name(), month)
                .fetch_one(&mut *conn)
                .await?;
            self.known.lock().expect("partition cache poisoned").insert((table, month));
        }
        Ok(())
    }
}
