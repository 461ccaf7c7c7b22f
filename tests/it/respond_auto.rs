//! Automatic containment against moto, PostgreSQL and a real webhook receiver: alerts come from
//! CloudTrail events imported by the binary (detection included); the job acts only on
//! allow-listed accounts and within its hourly limits, never twice for one alert and action,
//! changes nothing in dry-run mode but records it, and tells the alert's routes.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde_json::{Value, json};

use skywarden::model::{Finding, Severity};
use skywarden::notify::channels::{self, ChannelKind, ChannelSpec, SecretInput};
use skywarden::notify::http_client::SafeHttpClient;
use skywarden::notify::network::NetworkPolicy;
use skywarden::notify::routes::{self, RouteSpec};
use skywarden::notify::secrets::{Secret, SecretKey};
use skywarden::notify::sender::{Sender, SenderOptions};
use skywarden::respond::auto::AutoRules;
use skywarden::respond::containment::{Containment, StepReport};
use skywarden::respond::record;

use crate::respond::{Setup, setup};
use crate::support::receiver::{Answer, Receiver};

const SG_POLICY: &str = "aws-security-group-ingress-opened";
const HIJACK: &str = "aws-account-hijacking-attempt";

/// The rules under test: revoke a rule opened by a principal with an open hijack alert.
fn rules(accounts: &[&str], dry_run: bool, per_account: u32, global: u32) -> AutoRules {
    let text = format!(
        "enabled: true\ndry_run: {dry_run}\naccounts: {accounts:?}\n\
         rate_limit: {{per_account_per_hour: {per_account}, global_per_hour: {global}}}\n\
         rules:\n  - id: revoke-hijacker-ingress\n    policy: {SG_POLICY}\n    min_severity: high\n\
         \x20   when: {{principal_has_open_alert: [{HIJACK}]}}\n    action: revoke-ingress-rule\n"
    );
    AutoRules::parse("test-response.yaml", &text).unwrap()
}

/// Imports an AuthorizeSecurityGroupIngress event of `alice` for the rule (the binary detects
/// it: an alert of the security-group policy, high for port 22, with the event as evidence).
fn import_opening(s: &Setup, group: &str, rule: &str, cidr: &str) {
    let mut event = crate::support::aws::cloudtrail_event(
        &s.account,
        &format!("evt-{rule}"),
        chrono::Utc::now(),
        "AuthorizeSecurityGroupIngress",
        json!({"groupId": group, "ipPermissions": {"items": [{"ipProtocol": "tcp", "fromPort": 22, "toPort": 22,
               "ipRanges": {"items": [{"cidrIp": cidr}]}}]}}),
    );
    event["responseElements"] = json!({"_return": true, "securityGroupRuleSet": {"items": [
        {"groupId": group, "securityGroupRuleId": rule, "isEgress": false, "ipProtocol": "tcp",
         "fromPort": 22, "toPort": 22, "cidrIpv4": cidr}]}});
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("trail.json");
    std::fs::write(&file, json!({"Records": [event]}).to_string()).unwrap();
    let (code, summary) = s.db.import_json(&[&file]);
    assert_eq!(code, 0, "{summary}");
}

/// An open hijack alert on the principal the security-group alerts name.
async fn hijack_alert(s: &Setup) {
    let principal: String = sqlx::query_scalar("SELECT principal FROM alerts WHERE policy_id = $1 LIMIT 1")
        .bind(SG_POLICY)
        .fetch_one(&s.db.pool)
        .await
        .unwrap();
    let finding = Finding {
        policy_id: HIJACK.into(),
        title: "Console login from a country new for the user".into(),
        severity: Severity::High,
        account_id: s.account.clone(),
        subject: principal.clone(),
        dedup_window: chrono::Duration::hours(24),
        principal: Some(principal),
        source_ip: Some("203.0.113.7".parse().unwrap()),
        country: Some("RU".into()),
        resources: vec![],
        evidence_id: "evt-login".into(),
        time: chrono::Utc::now(),
        mitre: vec![],
        session_key: None,
        details: json!({}),
    };
    skywarden::notify::outbox::record_alerts(&s.db.pool, &[finding]).await.unwrap();
}

