//! What changed between two versions of a resource's configuration.
//!
//! Objects are compared member by member; arrays as sets (a security group's rules have no
//! meaningful order, so a rule moving is no change and a rule added is one `added` entry rather
//! than a shifted tail). The top-level `observed` member is ignored: it holds values that change
//! without anyone changing the resource.

use serde::Serialize;
use serde_json::Value;
use sha2::{Digest, Sha256};

/// The member of a configuration that is stored but not compared.
pub const OBSERVED: &str = "observed";

#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ChangeOp {
    Added,
    Removed,
    Changed,
}

/// One difference, at a path such as `ingress[]` or `metadata_options.http_tokens`.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Change {
    pub path: String,
    pub op: ChangeOp,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub old: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub new: Option<Value>,
}

/// The changes from `old` to `new`, in path order.
pub fn diff(old: &Value, new: &Value) -> Vec<Change> {
    let mut changes = Vec::new();
    match (old, new) {
        (Value::Object(old), Value::Object(new)) => {
            let mut keys: Vec<&String> = old.keys().chain(new.keys()).filter(|k| *k != OBSERVED).collect();
            keys.sort();
            keys.dedup();
            for key in keys {
                compare(key, old.get(key), new.get(key), &mut changes);
            }
        }
        _ => compare("", Some(old), Some(new), &mut changes),
    }
    changes
}

fn compare(path: &str, old: Option<&Value>, new: Option<&Value>, changes: &mut Vec<Change>) {
    match (old, new) {
        (None, None) => {}
        (None, Some(new)) => {
            changes.push(Change { path: path.into(), op: ChangeOp::Added, old: None, new: Some(new.clone()) })
        }
        (Some(old), None) => {
            changes.push(Change { path: path.into(), op: ChangeOp::Removed, old: Some(old.clone()), new: None })
        }
        (Some(Value::Object(old)), Some(Value::Object(new))) => {
            let mut keys: Vec<&String> = old.keys().chain(new.keys()).collect();
            keys.sort();
            keys.dedup();
            for key in keys {
                compare(&join(path, key), old.get(key), new.get(key), changes);
            }
        }
        (Some(Value::Array(old)), Some(Value::Array(new))) => {
            let item_path = format!("{path}[]");
            let mut remaining: Vec<&Value> = new.iter().collect();
            for item in old {
                match remaining.iter().position(|candidate| *candidate == item) {
                    Some(found) => {
                        remaining.swap_remove(found);
                    }
                    None => changes.push(Change {
                        path: item_path.clone(),
                        op: ChangeOp::Removed,
                        old: Some(item.clone()),
                        new: None,
                    }),
                }
            }
            // Report additions in the new array's order.
            for item in new {
                if let Some(found) = remaining.iter().position(|candidate| std::ptr::eq(*candidate, item)) {
                    remaining.swap_remove(found);
                    changes.push(Change {
                        path: item_path.clone(),
                        op: ChangeOp::Added,
                        old: None,
                        new: Some(item.clone()),
                    });
                }
            }
        }
        (Some(old), Some(new)) if old != new => changes.push(Change {
            path: path.into(),
            op: ChangeOp::Changed,
            old: Some(old.clone()),
            new: Some(new.clone()),
        }),
        _ => {}
    }
}

fn join(path: &str, key: &str) -> String {
    if path.is_empty() { key.to_owned() } else { format!("{path}.{key}") }
}

/// A hash of the compared part of a configuration, independent of member order, so an
/// unchanged resource is recognised without a diff.
pub fn config_hash(config: &Value) -> Vec<u8> {
    let mut hasher = Sha256::new();
    match config {
        Value::Object(map) => {
            let mut keys: Vec<&String> = map.keys().filter(|k| *k != OBSERVED).collect();
            keys.sort();
            hasher.update(b"{");
            for key in keys {
                hash_value(&Value::String(key.clone()), &mut hasher);
                hasher.update(b":");
                hash_value(&map[key.as_str()], &mut hasher);
                hasher.update(b",");
            }
            hasher.update(b"}");
        }
        other => hash_value(other, &mut hasher),
    }
    hasher.finalize().to_vec()
}

fn hash_value(value: &Value, hasher: &mut Sha256) {
    match value {
        Value::Object(map) => {
            let mut keys: Vec<&String> = map.keys().collect();
            keys.sort();
            hasher.update(b"{");
            for key in keys {
                hash_value(&Value::String(key.clone()), hasher);
                hasher.update(b":");
                hash_value(&map[key.as_str()], hasher);
                hasher.update(b",");
            }
            hasher.update(b"}");
        }
        Value::Array(items) => {
            hasher.update(b"[");
            for item in items {
                hash_value(item, hasher);
                hasher.update(b",");
            }
            hasher.update(b"]");
        }
        scalar => hasher.update(scalar.to_string().as_bytes()),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn a_rule_added_to_a_security_group_is_one_addition() {
        let old = json!({"group_id": "sg-1", "ingress": [{"from_port": 443, "cidr_ipv4": "10.0.0.0/8"}]});
        let new = json!({"group_id": "sg-1", "ingress": [
            {"from_port": 22, "cidr_ipv4": "0.0.0.0/0"},
            {"from_port": 443, "cidr_ipv4": "10.0.0.0/8"}
        ]});
        let changes = diff(&old, &new);
        assert_eq!(
            changes,
            vec![Change {
                path: "ingress[]".into(),
                op: ChangeOp::Added,
                old: None,
                new: Some(json!({"from_port": 22, "cidr_ipv4": "0.0.0.0/0"}))
            }]
        );
    }

    #[test]
    fn nested_values_report_their_path_and_observed_is_ignored() {
        let old = json!({"metadata_options": {"http_tokens": "required"}, "tags": {"a": "1"}, "observed": {"state": "running"}});
        let new = json!({"metadata_options": {"http_tokens": "optional"}, "observed": {"state": "stopped"}});
        let changes = diff(&old, &new);
        assert_eq!(changes.len(), 2, "{changes:?}");
        assert_eq!(changes[0].path, "metadata_options.http_tokens");
        assert_eq!(changes[0].op, ChangeOp::Changed);
        assert_eq!(changes[1].path, "tags");
        assert_eq!(changes[1].op, ChangeOp::Removed);
    }

    #[test]
    fn reordered_arrays_and_duplicates_are_handled_as_multisets() {
        assert!(diff(&json!({"a": [1, 2, 2]}), &json!({"a": [2, 1, 2]})).is_empty());
        let changes = diff(&json!({"a": [1, 2, 2]}), &json!({"a": [2, 1]}));
        assert_eq!(changes, vec![Change { path: "a[]".into(), op: ChangeOp::Removed, old: Some(json!(2)), new: None }]);
    }

    #[test]
    fn hash_ignores_member_order_and_observed_values() {
        let a = json!({"x": 1, "y": {"b": 2, "a": 1}, "observed": {"t": 1}});
        let b = json!({"y": {"a": 1, "b": 2}, "x": 1, "observed": {"t": 2}});
        assert_eq!(config_hash(&a), config_hash(&b));
        assert_ne!(config_hash(&a), config_hash(&json!({"x": 2, "y": {"a": 1, "b": 2}})));
    }
}
