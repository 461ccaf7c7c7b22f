//! The on-call analyst's investigation in a real browser (headless Chromium) against
//! `skywarden serve` holding the sample incident and its configuration snapshots: every page
//! checked with axe-core (WCAG 2.1 AA) and photographed, the audit trail's controls (a country by
//! name, principals in any case, inline errors, keyboard, permalinks, paging both ways, the
//! export), a slow page that must not replace the one the user moved to, and a resource shown as
//! of its snapshot with the changes recorded since.
//! Screenshots go to `$CARGO_TARGET_TMPDIR/screenshots/` (the test prints the path).

use std::path::{Path, PathBuf};

use serde_json::{Value, json};

use crate::support::browser::Browser;
use crate::support::dashboard::{self, screenshots_dir};
use crate::support::{KillOnDrop, TestDb, sample};

const ACCOUNT: &str = "111122223333";
const TRAIL: &str = "arn:aws:cloudtrail:us-east-1:111122223333:trail/management-trail";
/// alice's console login from Ukraine (samples/README.md).
const UKRAINE_LOGIN: &str = "7be373d5-779d-48f1-9993-cb01e400034f";
/// axe-core, as `make test-tools` unpacks it (SKYWARDEN_TEST_AXE_JS overrides).
pub(crate) const AXE_JS: &str = ".cache/axe-core-4.10.3/axe.min.js";

/// The sample incident (with countries), its two configuration snapshots, and an admin `ana`.
fn sample_incident_with_snapshots(db: &TestDb, dir: &Path) {
    sample::import_incident(db, dir);
    sample::import_snapshots(db);
    dashboard::add_user(db, "ana", "admin");
}

async fn serve(db: &TestDb, dir: &Path) -> (KillOnDrop, String) {
    dashboard::serve(db, |serve| {
        serve.args(["--no-pollers", "--no-notifications"]).env("SKYWARDEN_SECRET_KEY_FILE", dir.join("secret.key"));
    })
    .await
}

async fn signed_in_browser(base: &str) -> Browser {
    let browser = Browser::start(screenshots_dir()).await;
    sign_in(&browser, base).await;
    browser
}

async fn sign_in(browser: &Browser, base: &str) {
    dashboard::sign_in(browser, base, "ana").await;
    browser.wait_for_text("#who", "ana (admin)").await;
}

/// The sample incident with its snapshots served, and a browser signed in as `ana`. Tests bind
/// every field in this order (`let Investigation { db, _dir, _server, base, browser } = ...`), so
/// the browser goes first and the database last.
struct Investigation {
    db: TestDb,
    /// The server's secret key.
    _dir: tempfile::TempDir,
    _server: KillOnDrop,
    base: String,
    browser: Browser,
}

impl Investigation {
    async fn start() -> Self {
        let db = TestDb::new().await;
        let dir = tempfile::tempdir().unwrap();
        sample_incident_with_snapshots(&db, dir.path());
        let (server, base) = serve(&db, dir.path()).await;
        let browser = signed_in_browser(&base).await;
        Self { db, _dir: dir, _server: server, base, browser }
    }
}

/// Opens `route` and waits until the page is drawn: no load under way, a heading in place.
async fn open(browser: &Browser, base: &str, route: &str) -> bool {
    browser.goto(&format!("{base}/{route}")).await;
    browser
        .wait_until(
            "const main = document.getElementById('main');
             return !main.hasAttribute('aria-busy') && !!main.querySelector('h1')",
            20,
        )
        .await
}

