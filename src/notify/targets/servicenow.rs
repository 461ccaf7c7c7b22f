//! ServiceNow Table API: create an `incident` with the alert's dedup key as `correlation_id`;
//! status changes add work notes and, if the channel says so, resolve the incident.
//! https://www.servicenow.com/docs/bundle/zurich-api-reference/page/integrate/inbound-rest/concept/c_TableAPI.html
//!
//! `assignment_group` is a reference field: the Table API stores the `sys_id` it is given, so the
//! setting must be the group's `sys_id` (32 hexadecimal characters; "Copy sys_id" on the group
//! record). A group name is refused with that explanation rather than looked up: a lookup needs
//! read access to `sys_user_group` and a second request per incident, and a name is not unique.
//! Resolving sets a standard `close_code` ([`DEFAULT_CLOSE_CODE`]) unless the channel names one.

use base64::Engine;
use serde_json::{Value, json};

use super::{Envelope, Notification};
use crate::model::{AlertStatus, Severity};
use crate::notify::channels::{Channel, ChannelError, ServiceNowSettings};
use crate::notify::http_client::{OutgoingRequest, Reply};
use crate::notify::limits::{self, SERVICENOW_SHORT_DESCRIPTION, SERVICENOW_TEXT};
use crate::notify::message::status_line;

/// A resolution code of the base system's incident form ("Resolution code" choices: Duplicate,
/// Known error, Resolved by caller, Resolved by change, Resolved by problem, Resolved by request,
/// Solution provided): Skywarden opened the incident, and resolves it.
pub const DEFAULT_CLOSE_CODE: &str = "Resolved by caller";

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
                "short_description":
                    limits::truncate(&limits::single_line(&alert.summary()), SERVICENOW_SHORT_DESCRIPTION),
                "description": alert.text_within(SERVICENOW_TEXT),
                "urgency": urgency,
                "impact": impact,
                "correlation_id": envelope.dedup_key,
                "correlation_display": "Skywarden"
            });
            if let Some(group) = &settings.assignment_group {
                body["assignment_group"] = Value::String(group_sys_id(group)?);
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
            let sentence = format!("Skywarden: the alert was {}.", status_line(*status, actor, reason));
            let room = SERVICENOW_TEXT.saturating_sub(alert.url.chars().count() + 1);
            let note = format!("{}\n{}", limits::truncate(&sentence, room), alert.url);
            let mut body = json!({"work_notes": note});
            if settings.close_on_resolve && matches!(status, AlertStatus::Resolved | AlertStatus::Dismissed) {
                body["state"] = json!("6");
                body["close_code"] = json!(close_code(&settings));
                body["close_notes"] = json!(note);
            }
            let mut request = OutgoingRequest::post_json(format!("{table}/{sys_id}"), &body);
            request.method = http::Method::PATCH;
            authorised(&settings, channel, request).map(Some)
        }
        Notification::AutomaticAction { alert, action, remote_ref } => {
            // A work note on the alert's incident; the incident's state is the analysts' to change.
            let Some(sys_id) = remote_ref else { return Ok(None) };
            let links = action.text_links(alert);
            let room = SERVICENOW_TEXT.saturating_sub(links.chars().count());
            let note = limits::truncate(&action.text_head(alert), room) + &links;
            let mut request = OutgoingRequest::post_json(format!("{table}/{sys_id}"), &json!({"work_notes": note}));
            request.method = http::Method::PATCH;
            authorised(&settings, channel, request).map(Some)
        }
        Notification::Digest { .. } => Ok(None),
    }
}

/// Skywarden's earlier default, which current releases no longer offer; channels created with it
/// stored it in their settings.
const OLD_DEFAULT_CLOSE_CODE: &str = "Solved (Permanently)";

/// The channel's close code, else [`DEFAULT_CLOSE_CODE`] (also in place of the earlier default).
fn close_code(settings: &ServiceNowSettings) -> &str {
    match settings.close_code.as_str() {
        "" | OLD_DEFAULT_CLOSE_CODE => DEFAULT_CLOSE_CODE,
        code => code,
    }
}

