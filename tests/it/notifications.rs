//! Alert routing end to end: alerts written by the alert store reach real HTTP receivers and a
//! real SMTP server in the shape each service documents; failures are retried, give up into dead
//! letters, survive a killed process; internal targets are refused.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use serde_json::{Value, json};

use crate::support::receiver::{Answer, Receiver, closed_port};
use crate::support::smtp::{self, SmtpSink};
use crate::support::{KillOnDrop, TestDb, mmdb, skywarden_command};
use skywarden::alerts::store::{self as alert_store, AlertFilter};
use skywarden::auth::{self, Role};
use skywarden::http::ApiContext;
use skywarden::model::{AlertStatus, Finding, Mitre, Severity};
use skywarden::notify::channels::{self, ChannelKind, ChannelSpec, SecretInput};
use skywarden::notify::http_client::SafeHttpClient;
use skywarden::notify::network::NetworkPolicy;
use skywarden::notify::outbox;
use skywarden::notify::routes::{self, RouteSpec};
use skywarden::notify::secrets::{Secret, SecretKey};
use skywarden::notify::sender::{Sender, SenderOptions, StepReport};

const PUBLIC_URL: &str = "https://skywarden.example.com";

fn loopback() -> NetworkPolicy {
    // The SMTP test server's CA is in the fixtures: channels name it as `ca.pem`.
    let ca_dir = smtp::ca_file().parent().unwrap().to_path_buf();
    NetworkPolicy::allowing("127.0.0.1/32").unwrap().with_ca_dir(ca_dir)
}

struct Routing {
    key: Arc<SecretKey>,
    sender: Sender,
}

fn routing(db: &TestDb, policy: NetworkPolicy, max_attempts: i32) -> Routing {
    let key = Arc::new(SecretKey::generate());
    let options = SenderOptions {
        public_url: PUBLIC_URL.into(),
        max_attempts,
        retry_base: Duration::from_millis(50),
        lease: Duration::from_secs(30),
        ..Default::default()
    };
    let sender = Sender::new(db.pool.clone(), key.clone(), SafeHttpClient::new(policy), options);
    Routing { key, sender }
}

impl Routing {
    async fn channel(
        &self,
        db: &TestDb,
        name: &str,
        kind: ChannelKind,
        settings: Value,
        secrets: &[(&str, &str)],
    ) -> i64 {
        let spec = ChannelSpec {
            name: name.into(),
            kind,
            settings,
            secrets: secrets
                .iter()
                .map(|(k, v)| (k.to_string(), SecretInput::Value(Secret::new(*v))))
                .collect::<BTreeMap<_, _>>(),
            enabled: true,
        };
        channels::create(&db.pool, &spec, &self.key, &loopback()).await.expect("creating a channel").id
    }

    /// Delivery steps until nothing is left to do now.
    async fn drain(&self) -> StepReport {
        let mut total = StepReport::default();
        for _ in 0..20 {
            let step = self.sender.deliver_due().await.unwrap();
            total.delivered += step.delivered;
            total.retrying += step.retrying;
            total.dead += step.dead;
            total.digests += step.digests;
            if step == StepReport::default() {
                break;
            }
        }
        total
    }
}

async fn route(db: &TestDb, name: &str, channel: &str, extra: Value) {
    let mut spec = json!({"name": name, "channel": channel});
    spec.as_object_mut().unwrap().extend(extra.as_object().cloned().unwrap_or_default());
    let spec: RouteSpec = serde_json::from_value(spec).unwrap();
    routes::create(&db.pool, &spec).await.expect("creating a route");
}

fn hijack(principal: &str, minute: u32) -> Finding {
    Finding {
        policy_id: "aws-account-hijacking-attempt".into(),
        title: "Console login from a country new for the user".into(),
        severity: Severity::High,
        account_id: "111122223333".into(),
        subject: principal.into(),
        dedup_window: chrono::Duration::hours(24),
        principal: Some(principal.into()),
        source_ip: Some("203.0.113.10".parse().unwrap()),
        country: Some("RU".into()),
        resources: vec![],
        evidence_id: format!("evt-{principal}-{minute}"),
        time: format!("2026-11-12T03:{minute:02}:00Z").parse().unwrap(),
        mitre: vec![Mitre::new("TA0001", "T1078.004")],
        session_key: None,
        details: json!({}),
    }
}

async fn alert_id(db: &TestDb, principal: &str) -> String {
    alert_store::list(&db.pool, &AlertFilter::default())
        .await
        .unwrap()
        .into_iter()
        .find(|a| a.principal.as_deref() == Some(principal))
        .expect("the alert")
        .id
}

async fn states(db: &TestDb) -> Vec<(String, String, i32)> {
    sqlx::query_as::<_, (String, String, i32)>("SELECT event, state, attempts FROM notification_outbox ORDER BY id")
        .fetch_all(&db.pool)
        .await
        .unwrap()
}

