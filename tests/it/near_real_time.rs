//! Near-real-time: trail files announced on SQS (S3 event notifications set up with the SDK in
//! moto, or EventBridge-shaped messages) are read within a run, alerted on, acknowledged, and
//! stored once even when the bucket listing sees them too; a poison message goes to the
//! dead-letter queue after the redrive policy's receives.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use aws_sdk_s3::types::{Event, NotificationConfiguration, QueueConfiguration};
use aws_sdk_sqs::types::{MessageSystemAttributeName, QueueAttributeName};
use chrono::Utc;
use serde_json::{Value, json};

use skywarden::accounts::{self, AccountChange, LogSources, NewAccount, PollIntervals};
use skywarden::aws::{AccountSession, AssumeRoleTarget, RoleArn};
use skywarden::db::partitions::PartitionCache;
use skywarden::pollers::worker::{JobReport, Worker};
use skywarden::pollers::{PollContext, PollOptions, Source, jobs};

use crate::support::TestDb;
use crate::support::aws::{self as fake, FakeCloudTrail};

struct Setup {
    db: TestDb,
    ctx: PollContext,
    account_id: String,
    bucket: String,
    owner: AccountSession,
    sqs: aws_sdk_sqs::Client,
    queue_url: String,
    dlq_url: String,
    _cloudtrail: FakeCloudTrail,
}

/// An account whose trail bucket announces new files on a queue with a dead-letter queue
/// (after `max_receives`); messages are hidden for `lease` once received.
async fn setup(lease: Duration, max_receives: u32, notify: bool) -> Setup {
    let db = TestDb::new().await;
    let moto = fake::moto_url().await;
    let cloudtrail = FakeCloudTrail::start(moto).await;
    let settings = fake::settings_with_cloudtrail(moto, &cloudtrail.url);
    let ctx = PollContext {
        pool: db.pool.clone(),
        base: settings.load().await,
        settings,
        options: PollOptions { lease, ..PollOptions::default() },
        geo: None,
        partitions: Arc::new(PartitionCache::default()),
    };
    let account_id = fake::random_account_id();
    let bucket = format!("trail-{account_id}");
    let role = RoleArn::parse(&format!("arn:aws:iam::{account_id}:role/SkywardenReadOnly")).unwrap();
    let target = AssumeRoleTarget { role_arn: &role, external_id: "owner", endpoint_url: None };
    let owner = AccountSession::assume(&ctx.base, &ctx.settings, &target).await.unwrap();
    let sqs = owner.sqs("us-east-1", moto);
    let (queue_url, dlq_url) = queues(&sqs, max_receives).await;
    let s3 = owner.s3("us-east-1");
    s3.create_bucket().bucket(&bucket).send().await.unwrap();
    if notify {
        let queue_arn = attribute(&sqs, &queue_url, QueueAttributeName::QueueArn).await.unwrap();
        let queue = QueueConfiguration::builder().queue_arn(queue_arn).events(Event::from("s3:ObjectCreated:*"));
        let configuration = NotificationConfiguration::builder().queue_configurations(queue.build().unwrap()).build();
        s3.put_bucket_notification_configuration()
            .bucket(&bucket)
            .notification_configuration(configuration)
            .send()
            .await
            .unwrap();
    }
    // The queue job runs when asked (its one-second default would run it again within a test).
    let mut intervals = PollIntervals::default();
    intervals.set(Source::CloudTrailSqs, Duration::from_secs(3600)).unwrap();
    let sources = LogSources {
        trail_bucket: Some(bucket.clone()),
        trail_queue_url: Some(queue_url.clone()),
        ..Default::default()
    };
    let new = NewAccount {
        role_arn: role.as_str().to_owned(),
        regions: vec!["us-east-1".into()],
        sources,
        ..Default::default()
    };
    accounts::onboard(&db.pool, &new, &intervals).await.unwrap();
    Setup { db, ctx, account_id, bucket, owner, sqs, queue_url, dlq_url, _cloudtrail: cloudtrail }
}

