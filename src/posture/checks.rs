//! Loading posture checks: one Rego file per check under `policies/posture/<section>/`, its
//! `# METADATA` comment block read as YAML (id, severity, resource type, remediation, framework
//! controls, ATT&CK tactics). A broken check is reported by file and id and left out; the others
//! load.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::model::Severity;

/// What a check declares about itself.
#[derive(Clone, Debug, Serialize, utoipa::ToSchema)]
pub struct CheckMeta {
    pub id: String,
    pub title: String,
    pub description: String,
    pub severity: Severity,
    /// The resource type it judges (`ec2:security-group`), or `aws:account`.
    pub resource_type: String,
    pub remediation: String,
    /// Framework → controls (`cis-aws-3.0` → `["5.2"]`).
    pub frameworks: BTreeMap<String, Vec<String>>,
    /// ATT&CK tactic ids.
    pub mitre: Vec<String>,
    /// For account-level checks: the resource types the verdict rests on, whose latest change
    /// is taken as the cause of a new failure.
    pub depends_on: Vec<String>,
    /// The folder it lives in: `iam`, `logging`, `networking`.
    pub section: String,
    #[schema(value_type = String)]
    pub file: PathBuf,
}

/// A loaded check, ready to evaluate.
#[derive(Clone)]
pub struct Check {
    pub meta: CheckMeta,
    /// `data.<package>.deny`
    rule: String,
    engine: regorus::Engine,
}

/// A check file that could not be loaded, or failed on evaluation.
#[derive(Clone, Debug, Serialize)]
pub struct CheckProblem {
    pub file: String,
    pub check: Option<String>,
    pub message: String,
}

#[derive(Deserialize)]
struct MetadataBlock {
    title: String,
    #[serde(default)]
    description: String,
    custom: CustomMetadata,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CustomMetadata {
    id: String,
    severity: Severity,
    resource_type: String,
    remediation: String,
    frameworks: BTreeMap<String, Vec<String>>,
    #[serde(default)]
    mitre: Vec<String>,
    #[serde(default)]
    depends_on: Vec<String>,
}

/// The `# METADATA` block at the top of a Rego file, with the comment markers removed.
fn metadata_yaml(text: &str) -> Option<String> {
    let mut lines = text.lines().skip_while(|l| l.trim().is_empty());
    if lines.next()?.trim() != "# METADATA" {
        return None;
    }
    let mut yaml = String::new();
    for line in lines {
        let Some(rest) = line.strip_prefix('#') else { break };
        yaml.push_str(rest.strip_prefix(' ').unwrap_or(rest));
        yaml.push('\n');
    }
    Some(yaml)
}

fn package_of(text: &str) -> Option<String> {
    text.lines().find_map(|l| l.trim().strip_prefix("package ")).map(|p| p.trim().to_string())
}

impl Check {
    /// Parses, compiles and smoke-tests one check file.
    pub fn load(path: &Path, section: &str) -> Result<Check, CheckProblem> {
        let file = path.display().to_string();
        let problem = |check: Option<&str>, message: String| CheckProblem {
            file: file.clone(),
            check: check.map(str::to_string),
            message,
        };
        let text = std::fs::read_to_string(path).map_err(|e| problem(None, format!("cannot read: {e}")))?;
        let yaml = metadata_yaml(&text).ok_or_else(|| problem(None, "no `# METADATA` block at the top".into()))?;
        let block: MetadataBlock = yaml_serde::from_str(&yaml).map_err(|e| problem(None, format!("METADATA: {e}")))?;
        let id = block.custom.id.clone();
        let stem = path.file_stem().and_then(|s| s.to_str()).unwrap_or_default();
        if id != stem {
            return Err(problem(Some(&id), format!("the id must be the file name ({stem})")));
        }
        let package = package_of(&text).ok_or_else(|| problem(Some(&id), "no package line".into()))?;
        let expected = format!("skywarden.posture.{}", id.replace('-', "_"));
        if package != expected {
            return Err(problem(Some(&id), format!("the package must be {expected}")));
        }
        if block.custom.resource_type.trim().is_empty() || !block.custom.resource_type.contains(':') {
            return Err(problem(Some(&id), "resource_type is a type like ec2:security-group, or aws:account".into()));
        }
        let mut engine = regorus::Engine::new();
        engine.add_policy(file.clone(), text).map_err(|e| problem(Some(&id), format!("Rego: {e}")))?;
        // Builtin errors stay errors (regorus's default): a date a check cannot parse makes the
        // resource "not evaluated" (its finding kept as it was, the problem reported) rather
        // than an undefined rule that would read as a pass and resolve the finding.
        engine.set_strict_builtin_errors(true);
        let meta = CheckMeta {
            id: id.clone(),
            title: block.title,
            description: block.description.trim().to_string(),
            severity: block.custom.severity,
            resource_type: block.custom.resource_type,
            remediation: block.custom.remediation.trim().to_string(),
            frameworks: block.custom.frameworks,
            mitre: block.custom.mitre,
            depends_on: block.custom.depends_on,
            section: section.to_string(),
            file: path.to_path_buf(),
        };
        let mut check = Check { meta, rule: format!("data.{package}.deny"), engine };
        // An empty resource must evaluate: this catches unknown functions and rules that error.
        let probe = serde_json::json!({
            "resource": {"type": check.meta.resource_type, "id": "probe", "region": "global", "account_id": "000000000000",
                         "arn": null, "name": null, "config": {}},
            "account": {"account_id": "000000000000", "resources": {}},
            "now": "2026-01-01T00:00:00Z"
        });
        check
            .evaluate(&regorus::Value::from(probe))
            .map_err(|e| problem(Some(&id), format!("evaluating an empty resource: {e}")))?;
        Ok(check)
    }

