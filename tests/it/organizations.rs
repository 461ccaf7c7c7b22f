//! AWS Organizations and a central log archive, against moto (Organizations: CreateOrganization,
//! CreateAccount, CloseAccount, which makes an account SUSPENDED, RemoveAccountFromOrganization,
//! ListAccounts; S3 in several regions) with the real SDK clients: members onboarded with the
//! member role and one external ID, a new member picked up and a suspended or removed one
//! stopped at the next organization poll; an organization trail bucket in eu-west-1 read once,
//! each event stored under its own account, the hijack alert fired from it, and a member's
//! configuration change explained by an event the archive delivered after the snapshot saw it.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use serde_json::{Value, json};

use skywarden::accounts::log_archive::NewLogArchive;
use skywarden::accounts::organization::{self, NewOrganization};
use skywarden::accounts::{self, AccountKind, LogSources, NewAccount, PollIntervals};
use skywarden::aws::{AccountSession, AssumeRoleTarget, AwsSettings, RoleArn};
use skywarden::db::partitions::PartitionCache;
use skywarden::geo::GeoDb;
use skywarden::pollers::worker::Worker;
use skywarden::pollers::{PollContext, PollOptions, Source, jobs};

use crate::support::TestDb;
use crate::support::aws::{self as fake, FakeCloudTrail, FakeEc2};

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

/// A session in `account` (moto takes any role and external ID), to set up state as its owner.
async fn owner(ctx: &PollContext, account: &str, role: &str) -> AccountSession {
    let role_arn = RoleArn::parse(&format!("arn:aws:iam::{account}:role/{role}")).unwrap();
    let target = AssumeRoleTarget { role_arn: &role_arn, external_id: "setup", endpoint_url: None };
    AccountSession::assume(&ctx.base, &ctx.settings, &target).await.expect("assuming a role in moto")
}

async fn create_member(management: &AccountSession, name: &str) -> String {
    let created = management
        .organizations()
        .create_account()
        .account_name(name)
        .email(format!("{name}@example.com"))
        .send()
        .await
        .expect("CreateAccount");
    created.create_account_status().and_then(|s| s.account_id()).expect("the new account's id").to_owned()
}

/// (enabled, member_status) of an account.
async fn member_state(db: &TestDb, account: &str) -> Option<(bool, Option<String>)> {
    sqlx::query_as("SELECT enabled, member_status FROM accounts WHERE account_id = $1")
        .bind(account)
        .fetch_optional(&db.pool)
        .await
        .unwrap()
}

async fn enabled_jobs(db: &TestDb, account: &str) -> i64 {
    db.count(&format!("SELECT count(*) FROM poll_jobs WHERE account_id = '{account}' AND enabled")).await
}

/// Only `entry`'s jobs are due: the others wait a day, so a worker run polls what the test is about.
async fn only_due(db: &TestDb, entry: &str) {
    sqlx::query("UPDATE poll_jobs SET next_run_at = now() + interval '1 day' WHERE account_id <> $1")
        .bind(entry)
        .execute(&db.pool)
        .await
        .unwrap();
    jobs::run_now(&db.pool, entry, None).await.unwrap();
}

