//! Microsoft Teams incoming webhooks and Workflows ("Post to a channel when a webhook request is
//! received"): a message with one Adaptive Card attachment.
//! https://learn.microsoft.com/en-us/microsoftteams/platform/webhooks-and-connectors/how-to/connectors-using

use serde_json::{Value, json};

use super::{Notification, digest_title, truncate};
use crate::notify::channels::{Channel, ChannelError};
use crate::notify::http_client::OutgoingRequest;
use crate::notify::message::status_line;

fn card(body: Vec<Value>, url: Option<&str>) -> Value {
    let actions: Vec<Value> =
        url.map(|u| json!({"type": "Action.OpenUrl", "title": "Open in Skywarden", "url": u})).into_iter().collect();
    json!({
        "type": "message",
        "attachments": [{
            "contentType": "application/vnd.microsoft.card.adaptive",
            "contentUrl": null,
            "content": {
                "$schema": "http://adaptivecards.io/schemas/adaptive-card.json",
                "type": "AdaptiveCard",
                "version": "1.4",
                "body": body,
                "actions": actions
            }
        }]
    })
}

/// Adaptive Card text blocks render Markdown: a user name like `[x](https://evil)` must stay text.
fn plain(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if matches!(c, '\\' | '*' | '_' | '[' | ']' | '(' | ')' | '#' | '`' | '~' | '>' | '<' | '!' | '|') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

fn text_block(text: &str, emphasis: bool) -> Value {
    if emphasis {
        json!({"type": "TextBlock", "text": text, "wrap": true, "size": "Large", "weight": "Bolder"})
    } else {
        json!({"type": "TextBlock", "text": text, "wrap": true})
    }
}

pub fn payload(notification: &Notification<'_>) -> Value {
    match notification {
        Notification::Opened(alert) => {
            let facts: Vec<Value> = alert
                .facts()
                .into_iter()
                .map(|(title, value)| json!({"title": title, "value": plain(&truncate(&value, 500))}))
                .collect();
            card(
                vec![
                    text_block(&plain(&alert.title), true),
                    text_block(&plain(&alert.who_and_where()), false),
                    json!({"type": "FactSet", "facts": facts}),
                    text_block(&format!("Next step: {}", plain(&alert.next_step)), false),
                ],
                Some(&alert.url),
            )
        }
        Notification::StatusChanged { alert, status, actor, reason, .. } => card(
            vec![
                text_block(&plain(&alert.title), true),
                text_block(&plain(&format!("The alert was {}", status_line(*status, actor, reason))), false),
            ],
            Some(&alert.url),
        ),
        Notification::Digest { alerts, period_minutes } => {
            let mut body = vec![text_block(&digest_title(alerts, *period_minutes), true)];
            let shown = &alerts[..alerts.len().min(super::DIGEST_SHOWN)];
            body.extend(shown.iter().map(|a| {
                let severity = a.severity.as_str().to_uppercase();
                let line = format!("**{severity}** [{}]({}): {}", plain(&a.title), a.url, plain(&a.who_and_where()));
                text_block(&line, false)
            }));
            if alerts.len() > shown.len() {
                body.push(text_block(&format!("…and {} more", alerts.len() - shown.len()), false));
            }
            card(body, None)
        }
    }
}

pub fn request(channel: &Channel, notification: &Notification<'_>) -> Result<OutgoingRequest, ChannelError> {
    Ok(OutgoingRequest::post_json(channel.secret("webhook_url")?.expose(), &payload(notification)))
}

#[cfg(test)]
mod tests {
    use super::super::test_support::*;
    use super::*;
    use crate::notify::channels::ChannelKind;

    #[test]
    fn a_new_alert_is_one_adaptive_card() {
        let channel = channel(
            ChannelKind::Teams,
            json!({}),
            &[("webhook_url", "https://example.webhook.office.com/webhookb2/x")],
        );
        let alert = hijack();
        let body = body(&request(&channel, &Notification::Opened(&alert)).unwrap());
        assert_eq!(body["type"], "message");
        let attachment = &body["attachments"][0];
        assert_eq!(attachment["contentType"], "application/vnd.microsoft.card.adaptive");
        assert_eq!(attachment["content"]["type"], "AdaptiveCard");
        assert_eq!(attachment["content"]["actions"][0]["url"], alert.url);
        let facts = attachment["content"]["body"][2]["facts"].as_array().unwrap();
        assert!(facts.contains(&json!({"title": "Source IP", "value": "203.0.113.10"})));
    }

    #[test]
    fn markdown_in_alert_fields_stays_text() {
        let mut alert = hijack();
        alert.principal = Some("[click](https://evil.example)".into());
        let body = payload(&Notification::Opened(&alert));
        let who = body["attachments"][0]["content"]["body"][1]["text"].as_str().unwrap();
        assert!(who.starts_with("\\[click\\]\\(https://evil.example\\)"), "{who}");
    }
}
