//! What a review of the stateful detectors found, end to end: the rare-API baseline as a rollup
//! filled at ingest (and backfilled a month a detection run), SSO permission sets baselined per
//! human, port scans seen from the scanner's own interface, linked by it alone, and from outside one
//! alert per target and day (off by default), `flow-direction` deciding what an instance
//! started, per-run bounds that leave the rest for the next run and say so in detection health,
//! and spans bounded at policy load.

use chrono::{DateTime, Duration, Utc};
use serde_json::{Value, json};
use skywarden::detect::PolicySet;
use skywarden::detect::detectors::rare_api::{self, RareApiCandidates};
use skywarden::detect::detectors::{flow_destinations, port_scan};

use crate::detections_more::{
    ACCOUNT, APP_ENI, Dir, FLOW_HEADER, INTRUDER_IP, TOR_EXIT, alerts, attack_days, benign_weeks, call, callback_files,
    day, flow, import, role_session, scan_flows, user,
};
use crate::support::TestDb;

const RARE: &str = "aws-rare-sensitive-api";
const SCAN: &str = "aws-flow-port-scan";
const DESTINATION: &str = "aws-flow-suspicious-destination";

type RollupRow = (String, String, chrono::NaiveDate, String, String, DateTime<Utc>, DateTime<Utc>);

async fn rollup(db: &TestDb) -> Vec<RollupRow> {
    sqlx::query_as(
        "SELECT account_id, identity, day, event_source, event_name, first_seen, last_seen FROM api_call_days
         ORDER BY 1, 2, 3, 4, 5",
    )
    .fetch_all(&db.pool)
    .await
    .unwrap()
}

#[tokio::test]
async fn the_rare_api_baseline_is_a_rollup_filled_at_ingest_and_backfilled_a_month_a_run() {
    let dir = Dir::new("rollup");
    let weeks = dir.trail("weeks.json", &benign_weeks());
    let attack = dir.trail("attack.json", &attack_days());
    let (in_order, reversed) = (TestDb::new().await, TestDb::new().await);
    import(&in_order, &[], &[&weeks, &attack]);
    import(&reversed, &[], &[&attack]);
    import(&reversed, &[], &[&weeks]);
    let rows = rollup(&in_order).await;
    assert_eq!(rollup(&reversed).await, rows, "the order files come in changes nothing");
    // Role sessions roll up into their role; reads and refusals are history only.
    let ci = format!("arn:aws:sts::{ACCOUNT}:assumed-role/ci-deploy");
    assert!(rows.iter().any(|r| r.1 == ci && r.4 == "CreateRole"));
    assert!(!rows.iter().any(|r| r.1.starts_with(&format!("{ci}/"))));
    let bob = format!("arn:aws:iam::{ACCOUNT}:user/bob");
    assert!(rows.iter().any(|r| r.1 == bob && r.4.is_empty()), "bob's reads are history");
    assert!(!rows.iter().any(|r| r.1 == bob && r.4 == "DescribeInstances"), "but no baseline");
    assert!(!rows.iter().any(|r| r.1 == bob && r.4 == "LeaveOrganization"), "a refused call is no baseline");
    // Re-importing writes nothing new.
    import(&in_order, &[], &[&weeks, &attack]);
    assert_eq!(rollup(&in_order).await, rows);
    // Upgraded with these events stored: the backfill runs a month a detection run, and until
    // it is done no one is judged (every call would look new) and detection health says why.
    sqlx::query("DELETE FROM api_call_days").execute(&in_order.pool).await.unwrap();
    sqlx::query("DELETE FROM alerts WHERE policy_id = $1").bind(RARE).execute(&in_order.pool).await.unwrap();
    sqlx::query(
        "UPDATE api_call_days_backfill SET done_at = NULL, next_month = NULL, months_done = 0, started_at = now()",
    )
    .execute(&in_order.pool)
    .await
    .unwrap();
    let scope = skywarden::detect::Scope::EventsSince(day(35));
    let mut building_runs = 0;
    loop {
        skywarden::detect::run(&in_order.pool, &PolicySet::builtin(), scope).await.unwrap();
        let skip = health_skip(&status(&in_order), RARE).expect("the backfill is in detection health");
        if skip["outstanding"] == false {
            break;
        }
        assert!(skip["note"].as_str().unwrap().contains("baseline still being built"), "{skip}");
        assert!(alerts(&in_order, RARE).await.is_empty(), "no alert on a baseline half built");
        building_runs += 1;
        assert!(building_runs < 12, "a month a run");
    }
    assert!(building_runs >= 2, "the events span two months: {building_runs}");
    assert_eq!(rollup(&in_order).await, rows, "the backfill gives the rollup ingest gives");
    assert_eq!(alerts(&in_order, RARE).await.len(), 1);
    // Detection reads the rollup: bob's alert is the same with the baseline events gone.
    sqlx::query("DELETE FROM alerts").execute(&in_order.pool).await.unwrap();
    sqlx::query("DELETE FROM cloudtrail_events WHERE event_time < $1")
        .bind(day(34))
        .execute(&in_order.pool)
        .await
        .unwrap();
    skywarden::detect::run(&in_order.pool, &PolicySet::builtin(), skywarden::detect::Scope::EventsSince(day(35)))
        .await
        .unwrap();
    let found = alerts(&in_order, RARE).await;
    assert_eq!(found.len(), 1, "{found:?}");
    assert_eq!((found[0].0.as_str(), found[0].2), (bob.as_str(), 40));
}

/// Six users with five weeks of history; on day 35 four of them (p1..p4) create a user in the
/// morning, two (p5, p6) in the evening: each a call new for them.
fn six_principals() -> Vec<Value> {
    let mut records = Vec::new();
    for n in 1..=6 {
        let who = user(&format!("p{n}"));
        for d in 0..35 {
            records.push(call(day(d) + Duration::hours(9), "sts", "GetCallerIdentity", &who, "84.128.1.2", None));
        }
        let hour = if n <= 4 { 9 } else { 20 };
        let at = day(35) + Duration::hours(hour) + Duration::minutes(n);
        records.push(call(at, "iam", "CreateUser", &who, "84.128.1.2", None));
    }
    records
}

