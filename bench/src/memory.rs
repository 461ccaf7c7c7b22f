//! `skywarden-bench import-memory`: the peak resident memory of `skywarden import` on a large
//! dump.
//!
//! Issue 18 asks that it stay under 300 MB on a 1 GB dump. Writes a CloudTrail dump of the
//! realistic mix (`synthetic`) as S3 delivers it (gzip files of 2,000 events each under
//! `AWSLogs/…/CloudTrail/…`; or one plain document with `--single-document`), sized by its JSON
//! (before gzip), and runs the `skywarden` binary beside this one (same build) as a child:
//! `skywarden import --json DUMP` into a scratch database, detection and the full-text index
//! included as the command runs them. Its peak RSS comes from GNU time (`/usr/bin/time -f %M`:
//! its child's `ru_maxrss` from `wait4`, exact) when it is installed, and from the child's
//! `VmHWM` in `/proc` polled every 10 ms (the kernel's high-water mark; it misses only growth in
//! the last 10 ms before exit). The baseline, in the same run, is a dump a tenth the size: memory
//! that grows with the input shows as a ratio well above 1.

use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use flate2::Compression;
use flate2::write::GzEncoder;
use sqlx::ConnectOptions;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};

use crate::product::{scratch_url, skywarden_binary};
use crate::synthetic::generate_events;
use skywarden::db::MIGRATOR;

const DATABASE: &str = "skywarden_bench_import_memory";
/// Events in each delivery file (a CloudTrail file holds what one region logged in ~5 minutes).
const FILE_EVENTS: usize = 2_000;
/// What issue 18 asks, in MB (10^6 bytes), at 1 GiB.
const TARGET_MB: f64 = 300.0;
const TARGET_BYTES: u64 = 1 << 30;
const GNU_TIME: &str = "/usr/bin/time";
/// How `synthetic` opens its document.
const DOCUMENT_START: &[u8] = b"{\"Records\":[";

#[derive(Debug, thiserror::Error)]
pub enum MemoryBenchError {
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
    #[error("migration failed")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("{0}")]
    Setup(String),
}

pub struct Settings {
    /// The dump's JSON size (before gzip).
    pub bytes: u64,
    pub work_dir: PathBuf,
    pub single_document: bool,
    /// The server's URL as given (`None`: build one from the connection options).
    pub database_url: Option<String>,
}

/// A generated dump.
struct Dump {
    path: PathBuf,
    events: usize,
    files: usize,
    json_bytes: u64,
    disk_bytes: u64,
}

/// One import of one dump.
pub struct ImportRun {
    events: usize,
    files: usize,
    json_bytes: u64,
    disk_bytes: u64,
    stored: u64,
    seconds: f64,
    /// Where the command's time went: its steps and detection's stages, in seconds.
    breakdown: Vec<(String, f64)>,
    /// From `wait4` (GNU time), in KiB, when it is installed.
    exact_kib: Option<u64>,
    /// The highest `VmHWM` polled, in KiB.
    polled_kib: Option<u64>,
}

impl ImportRun {
    fn peak_mb(&self) -> Option<f64> {
        self.exact_kib.or(self.polled_kib).map(|kib| kib as f64 * 1024.0 / 1e6)
    }
}

pub struct MemoryReport {
    single_document: bool,
    baseline: ImportRun,
    full: ImportRun,
}

