//! The `skywarden` binary: parse the command line, set up logging, dispatch to a command.

mod commands;

use std::process::ExitCode;

use clap::Parser;

use skywarden::cli::{Cli, Command};
use skywarden::db::Database;
use skywarden::telemetry;

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
        Command::Import(args) => commands::import(&cli.db, args).await,
        Command::Serve(args) => commands::serve(&cli.db, args).await,
        Command::Db { action } => commands::embedded(&cli.db, action).await,
        Command::Demo(args) => commands::run_demo(&cli.db, args).await,
        Command::BenchImport(args) => commands::bench_import(&cli.db, args).await,
        Command::BenchQueries { events, samples, reuse } => {
            commands::bench_queries(&cli.db, events, samples, reuse).await
        }
        Command::Alerts(args) => commands::alerts(&cli.db, args).await,
        Command::Tokens { action } => commands::tokens(&cli.db, action).await,
        Command::Incidents { json } => commands::incidents(&cli.db, json).await,
        Command::BenchDetect { events, policies } => commands::bench_detect(events, &policies).await,
        Command::BenchPosture { resources, snapshot, policies } => {
            commands::posture::bench(resources, &snapshot, &policies).await
        }
        Command::Accounts { action } => commands::accounts::run(&cli.db, action).await,
        Command::Users { action } => commands::users(&cli.db, action).await,
        Command::Worker(args) => commands::accounts::worker(&cli.db, args).await,
        Command::Policies { policies, action } => commands::policies_command(&cli.db, &policies, action).await,
        Command::Posture { policies, action } => commands::posture::run(&cli.db, &policies, action).await,
        Command::Notifications { action } => commands::notifications::run(&cli.db, action).await,
    }
}
