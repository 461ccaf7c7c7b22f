//! Detection end to end: the sample incident imported through the real binary raises the seed
//! story's alerts and nothing else, whatever the file order, and re-imports add nothing.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::support::{TestDb, copy_dir, mmdb};

fn incident() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("samples/incident")
}

fn expected() -> Value {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("samples/incident.expected.json");
    serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap()
}

fn country_db(dir: &Path) -> PathBuf {
    mmdb::sample_incident_countries(dir)
}

fn import(db: &TestDb, geo: &Path, paths: &[&Path]) -> Value {
    let mut args = vec!["import".to_string(), "--json".into(), "--geoip".into(), geo.display().to_string()];
    args.extend(paths.iter().map(|p| p.display().to_string()));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let output = db.skywarden(&args);
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    serde_json::from_slice(&output.stdout).unwrap()
}

fn alerts(db: &TestDb, extra: &[&str]) -> Vec<Value> {
    let mut args = vec!["alerts", "--json"];
    args.extend_from_slice(extra);
    let output = db.skywarden(&args);
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    String::from_utf8_lossy(&output.stdout).lines().map(|l| serde_json::from_str(l).unwrap()).collect()
}

/// What identifies an alert's content, independent of when it was created.
fn fingerprint(alerts: &[Value]) -> Vec<String> {
    let mut prints: Vec<String> = alerts
        .iter()
        .map(|a| {
            format!(
                "{} {} {} {} {} {} {} {}",
                a["policy_id"],
                a["severity"],
                a["principal"],
                a["source_ip"],
                a["country"],
                a["first_seen"],
                a["event_count"],
                a["evidence"]
            )
        })
        .collect();
    prints.sort();
    prints
}

/// The same fingerprints, naming only those that differ.
fn assert_same(found: &[String], expected: &[String]) {
    let missing: Vec<&String> = expected.iter().filter(|e| !found.contains(e)).collect();
    let unexpected: Vec<&String> = found.iter().filter(|f| !expected.contains(f)).collect();
    assert!(missing.is_empty() && unexpected.is_empty(), "missing: {missing:#?}\nunexpected: {unexpected:#?}");
}

fn by_policy(alerts: &[Value]) -> BTreeMap<String, Vec<&Value>> {
    let mut map: BTreeMap<String, Vec<&Value>> = BTreeMap::new();
    for alert in alerts {
        map.entry(alert["policy_id"].as_str().unwrap().to_string()).or_default().push(alert);
    }
    map
}

#[tokio::test]
async fn sample_incident_raises_the_seed_story_and_nothing_else() {
    let db = TestDb::new().await;
    let dir = tempfile::tempdir().unwrap();
    let geo = country_db(dir.path());
    let summary = import(&db, &geo, &[&incident()]);
    assert!(summary["detection"]["new_alerts"].as_u64().unwrap() > 0, "{summary}");
    let expected = expected();
    let ids = &expected["attack_event_ids"];
    let all = alerts(&db, &[]);
    let policies = by_policy(&all);

    let hijack = &policies["aws-account-hijacking-attempt"];
    assert_eq!(hijack.len(), 1, "{hijack:?}");
    assert_eq!(hijack[0]["evidence"], serde_json::json!([ids["hijack_login"]]));
    assert_eq!(hijack[0]["principal"], "arn:aws:iam::111122223333:user/alice");
    assert_eq!((hijack[0]["source_ip"].as_str(), hijack[0]["country"].as_str()), (Some("176.36.10.20"), Some("UA")));
    assert_eq!(hijack[0]["details"]["baseline_countries"], serde_json::json!(["US"]));
    assert_eq!(hijack[0]["mitre"], serde_json::json!(["TA0001/T1078.004"]));

    assert_eq!(policies["aws-impossible-travel"].len(), 1);
    let failures = &policies["aws-excessive-login-failures"];
    assert_eq!(failures.len(), 1);
    assert_eq!(failures[0]["event_count"], 11, "the attacker's 11 failures, not the users' typos");
    assert_eq!(failures[0]["evidence"].as_array().unwrap().len(), 11, "few enough to keep every one");
    let sg = &policies["aws-security-group-ingress-opened"];
    assert_eq!(sg.len(), 1, "bob's private-range rule raises nothing: {sg:?}");
    assert_eq!(sg[0]["evidence"], serde_json::json!([ids["security_group_ingress"]]));
    assert_eq!(sg[0]["severity"], "high");
    for (policy, id) in [
        ("aws-iam-instance-profile-associated", "associate_instance_profile"),
        ("aws-cloudtrail-logging-disabled", "stop_logging"),
        ("aws-iam-user-created", "create_user"),
    ] {
        let found = &policies[policy];
        assert_eq!(found.len(), 1, "{policy}");
        assert_eq!(found[0]["evidence"], serde_json::json!([ids[id]]), "{policy}");
    }
    for policy in ["aws-iam-role-policy-attached", "aws-iam-access-key-created", "aws-ssm-session-started"] {
        assert_eq!(policies[policy].len(), 1, "{policy}");
        assert_eq!(policies[policy][0]["source_ip"], "176.36.10.20", "{policy}");
    }
    assert_eq!(policies["aws-iam-role-policy-attached"][0]["severity"], "high", "an SSM policy escalates");
    let exfil = &policies["aws-flow-exfiltration-volume"];
    assert_eq!(exfil.len(), 1);
    assert_eq!((exfil[0]["source_ip"].as_str(), exfil[0]["country"].as_str()), (Some("176.36.10.20"), Some("UA")));
    assert_eq!(exfil[0]["event_count"], 2, "two hours above 1 GB");
    // Nothing for bob or carol, and no root usage.
    assert!(!policies.contains_key("aws-root-account-usage"));
    for alert in &all {
        let principal = alert["principal"].as_str().unwrap_or("");
        assert!(!principal.ends_with("/bob") && !principal.ends_with("/carol"), "{alert}");
    }
    // The attacker's alerts share one incident: the console session from 176.36.10.20.
    let incidents: std::collections::BTreeSet<&str> = all
        .iter()
        .filter(|a| a["source_ip"] == "176.36.10.20" && a["principal"].is_string())
        .map(|a| a["incident_id"].as_str().unwrap())
        .collect();
    assert_eq!(incidents.len(), 1, "{incidents:?}");

    // ... and `skywarden incidents` tells it as one timeline, from the failures to StopLogging.
    let output = db.skywarden(&["incidents", "--json"]);
    let incidents: Vec<Value> =
        String::from_utf8_lossy(&output.stdout).lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(incidents.len(), 1, "{incidents:?}");
    let steps: Vec<&str> =
        incidents[0]["timeline"].as_array().unwrap().iter().map(|s| s["policy_id"].as_str().unwrap()).collect();
    assert_eq!(steps.first(), Some(&"aws-excessive-login-failures"), "{steps:?}");
    assert_eq!(steps.last(), Some(&"aws-cloudtrail-logging-disabled"), "{steps:?}");
    for policy in ["aws-account-hijacking-attempt", "aws-security-group-ingress-opened", "aws-flow-exfiltration-volume"]
    {
        assert!(steps.contains(&policy), "{policy} in {steps:?}");
    }

    // Importing again changes nothing.
    let again = import(&db, &geo, &[&incident()]);
    assert_eq!(again["detection"]["new_alerts"], 0, "{again}");
    assert_eq!(fingerprint(&alerts(&db, &[])), fingerprint(&all));
}

