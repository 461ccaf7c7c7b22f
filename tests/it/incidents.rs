//! The incident engine on generated data: six intrusions (one that creates a backdoor user and
//! key and exfiltrates from an instance it took over, one that escalates through an assumed
//! role from a second address, a password spray from a hosting provider that gets in (its
//! logins from an anonymising network tied to it), a login from Tor that probes
//! what it may call, an instance's stolen credentials used from a hosting provider for IAM
//! writes, and a port sweep from inside the VPC) mixed with three weeks of benign work, imported
//! with network context (ASN data, Tor/VPN/hosting lists, AWS's ip-ranges.json). Each intrusion must be
//! exactly one incident holding all its alerts, flows included; benign alerts never join one;
//! re-running detection changes nothing; importing the intrusion's later half first and its
//! start afterwards ends with the same single incident (merged, never split).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use chrono::{DateTime, Duration, Utc};
use serde_json::{Value, json};
use skywarden::alerts::incident_pages::{self, IncidentFilter, IncidentUpdate};
use skywarden::alerts::incidents::IncidentStatus;

use crate::support::TestDb;
use crate::support::incident_setup::{
    self as setup, ACCOUNT, Detection, NetworkContext, event, incidents_of_alerts, user_arn, write_trail,
};

const DAY: &str = "2026-03-10T00:00:00Z";
/// Intrusion A: console login, then a backdoor used from elsewhere, and exfiltration to the
/// login's network.
const A_LOGIN_IP: &str = "185.193.88.20";
const A_EXFIL_IP: &str = "185.193.88.77";
const A_BACKDOOR_IP: &str = "91.92.109.14";
const A_INSTANCE: &str = "i-0aaaa1111bbbb2222";
const A_ENI: &str = "eni-0aaaa1111bbbb2222";
const BACKDOOR_KEY: &str = "AKIAFAKEBACKDOOR0001";
/// Intrusion B: a stolen key escalates to an admin role, whose session is used from a second
/// address.
const B_IP: &str = "45.133.1.9";
const B_SECOND_IP: &str = "80.94.95.112";
const B_ROLE_KEY: &str = "ASIAFAKEPWNSESSION01";
const OFFICE_IP: &str = "81.2.69.160";

fn at(offset: Duration) -> DateTime<Utc> {
    DAY.parse::<DateTime<Utc>>().unwrap() + offset
}

fn hours(h: i64) -> DateTime<Utc> {
    at(Duration::hours(h))
}

fn iam_user(name: &str, key: &str, console: bool) -> Value {
    let mut identity = json!({
        "type": "IAMUser", "principalId": format!("AIDA{}", name.to_uppercase()), "arn": user_arn(name),
        "accountId": ACCOUNT, "accessKeyId": key, "userName": name,
    });
    if console {
        identity["sessionContext"] =
            json!({"attributes": {"creationDate": DAY, "mfaAuthenticated": "false"}, "sessionIssuer": {}});
    }
    identity
}

fn console(time: DateTime<Utc>, user: &str, ip: &str, mfa: bool) -> Value {
    let mut record = setup::console_login(time, user, ip, true);
    if mfa {
        record["additionalEventData"]["MFAUsed"] = json!("Yes");
    }
    record
}

/// A call made from the console (a temporary key of the user's own session,
/// `sessionCredentialFromConsole`).
fn console_call(time: DateTime<Utc>, user: &str, ip: &str, name: &str, source: &str, extra: Value) -> Value {
    let key = format!("ASIACONSOLE{:0>9}", user.to_uppercase());
    let mut record = event(time, name, source, iam_user(user, &key, true), ip, extra);
    record["sessionCredentialFromConsole"] = json!("true");
    record
}

fn intrusion_a_start() -> Vec<Value> {
    let iam = "iam.amazonaws.com";
    vec![
        console(hours(9), "alice", A_LOGIN_IP, false),
        console_call(
            hours(9) + Duration::minutes(5),
            "alice",
            A_LOGIN_IP,
            "CreateUser",
            iam,
            json!({"readOnly": false, "requestParameters": {"userName": "svc-backup"},
                   "responseElements": {"user": {"userName": "svc-backup", "arn": user_arn("svc-backup")}}}),
        ),
        console_call(
            hours(9) + Duration::minutes(6),
            "alice",
            A_LOGIN_IP,
            "CreateAccessKey",
            iam,
            json!({"readOnly": false, "requestParameters": {"userName": "svc-backup"},
                   "responseElements": {"accessKey": {"accessKeyId": BACKDOOR_KEY, "status": "Active",
                                                      "userName": "svc-backup"}}}),
        ),
        console_call(
            hours(9) + Duration::minutes(10),
            "alice",
            A_LOGIN_IP,
            "AssociateIamInstanceProfile",
            "ec2.amazonaws.com",
            json!({"readOnly": false,
                   "requestParameters": {"AssociateIamInstanceProfileRequest": {"InstanceId": A_INSTANCE,
                       "IamInstanceProfile": {"Name": "ssm-admin"}}},
                   "responseElements": {"AssociateIamInstanceProfileResponse": {"iamInstanceProfileAssociation": {
                       "associationId": "iip-assoc-0aaa", "instanceId": A_INSTANCE, "state": "associating"}}}}),
        ),
        console_call(
            hours(9) + Duration::minutes(12),
            "alice",
            A_LOGIN_IP,
            "AuthorizeSecurityGroupIngress",
            "ec2.amazonaws.com",
            json!({"readOnly": false,
                   "requestParameters": {"groupId": "sg-0aaaa1111", "ipPermissions": {"items": [{
                       "ipProtocol": "tcp", "fromPort": 22, "toPort": 22,
                       "ipRanges": {"items": [{"cidrIp": format!("{A_LOGIN_IP}/32")}]}}]}},
                   "responseElements": {"_return": true}}),
        ),
    ]
}

/// The backdoor key used two hours later from another address, and the flow log of the
/// instance sending 2 GB to the login's network.
fn intrusion_a_later() -> (Vec<Value>, String) {
    let events = vec![event(
        hours(11),
        "StopLogging",
        "cloudtrail.amazonaws.com",
        iam_user("svc-backup", BACKDOOR_KEY, false),
        A_BACKDOOR_IP,
        json!({"readOnly": false, "requestParameters": {"name": format!("arn:aws:cloudtrail:us-east-1:{ACCOUNT}:trail/main")}}),
    )];
    let mut flows = String::from(
        "version account-id interface-id srcaddr dstaddr srcport dstport protocol packets bytes start end action log-status vpc-id subnet-id instance-id\n",
    );
    for i in 0..4 {
        let start = hours(12) + Duration::minutes(10 * i);
        flows.push_str(&format!(
            "5 {ACCOUNT} {A_ENI} 10.0.1.25 {A_EXFIL_IP} 44321 443 6 400000 600000000 {} {} ACCEPT OK vpc-0a1 subnet-0a1 {A_INSTANCE}\n",
            start.timestamp(),
            (start + Duration::minutes(9)).timestamp()
        ));
    }
    (events, flows)
}