/// Candidates of the day-35 events of `records` (in time order), keeping at most `max`.
fn noted(policies: &PolicySet, records: &[Value], max: usize) -> RareApiCandidates {
    let mut events: Vec<skywarden::detect::PolicyEvent> = records
        .iter()
        .map(|r| skywarden::ingest::cloudtrail::CloudTrailEvent::parse(&r.to_string(), None).unwrap())
        .map(|parsed| skywarden::detect::PolicyEvent::from_parsed(parsed, None))
        .filter(|e| e.event_time >= day(35))
        .collect();
    events.sort_by_key(|e| e.event_time);
    let mut candidates = RareApiCandidates::with_max(max);
    events.iter().for_each(|e| candidates.note(&policies.detectors, e));
    candidates
}

/// One run of the rare-API detector as detection runs it: its state changes written after it.
async fn rare_run(db: &TestDb, policies: &PolicySet, candidates: &RareApiCandidates) -> Vec<skywarden::model::Finding> {
    let mut state = skywarden::detect::health::StateChanges::default();
    let found = rare_api::findings(&db.pool, &policies.detectors, candidates, &mut state).await.unwrap();
    state.apply(&db.pool).await.unwrap();
    found
}

/// (subject, evidence, title, details) of findings, in order: what makes the alerts.
fn fingerprint(found: &[skywarden::model::Finding]) -> Vec<(String, String, String, String)> {
    let mut prints: Vec<_> = found
        .iter()
        .map(|f| (f.subject.clone(), f.evidence_id.clone(), f.title.clone(), f.details.to_string()))
        .collect();
    prints.sort();
    prints
}

async fn rare_backlog(db: &TestDb) -> Vec<(String, String)> {
    sqlx::query_as("SELECT policy_id, cursor FROM detection_backlog WHERE cursor IS NOT NULL ORDER BY 1")
        .fetch_all(&db.pool)
        .await
        .unwrap()
}

fn arn(name: &str) -> String {
    format!("arn:aws:iam::{ACCOUNT}:user/{name}")
}

#[tokio::test]
async fn principals_beyond_the_per_run_bound_wait_in_the_backlog_and_give_the_uncapped_alerts() {
    let records = six_principals();
    let dir = Dir::new("rare-bound");
    let trail = dir.trail("six.json", &records);
    let db = TestDb::new().await;
    import(&db, &["--no-detect"], &[&trail]);
    let policies = PolicySet::builtin();
    let uncapped = rare_run(&db, &policies, &noted(&policies, &records, 100)).await;
    assert_eq!(uncapped.len(), 6, "each user's first CreateUser");
    assert!(rare_backlog(&db).await.is_empty());

    // A bound of four: the morning's four are judged, the evening's two wait (their account's
    // span, from its start) and detection health says so.
    let first = rare_run(&db, &policies, &noted(&policies, &records, 4)).await;
    let subjects: Vec<String> = fingerprint(&first).into_iter().map(|f| f.0).collect();
    assert_eq!(subjects, ["p1", "p2", "p3", "p4"].map(arn));
    let key = format!("{RARE}#principals/{ACCOUNT}");
    assert_eq!(rare_backlog(&db).await, [(key.clone(), String::new())]);
    let skip = health_skip(&status(&db), RARE).expect("the backlog is in detection health");
    assert_eq!((skip["outstanding"].as_bool(), skip["last_skipped"].as_i64()), (Some(true), Some(2)), "{skip}");
    // A run with room for one (nothing new) judges p5 and moves the cursor past it; the next p6.
    let second = rare_run(&db, &policies, &RareApiCandidates::with_max(1)).await;
    assert_eq!(fingerprint(&second).into_iter().map(|f| f.0).collect::<Vec<_>>(), [arn("p5")]);
    assert_eq!(rare_backlog(&db).await, [(key, arn("p5"))]);
    let skip = health_skip(&status(&db), RARE).unwrap();
    assert_eq!((skip["outstanding"].as_bool(), skip["last_skipped"].as_i64()), (Some(true), Some(1)), "{skip}");
    let third = rare_run(&db, &policies, &RareApiCandidates::with_max(1)).await;
    assert_eq!(fingerprint(&third).into_iter().map(|f| f.0).collect::<Vec<_>>(), [arn("p6")]);
    assert!(rare_backlog(&db).await.is_empty(), "drained");
    assert_eq!(health_skip(&status(&db), RARE).unwrap()["outstanding"], false);
    assert!(rare_run(&db, &policies, &RareApiCandidates::with_max(1)).await.is_empty());
    // The capped runs together found what the uncapped run found.
    let capped: Vec<_> = first.into_iter().chain(second).chain(third).collect();
    assert_eq!(fingerprint(&capped), fingerprint(&uncapped));
    let totals = skywarden::detect::health::skips(&db.pool).await.unwrap();
    assert_eq!(totals.iter().find(|s| s.policy_id == RARE).unwrap().skipped_total, 2, "each principal counted once");
}

#[tokio::test]
async fn a_run_whose_alerts_cannot_be_stored_keeps_the_backlog_for_the_next_which_alerts_once() {
    let records = six_principals();
    let dir = Dir::new("rare-flush");
    let trail = dir.trail("six.json", &records);
    let db = TestDb::new().await;
    import(&db, &["--no-detect"], &[&trail]);
    let policies = PolicySet::builtin();
    rare_run(&db, &policies, &noted(&policies, &records, 4)).await;
    let left = rare_backlog(&db).await;
    assert_eq!(left.len(), 1);
    // The alert store refuses every alert: the run fails, and the backlog stays as it was.
    for statement in [
        "CREATE FUNCTION refuse_alerts() RETURNS trigger LANGUAGE plpgsql AS $$
         BEGIN RAISE EXCEPTION 'the alert store is down'; END $$",
        "CREATE TRIGGER refuse_alerts BEFORE INSERT OR UPDATE ON alerts FOR EACH ROW EXECUTE FUNCTION refuse_alerts()",
    ] {
        sqlx::query(statement).execute(&db.pool).await.unwrap();
    }
    let now = skywarden::detect::runner::database_now(&db.pool).await.unwrap();
    let failed = skywarden::detect::run(&db.pool, &policies, skywarden::detect::Scope::IngestedSince(now)).await;
    let error = format!("{:#}", anyhow::Error::from(failed.expect_err("storing the alerts fails")));
    assert!(error.contains("the alert store is down"), "{error}");
    assert_eq!(rare_backlog(&db).await, left, "nothing judged was stored: the backlog is kept");
    assert_eq!(health_skip(&status(&db), RARE).unwrap()["outstanding"], true);
    // The store is back: the next run (nothing new) raises the two alerts left, once.
    sqlx::query("DROP TRIGGER refuse_alerts ON alerts").execute(&db.pool).await.unwrap();
    for _ in 0..2 {
        let now = skywarden::detect::runner::database_now(&db.pool).await.unwrap();
        skywarden::detect::run(&db.pool, &policies, skywarden::detect::Scope::IngestedSince(now)).await.unwrap();
    }
    let found = alerts(&db, RARE).await;
    let raised: Vec<(&str, i64)> = found.iter().map(|(subject, _, count, ..)| (subject.as_str(), *count)).collect();
    assert_eq!(raised, [(arn("p5").as_str(), 1), (arn("p6").as_str(), 1)]);
    assert!(rare_backlog(&db).await.is_empty());
    assert_eq!(health_skip(&status(&db), RARE).unwrap()["outstanding"], false);
}

