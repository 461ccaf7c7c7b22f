//! How alerts link into incidents, case by case: an exfiltration flow in AWS's default format
//! (no instance column) joins through the inventory's interfaces, a terminated instance's
//! included; a merge keeps the analyst's status; a role assumption imported after the alerts of
//! both its sides ties them; two intrusions through one Tor exit stay two; a role chain carries
//! its source identity; a GuardDuty probe of an instance joins nothing, while the instance's
//! stolen credentials join the intrusion (linked by `import --findings` itself); a password spray
//! from a hosting provider (one address or several of its AS) is one incident with each sprayed
//! principal's login from an anonymising network, while two principals merely logging in from
//! one hosting address stay apart.

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

const DAY: &str = "2026-04-14T00:00:00Z";

fn hours(h: i64) -> DateTime<Utc> {
    DAY.parse::<DateTime<Utc>>().unwrap() + Duration::hours(h)
}

fn role_session(role: &str, session: &str) -> String {
    format!("arn:aws:sts::{ACCOUNT}:assumed-role/{role}/{session}")
}

fn iam_user(name: &str, key: &str) -> Value {
    json!({"type": "IAMUser", "principalId": format!("AIDA{}", name.to_uppercase()), "arn": user_arn(name),
           "accountId": ACCOUNT, "accessKeyId": key, "userName": name})
}

/// A role session's identity, with the source identity its chain carries, if any.
fn assumed(role: &str, session: &str, key: &str, source_identity: Option<&str>) -> Value {
    let mut context = json!({"sessionIssuer": {"type": "Role", "principalId": format!("AROA{}", role.to_uppercase()),
        "arn": format!("arn:aws:iam::{ACCOUNT}:role/{role}"), "accountId": ACCOUNT, "userName": role},
        "attributes": {"creationDate": DAY, "mfaAuthenticated": "false"}});
    if let Some(identity) = source_identity {
        context["sourceIdentity"] = json!(identity);
    }
    json!({"type": "AssumedRole", "principalId": format!("AROA{}:{session}", role.to_uppercase()),
           "arn": role_session(role, session), "accountId": ACCOUNT, "accessKeyId": key, "sessionContext": context})
}

fn console_login(time: DateTime<Utc>, user: &str, ip: &str) -> Value {
    setup::console_login(time, user, ip, true)
}

/// `identity` assumes `role` as `session` (credentials `key`), optionally setting a source identity.
fn assume_role(
    time: DateTime<Utc>,
    identity: Value,
    ip: &str,
    (role, session, key): (&str, &str, &str),
    source_identity: Option<&str>,
) -> Value {
    let mut request = json!({"roleArn": format!("arn:aws:iam::{ACCOUNT}:role/{role}"), "roleSessionName": session});
    if let Some(id) = source_identity {
        request["sourceIdentity"] = json!(id);
    }
    event(
        time,
        "AssumeRole",
        "sts.amazonaws.com",
        identity,
        ip,
        json!({"requestParameters": request,
               "responseElements": {"credentials": {"accessKeyId": key, "sessionToken": "IQoJb3JpZ2luEXAMPLE"},
                                    "assumedRoleUser": {"assumedRoleId": format!("AROA:{session}"),
                                                        "arn": role_session(role, session)},
                                    "sourceIdentity": source_identity}}),
    )
}

fn stop_logging(time: DateTime<Utc>, identity: Value, ip: &str) -> Value {
    let trail = format!("arn:aws:cloudtrail:us-east-1:{ACCOUNT}:trail/main");
    event(time, "StopLogging", "cloudtrail.amazonaws.com", identity, ip, json!({"requestParameters": {"name": trail}}))
}

fn delete_detector(time: DateTime<Utc>, identity: Value, ip: &str) -> Value {
    event(
        time,
        "DeleteDetector",
        "guardduty.amazonaws.com",
        identity,
        ip,
        json!({"requestParameters": {"detectorId": "12abc34d567e8fa901bc2d34e56789f0"}}),
    )
}

fn associate_profile(time: DateTime<Utc>, identity: Value, ip: &str, instance: &str) -> Value {
    event(
        time,
        "AssociateIamInstanceProfile",
        "ec2.amazonaws.com",
        identity,
        ip,
        json!({"requestParameters": {"AssociateIamInstanceProfileRequest": {"InstanceId": instance,
                   "IamInstanceProfile": {"Name": "ssm-admin"}}},
               "responseElements": {"AssociateIamInstanceProfileResponse": {"iamInstanceProfileAssociation": {
                   "associationId": "iip-assoc-0x", "instanceId": instance, "state": "associating"}}}}),
    )
}

fn run(db: &TestDb, args: &[&str]) {
    let out = db.skywarden(args);
    assert!(out.status.success(), "{args:?}: {}", String::from_utf8_lossy(&out.stderr));
}

/// `skywarden import` of `paths` with `context` (written into `dir`), detection included.
fn import(db: &TestDb, dir: &Path, context: &NetworkContext<'_>, paths: &[&Path]) {
    setup::import(db, dir, context, Detection::Import, paths);
}

