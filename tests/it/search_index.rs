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
    assert_eq!(run, index::IndexRun { indexed: 30, ran: true, held_by: None });
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
    let mut open = skywarden::db::begin(&db.pool).await.unwrap();
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

/// Stores events `first..first+count` one a minute as [`store`] does, in `transactions`
/// transactions of their own, each a moment after the previous one: their `ingested_at` differ.
async fn store_in_transactions(db: &TestDb, first: i64, count: i64, transactions: i64) {
    let per = (count + transactions - 1) / transactions;
    let mut next = first;
    while next < first + count {
        let n = per.min(first + count - next);
        store(db, next, n).await;
        // `now()` has microseconds; make sure the next transaction starts later.
        tokio::time::sleep(std::time::Duration::from_millis(2)).await;
        next += n;
    }
}

async fn watermark(db: &TestDb) -> Option<DateTime<Utc>> {
    sqlx::query_scalar("SELECT CASE WHEN isfinite(indexed_until) THEN indexed_until END FROM event_search_watermark")
        .fetch_one(&db.pool)
        .await
        .unwrap()
}

/// Events stored before the watermark that are not in the index: always none.
async fn missed_below_watermark(db: &TestDb) -> i64 {
    db.count(
        "SELECT count(*) FROM cloudtrail_events c, event_search_watermark w
         WHERE c.ingested_at < w.indexed_until
           AND NOT EXISTS (SELECT 1 FROM event_search s WHERE s.account_id = c.account_id
                           AND s.event_time = c.event_time AND s.event_id = c.event_id)",
    )
    .await
}

#[tokio::test]
async fn a_run_that_fails_mid_way_keeps_its_chunks_and_the_next_one_finishes_without_duplicates() {
    let db = TestDb::new().await;
    // 50 events in 10 transactions: five stored at each instant.
    store_in_transactions(&db, 1, 50, 10).await;
    // A real failure from PostgreSQL in the middle of the run: the chunk holding e-23 cannot be
    // written.
    sqlx::raw_sql(
        "CREATE FUNCTION fail_on_e23() RETURNS trigger LANGUAGE plpgsql AS $$
         BEGIN RAISE EXCEPTION 'injected failure'; END $$;
         CREATE TRIGGER fail_on_e23 BEFORE INSERT ON event_search FOR EACH ROW
             WHEN (NEW.event_id = 'e-23') EXECUTE FUNCTION fail_on_e23();",
    )
    .execute(&db.pool)
    .await
    .unwrap();
    let error = index::run_in_chunks(&db.pool, 7).await.expect_err("the injected failure stops the run");
    assert!(format!("{error:?}").contains("injected failure"), "{error:?}");
    // Pages of at most 7 in the order stored (each one window of `ingested_at`, so some are
    // shorter): every page before the one holding e-23 was committed with the watermark, in
    // storage order, and nothing from e-23 on.
    let committed = indexed_rows(&db).await;
    assert!((7..=22).contains(&committed), "{committed}");
    assert_eq!(
        db.count("SELECT count(*) FROM event_search WHERE substr(event_id, 3)::int <= 22").await,
        committed,
        "a prefix of the storage order"
    );
    let mark = watermark(&db).await.expect("the committed chunks moved the watermark");
    let stored_e23: DateTime<Utc> =
        sqlx::query_scalar("SELECT ingested_at FROM cloudtrail_events WHERE event_id = 'e-23'")
            .fetch_one(&db.pool)
            .await
            .unwrap();
    assert!(mark <= stored_e23, "the watermark {mark} passed the failed chunk's instant {stored_e23}");
    assert_eq!(missed_below_watermark(&db).await, 0);
    // Searches stay exact meanwhile: indexed rows and tail together.
    assert_eq!(ids(&all_pages(&db, 4).await), expected(1..=50));
    assert_eq!(events::count(&db.pool, &filter(4), 1000).await.unwrap(), 16);

    sqlx::raw_sql("DROP TRIGGER fail_on_e23 ON event_search").execute(&db.pool).await.unwrap();
    let run = index::run_in_chunks(&db.pool, 7).await.unwrap();
    assert_eq!(run.indexed, 50 - committed as u64, "the next run indexes only what the failed one had not");
    assert_eq!(indexed_rows(&db).await, 50);
    assert_eq!(db.count("SELECT count(DISTINCT event_id) FROM event_search").await, 50);
    assert_eq!(index::lag(&db.pool).await.unwrap().rows_behind, 0);
    assert!(watermark(&db).await.unwrap() > mark);
    assert_eq!(ids(&all_pages(&db, 4).await), expected(1..=50));
}

