//! The AWS connection end to end: onboarding, every poller against moto (or, for LookupEvents,
//! a protocol-faithful fake), checkpoints across failures, leases shared by two workers, and
//! accounts that fail without stopping the others.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use serde_json::{Value, json};

use skywarden::accounts::{self, LogSources, NewAccount, PollIntervals};
use skywarden::aws::{AccountSession, AwsSettings};
use skywarden::db::partitions::PartitionCache;
use skywarden::pollers::worker::{JobReport, Worker};
use skywarden::pollers::{PollContext, PollOptions, Source, jobs};

use crate::support::TestDb;
use crate::support::aws::{self as fake, FakeCloudTrail, FakeSts};

async fn context(db: &TestDb, settings: AwsSettings) -> PollContext {
    let base = settings.load().await;
    PollContext {
        pool: db.pool.clone(),
        base,
        settings,
        options: PollOptions {
            lookup_min_interval: Duration::from_millis(40),
            throttle_backoff: Duration::from_millis(20),
            ..PollOptions::default()
        },
        geo: None,
        partitions: Arc::new(PartitionCache::default()),
    }
}

async fn onboard(db: &TestDb, account: &str, sources: LogSources, endpoint_url: Option<String>) -> accounts::Account {
    let new = NewAccount {
        role_arn: format!("arn:aws:iam::{account}:role/SkywardenReadOnly"),
        name: Some(format!("test {account}")),
        regions: vec!["us-east-1".into()],
        endpoint_url,
        sources,
    };
    accounts::onboard(&db.pool, &new, &PollIntervals::default()).await.expect("onboarding")
}

/// Clients of the onboarded account, to set up state in moto as its owner would.
async fn owner_session(ctx: &PollContext, account: &accounts::Account) -> AccountSession {
    AccountSession::assume(&ctx.base, &ctx.settings, &account.assume_target()).await.expect("assuming the role in moto")
}

fn failed(reports: &[JobReport], source: Source) -> Vec<&JobReport> {
    reports.iter().filter(|r| r.source == source.as_str() && r.error.is_some()).collect()
}

#[tokio::test]
async fn accounts_are_onboarded_with_a_generated_external_id_from_the_command_line() {
    let db = TestDb::new().await;
    let moto = fake::moto_url().await;
    let account = fake::random_account_id();
    let run = |args: &[&str]| {
        let mut command = crate::support::skywarden_command(&db.url);
        command.args(args);
        for (key, value) in fake::aws_env(moto) {
            command.env(key, value);
        }
        command.output().expect("running skywarden")
    };

    let bad = run(&["accounts", "add", "--role-arn", "arn:aws:iam::12345:role/x"]);
    assert!(!bad.status.success());
    let stderr = String::from_utf8_lossy(&bad.stderr);
    assert!(stderr.contains("arn:aws:iam::12345:role/x") && stderr.contains("12 digits"), "{stderr}");

    let role = format!("arn:aws:iam::{account}:role/SkywardenReadOnly");
    let added = run(&["accounts", "add", "--role-arn", &role, "--regions", "us-east-1,eu-west-1", "--json"]);
    assert!(added.status.success(), "{}", String::from_utf8_lossy(&added.stderr));
    let added: Value = serde_json::from_slice(&added.stdout).unwrap();
    let external_id = added["external_id"].as_str().unwrap();
    assert!(external_id.starts_with("skywarden-") && external_id.len() == 50, "{external_id}");
    assert_eq!(added["test"]["ok"], json!(true), "{added}");
    assert_eq!(
        added["test"]["assumed_arn"].as_str().unwrap(),
        format!("arn:aws:sts::{account}:assumed-role/SkywardenReadOnly/skywarden-{account}")
    );
    // The role check discovers the enabled regions at once (moto enables the commercial ones).
    let enabled: Vec<&str> =
        added["test"]["enabled_regions"].as_array().unwrap().iter().map(|r| r.as_str().unwrap()).collect();
    assert!(enabled.contains(&"eu-west-1") && enabled.contains(&"us-east-1"), "{added}");

    let again = run(&["accounts", "add", "--role-arn", &role]);
    assert!(String::from_utf8_lossy(&again.stderr).contains("already onboarded"));

    let listed = String::from_utf8_lossy(&run(&["accounts", "list", "--json"]).stdout).into_owned();
    assert!(listed.contains(&role) && !listed.contains(external_id), "the external ID is shown only once: {listed}");
    let stored: String = sqlx::query_scalar("SELECT external_id FROM accounts WHERE account_id = $1")
        .bind(&account)
        .fetch_one(&db.pool)
        .await
        .unwrap();
    assert_eq!(stored, external_id);
    let jobs = db.count(&format!("SELECT count(*) FROM poll_jobs WHERE account_id = '{account}'")).await;
    assert_eq!(jobs, 6, "regions, global snapshot, and lookup + snapshot in each of the two regions named");

    let template = String::from_utf8_lossy(&run(&["accounts", "template"]).stdout).into_owned();
    assert!(template.contains("sts:ExternalId") && template.contains("cloudtrail:LookupEvents"));
    assert!(!template.contains("\"*:*\"") && !template.contains("Action: \"*\""), "least privilege");

    let status = String::from_utf8_lossy(&run(&["accounts", "status", &account]).stdout).into_owned();
    assert!(status.contains("cloudtrail-lookup") && status.contains("never"), "{status}");

    let removed = run(&["accounts", "remove", &account]);
    assert!(removed.status.success());
    assert_eq!(db.count(&format!("SELECT count(*) FROM poll_jobs WHERE account_id = '{account}'")).await, 0);
}

