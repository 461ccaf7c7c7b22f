//! Detection: the policies (rules as files in `policies/`, loaded, validated and compiled once)
//! and the runner that evaluates them over stored events and flows.
//!
//! - `policies/sigma/**.yml`: event rules in Sigma, evaluated with `rsigma`. Skywarden's own
//!   rules are on by default; the vendored SigmaHQ pack (`policies/sigma/sigmahq/`) is off until
//!   a rule is listed in `policies/skywarden.yaml`.
//! - `policies/detectors.yaml`: settings of the behavioural detectors written in Rust (they
//!   need state and geography that rule languages do not have).
//!
//! Policies see stored events ([`PolicyEvent`]) and produce [`Finding`]s; [`runner`] feeds them
//! in event-time order and stores the findings as alerts.
//!
//! Imports `ingest` (event shapes), `geo`, `net`, `model`, `alerts` and `notify` (to queue the
//! alerts' messages in their transaction); never `aws`, `http` or `pollers`.

pub mod detectors;
pub mod event;
pub mod runner;
pub mod sigma;

#[cfg(test)]
mod policy_tests;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use chrono::Duration;
use serde::{Deserialize, Serialize};

use crate::model::{Finding, Mitre, Severity};
pub use detectors::DetectorSettings;
pub use event::PolicyEvent;
pub use runner::{DetectError, DetectionSummary, Scope, database_now, evaluate, run};

/// A problem with one policy file; the other policies still load.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct PolicyProblem {
    pub file: String,
    pub problem: String,
}

impl std::fmt::Display for PolicyProblem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.file, self.problem)
    }
}

/// What a finding deduplicates on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Subject {
    /// The acting principal (ARN, else user name).
    #[default]
    Principal,
    /// The first resource the event touched.
    Resource,
    /// The source address.
    SourceIp,
}

/// Where a policy comes from.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum PolicyKind {
    Sigma,
    Detector,
}

/// What every policy declares.
#[derive(Clone, Debug, Serialize)]
pub struct PolicyMeta {
    pub id: String,
    pub title: String,
    pub severity: Severity,
    pub kind: PolicyKind,
    pub file: PathBuf,
    pub enabled: bool,
    pub mitre: Vec<Mitre>,
    pub description: Option<String>,
    pub subject: Subject,
    #[serde(skip)]
    pub dedup_window: Duration,
}

impl PolicyMeta {
    /// A finding of this policy about one event, with the event's who/where/what.
    pub fn finding_for(&self, event: &PolicyEvent, severity: Severity, title: String) -> Finding {
        let principal = event.principal().map(str::to_string);
        let subject = match self.subject {
            Subject::Principal => principal.clone(),
            Subject::Resource => event.resource_ids.first().cloned(),
            Subject::SourceIp => event.source_ip_text.clone(),
        }
        .or_else(|| principal.clone())
        .unwrap_or_else(|| event.event_id.clone());
        Finding {
            policy_id: self.id.clone(),
            title,
            severity,
            account_id: event.account_id.clone(),
            subject,
            dedup_window: self.dedup_window,
            principal,
            source_ip: event.source_ip,
            country: event.geo_country.clone(),
            resources: event.resource_ids.clone(),
            evidence_id: event.event_id.clone(),
            time: event.event_time,
            mitre: self.mitre.clone(),
            session_key: event.session_key(),
            details: serde_json::json!({}),
        }
    }
}

/// `policies/skywarden.yaml`: which policies run.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct Selection {
    /// SigmaHQ rules to switch on, by rule id, name or file name (without `.yml`).
    #[serde(default)]
    enable: Vec<String>,
    /// Any policy to switch off, by id.
    #[serde(default)]
    disable: Vec<String>,
}

/// Every policy, compiled.
pub struct PolicySet {
    pub sigma: sigma::SigmaPolicies,
    pub detectors: detectors::Detectors,
    pub problems: Vec<PolicyProblem>,
}

impl PolicySet {
    /// Loads `dir`. Broken files are listed in `problems` and left out; the rest load.
    pub fn load(dir: &Path) -> Self {
        Self::load_with(dir, false)
    }

