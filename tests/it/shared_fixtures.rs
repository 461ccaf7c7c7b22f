//! The importer over the real public datasets in `../shared/fixtures` (development data, not
//! shipped). Each test runs where that folder exists and says so on stderr when it does not.
//! Expected counts come from the datasets' documentation (SOURCES.md) and from counting the
//! records with a plain JSON reader, never from the importer itself.

use std::io::Read;
use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::support::{TestDb, copy_dir, shared_fixture};

fn require(path: &str) -> Option<PathBuf> {
    let found = shared_fixture(path);
    if found.is_none() {
        eprintln!("NOTE: ../shared/fixtures/{path} is not present; this dataset test checks nothing here");
    }
    found
}

fn read_text(path: &Path) -> String {
    let bytes = std::fs::read(path).unwrap();
    if bytes.starts_with(&[0x1f, 0x8b]) {
        let mut text = String::new();
        flate2::read::MultiGzDecoder::new(&bytes[..]).read_to_string(&mut text).unwrap();
        text
    } else {
        String::from_utf8(bytes).unwrap()
    }
}

/// CloudTrail events in a well-formed file, counted with serde_json alone.
fn events_in(path: &Path) -> Vec<Value> {
    let text = read_text(path);
    match serde_json::from_str::<Value>(&text) {
        Ok(Value::Array(items)) => items,
        Ok(Value::Object(mut object)) => match object.remove("Records") {
            Some(Value::Array(items)) => items,
            _ => vec![Value::Object(object)],
        },
        _ => text.lines().filter(|l| !l.trim().is_empty()).map(|l| serde_json::from_str(l).unwrap()).collect(),
    }
}

fn files_in(dir: &Path, extensions: &[&str]) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| extensions.iter().any(|ext| p.to_string_lossy().ends_with(ext)))
        .collect();
    files.sort();
    files
}

/// Imports each file on its own and checks that every event in it is stored or recognised as
/// already stored.
async fn assert_each_file_fully_imported(db: &TestDb, files: &[PathBuf]) -> u64 {
    let mut total = 0;
    for file in files {
        let expected = events_in(file).len() as u64;
        let (code, summary) = db.import_json(&[file]);
        assert_eq!(code, 0, "{}: {summary}", file.display());
        let stored = summary["cloudtrail_events"].as_u64().unwrap();
        let duplicates = summary["duplicates"].as_u64().unwrap();
        assert_eq!(stored + duplicates, expected, "{}: {summary}", file.display());
        total += expected;
    }
    total
}

#[tokio::test]
async fn stratus_red_team_detonation_logs() {
    let Some(dir) = require("stratus-red-team-detonation-logs") else { return };
    let db = TestDb::new().await;
    let files = files_in(&dir, &[".json"]);
    assert_eq!(files.len(), 35);
    let total = assert_each_file_fully_imported(&db, &files).await;
    assert_eq!(total, 310, "SOURCES.md: 310 events");
    let distinct: std::collections::HashSet<String> = files
        .iter()
        .flat_map(|f| events_in(f))
        .map(|e| format!("{}/{}", e["recipientAccountId"].as_str().unwrap_or(""), e["eventID"].as_str().unwrap()))
        .collect();
    assert_eq!(db.count("SELECT count(*) FROM cloudtrail_events").await, distinct.len() as i64);
    // 107 of the 310 source addresses are anonymised with leading zeros: kept as text.
    let anonymised = db
        .count("SELECT count(*) FROM cloudtrail_events WHERE source_ip IS NULL AND source_ip_text ~ '(^|\\.)0[0-9]'")
        .await;
    assert!(anonymised > 0, "leading-zero addresses are stored as text");
    let open_to_world = db
        .count("SELECT count(*) FROM cloudtrail_events WHERE event_name = 'AuthorizeSecurityGroupIngress' AND raw::text LIKE '%/0\"%'")
        .await;
    assert_eq!(open_to_world, 1);
}

