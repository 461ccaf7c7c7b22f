//! The open security lake: months older than the hot retention, copied from PostgreSQL to
//! Parquet in OCSF classes, in the layout Amazon Security Lake gives custom sources
//! (`ext/<source>/region=<region>/accountId=<id>/eventDay=<YYYYMMDD>/<file>.parquet`), in a
//! folder or S3. A month of events or flows is dropped only after every object is written and
//! read back (each row's id, time and stored JSON checksummed against what was written), and
//! then only once its partition, detached without locking the parent, still holds exactly the
//! verified rows; alerts are copied, never dropped (copied again when one changes). `archive_partitions` records each month's state, so a killed run resumes.
//! docs/archive.md tells the layout, the field mapping and how to query the lake.

mod columns;
pub mod destination;
pub mod ocsf;
pub mod read;
pub mod status;
pub mod store;
mod verify;

use chrono::{DateTime, Utc};
use futures_util::StreamExt;
use sqlx::PgPool;

use self::columns::{ClassSchema, ClassWriter};
use self::destination::Destination;
use self::store::{LakeRow, Source, Tally};

#[derive(Debug, thiserror::Error)]
pub enum ArchiveError {
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
    #[error("destination: {0}")]
    Destination(String),
    #[error("{0}: Parquet: {1}")]
    Parquet(String, #[source] parquet::errors::ParquetError),
    #[error("{table} {month}: verification failed: {detail}")]
    Verification { table: &'static str, month: String, detail: String },
    #[error("another archive run holds the lock (archive_runs lists it)")]
    Busy,
    #[error("stopped after {0} objects (test hook)")]
    Injected(usize),
}

pub struct ArchiveOptions {
    /// Months that ended more than this many days before `now` are archived.
    pub older_than_days: u32,
    /// As given (`s3://bucket/prefix` or a folder), recorded with each month.
    pub destination_text: String,
    pub dry_run: bool,
    /// Rows per Parquet row group (a memory bound of a writer).
    pub row_group_rows: usize,
    /// Buffered bytes per row group (the other bound: a few huge events close a group early).
    pub row_group_bytes: usize,
    pub now: DateTime<Utc>,
    /// Tests: fail once this many objects were written in the run, as a killed process would.
    #[doc(hidden)]
    pub fail_after_objects: Option<usize>,
    /// Tests: awaited at each [`HookPoint`] (to hold a run there, or kill its process).
    #[doc(hidden)]
    pub test_hook: Option<TestHook>,
}

/// Bytes of values a writer buffers per row group by default.
pub const DEFAULT_ROW_GROUP_BYTES: usize = 64 << 20;

/// Where a run calls its test hook.
#[doc(hidden)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HookPoint {
    /// An object was committed; `objects` in this run so far.
    ObjectWritten { objects: usize },
    /// A month's objects are verified; its partition is still attached.
    Verified { source: Source, month: DateTime<Utc> },
    /// The month's partition is detached and locked, before its rows are counted again.
    Detached { source: Source, month: DateTime<Utc> },
}

#[doc(hidden)]
pub type TestHook = std::sync::Arc<dyn Fn(HookPoint) -> futures_util::future::BoxFuture<'static, ()> + Send + Sync>;

/// `SKYWARDEN_ARCHIVE_TEST_PAUSE` (`objects:N`, `verified` or `detached`): the process says so
/// on stderr and sleeps at that point, for tests that kill a real run there. Debug builds only
/// (the kill tests run target/debug/skywarden): in a release build a stray variable must never
/// make a production run sleep an hour holding a detached month.
#[doc(hidden)]
#[cfg(not(debug_assertions))]
pub fn hook_from_env() -> Option<TestHook> {
    None
}

/// See the release build's version: this one honours the variable.
#[doc(hidden)]
#[cfg(debug_assertions)]
pub fn hook_from_env() -> Option<TestHook> {
    let at = std::env::var("SKYWARDEN_ARCHIVE_TEST_PAUSE").ok()?;
    Some(std::sync::Arc::new(move |point: HookPoint| {
        let hit = match point {
            HookPoint::ObjectWritten { objects } => at.strip_prefix("objects:") == Some(objects.to_string().as_str()),
            HookPoint::Verified { .. } => at == "verified",
            HookPoint::Detached { .. } => at == "detached",
        };
        Box::pin(async move {
            if hit {
                eprintln!("archive test pause at {point:?}");
                tokio::time::sleep(std::time::Duration::from_secs(3600)).await;
            }
        })
    }))
}

impl ArchiveOptions {
    pub fn cutoff(&self) -> DateTime<Utc> {
        self.now - chrono::Duration::days(i64::from(self.older_than_days))
    }
}

/// What a run did with one month.
#[derive(Clone, Debug, serde::Serialize)]
pub struct MonthReport {
    pub source: &'static str,
    pub month: String,
    pub rows: i64,
    pub objects: usize,
    /// `would-archive` (dry run), `unchanged`, `verified` (alerts), `dropped`, `deferred`
    /// (verified, left attached: a long transaction holds its table; the next run drops it), or
    /// `failed`.
    pub outcome: String,
    /// Rows dropped without being written again: an earlier generation of the month holds them
    /// (the same file imported again after the month was archived).
    pub already_archived: i64,
    pub error: Option<String>,
}

#[derive(Clone, Debug, serde::Serialize)]
pub struct RunReport {
    pub run_id: i64,
    pub cutoff: DateTime<Utc>,
    pub months: Vec<MonthReport>,
}

impl RunReport {
    pub fn failed(&self) -> usize {
        self.months.iter().filter(|m| m.outcome == "failed").count()
    }
}

/// One archive run over every source. A month that fails is recorded and logged and the run
/// goes on with the next; the run itself fails only when it cannot start or the test hook stops it.
pub async fn run(
    pool: &PgPool,
    destination: &Destination,
    options: &ArchiveOptions,
) -> Result<RunReport, ArchiveError> {
    // A connection of the pool (counted in the process's budget) that is closed, never returned
    // to the pool: if the run panics or is dropped, closing it releases the session locks (the
    // run's, and a month's held across its detach), where a returned one would keep them.
    let mut lock = pool.acquire().await?;
    lock.close_on_drop();
    if !status::try_lock(&mut lock).await? {
        return Err(ArchiveError::Busy);
    }
    let result = run_locked(pool, destination, options, &mut lock).await;
    status::unlock(&mut lock).await?;
    result
}

async fn run_locked(
    pool: &PgPool,
    destination: &Destination,
    options: &ArchiveOptions,
    lock: &mut sqlx::PgConnection,
) -> Result<RunReport, ArchiveError> {
    status::fail_interrupted_runs(pool).await?;
    let run_id = status::start_run(pool, options).await?;
    let cutoff = options.cutoff();
    tracing::info!(run_id, %cutoff, destination = %options.destination_text, dry_run = options.dry_run, "archive run started");
    let mut report = RunReport { run_id, cutoff, months: Vec::new() };
    let mut budget = ObjectBudget { left: options.fail_after_objects, written: 0 };
    let outcome = archive_sources(pool, destination, options, &mut report, &mut budget, lock).await;
    let error = outcome.as_ref().err().map(ToString::to_string);
    status::finish_run(pool, run_id, &report, budget.written, error.as_deref()).await?;
    outcome?;
    tracing::info!(run_id, months = report.months.len(), failed = report.failed(), "archive run finished");
    Ok(report)
}

async fn archive_sources(
    pool: &PgPool,
    destination: &Destination,
    options: &ArchiveOptions,
    report: &mut RunReport,
    budget: &mut ObjectBudget,
    lock: &mut sqlx::PgConnection,
) -> Result<(), ArchiveError> {
    for source in Source::ALL {
        for month in store::months(pool, source, report.cutoff).await? {
            let context = MonthContext { pool, destination, options, run_id: report.run_id, source, month };
            let month_report = match context.archive(budget, lock).await {
                Ok(month_report) => month_report,
                Err(ArchiveError::Injected(n)) => return Err(ArchiveError::Injected(n)),
                Err(error) => context.failed(&error).await,
            };
            report.months.push(month_report);
        }
    }
    Ok(())
}

/// Objects this run may still write before the test hook stops it.
struct ObjectBudget {
    left: Option<usize>,
    written: usize,
}

impl ObjectBudget {
    fn spend(&mut self) -> Result<(), ArchiveError> {
        if self.left == Some(0) {
            return Err(ArchiveError::Injected(self.written));
        }
        self.left = self.left.map(|n| n - 1);
        self.written += 1;
        Ok(())
    }
}

struct MonthContext<'a> {
    pool: &'a PgPool,
    destination: &'a Destination,
    options: &'a ArchiveOptions,
    run_id: i64,
    source: Source,
    month: DateTime<Utc>,
}

