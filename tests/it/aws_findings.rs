//! GuardDuty and Security Hub findings imported as alerts, end to end through the real SDK
//! clients and the job workers: Security Hub against moto (GetFindings, BatchImportFindings),
//! GuardDuty against a protocol-faithful fake (moto has detectors but no findings calls; see
//! support/guardduty.rs and docs/aws-findings.md).

use std::sync::Arc;

use chrono::{DateTime, Utc};
use serde_json::{Value, json};

use skywarden::accounts::{self, LogSources, NewAccount, PollIntervals};
use skywarden::alerts::store::{AlertFilter, AlertView, list};
use skywarden::aws::{AccountSession, AwsSettings, Service};
use skywarden::db::partitions::PartitionCache;
use skywarden::model::{AlertStatus, Severity};
use skywarden::pollers::worker::{JobReport, Worker};
use skywarden::pollers::{PollContext, PollOptions, Source, jobs};

use crate::support::TestDb;
use crate::support::aws as fake;
use crate::support::guardduty::FakeGuardDuty;

async fn context(db: &TestDb, settings: AwsSettings) -> PollContext {
    let base = settings.load().await;
    PollContext {
        pool: db.pool.clone(),
        base,
        settings,
        options: PollOptions::default(),
        geo: None,
        partitions: Arc::new(PartitionCache::default()),
    }
}

/// An account importing findings in `regions`, with its other jobs (LookupEvents, snapshots,
/// the regions job) off: these tests are about the findings jobs alone.
async fn onboard(db: &TestDb, account: &str, regions: &[&str], guardduty: bool, security_hub: bool) {
    let new = NewAccount {
        role_arn: format!("arn:aws:iam::{account}:role/SkywardenReadOnly"),
        name: None,
        regions: regions.iter().map(|r| r.to_string()).collect(),
        endpoint_url: None,
        sources: LogSources {
            guardduty_findings: guardduty,
            security_hub_findings: security_hub,
            ..Default::default()
        },
    };
    accounts::onboard(&db.pool, &new, &PollIntervals::default()).await.expect("onboarding");
    sqlx::query(
        "UPDATE poll_jobs SET enabled = false WHERE account_id = $1
         AND source NOT IN ('guardduty-findings', 'securityhub-findings')",
    )
    .bind(account)
    .execute(&db.pool)
    .await
    .unwrap();
}

fn time(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

/// A GuardDuty finding as GetFindings sends it.
fn guardduty_finding(account: &str, id: &str, updated: DateTime<Utc>, severity: f64) -> Value {
    json!({
        "accountId": account,
        "arn": format!("arn:aws:guardduty:us-east-1:{account}:detector/det-1/finding/{id}"),
        "createdAt": time(Utc::now() - chrono::Duration::days(2)),
        "updatedAt": time(updated),
        "id": id,
        "partition": "aws",
        "region": "us-east-1",
        "schemaVersion": "2.0",
        "type": "Recon:EC2/PortProbeUnprotectedPort",
        "title": format!("Unprotected port on EC2 instance i-{id} is being probed."),
        "description": "EC2 instance has an unprotected port which is being probed by a known malicious host.",
        "severity": severity,
        "resource": {"resourceType": "Instance", "instanceDetails": {"instanceId": format!("i-{id}")}},
        "service": {"serviceName": "guardduty", "detectorId": "det-1", "archived": false, "count": 1,
                    "action": {"actionType": "PORT_PROBE", "portProbeAction": {"blocked": false, "portProbeDetails": [
                        {"remoteIpDetails": {"ipAddressV4": "192.0.2.44", "country": {"countryCode": "RU"}}}]}}}
    })
}

/// The credential-exfiltration finding an intrusion raises: an instance role's key used outside AWS.
fn exfiltration_finding(account: &str, updated: DateTime<Utc>, severity: f64, count: u64) -> Value {
    json!({
        "accountId": account,
        "arn": format!("arn:aws:guardduty:us-east-1:{account}:detector/det-1/finding/exfil-1"),
        "createdAt": time(Utc::now() - chrono::Duration::hours(3)),
        "updatedAt": time(updated),
        "id": "exfil-1",
        "partition": "aws",
        "region": "us-east-1",
        "schemaVersion": "2.0",
        "type": "UnauthorizedAccess:IAMUser/InstanceCredentialExfiltration.OutsideAWS",
        "title": "Credentials for instance role web-role used from external IP address.",
        "description": "Credentials created exclusively for an EC2 instance were used from 203.0.113.9.",
        "severity": severity,
        "resource": {
            "resourceType": "AccessKey",
            "accessKeyDetails": {"accessKeyId": "ASIAEXFILTRATED01", "principalId": "AROAWEBROLE:i-0web",
                                  "userName": "web-role", "userType": "AssumedRole"},
            "instanceDetails": {"instanceId": "i-0web", "networkInterfaces": [{"networkInterfaceId": "eni-0web"}]}
        },
        "service": {"serviceName": "guardduty", "detectorId": "det-1", "archived": false, "count": count,
                    "action": {"actionType": "AWS_API_CALL", "awsApiCallAction": {
                        "api": "ListBuckets", "serviceName": "s3.amazonaws.com", "callerType": "Remote IP",
                        "remoteIpDetails": {"ipAddressV4": "203.0.113.9", "country": {"countryCode": "NL"}}}}}
    })
}

fn report<'r>(reports: &'r [JobReport], account: &str, source: Source, region: &str) -> &'r JobReport {
    reports
        .iter()
        .find(|r| r.account_id == account && r.source == source.as_str() && r.region == region)
        .unwrap_or_else(|| panic!("no {} run in {region}: {reports:?}", source.as_str()))
}

async fn alerts_of(db: &TestDb, account: &str, prefix: &str) -> Vec<AlertView> {
    let all = list(&db.pool, &AlertFilter::default()).await.unwrap();
    all.into_iter().filter(|a| a.account_id == account && a.policy_id.starts_with(prefix)).collect()
}

#[tokio::test]
async fn guardduty_findings_become_alerts_that_follow_their_updates() {
    let db = TestDb::new().await;
    let moto = fake::moto_url().await;
    let guardduty = FakeGuardDuty::start().await;
    let mut settings = fake::settings_for(moto);
    settings.service_endpoints.insert(Service::GuardDuty, guardduty.url.clone());
    let ctx = context(&db, settings).await;
    let account = fake::random_account_id();
    onboard(&db, &account, &["us-east-1", "eu-west-1"], true, false).await;
    // GuardDuty on in us-east-1 only; 119 probes and one exfiltration: three pages of 50.
    guardduty.enable("us-east-1", "det-1");
    let first_update = Utc::now() - chrono::Duration::hours(1);
    for n in 0..119 {
        guardduty.put_finding(guardduty_finding(&account, &format!("probe-{n:03}"), first_update, 2.0));
    }
    guardduty.put_finding(exfiltration_finding(&account, first_update, 8.0, 1));

    let worker = Worker::new(ctx.clone(), "worker-a", None);
    let reports = worker.run_once().await.unwrap();
    let east = report(&reports, &account, Source::GuardDutyFindings, "us-east-1");
    assert!(east.error.is_none(), "{east:?}");
    assert_eq!(east.outcome.as_ref().unwrap().stored, 120);
    let west = report(&reports, &account, Source::GuardDutyFindings, "eu-west-1");
    assert!(west.error.is_none(), "a region without a detector is not an error: {west:?}");

    let statuses = jobs::statuses(&db.pool, Some(&account)).await.unwrap();
    let status =
        |region: &str| statuses.iter().find(|s| s.source == "guardduty-findings" && s.region == region).unwrap();
    assert_eq!(status("eu-west-1").state.as_deref(), Some("not-enabled"));
    assert!(status("eu-west-1").last_error.is_none() && status("eu-west-1").consecutive_failures == 0);
    assert_eq!(status("us-east-1").state.as_deref(), Some("enabled"));
    assert_eq!(status("us-east-1").items_total, 120);
    let shown = db.skywarden(&["accounts", "status", &account]);
    let shown = String::from_utf8_lossy(&shown.stdout);
    assert!(shown.contains("not enabled in this region"), "{shown}");

    let listings: Vec<Option<String>> =
        guardduty.listings().into_iter().filter(|(r, _, _)| r == "us-east-1").map(|(_, _, token)| token).collect();
    assert_eq!(listings, [None, Some("offset-50".into()), Some("offset-100".into())], "three pages, each once");

    let alerts = alerts_of(&db, &account, "aws-guardduty:").await;
    assert_eq!(alerts.len(), 120, "one alert per finding");
    let exfil = alerts.iter().find(|a| a.evidence == ["exfil-1"]).expect("the exfiltration alert");
    assert_eq!(exfil.policy_id, "aws-guardduty:UnauthorizedAccess:IAMUser/InstanceCredentialExfiltration.OutsideAWS");
    assert_eq!(exfil.severity, Severity::High);
    assert_eq!(exfil.status, AlertStatus::Open);
    assert_eq!(
        exfil.principal.as_deref(),
        Some(format!("arn:aws:sts::{account}:assumed-role/web-role/i-0web").as_str())
    );
    assert_eq!(exfil.source_ip.as_deref(), Some("203.0.113.9"));
    assert_eq!(exfil.country.as_deref(), Some("NL"));
    assert_eq!(exfil.resources, ["ASIAEXFILTRATED01", "eni-0web", "i-0web"]);
    assert!(exfil.mitre.iter().any(|m| m.contains("TA0001")), "{:?}", exfil.mitre);
    assert_eq!(exfil.details["finding"]["service"]["count"], 1);
    let probe = alerts.iter().find(|a| a.evidence == ["probe-007"]).unwrap();
    assert_eq!((probe.severity, probe.source_ip.as_deref()), (Severity::Low, Some("192.0.2.44")));
    assert!(probe.mitre.iter().any(|m| m.contains("TA0043")), "{:?}", probe.mitre);

    // An analyst resolves one probe; GuardDuty then archives it, raises the exfiltration to
    // critical as it recurs, and archives a finding Skywarden never saw.
    skywarden::notify::outbox::set_alert_status(
        &db.pool,
        &probe.id,
        AlertStatus::Resolved,
        None,
        "analyst",
        "known scanner",
    )
    .await
    .unwrap();
    let second_update = Utc::now() - chrono::Duration::minutes(1);
    let mut archived = guardduty_finding(&account, "probe-007", second_update, 2.0);
    archived["service"]["archived"] = json!(true);
    guardduty.put_finding(archived);
    guardduty.put_finding(exfiltration_finding(&account, second_update, 9.5, 7));
    let mut never_seen = guardduty_finding(&account, "archived-before-import", second_update, 5.0);
    never_seen["service"]["archived"] = json!(true);
    guardduty.put_finding(never_seen);

    jobs::run_now(&db.pool, &account, Some(Source::GuardDutyFindings)).await.unwrap();
    let again = worker.run_once().await.unwrap();
    assert!(report(&again, &account, Source::GuardDutyFindings, "us-east-1").error.is_none(), "{again:?}");
    let (_, since, _) = guardduty.listings().into_iter().rfind(|(r, _, _)| r == "us-east-1").unwrap();
    let since = DateTime::from_timestamp_millis(since.unwrap()).unwrap();
    assert!(
        since > Utc::now() - chrono::Duration::minutes(30),
        "the next listing starts at the last one, less the overlap: {since}"
    );

    let alerts = alerts_of(&db, &account, "aws-guardduty:").await;
    assert_eq!(alerts.len(), 120, "updates fold into their alerts; an archived finding raises none");
    let exfil = alerts.iter().find(|a| a.evidence == ["exfil-1"]).unwrap();
    assert_eq!(exfil.severity, Severity::Critical);
    assert_eq!(exfil.details["finding"]["service"]["count"], 7);
    assert_eq!(exfil.event_count, 1, "the same finding is one piece of evidence");
    assert!(exfil.last_seen > exfil.first_seen);
    let probe = alerts.iter().find(|a| a.evidence == ["probe-007"]).unwrap();
    assert_eq!(probe.status, AlertStatus::Resolved, "an archived finding does not reopen a resolved alert");
    assert_eq!(probe.details["archived"], true);
}

