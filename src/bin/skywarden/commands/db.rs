//! `skywarden migrate` and `skywarden db start|stop|status` (the embedded cluster).

use std::process::ExitCode;

use skywarden::db::{Database, DbOptions, EmbeddedPostgres};

use super::with_db;
use crate::cli::DbAction;

/// Applies the migrations (`Database::open` does) and says so.
pub(crate) async fn migrate(db_options: &DbOptions) -> anyhow::Result<ExitCode> {
    with_db(db_options, async |_| {
        println!("migrations applied");
        Ok(ExitCode::SUCCESS)
    })
    .await
}

pub(crate) async fn embedded(db_options: &DbOptions, action: DbAction) -> anyhow::Result<ExitCode> {
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