#[tokio::test]
async fn snapshots_store_resources_and_each_change_with_its_diff_and_cause() {
    let db = TestDb::new().await;
    let moto = fake::moto_url().await;
    let cloudtrail = FakeCloudTrail::start(moto).await;
    let ctx = context(&db, fake::settings_with_cloudtrail(moto, &cloudtrail.url)).await;
    let account_id = fake::random_account_id();
    let account = onboard(&db, &account_id, LogSources::default(), None).await;
    let owner = owner_session(&ctx, &account).await;
    let ec2 = owner.ec2("us-east-1");
    let vpc = ec2.create_vpc().cidr_block("10.1.0.0/16").send().await.unwrap().vpc.unwrap().vpc_id.unwrap();
    let group = ec2
        .create_security_group()
        .group_name("web")
        .description("web servers")
        .vpc_id(&vpc)
        .send()
        .await
        .unwrap()
        .group_id
        .unwrap();
    owner.iam().create_user().user_name("deploy-bot").send().await.unwrap();

    let worker = Worker::new(ctx.clone(), "worker-a", None);
    let first = worker.run_once().await.unwrap();
    assert!(first.iter().all(|r| r.error.is_none()), "{first:?}");
    let stored = db
        .count(&format!("SELECT count(*) FROM resources WHERE account_id = '{account_id}' AND resource_id IN ('{group}', '{vpc}', 'deploy-bot')"))
        .await;
    assert_eq!(stored, 3, "the security group, the VPC and the IAM user are in the inventory");
    assert_eq!(db.count("SELECT count(*) FROM config_changes").await, 0, "the first snapshot is a baseline");

    // Someone opens SSH to the world; CloudTrail records it.
    ec2.authorize_security_group_ingress()
        .group_id(&group)
        .ip_protocol("tcp")
        .from_port(22)
        .to_port(22)
        .cidr_ip("0.0.0.0/0")
        .send()
        .await
        .unwrap();
    let event_time = Utc::now() - chrono::Duration::seconds(5);
    cloudtrail.add_events([fake::cloudtrail_event(
        &account_id,
        "evt-open-ssh",
        event_time,
        "AuthorizeSecurityGroupIngress",
        json!({"groupId": group}),
    )]);
    owner.iam().delete_user().user_name("deploy-bot").send().await.unwrap();

    jobs::run_now(&db.pool, &account_id, None).await.unwrap();
    let second = worker.run_once().await.unwrap();
    assert!(second.iter().all(|r| r.error.is_none()), "{second:?}");

    let (kind, diff, event_id, event_name, principal): (String, Value, Option<String>, Option<String>, Option<String>) =
        sqlx::query_as(
            "SELECT kind::text, diff, event_id, event_name, principal_arn FROM config_changes WHERE resource_id = $1",
        )
        .bind(&group)
        .fetch_one(&db.pool)
        .await
        .unwrap();
    assert_eq!(kind, "modified");
    let added = diff
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["path"] == "ingress[]" && c["op"] == "added")
        .expect("an ingress rule added");
    assert_eq!(added["new"]["from_port"], json!(22));
    assert_eq!(added["new"]["cidr_ipv4"], json!("0.0.0.0/0"));
    assert_eq!(event_id.as_deref(), Some("evt-open-ssh"), "the change is linked to the event that made it");
    assert_eq!(event_name.as_deref(), Some("AuthorizeSecurityGroupIngress"));
    assert_eq!(principal, Some(format!("arn:aws:iam::{account_id}:user/alice")));

    let versions = db.count(&format!("SELECT count(*) FROM resource_versions WHERE resource_id = '{group}'")).await;
    assert_eq!(versions, 2);
    let deleted: String = sqlx::query_scalar("SELECT kind::text FROM config_changes WHERE resource_id = 'deploy-bot'")
        .fetch_one(&db.pool)
        .await
        .unwrap();
    assert_eq!(deleted, "deleted");

    // The API shows the inventory, the history and who made the change.
    let (_, token) = skywarden::auth::create(&db.pool, "analyst", skywarden::auth::Role::Viewer).await.unwrap();
    let uri = format!("/api/v1/resources?account={account_id}&type=ec2:security-group&q=web");
    let (status, listed) = crate::api::call(&db, "GET", &uri, Some(&token), None).await;
    assert_eq!(status, axum::http::StatusCode::OK, "{listed}");
    assert_eq!(listed["resources"].as_array().unwrap().len(), 1, "{listed}");
    assert_eq!(listed["resources"][0]["resource_id"], json!(group));
    let uri = format!("/api/v1/resources/{account_id}/ec2:security-group/{group}");
    let (status, one) = crate::api::call(&db, "GET", &uri, Some(&token), None).await;
    assert_eq!(status, axum::http::StatusCode::OK, "{one}");
    assert_eq!(one["versions"].as_array().unwrap().len(), 2);
    assert_eq!(one["changes"][0]["event"]["event_name"], json!("AuthorizeSecurityGroupIngress"));
    assert_eq!(one["changes"][0]["event"]["source_ip"], json!("203.0.113.7"));
    assert_eq!(one["events"][0]["event_id"], json!("evt-open-ssh"), "the events that named the group");
    let (_, recent) =
        crate::api::call(&db, "GET", &format!("/api/v1/changes?account={account_id}"), Some(&token), None).await;
    let kinds: Vec<&str> = recent["changes"].as_array().unwrap().iter().map(|c| c["kind"].as_str().unwrap()).collect();
    assert!(kinds.contains(&"modified") && kinds.contains(&"deleted"), "{recent}");
    let missing = format!("/api/v1/resources/{account_id}/ec2:security-group/sg-00000000");
    assert_eq!(crate::api::call(&db, "GET", &missing, Some(&token), None).await.0, axum::http::StatusCode::NOT_FOUND);

    // Nothing changed: a third snapshot adds no version.
    jobs::run_now(&db.pool, &account_id, Some(Source::ConfigSnapshot)).await.unwrap();
    worker.run_once().await.unwrap();
    assert_eq!(db.count(&format!("SELECT count(*) FROM resource_versions WHERE resource_id = '{group}'")).await, 2);
}

