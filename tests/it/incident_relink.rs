//! Bridges that arrive late, merges that race an analyst, and which incidents are listed: a
//! pass re-keys every alert its bridging events tie, however many (what its cap leaves waits for
//! the next pass), and not an AWS service's routine role assumption; a late instance-profile
//! association ties the instance's own credentials; an analyst's status set during a merge is
//! kept; posture and Security Hub control findings are not listed as intrusions.
//!
//! Alerts are stored as rows (the engine reads only their columns) so each test controls what
//! ties what; bridging events go through the real import.

use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, Duration, Utc};
use serde_json::{Value, json};
use skywarden::alerts::incident_pages::{self, IncidentFilter};
use skywarden::alerts::incidents::{self, RelinkLimits};

use crate::support::TestDb;
use crate::support::incident_setup::{
    self as setup, ACCOUNT, Detection, NetworkContext, event, incidents_of_alerts, user_arn, write_trail,
};

const DAY: &str = "2026-05-04T00:00:00Z";

fn hours(h: i64) -> DateTime<Utc> {
    DAY.parse::<DateTime<Utc>>().unwrap() + Duration::hours(h)
}

fn role_session(role: &str, session: &str) -> String {
    format!("arn:aws:sts::{ACCOUNT}:assumed-role/{role}/{session}")
}

/// An alert as detection stores it: only what linking and listing read.
struct Alert<'a> {
    n: u32,
    policy: &'a str,
    severity: &'a str,
    principal: Option<&'a str>,
    ip: Option<&'a str>,
    resources: &'a [&'a str],
    session_key: Option<&'a str>,
    at: DateTime<Utc>,
    details: Value,
}

impl Default for Alert<'_> {
    fn default() -> Self {
        Alert {
            n: 0,
            policy: "p",
            severity: "medium",
            principal: None,
            ip: None,
            resources: &[],
            session_key: None,
            at: hours(10),
            details: json!({}),
        }
    }
}

fn alert_id(n: u32) -> String {
    format!("00000000-0000-4000-8000-{n:012}")
}

async fn store(db: &TestDb, a: Alert<'_>) {
    let resources: Vec<String> = a.resources.iter().map(|r| r.to_string()).collect();
    sqlx::query(
        "INSERT INTO alerts (account_id, alert_id, policy_id, dedup_key, title, severity, principal, source_ip,
                             resources, session_key, first_seen, last_seen, details)
         VALUES ($1, $2::uuid, $3, $2, $3, $4::alert_severity, $5, $6::inet, $7, $8, $9, $9 + interval '5 minutes', $10)",
    )
    .bind(ACCOUNT)
    .bind(alert_id(a.n))
    .bind(a.policy)
    .bind(a.severity)
    .bind(a.principal)
    .bind(a.ip)
    .bind(&resources)
    .bind(a.session_key)
    .bind(a.at)
    .bind(&a.details)
    .execute(&db.pool)
    .await
    .unwrap();
}

/// The incident of each alert (by its number).
async fn incident_of(db: &TestDb) -> BTreeMap<u32, String> {
    let mut of = BTreeMap::new();
    for (incident, alerts) in incidents_of_alerts(db).await {
        for alert in alerts {
            let n: u32 = alert.rsplit('-').next().unwrap().parse().unwrap();
            of.insert(n, incident.clone());
        }
    }
    of
}

fn iam_user(name: &str, key: &str) -> Value {
    json!({"type": "IAMUser", "principalId": format!("AIDA{}", name.to_uppercase()), "arn": user_arn(name),
           "accountId": ACCOUNT, "accessKeyId": key, "userName": name})
}

fn assume_role(time: DateTime<Utc>, identity: Value, ip: &str, role: &str, session: &str, key: &str) -> Value {
    event(
        time,
        "AssumeRole",
        "sts.amazonaws.com",
        identity,
        ip,
        json!({"requestParameters": {"roleArn": format!("arn:aws:iam::{ACCOUNT}:role/{role}"), "roleSessionName": session},
               "responseElements": {"credentials": {"accessKeyId": key, "sessionToken": "IQoJb3JpZ2luEXAMPLE"},
                                    "assumedRoleUser": {"assumedRoleId": format!("AROA:{session}"),
                                                        "arn": role_session(role, session)}}}),
    )
}

