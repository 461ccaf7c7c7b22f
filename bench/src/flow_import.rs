//! `skywarden-bench flow-import`: flow-log import speed against plain typed COPY.
//!
//! Generates version 2 VPC flow records (AWS's default format, with its header line) into ten
//! gzip files, the way a bucket holds them: many instance interfaces in a few accounts, mostly
//! accepted traffic, some rejected probes, over two days. Then, in one process against a
//! scratch database, twice each, alternating, the best of each compared:
//!
//! - the importer storing the files (`ingest::import`: read, gunzip, parse, store);
//! - the same, followed by one detection pass with the built-in policies (the flow detectors),
//!   as `skywarden import` does;
//! - issue 18's baseline: the same records, already encoded, by plain two-stream COPY of typed
//!   columns into a table with two indexes;
//! - the ceiling the schema sets: the importer's own encoded rows by plain two-stream COPY into
//!   `flow_records` with all its indexes (no reading, parsing or deduplication).

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use chrono::{DateTime, TimeZone, Utc};
use flate2::Compression;
use flate2::write::GzEncoder;
use sqlx::PgPool;
use sqlx::postgres::PgConnectOptions;

use skywarden::db::copy::CopyBuffer;
use skywarden::db::partitions::{PartitionCache, PartitionedTable, month_start};
use skywarden::detect::{self, PolicySet};
use skywarden::geo::GeoCache;
use skywarden::ingest::flowlogs::{FlowFormat, FlowRecord};
use skywarden::ingest::{self, ImportOptions};

const DATABASE: &str = "skywarden_bench_flow_import";
const FILES: usize = 10;
const STREAMS: usize = 2;
const ROUNDS: usize = 2;
const HEADER: &str = "version account-id interface-id srcaddr dstaddr srcport dstport protocol packets bytes start end action log-status";