fn lookup_events(account: &str, count: usize) -> Vec<Value> {
    let now = Utc::now();
    (0..count)
        .map(|i| {
            let time = now - chrono::Duration::seconds(60 + i as i64 * 7);
            fake::cloudtrail_event(
                account,
                &format!("evt-{i:04}"),
                time,
                "DescribeInstances",
                json!({"instancesSet": {}}),
            )
        })
        .collect()
}

#[tokio::test]
async fn lookup_events_pages_back_off_when_throttled_and_resume_after_a_failure() {
    let db = TestDb::new().await;
    let moto = fake::moto_url().await;
    let cloudtrail = FakeCloudTrail::start(moto).await;
    let ctx = context(&db, fake::settings_with_cloudtrail(moto, &cloudtrail.url)).await;
    let account_id = fake::random_account_id();
    onboard(&db, &account_id, LogSources::default(), None).await;
    cloudtrail.add_events(lookup_events(&account_id, 120));
    cloudtrail.throttle_next(2);
    cloudtrail.fail_page_once(2);

    let worker = Worker::new(ctx.clone(), "worker-a", None);
    let first = worker.run_once().await.unwrap();
    let lookup_failures = failed(&first, Source::CloudTrailLookup);
    assert_eq!(lookup_failures.len(), 1, "{first:?}");
    assert!(lookup_failures[0].error.as_ref().unwrap().contains("cloudtrail:LookupEvents"), "{lookup_failures:?}");
    let events = format!("SELECT count(*) FROM cloudtrail_events WHERE account_id = '{account_id}'");
    assert_eq!(db.count(&events).await, 50, "the first page is stored with its checkpoint");

    jobs::run_now(&db.pool, &account_id, Some(Source::CloudTrailLookup)).await.unwrap();
    let second = worker.run_once().await.unwrap();
    assert!(failed(&second, Source::CloudTrailLookup).is_empty(), "{second:?}");
    assert_eq!(db.count(&events).await, 120, "every event once: no gap, no duplicate");

    let requests = cloudtrail.requests();
    let answers: Vec<(&str, Option<&str>)> = requests.iter().map(|r| (r.answer, r.next_token.as_deref())).collect();
    assert_eq!(
        answers,
        vec![
            ("throttled", None),
            ("throttled", None),
            ("ok", None),
            ("failed", Some("page-50")),
            ("ok", Some("page-50")),
            ("ok", Some("page-100")),
        ],
        "after the failure the poller resumes at the page it had reached"
    );
    for pair in requests.windows(2).take(3) {
        assert!(pair[1].at - pair[0].at >= Duration::from_millis(20), "throttled requests are spaced by a back-off");
    }
    let status = jobs::statuses(&db.pool, Some(&account_id)).await.unwrap();
    let lookup = status.iter().find(|s| s.source == "cloudtrail-lookup").unwrap();
    assert_eq!(lookup.throttled_total, 2);
    assert!(lookup.last_error.is_none() && lookup.last_success_at.is_some());
    assert!(lookup.lag_seconds.unwrap() < 60.0, "{:?}", lookup.lag_seconds);

    // An incremental run re-reads only the overlap, and stores nothing twice.
    cloudtrail.add_events(lookup_events(&account_id, 1).into_iter().map(|mut e| {
        e["eventID"] = json!("evt-new");
        e["eventTime"] = json!(Utc::now().format("%Y-%m-%dT%H:%M:%SZ").to_string());
        e
    }));
    jobs::run_now(&db.pool, &account_id, Some(Source::CloudTrailLookup)).await.unwrap();
    worker.run_once().await.unwrap();
    assert_eq!(db.count(&events).await, 121);
    let last = cloudtrail.requests().last().cloned().unwrap();
    let overlap = last.end_time.unwrap() - last.start_time.unwrap();
    assert!(overlap < 16.0 * 60.0 + 30.0, "the incremental window is the overlap, not 90 days: {overlap}s");
}

