//! Detection: the policies (rules as files, built into the binary from `policies/` and
//! optionally overridden from a folder, see [`crate::policy_files`]; loaded, validated and
//! compiled once) and the runner that evaluates them over stored events and flows.
//!
//! - `sigma/**.yml`: event rules in Sigma, evaluated with `rsigma`. Skywarden's own rules are
//!   on by default; the vendored SigmaHQ pack (`sigma/sigmahq/`) is off until a rule is listed
//!   in `skywarden.yaml`.
//! - `detectors.yaml`: settings of the behavioural detectors written in Rust (they need state
//!   and geography that rule languages do not have).
//!
//! Policies see stored events ([`PolicyEvent`]) and produce [`Finding`]s; [`runner`] feeds them
//! in event-time order and stores the findings as alerts.
//!
//! Imports `ingest` (event shapes), `geo`, `net`, `model`, `alerts` and `notify` (to queue the
//! alerts' messages in their transaction); never `aws`, `http` or `pollers`.

pub mod detectors;
pub mod event;
pub mod health;
pub mod lease;
pub mod lint;
pub mod runner;
pub mod sigma;

#[cfg(test)]
mod policy_tests;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use chrono::Duration;
use serde::{Deserialize, Serialize};

use crate::model::{Finding, Mitre, Severity};
pub use crate::policy_files::PolicyProblem;
use crate::policy_files::{Origin, PolicyFiles};
pub use detectors::DetectorSettings;
pub use event::PolicyEvent;
pub use runner::{
    DetectError, DetectionSummary, PendingOptions, Scope, Stage, StageTimes, database_now, evaluate, run, run_pending,
    run_pending_with, stage_seconds_total,
};

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
    /// Its file's path in the policy tree (`sigma/skywarden/iam_user_created.yml`).
    pub file: PathBuf,
    /// `builtin`, or the overriding file's path.
    pub origin: Origin,
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

/// The selection file's path in the policy tree.
const SELECTION_FILE: &str = "skywarden.yaml";
/// The detector settings' path in the policy tree.
const DETECTORS_FILE: &str = "detectors.yaml";
/// The folder of Sigma rules in the policy tree.
const SIGMA_FOLDER: &str = "sigma";

/// `skywarden.yaml`: which policies run.
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

impl Selection {
    /// The tree's selection file; without one, the defaults (a broken one is a problem).
    fn load(files: &PolicyFiles, problems: &mut Vec<PolicyProblem>) -> Self {
        problems.extend(files.unreadable_at(SELECTION_FILE).cloned());
        let Some(file) = files.get(SELECTION_FILE) else { return Self::default() };
        yaml_serde::from_str(&file.text).unwrap_or_else(|error| {
            problems.push(PolicyProblem { file: file.location(), problem: error.to_string() });
            Self::default()
        })
    }
}

/// Every policy, compiled.
pub struct PolicySet {
    pub sigma: sigma::SigmaPolicies,
    pub detectors: detectors::Detectors,
    pub problems: Vec<PolicyProblem>,
}

impl PolicySet {
    /// Loads the policies of `files`. Broken files are listed in `problems` and left out; the
    /// rest load.
    pub fn from_files(files: &PolicyFiles) -> Self {
        Self::from_files_with(files, false)
    }

    /// Loads `files`, optionally with every vendored SigmaHQ rule switched on (benchmarks).
    pub fn from_files_with(files: &PolicyFiles, enable_all_vendored: bool) -> Self {
        let mut problems = Vec::new();
        let selection = Selection::load(files, &mut problems);
        let disabled: BTreeSet<String> = selection.disable.into_iter().collect();
        let mut enabled: BTreeSet<String> = selection.enable.into_iter().collect();
        if enable_all_vendored {
            enabled.insert("*".to_string());
        }
        let sigma = sigma::SigmaPolicies::from_files(files, SIGMA_FOLDER, &enabled, &disabled, &mut problems);
        problems.extend(files.unreadable_at(DETECTORS_FILE).cloned());
        let detectors = detectors::Detectors::from_files(files, DETECTORS_FILE, &disabled, &mut problems);
        Self { sigma, detectors, problems }
    }

    /// The policies built into the binary.
    pub fn builtin() -> Self {
        Self::from_files(&PolicyFiles::builtin())
    }

    /// Loads the policy files in `dir` alone, without the built-in ones (tests and benchmarks
    /// that point at a folder; a missing folder is no rules and default detector settings).
    pub fn load(dir: &Path) -> Self {
        Self::load_with(dir, false)
    }

    /// [`PolicySet::load`], optionally with every vendored SigmaHQ rule switched on.
    pub fn load_with(dir: &Path, enable_all_vendored: bool) -> Self {
        let files = PolicyFiles::from_dir(dir).unwrap_or_default();
        Self::from_files_with(&files, enable_all_vendored)
    }

    /// Metadata of every policy, enabled or not, sorted by id.
    pub fn list(&self) -> Vec<PolicyMeta> {
        let mut all: Vec<PolicyMeta> = self.sigma.metas().chain(self.detectors.metas()).cloned().collect();
        all.sort_by(|a, b| a.id.cmp(&b.id).then(a.file.cmp(&b.file)));
        // Rules that share a policy id (a base rule and an escalation) list once.
        all.dedup_by(|a, b| a.id == b.id);
        all
    }

