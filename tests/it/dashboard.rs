//! The dashboard in a real browser (headless Chromium) against `skywarden serve` with the sample
//! incident: sign in, the alerts, the hijack alert's map, and the audit trail of a security group.
//! Screenshots are kept in `target/test-artifacts/dashboard/`.

use std::path::Path;
use std::time::Duration;

use crate::support::browser::{Browser, artifacts_dir};
use crate::support::{TestDb, mmdb};

#[tokio::test]
async fn an_analyst_follows_the_hijack_from_alert_to_map_to_audit_trail() {
    let db = TestDb::new().await;
    let dir = tempfile::tempdir().unwrap();
    let geo = mmdb::sample_incident_countries(dir.path());
    let incident = Path::new(env!("CARGO_MANIFEST_DIR")).join("samples/incident");
    let imported = db.skywarden(&["import", "--geoip", geo.to_str().unwrap(), incident.to_str().unwrap()]);
    assert!(imported.status.success(), "{}", String::from_utf8_lossy(&imported.stderr));
    let mut create = crate::support::skywarden_command(&db.url);
    create
        .args(["users", "create", "--username", "maria", "--role", "analyst"])
        .env("SKYWARDEN_USER_PASSWORD", "a long enough passphrase");
    assert!(create.output().unwrap().status.success());

    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let base = format!("http://127.0.0.1:{port}");
    let _server = crate::support::KillOnDrop(
        crate::support::skywarden_command(&db.url)
            .args(["serve", "--listen", &format!("127.0.0.1:{port}"), "--no-pollers"])
            .spawn()
            .unwrap(),
    );
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while tokio::net::TcpStream::connect(("127.0.0.1", port)).await.is_err() {
        assert!(std::time::Instant::now() < deadline, "serve did not listen within 20 s");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    let browser = Browser::start(artifacts_dir("dashboard")).await;
    browser.goto(&format!("{base}/#/login")).await;
    browser.type_into("#username", "maria").await;
    browser.type_into("#password", "a wrong passphrase!").await;
    browser.click("#sign-in").await;
    browser.wait_for_text("[role=alert]", "wrong user name, password or token").await;
    browser.screenshot("01-login-refused").await;
    browser.type_into("#username", "maria").await;
    browser.type_into("#password", "a long enough passphrase").await;
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
