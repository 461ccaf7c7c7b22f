//! Control over the pollers: intervals per source (at onboarding and later), "poll now" through
//! the API (analysts and admins, audit-logged) and the dashboard's button, a run asked for while
//! a job runs, and the status that shows last success, next run, lag and last error.

use std::time::Duration;

use axum::http::StatusCode;
use chrono::Utc;
use serde_json::{Value, json};

use skywarden::accounts::{self, AccountChange, NewAccount, PollIntervals};
use skywarden::auth::{self, Role};
use skywarden::pollers::{RunOutcome, Source, jobs};

use crate::api::call;
use crate::support::browser::{Browser, artifacts_dir};
use crate::support::{TestDb, dashboard};

const ACCOUNT: &str = "111122223333";

/// The account's enabled jobs as (region, source, target, interval), sorted.
async fn jobs_of(db: &TestDb) -> Vec<(String, String, String, i32)> {
    sqlx::query_as(
        "SELECT region, source, target, interval_seconds FROM poll_jobs WHERE account_id = $1 AND enabled
         ORDER BY region, source, target",
    )
    .bind(ACCOUNT)
    .fetch_all(&db.pool)
    .await
    .unwrap()
}

fn row(region: &str, source: &str, target: &str, interval: i32) -> (String, String, String, i32) {
    (region.to_owned(), source.to_owned(), target.to_owned(), interval)
}

#[tokio::test]
async fn intervals_are_chosen_per_source_and_regions_restricted_through_the_api() {
    let db = TestDb::new().await;
    let (_, analyst) = auth::create(&db.pool, "tier-1", Role::Analyst).await.unwrap();
    let (_, admin) = auth::create(&db.pool, "cloud-team", Role::Admin).await.unwrap();
    let role_arn = format!("arn:aws:iam::{ACCOUNT}:role/SkywardenReadOnly");

    let bad = json!({"role_arn": role_arn, "intervals": {"cloudtrail-lookup": 5}});
    let (status, body) = call(&db, "POST", "/api/v1/accounts", Some(&admin), Some(bad)).await;
    assert_eq!((status, body["field"].as_str()), (StatusCode::BAD_REQUEST, Some("intervals")), "{body}");
    let bad = json!({"role_arn": role_arn, "intervals": {"lookups": 60}});
    let (status, body) = call(&db, "POST", "/api/v1/accounts", Some(&admin), Some(bad)).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert!(body["error"].as_str().unwrap().contains("not a poll source"), "{body}");

    // No regions named: every enabled region, once discovered.
    let onboarding = json!({"role_arn": role_arn, "intervals": {"cloudtrail-lookup": 60, "config-snapshot": 3600}});
    let (status, created) = call(&db, "POST", "/api/v1/accounts", Some(&admin), Some(onboarding)).await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    assert_eq!(created["regions"], json!([]));
    assert_eq!(created["intervals"], json!({"cloudtrail-lookup": 60, "config-snapshot": 3600}));
    assert_eq!(jobs_of(&db).await, [row("global", "config-snapshot", "", 3600), row("global", "regions", "", 86_400)]);

    // A restriction to eu-west-1: its jobs at the chosen intervals, and us-east-1's global events.
    let uri = format!("/api/v1/accounts/{ACCOUNT}");
    let change = json!({"regions": ["eu-west-1"]});
    assert_eq!(call(&db, "PATCH", &uri, Some(&analyst), Some(change.clone())).await.0, StatusCode::FORBIDDEN);
    let (status, account) = call(&db, "PATCH", &uri, Some(&admin), Some(change)).await;
    assert_eq!(status, StatusCode::OK, "{account}");
    assert_eq!(account["polled_regions"], json!(["eu-west-1"]));
    assert_eq!(
        jobs_of(&db).await,
        [
            row("eu-west-1", "cloudtrail-lookup", "", 60),
            row("eu-west-1", "config-snapshot", "", 3600),
            row("global", "config-snapshot", "", 3600),
            row("global", "regions", "", 86_400),
            row("us-east-1", "cloudtrail-lookup", "global-services", 60),
        ]
    );
    let (status, body) = call(&db, "PATCH", &uri, Some(&admin), Some(json!({"regions": ["moon-1"]}))).await;
    assert_eq!((status, body["field"].as_str()), (StatusCode::BAD_REQUEST, Some("regions")), "{body}");

    // New intervals apply at once: a job due in an hour is due within the new minute.
    let (status, _) =
        call(&db, "PATCH", &uri, Some(&admin), Some(json!({"intervals": {"config-snapshot": 120}}))).await;
    assert_eq!(status, StatusCode::OK);
    let snapshot_jobs = jobs_of(&db).await.into_iter().filter(|j| j.1 == "config-snapshot").collect::<Vec<_>>();
    assert!(snapshot_jobs.iter().all(|j| j.3 == 120), "{snapshot_jobs:?}");
    let lookup = jobs_of(&db).await.into_iter().find(|j| j.1 == "cloudtrail-lookup").unwrap();
    assert_eq!(lookup.3, 300, "intervals replace the earlier choices: the lookup is back to its default");
    let latest: chrono::DateTime<Utc> = sqlx::query_scalar(
        "SELECT max(next_run_at) FROM poll_jobs WHERE account_id = $1 AND source = 'config-snapshot'",
    )
    .bind(ACCOUNT)
    .fetch_one(&db.pool)
    .await
    .unwrap();
    assert!(latest <= Utc::now() + chrono::Duration::seconds(121), "{latest}");

    // Lifting the restriction retires eu-west-1's jobs until a discovery names the regions.
    let (status, account) = call(&db, "PATCH", &uri, Some(&admin), Some(json!({"regions": []}))).await;
    assert_eq!((status, account["regions"].clone()), (StatusCode::OK, json!([])));
    let retired = db.count("SELECT count(*) FROM poll_jobs WHERE region = 'eu-west-1' AND NOT enabled").await;
    assert_eq!(retired, 2, "retired, not deleted: their checkpoints stay");
    let log = skywarden::auth::audit::list(&db.pool, None, Some("account.configure"), 10).await.unwrap();
    assert_eq!(log.len(), 3);
}

