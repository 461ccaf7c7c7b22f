//! Fuzz target bodies: each feeds arbitrary bytes to one reader of outside input the way
//! Skywarden reads it (log files, snapshot dumps, policy files). The `fuzz/` crate (cargo-fuzz,
//! nightly) calls them with generated inputs; `tests/fuzz_corpus.rs` replays the committed
//! corpus (`fuzz/corpus/<target>/`) through them on stable. Bad input must come back as an
//! error: a panic, or an invariant below broken, is a bug.

use std::io::{BufRead, Cursor};
use std::path::PathBuf;
use std::sync::Arc;

use crate::detect::PolicySet;
use crate::geo::GeoCache;
use crate::ingest::cloudtrail::CloudTrailEvent;
use crate::ingest::flowlogs::{FlowFormat, FlowRecord};
use crate::ingest::json_stream::{self, JsonSink};
use crate::ingest::source::{self, ContentKind};
use crate::ingest::{FileReport, ParseContext, parse_content};
use crate::inventory::dump::SnapshotDump;
use crate::policy_files::{Origin, PolicyFile, PolicyFiles};
use crate::posture::checks::Check;

/// A target body: bytes in, a panic on a bug.
pub type Target = fn(&[u8]);

/// Every target by the name of its `fuzz/fuzz_targets/<name>.rs` and corpus folder.
pub const TARGETS: &[(&str, Target)] = &[
    ("json_stream", json_stream),
    ("cloudtrail", cloudtrail),
    ("flow_logs", flow_logs),
    ("snapshot_dump", snapshot_dump),
    ("sigma_rule", sigma_rule),
    ("rego_check", rego_check),
];

/// A record limit small enough for the fuzzer to cross (its inputs are a few KB).
const SMALL_RECORD_LIMIT: usize = 256;
const ACCOUNT: &str = "111122223333";
/// A custom flow log field order (v3-v5 fields, not the default layout).
const CUSTOM_FLOW_FORMAT: &str = "version account-id interface-id srcaddr dstaddr srcport dstport protocol packets \
     bytes start end action log-status vpc-id subnet-id instance-id tcp-flags type pkt-srcaddr pkt-dstaddr \
     flow-direction traffic-path";

/// What a walk handed to its sink, checked against the limit it ran with.
struct CountingSink {
    limit: usize,
    records: usize,
    too_large: usize,
}

impl JsonSink for CountingSink {
    fn event(&mut self, raw: &str) {
        assert!(raw.len() <= self.limit, "an event of {} bytes passed a limit of {}", raw.len(), self.limit);
        self.records += 1;
    }

    fn log_message(&mut self, message: &str, _timestamp_ms: Option<i64>, _owner: Option<&str>) {
        assert!(message.len() <= self.limit, "a message of {} bytes passed a limit of {}", message.len(), self.limit);
        self.records += 1;
    }

    fn skipped(&mut self, _what: &'static str) {
        self.records += 1;
    }

    fn unrecognised(&mut self, _description: String) {
        self.records += 1;
    }

    fn too_large(&mut self, _offset: u64, _line: usize, limit: usize) {
        assert_eq!(limit, self.limit);
        self.too_large += 1;
    }
}

/// The JSON stream scanner, with the default record limit and with one the input can cross:
/// no record over the limit reaches the sink, and a limit never loses a record that fits.
pub fn json_stream(data: &[u8]) {
    let mut roomy = CountingSink { limit: json_stream::DEFAULT_MAX_RECORD_BYTES, records: 0, too_large: 0 };
    let roomy_result = json_stream::walk(data, &mut roomy);
    let mut tight = CountingSink { limit: SMALL_RECORD_LIMIT, records: 0, too_large: 0 };
    let tight_result = json_stream::walk_limited(data, SMALL_RECORD_LIMIT, &mut tight);
    assert_eq!(roomy.too_large, 0, "no fuzz input is larger than the default limit");
    if data.len() <= SMALL_RECORD_LIMIT {
        // Nothing can be over either limit: both walks see the same.
        assert_eq!(tight.too_large, 0);
        assert_eq!(roomy.records, tight.records);
        assert_eq!(roomy_result.is_ok(), tight_result.is_ok());
    }
}

/// A CloudTrail record through the event parser, and the bytes as a file through the
/// importer's reader (gzip, content kind, JSON walk, event parser, COPY rows).
pub fn cloudtrail(data: &[u8]) {
    if let Ok(text) = std::str::from_utf8(data)
        && let Ok(event) = CloudTrailEvent::parse(text, Some(ACCOUNT))
    {
        assert!(!event.event_id.is_empty() && !event.account_id.is_empty());
    }
    let Ok(opened) = source::open_reader(Cursor::new(data.to_vec())) else { return };
    if opened.1 == ContentKind::Parquet {
        // Parquet goes to the parquet crate through a temporary file: not this target's job.
        return;
    }
    import(opened, None);
}