/// Runs both imports in a scratch database next to `server` (dropped afterwards); the dumps go
/// to a folder of their own under `work_dir`, removed afterwards.
pub async fn run(server: &PgConnectOptions, settings: &Settings) -> Result<MemoryReport, MemoryBenchError> {
    let binary = skywarden_binary().map_err(MemoryBenchError::Setup)?;
    let dir = settings.work_dir.join(format!("skywarden-bench-import-memory-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let url = scratch_url(server, settings.database_url.as_deref(), DATABASE);
    let result = measure(server, settings, &binary, &dir, &url).await;
    let _ = std::fs::remove_dir_all(&dir);
    let mut admin = server.clone().database("postgres").connect().await?;
    sqlx::raw_sql(&format!("DROP DATABASE IF EXISTS {DATABASE} WITH (FORCE)")).execute(&mut admin).await?;
    result
}

async fn measure(
    server: &PgConnectOptions,
    settings: &Settings,
    binary: &Path,
    dir: &Path,
    url: &str,
) -> Result<MemoryReport, MemoryBenchError> {
    let sample = dir.join("sample.json");
    let per_event = (generate_events(&sample, 1_000)? / 1_000).max(1) as u64;
    std::fs::remove_file(&sample)?;
    let mut runs = Vec::new();
    for (name, bytes) in [("baseline", (settings.bytes / 10).max(1)), ("full", settings.bytes.max(1))] {
        let (folder, single) = (dir.join(name), settings.single_document);
        let events = (bytes / per_event).max(1) as usize;
        let dump = tokio::task::spawn_blocking(move || write_dump(&folder, events, single))
            .await
            .map_err(|e| MemoryBenchError::Setup(e.to_string()))??;
        fresh_database(server).await?;
        let (binary, url, log) = (binary.to_path_buf(), url.to_owned(), dir.join(format!("import-{name}.log")));
        let run = tokio::task::spawn_blocking(move || import(&binary, &url, &dump, &log))
            .await
            .map_err(|e| MemoryBenchError::Setup(e.to_string()))??;
        let _ = std::fs::remove_dir_all(dir.join(name));
        runs.push(run);
    }
    let full = runs.pop().expect("two runs");
    let baseline = runs.pop().expect("two runs");
    Ok(MemoryReport { single_document: settings.single_document, baseline, full })
}

/// The scratch database, empty and migrated (the import would migrate it too; done here so
/// that is not part of what it measures).
async fn fresh_database(server: &PgConnectOptions) -> Result<(), MemoryBenchError> {
    let mut admin = server.clone().database("postgres").connect().await?;
    sqlx::raw_sql(&format!("DROP DATABASE IF EXISTS {DATABASE} WITH (FORCE)")).execute(&mut admin).await?;
    sqlx::raw_sql(&format!("CREATE DATABASE {DATABASE}")).execute(&mut admin).await?;
    let pool = PgPoolOptions::new().max_connections(1).connect_with(server.clone().database(DATABASE)).await?;
    MIGRATOR.run(&pool).await?;
    pool.close().await;
    Ok(())
}

/// Writes `events` events into `folder`: one plain document, or split into gzip delivery files.
fn write_dump(folder: &Path, events: usize, single_document: bool) -> Result<Dump, MemoryBenchError> {
    std::fs::create_dir_all(folder)?;
    let plain = folder.join("111122223333_CloudTrail_eu-west-1_20261020T0000Z_all.json");
    generate_events(&plain, events)?;
    let json_bytes = std::fs::metadata(&plain)?.len();
    if single_document {
        return Ok(Dump { path: plain, events, files: 1, json_bytes, disk_bytes: json_bytes });
    }
    let deliveries = folder.join("AWSLogs/111122223333/CloudTrail/eu-west-1/2026/10/20");
    std::fs::create_dir_all(&deliveries)?;
    let (files, split_json_bytes) = split_into_deliveries(&plain, &deliveries)?;
    std::fs::remove_file(&plain)?;
    let disk_bytes = std::fs::read_dir(&deliveries)?.filter_map(|e| e.ok()?.metadata().ok()).map(|m| m.len()).sum();
    Ok(Dump { path: folder.join("AWSLogs"), events, files, json_bytes: split_json_bytes, disk_bytes })
}

/// Splits the document `plain` into gzip files of [`FILE_EVENTS`] records each, in `out`.
/// Returns how many files and their JSON bytes (before gzip).
fn split_into_deliveries(plain: &Path, out: &Path) -> std::io::Result<(usize, u64)> {
    let mut input = BufReader::with_capacity(1 << 20, std::fs::File::open(plain)?);
    let mut start = vec![0; DOCUMENT_START.len()];
    input.read_exact(&mut start)?;
    if start != DOCUMENT_START {
        return Err(std::io::Error::other("the generated document does not start as expected"));
    }
    let mut records = Records::default();
    let mut writer = Deliveries { out: out.to_path_buf(), current: None, in_file: 0, files: 0, json_bytes: 0 };
    loop {
        let chunk = input.fill_buf()?;
        if chunk.is_empty() {
            break;
        }
        let length = chunk.len();
        records.feed(chunk, |record| writer.add(record))?;
        input.consume(length);
    }
    writer.finish()?;
    Ok((writer.files, writer.json_bytes))
}

/// Finds the top-level objects of the records array (strings and nesting followed).
#[derive(Default)]
struct Records {
    depth: u32,
    in_string: bool,
    escaped: bool,
    current: Vec<u8>,
}

impl Records {
    fn feed(&mut self, bytes: &[u8], mut record: impl FnMut(&[u8]) -> std::io::Result<()>) -> std::io::Result<()> {
        for &byte in bytes {
            if self.depth == 0 {
                // Between records: commas, and the `]}` that closes the document.
                if byte == b'{' {
                    self.depth = 1;
                    self.current.push(byte);
                }
                continue;
            }
            self.current.push(byte);
            if self.in_string {
                match byte {
                    _ if self.escaped => self.escaped = false,
                    b'\\' => self.escaped = true,
                    b'"' => self.in_string = false,
                    _ => {}
                }
                continue;
            }
            match byte {
                b'"' => self.in_string = true,
                b'{' | b'[' => self.depth += 1,
                b'}' | b']' => {
                    self.depth -= 1;
                    if self.depth == 0 {
                        record(&self.current)?;
                        self.current.clear();
                    }
                }
                _ => {}
            }
        }
        Ok(())
    }
}

/// The delivery files being written.
struct Deliveries {
    out: PathBuf,
    current: Option<GzEncoder<std::io::BufWriter<std::fs::File>>>,
    in_file: usize,
    files: usize,
    json_bytes: u64,
}

impl Deliveries {
    fn add(&mut self, record: &[u8]) -> std::io::Result<()> {
        match &mut self.current {
            Some(file) => file.write_all(b",")?,
            None => self.current = Some(self.open()?),
        }
        if let Some(file) = &mut self.current {
            file.write_all(record)?;
        }
        self.json_bytes += record.len() as u64 + 1;
        self.in_file += 1;
        if self.in_file == FILE_EVENTS {
            self.finish()?;
        }
        Ok(())
    }

    /// The next delivery file, its document opened.
    fn open(&mut self) -> std::io::Result<GzEncoder<std::io::BufWriter<std::fs::File>>> {
        let name = format!("111122223333_CloudTrail_eu-west-1_20261020T0000Z_{:06}.json.gz", self.files);
        let file = std::io::BufWriter::new(std::fs::File::create(self.out.join(name))?);
        let mut gz = GzEncoder::new(file, Compression::default());
        gz.write_all(DOCUMENT_START)?;
        self.files += 1;
        self.json_bytes += DOCUMENT_START.len() as u64 + 3;
        Ok(gz)
    }

    fn finish(&mut self) -> std::io::Result<()> {
        if let Some(mut gz) = self.current.take() {
            gz.write_all(b"]}\n")?;
            gz.finish()?.flush()?;
        }
        self.in_file = 0;
        Ok(())
    }
}

/// `skywarden import --json DUMP` as a child, its peak RSS measured (see the module's comment).
fn import(binary: &Path, url: &str, dump: &Dump, log: &Path) -> Result<ImportRun, MemoryBenchError> {
    let gnu_time = Path::new(GNU_TIME).is_file();
    let rusage_file = log.with_extension("maxrss");
    let mut command = if gnu_time {
        let mut command = Command::new(GNU_TIME);
        command.args(["-f", "%M", "-o"]).arg(&rusage_file).arg(binary);
        command
    } else {
        Command::new(binary)
    };
    command
        .args(["import", "--json"])
        .arg(&dump.path)
        .env("DATABASE_URL", url)
        .env("RUST_LOG", "warn")
        .env_remove("SKYWARDEN_DATA_DIR")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(log)?);
    let started = Instant::now();
    let mut child =
        command.spawn().map_err(|e| MemoryBenchError::Setup(format!("starting {}: {e}", binary.display())))?;
    let mut stdout = child.stdout.take().expect("piped");
    let reader = std::thread::spawn(move || {
        let mut out = String::new();
        stdout.read_to_string(&mut out).map(|_| out)
    });
    let (done, peak) = (Arc::new(AtomicBool::new(false)), Arc::new(AtomicU64::new(0)));
    let poller = poll_peak(child.id(), gnu_time, done.clone(), peak.clone());
    let status = child.wait()?;
    let seconds = started.elapsed().as_secs_f64();
    done.store(true, Ordering::Relaxed);
    let _ = poller.join();
    let out = reader.join().map_err(|_| MemoryBenchError::Setup("reading the import's output".into()))??;
    if !status.success() {
        let errors = std::fs::read_to_string(log).unwrap_or_default();
        return Err(MemoryBenchError::Setup(format!("skywarden import: {status}: {}", errors.trim())));
    }
    let summary: serde_json::Value = serde_json::from_str(out.trim())
        .map_err(|e| MemoryBenchError::Setup(format!("unreadable import summary ({e}): {out}")))?;
    let stored = summary["cloudtrail_events"].as_u64().unwrap_or_default();
    if stored != dump.events as u64 {
        return Err(MemoryBenchError::Setup(format!("the import stored {stored} of {} events: {out}", dump.events)));
    }
    let exact_kib = if gnu_time {
        std::fs::read_to_string(&rusage_file)?.trim().lines().last().and_then(|l| l.parse().ok())
    } else {
        None
    };
    Ok(ImportRun {
        breakdown: breakdown(&summary),
        events: dump.events,
        files: dump.files,
        json_bytes: dump.json_bytes,
        disk_bytes: dump.disk_bytes,
        stored,
        seconds,
        exact_kib,
        polled_kib: Some(peak.load(Ordering::Relaxed)).filter(|&kib| kib > 0),
    })
}

/// The command's steps (`steps_ms`) and detection's stages (`detection.stage_ms`) from its
/// summary, in seconds, the stages under `detection.`.
fn breakdown(summary: &serde_json::Value) -> Vec<(String, f64)> {
    let seconds = |value: &serde_json::Value| value.as_u64().unwrap_or_default() as f64 / 1000.0;
    let mut parts = Vec::new();
    for (prefix, times) in [("", &summary["steps_ms"]), ("detection.", &summary["detection"]["stage_ms"])] {
        if let Some(times) = times.as_object() {
            parts.extend(times.iter().map(|(name, ms)| (format!("{prefix}{name}"), seconds(ms))));
        }
    }
    parts
}

/// Polls the import's `VmHWM` every 10 ms into `peak` until `done`. Under GNU time the import
/// is time's child: its pid is read from `/proc/<time>/task/<time>/children`.
fn poll_peak(pid: u32, under_time: bool, done: Arc<AtomicBool>, peak: Arc<AtomicU64>) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        let mut target = (!under_time).then_some(pid);
        while !done.load(Ordering::Relaxed) {
            if target.is_none() {
                target = std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children"))
                    .ok()
                    .and_then(|c| c.split_whitespace().next()?.parse().ok());
            }
            if let Some(kib) = target.and_then(high_water_kib) {
                peak.fetch_max(kib, Ordering::Relaxed);
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    })
}

