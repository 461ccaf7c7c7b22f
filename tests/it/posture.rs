//! Posture end to end: every check against its own pass and fail fixtures, the CloudMapper demo
//! account (where `../shared` exists), and against moto: a non-compliant setup is snapshotted
//! and found, then fixed, snapshotted and resolved, with the event alert and the finding linked.

use std::path::Path;
use std::time::Duration;

use chrono::Utc;
use serde_json::{Value, json};

use crate::support::aws::{self as fake, FakeCloudTrail};
use crate::support::{TestDb, fixture, shared_fixture};
use skywarden::accounts::{self, LogSources, NewAccount, PollIntervals};
use skywarden::auth::{self, Role};
use skywarden::aws::AccountSession;
use skywarden::http::ApiContext;
use skywarden::pollers::worker::Worker;
use skywarden::pollers::{PollContext, PollOptions, jobs};
use skywarden::posture::checks::CheckSet;
use skywarden::posture::evaluate::{self, AccountResources, PostureResource};
use skywarden::posture::findings::{self, FindingFilter};

fn checks() -> CheckSet {
    let set = CheckSet::load(&Path::new(env!("CARGO_MANIFEST_DIR")).join("policies/posture"));
    let problems: Vec<String> = set.problems.iter().map(|p| format!("{}: {}", p.file, p.message)).collect();
    assert!(problems.is_empty(), "{problems:#?}");
    set
}

#[test]
fn every_check_gives_the_messages_its_fixtures_expect() {
    let mut set = checks();
    assert!(set.checks.len() >= 27, "{} checks", set.checks.len());
    let mut evaluated = 0;
    for check in &mut set.checks {
        let dir = fixture(&format!("posture/{}", check.meta.id));
        let expect: serde_json::Map<String, Value> = serde_json::from_str(
            &std::fs::read_to_string(dir.join("expect.json"))
                .unwrap_or_else(|_| panic!("{} has no fixtures", check.meta.id)),
        )
        .unwrap();
        assert!(expect.keys().any(|k| k.starts_with("pass")), "{} needs a passing fixture", check.meta.id);
        assert!(expect.keys().any(|k| k.starts_with("fail")), "{} needs a failing fixture", check.meta.id);
        for (file, wanted) in &expect {
            let input: Value = serde_json::from_str(&std::fs::read_to_string(dir.join(file)).unwrap()).unwrap();
            assert_eq!(
                input["resource"]["type"],
                check.meta.resource_type.as_str(),
                "{}/{file} is of the check's resource type",
                check.meta.id
            );
            let got = check
                .evaluate(&regorus::Value::from(input))
                .unwrap_or_else(|e| panic!("{}/{file}: {e}", check.meta.id));
            let mut wanted: Vec<String> = serde_json::from_value(wanted.clone()).unwrap();
            wanted.sort();
            assert_eq!(got, wanted, "{}/{file}", check.meta.id);
            evaluated += 1;
        }
        // Every check maps to frameworks (possibly none) and names a remediation.
        assert!(!check.meta.remediation.is_empty(), "{}", check.meta.id);
    }
    assert!(evaluated >= 100, "{evaluated} fixtures");
}

fn resource(kind: &str, id: &str, region: &str, config: Value) -> PostureResource {
    PostureResource {
        resource_type: kind.into(),
        id: id.into(),
        region: region.into(),
        account_id: "123456789012".into(),
        arn: None,
        name: None,
        config,
    }
}

