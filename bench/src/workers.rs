//! `skywarden-bench workers`: many accounts, many workers. Onboards N simulated accounts × R
//! regions in a scratch database, then for K = 1, 2, 4, … runs K `skywarden worker` processes
//! for a fixed time each and measures, from the jobs table, every job run's schedule lag (when
//! it started less when it was due), runs of one slot twice, jobs that never ran, and the peak
//! of PostgreSQL connections (sampled from `pg_stat_activity`) against the workers' budget.
//!
//! LookupEvents is answered by a protocol-faithful fake in this process (moto answers 500 to
//! it): JSON 1.1 over HTTP on 127.0.0.1, one event a minute per account and region since the
//! benchmark began, newest first, 50 a page. Everything else (STS AssumeRole of each account's
//! role) goes to moto. Only the LookupEvents jobs are enabled: they are what every account and
//! region runs every few minutes; the snapshot jobs would measure moto's speed, not the
//! scheduler's.
//!
//! Each claim is recorded by a trigger on `poll_jobs` that this benchmark adds to its scratch
//! database only: the slot it ran (`next_run_at` before the claim) and when it started.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Bytes;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use chrono::{DateTime, Utc};
use serde_json::{Value, json};
use skywarden::accounts::{self, NewAccount, PollIntervals};
use skywarden::db::MIGRATOR;
use skywarden::pollers::Source;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{PgPool, Row};

const DATABASE: &str = "skywarden_bench_workers";
/// The benchmark's own connections, left out of the workers' count.
const APPLICATION: &str = "skywarden-bench-workers";
/// The first slots come this long after the schedule is set: a loop that went idle while
/// nothing was due sleeps up to 5 s (`IDLE_POLL`) before it looks again, and a worker's start-up
/// probe connection is gone by then.
const SETTLE: Duration = Duration::from_secs(6);
/// Worker `i` connects as `skywarden-bench-worker-i`.
const WORKER_APPLICATION: &str = "skywarden-bench-worker";
/// One event a minute per account and region, in the fake.
const EVENT_EVERY_SECONDS: i64 = 60;
const PAGE_SIZE: usize = 50;
/// A slot still not started this long after its due time when a phase ends counts as missed
/// (a worker with nothing due looks again every 5 s).
const MISSED_GRACE: Duration = Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
pub enum WorkersBenchError {
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
    #[error("migration failed")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("{0}")]
    Setup(String),
}

fn setup_error(error: impl std::fmt::Display) -> WorkersBenchError {
    WorkersBenchError::Setup(error.to_string())
}

pub struct Settings {
    pub accounts: usize,
    pub regions: Vec<String>,
    pub workers: Vec<usize>,
    /// How long each worker count runs.
    pub duration: Duration,
    /// The LookupEvents jobs' interval.
    pub interval: Duration,
    /// `--poll-concurrency` of each worker.
    pub concurrency: usize,
    /// `--db-connections` of each worker: the budget is workers × this.
    pub db_connections: u32,
    pub moto_url: String,
    /// The server's URL as given (`None`: build one from the connection options).
    pub database_url: Option<String>,
}

/// What one worker count measured.
pub struct Phase {
    workers: usize,
    runs: i64,
    p50: f64,
    p95: f64,
    max: f64,
    twice: i64,
    never_run: i64,
    missed: i64,
    failed_runs: i64,
    peak_connections: i64,
    budget: i64,
    /// The most one worker held, against its `--db-connections`.
    peak_one: i64,
    budget_one: i64,
    /// The most backends under the workers' names that were not connections (parallel query
    /// workers: PostgreSQL starts them for a statement, from `max_parallel_workers`, not from
    /// `max_connections`), shown apart from the budget.
    peak_helpers: i64,
}

pub struct WorkersReport {
    settings_line: String,
    jobs: i64,
    lookups_served: u64,
    phases: Vec<Phase>,
}

impl WorkersReport {
    /// Whether a slot ran twice or connections went over the budget.
    pub fn failed(&self) -> bool {
        self.phases.iter().any(|p| p.twice > 0 || p.peak_connections > p.budget || p.peak_one > p.budget_one)
    }
}

