//! Slack incoming webhooks: a `text` fallback and Block Kit blocks (header, fields, next step,
//! a button back to the alert). https://api.slack.com/messaging/webhooks

use serde_json::{Value, json};

use super::{DIGEST_SHOWN, Notification, digest_title};
use crate::notify::channels::{Channel, ChannelError};
use crate::notify::http_client::OutgoingRequest;
use crate::notify::limits::{self, SLACK_FIELD_TEXT, SLACK_FIELDS, SLACK_HEADER_TEXT, SLACK_SECTION_TEXT, SLACK_TEXT};
use crate::notify::message::{AlertMessage, AutomaticAction, status_line};

/// A fact's value in a field: short enough that ten fit a message comfortably.
const FIELD_VALUE: usize = 500;
/// A digest line's title and who-and-where.
const DIGEST_PART: usize = 200;

/// Slack's mrkdwn treats `&`, `<` and `>` as control characters.
fn escape_char(c: char, out: &mut String) {
    match c {
        '&' => out.push_str("&amp;"),
        '<' => out.push_str("&lt;"),
        '>' => out.push_str("&gt;"),
        c => out.push(c),
    }
}

/// `text` escaped for mrkdwn, then cut to `max` characters (never inside an escape).
fn escape(text: &str, max: usize) -> String {
    limits::escape_within(text, max, escape_char)
}

fn section(text: String) -> Value {
    json!({"type": "section", "text": {"type": "mrkdwn", "text": text}})
}

fn header(text: &str) -> Value {
    json!({"type": "header", "text": {"type": "plain_text", "text": limits::truncate(text, SLACK_HEADER_TEXT)}})
}

fn context(alert: &AlertMessage) -> Value {
    json!({"type": "context", "elements": [{"type": "mrkdwn", "text": format!("Skywarden · {}", alert.dedup_key)}]})
}

fn alert_blocks(alert: &AlertMessage) -> Vec<Value> {
    vec![
        header(&alert.title_line()),
        section(escape(&alert.who_and_where(), SLACK_SECTION_TEXT)),
        fields(alert.facts()),
        section(format!("*Next step:* {}", escape(&alert.next_step, SLACK_SECTION_TEXT - 13))),
        json!({"type": "actions", "elements": [
            {"type": "button", "text": {"type": "plain_text", "text": "Open alert"}, "url": alert.url, "style": "danger"}
        ]}),
        context(alert),
    ]
}

