//! `skywarden import` end to end: the real binary, a real PostgreSQL, the project's fixtures.

use std::path::Path;

use serde_json::Value;

use crate::support::{TestDb, fixture, mmdb, write_gzip};

fn counts(summary: &Value) -> (u64, u64, u64) {
    (
        summary["cloudtrail_events"].as_u64().unwrap(),
        summary["flow_records"].as_u64().unwrap(),
        summary["duplicates"].as_u64().unwrap(),
    )
}

fn errors(summary: &Value) -> Vec<(String, String)> {
    summary["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| (e["file"].as_str().unwrap().to_string(), e["error"].as_str().unwrap().to_string()))
        .collect()
}

#[tokio::test]
async fn imports_every_cloudtrail_shape_with_counts_per_file() {
    let db = TestDb::new().await;
    // (file, new events, duplicates): files share some events, so order matters.
    let cases: &[(&str, u64, u64)] = &[
        ("cloudtrail/111122223333_CloudTrail_us-east-1_20261112T0400Z_a1b2c3d4e5f6a7b8.json.gz", 4, 0),
        ("cloudtrail/bare-array.json", 2, 0),
        ("cloudtrail/logstash-export.jsonl", 3, 0),
        // Both LookupEvents items are already stored from the S3 file.
        ("cloudtrail/lookup-events.json", 0, 2),
        // StopLogging is new; the console login is a repeat.
        ("cloudtrail/cloudwatch-subscription.json", 1, 1),
        (
            "cloudtrail/111122223333_CloudTrail-Digest_us-east-1_management-trail_us-east-1_20261112T050000Z.json.gz",
            0,
            0,
        ),
    ];
    for (file, new, duplicates) in cases {
        let (code, summary) = db.import_json(&[&fixture(file)]);
        assert_eq!(code, 0, "{file}: {summary}");
        assert_eq!(summary["files"], 1);
        assert_eq!(counts(&summary), (*new, 0, *duplicates), "{file}: {summary}");
        assert!(errors(&summary).is_empty(), "{file}: {summary}");
    }
    assert_eq!(db.count("SELECT count(*) FROM cloudtrail_events").await, 10);
    let (_, digest) = db.import_json(&[&fixture(cases[5].0)]);
    assert_eq!(digest["skipped"], 1, "the digest file is skipped, not an error");

    // Typed columns as the audit trail reads them.
    let row: (String, String, Option<String>, String, Vec<String>, bool) = sqlx::query_as(
        "SELECT account_id, event_name, host(source_ip), source_ip_text, resource_ids, read_only
         FROM cloudtrail_events WHERE event_id = '0b7c1a52-0003-4c0e-9a11-000000000003'",
    )
    .fetch_one(&db.pool)
    .await
    .unwrap();
    assert_eq!(row.0, "111122223333");
    assert_eq!(row.1, "AuthorizeSecurityGroupIngress");
    assert_eq!(row.2.as_deref(), Some("176.36.10.20"));
    assert_eq!(row.4, vec!["sg-0a1b2c3d4e5f67890", "sgr-0123456789abcdef0"]);
    assert!(!row.5);

    // Quirks: an anonymised address stays as text, a service name too, @timestamp is the time.
    let anonymised: (Option<String>, String) = sqlx::query_as(
        "SELECT host(source_ip), source_ip_text FROM cloudtrail_events WHERE event_id = '0b7c1a52-0005-4c0e-9a11-000000000005'",
    )
    .fetch_one(&db.pool)
    .await
    .unwrap();
    assert_eq!(anonymised, (None, "08.1.250.216".to_string()));
    let logstash_time: String = sqlx::query_scalar(
        "SELECT to_char(event_time AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS.MS') FROM cloudtrail_events WHERE event_name = 'ListBuckets'",
    )
    .fetch_one(&db.pool)
    .await
    .unwrap();
    assert_eq!(logstash_time, "2020-09-14 01:19:40.123");
    // The raw event is kept whole, as jsonb.
    let raw_user: String = sqlx::query_scalar(
        "SELECT raw->'userIdentity'->>'userName' FROM cloudtrail_events WHERE event_name = 'StopLogging'",
    )
    .fetch_one(&db.pool)
    .await
    .unwrap();
    assert_eq!(raw_user, "alice");
}

#[tokio::test]
async fn imports_flow_logs_in_every_layout() {
    let db = TestDb::new().await;
    let cases: &[(&str, u64)] = &[
        ("flowlogs/default-v2.log", 4),
        ("flowlogs/111122223333_vpcflowlogs_us-east-1_fl-0a1b2c3d4e5f67890_20261112T0000Z_1a2b3c4d.log.gz", 3),
        ("flowlogs/headerless-v2.log", 2),
        ("flowlogs/cloudwatch-subscription.json", 2),
        ("flowlogs/message-wrapper.json", 1),
    ];
    for (file, records) in cases {
        let (code, summary) = db.import_json(&[&fixture(file)]);
        assert_eq!(code, 0, "{file}: {summary}");
        assert_eq!(counts(&summary), (0, *records, 0), "{file}: {summary}");
    }
    assert_eq!(db.count("SELECT count(*) FROM flow_records").await, 12);
    assert_eq!(db.count("SELECT count(*) FROM flow_records WHERE log_status IN ('NODATA', 'SKIPDATA')").await, 3);
    // v5 fields land in their columns.
    let v5: (String, String, i16, Option<String>) = sqlx::query_as(
        "SELECT instance_id, flow_direction, traffic_path, host(pkt_dstaddr) FROM flow_records WHERE traffic_path IS NOT NULL",
    )
    .fetch_one(&db.pool)
    .await
    .unwrap();
    assert_eq!(v5, ("i-0a1b2c3d4e5f67890".to_string(), "egress".to_string(), 8, Some("73.202.18.40".to_string())));
    let exfil_bytes = db
        .count("SELECT sum(bytes)::bigint FROM flow_records WHERE srcaddr = '10.0.1.25' AND dstaddr = '176.36.10.20'")
        .await;
    assert_eq!(exfil_bytes, 1_048_576_000 + 1_000_000_000 + 990_000_000);
}

#[tokio::test]
async fn reimport_stores_nothing_new() {
    let db = TestDb::new().await;
    let all = [fixture("cloudtrail"), fixture("flowlogs")];
    let paths: Vec<&Path> = all.iter().map(|p| p.as_path()).collect();
    let (code, first) = db.import_json(&paths);
    assert_eq!(code, 0, "{first}");
    let (events, flows, first_duplicates) = counts(&first);
    assert_eq!((events, flows), (10, 12), "{first}");
    let (code, second) = db.import_json(&paths);
    assert_eq!(code, 0, "{second}");
    assert_eq!(counts(&second), (0, 0, events + flows + first_duplicates), "{second}");
    assert_eq!(db.count("SELECT count(*) FROM cloudtrail_events").await, 10);
    assert_eq!(db.count("SELECT count(*) FROM flow_records").await, 12);
}

#[tokio::test]
async fn corrupt_files_are_named_and_the_rest_is_imported() {
    let db = TestDb::new().await;
    let (code, summary) = db.import_json(&[&fixture("corrupt"), &fixture("flowlogs/default-v2.log")]);
    assert_eq!(code, 2, "partial import exits 2: {summary}");
    assert_eq!(summary["files"], 5);
    // Good flows from the good file and from the good lines of the bad one, and the one
    // complete event before the cut in the truncated file.
    assert_eq!(counts(&summary), (1, 4 + 2, 0), "{summary}");
    let errors = errors(&summary);
    let about = |name: &str| -> Vec<&str> {
        errors.iter().filter(|(f, _)| f.ends_with(name)).map(|(_, e)| e.as_str()).collect()
    };
    let truncated = about("truncated-trail.json");
    assert_eq!(truncated.len(), 1, "{errors:?}");
    assert!(truncated[0].contains("invalid JSON") && truncated[0].contains("line 90"), "{truncated:?}");
    assert!(truncated[0].contains("the 1 records before it were read"), "{truncated:?}");
    let binary = about("not-a-log.bin");
    assert_eq!(binary.len(), 1, "{errors:?}");
    assert!(binary[0].contains("not a recognised log format"), "{binary:?}");
    let gzip = about("broken.json.gz");
    assert_eq!(gzip.len(), 1, "{errors:?}");
    let bad_lines = about("bad-lines.log");
    assert_eq!(
        bad_lines,
        vec![
            "line 3: field dstaddr: invalid address \"not-an-address\"",
            "line 4: expected 14 fields (version account-id interface-id srcaddr dstaddr srcport dstport protocol packets bytes start end action log-status), found 13"
        ]
    );
    let gzip_error = gzip[0];
    assert!(gzip_error.contains("deflate"), "{gzip_error}");
    assert_eq!(
        db.count("SELECT count(*) FROM cloudtrail_events WHERE event_name = 'AuthorizeSecurityGroupIngress'").await,
        1
    );
    assert_eq!(db.count("SELECT count(*) FROM flow_records").await, 6);
}

#[tokio::test]
async fn missing_paths_are_reported() {
    let db = TestDb::new().await;
    let (code, summary) =
        db.import_json(&[Path::new("/nonexistent/skywarden-logs"), &fixture("flowlogs/headerless-v2.log")]);
    assert_eq!(code, 2);
    assert_eq!(counts(&summary).1, 2);
    let errors = errors(&summary);
    assert_eq!(errors.len(), 1);
    assert!(errors[0].0.contains("/nonexistent/skywarden-logs"), "{errors:?}");
}

#[tokio::test]
async fn geolocates_sources_and_flow_peers() {
    let db = TestDb::new().await;
    let dir = tempfile::tempdir().unwrap();
    let city = dir.path().join("city.mmdb");
    mmdb::MmdbWriter::new("GeoIP2-City")
        .insert("176.36.0.0", 14, &mmdb::city_record("UA", "Kyiv", 50.4547, 30.5238))
        .insert("73.202.0.0", 16, &mmdb::city_record("US", "San Francisco", 37.7749, -122.4194))
        .write(&city);
    let asn = dir.path().join("asn.mmdb");
    mmdb::MmdbWriter::new("GeoLite2-ASN")
        .insert("176.36.0.0", 14, &mmdb::asn_record(21497, "PrJSC VF UKRAINE"))
        .write(&asn);
    let output = db.skywarden(&[
        "import",
        "--json",
        "--geoip",
        city.to_str().unwrap(),
        "--geoip",
        asn.to_str().unwrap(),
        fixture("cloudtrail").to_str().unwrap(),
        fixture("flowlogs").to_str().unwrap(),
    ]);
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let hijack: (String, String, f64, f64, i64, String) = sqlx::query_as(
        "SELECT geo_country, geo_city, geo_latitude, geo_longitude, geo_asn, geo_as_org FROM cloudtrail_events
         WHERE event_id = '0b7c1a52-0001-4c0e-9a11-000000000001'",
    )
    .fetch_one(&db.pool)
    .await
    .unwrap();
    assert_eq!(hijack, ("UA".into(), "Kyiv".into(), 50.4547, 30.5238, 21497, "PrJSC VF UKRAINE".into()));
    let home: (String, Option<i64>) = sqlx::query_as(
        "SELECT geo_country, geo_asn FROM cloudtrail_events WHERE event_id = '0b7c1a52-0002-4c0e-9a11-000000000002'",
    )
    .fetch_one(&db.pool)
    .await
    .unwrap();
    assert_eq!(home, ("US".into(), None));
    let unknown = db
        .count("SELECT count(*) FROM cloudtrail_events WHERE source_ip_text = '1.2.3.4' AND geo_country IS NULL")
        .await;
    assert_eq!(unknown, 3, "addresses no database knows stay without geo");
    let exfil_countries = db
        .count("SELECT count(*) FROM flow_records WHERE dstaddr = '176.36.10.20' AND dst_country = 'UA' AND src_country IS NULL")
        .await;
    assert_eq!(exfil_countries, 3, "private sources get no country, the public peer does");
}

#[tokio::test]
async fn reads_the_flat_country_schema() {
    let db = TestDb::new().await;
    let dir = tempfile::tempdir().unwrap();
    let flat = dir.path().join("geo-whois-asn-country.mmdb");
    mmdb::MmdbWriter::new("geo-whois-asn-country")
        .insert("176.36.0.0", 14, &mmdb::flat_country_record("UA"))
        .write(&flat);
    let trail = dir.path().join("trail.json.gz");
    write_gzip(&trail, &std::fs::read(fixture("cloudtrail/lookup-events.json")).unwrap());
    let output = db.skywarden(&["import", "--json", "--geoip", flat.to_str().unwrap(), trail.to_str().unwrap()]);
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    assert_eq!(
        db.count("SELECT count(*) FROM cloudtrail_events WHERE geo_country = 'UA' AND geo_city IS NULL").await,
        2
    );
}

#[tokio::test]
async fn a_bad_geoip_file_is_a_clear_error() {
    let db = TestDb::new().await;
    let output =
        db.skywarden(&["import", "--geoip", "/nonexistent/city.mmdb", fixture("cloudtrail").to_str().unwrap()]);
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("cannot open GeoIP database /nonexistent/city.mmdb"), "{stderr}");
}

