//! PagerDuty Events API v2: `trigger` with the alert's dedup key, then `acknowledge` and
//! `resolve` on the same key when analysts triage it.
//! https://developer.pagerduty.com/docs/events-api-v2/trigger-events/

use serde_json::{Value, json};

use super::{Envelope, Notification};
use crate::model::{AlertStatus, Severity};
use crate::notify::channels::{Channel, ChannelError, PagerDutySettings};
use crate::notify::http_client::OutgoingRequest;
use crate::notify::limits::{self, PAGERDUTY_SUMMARY};

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
    }
}

pub fn request(
    channel: &Channel,
    notification: &Notification<'_>,
    envelope: &Envelope,
) -> Result<Option<OutgoingRequest>, ChannelError> {
    let settings: PagerDutySettings = channel.typed()?;
    let routing_key = channel.secret("routing_key")?.expose();
    Ok(event(routing_key, notification, envelope).map(|body| OutgoingRequest::post_json(settings.events_url, &body)))
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
    fn hostile_summaries_stay_one_line_within_the_limit() {
        let mut alert = hostile();
        alert.title = "x".repeat(5000);
        let body = event("R0UT1NGKEY", &Notification::Opened(&alert), &envelope()).unwrap();
        let summary = body["payload"]["summary"].as_str().unwrap();
        assert!(summary.chars().count() <= PAGERDUTY_SUMMARY && !summary.contains(['\r', '\n']), "{summary}");
    }
}
