//! The dashboard in a real browser (headless Chromium) against `skywarden serve` with the sample
//! incident: sign in, the alerts, the hijack alert's map, and the audit trail of a security group;
//! then an admin wires alerts to a real HTTP receiver on the notifications page; and the
//! compliance page over the sample incident's configuration snapshots.
//! Screenshots are kept in `target/test-artifacts/dashboard/`.

use std::path::Path;

use serde_json::json;

use crate::support::browser::{Browser, artifacts_dir};
use crate::support::dashboard::{self, PASSWORD, add_user};
use crate::support::receiver::{Answer, Receiver};
use crate::support::{KillOnDrop, TestDb, sample};
use skywarden::notify::channels::{self, ChannelKind, ChannelSpec, SecretInput};
use skywarden::notify::network::NetworkPolicy;
use skywarden::notify::secrets::{Secret, SecretKey};

/// Imports the sample incident (with countries, for the map) and adds a user with `role`.
fn sample_incident_with_user(db: &TestDb, dir: &Path, user: &str, role: &str) {
    sample::import_incident(db, dir);
    add_user(db, user, role);
}

/// `skywarden serve` on a free port, its secret key in `dir`, loopback receivers allowed; returns
/// the process guard and the base URL once it listens.
async fn serve(db: &TestDb, dir: &Path, extra: &[&str]) -> (KillOnDrop, String) {
    dashboard::serve(db, |serve| {
        serve
            .arg("--no-pollers")
            .args(extra)
            .env("SKYWARDEN_NOTIFY_ALLOW_NETWORKS", "127.0.0.1/32")
            .env("SKYWARDEN_SECRET_KEY_FILE", dir.join("secret.key"));
    })
    .await
}

async fn sign_in(browser: &Browser, base: &str, user: &str, role: &str) {
    dashboard::sign_in(browser, base, user).await;
    browser.wait_for_text("main h1", "Overview").await;
    browser.wait_for_text("#who", &format!("{user} ({role})")).await;
}