    /// Loads `dir`, optionally with every vendored SigmaHQ rule switched on (benchmarks).
    pub fn load_with(dir: &Path, enable_all_vendored: bool) -> Self {
        let mut problems = Vec::new();
        let selection_file = dir.join("skywarden.yaml");
        let selection: Selection = match std::fs::read_to_string(&selection_file) {
            Ok(text) => yaml_serde::from_str(&text).unwrap_or_else(|error| {
                problems.push(PolicyProblem { file: selection_file.display().to_string(), problem: error.to_string() });
                Selection::default()
            }),
            Err(_) => Selection::default(),
        };
        let disabled: BTreeSet<String> = selection.disable.into_iter().collect();
        let mut enabled: BTreeSet<String> = selection.enable.into_iter().collect();
        if enable_all_vendored {
            enabled.insert("*".to_string());
        }
        let sigma = sigma::SigmaPolicies::load(&dir.join("sigma"), &enabled, &disabled, &mut problems);
        let detectors = detectors::Detectors::load(&dir.join("detectors.yaml"), &disabled, &mut problems);
        Self { sigma, detectors, problems }
    }

    /// Metadata of every policy, enabled or not, sorted by id.
    pub fn list(&self) -> Vec<PolicyMeta> {
        let mut all: Vec<PolicyMeta> = self.sigma.metas().chain(self.detectors.metas()).cloned().collect();
        all.sort_by(|a, b| a.id.cmp(&b.id).then(a.file.cmp(&b.file)));
        // Rules that share a policy id (a base rule and an escalation) list once.
        all.dedup_by(|a, b| a.id == b.id);
        all
    }

    pub fn knows(&self, policy_id: &str) -> bool {
        self.list().iter().any(|m| m.id == policy_id)
    }
}

/// MITRE ATT&CK tactic ids by the names Sigma tags use.
const TACTICS: &[(&str, &str)] = &[
    ("reconnaissance", "TA0043"),
    ("resource-development", "TA0042"),
    ("initial-access", "TA0001"),
    ("execution", "TA0002"),
    ("persistence", "TA0003"),
    ("privilege-escalation", "TA0004"),
    ("defense-evasion", "TA0005"),
    ("defense-impairment", "TA0005"),
    ("credential-access", "TA0006"),
    ("discovery", "TA0007"),
    ("lateral-movement", "TA0008"),
    ("collection", "TA0009"),
    ("exfiltration", "TA0010"),
    ("command-and-control", "TA0011"),
    ("impact", "TA0040"),
];

/// Reads ATT&CK tags (`attack.initial-access`, `attack.t1078.004`) into tactic/technique pairs.
pub fn mitre_from_tags(tags: &[String]) -> Vec<Mitre> {
    let mut tactics = Vec::new();
    let mut techniques = Vec::new();
    for tag in tags {
        let Some(name) = tag.strip_prefix("attack.") else { continue };
        if let Some((_, id)) = TACTICS.iter().find(|(tactic, _)| *tactic == name) {
            tactics.push(*id);
        } else if name.starts_with('t') && name[1..].chars().next().is_some_and(|c| c.is_ascii_digit()) {
            techniques.push(name.to_ascii_uppercase());
        }
    }
    let technique = techniques.first().cloned().unwrap_or_default();
    let mut mitre: Vec<Mitre> = tactics.iter().map(|t| Mitre::new(t, &technique)).collect();
    if mitre.is_empty() && !technique.is_empty() {
        mitre.push(Mitre::new("", &technique));
    }
    mitre.dedup();
    mitre
}

/// Parses durations written as `30s`, `10m`, `1h`, `30d`.
pub fn parse_duration(text: &str) -> Option<Duration> {
    let text = text.trim();
    let (number, unit) = text.split_at(text.find(|c: char| !c.is_ascii_digit())?);
    let n: i64 = number.parse().ok()?;
    match unit {
        "s" => Some(Duration::seconds(n)),
        "m" => Some(Duration::minutes(n)),
        "h" => Some(Duration::hours(n)),
        "d" => Some(Duration::days(n)),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_attack_tags() {
        let tags: Vec<String> = ["attack.initial-access", "attack.persistence", "attack.t1078.004", "cve.2020"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        let mitre = mitre_from_tags(&tags);
        assert_eq!(mitre, vec![Mitre::new("TA0001", "T1078.004"), Mitre::new("TA0003", "T1078.004")]);
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("10m"), Some(Duration::minutes(10)));
        assert_eq!(parse_duration("30d"), Some(Duration::days(30)));
        assert_eq!(parse_duration("soon"), None);
    }
}