#[tokio::test]
async fn events_committed_out_of_order_around_the_watermark_are_found_and_indexed_once() {
    let db = TestDb::new().await;
    store(&db, 1, 9).await;
    // A slow transaction stores an event between e-4 and e-5 in time, and commits only after
    // later transactions have committed and the indexer has run over them.
    let mut slow = skywarden::db::begin(&db.pool).await.unwrap();
    let slow_start: DateTime<Utc> = sqlx::query_scalar("SELECT now()").fetch_one(&mut *slow).await.unwrap();
    sqlx::query(
        "INSERT INTO cloudtrail_events (account_id, event_time, event_id, raw)
         VALUES ('111122223333', $1, 'slow', '{\"requestParameters\": {\"groupId\": \"sg-0abc123\"}}')",
    )
    .bind(base() + Duration::seconds(4 * 60 + 30))
    .execute(&mut *slow)
    .await
    .unwrap();
    store_in_transactions(&db, 10, 21, 3).await;

    // In chunks of 4: everything committed is indexed, but the watermark stays at the slow
    // transaction's start, which may still add events stored at that instant.
    let run = index::run_in_chunks(&db.pool, 4).await.unwrap();
    assert_eq!(run.indexed, 30);
    let mark = watermark(&db).await.unwrap();
    assert!(mark <= slow_start, "watermark {mark} passed the open transaction's start {slow_start}");
    assert_eq!(ids(&all_pages(&db, 4).await), expected(1..=30));

    slow.commit().await.unwrap();
    // Committed behind the watermark's back in time order, but after it in storage order: the
    // tail holds it, and the pages place it between e-3 and e-6, each event once.
    let mut with_slow = expected(1..=30);
    with_slow.insert(with_slow.iter().position(|id| id == "e-3").unwrap(), "slow".into());
    assert_eq!(ids(&all_pages(&db, 4).await), with_slow);
    assert_eq!(events::count(&db.pool, &filter(4), 1000).await.unwrap(), 11);

    assert_eq!(index::run_in_chunks(&db.pool, 4).await.unwrap().indexed, 1);
    assert_eq!(indexed_rows(&db).await, 31);
    assert_eq!(ids(&all_pages(&db, 4).await), with_slow);
    assert!(watermark(&db).await.unwrap() > slow_start);
    assert_eq!(missed_below_watermark(&db).await, 0);
}

/// A role of its own that sees other roles' sessions as pg_stat_activity shows them to an
/// unprivileged role; dropped at the end.
struct Unprivileged(String);

impl Unprivileged {
    async fn create(db: &TestDb) -> Self {
        let name = format!("sw_test_role_{}", std::process::id() ^ rand_suffix());
        sqlx::query(&format!("CREATE ROLE {name}")).execute(&db.pool).await.unwrap();
        Self(name)
    }

    async fn drop_role(self, db: &TestDb) {
        sqlx::query(&format!("DROP ROLE {}", self.0)).execute(&db.pool).await.unwrap();
    }
}

fn rand_suffix() -> u32 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().subsec_nanos()
}

#[tokio::test]
async fn the_hold_back_waits_for_open_transactions_only() {
    let db = TestDb::new().await;
    let mut own = db.pool.acquire().await.unwrap();
    // An idle session: no transaction, nothing to wait for.
    let mut idle = db.pool.acquire().await.unwrap();
    sqlx::query("SELECT 1").execute(&mut *idle).await.unwrap();
    let before: DateTime<Utc> = sqlx::query_scalar("SELECT clock_timestamp()").fetch_one(&mut *own).await.unwrap();
    let mark = index::hold_back(&mut own).await.unwrap();
    assert!(mark >= before, "an idle session held the watermark back to {mark}");

    // A long transaction that has written nothing yet: it may still insert events stored at its
    // start, so the mark waits for it; indexing itself goes on (see the test above).
    let mut open = skywarden::db::begin(&db.pool).await.unwrap();
    let started: DateTime<Utc> = sqlx::query_scalar("SELECT now()").fetch_one(&mut *open).await.unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    assert_eq!(index::hold_back(&mut own).await.unwrap(), started);
    open.rollback().await.unwrap();

    // Seen by a role that may not read other roles' sessions: the idle ones are still ignored
    // (they show no transaction id and no snapshot) ...
    let role = Unprivileged::create(&db).await;
    sqlx::query(&format!("SET ROLE {}", role.0)).execute(&mut *own).await.unwrap();
    let hidden_query: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND query = '<insufficient privilege>'",
    )
    .fetch_one(&mut *own)
    .await
    .unwrap();
    assert!(hidden_query >= 1, "the idle session is hidden from the role");
    let before: DateTime<Utc> = sqlx::query_scalar("SELECT clock_timestamp()").fetch_one(&mut *own).await.unwrap();
    assert!(index::hold_back(&mut own).await.unwrap() >= before, "a hidden idle session held the watermark back");
    // ... and a hidden transaction that wrote holds it back the fixed margin.
    let mut writing = skywarden::db::begin(&db.pool).await.unwrap();
    sqlx::query("SELECT txid_current()").execute(&mut *writing).await.unwrap();
    let mark = index::hold_back(&mut own).await.unwrap();
    let margin = chrono::Duration::from_std(index::HIDDEN_HOLD_BACK).unwrap();
    assert!(mark <= Utc::now() - margin + Duration::seconds(5), "{mark}");
    writing.rollback().await.unwrap();
    sqlx::query("RESET ROLE").execute(&mut *own).await.unwrap();
    drop((own, idle));
    role.drop_role(&db).await;
}

