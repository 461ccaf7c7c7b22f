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

    /// The URL with every password replaced, for logs and error messages.
    pub fn redacted(&self) -> String {
        redact_url(&self.0)
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

const HIDDEN: &str = "***";

/// A query parameter whose value is a secret (`password`, `sslpassword`, ...).
fn secret_parameter(name: &str) -> bool {
    let name = name.to_ascii_lowercase();
    ["pass", "secret", "token"].iter().any(|word| name.contains(word))
}

/// The URL parsed as the PostgreSQL client parses it (the last `@` ends the user part), with the
/// user part's password, every password-like query parameter and any fragment (the rest of an
/// unencoded `#` in a password) replaced. What does not parse as a URL is not shown at all.
fn redact_url(text: &str) -> String {
    let Ok(mut url) = url::Url::parse(text.trim()) else {
        return "(a DATABASE_URL that is not a URL; not shown)".into();
    };
    if url.password().is_some() && url.set_password(Some(HIDDEN)).is_err() {
        return "(a DATABASE_URL whose password cannot be hidden; not shown)".into();
    }
    if url.query().is_some() {
        let pairs: Vec<(String, String)> = url
            .query_pairs()
            .map(|(name, value)| {
                let value = if secret_parameter(&name) { HIDDEN.to_owned() } else { value.into_owned() };
                (name.into_owned(), value)
            })
            .collect();
        url.query_pairs_mut().clear().extend_pairs(pairs);
    }
    if url.fragment().is_some() {
        url.set_fragment(Some(HIDDEN));
    }
    url.to_string()
}

/// The URL for sqlx without the password-like parameters it does not know: it would log such
/// a parameter with its value.
fn for_sqlx(text: &str) -> String {
    let Ok(mut url) = url::Url::parse(text.trim()) else { return text.to_owned() };
    if url.query().is_none() {
        return text.to_owned();
    }
    let pairs: Vec<(String, String)> = url
        .query_pairs()
        .filter(|(name, _)| name == "password" || !secret_parameter(name))
        .map(|(name, value)| (name.into_owned(), value.into_owned()))
        .collect();
    url.query_pairs_mut().clear().extend_pairs(pairs);
    url.to_string()
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
    /// The pool of background work (pollers, the notification sender, posture, imports): no
    /// statement timeout, since a backfill may run long.
    pub pool: PgPool,
    /// How to reach the database again, for pools of other kinds ([`Self::pool_with`]).
    connect: PgConnectOptions,
    embedded: Option<EmbeddedPostgres>,
}

/// A pool of its own: its size, how long a caller waits for a connection, and how long one
/// statement may run before PostgreSQL cancels it (none: no limit).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PoolSettings {
    pub connections: u32,
    pub acquire_timeout: std::time::Duration,
    pub statement_timeout: Option<std::time::Duration>,
}

/// A pool on `connect` with `settings`; connections open when first needed.
pub fn pool_with(connect: PgConnectOptions, settings: &PoolSettings) -> PgPool {
    let connect = match settings.statement_timeout.filter(|t| !t.is_zero()) {
        // Set when each connection starts, so no statement on the pool runs without it.
        Some(timeout) => connect.options([("statement_timeout", format!("{}ms", timeout.as_millis().max(1)))]),
        None => connect,
    };
    PgPoolOptions::new()
        .max_connections(settings.connections.max(1))
        .acquire_timeout(settings.acquire_timeout)
        .connect_lazy_with(connect)
}

