//! Jira Cloud / Data Center: create an issue (REST API 2 with a plain-text description, or 3 with
//! an Atlassian Document Format one), basic auth with the account's email and an API token;
//! status changes become comments on that issue.
//! https://developer.atlassian.com/cloud/jira/platform/rest/v3/api-group-issues/#api-rest-api-3-issue-post

use base64::Engine;
use serde_json::{Value, json};

use super::{Envelope, Notification, truncate};
use crate::notify::channels::{Channel, ChannelError, JiraSettings};
use crate::notify::http_client::{OutgoingRequest, Reply};
use crate::notify::message::status_line;

/// Plain text as an ADF document: one paragraph per line.
fn adf(text: &str) -> Value {
    let content: Vec<Value> = text
        .lines()
        .map(|line| {
            if line.is_empty() {
                json!({"type": "paragraph", "content": []})
            } else {
                json!({"type": "paragraph", "content": [{"type": "text", "text": line}]})
            }
        })
        .collect();
    json!({"type": "doc", "version": 1, "content": content})
}

fn rich_text(settings: &JiraSettings, text: &str) -> Value {
    if settings.api_version == 3 { adf(text) } else { Value::String(text.to_string()) }
}

fn authorised(
    settings: &JiraSettings,
    channel: &Channel,
    url: String,
    body: &Value,
) -> Result<OutgoingRequest, ChannelError> {
    with_auth(settings, channel, OutgoingRequest::post_json(url, body))
}

fn with_auth(
    settings: &JiraSettings,
    channel: &Channel,
    request: OutgoingRequest,
) -> Result<OutgoingRequest, ChannelError> {
    let credentials = format!("{}:{}", settings.email, channel.secret("api_token")?.expose());
    let basic = base64::engine::general_purpose::STANDARD.encode(credentials);
    Ok(request
        .with_header(http::header::AUTHORIZATION, format!("Basic {basic}"))
        .with_header(http::header::ACCEPT, "application/json"))
}

/// The issue labelled with the dedup key (REST API 3 on Cloud has `search/jql`; 2 has `search`).
pub fn lookup(channel: &Channel, envelope: &Envelope) -> Result<OutgoingRequest, ChannelError> {
    let settings: JiraSettings = channel.typed()?;
    let base = settings.base_url.trim_end_matches('/');
    let search = if settings.api_version == 3 { "3/search/jql" } else { "2/search" };
    // Dedup keys are letters, digits and dashes: only the JQL around them needs escaping.
    let jql = format!("labels%20%3D%20%22{}%22", envelope.dedup_key);
    with_auth(
        &settings,
        channel,
        OutgoingRequest::get(format!("{base}/rest/api/{search}?jql={jql}&fields=key&maxResults=1")),
    )
}

pub fn request(
    channel: &Channel,
    notification: &Notification<'_>,
    envelope: &Envelope,
) -> Result<Option<OutgoingRequest>, ChannelError> {
    let settings: JiraSettings = channel.typed()?;
    let base = settings.base_url.trim_end_matches('/');
    let api = settings.api_version;
    match notification {
        Notification::Opened(alert) => {
            let mut labels = vec!["skywarden".to_string(), envelope.dedup_key.clone()];
            labels.extend(settings.labels.iter().cloned());
            let body = json!({
                "fields": {
                    "project": {"key": settings.project_key},
                    "issuetype": {"name": settings.issue_type},
                    // Jira caps summaries at 255 characters.
                    "summary": truncate(&alert.summary(), 255),
                    "description": rich_text(&settings, &alert.text()),
                    "labels": labels
                }
            });
            authorised(&settings, channel, format!("{base}/rest/api/{api}/issue"), &body).map(Some)
        }
        Notification::StatusChanged { alert, status, actor, reason, remote_ref } => {
            // No issue was created (the opening delivery gave up): nothing to comment on.
            let Some(key) = remote_ref else { return Ok(None) };
            let text = format!("Skywarden: the alert was {}.\n{}", status_line(*status, actor, reason), alert.url);
            let body = json!({"body": rich_text(&settings, &text)});
            authorised(&settings, channel, format!("{base}/rest/api/{api}/issue/{key}/comment"), &body).map(Some)
        }
        Notification::Digest { .. } => Ok(None),
    }
}

/// The new issue's key (`SEC-123`) from the 201 answer.
pub fn issue_key(reply: &Reply) -> Option<String> {
    let body: Value = serde_json::from_slice(&reply.body).ok()?;
    body["key"].as_str().map(str::to_string)
}

#[cfg(test)]
mod tests {
    use super::super::test_support::*;
    use super::*;
    use crate::model::AlertStatus;
    use crate::notify::channels::ChannelKind;

    fn jira(version: u8) -> Channel {
        channel(
            ChannelKind::Jira,
            json!({"base_url": "https://acme.atlassian.net/", "project_key": "SEC", "issue_type": "Task", "email": "soc@acme.example", "api_version": version, "labels": ["cloud"]}),
            &[("api_token", "ATATT-token")],
        )
    }

    #[test]
    fn issues_are_created_with_basic_auth_and_labels() {
        let alert = hijack();
        let request = request(&jira(3), &Notification::Opened(&alert), &envelope()).unwrap().unwrap();
        assert_eq!(request.url, "https://acme.atlassian.net/rest/api/3/issue");
        // base64("soc@acme.example:ATATT-token")
        assert_eq!(request.header("authorization"), Some("Basic c29jQGFjbWUuZXhhbXBsZTpBVEFUVC10b2tlbg=="));
        let body = body(&request);
        assert_eq!(body["fields"]["project"]["key"], "SEC");
        assert_eq!(body["fields"]["issuetype"]["name"], "Task");
        assert_eq!(body["fields"]["labels"], json!(["skywarden", alert.dedup_key, "cloud"]));
        assert_eq!(body["fields"]["description"]["type"], "doc");
        let v2 = body_of(request_v2(&alert));
        assert!(v2["fields"]["description"].as_str().unwrap().contains("Source IP: 203.0.113.10"));
    }

    fn request_v2(alert: &crate::notify::message::AlertMessage) -> OutgoingRequest {
        request(&jira(2), &Notification::Opened(alert), &envelope()).unwrap().unwrap()
    }

    fn body_of(request: OutgoingRequest) -> Value {
        body(&request)
    }

    #[test]
    fn status_changes_comment_on_the_issue() {
        let alert = hijack();
        let change = Notification::StatusChanged {
            alert: &alert,
            status: AlertStatus::Resolved,
            actor: "bob",
            reason: "user confirmed",
            remote_ref: Some("SEC-7"),
        };
        let request = request(&jira(2), &change, &envelope()).unwrap().unwrap();
        assert_eq!(request.url, "https://acme.atlassian.net/rest/api/2/issue/SEC-7/comment");
        assert!(
            body(&request)["body"]
                .as_str()
                .unwrap()
                .starts_with("Skywarden: the alert was resolved by bob: user confirmed.")
        );
        let orphan = Notification::StatusChanged {
            alert: &alert,
            status: AlertStatus::Resolved,
            actor: "bob",
            reason: "",
            remote_ref: None,
        };
        assert!(super::request(&jira(2), &orphan, &envelope()).unwrap().is_none());
    }

    #[test]
    fn the_issue_key_is_read_from_the_answer() {
        let reply = Reply {
            status: 201,
            retry_after: None,
            body: br#"{"id":"10000","key":"SEC-24","self":"https://acme.atlassian.net/rest/api/3/issue/10000"}"#
                .to_vec(),
        };
        assert_eq!(issue_key(&reply).as_deref(), Some("SEC-24"));
    }
}
