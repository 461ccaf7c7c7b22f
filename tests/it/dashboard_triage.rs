//! The on-call analyst's dashboard on the sample incident, in a real browser against
//! `skywarden serve`: the seed's four questions (who logged in from Ukraine, what did they do
//! next, which security group did they open, is it still open), each answered by clicking from
//! the overview with the clicks counted; sorting, filtering, bulk triage and snoozing of alerts;
//! what exfiltration and posture alerts show. Then the API behind it: 401, 403 and 400s naming
//! the field, all-or-nothing bulk changes, sort orders page by page, snoozes that run out.
//! Screenshots are kept in `target/test-artifacts/dashboard-triage/`.

use std::path::Path;

use axum::http::StatusCode;
use serde_json::{Value, json};

use crate::api::call;
use crate::support::browser::{Browser, artifacts_dir};
use crate::support::{KillOnDrop, TestDb, dashboard, sample};
use skywarden::auth::{self, Role};

const ALICE: &str = "arn:aws:iam::111122223333:user/alice";
const GROUP: &str = "sg-0a1b2c3d4e5f67890";

/// The sample incident (logs with countries, then its two configuration snapshots), and a user.
fn sample_incident(db: &TestDb, dir: &Path, user: Option<(&str, &str)>) {
    sample::import_incident(db, dir);
    sample::import_snapshots(db);
    if let Some((name, role)) = user {
        dashboard::add_user(db, name, role);
    }
}

async fn serve(db: &TestDb) -> (KillOnDrop, String) {
    dashboard::serve(db, |serve| {
        serve.args(["--no-pollers", "--no-notifications"]);
    })
    .await
}

/// The browser, and the clicks made since the last `back_to_overview`.
struct Analyst {
    browser: Browser,
    base: String,
    clicks: usize,
}

impl Analyst {
    async fn sign_in(base: &str, user: &str) -> Self {
        let browser = Browser::start(artifacts_dir("dashboard-triage")).await;
        dashboard::sign_in(&browser, base, user).await;
        browser.wait_for_text("main h1", "Overview").await;
        Self { browser, base: base.to_string(), clicks: 0 }
    }

    /// Back on the overview, the click count at zero.
    async fn back_to_overview(&mut self) {
        self.browser.goto(&format!("{}/#/overview", self.base)).await;
        self.browser.wait_for_text("main h1", "Overview").await;
        self.browser.find("main table").await;
        self.clicks = 0;
    }

    async fn click(&mut self, css: &str) {
        self.browser.click(css).await;
        self.clicks += 1;
    }
}

/// `main` rows of a table as their cells' text.
async fn rows(browser: &Browser, table: &str) -> Vec<Vec<String>> {
    let script = format!(
        "return [...document.querySelectorAll('{table} tbody tr')].map(r => [...r.cells].map(c => c.textContent.trim()))"
    );
    serde_json::from_value(browser.script(&script).await).unwrap()
}

/// The clock hours the overview's default period touches: the week up to just after the newest
/// event, from the start of its first hour.
async fn clock_hours_of_the_week(db: &TestDb) -> usize {
    let hours: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM generate_series(
             date_trunc('hour', (SELECT max(event_time) FROM cloudtrail_events) + interval '1 second' - interval '7 days'),
             (SELECT max(event_time) FROM cloudtrail_events), interval '1 hour')",
    )
    .fetch_one(&db.pool)
    .await
    .unwrap();
    hours as usize
}

