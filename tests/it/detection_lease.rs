//! One detection pass at a time over every process (migration 0044): runners started together
//! over the same new events raise each alert once; a dead holder's lease is taken over; a live
//! one makes the caller skip, counted, and leave its rows to the holder's next pass; requests
//! survive a holder killed mid-pass, a takeover and the limit of passes; the lease holds through
//! a pass longer than its renewal on a one-connection pool; `skywarden import` waits for a
//! running pass, then runs one pass of its own; login evidence is withdrawn only by the holder,
//! checked in the withdrawing transaction.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde_json::{Value, json};
use skywarden::detect::lease::{self, Acquired, Timing};
use skywarden::detect::{DetectError, PendingOptions, PolicySet, database_now, run_pending, run_pending_with};
use skywarden::ingest::{self, ImportOptions};
use sqlx::PgPool;

use crate::detections_more::{Dir, call, day, user};
use crate::support::TestDb;

const STOPPED: &str = "aws-cloudtrail-logging-disabled";

/// `users` principals who each stop a trail (one alert each), among `benign` reads.
fn trail(dir: &Dir, name: &str, users: usize, benign: usize) -> PathBuf {
    let mut records = Vec::new();
    for n in 0..users {
        let who = user(&format!("{name}{n}"));
        records.push(call(
            day(1) + chrono::Duration::minutes(n as i64),
            "cloudtrail",
            "StopLogging",
            &who,
            "198.51.100.7",
            None,
        ));
        for m in 0..benign / users.max(1) {
            let at = day(1) + chrono::Duration::seconds((n * 1000 + m) as i64);
            records.push(call(at, "ec2", "DescribeInstances", &who, "198.51.100.7", None));
        }
    }
    dir.trail(&format!("{name}.json"), &records)
}

/// Stores the trail without detection; returns when storing began (the database's clock).
async fn store(pool: &PgPool, path: PathBuf) -> DateTime<Utc> {
    let started = database_now(pool).await.unwrap();
    ingest::import(pool, ImportOptions::new(vec![path])).await.unwrap();
    started
}

async fn count(pool: &PgPool, sql: &str) -> i64 {
    sqlx::query_scalar(sql).fetch_one(pool).await.unwrap()
}

async fn stopped_alerts(pool: &PgPool) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM alerts WHERE policy_id = $1").bind(STOPPED).fetch_one(pool).await.unwrap()
}

/// A live lease of another process, as `serve` mid-pass would hold it.
async fn hold(pool: &PgPool, owner: &str, expires_in_secs: i64) {
    sqlx::query(
        "UPDATE detection_lease SET owner = $1, expires_at = now() + make_interval(secs => $2), taken_at = now()",
    )
    .bind(owner)
    .bind(expires_in_secs as f64)
    .execute(pool)
    .await
    .unwrap();
}

async fn scrape_metrics(pool: &PgPool) -> String {
    let router = skywarden::http::metrics::router(skywarden::http::ApiContext::new(pool.clone()));
    let request = axum::http::Request::get("/metrics").body(axum::body::Body::empty()).unwrap();
    let response = tower::ServiceExt::oneshot(router, request).await.unwrap();
    String::from_utf8_lossy(&axum::body::to_bytes(response.into_body(), 1 << 22).await.unwrap()).into_owned()
}

/// A second process: its own pool on the same database.
async fn process(db: &TestDb) -> PgPool {
    sqlx::postgres::PgPoolOptions::new().max_connections(4).connect(&db.url).await.unwrap()
}

/// Marks every row stored so far as detected, so that only a request can make a pass read them.
async fn move_watermark_past(pool: &PgPool) {
    sqlx::query("UPDATE detection_watermark SET pending_since = clock_timestamp()").execute(pool).await.unwrap();
}

async fn lease_state(pool: &PgPool) -> lease::LeaseState {
    lease::state(pool).await.unwrap()
}

/// Locks `flow_records` from another session until the returned transaction ends: a pass stops
/// there, after it read the events, until then.
async fn stall_flows(db: &TestDb) -> sqlx::Transaction<'static, sqlx::Postgres> {
    let mut tx = skywarden::db::begin(&process(db).await).await.unwrap();
    sqlx::query("LOCK TABLE flow_records IN ACCESS EXCLUSIVE MODE").execute(&mut *tx).await.unwrap();
    tx
}