#[tokio::test]
async fn file_order_does_not_change_the_alerts() {
    let dir = tempfile::tempdir().unwrap();
    let geo = country_db(dir.path());
    let in_one_go = TestDb::new().await;
    import(&in_one_go, &geo, &[&incident()]);

    // Newest files first, one import each, flows before CloudTrail: S3 order is not event order.
    let reversed = TestDb::new().await;
    let mut files: Vec<PathBuf> = walk(&incident());
    files.sort_by(|a, b| b.file_name().cmp(&a.file_name()));
    files.sort_by_key(|f| !f.to_string_lossy().contains("vpcflowlogs"));
    for chunk in files.chunks(8) {
        let paths: Vec<&Path> = chunk.iter().map(PathBuf::as_path).collect();
        import(&reversed, &geo, &paths);
    }
    assert_eq!(fingerprint(&alerts(&reversed, &[])), fingerprint(&alerts(&in_one_go, &[])));
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            files.extend(walk(&path));
        } else {
            files.push(path);
        }
    }
    files
}

#[tokio::test]
async fn triage_keeps_who_when_and_why() {
    let db = TestDb::new().await;
    let dir = tempfile::tempdir().unwrap();
    import(&db, &country_db(dir.path()), &[&incident()]);
    let hijack = alerts(&db, &["--policy", "aws-account-hijacking-attempt"]).remove(0);
    let id = hijack["id"].as_str().unwrap();
    let output =
        db.skywarden(&["alerts", "set-status", id, "acknowledged", "--reason", "calling alice", "--actor", "analyst1"]);
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    assert_eq!(String::from_utf8_lossy(&output.stdout).trim(), format!("alert {id}: open -> acknowledged"));
    let output = db.skywarden(&["alerts", "set-status", id, "snoozed", "--reason", "later"]);
    assert!(!output.status.success(), "snoozing needs --until");
    assert!(String::from_utf8_lossy(&output.stderr).contains("--until"));
    let output =
        db.skywarden(&["alerts", "set-status", "00000000-0000-0000-0000-000000000000", "resolved", "--reason", "x"]);
    assert!(String::from_utf8_lossy(&output.stderr).contains("no alert with id"));

    let acknowledged = alerts(&db, &["--status", "acknowledged"]);
    assert_eq!(acknowledged.len(), 1);
    assert_eq!(acknowledged[0]["id"], hijack["id"]);
    let history: (String, String, String, String) = sqlx::query_as(
        "SELECT old_status::text, new_status::text, actor, reason FROM alert_status_changes WHERE alert_id = $1::uuid",
    )
    .bind(id)
    .fetch_one(&db.pool)
    .await
    .unwrap();
    assert_eq!(history, ("open".into(), "acknowledged".into(), "analyst1".into(), "calling alice".into()));

    // A snooze hides an alert until its time, then it is open again.
    let failures = alerts(&db, &["--policy", "aws-excessive-login-failures"]).remove(0);
    let failures_id = failures["id"].as_str().unwrap();
    let output = db.skywarden(&[
        "alerts",
        "set-status",
        failures_id,
        "snoozed",
        "--reason",
        "known pentest",
        "--until",
        "2099-01-01T00:00:00Z",
    ]);
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    assert_eq!(alerts(&db, &["--status", "snoozed"]).len(), 1);
    sqlx::query("UPDATE alerts SET snoozed_until = now() - interval '1 minute' WHERE alert_id = $1::uuid")
        .bind(failures_id)
        .execute(&db.pool)
        .await
        .unwrap();
    assert!(alerts(&db, &["--status", "snoozed"]).is_empty());
    assert!(alerts(&db, &["--status", "open"]).iter().any(|a| a["id"] == failures["id"]));

    // New evidence does not reopen or duplicate a triaged alert.
    import(&db, &country_db(dir.path()), &[&incident()]);
    assert_eq!(alerts(&db, &["--policy", "aws-account-hijacking-attempt"]).len(), 1);
    assert_eq!(alerts(&db, &["--status", "acknowledged"]).len(), 1);
}

