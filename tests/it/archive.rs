//! The open security lake: months older than the retention go to Parquet (OCSF, Security Lake
//! layout) in a folder or S3 (moto, through the real aws-sdk-s3), are read back with pyarrow and
//! validated against the OCSF 1.1.0 class schemas (`ocsf-json-schema`), and leave PostgreSQL
//! only after verification; a run stopped mid-way resumes without loss or duplicates, and a
//! second run changes nothing.

use std::collections::BTreeMap;
use std::io::Write as _;
use std::path::Path;
use std::process::{Command, Stdio};

use chrono::{TimeZone, Utc};
use serde_json::{Value, json};
use skywarden::archive::destination::Destination;
use skywarden::archive::{self, ArchiveError, ArchiveOptions};

use crate::support::aws as fake;
use crate::support::{TestDb, lake};

fn python() -> String {
    std::env::var("SKYWARDEN_TEST_PYARROW_PYTHON")
        .unwrap_or_else(|_| concat!(env!("CARGO_MANIFEST_DIR"), "/.cache/test-venv/bin/python").to_owned())
}

/// Each file read with pyarrow: its rows (nulls left out, as OCSF JSON has them), ids, row
/// groups with the `time` column's statistics, and every OCSF 1.1.0 schema error of its class.
const READ_LAKE: &str = r#"
import json, sys
import pyarrow.parquet as pq
import jsonschema_rs
from ocsf_json_schema import OcsfJsonSchemaEmbedded, get_ocsf_schema

schema = OcsfJsonSchemaEmbedded(get_ocsf_schema(version="1.1.0"))
classes = {6003: "api_activity", 4001: "network_activity", 2004: "detection_finding"}
validators = {}
def strip(value):
    if isinstance(value, dict):
        return {k: strip(v) for k, v in value.items() if v is not None}
    return value
out = {}
for path in json.load(sys.stdin):
    parquet = pq.ParquetFile(path)
    rows = [strip(r) for r in parquet.read().to_pylist()]
    errors = []
    for index, row in enumerate(rows):
        name = classes[row["class_uid"]]
        if name not in validators:
            validators[name] = jsonschema_rs.Draft202012Validator(
                schema.get_class_schema(name, profiles=["cloud", "datetime"]), validate_formats=False)
        for error in validators[name].iter_errors(row):
            errors.append("%s row %d at %s: %s" % (path, index, list(error.instance_path), error.message[:200]))
    time_column = parquet.schema_arrow.get_field_index("time")
    groups = []
    for g in range(parquet.metadata.num_row_groups):
        stats = parquet.metadata.row_group(g).column(time_column).statistics
        groups.append({"rows": parquet.metadata.row_group(g).num_rows,
                       "min": stats.min if stats and stats.has_min_max else None,
                       "max": stats.max if stats and stats.has_min_max else None})
    out[path] = {"rows": rows, "errors": errors, "groups": groups}
json.dump(out, sys.stdout)
"#;

fn read_lake(files: &[String]) -> BTreeMap<String, Value> {
    let mut child = Command::new(python())
        .args(["-c", READ_LAKE])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| {
            panic!("cannot run {} (make test-tools installs pyarrow, ocsf-json-schema): {e}", python())
        });
    child.stdin.take().unwrap().write_all(&serde_json::to_vec(files).unwrap()).unwrap();
    let output = child.wait_with_output().unwrap();
    assert!(output.status.success(), "pyarrow: {}", String::from_utf8_lossy(&output.stderr));
    serde_json::from_slice(&output.stdout).unwrap()
}

fn parquet_files(root: &Path) -> Vec<String> {
    let mut files: Vec<String> = walkdir::WalkDir::new(root)
        .into_iter()
        .map(|e| e.unwrap())
        .filter(|e| e.file_type().is_file())
        .map(|e| e.path().display().to_string())
        .collect();
    files.sort();
    files
}

/// January and February 2024 of CloudTrail events (two accounts, two regions, several days,
/// one failed call), March 2024 of flow records, and alerts: three closed, one open.
async fn seed(db: &TestDb) {
    sqlx::query(
        "SELECT skywarden_ensure_month_partition('cloudtrail_events', m)
         FROM unnest(ARRAY['2024-01-10'::timestamptz, '2024-02-10', now()]) m",
    )
    .execute(&db.pool)
    .await
    .unwrap();
    sqlx::query(
        r#"INSERT INTO cloudtrail_events (account_id, event_time, event_id, region, event_source, event_name,
               principal_arn, principal_type, principal_id, user_name, access_key_id, source_ip, source_ip_text,
               user_agent, error_code, read_only, geo_country, raw, resource_ids, geo_asn, geo_as_org,
               source_is_tor, source_is_hosting, geo_latitude, geo_longitude)
           SELECT CASE WHEN i % 2 = 0 THEN '111111111111' ELSE '222222222222' END,
                  timestamptz '2024-01-01' + (i * interval '90 minutes') + (i * interval '1 microsecond'),
                  'evt-' || i, CASE WHEN i % 3 = 0 THEN 'eu-west-1' ELSE 'us-east-1' END,
                  'iam.amazonaws.com', CASE WHEN i % 4 = 0 THEN 'CreateUser' ELSE 'ListUsers' END,
                  'arn:aws:iam::111111111111:user/alice', 'IAMUser', 'AIDAEXAMPLE', 'alice', 'AKIAEXAMPLE',
                  CASE WHEN i % 5 = 0 THEN NULL ELSE '198.51.100.7'::inet END,
                  CASE WHEN i % 5 = 0 THEN 'config.amazonaws.com' ELSE '198.51.100.7' END,
                  'aws-cli/2', CASE WHEN i = 7 THEN 'AccessDenied' END, i % 4 <> 0, 'NL',
                  jsonb_build_object('eventID', 'evt-' || i, 'eventName', 'ListUsers', 'n', i),
                  ARRAY['arn:aws:iam::111111111111:user/u' || i, 'a,b'], 64500, 'Example Net', i = 7, i % 2 = 0,
                  52.37, 4.89
           FROM generate_series(1, 900) i"#,
    )
    .execute(&db.pool)
    .await
    .unwrap();
    // One current event: the hot month stays.
    sqlx::query(
        "INSERT INTO cloudtrail_events (account_id, event_time, event_id, region, event_name, raw)
         VALUES ('111111111111', now(), 'evt-now', 'us-east-1', 'ListUsers', '{}')",
    )
    .execute(&db.pool)
    .await
    .unwrap();
    sqlx::query("SELECT skywarden_ensure_month_partition('flow_records', '2024-03-05')")
        .execute(&db.pool)
        .await
        .unwrap();
    sqlx::query(
        r#"INSERT INTO flow_records (account_id, bucket_time, record_hash, version, interface_id, srcaddr, dstaddr,
               srcport, dstport, protocol, packets, bytes, start_time, end_time, action, log_status, region,
               flow_direction, extra)
           SELECT '111111111111', timestamptz '2024-03-01' + i * interval '1 hour', sha256(('flow' || i)::bytea), 5,
                  'eni-1', CASE WHEN i <> 50 THEN ('10.0.0.' || (i % 200))::inet END, CASE WHEN i <> 50 THEN '203.0.113.9'::inet END, 40000 + i, 443, 6, i, 100 * i,
                  timestamptz '2024-03-01' + i * interval '1 hour', timestamptz '2024-03-01' + i * interval '1 hour' + interval '1 minute',
                  CASE WHEN i % 2 = 0 THEN 'ACCEPT' ELSE 'REJECT' END, 'OK', 'us-east-1',
                  CASE WHEN i % 2 = 0 THEN 'egress' ELSE 'ingress' END, CASE WHEN i = 3 THEN '{"sublocation-id": "x"}'::jsonb END
           FROM generate_series(1, 100) i"#,
    )
    .execute(&db.pool)
    .await
    .unwrap();
    sqlx::query(
        r#"INSERT INTO alerts (account_id, alert_id, policy_id, dedup_key, title, severity, status, first_seen, last_seen)
           VALUES ('111111111111', gen_random_uuid(), 'aws-root-login', 'a', 'Root login', 'high', 'resolved', '2024-01-03', '2024-01-04'),
                  ('111111111111', gen_random_uuid(), 'aws-root-login', 'b', 'Root login', 'critical', 'dismissed', '2024-02-03', '2024-02-04'),
                  ('222222222222', gen_random_uuid(), 'aws-new-user', 'c', 'New user', 'low', 'resolved', '2024-02-05', '2024-02-06'),
                  ('222222222222', gen_random_uuid(), 'aws-new-user', 'd', 'New user', 'medium', 'open', '2024-02-05', '2024-02-06')"#,
    )
    .execute(&db.pool)
    .await
    .unwrap();
}