/// The incidents of the alerts on events from (or flows to) `address`, with their policies.
async fn incidents_of(db: &TestDb, address: &str) -> BTreeSet<String> {
    let found: Vec<String> = sqlx::query_scalar("SELECT incident_id FROM alerts WHERE host(source_ip) = $1")
        .bind(address)
        .fetch_all(&db.pool)
        .await
        .unwrap();
    assert!(!found.is_empty(), "alerts on {address}");
    found.into_iter().collect()
}

/// The one incident of the alerts of `policy` (prefix), and why the first of them joined.
async fn incident_of_policy(db: &TestDb, policy: &str) -> (String, String) {
    let rows: Vec<(String, String)> = sqlx::query_as(
        "SELECT coalesce(incident_id, 'unlinked'), coalesce(link_reason, '') FROM alerts WHERE policy_id LIKE $1 || '%'
         ORDER BY first_seen",
    )
    .bind(policy)
    .fetch_all(&db.pool)
    .await
    .unwrap();
    let incidents: BTreeSet<&String> = rows.iter().map(|(id, _)| id).collect();
    assert_eq!(incidents.len(), 1, "{policy}: {rows:?}");
    rows[0].clone()
}

const LOGIN_IP: &str = "185.193.88.20";
const EXFIL_IP: &str = "185.193.88.77";
const INSTANCE: &str = "i-0eeee1111ffff2222";
const ENI: &str = "eni-0eeee1111ffff2222";

/// An inventory snapshot holding the instance with its interface, then (if `terminated`) one a
/// day later without it.
fn snapshot(dir: &Path, terminated: bool) -> PathBuf {
    let instance = json!({"type": "ec2:instance", "id": INSTANCE,
        "arn": format!("arn:aws:ec2:us-east-1:{ACCOUNT}:instance/{INSTANCE}"), "name": "batch-1",
        "config": {"instance_id": INSTANCE, "instance_type": "t3.small", "vpc_id": "vpc-0e1", "subnet_id": "subnet-0e1",
                   "private_ip": "10.0.4.25", "security_group_ids": ["sg-0e1"], "tags": {"Name": "batch-1"},
                   "network_interface_ids": [ENI], "observed": {"state": "running"}}});
    let at = |time: DateTime<Utc>, resources: Vec<Value>| {
        json!({"captured_at": time.to_rfc3339(), "regions": {"us-east-1": {"collected": ["ec2:instance"],
               "resources": resources}}})
    };
    let mut snapshots = vec![at(hours(-48), vec![instance])];
    if terminated {
        snapshots.push(at(hours(-24), vec![]));
    }
    let path = dir.join("snapshot.json");
    let document = json!({"format": "skywarden.snapshot/v1", "account_id": ACCOUNT, "snapshots": snapshots});
    std::fs::write(&path, document.to_string()).unwrap();
    path
}

/// A console login without MFA that hands the instance a profile, and 2.4 GB from the
/// instance's interface to the login's /24, in AWS's default (version 2) flow format.
fn exfiltration(dir: &Path) -> (PathBuf, PathBuf) {
    let console_key = "ASIACONSOLEGRACE0001";
    let trail = write_trail(
        dir,
        "intrusion",
        vec![
            console_login(hours(9), "grace", LOGIN_IP),
            associate_profile(hours(9) + Duration::minutes(5), iam_user("grace", console_key), LOGIN_IP, INSTANCE),
        ],
    );
    let mut flows = String::from(
        "version account-id interface-id srcaddr dstaddr srcport dstport protocol packets bytes start end action log-status\n",
    );
    for i in 0..4 {
        let start = hours(12) + Duration::minutes(10 * i);
        flows.push_str(&format!(
            "2 {ACCOUNT} {ENI} 10.0.4.25 {EXFIL_IP} 44321 443 6 400000 600000000 {} {} ACCEPT OK\n",
            start.timestamp(),
            (start + Duration::minutes(9)).timestamp()
        ));
    }
    let flow_path = dir.join("flows.log");
    std::fs::write(&flow_path, flows).unwrap();
    (trail, flow_path)
}

async fn assert_flow_joins(terminated: bool) {
    let db = TestDb::new().await;
    let dir = tempfile::tempdir().unwrap();
    run(&db, &["posture", "import", snapshot(dir.path(), terminated).to_str().unwrap()]);
    let (trail, flows) = exfiltration(dir.path());
    import(&db, dir.path(), &NetworkContext::default(), &[&trail, &flows]);
    let login = incidents_of(&db, LOGIN_IP).await;
    assert_eq!(login.len(), 1, "{login:?}");
    let (flow_incident, why) = incident_of_policy(&db, "aws-flow-exfiltration-volume").await;
    assert_eq!(Some(&flow_incident), login.first(), "the exfiltration joins the intrusion: {why}");
    assert!(why.contains(ENI) && why.contains("185.193.88.0/24"), "{why}");
}

#[tokio::test]
async fn a_default_format_exfiltration_joins_through_the_inventorys_interfaces() {
    assert_flow_joins(false).await;
}

#[tokio::test]
async fn a_terminated_instances_interfaces_still_tie_its_flows() {
    assert_flow_joins(true).await;
}

