//! Writes parsed batches to PostgreSQL through COPY.
//!
//! Fast path: COPY straight into the partitioned table. If the batch holds a row that is already
//! stored (a re-import), the unique key rejects the COPY and the batch goes through a staging
//! table and `INSERT ... ON CONFLICT DO NOTHING`, which stores only the new rows. If a row is
//! malformed for PostgreSQL, rows are written one at a time so only that row is lost, and it is
//! named in the error.
//!
//! Partitions: the writer trusts its partition cache for every month it knows, so a batch costs
//! no partition check. A month the archive dropped behind its back fails the write with "no
//! partition of relation found for row"; the writer then forgets the table's months and writes
//! the batch again, which re-creates the partition (see `db::partitions`).

use std::collections::{BTreeSet, HashSet};
use std::path::PathBuf;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use futures_util::future::BoxFuture;
use sqlx::pool::PoolConnection;
use sqlx::postgres::PgPoolCopyExt;
use sqlx::{Connection, PgConnection, PgPool, Postgres};

use crate::db::copy::CopyBuffer;
use crate::db::partitions::{PartitionCache, PartitionedTable, is_detached_partition, is_missing_partition};
use crate::ingest::{api_rollup, cloudtrail, flowlogs};

/// Rows for one table from one file.
pub struct Batch {
    pub table: PartitionedTable,
    pub rows: CopyBuffer,
    /// Where each row came from (record or line number in the file), for error messages.
    pub row_positions: Vec<u64>,
    /// What a position counts: "record" or "line".
    pub position_unit: &'static str,
    pub months: BTreeSet<DateTime<Utc>>,
    pub accounts: BTreeSet<String>,
    pub file: Arc<PathBuf>,
}

impl Batch {
    pub fn new(
        table: PartitionedTable,
        file: Arc<PathBuf>,
        position_unit: &'static str,
        capacity_bytes: usize,
    ) -> Self {
        Self {
            table,
            rows: CopyBuffer::with_capacity(capacity_bytes),
            row_positions: Vec::new(),
            position_unit,
            months: BTreeSet::new(),
            accounts: BTreeSet::new(),
            file,
        }
    }
}

/// What writing one batch did.
#[derive(Debug, Default)]
pub struct BatchOutcome {
    pub inserted: u64,
    pub duplicates: u64,
    /// Rows PostgreSQL refused: (row label, reason).
    pub rejected: Vec<(String, String)>,
}

#[derive(Debug, thiserror::Error)]
#[error("writing to {table} failed")]
pub struct StoreError {
    table: &'static str,
    source: sqlx::Error,
}

impl StoreError {
    fn for_table(table: PartitionedTable) -> impl Fn(sqlx::Error) -> StoreError + Copy {
        move |source| StoreError { table: table.name(), source }
    }
}

const UNIQUE_VIOLATION: &str = "23505";

fn columns(table: PartitionedTable) -> &'static str {
    match table {
        PartitionedTable::CloudTrailEvents => cloudtrail::COLUMNS,
        PartitionedTable::FlowRecords => flowlogs::COLUMNS,
    }
}

/// Writes batches on one connection of the pool, held (not detached) for the writer's life:
/// the pool counts it, so a process stays within its `--db-connections`.
pub struct BatchWriter {
    conn: PoolConnection<Postgres>,
    partitions: Arc<PartitionCache>,
    known_accounts: HashSet<String>,
    staging_ready: HashSet<PartitionedTable>,
    /// Set while a batch is written: a writer dropped then (its task cancelled) may have left
    /// its connection inside a transaction, so the connection is closed, not lent on.
    mid_batch: bool,
}

impl Drop for BatchWriter {
    fn drop(&mut self) {
        if self.mid_batch {
            self.conn.close_on_drop();
        }
    }
}

impl BatchWriter {
    /// Takes a connection from `pool` until the writer is dropped.
    pub async fn connect(pool: &PgPool, partitions: Arc<PartitionCache>) -> Result<Self, sqlx::Error> {
        let conn = pool.acquire().await?;
        Ok(Self { conn, partitions, known_accounts: HashSet::new(), staging_ready: HashSet::new(), mid_batch: false })
    }