fn intrusion_b() -> Vec<Value> {
    let role_session = format!("arn:aws:sts::{ACCOUNT}:assumed-role/ops/pwn");
    let assumed = json!({
        "type": "AssumedRole", "principalId": "AROAOPS:pwn", "arn": role_session, "accountId": ACCOUNT,
        "accessKeyId": B_ROLE_KEY,
        "sessionContext": {"sessionIssuer": {"type": "Role", "principalId": "AROAOPS",
            "arn": format!("arn:aws:iam::{ACCOUNT}:role/ops"), "accountId": ACCOUNT, "userName": "ops"},
            "attributes": {"creationDate": DAY, "mfaAuthenticated": "false"}},
    });
    vec![
        event(
            hours(14),
            "AttachRolePolicy",
            "iam.amazonaws.com",
            iam_user("bob", "AKIAFAKEBOBKEY000001", false),
            B_IP,
            json!({"readOnly": false, "requestParameters": {"roleName": "ops",
                   "policyArn": "arn:aws:iam::aws:policy/AdministratorAccess"}}),
        ),
        event(
            hours(14) + Duration::minutes(2),
            "AssumeRole",
            "sts.amazonaws.com",
            iam_user("bob", "AKIAFAKEBOBKEY000001", false),
            B_IP,
            json!({"readOnly": false,
                   "requestParameters": {"roleArn": format!("arn:aws:iam::{ACCOUNT}:role/ops"), "roleSessionName": "pwn"},
                   "responseElements": {"credentials": {"accessKeyId": B_ROLE_KEY, "expiration": "Mar 10, 2026, 3:02:00 PM",
                                                        "sessionToken": "IQoJb3JpZ2luX2VjEXAMPLE"},
                                        "assumedRoleUser": {"assumedRoleId": "AROAOPS:pwn", "arn": role_session}}}),
        ),
        event(
            hours(14) + Duration::minutes(45),
            "DeleteDetector",
            "guardduty.amazonaws.com",
            assumed.clone(),
            B_SECOND_IP,
            json!({"readOnly": false, "requestParameters": {"detectorId": "12abc34d567e8fa901bc2d34e56789f0"}}),
        ),
        event(
            hours(14) + Duration::minutes(50),
            "StartSession",
            "ssm.amazonaws.com",
            assumed,
            B_SECOND_IP,
            json!({"readOnly": false, "requestParameters": {"target": "i-0bbbb3333cccc4444"},
                   "responseElements": {"sessionId": "pwn-0b1c2d3e4f", "streamUrl": "wss://ssmmessages.us-east-1.amazonaws.com/v1/data-channel/pwn-0b1c2d3e4f"}}),
        ),
    ]
}

/// Three weeks of benign work from the office, and an administrator who creates a deploy user
/// and its key (alert-worthy, but no intrusion).
fn benign() -> Vec<Value> {
    let mut events = Vec::new();
    for day in -14..7 {
        let morning = hours(24 * day + 8);
        for user in ["carol", "dave"] {
            events.push(console(morning, user, OFFICE_IP, true));
            for (i, name) in ["DescribeInstances", "DescribeSecurityGroups", "ListBuckets", "GetCallerIdentity"]
                .into_iter()
                .enumerate()
            {
                let mut record = console_call(
                    morning + Duration::minutes(5 + i as i64),
                    user,
                    OFFICE_IP,
                    name,
                    "ec2.amazonaws.com",
                    json!({}),
                );
                record["userIdentity"]["sessionContext"]["attributes"]["mfaAuthenticated"] = json!("true");
                events.push(record);
            }
        }
    }
    let iam = "iam.amazonaws.com";
    let when = hours(24 + 10);
    events.push(console(when, "erin", OFFICE_IP, true));
    events.push(console_call(
        when + Duration::minutes(3),
        "erin",
        OFFICE_IP,
        "CreateUser",
        iam,
        json!({"readOnly": false, "requestParameters": {"userName": "deploy-bot"}}),
    ));
    events.push(console_call(
        when + Duration::minutes(4),
        "erin",
        OFFICE_IP,
        "CreateAccessKey",
        iam,
        json!({"readOnly": false, "requestParameters": {"userName": "deploy-bot"},
               "responseElements": {"accessKey": {"accessKeyId": "AKIAFAKEDEPLOYBOT001", "userName": "deploy-bot"}}}),
    ));
    events
}

/// Intrusion D: a password spray from a rented server (a listed hosting provider's address) that
/// gets into henry's account.
const D_SPRAY_IP: &str = "45.137.21.40";
/// Intrusion E: heidi (weeks of office work) logs in from a Tor exit and probes what she may call.
const E_TOR_IP: &str = "185.220.101.4";
/// Intrusion F: the app server's instance credentials used from a hosting provider for IAM writes.
const F_IP: &str = "45.137.21.9";
const APP_ROLE: &str = "app-role";
const APP_INSTANCE: &str = "i-0eeee7777ffff8888";
/// Intrusion G: a host inside the VPC sweeps the database subnet for SMB.
const G_SCANNER: &str = "10.0.5.30";
/// The AWS addresses the app server's credentials come from every day: one in `ip-ranges.json`,
/// one in AWS's AS only.
const AWS_RANGES_IP: &str = "3.5.141.9";
const AWS_AS_IP: &str = "54.239.28.85";

/// The network data the import is given: ASN table (ip-location-db's CSV), Tor exits, VPN and
/// hosting lists, AWS's ip-ranges.json. The office is a home ISP; the intruders rent servers.
const NETWORK_ASN_CSV: &str = "\
3.5.140.0,3.5.143.255,16509,\"Amazon.com, Inc.\"\n\
45.133.1.0,45.133.1.255,64520,Example Transit One\n\
45.137.21.0,45.137.21.255,211252,\"Delis, LLC\"\n\
54.239.0.0,54.239.255.255,16509,\"Amazon.com, Inc.\"\n\
80.94.95.0,80.94.95.255,64521,Example Transit Two\n\
81.2.69.0,81.2.69.255,20712,Andrews & Arnold Ltd\n\
91.92.109.0,91.92.109.255,64522,Example Transit Three\n\
185.193.88.0,185.193.88.255,64523,Example Transit Four\n\
185.220.101.0,185.220.101.255,60729,Stiftung Erneuerbare Freiheit\n";
const NETWORK_TOR: &str = "ExitNode 0011BD2485AD45D984EC4159C88FC066E5E3300E\nPublished 2026-03-01 19:15:18\n\
    LastStatus 2026-03-12 20:00:00\nExitAddress 185.220.101.4 2026-03-12 20:04:13\n";
const NETWORK_AWS_RANGES: &str = r#"{"syncToken":"1731000000","createDate":"2026-03-01-00-00-00",
  "prefixes":[{"ip_prefix":"3.5.140.0/22","region":"ap-northeast-2","service":"AMAZON","network_border_group":"ap-northeast-2"}],
  "ipv6_prefixes":[]}"#;

/// The network data each import of the generated intrusions is given.
const NETWORK: NetworkContext<'static> = NetworkContext {
    asn_csv: Some(NETWORK_ASN_CSV),
    tor_exits: Some(NETWORK_TOR),
    vpn: Some("# VPN providers\nAS9009\n"),
    hosting: Some("# hosting providers\nAS211252\n"),
    aws_ip_ranges: Some(NETWORK_AWS_RANGES),
};

/// The detections of issue 16 that the benign principals must never raise.
const NEW_DETECTIONS: [&str; 9] = [
    "aws-password-spray",
    "aws-reconnaissance-burst",
    "aws-login-from-anonymizing-network",
    "aws-instance-credentials-used-outside",
    "aws-rare-sensitive-api",
    "aws-flow-port-scan",
    "aws-flow-suspicious-destination",
    "aws-guardduty-disabled",
    "aws-security-hub-disabled",
];

