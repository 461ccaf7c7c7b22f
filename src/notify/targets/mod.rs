//! One module per receiver kind, each turning a [`Notification`] into the request the service
//! documents. Request building is pure (tested on the exact shapes); sending happens in
//! [`super::sender`].

pub mod email;
pub mod jira;
pub mod pagerduty;
pub mod servicenow;
pub mod slack;
pub mod teams;
pub mod webhook;

use super::channels::{Channel, ChannelError, ChannelKind};
use super::http_client::{OutgoingRequest, Reply};
use super::message::{AlertMessage, AutomaticAction};
use crate::model::AlertStatus;

/// What is being announced.
#[derive(Debug, Clone, Copy)]
pub enum Notification<'a> {
    Opened(&'a AlertMessage),
    StatusChanged {
        alert: &'a AlertMessage,
        status: AlertStatus,
        actor: &'a str,
        reason: &'a str,
        /// What this channel called the alert when it was opened (Jira key, ServiceNow sys_id).
        remote_ref: Option<&'a str>,
    },
    Digest {
        alerts: &'a [AlertMessage],
        period_minutes: i32,
    },
    /// Automatic containment acted on the alert (or failed, or waits for approval): what was
    /// done, to what, where, the result and how to undo it.
    AutomaticAction {
        alert: &'a AlertMessage,
        action: &'a AutomaticAction,
        /// What this channel called the alert when it was opened (Jira key, ServiceNow sys_id).
        remote_ref: Option<&'a str>,
    },
}

impl Notification<'_> {
    /// The event name receivers see (`alert.opened`, `alert.status_changed`, `digest`,
    /// `alert.automatic_action`).
    pub fn event(&self) -> &'static str {
        match self {
            Self::Opened(_) => "alert.opened",
            Self::StatusChanged { .. } => "alert.status_changed",
            Self::Digest { .. } => "digest",
            Self::AutomaticAction { .. } => "alert.automatic_action",
        }
    }
}

/// Identifies one delivery to the receiver.
#[derive(Debug, Clone)]
pub struct Envelope {
    pub delivery_id: String,
    pub dedup_key: String,
    /// 1 for the first attempt.
    pub attempt: i32,
}

/// The HTTP request for a notification, or `None` when this kind has nothing to say about it
/// (PagerDuty on a snooze, Jira on a status change of an alert it never got).
pub fn http_request(
    channel: &Channel,
    notification: &Notification<'_>,
    envelope: &Envelope,
) -> Result<Option<OutgoingRequest>, ChannelError> {
    match channel.kind {
        ChannelKind::Slack => slack::request(channel, notification).map(Some),
        ChannelKind::Teams => teams::request(channel, notification).map(Some),
        ChannelKind::Pagerduty => pagerduty::request(channel, notification, envelope),
        ChannelKind::Webhook => webhook::request(channel, notification, envelope, chrono::Utc::now()).map(Some),
        ChannelKind::Jira => jira::request(channel, notification, envelope),
        ChannelKind::Servicenow => servicenow::request(channel, notification, envelope),
        ChannelKind::Email => Err(ChannelError::invalid("kind", "email is sent over SMTP, not HTTP")),
    }
}

/// A search for the ticket an earlier attempt may have created (it can succeed on the receiver's
/// side and still time out on ours): Jira by the dedup-key label, ServiceNow by correlation_id.
pub fn lookup_request(channel: &Channel, envelope: &Envelope) -> Result<Option<OutgoingRequest>, ChannelError> {
    match channel.kind {
        ChannelKind::Jira => jira::lookup(channel, envelope).map(Some),
        ChannelKind::Servicenow => servicenow::lookup(channel, envelope).map(Some),
        _ => Ok(None),
    }
}

/// The ticket a lookup found, if any.
pub fn lookup_ref(kind: ChannelKind, reply: &Reply) -> Option<String> {
    let body: serde_json::Value = serde_json::from_slice(&reply.body).ok()?;
    match kind {
        ChannelKind::Jira => body["issues"][0]["key"].as_str().map(str::to_string),
        ChannelKind::Servicenow => body["result"][0]["sys_id"].as_str().map(str::to_string),
        _ => None,
    }
}

/// What the receiver called the new alert, from its answer.
pub fn remote_ref(kind: ChannelKind, reply: &Reply) -> Option<String> {
    match kind {
        ChannelKind::Jira => jira::issue_key(reply),
        ChannelKind::Servicenow => servicenow::sys_id(reply),
        _ => None,
    }
}

