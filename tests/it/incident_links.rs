//! How alerts link into incidents, case by case: an exfiltration flow in AWS's default format
//! (no instance column) joins through the inventory's interfaces, a terminated instance's
//! included; a merge keeps the analyst's status; a role assumption imported after the alerts of
//! both its sides ties them; two intrusions through one Tor exit stay two; a role chain carries
//! its source identity; a GuardDuty probe of an instance joins nothing, while the instance's
//! stolen credentials join the intrusion.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use chrono::{DateTime, Duration, Utc};
use serde_json::{Value, json};
use skywarden::alerts::incident_pages::{self, IncidentFilter, IncidentUpdate};
use skywarden::alerts::incidents::IncidentStatus;

use crate::support::TestDb;

const ACCOUNT: &str = "111122223333";
const DAY: &str = "2026-04-14T00:00:00Z";

fn hours(h: i64) -> DateTime<Utc> {
    DAY.parse::<DateTime<Utc>>().unwrap() + Duration::hours(h)
}

fn user_arn(name: &str) -> String {
    format!("arn:aws:iam::{ACCOUNT}:user/{name}")
}

fn role_session(role: &str, session: &str) -> String {
    format!("arn:aws:sts::{ACCOUNT}:assumed-role/{role}/{session}")
}

/// A CloudTrail record as AWS writes it (the fields the engine and the rules read).
fn event(time: DateTime<Utc>, name: &str, source: &str, identity: Value, ip: &str, extra: Value) -> Value {
    let id = xxhash_rust::xxh3::xxh3_128(format!("{time}{name}{ip}{identity}").as_bytes());
    let hex = format!("{id:032x}");
    let mut record = json!({
        "eventVersion": "1.09", "userIdentity": identity,
        "eventTime": time.format("%Y-%m-%dT%H:%M:%SZ").to_string(),
        "eventSource": source, "eventName": name, "awsRegion": "us-east-1",
        "sourceIPAddress": ip, "userAgent": "aws-cli/2.15.0",
        "requestParameters": null, "responseElements": null,
        "eventID": format!("{}-{}-{}-{}-{}", &hex[0..8], &hex[8..12], &hex[12..16], &hex[16..20], &hex[20..32]),
        "readOnly": false, "eventType": "AwsApiCall", "managementEvent": true, "recipientAccountId": ACCOUNT,
    });
    for (k, v) in extra.as_object().unwrap() {
        record[k] = v.clone();
    }
    record
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
    let identity = json!({"type": "IAMUser", "principalId": format!("AIDA{}", user.to_uppercase()),
                          "arn": user_arn(user), "accountId": ACCOUNT, "userName": user});
    event(
        time,
        "ConsoleLogin",
        "signin.amazonaws.com",
        identity,
        ip,
        json!({"eventType": "AwsConsoleSignIn", "responseElements": {"ConsoleLogin": "Success"},
               "additionalEventData": {"MFAUsed": "No", "MobileVersion": "No"}}),
    )
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

fn write_trail(dir: &Path, name: &str, records: Vec<Value>) -> PathBuf {
    let path = dir.join(format!("{name}.json"));
    std::fs::write(&path, serde_json::to_vec(&json!({"Records": records})).unwrap()).unwrap();
    path
}

fn run(db: &TestDb, args: &[&str]) {
    let out = db.skywarden(args);
    assert!(out.status.success(), "{args:?}: {}", String::from_utf8_lossy(&out.stderr));
}

fn import(db: &TestDb, paths: &[&Path]) {
    let mut args = vec!["import"];
    args.extend(paths.iter().map(|p| p.to_str().unwrap()));
    run(db, &args);
}

/// Alert ids grouped by the incident they are linked to.
async fn incidents_of_alerts(db: &TestDb) -> BTreeMap<String, BTreeSet<String>> {
    let rows: Vec<(String, String)> =
        sqlx::query_as("SELECT incident_id, alert_id::text FROM alerts WHERE incident_id IS NOT NULL")
            .fetch_all(&db.pool)
            .await
            .unwrap();
    let mut groups: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for (incident, alert) in rows {
        groups.entry(incident).or_default().insert(alert);
    }
    groups
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
    import(&db, &[&trail, &flows]);
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
    import(&db, &[&alerts]);
    let apart = incidents_of_alerts(&db).await;
    assert_eq!(apart.len(), 2, "without the AssumeRole, the caller and the role session tie to nothing: {apart:#?}");
    let all: BTreeSet<String> = apart.values().flatten().cloned().collect();

    let bridge = write_trail(dir.path(), "b-assume", intrusion_b_assume());
    import(&db, &[&bridge]);
    let after = incidents_of_alerts(&db).await;
    assert_eq!(after.len(), 1, "the AssumeRole imported last ties them: {after:#?}");
    assert_eq!(after.values().next().unwrap(), &all);
    let survivor = after.keys().next().unwrap();
    let absorbed = apart.keys().find(|id| *id != survivor).unwrap();
    let history = incident_pages::history(&db.pool, absorbed).await.unwrap();
    assert!(history.iter().any(|c| c.field == "merged_into" && c.new_value.as_deref() == Some(survivor.as_str())));

    // Importing the bridge again (or re-running detection) changes nothing.
    import(&db, &[&bridge]);
    assert_eq!(incidents_of_alerts(&db).await, after);
    let epoch = DateTime::<Utc>::from_timestamp(0, 0).unwrap();
    let policies = skywarden::detect::PolicySet::load(&Path::new(env!("CARGO_MANIFEST_DIR")).join("policies"));
    skywarden::detect::runner::run(&db.pool, &policies, skywarden::detect::runner::Scope::EventsSince(epoch))
        .await
        .unwrap();
    assert_eq!(incidents_of_alerts(&db).await, after);
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
    import(&db, &[&role_alert]);
    let first = incidents_of_alerts(&db).await.into_keys().next().unwrap();
    let update = IncidentUpdate { status: Some(IncidentStatus::Investigating), owner: None };
    assert!(incident_pages::update(&db.pool, &first, &update, "cli:maria", "looking").await.unwrap());
    // Then the caller's alert, alone (an incident of its own), and its AssumeRole: the caller's
    // incident, which started earlier, survives the merge.
    import(&db, &[&caller_alert]);
    assert_eq!(incidents_of_alerts(&db).await.len(), 2);
    let bridge = write_trail(dir.path(), "assume", intrusion_b_assume());
    import(&db, &[&bridge]);
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
    let tor = dir.path().join("tor-exits.txt");
    std::fs::write(&tor, format!("{TOR_EXIT}\n")).unwrap();
    // Two strangers, hours apart, each stopping the trail with their own key through one exit.
    let trail = write_trail(
        dir.path(),
        "tor",
        vec![
            stop_logging(hours(10), iam_user("heidi", "AKIAFAKEHEIDI0000001"), TOR_EXIT),
            stop_logging(hours(15), iam_user("ivan", "AKIAFAKEIVAN00000001"), TOR_EXIT),
        ],
    );
    run(&db, &["import", "--tor-exits", tor.to_str().unwrap(), trail.to_str().unwrap()]);
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
    import(&db, &[&trail]);
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
    let asn = dir.path().join("asn-ipv4.csv");
    std::fs::write(&asn, "5.188.0.0,5.188.255.255,64501,Example Bulletproof Hosting\n").unwrap();
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
    run(&db, &["import", "--geoip", asn.to_str().unwrap(), trail.to_str().unwrap()]);
    let intrusion = incidents_of(&db, LOGIN_IP).await;
    assert_eq!(intrusion.len(), 1, "{intrusion:?}");
    let (outside, why) = incident_of_policy(&db, "aws-instance-credentials-used-outside").await;
    assert_eq!(Some(&outside), intrusion.first(), "the instance's credentials used outside join: {why}");

    let findings = dir.path().join("guardduty.json");
    std::fs::write(&findings, instance_findings().to_string()).unwrap();
    run(&db, &["import", "--findings", findings.to_str().unwrap()]);
    // `import --findings` leaves linking to the next reader (the incidents list links first).
    skywarden::alerts::incidents::link_pending(&db.pool).await.unwrap();
    let (stolen, why) = incident_of_policy(&db, "aws-guardduty:UnauthorizedAccess:IAMUser/InstanceCredential").await;
    assert_eq!(stolen, outside, "GuardDuty's finding on the stolen credentials joins the intrusion: {why}");
    let (probe, why) = incident_of_policy(&db, "aws-guardduty:Recon:EC2/PortProbe").await;
    assert_ne!(Some(&probe), intrusion.first(), "a probe of the instance from the internet is no part of it: {why}");
    assert_eq!(why, "first alert");
}