#[tokio::test]
async fn two_workers_share_the_jobs_and_store_each_record_once() {
    let db = TestDb::new().await;
    let moto = fake::moto_url().await;
    let cloudtrail = FakeCloudTrail::start(moto).await;
    let ctx = context(&db, fake::settings_with_cloudtrail(moto, &cloudtrail.url)).await;
    let mut accounts = Vec::new();
    for _ in 0..3 {
        let account_id = fake::random_account_id();
        onboard(&db, &account_id, LogSources::default(), None).await;
        cloudtrail.add_events(lookup_events(&account_id, 60));
        accounts.push(account_id);
    }
    let a = Worker::new(ctx.clone(), "worker-a", None);
    let b = Worker::new(ctx.clone(), "worker-b", None);
    let (ra, rb) = tokio::join!(a.run_once(), b.run_once());
    let (ra, rb) = (ra.unwrap(), rb.unwrap());
    let mut ran: Vec<i64> = ra.iter().chain(rb.iter()).map(|r| r.job_id).collect();
    let total = ran.len();
    ran.sort();
    ran.dedup();
    assert_eq!(ran.len(), total, "no job ran twice");
    assert_eq!(total, 12, "3 accounts x (regions, lookup, regional snapshot, global snapshot)");
    assert!(ra.iter().chain(rb.iter()).all(|r| r.error.is_none()), "{ra:?} {rb:?}");
    // The fake serves every account's events to every caller, so each lookup job stores all
    // 180; the key keeps one copy of each.
    assert_eq!(db.count("SELECT count(*) FROM cloudtrail_events").await, 180);
    let pages = cloudtrail.requests().len();
    assert_eq!(pages, 3 * 4, "each of the 3 lookup jobs read its 4 pages once");
}

