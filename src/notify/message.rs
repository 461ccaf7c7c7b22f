//! What a notification says about an alert, whatever the channel: who, what, where (address and
//! country), when, a link back to the alert page, and what to do next.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::limits;
use super::targets::{Notification, digest_lines, digest_title};
use crate::alerts::store::AlertView;
use crate::model::{AlertStatus, Severity};

/// Attacker-controlled values are cut to these many characters in every message (IAM names are at
/// most 64 characters and session ARNs about 200: longer values are noise or an attack).
const TITLE_MAX: usize = 200;
const PRINCIPAL_MAX: usize = 256;
const SHORT_MAX: usize = 64;
const FACT_MAX: usize = 1000;

/// An alert as every channel renders it.
#[derive(Clone, Debug, Serialize)]
pub struct AlertMessage {
    pub id: String,
    pub url: String,
    pub policy_id: String,
    pub title: String,
    pub severity: Severity,
    pub status: AlertStatus,
    pub account_id: String,
    pub principal: Option<String>,
    pub source_ip: Option<String>,
    pub country: Option<String>,
    pub resources: Vec<String>,
    pub first_seen: DateTime<Utc>,
    pub last_seen: DateTime<Utc>,
    pub event_count: i64,
    pub mitre: Vec<String>,
    pub next_step: String,
    /// Stable for the alert: receivers use it to drop repeated deliveries.
    pub dedup_key: String,
    /// A message sent from the channel's test button, not a real alert.
    pub is_test: bool,
}

impl AlertMessage {
    pub fn from_alert(alert: &AlertView, public_url: &str) -> Self {
        Self {
            url: alert_url(public_url, &alert.id),
            dedup_key: dedup_key(&alert.id),
            id: alert.id.clone(),
            policy_id: alert.policy_id.clone(),
            title: alert.title.clone(),
            severity: alert.severity,
            status: alert.status,
            account_id: alert.account_id.clone(),
            principal: alert.principal.clone(),
            source_ip: alert.source_ip.clone(),
            country: alert.country.clone(),
            resources: alert.resources.clone(),
            first_seen: alert.first_seen,
            last_seen: alert.last_seen,
            event_count: alert.event_count,
            mitre: alert.mitre.clone(),
            next_step: next_step(&alert.policy_id).to_string(),
            is_test: false,
        }
    }

    /// The sample a channel's test button sends: shaped like the hijack alert of the seed story.
    pub fn sample(public_url: &str) -> Self {
        let id = "00000000-0000-4000-8000-000000000000".to_string();
        let now = Utc::now();
        Self {
            url: alert_url(public_url, &id),
            dedup_key: format!("skywarden-test-{}", now.timestamp()),
            id,
            policy_id: "aws-account-hijacking-attempt".into(),
            title: "[Test] Console login from a country new for the user".into(),
            severity: Severity::High,
            status: AlertStatus::Open,
            account_id: "123456789012".into(),
            principal: Some("alice".into()),
            source_ip: Some("203.0.113.10".into()),
            country: Some("RU".into()),
            resources: vec![],
            first_seen: now,
            last_seen: now,
            event_count: 1,
            mitre: vec!["TA0001/T1078.004".into()],
            next_step: "This is a test message from Skywarden; nothing needs doing.".into(),
            is_test: true,
        }
    }

    /// The title on one line, cut for chat headers and ticket summaries.
    pub fn title_line(&self) -> String {
        limits::truncate(&limits::single_line(&self.title), TITLE_MAX)
    }

    /// "who, from where": `alice from 203.0.113.10 (RU)`, on one line.
    pub fn who_and_where(&self) -> String {
        let who = match &self.principal {
            Some(principal) => limits::truncate(&limits::single_line(principal), PRINCIPAL_MAX),
            None => "unknown principal".to_string(),
        };
        let short = |text: &str| limits::truncate(&limits::single_line(text), SHORT_MAX);
        match (&self.source_ip, &self.country) {
            (Some(ip), Some(country)) => format!("{who} from {} ({})", short(ip), short(country)),
            (Some(ip), None) => format!("{who} from {}", short(ip)),
            (None, _) => who,
        }
    }

    /// One line for chat titles, ticket summaries and email subjects.
    pub fn summary(&self) -> String {
        format!("[{}] {}: {}", self.severity.as_str().to_uppercase(), self.title_line(), self.who_and_where())
    }