/// The serious and critical WCAG 2.1 A/AA violations axe-core finds on the page, as
/// "rule: target (summary)" lines.
pub(crate) async fn axe_violations(browser: &Browser, axe: &str) -> Vec<String> {
    // Executed as a WebDriver script, not an inline <script>: the page's CSP forbids those.
    let loaded = browser.script(&format!("{axe}\n; return typeof window.axe;")).await;
    assert_eq!(loaded, json!("object"), "axe-core did not load");
    let result = browser
        .script_async(
            "const done = arguments[arguments.length - 1];
             axe.run(document, {runOnly: {type: 'tag', values: ['wcag2a', 'wcag2aa', 'wcag21a', 'wcag21aa']}})
               .then((r) => done(r.violations.filter((v) => v.impact === 'serious' || v.impact === 'critical')
                 .flatMap((v) => v.nodes.map((n) => `${v.id} [${v.impact}]: ${n.target.join(' ')} (${n.failureSummary.split('\\n').slice(1).join(' ').trim()})`))))
               .catch((e) => done(['axe failed: ' + e]));",
        )
        .await;
    result.as_array().expect("a list of violations").iter().map(|v| v.as_str().unwrap_or_default().to_owned()).collect()
}

/// A value the API gives, read with the browser's session.
async fn api_json(browser: &Browser, path: &str) -> Value {
    let script = format!(
        "const done = arguments[arguments.length - 1];
         fetch({path:?}, {{credentials: 'same-origin'}}).then((r) => r.json()).then(done, (e) => done(String(e)));"
    );
    browser.script_async(&script).await
}

#[tokio::test]
async fn every_page_passes_axe_and_is_photographed() {
    let axe_path = std::env::var("SKYWARDEN_TEST_AXE_JS")
        .map(PathBuf::from)
        .unwrap_or_else(|_| Path::new(env!("CARGO_MANIFEST_DIR")).join(AXE_JS));
    let axe = std::fs::read_to_string(&axe_path)
        .unwrap_or_else(|e| panic!("{} is missing ({e}): run `make test-tools`", axe_path.display()));
    let db = TestDb::new().await;
    let dir = tempfile::tempdir().unwrap();
    sample_incident_with_snapshots(&db, dir.path());
    let (_server, base) = serve(&db, dir.path()).await;
    let browser = Browser::start(screenshots_dir()).await;
    // The sign-in page first, as everyone sees it.
    assert!(open(&browser, &base, "#/login").await);
    browser.screenshot("00-login").await;
    let login = axe_violations(&browser, &axe).await;
    println!("login: {} problem(s)", login.len());
    sign_in(&browser, &base).await;

    let incidents = api_json(&browser, "/api/v1/incidents?limit=1").await;
    let incident = incidents["incidents"][0]["id"].as_str().expect("the sample's incident").to_owned();
    let (alert,): (String,) =
        sqlx::query_as("SELECT alert_id::text FROM alerts WHERE policy_id = 'aws-account-hijacking-attempt'")
            .fetch_one(&db.pool)
            .await
            .unwrap();
    let (finding,): (i64,) = sqlx::query_as(
        "SELECT id FROM posture_findings WHERE check_id = 'aws-cloudtrail-multi-region' AND status = 'open'",
    )
    .fetch_one(&db.pool)
    .await
    .unwrap();
    let part = |text: &str| url::form_urlencoded::byte_serialize(text.as_bytes()).collect::<String>();
    let pages: Vec<(&str, String)> = vec![
        ("overview", "#/overview".into()),
        ("incidents", "#/incidents".into()),
        ("incident", format!("#/incident/{}", part(&incident))),
        ("alerts", "#/alerts".into()),
        ("alert", format!("#/alert/{alert}")),
        ("audit", "#/audit?principal=alice".into()),
        ("event", format!("#/event/{UKRAINE_LOGIN}")),
        ("principal", "#/principal/alice".into()),
        ("address", "#/address/176.36.10.20".into()),
        ("inventory", "#/inventory".into()),
        ("resource", format!("#/resource/{ACCOUNT}/{}/{}", part("cloudtrail:trail"), part(TRAIL))),
        ("compliance", "#/compliance".into()),
        ("finding", format!("#/finding/{finding}")),
        ("network", "#/network".into()),
        ("accounts", "#/accounts".into()),
        ("notifications", "#/notifications".into()),
        ("audit-log", "#/audit-log".into()),
    ];
    let mut failures = Vec::new();
    for (index, (name, route)) in pages.iter().enumerate() {
        let drawn = open(&browser, &base, route).await;
        let shot = browser.screenshot(&format!("{:02}-{name}", index + 1)).await;
        let mut problems = axe_violations(&browser, &axe).await;
        if !drawn {
            problems.insert(0, "the page never finished loading with a heading".into());
        }
        let title = browser.script("return document.title").await;
        if drawn && !title.as_str().is_some_and(|t| t.ends_with(" · Skywarden")) {
            problems.push(format!("the document title is {title}"));
        }
        println!("{name}: {} problem(s); screenshot {}", problems.len(), shot.display());
        for problem in &problems {
            println!("  {problem}");
        }
        if !problems.is_empty() {
            failures.push(format!("{name}: {problems:#?}"));
        }
    }
    if !login.is_empty() {
        failures.push(format!("login: {login:#?}"));
    }
    println!("screenshots of every page: {}", screenshots_dir().display());
    assert!(failures.is_empty(), "serious or critical accessibility problems:\n{}", failures.join("\n"));
}