#[tokio::test]
async fn trail_and_flow_log_files_in_s3_are_read_once_including_late_ones() {
    let db = TestDb::new().await;
    let moto = fake::moto_url().await;
    let cloudtrail = FakeCloudTrail::start(moto).await;
    let ctx = context(&db, fake::settings_with_cloudtrail(moto, &cloudtrail.url)).await;
    let account_id = fake::random_account_id();
    let bucket = format!("trail-{account_id}");
    let sources =
        LogSources { trail_bucket: Some(bucket.clone()), flow_bucket: Some(bucket.clone()), ..Default::default() };
    let account = onboard(&db, &account_id, sources, None).await;
    let s3 = owner_session(&ctx, &account).await.s3("us-east-1");
    s3.create_bucket().bucket(&bucket).send().await.unwrap();
    let put = |key: String, body: Vec<u8>| {
        let (s3, bucket) = (s3.clone(), bucket.clone());
        async move { s3.put_object().bucket(bucket).key(key).body(body.into()).send().await.unwrap() }
    };
    let trail_prefix = format!("AWSLogs/{account_id}/CloudTrail/us-east-1");
    // Keys dated yesterday and today: the poller's first run looks back a bounded window.
    let (yesterday, today) = (Utc::now() - chrono::Duration::days(1), Utc::now());
    let (d1, d2) = (yesterday.format("%Y/%m/%d").to_string(), today.format("%Y/%m/%d").to_string());
    let (t1, t2) = (yesterday.format("%Y%m%d").to_string(), today.format("%Y%m%d").to_string());
    let gzip = |value: &Value| {
        use std::io::Write;
        let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        encoder.write_all(value.to_string().as_bytes()).unwrap();
        encoder.finish().unwrap()
    };
    let records = |ids: std::ops::Range<usize>| json!({"Records": ids.map(|i| fake::cloudtrail_event(&account_id, &format!("s3-{i}"), Utc::now() - chrono::Duration::minutes(30), "RunInstances", json!({}))).collect::<Vec<_>>()});
    put(format!("{trail_prefix}/{d1}/{account_id}_CloudTrail_us-east-1_{t1}T2355Z_a.json.gz"), gzip(&records(0..30)))
        .await;
    put(format!("{trail_prefix}/{d2}/{account_id}_CloudTrail_us-east-1_{t2}T0005Z_b.json.gz"), gzip(&records(30..40)))
        .await;
    put(
        format!("{trail_prefix}/{d2}/{account_id}_CloudTrail_us-east-1_{t2}T0010Z_corrupt.json.gz"),
        b"{\"Records\": [".to_vec(),
    )
    .await;
    let flow_key = format!(
        "AWSLogs/{account_id}/vpcflowlogs/us-east-1/{d2}/{account_id}_vpcflowlogs_us-east-1_fl-1_{t2}T0000Z_x.log.gz"
    );
    let flow_text = format!(
        "version account-id interface-id srcaddr dstaddr srcport dstport protocol packets bytes start end action log-status\n\
         2 {account_id} eni-1 10.0.0.5 198.51.100.9 443 51000 6 10 8000 1795910400 1795910460 ACCEPT OK\n\
         2 {account_id} eni-1 10.0.0.5 198.51.100.9 443 51001 6 12 9000 1795910400 1795910460 ACCEPT OK\n"
    );
    let mut flow_gzip = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    std::io::Write::write_all(&mut flow_gzip, flow_text.as_bytes()).unwrap();
    put(flow_key, flow_gzip.finish().unwrap()).await;

    let worker = Worker::new(ctx.clone(), "worker-a", None);
    let reports = worker.run_once().await.unwrap();
    assert!(reports.iter().all(|r| r.error.is_none()), "{reports:?}");
    let s3_events = "SELECT count(*) FROM cloudtrail_events WHERE event_id LIKE 's3-%'";
    assert_eq!(db.count(s3_events).await, 40);
    assert_eq!(db.count(&format!("SELECT count(*) FROM flow_records WHERE account_id = '{account_id}'")).await, 2);
    let corrupt: Vec<String> =
        sqlx::query_scalar("SELECT unnest(errors) FROM ingested_objects WHERE object_key LIKE '%corrupt%'")
            .fetch_all(&db.pool)
            .await
            .unwrap();
    assert!(corrupt.iter().any(|e| e.contains("corrupt.json.gz") && e.contains("JSON")), "{corrupt:?}");

    // A file for an earlier time arrives late (its key sorts before the last one read).
    put(
        format!("{trail_prefix}/{d2}/{account_id}_CloudTrail_us-east-1_{t2}T0001Z_late.json.gz"),
        gzip(&records(40..45)),
    )
    .await;
    jobs::run_now(&db.pool, &account_id, None).await.unwrap();
    let again = worker.run_once().await.unwrap();
    assert!(again.iter().all(|r| r.error.is_none()), "{again:?}");
    assert_eq!(db.count(s3_events).await, 45, "the late file is read, the others are not read again");
    assert_eq!(db.count("SELECT count(*) FROM ingested_objects").await, 5);
}