#[tokio::test]
async fn policies_lint_names_a_broken_rule_and_loads_the_rest() {
    let db = TestDb::new().await;
    let dir = tempfile::tempdir().unwrap();
    let policies = dir.path().join("policies");
    std::fs::create_dir_all(policies.join("sigma")).unwrap();
    let good = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("policies/sigma/skywarden/iam_user_created.yml"),
    )
    .unwrap();
    std::fs::write(policies.join("sigma/good.yml"), good).unwrap();
    std::fs::write(policies.join("sigma/broken.yml"), "title: Broken\nid: x\ndetection:\n  condition: selection and\n")
        .unwrap();
    let output = db.skywarden(&["policies", "--policies", policies.to_str().unwrap(), "lint"]);
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert_eq!(output.status.code(), Some(1), "{stdout}");
    assert!(stdout.lines().any(|l| l.contains("broken.yml")), "{stdout}");
    assert!(!stdout.contains("good.yml"), "{stdout}");
    assert!(stdout.contains("1 problems"), "{stdout}");

    let output = db.skywarden(&["policies", "--policies", policies.to_str().unwrap(), "list"]);
    assert!(String::from_utf8_lossy(&output.stdout).contains("aws-iam-user-created"));
}

#[tokio::test]
async fn policies_lint_checks_the_automatic_containment_rules_as_serve_does() {
    let db = TestDb::new().await;
    let dir = tempfile::tempdir().unwrap();
    let policies = dir.path().join("policies");
    copy_dir(&Path::new(env!("CARGO_MANIFEST_DIR")).join("policies"), &policies);
    let path = policies.to_str().unwrap();
    let output = db.skywarden(&["policies", "--policies", path, "lint"]);
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert_eq!(output.status.code(), Some(0), "{stdout}");
    assert!(stdout.contains("automatic containment rules (off), 0 problems"), "{stdout}");

    // A rule naming a policy that does not exist would silently never act: a problem, by line.
    let rules = std::fs::read_to_string(policies.join("response.yaml")).unwrap();
    let broken = rules.replacen("policy: aws-security-group-ingress-opened", "policy: aws-no-such-policy", 1);
    assert_ne!(broken, rules, "the shipped response.yaml has the rule this test breaks");
    std::fs::write(policies.join("response.yaml"), &broken).unwrap();
    let line = broken.lines().position(|l| l.contains("aws-no-such-policy")).unwrap() + 1;
    let output = db.skywarden(&["policies", "--policies", path, "lint"]);
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert_eq!(output.status.code(), Some(1), "{stdout}");
    assert!(stdout.contains(&format!("response.yaml:{line}: ")), "{stdout}");
    assert!(stdout.contains("no policy `aws-no-such-policy`"), "{stdout}");
}

#[tokio::test]
async fn policies_lint_warns_of_a_rule_field_that_holds_an_object_in_real_events() {
    let db = TestDb::new().await;
    let dir = tempfile::tempdir().unwrap();
    let policies = dir.path().join("policies");
    std::fs::create_dir_all(&policies).unwrap();
    // The vendored SigmaHQ rule tests `requestParameters|contains: 'Suspended'`.
    std::fs::write(policies.join("skywarden.yaml"), "enable: [aws_disable_bucket_versioning]\n").unwrap();
    let event = |name: &str, id: &str| {
        serde_json::json!({"eventVersion": "1.09", "eventTime": "2026-11-12T10:00:00Z", "eventSource": "s3.amazonaws.com",
            "eventName": name, "awsRegion": "us-east-1", "sourceIPAddress": ATTACKER_IP, "eventID": id,
            "recipientAccountId": "111122223333", "userIdentity": {"type": "IAMUser", "userName": "alice"},
            "requestParameters": {"bucketName": "logs", "VersioningConfiguration": {"Status": "Suspended"}}})
    };
    let events = dir.path().join("events.json");
    let records = serde_json::json!({"Records": [event("GetBucketAcl", "e1"), event("PutBucketVersioning", "e2")]});
    std::fs::write(&events, records.to_string()).unwrap();
    let policies = policies.to_str().unwrap();
    let output = db.skywarden(&["policies", "--policies", policies, "lint", "--events", events.to_str().unwrap()]);
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert_eq!(output.status.code(), Some(0), "a warning is not a problem: {stdout}");
    let warnings: Vec<&str> = stdout.lines().filter(|l| l.starts_with("warning:")).collect();
    assert_eq!(warnings.len(), 1, "{stdout}");
    assert!(warnings[0].contains("aws_disable_bucket_versioning.yml"), "{stdout}");
    assert!(
        warnings[0].contains("field `requestParameters` holds an object in PutBucketVersioning events (e.g. e2)"),
        "{stdout}"
    );
    assert!(stdout.contains("2 events checked, 1 fields that hold objects"), "{stdout}");
    // Without events, lint reads none and warns of nothing.
    let output = db.skywarden(&["policies", "--policies", policies, "lint"]);
    assert!(!String::from_utf8_lossy(&output.stdout).contains("warning:"));
}