impl MonthContext<'_> {
    fn report(&self, rows: i64, objects: usize, outcome: &str) -> MonthReport {
        MonthReport {
            source: self.source.table(),
            month: self.month.format("%Y-%m").to_string(),
            rows,
            objects,
            outcome: outcome.to_owned(),
            already_archived: 0,
            error: None,
        }
    }

    async fn failed(&self, error: &ArchiveError) -> MonthReport {
        tracing::error!(source = self.source.table(), month = %self.month.format("%Y-%m"), %error, "archiving a month failed");
        if let Ok(Some(state)) = store::month_state(self.pool, self.source, self.month).await {
            let _ = store::set_error(self.pool, self.source, self.month, state.generation, &error.to_string()).await;
        }
        MonthReport { error: Some(error.to_string()), ..self.report(0, 0, "failed") }
    }

    /// The test hook at `point` (nothing without one).
    fn hook(&self, point: HookPoint) -> futures_util::future::BoxFuture<'static, ()> {
        match &self.options.test_hook {
            Some(hook) => hook(point),
            None => Box::pin(async {}),
        }
    }

    async fn archive(
        &self,
        budget: &mut ObjectBudget,
        lock: &mut sqlx::PgConnection,
    ) -> Result<MonthReport, ArchiveError> {
        let (source, month, pool) = (self.source, self.month, self.pool);
        if self.options.dry_run {
            return Ok(self.report(store::count(pool, source, month).await?, 0, "would-archive"));
        }
        let previous = store::month_state(pool, source, month).await?;
        let same_destination = previous.as_ref().is_some_and(|p| p.destination == self.options.destination_text);
        let (generation, mut verified) = match &previous {
            None => (0, None),
            // A dropped month came back (late rows re-created its partition): a new generation,
            // new object names, holding only the rows the ledger does not list.
            Some(p) if p.state == "dropped" => (p.generation + 1, None),
            // Verified before 0039 recorded key checksums (0): recomputed below, not a mismatch.
            Some(p) if p.state == "verified" && same_destination && source.drops() && keys_unknown(p) => {
                (p.generation, self.recompute_keys(p.tally).await?)
            }
            Some(p) if p.state == "verified" && same_destination => (p.generation, Some((p.tally, p.keys))),
            Some(p) => (p.generation, None),
        };
        if !source.drops() {
            return self.copy_alerts(generation, verified.map(|(tally, _)| tally), budget).await;
        }
        // PostgreSQL allows one pending detach per parent: one a timed-out or killed run left
        // would make this month's detach fail after all its writing.
        store::finalize_pending(pool, source).await?;
        // Two attempts: rows that arrive between verification and the drop send the month
        // round once more.
        for _ in 0..2 {
            let (tally, keys) = match verified.take() {
                Some(verified) => verified,
                None => {
                    // A month a killed run left detached is read through its parent again.
                    store::ensure_attached(pool, source, month).await?;
                    self.write_and_verify(generation, budget).await?
                }
            };
            self.hook(HookPoint::Verified { source, month }).await;
            if let Some(report) = self.defer_for_old_transactions(tally).await? {
                return Ok(report);
            }
            if let Some(report) = self.drop_verified(generation, tally, keys, lock).await? {
                return Ok(report);
            }
            tracing::warn!(source = source.table(), month = %month.format("%Y-%m"), "rows changed after verification: writing the month again");
            store::set_writing(pool, source, month, generation, &self.options.destination_text, self.run_id).await?;
        }
        Err(self.verification_error("rows kept changing between verification and drop; left in PostgreSQL".into()))
    }

    fn verification_error(&self, detail: String) -> ArchiveError {
        ArchiveError::Verification { table: self.source.table(), month: self.month.format("%Y-%m").to_string(), detail }
    }

    /// A verified month's key tally when the recorded one is unknown (verified before 0039):
    /// the rows PostgreSQL holds now, if their content is still exactly the verified content;
    /// None (write the month again) otherwise.
    async fn recompute_keys(&self, verified: Tally) -> Result<Option<(Tally, Tally)>, ArchiveError> {
        let (content, keys) = self.current_tallies().await?;
        tracing::info!(source = self.source.table(), month = %self.month.format("%Y-%m"), same = content == verified, "recomputed the key checksum of a month verified before the upgrade");
        Ok((content == verified).then_some((verified, keys)))
    }

    /// A verified month is left attached (`deferred`, and so recorded) while an old
    /// transaction holds its parent: a detach would wait for it until its lock timeout, then
    /// leave the month pending, hidden and refusing inserts.
    async fn defer_for_old_transactions(&self, tally: Tally) -> Result<Option<MonthReport>, ArchiveError> {
        let holders = store::old_lock_holders(self.pool, self.source, old_holder_age()).await?;
        if holders.is_empty() {
            return Ok(None);
        }
        let detail = format!(
            "{DEFERRED_PREFIX} transactions hold {} ({}); verified, left attached, dropped by a later run",
            self.source.table(),
            holders.join(", ")
        );
        tracing::warn!(source = self.source.table(), month = %self.month.format("%Y-%m"), %detail, "archive drop deferred");
        if let Some(state) = store::month_state(self.pool, self.source, self.month).await? {
            store::set_error(self.pool, self.source, self.month, state.generation, &detail).await?;
        }
        let report = self.report(tally.rows, 0, "deferred");
        Ok(Some(MonthReport { error: Some(detail), ..report }))
    }

    /// Detaches the verified month and drops it if it still holds the verified rows: the
    /// report, or None when rows changed (the month is attached again). The month's partition
    /// lock is held on `lock` throughout (see [`store::lock_month`]).
    async fn drop_verified(
        &self,
        generation: i32,
        tally: Tally,
        keys: Tally,
        lock: &mut sqlx::PgConnection,
    ) -> Result<Option<MonthReport>, ArchiveError> {
        store::lock_month(lock, self.source, self.month).await?;
        let result = self.detach_and_drop(generation, tally, keys).await;
        // On an error the connection may be unusable: it is closed when the run ends, and the
        // lock with it.
        store::unlock_month(lock, self.source, self.month).await?;
        result
    }

    async fn detach_and_drop(
        &self,
        generation: i32,
        tally: Tally,
        keys: Tally,
    ) -> Result<Option<MonthReport>, ArchiveError> {
        let (source, month, pool) = (self.source, self.month, self.pool);
        let link = store::detach(pool, source, month).await?;
        if link != store::PartitionLink::Detached {
            return Err(self.verification_error(format!("the partition is {link:?} after detaching it")));
        }
        let pause = self.hook(HookPoint::Detached { source, month });
        match store::drop_detached(pool, source, month, generation, keys, pause).await? {
            store::DropOutcome::Changed => Ok(None),
            store::DropOutcome::Dropped { already_archived } => {
                tracing::info!(source = source.table(), month = %month.format("%Y-%m"), rows = tally.rows, already_archived, "partition archived and dropped");
                let report = self.report(tally.rows, self.objects(generation).await?, "dropped");
                Ok(Some(MonthReport { already_archived, ..report }))
            }
        }
    }

    /// Closed alerts are copied, never dropped; a month already copied is copied again (same
    /// names, overwritten) when any of its alerts changed: the content checksum covers every
    /// column, `updated_at` and status included.
    async fn copy_alerts(
        &self,
        generation: i32,
        verified: Option<Tally>,
        budget: &mut ObjectBudget,
    ) -> Result<MonthReport, ArchiveError> {
        if let Some(tally) = verified
            && self.content_tally().await? == tally
        {
            return Ok(self.report(tally.rows, self.objects(generation).await?, "unchanged"));
        }
        let (tally, _) = self.write_and_verify(generation, budget).await?;
        Ok(self.report(tally.rows, self.objects(generation).await?, "verified"))
    }

    /// Rows and content checksum of the month as PostgreSQL holds it now, as it would be written.
    async fn content_tally(&self) -> Result<Tally, ArchiveError> {
        Ok(self.current_tallies().await?.0)
    }

    /// The content and key tallies of the month as PostgreSQL holds it now.
    async fn current_tallies(&self) -> Result<(Tally, Tally), ArchiveError> {
        let content = ContentLeaves::of(class_schema(self.source));
        let mut rows = store::rows(self.pool, self.source, self.month);
        let (mut tally, mut keys) = (Tally::default(), Tally::default());
        while let Some(row) = rows.next().await {
            let row = row?;
            tally.add_parts(&content.parts(&row.values));
            keys.add_key(&row.account, &row.id, row.time);
        }
        Ok((tally, keys))
    }

    async fn objects(&self, generation: i32) -> Result<usize, ArchiveError> {
        Ok(store::month_state(self.pool, self.source, self.month)
            .await?
            .filter(|s| s.generation == generation)
            .map_or(0, |s| s.objects.len()))
    }

    /// Writes the month's objects, removes those of an earlier attempt no longer written, reads
    /// every object back and compares each row's content with what was written. The verified
    /// content tally and the key tally of the rows written.
    async fn write_and_verify(
        &self,
        generation: i32,
        budget: &mut ObjectBudget,
    ) -> Result<(Tally, Tally), ArchiveError> {
        let (source, month, pool) = (self.source, self.month, self.pool);
        // Every object an earlier attempt of this generation recorded (one by one, as written).
        let previous = store::month_state(pool, source, month)
            .await?
            .filter(|p| p.generation == generation && p.destination == self.options.destination_text);
        store::set_writing(pool, source, month, generation, &self.options.destination_text, self.run_id).await?;
        let (written, keys) = self.write(generation, budget).await?;
        let names: Vec<String> = written.iter().map(|(key, _)| key.clone()).collect();
        store::set_objects(pool, source, month, generation, &names).await?;
        let stale: Vec<String> = previous.into_iter().flat_map(|p| p.objects).filter(|k| !names.contains(k)).collect();
        for key in &stale {
            self.destination.delete(key).await?;
        }
        let read_back = verify::read_back(self.destination, &written).await?;
        let mut expected = Tally::default();
        for (_, tally) in &written {
            expected.merge(*tally);
        }
        if read_back != expected || keys.rows != expected.rows {
            return Err(self.verification_error(format!(
                "objects hold {} rows (checksum {}), {} were written (checksum {})",
                read_back.rows, read_back.checksum, expected.rows, expected.checksum
            )));
        }
        store::set_verified(pool, source, month, generation, read_back, keys).await?;
        Ok((read_back, keys))
    }

    /// Streams the month into one file per (region, account, day): the keys and content
    /// tallies of the files, and the key tally of every row written. Encoding, compression and
    /// file I/O run on blocking threads; what waits in memory is one row group per open file.
    async fn write(
        &self,
        generation: i32,
        budget: &mut ObjectBudget,
    ) -> Result<(Vec<(String, Tally)>, Tally), ArchiveError> {
        let schema = class_schema(self.source);
        let content = ContentLeaves::of(schema);
        let mut rows = store::rows(self.pool, self.source, self.month);
        let mut written = Vec::new();
        let mut keys = Tally::default();
        let mut open: Option<OpenFile> = None;
        let streamed: Result<(), ArchiveError> = async {
            while let Some(row) = rows.next().await {
                let row = row?;
                let key = object_key(self.source, self.month, generation, &row);
                if let Some(file) = open.take_if(|f| f.key != key) {
                    written.push(self.close(file, generation, budget).await?);
                }
                let mut file = match open.take() {
                    Some(file) => file,
                    None => self.open(schema, key).await?,
                };
                keys.add_key(&row.account, &row.id, row.time);
                file.tally.add_parts(&content.parts(&row.values));
                let full = file.writer.buffer(row.values).map_err(|e| ArchiveError::Parquet(file.key.clone(), e))?;
                if full {
                    let writer = file.writer;
                    file.writer = blocking(&file.key, move || {
                        let mut writer = writer;
                        writer.flush().map(|()| writer)
                    })
                    .await?;
                }
                open = Some(file);
            }
            Ok(())
        }
        .await;
        if let Err(error) = streamed {
            if let Some(file) = open {
                // Never leave a half-made object behind (a folder would show it).
                let _ = tokio::fs::remove_file(&file.staged).await;
            }
            return Err(error);
        }
        if let Some(file) = open {
            written.push(self.close(file, generation, budget).await?);
        }
        Ok((written, keys))
    }

    /// A staged file and its writer, for the object `key`.
    async fn open(&self, schema: &'static ClassSchema, key: String) -> Result<OpenFile, ArchiveError> {
        let staged = self.destination.stage(&key)?;
        let (rows, bytes) = (self.options.row_group_rows, self.options.row_group_bytes);
        let path = staged.clone();
        let writer = blocking(&key, move || {
            let file = std::fs::File::create(&path)
                .map_err(|e| parquet::errors::ParquetError::General(format!("{}: {e}", path.display())))?;
            schema.writer(file, rows, bytes)
        })
        .await?;
        Ok(OpenFile { key, staged, writer, tally: Tally::default() })
    }

    async fn close(
        &self,
        file: OpenFile,
        generation: i32,
        budget: &mut ObjectBudget,
    ) -> Result<(String, Tally), ArchiveError> {
        let OpenFile { key, staged, writer, tally } = file;
        let committed = match blocking(&key, move || writer.finish()).await {
            Ok(_) => match budget.spend() {
                Ok(()) => self.destination.commit(&staged, &key).await,
                Err(stop) => Err(stop),
            },
            Err(error) => Err(error),
        };
        if committed.is_err() {
            // Never leave a half-made object behind (a folder would show it).
            let _ = tokio::fs::remove_file(&staged).await;
        }
        committed?;
        store::add_object(self.pool, self.source, self.month, generation, &key).await?;
        self.hook(HookPoint::ObjectWritten { objects: budget.written }).await;
        Ok((key, tally))
    }
}