#[tokio::test]
async fn trailscraper_otrf_and_elastic_cloudtrail() {
    let db = TestDb::new().await;
    if let Some(dir) = require("trailscraper-cloudtrail") {
        let files = files_in(&dir, &[".json", ".json.gz"]);
        assert_eq!(assert_each_file_fully_imported(&db, &files).await, 5, "SOURCES.md: 5 events");
        let service = db.count("SELECT count(*) FROM cloudtrail_events WHERE source_ip_text = 'config.amazonaws.com' AND source_ip IS NULL").await;
        assert!(service > 0, "a service principal source is kept as text");
    }
    if let Some(file) = require("otrf-security-datasets-aws/ec2_proxy_s3_exfiltration_2020-09-14011940.json") {
        assert_eq!(assert_each_file_fully_imported(&db, &[file]).await, 103, "SOURCES.md: 103 events, @timestamp only");
        let dated = db.count("SELECT count(*) FROM cloudtrail_events WHERE account_id = '123456789123' AND event_time >= '2020-09-14'").await;
        assert_eq!(dated, db.count("SELECT count(*) FROM cloudtrail_events WHERE account_id = '123456789123'").await);
    }
    if let Some(csv) = require("otrf-security-datasets-aws/AWS_S3_HoneyBucketLogs.csv") {
        let (code, summary) = db.import_json(&[&csv]);
        assert_eq!(code, 2);
        assert!(summary["errors"][0]["error"].as_str().unwrap().contains("not a recognised log format"), "{summary}");
    }
    if let Some(dir) = require("elastic-integrations-cloudtrail") {
        let files = files_in(&dir, &[".log"]);
        assert_eq!(assert_each_file_fully_imported(&db, &files).await, 6, "SOURCES.md: 6 events");
    }
}

#[tokio::test]
async fn cloudtrail2sightings_with_a_malformed_file() {
    let Some(dir) = require("cloudtrail2sightings-stratus") else { return };
    let db = TestDb::new().await;
    let (code, summary) = db.import_json(&[&dir]);
    assert_eq!(code, 2, "{summary}");
    let errors = summary["errors"].as_array().unwrap();
    let malformed: Vec<&Value> =
        errors.iter().filter(|e| e["file"].as_str().unwrap().ends_with("aws.execution.ec2-user-data.json")).collect();
    assert_eq!(malformed.len(), 1, "{summary}");
    assert!(malformed[0]["error"].as_str().unwrap().contains("line 112"), "{summary}");
    // The other three files hold the 12 parseable events SOURCES.md lists; the malformed file's
    // first record is complete before the break and is kept.
    assert_eq!(
        summary["cloudtrail_events"].as_u64().unwrap() + summary["duplicates"].as_u64().unwrap(),
        13,
        "{summary}"
    );
    assert_eq!(db.count("SELECT count(*) FROM cloudtrail_events WHERE event_name = 'GetSecretValue'").await, 10);
}