#[tokio::test]
async fn slack_teams_and_webhooks_get_the_documented_shapes() {
    let db = TestDb::new().await;
    let routing = routing(&db, loopback(), 5);
    let slack = Receiver::start(Answer::status(200, "ok")).await;
    let teams = Receiver::start(Answer::status(202, "")).await;
    let hooks = Receiver::start(Answer::status(204, "")).await;
    routing
        .channel(
            &db,
            "slack",
            ChannelKind::Slack,
            json!({}),
            &[("webhook_url", &slack.url("/services/T0/B0/secretpath"))],
        )
        .await;
    routing
        .channel(&db, "teams", ChannelKind::Teams, json!({}), &[("webhook_url", &teams.url("/webhookb2/abc"))])
        .await;
    routing
        .channel(
            &db,
            "siem",
            ChannelKind::Webhook,
            json!({"url": hooks.url("/skywarden"), "format": "ocsf"}),
            &[("signing_secret", "whsec-1")],
        )
        .await;
    for channel in ["slack", "teams", "siem"] {
        route(&db, &format!("to-{channel}"), channel, json!({"min_severity": "high"})).await;
    }
    // A low alert matches no route.
    let mut low = hijack("carol", 1);
    low.severity = Severity::Low;
    outbox::record_alerts(&db.pool, &[hijack("alice", 4), low]).await.unwrap();
    let alert = alert_id(&db, "alice").await;

    let report = routing.drain().await;
    assert_eq!((report.delivered, report.retrying, report.dead), (3, 0, 0));

    let slack_request = slack.wait_for(1).await.remove(0);
    assert_eq!((slack_request.method.as_str(), slack_request.path.as_str()), ("POST", "/services/T0/B0/secretpath"));
    assert_eq!(slack_request.header("content-type"), Some("application/json"));
    let body = slack_request.json();
    assert_eq!(body["text"], "[HIGH] Console login from a country new for the user: alice from 203.0.113.10 (RU)");
    assert_eq!(body["blocks"][4]["elements"][0]["url"], format!("{PUBLIC_URL}/#/alert/{alert}"));

    let card = teams.wait_for(1).await.remove(0).json();
    assert_eq!(card["attachments"][0]["contentType"], "application/vnd.microsoft.card.adaptive");
    let facts = card["attachments"][0]["content"]["body"][2]["facts"].as_array().unwrap().clone();
    assert!(
        facts.contains(&json!({"title": "Who", "value": "alice"}))
            && facts.contains(&json!({"title": "Country", "value": "RU"}))
    );

    let hook = hooks.wait_for(1).await.remove(0);
    // The receiver's own check of the signature: HMAC-SHA256 over "timestamp.body".
    let timestamp = hook.header("x-skywarden-timestamp").unwrap();
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, b"whsec-1");
    let mut signed = timestamp.as_bytes().to_vec();
    signed.push(b'.');
    signed.extend_from_slice(&hook.body);
    let expected: String = ring::hmac::sign(&key, &signed).as_ref().iter().map(|b| format!("{b:02x}")).collect();
    assert_eq!(hook.header("x-skywarden-signature"), Some(format!("v1={expected}").as_str()));
    assert!((Utc::now().timestamp() - timestamp.parse::<i64>().unwrap()).abs() < 300, "a fresh timestamp");
    assert_eq!(hook.header("x-skywarden-event"), Some("alert.opened"));
    let finding = hook.json();
    assert_eq!((finding["class_uid"].as_i64(), finding["activity_id"].as_i64()), (Some(2004), Some(1)));
    // Who and from where are evidence: a Detection Finding has no top-level actor or endpoint.
    assert_eq!(finding["evidences"][0]["actor"]["user"]["name"], "alice");
    assert_eq!(finding["evidences"][0]["src_endpoint"]["location"]["country"], "RU");

    // Nothing more to send: each alert went once to each channel.
    assert_eq!(routing.drain().await, StepReport::default());
    assert_eq!((slack.received().len(), teams.received().len(), hooks.received().len()), (1, 1, 1));
}