/// Imports `records` without detection; returns the database time before it (the pass's bound).
async fn import_bridges(db: &TestDb, records: Vec<Value>) -> DateTime<Utc> {
    let before = skywarden::detect::runner::database_now(&db.pool).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let trail = write_trail(dir.path(), "bridges", records);
    setup::import(db, dir.path(), &NetworkContext::default(), Detection::Later, &[&trail]);
    before
}

const BOB_IP: &str = "203.0.113.10";
const PWN_IP: &str = "198.51.100.20";
const PWN_KEY: &str = "ASIAFAKEPWNKEY000001";
const ZED_IP: &str = "203.0.113.30";
const ZZ_IP: &str = "198.51.100.40";
const ZZ_KEY: &str = "ASIAFAKEZZKEY0000001";

#[tokio::test]
async fn bridged_alerts_past_a_passs_cap_are_relinked_by_the_next_pass() {
    let db = TestDb::new().await;
    let bob = user_arn("bob");
    let pwn = role_session("ops", "pwn");
    let lambda = role_session("ops", "billing-fn");
    // Bob's four alerts from his address; the role session's three from another; and two
    // strangers: an alert naming the role's ARN, and the role's routine session of a service.
    for n in 1..=4 {
        let policy = format!("caller-{n}");
        let at = hours(10) + Duration::minutes(i64::from(n) * 5);
        store(&db, Alert { n, policy: &policy, principal: Some(&bob), ip: Some(BOB_IP), at, ..Alert::default() }).await;
    }
    for n in 11..=13 {
        let policy = format!("session-{n}");
        let at = hours(11) + Duration::minutes(i64::from(n));
        let key = format!("key:{PWN_KEY}");
        let session_key = Some(key.as_str());
        let alert =
            Alert { n, policy: &policy, principal: Some(&pwn), ip: Some(PWN_IP), session_key, at, ..Alert::default() };
        store(&db, alert).await;
    }
    // A second intrusion later that day: zed, and the session he assumes.
    let (zed, zz) = (user_arn("zed"), role_session("ops", "zz"));
    let zz_key = format!("key:{ZZ_KEY}");
    store(
        &db,
        Alert {
            n: 31,
            policy: "caller-zed",
            principal: Some(&zed),
            ip: Some(ZED_IP),
            at: hours(14),
            ..Alert::default()
        },
    )
    .await;
    for n in 41..=42 {
        let policy = format!("session-{n}");
        let at = hours(14) + Duration::minutes(i64::from(n));
        let session_key = Some(zz_key.as_str());
        let alert =
            Alert { n, policy: &policy, principal: Some(&zz), ip: Some(ZZ_IP), session_key, at, ..Alert::default() };
        store(&db, alert).await;
    }
    let role_arn = format!("arn:aws:iam::{ACCOUNT}:role/ops");
    let carol = user_arn("carol");
    let resources = [role_arn.as_str()];
    let names_role = Alert {
        n: 21,
        policy: "names-role",
        principal: Some(&carol),
        ip: Some("192.0.2.50"),
        resources: &resources,
        ..Alert::default()
    };
    store(&db, names_role).await;
    store(
        &db,
        Alert {
            n: 22,
            policy: "service-session",
            principal: Some(&lambda),
            ip: Some("192.0.2.60"),
            ..Alert::default()
        },
    )
    .await;
    incidents::link_pending(&db.pool).await.unwrap();
    let apart = incident_of(&db).await;
    assert_eq!(apart.values().collect::<BTreeSet<_>>().len(), 6, "{apart:#?}");

    // Bob and zed assume their sessions; Lambda assumes the role too, as it does all day.
    let lambda_identity = json!({"type": "AWSService", "invokedBy": "lambda.amazonaws.com"});
    let bob_assumes = assume_role(
        hours(10) + Duration::minutes(30),
        iam_user("bob", "AKIAFAKEBOBKEY000001"),
        BOB_IP,
        "ops",
        "pwn",
        PWN_KEY,
    );
    let zed_assumes = assume_role(
        hours(14) + Duration::minutes(5),
        iam_user("zed", "AKIAFAKEZEDKEY000001"),
        ZED_IP,
        "ops",
        "zz",
        ZZ_KEY,
    );
    let lambda_assumes =
        assume_role(hours(10), lambda_identity, "lambda.amazonaws.com", "ops", "billing-fn", "ASIAFAKELAMBDA000001");
    let since = import_bridges(&db, vec![bob_assumes, zed_assumes, lambda_assumes]).await;

    // A pass of at most 3 re-keys 3 of the callers' alerts (bob's, the earliest: enough to tie
    // his session) and leaves the other 7 queued; the strangers are not queued at all.
    let limits = RelinkLimits { chunk: 2, per_pass: 3 };
    incidents::relink_bridged_within(&db.pool, (Some(since), None), limits).await.unwrap();
    assert_eq!(incidents::relink_backlog(&db.pool).await.unwrap(), (7, 1), "7 left, 1 pass stopped at its cap");
    let metrics = crate::support::metrics::scrape(&db.pool).await;
    for line in ["\nskywarden_incident_relink_backlog 7\n", "\nskywarden_incident_relink_cap_hits_total 1\n"] {
        assert!(metrics.contains(line), "{line:?} not in {metrics}");
    }
    let first = incident_of(&db).await;
    assert!([2, 3, 4, 11, 12, 13].iter().all(|n| first[n] == apart[&1]), "bob's side is tied: {first:#?}");
    assert_ne!(first[&31], first[&41], "zed's is not yet: {first:#?}");

    // The next passes have no new bridge: they work through what the first one left.
    let mut merged = 0;
    for _ in 0..5 {
        let now = skywarden::detect::runner::database_now(&db.pool).await.unwrap();
        merged += incidents::relink_bridged_within(&db.pool, (Some(now), None), limits).await.unwrap().merged;
        if incidents::relink_backlog(&db.pool).await.unwrap().0 == 0 {
            break;
        }
    }
    assert_eq!(incidents::relink_backlog(&db.pool).await.unwrap().0, 0);
    assert_eq!(merged, 1);
    let after = incident_of(&db).await;
    assert!([41, 42].iter().all(|n| after[n] == apart[&31]), "zed's session joined his incident: {after:#?}");
    assert!([2, 3, 4, 11, 12, 13].iter().all(|n| after[n] == apart[&1]), "{after:#?}");
    assert_ne!(after[&1], after[&31]);
    assert_eq!(after[&21], apart[&21], "naming the role's ARN ties nothing");
    assert_eq!(after[&22], apart[&22], "a service's own role session ties nothing");

    // Running it all again changes nothing.
    incidents::relink_bridged(&db.pool, (Some(since), None)).await.unwrap();
    assert_eq!(incident_of(&db).await, after);
}