#[tokio::test]
async fn the_audit_trail_finds_the_ukrainian_login_by_country_name_and_opens_it_by_keyboard() {
    let Investigation { db, _dir, _server, base, browser } = Investigation::start().await;
    assert!(open(&browser, &base, "#/audit").await);
    assert_eq!(browser.script("return document.title").await, json!("Audit trail · Skywarden"));
    // Every control has a real label.
    let unlabelled = browser
        .script(
            "return [...document.querySelectorAll('#audit-filters input, #audit-filters select')]
               .filter((c) => !c.labels || c.labels.length === 0).map((c) => c.id)",
        )
        .await;
    assert_eq!(unlabelled, json!([]));

    // A country by its name and a principal in another case.
    browser.type_into("#filter-country", "Ukraine").await;
    browser.type_into("#filter-principal", "ALICE").await;
    browser.type_into("#filter-event_name", "consolelogin").await;
    browser.click("#audit-search").await;
    assert!(browser.wait_until("return location.hash.includes('country=UA')", 10).await);
    assert!(browser.wait_until("return !document.getElementById('main').hasAttribute('aria-busy')", 10).await);
    let expected = db
        .count(
            "SELECT count(*) FROM cloudtrail_events
             WHERE geo_country = 'UA' AND lower(user_name) = 'alice' AND event_name = 'ConsoleLogin'",
        )
        .await;
    assert_eq!(expected, 12, "11 failures and the success, all from 176.36.10.20");
    let count = browser.wait_for_text("#result-count", "events match").await;
    assert!(count.starts_with(&format!("{expected} events match")), "{count}");
    let hash = browser.script("return location.hash").await;
    let hash = hash.as_str().unwrap();
    assert!(hash.contains("country=UA") && hash.contains("principal=ALICE"), "{hash}");
    assert_eq!(browser.count("#events tr.event-row").await as i64, expected);
    let rows = browser.text("#events").await;
    assert!(rows.contains("Ukraine") && rows.contains("176.36.10.20") && !rows.contains("73.202.18.40"), "{rows}");
    browser.screenshot("audit-ukraine").await;

    // The permalink gives the same search.
    assert!(open(&browser, &base, hash).await);
    let again = browser.wait_for_text("#result-count", "events match").await;
    assert!(again.starts_with(&format!("{expected} events match")), "{again}");
    assert_eq!(browser.script("return document.getElementById('filter-country').value").await, json!("Ukraine (UA)"));

    // Each row opens by keyboard: its link, then Enter; the event page takes the focus.
    let link = format!("#events tr[data-event='{UKRAINE_LOGIN}'] a.event-link");
    browser.send_keys(&link, "\u{E007}").await;
    browser.wait_for_text("main h1", "ConsoleLogin by alice").await;
    assert!(browser.wait_until("return document.activeElement === document.querySelector('main h1')", 5).await);
    let event = browser.text("main").await;
    assert!(event.contains("Ukraine (UA)") && event.contains("ConsoleLogin: Success"), "{event}");
    assert!(browser.text("#raw").await.contains(UKRAINE_LOGIN));
    browser.find("#event-alerts a.alert-link").await;
    assert_eq!(browser.script("return document.title").await, json!("ConsoleLogin by alice · Skywarden"));

    // A country nobody has is refused next to its field; the page and the other filters stay.
    assert!(open(&browser, &base, "#/audit").await);
    browser.type_into("#filter-country", "Atlantis").await;
    browser.type_into("#filter-principal", "alice").await;
    browser.click("#audit-search").await;
    let error = browser.wait_for_text("#filter-country-error", "country").await;
    assert!(error.contains("Atlantis"), "{error}");
    assert_eq!(
        browser.script("return document.getElementById('filter-country').getAttribute('aria-invalid')").await,
        json!("true")
    );
    assert_eq!(browser.text("main h1").await, "Audit trail");
    assert_eq!(browser.script("return document.getElementById('filter-principal').value").await, json!("alice"));
    // The server's refusal too: the bad address is named by its field, beside it.
    assert!(open(&browser, &base, "#/audit?source_ip=not-an-address&principal=alice").await);
    let refused = browser.wait_for_text("#filter-source_ip-error", "source_ip").await;
    assert!(refused.contains("an address or CIDR"), "{refused}");
    assert_eq!(browser.count("#audit-filters").await, 1);
    browser.screenshot("audit-inline-error").await;
}

