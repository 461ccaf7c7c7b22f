//! Searching archived events (issue 18): an archived month whose events come back into the hot
//! table (old log files imported again) answers each event once, in pages, counts, exports and
//! `q` (each way of answering it, both directions), before and after the full-text indexer ran,
//! and when the cache holds an event twice; the dashboard's link to an archived event
//! opens it after the cache let its day go.

use std::collections::HashSet;

use axum::http::StatusCode;
use serde_json::Value;
use skywarden::archive::read::LakeLimits;
use skywarden::auth::{self, Role};
use skywarden::http::ApiContext;

use skywarden::search::contains_pattern;
use skywarden::search::events::{self, EventFilter, EventKey, EventSummary, text_search::page_by};

use crate::api::call_with;
use crate::support::browser::Browser;
use crate::support::{TestDb, dashboard, lake, sample};

/// Archives November 2026 (the sample's month) to a folder, as `tests/it/archive_read.rs` does.
async fn archive(db: &TestDb, to: &str) {
    lake::archive_before_december_2026(db, to, &lake::no_aws(), 7).await;
}

async fn get(context: &ApiContext, token: &str, uri: &str) -> Value {
    let (status, body) = call_with(context, "GET", uri, Some(token), None).await;
    assert_eq!(status, StatusCode::OK, "{uri}: {body}");
    body
}

/// What a search answers, compared across storage: every event's key in order (through pages
/// of a quarter of the total, following the cursors), the total, and the export's keys.
#[derive(Debug, PartialEq)]
struct Answer {
    keys: Vec<(String, String, String)>,
    total: i64,
    exported: Vec<(String, String)>,
}

fn key(event: &Value) -> (String, String, String) {
    let text = |f: &str| event[f].as_str().unwrap().to_owned();
    (text("account_id"), text("event_time"), text("event_id"))
}

/// The answer and the `archived` marks of its events.
async fn answer(context: &ApiContext, token: &str, query: &str) -> (Answer, Vec<bool>) {
    let first = get(context, token, &format!("/api/v1/events?{query}&limit=1")).await;
    let total = first["total"].as_i64().unwrap();
    let size = total / 4 + 1;
    let (mut keys, mut marks) = (Vec::new(), Vec::new());
    let mut uri = format!("/api/v1/events?{query}&limit={size}");
    for _ in 0..10 {
        let page = get(context, token, &uri).await;
        for event in page["events"].as_array().unwrap() {
            keys.push(key(event));
            marks.push(event["archived"].as_bool().unwrap());
        }
        match page["next_cursor"].as_str() {
            Some(cursor) => uri = format!("/api/v1/events?{query}&limit={size}&cursor={cursor}"),
            None => break,
        }
    }
    let (status, export) =
        call_with(context, "GET", &format!("/api/v1/events/export?{query}&format=jsonl"), Some(token), None).await;
    assert_eq!(status, StatusCode::OK, "{export}");
    let exported = export
        .as_str()
        .unwrap()
        .lines()
        .map(|l| {
            let line: Value = serde_json::from_str(l).unwrap();
            (line["account_id"].as_str().unwrap().to_owned(), line["event_id"].as_str().unwrap().to_owned())
        })
        .collect();
    (Answer { keys, total, exported }, marks)
}

/// Stores again, as an import of the same log files would, the cached archived events whose id
/// `pick` selects (SQL over `event_id`).
async fn reimport(db: &TestDb, pick: &str) -> i64 {
    sqlx::query("SELECT skywarden_ensure_month_partition('cloudtrail_events', '2026-11-01T00:00:00Z')")
        .execute(&db.pool)
        .await
        .unwrap();
    let columns = "account_id, event_time, event_id, region, event_source, event_name, event_type, principal_arn, \
                   principal_type, principal_id, user_name, access_key_id, source_ip, source_ip_text, user_agent, \
                   error_code, error_message, read_only, resource_ids, geo_country, geo_city, geo_latitude, \
                   geo_longitude, geo_asn, geo_as_org, raw, source_is_tor, source_is_vpn, source_is_hosting, source_is_aws";
    sqlx::query(&format!(
        "INSERT INTO cloudtrail_events ({columns}) SELECT {columns} FROM lake_events WHERE {pick} ON CONFLICT DO NOTHING"
    ))
    .execute(&db.pool)
    .await
    .unwrap()
    .rows_affected() as i64
}