const INSTANCE: &str = "i-0abc1234def567890";

fn associate_profile(time: DateTime<Utc>, identity: Value, ip: &str, instance: &str) -> Value {
    event(
        time,
        "AssociateIamInstanceProfile",
        "ec2.amazonaws.com",
        identity,
        ip,
        json!({"requestParameters": {"AssociateIamInstanceProfileRequest": {"InstanceId": instance,
                   "IamInstanceProfile": {"Name": "ssm-admin"}}},
               "responseElements": {"AssociateIamInstanceProfileResponse": {"iamInstanceProfileAssociation": {
                   "associationId": "iip-assoc-0x", "instanceId": instance, "state": "associating"}}}}),
    )
}

#[tokio::test]
async fn a_late_instance_profile_association_ties_the_instances_credentials() {
    let db = TestDb::new().await;
    let mallory = user_arn("mallory");
    let instance_session = role_session("ssm-admin", INSTANCE);
    let mallory_alert = Alert {
        n: 1,
        policy: "iam-policy-attached",
        principal: Some(&mallory),
        ip: Some("203.0.113.66"),
        at: hours(12),
        ..Alert::default()
    };
    store(&db, mallory_alert).await;
    // The instance's credentials used from outside: its principal names the instance, its
    // resources are empty.
    let credentials = Alert {
        n: 2,
        policy: "instance-credentials-outside",
        severity: "high",
        principal: Some(&instance_session),
        ip: Some("198.51.100.99"),
        at: hours(12) + Duration::minutes(40),
        ..Alert::default()
    };
    store(&db, credentials).await;
    incidents::link_pending(&db.pool).await.unwrap();
    let apart = incident_of(&db).await;
    assert_ne!(apart[&1], apart[&2]);

    let identity = iam_user("mallory", "AKIAFAKEMALLORY00001");
    let since = import_bridges(
        &db,
        vec![associate_profile(hours(12) + Duration::minutes(10), identity, "203.0.113.66", INSTANCE)],
    )
    .await;
    incidents::relink_bridged(&db.pool, (Some(since), None)).await.unwrap();
    let after = incident_of(&db).await;
    assert_eq!(after[&1], after[&2], "the association ties the instance's credentials to mallory: {after:#?}");
}

