//! An idle worker wakes for a job's slot: runs start on time, not up to a poll interval late,
//! and jobs no worker may claim (a disabled account's, a running one's) never wake it early.
//! A process's background work (an import's writers beside the full-text indexer) stays within
//! its pool's connections.

use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use sqlx::PgPool;

use crate::support::TestDb;
use crate::support::aws::{self as fake, FakeCloudTrail};
use skywarden::accounts::{self, NewAccount, PollIntervals};
use skywarden::pollers::worker::Worker;
use skywarden::pollers::{PollContext, PollOptions, jobs};

async fn onboard(pool: &PgPool) -> String {
    let account_id = fake::random_account_id();
    let new = NewAccount {
        role_arn: format!("arn:aws:iam::{account_id}:role/SkywardenReadOnly"),
        regions: vec!["us-east-1".into()],
        ..Default::default()
    };
    accounts::onboard(pool, &new, &PollIntervals::default()).await.unwrap();
    account_id
}

/// Leaves the account's LookupEvents job alone enabled, due `in_seconds` from now; its due time.
async fn only_lookup_due_in(pool: &PgPool, account_id: &str, in_seconds: f64) -> DateTime<Utc> {
    sqlx::query("UPDATE poll_jobs SET enabled = (source = 'cloudtrail-lookup') WHERE account_id = $1")
        .bind(account_id)
        .execute(pool)
        .await
        .unwrap();
    sqlx::query_scalar(
        "UPDATE poll_jobs SET next_run_at = now() + make_interval(secs => $2)
         WHERE account_id = $1 AND source = 'cloudtrail-lookup' RETURNING next_run_at",
    )
    .bind(account_id)
    .bind(in_seconds)
    .fetch_one(pool)
    .await
    .unwrap()
}

