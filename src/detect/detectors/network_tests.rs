//! The network detectors on realistic CloudTrail events (the runner's database checks are
//! tested in tests/it/network_context.rs).

use super::*;
use crate::detect::PolicySet;
use crate::geo::GeoInfo;
use crate::ingest::cloudtrail::CloudTrailEvent;

/// A call made with an instance profile's credentials, as CloudTrail records it.
fn instance_call(source: &str) -> String {
    format!(
        r#"{{"eventVersion":"1.08","userIdentity":{{"type":"AssumedRole","principalId":"AROAEXAMPLEROLEID:i-0a1b2c3d4e5f60718",
        "arn":"arn:aws:sts::111122223333:assumed-role/web-app-role/i-0a1b2c3d4e5f60718","accountId":"111122223333",
        "accessKeyId":"ASIAEXAMPLEKEY000001","sessionContext":{{"sessionIssuer":{{"type":"Role","principalId":"AROAEXAMPLEROLEID",
        "arn":"arn:aws:iam::111122223333:role/web-app-role","accountId":"111122223333","userName":"web-app-role"}},
        "attributes":{{"creationDate":"2026-11-12T04:00:00Z","mfaAuthenticated":"false"}},"ec2RoleDelivery":"2.0"}}}},
        "eventTime":"2026-11-12T05:10:00Z","eventSource":"s3.amazonaws.com","eventName":"ListBuckets","awsRegion":"us-east-1",
        "sourceIPAddress":"{source}","userAgent":"aws-cli/2.15.0","requestParameters":{{"Host":"s3.amazonaws.com"}},
        "responseElements":null,"eventID":"3f1e-{source}","readOnly":true,"eventType":"AwsApiCall","recipientAccountId":"111122223333"}}"#
    )
}

fn console_login(user: &str, source: &str) -> String {
    format!(
        r#"{{"eventVersion":"1.08","userIdentity":{{"type":"IAMUser","principalId":"AIDAEXAMPLE{user}","arn":"arn:aws:iam::111122223333:user/{user}",
        "accountId":"111122223333","userName":"{user}"}},"eventTime":"2026-11-12T05:00:00Z","eventSource":"signin.amazonaws.com",
        "eventName":"ConsoleLogin","awsRegion":"us-east-1","sourceIPAddress":"{source}","userAgent":"Mozilla/5.0",
        "requestParameters":null,"responseElements":{{"ConsoleLogin":"Success"}},"additionalEventData":{{"MFAUsed":"Yes"}},
        "eventID":"login-{user}","eventType":"AwsConsoleSignIn","recipientAccountId":"111122223333"}}"#
    )
}

fn event(raw: &str, geo: GeoInfo) -> PolicyEvent {
    PolicyEvent::from_parsed(CloudTrailEvent::parse(raw, None).unwrap(), Some(&geo))
}

fn asn(asn: u32, org: &str) -> GeoInfo {
    GeoInfo { asn: Some(asn), as_org: Some(org.into()), ..Default::default() }
}

#[test]
fn instance_sessions_are_recognised_by_their_session_name() {
    assert_eq!(
        instance_session("arn:aws:sts::111122223333:assumed-role/web-app-role/i-0a1b2c3d4e5f60718"),
        Some(("web-app-role", "i-0a1b2c3d4e5f60718"))
    );
    assert_eq!(instance_session("arn:aws:sts::111122223333:assumed-role/admin/alice"), None);
    assert_eq!(instance_session("arn:aws:sts::111122223333:assumed-role/admin/i-not-hex"), None);
    assert_eq!(instance_session("arn:aws:iam::111122223333:user/i-0a1b2c3d"), None);
}

#[test]
fn instance_credentials_from_a_foreign_network_are_a_candidate_and_the_finding_says_what() {
    let set = PolicySet::builtin();
    let outside = event(&instance_call("185.220.101.4"), asn(60729, "Stiftung Erneuerbare Freiheit"));
    assert!(instance_credentials_candidate(&set.detectors, &outside));
    let finding = instance_credentials_finding(&set.detectors, &outside).unwrap();
    assert_eq!(finding.policy_id, INSTANCE_CREDENTIALS);
    assert_eq!(finding.severity, crate::model::Severity::High);
    assert_eq!(finding.mitre[0].technique, "T1552.005");
    assert!(finding.title.contains("i-0a1b2c3d4e5f60718") && finding.title.contains("AS60729"), "{}", finding.title);
    assert_eq!(finding.details["instance_id"], "i-0a1b2c3d4e5f60718");
    assert_eq!(finding.details["network"]["asn"], 60729);
}

#[test]
fn instance_credentials_from_aws_private_or_service_addresses_are_not() {
    let set = PolicySet::builtin();
    let d = &set.detectors;
    // From EC2 itself (AMAZON-02), from AWS's ranges file, from inside the VPC, from a service.
    assert!(!instance_credentials_candidate(d, &event(&instance_call("54.239.28.85"), asn(16509, "Amazon.com, Inc."))));
    let in_ranges = GeoInfo { is_aws: Some(true), ..asn(64512, "not in the ASN list") };
    assert!(!instance_credentials_candidate(d, &event(&instance_call("3.5.141.9"), in_ranges)));
    assert!(!instance_credentials_candidate(d, &event(&instance_call("10.0.1.25"), GeoInfo::default())));
    assert!(!instance_credentials_candidate(d, &event(&instance_call("ec2.amazonaws.com"), GeoInfo::default())));
    // Nothing known of the address: no alert on a guess.
    assert!(!instance_credentials_candidate(d, &event(&instance_call("45.137.21.9"), GeoInfo::default())));
    // A person's role session, not an instance's.
    let person = instance_call("185.220.101.4").replace("/i-0a1b2c3d4e5f60718\"", "/alice\"");
    assert!(!instance_credentials_candidate(d, &event(&person, asn(60729, "x"))));
}