/// A queue and its dead-letter queue, the redrive policy set and read back.
async fn queues(sqs: &aws_sdk_sqs::Client, max_receives: u32) -> (String, String) {
    let dlq = sqs.create_queue().queue_name("trail-files-dlq").send().await.unwrap().queue_url.unwrap();
    let dlq_arn = attribute(sqs, &dlq, QueueAttributeName::QueueArn).await.unwrap();
    let policy = json!({"deadLetterTargetArn": dlq_arn, "maxReceiveCount": max_receives}).to_string();
    let queue = sqs
        .create_queue()
        .queue_name("trail-files")
        .attributes(QueueAttributeName::RedrivePolicy, policy)
        .send()
        .await
        .unwrap()
        .queue_url
        .unwrap();
    let set: Value =
        serde_json::from_str(&attribute(sqs, &queue, QueueAttributeName::RedrivePolicy).await.unwrap()).unwrap();
    assert_eq!(set["deadLetterTargetArn"], json!(dlq_arn));
    assert_eq!(set["maxReceiveCount"].to_string().trim_matches('"'), max_receives.to_string());
    (queue, dlq)
}

async fn attribute(sqs: &aws_sdk_sqs::Client, url: &str, name: QueueAttributeName) -> Option<String> {
    let answer = sqs.get_queue_attributes().queue_url(url).attribute_names(name.clone()).send().await.unwrap();
    answer.attributes?.get(&name).cloned()
}

/// Messages on a queue, visible or in flight.
async fn messages(sqs: &aws_sdk_sqs::Client, url: &str) -> i64 {
    let mut total = 0;
    for name in
        [QueueAttributeName::ApproximateNumberOfMessages, QueueAttributeName::ApproximateNumberOfMessagesNotVisible]
    {
        total += attribute(sqs, url, name).await.and_then(|n| n.parse::<i64>().ok()).unwrap_or(0);
    }
    total
}

/// A trail file with a console login without MFA (an alert) and another call.
fn trail_file(account: &str, tag: &str) -> (String, Vec<u8>) {
    let now = Utc::now();
    let login = json!({
        "eventVersion": "1.09",
        "userIdentity": {"type": "IAMUser", "principalId": "AIDAALICE", "arn": format!("arn:aws:iam::{account}:user/alice"),
                         "accountId": account, "userName": "alice"},
        "eventTime": now.format("%Y-%m-%dT%H:%M:%SZ").to_string(),
        "eventSource": "signin.amazonaws.com", "eventName": "ConsoleLogin", "awsRegion": "us-east-1",
        "sourceIPAddress": "198.51.100.7", "userAgent": "Mozilla/5.0", "requestParameters": null,
        "responseElements": {"ConsoleLogin": "Success"}, "additionalEventData": {"MFAUsed": "No"},
        "eventID": format!("{tag}-login"), "readOnly": false, "eventType": "AwsConsoleSignIn",
        "managementEvent": true, "recipientAccountId": account, "eventCategory": "Management"
    });
    let call = fake::cloudtrail_event(account, &format!("{tag}-call"), now, "RunInstances", json!({}));
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    std::io::Write::write_all(&mut encoder, json!({"Records": [login, call]}).to_string().as_bytes()).unwrap();
    let key = format!(
        "AWSLogs/{account}/CloudTrail/us-east-1/{}/{account}_CloudTrail_us-east-1_{}_{tag}.json.gz",
        now.format("%Y/%m/%d"),
        now.format("%Y%m%dT%H%MZ")
    );
    (key, encoder.finish().unwrap())
}

fn worker(ctx: &PollContext) -> Worker {
    let policies = skywarden::detect::PolicySet::load(&Path::new(env!("CARGO_MANIFEST_DIR")).join("policies"));
    Worker::new(ctx.clone(), "near-real-time", Some(Arc::new(policies)))
}

async fn run(setup: &Setup, worker: &Worker, source: Option<Source>) -> Vec<JobReport> {
    jobs::run_now(&setup.db.pool, &setup.account_id, source).await.unwrap();
    let reports = worker.run_once().await.unwrap();
    assert!(reports.iter().all(|r| r.error.is_none()), "{reports:?}");
    reports
}

