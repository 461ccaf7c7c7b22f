//! Evaluating checks over one account: every current resource of a check's type (or the account
//! itself for `aws:account` checks) is presented as `input.resource`, with the account's other
//! resources under `input.account.resources` (only the types a snapshot collected, so an
//! absence means "none", never "not looked").

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::{Value, json};
use sqlx::PgPool;

use super::checks::{CheckProblem, CheckSet};

pub const ACCOUNT_TYPE: &str = "aws:account";

/// One resource as checks see it.
#[derive(Clone, Debug, Serialize)]
pub struct PostureResource {
    #[serde(rename = "type")]
    pub resource_type: String,
    pub id: String,
    pub region: String,
    pub account_id: String,
    pub arn: Option<String>,
    pub name: Option<String>,
    pub config: Value,
}

/// An account's current resources, by type; only collected types are keys.
#[derive(Clone, Debug, Default)]
pub struct AccountResources {
    pub account_id: String,
    pub by_type: BTreeMap<String, Vec<PostureResource>>,
}

impl AccountResources {
    /// Reads the account's current (not deleted) resources of every collected type.
    pub async fn load(pool: &PgPool, account_id: &str) -> Result<Self, sqlx::Error> {
        let collected = sqlx::query_scalar!(
            "SELECT DISTINCT resource_type FROM resource_collections WHERE account_id = $1",
            account_id
        )
        .fetch_all(pool)
        .await?;
        let mut by_type: BTreeMap<String, Vec<PostureResource>> =
            collected.into_iter().map(|t| (t, Vec::new())).collect();
        let rows = sqlx::query!(
            "SELECT resource_type, resource_id, region, arn, name, config FROM resources
             WHERE account_id = $1 AND deleted_at IS NULL ORDER BY resource_type, resource_id",
            account_id
        )
        .fetch_all(pool)
        .await?;
        for row in rows {
            by_type.entry(row.resource_type.clone()).or_default().push(PostureResource {
                resource_type: row.resource_type,
                id: row.resource_id,
                region: row.region,
                account_id: account_id.to_string(),
                arn: row.arn,
                name: row.name,
                config: row.config,
            });
        }
        Ok(Self { account_id: account_id.to_string(), by_type })
    }

    /// Accounts with at least one snapshot.
    pub async fn accounts(pool: &PgPool) -> Result<Vec<String>, sqlx::Error> {
        sqlx::query_scalar!("SELECT DISTINCT account_id FROM resource_collections ORDER BY account_id")
            .fetch_all(pool)
            .await
    }

    fn account_value(&self) -> Value {
        let resources: serde_json::Map<String, Value> = self
            .by_type
            .iter()
            .map(|(kind, list)| (kind.clone(), serde_json::to_value(list).expect("resources serialise")))
            .collect();
        json!({"account_id": self.account_id, "resources": resources})
    }

    fn account_itself(&self) -> PostureResource {
        PostureResource {
            resource_type: ACCOUNT_TYPE.into(),
            id: self.account_id.clone(),
            region: "global".into(),
            account_id: self.account_id.clone(),
            arn: None,
            name: None,
            config: json!({}),
        }
    }
}

/// One check on one resource.
#[derive(Clone, Debug, Serialize)]
pub struct CheckResult {
    pub check_id: String,
    pub account_id: String,
    pub resource_type: String,
    pub resource_id: String,
    pub region: String,
    /// Empty: the resource passes.
    pub messages: Vec<String>,
}

#[derive(Clone, Debug, Default, Serialize)]
pub struct AccountEvaluation {
    pub account_id: String,
    pub results: Vec<CheckResult>,
    /// Checks that failed to evaluate on some resource; their results are left out.
    pub problems: Vec<CheckProblem>,
    /// The ids of the checks that ran on this account (every loaded check).
    pub checks_run: Vec<String>,
    /// (check, resource type, resource id) that could not be evaluated: their findings stay as
    /// they were.
    pub not_evaluated: Vec<(String, String, String)>,
}