/// A call with the app server's instance profile credentials.
fn instance_call(time: DateTime<Utc>, name: &str, service: &str, ip: &str, read_only: bool) -> Value {
    let identity = json!({
        "type": "AssumedRole", "principalId": format!("AROAAPPROLE:{APP_INSTANCE}"),
        "arn": format!("arn:aws:sts::{ACCOUNT}:assumed-role/{APP_ROLE}/{APP_INSTANCE}"), "accountId": ACCOUNT,
        "accessKeyId": "ASIAFAKEAPPINSTANCE1",
        "sessionContext": {"sessionIssuer": {"type": "Role", "principalId": "AROAAPPROLE",
            "arn": format!("arn:aws:iam::{ACCOUNT}:role/{APP_ROLE}"), "accountId": ACCOUNT, "userName": APP_ROLE},
            "attributes": {"creationDate": DAY, "mfaAuthenticated": "false"}, "ec2RoleDelivery": "2.0"},
    });
    let mut record =
        event(time, name, &format!("{service}.amazonaws.com"), identity, ip, json!({"readOnly": read_only}));
    record["userAgent"] = json!("aws-cli/2.15.0 Python/3.11.6 Linux/6.1 exe/x86_64.amzn.2023");
    record
}

/// Weeks of the app server's own calls (from AWS and from inside the VPC) and of heidi's office
/// work: the baselines the intrusions break.
fn benign_baselines() -> Vec<Value> {
    let mut events = Vec::new();
    for day in -14..7 {
        let night = hours(24 * day + 2);
        events.push(instance_call(night, "ListBuckets", "s3", AWS_RANGES_IP, true));
        events.push(instance_call(night + Duration::minutes(1), "DescribeInstances", "ec2", AWS_AS_IP, true));
        events.push(instance_call(night + Duration::minutes(2), "GetObject", "s3", "10.0.4.20", true));
        if day < 2 {
            let morning = hours(24 * day + 8);
            events.push(console(morning, "heidi", OFFICE_IP, true));
            let mut record = console_call(
                morning + Duration::minutes(2),
                "heidi",
                OFFICE_IP,
                "DescribeInstances",
                "ec2.amazonaws.com",
                json!({}),
            );
            record["userIdentity"]["sessionContext"]["attributes"]["mfaAuthenticated"] = json!("true");
            events.push(record);
        }
    }
    events
}

/// D: six principals' passwords tried from one rented server in six minutes; henry's works. Each
/// failure is also a login from an anonymising network for its principal: the spray ties them.
fn intrusion_d() -> Vec<Value> {
    let start = hours(48 + 3);
    let mut events: Vec<Value> = ["admin", "backup", "henry", "ivan", "judy", "ken"]
        .into_iter()
        .enumerate()
        .map(|(i, user)| setup::console_login(start + Duration::minutes(i as i64), user, D_SPRAY_IP, false))
        .collect();
    events.push(console(start + Duration::minutes(8), "henry", D_SPRAY_IP, false));
    events
}

/// E: heidi from a Tor exit, refused on twelve different APIs within six minutes.
fn intrusion_e() -> Vec<Value> {
    let start = hours(48 + 6);
    let mut events = vec![console(start, "heidi", E_TOR_IP, true)];
    let apis = [
        ("iam", "ListUsers"),
        ("iam", "ListRoles"),
        ("iam", "GetAccountAuthorizationDetails"),
        ("iam", "ListPolicies"),
        ("s3", "ListBuckets"),
        ("ec2", "DescribeInstances"),
        ("ec2", "DescribeSnapshots"),
        ("ec2", "DescribeVpcs"),
        ("kms", "ListKeys"),
        ("secretsmanager", "ListSecrets"),
        ("lambda", "ListFunctions"),
        ("rds", "DescribeDBInstances"),
    ];
    for (i, (service, name)) in apis.into_iter().enumerate() {
        let time = start + Duration::seconds(60 + 30 * i as i64);
        let code = if service == "ec2" { "Client.UnauthorizedOperation" } else { "AccessDenied" };
        let mut record = console_call(time, "heidi", E_TOR_IP, name, &format!("{service}.amazonaws.com"), json!({}));
        record["userIdentity"]["sessionContext"]["attributes"]["mfaAuthenticated"] = json!("true");
        record["errorCode"] = json!(code);
        record["errorMessage"] = json!(format!("User is not authorized to perform: {service}:{name}"));
        events.push(record);
    }
    events
}

/// F: the app server's credentials from a hosting provider: a look around, then IAM writes the
/// role never made in its three weeks.
fn intrusion_f() -> Vec<Value> {
    let start = hours(48 + 10);
    vec![
        instance_call(start, "ListBuckets", "s3", F_IP, true),
        instance_call(start + Duration::minutes(3), "GetCallerIdentity", "sts", F_IP, true),
        instance_call(start + Duration::minutes(6), "CreatePolicyVersion", "iam", F_IP, false),
    ]
}

/// Three weeks of a web server's clients (every day) and, on day 3, G: one host inside the VPC
/// sweeping 40 database hosts for SMB, each probe refused where it lands.
fn flows_benign_and_g() -> String {
    use crate::detections_more::{FLOW_HEADER, flow};
    let mut text = String::from(FLOW_HEADER);
    for day in -14..7 {
        for i in 0..40u32 {
            let at = hours(24 * day + 12) + Duration::seconds(i64::from(i) * 90);
            let client = format!("198.18.{}.{}", day + 14, i + 1);
            text += &flow(at, "eni-0web0000000000001", (&client, 40_000 + i), ("10.0.1.5", 443), "ACCEPT");
            text += &flow(at, "eni-0web0000000000001", ("10.0.1.5", 443), (&client, 40_000 + i), "ACCEPT");
        }
    }
    for host in 1..=40u32 {
        let at = hours(72 + 2) + Duration::seconds(i64::from(host) * 45);
        let target = format!("10.0.2.{host}");
        text += &flow(at, "eni-0gggg9999hhhh0000", (G_SCANNER, 49_000 + host), (&target, 445), "ACCEPT");
        text += &flow(at, &format!("eni-0db{host:014}"), (G_SCANNER, 49_000 + host), (&target, 445), "REJECT");
    }
    text
}

/// `skywarden import` of `paths` without network data, detection included.
fn import(db: &TestDb, dir: &Path, paths: &[&Path]) {
    setup::import(db, dir, &NetworkContext::default(), Detection::Import, paths);
}

/// The alerts raised on events from these addresses, and the flow alert to `flow_to`.
async fn alerts_from(db: &TestDb, addresses: &[&str]) -> BTreeSet<String> {
    let addresses: Vec<String> = addresses.iter().map(|a| a.to_string()).collect();
    sqlx::query_scalar("SELECT alert_id::text FROM alerts WHERE host(source_ip) = ANY($1)")
        .bind(&addresses)
        .fetch_all(&db.pool)
        .await
        .unwrap()
        .into_iter()
        .collect()
}

async fn policies_of(db: &TestDb, alerts: &BTreeSet<String>) -> BTreeSet<String> {
    let ids: Vec<String> = alerts.iter().cloned().collect();
    sqlx::query_scalar("SELECT policy_id FROM alerts WHERE alert_id::text = ANY($1)")
        .bind(&ids)
        .fetch_all(&db.pool)
        .await
        .unwrap()
        .into_iter()
        .collect()
}

