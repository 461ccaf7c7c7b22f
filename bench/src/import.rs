//! `skywarden-bench import`: import speed against the raw speed of PostgreSQL COPY.
//!
//! Generates CloudTrail events into an S3-shaped file (issue 18's realistic mix, or with
//! `--mix write-heavy` half of them writes, detection's worst case), imports it with the real
//! importer, then loads the very same rows with plain COPY on the same number of connections
//! into the same schema (no parsing, no deduplication). Both run in one process against a
//! scratch database, twice each, alternating, and the best of each is compared.
//!
//! Two more figures from the same run: the import end to end as `skywarden import` does it
//! (GeoIP and ASN lookups when `make geoip` has left its files in `.cache/geoip`, storage, then
//! one detection pass with the built-in policies; the full-text index is built off the import
//! path, as `--no-search-index` leaves it), and issue 18's own baseline: the raw events as
//! `jsonb` by plain two-stream COPY into a table with three indexes (key, time, event id).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::Utc;
use sqlx::postgres::{PgConnectOptions, PgPoolCopyExt, PgPoolOptions};
use sqlx::{ConnectOptions, PgPool};

use skywarden::db::MIGRATOR;
use skywarden::db::copy::CopyBuffer;
use skywarden::db::partitions::{PartitionCache, PartitionedTable, month_start};
use skywarden::detect::{self, PolicySet};
use skywarden::geo::{GeoDb, NetworkLists};
use skywarden::ingest::cloudtrail::CloudTrailEvent;
use skywarden::ingest::{self, ImportOptions};

use crate::synthetic::{Mix, generate_mix};

const BENCH_DATABASE: &str = "skywarden_bench";
const STREAMS: usize = 2;
pub(crate) const ROUNDS: usize = 2;

