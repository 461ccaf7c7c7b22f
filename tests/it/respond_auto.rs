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

use crate::respond::{REGION, Setup, setup};
use crate::support::receiver::{Answer, Receiver};
use crate::support::smtp::SmtpSink;

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
    let mut other = skywarden::db::begin(&s.db.pool).await.unwrap();
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
        received.iter().map(|r| r.json()).filter(|body| body["event"] == "alert.automatic_action").collect();
    assert_eq!(notes.len(), 3, "one per channel: {received:?}");
    let action = &notes[0]["automatic_action"];
    assert_eq!(action["outcome"], "dry_run", "{action}");
    assert_eq!(
        (action["kind"].as_str(), action["resource"].as_str()),
        (Some("revoke-ingress-rule"), Some(rule.as_str()))
    );
    assert_eq!((action["account_id"].as_str(), action["region"].as_str()), (Some(s.account.as_str()), Some(REGION)));
    assert_eq!(action["undo"], "nothing to undo: nothing was changed");
    assert!(notes[0].get("status_change").is_none(), "not a status message");
}

/// Automatic containment judges rules by the detector's trusted ranges too (serve and the worker
/// put them in its context): of one ModifySecurityGroupRules call that widened an SSH rule to
/// the office range declared trusted and another to an address outside it, the detected alert's
/// action is taken only on the second.
#[tokio::test]
async fn automatic_containment_leaves_a_rule_widened_to_a_trusted_range() {
    let s = setup(true).await;
    let (group, office) = s.open_ssh("10.20.0.0/16").await;
    let elsewhere = crate::respond::add_rule(&s, &group, "10.30.0.0/16", 22).await;
    let update = |rule: &str, cidr: &str| {
        json!({"SecurityGroupRuleId": rule,
               "SecurityGroupRule": {"IpProtocol": "tcp", "FromPort": 22, "ToPort": 22, "CidrIpv4": cidr}})
    };
    let request = json!({"ModifySecurityGroupRulesRequest": {"GroupId": group, "SecurityGroupRule": [
        update(&office, "81.2.69.160/32"), update(&elsewhere, "81.2.70.7/32")]}});
    let mut event = crate::support::aws::cloudtrail_event(
        &s.account,
        "evt-modify",
        chrono::Utc::now(),
        "ModifySecurityGroupRules",
        request,
    );
    event["responseElements"] = json!({"ModifySecurityGroupRulesResponse": {"requestId": "r-1", "return": true}});
    // One AuthorizeSecurityGroupIngress call that opened 443 to the world and to the office.
    let world = crate::respond::add_rule(&s, &group, "0.0.0.0/0", 443).await;
    let office_443 = crate::respond::add_rule(&s, &group, "81.2.69.0/24", 443).await;
    let permission = |cidr: &str| json!({"ipProtocol": "tcp", "fromPort": 443, "toPort": 443, "ipRanges": {"items": [{"cidrIp": cidr}]}});
    let mut authorize = crate::support::aws::cloudtrail_event(
        &s.account,
        "evt-authorize",
        chrono::Utc::now(),
        "AuthorizeSecurityGroupIngress",
        json!({"groupId": group, "ipPermissions": {"items": [permission("0.0.0.0/0"), permission("81.2.69.0/24")]}}),
    );
    let item = |rule: &str, cidr: &str| {
        json!({"groupId": group, "securityGroupRuleId": rule, "isEgress": false,
        "ipProtocol": "tcp", "fromPort": 443, "toPort": 443, "cidrIpv4": cidr})
    };
    authorize["responseElements"] = json!({"_return": true, "securityGroupRuleSet": {"items": [
        item(&world, "0.0.0.0/0"), item(&office_443, "81.2.69.0/24")]}});
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("trail.json");
    std::fs::write(&file, json!({"Records": [event, authorize]}).to_string()).unwrap();
    let (code, summary) = s.db.import_json(&[&file]);
    assert_eq!(code, 0, "{summary}");
    assert!(s.db.count(&format!("SELECT count(*) FROM alerts WHERE policy_id = '{SG_POLICY}'")).await >= 1);
    // Without the trusted range every rule of both calls is one to revoke: the range decides.
    let alerts: Vec<String> = sqlx::query_scalar("SELECT alert_id::text FROM alerts WHERE policy_id = $1")
        .bind(SG_POLICY)
        .fetch_all(&s.db.pool)
        .await
        .unwrap();
    let mut untrusted = std::collections::BTreeSet::new();
    for alert in &alerts {
        let applicable = skywarden::respond::suggest::for_alert(&s.db.pool, alert, &[]).await.unwrap().unwrap();
        untrusted.extend(applicable.actions.into_iter().filter(|a| a.kind == "revoke-ingress-rule").map(|a| a.target));
    }
    let all: std::collections::BTreeSet<String> =
        [format!("{group}:{office}"), format!("{group}:{elsewhere}"), world.clone(), office_443.clone()].into();
    assert_eq!(untrusted, all);

    let text = format!(
        "enabled: true\ndry_run: true\naccounts: [\"{}\"]\nrules:\n  - id: revoke-exposed\n    policy: {SG_POLICY}\n\
         \x20   min_severity: low\n    action: revoke-ingress-rule\n",
        s.account
    );
    let rules = AutoRules::parse("test-response.yaml", &text).unwrap();
    let trusted = vec!["81.2.69.0/24".parse().unwrap()];
    let ctx = skywarden::respond::ResponseContext { trusted_cidrs: trusted, ..s.ctx.clone() };
    let report = Containment { rules, ctx }.step().await.unwrap();
    assert!(report.dry_runs >= 1, "{report:?}");
    let targets: std::collections::BTreeSet<String> =
        automatic(&s).await.into_iter().map(|(_, target, _)| target).collect();
    assert_eq!(
        targets,
        [format!("{group}:{elsewhere}"), world].into(),
        "never a rule to the trusted office range, widened or authorised"
    );
}

