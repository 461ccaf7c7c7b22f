//! `skywarden archive`: copy months older than the hot retention to the open security lake
//! (Parquet, OCSF, Security Lake layout; docs/archive.md), and `archive status`. `serve` runs
//! the same on a schedule when `--archive-after-days` and `--archive-to` are set.

use std::process::ExitCode;

use skywarden::archive::destination::Destination;
use skywarden::archive::{self, ArchiveOptions};
use skywarden::aws::AwsSettings;
use skywarden::db::Database;

use super::EXIT_PARTIAL;

#[derive(Debug, clap::Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct ArchiveArgs {
    #[command(subcommand)]
    pub action: Option<ArchiveAction>,
    /// Archive the months that ended more than this many days ago (the hot retention).
    #[arg(long, value_name = "DAYS", value_parser = clap::value_parser!(u32).range(1..=36_500))]
    pub older_than: Option<u32>,
    /// Where the lake lives: a folder, or s3://bucket/prefix (Skywarden's own AWS credentials).
    #[arg(long, value_name = "DIR | s3://bucket/prefix")]
    pub to: Option<String>,
    /// List the months that would be archived, with their rows; write and drop nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Rows per Parquet row group: what one writer holds in memory.
    #[arg(long, default_value_t = 65_536, value_parser = clap::value_parser!(u64).range(1..=10_000_000))]
    pub row_group_rows: u64,
    /// Buffered bytes per Parquet row group: the other bound of a writer's memory (a few huge
    /// events close a row group before its rows are reached).
    #[arg(long, value_name = "BYTES", default_value_t = archive::DEFAULT_ROW_GROUP_BYTES as u64,
          value_parser = clap::value_parser!(u64).range(1 << 16..=1 << 34))]
    pub row_group_bytes: u64,
    /// Print JSON lines.
    #[arg(long)]
    pub json: bool,
    /// For tests of resuming: stop with an error after writing this many objects, as a killed
    /// run would.
    #[arg(long, hide = true)]
    pub fail_after_objects: Option<usize>,
}

