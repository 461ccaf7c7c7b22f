//! Full text (`q`) over archived events (issue 18): events read back from the lake into the
//! cache match through the search text stored when they were loaded (migration 0046) exactly as
//! they matched hot, through the API; counts are exact under their cap and capped above it, by
//! each way of counting, with events both hot and cached, and cached twice.

use axum::http::StatusCode;
use serde_json::Value;
use skywarden::archive::read::LakeLimits;
use skywarden::auth::{self, Role};
use skywarden::http::ApiContext;
use skywarden::search::contains_pattern;
use skywarden::search::events::{self, EventFilter, text_search::count_by};

use crate::api::call_with;
use crate::support::{TestDb, lake, sample};

/// The sample incident, its full-text index built, a viewer's token and an API that reads the lake.
async fn incident() -> (TestDb, ApiContext, String) {
    let db = TestDb::new().await;
    sample::import_incident(&db, tempfile::tempdir().unwrap().path());
    skywarden::search::index::run(&db.pool).await.unwrap();
    let (_, token) = auth::create(&db.pool, "lake-text-search", Role::Viewer).await.unwrap();
    let context =
        ApiContext::new(db.pool.clone()).with_lake(LakeLimits { max_days_per_request: 1000, ..LakeLimits::default() });
    (db, context, token)
}

/// Every event `q=word` answers through the API (its key and `archived` mark, following the
/// cursors, pages of 7) and its total.
async fn found(context: &ApiContext, token: &str, word: &str) -> (Vec<(String, String, String, bool)>, i64) {
    let (mut events, mut total) = (Vec::new(), None);
    let mut uri = format!("/api/v1/events?q={word}&limit=7");
    for _ in 0..500 {
        let (status, page) = call_with(context, "GET", &uri, Some(token), None).await;
        assert_eq!(status, StatusCode::OK, "{uri}: {page}");
        total.get_or_insert(page["total"].as_i64().unwrap());
        for event in page["events"].as_array().unwrap() {
            let text = |f: &str| event[f].as_str().unwrap().to_owned();
            events.push((
                text("account_id"),
                text("event_time"),
                text("event_id"),
                event["archived"] == Value::Bool(true),
            ));
        }
        match page["next_cursor"].as_str() {
            Some(cursor) => uri = format!("/api/v1/events?q={word}&limit=7&cursor={cursor}"),
            None => return (events, total.unwrap()),
        }
    }
    panic!("q={word}: more pages than expected");
}

/// Words to search the sample by: a value of a request parameter a few events hold, the same in
/// upper case, one event's id, and the service domain most events name.
async fn words(db: &TestDb) -> Vec<String> {
    let parameter: String = sqlx::query_scalar(
        "SELECT v #>> '{}' FROM cloudtrail_events, jsonb_path_query(raw -> 'requestParameters', 'strict $.**') v
         WHERE jsonb_typeof(v) = 'string' AND (v #>> '{}') ~ '^[a-z][A-Za-z0-9._-]{7,40}$'
         GROUP BY 1 HAVING count(DISTINCT event_id) BETWEEN 2 AND 20 ORDER BY count(*) DESC, 1 LIMIT 1",
    )
    .fetch_one(&db.pool)
    .await
    .unwrap();
    let id: String =
        sqlx::query_scalar("SELECT raw ->> 'eventID' FROM cloudtrail_events ORDER BY event_time, event_id LIMIT 1")
            .fetch_one(&db.pool)
            .await
            .unwrap();
    vec![parameter.clone(), parameter.to_uppercase(), id, "amazonaws.com".into()]
}

#[tokio::test]
async fn q_finds_archived_events_exactly_as_it_found_them_hot() {
    let (db, context, token) = incident().await;
    let words = words(&db).await;
    let stored: i64 = sqlx::query_scalar("SELECT count(*) FROM cloudtrail_events").fetch_one(&db.pool).await.unwrap();
    let mut hot = Vec::new();
    for word in &words {
        let (events, total) = found(&context, &token, word).await;
        assert_eq!(events.len() as i64, total, "{word}");
        assert!(events.iter().all(|e| !e.3), "{word}: hot");
        hot.push(events);
    }
    assert_eq!(hot[0], hot[1], "any case");
    assert!(hot[0].len() >= 2, "{}: {:?}", words[0], hot[0]);
    assert_eq!(hot[2].len(), 1, "one event's id");
    assert!(hot[3].len() as i64 > stored / 2, "common: {} of {stored}", hot[3].len());

    let dir = tempfile::tempdir().unwrap();
    lake::archive_before_december_2026(&db, dir.path().to_str().unwrap(), &lake::no_aws(), 7).await;
    let left: i64 = sqlx::query_scalar("SELECT count(*) FROM cloudtrail_events").fetch_one(&db.pool).await.unwrap();
    assert_eq!(left, 0, "the month was archived");
    for (word, expected) in words.iter().zip(&hot) {
        let (events, total) = found(&context, &token, word).await;
        assert_eq!(total, expected.len() as i64, "{word}, archived");
        let keys = |events: &[(String, String, String, bool)]| {
            events.iter().map(|(a, t, i, _)| (a.clone(), t.clone(), i.clone())).collect::<Vec<_>>()
        };
        assert_eq!(keys(&events), keys(expected), "{word}, archived");
        assert!(events.iter().all(|e| e.3), "{word}: read from the lake");
    }
    // Every cached event holds what the hot side's index held for it, computed at load.
    let (cached, differing): (i64, i64) = sqlx::query_as(
        "SELECT count(*), count(*) FILTER (WHERE search_text IS DISTINCT FROM skywarden_event_search_text(raw))
         FROM lake_events",
    )
    .fetch_one(&db.pool)
    .await
    .unwrap();
    assert_eq!((cached, differing), (stored, 0));
    // And that stored text is what `q` matches in the cache (the projection is not recomputed).
    let marked: String = sqlx::query_scalar(
        "UPDATE lake_events SET search_text = search_text || ' zebra-marker-42'
         WHERE event_id = (SELECT min(event_id) FROM lake_events) RETURNING event_id",
    )
    .fetch_one(&db.pool)
    .await
    .unwrap();
    let (events, total) = found(&context, &token, "ZEBRA-marker-42").await;
    assert_eq!((events.len(), total), (1, 1));
    assert_eq!((events[0].2.as_str(), events[0].3), (marked.as_str(), true));
}

/// The number of distinct events `pattern` matches among hot and cached ones, computed from the
/// raw events (an oracle independent of the search's statements).
async fn distinct_matches(db: &TestDb, pattern: &str) -> i64 {
    sqlx::query_scalar(
        "SELECT count(*) FROM (SELECT DISTINCT account_id, event_time, event_id FROM audit_event_copies
                               WHERE skywarden_event_search_text(raw) ILIKE $1) m",
    )
    .bind(pattern)
    .fetch_one(&db.pool)
    .await
    .unwrap()
}

