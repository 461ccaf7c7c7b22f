//! Event rules in Sigma, compiled once with `rsigma` and matched against each event's raw JSON.
//!
//! Skywarden reads one optional block of its own in a rule (top level, ignored by other Sigma
//! tools):
//! ```yaml
//! skywarden:
//!   policy: aws-iam-role-policy-attached  # policy id (default: the rule's name, else sigma-<id>)
//!   subject: principal                    # principal | resource | source_ip: what alerts fold on
//!   window: 24h                           # findings on one subject within this fold into one alert
//! ```

use std::borrow::Cow;
use std::cell::OnceCell;
use std::collections::{BTreeSet, HashMap};
use std::path::PathBuf;

use chrono::Duration;
use rsigma_eval::Engine;
use rsigma_eval::event::{Event, EventValue, JsonEvent};
use rsigma_parser::{Detection, Level, SigmaRule};
use serde::Deserialize;

use super::event::{NETWORK_FIELDS, NetworkValue};
use super::lint::RuleFields;
use super::{PolicyEvent, PolicyKind, PolicyMeta, PolicyProblem, Subject, mitre_from_tags, parse_duration};
use crate::model::{Finding, Severity};
use crate::policy_files::{PolicyFile, PolicyFiles, ids_declared_by_overrides};

/// Folder of the vendored SigmaHQ rules in the policy tree, which are off unless enabled one by
/// one.
const SIGMAHQ_DIR: &str = "sigma/sigmahq/";
const DEFAULT_WINDOW_HOURS: i64 = 24;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct SkywardenBlock {
    policy: Option<String>,
    #[serde(default)]
    subject: Subject,
    window: Option<String>,
}

pub struct SigmaPolicies {
    engine: Engine,
    /// Metadata by Sigma rule id (rsigma reports matches by rule id).
    by_rule_id: HashMap<String, PolicyMeta>,
    /// Every rule's metadata, enabled or not.
    all: Vec<PolicyMeta>,
    /// The fields each enabled rule tests, for `policies lint`.
    fields: Vec<RuleFields>,
}

/// One rule as its file declares it.
struct Declared<'a> {
    file: &'a PolicyFile,
    rule: SigmaRule,
}

impl SigmaPolicies {
    /// Loads every `.yml`/`.yaml` under `folder` of `files`: a file that does not parse, a
    /// rule without id or with a broken `skywarden:` block, a second rule with one id and a
    /// rule that does not compile are problems, and the rest load. An overriding file's rule
    /// replaces the built-in rule with its id (see [`crate::policy_files`]).
    pub fn from_files(
        files: &PolicyFiles,
        folder: &str,
        enable: &BTreeSet<String>,
        disable: &BTreeSet<String>,
        problems: &mut Vec<PolicyProblem>,
    ) -> Self {
        problems.extend(files.unreadable_at(folder).cloned());
        let declared = overrides_win(parse_files(files, folder, problems), files, folder);
        let mut policies =
            Self { engine: Engine::new(), by_rule_id: HashMap::new(), all: Vec::new(), fields: Vec::new() };
        let mut seen_rule_ids = BTreeSet::new();
        for Declared { file, rule } in declared {
            let problem = |problem: String| PolicyProblem { file: file.location(), problem };
            let meta = match rule_meta(&rule, file, enable, disable) {
                Ok(meta) => meta,
                Err(error) => {
                    problems.push(problem(error));
                    continue;
                }
            };
            let rule_id = rule.id.clone().unwrap_or_default();
            if !seen_rule_ids.insert(rule_id.clone()) {
                problems.push(problem(format!("rule id {rule_id} is used by another rule")));
                continue;
            }
            if let Err(error) = policies.add(&rule, rule_id, meta) {
                problems.push(problem(format!("cannot compile: {error}")));
            }
        }
        policies
    }