#[tokio::test]
async fn an_account_whose_role_cannot_read_guardduty_shows_the_error() {
    let db = TestDb::new().await;
    let moto = fake::moto_url().await;
    let guardduty = FakeGuardDuty::start().await;
    let mut settings = fake::settings_for(moto);
    settings.service_endpoints.insert(Service::GuardDuty, guardduty.url.clone());
    let ctx = context(&db, settings).await;
    // The role of this account lacks the GuardDuty actions (the fake refuses its region).
    let denied = fake::random_account_id();
    onboard(&db, &denied, &["ap-southeast-2"], true, false).await;
    guardduty.deny("ap-southeast-2");
    let healthy = fake::random_account_id();
    onboard(&db, &healthy, &["us-east-1"], true, false).await;
    guardduty.enable("us-east-1", "det-1");
    guardduty.put_finding(exfiltration_finding(&healthy, Utc::now(), 8.0, 1));

    let reports = Worker::new(ctx, "worker-a", None).run_once().await.unwrap();
    let error =
        report(&reports, &denied, Source::GuardDutyFindings, "ap-southeast-2").error.clone().unwrap_or_default();
    assert!(
        error.contains("guardduty:ListDetectors")
            && error.contains("AccessDeniedException")
            && error.contains("role's permissions"),
        "{error}"
    );
    assert!(report(&reports, &healthy, Source::GuardDutyFindings, "us-east-1").error.is_none(), "{reports:?}");
    assert_eq!(alerts_of(&db, &healthy, "aws-guardduty:").await.len(), 1);
    let status = jobs::statuses(&db.pool, Some(&denied)).await.unwrap();
    let job = status.iter().find(|s| s.source == "guardduty-findings").unwrap();
    assert_eq!(job.consecutive_failures, 1);
    assert!(job.last_error.as_deref().unwrap_or_default().contains("AccessDenied"), "{job:?}");
    assert!(job.next_run_at > Utc::now() + chrono::Duration::seconds(10), "retried after a back-off, not in a loop");
}

/// An ASFF finding as a product sends it to BatchImportFindings.
fn asff(account: &str, id: &str, product: &str, updated: DateTime<Utc>, label: &str) -> Value {
    json!({
        "SchemaVersion": "2018-10-08",
        "Id": format!("arn:aws:securityhub:us-east-1:{account}:finding/{id}"),
        "ProductArn": "arn:aws:securityhub:us-east-1::product/aws/securityhub",
        "ProductName": product,
        "CompanyName": "AWS",
        "GeneratorId": "security-control/S3.8",
        "AwsAccountId": account,
        "Region": "us-east-1",
        "Types": ["Software and Configuration Checks/Industry and Regulatory Standards"],
        "CreatedAt": time(Utc::now() - chrono::Duration::days(1)),
        "UpdatedAt": time(updated),
        "Severity": {"Label": label},
        "Title": "S3 general purpose buckets should block public access",
        "Description": "This control checks whether an S3 bucket has bucket-level Block Public Access settings.",
        "Compliance": {"Status": "FAILED", "SecurityControlId": "S3.8"},
        "Resources": [{"Type": "AwsS3Bucket", "Id": format!("arn:aws:s3:::bucket-{id}"), "Region": "us-east-1"}],
        "Workflow": {"Status": "NEW"},
        "RecordState": "ACTIVE"
    })
}

/// Imports ASFF findings into moto as the account's owner would (BatchImportFindings).
async fn import_asff(session: &AccountSession, findings: &[Value]) {
    use aws_sdk_securityhub::types::{
        AwsSecurityFinding, Compliance, ComplianceStatus, RecordState, Resource, Severity as AsffSeverity,
        SeverityLabel, Workflow, WorkflowStatus,
    };
    let client = session.securityhub("us-east-1");
    for chunk in findings.chunks(100) {
        let built: Vec<AwsSecurityFinding> = chunk
            .iter()
            .map(|f| {
                let text = |name: &str| f[name].as_str().unwrap().to_owned();
                AwsSecurityFinding::builder()
                    .schema_version(text("SchemaVersion"))
                    .id(text("Id"))
                    .product_arn(text("ProductArn"))
                    .product_name(text("ProductName"))
                    .company_name(text("CompanyName"))
                    .generator_id(text("GeneratorId"))
                    .aws_account_id(text("AwsAccountId"))
                    .region(text("Region"))
                    .types(f["Types"][0].as_str().unwrap())
                    .created_at(text("CreatedAt"))
                    .updated_at(text("UpdatedAt"))
                    .severity(
                        AsffSeverity::builder()
                            .label(SeverityLabel::from(f["Severity"]["Label"].as_str().unwrap()))
                            .build(),
                    )
                    .title(text("Title"))
                    .description(text("Description"))
                    .compliance(
                        Compliance::builder()
                            .security_control_id("S3.8")
                            .status(ComplianceStatus::from(f["Compliance"]["Status"].as_str().unwrap()))
                            .build(),
                    )
                    .resources(
                        Resource::builder()
                            .r#type("AwsS3Bucket")
                            .id(f["Resources"][0]["Id"].as_str().unwrap())
                            .region("us-east-1")
                            .build(),
                    )
                    .workflow(
                        Workflow::builder()
                            .status(WorkflowStatus::from(f["Workflow"]["Status"].as_str().unwrap()))
                            .build(),
                    )
                    .record_state(RecordState::from(text("RecordState").as_str()))
                    .build()
            })
            .collect();
        let answer =
            client.batch_import_findings().set_findings(Some(built)).send().await.expect("BatchImportFindings");
        assert_eq!(answer.failed_count(), Some(0), "{answer:?}");
    }
}

