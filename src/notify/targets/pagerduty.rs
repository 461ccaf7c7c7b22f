//! PagerDuty Events API v2: `trigger` with the alert's dedup key, then `acknowledge` and
//! `resolve` on the same key when analysts triage it.
//! https://developer.pagerduty.com/docs/events-api-v2/trigger-events/
//!
//! What automatic containment did is a *change event* (`/v2/change/enqueue`, same routing key):
//! PagerDuty's type for "a change in a system that does not represent a problem" (a secret
//! rotated, a configuration applied). It pages nobody and shows in the service's Recent Changes
//! and on its open incidents beside the alert's, which is where an on-call responder looks. A
//! second `trigger` on the alert's key would be dropped as a duplicate, and a note on the
//! incident needs the REST API and a user's API key, which a routing key is not.
//! https://developer.pagerduty.com/docs/events-api-v2/send-change-events/

use serde_json::{Value, json};

use super::{Envelope, Notification};
use crate::model::{AlertStatus, Severity};
use crate::notify::channels::{Channel, ChannelError, PagerDutySettings};
use crate::notify::http_client::OutgoingRequest;
use crate::notify::limits::{self, PAGERDUTY_SUMMARY};
use crate::notify::message::{AlertMessage, AutomaticAction};

/// PagerDuty's severities are critical, error, warning and info.
fn severity(severity: Severity) -> &'static str {
    match severity {
        Severity::Critical => "critical",
        Severity::High => "error",
        Severity::Medium => "warning",
        Severity::Low | Severity::Info => "info",
    }
}

/// The event body, or `None` for a status PagerDuty has no action for (open again, snoozed).
pub fn event(routing_key: &str, notification: &Notification<'_>, envelope: &Envelope) -> Option<Value> {
    match notification {
        Notification::Opened(alert) => {
            let details: serde_json::Map<String, Value> =
                alert.facts().into_iter().map(|(name, value)| (name.to_string(), Value::String(value))).collect();
            Some(json!({
                "routing_key": routing_key,
                "event_action": "trigger",
                "dedup_key": envelope.dedup_key,
                "payload": {
                    "summary": limits::truncate(&limits::single_line(&alert.summary()), PAGERDUTY_SUMMARY),
                    "source": format!("aws:{}", alert.account_id),
                    "severity": severity(alert.severity),
                    "timestamp": alert.first_seen.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
                    "component": alert.principal.clone().unwrap_or_else(|| "unknown".into()),
                    "group": alert.account_id,
                    "class": alert.policy_id,
                    "custom_details": Value::Object(details)
                },
                "links": [{"href": alert.url, "text": "Open the alert in Skywarden"}],
                "client": "Skywarden",
                "client_url": alert.url
            }))
        }
        Notification::StatusChanged { status, .. } => {
            let action = match status {
                AlertStatus::Acknowledged => "acknowledge",
                AlertStatus::Resolved | AlertStatus::Dismissed => "resolve",
                AlertStatus::Open | AlertStatus::Snoozed => return None,
            };
            Some(json!({"routing_key": routing_key, "event_action": action, "dedup_key": envelope.dedup_key}))
        }
        // Routes refuse digests for PagerDuty; an incident per alert is the point.
        Notification::Digest { .. } => None,
        Notification::AutomaticAction { alert, action, .. } => Some(change_event(routing_key, alert, action)),
    }
}

/// The change event telling what automatic containment did: every fact in `custom_details`,
/// the alert's dedup key (to find its incident), links to the alert and the incident.
pub fn change_event(routing_key: &str, alert: &AlertMessage, action: &AutomaticAction) -> Value {
    let mut details: serde_json::Map<String, Value> =
        action.facts(alert).into_iter().map(|(name, value)| (name.to_string(), Value::String(value))).collect();
    details.insert("Alert dedup key".into(), Value::String(alert.dedup_key.clone()));
    if let Some(command) = &action.undo_command {
        details.insert("Undo command".into(), Value::String(limits::single_line(command)));
    }
    let links: Vec<Value> =
        action.links(alert).into_iter().map(|(text, href)| json!({"href": href, "text": text})).collect();
    let mut event = json!({
        "routing_key": routing_key,
        "payload": {
            "summary": limits::truncate(&action.headline(), PAGERDUTY_SUMMARY),
            "source": format!("aws:{}", action.account_id),
            "custom_details": Value::Object(details)
        },
        "links": links
    });
    // When the change happened (PagerDuty's timeline orders by it); unknown only in old rows.
    if action.at.is_some() {
        event["payload"]["timestamp"] = Value::String(action.at_text());
    }
    event
}

/// The Change Events endpoint beside the channel's Events API endpoint (`…/v2/enqueue` →
/// `…/v2/change/enqueue`).
pub fn change_url(events_url: &str) -> String {
    let base = events_url.trim_end_matches('/');
    match base.strip_suffix("/enqueue") {
        Some(prefix) => format!("{prefix}/change/enqueue"),
        None => format!("{base}/change/enqueue"),
    }
}

pub fn request(
    channel: &Channel,
    notification: &Notification<'_>,
    envelope: &Envelope,
) -> Result<Option<OutgoingRequest>, ChannelError> {
    let settings: PagerDutySettings = channel.typed()?;
    let routing_key = channel.secret("routing_key")?.expose();
    let url = match notification {
        Notification::AutomaticAction { .. } => change_url(&settings.events_url),
        _ => settings.events_url,
    };
    Ok(event(routing_key, notification, envelope).map(|body| OutgoingRequest::post_json(url, &body)))
}

