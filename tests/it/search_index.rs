//! The full-text index kept off the import path (`search::index`): `q` finds the same events,
//! in the same pages and counts, before the indexer has run (the tail, scanned), after, and
//! across the boundary; events committed late are found; the indexer is idempotent.

use chrono::{DateTime, Duration, Utc};
use skywarden::db::partitions::{PartitionCache, PartitionedTable};
use skywarden::search::events::{self, EventFilter, EventKey};
use skywarden::search::{contains_pattern, index};

use crate::support::TestDb;

fn base() -> DateTime<Utc> {
    "2026-11-03T00:00:00Z".parse().unwrap()
}

/// Stores `count` events from minute `first` on, one a minute; every third names the security
/// group in its request parameters, the rest another one. Each insert is its own transaction.
async fn store(db: &TestDb, first: i64, count: i64) {
    let mut conn = db.pool.acquire().await.unwrap();
    PartitionCache::default().ensure(&mut conn, PartitionedTable::CloudTrailEvents, vec![base()]).await.unwrap();
    sqlx::query(
        "INSERT INTO cloudtrail_events (account_id, event_time, event_id, event_name, raw)
         SELECT '111122223333', $1 + g * interval '1 minute', 'e-' || g, 'AuthorizeSecurityGroupIngress',
                jsonb_build_object('eventName', 'AuthorizeSecurityGroupIngress',
                                   'requestParameters', jsonb_build_object('groupId',
                                        CASE WHEN g % 3 = 0 THEN 'sg-0abc123' ELSE 'sg-0fff999' END),
                                   -- A key is not a searchable field.
                                   'sg-0abc123-key', 1)
         FROM generate_series($2::bigint, $3::bigint) g",
    )
    .bind(base())
    .bind(first)
    .bind(first + count - 1)
    .execute(&mut *conn)
    .await
    .unwrap();
}

fn filter(limit: i64) -> EventFilter {
    // Any case: the search ignores it.
    EventFilter { text: Some(contains_pattern("SG-0ABC123")), limit, ..EventFilter::default() }
}

/// Every matching event's key, newest first, a page of `limit` at a time.
async fn all_pages(db: &TestDb, limit: i64) -> Vec<EventKey> {
    let mut keys = Vec::new();
    let mut search = filter(limit);
    loop {
        let page = events::search(&db.pool, &search).await.unwrap();
        assert!(page.len() as i64 <= limit);
        let Some(last) = page.last() else { break };
        search.after = Some((last.event_time, last.account_id.clone(), last.event_id.clone()));
        keys.extend(page.iter().map(|e| (e.event_time, e.account_id.clone(), e.event_id.clone())));
    }
    keys
}

fn expected(ids: impl Iterator<Item = i64>) -> Vec<String> {
    let mut ids: Vec<i64> = ids.filter(|g| g % 3 == 0).collect();
    ids.sort_unstable_by(|a, b| b.cmp(a));
    ids.into_iter().map(|g| format!("e-{g}")).collect()
}

fn ids(keys: &[EventKey]) -> Vec<String> {
    keys.iter().map(|k| k.2.clone()).collect()
}

async fn indexed_rows(db: &TestDb) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM event_search").fetch_one(&db.pool).await.unwrap()
}