async fn partitions(db: &TestDb) -> Vec<String> {
    sqlx::query_scalar::<_, String>(
        "SELECT c.relname::text FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
         WHERE i.inhparent IN ('cloudtrail_events'::regclass, 'flow_records'::regclass) ORDER BY 1",
    )
    .fetch_all(&db.pool)
    .await
    .unwrap()
}

/// A new folder for a lake, its path as text, and the destination writing to it.
async fn folder_lake() -> (tempfile::TempDir, String, Destination) {
    let lake = tempfile::tempdir().unwrap();
    let to = lake.path().to_str().unwrap().to_owned();
    let destination = Destination::open(&to, &lake::no_aws()).await.unwrap();
    (lake, to, destination)
}

fn options(to: &str, fail_after_objects: Option<usize>) -> ArchiveOptions {
    ArchiveOptions {
        older_than_days: 30,
        destination_text: to.to_owned(),
        dry_run: false,
        // Small row groups: several per file, so pruning statistics per group are checked.
        row_group_rows: 20,
        row_group_bytes: archive::DEFAULT_ROW_GROUP_BYTES,
        now: Utc::now(),
        fail_after_objects,
        test_hook: None,
    }
}

#[tokio::test]
async fn a_killed_archive_resumes_and_the_lake_validates_as_ocsf() {
    let db = TestDb::new().await;
    seed(&db).await;
    let (lake, to, destination) = folder_lake().await;
    let before = partitions(&db).await;
    assert_eq!(before.len(), 4, "{before:?}");

    // Stopped after 5 objects, as a killed process: nothing is dropped, the month is `writing`.
    let stopped = archive::run(&db.pool, &destination, &options(&to, Some(5))).await;
    assert!(matches!(stopped, Err(ArchiveError::Injected(5))), "{stopped:?}");
    assert_eq!(partitions(&db).await, before);
    assert_eq!(parquet_files(lake.path()).len(), 5);
    assert_eq!(db.count("SELECT count(*) FROM cloudtrail_events").await, 901);
    let states: Vec<String> =
        sqlx::query_scalar("SELECT state FROM archive_partitions").fetch_all(&db.pool).await.unwrap();
    assert_eq!(states, ["writing"]);
    // The killed run is marked as such by the next one (simulated: the row says running).
    sqlx::query("UPDATE archive_runs SET status = 'running', finished_at = NULL").execute(&db.pool).await.unwrap();

    let report = archive::run(&db.pool, &destination, &options(&to, None)).await.unwrap();
    let outcomes: Vec<(String, String, i64)> =
        report.months.iter().map(|m| (m.source.to_owned(), m.month.clone(), m.rows)).collect();
    assert_eq!(
        outcomes,
        [
            ("cloudtrail_events".into(), "2024-01".into(), 495),
            ("cloudtrail_events".into(), "2024-02".into(), 405),
            ("flow_records".into(), "2024-03".into(), 100),
            ("alerts".into(), "2024-01".into(), 1),
            ("alerts".into(), "2024-02".into(), 2),
        ]
    );
    assert_eq!(report.failed(), 0);
    let interrupted: String =
        sqlx::query_scalar("SELECT error FROM archive_runs ORDER BY run_id LIMIT 1").fetch_one(&db.pool).await.unwrap();
    assert!(interrupted.contains("interrupted"), "{interrupted}");
    // Gone from PostgreSQL only now, after verification; the hot month and every alert stay.
    assert_eq!(partitions(&db).await, [before[2].clone()]);
    assert_eq!(db.count("SELECT count(*) FROM cloudtrail_events").await, 1);
    assert_eq!(db.count("SELECT count(*) FROM alerts").await, 4);
    let states: Vec<(String, String)> =
        sqlx::query_as("SELECT source, state FROM archive_partitions ORDER BY 1, month_start")
            .fetch_all(&db.pool)
            .await
            .unwrap();
    assert_eq!(
        states,
        [
            ("alerts".into(), "verified".into()),
            ("alerts".into(), "verified".into()),
            ("cloudtrail_events".into(), "dropped".into()),
            ("cloudtrail_events".into(), "dropped".into()),
            ("flow_records".into(), "dropped".into()),
        ]
    );

    let files = parquet_files(lake.path());
    let read = read_lake(&files);
    check_lake(&read, lake.path(), 20);

    // Again: nothing to drop, alerts unchanged, the same files with the same bytes.
    let digest = |files: &[String]| -> Vec<(String, Vec<u8>)> {
        files.iter().map(|f| (f.clone(), std::fs::read(f).unwrap())).collect()
    };
    let first = digest(&files);
    let again = archive::run(&db.pool, &destination, &options(&to, None)).await.unwrap();
    let outcomes: Vec<&str> = again.months.iter().map(|m| m.outcome.as_str()).collect();
    assert_eq!(outcomes, ["unchanged", "unchanged"]);
    assert_eq!(digest(&parquet_files(lake.path())), first);

    // A closed alert added to an archived month: that month is copied again, same names.
    sqlx::query(
        "INSERT INTO alerts (account_id, alert_id, policy_id, dedup_key, title, severity, status, first_seen, last_seen)
         VALUES ('111111111111', gen_random_uuid(), 'aws-root-login', 'e', 'Root login', 'high', 'resolved', '2024-01-05', '2024-01-05')",
    )
    .execute(&db.pool)
    .await
    .unwrap();
    let third = archive::run(&db.pool, &destination, &options(&to, None)).await.unwrap();
    let outcomes: Vec<(&str, i64)> = third.months.iter().map(|m| (m.outcome.as_str(), m.rows)).collect();
    assert_eq!(outcomes, [("verified", 2), ("unchanged", 2)]);
    let files = parquet_files(lake.path());
    assert_eq!(files.len(), first.len() + 1, "one new day file for the new alert");

    let status = db.skywarden(&["archive", "status", "--json"]);
    assert!(status.status.success(), "{}", String::from_utf8_lossy(&status.stderr));
    let lines: Vec<Value> =
        String::from_utf8_lossy(&status.stdout).lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(lines.iter().filter(|l| l.get("run").is_some()).count(), 4);
    assert_eq!(lines.iter().filter(|l| l["month"]["state"] == "dropped").count(), 3);

    // A late event for an archived month re-creates its partition: archived again as a new
    // generation, beside the first copy, which is left as it was.
    let kept = digest(&files);
    sqlx::query("SELECT skywarden_ensure_month_partition('cloudtrail_events', '2024-01-20')")
        .execute(&db.pool)
        .await
        .unwrap();
    sqlx::query(
        "INSERT INTO cloudtrail_events (account_id, event_time, event_id, region, event_name, source_ip_text, raw)
         VALUES ('111111111111', '2024-01-20T10:00:00Z', 'evt-late', 'us-east-1', 'ListUsers', '198.51.100.7', '{}')",
    )
    .execute(&db.pool)
    .await
    .unwrap();
    let late = archive::run(&db.pool, &destination, &options(&to, None)).await.unwrap();
    assert_eq!((late.months[0].outcome.as_str(), late.months[0].rows), ("dropped", 1));
    let files = parquet_files(lake.path());
    let new: Vec<&String> = files.iter().filter(|f| !kept.iter().any(|(k, _)| k == *f)).collect();
    assert_eq!(new.len(), 1);
    assert!(new[0].ends_with("eventDay=20240120/cloudtrail_events-202401-g1.parquet"), "{new:?}");
    assert!(kept.iter().all(|(path, bytes)| std::fs::read(path).unwrap() == *bytes), "an earlier object changed");
    assert_eq!(db.count("SELECT count(*) FROM cloudtrail_events").await, 1);
}