/// What a deferred month's recorded error starts with (status and /metrics tell these apart
/// from failures).
pub const DEFERRED_PREFIX: &str = "deferred:";

/// A month verified before migration 0039 has no key checksum (0 with rows: a real sum is 0
/// with odds 2^-64).
fn keys_unknown(state: &store::MonthState) -> bool {
    state.keys.checksum == 0 && state.keys.rows > 0
}

/// How old a transaction holding a parent must be to defer a detach: older than any batch of
/// ingest or search, far younger than the detach's lock timeout (5 min).
const OLD_HOLDER_AGE: std::time::Duration = std::time::Duration::from_secs(60);

static OLD_HOLDER_AGE_OVERRIDE_MS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// Tests: a shorter age for [`OLD_HOLDER_AGE`] (process-wide; 0 restores it).
#[doc(hidden)]
pub fn set_old_holder_age_for_tests(age: std::time::Duration) {
    let ms = u64::try_from(age.as_millis()).unwrap_or(u64::MAX);
    OLD_HOLDER_AGE_OVERRIDE_MS.store(ms, std::sync::atomic::Ordering::Relaxed);
}

fn old_holder_age() -> std::time::Duration {
    match OLD_HOLDER_AGE_OVERRIDE_MS.load(std::sync::atomic::Ordering::Relaxed) {
        0 => OLD_HOLDER_AGE,
        ms => std::time::Duration::from_millis(ms),
    }
}