/// Intrusion B of the engine's tests: a stolen key attaches an admin policy to a role and
/// assumes it; the role session disables GuardDuty from a second address.
const B_IP: &str = "45.133.1.9";
const B_SECOND_IP: &str = "80.94.95.112";
const B_ROLE_KEY: &str = "ASIAFAKEPWNSESSION02";

fn intrusion_b_without_assume() -> Vec<Value> {
    vec![
        event(
            hours(14),
            "AttachRolePolicy",
            "iam.amazonaws.com",
            iam_user("bob", "AKIAFAKEBOBKEY000002"),
            B_IP,
            json!({"requestParameters": {"roleName": "ops", "policyArn": "arn:aws:iam::aws:policy/AdministratorAccess"}}),
        ),
        delete_detector(hours(14) + Duration::minutes(45), assumed("ops", "pwn", B_ROLE_KEY, None), B_SECOND_IP),
    ]
}

fn intrusion_b_assume() -> Vec<Value> {
    let identity = iam_user("bob", "AKIAFAKEBOBKEY000002");
    vec![assume_role(hours(14) + Duration::minutes(2), identity, B_IP, ("ops", "pwn", B_ROLE_KEY), None)]
}

#[tokio::test]
async fn a_role_assumption_imported_after_both_sides_alerts_ties_them() {
    let db = TestDb::new().await;
    let dir = tempfile::tempdir().unwrap();
    let alerts = write_trail(dir.path(), "b-alerts", intrusion_b_without_assume());
    import(&db, dir.path(), &NetworkContext::default(), &[&alerts]);
    let apart = incidents_of_alerts(&db).await;
    assert_eq!(apart.len(), 2, "without the AssumeRole, the caller and the role session tie to nothing: {apart:#?}");
    let all: BTreeSet<String> = apart.values().flatten().cloned().collect();

    let bridge = write_trail(dir.path(), "b-assume", intrusion_b_assume());
    import(&db, dir.path(), &NetworkContext::default(), &[&bridge]);
    let after = incidents_of_alerts(&db).await;
    assert_eq!(after.len(), 1, "the AssumeRole imported last ties them: {after:#?}");
    assert_eq!(after.values().next().unwrap(), &all);
    let survivor = after.keys().next().unwrap();
    let absorbed = apart.keys().find(|id| *id != survivor).unwrap();
    let history = incident_pages::history(&db.pool, absorbed).await.unwrap();
    assert!(history.iter().any(|c| c.field == "merged_into" && c.new_value.as_deref() == Some(survivor.as_str())));

    // Importing the same file again stores nothing (the events are known), nor does re-running
    // detection change anything.
    let events = db.count("SELECT count(*) FROM cloudtrail_events").await;
    import(&db, dir.path(), &NetworkContext::default(), &[&bridge]);
    assert_eq!(db.count("SELECT count(*) FROM cloudtrail_events").await, events, "nothing new stored");
    assert_eq!(incidents_of_alerts(&db).await, after);
    setup::detect_all(&db, &setup::shipped_policies()).await;
    assert_eq!(incidents_of_alerts(&db).await, after);

    // A new bridge between the same sides (bob assumes the role again) re-links alerts already
    // merged: the survivor keeps the new session's key, and nothing splits or merges again.
    let again = assume_role(
        hours(14) + Duration::minutes(30),
        iam_user("bob", "AKIAFAKEBOBKEY000002"),
        B_IP,
        ("ops", "pwn-2", "ASIAFAKEPWNSESSION03"),
        None,
    );
    let merges = db.count("SELECT count(*) FROM incident_changes WHERE field = 'merged'").await;
    import(&db, dir.path(), &NetworkContext::default(), &[&write_trail(dir.path(), "b-again", vec![again])]);
    assert_eq!(db.count("SELECT count(*) FROM cloudtrail_events").await, events + 1, "the new bridge is stored");
    assert_eq!(incidents_of_alerts(&db).await, after, "the same one incident");
    let kept: Vec<String> =
        sqlx::query_scalar("SELECT incident_id FROM incident_keys WHERE link_key = 'k:ASIAFAKEPWNSESSION03'")
            .fetch_all(&db.pool)
            .await
            .unwrap();
    assert_eq!(kept, [survivor.as_str()], "the caller's alert was re-keyed by the new bridge");
    assert_eq!(db.count("SELECT count(*) FROM incident_changes WHERE field = 'merged'").await, merges);
}