fn fields(facts: Vec<(&'static str, String)>) -> Value {
    let fields: Vec<Value> = facts
        .into_iter()
        .take(SLACK_FIELDS)
        .map(|(name, value)| {
            let name = format!("*{}*\n", escape(name, SLACK_HEADER_TEXT));
            let room = (SLACK_FIELD_TEXT - name.chars().count()).min(FIELD_VALUE);
            json!({"type": "mrkdwn", "text": format!("{name}{}", escape(&value, room))})
        })
        .collect();
    json!({"type": "section", "fields": fields})
}

/// What automatic containment did: the outcome as header, the facts, the undo command and
/// buttons to the alert (whose Respond section undoes or approves) and the incident.
fn automatic_payload(alert: &AlertMessage, action: &AutomaticAction) -> Value {
    let buttons: Vec<Value> = action
        .links(alert)
        .into_iter()
        .zip(["Open alert", "Open incident"])
        .map(|((_, url), text)| json!({"type": "button", "text": {"type": "plain_text", "text": text}, "url": url}))
        .collect();
    let mut blocks = vec![
        header(action.outcome.label()),
        section(escape(&action.headline(), SLACK_SECTION_TEXT)),
        fields(action.facts(alert)),
    ];
    if let Some(command) = &action.undo_command {
        blocks
            .push(section(format!("*To undo:* `{}`", escape(&limits::single_line(command), SLACK_SECTION_TEXT - 20))));
    }
    blocks.push(json!({"type": "actions", "elements": buttons}));
    blocks.push(context(alert));
    json!({"text": escape(&action.headline(), SLACK_TEXT), "blocks": blocks})
}

fn status_payload(alert: &AlertMessage, line: &str) -> Value {
    let link = format!("\n<{}|Open alert>", alert.url);
    let title = escape(&alert.title_line(), DIGEST_PART);
    let room = SLACK_SECTION_TEXT.saturating_sub(title.chars().count() + link.chars().count() + "** was ".len());
    json!({
        "text": escape(&format!("{}: {line}", alert.title_line()), SLACK_TEXT),
        "blocks": [section(format!("*{title}* was {}{link}", escape(line, room))), context(alert)]
    })
}

/// The digest as whole lines (a link is never cut) within the section limit, then "…and N more";
/// the fallback text lists the same way within Slack's limit for `text`.
fn digest_payload(alerts: &[AlertMessage], period_minutes: i32) -> Value {
    let (mut lines, mut fallback) = (Vec::new(), Vec::new());
    for alert in alerts {
        let severity = alert.severity.as_str().to_uppercase();
        let (title, who) = (escape(&alert.title_line(), DIGEST_PART), escape(&alert.who_and_where(), DIGEST_PART));
        lines.push(format!("• *{severity}* <{}|{title}>: {who}", alert.url));
        fallback.push(format!("[{severity}] {title}: {who} ({})", alert.url));
    }
    let title = digest_title(alerts, period_minutes);
    let room = SLACK_TEXT - title.chars().count() - 1;
    json!({
        "text": format!("{title}\n{}", limits::join_within(&fallback, DIGEST_SHOWN, "\n", room)),
        "blocks": [header(&title), section(limits::join_within(&lines, DIGEST_SHOWN, "\n", SLACK_SECTION_TEXT))]
    })
}

pub fn payload(notification: &Notification<'_>) -> Value {
    match notification {
        Notification::Opened(alert) => {
            json!({"text": escape(&alert.summary(), SLACK_TEXT), "blocks": alert_blocks(alert)})
        }
        Notification::StatusChanged { alert, status, actor, reason, .. } => {
            status_payload(alert, &status_line(*status, actor, reason))
        }
        Notification::Digest { alerts, period_minutes } => digest_payload(alerts, *period_minutes),
        Notification::AutomaticAction { alert, action, .. } => automatic_payload(alert, action),
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
    fn automatic_actions_say_what_where_the_result_and_how_to_undo() {
        let (alert, mut action) = (hijack(), revoked());
        action.result = "FAILED: <!channel> denied".into();
        action.outcome = crate::notify::message::ActionOutcome::Failed;
        let body = payload(&Notification::AutomaticAction { alert: &alert, action: &action, remote_ref: None });
        assert_eq!(body["blocks"][0]["text"]["text"], "Automatic action FAILED");
        let fields = body["blocks"][2]["fields"].as_array().unwrap();
        let field = |name: &str| {
            fields.iter().find(|f| f["text"].as_str().unwrap().starts_with(&format!("*{name}*"))).unwrap()["text"]
                .clone()
        };
        assert_eq!(field("Account"), "*Account*\n123456789012");
        assert_eq!(field("Region"), "*Region*\neu-west-1");
        assert_eq!(field("Result"), "*Result*\nFAILED: &lt;!channel&gt; denied");
        assert_eq!(field("Incident"), "*Incident*\ninc-20261112-0001");
        assert!(
            body["blocks"][3]["text"]["text"].as_str().unwrap().starts_with("*To undo:* `skywarden respond undo 7c9e")
        );
        let buttons = body["blocks"][4]["elements"].as_array().unwrap();
        assert_eq!(
            (buttons[0]["url"].as_str(), buttons[1]["url"].as_str()),
            (Some(alert.url.as_str()), action.incident_url.as_deref())
        );
    }

    #[test]
    fn mrkdwn_control_characters_are_escaped() {
        let mut alert = hijack();
        alert.principal = Some("<!channel> & co".into());
        let body = payload(&Notification::Opened(&alert));
        assert!(body["blocks"][1]["text"]["text"].as_str().unwrap().starts_with("&lt;!channel&gt; &amp; co"));
    }

    fn texts(value: &Value, out: &mut Vec<String>) {
        match value {
            Value::Object(map) => {
                if let Some(Value::String(text)) = map.get("text") {
                    out.push(text.clone());
                }
                map.values().for_each(|v| texts(v, out));
            }
            Value::Array(items) => items.iter().for_each(|v| texts(v, out)),
            _ => {}
        }
    }

    #[test]
    fn hostile_fields_are_escaped_then_cut_within_block_kit_limits() {
        let alert = hostile();
        let body = payload(&Notification::Opened(&alert));
        let blocks = body["blocks"].as_array().unwrap();
        let count = |v: &Value| v.as_str().unwrap().chars().count();
        assert!(count(&blocks[0]["text"]["text"]) <= SLACK_HEADER_TEXT);
        assert!(count(&blocks[1]["text"]["text"]) <= SLACK_SECTION_TEXT);
        let fields = blocks[2]["fields"].as_array().unwrap();
        assert!(fields.len() <= SLACK_FIELDS && fields.iter().all(|f| count(&f["text"]) <= SLACK_FIELD_TEXT));
        assert!(count(&body["text"]) <= SLACK_TEXT);
        let who = blocks[1]["text"]["text"].as_str().unwrap();
        assert!(who.starts_with("alice  Severity: low  &lt;!channel&gt; &amp; "), "{who}");
        let mut all = Vec::new();
        texts(&body, &mut all);
        assert!(all.iter().any(|t| t.ends_with(limits::MARKER)), "a visible cut");
        // No raw control characters, no unescaped mention anywhere.
        assert!(all.iter().all(|t| !t.contains('\r') && !t.contains("<!channel>")));
    }

    #[test]
    fn hostile_digests_list_whole_lines_and_count_the_rest() {
        let alerts: Vec<_> = (0..500).map(|_| hostile()).collect();
        let body = payload(&Notification::Digest { alerts: &alerts, period_minutes: 60 });
        let section = body["blocks"][1]["text"]["text"].as_str().unwrap();
        assert!(section.chars().count() <= SLACK_SECTION_TEXT);
        let lines: Vec<&str> = section.lines().collect();
        assert!(lines.len() >= 2, "{section}");
        assert_eq!(*lines.last().unwrap(), format!("…and {} more", 500 - (lines.len() - 1)));
        // Every link is whole: `<url|title>` with its closing bracket.
        for line in &lines[..lines.len() - 1] {
            assert!(line.starts_with("• *HIGH* <https://") && line.matches('<').count() == 1, "{line}");
            assert!(line.contains(&format!("{}|", alerts[0].url)) && line.contains('>'), "{line}");
        }
        let text = body["text"].as_str().unwrap();
        assert!(text.chars().count() <= SLACK_TEXT);
        assert!(text.lines().last().unwrap().starts_with("…and "), "the fallback counts the rest too");
        assert!(
            text.lines().skip(1).filter(|l| !l.starts_with('…')).all(|l| l.ends_with(&format!("({})", alerts[0].url)))
        );
    }
}