/// Runs blocking Parquet work (encoding, compression, file I/O) off the async runtime.
async fn blocking<T: Send + 'static>(
    key: &str,
    work: impl FnOnce() -> Result<T, parquet::errors::ParquetError> + Send + 'static,
) -> Result<T, ArchiveError> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|e| ArchiveError::Destination(format!("{key}: the writing thread failed: {e}")))?
        .map_err(|e| ArchiveError::Parquet(key.to_owned(), e))
}

struct OpenFile {
    key: String,
    staged: std::path::PathBuf,
    writer: ClassWriter<'static>,
    tally: Tally,
}

/// Where a class's content leaves ([`verify::CONTENT_LEAVES`]) are in its rows.
struct ContentLeaves([usize; 4]);

impl ContentLeaves {
    fn of(schema: &ClassSchema) -> Self {
        Self(verify::CONTENT_LEAVES.map(|leaf| {
            schema.leaves.iter().position(|(path, _)| *path == leaf).expect("every class has the content leaves")
        }))
    }

    /// A row's content as the read-back hashes it.
    fn parts<'a>(&self, values: &'a [columns::Value]) -> [&'a str; 4] {
        verify::content_parts(self.0.map(|i| match values.get(i) {
            Some(columns::Value::Str(text)) => Some(text.as_str()),
            _ => None,
        }))
    }
}