#[tokio::test]
async fn a_partition_is_dropped_only_while_it_holds_the_verified_rows() {
    use skywarden::archive::store::{self, DropOutcome, PartitionLink, Source, Tally};
    let db = TestDb::new().await;
    seed(&db).await;
    let month = Utc.with_ymd_and_hms(2024, 3, 1, 0, 0, 0).unwrap();
    let stored: Vec<(String, String, chrono::DateTime<Utc>)> =
        sqlx::query_as("SELECT account_id, encode(record_hash, 'hex'), bucket_time FROM flow_records")
            .fetch_all(&db.pool)
            .await
            .unwrap();
    let mut keys = Tally::default();
    for (account, id, time) in &stored {
        keys.add_key(account, id, *time);
    }
    assert_eq!(keys.rows, 100);
    sqlx::query("INSERT INTO archive_runs (destination, older_than_days, dry_run) VALUES ('x', 1, false)")
        .execute(&db.pool)
        .await
        .unwrap();
    let run_id: i64 = sqlx::query_scalar("SELECT max(run_id) FROM archive_runs").fetch_one(&db.pool).await.unwrap();
    store::set_writing(&db.pool, Source::Flows, month, 0, "x", run_id).await.unwrap();
    let attached = || async { partitions(&db).await.contains(&"flow_records_p202403".to_owned()) };
    // A row more than was verified (one arrived after the read-back), or another row: nothing
    // is dropped, and the month is a partition again.
    for wrong in [Tally { rows: keys.rows - 1, ..keys }, Tally { checksum: keys.checksum.wrapping_add(1), ..keys }] {
        assert_eq!(store::detach(&db.pool, Source::Flows, month).await.unwrap(), PartitionLink::Detached);
        assert!(!attached().await);
        let outcome = store::drop_detached(&db.pool, Source::Flows, month, 0, wrong, Box::pin(async {})).await.unwrap();
        assert_eq!(outcome, DropOutcome::Changed);
        assert!(attached().await);
        assert_eq!(db.count("SELECT count(*) FROM flow_records").await, 100);
    }
    store::detach(&db.pool, Source::Flows, month).await.unwrap();
    let outcome = store::drop_detached(&db.pool, Source::Flows, month, 0, keys, Box::pin(async {})).await.unwrap();
    assert_eq!(outcome, DropOutcome::Dropped { already_archived: 0 });
    assert_eq!(db.count("SELECT count(*) FROM flow_records").await, 0);
    assert_eq!(store::partition_link(&db.pool, Source::Flows, month).await.unwrap(), PartitionLink::Absent);
    let state: String = sqlx::query_scalar("SELECT state FROM archive_partitions").fetch_one(&db.pool).await.unwrap();
    assert_eq!(state, "dropped");
    // The ledger lists every row dropped.
    assert_eq!(db.count("SELECT count(*) FROM archive_ledger WHERE source = 2").await, 100);
}

/// Every row once, valid OCSF, under its Security Lake path, sorted by time with statistics.
fn check_lake(read: &BTreeMap<String, Value>, root: &Path, max_group_rows: i64) {
    let mut ids: BTreeMap<i64, Vec<String>> = BTreeMap::new();
    for (path, file) in read {
        assert_eq!(file["errors"], json!([]), "OCSF 1.1.0 errors in {path}");
        let relative = Path::new(path).strip_prefix(root).unwrap().display().to_string();
        let rows = file["rows"].as_array().unwrap();
        let first = &rows[0];
        let day = Utc.timestamp_millis_opt(first["time"].as_i64().unwrap()).unwrap().format("%Y%m%d");
        let region = first["cloud"]["region"].as_str().unwrap_or("global");
        let account = first["cloud"]["account"]["uid"].as_str().unwrap();
        assert!(
            relative.contains(&format!("/region={region}/accountId={account}/eventDay={day}/")),
            "{relative} for {first}"
        );
        assert!(relative.starts_with("ext/skywarden-"), "{relative}");
        let times: Vec<i64> = rows.iter().map(|r| r["time"].as_i64().unwrap()).collect();
        assert!(times.windows(2).all(|w| w[0] <= w[1]), "{relative}: rows not sorted by time");
        for group in file["groups"].as_array().unwrap() {
            assert!(group["min"].as_i64().is_some() && group["max"].as_i64().is_some(), "{relative}: no statistics");
            assert!(group["rows"].as_i64().unwrap() <= max_group_rows);
        }
        for row in rows {
            ids.entry(row["class_uid"].as_i64().unwrap())
                .or_default()
                .push(row["metadata"]["uid"].as_str().unwrap().to_owned());
            assert!(row["cloud"]["account"]["uid"] == *account);
        }
    }
    for (class, list) in &mut ids {
        let total = list.len();
        list.sort();
        list.dedup();
        assert_eq!(list.len(), total, "class {class}: duplicate rows");
    }
    assert_eq!(ids[&6003].len(), 900);
    assert_eq!(ids[&4001].len(), 100);
    assert_eq!(ids[&2004].len(), 3);
    // A mapped row, field by field.
    let failed =
        read.values().flat_map(|f| f["rows"].as_array().unwrap()).find(|r| r["metadata"]["uid"] == "evt-7").unwrap();
    assert_eq!(failed["status_id"], 2);
    assert_eq!(failed["status_code"], "AccessDenied");
    assert_eq!(failed["api"]["operation"], "ListUsers");
    assert_eq!(failed["actor"]["user"]["name"], "alice");
    assert_eq!(failed["src_endpoint"]["ip"], "198.51.100.7");
    assert_eq!(failed["cloud"]["region"], "us-east-1");
    let raw: Value = serde_json::from_str(failed["raw_data"].as_str().unwrap()).unwrap();
    assert_eq!(raw["n"], 7);
    // The stored microseconds and what ingest derived, as PostgreSQL holds them.
    assert_eq!(failed["time_dt"], "2024-01-01T10:30:00.000007Z");
    assert_eq!(failed["time"], 1_704_105_000_000_i64);
    let unmapped = &failed["unmapped"];
    assert_eq!(
        (&unmapped["source_asn"], &unmapped["source_as_org"], &unmapped["source_is_tor"]),
        (&json!(64500), &json!("Example Net"), &json!(true))
    );
    assert_eq!((&unmapped["source_is_hosting"], &unmapped["read_only"]), (&json!(false), &json!(true)));
    assert_eq!((&unmapped["geo_latitude"], &unmapped["geo_longitude"]), (&json!(52.37), &json!(4.89)));
    let ids: Vec<String> = serde_json::from_str(unmapped["resource_ids"].as_str().unwrap()).unwrap();
    assert_eq!(ids, ["arn:aws:iam::111111111111:user/u7", "a,b"]);
    assert!(unmapped.get("source_is_vpn").is_none(), "a null stays absent");
}

#[tokio::test]
async fn the_cli_archives_to_s3_on_moto_after_a_dry_run() {
    let db = TestDb::new().await;
    seed(&db).await;
    let moto = fake::moto_url().await;
    let settings = fake::settings_for(moto);
    let (s3, bucket) = lake::bucket(&settings).await;
    let to = format!("s3://{bucket}/security-lake");
    let run = |extra: &[&str]| {
        let mut command = crate::support::skywarden_command(&db.url);
        command.args(["archive", "--older-than", "30", "--to", &to, "--json", "--row-group-rows", "20"]).args(extra);
        command.envs(fake::aws_env(moto));
        command.output().unwrap()
    };

    let dry = run(&["--dry-run"]);
    assert!(dry.status.success(), "{}", String::from_utf8_lossy(&dry.stderr));
    let months: Vec<Value> =
        String::from_utf8_lossy(&dry.stdout).lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(months.len(), 5);
    assert!(months.iter().all(|m| m["outcome"] == "would-archive"));
    let listed = s3.list_objects_v2().bucket(&bucket).send().await.unwrap();
    assert_eq!(listed.key_count(), Some(0), "a dry run writes nothing");
    assert_eq!(partitions(&db).await.len(), 4);

    let output = run(&[]);
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    assert_eq!(partitions(&db).await.len(), 1);
    let listed = s3.list_objects_v2().bucket(&bucket).prefix("security-lake/ext/").max_keys(1000).send().await.unwrap();
    let keys: Vec<String> = listed.contents().iter().filter_map(|o| o.key().map(str::to_owned)).collect();
    assert!(keys.iter().all(|k| k.ends_with(".parquet")), "{keys:?}");
    // Download everything and read it as pyarrow does.
    let local = tempfile::tempdir().unwrap();
    for key in &keys {
        let object = s3.get_object().bucket(&bucket).key(key).send().await.unwrap();
        let path = local.path().join(key);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, object.body.collect().await.unwrap().into_bytes()).unwrap();
    }
    check_lake(&read_lake(&parquet_files(local.path())), &local.path().join("security-lake"), 20);

    // Idempotent: a second run writes no new object.
    let again = run(&[]);
    assert!(again.status.success(), "{}", String::from_utf8_lossy(&again.stderr));
    let relisted =
        s3.list_objects_v2().bucket(&bucket).prefix("security-lake/ext/").max_keys(1000).send().await.unwrap();
    assert_eq!(relisted.key_count(), listed.key_count());
}

