//! Automatic containment, off by default: the rules of `policies/response.yaml` map a policy,
//! a minimum severity and conditions to an action derived from the alert (as
//! [`super::suggest`] derives them), within a per-account allow-list and hourly rate limits,
//! optionally in dry-run mode (recorded, nothing called). [`Containment::step`] judges each new
//! alert once; the idempotency key of each action is derived from the alert and the action, so
//! a step that dies and runs again never acts twice.

use std::collections::BTreeMap;

use serde::Deserialize;
use serde_json::Value;

use crate::model::Severity;
use crate::policy_files::PolicyFiles;

/// The rule file's path in the policy tree.
pub const RULES_FILE: &str = "response.yaml";

/// A bad rule file: its location, the line when known, and what is wrong.
#[derive(Debug, thiserror::Error)]
#[error("{file}{}: {message}", line.map(|l| format!(":{l}")).unwrap_or_default())]
pub struct RulesError {
    pub file: String,
    pub line: Option<usize>,
    pub message: String,
}

/// `policies/response.yaml`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AutoRules {
    /// Off unless true: no alert is judged.
    #[serde(default)]
    pub enabled: bool,
    /// Record what would be done, call nothing (true unless set false).
    #[serde(default = "yes")]
    pub dry_run: bool,
    /// The only accounts automatic containment may act on (none: nowhere).
    #[serde(default)]
    pub accounts: Vec<AccountEntry>,
    #[serde(default)]
    pub rate_limit: RateLimit,
    /// Alerts created longer ago than this when first judged are left alone (a backlog after
    /// an outage or a freshly enabled file is for people).
    #[serde(default = "default_max_age")]
    pub max_alert_age_minutes: u32,
    #[serde(default)]
    pub rules: Vec<Rule>,
    /// Where the rules were read (location, text), for errors found later.
    #[serde(skip)]
    source: Option<(String, String)>,
}

fn yes() -> bool {
    true
}

fn default_max_age() -> u32 {
    60
}

/// An account id on the allow-list (12 digits, checked when the file is read).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AccountEntry(pub String);

impl<'de> Deserialize<'de> for AccountEntry {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = match Value::deserialize(deserializer)? {
            Value::String(text) => text,
            // YAML reads 012345678901 as a number and drops the leading zero; a string is
            // taken as written ("11112222333" is an error, not another account).
            Value::Number(number) if number.as_u64().is_some() => format!("{:0>12}", number.as_u64().unwrap_or(0)),
            other => return Err(serde::de::Error::custom(format!("`{other}` is not an account id"))),
        };
        crate::aws::AccountId::parse(&text).map_err(serde::de::Error::custom)?;
        Ok(Self(text))
    }
}

/// Automatic actions (dry runs included) per hour, per account and in all.
#[derive(Clone, Copy, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RateLimit {
    pub per_account_per_hour: u32,
    pub global_per_hour: u32,
}

impl Default for RateLimit {
    fn default() -> Self {
        Self { per_account_per_hour: 3, global_per_hour: 10 }
    }
}

/// One rule: an alert of `policy`, at least `min_severity`, meeting `when`, gets `action`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rule {
    pub id: String,
    /// The policy id of the alert.
    pub policy: String,
    #[serde(default = "default_severity")]
    pub min_severity: Severity,
    #[serde(default)]
    pub when: Conditions,
    /// The kind of action, taken from the actions the alert's events suggest.
    pub action: ActionKind,
}

fn default_severity() -> Severity {
    Severity::High
}

/// What else must hold.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Conditions {
    /// Members of the alert's details and the values they must have (`foreign_source: true`).
    #[serde(default)]
    pub details: BTreeMap<String, Value>,
    /// The alert's principal has another open alert of one of these policies in the account.
    #[serde(default)]
    pub principal_has_open_alert: Vec<String>,
}

/// An action kind (one of [`super::KINDS`], checked when the file is read).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ActionKind(pub &'static str);