#[tokio::test]
async fn a_merge_keeps_the_status_the_analyst_set_on_either_part() {
    let db = TestDb::new().await;
    let dir = tempfile::tempdir().unwrap();
    let (role_alert, caller_alert) = {
        let mut events = intrusion_b_without_assume();
        let role = events.pop().unwrap();
        (write_trail(dir.path(), "role", vec![role]), write_trail(dir.path(), "caller", events))
    };
    // The role session's alert first: an analyst starts on it.
    import(&db, dir.path(), &NetworkContext::default(), &[&role_alert]);
    let first = incidents_of_alerts(&db).await.into_keys().next().unwrap();
    let update = IncidentUpdate { status: Some(IncidentStatus::Investigating), owner: None };
    assert!(incident_pages::update(&db.pool, &first, &update, "cli:maria", "looking").await.unwrap());
    // Then the caller's alert, alone (an incident of its own), and its AssumeRole: the caller's
    // incident, which started earlier, survives the merge.
    import(&db, dir.path(), &NetworkContext::default(), &[&caller_alert]);
    assert_eq!(incidents_of_alerts(&db).await.len(), 2);
    let bridge = write_trail(dir.path(), "assume", intrusion_b_assume());
    import(&db, dir.path(), &NetworkContext::default(), &[&bridge]);
    let after = incidents_of_alerts(&db).await;
    assert_eq!(after.len(), 1, "{after:#?}");
    let survivor = after.into_keys().next().unwrap();
    assert_ne!(survivor, first, "the incident that started earlier survives");
    let filter = IncidentFilter { id: Some(survivor.clone()), open_only: false };
    let entry = incident_pages::incidents(&db.pool, &filter, None, 1).await.unwrap().pop().unwrap();
    assert_eq!(entry.incident.status, IncidentStatus::Investigating, "the analyst's status is kept");
    let history = incident_pages::history(&db.pool, &survivor).await.unwrap();
    let change = history.iter().find(|c| c.field == "status").expect("the status change is in the history");
    assert_eq!(
        (change.actor.as_str(), change.old_value.as_deref(), change.new_value.as_deref()),
        ("skywarden", Some("open"), Some("investigating"))
    );
    assert!(change.reason.contains(&first), "{}", change.reason);
}

const TOR_EXIT: &str = "185.220.101.4";

#[tokio::test]
async fn two_intrusions_through_one_tor_exit_stay_two_incidents() {
    let db = TestDb::new().await;
    let dir = tempfile::tempdir().unwrap();
    // Two strangers, hours apart, each stopping the trail with their own key through one exit.
    let trail = write_trail(
        dir.path(),
        "tor",
        vec![
            stop_logging(hours(10), iam_user("heidi", "AKIAFAKEHEIDI0000001"), TOR_EXIT),
            stop_logging(hours(15), iam_user("ivan", "AKIAFAKEIVAN00000001"), TOR_EXIT),
        ],
    );
    let tor_list = format!("{TOR_EXIT}\n");
    let context = NetworkContext { tor_exits: Some(&tor_list), ..Default::default() };
    import(&db, dir.path(), &context, &[&trail]);
    let tor_flagged = db
        .count("SELECT count(*) FROM alerts WHERE host(source_ip) = '185.220.101.4' AND (details #>> '{network,is_tor}')::boolean")
        .await;
    assert!(tor_flagged >= 2, "the alerts know the address is a Tor exit");
    let (heidi, ivan) = (user_arn("heidi"), user_arn("ivan"));
    let of = |principal: String| {
        let pool = db.pool.clone();
        async move {
            sqlx::query_scalar::<_, String>("SELECT DISTINCT incident_id FROM alerts WHERE principal = $1")
                .bind(principal)
                .fetch_all(&pool)
                .await
                .unwrap()
        }
    };
    let (heidi_incidents, ivan_incidents) = (of(heidi).await, of(ivan).await);
    assert_eq!(heidi_incidents.len(), 1, "{heidi_incidents:?}");
    assert_eq!(ivan_incidents.len(), 1, "{ivan_incidents:?}");
    assert_ne!(heidi_incidents, ivan_incidents, "one Tor exit does not make two strangers one intrusion");
}

#[tokio::test]
async fn a_role_chain_carries_the_users_source_identity_into_the_incident() {
    let db = TestDb::new().await;
    let dir = tempfile::tempdir().unwrap();
    let (user_ip, hop_ip, role_b_ip) = ("91.92.109.30", "91.93.1.2", "80.94.95.140");
    let (key_a, key_b) = ("ASIAFAKEHOPASESSION1", "ASIAFAKEHOPBSESSION1");
    let judy = iam_user("judy", "AKIAFAKEJUDYKEY00001");
    let trail = write_trail(
        dir.path(),
        "chain",
        vec![
            stop_logging(hours(8), judy.clone(), user_ip),
            assume_role(hours(8) + Duration::minutes(1), judy, user_ip, ("hop-a", "judy", key_a), Some("judy")),
            // Role A assumes role B from elsewhere: neither raises an alert.
            assume_role(
                hours(8) + Duration::minutes(20),
                assumed("hop-a", "judy", key_a, Some("judy")),
                hop_ip,
                ("hop-b", "judy", key_b),
                None,
            ),
            delete_detector(hours(9), assumed("hop-b", "judy", key_b, Some("judy")), role_b_ip),
        ],
    );
    import(&db, dir.path(), &NetworkContext::default(), &[&trail]);
    let user = incidents_of(&db, user_ip).await;
    let role_b = incidents_of(&db, role_b_ip).await;
    assert_eq!(user.len(), 1, "{user:?}");
    assert_eq!(role_b, user, "the second hop's calls join the user's incident: {:#?}", incidents_of_alerts(&db).await);
    let reasons: Vec<String> = sqlx::query_scalar("SELECT link_reason FROM alerts WHERE host(source_ip) = $1")
        .bind(role_b_ip)
        .fetch_all(&db.pool)
        .await
        .unwrap();
    assert!(reasons.iter().any(|r| r == "source identity judy"), "{reasons:?}");
}