#[tokio::test]
async fn an_organization_onboards_its_active_members_and_follows_them() {
    let db = TestDb::new().await;
    let moto = fake::moto_url().await;
    let cloudtrail = FakeCloudTrail::start(moto).await;
    let ec2 = FakeEc2::start(moto, &[("us-east-1", "opt-in-not-required")]).await;
    let ctx = context(&db, fake::settings_with_fakes(moto, &cloudtrail.url, &ec2.url), None).await;
    let management_id = fake::random_account_id();
    let management = owner(&ctx, &management_id, "SkywardenOrganizationReader").await;
    management
        .organizations()
        .create_organization()
        .feature_set(aws_sdk_organizations::types::OrganizationFeatureSet::All)
        .send()
        .await
        .expect("CreateOrganization");
    let mut members = Vec::new();
    for name in ["prod", "staging", "sandbox", "closed"] {
        members.push(create_member(&management, name).await);
    }
    management.organizations().close_account().account_id(&members[3]).send().await.expect("CloseAccount");

    let new = NewOrganization {
        role_arn: format!("arn:aws:iam::{management_id}:role/SkywardenOrganizationReader"),
        member_role_name: "SkywardenReadOnly".into(),
        ..Default::default()
    };
    let entry = organization::onboard(&db.pool, &new, &PollIntervals::default()).await.expect("onboarding");
    assert_eq!(entry.account_id, format!("organization:{management_id}"));
    assert_eq!(entry.kind, AccountKind::Organization);
    let change = organization::sync(&db.pool, &ctx.base, &ctx.settings, &entry.account_id).await.expect("listing");
    let mut active = members[..3].to_vec();
    active.sort();
    let mut onboarded = change.onboarded.clone();
    onboarded.sort();
    assert_eq!(onboarded, active, "the three active members, not the management account nor the closed one");
    assert_eq!(change.management_account_id.as_deref(), Some(management_id.as_str()));
    for member in &active {
        let account = accounts::load(&db.pool, member).await.unwrap();
        assert_eq!(account.role_arn.as_str(), format!("arn:aws:iam::{member}:role/SkywardenReadOnly"));
        assert_eq!(account.external_id, entry.external_id, "one external ID for the organization");
        assert_eq!(account.organization.as_deref(), Some(entry.account_id.as_str()));
        assert_eq!(enabled_jobs(&db, member).await, 2, "regions and the account-wide snapshot, before discovery");
    }
    assert!(member_state(&db, &members[3]).await.is_none(), "a suspended account is not onboarded");
    assert!(member_state(&db, &management_id).await.is_none(), "nor the management account");
    let org_jobs: Vec<(String, String)> =
        sqlx::query_as("SELECT region, source FROM poll_jobs WHERE account_id = $1 AND enabled")
            .bind(&entry.account_id)
            .fetch_all(&db.pool)
            .await
            .unwrap();
    assert_eq!(org_jobs, [("global".to_owned(), "organization".to_owned())]);

    // A new member joins; another is closed (SUSPENDED) and a third leaves the organization.
    let joined = create_member(&management, "data").await;
    management.organizations().close_account().account_id(&members[0]).send().await.expect("CloseAccount");
    management
        .organizations()
        .remove_account_from_organization()
        .account_id(&members[1])
        .send()
        .await
        .expect("RemoveAccountFromOrganization");
    let worker = Worker::new(ctx.clone(), "organization-worker", None);
    only_due(&db, &entry.account_id).await;
    let reports = worker.run_once().await.unwrap();
    let listing = reports.iter().find(|r| r.source == Source::Organization.as_str()).expect("the organization job ran");
    assert!(listing.error.is_none(), "{listing:?}");
    assert_eq!(accounts::load(&db.pool, &joined).await.unwrap().external_id, entry.external_id);
    assert!(enabled_jobs(&db, &joined).await >= 2, "the new member is polled");
    assert_eq!(member_state(&db, &members[0]).await, Some((false, Some("SUSPENDED".into()))));
    assert_eq!(member_state(&db, &members[1]).await, Some((false, Some("REMOVED".into()))));
    assert_eq!(member_state(&db, &members[2]).await, Some((true, Some("ACTIVE".into()))));
    for stopped in &members[..2] {
        assert_eq!(enabled_jobs(&db, stopped).await, 0, "a suspended or removed member is not polled");
        let kept = db.count(&format!("SELECT count(*) FROM poll_jobs WHERE account_id = '{stopped}'")).await;
        assert!(kept >= 2, "its jobs (and checkpoints) are kept");
    }

    let listed = crate::support::skywarden_command(&db.url).args(["accounts", "list"]).output().unwrap();
    let listed = String::from_utf8_lossy(&listed.stdout).into_owned();
    assert!(listed.contains(&format!("{}  ", members[0])) && listed.contains("suspended in organization:"), "{listed}");
    assert!(listed.contains("organization, member role SkywardenReadOnly"), "{listed}");
}

/// Successful console logins of alice, recorded (as AWS does) in us-east-1.
fn console_login(account: &str, id: &str, ip: &str, ago: chrono::Duration) -> Value {
    let mut event = fake::cloudtrail_event(account, id, Utc::now() - ago, "ConsoleLogin", Value::Null);
    event["eventSource"] = json!("signin.amazonaws.com");
    event["sourceIPAddress"] = json!(ip);
    event["userAgent"] = json!("Mozilla/5.0");
    event["responseElements"] = json!({"ConsoleLogin": "Success"});
    event["additionalEventData"] = json!({"MFAUsed": "No"});
    event["eventType"] = json!("AwsConsoleSignIn");
    event
}