#[tokio::test]
async fn panther_labelled_events_and_scenario() {
    let Some(tests) = require("panther-analysis-aws/derived/analysis-tests.jsonl") else { return };
    let db = TestDb::new().await;
    let dir = tempfile::tempdir().unwrap();
    let extracted = dir.path().join("panther-cloudtrail.jsonl");
    let mut lines = Vec::new();
    for line in read_text(&tests).lines() {
        let test: Value = serde_json::from_str(line).unwrap();
        let cloudtrail = test["log_types"]
            .as_array()
            .is_some_and(|t| t.iter().any(|t| t.as_str().unwrap_or("").contains("CloudTrail")));
        if cloudtrail && test["log"].is_object() {
            lines.push(test["log"].to_string());
        }
    }
    assert_eq!(lines.len(), 461, "SOURCES.md: 461 tests carry a CloudTrail event");
    std::fs::write(&extracted, lines.join("\n")).unwrap();
    let (_, summary) = db.import_json(&[&extracted]);
    let stored = summary["cloudtrail_events"].as_u64().unwrap();
    let duplicates = summary["duplicates"].as_u64().unwrap();
    let errors = summary["errors"].as_array().unwrap();
    // Hand-made test events: some lack a time, have a placeholder time ("redacted") or use
    // lower-case field names. Each is named with its record number; nothing else is lost.
    assert!(errors.len() < 50, "{summary}");
    for error in errors {
        let text = error["error"].as_str().unwrap();
        assert!(text.starts_with("record "), "{text}");
        assert!(
            ["no eventTime", "not a CloudTrail event", "unreadable time"].iter().any(|kind| text.contains(kind)),
            "{text}"
        );
    }
    assert_eq!(stored + duplicates + errors.len() as u64, 461, "{summary}");

    if let Some(scenario) = require("panther-analysis-aws/derived/scenario-compromised-root-creds") {
        let (code, summary) = db.import_json(&[&scenario]);
        assert_eq!(code, 2, "the S3 access log is not a format Skywarden reads: {summary}");
        assert_eq!(summary["flow_records"], 6, "{summary}");
        let errors = summary["errors"].as_array().unwrap();
        assert_eq!(errors.len(), 1, "{summary}");
        assert!(errors[0]["file"].as_str().unwrap().ends_with("attacker_s3_access.log"));
        let scenario_events = ["attacker_cloudtrail.jsonl", "victim_cloudtrail.jsonl"]
            .iter()
            .map(|f| events_in(&scenario.join(f)).len() as u64)
            .sum::<u64>();
        assert_eq!(scenario_events, 16);
        assert_eq!(
            summary["cloudtrail_events"].as_u64().unwrap() + summary["duplicates"].as_u64().unwrap(),
            16,
            "{summary}"
        );
    }
}

#[tokio::test]
async fn vpc_flow_log_samples() {
    let db = TestDb::new().await;
    // (file, records stored or already stored, record errors) as SOURCES.md describes them.
    let cases: &[(&str, u64, usize)] = &[
        ("vpc-flow-logs/aws-docs/custom-nat-gateway.log", 6, 0),
        ("vpc-flow-logs/aws-docs/custom-v3-tcp-flags.log", 8, 0),
        ("vpc-flow-logs/aws-docs/custom-v3-transit-gateway.log", 4, 0),
        ("vpc-flow-logs/aws-docs/custom-v5-traffic-path.log", 2, 0),
        ("vpc-flow-logs/aws-docs/default-v2.log", 7, 0),
        ("vpc-flow-logs/otel-contrib/valid_tgw_flow_log.log", 1, 0),
        ("vpc-flow-logs/otel-contrib/valid_vpc_flow_cw.json", 2, 0),
        ("vpc-flow-logs/otel-contrib/valid_vpc_flow_log.log", 1, 0),
        ("vpc-flow-logs/otel-contrib/valid_vpc_flow_log_ecs.log", 1, 0),
        ("vpc-flow-logs/otel-contrib/valid_vpc_flow_log_multi.log", 2, 0),
        ("vpc-flow-logs/otel-contrib/vpc_flow_log_too_few_fields.log", 0, 1),
        ("vpc-flow-logs/otel-contrib/vpc_flow_log_too_many_fields.log", 0, 1),
        // A custom 4-field format with no header: it needs --flow-format (below).
        ("vpc-flow-logs/otel-contrib/valid_vpc_flow_cw_custom.json", 0, 2),
        ("vpc-flow-logs/elastic-integrations/test-v5-all-fields.log", 1, 0),
        ("vpc-flow-logs/elastic-integrations/test-with-message-field.log", 1, 0),
    ];
    let mut checked = 0;
    for (file, records, record_errors) in cases {
        let Some(path) = require(file) else { continue };
        let (code, summary) = db.import_json(&[&path]);
        let errors = summary["errors"].as_array().unwrap().len();
        assert_eq!(code, if *record_errors > 0 { 2 } else { 0 }, "{file}: {summary}");
        assert_eq!(errors, *record_errors, "{file}: {summary}");
        assert_eq!(
            summary["flow_records"].as_u64().unwrap() + summary["duplicates"].as_u64().unwrap(),
            *records,
            "{file}: {summary}"
        );
        checked += 1;
    }
    if checked == 0 {
        return;
    }
    // The double space in the tcp-flags sample is still one separator.
    assert_eq!(db.count("SELECT count(*) FROM flow_records WHERE tcp_flags IS NOT NULL AND version = 3").await, 12);
    // The NAT gateway sample has no times: it is kept, in the epoch bucket.
    assert_eq!(
        db.count("SELECT count(*) FROM flow_records WHERE bucket_time = 'epoch' AND pkt_srcaddr IS NOT NULL").await,
        10
    );
    if let Some(custom) = require("vpc-flow-logs/otel-contrib/valid_vpc_flow_cw_custom.json") {
        let output = db.skywarden(&[
            "import",
            "--json",
            "--flow-format",
            "version interface-id srcaddr dstaddr",
            custom.to_str().unwrap(),
        ]);
        assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stdout));
        let summary: Value = serde_json::from_slice(&output.stdout).unwrap();
        assert_eq!(summary["flow_records"], 2, "{summary}");
        let owner = db.count("SELECT count(*) FROM flow_records WHERE account_id = '123456789012' AND interface_id = 'eni-1235b8ca123456789' AND srcport IS NULL").await;
        assert_eq!(owner, 2, "the envelope's owner is the account when the format has none");
    }
}