/// The CloudMapper demo account's describe outputs, turned into resource configs by the same
/// collector code the pollers use (through the SDK's own types).
#[test]
fn the_cloudmapper_demo_account_produces_the_findings_its_data_implies() {
    let Some(dir) = shared_fixture("aws-describe-outputs/cloudmapper-demo/us-east-1") else {
        eprintln!(
            "NOTE: ../shared/fixtures/aws-describe-outputs is absent; the CloudMapper posture test checked nothing"
        );
        return;
    };
    use aws_sdk_ec2::types::{IpPermission, IpRange, Ipv6Range, SecurityGroup, UserIdGroupPair};
    use skywarden::inventory::collect;

    let read =
        |name: &str| -> Value { serde_json::from_str(&std::fs::read_to_string(dir.join(name)).unwrap()).unwrap() };
    let permissions = |list: &Value| -> Vec<IpPermission> {
        list.as_array()
            .unwrap()
            .iter()
            .map(|p| {
                let mut builder = IpPermission::builder().ip_protocol(p["IpProtocol"].as_str().unwrap());
                if let Some(from) = p["FromPort"].as_i64() {
                    builder = builder.from_port(from as i32);
                }
                if let Some(to) = p["ToPort"].as_i64() {
                    builder = builder.to_port(to as i32);
                }
                for range in p["IpRanges"].as_array().into_iter().flatten() {
                    builder = builder.ip_ranges(IpRange::builder().cidr_ip(range["CidrIp"].as_str().unwrap()).build());
                }
                for range in p["Ipv6Ranges"].as_array().into_iter().flatten() {
                    builder = builder
                        .ipv6_ranges(Ipv6Range::builder().cidr_ipv6(range["CidrIpv6"].as_str().unwrap()).build());
                }
                for pair in p["UserIdGroupPairs"].as_array().into_iter().flatten() {
                    let mut group = UserIdGroupPair::builder().group_id(pair["GroupId"].as_str().unwrap());
                    if let Some(user) = pair["UserId"].as_str() {
                        group = group.user_id(user);
                    }
                    builder = builder.user_id_group_pairs(group.build());
                }
                builder.build()
            })
            .collect()
    };
    let mut resources = AccountResources { account_id: "123456789012".into(), ..Default::default() };
    for group in read("ec2-describe-security-groups.json")["SecurityGroups"].as_array().unwrap() {
        let sdk = SecurityGroup::builder()
            .group_id(group["GroupId"].as_str().unwrap())
            .group_name(group["GroupName"].as_str().unwrap())
            .description(group["Description"].as_str().unwrap_or_default())
            .set_vpc_id(group["VpcId"].as_str().map(str::to_string))
            .owner_id(group["OwnerId"].as_str().unwrap())
            .set_ip_permissions(Some(permissions(&group["IpPermissions"])))
            .set_ip_permissions_egress(Some(permissions(&group["IpPermissionsEgress"])))
            .build();
        let config = collect::security_group_config(&sdk, "us-east-1").expect("a group with an id");
        resources.by_type.entry(config.resource_type.into()).or_default().push(resource(
            config.resource_type,
            &config.resource_id,
            "us-east-1",
            config.config,
        ));
    }
    use aws_sdk_ec2::types::{
        GroupIdentifier, HttpTokensState, Instance, InstanceMetadataOptionsResponse, InstanceState, InstanceStateName,
    };
    for reservation in read("ec2-describe-instances.json")["Reservations"].as_array().unwrap() {
        for instance in reservation["Instances"].as_array().unwrap() {
            let mut sdk = Instance::builder()
                .instance_id(instance["InstanceId"].as_str().unwrap())
                .set_vpc_id(instance["VpcId"].as_str().map(str::to_string))
                .state(
                    InstanceState::builder()
                        .name(InstanceStateName::from(instance["State"]["Name"].as_str().unwrap()))
                        .build(),
                );
            for group in instance["SecurityGroups"].as_array().into_iter().flatten() {
                sdk = sdk
                    .security_groups(GroupIdentifier::builder().group_id(group["GroupId"].as_str().unwrap()).build());
            }
            if let Some(options) = instance.get("MetadataOptions") {
                sdk = sdk.metadata_options(
                    InstanceMetadataOptionsResponse::builder()
                        .http_tokens(HttpTokensState::from(options["HttpTokens"].as_str().unwrap()))
                        .build(),
                );
            }
            let config = collect::instance_config(&sdk.build(), reservation["OwnerId"].as_str(), "us-east-1")
                .expect("a running instance");
            resources.by_type.entry(config.resource_type.into()).or_default().push(resource(
                config.resource_type,
                &config.resource_id,
                "us-east-1",
                config.config,
            ));
        }
    }
    let report = read("iam-get-credential-report.json");
    let csv = report["Content"].as_str().unwrap();
    // The describe output keeps the report as text here (the API returns it base64-encoded).
    let csv = if csv.starts_with("user,") { csv.to_string() } else { String::from_utf8(decode_base64(csv)).unwrap() };
    let root =
        collect::root_account_from_report(&csv, &json!(report["GeneratedTime"]), "123456789012").expect("the root row");
    resources.by_type.insert(
        root.resource_type.into(),
        vec![resource(root.resource_type, &root.resource_id, "global", root.config)],
    );

    let mut set = checks();
    let evaluation = evaluate::evaluate_account(&mut set, &resources, "2019-05-08T00:00:00Z".parse().unwrap());
    assert!(evaluation.problems.is_empty(), "{:?}", evaluation.problems);
    let failing = |check: &str| -> Vec<(String, Vec<String>)> {
        evaluation
            .results
            .iter()
            .filter(|r| r.check_id == check && !r.messages.is_empty())
            .map(|r| (r.resource_id.clone(), r.messages.clone()))
            .collect()
    };
    // HTTPS open to the world on the two web groups; the bastion admits SSH from two offices only.
    let mut open = failing("aws-ec2-sg-open-to-internet");
    open.sort();
    let expected = vec!["ingress tcp 443-443 from 0.0.0.0/0".to_string()];
    assert_eq!(open, [("sg-00000003".to_string(), expected.clone()), ("sg-00000008".to_string(), expected)]);
    assert!(failing("aws-ec2-sg-admin-ports-ipv4").is_empty());
    // The demo's credential report: root has MFA, but also an active access key.
    assert_eq!(
        failing("aws-iam-root-access-keys"),
        [("123456789012".to_string(), vec!["root user access key 1 is active".to_string()])]
    );
    assert!(evaluation.results.iter().any(|r| r.check_id == "aws-iam-root-mfa" && r.messages.is_empty()));
    // No instance has a role; two of the three accept IMDSv1.
    let mut no_role: Vec<String> = failing("aws-ec2-instance-role").into_iter().map(|(id, _)| id).collect();
    no_role.sort();
    assert_eq!(no_role, ["i-00000000000000000", "i-00000000000000001", "i-00000000000000002"]);
    let imds: Vec<String> = failing("aws-ec2-imdsv2").into_iter().map(|(id, _)| id).collect();
    assert!(
        imds.contains(&"i-00000000000000001".to_string()) && imds.contains(&"i-00000000000000002".to_string()),
        "{imds:?}"
    );
}

