//! The lake read path's bounds and failures, on a lake larger than the default bounds: January
//! 2024 of two accounts (50 account-days, 90 events each, one `RareCall` a day) archived to a
//! folder. Bytes are counted before each read (the footer too); a page that cannot read a day
//! ends there and its cursor goes on from it; eviction spares a group touched meanwhile and the
//! groups an export reads; a failing destination is reported once and not asked again; raw
//! events keep their numbers as the hot table stored them; a month being archived makes the
//! answer incomplete.

use axum::body::Body;
use axum::http::{Request, StatusCode};
use http_body_util::BodyExt;
use serde_json::Value;
use skywarden::archive::read::{Hold, Lake, LakeLimits};
use skywarden::auth::{self, Role};
use skywarden::http::{ApiContext, router};
use tower::ServiceExt;

use crate::api::call_with;
use crate::support::aws as fake;
use crate::support::{TestDb, lake};

const A: &str = "111111111111";
const RAW_NUMBERS: &str = r#""price": 2.50, "big": 12345678901234567890"#;

/// 4,500 events: two accounts, 1–25 January 2024, one every 16 minutes per account; the 46th of
/// each account's day is a `RareCall`. Every raw event holds 2.50 and 12345678901234567890.
async fn january(db: &TestDb) {
    sqlx::query("SELECT skywarden_ensure_month_partition('cloudtrail_events', '2024-01-10')")
        .execute(&db.pool)
        .await
        .unwrap();
    sqlx::query(&format!(
        r#"INSERT INTO cloudtrail_events (account_id, event_time, event_id, region, event_source, event_name, raw)
           SELECT CASE WHEN i % 2 = 0 THEN '{A}' ELSE '222222222222' END,
                  timestamptz '2024-01-01' + (i / 2) * interval '16 minutes' + (i % 2) * interval '1 second',
                  'evt-' || i, 'us-east-1', 'iam.amazonaws.com',
                  CASE WHEN (i / 2) % 90 = 45 THEN 'RareCall' ELSE 'ListUsers' END,
                  ('{{"eventID": "evt-' || i || '", {RAW_NUMBERS}, "n": ' || i || '}}')::jsonb
           FROM generate_series(0, 4499) i"#
    ))
    .execute(&db.pool)
    .await
    .unwrap();
}

/// Archives January to `to` (row groups of 30 rows: three a day).
async fn archive(db: &TestDb, to: &str) {
    archive_with(db, to, &lake::no_aws()).await;
}

async fn archive_with(db: &TestDb, to: &str, settings: &skywarden::aws::AwsSettings) {
    lake::archive_before_december_2026(db, to, settings, 30).await;
    assert_eq!(db.count("SELECT count(*) FROM cloudtrail_events").await, 0);
}

struct Archived {
    db: TestDb,
    viewer: String,
    admin: String,
    /// The lake folder, kept while the test runs.
    _lake: tempfile::TempDir,
    /// Each event's raw text as the hot table held it, by id.
    raw_before: Vec<(String, String)>,
    /// The ids of `RareCall` events, newest first, as the audit trail listed them before archiving.
    rare_before: Vec<String>,
}