async fn lease(db: &TestDb) -> (Option<String>, bool) {
    let row: (Option<String>, bool) =
        sqlx::query_as("SELECT lease_owner, lease_until > now() FROM event_search_watermark")
            .fetch_one(&db.pool)
            .await
            .unwrap();
    row
}

#[tokio::test]
async fn a_run_holds_a_lease_not_a_session_lock_and_a_held_lease_skips_the_run_visibly() {
    let db = TestDb::new().await;
    store(&db, 1, 9).await;
    // Another process's live lease: this run does nothing and says who holds it.
    sqlx::query(
        "UPDATE event_search_watermark SET lease_owner = 'other/42/run', lease_until = now() + interval '1 minute'",
    )
    .execute(&db.pool)
    .await
    .unwrap();
    let run = index::run(&db.pool).await.unwrap();
    assert_eq!(run, index::IndexRun { indexed: 0, ran: false, held_by: Some("other/42/run".into()) });
    assert!(index::lockouts_in_a_row() >= 1);
    assert_eq!(indexed_rows(&db).await, 0);
    // An expired lease (its process died) is taken over.
    sqlx::query("UPDATE event_search_watermark SET lease_until = now() - interval '1 second'")
        .execute(&db.pool)
        .await
        .unwrap();
    assert_eq!(
        index::run_in_chunks(&db.pool, 2).await.unwrap(),
        index::IndexRun { indexed: 9, ran: true, held_by: None }
    );
    // Released at the end, and nothing of the run's is left on a session: no advisory lock.
    assert_eq!(lease(&db).await, (None, false));
    assert_eq!(
        db.count(
            "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory'
             AND database = (SELECT oid FROM pg_database WHERE datname = current_database())"
        )
        .await,
        0
    );
}

#[tokio::test]
async fn keyset_pages_lose_and_repeat_nothing_when_many_events_share_every_ordering_column() {
    let db = TestDb::new().await;
    store(&db, 1, 1).await;
    // 23 events stored by one transaction (one `ingested_at`) at the same event time, under
    // accounts and ids that only the last two key columns tell apart: pages of 5 must cut
    // inside the tie.
    sqlx::query(
        "INSERT INTO cloudtrail_events (account_id, event_time, event_id, raw)
         SELECT lpad((g % 3)::text, 12, '9'), $1, 'tie-' || g, '{\"requestParameters\": {\"groupId\": \"sg-0abc123\"}}'
         FROM generate_series(1, 23) g",
    )
    .bind(base() + Duration::minutes(5))
    .execute(&db.pool)
    .await
    .unwrap();
    let run = index::run_in_chunks(&db.pool, 5).await.unwrap();
    assert_eq!(run.indexed, 24);
    assert_eq!(indexed_rows(&db).await, 24);
    assert_eq!(missed_below_watermark(&db).await, 0);
    assert_eq!(index::lag(&db.pool).await.unwrap().rows_behind, 0);
}

#[tokio::test]
async fn shutdown_stops_a_run_between_chunks_and_releases_its_lease() {
    let db = TestDb::new().await;
    store_in_transactions(&db, 1, 50, 10).await;
    let stop = std::sync::atomic::AtomicBool::new(true);
    let run = index::run_until(&db.pool, 7, &stop).await.unwrap();
    assert_eq!(run.indexed, 7, "one chunk, then the stop is seen");
    assert_eq!(lease(&db).await, (None, false));
    assert_eq!(missed_below_watermark(&db).await, 0);
    assert_eq!(index::run_in_chunks(&db.pool, 7).await.unwrap().indexed, 43);
}