#[tokio::test]
async fn backtest_reports_without_creating_alerts() {
    let db = TestDb::new().await;
    let dir = tempfile::tempdir().unwrap();
    let geo = country_db(dir.path());
    let output = db.skywarden(&[
        "import",
        "--no-detect",
        "--json",
        "--geoip",
        geo.to_str().unwrap(),
        incident().to_str().unwrap(),
    ]);
    assert!(output.status.success());
    let output = db.skywarden(&[
        "policies",
        "backtest",
        "aws-account-hijacking-attempt",
        "--since",
        "2026-11-01T00:00:00Z",
        "--json",
    ]);
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let report: Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(report["alerts"], 1, "{report}");
    assert!(alerts(&db, &[]).is_empty(), "a backtest stores nothing");
    let output = db.skywarden(&["policies", "backtest", "no-such-policy", "--since", "2026-11-01T00:00:00Z"]);
    assert!(String::from_utf8_lossy(&output.stderr).contains("no policy with id no-such-policy"));
}

#[tokio::test]
async fn api_calls_from_a_new_country_alert_only_when_enabled() {
    let dir = tempfile::tempdir().unwrap();
    // Stolen access keys, no console login: deploy-bot calls from the US for days, then from UA.
    let call = |day: u32, ip: &str, id: &str| {
        serde_json::json!({"eventVersion": "1.09", "eventTime": format!("2026-11-{day:02}T10:00:00Z"),
            "eventSource": "s3.amazonaws.com", "eventName": "ListBuckets", "awsRegion": "us-east-1",
            "sourceIPAddress": ip, "userAgent": "aws-cli/2.15", "eventID": id, "eventType": "AwsApiCall",
            "recipientAccountId": "111122223333",
            "userIdentity": {"type": "IAMUser", "arn": "arn:aws:iam::111122223333:user/deploy-bot",
                "accountId": "111122223333", "userName": "deploy-bot", "accessKeyId": "AKIAEXAMPLEDEPLOY01"}})
        .to_string()
    };
    let lines: Vec<String> = (1..=5)
        .map(|day| call(day, "52.94.236.248", &format!("us-{day}")))
        .chain([call(9, ATTACKER_IP, "ua-1")])
        .collect();
    let trail = dir.path().join("calls.jsonl");
    std::fs::write(&trail, lines.join("\n")).unwrap();
    let geo = country_db(dir.path());
    let policies = dir.path().join("policies");
    copy_dir(&Path::new(env!("CARGO_MANIFEST_DIR")).join("policies"), &policies);

    let run = |db: &TestDb| {
        let output = db.skywarden(&[
            "import",
            "--json",
            "--policies",
            policies.to_str().unwrap(),
            "--geoip",
            geo.to_str().unwrap(),
            trail.to_str().unwrap(),
        ]);
        assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    };
    let off = TestDb::new().await;
    run(&off);
    assert!(alerts(&off, &["--policy", "aws-account-hijacking-attempt"]).is_empty(), "off by default");

    let settings = std::fs::read_to_string(policies.join("detectors.yaml")).unwrap();
    std::fs::write(
        policies.join("detectors.yaml"),
        settings.replace("include_api_activity: false", "include_api_activity: true"),
    )
    .unwrap();
    let on = TestDb::new().await;
    run(&on);
    let hijack = alerts(&on, &["--policy", "aws-account-hijacking-attempt"]);
    assert_eq!(hijack.len(), 1, "{hijack:?}");
    assert_eq!(hijack[0]["evidence"], serde_json::json!(["ua-1"]));
    assert_eq!(hijack[0]["country"], "UA");
}

const ATTACKER_IP: &str = "176.36.10.20";

#[tokio::test]
async fn an_older_file_imported_later_withdraws_a_verdict_it_disproves() {
    let dir = tempfile::tempdir().unwrap();
    let login = |day: u32, ip: &str| {
        serde_json::json!({"eventVersion": "1.09", "eventTime": format!("2026-11-{day:02}T10:00:00Z"),
            "eventSource": "signin.amazonaws.com", "eventName": "ConsoleLogin", "awsRegion": "us-east-1",
            "sourceIPAddress": ip, "userAgent": "Mozilla/5.0", "eventID": format!("login-{day}"),
            "eventType": "AwsConsoleSignIn", "recipientAccountId": "111122223333",
            "responseElements": {"ConsoleLogin": "Success"}, "additionalEventData": {"MFAUsed": "Yes"},
            "userIdentity": {"type": "IAMUser", "arn": "arn:aws:iam::111122223333:user/alice",
                "accountId": "111122223333", "userName": "alice"}})
        .to_string()
    };
    // Newer file: three logins from home, then one from Ukraine. Older file: a Ukrainian login
    // in between, which makes the later one unremarkable.
    let newer = dir.path().join("newer.jsonl");
    std::fs::write(
        &newer,
        [login(1, "73.202.18.40"), login(2, "73.202.18.40"), login(3, "73.202.18.40"), login(12, ATTACKER_IP)]
            .join("\n"),
    )
    .unwrap();
    let older = dir.path().join("older.jsonl");
    std::fs::write(&older, login(5, ATTACKER_IP)).unwrap();
    let geo = country_db(dir.path());

    let late = TestDb::new().await;
    import(&late, &geo, &[&newer]);
    let first_verdict = alerts(&late, &["--policy", "aws-account-hijacking-attempt"]);
    assert_eq!(first_verdict.len(), 1);
    assert_eq!(first_verdict[0]["evidence"], serde_json::json!(["login-12"]));
    let summary = import(&late, &geo, &[&older]);
    assert_eq!(summary["detection"]["retracted_evidence"], 1, "{summary}");

    let together = TestDb::new().await;
    import(&together, &geo, &[&newer, &older]);
    let expected = alerts(&together, &["--policy", "aws-account-hijacking-attempt"]);
    assert_eq!(expected.len(), 1);
    assert_eq!(expected[0]["evidence"], serde_json::json!(["login-5"]), "the first Ukrainian login is the new one");
    assert_eq!(fingerprint(&alerts(&late, &[])), fingerprint(&alerts(&together, &[])));
}