/// The class schema of a source (built once per process).
fn class_schema(source: Source) -> &'static ClassSchema {
    use std::sync::OnceLock;
    static SCHEMAS: [OnceLock<ClassSchema>; 3] = [OnceLock::new(), OnceLock::new(), OnceLock::new()];
    match source {
        Source::CloudTrail => SCHEMAS[0].get_or_init(|| ClassSchema::new(ocsf::API_ACTIVITY, "time")),
        Source::Flows => SCHEMAS[1].get_or_init(|| ClassSchema::new(ocsf::NETWORK_ACTIVITY, "time")),
        Source::Alerts => SCHEMAS[2].get_or_init(|| ClassSchema::new(ocsf::DETECTION_FINDING, "time")),
    }
}

/// `ext/<source>/region=<region>/accountId=<id>/eventDay=<YYYYMMDD>/<table>-<YYYYMM>-g<n>.parquet`:
/// the same month written again gets the same names (re-archiving overwrites, never adds).
pub fn object_key(source: Source, month: DateTime<Utc>, generation: i32, row: &LakeRow) -> String {
    let region = match row.region.as_deref().filter(|r| !r.is_empty()) {
        None => "global".to_owned(),
        Some(region) => path_segment(region, crate::aws::is_region_name),
    };
    let account = path_segment(&row.account, |a| a.len() == 12 && a.bytes().all(|b| b.is_ascii_digit()));
    format!(
        "ext/{}/region={region}/accountId={account}/eventDay={}/{}-{}-g{generation}.parquet",
        source.lake_name(),
        row.time.format("%Y%m%d"),
        source.table(),
        month.format("%Y%m"),
    )
}

