//! Every region of a real account: enabled regions discovered (DescribeRegions with opt-in
//! status, from a fake EC2 since moto cannot say which regions an account opted in to), regional
//! jobs created and retired with them, global services' events read from us-east-1 for an
//! account that polls only eu-west-1 (and the hijack alert fired from them), and trails known
//! account-wide, once each, so the multi-region trail check judges the account rightly.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use serde_json::{Value, json};

use skywarden::accounts::{self, LogSources, NewAccount, PollIntervals};
use skywarden::aws::{AccountSession, AwsSettings};
use skywarden::db::partitions::PartitionCache;
use skywarden::geo::GeoDb;
use skywarden::http::ApiContext;
use skywarden::pollers::worker::Worker;
use skywarden::pollers::{PollContext, PollOptions, Source, jobs};
use skywarden::posture::checks::CheckSet;
use skywarden::posture::findings::{self, FindingFilter};

use crate::support::TestDb;
use crate::support::aws::{self as fake, FakeCloudTrail, FakeEc2, RegionsAnswer};

const NOT_REQUIRED: &str = "opt-in-not-required";

async fn context(db: &TestDb, settings: AwsSettings, geo: Option<Arc<GeoDb>>) -> PollContext {
    let base = settings.load().await;
    PollContext {
        pool: db.pool.clone(),
        base,
        settings,
        options: PollOptions {
            lookup_min_interval: Duration::from_millis(20),
            throttle_backoff: Duration::from_millis(20),
            ..PollOptions::default()
        },
        geo,
        partitions: Arc::new(PartitionCache::default()),
    }
}

async fn onboard(db: &TestDb, account: &str, regions: &[&str], sources: LogSources) -> accounts::Account {
    let new = NewAccount {
        role_arn: format!("arn:aws:iam::{account}:role/SkywardenReadOnly"),
        name: None,
        regions: regions.iter().map(|r| (*r).to_owned()).collect(),
        endpoint_url: None,
        sources,
    };
    accounts::onboard(&db.pool, &new, &PollIntervals::default()).await.expect("onboarding")
}

/// The account's enabled jobs, as (region, source, target), sorted.
async fn enabled_jobs(db: &TestDb, account: &str) -> Vec<(String, String, String)> {
    sqlx::query_as(
        "SELECT region, source, target FROM poll_jobs WHERE account_id = $1 AND enabled ORDER BY region, source, target",
    )
    .bind(account)
    .fetch_all(&db.pool)
    .await
    .unwrap()
}

fn job(region: &str, source: &str, target: &str) -> (String, String, String) {
    (region.to_owned(), source.to_owned(), target.to_owned())
}

fn event_in(account: &str, id: &str, region: &str, name: &str) -> Value {
    let mut event = fake::cloudtrail_event(account, id, Utc::now() - chrono::Duration::minutes(20), name, json!({}));
    event["awsRegion"] = json!(region);
    event
}