/// A password spray: every fifth of 12,000 events over a day is a failed login of one principal
/// from one address (about 17 in every ten minutes).
fn spray_file(dir: &Path) -> PathBuf {
    let file = dir.join("spray.json");
    crate::support::synthetic::generate_spray(&file, 12_000).unwrap();
    file
}

/// The records of a CloudTrail delivery document, each as written.
fn records(text: &str) -> Vec<&serde_json::value::RawValue> {
    #[derive(serde::Deserialize)]
    struct Document<'a> {
        #[serde(rename = "Records", borrow)]
        records: Vec<&'a serde_json::value::RawValue>,
    }
    serde_json::from_str::<Document>(text).unwrap().records
}

#[tokio::test]
async fn a_password_spray_is_one_alert_an_hour_with_its_count_span_source_and_a_sample() {
    use crate::support::synthetic::{SPRAY_SOURCE, SPRAY_USER};
    let dir = tempfile::tempdir().unwrap();
    let db = TestDb::new().await;
    let summary = import(&db, &country_db(dir.path()), &[&spray_file(dir.path())]);
    let failures = alerts(&db, &["--policy", "aws-excessive-login-failures"]);
    assert_eq!(failures.len(), 24, "one alert per hour of the day: {summary}");
    let total: i64 = failures.iter().map(|a| a["event_count"].as_i64().unwrap()).sum();
    assert_eq!(total, 2_400, "every failure is counted");
    for alert in &failures {
        assert_eq!(alert["principal"], format!("arn:aws:iam::111122223333:user/{SPRAY_USER}"));
        assert_eq!(alert["source_ip"], SPRAY_SOURCE);
        assert_eq!(alert["details"]["failures"], alert["event_count"]);
        assert_eq!(alert["details"]["sources"][0]["address"], SPRAY_SOURCE);
        assert_eq!(alert["details"]["burst_start"], alert["first_seen"]);
        assert_eq!(alert["details"]["burst_end"], alert["last_seen"]);
        let evidence = alert["evidence"].as_array().unwrap();
        assert_eq!(evidence.len(), 20, "the first and last ten failures, not one row each: {alert}");
    }
    let rows = db.count("SELECT count(*) FROM alert_evidence e JOIN alerts a USING (account_id, alert_id) WHERE a.policy_id = 'aws-excessive-login-failures'").await;
    assert_eq!(rows, 24 * 20);
    // The sample links to stored events.
    let linked = db
        .count(
            "SELECT count(*) FROM alert_evidence e JOIN cloudtrail_events c USING (account_id, event_id, event_time)",
        )
        .await;
    assert_eq!(linked, db.count("SELECT count(*) FROM alert_evidence").await);

    // Importing again changes nothing.
    let before = fingerprint(&alerts(&db, &[]));
    let again = import(&db, &country_db(dir.path()), &[&spray_file(dir.path())]);
    assert_eq!(again["detection"]["new_alerts"], 0, "{again}");
    assert_eq!(fingerprint(&alerts(&db, &[])), before);
}

#[tokio::test]
async fn a_password_spray_imported_in_pieces_out_of_order_gives_the_same_alerts() {
    let dir = tempfile::tempdir().unwrap();
    let geo = country_db(dir.path());
    let file = spray_file(dir.path());
    let in_one_go = TestDb::new().await;
    import(&in_one_go, &geo, &[&file]);

    // The same events in four files, imported newest first, each on its own. (Raw, as written:
    // what the importer takes for an event's first resource depends on key order.)
    let text = std::fs::read_to_string(&file).unwrap();
    let records = records(&text);
    let pieces: Vec<PathBuf> = records
        .chunks(records.len().div_ceil(4))
        .enumerate()
        .map(|(i, chunk)| {
            let piece = dir.path().join(format!("piece-{i}.json"));
            let texts: Vec<&str> = chunk.iter().map(|r| r.get()).collect();
            std::fs::write(&piece, format!("{{\"Records\":[{}]}}", texts.join(","))).unwrap();
            piece
        })
        .collect();
    let pieces_db = TestDb::new().await;
    for piece in pieces.iter().rev() {
        import(&pieces_db, &geo, &[piece]);
    }
    assert_same(&fingerprint(&alerts(&pieces_db, &[])), &fingerprint(&alerts(&in_one_go, &[])));
}