    /// Compiles `rule` if it is enabled, and lists it.
    fn add(&mut self, rule: &SigmaRule, rule_id: String, meta: PolicyMeta) -> Result<(), String> {
        if meta.enabled {
            self.engine.add_rule(&typed_fields_first(rule)).map_err(|e| e.to_string())?;
            self.fields.push(RuleFields::of(rule, &meta.id, &meta.file.to_string_lossy()));
            self.by_rule_id.insert(rule_id, meta.clone());
        }
        self.all.push(meta);
        Ok(())
    }

    pub fn metas(&self) -> impl Iterator<Item = &PolicyMeta> {
        self.all.iter()
    }

    /// What each enabled rule tests (see [`super::lint`]).
    pub fn rule_fields(&self) -> &[RuleFields] {
        &self.fields
    }

    pub fn enabled_count(&self) -> usize {
        self.by_rule_id.len()
    }

    /// Ids of the rules that match `raw` seen as plain JSON, without the lazy typed view: the
    /// reference the lazy view is checked against.
    pub fn matching_rules_plain(&self, raw: &serde_json::Value) -> Vec<String> {
        let event = ObjectsAsText(JsonEvent::borrow(raw));
        let mut ids: Vec<String> = self.engine.evaluate(&event).into_iter().filter_map(|r| r.header.rule_id).collect();
        ids.sort();
        ids
    }

    /// Ids of the rules that match `event` through the lazy view evaluation uses.
    pub fn matching_rules(&self, event: &PolicyEvent) -> Vec<String> {
        let mut ids: Vec<String> =
            self.engine.evaluate(&LazyEvent::new(event)).into_iter().filter_map(|r| r.header.rule_id).collect();
        ids.sort();
        ids
    }

    /// Every enabled rule that matches `event`, as findings.
    pub fn evaluate(&self, event: &PolicyEvent, only_policy: Option<&str>) -> Vec<Finding> {
        let json = LazyEvent::new(event);
        let mut findings: Vec<Finding> = Vec::new();
        for result in self.engine.evaluate(&json) {
            let Some(meta) = result.header.rule_id.as_deref().and_then(|id| self.by_rule_id.get(id)) else { continue };
            if only_policy.is_some_and(|p| p != meta.id) {
                continue;
            }
            let severity = result.header.level.map(severity_of).unwrap_or(meta.severity);
            // Two rules of one policy (a base rule and an escalation) give one finding, the
            // more severe.
            match findings.iter_mut().find(|f| f.policy_id == meta.id) {
                Some(existing) if existing.severity >= severity => {}
                Some(existing) => {
                    existing.severity = severity;
                    existing.title = describe(&result.header.rule_title, event);
                }
                None => findings.push(meta.finding_for(event, severity, describe(&result.header.rule_title, event))),
            }
        }
        findings
    }
}

/// Every rule of the Sigma files under `folder`, by path; files that do not parse are problems.
fn parse_files<'a>(files: &'a PolicyFiles, folder: &str, problems: &mut Vec<PolicyProblem>) -> Vec<Declared<'a>> {
    let mut declared = Vec::new();
    for file in files.under(folder).filter(|f| is_rule_file(f)) {
        let problem = |problem: String| PolicyProblem { file: file.location(), problem };
        match rsigma_parser::parse_sigma_yaml(&file.text) {
            Ok(collection) => {
                problems.extend(collection.errors.iter().map(|e| problem(e.clone())));
                declared.extend(collection.rules.into_iter().map(|rule| Declared { file, rule }));
            }
            Err(error) => problems.push(problem(error.to_string())),
        }
    }
    declared
}

