//! Reading archived months back: the sample incident (November 2026) answers the audit-trail
//! API, is archived by `skywarden archive` to a folder and to S3 on moto, and the same
//! requests answer exactly as before (but for the `archived` marks). Row groups outside a
//! range are never read; a missing or corrupt object and the per-request bounds make the
//! answer say it is incomplete, never shorter in silence; concurrent requests load a row
//! group once; the cache evicts what was used least recently.

use axum::http::StatusCode;
use serde_json::Value;
use skywarden::archive::read::LakeLimits;
use skywarden::auth::{self, Role};
use skywarden::http::ApiContext;

use crate::api::call_with;
use crate::support::aws as fake;
use crate::support::{TestDb, lake, sample};

const ACCOUNT: &str = "111122223333";

async fn with_sample_incident() -> (TestDb, String) {
    let db = TestDb::new().await;
    sample::import_incident(&db, tempfile::tempdir().unwrap().path());
    let (_, token) = auth::create(&db.pool, "lake-reader", Role::Viewer).await.unwrap();
    (db, token)
}

async fn get(context: &ApiContext, token: &str, uri: &str) -> Value {
    let (status, body) = call_with(context, "GET", uri, Some(token), None).await;
    assert_eq!(status, StatusCode::OK, "{uri}: {body}");
    body
}

/// Every page of a search, following `next_cursor`, then one step back with `previous_cursor`.
/// The page size makes about six pages of each search (a first page of one event tells the total).
async fn pages(context: &ApiContext, token: &str, query: &str) -> Vec<Value> {
    let first = get(context, token, &format!("/api/v1/events?{query}")).await;
    let size = first["total"].as_i64().unwrap() / 6 + 1;
    let query = format!("{query}&limit={size}");
    let mut out = vec![first];
    let mut uri = format!("/api/v1/events?{query}");
    for _ in 0..12 {
        let page = get(context, token, &uri).await;
        let next = page["next_cursor"].as_str().map(str::to_owned);
        let previous = page["previous_cursor"].as_str().map(str::to_owned);
        out.push(page);
        match next {
            Some(cursor) => uri = format!("/api/v1/events?{query}&cursor={cursor}"),
            None => {
                if let Some(before) = previous {
                    out.push(get(context, token, &format!("/api/v1/events?{query}&before={before}")).await);
                }
                return out;
            }
        }
    }
    panic!("{query}: more than 12 pages");
}

/// The searches and reads the comparison covers, chosen from the imported data.
async fn requests(db: &TestDb) -> (Vec<String>, Vec<(String, String, String)>) {
    let text = |sql: &'static str| async move {
        sqlx::query_scalar::<_, String>(sql).fetch_one(&db.pool).await.unwrap_or_else(|e| panic!("{sql}: {e}"))
    };
    let principal = text("SELECT principal_arn FROM cloudtrail_events WHERE principal_arn IS NOT NULL GROUP BY 1 ORDER BY count(*) DESC, 1 LIMIT 1").await;
    let name = text("SELECT event_name FROM cloudtrail_events GROUP BY 1 ORDER BY count(*) DESC, 1 LIMIT 1").await;
    let network = text(
        "SELECT host(set_masklen(source_ip, 24)) || '/24' FROM cloudtrail_events WHERE family(source_ip) = 4
         GROUP BY 1 ORDER BY count(*) DESC, 1 LIMIT 1",
    )
    .await;
    let agent = text("SELECT substr(user_agent, 1, 8) FROM cloudtrail_events WHERE length(user_agent) > 8 GROUP BY 1 ORDER BY count(*) DESC, 1 LIMIT 1").await;
    let day = text("SELECT to_char(min(event_time) + interval '2 days', 'YYYY-MM-DD') FROM cloudtrail_events").await;
    let searches = vec![
        "read_only=false".to_owned(),
        format!("principal={}", urlencoding(&principal)),
        format!("event_name={}", urlencoding(&name)),
        format!("source_ip={}", urlencoding(&network)),
        "failed=true".to_owned(),
        format!("q={}", urlencoding(&agent)),
        format!("account={ACCOUNT}&since={day}T00:00:00Z&until={day}T18:30:00Z"),
        "country=UA".to_owned(),
    ];
    let events: Vec<(String, String, String)> = sqlx::query_as(
        "SELECT account_id, event_id, to_char(event_time AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"')
         FROM cloudtrail_events ORDER BY md5(event_id) LIMIT 5",
    )
    .fetch_all(&db.pool)
    .await
    .unwrap();
    (searches, events)
}