/// A finding of one alert, at `minute`, with `severity`.
fn finding(minute: u32, severity: skywarden::model::Severity, resource: &str) -> skywarden::model::Finding {
    skywarden::model::Finding {
        policy_id: "aws-iam-role-policy-attached".into(),
        title: format!("attached at minute {minute}"),
        severity,
        account_id: "111122223333".into(),
        subject: "arn:aws:iam::111122223333:role/app".into(),
        dedup_window: chrono::Duration::hours(24),
        principal: Some(format!("user-{minute}")),
        source_ip: None,
        country: None,
        resources: vec![resource.into(), "arn:aws:iam::111122223333:role/app".into()],
        evidence_id: format!("evt-{minute:02}"),
        time: format!("2026-11-12T03:{minute:02}:00Z").parse().unwrap(),
        mitre: vec![skywarden::model::Mitre::new("TA0004", "T1098")],
        session_key: (minute > 20).then(|| format!("session-{minute}")),
        details: serde_json::json!({}),
    }
}

#[tokio::test]
async fn findings_of_one_alert_fold_in_one_write_as_if_one_at_a_time() {
    use skywarden::alerts::store::{self, AlertChange, AlertFilter, MAX_ALERT_RESOURCES};
    use skywarden::model::Severity;
    let record = async |db: &TestDb, findings: &[skywarden::model::Finding]| {
        let mut tx = skywarden::db::begin(&db.pool).await.unwrap();
        let outcome = store::record_in(&mut tx, findings).await.unwrap();
        tx.commit().await.unwrap();
        outcome
    };
    let severities = |changes: &[AlertChange]| -> Vec<(Severity, Option<Severity>)> {
        changes
            .iter()
            .map(|c| match c {
                AlertChange::Raised { severity, escalated_from, .. } => (*severity, *escalated_from),
                other => panic!("{other:?}"),
            })
            .collect()
    };
    let many: Vec<_> =
        (0..150).map(|i| finding(30 + i % 29, Severity::Medium, &format!("arn:aws:ec2:::instance/i-{i:03}"))).collect();
    let mut findings = vec![finding(40, Severity::Low, "i-x"), finding(10, Severity::Medium, "i-y")];
    findings.push(finding(50, Severity::High, "i-z"));
    findings.extend(many);

    let together = TestDb::new().await;
    let outcome = record(&together, &findings).await;
    assert_eq!(outcome.new_alerts, 1);
    assert_eq!(outcome.new_evidence, 30, "minutes 30 to 58, and 10");
    assert_eq!(
        severities(&outcome.changes),
        [(Severity::Low, None), (Severity::Medium, Some(Severity::Low)), (Severity::High, Some(Severity::Medium))],
        "a new alert, then each rise, in the order of the findings"
    );
    let again = record(&together, &findings).await;
    assert_eq!((again.new_alerts, again.new_evidence, again.changes.len()), (0, 0, 0), "idempotent");

    // One at a time leaves the same alert (but for the resources, now bounded).
    let one_by_one = TestDb::new().await;
    for finding in &findings {
        record(&one_by_one, std::slice::from_ref(finding)).await;
    }
    let alert = |db: &TestDb| {
        let pool = db.pool.clone();
        async move {
            skywarden::alerts::incidents::link_pending(&pool).await.unwrap();
            store::list(&pool, &AlertFilter::default()).await.unwrap().remove(0)
        }
    };
    let (a, b) = (alert(&together).await, alert(&one_by_one).await);
    assert_eq!(a.title, "attached at minute 10", "the earliest evidence describes it");
    assert_eq!(a.principal.as_deref(), Some("user-10"));
    assert_eq!(a.incident_id, b.incident_id, "and the incident");
    assert!(a.incident_id.is_some());
    assert_eq!(
        (&a.title, &a.principal, a.severity, a.first_seen, a.last_seen, a.event_count, &a.evidence, &a.mitre),
        (&b.title, &b.principal, b.severity, b.first_seen, b.last_seen, b.event_count, &b.evidence, &b.mitre)
    );
    assert_eq!(a.resources.len(), MAX_ALERT_RESOURCES);
    assert_eq!(a.resources, b.resources);
}

/// A trail file of failed console logins, `(user, seconds after 2026-11-12T10:00:00Z)` each,
/// all from `source`; event ids `fail-{user}-{seconds}`.
fn failed_logins(path: &Path, source: &str, logins: &[(&str, i64)]) -> PathBuf {
    let start: chrono::DateTime<chrono::Utc> = "2026-11-12T10:00:00Z".parse().unwrap();
    let lines: Vec<String> = logins
        .iter()
        .map(|(user, seconds)| {
            let time = (start + chrono::Duration::seconds(*seconds)).format("%Y-%m-%dT%H:%M:%SZ").to_string();
            serde_json::json!({"eventVersion": "1.09", "eventTime": time,
                "eventSource": "signin.amazonaws.com", "eventName": "ConsoleLogin", "awsRegion": "us-east-1",
                "sourceIPAddress": source, "userAgent": "Mozilla/5.0", "eventID": format!("fail-{user}-{seconds}"),
                "eventType": "AwsConsoleSignIn", "recipientAccountId": "111122223333",
                "errorMessage": "Failed authentication",
                "responseElements": {"ConsoleLogin": "Failure"}, "additionalEventData": {"MFAUsed": "No"},
                "userIdentity": {"type": "IAMUser", "arn": format!("arn:aws:iam::111122223333:user/{user}"),
                    "accountId": "111122223333", "userName": user}})
            .to_string()
        })
        .collect();
    std::fs::write(path, lines.join("\n")).unwrap();
    path.to_path_buf()
}

