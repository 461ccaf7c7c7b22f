//! Rows read by one poller page, stored in the transaction that also saves the checkpoint.

use std::collections::BTreeSet;

use chrono::{DateTime, Utc};
use sqlx::PgConnection;

use super::{Job, PollContext};
use crate::db::copy::CopyBuffer;
use crate::db::partitions::{PartitionedTable, month_start};
use crate::geo::GeoCache;
use crate::ingest::cloudtrail::CloudTrailEvent;
use crate::ingest::flowlogs::FlowRecord;
use crate::ingest::store::{self, Batch};

#[derive(Default)]
struct TableRows {
    rows: CopyBuffer,
    months: BTreeSet<DateTime<Utc>>,
    accounts: BTreeSet<String>,
}

/// Events and flow records of one page (or S3 object), and what could not be read.
#[derive(Default)]
pub struct PageRows {
    events: TableRows,
    flows: TableRows,
    /// Records that could not be stored, each naming itself.
    pub rejected: Vec<String>,
}

impl PageRows {
    pub fn add_event(&mut self, event: &CloudTrailEvent, geo: &mut GeoCache) {
        let info = event.source_ip.and_then(|ip| geo.lookup(ip));
        event.write_row(info.as_deref(), &mut self.events.rows);
        self.events.months.insert(month_start(event.event_time));
        self.events.accounts.insert(event.account_id.clone());
    }

    pub fn add_flow(
        &mut self,
        record: &FlowRecord,
        account: &str,
        fallback_time: Option<DateTime<Utc>>,
        geo: &mut GeoCache,
    ) {
        record.write_row(account, fallback_time, geo, &mut self.flows.rows);
        self.flows.months.insert(month_start(record.bucket_time(fallback_time)));
        self.flows.accounts.insert(account.to_owned());
    }

    /// Takes the rows of a batch parsed by the importer's parser.
    pub fn add_batch(&mut self, batch: Batch) {
        let target = match batch.table {
            PartitionedTable::CloudTrailEvents => &mut self.events,
            PartitionedTable::FlowRecords => &mut self.flows,
        };
        target.rows.append(&batch.rows);
        target.months.extend(batch.months);
        target.accounts.extend(batch.accounts);
    }

    pub fn reject(&mut self, reason: String) {
        self.rejected.push(reason);
    }

    pub fn len(&self) -> usize {
        self.events.rows.rows() + self.flows.rows.rows()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn log_rejected(&self, job: &Job) {
        for reason in &self.rejected {
            tracing::warn!(job_id = job.job_id, account_id = %job.account_id, source = job.source.as_str(), reason, "record not stored");
        }
    }

    /// Creates the partitions and account rows the page needs. Outside the page's
    /// transaction: a partition created in a transaction that rolls back would be remembered
    /// as existing.
    pub async fn prepare(&self, ctx: &PollContext) -> Result<(), sqlx::Error> {
        let mut conn = ctx.pool.acquire().await?;
        for (table, rows) in
            [(PartitionedTable::CloudTrailEvents, &self.events), (PartitionedTable::FlowRecords, &self.flows)]
        {
            if rows.rows.is_empty() {
                continue;
            }
            ctx.partitions.ensure(&mut conn, table, rows.months.iter().copied().collect()).await?;
            let accounts: Vec<String> = rows.accounts.iter().cloned().collect();
            sqlx::query!(
                "INSERT INTO accounts (account_id) SELECT unnest($1::text[]) ON CONFLICT DO NOTHING",
                &accounts
            )
            .execute(&mut *conn)
            .await?;
        }
        Ok(())
    }

    /// Stores the page and the job's checkpoint in one transaction; returns how many rows were
    /// new.
    pub async fn commit_with_checkpoint(
        mut self,
        ctx: &PollContext,
        job: &mut Job,
        checkpoint: serde_json::Value,
        covered_until: Option<DateTime<Utc>>,
    ) -> Result<u64, super::PollError> {
        self.prepare(ctx).await?;
        let mut tx = crate::db::begin(&ctx.pool).await?;
        let stored = self.store(&mut tx).await?;
        job.save_checkpoint(&mut tx, checkpoint, covered_until, stored).await?;
        tx.commit().await?;
        self.log_rejected(job);
        Ok(stored)
    }

    /// Stores the rows not stored yet; returns how many were new.
    pub async fn store(&mut self, tx: &mut PgConnection) -> Result<u64, sqlx::Error> {
        let mut stored = 0;
        for (table, rows) in
            [(PartitionedTable::CloudTrailEvents, &self.events), (PartitionedTable::FlowRecords, &self.flows)]
        {
            let outcome = store::insert_in_transaction(tx, table, &rows.rows).await?;
            stored += outcome.inserted;
            for (index, reason) in outcome.rejected {
                self.rejected.push(format!("{} row {}: rejected by PostgreSQL: {reason}", table.name(), index + 1));
            }
        }
        Ok(stored)
    }
}
