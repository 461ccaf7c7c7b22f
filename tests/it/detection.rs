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