fn write_all(dir: &Path) -> Vec<PathBuf> {
    let (later, flows) = intrusion_a_later();
    let flow_path = dir.join("flows.log");
    std::fs::write(&flow_path, flows).unwrap();
    let other_flows = dir.join("flows-web-and-g.log");
    std::fs::write(&other_flows, flows_benign_and_g()).unwrap();
    vec![
        write_trail(dir, "benign", benign()),
        write_trail(dir, "baselines", benign_baselines()),
        write_trail(dir, "a-start", intrusion_a_start()),
        write_trail(dir, "a-later", later),
        flow_path,
        other_flows,
        write_trail(dir, "b", intrusion_b()),
        write_trail(dir, "d", intrusion_d()),
        write_trail(dir, "e", intrusion_e()),
        write_trail(dir, "f", intrusion_f()),
    ]
}

/// An intrusion of the generated data: the addresses its alerts come from and the policies it
/// must raise.
struct Intrusion {
    name: &'static str,
    addresses: &'static [&'static str],
    policies: &'static [&'static str],
}

const INTRUSIONS: [Intrusion; 6] = [
    Intrusion {
        name: "A",
        addresses: &[A_LOGIN_IP, A_BACKDOOR_IP, A_EXFIL_IP],
        policies: &["aws-console-login-without-mfa", "aws-flow-exfiltration-volume", "aws-cloudtrail-logging-disabled"],
    },
    Intrusion { name: "B", addresses: &[B_IP, B_SECOND_IP], policies: &["aws-guardduty-disabled"] },
    Intrusion {
        name: "D",
        addresses: &[D_SPRAY_IP],
        policies: &["aws-password-spray", "aws-console-login-without-mfa", "aws-login-from-anonymizing-network"],
    },
    Intrusion {
        name: "E",
        addresses: &[E_TOR_IP],
        policies: &["aws-login-from-anonymizing-network", "aws-reconnaissance-burst"],
    },
    Intrusion {
        name: "F",
        addresses: &[F_IP],
        policies: &["aws-instance-credentials-used-outside", "aws-rare-sensitive-api"],
    },
    Intrusion { name: "G", addresses: &[G_SCANNER], policies: &["aws-flow-port-scan"] },
];

/// An alert's policy, principal, incident and why it joined (what a failed grouping shows).
type AlertLink = (String, Option<String>, Option<String>, Option<String>);

/// The principals of the benign work alone (heidi and the app server are intrusions' victims,
/// checked through their benign addresses below).
const BENIGN_USERS: [&str; 3] = ["carol", "dave", "erin"];

#[tokio::test]
async fn each_intrusion_is_one_incident_with_all_its_alerts() {
    let db = TestDb::new().await;
    let dir = tempfile::tempdir().unwrap();
    let paths = write_all(dir.path());
    let paths: Vec<&Path> = paths.iter().map(PathBuf::as_path).collect();
    let summary = setup::import(&db, dir.path(), &NETWORK, Detection::Import, &paths);
    assert!(
        db.count("SELECT count(*) FROM cloudtrail_events WHERE geo_asn IS NOT NULL").await > 0,
        "the network data reached the events: {summary}"
    );

    let groups = incidents_of_alerts(&db).await;
    let holding = |alerts: &BTreeSet<String>| -> BTreeSet<String> {
        groups.iter().filter(|(_, members)| !members.is_disjoint(alerts)).map(|(id, _)| id.clone()).collect()
    };
    let mut incident_of: BTreeMap<&str, String> = BTreeMap::new();
    let mut intrusion_alerts = BTreeSet::new();
    for intrusion in &INTRUSIONS {
        let alerts = alerts_from(&db, intrusion.addresses).await;
        let policies = policies_of(&db, &alerts).await;
        for policy in intrusion.policies {
            assert!(policies.contains(*policy), "intrusion {} raised {policy}: {policies:?}", intrusion.name);
        }
        let held = holding(&alerts);
        let rows: Vec<AlertLink> = sqlx::query_as(
            "SELECT policy_id, principal, incident_id, link_reason FROM alerts WHERE alert_id::text = ANY($1)
             ORDER BY first_seen",
        )
        .bind(alerts.iter().cloned().collect::<Vec<_>>())
        .fetch_all(&db.pool)
        .await
        .unwrap();
        assert_eq!(held.len(), 1, "intrusion {} is one incident: {rows:#?}", intrusion.name);
        let id = held.into_iter().next().unwrap();
        assert_eq!(
            groups[&id], alerts,
            "{}'s incident holds exactly its alerts (flow alerts among them)",
            intrusion.name
        );
        assert!(!incident_of.values().any(|other| *other == id), "{} shares an incident", intrusion.name);
        incident_of.insert(intrusion.name, id);
        intrusion_alerts.extend(alerts);
    }
    let (a_id, b_id) = (&incident_of["A"], &incident_of["B"]);
    let a_alerts = &groups[a_id];
    let b_alerts = &groups[b_id];
    assert!(b_alerts.len() >= 3, "intrusion B: the policy, GuardDuty and SSM alerts: {b_alerts:?}");

    // Benign work: the administrator's new user and key alert (no intrusion, no incident of
    // one), and no benign principal or benign address raises any of the new detections.
    let benign_alerts = alerts_from(&db, &[OFFICE_IP, AWS_RANGES_IP, AWS_AS_IP, "10.0.4.20", "10.0.1.5"]).await;
    assert!(!benign_alerts.is_empty(), "the administrator's new user and key raise alerts");
    assert!(benign_alerts.is_disjoint(&intrusion_alerts));
    assert!(holding(&benign_alerts).iter().all(|id| !incident_of.values().any(|i| i == id)));
    let benign_principals: Vec<String> = BENIGN_USERS.iter().map(|u| user_arn(u)).collect();
    let benign_new: Vec<(String, Option<String>, Option<String>)> = sqlx::query_as(
        "SELECT policy_id, principal, host(source_ip) FROM alerts
         WHERE policy_id = ANY($1) AND (principal = ANY($2) OR NOT (alert_id::text = ANY($3)))",
    )
    .bind(NEW_DETECTIONS.map(String::from).to_vec())
    .bind(&benign_principals)
    .bind(intrusion_alerts.iter().cloned().collect::<Vec<_>>())
    .fetch_all(&db.pool)
    .await
    .unwrap();
    assert_eq!(benign_new, [], "benign principals and addresses raise none of the new detections");

    let events = db.count("SELECT count(*) FROM cloudtrail_events").await;
    let flows = db.count("SELECT count(*) FROM flow_records").await;
    let alerts = db.count("SELECT count(*) FROM alerts").await;
    println!(
        "FIGURES: {} intrusions, {} benign principals ({} with the victims heidi and app-role), {events} CloudTrail \
         events, {flows} flow records, {alerts} alerts ({} of intrusions, {} benign), {} incidents",
        INTRUSIONS.len(),
        BENIGN_USERS.len(),
        BENIGN_USERS.len() + 2,
        intrusion_alerts.len(),
        alerts as usize - intrusion_alerts.len(),
        groups.len()
    );

    // Listed as incidents, with the tactic chain in time order and why each alert joined.
    let listed = incident_pages::incidents(&db.pool, &IncidentFilter::default(), None, 50).await.unwrap();
    let a = listed.iter().find(|e| &e.incident.id == a_id).expect("A is listed");
    assert_eq!(a.alert_count as usize, a_alerts.len());
    assert_eq!(a.incident.tactics.first().map(|t| t.name.as_str()), Some("Initial Access"), "{:?}", a.incident.tactics);
    assert!(a.incident.tactics.iter().any(|t| t.name == "Exfiltration"), "{:?}", a.incident.tactics);
    let reasons: Vec<&str> = a.incident.timeline.iter().filter_map(|s| s.link_reason.as_deref()).collect();
    assert!(
        reasons.iter().any(|r| r.starts_with("access key AKIAFAKEBACKDOOR0001") || r.contains("svc-backup")),
        "the backdoor's use joined through the key or user the intrusion created: {reasons:?}"
    );
    let b = listed.iter().find(|e| &e.incident.id == b_id).expect("B is listed");
    // Every intrusion is listed, G's sweep too (one policy, but high).
    for (name, id) in &incident_of {
        assert!(listed.iter().any(|e| &e.incident.id == id), "intrusion {name} is listed");
    }
    assert_eq!(b.incident.severity, *b.incident.timeline.iter().map(|s| &s.severity).max().unwrap());

    // The map's addresses carry their network: E's Tor exit and F's hosting provider, in the
    // API's story and on the report.
    for (name, address, network) in [
        ("E", E_TOR_IP, "AS60729 Stiftung Erneuerbare Freiheit · Tor exit"),
        ("F", F_IP, "AS211252 Delis, LLC · hosting"),
    ] {
        let story = skywarden::alerts::incident_story::story(&db.pool, &incident_of[name]).await.unwrap().unwrap();
        let place = story.places.iter().find(|p| p.address == address).expect("the intruder's address is a place");
        assert_eq!(place.network_label().as_deref(), Some(network));
        let json = serde_json::to_value(place).unwrap();
        assert_eq!((&json["asn"], &json["is_tor"]), (&json!(place.asn.unwrap()), &json!(name == "E")), "{json}");
        let html = skywarden::report::html::report(&story, Utc::now());
        let row = format!("<td class=\"mono\">{address}</td>");
        let addresses = &html[html.find("id=\"addresses\"").expect("the addresses table")..];
        let row = &addresses[addresses.find(&row).expect("the address's row")..];
        let row = &row[..row.find("</tr>").unwrap()];
        let (asn, org) = network.split_once(' ').unwrap();
        let org = org.split(" · ").next().unwrap();
        assert!(row.contains(asn) && row.contains(&escape_html(org)), "{row}");
        assert!(row.contains(if name == "E" { "Tor exit" } else { "hosting" }), "{row}");
    }

    // Re-running detection over everything changes no incident.
    setup::detect_all(&db, &setup::shipped_policies()).await;
    assert_eq!(incidents_of_alerts(&db).await, groups, "re-running detection splits or moves nothing");
    let count = db.count("SELECT count(*) FROM incidents").await;
    assert_eq!(count as usize, groups.len(), "and opens no incident");
}