fn gzip(value: &Value) -> Vec<u8> {
    use std::io::Write;
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    encoder.write_all(value.to_string().as_bytes()).unwrap();
    encoder.finish().unwrap()
}

/// A trail file's key as an organization trail writes it.
fn trail_key(organization: &str, account: &str, region: &str, n: usize) -> String {
    let today = Utc::now().format("%Y/%m/%d");
    let stamp = Utc::now().format("%Y%m%dT%H%MZ");
    format!(
        "AWSLogs/{organization}/{account}/CloudTrail/{region}/{today}/{account}_CloudTrail_{region}_{stamp}_{n}.json.gz"
    )
}

#[tokio::test]
async fn a_log_archive_is_read_once_and_each_event_lands_in_its_own_account() {
    let db = TestDb::new().await;
    let moto = fake::moto_url().await;
    let dir = tempfile::tempdir().unwrap();
    let geo = Arc::new(GeoDb::open(&[crate::support::mmdb::sample_incident_countries(dir.path())]).unwrap());
    let ctx = context(&db, fake::settings_for(moto), Some(geo)).await;
    let (archive_account, alpha, beta) =
        (fake::random_account_id(), fake::random_account_id(), fake::random_account_id());
    let organization_id = "o-abc123def4";
    let bucket = format!("org-trail-{archive_account}");

    // The log-archive account's bucket, in eu-west-1, holding both members' trail files.
    let s3 = owner(&ctx, &archive_account, "SkywardenReadOnly").await.s3("eu-west-1");
    let location = aws_sdk_s3::types::CreateBucketConfiguration::builder()
        .location_constraint(aws_sdk_s3::types::BucketLocationConstraint::EuWest1)
        .build();
    s3.create_bucket().bucket(&bucket).create_bucket_configuration(location).send().await.unwrap();
    let days = chrono::Duration::days;
    let files = [
        (
            trail_key(organization_id, &alpha, "us-east-1", 1),
            vec![
                console_login(&alpha, "a-login-1", "73.202.1.10", days(3)),
                console_login(&alpha, "a-login-2", "73.202.1.10", days(2)),
                console_login(&alpha, "a-login-3", "24.5.7.8", days(1)),
                console_login(&alpha, "a-login-ua", "176.36.10.20", chrono::Duration::minutes(10)),
            ],
        ),
        (
            trail_key(organization_id, &alpha, "eu-west-1", 2),
            vec![fake::cloudtrail_event(&alpha, "a-run", Utc::now(), "RunInstances", json!({}))],
        ),
        (
            trail_key(organization_id, &beta, "us-east-1", 3),
            vec![
                fake::cloudtrail_event(&beta, "b-1", Utc::now(), "CreateUser", json!({})),
                fake::cloudtrail_event(&beta, "b-2", Utc::now(), "RunInstances", json!({})),
            ],
        ),
    ];
    for (key, events) in &files {
        let body = gzip(&json!({"Records": events}));
        s3.put_object().bucket(&bucket).key(key).body(body.into()).send().await.unwrap();
    }
    let digest = format!("AWSLogs/{organization_id}/{alpha}/CloudTrail-Digest/us-east-1/x.json.gz");
    s3.put_object().bucket(&bucket).key(digest).body(b"{}".to_vec().into()).send().await.unwrap();

    // Alpha was onboarded reading the same files itself; the archive takes them over.
    let own_trail = LogSources {
        trail_bucket: Some(bucket.clone()),
        organization_id: Some(organization_id.into()),
        ..Default::default()
    };
    let alpha_account = NewAccount {
        role_arn: format!("arn:aws:iam::{alpha}:role/SkywardenReadOnly"),
        regions: vec!["us-east-1".into()],
        sources: own_trail.clone(),
        ..Default::default()
    };
    accounts::onboard(&db.pool, &alpha_account, &PollIntervals::default()).await.unwrap();
    let new = NewLogArchive {
        role_arn: format!("arn:aws:iam::{archive_account}:role/SkywardenReadOnly"),
        bucket: bucket.clone(),
        organization_id: Some(organization_id.into()),
        ..Default::default()
    };
    let added = accounts::log_archive::add(&db.pool, &new, &PollIntervals::default()).await.expect("adding");
    assert_eq!(added.replaced, std::slice::from_ref(&alpha));
    let entry = added.archive.account_id.clone();
    let s3_jobs = "SELECT count(*) FROM poll_jobs WHERE enabled AND source IN ('cloudtrail-s3', 'cloudtrail-archive')";
    assert_eq!(db.count(s3_jobs).await, 1, "one job reads the bucket: the archive's");
    let beta_account = NewAccount {
        role_arn: format!("arn:aws:iam::{beta}:role/SkywardenReadOnly"),
        sources: own_trail,
        ..Default::default()
    };
    let refused = accounts::onboard(&db.pool, &beta_account, &PollIntervals::default()).await.unwrap_err();
    assert!(refused.to_string().contains(&entry), "{refused}");

    let policies = skywarden::detect::PolicySet::load(&Path::new(env!("CARGO_MANIFEST_DIR")).join("policies"));
    let worker = Worker::new(ctx.clone(), "archive-worker", Some(Arc::new(policies)));
    only_due(&db, &entry).await;
    let reports = worker.run_once().await.unwrap();
    assert_eq!(reports.len(), 1, "{reports:?}");
    assert!(reports[0].error.is_none() && reports[0].source == "cloudtrail-archive", "{reports:?}");

    let stored = |account: String| {
        let pool = db.pool.clone();
        async move {
            sqlx::query_as::<_, (String, i64)>(
                "SELECT event_id, count(*) FROM cloudtrail_events WHERE account_id = $1 GROUP BY 1 ORDER BY 1",
            )
            .bind(account)
            .fetch_all(&pool)
            .await
            .unwrap()
        }
    };
    let once = |ids: &[&str]| ids.iter().map(|id| ((*id).to_owned(), 1)).collect::<Vec<(String, i64)>>();
    assert_eq!(stored(alpha.clone()).await, once(&["a-login-1", "a-login-2", "a-login-3", "a-login-ua", "a-run"]));
    assert_eq!(stored(beta.clone()).await, once(&["b-1", "b-2"]), "kept for an account not onboarded");
    assert_eq!(stored(entry.clone()).await, [], "nothing under the archive's own entry");
    let read = format!("SELECT count(*) FROM ingested_objects WHERE account_id = '{entry}' AND bucket = '{bucket}'");
    assert_eq!(db.count(&read).await, 3, "three trail files, the digest skipped");
    let alert: String = sqlx::query_scalar(
        "SELECT title FROM alerts WHERE account_id = $1 AND policy_id = 'aws-account-hijacking-attempt'",
    )
    .bind(&alpha)
    .fetch_one(&db.pool)
    .await
    .expect("the hijack alert, from a login only in the archive");
    assert!(alert.contains("alice") && alert.contains("UA"), "{alert}");

    // The next run lists again and reads nothing twice.
    only_due(&db, &entry).await;
    worker.run_once().await.unwrap();
    assert_eq!(db.count(&read).await, 3);
    let events = format!("SELECT count(*) FROM cloudtrail_events WHERE account_id IN ('{alpha}', '{beta}')");
    assert_eq!(db.count(&events).await, 7);
}