#[tokio::test]
async fn enabled_regions_are_discovered_and_regional_jobs_follow_them() {
    let db = TestDb::new().await;
    let moto = fake::moto_url().await;
    let cloudtrail = FakeCloudTrail::start(moto).await;
    let ec2 = FakeEc2::start(
        moto,
        &[
            ("us-east-1", NOT_REQUIRED),
            ("eu-west-1", NOT_REQUIRED),
            ("ap-east-1", "opted-in"),
            ("me-south-1", "not-opted-in"),
        ],
    )
    .await;
    let ctx = context(&db, fake::settings_with_fakes(moto, &cloudtrail.url, &ec2.url), None).await;
    let account_id = fake::random_account_id();
    let account = onboard(&db, &account_id, &[], LogSources::default()).await;
    assert!(account.regions.is_empty() && account.enabled_regions.is_none());
    assert_eq!(
        enabled_jobs(&db, &account_id).await,
        [job("global", "config-snapshot", ""), job("global", "regions", "")],
        "before the first discovery: the regions job and the account-wide snapshot"
    );
    for region in ["us-east-1", "eu-west-1", "ap-east-1", "me-south-1"] {
        cloudtrail.add_events([event_in(&account_id, &format!("evt-{region}"), region, "RunInstances")]);
    }

    let worker = Worker::new(ctx.clone(), "regions-worker", None);
    let reports = worker.run_once().await.unwrap();
    assert!(reports.iter().all(|r| r.error.is_none()), "{reports:?}");
    let mut expected = vec![job("global", "config-snapshot", ""), job("global", "regions", "")];
    for region in ["ap-east-1", "eu-west-1", "us-east-1"] {
        expected.push(job(region, "cloudtrail-lookup", ""));
        expected.push(job(region, "config-snapshot", ""));
    }
    expected.sort();
    assert_eq!(enabled_jobs(&db, &account_id).await, expected, "the opted-in region too, not the one not opted in");
    let asked = ec2.requests();
    assert_eq!(asked[0].0.as_deref(), Some("us-east-1"), "asked in the home region");
    assert_eq!(asked[0].1.get("AllRegions").map(String::as_str), Some("true"));
    let stored: Vec<String> =
        sqlx::query_scalar("SELECT event_id FROM cloudtrail_events WHERE account_id = $1 ORDER BY event_id")
            .bind(&account_id)
            .fetch_all(&db.pool)
            .await
            .unwrap();
    assert_eq!(stored, ["evt-ap-east-1", "evt-eu-west-1", "evt-us-east-1"], "each polled region's events, once");
    let account = accounts::load(&db.pool, &account_id).await.unwrap();
    assert_eq!(account.polled_regions, ["ap-east-1", "eu-west-1", "us-east-1"]);
    assert!(account.regions_discovered_at.is_some());

    // The account opts out of eu-west-1: its jobs retire, their checkpoints kept.
    ec2.set_regions(&[("us-east-1", NOT_REQUIRED), ("eu-west-1", "not-opted-in"), ("ap-east-1", "opted-in")]);
    jobs::run_now(&db.pool, &account_id, Some(Source::Regions)).await.unwrap();
    let reports = worker.run_once().await.unwrap();
    assert!(reports.iter().all(|r| r.error.is_none()), "{reports:?}");
    let jobs_now = enabled_jobs(&db, &account_id).await;
    assert!(!jobs_now.iter().any(|(region, _, _)| region == "eu-west-1"), "{jobs_now:?}");
    let kept =
        "SELECT count(*) FROM poll_jobs WHERE region = 'eu-west-1' AND NOT enabled AND checkpoint ? 'covered_until'";
    assert_eq!(db.count(kept).await, 1, "the retired lookup job keeps how far it had read");

    // Discovery fails, then answers with nothing: the jobs stay, the failure shows.
    for (answer, expected) in [
        (RegionsAnswer::Denied, "UnauthorizedOperation"),
        (RegionsAnswer::Failed, "Unavailable"),
        (RegionsAnswer::Empty, "no enabled region"),
    ] {
        ec2.answer(answer);
        jobs::run_now(&db.pool, &account_id, Some(Source::Regions)).await.unwrap();
        let reports = worker.run_once().await.unwrap();
        let failed = reports.iter().find(|r| r.source == "regions").expect("the regions job ran");
        let error = failed.error.as_deref().unwrap_or_default();
        assert!(error.contains(expected) && error.contains("ec2:DescribeRegions"), "{answer:?}: {error}");
        assert_eq!(enabled_jobs(&db, &account_id).await, jobs_now, "{answer:?} retires nothing");
    }
    let statuses = jobs::statuses(&db.pool, Some(&account_id)).await.unwrap();
    let regions_job = statuses.iter().find(|s| s.source == "regions").unwrap();
    assert_eq!(regions_job.consecutive_failures, 3);
    assert!(regions_job.last_error.as_deref().unwrap().contains("no enabled region"));
    assert!(regions_job.next_run_at > Utc::now(), "retried after a back-off");
    let (_, token) = skywarden::auth::create(&db.pool, "wall", skywarden::auth::Role::Viewer).await.unwrap();
    let (_, status) =
        crate::api::call(&db, "GET", &format!("/api/v1/accounts/{account_id}/status"), Some(&token), None).await;
    let shown = status.as_array().unwrap().iter().find(|j| j["source"] == "regions").unwrap().clone();
    assert!(shown["last_error"].as_str().unwrap().contains("ec2:DescribeRegions"), "{shown}");
    let scrape = tower::ServiceExt::oneshot(
        skywarden::http::metrics::router(ApiContext::new(db.pool.clone())),
        axum::http::Request::get("/metrics").body(axum::body::Body::empty()).unwrap(),
    )
    .await
    .unwrap();
    let scrape =
        String::from_utf8_lossy(&axum::body::to_bytes(scrape.into_body(), 1 << 20).await.unwrap()).into_owned();
    let failures = format!(
        "skywarden_poll_failures{{account=\"{account_id}\",region=\"global\",source=\"regions\",target=\"\"}} 3"
    );
    assert!(scrape.contains(&failures), "{scrape}");

    // eu-west-1 is enabled again: its jobs come back due, and read on from their checkpoints.
    ec2.answer(RegionsAnswer::Regions);
    ec2.set_regions(&[("us-east-1", NOT_REQUIRED), ("eu-west-1", NOT_REQUIRED), ("ap-east-1", "opted-in")]);
    jobs::run_now(&db.pool, &account_id, Some(Source::Regions)).await.unwrap();
    let before = cloudtrail.requests().len();
    let reports = worker.run_once().await.unwrap();
    assert!(reports.iter().all(|r| r.error.is_none()), "{reports:?}");
    assert_eq!(enabled_jobs(&db, &account_id).await, expected);
    let resumed = cloudtrail.requests()[before..]
        .iter()
        .find(|r| r.region.as_deref() == Some("eu-west-1"))
        .cloned()
        .expect("eu-west-1 polled again at once");
    let window = resumed.end_time.unwrap() - resumed.start_time.unwrap();
    assert!(window < 3600.0, "resumed from its checkpoint, not 90 days back: {window}s");
}