#[tokio::test]
async fn poll_now_is_for_analysts_and_admins_and_is_audit_logged() {
    let db = TestDb::new().await;
    let (_, viewer) = auth::create(&db.pool, "wall-screen", Role::Viewer).await.unwrap();
    let (analyst_id, analyst) = auth::create(&db.pool, "tier-1", Role::Analyst).await.unwrap();
    let new = NewAccount {
        role_arn: format!("arn:aws:iam::{ACCOUNT}:role/SkywardenReadOnly"),
        regions: vec!["eu-west-1".into()],
        ..Default::default()
    };
    accounts::onboard(&db.pool, &new, &PollIntervals::default()).await.unwrap();
    // Nothing is due: every job ran a moment ago.
    sqlx::query(
        "UPDATE poll_jobs SET next_run_at = now() + interval '1 hour', last_success_at = now() - interval '1 minute'",
    )
    .execute(&db.pool)
    .await
    .unwrap();
    let uri = format!("/api/v1/accounts/{ACCOUNT}/poll-now");
    assert_eq!(call(&db, "POST", &uri, None, None).await.0, StatusCode::UNAUTHORIZED);
    assert_eq!(call(&db, "POST", &uri, Some(&viewer), None).await.0, StatusCode::FORBIDDEN);
    let (status, body) = call(&db, "POST", &uri, Some(&analyst), Some(json!({"source": "lookups"}))).await;
    assert_eq!((status, body["field"].as_str()), (StatusCode::BAD_REQUEST, Some("source")), "{body}");
    let (status, body) = call(&db, "POST", "/api/v1/accounts/999999999999/poll-now", Some(&analyst), None).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");

    let (status, body) = call(&db, "POST", &uri, Some(&analyst), Some(json!({"source": "regions"}))).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body, json!({"account_id": ACCOUNT, "source": "regions", "jobs": 1}));
    let (status, body) = call(&db, "POST", &uri, Some(&analyst), None).await;
    assert_eq!((status, body["jobs"].as_u64()), (StatusCode::OK, Some(5)), "{body}");

    // The status shows every job due now, with its last success, lag and next run.
    let (_, statuses) = call(&db, "GET", &format!("/api/v1/accounts/{ACCOUNT}/status"), Some(&viewer), None).await;
    for job in statuses.as_array().unwrap() {
        let next: chrono::DateTime<Utc> = serde_json::from_value(job["next_run_at"].clone()).unwrap();
        assert!(next <= Utc::now(), "{job}");
        assert!(job["run_requested_at"].is_string() && job["last_success_at"].is_string(), "{job}");
        assert!(job.get("lag_seconds").is_some() && job.get("last_error").is_some(), "{job}");
    }
    let log = skywarden::auth::audit::list(&db.pool, None, Some("account.poll_now"), 10).await.unwrap();
    assert_eq!(log.len(), 2);
    let actor = format!("token:{analyst_id}");
    assert_eq!((log[0].actor.as_str(), log[0].target.as_deref()), (actor.as_str(), Some(ACCOUNT)), "{:?}", log[0]);
    assert_eq!(log[0].details, json!({"source": null, "jobs": 5}));
}

