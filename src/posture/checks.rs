//! Loading posture checks: one Rego file per check under `posture/<section>/` of the policy
//! files (built in, optionally overridden from a folder: see [`crate::policy_files`]),
//! its `# METADATA` comment block read as YAML (id, severity, resource type, remediation,
//! framework controls, ATT&CK tactics). A broken check is reported by file and id and left out;
//! the others load.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::model::Severity;
use crate::policy_files::{Origin, PolicyFile, PolicyFiles, ids_declared_by_overrides};

/// The folder of posture checks in the policy tree.
pub const CHECKS_FOLDER: &str = "posture";

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
    /// Where its file is: the overriding file's path, or `builtin:<path in the policy tree>`.
    #[schema(value_type = String)]
    pub file: PathBuf,
    /// `builtin`, or the overriding file's path.
    #[schema(value_type = String)]
    pub origin: Origin,
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
    /// Parses, compiles and smoke-tests one check file of the section `section`.
    pub fn from_file(source: &PolicyFile, section: &str) -> Result<Check, CheckProblem> {
        let file = source.location();
        let problem = |check: Option<&str>, message: String| CheckProblem {
            file: file.clone(),
            check: check.map(str::to_string),
            message,
        };
        let text = source.text.as_ref();
        let yaml = metadata_yaml(text).ok_or_else(|| problem(None, "no `# METADATA` block at the top".into()))?;
        let block: MetadataBlock = yaml_serde::from_str(&yaml).map_err(|e| problem(None, format!("METADATA: {e}")))?;
        let id = block.custom.id.clone();
        let stem = source.stem();
        if id != stem {
            return Err(problem(Some(&id), format!("the id must be the file name ({stem})")));
        }
        let package = package_of(text).ok_or_else(|| problem(Some(&id), "no package line".into()))?;
        let expected = format!("skywarden.posture.{}", id.replace('-', "_"));
        if package != expected {
            return Err(problem(Some(&id), format!("the package must be {expected}")));
        }
        if block.custom.resource_type.trim().is_empty() || !block.custom.resource_type.contains(':') {
            return Err(problem(Some(&id), "resource_type is a type like ec2:security-group, or aws:account".into()));
        }
        if let Some(message) = too_deeply_nested(text) {
            return Err(problem(Some(&id), message));
        }
        let mut engine = regorus::Engine::new();
        engine.add_policy(file.clone(), text.to_string()).map_err(|e| problem(Some(&id), format!("Rego: {e}")))?;
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
            file: PathBuf::from(&file),
            origin: source.origin.clone(),
        };
        let mut check = Check { meta, rule: format!("data.{package}.deny"), engine };
        check.probe().map_err(|e| problem(Some(&id), format!("evaluating an empty resource: {e}")))?;
        Ok(check)
    }

    /// Evaluates an empty resource: this catches unknown functions and rules that error.
    fn probe(&mut self) -> Result<Vec<String>, String> {
        let probe = serde_json::json!({
            "resource": {"type": self.meta.resource_type, "id": "probe", "region": "global", "account_id": "000000000000",
                         "arn": null, "name": null, "config": {}},
            "account": {"account_id": "000000000000", "resources": {}},
            "now": "2026-01-01T00:00:00Z"
        });
        self.evaluate(&regorus::Value::from(probe))
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

/// The section of a check: the folder it lies in under `posture/` (`general` directly there).
fn section_of(file: &PolicyFile) -> &str {
    file.folder_under(CHECKS_FOLDER).and_then(|folder| folder.rsplit('/').next()).unwrap_or("general")
}

/// Deepest nesting of `[` and `{` a check may use. The Rego parser's time doubles with each
/// level (found by fuzzing: 16 levels took seconds, 28 never finished), so a file nested deeper
/// is refused before it is parsed. Real checks nest a few levels.
const MAX_NESTING: usize = 10;

/// Why `text` is refused for its nesting, if it is: the first line where `[`/`{` (outside
/// strings and comments) nest deeper than [`MAX_NESTING`].
fn too_deeply_nested(text: &str) -> Option<String> {
    let mut depth = 0usize;
    // A raw string (backticks) may span lines; a "…" string and a comment end with theirs.
    let mut raw = false;
    for (number, line) in text.lines().enumerate() {
        let mut chars = line.chars();
        let mut quoted = false;
        while let Some(c) = chars.next() {
            match c {
                '`' if !quoted => raw = !raw,
                _ if raw => {}
                '\\' if quoted => {
                    chars.next();
                }
                '"' => quoted = !quoted,
                _ if quoted => {}
                '#' => break,
                '[' | '{' => {
                    depth += 1;
                    if depth > MAX_NESTING {
                        return Some(format!(
                            "line {}: brackets nested more than {MAX_NESTING} deep (the Rego parser's time grows exponentially with nesting)",
                            number + 1
                        ));
                    }
                }
                ']' | '}' => depth = depth.saturating_sub(1),
                _ => {}
            }
        }
    }
    None
}

impl CheckSet {
    /// Loads every `*.rego` under `posture/` of `files`. A check of an overriding file wins over
    /// the built-in check with its id, also when it is broken (see
    /// [`crate::policy_files`]); two checks of one origin with one id are a problem.
    pub fn from_files(files: &PolicyFiles) -> CheckSet {
        let mut set = CheckSet::default();
        set.problems.extend(files.unreadable_at(CHECKS_FOLDER).map(|p| CheckProblem {
            file: p.file.clone(),
            check: None,
            message: p.problem.clone(),
        }));
        let loaded: Vec<(&PolicyFile, Result<Check, CheckProblem>)> = files
            .under(CHECKS_FOLDER)
            .filter(|file| file.extension() == "rego")
            .map(|file| (file, Check::from_file(file, section_of(file))))
            .collect();
        // The id a file declares, loaded or not (a broken override still replaces the built-in):
        // what its metadata says, else its file name, which a check's id must be.
        let declared_id = |file: &PolicyFile, result: &Result<Check, CheckProblem>| match result {
            Ok(check) => check.meta.id.clone(),
            Err(problem) => problem.check.clone().unwrap_or_else(|| file.stem().to_string()),
        };
        let overridden =
            ids_declared_by_overrides(loaded.iter().map(|(file, result)| (declared_id(file, result), &file.origin)));
        for (file, result) in loaded {
            if file.origin.is_builtin() && overridden.contains(&declared_id(file, &result)) {
                tracing::debug!(file = %file.location(), "built-in posture check overridden by id");
                continue;
            }
            set.add(result);
        }
        set
    }

    /// Keeps a loaded check, or its problem.
    fn add(&mut self, result: Result<Check, CheckProblem>) {
        match result {
            Ok(check) if self.checks.iter().any(|c| c.meta.id == check.meta.id) => self.problems.push(CheckProblem {
                file: check.meta.file.display().to_string(),
                check: Some(check.meta.id.clone()),
                message: "another check has this id".into(),
            }),
            Ok(check) => self.checks.push(check),
            Err(problem) => {
                tracing::debug!(file = %problem.file, check = ?problem.check, problem = %problem.message, "posture check not loaded");
                self.problems.push(problem);
            }
        }
    }

    /// The checks built into the binary.
    pub fn builtin() -> CheckSet {
        Self::from_files(&PolicyFiles::builtin())
    }

    /// Loads every `*.rego` under `dir` (a `posture` folder) alone, without the built-in checks
    /// (tests and benchmarks that point at a folder); a missing folder is no checks.
    pub fn load(dir: &Path) -> CheckSet {
        match PolicyFiles::from_dir(dir) {
            Ok(files) => Self::from_files(&files.mounted_at(CHECKS_FOLDER)),
            Err(_) => CheckSet::default(),
        }
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

    /// A check file of the section `net`, from an overriding folder unless `builtin`.
    fn rego(name: &str, text: String, builtin: bool) -> PolicyFile {
        let path = format!("posture/net/{name}");
        let origin = if builtin { Origin::Builtin } else { Origin::File(PathBuf::from("/mine").join(&path)) };
        PolicyFile::new(path, text, origin)
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

    /// [`GOOD`] as check `id`.
    fn good_as(id: &str) -> String {
        GOOD.replace("test-described", id).replace("test_described", &id.replace('-', "_"))
    }

    #[test]
    fn a_check_nested_too_deeply_for_the_parser_is_refused_before_parsing_naming_the_line() {
        // Found by fuzzing: 28 unclosed `[` made the Rego parser run for ever.
        let nested = |depth: usize| {
            good_as("test-nested").replace(
                "not input.resource.config.description",
                &format!("x := {}1{}\n\tnot input.resource.config.description", "[".repeat(depth), "]".repeat(depth)),
            )
        };
        let load = |text: String| Check::from_file(&rego("test-nested.rego", text, false), "net");
        assert!(load(nested(MAX_NESTING - 2)).is_ok(), "a few levels are fine");
        let refused = load(nested(40)).err().expect("40 levels are refused");
        assert_eq!(refused.check.as_deref(), Some("test-nested"));
        assert!(refused.message.starts_with("line 16: brackets nested more than 10 deep"), "{}", refused.message);
        let unclosed = good_as("test-nested").replace("not input", &format!("co{}nfig", "[".repeat(28)));
        assert!(load(unclosed).err().expect("unclosed brackets too").message.contains("nested more than"));
        // A raw string spans lines: a bracket after its closing backtick counts.
        let raw = good_as("test-nested")
            .replace("not input", &format!("x := `a\n[[{{\n`\n\tco{}nfig\n\tnot input", "[".repeat(28)));
        assert!(load(raw).err().expect("brackets after a raw string count").message.contains("nested more than"));
        let template =
            good_as("test-nested").replace("not input", &format!("x := `\n{}\n`\n\tnot input", "[{".repeat(20)));
        assert!(load(template).is_ok(), "brackets inside a raw string over lines do not count");
        // Brackets in strings and comments do not count.
        let quoted =
            good_as("test-nested").replace("has no description", &"[{".repeat(20)) + &format!("# {}\n", "[".repeat(30));
        assert!(load(quoted).is_ok());
    }

    #[test]
    fn a_broken_check_is_reported_by_name_and_the_others_load() {
        let dir = tempfile::tempdir().unwrap();
        let write = |name: &str, text: &str| {
            std::fs::create_dir_all(dir.path().join("net")).unwrap();
            std::fs::write(dir.path().join("net").join(name), text).unwrap();
        };
        write("test-described.rego", GOOD);
        write("test-syntax.rego", &good_as("test-syntax").replace("deny contains msg if {", "deny contains msg if {{"));
        write("test-wrong-id.rego", GOOD);
        write(
            "test-undefined.rego",
            &good_as("test-undefined")
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

    #[test]
    fn every_builtin_check_loads() {
        let set = CheckSet::builtin();
        assert!(set.problems.is_empty(), "{:?}", set.problems);
        assert_eq!(
            set.checks.len(),
            PolicyFiles::builtin().under(CHECKS_FOLDER).filter(|f| f.extension() == "rego").count()
        );
        assert!(
            set.checks.iter().all(|c| c.meta.origin == Origin::Builtin && c.meta.file.starts_with("builtin:posture/"))
        );
    }

    #[test]
    fn an_override_with_a_builtin_id_wins_and_a_new_one_adds() {
        let mut files = PolicyFiles::default();
        files.insert(rego("test-described.rego", GOOD.to_string(), true));
        files.insert(rego("test-other.rego", good_as("test-other"), true));
        // The same id in another folder of the override: it replaces the built-in check.
        let mine = good_as("test-described").replace("has no description", "needs a description");
        let mut top = PolicyFiles::default();
        top.insert(PolicyFile::new(
            "posture/custom/test-described.rego",
            mine,
            Origin::File("/mine/posture/custom/test-described.rego".into()),
        ));
        top.insert(rego("test-new.rego", good_as("test-new"), false));
        let set = CheckSet::from_files(&files.overlay(top));
        assert!(set.problems.is_empty(), "{:?}", set.problems);
        let loaded: Vec<(&str, &str, String)> = set
            .checks
            .iter()
            .map(|c| (c.meta.id.as_str(), c.meta.section.as_str(), c.meta.origin.to_string()))
            .collect();
        assert_eq!(
            loaded,
            [
                ("test-described", "custom", "/mine/posture/custom/test-described.rego".to_string()),
                ("test-new", "net", "/mine/posture/net/test-new.rego".to_string()),
                ("test-other", "net", "builtin".to_string()),
            ]
        );
        let mut check = set.checks[0].clone();
        let input = serde_json::json!({"resource": {"id": "sg-1", "config": {}}});
        assert_eq!(check.evaluate(&regorus::Value::from(input)).unwrap(), ["sg-1 needs a description"]);
    }

    #[test]
    fn a_broken_override_is_reported_with_its_file_and_the_builtin_does_not_run_instead() {
        let mut files = PolicyFiles::default();
        files.insert(rego("test-described.rego", GOOD.to_string(), true));
        files.insert(rego("test-other.rego", good_as("test-other"), true));
        let mut top = PolicyFiles::default();
        let broken = GOOD.replace("deny contains msg if {", "deny contains msg if {{");
        top.insert(PolicyFile::new("posture/mine/test-described.rego", broken, Origin::File("/mine/x.rego".into())));
        // The same path: this one replaces the built-in file.
        top.insert(rego("test-other.rego", "package nothing\n".into(), false));
        let set = CheckSet::from_files(&files.overlay(top));
        assert!(set.checks.is_empty(), "{:?}", set.metas());
        let problems: Vec<(&str, Option<&str>)> =
            set.problems.iter().map(|p| (p.file.as_str(), p.check.as_deref())).collect();
        assert_eq!(problems, [("/mine/x.rego", Some("test-described")), ("/mine/posture/net/test-other.rego", None)]);
    }

    #[test]
    fn two_checks_of_one_origin_with_one_id_are_a_problem() {
        let mut files = PolicyFiles::default();
        files.insert(rego("test-described.rego", GOOD.to_string(), false));
        files.insert(PolicyFile::new(
            "posture/other/test-described.rego",
            GOOD,
            Origin::File("/mine/posture/other/test-described.rego".into()),
        ));
        let set = CheckSet::from_files(&files);
        assert_eq!(set.checks.len(), 1);
        assert_eq!(set.problems.len(), 1);
        assert_eq!(set.problems[0].message, "another check has this id");
    }
}