#[tokio::test]
async fn an_unreachable_database_is_a_clear_error_without_the_password() {
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let url = format!("postgres://app:s3cret-pass@127.0.0.1:{port}/skywarden");
    let output = crate::support::skywarden_command(&url)
        .args(["import", fixture("cloudtrail").to_str().unwrap()])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains(&format!("cannot connect to PostgreSQL at postgres://app:***@127.0.0.1:{port}/skywarden")),
        "{stderr}"
    );
    assert!(stderr.contains("Connection refused"), "{stderr}");
    assert!(!stderr.contains("s3cret-pass"), "the password never reaches the output: {stderr}");
}

/// Two writers whose batches hold the same events in opposite orders deadlock; PostgreSQL rolls
/// one back. Here the writer waits first, so its deadlock check runs first and it is the
/// victim: it must write its batch again (finding both events stored) instead of failing.
#[tokio::test]
async fn a_writer_picked_as_a_deadlock_victim_writes_its_batch_again() {
    use skywarden::db::partitions::PartitionCache;
    use skywarden::ingest::store::BatchWriter;
    let db = TestDb::new().await;
    let cache = std::sync::Arc::new(PartitionCache::default());
    let mut writer = BatchWriter::connect(&db.pool, cache).await.unwrap();
    crate::archive::store_events(&mut writer, &[("evt-0", "2024-01-10T09:00:00Z")]).await;

    // Another session holds an uncommitted copy of evt-y.
    let mut other = skywarden::db::begin(&db.pool).await.unwrap();
    // A copy of evt-0 under another id and time: the key the writer's batch also holds.
    let copy_as = |id: &str, time: &str| {
        format!(
            "INSERT INTO cloudtrail_events SELECT (jsonb_populate_record(c, jsonb_build_object('event_id', '{id}', \
             'event_time', '{time}'))).* FROM cloudtrail_events c WHERE event_id = 'evt-0'"
        )
    };
    sqlx::query(&copy_as("evt-y", "2024-01-10T11:00:00Z")).execute(&mut *other).await.unwrap();

    // The writer copies evt-x, then waits for the other session's evt-y.
    let write = tokio::spawn(async move {
        crate::archive::store_events(
            &mut writer,
            &[("evt-x", "2024-01-10T10:00:00Z"), ("evt-y", "2024-01-10T11:00:00Z")],
        )
        .await
    });
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    assert!(!write.is_finished(), "the writer should be waiting for evt-y");
    // The other session now copies evt-x and waits for the writer: a deadlock.
    sqlx::query(&copy_as("evt-x", "2024-01-10T10:00:00Z"))
        .execute(&mut *other)
        .await
        .expect("the writer, waiting longer, is the victim");
    other.commit().await.unwrap();

    let outcome = write.await.expect("the writer writes its batch again rather than fail");
    assert_eq!(outcome.inserted, 0, "both events were stored by the other session");
    let stored: i64 = sqlx::query_scalar("SELECT count(*) FROM cloudtrail_events").fetch_one(&db.pool).await.unwrap();
    assert_eq!(stored, 3);
}