#[tokio::test]
async fn an_analyst_follows_the_hijack_from_alert_to_map_to_audit_trail() {
    let db = TestDb::new().await;
    let dir = tempfile::tempdir().unwrap();
    sample_incident_with_user(&db, dir.path(), "maria", "analyst");
    let (_server, base) = serve(&db, dir.path(), &[]).await;

    let browser = Browser::start(artifacts_dir("dashboard")).await;
    browser.goto(&format!("{base}/#/login")).await;
    browser.type_into("#username", "maria").await;
    browser.type_into("#password", "a wrong passphrase!").await;
    browser.click("#sign-in").await;
    browser.wait_for_text("[role=alert]", "wrong user name, password or token").await;
    browser.screenshot("01-login-refused").await;
    browser.type_into("#username", "maria").await;
    browser.type_into("#password", PASSWORD).await;
    browser.click("#sign-in").await;
    browser.wait_for_text("main h1", "Overview").await;
    browser.wait_for_text("#who", "maria (analyst)").await;
    browser.screenshot("02-overview").await;

    browser.goto(&format!("{base}/#/alerts")).await;
    let alerts = browser.wait_for_text("main table", "Account hijacking attempt").await;
    assert!(alerts.contains("Impossible travel"), "{alerts}");
    browser.screenshot("03-alerts").await;
    browser.click("a[data-policy='aws-account-hijacking-attempt']").await;
    browser.wait_for_text("main h1", "Account hijacking attempt").await;
    browser.find("svg[data-testid=login-map] circle.alert").await;
    assert!(browser.count("svg[data-testid=login-map] circle.usual").await >= 1, "the usual locations are on the map");
    assert!(browser.count("svg[data-testid=login-map] path").await > 100, "the world is drawn");
    let evidence = browser.text("main").await;
    assert!(evidence.contains("176.36.10.20") && evidence.contains("UA"), "{evidence}");
    browser.screenshot("04-hijack-alert-map").await;

    // Triage from the page: the CSRF token travels with the change.
    browser.type_into("#triage-reason", "confirmed with alice: not her").await;
    browser.click("#ack").await;
    browser.wait_for_text("main p.muted", "acknowledged").await;

    browser.goto(&format!("{base}/#/audit?resource=sg-0a1b2c3d4e5f67890&read_only=false")).await;
    browser.wait_for_text("main h1", "Who changed sg-0a1b2c3d4e5f67890").await;
    let rows = browser.wait_for_text("#events", "AuthorizeSecurityGroupIngress").await;
    assert!(rows.contains("alice") && rows.contains("176.36.10.20"), "{rows}");
    // Resource ids are links to their own audit trail, shown as the id.
    let links =
        browser.script("return [...document.querySelectorAll('#events tr.event-row a')].map(a => a.textContent)").await;
    assert!(links.as_array().unwrap().iter().any(|l| l == "sg-0a1b2c3d4e5f67890"), "{links}");
    browser.click("#events tr.event-row").await;
    browser.wait_for_text("#events pre.raw", "cidrIp").await;
    browser.screenshot("05-audit-trail-security-group").await;

    // The other pages render their data.
    browser.goto(&format!("{base}/#/network?address=176.36.10.20")).await;
    browser.wait_for_text("main", "Top talkers").await;
    browser.wait_for_text("main table", "10.0.1.25").await;
    browser.screenshot("06-network").await;
    browser.goto(&format!("{base}/#/inventory")).await;
    browser.wait_for_text("main h1", "Inventory").await;
    browser.goto(&format!("{base}/#/accounts")).await;
    browser.wait_for_text("main h1", "Accounts").await;
    browser.screenshot("07-accounts").await;
    // An analyst reads the notifications page; changing channels and routes is for admins.
    browser.goto(&format!("{base}/#/notifications")).await;
    browser.wait_for_text("main", "needs the admin role").await;
    assert_eq!(browser.count("#new-channel").await, 0);
    assert_eq!(browser.count("#new-route").await, 0);

    // Nothing was fetched from anywhere but this server.
    let origins =
        browser.script("return performance.getEntriesByType('resource').map(e => new URL(e.name).origin)").await;
    for origin in origins.as_array().unwrap() {
        assert_eq!(origin.as_str(), Some(base.as_str()), "{origins}");
    }
    let status: String =
        sqlx::query_scalar("SELECT status::text FROM alerts WHERE policy_id = 'aws-account-hijacking-attempt'")
            .fetch_one(&db.pool)
            .await
            .unwrap();
    assert_eq!(status, "acknowledged");
}