#[tokio::test]
async fn the_on_call_analyst_answers_the_four_questions_from_the_overview() {
    let db = TestDb::new().await;
    let dir = tempfile::tempdir().unwrap();
    sample_incident(&db, dir.path(), Some(("oncall", "analyst")));
    let (_server, base) = serve(&db).await;
    let mut analyst = Analyst::sign_in(&base, "oncall").await;

    // (a) Who logged in from Ukraine, and when: the newest open incident says it.
    analyst.back_to_overview().await;
    analyst.browser.wait_for_text("main", "Newest open incidents").await;
    analyst.click("main a.incident-link").await;
    analyst.browser.wait_for_text("main h1", "Incident").await;
    let login = analyst.browser.wait_for_text("#fact-login", "alice").await;
    assert!(login.contains(ALICE) && login.contains("2026-11-12 03:17:42Z") && login.contains("UA"), "{login}");
    assert!(login.contains("176.36.10.20") && login.contains("after 11 failed attempts"), "{login}");
    let principal: String = analyst
        .browser
        .script("return document.querySelector('#fact-login a.principal-link').getAttribute('href')")
        .await
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(principal, "#/principal/arn%3Aaws%3Aiam%3A%3A111122223333%3Auser%2Falice");
    let clicks_who = analyst.clicks;
    analyst.browser.screenshot("01-incident-who").await;

    // (b) What they did next: the incident's events, in time order, the changes after the login.
    analyst.back_to_overview().await;
    analyst.click("main a.incident-link").await;
    analyst.browser.wait_for_text("#incident-events", "StopLogging").await;
    let events = rows(&analyst.browser, "#incident-events").await;
    let times: Vec<&String> = events.iter().map(|r| &r[0]).collect();
    assert!(times.windows(2).all(|w| w[0] <= w[1]), "events are in time order: {times:?}");
    let login_at = events.iter().position(|r| r[1] == "ConsoleLogin" && r[5].starts_with("ok")).expect("the login");
    assert_eq!(events[..login_at].iter().filter(|r| r[1] == "ConsoleLogin" && r[5].starts_with("failed")).count(), 11);
    // After the login, the address's events (alice's own later logins are evidence too).
    let changes: Vec<&str> = events[login_at + 1..]
        .iter()
        .filter(|r| r[3].starts_with("176.36.10.20"))
        .map(|r| r[1].as_str())
        .filter(|name| !name.starts_with("Describe") && !name.starts_with("List") && !name.starts_with("Get"))
        .collect();
    assert_eq!(
        changes,
        [
            "CreateRole",
            "AttachRolePolicy",
            "CreateInstanceProfile",
            "AddRoleToInstanceProfile",
            "AssociateIamInstanceProfile",
            "StartSession",
            "AuthorizeSecurityGroupIngress",
            "CreateUser",
            "CreateAccessKey",
            "AttachUserPolicy",
            "StopLogging"
        ]
    );
    // Each change names the alert it is evidence of; browsing is evidence of nothing.
    let opened = events.iter().find(|r| r[1] == "AuthorizeSecurityGroupIngress").unwrap();
    assert_eq!(opened[4], "tcp 22 from 176.36.10.20/32");
    assert!(!opened[6].is_empty(), "{opened:?}");
    assert!(events.iter().filter(|r| r[1].starts_with("Describe")).all(|r| r[6].is_empty()), "{events:?}");
    let chain: Vec<String> = serde_json::from_value(
        analyst
            .browser
            .script("return [...document.querySelectorAll('#attack-chain li')].map(l => l.dataset.tactic)")
            .await,
    )
    .unwrap();
    // In the order the intrusion reached them (as the API says): the password guessing first,
    // the exfiltration before the trail is stopped.
    let listed = skywarden::alerts::incident_pages::incidents(&db.pool, &Default::default(), None, 1).await.unwrap();
    let reached: Vec<String> = listed[0].incident.tactics.iter().map(|t| t.id.clone()).collect();
    assert_eq!(chain, reached);
    let at = |id: &str| chain.iter().position(|t| t == id).unwrap();
    assert!(at("TA0006") < at("TA0001") && at("TA0001") < at("TA0010") && at("TA0010") < at("TA0005"), "{chain:?}");
    let mut sorted = chain.clone();
    sorted.sort();
    assert_eq!(sorted, ["TA0001", "TA0002", "TA0003", "TA0004", "TA0005", "TA0006", "TA0010", "TA0011"]);
    let clicks_next = analyst.clicks;
    analyst.browser.script("document.getElementById('incident-events').scrollIntoView(); return null").await;
    analyst.browser.screenshot("02-incident-what-next").await;

    // (c) Which security group they opened, with the port and the source.
    analyst.back_to_overview().await;
    analyst.click("main a.incident-link").await;
    let opened = analyst.browser.wait_for_text(&format!(".fact-opened[data-group='{GROUP}']"), GROUP).await;
    assert!(opened.contains("tcp 22 from 176.36.10.20/32") && opened.contains("2026-11-12 04:05:12Z"), "{opened}");
    let clicks_which = analyst.clicks;

    // (d) Is it still open: the latest snapshot of the group, and its time.
    analyst.back_to_overview().await;
    analyst.click("main a.incident-link").await;
    let still = analyst.browser.wait_for_text(&format!(".fact-still-open[data-group='{GROUP}']"), "snapshot").await;
    let snapshot_at: chrono::DateTime<chrono::Utc> = sqlx::query_scalar(
        "SELECT last_seen FROM resources WHERE resource_type = 'ec2:security-group' AND resource_id = $1",
    )
    .bind(GROUP)
    .fetch_one(&db.pool)
    .await
    .unwrap();
    let snapshot_text = snapshot_at.format("%Y-%m-%d %H:%M:%SZ").to_string();
    assert_eq!(snapshot_text, "2026-11-12 06:00:00Z");
    assert!(still.starts_with("yes: tcp 22 from 176.36.10.20/32") && still.contains(&snapshot_text), "{still}");
    let resources = rows(&analyst.browser, "#resources").await;
    let group = resources.iter().find(|r| r[0] == GROUP).expect("the group among the resources");
    assert!(group[2].contains("tcp 22 from 176.36.10.20/32") && group[3] == snapshot_text, "{group:?}");
    let clicks_still = analyst.clicks;
    analyst.browser.screenshot("03-incident-still-open").await;
    // The group's own page tells the same snapshot time.
    analyst.click(&format!(".fact-opened[data-group='{GROUP}'] a.resource-link")).await;
    analyst.browser.wait_for_text("main h1", GROUP).await;
    analyst.browser.wait_for_text("main", &snapshot_text).await;
    assert_eq!(analyst.clicks, clicks_still + 1);

    // The incidents page lists it too, newest first, from the navigation.
    analyst.back_to_overview().await;
    analyst.click("nav a[href='#/incidents']").await;
    let listed = analyst.browser.wait_for_text("#incidents", "11 failed console logins for alice").await;
    assert!(listed.contains(ALICE) && listed.contains("176.36.10.20") && listed.contains("14 open"), "{listed}");
    analyst.click("#incidents a.incident-link").await;
    analyst.browser.wait_for_text("#fact-login", "2026-11-12 03:17:42Z").await;

    println!(
        "clicks from the overview: who {clicks_who}, next {clicks_next}, which {clicks_which}, still open {clicks_still}"
    );
    for clicks in [clicks_who, clicks_next, clicks_which, clicks_still] {
        assert!((1..=4).contains(&clicks), "{clicks} clicks");
    }

    // Triage of the whole incident: every alert of it, one reason.
    analyst.browser.type_into("#incident-reason", "alice's password was stolen: reset, sessions revoked").await;
    analyst.browser.click("#incident-acknowledged").await;
    analyst.browser.wait_for_text("main p.muted", "14 alerts, 0 open").await;
    let acknowledged = db
        .count(
            "SELECT count(*) FROM alert_status_changes
             WHERE new_status = 'acknowledged' AND reason = 'alice''s password was stolen: reset, sessions revoked'",
        )
        .await;
    assert_eq!(acknowledged, 14);
    assert_eq!(db.count("SELECT count(*) FROM alerts WHERE status = 'open' AND policy_id NOT LIKE 'posture:%' AND first_seen >= '2026-11-12'").await, 0);
}

