//! Every shipped policy against real-shaped CloudTrail events, positive and negative. The
//! policies are the ones built into the binary, as users run them.

use std::collections::BTreeSet;
use std::path::Path;

use chrono::{DateTime, Duration, Utc};
use serde_json::{Value, json};

use super::detectors::exfiltration::{self, HourlyVolume};
use super::detectors::{DetectorSettings, Detectors, logins};
use super::{PolicyEvent, PolicySet};
use crate::alerts::store::{BURST_SAMPLE, Burst};
use crate::geo::GeoInfo;
use crate::ingest::cloudtrail::CloudTrailEvent;
use crate::model::{Finding, Severity};
use crate::policy_files::{Origin, PolicyFile, PolicyFiles};

fn policies() -> PolicySet {
    let set = PolicySet::builtin();
    assert!(set.problems.is_empty(), "{:?}", set.problems);
    set
}

/// The detectors with `settings`, as if read from a settings file.
fn detectors_with(settings: DetectorSettings) -> Detectors {
    let file = PolicyFile::new("detectors.yaml", "", Origin::Builtin);
    Detectors::new(settings, &file, &BTreeSet::new(), &mut Vec::new())
}

const ACCOUNT: &str = "111122223333";

/// A CloudTrail event of `user` with the given name, source and extra fields.
fn cloudtrail(user: &str, source: &str, name: &str, time: &str, ip: &str, extra: Value) -> Value {
    let mut event = json!({
        "eventVersion": "1.09",
        "userIdentity": {"type": "IAMUser", "principalId": "AIDAEXAMPLE", "arn": format!("arn:aws:iam::{ACCOUNT}:user/{user}"),
                         "accountId": ACCOUNT, "userName": user},
        "eventTime": time, "eventSource": source, "eventName": name, "awsRegion": "us-east-1",
        "sourceIPAddress": ip, "userAgent": "Mozilla/5.0", "requestParameters": null, "responseElements": null,
        "eventID": format!("{user}-{name}-{time}-{ip}"), "eventType": "AwsApiCall", "recipientAccountId": ACCOUNT,
    });
    if let (Value::Object(base), Value::Object(more)) = (&mut event, extra) {
        base.extend(more);
    }
    event
}

fn login(user: &str, time: &str, ip: &str, success: bool, mfa: &str) -> Value {
    let mut event = cloudtrail(
        user,
        "signin.amazonaws.com",
        "ConsoleLogin",
        time,
        ip,
        json!({"eventType": "AwsConsoleSignIn", "responseElements": {"ConsoleLogin": if success { "Success" } else { "Failure" }},
               "additionalEventData": {"LoginTo": "https://console.aws.amazon.com/console/home", "MobileVersion": "No", "MFAUsed": mfa}}),
    );
    if !success {
        event["errorMessage"] = json!("Failed authentication");
    }
    event
}

fn to_event(raw: &Value, country: Option<&str>) -> PolicyEvent {
    let parsed = CloudTrailEvent::parse(&raw.to_string(), None).unwrap();
    let geo = country.map(|c| GeoInfo { country: Some(c.to_string()), ..Default::default() });
    PolicyEvent::from_parsed(parsed, geo.as_ref())
}

fn fired(set: &PolicySet, raw: &Value) -> Vec<(String, Severity)> {
    let event = to_event(raw, None);
    let mut found: Vec<(String, Severity)> = set
        .sigma
        .evaluate(&event, None)
        .into_iter()
        .chain(set.detectors.evaluate_event(&event, None))
        .map(|f| (f.policy_id, f.severity))
        .collect();
    found.sort();
    found
}

fn one(policy: &str, severity: Severity) -> Vec<(String, Severity)> {
    vec![(policy.to_string(), severity)]
}

const T: &str = "2026-11-12T04:00:00Z";
const ATTACKER: &str = "176.36.10.20";

#[test]
fn console_login_without_mfa() {
    let set = policies();
    assert_eq!(
        fired(&set, &login("alice", T, ATTACKER, true, "No")),
        one("aws-console-login-without-mfa", Severity::Medium)
    );
    assert!(fired(&set, &login("alice", T, ATTACKER, true, "Yes")).is_empty());
    assert!(fired(&set, &login("alice", T, ATTACKER, false, "No")).is_empty());
    let mut federated = login("alice", T, ATTACKER, true, "No");
    federated["userIdentity"]["type"] = json!("AssumedRole");
    assert!(fired(&set, &federated).is_empty());
    // SAML federation: MFA happens at the identity provider; CloudTrail still says MFAUsed No.
    let mut saml = login("alice", T, ATTACKER, true, "No");
    saml["additionalEventData"]["SamlProviderArn"] = json!(format!("arn:aws:iam::{ACCOUNT}:saml-provider/Okta"));
    assert!(fired(&set, &saml).is_empty());
}

/// The shipped policies with every SigmaHQ rule enabled (they are off by default).
fn sigmahq_enabled() -> PolicySet {
    let set = PolicySet::from_files_with(&PolicyFiles::builtin(), true);
    assert!(set.problems.is_empty(), "{:?}", set.problems);
    set
}