#[tokio::test]
async fn the_audit_trail_pages_both_ways_and_exports_raw_events_saying_when_cut() {
    let Investigation { db, _dir, _server, base, browser } = Investigation::start().await;
    assert!(open(&browser, &base, "#/audit").await);
    let total = db.count("SELECT count(*) FROM cloudtrail_events").await;
    let count = browser.wait_for_text("#result-count", "events match").await;
    assert!(count.starts_with(&format!("{} events match", total_text(total))), "{count}");
    assert_eq!(browser.count("a.newer").await, 0, "the newest page has nothing newer");
    let first = browser.script("return document.querySelector('#events tr.event-row').dataset.event").await;

    browser.script("window.scrollTo(0, document.body.scrollHeight); return null").await;
    browser.click("a.older").await;
    assert!(browser.wait_until("return location.hash.includes('cursor=')", 10).await);
    assert!(browser.wait_until("return !document.getElementById('main').hasAttribute('aria-busy')", 10).await);
    assert_eq!(browser.script("return window.scrollY").await, json!(0), "a new page starts at the top");
    let second = browser.script("return document.querySelector('#events tr.event-row').dataset.event").await;
    assert_ne!(first, second);
    browser.click("a.newer").await;
    assert!(browser.wait_until("return location.hash.includes('before=')", 10).await);
    assert!(
        browser
            .wait_until(
                &format!("return document.querySelector('#events tr.event-row')?.dataset.event === {first}"),
                10
            )
            .await,
        "newer leads back to the first page"
    );
    assert_eq!(browser.count("#events tr.event-row").await, 100);

    // A preset range is kept in the address as such, and counts from now.
    for (range, interval) in [("7d", "7 days"), ("30d", "30 days")] {
        browser.click(&format!("#filter-range option[value='{range}']")).await;
        browser.click("#audit-search").await;
        assert!(browser.wait_until(&format!("return location.hash === '#/audit?range={range}'"), 10).await);
        assert!(browser.wait_until("return !document.getElementById('main').hasAttribute('aria-busy')", 10).await);
        let expected = db
            .count(&format!("SELECT count(*) FROM cloudtrail_events WHERE event_time >= now() - interval '{interval}'"))
            .await;
        let count = browser.text("#result-count").await;
        assert!(count.starts_with(&format!("{} event", total_text(expected))), "{range}: {count}");
    }

    assert_exports(&browser, &db).await;
}