/// Successful console logins of alice, recorded (as AWS does) in us-east-1.
fn console_login(account: &str, id: &str, ip: &str, ago: chrono::Duration) -> Value {
    json!({
        "eventVersion": "1.09",
        "userIdentity": {"type": "IAMUser", "principalId": "AIDAALICE", "arn": format!("arn:aws:iam::{account}:user/alice"),
                         "accountId": account, "userName": "alice"},
        "eventTime": (Utc::now() - ago).format("%Y-%m-%dT%H:%M:%SZ").to_string(),
        "eventSource": "signin.amazonaws.com",
        "eventName": "ConsoleLogin",
        "awsRegion": "us-east-1",
        "sourceIPAddress": ip,
        "userAgent": "Mozilla/5.0",
        "requestParameters": null,
        "responseElements": {"ConsoleLogin": "Success"},
        "additionalEventData": {"MFAUsed": "No"},
        "eventID": id,
        "readOnly": false,
        "eventType": "AwsConsoleSignIn",
        "managementEvent": true,
        "recipientAccountId": account,
        "eventCategory": "Management"
    })
}

fn gzip(value: &Value) -> Vec<u8> {
    use std::io::Write;
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    encoder.write_all(value.to_string().as_bytes()).unwrap();
    encoder.finish().unwrap()
}