impl std::fmt::Display for WorkersReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(f, "{}", self.settings_line)?;
        writeln!(f, "  {} LookupEvents jobs; the fake answered {} requests", self.jobs, self.lookups_served)?;
        writeln!(
            f,
            "  workers   runs  lag p50 s  p95 s   max s  twice  never-run  missed  failed  peak-conn/budget  one-worker  p95 vs K=1  parallel-workers"
        )?;
        let base = self.phases.first().map(|p| p.p95).unwrap_or(0.0);
        for p in &self.phases {
            let ratio = if base > 0.0 { format!("{:.2}x", p.p95 / base) } else { "-".into() };
            writeln!(
                f,
                "  {:>7} {:>6} {:>10.2} {:>6.2} {:>7.2} {:>6} {:>10} {:>7} {:>7} {:>10}/{:<6} {:>7}/{:<3} {:>10} {:>17}",
                p.workers,
                p.runs,
                p.p50,
                p.p95,
                p.max,
                p.twice,
                p.never_run,
                p.missed,
                p.failed_runs,
                p.peak_connections,
                p.budget,
                p.peak_one,
                p.budget_one,
                ratio,
                p.peak_helpers
            )?;
        }
        let verdict = if self.failed() { "FAILED (a slot ran twice or connections over budget)" } else { "ok" };
        write!(f, "  no slot twice, connections within budget: {verdict}")
    }
}

/// Runs every worker count in a scratch database next to `server` (dropped afterwards).
pub async fn run(server: &PgConnectOptions, settings: &Settings) -> Result<WorkersReport, WorkersBenchError> {
    let binary = worker_binary()?;
    let mut admin = sqlx::ConnectOptions::connect(&server.clone().database("postgres")).await?;
    sqlx::raw_sql(&format!("DROP DATABASE IF EXISTS {DATABASE} WITH (FORCE)")).execute(&mut admin).await?;
    sqlx::raw_sql(&format!("CREATE DATABASE {DATABASE}")).execute(&mut admin).await?;
    let options = server.clone().database(DATABASE).application_name(APPLICATION);
    let pool = PgPoolOptions::new().max_connections(4).connect_with(options).await?;
    let result = measure(&pool, server, settings, &binary).await;
    pool.close().await;
    sqlx::raw_sql(&format!("DROP DATABASE IF EXISTS {DATABASE} WITH (FORCE)")).execute(&mut admin).await?;
    result
}

async fn measure(
    pool: &PgPool,
    server: &PgConnectOptions,
    settings: &Settings,
    binary: &std::path::Path,
) -> Result<WorkersReport, WorkersBenchError> {
    MIGRATOR.run(pool).await?;
    let jobs = onboard(pool, settings).await?;
    record_claims(pool).await?;
    let fake = FakeLookup::start().await?;
    let url = crate::product::scratch_url(server, settings.database_url.as_deref(), DATABASE);
    let mut phases = Vec::new();
    for &workers in &settings.workers {
        let env = WorkerEnv { binary, database_url: &url, cloudtrail_url: &fake.url, settings };
        phases.push(phase(pool, settings, workers, &env).await?);
    }
    Ok(WorkersReport {
        settings_line: format!(
            "many accounts, many workers: {} accounts x {} regions, LookupEvents every {} s, {} s per worker count, \
             --poll-concurrency {} --db-connections {} per worker",
            settings.accounts,
            settings.regions.len(),
            settings.interval.as_secs(),
            settings.duration.as_secs(),
            settings.concurrency,
            settings.db_connections
        ),
        jobs,
        lookups_served: fake.served.load(Ordering::Relaxed),
        phases,
    })
}

/// `skywarden` of the same build as this benchmark (the same profile's folder).
fn worker_binary() -> Result<PathBuf, WorkersBenchError> {
    let me = std::env::current_exe().map_err(setup_error)?;
    let binary = me.with_file_name("skywarden");
    if !binary.is_file() {
        return Err(setup_error(format!(
            "no skywarden binary at {} (build it in the same profile: cargo build -p skywarden --bin skywarden)",
            binary.display()
        )));
    }
    Ok(binary)
}