/// GuardDuty findings on the instance of an intrusion (as the CLI's `get-findings` prints them).
fn guardduty(id: &str, finding_type: &str, resource: Value, service: Value) -> Value {
    json!({"accountId": ACCOUNT, "arn": format!("arn:aws:guardduty:us-east-1:{ACCOUNT}:detector/d1/finding/{id}"),
           "createdAt": hours(13).to_rfc3339(), "updatedAt": hours(13).to_rfc3339(), "id": id, "partition": "aws",
           "region": "us-east-1", "type": finding_type, "title": finding_type, "severity": 5.0,
           "resource": resource, "service": service})
}

const INSTANCE_KEY: &str = "ASIAFAKEINSTANCEKEY1";
const OUTSIDE_IP: &str = "5.188.10.99";
const SCANNER_IP: &str = "162.142.125.9";

fn instance_findings() -> Value {
    let instance = json!({"instanceId": INSTANCE, "networkInterfaces": [{"networkInterfaceId": ENI}]});
    let probe = guardduty(
        "probe-1",
        "Recon:EC2/PortProbeUnprotectedPort",
        json!({"resourceType": "Instance", "instanceDetails": instance}),
        json!({"archived": false, "count": 40, "resourceRole": "TARGET",
               "action": {"actionType": "PORT_PROBE", "portProbeAction": {"blocked": false, "portProbeDetails": [{
                   "localPortDetails": {"port": 22, "portName": "SSH"},
                   "remoteIpDetails": {"ipAddressV4": SCANNER_IP, "country": {"countryCode": "US"}}}]}}}),
    );
    let exfiltration = guardduty(
        "exfil-1",
        "UnauthorizedAccess:IAMUser/InstanceCredentialExfiltration.OutsideAWS",
        json!({"resourceType": "AccessKey", "instanceDetails": instance,
               "accessKeyDetails": {"accessKeyId": INSTANCE_KEY, "principalId": format!("AROAWEB:{INSTANCE}"),
                                    "userName": "web", "userType": "AssumedRole"}}),
        json!({"archived": false, "count": 3, "resourceRole": "TARGET",
               "action": {"actionType": "AWS_API_CALL", "awsApiCallAction": {"api": "ListBuckets",
                   "serviceName": "s3.amazonaws.com",
                   "remoteIpDetails": {"ipAddressV4": OUTSIDE_IP, "country": {"countryCode": "NL"}}}}}),
    );
    json!({"findings": [probe, exfiltration]})
}

#[tokio::test]
async fn a_probe_of_the_intrusions_instance_stays_apart_but_its_stolen_credentials_join() {
    let db = TestDb::new().await;
    let dir = tempfile::tempdir().unwrap();
    // The intruder hands the instance a profile; its credentials are then used from outside AWS.
    let context = NetworkContext {
        asn_csv: Some("5.188.0.0,5.188.255.255,64501,Example Bulletproof Hosting\n"),
        ..Default::default()
    };
    let trail = write_trail(
        dir.path(),
        "instance",
        vec![
            console_login(hours(9), "grace", LOGIN_IP),
            associate_profile(
                hours(9) + Duration::minutes(5),
                iam_user("grace", "ASIACONSOLEGRACE0002"),
                LOGIN_IP,
                INSTANCE,
            ),
            event(
                hours(12),
                "ListBuckets",
                "s3.amazonaws.com",
                assumed("web", INSTANCE, INSTANCE_KEY, None),
                OUTSIDE_IP,
                json!({"readOnly": true}),
            ),
        ],
    );
    import(&db, dir.path(), &context, &[&trail]);
    let intrusion = incidents_of(&db, LOGIN_IP).await;
    assert_eq!(intrusion.len(), 1, "{intrusion:?}");
    let (outside, why) = incident_of_policy(&db, "aws-instance-credentials-used-outside").await;
    assert_eq!(Some(&outside), intrusion.first(), "the instance's credentials used outside join: {why}");

    let findings = dir.path().join("guardduty.json");
    std::fs::write(&findings, instance_findings().to_string()).unwrap();
    let output = db.skywarden(&["import", "--findings", "--json", findings.to_str().unwrap()]);
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let summary: Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(summary["incidents"]["linked"], 2, "{summary}");
    // Linked by the import itself: no list was read, nothing is left for a reader to link, and
    // each finding's incident is a row of its own table.
    assert_eq!(db.count("SELECT count(*) FROM alerts WHERE incident_id IS NULL").await, 0);
    let without_row = db
        .count(
            "SELECT count(*) FROM alerts a WHERE a.policy_id LIKE 'aws-guardduty:%'
             AND NOT EXISTS (SELECT 1 FROM incidents i WHERE i.incident_id = a.incident_id)",
        )
        .await;
    assert_eq!(without_row, 0);
    let (stolen, why) = incident_of_policy(&db, "aws-guardduty:UnauthorizedAccess:IAMUser/InstanceCredential").await;
    assert_eq!(stolen, outside, "GuardDuty's finding on the stolen credentials joins the intrusion: {why}");
    let (probe, why) = incident_of_policy(&db, "aws-guardduty:Recon:EC2/PortProbe").await;
    assert_ne!(Some(&probe), intrusion.first(), "a probe of the instance from the internet is no part of it: {why}");
    assert_eq!(why, "first alert");
}