#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    #[error("database error")]
    Db(#[from] sqlx::Error),
    #[error("migration failed")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("import failed")]
    Import(#[from] ingest::ImportError),
    #[error("detection failed")]
    Detect(#[from] skywarden::detect::DetectError),
    #[error("writing the generated file")]
    Io(#[from] std::io::Error),
    #[error("the import reported errors: {0}")]
    ImportErrors(String),
    #[error("a benchmark run in a child process failed: {0}")]
    Child(String),
    #[error("opening the GeoIP files")]
    Geo(#[from] skywarden::geo::GeoError),
}

#[derive(Debug)]
pub struct BenchReport {
    pub events: usize,
    pub mix: Mix,
    pub average_event_bytes: usize,
    pub import_rate: f64,
    pub copy_rate: f64,
    /// Raw COPY plus the rare-API baseline rollup ingest writes beside each batch.
    pub copy_rollup_rate: f64,
    /// Import with geo and one detection pass, as `skywarden import` does.
    pub end_to_end_rate: f64,
    /// Issue 18's baseline: raw `jsonb` COPY into a table with three indexes.
    pub jsonb_copy_rate: f64,
    /// The GeoIP files the end-to-end import used (none: no geo).
    pub geo_files: usize,
}

impl BenchReport {
    pub fn ratio(&self) -> f64 {
        self.import_rate / self.copy_rate
    }
}

impl std::fmt::Display for BenchReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(
            f,
            "events:               {} (~{} bytes each, {} mix)",
            self.events, self.average_event_bytes, self.mix
        )?;
        writeln!(f, "raw COPY ({STREAMS} streams):   {:>10.0} events/s", self.copy_rate)?;
        writeln!(f, "skywarden import:     {:>10.0} events/s", self.import_rate)?;
        writeln!(f, "ratio import/COPY:    {:>10.2}", self.ratio())?;
        writeln!(f, "COPY + API rollup:    {:>10.0} events/s", self.copy_rollup_rate)?;
        writeln!(f, "ratio COPY+rollup/COPY: {:>8.2}", self.copy_rollup_rate / self.copy_rate)?;
        writeln!(
            f,
            "end to end (geo: {} files, store, one detection pass): {:>10.0} events/s",
            self.geo_files, self.end_to_end_rate
        )?;
        writeln!(f, "raw jsonb COPY, 3 indexes ({STREAMS} streams): {:>10.0} events/s", self.jsonb_copy_rate)?;
        writeln!(f, "ratio end to end/raw jsonb COPY: {:>6.2}", self.end_to_end_rate / self.jsonb_copy_rate)?;
        write!(f, "ratio import/raw jsonb COPY:     {:>6.2}", self.import_rate / self.jsonb_copy_rate)
    }
}

/// Runs the benchmark on a scratch database next to `server` (dropped afterwards).
pub async fn run(
    server: &PgConnectOptions,
    events: usize,
    mix: Mix,
    work_dir: &Path,
) -> Result<BenchReport, BenchError> {
    let (mut admin_conn, pool) = scratch_database(server, BENCH_DATABASE, STREAMS as u32 + 1).await?;

    let file = work_dir.join("bench-cloudtrail.json");
    let bytes = generate_mix(&file, events, mix)?;
    let rows = encode_rows(&file)?;
    let jsonb_rows = encode_jsonb_rows(&file)?;
    let geo_files = geo_files();
    let geo = open_geo(&geo_files)?;
    let policies = PolicySet::builtin().with_geo(geo.clone());

    let mut best_import = Duration::MAX;
    let mut best_copy = Duration::MAX;
    let mut best_rollup = Duration::MAX;
    let mut best_end_to_end = Duration::MAX;
    let mut best_jsonb = Duration::MAX;
    for round in 0..ROUNDS {
        best_jsonb = best_jsonb.min(time_jsonb_copy(&pool, &jsonb_rows).await?);
        reset(&pool).await?;
        best_end_to_end = best_end_to_end.min(time_end_to_end(&pool, &file, events, geo.clone(), &policies).await?);
        reset(&pool).await?;
        best_rollup = best_rollup.min(time_raw_copy(&pool, &rows, true).await?);
        reset(&pool).await?;
        let copy = time_raw_copy(&pool, &rows, false).await?;
        reset(&pool).await?;
        let import = time_import(&pool, &file, events).await?;
        tracing::info!(round, copy_ms = copy.as_millis() as u64, import_ms = import.as_millis() as u64, "bench round");
        best_copy = best_copy.min(copy);
        best_import = best_import.min(import);
    }
    pool.close().await;
    sqlx::raw_sql(&format!("DROP DATABASE IF EXISTS {BENCH_DATABASE} WITH (FORCE)")).execute(&mut admin_conn).await?;
    let _ = std::fs::remove_file(&file);

    Ok(BenchReport {
        events,
        mix,
        average_event_bytes: bytes / events.max(1),
        import_rate: events as f64 / best_import.as_secs_f64(),
        copy_rate: events as f64 / best_copy.as_secs_f64(),
        copy_rollup_rate: events as f64 / best_rollup.as_secs_f64(),
        end_to_end_rate: events as f64 / best_end_to_end.as_secs_f64(),
        jsonb_copy_rate: events as f64 / best_jsonb.as_secs_f64(),
        geo_files: geo_files.len(),
    })
}

/// A fresh, migrated database `name` next to `server` (one of that name is dropped first), with
/// a pool of `connections` on it, and a connection to the server's `postgres` database to drop
/// it with afterwards.
pub(crate) async fn scratch_database(
    server: &PgConnectOptions,
    name: &str,
    connections: u32,
) -> Result<(sqlx::PgConnection, PgPool), BenchError> {
    let mut admin_conn = server.clone().database("postgres").connect().await?;
    sqlx::raw_sql(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)")).execute(&mut admin_conn).await?;
    sqlx::raw_sql(&format!("CREATE DATABASE {name}")).execute(&mut admin_conn).await?;
    let pool = PgPoolOptions::new().max_connections(connections).connect_with(server.clone().database(name)).await?;
    MIGRATOR.run(&pool).await?;
    Ok((admin_conn, pool))
}

async fn reset(pool: &PgPool) -> Result<(), sqlx::Error> {
    // CASCADE: in the scratch database, whatever references accounts goes too.
    sqlx::raw_sql("TRUNCATE cloudtrail_events, api_call_days, alerts, accounts CASCADE; CHECKPOINT")
        .execute(pool)
        .await?;
    Ok(())
}

/// The files `make geoip` leaves in the repository's cache (`make bench` runs at its root).
fn geo_files() -> Vec<PathBuf> {
    ["geo-whois-asn-country.mmdb", "asn-ipv4.csv", "asn-ipv6.csv"]
        .iter()
        .map(|name| Path::new(".cache/geoip").join(name))
        .filter(|path| path.is_file())
        .collect()
}

fn open_geo(files: &[PathBuf]) -> Result<Option<Arc<GeoDb>>, BenchError> {
    if files.is_empty() {
        return Ok(None);
    }
    Ok(Some(Arc::new(GeoDb::open_with(files, NetworkLists::open(None, None, None, None)?)?)))
}

/// What `skywarden import` does: the file stored with its network context, then one detection
/// pass over what it stored.
async fn time_end_to_end(
    pool: &PgPool,
    file: &Path,
    events: usize,
    geo: Option<Arc<GeoDb>>,
    policies: &PolicySet,
) -> Result<Duration, BenchError> {
    let started = Instant::now();
    let since = detect::database_now(pool).await?;
    let mut options = ImportOptions::new(vec![file.to_path_buf()]);
    options.geo = geo;
    let summary = ingest::import(pool, options).await?;
    if !summary.errors.is_empty() || summary.cloudtrail_events != events as u64 {
        return Err(BenchError::ImportErrors(format!("{:?}, stored {}", summary.errors, summary.cloudtrail_events)));
    }
    let stored = started.elapsed();
    let options = detect::runner::PendingOptions { own_pass_only: true, ..Default::default() };
    let detection = detect::run_pending_with(pool, policies, since, &options).await?;
    let elapsed = started.elapsed();
    eprintln!(
        "end to end: store {} ms, detect {} ms (by stage: {})",
        stored.as_millis(),
        (elapsed - stored).as_millis(),
        serde_json::to_string(&detection.stage_ms).unwrap_or_default()
    );
    Ok(elapsed)
}

/// The raw events as `(account_id, event_time, event_id, raw)` COPY text, one buffer per stream.
fn encode_jsonb_rows(file: &Path) -> Result<Vec<CopyBuffer>, BenchError> {
    let document: Document =
        serde_json::from_reader(std::io::BufReader::new(std::fs::File::open(file)?)).map_err(std::io::Error::other)?;
    let per_stream = document.records.len().div_ceil(STREAMS);
    let mut streams = Vec::new();
    for chunk in document.records.chunks(per_stream.max(1)) {
        let mut buffer = CopyBuffer::with_capacity(chunk.len() * 2048);
        for raw in chunk {
            let event = CloudTrailEvent::parse(raw.get(), None).map_err(std::io::Error::other)?;
            buffer.text(&event.account_id);
            buffer.display(event.event_time.to_rfc3339());
            buffer.text(&event.event_id);
            buffer.text(raw.get());
            buffer.end_row();
        }
        streams.push(buffer);
    }
    Ok(streams)
}

/// Issue 18's baseline: plain two-stream COPY of the raw events as `jsonb` into a fresh table
/// with three indexes, in batches of the importer's size.
async fn time_jsonb_copy(pool: &PgPool, streams: &[CopyBuffer]) -> Result<Duration, BenchError> {
    sqlx::raw_sql(
        "DROP TABLE IF EXISTS bench_raw_events;
         CREATE TABLE bench_raw_events (account_id text NOT NULL, event_time timestamptz NOT NULL,
             event_id text NOT NULL, raw jsonb NOT NULL, PRIMARY KEY (account_id, event_time, event_id));
         CREATE INDEX ON bench_raw_events (event_time);
         CREATE INDEX ON bench_raw_events (event_id);
         CHECKPOINT",
    )
    .execute(pool)
    .await?;
    let statement = "COPY bench_raw_events (account_id, event_time, event_id, raw) FROM STDIN";
    let elapsed = copy_streams(pool, statement, streams.iter().map(|b| b.as_bytes().to_vec()).collect()).await?;
    sqlx::raw_sql("DROP TABLE bench_raw_events").execute(pool).await?;
    Ok(elapsed)
}

async fn time_import(pool: &PgPool, file: &Path, events: usize) -> Result<Duration, BenchError> {
    let started = Instant::now();
    let summary = ingest::import(pool, ImportOptions::new(vec![file.to_path_buf()])).await?;
    let elapsed = started.elapsed();
    if !summary.errors.is_empty() || summary.cloudtrail_events != events as u64 {
        return Err(BenchError::ImportErrors(format!("{:?}, stored {}", summary.errors, summary.cloudtrail_events)));
    }
    Ok(elapsed)
}

/// The generated file: a CloudTrail document, its records kept as text.
#[derive(serde::Deserialize)]
struct Document {
    #[serde(rename = "Records")]
    records: Vec<Box<serde_json::value::RawValue>>,
}

/// One stream's COPY text and the event times in it (for the partitions it needs).
type StreamRows = (CopyBuffer, Vec<chrono::DateTime<Utc>>);

/// The same rows the importer stores, as COPY text, split into one buffer per stream.
fn encode_rows(file: &Path) -> Result<Vec<StreamRows>, BenchError> {
    let document: Document =
        serde_json::from_reader(std::io::BufReader::new(std::fs::File::open(file)?)).map_err(std::io::Error::other)?;
    let per_stream = document.records.len().div_ceil(STREAMS);
    let mut streams = Vec::new();
    for chunk in document.records.chunks(per_stream.max(1)) {
        let mut buffer = CopyBuffer::with_capacity(chunk.len() * 2048);
        let mut months = Vec::new();
        for raw in chunk {
            let event = CloudTrailEvent::parse(raw.get(), None).map_err(std::io::Error::other)?;
            months.push(month_start(event.event_time));
            event.write_row(None, &mut buffer);
        }
        months.sort();
        months.dedup();
        streams.push((buffer, months));
    }
    Ok(streams)
}

/// Plain COPY of pre-encoded rows on parallel connections, in batches of the importer's size;
/// `with_rollup`: each batch followed by the rare-API baseline rollup ingest writes with it.
async fn time_raw_copy(
    pool: &PgPool,
    streams: &[(CopyBuffer, Vec<chrono::DateTime<Utc>>)],
    with_rollup: bool,
) -> Result<Duration, BenchError> {
    let partitions = PartitionCache::default();
    let mut conn = pool.acquire().await?;
    for (_, months) in streams {
        partitions.ensure(&mut conn, PartitionedTable::CloudTrailEvents, months.clone()).await?;
    }
    drop(conn);
    let started = Instant::now();
    let mut tasks = Vec::new();
    for (buffer, _) in streams {
        let pool = pool.clone();
        let data = buffer.as_bytes().to_vec();
        tasks.push(tokio::spawn(async move {
            for chunk in split_rows(&data, 2_000) {
                ingest::store::copy_raw(&pool, PartitionedTable::CloudTrailEvents, chunk).await?;
                if with_rollup {
                    ingest::api_rollup::record(&mut *pool.acquire().await?, chunk).await?;
                }
            }
            Ok::<(), sqlx::Error>(())
        }));
    }
    for task in tasks {
        task.await.map_err(std::io::Error::other)??;
    }
    Ok(started.elapsed())
}

/// Plain COPY of pre-encoded rows with `statement`, one connection a stream, in batches of the
/// importer's size; the time it took.
pub(crate) async fn copy_streams(
    pool: &PgPool,
    statement: &str,
    streams: Vec<Vec<u8>>,
) -> Result<Duration, BenchError> {
    let started = Instant::now();
    let mut tasks = Vec::new();
    for data in streams {
        let (pool, statement) = (pool.clone(), statement.to_owned());
        tasks.push(tokio::spawn(async move {
            for chunk in split_rows(&data, 2_000) {
                let mut copy = pool.copy_in_raw(&statement).await?;
                copy.send(chunk).await?;
                copy.finish().await?;
            }
            Ok::<(), sqlx::Error>(())
        }));
    }
    for task in tasks {
        task.await.map_err(std::io::Error::other)??;
    }
    Ok(started.elapsed())
}

/// Splits COPY text into chunks of `rows` lines.
pub(crate) fn split_rows(data: &[u8], rows: usize) -> Vec<&[u8]> {
    let mut chunks = Vec::new();
    let (mut start, mut count) = (0, 0);
    for (i, byte) in data.iter().enumerate() {
        if *byte == b'\n' {
            count += 1;
            if count == rows {
                chunks.push(&data[start..=i]);
                start = i + 1;
                count = 0;
            }
        }
    }
    if start < data.len() {
        chunks.push(&data[start..]);
    }
    chunks
}