fn group_sys_id(group: &str) -> Result<String, ChannelError> {
    let group = group.trim();
    if limits::is_sys_id(group) {
        return Ok(group.to_ascii_lowercase());
    }
    Err(ChannelError::invalid(
        "settings.assignment_group",
        "must be the assignment group's sys_id (32 hexadecimal characters, \"Copy sys_id\" on the group record), not its name",
    ))
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

    const GROUP: &str = "287ebd7da9fe198100f92cc8d1d2154e";

    fn servicenow(close: bool) -> Channel {
        with_settings(
            json!({"instance_url": "https://acme.service-now.com", "username": "skywarden", "assignment_group": GROUP, "close_on_resolve": close, "close_code": "Solution provided"}),
        )
    }

    fn with_settings(settings: Value) -> Channel {
        channel(ChannelKind::Servicenow, settings, &[("password", "pw")])
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
        assert_eq!(body["assignment_group"], GROUP);
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
        assert_eq!(body["close_code"], "Solution provided");
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

    fn resolved(alert: &crate::notify::message::AlertMessage) -> Notification<'_> {
        Notification::StatusChanged {
            alert,
            status: AlertStatus::Resolved,
            actor: "bob",
            reason: "",
            remote_ref: Some("9d385017c611228701d22104cc95c371"),
        }
    }

    #[test]
    fn the_default_close_code_is_a_standard_resolution_code() {
        let alert = hijack();
        let channel = with_settings(
            json!({"instance_url": "https://acme.service-now.com", "username": "skywarden", "close_on_resolve": true}),
        );
        assert_eq!(body_of(&channel, &resolved(&alert))["close_code"], "Resolved by caller");
        // Channels that stored the earlier default get the standard one too.
        let stored = with_settings(
            json!({"instance_url": "https://acme.service-now.com", "username": "skywarden", "close_on_resolve": true, "close_code": "Solved (Permanently)"}),
        );
        assert_eq!(body_of(&stored, &resolved(&alert))["close_code"], "Resolved by caller");
    }

    #[test]
    fn a_group_name_is_refused_with_what_to_set_instead() {
        let alert = hijack();
        let named = with_settings(
            json!({"instance_url": "https://acme.service-now.com", "username": "skywarden", "assignment_group": "SOC"}),
        );
        let error = request(&named, &Notification::Opened(&alert), &envelope()).unwrap_err().to_string();
        assert!(error.starts_with("settings.assignment_group: must be the assignment group's sys_id"), "{error}");
    }

    #[test]
    fn hostile_alerts_stay_within_the_incident_fields() {
        let alert = hostile();
        let body = body_of(&servicenow(true), &Notification::Opened(&alert));
        let short = body["short_description"].as_str().unwrap();
        assert!(short.chars().count() <= SERVICENOW_SHORT_DESCRIPTION && !short.contains(['\r', '\n']), "{short}");
        let description = body["description"].as_str().unwrap();
        assert!(description.chars().count() <= SERVICENOW_TEXT && description.contains(limits::MARKER));
        assert!(description.ends_with(&format!("Open the alert: {}\n", alert.url)));
        assert!(!description.lines().any(|line| line.starts_with("Severity: low")), "no forged line");
        let change = Notification::StatusChanged {
            alert: &alert,
            status: AlertStatus::Dismissed,
            actor: "bob",
            reason: &"false positive\r\n".repeat(2000),
            remote_ref: Some("9d385017c611228701d22104cc95c371"),
        };
        let closed = body_of(&servicenow(true), &change);
        for field in ["work_notes", "close_notes"] {
            let text = closed[field].as_str().unwrap();
            assert!(text.chars().count() <= SERVICENOW_TEXT && text.lines().count() == 2, "{field}");
        }
    }
}