/// JSON lines carry each raw event; past the 100,000 events an export holds, the file says it was cut.
async fn assert_exports(browser: &Browser, db: &TestDb) {
    // JSON lines carry each raw event.
    let export = browser
        .script_async(
            "const done = arguments[arguments.length - 1];
             fetch('/api/v1/events/export?format=jsonl&limit=5&principal=alice').then((r) => r.text()).then(done);",
        )
        .await;
    let lines: Vec<Value> =
        export.as_str().unwrap().lines().map(|l| serde_json::from_str(l).expect("a JSON line")).collect();
    assert_eq!(lines.len(), 5, "a limit the caller chose is no cut: {export}");
    for line in &lines {
        assert_eq!(line["raw"]["eventID"], line["event_id"], "{line}");
    }

    // Past the 100,000 events an export holds, the file ends saying it was cut.
    sqlx::query(
        "INSERT INTO cloudtrail_events (account_id, event_time, event_id, event_name, raw)
         SELECT '444455556666', timestamptz '2026-11-20T00:00:00Z' + n * interval '1 second', 'bulk-' || n,
                'GetObject', jsonb_build_object('eventID', 'bulk-' || n)
         FROM generate_series(1, 100001) AS n",
    )
    .execute(&db.pool)
    .await
    .unwrap();
    // As autovacuum would soon: with the statistics of an almost empty table every export page
    // plans a bitmap scan and sort of all 100,001 rows, and the export outlasts the script timeout.
    sqlx::query("ANALYZE cloudtrail_events").execute(&db.pool).await.unwrap();
    let tail = |format: &str| {
        format!(
            "const done = arguments[arguments.length - 1];
             fetch('/api/v1/events/export?format={format}&account=444455556666').then((r) => r.text())
               .then((t) => {{ const lines = t.trimEnd().split('\\n'); done([lines.length, lines[lines.length - 1]]); }});"
        )
    };
    let csv = browser.script_async(&tail("csv")).await;
    assert_eq!(csv[0], json!(1 + 100_000 + 1), "the header, the events, the note");
    let note = csv[1].as_str().unwrap();
    assert!(note.starts_with("# truncated: this export stops at 100000 events and more match"), "{note}");
    let jsonl = browser.script_async(&tail("jsonl")).await;
    assert_eq!(jsonl[0], json!(100_000 + 1));
    let note: Value = serde_json::from_str(jsonl[1].as_str().unwrap()).unwrap();
    assert_eq!((note["truncated"].clone(), note["events"].clone()), (json!(true), json!(100_000)));
    // Exactly the bound is whole: nothing is said.
    sqlx::query("DELETE FROM cloudtrail_events WHERE event_id = 'bulk-1'").execute(&db.pool).await.unwrap();
    let whole = browser.script_async(&tail("csv")).await;
    assert_eq!(whole[0], json!(1 + 100_000));
    assert!(whole[1].as_str().unwrap().ends_with(",bulk-2"), "{whole}");
}