impl<'de> Deserialize<'de> for ActionKind {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        super::KINDS.iter().find(|k| **k == text).map(|k| Self(k)).ok_or_else(|| {
            serde::de::Error::custom(format!("`{text}` is not an action (one of {})", super::KINDS.join(", ")))
        })
    }
}

/// The 1-based line where `needle` first appears, if it does.
fn line_of(text: &str, needle: &str) -> Option<usize> {
    text.find(needle).map(|at| text[..at].matches('\n').count() + 1)
}

/// A value refused inside a mapping is reported at the mapping's first line: the line, from
/// there on, that holds the refused value (the first one the message quotes in backticks).
fn refine_line(text: &str, line: usize, message: &str) -> usize {
    let Some(quoted) = message.split('`').nth(1).filter(|q| !q.is_empty()) else { return line };
    text.lines()
        .enumerate()
        .skip(line.saturating_sub(1))
        .find(|(_, l)| l.contains(quoted))
        .map_or(line, |(index, _)| index + 1)
}

impl AutoRules {
    /// Off: what holds without a rule file.
    pub fn off() -> Self {
        yaml_serde::from_str("enabled: false").unwrap_or_else(|_| unreachable!("the empty rule file parses"))
    }

    /// Reads and checks a rule file's text; `file` names it in errors.
    pub fn parse(file: &str, text: &str) -> Result<Self, RulesError> {
        let rules: AutoRules = yaml_serde::from_str(text).map_err(|error| {
            let message = error.to_string();
            // The position is also given as a line of our own.
            let message = message.rsplit_once(" at line ").map_or(message.as_str(), |(text, _)| text).to_owned();
            let line = error.location().map(|l| refine_line(text, l.line(), &message));
            RulesError { file: file.to_owned(), line, message }
        })?;
        let fail =
            |needle: &str, message: String| RulesError { file: file.to_owned(), line: line_of(text, needle), message };
        let mut seen = std::collections::BTreeSet::new();
        for rule in &rules.rules {
            let at = format!("id: {}", rule.id);
            if rule.id.trim().is_empty() || rule.id.len() > 100 {
                return Err(fail("id:", "a rule id is 1 to 100 characters".into()));
            }
            if !seen.insert(rule.id.clone()) {
                return Err(fail(&at, format!("two rules have the id {}", rule.id)));
            }
            if rule.action.0 == "revoke-principal-ingress" {
                // One alert on a shared role must not revoke every rule the role ever opened.
                return Err(fail(
                    &at,
                    format!(
                        "rule {}: revoke-principal-ingress is never automatic (it revokes every rule the principal \
                         opened, not only the alert's): use revoke-ingress-rule, or run it by hand",
                        rule.id
                    ),
                ));
            }
            if rule.policy.trim().is_empty() {
                return Err(fail(&at, format!("rule {}: `policy` names the alert's policy id", rule.id)));
            }
        }
        if rules.enabled && rules.accounts.is_empty() {
            return Err(fail("enabled:", "enabled with no account in `accounts`: it could act nowhere".into()));
        }
        if !(1..=10_080).contains(&rules.max_alert_age_minutes) {
            return Err(fail("max_alert_age_minutes:", "max_alert_age_minutes is 1 to 10080 (a week)".into()));
        }
        if rules.rate_limit.per_account_per_hour == 0 || rules.rate_limit.global_per_hour == 0 {
            return Err(fail("rate_limit:", "a rate limit of 0 acts never: set enabled: false instead".into()));
        }
        Ok(AutoRules { source: Some((file.to_owned(), text.to_owned())), ..rules })
    }

    /// The rule file of a policy tree (built in, or the `--policies` folder's); off without one.
    pub fn from_files(files: &PolicyFiles) -> Result<Self, RulesError> {
        if let Some(problem) = files.unreadable_at(RULES_FILE).next() {
            return Err(RulesError { file: problem.file.clone(), line: None, message: problem.problem.clone() });
        }
        match files.get(RULES_FILE) {
            Some(file) => Self::parse(&file.location(), &file.text),
            None => Ok(Self::off()),
        }
    }