#[test]
fn the_ranges_file_alone_can_tell_an_address_is_not_aws() {
    let set = PolicySet::builtin();
    let outside = GeoInfo { is_aws: Some(false), ..Default::default() };
    assert!(instance_credentials_candidate(&set.detectors, &event(&instance_call("45.137.21.9"), outside)));
}

#[test]
fn allowed_ranges_and_asns_are_never_candidates() {
    let settings = "instance_credentials:\n  allow_cidrs: [45.137.21.0/24]\n  allow_asns: [64500]\n\
                    anonymizing_network:\n  allow_cidrs: [146.70.1.0/24]\n  allow_principals: [bob]\n";
    let set = with_settings(settings);
    let d = &set.detectors;
    assert!(!instance_credentials_candidate(d, &event(&instance_call("45.137.21.9"), asn(64501, "x"))));
    assert!(!instance_credentials_candidate(d, &event(&instance_call("91.219.236.7"), asn(64500, "x"))));
    assert!(instance_credentials_candidate(d, &event(&instance_call("91.219.236.7"), asn(64501, "x"))));
    let vpn = GeoInfo { is_vpn: Some(true), ..asn(9009, "M247 Europe SRL") };
    assert!(!anonymizing_candidate(d, &event(&console_login("alice", "146.70.1.9"), vpn.clone())));
    assert!(!anonymizing_candidate(d, &event(&console_login("bob", "91.219.236.9"), vpn.clone())));
    assert!(anonymizing_candidate(d, &event(&console_login("alice", "91.219.236.9"), vpn)));
}

fn with_settings(yaml: &str) -> PolicySet {
    use crate::policy_files::{Origin, PolicyFile, PolicyFiles};
    let mut top = PolicyFiles::default();
    top.insert(PolicyFile::new("detectors.yaml", yaml.to_string(), Origin::Builtin));
    let set = PolicySet::from_files(&PolicyFiles::builtin().overlay(top));
    assert!(set.problems.is_empty(), "{:?}", set.problems);
    set
}

#[test]
fn logins_from_tor_vpn_or_hosting_are_candidates_and_tor_is_high() {
    let set = PolicySet::builtin();
    let d = &set.detectors;
    let tor = GeoInfo { is_tor: Some(true), is_vpn: Some(false), is_hosting: Some(false), ..asn(60729, "Tor relay") };
    let login = event(&console_login("alice", "185.220.101.4"), tor);
    assert!(anonymizing_candidate(d, &login));
    let finding = anonymizing_finding(d, &login);
    assert_eq!((finding.policy_id.as_str(), finding.severity), (ANONYMIZING_NETWORK, crate::model::Severity::High));
    assert!(finding.title.starts_with("Console login by alice") && finding.title.contains("Tor"), "{}", finding.title);
    assert_eq!(finding.details["kinds"], serde_json::json!(["Tor"]));
    let hosting = GeoInfo { is_hosting: Some(true), ..asn(14061, "DigitalOcean, LLC") };
    let call = event(&console_login("alice", "159.89.1.2"), hosting);
    assert!(anonymizing_candidate(d, &call));
    assert_eq!(anonymizing_finding(d, &call).severity, crate::model::Severity::Medium);
}

#[test]
fn ordinary_networks_and_aws_itself_are_not_anonymising() {
    let set = PolicySet::builtin();
    let d = &set.detectors;
    let home = GeoInfo {
        is_tor: Some(false),
        is_vpn: Some(false),
        is_hosting: Some(false),
        ..asn(3320, "Deutsche Telekom AG")
    };
    assert!(!anonymizing_candidate(d, &event(&console_login("alice", "84.128.1.2"), home)));
    // A hosting list that names AWS's ASN: an instance calling is not anonymising.
    let ec2 = GeoInfo { is_hosting: Some(true), ..asn(16509, "Amazon.com, Inc.") };
    assert!(!anonymizing_candidate(d, &event(&instance_call("54.239.28.85"), ec2)));
    let no_flags = asn(60729, "x");
    assert!(!anonymizing_candidate(d, &event(&console_login("alice", "185.220.101.4"), no_flags)));
    let off = with_settings("anonymizing_network:\n  include_hosting: false\n");
    let hosting = GeoInfo { is_hosting: Some(true), ..asn(14061, "DigitalOcean, LLC") };
    assert!(!anonymizing_candidate(&off.detectors, &event(&console_login("alice", "159.89.1.2"), hosting)));
}

#[test]
fn role_sessions_share_their_role_baseline() {
    let call = event(&instance_call("185.220.101.4"), GeoInfo::default());
    assert_eq!(
        baseline_pattern(&call).unwrap(),
        "arn:aws:sts::111122223333:assumed-role/web-app-role/%".replace('_', "\\_")
    );
    let login = event(&console_login("svc_deploy", "185.220.101.4"), GeoInfo::default());
    assert_eq!(baseline_pattern(&login).unwrap(), "arn:aws:iam::111122223333:user/svc\\_deploy");
}