    /// Boxed so the future's `Send` bound is proven here, with concrete lifetimes, rather than in
    /// the spawned task (where the compiler cannot prove it for every lifetime).
    pub fn write<'a>(&'a mut self, batch: &'a Batch) -> BoxFuture<'a, Result<BatchOutcome, StoreError>> {
        Box::pin(async move {
            self.mid_batch = true;
            let outcome = self.write_batch(batch).await;
            self.mid_batch = false;
            outcome
        })
    }

    async fn write_batch(&mut self, batch: &Batch) -> Result<BatchOutcome, StoreError> {
        let mut attempt = 1;
        loop {
            match self.write_batch_once(batch).await {
                // Two writers whose batches hold the same events in different orders can each
                // wait for the other's uncommitted copy; PostgreSQL rolls one back. The batch is
                // idempotent (duplicates are skipped), so the victim writes it again.
                Err(error) if is_deadlock(&error) && attempt < DEADLOCK_ATTEMPTS => {
                    tracing::warn!(
                        table = batch.table.name(),
                        attempt,
                        "batch was a deadlock victim; writing it again"
                    );
                    attempt += 1;
                    tokio::time::sleep(std::time::Duration::from_millis(50 * attempt as u64)).await;
                }
                // An archive run detached or dropped a month this writer's cache still knows:
                // forget the table's months so the next attempt re-creates the partition (its
                // ensure waits for the archive's lock on the month until the drop or re-attach
                // has committed). The batch is idempotent, as above; a short pause keeps the
                // attempts from racing the archive's own statements.
                Err(error)
                    if (is_missing_partition(&error) || is_detached_partition(&error))
                        && attempt < DEADLOCK_ATTEMPTS =>
                {
                    tracing::info!(
                        table = batch.table.name(),
                        attempt,
                        "a partition this writer knew is gone (archived); re-creating it and writing the batch again"
                    );
                    self.partitions.forget(batch.table);
                    tokio::time::sleep(std::time::Duration::from_millis(100 * u64::from(attempt))).await;
                    attempt += 1;
                }
                result => return result.map_err(StoreError::for_table(batch.table)),
            }
        }
    }

    async fn write_batch_once(&mut self, batch: &Batch) -> Result<BatchOutcome, sqlx::Error> {
        let table = batch.table;
        self.register_accounts(&batch.accounts).await?;
        self.partitions.ensure_trusted(&mut self.conn, table, batch.months.iter().copied().collect()).await?;
        let rows = batch.rows.rows() as u64;
        match self.copy_direct(table, batch.rows.as_bytes()).await {
            Ok(()) => Ok(BatchOutcome { inserted: rows, ..Default::default() }),
            Err(error) if is_unique_violation(&error) => {
                let inserted = self.copy_deduplicated(table, batch.rows.as_bytes()).await;
                match inserted {
                    Ok(inserted) => Ok(BatchOutcome { inserted, duplicates: rows - inserted, ..Default::default() }),
                    Err(error) if is_data_error(&error) => self.write_row_by_row(batch).await,
                    Err(error) => Err(error),
                }
            }
            Err(error) if is_data_error(&error) => self.write_row_by_row(batch).await,
            Err(error) => Err(error),
        }
    }

    async fn register_accounts(&mut self, accounts: &BTreeSet<String>) -> Result<(), sqlx::Error> {
        let mut new = Vec::new();
        for account in accounts {
            if !self.known_accounts.contains(account) {
                new.push(account.clone());
            }
        }
        if new.is_empty() {
            return Ok(());
        }
        sqlx::query!("INSERT INTO accounts (account_id) SELECT unnest($1::text[]) ON CONFLICT DO NOTHING", &new)
            .execute(&mut *self.conn)
            .await?;
        self.known_accounts.extend(new);
        Ok(())
    }