/// Flow log text, as a file with the default layouts and with a custom `--flow-format`, and
/// line by line through the record parser.
pub fn flow_logs(data: &[u8]) {
    let custom = FlowFormat::parse(CUSTOM_FLOW_FORMAT).expect("a valid format");
    for format in [None, Some(custom.clone())] {
        let reader: Box<dyn BufRead + Send> = Box::new(Cursor::new(data.to_vec()));
        import((reader, ContentKind::Text), format);
    }
    let text = String::from_utf8_lossy(data);
    for line in text.lines() {
        if let Some(header) = FlowFormat::from_header(line) {
            assert!(!header.is_empty());
            continue;
        }
        for format in [FlowFormat::default_v2(), custom.clone()] {
            let _ = FlowRecord::parse(line.trim(), &format);
        }
    }
}

/// Parses opened content as the importer does, with rows going nowhere: every batch names where
/// each of its rows came from, and a failure is listed among the errors.
fn import(opened: (Box<dyn BufRead + Send>, ContentKind), flow_format: Option<FlowFormat>) {
    let context = ParseContext {
        default_account: Some(ACCOUNT.to_string()),
        flow_format,
        known_formats: Vec::new(),
        batch_rows: 64,
        max_spool_bytes: 1 << 20,
        max_record_bytes: SMALL_RECORD_LIMIT * 16,
        max_gzip_ratio: source::DEFAULT_MAX_GZIP_RATIO,
    };
    let mut geo = GeoCache::new(None);
    let label = Arc::new(PathBuf::from("fuzz-input"));
    let report: FileReport =
        parse_content(opened, label, Some(ACCOUNT.to_string()), &context, &mut geo, &mut |batch| {
            assert_eq!(batch.rows.rows(), batch.row_positions.len(), "one position per row");
            true
        });
    if let Some(failure) = &report.failure {
        assert!(report.errors.contains(failure), "a failure is also an error");
    }
}

/// A snapshot dump (`skywarden.snapshot/v1`) through the loader, from a file as `load` reads.
pub fn snapshot_dump(data: &[u8]) {
    let thread = format!("{:?}", std::thread::current().id()).replace(|c: char| !c.is_ascii_alphanumeric(), "");
    let path = std::env::temp_dir().join(format!("skywarden-fuzz-dump-{}-{thread}.json", std::process::id()));
    std::fs::write(&path, data).expect("the temporary folder is writable");
    let loaded = SnapshotDump::load(&path);
    let _ = std::fs::remove_file(&path);
    if let Ok(dump) = loaded {
        assert_eq!(dump.format, crate::inventory::dump::FORMAT);
        assert!(dump.snapshots.windows(2).all(|w| w[0].captured_at < w[1].captured_at));
    }
}

/// One Sigma rule file through the detection policy loader; a rule that loads meets an event.
pub fn sigma_rule(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let mut files = PolicyFiles::default();
    files.insert(PolicyFile::new("sigma/fuzz/rule.yml", text.to_string(), Origin::File("fuzz/rule.yml".into())));
    let policies = PolicySet::from_files(&files);
    let event = serde_json::json!({
        "eventVersion": "1.08", "eventTime": "2026-11-01T05:10:00Z", "eventSource": "signin.amazonaws.com",
        "eventName": "ConsoleLogin", "awsRegion": "us-east-1", "sourceIPAddress": "203.0.113.7",
        "userIdentity": {"type": "IAMUser", "arn": "arn:aws:iam::111122223333:user/alice", "userName": "alice"},
        "responseElements": {"ConsoleLogin": "Success"}, "additionalEventData": {"MFAUsed": "No"},
        "eventID": "0f6c2a8e-0000-4000-8000-000000000001", "recipientAccountId": ACCOUNT
    });
    let _ = policies.sigma.matching_rules_plain(&event);
}

/// One posture check (Rego with its `# METADATA`) through the check loader, which compiles it
/// and evaluates an empty resource. The file is named after the id it declares, as it must be.
pub fn rego_check(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let declared = text.lines().find_map(|line| line.trim_start_matches(['#', ' ']).strip_prefix("id:"));
    let stem = declared
        .map(str::trim)
        .filter(|id| !id.is_empty() && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'))
        .unwrap_or("fuzz-check");
    let path = format!("posture/fuzz/{stem}.rego");
    let file = PolicyFile::new(path.clone(), text.to_string(), Origin::File(path.into()));
    if let Ok(check) = Check::from_file(&file, "fuzz") {
        assert_eq!(check.meta.id, stem);
    }
}