#[tokio::test]
async fn security_hub_findings_become_alerts_without_the_guardduty_ones_read_twice() {
    let db = TestDb::new().await;
    let moto = fake::moto_url().await;
    let guardduty = FakeGuardDuty::start().await;
    let mut settings = fake::settings_for(moto);
    settings.service_endpoints.insert(Service::GuardDuty, guardduty.url.clone());
    let ctx = context(&db, settings).await;
    let account = fake::random_account_id();
    // Both imports on: Security Hub's copies of GuardDuty findings are left to the GuardDuty job.
    onboard(&db, &account, &["us-east-1"], true, true).await;
    let loaded = accounts::load(&db.pool, &account).await.unwrap();
    let owner = AccountSession::assume(&ctx.base, &ctx.settings, &loaded.assume_target()).await.unwrap();

    let updated = Utc::now() - chrono::Duration::hours(1);
    let mut findings: Vec<Value> =
        (0..149).map(|n| asff(&account, &format!("control-{n:03}"), "Security Hub", updated, "MEDIUM")).collect();
    findings.push(asff(&account, "relayed-guardduty", "GuardDuty", updated, "HIGH"));
    let mut resolved = asff(&account, "resolved-before", "Security Hub", updated, "HIGH");
    resolved["Workflow"]["Status"] = json!("RESOLVED");
    findings.push(resolved);
    import_asff(&owner, &findings).await;

    let worker = Worker::new(ctx.clone(), "worker-a", None);
    let reports = worker.run_once().await.unwrap();
    let hub = report(&reports, &account, Source::SecurityHubFindings, "us-east-1");
    assert!(hub.error.is_none(), "{hub:?}");
    let alerts = alerts_of(&db, &account, "aws-securityhub:").await;
    assert_eq!(alerts.len(), 149, "the relayed GuardDuty finding and the resolved one raise none");
    let statuses = jobs::statuses(&db.pool, Some(&account)).await.unwrap();
    let job = statuses.iter().find(|s| s.source == "securityhub-findings").unwrap();
    assert_eq!(job.target, "without-guardduty");
    assert_eq!(job.items_total, 150, "two pages read (100 and 50), the relayed finding dropped");
    let one = alerts.iter().find(|a| a.evidence[0].ends_with("finding/control-042")).unwrap();
    assert_eq!(one.policy_id, "aws-securityhub:S3.8");
    assert_eq!(one.severity, Severity::Medium);
    assert_eq!(one.resources, ["arn:aws:s3:::bucket-control-042", "bucket-control-042"]);
    assert_eq!(one.details["product"], "Security Hub");

    // The control fails again, now rated critical: the same alert, escalated.
    import_asff(&owner, &[asff(&account, "control-042", "Security Hub", Utc::now(), "CRITICAL")]).await;
    jobs::run_now(&db.pool, &account, Some(Source::SecurityHubFindings)).await.unwrap();
    let again = worker.run_once().await.unwrap();
    assert!(report(&again, &account, Source::SecurityHubFindings, "us-east-1").error.is_none(), "{again:?}");
    let alerts = alerts_of(&db, &account, "aws-securityhub:").await;
    assert_eq!(alerts.len(), 149, "re-polling folds into the same alerts");
    let one = alerts.iter().find(|a| a.evidence[0].ends_with("finding/control-042")).unwrap();
    assert_eq!(one.severity, Severity::Critical);
    assert_eq!(one.details["finding"]["Severity"]["Label"], "CRITICAL");
    assert_eq!(one.event_count, 1);
}

/// `import --findings`: GuardDuty findings as the AWS CLI prints them (capitalised members),
/// an ASFF answer, and a broken file, imported by the binary; importing again adds nothing.
#[tokio::test]
async fn saved_findings_files_import_as_alerts_once() {
    fn capitalise(value: &Value) -> Value {
        match value {
            Value::Object(map) => Value::Object(
                map.iter().map(|(k, v)| (format!("{}{}", k[..1].to_uppercase(), &k[1..]), capitalise(v))).collect(),
            ),
            Value::Array(items) => Value::Array(items.iter().map(capitalise).collect()),
            other => other.clone(),
        }
    }
    let db = TestDb::new().await;
    let account = fake::random_account_id();
    let dir = tempfile::tempdir().unwrap();
    let guardduty = dir.path().join("guardduty.json");
    let cli_answer = json!({"findings": [exfiltration_finding(&account, Utc::now(), 8.0, 3),
                                         guardduty_finding(&account, "probe-1", Utc::now(), 5.0)]});
    std::fs::write(&guardduty, capitalise(&cli_answer).to_string()).unwrap();
    let hub = dir.path().join("securityhub.json");
    let mut broken_finding = asff(&account, "no-times", "Security Hub", Utc::now(), "LOW");
    broken_finding.as_object_mut().unwrap().remove("CreatedAt");
    let answer = json!({"Findings": [asff(&account, "control-1", "Security Hub", Utc::now(), "HIGH"), broken_finding]});
    std::fs::write(&hub, answer.to_string()).unwrap();
    let broken = dir.path().join("broken.json");
    std::fs::write(&broken, "{\"Findings\": [").unwrap();

    let run = || {
        let output = db.skywarden(&[
            "import",
            "--findings",
            "--json",
            guardduty.to_str().unwrap(),
            hub.to_str().unwrap(),
            broken.to_str().unwrap(),
        ]);
        let summary: Value = serde_json::from_slice(&output.stdout)
            .unwrap_or_else(|e| panic!("no JSON summary ({e}): {}", String::from_utf8_lossy(&output.stderr)));
        (output.status.code(), summary)
    };
    let (code, summary) = run();
    assert_eq!(code, Some(2), "a bad file or finding makes the exit code 2: {summary}");
    assert_eq!(
        (summary["files"].as_u64(), summary["findings"].as_u64(), summary["folded"].as_u64()),
        (Some(2), Some(4), Some(3))
    );
    let errors = summary["errors"].to_string();
    assert!(errors.contains("broken.json") && errors.contains("not JSON"), "{errors}");
    assert!(errors.contains("securityhub.json: finding 1") && errors.contains("CreatedAt"), "{errors}");
    let imported = alerts_of(&db, &account, "aws-").await;
    assert_eq!(imported.len(), 3);
    let exfil = imported.iter().find(|a| a.evidence == ["exfil-1"]).unwrap();
    assert_eq!(exfil.source_ip.as_deref(), Some("203.0.113.9"));
    assert_eq!(
        exfil.principal.as_deref(),
        Some(format!("arn:aws:sts::{account}:assumed-role/web-role/i-0web").as_str())
    );
    assert!(imported.iter().any(|a| a.policy_id == "aws-securityhub:S3.8" && a.severity == Severity::High));

    let (_, again) = run();
    assert_eq!(again["folded"].as_u64(), Some(3));
    let after = alerts_of(&db, &account, "aws-").await;
    assert_eq!(after.len(), 3, "importing again adds no alert");
    assert!(after.iter().all(|a| a.event_count == 1), "nor evidence");
}

/// The imports are turned on and off on an onboarded account; its jobs follow, and Security
/// Hub leaves GuardDuty's findings out only while GuardDuty's own import is on.
#[tokio::test]
async fn findings_imports_are_turned_on_and_off_per_account() {
    let db = TestDb::new().await;
    let account = fake::random_account_id();
    onboard(&db, &account, &["us-east-1", "eu-west-1"], false, false).await;
    let findings_jobs = || async {
        let statuses = jobs::statuses(&db.pool, Some(&account)).await.unwrap();
        let mut jobs: Vec<(String, String, String)> = statuses
            .into_iter()
            .filter(|s| s.enabled && s.source.ends_with("-findings"))
            .map(|s| (s.source, s.region, s.target))
            .collect();
        jobs.sort();
        jobs
    };
    assert!(findings_jobs().await.is_empty());
    let both = accounts::AccountChange {
        guardduty_findings: Some(true),
        security_hub_findings: Some(true),
        ..Default::default()
    };
    let configured = accounts::configure(&db.pool, &account, &both).await.unwrap();
    assert!(configured.sources.guardduty_findings && configured.sources.security_hub_findings);
    let row = |s: &str, r: &str, t: &str| (s.to_owned(), r.to_owned(), t.to_owned());
    assert_eq!(
        findings_jobs().await,
        [
            row("guardduty-findings", "eu-west-1", ""),
            row("guardduty-findings", "us-east-1", ""),
            row("securityhub-findings", "eu-west-1", "without-guardduty"),
            row("securityhub-findings", "us-east-1", "without-guardduty"),
        ]
    );
    let guardduty_off = accounts::AccountChange { guardduty_findings: Some(false), ..Default::default() };
    let configured = accounts::configure(&db.pool, &account, &guardduty_off).await.unwrap();
    assert!(!configured.sources.guardduty_findings && configured.sources.security_hub_findings);
    assert_eq!(
        findings_jobs().await,
        [row("securityhub-findings", "eu-west-1", ""), row("securityhub-findings", "us-east-1", "")],
        "Security Hub now imports the GuardDuty findings it relays"
    );
}

/// Runs the account's job of `source` until it has caught up (each run reads `max_pages_per_run`
/// pages; the worker runs a job with more pending again at once), asserting every run succeeds;
/// returns how many calls to the worker it took.
async fn run_until_caught_up(db: &TestDb, worker: &Worker, account: &str, source: Source, region: &str) -> usize {
    for call in 1..=20 {
        jobs::run_now(&db.pool, account, Some(source)).await.unwrap();
        let reports = worker.run_once().await.unwrap();
        let runs: Vec<&JobReport> = reports
            .iter()
            .filter(|r| r.account_id == account && r.source == source.as_str() && r.region == region)
            .collect();
        assert!(runs.iter().all(|r| r.error.is_none()), "call {call}: {runs:?}");
        if runs.last().is_some_and(|r| !r.outcome.as_ref().unwrap().more_pending) {
            return call;
        }
    }
    panic!("the job never caught up");
}

