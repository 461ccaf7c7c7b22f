//! `skywarden-bench`: Skywarden's benchmarks, kept out of the product binary. Each measures a
//! baseline in the same run and prints its ratio to it; `make bench` runs them at full size,
//! `make test` at a tiny size so none can rot.

#![recursion_limit = "256"]
mod archive;
mod dashboard;
mod detect;
mod flow_import;
mod flows;
mod import;
mod latency;
mod memory;
mod posture;
mod product;
mod queries;
mod spray;
mod synthetic;
mod webdriver;
mod workers;

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};
use skywarden::db::{Database, DbOptions};
use skywarden::detect::PolicySet;
use skywarden::inventory::dump::SnapshotDump;
use skywarden::posture::checks::CheckSet;
use sqlx::postgres::PgConnectOptions;

#[derive(Debug, Parser)]
#[command(name = "skywarden-bench", about = "Skywarden's benchmarks, each against a baseline measured in the same run")]
struct Cli {
    /// PostgreSQL server to work on (each benchmark uses its own scratch database there).
    /// Without it, the embedded cluster in --data-dir.
    #[arg(long, env = "DATABASE_URL", global = true, hide_env_values = true)]
    database_url: Option<skywarden::db::DatabaseUrl>,
    /// Folder of the embedded PostgreSQL cluster.
    #[arg(long, env = "SKYWARDEN_DATA_DIR", global = true)]
    data_dir: Option<PathBuf>,
    #[command(subcommand)]
    command: Bench,
}