fn stored_by(reports: &[JobReport], source: Source) -> u64 {
    reports.iter().filter(|r| r.source == source.as_str()).filter_map(|r| r.outcome.as_ref()).map(|o| o.stored).sum()
}

#[tokio::test]
async fn an_announced_trail_file_is_stored_alerted_and_acknowledged_and_the_listing_does_not_store_it_again() {
    let setup = setup(Duration::from_secs(300), 3, true).await;
    let worker = worker(&setup.ctx);
    // The test event S3 sends when a notification is set up (sent here too, as moto may not).
    let test_event = json!({"Service": "Amazon S3", "Event": "s3:TestEvent", "Bucket": setup.bucket}).to_string();
    setup.sqs.send_message().queue_url(&setup.queue_url).message_body(test_event).send().await.unwrap();
    let first = run(&setup, &worker, None).await;
    assert_eq!(stored_by(&first, Source::CloudTrailSqs), 0);
    assert_eq!(messages(&setup.sqs, &setup.queue_url).await, 0, "test events are deleted");

    let (key, body) = trail_file(&setup.account_id, "queued");
    setup.owner.s3("us-east-1").put_object().bucket(&setup.bucket).key(&key).body(body.into()).send().await.unwrap();
    let reports = run(&setup, &worker, Some(Source::CloudTrailSqs)).await;
    assert_eq!(stored_by(&reports, Source::CloudTrailSqs), 2, "{reports:?}");
    let events = format!("SELECT count(*) FROM cloudtrail_events WHERE account_id = '{}'", setup.account_id);
    assert_eq!(setup.db.count(&events).await, 2);
    let alerts = format!(
        "SELECT count(*) FROM alerts WHERE account_id = '{}' AND policy_id = 'aws-console-login-without-mfa'",
        setup.account_id
    );
    assert_eq!(setup.db.count(&alerts).await, 1, "detection runs right after the queue job");
    assert_eq!(messages(&setup.sqs, &setup.queue_url).await, 0, "the message is deleted once stored");
    assert_eq!(messages(&setup.sqs, &setup.dlq_url).await, 0);

    // The listing finds the same object: known, not stored again.
    let listed = run(&setup, &worker, Some(Source::CloudTrailS3)).await;
    assert!(listed.iter().any(|r| r.source == Source::CloudTrailS3.as_str()), "{listed:?}");
    assert_eq!(stored_by(&listed, Source::CloudTrailS3), 0);
    assert_eq!(setup.db.count(&events).await, 2);
    assert_eq!(setup.db.count("SELECT count(*) FROM ingested_objects").await, 1);
    assert_eq!(setup.db.count(&alerts).await, 1);
}

