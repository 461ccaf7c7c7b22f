//! Faults: a poll job that panics is recorded, parked after three panics in a row and brought
//! back by "poll now" while the other jobs keep running; a posture check that panics costs one
//! resource's verdict, never the checks; PostgreSQL killed and restarted under `serve` (API,
//! pollers, sender) makes the service unready until it recovers by itself, losing and repeating
//! nothing; an import into a read-only or full database fails naming the cause and a rerun is
//! exact; two senders racing for one outbox row send it once.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use serde_json::{Value, json};
use sqlx::PgPool;

use crate::support::aws::{self as fake, FakeCloudTrail};
use crate::support::receiver::{Answer, Receiver};
use crate::support::{KillOnDrop, TestDb, skywarden_command};
use skywarden::accounts::{self, NewAccount, PollIntervals};
use skywarden::auth::{self, Role};
use skywarden::aws::AccountSession;
use skywarden::db::EmbeddedPostgres;
use skywarden::http::ApiContext;
use skywarden::inventory::dump::SnapshotDump;
use skywarden::model::{Finding, Mitre, Severity};
use skywarden::notify::channels::{self, ChannelKind, ChannelSpec, SecretInput};
use skywarden::notify::http_client::SafeHttpClient;
use skywarden::notify::network::NetworkPolicy;
use skywarden::notify::outbox;
use skywarden::notify::routes::{self, RouteSpec};
use skywarden::notify::secrets::{Secret, SecretKey};
use skywarden::notify::sender::{Sender, SenderOptions};
use skywarden::pollers::worker::Worker;
use skywarden::pollers::{PollContext, PollOptions, Source};
use skywarden::posture::checks::CheckSet;
use skywarden::posture::findings::{self, FindingFilter};

/// Every wait in these tests ends by this deadline: conditions are polled, never timed.
const DEADLINE: Duration = Duration::from_secs(60);