/// Only `account`'s configuration snapshots are due, and run; none fails.
async fn snapshot(db: &TestDb, worker: &Worker, account: &str) {
    sqlx::query("UPDATE poll_jobs SET next_run_at = now() + interval '1 day'").execute(&db.pool).await.unwrap();
    assert!(jobs::run_now(&db.pool, account, Some(Source::ConfigSnapshot)).await.unwrap() > 0);
    let reports = worker.run_once().await.unwrap();
    assert!(!reports.is_empty() && reports.iter().all(|r| r.error.is_none()), "{reports:?}");
}

#[tokio::test]
async fn an_event_read_later_from_the_archive_explains_a_change_in_a_member_account() {
    let db = TestDb::new().await;
    let moto = fake::moto_url().await;
    let ctx = context(&db, fake::settings_for(moto), None).await;
    let (archive_account, member) = (fake::random_account_id(), fake::random_account_id());
    let organization_id = "o-abc123def4";
    let bucket = format!("org-trail-{archive_account}");
    let s3 = owner(&ctx, &archive_account, "SkywardenReadOnly").await.s3("eu-west-1");
    let location = aws_sdk_s3::types::CreateBucketConfiguration::builder()
        .location_constraint(aws_sdk_s3::types::BucketLocationConstraint::EuWest1)
        .build();
    s3.create_bucket().bucket(&bucket).create_bucket_configuration(location).send().await.unwrap();
    let new_member = NewAccount {
        role_arn: format!("arn:aws:iam::{member}:role/SkywardenReadOnly"),
        regions: vec!["us-east-1".into()],
        ..Default::default()
    };
    accounts::onboard(&db.pool, &new_member, &PollIntervals::default()).await.unwrap();
    let new = NewLogArchive {
        role_arn: format!("arn:aws:iam::{archive_account}:role/SkywardenReadOnly"),
        bucket: bucket.clone(),
        organization_id: Some(organization_id.into()),
        bucket_region: Some("eu-west-1".into()),
        ..Default::default()
    };
    let entry = accounts::log_archive::add(&db.pool, &new, &PollIntervals::default()).await.unwrap().archive.account_id;

    // The member's security group, in a first snapshot; then someone opens SSH to the world and
    // the next snapshot sees the change, before the archive has the event that made it.
    let ec2 = owner(&ctx, &member, "SkywardenReadOnly").await.ec2("us-east-1");
    let vpc = ec2.create_vpc().cidr_block("10.2.0.0/16").send().await.unwrap().vpc.unwrap().vpc_id.unwrap();
    let create = ec2.create_security_group().group_name("bastion").description("bastion").vpc_id(&vpc);
    let group = create.send().await.unwrap().group_id.unwrap();
    let worker = Worker::new(ctx.clone(), "late-event-worker", None);
    snapshot(&db, &worker, &member).await;
    let ingress = ec2.authorize_security_group_ingress().group_id(&group).ip_protocol("tcp");
    ingress.from_port(22).to_port(22).cidr_ip("0.0.0.0/0").send().await.unwrap();
    let opened_at = Utc::now() - chrono::Duration::seconds(30);
    snapshot(&db, &worker, &member).await;
    let cause = || {
        sqlx::query_as::<_, (Option<String>, Option<String>, Option<String>)>(
            "SELECT event_id, event_name, principal_arn FROM config_changes WHERE account_id = $1 AND resource_id = $2",
        )
        .bind(&member)
        .bind(&group)
        .fetch_one(&db.pool)
    };
    assert_eq!(cause().await.unwrap(), (None, None, None), "the change is seen; its cause is not known yet");

    // The organization trail's file arrives in the archive; the archive's job reads it.
    let event = fake::cloudtrail_event(
        &member,
        "evt-open-ssh",
        opened_at,
        "AuthorizeSecurityGroupIngress",
        json!({"groupId": group}),
    );
    let body = gzip(&json!({"Records": [event]}));
    let key = trail_key(organization_id, &member, "us-east-1", 1);
    s3.put_object().bucket(&bucket).key(key).body(body.into()).send().await.unwrap();
    only_due(&db, &entry).await;
    let reports = worker.run_once().await.unwrap();
    assert!(reports.len() == 1 && reports[0].error.is_none(), "{reports:?}");
    assert_eq!(reports[0].outcome.as_ref().map(|o| o.stored), Some(1), "{reports:?}");
    let principal = format!("arn:aws:iam::{member}:user/alice");
    assert_eq!(
        cause().await.unwrap(),
        (Some("evt-open-ssh".into()), Some("AuthorizeSecurityGroupIngress".into()), Some(principal)),
        "the member's change is linked to the event the archive stored under the member"
    );
}

