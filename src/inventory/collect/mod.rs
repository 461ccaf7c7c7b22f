//! Reads the current configuration of one region's EC2 resources, or of the account's IAM and
//! trails, and turns it into `ResourceConfig` values for `store` to version and `diff` to
//! compare.
//!
//! The SDK types do not serialise, so every config is built here by hand, with snake_case keys,
//! sorted arrays wherever AWS defines no order, and `null` for an absent optional field: the same
//! resource must give the same value on every run, or every snapshot would record a change.
//! Values that move without anyone touching the resource (instance state, last-used dates,
//! delivery times) go under `observed`, which is stored but not compared.

use std::collections::HashMap;
use std::time::Duration;

use aws_smithy_types::DateTime;
use aws_smithy_types::date_time::Format;
use serde_json::{Map, Value, json};

use super::{GLOBAL_REGION, ResourceConfig};

mod cloudtrail;
mod credentials;
mod ec2;
mod iam;
#[cfg(test)]
mod tests;

use self::cloudtrail::*;
pub use self::credentials::root_account_from_report;
use self::credentials::*;
use self::ec2::*;
pub use self::ec2::{instance_config, security_group_config};
use self::iam::*;
use crate::aws::{AwsError, AwsErrorKind};

pub use super::resource_types::*;

/// Large pages: fewer calls, and EC2 allows up to 1000 results per describe call.
const EC2_PAGE_SIZE: i32 = 1000;
/// GenerateCredentialReport is asked again while the report is being built.
const REPORT_ATTEMPTS: u32 = 10;
const REPORT_POLL: Duration = Duration::from_secs(2);
/// Per-user IAM calls in flight at once: faster than one by one, gentle on IAM's rate limits.
const USER_CALLS_IN_FLIGHT: usize = 4;

/// The result of collecting one resource type: either all of its resources, or the error that
/// stopped the collection (so a failure for one type never deletes resources of that type).
#[derive(Debug)]
pub struct Collected {
    pub resource_type: &'static str,
    pub result: Result<Vec<ResourceConfig>, AwsError>,
}

/// Regional resources of one region: security groups, instances, VPCs and flow logs. Trails
/// are account-wide: see [`collect_trails`].
pub async fn collect_regional(ec2: &aws_sdk_ec2::Client, region: &str) -> Vec<Collected> {
    let (groups, instances, vpcs, flow_logs) =
        tokio::join!(security_groups(ec2, region), instances(ec2, region), vpcs(ec2, region), flow_logs(ec2, region));
    let collected = vec![
        Collected { resource_type: SECURITY_GROUP, result: groups },
        Collected { resource_type: INSTANCE, result: instances },
        Collected { resource_type: VPC, result: vpcs },
        Collected { resource_type: FLOW_LOG, result: flow_logs },
    ];
    log_collected(region, &collected);
    collected
}

/// The account's trails, each once (with `global` as its region), as seen from `regions`
/// (shadow trails included): a multi-region or organization trail is known whatever its home
/// region. `client_for` gives a CloudTrail client for a region.
pub async fn collect_trails(
    client_for: &(dyn Fn(&str) -> aws_sdk_cloudtrail::Client + Sync),
    regions: &[String],
) -> Collected {
    let collected = Collected { resource_type: TRAIL, result: trails(client_for, regions).await };
    log_collected(GLOBAL_REGION, std::slice::from_ref(&collected));
    collected
}

