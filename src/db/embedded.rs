//! A private PostgreSQL cluster run from the system's PostgreSQL binaries, for users who have
//! no database server of their own (the default when `DATABASE_URL` is not set).
//!
//! The cluster lives in `<data-dir>/postgres/` and listens only on a Unix socket in that folder
//! (`listen_addresses = ''`), so it never takes a TCP port, least of all the standard 5432.
//! PostgreSQL refuses to run as root: when Skywarden runs as root, the cluster runs as the
//! `postgres` system user and its folder is owned by that user.

use std::os::unix::fs::MetadataExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use sqlx::postgres::PgConnectOptions;
use sqlx::{ConnectOptions, Connection};

/// Number in the socket file name (`.s.PGSQL.<n>`). Only a name: no TCP port is opened.
pub const SOCKET_PORT: u16 = 54329;
/// Superuser that `initdb` creates; the cluster trusts local socket connections only.
pub const SUPERUSER: &str = "skywarden";
/// Database Skywarden keeps its data in.
pub const DATABASE: &str = "skywarden";

#[derive(Debug, thiserror::Error)]
pub enum EmbeddedError {
    #[error(
        "no PostgreSQL server binaries found (looked for initdb and pg_ctl on PATH and under \
         /usr/lib/postgresql/*/bin). Install them (Debian/Ubuntu: `apt-get install postgresql`, \
         Fedora: `dnf install postgresql-server`, macOS: `brew install postgresql`) or set \
         DATABASE_URL to a PostgreSQL server you run"
    )]
    BinariesNotFound,
    #[error(
        "PostgreSQL refuses to run as root and there is no `postgres` system user to run the \
         embedded cluster as. Create one (`useradd --system postgres`), run Skywarden as a normal \
         user, or set DATABASE_URL"
    )]
    NoPostgresUser,
    #[error("{action} failed: {detail}{hint}")]
    Command { action: String, detail: String, hint: String },
    #[error("cannot prepare {path}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("cannot create the `{DATABASE}` database in the embedded cluster")]
    CreateDatabase(#[source] sqlx::Error),
}

/// The account the cluster's processes run as, when it is not the current one.
#[derive(Clone, Copy, Debug)]
struct SystemUser {
    uid: u32,
    gid: u32,
}

#[derive(Debug)]
pub struct EmbeddedPostgres {
    root: PathBuf,
    bin_dir: PathBuf,
    run_as: Option<SystemUser>,
    started_here: bool,
}

impl EmbeddedPostgres {
    /// Prepares (but does not start) the cluster kept under `data_dir`.
    pub fn new(data_dir: &Path) -> Result<Self, EmbeddedError> {
        let bin_dir = find_binaries().ok_or(EmbeddedError::BinariesNotFound)?;
        let run_as =
            if running_as_root() { Some(postgres_system_user().ok_or(EmbeddedError::NoPostgresUser)?) } else { None };
        Ok(Self { root: data_dir.join("postgres"), bin_dir, run_as, started_here: false })
    }

    /// Default data directory: the user's data dir, or `/var/lib/skywarden` for root (whose home
    /// the `postgres` user cannot enter).
    pub fn default_data_dir() -> PathBuf {
        if running_as_root() {
            PathBuf::from("/var/lib/skywarden")
        } else {
            dirs::data_dir().unwrap_or_else(std::env::temp_dir).join("skywarden")
        }
    }

    pub fn cluster_dir(&self) -> PathBuf {
        self.root.join("data")
    }

    pub fn socket_dir(&self) -> PathBuf {
        self.root.join("run")
    }

    pub fn log_file(&self) -> PathBuf {
        self.root.join("server.log")
    }

    /// Whether this handle started the server (and so should stop it).
    pub fn started_here(&self) -> bool {
        self.started_here
    }

    pub fn connect_options(&self, database: &str) -> PgConnectOptions {
        PgConnectOptions::new().socket(self.socket_dir()).port(SOCKET_PORT).username(SUPERUSER).database(database)
    }