/// A GuardDuty poller reading one page a run (a job with more pending runs again at once),
/// against the fake with a detector in us-east-1.
async fn one_page_a_run(db: &TestDb, account: &str) -> (FakeGuardDuty, PollContext) {
    let moto = fake::moto_url().await;
    let guardduty = FakeGuardDuty::start().await;
    let mut settings = fake::settings_for(moto);
    settings.service_endpoints.insert(Service::GuardDuty, guardduty.url.clone());
    let mut ctx = context(db, settings).await;
    ctx.options.max_pages_per_run = 1;
    onboard(db, account, &["us-east-1"], true, false).await;
    guardduty.enable("us-east-1", "det-1");
    (guardduty, ctx)
}

/// A worker that calls `between` once, at the start of the job's second run (after one page).
fn after_first_page(ctx: PollContext, between: impl Fn() + Send + Sync + 'static) -> Worker {
    let runs = std::sync::atomic::AtomicUsize::new(0);
    Worker::new(ctx, "worker-a", None).with_job_hook(move |_| {
        if runs.fetch_add(1, std::sync::atomic::Ordering::SeqCst) == 1 {
            between();
        }
    })
}

#[tokio::test]
async fn a_finding_updated_while_a_listing_is_under_way_skips_no_other() {
    let db = TestDb::new().await;
    let account = fake::random_account_id();
    let (guardduty, ctx) = one_page_a_run(&db, &account).await;
    let base = Utc::now() - chrono::Duration::hours(2);
    for n in 0..120 {
        let updated = base + chrono::Duration::seconds(n);
        guardduty.put_finding(guardduty_finding(&account, &format!("f{n:03}"), updated, 2.0));
    }
    // After the first page GuardDuty updates a finding already read: it moves to the end of the
    // listing, and every finding after it moves up one place.
    let fake = guardduty.clone();
    let account_of_hook = account.clone();
    let worker = after_first_page(ctx, move || {
        let updated = Utc::now() - chrono::Duration::minutes(1);
        fake.put_finding(guardduty_finding(&account_of_hook, "f010", updated, 8.0));
    });
    let runs = run_until_caught_up(&db, &worker, &account, Source::GuardDutyFindings, "us-east-1").await;
    assert_eq!(runs, 1, "a run with more pending runs again at once");
    assert!(guardduty.listings().len() >= 3, "one page a run: {:?}", guardduty.listings());
    let alerts = alerts_of(&db, &account, "aws-guardduty:").await;
    let missing: Vec<String> =
        (0..120).map(|n| format!("f{n:03}")).filter(|id| !alerts.iter().any(|a| a.evidence == [id.clone()])).collect();
    assert!(missing.is_empty(), "findings never read: {missing:?}");
    assert_eq!(alerts.len(), 120);
    let updated = alerts.iter().find(|a| a.evidence == ["f010"]).unwrap();
    assert_eq!(updated.severity, Severity::High, "the update itself is read");
}

#[tokio::test]
async fn an_expired_page_token_restarts_the_listing_at_the_cursor_and_says_so() {
    let db = TestDb::new().await;
    let account = fake::random_account_id();
    let (guardduty, ctx) = one_page_a_run(&db, &account).await;
    // 119 findings updated at one instant: only a page token walks through them. The token
    // saved after the first page expires before the next run.
    let updated = Utc::now() - chrono::Duration::hours(1);
    for n in 0..119 {
        guardduty.put_finding(guardduty_finding(&account, &format!("probe-{n:03}"), updated, 2.0));
    }
    let fake = guardduty.clone();
    let worker = after_first_page(ctx, move || fake.expire_tokens());
    run_until_caught_up(&db, &worker, &account, Source::GuardDutyFindings, "us-east-1").await;
    assert_eq!(
        alerts_of(&db, &account, "aws-guardduty:").await.len(),
        119,
        "every finding read once the listing restarted"
    );
    let listings: Vec<Option<String>> = guardduty.listings().into_iter().map(|(_, _, token)| token).collect();
    assert_eq!(listings[..3], [None, Some("offset-50".into()), None], "the refused token, then the cursor");
    let statuses = jobs::statuses(&db.pool, Some(&account)).await.unwrap();
    let state = statuses.iter().find(|s| s.source == "guardduty-findings").unwrap().state.clone().unwrap_or_default();
    assert!(state.starts_with("enabled; 1 expired page token"), "the job's status says so: {state}");
    let restarts: i64 = sqlx::query_scalar(
        "SELECT (checkpoint->>'token_restarts')::bigint FROM poll_jobs WHERE account_id = $1 AND source = 'guardduty-findings'",
    )
    .bind(&account)
    .fetch_one(&db.pool)
    .await
    .unwrap();
    assert_eq!(restarts, 1);
}

#[tokio::test]
async fn an_archived_finding_closes_its_open_alert_and_notifies_no_one() {
    use skywarden::notify::channels::{self, ChannelKind, ChannelSpec, SecretInput};
    use skywarden::notify::network::NetworkPolicy;
    use skywarden::notify::routes::{self, RouteSpec};
    use skywarden::notify::secrets::{Secret, SecretKey};
    let db = TestDb::new().await;
    let spec = ChannelSpec {
        name: "soc-hook".into(),
        kind: ChannelKind::Webhook,
        settings: json!({"url": "http://127.0.0.1:9/hook"}),
        secrets: [("signing_secret".to_string(), SecretInput::Value(Secret::new("whsec-findings")))].into(),
        enabled: true,
    };
    let loopback = NetworkPolicy::allowing("127.0.0.1/32").unwrap();
    channels::create(&db.pool, &spec, &SecretKey::generate(), &loopback).await.unwrap();
    // Routes hear of alerts that reach high: an escalation of this one would be their news.
    let route: RouteSpec =
        serde_json::from_value(json!({"name": "high", "channel": "soc-hook", "min_severity": "high"})).unwrap();
    routes::create(&db.pool, &route).await.unwrap();
    let account = fake::random_account_id();
    let (guardduty, ctx) = one_page_a_run(&db, &account).await;
    let worker = Worker::new(ctx, "worker-a", None);
    guardduty.put_finding(guardduty_finding(&account, "probe-1", Utc::now() - chrono::Duration::hours(1), 5.0));
    run_until_caught_up(&db, &worker, &account, Source::GuardDutyFindings, "us-east-1").await;
    let alert = alerts_of(&db, &account, "aws-guardduty:").await.pop().unwrap();
    assert_eq!((alert.status, alert.severity), (AlertStatus::Open, Severity::Medium));
    let queued = || db.count("SELECT count(*) FROM notification_outbox");
    let before = queued().await;
    assert_eq!(before, 0, "a medium alert is below the route");

    // GuardDuty archives it, rated higher: the alert follows and closes, silently.
    let mut archived = guardduty_finding(&account, "probe-1", Utc::now() - chrono::Duration::minutes(1), 9.0);
    archived["service"]["archived"] = json!(true);
    guardduty.put_finding(archived);
    run_until_caught_up(&db, &worker, &account, Source::GuardDutyFindings, "us-east-1").await;
    let alert = alerts_of(&db, &account, "aws-guardduty:").await.pop().unwrap();
    assert_eq!(alert.status, AlertStatus::Resolved, "AWS closed it");
    assert_eq!(alert.details["archived"], true);
    assert_eq!(alert.severity, Severity::Medium, "no escalation of a closed finding");
    assert_eq!(queued().await, before, "no route hears of an archived finding");
    let actor: String = sqlx::query_scalar("SELECT actor FROM alert_status_changes WHERE alert_id = $1::uuid")
        .bind(&alert.id)
        .fetch_one(&db.pool)
        .await
        .unwrap();
    assert_eq!(actor, "guardduty");
}

#[tokio::test]
async fn a_security_hub_finding_that_names_another_control_stays_one_alert() {
    let db = TestDb::new().await;
    let account = fake::random_account_id();
    let dir = tempfile::tempdir().unwrap();
    let first = asff(&account, "renamed", "Security Hub", Utc::now() - chrono::Duration::hours(1), "MEDIUM");
    let mut later = asff(&account, "renamed", "Security Hub", Utc::now(), "HIGH");
    later["GeneratorId"] = json!("security-control/S3.19");
    later["Compliance"]["SecurityControlId"] = json!("S3.19");
    for (name, finding) in [("first.json", first), ("later.json", later)] {
        let path = dir.path().join(name);
        std::fs::write(&path, json!({"Findings": [finding]}).to_string()).unwrap();
        let imported = skywarden::pollers::findings::import_files(&db.pool, &[path]).await.unwrap();
        assert_eq!((imported.folded, imported.errors.len()), (1, 0), "{imported:?}");
    }
    let alerts = alerts_of(&db, &account, "aws-securityhub:").await;
    assert_eq!(alerts.len(), 1, "one finding id, one alert: {alerts:#?}");
    assert_eq!(alerts[0].policy_id, "aws-securityhub:S3.8", "the alert keeps the policy it was raised under");
    assert_eq!(alerts[0].details["generator_id"], "security-control/S3.19", "its details follow the finding");
    assert_eq!(alerts[0].severity, Severity::High);
}