/// Polls `condition` until it holds; fails naming `what` after [`DEADLINE`].
async fn wait_until<F: std::future::Future<Output = bool>>(what: &str, mut condition: impl FnMut() -> F) {
    let deadline = Instant::now() + DEADLINE;
    while !condition().await {
        assert!(Instant::now() < deadline, "waited {DEADLINE:?} for {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn scrape_metrics(pool: &PgPool) -> String {
    let response = tower::ServiceExt::oneshot(
        skywarden::http::metrics::router(ApiContext::new(pool.clone())),
        axum::http::Request::get("/metrics").body(axum::body::Body::empty()).unwrap(),
    )
    .await
    .unwrap();
    String::from_utf8_lossy(&axum::body::to_bytes(response.into_body(), 1 << 22).await.unwrap()).into_owned()
}

// ---------------------------------------------------------------------------------------------
// Posture: checks that panic.

/// A check that judges a security group by `config.bound` through `numbers.range`, which
/// regorus 0.14 implements with `Vec::with_capacity(bound + 1)`: a bound near `i64::MAX`
/// makes the evaluation panic ("capacity overflow"), a real bug in a real dependency. The probe
/// at loading (id `probe`) never reaches it.
const RANGE_CHECK: &str = r#"# METADATA
# title: Security groups keep their range small
# custom:
#   id: test-range
#   severity: medium
#   resource_type: "ec2:security-group"
#   remediation: Shrink it.
#   frameworks:
#     cis-aws-3.0: []
package skywarden.posture.test_range

import rego.v1

bound := input.resource.config.bound if input.resource.id != "probe"

bound := 9223372036854775807 if {
	input.resource.id != "probe"
	not input.resource.config.bound
}

deny contains msg if {
	count(numbers.range(0, bound)) > 5
	msg := sprintf("%s has a range of %d", [input.resource.id, bound])
}
"#;

const DESCRIBED_CHECK: &str = r#"# METADATA
# title: Security groups have a description
# custom:
#   id: test-described
#   severity: low
#   resource_type: "ec2:security-group"
#   remediation: Describe it.
#   frameworks:
#     cis-aws-3.0: []
package skywarden.posture.test_described

import rego.v1

deny contains msg if {
	not input.resource.config.description
	msg := sprintf("%s has no description", [input.resource.id])
}
"#;

/// The two checks above, loaded from a folder as an operator's would be.
fn panicking_checks(dir: &Path) -> CheckSet {
    std::fs::create_dir_all(dir.join("net")).unwrap();
    std::fs::write(dir.join("net/test-range.rego"), RANGE_CHECK).unwrap();
    std::fs::write(dir.join("net/test-described.rego"), DESCRIBED_CHECK).unwrap();
    let set = CheckSet::load(dir);
    assert!(set.problems.is_empty(), "{:?}", set.problems);
    assert_eq!(set.checks.len(), 2);
    set
}

const POSTURE_ACCOUNT: &str = "444455556666";

fn group(id: &str, config: Value) -> Value {
    json!({"type": "ec2:security-group", "id": id, "arn": null, "name": id, "config": config})
}

fn snapshot(at: &str, groups: Vec<Value>) -> Value {
    json!({"captured_at": at, "regions": {"us-east-1": {"collected": ["ec2:security-group"], "resources": groups}}})
}

/// Open findings as (check, resource).
async fn open_findings(pool: &PgPool) -> Vec<(String, String)> {
    let filter =
        FindingFilter { status: Some("open".into()), account_id: Some(POSTURE_ACCOUNT.into()), ..Default::default() };
    let mut open: Vec<(String, String)> =
        findings::list(pool, &filter).await.unwrap().into_iter().map(|f| (f.check_id, f.resource_id)).collect();
    open.sort();
    open
}

fn pairs(list: &[(&str, &str)]) -> Vec<(String, String)> {
    list.iter().map(|(a, b)| (a.to_string(), b.to_string())).collect()
}

#[tokio::test]
async fn a_check_that_panics_on_a_resource_costs_that_verdict_and_never_the_checks() {
    let db = TestDb::new().await;
    let dir = tempfile::tempdir().unwrap();
    let mut checks = panicking_checks(&dir.path().join("posture"));
    let big = 9_223_372_036_854_775_807_i64;
    let dump = json!({
        "format": "skywarden.snapshot/v1",
        "account_id": POSTURE_ACCOUNT,
        "snapshots": [
            snapshot("2026-11-20T10:00:00Z", vec![
                group("sg-a", json!({"bound": 100, "description": "a"})),
                group("sg-b", json!({"bound": 1})),
                group("sg-c", json!({"bound": 10, "description": "c"})),
            ]),
            // sg-a's bound now makes the range check panic.
            snapshot("2026-11-21T10:00:00Z", vec![
                group("sg-a", json!({"bound": big, "description": "a"})),
                group("sg-b", json!({"bound": 1})),
                group("sg-c", json!({"bound": 10, "description": "c"})),
            ]),
            // Both are fixed.
            snapshot("2026-11-22T10:00:00Z", vec![
                group("sg-a", json!({"bound": 1, "description": "a"})),
                group("sg-b", json!({"bound": 1})),
                group("sg-c", json!({"bound": 1, "description": "c"})),
            ]),
        ]
    });
    let path = dir.path().join("dump.json");
    std::fs::write(&path, dump.to_string()).unwrap();
    let dump = SnapshotDump::load(&path).unwrap();
    let accounts = [POSTURE_ACCOUNT.to_owned()];

    dump.record_one(&db.pool, 0).await.unwrap();
    let first = skywarden::posture::run(&db.pool, &mut checks, &accounts, None).await.unwrap();
    assert!(first.problems.is_empty(), "{:?}", first.problems);
    let failing = pairs(&[("test-described", "sg-b"), ("test-range", "sg-a"), ("test-range", "sg-c")]);
    assert_eq!(open_findings(&db.pool).await, failing);

    dump.record_one(&db.pool, 1).await.unwrap();
    // Twice: a panic in one run must not break the check for the next (a Rego engine left
    // mid-evaluation would report a cycle on every resource from then on).
    for run in 0..2 {
        let report = skywarden::posture::run(&db.pool, &mut checks, &accounts, None).await.unwrap();
        let problems: Vec<(Option<&str>, &str)> =
            report.problems.iter().map(|p| (p.check.as_deref(), p.message.as_str())).collect();
        assert!(!problems.is_empty() && problems.iter().all(|(check, _)| *check == Some("test-range")), "{problems:?}");
        let on_a = problems[0].1;
        assert!(on_a.contains("sg-a") && on_a.contains("panicked: capacity overflow"), "run {run}: {problems:?}");
        assert_eq!(report.accounts.len(), 1, "run {run}: the account was evaluated");
        // No verdict on sg-a: its finding is kept as it was, not resolved.
        let open = open_findings(&db.pool).await;
        for kept in pairs(&[("test-described", "sg-b"), ("test-range", "sg-a")]) {
            assert!(open.contains(&kept), "run {run}: {kept:?} in {open:?}");
        }
        assert_eq!(checks.checks.len(), 2, "run {run}: posture keeps its checks");
    }

    // The checks still judge: the fixed groups resolve, with no problem left.
    dump.record_one(&db.pool, 2).await.unwrap();
    let fixed = skywarden::posture::run(&db.pool, &mut checks, &accounts, None).await.unwrap();
    assert!(fixed.problems.is_empty(), "{:?}", fixed.problems);
    assert_eq!(open_findings(&db.pool).await, pairs(&[("test-described", "sg-b")]));
}

// ---------------------------------------------------------------------------------------------
// Pollers: a job that panics.

async fn poll_context(db: &TestDb, moto: &str, cloudtrail: &str) -> PollContext {
    let settings = fake::settings_with_cloudtrail(moto, cloudtrail);
    let base = settings.load().await;
    PollContext {
        pool: db.pool.clone(),
        base,
        settings,
        options: PollOptions { lookup_min_interval: Duration::from_millis(40), ..PollOptions::default() },
        geo: None,
        partitions: Default::default(),
    }
}

/// (consecutive panics, parked, last started) of a job.
async fn panic_state(pool: &PgPool, job_id: i64) -> (i32, bool, Option<DateTime<Utc>>) {
    sqlx::query_as("SELECT consecutive_panics, parked_at IS NOT NULL, last_started_at FROM poll_jobs WHERE job_id = $1")
        .bind(job_id)
        .fetch_one(pool)
        .await
        .unwrap()
}

/// How many of the account's jobs other than `job_id` started after `since` and finished
/// without an error (and how many there are).
async fn others_done(pool: &PgPool, account: &str, job_id: i64, since: DateTime<Utc>) -> (i64, i64) {
    sqlx::query_as(
        "SELECT count(*) FILTER (WHERE last_started_at > $3 AND lease_owner IS NULL AND last_success_at >= last_started_at),
                count(*)
         FROM poll_jobs WHERE account_id = $1 AND job_id <> $2 AND enabled",
    )
    .bind(account)
    .bind(job_id)
    .bind(since)
    .fetch_one(pool)
    .await
    .unwrap()
}

async fn db_now(pool: &PgPool) -> DateTime<Utc> {
    skywarden::db::now(pool).await.unwrap()
}

/// Runs the job's worker loop until the job has panicked `times` times in all, making it due
/// after each panic (its back-off would otherwise hold it for minutes).
async fn panic_until(pool: &PgPool, job_id: i64, times: i32) {
    loop {
        let (panics, _, _) = panic_state(pool, job_id).await;
        if panics >= times {
            return;
        }
        sqlx::query("UPDATE poll_jobs SET next_run_at = now() WHERE job_id = $1")
            .bind(job_id)
            .execute(pool)
            .await
            .unwrap();
        wait_until(&format!("panic {} of job {job_id}", panics + 1), || async {
            panic_state(pool, job_id).await.0 > panics
        })
        .await;
    }
}

#[tokio::test]
async fn a_job_that_keeps_panicking_is_parked_while_the_others_run_and_poll_now_brings_it_back() {
    let db = TestDb::new().await;
    let moto = fake::moto_url().await;
    let cloudtrail = FakeCloudTrail::start(moto).await;
    let ctx = poll_context(&db, moto, &cloudtrail.url).await;
    let account_id = fake::random_account_id();
    let new = NewAccount {
        role_arn: format!("arn:aws:iam::{account_id}:role/SkywardenReadOnly"),
        regions: vec!["us-east-1".into()],
        ..Default::default()
    };
    let account = accounts::onboard(&db.pool, &new, &PollIntervals::default()).await.unwrap();
    let owner = AccountSession::assume(&ctx.base, &ctx.settings, &account.assume_target()).await.unwrap();
    owner.ec2("us-east-1").create_security_group().group_name("web").description("web").send().await.unwrap();
    let job_id: i64 = sqlx::query_scalar(
        "SELECT job_id FROM poll_jobs WHERE account_id = $1 AND source = 'config-snapshot' AND region = 'global'",
    )
    .bind(&account_id)
    .fetch_one(&db.pool)
    .await
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    // The IAM snapshot job panics at every run; the posture checks panic on security groups.
    let worker = Worker::new(ctx.clone(), "faulty-worker", None)
        .with_posture(panicking_checks(&dir.path().join("posture")), None)
        .with_job_hook(|job| {
            if job.source == Source::ConfigSnapshot && job.region == "global" {
                panic!("injected fault in job {}", job.job_id);
            }
        });
    let worker = Arc::new(worker);
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    // One loop: the other jobs can only run if it survives the panics.
    let loop_handle = tokio::spawn(worker.clone().run(1, async move {
        let _ = stopped.await;
    }));

    let started = db_now(&db.pool).await - chrono::Duration::seconds(1);
    wait_until("the first panic and every other job's run", || async {
        let (done, all) = others_done(&db.pool, &account_id, job_id, started).await;
        panic_state(&db.pool, job_id).await.0 >= 1 && done == all && all >= 3
    })
    .await;
    panic_until(&db.pool, job_id, 3).await;
    let (panics, parked, parked_start) = panic_state(&db.pool, job_id).await;
    assert_eq!((panics, parked), (3, true), "parked after three panics in a row");

    // Parked: not claimed even when most overdue, while the others run again in the same loop.
    let marker = db_now(&db.pool).await;
    sqlx::query("UPDATE poll_jobs SET next_run_at = now() - interval '1 hour' WHERE job_id = $1")
        .bind(job_id)
        .execute(&db.pool)
        .await
        .unwrap();
    sqlx::query("UPDATE poll_jobs SET next_run_at = now() WHERE account_id = $1 AND job_id <> $2")
        .bind(&account_id)
        .bind(job_id)
        .execute(&db.pool)
        .await
        .unwrap();
    wait_until("the other jobs' runs after the parking", || async {
        let (done, all) = others_done(&db.pool, &account_id, job_id, marker).await;
        done == all
    })
    .await;
    assert_eq!(panic_state(&db.pool, job_id).await, (3, true, parked_start), "the parked job did not run");
    // The region's snapshot evaluated posture though its sibling is parked.
    let evaluated = format!("SELECT count(*) FROM posture_evaluations WHERE account_id = '{account_id}'");
    assert!(db.count(&evaluated).await >= 1);
    let _ = stop.send(());
    loop_handle.await.expect("the worker loop ends cleanly");

    assert_parked_is_shown(&db, &account_id).await;

    // "Poll now" un-parks it; without the fault it runs, and its panics are forgotten.
    let output = db.skywarden(&["accounts", "poll-now", "--account", &account_id, "--source", "config-snapshot"]);
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    assert!(!panic_state(&db.pool, job_id).await.1, "un-parked");
    let reports = Worker::new(ctx, "mended-worker", None).run_once().await.unwrap();
    let report = reports.iter().find(|r| r.job_id == job_id).expect("the un-parked job ran");
    assert!(report.error.is_none(), "{report:?}");
    assert_eq!(panic_state(&db.pool, job_id).await.0, 0);
    let metrics = scrape_metrics(&db.pool).await;
    let parked = format!("skywarden_poll_jobs_parked{{account=\"{account_id}\",source=\"config-snapshot\"}} 0");
    assert!(metrics.contains(&parked), "{metrics}");
}

/// The parked job, its panic and how to run it again, in `accounts status` (text and JSON),
/// the API and /metrics; the posture checks' panics in /metrics.
async fn assert_parked_is_shown(db: &TestDb, account_id: &str) {
    let output = db.skywarden(&["accounts", "status", account_id, "--json"]);
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let shown: Vec<Value> =
        String::from_utf8_lossy(&output.stdout).lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    let parked: Vec<&Value> = shown.iter().filter(|j| j["parked_at"].is_string()).collect();
    assert_eq!(parked.len(), 1, "{shown:?}");
    let job = parked[0];
    assert_eq!((job["source"].as_str(), job["region"].as_str()), (Some("config-snapshot"), Some("global")), "{job}");
    assert_eq!(job["consecutive_panics"], 3, "{job}");
    let error = job["last_error"].as_str().unwrap();
    assert!(error.contains("panicked") && error.contains("injected fault in job"), "{error}");
    let text = String::from_utf8_lossy(&db.skywarden(&["accounts", "status", account_id]).stdout).into_owned();
    assert!(text.contains("PARKED") && text.contains("after 3 panics in a row"), "{text}");
    assert!(text.contains(&format!("accounts poll-now --account {account_id} --source config-snapshot")), "{text}");

    let (_, token) = auth::create(&db.pool, "noc", Role::Viewer).await.unwrap();
    let (status, jobs) =
        crate::api::call(db, "GET", &format!("/api/v1/accounts/{account_id}/status"), Some(&token), None).await;
    assert_eq!(status, axum::http::StatusCode::OK, "{jobs}");
    let parked: Vec<&Value> = jobs.as_array().unwrap().iter().filter(|j| j["parked_at"].is_string()).collect();
    assert_eq!(parked.len(), 1, "{jobs}");
    assert!(parked[0]["last_error"].as_str().unwrap().contains("injected fault"), "{jobs}");

    let metrics = scrape_metrics(&db.pool).await;
    let parked = format!("skywarden_poll_jobs_parked{{account=\"{account_id}\",source=\"config-snapshot\"}} 1");
    assert!(metrics.contains(&parked), "{metrics}");
    let running = format!("skywarden_poll_jobs_parked{{account=\"{account_id}\",source=\"regions\"}} 0");
    assert!(metrics.contains(&running), "{metrics}");
    let problems = metrics
        .lines()
        .find_map(|l| l.strip_prefix(&format!("skywarden_posture_check_problems{{account=\"{account_id}\"}} ")))
        .unwrap_or_else(|| panic!("no posture problems for {account_id}: {metrics}"));
    assert!(problems.parse::<i64>().unwrap() >= 1, "the range check panicked on a security group: {problems}");
}

// ---------------------------------------------------------------------------------------------
// Notifications: two senders racing.

fn loopback() -> NetworkPolicy {
    NetworkPolicy::allowing("127.0.0.1/32").unwrap()
}

fn login_alert(principal: &str) -> Finding {
    Finding {
        policy_id: "aws-account-hijacking-attempt".into(),
        title: "Console login from a country new for the user".into(),
        severity: Severity::High,
        account_id: "111122223333".into(),
        subject: principal.into(),
        dedup_window: chrono::Duration::hours(24),
        principal: Some(principal.into()),
        source_ip: Some("203.0.113.10".parse().unwrap()),
        country: Some("RU".into()),
        resources: vec![],
        evidence_id: format!("evt-{principal}"),
        time: "2026-11-12T03:00:00Z".parse().unwrap(),
        mitre: vec![Mitre::new("TA0001", "T1078.004")],
        session_key: None,
        details: json!({}),
    }
}

/// Requests a receiver got, by the alert they announce (`alert.opened` only).
fn opened_by_alert(received: &[crate::support::receiver::Received]) -> BTreeMap<String, usize> {
    let mut counts = BTreeMap::new();
    for request in received {
        let body = request.json();
        assert_eq!(body["event"], "alert.opened", "{body}");
        *counts.entry(body["alert"]["id"].as_str().unwrap().to_owned()).or_default() += 1;
    }
    counts
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_senders_racing_for_one_outbox_row_send_it_once() {
    let db = TestDb::new().await;
    let receiver = Receiver::start(Answer::status(204, "")).await;
    let key = Arc::new(SecretKey::generate());
    let spec = ChannelSpec {
        name: "soc-hook".into(),
        kind: ChannelKind::Webhook,
        settings: json!({"url": receiver.url("/hook")}),
        secrets: BTreeMap::from([("signing_secret".to_string(), SecretInput::Value(Secret::new("whsec-race")))]),
        enabled: true,
    };
    channels::create(&db.pool, &spec, &key, &loopback()).await.unwrap();
    let route: RouteSpec = serde_json::from_value(json!({"name": "all", "channel": "soc-hook"})).unwrap();
    routes::create(&db.pool, &route).await.unwrap();
    let options = SenderOptions { public_url: "https://skywarden.example.com".into(), ..Default::default() };
    let sender = || Sender::new(db.pool.clone(), key.clone(), SafeHttpClient::new(loopback()), options.clone());
    let (a, b) = (sender(), sender());

    const ROUNDS: usize = 10;
    for round in 0..ROUNDS {
        outbox::record_alerts(&db.pool, &[login_alert(&format!("user-{round}"))]).await.unwrap();
        // Both senders look for due rows at the same moment, on threads of their own.
        let start = Arc::new(tokio::sync::Barrier::new(2));
        let race = |sender: Sender| {
            let start = start.clone();
            tokio::spawn(async move {
                start.wait().await;
                sender.deliver_due().await.unwrap()
            })
        };
        let (first, second) = (race(a.clone()), race(b.clone()));
        let (first, second) = (first.await.unwrap(), second.await.unwrap());
        assert_eq!(first.delivered + second.delivered, 1, "round {round}: {first:?} {second:?}");
    }
    let received = receiver.wait_for(ROUNDS).await;
    let counts = opened_by_alert(&received);
    assert_eq!(counts.len(), ROUNDS, "{counts:?}");
    assert!(counts.values().all(|n| *n == 1), "an alert was sent twice: {counts:?}");
    let rows: Vec<(String, i32)> =
        sqlx::query_as("SELECT state, attempts FROM notification_outbox").fetch_all(&db.pool).await.unwrap();
    assert_eq!(rows, vec![("delivered".to_owned(), 1); ROUNDS]);
}

// ---------------------------------------------------------------------------------------------
// Imports into a database that refuses writes.

fn incident(part: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("samples/incident").join(part)
}

/// What an import leaves: events, flow records, and alerts by policy.
async fn stored(pool: &PgPool) -> (i64, i64, Vec<(String, i64)>) {
    let events = sqlx::query_scalar("SELECT count(DISTINCT (account_id, event_time, event_id)) FROM cloudtrail_events")
        .fetch_one(pool)
        .await
        .unwrap();
    let flows = sqlx::query_scalar("SELECT count(*) FROM flow_records").fetch_one(pool).await.unwrap();
    let alerts = sqlx::query_as(
        "SELECT policy_id, count(*) FROM alerts WHERE account_id = '111122223333' GROUP BY 1 ORDER BY 1",
    )
    .fetch_all(pool)
    .await
    .unwrap();
    (events, flows, alerts)
}

fn import(url: &str, paths: &[PathBuf]) -> Output {
    skywarden_command(url).args(["import", "--json"]).args(paths).output().expect("running skywarden import")
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// Sets (or resets) `default_transaction_read_only` on the test's database, from a session
/// that can still write.
async fn set_read_only(db: &TestDb, on: bool) {
    let mut conn = db.pool.acquire().await.unwrap();
    sqlx::query("SET default_transaction_read_only = off").execute(&mut *conn).await.unwrap();
    let name: String = sqlx::query_scalar("SELECT current_database()").fetch_one(&mut *conn).await.unwrap();
    let change = if on { "SET default_transaction_read_only = on" } else { "RESET default_transaction_read_only" };
    sqlx::query(&format!("ALTER DATABASE {name} {change}")).execute(&mut *conn).await.unwrap();
}

/// The sample incident's trail imported once into a clean database: what it leaves.
async fn clean_trail_import(trail: &[PathBuf]) -> (i64, i64, Vec<(String, i64)>) {
    let reference = TestDb::new().await;
    let clean = import(&reference.url, trail);
    assert!(clean.status.success(), "{}", stderr(&clean));
    let expected = stored(&reference.pool).await;
    assert!(expected.0 > 2000 && expected.2.len() >= 5, "{expected:?}");
    expected
}

#[tokio::test]
async fn an_import_into_a_read_only_database_fails_naming_the_cause_and_a_rerun_is_exact() {
    let trail = vec![incident("cloudtrail")];
    let expected = clean_trail_import(&trail).await;
    let db = TestDb::new().await;
    set_read_only(&db, true).await;
    let refused = import(&db.url, &trail);
    assert!(!refused.status.success());
    assert!(stderr(&refused).contains("read-only transaction"), "{}", stderr(&refused));
    set_read_only(&db, false).await;
    assert_eq!(db.count("SELECT count(*) FROM cloudtrail_events").await, 0);

    let rerun = import(&db.url, &trail);
    assert!(rerun.status.success(), "{}", stderr(&rerun));
    let summary: Value = serde_json::from_slice(&rerun.stdout).unwrap();
    assert_eq!((summary["cloudtrail_events"].as_i64(), summary["duplicates"].as_i64()), (Some(expected.0), Some(0)));
    assert_eq!(stored(&db.pool).await, expected, "the same events and alerts as one clean import");
}

#[tokio::test]
async fn an_import_that_fills_the_disk_half_way_fails_naming_the_cause_and_a_rerun_is_exact() {
    let trail = vec![incident("cloudtrail")];
    let expected = clean_trail_import(&trail).await;
    let db = TestDb::new().await;
    // PostgreSQL's own error for a full disk (SQLSTATE 53100, as `could not extend file`
    // raises it) once the import reaches the attack day; the files before it are committed.
    sqlx::raw_sql(
        r#"CREATE FUNCTION disk_full() RETURNS trigger LANGUAGE plpgsql AS $$
           BEGIN
             IF NEW.event_time >= '2026-11-12' THEN
               RAISE EXCEPTION 'could not extend file "base/16384/16999": No space left on device'
                 USING ERRCODE = 'disk_full', HINT = 'Check free disk space.';
             END IF;
             RETURN NEW;
           END $$;
           CREATE TRIGGER disk_full BEFORE INSERT ON cloudtrail_events FOR EACH ROW EXECUTE FUNCTION disk_full();"#,
    )
    .execute(&db.pool)
    .await
    .unwrap();
    let full = import(&db.url, &trail);
    assert!(!full.status.success());
    assert!(stderr(&full).contains("No space left on device"), "{}", stderr(&full));
    let kept = db.count("SELECT count(*) FROM cloudtrail_events").await;
    assert!((1..expected.0).contains(&kept), "the days before the attack were stored: {kept}");
    sqlx::raw_sql("DROP TRIGGER disk_full ON cloudtrail_events").execute(&db.pool).await.unwrap();

    let rerun = import(&db.url, &trail);
    assert!(rerun.status.success(), "{}", stderr(&rerun));
    let summary: Value = serde_json::from_slice(&rerun.stdout).unwrap();
    assert_eq!(summary["cloudtrail_events"].as_i64().unwrap(), expected.0 - kept, "{summary}");
    assert_eq!(summary["duplicates"].as_i64().unwrap(), kept, "{summary}");
    let (events, flows, alerts) = stored(&db.pool).await;
    assert_eq!((events, flows), (expected.0, expected.1), "every event once");
    // The events the failed run stored were never run through detection by it: the rerun
    // must cover them too, or their alerts are lost.
    assert_eq!(alerts, expected.2, "the same alerts as one clean import");
}

#[tokio::test]
async fn a_failed_detection_run_shows_in_metrics_until_a_run_succeeds_and_covers_its_events() {
    let trail = vec![incident("cloudtrail")];
    let expected = clean_trail_import(&trail).await;
    let db = TestDb::new().await;
    let (_, token) = skywarden::auth::create(&db.pool, "viewer", skywarden::auth::Role::Viewer).await.unwrap();
    assert_eq!(crate::api::call(&db, "GET", "/api/v1/detection/health", None, None).await.0.as_u16(), 401);
    // Events store, alerts do not: detection fails after the import, as it would after a poll.
    sqlx::raw_sql(
        r#"CREATE FUNCTION refuse_alerts() RETURNS trigger LANGUAGE plpgsql AS $$
           BEGIN RAISE EXCEPTION 'alerts refused by the test'; END $$;
           CREATE TRIGGER refuse_alerts BEFORE INSERT ON alerts FOR EACH ROW EXECUTE FUNCTION refuse_alerts();"#,
    )
    .execute(&db.pool)
    .await
    .unwrap();
    for run in 1..=2 {
        let failed = import(&db.url, &trail);
        assert!(!failed.status.success());
        assert!(stderr(&failed).contains("alerts refused by the test"), "{}", stderr(&failed));
        let health = skywarden::detect::health::read(&db.pool).await.unwrap();
        assert_eq!(health.consecutive_failures, run, "{health:?}");
        assert!(
            health.failing_since.is_some() && health.last_error.as_deref().unwrap_or("").contains("alerts refused")
        );
        let metrics = scrape_metrics(&db.pool).await;
        assert!(metrics.contains(&format!("skywarden_detection_consecutive_failures {run}\n")), "{metrics}");
        let text = String::from_utf8_lossy(&db.skywarden(&["accounts", "status"]).stdout).into_owned();
        assert!(text.starts_with("detection: FAILING since ") && text.contains("alerts refused by the test"), "{text}");
        let json = String::from_utf8_lossy(&db.skywarden(&["accounts", "status", "--json"]).stdout).into_owned();
        let first: Value = serde_json::from_str(json.lines().next().unwrap()).unwrap();
        assert_eq!(first["detection"]["consecutive_failures"], run, "{json}");
        let (status, health) = crate::api::call(&db, "GET", "/api/v1/detection/health", Some(&token), None).await;
        assert_eq!((status.as_u16(), &health["consecutive_failures"]), (200, &Value::from(run)), "{health}");
        assert!(health["last_error"].as_str().unwrap().contains("alerts refused by the test"), "{health}");
    }
    sqlx::raw_sql("DROP TRIGGER refuse_alerts ON alerts").execute(&db.pool).await.unwrap();

    let rerun = import(&db.url, &trail);
    assert!(rerun.status.success(), "{}", stderr(&rerun));
    assert_eq!(stored(&db.pool).await, expected, "the rerun raised every alert the failed runs missed");
    let health = skywarden::detect::health::read(&db.pool).await.unwrap();
    assert_eq!((health.consecutive_failures, health.failing_since, health.last_error), (0, None, None));
    assert!(health.last_success_at.is_some());
    let metrics = scrape_metrics(&db.pool).await;
    assert!(metrics.contains("skywarden_detection_consecutive_failures 0\n"), "{metrics}");
    assert!(metrics.contains("skywarden_detection_last_success_timestamp_seconds "), "{metrics}");
    let text = String::from_utf8_lossy(&db.skywarden(&["accounts", "status"]).stdout).into_owned();
    assert!(text.starts_with("detection: ok, last run "), "{text}");
}

// ---------------------------------------------------------------------------------------------
// PostgreSQL killed and restarted under `serve`.

/// A private PostgreSQL cluster in a folder of its own (socket only), stopped when dropped.
struct PrivateCluster {
    cluster: EmbeddedPostgres,
    _dir: tempfile::TempDir,
}

impl PrivateCluster {
    async fn start() -> Self {
        let dir = tempfile::tempdir().unwrap();
        // As root the cluster runs as `postgres`, which must enter the folder.
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        let mut cluster = EmbeddedPostgres::new(dir.path()).expect("PostgreSQL binaries");
        cluster.ensure_running().await.expect("starting a private cluster");
        Self { cluster, _dir: dir }
    }

    fn url(&self) -> String {
        self.cluster.database_url(skywarden::db::embedded::DATABASE)
    }

    /// Kills the server as a crash would: SIGQUIT to the postmaster is PostgreSQL's immediate
    /// shutdown (no checkpoint; the next start recovers from the WAL).
    async fn kill(&self) {
        let pid_file = std::fs::read_to_string(self.cluster.cluster_dir().join("postmaster.pid")).unwrap();
        let pid = pid_file.lines().next().unwrap().trim().to_owned();
        assert!(Command::new("kill").args(["-QUIT", &pid]).status().unwrap().success());
        let cluster = &self.cluster;
        wait_until("PostgreSQL to die", || async { !cluster.is_running().await.unwrap() }).await;
    }
}

impl Drop for PrivateCluster {
    fn drop(&mut self) {
        let cluster = &mut self.cluster;
        let stopped = std::thread::scope(|scope| {
            scope
                .spawn(|| {
                    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().ok()?;
                    runtime.block_on(cluster.stop()).ok()
                })
                .join()
        });
        if !matches!(stopped, Ok(Some(()))) {
            eprintln!("NOTE: the private PostgreSQL cluster could not be stopped");
        }
    }
}

/// One HTTP/1.1 GET over a plain TCP connection: (status code, body).
fn http_get(address: &str, path: &str) -> std::io::Result<(u16, String)> {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(address)?;
    stream.set_read_timeout(Some(Duration::from_secs(30)))?;
    write!(stream, "GET {path} HTTP/1.1\r\nHost: {address}\r\nConnection: close\r\n\r\n")?;
    let mut response = String::new();
    stream.read_to_string(&mut response)?;
    let code = response.split_whitespace().nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
    let body = response.split_once("\r\n\r\n").map(|(_, b)| b.to_string()).unwrap_or_default();
    Ok((code, body))
}

async fn wait_for_status(address: &str, path: &str, code: u16) {
    wait_until(&format!("{path} to answer {code}"), || async {
        let (address, path) = (address.to_owned(), path.to_owned());
        let answer = tokio::task::spawn_blocking(move || http_get(&address, &path)).await.unwrap();
        answer.is_ok_and(|(got, _)| got == code)
    })
    .await;
}

fn free_address() -> String {
    format!("127.0.0.1:{}", std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port())
}

/// Notifications of every alert of the sample account to one webhook.
fn write_notifications(dir: &Path, receiver: &Receiver) -> PathBuf {
    let path = dir.join("notifications.yaml");
    let text = format!(
        "channels:\n  - name: soc-hook\n    kind: webhook\n    settings:\n      url: {}\n    secrets:\n      \
         signing_secret: env:TEST_FAULTS_SIGNING_SECRET\nroutes:\n  - name: everything\n    channel: soc-hook\n    \
         accounts: [\"111122223333\"]\n",
        receiver.url("/hook")
    );
    std::fs::write(&path, text).unwrap();
    path
}

/// Outbox rows not delivered yet.
async fn undelivered(pool: &PgPool) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM notification_outbox WHERE state <> 'delivered'")
        .fetch_one(pool)
        .await
        .unwrap()
}

#[tokio::test]
async fn postgresql_killed_under_serve_makes_it_unready_and_it_recovers_losing_and_repeating_nothing() {
    let days = incident("cloudtrail/AWSLogs/111122223333/CloudTrail/us-east-1/2026/11");
    let before: Vec<PathBuf> = (1..=11).map(|d| days.join(format!("{d:02}"))).collect();
    let after: Vec<PathBuf> =
        (12..=14).map(|d| days.join(format!("{d:02}"))).chain([incident("vpcflowlogs")]).collect();
    // The same data imported in one clean database, for what a full run leaves.
    let reference = TestDb::new().await;
    for part in [&before, &after] {
        let output = import(&reference.url, part);
        assert!(output.status.success(), "{}", stderr(&output));
    }
    let expected = stored(&reference.pool).await;

    let cluster = PrivateCluster::start().await;
    let url = cluster.url();
    let dir = tempfile::tempdir().unwrap();
    let receiver = Receiver::start(Answer::status(204, "")).await;
    let config = write_notifications(dir.path(), &receiver);
    let moto = fake::moto_url().await;
    let command = |args: &[&str]| {
        let mut command = skywarden_command(&url);
        command
            .args(args)
            .env("SKYWARDEN_NOTIFICATIONS", &config)
            .env("SKYWARDEN_NOTIFY_ALLOW_NETWORKS", "127.0.0.1/32")
            .env("SKYWARDEN_SECRET_KEY_FILE", dir.path().join("secret.key"))
            .env("TEST_FAULTS_SIGNING_SECRET", "whsec-faults")
            .env("SKYWARDEN_NOTIFY_RETRY_BASE", "200ms");
        for (key, value) in fake::aws_env(moto) {
            command.env(key, value);
        }
        command
    };
    let run = |args: &[&str]| command(args).output().unwrap();
    let applied = run(&["notifications", "apply"]);
    assert!(applied.status.success(), "{}", stderr(&applied));
    let first =
        run(&[&["import", "--json"][..], &before.iter().map(|p| p.to_str().unwrap()).collect::<Vec<_>>()].concat());
    assert!(first.status.success(), "{}", stderr(&first));
    // Pollers have work: an account in the AWS emulator.
    let account_id = fake::random_account_id();
    let role = format!("arn:aws:iam::{account_id}:role/SkywardenReadOnly");
    let added = run(&["accounts", "add", "--role-arn", &role, "--regions", "us-east-1", "--no-test"]);
    assert!(added.status.success(), "{}", stderr(&added));

    let (address, metrics) = (free_address(), free_address());
    let log = dir.path().join("serve.log");
    let _serve = KillOnDrop(
        command(&["serve", "--listen", &address, "--metrics-listen", &metrics])
            .env("RUST_LOG", "info")
            .stdout(std::process::Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap(),
    );
    wait_for_status(&address, "/readyz", 200).await;
    let pool = sqlx::postgres::PgPoolOptions::new().max_connections(2).connect(&url).await.unwrap();
    wait_until("the alerts of the first import to be delivered", || async {
        undelivered(&pool).await == 0 && !receiver.received().is_empty()
    })
    .await;
    // The regions job ran once and is idle: nothing of it is in flight at the kill.
    let regions_done = || async {
        sqlx::query_scalar::<_, bool>(
            "SELECT last_success_at IS NOT NULL AND lease_owner IS NULL FROM poll_jobs WHERE account_id = $1 AND source = 'regions'",
        )
        .bind(&account_id)
        .fetch_one(&pool)
        .await
        .unwrap_or(false)
    };
    wait_until("the regions job's first run", regions_done).await;
    pool.close().await;

    cluster.kill().await;
    wait_for_status(&address, "/readyz", 503).await;
    assert_eq!(http_get(&address, "/healthz").unwrap().0, 200, "the process itself is up");
    let paths: Vec<&str> = after.iter().map(|p| p.to_str().unwrap()).collect();
    let refused = run(&[&["import", "--json"][..], &paths].concat());
    assert!(!refused.status.success());
    assert!(stderr(&refused).contains("cannot connect to PostgreSQL"), "{}", stderr(&refused));

    let mut cluster = cluster;
    cluster.cluster.ensure_running().await.expect("restarting PostgreSQL");
    wait_for_status(&address, "/readyz", 200).await;
    let (code, scrape) = http_get(&metrics, "/metrics").unwrap();
    assert!(code == 200 && scrape.contains("skywarden_up 1"), "{code}: {scrape}");
    let rerun = run(&[&["import", "--json"][..], &paths].concat());
    assert!(rerun.status.success(), "{}", stderr(&rerun));

    let pool = sqlx::postgres::PgPoolOptions::new().max_connections(2).connect(&url).await.unwrap();
    assert_eq!(stored(&pool).await, expected, "the same events, flows and alerts as a run without the outage");
    let alerts: i64 = expected.2.iter().map(|(_, n)| n).sum();
    wait_until("every alert's notification", || async {
        undelivered(&pool).await == 0 && receiver.received().len() >= alerts as usize
    })
    .await;
    let counts = opened_by_alert(&receiver.received());
    assert_eq!(counts.len() as i64, alerts, "{counts:?}");
    assert!(counts.values().all(|n| *n == 1), "a notification was sent twice: {counts:?}");

    // The pollers came back by themselves: a run asked for now is done by the same `serve`.
    let asked = db_now(&pool).await;
    let output = run(&["accounts", "poll-now", "--account", &account_id, "--source", "regions"]);
    assert!(output.status.success(), "{}", stderr(&output));
    wait_until("the regions job to run after the outage", || async {
        sqlx::query_scalar::<_, bool>(
            "SELECT last_success_at > $2 FROM poll_jobs WHERE account_id = $1 AND source = 'regions'",
        )
        .bind(&account_id)
        .bind(asked)
        .fetch_one(&pool)
        .await
        .unwrap_or(false)
    })
    .await;
    pool.close().await;
    let log = std::fs::read_to_string(&log).unwrap();
    assert!(!log.contains("whsec-faults"), "the signing secret reached the log");
}