/// Leaves out the built-in rules whose id a rule file of an overriding folder declares, also
/// when that file is broken (its ids are read without parsing it as Sigma).
fn overrides_win<'a>(declared: Vec<Declared<'a>>, files: &PolicyFiles, folder: &str) -> Vec<Declared<'a>> {
    let overriding = files.under(folder).filter(|f| is_rule_file(f) && !f.origin.is_builtin());
    let overridden =
        ids_declared_by_overrides(overriding.flat_map(|f| declared_ids(&f.text).into_iter().map(|id| (id, &f.origin))));
    declared
        .into_iter()
        .filter(|d| {
            let replaced = d.file.origin.is_builtin() && d.rule.id.as_ref().is_some_and(|id| overridden.contains(id));
            if replaced {
                tracing::debug!(file = %d.file.location(), rule = ?d.rule.id, "built-in rule overridden by id");
            }
            !replaced
        })
        .collect()
}

/// The `id` of each YAML document of a rule file, read leniently: a rule that is not valid
/// Sigma still says which rule it means to be.
fn declared_ids(text: &str) -> Vec<String> {
    #[derive(Deserialize)]
    struct IdOnly {
        id: Option<String>,
    }
    let mut ids = Vec::new();
    for document in yaml_serde::Deserializer::from_str(text) {
        // After a syntax error the stream is in no known state: stop there.
        let Ok(IdOnly { id }) = IdOnly::deserialize(document) else { break };
        ids.extend(id);
    }
    ids
}

fn is_rule_file(file: &PolicyFile) -> bool {
    matches!(file.extension(), "yml" | "yaml")
}

/// Fields [`LazyEvent`] answers without parsing the raw event.
const TYPED_FIELDS: &[&str] =
    &["eventSource", "eventName", "userIdentity.type", "userIdentity.arn", "sourceIPAddress", "userAgent"];

/// The same rule with each AND group testing the typed fields first: AND is commutative, and a
/// group that fails on `eventName` then never asks for (and never parses) anything else.
fn typed_fields_first(rule: &SigmaRule) -> SigmaRule {
    fn reorder(detection: &mut Detection) {
        match detection {
            Detection::AllOf(items) => items.sort_by_key(|item| {
                let name = item.field.name.as_deref().unwrap_or_default();
                TYPED_FIELDS.iter().position(|f| *f == name).unwrap_or(TYPED_FIELDS.len())
            }),
            Detection::AnyOf(branches) => branches.iter_mut().for_each(reorder),
            _ => {}
        }
    }
    let mut rule = rule.clone();
    rule.detection.named.values_mut().for_each(reorder);
    rule
}

/// The event as rules see it: `eventSource` and `eventName` (which nearly every CloudTrail
/// rule tests first) come from the typed columns; anything else parses the raw event once.
struct LazyEvent<'a> {
    event: &'a PolicyEvent,
    json: OnceCell<JsonEvent<'a>>,
    /// The raw event's top-level keys and their unparsed values; each subtree is parsed the
    /// first time a rule asks for a field under it (`None` if the text could not be split).
    parts: OnceCell<Option<Vec<TopLevelPart<'a>>>>,
}

struct TopLevelPart<'a> {
    key: &'a str,
    raw: &'a serde_json::value::RawValue,
    /// `{key: subtree}` as an event, so field lookups keep rsigma's own path semantics.
    parsed: OnceCell<JsonEvent<'static>>,
}

impl<'a> LazyEvent<'a> {
    fn new(event: &'a PolicyEvent) -> Self {
        Self { event, json: OnceCell::new(), parts: OnceCell::new() }
    }