/// A webhook channel and a route for every alert, to a receiver on loopback.
/// Also the key its channels' secrets are sealed with.
async fn webhook_and_key(s: &Setup) -> (Receiver, Sender, Arc<SecretKey>) {
    let receiver = Receiver::start(Answer::status(200, "ok")).await;
    let key = Arc::new(SecretKey::generate());
    let policy = NetworkPolicy::allowing("127.0.0.1/32").unwrap();
    let spec = ChannelSpec {
        name: "soc".into(),
        kind: ChannelKind::Webhook,
        settings: json!({"url": receiver.url("/hook")}),
        secrets: BTreeMap::from([("signing_secret".to_owned(), SecretInput::Value(Secret::new("s")))]),
        enabled: true,
    };
    channels::create(&s.db.pool, &spec, &key, &policy).await.unwrap();
    let route: RouteSpec = serde_json::from_value(json!({"name": "all", "channel": "soc"})).unwrap();
    routes::create(&s.db.pool, &route).await.unwrap();
    let options = SenderOptions { public_url: "https://skywarden.example.com".into(), ..Default::default() };
    (receiver, Sender::new(s.db.pool.clone(), key.clone(), SafeHttpClient::new(policy), options), key)
}

/// Two more webhook channels to the same receiver: one whose route asked for no status updates,
/// one whose route is digest-only. Automatic actions reach both all the same.
async fn quiet_routes(s: &Setup, receiver: &Receiver, key: &SecretKey) {
    let policy = NetworkPolicy::allowing("127.0.0.1/32").unwrap();
    for (name, route) in [
        ("quiet", json!({"name": "no-status", "channel": "quiet", "status_updates": false})),
        ("digest", json!({"name": "hourly", "channel": "digest", "digest_minutes": 60})),
    ] {
        let spec = ChannelSpec {
            name: name.into(),
            kind: ChannelKind::Webhook,
            settings: json!({"url": receiver.url("/hook")}),
            secrets: BTreeMap::from([("signing_secret".to_owned(), SecretInput::Value(Secret::new("s")))]),
            enabled: true,
        };
        channels::create(&s.db.pool, &spec, key, &policy).await.unwrap();
        let route: RouteSpec = serde_json::from_value(route).unwrap();
        routes::create(&s.db.pool, &route).await.unwrap();
    }
}

async fn automatic(s: &Setup) -> Vec<(String, String, Option<String>)> {
    let records = record::list(&s.db.pool, Some(&s.account), None, 100).await.unwrap();
    records.into_iter().filter(|r| r.actor == "automatic").map(|r| (r.status, r.target, r.error)).collect()
}

