//! Response: contain an intrusion from its alert, with every action on the record.
//!
//! An [`Action`] (revoke a security-group rule, deactivate a key, quarantine a principal, …)
//! runs only through an account's separate responder role, never on a resource tagged
//! `skywarden:protected`, under a lease on its resource, once per idempotency key. Its dry run
//! ([`run::plan`]) reads the live state and names the exact calls; [`run::apply`] records that
//! state before the first write and what it changed after (also when it fails half-way);
//! [`run::undo`] restores exactly the recorded state, only for actions Skywarden applied.
//! [`containment`] runs the rules of `policies/response.yaml` ([`auto`]) over new alerts.
//!
//! Sits on top beside `http` and the CLI: imports `accounts`, `alerts`, `auth` (the audit log),
//! `aws`, `db`, `model`, `notify` (the outbox, to tell an alert's routes of automatic actions)
//! and `policy_files`. Nothing below imports it.

pub mod action;
pub mod auto;
pub mod containment;
mod ec2;
mod iam;
#[cfg(test)]
mod permissions;
mod principal_ingress;
pub mod record;
pub mod run;
pub mod suggest;
mod trail;

use serde::Serialize;
use serde_json::Value;

pub use action::{Action, KINDS, Principal, Undo};
pub use record::ResponseRecord;
pub use run::{ApplyRequest, Plan, ResponseContext};

use crate::accounts::AccountError;
use crate::aws::AwsError;

/// The tag that puts a resource out of Skywarden's reach, whatever its value.
pub const PROTECTED_TAG: &str = "skywarden:protected";

#[derive(Debug, thiserror::Error)]
pub enum RespondError {
    #[error("{field}: {reason}")]
    Invalid { field: &'static str, reason: String },
    #[error("response is not enabled for account {account_id}: {command}")]
    NotEnabled { account_id: String, command: String },
    #[error("{resource} is tagged skywarden:protected; Skywarden never acts on it")]
    Protected { resource: String },
    #[error("{0}")]
    NotFound(String),
    #[error("another action ({action_id}) holds the lease on {resource}; try again when it has finished")]
    Busy { resource: String, action_id: String },
    #[error("{kind} cannot be undone: {why}")]
    NoUndo { kind: &'static str, why: &'static str },
    #[error("action {id} is {status}; only an applied action can be undone")]
    NotUndoable { id: String, status: String },
    #[error("a second person must approve this action: the one who asked for it cannot")]
    SecondPerson,
    #[error(
        "{what} needs a person: an enabled dashboard user with the analyst or admin role, which {actor} is not \
         (an API token or a CLI login names no person; in the CLI name yourself with --as USER)"
    )]
    NotAPerson { what: &'static str, actor: String },
    #[error(
        "approvals come only from a dashboard session of another analyst or admin: approve action {id} in the \
         dashboard, or with POST /api/v1/responses/{id}/approve from a user session ({actor} cannot approve)"
    )]
    ApproveInDashboard { id: String, actor: String },
    #[error(
        "undoing {kind} has to grant access, which the responder role of account {account_id} is not deployed to \
         do: redeploy deploy/skywarden-responder-role.yaml with AllowGrantingUndo=true and run `skywarden accounts \
         responder set {account_id} --role-arn ... --granting-undo`, or restore it yourself in AWS"
    )]
    UndoGrants { kind: &'static str, account_id: String },
    #[error("the idempotency key was used for another request ({0})")]
    KeyReused(String),
    #[error("{0}")]
    Conflict(String),
    #[error("cannot assume the responder role: {0}")]
    AssumeRole(#[source] AwsError),
    #[error(transparent)]
    Aws(#[from] AwsError),
    #[error(transparent)]
    Account(#[from] AccountError),
    #[error(transparent)]
    Database(#[from] sqlx::Error),
}

/// One AWS call an action makes, as its dry run shows it.
#[derive(Clone, Debug, PartialEq, Serialize, utoipa::ToSchema)]
pub struct ApiCall {
    /// `service:Operation`, the IAM action name.
    pub operation: &'static str,
    pub params: Value,
}

impl ApiCall {
    fn new(operation: &'static str, params: Value) -> Self {
        Self { operation, params }
    }
}

/// What a dry run read: the current state, whether the resource is protected, and whether
/// the action would change anything.
#[derive(Clone, Debug)]
struct Observed {
    state: Value,
    protected: bool,
    changes: bool,
}

/// The calls an action made and their answers, kept also when one fails.
#[derive(Debug, Default)]
struct CallLog(Vec<Value>);

impl CallLog {
    fn ok(&mut self, call: &ApiCall, answer: Value) {
        self.0.push(serde_json::json!({"operation": call.operation, "params": call.params, "answer": answer}));
    }

    fn failed(&mut self, call: &ApiCall, error: &AwsError) {
        let answer = serde_json::json!({"error": error.code, "message": error.message});
        self.0.push(serde_json::json!({"operation": call.operation, "params": call.params, "answer": answer}));
    }

    fn into_value(self) -> Value {
        Value::Array(self.0)
    }
}

/// Whether IAM-style or EC2-style tags name the protected tag.
fn is_protected<'a>(keys: impl IntoIterator<Item = &'a str>) -> bool {
    keys.into_iter().any(|key| key == PROTECTED_TAG)
}

/// Masks what must never reach the audit log: any member whose name says it holds a secret.
pub fn mask_secrets(value: &Value) -> Value {
    const SECRET_WORDS: &[&str] = &["password", "secret", "token", "externalid", "external_id", "credential"];
    match value {
        Value::Object(map) => Value::Object(
            map.iter()
                .map(|(key, value)| {
                    let lower = key.to_ascii_lowercase();
                    if SECRET_WORDS.iter().any(|word| lower.contains(word)) && !value.is_null() {
                        (key.clone(), Value::String("***".into()))
                    } else {
                        (key.clone(), mask_secrets(value))
                    }
                })
                .collect(),
        ),
        Value::Array(items) => Value::Array(items.iter().map(mask_secrets).collect()),
        other => other.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_are_masked_at_any_depth() {
        let value = serde_json::json!({"calls": [{"params": {"Password": "hunter2", "UserName": "bob"}}],
                                        "SessionToken": "abc", "external_id": "skywarden-x", "none": null});
        let masked = mask_secrets(&value);
        assert_eq!(masked["calls"][0]["params"]["Password"], "***");
        assert_eq!(masked["calls"][0]["params"]["UserName"], "bob");
        assert_eq!(masked["SessionToken"], "***");
        assert_eq!(masked["external_id"], "***");
        assert!(!masked.to_string().contains("hunter2"));
    }
}
