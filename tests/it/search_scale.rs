//! Full text at scale (issue 18, migrations 0051, 0054, 0055 and 0056): the indexes are asked
//! for the selective part of a `q` pattern (a stretch of its trigrams, the tokens its words or
//! its dotted numbers start), and the pattern itself is matched on what they return. Whichever
//! way a search goes, its pages and counts are those of the pattern alone: compared here with a
//! scan, for searches that take each way.

use chrono::{DateTime, Duration, Utc};
use skywarden::db::partitions::{PartitionCache, PartitionedTable};
use skywarden::search::contains_pattern;
use skywarden::search::events::{EventFilter, text_search};

use crate::support::TestDb;

fn base() -> DateTime<Utc> {
    "2026-10-20T00:00:00Z".parse().unwrap()
}

/// 600 events, one every two hours from 20 October (across the 1 November boundary), each with
/// a security group numbered as the queries benchmark numbers them (17 hexadecimal digits,
/// zero-padded: most of their trigrams are in every event), one group in three events' text
/// twice, principals `user<n>` and addresses `176.36.<g % 30>.<g % 13>`.
async fn store(db: &TestDb) {
    let mut conn = db.pool.acquire().await.unwrap();
    let months = vec![base(), base() + Duration::days(15), base() + Duration::days(45)];
    PartitionCache::default().ensure(&mut conn, PartitionedTable::CloudTrailEvents, months).await.unwrap();
    sqlx::query(
        "INSERT INTO cloudtrail_events (account_id, event_time, event_id, event_name, raw)
         SELECT '1111222233' || lpad((g % 5)::text, 2, '0'), $1 + g * interval '2 hours', 'evt-' || g, 'Event' || (g % 7),
                jsonb_build_object('eventName', 'Event' || (g % 7), 'eventID', 'evt-' || g,
                                   'sourceIPAddress', '176.36.' || (g % 30) || '.' || (g % 13),
                                   'userIdentity', jsonb_build_object('userName', 'user' || (g % 11)),
                                   'requestParameters', jsonb_build_object(
                                        'groupId', 'sg-' || lpad(to_hex((g * 7) % 300), 17, '0'),
                                        'note', CASE WHEN g % 3 = 0 THEN 'Sg-' || upper(lpad(to_hex(g % 300), 17, '0')) || '-x' END))
         FROM generate_series(1, 600) g",
    )
    .bind(base())
    .execute(&mut *conn)
    .await
    .unwrap();
}

/// The keys a scan finds for `pattern` in `[since, until)`, newest first.
async fn scanned(db: &TestDb, pattern: &str, since: DateTime<Utc>, until: DateTime<Utc>) -> Vec<String> {
    sqlx::query_scalar(
        "SELECT event_id FROM cloudtrail_events
         WHERE skywarden_event_search_text(raw) ILIKE $1 AND event_time >= $2 AND event_time < $3
         ORDER BY event_time DESC, account_id DESC, event_id DESC",
    )
    .bind(pattern)
    .bind(since)
    .bind(until)
    .fetch_all(&db.pool)
    .await
    .unwrap()
}

/// Which way the indexes are asked: a trigram pattern (the selective part of the search's) or a
/// token query, or neither (the search's pattern itself).
async fn route(db: &TestDb, pattern: &str) -> (Option<String>, Option<String>) {
    sqlx::query_as("SELECT trigram_pattern, token_query::text FROM skywarden_search_index($1)")
        .bind(pattern)
        .fetch_one(&db.pool)
        .await
        .unwrap()
}