#[tokio::test]
async fn flow_logs_in_cloudwatch_logs_are_polled_without_duplicates() {
    let db = TestDb::new().await;
    let moto = fake::moto_url().await;
    let cloudtrail = FakeCloudTrail::start(moto).await;
    let ctx = context(&db, fake::settings_with_cloudtrail(moto, &cloudtrail.url)).await;
    let account_id = fake::random_account_id();
    let sources = LogSources { flow_log_groups: vec!["vpc-flow-logs".into()], ..Default::default() };
    let account = onboard(&db, &account_id, sources, None).await;
    let logs = owner_session(&ctx, &account).await.logs("us-east-1");
    logs.create_log_group().log_group_name("vpc-flow-logs").send().await.unwrap();
    logs.create_log_stream().log_group_name("vpc-flow-logs").log_stream_name("eni-1-all").send().await.unwrap();
    let now_ms = Utc::now().timestamp_millis();
    let now_s = now_ms / 1000;
    let mut events = Vec::new();
    for i in 0..5 {
        let line = format!(
            "2 {account_id} eni-1 10.0.0.5 203.0.113.{i} 443 5000{i} 6 10 {} {} {} ACCEPT OK",
            1000 * (i + 1),
            now_s - 120,
            now_s - 60
        );
        events.push(
            aws_sdk_cloudwatchlogs::types::InputLogEvent::builder()
                .timestamp(now_ms - 60_000)
                .message(line)
                .build()
                .unwrap(),
        );
    }
    logs.put_log_events()
        .log_group_name("vpc-flow-logs")
        .log_stream_name("eni-1-all")
        .set_log_events(Some(events))
        .send()
        .await
        .unwrap();

    let worker = Worker::new(ctx.clone(), "worker-a", None);
    let reports = worker.run_once().await.unwrap();
    assert!(reports.iter().all(|r| r.error.is_none()), "{reports:?}");
    let flows = format!("SELECT count(*) FROM flow_records WHERE account_id = '{account_id}'");
    assert_eq!(db.count(&flows).await, 5);
    jobs::run_now(&db.pool, &account_id, Some(Source::FlowLogsCloudWatch)).await.unwrap();
    worker.run_once().await.unwrap();
    assert_eq!(db.count(&flows).await, 5, "the overlap re-reads records but stores none twice");
}