#[test]
fn a_string_modifier_on_an_object_field_matches_its_serialised_text_as_reference_engines_do() {
    let set = sigmahq_enabled();
    let versioning = |status: &str| {
        cloudtrail(
            "alice",
            "s3.amazonaws.com",
            "PutBucketVersioning",
            T,
            ATTACKER,
            json!({"requestParameters": {"bucketName": "logs", "VersioningConfiguration": {"Status": status, "xmlns": "http://s3.amazonaws.com/doc/2006-03-01/"}}}),
        )
    };
    let suspended = to_event(&versioning("Suspended"), None);
    let rule = "a136ac98-b2bc-4189-a14d-f0d0388e57a7";
    assert!(
        set.sigma.matching_rules(&suspended).iter().any(|id| id == rule),
        "{:?}",
        set.sigma.matching_rules(&suspended)
    );
    assert_eq!(set.sigma.matching_rules(&suspended), set.sigma.matching_rules_plain(&versioning("Suspended")));
    let enabled = to_event(&versioning("Enabled"), None);
    assert!(!set.sigma.matching_rules(&enabled).iter().any(|id| id == rule));
}

#[test]
fn root_account_usage() {
    let set = policies();
    let mut root = login("root", T, ATTACKER, true, "Yes");
    root["userIdentity"] = json!({"type": "Root", "principalId": ACCOUNT, "arn": format!("arn:aws:iam::{ACCOUNT}:root"), "accountId": ACCOUNT});
    assert_eq!(fired(&set, &root), one("aws-root-account-usage", Severity::High));
    let mut by_service = root.clone();
    by_service["eventName"] = json!("DescribeTrails");
    by_service["eventType"] = json!("AwsApiCall");
    by_service["userIdentity"]["invokedBy"] = json!("config.amazonaws.com");
    assert!(fired(&set, &by_service).is_empty());
}

#[test]
fn instance_profile_association() {
    let set = policies();
    let params = json!({"requestParameters": {"AssociateIamInstanceProfileRequest": {"InstanceId": "i-0a1b2c3d4e5f67890", "IamInstanceProfile": {"Name": "ssm"}}}});
    let event = cloudtrail("alice", "ec2.amazonaws.com", "AssociateIamInstanceProfile", T, ATTACKER, params.clone());
    assert_eq!(fired(&set, &event), one("aws-iam-instance-profile-associated", Severity::High));
    let mut denied = event.clone();
    denied["errorCode"] = json!("Client.UnauthorizedOperation");
    assert!(fired(&set, &denied).is_empty());
    let describe =
        cloudtrail("alice", "ec2.amazonaws.com", "DescribeIamInstanceProfileAssociations", T, ATTACKER, json!({}));
    assert!(fired(&set, &describe).is_empty());
}

#[test]
fn role_policy_attachment_escalates_for_admin_and_ssm() {
    let set = policies();
    let attach = |policy: &str| {
        cloudtrail(
            "alice",
            "iam.amazonaws.com",
            "AttachRolePolicy",
            T,
            ATTACKER,
            json!({"requestParameters": {"roleName": "app", "policyArn": format!("arn:aws:iam::aws:policy/{policy}")}}),
        )
    };
    assert_eq!(fired(&set, &attach("ReadOnlyAccess")), one("aws-iam-role-policy-attached", Severity::Medium));
    assert_eq!(
        fired(&set, &attach("AmazonSSMManagedInstanceCore")),
        one("aws-iam-role-policy-attached", Severity::High)
    );
    assert_eq!(fired(&set, &attach("AdministratorAccess")), one("aws-iam-role-policy-attached", Severity::High));
    let mut denied = attach("AdministratorAccess");
    denied["errorCode"] = json!("AccessDenied");
    assert!(fired(&set, &denied).is_empty());
    let to_user = cloudtrail("alice", "iam.amazonaws.com", "AttachUserPolicy", T, ATTACKER, json!({}));
    assert!(fired(&set, &to_user).is_empty());
}

#[test]
fn users_keys_sessions_and_logging() {
    let set = policies();
    let cases = [
        ("iam.amazonaws.com", "CreateUser", Some(("aws-iam-user-created", Severity::Medium))),
        ("iam.amazonaws.com", "CreateAccessKey", Some(("aws-iam-access-key-created", Severity::Medium))),
        ("ssm.amazonaws.com", "StartSession", Some(("aws-ssm-session-started", Severity::Medium))),
        ("cloudtrail.amazonaws.com", "StopLogging", Some(("aws-cloudtrail-logging-disabled", Severity::High))),
        ("cloudtrail.amazonaws.com", "DeleteTrail", Some(("aws-cloudtrail-logging-disabled", Severity::High))),
        ("cloudtrail.amazonaws.com", "PutEventSelectors", None),
        ("cloudtrail.amazonaws.com", "StartLogging", None),
        ("iam.amazonaws.com", "ListAccessKeys", None),
        ("ssm.amazonaws.com", "DescribeSessions", None),
    ];
    for (source, name, expected) in cases {
        let event = cloudtrail("alice", source, name, T, ATTACKER, json!({}));
        let expected: Vec<_> = expected.map(|(p, s)| (p.to_string(), s)).into_iter().collect();
        assert_eq!(fired(&set, &event), expected, "{name}");
        let mut failed = event.clone();
        failed["errorCode"] = json!("AccessDenied");
        assert!(fired(&set, &failed).is_empty(), "{name} that failed");
    }
}

