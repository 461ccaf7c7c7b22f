//! Which incidents are listed is stored on them (`incidents.listed`, migration 0049, issue 16)
//! and follows every change of their alerts: a second policy, a severity that rises or falls, a
//! merge, an alert retracted; the migration's backfill gives the rule's answer.

use chrono::{DateTime, Duration, Utc};
use skywarden::alerts::incident_pages::{self, IncidentFilter};
use skywarden::alerts::store::retract_login_evidence;
use skywarden::model::{Finding, Mitre, Severity};
use skywarden::notify::outbox::record_alerts;

use crate::support::TestDb;

const ACCOUNT: &str = "111122223333";

fn at(minute: i64) -> DateTime<Utc> {
    "2026-06-01T10:00:00Z".parse::<DateTime<Utc>>().unwrap() + Duration::minutes(minute)
}

/// A finding of `policy` by `principal` from `ip` in `session`, at `minute`.
fn finding(policy: &str, severity: Severity, principal: &str, ip: &str, session: &str, minute: i64) -> Finding {
    Finding {
        policy_id: policy.into(),
        title: format!("{policy} at {minute}"),
        severity,
        account_id: ACCOUNT.into(),
        subject: format!("{policy}|{principal}"),
        dedup_window: Duration::hours(24),
        principal: Some(format!("arn:aws:iam::{ACCOUNT}:user/{principal}")),
        source_ip: ip.parse().ok(),
        country: None,
        resources: Vec::new(),
        evidence_id: format!("evt-{policy}-{principal}-{minute}"),
        time: at(minute),
        mitre: vec![Mitre::new("TA0001", "T1078")],
        session_key: Some(session.into()),
        details: serde_json::json!({}),
    }
}

async fn record(db: &TestDb, findings: &[Finding]) {
    record_alerts(&db.pool, findings).await.expect("recording");
}

/// The stored flag of the incident of the alert of `f`, and the incident.
async fn listed_of(db: &TestDb, f: &Finding) -> (String, bool) {
    sqlx::query_as::<_, (String, bool)>(
        "SELECT i.incident_id, i.listed FROM alerts a JOIN incidents i ON i.incident_id = a.incident_id
         WHERE a.alert_id = $1::uuid",
    )
    .bind(f.alert_id())
    .fetch_one(&db.pool)
    .await
    .unwrap()
}

/// Ids of the incidents the list shows (every page).
async fn page_ids(db: &TestDb) -> Vec<String> {
    let entries = incident_pages::incidents(&db.pool, &IncidentFilter::default(), None, 100).await.unwrap();
    entries.into_iter().map(|e| e.incident.id).collect()
}

/// Every incident whose stored flag differs from the rule read from its alerts now.
async fn disagreeing(db: &TestDb) -> Vec<(String, bool)> {
    sqlx::query_as::<_, (String, bool)>(
        "SELECT i.incident_id, i.listed FROM incidents i
         WHERE i.listed <> coalesce((
             SELECT count(DISTINCT a.policy_id) > 1 OR bool_or(a.severity IN ('high', 'critical'))
             FROM alerts a
             WHERE a.incident_id = i.incident_id AND a.policy_id NOT LIKE 'posture:%'
               AND NOT (a.policy_id LIKE 'aws-securityhub:%' AND a.details ? 'compliance_status')), false)",
    )
    .fetch_all(&db.pool)
    .await
    .unwrap()
}