/// Loads the cached events again under other object names, as when a month archived before
/// the ledger existed has the same events in two objects: the cache holds each event twice.
async fn cache_twice(db: &TestDb) {
    let groups = sqlx::query(
        "INSERT INTO lake_loaded_groups (lake_object, row_group, account_id, event_day, rows_loaded, bytes_read)
         SELECT lake_object || '.again', row_group, account_id, event_day, rows_loaded, bytes_read FROM lake_loaded_groups",
    )
    .execute(&db.pool)
    .await
    .unwrap();
    assert!(groups.rows_affected() > 0);
    sqlx::query("INSERT INTO lake_events SELECT * FROM lake_events").execute(&db.pool).await.unwrap();
    sqlx::query(
        "UPDATE lake_events SET lake_object = lake_object || '.again'
         WHERE ctid IN (SELECT max(ctid) FROM lake_events GROUP BY account_id, event_time, event_id)",
    )
    .execute(&db.pool)
    .await
    .unwrap();
}

fn event_key(event: &EventSummary) -> EventKey {
    (event.event_time, event.account_id.clone(), event.event_id.clone())
}

fn marked(page: &[EventSummary]) -> Vec<(EventKey, bool)> {
    page.iter().map(|e| (event_key(e), e.archived)).collect()
}

/// A search's events through the library, pages of `size`: older and older, then each page again
/// as "newer" from the next one; for `q` each page also by the trigram index and, where it
/// answers, by the window. The `(account, id)` of each event in order.
async fn pages_both_ways(db: &TestDb, filter: &EventFilter, size: usize) -> Vec<(String, String)> {
    let text = filter.text.is_some();
    let mut pages = Vec::new();
    let mut at = EventFilter { limit: size as i64, ..filter.clone() };
    loop {
        let page = events::search(&db.pool, &at).await.unwrap();
        if text {
            let plain = page_by(&db.pool, &at, None, false).await.unwrap().unwrap();
            assert_eq!(marked(&plain), marked(&page), "trigram path, {at:?}");
            if let Some(window) = page_by(&db.pool, &at, None, true).await.unwrap() {
                assert_eq!(marked(&window), marked(&page), "window, {at:?}");
            }
        }
        let Some(last) = page.last() else { break };
        at.after = Some(event_key(last));
        pages.push(page);
    }
    let at = EventFilter { limit: size as i64, ..filter.clone() };
    for pair in pages.windows(2) {
        let before = event_key(&pair[1][0]);
        let newer = events::search_newer(&db.pool, &at, &before).await.unwrap();
        assert_eq!(marked(&newer), marked(&pair[0]), "newer than {before:?}");
        if text {
            let plain = page_by(&db.pool, &at, Some(&before), false).await.unwrap().unwrap();
            assert_eq!(marked(&plain), marked(&pair[0]), "trigram path, newer than {before:?}");
        }
    }
    pages.into_iter().flatten().map(|e| (e.account_id, e.event_id)).collect()
}