    /// The facts, one line each (alert data cannot forge another line), for plain-text bodies.
    pub fn facts(&self) -> Vec<(&'static str, String)> {
        let mut facts = vec![
            ("Severity", self.severity.to_string()),
            ("Policy", self.policy_id.clone()),
            ("Account", self.account_id.clone()),
            ("Who", self.principal.clone().unwrap_or_else(|| "unknown".into())),
            ("Source IP", self.source_ip.clone().unwrap_or_else(|| "-".into())),
            ("Country", self.country.clone().unwrap_or_else(|| "-".into())),
            ("When", format_time(self.first_seen)),
        ];
        if self.last_seen != self.first_seen {
            facts.push(("Last seen", format_time(self.last_seen)));
        }
        if self.event_count > 1 {
            facts.push(("Events", self.event_count.to_string()));
        }
        if !self.resources.is_empty() {
            facts.push(("Resources", self.resources.join(", ")));
        }
        if !self.mitre.is_empty() {
            facts.push(("MITRE ATT&CK", self.mitre.join(", ")));
        }
        facts
            .into_iter()
            .map(|(name, value)| (name, limits::truncate(&limits::single_line(&value), FACT_MAX)))
            .collect()
    }

    /// The alert data of a plain-text body: the summary, then one line per fact.
    pub fn text_head(&self) -> String {
        let mut text = format!("{}\n\n", self.summary());
        for (name, value) in self.facts() {
            text.push_str(&format!("{name}: {value}\n"));
        }
        text
    }

    /// What ends every body: the next step and the link back to the alert.
    fn text_tail(&self) -> String {
        format!("\nNext step: {}\n\nOpen the alert: {}\n", self.next_step, self.url)
    }

    /// A plain-text body: the facts, the next step and the link.
    pub fn text(&self) -> String {
        self.text_head() + &self.text_tail()
    }

    /// [`Self::text`] within `max` characters: the alert data is cut (marked), never the next
    /// step or the link.
    pub fn text_within(&self, max: usize) -> String {
        let tail = self.text_tail();
        let room = max.saturating_sub(tail.chars().count());
        limits::truncate(&self.text_head(), room) + &tail
    }
}

/// Subject and plain-text body of an email: a one-line subject within [`limits::EMAIL_SUBJECT`],
/// alert data that cannot forge body lines, and digests cut at whole alerts with "…and N more".
pub fn email_subject_and_body(notification: &Notification<'_>) -> (String, String) {
    let subject = |text: String| limits::truncate(&limits::single_line(&text), limits::EMAIL_SUBJECT);
    match notification {
        Notification::Opened(alert) => (subject(alert.summary()), alert.text()),
        Notification::StatusChanged { alert, status, actor, reason, .. } => (
            subject(format!("Re: {}", alert.summary())),
            format!("The alert was {}.\n\n{}", status_line(*status, actor, reason), alert.text()),
        ),
        Notification::AutomaticAction { alert, action, .. } => {
            (subject(format!("{} (Re: {})", action.headline(), alert.summary())), action.text(alert))
        }
        Notification::Digest { alerts, period_minutes } => {
            let lines = digest_lines(alerts);
            let body = limits::join_within(&lines, usize::MAX, "\n", limits::EMAIL_DIGEST_BODY);
            (subject(digest_title(alerts, *period_minutes)), format!("{body}\n"))
        }
    }
}

/// What became of an automatic containment action.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ActionOutcome {
    /// Applied: the resource was changed (or was already contained).
    Taken,
    /// Tried and failed; a failure half-way says what it changed in the record.
    Failed,
    /// Its kind needs a second person's approval: nothing runs until someone approves it.
    AwaitingApproval,
    /// Dry-run mode: recorded what it would do, changed nothing.
    DryRun,
    /// Not run: a rate limit, or no responder role for the account.
    NotRun,
}

impl ActionOutcome {
    /// The words of headlines and subjects.
    pub fn label(self) -> &'static str {
        match self {
            Self::Taken => "Automatic action taken",
            Self::Failed => "Automatic action FAILED",
            Self::AwaitingApproval => "Automatic action awaiting approval",
            Self::DryRun => "Automatic action (dry run, nothing changed)",
            Self::NotRun => "Automatic action NOT run",
        }
    }
}

