//! Slack incoming webhooks: a `text` fallback and Block Kit blocks (header, fields, next step,
//! a button back to the alert). https://api.slack.com/messaging/webhooks

use serde_json::{Value, json};

use super::{Notification, digest_lines, digest_title, truncate};
use crate::notify::channels::{Channel, ChannelError};
use crate::notify::http_client::OutgoingRequest;
use crate::notify::message::{AlertMessage, status_line};

/// Slack's mrkdwn treats `&`, `<` and `>` as control characters.
fn escape(text: &str) -> String {
    text.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;")
}

fn alert_blocks(alert: &AlertMessage) -> Vec<Value> {
    // Slack allows ten fields per section.
    let fields: Vec<Value> = alert
        .facts()
        .into_iter()
        .take(10)
        .map(|(name, value)| json!({"type": "mrkdwn", "text": format!("*{name}*\n{}", escape(&truncate(&value, 500)))}))
        .collect();
    vec![
        json!({"type": "header", "text": {"type": "plain_text", "text": truncate(&alert.title, 150)}}),
        json!({"type": "section", "text": {"type": "mrkdwn", "text": escape(&alert.who_and_where())}}),
        json!({"type": "section", "fields": fields}),
        json!({"type": "section", "text": {"type": "mrkdwn", "text": format!("*Next step:* {}", escape(&alert.next_step))}}),
        json!({"type": "actions", "elements": [
            {"type": "button", "text": {"type": "plain_text", "text": "Open alert"}, "url": alert.url, "style": "danger"}
        ]}),
        json!({"type": "context", "elements": [{"type": "mrkdwn", "text": format!("Skywarden · {}", alert.dedup_key)}]}),
    ]
}

pub fn payload(notification: &Notification<'_>) -> Value {
    match notification {
        Notification::Opened(alert) => json!({"text": escape(&alert.summary()), "blocks": alert_blocks(alert)}),
        Notification::StatusChanged { alert, status, actor, reason, .. } => {
            let line = status_line(*status, actor, reason);
            json!({
                "text": escape(&format!("{}: {line}", alert.title)),
                "blocks": [
                    {"type": "section", "text": {"type": "mrkdwn", "text":
                        format!("*{}* was {}\n<{}|Open alert>", escape(&alert.title), escape(&line), alert.url)}},
                    {"type": "context", "elements": [{"type": "mrkdwn", "text": format!("Skywarden · {}", alert.dedup_key)}]}
                ]
            })
        }
        Notification::Digest { alerts, period_minutes } => {
            let shown = &alerts[..alerts.len().min(super::DIGEST_SHOWN)];
            let mut lines: Vec<String> = shown
                .iter()
                .map(|a| {
                    format!(
                        "• *{}* <{}|{}>: {}",
                        a.severity.as_str().to_uppercase(),
                        a.url,
                        escape(&a.title),
                        escape(&a.who_and_where())
                    )
                })
                .collect();
            if alerts.len() > shown.len() {
                lines.push(format!("…and {} more", alerts.len() - shown.len()));
            }
            json!({
                "text": escape(&format!("{}\n{}", digest_title(alerts, *period_minutes), digest_lines(shown).join("\n"))),
                "blocks": [
                    {"type": "header", "text": {"type": "plain_text", "text": truncate(&digest_title(alerts, *period_minutes), 150)}},
                    {"type": "section", "text": {"type": "mrkdwn", "text": truncate(&lines.join("\n"), 2900)}}
                ]
            })
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
    fn a_new_alert_has_fallback_text_fields_and_a_button() {
        let channel =
            channel(ChannelKind::Slack, json!({}), &[("webhook_url", "https://hooks.slack.com/services/T1/B2/X3")]);
        let alert = hijack();
        let request = request(&channel, &Notification::Opened(&alert)).unwrap();
        assert_eq!(request.url, "https://hooks.slack.com/services/T1/B2/X3");
        assert_eq!(request.header("content-type"), Some("application/json"));
        let body = body(&request);
        assert_eq!(body["text"], "[HIGH] Console login from a country new for the user: alice from 203.0.113.10 (RU)");
        assert_eq!(body["blocks"][0]["type"], "header");
        let fields = body["blocks"][2]["fields"].as_array().unwrap();
        assert!(fields.len() <= 10);
        assert!(fields.iter().any(|f| f["text"] == "*Country*\nRU"));
        assert_eq!(body["blocks"][4]["elements"][0]["url"], alert.url);
    }

    #[test]
    fn mrkdwn_control_characters_are_escaped() {
        let mut alert = hijack();
        alert.principal = Some("<!channel> & co".into());
        let body = payload(&Notification::Opened(&alert));
        assert!(body["blocks"][1]["text"]["text"].as_str().unwrap().starts_with("&lt;!channel&gt; &amp; co"));
    }
}
