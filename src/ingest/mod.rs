//! Ingest: parsers for each log source and the importer that streams files into PostgreSQL.
//!
//! The importer is a pipeline: blocking parser threads read files (never a whole file in
//! memory), geolocate and encode rows into COPY batches; async writers send the batches to
//! PostgreSQL on their own connections. A bad file or record is reported and skipped; only a
//! database failure stops an import.

pub mod api_rollup;
pub mod cloudtrail;
pub mod findings;
pub mod flowlogs;
pub mod json_stream;
pub mod source;
pub mod store;

use std::collections::VecDeque;
use std::io::BufRead;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::{DateTime, TimeZone, Utc};
use serde::Serialize;
use sqlx::PgPool;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::db::partitions::{PartitionCache, PartitionedTable, month_start};
use crate::geo::{GeoCache, GeoDb};
use cloudtrail::{CloudTrailEvent, UNKNOWN_ACCOUNT};
use flowlogs::{FlowFormat, FlowRecord};
use source::ContentKind;
use store::{Batch, BatchOutcome, BatchWriter, StoreError};

/// Record errors listed per file before the rest are only counted.
const MAX_ERRORS_PER_FILE: usize = 50;
/// Largest gzip-wrapped Parquet file the importer decompresses to disk (a plain Parquet file
/// is read where it lies).
const MAX_IMPORT_SPOOL_BYTES: u64 = 64 << 30;

#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("cannot open a database connection for import")]
    Connect(#[source] sqlx::Error),
    #[error("import worker failed: {0}")]
    Worker(String),
}

#[derive(Clone, Debug)]
pub struct ImportOptions {
    pub paths: Vec<PathBuf>,
    pub geo: Option<Arc<GeoDb>>,
    /// Account for records that name none (flow logs without `account-id`, say).
    pub default_account: Option<String>,
    /// Field order for flow logs that have no header line.
    pub flow_format: Option<FlowFormat>,
    /// Files parsed at once.
    pub parsers: usize,
    /// Connections writing at once.
    pub writers: usize,
    /// Rows per COPY batch.
    pub batch_rows: usize,
    pub show_progress: bool,
    /// Largest record (JSON event, JSON line, flow log line) held in memory; a larger one is
    /// reported with its byte offset and skipped.
    pub max_record_bytes: usize,
    /// Largest ratio of decompressed to compressed size for gzip content, past its first
    /// 64 MiB (0: no limit); more is refused as a likely gzip bomb.
    pub max_gzip_ratio: u64,
}

impl ImportOptions {
    pub fn new(paths: Vec<PathBuf>) -> Self {
        Self {
            paths,
            geo: None,
            default_account: None,
            flow_format: None,
            parsers: 2,
            writers: 2,
            batch_rows: 2_000,
            show_progress: false,
            max_record_bytes: json_stream::DEFAULT_MAX_RECORD_BYTES,
            max_gzip_ratio: source::DEFAULT_MAX_GZIP_RATIO,
        }
    }
}

/// A file that could not be imported, or had records that could not be.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct FileError {
    pub file: String,
    pub error: String,
}

/// What an import did. `cloudtrail_events` and `flow_records` count new rows stored.
#[derive(Debug, Default, Serialize)]
pub struct ImportSummary {
    pub files: u64,
    pub cloudtrail_events: u64,
    pub flow_records: u64,
    pub duplicates: u64,
    /// Records that are not log data (CloudTrail digest files).
    pub skipped: u64,
    pub bytes_read: u64,
    pub elapsed_ms: u64,
    pub errors: Vec<FileError>,
}