/// A hosting provider on the hosting list: its addresses alone tie no alerts together.
const HOSTING: NetworkContext<'static> = NetworkContext {
    asn_csv: Some("45.137.21.0,45.137.22.255,211252,\"Delis, LLC\"\n"),
    tor_exits: None,
    vpn: None,
    hosting: Some("# hosting providers\nAS211252\n"),
    aws_ip_ranges: None,
};
const SPRAY_IP: &str = "45.137.21.40";

/// Per incident, the (policy, principal) of its alerts.
async fn incident_contents(db: &TestDb) -> BTreeMap<String, BTreeSet<(String, String)>> {
    let rows: Vec<(String, String, String)> = sqlx::query_as(
        "SELECT coalesce(incident_id, 'unlinked'), policy_id, coalesce(principal, '') FROM alerts ORDER BY first_seen",
    )
    .fetch_all(&db.pool)
    .await
    .unwrap();
    let mut incidents: BTreeMap<String, BTreeSet<(String, String)>> = BTreeMap::new();
    for (incident, policy, principal) in rows {
        incidents.entry(incident).or_default().insert((policy, principal));
    }
    incidents
}

/// One failed console login a minute, of `users[i]` from `addresses[i % len]`.
fn spray(users: &[String], addresses: &[&str]) -> Vec<Value> {
    users
        .iter()
        .enumerate()
        .map(|(i, user)| {
            setup::console_login(hours(3) + Duration::minutes(i as i64), user, addresses[i % addresses.len()], false)
        })
        .collect()
}

/// Asserts one incident holding the spray alert and every sprayed principal's login from an
/// anonymising network, and nothing else.
async fn assert_one_spray_incident(db: &TestDb, users: &[String]) {
    let incidents = incident_contents(db).await;
    assert_eq!(incidents.len(), 1, "{incidents:#?}");
    let (_, alerts) = incidents.into_iter().next().unwrap();
    let anonymising: BTreeSet<String> = alerts
        .iter()
        .filter(|(policy, _)| policy == "aws-login-from-anonymizing-network")
        .map(|(_, principal)| principal.clone())
        .collect();
    let expected: BTreeSet<String> = users.iter().map(|u| user_arn(u)).collect();
    assert_eq!(anonymising, expected, "every sprayed principal's alert is in the spray's incident");
    let sprays = alerts.iter().filter(|(policy, _)| policy == "aws-password-spray").count();
    assert_eq!(sprays, 1, "{alerts:#?}");
    assert_eq!(alerts.len(), users.len() + 1, "nothing else: {alerts:#?}");
    let named: i64 = db
        .count(
            "SELECT jsonb_array_length(details -> 'link_principals')::bigint FROM alerts WHERE policy_id = 'aws-password-spray'",
        )
        .await;
    assert_eq!(named as usize, users.len(), "the spray names each principal it tried");
}

#[tokio::test]
async fn a_spray_from_a_hosting_address_is_one_incident_with_each_principals_alerts() {
    let db = TestDb::new().await;
    let dir = tempfile::tempdir().unwrap();
    let users: Vec<String> = ["admin", "backup", "ivan", "judy", "ken", "lena"].map(String::from).to_vec();
    let trail = write_trail(dir.path(), "spray", spray(&users, &[SPRAY_IP]));
    import(&db, dir.path(), &HOSTING, &[&trail]);
    let hosting = db.count("SELECT count(*) FROM cloudtrail_events WHERE source_is_hosting").await;
    assert_eq!(hosting as usize, users.len(), "the address is a listed hosting provider's");
    assert_one_spray_incident(&db, &users).await;
}

#[tokio::test]
async fn a_spray_over_a_hosting_providers_addresses_is_one_incident_too() {
    let db = TestDb::new().await;
    let dir = tempfile::tempdir().unwrap();
    // Nine principals from three addresses of one AS: no address reaches a spray of its own.
    let users: Vec<String> = (1..=9).map(|n| format!("user{n}")).collect();
    let trail = write_trail(dir.path(), "as-spray", spray(&users, &["45.137.21.9", "45.137.21.77", "45.137.22.130"]));
    import(&db, dir.path(), &HOSTING, &[&trail]);
    let subject: String =
        sqlx::query_scalar("SELECT details ->> 'asn' FROM alerts WHERE policy_id = 'aws-password-spray'")
            .fetch_one(&db.pool)
            .await
            .unwrap();
    assert_eq!(subject, "211252", "the spray of the AS");
    assert_one_spray_incident(&db, &users).await;
}