#[tokio::test]
async fn backlog_left_longer_than_its_expiry_is_dropped_and_detection_health_says_so() {
    let records = six_principals();
    let dir = Dir::new("rare-expiry");
    let trail = dir.trail("six.json", &records);
    let db = TestDb::new().await;
    import(&db, &["--no-detect"], &[&trail]);
    let policies = PolicySet::builtin();
    rare_run(&db, &policies, &noted(&policies, &records, 4)).await;
    assert_eq!(rare_backlog(&db).await.len(), 1);
    // A fresh piece of work is kept by a run with no room for it ...
    let busy = noted(&policies, &records[..36], 1);
    rare_run(&db, &policies, &busy).await;
    assert_eq!(rare_backlog(&db).await.len(), 1);
    // ... one older than the expiry is dropped unjudged, as a skip.
    let days = skywarden::detect::health::BACKLOG_MAX_DAYS + 1;
    sqlx::query("UPDATE detection_backlog SET added_at = now() - make_interval(days => $1)")
        .bind(days)
        .execute(&db.pool)
        .await
        .unwrap();
    rare_run(&db, &policies, &busy).await;
    assert!(rare_backlog(&db).await.is_empty(), "expired");
    // Counted in principals (p5 and p6), apart from the skip: the next run with nothing left
    // clears the skip, not the record of what was dropped.
    rare_run(&db, &policies, &RareApiCandidates::with_max(1)).await;
    let skip = health_skip(&status(&db), RARE).unwrap();
    assert_eq!(skip["outstanding"], false, "{skip}");
    assert_eq!((skip["last_dropped"].as_i64(), skip["dropped_total"].as_i64()), (Some(2), Some(2)), "{skip}");
    assert!(skip["last_dropped_at"].is_string(), "{skip}");
    assert!(skip["dropped_note"].as_str().unwrap().contains("2 principals dropped unevaluated"), "{skip}");
    assert_eq!(skip["skipped_total"], 2, "the dropped principals are not counted again as skipped: {skip}");
}

/// (key, cursor) rows of the rare-API backlog per account key.
async fn rare_rows_per_key(db: &TestDb) -> Vec<(String, i64)> {
    sqlx::query_as("SELECT policy_id, count(*) FROM detection_backlog WHERE cursor IS NOT NULL GROUP BY 1 ORDER BY 1")
        .fetch_all(&db.pool)
        .await
        .unwrap()
}

fn subjects(found: &[skywarden::model::Finding]) -> std::collections::BTreeSet<String> {
    found.iter().map(|f| f.subject.clone()).collect()
}

#[tokio::test]
async fn under_sustained_overflow_the_backlog_gets_its_share_stays_bounded_and_drains() {
    let records = six_principals();
    let dir = Dir::new("rare-sustained");
    let trail = dir.trail("six.json", &records);
    let db = TestDb::new().await;
    import(&db, &["--no-detect"], &[&trail]);
    let policies = PolicySet::builtin();
    // Every run notes the same six again (a bound of four): the noted ones do not take the
    // whole budget once there is a backlog, so p5 and p6 are judged while it goes on.
    let mut judged = std::collections::BTreeSet::new();
    for run in 0..5 {
        judged.extend(subjects(&rare_run(&db, &policies, &noted(&policies, &records, 4)).await));
        let rows = rare_rows_per_key(&db).await;
        assert!(rows.iter().all(|(_, n)| *n <= 2), "run {run}: at most a piece being drained and one new: {rows:?}");
        assert_eq!(rows.len(), 1, "run {run}: one account");
    }
    let all: std::collections::BTreeSet<String> = (1..=6).map(|n| arn(&format!("p{n}"))).collect();
    assert_eq!(judged, all, "no one starved");
    // The import stops: the backlog drains.
    for _ in 0..4 {
        rare_run(&db, &policies, &RareApiCandidates::with_max(4)).await;
    }
    assert!(rare_backlog(&db).await.is_empty(), "drained");
    let skips = skywarden::detect::health::skips(&db.pool).await.unwrap();
    assert!(!skips.iter().find(|s| s.policy_id == RARE).unwrap().outstanding);
}

#[tokio::test]
async fn principals_noted_while_the_baseline_is_built_are_judged_once_it_is() {
    let records = six_principals();
    let dir = Dir::new("rare-building");
    let trail = dir.trail("six.json", &records);
    let db = TestDb::new().await;
    import(&db, &["--no-detect"], &[&trail]);
    sqlx::query(
        "UPDATE api_call_days_backfill SET done_at = NULL, next_month = NULL, months_done = 0, started_at = now()",
    )
    .execute(&db.pool)
    .await
    .unwrap();
    let policies = PolicySet::builtin();
    // Noted: p1..p4 within the bound, p5 and p6 beyond it; none judged on half a baseline.
    assert!(rare_run(&db, &policies, &noted(&policies, &records, 4)).await.is_empty());
    let mut judged = std::collections::BTreeSet::new();
    for _ in 0..12 {
        judged.extend(subjects(&rare_run(&db, &policies, &RareApiCandidates::with_max(100)).await));
        if rare_backlog(&db).await.is_empty() {
            break;
        }
    }
    let all: std::collections::BTreeSet<String> = (1..=6).map(|n| arn(&format!("p{n}"))).collect();
    assert_eq!(judged, all, "the noted ones too, not only those beyond the bound");
}

