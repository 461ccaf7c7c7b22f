//! ServiceNow Table API: create an `incident` with the alert's dedup key as `correlation_id`;
//! status changes add work notes and, if the channel says so, resolve the incident.
//! https://www.servicenow.com/docs/bundle/zurich-api-reference/page/integrate/inbound-rest/concept/c_TableAPI.html

use base64::Engine;
use serde_json::{Value, json};

use super::{Envelope, Notification, truncate};
use crate::model::{AlertStatus, Severity};
use crate::notify::channels::{Channel, ChannelError, ServiceNowSettings};
use crate::notify::http_client::{OutgoingRequest, Reply};
use crate::notify::message::status_line;

/// Urgency and impact: 1 high, 2 medium, 3 low.
fn urgency_and_impact(severity: Severity) -> (&'static str, &'static str) {
    match severity {
        Severity::Critical => ("1", "1"),
        Severity::High => ("1", "2"),
        Severity::Medium => ("2", "2"),
        Severity::Low | Severity::Info => ("3", "3"),
    }
}

fn authorised(
    settings: &ServiceNowSettings,
    channel: &Channel,
    request: OutgoingRequest,
) -> Result<OutgoingRequest, ChannelError> {
    let credentials = format!("{}:{}", settings.username, channel.secret("password")?.expose());
    let basic = base64::engine::general_purpose::STANDARD.encode(credentials);
    Ok(request
        .with_header(http::header::AUTHORIZATION, format!("Basic {basic}"))
        .with_header(http::header::ACCEPT, "application/json"))
}

pub fn request(
    channel: &Channel,
    notification: &Notification<'_>,
    envelope: &Envelope,
) -> Result<Option<OutgoingRequest>, ChannelError> {
    let settings: ServiceNowSettings = channel.typed()?;
    let table = format!("{}/api/now/table/incident", settings.instance_url.trim_end_matches('/'));
    match notification {
        Notification::Opened(alert) => {
            let (urgency, impact) = urgency_and_impact(alert.severity);
            let mut body = json!({
                "short_description": truncate(&alert.summary(), 160),
                "description": alert.text(),
                "urgency": urgency,
                "impact": impact,
                "correlation_id": envelope.dedup_key,
                "correlation_display": "Skywarden"
            });
            if let Some(group) = &settings.assignment_group {
                body["assignment_group"] = Value::String(group.clone());
            }
            authorised(
                &settings,
                channel,
                OutgoingRequest::post_json(format!("{table}?sysparm_display_value=false"), &body),
            )
            .map(Some)
        }
        Notification::StatusChanged { alert, status, actor, reason, remote_ref } => {
            let Some(sys_id) = remote_ref else { return Ok(None) };
            let note = format!("Skywarden: the alert was {}.\n{}", status_line(*status, actor, reason), alert.url);
            let mut body = json!({"work_notes": note});
            if settings.close_on_resolve && matches!(status, AlertStatus::Resolved | AlertStatus::Dismissed) {
                body["state"] = json!("6");
                body["close_code"] = json!(settings.close_code);
                body["close_notes"] = json!(note);
            }
            let mut request = OutgoingRequest::post_json(format!("{table}/{sys_id}"), &body);
            request.method = http::Method::PATCH;
            authorised(&settings, channel, request).map(Some)
        }
        Notification::Digest { .. } => Ok(None),
    }
}

/// The incident whose correlation_id is the dedup key.
pub fn lookup(channel: &Channel, envelope: &Envelope) -> Result<OutgoingRequest, ChannelError> {
    let settings: ServiceNowSettings = channel.typed()?;
    let table = format!("{}/api/now/table/incident", settings.instance_url.trim_end_matches('/'));
    let url = format!(
        "{table}?sysparm_query=correlation_id%3D{}&sysparm_fields=sys_id,number&sysparm_limit=1",
        envelope.dedup_key
    );
    authorised(&settings, channel, OutgoingRequest::get(url))
}

/// The new incident's `sys_id` from the 201 answer (`{"result": {...}}`).
pub fn sys_id(reply: &Reply) -> Option<String> {
    let body: Value = serde_json::from_slice(&reply.body).ok()?;
    body["result"]["sys_id"].as_str().map(str::to_string)
}

#[cfg(test)]
mod tests {
    use super::super::test_support::*;
    use super::*;
    use crate::notify::channels::ChannelKind;

    fn servicenow(close: bool) -> Channel {
        channel(
            ChannelKind::Servicenow,
            json!({"instance_url": "https://acme.service-now.com", "username": "skywarden", "assignment_group": "SOC", "close_on_resolve": close, "close_code": "Solved (Permanently)"}),
            &[("password", "pw")],
        )
    }

    #[test]
    fn incidents_carry_the_dedup_key_as_correlation_id() {
        let alert = hijack();
        let request = request(&servicenow(false), &Notification::Opened(&alert), &envelope()).unwrap().unwrap();
        assert_eq!(request.method, http::Method::POST);
        assert_eq!(request.url, "https://acme.service-now.com/api/now/table/incident?sysparm_display_value=false");
        assert_eq!(request.header("authorization"), Some("Basic c2t5d2FyZGVuOnB3"));
        let body = body(&request);
        assert_eq!(body["correlation_id"], alert.dedup_key);
        assert_eq!((body["urgency"].as_str(), body["impact"].as_str()), (Some("1"), Some("2")));
        assert_eq!(body["assignment_group"], "SOC");
        assert!(body["short_description"].as_str().unwrap().chars().count() <= 160);
    }

    #[test]
    fn resolving_closes_the_incident_when_asked() {
        let alert = hijack();
        let change = Notification::StatusChanged {
            alert: &alert,
            status: AlertStatus::Resolved,
            actor: "bob",
            reason: "",
            remote_ref: Some("9d385017c611228701d22104cc95c371"),
        };
        let request = request(&servicenow(true), &change, &envelope()).unwrap().unwrap();
        assert_eq!(request.method, http::Method::PATCH);
        assert_eq!(request.url, "https://acme.service-now.com/api/now/table/incident/9d385017c611228701d22104cc95c371");
        let body = body(&request);
        assert_eq!(body["state"], "6");
        assert_eq!(body["close_code"], "Solved (Permanently)");
        let noted = body_of(&servicenow(false), &change);
        assert!(noted.get("state").is_none() && noted["work_notes"].as_str().unwrap().contains("resolved by bob"));
    }

    fn body_of(channel: &Channel, change: &Notification<'_>) -> Value {
        body(&request(channel, change, &envelope()).unwrap().unwrap())
    }

    #[test]
    fn the_sys_id_is_read_from_the_answer() {
        let reply = Reply {
            status: 201,
            retry_after: None,
            body: br#"{"result":{"sys_id":"abc123","number":"INC0010001"}}"#.to_vec(),
        };
        assert_eq!(sys_id(&reply).as_deref(), Some("abc123"));
    }
}