/// Notices queued before their action was stored (migration 0042 added `automatic_action`; the
/// row has only who and the one-line note), or whose stored action this release cannot read,
/// are still delivered, after the alert's own message: as the status message they also are,
/// with who and the note, never as an empty action.
#[tokio::test]
async fn notices_queued_before_their_action_was_stored_are_delivered_as_status_messages() {
    let s = setup(true).await;
    let (receiver, sender, _key) = webhook_and_key(&s).await;
    let finding = crate::respond_safety::alert_of(&s.account, "gina");
    skywarden::notify::outbox::record_alerts(&s.db.pool, &[finding]).await.unwrap();
    let alert: String = sqlx::query_scalar("SELECT alert_id::text FROM alerts").fetch_one(&s.db.pool).await.unwrap();
    let old = "automatic containment: revoke-ingress-rule sgr-0123456789abcdef0 applied (rule revoke-hijacker-ingress)";
    let later = "automatic containment: quarantine user/gina applied (written by a later release)";
    for (note, action) in [(old, None), (later, Some(json!({"kind": 7, "outcome": {"future": true}})))] {
        sqlx::query(
            "INSERT INTO notification_outbox (channel_id, route_id, event, account_id, alert_id, alert_status,
                                              status_actor, status_reason, dedup_key, automatic_action)
             SELECT channel_id, route_id, 'alert.automatic_action', account_id, alert_id, 'open', 'automatic', $2,
                    dedup_key, $3
             FROM notification_outbox WHERE event = 'alert.opened' AND alert_id = $1::uuid",
        )
        .bind(&alert)
        .bind(note)
        .bind(action)
        .execute(&s.db.pool)
        .await
        .unwrap();
    }

    let mut delivered = 0;
    for _ in 0..5 {
        delivered += sender.deliver_due().await.unwrap().delivered;
    }
    assert_eq!(delivered, 3, "the alert and both notices");
    let bodies: Vec<Value> = receiver.wait_for(3).await.iter().map(|r| r.json()).collect();
    assert_eq!(bodies[0]["event"], "alert.opened", "the alert's own message first: {bodies:#?}");
    let notices: Vec<&Value> = bodies.iter().filter(|b| b["event"] == "alert.status_changed").collect();
    assert_eq!(notices.len(), 2, "{bodies:#?}");
    for (notice, note) in notices.iter().zip([old, later]) {
        assert_eq!(notice["alert"]["id"], alert.as_str());
        assert_eq!(notice["status_change"], json!({"status": "open", "actor": "automatic", "reason": note}));
        assert!(notice.get("automatic_action").is_none(), "no empty action: {notice}");
    }
    let states: Vec<String> =
        sqlx::query_scalar("SELECT state FROM notification_outbox WHERE event = 'alert.automatic_action' ORDER BY id")
            .fetch_all(&s.db.pool)
            .await
            .unwrap();
    assert_eq!(states, ["delivered", "delivered"]);
}