fn decode_base64(text: &str) -> Vec<u8> {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.decode(text.trim()).expect("base64")
}

async fn context(db: &TestDb, moto: &str, cloudtrail: &str) -> PollContext {
    let settings = fake::settings_with_cloudtrail(moto, cloudtrail);
    let base = settings.load().await;
    PollContext {
        pool: db.pool.clone(),
        base,
        settings,
        options: PollOptions { lookup_min_interval: Duration::from_millis(40), ..PollOptions::default() },
        geo: None,
        partitions: Default::default(),
    }
}

/// A fresh account onboarded in moto, and a session as its owner to set up its state.
async fn onboarded(db: &TestDb, ctx: &PollContext) -> (String, AccountSession) {
    let account_id = fake::random_account_id();
    let new = NewAccount {
        role_arn: format!("arn:aws:iam::{account_id}:role/SkywardenReadOnly"),
        name: None,
        regions: vec!["us-east-1".into()],
        endpoint_url: None,
        sources: LogSources::default(),
    };
    let account = accounts::onboard(&db.pool, &new, &PollIntervals::default()).await.unwrap();
    let owner = AccountSession::assume(&ctx.base, &ctx.settings, &account.assume_target()).await.unwrap();
    (account_id, owner)
}

#[tokio::test]
async fn findings_open_on_a_bad_setup_and_resolve_when_it_is_fixed() {
    let db = TestDb::new().await;
    let moto = fake::moto_url().await;
    let cloudtrail = FakeCloudTrail::start(moto).await;
    let ctx = context(&db, moto, &cloudtrail.url).await;
    let (account_id, owner) = onboarded(&db, &ctx).await;
    let ec2 = owner.ec2("us-east-1");
    let iam = owner.iam();

    // Non-compliant: SSH open to the world, a VPC without flow logs, a console user without MFA,
    // an 8-character password policy.
    let vpc = ec2.create_vpc().cidr_block("10.9.0.0/16").send().await.unwrap().vpc.unwrap().vpc_id.unwrap();
    let group = ec2
        .create_security_group()
        .group_name("ops")
        .description("ops")
        .vpc_id(&vpc)
        .send()
        .await
        .unwrap()
        .group_id
        .unwrap();
    ec2.authorize_security_group_ingress()
        .group_id(&group)
        .ip_protocol("tcp")
        .from_port(22)
        .to_port(22)
        .cidr_ip("0.0.0.0/0")
        .send()
        .await
        .unwrap();
    iam.create_user().user_name("maria").send().await.unwrap();
    iam.create_login_profile().user_name("maria").password("Correct-Horse-1").send().await.unwrap();
    iam.update_account_password_policy().minimum_password_length(8).send().await.unwrap();

    let worker =
        Worker::new(ctx.clone(), "posture-worker", None).with_posture(checks(), Some(skywarden::model::Severity::High));
    let reports = worker.run_once().await.unwrap();
    assert!(reports.iter().all(|r| r.error.is_none()), "{reports:?}");

    // Two snapshot jobs (the region and IAM), one evaluation: the last job to finish runs it.
    let evaluations = format!("SELECT count(*) FROM posture_evaluations WHERE account_id = '{account_id}'");
    assert_eq!(db.count(&evaluations).await, 1);
    let open = findings::list(
        &db.pool,
        &FindingFilter { status: Some("open".into()), account_id: Some(account_id.clone()), ..Default::default() },
    )
    .await
    .unwrap();
    let has = |check: &str, resource: &str| open.iter().any(|f| f.check_id == check && f.resource_id == resource);
    assert!(has("aws-ec2-sg-admin-ports-ipv4", &group), "{open:#?}");
    assert!(has("aws-vpc-flow-logs", &vpc), "{open:#?}");
    assert!(has("aws-iam-user-console-mfa", "maria"), "{open:#?}");
    assert!(has("aws-iam-password-policy-length", &account_id), "{open:#?}");
    let ssh = open.iter().find(|f| f.check_id == "aws-ec2-sg-admin-ports-ipv4" && f.resource_id == group).unwrap();
    assert_eq!(ssh.messages, ["ingress tcp 22-22 from 0.0.0.0/0"]);
    assert!(ssh.frameworks["cis-aws-3.0"].as_array().unwrap().contains(&json!("5.2")));
    // High findings raise alerts, routed like any other.
    assert!(ssh.alert_id.is_some(), "a high finding raised an alert");
    let scores = findings::scores(&db.pool, Some(&account_id), true).await.unwrap();
    assert!(scores.iter().any(|s| s.section == "networking" && s.failed > 0), "{scores:?}");

    // The same through the API: viewers read, analysts suppress with a reason.
    let (_, viewer) = auth::create(&db.pool, "viewer", Role::Viewer).await.unwrap();
    let (_, analyst) = auth::create(&db.pool, "analyst", Role::Analyst).await.unwrap();
    let api = ApiContext::new(db.pool.clone());
    let (status, listed) = crate::api::call_with(
        &api,
        "GET",
        &format!("/api/v1/posture/findings?account={account_id}"),
        Some(&viewer),
        None,
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(listed["findings"].as_array().unwrap().len(), open.len());
    let (status, one) =
        crate::api::call_with(&api, "GET", &format!("/api/v1/posture/findings/{}", ssh.id), Some(&viewer), None).await;
    assert_eq!(status, 200);
    assert_eq!(one["history"][0]["event"], "opened");
    assert_eq!(one["finding"]["remediation"].as_str().map(|r| r.is_empty()), Some(false));
    let (status, checks_listed) =
        crate::api::call_with(&api, "GET", "/api/v1/posture/checks", Some(&viewer), None).await;
    assert_eq!(status, 200);
    assert!(
        checks_listed
            .as_array()
            .unwrap()
            .iter()
            .any(|c| c["id"] == "aws-vpc-flow-logs" && c["frameworks"]["cis-aws-3.0"] == json!(["3.7"]))
    );
    let suppression = json!({"check": "aws-vpc-flow-logs", "account": account_id, "resource": vpc, "reason": "lab VPC, no traffic", "until": "2099-01-01T00:00:00Z"});
    assert_eq!(
        crate::api::call_with(&api, "POST", "/api/v1/posture/suppressions", Some(&viewer), Some(suppression.clone()))
            .await
            .0,
        403
    );
    let (status, created) =
        crate::api::call_with(&api, "POST", "/api/v1/posture/suppressions", Some(&analyst), Some(suppression)).await;
    assert_eq!(status, 201, "{created}");
    let no_reason = json!({"check": "aws-vpc-flow-logs", "reason": " "});
    assert_eq!(
        crate::api::call_with(&api, "POST", "/api/v1/posture/suppressions", Some(&analyst), Some(no_reason)).await.0,
        400
    );
    let flow = findings::list(
        &db.pool,
        &FindingFilter {
            check_id: Some("aws-vpc-flow-logs".into()),
            resource_id: Some(vpc.clone()),
            ..Default::default()
        },
    )
    .await
    .unwrap()
    .remove(0);
    assert!(flow.suppressed && flow.suppression.as_deref() == Some("lab VPC, no traffic"));
    let (status, trend) = crate::api::call_with(
        &api,
        "GET",
        &format!("/api/v1/posture/scores?account={account_id}&trend=true"),
        Some(&viewer),
        None,
    )
    .await;
    assert_eq!(status, 200);
    assert!(!trend["scores"].as_array().unwrap().is_empty());

    // Fixed: the rule revoked, flow logs on, MFA... the console password removed, a 14-character policy.
    ec2.revoke_security_group_ingress()
        .group_id(&group)
        .ip_protocol("tcp")
        .from_port(22)
        .to_port(22)
        .cidr_ip("0.0.0.0/0")
        .send()
        .await
        .unwrap();
    ec2.create_flow_logs()
        .resource_type(aws_sdk_ec2::types::FlowLogsResourceType::Vpc)
        .resource_ids(&vpc)
        .traffic_type(aws_sdk_ec2::types::TrafficType::All)
        .log_destination_type(aws_sdk_ec2::types::LogDestinationType::CloudWatchLogs)
        .log_group_name("vpc-flow")
        .deliver_logs_permission_arn(format!("arn:aws:iam::{account_id}:role/flow-logs"))
        .send()
        .await
        .unwrap();
    iam.delete_login_profile().user_name("maria").send().await.unwrap();
    iam.update_account_password_policy()
        .minimum_password_length(14)
        .password_reuse_prevention(24)
        .send()
        .await
        .unwrap();
    jobs::run_now(&db.pool, &account_id, None).await.unwrap();
    let reports = worker.run_once().await.unwrap();
    assert!(reports.iter().all(|r| r.error.is_none()), "{reports:?}");

    assert_eq!(db.count(&evaluations).await, 2);
    let all = findings::list(&db.pool, &FindingFilter { account_id: Some(account_id.clone()), ..Default::default() })
        .await
        .unwrap();
    for (check, resource) in [
        ("aws-ec2-sg-admin-ports-ipv4", group.as_str()),
        ("aws-vpc-flow-logs", vpc.as_str()),
        ("aws-iam-user-console-mfa", "maria"),
        ("aws-iam-password-policy-length", account_id.as_str()),
    ] {
        let finding =
            all.iter().find(|f| f.check_id == check && f.resource_id == resource).unwrap_or_else(|| panic!("{check}"));
        assert_eq!(finding.status, "resolved", "{check}: {finding:?}");
        assert!(finding.resolved_at.is_some() && finding.resolved_at.unwrap() <= Utc::now());
        let history = findings::history_of(&db.pool, finding.id).await.unwrap();
        let events: Vec<&str> = history.iter().map(|h| h["event"].as_str().unwrap()).collect();
        assert_eq!(events, ["opened", "resolved"], "{check}");
    }
}

#[tokio::test]
async fn an_opened_security_group_is_an_event_alert_at_once_and_a_linked_finding_at_the_next_snapshot() {
    let db = TestDb::new().await;
    let moto = fake::moto_url().await;
    let cloudtrail = FakeCloudTrail::start(moto).await;
    let ctx = context(&db, moto, &cloudtrail.url).await;
    let (account_id, owner) = onboarded(&db, &ctx).await;
    let ec2 = owner.ec2("us-east-1");
    let vpc = ec2.create_vpc().cidr_block("10.7.0.0/16").send().await.unwrap().vpc.unwrap().vpc_id.unwrap();
    let group = ec2
        .create_security_group()
        .group_name("db")
        .description("db")
        .vpc_id(&vpc)
        .send()
        .await
        .unwrap()
        .group_id
        .unwrap();
    let policies = skywarden::detect::PolicySet::load(&Path::new(env!("CARGO_MANIFEST_DIR")).join("policies"));
    let worker = Worker::new(ctx.clone(), "linking-worker", Some(std::sync::Arc::new(policies)))
        .with_posture(checks(), Some(skywarden::model::Severity::High));
    worker.run_once().await.unwrap();

    // Someone opens RDP to the world; CloudTrail has the call.
    ec2.authorize_security_group_ingress()
        .group_id(&group)
        .ip_protocol("tcp")
        .from_port(3389)
        .to_port(3389)
        .cidr_ip("0.0.0.0/0")
        .send()
        .await
        .unwrap();
    let event_time = Utc::now() - chrono::Duration::seconds(5);
    let mut event = fake::cloudtrail_event(
        &account_id,
        "evt-open-rdp",
        event_time,
        "AuthorizeSecurityGroupIngress",
        json!({
            "groupId": group,
            "ipPermissions": {"items": [{"ipProtocol": "tcp", "fromPort": 3389, "toPort": 3389, "ipRanges": {"items": [{"cidrIp": "0.0.0.0/0"}]}}]}
        }),
    );
    event["sourceIPAddress"] = json!("198.51.100.23");
    cloudtrail.add_events([event]);
    jobs::run_now(&db.pool, &account_id, None).await.unwrap();
    worker.run_once().await.unwrap();

    let event_alert: (String, String) = sqlx::query_as(
        "SELECT alert_id::text, policy_id FROM alerts WHERE account_id = $1 AND $2 = ANY(resources) AND policy_id NOT LIKE 'posture:%'",
    )
    .bind(&account_id)
    .bind(&group)
    .fetch_one(&db.pool)
    .await
    .expect("the event alert on the security group");
    assert_eq!(event_alert.1, "aws-security-group-ingress-opened");
    let finding = findings::list(
        &db.pool,
        &FindingFilter {
            resource_id: Some(group.clone()),
            check_id: Some("aws-ec2-sg-admin-ports-ipv4".into()),
            ..Default::default()
        },
    )
    .await
    .unwrap()
    .remove(0);
    assert_eq!(finding.status, "open");
    assert_eq!(finding.related_alerts, std::slice::from_ref(&event_alert.0), "the finding links the event alert");
    let cause = finding.cause.expect("the change that broke the check");
    assert_eq!(cause["event_id"], "evt-open-rdp");
    assert_eq!(cause["event_name"], "AuthorizeSecurityGroupIngress");
}

/// The sample incident's configuration snapshots, imported after its logs: the stopped trail
/// is a finding whose cause is alice's StopLogging call and whose related alert is the event
/// alert; the instance role the attacker attached resolves the "no role" finding.
#[tokio::test]
async fn a_snapshot_dump_replays_the_sample_incident_with_causes() {
    let db = TestDb::new().await;
    let dir = tempfile::tempdir().unwrap();
    let geo = crate::support::mmdb::sample_incident_countries(dir.path());
    let samples = Path::new(env!("CARGO_MANIFEST_DIR")).join("samples");
    let output =
        db.skywarden(&["import", "--geoip", geo.to_str().unwrap(), samples.join("incident").to_str().unwrap()]);
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let output = db.skywarden(&["posture", "import", samples.join("incident.config.json").to_str().unwrap()]);
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));

    let all =
        findings::list(&db.pool, &FindingFilter { account_id: Some("111122223333".into()), ..Default::default() })
            .await
            .unwrap();
    let trail = all.iter().find(|f| f.check_id == "aws-cloudtrail-multi-region").expect("the stopped trail");
    let cause = trail.cause.as_ref().expect("a cause");
    assert_eq!(cause["event_name"], "StopLogging");
    assert_eq!(cause["event_id"], "3414bf35-2340-4f4a-84ee-6d252633c7f9");
    assert_eq!(cause["source_ip"], "176.36.10.20");
    // The rule on StopLogging, and alice's day of sensitive calls new for her, which holds it.
    let mut related: Vec<String> = sqlx::query_scalar(
        "SELECT alert_id::text FROM alerts WHERE policy_id IN ('aws-cloudtrail-logging-disabled', 'aws-rare-sensitive-api')",
    )
    .fetch_all(&db.pool)
    .await
    .unwrap();
    let mut listed = trail.related_alerts.clone();
    related.sort();
    listed.sort();
    assert_eq!(listed, related);
    assert!(trail.alert_id.is_some(), "a high finding raised its own alert");
    // Findings present in the first snapshot are the baseline: no cause.
    let mfa = all.iter().find(|f| f.check_id == "aws-iam-user-console-mfa" && f.resource_id == "alice").unwrap();
    assert!(mfa.cause.is_none());
    let resolved = findings::list(&db.pool, &FindingFilter { status: Some("resolved".into()), ..Default::default() })
        .await
        .unwrap();
    assert!(
        resolved.iter().any(|f| f.check_id == "aws-ec2-instance-role" && f.resource_id == "i-0a1b2c3d4e5f67890"),
        "{resolved:?}"
    );

    // A broken dump names what is wrong and records nothing.
    let bad = dir.path().join("bad.json");
    std::fs::write(&bad, r#"{"format": "skywarden.snapshot/v1", "account_id": "111122223333", "snapshots": [{"captured_at": "2026-11-12T00:00:00Z", "regions": {"us-east-1": {"collected": ["ec2:lambda"], "resources": []}}}]}"#).unwrap();
    let output = db.skywarden(&["posture", "import", bad.to_str().unwrap()]);
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("bad.json") && stderr.contains("unknown resource type \"ec2:lambda\""), "{stderr}");
}