#[test]
fn guardduty_and_security_hub_switched_off() {
    let set = policies();
    let guardduty = ("aws-guardduty-disabled", Severity::High);
    let hub = ("aws-security-hub-disabled", Severity::High);
    let cases = [
        ("guardduty.amazonaws.com", "DeleteDetector", json!({"detectorId": "d1"}), Some(guardduty)),
        ("guardduty.amazonaws.com", "UpdateDetector", json!({"detectorId": "d1", "enable": false}), Some(guardduty)),
        ("guardduty.amazonaws.com", "UpdateDetector", json!({"detectorId": "d1", "enable": true}), None),
        (
            "guardduty.amazonaws.com",
            "DisassociateFromAdministratorAccount",
            json!({"detectorId": "d1"}),
            Some(guardduty),
        ),
        ("guardduty.amazonaws.com", "ListFindings", json!({"detectorId": "d1"}), None),
        ("securityhub.amazonaws.com", "DisableSecurityHub", json!({}), Some(hub)),
        (
            "securityhub.amazonaws.com",
            "BatchDisableStandards",
            json!({"standardsSubscriptionArns": ["arn:x"]}),
            Some(hub),
        ),
        (
            "securityhub.amazonaws.com",
            "UpdateStandardsControl",
            json!({"standardsControlArn": "arn:c", "controlStatus": "DISABLED", "disabledReason": "noise"}),
            Some(hub),
        ),
        (
            "securityhub.amazonaws.com",
            "UpdateStandardsControl",
            json!({"standardsControlArn": "arn:c", "controlStatus": "ENABLED"}),
            None,
        ),
        ("securityhub.amazonaws.com", "GetFindings", json!({}), None),
    ];
    for (source, name, parameters, expected) in cases {
        let event = cloudtrail("alice", source, name, T, ATTACKER, json!({"requestParameters": parameters}));
        let expected: Vec<_> = expected.map(|(p, s)| (p.to_string(), s)).into_iter().collect();
        assert_eq!(fired(&set, &event), expected, "{name} {parameters}");
        let mut failed = event.clone();
        failed["errorCode"] = json!("AccessDenied");
        assert!(fired(&set, &failed).is_empty(), "{name} that failed");
    }
}

/// `UpdateDetector` as CloudTrail records it (camelCase request parameters): the detector
/// suspended, or a protection turned off, alerts; tuning or turning protections on does not.
#[test]
fn guardduty_protections_turned_off_by_update_detector() {
    let set = policies();
    let detector = "12abc34d567e8fa901bc2d34e56789f0";
    let feature = |name: &str, status: &str| json!({"name": name, "status": status});
    let turned_off = [
        json!({"detectorId": detector, "enable": false, "findingPublishingFrequency": "SIX_HOURS"}),
        json!({"detectorId": detector, "features": [feature("S3_DATA_EVENTS", "DISABLED")]}),
        // Any entry of the list: the one turned off comes after one turned on.
        json!({"detectorId": detector, "features": [
            {"name": "RUNTIME_MONITORING", "status": "ENABLED",
             "additionalConfiguration": [{"name": "EKS_ADDON_MANAGEMENT", "status": "ENABLED"}]},
            feature("EBS_MALWARE_PROTECTION", "DISABLED")]}),
        json!({"detectorId": detector, "dataSources": {"s3Logs": {"enable": false}}}),
        json!({"detectorId": detector, "dataSources": {"kubernetes": {"auditLogs": {"enable": false}}}}),
        json!({"detectorId": detector,
               "dataSources": {"malwareProtection": {"scanEc2InstanceWithFindings": {"ebsVolumes": false}}}}),
    ];
    let left_on = [
        json!({"detectorId": detector, "findingPublishingFrequency": "FIFTEEN_MINUTES"}),
        json!({"detectorId": detector, "enable": true}),
        json!({"detectorId": detector, "features": [feature("S3_DATA_EVENTS", "ENABLED"), feature("EKS_AUDIT_LOGS", "ENABLED")]}),
        // The agent managed by hand: runtime monitoring itself stays on.
        json!({"detectorId": detector, "features": [{"name": "RUNTIME_MONITORING", "status": "ENABLED",
            "additionalConfiguration": [{"name": "EKS_ADDON_MANAGEMENT", "status": "DISABLED"}]}]}),
        json!({"detectorId": detector, "dataSources": {"s3Logs": {"enable": true}, "kubernetes": {"auditLogs": {"enable": true}},
               "malwareProtection": {"scanEc2InstanceWithFindings": {"ebsVolumes": true}}}}),
    ];
    let update = |parameters: &Value| {
        let extra = json!({"requestParameters": parameters, "responseElements": null, "readOnly": false});
        cloudtrail("alice", "guardduty.amazonaws.com", "UpdateDetector", T, ATTACKER, extra)
    };
    for parameters in &turned_off {
        let event = update(parameters);
        assert_eq!(fired(&set, &event), one("aws-guardduty-disabled", Severity::High), "{parameters}");
        let lazy = set.sigma.matching_rules(&to_event(&event, None));
        assert_eq!(lazy, set.sigma.matching_rules_plain(&event), "{parameters}");
        let mut refused = event.clone();
        refused["errorCode"] = json!("AccessDenied");
        assert!(fired(&set, &refused).is_empty(), "{parameters} refused");
    }
    for parameters in &left_on {
        assert!(fired(&set, &update(parameters)).is_empty(), "{parameters}");
    }
}

