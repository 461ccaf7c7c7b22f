//! Jira Cloud / Data Center: create an issue (REST API 2 with a plain-text description, or 3 with
//! an Atlassian Document Format one), basic auth with the account's email and an API token;
//! status changes become comments on that issue.
//! https://developer.atlassian.com/cloud/jira/platform/rest/v3/api-group-issues/#api-rest-api-3-issue-post

use base64::Engine;
use serde_json::{Value, json};

use super::{Envelope, Notification};
use crate::notify::channels::{Channel, ChannelError, JiraSettings};
use crate::notify::http_client::{OutgoingRequest, Reply};
use crate::notify::limits::{self, JIRA_SUMMARY, JIRA_TEXT};
use crate::notify::message::{AlertMessage, status_line};

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

/// Wiki markup (REST API 2) starts with these characters; Jira renders one after a backslash as
/// text.
fn wiki_char(c: char, out: &mut String) {
    match c {
        // An alert's own backslash would pair with ours (`\\` is a line break and voids the escape
        // after it): a zero-width space after it keeps it a plain backslash.
        '\\' => out.push_str("\\\u{200b}"),
        '-' | '#' | '*' | '_' | '+' | '?' | '^' | '~' | '|' | '%' | '{' | '}' | '[' | ']' | '(' | ')' | '!' | '@' => {
            out.push('\\');
            out.push(c);
        }
        c => out.push(c),
    }
}

fn wiki(text: &str, max: usize) -> String {
    limits::escape_within(text, max, wiki_char)
}

/// The issue's description: ADF for REST API 3 (text stays text), escaped wiki markup for 2, with
/// the alert data cut so the whole stays within Jira's limit and the next step and link stay.
fn description(settings: &JiraSettings, alert: &AlertMessage) -> Value {
    if settings.api_version == 3 {
        return adf(&alert.text_within(JIRA_TEXT));
    }
    let tail = format!("\nNext step: {}\n\nOpen the alert: {}\n", wiki(&alert.next_step, JIRA_TEXT), alert.url);
    let room = JIRA_TEXT.saturating_sub(tail.chars().count());
    Value::String(wiki(&alert.text_head(), room) + &tail)
}

/// A comment of what automatic containment did (a line per fact), cut within Jira's limit,
/// and its links whole (never escaped: they are Skywarden's own).
fn note(settings: &JiraSettings, text: &str, links: &str) -> Value {
    let room = JIRA_TEXT.saturating_sub(links.chars().count());
    if settings.api_version == 3 {
        adf(&(limits::truncate(text, room) + links))
    } else {
        Value::String(wiki(text, room) + links)
    }
}

/// A comment: "Skywarden: the alert was …" and the link.
fn comment(settings: &JiraSettings, text: &str, url: &str) -> Value {
    let room = JIRA_TEXT.saturating_sub(url.chars().count() + 1);
    if settings.api_version == 3 {
        adf(&format!("{}\n{url}", limits::truncate(text, room)))
    } else {
        Value::String(format!("{}\n{url}", wiki(text, room)))
    }
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
                    // Jira refuses a summary with a line break or over 255 characters.
                    "summary": limits::truncate(&limits::single_line(&alert.summary()), JIRA_SUMMARY),
                    "description": description(&settings, alert),
                    "labels": labels
                }
            });
            authorised(&settings, channel, format!("{base}/rest/api/{api}/issue"), &body).map(Some)
        }
        Notification::StatusChanged { alert, status, actor, reason, remote_ref } => {
            // No issue was created (the opening delivery gave up): nothing to comment on.
            let Some(key) = remote_ref else { return Ok(None) };
            let sentence = format!("Skywarden: the alert was {}.", status_line(*status, actor, reason));
            let body = json!({"body": comment(&settings, &sentence, &alert.url)});
            authorised(&settings, channel, format!("{base}/rest/api/{api}/issue/{key}/comment"), &body).map(Some)
        }
        Notification::AutomaticAction { alert, action, remote_ref } => {
            // No issue was created (the opening delivery gave up): nothing to comment on.
            let Some(key) = remote_ref else { return Ok(None) };
            let body = json!({"body": note(&settings, &action.text_head(alert), &action.text_links(alert))});
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

    /// Wiki text where every markup character is escaped (and every backslash defused).
    pub(crate) fn assert_inert_wiki(text: &str) {
        let mut chars = text.chars();
        while let Some(c) = chars.next() {
            if c == '\\' {
                let next = chars.next().unwrap_or(' ');
                assert!(next == '\u{200b}' || "-#*_+?^~|%{}[]()!@".contains(next), "a stray backslash in {text}");
            } else {
                assert!(!"-#*_+?^~|%{}[]()!@".contains(c), "unescaped {c:?} in {text}");
            }
        }
    }

    /// The ADF shape Jira accepts: a doc of version 1 whose paragraphs hold non-empty text nodes.
    pub(crate) fn assert_adf(doc: &Value) -> usize {
        assert_eq!((doc["type"].as_str(), doc["version"].as_i64()), (Some("doc"), Some(1)), "{doc}");
        let mut length = 0;
        for paragraph in doc["content"].as_array().unwrap() {
            assert_eq!(paragraph["type"], "paragraph");
            for node in paragraph["content"].as_array().unwrap() {
                assert_eq!(node["type"], "text");
                let text = node["text"].as_str().unwrap();
                assert!(!text.is_empty() && !text.contains(['\n', '\r']));
                length += text.chars().count();
            }
        }
        length
    }

    #[test]
    fn hostile_alerts_give_one_line_summaries_and_inert_descriptions() {
        let alert = hostile();
        for version in [2, 3] {
            let body = body(&request(&jira(version), &Notification::Opened(&alert), &envelope()).unwrap().unwrap());
            let summary = body["fields"]["summary"].as_str().unwrap();
            assert!(summary.chars().count() <= JIRA_SUMMARY && !summary.contains(['\r', '\n']), "{summary}");
            assert!(summary.ends_with(limits::MARKER));
            let description = &body["fields"]["description"];
            if version == 3 {
                assert!(assert_adf(description) <= JIRA_TEXT);
                continue;
            }
            let description = description.as_str().unwrap();
            assert!(description.chars().count() <= JIRA_TEXT);
            // Alert data cannot forge a line: the principal's CR/LF became spaces.
            assert!(description.contains("Who: alice  Severity: low  <\\!channel> & \\[\\~admin\\] \\{color:red\\}"));
            let (data, tail) = description.split_once("\nNext step: ").unwrap();
            assert_inert_wiki(data);
            assert!(tail.ends_with(&format!("Open the alert: {}\n", alert.url)), "the link stays whole");
        }
    }

    #[test]
    fn descriptions_keep_the_next_step_and_link_when_cut() {
        let alert = hostile();
        let text = alert.text_within(2000);
        assert!(text.chars().count() <= 2000);
        assert!(text.contains(limits::MARKER) && text.ends_with(&format!("Open the alert: {}\n", alert.url)));
        assert!(text.contains(&format!("Next step: {}", alert.next_step)));
    }
}