#[tokio::test]
async fn switching_the_rare_api_detector_off_drops_its_backlog_and_says_how_much() {
    let records = six_principals();
    let dir = Dir::new("rare-off");
    let trail = dir.trail("six.json", &records);
    let db = TestDb::new().await;
    import(&db, &["--no-detect"], &[&trail]);
    rare_run(&db, &PolicySet::builtin(), &noted(&PolicySet::builtin(), &records, 4)).await;
    assert_eq!(rare_backlog(&db).await.len(), 1);
    let off = dir.0.join("off");
    std::fs::create_dir_all(&off).unwrap();
    std::fs::write(off.join("detectors.yaml"), "rare_sensitive_api:\n  enabled: false\n").unwrap();
    let off = PolicySet::load(&off);
    assert!(rare_run(&db, &off, &RareApiCandidates::with_max(4)).await.is_empty());
    assert!(rare_backlog(&db).await.is_empty());
    let skips = skywarden::detect::health::skips(&db.pool).await.unwrap();
    let skip = skips.iter().find(|s| s.policy_id == RARE).unwrap();
    assert_eq!(skip.last_dropped, 2, "{skip:?}");
    assert!(skip.dropped_note.as_deref().unwrap().contains("disabled"), "{skip:?}");
}

const SSO_ROLE: &str = "AWSReservedSSO_AdministratorAccess_0123456789abcdef";

#[tokio::test]
async fn each_human_of_an_sso_permission_set_has_a_baseline_of_their_own() {
    let (alice, mallory) = (role_session(SSO_ROLE, "alice@example.com"), role_session(SSO_ROLE, "mallory@example.com"));
    let mut records = Vec::new();
    for d in 0..35 {
        let morning = day(d) + Duration::hours(9);
        records.push(call(morning, "sts", "GetCallerIdentity", &alice, "84.128.1.2", None));
        records.push(call(morning, "sts", "GetCallerIdentity", &mallory, "84.128.1.3", None));
        if d % 3 == 0 {
            records.push(call(morning + Duration::minutes(5), "iam", "CreateUser", &alice, "84.128.1.2", None));
        }
    }
    // Day 35: alice creates a user as ever; mallory, with the same permission set, for the first time.
    let at = day(35) + Duration::hours(10);
    records.push(call(at, "iam", "CreateUser", &alice, "84.128.1.2", None));
    records.push(call(at + Duration::minutes(1), "iam", "CreateUser", &mallory, "84.128.1.3", None));
    let dir = Dir::new("sso");
    let trail = dir.trail("sso.json", &records);
    let db = TestDb::new().await;
    import(&db, &[], &[&trail]);
    let found = alerts(&db, RARE).await;
    let identities: Vec<&Value> = found.iter().map(|(.., details, _)| &details["identity"]).collect();
    assert_eq!(identities, [&json!(format!("arn:aws:sts::{ACCOUNT}:assumed-role/{SSO_ROLE}/mallory@example.com"))]);
    assert_eq!(found[0].3["apis"][0]["api"], "iam:CreateUser");
}

/// A flow record with TCP flags and direction (the version 5 fields), 1 packet unless told.
const V5_HEADER: &str = "version account-id interface-id srcaddr dstaddr srcport dstport protocol packets bytes start end action log-status tcp-flags flow-direction\n";

#[allow(clippy::too_many_arguments)]
fn v5(
    at: DateTime<Utc>,
    eni: &str,
    (src, sport): (&str, u32),
    (dst, dport): (&str, u32),
    (packets, bytes): (u32, u32),
    flags: u32,
    direction: &str,
) -> String {
    let end = at + Duration::seconds(50);
    format!(
        "5 {ACCOUNT} {eni} {src} {dst} {sport} {dport} 6 {packets} {bytes} {} {} ACCEPT OK {flags} {direction}\n",
        at.timestamp(),
        end.timestamp()
    )
}

async fn resources(db: &TestDb, policy: &str) -> Vec<(String, Vec<String>)> {
    sqlx::query_as("SELECT split_part(dedup_key, '@', 1), resources FROM alerts WHERE policy_id = $1 ORDER BY 1")
        .bind(policy)
        .fetch_all(&db.pool)
        .await
        .unwrap()
}

#[tokio::test]
async fn a_scan_is_seen_from_the_scanner_s_own_interface_and_links_only_it() {
    let hour = day(70) + Duration::hours(2);
    // Only the scanners' subnet logs flows: their probes leave ACCEPTed and nothing answers.
    let mut old = String::from(FLOW_HEADER);
    for host in 1..=40u32 {
        let at = hour + Duration::seconds(i64::from(host) * 30);
        // Version 2: one SYN and a retry, no payload.
        old += &flow(
            at,
            "eni-0scan000000000001",
            ("10.0.1.25", 49_000 + host),
            (&format!("10.8.0.{host}"), 445),
            "ACCEPT",
        )
        .replace(" 3 180 ", " 2 120 ");
    }
    let mut text = String::from(V5_HEADER);
    for port in 1..=40u32 {
        let at = hour + Duration::seconds(i64::from(port) * 20);
        // Version 5: SYN alone, leaving the scanner's interface (ports above the source port too).
        text +=
            &v5(at, "eni-0scan000000000002", ("10.0.1.26", 41_000), ("10.9.9.9", 40_980 + port), (1, 60), 2, "egress");
    }
    // Benign: a monitoring host that really talks to forty web servers (SYN and FIN, payload).
    for host in 1..=40u32 {
        let at = hour + Duration::seconds(i64::from(host) * 30);
        let target = format!("10.7.0.{host}");
        text += &v5(at, "eni-0mon000000000001", ("10.0.1.40", 50_000 + host), (&target, 443), (12, 4_800), 3, "egress");
    }
    let dir = Dir::new("scanner-side");
    let (old, new) = (dir.write("v2.log", &old), dir.write("v5.log", &text));
    let db = TestDb::new().await;
    import(&db, &[], &[&old, &new]);
    let found = resources(&db, SCAN).await;
    assert_eq!(
        found,
        [
            ("10.0.1.25".to_string(), vec!["eni-0scan000000000001".to_string()]),
            ("10.0.1.26".to_string(), vec!["eni-0scan000000000002".to_string()]),
        ]
    );

    // Where the targets log too, only the scanner's interface is linked; the victims' are told.
    let sweep_db = TestDb::new().await;
    let flows = dir.write("sweep.log", &scan_flows());
    import(&sweep_db, &[], &[&flows]);
    let found = resources(&sweep_db, SCAN).await;
    assert_eq!(found, [("10.0.1.25".to_string(), vec![APP_ENI.to_string()])]);
    let details = &alerts(&sweep_db, SCAN).await[0].3;
    assert_eq!(details["scanner_interfaces"], json!([APP_ENI]));
    let targets = details["target_interfaces"].as_array().unwrap();
    assert!(targets.len() >= 24 && !targets.contains(&json!(APP_ENI)), "{details}");
}