    fn copy_direct<'a>(
        &'a mut self,
        table: PartitionedTable,
        data: &'a [u8],
    ) -> BoxFuture<'a, Result<(), sqlx::Error>> {
        Box::pin(self.copy_direct_inner(table, data))
    }

    async fn copy_direct_inner(&mut self, table: PartitionedTable, data: &[u8]) -> Result<(), sqlx::Error> {
        // A writer dropped mid-batch closes this connection (`mid_batch`) rather than lend it on.
        #[allow(clippy::disallowed_methods)]
        let mut tx = self.conn.begin().await?;
        let statement = format!("COPY {} ({}) FROM STDIN", table.name(), columns(table));
        let mut copy = tx.copy_in_raw(&statement).await?;
        if let Err(error) = copy.send(data).await {
            let _ = copy.abort("send failed").await;
            return Err(error);
        }
        copy.finish().await?;
        if table == PartitionedTable::CloudTrailEvents {
            api_rollup::record(&mut tx, data).await?;
        }
        tx.commit().await
    }

    /// COPY into a temporary staging table, then insert what is not already stored.
    fn copy_deduplicated<'a>(
        &'a mut self,
        table: PartitionedTable,
        data: &'a [u8],
    ) -> BoxFuture<'a, Result<u64, sqlx::Error>> {
        Box::pin(self.copy_deduplicated_inner(table, data))
    }

    async fn copy_deduplicated_inner(&mut self, table: PartitionedTable, data: &[u8]) -> Result<u64, sqlx::Error> {
        let stage = format!("stage_{}", table.name());
        if !self.staging_ready.contains(&table) {
            let create = format!(
                "CREATE TEMP TABLE IF NOT EXISTS {stage} (LIKE {} INCLUDING DEFAULTS) ON COMMIT DELETE ROWS",
                table.name()
            );
            sqlx::query(&create).execute(&mut *self.conn).await?;
            self.staging_ready.insert(table);
        }
        // A writer dropped mid-batch closes this connection (`mid_batch`) rather than lend it on.
        #[allow(clippy::disallowed_methods)]
        let mut tx = self.conn.begin().await?;
        let inserted = stage_and_insert(&mut tx, table, &stage, data).await?;
        // Rows already stored roll up again harmlessly (first and last seen are idempotent).
        rollup(&mut tx, table, data).await?;
        tx.commit().await?;
        Ok(inserted)
    }

    /// Slow path for a batch PostgreSQL refused: one row at a time, so one bad row costs only
    /// itself.
    async fn write_row_by_row(&mut self, batch: &Batch) -> Result<BatchOutcome, sqlx::Error> {
        let mut outcome = BatchOutcome::default();
        let lines = split_lines(batch.rows.as_bytes());
        for (line, position) in lines.into_iter().zip(batch.row_positions.iter().copied()) {
            match self.copy_deduplicated(batch.table, line).await {
                Ok(1) => outcome.inserted += 1,
                Ok(_) => outcome.duplicates += 1,
                Err(error) if is_data_error(&error) => {
                    outcome.rejected.push((format!("{} {position}", batch.position_unit), database_message(&error)));
                }
                Err(error) => return Err(error),
            }
        }
        Ok(outcome)
    }
}

/// The rows of a COPY text buffer, each with its newline.
fn split_lines(data: &[u8]) -> Vec<&[u8]> {
    let mut lines = Vec::new();
    let mut start = 0;
    for (i, byte) in data.iter().enumerate() {
        if *byte == b'\n' {
            lines.push(&data[start..=i]);
            start = i + 1;
        }
    }
    lines
}

/// Loads raw COPY rows with no parsing, deduplication or fallback: the benchmark's baseline.
pub async fn copy_raw(pool: &PgPool, table: PartitionedTable, data: &[u8]) -> Result<(), sqlx::Error> {
    let statement = format!("COPY {} ({}) FROM STDIN", table.name(), columns(table));
    let mut copy = pool.copy_in_raw(&statement).await?;
    copy.send(data).await?;
    copy.finish().await?;
    Ok(())
}

fn is_unique_violation(error: &sqlx::Error) -> bool {
    error.as_database_error().and_then(|e| e.code()).is_some_and(|code| code == UNIQUE_VIOLATION)
}

/// How many times a batch is written when PostgreSQL picks it as a deadlock's victim (or a
/// partition it needs was dropped behind the writer's back).
const DEADLOCK_ATTEMPTS: u32 = 4;

/// SQLSTATE 40P01: this transaction was rolled back to break a deadlock.
fn is_deadlock(error: &sqlx::Error) -> bool {
    error.as_database_error().and_then(|e| e.code()).is_some_and(|code| code == "40P01")
}

/// SQLSTATE class 22 (data exception): a value PostgreSQL cannot store, such as bad JSON.
fn is_data_error(error: &sqlx::Error) -> bool {
    error.as_database_error().and_then(|e| e.code()).is_some_and(|code| code.starts_with("22"))
}

fn database_message(error: &sqlx::Error) -> String {
    error.as_database_error().map(|e| e.message().to_string()).unwrap_or_else(|| error.to_string())
}