/// `GET path` on `address` (HTTP/1.0, whole answer): (status line, body).
fn http_get(address: &str, path: &str) -> std::io::Result<(String, String)> {
    use std::io::Read;
    let mut stream = std::net::TcpStream::connect(address)?;
    stream.set_read_timeout(Some(std::time::Duration::from_secs(10)))?;
    stream.write_all(format!("GET {path} HTTP/1.0\r\nHost: {address}\r\n\r\n").as_bytes())?;
    let mut answer = String::new();
    stream.read_to_string(&mut answer)?;
    let (head, body) = answer.split_once("\r\n\r\n").unwrap_or((&answer, ""));
    Ok((head.lines().next().unwrap_or("").to_owned(), body.to_owned()))
}

#[tokio::test]
async fn serve_archives_on_its_schedule_and_exports_the_state() {
    let db = TestDb::new().await;
    seed(&db).await;
    let (lake, state) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let free = || std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().to_string();
    let (address, metrics) = (free(), free());
    let mut command = crate::support::skywarden_command(&db.url);
    command
        .args(["serve", "--listen", &address, "--metrics-listen", &metrics, "--no-pollers", "--no-notifications"])
        .args(["--archive-after-days", "30", "--archive-to", lake.path().to_str().unwrap()])
        .env("SKYWARDEN_SECRET_KEY_FILE", state.path().join("secret.key"));
    let _server = crate::support::KillOnDrop(command.spawn().unwrap());
    // The first scheduled run starts with serve: wait (bounded) for it to finish (the
    // partitions go before the alerts are copied, so dropped months are not the end).
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while db.count("SELECT count(*) FROM archive_runs WHERE status <> 'running'").await == 0 {
        assert!(std::time::Instant::now() < deadline, "serve finished no archive run within 60 s");
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    assert_eq!(partitions(&db).await.len(), 1);
    let mut exported = String::new();
    while std::time::Instant::now() < deadline {
        if let Ok((_, body)) = http_get(&metrics, "/metrics") {
            exported = body;
            if exported.contains("skywarden_archive_last_run_failed 0") {
                break;
            }
        }
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    assert!(
        exported.contains(r#"skywarden_archive_months{source="cloudtrail_events",state="dropped"} 2"#),
        "{exported}"
    );
    assert!(exported.contains(r#"skywarden_archive_months{source="alerts",state="verified"} 2"#), "{exported}");
    assert!(exported.contains("skywarden_archive_month_errors 0"), "{exported}");
    assert!(exported.contains("skywarden_archive_last_run_failed 0"), "{exported}");
    check_lake(&read_lake(&parquet_files(lake.path())), lake.path(), 65_536);
}

/// CloudTrail events through the importer's own parser and writer, on a long-lived partition
/// cache shared as a poller's is.
pub(crate) async fn store_events(
    writer: &mut skywarden::ingest::store::BatchWriter,
    events: &[(&str, &str)],
) -> skywarden::ingest::store::BatchOutcome {
    use skywarden::geo::GeoCache;
    use skywarden::ingest::{ParseContext, parse_content, source};
    let records: Vec<Value> = events
        .iter()
        .map(|(id, time)| {
            json!({"eventVersion": "1.09", "eventID": id, "eventTime": time, "eventSource": "iam.amazonaws.com",
                   "eventName": "ListUsers", "awsRegion": "us-east-1", "sourceIPAddress": "198.51.100.7",
                   "recipientAccountId": "111111111111",
                   "userIdentity": {"type": "IAMUser", "accountId": "111111111111", "userName": "alice"}})
        })
        .collect();
    let content = serde_json::to_vec(&json!({ "Records": records })).unwrap();
    let opened = source::open_reader(std::io::Cursor::new(content)).unwrap();
    let context = ParseContext::for_account("111111111111", Vec::new(), 1 << 20);
    let mut batches = Vec::new();
    let report = parse_content(
        opened,
        std::sync::Arc::new("late.json".into()),
        None,
        &context,
        &mut GeoCache::new(None),
        &mut |batch| {
            batches.push(batch);
            true
        },
    );
    assert!(report.errors.is_empty(), "{:?}", report.errors);
    let mut total = skywarden::ingest::store::BatchOutcome::default();
    for batch in &batches {
        let outcome = writer.write(batch).await.unwrap_or_else(|e| panic!("{e}: {:?}", std::error::Error::source(&e)));
        total.inserted += outcome.inserted;
        total.rejected.extend(outcome.rejected);
    }
    total
}

#[tokio::test]
async fn a_late_event_for_a_dropped_month_lands_in_the_running_process() {
    use skywarden::db::partitions::PartitionCache;
    use skywarden::ingest::store::BatchWriter;
    let db = TestDb::new().await;
    let cache = std::sync::Arc::new(PartitionCache::default());
    let mut writer = BatchWriter::connect(&db.pool, cache.clone()).await.unwrap();
    let stored =
        store_events(&mut writer, &[("evt-a", "2024-01-10T10:00:00Z"), ("evt-b", "2024-01-11T10:00:00Z")]).await;
    assert_eq!(stored.inserted, 2);

    let (lake, to, destination) = folder_lake().await;
    let first = archive::run(&db.pool, &destination, &options(&to, None)).await.unwrap();
    assert_eq!((first.months[0].outcome.as_str(), first.months[0].rows), ("dropped", 2));
    assert!(partitions(&db).await.is_empty());

    // The same writer and cache, which created January's partition before it was dropped.
    let late = store_events(&mut writer, &[("evt-late", "2024-01-20T10:00:00.123456Z")]).await;
    assert_eq!((late.inserted, late.rejected.len()), (1, 0));
    assert_eq!(partitions(&db).await, ["cloudtrail_events_p202401"]);

    let second = archive::run(&db.pool, &destination, &options(&to, None)).await.unwrap();
    assert_eq!((second.months[0].outcome.as_str(), second.months[0].rows), ("dropped", 1));
    let files = parquet_files(lake.path());
    assert!(files.iter().any(|f| f.ends_with("eventDay=20240120/cloudtrail_events-202401-g1.parquet")), "{files:?}");
    assert!(files.iter().any(|f| f.ends_with("eventDay=20240110/cloudtrail_events-202401-g0.parquet")), "{files:?}");
    let late_file: Vec<String> = files.into_iter().filter(|f| f.contains("eventDay=20240120")).collect();
    let read = read_lake(&late_file);
    let row = &read[&late_file[0]]["rows"][0];
    assert_eq!((&row["metadata"]["uid"], &row["time_dt"]), (&json!("evt-late"), &json!("2024-01-20T10:00:00.123456Z")));
    assert_eq!(read[&late_file[0]]["errors"], json!([]));
}

#[tokio::test]
async fn an_object_past_the_part_size_goes_up_in_parts_on_moto() {
    let moto = fake::moto_url().await;
    let settings = fake::settings_for(moto);
    let (s3, bucket) = lake::bucket(&settings).await;
    // S3's smallest part (5 MiB): 11 MiB go up as three parts.
    let destination =
        Destination::open(&format!("s3://{bucket}/lake"), &settings).await.unwrap().with_part_size(5 << 20);
    let content: Vec<u8> = (0..11u32 << 20).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8).collect();
    let mut etags = Vec::new();
    for (key, bytes) in [("ext/big.parquet", &content[..]), ("ext/small.parquet", &content[..1024])] {
        let staged = destination.stage(key).unwrap();
        std::fs::write(&staged, bytes).unwrap();
        destination.commit(&staged, key).await.unwrap();
        assert!(!staged.exists(), "the staged copy is removed");
        let object = s3.get_object().bucket(&bucket).key(format!("lake/{key}")).send().await.unwrap();
        etags.push(object.e_tag().unwrap().trim_matches('"').to_owned());
        assert!(object.body.collect().await.unwrap().into_bytes() == bytes, "{key}: content differs");
    }
    // A multipart object's ETag ends with its part count; one PutObject's has none.
    assert!(etags[0].ends_with("-3"), "{etags:?}");
    assert!(!etags[1].contains('-'), "{etags:?}");
    let pending = s3.list_multipart_uploads().bucket(&bucket).send().await.unwrap();
    assert!(pending.uploads().is_empty(), "no upload left open");
    // The read-back path downloads it whole.
    let (path, temporary) = destination.fetch("ext/big.parquet").await.unwrap();
    assert!(temporary && std::fs::read(&path).unwrap() == content);
    std::fs::remove_file(path).unwrap();
}

// ---- Hardening (issue 18): drops that lock only the month, the id ledger, content
// verification, the byte bound of row groups, alerts copied again, a real process killed.

use skywarden::archive::store::Source;
use skywarden::archive::{HookPoint, TestHook};

/// What a test hook that holds a run reports and how the test lets it go on.
struct Held {
    reached: tokio::sync::mpsc::UnboundedReceiver<HookPoint>,
    release: std::sync::Arc<tokio::sync::Semaphore>,
}

impl Held {
    async fn next(&mut self) -> HookPoint {
        let wait = std::time::Duration::from_secs(60);
        tokio::time::timeout(wait, self.reached.recv()).await.expect("no hold point within 60 s").expect("run ended")
    }

    fn go(&self) {
        self.release.add_permits(1);
    }
}

/// A hook holding the run at every point `hold` picks until the test calls [`Held::go`].
fn hold_at(hold: impl Fn(&HookPoint) -> bool + Send + Sync + 'static) -> (TestHook, Held) {
    let (tx, reached) = tokio::sync::mpsc::unbounded_channel();
    let release = std::sync::Arc::new(tokio::sync::Semaphore::new(0));
    let permits = release.clone();
    let hook: TestHook = std::sync::Arc::new(move |point| {
        let (tx, permits, held) = (tx.clone(), permits.clone(), hold(&point));
        Box::pin(async move {
            if held {
                let _ = tx.send(point);
                permits.acquire().await.expect("semaphore open").forget();
            }
        })
    });
    (hook, Held { reached, release })
}

/// An archive run in the background, to the folder `options` name.
fn spawn_run(
    db: &TestDb,
    options: ArchiveOptions,
) -> tokio::task::JoinHandle<Result<archive::RunReport, ArchiveError>> {
    let pool = db.pool.clone();
    tokio::spawn(async move { lake::run(&pool, &lake::no_aws(), &options).await })
}

/// A run over the seeded database to a new folder, in the background, held at every point
/// `hold` picks (see [`hold_at`]).
struct HeldRun {
    db: TestDb,
    lake: tempfile::TempDir,
    to: String,
    run: tokio::task::JoinHandle<Result<archive::RunReport, ArchiveError>>,
    held: Held,
}

async fn seeded_run_held_at(hold: impl Fn(&HookPoint) -> bool + Send + Sync + 'static) -> HeldRun {
    let db = TestDb::new().await;
    seed(&db).await;
    let lake = tempfile::tempdir().unwrap();
    let to = lake.path().to_str().unwrap().to_owned();
    let (hook, held) = hold_at(hold);
    let run = spawn_run(&db, ArchiveOptions { test_hook: Some(hook), ..options(&to, None) });
    HeldRun { db, lake, to, run, held }
}

/// The stage January 2024's CloudTrail month reached at `point` ("verified" or "detached"), if
/// the point is that month's.
fn january_stage(point: &HookPoint) -> Option<&'static str> {
    let january = Utc.with_ymd_and_hms(2024, 1, 1, 0, 0, 0).unwrap();
    match *point {
        HookPoint::Verified { source: Source::CloudTrail, month } if month == january => Some("verified"),
        HookPoint::Detached { source: Source::CloudTrail, month } if month == january => Some("detached"),
        _ => None,
    }
}

/// Leaves the detach of `partition` pending, as a detach whose lock wait timed out (a reader
/// held the parent) or a killed run leaves it: its first step committed, its second not run.
async fn leave_detach_pending(db: &TestDb, partition: &str) {
    let mut reader = skywarden::db::begin(&db.pool).await.unwrap();
    sqlx::query("SELECT count(*) FROM cloudtrail_events").execute(&mut *reader).await.unwrap();
    let mut detacher = db.pool.acquire().await.unwrap();
    sqlx::query("SET lock_timeout = '500ms'").execute(&mut *detacher).await.unwrap();
    let timed_out = sqlx::raw_sql(&format!("ALTER TABLE cloudtrail_events DETACH PARTITION {partition} CONCURRENTLY"))
        .execute(&mut *detacher)
        .await;
    assert!(timed_out.is_err(), "the detach should have waited for the reader");
    sqlx::query("RESET lock_timeout").execute(&mut *detacher).await.unwrap();
    drop(detacher);
    reader.commit().await.unwrap();
}

async fn insert_event(executor: impl sqlx::PgExecutor<'_>, id: &str, time: &str) {
    sqlx::query(
        "INSERT INTO cloudtrail_events (account_id, event_time, event_id, region, event_name, source_ip_text, raw)
         VALUES ('111111111111', $2::timestamptz, $1, 'us-east-1', 'ListUsers', '198.51.100.7',
                 jsonb_build_object('eventID', $1::text))",
    )
    .bind(id)
    .bind(time)
    .execute(executor)
    .await
    .unwrap_or_else(|e| panic!("inserting {id}: {e}"));
}

/// Every API Activity uid in the lake (with repeats).
fn lake_event_ids(root: &Path) -> Vec<String> {
    let files: Vec<String> = parquet_files(root).into_iter().filter(|f| f.contains("skywarden-api")).collect();
    let mut ids: Vec<String> = read_lake(&files)
        .values()
        .flat_map(|f| f["rows"].as_array().unwrap().clone())
        .map(|r| r["metadata"]["uid"].as_str().unwrap().to_owned())
        .collect();
    ids.sort();
    ids
}

fn month_report<'a>(report: &'a archive::RunReport, source: &str, month: &str) -> &'a archive::MonthReport {
    report.months.iter().find(|m| m.source == source && m.month == month).unwrap_or_else(|| panic!("{report:?}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropping_a_month_holds_up_no_other_month_and_loses_no_row_that_arrives() {
    let HeldRun { db, lake, to: _, run, mut held } = seeded_run_held_at(|point| january_stage(point).is_some()).await;

    // January is verified, not dropped yet: an event for January arrives.
    assert!(matches!(held.next().await, HookPoint::Verified { .. }));
    insert_event(&db.pool, "evt-during", "2024-01-15T12:00:00Z").await;
    held.go();
    // January is detached and locked for its last count: February takes inserts and the parent
    // answers searches meanwhile (the old drop locked the parent: this insert waited for it).
    assert!(matches!(held.next().await, HookPoint::Detached { .. }));
    let mut other = db.pool.acquire().await.unwrap();
    sqlx::query("SET statement_timeout = '5s'").execute(&mut *other).await.unwrap();
    insert_event(&mut *other, "evt-feb-during", "2024-02-20T12:00:00Z").await;
    let later: i64 = sqlx::query_scalar("SELECT count(*) FROM cloudtrail_events WHERE event_time >= '2024-02-01'")
        .fetch_one(&mut *other)
        .await
        .expect("a search over the parent waits for nothing");
    assert_eq!(later, 405 + 1 + 1);
    sqlx::query("RESET statement_timeout").execute(&mut *other).await.unwrap();
    drop(other);
    held.go();
    // The last count found the row that arrived: January is attached again, written again
    // with it, and only then dropped.
    assert!(matches!(held.next().await, HookPoint::Verified { .. }));
    held.go();
    assert!(matches!(held.next().await, HookPoint::Detached { .. }));
    held.go();
    let report = run.await.unwrap().unwrap();
    assert_eq!(report.failed(), 0, "{report:?}");
    let jan = month_report(&report, "cloudtrail_events", "2024-01");
    assert_eq!((jan.outcome.as_str(), jan.rows), ("dropped", 496));
    let feb = month_report(&report, "cloudtrail_events", "2024-02");
    assert_eq!((feb.outcome.as_str(), feb.rows), ("dropped", 406));
    let ids = lake_event_ids(lake.path());
    assert_eq!(ids.len(), 902);
    assert_eq!(ids.iter().filter(|id| *id == "evt-during").count(), 1);
    assert_eq!(ids.iter().filter(|id| *id == "evt-feb-during").count(), 1);
    assert_eq!(db.count("SELECT count(*) FROM cloudtrail_events").await, 1);
}

#[tokio::test]
async fn a_month_imported_again_after_archiving_is_not_archived_twice() {
    use skywarden::db::partitions::PartitionCache;
    use skywarden::ingest::store::BatchWriter;
    let db = TestDb::new().await;
    let file = [("evt-a", "2024-01-10T10:00:00Z"), ("evt-b", "2024-01-11T10:00:00.5Z")];
    let import = |events: Vec<(&'static str, &'static str)>| {
        let pool = db.pool.clone();
        async move {
            let mut writer = BatchWriter::connect(&pool, std::sync::Arc::new(PartitionCache::default())).await.unwrap();
            store_events(&mut writer, &events).await.inserted
        }
    };
    assert_eq!(import(file.to_vec()).await, 2);
    let (lake, to, destination) = folder_lake().await;
    let first = archive::run(&db.pool, &destination, &options(&to, None)).await.unwrap();
    assert_eq!((first.months[0].outcome.as_str(), first.months[0].rows), ("dropped", 2));

    // The same file imported again (its month comes back), with one event truly new.
    assert_eq!(import(file.to_vec()).await, 2);
    assert_eq!(import(vec![("evt-new", "2024-01-12T10:00:00Z")]).await, 1);
    let second = archive::run(&db.pool, &destination, &options(&to, None)).await.unwrap();
    let month = &second.months[0];
    assert_eq!((month.outcome.as_str(), month.rows, month.already_archived), ("dropped", 1, 2), "{second:?}");
    assert_eq!(lake_event_ids(lake.path()), ["evt-a", "evt-b", "evt-new"]);
    let second_generation: Vec<String> =
        parquet_files(lake.path()).into_iter().filter(|f| f.ends_with("-g1.parquet")).collect();
    assert_eq!(second_generation.len(), 1, "{second_generation:?}");
    assert!(second_generation[0].contains("eventDay=20240112"), "{second_generation:?}");
    assert!(partitions(&db).await.is_empty());
    assert_eq!(db.count("SELECT already_archived FROM archive_partitions WHERE generation = 1").await, 2);

    // Everything once more: all of it is in the lake already, nothing is written.
    let files = parquet_files(lake.path());
    assert_eq!(import(vec![file[0], file[1], ("evt-new", "2024-01-12T10:00:00Z")]).await, 3);
    let third = archive::run(&db.pool, &destination, &options(&to, None)).await.unwrap();
    let month = &third.months[0];
    assert_eq!((month.outcome.as_str(), month.rows, month.already_archived, month.objects), ("dropped", 0, 3, 0));
    assert_eq!(parquet_files(lake.path()), files);
    assert!(partitions(&db).await.is_empty());
    let status = db.skywarden(&["archive", "status"]);
    assert!(String::from_utf8_lossy(&status.stdout).contains("3 already archived"), "{status:?}");
}

/// Rewrites `path` with pyarrow, one space added to the first row's `raw_data` (the same JSON
/// to a parser, other bytes): that row's `metadata.uid`.
fn alter_raw_data(path: &str) -> String {
    const ALTER: &str = r#"
import sys, pyarrow as pa, pyarrow.parquet as pq
path = sys.argv[1]
table = pq.read_table(path)
i = table.schema.get_field_index("raw_data")
raw = table.column(i).to_pylist()
raw[0] = raw[0] + " "
table = table.set_column(i, table.schema.field(i), pa.array(raw, type=table.schema.field(i).type))
pq.write_table(table, path, compression="gzip")
print(table.column(table.schema.get_field_index("metadata")).to_pylist()[0]["uid"])
"#;
    let output = Command::new(python()).args(["-c", ALTER, path]).output().unwrap();
    assert!(output.status.success(), "pyarrow: {}", String::from_utf8_lossy(&output.stderr));
    String::from_utf8_lossy(&output.stdout).trim().to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lake_object_whose_raw_data_was_altered_fails_verification_and_nothing_is_dropped() {
    let HeldRun { db, lake, to, run, mut held } =
        seeded_run_held_at(|point| *point == HookPoint::ObjectWritten { objects: 1 }).await;
    held.next().await;
    let files = parquet_files(lake.path());
    assert_eq!(files.len(), 1, "{files:?}");
    let altered = alter_raw_data(&files[0]);
    held.go();
    let report = run.await.unwrap().unwrap();
    let jan = month_report(&report, "cloudtrail_events", "2024-01");
    assert_eq!(jan.outcome, "failed", "{report:?}");
    assert!(jan.error.as_deref().unwrap_or("").contains("read back"), "{jan:?}");
    // January stays in PostgreSQL, attached; the month's error is recorded.
    assert!(partitions(&db).await.contains(&"cloudtrail_events_p202401".to_owned()));
    let january = "SELECT count(*) FROM cloudtrail_events WHERE event_time < '2024-02-01'";
    assert_eq!(db.count(january).await, 495);
    let error: Option<String> = sqlx::query_scalar(
        "SELECT error FROM archive_partitions WHERE source = 'cloudtrail_events' AND month_start = '2024-01-01'",
    )
    .fetch_one(&db.pool)
    .await
    .unwrap();
    assert!(error.is_some_and(|e| e.contains("read back")));

    // The next run writes the month again and drops it; raw_data is raw::text byte for byte.
    let stored: String = sqlx::query_scalar("SELECT raw::text FROM cloudtrail_events WHERE event_id = $1")
        .bind(&altered)
        .fetch_one(&db.pool)
        .await
        .unwrap();
    let destination = Destination::open(&to, &lake::no_aws()).await.unwrap();
    let again = archive::run(&db.pool, &destination, &options(&to, None)).await.unwrap();
    assert_eq!(month_report(&again, "cloudtrail_events", "2024-01").outcome, "dropped");
    let read = read_lake(&parquet_files(lake.path()));
    let row = read
        .values()
        .flat_map(|f| f["rows"].as_array().unwrap())
        .find(|r| r["metadata"]["uid"] == altered.as_str())
        .unwrap();
    assert_eq!(row["raw_data"].as_str().unwrap(), stored);
}

#[tokio::test]
async fn a_month_of_huge_events_splits_into_row_groups_under_the_byte_bound() {
    use parquet::file::reader::FileReader;
    let db = TestDb::new().await;
    sqlx::query("SELECT skywarden_ensure_month_partition('cloudtrail_events', '2024-01-10')")
        .execute(&db.pool)
        .await
        .unwrap();
    // Six events of a MiB each, one account, region and day: one file.
    sqlx::query(
        "INSERT INTO cloudtrail_events (account_id, event_time, event_id, region, event_name, raw)
         SELECT '111111111111', timestamptz '2024-01-10' + i * interval '1 minute', 'big-' || i, 'us-east-1',
                'PutObject', jsonb_build_object('eventID', 'big-' || i, 'blob', repeat(md5(i::text), 32768))
         FROM generate_series(1, 6) i",
    )
    .execute(&db.pool)
    .await
    .unwrap();
    let (lake, to, destination) = folder_lake().await;
    let bound = 2 << 20;
    let options = ArchiveOptions { row_group_rows: 65_536, row_group_bytes: bound, ..options(&to, None) };
    let report = archive::run(&db.pool, &destination, &options).await.unwrap();
    assert_eq!((report.months[0].outcome.as_str(), report.months[0].rows), ("dropped", 6));
    let files = parquet_files(lake.path());
    assert_eq!(files.len(), 1);
    let reader =
        parquet::file::serialized_reader::SerializedFileReader::new(std::fs::File::open(&files[0]).unwrap()).unwrap();
    let groups: Vec<(i64, i64)> =
        reader.metadata().row_groups().iter().map(|g| (g.num_rows(), g.total_byte_size())).collect();
    // A group closes once it holds 2 MiB: two rows of a MiB and a bit, never all six.
    assert_eq!(groups.iter().map(|g| g.0).collect::<Vec<_>>(), [2, 2, 2], "{groups:?}");
    assert!(groups.iter().all(|g| g.1 < 3 * (1 << 20)), "{groups:?}");
}

#[tokio::test]
async fn a_closed_alert_that_changes_after_its_copy_is_copied_again() {
    let db = TestDb::new().await;
    seed(&db).await;
    let (lake, to, destination) = folder_lake().await;
    archive::run(&db.pool, &destination, &options(&to, None)).await.unwrap();
    let findings = || {
        let files: Vec<String> =
            parquet_files(lake.path()).into_iter().filter(|f| f.contains("skywarden-finding")).collect();
        read_lake(&files).values().flat_map(|f| f["rows"].as_array().unwrap().clone()).collect::<Vec<Value>>()
    };
    let before = findings();
    assert_eq!(before.len(), 3);

    // Its title and status change (updated_at moves with them): same id, same count.
    sqlx::query("UPDATE alerts SET title = 'Root login (confirmed)', status = 'dismissed' WHERE dedup_key = 'a'")
        .execute(&db.pool)
        .await
        .unwrap();
    let again = archive::run(&db.pool, &destination, &options(&to, None)).await.unwrap();
    let outcomes: Vec<(&str, &str)> = again.months.iter().map(|m| (m.month.as_str(), m.outcome.as_str())).collect();
    assert_eq!(outcomes, [("2024-01", "verified"), ("2024-02", "unchanged")]);
    let after = findings();
    assert_eq!(after.len(), 3, "each alert once");
    let changed = after.iter().find(|r| r["finding_info"]["title"] == "Root login (confirmed)").unwrap();
    assert_eq!(changed["status"], "Suppressed");
    let raw: Value = serde_json::from_str(changed["raw_data"].as_str().unwrap()).unwrap();
    assert_eq!(raw["status"], "dismissed");
    let third = archive::run(&db.pool, &destination, &options(&to, None)).await.unwrap();
    assert!(third.months.iter().all(|m| m.outcome == "unchanged"), "{third:?}");
}

/// Runs the real binary with the test pause at `pause` and SIGKILLs it there.
fn kill_archive_at(db: &TestDb, to: &str, pause: &str) {
    use std::io::BufRead;
    let mut child = crate::support::skywarden_command(&db.url)
        .args(["archive", "--older-than", "30", "--to", to, "--row-group-rows", "20"])
        .env("SKYWARDEN_ARCHIVE_TEST_PAUSE", pause)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stderr).lines().map_while(Result::ok) {
            if line.contains("archive test pause") {
                let _ = tx.send(line);
            }
        }
    });
    let paused = rx.recv_timeout(std::time::Duration::from_secs(120));
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    paused.unwrap_or_else(|_| panic!("skywarden archive never reached {pause}"));
}

#[tokio::test]
async fn a_killed_archive_process_resumes_without_loss_or_duplicates() {
    let db = TestDb::new().await;
    seed(&db).await;
    let lake = tempfile::tempdir().unwrap();
    let to = lake.path().to_str().unwrap().to_owned();
    let before = partitions(&db).await;

    // Killed after seven objects: nothing dropped, the objects are recorded as written.
    kill_archive_at(&db, &to, "objects:7");
    assert_eq!(parquet_files(lake.path()).len(), 7);
    assert_eq!(partitions(&db).await, before);
    assert_eq!(db.count("SELECT cardinality(objects)::bigint FROM archive_partitions").await, 7);

    // Killed with January written and verified, still attached: nothing is detached, the
    // month is recorded as verified.
    kill_archive_at(&db, &to, "verified");
    assert_eq!(partitions(&db).await, before);
    assert_eq!(skywarden::archive::status::detached_months(&db.pool).await.unwrap(), 0);
    assert_eq!(
        db.count("SELECT count(*) FROM archive_partitions WHERE source = 'cloudtrail_events' AND state = 'verified'")
            .await,
        1
    );

    // Killed with January verified, detached and locked for its last count: the month is out
    // of the parent, not dropped, and shows as such.
    kill_archive_at(&db, &to, "detached");
    assert!(!partitions(&db).await.contains(&"cloudtrail_events_p202401".to_owned()));
    assert_eq!(db.count("SELECT count(*) FROM cloudtrail_events_p202401").await, 495);
    assert_eq!(skywarden::archive::status::detached_months(&db.pool).await.unwrap(), 1);

    let done = crate::support::skywarden_command(&db.url)
        .args(["archive", "--older-than", "30", "--to", &to, "--row-group-rows", "20", "--json"])
        .output()
        .unwrap();
    assert!(done.status.success(), "{}", String::from_utf8_lossy(&done.stderr));
    assert_eq!(partitions(&db).await, [before[2].clone()]);
    assert_eq!(skywarden::archive::status::detached_months(&db.pool).await.unwrap(), 0);
    assert_eq!(db.count("SELECT count(*) FROM cloudtrail_events").await, 1);
    // Every row once in the lake, each month dropped once (no second generation).
    check_lake(&read_lake(&parquet_files(lake.path())), lake.path(), 20);
    let months: Vec<(String, i32, String)> =
        sqlx::query_as("SELECT source, generation, state FROM archive_partitions ORDER BY source, month_start")
            .fetch_all(&db.pool)
            .await
            .unwrap();
    assert_eq!(
        months,
        [
            ("alerts".into(), 0, "verified".into()),
            ("alerts".into(), 0, "verified".into()),
            ("cloudtrail_events".into(), 0, "dropped".into()),
            ("cloudtrail_events".into(), 0, "dropped".into()),
            ("flow_records".into(), 0, "dropped".into()),
        ]
    );
    assert_eq!(db.count("SELECT count(*) FROM archive_runs WHERE error LIKE 'interrupted%'").await, 3);
}

#[tokio::test]
async fn a_detach_left_pending_is_finalized_and_the_month_archived() {
    use skywarden::archive::store::{self, PartitionLink};
    let db = TestDb::new().await;
    seed(&db).await;
    // A reader holds the parent while a detach runs with a short lock timeout: the detach's
    // first step commits, its wait times out, and the partition is left pending, as a killed
    // run leaves it.
    leave_detach_pending(&db, "cloudtrail_events_p202401").await;
    let january = Utc.with_ymd_and_hms(2024, 1, 1, 0, 0, 0).unwrap();
    assert_eq!(
        store::partition_link(&db.pool, Source::CloudTrail, january).await.unwrap(),
        PartitionLink::DetachPending
    );
    assert_eq!(skywarden::archive::status::detached_months(&db.pool).await.unwrap(), 1);

    // The run writes January (attached again first: its rows are read through the parent),
    // then detaches, checks and drops it.
    let (lake, to, destination) = folder_lake().await;
    let report = archive::run(&db.pool, &destination, &options(&to, None)).await.unwrap();
    let jan = month_report(&report, "cloudtrail_events", "2024-01");
    assert_eq!((jan.outcome.as_str(), jan.rows), ("dropped", 495), "{report:?}");
    assert_eq!(store::partition_link(&db.pool, Source::CloudTrail, january).await.unwrap(), PartitionLink::Absent);
    assert_eq!(skywarden::archive::status::detached_months(&db.pool).await.unwrap(), 0);
    assert_eq!(lake_event_ids(lake.path()).len(), 900);
}

// ---- Review of issue 18: a month being dropped and the writers, deferred detaches, the
// ledger's key encoding, months verified before 0039.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_late_row_for_a_month_being_dropped_waits_and_lands_as_the_next_generation() {
    use skywarden::db::partitions::PartitionCache;
    use skywarden::ingest::store::BatchWriter;
    let HeldRun { db, lake, to, run, mut held } =
        seeded_run_held_at(|point| january_stage(point) == Some("detached")).await;
    assert!(matches!(held.next().await, HookPoint::Detached { .. }));

    // January is detached, not yet dropped: an import brings a late January event. Before,
    // the partition's name existed, nothing was created and the import failed.
    let pool = db.pool.clone();
    let import = tokio::spawn(async move {
        let mut writer = BatchWriter::connect(&pool, std::sync::Arc::new(PartitionCache::default())).await.unwrap();
        store_events(&mut writer, &[("evt-late", "2024-01-20T10:00:00Z")]).await
    });
    tokio::time::sleep(std::time::Duration::from_secs(2)).await;
    assert!(!import.is_finished(), "the import waits for the month's drop");
    held.go();
    let report = run.await.unwrap().unwrap();
    let jan = month_report(&report, "cloudtrail_events", "2024-01");
    assert_eq!((jan.outcome.as_str(), jan.rows), ("dropped", 495), "{report:?}");
    let late = tokio::time::timeout(std::time::Duration::from_secs(30), import).await.unwrap().unwrap();
    assert_eq!((late.inserted, late.rejected.len()), (1, 0));
    assert!(partitions(&db).await.contains(&"cloudtrail_events_p202401".to_owned()), "January created anew");
    assert_eq!(db.count("SELECT count(*) FROM cloudtrail_events WHERE event_id = 'evt-late'").await, 1);

    // The next run archives it as January's next generation.
    let second = spawn_run(&db, options(&to, None)).await.unwrap().unwrap();
    let jan = month_report(&second, "cloudtrail_events", "2024-01");
    assert_eq!((jan.outcome.as_str(), jan.rows), ("dropped", 1), "{second:?}");
    let files = parquet_files(lake.path());
    assert!(files.iter().any(|f| f.ends_with("eventDay=20240120/cloudtrail_events-202401-g1.parquet")), "{files:?}");
    let ids = lake_event_ids(lake.path());
    assert_eq!(ids.iter().filter(|id| *id == "evt-late").count(), 1);
    assert_eq!(ids.len(), 901);
}