/// Imports every file under `options.paths`.
pub async fn import(pool: &PgPool, options: ImportOptions) -> Result<ImportSummary, ImportError> {
    let started = Instant::now();
    let (files, walk_errors) = source::list_files(&options.paths);
    let total_bytes: u64 = files.iter().filter_map(|f| f.metadata().ok()).map(|m| m.len()).sum();
    let bytes_read = Arc::new(AtomicU64::new(0));
    let summary = Arc::new(Mutex::new(ImportSummary {
        files: files.len() as u64,
        errors: walk_errors
            .into_iter()
            .map(|(file, error)| FileError { file: file.display().to_string(), error })
            .collect(),
        ..Default::default()
    }));
    tracing::info!(files = files.len(), bytes = total_bytes, "import started");

    let progress = progress_bar(options.show_progress, total_bytes);
    let ticker = spawn_ticker(progress.clone(), bytes_read.clone());
    let (batches, receiver) = mpsc::channel::<Batch>(options.writers.max(1) * 2);
    let writers = spawn_writers(pool, options.writers.max(1), receiver, &summary).await?;
    // The parsers hold the only senders: the writers stop once every parser is done.
    let parsers = spawn_parsers(&options, files, batches, &summary, &bytes_read);

    for parser in parsers {
        parser.await.map_err(|e| ImportError::Worker(e.to_string()))?;
    }
    for writer in writers {
        writer.await.map_err(|e| ImportError::Worker(e.to_string()))??;
    }
    ticker.abort();
    progress.finish_and_clear();
    finish(summary, &bytes_read, started)
}

