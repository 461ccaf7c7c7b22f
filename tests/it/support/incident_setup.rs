//! The incident tests' shared set-up (`incidents.rs`, `incident_links.rs`): CloudTrail records
//! as AWS writes them, trail and flow-log files, the network context an import is given (ASN
//! table, Tor, VPN and hosting lists, AWS's ip-ranges.json), the import through the real binary
//! (detection included, or left to [`detect_all`]) and how the alerts ended up grouped.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};
use serde_json::{Value, json};

use super::TestDb;

pub const ACCOUNT: &str = "111122223333";

pub fn user_arn(name: &str) -> String {
    format!("arn:aws:iam::{ACCOUNT}:user/{name}")
}

/// A CloudTrail record as AWS writes it (the fields the engine and the rules read). Its id comes
/// from what it says; `readOnly` from its name (reads are `Describe…`, `Get…`, `List…`); `extra`
/// sets or overrides any field.
pub fn event(time: DateTime<Utc>, name: &str, source: &str, identity: Value, ip: &str, extra: Value) -> Value {
    let hash = xxhash_rust::xxh3::xxh3_128(format!("{time}{name}{ip}{identity}").as_bytes());
    let hex = format!("{hash:032x}");
    let read_only = ["Describe", "Get", "List"].iter().any(|read| name.starts_with(read));
    let mut record = json!({
        "eventVersion": "1.09",
        "userIdentity": identity,
        "eventTime": time.format("%Y-%m-%dT%H:%M:%SZ").to_string(),
        "eventSource": source,
        "eventName": name,
        "awsRegion": "us-east-1",
        "sourceIPAddress": ip,
        "userAgent": "aws-cli/2.15.0",
        "requestParameters": null,
        "responseElements": null,
        "eventID": format!("{}-{}-{}-{}-{}", &hex[0..8], &hex[8..12], &hex[12..16], &hex[16..20], &hex[20..32]),
        "readOnly": read_only,
        "eventType": "AwsApiCall",
        "managementEvent": true,
        "recipientAccountId": ACCOUNT,
    });
    for (k, v) in extra.as_object().expect("extra fields are an object") {
        record[k] = v.clone();
    }
    record
}

/// A console login of an IAM user (`Success` or `Failure`), without MFA.
pub fn console_login(time: DateTime<Utc>, user: &str, ip: &str, success: bool) -> Value {
    let identity = json!({"type": "IAMUser", "principalId": format!("AIDA{}", user.to_uppercase()),
                          "arn": user_arn(user), "accountId": ACCOUNT, "userName": user});
    let mut record = event(
        time,
        "ConsoleLogin",
        "signin.amazonaws.com",
        identity,
        ip,
        json!({"eventType": "AwsConsoleSignIn", "readOnly": false,
               "responseElements": {"ConsoleLogin": if success { "Success" } else { "Failure" }},
               "additionalEventData": {"MFAUsed": "No", "MobileVersion": "No"}}),
    );
    if !success {
        record["errorMessage"] = json!("Failed authentication");
    }
    record
}

/// Writes `records` as a CloudTrail log file (`{"Records": [...]}`) named `name.json`.
pub fn write_trail(dir: &Path, name: &str, records: Vec<Value>) -> PathBuf {
    let path = dir.join(format!("{name}.json"));
    std::fs::write(&path, serde_json::to_vec(&json!({"Records": records})).unwrap()).unwrap();
    path
}

/// Writes a flow log (its header line included in `text`).
pub fn write_flows(dir: &Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path
}

/// The network data an import is given; each file set is written into the import's folder.
#[derive(Clone, Copy, Debug, Default)]
pub struct NetworkContext<'a> {
    /// ip-location-db's ASN table (CSV).
    pub asn_csv: Option<&'a str>,
    /// The Tor Project's exit list.
    pub tor_exits: Option<&'a str>,
    pub vpn: Option<&'a str>,
    pub hosting: Option<&'a str>,
    /// AWS's ip-ranges.json.
    pub aws_ip_ranges: Option<&'a str>,
}

impl NetworkContext<'_> {
    /// Writes the files into `dir` and returns the import's arguments for them.
    pub fn args(&self, dir: &Path) -> Vec<String> {
        let files = [
            ("--geoip", "asn-ipv4.csv", self.asn_csv),
            ("--tor-exits", "tor-exits.txt", self.tor_exits),
            ("--vpn-ranges", "vpn.txt", self.vpn),
            ("--hosting-ranges", "hosting.txt", self.hosting),
            ("--aws-ip-ranges", "ip-ranges.json", self.aws_ip_ranges),
        ];
        files
            .into_iter()
            .filter_map(|(flag, name, text)| text.map(|text| (flag, name, text)))
            .flat_map(|(flag, name, text)| {
                let path = dir.join(name);
                std::fs::write(&path, text).unwrap();
                [flag.to_string(), path.display().to_string()]
            })
            .collect()
    }
}

/// Whether the import runs detection itself.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Detection {
    /// `skywarden import` detects (and links) what it stored.
    Import,
    /// `--no-detect`: the test runs it ([`detect_all`]).
    Later,
}

/// `skywarden import --json` of `paths` (CloudTrail, flow logs) with `context` written into
/// `dir`; fails the test unless it succeeds. Returns the summary.
pub fn import(db: &TestDb, dir: &Path, context: &NetworkContext<'_>, detection: Detection, paths: &[&Path]) -> Value {
    let mut args = vec!["import".to_string(), "--json".into()];
    if detection == Detection::Later {
        args.push("--no-detect".into());
    }
    args.extend(context.args(dir));
    args.extend(paths.iter().map(|p| p.display().to_string()));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = db.skywarden(&args);
    assert!(out.status.success(), "{args:?}: {}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap()
}

/// The shipped policies (what an import without `--policies` runs).
pub fn shipped_policies() -> skywarden::detect::PolicySet {
    skywarden::detect::PolicySet::load(&Path::new(env!("CARGO_MANIFEST_DIR")).join("policies"))
}

/// Detection (and linking) over every stored event and flow, in this process.
pub async fn detect_all(db: &TestDb, policies: &skywarden::detect::PolicySet) {
    let epoch = DateTime::<Utc>::from_timestamp(0, 0).unwrap();
    let scope = skywarden::detect::runner::Scope::EventsSince(epoch);
    skywarden::detect::runner::run(&db.pool, policies, scope).await.unwrap();
}

/// Alert ids grouped by the incident they are linked to.
pub async fn incidents_of_alerts(db: &TestDb) -> BTreeMap<String, BTreeSet<String>> {
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