#[tokio::test]
async fn an_idle_worker_starts_a_job_at_its_slot_not_a_poll_interval_later() {
    let db = TestDb::new().await;
    let moto = fake::moto_url().await;
    let cloudtrail = FakeCloudTrail::start(moto).await;
    let settings = fake::settings_with_cloudtrail(moto, &cloudtrail.url);
    let ctx = PollContext {
        pool: db.pool.clone(),
        base: settings.load().await,
        settings,
        options: PollOptions::default(),
        geo: None,
        partitions: Default::default(),
    };
    let account_id = onboard(&db.pool).await;
    let due = only_lookup_due_in(&db.pool, &account_id, 2.0).await;
    // Another account's jobs are overdue, but the account is disabled: no worker may claim them,
    // so they must not count as due (an idle loop would spin on them).
    let disabled = onboard(&db.pool).await;
    sqlx::query("UPDATE poll_jobs SET next_run_at = now() - interval '1 hour' WHERE account_id = $1")
        .bind(&disabled)
        .execute(&db.pool)
        .await
        .unwrap();
    sqlx::query("UPDATE accounts SET enabled = false WHERE account_id = $1")
        .bind(&disabled)
        .execute(&db.pool)
        .await
        .unwrap();
    let due_in = jobs::next_due_in(&db.pool).await.unwrap().expect("a job is scheduled");
    assert!(due_in > Duration::from_millis(500) && due_in <= Duration::from_secs(2), "{due_in:?}");

    let worker = Arc::new(Worker::new(ctx, "punctual-worker", None));
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let running = tokio::spawn(worker.run(1, async move {
        let _ = stopped.await;
    }));
    let deadline = Instant::now() + Duration::from_secs(30);
    let started = loop {
        let started: Option<DateTime<Utc>> = sqlx::query_scalar(
            "SELECT last_started_at FROM poll_jobs WHERE account_id = $1 AND source = 'cloudtrail-lookup'",
        )
        .bind(&account_id)
        .fetch_one(&db.pool)
        .await
        .unwrap();
        if let Some(started) = started {
            break started;
        }
        assert!(Instant::now() < deadline, "the job never ran");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let _ = stop.send(());
    running.await.unwrap();
    let lag = (started - due).to_std().unwrap_or_default();
    // A fixed 5 s idle poll started it about 3 s late.
    assert!(started >= due && lag < Duration::from_millis(1500), "started {lag:?} after its slot");
    // A running job counts from its lease's end, not from its (past) slot.
    sqlx::query(
        "UPDATE poll_jobs SET next_run_at = now() - interval '1 minute', lease_owner = 'elsewhere',
                lease_expires_at = now() + interval '1 hour'
         WHERE account_id = $1 AND source = 'cloudtrail-lookup'",
    )
    .bind(&account_id)
    .execute(&db.pool)
    .await
    .unwrap();
    assert_eq!(jobs::next_due_in(&db.pool).await.unwrap(), None, "only a leased job is left");
}

/// Samples, until `done`, the most client connections PostgreSQL lists under `application`.
fn sample_connections(
    pool: PgPool,
    application: String,
    done: Arc<std::sync::atomic::AtomicBool>,
) -> tokio::task::JoinHandle<i64> {
    tokio::spawn(async move {
        let mut peak = 0;
        while !done.load(std::sync::atomic::Ordering::Relaxed) {
            let now: i64 = sqlx::query_scalar(
                "SELECT count(*) FROM pg_stat_activity WHERE application_name = $1 AND backend_type = 'client backend'",
            )
            .bind(&application)
            .fetch_one(&pool)
            .await
            .unwrap();
            peak = peak.max(now);
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        peak
    })
}

#[tokio::test]
async fn an_import_beside_the_indexer_stays_within_its_pool() {
    use skywarden::ingest::{self, ImportOptions};
    use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
    use std::str::FromStr;

    const BUDGET: u32 = 3;
    const EVENTS: usize = 20_000;
    let db = TestDb::new().await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("trail.json");
    crate::support::synthetic::generate_events(&file, EVENTS).unwrap();
    let application = format!("sw-budget-{}", std::process::id());
    let options = PgConnectOptions::from_str(&db.url).unwrap().application_name(&application);
    // Whoever waits for a connection waits for the import at worst.
    let pool = PgPoolOptions::new()
        .max_connections(BUDGET)
        .acquire_timeout(Duration::from_secs(300))
        .connect_with(options)
        .await
        .unwrap();

    let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let sampler = sample_connections(db.pool.clone(), application.clone(), done.clone());
    // Beside the import, as in `serve` or a worker: the full-text indexer, and the lag figures
    // `/metrics` reads, each over and over.
    let indexing = {
        let (pool, done) = (pool.clone(), done.clone());
        tokio::spawn(async move {
            let mut runs = 0u32;
            while !done.load(std::sync::atomic::Ordering::Relaxed) {
                skywarden::search::index::run(&pool).await.unwrap();
                skywarden::search::index::lag(&pool).await.unwrap();
                runs += 1;
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            runs
        })
    };
    let lagging = {
        let (pool, done) = (pool.clone(), done.clone());
        tokio::spawn(async move {
            while !done.load(std::sync::atomic::Ordering::Relaxed) {
                skywarden::search::index::lag(&pool).await.unwrap();
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
    };
    let summary = ingest::import(&pool, ImportOptions { writers: 2, ..ImportOptions::new(vec![file]) }).await.unwrap();
    assert_eq!(summary.cloudtrail_events, EVENTS as u64, "{:?}", summary.errors);
    done.store(true, std::sync::atomic::Ordering::Relaxed);
    let runs = indexing.await.unwrap();
    lagging.await.unwrap();
    let peak = sampler.await.unwrap();
    assert!(runs >= 1);
    // The two writers held two of the pool's connections throughout; before, each detached its
    // connection and the pool opened others for the work beside them.
    assert!(peak >= 2, "the sampler saw the writers: {peak}");
    assert!(peak <= i64::from(BUDGET), "{peak} connections for a pool of {BUDGET}");
    pool.close().await;
}

#[tokio::test]
async fn detections_running_together_read_on_connections_of_their_pool() {
    use skywarden::detect::{PolicySet, Scope};
    use skywarden::ingest::{self, ImportOptions};
    use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
    use std::str::FromStr;

    const BUDGET: u32 = 3;
    const DETECTIONS: usize = 6;
    let db = TestDb::new().await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("trail.json");
    crate::support::synthetic::generate_events(&file, 3_000).unwrap();
    ingest::import(&db.pool, ImportOptions::new(vec![file])).await.unwrap();
    let application = format!("sw-detect-budget-{}", std::process::id());
    let options = PgConnectOptions::from_str(&db.url).unwrap().application_name(&application);
    let pool = PgPoolOptions::new()
        .max_connections(BUDGET)
        .acquire_timeout(Duration::from_secs(120))
        .connect_with(options)
        .await
        .unwrap();
    let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let sampler = sample_connections(db.pool.clone(), application.clone(), done.clone());
    // As a worker with --poll-concurrency above its --db-connections: more detections at once
    // than the pool has connections. Each finishes (no reader waits for ever on the writers).
    let policies = Arc::new(PolicySet::builtin());
    let since: DateTime<Utc> = "2000-01-01T00:00:00Z".parse().unwrap();
    let detections: Vec<_> = (0..DETECTIONS)
        .map(|_| {
            let (pool, policies) = (pool.clone(), policies.clone());
            tokio::spawn(async move { skywarden::detect::run(&pool, &policies, Scope::EventsSince(since)).await })
        })
        .collect();
    for detection in detections {
        let summary = detection.await.unwrap().unwrap();
        assert!(summary.events_evaluated >= 3_000, "{}", summary.events_evaluated);
    }
    done.store(true, std::sync::atomic::Ordering::Relaxed);
    let peak = sampler.await.unwrap();
    // Before, each detection opened a reader of its own beside the pool.
    assert!(peak >= 2, "the sampler saw the detections: {peak}");
    assert!(peak <= i64::from(BUDGET), "{peak} connections for a pool of {BUDGET}");
    pool.close().await;
}