/// `value` as one path segment: itself when `valid`, else `invalid-` and a digest of it. The
/// region and account come from the event's own JSON, so a crafted `awsRegion` such as
/// `x/../../y` must never become a path; the digest keeps distinct values in distinct files.
fn path_segment(value: &str, valid: impl Fn(&str) -> bool) -> String {
    use sha2::{Digest, Sha256};
    if valid(value) {
        return value.to_owned();
    }
    let digest = Sha256::digest(value.as_bytes());
    format!("invalid-{}", digest[..8].iter().map(|b| format!("{b:02x}")).collect::<String>())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_crafted_region_or_account_never_leaves_its_path_segment() {
        let month = chrono::TimeZone::with_ymd_and_hms(&Utc, 2026, 1, 1, 0, 0, 0).unwrap();
        let row = |region: Option<&str>, account: &str| LakeRow {
            account: account.to_owned(),
            region: region.map(str::to_owned),
            time: month,
            id: "event".to_owned(),
            values: Vec::new(),
        };
        let key = |r: &LakeRow| object_key(Source::CloudTrail, month, 0, r);
        let good = key(&row(Some("eu-west-1"), "123456789012"));
        assert!(good.contains("/region=eu-west-1/accountId=123456789012/"), "{good}");
        assert!(key(&row(None, "123456789012")).contains("/region=global/"));
        assert!(key(&row(Some(""), "123456789012")).contains("/region=global/"));
        let crafted = key(&row(Some("x/../../../../tmp/y"), "../../etc"));
        assert!(!crafted.contains(".."), "{crafted}");
        assert_eq!(crafted.matches('/').count(), good.matches('/').count(), "{crafted}");
        assert_ne!(key(&row(Some("bad/1"), "123456789012")), key(&row(Some("bad/2"), "123456789012")));
    }

    #[test]
    fn every_class_lists_its_groups_together() {
        for source in Source::ALL {
            // Panics (a schema that does not parse) when a group is split.
            let schema = class_schema(source);
            assert!(schema.leaves.iter().any(|(p, _)| *p == "cloud.account.uid"));
        }
    }

    #[test]
    fn partition_names_give_their_month() {
        let month = store::partition_month(Source::Flows, "flow_records_p202402").unwrap();
        assert_eq!(month.format("%Y-%m").to_string(), "2024-02");
        assert_eq!(store::partition_name(Source::Flows, month), "flow_records_p202402");
        assert!(store::partition_month(Source::Flows, "flow_records_default").is_none());
        assert!(store::partition_month(Source::Flows, "cloudtrail_events_p202402").is_none());
    }

    #[test]
    fn verbs_give_api_activities() {
        assert_eq!(ocsf::api_activity("CreateUser").0, 1);
        assert_eq!(ocsf::api_activity("DescribeInstances").0, 2);
        assert_eq!(ocsf::api_activity("PutBucketPolicy").0, 3);
        assert_eq!(ocsf::api_activity("DeleteTrail").0, 4);
        assert_eq!(ocsf::api_activity("ConsoleLogin").0, 99);
    }
}