#[tokio::test]
async fn maxmind_test_databases() {
    let (Some(city), Some(asn), Some(elastic)) = (
        require("maxmind-test-db/test-data/GeoIP2-City-Test.mmdb"),
        require("maxmind-test-db/test-data/GeoLite2-ASN-Test.mmdb"),
        require("elastic-integrations-cloudtrail"),
    ) else {
        return;
    };
    let geo = skywarden::geo::GeoDb::open(&[city.clone(), asn.clone()]).unwrap();
    let london = geo.lookup("81.2.69.142".parse().unwrap());
    assert_eq!((london.country.as_deref(), london.city.as_deref()), (Some("GB"), Some("London")));
    assert_eq!((london.latitude, london.longitude), (Some(51.5142), Some(-0.0931)));
    assert_eq!(geo.lookup("216.160.83.56".parse().unwrap()).asn, Some(209));
    assert_eq!(geo.lookup("2a02:d300::1".parse().unwrap()).country.as_deref(), Some("UA"));
    assert!(geo.lookup("8.8.8.8".parse().unwrap()).is_empty());

    let db = TestDb::new().await;
    let output = db.skywarden(&[
        "import",
        "--json",
        "--geoip",
        &format!("{},{}", city.display(), asn.display()),
        elastic.to_str().unwrap(),
    ]);
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let linkoping = db
        .count("SELECT count(*) FROM cloudtrail_events WHERE source_ip = '89.160.20.156' AND geo_country = 'SE' AND geo_city = 'Linköping' AND geo_asn = 29518")
        .await;
    assert!(linkoping >= 1, "the elastic samples come from Linköping (SE, AS29518)");
}

