//! GuardDuty and Security Hub findings imported as alerts, end to end through the real SDK
//! clients and the job workers: Security Hub against moto (GetFindings, BatchImportFindings) and
//! against a protocol-faithful fake that honours filters, sort and page tokens and serves
//! BatchUpdateFindings (moto ignores the first and lacks the last; support/securityhub.rs),
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
use crate::support::securityhub::FakeSecurityHub;

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

/// A poll context against moto but for `service`, whose calls go to the fake at `url`.
async fn context_with_fake(db: &TestDb, service: Service, url: &str) -> PollContext {
    let mut settings = fake::settings_for(fake::moto_url().await);
    settings.service_endpoints.insert(service, url.to_owned());
    context(db, settings).await
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
    let guardduty = FakeGuardDuty::start().await;
    let ctx = context_with_fake(&db, Service::GuardDuty, &guardduty.url).await;
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
    let guardduty = FakeGuardDuty::start().await;
    let ctx = context_with_fake(&db, Service::GuardDuty, &guardduty.url).await;
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

/// An ASFF finding as a product sends it to BatchImportFindings; GuardDuty's with GuardDuty's
/// product ARN.
fn asff(account: &str, id: &str, product: &str, updated: DateTime<Utc>, label: &str) -> Value {
    let product_arn = if product.contains("GuardDuty") { "guardduty" } else { "securityhub" };
    json!({
        "SchemaVersion": "2018-10-08",
        "Id": format!("arn:aws:securityhub:us-east-1:{account}:finding/{id}"),
        "ProductArn": format!("arn:aws:securityhub:us-east-1::product/aws/{product_arn}"),
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
    let guardduty = FakeGuardDuty::start().await;
    let ctx = context_with_fake(&db, Service::GuardDuty, &guardduty.url).await;
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
    let guardduty = FakeGuardDuty::start().await;
    let mut ctx = context_with_fake(db, Service::GuardDuty, &guardduty.url).await;
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

/// Findings f000 to f119 of `account`, low, updated one a second from `base`.
fn put_120_findings(guardduty: &FakeGuardDuty, account: &str, base: DateTime<Utc>) {
    for n in 0..120 {
        guardduty.put_finding(guardduty_finding(
            account,
            &format!("f{n:03}"),
            base + chrono::Duration::seconds(n),
            2.0,
        ));
    }
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
    let db = TestDb::new().await;
    // Routes hear of alerts that reach high: an escalation of this one would be their news.
    webhook_route(&db, "high").await;
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
    put_120_findings(&guardduty, &account, base);
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

/// An account importing Security Hub findings in us-east-1 from moto, a session as its owner
/// to import findings with, and a worker polling it.
struct HubOnMoto {
    account: String,
    owner: AccountSession,
    worker: Worker,
}

impl HubOnMoto {
    async fn start(db: &TestDb) -> Self {
        let moto = fake::moto_url().await;
        let ctx = context(db, fake::settings_for(moto)).await;
        let account = fake::random_account_id();
        onboard(db, &account, &["us-east-1"], false, true).await;
        let loaded = accounts::load(&db.pool, &account).await.unwrap();
        let owner = AccountSession::assume(&ctx.base, &ctx.settings, &loaded.assume_target()).await.unwrap();
        Self { account, owner, worker: Worker::new(ctx, "worker-a", None) }
    }

    /// Runs the Security Hub job until it has caught up.
    async fn poll(&self, db: &TestDb) {
        run_until_caught_up(db, &self.worker, &self.account, Source::SecurityHubFindings, "us-east-1").await;
    }

    /// Imports `finding` into moto (BatchImportFindings), then polls.
    async fn import_and_poll(&self, db: &TestDb, finding: &Value) {
        import_asff(&self.owner, std::slice::from_ref(finding)).await;
        self.poll(db).await;
    }

    /// The account's newest Security Hub alert.
    async fn alert(&self, db: &TestDb) -> AlertView {
        alerts_of(db, &self.account, "aws-securityhub:").await.pop().unwrap()
    }
}

#[tokio::test]
async fn a_security_hub_finding_back_to_new_reopens_its_alert() {
    let db = TestDb::new().await;
    let hub = HubOnMoto::start(&db).await;
    let status = || async { hub.alert(&db).await.status };

    let mut finding =
        asff(&hub.account, "control-1", "Security Hub", Utc::now() - chrono::Duration::minutes(12), "HIGH");
    hub.import_and_poll(&db, &finding).await;
    assert_eq!(status().await, AlertStatus::Open);
    finding["Workflow"]["Status"] = json!("RESOLVED");
    finding["UpdatedAt"] = json!(time(Utc::now() - chrono::Duration::minutes(8)));
    hub.import_and_poll(&db, &finding).await;
    assert_eq!(status().await, AlertStatus::Resolved, "resolved in Security Hub: closed");
    finding["Workflow"]["Status"] = json!("NOTIFIED");
    finding["UpdatedAt"] = json!(time(Utc::now() - chrono::Duration::minutes(4)));
    hub.import_and_poll(&db, &finding).await;
    assert_eq!(status().await, AlertStatus::Open, "workflow back to NOTIFIED, record ACTIVE: reopened");
    let alert = hub.alert(&db).await;
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
    put_120_findings(&guardduty, &account, base);
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
    let hub = HubOnMoto::start(&db).await;
    let alert = || hub.alert(&db);

    let mut finding =
        asff(&hub.account, "control-9", "Security Hub", Utc::now() - chrono::Duration::minutes(40), "HIGH");
    hub.import_and_poll(&db, &finding).await;
    let id = alert().await.id;
    assert_eq!(alert().await.status, AlertStatus::Open);
    hub.poll(&db).await; // the listing's cursor is now past the finding's UpdatedAt, overlap and all

    finding["Workflow"]["Status"] = json!("RESOLVED");
    hub.import_and_poll(&db, &finding).await;
    let resolved = alert().await;
    assert_eq!(resolved.status, AlertStatus::Resolved, "resolved at the same UpdatedAt: closed");
    assert_eq!(resolved.details["workflow_status"], "RESOLVED");
    let (_, actor, _) = history_of(&db, &id).await.pop().unwrap();
    assert_eq!(actor, "securityhub");

    finding["Workflow"]["Status"] = json!("NOTIFIED");
    hub.import_and_poll(&db, &finding).await;
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
    let hub = HubOnMoto::start(&db).await;
    let alert = || hub.alert(&db);

    let mut finding = asff(&hub.account, "flappy", "Security Hub", Utc::now() - chrono::Duration::minutes(12), "HIGH");
    hub.import_and_poll(&db, &finding).await;
    let id = alert().await.id;
    let outbox_before = outbox_of(&db, &id).await;
    finding["Compliance"]["Status"] = json!("NOT_AVAILABLE");
    finding["UpdatedAt"] = json!(time(Utc::now() - chrono::Duration::minutes(8)));
    hub.import_and_poll(&db, &finding).await;
    let unknown = alert().await;
    assert_eq!(unknown.status, AlertStatus::Open, "NOT_AVAILABLE is no verdict: the alert stays open");
    assert_eq!(unknown.details["compliance_status"], "NOT_AVAILABLE", "the version is recorded");
    finding["Compliance"]["Status"] = json!("FAILED");
    finding["UpdatedAt"] = json!(time(Utc::now() - chrono::Duration::minutes(4)));
    hub.import_and_poll(&db, &finding).await;
    assert_eq!(alert().await.status, AlertStatus::Open);
    assert!(history_of(&db, &id).await.is_empty(), "neither closed nor reopened");
    assert_eq!(outbox_of(&db, &id).await, outbox_before, "no route hears of it");

    // An analyst resolved it while it was failing: NOT_AVAILABLE then FAILED does not reopen it.
    skywarden::notify::outbox::set_alert_status(&db.pool, &id, AlertStatus::Resolved, None, "analyst", "accepted")
        .await
        .unwrap();
    finding["Compliance"]["Status"] = json!("NOT_AVAILABLE");
    finding["UpdatedAt"] = json!(time(Utc::now() - chrono::Duration::minutes(3)));
    hub.import_and_poll(&db, &finding).await;
    finding["Compliance"]["Status"] = json!("FAILED");
    finding["UpdatedAt"] = json!(time(Utc::now() - chrono::Duration::minutes(2)));
    hub.import_and_poll(&db, &finding).await;
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

/// Waits until the other side of a race waits for the alert's row lock (10 s at most).
async fn until_one_waits_for_a_lock(db: &TestDb) {
    db.until_a_statement_waits_for_a_lock("the other side of the race never waited for the alert's row lock").await;
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
    let mut tx = skywarden::db::begin(&db.pool).await.unwrap();
    fold_findings(&mut tx, &[version(30, 5.0, 1)]).await.unwrap();
    tx.commit().await.unwrap();
    let alert = alerts_of(&db, &account, "aws-guardduty:").await.pop().unwrap();
    assert_eq!((alert.status, alert.severity), (AlertStatus::Open, Severity::Medium));

    // 1. The import of a newer version at the same rating holds its transaction open (folded,
    // not committed) while an analyst resolves the alert through the path the dashboard uses:
    // the analyst waits for it, then resolves. The rule: an update that stayed active at the
    // same severity never reopens the analyst's resolved alert; the update itself is kept.
    let mut import = skywarden::db::begin(&db.pool).await.unwrap();
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
    let mut again = skywarden::db::begin(&db.pool).await.unwrap();
    fold_findings(&mut again, &[version(20, 5.0, 2)]).await.unwrap();
    again.commit().await.unwrap();
    assert_eq!(alerts_of(&db, &account, "aws-guardduty:").await.pop().unwrap().status, AlertStatus::Resolved);

    // 2. The other way round: the analyst's dismissal holds its transaction open while a version
    // rated higher is imported. The import waits, then sees the dismissal, and the rule for a
    // rise in severity applies to it: the alert reopens, rated high, with the reason.
    let mut analyst = skywarden::db::begin(&db.pool).await.unwrap();
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
        let mut tx = skywarden::db::begin(&pool).await.unwrap();
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

// Security Hub against the protocol-faithful fake (support/securityhub.rs): its filters, sort,
// page tokens and refusals are Security Hub's, so the listing's window is really tested.

/// A Security Hub poller for `account` in us-east-1 against the fake; with `guardduty` the account
/// imports GuardDuty too (the Security Hub job leaves out GuardDuty's findings), its GuardDuty job
/// off. Returns the fake, the worker's context and a session as the account's owner.
async fn hub_poller(db: &TestDb, account: &str, guardduty: bool) -> (FakeSecurityHub, PollContext, AccountSession) {
    let hub = FakeSecurityHub::start().await;
    let ctx = context_with_fake(db, Service::SecurityHub, &hub.url).await;
    onboard(db, account, &["us-east-1"], guardduty, true).await;
    sqlx::query("UPDATE poll_jobs SET enabled = false WHERE account_id = $1 AND source = 'guardduty-findings'")
        .bind(account)
        .execute(&db.pool)
        .await
        .unwrap();
    let loaded = accounts::load(&db.pool, account).await.unwrap();
    let owner = AccountSession::assume(&ctx.base, &ctx.settings, &loaded.assume_target()).await.unwrap();
    (hub, ctx, owner)
}

fn hub_id(account: &str, id: &str) -> String {
    format!("arn:aws:securityhub:us-east-1:{account}:finding/{id}")
}

/// The listing's calls (not the re-check's, which filter by `Id`).
fn listing_calls(hub: &FakeSecurityHub) -> Vec<crate::support::securityhub::HubCall> {
    hub.get_findings_calls().into_iter().filter(|c| c.values("Id").is_empty()).collect()
}

async fn hub_job(db: &TestDb, account: &str) -> skywarden::pollers::jobs::JobStatus {
    let statuses = jobs::statuses(&db.pool, Some(account)).await.unwrap();
    statuses.into_iter().find(|s| s.source == "securityhub-findings").unwrap()
}

async fn hub_cursor_ms(db: &TestDb, account: &str) -> Option<i64> {
    sqlx::query_scalar(
        "SELECT (checkpoint->>'from_ms')::bigint FROM poll_jobs WHERE account_id = $1 AND source = 'securityhub-findings'",
    )
    .bind(account)
    .fetch_one(&db.pool)
    .await
    .unwrap()
}

#[tokio::test]
async fn security_hub_findings_at_a_window_s_edge_or_indexed_late_are_each_imported_once() {
    let db = TestDb::new().await;
    let account = fake::random_account_id();
    let (hub, ctx, _) = hub_poller(&db, &account, false).await;
    let worker = Worker::new(ctx, "worker-a", None);
    let poll = || run_until_caught_up(&db, &worker, &account, Source::SecurityHubFindings, "us-east-1");
    let minutes = chrono::Duration::minutes;
    let before_first = Utc::now();
    hub.put_finding(asff(&account, "early", "Security Hub", before_first - minutes(120), "MEDIUM"));
    hub.put_finding(asff(&account, "later", "Security Hub", before_first - minutes(90), "MEDIUM"));
    poll().await;
    assert_eq!(alerts_of(&db, &account, "aws-securityhub:").await.len(), 2);
    let first = listing_calls(&hub);
    assert_eq!(first.len(), 1, "{first:?}");
    let asked = &first[0];
    let lookback = asked.updated_since().unwrap();
    assert!((before_first - chrono::Duration::days(90) - lookback).num_seconds().abs() < 60, "{lookback}");
    assert_eq!(asked.body["Filters"]["UpdatedAt"][0]["End"], "2999-12-31T23:59:59.999Z");
    assert_eq!(asked.values("AwsAccountId"), std::slice::from_ref(&account));
    assert_eq!(asked.values("Region"), ["us-east-1"]);
    assert!(asked.body["Filters"].get("ProductArn").is_none(), "GuardDuty not imported: its findings are kept");
    let sort = json!([{"Field": "UpdatedAt", "SortOrder": "asc"}, {"Field": "Id", "SortOrder": "asc"}]);
    assert_eq!(asked.body["SortCriteria"], sort);
    assert_eq!(asked.body["MaxResults"], 100);

    // The next listing starts where this one began, less Security Hub's one-hour overlap.
    let edge = DateTime::from_timestamp_millis(hub_cursor_ms(&db, &account).await.unwrap()).unwrap();
    assert!(edge >= before_first - minutes(61) && edge <= Utc::now() - minutes(60), "{edge}");
    // Updated exactly at the window's edge; updated before the last listing began but indexed
    // only after it (within the overlap); and an update of a finding already imported.
    hub.put_finding(asff(&account, "at-the-edge", "Security Hub", edge, "HIGH"));
    hub.put_finding(asff(&account, "indexed-late", "Security Hub", before_first - minutes(5), "LOW"));
    hub.put_finding(asff(&account, "early", "Security Hub", Utc::now(), "CRITICAL"));
    poll().await;
    let second = listing_calls(&hub);
    assert_eq!(second.len(), 2, "{second:?}");
    let millisecond = chrono::Duration::milliseconds(1);
    assert_eq!(
        second[1].updated_since(),
        Some(edge - millisecond),
        "from 1 ms before the cursor: Start may be exclusive"
    );
    assert_eq!(second[1].ids.len(), 3, "the fake honours the window: {:?}", second[1].ids);
    let alerts = alerts_of(&db, &account, "aws-securityhub:").await;
    assert_eq!(alerts.len(), 4);
    for id in ["early", "later", "at-the-edge", "indexed-late"] {
        let alert = alerts.iter().find(|a| a.evidence == [hub_id(&account, id)]);
        assert!(alert.is_some_and(|a| a.event_count == 1), "{id}: {alerts:?}");
    }
    let early = alerts.iter().find(|a| a.evidence == [hub_id(&account, "early")]).unwrap();
    assert_eq!(early.severity, Severity::Critical, "the update changed the alert");
    assert_eq!(hub_job(&db, &account).await.items_total, 5, "two, then three: each imported once");

    // Nothing new: the overlap reads the newest again, changing nothing.
    poll().await;
    let again = alerts_of(&db, &account, "aws-securityhub:").await;
    assert_eq!(again.len(), 4);
    let early = again.iter().find(|a| a.evidence == [hub_id(&account, "early")]).unwrap();
    assert_eq!((early.severity, early.event_count), (Severity::Critical, 1));
}

#[tokio::test]
async fn security_hub_paging_through_more_than_a_page_loses_none() {
    let hub = page_through_250_security_hub_findings(None, |_, _, _| ()).await;
    assert!(hub.iter().all(|c| c.answer.is_ok()), "{hub:?}");
}

/// One page a run: the token through the findings at one instant is saved with the checkpoint
/// and sent, with the request that gave it, by the next run.
#[tokio::test]
async fn security_hub_paging_one_page_a_run_resumes_with_the_saved_token_and_loses_none() {
    page_through_250_security_hub_findings(Some(1), |_, _, _| ()).await;
}

/// The findings at one instant are walked by an offset-like page token. Findings of that instant
/// updated between runs 2 and 3 and between runs 3 and 4 (one page a run: inside the walk) leave
/// it, and the pages after skip one each: the walk is repeated until two agree, none lost.
#[tokio::test]
async fn security_hub_findings_of_one_instant_updated_while_walked_skip_no_other() {
    let calls = page_through_250_security_hub_findings(Some(1), |run, hub, account| {
        let id = match run {
            2 => "f100",
            3 => "f120",
            _ => return,
        };
        hub.put_finding(asff(account, id, "Security Hub", Utc::now() - chrono::Duration::minutes(1), "HIGH"));
    })
    .await;
    let walks = calls.iter().filter(|c| c.body["Filters"]["UpdatedAt"][0]["End"] != "2999-12-31T23:59:59.999Z");
    assert!(walks.count() >= 6, "three walks of two pages at least: {calls:?}");
}

/// Security Hub documents no order for findings with the same sort keys: the fake reorders
/// them per request; the listing breaks ties by `Id` and loses none.
#[tokio::test]
async fn security_hub_ties_in_any_order_lose_no_finding() {
    page_through_250_security_hub_findings(Some(1), |run, hub, _| {
        if run == 0 {
            hub.shuffle_ties(Some(7));
        }
    })
    .await;
}

/// An expired token in the middle of a walk (between runs 3 and 4) restarts the walk, and says so.
#[tokio::test]
async fn security_hub_expired_token_restarts_the_walk_and_loses_none() {
    let db_check = page_through_250_security_hub_findings(Some(1), |run, hub, _| {
        if run == 3 {
            hub.expire_tokens();
        }
    })
    .await;
    let refused = db_check.iter().filter(|c| c.answer.as_ref().err().is_some_and(|e| e == "InvalidInputException"));
    assert_eq!(refused.count(), 1, "the expired token, refused once: {db_check:?}");
}

/// Pages through 250 Security Hub findings (130 at one instant), with `between(run, fake, account)`
/// called at the start of each run of the job; asserts each imported once, and returns the calls.
async fn page_through_250_security_hub_findings(
    max_pages_per_run: Option<usize>,
    between: impl Fn(usize, &FakeSecurityHub, &str) + Send + Sync + 'static,
) -> Vec<crate::support::securityhub::HubCall> {
    let db = TestDb::new().await;
    let account = fake::random_account_id();
    // GuardDuty imported too: the listing asks Security Hub to leave GuardDuty's findings out.
    let (hub, mut ctx, _) = hub_poller(&db, &account, true).await;
    if let Some(pages) = max_pages_per_run {
        ctx.options.max_pages_per_run = pages;
    }
    // To the millisecond, as the findings carry it.
    let base = DateTime::from_timestamp_millis((Utc::now() - chrono::Duration::hours(2)).timestamp_millis()).unwrap();
    let seconds = chrono::Duration::seconds;
    // 90 findings at their own instants, 130 at one instant (more than a page: only a page
    // token walks through them), then 30 more; the first page ends inside the 130.
    for n in 0..250i64 {
        let at = match n {
            0..90 => base + seconds(n),
            90..220 => base + seconds(100),
            _ => base + seconds(n),
        };
        hub.put_finding(asff(&account, &format!("f{n:03}"), "Security Hub", at, "MEDIUM"));
    }
    // What the filters leave out: GuardDuty's copies, another account's, another region's.
    // Left out by GuardDuty's product ARN, whatever name it shows.
    hub.put_finding(asff(&account, "relayed", "Amazon GuardDuty", base + seconds(100), "HIGH"));
    hub.put_finding(asff(&fake::random_account_id(), "theirs", "Security Hub", base + seconds(100), "HIGH"));
    let mut elsewhere = asff(&account, "elsewhere", "Security Hub", base + seconds(100), "HIGH");
    elsewhere["Region"] = json!("eu-west-1");
    hub.put_finding(elsewhere);

    let runs = std::sync::atomic::AtomicUsize::new(0);
    let (fake_hub, hook_account) = (hub.clone(), account.clone());
    let worker = Worker::new(ctx, "worker-a", None).with_job_hook(move |_| {
        between(runs.fetch_add(1, std::sync::atomic::Ordering::SeqCst), &fake_hub, &hook_account)
    });
    let runs = run_until_caught_up(&db, &worker, &account, Source::SecurityHubFindings, "us-east-1").await;
    assert_eq!(runs, 1, "a run with more pending runs again at once");
    let alerts = alerts_of(&db, &account, "aws-securityhub:").await;
    let missing: Vec<String> = (0..250)
        .map(|n| hub_id(&account, &format!("f{n:03}")))
        .filter(|id| !alerts.iter().any(|a| a.evidence == [id.clone()]))
        .collect();
    assert!(missing.is_empty(), "findings never read: {missing:?}");
    assert_eq!(alerts.len(), 250);
    let updated: Vec<&AlertView> = alerts.iter().filter(|a| a.severity == Severity::High).collect();
    let calls = hub.get_findings_calls();
    if !updated.is_empty() {
        return calls; // an update is read again at its new time
    }
    assert_eq!(hub_job(&db, &account).await.items_total, 250, "none read twice");

    let listings = listing_calls(&hub);
    assert!(listings.iter().all(|c| c.body["MaxResults"] == 100), "{listings:?}");
    assert_eq!(listings[0].ids.len(), 100);
    assert_eq!(listings[0].ids[99], hub_id(&account, "f099"), "the first page ends inside the 130");
    let millisecond = chrono::Duration::milliseconds(1);
    assert_eq!(listings[1].updated_since(), Some(base + seconds(100) - millisecond), "the next starts at the cursor");
    let walked = listings.iter().position(|c| c.token().is_some());
    let walked = walked.expect("the 130 at one instant are walked by token");
    assert_eq!(listings[walked].token(), listings[walked - 1].next_token.as_deref(), "the token just given");
    assert_eq!(listings[walked].updated_since(), listings[walked - 1].updated_since(), "with the same request");
    assert!(listings.iter().all(|c| c.region == "us-east-1"));
    let product = &listings[0].body["Filters"]["ProductArn"];
    let guardduty = "arn:aws:securityhub:us-east-1::product/aws/guardduty";
    assert_eq!(*product, json!([{"Value": guardduty, "Comparison": "PREFIX_NOT_EQUALS"}]));
    let answered: Vec<&String> = listings.iter().flat_map(|c| &c.ids).collect();
    for other in ["relayed", "theirs", "elsewhere"] {
        assert!(!answered.iter().any(|id| id.ends_with(&format!("finding/{other}"))), "{other} was asked for");
    }
    // The re-check by Id asks for at most 20 ids a call (Security Hub's limit for one field).
    let rechecks: Vec<_> = hub.get_findings_calls().into_iter().filter(|c| !c.values("Id").is_empty()).collect();
    assert_eq!(rechecks.len(), 5, "100 alerts re-checked a run, 20 a call");
    assert!(rechecks.iter().all(|c| c.values("Id").len() == 20 && c.answer == Ok(20)), "{rechecks:?}");
    assert!(rechecks.iter().all(|c| c.values("ProductArn") == [guardduty]), "the re-check leaves GuardDuty's out too");
    calls
}

#[tokio::test]
async fn the_fake_security_hub_refuses_what_security_hub_refuses_and_the_job_says_so() {
    let db = TestDb::new().await;
    let account = fake::random_account_id();
    let (hub, ctx, owner) = hub_poller(&db, &account, false).await;
    let updated = Utc::now() - chrono::Duration::hours(1);
    for n in 0..25 {
        hub.put_finding(asff(&account, &format!("c{n:02}"), "Security Hub", updated, "MEDIUM"));
    }

    // Requests Security Hub refuses, refused the same way (on a thread with room for the SDK's
    // deserializers of ASFF, as the poller has).
    let client = owner.securityhub("us-east-1");
    let owner_account = account.clone();
    // The test's runtime serves the fake meanwhile: the thread is awaited, not joined on it.
    let checked = tokio::task::spawn_blocking(move || {
        std::thread::Builder::new()
            .stack_size(64 << 20)
            .spawn(move || {
                let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
                runtime.block_on(refused_as_security_hub_refuses(client, owner_account, updated));
            })
            .unwrap()
            .join()
    });
    checked.await.unwrap().expect("the fake refuses what Security Hub refuses");

    // What the poller asks is accepted.
    let worker = Worker::new(ctx, "worker-a", None);
    run_until_caught_up(&db, &worker, &account, Source::SecurityHubFindings, "us-east-1").await;
    assert_eq!(alerts_of(&db, &account, "aws-securityhub:").await.len(), 25);

    // The re-check's 20 ids refused (a lower limit, as a regression sending more would be): the
    // run fails visibly, in its report and the job's status.
    hub.limit_values_per_field(Some(10));
    jobs::run_now(&db.pool, &account, Some(Source::SecurityHubFindings)).await.unwrap();
    let reports = worker.run_once().await.unwrap();
    let error = report(&reports, &account, Source::SecurityHubFindings, "us-east-1").error.clone().unwrap_or_default();
    assert!(error.contains("securityhub:GetFindings") && error.contains("InvalidInputException"), "{error}");
    let job = hub_job(&db, &account).await;
    assert!(job.last_error.as_deref().unwrap_or_default().contains("InvalidInputException"), "{job:?}");
    assert_eq!(job.consecutive_failures, 1);

    // A refused listing: nothing folded, the cursor where it was, the error in the status.
    hub.limit_values_per_field(None);
    hub.refuse_listings(Some(("InvalidInputException", "Invalid UpdatedAt filter")));
    hub.put_finding(asff(&account, "new-one", "Security Hub", Utc::now(), "HIGH"));
    let cursor = hub_cursor_ms(&db, &account).await;
    jobs::run_now(&db.pool, &account, Some(Source::SecurityHubFindings)).await.unwrap();
    let reports = worker.run_once().await.unwrap();
    let error = report(&reports, &account, Source::SecurityHubFindings, "us-east-1").error.clone().unwrap_or_default();
    assert!(error.contains("Invalid UpdatedAt filter"), "{error}");
    let job = hub_job(&db, &account).await;
    assert_eq!(job.consecutive_failures, 2);
    assert!(job.last_error.as_deref().unwrap_or_default().contains("Invalid UpdatedAt filter"), "{job:?}");
    assert_eq!(hub_cursor_ms(&db, &account).await, cursor);
    assert_eq!(alerts_of(&db, &account, "aws-securityhub:").await.len(), 25);

    hub.refuse_listings(None);
    run_until_caught_up(&db, &worker, &account, Source::SecurityHubFindings, "us-east-1").await;
    assert_eq!(alerts_of(&db, &account, "aws-securityhub:").await.len(), 26);
    let job = hub_job(&db, &account).await;
    assert_eq!(job.consecutive_failures, 0, "{job:?}");
}

/// Archived and resolved findings as the code treats them today: none raises an alert; a
/// customer's BatchUpdateFindings (the console's workflow status, `UpdatedAt` unchanged) closes
/// and reopens through the re-check by `Id`; a provider archiving a finding (a new `UpdatedAt`)
/// closes its alert through the listing.
#[tokio::test]
async fn security_hub_archived_and_resolved_findings_close_their_alerts_and_raise_none() {
    use aws_sdk_securityhub::types::{AwsSecurityFindingIdentifier, WorkflowStatus, WorkflowUpdate};
    let db = TestDb::new().await;
    let account = fake::random_account_id();
    let (hub, ctx, owner) = hub_poller(&db, &account, false).await;
    let worker = Worker::new(ctx, "worker-a", None);
    let poll = || run_until_caught_up(&db, &worker, &account, Source::SecurityHubFindings, "us-east-1");
    let alert = |id: &'static str| {
        let db = &db;
        let account = &account;
        async move {
            let alerts = alerts_of(db, account, "aws-securityhub:").await;
            alerts.into_iter().find(|a| a.evidence == [hub_id(account, id)])
        }
    };
    let old = Utc::now() - chrono::Duration::minutes(40);
    hub.put_finding(asff(&account, "open-1", "Security Hub", old, "HIGH"));
    hub.put_finding(asff(&account, "open-2", "Security Hub", old, "HIGH"));
    let mut archived = asff(&account, "archived", "Security Hub", old, "HIGH");
    archived["RecordState"] = json!("ARCHIVED");
    let mut resolved = asff(&account, "resolved", "Security Hub", old, "HIGH");
    resolved["Workflow"]["Status"] = json!("RESOLVED");
    let mut suppressed = asff(&account, "suppressed", "Security Hub", old, "HIGH");
    suppressed["Workflow"]["Status"] = json!("SUPPRESSED");
    for finding in [archived, resolved, suppressed] {
        hub.put_finding(finding);
    }
    poll().await;
    assert_eq!(alerts_of(&db, &account, "aws-securityhub:").await.len(), 2, "archived, resolved, suppressed: none");
    poll().await; // the cursor is now past the findings' UpdatedAt, overlap and all

    // The analyst resolves open-1 in the console: BatchUpdateFindings, UpdatedAt unchanged.
    let client = owner.securityhub("us-east-1");
    let identifier = |id: &str| {
        AwsSecurityFindingIdentifier::builder()
            .id(hub_id(&account, id))
            .product_arn("arn:aws:securityhub:us-east-1::product/aws/securityhub")
            .build()
    };
    let set_status = |status: WorkflowStatus| {
        client
            .batch_update_findings()
            .finding_identifiers(identifier("open-1"))
            .workflow(WorkflowUpdate::builder().status(status).build())
            .send()
    };
    let answer = set_status(WorkflowStatus::Resolved).await.unwrap();
    assert_eq!(answer.processed_findings().len(), 1, "{answer:?}");
    assert_eq!(hub.finding(&hub_id(&account, "open-1")).unwrap()["UpdatedAt"], time(old), "UpdatedAt as it was");
    poll().await;
    let closed = alert("open-1").await.unwrap();
    assert_eq!(closed.status, AlertStatus::Resolved, "the re-check by Id saw the workflow change");
    assert_eq!(closed.details["workflow_status"], "RESOLVED");
    let (_, actor, _) = history_of(&db, &closed.id).await.pop().unwrap();
    assert_eq!(actor, "securityhub");
    let rechecked = hub.get_findings_calls().into_iter().rfind(|c| !c.values("Id").is_empty()).unwrap();
    assert!(rechecked.values("Id").contains(&hub_id(&account, "open-1")), "{rechecked:?}");

    // The provider archives open-2 (a new UpdatedAt): the listing closes its alert.
    let mut gone = asff(&account, "open-2", "Security Hub", Utc::now(), "HIGH");
    gone["RecordState"] = json!("ARCHIVED");
    hub.put_finding(gone);
    poll().await;
    let archived = alert("open-2").await.unwrap();
    assert_eq!(archived.status, AlertStatus::Resolved);
    assert_eq!(archived.details["record_state"], "ARCHIVED");

    // Back to NOTIFIED in the console: open-1 is active again and its alert reopens.
    set_status(WorkflowStatus::Notified).await.unwrap();
    poll().await;
    assert_eq!(alert("open-1").await.unwrap().status, AlertStatus::Open);
    assert_eq!(alerts_of(&db, &account, "aws-securityhub:").await.len(), 2, "still none for the other three");
}

/// Security Hub answering "not subscribed" (moto never does): a state, not an error.
#[tokio::test]
async fn security_hub_not_enabled_in_a_region_is_a_state_not_an_error() {
    let db = TestDb::new().await;
    let account = fake::random_account_id();
    let (hub, ctx, _) = hub_poller(&db, &account, false).await;
    hub.disable("us-east-1");
    let worker = Worker::new(ctx, "worker-a", None);
    run_until_caught_up(&db, &worker, &account, Source::SecurityHubFindings, "us-east-1").await;
    let job = hub_job(&db, &account).await;
    assert_eq!(job.state.as_deref(), Some("not-enabled"), "{job:?}");
    assert!(job.last_error.is_none() && job.consecutive_failures == 0, "{job:?}");
    let refused = hub.get_findings_calls();
    assert_eq!(refused.len(), 1);
    assert_eq!(refused[0].answer, Err("InvalidAccessException".to_owned()));
    // Another InvalidAccessException (a missing permission, say) is an error, not a state.
    hub.refuse_listings(Some((
        "InvalidAccessException",
        "The account doesn't have permission to perform this action.",
    )));
    jobs::run_now(&db.pool, &account, Some(Source::SecurityHubFindings)).await.unwrap();
    let reports = worker.run_once().await.unwrap();
    let error = report(&reports, &account, Source::SecurityHubFindings, "us-east-1").error.clone().unwrap_or_default();
    assert!(error.contains("InvalidAccessException"), "{error}");
}

/// Requests Security Hub refuses (`InvalidInputException`), sent to the fake holding at least 20
/// findings of `account` in us-east-1.
async fn refused_as_security_hub_refuses(client: aws_sdk_securityhub::Client, account: String, updated: DateTime<Utc>) {
    use aws_sdk_securityhub::types::{AwsSecurityFindingFilters, DateFilter, StringFilter, StringFilterComparison};
    let filter = |value: &str, comparison| StringFilter::builder().value(value).comparison(comparison).build();
    let since = DateFilter::builder().start(time(updated - chrono::Duration::days(1))).build();
    let cases = [
        ("MaxResults above 100", None, Some(101)),
        ("a date filter without its End", Some(AwsSecurityFindingFilters::builder().updated_at(since).build()), None),
        (
            "21 values for one field",
            Some(
                AwsSecurityFindingFilters::builder()
                    .set_id(Some((0..21).map(|n| filter(&format!("id-{n}"), StringFilterComparison::Equals)).collect()))
                    .build(),
            ),
            None,
        ),
        (
            "EQUALS and NOT_EQUALS on one field",
            Some(
                AwsSecurityFindingFilters::builder()
                    .aws_account_id(filter(&account, StringFilterComparison::Equals))
                    .aws_account_id(filter("111122223333", StringFilterComparison::NotEquals))
                    .build(),
            ),
            None,
        ),
    ];
    for (case, filters, max) in cases {
        let refused = client.get_findings().set_filters(filters).set_max_results(max).send().await;
        let error = refused.expect_err(case).into_service_error();
        assert!(error.is_invalid_input_exception(), "{case}: {error:?}");
    }
    let first = client.get_findings().max_results(10).send().await.unwrap();
    let token = first.next_token().unwrap().to_owned();
    let other =
        AwsSecurityFindingFilters::builder().region(filter("us-east-1", StringFilterComparison::Equals)).build();
    let moved = client.get_findings().filters(other).max_results(10).next_token(&token).send().await;
    assert!(moved.expect_err("a token with other filters").into_service_error().is_invalid_input_exception());
    let forged = client.get_findings().max_results(10).next_token("0123456789abcdef").send().await;
    assert!(forged.expect_err("a token never given").into_service_error().is_invalid_input_exception());
    let next = client.get_findings().max_results(10).next_token(&token).send().await.unwrap();
    assert_eq!(next.findings().len(), 10, "the token, with the request that gave it, goes on");
}

/// The re-check by `Id` goes on each run from the last alert it re-read, 100 a run: 130 alerts
/// are re-read as 100, then the other 30 (none twice), then from the first again.
#[tokio::test]
async fn security_hub_recheck_rotates_through_the_alerts_and_wraps() {
    let db = TestDb::new().await;
    let account = fake::random_account_id();
    let (hub, ctx, _) = hub_poller(&db, &account, false).await;
    let base = Utc::now() - chrono::Duration::hours(3);
    for n in 0..130i64 {
        hub.put_finding(asff(
            &account,
            &format!("r{n:03}"),
            "Security Hub",
            base + chrono::Duration::seconds(n),
            "HIGH",
        ));
    }
    let worker = Worker::new(ctx, "worker-a", None);
    let mut passes: Vec<Vec<String>> = Vec::new();
    for _ in 0..3 {
        let before = hub.get_findings_calls().len();
        run_until_caught_up(&db, &worker, &account, Source::SecurityHubFindings, "us-east-1").await;
        let calls = hub.get_findings_calls().split_off(before);
        passes.push(calls.iter().flat_map(|c| c.values("Id")).collect());
    }
    assert_eq!(alerts_of(&db, &account, "aws-securityhub:").await.len(), 130);
    assert_eq!((passes[0].len(), passes[1].len()), (100, 30), "100 a run, then the rest");
    let first: std::collections::HashSet<&String> = passes[0].iter().collect();
    assert!(passes[1].iter().all(|id| !first.contains(id)), "the second pass goes on, no overlap");
    let all: std::collections::HashSet<&String> = passes[0].iter().chain(&passes[1]).collect();
    assert_eq!(all.len(), 130, "every alert re-checked over two runs");
    assert_eq!(passes[2], passes[0], "then it wraps round to the first");
}

/// A finding a provider imports with an `UpdatedAt` older than the listing's overlap is missed
/// by the listing and read by the wide re-listing (every 6 hours, the last 24 hours).
#[tokio::test]
async fn security_hub_finding_imported_later_than_the_overlap_is_read_by_the_wide_relisting() {
    let db = TestDb::new().await;
    let account = fake::random_account_id();
    let (hub, ctx, _) = hub_poller(&db, &account, false).await;
    let worker = Worker::new(ctx, "worker-a", None);
    let poll = || run_until_caught_up(&db, &worker, &account, Source::SecurityHubFindings, "us-east-1");
    hub.put_finding(asff(&account, "first", "Security Hub", Utc::now() - chrono::Duration::hours(5), "HIGH"));
    poll().await;
    hub.put_finding(asff(&account, "late", "Security Hub", Utc::now() - chrono::Duration::hours(3), "HIGH"));
    poll().await;
    let late = hub_id(&account, "late");
    let imported = |alerts: &[AlertView]| alerts.iter().any(|a| a.evidence == [late.clone()]);
    assert!(!imported(&alerts_of(&db, &account, "aws-securityhub:").await), "older than the overlap: missed");
    // Six hours and more since the last wide re-listing.
    sqlx::query(
        "UPDATE poll_jobs SET checkpoint = jsonb_set(checkpoint, '{wide_at_ms}',
           to_jsonb((checkpoint->>'wide_at_ms')::bigint - 7 * 3600 * 1000))
         WHERE account_id = $1 AND source = 'securityhub-findings'",
    )
    .bind(&account)
    .execute(&db.pool)
    .await
    .unwrap();
    poll().await; // this listing ends with the cursor a day back
    poll().await;
    assert!(imported(&alerts_of(&db, &account, "aws-securityhub:").await), "read by the wide re-listing");
    let starts: Vec<DateTime<Utc>> = listing_calls(&hub).iter().filter_map(|c| c.updated_since()).collect();
    let last = *starts.last().unwrap();
    assert!(last < Utc::now() - chrono::Duration::hours(23), "the wide re-listing reads a day back: {last}");
}

/// Security Hub keeps the customer's workflow when a provider updates a finding: an alert the
/// analyst suppressed stays closed; one resolved goes back to NEW when its control fails again.
#[tokio::test]
async fn security_hub_provider_updates_keep_the_analyst_s_workflow() {
    use aws_sdk_securityhub::types::{AwsSecurityFindingIdentifier, WorkflowStatus, WorkflowUpdate};
    let db = TestDb::new().await;
    let account = fake::random_account_id();
    let (hub, ctx, owner) = hub_poller(&db, &account, false).await;
    let worker = Worker::new(ctx, "worker-a", None);
    let poll = || run_until_caught_up(&db, &worker, &account, Source::SecurityHubFindings, "us-east-1");
    let status = |id: &'static str| {
        let (db, account) = (&db, &account);
        async move {
            let alerts = alerts_of(db, account, "aws-securityhub:").await;
            alerts.into_iter().find(|a| a.evidence == [hub_id(account, id)]).unwrap().status
        }
    };
    let old = Utc::now() - chrono::Duration::minutes(90);
    hub.put_finding(asff(&account, "noisy", "Security Hub", old, "HIGH"));
    hub.put_finding(asff(&account, "fixed", "Security Hub", old, "HIGH"));
    poll().await;
    let client = owner.securityhub("us-east-1");
    for (id, workflow) in [("noisy", WorkflowStatus::Suppressed), ("fixed", WorkflowStatus::Resolved)] {
        let identifier = AwsSecurityFindingIdentifier::builder()
            .id(hub_id(&account, id))
            .product_arn("arn:aws:securityhub:us-east-1::product/aws/securityhub")
            .build();
        let update = WorkflowUpdate::builder().status(workflow).build();
        client.batch_update_findings().finding_identifiers(identifier).workflow(update).send().await.unwrap();
    }
    poll().await;
    assert_eq!((status("noisy").await, status("fixed").await), (AlertStatus::Resolved, AlertStatus::Resolved));

    // The provider updates both (its payload says NEW): the customer's workflow stays.
    hub.put_finding(asff(&account, "noisy", "Security Hub", Utc::now(), "CRITICAL"));
    let mut passed = asff(&account, "fixed", "Security Hub", Utc::now(), "HIGH");
    passed["Compliance"]["Status"] = json!("PASSED");
    hub.put_finding(passed);
    poll().await;
    assert_eq!(hub.finding(&hub_id(&account, "noisy")).unwrap()["Workflow"]["Status"], "SUPPRESSED");
    assert_eq!(status("noisy").await, AlertStatus::Resolved, "suppressed by the analyst: stays closed");
    assert_eq!(status("fixed").await, AlertStatus::Resolved);

    // The control fails again: Security Hub sets a RESOLVED finding back to NEW, and it reopens.
    hub.put_finding(asff(&account, "fixed", "Security Hub", Utc::now(), "HIGH"));
    poll().await;
    assert_eq!(hub.finding(&hub_id(&account, "fixed")).unwrap()["Workflow"]["Status"], "NEW");
    assert_eq!(status("fixed").await, AlertStatus::Open, "failing again after it passed: reopened");
    assert_eq!(status("noisy").await, AlertStatus::Resolved);
}