#[tokio::test]
async fn dry_run_changes_nothing_records_what_it_would_do_and_tells_the_routes() {
    let s = setup(true).await;
    let (receiver, sender, key) = webhook_and_key(&s).await;
    let (group, rule) = s.open_ssh("8.8.8.8/32").await;
    import_opening(&s, &group, &rule, "8.8.8.8/32");
    hijack_alert(&s).await;
    quiet_routes(&s, &receiver, &key).await;

    let job = Containment { rules: rules(&[&s.account], true, 3, 10), ctx: s.ctx.clone() };
    // Another process's step holds the lock: this one judges nothing; the lock ends with the
    // other's transaction.
    let mut other = s.db.pool.begin().await.unwrap();
    sqlx::query("SELECT pg_advisory_xact_lock(hashtext('skywarden-respond-auto'))").execute(&mut *other).await.unwrap();
    assert_eq!(job.step().await.unwrap(), StepReport::default());
    other.rollback().await.unwrap();
    let report = job.step().await.unwrap();
    assert!(report.judged >= 2, "{report:?}");
    assert_eq!((report.dry_runs, report.applied), (1, 0), "{report:?}");
    assert_eq!(s.ingress(&group).await.len(), 1, "a dry run changes nothing in AWS");
    let recorded = record::list(&s.db.pool, Some(&s.account), None, 10).await.unwrap();
    let dry = recorded.iter().find(|r| r.actor == "automatic").unwrap();
    assert_eq!((dry.status.as_str(), dry.target.as_str()), ("dry_run", rule.as_str()));
    assert_eq!(dry.automatic_rule.as_deref(), Some("revoke-hijacker-ingress"));
    assert_eq!(dry.calls[0]["operation"], "ec2:RevokeSecurityGroupIngress", "the calls it would make");
    assert_eq!(dry.state_before.as_ref().unwrap()["cidr_ipv4"], "8.8.8.8/32");
    assert!(dry.alert_id.is_some());
    // Judged once: a second step does nothing.
    assert_eq!(job.step().await.unwrap(), StepReport::default());
    // Judged again (a step that died before recording its decisions): the key's record is
    // found, nothing is recorded or told twice (one note below).
    sqlx::query("DELETE FROM response_auto_judged").execute(&s.db.pool).await.unwrap();
    let rejudged = job.step().await.unwrap();
    assert_eq!((rejudged.dry_runs, rejudged.not_run, rejudged.failed), (0, 0, 0), "{rejudged:?}");

    // Its own kind of message, to every route the alert matches: also the route that asked for
    // no status updates and the digest-only one (which got no message of the alert itself).
    let told: Vec<(String, String)> = sqlx::query_as(
        "SELECT c.name, o.event FROM notification_outbox o JOIN notification_channels c ON c.id = o.channel_id
         WHERE o.status_actor = 'automatic' ORDER BY c.name",
    )
    .fetch_all(&s.db.pool)
    .await
    .unwrap();
    let action = "alert.automatic_action".to_owned();
    assert_eq!(
        told,
        [("digest".to_owned(), action.clone()), ("quiet".to_owned(), action.clone()), ("soc".to_owned(), action)]
    );

    let mut delivered = 0;
    for _ in 0..5 {
        delivered += sender.deliver_due().await.unwrap().delivered;
    }
    assert!(delivered >= 4, "{delivered}");
    let received = receiver.wait_for(usize::try_from(delivered).unwrap()).await;
    let notes: Vec<Value> =
        received.iter().map(|r| r.json()).filter(|body| body["status_change"]["actor"] == "automatic").collect();
    assert_eq!(notes.len(), 3, "one per channel: {received:?}");
    let note = notes[0]["status_change"]["reason"].as_str().unwrap();
    assert!(note.contains("dry run") && note.contains(&rule), "{note}");
}