    /// A `DATABASE_URL` for other processes (tests, psql) to reach the running cluster.
    pub fn database_url(&self, database: &str) -> String {
        format!("postgres://{SUPERUSER}@localhost/{database}?host={}&port={SOCKET_PORT}", self.socket_dir().display())
    }

    /// Initialises the cluster on first use, starts it if it is not running, and creates the
    /// Skywarden database.
    pub async fn ensure_running(&mut self) -> Result<(), EmbeddedError> {
        self.prepare_dirs()?;
        if !self.cluster_dir().join("PG_VERSION").exists() {
            tracing::info!(dir = %self.cluster_dir().display(), "initialising embedded PostgreSQL cluster");
            let cluster = self.cluster_dir();
            self.run_checked(
                "initdb",
                Command::new(self.bin_dir.join("initdb"))
                    .arg("-D")
                    .arg(&cluster)
                    .args(["-U", SUPERUSER, "--auth=trust", "--encoding=UTF8", "--no-instructions"])
                    .arg("--locale=C"),
            )
            .await?;
        }
        if !self.is_running().await? {
            tracing::info!(socket = %self.socket_dir().display(), "starting embedded PostgreSQL");
            let server_options = format!("-c listen_addresses='' -k {} -p {SOCKET_PORT}", self.socket_dir().display());
            let (cluster, log) = (self.cluster_dir(), self.log_file());
            self.run_checked(
                "pg_ctl start",
                Command::new(self.bin_dir.join("pg_ctl")).arg("-D").arg(&cluster).arg("-l").arg(&log).args([
                    "-w",
                    "-t",
                    "60",
                    "-o",
                    &server_options,
                    "start",
                ]),
            )
            .await?;
            self.started_here = true;
        }
        self.create_database().await
    }

    /// Stops the server if this handle started it and no other client is still connected.
    pub async fn stop_if_started_here(&mut self) -> Result<(), EmbeddedError> {
        if !self.started_here {
            return Ok(());
        }
        // Backends of a pool that was just closed take a moment to exit; give them that.
        let mut others = self.other_clients().await.unwrap_or(0);
        for _ in 0..20 {
            if others == 0 {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            others = self.other_clients().await.unwrap_or(0);
        }
        if others > 0 {
            tracing::info!(clients = others, "embedded PostgreSQL still has clients; leaving it running");
            return Ok(());
        }
        self.stop().await
    }

    /// Stops the server (fast shutdown: open transactions roll back, nothing committed is lost).
    pub async fn stop(&mut self) -> Result<(), EmbeddedError> {
        if !self.cluster_dir().join("PG_VERSION").exists() || !self.is_running().await? {
            return Ok(());
        }
        let cluster = self.cluster_dir();
        self.run_checked(
            "pg_ctl stop",
            Command::new(self.bin_dir.join("pg_ctl")).arg("-D").arg(&cluster).args(["-m", "fast", "-w", "stop"]),
        )
        .await?;
        self.started_here = false;
        tracing::info!("embedded PostgreSQL stopped");
        Ok(())
    }

    pub async fn is_running(&self) -> Result<bool, EmbeddedError> {
        let cluster = self.cluster_dir();
        let mut command = Command::new(self.bin_dir.join("pg_ctl"));
        command.arg("-D").arg(&cluster).arg("status");
        // pg_ctl status: 0 running, 3 not running, 4 no accessible data directory.
        let output = self.run(&mut command).await.map_err(|e| self.command_error("pg_ctl status", e))?;
        Ok(output.status.success())
    }

    fn prepare_dirs(&self) -> Result<(), EmbeddedError> {
        for dir in [self.root.clone(), self.socket_dir()] {
            std::fs::create_dir_all(&dir).map_err(|source| EmbeddedError::Io { path: dir.clone(), source })?;
            if let Some(user) = self.run_as {
                std::os::unix::fs::chown(&dir, Some(user.uid), Some(user.gid))
                    .map_err(|source| EmbeddedError::Io { path: dir.clone(), source })?;
            }
        }
        Ok(())
    }

    async fn create_database(&self) -> Result<(), EmbeddedError> {
        let mut conn = self
            .connect_options("postgres")
            .disable_statement_logging()
            .connect()
            .await
            .map_err(EmbeddedError::CreateDatabase)?;
        let exists: bool = sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)")
            .bind(DATABASE)
            .fetch_one(&mut conn)
            .await
            .map_err(EmbeddedError::CreateDatabase)?;
        if !exists {
            sqlx::query(&format!("CREATE DATABASE {DATABASE}"))
                .execute(&mut conn)
                .await
                .map_err(EmbeddedError::CreateDatabase)?;
        }
        conn.close().await.map_err(EmbeddedError::CreateDatabase)
    }

