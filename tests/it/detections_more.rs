//! The investigation detections of issue 16 end to end, on generated data that mixes intrusions
//! with weeks of benign work: `aws-rare-sensitive-api` (and its baseline read back from stored
//! events, whatever order files come in), `aws-flow-port-scan` in both directions,
//! `aws-flow-suspicious-destination` (Tor exits and open incidents' addresses) and
//! `aws-password-spray` over one AS. Everything goes through `skywarden import` into a
//! database of its own; the Tor half also through the library, which is where the network
//! context reaches detection.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use chrono::{DateTime, Duration, Utc};
use serde_json::{Value, json};
use skywarden::detect::{PolicySet, Scope};
use skywarden::geo::{GeoDb, NetworkLists};

use crate::support::TestDb;

pub(crate) const ACCOUNT: &str = "111122223333";
pub(crate) const INTRUDER_IP: &str = "203.0.113.50";

pub(crate) struct Dir(pub(crate) PathBuf);

impl Dir {
    pub(crate) fn new(name: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("skywarden-more-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        Self(dir)
    }

    pub(crate) fn write(&self, name: &str, text: &str) -> PathBuf {
        let path = self.0.join(name);
        std::fs::write(&path, text).unwrap();
        path
    }

    pub(crate) fn trail(&self, name: &str, records: &[Value]) -> PathBuf {
        self.write(name, &json!({ "Records": records }).to_string())
    }
}

impl Drop for Dir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

pub(crate) fn day(n: i64) -> DateTime<Utc> {
    "2026-10-01T00:00:00Z".parse::<DateTime<Utc>>().unwrap() + Duration::days(n)
}

pub(crate) fn user(name: &str) -> Value {
    json!({"type": "IAMUser", "principalId": format!("AIDA{}", name.to_uppercase()),
           "arn": format!("arn:aws:iam::{ACCOUNT}:user/{name}"), "accountId": ACCOUNT,
           "accessKeyId": format!("AKIA{:0>16}", name.to_uppercase()), "userName": name})
}

pub(crate) fn role_session(role: &str, session: &str) -> Value {
    json!({"type": "AssumedRole", "principalId": format!("AROAEXAMPLE:{session}"),
           "arn": format!("arn:aws:sts::{ACCOUNT}:assumed-role/{role}/{session}"), "accountId": ACCOUNT,
           "accessKeyId": "ASIAEXAMPLEKEY000001",
           "sessionContext": {"sessionIssuer": {"type": "Role", "arn": format!("arn:aws:iam::{ACCOUNT}:role/{role}"),
                              "accountId": ACCOUNT, "userName": role},
                              "attributes": {"creationDate": "2026-10-01T00:00:00Z", "mfaAuthenticated": "false"}}})
}

/// A CloudTrail record of `service` (`iam`) call `name`, read-only when its name says so.
pub(crate) fn call(
    time: DateTime<Utc>,
    service: &str,
    name: &str,
    identity: &Value,
    ip: &str,
    error: Option<&str>,
) -> Value {
    let read_only = ["Get", "List", "Describe"].iter().any(|p| name.starts_with(p));
    let mut record = json!({
        "eventVersion": "1.09", "userIdentity": identity,
        "eventTime": time.format("%Y-%m-%dT%H:%M:%SZ").to_string(),
        "eventSource": format!("{service}.amazonaws.com"), "eventName": name, "awsRegion": "us-east-1",
        "sourceIPAddress": ip, "userAgent": "aws-cli/2.15.0 Python/3.11.6 Linux/6.1",
        "requestParameters": {}, "responseElements": null,
        "eventID": format!("{:032x}", xxhash_rust::xxh3::xxh3_128(format!("{time}{name}{identity}{ip}").as_bytes())),
        "readOnly": read_only, "eventType": "AwsApiCall", "managementEvent": true, "recipientAccountId": ACCOUNT,
    });
    if let Some(code) = error {
        record["errorCode"] = code.into();
        record["errorMessage"] = "User is not authorized to perform this operation".into();
    }
    record
}

pub(crate) fn import(db: &TestDb, extra: &[&str], paths: &[&Path]) -> Value {
    let mut args = vec!["import", "--json"];
    args.extend(extra);
    let paths: Vec<String> = paths.iter().map(|p| p.display().to_string()).collect();
    args.extend(paths.iter().map(String::as_str));
    let output = db.skywarden(&args);
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    serde_json::from_slice(&output.stdout).unwrap()
}

/// (subject, severity, event count, details, incident) of a policy's alerts, by subject.
pub(crate) async fn alerts(db: &TestDb, policy: &str) -> Vec<(String, String, i64, Value, Option<String>)> {
    sqlx::query_as::<_, (String, String, i64, Value, Option<String>)>(
        "SELECT split_part(dedup_key, '@', 1), severity::text, event_count, details, incident_id
         FROM alerts WHERE policy_id = $1 ORDER BY 1",
    )
    .bind(policy)
    .fetch_all(&db.pool)
    .await
    .unwrap()
}

const BENIGN_ADMIN_APIS: [(&str, &str); 4] =
    [("iam", "AttachUserPolicy"), ("iam", "CreateAccessKey"), ("s3", "PutBucketPolicy"), ("kms", "PutKeyPolicy")];

/// Five weeks of an admin, a deploy role (a new session a day), a developer and AWS Config.
pub(crate) fn benign_weeks() -> Vec<Value> {
    let (alice, bob) = (user("alice"), user("bob"));
    let mut records = Vec::new();
    for d in 0..35 {
        let morning = day(d) + Duration::hours(9);
        records.push(call(morning, "iam", "GetAccountSummary", &alice, "84.128.1.2", None));
        if d % 5 == 0 {
            for (i, (service, name)) in BENIGN_ADMIN_APIS.iter().enumerate() {
                records.push(call(
                    morning + Duration::minutes(i as i64 + 1),
                    service,
                    name,
                    &alice,
                    "84.128.1.2",
                    None,
                ));
            }
        }
        let ci = role_session("ci-deploy", &format!("build-{d}"));
        for (i, name) in ["CreateRole", "PutRolePolicy", "DeleteRole"].iter().enumerate() {
            records.push(call(
                morning + Duration::hours(2) + Duration::minutes(i as i64),
                "iam",
                name,
                &ci,
                "10.0.4.7",
                None,
            ));
        }
        for (i, (service, name)) in
            [("ec2", "DescribeInstances"), ("s3", "ListBuckets"), ("sts", "GetCallerIdentity")].iter().enumerate()
        {
            records.push(call(
                morning + Duration::hours(1) + Duration::minutes(i as i64),
                service,
                name,
                &bob,
                "84.130.9.9",
                None,
            ));
        }
        let config = role_session("AWSServiceRoleForConfig", "AWSConfig-Describe");
        records.push(call(
            morning + Duration::hours(3),
            "config",
            "PutEvaluations",
            &config,
            "config.amazonaws.com",
            None,
        ));
    }
    // carol's account is created on day 34: she has no history yet.
    records.push(call(day(34) + Duration::hours(9), "sts", "GetCallerIdentity", &user("carol"), "84.128.7.7", None));
    records
}

/// The IAM calls of an attacker making themselves at home (38), then logging and a key.
const ATTACK_IAM: [&str; 38] = [
    "CreateUser",
    "CreateAccessKey",
    "AttachUserPolicy",
    "PutUserPolicy",
    "CreateLoginProfile",
    "AddUserToGroup",
    "CreateGroup",
    "AttachGroupPolicy",
    "PutGroupPolicy",
    "CreateRole",
    "AttachRolePolicy",
    "PutRolePolicy",
    "UpdateAssumeRolePolicy",
    "CreatePolicy",
    "CreatePolicyVersion",
    "SetDefaultPolicyVersion",
    "CreateInstanceProfile",
    "AddRoleToInstanceProfile",
    "UpdateLoginProfile",
    "UpdateAccessKey",
    "TagUser",
    "TagRole",
    "CreateSAMLProvider",
    "CreateOpenIDConnectProvider",
    "UpdateRole",
    "DetachUserPolicy",
    "DeleteUserPolicy",
    "DetachRolePolicy",
    "DeleteRolePolicy",
    "CreateVirtualMFADevice",
    "EnableMFADevice",
    "DeactivateMFADevice",
    "DeleteLoginProfile",
    "UploadSSHPublicKey",
    "UploadSigningCertificate",
    "CreateServiceSpecificCredential",
    "UpdateAccountPasswordPolicy",
    "ChangePassword",
];

/// Day 35: bob's stolen keys make 40 sensitive calls new for him; the others do their usual.
/// Day 36: bob's keys call CreateUser again (no longer new).
pub(crate) fn attack_days() -> Vec<Value> {
    let (alice, bob) = (user("alice"), user("bob"));
    let at = day(35) + Duration::hours(10);
    let mut records: Vec<Value> = ATTACK_IAM
        .iter()
        .enumerate()
        .map(|(i, name)| call(at + Duration::seconds(20 * i as i64), "iam", name, &bob, INTRUDER_IP, None))
        .collect();
    // A deliberately failing call a second before the real one does not make it familiar.
    let decoy = Some("MalformedPolicyDocument");
    records.push(call(at - Duration::seconds(1), "iam", ATTACK_IAM[0], &bob, INTRUDER_IP, decoy));
    records.push(call(at + Duration::minutes(14), "iam", "CreateUser", &bob, INTRUDER_IP, None));
    records.push(call(at + Duration::minutes(15), "cloudtrail", "StopLogging", &bob, INTRUDER_IP, None));
    records.push(call(at + Duration::minutes(16), "kms", "ScheduleKeyDeletion", &bob, INTRUDER_IP, None));
    records.push(call(
        at + Duration::minutes(17),
        "organizations",
        "LeaveOrganization",
        &bob,
        INTRUDER_IP,
        Some("AccessDenied"),
    ));
    records.push(call(at + Duration::minutes(18), "kms", "Decrypt", &bob, INTRUDER_IP, None));
    let morning = day(35) + Duration::hours(9);
    for (i, (service, name)) in BENIGN_ADMIN_APIS.iter().enumerate() {
        records.push(call(morning + Duration::minutes(i as i64), service, name, &alice, "84.128.1.2", None));
    }
    records.push(call(morning, "kms", "GenerateDataKey", &alice, "84.128.1.2", None));
    // EBS creating a KMS grant on alice's behalf (an encrypted volume) is not alice's own.
    records.push(call(morning + Duration::hours(1), "kms", "CreateGrant", &alice, "ec2.amazonaws.com", None));
    let ci = role_session("ci-deploy", "build-35");
    records.push(call(morning + Duration::hours(2), "iam", "CreateRole", &ci, "10.0.4.7", None));
    let config = role_session("AWSServiceRoleForConfig", "AWSConfig-Describe");
    records.push(call(morning, "iam", "CreateServiceLinkedRole", &config, "config.amazonaws.com", None));
    records.push(call(morning + Duration::hours(4), "iam", "CreateUser", &user("carol"), "84.128.7.7", None));
    records.push(call(day(36) + Duration::hours(10), "iam", "CreateUser", &bob, INTRUDER_IP, None));
    records
}

const RARE: &str = "aws-rare-sensitive-api";

#[tokio::test]
async fn a_principal_s_new_sensitive_calls_are_one_alert_and_weeks_of_benign_work_none() {
    let dir = Dir::new("rare");
    let weeks = dir.trail("weeks.json", &benign_weeks());
    let attack = dir.trail("attack.json", &attack_days());
    let db = TestDb::new().await;
    import(&db, &[], &[&weeks, &attack]);
    let found = alerts(&db, RARE).await;
    assert_eq!(found.len(), 1, "only bob's stolen keys: {found:?}");
    let (subject, severity, count, details, _) = &found[0];
    assert_eq!(subject, &format!("arn:aws:iam::{ACCOUNT}:user/bob"));
    assert_eq!((severity.as_str(), *count), ("medium", 40), "38 IAM calls, StopLogging, ScheduleKeyDeletion");
    assert_eq!(details["api_count"], 40);
    let apis: Vec<&str> = details["apis"].as_array().unwrap().iter().map(|a| a["api"].as_str().unwrap()).collect();
    assert_eq!(apis[0], "iam:CreateUser");
    assert!(apis.contains(&"cloudtrail:StopLogging") && apis.contains(&"kms:ScheduleKeyDeletion"));
    assert!(!apis.contains(&"organizations:LeaveOrganization") && !apis.contains(&"kms:Decrypt"), "{apis:?}");
    let mitre: Vec<String> = sqlx::query_scalar("SELECT unnest(mitre) FROM alerts WHERE policy_id = $1 ORDER BY 1")
        .bind(RARE)
        .fetch_all(&db.pool)
        .await
        .unwrap();
    assert_eq!(mitre, ["TA0003/T1098"]);
    let stop = details["apis"].as_array().unwrap().iter().find(|a| a["api"] == "cloudtrail:StopLogging").unwrap();
    assert_eq!(stop["mitre"], "TA0005/T1562.008");

    // Importing the same files again (and so detecting again) changes nothing.
    let again = import(&db, &[], &[&weeks, &attack]);
    assert_eq!(again["detection"]["new_alerts"], 0, "{again}");
    assert_eq!(alerts(&db, RARE).await, found);

    // The attack imported before the weeks that make bob's baseline: nothing at first (bob has
    // no history), then the same alert once the older file arrives.
    let late = TestDb::new().await;
    import(&late, &[], &[&attack]);
    assert!(alerts(&late, RARE).await.is_empty());
    import(&late, &[], &[&weeks]);
    let later = alerts(&late, RARE).await;
    assert_eq!(later.len(), 1, "{later:?}");
    assert_eq!((later[0].0.as_str(), later[0].2, &later[0].3["api_count"]), (subject.as_str(), 40, &json!(40)));
}

pub(crate) const FLOW_HEADER: &str = "version account-id interface-id srcaddr dstaddr srcport dstport protocol packets bytes start end action log-status\n";

pub(crate) fn flow(
    at: DateTime<Utc>,
    eni: &str,
    (src, sport): (&str, u32),
    (dst, dport): (&str, u32),
    action: &str,
) -> String {
    let end = at + Duration::seconds(50);
    format!(
        "2 {ACCOUNT} {eni} {src} {dst} {sport} {dport} 6 3 180 {} {} {action} OK\n",
        at.timestamp(),
        end.timestamp()
    )
}

/// Two hours of a web server's clients, background noise, an outside scan and an inside sweep.
pub(crate) fn scan_flows() -> String {
    let hour = day(42) + Duration::hours(5);
    let mut text = String::from(FLOW_HEADER);
    for i in 0..300u32 {
        let at = hour + Duration::seconds(i64::from(i) * 20);
        let client = format!("198.18.{}.{}", i / 200, i % 200 + 1);
        text += &flow(at, "eni-0web0000000000001", (&client, 40_000 + i), ("10.0.1.5", 443), "ACCEPT");
        text += &flow(at, "eni-0web0000000000001", ("10.0.1.5", 443), (&client, 40_000 + i), "ACCEPT");
    }
    for port in [22, 23, 3389] {
        text += &flow(
            hour + Duration::minutes(3),
            "eni-0web0000000000001",
            ("192.0.2.77", 51_000),
            ("10.0.1.5", port),
            "REJECT",
        );
    }
    for port in 1..=200u32 {
        let action = if port == 443 { "ACCEPT" } else { "REJECT" };
        let at = hour + Duration::minutes(20) + Duration::seconds(i64::from(port));
        text += &flow(at, "eni-0web0000000000001", ("198.51.100.23", 61_000), ("10.0.1.5", port), action);
    }
    // The compromised app server sweeps the database subnet for SMB over two hours. Each probe
    // leaves two records, as in a real VPC: accepted where it left the app server, rejected
    // where the target's security group dropped it (one target answers).
    for host in 1..=60u32 {
        let action = if host == 10 { "ACCEPT" } else { "REJECT" };
        let at = hour + Duration::minutes(40) + Duration::seconds(i64::from(host) * 60);
        let (probe, target) = (("10.0.1.25", 49_000 + host), (format!("10.0.2.{host}"), 445));
        text += &flow(at, "eni-0app0000000000001", probe, (&target.0, target.1), "ACCEPT");
        text += &flow(at, &format!("eni-0db{host:014}"), probe, (&target.0, target.1), action);
    }
    for i in 0..50 {
        let at = hour + Duration::minutes(i);
        text += &flow(at, "eni-0app0000000000001", ("10.0.1.25", 50_000 + i as u32), ("10.0.3.10", 5432), "ACCEPT");
    }
    text
}

#[tokio::test]
async fn port_scans_from_outside_and_inside_alert_and_busy_servers_do_not() {
    let dir = Dir::new("scan");
    let flows = dir.write("flows.log", &scan_flows());
    let db = TestDb::new().await;
    import(&db, &[], &[&flows]);
    // Scans from outside are off by default (the internet scans every public address).
    let found = alerts(&db, "aws-flow-port-scan").await;
    let summary: Vec<(&str, &str, &str)> = found
        .iter()
        .map(|(subject, severity, _, details, _)| {
            (subject.as_str(), severity.as_str(), details["direction"].as_str().unwrap())
        })
        .collect();
    assert_eq!(summary, [("10.0.1.25", "high", "internal")]);
    let (_, _, _, sweep, _) = &found[0];
    assert!(sweep["hosts"].as_i64().unwrap() >= 25, "{sweep}");
    assert_eq!(sweep["sample_ports"], json!([445]));
    let again = import(&db, &[], &[&flows]);
    assert_eq!(again["detection"]["new_alerts"], 0, "{again}");
    assert_eq!(alerts(&db, "aws-flow-port-scan").await.len(), 1);

    // Switched on, the scan from outside is one alert for the interface it knocked on.
    let policies = dir.0.join("policies");
    std::fs::create_dir_all(&policies).unwrap();
    std::fs::write(policies.join("detectors.yaml"), "flow_port_scan:\n  include_inbound: true\n").unwrap();
    let inbound_db = TestDb::new().await;
    import(&inbound_db, &["--policies", &policies.display().to_string()], &[&flows]);
    let found = alerts(&inbound_db, "aws-flow-port-scan").await;
    let subjects: Vec<&str> = found.iter().map(|(subject, ..)| subject.as_str()).collect();
    assert_eq!(subjects, ["10.0.1.25", "inbound:eni-0web0000000000001"]);
    let inbound = &found[1].3;
    assert_eq!((found[1].1.as_str(), &inbound["scanner_count"]), ("low", &json!(1)));
    assert_eq!(inbound["scanners"][0]["source"], "198.51.100.23");
    assert_eq!(inbound["scanners"][0]["ports"], 200);
}

pub(crate) const TOR_EXIT: &str = "185.220.101.4";
pub(crate) const APP_ENI: &str = "eni-0app0000000000001";

/// The intruder stops the trail from 203.0.113.50 (an alert, so an open incident holding the
/// address); the app server then calls back to that address and to a Tor exit, the web server
/// answers a client at that address, and the app server reaches a neighbour of it.
pub(crate) fn callback_files(dir: &Dir) -> (PathBuf, PathBuf) {
    let at = day(50) + Duration::hours(3);
    let trail = dir.trail("trail.json", &[call(at, "cloudtrail", "StopLogging", &user("bob"), INTRUDER_IP, None)]);
    let mut text = String::from(FLOW_HEADER);
    for h in 1..=2 {
        let t = at + Duration::hours(h);
        text += &flow(t, APP_ENI, ("10.0.1.25", 50_123), (INTRUDER_IP, 4444), "ACCEPT");
        text += &flow(t + Duration::minutes(1), APP_ENI, ("10.0.1.25", 50_124), (TOR_EXIT, 9001), "ACCEPT");
    }
    text += &flow(at + Duration::hours(1), "eni-0web0000000000001", ("10.0.1.5", 443), (INTRUDER_IP, 51_515), "ACCEPT");
    text += &flow(at + Duration::hours(1), APP_ENI, ("10.0.1.25", 50_125), ("203.0.113.51", 4444), "ACCEPT");
    text += &flow(at + Duration::hours(1), "eni-0db00000000000001", ("10.0.2.10", 50_126), (TOR_EXIT, 9001), "REJECT");
    (trail, dir.write("callbacks.log", &text))
}

#[tokio::test]
async fn instances_calling_an_open_incident_s_address_or_a_tor_exit_alert_once_per_interface_and_address() {
    let dir = Dir::new("dest");
    let (trail, flows) = callback_files(&dir);
    let db = TestDb::new().await;
    import(&db, &[], &[&trail, &flows]);
    let found = alerts(&db, "aws-flow-suspicious-destination").await;
    assert_eq!(found.len(), 1, "the callback to the intruder only (no Tor list given): {found:?}");
    let (subject, severity, count, details, incident) = &found[0];
    assert_eq!((subject.as_str(), severity.as_str(), *count), (format!("{APP_ENI}>{INTRUDER_IP}").as_str(), "high", 2));
    let stop_incident: Option<String> =
        sqlx::query_scalar("SELECT incident_id FROM alerts WHERE policy_id = 'aws-cloudtrail-logging-disabled'")
            .fetch_one(&db.pool)
            .await
            .unwrap();
    assert!(incident.is_some());
    assert_eq!(incident, &stop_incident, "the callback joins the intruder's incident");
    assert_eq!(details["incidents"], json!([stop_incident.unwrap()]));

    // With the Tor exits given to detection, the call to the exit alerts too (once for its two
    // hours); the rejected one from the database server does not.
    let tor = dir.write("tor.txt", &format!("{TOR_EXIT}\n"));
    let lists = NetworkLists::open(Some(tor.as_path()), None, None, None).unwrap();
    let geo = Arc::new(GeoDb::open_with(&[], lists).unwrap());
    let policies = PolicySet::builtin().with_geo(Some(geo));
    for _ in 0..2 {
        skywarden::detect::run(&db.pool, &policies, Scope::EventsSince(day(50))).await.unwrap();
    }
    let found = alerts(&db, "aws-flow-suspicious-destination").await;
    let subjects: Vec<(&str, i64, &Value)> = found.iter().map(|(s, _, c, d, _)| (s.as_str(), *c, &d["tor"])).collect();
    assert_eq!(
        subjects,
        [
            (format!("{APP_ENI}>{TOR_EXIT}").as_str(), 2, &json!(true)),
            (format!("{APP_ENI}>{INTRUDER_IP}").as_str(), 2, &json!(false)),
        ]
    );

    // Once the incident is resolved, its address is no longer suspicious.
    sqlx::query("UPDATE incidents SET status = 'resolved'").execute(&db.pool).await.unwrap();
    let next = day(51) + Duration::hours(3);
    let later = dir.write(
        "later.log",
        &(String::from(FLOW_HEADER)
            + &flow(next, "eni-0app0000000000002", ("10.0.1.26", 50_200), (INTRUDER_IP, 4444), "ACCEPT")),
    );
    import(&db, &[], &[&later]);
    assert_eq!(alerts(&db, "aws-flow-suspicious-destination").await.len(), 2);
}

const ASN_CSV: &str =
    "45.137.21.0,45.137.22.255,64500,Example Hosting\n84.128.0.0,84.191.255.255,3320,Deutsche Telekom AG\n";

fn failed_login(time: DateTime<Utc>, name: &str, ip: &str) -> Value {
    json!({
        "eventVersion": "1.08", "userIdentity": {"type": "IAMUser", "principalId": format!("AIDA{}", name.to_uppercase()),
            "arn": format!("arn:aws:iam::{ACCOUNT}:user/{name}"), "accountId": ACCOUNT, "userName": name},
        "eventTime": time.format("%Y-%m-%dT%H:%M:%SZ").to_string(), "eventSource": "signin.amazonaws.com",
        "eventName": "ConsoleLogin", "awsRegion": "us-east-1", "sourceIPAddress": ip, "userAgent": "Mozilla/5.0",
        "errorMessage": "Failed authentication", "requestParameters": null, "responseElements": {"ConsoleLogin": "Failure"},
        "additionalEventData": {"MFAUsed": "No"}, "eventID": format!("fail-{name}-{ip}-{}", time.timestamp()),
        "eventType": "AwsConsoleSignIn", "recipientAccountId": ACCOUNT
    })
}

#[tokio::test]
async fn a_spray_spread_over_one_as_is_one_alert_beside_address_sprays() {
    let dir = Dir::new("spray");
    let asn = dir.write("asn-ipv4.csv", ASN_CSV);
    let start = day(60) + Duration::hours(2);
    let mut records = Vec::new();
    // Twelve users, three addresses of AS64500, four each: no address reaches five users.
    let spread = ["45.137.21.9", "45.137.21.77", "45.137.22.130"];
    for i in 0..12 {
        records.push(failed_login(start + Duration::minutes(i), &format!("user{i}"), spread[i as usize % 3]));
    }
    // Benign: colleagues mistyping from home over a week (AS3320, one failure each).
    for i in 0..10 {
        records.push(failed_login(
            day(55) + Duration::hours(i * 13),
            &format!("staff{i}"),
            &format!("84.128.3.{}", i + 1),
        ));
    }
    // A day later one address of AS64500 sprays on its own, beside four users from two other
    // addresses: the AS holds ten users from three addresses, but the address's alert tells it.
    for i in 0..6 {
        records.push(failed_login(day(61) + Duration::minutes(i), &format!("admin{i}"), "45.137.21.200"));
    }
    for i in 0..4 {
        records.push(failed_login(
            day(61) + Duration::minutes(7 + i),
            &format!("user{}", 20 + i),
            spread[i as usize % 2],
        ));
    }
    let trail = dir.trail("logins.json", &records);
    let db = TestDb::new().await;
    import(&db, &["--geoip", &asn.display().to_string()], &[&trail]);
    let found = alerts(&db, "aws-password-spray").await;
    let subjects: Vec<(&str, i64)> = found.iter().map(|(s, _, c, _, _)| (s.as_str(), *c)).collect();
    assert_eq!(subjects, [("asn:64500", 12), ("source:45.137.21.200", 6)]);
    let details = &found[0].3;
    assert_eq!((details["asn"].as_i64(), details["source_count"].as_i64()), (Some(64500), Some(3)));
    let title: String =
        sqlx::query_scalar("SELECT title FROM alerts WHERE dedup_key LIKE 'asn:%'").fetch_one(&db.pool).await.unwrap();
    assert!(
        title.starts_with("12 failed console logins from 3 addresses of AS64500 Example Hosting against 12 principals"),
        "{title}"
    );
}