#[tokio::test]
async fn sigmahq_pack_over_stratus_red_team_logs() {
    let Some(dir) = require("stratus-red-team-detonation-logs") else { return };
    let policies_dir = tempfile::tempdir().unwrap();
    let shipped = Path::new(env!("CARGO_MANIFEST_DIR")).join("policies");
    copy_dir(&shipped, policies_dir.path());
    std::fs::write(policies_dir.path().join("skywarden.yaml"), "enable: ['*']\n").unwrap();
    let policies = skywarden::detect::PolicySet::load(policies_dir.path());
    assert!(policies.problems.is_empty(), "{:?}", policies.problems);
    let rule_files = ["sigma/sigmahq", "sigma/skywarden"]
        .iter()
        .flat_map(|folder| files_in(&shipped.join(folder), &[".yml"]))
        .count();
    assert!(rule_files >= 57 + 11, "{rule_files} rule files");
    assert_eq!(policies.sigma.enabled_count(), rule_files, "all SigmaHQ rules load and compile");

    let mut fired: std::collections::BTreeMap<String, std::collections::BTreeSet<String>> = Default::default();
    for file in files_in(&dir, &[".json"]) {
        let technique = file.file_stem().unwrap().to_string_lossy().to_string();
        for raw in events_in(&file) {
            let parsed = skywarden::ingest::cloudtrail::CloudTrailEvent::parse(&raw.to_string(), None).unwrap();
            let event = skywarden::detect::PolicyEvent::from_parsed(parsed, None);
            let findings = policies
                .sigma
                .evaluate(&event, None)
                .into_iter()
                .chain(policies.detectors.evaluate_event(&event, None));
            for finding in findings {
                fired.entry(technique.clone()).or_default().insert(finding.policy_id);
            }
        }
    }
    // Each detonation is caught by the SigmaHQ rule written for it and, where the seed story
    // has one, by Skywarden's own policy.
    let expectations: &[(&str, &[&str])] = &[
        (
            "aws.defense-evasion.cloudtrail-stop",
            &["sigma-4db60cc0-36fb-42b7-9b58-a5b53019fb74", "aws-cloudtrail-logging-disabled"],
        ),
        (
            "aws.defense-evasion.cloudtrail-delete",
            &["sigma-4db60cc0-36fb-42b7-9b58-a5b53019fb74", "aws-cloudtrail-logging-disabled"],
        ),
        ("aws.defense-evasion.cloudtrail-event-selectors", &["aws-cloudtrail-logging-disabled"]),
        ("aws.defense-evasion.vpc-remove-flow-logs", &["sigma-e386b9b5-af12-450e-afff-761730fb8a98"]),
        ("aws.exfiltration.ec2-share-ebs-snapshot", &["sigma-abae8fec-57bd-4f87-aff6-6e3db989843d"]),
        (
            "aws.exfiltration.ec2-security-group-open-port-22-ingress",
            &["sigma-6fb77778-040f-4015-9440-572aa9b6b580", "aws-security-group-ingress-opened"],
        ),
        (
            "aws.initial-access.console-login-without-mfa",
            &["sigma-77caf516-34e5-4df9-b4db-20744fea0a60", "aws-console-login-without-mfa"],
        ),
        (
            "aws.persistence.iam-create-admin-user",
            &["sigma-0a5177f4-6ca9-44c2-aacf-d3f3d8b6e4d2", "aws-iam-user-created", "aws-iam-access-key-created"],
        ),
        (
            "aws.persistence.iam-backdoor-user",
            &["sigma-0a5177f4-6ca9-44c2-aacf-d3f3d8b6e4d2", "aws-iam-access-key-created"],
        ),
        ("aws.persistence.iam-create-backdoor-role", &["aws-iam-role-policy-attached"]),
        ("aws.persistence.lambda-layer-extension", &["sigma-97fbabf8-8e1b-47a2-b7d5-a418d2b95e3d"]),
        ("aws.privilege-escalation.iam-update-user-login-profile", &["sigma-055fb148-60f8-462d-ad16-26926ce050f1"]),
        ("aws.execution.ssm-start-session", &["aws-ssm-session-started"]),
        ("aws.execution.ssm-send-command", &["sigma-38e7f511-3f74-41d4-836e-f57dfa18eead"]),
    ];
    for (technique, policies) in expectations {
        let got = fired.get(*technique).cloned().unwrap_or_default();
        for policy in *policies {
            assert!(got.contains(*policy), "{technique}: expected {policy}, got {got:?}");
        }
    }
    // Discovery-only detonations raise none of Skywarden's own alerts.
    let own: Vec<&String> = fired
        .get("aws.discovery.ec2-download-user-data")
        .into_iter()
        .flatten()
        .filter(|p| p.starts_with("aws-"))
        .collect();
    assert!(own.is_empty(), "{own:?}");
}