#[derive(Debug, Subcommand)]
enum Bench {
    /// Import speed against plain parallel COPY of the same rows.
    Import {
        /// Events to generate.
        #[arg(long, default_value_t = 200_000)]
        events: usize,
        /// What they are made of: `realistic` (issue 18's mix: 400 principals, 1% console
        /// logins, 0.5% writes) or `write-heavy` (half writes: detection's stress test).
        #[arg(long, default_value_t = synthetic::Mix::Realistic)]
        mix: synthetic::Mix,
        /// Folder for the generated file (the system's temporary folder by default).
        #[arg(long)]
        work_dir: Option<PathBuf>,
    },
    /// Archive throughput (OCSF Parquet to a folder, verified, partitions dropped) against
    /// `COPY ... TO STDOUT` of the same rows.
    Archive {
        /// Events to generate.
        #[arg(long, default_value_t = 200_000)]
        events: usize,
        /// Folder for the generated file and the lake (the system's temporary folder by default).
        #[arg(long)]
        work_dir: Option<PathBuf>,
    },
    /// Detection speed: parse + Sigma rules (SigmaHQ pack on) + detectors, against parsing alone.
    Detect {
        /// Events to generate.
        #[arg(long, default_value_t = 100_000)]
        events: usize,
        /// Folder of policy files.
        #[arg(long, default_value = "policies")]
        policies: PathBuf,
    },
    /// The posture checks over a large account (the sample snapshot, copied), against a
    /// baseline that only builds the inputs.
    Posture {
        /// Resources in the account.
        #[arg(long, default_value_t = 5_000)]
        resources: usize,
        /// Snapshot dump to copy resources from.
        #[arg(long, default_value = "samples/incident.config.json")]
        snapshot: PathBuf,
        /// Folder of policy files (the Rego checks are in its `posture/`).
        #[arg(long, default_value = "policies")]
        policies: PathBuf,
    },
    /// Import + detection under a password spray and on the realistic mix, at N and 2N events:
    /// the time ratio against the doubling, peak memory, findings and evidence rows.
    Spray {
        /// Events at the smaller size (the larger is twice this).
        #[arg(long, default_value_t = 100_000)]
        events: usize,
        /// Folder of policy files (the built-in policies without it).
        #[arg(long)]
        policies: Option<PathBuf>,
        /// Folder for the generated files (the system's temporary folder by default).
        #[arg(long)]
        work_dir: Option<PathBuf>,
    },
    /// One run of `spray` (a child process, so its peak memory is its own): imports `file` into
    /// the spray benchmark's scratch database, detects, prints what it measured as JSON.
    #[command(hide = true)]
    SprayRun {
        /// Events in the generated file (for the report).
        #[arg(long)]
        events: usize,
        /// The generated trail file to import.
        #[arg(long)]
        file: PathBuf,
        /// A policies folder over the built-in ones (default: built-in only).
        #[arg(long)]
        policies: Option<PathBuf>,
    },
    /// From a trail file written to S3 to the alert it raises (p50/p95): through an SQS queue
    /// that S3 event notifications fill, against the bucket listing alone, in moto.
    Latency {
        /// Objects written per path.
        #[arg(long, default_value_t = 20)]
        objects: usize,
        /// The moto server (S3, SQS, STS, EC2).
        #[arg(long, env = "SKYWARDEN_TEST_MOTO_URL")]
        moto_url: String,
        /// Seconds between two runs of the listing job in the baseline (the product's default
        /// is 300; at least 30).
        #[arg(long, default_value_t = 60)]
        listing_interval: u64,
    },
    /// Audit-trail query latency (p50/p95 per filter) over generated events, against the lookup
    /// of one event by key.
    Queries {
        /// Events in the scratch table.
        #[arg(long, default_value_t = 10_000_000)]
        events: i64,
        /// Queries per filter.
        #[arg(long, default_value_t = 40)]
        samples: usize,
        /// Keep using the scratch database of an earlier run if it has enough events.
        #[arg(long)]
        reuse: bool,
        /// With --reuse: keep its full-text index too (caught up, not rebuilt), and measure only
        /// the indexed searches (no tail-scan baseline).
        #[arg(long, requires = "reuse")]
        keep_index: bool,
    },
    /// Flow-log import (ten gzip files of v2 records, stored; and stored then detected) against
    /// plain two-stream COPY of the same records' typed columns into a table with two indexes.
    FlowImport {
        /// Flow records to generate.
        #[arg(long, default_value_t = 1_000_000)]
        records: usize,
        /// Folder for the generated files (the system's temporary folder by default).
        #[arg(long)]
        work_dir: Option<PathBuf>,
    },
    /// The flow detectors' per-record lookups (`skywarden_flow_opened`'s handshake lookup, the
    /// port-scan reply check) on a large flow table, against a lookup of the same records by
    /// primary key, with and without the handshake index.
    Flows {
        /// Flow records to generate (five per connection).
        #[arg(long, default_value_t = 2_000_000)]
        records: i64,
        /// Records looked up.
        #[arg(long, default_value_t = 2_000)]
        sample: i64,
    },
    /// Many accounts, many workers: N accounts × R regions polled by K `skywarden worker`
    /// processes for each K given; schedule lag p50/p95/max per K, slots run twice, jobs never
    /// run, peak PostgreSQL connections against the budget. Fails on a slot run twice or
    /// connections over the budget.
    Workers(WorkersArgs),
    /// The dashboard's audit trail in headless Chromium (chromedriver): first contentful paint
    /// and the first page of events in the table (p50/p95 over cold loads) over the `queries`
    /// database at N events, against the same page over 1,000 events; each API request's time.
    Dashboard {
        /// Events in the large database (the `queries` benchmark's, reused or filled up to N).
        #[arg(long, default_value_t = 10_000_000)]
        events: i64,
        /// Events in the baseline's database.
        #[arg(long, default_value_t = 1_000)]
        baseline_events: i64,
        /// Measured page loads per database (after one warm-up).
        #[arg(long, default_value_t = 7)]
        loads: usize,
    },
    /// Peak RSS of `skywarden import` (a child process) on a generated CloudTrail dump, against
    /// a dump a tenth the size; events/s.
    ImportMemory {
        /// The dump's size as JSON (before gzip), in MiB.
        #[arg(long, default_value_t = 1024)]
        mib: u64,
        /// One plain JSON document instead of gzip delivery files of 2,000 events.
        #[arg(long)]
        single_document: bool,
        /// Folder for the dumps (the system's temporary folder by default).
        #[arg(long)]
        work_dir: Option<PathBuf>,
    },
}