#[derive(Debug, thiserror::Error)]
pub enum FlowImportBenchError {
    #[error("database error")]
    Db(#[from] sqlx::Error),
    #[error("migration failed")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("import failed")]
    Import(#[from] ingest::ImportError),
    #[error("detection failed")]
    Detect(#[from] detect::DetectError),
    #[error("writing the generated files")]
    Io(#[from] std::io::Error),
    #[error("the import reported errors: {0}")]
    ImportErrors(String),
    #[error(transparent)]
    Copy(#[from] crate::import::BenchError),
}

#[derive(Debug)]
pub struct FlowImportReport {
    pub records: usize,
    pub gzip_bytes: u64,
    pub import_rate: f64,
    pub import_detect_rate: f64,
    pub copy_rate: f64,
    /// The importer's rows by plain COPY into `flow_records`.
    pub store_copy_rate: f64,
}

impl std::fmt::Display for FlowImportReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(f, "flow records:         {} in {FILES} gzip files ({} KB)", self.records, self.gzip_bytes / 1024)?;
        writeln!(f, "typed COPY, 2 indexes ({STREAMS} streams): {:>10.0} records/s", self.copy_rate)?;
        writeln!(f, "skywarden import (store):         {:>10.0} records/s", self.import_rate)?;
        writeln!(f, "ratio import/typed COPY:          {:>10.2}", self.import_rate / self.copy_rate)?;
        writeln!(f, "import + one detection pass:      {:>10.0} records/s", self.import_detect_rate)?;
        writeln!(f, "ratio import+detect/typed COPY:   {:>10.2}", self.import_detect_rate / self.copy_rate)?;
        writeln!(f, "COPY into flow_records (schema ceiling): {:>10.0} records/s", self.store_copy_rate)?;
        write!(f, "ratio ceiling/typed COPY:         {:>10.2}", self.store_copy_rate / self.copy_rate)
    }
}

/// Runs the benchmark on a scratch database next to `server` (dropped afterwards).
pub async fn run(
    server: &PgConnectOptions,
    records: usize,
    work_dir: &Path,
) -> Result<FlowImportReport, FlowImportBenchError> {
    let (mut admin_conn, pool) = crate::import::scratch_database(server, DATABASE, STREAMS as u32 + 2).await?;

    let dir = work_dir.join("skywarden-bench-flows");
    std::fs::create_dir_all(&dir)?;
    let (files, rows) = generate(&dir, records)?;
    let stored_rows = encode_stored_rows(records);
    let gzip_bytes = files.iter().map(|f| std::fs::metadata(f).map(|m| m.len()).unwrap_or(0)).sum();
    let policies = PolicySet::builtin();

    let (mut best_import, mut best_detect, mut best_copy) = (Duration::MAX, Duration::MAX, Duration::MAX);
    let mut best_store_copy = Duration::MAX;
    for _ in 0..ROUNDS {
        best_store_copy = best_store_copy.min(time_store_copy(&pool, &stored_rows).await?);
        reset(&pool).await?;
        best_copy = best_copy.min(time_typed_copy(&pool, &rows).await?);
        reset(&pool).await?;
        best_import = best_import.min(time_import(&pool, &files, records, None).await?);
        reset(&pool).await?;
        best_detect = best_detect.min(time_import(&pool, &files, records, Some(&policies)).await?);
        reset(&pool).await?;
    }
    pool.close().await;
    sqlx::raw_sql(&format!("DROP DATABASE IF EXISTS {DATABASE} WITH (FORCE)")).execute(&mut admin_conn).await?;
    let _ = std::fs::remove_dir_all(&dir);
    let rate = |d: Duration| records as f64 / d.as_secs_f64();
    Ok(FlowImportReport {
        records,
        gzip_bytes,
        import_rate: rate(best_import),
        import_detect_rate: rate(best_detect),
        copy_rate: rate(best_copy),
        store_copy_rate: rate(best_store_copy),
    })
}

async fn reset(pool: &PgPool) -> Result<(), sqlx::Error> {
    // CASCADE: in the scratch database, whatever references accounts goes too.
    sqlx::raw_sql("TRUNCATE flow_records, alerts, accounts CASCADE; CHECKPOINT").execute(pool).await?;
    Ok(())
}

/// One generated record.
struct Flow {
    account: &'static str,
    interface: String,
    src: String,
    dst: String,
    src_port: u16,
    dst_port: u16,
    protocol: u8,
    packets: u32,
    bytes: u64,
    start: i64,
    accepted: bool,
}

impl Flow {
    fn action(&self) -> &'static str {
        if self.accepted { "ACCEPT" } else { "REJECT" }
    }
}

const ACCOUNTS: [&str; 4] = ["111111111111", "222222222222", "333333333333", "444444444444"];

/// The `i`-th record: interface, direction, peer and port vary with `i` so every record is
/// distinct (the importer keys records by their content).
fn flow(i: usize) -> Flow {
    let start = Utc.with_ymd_and_hms(2026, 10, 1, 0, 0, 0).unwrap().timestamp() + (i as i64 * 172_800) / 1_000_000;
    let interface_n = (i * 7919) % 2_000;
    let local = format!("10.{}.{}.{}", interface_n / 250, interface_n % 250, 10 + i % 3);
    let remote = if i.is_multiple_of(4) {
        format!("10.{}.{}.{}", (i / 7) % 8, (i / 11) % 250, 1 + (i / 13) % 250)
    } else {
        format!("{}.{}.{}.{}", 3 + (i / 17) % 200, (i / 19) % 250, (i / 23) % 250, 1 + (i / 29) % 250)
    };
    let probe = i.is_multiple_of(20);
    let (service, ephemeral) = ([443u16, 80, 22, 5432, 3306][i % 5], 32_768 + (i % 28_000) as u16);
    let outbound = i.is_multiple_of(2) && !probe;
    let (src, dst, src_port, dst_port) =
        if outbound { (local, remote, ephemeral, service) } else { (remote, local, ephemeral, service) };
    Flow {
        account: ACCOUNTS[interface_n % ACCOUNTS.len()],
        interface: format!("eni-{:017x}", 0xa1b2_c3d4_0000_u64 + interface_n as u64),
        src,
        dst,
        src_port,
        dst_port,
        protocol: if i % 10 == 9 { 17 } else { 6 },
        packets: if probe { 1 } else { 2 + (i % 400) as u32 },
        bytes: if probe { 44 } else { 120 + (i as u64 * 37) % 900_000 },
        start,
        accepted: !probe,
    }
}

/// The records as ten gzip files in AWS's v2 text format, and as COPY text of typed columns
/// (one buffer per stream).
fn generate(dir: &Path, records: usize) -> std::io::Result<(Vec<PathBuf>, Vec<CopyBuffer>)> {
    let per_file = records.div_ceil(FILES);
    let per_stream = records.div_ceil(STREAMS);
    let mut files = Vec::new();
    let mut streams: Vec<CopyBuffer> = (0..STREAMS).map(|_| CopyBuffer::with_capacity(per_stream * 128)).collect();
    for (n, first) in (0..records).step_by(per_file.max(1)).enumerate() {
        let path = dir.join(format!("{}_vpcflowlogs_us-east-1_fl-bench_{n:02}.log.gz", ACCOUNTS[0]));
        let mut gz = GzEncoder::new(std::io::BufWriter::new(std::fs::File::create(&path)?), Compression::fast());
        writeln!(gz, "{HEADER}")?;
        for i in first..(first + per_file).min(records) {
            let f = flow(i);
            writeln!(gz, "{}", text_line(&f))?;
            write_typed_row(&mut streams[i / per_stream.max(1)], &f);
        }
        gz.finish()?.flush()?;
        files.push(path);
    }
    Ok((files, streams))
}

/// The records as the importer encodes them for `flow_records`, one buffer per stream, with
/// the months they need.
fn encode_stored_rows(records: usize) -> Vec<(CopyBuffer, Vec<DateTime<Utc>>)> {
    let format = FlowFormat::default_v2();
    let mut geo = GeoCache::new(None);
    let per_stream = records.div_ceil(STREAMS).max(1);
    (0..records)
        .step_by(per_stream)
        .map(|first| {
            let mut buffer = CopyBuffer::with_capacity(per_stream * 200);
            let mut months = Vec::new();
            for i in first..(first + per_stream).min(records) {
                let line = text_line(&flow(i));
                let record = FlowRecord::parse(&line, &format).expect("the generated line parses");
                months.push(month_start(record.bucket_time(None)));
                record.write_row(ACCOUNTS[0], None, &mut geo, &mut buffer);
            }
            months.sort();
            months.dedup();
            (buffer, months)
        })
        .collect()
}

/// The importer's rows by plain COPY on two connections into `flow_records`.
async fn time_store_copy(
    pool: &PgPool,
    streams: &[(CopyBuffer, Vec<DateTime<Utc>>)],
) -> Result<Duration, FlowImportBenchError> {
    let partitions = PartitionCache::default();
    let mut conn = pool.acquire().await?;
    for (_, months) in streams {
        partitions.ensure(&mut conn, PartitionedTable::FlowRecords, months.clone()).await?;
    }
    drop(conn);
    let statement = format!("COPY flow_records ({}) FROM STDIN", skywarden::ingest::flowlogs::COLUMNS);
    let data = streams.iter().map(|(buffer, _)| buffer.as_bytes().to_vec()).collect();
    Ok(crate::import::copy_streams(pool, &statement, data).await?)
}

/// The record as a line of AWS's v2 format.
fn text_line(f: &Flow) -> String {
    format!(
        "2 {} {} {} {} {} {} {} {} {} {} {} {} OK",
        f.account,
        f.interface,
        f.src,
        f.dst,
        f.src_port,
        f.dst_port,
        f.protocol,
        f.packets,
        f.bytes,
        f.start,
        f.start + 60,
        f.action()
    )
}

fn write_typed_row(buffer: &mut CopyBuffer, f: &Flow) {
    let time = |t: i64| DateTime::from_timestamp(t, 0).unwrap_or_default().to_rfc3339();
    buffer.text(f.account);
    buffer.text(&f.interface);
    buffer.text(&f.src);
    buffer.text(&f.dst);
    buffer.display(f.src_port);
    buffer.display(f.dst_port);
    buffer.display(f.protocol);
    buffer.display(f.packets);
    buffer.display(f.bytes);
    buffer.text(&time(f.start));
    buffer.text(&time(f.start + 60));
    buffer.text(f.action());
    buffer.text("OK");
    buffer.end_row();
}

/// The files through the importer; with `policies`, one detection pass after, as
/// `skywarden import` does.
async fn time_import(
    pool: &PgPool,
    files: &[PathBuf],
    records: usize,
    policies: Option<&PolicySet>,
) -> Result<Duration, FlowImportBenchError> {
    let started = Instant::now();
    let since = detect::database_now(pool).await?;
    let summary = ingest::import(pool, ImportOptions::new(files.to_vec())).await?;
    if !summary.errors.is_empty() || summary.flow_records != records as u64 {
        return Err(FlowImportBenchError::ImportErrors(format!(
            "{:?}, stored {}",
            summary.errors, summary.flow_records
        )));
    }
    if let Some(policies) = policies {
        let options = detect::runner::PendingOptions { own_pass_only: true, ..Default::default() };
        detect::run_pending_with(pool, policies, since, &options).await?;
    }
    Ok(started.elapsed())
}

/// Issue 18's baseline: the records' typed columns by plain COPY on two connections, in batches
/// of the importer's size, into a fresh table with two indexes.
async fn time_typed_copy(pool: &PgPool, streams: &[CopyBuffer]) -> Result<Duration, FlowImportBenchError> {
    sqlx::raw_sql(
        "DROP TABLE IF EXISTS bench_raw_flows;
         CREATE TABLE bench_raw_flows (account_id text NOT NULL, interface_id text NOT NULL, srcaddr inet,
             dstaddr inet, srcport integer, dstport integer, protocol smallint, packets bigint, bytes bigint,
             start_time timestamptz NOT NULL, end_time timestamptz, action text, log_status text);
         CREATE INDEX ON bench_raw_flows (start_time);
         CREATE INDEX ON bench_raw_flows (interface_id, start_time);
         CHECKPOINT",
    )
    .execute(pool)
    .await?;
    let data = streams.iter().map(|buffer| buffer.as_bytes().to_vec()).collect();
    let elapsed = crate::import::copy_streams(pool, "COPY bench_raw_flows FROM STDIN", data).await?;
    sqlx::raw_sql("DROP TABLE bench_raw_flows").execute(pool).await?;
    Ok(elapsed)
}