#[tokio::test]
async fn inbound_scans_are_one_alert_per_target_interface_and_day_when_switched_on() {
    let hour = day(71) + Duration::hours(1);
    let mut text = String::from(FLOW_HEADER);
    for scanner in 1..=30u32 {
        for port in 1..=(25 + scanner) {
            let at = hour + Duration::minutes(i64::from(scanner)) + Duration::seconds(i64::from(port));
            let source = format!("198.51.100.{scanner}");
            text += &flow(at, "eni-0web0000000000001", (&source, 61_000), ("10.0.1.5", port), "REJECT");
        }
    }
    let dir = Dir::new("inbound");
    let flows = dir.write("inbound.log", &text);
    let db = TestDb::new().await;
    import(&db, &[], &[&flows]);
    assert!(alerts(&db, SCAN).await.is_empty(), "off by default");
    let policies = dir.0.join("policies");
    std::fs::create_dir_all(&policies).unwrap();
    std::fs::write(policies.join("detectors.yaml"), "flow_port_scan:\n  include_inbound: true\n").unwrap();
    let on = TestDb::new().await;
    import(&on, &["--policies", &policies.display().to_string()], &[&flows]);
    let found = alerts(&on, SCAN).await;
    assert_eq!(found.len(), 1, "{found:?}");
    let (subject, severity, _, details, _) = &found[0];
    assert_eq!((subject.as_str(), severity.as_str()), ("inbound:eni-0web0000000000001", "low"));
    assert_eq!(details["scanner_count"], 30);
    assert_eq!(details["scanners"][0]["source"], "198.51.100.30", "the busiest first");
    assert_eq!(details["scanners"].as_array().unwrap().len(), 25);
    assert!(resources(&on, SCAN).await[0].1.is_empty(), "the target is told, not linked");
}

#[tokio::test]
async fn flow_direction_decides_what_an_instance_started_where_records_carry_it() {
    let dir = Dir::new("direction");
    let at = day(72) + Duration::hours(3);
    let trail = dir.trail("trail.json", &[call(at, "cloudtrail", "StopLogging", &user("bob"), INTRUDER_IP, None)]);
    let mut text = String::from(V5_HEADER);
    // The app server calls the intruder's high port from a lower one: the ports would say
    // "a reply", the direction and the SYN say otherwise.
    text +=
        &v5(at + Duration::hours(1), APP_ENI, ("10.0.1.25", 40_000), (INTRUDER_IP, 50_000), (9, 2_000), 2, "egress");
    // The web server answers the intruder (SYN-ACK): not its own connection.
    let web = "eni-0web0000000000001";
    text += &v5(at + Duration::hours(1), web, ("10.0.1.5", 443), (INTRUDER_IP, 51_515), (9, 9_000), 18, "egress");
    let flows = dir.write("v5.log", &text);
    let db = TestDb::new().await;
    import(&db, &[], &[&trail, &flows]);
    let found = alerts(&db, DESTINATION).await;
    let subjects: Vec<&str> = found.iter().map(|(subject, ..)| subject.as_str()).collect();
    assert_eq!(subjects, [format!("{APP_ENI}>{INTRUDER_IP}")]);
}

fn health_skip(status: &Value, policy: &str) -> Option<Value> {
    status["detection"]["skips"].as_array()?.iter().find(|s| s["policy_id"] == policy).cloned()
}

fn status(db: &TestDb) -> Value {
    let output = db.skywarden(&["accounts", "status", "--json"]);
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let first = String::from_utf8_lossy(&output.stdout).lines().next().unwrap().to_string();
    serde_json::from_str(&first).unwrap()
}

#[tokio::test]
async fn a_bounded_port_scan_run_leaves_the_rest_for_the_next_and_says_so() {
    // Two scanners in two different hours.
    let dir = Dir::new("scan-bound");
    let mut text = String::from(FLOW_HEADER);
    for (n, scanner) in ["10.0.1.25", "10.0.1.26"].iter().enumerate() {
        let hour = day(73) + Duration::hours(n as i64 * 3);
        for host in 1..=30u32 {
            let target = format!("10.0.2.{host}");
            let at = hour + Duration::seconds(i64::from(host));
            text += &flow(at, &format!("eni-0scan00000000000{n}"), (scanner, 49_000 + host), (&target, 445), "REJECT");
        }
    }
    let flows = dir.write("scans.log", &text);
    let db = TestDb::new().await;
    import(&db, &["--no-detect"], &[&flows]);
    let policies = PolicySet::builtin();
    let hours = [day(73), day(73) + Duration::hours(3)];
    let first = port_scan::findings_bounded(&db.pool, &policies.detectors, &hours, 1).await.unwrap();
    assert_eq!(first.iter().map(|f| f.subject.as_str()).collect::<Vec<_>>(), ["10.0.1.25"]);
    let skip = health_skip(&status(&db), SCAN).expect("the deferral is in detection health");
    assert_eq!((skip["outstanding"].as_bool(), skip["last_skipped"].as_i64()), (Some(true), Some(1)), "{skip}");
    // The next run (no new records) does the hour left, and is clear.
    let next = port_scan::findings_bounded(&db.pool, &policies.detectors, &[], 1).await.unwrap();
    assert_eq!(next.iter().map(|f| f.subject.as_str()).collect::<Vec<_>>(), ["10.0.1.26"]);
    let skip = health_skip(&status(&db), SCAN).unwrap();
    assert_eq!(skip["outstanding"], false, "{skip}");
    assert!(port_scan::findings_bounded(&db.pool, &policies.detectors, &[], 1).await.unwrap().is_empty());
    let metrics = skywarden::detect::health::skips(&db.pool).await.unwrap();
    assert_eq!(metrics[0].skipped_total, 1);
}