fn urlencoding(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// Every answer the comparison covers: search pages, single events, an export.
async fn answers(
    context: &ApiContext,
    token: &str,
    searches: &[String],
    events: &[(String, String, String)],
) -> Vec<Value> {
    let mut out = Vec::new();
    for query in searches {
        out.extend(pages(context, token, query).await);
    }
    for (account, id, time) in events {
        let id = urlencoding(id);
        out.push(get(context, token, &format!("/api/v1/events/{id}?account={account}&time={time}")).await);
        out.push(get(context, token, &format!("/api/v1/events/{account}/{id}")).await);
    }
    let (status, export) =
        call_with(context, "GET", "/api/v1/events/export?format=jsonl&failed=false", Some(token), None).await;
    assert_eq!(status, StatusCode::OK, "{export}");
    out.push(export);
    out
}

/// The answer without what reading the lake adds: each `archived` mark and the `archive` report
/// (returned: the marks seen, and the reports).
fn strip(value: &mut Value, marks: &mut Vec<bool>, reports: &mut Vec<Value>) {
    match value {
        Value::Object(map) => {
            if let Some(Value::Bool(mark)) = map.remove("archived") {
                marks.push(mark);
            }
            if let Some(report) = map.remove("archive") {
                reports.push(report);
            }
            map.values_mut().for_each(|v| strip(v, marks, reports));
        }
        Value::Array(list) => list.iter_mut().for_each(|v| strip(v, marks, reports)),
        // The JSON-lines export: each line compared the same way.
        Value::String(text) if text.starts_with("{\"") => {
            let mut lines: Vec<Value> = text.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
            lines.iter_mut().for_each(|v| strip(v, marks, reports));
            *value = Value::Array(lines);
        }
        _ => {}
    }
}

/// Imports, answers, archives to `to`, answers again: identical but for the marks. The hot
/// events left and the lake's object keys, for the later checks.
async fn answers_survive_archiving(
    db: &TestDb,
    token: &str,
    context: &ApiContext,
    to: &str,
    settings: &skywarden::aws::AwsSettings,
) {
    let (searches, events) = requests(db).await;
    let mut before = answers(context, token, &searches, &events).await;
    let (mut marks, mut reports) = (Vec::new(), Vec::new());
    strip(&mut Value::Array(before.clone()), &mut marks, &mut reports);
    before.iter_mut().for_each(|v| strip(v, &mut Vec::new(), &mut Vec::new()));
    assert!(!marks.is_empty() && marks.iter().all(|m| !m), "nothing is archived yet");
    assert!(reports.is_empty(), "no archive report while nothing is archived");
    let stored = db.count("SELECT count(*) FROM cloudtrail_events").await;
    assert!(stored > 100, "{stored}");

    // Row groups of 7 rows, so pruning has groups to skip.
    lake::archive_before_december_2026(db, to, settings, 7).await;
    assert_eq!(db.count("SELECT count(*) FROM cloudtrail_events").await, 0, "November is dropped");
    assert!(db.count("SELECT count(*) FROM archive_partitions WHERE state = 'dropped'").await >= 1);

    let mut after = answers(context, token, &searches, &events).await;
    let (mut marks, mut reports) = (Vec::new(), Vec::new());
    for answer in &mut after {
        strip(answer, &mut marks, &mut reports);
    }
    assert!(!marks.is_empty() && marks.iter().all(|m| *m), "every event now comes from the lake");
    for report in &reports {
        assert_eq!(report["complete"], true, "{report}");
    }
    assert_eq!(before.len(), after.len());
    for (before, after) in before.iter().zip(&after) {
        assert_eq!(before, after);
    }
    // Everything read was cached: no event twice.
    assert_eq!(db.count("SELECT count(*) FROM lake_events").await, stored);
    assert_eq!(db.count("SELECT count(*) - count(DISTINCT (account_id, event_id)) FROM lake_events").await, 0);
}

#[tokio::test]
async fn an_archived_folder_answers_through_the_api_exactly_as_before() {
    let (db, token) = with_sample_incident().await;
    let lake = tempfile::tempdir().unwrap();
    let to = lake.path().to_str().unwrap().to_owned();
    let context = ApiContext::new(db.pool.clone());
    answers_survive_archiving(&db, &token, &context, &to, &lake::no_aws()).await;
    let doc = get(&context, &token, "/api/v1/openapi.json").await;
    let schemas = &doc["components"]["schemas"];
    assert_eq!(schemas["EventSummary"]["properties"]["archived"]["type"], "boolean", "{}", schemas["EventSummary"]);
    assert!(schemas["LakeRead"]["properties"]["row_groups_skipped"].is_object(), "{}", schemas["LakeRead"]);
    assert!(schemas["EventPage"]["properties"]["archive"].is_object(), "{}", schemas["EventPage"]);

    // Pruning: one second of one account reads only that day's objects, and in them only the
    // row groups whose time statistics overlap. The busiest object's middle event, from the
    // cache the comparison filled.
    let (day, busiest, middle): (String, i64, String) = sqlx::query_as(
        "SELECT to_char(event_time AT TIME ZONE 'UTC', 'YYYYMMDD') AS day, count(*),
                to_char((percentile_disc(0.5) WITHIN GROUP (ORDER BY event_time)) AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"')
         FROM lake_events WHERE account_id = $1 GROUP BY day, region ORDER BY 2 DESC, 1 LIMIT 1",
    )
    .bind(ACCOUNT)
    .fetch_one(&db.pool)
    .await
    .unwrap();
    assert!(busiest >= 22, "the busiest object holds {busiest} events: too few for four row groups of 7");
    clear_cache(&db).await;
    let fresh = ApiContext::new(db.pool.clone());
    let iso = format!("{}-{}-{}", &day[..4], &day[4..6], &day[6..]);
    let objects_of_day = db
        .count(&format!(
            "SELECT count(*) FROM archive_partitions, unnest(objects) o
             WHERE source = 'cloudtrail_events' AND o LIKE '%accountId={ACCOUNT}/eventDay={day}/%'"
        ))
        .await;
    let cloudtrail_objects =
        db.count("SELECT sum(cardinality(objects)) FROM archive_partitions WHERE source = 'cloudtrail_events'").await;
    let until = chrono::DateTime::parse_from_rfc3339(&middle).unwrap() + chrono::Duration::seconds(1);
    let until = until.to_utc().to_rfc3339_opts(chrono::SecondsFormat::Micros, true);
    let narrow = get(
        &fresh,
        &token,
        &format!("/api/v1/events?account={ACCOUNT}&since={middle}&until={}&limit=1000", urlencoding(&until)),
    )
    .await;
    let read = &narrow["archive"];
    assert_eq!(read["complete"], true, "{read}");
    assert!(!narrow["events"].as_array().unwrap().is_empty(), "{narrow}");
    assert_eq!(read["objects_read"].as_i64().unwrap(), objects_of_day, "{read}");
    assert!(objects_of_day < cloudtrail_objects, "objects of other days are not opened");
    assert!(read["row_groups_skipped"].as_u64().unwrap() >= 2, "row groups outside the second are skipped: {read}");
    let loaded = db.count("SELECT count(*) FROM lake_events").await;
    let groups = db.count("SELECT count(*) FROM lake_loaded_groups").await;
    assert_eq!(read["row_groups_read"].as_i64().unwrap(), groups, "{read}");
    assert!(loaded <= groups * 7 && loaded < busiest, "only the groups read are loaded: {loaded}");
    let mut metrics = String::new();
    skywarden::archive::read::write_metrics(&mut metrics, &db.pool).await;
    assert!(metrics.contains("skywarden_lake_read_row_groups_skipped_total"), "{metrics}");
    assert!(metrics.contains(&format!("skywarden_lake_cache_rows {loaded}")), "{metrics}");

    // Single flight: three requests at once for the same range load each row group once.
    clear_cache(&db).await;
    let fresh = ApiContext::new(db.pool.clone());
    let uri = format!("/api/v1/events?account={ACCOUNT}&since={iso}T00:00:00Z&until={iso}T23:00:00Z");
    let answers = futures_util::future::join_all((0..3).map(|_| get(&fresh, &token, &uri))).await;
    let rows: u64 = answers.iter().map(|a| a["archive"]["rows_loaded"].as_u64().unwrap()).sum();
    assert_eq!(rows as i64, db.count("SELECT count(*) FROM lake_events").await, "{answers:?}");
    assert_eq!(db.count("SELECT count(*) - count(DISTINCT (account_id, event_id)) FROM lake_events").await, 0);
    assert!(answers.windows(2).all(|w| w[0]["events"] == w[1]["events"]));

    // The bounds: one day per request, and the answer says which bound stopped it.
    clear_cache(&db).await;
    let tight =
        ApiContext::new(db.pool.clone()).with_lake(LakeLimits { max_days_per_request: 1, ..LakeLimits::default() });
    let page = get(&tight, &token, "/api/v1/events?limit=1000").await;
    assert_eq!(page["archive"]["complete"], false, "{}", page["archive"]);
    assert!(page["archive"]["limit"].as_str().unwrap().contains("max_days_per_request=1"), "{}", page["archive"]);
    assert_eq!(page["total_is_lower_bound"], true);
    assert!(page["archive"]["days_loaded"].as_u64().unwrap() <= 1);
    let (status, body) = call_with(&tight, "GET", "/api/v1/events/export?format=csv", Some(&token), None).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert!(body["error"].as_str().unwrap().contains("max_days_per_request=1"), "{body}");

    // Eviction: past its bound, the cache drops the row groups used least recently.
    let small = ApiContext::new(db.pool.clone()).with_lake(LakeLimits { cache_max_rows: 10, ..LakeLimits::default() });
    // What the bound test loaded is an hour old (else the full cache of recent groups refuses).
    sqlx::query("UPDATE lake_loaded_groups SET used_at = now() - interval '1 hour'").execute(&db.pool).await.unwrap();
    get(&small, &token, &uri).await;
    sqlx::query("UPDATE lake_loaded_groups SET used_at = now() - interval '1 hour'").execute(&db.pool).await.unwrap();
    let other = format!("/api/v1/events?account={ACCOUNT}&since={middle}&until={}&limit=3", urlencoding(&until));
    let answer = get(&small, &token, &other).await;
    assert_eq!(answer["archive"]["complete"], true);
    let recent = db.count("SELECT count(*) FROM lake_loaded_groups WHERE used_at > now() - interval '1 minute'").await;
    let old = db.count("SELECT count(*) FROM lake_loaded_groups WHERE used_at < now() - interval '1 minute'").await;
    assert!(recent > 0, "the groups just used stay");
    assert!(
        db.count(
            "SELECT coalesce(sum(rows_loaded), 0)::bigint FROM lake_loaded_groups WHERE used_at < now() - interval '1 minute'"
        )
        .await
            <= 10,
        "{old} old groups left"
    );
    assert_eq!(
        db.count("SELECT count(*) FROM lake_events e WHERE NOT EXISTS (SELECT 1 FROM lake_loaded_groups g WHERE g.lake_object = e.lake_object AND g.row_group = e.lake_row_group)").await,
        0,
        "evicted groups leave no rows behind"
    );

    // A missing object and a corrupt one: named in the answer, counted, never a silently
    // shorter answer.
    clear_cache(&db).await;
    let keys: Vec<String> = sqlx::query_scalar(&format!(
        "SELECT o FROM archive_partitions, unnest(objects) o WHERE source = 'cloudtrail_events' AND o LIKE '%accountId={ACCOUNT}/eventDay={day}/%' ORDER BY o"
    ))
    .fetch_all(&db.pool)
    .await
    .unwrap();
    std::fs::remove_file(lake.path().join(&keys[0])).unwrap();
    if let Some(corrupt) = keys.get(1) {
        std::fs::write(lake.path().join(corrupt), b"not parquet at all, just text").unwrap();
    }
    let broken = ApiContext::new(db.pool.clone());
    // Object names are for administrators.
    let (_, admin) = auth::create(&db.pool, "lake-admin", Role::Admin).await.unwrap();
    let page =
        get(&broken, &admin, &format!("/api/v1/events?account={ACCOUNT}&since={iso}T00:00:00Z&until={iso}T23:59:59Z"))
            .await;
    let read = &page["archive"];
    assert_eq!(read["complete"], false, "{read}");
    assert_eq!(page["total_is_lower_bound"], true);
    let errors: Vec<&str> = read["errors"].as_array().unwrap().iter().map(|e| e.as_str().unwrap()).collect();
    assert!(errors.iter().any(|e| e.contains(&keys[0])), "{errors:?}");
    if let Some(corrupt) = keys.get(1) {
        assert!(errors.iter().any(|e| e.contains(corrupt.as_str()) && e.contains("Parquet")), "{errors:?}");
    }
    let mut metrics = String::new();
    skywarden::archive::read::write_metrics(&mut metrics, &db.pool).await;
    let failures: u64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("skywarden_lake_read_errors_total "))
        .and_then(|n| n.parse().ok())
        .unwrap();
    assert!(failures >= 1, "{metrics}");
}

#[tokio::test]
async fn an_archived_range_on_s3_answers_through_the_api_exactly_as_before() {
    let (db, token) = with_sample_incident().await;
    let moto = fake::moto_url().await;
    let settings = fake::settings_for(moto);
    let base = settings.load().await;
    let (s3, bucket) = lake::bucket(&settings).await;
    let to = format!("s3://{bucket}/security-lake");
    let context = ApiContext::new(db.pool.clone()).with_aws(settings.clone(), base.clone());
    answers_survive_archiving(&db, &token, &context, &to, &settings).await;

    // An object gone from the bucket: the answer names it.
    clear_cache(&db).await;
    // An object of the events (the flow records' month is archived too, and the audit trail
    // never reads it).
    let key: String = sqlx::query_scalar(
        "SELECT objects[1] FROM archive_partitions WHERE state = 'dropped' AND source = 'cloudtrail_events' LIMIT 1",
    )
    .fetch_one(&db.pool)
    .await
    .unwrap();
    s3.delete_object().bucket(&bucket).key(format!("security-lake/{key}")).send().await.unwrap();
    let fresh = ApiContext::new(db.pool.clone()).with_aws(settings, base);
    // Ask for the deleted object's own day (the answer names it only if it had to read it).
    let day = key.split("eventDay=").nth(1).and_then(|rest| rest.get(..8)).expect("eventDay in the key");
    let iso = format!("{}-{}-{}", &day[..4], &day[4..6], &day[6..]);
    let uri = format!("/api/v1/events?limit=5&since={iso}T00:00:00Z&until={iso}T23:59:59Z");
    let (_, admin) = auth::create(&db.pool, "lake-admin", Role::Admin).await.unwrap();
    let page = get(&fresh, &admin, &uri).await;
    let errors = page["archive"]["errors"].to_string();
    assert_eq!(page["archive"]["complete"], false);
    assert!(errors.contains(&key), "{errors}");
}

async fn clear_cache(db: &TestDb) {
    sqlx::query("TRUNCATE lake_events, lake_loaded_groups").execute(&db.pool).await.unwrap();
}