#[tokio::test]
async fn broken_accounts_fail_clearly_and_the_others_keep_polling() {
    let db = TestDb::new().await;
    let moto = fake::moto_url().await;
    let cloudtrail = FakeCloudTrail::start(moto).await;
    let ctx = context(&db, fake::settings_with_cloudtrail(moto, &cloudtrail.url)).await;

    let healthy = fake::random_account_id();
    onboard(&db, &healthy, LogSources::default(), None).await;
    cloudtrail.add_events(lookup_events(&healthy, 3));

    // An STS that knows one role, with another external ID than the one Skywarden generated,
    // and no role at all for the next account.
    let wrong_external_id = fake::random_account_id();
    let missing_role = fake::random_account_id();
    let sts = FakeSts::start(HashMap::from([(
        format!("arn:aws:iam::{wrong_external_id}:role/SkywardenReadOnly"),
        "skywarden-some-other-external-id".to_owned(),
    )]))
    .await;
    onboard(&db, &wrong_external_id, LogSources::default(), Some(sts.url.clone())).await;
    onboard(&db, &missing_role, LogSources::default(), Some(sts.url.clone())).await;
    // Nothing listens on port 9 of loopback.
    let unreachable = fake::random_account_id();
    onboard(&db, &unreachable, LogSources::default(), Some("http://127.0.0.1:9".into())).await;

    let worker = Worker::new(ctx.clone(), "worker-a", None);
    let reports = worker.run_once().await.unwrap();
    let by_account = |id: &str| reports.iter().filter(|r| r.account_id == id).collect::<Vec<_>>();
    assert!(by_account(&healthy).iter().all(|r| r.error.is_none()), "{reports:?}");
    assert_eq!(db.count(&format!("SELECT count(*) FROM cloudtrail_events WHERE account_id = '{healthy}'")).await, 3);
    for account in [&wrong_external_id, &missing_role] {
        for report in by_account(account) {
            let error = report.error.as_deref().unwrap_or_default();
            assert!(
                error.contains("sts:AssumeRole") && error.contains("AccessDenied") && error.contains("external ID"),
                "{error}"
            );
        }
    }
    for report in by_account(&unreachable) {
        let error = report.error.as_deref().unwrap_or_default();
        assert!(error.contains("sts:AssumeRole") && error.contains("unreachable"), "{error}");
    }
    // The failures are recorded per job for `accounts status`, and retried later, not now.
    let statuses = jobs::statuses(&db.pool, Some(&unreachable)).await.unwrap();
    assert!(
        statuses.iter().all(|s| s.consecutive_failures == 1 && s.last_error.is_some() && s.next_run_at > Utc::now())
    );

    // `accounts test` tells the user the same.
    let result = accounts::test(&db.pool, &ctx.base, &ctx.settings, &wrong_external_id).await.unwrap();
    assert!(!result.ok && result.error.unwrap().contains("external ID"));
}