#[tokio::test]
async fn an_oversized_answer_is_refused_before_it_is_read() {
    let db = TestDb::new().await;
    let account = fake::random_account_id();
    let (guardduty, ctx) = one_page_a_run(&db, &account).await;
    let worker = Worker::new(ctx, "worker-a", None);
    guardduty.put_finding(guardduty_finding(&account, "probe-1", Utc::now(), 5.0));
    guardduty.answer_oversized(skywarden::pollers::findings::MAX_PAGE_BYTES + 1);
    jobs::run_now(&db.pool, &account, Some(Source::GuardDutyFindings)).await.unwrap();
    let reports = worker.run_once().await.unwrap();
    let error = report(&reports, &account, Source::GuardDutyFindings, "us-east-1").error.clone().unwrap_or_default();
    assert!(
        error.contains("guardduty:GetFindings") && error.contains("33554433 bytes") && error.contains("not read"),
        "refused by its announced length, not by a parser: {error}"
    );
    assert!(alerts_of(&db, &account, "aws-guardduty:").await.is_empty());
}

#[tokio::test]
async fn import_findings_names_a_bad_account_id() {
    let db = TestDb::new().await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("guardduty.json");
    let mut bad = guardduty_finding("111122223333", "short-account", Utc::now(), 5.0);
    bad["accountId"] = json!("12345");
    std::fs::write(&path, json!({"findings": [bad]}).to_string()).unwrap();
    let output = db.skywarden(&["import", "--findings", "--json", path.to_str().unwrap()]);
    let summary: Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(output.status.code(), Some(2), "{summary}");
    let errors = summary["errors"].to_string();
    assert!(
        errors.contains("guardduty.json: finding 0") && errors.contains("accountId") && errors.contains("12-digit"),
        "{errors}"
    );
    assert_eq!(db.count("SELECT count(*) FROM alerts").await, 0);
}

#[tokio::test]
async fn turning_findings_imports_on_is_audited_with_the_flags() {
    let db = TestDb::new().await;
    let account = fake::random_account_id();
    onboard(&db, &account, &["us-east-1"], false, false).await;
    let (_, admin) = skywarden::auth::create(&db.pool, "admin", skywarden::auth::Role::Admin).await.unwrap();
    let change = json!({"guardduty_findings": true, "security_hub_findings": false});
    let (status, body) =
        crate::api::call(&db, "PATCH", &format!("/api/v1/accounts/{account}"), Some(&admin), Some(change)).await;
    assert_eq!(status, axum::http::StatusCode::OK, "{body}");
    let log = skywarden::auth::audit::list(&db.pool, None, Some("account.configure"), 10).await.unwrap();
    assert_eq!(log.len(), 1);
    assert_eq!(log[0].details["guardduty_findings"], true, "{}", log[0].details);
    assert_eq!(log[0].details["security_hub_findings"], false, "{}", log[0].details);
}

/// GuardDuty updates findings between the ListFindings that names them and the GetFindings that
/// reads them: they come back newer than the listing ordered them. The cursor must not jump to
/// their new time, past the findings listed after them.
#[tokio::test]
async fn a_finding_updated_between_listing_and_reading_skips_none_listed_later() {
    let db = TestDb::new().await;
    let account = fake::random_account_id();
    let (guardduty, mut ctx) = one_page_a_run(&db, &account).await;
    ctx.options.max_pages_per_run = 200;
    let base = Utc::now() - chrono::Duration::hours(2);
    for n in 0..120 {
        guardduty.put_finding(guardduty_finding(
            &account,
            &format!("f{n:03}"),
            base + chrono::Duration::seconds(n),
            2.0,
        ));
    }
    // Once the first page (f000–f049) is listed, GuardDuty updates f010 and f049, the last one
    // listed (only the listing's time can tell it was updated since).
    guardduty.update_between_list_and_get(guardduty_finding(&account, "f010", base, 8.0));
    guardduty.update_between_list_and_get(guardduty_finding(&account, "f049", base, 8.0));
    let worker = Worker::new(ctx, "worker-a", None);
    run_until_caught_up(&db, &worker, &account, Source::GuardDutyFindings, "us-east-1").await;
    let alerts = alerts_of(&db, &account, "aws-guardduty:").await;
    let missing: Vec<String> =
        (0..120).map(|n| format!("f{n:03}")).filter(|id| !alerts.iter().any(|a| a.evidence == [id.clone()])).collect();
    assert!(missing.is_empty(), "findings never read: {missing:?}");
    assert_eq!(alerts.len(), 120);
    for id in ["f010", "f049"] {
        let updated = alerts.iter().find(|a| a.evidence == [id]).unwrap();
        assert_eq!(updated.severity, Severity::High, "the update of {id} is read");
    }
    let second = guardduty.listings()[1].1.unwrap();
    assert_eq!(
        second,
        (base + chrono::Duration::seconds(48)).timestamp_millis(),
        "the next listing starts at the last finding proven read in listing order (f048)"
    );
}

/// A webhook channel and a route for alerts of `min_severity` and above, so the outbox shows
/// what routes hear of.
async fn webhook_route(db: &TestDb, min_severity: &str) {
    use skywarden::notify::channels::{self, ChannelKind, ChannelSpec, SecretInput};
    use skywarden::notify::network::NetworkPolicy;
    use skywarden::notify::routes::{self, RouteSpec};
    use skywarden::notify::secrets::{Secret, SecretKey};
    let spec = ChannelSpec {
        name: "soc-hook".into(),
        kind: ChannelKind::Webhook,
        settings: json!({"url": "http://127.0.0.1:9/hook"}),
        secrets: [("signing_secret".to_string(), SecretInput::Value(Secret::new("whsec-findings")))].into(),
        enabled: true,
    };
    let loopback = NetworkPolicy::allowing("127.0.0.1/32").unwrap();
    channels::create(&db.pool, &spec, &SecretKey::generate(), &loopback).await.unwrap();
    let route: RouteSpec =
        serde_json::from_value(json!({"name": "findings", "channel": "soc-hook", "min_severity": min_severity}))
            .unwrap();
    routes::create(&db.pool, &route).await.unwrap();
}

/// An outbox message: (event, status, actor, reason).
type Queued = (String, Option<String>, Option<String>, Option<String>);

/// The outbox messages of an alert.
async fn outbox_of(db: &TestDb, alert_id: &str) -> Vec<Queued> {
    sqlx::query_as(
        "SELECT event, alert_status::text, status_actor, status_reason FROM notification_outbox
         WHERE alert_id = $1::uuid ORDER BY id",
    )
    .bind(alert_id)
    .fetch_all(&db.pool)
    .await
    .unwrap()
}

/// The alert's history: (new status, actor, reason), oldest first.
async fn history_of(db: &TestDb, alert_id: &str) -> Vec<(String, String, String)> {
    sqlx::query_as(
        "SELECT new_status::text, actor, reason FROM alert_status_changes WHERE alert_id = $1::uuid ORDER BY changed_at",
    )
    .bind(alert_id)
    .fetch_all(&db.pool)
    .await
    .unwrap()
}