#[tokio::test]
async fn a_bounded_suspicious_destination_run_resumes_where_it_stopped() {
    let dir = Dir::new("dest-bound");
    let (trail, flows) = callback_files(&dir);
    let db = TestDb::new().await;
    import(&db, &[], &[&trail, &flows]);
    let full = alerts(&db, DESTINATION).await;
    assert_eq!(full[0].2, 2, "two hours of callbacks");
    let policies = PolicySet::builtin();
    let since = Some(day(50));
    let first = flow_destinations::findings_bounded(&db.pool, &policies.detectors, &[], since, 1).await.unwrap();
    assert_eq!(first.len(), 1);
    let skip = health_skip(&status(&db), DESTINATION).expect("the stop is in detection health");
    assert_eq!(skip["outstanding"], true, "{skip}");
    // Nothing new since: the next run still does the hour left.
    let later = Some(chrono::Utc::now());
    let next = flow_destinations::findings_bounded(&db.pool, &policies.detectors, &[], later, 1).await.unwrap();
    assert_eq!(next.len(), 1);
    assert_ne!(next[0].evidence_id, first[0].evidence_id);
    assert_eq!(health_skip(&status(&db), DESTINATION).unwrap()["outstanding"], false);
    assert!(
        flow_destinations::findings_bounded(&db.pool, &policies.detectors, &[], later, 1).await.unwrap().is_empty()
    );
}

#[tokio::test]
async fn spans_out_of_bounds_are_policy_problems_naming_the_field() {
    let dir = Dir::new("bounds");
    let policies = dir.0.join("policies");
    std::fs::create_dir_all(&policies).unwrap();
    std::fs::write(
        policies.join("detectors.yaml"),
        "account_hijacking:\n  baseline_days: 100000000000000\nflow_suspicious_destination:\n  incident_reach_days: -3\n",
    )
    .unwrap();
    let db = TestDb::new().await;
    let output = db.skywarden(&["policies", "--policies", &policies.display().to_string(), "lint"]);
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(!output.status.success(), "{stdout}");
    assert!(
        stdout.contains("account_hijacking.baseline_days: 100000000000000 is not between 1 and 3650 days"),
        "{stdout}"
    );
    assert!(stdout.contains("flow_suspicious_destination.incident_reach_days: -3"), "{stdout}");
    // Detection with the broken file allowed runs on the defaults instead of panicking.
    let trail = dir.trail("t.json", &[call(day(1), "iam", "CreateUser", &user("bob"), INTRUDER_IP, None)]);
    let mut args = vec!["import", "--json", "--policies"];
    let folder = policies.display().to_string();
    let path = trail.display().to_string();
    args.extend([folder.as_str(), "--allow-broken-policies", path.as_str()]);
    let output = db.skywarden(&args);
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
}

/// Flow records of one TCP connection over several aggregation intervals, as both ends' own
/// interface logs it: (minutes after `at`, the opener's flags, the answerer's flags) per interval.
fn connection_records(
    at: DateTime<Utc>,
    eni: &str,
    (opener, answerer): ((&str, u32), (&str, u32)),
    instance_opened: bool,
    intervals: &[(i64, u32, u32)],
) -> String {
    let mut text = String::new();
    for (minutes, opener_flags, answerer_flags) in intervals {
        let t = at + Duration::minutes(*minutes);
        let (out_dir, in_dir) = if instance_opened { ("egress", "ingress") } else { ("ingress", "egress") };
        // The handshake's interval: one packet each way (a connection still opening at its end).
        let size = |flags: u32| if flags & 2 == 2 { (1, 60) } else { (12, 2_400) };
        text += &v5(t, eni, opener, answerer, size(*opener_flags), *opener_flags, out_dir);
        text += &v5(t, eni, answerer, opener, size(*answerer_flags), *answerer_flags, in_dir);
    }
    text
}

#[tokio::test]
async fn a_server_answering_a_tor_client_is_not_a_connection_to_tor_but_an_instance_opening_one_is() {
    let dir = Dir::new("tor-server");
    let tor = dir.write("tor.txt", &format!("{TOR_EXIT}\n"));
    let at = day(74) + Duration::hours(5);
    let mut text = String::from(V5_HEADER);
    // A Tor user's long download from a server on a high port, over three intervals and two
    // hours: the SYN / SYN-ACK, then data (flags 0), then the FIN. Its replies leave the server's
    // interface as egress, to a port below the server's: neither direction nor ports tell.
    let web = "eni-0web0000000000001";
    let intervals = [(0, 2, 18), (40, 0, 0), (70, 1, 1)];
    text += &connection_records(at, web, ((TOR_EXIT, 40_100), ("10.0.1.5", 50_443)), false, &intervals);
    // The app server opens a connection to the exit's high port (the ports would say "a reply").
    text += &connection_records(at, APP_ENI, (("10.0.1.25", 40_000), (TOR_EXIT, 50_000)), true, &intervals);
    let flows = dir.write("v5.log", &text);
    let db = TestDb::new().await;
    import(&db, &["--tor-exits", &tor.display().to_string()], &[&flows]);
    let found = alerts(&db, DESTINATION).await;
    let subjects: Vec<(&str, i64)> = found.iter().map(|(subject, _, count, ..)| (subject.as_str(), *count)).collect();
    let app = format!("{APP_ENI}>{TOR_EXIT}");
    assert_eq!(subjects, [(app.as_str(), 2)], "the app's connection, both hours; the server's answers none");
}

#[tokio::test]
async fn long_lived_connections_keepalives_and_busy_nat_traffic_are_not_port_scans() {
    let at = day(75) + Duration::hours(2);
    let mut text = String::from(V5_HEADER);
    // A NAT-like address opening connections to 40 services of 30 hosts: each is answered, and
    // many are still opening at an interval's end (the SYN alone on the client's side there).
    for n in 0..40u32 {
        let server = format!("10.7.0.{}", n % 30 + 1);
        let client = ("10.0.1.50", 33_000 + n);
        let intervals = [(0, 2, 18), (10, 0, 0), (20, 0, 0), (30, 1, 1)];
        text += &connection_records(at, "eni-0nat000000000001", (client, (&server, 8_000 + n)), true, &intervals);
    }
    // A client keeping 30 connections to 30 hosts alive: later intervals carry no flags (a known
    // 0), one packet of keepalive each.
    for n in 0..30u32 {
        let server = format!("10.6.0.{}", n + 1);
        let t = at + Duration::minutes(i64::from(n % 5));
        text += &v5(t, "eni-0kee000000000001", ("10.0.1.60", 41_000 + n), (&server, 5_432), (1, 40), 0, "egress");
        text += &v5(t, "eni-0kee000000000001", (&server, 5_432), ("10.0.1.60", 41_000 + n), (1, 40), 0, "ingress");
    }
    // The scanner: SYN alone to 30 ports, no answer logged. It alerts.
    for port in 1..=30u32 {
        let t = at + Duration::seconds(i64::from(port));
        text += &v5(t, "eni-0scan000000000003", ("10.0.1.70", 45_000), ("10.0.9.9", port), (1, 44), 2, "egress");
    }
    let dir = Dir::new("scan-negatives");
    let flows = dir.write("v5.log", &text);
    let db = TestDb::new().await;
    import(&db, &[], &[&flows]);
    let found = resources(&db, SCAN).await;
    assert_eq!(found, [("10.0.1.70".to_string(), vec!["eni-0scan000000000003".to_string()])]);
}