#[tokio::test]
async fn pagerduty_is_triggered_then_acknowledged_and_resolved_on_the_same_key() {
    let db = TestDb::new().await;
    let routing = routing(&db, loopback(), 5);
    let pagerduty = Receiver::start(Answer::status(202, r#"{"status":"success","message":"Event processed"}"#)).await;
    routing
        .channel(
            &db,
            "pager",
            ChannelKind::Pagerduty,
            json!({"events_url": pagerduty.url("/v2/enqueue")}),
            &[("routing_key", "R0UTINGKEY0123456789")],
        )
        .await;
    route(&db, "hijack-pages", "pager", json!({"policies": ["aws-account-*"], "tags": ["TA0001"]})).await;
    outbox::record_alerts(&db.pool, &[hijack("alice", 4)]).await.unwrap();
    let alert = alert_id(&db, "alice").await;
    routing.drain().await;
    outbox::set_alert_status(&db.pool, &alert, AlertStatus::Acknowledged, None, "bob", "looking").await.unwrap();
    outbox::set_alert_status(&db.pool, &alert, AlertStatus::Resolved, None, "bob", "user confirmed travel")
        .await
        .unwrap();
    routing.drain().await;

    let events: Vec<Value> = pagerduty.wait_for(3).await.iter().map(|r| r.json()).collect();
    let actions: Vec<&str> = events.iter().map(|e| e["event_action"].as_str().unwrap()).collect();
    assert_eq!(actions, ["trigger", "acknowledge", "resolve"]);
    assert!(
        events
            .iter()
            .all(|e| e["dedup_key"] == format!("skywarden-{alert}") && e["routing_key"] == "R0UTINGKEY0123456789")
    );
    let trigger = &events[0]["payload"];
    assert_eq!(trigger["severity"], "error");
    assert_eq!(trigger["custom_details"]["Who"], "alice");
    assert_eq!(trigger["custom_details"]["Source IP"], "203.0.113.10");
    assert_eq!(trigger["custom_details"]["Country"], "RU");
    assert!(pagerduty.received().iter().all(|r| r.path == "/v2/enqueue" && r.method == "POST"));
}

#[tokio::test]
async fn jira_and_servicenow_tickets_get_follow_ups_on_their_own_ids() {
    let db = TestDb::new().await;
    let routing = routing(&db, loopback(), 5);
    let jira = Receiver::start(Answer::status(201, "{}")).await;
    jira.script([Answer::status(201, r#"{"id":"10001","key":"SEC-42","self":"x"}"#)]);
    let snow = Receiver::start(Answer::status(200, r#"{"result":{}}"#)).await;
    snow.script([Answer::status(
        201,
        r#"{"result":{"sys_id":"46d44a5dc0a8010e0032c5c2d35c2e5b","number":"INC0010002"}}"#,
    )]);
    routing
        .channel(
            &db,
            "jira",
            ChannelKind::Jira,
            json!({"base_url": jira.url(""), "project_key": "SEC", "email": "soc@acme.example", "api_version": 2}),
            &[("api_token", "jira-token")],
        )
        .await;
    routing
        .channel(
            &db,
            "snow",
            ChannelKind::Servicenow,
            json!({"instance_url": snow.url(""), "username": "skywarden.integration", "close_on_resolve": true}),
            &[("password", "snow-password")],
        )
        .await;
    route(&db, "tickets-jira", "jira", json!({})).await;
    route(&db, "tickets-snow", "snow", json!({"accounts": ["111122223333"]})).await;
    outbox::record_alerts(&db.pool, &[hijack("alice", 4)]).await.unwrap();
    let alert = alert_id(&db, "alice").await;
    routing.drain().await;
    outbox::set_alert_status(&db.pool, &alert, AlertStatus::Resolved, None, "bob", "false positive").await.unwrap();
    routing.drain().await;

    let jira_requests = jira.wait_for(2).await;
    assert_eq!((jira_requests[0].method.as_str(), jira_requests[0].path.as_str()), ("POST", "/rest/api/2/issue"));
    assert_eq!(jira_requests[0].header("authorization"), Some("Basic c29jQGFjbWUuZXhhbXBsZTpqaXJhLXRva2Vu"));
    let issue = jira_requests[0].json();
    assert_eq!(issue["fields"]["project"]["key"], "SEC");
    assert_eq!(issue["fields"]["issuetype"]["name"], "Task");
    assert!(issue["fields"]["description"].as_str().unwrap().contains("Country: RU"));
    assert_eq!(
        (jira_requests[1].method.as_str(), jira_requests[1].path.as_str()),
        ("POST", "/rest/api/2/issue/SEC-42/comment")
    );
    assert!(jira_requests[1].json()["body"].as_str().unwrap().contains("resolved by bob: false positive"));

    let snow_requests = snow.wait_for(2).await;
    assert_eq!(snow_requests[0].path, "/api/now/table/incident?sysparm_display_value=false");
    assert_eq!(snow_requests[0].header("accept"), Some("application/json"));
    let incident = snow_requests[0].json();
    assert_eq!(incident["correlation_id"], format!("skywarden-{alert}"));
    assert!(incident["description"].as_str().unwrap().contains("Source IP: 203.0.113.10"));
    assert_eq!(
        (snow_requests[1].method.as_str(), snow_requests[1].path.as_str()),
        ("PATCH", "/api/now/table/incident/46d44a5dc0a8010e0032c5c2d35c2e5b")
    );
    let update = snow_requests[1].json();
    assert_eq!(update["state"], "6");
    assert!(update["work_notes"].as_str().unwrap().contains("resolved by bob"));

    let refs: Vec<Option<String>> = sqlx::query_scalar(
        "SELECT remote_ref FROM notification_outbox WHERE event = 'alert.opened' ORDER BY channel_id",
    )
    .fetch_all(&db.pool)
    .await
    .unwrap();
    assert_eq!(refs, [Some("SEC-42".to_string()), Some("46d44a5dc0a8010e0032c5c2d35c2e5b".to_string())]);
}

#[tokio::test]
async fn email_goes_over_starttls_with_auth_to_a_real_smtp_server() {
    let sink = SmtpSink::start();
    let db = TestDb::new().await;
    let routing = routing(&db, loopback(), 5);
    routing
        .channel(
            &db,
            "mail",
            ChannelKind::Email,
            json!({"host": "127.0.0.1", "port": sink.port, "security": "starttls", "username": smtp::USER,
                   "from": "Skywarden <skywarden@acme.example>", "to": ["soc@acme.example"],
                   "ca_file": "ca.pem"}),
            &[("password", smtp::PASSWORD)],
        )
        .await;
    route(&db, "mail-all", "mail", json!({})).await;
    outbox::record_alerts(&db.pool, &[hijack("alice", 4)]).await.unwrap();
    let alert = alert_id(&db, "alice").await;
    let report = routing.drain().await;
    assert_eq!(report.delivered, 1, "{:?}", states(&db).await);
    outbox::set_alert_status(&db.pool, &alert, AlertStatus::Acknowledged, None, "bob", "").await.unwrap();
    routing.drain().await;

    let messages = sink.wait_for(2).await;
    let first = &messages[0];
    assert_eq!(first["tls"], true, "STARTTLS was used");
    assert_eq!(first["authenticated_as"], smtp::USER);
    assert_eq!(first["mail_from"], "skywarden@acme.example");
    assert_eq!(first["rcpt_tos"], json!(["soc@acme.example"]));
    let data = first["data"].as_str().unwrap().replace("\r\n ", " ");
    assert!(
        data.contains("Subject: [HIGH] Console login from a country new for the user: alice from 203.0.113.10 (RU)"),
        "{data}"
    );
    assert!(data.contains(&format!("Message-ID: <skywarden-{alert}@skywarden>")));
    // The body is quoted-printable: undo soft line breaks and the escaped `=`.
    let body = data.replace("=\r\n", "").replace("=3D", "=");
    assert!(body.contains(&format!("{PUBLIC_URL}/#/alert/{alert}")), "{body}");
    assert!(body.contains("Next step: Confirm with the user"));
    let second = messages[1]["data"].as_str().unwrap();
    assert!(second.contains(&format!("In-Reply-To: <skywarden-{alert}@skywarden>")));

    // A wrong password is refused for good: a dead letter, not endless retries.
    let db = TestDb::new().await;
    let routing = self::routing(&db, loopback(), 5);
    routing
        .channel(
            &db,
            "mail",
            ChannelKind::Email,
            json!({"host": "127.0.0.1", "port": sink.port, "username": smtp::USER, "from": "skywarden@acme.example",
                   "to": ["soc@acme.example"], "ca_file": "ca.pem"}),
            &[("password", "wrong")],
        )
        .await;
    route(&db, "mail-all", "mail", json!({})).await;
    outbox::record_alerts(&db.pool, &[hijack("alice", 4)]).await.unwrap();
    let report = routing.drain().await;
    assert_eq!(report.dead, 1, "{:?}", states(&db).await);
    assert_eq!(sink.messages().len(), 2);
}

#[tokio::test]
async fn a_receiver_down_then_up_gets_the_alert_once() {
    let db = TestDb::new().await;
    let routing = routing(&db, loopback(), 8);
    let port = closed_port();
    routing
        .channel(
            &db,
            "slack",
            ChannelKind::Slack,
            json!({}),
            &[("webhook_url", &format!("http://127.0.0.1:{port}/services/T0/B0/SECRETPATH"))],
        )
        .await;
    route(&db, "all", "slack", json!({})).await;
    outbox::record_alerts(&db.pool, &[hijack("alice", 4)]).await.unwrap();

    let first = routing.sender.deliver_due().await.unwrap();
    assert_eq!(first.retrying, 1);
    let (_, error): (i32, Option<String>) =
        sqlx::query_as("SELECT attempts, last_error FROM notification_outbox").fetch_one(&db.pool).await.unwrap();
    let error = error.unwrap();
    assert!(error.contains("cannot reach the receiver"), "{error}");
    assert!(!error.contains("SECRETPATH"), "the error names no secret: {error}");

    let receiver = Receiver::start_on(port, Answer::status(200, "ok")).await;
    let mut delivered = 0;
    for _ in 0..100 {
        delivered += routing.sender.deliver_due().await.unwrap().delivered;
        if delivered > 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(delivered, 1);
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(routing.drain().await, StepReport::default());
    assert_eq!(receiver.received().len(), 1, "delivered once");
    assert_eq!(states(&db).await[0].1, "delivered");
}

#[tokio::test]
async fn server_errors_and_throttling_are_retried_honouring_retry_after() {
    let db = TestDb::new().await;
    let routing = routing(&db, loopback(), 8);
    let receiver = Receiver::start(Answer::status(200, "ok")).await;
    receiver.script([
        Answer::status(500, "oops"),
        Answer::Reply { status: 429, body: "slow down".into(), retry_after: Some("2".into()) },
    ]);
    routing.channel(&db, "slack", ChannelKind::Slack, json!({}), &[("webhook_url", &receiver.url("/hook"))]).await;
    route(&db, "all", "slack", json!({})).await;
    outbox::record_alerts(&db.pool, &[hijack("alice", 4)]).await.unwrap();

    assert_eq!(routing.sender.deliver_due().await.unwrap().retrying, 1);
    // The back-off has passed (moved in the database rather than waited for).
    sqlx::query("UPDATE notification_outbox SET next_attempt_at = now()").execute(&db.pool).await.unwrap();
    assert_eq!(routing.sender.deliver_due().await.unwrap().retrying, 1, "the 429 came back as a retry");
    let (status, wait): (Option<i32>, f64) = sqlx::query_as(
        "SELECT last_http_status, extract(epoch FROM next_attempt_at - now())::float8 FROM notification_outbox",
    )
    .fetch_one(&db.pool)
    .await
    .unwrap();
    assert_eq!(status, Some(429));
    assert!(wait > 1.0, "Retry-After: 2 is honoured over the 50 ms back-off (waits {wait:.2} s)");
    // Not before the receiver's time.
    assert_eq!(routing.sender.deliver_due().await.unwrap(), StepReport::default());
    sqlx::query("UPDATE notification_outbox SET next_attempt_at = now()").execute(&db.pool).await.unwrap();
    assert_eq!(routing.sender.deliver_due().await.unwrap().delivered, 1);
    assert_eq!(receiver.received().len(), 3);
}

#[tokio::test]
async fn deliveries_give_up_into_dead_letters_that_analysts_retry() {
    let db = TestDb::new().await;
    let routing = routing(&db, loopback(), 3);
    let receiver = Receiver::start(Answer::status(503, "down")).await;
    let id =
        routing.channel(&db, "slack", ChannelKind::Slack, json!({}), &[("webhook_url", &receiver.url("/hook"))]).await;
    let bad_request = Receiver::start(Answer::status(400, "invalid_payload")).await;
    routing.channel(&db, "broken", ChannelKind::Slack, json!({}), &[("webhook_url", &bad_request.url("/hook"))]).await;
    route(&db, "all", "slack", json!({})).await;
    route(&db, "all-broken", "broken", json!({})).await;
    outbox::record_alerts(&db.pool, &[hijack("alice", 4)]).await.unwrap();
    for _ in 0..100 {
        routing.sender.deliver_due().await.unwrap();
        if states(&db).await.iter().all(|(_, state, _)| state == "dead") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // 503 three times, then dead; a 400 is not retried at all.
    assert_eq!(receiver.received().len(), 3);
    assert_eq!(bad_request.received().len(), 1);

    let (_, analyst) = auth::create(&db.pool, "analyst", Role::Analyst).await.unwrap();
    let context = ApiContext::new(db.pool.clone()).with_notify(routing.key.clone(), routing.sender.clone());
    let (status, dead) =
        crate::api::call_with(&context, "GET", "/api/v1/deliveries?state=dead", Some(&analyst), None).await;
    assert_eq!(status, 200);
    let dead = dead["deliveries"].as_array().unwrap().clone();
    assert_eq!(dead.len(), 2);
    let slack_dead = dead.iter().find(|d| d["channel_id"] == id).unwrap();
    assert_eq!((slack_dead["attempts"].as_i64(), slack_dead["last_http_status"].as_i64()), (Some(3), Some(503)));
    assert!(slack_dead["last_error"].as_str().unwrap().contains("HTTP 503"));
    // Operators see dead letters in the metrics too.
    let scrape = tower::ServiceExt::oneshot(
        skywarden::http::metrics::router(context.clone()),
        axum::http::Request::get("/metrics").body(axum::body::Body::empty()).unwrap(),
    )
    .await
    .unwrap();
    let scrape = axum::body::to_bytes(scrape.into_body(), 1 << 20).await.unwrap();
    assert!(String::from_utf8_lossy(&scrape).contains("skywarden_notifications{state=\"dead\"} 2"));
    let (_, counts) = crate::api::call_with(&context, "GET", "/api/v1/deliveries/counts", Some(&analyst), None).await;
    assert_eq!(counts["dead"], 2);

    receiver.script([Answer::status(200, "ok")]);
    let uri = format!("/api/v1/deliveries/{}/retry", slack_dead["id"]);
    assert_eq!(crate::api::call_with(&context, "POST", &uri, Some(&analyst), None).await.0, 200);
    assert_eq!(routing.drain().await.delivered, 1);
    assert_eq!(receiver.received().len(), 4);
    assert_eq!(
        crate::api::call_with(&context, "POST", &uri, Some(&analyst), None).await.0,
        404,
        "only dead rows retry"
    );
}

#[tokio::test]
async fn internal_targets_are_refused() {
    let db = TestDb::new().await;
    let key = Arc::new(SecretKey::generate());
    let (_, admin) = auth::create(&db.pool, "admin", Role::Admin).await.unwrap();
    let public = Sender::new(
        db.pool.clone(),
        key.clone(),
        SafeHttpClient::new(NetworkPolicy::public_only()),
        SenderOptions::default(),
    );
    let context = ApiContext::new(db.pool.clone()).with_notify(key.clone(), public.clone());
    for (kind, settings, secrets) in [
        (
            "webhook",
            json!({"url": "http://169.254.169.254/latest/meta-data/iam/security-credentials/"}),
            json!({"signing_secret": "s"}),
        ),
        ("slack", json!({}), json!({"webhook_url": "https://127.0.0.1:8443/hook"})),
        (
            "jira",
            json!({"base_url": "https://[::1]/", "project_key": "SEC", "email": "a@b.example"}),
            json!({"api_token": "t"}),
        ),
        ("servicenow", json!({"instance_url": "https://10.0.0.8", "username": "u"}), json!({"password": "p"})),
        ("email", json!({"host": "169.254.169.254", "from": "a@b.example", "to": ["c@d.example"]}), json!({})),
    ] {
        let body = json!({"name": format!("bad-{kind}"), "kind": kind, "settings": settings, "secrets": secrets});
        let (status, answer) =
            crate::api::call_with(&context, "POST", "/api/v1/channels", Some(&admin), Some(body)).await;
        assert_eq!(status, 400, "{kind}: {answer}");
        let error = answer["error"].as_str().unwrap();
        assert!(error.contains("SKYWARDEN_NOTIFY_ALLOW_NETWORKS"), "{kind}: {error}");
    }
    assert_eq!(
        sqlx::query_scalar::<_, i64>("SELECT count(*) FROM notification_channels").fetch_one(&db.pool).await.unwrap(),
        0
    );

    // A target stored while an admin allowed loopback is refused once that is withdrawn, and
    // nothing reaches it.
    let receiver = Receiver::start(Answer::status(200, "ok")).await;
    let allowed = routing(&db, loopback(), 5);
    let routing = Routing {
        key: allowed.key.clone(),
        sender: Sender::new(
            db.pool.clone(),
            allowed.key.clone(),
            SafeHttpClient::new(NetworkPolicy::public_only()),
            SenderOptions::default(),
        ),
    };
    routing
        .channel(
            &db,
            "was-allowed",
            ChannelKind::Webhook,
            json!({"url": receiver.url("/hook")}),
            &[("signing_secret", "s")],
        )
        .await;
    route(&db, "all", "was-allowed", json!({})).await;
    outbox::record_alerts(&db.pool, &[hijack("alice", 4)]).await.unwrap();
    let report = routing.drain().await;
    assert_eq!(report.dead, 1);
    let error: String =
        sqlx::query_scalar("SELECT last_error FROM notification_outbox").fetch_one(&db.pool).await.unwrap();
    assert!(error.contains("refused target") && error.contains("loopback"), "{error}");
    assert!(receiver.received().is_empty());
}

#[tokio::test]
async fn channels_keep_secrets_sealed_and_the_test_button_sends_a_sample() {
    let db = TestDb::new().await;
    let routing = routing(&db, loopback(), 5);
    let receiver = Receiver::start(Answer::status(200, "ok")).await;
    let (_, admin) = auth::create(&db.pool, "admin", Role::Admin).await.unwrap();
    let (_, analyst) = auth::create(&db.pool, "analyst", Role::Analyst).await.unwrap();
    let context = ApiContext::new(db.pool.clone()).with_notify(routing.key.clone(), routing.sender.clone());
    let secret_url = receiver.url("/services/T0/B0/very-secret-path");
    let body = json!({"name": "soc-slack", "kind": "slack", "secrets": {"webhook_url": secret_url}});
    assert_eq!(
        crate::api::call_with(&context, "POST", "/api/v1/channels", Some(&analyst), Some(body.clone())).await.0,
        403
    );
    let (status, created) =
        crate::api::call_with(&context, "POST", "/api/v1/channels", Some(&admin), Some(body.clone())).await;
    assert_eq!(status, 201, "{created}");
    assert_eq!(created["secrets"], json!(["webhook_url"]));
    assert_eq!(crate::api::call_with(&context, "POST", "/api/v1/channels", Some(&admin), Some(body)).await.0, 409);
    let id = created["id"].as_i64().unwrap();

    let (status, listed) = crate::api::call_with(&context, "GET", "/api/v1/channels", Some(&analyst), None).await;
    assert_eq!(status, 200);
    // The secret is nowhere: not in answers, not in the table, not in the audit log.
    assert!(!listed.to_string().contains("very-secret-path") && !created.to_string().contains("very-secret-path"));
    let leaks: i64 = sqlx::query_scalar(
        "SELECT (SELECT count(*) FROM notification_channels WHERE position('very-secret-path' in settings::text || secret_refs::text || encode(sealed_secrets, 'escape')) > 0)
              + (SELECT count(*) FROM audit_log WHERE position('very-secret-path' in details::text) > 0)",
    )
    .fetch_one(&db.pool)
    .await
    .unwrap();
    assert_eq!(leaks, 0);

    let (status, answer) =
        crate::api::call_with(&context, "POST", &format!("/api/v1/channels/{id}/test"), Some(&admin), None).await;
    assert_eq!((status.as_u16(), answer["delivered"].as_bool()), (200, Some(true)), "{answer}");
    let sample = receiver.wait_for(1).await.remove(0);
    assert_eq!(sample.path, "/services/T0/B0/very-secret-path");
    assert!(sample.json()["text"].as_str().unwrap().contains("[Test]"));

    // Renaming keeps the secret; a new secret replaces it.
    let change = json!({"name": "soc-chat"});
    let (status, renamed) =
        crate::api::call_with(&context, "PATCH", &format!("/api/v1/channels/{id}"), Some(&admin), Some(change)).await;
    assert_eq!((status.as_u16(), renamed["name"].as_str()), (200, Some("soc-chat")));
    assert_eq!(
        crate::api::call_with(&context, "POST", &format!("/api/v1/channels/{id}/test"), Some(&admin), None).await.1["delivered"],
        true
    );
    assert_eq!(receiver.received().len(), 2);

    // Routes name their channel; a PagerDuty route cannot be a digest.
    let route = json!({"name": "hijacks", "channel": "soc-chat", "policies": ["aws-account-hijacking-attempt"], "min_severity": "high"});
    let (status, created_route) =
        crate::api::call_with(&context, "POST", "/api/v1/routes", Some(&admin), Some(route)).await;
    assert_eq!(status, 201, "{created_route}");
    let bad = json!({"name": "x", "channel": "nope"});
    let (status, answer) = crate::api::call_with(&context, "POST", "/api/v1/routes", Some(&admin), Some(bad)).await;
    assert_eq!(status, 400);
    assert!(answer["error"].as_str().unwrap().contains("no channel named"));
}

#[tokio::test]
async fn digest_routes_send_one_message_for_many_alerts() {
    let db = TestDb::new().await;
    let routing = routing(&db, loopback(), 5);
    let receiver = Receiver::start(Answer::status(200, "ok")).await;
    routing.channel(&db, "slack", ChannelKind::Slack, json!({}), &[("webhook_url", &receiver.url("/hook"))]).await;
    route(&db, "hourly", "slack", json!({"digest_minutes": 60})).await;
    outbox::record_alerts(&db.pool, &[hijack("alice", 4), hijack("bob", 5), hijack("carol", 6)]).await.unwrap();
    assert_eq!(routing.drain().await, StepReport::default(), "nothing before the period ends");
    sqlx::query("UPDATE notification_digest_items SET added_at = added_at - interval '61 minutes'")
        .execute(&db.pool)
        .await
        .unwrap();
    let report = routing.drain().await;
    assert_eq!((report.digests, report.delivered), (1, 1));
    let body = receiver.wait_for(1).await.remove(0).json();
    let text = body["text"].as_str().unwrap();
    assert!(text.starts_with("Skywarden: 3 new alerts in the last 60 minutes"), "{text}");
    for who in ["alice", "bob", "carol"] {
        assert!(text.contains(&format!("{who} from 203.0.113.10 (RU)")), "{text}");
    }
    assert_eq!(routing.drain().await, StepReport::default());
}

fn write_notifications_file(dir: &Path, pagerduty: &Receiver) -> std::path::PathBuf {
    let path = dir.join("notifications.yaml");
    std::fs::write(
        &path,
        format!(
            r#"channels:
  - name: soc-slack
    kind: slack
    secrets:
      webhook_url: env:TEST_SLACK_WEBHOOK_URL
  - name: oncall
    kind: pagerduty
    settings:
      events_url: {pd}
    secrets:
      routing_key: file:{key}
routes:
  - name: hijack-to-slack
    channel: soc-slack
    policies: [aws-account-hijacking-attempt]
  - name: high-to-pager
    channel: oncall
    min_severity: high
    policies: [aws-account-hijacking-attempt]
"#,
            pd = pagerduty.url("/v2/enqueue"),
            key = dir.join("pd.key").display()
        ),
    )
    .unwrap();
    std::fs::write(dir.join("pd.key"), "PDKEY00000000000000000000000000\n").unwrap();
    path
}

/// The seed story's hijack alert, from the sample incident, reaches Slack and PagerDuty
/// receivers, even though the process that raised it was killed before it could send it.
#[tokio::test]
async fn the_sample_hijack_alert_reaches_slack_and_pagerduty_after_a_crash() {
    let db = TestDb::new().await;
    let dir = tempfile::tempdir().unwrap();
    let geo = mmdb::sample_incident_countries(dir.path());
    // The receivers hang on the first request: the sender is caught mid-delivery and killed.
    let slack = Receiver::start(Answer::status(200, "ok")).await;
    let pagerduty = Receiver::start(Answer::status(202, r#"{"status":"success"}"#)).await;
    slack.script([Answer::Hang]);
    pagerduty.script([Answer::Hang]);
    let config = write_notifications_file(dir.path(), &pagerduty);
    let with_env = |command: &mut std::process::Command| {
        command
            .env("SKYWARDEN_NOTIFICATIONS", &config)
            .env("SKYWARDEN_NOTIFY_ALLOW_NETWORKS", "127.0.0.1/32")
            .env("SKYWARDEN_PUBLIC_URL", PUBLIC_URL)
            .env("SKYWARDEN_SECRET_KEY_FILE", dir.path().join("secret.key"))
            .env("TEST_SLACK_WEBHOOK_URL", slack.url("/services/T0/B0/crash-test"))
            .env("SKYWARDEN_NOTIFY_LEASE", "10s")
            .env("SKYWARDEN_NOTIFY_RETRY_BASE", "200ms")
            .env("RUST_LOG", "info");
    };
    let mut apply = skywarden_command(&db.url);
    with_env(&mut apply);
    let output = apply.args(["notifications", "apply"]).output().unwrap();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));

    let incident = Path::new(env!("CARGO_MANIFEST_DIR")).join("samples/incident");
    let output = db.skywarden(&["import", "--geoip", geo.to_str().unwrap(), incident.to_str().unwrap()]);
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let queued: i64 = sqlx::query_scalar("SELECT count(*) FROM notification_outbox WHERE state = 'pending'")
        .fetch_one(&db.pool)
        .await
        .unwrap();
    assert!(queued >= 2, "the import queued the hijack alert for both channels ({queued})");

    let serve = |log: &Path| {
        let mut command = skywarden_command(&db.url);
        with_env(&mut command);
        command
            .args(["serve", "--no-pollers", "--listen", "127.0.0.1:0"])
            .stdout(std::process::Stdio::null())
            .stderr(std::fs::File::create(log).unwrap());
        KillOnDrop(command.spawn().unwrap())
    };
    let first_log = dir.path().join("first.log");
    let mut first = serve(&first_log);
    slack.wait_for(1).await;
    pagerduty.wait_for(1).await;
    // Killed hard while both deliveries are in flight.
    first.0.kill().unwrap();
    first.0.wait().unwrap();
    let sending: i64 = sqlx::query_scalar("SELECT count(*) FROM notification_outbox WHERE state = 'sending'")
        .fetch_one(&db.pool)
        .await
        .unwrap();
    assert!(sending >= 2, "deliveries were in flight when the process died");

    let second_log = dir.path().join("second.log");
    let _second = serve(&second_log);
    let slack_requests = slack.wait_for(2).await;
    let pager_requests = pagerduty.wait_for(2).await;
    for _ in 0..100 {
        let left: i64 = sqlx::query_scalar("SELECT count(*) FROM notification_outbox WHERE state <> 'delivered'")
            .fetch_one(&db.pool)
            .await
            .unwrap();
        if left == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let hijack = alert_store::list(
        &db.pool,
        &AlertFilter { policy_id: Some("aws-account-hijacking-attempt".into()), ..Default::default() },
    )
    .await
    .unwrap()
    .remove(0);
    let (principal, ip, country) = (hijack.principal.unwrap(), hijack.source_ip.unwrap(), hijack.country.unwrap());

    // At least once, with the same dedup key: the repeat is recognisable.
    let retried = slack_requests.last().unwrap().json();
    let text = retried["text"].as_str().unwrap();
    assert!(text.contains(&principal) && text.contains(&ip) && text.contains(&format!("({country})")), "{text}");
    assert_eq!(slack_requests[0].json(), retried, "the redelivery is the same message");
    let trigger = pager_requests.last().unwrap().json();
    assert_eq!(trigger["event_action"], "trigger");
    assert_eq!(trigger["routing_key"], "PDKEY00000000000000000000000000");
    assert_eq!(trigger["dedup_key"], pager_requests[0].json()["dedup_key"]);
    assert_eq!(trigger["payload"]["custom_details"]["Who"], principal);
    assert_eq!(trigger["payload"]["custom_details"]["Source IP"], ip);
    assert_eq!(trigger["payload"]["custom_details"]["Country"], country);
    assert!(trigger["links"][0]["href"].as_str().unwrap().starts_with(&format!("{PUBLIC_URL}/#/alert/")));

    // Secrets never reach the logs.
    for log in [&first_log, &second_log] {
        let text = std::fs::read_to_string(log).unwrap();
        assert!(!text.contains("crash-test") && !text.contains("PDKEY"), "a secret in {}: {text}", log.display());
    }
    // Channels from the file cannot be changed through the API.
    let (_, admin) = auth::create(&db.pool, "admin", Role::Admin).await.unwrap();
    let id: i64 = sqlx::query_scalar("SELECT id FROM notification_channels WHERE name = 'oncall'")
        .fetch_one(&db.pool)
        .await
        .unwrap();
    let context = ApiContext::new(db.pool.clone()).with_notify(
        Arc::new(SecretKey::generate()),
        Sender::new(
            db.pool.clone(),
            Arc::new(SecretKey::generate()),
            SafeHttpClient::new(loopback()),
            SenderOptions::default(),
        ),
    );
    let (status, _) =
        crate::api::call_with(&context, "DELETE", &format!("/api/v1/channels/{id}"), Some(&admin), None).await;
    assert_eq!(status, 409);
}

#[tokio::test]
async fn answers_are_read_up_to_a_bound_and_calls_time_out() {
    use skywarden::notify::http_client::{HttpError, MAX_RESPONSE_BYTES, OutgoingRequest};
    let big = Receiver::start(Answer::status(200, &"x".repeat(1 << 20))).await;
    let client = SafeHttpClient::new(loopback());
    let reply = client.send(&OutgoingRequest::post_json(big.url("/big"), &json!({}))).await.unwrap();
    assert_eq!((reply.status, reply.body.len()), (200, MAX_RESPONSE_BYTES));

    let silent = Receiver::start(Answer::Hang).await;
    let client = SafeHttpClient::new(loopback()).with_timeout(Duration::from_millis(300));
    let error = client.send(&OutgoingRequest::post_json(silent.url("/slow"), &json!({}))).await.unwrap_err();
    assert!(matches!(error, HttpError::Timeout(_)), "the call gives up instead of hanging: {error}");
}

#[tokio::test]
async fn disabled_channels_hold_their_deliveries_and_resolved_alerts_are_not_reopened_by_a_retry() {
    let db = TestDb::new().await;
    let routing = routing(&db, loopback(), 5);
    let receiver = Receiver::start(Answer::status(202, "{}")).await;
    let id = routing
        .channel(
            &db,
            "pager",
            ChannelKind::Pagerduty,
            json!({"events_url": receiver.url("/v2/enqueue")}),
            &[("routing_key", "K")],
        )
        .await;
    route(&db, "all", "pager", json!({})).await;
    // Queued while enabled, then the channel is disabled: nothing goes out.
    outbox::record_alerts(&db.pool, &[hijack("alice", 4)]).await.unwrap();
    channels::update(
        &db.pool,
        id,
        &channels::ChannelUpdate { enabled: Some(false), ..Default::default() },
        &routing.key,
        &loopback(),
    )
    .await
    .unwrap();
    assert_eq!(routing.drain().await.dead, 1);
    // A disabled channel gets nothing new queued at all.
    outbox::record_alerts(&db.pool, &[hijack("bob", 5)]).await.unwrap();
    assert_eq!(db.count("SELECT count(*) FROM notification_outbox").await, 1);
    let error: String =
        sqlx::query_scalar("SELECT last_error FROM notification_outbox").fetch_one(&db.pool).await.unwrap();
    assert!(error.contains("disabled"), "{error}");
    assert!(receiver.received().is_empty());

    // Enabled again, the alert is resolved and the resolve is delivered; retrying the dead
    // trigger now would reopen the incident, so it is refused.
    channels::update(
        &db.pool,
        id,
        &channels::ChannelUpdate { enabled: Some(true), ..Default::default() },
        &routing.key,
        &loopback(),
    )
    .await
    .unwrap();
    let alert = alert_id(&db, "alice").await;
    outbox::set_alert_status(&db.pool, &alert, AlertStatus::Resolved, None, "bob", "done").await.unwrap();
    let report = routing.drain().await;
    assert_eq!(report.delivered, 1, "{report:?} {:?}", states(&db).await);
    let dead: i64 = sqlx::query_scalar("SELECT id FROM notification_outbox WHERE state = 'dead'")
        .fetch_one(&db.pool)
        .await
        .unwrap();
    assert_eq!(
        skywarden::notify::outbox::retry(&db.pool, dead).await.unwrap(),
        skywarden::notify::outbox::Retry::Superseded
    );
    assert_eq!(
        receiver.received().iter().map(|r| r.json()["event_action"].as_str().unwrap().to_string()).collect::<Vec<_>>(),
        ["resolve"]
    );
}

#[tokio::test]
async fn reapplying_the_config_file_keeps_routes_and_waiting_digests() {
    use skywarden::notify::config::NotificationsFile;
    let db = TestDb::new().await;
    let key = SecretKey::generate();
    let text = "channels:\n  - {name: chat, kind: slack, secrets: {webhook_url: env:SKYWARDEN_TEST_UNUSED_HOOK}}\nroutes:\n  - {name: daily, channel: chat, digest_minutes: 1440, status_updates: false}\n";
    let file = NotificationsFile::parse("n.yaml", text).unwrap();
    file.apply("n.yaml", &db.pool, &key, &loopback()).await.unwrap();
    let route_before: i64 = sqlx::query_scalar("SELECT id FROM notification_routes").fetch_one(&db.pool).await.unwrap();
    outbox::record_alerts(&db.pool, &[hijack("alice", 4)]).await.unwrap();
    assert_eq!(db.count("SELECT count(*) FROM notification_digest_items").await, 1);
    file.apply("n.yaml", &db.pool, &key, &loopback()).await.unwrap();
    let route_after: i64 = sqlx::query_scalar("SELECT id FROM notification_routes").fetch_one(&db.pool).await.unwrap();
    assert_eq!(route_before, route_after, "the route keeps its id");
    assert_eq!(db.count("SELECT count(*) FROM notification_digest_items").await, 1, "the waiting digest item survives");
    // A channel that leaves the file takes its routes (and their waiting items) with it.
    NotificationsFile::parse("n.yaml", "channels: []\n")
        .unwrap()
        .apply("n.yaml", &db.pool, &key, &loopback())
        .await
        .unwrap();
    assert_eq!(db.count("SELECT count(*) FROM notification_routes").await, 0);
}

/// A create that timed out or failed on our side may have worked on theirs: the retry looks for
/// the ticket by its dedup key before creating another.
#[tokio::test]
async fn a_retried_ticket_is_found_before_it_is_created_twice() {
    let db = TestDb::new().await;
    let routing = routing(&db, loopback(), 5);
    let jira = Receiver::start(Answer::status(201, r#"{"key":"SEC-99"}"#)).await;
    // The first create "fails" (the issue was made but the answer lost); the search finds it.
    jira.script([
        Answer::status(502, "bad gateway"),
        Answer::status(200, r#"{"issues":[{"id":"10009","key":"SEC-9"}]}"#),
    ]);
    let snow = Receiver::start(Answer::status(201, r#"{"result":{"sys_id":"new"}}"#)).await;
    snow.script([Answer::status(503, "busy"), Answer::status(200, r#"{"result":[]}"#)]);
    routing
        .channel(
            &db,
            "jira",
            ChannelKind::Jira,
            json!({"base_url": jira.url(""), "project_key": "SEC", "email": "a@acme.example"}),
            &[("api_token", "t")],
        )
        .await;
    routing
        .channel(
            &db,
            "snow",
            ChannelKind::Servicenow,
            json!({"instance_url": snow.url(""), "username": "u"}),
            &[("password", "p")],
        )
        .await;
    route(&db, "jira-all", "jira", json!({})).await;
    route(&db, "snow-all", "snow", json!({})).await;
    outbox::record_alerts(&db.pool, &[hijack("alice", 4)]).await.unwrap();
    let alert = alert_id(&db, "alice").await;
    assert_eq!(routing.sender.deliver_due().await.unwrap().retrying, 2);
    sqlx::query("UPDATE notification_outbox SET next_attempt_at = now()").execute(&db.pool).await.unwrap();
    assert_eq!(routing.drain().await.delivered, 2);

    let jira_requests = jira.received();
    let calls: Vec<(String, String)> = jira_requests.iter().map(|r| (r.method.clone(), r.path.clone())).collect();
    assert_eq!(calls[0], ("POST".to_string(), "/rest/api/3/issue".to_string()));
    assert_eq!(
        calls[1],
        (
            "GET".to_string(),
            format!("/rest/api/3/search/jql?jql=labels%20%3D%20%22skywarden-{alert}%22&fields=key&maxResults=1")
        )
    );
    assert_eq!(calls.len(), 2, "found, not created twice: {calls:?}");
    assert!(jira_requests[1].header("authorization").is_some_and(|a| a.starts_with("Basic ")));
    // ServiceNow's search finds nothing, so the incident is created.
    let snow_calls: Vec<String> = snow.received().iter().map(|r| format!("{} {}", r.method, r.path)).collect();
    assert_eq!(snow_calls.len(), 3, "{snow_calls:?}");
    assert!(
        snow_calls[1]
            .starts_with(&format!("GET /api/now/table/incident?sysparm_query=correlation_id%3Dskywarden-{alert}"))
    );
    assert!(snow_calls[2].starts_with("POST /api/now/table/incident"));
    let refs: Vec<Option<String>> =
        sqlx::query_scalar("SELECT remote_ref FROM notification_outbox ORDER BY channel_id")
            .fetch_all(&db.pool)
            .await
            .unwrap();
    assert_eq!(refs, [Some("SEC-9".to_string()), Some("new".to_string())]);
}

#[tokio::test]
async fn an_alert_that_escalates_reaches_the_routes_of_its_new_severity_once() {
    let db = TestDb::new().await;
    let routing = routing(&db, loopback(), 5);
    let chat = Receiver::start(Answer::status(200, "ok")).await;
    let pager = Receiver::start(Answer::status(202, "{}")).await;
    routing.channel(&db, "chat", ChannelKind::Slack, json!({}), &[("webhook_url", &chat.url("/hook"))]).await;
    routing
        .channel(
            &db,
            "pager",
            ChannelKind::Pagerduty,
            json!({"events_url": pager.url("/v2/enqueue")}),
            &[("routing_key", "K")],
        )
        .await;
    route(&db, "medium-chat", "chat", json!({"min_severity": "medium"})).await;
    route(&db, "high-pager", "pager", json!({"min_severity": "high"})).await;
    let mut first = hijack("alice", 4);
    first.severity = Severity::Medium;
    outbox::record_alerts(&db.pool, &[first]).await.unwrap();
    routing.drain().await;
    assert_eq!((chat.received().len(), pager.received().len()), (1, 0));
    // Later evidence of the same alert is high: the pager hears of it now, the chat not again.
    outbox::record_alerts(&db.pool, &[hijack("alice", 9)]).await.unwrap();
    routing.drain().await;
    assert_eq!((chat.received().len(), pager.received().len()), (1, 1));
    assert_eq!(pager.received()[0].json()["payload"]["severity"], "error");
}

/// A route's policy patterns have one wildcard, `*`; every other character is itself, a
/// backslash included (it escapes nothing, and LIKE's own `%` and `_` are plain too). Both ways a
/// route is matched (a new alert, and an automatic action's notice) follow the same rule.
#[tokio::test]
async fn a_backslash_in_a_route_pattern_is_a_plain_character() {
    let db = TestDb::new().await;
    let routing = routing(&db, loopback(), 5);
    let hooks = Receiver::start(Answer::status(204, "")).await;
    routing
        .channel(&db, "siem", ChannelKind::Webhook, json!({"url": hooks.url("/hook")}), &[("signing_secret", "s")])
        .await;
    route(&db, "team-a", "siem", json!({"policies": ["team\\a_*"]})).await;
    let finding = |policy: &str, principal: &str| {
        let mut finding = hijack(principal, 1);
        finding.policy_id = policy.into();
        finding
    };
    let policies = [
        ("team\\a_1", "one-backslash"),     // the pattern's own characters, then anything
        ("teama_1", "no-backslash"),        // the backslash is not an escape that vanishes
        ("team\\\\a_1", "two-backslashes"), // nor does `\\` in the data match one
        ("team\\aX1", "underscore-as-any"), // `_` is not LIKE's any-character
        ("team\\a_", "empty-rest"),         // `*` matches nothing too
    ];
    let findings: Vec<Finding> = policies.iter().map(|(policy, who)| finding(policy, who)).collect();
    outbox::record_alerts(&db.pool, &findings).await.unwrap();
    let routed: Vec<String> = sqlx::query_scalar(
        "SELECT a.principal FROM notification_outbox o JOIN alerts a ON a.alert_id = o.alert_id ORDER BY a.principal",
    )
    .fetch_all(&db.pool)
    .await
    .unwrap();
    assert_eq!(routed, ["empty-rest", "one-backslash"]);

    // An automatic action's notice goes by the same rule.
    let notice = |alert: &str| skywarden::notify::message::AutomaticAction {
        outcome: skywarden::notify::message::ActionOutcome::DryRun,
        kind: "quarantine".into(),
        resource: "user/alice".into(),
        account_id: "111122223333".into(),
        region: "global".into(),
        rule: "r".into(),
        result: "dry run, nothing changed".into(),
        action_id: None,
        undo: "nothing to undo: nothing was changed".into(),
        undo_command: None,
        at: None,
        incident_id: Some(alert.into()),
        incident_url: None,
    };
    for (_, who) in policies {
        let alert = alert_id(&db, who).await;
        let queued =
            outbox::enqueue_automatic_action(&db.pool, &alert, "automatic", "note", &notice(&alert)).await.unwrap();
        assert_eq!(queued, u64::from(["one-backslash", "empty-rest"].contains(&who)), "{who}");
    }
}