/// `filter`'s count by every way of counting, at caps under, at and over `expected`.
async fn check_counts(db: &TestDb, filter: &EventFilter, expected: i64, round: &str) {
    assert_eq!(events::count(&db.pool, filter, 100_000).await.unwrap(), expected, "{round}");
    assert_eq!(events::count(&db.pool, filter, expected).await.unwrap(), expected, "{round}: at the cap");
    assert_eq!(events::count(&db.pool, filter, expected - 1).await.unwrap(), expected - 1, "{round}: capped");
    assert_eq!(events::count(&db.pool, filter, 3).await.unwrap(), 3, "{round}: capped");
    for cap in [3, expected - 1, expected, 100_000] {
        let trigrams = count_by(&db.pool, filter, cap, None).await.unwrap();
        assert_eq!(trigrams, Some(expected.min(cap)), "{round}: trigram path, cap {cap}");
        // A window of every row answers.
        let whole = count_by(&db.pool, filter, cap, Some(100_000)).await.unwrap();
        assert_eq!(whole, Some(expected.min(cap)), "{round}: whole window, cap {cap}");
    }
    assert_eq!(count_by(&db.pool, filter, 100_000, Some(1)).await.unwrap(), None, "{round}: a window too short");
}

#[tokio::test]
async fn counts_are_exact_under_the_cap_and_capped_above_with_events_hot_and_cached_twice() {
    let (db, context, token) = incident().await;
    let pattern = contains_pattern("amazonaws.com");
    let filter = EventFilter { text: Some(pattern.clone()), ..EventFilter::default() };
    let expected = distinct_matches(&db, &pattern).await;
    assert!(expected > 10, "{expected}");
    check_counts(&db, &filter, expected, "hot").await;

    let dir = tempfile::tempdir().unwrap();
    lake::archive_before_december_2026(&db, dir.path().to_str().unwrap(), &lake::no_aws(), 7).await;
    // The API's count loads every archived day of the range into the cache.
    let (status, body) = call_with(&context, "GET", "/api/v1/events?q=amazonaws.com&limit=1", Some(&token), None).await;
    assert_eq!((status, body["total"].as_i64()), (StatusCode::OK, Some(expected)), "{body}");
    check_counts(&db, &filter, expected, "archived").await;

    // Each event cached twice (two objects), then a third of them stored hot again (old log files
    // imported again, not indexed yet, then indexed).
    sqlx::query("INSERT INTO lake_events SELECT * FROM lake_events").execute(&db.pool).await.unwrap();
    sqlx::query(
        "UPDATE lake_events SET lake_object = lake_object || '.again'
         WHERE ctid IN (SELECT max(ctid) FROM lake_events GROUP BY account_id, event_time, event_id)",
    )
    .execute(&db.pool)
    .await
    .unwrap();
    check_counts(&db, &filter, expected, "cached twice").await;
    sqlx::query("SELECT skywarden_ensure_month_partition('cloudtrail_events', '2026-11-01T00:00:00Z')")
        .execute(&db.pool)
        .await
        .unwrap();
    let columns = "account_id, event_time, event_id, region, event_source, event_name, event_type, principal_arn, \
                   principal_type, principal_id, user_name, access_key_id, source_ip, source_ip_text, user_agent, \
                   error_code, error_message, read_only, resource_ids, geo_country, geo_city, geo_latitude, \
                   geo_longitude, geo_asn, geo_as_org, raw, source_is_tor, source_is_vpn, source_is_hosting, source_is_aws";
    let again = sqlx::query(&format!(
        "INSERT INTO cloudtrail_events ({columns}) SELECT DISTINCT ON (account_id, event_time, event_id) {columns}
         FROM lake_events WHERE md5(event_id) < '5' ORDER BY account_id, event_time, event_id"
    ))
    .execute(&db.pool)
    .await
    .unwrap()
    .rows_affected() as i64;
    assert!(again > 0, "some events are hot again");
    assert_eq!(distinct_matches(&db, &pattern).await, expected, "the same events");
    check_counts(&db, &filter, expected, "hot and cached, tail").await;
    skywarden::search::index::run(&db.pool).await.unwrap();
    check_counts(&db, &filter, expected, "hot and cached, indexed").await;
}
