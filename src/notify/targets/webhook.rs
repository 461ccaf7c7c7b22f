//! Generic webhooks: a JSON body in Skywarden's schema (or an OCSF 1.1 Detection Finding),
//! signed with HMAC-SHA256 over `"{timestamp}.{body}"` so receivers can check the sender and
//! refuse replays. The schema is documented in `docs/webhooks.md`.

use chrono::{DateTime, Utc};
use ring::hmac;
use serde_json::{Value, json};

use super::{Envelope, Notification};
use crate::model::{AlertStatus, Severity};
use crate::notify::channels::{Channel, ChannelError, WebhookFormat, WebhookSettings};
use crate::notify::http_client::OutgoingRequest;
use crate::notify::limits::{self, OCSF_STRING};
use crate::notify::message::{AlertMessage, AutomaticAction};

pub const SCHEMA: &str = "skywarden.notification/v1";
pub const SIGNATURE_HEADER: &str = "x-skywarden-signature";
pub const TIMESTAMP_HEADER: &str = "x-skywarden-timestamp";
pub const EVENT_HEADER: &str = "x-skywarden-event";
pub const DELIVERY_HEADER: &str = "x-skywarden-delivery";

/// `v1=<hex HMAC-SHA256(secret, "{timestamp}.{body}")>`
pub fn signature(secret: &str, timestamp: i64, body: &[u8]) -> String {
    let key = hmac::Key::new(hmac::HMAC_SHA256, secret.as_bytes());
    let mut context = hmac::Context::with_key(&key);
    context.update(timestamp.to_string().as_bytes());
    context.update(b".");
    context.update(body);
    let tag = context.sign();
    let hex: String = tag.as_ref().iter().map(|b| format!("{b:02x}")).collect();
    format!("v1={hex}")
}

fn skywarden_body(notification: &Notification<'_>, envelope: &Envelope, now: DateTime<Utc>) -> Value {
    let mut body = json!({
        "schema": SCHEMA,
        "event": notification.event(),
        "delivery_id": envelope.delivery_id,
        "dedup_key": envelope.dedup_key,
        "sent_at": now.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
    });
    match notification {
        Notification::Opened(alert) => body["alert"] = json!(alert),
        Notification::StatusChanged { alert, status, actor, reason, .. } => {
            body["alert"] = json!(alert);
            body["status_change"] = json!({"status": status, "actor": actor, "reason": reason});
        }
        Notification::Digest { alerts, period_minutes } => {
            body["alerts"] = json!(alerts);
            body["period_minutes"] = json!(period_minutes);
        }
        Notification::AutomaticAction { alert, action, .. } => {
            body["alert"] = json!(alert);
            body["automatic_action"] = json!(action);
        }
    }
    body
}

pub fn ocsf_severity(severity: Severity) -> (i64, &'static str) {
    match severity {
        Severity::Info => (1, "Informational"),
        Severity::Low => (2, "Low"),
        Severity::Medium => (3, "Medium"),
        Severity::High => (4, "High"),
        Severity::Critical => (5, "Critical"),
    }
}

/// Who did it and from where, as OCSF evidence: a Detection Finding has no `actor` without the
/// host profile and no `src_endpoint` at all, while `evidences[]` takes both.
fn ocsf_evidence(alert: &AlertMessage) -> Option<Value> {
    let mut evidence = serde_json::Map::new();
    if let Some(principal) = &alert.principal {
        evidence.insert("actor".into(), json!({"user": {"name": limits::truncate(principal, OCSF_STRING)}}));
    }
    if let Some(ip) = &alert.source_ip {
        let mut endpoint = json!({"ip": ip});
        if let Some(country) = &alert.country {
            endpoint["location"] = json!({"country": limits::truncate(country, OCSF_STRING)});
        }
        evidence.insert("src_endpoint".into(), endpoint);
    }
    (!evidence.is_empty()).then_some(Value::Object(evidence))
}

