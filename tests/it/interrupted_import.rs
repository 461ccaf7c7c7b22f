//! An import killed half-way and run again stores every event exactly once.

use std::time::{Duration, Instant};

use crate::support::{TestDb, skywarden_command};

#[tokio::test]
async fn killed_import_rerun_gives_exact_counts() {
    const EVENTS: usize = 60_000;
    let db = TestDb::new().await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("big-trail.json");
    crate::support::synthetic::generate_events(&file, EVENTS).unwrap();

    let mut child = skywarden_command(&db.url).args(["import", "--json"]).arg(&file).spawn().unwrap();
    // Wait until some batches are committed, then kill without warning.
    let deadline = Instant::now() + Duration::from_secs(120);
    let stored_at_kill = loop {
        let stored = db.count("SELECT count(*) FROM cloudtrail_events").await;
        if stored > 0 {
            child.kill().unwrap();
            child.wait().unwrap();
            break db.count("SELECT count(*) FROM cloudtrail_events").await;
        }
        assert!(child.try_wait().unwrap().is_none(), "the import finished before it could be interrupted");
        assert!(Instant::now() < deadline, "no batch committed within two minutes");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert!((1..EVENTS as i64).contains(&stored_at_kill), "killed mid-import: {stored_at_kill} of {EVENTS} stored");

    let (code, summary) = db.import_json(&[&file]);
    assert_eq!(code, 0, "{summary}");
    assert_eq!(summary["cloudtrail_events"].as_i64().unwrap(), EVENTS as i64 - stored_at_kill, "{summary}");
    assert_eq!(summary["duplicates"].as_i64().unwrap(), stored_at_kill, "{summary}");
    assert_eq!(db.count("SELECT count(*) FROM cloudtrail_events").await, EVENTS as i64);
    assert_eq!(db.count("SELECT count(DISTINCT event_id) FROM cloudtrail_events").await, EVENTS as i64);
}