#[tokio::test]
async fn a_worker_killed_between_pages_loses_and_repeats_nothing() {
    let db = TestDb::new().await;
    let moto = fake::moto_url().await;
    let cloudtrail = FakeCloudTrail::start(moto).await;
    let account_id = fake::random_account_id();
    let ctx = context(&db, fake::settings_with_cloudtrail(moto, &cloudtrail.url)).await;
    onboard(&db, &account_id, LogSources::default(), None).await;
    // Only the LookupEvents job runs in this test.
    sqlx::query("UPDATE poll_jobs SET enabled = false WHERE source <> 'cloudtrail-lookup'")
        .execute(&db.pool)
        .await
        .unwrap();
    cloudtrail.add_events(lookup_events(&account_id, 120));
    // Page 2 hangs long enough for the test to kill the worker while it waits.
    cloudtrail.delay_page(2, Duration::from_secs(120));

    let mut command = crate::support::skywarden_command(&db.url);
    command.args(["worker", "--once", "--no-detect"]);
    for (key, value) in fake::aws_env(moto) {
        command.env(key, value);
    }
    command.env("SKYWARDEN_AWS_ENDPOINT_URL_CLOUDTRAIL", &cloudtrail.url);
    let mut worker = command.spawn().expect("starting skywarden worker");
    let events = format!("SELECT count(*) FROM cloudtrail_events WHERE account_id = '{account_id}'");
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while cloudtrail.requests().len() < 2 {
        assert!(std::time::Instant::now() < deadline, "the worker never asked for page 2");
        assert!(worker.try_wait().unwrap().is_none(), "the worker exited early");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    worker.kill().unwrap();
    worker.wait().unwrap();
    assert_eq!(db.count(&events).await, 50, "page 1 was committed before the kill");

    // The dead worker's lease runs out (here: is made to), and another worker takes the job.
    sqlx::query("UPDATE poll_jobs SET lease_expires_at = now() - interval '1 second' WHERE lease_owner IS NOT NULL")
        .execute(&db.pool)
        .await
        .unwrap();
    cloudtrail.delay_page(0, Duration::ZERO);
    let reports = Worker::new(ctx, "worker-b", None).run_once().await.unwrap();
    assert!(reports.iter().all(|r| r.error.is_none()), "{reports:?}");
    assert_eq!(db.count(&events).await, 120, "no gap and no duplicate");
    let tokens: Vec<Option<String>> = cloudtrail.requests().into_iter().map(|r| r.next_token).collect();
    assert_eq!(tokens, vec![None, Some("page-50".into()), Some("page-50".into()), Some("page-100".into())]);
}

/// FilterLogEvents slots are shared by every worker process: reservations made at once through
/// two pools (two workers) for one account and region are spaced by the quota's interval, and
/// another region has slots of its own.
#[tokio::test]
async fn filter_log_events_slots_are_shared_by_every_worker() {
    use skywarden::pollers::pacing;
    let db = TestDb::new().await;
    let other = sqlx::postgres::PgPoolOptions::new().max_connections(4).connect(&db.url).await.unwrap();
    let interval = Duration::from_millis(200);
    let reservations = (0..10).map(|i| {
        let pool = if i % 2 == 0 { db.pool.clone() } else { other.clone() };
        async move { pacing::reserve(&pool, "logs:FilterLogEvents", "111122223333", "eu-west-1", interval).await }
    });
    let mut slots: Vec<_> =
        futures_util::future::join_all(reservations).await.into_iter().map(|slot| slot.unwrap().at).collect();
    slots.sort();
    for pair in slots.windows(2) {
        assert!(pair[1] - pair[0] >= chrono::Duration::milliseconds(200), "{slots:?}");
    }
    let elsewhere = pacing::reserve(&db.pool, "logs:FilterLogEvents", "111122223333", "us-east-1", interval).await;
    assert_eq!(elsewhere.unwrap().wait, Duration::ZERO, "a region's first request does not wait");
    other.close().await;
}