#[test]
fn policies_lint_names_a_broken_check_and_loads_the_others() {
    let dir = tempfile::tempdir().unwrap();
    let policies = dir.path().join("policies");
    crate::support::copy_dir(&Path::new(env!("CARGO_MANIFEST_DIR")).join("policies"), &policies);
    let good = std::fs::read_to_string(policies.join("posture/networking/aws-ec2-imdsv2.rego")).unwrap();
    let broken = good
        .replace("aws-ec2-imdsv2", "aws-ec2-broken")
        .replace("aws_ec2_imdsv2", "aws_ec2_broken")
        .replace("import rego.v1", "import rego.v1\n\ndeny contains msg if {");
    std::fs::write(policies.join("posture/networking/aws-ec2-broken.rego"), broken).unwrap();
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_skywarden"))
        .args(["policies", "--policies", policies.to_str().unwrap(), "lint"])
        .env_remove("DATABASE_URL")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert_eq!(output.status.code(), Some(1), "{stdout}");
    assert!(stdout.lines().any(|l| l.contains("aws-ec2-broken.rego: aws-ec2-broken: Rego")), "{stdout}");
    let loaded = checks().checks.len();
    assert!(stdout.contains(&format!("{loaded} posture checks, 1 problems")), "the others load: {stdout}");
}