#[tokio::test]
async fn a_guardduty_finding_active_again_reopens_its_alert_unless_dismissed_at_the_same_severity() {
    let db = TestDb::new().await;
    webhook_route(&db, "medium").await;
    let account = fake::random_account_id();
    let (guardduty, ctx) = one_page_a_run(&db, &account).await;
    let worker = Worker::new(ctx, "worker-a", None);
    // Each update after the run before it, as GuardDuty stamps them.
    let step = |severity: f64, archived: bool| {
        let mut finding = guardduty_finding(&account, "probe-1", Utc::now(), severity);
        finding["service"]["archived"] = json!(archived);
        guardduty.put_finding(finding);
    };
    let poll = || run_until_caught_up(&db, &worker, &account, Source::GuardDutyFindings, "us-east-1");
    let alert = || async { alerts_of(&db, &account, "aws-guardduty:").await.pop().unwrap() };

    step(5.0, false);
    poll().await;
    let id = alert().await.id;
    assert_eq!(alert().await.status, AlertStatus::Open);
    step(5.0, true);
    poll().await;
    assert_eq!(alert().await.status, AlertStatus::Resolved, "archived: closed");
    let events = |outbox: Vec<Queued>| {
        outbox
            .into_iter()
            .map(|(event, status, _, _)| format!("{event}:{}", status.unwrap_or_default()))
            .collect::<Vec<_>>()
    };
    assert_eq!(events(outbox_of(&db, &id).await), ["alert.opened:"], "closed silently");

    // Unarchived within a day of GuardDuty closing it: the same alert reopens, on its history,
    // and as silently as it was closed (a flapping finding floods no route).
    step(5.0, false);
    poll().await;
    let reopened = alert().await;
    assert_eq!((reopened.id.as_str(), reopened.status), (id.as_str(), AlertStatus::Open));
    let history = history_of(&db, &id).await;
    let (status, actor, reason) = history.last().unwrap();
    assert_eq!((status.as_str(), actor.as_str()), ("open", "guardduty"), "{history:?}");
    assert!(reason.contains("probe-1") && reason.contains("active again"), "{reason}");
    assert_eq!(events(outbox_of(&db, &id).await), ["alert.opened:"], "reopened silently");
    assert_eq!(alerts_of(&db, &account, "aws-guardduty:").await.len(), 1, "reopened, not a second alert");

    // Archived, and unarchived more than a day after: the reopen is told as a reopen.
    step(5.0, true);
    poll().await;
    assert_eq!(alert().await.status, AlertStatus::Resolved);
    sqlx::query(
        "UPDATE alert_status_changes SET changed_at = changed_at - interval '25 hours'
         WHERE alert_id = $1::uuid AND actor = 'guardduty' AND new_status = 'resolved'",
    )
    .bind(&id)
    .execute(&db.pool)
    .await
    .unwrap();
    step(5.0, false);
    poll().await;
    assert_eq!(alert().await.status, AlertStatus::Open);
    let outbox = outbox_of(&db, &id).await;
    assert_eq!(events(outbox.clone()), ["alert.opened:", "alert.status_changed:open"]);
    assert!(outbox[1].3.as_deref().unwrap_or_default().contains("active again"), "{outbox:?}");

    // An analyst dismisses it as a false positive: archived and unarchived at the same
    // severity, it stays dismissed; rated higher, it reopens.
    skywarden::notify::outbox::set_alert_status(
        &db.pool,
        &id,
        AlertStatus::Dismissed,
        None,
        "analyst",
        "false positive",
    )
    .await
    .unwrap();
    let outbox_before = outbox_of(&db, &id).await;
    step(5.0, true);
    poll().await;
    step(5.0, false);
    poll().await;
    assert_eq!(alert().await.status, AlertStatus::Dismissed, "a false positive stays closed");
    assert_eq!(outbox_of(&db, &id).await, outbox_before, "and no route hears of it");
    step(8.0, false);
    poll().await;
    let raised = alert().await;
    assert_eq!((raised.status, raised.severity), (AlertStatus::Open, Severity::High));
    let (_, actor, reason) = history_of(&db, &id).await.pop().unwrap();
    assert_eq!(actor, "guardduty");
    assert!(reason.contains("high") && reason.contains("medium") && reason.contains("dismissed"), "{reason}");
    let outbox = outbox_of(&db, &id).await;
    assert_eq!(events(outbox[outbox_before.len()..].to_vec()), ["alert.status_changed:open"], "{outbox:?}");

    // An analyst resolves it while the finding stays active; rated critical, it reopens, as a
    // dismissed one does, and routes hear of it as a reopen.
    skywarden::notify::outbox::set_alert_status(&db.pool, &id, AlertStatus::Resolved, None, "analyst", "fixed")
        .await
        .unwrap();
    let outbox_before = outbox_of(&db, &id).await;
    step(8.0, false);
    poll().await;
    assert_eq!(alert().await.status, AlertStatus::Resolved, "the same severity: the analyst's call stands");
    assert_eq!(outbox_of(&db, &id).await, outbox_before, "no route hears of it");
    step(9.5, false);
    poll().await;
    let raised = alert().await;
    assert_eq!((raised.status, raised.severity), (AlertStatus::Open, Severity::Critical), "a rise reopens it");
    let (_, actor, reason) = history_of(&db, &id).await.pop().unwrap();
    assert_eq!(actor, "guardduty");
    assert!(reason.contains("critical") && reason.contains("when resolved"), "{reason}");
    let outbox = outbox_of(&db, &id).await;
    let added = events(outbox[outbox_before.len()..].to_vec());
    assert!(added.contains(&"alert.status_changed:open".to_owned()), "{added:?}");
}

#[tokio::test]
async fn a_security_hub_finding_back_to_new_reopens_its_alert() {
    let db = TestDb::new().await;
    let moto = fake::moto_url().await;
    let ctx = context(&db, fake::settings_for(moto)).await;
    let account = fake::random_account_id();
    onboard(&db, &account, &["us-east-1"], false, true).await;
    let loaded = accounts::load(&db.pool, &account).await.unwrap();
    let owner = AccountSession::assume(&ctx.base, &ctx.settings, &loaded.assume_target()).await.unwrap();
    let worker = Worker::new(ctx, "worker-a", None);
    let poll = || run_until_caught_up(&db, &worker, &account, Source::SecurityHubFindings, "us-east-1");
    let status = || async { alerts_of(&db, &account, "aws-securityhub:").await.pop().unwrap().status };

    let mut finding = asff(&account, "control-1", "Security Hub", Utc::now() - chrono::Duration::minutes(12), "HIGH");
    import_asff(&owner, std::slice::from_ref(&finding)).await;
    poll().await;
    assert_eq!(status().await, AlertStatus::Open);
    finding["Workflow"]["Status"] = json!("RESOLVED");
    finding["UpdatedAt"] = json!(time(Utc::now() - chrono::Duration::minutes(8)));
    import_asff(&owner, std::slice::from_ref(&finding)).await;
    poll().await;
    assert_eq!(status().await, AlertStatus::Resolved, "resolved in Security Hub: closed");
    finding["Workflow"]["Status"] = json!("NOTIFIED");
    finding["UpdatedAt"] = json!(time(Utc::now() - chrono::Duration::minutes(4)));
    import_asff(&owner, std::slice::from_ref(&finding)).await;
    poll().await;
    assert_eq!(status().await, AlertStatus::Open, "workflow back to NOTIFIED, record ACTIVE: reopened");
    let alert = alerts_of(&db, &account, "aws-securityhub:").await.pop().unwrap();
    let (_, actor, reason) = history_of(&db, &alert.id).await.pop().unwrap();
    assert_eq!(actor, "securityhub");
    assert!(reason.contains("active again"), "{reason}");
}

#[tokio::test]
async fn an_older_version_imported_after_a_newer_one_changes_nothing() {
    let db = TestDb::new().await;
    webhook_route(&db, "high").await;
    let account = fake::random_account_id();
    let dir = tempfile::tempdir().unwrap();
    let import = |name: &str, findings: Vec<Value>| {
        let path = dir.path().join(name);
        std::fs::write(&path, json!({"findings": findings}).to_string()).unwrap();
        let pool = db.pool.clone();
        async move { skywarden::pollers::findings::import_files(&pool, &[path]).await.unwrap() }
    };
    let t = |minutes: i64| Utc::now() - chrono::Duration::minutes(minutes);
    // v1 medium and active, v3 archived; then v2 arrives late: rated high and active.
    let v1 = guardduty_finding(&account, "probe-1", t(30), 5.0);
    let mut v3 = guardduty_finding(&account, "probe-1", t(10), 5.0);
    v3["service"]["archived"] = json!(true);
    v3["service"]["count"] = json!(3);
    let mut v2 = guardduty_finding(&account, "probe-1", t(20), 8.0);
    v2["service"]["count"] = json!(2);
    import("v1.json", vec![v1]).await;
    import("v3.json", vec![v3.clone()]).await;
    let late = import("v2.json", vec![v2.clone()]).await;
    assert_eq!((late.folded, late.stale, late.reopened), (0, 1, 0), "{late:?}");
    let alert = alerts_of(&db, &account, "aws-guardduty:").await.pop().unwrap();
    assert_eq!(alert.status, AlertStatus::Resolved, "the newest version is archived");
    assert_eq!(alert.severity, Severity::Medium, "an older rating does not escalate it");
    assert_eq!(alert.details["finding"]["service"]["count"], 3);
    assert_eq!(alert.details["archived"], true);
    assert!(outbox_of(&db, &alert.id).await.is_empty(), "no route hears of an old version");

    // Both versions in one file, the newer first: the newer wins.
    let mut w3 = guardduty_finding(&account, "probe-2", t(10), 5.0);
    w3["service"]["count"] = json!(3);
    let mut w2 = guardduty_finding(&account, "probe-2", t(20), 8.0);
    w2["service"]["count"] = json!(2);
    import("both.json", vec![w3, w2]).await;
    let alerts = alerts_of(&db, &account, "aws-guardduty:").await;
    let two = alerts.iter().find(|a| a.evidence == ["probe-2"]).unwrap();
    assert_eq!((two.severity, two.details["finding"]["service"]["count"].clone()), (Severity::Medium, json!(3)));
}

/// Scrapes `/metrics` (served in-process on the metrics router).
async fn metrics(db: &TestDb) -> String {
    use tower::ServiceExt;
    let request = axum::http::Request::builder().uri("/metrics").body(axum::body::Body::empty()).unwrap();
    let context = skywarden::http::ApiContext::new(db.pool.clone());
    let response = skywarden::http::metrics::router(context).oneshot(request).await.unwrap();
    let bytes = axum::body::to_bytes(response.into_body(), 1 << 24).await.unwrap();
    String::from_utf8_lossy(&bytes).into_owned()
}