/// Moves the progress bar along with the bytes read, until aborted.
fn spawn_ticker(progress: indicatif::ProgressBar, bytes_read: Arc<AtomicU64>) -> JoinHandle<()> {
    tokio::spawn(async move {
        loop {
            progress.set_position(bytes_read.load(Ordering::Relaxed));
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
}

/// Opens `count` connections, each writing the batches it takes from `receiver`.
async fn spawn_writers(
    pool: &PgPool,
    count: usize,
    receiver: mpsc::Receiver<Batch>,
    summary: &Arc<Mutex<ImportSummary>>,
) -> Result<Vec<JoinHandle<Result<(), StoreError>>>, ImportError> {
    let receiver = Arc::new(tokio::sync::Mutex::new(receiver));
    let partitions = Arc::new(PartitionCache::default());
    // Each writer holds one of the pool's connections until the import ends: no more writers
    // than the pool has, or the last would wait for one that never frees.
    let pool_size = pool.options().get_max_connections() as usize;
    if count > pool_size {
        tracing::warn!(writers = count, pool_size, "fewer writers than asked: each holds one database connection");
    }
    let mut writers = Vec::new();
    for _ in 0..count.min(pool_size).max(1) {
        let writer = BatchWriter::connect(pool, partitions.clone()).await.map_err(ImportError::Connect)?;
        writers.push(tokio::spawn(write_batches(writer, receiver.clone(), summary.clone())));
    }
    Ok(writers)
}

/// One writer: writes batches until there are no more, or until the database fails.
async fn write_batches(
    mut writer: BatchWriter,
    receiver: Arc<tokio::sync::Mutex<mpsc::Receiver<Batch>>>,
    summary: Arc<Mutex<ImportSummary>>,
) -> Result<(), StoreError> {
    loop {
        let batch = receiver.lock().await.recv().await;
        let Some(batch) = batch else { return Ok(()) };
        let outcome = match writer.write(&batch).await {
            Ok(outcome) => outcome,
            Err(error) => {
                // Unblock the parsers: nothing more will be written.
                receiver.lock().await.close();
                return Err(error);
            }
        };
        count_written(&mut summary.lock().expect("summary poisoned"), &batch, outcome);
    }
}

fn count_written(summary: &mut ImportSummary, batch: &Batch, outcome: BatchOutcome) {
    match batch.table {
        PartitionedTable::CloudTrailEvents => summary.cloudtrail_events += outcome.inserted,
        PartitionedTable::FlowRecords => summary.flow_records += outcome.inserted,
    }
    summary.duplicates += outcome.duplicates;
    for (position, reason) in outcome.rejected {
        summary.errors.push(FileError {
            file: batch.file.display().to_string(),
            error: format!("{position}: rejected by PostgreSQL: {reason}"),
        });
    }
}

/// Starts the parser threads, which take files from a shared queue and send their batches.
fn spawn_parsers(
    options: &ImportOptions,
    files: Vec<PathBuf>,
    batches: mpsc::Sender<Batch>,
    summary: &Arc<Mutex<ImportSummary>>,
    bytes_read: &Arc<AtomicU64>,
) -> Vec<JoinHandle<()>> {
    let queue = Arc::new(Mutex::new(VecDeque::from(files)));
    let context = Arc::new(ParseContext {
        default_account: options.default_account.clone(),
        flow_format: options.flow_format.clone(),
        known_formats: Vec::new(),
        batch_rows: options.batch_rows.max(1),
        max_spool_bytes: MAX_IMPORT_SPOOL_BYTES,
        max_record_bytes: options.max_record_bytes.max(1),
        max_gzip_ratio: options.max_gzip_ratio,
    });
    (0..options.parsers.max(1))
        .map(|_| {
            let (queue, context, batches, summary, bytes_read) =
                (queue.clone(), context.clone(), batches.clone(), summary.clone(), bytes_read.clone());
            let geo = options.geo.clone();
            tokio::task::spawn_blocking(move || {
                parse_files(&queue, &context, GeoCache::new(geo), &batches, &summary, &bytes_read)
            })
        })
        .collect()
}

/// One parser thread: parses files from `queue` until it is empty or the writers are gone.
fn parse_files(
    queue: &Mutex<VecDeque<PathBuf>>,
    context: &ParseContext,
    mut geo: GeoCache,
    batches: &mpsc::Sender<Batch>,
    summary: &Mutex<ImportSummary>,
    bytes_read: &Arc<AtomicU64>,
) {
    loop {
        let Some(path) = queue.lock().expect("queue poisoned").pop_front() else { return };
        let report = parse_file(&path, context, &mut geo, batches, bytes_read.clone());
        let mut summary = summary.lock().expect("summary poisoned");
        summary.skipped += report.skipped;
        let file = path.display().to_string();
        summary.errors.extend(report.errors.into_iter().map(|error| FileError { file: file.clone(), error }));
        if report.aborted {
            return;
        }
    }
}

/// The summary, once every worker is done, with the bytes read and the time taken.
fn finish(
    summary: Arc<Mutex<ImportSummary>>,
    bytes_read: &AtomicU64,
    started: Instant,
) -> Result<ImportSummary, ImportError> {
    let mut summary = Arc::try_unwrap(summary)
        .map_err(|_| ImportError::Worker("summary still shared".into()))?
        .into_inner()
        .expect("summary poisoned");
    summary.bytes_read = bytes_read.load(Ordering::Relaxed);
    summary.elapsed_ms = started.elapsed().as_millis() as u64;
    tracing::info!(
        files = summary.files,
        cloudtrail_events = summary.cloudtrail_events,
        flow_records = summary.flow_records,
        duplicates = summary.duplicates,
        errors = summary.errors.len(),
        elapsed_ms = summary.elapsed_ms,
        "import finished"
    );
    Ok(summary)
}

fn progress_bar(show: bool, total_bytes: u64) -> indicatif::ProgressBar {
    if !show {
        return indicatif::ProgressBar::hidden();
    }
    let bar = indicatif::ProgressBar::with_draw_target(Some(total_bytes), indicatif::ProgressDrawTarget::stderr());
    if let Ok(style) = indicatif::ProgressStyle::with_template(
        "{spinner} [{elapsed_precise}] {wide_bar} {binary_bytes}/{binary_total_bytes} ({binary_bytes_per_sec}, {eta})",
    ) {
        bar.set_style(style);
    }
    bar
}

/// How to parse one source's content.
pub struct ParseContext {
    /// Account for records that name none.
    pub default_account: Option<String>,
    /// Field order of every flow log line without a header (the user's `--flow-format`).
    pub flow_format: Option<FlowFormat>,
    /// Formats the flow logs delivering here were created with (their `LogFormat`): a line
    /// without a header takes the one with its field count; a line that fits none is read by
    /// its count, as the default layouts are.
    pub known_formats: Vec<FlowFormat>,
    /// Rows per batch handed to the destination.
    pub batch_rows: usize,
    /// Largest Parquet content copied to a temporary file to be read (Parquet needs random
    /// access); more is a failure of the file.
    pub max_spool_bytes: u64,
    /// Largest record held in memory (see [`ImportOptions::max_record_bytes`]).
    pub max_record_bytes: usize,
    /// Largest decompression ratio of gzip files opened by path (see
    /// [`ImportOptions::max_gzip_ratio`]); content opened by the caller is limited there.
    pub max_gzip_ratio: u64,
}

impl ParseContext {
    /// A context for content from AWS (objects, log events): no user format.
    pub fn for_account(account_id: &str, known_formats: Vec<FlowFormat>, max_spool_bytes: u64) -> Self {
        Self {
            default_account: Some(account_id.to_owned()),
            flow_format: None,
            known_formats,
            batch_rows: 10_000,
            max_spool_bytes,
            max_record_bytes: json_stream::DEFAULT_MAX_RECORD_BYTES,
            max_gzip_ratio: source::DEFAULT_MAX_GZIP_RATIO,
        }
    }
}

/// What parsing one file or object found besides its rows.
#[derive(Default)]
pub struct FileReport {
    pub records: u64,
    pub skipped: u64,
    /// Problems, each naming its record or line.
    pub errors: Vec<String>,
    /// The content as a whole could not be read (an I/O or decompression error, a Parquet file
    /// that is not readable): also in `errors`. An S3 object with a failure is retried, never
    /// recorded as read.
    pub failure: Option<String>,
    /// Flow log lines whose field layout is unknown (no header, no known format fits).
    pub unknown_layouts: u64,
    /// The writers are gone (a database failure): stop parsing.
    aborted: bool,
}

impl FileReport {
    fn failed(reason: String) -> Self {
        Self { errors: vec![reason.clone()], failure: Some(reason), ..Default::default() }
    }
}

/// Parses one file into batches. Never fails: problems are listed in the report.
fn parse_file(
    path: &Path,
    context: &ParseContext,
    geo: &mut GeoCache,
    batches: &mpsc::Sender<Batch>,
    bytes_read: Arc<AtomicU64>,
) -> FileReport {
    let default_account = source::account_from_file_name(path).or_else(|| context.default_account.clone());
    let mut send = |batch: Batch| batches.blocking_send(batch).is_ok();
    let label = Arc::new(path.to_path_buf());
    if source::is_parquet_file(path) {
        let file = match std::fs::File::open(path) {
            Ok(file) => file,
            Err(error) => return FileReport::failed(format!("cannot read file: {error}")),
        };
        bytes_read.fetch_add(file.metadata().map_or(0, |m| m.len()), Ordering::Relaxed);
        return parse_parquet(file, label, default_account, context, geo, &mut send);
    }
    let opened = match source::open(path, bytes_read, context.max_gzip_ratio) {
        Ok(opened) => opened,
        Err(error) => return FileReport::failed(format!("cannot read file: {error}")),
    };
    parse_content(opened, label, default_account, context, geo, &mut send)
}

/// Parses opened content (see `source::open_reader`) into batches for `send`, which returns
/// false when no more batches are wanted. Never fails: problems are listed in the report.
pub fn parse_content(
    (reader, kind): (Box<dyn BufRead + Send>, ContentKind),
    file: Arc<PathBuf>,
    default_account: Option<String>,
    context: &ParseContext,
    geo: &mut GeoCache,
    send: &mut dyn FnMut(Batch) -> bool,
) -> FileReport {
    let named_parquet = file.extension().is_some_and(|e| e == "parquet");
    let mut sink = FileSink::new(file, default_account, context, geo, send);
    match kind {
        _ if named_parquet && kind != ContentKind::Parquet => {
            sink.fail("named .parquet but not a Parquet file (no PAR1 magic bytes)".into())
        }
        ContentKind::Empty => {}
        ContentKind::Json => {
            let limit = sink.context.max_record_bytes;
            match json_stream::walk_limited(reader, limit, &mut sink) {
                Ok(()) => {}
                Err(error) if error.is_io() => sink.fail(format!("read error after {} records: {error}", sink.records)),
                Err(error @ json_stream::WalkError::TooLarge { .. }) => {
                    let reason = format!("{error}; the {} records before it were read", sink.records);
                    sink.report.errors.push(reason);
                }
                Err(error) => {
                    let reason = format!("invalid JSON: {error}; the {} records before it were read", sink.records);
                    sink.report.errors.push(reason);
                }
            }
        }
        ContentKind::Text => read_flow_text(reader, &mut sink),
        ContentKind::Parquet => {
            let mut reader = reader;
            match source::spool(&mut reader, sink.context.max_spool_bytes) {
                Ok(spooled) => read_parquet(spooled, &mut sink),
                Err(error) => sink.fail(format!("cannot read the Parquet content: {error}")),
            }
        }
    }
    sink.finish()
}

/// Parses a Parquet flow log file (see `flowlogs::parquet`) into batches for `send`.
pub fn parse_parquet(
    parquet: std::fs::File,
    file: Arc<PathBuf>,
    default_account: Option<String>,
    context: &ParseContext,
    geo: &mut GeoCache,
    send: &mut dyn FnMut(Batch) -> bool,
) -> FileReport {
    let mut sink = FileSink::new(file, default_account, context, geo, send);
    read_parquet(parquet, &mut sink);
    sink.finish()
}

fn read_parquet(parquet: std::fs::File, sink: &mut FileSink<'_>) {
    let read = flowlogs::parquet::read_records(parquet, &mut |row, record| {
        match record {
            Ok(record) => sink.flow_record(&record, row, None, None),
            Err(error) => sink.record_error(format!("row {row}: {error}")),
        }
        !sink.report.aborted
    });
    if let Err(error) = read {
        sink.fail(error.to_string());
    }
}

/// Reads a flow log text file line by line.
fn read_flow_text(mut reader: Box<dyn BufRead + Send>, sink: &mut FileSink<'_>) {
    let mut line_bytes = Vec::new();
    let mut line_no: u64 = 0;
    let mut offset: u64 = 0;
    let mut header: Option<FlowFormat> = None;
    let mut recognised = false;
    let limit = sink.context.max_record_bytes;
    loop {
        let read = match source::read_line_limited(&mut reader, &mut line_bytes, limit) {
            Ok(read) => read,
            Err(error) => {
                sink.fail(format!("read error at line {} (byte {offset}): {error}", line_no + 1));
                return;
            }
        };
        line_no += 1;
        let start = offset;
        offset += read.length;
        match read.kind {
            source::LineKind::End => return,
            source::LineKind::Line => {}
            source::LineKind::TooLong => {
                sink.record_error(format!(
                    "line {line_no} (byte {start}) is longer than the limit of {limit} bytes; skipped"
                ));
                continue;
            }
        }
        let line = String::from_utf8_lossy(&line_bytes);
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        if let Some(format) = FlowFormat::from_header(line) {
            header = Some(format);
            recognised = true;
            continue;
        }
        match sink.flow_line(line, header.as_ref(), line_no, None, None) {
            Ok(()) => recognised = true,
            Err(error) if !recognised => {
                sink.report.errors.push(format!(
                    "not a recognised log format: line {line_no} is neither a VPC flow log header nor a record ({error})"
                ));
                return;
            }
            Err(error) => sink.record_error(format!("line {line_no}: {error}")),
        }
        if sink.report.aborted {
            return;
        }
    }
}

/// Collects one file's rows into batches and sends them to the writers.
struct FileSink<'a> {
    file: Arc<PathBuf>,
    default_account: Option<String>,
    context: &'a ParseContext,
    geo: &'a mut GeoCache,
    send: &'a mut dyn FnMut(Batch) -> bool,
    events: Option<Batch>,
    flows: Option<Batch>,
    /// Flow format inferred from the field count of headerless lines, reused while it fits.
    inferred_format: Option<FlowFormat>,
    records: u64,
    suppressed_errors: u64,
    report: FileReport,
}

impl<'a> FileSink<'a> {
    fn new(
        file: Arc<PathBuf>,
        default_account: Option<String>,
        context: &'a ParseContext,
        geo: &'a mut GeoCache,
        send: &'a mut dyn FnMut(Batch) -> bool,
    ) -> Self {
        Self {
            file,
            default_account,
            context,
            geo,
            send,
            events: None,
            flows: None,
            inferred_format: None,
            records: 0,
            suppressed_errors: 0,
            report: FileReport::default(),
        }
    }

    /// The content as a whole cannot be read.
    fn fail(&mut self, reason: String) {
        self.report.errors.push(reason.clone());
        self.report.failure.get_or_insert(reason);
    }

    fn record_error(&mut self, error: String) {
        if self.report.errors.len() < MAX_ERRORS_PER_FILE {
            self.report.errors.push(error);
        } else {
            self.suppressed_errors += 1;
        }
    }

    fn cloudtrail_event(&mut self, raw: &str, position: u64) {
        let event = match CloudTrailEvent::parse(raw, self.default_account.as_deref()) {
            Ok(event) => event,
            Err(error) => return self.record_error(format!("record {position}: {error}")),
        };
        let geo = event.source_ip.and_then(|ip| self.geo.lookup(ip));
        let (file, rows) = (&self.file, self.context.batch_rows);
        let batch = self
            .events
            .get_or_insert_with(|| Batch::new(PartitionedTable::CloudTrailEvents, file.clone(), "record", rows * 2048));
        event.write_row(geo.as_deref(), &mut batch.rows);
        batch.row_positions.push(position);
        batch.months.insert(month_start(event.event_time));
        if !batch.accounts.contains(&event.account_id) {
            batch.accounts.insert(event.account_id);
        }
        if batch.rows.rows() >= rows {
            self.send(PartitionedTable::CloudTrailEvents);
        }
    }

    /// Parses and queues one flow log line. `header` is the file's header format, if any.
    fn flow_line(
        &mut self,
        line: &str,
        header: Option<&FlowFormat>,
        position: u64,
        fallback_time: Option<DateTime<Utc>>,
        owner: Option<&str>,
    ) -> Result<(), flowlogs::FlowError> {
        let record = match self.line_format(line, header) {
            Ok(format) => FlowRecord::parse(line, format)?,
            Err(error) => {
                self.report.unknown_layouts += 1;
                return Err(error);
            }
        };
        self.flow_record(&record, position, fallback_time, owner);
        Ok(())
    }

    /// The format of a flow log line: the file's header, the user's format, the known format
    /// with the line's field count, else the default layout with that count.
    fn line_format<'s>(
        &'s mut self,
        line: &str,
        header: Option<&'s FlowFormat>,
    ) -> Result<&'s FlowFormat, flowlogs::FlowError> {
        if let Some(format) = header.or(self.context.flow_format.as_ref()) {
            return Ok(format);
        }
        let count = line.split_ascii_whitespace().count();
        if let Some(format) = self.context.known_formats.iter().find(|f| f.len() == count) {
            return Ok(format);
        }
        if self.inferred_format.as_ref().is_none_or(|f| f.len() != count) {
            self.inferred_format = Some(FlowFormat::for_field_count(count)?);
        }
        Ok(self.inferred_format.as_ref().expect("just set"))
    }

    /// Queues one flow record; `owner` is the account of the log it came from, if known.
    fn flow_record(
        &mut self,
        record: &FlowRecord,
        position: u64,
        fallback_time: Option<DateTime<Utc>>,
        owner: Option<&str>,
    ) {
        let account = record
            .account_id
            .clone()
            .or_else(|| owner.map(str::to_string))
            .or_else(|| self.default_account.clone())
            .unwrap_or_else(|| UNKNOWN_ACCOUNT.to_string());
        let (file, rows) = (&self.file, self.context.batch_rows);
        let batch = self
            .flows
            .get_or_insert_with(|| Batch::new(PartitionedTable::FlowRecords, file.clone(), "line", rows * 256));
        record.write_row(&account, fallback_time, self.geo, &mut batch.rows);
        batch.row_positions.push(position);
        batch.months.insert(month_start(record.bucket_time(fallback_time)));
        if !batch.accounts.contains(&account) {
            batch.accounts.insert(account);
        }
        if batch.rows.rows() >= rows {
            self.send(PartitionedTable::FlowRecords);
        }
    }

    fn send(&mut self, table: PartitionedTable) {
        let slot = match table {
            PartitionedTable::CloudTrailEvents => &mut self.events,
            PartitionedTable::FlowRecords => &mut self.flows,
        };
        if let Some(batch) = slot.take().filter(|b| !b.rows.is_empty())
            && !(self.send)(batch)
        {
            self.report.aborted = true;
        }
    }

    fn finish(mut self) -> FileReport {
        self.send(PartitionedTable::CloudTrailEvents);
        self.send(PartitionedTable::FlowRecords);
        if self.suppressed_errors > 0 {
            self.report.errors.push(format!("... and {} more record errors", self.suppressed_errors));
        }
        self.report.records = self.records;
        self.report
    }
}

