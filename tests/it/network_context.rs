//! Network context end to end: the ASN table (ip-location-db's CSV format), the Tor, VPN and
//! hosting lists and AWS's ip-ranges.json given to `skywarden import`, the flags stored with
//! each event, the audit-trail search showing them, and the two network detectors alerting on
//! realistic CloudTrail events (and not on the benign ones beside them). All data is made here.

use std::path::{Path, PathBuf};

use serde_json::{Value, json};
use skywarden::geo::{GeoCache, GeoDb, NetworkLists};

use crate::support::{TestDb, shared_fixture};

const ACCOUNT: &str = "111122223333";
const INSTANCE_ARN: &str = "arn:aws:sts::111122223333:assumed-role/web-app-role/i-0a1b2c3d4e5f60718";

/// The ASN table: a Tor relay's AS, a VPN provider, a hosting provider, AWS and a home ISP.
const ASN_CSV: &str = "\
3.5.140.0,3.5.143.255,64496,Example Transit\n\
45.137.21.0,45.137.21.255,211252,\"Delis, LLC\"\n\
54.239.0.0,54.239.255.255,16509,\"Amazon.com, Inc.\"\n\
84.128.0.0,84.191.255.255,3320,Deutsche Telekom AG\n\
91.219.236.0,91.219.239.255,197540,netcup GmbH\n\
146.70.0.0,146.70.255.255,9009,M247 Europe SRL\n\
185.220.101.0,185.220.101.255,60729,Stiftung Erneuerbare Freiheit\n";

const TOR_EXITS: &str = "ExitNode 0011BD2485AD45D984EC4159C88FC066E5E3300E\nPublished 2026-11-10 19:15:18\n\
    LastStatus 2026-11-10 20:00:00\nExitAddress 185.220.101.4 2026-11-10 20:04:13\n";

const AWS_IP_RANGES: &str = r#"{"syncToken":"1731000000","createDate":"2026-11-01-00-00-00",
  "prefixes":[{"ip_prefix":"3.5.140.0/22","region":"ap-northeast-2","service":"AMAZON","network_border_group":"ap-northeast-2"}],
  "ipv6_prefixes":[{"ipv6_prefix":"2600:1f14::/35","region":"us-west-2","service":"EC2","network_border_group":"us-west-2"}]}"#;

struct Files {
    dir: PathBuf,
}