/// Onboards the accounts through the product's onboarding, with the LookupEvents interval
/// chosen, and leaves only their LookupEvents jobs enabled. Returns how many there are.
async fn onboard(pool: &PgPool, settings: &Settings) -> Result<i64, WorkersBenchError> {
    let mut intervals = PollIntervals::default();
    intervals.set(Source::CloudTrailLookup, settings.interval).map_err(setup_error)?;
    for i in 0..settings.accounts {
        let new = NewAccount {
            role_arn: format!("arn:aws:iam::{:012}:role/SkywardenReadOnly", 100_000_000_000u64 + i as u64),
            name: Some(format!("bench-{i}")),
            regions: settings.regions.clone(),
            ..Default::default()
        };
        accounts::onboard(pool, &new, &intervals).await.map_err(setup_error)?;
    }
    sqlx::query("UPDATE poll_jobs SET enabled = (source = $1)")
        .bind(Source::CloudTrailLookup.as_str())
        .execute(pool)
        .await?;
    let jobs: i64 = sqlx::query_scalar("SELECT count(*) FROM poll_jobs WHERE enabled").fetch_one(pool).await?;
    Ok(jobs)
}

/// A trigger recording each claim (a change of `last_started_at`): the slot it took (the
/// `next_run_at` before it), who took it and when.
async fn record_claims(pool: &PgPool) -> Result<(), WorkersBenchError> {
    sqlx::raw_sql(
        r#"CREATE TABLE bench_job_claims (
               job_id bigint NOT NULL, owner text, due timestamptz NOT NULL, started timestamptz NOT NULL,
               previous_lease_expires timestamptz);
           CREATE FUNCTION bench_record_claim() RETURNS trigger LANGUAGE plpgsql AS $$
           BEGIN
               INSERT INTO bench_job_claims VALUES (NEW.job_id, NEW.lease_owner, OLD.next_run_at, NEW.last_started_at,
                                                    OLD.lease_expires_at);
               RETURN NULL;
           END $$;
           CREATE TRIGGER bench_record_claim AFTER UPDATE ON poll_jobs FOR EACH ROW
               WHEN (NEW.last_started_at IS DISTINCT FROM OLD.last_started_at) EXECUTE FUNCTION bench_record_claim();"#,
    )
    .execute(pool)
    .await?;
    Ok(())
}

struct WorkerEnv<'a> {
    binary: &'a std::path::Path,
    database_url: &'a str,
    cloudtrail_url: &'a str,
    settings: &'a Settings,
}