#[tokio::test]
async fn q_finds_the_same_events_and_counts_before_after_and_across_indexing() {
    let db = TestDb::new().await;
    store(&db, 1, 30).await;
    // Nothing indexed: every event is in the tail, and /metrics would say so.
    let lag = index::lag(&db.pool).await.unwrap();
    assert_eq!(lag.rows_behind, 30);
    assert!(lag.indexed_until.is_none());
    let before = all_pages(&db, 4).await;
    assert_eq!(ids(&before), expected(1..=30));
    assert_eq!(events::count(&db.pool, &filter(4), 1000).await.unwrap(), 10);

    let run = index::run(&db.pool).await.unwrap();
    assert_eq!(run, index::IndexRun { indexed: 30, ran: true });
    assert_eq!(index::lag(&db.pool).await.unwrap().rows_behind, 0);
    assert_eq!(all_pages(&db, 4).await, before, "the index finds what the scan found");
    assert_eq!(events::count(&db.pool, &filter(4), 1000).await.unwrap(), 10);
    assert_eq!(events::count(&db.pool, &filter(4), 3).await.unwrap(), 3, "the cap holds");

    // Idempotent: a second run adds nothing (the overlap is re-read, not re-inserted).
    assert_eq!(index::run(&db.pool).await.unwrap().indexed, 0);
    assert_eq!(indexed_rows(&db).await, 30);

    // Newer events, not indexed yet, interleave with the indexed ones in time: pages of 4
    // cross the boundary both ways and lose or repeat nothing.
    store(&db, 31, 15).await;
    let mixed = all_pages(&db, 4).await;
    assert_eq!(ids(&mixed), expected(1..=45));
    assert_eq!(events::count(&db.pool, &filter(4), 1000).await.unwrap(), 15);
    // "Newer" from the third page's first event is the second page.
    let second = events::search(&db.pool, &EventFilter { after: Some(mixed[3].clone()), ..filter(4) }).await.unwrap();
    let newer = events::search_newer(&db.pool, &filter(4), &mixed[8]).await.unwrap();
    assert_eq!(
        newer.iter().map(|e| e.event_id.clone()).collect::<Vec<_>>(),
        second.iter().map(|e| e.event_id.clone()).collect::<Vec<_>>()
    );
    // Other filters apply to both parts: none of these events failed.
    assert!(events::search(&db.pool, &EventFilter { failed: Some(true), ..filter(50) }).await.unwrap().is_empty());

    assert_eq!(index::run(&db.pool).await.unwrap().indexed, 15);
    assert_eq!(all_pages(&db, 4).await, mixed);
    assert_eq!(indexed_rows(&db).await, 45);
}

#[tokio::test]
async fn an_event_committed_after_the_watermark_moved_is_still_found_and_indexed() {
    let db = TestDb::new().await;
    store(&db, 1, 3).await;
    // A transaction stores an event and stays open while the indexer runs: the watermark must
    // not pass its start (its `ingested_at`), or the event would never be indexed.
    let mut open = db.pool.begin().await.unwrap();
    let started: DateTime<Utc> = sqlx::query_scalar("SELECT now()").fetch_one(&mut *open).await.unwrap();
    sqlx::query(
        "INSERT INTO cloudtrail_events (account_id, event_time, event_id, raw)
         VALUES ('111122223333', $1, 'late-open', '{\"requestParameters\": {\"groupId\": \"sg-0abc123\"}}')",
    )
    .bind(base() + Duration::minutes(30))
    .execute(&mut *open)
    .await
    .unwrap();
    assert_eq!(index::run(&db.pool).await.unwrap().indexed, 3);
    let mark: DateTime<Utc> =
        sqlx::query_scalar("SELECT indexed_until FROM event_search_watermark").fetch_one(&db.pool).await.unwrap();
    assert!(mark <= started, "watermark {mark} passed an open transaction's start {started}");
    open.commit().await.unwrap();
    assert!(ids(&all_pages(&db, 10).await).contains(&"late-open".to_string()));

    // An event whose `ingested_at` is older than the watermark (a commit later than the
    // indexer could know of): inside the overlap, it is in the tail until the next run.
    sqlx::query(
        "INSERT INTO cloudtrail_events (account_id, event_time, event_id, raw, ingested_at)
         VALUES ('111122223333', $1, 'late-old', '{\"userAgent\": \"tool sg-0abc123\"}',
                 (SELECT indexed_until FROM event_search_watermark) - interval '5 seconds')",
    )
    .bind(base() + Duration::minutes(40))
    .execute(&db.pool)
    .await
    .unwrap();
    let found = ids(&all_pages(&db, 10).await);
    assert_eq!(found, ["late-old", "late-open", "e-3"]);
    assert_eq!(index::run(&db.pool).await.unwrap().indexed, 2);
    assert_eq!(ids(&all_pages(&db, 10).await), found);
    assert_eq!(index::lag(&db.pool).await.unwrap().rows_behind, 0);

    // The archive's month drop forgets the month's index entries.
    let mut conn = db.pool.acquire().await.unwrap();
    let from: DateTime<Utc> = "2026-11-01T00:00:00Z".parse().unwrap();
    let to: DateTime<Utc> = "2026-12-01T00:00:00Z".parse().unwrap();
    assert_eq!(index::forget_range(&mut conn, from, to).await.unwrap(), 5);
    assert_eq!(indexed_rows(&db).await, 0);
}