#[tokio::test]
async fn a_second_policy_lists_an_incident_and_a_lower_severity_unlists_it() {
    let db = TestDb::new().await;
    let ip = "203.0.113.40";
    let first = finding("listing-login", Severity::Low, "alice", ip, "alice|s1", 0);
    record(&db, std::slice::from_ref(&first)).await;
    let (incident, listed) = listed_of(&db, &first).await;
    assert!(!listed, "one low policy is not an intrusion");
    assert!(page_ids(&db).await.is_empty());

    let second = finding("listing-change", Severity::Low, "alice", ip, "alice|s1", 5);
    record(&db, std::slice::from_ref(&second)).await;
    assert_eq!(listed_of(&db, &second).await, (incident.clone(), true), "a second policy of activity lists it");
    assert_eq!(page_ids(&db).await, vec![incident.clone()]);

    // The store only raises a severity: a low alert seen again as high lists its incident.
    let db = TestDb::new().await;
    let low = finding("listing-login", Severity::Low, "bob", ip, "bob|s1", 0);
    record(&db, std::slice::from_ref(&low)).await;
    let (incident, listed) = listed_of(&db, &low).await;
    assert!(!listed);
    let high = Finding { severity: Severity::High, evidence_id: "evt-again".into(), time: at(3), ..low.clone() };
    assert_eq!(high.alert_id(), low.alert_id(), "the same alert");
    record(&db, &[high]).await;
    assert_eq!(listed_of(&db, &low).await, (incident.clone(), true));
    assert_eq!(page_ids(&db).await, vec![incident.clone()]);
    // Any writer that lowers it (an analyst's fix in SQL, a future re-scoring) unlists it.
    sqlx::query("UPDATE alerts SET severity = 'medium' WHERE alert_id = $1::uuid")
        .bind(low.alert_id())
        .execute(&db.pool)
        .await
        .unwrap();
    assert_eq!(listed_of(&db, &low).await, (incident, false));
    assert!(page_ids(&db).await.is_empty());
    assert_eq!(disagreeing(&db).await, vec![]);
}

#[tokio::test]
async fn a_merge_of_two_unlisted_incidents_of_different_policies_lists_the_survivor() {
    let db = TestDb::new().await;
    let one = finding("listing-login", Severity::Low, "carol", "203.0.113.41", "carol|s1", 0);
    let two = finding("listing-change", Severity::Medium, "dave", "203.0.113.42", "dave|s2", 1);
    record(&db, std::slice::from_ref(&one)).await;
    record(&db, std::slice::from_ref(&two)).await;
    let (first_incident, first_listed) = listed_of(&db, &one).await;
    let (second_incident, second_listed) = listed_of(&db, &two).await;
    assert_ne!(first_incident, second_incident);
    assert!(!first_listed && !second_listed, "one low or medium policy each");
    assert!(page_ids(&db).await.is_empty());

    // Carol at her address in Dave's session: both incidents were one intrusion.
    let tie = Finding {
        subject: "another login".into(),
        ..finding("listing-login", Severity::Low, "carol", "203.0.113.41", "dave|s2", 2)
    };
    record(&db, std::slice::from_ref(&tie)).await;
    let (survivor, listed) = listed_of(&db, &tie).await;
    assert_eq!(listed_of(&db, &two).await.0, survivor, "merged");
    assert!(listed, "the merged incident has two policies of activity");
    let absorbed = if survivor == first_incident { &second_incident } else { &first_incident };
    let absorbed_listed: bool = sqlx::query_scalar("SELECT listed FROM incidents WHERE incident_id = $1")
        .bind(absorbed)
        .fetch_one(&db.pool)
        .await
        .unwrap();
    assert!(!absorbed_listed, "the absorbed incident has no alerts left");
    assert_eq!(page_ids(&db).await, vec![survivor]);
    assert_eq!(disagreeing(&db).await, vec![]);
}

/// Stores the finding's evidence as a console login, then withdraws every login evidence of its
/// policy (as a re-evaluation that no longer sees it does).
async fn retract(db: &TestDb, f: &Finding) {
    use skywarden::db::partitions::{PartitionCache, PartitionedTable};
    let mut conn = db.pool.acquire().await.unwrap();
    PartitionCache::default().ensure(&mut conn, PartitionedTable::CloudTrailEvents, vec![f.time]).await.unwrap();
    sqlx::query(
        "INSERT INTO cloudtrail_events (account_id, event_time, event_id, event_name, raw)
         VALUES ($1, $2, $3, 'ConsoleLogin', '{}')",
    )
    .bind(ACCOUNT)
    .bind(f.time)
    .bind(&f.evidence_id)
    .execute(&mut *conn)
    .await
    .unwrap();
    let policies = [f.policy_id.as_str()];
    let withdrawn = retract_login_evidence(&db.pool, None, &policies, at(-60), at(60), &[]).await.unwrap();
    assert_eq!(withdrawn, 1);
}

async fn count(db: &TestDb, f: &Finding) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM alerts WHERE alert_id = $1::uuid")
        .bind(f.alert_id())
        .fetch_one(&db.pool)
        .await
        .unwrap()
}

