//! PostgreSQL storage: connection (a server from `DATABASE_URL` or the embedded cluster),
//! migrations, monthly partitions and the COPY encoder used by bulk ingest.
//!
//! Underneath everything: imports only `model`. Knows tables and connections, not what the
//! rows mean.

pub mod copy;
pub mod embedded;
pub mod partitions;

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;

use sqlx::migrate::Migrator;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{Connection, PgPool};

pub use embedded::{EmbeddedError, EmbeddedPostgres};

pub static MIGRATOR: Migrator = sqlx::migrate!("./migrations");

#[derive(Debug, thiserror::Error)]
pub enum DbError {
    #[error("invalid DATABASE_URL")]
    InvalidUrl(#[source] sqlx::Error),
    #[error("cannot connect to PostgreSQL at {target}")]
    Connect { target: String, source: sqlx::Error },
    #[error("database migration failed")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error(transparent)]
    Embedded(#[from] EmbeddedError),
}

/// A database URL that never prints its password.
#[derive(Clone)]
pub struct DatabaseUrl(String);

impl DatabaseUrl {
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// The URL with any password replaced, for logs and error messages.
    pub fn redacted(&self) -> String {
        match url_password_span(&self.0) {
            Some((start, end)) => format!("{}***{}", &self.0[..start], &self.0[end..]),
            None => self.0.clone(),
        }
    }
}

impl FromStr for DatabaseUrl {
    type Err = std::convert::Infallible;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(Self(s.to_string()))
    }
}

impl fmt::Debug for DatabaseUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.redacted())
    }
}

/// Byte range of the password in `scheme://user:password@host...`, if there is one.
fn url_password_span(url: &str) -> Option<(usize, usize)> {
    let authority_start = url.find("://")? + 3;
    let rest = &url[authority_start..];
    let at = rest.find('@')?;
    let colon = rest[..at].find(':')?;
    Some((authority_start + colon + 1, authority_start + at))
}

/// Where the data lives: a server the user runs, or the embedded cluster.
#[derive(Clone, Debug)]
pub struct DbOptions {
    /// PostgreSQL URL. Without it, Skywarden runs its own embedded cluster in `data_dir`.
    pub database_url: Option<DatabaseUrl>,
    /// Folder for the embedded PostgreSQL cluster and other local state.
    pub data_dir: Option<PathBuf>,
    /// Connections in the pool (bulk import uses two of them for parallel COPY).
    pub db_connections: u32,
}

impl DbOptions {
    pub fn data_dir(&self) -> PathBuf {
        self.data_dir.clone().unwrap_or_else(EmbeddedPostgres::default_data_dir)
    }
}

/// An open, migrated database, and the embedded server behind it if there is one.
pub struct Database {
    pub pool: PgPool,
    embedded: Option<EmbeddedPostgres>,
}

/// The database's clock, so "stored since" compares like with like across machines.
pub async fn now(pool: &PgPool) -> Result<chrono::DateTime<chrono::Utc>, sqlx::Error> {
    sqlx::query_scalar!(r#"SELECT now() AS "now!""#).fetch_one(pool).await
}

impl Database {
    /// Connects (starting the embedded cluster when no URL is given) and applies migrations.
    pub async fn open(options: &DbOptions) -> Result<Self, DbError> {
        let (connect, target, embedded) = match &options.database_url {
            Some(url) => {
                let connect = PgConnectOptions::from_str(url.expose()).map_err(DbError::InvalidUrl)?;
                (connect, url.redacted(), None)
            }
            None => {
                let mut server = EmbeddedPostgres::new(&options.data_dir())?;
                server.ensure_running().await?;
                let target = format!("embedded cluster in {}", server.cluster_dir().display());
                (server.connect_options(embedded::DATABASE), target, Some(server))
            }
        };
        // The audit-trail queries take optional filters (`$1 IS NULL OR col = $1`); a generic
        // plan, which PostgreSQL may switch to after five runs of a prepared statement, cannot
        // know which filters are set and picks bad plans. Plan every run for its values.
        let connect = connect.options([("plan_cache_mode", "force_custom_plan")]);
        // One direct connection first: it fails fast with the real reason (refused, auth,
        // unknown database) where a pool would only report a timeout.
        let probe = sqlx::PgConnection::connect_with(&connect)
            .await
            .map_err(|source| DbError::Connect { target: target.clone(), source })?;
        probe.close().await.map_err(|source| DbError::Connect { target: target.clone(), source })?;
        let pool = PgPoolOptions::new()
            .max_connections(options.db_connections.max(2))
            .acquire_timeout(std::time::Duration::from_secs(30))
            .connect_with(connect)
            .await
            .map_err(|source| DbError::Connect { target: target.clone(), source })?;
        MIGRATOR.run(&pool).await?;
        tracing::debug!(%target, "database ready");
        Ok(Self { pool, embedded })
    }

    /// Closes the pool and stops the embedded server if this process started it.
    pub async fn close(mut self) -> Result<(), DbError> {
        self.pool.close().await;
        if let Some(server) = self.embedded.as_mut() {
            server.stop_if_started_here().await?;
        }
        Ok(())
    }

    /// Keeps the embedded server running after this process exits (used by `db start`).
    pub fn detach_embedded(&mut self) {
        self.embedded = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redacts_password_only() {
        let url: DatabaseUrl = "postgres://app:s3cret@db:5432/skywarden".parse().unwrap();
        assert_eq!(url.redacted(), "postgres://app:***@db:5432/skywarden");
        assert!(!format!("{url:?}").contains("s3cret"));
        let no_password: DatabaseUrl = "postgres://app@db/skywarden".parse().unwrap();
        assert_eq!(no_password.redacted(), "postgres://app@db/skywarden");
    }
}