fn ingress(cidr: &str, protocol: &str, from: i64, to: i64) -> Value {
    let range = if cidr.contains(':') {
        json!({"ipv6Ranges": {"items": [{"cidrIpv6": cidr}]}})
    } else {
        json!({"ipRanges": {"items": [{"cidrIp": cidr}]}})
    };
    let mut permission = json!({"ipProtocol": protocol, "fromPort": from, "toPort": to});
    permission.as_object_mut().unwrap().extend(range.as_object().unwrap().clone());
    cloudtrail(
        "alice",
        "ec2.amazonaws.com",
        "AuthorizeSecurityGroupIngress",
        T,
        ATTACKER,
        json!({"requestParameters": {"groupId": "sg-0a1b2c3d4e5f67890", "ipPermissions": {"items": [permission]}}}),
    )
}

#[test]
fn security_group_ingress() {
    let set = policies();
    let policy = "aws-security-group-ingress-opened";
    assert_eq!(fired(&set, &ingress("0.0.0.0/0", "tcp", 443, 443)), one(policy, Severity::Medium));
    assert_eq!(fired(&set, &ingress("0.0.0.0/0", "tcp", 22, 22)), one(policy, Severity::High));
    assert_eq!(fired(&set, &ingress("::/0", "tcp", 3389, 3389)), one(policy, Severity::High));
    assert_eq!(fired(&set, &ingress("0.0.0.0/0", "-1", -1, -1)), one(policy, Severity::High));
    assert_eq!(fired(&set, &ingress("176.36.10.20/32", "tcp", 22, 22)), one(policy, Severity::High));
    assert_eq!(fired(&set, &ingress("176.36.10.20/32", "tcp", 8443, 8443)), one(policy, Severity::Medium));
    // Stratus Red Team's anonymised /0 is still the whole internet.
    assert_eq!(fired(&set, &ingress("208.236.235.254/0", "tcp", 22, 22)), one(policy, Severity::High));
    assert!(fired(&set, &ingress("10.0.0.0/16", "tcp", 22, 22)).is_empty(), "private ranges are not exposure");
    // A range is judged whole, not by its first (unspecified, reserved) address.
    assert_eq!(fired(&set, &ingress("0.0.0.0/1", "tcp", 22, 22)), one(policy, Severity::High));
    assert_eq!(fired(&set, &ingress("192.0.0.0/2", "tcp", 443, 443)), one(policy, Severity::Medium));
    assert!(fired(&set, &ingress("fd00::/8", "tcp", 22, 22)).is_empty());
    let mut failed = ingress("0.0.0.0/0", "tcp", 22, 22);
    failed["errorCode"] = json!("Client.InvalidPermission.Duplicate");
    assert!(fired(&set, &failed).is_empty());

    let modify = cloudtrail(
        "alice",
        "ec2.amazonaws.com",
        "ModifySecurityGroupRules",
        T,
        ATTACKER,
        json!({"requestParameters": {"ModifySecurityGroupRulesRequest": {"GroupId": "sg-0a1b2c3d4e5f67890",
            "SecurityGroupRule": {"SecurityGroupRuleId": "sgr-0123456789abcdef0",
                "SecurityGroupRule": {"IpProtocol": "tcp", "FromPort": 3389, "ToPort": 3389, "CidrIpv4": "0.0.0.0/0"}}}}}),
    );
    assert_eq!(fired(&set, &modify), one(policy, Severity::High));

    // Trusted ranges and home countries come from the settings.
    let settings: DetectorSettings =
        yaml_serde::from_str("security_group_ingress: {trusted_cidrs: ['176.36.0.0/14'], home_countries: [US]}")
            .unwrap();
    let detectors = detectors_with(settings);
    let trusted = to_event(&ingress("176.36.10.20/32", "tcp", 22, 22), Some("UA"));
    assert!(detectors.evaluate_event(&trusted, None).is_empty());
    let foreign = to_event(
        &cloudtrail(
            "alice",
            "ec2.amazonaws.com",
            "AuthorizeSecurityGroupIngress",
            T,
            "81.2.69.142",
            json!({"requestParameters": {"groupId": "sg-1", "ipPermissions": {"items": [{"ipProtocol": "tcp", "fromPort": 8443, "toPort": 8443,
                "ipRanges": {"items": [{"cidrIp": "81.2.69.142/32"}]}}]}}}),
        ),
        Some("GB"),
    );
    let found = detectors.evaluate_event(&foreign, None);
    assert_eq!(found.len(), 1);
    assert_eq!(found[0].severity, Severity::High, "a source outside the home countries is foreign");
}