/// Global IAM resources: users, groups, roles, instance profiles, customer managed policies, the
/// root user and the password policy.
pub async fn collect_global(iam: &aws_sdk_iam::Client, account_id: &str) -> Vec<Collected> {
    let (details, profiles, role_settings, report, password_policy) = tokio::join!(
        authorization_details(iam),
        instance_profiles(iam),
        role_settings(iam),
        credential_report(iam),
        password_policy(iam, account_id)
    );
    let root = match &report {
        Ok(report) => Ok(root_account(report, account_id).into_iter().collect()),
        Err(error) => Err(copy_error(error)),
    };

    let (users, groups, roles, policies) = match details {
        Ok(details) => {
            let users = match report {
                Ok(report) => users(iam, &details.users, &report).await,
                Err(error) => Err(error),
            };
            let groups = Ok(details.groups.iter().filter_map(group_config).collect());
            let roles = role_settings.map(|settings| {
                details.roles.iter().filter_map(|role| role_config(role, settings.get(role.role_name()?))).collect()
            });
            let policies = Ok(details.policies.iter().filter_map(policy_config).collect());
            (users, groups, roles, policies)
        }
        // One failed listing stops the four types it feeds; each gets its own copy of the error.
        Err(error) => (Err(copy_error(&error)), Err(copy_error(&error)), Err(copy_error(&error)), Err(error)),
    };
    let collected = vec![
        Collected { resource_type: IAM_USER, result: users },
        Collected { resource_type: IAM_GROUP, result: groups },
        Collected { resource_type: IAM_ROLE, result: roles },
        Collected { resource_type: IAM_INSTANCE_PROFILE, result: profiles },
        Collected { resource_type: IAM_POLICY, result: policies },
        Collected { resource_type: IAM_ROOT_ACCOUNT, result: root },
        Collected { resource_type: IAM_PASSWORD_POLICY, result: password_policy },
    ];
    log_collected(GLOBAL_REGION, &collected);
    collected
}

fn log_collected(region: &str, collected: &[Collected]) {
    for item in collected {
        match &item.result {
            Ok(found) => tracing::debug!(resource_type = item.resource_type, region, count = found.len(), "collected"),
            Err(error) => tracing::warn!(resource_type = item.resource_type, region, %error, "collection failed"),
        }
    }
}

fn copy_error(error: &AwsError) -> AwsError {
    AwsError {
        operation: error.operation,
        region: error.region.clone(),
        kind: error.kind,
        code: error.code.clone(),
        message: error.message.clone(),
    }
}

// ---------------------------------------------------------------------------------------------
// EC2

/// An RFC 3339 timestamp, or null.
fn time(value: Option<&DateTime>) -> Value {
    value.and_then(|t| t.fmt(Format::DateTime).ok()).map_or(Value::Null, Value::String)
}

fn sorted_strings<'a>(items: impl IntoIterator<Item = &'a str>) -> Value {
    let mut items: Vec<&str> = items.into_iter().collect();
    items.sort_unstable();
    json!(items)
}

/// Sorts by serialised form: any stable order will do, as long as it never depends on AWS's.
fn sort_values(values: &mut [Value]) {
    values.sort_by_cached_key(|v| v.to_string());
}

fn tag_map<'a>(tags: impl IntoIterator<Item = (&'a str, &'a str)>) -> Value {
    Value::Object(tags.into_iter().map(|(k, v)| (k.to_owned(), Value::String(v.to_owned()))).collect())
}

fn ec2_tags(tags: &[aws_sdk_ec2::types::Tag]) -> Value {
    tag_map(tags.iter().filter_map(|t| Some((t.key()?, t.value().unwrap_or_default()))))
}

fn iam_tags(tags: &[aws_sdk_iam::types::Tag]) -> Value {
    tag_map(tags.iter().map(|t| (t.key(), t.value())))
}

/// The ARN partition of a region, so ARNs built here are right outside the commercial partition.
fn partition(region: &str) -> &'static str {
    if region.starts_with("cn-") {
        "aws-cn"
    } else if region.starts_with("us-gov-") {
        "aws-us-gov"
    } else if region.starts_with("us-isob-") {
        "aws-iso-b"
    } else if region.starts_with("us-iso-") {
        "aws-iso"
    } else {
        "aws"
    }
}

fn ec2_arn(region: &str, owner_id: Option<&str>, kind: &str, id: &str) -> Option<String> {
    let owner_id = owner_id?;
    Some(format!("arn:{}:ec2:{region}:{owner_id}:{kind}/{id}", partition(region)))
}