/// A transaction on a connection of `pool`, begun whatever happens to the caller meanwhile.
///
/// sqlx (0.8.6, and 0.9.0) counts a transaction only once PostgreSQL has answered its `BEGIN`.
/// A caller dropped while that answer is on its way (a browser that went away, a timeout) sends
/// the connection back to the pool inside a transaction nothing will end; whoever takes it next
/// runs in it, so their writes are never committed and the rows they change stay locked (sqlx
/// issues 4385 and 4393; a CI run here showed its signature: a dashboard session's row stayed
/// locked, and the user's next requests waited out the statement timeout). The connection is
/// taken here (a caller dropped while waiting for one takes nothing), and its `BEGIN` is read by
/// a task of its own: a transaction nobody waits for any more is dropped there, and sqlx rolls it
/// back as any dropped transaction. `Pool::begin` and its kin are disallowed (clippy.toml).
pub async fn begin(pool: &PgPool) -> Result<sqlx::Transaction<'static, sqlx::Postgres>, sqlx::Error> {
    let conn = pool.acquire().await?;
    // What `Pool::begin` does after its acquire (a public, if undocumented, sqlx function).
    let begun = tokio::spawn(sqlx::Transaction::begin(conn, None));
    match begun.await {
        Ok(transaction) => transaction,
        Err(error) if error.is_panic() => std::panic::resume_unwind(error.into_panic()),
        // The runtime is shutting down.
        Err(_) => Err(sqlx::Error::WorkerCrashed),
    }
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
                let connect = PgConnectOptions::from_str(&for_sqlx(url.expose())).map_err(DbError::InvalidUrl)?;
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
        // JIT compiles a plan whose estimated cost is high; Skywarden's statements are index
        // walks that end early (a page, a capped count), so the estimate overstates them and
        // compiling costs more than it saves: 20-500 ms on full-text counts and 0.6 s of a 0.74 s
        // relink statement (docs/scaling.md, docs/incidents.md).
        let connect = connect.options([("plan_cache_mode", "force_custom_plan"), ("jit", "off")]);
        // One direct connection first: it fails fast with the real reason (refused, auth,
        // unknown database) where a pool would only report a timeout.
        let probe = sqlx::PgConnection::connect_with(&connect)
            .await
            .map_err(|source| DbError::Connect { target: target.clone(), source })?;
        probe.close().await.map_err(|source| DbError::Connect { target: target.clone(), source })?;
        let pool = PgPoolOptions::new()
            .max_connections(options.db_connections.max(2))
            .acquire_timeout(std::time::Duration::from_secs(30))
            .connect_with(connect.clone())
            .await
            .map_err(|source| DbError::Connect { target: target.clone(), source })?;
        MIGRATOR.run(&pool).await?;
        tracing::debug!(%target, "database ready");
        Ok(Self { pool, connect, embedded })
    }

    /// Another pool on the same database, apart from [`Self::pool`]: the API's, so a burst of
    /// requests cannot starve the pollers and the sender (nor they the API).
    pub fn pool_with(&self, settings: &PoolSettings) -> PgPool {
        pool_with(self.connect.clone(), settings)
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

    #[test]
    fn redacts_every_form_of_password() {
        for (text, secret) in [
            ("postgres://app:p@ss@word@db:5432/skywarden", "ss@word"),
            ("postgres://app:p%40ss@db/skywarden", "p%40ss"),
            ("postgres://db/skywarden?user=app&password=hunter2", "hunter2"),
            ("postgresql://db/skywarden?sslmode=require&password=hun%26ter2", "hun%26ter2"),
            ("postgres:///skywarden?host=/run/postgresql&password=hunter2", "hunter2"),
            ("postgres://app:first@db/skywarden?password=hunter2&sslpassword=keypass", "keypass"),
            ("postgres://app:first@db/skywarden?PassWord=hunter2", "hunter2"),
            ("postgres://app:first@db/skywarden#hunter2", "hunter2"),
            ("host=db user=app password=hunter2 dbname=skywarden", "hunter2"),
            ("postgres://app:pass/word@db/skywarden", "word"),
        ] {
            let url: DatabaseUrl = text.parse().unwrap();
            let shown = url.redacted();
            assert!(!shown.contains(secret) && !shown.contains("first"), "{text} shown as {shown}");
            assert!(!format!("{url:?}").contains(secret), "{text}");
        }
        let url: DatabaseUrl = "postgres://app:s3cret@db:5432/skywarden?sslmode=require&password=x".parse().unwrap();
        assert_eq!(url.redacted(), "postgres://app:***@db:5432/skywarden?sslmode=require&password=***");
    }

    /// A real failed connection: the error chain names the server but never the password.
    #[tokio::test]
    async fn a_failed_connection_does_not_print_the_password() {
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        for text in [
            format!("postgres://app:p@ss-word@127.0.0.1:{port}/skywarden"),
            format!("postgres://app@127.0.0.1:{port}/skywarden?password=hunter2-secret"),
            format!("postgres://127.0.0.1:{port}/skywarden?user=app&password=hunter2%40secret"),
        ] {
            let options = DbOptions { database_url: Some(text.parse().unwrap()), data_dir: None, db_connections: 2 };
            let error = Database::open(&options).await.err().expect("nothing listens on the port");
            let mut chain = error.to_string();
            let mut source = std::error::Error::source(&error);
            while let Some(cause) = source {
                chain.push_str(&format!(": {cause}"));
                source = cause.source();
            }
            let shown = format!("{chain} {error:?}");
            assert!(shown.contains("127.0.0.1"), "{shown}");
            for secret in ["ss-word", "hunter2"] {
                assert!(!shown.contains(secret), "{text}: {shown}");
            }
        }
    }
}