/// The input of one check on one resource: the resource, the account around it, and now.
fn input(resource: &regorus::Value, account: &regorus::Value, now: &regorus::Value) -> regorus::Value {
    let mut input = regorus::Value::new_object();
    let object = input.as_object_mut().expect("a new object");
    object.insert(regorus::Value::from("resource"), resource.clone());
    object.insert(regorus::Value::from("account"), account.clone());
    object.insert(regorus::Value::from("now"), now.clone());
    input
}

/// Each resource as a Rego value, converted once however many checks read it (clones share
/// their contents).
fn rego_values(resources: &[PostureResource]) -> Vec<regorus::Value> {
    resources.iter().map(|r| regorus::Value::from(serde_json::to_value(r).expect("serialises"))).collect()
}

fn resources_of<'a>(kind: &str, account: &'a AccountResources, itself: &'a [PostureResource]) -> &'a [PostureResource] {
    if kind == ACCOUNT_TYPE { itself } else { account.by_type.get(kind).map(Vec::as_slice).unwrap_or(&[]) }
}

/// Every input `evaluate_account` would evaluate, built and not evaluated (the benchmark's
/// baseline).
pub fn build_inputs(checks: &CheckSet, account: &AccountResources, now: DateTime<Utc>) -> Vec<regorus::Value> {
    let account_value = regorus::Value::from(account.account_value());
    let now_value = regorus::Value::from(now.to_rfc3339_opts(chrono::SecondsFormat::Secs, true));
    let itself = [account.account_itself()];
    let mut converted: std::collections::HashMap<&str, Vec<regorus::Value>> = std::collections::HashMap::new();
    let mut inputs = Vec::new();
    for check in &checks.checks {
        let kind = check.meta.resource_type.as_str();
        let values = converted.entry(kind).or_insert_with(|| rego_values(resources_of(kind, account, &itself)));
        inputs.extend(values.iter().map(|value| input(value, &account_value, &now_value)));
    }
    inputs
}

/// Runs every check over the account. Pure: tests call it with fixture resources.
pub fn evaluate_account(checks: &mut CheckSet, account: &AccountResources, now: DateTime<Utc>) -> AccountEvaluation {
    let account_value = regorus::Value::from(account.account_value());
    let now_value = regorus::Value::from(now.to_rfc3339_opts(chrono::SecondsFormat::Secs, true));
    let itself = [account.account_itself()];
    let mut evaluation = AccountEvaluation { account_id: account.account_id.clone(), ..Default::default() };
    let mut converted: std::collections::HashMap<String, Vec<regorus::Value>> = std::collections::HashMap::new();
    for check in &mut checks.checks {
        evaluation.checks_run.push(check.meta.id.clone());
        let resources = resources_of(&check.meta.resource_type, account, &itself);
        let values = converted.entry(check.meta.resource_type.clone()).or_insert_with(|| rego_values(resources));
        // A panic leaves a regorus engine broken (it believes it is still inside the rule):
        // the check goes on from a copy taken before.
        let spare = (!resources.is_empty()).then(|| check.clone());
        for (resource, value) in resources.iter().zip(values.iter()) {
            let input = input(value, &account_value, &now_value);
            // A check that panics on one resource is reported like one that fails; the others run.
            let evaluated = crate::supervise::catch_panic_blocking(|| check.evaluate(&input)).unwrap_or_else(|panic| {
                if let Some(spare) = &spare {
                    *check = spare.clone();
                }
                Err(format!("the evaluation panicked: {panic}"))
            });
            match evaluated {
                Ok(messages) => evaluation.results.push(CheckResult {
                    check_id: check.meta.id.clone(),
                    account_id: account.account_id.clone(),
                    resource_type: resource.resource_type.clone(),
                    resource_id: resource.id.clone(),
                    region: resource.region.clone(),
                    messages,
                }),
                Err(message) => {
                    evaluation.not_evaluated.push((
                        check.meta.id.clone(),
                        resource.resource_type.clone(),
                        resource.id.clone(),
                    ));
                    tracing::warn!(check = %check.meta.id, resource = %resource.id, %message, "posture check failed to evaluate");
                    evaluation.problems.push(CheckProblem {
                        file: check.meta.file.display().to_string(),
                        check: Some(check.meta.id.clone()),
                        message: format!("on {} {}: {message}", resource.resource_type, resource.id),
                    });
                }
            }
        }
    }
    evaluation
}