#[tokio::test]
async fn older_data_imported_later_merges_into_one_incident() {
    let db = TestDb::new().await;
    let dir = tempfile::tempdir().unwrap();
    let (later, flows) = intrusion_a_later();
    let flow_path = dir.path().join("flows.log");
    std::fs::write(&flow_path, flows).unwrap();
    let later_path = write_trail(dir.path(), "a-later", later);
    import(&db, dir.path(), &[&later_path, &flow_path]);
    let before = incidents_of_alerts(&db).await;
    assert_eq!(before.len(), 2, "alone, the backdoor's use and the exfiltration tie to nothing: {before:#?}");
    let early = before.keys().cloned().collect::<Vec<_>>();
    // The one that started later: the merge folds it into the other, so its status survives
    // only through the merge (the lowest id may well be the survivor, proving nothing).
    let absorbed: String = sqlx::query_scalar(
        "SELECT incident_id FROM incidents WHERE incident_id = ANY($1) ORDER BY first_seen DESC, incident_id DESC LIMIT 1",
    )
    .bind(&early)
    .fetch_one(&db.pool)
    .await
    .unwrap();

    // An analyst starts on it; then the intrusion's start arrives.
    let update = IncidentUpdate { status: Some(IncidentStatus::Investigating), owner: None };
    assert!(incident_pages::update(&db.pool, &absorbed, &update, "test", "looking").await.unwrap());
    let start_path = write_trail(dir.path(), "a-start", intrusion_a_start());
    import(&db, dir.path(), &[&start_path]);

    let after = incidents_of_alerts(&db).await;
    assert_eq!(after.len(), 1, "one incident once the start is known: {after:#?}");
    let (survivor, members) = after.into_iter().next().unwrap();
    let all = alerts_from(&db, &[A_LOGIN_IP, A_BACKDOOR_IP, A_EXFIL_IP]).await;
    assert_eq!(members, all);
    // The survivor is an id the analyst already had (ids shown never change), the status they
    // set is kept, and an import in time order groups the same alerts.
    assert!(early.contains(&survivor), "{survivor} is one of {early:?}");
    assert_ne!(survivor, absorbed, "the incident the analyst worked on was folded into the other");
    let filter = IncidentFilter { id: Some(survivor.clone()), open_only: false };
    let kept = incident_pages::incidents(&db.pool, &filter, None, 1).await.unwrap().pop().unwrap();
    assert_eq!(kept.incident.status, IncidentStatus::Investigating, "the merge keeps the status the analyst set");
    let history = incident_pages::history(&db.pool, &survivor).await.unwrap();
    assert!(
        history.iter().any(|c| c.field == "status" && c.actor == "skywarden" && c.reason.contains(&absorbed)),
        "the survivor took the status from the absorbed incident: {history:?}"
    );
    let in_order = {
        let db = TestDb::new().await;
        import(&db, dir.path(), &[&start_path, &later_path, &flow_path]);
        incidents_of_alerts(&db).await.into_values().collect::<Vec<_>>()
    };
    assert_eq!(in_order, [members]);
    // The earlier ids still answer, pointing at the survivor, and say so in their history.
    for id in early.iter().filter(|id| **id != survivor) {
        assert_eq!(incident_pages::resolve_id(&db.pool, id).await.unwrap().as_deref(), Some(survivor.as_str()));
        let history = incident_pages::history(&db.pool, id).await.unwrap();
        assert!(history.iter().any(|c| c.field == "merged_into" && c.new_value.as_deref() == Some(&survivor)));
    }
}

#[tokio::test]
async fn a_closed_incident_reopens_when_the_intrusion_goes_on() {
    let db = TestDb::new().await;
    let dir = tempfile::tempdir().unwrap();
    let start_path = write_trail(dir.path(), "a-start", intrusion_a_start());
    import(&db, dir.path(), &[&start_path]);
    let id = incidents_of_alerts(&db).await.into_keys().next().unwrap();
    let (_, _) = skywarden::auth::create(&db.pool, "x", skywarden::auth::Role::Viewer).await.unwrap();
    skywarden::auth::users::create(&db.pool, "maria", "a long enough password", skywarden::auth::Role::Analyst)
        .await
        .unwrap();
    let unknown = IncidentUpdate { status: None, owner: Some(Some("nobody".into())) };
    assert!(incident_pages::update(&db.pool, &id, &unknown, "test", "assign").await.is_err(), "owners are users");
    let resolve = IncidentUpdate { status: Some(IncidentStatus::Resolved), owner: Some(Some("maria".into())) };
    assert!(incident_pages::update(&db.pool, &id, &resolve, "cli:maria", "key rotated").await.unwrap());

    let (later, _) = intrusion_a_later();
    let later_path = write_trail(dir.path(), "a-later", later);
    import(&db, dir.path(), &[&later_path]);
    let entry =
        incident_pages::incidents(&db.pool, &IncidentFilter { id: Some(id.clone()), open_only: false }, None, 1)
            .await
            .unwrap()
            .pop()
            .unwrap();
    assert_eq!(entry.incident.status, IncidentStatus::Open, "the backdoor's use reopens it");
    assert_eq!(entry.incident.owner.as_deref(), Some("maria"));
    let history = incident_pages::history(&db.pool, &id).await.unwrap();
    let fields: Vec<(&str, &str, Option<&str>)> =
        history.iter().map(|c| (c.actor.as_str(), c.field.as_str(), c.new_value.as_deref())).collect();
    assert_eq!(
        fields,
        [
            ("cli:maria", "status", Some("resolved")),
            ("cli:maria", "owner", Some("maria")),
            ("skywarden", "status", Some("open"))
        ]
    );
}