fn total_text(total: i64) -> String {
    let digits = total.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

#[tokio::test]
async fn a_slow_page_never_replaces_the_page_the_user_moved_to() {
    let Investigation { db: _db, _dir, _server, base, browser } = Investigation::start().await;
    assert!(open(&browser, &base, "#/audit").await);
    // The network page's answers arrive two seconds late, whatever happens meanwhile.
    browser
        .script(
            "const real = window.fetch;
             window.slowAnswered = 0;
             window.fetch = (url, options = {}) => String(url).includes('/api/v1/flows/')
               ? new Promise((resolve, reject) => setTimeout(() => real(url, {...options, signal: undefined})
                   .then((r) => { window.slowAnswered += 1; resolve(r); }, reject), 2000))
               : real(url, options);
             return null;",
        )
        .await;
    browser.script("location.hash = '#/network'; return null").await;
    assert!(browser.wait_until("return document.getElementById('main').getAttribute('aria-busy') === 'true'", 5).await);
    let loading =
        browser.script("const l = document.getElementById('loading'); return !l.hidden && l.textContent").await;
    assert_eq!(loading, json!("Loading…"));
    browser.script("location.hash = '#/inventory'; return null").await;
    browser.wait_for_text("main h1", "Inventory").await;
    // Generous: each answer is held 2 s, and a loaded machine answers the rest slowly.
    assert!(browser.wait_until("return window.slowAnswered >= 3", 30).await, "the slow answers arrived");
    // Give the cancelled page every chance to draw (a few animation frames).
    let settled = browser
        .script_async(
            "const done = arguments[arguments.length - 1];
             requestAnimationFrame(() => requestAnimationFrame(() => setTimeout(() => done(true), 200)));",
        )
        .await;
    assert_eq!(settled, json!(true));
    assert_eq!(browser.text("main h1").await, "Inventory");
    assert_eq!(browser.script("return document.title").await, json!("Inventory · Skywarden"));
    assert_eq!(browser.script("return document.getElementById('loading').hidden").await, json!(true));
    assert!(browser.text("#nav a.active").await == "Inventory");
    // The skip link takes the keyboard past the navigation to the page's heading.
    browser.script("document.getElementById('skip').focus(); return null").await;
    browser.press_key("\u{E007}").await;
    assert!(browser.wait_until("return document.activeElement === document.querySelector('main h1')", 5).await);
    assert_eq!(browser.script("return location.hash").await, json!("#/inventory"), "the route stays");
}

#[tokio::test]
async fn a_resource_is_shown_as_of_its_snapshot_with_the_changes_recorded_since() {
    let Investigation { db: _db, _dir, _server, base, browser } = Investigation::start().await;
    let part = |text: &str| url::form_urlencoded::byte_serialize(text.as_bytes()).collect::<String>();
    let route = format!("#/resource/{ACCOUNT}/{}/{}", part("cloudtrail:trail"), part(TRAIL));
    assert!(open(&browser, &base, &route).await);
    // The snapshot's own time, not the time it was imported.
    assert_eq!(browser.text("#as-of").await, "2026-11-12 06:00:00Z");
    let config = browser.text("main pre").await;
    assert!(config.contains("\"is_logging\": false"), "{config}");
    let notice = browser.text("#changed-since").await;
    assert!(notice.contains("Changed since this snapshot") && notice.contains("StartLogging"), "{notice}");
    assert!(notice.contains("bob") && notice.contains("2026-11-12 14:10:00Z"), "{notice}");
    assert!(!notice.contains("StopLogging"), "the snapshot already shows it: {notice}");
    browser.screenshot("resource-changed-since").await;
    // The finding on the trail, and the change's cause, are links.
    browser.find("#resource-findings a.finding-link").await;
    browser.click("#resource-changes a.event-link").await;
    browser.wait_for_text("main h1", "StopLogging by alice").await;
    browser.find("#event-alerts a.alert-link").await;
}

#[tokio::test]
async fn an_admin_onboards_an_account_and_keeps_its_external_id_on_the_page() {
    let Investigation { db, _dir, _server, base, browser } = Investigation::start().await;
    assert!(open(&browser, &base, "#/accounts").await);
    // The import's detection succeeded: said quietly.
    assert_eq!(browser.script("return document.querySelector('#detection-health').dataset.failing").await, "false");
    assert!(browser.text("#detection-health").await.starts_with("Detection: ok, last run 20"));
    let role = "arn:aws:iam::123456789012:role/SkywardenReadOnly";
    browser.type_into("#onboard-role_arn", role).await;
    browser.type_into("#onboard-trail_bucket", "org-cloudtrail-logs").await;
    browser.type_into("#onboard-flow_log_groups", "vpc-flow, vpc-flow-2").await;
    browser.click("#onboard-submit").await;
    // The page lists the account, and shows the external ID with a copy button.
    browser.find(".panel[data-account='123456789012']").await;
    let shown = browser.text("#external-id").await;
    assert_eq!(browser.count("#no-accounts").await, 0);
    browser.find("#copy-external-id").await;
    let (stored, sources): (String, Value) =
        sqlx::query_as("SELECT external_id, sources FROM accounts WHERE account_id = '123456789012'")
            .fetch_one(&db.pool)
            .await
            .unwrap();
    assert_eq!(shown, stored);
    assert_eq!(sources["trail_bucket"], json!("org-cloudtrail-logs"));
    assert_eq!(sources["flow_log_groups"], json!(["vpc-flow", "vpc-flow-2"]));
    browser.find(".panel[data-account='123456789012'] button.test-role").await;

    // Onboard pressed again: refused beside the role field; the ID stays shown and stored.
    browser.type_into("#onboard-role_arn", role).await;
    browser.click("#onboard-submit").await;
    let refused = browser.wait_for_text("#onboard-role_arn-error", "123456789012").await;
    assert!(!refused.is_empty());
    assert_eq!(browser.text("#external-id").await, shown);
    let still: String = sqlx::query_scalar("SELECT external_id FROM accounts WHERE account_id = '123456789012'")
        .fetch_one(&db.pool)
        .await
        .unwrap();
    assert_eq!(still, shown);
    browser.screenshot("accounts-onboarded").await;

    // Remove asks first, then the account leaves the list.
    browser.click(".panel[data-account='123456789012'] button.remove-account").await;
    browser.accept_dialog().await;
    assert!(browser.wait_until("return !document.querySelector(\".panel[data-account='123456789012']\")", 10).await);

    // Detection failing (as `detect::health` records it after a failed run) is said first, loudly.
    sqlx::query(
        "UPDATE detection_watermark SET failing_since = now(), consecutive_failures = 3, last_error = 'storing alerts: disk full'",
    )
    .execute(&db.pool)
    .await
    .unwrap();
    // Away and back: the same address twice would not draw the page again.
    assert!(open(&browser, &base, "#/overview").await);
    assert!(open(&browser, &base, "#/accounts").await);
    assert_eq!(browser.script("return document.querySelector('#detection-health').dataset.failing").await, "true");
    let banner = browser.text("#detection-health").await;
    assert!(banner.starts_with("Detection is failing since") && banner.contains("3 runs in a row"), "{banner}");
    assert!(banner.contains("storing alerts: disk full"), "{banner}");
}

#[tokio::test]
async fn compliance_dates_findings_by_their_snapshot_and_rates_a_direct_administrator_high() {
    let db = TestDb::new().await;
    let dir = tempfile::tempdir().unwrap();
    sample_incident_with_snapshots(&db, dir.path());
    // One evaluation per snapshot, at the snapshot's own time: the trend is not flat.
    let evaluations: Vec<(String,)> = sqlx::query_as(
        "SELECT DISTINCT to_char(evaluated_at AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI') FROM posture_scores ORDER BY 1",
    )
    .fetch_all(&db.pool)
    .await
    .unwrap();
    assert_eq!(evaluations, [("2026-11-12 00:00".to_string(),), ("2026-11-12 06:00".to_string(),)]);
    let (severity, first_failed, frameworks): (String, String, Value) = sqlx::query_as(
        "SELECT f.severity::text, to_char(f.first_failed_at AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI'), c.frameworks
         FROM posture_findings f JOIN posture_checks c ON c.id = f.check_id
         WHERE f.check_id = 'aws-iam-user-admin-access' AND f.resource_id = 'backup-admin' AND f.status = 'open'",
    )
    .fetch_one(&db.pool)
    .await
    .unwrap();
    assert_eq!((severity.as_str(), first_failed.as_str()), ("high", "2026-11-12 06:00"));
    assert_eq!(frameworks["cis-aws-3.0"], json!(["1.15"]), "{frameworks}");
    // A high finding raises an alert; the user without it is not flagged.
    let alerts = db.count("SELECT count(*) FROM alerts WHERE policy_id = 'posture:aws-iam-user-admin-access'").await;
    assert_eq!(alerts, 1);
    let others = db.count("SELECT count(*) FROM posture_findings WHERE check_id = 'aws-iam-user-admin-access' AND resource_id <> 'backup-admin'").await;
    assert_eq!(others, 0, "deploy-bot's customer policy is not AdministratorAccess");

    let (_server, base) = serve(&db, dir.path()).await;
    let browser = signed_in_browser(&base).await;
    assert!(open(&browser, &base, "#/compliance").await);
    let row = browser.text("#findings tr[data-check='aws-iam-user-admin-access'][data-resource='backup-admin']").await;
    assert!(row.contains("high") && row.contains("2026-11-12 06:00:00Z"), "{row}");
    let head = browser.text(&format!(".posture-account[data-account='{ACCOUNT}'] .posture-head")).await;
    assert!(head.contains("as of the snapshot of 2026-11-12 06:00:00Z") && head.contains("2 evaluations"), "{head}");
}

#[tokio::test]
async fn an_analyst_takes_an_incident_and_its_history_says_so() {
    let Investigation { db, _dir, _server, base, browser } = Investigation::start().await;
    let incidents = api_json(&browser, "/api/v1/incidents?limit=1").await;
    let incident = incidents["incidents"][0]["id"].as_str().expect("the sample's incident").to_owned();
    assert!(open(&browser, &base, &format!("#/incident/{incident}")).await);
    assert_eq!(browser.text("#incident-state").await, "open");
    // The alerts say why they joined; the chain is in the order the intrusion reached it.
    let reasons = browser
        .script("return [...document.querySelectorAll('#incident-alerts td.link-reason')].map((td) => td.textContent)")
        .await;
    let reasons: Vec<&str> = reasons.as_array().unwrap().iter().filter_map(Value::as_str).collect();
    assert_eq!(reasons.iter().filter(|r| **r == "first alert").count(), 1, "{reasons:?}");
    assert!(reasons.iter().all(|r| *r != "—"), "{reasons:?}");
    let chain = browser
        .script("return [...document.querySelectorAll('#attack-chain > li')].map((li) => li.dataset.tactic)")
        .await;
    let expected: Vec<Value> = api_json(&browser, &format!("/api/v1/incidents/{incident}")).await["tactics"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["id"].clone())
        .collect();
    assert_eq!(chain, Value::Array(expected));

    // A reason is required; then status and owner change together.
    browser.click("#case-status option[value='investigating']").await;
    browser.type_into("#case-owner", "ana").await;
    browser.click("#case-save").await;
    assert_eq!(browser.wait_for_text("#case-result", "required").await, "a reason is required");
    browser.type_into("#case-reason", "taking it").await;
    browser.click("#case-save").await;
    assert!(
        browser
            .wait_until("return document.getElementById('incident-state')?.textContent === 'investigating'", 10)
            .await
    );
    assert_eq!(browser.text("#incident-owner-name").await, "ana");
    let history = browser.text("#incident-history").await;
    assert!(history.contains("status open → investigating (taking it)"), "{history}");
    assert!(history.contains("owner — → ana (taking it)"), "{history}");
    let audit = db.count("SELECT count(*) FROM audit_log WHERE action = 'incident.update'").await;
    assert_eq!(audit, 1);
    // An owner who is no user is refused, and said so.
    browser.type_into("#case-owner", "-mallory").await;
    browser.type_into("#case-reason", " again").await;
    browser.click("#case-save").await;
    let refused = browser.wait_for_text("#case-result", "user").await;
    assert!(refused.contains("enabled dashboard user"), "{refused}");
    browser.screenshot("incident-taken").await;
    // The report links download with the session.
    let report = browser
        .script_async(
            "const done = arguments[arguments.length - 1];
             fetch(document.getElementById('report-html').href).then((r) => r.text()).then(done);",
        )
        .await;
    assert!(report.as_str().unwrap().contains(&format!("<title>Incident {incident}</title>")));
}