#[tokio::test]
async fn an_event_both_hot_and_archived_is_answered_once() {
    let db = TestDb::new().await;
    sample::import_incident(&db, tempfile::tempdir().unwrap().path());
    let (_, token) = auth::create(&db.pool, "lake-search", Role::Viewer).await.unwrap();
    let context =
        ApiContext::new(db.pool.clone()).with_lake(LakeLimits { max_days_per_request: 1000, ..LakeLimits::default() });
    let agent: String = sqlx::query_scalar(
        "SELECT substr(user_agent, 1, 8) FROM cloudtrail_events WHERE length(user_agent) > 8
         GROUP BY 1 ORDER BY count(*) DESC, 1 LIMIT 1",
    )
    .fetch_one(&db.pool)
    .await
    .unwrap();
    let filters = [
        EventFilter { failed: Some(false), ..EventFilter::default() },
        EventFilter { read_only: Some(false), ..EventFilter::default() },
        EventFilter { text: Some(contains_pattern(&agent)), ..EventFilter::default() },
    ];
    let agent: String = agent
        .bytes()
        .map(|b| if b.is_ascii_alphanumeric() { (b as char).to_string() } else { format!("%{b:02X}") })
        .collect();
    let searches = ["failed=false".to_owned(), "read_only=false".to_owned(), format!("q={agent}")];
    let mut before = Vec::new();
    for query in &searches {
        let (answer, marks) = answer(&context, &token, query).await;
        assert!(answer.total > 5 && marks.iter().all(|m| !m), "{query}: {answer:?}");
        assert_eq!(answer.keys.len() as i64, answer.total, "{query}");
        before.push(answer);
    }
    let stored: i64 = sqlx::query_scalar("SELECT count(*) FROM cloudtrail_events").fetch_one(&db.pool).await.unwrap();

    let lake = tempfile::tempdir().unwrap();
    archive(&db, lake.path().to_str().unwrap()).await;
    // Read back (the cache then holds every archived event); again with each event cached
    // twice; then half the events imported again.
    for (query, expected) in searches.iter().zip(&before) {
        let (answer, marks) = answer(&context, &token, query).await;
        assert_eq!(&answer, expected, "{query}, archived");
        assert!(marks.iter().all(|m| *m));
    }
    let cached: i64 = sqlx::query_scalar("SELECT count(*) FROM lake_events").fetch_one(&db.pool).await.unwrap();
    assert_eq!(cached, stored);
    cache_twice(&db).await;
    for ((query, filter), expected) in searches.iter().zip(&filters).zip(&before) {
        let (answer, marks) = answer(&context, &token, query).await;
        assert_eq!(&answer, expected, "{query}, cached twice");
        assert!(marks.iter().all(|m| *m));
        let size = expected.exported.len() / 4 + 1;
        assert_eq!(pages_both_ways(&db, filter, size).await, expected.exported, "{query}, cached twice");
    }
    let cached: i64 = sqlx::query_scalar("SELECT count(*) FROM lake_events").fetch_one(&db.pool).await.unwrap();
    assert_eq!(cached, 2 * stored, "still cached twice");
    let half = reimport(&db, "md5(event_id) < '8'").await;
    assert!(half > 0 && half < stored, "{half} of {stored}");

    // Each event once: the hot copy where there is one, the archived one elsewhere; the same
    // keys, order, totals and exports as before archiving, through the tail of `q` (the
    // re-imported events are not indexed yet) and then through the index.
    for round in ["tail", "indexed", "all hot again"] {
        for ((query, filter), expected) in searches.iter().zip(&filters).zip(&before) {
            let (answer, marks) = answer(&context, &token, query).await;
            assert_eq!(&answer, expected, "{query}, {round}");
            let size = expected.exported.len() / 4 + 1;
            assert_eq!(pages_both_ways(&db, filter, size).await, expected.exported, "{query}, {round}");
            let unique: HashSet<_> = answer.keys.iter().collect();
            assert_eq!(unique.len(), answer.keys.len(), "{query}, {round}: an event twice");
            let hot = marks.iter().filter(|m| !**m).count();
            match round {
                "all hot again" => assert_eq!(hot, marks.len(), "{query}: the hot copies are shown"),
                _ => assert!(hot > 0 && hot < marks.len(), "{query}, {round}: {hot} of {} hot", marks.len()),
            }
        }
        match round {
            "tail" => {
                skywarden::search::index::run(&db.pool).await.unwrap();
            }
            "indexed" => {
                reimport(&db, "true").await;
            }
            _ => {}
        }
    }
    let overlap: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM lake_events l JOIN cloudtrail_events h USING (account_id, event_time, event_id)",
    )
    .fetch_one(&db.pool)
    .await
    .unwrap();
    assert_eq!(overlap, 2 * stored, "every event is both hot and cached (twice)");
    // The single-event routes find it once too, hot.
    let (account, time, id) = &before[0].keys[0];
    let detail = get(&context, &token, &format!("/api/v1/events/{id}?account={account}&time={time}")).await;
    assert_eq!(detail["archived"], false, "{detail}");
}

#[tokio::test]
async fn an_archived_rows_link_opens_its_event_after_the_cache_let_it_go() {
    let db = TestDb::new().await;
    sample::import_incident(&db, tempfile::tempdir().unwrap().path());
    dashboard::add_user(&db, "ana", "admin");
    let lake = tempfile::tempdir().unwrap();
    archive(&db, lake.path().to_str().unwrap()).await;
    let dir = tempfile::tempdir().unwrap();
    let (_server, base) = dashboard::serve(&db, |serve| {
        serve
            .args(["--no-pollers", "--no-notifications"])
            .env("SKYWARDEN_SECRET_KEY_FILE", dir.path().join("secret.key"));
    })
    .await;

    let browser = Browser::start(dashboard::screenshots_dir()).await;
    dashboard::sign_in(&browser, &base, "ana").await;
    browser.wait_for_text("#who", "ana (admin)").await;
    browser.goto(&format!("{base}/#/audit?failed=true")).await;
    browser.wait_for_text("#result-count", "events match").await;
    let row = "#events tr.event-row:first-child";
    assert!(browser.text(row).await.contains("archived"), "{}", browser.text(row).await);
    let link = format!("{row} a.event-link");
    let address = browser.script(&format!("return document.querySelector(\"{link}\").getAttribute('href')")).await;
    let address = address.as_str().unwrap().to_owned();
    assert!(address.contains("account=") && address.contains("time="), "{address}");
    let id = browser.script(&format!("return document.querySelector('{row}').dataset.event")).await;
    let id = id.as_str().unwrap().to_owned();

    // The cache lets the day go: only the link's time finds the event now.
    sqlx::query("TRUNCATE lake_events, lake_loaded_groups").execute(&db.pool).await.unwrap();
    browser.click(&link).await;
    browser.wait_for_text("main h1", " by ").await;
    let page = browser.text("main").await;
    assert!(page.contains("archived: read from the open lake") && page.contains(&id), "{page}");
    assert!(browser.text("#raw").await.contains(&id));
}
