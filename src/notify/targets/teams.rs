//! Microsoft Teams incoming webhooks and Workflows ("Post to a channel when a webhook request is
//! received"): a message with one Adaptive Card attachment.
//! https://learn.microsoft.com/en-us/microsoftteams/platform/webhooks-and-connectors/how-to/connectors-using

use serde_json::{Value, json};

use super::{DIGEST_SHOWN, Notification, digest_title};
use crate::notify::channels::{Channel, ChannelError};
use crate::notify::http_client::OutgoingRequest;
use crate::notify::limits::{self, TEAMS_PAYLOAD_BYTES};
use crate::notify::message::{AlertMessage, AutomaticAction, status_line};

/// How long a title, who-and-where or fact value may be, from the most to the least: the card
/// takes the first that fits [`TEAMS_PAYLOAD_BYTES`] (multi-byte text and escapes weigh more).
const VALUE_LIMITS: [usize; 4] = [500, 200, 80, 30];

fn card(body: Vec<Value>, url: Option<&str>) -> Value {
    let actions: Vec<Value> =
        url.map(|u| json!({"type": "Action.OpenUrl", "title": "Open in Skywarden", "url": u})).into_iter().collect();
    card_with(body, actions)
}

fn card_with(body: Vec<Value>, actions: Vec<Value>) -> Value {
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
fn escape_char(c: char, out: &mut String) {
    if matches!(c, '\\' | '*' | '_' | '[' | ']' | '(' | ')' | '#' | '`' | '~' | '>' | '<' | '!' | '|') {
        out.push('\\');
    }
    out.push(c);
}

/// `text` as Markdown-inert text, cut after escaping to `max` characters.
fn plain(text: &str, max: usize) -> String {
    limits::escape_within(text, max, escape_char)
}

fn text_block(text: &str, emphasis: bool) -> Value {
    if emphasis {
        json!({"type": "TextBlock", "text": text, "wrap": true, "size": "Large", "weight": "Bolder"})
    } else {
        json!({"type": "TextBlock", "text": text, "wrap": true})
    }
}

fn size(value: &Value) -> usize {
    serde_json::to_vec(value).map(|bytes| bytes.len()).unwrap_or(usize::MAX)
}

/// The first card `build` makes within the size limit, trying ever shorter values.
fn fitted(build: impl Fn(usize) -> Value) -> Value {
    let mut card = Value::Null;
    for max in VALUE_LIMITS {
        card = build(max);
        if size(&card) <= TEAMS_PAYLOAD_BYTES {
            break;
        }
    }
    card
}

fn opened(alert: &AlertMessage, max: usize) -> Value {
    let facts: Vec<Value> =
        alert.facts().into_iter().map(|(title, value)| json!({"title": title, "value": plain(&value, max)})).collect();
    card(
        vec![
            text_block(&plain(&alert.title_line(), max), true),
            text_block(&plain(&alert.who_and_where(), max), false),
            json!({"type": "FactSet", "facts": facts}),
            text_block(&format!("Next step: {}", plain(&alert.next_step, usize::MAX)), false),
        ],
        Some(&alert.url),
    )
}

/// What automatic containment did: the outcome, the facts, the undo command, and buttons to the
/// alert (whose Respond section undoes or approves) and the incident.
fn automatic(alert: &AlertMessage, action: &AutomaticAction, max: usize) -> Value {
    let facts: Vec<Value> = action
        .facts(alert)
        .into_iter()
        .map(|(title, value)| json!({"title": title, "value": plain(&value, max)}))
        .collect();
    let mut body = vec![
        text_block(&plain(action.outcome.label(), max), true),
        text_block(&plain(&action.headline(), max), false),
        json!({"type": "FactSet", "facts": facts}),
    ];
    if let Some(command) = &action.undo_command {
        body.push(text_block(&format!("To undo: {}", plain(&limits::single_line(command), max)), false));
    }
    let actions = action
        .links(alert)
        .into_iter()
        .zip(["Open the alert", "Open the incident"])
        .map(|((_, url), title)| json!({"type": "Action.OpenUrl", "title": title, "url": url}))
        .collect();
    card_with(body, actions)
}

/// Whole alerts while the card stays within the size limit (at most [`DIGEST_SHOWN`]), then
/// "…and N more".
fn digest(alerts: &[AlertMessage], period_minutes: i32, max: usize) -> Value {
    let title = text_block(&digest_title(alerts, period_minutes), true);
    // Room for the card around the lines and for the count of the rest at its longest.
    let mut used = size(&card(vec![title.clone(), text_block(&limits::and_more(alerts.len()), false)], None));
    let mut body = vec![title];
    for alert in alerts.iter().take(DIGEST_SHOWN) {
        let severity = alert.severity.as_str().to_uppercase();
        let line = format!(
            "**{severity}** [{}]({}): {}",
            plain(&alert.title_line(), max),
            alert.url,
            plain(&alert.who_and_where(), max)
        );
        let block = text_block(&line, false);
        let added = size(&block) + 1;
        if used + added > TEAMS_PAYLOAD_BYTES {
            break;
        }
        used += added;
        body.push(block);
    }
    let shown = body.len() - 1;
    if alerts.len() > shown {
        body.push(text_block(&limits::and_more(alerts.len() - shown), false));
    }
    card(body, None)
}

pub fn payload(notification: &Notification<'_>) -> Value {
    match notification {
        Notification::Opened(alert) => fitted(|max| opened(alert, max)),
        Notification::StatusChanged { alert, status, actor, reason, .. } => fitted(|max| {
            let line = format!("The alert was {}", status_line(*status, actor, reason));
            card(
                vec![text_block(&plain(&alert.title_line(), max), true), text_block(&plain(&line, max * 4), false)],
                Some(&alert.url),
            )
        }),
        Notification::AutomaticAction { alert, action, .. } => fitted(|max| automatic(alert, action, max)),
        // Digest lines are cut shorter: more alerts fit.
        Notification::Digest { alerts, period_minutes } => digest(alerts, *period_minutes, VALUE_LIMITS[1]),
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
    fn automatic_actions_are_cards_with_their_facts_and_undo() {
        let (alert, action) = (hijack(), revoked());
        let body = payload(&Notification::AutomaticAction { alert: &alert, action: &action, remote_ref: None });
        let content = &body["attachments"][0]["content"];
        assert_eq!(content["body"][0]["text"], "Automatic action taken");
        let facts = content["body"][2]["facts"].as_array().unwrap();
        assert!(facts.contains(&json!({"title": "Region", "value": "eu-west-1"})));
        assert!(facts.contains(&json!({"title": "Account", "value": "123456789012"})));
        assert!(content["body"][3]["text"].as_str().unwrap().starts_with("To undo: skywarden respond undo 7c9e"));
        assert_eq!(content["actions"][1]["url"], "https://skywarden.example.com/#/incident/inc-20261112-0001");
        assert!(size(&body) <= TEAMS_PAYLOAD_BYTES);
    }

    #[test]
    fn markdown_in_alert_fields_stays_text() {
        let mut alert = hijack();
        alert.principal = Some("[click](https://evil.example)".into());
        let body = payload(&Notification::Opened(&alert));
        let who = body["attachments"][0]["content"]["body"][1]["text"].as_str().unwrap();
        assert!(who.starts_with("\\[click\\]\\(https://evil.example\\)"), "{who}");
    }

    #[test]
    fn hostile_cards_and_digests_fit_the_webhook_limit() {
        let alert = hostile();
        let body = payload(&Notification::Opened(&alert));
        assert!(size(&body) <= TEAMS_PAYLOAD_BYTES);
        let title = body["attachments"][0]["content"]["body"][0]["text"].as_str().unwrap();
        assert!(title.chars().count() <= 500 && title.ends_with("…\\(truncated\\)"), "{title}");
        // Multi-byte values take the shorter limits.
        let mut wide = hostile();
        wide.principal = Some("ε".repeat(10_000));
        wide.resources = (0..300).map(|i| format!("{i}{}", "漢".repeat(300))).collect();
        assert!(size(&payload(&Notification::Opened(&wide))) <= TEAMS_PAYLOAD_BYTES);

        let alerts: Vec<_> = (0..500).map(|_| hostile()).collect();
        let digest = payload(&Notification::Digest { alerts: &alerts, period_minutes: 60 });
        assert!(size(&digest) <= TEAMS_PAYLOAD_BYTES, "{}", size(&digest));
        let blocks = digest["attachments"][0]["content"]["body"].as_array().unwrap();
        let shown = blocks.len() - 2;
        assert!(shown >= 1);
        assert_eq!(blocks.last().unwrap()["text"], format!("…and {} more", 500 - shown));
    }
}