#[tokio::test]
async fn an_admin_routes_alerts_to_a_slack_receiver_and_retries_a_dead_letter() {
    let db = TestDb::new().await;
    let dir = tempfile::tempdir().unwrap();
    sample_incident_with_user(&db, dir.path(), "ana", "admin");
    let receiver = Receiver::start(Answer::status(200, "ok")).await;

    // A channel and a dead letter for the hijack alert, as the sender leaves one when it gives up.
    // The last error carries markup: the page must show it as text.
    let key = SecretKey::load_or_create_file(&dir.path().join("secret.key")).unwrap();
    let spec = ChannelSpec {
        name: "siem-webhook".into(),
        kind: ChannelKind::Webhook,
        settings: json!({"url": receiver.url("/siem"), "format": "ocsf"}),
        secrets: [("signing_secret".to_string(), SecretInput::Value(Secret::new("not shown anywhere")))].into(),
        enabled: true,
    };
    let loopback = NetworkPolicy::allowing("127.0.0.1/32").unwrap();
    let siem = channels::create(&db.pool, &spec, &key, &loopback).await.unwrap().id;
    let (account_id, alert_id, alert_title): (String, String, String) = sqlx::query_as(
        "SELECT account_id, alert_id::text, title FROM alerts WHERE policy_id = 'aws-account-hijacking-attempt'",
    )
    .fetch_one(&db.pool)
    .await
    .unwrap();
    let dead: i64 = sqlx::query_scalar(
        "INSERT INTO notification_outbox
             (channel_id, event, account_id, alert_id, dedup_key, state, attempts, last_error, last_http_status)
         VALUES ($1, 'alert.opened', $2, $3::uuid, 'skywarden-test-dead', 'dead', 10,
                 'HTTP 503: <img src=x id=injected>upstream down', 503)
         RETURNING id",
    )
    .bind(siem)
    .bind(&account_id)
    .bind(&alert_id)
    .fetch_one(&db.pool)
    .await
    .unwrap();

    // No sender in this process: the retried dead letter stays pending for the check below.
    let (_server, base) = serve(&db, dir.path(), &["--no-notifications"]).await;
    let browser = Browser::start(artifacts_dir("dashboard")).await;
    sign_in(&browser, &base, "ana", "admin").await;
    browser.goto(&format!("{base}/#/notifications")).await;
    browser.wait_for_text("main h1", "Notifications").await;
    // The operator sees at once that something gave up.
    let summary = browser.wait_for_text("#dead-count", "dead letters").await;
    assert!(summary.starts_with('1'), "{summary}");
    assert_eq!(browser.count("#delivery-summary .card.alarm").await, 1);

    // (a) The metadata service is refused, and the page says why.
    browser.type_into("#channel-name", "metadata").await;
    browser.click("#channel-kind option[value='slack']").await;
    browser.type_into("#channel-webhook_url", "http://169.254.169.254/").await;
    browser.click("#create-channel").await;
    let refused = browser.wait_for_text("#channel-error", "secrets.webhook_url").await;
    assert!(refused.contains("SKYWARDEN_NOTIFY_ALLOW_NETWORKS"), "{refused}");
    browser.screenshot("08-notifications-channel-refused").await;
    assert_eq!(db.count("SELECT count(*) FROM notification_channels WHERE name = 'metadata'").await, 0);

    // A Slack channel whose webhook is the local receiver; its URL is a secret, never shown.
    let hook = receiver.url("/services/T000/B000/slack-hook");
    browser.type_into("#channel-name", "soc-slack").await;
    browser.type_into("#channel-webhook_url", &hook).await;
    browser.click("#create-channel").await;
    let channels = browser.wait_for_text("#channels", "soc-slack").await;
    assert!(channels.contains("webhook_url") && channels.contains("siem-webhook"), "{channels}");
    let page = browser.text("main").await;
    assert!(!page.contains("slack-hook") && !page.contains("not shown anywhere"), "a secret is on the page: {page}");
    let secret_type = browser.script("return document.getElementById('channel-webhook_url').type").await;
    assert_eq!(secret_type, json!("password"));

    // The fields follow the kind: a Jira channel's comma list and version go as JSON array and number.
    browser.click("#channel-kind option[value='jira']").await;
    browser.type_into("#channel-name", "sec-jira").await;
    browser.type_into("#channel-base_url", &receiver.url("/jira")).await;
    browser.type_into("#channel-project_key", "SEC").await;
    browser.type_into("#channel-email", "soc@example.com").await;
    browser.type_into("#channel-labels", "skywarden, aws").await;
    browser.type_into("#channel-api_token", "jira token").await;
    browser.click("#create-channel").await;
    browser.wait_for_text("#channels", "sec-jira").await;
    let settings: serde_json::Value =
        sqlx::query_scalar("SELECT settings FROM notification_channels WHERE name = 'sec-jira'")
            .fetch_one(&db.pool)
            .await
            .unwrap();
    assert_eq!(
        settings,
        json!({"base_url": receiver.url("/jira"), "project_key": "SEC", "issue_type": "Task",
               "email": "soc@example.com", "api_version": 3, "labels": ["skywarden", "aws"]})
    );

    // (b) The Test button sends a sample alert to the receiver and shows how it answered.
    browser.click("tr[data-channel='soc-slack'] button.test").await;
    let result = browser.wait_for_text("tr[data-channel='soc-slack'] .result", "delivered").await;
    assert!(result.contains("HTTP 200"), "{result}");
    browser.screenshot("09-notifications-test-delivered").await;
    let received = receiver.wait_for(1).await;
    let test = received.iter().find(|r| r.path == "/services/T000/B000/slack-hook").expect("the test message");
    assert_eq!(test.method, "POST");
    assert!(test.json().to_string().contains("[Test]"), "{}", test.json());

    // (c) A route through the form, to the new channel.
    browser.type_into("#route-name", "hijacks-to-slack").await;
    browser.click("#route-channel option[value='soc-slack']").await;
    browser.type_into("#route-policies", "aws-account-*, aws-root-login").await;
    browser.type_into("#route-accounts", &account_id).await;
    browser.type_into("#route-tags", "TA0001").await;
    browser.click("#route-min-severity option[value='high']").await;
    browser.click("#create-route").await;
    let routes = browser.wait_for_text("#routes", "hijacks-to-slack").await;
    assert!(
        routes.contains("soc-slack") && routes.contains("aws-account-*") && routes.contains(&account_id),
        "{routes}"
    );
    assert!(routes.contains("one message per alert"), "{routes}");
    let (channel, severity, policies, digest, status_updates): (String, String, Vec<String>, Option<i32>, bool) =
        sqlx::query_as(
            "SELECT c.name, r.min_severity::text, r.policy_ids, r.digest_minutes, r.status_updates
             FROM notification_routes r JOIN notification_channels c ON c.id = r.channel_id
             WHERE r.name = 'hijacks-to-slack'",
        )
        .fetch_one(&db.pool)
        .await
        .unwrap();
    assert_eq!((channel.as_str(), severity.as_str()), ("soc-slack", "high"));
    assert_eq!(policies, ["aws-account-*", "aws-root-login"]);
    assert_eq!((digest, status_updates), (None, true));
    browser.screenshot("10-notifications-route").await;

    // (d) The dead letter: highlighted, linked to its alert, its error as text, with Retry.
    let row = format!("#deliveries tr.dead[data-delivery='{dead}']");
    let text = browser.wait_for_text(&row, "upstream down").await;
    assert!(text.contains("HTTP 503: <img src=x id=injected>upstream down") && text.contains("siem-webhook"), "{text}");
    assert_eq!(browser.count("#injected").await, 0, "an error string became markup");
    let link = browser.text(&format!("{row} a[href='#/alert/{alert_id}']")).await;
    assert_eq!(link, alert_title);
    browser.script("document.getElementById('deliveries').scrollIntoView(); return null").await;
    browser.screenshot("11-notifications-dead-letter").await;
    browser.click(&format!("{row} button.retry")).await;
    browser.wait_for_text(&format!("#deliveries tr[data-delivery='{dead}']"), "pending").await;
    let (state, attempts): (String, i32) =
        sqlx::query_as("SELECT state, attempts FROM notification_outbox WHERE id = $1")
            .bind(dead)
            .fetch_one(&db.pool)
            .await
            .unwrap();
    assert_eq!((state.as_str(), attempts), ("pending", 0));
    assert_eq!(browser.count(&format!("#deliveries tr[data-delivery='{dead}'] button.retry")).await, 0);
    assert!(browser.text("#dead-count").await.starts_with('0'));
    browser.click("#delivery-state option[value='dead']").await;
    browser.wait_for_text("main", "No dead deliveries.").await;

    // Deleting asks first.
    browser.goto(&format!("{base}/#/notifications")).await;
    browser.find(&format!("#deliveries tr[data-delivery='{dead}']")).await; // the unfiltered page is drawn
    browser.click("tr[data-route='hijacks-to-slack'] button.delete").await;
    browser.accept_dialog().await;
    browser.wait_for_text("main", "No route yet").await;
    assert_eq!(db.count("SELECT count(*) FROM notification_routes").await, 0);
}