#[derive(Debug, clap::Subcommand)]
pub enum ArchiveAction {
    /// The latest runs, and every month's state (writing, verified, dropped) and last error.
    Status {
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
}

/// `serve`'s schedule: off unless both are set.
#[derive(Debug, Clone, clap::Args)]
pub struct ArchiveScheduleArgs {
    /// Archive months that ended more than this many days ago, on a schedule (off by default).
    #[arg(long, env = "SKYWARDEN_ARCHIVE_AFTER_DAYS", requires = "archive_to", value_parser = clap::value_parser!(u32).range(1..=36_500))]
    pub archive_after_days: Option<u32>,
    /// The lake of the schedule: a folder or s3://bucket/prefix.
    #[arg(long, env = "SKYWARDEN_ARCHIVE_TO", requires = "archive_after_days")]
    pub archive_to: Option<String>,
    /// Time between scheduled archive runs (the first runs at start).
    #[arg(long, env = "SKYWARDEN_ARCHIVE_EVERY", default_value = "24h", value_parser = crate::cli::parse_wait)]
    pub archive_every: std::time::Duration,
}

pub(crate) async fn run(db: &Database, args: ArchiveArgs) -> anyhow::Result<ExitCode> {
    if let Some(ArchiveAction::Status { json }) = args.action {
        return status(db, json).await;
    }
    let (Some(older_than), Some(to)) = (args.older_than, args.to) else {
        anyhow::bail!("archive needs --older-than <DAYS> and --to <DIR | s3://bucket/prefix> (or `archive status`)");
    };
    let destination = Destination::open(&to, &AwsSettings::from_env()).await?;
    let options = ArchiveOptions {
        older_than_days: older_than,
        destination_text: to,
        dry_run: args.dry_run,
        row_group_rows: usize::try_from(args.row_group_rows).unwrap_or(65_536),
        row_group_bytes: usize::try_from(args.row_group_bytes).unwrap_or(archive::DEFAULT_ROW_GROUP_BYTES),
        now: chrono::Utc::now(),
        fail_after_objects: args.fail_after_objects,
        test_hook: archive::hook_from_env(),
    };
    let report = archive::run(&db.pool, &destination, &options).await?;
    for month in &report.months {
        if args.json {
            println!("{}", serde_json::to_string(month)?);
        } else {
            let error = month.error.as_deref().map(|e| format!(" ({e})")).unwrap_or_default();
            let again = match month.already_archived {
                0 => String::new(),
                n => format!(", {n} already archived"),
            };
            println!(
                "{} {} {}: {} rows, {} objects{again}{error}",
                month.source, month.month, month.outcome, month.rows, month.objects
            );
        }
    }
    if !args.json {
        println!(
            "run {}: {} months before {}, {} failed, {} deferred",
            report.run_id,
            report.months.len(),
            report.cutoff.format("%Y-%m-%d"),
            report.failed(),
            report.months.iter().filter(|m| m.outcome == "deferred").count()
        );
    }
    Ok(if report.failed() > 0 { ExitCode::from(EXIT_PARTIAL) } else { ExitCode::SUCCESS })
}

async fn status(db: &Database, json: bool) -> anyhow::Result<ExitCode> {
    let runs = archive::status::runs(&db.pool, 10).await?;
    let months = archive::status::months(&db.pool).await?;
    if json {
        for run in &runs {
            println!("{}", serde_json::json!({"run": run}));
        }
        for month in &months {
            println!("{}", serde_json::json!({"month": month}));
        }
        return Ok(ExitCode::SUCCESS);
    }
    println!("runs (newest first):");
    for run in &runs {
        let error = run.error.as_deref().map(|e| format!(" error: {e}")).unwrap_or_default();
        println!(
            "  #{} {} {} to {} (older than {} days{}): {} months, {} objects, {} rows{error}",
            run.run_id,
            run.started_at.format("%Y-%m-%d %H:%M:%S"),
            run.status,
            run.destination,
            run.older_than_days,
            if run.dry_run { ", dry run" } else { "" },
            run.partitions,
            run.objects,
            run.rows_archived
        );
    }
    println!("months:");
    for month in &months {
        let error = month.error.as_deref().map(|e| format!(" error: {e}")).unwrap_or_default();
        let again = match month.already_archived {
            0 => String::new(),
            n => format!(", {n} already archived"),
        };
        println!(
            "  {} {} g{} {} ({} rows, {} objects{again}) at {}{error}",
            month.source,
            month.month_start.format("%Y-%m"),
            month.generation,
            month.state,
            month.row_count,
            month.objects,
            month.destination
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// `serve`'s loop: a run now and every `archive_every` until stopped; a failed run is logged
/// (and visible in `archive status` and /metrics) and the next one tries again.
pub(crate) async fn schedule(
    pool: sqlx::PgPool,
    args: ArchiveScheduleArgs,
    days: u32,
    to: String,
    stop: impl std::future::Future<Output = ()>,
) {
    let destination = match Destination::open(&to, &AwsSettings::from_env()).await {
        Ok(destination) => destination,
        Err(error) => {
            tracing::error!(%error, destination = %to, "scheduled archive off: the destination cannot be opened");
            return;
        }
    };
    tokio::pin!(stop);
    loop {
        let options = ArchiveOptions {
            older_than_days: days,
            destination_text: to.clone(),
            dry_run: false,
            row_group_rows: 65_536,
            row_group_bytes: archive::DEFAULT_ROW_GROUP_BYTES,
            now: chrono::Utc::now(),
            fail_after_objects: None,
            test_hook: None,
        };
        match archive::run(&pool, &destination, &options).await {
            Ok(report) if report.failed() > 0 => tracing::warn!(
                run_id = report.run_id,
                failed = report.failed(),
                "scheduled archive run: some months failed"
            ),
            Ok(report) => {
                tracing::info!(run_id = report.run_id, months = report.months.len(), "scheduled archive run done")
            }
            Err(error) => tracing::error!(%error, "scheduled archive run failed"),
        }
        tokio::select! {
            () = &mut stop => return,
            () = tokio::time::sleep(args.archive_every) => {}
        }
    }
}
