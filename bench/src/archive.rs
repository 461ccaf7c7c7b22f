//! `skywarden-bench archive`: archive throughput against reading the same rows out of
//! PostgreSQL.
//!
//! Generates realistic CloudTrail events, imports them with the real importer into a scratch
//! database, then measures the baseline, `COPY (SELECT <the columns the archive reads> … ORDER BY
//! <the archive's file order>) TO STDOUT` (the cost of only getting the rows out, best of
//! `ROUNDS`), and one real archive run to a temporary folder: OCSF mapping, Parquet writing,
//! read-back verification and the partition drop. The archive can run only once per import
//! (it drops what it archived), so it is measured once.

use std::path::Path;
use std::time::{Duration, Instant};

use chrono::Utc;
use futures_util::StreamExt;
use sqlx::postgres::{PgConnectOptions, PgPoolCopyExt, PgPoolOptions};
use sqlx::{ConnectOptions, PgPool};

use skywarden::archive::destination::Destination;
use skywarden::archive::{self, ArchiveOptions};
use skywarden::aws::AwsSettings;
use skywarden::db::MIGRATOR;
use skywarden::ingest::{self, ImportOptions};

use crate::synthetic::generate_events;
use anyhow::Context;

const BENCH_DATABASE: &str = "skywarden_bench_archive";
/// Rounds of the baseline (best kept).
const ROUNDS: usize = 2;

/// The archive's own read (`archive::store::rows`), as COPY text.
const BASELINE: &str = "COPY (SELECT account_id, event_time, event_id, region, event_source, event_name, principal_arn,
    principal_type, principal_id, user_name, access_key_id, source_ip_text, user_agent, error_code, error_message,
    geo_country, geo_city, raw, read_only, resource_ids, geo_asn, geo_as_org, source_is_tor, source_is_vpn,
    source_is_hosting, source_is_aws, geo_latitude, geo_longitude
    FROM cloudtrail_events ORDER BY account_id, region, event_time, event_id) TO STDOUT";

#[derive(Debug)]
pub struct ArchiveReport {
    pub events: usize,
    pub copy_rate: f64,
    pub copy_bytes: u64,
    pub archive_rate: f64,
    pub objects: usize,
    pub lake_bytes: u64,
}

impl std::fmt::Display for ArchiveReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(f, "events:                {}", self.events)?;
        writeln!(f, "COPY ... TO STDOUT:    {:>10.0} rows/s ({} bytes of text)", self.copy_rate, self.copy_bytes)?;
        writeln!(
            f,
            "skywarden archive:     {:>10.0} rows/s ({} objects, {} bytes)",
            self.archive_rate, self.objects, self.lake_bytes
        )?;
        write!(f, "ratio archive/COPY:    {:>10.2}", self.archive_rate / self.copy_rate)
    }
}

/// Runs the benchmark on a scratch database next to `server` (dropped afterwards); the lake
/// goes to a temporary folder under `work_dir` (removed afterwards).
pub async fn run(server: &PgConnectOptions, events: usize, work_dir: &Path) -> anyhow::Result<ArchiveReport> {
    let admin = server.clone().database("postgres");
    let mut admin_conn = admin.connect().await?;
    sqlx::raw_sql(&format!("DROP DATABASE IF EXISTS {BENCH_DATABASE} WITH (FORCE)")).execute(&mut admin_conn).await?;
    sqlx::raw_sql(&format!("CREATE DATABASE {BENCH_DATABASE}")).execute(&mut admin_conn).await?;
    let pool = PgPoolOptions::new().max_connections(4).connect_with(server.clone().database(BENCH_DATABASE)).await?;
    MIGRATOR.run(&pool).await?;
    let file = work_dir.join(format!("bench-archive-{}.json", std::process::id()));
    let lake = work_dir.join(format!("bench-archive-lake-{}", std::process::id()));
    let result = measure(&pool, &file, &lake, events).await;
    pool.close().await;
    sqlx::raw_sql(&format!("DROP DATABASE IF EXISTS {BENCH_DATABASE} WITH (FORCE)")).execute(&mut admin_conn).await?;
    let _ = std::fs::remove_file(&file);
    let _ = std::fs::remove_dir_all(&lake);
    result
}

async fn measure(pool: &PgPool, file: &Path, lake: &Path, events: usize) -> anyhow::Result<ArchiveReport> {
    generate_events(file, events)?;
    let summary = ingest::import(pool, ImportOptions::new(vec![file.to_path_buf()])).await?;
    anyhow::ensure!(
        summary.errors.is_empty() && summary.cloudtrail_events == events as u64,
        "the import reported {:?} and stored {} events",
        summary.errors,
        summary.cloudtrail_events
    );
    // Separate statements: VACUUM refuses to run inside the implicit transaction of a batch.
    sqlx::raw_sql("VACUUM ANALYZE cloudtrail_events").execute(pool).await?;
    sqlx::raw_sql("CHECKPOINT").execute(pool).await?;

    let mut best_copy = Duration::MAX;
    let mut copy_bytes = 0;
    for _ in 0..ROUNDS {
        let started = Instant::now();
        let mut stream = pool.copy_out_raw(BASELINE).await?;
        copy_bytes = 0;
        while let Some(chunk) = stream.next().await {
            copy_bytes += chunk?.len() as u64;
        }
        best_copy = best_copy.min(started.elapsed());
    }

    let to = lake.to_str().with_context(|| format!("{}: not UTF-8", lake.display()))?;
    let destination = Destination::open(to, &AwsSettings::default()).await?;
    let options = ArchiveOptions {
        // The generated events are weeks old: every month of them has ended.
        older_than_days: 0,
        destination_text: to.to_owned(),
        dry_run: false,
        row_group_rows: 65_536,
        row_group_bytes: archive::DEFAULT_ROW_GROUP_BYTES,
        now: Utc::now(),
        fail_after_objects: None,
        test_hook: None,
    };
    let started = Instant::now();
    let report = archive::run(pool, &destination, &options).await?;
    let archive_time = started.elapsed();
    let archived: i64 = report.months.iter().filter(|m| m.source == "cloudtrail_events").map(|m| m.rows).sum();
    anyhow::ensure!(
        report.failed() == 0 && archived == events as i64,
        "archived {archived} of {events} events: {:?}",
        report.months
    );
    let (objects, lake_bytes) = lake_size(lake)?;
    Ok(ArchiveReport {
        events,
        copy_rate: events as f64 / best_copy.as_secs_f64(),
        copy_bytes,
        archive_rate: events as f64 / archive_time.as_secs_f64(),
        objects,
        lake_bytes,
    })
}

/// Files and bytes under `root`.
fn lake_size(root: &Path) -> std::io::Result<(usize, u64)> {
    let (mut files, mut bytes) = (0, 0);
    let mut folders = vec![root.to_path_buf()];
    while let Some(folder) = folders.pop() {
        for entry in std::fs::read_dir(&folder)? {
            let entry = entry?;
            if entry.file_type()?.is_dir() {
                folders.push(entry.path());
            } else {
                files += 1;
                bytes += entry.metadata()?.len();
            }
        }
    }
    Ok((files, bytes))
}
