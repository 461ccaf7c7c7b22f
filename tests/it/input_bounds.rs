//! Input bounds end to end: `skywarden import` given files built to exhaust memory (gzip bombs,
//! a record or a line without end) refuses each with an error naming the file and where in it,
//! under a memory limit far below what they inflate to, and imports the good file beside them.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::Path;
use std::process::Command;

use flate2::Compression;
use flate2::write::GzEncoder;
use serde_json::Value;

use crate::support::{TestDb, fixture, skywarden_command};

/// What each bomb inflates to.
const BOMB_BYTES: usize = 1 << 30;
/// The importer's data segment limit (heap included): a quarter of one bomb.
const MEMORY_LIMIT: u64 = 256 << 20;
const GOOD_TRAIL: &str = "cloudtrail/111122223333_CloudTrail_us-east-1_20261112T0400Z_a1b2c3d4e5f6a7b8.json.gz";

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut encoder = GzEncoder::new(Vec::new(), Compression::best());
    encoder.write_all(data).unwrap();
    encoder.finish().unwrap()
}

/// `head`, then `filler` up to [`BOMB_BYTES`], gzipped in about 1 MB: one member of 1 MiB of
/// filler compressed once and repeated (gzip readers read concatenated members as one stream).
fn write_bomb(path: &Path, head: &[u8], filler: u8) {
    let chunk = gzip(&vec![filler; 1 << 20]);
    let mut file = BufWriter::new(File::create(path).unwrap());
    file.write_all(&gzip(head)).unwrap();
    for _ in 0..BOMB_BYTES >> 20 {
        file.write_all(&chunk).unwrap();
    }
    file.flush().unwrap();
}

/// `skywarden import --json <args>` under [`MEMORY_LIMIT`]: (exit code, summary).
fn import_limited(db: &TestDb, args: &[&str]) -> (i32, Value) {
    let base = skywarden_command(&db.url);
    let mut command = Command::new("prlimit");
    command.arg(format!("--data={MEMORY_LIMIT}")).arg(base.get_program()).args(["import", "--json"]).args(args);
    for (key, value) in base.get_envs() {
        match value {
            Some(value) => command.env(key, value),
            None => command.env_remove(key),
        };
    }
    let output = command.output().expect("running prlimit skywarden import");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let summary = serde_json::from_str(stdout.trim()).unwrap_or_else(|e| {
        panic!("no JSON summary ({e}); stdout: {stdout}; stderr: {}", String::from_utf8_lossy(&output.stderr))
    });
    (output.status.code().unwrap_or(-1), summary)
}

/// The errors of the file whose name ends with `name`.
fn errors_of(summary: &Value, name: &str) -> Vec<String> {
    summary["errors"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["file"].as_str().unwrap().ends_with(name))
        .map(|e| e["error"].as_str().unwrap().to_string())
        .collect()
}

#[tokio::test]
async fn gzip_bombs_and_endless_records_are_refused_and_the_good_file_imports() {
    let db = TestDb::new().await;
    let dir = tempfile::tempdir().unwrap();
    write_bomb(&dir.path().join("spaces.json.gz"), b"", b' ');
    let trail_head = br#"{"Records":[{"eventName":"ConsoleLogin","pad":""#;
    write_bomb(&dir.path().join("endless-string.json.gz"), trail_head, b'a');
    let flow_head =
        b"version account-id interface-id srcaddr dstaddr srcport dstport protocol packets bytes start end \
        action log-status\n2 111122223333 eni-0a1b2c3d ";
    write_bomb(&dir.path().join("endless-line.log.gz"), flow_head, b'x');
    std::fs::copy(fixture(GOOD_TRAIL), dir.path().join("good.json.gz")).unwrap();

    let (code, summary) = import_limited(&db, &[dir.path().to_str().unwrap()]);
    assert_eq!(code, 2, "partial import: {summary}");
    assert_eq!(summary["files"], 4);
    let bomb = "refused as a likely gzip bomb";
    let spaces = errors_of(&summary, "/spaces.json.gz");
    assert!(
        spaces.len() == 1
            && spaces[0].starts_with("cannot read file: gzip content inflates")
            && spaces[0].contains(bomb)
    );
    let string = errors_of(&summary, "/endless-string.json.gz");
    let offset = br#"{"Records":["#.len();
    let too_large = format!("the record at byte {offset} (line 1) is larger than the limit of {} bytes", 16 << 20);
    assert_eq!(string[0], format!("record 1: {too_large}; skipped"));
    assert!(
        string[1].starts_with("read error after 1 records: gzip content inflates") && string[1].contains(bomb),
        "{string:?}"
    );
    let line = errors_of(&summary, "/endless-line.log.gz");
    let second_line = flow_head.iter().position(|b| *b == b'\n').unwrap() + 1;
    assert_eq!(line.len(), 1, "{line:?}");
    assert!(
        line[0].starts_with(&format!("read error at line 2 (byte {second_line}): gzip content"))
            && line[0].contains(bomb)
    );
    assert!(errors_of(&summary, "/good.json.gz").is_empty(), "{summary}");
    assert_eq!(summary["cloudtrail_events"], 4, "{summary}");
    assert_eq!(db.count("SELECT count(*) FROM cloudtrail_events").await, 4);
}

#[tokio::test]
async fn records_and_lines_over_max_record_mb_are_named_and_the_rest_imports() {
    let db = TestDb::new().await;
    let dir = tempfile::tempdir().unwrap();
    let events: Vec<Value> =
        serde_json::from_slice(&std::fs::read(fixture("cloudtrail/bare-array.json")).unwrap()).unwrap();
    let mut big = events[0].clone();
    big["eventID"] = "big-one".into();
    big["requestParameters"] = serde_json::json!({"policyDocument": "p".repeat(2 << 20)});
    let lines: Vec<String> = [&events[0], &big, &events[1]].iter().map(|e| e.to_string()).collect();
    std::fs::write(dir.path().join("trail.jsonl"), lines.join("\n") + "\n").unwrap();
    let flow = std::fs::read_to_string(fixture("flowlogs/default-v2.log")).unwrap();
    let (header, records) = flow.split_once('\n').unwrap();
    let long_line = format!("{} {}", records.lines().next().unwrap(), "x".repeat(2 << 20));
    std::fs::write(dir.path().join("flows.log"), format!("{header}\n{long_line}\n{records}")).unwrap();

    let (code, summary) = import_limited(&db, &["--max-record-mb", "1", dir.path().to_str().unwrap()]);
    assert_eq!(code, 2, "{summary}");
    let limit = 1 << 20;
    assert_eq!(
        errors_of(&summary, "/trail.jsonl"),
        [format!(
            "record 2: the record at byte {} (line 2) is larger than the limit of {limit} bytes; skipped",
            lines[0].len() + 1
        )]
    );
    assert_eq!(
        errors_of(&summary, "/flows.log"),
        [format!("line 2 (byte {}) is longer than the limit of {limit} bytes; skipped", header.len() + 1)]
    );
    assert_eq!(summary["cloudtrail_events"], 2, "{summary}");
    assert_eq!(summary["flow_records"].as_u64().unwrap(), records.lines().count() as u64, "{summary}");
    assert_eq!(db.count("SELECT count(*) FROM cloudtrail_events WHERE event_id = 'big-one'").await, 0);
}