#[tokio::test]
async fn a_malformed_finding_is_counted_and_named_and_the_rest_of_its_page_imported() {
    let db = TestDb::new().await;
    let account = fake::random_account_id();
    let (guardduty, ctx) = one_page_a_run(&db, &account).await;
    // Recent: the overlap of the next listing reads it again, and it is counted once.
    let updated = Utc::now() - chrono::Duration::minutes(5);
    guardduty.put_finding(guardduty_finding(&account, "good-1", updated, 5.0));
    let mut bad = guardduty_finding(&account, "bad-1", updated + chrono::Duration::seconds(1), 5.0);
    bad["severity"] = json!("high");
    guardduty.put_finding(bad);
    guardduty.put_finding(guardduty_finding(&account, "good-2", updated + chrono::Duration::seconds(2), 5.0));
    let worker = Worker::new(ctx, "worker-a", None);
    run_until_caught_up(&db, &worker, &account, Source::GuardDutyFindings, "us-east-1").await;
    let listed_before = guardduty.listings().len();
    run_until_caught_up(&db, &worker, &account, Source::GuardDutyFindings, "us-east-1").await;
    assert!(guardduty.listings().len() > listed_before, "polled again");

    let alerts = alerts_of(&db, &account, "aws-guardduty:").await;
    let mut read: Vec<&str> = alerts.iter().map(|a| a.evidence[0].as_str()).collect();
    read.sort();
    assert_eq!(read, ["good-1", "good-2"]);
    let statuses = jobs::statuses(&db.pool, Some(&account)).await.unwrap();
    let state = statuses.iter().find(|s| s.source == "guardduty-findings").unwrap().state.clone().unwrap_or_default();
    assert!(
        state.starts_with("enabled; 1 malformed finding(s) skipped (last: finding bad-1: field `severity`"),
        "the job's state names it: {state}"
    );
    let shown = db.skywarden(&["accounts", "status", &account]);
    let shown = String::from_utf8_lossy(&shown.stdout);
    assert!(shown.contains("1 malformed finding(s) skipped") && shown.contains("bad-1"), "{shown}");
    let scraped = metrics(&db).await;
    let line = format!(
        "skywarden_findings_malformed_total{{account=\"{account}\",region=\"us-east-1\",source=\"guardduty-findings\"}} 1"
    );
    assert!(scraped.contains(&line), "{scraped}");
}

#[tokio::test]
async fn a_run_stopped_at_its_page_cap_says_so_and_the_next_resumes_at_the_cursor() {
    let db = TestDb::new().await;
    let account = fake::random_account_id();
    let (guardduty, ctx) = one_page_a_run(&db, &account).await;
    let base = Utc::now() - chrono::Duration::hours(2);
    for n in 0..120 {
        guardduty.put_finding(guardduty_finding(
            &account,
            &format!("f{n:03}"),
            base + chrono::Duration::seconds(n),
            2.0,
        ));
    }
    let worker = Worker::new(ctx, "worker-a", None);
    let state = || async {
        let statuses = jobs::statuses(&db.pool, Some(&account)).await.unwrap();
        statuses.iter().find(|s| s.source == "guardduty-findings").unwrap().state.clone().unwrap_or_default()
    };
    jobs::run_now(&db.pool, &account, Some(Source::GuardDutyFindings)).await.unwrap();
    worker.run_once().await.unwrap();
    let behind = state().await;
    assert!(behind.contains("run(s) stopped at the page cap with more to read"), "while behind: {behind}");
    run_until_caught_up(&db, &worker, &account, Source::GuardDutyFindings, "us-east-1").await;
    let listings = guardduty.listings();
    let bounds: Vec<i64> = listings.iter().map(|(_, since, _)| since.unwrap()).collect();
    let at = |n: i64| (base + chrono::Duration::seconds(n)).timestamp_millis();
    // Three pages, one a run; a run after them (asked for while one ran) lists from its start.
    assert!(bounds.len() >= 3 && bounds[3..].iter().all(|b| *b > at(119)), "one page a run: {listings:?}");
    // The last id of a page with more to follow is never proven: the cursor stops before it.
    assert_eq!(bounds[1..3], [at(48), at(96)], "each run resumes at the cursor the capped one left");
    assert_eq!(alerts_of(&db, &account, "aws-guardduty:").await.len(), 120);
    let statuses = jobs::statuses(&db.pool, Some(&account)).await.unwrap();
    let job = statuses.iter().find(|s| s.source == "guardduty-findings").unwrap();
    assert_eq!(job.items_total, 120, "nothing read twice");
    let caught_up = job.state.clone().unwrap_or_default();
    assert!(!caught_up.contains("page cap"), "caught up, the state no longer names the cap: {caught_up}");
    let scraped = metrics(&db).await;
    assert!(scraped.contains(&format!("skywarden_findings_capped_runs_total{{account=\"{account}\",region=\"us-east-1\",source=\"guardduty-findings\"}} 2")), "{scraped}");
}

/// A Security Hub finding whose workflow status changes without a new `UpdatedAt`, as
/// `BatchUpdateFindings` (the console's "Set workflow status") does. moto 5.2 has no
/// BatchUpdateFindings; BatchImportFindings of the same finding with the same `UpdatedAt` and
/// another workflow status leaves moto holding what BatchUpdateFindings leaves Security Hub
/// holding. The change is older than the listing's overlap: only the re-check by `Id` sees it.
#[tokio::test]
async fn a_security_hub_workflow_change_without_a_new_updated_at_is_seen_by_the_recheck() {
    let db = TestDb::new().await;
    webhook_route(&db, "medium").await;
    let moto = fake::moto_url().await;
    let ctx = context(&db, fake::settings_for(moto)).await;
    let account = fake::random_account_id();
    onboard(&db, &account, &["us-east-1"], false, true).await;
    let loaded = accounts::load(&db.pool, &account).await.unwrap();
    let owner = AccountSession::assume(&ctx.base, &ctx.settings, &loaded.assume_target()).await.unwrap();
    let worker = Worker::new(ctx, "worker-a", None);
    let poll = || run_until_caught_up(&db, &worker, &account, Source::SecurityHubFindings, "us-east-1");
    let alert = || async { alerts_of(&db, &account, "aws-securityhub:").await.pop().unwrap() };

    let mut finding = asff(&account, "control-9", "Security Hub", Utc::now() - chrono::Duration::minutes(40), "HIGH");
    import_asff(&owner, std::slice::from_ref(&finding)).await;
    poll().await;
    let id = alert().await.id;
    assert_eq!(alert().await.status, AlertStatus::Open);
    poll().await; // the listing's cursor is now past the finding's UpdatedAt, overlap and all

    finding["Workflow"]["Status"] = json!("RESOLVED");
    import_asff(&owner, std::slice::from_ref(&finding)).await;
    poll().await;
    let resolved = alert().await;
    assert_eq!(resolved.status, AlertStatus::Resolved, "resolved at the same UpdatedAt: closed");
    assert_eq!(resolved.details["workflow_status"], "RESOLVED");
    let (_, actor, _) = history_of(&db, &id).await.pop().unwrap();
    assert_eq!(actor, "securityhub");

    finding["Workflow"]["Status"] = json!("NOTIFIED");
    import_asff(&owner, std::slice::from_ref(&finding)).await;
    poll().await;
    assert_eq!(alert().await.status, AlertStatus::Open, "back to NOTIFIED at the same UpdatedAt: reopened");
    let (_, actor, reason) = history_of(&db, &id).await.pop().unwrap();
    assert_eq!(actor, "securityhub");
    assert!(reason.contains("active again"), "{reason}");
    let events: Vec<String> = outbox_of(&db, &id).await.into_iter().map(|(event, ..)| event).collect();
    assert_eq!(events, ["alert.opened"], "closed and reopened by the service within a day: silently");
}

/// A control flapping FAILED → NOT_AVAILABLE → FAILED (AWS Config could not evaluate it for a
/// while) neither closes nor reopens its alert, and no route hears of it.
#[tokio::test]
async fn a_control_not_available_for_a_while_changes_no_alert() {
    let db = TestDb::new().await;
    webhook_route(&db, "medium").await;
    let moto = fake::moto_url().await;
    let ctx = context(&db, fake::settings_for(moto)).await;
    let account = fake::random_account_id();
    onboard(&db, &account, &["us-east-1"], false, true).await;
    let loaded = accounts::load(&db.pool, &account).await.unwrap();
    let owner = AccountSession::assume(&ctx.base, &ctx.settings, &loaded.assume_target()).await.unwrap();
    let worker = Worker::new(ctx, "worker-a", None);
    let poll = || run_until_caught_up(&db, &worker, &account, Source::SecurityHubFindings, "us-east-1");
    let alert = || async { alerts_of(&db, &account, "aws-securityhub:").await.pop().unwrap() };

    let mut finding = asff(&account, "flappy", "Security Hub", Utc::now() - chrono::Duration::minutes(12), "HIGH");
    import_asff(&owner, std::slice::from_ref(&finding)).await;
    poll().await;
    let id = alert().await.id;
    let outbox_before = outbox_of(&db, &id).await;
    finding["Compliance"]["Status"] = json!("NOT_AVAILABLE");
    finding["UpdatedAt"] = json!(time(Utc::now() - chrono::Duration::minutes(8)));
    import_asff(&owner, std::slice::from_ref(&finding)).await;
    poll().await;
    let unknown = alert().await;
    assert_eq!(unknown.status, AlertStatus::Open, "NOT_AVAILABLE is no verdict: the alert stays open");
    assert_eq!(unknown.details["compliance_status"], "NOT_AVAILABLE", "the version is recorded");
    finding["Compliance"]["Status"] = json!("FAILED");
    finding["UpdatedAt"] = json!(time(Utc::now() - chrono::Duration::minutes(4)));
    import_asff(&owner, std::slice::from_ref(&finding)).await;
    poll().await;
    assert_eq!(alert().await.status, AlertStatus::Open);
    assert!(history_of(&db, &id).await.is_empty(), "neither closed nor reopened");
    assert_eq!(outbox_of(&db, &id).await, outbox_before, "no route hears of it");

    // An analyst resolved it while it was failing: NOT_AVAILABLE then FAILED does not reopen it.
    skywarden::notify::outbox::set_alert_status(&db.pool, &id, AlertStatus::Resolved, None, "analyst", "accepted")
        .await
        .unwrap();
    finding["Compliance"]["Status"] = json!("NOT_AVAILABLE");
    finding["UpdatedAt"] = json!(time(Utc::now() - chrono::Duration::minutes(3)));
    import_asff(&owner, std::slice::from_ref(&finding)).await;
    poll().await;
    finding["Compliance"]["Status"] = json!("FAILED");
    finding["UpdatedAt"] = json!(time(Utc::now() - chrono::Duration::minutes(2)));
    import_asff(&owner, std::slice::from_ref(&finding)).await;
    poll().await;
    assert_eq!(alert().await.status, AlertStatus::Resolved, "the analyst's call stands");
}