#[tokio::test]
async fn global_service_events_reach_an_account_that_polls_only_eu_west_1_and_the_hijack_alert_fires() {
    let db = TestDb::new().await;
    let moto = fake::moto_url().await;
    let cloudtrail = FakeCloudTrail::start(moto).await;
    let ec2 = FakeEc2::start(moto, &[("us-east-1", NOT_REQUIRED), ("eu-west-1", NOT_REQUIRED)]).await;
    let dir = tempfile::tempdir().unwrap();
    let countries = crate::support::mmdb::sample_incident_countries(dir.path());
    let geo = Arc::new(GeoDb::open(&[countries]).unwrap());
    let ctx = context(&db, fake::settings_with_fakes(moto, &cloudtrail.url, &ec2.url), Some(geo)).await;
    let account_id = fake::random_account_id();
    let bucket = format!("trail-{account_id}");
    // A central bucket in us-east-1, as a multi-region trail's usually is.
    let sources = LogSources {
        trail_bucket: Some(bucket.clone()),
        bucket_region: Some("us-east-1".into()),
        ..Default::default()
    };
    let account = onboard(&db, &account_id, &["eu-west-1"], sources).await;

    // Three logins from home (the US), then one from Ukraine: all in us-east-1 only. A regional
    // us-east-1 call is not wanted (the account polls eu-west-1); an eu-west-1 one is.
    let days = chrono::Duration::days;
    let hijack = console_login(&account_id, "login-ua", "176.36.10.20", chrono::Duration::minutes(10));
    // One event value for both deliveries: made twice, a second boundary between would give two
    // event times, two events.
    let run_eu = event_in(&account_id, "run-eu", "eu-west-1", "RunInstances");
    cloudtrail.add_events([
        console_login(&account_id, "login-1", "73.202.1.10", days(3)),
        console_login(&account_id, "login-2", "73.202.1.10", days(2)),
        console_login(&account_id, "login-3", "24.5.7.8", days(1)),
        hijack.clone(),
        event_in(&account_id, "run-us", "us-east-1", "RunInstances"),
        run_eu.clone(),
    ]);
    // The trail also delivers the Ukrainian login (and the eu-west-1 call) as a file: stored once.
    let owner = AccountSession::assume(&ctx.base, &ctx.settings, &account.assume_target()).await.unwrap();
    let s3 = owner.s3("us-east-1");
    s3.create_bucket().bucket(&bucket).send().await.unwrap();
    let today = Utc::now().format("%Y/%m/%d");
    let stamp = Utc::now().format("%Y%m%dT%H%MZ");
    let key = format!(
        "AWSLogs/{account_id}/CloudTrail/eu-west-1/{today}/{account_id}_CloudTrail_eu-west-1_{stamp}_x.json.gz"
    );
    let records = json!({"Records": [hijack, run_eu]});
    s3.put_object().bucket(&bucket).key(key).body(gzip(&records).into()).send().await.unwrap();

    let policies = skywarden::detect::PolicySet::load(&Path::new(env!("CARGO_MANIFEST_DIR")).join("policies"));
    let worker = Worker::new(ctx.clone(), "global-events-worker", Some(Arc::new(policies)));
    let reports = worker.run_once().await.unwrap();
    assert!(reports.iter().all(|r| r.error.is_none()), "{reports:?}");

    let jobs_now = enabled_jobs(&db, &account_id).await;
    assert!(jobs_now.contains(&job("us-east-1", "cloudtrail-lookup", "global-services")), "{jobs_now:?}");
    assert!(!jobs_now.contains(&job("us-east-1", "config-snapshot", "")), "us-east-1 resources are not polled");
    let stored: Vec<(String, i64)> = sqlx::query_as(
        "SELECT event_id, count(*) FROM cloudtrail_events WHERE account_id = $1 GROUP BY event_id ORDER BY event_id",
    )
    .bind(&account_id)
    .fetch_all(&db.pool)
    .await
    .unwrap();
    let expected: Vec<(String, i64)> =
        ["login-1", "login-2", "login-3", "login-ua", "run-eu"].iter().map(|id| ((*id).to_owned(), 1)).collect();
    assert_eq!(stored, expected, "global services' events once each, no us-east-1 regional call");
    let alert: (String, String) = sqlx::query_as(
        "SELECT policy_id, title FROM alerts WHERE account_id = $1 AND policy_id = 'aws-account-hijacking-attempt'",
    )
    .bind(&account_id)
    .fetch_one(&db.pool)
    .await
    .expect("the hijack alert, from a login seen only in us-east-1");
    assert!(alert.1.contains("alice") && alert.1.contains("UA"), "{alert:?}");

    // Read again (the overlap): nothing stored twice, no second alert.
    jobs::run_now(&db.pool, &account_id, None).await.unwrap();
    worker.run_once().await.unwrap();
    assert_eq!(db.count(&format!("SELECT count(*) FROM cloudtrail_events WHERE account_id = '{account_id}'")).await, 5);
    let alerts = format!(
        "SELECT count(*) FROM alerts WHERE account_id = '{account_id}' AND policy_id = 'aws-account-hijacking-attempt'"
    );
    assert_eq!(db.count(&alerts).await, 1);
}

