//! The `skywarden` binary: parse the command line, set up logging and the database, dispatch.

use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;
use clap::Parser;
use sqlx::postgres::PgConnectOptions;

use skywarden::cli::{BenchArgs, Cli, Command, DbAction, DemoArgs, GeoArgs, ImportArgs, ServeArgs};
use skywarden::db::{Database, DbOptions, EmbeddedPostgres};
use skywarden::geo::GeoDb;
use skywarden::ingest::flowlogs::FlowFormat;
use skywarden::ingest::{self, ImportOptions, ImportSummary};
use skywarden::{bench, demo, http, telemetry};

/// Exit code when an import finished but some files or records could not be imported.
const EXIT_PARTIAL_IMPORT: u8 = 2;

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    telemetry::init(cli.log_format);
    match run(cli).await {
        Ok(code) => code,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Migrate => {
            let db = Database::open(&cli.db).await?;
            println!("migrations applied");
            db.close().await?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Import(args) => import(&cli.db, args).await,
        Command::Serve(args) => serve(&cli.db, args).await,
        Command::Db { action } => embedded(&cli.db, action).await,
        Command::Demo(args) => run_demo(&cli.db, args).await,
        Command::BenchImport(args) => bench_import(&cli.db, args).await,
    }
}

fn open_geo(args: &GeoArgs) -> anyhow::Result<Option<Arc<GeoDb>>> {
    if args.geoip.is_empty() {
        return Ok(None);
    }
    Ok(Some(Arc::new(GeoDb::open(&args.geoip)?)))
}

async fn import(db_options: &DbOptions, args: ImportArgs) -> anyhow::Result<ExitCode> {
    let geo = open_geo(&args.geo)?;
    let flow_format = args.flow_format.as_deref().map(FlowFormat::parse).transpose().context("--flow-format")?;
    let db = Database::open(db_options).await?;
    let options = ImportOptions {
        geo,
        default_account: args.account,
        flow_format,
        parsers: args.parsers,
        writers: args.writers,
        show_progress: !args.json,
        ..ImportOptions::new(args.paths)
    };
    let summary = ingest::import(&db.pool, options).await;
    db.close().await?;
    let summary = summary?;
    if args.json {
        println!("{}", serde_json::to_string(&summary)?);
    } else {
        print_summary(&summary);
    }
    Ok(if summary.errors.is_empty() { ExitCode::SUCCESS } else { ExitCode::from(EXIT_PARTIAL_IMPORT) })
}

fn print_summary(summary: &ImportSummary) {
    println!(
        "Imported {} files in {:.1}s: {} new CloudTrail events, {} new flow records, {} duplicates skipped{}.",
        summary.files,
        summary.elapsed_ms as f64 / 1000.0,
        summary.cloudtrail_events,
        summary.flow_records,
        summary.duplicates,
        if summary.skipped > 0 { format!(", {} non-log records skipped", summary.skipped) } else { String::new() },
    );
    if !summary.errors.is_empty() {
        println!("{} problems:", summary.errors.len());
        for error in &summary.errors {
            println!("  {}: {}", error.file, error.error);
        }
    }
}

async fn serve(db_options: &DbOptions, args: ServeArgs) -> anyhow::Result<ExitCode> {
    let db = Database::open(db_options).await?;
    let listener =
        tokio::net::TcpListener::bind(args.listen).await.with_context(|| format!("binding {}", args.listen))?;
    http::serve(http::ApiContext { db: db.pool.clone() }, listener, shutdown_signal()).await?;
    db.close().await?;
    Ok(ExitCode::SUCCESS)
}

/// Completes on SIGINT or SIGTERM.
async fn shutdown_signal() {
    let interrupt = tokio::signal::ctrl_c();
    let mut terminate =
        tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).expect("installing SIGTERM handler");
    tokio::select! {
        _ = interrupt => {},
        _ = terminate.recv() => {},
    }
    tracing::info!("shutting down");
}

async fn embedded(db_options: &DbOptions, action: DbAction) -> anyhow::Result<ExitCode> {
    anyhow::ensure!(
        db_options.database_url.is_none(),
        "`skywarden db` manages the embedded cluster; unset DATABASE_URL to use it"
    );
    let mut server = EmbeddedPostgres::new(&db_options.data_dir())?;
    match action {
        DbAction::Start => {
            server.ensure_running().await?;
            let mut db = Database::open(db_options).await?;
            db.detach_embedded();
            println!("{}", server.database_url(skywarden::db::embedded::DATABASE));
        }
        DbAction::Stop => server.stop().await?,
        DbAction::Status => {
            let running = server.is_running().await?;
            println!("{}", if running { "running" } else { "stopped" });
            if !running {
                return Ok(ExitCode::from(3));
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

async fn run_demo(db_options: &DbOptions, args: DemoArgs) -> anyhow::Result<ExitCode> {
    let geo = open_geo(&args.geo)?;
    let db = Database::open(db_options).await?;
    let options = ImportOptions { geo, show_progress: true, ..ImportOptions::new(vec![args.samples.clone()]) };
    let summary = ingest::import(&db.pool, options).await;
    let result = match summary {
        Ok(summary) => {
            print_summary(&summary);
            demo::print_story(&db.pool).await.map_err(anyhow::Error::from)
        }
        Err(error) => Err(error.into()),
    };
    db.close().await?;
    result?;
    let data_dir = db_options.data_dir();
    println!("\nWhere to look next:");
    if db_options.database_url.is_none() {
        println!("  skywarden --data-dir {} db start     # prints the URL to use with psql", data_dir.display());
    }
    println!("  tables: cloudtrail_events (audit trail, raw event in `raw`), flow_records, accounts");
    if let Some(story) = args.samples.parent().map(|dir| dir.join("README.md")).filter(|p| p.exists()) {
        println!("  the story behind the data: {}", story.display());
    }
    Ok(ExitCode::SUCCESS)
}

async fn bench_import(db_options: &DbOptions, args: BenchArgs) -> anyhow::Result<ExitCode> {
    // The benchmark works in a scratch database on the same server, never in Skywarden's own.
    let db = Database::open(db_options).await?;
    let server: PgConnectOptions = db.pool.connect_options().as_ref().clone();
    let work_dir = match args.work_dir {
        Some(dir) => dir,
        None => std::env::temp_dir(),
    };
    let report = bench::run(&server, args.events, &work_dir).await;
    db.close().await?;
    println!("{}", report?);
    Ok(ExitCode::SUCCESS)
}