/// Every kind of channel, each to its own receiver on loopback (email to the SMTP test server),
/// with a route for every alert.
async fn seven_channels(s: &Setup, key: &SecretKey) -> (BTreeMap<&'static str, Receiver>, SmtpSink) {
    let policy =
        NetworkPolicy::allowing("127.0.0.1/32").unwrap().with_ca_dir(crate::support::smtp::ca_file().parent().unwrap());
    let issue = Answer::status(201, r#"{"id":"10001","key":"SEC-42"}"#);
    let incident = Answer::status(201, r#"{"result":{"sys_id":"46d44a5dc0a8010e0032c5c2d35c2e5b"}}"#);
    let mut receivers = BTreeMap::new();
    for (name, answer) in [
        ("slack", Answer::status(200, "ok")),
        ("teams", Answer::status(202, "")),
        ("pagerduty", Answer::status(202, r#"{"status":"success"}"#)),
        ("webhook", Answer::status(204, "")),
        ("ocsf", Answer::status(204, "")),
        ("jira", issue),
        ("servicenow", incident),
    ] {
        receivers.insert(name, Receiver::start(answer).await);
    }
    let sink = SmtpSink::start();
    let url = |name: &str, path: &str| receivers[name].url(path);
    let channels = [
        ("slack", ChannelKind::Slack, json!({}), vec![("webhook_url", url("slack", "/services/T/B/x"))]),
        ("teams", ChannelKind::Teams, json!({}), vec![("webhook_url", url("teams", "/webhookb2/x"))]),
        (
            "pagerduty",
            ChannelKind::Pagerduty,
            json!({"events_url": url("pagerduty", "/v2/enqueue")}),
            vec![("routing_key", "R0UT1NG".into())],
        ),
        (
            "webhook",
            ChannelKind::Webhook,
            json!({"url": url("webhook", "/hook")}),
            vec![("signing_secret", "s".into())],
        ),
        (
            "ocsf",
            ChannelKind::Webhook,
            json!({"url": url("ocsf", "/hook"), "format": "ocsf"}),
            vec![("signing_secret", "s".into())],
        ),
        (
            "jira",
            ChannelKind::Jira,
            json!({"base_url": url("jira", ""), "project_key": "SEC", "email": "soc@acme.example", "api_version": 2}),
            vec![("api_token", "t".into())],
        ),
        (
            "servicenow",
            ChannelKind::Servicenow,
            json!({"instance_url": url("servicenow", ""), "username": "sw"}),
            vec![("password", "p".into())],
        ),
        (
            "email",
            ChannelKind::Email,
            json!({"host": "127.0.0.1", "port": sink.port, "security": "starttls", "username": crate::support::smtp::USER,
            "from": "skywarden@acme.example", "to": ["soc@acme.example"], "ca_file": "ca.pem"}),
            vec![("password", crate::support::smtp::PASSWORD.to_owned())],
        ),
    ];
    for (name, kind, settings, secrets) in channels {
        let secrets = secrets.into_iter().map(|(k, v)| (k.to_owned(), SecretInput::Value(Secret::new(&v)))).collect();
        let spec = ChannelSpec { name: name.into(), kind, settings, secrets, enabled: true };
        channels::create(&s.db.pool, &spec, key, &policy).await.unwrap();
        let route: RouteSpec = serde_json::from_value(json!({"name": format!("to-{name}"), "channel": name})).unwrap();
        routes::create(&s.db.pool, &route).await.unwrap();
    }
    (receivers, sink)
}

/// The one request of a receiver that `is` picks out.
fn the_one(receiver: &Receiver, is: impl Fn(&crate::support::receiver::Received) -> bool) -> Value {
    let found: Vec<_> = receiver.received().into_iter().filter(|r| is(r)).collect();
    assert_eq!(found.len(), 1, "{:?}", receiver.received());
    found[0].json()
}

#[tokio::test]
async fn an_automatic_action_reaches_all_seven_kinds_of_receiver_as_what_where_result_and_undo() {
    let s = setup(true).await;
    let key = Arc::new(SecretKey::generate());
    let (receivers, sink) = seven_channels(&s, &key).await;
    let (group, rule) = s.open_ssh("8.8.8.8/32").await;
    import_opening(&s, &group, &rule, "8.8.8.8/32");
    hijack_alert(&s).await;
    let policy =
        NetworkPolicy::allowing("127.0.0.1/32").unwrap().with_ca_dir(crate::support::smtp::ca_file().parent().unwrap());
    let options = SenderOptions { public_url: "https://skywarden.example.com".into(), ..Default::default() };
    let sender = Sender::new(s.db.pool.clone(), key.clone(), SafeHttpClient::new(policy), options);
    let drain = || async {
        for _ in 0..6 {
            sender.deliver_due().await.unwrap();
        }
    };
    drain().await; // the alerts' own messages first: Jira and ServiceNow open their tickets

    let job = Containment { rules: rules(&[&s.account], false, 3, 10), ctx: s.ctx.clone() };
    assert_eq!(job.step().await.unwrap().applied, 1);
    assert!(s.ingress(&group).await.is_empty(), "the rule was revoked");
    let action = record::list(&s.db.pool, Some(&s.account), None, 10).await.unwrap();
    let action = action.iter().find(|r| r.actor == "automatic").unwrap();
    let (alert, incident): (String, Option<String>) =
        sqlx::query_as("SELECT alert_id::text, incident_id FROM alerts WHERE policy_id = $1")
            .bind(SG_POLICY)
            .fetch_one(&s.db.pool)
            .await
            .unwrap();
    let incident = incident.expect("the alert is linked into an incident");
    drain().await;
    let states: Vec<(String, String, Option<String>)> = sqlx::query_as(
        "SELECT c.name, o.state, o.last_error FROM notification_outbox o JOIN notification_channels c ON c.id = o.channel_id
         WHERE o.event = 'alert.automatic_action' ORDER BY c.name",
    )
    .fetch_all(&s.db.pool)
    .await
    .unwrap();
    assert_eq!(states.len(), 8, "{states:?}");
    assert!(states.iter().all(|(_, state, _)| state == "delivered"), "{states:?}");
    let undo = format!("skywarden respond undo {} --reason \"REASON\"", action.id);
    let incident_url = format!("https://skywarden.example.com/#/incident/{incident}");

    let webhook = the_one(&receivers["webhook"], |r| r.json()["event"] == "alert.automatic_action");
    let told = &webhook["automatic_action"];
    assert_eq!((told["outcome"].as_str(), told["kind"].as_str()), (Some("taken"), Some("revoke-ingress-rule")));
    assert_eq!((told["resource"].as_str(), told["region"].as_str()), (Some(action.target.as_str()), Some(REGION)));
    assert_eq!(told["account_id"], s.account);
    assert_eq!((told["result"].as_str(), told["rule"].as_str()), (Some("applied"), Some("revoke-hijacker-ingress")));
    assert_eq!(
        (told["undo_command"].as_str(), told["incident_id"].as_str()),
        (Some(undo.as_str()), Some(incident.as_str()))
    );
    assert_eq!(webhook["alert"]["id"], alert);

    let ocsf = the_one(&receivers["ocsf"], |r| r.json()["unmapped"]["automatic_action"].is_object());
    assert_eq!((ocsf["class_uid"].as_i64(), ocsf["activity_id"].as_i64()), (Some(2004), Some(2)));
    assert_eq!(ocsf["finding_info"]["uid"], alert);
    assert!(ocsf["remediation"]["desc"].as_str().unwrap().contains(&format!("To undo: {undo}")));

    let change = the_one(&receivers["pagerduty"], |r| r.path == "/v2/change/enqueue");
    assert_eq!(change["routing_key"], "R0UT1NG");
    let summary = change["payload"]["summary"].as_str().unwrap();
    assert_eq!(
        summary,
        format!("Automatic action taken: revoke-ingress-rule {} in {}/{REGION}", action.target, s.account)
    );
    assert_eq!(change["payload"]["custom_details"]["Undo command"], undo);
    assert_eq!(change["links"][1]["href"], incident_url);

    let slack = the_one(&receivers["slack"], |r| r.json()["blocks"][0]["text"]["text"] == "Automatic action taken");
    assert!(slack["blocks"][3]["text"]["text"].as_str().unwrap().contains(&undo), "{slack}");
    let teams = the_one(&receivers["teams"], |r| {
        r.json()["attachments"][0]["content"]["body"][0]["text"] == "Automatic action taken"
    });
    let facts = teams["attachments"][0]["content"]["body"][2]["facts"].as_array().unwrap().clone();
    assert!(facts.contains(&json!({"title": "Incident", "value": incident})), "{facts:?}");

    let comment = the_one(&receivers["jira"], |r| {
        r.path == "/rest/api/2/issue/SEC-42/comment" && r.body.windows(9).any(|w| w == b"Automatic")
    });
    let comment = comment["body"].as_str().unwrap();
    assert!(
        comment.contains(&format!("Open the incident: {incident_url}")) && comment.contains("Region: us\\-east\\-1"),
        "{comment}"
    );
    let note = the_one(&receivers["servicenow"], |r| r.method == "PATCH");
    let note = note["work_notes"].as_str().unwrap();
    assert!(
        note.starts_with("Automatic action taken: revoke-ingress-rule") && note.contains(&format!("To undo: {undo}")),
        "{note}"
    );

    let mail = sink.wait_for(3).await;
    let mail: Vec<String> = mail.iter().map(|m| m["data"].as_str().unwrap().replace("\r\n ", " ")).collect();
    let mail = mail.iter().find(|m| m.contains("Subject: Automatic action taken")).expect("the action's own email");
    assert!(mail.contains(&format!("In-Reply-To: <skywarden-{alert}@skywarden>")), "{mail}");
    let body = mail.replace("=\r\n", "").replace("=3D", "=");
    assert!(
        body.contains(&format!("Account: {}", s.account)) && body.contains(&format!("Incident: {incident}")),
        "{body}"
    );
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

/// `skywarden serve` whose trusted ranges (detectors.yaml) cannot be read stops as it does for a
/// bad response.yaml, naming the file, even with --allow-broken-policies (which lets detection
/// run on the defaults): response would judge a rule to the office range as exposed.
#[test]
fn serve_refuses_trusted_ranges_it_cannot_read() {
    let cases: [(&[u8], &str); 2] = [
        (b"security_group_ingress:\n  trusted_cidrs: ['81.2.69.0/24', 'the-office']\n", "the-office"),
        (&[0xff, 0xfe, 0x00], "detectors.yaml"),
    ];
    for (text, named) in cases {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("detectors.yaml"), text).unwrap();
        let output = crate::support::skywarden_command("postgres://postgres@127.0.0.1:1/unused")
            .args(["serve", "--listen", "127.0.0.1:0", "--allow-broken-policies", "--policies"])
            .arg(dir.path())
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(!output.status.success(), "{stderr}");
        assert!(stderr.contains("trusted_cidrs") && stderr.contains(named), "expected {named}: {stderr}");
    }
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