#[tokio::test]
async fn a_poison_message_goes_to_the_dead_letter_queue_while_eventbridge_announcements_are_read() {
    // Messages come back two seconds after a receive; the second receive is the last.
    let setup = setup(Duration::from_secs(2), 2, false).await;
    let worker = worker(&setup.ctx);
    let poison = "{\"Records\": [";
    setup.sqs.send_message().queue_url(&setup.queue_url).message_body(poison).send().await.unwrap();
    let first = run(&setup, &worker, None).await;
    assert_eq!(stored_by(&first, Source::CloudTrailSqs), 0);
    assert_eq!(messages(&setup.sqs, &setup.queue_url).await, 1, "the poison message stays");

    let (key, body) = trail_file(&setup.account_id, "bridged");
    let s3 = setup.owner.s3("us-east-1");
    let put = s3.put_object().bucket(&setup.bucket).key(&key).body(body.into()).send().await.unwrap();
    let event = json!({
        "version": "0", "id": "4f1b0c7e", "detail-type": "Object Created", "source": "aws.s3",
        "account": setup.account_id, "time": Utc::now().to_rfc3339(), "region": "us-east-1",
        "resources": [format!("arn:aws:s3:::{}", setup.bucket)],
        "detail": {"version": "0", "bucket": {"name": setup.bucket},
                   "object": {"key": key, "size": 100, "etag": put.e_tag().unwrap().trim_matches('"')},
                   "request-id": "R", "requester": "cloudtrail.amazonaws.com", "reason": "PutObject"}
    });
    setup.sqs.send_message().queue_url(&setup.queue_url).message_body(event.to_string()).send().await.unwrap();
    let reports = run(&setup, &worker, Some(Source::CloudTrailSqs)).await;
    assert_eq!(stored_by(&reports, Source::CloudTrailSqs), 2, "{reports:?}");

    // Received again after its visibility timeout, then moved by the redrive policy.
    for _ in 0..4 {
        if messages(&setup.sqs, &setup.dlq_url).await == 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(2500)).await;
        run(&setup, &worker, Some(Source::CloudTrailSqs)).await;
    }
    assert_eq!(messages(&setup.sqs, &setup.dlq_url).await, 1, "the poison message is in the dead-letter queue");
    assert_eq!(messages(&setup.sqs, &setup.queue_url).await, 0);
    let moved = setup
        .sqs
        .receive_message()
        .queue_url(&setup.dlq_url)
        .message_system_attribute_names(MessageSystemAttributeName::ApproximateReceiveCount)
        .send()
        .await
        .unwrap();
    let message = &moved.messages()[0];
    assert_eq!(message.body(), Some(poison));
    let count = message.attributes().unwrap()[&MessageSystemAttributeName::ApproximateReceiveCount].parse::<u32>();
    assert!(count.unwrap() >= 2, "{message:?}");
    let events = format!("SELECT count(*) FROM cloudtrail_events WHERE account_id = '{}'", setup.account_id);
    assert_eq!(setup.db.count(&events).await, 2, "the good announcement stored once");
}

#[tokio::test]
async fn queues_are_given_at_onboarding_and_changed_by_configure() {
    let db = TestDb::new().await;
    let account_id = fake::random_account_id();
    let url = format!("https://sqs.eu-west-1.amazonaws.com/{account_id}/trail-files");
    let new = NewAccount {
        role_arn: format!("arn:aws:iam::{account_id}:role/SkywardenReadOnly"),
        regions: vec!["us-east-1".into()],
        sources: LogSources {
            trail_bucket: Some("org-trail".into()),
            trail_queue_url: Some(url.clone()),
            ..Default::default()
        },
        ..Default::default()
    };
    accounts::onboard(&db.pool, &new, &PollIntervals::default()).await.unwrap();
    let queue_jobs = format!(
        "SELECT count(*) FROM poll_jobs WHERE account_id = '{account_id}' AND source LIKE '%-sqs' AND enabled
           AND region = 'eu-west-1' AND interval_seconds = 1"
    );
    assert_eq!(db.count(&queue_jobs).await, 1, "one job, in the queue's region, due every second");

    let bad = AccountChange { flow_queue_url: Some("sqs://nope".into()), ..Default::default() };
    let error = accounts::configure(&db.pool, &account_id, &bad).await.unwrap_err();
    assert!(error.to_string().contains("not an SQS queue URL"), "{error}");
    let removed = AccountChange { trail_queue_url: Some(String::new()), ..Default::default() };
    let account = accounts::configure(&db.pool, &account_id, &removed).await.unwrap();
    assert_eq!(account.sources.trail_queue_url, None);
    assert_eq!(account.sources.trail_bucket.as_deref(), Some("org-trail"), "other sources kept");
    assert_eq!(db.count(&queue_jobs).await, 0);
    let flow = AccountChange { flow_queue_url: Some(url.replace("trail", "flow")), ..Default::default() };
    let account = accounts::configure(&db.pool, &account_id, &flow).await.unwrap();
    assert!(account.sources.flow_queue_url.is_some());
    let jobs: Vec<String> =
        sqlx::query_scalar("SELECT source FROM poll_jobs WHERE account_id = $1 AND enabled AND source LIKE '%-sqs'")
            .bind(&account_id)
            .fetch_all(&db.pool)
            .await
            .unwrap();
    assert_eq!(jobs, ["flowlogs-sqs"]);
}