#[tokio::test]
async fn a_status_an_analyst_sets_during_a_merge_is_kept() {
    let db = TestDb::new().await;
    let (bob, dave) = (user_arn("bob"), user_arn("dave"));
    store(
        &db,
        Alert { n: 1, policy: "first", principal: Some(&bob), ip: Some(BOB_IP), at: hours(10), ..Alert::default() },
    )
    .await;
    let dave_alert = Alert {
        n: 2,
        policy: "second",
        principal: Some(&dave),
        ip: Some("198.51.100.77"),
        session_key: Some("key:AKIAFAKEDAVEKEY00001"),
        at: hours(11),
        ..Alert::default()
    };
    store(&db, dave_alert).await;
    incidents::link_pending(&db.pool).await.unwrap();
    let apart = incident_of(&db).await;
    let (survivor, absorbed) = (apart[&1].clone(), apart[&2].clone());
    assert_ne!(survivor, absorbed);

    // An analyst's change to the later incident is under way (its row locked, as
    // `incident_pages::update` locks it) when an alert ties both incidents.
    let mut analyst = skywarden::db::begin(&db.pool).await.unwrap();
    sqlx::query("SELECT status FROM incidents WHERE incident_id = $1 FOR UPDATE")
        .bind(&absorbed)
        .fetch_one(&mut *analyst)
        .await
        .unwrap();
    let tie = Alert {
        n: 3,
        policy: "third",
        principal: Some(&bob),
        ip: Some(BOB_IP),
        session_key: Some("key:AKIAFAKEDAVEKEY00001"),
        at: hours(11) + Duration::minutes(30),
        ..Alert::default()
    };
    store(&db, tie).await;
    let pool = db.pool.clone();
    let linking = tokio::spawn(async move { incidents::link_pending(&pool).await });
    db.until_a_statement_waits_for_a_lock("the merge never waited for the analyst's change").await;
    sqlx::query("UPDATE incidents SET status = 'investigating' WHERE incident_id = $1")
        .bind(&absorbed)
        .execute(&mut *analyst)
        .await
        .unwrap();
    incidents::record_change(
        &mut analyst,
        &absorbed,
        "cli:maria",
        "status",
        Some("open"),
        Some("investigating"),
        "mine",
    )
    .await
    .unwrap();
    analyst.commit().await.unwrap();
    let outcome = linking.await.unwrap().unwrap();
    assert_eq!(outcome.merged, 1, "{outcome:?}");

    let filter = IncidentFilter { id: Some(survivor.clone()), open_only: false };
    let entry = incident_pages::incidents(&db.pool, &filter, None, 1).await.unwrap().pop().unwrap();
    assert_eq!(entry.alert_count, 3);
    assert_eq!(
        entry.incident.status,
        incidents::IncidentStatus::Investigating,
        "the status the analyst set during the merge is kept"
    );
    let history = incident_pages::history(&db.pool, &survivor).await.unwrap();
    let change = history.iter().find(|c| c.field == "status").expect("the status change is in the history");
    assert_eq!((change.old_value.as_deref(), change.new_value.as_deref()), (Some("open"), Some("investigating")));
}