impl json_stream::JsonSink for FileSink<'_> {
    fn event(&mut self, raw: &str) {
        self.records += 1;
        self.cloudtrail_event(raw, self.records);
    }

    fn log_message(&mut self, message: &str, timestamp_ms: Option<i64>, owner: Option<&str>) {
        self.records += 1;
        let position = self.records;
        if message.trim_start().starts_with('{') {
            // CloudTrail delivered to CloudWatch Logs: each message is an event.
            return self.cloudtrail_event(message.trim(), position);
        }
        let fallback_time = timestamp_ms.and_then(|ms| Utc.timestamp_millis_opt(ms).single());
        if let Err(error) = self.flow_line(message.trim(), None, position, fallback_time, owner) {
            self.record_error(format!("record {position}: {error}"));
        }
    }

    fn skipped(&mut self, what: &'static str) {
        tracing::debug!(file = %self.file.display(), what, "skipped");
        self.report.skipped += 1;
    }

    fn unrecognised(&mut self, description: String) {
        self.records += 1;
        let position = self.records;
        self.record_error(format!("record {position}: {description}"));
    }
}

/// Parses CloudWatch Logs messages (flow log lines, or CloudTrail events when a trail sends to
/// CloudWatch Logs) as the importer parses an exported log group.
pub fn parse_log_messages<'m>(
    messages: impl IntoIterator<Item = (&'m str, Option<i64>)>,
    label: Arc<PathBuf>,
    default_account: Option<String>,
    context: &ParseContext,
    geo: &mut GeoCache,
    send: &mut dyn FnMut(Batch) -> bool,
) -> FileReport {
    let mut sink = FileSink::new(label, default_account, context, geo, send);
    for (message, timestamp_ms) in messages {
        json_stream::JsonSink::log_message(&mut sink, message, timestamp_ms, None);
    }
    sink.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Parses `content` as the importer does with a record limit: the rows' positions and the
    /// report.
    fn parse(content: &[u8], limit: usize) -> (Vec<u64>, FileReport) {
        let mut context = ParseContext::for_account("111122223333", Vec::new(), 1 << 20);
        context.max_record_bytes = limit;
        let mut positions = Vec::new();
        let opened = source::open_reader(std::io::Cursor::new(content.to_vec())).unwrap();
        let report = parse_content(
            opened,
            Arc::new(PathBuf::from("test.log")),
            None,
            &context,
            &mut GeoCache::new(None),
            &mut |batch| {
                positions.extend(batch.row_positions);
                true
            },
        );
        (positions, report)
    }

    #[test]
    fn a_flow_log_line_over_the_limit_is_named_and_skipped() {
        let record =
            "2 111122223333 eni-0a1b2c3d 10.0.0.5 203.0.113.9 443 49152 6 10 840 1762905600 1762905660 ACCEPT OK";
        let long = format!("{record} {}", "x".repeat(300));
        let content = format!("{record}\n{long}\n{record}\n");
        let (positions, report) = parse(content.as_bytes(), 200);
        assert_eq!(positions, [1, 3]);
        let offset = record.len() + 1;
        assert_eq!(report.errors, [format!("line 2 (byte {offset}) is longer than the limit of 200 bytes; skipped")]);
        assert!(report.failure.is_none());
    }

    #[test]
    fn a_cloudtrail_record_over_the_limit_is_named_and_the_others_read() {
        let event = |id: &str, pad: usize| {
            format!(
                r#"{{"eventTime":"2026-11-12T04:00:00Z","eventSource":"iam.amazonaws.com","eventName":"ListUsers","eventID":"{id}","pad":"{}"}}"#,
                "p".repeat(pad)
            )
        };
        let big = event("big", 2_000);
        let content = format!("{{\"Records\":[{},{big},{}]}}", event("a", 0), event("b", 0));
        let (positions, report) = parse(content.as_bytes(), 1_000);
        assert_eq!(positions, [1, 3], "{:?}", report.errors);
        let offset = content.find(&big).unwrap();
        assert_eq!(report.errors, [format!("record 2: {}", json_stream::too_large_message(offset as u64, 1, 1_000))]);
    }
}