/// One worker count: nothing due while the workers start, then every job's first slot spread
/// over the first interval (or half the phase, if shorter), as a node that has run a while
/// has them; K workers for the phase's duration; then what the claims show.
async fn phase(
    pool: &PgPool,
    settings: &Settings,
    workers: usize,
    env: &WorkerEnv<'_>,
) -> Result<Phase, WorkersBenchError> {
    sqlx::query(
        "UPDATE poll_jobs SET next_run_at = now() + interval '1 day', lease_owner = NULL, lease_expires_at = NULL,
                consecutive_failures = 0",
    )
    .execute(pool)
    .await?;
    let mut children = Vec::new();
    for index in 0..workers {
        children.push(spawn_worker(env, workers, index)?);
    }
    let budget = workers as i64 * i64::from(settings.db_connections);
    // The workers have started once each holds a connection.
    let ready_by = Instant::now() + Duration::from_secs(60);
    while worker_connections(pool).await?.started < workers as i64 {
        if Instant::now() > ready_by {
            stop_workers(&mut children).await;
            let log = std::fs::read_to_string(worker_log(workers, 0)).unwrap_or_default();
            let tail: Vec<&str> = log.lines().rev().take(5).collect();
            return Err(setup_error(format!(
                "{workers} workers did not connect within 60 s; the first one's log ends: {}",
                tail.into_iter().rev().collect::<Vec<_>>().join(" | ")
            )));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let spread = settings.interval.min(settings.duration / 2);
    let start: DateTime<Utc> = sqlx::query_scalar(
        "WITH ranked AS (SELECT job_id, (row_number() OVER (ORDER BY job_id) - 1)::float8 / count(*) OVER () AS f
                         FROM poll_jobs WHERE enabled)
         UPDATE poll_jobs p SET next_run_at = now() + make_interval(secs => $2 + ranked.f * $1)
         FROM ranked WHERE ranked.job_id = p.job_id
         RETURNING now() + make_interval(secs => $2)",
    )
    .bind(spread.as_secs_f64())
    .bind(SETTLE.as_secs_f64())
    .fetch_one(pool)
    .await?;
    tokio::time::sleep(SETTLE).await;
    let until = Instant::now() + settings.duration;
    let mut peak = Connections::default();
    while Instant::now() < until {
        let now = worker_connections(pool).await?;
        peak = Connections {
            total: peak.total.max(now.total),
            one: peak.one.max(now.one),
            helpers: peak.helpers.max(now.helpers),
            ..peak
        };
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let end: DateTime<Utc> = sqlx::query_scalar("SELECT now()").fetch_one(pool).await?;
    stop_workers(&mut children).await;
    let mut phase = tally(pool, workers, start, end, peak.total, budget).await?;
    (phase.peak_one, phase.budget_one) = (peak.one, i64::from(settings.db_connections));
    phase.peak_helpers = peak.helpers;
    Ok(phase)
}

fn spawn_worker(env: &WorkerEnv<'_>, workers: usize, index: usize) -> Result<tokio::process::Child, WorkersBenchError> {
    let log = worker_log(workers, index);
    let log = std::fs::File::create(&log).map_err(|e| setup_error(format!("{}: {e}", log.display())))?;
    tokio::process::Command::new(env.binary)
        .args(["worker", "--no-detect", "--no-notifications", "--poll-concurrency"])
        .arg(env.settings.concurrency.to_string())
        .arg("--db-connections")
        .arg(env.settings.db_connections.to_string())
        .env("DATABASE_URL", with_application(env.database_url, &format!("{WORKER_APPLICATION}-{index}")))
        .env("SKYWARDEN_AWS_ENDPOINT_URL", &env.settings.moto_url)
        .env("SKYWARDEN_AWS_ENDPOINT_URL_CLOUDTRAIL", env.cloudtrail_url)
        .env("AWS_ACCESS_KEY_ID", "AKIDSKYWARDENBENCH")
        .env("AWS_SECRET_ACCESS_KEY", "secret")
        .env("AWS_REGION", "us-east-1")
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .env("AWS_CONFIG_FILE", "/dev/null")
        .env("AWS_SHARED_CREDENTIALS_FILE", "/dev/null")
        .env("RUST_LOG", "warn")
        .env_remove("SKYWARDEN_DATA_DIR")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log)
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| setup_error(format!("starting {}: {e}", env.binary.display())))
}

/// Where worker `index` of a run of `workers` logs (warnings and errors).
fn worker_log(workers: usize, index: usize) -> PathBuf {
    std::env::temp_dir().join(format!("skywarden-bench-workers-{workers}-{index}.log"))
}

/// SIGTERM (a worker finishes its runs and stops), SIGKILL after 30 s.
async fn stop_workers(children: &mut [tokio::process::Child]) {
    for child in children.iter() {
        if let Some(pid) = child.id() {
            let _ = tokio::process::Command::new("kill").args(["-TERM", &pid.to_string()]).status().await;
        }
    }
    for child in children.iter_mut() {
        if tokio::time::timeout(Duration::from_secs(30), child.wait()).await.is_err() {
            tracing::warn!(pid = child.id(), "worker did not stop within 30 s; killing it");
            let _ = child.kill().await;
        }
    }
}

/// The workers' connections to the scratch database: in all, of the worker holding most, and
/// how many workers hold one (each names itself in `application_name`); and the other backends
/// under their names (parallel query workers, which carry their leader's `application_name`).
#[derive(Clone, Copy, Debug, Default)]
struct Connections {
    total: i64,
    one: i64,
    started: i64,
    helpers: i64,
}

async fn worker_connections(pool: &PgPool) -> Result<Connections, sqlx::Error> {
    // A connection is a client backend: what `max_connections` and a pool's size count. A
    // parallel worker is started by PostgreSQL for one statement of a leader already counted.
    let row = sqlx::query(
        "SELECT COALESCE(sum(n), 0)::bigint AS total, COALESCE(max(n), 0) AS one, count(*) FILTER (WHERE n > 0) AS started,
                COALESCE(sum(helpers), 0)::bigint AS helpers
         FROM (SELECT count(*) FILTER (WHERE backend_type = 'client backend') AS n,
                      count(*) FILTER (WHERE backend_type IS DISTINCT FROM 'client backend') AS helpers
               FROM pg_stat_activity
               WHERE datname = $1 AND application_name LIKE $2 || '-%' GROUP BY application_name) w",
    )
    .bind(DATABASE)
    .bind(WORKER_APPLICATION)
    .fetch_one(pool)
    .await?;
    Ok(Connections {
        total: row.try_get("total")?,
        one: row.try_get("one")?,
        started: row.try_get("started")?,
        helpers: row.try_get("helpers")?,
    })
}