/// The compliance score of posture counts as the page shows it: passing (suppressed included)
/// over evaluated, rounded down to a tenth of a percent.
fn percent(passed: i32, failed: i32, suppressed: i32) -> String {
    let total = passed + failed + suppressed;
    let score = if total == 0 { 100.0 } else { f64::from(passed + suppressed) * 100.0 / f64::from(total) };
    format!("{}%", (score * 10.0).floor() / 10.0)
}

/// The latest score per section of `account`, from the table the evaluations write.
async fn latest_scores(db: &TestDb, account: &str) -> Vec<(String, i32, i32, i32)> {
    sqlx::query_as(
        "SELECT section, passed, failed, suppressed FROM posture_scores s
         WHERE account_id = $1 AND evaluated_at = (SELECT max(evaluated_at) FROM posture_scores WHERE account_id = $1)
         ORDER BY section",
    )
    .bind(account)
    .fetch_all(&db.pool)
    .await
    .unwrap()
}

/// Each section's card and the account's overall card show the percentages of the latest
/// evaluation in the database.
async fn assert_score_cards(browser: &Browser, db: &TestDb, account: &str) -> Vec<(String, i32, i32, i32)> {
    let scores = latest_scores(db, account).await;
    let sections: Vec<&str> = scores.iter().map(|s| s.0.as_str()).collect();
    assert_eq!(sections, ["iam", "logging", "networking"]);
    let card =
        |section: &str| format!(".posture-account[data-account='{account}'] .card.score[data-section='{section}']");
    for (section, passed, failed, suppressed) in &scores {
        let shown = browser.text(&format!("{} .n", card(section))).await;
        assert_eq!(shown, percent(*passed, *failed, *suppressed), "{section}");
        let counts = browser.text(&format!("{} .counts", card(section))).await;
        assert!(counts.starts_with(&format!("{failed} failed")), "{section}: {counts}");
    }
    let sum = |pick: fn(&(String, i32, i32, i32)) -> i32| scores.iter().map(pick).sum::<i32>();
    let overall = percent(sum(|s| s.1), sum(|s| s.2), sum(|s| s.3));
    assert_eq!(browser.text(&format!("{} .n", card("overall"))).await, overall);
    scores
}