/// GetFindings answering a finding not asked for (another account's, another region's, an id
/// not listed): dropped, counted in the job's state and /metrics; the asked-for one imported.
#[tokio::test]
async fn guardduty_answers_not_asked_for_are_dropped_and_counted() {
    let db = TestDb::new().await;
    let account = fake::random_account_id();
    let (guardduty, ctx) = one_page_a_run(&db, &account).await;
    let updated = Utc::now() - chrono::Duration::hours(1);
    guardduty.put_finding(guardduty_finding(&account, "mine-1", updated, 5.0));
    let other_account = fake::random_account_id();
    guardduty.answer_extra(guardduty_finding(&other_account, "member-1", updated, 8.0));
    let mut other_region = guardduty_finding(&account, "west-1", updated, 8.0);
    other_region["region"] = json!("us-west-2");
    guardduty.answer_extra(other_region);
    guardduty.answer_extra(guardduty_finding(&account, "unlisted-1", updated, 8.0));
    let worker = Worker::new(ctx, "worker-a", None);
    run_until_caught_up(&db, &worker, &account, Source::GuardDutyFindings, "us-east-1").await;

    let alerts = alerts_of(&db, &account, "aws-guardduty:").await;
    let read: Vec<&str> = alerts.iter().map(|a| a.evidence[0].as_str()).collect();
    assert_eq!(read, ["mine-1"]);
    assert!(alerts_of(&db, &other_account, "aws-guardduty:").await.is_empty(), "no alert on the member");
    let statuses = jobs::statuses(&db.pool, Some(&account)).await.unwrap();
    let state = statuses.iter().find(|s| s.source == "guardduty-findings").unwrap().state.clone().unwrap_or_default();
    assert!(state.contains("3 finding(s) of another account, region or id dropped"), "{state}");
    let scraped = metrics(&db).await;
    let line = format!(
        "skywarden_findings_rejected_total{{account=\"{account}\",region=\"us-east-1\",source=\"guardduty-findings\"}} 3"
    );
    assert!(scraped.contains(&line), "{scraped}");
}

/// The listing's time is GuardDuty's, from ListFindings' `Date` header: with GuardDuty's clock
/// an hour behind ours, the next listing starts an hour (plus the overlap) before ours would.
#[tokio::test]
async fn the_listing_time_is_taken_from_guardduty_s_date_header() {
    let db = TestDb::new().await;
    let account = fake::random_account_id();
    let (guardduty, ctx) = one_page_a_run(&db, &account).await;
    guardduty.clock_offset(-chrono::Duration::hours(1));
    guardduty.put_finding(guardduty_finding(&account, "early-1", Utc::now() - chrono::Duration::hours(3), 5.0));
    let worker = Worker::new(ctx, "worker-a", None);
    let before = Utc::now();
    run_until_caught_up(&db, &worker, &account, Source::GuardDutyFindings, "us-east-1").await;
    run_until_caught_up(&db, &worker, &account, Source::GuardDutyFindings, "us-east-1").await;
    let listings = guardduty.listings();
    let second = listings.get(1).and_then(|(_, since, _)| *since).expect("a second listing");
    let expected = (before - chrono::Duration::hours(1) - chrono::Duration::minutes(15)).timestamp_millis();
    assert!((second - expected).abs() < 10_000, "from GuardDuty's time less the overlap: {second} vs {expected}");
}

/// Waits until a backend of this test's database waits for a lock (the other side of a race
/// is blocked), failing after ten seconds.
async fn until_one_waits_for_a_lock(db: &TestDb) {
    for _ in 0..400 {
        let waiting: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND wait_event_type = 'Lock'",
        )
        .fetch_one(&db.pool)
        .await
        .unwrap();
        if waiting > 0 {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(25)).await;
    }
    panic!("the other side of the race never waited for the alert's row lock");
}

#[tokio::test]
async fn an_analyst_s_status_change_racing_the_import_of_a_newer_version_loses_neither() {
    use skywarden::ingest::findings::from_guardduty;
    use skywarden::pollers::findings::fold_findings;
    let db = TestDb::new().await;
    let account = fake::random_account_id();
    let t = |minutes: i64| Utc::now() - chrono::Duration::minutes(minutes);
    let version = |minutes: i64, severity: f64, count: u64| {
        let mut finding = guardduty_finding(&account, "race-1", t(minutes), severity);
        finding["service"]["count"] = json!(count);
        from_guardduty(&finding).unwrap()
    };
    let mut tx = db.pool.begin().await.unwrap();
    fold_findings(&mut tx, &[version(30, 5.0, 1)]).await.unwrap();
    tx.commit().await.unwrap();
    let alert = alerts_of(&db, &account, "aws-guardduty:").await.pop().unwrap();
    assert_eq!((alert.status, alert.severity), (AlertStatus::Open, Severity::Medium));

    // 1. The import of a newer version at the same rating holds its transaction open (folded,
    // not committed) while an analyst resolves the alert through the path the dashboard uses:
    // the analyst waits for it, then resolves. The rule: an update that stayed active at the
    // same severity never reopens the analyst's resolved alert; the update itself is kept.
    let mut import = db.pool.begin().await.unwrap();
    fold_findings(&mut import, &[version(20, 5.0, 2)]).await.unwrap();
    let (pool, id) = (db.pool.clone(), alert.id.clone());
    let analyst = tokio::spawn(async move {
        skywarden::notify::outbox::set_alert_status(
            &pool,
            &id,
            AlertStatus::Resolved,
            None,
            "user:alice",
            "a benign scanner",
        )
        .await
    });
    until_one_waits_for_a_lock(&db).await;
    assert!(!analyst.is_finished(), "the analyst's change waits for the import's");
    import.commit().await.unwrap();
    assert_eq!(analyst.await.unwrap().unwrap(), AlertStatus::Open);
    let after = alerts_of(&db, &account, "aws-guardduty:").await.pop().unwrap();
    assert_eq!(after.status, AlertStatus::Resolved, "the analyst's change is not lost");
    assert_eq!(after.details["finding"]["service"]["count"], 2, "nor the newer version");
    // The same version read again (a later poll) leaves the analyst's resolve alone.
    let mut again = db.pool.begin().await.unwrap();
    fold_findings(&mut again, &[version(20, 5.0, 2)]).await.unwrap();
    again.commit().await.unwrap();
    assert_eq!(alerts_of(&db, &account, "aws-guardduty:").await.pop().unwrap().status, AlertStatus::Resolved);

    // 2. The other way round: the analyst's dismissal holds its transaction open while a version
    // rated higher is imported. The import waits, then sees the dismissal, and the rule for a
    // rise in severity applies to it: the alert reopens, rated high, with the reason.
    let mut analyst = db.pool.begin().await.unwrap();
    skywarden::alerts::store::set_status_in(
        &mut analyst,
        &alert.id,
        AlertStatus::Dismissed,
        None,
        "user:alice",
        "noise",
    )
    .await
    .unwrap();
    let pool = db.pool.clone();
    let higher = version(10, 8.0, 3);
    let import = tokio::spawn(async move {
        let mut tx = pool.begin().await.unwrap();
        let folded = fold_findings(&mut tx, &[higher]).await.unwrap();
        tx.commit().await.unwrap();
        folded
    });
    until_one_waits_for_a_lock(&db).await;
    assert!(!import.is_finished(), "the import waits for the analyst's change");
    analyst.commit().await.unwrap();
    let folded = import.await.unwrap();
    assert_eq!((folded.folded, folded.reopened), (1, 1), "{folded:?}");
    let last = alerts_of(&db, &account, "aws-guardduty:").await.pop().unwrap();
    assert_eq!((last.status, last.severity), (AlertStatus::Open, Severity::High));
    assert_eq!(last.details["finding"]["service"]["count"], 3);
    let history = history_of(&db, &alert.id).await;
    let statuses: Vec<&str> = history.iter().map(|(status, ..)| status.as_str()).collect();
    assert_eq!(statuses[statuses.len() - 3..], ["resolved", "dismissed", "open"], "{history:?}");
    assert!(history.last().unwrap().2.contains("now rates finding race-1 high"), "{history:?}");
}