#[tokio::test]
async fn two_principals_logging_in_from_one_hosting_address_stay_two_incidents() {
    let db = TestDb::new().await;
    let dir = tempfile::tempdir().unwrap();
    let trail = write_trail(
        dir.path(),
        "shared",
        vec![
            console_login(hours(3), "mona", SPRAY_IP),
            console_login(hours(3) + Duration::minutes(20), "nils", SPRAY_IP),
        ],
    );
    import(&db, dir.path(), &HOSTING, &[&trail]);
    let incidents = incident_contents(&db).await;
    assert_eq!(incidents.len(), 2, "{incidents:#?}");
    let mut principals = BTreeSet::new();
    for alerts in incidents.values() {
        let of_incident: BTreeSet<&String> = alerts.iter().map(|(_, principal)| principal).collect();
        assert_eq!(of_incident.len(), 1, "one principal per incident: {alerts:?}");
        principals.extend(of_incident);
        assert!(
            alerts.iter().any(|(policy, _)| policy == "aws-login-from-anonymizing-network"),
            "each login is one from an anonymising network: {alerts:?}"
        );
    }
    assert_eq!(principals, BTreeSet::from([&user_arn("mona"), &user_arn("nils")]));
}

/// Grace starts an SSM session on the instance (`target`).
fn start_session(time: DateTime<Utc>, identity: Value, ip: &str, instance: &str) -> Value {
    event(
        time,
        "StartSession",
        "ssm.amazonaws.com",
        identity,
        ip,
        json!({"requestParameters": {"target": instance},
               "responseElements": {"sessionId": "grace-0a1b2c3d4e5f67890", "tokenValue": "Value hidden due to security reasons.",
                                    "streamUrl": "wss://ssmmessages.us-east-1.amazonaws.com/v1/data-channel/grace-0a1b2c3d4e5f67890"}}),
    )
}

/// The instance's credentials are used outside (an incident of their own, which keeps the
/// instance) two days after grace's console login, both imported first; the file holding grace's `bridge` of the
/// instance (handing it a profile, entering it) arrives later: one incident.
async fn assert_a_late_bridge_ties_the_instances_side(bridge: fn(DateTime<Utc>, Value, &str, &str) -> Value) {
    let db = TestDb::new().await;
    let dir = tempfile::tempdir().unwrap();
    let context = NetworkContext {
        asn_csv: Some("5.188.0.0,5.188.255.255,64501,Example Bulletproof Hosting\n"),
        ..Default::default()
    };
    let used = write_trail(
        dir.path(),
        "used-outside",
        vec![
            console_login(hours(9), "grace", LOGIN_IP),
            // Two days after the profile was handed over: beyond the reach of a late bridge's
            // re-keying (a day), so only the key the credentials' incident kept ties it.
            event(
                hours(57),
                "ListBuckets",
                "s3.amazonaws.com",
                assumed("web", INSTANCE, INSTANCE_KEY, None),
                OUTSIDE_IP,
                json!({"readOnly": true}),
            ),
        ],
    );
    import(&db, dir.path(), &context, &[&used]);
    let (outside, _) = incident_of_policy(&db, "aws-instance-credentials-used-outside").await;
    let apart = incidents_of_alerts(&db).await;
    assert_eq!(apart.len(), 2, "nothing ties grace to the instance yet: {apart:#?}");
    let instance_key = format!("r:{INSTANCE}");
    let keeps: Vec<String> = sqlx::query_scalar("SELECT incident_id FROM incident_keys WHERE link_key = $1")
        .bind(&instance_key)
        .fetch_all(&db.pool)
        .await
        .unwrap();
    assert_eq!(keeps, [outside.as_str()], "the credentials' incident keeps their instance");

    let identity = iam_user("grace", "ASIACONSOLEGRACE0002");
    let late =
        write_trail(dir.path(), "bridge", vec![bridge(hours(9) + Duration::minutes(5), identity, LOGIN_IP, INSTANCE)]);
    import(&db, dir.path(), &context, &[&late]);
    let after = incidents_of_alerts(&db).await;
    assert_eq!(after.len(), 1, "the late bridge ties grace's login to the instance's credentials: {after:#?}");
    let all: BTreeSet<String> = apart.values().flatten().cloned().collect();
    assert!(after.values().next().unwrap().is_superset(&all), "{after:#?}");
}

#[tokio::test]
async fn a_late_profile_association_ties_the_instances_credentials_to_the_caller() {
    assert_a_late_bridge_ties_the_instances_side(associate_profile).await;
}

#[tokio::test]
async fn a_late_session_into_the_instance_ties_its_credentials_to_the_caller() {
    assert_a_late_bridge_ties_the_instances_side(start_session).await;
}

/// GuardDuty's finding that a user's key was used from a Tor exit, as the service writes it
/// (with the exit's AS under `organization`).
fn tor_caller_finding(id: &str, finding_type: &str, user: &str, key: &str, organization: Option<Value>) -> Value {
    let mut remote = json!({"ipAddressV4": TOR_EXIT, "country": {"countryCode": "DE"}});
    if let Some(organization) = organization {
        remote["organization"] = organization;
    }
    guardduty(
        id,
        finding_type,
        json!({"resourceType": "AccessKey", "accessKeyDetails": {"accessKeyId": key,
               "principalId": format!("AIDA{}", user.to_uppercase()), "userName": user, "userType": "IAMUser"}}),
        json!({"archived": false, "count": 1, "resourceRole": "TARGET",
               "action": {"actionType": "AWS_API_CALL", "awsApiCallAction": {"api": "GetCallerIdentity",
                   "serviceName": "sts.amazonaws.com", "remoteIpDetails": remote}}}),
    )
}