/// What automatic containment did about an alert, as every channel renders it: what was done,
/// to which resource, where, the result and how to undo it. Stored with the outbox row
/// (`automatic_action`); documented in docs/webhooks.md.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AutomaticAction {
    pub outcome: ActionOutcome,
    /// The action's kind (`revoke-ingress-rule`, `quarantine`, …).
    pub kind: String,
    /// The resource it acts on (`sg-…:sgr-…`, `user/alice`, …).
    pub resource: String,
    pub account_id: String,
    pub region: String,
    /// The rule of policies/response.yaml that asked for it.
    pub rule: String,
    /// What happened, in a sentence (the recorded status, or the error).
    pub result: String,
    /// The recorded action (`skywarden respond list`), when one was recorded.
    pub action_id: Option<String>,
    /// How to undo it, in a sentence (or why there is nothing to undo).
    pub undo: String,
    /// The command that undoes it, when it can be undone now.
    pub undo_command: Option<String>,
    /// When it happened: the record's `applied_at`, else its `created_at` (none only in outbox
    /// rows written before this field).
    #[serde(default)]
    pub at: Option<DateTime<Utc>>,
    /// The incident the alert belongs to, filled in when it is sent.
    #[serde(default)]
    pub incident_id: Option<String>,
    /// The incident's dashboard page, filled in when it is sent.
    #[serde(default)]
    pub incident_url: Option<String>,
}

impl AutomaticAction {
    /// `Automatic action taken: revoke-ingress-rule sg-1:sgr-1 in 111122223333/eu-west-1`, one line.
    pub fn headline(&self) -> String {
        let line =
            format!("{}: {} {} in {}/{}", self.outcome.label(), self.kind, self.resource, self.account_id, self.region);
        limits::truncate(&limits::single_line(&line), TITLE_MAX * 2)
    }

    /// The facts, one line each and cut, for every receiver.
    pub fn facts(&self, alert: &AlertMessage) -> Vec<(&'static str, String)> {
        let mut facts = vec![
            ("Action", self.kind.clone()),
            ("Resource", self.resource.clone()),
            ("Account", self.account_id.clone()),
            ("Region", self.region.clone()),
            ("Result", self.result.clone()),
            ("At", self.at_text()),
            ("Alert", format!("{} ({})", alert.title_line(), alert.id)),
            ("Incident", self.incident_id.clone().unwrap_or_else(|| "none yet".into())),
            ("Rule", self.rule.clone()),
            ("Undo", self.undo.clone()),
        ];
        if let Some(id) = &self.action_id {
            facts.push(("Action id", id.clone()));
        }
        facts
            .into_iter()
            .map(|(name, value)| (name, limits::truncate(&limits::single_line(&value), FACT_MAX)))
            .collect()
    }

