//! `skywarden policies lint|list|backtest`.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use serde_json::Value;
use skywarden::ingest::json_stream::{self, JsonSink};
use skywarden::ingest::source;

use skywarden::db::{Database, DbOptions};
use skywarden::detect::{self, PolicySet, Scope};
use skywarden::policy_files::PolicyFiles;
use skywarden::posture::checks::CheckSet;

use super::{check_problem, policy_files};
use crate::cli::{PolicyAction, PolicyArgs};

pub(crate) async fn run(db_options: &DbOptions, args: &PolicyArgs, action: PolicyAction) -> anyhow::Result<ExitCode> {
    let files = policy_files(args)?;
    let policies = PolicySet::from_files(&files);
    match action {
        PolicyAction::Lint { events } => {
            let code = lint(&files, &policies);
            warn_object_fields(&policies, &events)?;
            Ok(code)
        }
        PolicyAction::List { json } => list(&policies, json),
        PolicyAction::Backtest { id, since, json } => backtest(db_options, &policies, id, since, json).await,
    }
}

/// Every problem of the detection policies and posture checks; exit 1 if there is any, or if no
/// posture check loads.
fn lint(files: &PolicyFiles, policies: &PolicySet) -> ExitCode {
    for problem in &policies.problems {
        println!("{problem}");
    }
    let listed = policies.list();
    let enabled = listed.iter().filter(|p| p.enabled).count();
    println!("{} policies ({} enabled), {} problems", listed.len(), enabled, policies.problems.len());
    // Posture checks: each broken one named; the others still load.
    let checks = CheckSet::from_files(files);
    for problem in &checks.problems {
        println!("{}", check_problem(problem));
    }
    println!("{} posture checks, {} problems", checks.checks.len(), checks.problems.len());
    let containment_clean = lint_containment(files, policies, &checks);
    let clean =
        policies.problems.is_empty() && checks.problems.is_empty() && !checks.checks.is_empty() && containment_clean;
    if clean { ExitCode::SUCCESS } else { ExitCode::FAILURE }
}

/// The automatic-containment rules (response.yaml) as `serve` checks them: each names a policy
/// or posture check that exists. False, with the problem printed, if they do not load.
fn lint_containment(files: &PolicyFiles, policies: &PolicySet, checks: &CheckSet) -> bool {
    match super::load_containment(files, Some(policies), checks) {
        Ok(rules) => {
            let state = if !rules.enabled {
                "off"
            } else if rules.dry_run {
                "dry run"
            } else {
                "acting"
            };
            println!("{} automatic containment rules ({state}), 0 problems", rules.rules.len());
            true
        }
        Err(problem) => {
            println!("{problem}");
            println!("automatic containment rules: 1 problem");
            false
        }
    }
}

/// The most events `policies lint --events` reads, over all its files.
const MAX_LINT_EVENTS: usize = 100_000;
/// The largest record it reads (as import's default).
const MAX_LINT_RECORD_BYTES: usize = 16 << 20;

/// A warning for each rule field that holds an object in the events of `paths` the rule applies
/// to (see `detect::lint`).
fn warn_object_fields(policies: &PolicySet, paths: &[PathBuf]) -> anyhow::Result<()> {
    if paths.is_empty() {
        return Ok(());
    }
    let mut sink = EventSample::default();
    for path in paths {
        let file = std::fs::File::open(path).with_context(|| format!("{}", path.display()))?;
        let (reader, _) = source::open_reader(file).with_context(|| format!("{}", path.display()))?;
        json_stream::walk_limited(reader, MAX_LINT_RECORD_BYTES, &mut sink)
            .with_context(|| format!("{}: reading events", path.display()))?;
        if sink.events.len() >= MAX_LINT_EVENTS {
            println!("read the first {MAX_LINT_EVENTS} events only (up to {})", path.display());
            break;
        }
    }
    let found = detect::lint::object_fields(policies.sigma.rule_fields(), &sink.events);
    for field in &found {
        println!(
            "warning: {}: {}: field `{}` holds an object in {} events (e.g. {}); the rule matches it by \
             its JSON text: name the member it means",
            field.file, field.policy_id, field.field, field.event_name, field.event_id
        );
    }
    println!("{} events checked, {} fields that hold objects", sink.events.len(), found.len());
    Ok(())
}

/// The events of CloudTrail files, parsed (LookupEvents items unwrapped), up to
/// [`MAX_LINT_EVENTS`].
#[derive(Default)]
struct EventSample {
    events: Vec<Value>,
}

impl JsonSink for EventSample {
    fn event(&mut self, raw: &str) {
        if self.events.len() >= MAX_LINT_EVENTS {
            return;
        }
        let Ok(value) = serde_json::from_str::<Value>(raw) else { return };
        let event = match value.get("CloudTrailEvent").and_then(Value::as_str) {
            Some(inner) => serde_json::from_str(inner).unwrap_or(Value::Null),
            None => value,
        };
        if event.is_object() {
            self.events.push(event);
        }
    }

    fn log_message(&mut self, message: &str, _timestamp_ms: Option<i64>, _owner: Option<&str>) {
        if message.trim_start().starts_with('{') {
            self.event(message);
        }
    }

    fn skipped(&mut self, _what: &'static str) {}

    fn unrecognised(&mut self, _description: String) {}
}

/// One line per policy with where it came from (`builtin` or its file).
fn list(policies: &PolicySet, json: bool) -> anyhow::Result<ExitCode> {
    for policy in policies.list() {
        if json {
            println!("{}", serde_json::to_string(&policy)?);
        } else {
            let mitre: Vec<String> = policy.mitre.iter().map(|m| m.label()).collect();
            println!(
                "{:<45} {:<8} {:<8} {:<9} {}  [{}]  from {}",
                policy.id,
                policy.severity,
                if policy.enabled { "enabled" } else { "disabled" },
                format!("{:?}", policy.kind).to_lowercase(),
                policy.title,
                mitre.join(" "),
                policy.origin
            );
        }
    }
    if !policies.problems.is_empty() {
        eprintln!("{} policy problems; see `skywarden policies lint`", policies.problems.len());
    }
    Ok(ExitCode::SUCCESS)
}

async fn backtest(
    db_options: &DbOptions,
    policies: &PolicySet,
    id: String,
    since: chrono::DateTime<chrono::Utc>,
    json: bool,
) -> anyhow::Result<ExitCode> {
    anyhow::ensure!(policies.knows(&id), "no policy with id {id}; see `skywarden policies list`");
    let db = Database::open(db_options).await?;
    let result = detect::evaluate(&db.pool, policies, Scope::EventsSince(since), Some(&id)).await;
    db.close().await?;
    let (findings, summary) = result?;
    // Fold findings the way the alert store would, to say how many alerts they make.
    let mut alerts: std::collections::BTreeMap<String, (String, usize)> = Default::default();
    for finding in &findings {
        alerts.entry(finding.alert_id()).or_insert_with(|| (finding.title.clone(), 0)).1 += 1;
    }
    if json {
        println!(
            "{}",
            serde_json::json!({"policy_id": id, "since": since, "events_evaluated": summary.events_evaluated,
                "findings": findings.len(), "alerts": alerts.len(),
                "titles": alerts.values().map(|(t, n)| serde_json::json!({"title": t, "findings": n})).collect::<Vec<_>>()})
        );
    } else {
        println!("{id} since {since}: {} findings in {} alerts", findings.len(), alerts.len());
        for (title, count) in alerts.values() {
            println!("  {title} ({count} findings)");
        }
    }
    Ok(ExitCode::SUCCESS)
}