#[cfg(test)]
mod tests {
    use super::super::test_support::*;
    use super::*;
    use crate::notify::channels::ChannelKind;

    fn pagerduty() -> Channel {
        channel(
            ChannelKind::Pagerduty,
            json!({"events_url": "https://events.pagerduty.com/v2/enqueue"}),
            &[("routing_key", "R0UT1NGKEY")],
        )
    }

    #[test]
    fn a_new_alert_triggers_with_its_dedup_key() {
        let alert = hijack();
        let request = request(&pagerduty(), &Notification::Opened(&alert), &envelope()).unwrap().unwrap();
        assert_eq!(request.url, "https://events.pagerduty.com/v2/enqueue");
        let body = body(&request);
        assert_eq!(body["routing_key"], "R0UT1NGKEY");
        assert_eq!(body["event_action"], "trigger");
        assert_eq!(body["dedup_key"], alert.dedup_key);
        assert_eq!(body["payload"]["severity"], "error");
        assert_eq!(body["payload"]["source"], "aws:123456789012");
        assert_eq!(body["payload"]["timestamp"], "2026-11-12T03:04:05Z");
        assert_eq!(body["payload"]["custom_details"]["Country"], "RU");
        assert_eq!(body["links"][0]["href"], alert.url);
    }

    #[test]
    fn triage_acknowledges_and_resolves_the_same_incident() {
        let alert = hijack();
        let change =
            |status| Notification::StatusChanged { alert: &alert, status, actor: "bob", reason: "", remote_ref: None };
        let action = |status| {
            request(&pagerduty(), &change(status), &envelope())
                .unwrap()
                .map(|r| body(&r)["event_action"].as_str().unwrap().to_string())
        };
        assert_eq!(action(AlertStatus::Acknowledged).as_deref(), Some("acknowledge"));
        assert_eq!(action(AlertStatus::Resolved).as_deref(), Some("resolve"));
        assert_eq!(action(AlertStatus::Dismissed).as_deref(), Some("resolve"));
        assert_eq!(action(AlertStatus::Snoozed), None);
        let resolve = body(&request(&pagerduty(), &change(AlertStatus::Resolved), &envelope()).unwrap().unwrap());
        assert_eq!(
            resolve,
            json!({"routing_key": "R0UT1NGKEY", "event_action": "resolve", "dedup_key": alert.dedup_key})
        );
    }

    #[test]
    fn automatic_actions_are_change_events_beside_the_alert() {
        let (alert, action) = (hijack(), revoked());
        let notification = Notification::AutomaticAction { alert: &alert, action: &action, remote_ref: None };
        let request = request(&pagerduty(), &notification, &envelope()).unwrap().unwrap();
        assert_eq!(request.url, "https://events.pagerduty.com/v2/change/enqueue");
        let body = body(&request);
        assert_eq!(body["routing_key"], "R0UT1NGKEY");
        assert!(body.get("event_action").is_none() && body.get("dedup_key").is_none(), "{body}");
        assert_eq!(
            body["payload"]["summary"],
            "Automatic action taken: revoke-ingress-rule sg-0123456789abcdef0:sgr-0fedcba9876543210 in 123456789012/eu-west-1"
        );
        let details = &body["payload"]["custom_details"];
        assert_eq!(details["Region"], "eu-west-1");
        assert_eq!(body["payload"]["timestamp"], "2026-11-12T08:15:00Z", "when it was applied, ISO 8601");
        assert_eq!(details["At"], "2026-11-12T08:15:00Z");
        assert_eq!(details["Incident"], "inc-20261112-0001");
        assert_eq!(details["Alert dedup key"], alert.dedup_key);
        assert!(details["Undo command"].as_str().unwrap().starts_with("skywarden respond undo 7c9e6679"));
        assert_eq!(body["links"][0]["href"], alert.url);
        assert_eq!(body["links"][1]["href"], "https://skywarden.example.com/#/incident/inc-20261112-0001");
        let old_row = AutomaticAction { at: None, ..action.clone() };
        let notification = Notification::AutomaticAction { alert: &alert, action: &old_row, remote_ref: None };
        let old_body = super::super::test_support::body(
            &super::request(&pagerduty(), &notification, &envelope()).unwrap().unwrap(),
        );
        assert!(old_body["payload"].get("timestamp").is_none(), "no time known: none invented");
        assert_eq!(change_url("http://127.0.0.1:9/v2/enqueue/"), "http://127.0.0.1:9/v2/change/enqueue");
        assert_eq!(change_url("http://127.0.0.1:9/pd"), "http://127.0.0.1:9/pd/change/enqueue");
    }

    #[test]
    fn hostile_summaries_stay_one_line_within_the_limit() {
        let mut alert = hostile();
        alert.title = "x".repeat(5000);
        let body = event("R0UT1NGKEY", &Notification::Opened(&alert), &envelope()).unwrap();
        let summary = body["payload"]["summary"].as_str().unwrap();
        assert!(summary.chars().count() <= PAGERDUTY_SUMMARY && !summary.contains(['\r', '\n']), "{summary}");
    }
}