/// A process's `VmHWM` in KiB (None once it has exited).
fn high_water_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status.lines().find(|l| l.starts_with("VmHWM:"))?.split_whitespace().nth(1)?.parse().ok()
}

fn mb(kib: Option<u64>) -> String {
    kib.map_or_else(|| "-".into(), |kib| format!("{:.0}", kib as f64 * 1024.0 / 1e6))
}

impl std::fmt::Display for MemoryReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let shape = if self.single_document { "one plain JSON document" } else { "gzip delivery files" };
        writeln!(f, "import memory: `skywarden import` (detection and full-text index included) on a dump of {shape}")?;
        writeln!(
            f,
            "  {:<9} {:>9} {:>7} {:>10} {:>9} {:>9} {:>8} {:>11} {:>10} {:>11}",
            "dump", "events", "files", "JSON MiB", "disk MiB", "stored", "s", "events/s", "peak MB", "VmHWM poll"
        )?;
        for (name, run) in [("baseline", &self.baseline), ("full", &self.full)] {
            writeln!(
                f,
                "  {:<9} {:>9} {:>7} {:>10.1} {:>9.1} {:>9} {:>8.1} {:>11.0} {:>10} {:>11}",
                name,
                run.events,
                run.files,
                run.json_bytes as f64 / 1048576.0,
                run.disk_bytes as f64 / 1048576.0,
                run.stored,
                run.seconds,
                run.stored as f64 / run.seconds.max(1e-9),
                mb(run.exact_kib.or(run.polled_kib)),
                mb(run.polled_kib),
            )?;
        }
        for (name, run) in [("baseline", &self.baseline), ("full", &self.full)] {
            let parts: Vec<String> = run.breakdown.iter().map(|(part, s)| format!("{part} {s:.1}")).collect();
            writeln!(f, "  {name} seconds by step and detection stage: {}", parts.join(", "))?;
        }
        let how = if self.full.exact_kib.is_some() { "wait4 via GNU time" } else { "VmHWM polled every 10 ms" };
        match (self.full.peak_mb(), self.baseline.peak_mb()) {
            (Some(full), Some(base)) => {
                writeln!(f, "  peak RSS ({how}): full / baseline (10x the input) = {:.2}x", full / base.max(1e-9))?;
                let size = if self.full.json_bytes >= TARGET_BYTES * 95 / 100 {
                    String::new()
                } else {
                    " (the issue's figure is for a 1 GiB dump; this one is smaller)".into()
                };
                let under = if full < TARGET_MB { "yes" } else { "NO" };
                write!(f, "  peak {full:.0} MB under {TARGET_MB:.0} MB: {under}{size}")
            }
            _ => write!(f, "  peak RSS: not measured (no GNU time and no /proc)"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_are_split_whole_whatever_the_chunks() {
        let document = br#"{"a":"}{\"","b":[{"c":1}]},{"d":"x"}]}"#;
        for chunk in [1, 3, document.len()] {
            let mut records = Records::default();
            let mut found = Vec::new();
            for piece in document.chunks(chunk) {
                records
                    .feed(piece, |r| {
                        found.push(String::from_utf8_lossy(r).into_owned());
                        Ok(())
                    })
                    .unwrap();
            }
            assert_eq!(found, [r#"{"a":"}{\"","b":[{"c":1}]}"#, r#"{"d":"x"}"#], "chunks of {chunk}");
        }
    }
}