fn at(base: &str, offset: Duration) -> String {
    (base.parse::<DateTime<Utc>>().unwrap() + offset).to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

fn run_logins(detectors: &Detectors, events: &[(Value, &str)]) -> Vec<Finding> {
    let mut events: Vec<PolicyEvent> = events.iter().map(|(raw, country)| to_event(raw, Some(country))).collect();
    events.sort_by_key(|e| e.event_time);
    logins::evaluate(detectors, &events, DateTime::UNIX_EPOCH, None)
}

fn ids(findings: &[Finding]) -> Vec<&str> {
    let mut ids: Vec<&str> = findings.iter().map(|f| f.policy_id.as_str()).collect();
    ids.sort();
    ids.dedup();
    ids
}

#[test]
fn new_country_login_needs_a_baseline_and_respects_allowlists() {
    let set = policies();
    let base = "2026-11-01T15:00:00Z";
    let home: Vec<(Value, &str)> =
        (0..3).map(|day| (login("alice", &at(base, Duration::days(day)), "73.202.18.40", true, "Yes"), "US")).collect();
    let mut events = home.clone();
    events.push((login("alice", &at(base, Duration::days(10)), ATTACKER, true, "No"), "UA"));
    let found = run_logins(&set.detectors, &events);
    assert_eq!(ids(&found), ["aws-account-hijacking-attempt"]);
    let hijack = &found[0];
    assert_eq!(hijack.country.as_deref(), Some("UA"));
    assert_eq!(hijack.details["baseline_countries"], json!(["US"]));
    assert_eq!(hijack.principal.as_deref(), Some("arn:aws:iam::111122223333:user/alice"));

    // Two earlier logins are not a baseline yet.
    assert!(run_logins(&set.detectors, &events[1..]).is_empty());
    // A failed login from the new country is not a hijack.
    let mut failed = home.clone();
    failed.push((login("alice", &at(base, Duration::days(10)), ATTACKER, false, "No"), "UA"));
    assert!(run_logins(&set.detectors, &failed).is_empty());
    // The country was used within the baseline: no alert; outside it (40 days before): alert.
    let mut seen = events.clone();
    seen.insert(0, (login("alice", &at(base, Duration::days(-5)), ATTACKER, true, "No"), "UA"));
    assert!(run_logins(&set.detectors, &seen).is_empty());
    let mut long_ago = events.clone();
    long_ago.insert(0, (login("alice", &at(base, Duration::days(-40)), ATTACKER, true, "No"), "UA"));
    assert_eq!(ids(&run_logins(&set.detectors, &long_ago)), ["aws-account-hijacking-attempt"]);

    let settings: DetectorSettings = yaml_serde::from_str("account_hijacking: {allow_countries: [UA]}").unwrap();
    let allowing = detectors_with(settings);
    assert!(ids(&run_logins(&allowing, &events)).iter().all(|id| *id != "aws-account-hijacking-attempt"));
    let settings: DetectorSettings =
        yaml_serde::from_str("account_hijacking: {allow_cidrs: ['176.36.0.0/14']}").unwrap();
    let allowing = detectors_with(settings);
    assert!(ids(&run_logins(&allowing, &events)).iter().all(|id| *id != "aws-account-hijacking-attempt"));
}

#[test]
fn impossible_travel_uses_speed() {
    let set = policies();
    let settings: DetectorSettings = yaml_serde::from_str("account_hijacking: {enabled: false}").unwrap();
    let travel_only = detectors_with(settings);
    let us = (login("alice", "2026-11-11T22:48:00Z", "73.202.18.40", true, "No"), "US");
    let fast = (login("alice", "2026-11-12T03:17:42Z", ATTACKER, true, "No"), "UA");
    let found = run_logins(&travel_only, &[us.clone(), fast]);
    assert_eq!(ids(&found), ["aws-impossible-travel"]);
    assert!(found[0].details["speed_kmh"].as_f64().unwrap() > 900.0);
    assert_eq!(found[0].details["precision"], "country");
    // A day later the same trip is possible.
    let slow = (login("alice", "2026-11-12T23:00:00Z", ATTACKER, true, "No"), "UA");
    assert!(run_logins(&travel_only, &[us.clone(), slow]).is_empty());
    // Same country: no travel at all.
    let near = (login("alice", "2026-11-11T23:00:00Z", "24.5.122.8", true, "No"), "US");
    assert!(run_logins(&travel_only, &[us, near]).is_empty());
    assert!(set.detectors.settings.impossible_travel.max_speed_kmh == 900.0);
}

#[test]
fn login_failure_bursts() {
    let set = policies();
    let failures = |n: i64, spacing_s: i64, user: fn(i64) -> String| -> Vec<(Value, &'static str)> {
        (0..n)
            .map(|i| {
                (
                    login(
                        &user(i),
                        &at("2026-11-12T03:05:00Z", Duration::seconds(i * spacing_s)),
                        ATTACKER,
                        false,
                        "No",
                    ),
                    "UA",
                )
            })
            .collect()
    };
    let alice = |_| "alice".to_string();
    let burst = run_logins(&set.detectors, &failures(11, 40, alice));
    assert_eq!(ids(&burst), ["aws-excessive-login-failures"]);
    assert_eq!(burst.len(), 1, "one finding for the alert, not one per failure");
    let (folded, _) = Burst::of(&burst[0]).expect("the finding carries its burst");
    assert_eq!(folded.count, 11, "every failure in the burst is counted");
    assert_eq!(folded.sample.len(), 11, "and, this few, kept as evidence");
    assert_eq!((folded.first, folded.last), (burst[0].time, burst[0].time + Duration::seconds(400)));
    assert_eq!(burst[0].details["failures"], 11);
    assert_eq!(burst[0].details["sources"], json!([{"address": ATTACKER, "failures": 11}]));
    assert!(
        burst[0].title.starts_with(&format!("11 failed console logins for alice from {ATTACKER}")),
        "{}",
        burst[0].title
    );
    assert!(run_logins(&set.detectors, &failures(9, 40, alice)).is_empty(), "below the threshold");
    assert!(run_logins(&set.detectors, &failures(10, 180, alice)).is_empty(), "spread over 30 minutes");
    // Password spraying: one source, many principals, none above the threshold alone.
    let spray = run_logins(&set.detectors, &failures(10, 30, |i| format!("user{}", i % 5)));
    assert_eq!(ids(&spray), ["aws-password-spray"]);
    assert_eq!(spray.len(), 1, "{spray:?}");
    assert_eq!((spray[0].subject.clone(), spray[0].severity), (format!("source:{ATTACKER}"), Severity::High));
    assert_eq!(spray[0].details["principal_count"], 5);
    assert!(
        spray[0].title.contains("against 5 principals (at least 5 principals within 30 minutes)"),
        "{}",
        spray[0].title
    );
    // Four principals from one address is a user's typos across accounts, not a spray.
    assert!(run_logins(&set.detectors, &failures(8, 30, |i| format!("user{}", i % 4))).is_empty());
    // Guessed names that are no IAM user: CloudTrail hides each as the same name; still a spray.
    let hidden = |i: i64| -> Value {
        let mut event = login("x", &at("2026-11-12T03:05:00Z", Duration::seconds(i * 30)), ATTACKER, false, "No");
        event["userIdentity"] = json!({"type": "IAMUser", "principalId": "", "accountId": ACCOUNT, "accessKeyId": "",
                                       "userName": "HIDDEN_DUE_TO_SECURITY_REASONS"});
        event["eventID"] = json!(format!("hidden-{i}"));
        event
    };
    let guesses: Vec<(Value, &str)> = (0..12).map(|i| (hidden(i), "UA")).collect();
    let found = run_logins(&set.detectors, &guesses);
    assert_eq!(ids(&found), ["aws-password-spray"], "not one principal failing twelve times: {found:?}");
    // Five principals, but spread over more than the window.
    assert!(run_logins(&set.detectors, &failures(5, 600, |i| format!("user{i}"))).is_empty());
}

#[test]
fn a_long_spray_is_one_finding_per_hour_with_a_bounded_sample() {
    let set = policies();
    // Four hours of failures every 5 seconds: 2,880 of them.
    let events: Vec<(Value, &str)> = (0..2_880)
        .map(|i| (login("alice", &at("2026-11-12T00:00:00Z", Duration::seconds(i * 5)), ATTACKER, false, "No"), "UA"))
        .collect();
    let found = run_logins(&set.detectors, &events);
    assert_eq!(found.len(), 4, "one per alert hour");
    for finding in &found {
        let (burst, _) = Burst::of(finding).unwrap();
        assert_eq!(burst.count, 720);
        assert_eq!(burst.sample.len(), 2 * BURST_SAMPLE);
        assert!(burst.sample.windows(2).all(|pair| pair[0].1 <= pair[1].1), "in time order");
        assert_eq!(burst.sample[0].1, burst.first);
        assert_eq!(burst.sample[2 * BURST_SAMPLE - 1].1, burst.last);
    }
    let alerts: BTreeSet<String> = found.iter().map(Finding::alert_id).collect();
    assert_eq!(alerts.len(), 4);
}

#[test]
fn failures_that_reach_the_threshold_late_count_from_the_first() {
    let set = policies();
    // Nine slow failures, then a tenth within ten minutes of the first: all ten are the burst;
    // the ones before the new data (emit_from) count too, those far before do not.
    let base = "2026-11-12T03:00:00Z";
    let mut events: Vec<PolicyEvent> = (0..10)
        .map(|i| to_event(&login("alice", &at(base, Duration::seconds(i * 60)), ATTACKER, false, "No"), Some("UA")))
        .collect();
    events.insert(0, to_event(&login("alice", &at(base, Duration::minutes(-30)), ATTACKER, false, "No"), Some("UA")));
    let emit_from = events[10].event_time;
    let found = logins::evaluate(&set.detectors, &events, emit_from, None);
    assert_eq!(found.len(), 1);
    let (burst, _) = Burst::of(&found[0]).unwrap();
    assert_eq!(burst.count, 10);
    assert_eq!(burst.first, events[1].event_time);
    // Nothing new near it: nothing to report.
    let later = events[10].event_time + Duration::hours(3);
    assert!(logins::evaluate(&set.detectors, &events, later, None).is_empty());
}

#[test]
fn exfiltration_volume_per_hour() {
    let set = policies();
    let volume = |destination: &str, bytes: i64| HourlyVolume {
        account_id: ACCOUNT.into(),
        destination: destination.parse().unwrap(),
        hour: "2026-11-12T04:00:00Z".parse().unwrap(),
        bytes,
        records: 8,
        sources: vec!["10.0.1.25".into()],
        interfaces: vec!["eni-0a1b2c3d4e5f67890".into()],
        destination_country: Some("UA".into()),
    };
    let found = exfiltration::evaluate(
        &set.detectors,
        &[volume(ATTACKER, 1_600_000_000), volume(ATTACKER, 10), volume("10.0.2.10", 5_000_000_000)],
    );
    assert_eq!(found.len(), 1);
    assert_eq!(found[0].country.as_deref(), Some("UA"));
    assert_eq!(found[0].severity, Severity::High);
    let huge = exfiltration::evaluate(&set.detectors, &[volume(ATTACKER, 20_000_000_000)]);
    assert_eq!(huge[0].severity, Severity::Critical);
}

#[test]
fn every_shipped_policy_has_mitre_and_a_stable_id() {
    let set = policies();
    let enabled: Vec<_> = set.list().into_iter().filter(|p| p.enabled).collect();
    let ids: BTreeSet<&str> = enabled.iter().map(|p| p.id.as_str()).collect();
    for id in [
        "aws-account-hijacking-attempt",
        "aws-impossible-travel",
        "aws-excessive-login-failures",
        "aws-console-login-without-mfa",
        "aws-root-account-usage",
        "aws-security-group-ingress-opened",
        "aws-iam-instance-profile-associated",
        "aws-iam-role-policy-attached",
        "aws-iam-user-created",
        "aws-iam-access-key-created",
        "aws-ssm-session-started",
        "aws-cloudtrail-logging-disabled",
        "aws-flow-exfiltration-volume",
    ] {
        assert!(ids.contains(id), "{id} is shipped and enabled");
    }
    for policy in &enabled {
        assert!(!policy.mitre.is_empty() && policy.mitre.iter().all(|m| !m.tactic.is_empty()), "{}", policy.id);
    }
    // The SigmaHQ pack is loaded but off.
    assert_eq!(set.list().iter().filter(|p| p.id.starts_with("sigma-") && !p.enabled).count(), 57);
}

#[test]
fn api_activity_from_a_new_country_is_optional() {
    let set = policies();
    let call =
        to_event(&cloudtrail("alice", "ec2.amazonaws.com", "DescribeInstances", T, ATTACKER, json!({})), Some("UA"));
    let usual: BTreeSet<String> = ["US".to_string()].into();
    assert!(logins::api_activity_from_new_country(&set.detectors, &call, &usual, 50).is_none(), "off by default");

    let settings: DetectorSettings = yaml_serde::from_str("account_hijacking: {include_api_activity: true}").unwrap();
    let on = detectors_with(settings);
    let finding = logins::api_activity_from_new_country(&on, &call, &usual, 50).expect("a call from a new country");
    assert_eq!(finding.policy_id, "aws-account-hijacking-attempt");
    assert!(finding.title.contains("called DescribeInstances from UA"), "{}", finding.title);
    let with_ua: BTreeSet<String> = ["US".to_string(), "UA".to_string()].into();
    assert!(logins::api_activity_from_new_country(&on, &call, &with_ua, 50).is_none(), "a known country");
    assert!(logins::api_activity_from_new_country(&on, &call, &usual, 1).is_none(), "no baseline yet");
}

#[test]
fn the_lazy_view_matches_like_plain_json_on_the_sample_incident() {
    use crate::ingest::json_stream::{self, JsonSink};
    struct Compare<'p> {
        set: &'p PolicySet,
        events: usize,
    }
    impl JsonSink for Compare<'_> {
        fn event(&mut self, raw: &str) {
            let value: Value = serde_json::from_str(raw).unwrap();
            let event = PolicyEvent::from_parsed(CloudTrailEvent::parse(raw, None).unwrap(), None);
            assert_eq!(self.set.sigma.matching_rules(&event), self.set.sigma.matching_rules_plain(&value), "{raw}");
            self.events += 1;
        }
        fn log_message(&mut self, _: &str, _: Option<i64>, _: Option<&str>) {}
        fn skipped(&mut self, _: &'static str) {}
        fn unrecognised(&mut self, _: String) {}
    }
    let set = PolicySet::from_files_with(&PolicyFiles::builtin(), true);
    let mut compare = Compare { set: &set, events: 0 };
    let trails = Path::new(env!("CARGO_MANIFEST_DIR")).join("samples/incident/cloudtrail");
    for entry in walkdir::WalkDir::new(trails).into_iter().filter_map(Result::ok).filter(|e| e.file_type().is_file()) {
        let reader = flate2::read::GzDecoder::new(std::fs::File::open(entry.path()).unwrap());
        json_stream::walk(reader, &mut compare).unwrap();
    }
    assert!(compare.events > 2000, "{}", compare.events);
}