    fn json(&self) -> &JsonEvent<'a> {
        self.json.get_or_init(|| JsonEvent::borrow(self.event.raw.value()))
    }

    /// Looks `path` up by parsing only the top-level subtree it lies under.
    fn field_from_part(&self, path: &str) -> Option<Option<EventValue<'_>>> {
        let parts = self.parts.get_or_init(|| {
            let map: Vec<(&str, &serde_json::value::RawValue)> = serde_json::from_str::<
                std::collections::BTreeMap<&str, &serde_json::value::RawValue>,
            >(self.event.raw.text())
            .ok()?
            .into_iter()
            .collect();
            Some(map.into_iter().map(|(key, raw)| TopLevelPart { key, raw, parsed: OnceCell::new() }).collect())
        });
        let parts = parts.as_ref()?;
        let top = path.split('.').next().unwrap_or(path);
        let Some(part) = parts.iter().find(|p| p.key == top) else { return Some(None) };
        let event = part.parsed.get_or_init(|| {
            let value: serde_json::Value = serde_json::from_str(part.raw.get()).unwrap_or(serde_json::Value::Null);
            JsonEvent::owned(serde_json::Value::Object([(part.key.to_string(), value)].into_iter().collect()))
        });
        Some(event.get_field(path))
    }
}

impl Event for LazyEvent<'_> {
    fn get_field(&self, path: &str) -> Option<EventValue<'_>> {
        match path {
            "eventSource" => self.event.event_source.as_deref().map(|v| EventValue::Str(Cow::Borrowed(v))),
            "eventName" => self.event.event_name.as_deref().map(|v| EventValue::Str(Cow::Borrowed(v))),
            "userIdentity.arn" => self.event.principal_arn.as_deref().map(|v| EventValue::Str(Cow::Borrowed(v))),
            "userIdentity.type" => self.event.principal_type.as_deref().map(|v| EventValue::Str(Cow::Borrowed(v))),
            // Absent and null are alike to `errorCode: null`, the only way rules test it.
            "errorCode" => self.event.error_code.as_deref().map(|v| EventValue::Str(Cow::Borrowed(v))),
            "userAgent" => self.event.user_agent.as_deref().map(|v| EventValue::Str(Cow::Borrowed(v))),
            "sourceIPAddress" => self.event.source_ip_text.as_deref().map(|v| EventValue::Str(Cow::Borrowed(v))),
            // The source's network context, from the columns ingest filled (not in the record).
            name if NETWORK_FIELDS.contains(&name) => self.event.network_field(name).map(|value| match value {
                NetworkValue::Number(n) => EventValue::Int(n),
                NetworkValue::Text(text) => EventValue::Str(Cow::Borrowed(text)),
                NetworkValue::Flag(flag) => EventValue::Bool(flag),
            }),
            // Keys with escapes cannot be borrowed from the text: then parse it all.
            _ => match self.field_from_part(path) {
                Some(found) => found.map(objects_as_text),
                None => self.json().get_field(path).map(objects_as_text),
            },
        }
    }

    fn any_string_value(&self, pred: &dyn Fn(&str) -> bool) -> bool {
        self.json().any_string_value(pred)
    }

    fn all_string_values(&self) -> Vec<Cow<'_, str>> {
        self.json().all_string_values()
    }

    fn visit_string_values(&self, visit: &mut dyn FnMut(&str)) {
        self.json().visit_string_values(visit)
    }

    fn to_json(&self) -> serde_json::Value {
        self.json().to_json()
    }

    // `top_level_keys` keeps its default (shape unknown): the candidate index then probes the
    // indexed fields, which are the typed ones, instead of forcing a parse of every event.

    fn field_keys(&self) -> Vec<Cow<'_, str>> {
        self.json().field_keys()
    }
}