    /// The policies with the network context the flow detectors look flow addresses up in (the
    /// Tor exits of `--tor-exits`): ingest stores none for flow records. Without it, flows to
    /// Tor exits are not detected (said once per detection run).
    pub fn with_geo(mut self, geo: Option<std::sync::Arc<crate::geo::GeoDb>>) -> Self {
        self.detectors.set_geo(geo);
        self
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
    use crate::policy_files::PolicyFile;

    #[test]
    fn reads_attack_tags() {
        let tags: Vec<String> = ["attack.initial-access", "attack.persistence", "attack.t1078.004", "cve.2020"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        let mitre = mitre_from_tags(&tags);
        assert_eq!(mitre, vec![Mitre::new("TA0001", "T1078.004"), Mitre::new("TA0003", "T1078.004")]);
    }

    /// The built-in policies with `files` (path, text) of a folder `/mine` laid over them.
    fn with_overrides(files: &[(&str, &str)]) -> PolicySet {
        let mut top = PolicyFiles::default();
        for (path, text) in files {
            top.insert(PolicyFile::new(*path, text.to_string(), Origin::File(Path::new("/mine").join(path))));
        }
        PolicySet::from_files(&PolicyFiles::builtin().overlay(top))
    }

    fn builtin_text(path: &str) -> String {
        PolicyFiles::builtin().get(path).unwrap().text.to_string()
    }

    fn meta<'a>(set: &'a PolicySet, id: &str) -> &'a PolicyMeta {
        set.sigma.metas().chain(set.detectors.metas()).find(|m| m.id == id).unwrap()
    }

    #[test]
    fn the_builtin_policies_load_without_problems() {
        let set = PolicySet::builtin();
        assert!(set.problems.is_empty(), "{:?}", set.problems);
        assert!(set.list().iter().all(|m| m.origin == Origin::Builtin));
        assert_eq!(meta(&set, "aws-iam-user-created").file, Path::new("sigma/skywarden/iam_user_created.yml"));
    }

    #[test]
    fn a_rule_with_a_builtin_rule_id_wins_wherever_it_lives() {
        let mine = builtin_text("sigma/skywarden/iam_user_created.yml").replace("level: medium", "level: low");
        let set = with_overrides(&[("sigma/team/users.yml", &mine)]);
        assert!(set.problems.is_empty(), "{:?}", set.problems);
        let created = meta(&set, "aws-iam-user-created");
        assert_eq!(created.origin, Origin::File("/mine/sigma/team/users.yml".into()));
        assert_eq!(created.severity, Severity::Low);
        assert_eq!(set.list().iter().filter(|m| m.id == "aws-iam-user-created").count(), 1);
        assert_eq!(set.sigma.enabled_count(), PolicySet::builtin().sigma.enabled_count());
    }

    #[test]
    fn a_file_at_a_builtin_path_replaces_it_and_a_new_rule_adds() {
        let settings = builtin_text("detectors.yaml").replace("threshold: 10", "threshold: 3");
        let new_rule = "title: Bucket policy deleted\nid: 0b5f0b3c-6f1e-4c55-9d0c-9a4d2c6b1a01\nname: my-bucket-policy-deleted\n\
                        logsource: {product: aws, service: cloudtrail}\n\
                        detection:\n  selection: {eventSource: s3.amazonaws.com, eventName: DeleteBucketPolicy}\n  condition: selection\n\
                        level: high\n";
        let set = with_overrides(&[("detectors.yaml", &settings), ("sigma/mine/bucket.yml", new_rule)]);
        assert!(set.problems.is_empty(), "{:?}", set.problems);
        assert_eq!(set.detectors.settings.login_failures.threshold, 3);
        assert_eq!(meta(&set, detectors::LOGIN_FAILURES).origin, Origin::File("/mine/detectors.yaml".into()));
        let added = meta(&set, "my-bucket-policy-deleted");
        assert_eq!((added.enabled, added.file.as_path()), (true, Path::new("sigma/mine/bucket.yml")));
        assert_eq!(set.sigma.enabled_count(), PolicySet::builtin().sigma.enabled_count() + 1);
    }

    #[test]
    fn a_broken_override_is_reported_with_its_file() {
        let broken = builtin_text("sigma/skywarden/iam_user_created.yml")
            .replace("condition: selection", "condition: selection and");
        let set = with_overrides(&[("sigma/team/users.yml", &broken), ("skywarden.yaml", "enable: [\n")]);
        let files: Vec<&str> = set.problems.iter().map(|p| p.file.as_str()).collect();
        assert_eq!(files, ["/mine/skywarden.yaml", "/mine/sigma/team/users.yml"], "{:?}", set.problems);
        // The override meant to change the rule: the built-in one does not run in its place.
        assert!(!set.knows("aws-iam-user-created"));
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("10m"), Some(Duration::minutes(10)));
        assert_eq!(parse_duration("30d"), Some(Duration::days(30)));
        assert_eq!(parse_duration("soon"), None);
    }
}