#[tokio::test]
async fn a_retracted_alert_re_evaluates_its_incident() {
    let db = TestDb::new().await;
    let ip = "203.0.113.43";
    let login = finding("listing-login", Severity::Low, "erin", ip, "erin|s1", 0);
    let change = finding("listing-change", Severity::Low, "erin", ip, "erin|s1", 4);
    record(&db, &[login.clone(), change.clone()]).await;
    let (incident, listed) = listed_of(&db, &login).await;
    assert!(listed);
    // Its evidence was a console login that re-evaluation withdraws: the alert, left without
    // evidence, is deleted.
    retract(&db, &change).await;
    assert_eq!(count(&db, &change).await, 0, "the alert is gone");
    assert_eq!(listed_of(&db, &login).await, (incident, false));
    assert!(page_ids(&db).await.is_empty());
    // Re-evaluation can find it still listed: a high alert of activity stays.
    let high = finding("listing-root", Severity::High, "erin", ip, "erin|s1", 6);
    let other = finding("listing-change", Severity::Low, "erin", ip, "erin|s1", 7);
    record(&db, &[high, other.clone()]).await;
    retract(&db, &other).await;
    assert_eq!(count(&db, &other).await, 0);
    assert!(listed_of(&db, &login).await.1, "one high alert of activity is enough");
    assert_eq!(disagreeing(&db).await, vec![]);
}

#[tokio::test]
async fn posture_and_control_findings_never_list_and_the_backfill_gives_the_rule() {
    let db = TestDb::new().await;
    let mut findings = Vec::new();
    // Incident per session: a mix of what lists and what does not.
    let mixes: [&[(&str, Severity, serde_json::Value)]; 7] = [
        &[("listing-login", Severity::Low, serde_json::json!({}))],
        &[
            ("listing-login", Severity::Low, serde_json::json!({})),
            ("listing-change", Severity::Low, serde_json::json!({})),
        ],
        &[("listing-root", Severity::Critical, serde_json::json!({}))],
        &[
            ("posture:s3-public", Severity::High, serde_json::json!({})),
            ("listing-login", Severity::Low, serde_json::json!({})),
        ],
        &[
            ("aws-securityhub:s3.1", Severity::High, serde_json::json!({"compliance_status": "FAILED"})),
            ("aws-securityhub:s3.2", Severity::High, serde_json::json!({"compliance_status": "FAILED"})),
        ],
        &[("aws-securityhub:guardduty", Severity::High, serde_json::json!({}))],
        &[
            ("posture:iam-mfa", Severity::Critical, serde_json::json!({})),
            ("posture:s3-public", Severity::Low, serde_json::json!({})),
        ],
    ];
    for (n, mix) in mixes.iter().enumerate() {
        for (k, (policy, severity, details)) in mix.iter().enumerate() {
            let ip = format!("203.0.113.{}", 50 + n);
            let mut f =
                finding(policy, *severity, &format!("user{n}"), &ip, &format!("user{n}|s"), (n * 10 + k) as i64);
            f.details = details.clone();
            findings.push(f);
        }
    }
    record(&db, &findings).await;
    let listed: Vec<bool> = {
        let mut flags = Vec::new();
        for mix in 0..mixes.len() {
            let first =
                findings.iter().find(|f| f.principal.as_deref().is_some_and(|p| p.ends_with(&format!("/user{mix}"))));
            flags.push(listed_of(&db, first.unwrap()).await.1);
        }
        flags
    };
    assert_eq!(listed, [false, true, true, false, false, true, false]);
    assert_eq!(disagreeing(&db).await, vec![]);

    // Security Hub marks a threat finding as a control finding: no longer activity.
    sqlx::query("UPDATE alerts SET details = details || '{\"compliance_status\": \"FAILED\"}' WHERE policy_id = 'aws-securityhub:guardduty'")
        .execute(&db.pool)
        .await
        .unwrap();
    assert_eq!(disagreeing(&db).await, vec![]);
    assert_eq!(page_ids(&db).await.len(), 2);

    // The migration's backfill, run again over flags all cleared, gives the rule.
    let migration = include_str!("../../migrations/0049_incident_listed.sql");
    let backfill = migration.split("-- The backfill").nth(1).expect("a backfill").split(';').next().unwrap();
    sqlx::query("UPDATE incidents SET listed = false").execute(&db.pool).await.unwrap();
    assert_eq!(disagreeing(&db).await.len(), 2);
    let backfill = backfill.lines().skip(1).collect::<Vec<_>>().join("\n");
    sqlx::query(&backfill).execute(&db.pool).await.unwrap();
    assert_eq!(disagreeing(&db).await, vec![]);
}