/// A field whose value is an object is matched by its compact JSON text, as the reference Sigma
/// backends match it (`requestParameters|contains: 'Suspended'` finds a suspended state anywhere
/// under it); rsigma alone matches no string against an object. Objects inside a list likewise.
fn objects_as_text(value: EventValue<'_>) -> EventValue<'_> {
    let as_text = |value: EventValue<'_>| EventValue::Str(Cow::Owned(value.to_json().to_string()));
    match value {
        EventValue::Map(_) => as_text(value),
        EventValue::Array(items) => EventValue::Array(
            items
                .into_iter()
                .map(|item| if matches!(item, EventValue::Map(_)) { as_text(item) } else { item })
                .collect(),
        ),
        other => other,
    }
}

/// Any event, with objects matched as text (see [`objects_as_text`]).
struct ObjectsAsText<E>(E);

impl<E: Event> Event for ObjectsAsText<E> {
    fn get_field(&self, path: &str) -> Option<EventValue<'_>> {
        self.0.get_field(path).map(objects_as_text)
    }

    fn any_string_value(&self, pred: &dyn Fn(&str) -> bool) -> bool {
        self.0.any_string_value(pred)
    }

    fn all_string_values(&self) -> Vec<Cow<'_, str>> {
        self.0.all_string_values()
    }

    fn visit_string_values(&self, visit: &mut dyn FnMut(&str)) {
        self.0.visit_string_values(visit)
    }

    fn to_json(&self) -> serde_json::Value {
        self.0.to_json()
    }

    fn field_keys(&self) -> Vec<Cow<'_, str>> {
        self.0.field_keys()
    }

    fn top_level_keys(&self) -> Option<Vec<Cow<'_, str>>> {
        self.0.top_level_keys()
    }
}

/// The rule's title with who, from where and on what, so an alert reads on its own.
fn describe(title: &str, event: &PolicyEvent) -> String {
    let mut text = title.to_string();
    if !event.resource_ids.is_empty() {
        let shown: Vec<&str> = event.resource_ids.iter().take(2).map(String::as_str).collect();
        text.push_str(&format!(": {}", shown.join(", ")));
    }
    if let Some(who) = event.user_name.as_deref().or(event.principal()) {
        text.push_str(&format!(" by {who}"));
    }
    if let Some(source) = event.source_ip_text.as_deref() {
        text.push_str(&format!(" from {source}"));
        if let Some(country) = event.geo_country.as_deref() {
            text.push_str(&format!(" ({country})"));
        }
    }
    text
}

fn severity_of(level: Level) -> Severity {
    match level {
        Level::Informational => Severity::Info,
        Level::Low => Severity::Low,
        Level::Medium => Severity::Medium,
        Level::High => Severity::High,
        Level::Critical => Severity::Critical,
    }
}

fn rule_meta(
    rule: &SigmaRule,
    file: &PolicyFile,
    enable: &BTreeSet<String>,
    disable: &BTreeSet<String>,
) -> Result<PolicyMeta, String> {
    let block: SkywardenBlock = match rule.custom_attributes.get("skywarden") {
        Some(value) => yaml_serde::from_value(value.clone()).map_err(|e| format!("skywarden block: {e}"))?,
        None => SkywardenBlock::default(),
    };
    let rule_id = rule.id.clone().ok_or("a rule needs an id")?;
    let id = block.policy.clone().or_else(|| rule.name.clone()).unwrap_or_else(|| format!("sigma-{rule_id}"));
    let window = match &block.window {
        Some(text) => parse_duration(text).ok_or_else(|| format!("skywarden.window {text:?}: use 30m, 1h or 1d"))?,
        None => Duration::hours(DEFAULT_WINDOW_HOURS),
    };
    let stem = file.stem().to_string();
    let vendored = file.path.starts_with(SIGMAHQ_DIR);
    let named = |set: &BTreeSet<String>| {
        set.contains(&id)
            || set.contains(&rule_id)
            || set.contains(&stem)
            || rule.name.as_ref().is_some_and(|n| set.contains(n))
    };
    let enabled = !named(disable) && (!vendored || enable.contains("*") || named(enable));
    Ok(PolicyMeta {
        id,
        title: rule.title.clone(),
        severity: rule.level.map(severity_of).unwrap_or(Severity::Medium),
        kind: PolicyKind::Sigma,
        file: PathBuf::from(&file.path),
        origin: file.origin.clone(),
        enabled,
        mitre: mitre_from_tags(&rule.tags),
        description: rule.description.clone(),
        subject: block.subject,
        dedup_window: window,
    })
}