#[tokio::test]
async fn a_burst_of_failures_is_one_alert_counting_them_and_a_later_import_grows_it() {
    let dir = tempfile::tempdir().unwrap();
    let geo = country_db(dir.path());
    let db = TestDb::new().await;
    // 30 failures of carol, one every 15 seconds from 10:00; later 25 more, from 10:08 on.
    let first: Vec<(&str, i64)> = (0..30).map(|i| ("carol", i * 15)).collect();
    let more: Vec<(&str, i64)> = (0..25).map(|i| ("carol", 480 + i * 15)).collect();
    let summary = import(&db, &geo, &[&failed_logins(&dir.path().join("first.jsonl"), ATTACKER_IP, &first)]);
    assert_eq!(summary["detection"]["new_alerts"], 1, "{summary}");
    let alert = alerts(&db, &["--policy", "aws-excessive-login-failures"]);
    assert_eq!(alert.len(), 1, "{alert:?}");
    assert_eq!(alert[0]["event_count"], 30);
    assert_eq!(alert[0]["details"]["failures"], 30);
    let ids =
        |range: std::ops::Range<i64>| -> Vec<String> { range.map(|i| format!("fail-carol-{}", i * 15)).collect() };
    let sample: Vec<String> = [ids(0..10), ids(20..30)].concat();
    assert_eq!(alert[0]["evidence"], serde_json::json!(sample), "the first and last ten, not thirty rows");

    let summary = import(&db, &geo, &[&failed_logins(&dir.path().join("more.jsonl"), ATTACKER_IP, &more)]);
    assert_eq!(summary["detection"]["new_alerts"], 0, "{summary}");
    let grown = alerts(&db, &["--policy", "aws-excessive-login-failures"]);
    assert_eq!(grown.len(), 1, "{grown:?}");
    assert_eq!(grown[0]["id"], alert[0]["id"], "the same alert");
    assert_eq!(grown[0]["event_count"], 55);
    assert_eq!(grown[0]["first_seen"], alert[0]["first_seen"]);
    assert_eq!(grown[0]["last_seen"], "2026-11-12T10:14:00Z");
    let last: Vec<String> = (15..25).map(|i| format!("fail-carol-{}", 480 + i * 15)).collect();
    assert_eq!(grown[0]["evidence"], serde_json::json!([ids(0..10), last].concat()));
    let rows = db.count("SELECT count(*) FROM alert_evidence").await;
    assert_eq!(rows, 20, "evidence rows stay bounded");
}

#[tokio::test]
async fn a_spray_across_principals_is_one_alert_for_the_source() {
    let dir = tempfile::tempdir().unwrap();
    let db = TestDb::new().await;
    // Twelve failures from one address against six users in six minutes (two each, below
    // the per-user threshold), and a user's two typos from elsewhere.
    let users = ["ann", "ben", "cid", "dee", "eve", "fay"];
    let mut logins: Vec<(&str, i64)> = (0..12).map(|i| (users[i % 6], i as i64 * 30)).collect();
    let spray = failed_logins(&dir.path().join("spray.jsonl"), ATTACKER_IP, &logins);
    logins = vec![("ann", 100), ("ann", 130)];
    let typos = failed_logins(&dir.path().join("typos.jsonl"), "73.202.18.40", &logins);
    import(&db, &country_db(dir.path()), &[&spray, &typos]);
    let found = alerts(&db, &["--policy", "aws-password-spray"]);
    assert_eq!(found.len(), 1, "{found:?}");
    assert_eq!(found[0]["event_count"], 12);
    assert_eq!(found[0]["source_ip"], ATTACKER_IP);
    assert_eq!(found[0]["details"]["principal_count"], 6);
    assert_eq!(found[0]["evidence"].as_array().unwrap().len(), 12, "few enough to keep every one");
    assert!(alerts(&db, &["--policy", "aws-excessive-login-failures"]).is_empty(), "no user failed ten times");
}

/// A trail file of calls of `user` refused with AccessDenied, `(api, seconds after
/// 2026-11-12T10:00:00Z)` each (api as `service:Call`); event ids `denied-{api}-{seconds}`.
fn refused_calls(path: &Path, user: &str, calls: &[(&str, i64)]) -> PathBuf {
    let start: chrono::DateTime<chrono::Utc> = "2026-11-12T10:00:00Z".parse().unwrap();
    let lines: Vec<String> = calls
        .iter()
        .map(|(api, seconds)| {
            let (service, name) = api.split_once(':').unwrap();
            let time = (start + chrono::Duration::seconds(*seconds)).format("%Y-%m-%dT%H:%M:%SZ").to_string();
            serde_json::json!({"eventVersion": "1.09", "eventTime": time,
                "eventSource": format!("{service}.amazonaws.com"), "eventName": name, "awsRegion": "us-east-1",
                "sourceIPAddress": ATTACKER_IP, "userAgent": "aws-cli/2.15", "eventID": format!("denied-{api}-{seconds}"),
                "eventType": "AwsApiCall", "recipientAccountId": "111122223333", "errorCode": "AccessDenied",
                "errorMessage": format!("User: arn:aws:iam::111122223333:user/{user} is not authorized to perform: {service}:{name}"),
                "userIdentity": {"type": "IAMUser", "arn": format!("arn:aws:iam::111122223333:user/{user}"),
                    "accountId": "111122223333", "userName": user, "accessKeyId": "AKIAEXAMPLEKEY"}})
            .to_string()
        })
        .collect();
    std::fs::write(path, lines.join("\n")).unwrap();
    path.to_path_buf()
}