/// Every error of each event against its OCSF 1.1.0 class (Incident or Detection Finding, or
/// Entity Management for a response action).
const OCSF_CHECK: &str = r#"
import json, sys
import jsonschema_rs
from ocsf_json_schema import OcsfJsonSchemaEmbedded, get_ocsf_schema

schema = OcsfJsonSchemaEmbedded(get_ocsf_schema(version="1.1.0"))
names = {2004: "detection_finding", 2005: "incident_finding", 3004: "entity_management"}
errors = []
for index, event in enumerate(json.load(sys.stdin)):
    profiles = sorted(event.get("metadata", {}).get("profiles", []))
    class_schema = schema.get_class_schema(names[event["class_uid"]], profiles=profiles)
    validator = jsonschema_rs.Draft202012Validator(class_schema, validate_formats=False)
    for error in validator.iter_errors(event):
        errors.append("event %d at %s: %s" % (index, list(error.instance_path), error.message[:300]))
json.dump(errors, sys.stdout)
"#;

fn escape_html(text: &str) -> String {
    skywarden::report::html::escape(text)
}

/// The response action's reason: hostile, it must come out as text.
const RESPONSE_REASON: &str = "backdoor key <script>alert(2)</script> used by the intruder";
const RESPONSE_TARGET: &str = "svc-sync:AKIAFAKEREPORTKEY001";

/// A response action on the incident's first alert, asked for by one person, approved by
/// another and applied, recorded through the responder's own functions. Returns its id.
async fn record_response(db: &TestDb, incident_id: &str) -> String {
    use skywarden::respond::record::{self, Claim, NewAction};
    let (alert_id, account_id): (String, String) = sqlx::query_as(
        "SELECT alert_id::text, account_id FROM alerts WHERE incident_id = $1 ORDER BY first_seen, alert_id LIMIT 1",
    )
    .bind(incident_id)
    .fetch_one(&db.pool)
    .await
    .unwrap();
    let action = skywarden::respond::Action::DeactivateAccessKey {
        user_name: "svc-sync".into(),
        access_key_id: "AKIAFAKEREPORTKEY001".into(),
    };
    let new = NewAction {
        account_id: &account_id,
        action: &action,
        alert_id: Some(&alert_id),
        actor: "user:oncall",
        reason: RESPONSE_REASON,
        idempotency_key: "report-test-deactivate",
        lease_owner: "report-test",
        awaiting_approval: true,
        automatic_rule: None,
    };
    let Claim::New(action_id) = record::claim(&db.pool, &new).await.unwrap() else { panic!("a new action") };
    let approval = record::claim_approval(&db.pool, &action_id, "user:lead", "seen from 176.36.10.20", "report-test");
    let Claim::New(_) = approval.await.unwrap() else { panic!("approved by a second person") };
    let calls = json!([{"call": "UpdateAccessKey", "status": "Inactive"}]);
    record::finish(&db.pool, &action_id, "applied", Some(&json!({"Status": "Inactive"})), &calls, None).await.unwrap();
    action_id
}

/// The HTML report: self-contained, escaped, with the merged timeline and the response action.
fn assert_html_report(html: &str, story: &skywarden::alerts::incident_story::IncidentStory, action_id: &str) {
    assert!(html.contains("Content-Security-Policy") && !html.contains("<script"), "no script runs in it");
    assert!(!html.contains("src=\"http") && !html.contains("href=\"http"), "it asks nothing of the network");
    assert!(html.contains("&lt;script&gt;alert(1)&lt;/script&gt;"));
    for alert in &story.alerts {
        assert!(html.contains(&alert.id), "alert {} is in the report", alert.id);
    }
    for event in &story.events {
        assert!(html.contains(&event.event_id), "event {} is in the report", event.event_id);
    }
    assert!(html.contains("<circle class=\"place\"") && html.contains("176.36.10.20"), "the map places the intruder");
    // A configuration diff and a flow, as rows with their content.
    let section = |id: &str| {
        let start = html.find(&format!("<table id=\"{id}\"")).unwrap_or_else(|| panic!("a {id} table"));
        &html[start..html[start..].find("</table>").unwrap() + start]
    };
    let change = story.config_changes.first().expect("the sample's snapshots hold a change the intrusion made");
    let changes = section("config-changes");
    let diff = serde_json::to_string_pretty(&change.diff).unwrap();
    let diff_leaf = diff.lines().find(|l| l.contains(':') && !l.trim_end().ends_with(['{', '['])).unwrap();
    assert!(changes.contains(&change.resource_id) && changes.contains(&change.kind), "{changes}");
    assert!(changes.contains("<pre>") && changes.contains(&escape_html(diff_leaf.trim())), "{diff_leaf} in {changes}");
    let flow = story.flows.first().expect("the sample's flows of the intruder's address");
    let flows = section("flows");
    let flow_row = format!(
        "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td>",
        flow.srcaddr.as_deref().unwrap(),
        flow.dstaddr.as_deref().unwrap(),
        flow.dstport.map(|p| p.to_string()).unwrap_or_default(),
        flow.action.as_deref().unwrap(),
        flow.bytes
    );
    assert!(flows.contains(&flow_row), "{flow_row} in {flows}");
    // The merged timeline: every entry, the action as asked for, approved and applied.
    let rows = html.matches("<tr class=\"").count();
    assert_eq!(rows, story.merged_timeline.entries.len(), "a row per timeline entry");
    assert_eq!(html.matches("<tr class=\"response\">").count(), 3, "asked, approved, applied");
    assert!(html.contains("id=\"timeline\"") && !html.contains("Cut: "), "not cut, so it says nothing of a cut");
    // The action in full: what, target, status, who asked, who approved, why, when.
    let start = html.find("id=\"responses\"").expect("a response actions table");
    let responses = &html[start..html[start..].find("</table>").unwrap() + start];
    for expected in [
        "deactivate-access-key",
        RESPONSE_TARGET,
        "<td>applied</td>",
        "user:oncall",
        "user:lead at ",
        "seen from 176.36.10.20",
        "backdoor key &lt;script&gt;alert(2)&lt;/script&gt; used by the intruder",
        "<br>applied 20",
        action_id,
    ] {
        assert!(responses.contains(expected), "{expected:?} in {responses}");
    }
}