/// OCSF 1.1.0 Detection Finding (class 2004) for one alert, with the cloud profile (the AWS
/// account it happened in) declared in `metadata.profiles`.
pub fn ocsf_finding(alert: &AlertMessage, activity: (i64, &str), status: AlertStatus, now: DateTime<Utc>) -> Value {
    let (severity_id, severity) = ocsf_severity(alert.severity);
    let (status_id, status_name) = match status {
        AlertStatus::Open => (1, "New"),
        AlertStatus::Acknowledged => (2, "In Progress"),
        AlertStatus::Snoozed | AlertStatus::Dismissed => (3, "Suppressed"),
        AlertStatus::Resolved => (4, "Resolved"),
    };
    let attacks: Vec<Value> = alert
        .mitre
        .iter()
        .map(|label| {
            let (tactic, technique) = label.split_once('/').unwrap_or((label, ""));
            json!({"tactic": {"uid": tactic}, "technique": {"uid": technique}, "version": "14"})
        })
        .collect();
    let mut finding = json!({
        "class_uid": 2004,
        "class_name": "Detection Finding",
        "category_uid": 2,
        "category_name": "Findings",
        "activity_id": activity.0,
        "activity_name": activity.1,
        "type_uid": 200400 + activity.0,
        "time": now.timestamp_millis(),
        "severity_id": severity_id,
        "severity": severity,
        "status_id": status_id,
        "status": status_name,
        "message": limits::truncate(&alert.summary(), OCSF_STRING),
        "metadata": {
            "version": "1.1.0",
            "profiles": ["cloud"],
            "product": {"name": "Skywarden", "vendor_name": "Skywarden", "version": env!("CARGO_PKG_VERSION")},
            "uid": alert.dedup_key
        },
        "finding_info": {
            "uid": alert.id,
            "title": limits::truncate(&alert.title, OCSF_STRING),
            "desc": limits::truncate(&alert.text(), OCSF_STRING),
            "src_url": alert.url,
            "types": [alert.policy_id],
            "created_time": alert.first_seen.timestamp_millis(),
            "first_seen_time": alert.first_seen.timestamp_millis(),
            "last_seen_time": alert.last_seen.timestamp_millis(),
            "analytic": {"uid": alert.policy_id, "name": alert.policy_id, "type_id": 1, "type": "Rule"},
            "attacks": attacks
        },
        "cloud": {"provider": "AWS", "account": {"uid": alert.account_id, "type_id": 10, "type": "AWS Account"}},
        "resources": alert.resources.iter().map(|r| json!({"uid": r})).collect::<Vec<_>>(),
        "remediation": {"desc": alert.next_step}
    });
    if let Some(evidence) = ocsf_evidence(alert) {
        finding["evidences"] = json!([evidence]);
    }
    finding
}

fn ocsf_body(notification: &Notification<'_>, now: DateTime<Utc>) -> Value {
    match notification {
        Notification::Opened(alert) => ocsf_finding(alert, (1, "Create"), alert.status, now),
        Notification::StatusChanged { alert, status, .. } => {
            let activity = if matches!(status, AlertStatus::Resolved | AlertStatus::Dismissed) {
                (3, "Close")
            } else {
                (2, "Update")
            };
            ocsf_finding(alert, activity, *status, now)
        }
        Notification::AutomaticAction { alert, action, .. } => ocsf_automatic_action(alert, action, now),
        // A digest in OCSF is a list of findings.
        Notification::Digest { alerts, .. } => {
            Value::Array(alerts.iter().map(|a| ocsf_finding(a, (1, "Create"), a.status, now)).collect())
        }
    }
}