#[tokio::test]
async fn a_run_cancelled_mid_chunk_frees_the_lease_for_the_next_run_at_once() {
    let db = TestDb::new().await;
    store(&db, 1, 9).await;
    // Writing e-3 to the index sleeps while `slow_index` says so.
    sqlx::raw_sql(
        "CREATE TABLE slow_index (slow boolean NOT NULL);
         INSERT INTO slow_index VALUES (true);
         CREATE FUNCTION sleep_on_e3() RETURNS trigger LANGUAGE plpgsql AS $$
         BEGIN IF (SELECT slow FROM slow_index) THEN PERFORM pg_sleep(3); END IF; RETURN NEW; END $$;
         CREATE TRIGGER sleep_on_e3 BEFORE INSERT ON event_search FOR EACH ROW
             WHEN (NEW.event_id = 'e-3') EXECUTE FUNCTION sleep_on_e3();",
    )
    .execute(&db.pool)
    .await
    .unwrap();
    let pool = db.pool.clone();
    let running = tokio::spawn(async move { index::run_in_chunks(&pool, 2).await });
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while lease(&db).await.0.is_none() {
        assert!(std::time::Instant::now() < deadline, "the run never took the lease");
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    // Into the chunk holding e-3 (the first, e-1 and e-2, is committed).
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    running.abort();
    assert!(running.await.unwrap_err().is_cancelled());
    sqlx::query("UPDATE slow_index SET slow = false").execute(&db.pool).await.unwrap();
    // Released by the dropped run, long before the lease would expire.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(2);
    while lease(&db).await.0.is_some() {
        assert!(std::time::Instant::now() < deadline, "the cancelled run's lease was not released");
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    let run = index::run_in_chunks(&db.pool, 2).await.unwrap();
    assert!(run.ran, "{run:?}");
    assert_eq!(indexed_rows(&db).await, 9);
    assert_eq!(db.count("SELECT count(DISTINCT event_id) FROM event_search").await, 9);
}

#[tokio::test]
async fn index_partition_indexes_a_reattached_months_hidden_events_once() {
    let db = TestDb::new().await;
    store(&db, 1, 30).await;
    assert_eq!(index::run(&db.pool).await.unwrap().indexed, 30);
    // As if the month had been detached while the watermark moved on: stored long before the
    // watermark, not in the index, so neither the tail nor the indexer would ever cover them.
    sqlx::raw_sql(
        "UPDATE cloudtrail_events SET ingested_at = ingested_at - interval '1 hour';
         DELETE FROM event_search;",
    )
    .execute(&db.pool)
    .await
    .unwrap();
    assert_eq!(index::run(&db.pool).await.unwrap().indexed, 0);
    assert!(all_pages(&db, 4).await.is_empty(), "hidden from q");
    let partition: String = sqlx::query_scalar(
        "SELECT c.relname::text FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
         WHERE i.inhparent = 'cloudtrail_events'::regclass
           AND EXISTS (SELECT 1 FROM cloudtrail_events e WHERE e.tableoid = c.oid)",
    )
    .fetch_one(&db.pool)
    .await
    .unwrap();
    let mut conn = db.pool.acquire().await.unwrap();
    assert_eq!(index::index_partition(&mut conn, &partition).await.unwrap(), 30);
    assert_eq!(ids(&all_pages(&db, 4).await), expected(1..=30));
    assert_eq!(index::index_partition(&mut conn, &partition).await.unwrap(), 0, "idempotent");
    for bad in ["cloudtrail_events", "event_search", "x\"; DROP TABLE event_search; --"] {
        let error = index::index_partition(&mut conn, bad).await.unwrap_err();
        assert!(matches!(error, sqlx::Error::RowNotFound), "{bad}: {error:?}");
    }
    assert_eq!(indexed_rows(&db).await, 30);
}

#[tokio::test]
async fn the_role_check_tells_whether_other_roles_idle_transactions_are_visible() {
    let db = TestDb::new().await;
    let mut conn = db.pool.acquire().await.unwrap();
    assert!(index::check_sees_all_sessions(&mut conn).await.unwrap(), "the test role is a superuser");
    let role = Unprivileged::create(&db).await;
    sqlx::query(&format!("SET ROLE {}", role.0)).execute(&mut *conn).await.unwrap();
    assert!(!index::check_sees_all_sessions(&mut conn).await.unwrap());
    sqlx::query("RESET ROLE").execute(&mut *conn).await.unwrap();
    sqlx::query(&format!("GRANT pg_read_all_stats TO {}", role.0)).execute(&db.pool).await.unwrap();
    sqlx::query(&format!("SET ROLE {}", role.0)).execute(&mut *conn).await.unwrap();
    assert!(index::check_sees_all_sessions(&mut conn).await.unwrap(), "the documented grant");
    sqlx::query("RESET ROLE").execute(&mut *conn).await.unwrap();
    drop(conn);
    sqlx::query(&format!("REVOKE pg_read_all_stats FROM {}", role.0)).execute(&db.pool).await.unwrap();
    role.drop_role(&db).await;
    // A run records the answer for `/metrics`.
    index::run(&db.pool).await.unwrap();
    assert_eq!(index::sees_all_sessions(), Some(true));
}

/// The keys and marks of a page, to compare two ways of answering it.
fn keys(page: &[events::EventSummary]) -> Vec<(EventKey, bool)> {
    page.iter().map(|e| ((e.event_time, e.account_id.clone(), e.event_id.clone()), e.archived)).collect()
}

#[tokio::test]
async fn the_window_answers_common_words_exactly_as_the_trigram_path() {
    use skywarden::search::events::text_search::page_by;
    let db = TestDb::new().await;
    // 6,000 indexed events, a third naming sg-0abc123 (a common word), then 40 newer ones not
    // indexed yet (the tail), interleaved in time with the newest indexed ones.
    store(&db, 1, 6000).await;
    // A rare word, only in old events.
    sqlx::query(
        "INSERT INTO cloudtrail_events (account_id, event_time, event_id, raw)
         SELECT '111122223333', $1 + g * interval '1 minute' + interval '10 seconds', 'n-' || g,
                jsonb_build_object('requestParameters', jsonb_build_object('bucketName', 'needle-7'))
         FROM generate_series(10, 15) g",
    )
    .bind(base())
    .execute(&db.pool)
    .await
    .unwrap();
    assert_eq!(index::run(&db.pool).await.unwrap().indexed, 6006);
    sqlx::query(
        "INSERT INTO cloudtrail_events (account_id, event_time, event_id, event_name, raw)
         SELECT '111122223333', $1 + g * interval '1 minute' + interval '30 seconds', 't-' || g, 'RunInstances',
                jsonb_build_object('eventName', 'RunInstances', 'requestParameters', jsonb_build_object('groupId', 'sg-0abc123'))
         FROM generate_series(5960, 5999) g",
    )
    .bind(base())
    .execute(&db.pool)
    .await
    .unwrap();

    let common = filter(50);
    let rare = EventFilter { text: Some(contains_pattern("NEEDLE-7")), ..filter(4) };
    let ranged = EventFilter {
        since: Some(base() + Duration::minutes(1000)),
        until: Some(base() + Duration::minutes(3000)),
        ..filter(50)
    };
    let named = EventFilter { event_name: Some("runinstances".into()), ..filter(20) };
    let mut windowed = 0;
    for search in [common, rare.clone(), ranged, named] {
        // Every page, older and older, then each page again as "newer" from the next one.
        let mut pages = Vec::new();
        let mut at = search.clone();
        loop {
            let plain = page_by(&db.pool, &at, None, false).await.unwrap().unwrap();
            let window = page_by(&db.pool, &at, None, true).await.unwrap();
            if let Some(window) = &window {
                assert_eq!(keys(window), keys(&plain), "{at:?}");
                windowed += 1;
            }
            assert_eq!(keys(&events::search(&db.pool, &at).await.unwrap()), keys(&plain));
            let Some(last) = plain.last() else { break };
            at.after = Some((last.event_time, last.account_id.clone(), last.event_id.clone()));
            pages.push(plain);
        }
        assert!(!pages.is_empty(), "{search:?} finds events");
        for pair in pages.windows(2) {
            let first = &pair[1][0];
            let before = (first.event_time, first.account_id.clone(), first.event_id.clone());
            let plain = page_by(&db.pool, &search, Some(&before), false).await.unwrap().unwrap();
            assert_eq!(keys(&plain), keys(&pair[0]));
            if let Some(window) = page_by(&db.pool, &search, Some(&before), true).await.unwrap() {
                assert_eq!(keys(&window), keys(&pair[0]));
                windowed += 1;
            }
            assert_eq!(keys(&events::search_newer(&db.pool, &search, &before).await.unwrap()), keys(&pair[0]));
        }
        let total: usize = pages.iter().map(Vec::len).sum();
        assert_eq!(events::count(&db.pool, &search, 100_000).await.unwrap() as usize, total);
    }
    assert!(windowed > 100, "the window answered the common word's pages ({windowed})");
    // The rare word is not in the newest 2,000 rows: the window's page would not be exact, and
    // the trigram path answers.
    assert!(page_by(&db.pool, &rare, None, true).await.unwrap().is_none());
    let found = events::search(&db.pool, &EventFilter { limit: 10, ..rare }).await.unwrap();
    let ids: Vec<&str> = found.iter().map(|e| e.event_id.as_str()).collect();
    assert_eq!(ids, ["n-15", "n-14", "n-13", "n-12", "n-11", "n-10"]);
}

/// An event of the verdict cases: `id` at `minutes` and `seconds` past `base()`, naming the
/// word orchid-5.
async fn store_orchid(db: &TestDb, id: &str, minutes: i64, seconds: i64) -> EventKey {
    let time = base() + Duration::minutes(minutes) + Duration::seconds(seconds);
    sqlx::query(
        "INSERT INTO cloudtrail_events (account_id, event_time, event_id, raw)
         VALUES ('111122223333', $1, $2, '{\"requestParameters\": {\"bucketName\": \"orchid-5\"}}')",
    )
    .bind(time)
    .bind(id)
    .execute(&db.pool)
    .await
    .unwrap();
    (time, "111122223333".to_owned(), id.to_owned())
}

#[tokio::test]
async fn the_window_answers_only_pages_it_proves_exact() {
    use skywarden::search::events::text_search::page_by;
    let db = TestDb::new().await;
    // 3,000 indexed events, two of them (o-) naming orchid-5; then six more naming it, not
    // indexed yet (u-): a window (2,000 index rows for pages of 3 or 10) reaches from any of
    // them to about 1,000 minutes away, so matches lie both inside and beyond it.
    store(&db, 1, 3000).await;
    let o100 = store_orchid(&db, "o-100", 100, 20).await;
    let o2991 = store_orchid(&db, "o-2991", 2991, 20).await;
    assert_eq!(index::run(&db.pool).await.unwrap().indexed, 3002);
    let mut tail = std::collections::HashMap::new();
    for minute in [50, 400, 500, 2990, 2992, 2993] {
        let id = format!("u-{minute}");
        tail.insert(minute, store_orchid(&db, &id, minute, 40).await);
    }
    let word = EventFilter { text: Some(contains_pattern("Orchid-5")), ..EventFilter::default() };
    let older = |limit: i64, after: Option<&EventKey>| EventFilter { limit, after: after.cloned(), ..word.clone() };
    // (page size, cursor, newer or older, the page newest first, whether the window may
    // answer it)
    let cases = vec![
        // Full pages within the window.
        (3, None, false, vec!["u-2993", "u-2992", "o-2991"], true),
        (3, Some(tail[&50].clone()), true, vec!["u-500", "u-400", "o-100"], true),
        // A page that is not full while the window is: tail events newer than its edge and
        // a few older (and an indexed one older, which the window did not read).
        (10, None, false, vec!["u-2993", "u-2992", "o-2991", "u-2990", "u-500", "u-400", "o-100", "u-50"], false),
        (
            10,
            Some(tail[&50].clone()),
            true,
            vec!["u-2993", "u-2992", "o-2991", "u-2990", "u-500", "u-400", "o-100"],
            false,
        ),
        (3, Some(o2991.clone()), false, vec!["u-2990", "u-500", "u-400"], false),
        // Tail events beyond the edge would fill the page, with an indexed one between them.
        (3, Some(tail[&2990].clone()), false, vec!["u-500", "u-400", "o-100"], false),
        (3, Some(tail[&500].clone()), true, vec!["u-2992", "o-2991", "u-2990"], false),
        // The window held the whole range: exact, even empty.
        (3, Some(tail[&400].clone()), false, vec!["o-100", "u-50"], true),
        (3, Some(tail[&50].clone()), false, vec![], true),
        (3, Some(tail[&2993].clone()), true, vec![], true),
    ];
    for (limit, cursor, newer, expected, exact) in cases {
        let (search, before) = match newer {
            true => (older(limit, None), cursor.as_ref()),
            false => (older(limit, cursor.as_ref()), None),
        };
        let plain = page_by(&db.pool, &search, before, false).await.unwrap().unwrap();
        let window = page_by(&db.pool, &search, before, true).await.unwrap();
        let ids = |page: &[events::EventSummary]| page.iter().map(|e| e.event_id.clone()).collect::<Vec<_>>();
        let case = format!("{limit} {} {cursor:?}", if newer { "newer than" } else { "older than" });
        assert_eq!(ids(&plain), expected, "{case}");
        match exact {
            true => assert_eq!(window.as_deref().map(ids), Some(ids(&plain)), "{case}"),
            false => assert!(window.is_none(), "{case}: the window answered {:?}", window.map(|w| ids(&w))),
        }
        let answered = match before {
            Some(before) => events::search_newer(&db.pool, &search, before).await.unwrap(),
            None => events::search(&db.pool, &search).await.unwrap(),
        };
        assert_eq!(ids(&answered), expected, "{case}");
    }
    assert_eq!(events::count(&db.pool, &older(3, None), 100).await.unwrap(), 8);
    assert_eq!(o100.2, "o-100");
}

/// Walks every page of `search` older and older, then each again as "newer" from the next one,
/// comparing the window (where it answers) with the trigram path; returns the pages, newest
/// first, and the cursors of the pages the window answered.
async fn compare_paths(db: &TestDb, search: &EventFilter) -> (Vec<Vec<events::EventSummary>>, Vec<EventKey>) {
    use skywarden::search::events::text_search::page_by;
    let key = |e: &events::EventSummary| (e.event_time, e.account_id.clone(), e.event_id.clone());
    let mut pages = Vec::new();
    let mut windowed = Vec::new();
    let mut at = search.clone();
    loop {
        let plain = page_by(&db.pool, &at, None, false).await.unwrap().unwrap();
        if let Some(window) = page_by(&db.pool, &at, None, true).await.unwrap() {
            assert_eq!(keys(&window), keys(&plain), "{at:?}");
            windowed.extend(at.after.clone());
        }
        assert_eq!(keys(&events::search(&db.pool, &at).await.unwrap()), keys(&plain));
        let Some(last) = plain.last() else { break };
        at.after = Some(key(last));
        pages.push(plain);
    }
    for pair in pages.windows(2) {
        let before = key(&pair[1][0]);
        let plain = page_by(&db.pool, search, Some(&before), false).await.unwrap().unwrap();
        assert_eq!(keys(&plain), keys(&pair[0]));
        if let Some(window) = page_by(&db.pool, search, Some(&before), true).await.unwrap() {
            assert_eq!(keys(&window), keys(&pair[0]), "newer than {before:?}");
            windowed.push(before.clone());
        }
        assert_eq!(keys(&events::search_newer(&db.pool, search, &before).await.unwrap()), keys(&pair[0]));
    }
    (pages, windowed)
}

#[tokio::test]
async fn window_pages_are_exact_when_the_cursor_and_the_windows_edge_fall_inside_a_tie() {
    let db = TestDb::new().await;
    store(&db, 1, 600).await;
    // 2,500 events at one time under three accounts (more than a window), every fourth naming
    // the word; indexed, then 30 more at that time not indexed yet.
    let tie = base() + Duration::minutes(300) + Duration::seconds(30);
    let insert = "INSERT INTO cloudtrail_events (account_id, event_time, event_id, raw)
         SELECT lpad((g % 3)::text, 12, '9'), $1, $2 || g,
                jsonb_build_object('requestParameters', jsonb_build_object('groupId',
                    CASE WHEN g % 4 = 0 THEN 'sg-0abc123' ELSE 'sg-0fff999' END))
         FROM generate_series(1, $3) g";
    sqlx::query(insert).bind(tie).bind("tie-").bind(2500).execute(&db.pool).await.unwrap();
    assert_eq!(index::run(&db.pool).await.unwrap().indexed, 3100);
    sqlx::query(insert).bind(tie).bind("late-").bind(30).execute(&db.pool).await.unwrap();

    let (pages, windowed) = compare_paths(&db, &filter(7)).await;
    let total: usize = pages.iter().map(Vec::len).sum();
    assert_eq!(total, 200 + 625 + 7);
    assert_eq!(events::count(&db.pool, &filter(7), 100_000).await.unwrap() as usize, total);
    // Pages the window answered from a cursor inside the tie while its 2,000th index row, the
    // edge, was inside the tie too.
    let mut both_inside = 0;
    for (time, account, id) in windowed.iter().filter(|k| k.0 == tie) {
        let edges: Vec<DateTime<Utc>> = sqlx::query_scalar(
            "(SELECT event_time FROM event_search WHERE (event_time, account_id, event_id) < ($1, $2, $3)
              ORDER BY event_time DESC, account_id DESC, event_id DESC OFFSET 1999 LIMIT 1)
             UNION ALL
             (SELECT event_time FROM event_search WHERE (event_time, account_id, event_id) > ($1, $2, $3)
              ORDER BY event_time, account_id, event_id OFFSET 1999 LIMIT 1)",
        )
        .bind(time)
        .bind(account)
        .bind(id)
        .fetch_all(&db.pool)
        .await
        .unwrap();
        both_inside += usize::from(edges.contains(&tie));
    }
    assert!(both_inside > 5, "{both_inside} of {} windowed pages", windowed.len());
}

/// `skywarden import` leaves the full-text index to a live scheduled indexer (`serve`, a
/// worker) and says so; `--index-now` indexes anyway; once the indexer stops, or its note lapses,
/// imports index for themselves again.
#[tokio::test]
async fn an_import_leaves_the_index_to_a_live_scheduled_indexer() {
    use crate::support::incident_setup::{event, user_arn, write_trail};
    use serde_json::{Value, json};
    let db = TestDb::new().await;
    let dir = tempfile::tempdir().unwrap();
    let trail = |name: &str, first: i64| {
        let records = (first..first + 3)
            .map(|n| {
                let identity = json!({"type": "IAMUser", "arn": user_arn("ana"), "accountId": "111122223333"});
                let time = base() + Duration::minutes(n);
                event(time, "DescribeInstances", "ec2.amazonaws.com", identity, "192.0.2.7", json!({}))
            })
            .collect();
        write_trail(dir.path(), name, records)
    };
    let import = |path: std::path::PathBuf, extra: &[&str]| -> Value {
        let mut args = vec!["import", "--json", "--no-detect"];
        args.extend_from_slice(extra);
        let path = path.display().to_string();
        args.push(&path);
        let output = db.skywarden(&args);
        assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
        serde_json::from_slice(&output.stdout).unwrap()
    };

    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let scheduled = tokio::spawn(index::schedule(db.pool.clone(), async move {
        let _ = stopped.await;
    }));
    // Its note, then the end of its first run (which it starts at once, and which would hold
    // the lease against `--index-now` below); the next one is 30 s away.
    let mut live = None;
    for _ in 0..200 {
        live = index::live_scheduled_indexer(&db.pool).await.unwrap();
        let first_run_over: bool =
            sqlx::query_scalar("SELECT last_run_at IS NOT NULL AND lease_owner IS NULL FROM event_search_watermark")
                .fetch_one(&db.pool)
                .await
                .unwrap();
        if live.is_some() && first_run_over {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let live = live.expect("the scheduled indexer notes itself alive");
    assert_eq!(live, format!("{}/{}", std::env::var("HOSTNAME").unwrap_or_else(|_| "host".into()), std::process::id()));

    let left = import(trail("first", 0), &[]);
    assert_eq!(left["search_index_left_to"], live.as_str(), "{left}");
    assert!(left.get("search_index").is_none(), "{left}");
    let indexed: i64 = sqlx::query_scalar("SELECT count(*) FROM event_search").fetch_one(&db.pool).await.unwrap();
    assert_eq!(indexed, 0, "left to the scheduled indexer (its next run is 30 s away)");

    let now = import(trail("second", 10), &["--index-now"]);
    assert_eq!(now["search_index"]["ran"], true, "{now}");
    assert_eq!(now["search_index"]["indexed"], 6, "both imports' events: {now}");
    assert!(now.get("search_index_left_to").is_none(), "{now}");

    stop.send(()).unwrap();
    scheduled.await.unwrap();
    assert_eq!(index::live_scheduled_indexer(&db.pool).await.unwrap(), None, "a stopped indexer clears its note");
    let alone = import(trail("third", 20), &[]);
    assert_eq!(alone["search_index"]["indexed"], 3, "{alone}");

    // A note older than two intervals, of a process that died without clearing it, has lapsed.
    sqlx::query(
        "UPDATE event_search_watermark SET scheduled_at = now() - interval '61 seconds', scheduled_by = 'gone/1'",
    )
    .execute(&db.pool)
    .await
    .unwrap();
    assert_eq!(index::live_scheduled_indexer(&db.pool).await.unwrap(), None);
    let lapsed = import(trail("fourth", 30), &[]);
    assert_eq!(lapsed["search_index"]["indexed"], 3, "{lapsed}");
}