    /// What is wrong with `input.resource` (empty: it passes), sorted.
    pub fn evaluate(&mut self, input: &regorus::Value) -> Result<Vec<String>, String> {
        self.engine.set_input(input.clone());
        let result = self.engine.eval_rule(self.rule.clone()).map_err(|e| e.to_string())?;
        let set = match &result {
            regorus::Value::Undefined => return Ok(Vec::new()),
            value => value.as_set().map_err(|_| format!("{} is not a set of messages", self.rule))?,
        };
        let mut messages: Vec<String> = set
            .iter()
            .map(|item| {
                item.as_string().map(|s| s.to_string()).map_err(|_| format!("{} holds a non-string", self.rule))
            })
            .collect::<Result<_, _>>()?;
        messages.sort();
        Ok(messages)
    }
}

/// The loaded checks and the problems met on the way.
#[derive(Clone, Default)]
pub struct CheckSet {
    pub checks: Vec<Check>,
    pub problems: Vec<CheckProblem>,
}

impl CheckSet {
    /// Loads every `*.rego` under `dir` (`policies/posture`); a missing folder is no checks.
    pub fn load(dir: &Path) -> CheckSet {
        let mut set = CheckSet::default();
        if !dir.exists() {
            return set;
        }
        let mut files: Vec<PathBuf> = walkdir::WalkDir::new(dir)
            .into_iter()
            .filter_map(Result::ok)
            .filter(|e| e.file_type().is_file() && e.path().extension().is_some_and(|x| x == "rego"))
            .map(|e| e.into_path())
            .collect();
        files.sort();
        for file in files {
            let section = file
                .parent()
                .filter(|parent| *parent != dir)
                .and_then(|p| p.file_name())
                .and_then(|n| n.to_str())
                .unwrap_or("general")
                .to_string();
            match Check::load(&file, &section) {
                Ok(check) if set.checks.iter().any(|c| c.meta.id == check.meta.id) => set.problems.push(CheckProblem {
                    file: file.display().to_string(),
                    check: Some(check.meta.id.clone()),
                    message: "another check has this id".into(),
                }),
                Ok(check) => set.checks.push(check),
                Err(problem) => {
                    tracing::warn!(file = %problem.file, check = ?problem.check, problem = %problem.message, "posture check not loaded");
                    set.problems.push(problem);
                }
            }
        }
        set
    }

    pub fn metas(&self) -> Vec<CheckMeta> {
        self.checks.iter().map(|c| c.meta.clone()).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metadata_is_the_leading_comment_block() {
        let text = "# METADATA\n# title: T\n# custom:\n#   id: x\npackage skywarden.posture.x\n# not metadata\n";
        assert_eq!(metadata_yaml(text).unwrap(), "title: T\ncustom:\n  id: x\n");
        assert!(metadata_yaml("package x\n").is_none());
        assert_eq!(package_of(text).as_deref(), Some("skywarden.posture.x"));
    }

    fn write(dir: &Path, name: &str, text: &str) {
        std::fs::create_dir_all(dir.join("net")).unwrap();
        std::fs::write(dir.join("net").join(name), text).unwrap();
    }

    const GOOD: &str = r#"# METADATA
# title: Groups have a description
# custom:
#   id: test-described
#   severity: low
#   resource_type: "ec2:security-group"
#   remediation: Describe it.
#   frameworks:
#     cis-aws-3.0: []
#   mitre: []
package skywarden.posture.test_described

import rego.v1

deny contains msg if {
	not input.resource.config.description
	msg := sprintf("%s has no description", [input.resource.id])
}
"#;

    #[test]
    fn a_broken_check_is_reported_by_name_and_the_others_load() {
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), "test-described.rego", GOOD);
        write(
            dir.path(),
            "test-syntax.rego",
            &GOOD
                .replace("test-described", "test-syntax")
                .replace("test_described", "test_syntax")
                .replace("deny contains msg if {", "deny contains msg if {{"),
        );
        write(dir.path(), "test-wrong-id.rego", GOOD);
        write(
            dir.path(),
            "test-undefined.rego",
            &GOOD
                .replace("test-described", "test-undefined")
                .replace("test_described", "test_undefined")
                .replace("not input.resource.config.description", "no_such_function(input.resource)"),
        );
        let set = CheckSet::load(dir.path());
        assert_eq!(set.checks.iter().map(|c| c.meta.id.as_str()).collect::<Vec<_>>(), ["test-described"]);
        assert_eq!(set.checks[0].meta.section, "net");
        let named: Vec<(Option<&str>, &str)> =
            set.problems.iter().map(|p| (p.check.as_deref(), p.message.as_str())).collect();
        assert_eq!(set.problems.len(), 3, "{named:?}");
        assert!(named.iter().any(|(id, m)| *id == Some("test-syntax") && m.starts_with("Rego")), "{named:?}");
        assert!(named.iter().any(|(id, m)| *id == Some("test-described") && m.contains("file name")), "{named:?}");
        assert!(named.iter().any(|(id, _)| *id == Some("test-undefined")), "{named:?}");

        let mut check = set.checks[0].clone();
        let input = serde_json::json!({"resource": {"id": "sg-1", "config": {}}});
        assert_eq!(check.evaluate(&regorus::Value::from(input)).unwrap(), ["sg-1 has no description"]);
        let input = serde_json::json!({"resource": {"id": "sg-1", "config": {"description": "web"}}});
        assert!(check.evaluate(&regorus::Value::from(input)).unwrap().is_empty());
    }
}