/// Waits until `n` sessions wait for the lock on `flow_records`.
async fn stalled_at_flows(pool: &PgPool, n: i64) {
    for _ in 0..300 {
        let waiting = count(
            pool,
            "SELECT count(*) FROM pg_stat_activity
             WHERE datname = current_database() AND wait_event_type = 'Lock' AND query LIKE '%flow_records%'",
        )
        .await;
        if waiting >= n {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("no pass reached flow_records");
}

#[tokio::test]
async fn runners_started_together_raise_each_alert_once() {
    let db = TestDb::new().await;
    let dir = Dir::new("lease-together");
    const USERS: usize = 20;
    let started = store(&db.pool, trail(&dir, "ops", USERS, 4_000)).await;
    let events = count(&db.pool, "SELECT count(*) FROM cloudtrail_events").await as u64;
    let policies = Arc::new(PolicySet::builtin());
    let (serve, worker) = (process(&db).await, process(&db).await);
    // As `serve` and a `skywarden worker` after storing the same rows (an import they both saw).
    let (a, b) = tokio::join!(run_pending(&serve, &policies, started), run_pending(&worker, &policies, started));
    let (a, b) = (a.unwrap(), b.unwrap());
    let (ran, skipped) = if a.deferred_to.is_some() { (b, a) } else { (a, b) };
    // One pass, or two when the skipped caller's request came after the first began reading.
    assert!(matches!(ran.passes, 1 | 2), "{ran:?}");
    assert_eq!(ran.events_evaluated, events * u64::from(ran.passes), "no pass ran beside the holder's");
    assert!(skipped.deferred_to.as_deref().is_some_and(|h| h.contains(&std::process::id().to_string())));
    assert_eq!((skipped.passes, skipped.events_evaluated, skipped.new_alerts), (0, 0, 0), "{skipped:?}");
    assert_eq!(stopped_alerts(&db.pool).await, USERS as i64);
    assert_eq!(ran.new_alerts, USERS as u64, "each alert raised once");
    assert_eq!(count(&db.pool, "SELECT count(*) FROM alert_evidence").await, USERS as i64);
    // The database's own count of passes and skips.
    let state = lease_state(&db.pool).await;
    assert_eq!(
        (state.passes_total, state.skips_total, state.takeovers_total, state.passes_failed_total),
        (i64::from(ran.passes), 1, 0, 0),
        "{state:?}"
    );
    assert_eq!((state.holder, state.waiting_requests), (None, 0), "released, nothing left over");
    let health = skywarden::detect::health::read(&db.pool).await.unwrap();
    assert_eq!(health.lease.as_ref().map(|l| l.skips_total), Some(1));
    assert!(!health.failing());
    // Rows stored later get a pass of their own.
    let newer = store(&db.pool, trail(&dir, "newer", 2, 0)).await;
    let next = run_pending(&serve, &policies, newer).await.unwrap();
    assert_eq!((next.passes, next.new_alerts), (1, 2), "{next:?}");
}

#[tokio::test]
async fn a_dead_holders_lease_is_taken_over() {
    let db = TestDb::new().await;
    let dir = Dir::new("lease-dead");
    let started = store(&db.pool, trail(&dir, "dead", 3, 30)).await;
    // A process died mid-pass: its lease ran out and nobody renews it.
    hold(&db.pool, "crashed-host/4242/00000000deadbeef", -5).await;
    assert_eq!(lease_state(&db.pool).await.holder, None, "an expired lease has no holder");
    let summary = run_pending(&db.pool, &PolicySet::builtin(), started).await.unwrap();
    assert_eq!((summary.passes, summary.deferred_to), (1, None));
    assert_eq!(stopped_alerts(&db.pool).await, 3);
    let state = lease_state(&db.pool).await;
    assert_eq!((state.takeovers_total, state.skips_total, state.holder.as_deref()), (1, 0, None), "{state:?}");
}

#[tokio::test]
async fn a_live_lease_makes_the_caller_skip_and_its_rows_go_to_the_next_pass() {
    let db = TestDb::new().await;
    let dir = Dir::new("lease-live");
    let policies = PolicySet::builtin();
    let started = store(&db.pool, trail(&dir, "live", 4, 40)).await;
    hold(&db.pool, "serve-host/7/0000000000000001", 3600).await;
    let skipped = run_pending(&db.pool, &policies, started).await.unwrap();
    assert_eq!(skipped.deferred_to.as_deref(), Some("serve-host/7/0000000000000001"));
    assert_eq!((skipped.passes, skipped.events_evaluated), (0, 0));
    assert_eq!(stopped_alerts(&db.pool).await, 0, "nothing ran beside the holder");
    let health = skywarden::detect::health::read(&db.pool).await.unwrap();
    let state = health.lease.unwrap();
    assert_eq!(state.holder.as_deref(), Some("serve-host/7/0000000000000001"), "the operator sees who runs");
    assert_eq!((state.skips_total, state.waiting_requests), (1, 1), "{state:?}");
    assert_eq!(state.unattended_request_age_secs, None, "a live holder runs the request");
    let metrics = scrape_metrics(&db.pool).await;
    for line in [
        "\nskywarden_detection_lease_skips_total 1\n",
        "\nskywarden_detection_lease_held 1\n",
        "\nskywarden_detection_lease_holder_info{host=\"serve-host\",pid=\"7\"} 1\n",
        "\nskywarden_detection_requests_waiting 1\n",
    ] {
        assert!(metrics.contains(line), "{line} in {metrics}");
    }
    // A backtest (`policies test`) neither waits for the lease nor counts a skip nor writes state.
    let (findings, _) =
        skywarden::detect::evaluate(&db.pool, &policies, skywarden::detect::Scope::EventsSince(day(0)), Some(STOPPED))
            .await
            .unwrap();
    assert_eq!(findings.len(), 4);
    assert_eq!(lease_state(&db.pool).await.skips_total, 1);
    assert_eq!(count(&db.pool, "SELECT count(*) FROM detection_backlog").await, 0);
    // The holder lets go without running it (it died, or stopped at its limit of passes): the
    // request waits, shown unattended, and the next pass anywhere reads it, whatever it stored
    // itself; the watermark alone would not make it read these rows.
    sqlx::query("UPDATE detection_lease SET owner = NULL, expires_at = '-infinity'").execute(&db.pool).await.unwrap();
    assert!(lease_state(&db.pool).await.unattended_request_age_secs.is_some());
    move_watermark_past(&db.pool).await;
    let later = database_now(&db.pool).await.unwrap();
    let next = run_pending(&db.pool, &policies, later).await.unwrap();
    assert_eq!(next.passes, 1);
    assert_eq!(stopped_alerts(&db.pool).await, 4, "the skipped caller's rows were detected");
    assert_eq!(lease_state(&db.pool).await.waiting_requests, 0);
    let metrics = scrape_metrics(&db.pool).await;
    assert!(metrics.contains("\nskywarden_detection_lease_held 0\n"), "{metrics}");
    assert!(!metrics.contains("skywarden_detection_lease_holder_info{"), "{metrics}");
}

#[tokio::test]
async fn a_holder_killed_after_taking_a_request_in_leaves_it_to_the_next_process() {
    let db = TestDb::new().await;
    let dir = Dir::new("lease-killed");
    let policies = PolicySet::builtin();
    let started = store(&db.pool, trail(&dir, "killed", 3, 0)).await;
    move_watermark_past(&db.pool).await;
    // A holder takes the request into its pass, then dies before the pass ends.
    lease::leave_request(&db.pool, started).await.unwrap();
    let Acquired::Taken(holder) =
        lease::acquire(&db.pool, Timing::default(), Duration::ZERO, &|_: &str| {}).await.unwrap()
    else {
        panic!("the lease was free")
    };
    assert_eq!(holder.begin_pass().await.unwrap().requested, Some(started));
    std::mem::forget(holder);
    assert_eq!(lease_state(&db.pool).await.waiting_requests, 1, "the request outlives the pass that took it in");
    sqlx::query("UPDATE detection_lease SET expires_at = now() - interval '1 second'").execute(&db.pool).await.unwrap();
    // Another process, with nothing of its own to detect.
    let other = process(&db).await;
    let now = database_now(&other).await.unwrap();
    let next = run_pending(&other, &policies, now).await.unwrap();
    assert_eq!((next.passes, next.new_alerts), (1, 3), "{next:?}");
    assert_eq!(stopped_alerts(&db.pool).await, 3);
    let state = lease_state(&db.pool).await;
    assert_eq!((state.takeovers_total, state.waiting_requests, state.holder.as_deref()), (1, 0, None), "{state:?}");
}

#[tokio::test]
async fn rows_left_while_a_pass_reads_get_one_more_pass() {
    let db = TestDb::new().await;
    let dir = Dir::new("lease-handoff");
    let policies = Arc::new(PolicySet::builtin());
    let first = store(&db.pool, trail(&dir, "first", 2, 0)).await;
    let stall = stall_flows(&db).await;
    let holder = tokio::spawn({
        let (pool, policies) = (process(&db).await, policies.clone());
        async move { run_pending(&pool, &policies, first).await }
    });
    stalled_at_flows(&db.pool, 1).await;
    // Rows stored after the holder read the events: their caller leaves them to it.
    let second = store(&db.pool, trail(&dir, "second", 3, 0)).await;
    let late = run_pending(&db.pool, &policies, second).await.unwrap();
    assert!(late.deferred_to.is_some(), "{late:?}");
    stall.rollback().await.unwrap();
    let ran = holder.await.unwrap().unwrap();
    assert_eq!((ran.passes, ran.new_alerts), (2, 5), "{ran:?}");
    let state = lease_state(&db.pool).await;
    assert_eq!((state.holder, state.waiting_requests, state.passes_total, state.skips_total), (None, 0, 2, 1));
}

#[tokio::test]
async fn requests_left_at_the_limit_of_passes_wait_for_the_next_pass_anywhere() {
    let db = TestDb::new().await;
    let dir = Dir::new("lease-cap");
    let policies = Arc::new(PolicySet::builtin());
    let first = store(&db.pool, trail(&dir, "first", 2, 0)).await;
    let stall = stall_flows(&db).await;
    let holder = tokio::spawn({
        let (pool, policies) = (process(&db).await, policies.clone());
        async move {
            let options = PendingOptions { max_passes: 1, ..PendingOptions::default() };
            run_pending_with(&pool, &policies, first, &options).await
        }
    });
    stalled_at_flows(&db.pool, 1).await;
    let second = store(&db.pool, trail(&dir, "second", 3, 0)).await;
    assert!(run_pending(&db.pool, &policies, second).await.unwrap().deferred_to.is_some());
    stall.rollback().await.unwrap();
    let ran = holder.await.unwrap().unwrap();
    assert_eq!((ran.passes, ran.new_alerts), (1, 2), "{ran:?}");
    let state = lease_state(&db.pool).await;
    assert_eq!((state.holder.as_deref(), state.waiting_requests), (None, 1), "{state:?}");
    assert!(state.unattended_request_age_secs.is_some(), "health shows the request nobody runs");
    // What a worker looks for every few seconds, and runs detection for.
    assert_eq!(lease::unattended(&db.pool, Duration::ZERO).await.unwrap(), Some(second));
    assert_eq!(lease::unattended(&db.pool, Duration::from_secs(3600)).await.unwrap(), None, "not yet nobody's");
    move_watermark_past(&db.pool).await;
    let now = database_now(&db.pool).await.unwrap();
    let next = run_pending(&db.pool, &policies, now).await.unwrap();
    assert_eq!((next.passes, next.new_alerts), (1, 3), "{next:?}");
    assert_eq!(lease_state(&db.pool).await.waiting_requests, 0);
}

#[tokio::test]
async fn a_pass_whose_lease_was_taken_over_writes_nothing_and_its_requests_stay_for_the_new_holder() {
    let db = TestDb::new().await;
    let dir = Dir::new("lease-takeover");
    let policies = Arc::new(PolicySet::builtin());
    let started = store(&db.pool, trail(&dir, "stalled", 3, 30)).await;
    let events = count(&db.pool, "SELECT count(*) FROM cloudtrail_events").await as u64;
    move_watermark_past(&db.pool).await;
    let stall = stall_flows(&db).await;
    let first = tokio::spawn({
        let (pool, policies) = (process(&db).await, policies.clone());
        async move { run_pending(&pool, &policies, started).await }
    });
    stalled_at_flows(&db.pool, 1).await;
    // The first holder stalls past its lease; another process takes over while it still runs.
    sqlx::query("UPDATE detection_lease SET expires_at = now() - interval '1 second'").execute(&db.pool).await.unwrap();
    let second = tokio::spawn({
        let (pool, policies) = (process(&db).await, policies.clone());
        async move {
            let now = database_now(&pool).await.unwrap();
            run_pending(&pool, &policies, now).await
        }
    });
    stalled_at_flows(&db.pool, 2).await;
    stall.rollback().await.unwrap();
    let taken_over = first.await.unwrap();
    assert!(matches!(taken_over, Err(DetectError::Lease(lease::LeaseError::Lost(_)))), "{taken_over:?}");
    let ran = second.await.unwrap().unwrap();
    // The new holder read the first one's request (the watermark was past those rows).
    assert_eq!(ran.events_evaluated, events, "{ran:?}");
    assert_eq!(stopped_alerts(&db.pool).await, 3);
    // Only the new holder's pass counted: the first one's success transaction (watermark,
    // requests) never committed.
    let state = lease_state(&db.pool).await;
    assert_eq!(
        (
            state.takeovers_total,
            state.passes_total,
            state.passes_failed_total,
            state.waiting_requests,
            state.holder.as_deref()
        ),
        (1, 1, 1, 0, None),
        "{state:?}"
    );
}

#[tokio::test]
async fn a_one_connection_pool_keeps_its_lease_through_a_pass_longer_than_the_lease() {
    let db = TestDb::new().await;
    let dir = Dir::new("lease-one-connection");
    let policies = Arc::new(PolicySet::builtin());
    let started = store(&db.pool, trail(&dir, "slow", 2, 0)).await;
    let stall = stall_flows(&db).await;
    let timing = Timing {
        lease: Duration::from_secs(3),
        renew_every: Duration::from_millis(300),
        lost_after: Duration::from_secs(2),
    };
    let holder = tokio::spawn({
        let policies = policies.clone();
        let pool = sqlx::postgres::PgPoolOptions::new().max_connections(1).connect(&db.url).await.unwrap();
        async move {
            run_pending_with(&pool, &policies, started, &PendingOptions { timing, ..PendingOptions::default() }).await
        }
    });
    stalled_at_flows(&db.pool, 1).await;
    // The pass holds the pool's only connection past the lease's first expiry: still held.
    tokio::time::sleep(Duration::from_secs(4)).await;
    let state = lease_state(&db.pool).await;
    assert!(state.holder.is_some(), "renewed on a connection of its own: {state:?}");
    stall.rollback().await.unwrap();
    let ran = holder.await.unwrap().unwrap();
    assert_eq!((ran.passes, ran.new_alerts), (1, 2), "{ran:?}");
    let state = lease_state(&db.pool).await;
    assert_eq!((state.passes_total, state.passes_failed_total, state.holder.as_deref()), (1, 0, None), "{state:?}");
}

#[tokio::test]
async fn import_waits_for_a_running_pass_then_runs_one_of_its_own() {
    let db = TestDb::new().await;
    let dir = Dir::new("lease-import");
    // A worker's rows, left while the service's pass ran and not yet read by it.
    let other = store(&db.pool, trail(&dir, "worker", 2, 0)).await;
    move_watermark_past(&db.pool).await;
    lease::leave_request(&db.pool, other).await.unwrap();
    let path = trail(&dir, "imported", 5, 50);
    // `serve` is mid-pass and ends it two seconds after the import stored its events.
    hold(&db.pool, "serve-host/9/0000000000000009", 3600).await;
    let pool = db.pool.clone();
    let service = tokio::spawn(async move {
        while count(&pool, "SELECT count(*) FROM cloudtrail_events").await < 57 {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
        assert_eq!(stopped_alerts(&pool).await, 0, "the import ran no pass beside the holder's");
        assert_eq!(lease_state(&pool).await.waiting_requests, 2, "the import left its request before waiting");
        sqlx::query("UPDATE detection_lease SET owner = NULL, expires_at = '-infinity'").execute(&pool).await.unwrap();
    });
    let url = db.url.clone();
    let path_text = path.display().to_string();
    let output = tokio::task::spawn_blocking(move || {
        crate::support::skywarden_command(&url).args(["import", "--json", &path_text]).output().unwrap()
    })
    .await
    .unwrap();
    service.await.unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    assert!(
        stderr.contains("waiting up to 5 minutes for the detection pass of serve-host/9/0000000000000009"),
        "{stderr}"
    );
    let summary: Value = serde_json::from_slice(&output.stdout).unwrap();
    let detection = &summary["detection"];
    // One pass of its own: the worker's rows are not in its report.
    assert_eq!((detection["new_alerts"].as_u64(), detection["passes"].as_u64()), (Some(5), Some(1)), "{summary}");
    assert!(detection.get("deferred_to").is_none(), "{summary}");
    assert_eq!(stopped_alerts(&db.pool).await, 5);
    let state = lease_state(&db.pool).await;
    assert_eq!(
        (state.skips_total, state.holder, state.waiting_requests),
        (0, None, 1),
        "it waited rather than skipped"
    );
    // The worker's request goes to the next pass.
    let now = database_now(&db.pool).await.unwrap();
    let next = run_pending(&db.pool, &PolicySet::builtin(), now).await.unwrap();
    assert_eq!(next.new_alerts, 2, "{next:?}");
}

/// Withdrawing login evidence checks the lease inside its own transaction: a process whose
/// lease another took over (or that let it expire) withdraws nothing, whatever it checked
/// before; the holder withdraws.
#[tokio::test]
async fn a_retract_by_a_process_that_does_not_hold_the_lease_withdraws_nothing() {
    use skywarden::alerts::store::{AlertStoreError, retract_login_evidence};
    const HIJACK: &str = "aws-account-hijacking-attempt";
    let db = TestDb::new().await;
    let dir = Dir::new("lease-retract");
    let login = |day: u32, ip: &str| {
        json!({"eventVersion": "1.09", "eventTime": format!("2026-11-{day:02}T10:00:00Z"),
            "eventSource": "signin.amazonaws.com", "eventName": "ConsoleLogin", "awsRegion": "us-east-1",
            "sourceIPAddress": ip, "userAgent": "Mozilla/5.0", "eventID": format!("login-{day}"),
            "eventType": "AwsConsoleSignIn", "recipientAccountId": "111122223333",
            "responseElements": {"ConsoleLogin": "Success"}, "additionalEventData": {"MFAUsed": "Yes"},
            "userIdentity": {"type": "IAMUser", "arn": "arn:aws:iam::111122223333:user/alice",
                "accountId": "111122223333", "userName": "alice"}})
    };
    // Three logins from home, then one from Ukraine: a hijacking verdict with one piece of evidence.
    let trail = dir.trail(
        "logins.json",
        &[login(1, "73.202.18.40"), login(2, "73.202.18.40"), login(3, "73.202.18.40"), login(12, "176.36.10.20")],
    );
    let geo = crate::support::mmdb::sample_incident_countries(&dir.0);
    let output = db.skywarden(&["import", "--geoip", geo.to_str().unwrap(), trail.to_str().unwrap()]);
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let evidence = || {
        count(
            &db.pool,
            "SELECT count(*) FROM alert_evidence e JOIN alerts a USING (account_id, alert_id)
             WHERE a.policy_id = 'aws-account-hijacking-attempt'",
        )
    };
    assert_eq!(evidence().await, 1);
    let (from, to) = ("2026-11-01T00:00:00Z".parse().unwrap(), "2026-11-30T00:00:00Z".parse().unwrap());
    let me = "worker-host/7/0000000000000007";

    hold(&db.pool, "serve-host/9/0000000000000009", 3600).await;
    let refused = retract_login_evidence(&db.pool, Some(me), &[HIJACK], from, to, &[]).await;
    assert!(matches!(refused, Err(AlertStoreError::LeaseNotHeld(_))), "{refused:?}");
    assert_eq!(evidence().await, 1, "a process another took the lease from withdraws nothing");
    hold(&db.pool, me, -1).await;
    let expired = retract_login_evidence(&db.pool, Some(me), &[HIJACK], from, to, &[]).await;
    assert!(matches!(expired, Err(AlertStoreError::LeaseNotHeld(_))), "{expired:?}");
    assert_eq!(evidence().await, 1, "nor one whose lease expired");

    hold(&db.pool, me, 3600).await;
    let withdrawn = retract_login_evidence(&db.pool, Some(me), &[HIJACK], from, to, &[]).await.unwrap();
    assert_eq!((withdrawn, evidence().await), (1, 0), "the holder withdraws");
}