#[derive(Debug, clap::Args)]
struct WorkersArgs {
    /// Simulated accounts.
    #[arg(long, default_value_t = 300)]
    accounts: usize,
    /// Regions each account polls (comma-separated).
    #[arg(long, value_delimiter = ',', default_value = "us-east-1,eu-west-1,ap-southeast-2")]
    regions: Vec<String>,
    /// Worker counts to measure, one after the other (the first is the baseline).
    #[arg(long, value_delimiter = ',', default_value = "1,2,4")]
    workers: Vec<usize>,
    /// Seconds each worker count runs.
    #[arg(long, default_value_t = 180)]
    seconds: u64,
    /// Seconds between two runs of a LookupEvents job (at least 30).
    #[arg(long, default_value_t = 60)]
    interval: u64,
    /// `--poll-concurrency` of each worker.
    #[arg(long, default_value_t = 4)]
    poll_concurrency: usize,
    /// `--db-connections` of each worker (the connection budget is workers × this).
    #[arg(long, default_value_t = 4)]
    worker_db_connections: u32,
    /// The moto server (STS).
    #[arg(long, env = "SKYWARDEN_TEST_MOTO_URL")]
    moto_url: String,
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    let db_options = DbOptions { database_url: cli.database_url, data_dir: cli.data_dir, db_connections: 4 };
    match cli.command {
        Bench::Import { events, mix, work_dir } => {
            let work_dir = work_dir.unwrap_or_else(std::env::temp_dir);
            let report =
                with_server(&db_options, async |server| Ok(import::run(server, events, mix, &work_dir).await?)).await?;
            println!("{report}");
        }
        Bench::Archive { events, work_dir } => println!("{}", archive_bench(&db_options, events, work_dir).await?),
        Bench::Queries { events, samples, reuse, keep_index } => {
            let reuse = queries::Reuse { database: reuse, index: keep_index };
            let report =
                with_server(&db_options, async |server| Ok(queries::run(server, events, samples, reuse).await?))
                    .await?;
            println!("{report}");
        }
        command @ (Bench::Spray { .. } | Bench::SprayRun { .. }) => spray_bench(&db_options, command).await?,
        Bench::Latency { objects, moto_url, listing_interval } => {
            let settings = latency::Settings {
                objects: objects.max(1),
                moto_url,
                listing_interval: std::time::Duration::from_secs(listing_interval),
            };
            let report = with_server(&db_options, async |server| Ok(latency::run(server, &settings).await?)).await?;
            println!("{report}");
        }
        Bench::Workers(args) => workers_bench(&db_options, args).await?,
        Bench::FlowImport { records, work_dir } => {
            let work_dir = work_dir.unwrap_or_else(std::env::temp_dir);
            let report =
                with_server(&db_options, async |server| Ok(flow_import::run(server, records, &work_dir).await?))
                    .await?;
            println!("{report}");
        }
        Bench::Flows { records, sample } => {
            let report =
                with_server(&db_options, async |server| Ok(flows::run(server, records, sample).await?)).await?;
            println!("{report}");
        }
        Bench::Dashboard { events, baseline_events, loads } => {
            let settings = dashboard::Settings { events, baseline_events, loads, database_url: given_url(&db_options) };
            let report = with_server(&db_options, async |server| Ok(dashboard::run(server, &settings).await?)).await?;
            println!("{report}");
        }
        Bench::ImportMemory { mib, single_document, work_dir } => {
            let settings = memory::Settings {
                bytes: mib.max(1) << 20,
                work_dir: work_dir.unwrap_or_else(std::env::temp_dir),
                single_document,
                database_url: given_url(&db_options),
            };
            let report = with_server(&db_options, async |server| Ok(memory::run(server, &settings).await?)).await?;
            println!("{report}");
        }
        Bench::Detect { events, policies } => println!("{}", detect_bench(events, policies).await?),
        Bench::Posture { resources, snapshot, policies } => {
            let dump = SnapshotDump::load(&snapshot)?;
            let account = posture::account(&dump, resources)?;
            let mut checks = CheckSet::load(&skywarden::posture::checks_dir(&policies));
            anyhow::ensure!(checks.problems.is_empty(), "posture checks with problems; run `skywarden policies lint`");
            let report = tokio::task::spawn_blocking(move || posture::run(&mut checks, &account)).await?;
            println!("{report}");
        }
    }
    Ok(())
}

