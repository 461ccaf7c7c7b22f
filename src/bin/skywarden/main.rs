//! The `skywarden` binary: parse the command line, set up logging, dispatch to a command.
//!
//! The command line ([`cli`]) and the commands belong to the binary; the library has no clap.

mod cli;
mod commands;
mod logging;

use std::process::ExitCode;

use clap::Parser;
use skywarden::db::DbOptions;

use cli::{Cli, Command, NotificationsAction};
use commands::{accounts, alerts, auth, db, demo, import, incidents, notifications, policies, posture, serve, worker};

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    logging::init(cli.log_format, is_long_running(&cli.command));
    match run(cli.command, cli.db.into()).await {
        Ok(code) => code,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
    }
}

/// Processes that run until stopped, whose logs an operator reads later: they may ask
/// `RUST_LOG` for the AWS SDK's own logs. One-shot commands never show them.
fn is_long_running(command: &Command) -> bool {
    matches!(
        command,
        Command::Serve(_)
            | Command::Worker(_)
            | Command::Demo(_)
            | Command::Notifications { action: NotificationsAction::Deliver { once: false, .. } }
    )
}

async fn run(command: Command, db: DbOptions) -> anyhow::Result<ExitCode> {
    match command {
        Command::Migrate => db::migrate(&db).await,
        Command::Import(args) => import::import(&db, args).await,
        Command::Serve(args) => serve::serve(&db, args).await,
        Command::Db { action } => db::embedded(&db, action).await,
        Command::Demo(args) => demo::run_demo(&db, args).await,
        Command::Alerts(args) => alerts::alerts(&db, args).await,
        Command::Tokens { action } => auth::tokens(&db, action).await,
        Command::Incidents(args) => incidents::run(&db, args).await,
        Command::Accounts { action } => accounts::run(&db, action).await,
        Command::Users { action } => auth::users(&db, action).await,
        Command::Worker(args) => worker::worker(&db, args).await,
        Command::Policies { policies, action } => policies::run(&db, &policies, action).await,
        Command::Posture { policies, action } => posture::run(&db, &policies, action).await,
        Command::Notifications { action } => notifications::run(&db, action).await,
        Command::Respond { action } => {
            commands::with_db(&db, async |db| commands::respond::run(db, action).await).await
        }
        Command::Archive(args) => commands::with_db(&db, async |db| commands::archive::run(db, args).await).await,
    }
}