/// A finding that fails, passes and fails again: its alert resolves with it, and the reopened
/// finding raises a new alert.
#[tokio::test]
async fn a_reopened_finding_alerts_again_and_a_resolved_one_resolves_its_alert() {
    use skywarden::posture::evaluate::{AccountEvaluation, CheckResult};
    let db = TestDb::new().await;
    let set = checks();
    let metas = set.metas();
    findings::save_checks(&db.pool, &metas).await.unwrap();
    let result = |messages: &[&str]| AccountEvaluation {
        account_id: "111122223333".into(),
        results: vec![CheckResult {
            check_id: "aws-ec2-sg-admin-ports-ipv4".into(),
            account_id: "111122223333".into(),
            resource_type: "ec2:security-group".into(),
            resource_id: "sg-0a1b2c3d4e5f67890".into(),
            region: "us-east-1".into(),
            messages: messages.iter().map(|m| m.to_string()).collect(),
        }],
        checks_run: vec!["aws-ec2-sg-admin-ports-ipv4".into()],
        ..Default::default()
    };
    let high = Some(skywarden::model::Severity::High);
    let t = |s: &str| -> chrono::DateTime<Utc> { s.parse().unwrap() };
    let first = findings::record(
        &db.pool,
        &result(&["ingress tcp 22-22 from 0.0.0.0/0"]),
        &metas,
        t("2026-11-20T10:00:00Z"),
        high,
    )
    .await
    .unwrap();
    assert_eq!((first.opened, first.alerts), (1, 1));
    let pool = db.pool.clone();
    let alert_status = |n: usize| {
        let pool = pool.clone();
        async move {
            sqlx::query_scalar::<_, String>(
                "SELECT status::text FROM alerts WHERE policy_id = 'posture:aws-ec2-sg-admin-ports-ipv4' ORDER BY first_seen",
            )
            .fetch_all(&pool)
            .await
            .unwrap()
            .get(n)
            .cloned()
        }
    };
    let passed = findings::record(&db.pool, &result(&[]), &metas, t("2026-11-21T10:00:00Z"), high).await.unwrap();
    assert_eq!(passed.resolved, 1);
    assert_eq!(alert_status(0).await.as_deref(), Some("resolved"), "the finding's alert resolves with it");
    let again = findings::record(
        &db.pool,
        &result(&["ingress tcp 22-22 from 0.0.0.0/0"]),
        &metas,
        t("2026-11-22T10:00:00Z"),
        high,
    )
    .await
    .unwrap();
    assert_eq!((again.reopened, again.alerts), (1, 1), "the reopened finding raises a new alert");
    assert_eq!(alert_status(1).await.as_deref(), Some("open"));
    let finding = findings::list(&db.pool, &FindingFilter::default()).await.unwrap().remove(0);
    let events: Vec<String> = findings::history_of(&db.pool, finding.id)
        .await
        .unwrap()
        .iter()
        .map(|h| h["event"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(events, ["opened", "resolved", "reopened"]);
    assert_eq!(finding.first_failed_at, t("2026-11-22T10:00:00Z"));
}