/// `url` with `application_name` set, so each worker's connections can be told apart.
fn with_application(url: &str, name: &str) -> String {
    let separator = if url.contains('?') { '&' } else { '?' };
    format!("{url}{separator}application_name={name}")
}

async fn tally(
    pool: &PgPool,
    workers: usize,
    start: DateTime<Utc>,
    end: DateTime<Utc>,
    peak_connections: i64,
    budget: i64,
) -> Result<Phase, WorkersBenchError> {
    let lag = sqlx::query(
        "SELECT count(*) AS runs,
                COALESCE(percentile_disc(0.5) WITHIN GROUP (ORDER BY lag), 0) AS p50,
                COALESCE(percentile_disc(0.95) WITHIN GROUP (ORDER BY lag), 0) AS p95,
                COALESCE(max(lag), 0) AS max
         FROM (SELECT EXTRACT(EPOCH FROM started - due)::float8 AS lag FROM bench_job_claims
               WHERE started BETWEEN $1 AND $2) c",
    )
    .bind(start)
    .bind(end)
    .fetch_one(pool)
    .await?;
    // A slot is one (job, due time): claimed twice means run twice.
    let twice: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM (SELECT 1 FROM bench_job_claims WHERE started BETWEEN $1 AND $2
                               GROUP BY job_id, due HAVING count(*) > 1) d",
    )
    .bind(start)
    .bind(end)
    .fetch_one(pool)
    .await?;
    let never_run: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM poll_jobs p WHERE enabled
           AND NOT EXISTS (SELECT 1 FROM bench_job_claims c WHERE c.job_id = p.job_id AND c.started BETWEEN $1 AND $2)",
    )
    .bind(start)
    .bind(end)
    .fetch_one(pool)
    .await?;
    let missed: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM poll_jobs WHERE enabled AND lease_owner IS NULL
           AND next_run_at < $1 - make_interval(secs => $2)",
    )
    .bind(end)
    .bind(MISSED_GRACE.as_secs_f64())
    .fetch_one(pool)
    .await?;
    let failed_runs: i64 =
        sqlx::query_scalar("SELECT count(*) FROM poll_jobs WHERE enabled AND last_error_at BETWEEN $1 AND $2")
            .bind(start)
            .bind(end)
            .fetch_one(pool)
            .await?;
    Ok(Phase {
        workers,
        runs: lag.try_get("runs")?,
        p50: lag.try_get("p50")?,
        p95: lag.try_get("p95")?,
        max: lag.try_get("max")?,
        twice,
        never_run,
        missed,
        failed_runs,
        peak_connections,
        budget,
        peak_one: 0,
        budget_one: 0,
        peak_helpers: 0,
    })
}

/// LookupEvents over JSON 1.1, as AWS answers it (see the module's comment).
struct FakeLookup {
    url: String,
    served: Arc<AtomicU64>,
}

#[derive(Clone)]
struct FakeState {
    /// Events exist from here on.
    origin: i64,
    served: Arc<AtomicU64>,
}

impl FakeLookup {
    async fn start() -> Result<Self, WorkersBenchError> {
        let served = Arc::new(AtomicU64::new(0));
        let state = FakeState { origin: Utc::now().timestamp() - 5 * EVENT_EVERY_SECONDS, served: served.clone() };
        let app = Router::new().route("/", post(lookup_events)).with_state(state);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.map_err(setup_error)?;
        let address: SocketAddr = listener.local_addr().map_err(setup_error)?;
        tokio::spawn(async move { axum::serve(listener, app).await });
        Ok(Self { url: format!("http://{address}"), served })
    }
}