#[tokio::test]
async fn an_analyst_follows_a_failing_check_to_its_cause_and_suppresses_it() {
    const ACCOUNT: &str = "111122223333";
    let db = TestDb::new().await;
    let dir = tempfile::tempdir().unwrap();
    sample_incident_with_user(&db, dir.path(), "maria", "analyst");
    add_user(&db, "ana", "admin");
    add_user(&db, "vic", "viewer");
    sample::import_snapshots(&db);
    let trail: (i64, Option<String>) = sqlx::query_as(
        "SELECT id, alert_id::text FROM posture_findings
         WHERE account_id = $1 AND check_id = 'aws-cloudtrail-multi-region' AND status = 'open'",
    )
    .bind(ACCOUNT)
    .fetch_one(&db.pool)
    .await
    .unwrap();
    let (trail, own_alert) = (trail.0, trail.1.expect("the high finding raised an alert"));
    let (related_alert, related_title): (String, String) =
        sqlx::query_as("SELECT alert_id::text, title FROM alerts WHERE policy_id = 'aws-cloudtrail-logging-disabled'")
            .fetch_one(&db.pool)
            .await
            .unwrap();

    let (_server, base) = serve(&db, dir.path(), &["--no-notifications"]).await;
    let browser = Browser::start(artifacts_dir("dashboard")).await;
    sign_in(&browser, &base, "maria", "analyst").await;
    browser.click("nav a[href='#/compliance']").await;
    browser.wait_for_text("main h1", "Compliance").await;
    browser.wait_for_text("#findings", "aws-cloudtrail-multi-region").await;

    // (1) One card per section and the account's overall score, as the evaluations recorded them,
    // and a trend with a point per evaluation (the dump holds two snapshots).
    assert_score_cards(&browser, &db, ACCOUNT).await;
    let evaluations = db.count("SELECT count(DISTINCT evaluated_at) FROM posture_scores").await;
    assert_eq!(evaluations, 2);
    let trend = format!(".posture-account[data-account='{ACCOUNT}'] svg.trend");
    assert_eq!(browser.count(&format!("{trend} circle.overall")).await, 2);
    assert_eq!(browser.count(&format!("{trend} polyline")).await, 4, "the overall line and one per section");
    // An analyst cannot run the checks.
    assert_eq!(browser.count("#run-now").await, 0);

    // (2) The failing resources: open findings, worst first, with their CIS controls.
    let row = format!("#findings tr[data-finding='{trail}']");
    let text = browser.text(&row).await;
    assert!(text.contains("A multi-region trail logs all management events"), "{text}");
    assert!(text.contains("no multi-region trail is logging") && text.contains("v3.0 3.1"), "{text}");
    let open = db.count("SELECT count(*) FROM posture_findings WHERE status = 'open'").await;
    assert_eq!(browser.count("#findings tbody tr").await as i64, open);
    assert_eq!(browser.count("#findings tr.resolved").await, 0);
    browser.screenshot("12-compliance").await;

    // (3) Its detail: the cause (alice's StopLogging call), the alerts, the remediation and history.
    browser.click(&format!("{row} a[href='#/finding/{trail}']")).await;
    browser.wait_for_text("main h1", "A multi-region trail logs all management events").await;
    let cause = browser.wait_for_text("#finding-cause", "StopLogging").await;
    assert!(cause.contains("Changed by") && cause.contains("alice") && cause.contains("from 176.36.10.20"), "{cause}");
    let related = browser.text(&format!("#related-alerts a[href='#/alert/{related_alert}']")).await;
    assert_eq!(related, related_title);
    browser.find(&format!("#finding-alert a[href='#/alert/{own_alert}']")).await;
    assert!(browser.text("#remediation").await.contains("start-logging"));
    assert!(browser.text("#history").await.contains("opened"));
    assert!(browser.text("nav a.active").await == "Compliance");
    browser.screenshot("13-compliance-finding").await;

    // (4) Suppressing needs a reason: the API's refusal is shown and nothing is stored.
    browser.click("#suppress-submit").await;
    browser.wait_for_text("#suppress-error", "a suppression needs a reason").await;
    browser.script("document.getElementById('suppress').scrollIntoView(); return null").await;
    assert_eq!(db.count("SELECT count(*) FROM posture_suppressions").await, 0);
    browser.screenshot("14-compliance-suppress-refused").await;
    // With one (markup stays text), on this resource, until a date.
    let reason = "rebuilt in CHG-1042 <b id=injected>this week</b>";
    browser.type_into("#suppress-reason", reason).await;
    browser.script("document.getElementById('suppress-until').value = '2099-01-31'; return null").await;
    browser.click("#suppress-submit").await;
    browser.wait_for_text("#finding-summary", "suppressed").await;
    assert!(browser.text("#suppressions").await.contains(reason));
    assert_eq!(browser.count("#injected").await, 0, "a reason became markup");
    let (check, account, resource, stored_reason, until, by): (String, String, String, String, String, String) =
        sqlx::query_as(
            "SELECT check_id, account_id, resource_id, reason,
                    to_char(expires_at AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI'), created_by
             FROM posture_suppressions",
        )
        .fetch_one(&db.pool)
        .await
        .unwrap();
    assert_eq!(check, "aws-cloudtrail-multi-region");
    // The account-level check's resource is the account itself.
    assert_eq!((account.as_str(), resource.as_str()), (ACCOUNT, ACCOUNT));
    assert_eq!((stored_reason.as_str(), until.as_str()), (reason, "2099-01-31 00:00"));
    assert!(by.contains("maria"), "{by}");
    // The failing table shows it suppressed, with the reason.
    browser.click(".crumbs a").await;
    let suppressed = browser.wait_for_text(&format!("{row} .suppressed-note"), "suppressed").await;
    assert!(suppressed.contains("CHG-1042"), "{suppressed}");
    assert_eq!(browser.count("#findings tr.is-suppressed").await, 1);
    browser.screenshot("15-compliance-suppressed").await;

    // Severity and the resource search narrow the list in the page.
    browser.click("#filter-severity option[value='high']").await;
    browser.type_into("#filter-q", "ALI").await;
    browser.click("#finding-filters button[type=submit]").await;
    browser.wait_for_text("#finding-count", &format!("1 of {open} findings")).await;
    assert_eq!(browser.count("#findings tr[data-check='aws-iam-user-console-mfa'][data-resource='alice']").await, 1);
    browser.click("#filter-severity option[value='']").await;
    browser.type_into("#filter-q", "").await;

    // Resolved findings: the instance role the attacker attached, linked to the inventory.
    browser.click("#filter-status option[value='resolved']").await;
    browser.click("#finding-filters button[type=submit]").await;
    let resolved = browser.wait_for_text("#findings", "i-0a1b2c3d4e5f67890").await;
    assert!(resolved.contains("aws-ec2-instance-role") && resolved.contains("resolved"), "{resolved}");
    assert_eq!(browser.count("#findings tr.open").await, 0);
    let instance =
        "#findings tr[data-check='aws-ec2-instance-role'][data-resource='i-0a1b2c3d4e5f67890'] a.resource-link";
    browser.click(instance).await;
    browser.wait_for_text("main h1", "i-0a1b2c3d4e5f67890").await;

    // The cause links to its event in the audit trail.
    browser.goto(&format!("{base}/#/finding/{trail}")).await;
    browser.click("#finding-cause a.event-link").await;
    browser.wait_for_text("#events", "StopLogging").await;
    assert_eq!(browser.count("#events tr.event-row").await, 1, "the link finds that one event");
    let row_text = browser.text("#events tr.event-row").await;
    assert!(row_text.contains("alice") && row_text.contains("176.36.10.20"), "{row_text}");

    // A viewer reads the finding but gets no form.
    sign_in(&browser, &base, "vic", "viewer").await;
    browser.goto(&format!("{base}/#/finding/{trail}")).await;
    browser.wait_for_text("main", "needs the analyst role").await;
    assert_eq!(browser.count("#suppress").await, 0);
    assert_eq!(browser.count("#suppressions button.delete").await, 0);

    // An admin runs the checks now: the suppressed failure counts as passing in the new scores.
    sign_in(&browser, &base, "ana", "admin").await;
    browser.goto(&format!("{base}/#/compliance")).await;
    browser.click("#run-now").await;
    let report = browser.wait_for_text("#run-report", "Evaluated").await;
    assert!(report.contains("1 account(s)"), "{report}");
    assert_eq!(db.count("SELECT count(DISTINCT evaluated_at) FROM posture_scores").await, 3);
    browser.wait_for_text("#findings", "aws-cloudtrail-multi-region").await;
    let scores = assert_score_cards(&browser, &db, ACCOUNT).await;
    let logging = scores.iter().find(|s| s.0 == "logging").unwrap();
    assert_eq!(logging.3, 1, "the suppressed trail finding");
    assert_eq!(browser.count(&format!("{trend} circle.overall")).await, 3);
    browser.screenshot("16-compliance-run-now").await;
}