#[tokio::test]
async fn a_job_asked_for_while_it_runs_runs_again_when_it_ends() {
    let db = TestDb::new().await;
    let new = NewAccount {
        role_arn: format!("arn:aws:iam::{ACCOUNT}:role/SkywardenReadOnly"),
        regions: vec!["eu-west-1".into()],
        ..Default::default()
    };
    accounts::onboard(&db.pool, &new, &PollIntervals::default()).await.unwrap();
    sqlx::query("UPDATE poll_jobs SET next_run_at = now() + interval '1 hour' WHERE source <> 'regions'")
        .execute(&db.pool)
        .await
        .unwrap();
    let next_of_regions = async || -> chrono::DateTime<Utc> {
        sqlx::query_scalar("SELECT next_run_at FROM poll_jobs WHERE source = 'regions'")
            .fetch_one(&db.pool)
            .await
            .unwrap()
    };

    // Not asked: the next run is an interval away.
    let job = jobs::claim_due(&db.pool, "worker-a", Duration::from_secs(60)).await.unwrap().expect("the regions job");
    job.finish(&db.pool, &Ok(RunOutcome::default())).await.unwrap();
    assert!(next_of_regions().await > Utc::now() + chrono::Duration::hours(23));

    // Asked while running: due again as soon as it ends, and only once.
    jobs::run_now(&db.pool, ACCOUNT, Some(Source::Regions)).await.unwrap();
    let job = jobs::claim_due(&db.pool, "worker-a", Duration::from_secs(60)).await.unwrap().expect("due again");
    assert_eq!(jobs::run_now(&db.pool, ACCOUNT, Some(Source::Regions)).await.unwrap(), 1);
    job.finish(&db.pool, &Ok(RunOutcome::default())).await.unwrap();
    assert!(next_of_regions().await <= Utc::now());
    let job = jobs::claim_due(&db.pool, "worker-a", Duration::from_secs(60)).await.unwrap().expect("the asked-for run");
    job.finish(&db.pool, &Ok(RunOutcome::default())).await.unwrap();
    assert!(next_of_regions().await > Utc::now() + chrono::Duration::hours(23));

    // The library's settings change, as the CLI makes it.
    let mut intervals = PollIntervals::default();
    intervals.set_from_text("regions=6h").unwrap();
    let change = AccountChange { intervals: Some(intervals), ..Default::default() };
    let account = accounts::configure(&db.pool, ACCOUNT, &change).await.unwrap();
    assert_eq!(account.intervals.get(Source::Regions), Duration::from_secs(6 * 3600));
    assert!(next_of_regions().await <= Utc::now() + chrono::Duration::hours(6) + chrono::Duration::seconds(5));
}

async fn sign_in(browser: &Browser, base: &str, user: &str) {
    dashboard::sign_in(browser, base, user).await;
    browser.wait_for_text("main h1", "Overview").await;
}