async fn backlog(db: &TestDb, policy: &str) -> Vec<DateTime<Utc>> {
    sqlx::query_scalar("SELECT hour FROM detection_backlog WHERE policy_id = $1 ORDER BY hour")
        .bind(policy)
        .fetch_all(&db.pool)
        .await
        .unwrap()
}

#[tokio::test]
async fn a_backtest_changes_no_backlog_and_a_switched_off_detector_forgets_its_own() {
    let dir = Dir::new("scan-readonly");
    let mut text = String::from(FLOW_HEADER);
    for host in 1..=30u32 {
        let at = day(76) + Duration::seconds(i64::from(host));
        text += &flow(
            at,
            "eni-0scan000000000009",
            ("10.0.1.25", 49_000 + host),
            (&format!("10.0.2.{host}"), 445),
            "REJECT",
        );
    }
    let flows = dir.write("scans.log", &text);
    let db = TestDb::new().await;
    import(&db, &["--no-detect"], &[&flows]);
    // An earlier, capped run left the hour and said so.
    skywarden::detect::health::defer(&db.pool, SCAN, &[day(76)], None).await.unwrap();
    skywarden::detect::health::record_skip(&db.pool, SCAN, 1, 1, "left").await.unwrap();
    let policies = PolicySet::builtin();
    let scope = skywarden::detect::Scope::EventsSince(day(90));
    let (found, _) = skywarden::detect::evaluate(&db.pool, &policies, scope, Some(SCAN)).await.unwrap();
    assert_eq!(found.len(), 1, "the backtest sees the hour left");
    assert_eq!(backlog(&db, SCAN).await, [day(76)], "and leaves it for the run that stores alerts");
    assert_eq!(health_skip(&status(&db), SCAN).unwrap()["outstanding"], true);

    // Switched off, the detector's backlog and skip go.
    let off = dir.0.join("off");
    std::fs::create_dir_all(&off).unwrap();
    std::fs::write(off.join("detectors.yaml"), "flow_port_scan:\n  enabled: false\n").unwrap();
    let off = PolicySet::load(&off);
    skywarden::detect::run(&db.pool, &off, scope).await.unwrap();
    assert!(backlog(&db, SCAN).await.is_empty());
    assert_eq!(health_skip(&status(&db), SCAN).unwrap()["outstanding"], false);
    assert!(alerts(&db, SCAN).await.is_empty());
}

#[tokio::test]
async fn hours_deferred_again_are_counted_once_in_the_skip_total() {
    let dir = Dir::new("scan-total");
    let mut text = String::from(FLOW_HEADER);
    let scanners = ["10.0.1.25", "10.0.1.26", "10.0.1.27"];
    for (n, scanner) in scanners.iter().enumerate() {
        let hour = day(77) + Duration::hours(n as i64 * 3);
        for host in 1..=30u32 {
            let at = hour + Duration::seconds(i64::from(host));
            let target = format!("10.0.2.{host}");
            text += &flow(at, &format!("eni-0scan00000000000{n}"), (scanner, 49_000 + host), (&target, 445), "REJECT");
        }
    }
    let flows = dir.write("scans.log", &text);
    let db = TestDb::new().await;
    import(&db, &["--no-detect"], &[&flows]);
    let policies = PolicySet::builtin();
    let hours: Vec<DateTime<Utc>> = (0..3).map(|n| day(77) + Duration::hours(n * 3)).collect();
    let mut subjects = Vec::new();
    for run in 0..3 {
        let found = port_scan::findings_bounded(&db.pool, &policies.detectors, if run == 0 { &hours } else { &[] }, 1);
        subjects.extend(found.await.unwrap().into_iter().map(|f| f.subject));
    }
    assert_eq!(subjects, scanners);
    // Two hours left by the first run, one of them left again by the second: two in all.
    let skips = skywarden::detect::health::skips(&db.pool).await.unwrap();
    assert_eq!((skips[0].skipped_total, skips[0].last_skipped, skips[0].outstanding), (2, 1, false));
}

/// Version 5 with the packet's own addresses (`pkt-srcaddr`, `pkt-dstaddr`).
const PKT_HEADER: &str = "version account-id interface-id srcaddr dstaddr srcport dstport protocol packets bytes start end action log-status tcp-flags flow-direction pkt-srcaddr pkt-dstaddr\n";

/// An instance's SYN as logged where the record's destination is not the packet's.
fn through(
    at: DateTime<Utc>,
    eni: &str,
    (src, sport): (&str, u32),
    dst: &str,
    (pkt_dst, dport): (&str, u32),
) -> String {
    format!(
        "5 {ACCOUNT} {eni} {src} {dst} {sport} {dport} 6 1 60 {} {} ACCEPT OK 2 egress {src} {pkt_dst}\n",
        at.timestamp(),
        (at + Duration::seconds(50)).timestamp()
    )
}

#[tokio::test]
async fn connections_to_an_incident_s_address_are_judged_by_the_packet_s_own_destination() {
    let at = day(50) + Duration::hours(3);
    let dir = Dir::new("pkt-dst");
    let trail = dir.trail("trail.json", &[call(at, "cloudtrail", "StopLogging", &user("bob"), INTRUDER_IP, None)]);
    let nat = "10.0.2.236";
    let mut text = String::from(PKT_HEADER);
    // Behind the NAT gateway: the record's destination is the gateway's interface, the packet's
    // the intruder.
    text += &through(at + Duration::hours(1), "eni-0nat0000000000001", ("10.0.1.25", 50_123), nat, (INTRUDER_IP, 4444));
    // The record names the intruder but the packet went elsewhere: not a connection to them.
    let elsewhere = "198.51.100.77";
    text += &through(at + Duration::hours(2), APP_ENI, ("10.0.1.26", 50_124), INTRUDER_IP, (elsewhere, 443));
    let flows = dir.write("v5.log", &text);
    let db = TestDb::new().await;
    import(&db, &[], &[&trail, &flows]);
    let found = alerts(&db, DESTINATION).await;
    let subjects: Vec<&str> = found.iter().map(|(subject, ..)| subject.as_str()).collect();
    assert_eq!(subjects, [format!("eni-0nat0000000000001>{INTRUDER_IP}")], "{found:?}");
    assert_eq!(found[0].3["sources"], json!(["10.0.1.25"]));
    assert!(found[0].4.is_some(), "it joins the intruder's incident");
}