fn checks() -> CheckSet {
    let set = CheckSet::load(&Path::new(env!("CARGO_MANIFEST_DIR")).join("policies/posture"));
    assert!(set.problems.is_empty(), "{:?}", set.problems.iter().map(|p| &p.message).collect::<Vec<_>>());
    set
}

async fn multi_region_finding(db: &TestDb, account: &str) -> Option<String> {
    let filter = FindingFilter {
        account_id: Some(account.to_owned()),
        check_id: Some("aws-cloudtrail-multi-region".into()),
        ..Default::default()
    };
    findings::list(&db.pool, &filter).await.unwrap().first().map(|f| f.status.clone())
}

/// A bucket for trail files in `region`, made by the account's owner.
async fn trail_bucket(owner: &AccountSession, name: &str, region: &str) {
    use aws_sdk_s3::types::{BucketLocationConstraint, CreateBucketConfiguration};
    let mut create = owner.s3(region).create_bucket().bucket(name);
    if region != "us-east-1" {
        let location =
            CreateBucketConfiguration::builder().location_constraint(BucketLocationConstraint::from(region)).build();
        create = create.create_bucket_configuration(location);
    }
    create.send().await.unwrap();
}

#[tokio::test]
async fn trails_are_known_account_wide_once_each_and_the_multi_region_check_follows_them() {
    let db = TestDb::new().await;
    let moto = fake::moto_url().await;
    let cloudtrail = FakeCloudTrail::start(moto).await;
    let ec2 = FakeEc2::start(
        moto,
        &[
            ("us-east-1", NOT_REQUIRED),
            ("eu-west-1", NOT_REQUIRED),
            ("eu-central-1", NOT_REQUIRED),
            ("us-west-2", NOT_REQUIRED),
        ],
    )
    .await;
    let ctx = context(&db, fake::settings_with_fakes(moto, &cloudtrail.url, &ec2.url), None).await;
    let account_id = fake::random_account_id();
    let account = onboard(&db, &account_id, &["eu-west-1"], LogSources::default()).await;
    let owner = AccountSession::assume(&ctx.base, &ctx.settings, &account.assume_target()).await.unwrap();
    let worker = Worker::new(ctx.clone(), "trail-worker", None).with_posture(checks(), None);

    let reports = worker.run_once().await.unwrap();
    assert!(reports.iter().all(|r| r.error.is_none()), "{reports:?}");
    assert_eq!(multi_region_finding(&db, &account_id).await.as_deref(), Some("open"), "no trail at all");

    // A multi-region trail homed in eu-central-1 (not polled), a single-region one in the polled
    // eu-west-1, and one in us-west-2, which the account does not poll.
    for (name, region, multi) in
        [("everywhere", "eu-central-1", true), ("local", "eu-west-1", false), ("west", "us-west-2", false)]
    {
        let bucket = format!("{name}-{account_id}");
        trail_bucket(&owner, &bucket, region).await;
        let trails = owner.cloudtrail(region);
        trails.create_trail().name(name).s3_bucket_name(&bucket).is_multi_region_trail(multi).send().await.unwrap();
        let selector = aws_sdk_cloudtrail::types::EventSelector::builder()
            .read_write_type(aws_sdk_cloudtrail::types::ReadWriteType::All)
            .include_management_events(true)
            .build();
        trails.put_event_selectors().trail_name(name).event_selectors(selector).send().await.unwrap();
        trails.start_logging().name(name).send().await.unwrap();
    }
    jobs::run_now(&db.pool, &account_id, None).await.unwrap();
    let reports = worker.run_once().await.unwrap();
    assert!(reports.iter().all(|r| r.error.is_none()), "{reports:?}");
    assert_eq!(multi_region_finding(&db, &account_id).await.as_deref(), Some("resolved"));
    let trails: Vec<(String, String, Value)> = sqlx::query_as(
        "SELECT resource_id, region, config FROM resources
         WHERE account_id = $1 AND resource_type = 'cloudtrail:trail' AND deleted_at IS NULL ORDER BY resource_id",
    )
    .bind(&account_id)
    .fetch_all(&db.pool)
    .await
    .unwrap();
    let names: Vec<&str> = trails.iter().map(|(_, _, c)| c["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["everywhere", "local"], "one resource per trail seen from the polled regions");
    assert!(trails.iter().all(|(_, region, _)| region == "global"), "{trails:?}");
    let everywhere = &trails[0];
    assert!(everywhere.0.starts_with("arn:aws:cloudtrail:eu-central-1:"), "{everywhere:?}");
    assert_eq!(everywhere.2["home_region"], "eu-central-1");
    assert_eq!(
        (everywhere.2["is_multi_region"].as_bool(), everywhere.2["is_logging"].as_bool()),
        (Some(true), Some(true))
    );
    assert_eq!(everywhere.2["event_selectors"]["event_selectors"][0]["read_write_type"], "All");

    // Another snapshot of unchanged trails records nothing new.
    let versions = "SELECT count(*) FROM resource_versions WHERE resource_type = 'cloudtrail:trail'";
    let before = db.count(versions).await;
    jobs::run_now(&db.pool, &account_id, Some(Source::ConfigSnapshot)).await.unwrap();
    worker.run_once().await.unwrap();
    assert_eq!(db.count(versions).await, before);

    // The multi-region trail is deleted: the check fails again.
    owner.cloudtrail("eu-central-1").delete_trail().name("everywhere").send().await.unwrap();
    jobs::run_now(&db.pool, &account_id, Some(Source::ConfigSnapshot)).await.unwrap();
    let reports = worker.run_once().await.unwrap();
    assert!(reports.iter().all(|r| r.error.is_none()), "{reports:?}");
    assert_eq!(multi_region_finding(&db, &account_id).await.as_deref(), Some("open"));
}

#[tokio::test]
async fn a_trail_recorded_under_its_region_by_an_earlier_release_is_adopted_not_recorded_twice() {
    let db = TestDb::new().await;
    let moto = fake::moto_url().await;
    let cloudtrail = FakeCloudTrail::start(moto).await;
    let ec2 = FakeEc2::start(moto, &[("us-east-1", NOT_REQUIRED)]).await;
    let ctx = context(&db, fake::settings_with_fakes(moto, &cloudtrail.url, &ec2.url), None).await;
    let account_id = fake::random_account_id();
    let account = onboard(&db, &account_id, &["us-east-1"], LogSources::default()).await;
    let owner = AccountSession::assume(&ctx.base, &ctx.settings, &account.assume_target()).await.unwrap();
    let bucket = format!("main-{account_id}");
    trail_bucket(&owner, &bucket, "us-east-1").await;
    let created =
        owner.cloudtrail("us-east-1").create_trail().name("main").s3_bucket_name(&bucket).send().await.unwrap();
    let arn = created.trail_arn().unwrap().to_owned();
    // As an earlier release stored it: under its home region, by the regional snapshot.
    sqlx::query(
        "INSERT INTO resources (account_id, resource_type, resource_id, region, arn, name, version, config, config_hash,
                                first_seen, last_seen, last_changed)
         VALUES ($1, 'cloudtrail:trail', $2, 'us-east-1', $2, 'main', 1, '{\"name\": \"main\"}', '\\x00', now(), now(), now())",
    )
    .bind(&account_id)
    .bind(&arn)
    .execute(&db.pool)
    .await
    .unwrap();
    sqlx::query(
        "INSERT INTO resource_versions (account_id, resource_type, resource_id, version, captured_at, config, config_hash)
         VALUES ($1, 'cloudtrail:trail', $2, 1, now(), '{\"name\": \"main\"}', '\\x00')",
    )
    .bind(&account_id)
    .bind(&arn)
    .execute(&db.pool)
    .await
    .unwrap();

    let reports = Worker::new(ctx.clone(), "adopting-worker", None).run_once().await.unwrap();
    assert!(reports.iter().all(|r| r.error.is_none()), "{reports:?}");
    let (region, version, name): (String, i32, Value) = sqlx::query_as(
        "SELECT region, version, config->'name' FROM resources WHERE account_id = $1 AND resource_type = 'cloudtrail:trail'",
    )
    .bind(&account_id)
    .fetch_one(&db.pool)
    .await
    .unwrap();
    assert_eq!((region.as_str(), version, name), ("global", 2, json!("main")), "one resource, its next version");
}