#[tokio::test]
async fn ledger_keys_of_rows_whose_fields_only_split_differently_differ() {
    let db = TestDb::new().await;
    let keys: Vec<(i64, i64)> = sqlx::query_as(
        "SELECT skywarden_archive_key(a1, i1, t1), skywarden_archive_key(a2, i2, t2)
         FROM (VALUES ('1/2', '3', timestamptz '2024-01-01', '1', '2/3', timestamptz '2024-01-01'),
                      ('12', '3', '2024-01-01', '1', '23', '2024-01-01'),
                      ('1', '1', '1970-01-01 00:00:00.1+00', '1', '11', '1970-01-01 00:00:00.01+00'))
              AS v(a1, i1, t1, a2, i2, t2)",
    )
    .fetch_all(&db.pool)
    .await
    .unwrap();
    for (a, b) in keys {
        assert_ne!(a, b);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_month_whose_table_a_long_transaction_holds_is_deferred_not_detached() {
    let db = TestDb::new().await;
    seed(&db).await;
    let lake = tempfile::tempdir().unwrap();
    let to = lake.path().to_str().unwrap().to_owned();
    // As pg_dump does: a transaction holds the events table for longer than the bound.
    let mut dump = skywarden::db::begin(&db.pool).await.unwrap();
    sqlx::query("SELECT count(*) FROM cloudtrail_events").execute(&mut *dump).await.unwrap();
    archive::set_old_holder_age_for_tests(std::time::Duration::from_secs(3));
    tokio::time::sleep(std::time::Duration::from_millis(3500)).await;
    let report = spawn_run(&db, options(&to, None)).await.unwrap().unwrap();
    archive::set_old_holder_age_for_tests(std::time::Duration::ZERO);
    for month in ["2024-01", "2024-02"] {
        let m = month_report(&report, "cloudtrail_events", month);
        assert_eq!(m.outcome, "deferred", "{report:?}");
        assert!(m.error.as_deref().is_some_and(|e| e.starts_with("deferred:") && e.contains("pid ")), "{m:?}");
    }
    assert_eq!(month_report(&report, "flow_records", "2024-03").outcome, "dropped");
    assert_eq!(report.failed(), 0);
    // Attached and whole: nothing pending, nothing hidden.
    assert_eq!(partitions(&db).await.iter().filter(|p| p.starts_with("cloudtrail_events_p2024")).count(), 2);
    assert_eq!(skywarden::archive::status::detached_months(&db.pool).await.unwrap(), 0);
    let mut metrics = String::new();
    skywarden::archive::status::write_metrics(&mut metrics, &db.pool).await;
    assert!(metrics.contains("skywarden_archive_months_deferred 2\n"), "{metrics}");
    assert!(metrics.contains("skywarden_archive_month_errors 0\n"), "{metrics}");
    dump.commit().await.unwrap();

    // Once the transaction is gone, the next run drops both without writing them again.
    let second = spawn_run(&db, options(&to, None)).await.unwrap().unwrap();
    for month in ["2024-01", "2024-02"] {
        assert_eq!(month_report(&second, "cloudtrail_events", month).outcome, "dropped", "{second:?}");
    }
    assert_eq!(db.count("SELECT objects::bigint FROM archive_runs ORDER BY run_id DESC LIMIT 1").await, 0);
    assert_eq!(lake_event_ids(lake.path()).len(), 900);
}

#[tokio::test]
async fn a_detach_another_month_left_pending_is_finalized_before_the_next_detach() {
    let db = TestDb::new().await;
    seed(&db).await;
    // February's detach timed out (a reader held the parent): pending, as a 5-minute lock
    // timeout leaves it. PostgreSQL refuses any other detach on the parent until it is finished.
    leave_detach_pending(&db, "cloudtrail_events_p202402").await;

    let lake = tempfile::tempdir().unwrap();
    let to = lake.path().to_str().unwrap().to_owned();
    let report = spawn_run(&db, options(&to, None)).await.unwrap().unwrap();
    assert_eq!(report.failed(), 0, "{report:?}");
    for (month, rows) in [("2024-01", 495), ("2024-02", 405)] {
        let m = month_report(&report, "cloudtrail_events", month);
        assert_eq!((m.outcome.as_str(), m.rows), ("dropped", rows), "{report:?}");
    }
    assert_eq!(skywarden::archive::status::detached_months(&db.pool).await.unwrap(), 0);
    assert_eq!(lake_event_ids(lake.path()).len(), 900);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_month_verified_before_key_checksums_is_dropped_without_writing_it_again() {
    let HeldRun { db, lake: _lake, to, run, mut held } =
        seeded_run_held_at(|point| january_stage(point) == Some("verified")).await;
    assert!(matches!(held.next().await, HookPoint::Verified { .. }));
    run.abort();
    let _ = run.await;
    // What a month verified by the released 0037 looks like after the upgrade to 0039.
    sqlx::query("UPDATE archive_partitions SET key_checksum = 0").execute(&db.pool).await.unwrap();

    // No object may be written before January is dropped: it must not be written again. (The
    // aborted run's lock goes with its connection, closed in the background.)
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    let result = loop {
        match spawn_run(&db, options(&to, Some(0))).await.unwrap() {
            Err(ArchiveError::Busy) if std::time::Instant::now() < deadline => {
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            }
            result => break result,
        }
    };
    assert!(matches!(result, Err(ArchiveError::Injected(0))), "{result:?}");
    let state: (i32, String) = sqlx::query_as(
        "SELECT generation, state FROM archive_partitions WHERE source = 'cloudtrail_events' AND month_start = '2024-01-01'",
    )
    .fetch_one(&db.pool)
    .await
    .unwrap();
    assert_eq!(state, (0, "dropped".to_owned()));
}