/// The OCSF export: the incident, each alert, and the response action as Entity Management.
fn assert_ocsf_report(events: &[Value], story: &skywarden::alerts::incident_story::IncidentStory, action_id: &str) {
    let id = story.incident.id.as_str();
    assert_eq!(events[0]["class_uid"], 2005);
    assert_eq!(events[0]["metadata"]["uid"], id);
    assert_eq!(events[0]["finding_info_list"].as_array().unwrap().len(), story.alerts.len());
    // The configuration diffs and flows, whole.
    let evidence = &events[0]["unmapped"]["skywarden"];
    let change = &story.config_changes[0];
    assert_eq!(evidence["config_changes"].as_array().map(Vec::len), Some(story.config_changes.len()));
    assert_eq!(
        (&evidence["config_changes"][0]["resource_id"], &evidence["config_changes"][0]["diff"]),
        (&json!(change.resource_id), &change.diff)
    );
    assert_eq!(evidence["flows"].as_array().map(Vec::len), Some(story.flows.len()));
    assert_eq!(
        (&evidence["flows"][0]["dstaddr"], &evidence["flows"][0]["bytes"]),
        (&json!(story.flows[0].dstaddr), &json!(story.flows[0].bytes))
    );
    assert_eq!(events[0]["src_url"], format!("https://skywarden.example/#/incident/{id}"));
    assert_eq!(events.len(), 1 + story.alerts.len() + 1, "a Detection Finding per alert, and the action");
    assert!(events[1..=story.alerts.len()].iter().all(|e| e["class_uid"] == 2004));
    let action = events.last().unwrap();
    assert_eq!(action["class_uid"], 3004);
    assert_eq!(action["metadata"]["uid"], action_id);
    assert_eq!(action["metadata"]["correlation_uid"], id);
    assert_eq!((&action["status_id"], &action["status"]), (&json!(1), &json!("Success")));
    assert_eq!(action["entity"]["uid"], RESPONSE_TARGET);
    assert_eq!(action["actor"]["user"]["name"], "user:oncall");
    assert_eq!(action["comment"], RESPONSE_REASON);
    let details = &action["unmapped"]["skywarden"];
    assert_eq!(
        (&details["approved_by"], &details["approval_reason"]),
        (&json!("user:lead"), &json!("seen from 176.36.10.20"))
    );
    assert_eq!(details["alert_uid"], story.responses[0].alert_id.as_deref().unwrap());
    assert!(details["applied_time"].as_i64().is_some_and(|t| t >= action["start_time"].as_i64().unwrap()));
    let errors = crate::outbound_limits::run_python(OCSF_CHECK, &Value::Array(events.to_vec()));
    assert_eq!(errors, json!([]), "OCSF 1.1.0 schema errors");
}