#[tokio::test]
async fn selective_parts_and_tokens_give_the_patterns_own_pages_and_counts() {
    let db = TestDb::new().await;
    store(&db).await;
    // Before the index has statistics the pattern is asked as it is (neither).
    assert_eq!(route(&db, &contains_pattern("sg-0000000000000000e")).await, (None, None));
    skywarden::search::index::run(&db.pool).await.unwrap();
    sqlx::raw_sql("ANALYZE event_search").execute(&db.pool).await.unwrap();

    let texts = [
        // A selective stretch of trigrams (`0012b`), in a word that starts a token (after `-`),
        // any case: that word alone, of the token index (migration 0055).
        "SG-0000000000000012B",
        "sg-0000000000000012b",
        // The stretch itself, when no separator before it says a token starts there.
        "0000012b",
        "0000000000000012b",
        // Only common trigrams: the token its last word starts (a prefix, then a whole token),
        // and one that no event holds.
        "sg-0000000000000000e",
        "-0000000000000000e-",
        "sg-0000000000000000",
        "x-0000000000000000f",
        // Words that start no token, common ones, short ones, wildcards kept literal.
        "user1",
        "evt-1",
        "1111222233",
        "a_b%c",
        "00e",
        // Dotted numbers (migration 0056): whole addresses, a part inside one, one that starts
        // within an octet, one no event holds, and one too short to be asked.
        "176.36.1.1",
        "176.36.29.12",
        ".36.2.1",
        "76.36.2",
        "6.17.",
        "203.0.113.9",
        "1.1",
    ];
    let (mut by_trigrams, mut by_tokens) = (0, 0);
    for text in texts {
        let pattern = contains_pattern(text);
        match route(&db, &pattern).await {
            (Some(_), None) => by_trigrams += 1,
            (None, Some(_)) => by_tokens += 1,
            (None, None) => {}
            both => panic!("{text}: {both:?}"),
        }
        // A range across the month boundary, and the whole table.
        for (since, until) in
            [(base() + Duration::days(5), base() + Duration::days(30)), (base(), base() + Duration::days(60))]
        {
            let expected = scanned(&db, &pattern, since, until).await;
            let mut filter = EventFilter {
                text: Some(pattern.clone()),
                since: Some(since),
                until: Some(until),
                limit: 4,
                ..Default::default()
            };
            let mut found = Vec::new();
            loop {
                let page = text_search::page_by(&db.pool, &filter, None, false).await.unwrap().unwrap();
                let Some(last) = page.last() else { break };
                filter.after = Some((last.event_time, last.account_id.clone(), last.event_id.clone()));
                found.extend(page.iter().map(|e| e.event_id.clone()));
            }
            assert_eq!(found, expected, "{text}: pages, oldest to newest through the cursor");
            // Back the other way from the oldest match.
            if let Some(oldest) = expected.last() {
                let key =
                    sqlx::query_as("SELECT event_time, account_id, event_id FROM event_search WHERE event_id = $1")
                        .bind(oldest)
                        .fetch_one(&db.pool)
                        .await
                        .unwrap();
                filter.after = None;
                filter.limit = 1_000;
                let newer = text_search::page_by(&db.pool, &filter, Some(&key), false).await.unwrap().unwrap();
                let newer: Vec<String> = newer.iter().map(|e| e.event_id.clone()).collect();
                assert_eq!(newer, expected[..expected.len() - 1], "{text}: the page newer than the oldest");
            }
            filter.after = None;
            for cap in [3, 10_001] {
                let counted = text_search::count_by(&db.pool, &filter, cap, None).await.unwrap();
                assert_eq!(counted, Some((expected.len() as i64).min(cap)), "{text}: count capped at {cap}");
            }
        }
    }
    assert!(by_trigrams >= 2 && by_tokens >= 2, "each way taken: {by_trigrams} by trigrams, {by_tokens} by tokens");
    // A dotted run of the literal, from its first digit, as a prefix of the dotted-number tokens
    // (migration 0056); one shorter than five characters is not asked.
    assert_eq!(route(&db, &contains_pattern("176.36.1.1")).await, (None, Some("'176.36.1.1':*".to_string())));
    assert_eq!(route(&db, &contains_pattern("ip .36.2.1 ")).await, (None, Some("'36.2.1':*".to_string())));
    assert_eq!(route(&db, &contains_pattern("1.1")).await, (None, None));
    // The cheapest stretch, not the longest (migration 0054): `nt1` is in one sampled text in
    // seven (`Event1`), not common, but its posting list costs more to read than it saves.
    assert_eq!(route(&db, &contains_pattern("Event1qzx")).await, (Some("%t1qzx%".to_string()), None));
    // The word the stretch lies in, when it starts a token, alone (migration 0055): as a prefix
    // when the literal ends inside it, whole when a separator follows; not the other words.
    let word = |query: &str| (None, Some(query.to_string()));
    assert_eq!(route(&db, &contains_pattern("SG-0000000000000012B")).await, word("'0000000000000012b':*"));
    // The lake cache has no token index: it is still asked for the stretch.
    let lake: Option<String> = sqlx::query_scalar("SELECT lake_pattern FROM skywarden_search_index($1)")
        .bind(contains_pattern("SG-0000000000000012B"))
        .fetch_one(&db.pool)
        .await
        .unwrap();
    assert!(lake.as_deref().is_some_and(|p| p.starts_with('%') && p.contains("12b")), "{lake:?}");
    assert_eq!(route(&db, &contains_pattern("user10 sg-0000000000000012b x")).await, word("'0000000000000012b'"));
}