#[tokio::test]
async fn it_acts_only_on_allow_listed_accounts_within_its_rate_limits_and_never_twice() {
    let s = setup(true).await;
    let (first_group, first) = s.open_ssh("8.8.8.8/32").await;
    import_opening(&s, &first_group, &first, "8.8.8.8/32");
    hijack_alert(&s).await;

    // Not on the allow-list: judged, nothing recorded, nothing changed.
    let elsewhere = Containment { rules: rules(&["999988887777"], false, 3, 10), ctx: s.ctx.clone() };
    assert!(elsewhere.step().await.unwrap().judged >= 2);
    assert!(automatic(&s).await.is_empty());
    assert_eq!(s.ingress(&first_group).await.len(), 1);

    // Allowed, at most one action per account and hour: the first rule is revoked, the second
    // is recorded as not run and stays open.
    let (second_group, second) = s.open_ssh("1.1.1.1/32").await;
    import_opening(&s, &second_group, &second, "1.1.1.1/32");
    let (third_group, third) = s.open_ssh("9.9.9.9/32").await;
    import_opening(&s, &third_group, &third, "9.9.9.9/32");
    let limited = Containment { rules: rules(&[&s.account], false, 1, 10), ctx: s.ctx.clone() };
    let report = limited.step().await.unwrap();
    assert_eq!((report.applied, report.not_run), (1, 1), "{report:?}");
    let done = automatic(&s).await;
    let applied: Vec<_> = done.iter().filter(|(status, ..)| status == "applied").collect();
    let not_run: Vec<_> = done.iter().filter(|(status, ..)| status == "failed").collect();
    assert_eq!((applied.len(), not_run.len()), (1, 1), "{done:?}");
    assert!(not_run[0].2.as_deref().unwrap().starts_with("not run: rate limit of 1"), "{done:?}");
    let open = [s.ingress(&second_group).await.len(), s.ingress(&third_group).await.len()];
    assert_eq!(open.iter().sum::<usize>(), 1, "exactly one of the two rules was revoked");

    // A job that died after acting judges again: the same keys find their records.
    sqlx::query("DELETE FROM response_auto_judged WHERE alert_id IN (SELECT alert_id FROM response_actions)")
        .execute(&s.db.pool)
        .await
        .unwrap();
    let calls_before = s.db.count("SELECT count(*) FROM response_actions WHERE calls <> '[]'").await;
    let notes_before = s.db.count("SELECT count(*) FROM notification_outbox WHERE status_actor = 'automatic'").await;
    let records_before = s.db.count("SELECT count(*) FROM response_actions").await;
    // Over the limit still (1 per hour, 1 taken): a replayed key is found before the limit is
    // checked, so nothing is recorded "not run" and no route is told again.
    let replayed = limited.step().await.unwrap();
    assert_eq!((replayed.not_run, replayed.failed, replayed.applied), (0, 0, 0), "{replayed:?}");
    assert!(replayed.judged >= 1, "{replayed:?}");
    assert_eq!(s.db.count("SELECT count(*) FROM response_actions").await, records_before);
    let notes_after = s.db.count("SELECT count(*) FROM notification_outbox WHERE status_actor = 'automatic'").await;
    assert_eq!(notes_after, notes_before, "a replay tells no route again");
    sqlx::query("DELETE FROM response_auto_judged WHERE alert_id IN (SELECT alert_id FROM response_actions)")
        .execute(&s.db.pool)
        .await
        .unwrap();
    let again = Containment { rules: rules(&[&s.account], false, 5, 10), ctx: s.ctx.clone() };
    again.step().await.unwrap();
    let after = automatic(&s).await;
    assert_eq!(after.iter().filter(|(status, ..)| status == "applied").count(), 1, "{after:?}");
    assert_eq!(s.db.count("SELECT count(*) FROM response_actions WHERE calls <> '[]'").await, calls_before);
    assert_eq!(s.ingress(&first_group).await.len(), 1, "the alert judged off the allow-list stays alone");

    // The global limit holds across accounts: one automatic action this hour is the limit.
    let (fourth_group, fourth) = s.open_ssh("4.4.4.4/32").await;
    import_opening(&s, &fourth_group, &fourth, "4.4.4.4/32");
    let global = Containment { rules: rules(&[&s.account], false, 10, 1), ctx: s.ctx.clone() };
    let report = global.step().await.unwrap();
    assert_eq!((report.applied, report.not_run), (0, 1), "{report:?}");
    assert_eq!(s.ingress(&fourth_group).await.len(), 1);
    let last = automatic(&s).await;
    assert!(last.iter().any(
        |(_, target, error)| target == &fourth && error.as_deref().is_some_and(|e| e.contains("per hour reached"))
    ));
}

/// `skywarden serve` with a bad `response.yaml` in its policies folder stops before it opens
/// anything, naming the file and the line.
#[test]
fn serve_refuses_a_bad_rule_file_naming_its_file_and_line() {
    let cases = [
        (
            "rules:\n  - id: a\n    policy: aws-iam-user-created\n    action: terminate-instance\n",
            4,
            "terminate-instance",
        ),
        ("rules:\n  - id: a\n    policy: aws-no-such-policy\n    action: quarantine\n", 3, "aws-no-such-policy"),
    ];
    for (text, line, named) in cases {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("response.yaml");
        std::fs::write(&file, text).unwrap();
        let output = crate::support::skywarden_command("postgres://postgres@127.0.0.1:1/unused")
            .args(["serve", "--listen", "127.0.0.1:0", "--policies"])
            .arg(dir.path())
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(!output.status.success(), "{stderr}");
        let at = format!("{}:{line}: ", file.display());
        assert!(stderr.contains(&at) && stderr.contains(named), "expected `{at}` naming {named}: {stderr}");
    }
}