    /// When it happened, ISO 8601 in UTC (`unknown` for an old outbox row without it).
    pub fn at_text(&self) -> String {
        self.at.map_or_else(|| "unknown".into(), |at| at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
    }

    /// The links of a body: the alert page (its Respond section undoes) and the incident's.
    pub fn links(&self, alert: &AlertMessage) -> Vec<(&'static str, String)> {
        let mut links = vec![("Open the alert (Respond section: undo, approve)", alert.url.clone())];
        if let Some(url) = &self.incident_url {
            links.push(("Open the incident", url.clone()));
        }
        links
    }

    /// A plain-text body: the headline, one line per fact, the undo command and the links.
    pub fn text(&self, alert: &AlertMessage) -> String {
        self.text_head(alert) + &self.text_links(alert)
    }

    /// The headline, one line per fact and the undo command (what markup must escape).
    pub fn text_head(&self, alert: &AlertMessage) -> String {
        let mut text = format!("{}\n\n", self.headline());
        for (name, value) in self.facts(alert) {
            text.push_str(&format!("{name}: {value}\n"));
        }
        if let Some(command) = &self.undo_command {
            text.push_str(&format!("\nTo undo: {}\n", limits::single_line(command)));
        }
        text
    }

    /// The links, a line each (Skywarden's own URLs).
    pub fn text_links(&self, alert: &AlertMessage) -> String {
        self.links(alert).into_iter().map(|(name, url)| format!("\n{name}: {url}\n")).collect()
    }
}

/// The dashboard page of an incident.
pub fn incident_url(public_url: &str, incident_id: &str) -> String {
    format!("{}/#/incident/{incident_id}", public_url.trim_end_matches('/'))
}

/// The receiver-visible dedup key of an alert.
pub fn dedup_key(alert_id: &str) -> String {
    format!("skywarden-{alert_id}")
}

pub fn alert_url(public_url: &str, alert_id: &str) -> String {
    format!("{}/#/alert/{alert_id}", public_url.trim_end_matches('/'))
}

pub fn format_time(time: DateTime<Utc>) -> String {
    time.format("%Y-%m-%d %H:%M:%S UTC").to_string()
}

/// A sentence on what to do when a status changes: `acknowledged by bob: looking into it`, on one
/// line.
pub fn status_line(status: AlertStatus, actor: &str, reason: &str) -> String {
    let actor = limits::truncate(&limits::single_line(actor), PRINCIPAL_MAX);
    let reason = limits::truncate(&limits::single_line(reason), FACT_MAX);
    if reason.is_empty() { format!("{status} by {actor}") } else { format!("{status} by {actor}: {reason}") }
}

/// What a responder does first, per policy.
pub fn next_step(policy_id: &str) -> &'static str {
    match policy_id {
        "aws-account-hijacking-attempt" | "aws-impossible-travel" => {
            "Confirm with the user that they signed in from there; if not, disable their console password and \
             access keys, revoke active sessions, and review what the session did."
        }
        "aws-excessive-login-failures" => {
            "Check whether any login from the same source succeeded afterwards; block the source address if it keeps trying."
        }
        "aws-security-group-ingress-opened" => {
            "Check who opened the rule and why; revoke ingress from the internet or a foreign address unless it is approved."
        }
        "aws-iam-user-created" | "aws-iam-access-key-created" => {
            "Confirm the new user or key was requested; if not, delete it and review the creator's session."
        }
        "aws-iam-role-policy-attached" | "aws-iam-instance-profile-associated" => {
            "Confirm the role change was intended; an attacker attaches roles to gain privileges or persistence."
        }
        "aws-cloudtrail-logging-disabled" => {
            "Turn logging back on at once, then find out who stopped it and what happened while it was off."
        }
        "aws-flow-exfiltration-volume" => {
            "Identify the instance and the destination; isolate the instance if the transfer is not expected."
        }
        "aws-root-account-usage" => {
            "Confirm the root user's use with the account owner; root should almost never sign in."
        }
        _ => "Open the alert, review the evidence events, then acknowledge or resolve it.",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_sample_says_who_and_where() {
        let message = AlertMessage::sample("https://skywarden.example.com/");
        assert_eq!(message.who_and_where(), "alice from 203.0.113.10 (RU)");
        assert_eq!(message.url, "https://skywarden.example.com/#/alert/00000000-0000-4000-8000-000000000000");
        assert!(message.text().contains("Next step: "));
        assert!(message.summary().starts_with("[HIGH] [Test] "));
    }

    #[test]
    fn status_lines_include_the_reason_when_given() {
        assert_eq!(status_line(AlertStatus::Resolved, "bob", " "), "resolved by bob");
        assert_eq!(status_line(AlertStatus::Acknowledged, "bob", "on it"), "acknowledged by bob: on it");
    }

    #[test]
    fn alert_data_cannot_forge_lines_or_grow_without_bound() {
        let alert = crate::notify::targets::test_support::hostile();
        assert!(!alert.summary().contains(['\r', '\n']));
        let text = alert.text();
        assert!(!text.lines().any(|line| line.starts_with("Severity: low")), "{text}");
        assert!(alert.facts().iter().all(|(_, value)| value.chars().count() <= FACT_MAX));
        let line = status_line(AlertStatus::Resolved, "bob\r\nroot", &"ok\r\nSeverity: low ".repeat(1000));
        assert!(!line.contains('\n') && line.chars().count() <= FACT_MAX + PRINCIPAL_MAX + 20);
    }

    #[test]
    fn emails_have_one_line_subjects_and_digests_cut_at_whole_alerts() {
        let alert = crate::notify::targets::test_support::hostile();
        let (subject, body) = email_subject_and_body(&Notification::Opened(&alert));
        assert!(subject.chars().count() <= limits::EMAIL_SUBJECT && !subject.contains(['\r', '\n']));
        assert!(body.ends_with(&format!("Open the alert: {}\n", alert.url)));
        let alerts = vec![alert; 500];
        let (subject, body) = email_subject_and_body(&Notification::Digest { alerts: &alerts, period_minutes: 60 });
        assert!(subject.starts_with("Skywarden: 500 new alerts"));
        assert!(body.chars().count() <= limits::EMAIL_DIGEST_BODY + 1);
        let last = body.trim_end().lines().last().unwrap();
        assert!(last.starts_with("…and ") && last.ends_with(" more"), "{last}");
        assert!(body.lines().filter(|l| !l.starts_with('…')).all(|l| l.ends_with(&format!("({})", alerts[0].url))));
    }
}