#[tokio::test]
async fn organizations_and_log_archives_are_added_by_admins_through_the_api_and_the_command_line() {
    use axum::http::StatusCode;

    use crate::api::call_with;

    let db = TestDb::new().await;
    let moto = fake::moto_url().await;
    let settings = fake::settings_for(moto);
    let api = skywarden::http::ApiContext::new(db.pool.clone()).with_aws(settings.clone(), settings.load().await);
    let (_, analyst) = skywarden::auth::create(&db.pool, "tier-1", skywarden::auth::Role::Analyst).await.unwrap();
    let (_, admin) = skywarden::auth::create(&db.pool, "cloud-team", skywarden::auth::Role::Admin).await.unwrap();
    let ctx = context(&db, settings, None).await;
    let management_id = fake::random_account_id();
    let management = owner(&ctx, &management_id, "SkywardenOrganizationReader").await;
    management.organizations().create_organization().send().await.expect("CreateOrganization");
    let member = create_member(&management, "prod").await;

    let request = json!({"role_arn": format!("arn:aws:iam::{management_id}:role/SkywardenOrganizationReader")});
    let uri = "/api/v1/accounts/organizations";
    let (status, _) = call_with(&api, "POST", uri, Some(&analyst), Some(request.clone())).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, created) = call_with(&api, "POST", uri, Some(&admin), Some(request)).await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    assert!(created["external_id"].as_str().unwrap().starts_with("skywarden-"), "{created}");
    assert_eq!(created["kind"], "organization");
    assert_eq!(created["members"]["onboarded"], json!([member]), "{created}");
    let entry = created["account_id"].as_str().unwrap().to_owned();
    let (status, jobs) =
        call_with(&api, "GET", &format!("/api/v1/accounts/{entry}/status"), Some(&analyst), None).await;
    assert_eq!((status, jobs[0]["source"].clone()), (StatusCode::OK, json!("organization")), "{jobs}");

    let uri = "/api/v1/accounts/log-archives";
    let bad = json!({"role_arn": "arn:aws:iam::444455556666:role/SkywardenReadOnly", "bucket": "Bad_Bucket"});
    let (status, body) = call_with(&api, "POST", uri, Some(&admin), Some(bad)).await;
    assert_eq!((status, body["field"].as_str()), (StatusCode::BAD_REQUEST, Some("trail_bucket")), "{body}");
    let archive = json!({"role_arn": "arn:aws:iam::444455556666:role/SkywardenReadOnly", "bucket": "org-trail",
                         "organization_id": "o-abc123def4", "bucket_region": "eu-west-1"});
    let (status, added) = call_with(&api, "POST", uri, Some(&admin), Some(archive)).await;
    assert_eq!(status, StatusCode::CREATED, "{added}");
    assert_eq!(
        (added["account_id"].as_str(), added["kind"].as_str()),
        (Some("log-archive:org-trail"), Some("log-archive"))
    );
    let target: (String, String) =
        sqlx::query_as("SELECT region, target FROM poll_jobs WHERE account_id = 'log-archive:org-trail'")
            .fetch_one(&db.pool)
            .await
            .unwrap();
    assert_eq!(target, ("eu-west-1".to_owned(), "s3://org-trail/AWSLogs/o-abc123def4/".to_owned()));

    // The command line: another organization, its member onboarded at once.
    let other_id = fake::random_account_id();
    let other = owner(&ctx, &other_id, "SkywardenOrganizationReader").await;
    other.organizations().create_organization().send().await.expect("CreateOrganization");
    let other_member = create_member(&other, "web").await;
    let run = |args: &[&str]| {
        let mut command = crate::support::skywarden_command(&db.url);
        command.args(args);
        for (key, value) in fake::aws_env(moto) {
            command.env(key, value);
        }
        command.output().expect("running skywarden")
    };
    let role = format!("arn:aws:iam::{other_id}:role/SkywardenOrganizationReader");
    let added = run(&["accounts", "add", "--organization", "--role-arn", &role, "--member-role-name", "Audit"]);
    let text = String::from_utf8_lossy(&added.stdout).into_owned();
    assert!(added.status.success(), "{}", String::from_utf8_lossy(&added.stderr));
    assert!(text.contains("shown only now") && text.contains("members polled: 1"), "{text}");
    let member_role = accounts::load(&db.pool, &other_member).await.unwrap().role_arn;
    assert_eq!(member_role.as_str(), format!("arn:aws:iam::{other_member}:role/Audit"));
    let refused = run(&["accounts", "add", "--role-arn", &role, "--member-role-name", "Audit"]);
    assert!(!refused.status.success(), "--member-role-name needs --organization");
    let archive = run(&[
        "accounts",
        "add-log-archive",
        "--bucket",
        "other-trail",
        "--role-arn",
        "arn:aws:iam::444455556666:role/SkywardenReadOnly",
        "--no-test",
    ]);
    let text = String::from_utf8_lossy(&archive.stdout).into_owned();
    assert!(archive.status.success() && text.contains("log archive log-archive:other-trail added"), "{text}");
}