/// What automatic containment did, in OCSF 1.1.0: an Update of the alert's Detection Finding
/// (the finding a SIEM already holds, same `finding_info.uid`) whose `remediation` says what was
/// done, the result and how to undo it, with the links in `remediation.references`; the
/// structured action is in `unmapped.automatic_action` (OCSF's place for what it has no field
/// for). OCSF 1.1.0 has no remediation class (Remediation Activity came in 1.3.0).
pub fn ocsf_automatic_action(alert: &AlertMessage, action: &AutomaticAction, now: DateTime<Utc>) -> Value {
    let mut finding = ocsf_finding(alert, (2, "Update"), alert.status, now);
    let mut desc = action.text(alert);
    desc.truncate(desc.char_indices().nth(OCSF_STRING).map_or(desc.len(), |(at, _)| at));
    let references: Vec<String> = action.links(alert).into_iter().map(|(_, url)| url).collect();
    finding["message"] = json!(limits::truncate(&action.headline(), OCSF_STRING));
    finding["remediation"] = json!({"desc": desc, "references": references});
    finding["unmapped"] = json!({"automatic_action": action});
    finding
}

pub fn request(
    channel: &Channel,
    notification: &Notification<'_>,
    envelope: &Envelope,
    now: DateTime<Utc>,
) -> Result<OutgoingRequest, ChannelError> {
    let settings: WebhookSettings = channel.typed()?;
    let body = match settings.format {
        WebhookFormat::Skywarden => skywarden_body(notification, envelope, now),
        WebhookFormat::Ocsf => ocsf_body(notification, now),
    };
    let url = match settings.url {
        Some(url) => url,
        None => channel.secret("url")?.expose().to_string(),
    };
    let request = OutgoingRequest::post_json(url, &body);
    let timestamp = now.timestamp();
    let signed = signature(channel.secret("signing_secret")?.expose(), timestamp, &request.body);
    let name = |text: &'static str| http::HeaderName::from_static(text);
    Ok(request
        .with_header(name(SIGNATURE_HEADER), signed)
        .with_header(name(TIMESTAMP_HEADER), timestamp.to_string())
        .with_header(name(EVENT_HEADER), notification.event())
        .with_header(name(DELIVERY_HEADER), envelope.delivery_id.clone())
        .with_header(name("idempotency-key"), format!("{}:{}", envelope.dedup_key, envelope.delivery_id)))
}

#[cfg(test)]
mod tests {
    use super::super::test_support::*;
    use super::*;
    use crate::notify::channels::ChannelKind;

    fn webhook(format: &str) -> Channel {
        channel(
            ChannelKind::Webhook,
            json!({"url": "https://hooks.example.com/skywarden", "format": format}),
            &[("signing_secret", "s3cret")],
        )
    }