#[tokio::test]
async fn an_analyst_filters_sorts_triages_in_bulk_and_snoozes_in_the_browser() {
    let db = TestDb::new().await;
    let dir = tempfile::tempdir().unwrap();
    sample_incident(&db, dir.path(), Some(("maria", "analyst")));
    let (_server, base) = serve(&db).await;
    let mut analyst = Analyst::sign_in(&base, "maria").await;

    // The overview counts failed console logins as failed, keeps empty hours, and its severity
    // cards open the matching alerts.
    analyst.back_to_overview().await;
    let bars = analyst.browser.count("#events-per-hour svg.chart rect:not(.failed)").await;
    assert_eq!(bars, clock_hours_of_the_week(&db).await, "one bar per hour of the week, empty hours included");
    let gap = analyst
        .browser
        .script("return [...document.querySelectorAll('#events-per-hour rect title')].map(t => t.textContent).filter(t => t.startsWith('2026-11-12 0'))")
        .await;
    let gap: Vec<String> = serde_json::from_value(gap).unwrap();
    assert!(gap.contains(&"2026-11-12 08h: 0".to_string()), "{gap:?}");
    assert!(analyst.browser.count("#events-per-hour rect.failed").await >= 1, "failed logins are red");
    analyst.click("a.card[data-severity='high']").await;
    assert_eq!(analyst.clicks, 1);
    let browser = &analyst.browser;
    browser.wait_for_text("main h1", "Alerts").await;
    browser.find("#alerts tbody tr").await;
    let high = rows(browser, "#alerts").await;
    let expected = db.count("SELECT count(*) FROM alerts WHERE severity = 'high' AND status = 'open'").await;
    assert_eq!(high.len() as i64, expected);
    // The first cell holds the selection box.
    assert!(high.iter().all(|r| r[1] == "high" && r[3] == "open"), "{high:?}");

    // Sorted oldest first through the form.
    browser.click("#filter-severity option[value='']").await;
    browser.click("#filter-sort option[value='oldest']").await;
    browser.click("#apply-filters").await;
    browser.wait_for_text("#alerts", "Console login without MFA").await;
    let shown: Vec<String> = serde_json::from_value(
        browser.script("return [...document.querySelectorAll('#alerts tbody tr')].map(r => r.dataset.id)").await,
    )
    .unwrap();
    let oldest: Vec<String> = sqlx::query_scalar(
        "SELECT alert_id::text FROM alerts WHERE status = 'open' ORDER BY first_seen, alert_id DESC",
    )
    .fetch_all(&db.pool)
    .await
    .unwrap();
    assert_eq!(shown, oldest);

    // Bulk triage: two alerts, one reason, one request.
    let picked: Vec<String> = sqlx::query_scalar(
        "SELECT alert_id::text FROM alerts WHERE policy_id IN ('aws-iam-user-created', 'aws-iam-access-key-created') ORDER BY 1",
    )
    .fetch_all(&db.pool)
    .await
    .unwrap();
    for id in &picked {
        browser.click(&format!("input.pick[data-id='{id}']")).await;
    }
    browser.wait_for_text("#selected-count", "2 selected").await;
    browser.type_into("#bulk-reason", "backup-admin is the attacker's: key disabled").await;
    browser.click("#bulk-acknowledged").await;
    browser.wait_for_text("#selected-count", "0 selected").await;
    let statuses: Vec<(String, String, String)> = sqlx::query_as(
        "SELECT a.status::text, s.reason, s.actor FROM alerts a JOIN alert_status_changes s USING (account_id, alert_id)
         WHERE a.alert_id = ANY($1::uuid[])",
    )
    .bind(&picked)
    .fetch_all(&db.pool)
    .await
    .unwrap();
    assert_eq!(statuses.len(), 2);
    assert!(
        statuses.iter().all(|(status, reason, actor)| status == "acknowledged"
            && reason == "backup-admin is the attacker's: key disabled"
            && actor.ends_with("(maria)")),
        "{statuses:?}"
    );
    assert_eq!(db.count("SELECT count(*) FROM audit_log WHERE action = 'alert.status'").await, 2);
    // Only open alerts were listed: the two are gone from the list.
    browser.wait_for_text("main h1", "Alerts").await;
    browser.screenshot("04-alerts-bulk-triage").await;

    // The alert page shows the history with the reason.
    browser.goto(&format!("{base}/#/alert/{}", picked[0])).await;
    let history = browser.wait_for_text("#history", "backup-admin is the attacker's").await;
    assert!(history.contains("open → acknowledged") && history.contains("maria"), "{history}");

    // Snooze until a time; once that time has passed the alert is open again.
    let snooze: String =
        sqlx::query_scalar("SELECT alert_id::text FROM alerts WHERE policy_id = 'aws-ssm-session-started'")
            .fetch_one(&db.pool)
            .await
            .unwrap();
    browser.goto(&format!("{base}/#/alert/{snooze}")).await;
    browser.wait_for_text("main h1", "SSM").await;
    browser.type_into("#triage-reason", "waiting for the instance owner").await;
    browser.script("document.getElementById('triage-until').value = '2099-01-01T09:30'; return null").await;
    browser.click("#triage-snoozed").await;
    let status = browser.wait_for_text("#alert-status", "snoozed until").await;
    assert!(status.contains("2099-01-01 09:30:00Z"), "{status}");
    sqlx::query("UPDATE alerts SET snoozed_until = now() - interval '1 minute' WHERE alert_id = $1::uuid")
        .bind(&snooze)
        .execute(&db.pool)
        .await
        .unwrap();
    browser.goto(&format!("{base}/#/alerts?status=open&policy=aws-ssm-session-started")).await;
    browser.goto(&format!("{base}/#/alert/{snooze}")).await;
    let status = browser.wait_for_text("#alert-status", "open").await;
    assert_eq!(status, "open");
    browser.goto(&format!("{base}/#/alerts?status=open&policy=aws-ssm-session-started")).await;
    let listed = browser.wait_for_text("#alerts", "open").await;
    assert!(listed.contains("SSM"), "{listed}");

    // Failed and successful console logins are told apart, and "in alert" marks the evidence only.
    let hijack: String =
        sqlx::query_scalar("SELECT alert_id::text FROM alerts WHERE policy_id = 'aws-account-hijacking-attempt'")
            .fetch_one(&db.pool)
            .await
            .unwrap();
    browser.goto(&format!("{base}/#/alert/{hijack}")).await;
    browser.wait_for_text("#activity", "ConsoleLogin").await;
    let activity = rows(browser, "#activity").await;
    let marked: Vec<&Vec<String>> = activity.iter().filter(|r| r[6] == "●").collect();
    assert_eq!(marked.len(), 1, "{activity:?}");
    assert!(marked[0][1] == "ConsoleLogin" && marked[0][5].starts_with("ok"), "{marked:?}");
    let failed = activity.iter().filter(|r| r[1] == "ConsoleLogin" && r[5].starts_with("failed")).count();
    assert_eq!(failed, 11);
    assert!(activity.iter().filter(|r| r[3].contains("176.36.10.20")).count() > 30, "the address did more");
    let (burst, title): (String, String) =
        sqlx::query_as("SELECT alert_id::text, title FROM alerts WHERE policy_id = 'aws-excessive-login-failures'")
            .fetch_one(&db.pool)
            .await
            .unwrap();
    browser.goto(&format!("{base}/#/alert/{burst}")).await;
    browser.wait_for_text("main h1", &title).await;
    browser.wait_for_text("#evidence", "ConsoleLogin").await;
    assert_eq!(browser.count("#evidence .badge.outcome.failure").await, 11);
    assert_eq!(browser.count("#evidence .badge.outcome.success").await, 0);

    // Exfiltration: its flows, and no empty map or event tables.
    let exfiltration: String =
        sqlx::query_scalar("SELECT alert_id::text FROM alerts WHERE policy_id = 'aws-flow-exfiltration-volume'")
            .fetch_one(&db.pool)
            .await
            .unwrap();
    browser.goto(&format!("{base}/#/alert/{exfiltration}")).await;
    let flows = browser.wait_for_text("#flows", "176.36.10.20").await;
    assert!(flows.contains("10.0.1.25") && flows.contains("443"), "{flows}");
    assert_eq!(browser.count("svg[data-testid=login-map]").await, 0);
    assert_eq!(browser.count("#evidence").await, 0);
    browser.screenshot("05-exfiltration-alert").await;

    // Posture: the finding and its resource, ATT&CK without a dangling slash.
    let posture: String =
        sqlx::query_scalar("SELECT alert_id::text FROM alerts WHERE policy_id = 'posture:aws-iam-user-console-mfa'")
            .fetch_one(&db.pool)
            .await
            .unwrap();
    browser.goto(&format!("{base}/#/alert/{posture}")).await;
    let finding = browser.wait_for_text("#posture-finding", "console password enabled without an MFA device").await;
    assert!(finding.contains("alice"), "{finding}");
    let meta = browser.text("#alert-meta").await;
    assert!(meta.contains("TA0001 Initial Access") && !meta.contains("TA0001/"), "{meta}");
    assert_eq!(browser.count("svg[data-testid=login-map]").await, 0);
    assert_eq!(browser.count("#evidence").await, 0);
    browser.screenshot("06-posture-alert").await;
}