fn aws_json_error(status: StatusCode, kind: &str, message: &str) -> Response {
    let headers = [
        (header::CONTENT_TYPE, "application/x-amz-json-1.1".to_owned()),
        (header::HeaderName::from_static("x-amzn-errortype"), kind.to_owned()),
    ];
    (status, headers, json!({"__type": kind, "message": message}).to_string()).into_response()
}

/// The region the request was signed for (SigV4's credential scope).
fn signed_region(headers: &HeaderMap) -> Option<String> {
    let authorization = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let credential = authorization.split("Credential=").nth(1)?.split(',').next()?;
    credential.split('/').nth(2).map(str::to_owned)
}

async fn lookup_events(
    axum::extract::State(state): axum::extract::State<FakeState>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let target = headers.get("x-amz-target").and_then(|v| v.to_str().ok()).unwrap_or_default();
    if !target.ends_with("CloudTrail_20131101.LookupEvents") {
        return aws_json_error(StatusCode::BAD_REQUEST, "UnknownOperationException", "only LookupEvents is faked");
    }
    let Ok(request) = serde_json::from_slice::<Value>(&body) else {
        return aws_json_error(StatusCode::BAD_REQUEST, "SerializationException", "body is not JSON");
    };
    let Some(region) = signed_region(&headers) else {
        return aws_json_error(StatusCode::BAD_REQUEST, "MissingAuthenticationTokenException", "unsigned request");
    };
    state.served.fetch_add(1, Ordering::Relaxed);
    let now = Utc::now().timestamp();
    let start = request["StartTime"].as_f64().map_or(state.origin, |s| s.ceil() as i64).max(state.origin);
    let end = request["EndTime"].as_f64().map_or(now, |e| e.floor() as i64).min(now);
    let max = request["MaxResults"].as_u64().map_or(PAGE_SIZE, |m| m as usize).clamp(1, PAGE_SIZE);
    let offset: usize =
        request["NextToken"].as_str().and_then(|t| t.strip_prefix("page-")).and_then(|t| t.parse().ok()).unwrap_or(0);
    // Event times are multiples of EVENT_EVERY_SECONDS, newest first.
    let newest = end.div_euclid(EVENT_EVERY_SECONDS) * EVENT_EVERY_SECONDS;
    let oldest = start.div_euclid(EVENT_EVERY_SECONDS) * EVENT_EVERY_SECONDS
        + if start.rem_euclid(EVENT_EVERY_SECONDS) == 0 { 0 } else { EVENT_EVERY_SECONDS };
    let total = if newest >= oldest { ((newest - oldest) / EVENT_EVERY_SECONDS + 1) as usize } else { 0 };
    let events: Vec<Value> = (offset..total.min(offset + max))
        .map(|i| lookup_event(&region, newest - i as i64 * EVENT_EVERY_SECONDS))
        .collect();
    let mut response = json!({"Events": events});
    if offset + max < total {
        response["NextToken"] = json!(format!("page-{}", offset + max));
    }
    ([(header::CONTENT_TYPE, "application/x-amz-json-1.1")], response.to_string()).into_response()
}

/// One LookupEvents entry: a read-only EC2 call at `time`. The raw event names no account, so
/// it is stored under the polled account (ids repeat across accounts, whose keys differ).
fn lookup_event(region: &str, time: i64) -> Value {
    let at = DateTime::from_timestamp(time, 0).unwrap_or_default();
    let id = format!("bench-{region}-{time}");
    let raw = json!({
        "eventVersion": "1.09",
        "userIdentity": {"type": "IAMUser", "principalId": "AIDABENCH", "userName": "bench-user"},
        "eventTime": at.format("%Y-%m-%dT%H:%M:%SZ").to_string(),
        "eventSource": "ec2.amazonaws.com", "eventName": "DescribeInstances", "awsRegion": region,
        "sourceIPAddress": "198.51.100.7", "userAgent": "aws-cli/2.15", "requestParameters": null,
        "responseElements": null, "eventID": id, "readOnly": true, "eventType": "AwsApiCall",
        "managementEvent": true, "eventCategory": "Management"
    });
    json!({
        "EventId": id, "EventName": "DescribeInstances", "ReadOnly": "true", "EventTime": time,
        "EventSource": "ec2.amazonaws.com", "Username": "bench-user", "Resources": [],
        "CloudTrailEvent": raw.to_string(),
    })
}