#[tokio::test]
async fn a_guardduty_finding_from_a_tor_exit_joins_no_strangers_incident() {
    let db = TestDb::new().await;
    let dir = tempfile::tempdir().unwrap();
    // Heidi stops the trail through a Tor exit, imported with the exit list.
    let trail = write_trail(
        dir.path(),
        "tor",
        vec![stop_logging(hours(10), iam_user("heidi", "AKIAFAKEHEIDI0000001"), TOR_EXIT)],
    );
    let tor_list = format!("{TOR_EXIT}\n");
    import(&db, dir.path(), &NetworkContext { tor_exits: Some(&tor_list), ..Default::default() }, &[&trail]);
    // Hours later, GuardDuty: ivan's key used from the same exit (its type says Tor), and a
    // finding that says nothing of the address (ken's key from it, a custom threat list): the
    // findings import is given no lists.
    let tor = tor_caller_finding(
        "tor-1",
        "UnauthorizedAccess:IAMUser/TorIPCaller",
        "ivan",
        "AKIAFAKEIVAN00000001",
        Some(json!({"asn": "60729", "asnOrg": "Stiftung Erneuerbare Freiheit", "isp": "Tor", "org": "Tor"})),
    );
    let plain = tor_caller_finding(
        "listed-1",
        "UnauthorizedAccess:IAMUser/MaliciousIPCaller.Custom",
        "ken",
        "AKIAFAKEKEN000000001",
        None,
    );
    let findings = dir.path().join("guardduty.json");
    std::fs::write(&findings, json!({"findings": [tor, plain]}).to_string()).unwrap();
    let output = db.skywarden(&["import", "--findings", "--json", findings.to_str().unwrap()]);
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let flagged: String =
        sqlx::query_scalar("SELECT details #>> '{network,is_tor}' FROM alerts WHERE policy_id LIKE '%TorIPCaller'")
            .fetch_one(&db.pool)
            .await
            .unwrap();
    assert_eq!(flagged, "true", "the finding's type says the address is a Tor exit");
    let incidents = incident_contents(&db).await;
    let principals: Vec<BTreeSet<&String>> =
        incidents.values().map(|alerts| alerts.iter().map(|(_, principal)| principal).collect()).collect();
    assert_eq!(principals.len(), 3, "heidi, ivan and ken stay apart: {incidents:#?}");
    assert!(principals.iter().all(|p| p.len() == 1), "one principal per incident: {incidents:#?}");
}

const OTHER_ACCOUNT: &str = "444455556666";

/// A role session of `account` whose chain carries `source_identity`.
fn session_in(account: &str, role: &str, session: &str, key: &str, source_identity: &str) -> Value {
    json!({"type": "AssumedRole", "principalId": format!("AROA{}:{session}", role.to_uppercase()),
           "arn": format!("arn:aws:sts::{account}:assumed-role/{role}/{session}"), "accountId": account,
           "accessKeyId": key,
           "sessionContext": {"sessionIssuer": {"type": "Role", "principalId": format!("AROA{}", role.to_uppercase()),
               "arn": format!("arn:aws:iam::{account}:role/{role}"), "accountId": account, "userName": role},
               "attributes": {"creationDate": DAY, "mfaAuthenticated": "false"}, "sourceIdentity": source_identity}})
}

#[tokio::test]
async fn one_source_identity_in_two_accounts_a_day_apart_ties_nothing() {
    let db = TestDb::new().await;
    let dir = tempfile::tempdir().unwrap();
    // Two pipelines whose organisation sets the source identity "deploy": one stops a trail in
    // this account, the other, a day later, deletes a detector in another account.
    let mut other = delete_detector(
        hours(32),
        session_in(OTHER_ACCOUNT, "release", "run-2", "ASIAFAKERELEASERUN02", "deploy"),
        "203.0.113.80",
    );
    other["recipientAccountId"] = json!(OTHER_ACCOUNT);
    let trail = write_trail(
        dir.path(),
        "deploy",
        vec![
            stop_logging(
                hours(8),
                session_in(ACCOUNT, "ci", "run-1", "ASIAFAKECIRUN0000001", "deploy"),
                "198.51.100.61",
            ),
            other,
        ],
    );
    import(&db, dir.path(), &NetworkContext::default(), &[&trail]);
    let accounts: Vec<String> =
        sqlx::query_scalar("SELECT DISTINCT account_id FROM alerts ORDER BY 1").fetch_all(&db.pool).await.unwrap();
    assert_eq!(accounts, [ACCOUNT, OTHER_ACCOUNT], "an alert in each account");
    let incidents = incidents_of_alerts(&db).await;
    assert_eq!(incidents.len(), 2, "a free-text source identity alone ties no two alerts: {incidents:#?}");
    let kept = db.count("SELECT count(*) FROM incident_keys WHERE link_key = 'sid:deploy'").await;
    assert_eq!(kept, 0, "a source identity seen only in evidence is looked up, never kept");
}