#[tokio::test]
async fn the_triage_api_refuses_what_it_must_and_changes_all_or_nothing() {
    let db = TestDb::new().await;
    let dir = tempfile::tempdir().unwrap();
    sample_incident(&db, dir.path(), None);
    let (_, viewer) = auth::create(&db.pool, "wallboard", Role::Viewer).await.unwrap();
    let (_, analyst) = auth::create(&db.pool, "on-call", Role::Analyst).await.unwrap();
    let ids: Vec<String> =
        sqlx::query_scalar("SELECT alert_id::text FROM alerts ORDER BY first_seen").fetch_all(&db.pool).await.unwrap();
    let change = json!({"ids": [ids[0], ids[1]], "status": "resolved", "reason": "benign"});

    // 401 without a token, 403 for a viewer.
    assert_eq!(
        call(&db, "POST", "/api/v1/alerts/status", None, Some(change.clone())).await.0,
        StatusCode::UNAUTHORIZED
    );
    let (status, body) = call(&db, "POST", "/api/v1/alerts/status", Some(&viewer), Some(change.clone())).await;
    assert_eq!((status, body["error"].as_str()), (StatusCode::FORBIDDEN, Some("this needs the analyst role")));
    let (status, _) = call(&db, "GET", "/api/v1/incidents/inc-0000000000000000", None, None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);

    // 400s name the field; an unknown id among known ones changes none of them.
    let missing = "00000000-0000-0000-0000-000000000000";
    let too_many: Vec<String> = (0..501).map(|_| ids[0].clone()).collect();
    for (body, field) in [
        (json!({"ids": [], "status": "resolved", "reason": "x"}), "ids"),
        (json!({"ids": too_many, "status": "resolved", "reason": "x"}), "ids"),
        (json!({"ids": ["not-a-uuid"], "status": "resolved", "reason": "x"}), "ids"),
        (json!({"ids": [ids[0], missing], "status": "resolved", "reason": "x"}), "ids"),
        (json!({"ids": [ids[0]], "status": "gone", "reason": "x"}), "status"),
        (json!({"ids": [ids[0]], "status": "resolved", "reason": "  "}), "reason"),
        (json!({"ids": [ids[0]], "status": "snoozed", "reason": "later"}), "until"),
        (json!({"ids": [ids[0]], "status": "snoozed", "reason": "later", "until": "2001-01-01T00:00:00Z"}), "until"),
        (json!({"ids": [ids[0]], "status": "resolved"}), "body"),
    ] {
        let (status, answer) = call(&db, "POST", "/api/v1/alerts/status", Some(&analyst), Some(body.clone())).await;
        assert_eq!((status, answer["field"].as_str()), (StatusCode::BAD_REQUEST, Some(field)), "{body}: {answer}");
    }
    assert_eq!(db.count("SELECT count(*) FROM alert_status_changes").await, 0, "nothing changed");

    let (status, body) = call(&db, "POST", "/api/v1/alerts/status", Some(&analyst), Some(change)).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["changed"].as_array().unwrap().len(), 2);
    assert_eq!(db.count("SELECT count(*) FROM alerts WHERE status = 'resolved'").await, 2);
    let (_, one) = call(&db, "GET", &format!("/api/v1/alerts/{}", ids[0]), Some(&viewer), None).await;
    assert_eq!(one["history"][0]["reason"], "benign");
    assert_eq!(one["history"][0]["new_status"], "resolved");

    // A snooze runs out by itself: the alert reads as open again, in lists and counts.
    let until = (chrono::Utc::now() + chrono::Duration::hours(1)).to_rfc3339();
    let snooze = json!({"ids": [ids[2]], "status": "snoozed", "reason": "later", "until": until});
    assert_eq!(call(&db, "POST", "/api/v1/alerts/status", Some(&analyst), Some(snooze)).await.0, StatusCode::OK);
    let open_now = |body: &Value| body["alerts"].as_array().unwrap().iter().any(|a| a["id"] == ids[2].as_str());
    let (_, listed) = call(&db, "GET", "/api/v1/alerts?status=open&limit=500", Some(&viewer), None).await;
    assert!(!open_now(&listed));
    sqlx::query("UPDATE alerts SET snoozed_until = now() - interval '1 second' WHERE alert_id = $1::uuid")
        .bind(&ids[2])
        .execute(&db.pool)
        .await
        .unwrap();
    let (_, listed) = call(&db, "GET", "/api/v1/alerts?status=open&limit=500", Some(&viewer), None).await;
    assert!(open_now(&listed));

    // Sort and filter parameters are checked, and each order pages through every alert once.
    for (query, field) in [
        ("sort=loudest", "sort"),
        ("severity=severe", "severity"),
        ("account=1234", "account"),
        ("principal=%00", "principal"),
    ] {
        let (status, body) = call(&db, "GET", &format!("/api/v1/alerts?{query}"), Some(&viewer), None).await;
        assert_eq!((status, body["field"].as_str()), (StatusCode::BAD_REQUEST, Some(field)), "{query}: {body}");
    }
    let (_, first) = call(&db, "GET", "/api/v1/alerts?sort=severity&limit=2", Some(&viewer), None).await;
    let cursor = first["next_cursor"].as_str().unwrap();
    let (status, body) =
        call(&db, "GET", &format!("/api/v1/alerts?sort=oldest&cursor={cursor}"), Some(&viewer), None).await;
    assert_eq!((status, body["field"].as_str()), (StatusCode::BAD_REQUEST, Some("cursor")));
    for (sort, order) in [
        ("newest", "first_seen DESC, alert_id DESC"),
        ("oldest", "first_seen, alert_id DESC"),
        ("severity", "severity DESC, first_seen DESC, alert_id DESC"),
        ("last_seen", "last_seen DESC, alert_id DESC"),
    ] {
        let expected: Vec<String> = sqlx::query_scalar(&format!("SELECT alert_id::text FROM alerts ORDER BY {order}"))
            .fetch_all(&db.pool)
            .await
            .unwrap();
        let mut seen = Vec::new();
        let mut cursor = String::new();
        loop {
            let uri = format!("/api/v1/alerts?sort={sort}&limit=3&cursor={cursor}");
            let (status, page) = call(&db, "GET", &uri, Some(&viewer), None).await;
            assert_eq!(status, StatusCode::OK, "{page}");
            seen.extend(page["alerts"].as_array().unwrap().iter().map(|a| a["id"].as_str().unwrap().to_string()));
            match page["next_cursor"].as_str() {
                Some(next) => cursor = next.to_string(),
                None => break,
            }
        }
        assert_eq!(seen, expected, "{sort}");
    }
    let (_, by_alice) =
        call(&db, "GET", "/api/v1/alerts?principal=alice&severity=high&limit=500", Some(&viewer), None).await;
    let expected =
        db.count(&format!("SELECT count(*) FROM alerts WHERE principal = '{ALICE}' AND severity = 'high'")).await;
    assert_eq!(by_alice["alerts"].as_array().unwrap().len() as i64, expected);
    assert!(expected > 0);

    // Incidents: a malformed id is a 400, an unknown one a 404, the sample's one its story.
    let (status, body) = call(&db, "GET", "/api/v1/incidents/inc-nothex", Some(&viewer), None).await;
    assert_eq!((status, body["field"].as_str()), (StatusCode::BAD_REQUEST, Some("id")));
    let (status, _) = call(&db, "GET", "/api/v1/incidents/inc-0000000000000000", Some(&viewer), None).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, body) = call(&db, "GET", "/api/v1/incidents?open=maybe", Some(&viewer), None).await;
    assert_eq!((status, body["field"].as_str()), (StatusCode::BAD_REQUEST, Some("open")));
    let (_, page) = call(&db, "GET", "/api/v1/incidents?open=true", Some(&viewer), None).await;
    let incident = page["incidents"][0]["id"].as_str().unwrap().to_string();
    let (status, story) = call(&db, "GET", &format!("/api/v1/incidents/{incident}"), Some(&viewer), None).await;
    assert_eq!(status, StatusCode::OK, "{story}");
    assert_eq!(story["principal"], ALICE);
    let group = story["resources"].as_array().unwrap().iter().find(|r| r["resource_id"] == GROUP).unwrap();
    assert_eq!(group["snapshot_at"], "2026-11-12T06:00:00Z");
    assert!(
        story["flows"]
            .as_array()
            .unwrap()
            .iter()
            .any(|f| f["dstaddr"] == "176.36.10.20" && f["bytes"].as_i64() > Some(1 << 30))
    );

    // The overview: every hour of the week, the hours after StopLogging as zero, failed logins counted.
    let (_, overview) = call(&db, "GET", "/api/v1/stats/overview", Some(&viewer), None).await;
    let hours = overview["events_per_hour"].as_array().unwrap();
    assert_eq!(hours.len(), clock_hours_of_the_week(&db).await);
    let times: Vec<chrono::DateTime<chrono::Utc>> =
        hours.iter().map(|h| h["hour"].as_str().unwrap().parse().unwrap()).collect();
    assert!(times.windows(2).all(|w| w[1] - w[0] == chrono::Duration::hours(1)), "no hour is missing");
    let at = |hour: &str| hours.iter().find(|h| h["hour"] == hour).unwrap_or_else(|| panic!("no {hour}"));
    assert_eq!(at("2026-11-12T08:00:00Z")["events"], 0);
    assert!(at("2026-11-12T03:00:00Z")["failed"].as_i64() >= Some(11), "{}", at("2026-11-12T03:00:00Z"));
    let (status, body) =
        call(&db, "GET", "/api/v1/stats/overview?since=2025-01-01T00:00:00Z", Some(&viewer), None).await;
    assert_eq!((status, body["field"].as_str()), (StatusCode::BAD_REQUEST, Some("since")));
}