/// Stores rows inside the caller's transaction, skipping those already stored, so a poller can
/// commit its data and its checkpoint together. Partitions must exist (they are created outside
/// the transaction: see `PartitionCache::ensure`). A row PostgreSQL refuses costs only itself:
/// the batch is retried row by row under savepoints.
pub fn insert_in_transaction<'a>(
    tx: &'a mut PgConnection,
    table: PartitionedTable,
    rows: &'a CopyBuffer,
) -> BoxFuture<'a, Result<TransactionInsert, sqlx::Error>> {
    Box::pin(async move {
        let mut outcome = TransactionInsert::default();
        if rows.is_empty() {
            return Ok(outcome);
        }
        let stage = format!("stage_tx_{}", table.name());
        let create = format!(
            "CREATE TEMP TABLE IF NOT EXISTS {stage} (LIKE {} INCLUDING DEFAULTS) ON COMMIT DROP",
            table.name()
        );
        sqlx::query(&create).execute(&mut *tx).await?;
        sqlx::query("SAVEPOINT skywarden_rows").execute(&mut *tx).await?;
        match stage_and_insert(tx, table, &stage, rows.as_bytes()).await {
            Ok(inserted) => {
                outcome.inserted = inserted;
                sqlx::query("RELEASE SAVEPOINT skywarden_rows").execute(&mut *tx).await?;
                rollup(tx, table, rows.as_bytes()).await?;
            }
            Err(error) if is_data_error(&error) => {
                sqlx::query("ROLLBACK TO SAVEPOINT skywarden_rows").execute(&mut *tx).await?;
                // The rows accepted, rolled up once after the loop (one sorted upsert, not one a row).
                let mut accepted = Vec::with_capacity(rows.as_bytes().len());
                for (index, line) in split_lines(rows.as_bytes()).into_iter().enumerate() {
                    sqlx::query("SAVEPOINT skywarden_row").execute(&mut *tx).await?;
                    match stage_and_insert(tx, table, &stage, line).await {
                        Ok(inserted) => {
                            outcome.inserted += inserted;
                            sqlx::query("RELEASE SAVEPOINT skywarden_row").execute(&mut *tx).await?;
                            accepted.extend_from_slice(line);
                            if !line.ends_with(b"\n") {
                                accepted.push(b'\n');
                            }
                        }
                        Err(error) if is_data_error(&error) => {
                            sqlx::query("ROLLBACK TO SAVEPOINT skywarden_row").execute(&mut *tx).await?;
                            outcome.rejected.push((index, database_message(&error)));
                        }
                        Err(error) => return Err(error),
                    }
                }
                sqlx::query("RELEASE SAVEPOINT skywarden_rows").execute(&mut *tx).await?;
                rollup(tx, table, &accepted).await?;
            }
            Err(error) => return Err(error),
        }
        Ok(outcome)
    })
}

/// What `insert_in_transaction` stored.
#[derive(Debug, Default)]
pub struct TransactionInsert {
    pub inserted: u64,
    /// Rows PostgreSQL refused: (index of the row in the batch, reason).
    pub rejected: Vec<(usize, String)>,
}

/// Loads `data` into the (temporary) staging table with COPY, then stores the rows not already
/// stored. Runs inside the caller's transaction.
/// Rolls up stored CloudTrail rows (`api_rollup`; rows already stored roll up as before: first
/// and last seen are idempotent).
async fn rollup(tx: &mut PgConnection, table: PartitionedTable, data: &[u8]) -> Result<(), sqlx::Error> {
    if table == PartitionedTable::CloudTrailEvents {
        api_rollup::record(tx, data).await?;
    }
    Ok(())
}

async fn stage_and_insert(
    tx: &mut PgConnection,
    table: PartitionedTable,
    stage: &str,
    data: &[u8],
) -> Result<u64, sqlx::Error> {
    sqlx::query(&format!("TRUNCATE {stage}")).execute(&mut *tx).await?;
    let mut copy = tx.copy_in_raw(&format!("COPY {stage} ({}) FROM STDIN", columns(table))).await?;
    if let Err(error) = copy.send(data).await {
        let _ = copy.abort("send failed").await;
        return Err(error);
    }
    copy.finish().await?;
    let insert = format!(
        "INSERT INTO {table} ({cols}) SELECT {cols} FROM {stage} ON CONFLICT DO NOTHING",
        table = table.name(),
        cols = columns(table)
    );
    Ok(sqlx::query(&insert).execute(&mut *tx).await?.rows_affected())
}