    /// Refuses a rule whose policy is not one `known` names: it would silently never match.
    pub fn check_policies(&self, known: impl Fn(&str) -> bool) -> Result<(), RulesError> {
        let Some(rule) = self.rules.iter().find(|rule| !known(&rule.policy)) else { return Ok(()) };
        let (file, text) = self.source.clone().unwrap_or_default();
        Err(RulesError {
            line: line_of(&text, &format!("policy: {}", rule.policy)),
            file,
            message: format!(
                "rule {}: no policy `{}` (see `skywarden policies list`; posture checks are `posture:CHECK_ID`)",
                rule.id, rule.policy
            ),
        })
    }

    pub fn allows_account(&self, account_id: &str) -> bool {
        self.accounts.iter().any(|a| a.0 == account_id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_shipped_file_is_off_and_valid() {
        let rules = AutoRules::from_files(&PolicyFiles::builtin()).unwrap();
        assert!(!rules.enabled && rules.dry_run, "automatic containment ships off, in dry-run mode");
        assert!(!rules.rules.is_empty(), "the shipped file holds example rules");
    }

    #[test]
    fn a_bad_rule_file_names_its_file_and_line() {
        let text = "enabled: false\nrules:\n  - id: a\n    policy: p\n    action: terminate-instance\n";
        let error = AutoRules::parse("/etc/skywarden/response.yaml", text).unwrap_err();
        assert_eq!(error.line, Some(5), "{error}");
        assert!(error.to_string().starts_with("/etc/skywarden/response.yaml:5: "), "{error}");
        assert!(error.to_string().contains("terminate-instance"), "{error}");

        let severity = "rules:\n  - id: a\n    policy: p\n    min_severity: urgent\n    action: quarantine\n";
        assert_eq!(AutoRules::parse("f", severity).unwrap_err().line, Some(4));
        let account = "accounts: [\"12345\", \"not-an-account\"]\n";
        assert_eq!(AutoRules::parse("f", account).unwrap_err().line, Some(1));
        let twice =
            "rules:\n  - {id: a, policy: p, action: quarantine}\n  - id: a\n    policy: q\n    action: quarantine\n";
        let error = AutoRules::parse("f", twice).unwrap_err();
        assert!(error.message.contains("two rules"), "{error}");
        let nowhere = "enabled: true\nrules: []\n";
        assert_eq!(AutoRules::parse("f", nowhere).unwrap_err().line, Some(1));
        let wide = "rules:\n  - id: wide\n    policy: p\n    action: revoke-principal-ingress\n";
        let error = AutoRules::parse("f", wide).unwrap_err();
        assert_eq!(error.line, Some(2), "{error}");
        assert!(error.message.contains("rule wide") && error.message.contains("never automatic"), "{error}");
        let unknown = "enabled: false\nrate_limits: {}\n";
        assert_eq!(AutoRules::parse("f", unknown).unwrap_err().line, Some(2));
    }

    #[test]
    fn every_shipped_rule_names_a_shipped_policy() {
        let rules = AutoRules::from_files(&PolicyFiles::builtin()).unwrap();
        let policies = crate::detect::PolicySet::builtin();
        rules.check_policies(|id| policies.knows(id)).unwrap();
        let error = rules.check_policies(|id| id != "aws-cloudtrail-logging-disabled").unwrap_err();
        assert!(error.file == "builtin:response.yaml" && error.line.is_some(), "{error}");
    }

    #[test]
    fn account_ids_keep_their_leading_zeros() {
        let rules = AutoRules::parse("f", "accounts: [012345678901, \"111122223333\"]\n").unwrap();
        assert!(rules.allows_account("012345678901") && rules.allows_account("111122223333"));
        assert!(!rules.allows_account("999999999999"));
        // A string is taken as written: 11 digits are an error, never another account.
        let short = "enabled: false\naccounts:\n  - \"11112222333\"\n";
        let error = AutoRules::parse("f", short).unwrap_err();
        assert_eq!(error.line, Some(3), "{error}");
        assert!(error.to_string().contains("11112222333"), "{error}");
        assert!(AutoRules::parse("f", "accounts: [-5]\n").is_err());
    }
}