#[tokio::test]
async fn the_accounts_page_shows_each_job_and_polls_now_for_analysts() {
    let db = TestDb::new().await;
    let new = NewAccount {
        role_arn: format!("arn:aws:iam::{ACCOUNT}:role/SkywardenReadOnly"),
        name: Some("production".into()),
        regions: vec!["eu-west-1".into()],
        ..Default::default()
    };
    accounts::onboard(&db.pool, &new, &PollIntervals::default()).await.unwrap();
    sqlx::query(
        "UPDATE poll_jobs SET next_run_at = now() + interval '10 minutes', last_success_at = now() - interval '5 minutes',
                covered_until = now() - interval '6 minutes'",
    )
    .execute(&db.pool)
    .await
    .unwrap();
    sqlx::query("UPDATE poll_jobs SET last_error = 'ec2:DescribeRegions in us-east-1 failed: AccessDenied', consecutive_failures = 2 WHERE source = 'regions'")
        .execute(&db.pool)
        .await
        .unwrap();
    // The IAM snapshot is parked after panicking three times in a row (as a worker parks it).
    sqlx::query(
        "UPDATE poll_jobs SET last_error = 'the run panicked (a bug; please report it): index out of bounds',
                consecutive_failures = 3, consecutive_panics = 3, parked_at = now()
         WHERE source = 'config-snapshot' AND region = 'global'",
    )
    .execute(&db.pool)
    .await
    .unwrap();
    dashboard::add_user(&db, "ana", "analyst");
    dashboard::add_user(&db, "vic", "viewer");
    let dir = tempfile::tempdir().unwrap();
    let (_server, base) = dashboard::serve(&db, |serve| {
        serve.arg("--no-pollers").env("SKYWARDEN_SECRET_KEY_FILE", dir.path().join("secret.key"));
    })
    .await;

    let browser = Browser::start(artifacts_dir("poll-control")).await;
    sign_in(&browser, &base, "vic").await;
    browser.goto(&format!("{base}/#/accounts")).await;
    let panel = browser.wait_for_text(&format!("div[data-account='{ACCOUNT}']"), "production").await;
    assert!(panel.contains("restricted to eu-west-1"), "{panel}");
    let table = browser.text(&format!("div[data-account='{ACCOUNT}'] table")).await;
    for expected in [
        "Next run",
        "Last success",
        "Lag",
        "Last error",
        "in 10 min",
        "6 min",
        "AccessDenied (2 in a row)",
        "parked after 3 panics in a row",
        "panicked (a bug; please report it): index out of bounds (3 in a row)",
    ] {
        assert!(table.contains(expected), "{expected}: {table}");
    }
    assert_eq!(browser.count(&format!("div[data-account='{ACCOUNT}'] table .parked")).await, 1);
    browser.screenshot("accounts-parked-job").await;
    assert_eq!(browser.count("button.poll-now").await, 0, "viewers cannot poll now");

    sign_in(&browser, &base, "ana").await;
    browser.goto(&format!("{base}/#/accounts")).await;
    browser.click(&format!("button.poll-now[data-account='{ACCOUNT}']")).await;
    let result = browser.wait_for_text(&format!("#poll-result-{ACCOUNT}"), "due now").await;
    assert!(result.contains("5 jobs due now"), "{result}");
    browser.wait_for_text(&format!("div[data-account='{ACCOUNT}'] table"), "due now").await;
    browser.screenshot("accounts-poll-now").await;
    // "Poll now" un-parked the IAM snapshot too.
    assert_eq!(browser.count(&format!("div[data-account='{ACCOUNT}'] table .parked")).await, 0);
    assert_eq!(db.count("SELECT count(*) FROM poll_jobs WHERE parked_at IS NOT NULL").await, 0);
    let asked =
        db.count("SELECT count(*) FROM poll_jobs WHERE run_requested_at IS NOT NULL AND next_run_at <= now()").await;
    assert_eq!(asked, 5);
    let role: Value =
        browser.script(&format!("return document.getElementById('poll-result-{ACCOUNT}').getAttribute('role')")).await;
    assert_eq!(role, json!("status"), "the result is announced to screen readers");
    let log = skywarden::auth::audit::list(&db.pool, None, Some("account.poll_now"), 10).await.unwrap();
    assert_eq!(log.len(), 1);
    assert!(log[0].actor.contains("ana"), "{:?}", log[0]);
}