    #[test]
    fn the_signature_covers_timestamp_and_body() {
        let now: DateTime<Utc> = "2026-11-12T03:05:00Z".parse().unwrap();
        let alert = hijack();
        let request = request(&webhook("skywarden"), &Notification::Opened(&alert), &envelope(), now).unwrap();
        assert_eq!(request.header(TIMESTAMP_HEADER), Some("1794452700"));
        // Python's hmac.new(b"s3cret", b'1762916700.{"a":1}', hashlib.sha256).hexdigest()
        assert_eq!(
            signature("s3cret", 1_762_916_700, br#"{"a":1}"#),
            "v1=e7ae43bd35a253a23b9ffe04a6a3b5f150b73c5f4a07746db84c4adeca3249ca"
        );
        let expected = signature("s3cret", 1_794_452_700, &request.body);
        assert_eq!(request.header(SIGNATURE_HEADER), Some(expected.as_str()));
        assert_ne!(signature("s3cret", 1_794_452_701, &request.body), expected);
        assert_eq!(request.header(EVENT_HEADER), Some("alert.opened"));
        let body = body(&request);
        assert_eq!(body["schema"], SCHEMA);
        assert_eq!(body["alert"]["principal"], "alice");
        assert_eq!(body["alert"]["country"], "RU");
        assert_eq!(body["dedup_key"], alert.dedup_key);
    }

    #[test]
    fn a_secret_url_is_used_when_the_settings_have_none() {
        let hidden = channel(
            ChannelKind::Webhook,
            json!({"format": "skywarden"}),
            &[("signing_secret", "s"), ("url", "https://hooks.example.com/t/SECRET")],
        );
        let alert = hijack();
        let request = request(&hidden, &Notification::Opened(&alert), &envelope(), Utc::now()).unwrap();
        assert_eq!(request.url, "https://hooks.example.com/t/SECRET");
    }

    #[test]
    fn a_known_vector_matches() {
        // RFC 4231 test case 2: key "Jefe", data "what do ya want for nothing?".
        let key = hmac::Key::new(hmac::HMAC_SHA256, b"Jefe");
        let tag = hmac::sign(&key, b"what do ya want for nothing?");
        let hex: String = tag.as_ref().iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(hex, "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843");
    }

    #[test]
    fn automatic_actions_have_their_own_documented_shape() {
        let now: DateTime<Utc> = "2026-11-12T03:05:00Z".parse().unwrap();
        let (alert, action) = (hijack(), revoked());
        let notification = Notification::AutomaticAction { alert: &alert, action: &action, remote_ref: None };
        let request = request(&webhook("skywarden"), &notification, &envelope(), now).unwrap();
        assert_eq!(request.header(EVENT_HEADER), Some("alert.automatic_action"));
        let body = body(&request);
        assert_eq!(body["event"], "alert.automatic_action");
        assert_eq!(body["alert"]["id"], alert.id);
        assert_eq!(body["automatic_action"]["outcome"], "taken");
        assert_eq!(body["automatic_action"]["resource"], "sg-0123456789abcdef0:sgr-0fedcba9876543210");
        assert_eq!(body["automatic_action"]["incident_id"], "inc-20261112-0001");
        assert!(body.get("status_change").is_none());

        let ocsf = ocsf_body(&notification, now);
        assert_eq!((ocsf["class_uid"].as_i64(), ocsf["activity_id"].as_i64()), (Some(2004), Some(2)));
        assert_eq!(ocsf["finding_info"]["uid"], alert.id);
        let desc = ocsf["remediation"]["desc"].as_str().unwrap();
        assert!(desc.contains("To undo: skywarden respond undo 7c9e6679"), "{desc}");
        assert_eq!(ocsf["remediation"]["references"][1], "https://skywarden.example.com/#/incident/inc-20261112-0001");
        assert_eq!(ocsf["unmapped"]["automatic_action"]["kind"], "revoke-ingress-rule");
    }

    #[test]
    fn ocsf_bodies_are_detection_findings() {
        let now: DateTime<Utc> = "2026-11-12T03:05:00Z".parse().unwrap();
        let alert = hijack();
        let body = body(&request(&webhook("ocsf"), &Notification::Opened(&alert), &envelope(), now).unwrap());
        assert_eq!(body["class_uid"], 2004);
        assert_eq!(body["type_uid"], 200401);
        assert_eq!(body["severity_id"], 4);
        assert_eq!(body["finding_info"]["uid"], alert.id);
        assert_eq!(body["finding_info"]["attacks"][0]["technique"]["uid"], "T1078.004");
        assert_eq!(body["metadata"]["profiles"], json!(["cloud"]));
        assert_eq!(body["cloud"]["account"]["uid"], "123456789012");
        assert_eq!(
            body["evidences"],
            json!([{"actor": {"user": {"name": "alice"}}, "src_endpoint": {"ip": "203.0.113.10", "location": {"country": "RU"}}}])
        );
        // A Detection Finding has neither at the top level (1.1.0, without the host profile).
        assert!(body.get("src_endpoint").is_none() && body.get("actor").is_none());
        let mut unknown = alert.clone();
        (unknown.principal, unknown.source_ip) = (None, None);
        assert!(ocsf_finding(&unknown, (1, "Create"), AlertStatus::Open, now).get("evidences").is_none());
        let closed = ocsf_body(
            &Notification::StatusChanged {
                alert: &alert,
                status: AlertStatus::Resolved,
                actor: "bob",
                reason: "",
                remote_ref: None,
            },
            now,
        );
        assert_eq!((closed["activity_id"].as_i64(), closed["status_id"].as_i64()), (Some(3), Some(4)));
    }
}
