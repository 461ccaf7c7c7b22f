//! Shared test helpers: a fresh database per test on a real PostgreSQL server, and runs of the
//! real `skywarden` binary against it.
//!
//! The server is `SKYWARDEN_TEST_DATABASE_URL` when set (`make test` starts the embedded cluster
//! and sets it); otherwise the tests start Skywarden's embedded cluster themselves in a private
//! folder under the system temp dir.

pub mod aws;
pub mod browser;
pub mod dashboard;
pub mod guardduty;
pub mod incident_setup;
pub mod lake;
pub mod metrics;
pub mod mmdb;
pub mod receiver;
pub mod sample;
pub mod securityhub;
pub mod smtp;
// The benchmarks' generator of realistic CloudTrail, shared with the tests by path.
#[path = "../../../bench/src/synthetic.rs"]
pub mod synthetic;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::str::FromStr;

use serde_json::Value;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{ConnectOptions, PgPool};
use tokio::sync::OnceCell;

use skywarden::db::{EmbeddedPostgres, MIGRATOR};

static SERVER: OnceCell<PgConnectOptions> = OnceCell::const_new();

async fn server() -> &'static PgConnectOptions {
    SERVER
        .get_or_init(|| async {
            if let Ok(url) = std::env::var("SKYWARDEN_TEST_DATABASE_URL") {
                return PgConnectOptions::from_str(&url).expect("SKYWARDEN_TEST_DATABASE_URL is a PostgreSQL URL");
            }
            let dir = std::env::temp_dir().join(format!("skywarden-test-{}", whoami()));
            let mut cluster = EmbeddedPostgres::new(&dir).expect("PostgreSQL binaries for the embedded test cluster");
            cluster.ensure_running().await.expect("starting the embedded test cluster");
            cluster.connect_options("postgres")
        })
        .await
}

fn whoami() -> String {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata("/proc/self").map(|m| m.uid().to_string()).unwrap_or_else(|_| "user".into())
}

/// A migrated database of its own for one test.
pub struct TestDb {
    pub pool: PgPool,
    pub url: String,
}

impl TestDb {
    pub async fn new() -> Self {
        let server = server().await;
        let name = format!("sw_test_{}", unique_suffix());
        let mut admin = server.clone().database("postgres").connect().await.expect("connecting to the test server");
        sqlx::query(&format!("CREATE DATABASE {name}")).execute(&mut admin).await.expect("creating a test database");
        let options = server.clone().database(&name);
        let pool = PgPoolOptions::new().max_connections(4).connect_with(options.clone()).await.expect("test pool");
        MIGRATOR.run(&pool).await.expect("migrations");
        Self { pool, url: connection_url(&options) }
    }

    /// Runs `skywarden <args>` against this database and returns its output.
    pub fn skywarden(&self, args: &[&str]) -> Output {
        skywarden_command(&self.url).args(args).output().expect("running skywarden")
    }

    /// Runs `skywarden import --json <paths>` and returns (exit code, summary).
    pub fn import_json(&self, paths: &[&Path]) -> (i32, Value) {
        let mut command = skywarden_command(&self.url);
        command.args(["import", "--json"]);
        command.args(paths);
        let output = command.output().expect("running skywarden import");
        let stdout = String::from_utf8_lossy(&output.stdout);
        let summary: Value = serde_json::from_str(stdout.trim()).unwrap_or_else(|e| {
            panic!(
                "import printed no JSON summary ({e}); stdout: {stdout}; stderr: {}",
                String::from_utf8_lossy(&output.stderr)
            )
        });
        (output.status.code().unwrap_or(-1), summary)
    }

    pub async fn count(&self, sql: &str) -> i64 {
        sqlx::query_scalar::<_, i64>(sql).fetch_one(&self.pool).await.expect("count query")
    }
}

/// A passing test's database is dropped, so a long suite does not fill the disk the cluster
/// lives on; a failing test's is kept to look at.
impl Drop for TestDb {
    fn drop(&mut self) {
        if std::thread::panicking() {
            return;
        }
        let Ok(options) = PgConnectOptions::from_str(&self.url) else { return };
        let Some(name) = options.get_database().map(str::to_owned) else { return };
        // The test's runtime may be shutting down: a thread with a runtime of its own.
        let dropped = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().ok()?;
            runtime.block_on(async {
                let mut admin = options.database("postgres").connect().await.ok()?;
                sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)")).execute(&mut admin).await.ok()
            })
        })
        .join();
        if !matches!(dropped, Ok(Some(_))) {
            eprintln!("NOTE: the test database could not be dropped");
        }
    }
}

pub fn skywarden_command(url: &str) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_skywarden"));
    command
        .env("DATABASE_URL", url)
        .env("RUST_LOG", "warn")
        .env("SKYWARDEN_POLICIES", Path::new(env!("CARGO_MANIFEST_DIR")).join("policies"))
        .env_remove("SKYWARDEN_GEOIP");
    command
}

fn connection_url(options: &PgConnectOptions) -> String {
    let host = options.get_socket().map(|p| p.display().to_string()).unwrap_or_else(|| options.get_host().to_string());
    format!(
        "postgres://{}@localhost/{}?host={}&port={}",
        options.get_username(),
        options.get_database().unwrap_or("postgres"),
        host,
        options.get_port()
    )
}

fn unique_suffix() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0);
    format!("{}_{}_{}", std::process::id(), nanos % 1_000_000_000, COUNTER.fetch_add(1, Ordering::Relaxed))
}

/// The project's own fixtures.
pub fn fixture(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures").join(path)
}

/// `../shared/fixtures/<path>` when the development datasets are present.
pub fn shared_fixture(path: &str) -> Option<PathBuf> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/fixtures");
    let full = root.join(path);
    full.exists().then_some(full)
}

/// Writes `content` to a gzip file.
pub fn write_gzip(path: &Path, content: &[u8]) {
    use std::io::Write;
    let file = std::fs::File::create(path).expect("creating gzip file");
    let mut encoder = flate2::write::GzEncoder::new(file, flate2::Compression::default());
    encoder.write_all(content).expect("writing gzip");
    encoder.finish().expect("finishing gzip");
}

/// Copies a folder tree (a policies folder to change in a test, say).
pub fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.path().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).unwrap();
        }
    }
}

/// A child process that is killed when the guard goes out of scope, so a failing test leaves no
/// server behind (one would keep the test's output pipe open).
pub struct KillOnDrop(pub std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl TestDb {
    /// Waits (10 s at most) until a statement of this database waits for a lock, i.e. the other
    /// side of a race is blocked; panics with `never` if none does.
    pub async fn until_a_statement_waits_for_a_lock(&self, never: &str) {
        for _ in 0..400 {
            let waiting = self
                .count("SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND wait_event_type = 'Lock'")
                .await;
            if waiting > 0 {
                return;
            }
            tokio::time::sleep(std::time::Duration::from_millis(25)).await;
        }
        panic!("{never}");
    }
}