impl Files {
    fn new(name: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("skywarden-netctx-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("asn-ipv4.csv"), ASN_CSV).unwrap();
        std::fs::write(dir.join("tor-exits.txt"), TOR_EXITS).unwrap();
        std::fs::write(dir.join("vpn.txt"), "# VPN providers\nAS9009\n").unwrap();
        std::fs::write(dir.join("hosting.txt"), "# hosting providers\nAS211252\n").unwrap();
        std::fs::write(dir.join("ip-ranges.json"), AWS_IP_RANGES).unwrap();
        Self { dir }
    }

    fn path(&self, name: &str) -> String {
        self.dir.join(name).display().to_string()
    }

    fn network_args(&self) -> Vec<String> {
        [
            ("--geoip", "asn-ipv4.csv"),
            ("--tor-exits", "tor-exits.txt"),
            ("--vpn-ranges", "vpn.txt"),
            ("--hosting-ranges", "hosting.txt"),
            ("--aws-ip-ranges", "ip-ranges.json"),
        ]
        .iter()
        .flat_map(|(flag, file)| [flag.to_string(), self.path(file)])
        .collect()
    }

    fn trail(&self, name: &str, records: &[Value]) -> PathBuf {
        let path = self.dir.join(name);
        std::fs::write(&path, json!({ "Records": records }).to_string()).unwrap();
        path
    }
}

impl Drop for Files {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn console_login(user: &str, source: &str, time: &str) -> Value {
    json!({
        "eventVersion": "1.08",
        "userIdentity": {"type": "IAMUser", "principalId": format!("AIDA{}", user.to_uppercase()),
                         "arn": format!("arn:aws:iam::{ACCOUNT}:user/{user}"), "accountId": ACCOUNT, "userName": user},
        "eventTime": time, "eventSource": "signin.amazonaws.com", "eventName": "ConsoleLogin",
        "awsRegion": "us-east-1", "sourceIPAddress": source,
        "userAgent": "Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0",
        "requestParameters": null, "responseElements": {"ConsoleLogin": "Success"},
        "additionalEventData": {"LoginTo": "https://console.aws.amazon.com/console/home", "MobileVersion": "No", "MFAUsed": "Yes"},
        "eventID": format!("login-{user}-{time}"), "readOnly": false, "eventType": "AwsConsoleSignIn",
        "managementEvent": true, "recipientAccountId": ACCOUNT, "eventCategory": "Management"
    })
}

/// A call with the instance profile credentials of i-0a1b2c3d4e5f60718.
fn instance_call(name: &str, source: &str, time: &str) -> Value {
    json!({
        "eventVersion": "1.08",
        "userIdentity": {
            "type": "AssumedRole", "principalId": "AROAEXAMPLEROLEID0001:i-0a1b2c3d4e5f60718",
            "arn": INSTANCE_ARN, "accountId": ACCOUNT, "accessKeyId": "ASIAEXAMPLEKEY000001",
            "sessionContext": {
                "sessionIssuer": {"type": "Role", "principalId": "AROAEXAMPLEROLEID0001",
                                  "arn": format!("arn:aws:iam::{ACCOUNT}:role/web-app-role"), "accountId": ACCOUNT, "userName": "web-app-role"},
                "attributes": {"creationDate": "2026-11-10T04:00:00Z", "mfaAuthenticated": "false"},
                "ec2RoleDelivery": "2.0"
            }
        },
        "eventTime": time, "eventSource": "s3.amazonaws.com", "eventName": name, "awsRegion": "us-east-1",
        "sourceIPAddress": source, "userAgent": "aws-cli/2.15.0 Python/3.11.6 Linux/6.1 exe/x86_64.amzn.2023",
        "requestParameters": {"Host": "s3.amazonaws.com"}, "responseElements": null,
        "eventID": format!("call-{name}-{source}-{time}"), "readOnly": true, "eventType": "AwsApiCall",
        "managementEvent": true, "recipientAccountId": ACCOUNT, "eventCategory": "Management"
    })
}

fn import(db: &TestDb, files: &Files, paths: &[&Path]) -> Value {
    let mut args = vec!["import".to_string(), "--json".into()];
    args.extend(files.network_args());
    args.extend(paths.iter().map(|p| p.display().to_string()));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let output = db.skywarden(&args);
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    serde_json::from_slice(&output.stdout).unwrap()
}

fn alerts(db: &TestDb, policy: &str) -> Vec<Value> {
    let output = db.skywarden(&["alerts", "--json", "--policy", policy]);
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    String::from_utf8_lossy(&output.stdout).lines().map(|l| serde_json::from_str(l).unwrap()).collect()
}

#[tokio::test]
async fn network_context_is_stored_shown_and_detected() {
    let db = TestDb::new().await;
    let files = Files::new("e2e");
    // The account's own instance once had 91.219.236.7 (a BYOIP Elastic IP, not in AWS's ASNs).
    sqlx::query(
        "INSERT INTO resource_versions (account_id, resource_type, resource_id, version, captured_at, config)
         VALUES ($1, 'ec2:instance', 'i-0ffee0ffee0ffee01', 1, now(), '{\"instance_id\": \"i-0ffee0ffee0ffee01\", \"public_ip\": \"91.219.236.7\"}')",
    )
    .bind(ACCOUNT)
    .execute(&db.pool)
    .await
    .unwrap();
    let first = files.trail(
        "first.json",
        &[
            // Benign: alice from home, the instance from EC2, from AWS's ranges, from inside
            // the VPC, through a service, and from the account's own address.
            console_login("alice", "84.128.1.2", "2026-11-10T08:00:00Z"),
            instance_call("ListBuckets", "54.239.28.85", "2026-11-10T09:00:00Z"),
            instance_call("ListBuckets", "3.5.141.9", "2026-11-10T09:01:00Z"),
            instance_call("ListBuckets", "10.0.1.25", "2026-11-10T09:02:00Z"),
            instance_call("GetObject", "s3.amazonaws.com", "2026-11-10T09:03:00Z"),
            instance_call("ListBuckets", "91.219.236.7", "2026-11-10T09:04:00Z"),
            // bob works through his VPN from the start.
            console_login("bob", "146.70.12.9", "2026-11-10T10:00:00Z"),
            // The intrusion: the instance's credentials from a hosting provider, alice from Tor.
            instance_call("ListBuckets", "45.137.21.9", "2026-11-12T05:10:00Z"),
            instance_call("GetObject", "45.137.21.9", "2026-11-12T05:11:00Z"),
            console_login("alice", "185.220.101.4", "2026-11-12T05:30:00Z"),
        ],
    );
    let summary = import(&db, &files, &[&first]);
    assert_eq!(summary["cloudtrail_events"], 10, "{summary}");

    // Stored: AS and organisation for every public address, the flags where lists could say.
    assert_eq!(
        db.count(
            "SELECT count(*) FROM cloudtrail_events WHERE source_ip IS NOT NULL AND NOT source_ip <<= '10.0.0.0/8'"
        )
        .await,
        8
    );
    assert_eq!(db.count("SELECT count(*) FROM cloudtrail_events WHERE geo_asn IS NOT NULL").await, 8);
    assert_eq!(db.count("SELECT count(*) FROM cloudtrail_events WHERE geo_asn = 60729 AND geo_as_org = 'Stiftung Erneuerbare Freiheit' AND source_is_tor AND NOT source_is_vpn AND NOT source_is_hosting").await, 1);
    assert_eq!(db.count("SELECT count(*) FROM cloudtrail_events WHERE geo_as_org = 'Delis, LLC' AND source_is_hosting AND NOT source_is_tor").await, 2);
    assert_eq!(
        db.count("SELECT count(*) FROM cloudtrail_events WHERE source_is_vpn AND host(source_ip) = '146.70.12.9'")
            .await,
        1
    );
    assert_eq!(
        db.count("SELECT count(*) FROM cloudtrail_events WHERE source_is_aws").await,
        1,
        "3.5.141.9 is in ip-ranges.json"
    );
    assert_eq!(
        db.count("SELECT count(*) FROM cloudtrail_events WHERE source_is_aws = false AND geo_asn = 16509").await,
        1,
        "54.239.28.85 is AWS's by its AS only"
    );
    assert_eq!(
        db.count("SELECT count(*) FROM cloudtrail_events WHERE source_ip IS NULL OR source_ip <<= '10.0.0.0/8'").await,
        2
    );
    assert_eq!(db.count("SELECT count(*) FROM cloudtrail_events WHERE (source_ip IS NULL OR source_ip <<= '10.0.0.0/8') AND (geo_asn IS NOT NULL OR source_is_tor IS NOT NULL)").await, 0, "private addresses and service names get no context");

    // Detected: one alert for the instance's credentials (the two calls fold), none for the
    // benign calls; alice's first Tor login; bob's first VPN login.
    let outside = alerts(&db, "aws-instance-credentials-used-outside");
    assert_eq!(outside.len(), 1, "{outside:#?}");
    assert_eq!(outside[0]["source_ip"], "45.137.21.9");
    assert_eq!(outside[0]["severity"], "high");
    assert_eq!(outside[0]["details"]["network"]["asn"], 211252);
    assert_eq!(outside[0]["details"]["network"]["is_hosting"], true);
    assert_eq!(outside[0]["details"]["instance_id"], "i-0a1b2c3d4e5f60718");
    let anonymous = alerts(&db, "aws-login-from-anonymizing-network");
    let mut by_principal: Vec<(String, String, String)> = anonymous
        .iter()
        .map(|a| {
            (
                a["principal"].as_str().unwrap().to_string(),
                a["source_ip"].as_str().unwrap().to_string(),
                a["severity"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    by_principal.sort();
    assert_eq!(
        by_principal,
        [
            (format!("arn:aws:iam::{ACCOUNT}:user/alice"), "185.220.101.4".to_string(), "high".to_string()),
            (format!("arn:aws:iam::{ACCOUNT}:user/bob"), "146.70.12.9".to_string(), "medium".to_string()),
            (INSTANCE_ARN.to_string(), "45.137.21.9".to_string(), "medium".to_string()),
        ]
    );
    let tor = anonymous.iter().find(|a| a["source_ip"] == "185.220.101.4").unwrap();
    assert_eq!(tor["details"]["network"]["is_tor"], true);
    assert!(tor["title"].as_str().unwrap().contains("AS60729"), "{tor}");

    // bob's VPN again days later: his baseline holds a VPN, so nothing new. A new principal's
    // first VPN login still alerts.
    let later = files.trail(
        "later.json",
        &[
            console_login("bob", "146.70.99.1", "2026-11-20T10:00:00Z"),
            console_login("carol", "146.70.99.2", "2026-11-20T11:00:00Z"),
        ],
    );
    import(&db, &files, &[&later]);
    let anonymous = alerts(&db, "aws-login-from-anonymizing-network");
    let principals: Vec<&str> = anonymous.iter().filter_map(|a| a["principal"].as_str()).collect();
    assert_eq!(anonymous.len(), 4, "{principals:?}");
    assert!(principals.contains(&"arn:aws:iam::111122223333:user/carol"));

    // Re-importing adds nothing.
    import(&db, &files, &[&first, &later]);
    assert_eq!(alerts(&db, "aws-login-from-anonymizing-network").len(), 4);
    assert_eq!(alerts(&db, "aws-instance-credentials-used-outside").len(), 1);

    // Other detectors' alerts carry the context of their evidence too (alerts list and page).
    let all = db.skywarden(&["alerts", "--json"]);
    let all: Vec<Value> =
        String::from_utf8_lossy(&all.stdout).lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert!(
        all.iter()
            .filter(|a| a["source_ip"].is_string() && a["source_ip"] != "10.0.1.25")
            .all(|a| a["details"]["network"]["asn"].is_number()),
        "{all:#?}"
    );

    // The audit trail shows AS, organisation and flags.
    let filter = skywarden::search::events::EventFilter {
        source_ip: Some("185.220.101.4".into()),
        limit: 10,
        ..Default::default()
    };
    let page = skywarden::search::events::search(&db.pool, &filter).await.unwrap();
    assert_eq!(page.len(), 1);
    let row = serde_json::to_value(&page[0]).unwrap();
    assert_eq!(
        (row["asn"].clone(), row["as_org"].clone(), row["is_tor"].clone(), row["is_vpn"].clone()),
        (json!(60729), json!("Stiftung Erneuerbare Freiheit"), json!(true), json!(false))
    );
    let detail = skywarden::search::entities::event(&db.pool, &page[0].event_id, Some(ACCOUNT)).await.unwrap().unwrap();
    assert_eq!(
        (detail.asn, detail.is_tor, detail.is_hosting, detail.is_aws),
        (Some(60729), Some(true), Some(false), Some(false))
    );
}

#[tokio::test]
async fn without_network_data_the_network_detectors_stay_silent() {
    let db = TestDb::new().await;
    let files = Files::new("none");
    let trail = files.trail(
        "trail.json",
        &[
            instance_call("ListBuckets", "45.137.21.9", "2026-11-12T05:10:00Z"),
            console_login("alice", "185.220.101.4", "2026-11-12T05:30:00Z"),
        ],
    );
    let output = db.skywarden(&["import", "--json", trail.to_str().unwrap()]);
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    assert_eq!(
        db.count("SELECT count(*) FROM cloudtrail_events WHERE source_is_tor IS NULL AND geo_asn IS NULL").await,
        2
    );
    assert!(alerts(&db, "aws-instance-credentials-used-outside").is_empty());
    assert!(alerts(&db, "aws-login-from-anonymizing-network").is_empty());
}

#[tokio::test]
async fn a_bad_list_line_stops_the_command_naming_file_and_line() {
    let db = TestDb::new().await;
    let files = Files::new("bad");
    std::fs::write(files.dir.join("vpn.txt"), "146.70.0.0/16\nAS9009\nvpn.example.net\n").unwrap();
    let trail = files.trail("trail.json", &[console_login("alice", "84.128.1.2", "2026-11-10T08:00:00Z")]);
    let output = db.skywarden(&["import", "--vpn-ranges", &files.path("vpn.txt"), trail.to_str().unwrap()]);
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains(&format!("{}, line 3", files.path("vpn.txt"))), "{stderr}");
    assert_eq!(db.count("SELECT count(*) FROM cloudtrail_events").await, 0);
}

#[test]
fn a_refreshed_list_file_is_read_again_without_a_restart() {
    let files = Files::new("reload");
    let tor = files.dir.join("tor-exits.txt");
    let lists = NetworkLists::open(Some(&tor), None, None, None).unwrap();
    let geo = std::sync::Arc::new(GeoDb::open_with(&[files.dir.join("asn-ipv4.csv")], lists).unwrap());
    let mut cache = GeoCache::new(Some(geo.clone()));
    let relay: std::net::IpAddr = "185.220.101.4".parse().unwrap();
    let next: std::net::IpAddr = "185.220.101.77".parse().unwrap();
    assert_eq!(cache.lookup(relay).unwrap().is_tor, Some(true));
    assert_eq!(cache.lookup(next).unwrap().is_tor, Some(false));
    // The Tor Project's bulk list, written later with another modification time.
    std::fs::write(&tor, "185.220.101.77\n").unwrap();
    let file = std::fs::File::options().write(true).open(&tor).unwrap();
    file.set_modified(std::time::SystemTime::now() + std::time::Duration::from_secs(5)).unwrap();
    assert!(geo.reload_lists_now());
    assert_eq!(cache.lookup(next).unwrap().is_tor, Some(true), "the memo forgets what the old list said");
    assert_eq!(cache.lookup(relay).unwrap().is_tor, Some(false));
    assert!(!geo.reload_lists_now(), "unchanged: not read again");
}

/// A GeoIP2 Anonymous-IP database, built here in MaxMind's format (so the test always runs):
/// each flag read into the address's network context, an address it does not list looked up as
/// "not listed", and a console login from its Tor exit raising the anonymising-network alert.
/// MaxMind's own test database is checked too when the shared fixtures hold it.
#[tokio::test]
async fn maxmind_anonymous_ip_database() {
    use crate::support::mmdb::{Anonymous, MmdbWriter, anonymous_ip_record as record};
    let files = Files::new("anonymous-ip");
    let path = files.dir.join("GeoIP2-Anonymous-IP.mmdb");
    MmdbWriter::new("GeoIP2-Anonymous-IP")
        .insert("185.220.101.0", 24, &record(Anonymous { tor_exit: true, ..Default::default() }))
        .insert("146.70.12.0", 24, &record(Anonymous { vpn: true, ..Default::default() }))
        .insert("45.137.21.0", 24, &record(Anonymous { hosting: true, ..Default::default() }))
        .insert("91.219.237.0", 24, &record(Anonymous { public_proxy: true, ..Default::default() }))
        .insert("81.2.69.0", 24, &record(Anonymous { vpn: true, hosting: true, tor_exit: true, public_proxy: false }))
        .write(&path);
    let geo = GeoDb::open(std::slice::from_ref(&path)).unwrap();
    assert!(geo.knows_tor_exits(), "an Anonymous-IP database tells Tor exits");
    let flags = |ip: &str| {
        let info = geo.lookup(ip.parse().unwrap());
        (info.is_tor, info.is_vpn, info.is_hosting)
    };
    assert_eq!(flags("185.220.101.4"), (Some(true), Some(false), Some(false)), "Tor exit");
    assert_eq!(flags("146.70.12.9"), (Some(false), Some(true), Some(false)), "VPN");
    assert_eq!(flags("45.137.21.9"), (Some(false), Some(false), Some(true)), "hosting provider");
    assert_eq!(
        flags("91.219.237.5"),
        (Some(false), Some(true), Some(false)),
        "a public proxy anonymises as a VPN does"
    );
    assert_eq!(flags("81.2.69.160"), (Some(true), Some(true), Some(true)), "every flag");
    assert_eq!(flags("8.8.8.8"), (Some(false), Some(false), Some(false)), "not listed: looked up, all false");

    // Through the import: the login's event stores the flags and the detector reads them.
    let db = TestDb::new().await;
    let trail = files.trail("tor-login.json", &[console_login("mallory", "185.220.101.4", "2026-11-10T08:00:00Z")]);
    let output = db.skywarden(&["import", "--geoip", path.to_str().unwrap(), trail.to_str().unwrap()]);
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    assert_eq!(db.count("SELECT count(*) FROM cloudtrail_events WHERE source_is_tor").await, 1);
    let tor_alerts = db
        .count(
            "SELECT count(*) FROM alerts WHERE policy_id = 'aws-login-from-anonymizing-network'
             AND (details #>> '{network,is_tor}')::boolean",
        )
        .await;
    assert_eq!(tor_alerts, 1);

    let Some(maxmind) = shared_fixture("maxmind-test-db/test-data/GeoIP2-Anonymous-IP-Test.mmdb") else {
        println!(
            "NOTE: ../shared/fixtures/maxmind-test-db is absent: MaxMind's own Anonymous-IP test database was not \
             checked (the database built above was)"
        );
        return;
    };
    let geo = GeoDb::open(&[maxmind]).unwrap();
    let all = geo.lookup("81.2.69.1".parse().unwrap());
    assert_eq!((all.is_tor, all.is_vpn, all.is_hosting), (Some(true), Some(true), Some(true)));
    let vpn = geo.lookup("1.2.0.1".parse().unwrap());
    assert_eq!((vpn.is_tor, vpn.is_vpn, vpn.is_hosting), (Some(false), Some(true), Some(false)));
    let unlisted = geo.lookup("8.8.8.8".parse().unwrap());
    assert_eq!((unlisted.is_tor, unlisted.is_vpn, unlisted.is_hosting), (Some(false), Some(false), Some(false)));
}