#[test]
fn event_selectors_alert_only_when_they_reduce_logging() {
    let set = policies();
    let selectors = |selector: Value| {
        cloudtrail(
            "alice",
            "cloudtrail.amazonaws.com",
            "PutEventSelectors",
            T,
            ATTACKER,
            json!({"requestParameters": {"trailName": "management-trail", "eventSelectors": [selector]}}),
        )
    };
    let reduced = [
        json!({"includeManagementEvents": false, "readWriteType": "All"}),
        json!({"includeManagementEvents": true, "readWriteType": "ReadOnly"}),
        json!({"includeManagementEvents": true, "readWriteType": "All", "excludeManagementEventSources": ["kms.amazonaws.com"]}),
    ];
    for selector in reduced {
        assert_eq!(
            fired(&set, &selectors(selector.clone())),
            one("aws-cloudtrail-logging-disabled", Severity::High),
            "{selector}"
        );
    }
    let full = json!({"includeManagementEvents": true, "readWriteType": "All", "excludeManagementEventSources": [],
                      "dataResources": [{"type": "AWS::S3::Object", "values": ["arn:aws:s3"]}]});
    assert!(fired(&set, &selectors(full)).is_empty(), "adding data events reduces nothing");
}

#[test]
fn the_protection_tag_set_or_removed_in_any_request_shape() {
    let set = policies();
    let policy = one("aws-protected-tag-changed", Severity::Medium);
    let tag = json!([{"key": "skywarden:protected", "value": "true"}]);
    let cases = [
        ("iam.amazonaws.com", "TagUser", json!({"userName": "svc-backup", "tags": tag})),
        ("iam.amazonaws.com", "UntagRole", json!({"roleName": "ops", "tagKeys": ["skywarden:protected"]})),
        (
            "ec2.amazonaws.com",
            "CreateTags",
            json!({"resourcesSet": {"items": [{"resourceId": "sg-0a1b2c3d4e5f67890"}]},
                   "tagSet": {"items": [{"key": "skywarden:protected", "value": "yes"}]}}),
        ),
        (
            "cloudtrail.amazonaws.com",
            "AddTags",
            json!({"resourceId": "arn:aws:cloudtrail:us-east-1:111122223333:trail/main", "tagsList": tag}),
        ),
    ];
    for (source, name, parameters) in cases {
        let event = cloudtrail("alice", source, name, T, ATTACKER, json!({"requestParameters": parameters}));
        assert_eq!(fired(&set, &event), policy, "{name}");
        let mut failed = event.clone();
        failed["errorCode"] = json!("AccessDenied");
        assert!(fired(&set, &failed).is_empty(), "{name} that failed");
    }
    let tagging_api = json!({"ResourceARNList": ["arn:aws:ec2:us-east-1:111122223333:security-group/sg-1"],
                             "Tags": {"skywarden:protected": "true"}});
    let event = cloudtrail(
        "alice",
        "tagging.amazonaws.com",
        "TagResources",
        T,
        ATTACKER,
        json!({"requestParameters": tagging_api}),
    );
    assert_eq!(fired(&set, &event), policy, "the Resource Groups Tagging API");
    let template = json!({"launchTemplateId": "lt-1", "tagSpecificationSet": {"items": [{"tags": [{"key": "skywarden:protected"}]}]}});
    let mut scaled =
        cloudtrail("alice", "ec2.amazonaws.com", "RunInstances", T, ATTACKER, json!({"requestParameters": template}));
    assert_eq!(fired(&set, &scaled), policy, "an instance started protected by a person");
    scaled["userIdentity"]["arn"] =
        json!("arn:aws:sts::111122223333:assumed-role/AWSServiceRoleForAutoScaling/AutoScaling");
    assert!(fired(&set, &scaled).is_empty(), "Auto Scaling starting it from the protected template");
    let other_tag = json!({"userName": "svc-backup", "tags": [{"key": "team", "value": "skywarden-ops"}]});
    let event =
        cloudtrail("alice", "iam.amazonaws.com", "TagUser", T, ATTACKER, json!({"requestParameters": other_tag}));
    assert!(fired(&set, &event).is_empty(), "another tag is not protection");
}