/// Alerts listed in one chat digest; the rest are counted ("…and N more"), since Slack and
/// Teams refuse large messages.
pub const DIGEST_SHOWN: usize = 25;

/// Plain-text lines of a digest, one per alert (each field on one line and cut; the link whole).
pub fn digest_lines(alerts: &[AlertMessage]) -> Vec<String> {
    alerts
        .iter()
        .map(|a| {
            format!("[{}] {}: {} ({})", a.severity.as_str().to_uppercase(), a.title_line(), a.who_and_where(), a.url)
        })
        .collect()
}

pub fn digest_title(alerts: &[AlertMessage], period_minutes: i32) -> String {
    let highest = alerts.iter().map(|a| a.severity).max().map(|s| s.as_str().to_uppercase()).unwrap_or_default();
    format!("Skywarden: {} new alerts in the last {} minutes (highest: {highest})", alerts.len(), period_minutes)
}

#[cfg(test)]
pub(crate) mod test_support {
    use std::collections::BTreeMap;

    use super::*;
    use crate::notify::secrets::Secret;

    pub fn channel(kind: ChannelKind, settings: serde_json::Value, secrets: &[(&str, &str)]) -> Channel {
        Channel {
            id: 1,
            name: "test".into(),
            enabled: true,
            kind,
            settings,
            secrets: secrets.iter().map(|(k, v)| (k.to_string(), Secret::new(*v))).collect::<BTreeMap<_, _>>(),
        }
    }

    pub fn hijack() -> AlertMessage {
        let mut alert = AlertMessage::sample("https://skywarden.example.com");
        alert.is_test = false;
        alert.title = "Console login from a country new for the user".into();
        alert.id = "5f1e2d3c-4b5a-4978-8867-5a4b3c2d1e0f".into();
        alert.dedup_key = "skywarden-5f1e2d3c-4b5a-4978-8867-5a4b3c2d1e0f".into();
        alert.url = "https://skywarden.example.com/#/alert/5f1e2d3c-4b5a-4978-8867-5a4b3c2d1e0f".into();
        alert.first_seen = "2026-11-12T03:04:05Z".parse().unwrap();
        alert.last_seen = alert.first_seen;
        alert
    }

    /// The hijack alert with hostile fields: 10 KB values, CR/LF, markup of every receiver.
    pub fn hostile() -> AlertMessage {
        let big = |unit: &str| unit.repeat(10 * 1024 / unit.len() + 1);
        let mut alert = hijack();
        alert.title = big("Console <b>&amp;</b> *login* [x](https://evil.example) \r\n");
        alert.principal = Some(format!("alice\r\nSeverity: low\r\n{}", big("<!channel> & [~admin] {color:red} \\*_|")));
        alert.country = Some(big("R\nU"));
        alert.resources = (0..300).map(|i| format!("arn:aws:s3:::bucket-{i}|<x>")).collect();
        alert
    }

    /// A revoke-ingress-rule automatic containment applied to the hijack alert.
    pub fn revoked() -> AutomaticAction {
        AutomaticAction {
            outcome: crate::notify::message::ActionOutcome::Taken,
            kind: "revoke-ingress-rule".into(),
            resource: "sg-0123456789abcdef0:sgr-0fedcba9876543210".into(),
            account_id: "123456789012".into(),
            region: "eu-west-1".into(),
            rule: "revoke-hijacker-ingress".into(),
            result: "applied".into(),
            action_id: Some("7c9e6679-7425-40de-944b-e07fc1f90ae7".into()),
            undo:
                "skywarden respond undo 7c9e6679-7425-40de-944b-e07fc1f90ae7 --reason REASON, or Undo on the alert page"
                    .into(),
            undo_command: Some("skywarden respond undo 7c9e6679-7425-40de-944b-e07fc1f90ae7 --reason REASON".into()),
            at: Some("2026-11-12T08:15:00Z".parse().unwrap()),
            incident_id: Some("inc-20261112-0001".into()),
            incident_url: Some("https://skywarden.example.com/#/incident/inc-20261112-0001".into()),
        }
    }

    pub fn envelope() -> Envelope {
        Envelope { delivery_id: "42".into(), dedup_key: hijack().dedup_key, attempt: 1 }
    }

    pub fn body(request: &OutgoingRequest) -> serde_json::Value {
        serde_json::from_slice(&request.body).unwrap()
    }
}