    async fn other_clients(&self) -> Result<i64, sqlx::Error> {
        let mut conn = self.connect_options("postgres").disable_statement_logging().connect().await?;
        let count: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'client backend' AND pid <> pg_backend_pid()",
        )
        .fetch_one(&mut conn)
        .await?;
        conn.close().await?;
        Ok(count)
    }

    async fn run_checked(&self, action: &str, command: &mut Command) -> Result<Output, EmbeddedError> {
        let output = self.run(command).await.map_err(|e| self.command_error(action, e))?;
        if output.status.success() {
            return Ok(output);
        }
        let mut detail = String::from_utf8_lossy(&output.stderr).trim().to_string();
        if detail.is_empty() {
            detail = String::from_utf8_lossy(&output.stdout).trim().to_string();
        }
        if action.starts_with("pg_ctl start") {
            detail.push_str(&format!(" (server log: {})", self.log_file().display()));
        }
        Err(EmbeddedError::Command { action: action.to_string(), detail, hint: self.permission_hint() })
    }

    /// Runs a PostgreSQL tool, as the `postgres` user when we are root, off the async runtime.
    async fn run(&self, command: &mut Command) -> std::io::Result<Output> {
        if let Some(user) = self.run_as {
            command.uid(user.uid).gid(user.gid);
        }
        command.current_dir(&self.root).env("LC_ALL", "C");
        let mut owned = std::mem::replace(command, Command::new("true"));
        tokio::task::spawn_blocking(move || owned.output()).await.map_err(std::io::Error::other)?
    }

    fn command_error(&self, action: &str, error: std::io::Error) -> EmbeddedError {
        EmbeddedError::Command { action: action.to_string(), detail: error.to_string(), hint: self.permission_hint() }
    }

    fn permission_hint(&self) -> String {
        if self.run_as.is_some() {
            format!(
                ". The cluster runs as the `postgres` user, which must be able to enter every folder \
                 above {}; choose a --data-dir it can reach (the default for root is /var/lib/skywarden)",
                self.root.display()
            )
        } else {
            String::new()
        }
    }
}

fn running_as_root() -> bool {
    std::fs::metadata("/proc/self").map(|m| m.uid() == 0).unwrap_or(false)
}

/// Reads the `postgres` account from the system's user database.
fn postgres_system_user() -> Option<SystemUser> {
    let passwd = std::fs::read_to_string("/etc/passwd").ok()?;
    passwd.lines().find_map(|line| {
        let mut fields = line.split(':');
        if fields.next()? != "postgres" {
            return None;
        }
        let _password = fields.next()?;
        let uid = fields.next()?.parse().ok()?;
        let gid = fields.next()?.parse().ok()?;
        Some(SystemUser { uid, gid })
    })
}

/// Finds the folder holding `initdb` and `pg_ctl`: PATH first, then the newest Debian-style
/// `/usr/lib/postgresql/<version>/bin`.
fn find_binaries() -> Option<PathBuf> {
    let has_tools = |dir: &Path| dir.join("initdb").is_file() && dir.join("pg_ctl").is_file();
    if let Some(path) = std::env::var_os("PATH")
        && let Some(dir) = std::env::split_paths(&path).find(|d| has_tools(d))
    {
        return Some(dir);
    }
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .filter_map(|entry| {
            let entry = entry.ok()?;
            let version = entry.file_name().to_str()?.parse::<u32>().ok()?;
            let bin = entry.path().join("bin");
            has_tools(&bin).then_some((version, bin))
        })
        .collect();
    versions.sort();
    versions.pop().map(|(_, dir)| dir)
}