/// `incidents show`: the merged timeline (here whole) and the action with its people.
fn assert_shown(db: &TestDb, story: &skywarden::alerts::incident_story::IncidentStory, action_id: &str) {
    let out = db.skywarden(&["incidents", "show", &story.incident.id]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8(out.stdout).unwrap();
    let section = |from: &str, to: &str| text[text.find(from).unwrap()..text.find(to).unwrap()].to_string();
    let timeline = section("  timeline:", "  response actions:");
    assert_eq!(timeline.lines().count() - 1, story.merged_timeline.entries.len(), "{timeline}");
    assert!(!timeline.contains("(cut:"), "{timeline}");
    let applied = format!("response      applied           deactivate-access-key {RESPONSE_TARGET} by user:lead");
    assert!(timeline.contains(&applied), "{timeline}");
    let responses = section("  response actions:", "  history:");
    let account = &story.responses[0].account_id;
    for expected in [
        format!(
            "deactivate-access-key {RESPONSE_TARGET} on {account} global: applied  asked by user:oncall: {RESPONSE_REASON}"
        ),
        "approved by user:lead at ".to_string(),
        ": seen from 176.36.10.20".to_string(),
        format!("action {action_id}  alert "),
    ] {
        assert!(responses.contains(&expected), "{expected:?} in {responses}");
    }
    let out = db.skywarden(&["incidents", "show", &story.incident.id, "--json"]);
    let shown: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(shown["responses"][0]["id"], action_id);
    assert_eq!(shown["merged_timeline"]["total"], story.merged_timeline.total);
}

#[tokio::test]
async fn an_incident_is_handed_over_as_html_and_as_ocsf() {
    let db = TestDb::new().await;
    let dir = tempfile::tempdir().unwrap();
    let geo = crate::support::mmdb::sample_incident_countries(dir.path());
    let sample = Path::new(env!("CARGO_MANIFEST_DIR")).join("samples/incident");
    let imported = db.skywarden(&["import", "--geoip", geo.to_str().unwrap(), sample.to_str().unwrap()]);
    assert!(imported.status.success(), "{}", String::from_utf8_lossy(&imported.stderr));
    // The sample's two configuration snapshots: the security group the intruder opened changes.
    let config = Path::new(env!("CARGO_MANIFEST_DIR")).join("samples/incident.config.json");
    let snapshots = db.skywarden(&["posture", "import", config.to_str().unwrap()]);
    assert!(snapshots.status.success(), "{}", String::from_utf8_lossy(&snapshots.stderr));
    let listed = incident_pages::incidents(&db.pool, &IncidentFilter::default(), None, 10).await.unwrap();
    let summary: Vec<(&str, Option<&str>, Vec<&str>)> = listed
        .iter()
        .map(|e| {
            let policies = e.incident.timeline.iter().map(|s| s.policy_id.as_str()).collect();
            (e.incident.severity.as_str(), e.incident.source_ip.as_deref(), policies)
        })
        .collect();
    assert_eq!(listed.len(), 1, "the sample is one intrusion: {summary:#?}");
    let id = listed[0].incident.id.clone();
    // A hostile title must come out as text.
    sqlx::query("UPDATE alerts SET title = title || ' <script>alert(1)</script>' WHERE incident_id = $1")
        .bind(&id)
        .execute(&db.pool)
        .await
        .unwrap();
    let action_id = record_response(&db, &id).await;

    let html_path = dir.path().join("report.html");
    let out = db.skywarden(&["incidents", "report", &id, "--output", html_path.to_str().unwrap()]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let html = std::fs::read_to_string(&html_path).unwrap();
    let story = skywarden::alerts::incident_story::story(&db.pool, &id).await.unwrap().unwrap();
    assert_eq!(story.responses.len(), 1);
    assert_html_report(&html, &story, &action_id);
    // A cut timeline says so, with how much was left out.
    let mut cut = story.clone();
    cut.merged_timeline.total += 700;
    cut.merged_timeline.truncated = true;
    let cut_html = skywarden::report::html::report(&cut, Utc::now());
    let note = format!("Cut: {} of {} entries shown", cut.merged_timeline.entries.len(), cut.merged_timeline.total);
    assert!(cut_html.contains(&note), "the cut is named");

    let out =
        db.skywarden(&["incidents", "report", &id, "--format", "ocsf", "--public-url", "https://skywarden.example"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let events: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_ocsf_report(events.as_array().unwrap(), &story, &action_id);
    assert_shown(&db, &story, &action_id);
}

/// Intrusion C, for linking by autonomous system: a console login from a hosting network
/// (AS64501), a backdoor key later used from an EC2 address (AWS's AS14618), and an instance
/// the intruder took over sending data to three places: another network of AS64501 (not the
/// login's /24), an unrelated AS, and AWS.
const C_LOGIN_IP: &str = "5.188.10.20";
const C_EXFIL_SAME_AS: &str = "5.188.77.9";
const C_UNRELATED: &str = "37.120.1.5";
const C_AWS_IP: &str = "3.80.10.10";
const C_AWS_DESTINATION: &str = "3.90.5.5";
const C_INSTANCE: &str = "i-0cccc5555dddd6666";
const C_ENI: &str = "eni-0cccc5555dddd6666";
const C_BACKDOOR_KEY: &str = "AKIAFAKEASNBACKDOOR1";
const C_ASN_TABLE: &str = "5.188.0.0,5.188.255.255,64501,Example Bulletproof Hosting\n\
                           37.120.1.0,37.120.1.255,64502,Unrelated Transit\n\
                           3.80.0.0,3.95.255.255,14618,AMAZON-AES\n";

fn intrusion_c() -> (Vec<Value>, String) {
    let (iam, ec2) = ("iam.amazonaws.com", "ec2.amazonaws.com");
    let events = vec![
        console(hours(9), "frank", C_LOGIN_IP, false),
        console_call(
            hours(9) + Duration::minutes(4),
            "frank",
            C_LOGIN_IP,
            "CreateAccessKey",
            iam,
            json!({"readOnly": false, "requestParameters": {"userName": "svc-sync"},
                   "responseElements": {"accessKey": {"accessKeyId": C_BACKDOOR_KEY, "status": "Active",
                                                      "userName": "svc-sync"}}}),
        ),
        console_call(
            hours(9) + Duration::minutes(8),
            "frank",
            C_LOGIN_IP,
            "AssociateIamInstanceProfile",
            ec2,
            json!({"readOnly": false,
                   "requestParameters": {"AssociateIamInstanceProfileRequest": {"InstanceId": C_INSTANCE,
                       "IamInstanceProfile": {"Name": "ssm-admin"}}},
                   "responseElements": {"AssociateIamInstanceProfileResponse": {"iamInstanceProfileAssociation": {
                       "associationId": "iip-assoc-0ccc", "instanceId": C_INSTANCE, "state": "associating"}}}}),
        ),
        event(
            hours(11),
            "StopLogging",
            "cloudtrail.amazonaws.com",
            iam_user("svc-sync", C_BACKDOOR_KEY, false),
            C_AWS_IP,
            json!({"readOnly": false, "requestParameters": {"name": format!("arn:aws:cloudtrail:us-east-1:{ACCOUNT}:trail/main")}}),
        ),
    ];
    let mut flows = String::from(
        "version account-id interface-id srcaddr dstaddr srcport dstport protocol packets bytes start end action log-status vpc-id subnet-id instance-id\n",
    );
    for (hour, destination) in [(12, C_EXFIL_SAME_AS), (13, C_UNRELATED), (14, C_AWS_DESTINATION)] {
        for i in 0..4 {
            let start = hours(hour) + Duration::minutes(10 * i);
            flows.push_str(&format!(
                "5 {ACCOUNT} {C_ENI} 10.0.3.25 {destination} 44321 443 6 400000 600000000 {} {} ACCEPT OK vpc-0c1 subnet-0c1 {C_INSTANCE}\n",
                start.timestamp(),
                (start + Duration::minutes(9)).timestamp()
            ));
        }
    }
    (events, flows)
}

/// (incident, link reason) of the alert on `address`.
async fn linked(db: &TestDb, address: &str) -> (String, String) {
    sqlx::query_as("SELECT incident_id, coalesce(link_reason, '') FROM alerts WHERE host(source_ip) = $1")
        .bind(address)
        .fetch_one(&db.pool)
        .await
        .unwrap_or_else(|e| panic!("no alert on {address}: {e}"))
}

/// Intrusion C's files imported without detection (stored with their network, as an import
/// with `--geoip` does), then detection and linking run here with the same network data.
struct AsLinking {
    dir: tempfile::TempDir,
    policies: skywarden::detect::PolicySet,
}

/// Intrusion C's network data: the ASN table alone.
const C_NETWORK: NetworkContext<'static> =
    NetworkContext { asn_csv: Some(C_ASN_TABLE), tor_exits: None, vpn: None, hosting: None, aws_ip_ranges: None };

impl AsLinking {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let asn_table = dir.path().join("c-asn-ipv4.csv");
        std::fs::write(&asn_table, C_ASN_TABLE).unwrap();
        let geo = skywarden::geo::GeoDb::open(std::slice::from_ref(&asn_table)).unwrap();
        // Detection gives flow alerts their destination's network from this data.
        let policies = setup::shipped_policies().with_geo(Some(std::sync::Arc::new(geo)));
        Self { dir, policies }
    }

    /// Imports `events` (and `flows`, if any) and runs detection over everything.
    async fn import_and_detect(&self, db: &TestDb, name: &str, events: Vec<Value>, flows: Option<String>) {
        let mut paths = vec![write_trail(self.dir.path(), name, events)];
        if let Some(flows) = flows {
            paths.push(setup::write_flows(self.dir.path(), &format!("{name}-flows.log"), &flows));
        }
        let paths: Vec<&Path> = paths.iter().map(PathBuf::as_path).collect();
        setup::import(db, self.dir.path(), &C_NETWORK, Detection::Later, &paths);
        self.detect(db).await;
    }

    async fn detect(&self, db: &TestDb) {
        setup::detect_all(db, &self.policies).await;
    }
}

/// The AS link's verdicts on intrusion C: the flow to the intruder's AS joins, the others not.
/// Returns why the flow to the intruder's AS joined (or opened) its incident.
async fn assert_linked_by_as(db: &TestDb) -> String {
    let (intrusion, _) = linked(db, C_LOGIN_IP).await;
    let (backdoor, _) = linked(db, C_AWS_IP).await;
    assert_eq!(backdoor, intrusion, "the backdoor key's use from EC2 joins through the key");
    let (exfil, why) = linked(db, C_EXFIL_SAME_AS).await;
    assert_eq!(exfil, intrusion, "a flow to another network of the intruder's AS joins: {why}");
    let (unrelated, unrelated_why) = linked(db, C_UNRELATED).await;
    assert_ne!(unrelated, intrusion, "a flow to an unrelated AS stays apart: {unrelated_why}");
    let (to_aws, aws_why) = linked(db, C_AWS_DESTINATION).await;
    assert_ne!(to_aws, intrusion, "AWS's AS never links, though the intruder also came from it: {aws_why}");
    why
}

#[tokio::test]
async fn an_exfiltration_to_the_intruders_autonomous_system_joins_but_not_to_aws_or_elsewhere() {
    let db = TestDb::new().await;
    let harness = AsLinking::new();
    let (events, flows) = intrusion_c();
    harness.import_and_detect(&db, "c", events, Some(flows)).await;
    let why = assert_linked_by_as(&db).await;
    assert!(why.contains(C_ENI), "{why}");
    assert!(why.ends_with("network AS64501 Example Bulletproof Hosting of address 5.188.77.9"), "{why}");

    // Re-running detection moves nothing and opens nothing.
    let groups = incidents_of_alerts(&db).await;
    let count = db.count("SELECT count(*) FROM incidents").await;
    harness.detect(&db).await;
    assert_eq!(incidents_of_alerts(&db).await, groups);
    assert_eq!(db.count("SELECT count(*) FROM incidents").await, count);
}

#[tokio::test]
async fn the_as_link_holds_when_the_intrusions_start_arrives_last() {
    let db = TestDb::new().await;
    let harness = AsLinking::new();
    let (mut events, flows) = intrusion_c();
    let later = events.split_off(3);
    harness.import_and_detect(&db, "c-later", later, Some(flows)).await;
    let apart = incidents_of_alerts(&db).await;
    assert_eq!(apart.len(), 4, "alone, the backdoor's use and each flow tie to nothing: {apart:#?}");
    harness.import_and_detect(&db, "c-start", events, None).await;
    assert_linked_by_as(&db).await;
    assert_eq!(incidents_of_alerts(&db).await.len(), 3, "merged into the intrusion, never split");
}
