//! Rules checked against real events: a Sigma rule whose field holds an object in the events it
//! is meant for matches that object by its JSON text (see `sigma::objects_as_text`), which is
//! rarely what its author had in mind (`requestParameters|contains: 'Suspended'` also matches a
//! bucket named "Suspended"). `policies lint` reports such fields so the author can name the leaf.

use std::collections::{BTreeMap, BTreeSet};

use rsigma_parser::{Detection, SigmaRule, SigmaValue};
use serde::Serialize;
use serde_json::Value;

/// What a rule tests, kept from its file for linting.
#[derive(Clone, Debug)]
pub struct RuleFields {
    pub policy_id: String,
    pub file: String,
    /// Every field a detection item names.
    pub fields: BTreeSet<String>,
    /// The `eventName` values (lower case) the rule is limited to (empty: any event). Taken from
    /// every selection, filters included: a lint may look at a few events too many.
    pub event_names: BTreeSet<String>,
}

impl RuleFields {
    pub fn of(rule: &SigmaRule, policy_id: &str, file: &str) -> Self {
        let mut fields = BTreeSet::new();
        let mut event_names = BTreeSet::new();
        for detection in rule.detection.named.values() {
            collect(detection, &mut fields, &mut event_names);
        }
        Self { policy_id: policy_id.to_owned(), file: file.to_owned(), fields, event_names }
    }

    fn applies_to(&self, event: &Value) -> bool {
        // Sigma matches without regard to case.
        self.event_names.is_empty()
            || event["eventName"].as_str().is_some_and(|name| self.event_names.contains(&name.to_lowercase()))
    }
}

fn collect(detection: &Detection, fields: &mut BTreeSet<String>, event_names: &mut BTreeSet<String>) {
    match detection {
        Detection::AllOf(items) => {
            for item in items {
                let Some(name) = item.field.name.as_deref() else { continue };
                fields.insert(name.to_owned());
                if name == "eventName" && item.field.modifiers.is_empty() {
                    event_names.extend(item.values.iter().filter_map(|value| match value {
                        SigmaValue::String(text) => text.as_plain().map(|name| name.to_lowercase()),
                        _ => None,
                    }));
                }
            }
        }
        Detection::AnyOf(branches) => branches.iter().for_each(|branch| collect(branch, fields, event_names)),
        _ => {}
    }
}

/// A rule field that holds an object in at least one real event the rule applies to.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ObjectField {
    pub policy_id: String,
    pub file: String,
    pub field: String,
    /// The first event seen with an object there.
    pub event_name: String,
    pub event_id: String,
}

/// Every (rule, field) pair whose value is an object in one of `events` (raw CloudTrail records).
pub fn object_fields<'a>(rules: &[RuleFields], events: impl IntoIterator<Item = &'a Value>) -> Vec<ObjectField> {
    let mut found: BTreeMap<(String, String), ObjectField> = BTreeMap::new();
    for event in events {
        for rule in rules.iter().filter(|rule| rule.applies_to(event)) {
            // The network fields come from columns, never from the record.
            for field in rule.fields.iter().filter(|f| !super::event::NETWORK_FIELDS.contains(&f.as_str())) {
                let key = (rule.policy_id.clone(), field.clone());
                if found.contains_key(&key) || !at_path(event, field).is_some_and(Value::is_object) {
                    continue;
                }
                let text = |name: &str| event[name].as_str().unwrap_or("").to_owned();
                found.insert(
                    key,
                    ObjectField {
                        policy_id: rule.policy_id.clone(),
                        file: rule.file.clone(),
                        field: field.clone(),
                        event_name: text("eventName"),
                        event_id: text("eventID"),
                    },
                );
            }
        }
    }
    found.into_values().collect()
}

/// The value at a dotted path, as rules address nested members.
fn at_path<'a>(event: &'a Value, path: &str) -> Option<&'a Value> {
    path.split('.').try_fold(event, |value, key| value.get(key))
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn rule(yaml: &str) -> RuleFields {
        let rule = rsigma_parser::parse_sigma_yaml(yaml).unwrap().rules.remove(0);
        RuleFields::of(&rule, "test-policy", "sigma/test.yml")
    }

    const VERSIONING: &str = "title: t\nid: 00000000-0000-4000-8000-000000000001\nlogsource: {product: aws, service: cloudtrail}\n\
        detection:\n  selection:\n    eventName: PutBucketVersioning\n    requestParameters|contains: Suspended\n    \
        requestParameters.bucketName|startswith: logs\n  condition: selection\n";

    #[test]
    fn a_field_that_holds_an_object_in_an_event_the_rule_applies_to_is_reported_once() {
        let rules = [rule(VERSIONING)];
        let put = |id: &str| {
            json!({"eventName": "PutBucketVersioning", "eventID": id,
                   "requestParameters": {"bucketName": "logs", "VersioningConfiguration": {"Status": "Suspended"}}})
        };
        let events = [put("e1"), put("e2")];
        let found = object_fields(&rules, &events);
        assert_eq!(found.len(), 1, "{found:?}");
        assert_eq!((found[0].field.as_str(), found[0].event_id.as_str()), ("requestParameters", "e1"));
    }

    #[test]
    fn other_events_and_leaf_fields_are_not_reported() {
        let rules = [rule(VERSIONING)];
        let other = json!({"eventName": "GetBucketAcl", "eventID": "e3", "requestParameters": {"bucketName": "logs"}});
        let flat = json!({"eventName": "PutBucketVersioning", "eventID": "e4", "requestParameters": "Suspended"});
        assert!(object_fields(&rules, &[other, flat]).is_empty());
    }
}