/// `spray`, and `spray-run`: the child process `spray` starts for each run.
async fn spray_bench(db_options: &DbOptions, command: Bench) -> anyhow::Result<()> {
    match command {
        Bench::Spray { events, policies, work_dir } => {
            let work_dir = work_dir.unwrap_or_else(std::env::temp_dir);
            let child = spray::ChildCommand {
                database_url: db_options.database_url.as_ref().map(|url| url.expose().to_string()),
                data_dir: db_options.data_dir.clone(),
                policies,
            };
            let report =
                with_server(db_options, async |server| Ok(spray::run(server, events, &work_dir, &child).await?))
                    .await?;
            println!("{report}");
        }
        Bench::SprayRun { events, file, policies } => {
            let policies = policies.map_or_else(PolicySet::builtin, |dir| PolicySet::load(&dir));
            anyhow::ensure!(policies.problems.is_empty(), "policies with problems; run `skywarden policies lint`");
            let run =
                with_server(db_options, async |server| Ok(spray::run_one(server, &file, events, &policies).await?))
                    .await?;
            println!("{}", serde_json::to_string(&run)?);
        }
        _ => unreachable!("only the spray benchmarks come here"),
    }
    Ok(())
}

/// The server's URL as given, for the child processes a benchmark starts.
fn given_url(options: &DbOptions) -> Option<String> {
    options.database_url.as_ref().map(|url| url.expose().to_owned())
}

/// Runs `work` with the server's connection options (benchmarks make their own scratch
/// database there, never touching Skywarden's), and closes the database whatever happens.
async fn with_server<T>(
    options: &DbOptions,
    work: impl AsyncFnOnce(&PgConnectOptions) -> anyhow::Result<T>,
) -> anyhow::Result<T> {
    let db = Database::open(options).await?;
    let server: PgConnectOptions = db.pool.connect_options().as_ref().clone();
    let result = work(&server).await;
    db.close().await?;
    result
}

async fn archive_bench(
    options: &DbOptions,
    events: usize,
    work_dir: Option<PathBuf>,
) -> anyhow::Result<archive::ArchiveReport> {
    let work_dir = work_dir.unwrap_or_else(std::env::temp_dir);
    with_server(options, async |server| archive::run(server, events, &work_dir).await).await
}

async fn detect_bench(events: usize, policies: PathBuf) -> anyhow::Result<detect::DetectBenchReport> {
    anyhow::ensure!(policies.is_dir(), "no policies folder at {}", policies.display());
    let set = PolicySet::load_with(&policies, true);
    let dir = std::env::temp_dir().join(format!("skywarden-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let file = dir.join("bench-detect-cloudtrail.json");
    synthetic::generate_events(&file, events)?;
    let report = tokio::task::spawn_blocking(move || detect::detection(&set, &file)).await?;
    let _ = std::fs::remove_dir_all(&dir);
    Ok(report?)
}

/// `workers`: fails when a slot ran twice or connections went over the budget.
async fn workers_bench(db_options: &DbOptions, args: WorkersArgs) -> anyhow::Result<()> {
    let settings = workers::Settings {
        accounts: args.accounts.max(1),
        regions: args.regions,
        workers: args.workers,
        duration: std::time::Duration::from_secs(args.seconds.max(1)),
        interval: std::time::Duration::from_secs(args.interval),
        concurrency: args.poll_concurrency.max(1),
        db_connections: args.worker_db_connections.max(2),
        moto_url: args.moto_url,
        database_url: db_options.database_url.as_ref().map(|url| url.expose().to_owned()),
    };
    let report = with_server(db_options, async |server| Ok(workers::run(server, &settings).await?)).await?;
    println!("{report}");
    anyhow::ensure!(!report.failed(), "a job ran twice in one slot or connections went over the budget");
    Ok(())
}
