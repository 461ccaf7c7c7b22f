//! The bulk writer's partition cache: a batch costs no partition check once its months are
//! known, and a month the archive dropped behind a running writer is re-created when its write
//! fails, not checked before every batch.

use std::sync::Arc;

use skywarden::db::partitions::PartitionCache;
use skywarden::ingest::store::BatchWriter;

use crate::archive::store_events;
use crate::support::TestDb;

async fn january_exists(db: &TestDb) -> bool {
    db.count("SELECT count(*) FROM pg_class WHERE relname = 'cloudtrail_events_p202401'").await == 1
}

#[tokio::test]
async fn a_known_month_costs_no_check_and_a_dropped_one_is_recreated_on_failure() {
    let db = TestDb::new().await;
    let cache = Arc::new(PartitionCache::default());
    let mut writer = BatchWriter::connect(&db.pool, cache.clone()).await.unwrap();
    let first = store_events(&mut writer, &[("evt-a", "2024-01-10T10:00:00Z")]).await;
    assert_eq!(first.inserted, 1);
    assert_eq!(cache.round_trips(), 1, "the first batch of a month creates its partition");

    // January has ended: before, every batch re-checked it. Now the cache is trusted.
    for (i, day) in ["11", "12", "13"].iter().enumerate() {
        let id = format!("evt-more-{i}");
        let time = format!("2024-01-{day}T10:00:00Z");
        assert_eq!(store_events(&mut writer, &[(&id, &time)]).await.inserted, 1);
    }
    assert_eq!(cache.round_trips(), 1, "batches of a known month make no partition round trip");

    // The archive drops January behind the writer's back (as `skywarden archive` does, from
    // another process).
    sqlx::query("DROP TABLE cloudtrail_events_p202401").execute(&db.pool).await.unwrap();
    assert!(!january_exists(&db).await);
    let late = store_events(&mut writer, &[("evt-late", "2024-01-20T10:00:00Z")]).await;
    assert_eq!((late.inserted, late.rejected.len()), (1, 0), "the batch lands");
    assert!(january_exists(&db).await, "the partition is re-created");
    assert_eq!(cache.round_trips(), 2, "one check after the failure, none before");
    assert_eq!(db.count("SELECT count(*) FROM cloudtrail_events WHERE event_id = 'evt-late'").await, 1);

    // A new month is still created before its first batch.
    assert_eq!(store_events(&mut writer, &[("evt-feb", "2024-02-02T10:00:00Z")]).await.inserted, 1);
    assert_eq!(cache.round_trips(), 3);
}

#[tokio::test]
async fn a_table_in_the_way_of_a_partition_is_named_in_the_error() {
    use skywarden::db::partitions::PartitionedTable;
    let db = TestDb::new().await;
    // What a killed archive run leaves: January detached from its parent, not dropped.
    sqlx::query("SELECT skywarden_ensure_month_partition('cloudtrail_events', '2024-01-10')")
        .execute(&db.pool)
        .await
        .unwrap();
    sqlx::query("ALTER TABLE cloudtrail_events DETACH PARTITION cloudtrail_events_p202401")
        .execute(&db.pool)
        .await
        .unwrap();
    let cache = PartitionCache::default();
    let mut conn = db.pool.acquire().await.unwrap();
    let january = chrono::TimeZone::with_ymd_and_hms(&chrono::Utc, 2024, 1, 10, 0, 0, 0).unwrap();
    let error = cache.ensure(&mut conn, PartitionedTable::CloudTrailEvents, vec![january]).await.unwrap_err();
    let message = error.to_string();
    assert!(
        message.contains("cloudtrail_events_p202401 exists but is not an attached partition of cloudtrail_events"),
        "{message}"
    );
}