#[tokio::test]
async fn posture_and_control_findings_are_not_listed_as_intrusions() {
    let db = TestDb::new().await;
    let (mallory, eve) = (user_arn("mallory"), user_arn("eve"));
    // Two posture checks failing on one instance.
    for (n, policy) in [(1, "posture:ec2-imdsv1"), (2, "posture:ec2-public-ip")] {
        store(&db, Alert { n, policy, severity: "high", resources: &["i-0aaaa1111bbbb2222"], ..Alert::default() })
            .await;
    }
    // One low alert.
    let benign = Alert {
        n: 3,
        policy: "console-login-no-mfa",
        severity: "low",
        principal: Some(&eve),
        ip: Some("192.0.2.80"),
        ..Alert::default()
    };
    store(&db, benign).await;
    // Two Security Hub controls failing on one security group.
    let control = |status: &str| json!({"source": "securityhub", "compliance_status": status, "active": true});
    for (n, policy) in [(4, "aws-securityhub:EC2.19"), (5, "aws-securityhub:EC2.18")] {
        let finding = Alert {
            n,
            policy,
            severity: "critical",
            resources: &["sg-0cccc3333dddd4444"],
            details: control("FAILED"),
            ..Alert::default()
        };
        store(&db, finding).await;
    }
    // A Security Hub threat finding (no compliance): activity.
    let threat = Alert {
        n: 6,
        policy: "aws-securityhub:TTPs/Initial Access",
        severity: "high",
        resources: &["i-0eeee5555ffff6666"],
        details: json!({"source": "securityhub", "compliance_status": null}),
        ..Alert::default()
    };
    store(&db, threat).await;
    // An intrusion: two medium policies of one principal at one address.
    for (n, policy) in [(7, "stop-logging"), (8, "delete-detector")] {
        store(&db, Alert { n, policy, principal: Some(&mallory), ip: Some("203.0.113.66"), ..Alert::default() }).await;
    }
    let listed: BTreeSet<String> = incident_pages::incidents(&db.pool, &IncidentFilter::default(), None, 100)
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.incident.id)
        .collect();
    let of = incident_of(&db).await;
    assert_eq!(of[&1], of[&2], "the posture findings share the instance");
    assert_eq!(of[&4], of[&5], "the control findings share the security group");
    let expected: BTreeSet<String> = [of[&6].clone(), of[&7].clone()].into();
    assert_eq!(of[&7], of[&8]);
    assert_eq!(listed, expected, "only the intrusion and the threat finding are listed: {of:#?}");
    // Asked by id, any incident answers.
    let filter = IncidentFilter { id: Some(of[&1].clone()), open_only: false };
    assert_eq!(incident_pages::incidents(&db.pool, &filter, None, 1).await.unwrap().len(), 1);
}

#[tokio::test]
async fn passes_relinking_at_once_queue_and_take_the_same_alerts_without_deadlock() {
    // Each pass queues what the bridges tie while the others take chunks off the queue: the
    // queue's rows were written in different orders (the grouped insert, a chunk's delete),
    // which deadlocked two detections once (CI, 2026-12-02; not reproduced here on demand, so
    // this is a stress run of the interleaving, and a check that passes at once tie the same).
    const PASSES: usize = 8;
    const USERS: u32 = 30;
    let db = TestDb::new().await;
    // Each user's three alerts from their address, and the three of the session each assumes.
    let mut bridges = Vec::new();
    for user in 0..USERS {
        let (name, ip) = (format!("user{user}"), format!("203.0.113.{}", user + 1));
        let session_ip = format!("198.51.100.{}", user + 1);
        let (arn, session) = (user_arn(&name), role_session("ops", &name));
        let key = format!("ASIAFAKE{user:012}");
        let session_key = format!("key:{key}");
        for k in 0..3 {
            let at = hours(10) + Duration::minutes(i64::from(user * 3 + k));
            let (n, policy) = (user * 10 + k + 1, format!("caller-{k}"));
            store(&db, Alert { n, policy: &policy, principal: Some(&arn), ip: Some(&ip), at, ..Alert::default() })
                .await;
            let (n, policy) = (user * 10 + k + 5, format!("session-{k}"));
            let alert = Alert {
                n,
                policy: &policy,
                principal: Some(&session),
                ip: Some(&session_ip),
                session_key: Some(&session_key),
                at,
                ..Alert::default()
            };
            store(&db, alert).await;
        }
        let identity = iam_user(&name, &format!("AKIAFAKE{user:012}"));
        bridges.push(assume_role(hours(11), identity, &ip, "ops", &name, &key));
    }
    incidents::link_pending(&db.pool).await.unwrap();
    import_bridges(&db, bridges).await;
    let limits = RelinkLimits { chunk: 1, per_pass: 100_000 };
    for round in 0..3 {
        let passes: Vec<_> = (0..PASSES)
            .map(|_| {
                let pool = db.pool.clone();
                tokio::spawn(async move { incidents::relink_bridged_within(&pool, (None, None), limits).await })
            })
            .collect();
        for pass in passes {
            pass.await.unwrap().unwrap_or_else(|error| panic!("round {round}: {error}"));
        }
        assert_eq!(incidents::relink_backlog(&db.pool).await.unwrap().0, 0, "round {round} left the queue empty");
    }
    // Each user's alerts and their session's are one incident, and no two users share one.
    let of = incident_of(&db).await;
    for user in 0..USERS {
        let mine: BTreeSet<_> = (1..=3).chain(5..=7).map(|k| &of[&(user * 10 + k)]).collect();
        assert_eq!(mine.len(), 1, "user {user}: {mine:?}");
    }
    assert_eq!(of.values().collect::<BTreeSet<_>>().len(), USERS as usize, "{of:#?}");
}