#[tokio::test]
async fn the_command_line_chooses_intervals_polls_now_and_shows_the_next_run() {
    let db = TestDb::new().await;
    let role = format!("arn:aws:iam::{ACCOUNT}:role/SkywardenReadOnly");
    let run = |args: &[&str]| {
        let output = db.skywarden(args);
        let text = format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
        (output.status.success(), text)
    };

    let (ok, text) =
        run(&["accounts", "add", "--role-arn", &role, "--poll-interval", "cloudtrail-lookup=5s", "--no-test"]);
    assert!(!ok && text.contains("outside 30 s"), "{text}");
    let (ok, text) = run(&[
        "accounts",
        "add",
        "--role-arn",
        &role,
        "--regions",
        "eu-west-1",
        "--poll-interval",
        "cloudtrail-lookup=2m",
        "--poll-interval",
        "config-snapshot=1h",
        "--no-test",
        "--json",
    ]);
    assert!(ok, "{text}");
    let added: Value = serde_json::from_str(text.lines().next().unwrap()).unwrap();
    assert_eq!(added["intervals"], json!({"cloudtrail-lookup": 120, "config-snapshot": 3600}));
    assert_eq!(
        jobs_of(&db).await,
        [
            row("eu-west-1", "cloudtrail-lookup", "", 120),
            row("eu-west-1", "config-snapshot", "", 3600),
            row("global", "config-snapshot", "", 3600),
            row("global", "regions", "", 86_400),
            row("us-east-1", "cloudtrail-lookup", "global-services", 120),
        ]
    );

    sqlx::query("UPDATE poll_jobs SET next_run_at = now() + interval '3 hours', last_error = 'denied', consecutive_failures = 1 WHERE source = 'regions'")
        .execute(&db.pool)
        .await
        .unwrap();
    let (ok, status) = run(&["accounts", "status", ACCOUNT]);
    assert!(ok, "{status}");
    let regions_line = status.lines().find(|l| l.contains(" regions")).unwrap();
    assert!(regions_line.contains("every 24h") && regions_line.contains("next run in 3h"), "{regions_line}");
    assert!(status.contains("last error (1 in a row): denied"), "{status}");
    assert!(status.contains("last success never") && status.contains("lag -"), "{status}");

    let (ok, text) = run(&["accounts", "poll-now", "--account", ACCOUNT, "--source", "regions"]);
    assert!(ok && text.contains("1 job(s) due now"), "{text}");
    let (ok, status) = run(&["accounts", "status", ACCOUNT]);
    assert!(ok && status.lines().find(|l| l.contains(" regions")).unwrap().contains("next run due now"), "{status}");
    let (ok, text) = run(&["accounts", "poll-now", "--source", "lookups"]);
    assert!(!ok && text.contains("not a poll source"), "{text}");
    let (ok, text) = run(&["accounts", "poll-now", "--json"]);
    assert!(ok, "{text}");
    assert_eq!(serde_json::from_str::<Value>(text.trim()).unwrap()["jobs"], 5);
    let (ok, text) = run(&["accounts", "poll-now", "--account", "999999999999"]);
    assert!(!ok && text.contains("not onboarded"), "{text}");

    let (ok, text) = run(&["accounts", "configure", ACCOUNT, "--all-regions", "--default-intervals"]);
    assert!(ok && text.contains("every enabled region") && text.contains("the defaults"), "{text}");
    assert_eq!(jobs_of(&db).await, [row("global", "config-snapshot", "", 900), row("global", "regions", "", 86_400)]);
    let (ok, text) = run(&["accounts", "configure", ACCOUNT]);
    assert!(!ok && text.contains("nothing to change"), "{text}");
}