async fn archived_january() -> Archived {
    let db = TestDb::new().await;
    january(&db).await;
    let (_, viewer) = auth::create(&db.pool, "lake-viewer", Role::Viewer).await.unwrap();
    let (_, admin) = auth::create(&db.pool, "lake-admin", Role::Admin).await.unwrap();
    let raw_before: Vec<(String, String)> =
        sqlx::query_as("SELECT event_id, raw::text FROM cloudtrail_events ORDER BY event_id")
            .fetch_all(&db.pool)
            .await
            .unwrap();
    assert!(raw_before[0].1.contains(r#""price": 2.50"#), "{}", raw_before[0].1);
    let hot = ApiContext::new(db.pool.clone());
    let rare_before = follow(&hot, &viewer, "event_name=RareCall&limit=1000").await;
    assert_eq!(rare_before.len(), 50);
    let lake = tempfile::tempdir().unwrap();
    archive(&db, lake.path().to_str().unwrap()).await;
    Archived { db, viewer, admin, _lake: lake, raw_before, rare_before }
}

async fn get(context: &ApiContext, token: &str, uri: &str) -> Value {
    let (status, body) = call_with(context, "GET", uri, Some(token), None).await;
    assert_eq!(status, StatusCode::OK, "{uri}: {body}");
    body
}

/// The event ids of every page of a search, following `next_cursor` (at most 1000 pages).
async fn follow(context: &ApiContext, token: &str, query: &str) -> Vec<String> {
    follow_counting(context, token, query).await.0
}

/// As [`follow`], and how many pages it took.
async fn follow_counting(context: &ApiContext, token: &str, query: &str) -> (Vec<String>, usize) {
    let mut ids = Vec::new();
    let mut uri = format!("/api/v1/events?{query}");
    for pages in 1..=1000 {
        let page = get(context, token, &uri).await;
        ids.extend(page["events"].as_array().unwrap().iter().map(|e| e["event_id"].as_str().unwrap().to_owned()));
        match page["next_cursor"].as_str() {
            Some(cursor) => uri = format!("/api/v1/events?{query}&cursor={cursor}"),
            None => return (ids, pages),
        }
    }
    panic!("{query}: more than 1000 pages");
}

#[tokio::test]
async fn a_page_stops_at_the_day_it_could_not_read_and_goes_on_from_there() {
    let a = archived_january().await;
    let context = ApiContext::new(a.db.pool.clone());
    assert_eq!(context.lake.limits().max_days_per_request, 31, "the default bounds");
    // The oldest days are cached already (another search read them).
    let early = get(&context, &a.viewer, "/api/v1/events?until=2024-01-04T00:00:00Z&limit=1").await;
    assert_eq!(early["archive"]["complete"], true, "{}", early["archive"]);

    // No since, a rare event: the page reads newest days first, up to 31 account-days, and
    // ends there, not at the cached days beyond the gap.
    let first = get(&context, &a.viewer, "/api/v1/events?event_name=RareCall&limit=1000").await;
    let read = &first["archive"];
    assert_eq!(read["complete"], false, "{read}");
    assert!(read["limit"].as_str().unwrap().contains("max_days_per_request=31"), "{read}");
    assert!(read["days_loaded"].as_u64().unwrap() <= 31, "{read}");
    assert_eq!(first["total_is_lower_bound"], true, "a count over 50 uncached days is not done");
    let shown: Vec<&str> =
        first["events"].as_array().unwrap().iter().map(|e| e["event_id"].as_str().unwrap()).collect();
    assert!(!shown.is_empty() && shown.len() < 50, "{}", shown.len());
    assert_eq!(shown, a.rare_before[..shown.len()], "the page is the newest events, without a hole");
    assert!(first["next_cursor"].is_string(), "the page goes on from the gap");

    // From an empty cache, following the cursors gives every event once, in order, each
    // request within the default bounds (the first stops at the gap, the next goes on there).
    sqlx::query("TRUNCATE lake_events, lake_loaded_groups").execute(&a.db.pool).await.unwrap();
    let fresh = ApiContext::new(a.db.pool.clone());
    let (all, pages) = follow_counting(&fresh, &a.viewer, "event_name=RareCall&limit=1000").await;
    assert_eq!(all, a.rare_before);
    assert!(pages >= 2, "{pages}");
    // Small pages: the same events.
    let small = follow(&ApiContext::new(a.db.pool.clone()), &a.viewer, "event_name=RareCall&limit=7").await;
    assert_eq!(small, a.rare_before);

    // The count without since, once the lake is cached: complete.
    let page = get(&context, &a.viewer, "/api/v1/events?event_name=RareCall&limit=1").await;
    assert_eq!(page["total"], 50, "{page}");
    assert_eq!(page["total_is_lower_bound"], false, "{}", page["archive"]);
}

#[tokio::test]
async fn the_byte_bound_counts_every_read_including_the_footer() {
    let a = archived_january().await;
    let uri = format!("/api/v1/events?account={A}&since=2024-01-10T00:00:00Z&until=2024-01-13T00:00:00Z&limit=1000");
    let whole = get(&ApiContext::new(a.db.pool.clone()), &a.viewer, &uri).await;
    assert_eq!(whole["archive"]["complete"], true, "{}", whole["archive"]);
    let needed = whole["archive"]["bytes_read"].as_u64().unwrap();
    assert!(needed > 3000, "{needed}");
    for max in [100, needed / 4, needed / 2, needed - 1] {
        sqlx::query("TRUNCATE lake_events, lake_loaded_groups").execute(&a.db.pool).await.unwrap();
        let limits = LakeLimits { max_bytes_per_request: max, ..LakeLimits::default() };
        let context = ApiContext::new(a.db.pool.clone()).with_lake(limits);
        let page = get(&context, &a.viewer, &uri).await;
        let read = &page["archive"];
        assert!(read["bytes_read"].as_u64().unwrap() <= max, "max {max}: {read}");
        // What was asked of the lake (counted before each read, failed or not), not only
        // what the report says.
        let asked = context.lake.bytes_requested();
        assert!(asked <= max, "max {max}: {asked} bytes asked");
        assert_eq!(read["complete"], false, "{read}");
        assert!(read["limit"].as_str().unwrap().contains(&format!("max_bytes_per_request={max}")), "{read}");
    }
}

#[tokio::test]
async fn a_group_touched_while_eviction_runs_stays() {
    let a = archived_january().await;
    let context = ApiContext::new(a.db.pool.clone());
    get(
        &context,
        &a.viewer,
        &format!("/api/v1/events?account={A}&since=2024-01-10T00:00:00Z&until=2024-01-12T00:00:00Z"),
    )
    .await;
    sqlx::query("UPDATE lake_loaded_groups SET used_at = now() - interval '1 hour'").execute(&a.db.pool).await.unwrap();
    let groups = a.db.count("SELECT count(*) FROM lake_loaded_groups").await;
    assert!(groups >= 6, "{groups}");
    let (object, group): (String, i32) =
        sqlx::query_as("SELECT lake_object, row_group FROM lake_loaded_groups ORDER BY 1, 2 LIMIT 1")
            .fetch_one(&a.db.pool)
            .await
            .unwrap();
    // A request marks the group used, not committed yet when eviction picks its candidates.
    let mut touching = skywarden::db::begin(&a.db.pool).await.unwrap();
    sqlx::query("UPDATE lake_loaded_groups SET used_at = now() WHERE lake_object = $1 AND row_group = $2")
        .bind(&object)
        .bind(group)
        .execute(&mut *touching)
        .await
        .unwrap();
    let pool = a.db.pool.clone();
    let eviction =
        tokio::spawn(
            async move { Lake::new(LakeLimits { cache_max_rows: 0, ..LakeLimits::default() }).evict(&pool).await },
        );
    // Eviction waits on the marked row.
    let mut waited = 0;
    while a
        .db
        .count("SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND wait_event_type = 'Lock'")
        .await
        == 0
    {
        waited += 1;
        assert!(waited < 500, "eviction never waited on the marked group");
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    touching.commit().await.unwrap();
    let evicted = eviction.await.unwrap().unwrap();
    assert_eq!(evicted as i64, groups - 1);
    assert_eq!(a.db.count("SELECT count(*) FROM lake_loaded_groups").await, 1, "the touched group stays");
    let rows = a
        .db
        .count(&format!("SELECT count(*) FROM lake_events WHERE lake_object = '{object}' AND lake_row_group = {group}"))
        .await;
    assert_eq!(rows, 30, "with its rows");
    assert_eq!(a.db.count("SELECT count(*) FROM lake_events").await, 30);
}

#[tokio::test]
async fn an_export_keeps_its_row_groups_until_it_ends_and_raw_numbers_round_trip() {
    let a = archived_january().await;
    let context = ApiContext::new(a.db.pool.clone());
    // Without since: 50 account-days are more than the default bound; one account's 25 fit.
    let (status, body) = call_with(&context, "GET", "/api/v1/events/export?format=csv", Some(&a.viewer), None).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert!(body["error"].as_str().unwrap().contains("max_days_per_request=31"), "{body}");
    let request = Request::builder()
        .uri(format!("/api/v1/events/export?format=csv&account={A}"))
        .header("authorization", format!("Bearer {}", a.viewer))
        .body(Body::empty())
        .unwrap();
    let response = router(context.clone()).oneshot(request).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let mut body = response.into_body();
    let first = body.frame().await.unwrap().unwrap().into_data().unwrap();
    assert_eq!(first.iter().filter(|b| **b == b'\n').count(), 1001, "header and the first page");
    assert_eq!(Hold::live(&a.db.pool).await.unwrap(), 75, "the export holds its 75 row groups");
    assert_eq!(
        a.db.count("SELECT count(*) FROM lake_loaded_groups WHERE used_at > now()").await,
        0,
        "used now, not later"
    );

    // Half an hour later, mid-export, the cache is evicted down to nothing it may drop.
    sqlx::query("UPDATE lake_loaded_groups SET used_at = used_at - interval '30 minutes'")
        .execute(&a.db.pool)
        .await
        .unwrap();
    Lake::new(LakeLimits { cache_max_rows: 0, ..LakeLimits::default() }).evict(&a.db.pool).await.unwrap();
    let mut lines = first.iter().filter(|b| **b == b'\n').count();
    while let Some(frame) = body.frame().await {
        lines += frame.unwrap().into_data().unwrap().iter().filter(|b| **b == b'\n').count();
    }
    assert_eq!(lines, 1 + 2250, "every event of the account, none evicted mid-export");
    assert_eq!(a.db.count("SELECT count(*) FROM lake_loaded_groups").await, 75);
    // Once it ends, its hold is released and its groups are evicted in their turn.
    no_live_hold(&a.db).await;

    // Every raw event as the hot table held it: 2.50 stays 2.50, the big integer exact.
    let after: Vec<(String, String)> = sqlx::query_as("SELECT event_id, raw::text FROM lake_events ORDER BY event_id")
        .fetch_all(&a.db.pool)
        .await
        .unwrap();
    assert_eq!(after.len(), 2250);
    let before: std::collections::HashMap<&str, &str> =
        a.raw_before.iter().map(|(id, raw)| (id.as_str(), raw.as_str())).collect();
    for (id, raw) in &after {
        assert_eq!(Some(&raw.as_str()), before.get(id.as_str()), "{id}");
    }
    assert!(after[0].1.contains("2.50") && after[0].1.contains("12345678901234567890"), "{}", after[0].1);
}

#[tokio::test]
async fn a_failing_destination_is_reported_once_and_skipped_and_only_admins_see_its_name() {
    let a = archived_january().await;
    // The lake is now in a bucket whose endpoint does not answer.
    sqlx::query("UPDATE archive_partitions SET destination = 's3://lake-unreachable/skywarden'")
        .execute(&a.db.pool)
        .await
        .unwrap();
    let settings = fake::settings_for("http://127.0.0.1:1");
    let base = settings.load().await;
    let context = ApiContext::new(a.db.pool.clone()).with_aws(settings, base);
    let uri = format!("/api/v1/events?account={A}&since=2024-01-02T00:00:00Z&until=2024-01-12T00:00:00Z&limit=5");
    let page = get(&context, &a.admin, &uri).await;
    let read = &page["archive"];
    assert_eq!(read["complete"], false, "{read}");
    assert_eq!(read["objects_read"], 1, "one object tried, the other nine skipped: {read}");
    let errors = read["errors"].as_array().unwrap();
    assert_eq!(errors.len(), 1, "{read}");
    assert!(errors[0].as_str().unwrap().contains("lake-unreachable"), "an administrator sees the bucket: {read}");
    assert!(page["events"].as_array().unwrap().is_empty(), "the page stops at the first day not read");
    assert!(page["next_cursor"].is_null(), "a gap at the page's own start gives no cursor");

    // Within a minute the destination is not asked again; a viewer is not told its name.
    let page = get(&context, &a.viewer, &uri).await;
    let read = &page["archive"];
    assert_eq!(read["objects_read"], 0, "{read}");
    let errors = read["errors"].as_array().unwrap();
    assert_eq!(errors.len(), 1, "{read}");
    assert!(!read.to_string().contains("lake-unreachable") && !read.to_string().contains("skywarden/"), "{read}");
    assert!(errors[0].as_str().unwrap().contains("archived object unreadable"), "{read}");
    let (status, body) = call_with(
        &context,
        "GET",
        &format!("/api/v1/events/export?account={A}&since=2024-01-02T00:00:00Z"),
        Some(&a.viewer),
        None,
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert!(!body.to_string().contains("lake-unreachable"), "{body}");
}

#[tokio::test]
async fn a_month_being_archived_makes_the_answer_incomplete() {
    let db = TestDb::new().await;
    january(&db).await;
    let (_, viewer) = auth::create(&db.pool, "lake-viewer", Role::Viewer).await.unwrap();
    // An archive run has written and verified January and detached it, not dropped it yet.
    sqlx::query(
        "WITH run AS (INSERT INTO archive_runs (destination, older_than_days, dry_run) VALUES ('/lake', 1, false) RETURNING run_id)
         INSERT INTO archive_partitions (source, month_start, generation, destination, state, run_id)
         SELECT 'cloudtrail_events', '2024-01-01T00:00:00Z', 0, '/lake', 'verified', run_id FROM run",
    )
    .execute(&db.pool)
    .await
    .unwrap();
    sqlx::query("ALTER TABLE cloudtrail_events DETACH PARTITION cloudtrail_events_p202401")
        .execute(&db.pool)
        .await
        .unwrap();
    let context = ApiContext::new(db.pool.clone());
    let page = get(
        &context,
        &viewer,
        &format!("/api/v1/events?account={A}&since=2024-01-10T00:00:00Z&until=2024-01-11T00:00:00Z"),
    )
    .await;
    assert!(page["events"].as_array().unwrap().is_empty());
    let read = &page["archive"];
    assert_eq!(read["complete"], false, "{page}");
    assert!(read["errors"][0].as_str().unwrap().contains("being archived"), "{read}");
    assert_eq!(page["total_is_lower_bound"], true);
}

#[tokio::test]
async fn days_already_cached_answer_after_the_day_bound_is_spent() {
    let a = archived_january().await;
    let limits = LakeLimits { max_days_per_request: 1, ..LakeLimits::default() };
    let loader = ApiContext::new(a.db.pool.clone()).with_lake(limits.clone());
    let day = format!("/api/v1/events?account={A}&since=2024-01-10T00:00:00Z&until=2024-01-11T00:00:00Z");
    assert_eq!(get(&loader, &a.viewer, &day).await["archive"]["complete"], true);
    // Another server (no footer in its memory) knows the day is cached.
    let context = ApiContext::new(a.db.pool.clone()).with_lake(limits);
    // Two days: the 11th spends the bound, the 10th is cached and still answers.
    let uri =
        format!("/api/v1/events?account={A}&event_name=RareCall&since=2024-01-10T00:00:00Z&until=2024-01-12T00:00:00Z");
    let page = get(&context, &a.viewer, &uri).await;
    let read = &page["archive"];
    assert_eq!(read["complete"], true, "{read}");
    assert_eq!(read["days_loaded"], 1, "{read}");
    assert_eq!(page["events"].as_array().unwrap().len(), 2, "{page}");
    assert_eq!(page["total"], 2);
}

/// Waits until no hold is live (a released hold's rows go in a spawned task).
async fn no_live_hold(db: &TestDb) {
    let mut waited = 0;
    while Hold::live(&db.pool).await.unwrap() > 0 {
        waited += 1;
        assert!(waited < 1000, "an export's hold was never released");
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
}

fn export_request(token: &str) -> Request<Body> {
    Request::builder()
        .uri(format!("/api/v1/events/export?format=csv&account={A}"))
        .header("authorization", format!("Bearer {token}"))
        .body(Body::empty())
        .unwrap()
}

#[tokio::test]
async fn an_export_dropped_mid_load_leaves_no_hold_and_each_export_holds_its_own() {
    let a = archived_january().await;
    let context = ApiContext::new(a.db.pool.clone());
    // The client goes away while the export loads its 75 row groups: the hold goes with it.
    let export = router(context.clone()).oneshot(export_request(&a.viewer));
    let held = async {
        while a.db.count("SELECT count(*) FROM lake_group_holds").await == 0 {
            tokio::time::sleep(std::time::Duration::from_millis(2)).await;
        }
    };
    tokio::select! {
        _ = export => panic!("the export loaded everything before a hold was seen"),
        () = held => {}
    }
    assert!(a.db.count("SELECT count(*) FROM lake_loaded_groups").await < 75, "dropped mid-load");
    no_live_hold(&a.db).await;
    assert_eq!(a.db.count("SELECT count(*) FROM lake_loaded_groups WHERE used_at > now()").await, 0);

    // Two exports of the same groups (as two servers would): one ending keeps the other's hold.
    let first = router(context.clone()).oneshot(export_request(&a.viewer)).await.unwrap();
    let second = router(ApiContext::new(a.db.pool.clone())).oneshot(export_request(&a.viewer)).await.unwrap();
    let (mut first, mut second) = (first.into_body(), second.into_body());
    first.frame().await.unwrap().unwrap();
    let mut lines = second.frame().await.unwrap().unwrap().into_data().unwrap().iter().filter(|b| **b == b'\n').count();
    assert_eq!(a.db.count("SELECT count(DISTINCT hold_id) FROM lake_group_holds").await, 2);
    drop(first);
    let mut waited = 0;
    while a.db.count("SELECT count(DISTINCT hold_id) FROM lake_group_holds").await > 1 {
        waited += 1;
        assert!(waited < 1000, "the first export's hold was never released");
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    assert_eq!(Hold::live(&a.db.pool).await.unwrap(), 75, "the second export still holds every group");
    sqlx::query("UPDATE lake_loaded_groups SET used_at = now() - interval '1 hour'").execute(&a.db.pool).await.unwrap();
    Lake::new(LakeLimits { cache_max_rows: 0, ..LakeLimits::default() }).evict(&a.db.pool).await.unwrap();
    assert_eq!(a.db.count("SELECT count(*) FROM lake_loaded_groups").await, 75, "held: not evicted");
    while let Some(frame) = second.frame().await {
        lines += frame.unwrap().into_data().unwrap().iter().filter(|b| **b == b'\n').count();
    }
    assert_eq!(lines, 1 + 2250);
    drop(second);
    no_live_hold(&a.db).await;
    Lake::new(LakeLimits { cache_max_rows: 0, ..LakeLimits::default() }).evict(&a.db.pool).await.unwrap();
    assert_eq!(a.db.count("SELECT count(*) FROM lake_loaded_groups").await, 0, "released: evicted in its turn");
}

#[tokio::test]
async fn the_cache_bound_is_checked_before_each_row_group() {
    let a = archived_january().await;
    // A day is three groups of 30 rows: the second would pass 45.
    let context =
        ApiContext::new(a.db.pool.clone()).with_lake(LakeLimits { cache_max_rows: 45, ..LakeLimits::default() });
    let uri = format!("/api/v1/events?account={A}&since=2024-01-10T00:00:00Z&until=2024-01-11T00:00:00Z");
    let page = get(&context, &a.viewer, &uri).await;
    let read = &page["archive"];
    assert_eq!(read["complete"], false, "{read}");
    assert!(read["limit"].as_str().unwrap().contains("cache_max_rows=45"), "{read}");
    assert_eq!(read["row_groups_read"], 1, "{read}");
    assert_eq!(a.db.count("SELECT coalesce(sum(rows_loaded), 0)::bigint FROM lake_loaded_groups").await, 30);
    assert_eq!(a.db.count("SELECT count(*) FROM lake_events").await, 30);
}

#[tokio::test]
async fn two_servers_loading_the_same_range_load_each_group_once() {
    let a = archived_january().await;
    let (one, two) = (ApiContext::new(a.db.pool.clone()), ApiContext::new(a.db.pool.clone()));
    let uri = format!("/api/v1/events?account={A}&since=2024-01-05T00:00:00Z&until=2024-01-12T00:00:00Z&limit=1000");
    let (first, second) = tokio::join!(get(&one, &a.viewer, &uri), get(&two, &a.viewer, &uri));
    for page in [&first, &second] {
        assert_eq!(page["archive"]["complete"], true, "{}", page["archive"]);
        assert_eq!(page["events"].as_array().unwrap().len(), 7 * 90);
        assert_eq!(page["total"], 7 * 90);
    }
    assert_eq!(first["events"], second["events"]);
    let read = |p: &Value| p["archive"]["row_groups_read"].as_i64().unwrap();
    assert_eq!(read(&first) + read(&second), 21, "each of the 21 groups loaded by one of them");
    assert_eq!(a.db.count("SELECT count(*) FROM lake_loaded_groups").await, 21);
    assert_eq!(a.db.count("SELECT count(*) FROM lake_events").await, 7 * 90, "no row twice");
}

#[tokio::test]
async fn an_unfiltered_follow_stops_at_a_failing_day_with_the_midnight_events_shown_once() {
    let a = archived_january().await;
    // Account A's 10 January is gone from the lake (B's is there).
    let gone = walk(a._lake.path()).into_iter().find(|p| {
        let p = p.to_string_lossy();
        p.contains(&format!("accountId={A}/")) && p.contains("eventDay=20240110/")
    });
    std::fs::remove_file(gone.expect("the object of A's 10 January")).unwrap();
    let (ids, pages) = follow_counting(&ApiContext::new(a.db.pool.clone()), &a.viewer, "limit=500").await;
    // Newest first, down to the failing day's end: event i is at 1 January + (i / 2) × 16
    // minutes (+ 1 s for B), so evt-1800 is A's at 11 January 00:00:00 exactly.
    let expected: Vec<String> = (1800..4500).rev().map(|i| format!("evt-{i}")).collect();
    assert_eq!(ids.len(), expected.len(), "{pages} pages");
    assert_eq!(ids, expected);
    let last =
        get(&ApiContext::new(a.db.pool.clone()), &a.viewer, "/api/v1/events?until=2024-01-11T00:00:01Z&limit=5").await;
    assert_eq!(last["archive"]["complete"], false, "{}", last["archive"]);
    assert_eq!(last["events"][0]["event_id"], "evt-1800", "{last}");
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() { files.extend(walk(&path)) } else { files.push(path) }
    }
    files
}

#[tokio::test]
async fn a_missing_key_fails_its_object_and_a_missing_bucket_its_destination() {
    let db = TestDb::new().await;
    january(&db).await;
    let (_, admin) = auth::create(&db.pool, "lake-admin", Role::Admin).await.unwrap();
    let moto = fake::moto_url().await;
    let settings = fake::settings_for(moto);
    let base = settings.load().await;
    let (s3, bucket) = lake::bucket(&settings).await;
    archive_with(&db, &format!("s3://{bucket}/lake"), &settings).await;
    let key: String = sqlx::query_scalar(
        "SELECT o FROM archive_partitions, unnest(objects) o WHERE o LIKE '%accountId=111111111111/eventDay=20240111/%'",
    )
    .fetch_one(&db.pool)
    .await
    .unwrap();
    s3.delete_object().bucket(&bucket).key(format!("lake/{key}")).send().await.unwrap();
    let context = ApiContext::new(db.pool.clone()).with_aws(settings.clone(), base.clone());
    let uri = format!("/api/v1/events?account={A}&since=2024-01-10T00:00:00Z&until=2024-01-12T00:00:00Z");
    let page = get(&context, &admin, &uri).await;
    let read = &page["archive"];
    assert_eq!(read["complete"], false, "{read}");
    assert_eq!(read["objects_read"], 2, "the 10th is still read: {read}");
    assert_eq!(read["rows_loaded"], 90, "{read}");
    let errors = read["errors"].as_array().unwrap();
    assert_eq!(errors.len(), 1, "the missing day is tried once: {read}");
    assert!(errors[0].as_str().unwrap().contains(&key) && !errors[0].as_str().unwrap().contains("skipped"), "{read}");

    // The bucket gone: the destination fails, its other objects are skipped.
    sqlx::query("TRUNCATE lake_events, lake_loaded_groups").execute(&db.pool).await.unwrap();
    sqlx::query("UPDATE archive_partitions SET destination = $1")
        .bind(format!("s3://{bucket}-gone/lake"))
        .execute(&db.pool)
        .await
        .unwrap();
    let context = ApiContext::new(db.pool.clone()).with_aws(settings, base);
    let page = get(&context, &admin, &uri).await;
    let read = &page["archive"];
    assert_eq!(read["objects_read"], 1, "{read}");
    assert!(read["errors"][0].as_str().unwrap().contains("skipped"), "{read}");
}

#[tokio::test]
async fn a_forged_cursor_at_the_latest_time_is_a_bad_request() {
    let db = TestDb::new().await;
    let (_, viewer) = auth::create(&db.pool, "lake-viewer", Role::Viewer).await.unwrap();
    let max = chrono::DateTime::<chrono::Utc>::MAX_UTC.to_rfc3339_opts(chrono::SecondsFormat::Micros, true);
    let time: chrono::DateTime<chrono::Utc> = max.parse().expect("the latest time parses back");
    assert_eq!(time.timestamp_micros(), chrono::DateTime::<chrono::Utc>::MAX_UTC.timestamp_micros());
    let cursor: String = format!("{max}\u{1f}{A}\u{1f}evt").bytes().map(|b| format!("{b:02x}")).collect();
    let context = ApiContext::new(db.pool.clone());
    let (status, body) =
        call_with(&context, "GET", &format!("/api/v1/events?cursor={cursor}"), Some(&viewer), None).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert_eq!(body["field"], "cursor", "{body}");
}