#[tokio::test]
async fn reconnaissance_split_over_two_imports_is_one_alert_with_every_refusal() {
    let dir = tempfile::tempdir().unwrap();
    let geo = country_db(dir.path());
    let db = TestDb::new().await;
    let apis = [
        "iam:ListUsers",
        "iam:ListRoles",
        "s3:ListBuckets",
        "ec2:DescribeInstances",
        "kms:ListKeys",
        "secretsmanager:ListSecrets",
        "lambda:ListFunctions",
        "rds:DescribeDBInstances",
        "cloudtrail:DescribeTrails",
        "guardduty:ListDetectors",
        "sts:GetSessionToken",
        "ssm:DescribeParameters",
    ];
    let calls: Vec<(&str, i64)> = apis.iter().enumerate().map(|(i, api)| (*api, i as i64 * 30)).collect();
    // Six APIs: not yet reconnaissance.
    import(&db, &geo, &[&refused_calls(&dir.path().join("first.jsonl"), "mallory", &calls[..6])]);
    assert!(alerts(&db, &["--policy", "aws-reconnaissance-burst"]).is_empty());
    // Six more within the window, imported later: the burst holds all twelve.
    import(&db, &geo, &[&refused_calls(&dir.path().join("more.jsonl"), "mallory", &calls[6..])]);
    let found = alerts(&db, &["--policy", "aws-reconnaissance-burst"]);
    assert_eq!(found.len(), 1, "{found:?}");
    assert_eq!(found[0]["event_count"], 12);
    assert_eq!(found[0]["details"]["api_count"], 12);
    assert_eq!(found[0]["principal"], "arn:aws:iam::111122223333:user/mallory");
    assert_eq!(found[0]["evidence"].as_array().unwrap().len(), 12);
    // Importing both again changes nothing.
    import(&db, &geo, &[&dir.path().join("first.jsonl"), &dir.path().join("more.jsonl")]);
    assert_eq!(alerts(&db, &["--policy", "aws-reconnaissance-burst"]), found);
}

/// A pass reports where its time went, stage by stage, as `skywarden import --json` shows it
/// beside each step of the command; `/metrics` adds the stages up over the process's passes.
#[tokio::test]
async fn a_pass_reports_its_time_by_stage() {
    let db = TestDb::new().await;
    let dir = tempfile::tempdir().unwrap();
    let geo = country_db(dir.path());
    let summary = import(&db, &geo, &[&incident()]);
    let stages = summary["detection"]["stage_ms"].as_object().expect("stage times in the summary");
    // The sample holds console logins and raises alerts: those stages ran.
    for stage in ["events", "api_activity", "network", "logins", "storing", "relinking"] {
        assert!(stages.get(stage).is_some_and(Value::is_u64), "{stage} in {summary}");
    }
    for step in ["import", "detection", "search_index"] {
        assert!(summary["steps_ms"][step].is_u64(), "{step} in {summary}");
    }

    let events = |metrics: &str| -> f64 {
        let line = metrics
            .lines()
            .find(|l| l.starts_with("skywarden_detection_stage_seconds_total{stage=\"events\"}"))
            .expect("the events stage in /metrics");
        line.rsplit(' ').next().unwrap().parse().unwrap()
    };
    let scope = skywarden::detect::Scope::EventsSince(chrono::DateTime::UNIX_EPOCH);
    let before = events(&crate::support::metrics::scrape(&db.pool).await);
    let pass = skywarden::detect::run(&db.pool, &skywarden::detect::PolicySet::builtin(), scope).await.unwrap();
    assert!(pass.events_evaluated > 0);
    let after = events(&crate::support::metrics::scrape(&db.pool).await);
    assert!(after > before, "the pass's time is added: {before} -> {after}");
}

/// Detection's scan reads events without their raw record and fetches it, a window at a time,
/// only for events whose rules ask for it: over several windows of a realistic trail, the event
/// rules' evidence is exactly what the same rules give on the fully parsed events.
#[tokio::test]
async fn event_rules_find_over_a_scan_without_raw_records_what_they_find_on_full_events() {
    use skywarden::detect::{PolicyEvent, PolicySet};
    use skywarden::ingest::cloudtrail::CloudTrailEvent;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("trail.json");
    // Several of the scan's windows, with logins and writes (whose rules read the record) in each.
    crate::support::synthetic::generate_events(&file, 4_500).unwrap();
    let text = std::fs::read_to_string(&file).unwrap();
    let records = records(&text);
    let policies = PolicySet::builtin();
    let mut expected = std::collections::BTreeSet::new();
    for record in records {
        let event = PolicyEvent::from_parsed(CloudTrailEvent::parse(record.get(), None).unwrap(), None);
        let mut findings = policies.sigma.evaluate(&event, None);
        findings.extend(policies.detectors.evaluate_event(&event, None));
        expected.extend(findings.into_iter().map(|f| (f.policy_id, f.evidence_id)));
    }
    let event_policies: std::collections::BTreeSet<String> = expected.iter().map(|(p, _)| p.clone()).collect();
    assert!(expected.len() >= 10 && event_policies.len() >= 2, "the trail exercises the rules: {expected:?}");

    let db = TestDb::new().await;
    let output = db.skywarden(&["import", "--json", &file.display().to_string()]);
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let stored: Vec<(String, String)> = sqlx::query_as(
        "SELECT a.policy_id, e.event_id FROM alert_evidence e JOIN alerts a USING (account_id, alert_id)
         WHERE a.policy_id = ANY($1)",
    )
    .bind(event_policies.iter().cloned().collect::<Vec<String>>())
    .fetch_all(&db.pool)
    .await
    .unwrap();
    let stored: std::collections::BTreeSet<(String, String)> = stored.into_iter().collect();
    assert_eq!(stored, expected);
}