#[tokio::test]
async fn a_connection_through_a_nat_gateway_is_counted_once_on_its_interface() {
    let at = day(50) + Duration::hours(3);
    let dir = Dir::new("nat-once");
    let trail = dir.trail("trail.json", &[call(at, "cloudtrail", "StopLogging", &user("bob"), INTRUDER_IP, None)]);
    let (nat, eni) = ("10.0.2.236", "eni-0nat0000000000001");
    let mut text = String::from(PKT_HEADER);
    // One connection, as the gateway's interface logs it: the instance's packet in (the
    // record's destination the gateway, the packet's the intruder) and the gateway's out.
    let when = at + Duration::hours(1);
    text += &through(when, eni, ("10.0.1.25", 50_123), nat, (INTRUDER_IP, 4444));
    text += &through(when, eni, (nat, 61_001), INTRUDER_IP, (INTRUDER_IP, 4444));
    let flows = dir.write("v5.log", &text);
    let db = TestDb::new().await;
    import(&db, &[], &[&trail, &flows]);
    let found = alerts(&db, DESTINATION).await;
    assert_eq!(found.len(), 1, "{found:?}");
    assert_eq!(found[0].3["records"], 1, "one connection: {:?}", found[0].3);
    assert_eq!(found[0].3["bytes"], 60, "{:?}", found[0].3);
    assert_eq!(found[0].3["sources"], json!(["10.0.1.25"]), "the instance, not the gateway");
}

/// A week of alice's calls, each new or repeated.
fn alice_week() -> Vec<Value> {
    let alice = user("alice");
    let mut records = Vec::new();
    for d in 0..7 {
        let at = day(d) + Duration::hours(9);
        records.push(call(at, "iam", "CreateUser", &alice, "84.128.1.2", None));
        records.push(call(at + Duration::minutes(d), "kms", "PutKeyPolicy", &alice, "84.128.1.2", None));
        records.push(call(at + Duration::hours(1), "s3", "ListBuckets", &alice, "84.128.1.2", None));
    }
    records
}

/// A call of alice's that PostgreSQL refuses to store (a number too large for jsonb), though
/// the parser reads it: the text of one CloudTrail record.
fn refused_record() -> String {
    let mut bad = call(day(3) + Duration::hours(12), "iam", "DeleteUser", &user("alice"), "84.128.1.2", None);
    bad["requestParameters"] = json!({"maxItems": "HUGE"});
    bad.to_string().replace("\"HUGE\"", "1e999999")
}

/// A trail of `records` with [`refused_record`] among them.
fn with_refused_row(records: &[Value]) -> String {
    let mut texts: Vec<String> = records.iter().map(Value::to_string).collect();
    texts.insert(5, refused_record());
    format!("{{\"Records\": [{}]}}", texts.join(","))
}

#[tokio::test]
async fn batches_stored_row_by_row_give_the_rollup_one_batch_gives() {
    let dir = Dir::new("rollup-fallback");
    let records = alice_week();
    let clean = TestDb::new().await;
    import(&clean, &["--no-detect"], &[&dir.trail("all.json", &records)]);
    let expected = rollup(&clean).await;
    assert!(expected.len() >= 14, "{expected:?}");

    // A batch holding a row PostgreSQL refuses is stored row by row: the other rows roll up as
    // the batch would have.
    let refused = TestDb::new().await;
    let broken = dir.write("broken.json", &with_refused_row(&records));
    let output = refused.skywarden(&["import", "--json", "--no-detect", &broken.display().to_string()]);
    assert_eq!(
        output.status.code(),
        Some(2),
        "the refused row is an error: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let summary: Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(
        (&summary["cloudtrail_events"], summary["errors"].as_array().map(Vec::len)),
        (&json!(21), Some(1)),
        "{summary}"
    );
    assert_eq!(rollup(&refused).await, expected, "the row-by-row path rolls up the rows it stores");

    // A batch partly stored before (a LookupEvents export overlapping the trail) goes the
    // deduplicating way: its new rows roll up too.
    let overlap = TestDb::new().await;
    import(&overlap, &["--no-detect"], &[&dir.trail("first.json", &records[..9])]);
    import(&overlap, &["--no-detect"], &[&dir.trail("all-again.json", &records)]);
    assert_eq!(rollup(&overlap).await, expected, "the deduplicating path rolls up the new rows");
}

#[tokio::test]
async fn a_poller_s_batch_refused_in_part_rolls_up_what_it_stores() {
    use skywarden::db::copy::CopyBuffer;
    use skywarden::db::partitions::PartitionedTable;
    let records = alice_week();
    let rows = |records: &[String]| {
        let mut buffer = CopyBuffer::with_capacity(64 * 1024);
        for record in records {
            let event = skywarden::ingest::cloudtrail::CloudTrailEvent::parse(record, None).unwrap();
            event.write_row(None, &mut buffer);
        }
        buffer
    };
    let store = |db: &TestDb, buffer: CopyBuffer| {
        let pool = db.pool.clone();
        async move {
            let mut conn = pool.acquire().await.unwrap();
            let months = vec![skywarden::db::partitions::month_start(day(0))];
            let cache = skywarden::db::partitions::PartitionCache::default();
            cache.ensure(&mut conn, PartitionedTable::CloudTrailEvents, months).await.unwrap();
            drop(conn);
            let mut tx = skywarden::db::begin(&pool).await.unwrap();
            let outcome =
                skywarden::ingest::store::insert_in_transaction(&mut tx, PartitionedTable::CloudTrailEvents, &buffer)
                    .await
                    .unwrap();
            tx.commit().await.unwrap();
            outcome
        }
    };
    let clean = TestDb::new().await;
    let texts: Vec<String> = records.iter().map(Value::to_string).collect();
    assert_eq!(store(&clean, rows(&texts)).await.inserted, 21);
    let mut broken = texts.clone();
    broken.insert(5, refused_record());
    let refused = TestDb::new().await;
    let outcome = store(&refused, rows(&broken)).await;
    assert_eq!((outcome.inserted, outcome.rejected.len()), (21, 1), "{:?}", outcome.rejected);
    assert_eq!(rollup(&refused).await, rollup(&clean).await);
}
