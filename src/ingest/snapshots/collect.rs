//! Reads the current configuration of one region's EC2 and CloudTrail resources, or of the
//! account's IAM, and turns it into `ResourceConfig` values for `store` to version and `diff` to
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
use crate::aws::{AwsError, AwsErrorKind};

pub const SECURITY_GROUP: &str = "ec2:security-group";
pub const INSTANCE: &str = "ec2:instance";
pub const VPC: &str = "ec2:vpc";
pub const FLOW_LOG: &str = "ec2:flow-log";
pub const TRAIL: &str = "cloudtrail:trail";
pub const IAM_USER: &str = "iam:user";
pub const IAM_GROUP: &str = "iam:group";
pub const IAM_ROLE: &str = "iam:role";
pub const IAM_INSTANCE_PROFILE: &str = "iam:instance-profile";
pub const IAM_POLICY: &str = "iam:policy";
/// The root user, from the credential report's `<root_account>` row; its id is the account id.
pub const IAM_ROOT_ACCOUNT: &str = "iam:root-account";
/// The account password policy (absent when none is set); its id is the account id.
pub const IAM_PASSWORD_POLICY: &str = "iam:password-policy";

/// Every resource type a snapshot collects.
pub const RESOURCE_TYPES: [&str; 12] = [
    SECURITY_GROUP,
    INSTANCE,
    VPC,
    FLOW_LOG,
    TRAIL,
    IAM_USER,
    IAM_GROUP,
    IAM_ROLE,
    IAM_INSTANCE_PROFILE,
    IAM_POLICY,
    IAM_ROOT_ACCOUNT,
    IAM_PASSWORD_POLICY,
];

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

/// Regional resources of one region: security groups, instances, VPCs, flow logs and the trails
/// whose home region this is (a multi-region trail is recorded once, in its home region).
pub async fn collect_regional(
    ec2: &aws_sdk_ec2::Client,
    cloudtrail: &aws_sdk_cloudtrail::Client,
    region: &str,
) -> Vec<Collected> {
    let (groups, instances, vpcs, flow_logs, trails) = tokio::join!(
        security_groups(ec2, region),
        instances(ec2, region),
        vpcs(ec2, region),
        flow_logs(ec2, region),
        trails(cloudtrail, region),
    );
    let collected = vec![
        Collected { resource_type: SECURITY_GROUP, result: groups },
        Collected { resource_type: INSTANCE, result: instances },
        Collected { resource_type: VPC, result: vpcs },
        Collected { resource_type: FLOW_LOG, result: flow_logs },
        Collected { resource_type: TRAIL, result: trails },
    ];
    log_collected(region, &collected);
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

async fn security_groups(ec2: &aws_sdk_ec2::Client, region: &str) -> Result<Vec<ResourceConfig>, AwsError> {
    let mut found = Vec::new();
    let mut groups = ec2.describe_security_groups().max_results(EC2_PAGE_SIZE).into_paginator().items().send();
    while let Some(group) = groups.next().await {
        let group = group.map_err(|e| AwsError::from_sdk("ec2:DescribeSecurityGroups", region, e))?;
        found.extend(security_group_config(&group, region));
    }
    Ok(found)
}

pub fn security_group_config(group: &aws_sdk_ec2::types::SecurityGroup, region: &str) -> Option<ResourceConfig> {
    let Some(group_id) = group.group_id() else {
        tracing::warn!(region, "a security group without an id was skipped");
        return None;
    };
    let arn = group
        .security_group_arn()
        .map(str::to_owned)
        .or_else(|| ec2_arn(region, group.owner_id(), "security-group", group_id));
    let config = json!({
        "group_id": group_id,
        "group_name": group.group_name(),
        "description": group.description(),
        "vpc_id": group.vpc_id(),
        "owner_id": group.owner_id(),
        "tags": ec2_tags(group.tags()),
        "ingress": flatten_rules(group.ip_permissions()),
        "egress": flatten_rules(group.ip_permissions_egress()),
    });
    Some(ResourceConfig {
        resource_type: SECURITY_GROUP,
        resource_id: group_id.to_owned(),
        region: region.to_owned(),
        arn,
        name: group.group_name().map(str::to_owned),
        config,
    })
}

/// One rule per (protocol, ports, single source), sorted: AWS groups sources under a permission
/// in an order of its own, and a rule added to a group should show as one added rule.
fn flatten_rules(permissions: &[aws_sdk_ec2::types::IpPermission]) -> Vec<Value> {
    let mut rules = Vec::new();
    for permission in permissions {
        let protocol = match permission.ip_protocol() {
            Some("-1") => Some("all"),
            other => other,
        };
        let rule = |source: &[(&str, Value)], description: Option<&str>| {
            let mut rule = Map::new();
            rule.insert("protocol".into(), json!(protocol));
            rule.insert("from_port".into(), json!(permission.from_port()));
            rule.insert("to_port".into(), json!(permission.to_port()));
            for (key, value) in source {
                rule.insert((*key).into(), value.clone());
            }
            rule.insert("description".into(), json!(description));
            Value::Object(rule)
        };
        let before = rules.len();
        for range in permission.ip_ranges() {
            rules.push(rule(&[("cidr_ipv4", json!(range.cidr_ip()))], range.description()));
        }
        for range in permission.ipv6_ranges() {
            rules.push(rule(&[("cidr_ipv6", json!(range.cidr_ipv6()))], range.description()));
        }
        for pair in permission.user_id_group_pairs() {
            let source = [
                ("source_group_id", json!(pair.group_id())),
                ("source_group_owner_id", json!(pair.user_id())),
                ("vpc_peering_connection_id", json!(pair.vpc_peering_connection_id())),
            ];
            rules.push(rule(&source, pair.description()));
        }
        for list in permission.prefix_list_ids() {
            rules.push(rule(&[("prefix_list_id", json!(list.prefix_list_id()))], list.description()));
        }
        // A permission without any source is still recorded rather than dropped.
        if rules.len() == before {
            rules.push(rule(&[], None));
        }
    }
    sort_values(&mut rules);
    rules
}

async fn instances(ec2: &aws_sdk_ec2::Client, region: &str) -> Result<Vec<ResourceConfig>, AwsError> {
    let mut found = Vec::new();
    let mut reservations = ec2.describe_instances().max_results(EC2_PAGE_SIZE).into_paginator().items().send();
    while let Some(reservation) = reservations.next().await {
        let reservation = reservation.map_err(|e| AwsError::from_sdk("ec2:DescribeInstances", region, e))?;
        for instance in reservation.instances() {
            found.extend(instance_config(instance, reservation.owner_id(), region));
        }
    }
    Ok(found)
}

/// A terminated instance is left out, so its deletion is recorded when it is terminated rather
/// than when EC2 stops listing it an hour later.
pub fn instance_config(
    instance: &aws_sdk_ec2::types::Instance,
    owner_id: Option<&str>,
    region: &str,
) -> Option<ResourceConfig> {
    use aws_sdk_ec2::types::InstanceStateName;

    let Some(instance_id) = instance.instance_id() else {
        tracing::warn!(region, "an instance without an id was skipped");
        return None;
    };
    let state = instance.state().and_then(|s| s.name());
    if state == Some(&InstanceStateName::Terminated) {
        return None;
    }
    let metadata_options = instance.metadata_options().map_or(Value::Null, |m| {
        json!({
            "http_tokens": m.http_tokens().map(|v| v.as_str()),
            "http_endpoint": m.http_endpoint().map(|v| v.as_str()),
            "http_put_response_hop_limit": m.http_put_response_hop_limit(),
            "http_protocol_ipv6": m.http_protocol_ipv6().map(|v| v.as_str()),
            "instance_metadata_tags": m.instance_metadata_tags().map(|v| v.as_str()),
        })
    });
    let name = instance.tags().iter().find(|t| t.key() == Some("Name")).and_then(|t| t.value()).map(str::to_owned);
    let config = json!({
        "instance_id": instance_id,
        "instance_type": instance.instance_type().map(|v| v.as_str()),
        "image_id": instance.image_id(),
        "vpc_id": instance.vpc_id(),
        "subnet_id": instance.subnet_id(),
        "private_ip": instance.private_ip_address(),
        "public_ip": instance.public_ip_address(),
        "iam_instance_profile_arn": instance.iam_instance_profile().and_then(|p| p.arn()),
        "security_group_ids": sorted_strings(instance.security_groups().iter().filter_map(|g| g.group_id())),
        "key_name": instance.key_name(),
        "platform": instance.platform().map(|v| v.as_str()),
        "platform_details": instance.platform_details(),
        "metadata_options": metadata_options,
        "tags": ec2_tags(instance.tags()),
        "network_interface_ids": sorted_strings(instance.network_interfaces().iter().filter_map(|n| n.network_interface_id())),
        // The launch time moves on every start, like the state: observed, not compared.
        "observed": {
            "state": state.map(|v| v.as_str()),
            "launch_time": time(instance.launch_time()),
            "metadata_options_state": instance.metadata_options().and_then(|m| m.state()).map(|v| v.as_str()),
        },
    });
    Some(ResourceConfig {
        resource_type: INSTANCE,
        resource_id: instance_id.to_owned(),
        region: region.to_owned(),
        arn: ec2_arn(region, owner_id, "instance", instance_id),
        name,
        config,
    })
}

async fn vpcs(ec2: &aws_sdk_ec2::Client, region: &str) -> Result<Vec<ResourceConfig>, AwsError> {
    let mut found = Vec::new();
    let mut vpcs = ec2.describe_vpcs().max_results(EC2_PAGE_SIZE).into_paginator().items().send();
    while let Some(vpc) = vpcs.next().await {
        let vpc = vpc.map_err(|e| AwsError::from_sdk("ec2:DescribeVpcs", region, e))?;
        found.extend(vpc_config(&vpc, region));
    }
    Ok(found)
}

fn vpc_config(vpc: &aws_sdk_ec2::types::Vpc, region: &str) -> Option<ResourceConfig> {
    use aws_sdk_ec2::types::VpcCidrBlockStateCode as Code;

    let Some(vpc_id) = vpc.vpc_id() else {
        tracing::warn!(region, "a VPC without an id was skipped");
        return None;
    };
    // Blocks being removed (or that failed to attach) are not part of the VPC's address space.
    let current = |state: Option<&Code>| matches!(state, None | Some(Code::Associated | Code::Associating));
    let cidr_blocks = sorted_strings(
        vpc.cidr_block_association_set()
            .iter()
            .filter(|a| current(a.cidr_block_state().and_then(|s| s.state())))
            .filter_map(|a| a.cidr_block()),
    );
    let ipv6_cidr_blocks = sorted_strings(
        vpc.ipv6_cidr_block_association_set()
            .iter()
            .filter(|a| current(a.ipv6_cidr_block_state().and_then(|s| s.state())))
            .filter_map(|a| a.ipv6_cidr_block()),
    );
    let name = vpc.tags().iter().find(|t| t.key() == Some("Name")).and_then(|t| t.value()).map(str::to_owned);
    let config = json!({
        "vpc_id": vpc_id,
        "cidr_block": vpc.cidr_block(),
        "cidr_blocks": cidr_blocks,
        "ipv6_cidr_blocks": ipv6_cidr_blocks,
        "is_default": vpc.is_default(),
        "state": vpc.state().map(|v| v.as_str()),
        "dhcp_options_id": vpc.dhcp_options_id(),
        "instance_tenancy": vpc.instance_tenancy().map(|v| v.as_str()),
        "tags": ec2_tags(vpc.tags()),
        "owner_id": vpc.owner_id(),
    });
    Some(ResourceConfig {
        resource_type: VPC,
        resource_id: vpc_id.to_owned(),
        region: region.to_owned(),
        arn: ec2_arn(region, vpc.owner_id(), "vpc", vpc_id),
        name,
        config,
    })
}

async fn flow_logs(ec2: &aws_sdk_ec2::Client, region: &str) -> Result<Vec<ResourceConfig>, AwsError> {
    let mut found = Vec::new();
    let mut logs = ec2.describe_flow_logs().max_results(EC2_PAGE_SIZE).into_paginator().items().send();
    while let Some(log) = logs.next().await {
        let log = log.map_err(|e| AwsError::from_sdk("ec2:DescribeFlowLogs", region, e))?;
        found.extend(flow_log_config(&log, region));
    }
    Ok(found)
}

fn flow_log_config(log: &aws_sdk_ec2::types::FlowLog, region: &str) -> Option<ResourceConfig> {
    let Some(flow_log_id) = log.flow_log_id() else {
        tracing::warn!(region, "a flow log without an id was skipped");
        return None;
    };
    let destination_options = log.destination_options().map_or(Value::Null, |o| {
        json!({
            "file_format": o.file_format().map(|v| v.as_str()),
            "hive_compatible_partitions": o.hive_compatible_partitions(),
            "per_hour_partition": o.per_hour_partition(),
        })
    });
    let name = log.tags().iter().find(|t| t.key() == Some("Name")).and_then(|t| t.value()).map(str::to_owned);
    let config = json!({
        "flow_log_id": flow_log_id,
        "resource_id": log.resource_id(),
        "traffic_type": log.traffic_type().map(|v| v.as_str()),
        "log_destination_type": log.log_destination_type().map(|v| v.as_str()),
        "log_destination": log.log_destination(),
        "log_group_name": log.log_group_name(),
        "log_format": log.log_format(),
        "flow_log_status": log.flow_log_status(),
        "deliver_logs_status": log.deliver_logs_status(),
        "deliver_logs_permission_arn": log.deliver_logs_permission_arn(),
        "deliver_cross_account_role": log.deliver_cross_account_role(),
        "max_aggregation_interval": log.max_aggregation_interval(),
        "destination_options": destination_options,
        "creation_time": time(log.creation_time()),
        "tags": ec2_tags(log.tags()),
        "observed": {
            "deliver_logs_error_message": log.deliver_logs_error_message(),
        },
    });
    Some(ResourceConfig {
        resource_type: FLOW_LOG,
        resource_id: flow_log_id.to_owned(),
        region: region.to_owned(),
        arn: None,
        name,
        config,
    })
}

// ---------------------------------------------------------------------------------------------
// CloudTrail

async fn trails(cloudtrail: &aws_sdk_cloudtrail::Client, region: &str) -> Result<Vec<ResourceConfig>, AwsError> {
    // DescribeTrails is not paginated: it returns every trail visible in the region at once.
    let described = cloudtrail
        .describe_trails()
        .send()
        .await
        .map_err(|e| AwsError::from_sdk("cloudtrail:DescribeTrails", region, e))?;
    let mut found = Vec::new();
    for trail in described.trail_list() {
        if trail.home_region() != Some(region) {
            continue;
        }
        let Some(arn) = trail.trail_arn() else {
            tracing::warn!(region, name = trail.name(), "a trail without an ARN was skipped");
            continue;
        };
        // The ARN, not the name: a member account must name an organization trail by its ARN.
        let status = cloudtrail
            .get_trail_status()
            .name(arn)
            .send()
            .await
            .map_err(|e| AwsError::from_sdk("cloudtrail:GetTrailStatus", region, e))?;
        let selectors = match cloudtrail.get_event_selectors().trail_name(arn).send().await {
            Ok(selectors) => event_selectors(&selectors),
            Err(error) => {
                let error = AwsError::from_sdk("cloudtrail:GetEventSelectors", region, error);
                // A member account may see an organization trail without being allowed to read
                // its selectors; that refusal is stable, so `null` does not flap between runs.
                let refused = matches!(error.kind, AwsErrorKind::AccessDenied | AwsErrorKind::Rejected);
                if trail.is_organization_trail() == Some(true) && refused {
                    tracing::debug!(region, trail = arn, %error, "event selectors of an organization trail not readable");
                    Value::Null
                } else {
                    return Err(error);
                }
            }
        };
        found.extend(trail_config(trail, &status, selectors, region));
    }
    Ok(found)
}

fn trail_config(
    trail: &aws_sdk_cloudtrail::types::Trail,
    status: &aws_sdk_cloudtrail::operation::get_trail_status::GetTrailStatusOutput,
    event_selectors: Value,
    region: &str,
) -> Option<ResourceConfig> {
    let arn = trail.trail_arn()?;
    let config = json!({
        "name": trail.name(),
        "home_region": trail.home_region(),
        "s3_bucket_name": trail.s3_bucket_name(),
        "s3_key_prefix": trail.s3_key_prefix(),
        "sns_topic_arn": trail.sns_topic_arn(),
        "is_multi_region": trail.is_multi_region_trail(),
        "is_organization_trail": trail.is_organization_trail(),
        "log_file_validation": trail.log_file_validation_enabled(),
        "kms_key_id": trail.kms_key_id(),
        "cloud_watch_logs_log_group_arn": trail.cloud_watch_logs_log_group_arn(),
        "cloud_watch_logs_role_arn": trail.cloud_watch_logs_role_arn(),
        "include_global_service_events": trail.include_global_service_events(),
        "has_custom_event_selectors": trail.has_custom_event_selectors(),
        "has_insight_selectors": trail.has_insight_selectors(),
        "event_selectors": event_selectors,
        "is_logging": status.is_logging(),
        // Only a StartLogging or StopLogging call moves these, so a stop and restart between two
        // snapshots still shows as a change.
        "start_logging_time": time(status.start_logging_time()),
        "stop_logging_time": time(status.stop_logging_time()),
        "observed": {
            "latest_delivery_time": time(status.latest_delivery_time()),
            "latest_delivery_error": status.latest_delivery_error(),
            "latest_notification_time": time(status.latest_notification_time()),
            "latest_notification_error": status.latest_notification_error(),
            "latest_cloud_watch_logs_delivery_time": time(status.latest_cloud_watch_logs_delivery_time()),
            "latest_cloud_watch_logs_delivery_error": status.latest_cloud_watch_logs_delivery_error(),
            "latest_digest_delivery_time": time(status.latest_digest_delivery_time()),
            "latest_digest_delivery_error": status.latest_digest_delivery_error(),
        },
    });
    Some(ResourceConfig {
        resource_type: TRAIL,
        resource_id: arn.to_owned(),
        region: region.to_owned(),
        arn: Some(arn.to_owned()),
        name: trail.name().map(str::to_owned),
        config,
    })
}

/// Basic and advanced selectors as AWS returns them (the user's order), with the value lists
/// inside each selector sorted, since they are sets.
fn event_selectors(output: &aws_sdk_cloudtrail::operation::get_event_selectors::GetEventSelectorsOutput) -> Value {
    let basic: Vec<Value> = output
        .event_selectors()
        .iter()
        .map(|s| {
            let mut data_resources: Vec<Value> = s
                .data_resources()
                .iter()
                .map(|d| json!({"type": d.r#type(), "values": sorted_strings(d.values().iter().map(String::as_str))}))
                .collect();
            sort_values(&mut data_resources);
            json!({
                "read_write_type": s.read_write_type().map(|v| v.as_str()),
                "include_management_events": s.include_management_events(),
                "data_resources": data_resources,
                "exclude_management_event_sources":
                    sorted_strings(s.exclude_management_event_sources().iter().map(String::as_str)),
            })
        })
        .collect();
    let advanced: Vec<Value> = output
        .advanced_event_selectors()
        .iter()
        .map(|s| {
            let mut fields: Vec<Value> = s
                .field_selectors()
                .iter()
                .map(|f| {
                    let list = |values: &[String]| sorted_strings(values.iter().map(String::as_str));
                    json!({
                        "field": f.field(),
                        "equals": list(f.equals()),
                        "starts_with": list(f.starts_with()),
                        "ends_with": list(f.ends_with()),
                        "not_equals": list(f.not_equals()),
                        "not_starts_with": list(f.not_starts_with()),
                        "not_ends_with": list(f.not_ends_with()),
                    })
                })
                .collect();
            sort_values(&mut fields);
            json!({"name": s.name(), "field_selectors": fields})
        })
        .collect();
    json!({"event_selectors": basic, "advanced_event_selectors": advanced})
}

// ---------------------------------------------------------------------------------------------
// IAM

#[derive(Default)]
struct AuthorizationDetails {
    users: Vec<aws_sdk_iam::types::UserDetail>,
    groups: Vec<aws_sdk_iam::types::GroupDetail>,
    roles: Vec<aws_sdk_iam::types::RoleDetail>,
    policies: Vec<aws_sdk_iam::types::ManagedPolicyDetail>,
}

async fn authorization_details(iam: &aws_sdk_iam::Client) -> Result<AuthorizationDetails, AwsError> {
    use aws_sdk_iam::types::EntityType;

    // Without the filter the answer also carries every AWS managed policy with all its versions.
    let mut pages = iam
        .get_account_authorization_details()
        .filter(EntityType::User)
        .filter(EntityType::Group)
        .filter(EntityType::Role)
        .filter(EntityType::LocalManagedPolicy)
        .into_paginator()
        .send();
    let mut details = AuthorizationDetails::default();
    while let Some(page) = pages.next().await {
        let page = page.map_err(|e| AwsError::from_sdk("iam:GetAccountAuthorizationDetails", GLOBAL_REGION, e))?;
        details.users.extend(page.user_detail_list.unwrap_or_default());
        details.groups.extend(page.group_detail_list.unwrap_or_default());
        details.roles.extend(page.role_detail_list.unwrap_or_default());
        details.policies.extend(page.policies.unwrap_or_default());
    }
    Ok(details)
}

/// Role settings GetAccountAuthorizationDetails leaves out.
struct RoleSettings {
    max_session_duration: Option<i32>,
    description: Option<String>,
}

async fn role_settings(iam: &aws_sdk_iam::Client) -> Result<HashMap<String, RoleSettings>, AwsError> {
    let mut settings = HashMap::new();
    let mut roles = iam.list_roles().into_paginator().items().send();
    while let Some(role) = roles.next().await {
        let role = role.map_err(|e| AwsError::from_sdk("iam:ListRoles", GLOBAL_REGION, e))?;
        settings.insert(
            role.role_name().to_owned(),
            RoleSettings {
                max_session_duration: role.max_session_duration(),
                description: role.description().map(str::to_owned),
            },
        );
    }
    Ok(settings)
}

/// ListInstanceProfiles rather than the profiles nested in roles: a profile without a role is
/// still a resource (and can be given a role later).
async fn instance_profiles(iam: &aws_sdk_iam::Client) -> Result<Vec<ResourceConfig>, AwsError> {
    let mut found = Vec::new();
    let mut profiles = iam.list_instance_profiles().into_paginator().items().send();
    while let Some(profile) = profiles.next().await {
        let profile = profile.map_err(|e| AwsError::from_sdk("iam:ListInstanceProfiles", GLOBAL_REGION, e))?;
        found.push(instance_profile_config(&profile));
    }
    Ok(found)
}

fn instance_profile_config(profile: &aws_sdk_iam::types::InstanceProfile) -> ResourceConfig {
    let name = profile.instance_profile_name();
    let config = json!({
        "name": name,
        "instance_profile_id": profile.instance_profile_id(),
        "arn": profile.arn(),
        "path": profile.path(),
        "create_date": time(Some(profile.create_date())),
        "roles": sorted_strings(profile.roles().iter().map(|r| r.role_name())),
        "tags": iam_tags(profile.tags()),
    });
    ResourceConfig {
        resource_type: IAM_INSTANCE_PROFILE,
        resource_id: name.to_owned(),
        region: GLOBAL_REGION.to_owned(),
        arn: Some(profile.arn().to_owned()),
        name: Some(name.to_owned()),
        config,
    }
}

fn group_config(group: &aws_sdk_iam::types::GroupDetail) -> Option<ResourceConfig> {
    let Some(name) = group.group_name() else {
        tracing::warn!("an IAM group without a name was skipped");
        return None;
    };
    let config = json!({
        "group_name": name,
        "group_id": group.group_id(),
        "arn": group.arn(),
        "path": group.path(),
        "create_date": time(group.create_date()),
        "attached_policies": attached_policy_arns(group.attached_managed_policies()),
        "inline_policies": inline_policies(group.group_policy_list()),
    });
    Some(ResourceConfig {
        resource_type: IAM_GROUP,
        resource_id: name.to_owned(),
        region: GLOBAL_REGION.to_owned(),
        arn: group.arn().map(str::to_owned),
        name: Some(name.to_owned()),
        config,
    })
}

fn role_config(role: &aws_sdk_iam::types::RoleDetail, settings: Option<&RoleSettings>) -> Option<ResourceConfig> {
    let Some(name) = role.role_name() else {
        tracing::warn!("an IAM role without a name was skipped");
        return None;
    };
    let role_last_used = role
        .role_last_used()
        .map_or(Value::Null, |used| json!({"last_used_date": time(used.last_used_date()), "region": used.region()}));
    let config = json!({
        "role_name": name,
        "role_id": role.role_id(),
        "arn": role.arn(),
        "path": role.path(),
        "create_date": time(role.create_date()),
        "description": settings.and_then(|s| s.description.as_deref()),
        "assume_role_policy": policy_document(role.assume_role_policy_document()),
        "attached_policies": attached_policy_arns(role.attached_managed_policies()),
        "inline_policies": inline_policies(role.role_policy_list()),
        "instance_profiles": sorted_strings(role.instance_profile_list().iter().map(|p| p.instance_profile_name())),
        "max_session_duration": settings.and_then(|s| s.max_session_duration),
        "permissions_boundary": role.permissions_boundary().and_then(|b| b.permissions_boundary_arn()),
        "tags": iam_tags(role.tags()),
        "observed": {
            "role_last_used": role_last_used,
        },
    });
    Some(ResourceConfig {
        resource_type: IAM_ROLE,
        resource_id: name.to_owned(),
        region: GLOBAL_REGION.to_owned(),
        arn: role.arn().map(str::to_owned),
        name: Some(name.to_owned()),
        config,
    })
}

fn policy_config(policy: &aws_sdk_iam::types::ManagedPolicyDetail) -> Option<ResourceConfig> {
    let Some(arn) = policy.arn() else {
        tracing::warn!(name = policy.policy_name(), "a managed policy without an ARN was skipped");
        return None;
    };
    let versions = policy.policy_version_list();
    let default = versions
        .iter()
        .find(|v| v.version_id().is_some() && v.version_id() == policy.default_version_id())
        .or_else(|| versions.iter().find(|v| v.is_default_version()));
    let config = json!({
        "policy_name": policy.policy_name(),
        "policy_id": policy.policy_id(),
        "arn": arn,
        "path": policy.path(),
        "description": policy.description(),
        "default_version_id": policy.default_version_id(),
        "attachment_count": policy.attachment_count(),
        "permissions_boundary_usage_count": policy.permissions_boundary_usage_count(),
        "is_attachable": policy.is_attachable(),
        "create_date": time(policy.create_date()),
        "document": policy_document(default.and_then(|v| v.document())),
        "observed": {
            "update_date": time(policy.update_date()),
        },
    });
    Some(ResourceConfig {
        resource_type: IAM_POLICY,
        resource_id: arn.to_owned(),
        region: GLOBAL_REGION.to_owned(),
        arn: Some(arn.to_owned()),
        name: policy.policy_name().map(str::to_owned),
        config,
    })
}

/// The credential report: one row per user, keyed by user name, each row keyed by column.
struct CredentialReport {
    generated_at: Value,
    rows: HashMap<String, HashMap<String, String>>,
}

async fn credential_report(iam: &aws_sdk_iam::Client) -> Result<CredentialReport, AwsError> {
    use aws_sdk_iam::types::ReportStateType;

    // IAM builds the report in the background (and reuses one younger than four hours).
    for attempt in 1..=REPORT_ATTEMPTS {
        let generated = iam
            .generate_credential_report()
            .send()
            .await
            .map_err(|e| AwsError::from_sdk("iam:GenerateCredentialReport", GLOBAL_REGION, e))?;
        if generated.state() == Some(&ReportStateType::Complete) {
            break;
        }
        tracing::debug!(attempt, state = generated.state().map(|s| s.as_str()), "credential report not ready");
        if attempt < REPORT_ATTEMPTS {
            tokio::time::sleep(REPORT_POLL).await;
        }
    }
    // Still not ready: GetCredentialReport then fails with ReportInProgress, which names the cause.
    let report = iam
        .get_credential_report()
        .send()
        .await
        .map_err(|e| AwsError::from_sdk("iam:GetCredentialReport", GLOBAL_REGION, e))?;
    let content = report.content().map(|c| String::from_utf8_lossy(c.as_ref()).into_owned()).unwrap_or_default();
    Ok(CredentialReport { generated_at: time(report.generated_time()), rows: parse_credential_report(&content) })
}

/// The root user from a credential report's CSV text (tests feed saved reports through it).
pub fn root_account_from_report(csv: &str, generated_at: &Value, account_id: &str) -> Option<ResourceConfig> {
    let report = CredentialReport { generated_at: generated_at.clone(), rows: parse_credential_report(csv) };
    root_account(&report, account_id)
}

/// The root user's row of the credential report (`<root_account>`). Key rotation dates stay in
/// the compared config: they move only when someone creates a root key.
fn root_account(report: &CredentialReport, account_id: &str) -> Option<ResourceConfig> {
    let row = report.rows.get("<root_account>");
    row?;
    let config = json!({
        "arn": report_text(row, "arn"),
        "user_creation_time": report_date(row, "user_creation_time"),
        "mfa_active": report_bool(row, "mfa_active"),
        "access_key_1_active": report_bool(row, "access_key_1_active"),
        "access_key_1_last_rotated": report_date(row, "access_key_1_last_rotated"),
        "access_key_2_active": report_bool(row, "access_key_2_active"),
        "access_key_2_last_rotated": report_date(row, "access_key_2_last_rotated"),
        "cert_1_active": report_bool(row, "cert_1_active"),
        "cert_2_active": report_bool(row, "cert_2_active"),
        "observed": {
            "credential_report_generated_at": report.generated_at,
            "password_last_used": report_date(row, "password_last_used"),
            "access_key_1_last_used_date": report_date(row, "access_key_1_last_used_date"),
            "access_key_1_last_used_region": report_text(row, "access_key_1_last_used_region"),
            "access_key_1_last_used_service": report_text(row, "access_key_1_last_used_service"),
            "access_key_2_last_used_date": report_date(row, "access_key_2_last_used_date"),
            "access_key_2_last_used_region": report_text(row, "access_key_2_last_used_region"),
            "access_key_2_last_used_service": report_text(row, "access_key_2_last_used_service"),
        },
    });
    Some(ResourceConfig {
        resource_type: IAM_ROOT_ACCOUNT,
        resource_id: account_id.to_owned(),
        region: GLOBAL_REGION.to_owned(),
        arn: report_text(row, "arn").as_str().map(str::to_owned),
        name: Some("<root_account>".to_owned()),
        config,
    })
}

/// The password policy; none set (NoSuchEntity) is an empty, successful collection.
async fn password_policy(iam: &aws_sdk_iam::Client, account_id: &str) -> Result<Vec<ResourceConfig>, AwsError> {
    let output = match iam.get_account_password_policy().send().await {
        Ok(output) => output,
        Err(error) => {
            let error = AwsError::from_sdk("iam:GetAccountPasswordPolicy", GLOBAL_REGION, error);
            return if is_no_such_entity(&error) { Ok(Vec::new()) } else { Err(error) };
        }
    };
    Ok(output.password_policy().map(|policy| password_policy_config(policy, account_id)).into_iter().collect())
}

fn password_policy_config(policy: &aws_sdk_iam::types::PasswordPolicy, account_id: &str) -> ResourceConfig {
    ResourceConfig {
        resource_type: IAM_PASSWORD_POLICY,
        resource_id: account_id.to_owned(),
        region: GLOBAL_REGION.to_owned(),
        arn: None,
        name: None,
        config: json!({
            "minimum_password_length": policy.minimum_password_length(),
            "require_symbols": policy.require_symbols(),
            "require_numbers": policy.require_numbers(),
            "require_uppercase_characters": policy.require_uppercase_characters(),
            "require_lowercase_characters": policy.require_lowercase_characters(),
            "allow_users_to_change_password": policy.allow_users_to_change_password(),
            "expire_passwords": policy.expire_passwords(),
            "max_password_age": policy.max_password_age(),
            "password_reuse_prevention": policy.password_reuse_prevention(),
            "hard_expiry": policy.hard_expiry(),
        }),
    }
}

/// Parses the report's CSV: a header line, then one line per user. The report never quotes
/// values, and none of its values contains a comma.
fn parse_credential_report(content: &str) -> HashMap<String, HashMap<String, String>> {
    let mut lines = content.lines().filter(|line| !line.trim().is_empty());
    let Some(header) = lines.next() else { return HashMap::new() };
    let columns: Vec<&str> = header.split(',').map(str::trim).collect();
    lines
        .filter_map(|line| {
            let row: HashMap<String, String> =
                columns.iter().zip(line.split(',')).map(|(c, v)| ((*c).to_owned(), v.trim().to_owned())).collect();
            let user = row.get("user")?.clone();
            Some((user, row))
        })
        .collect()
}

/// A report value that may be a placeholder (`N/A`, `no_information`, `not_supported`).
fn report_text(row: Option<&HashMap<String, String>>, column: &str) -> Value {
    match row.and_then(|r| r.get(column)).map(String::as_str) {
        None | Some("" | "N/A" | "no_information" | "not_supported") => Value::Null,
        Some(value) => Value::String(value.to_owned()),
    }
}

/// A report date in the same RFC 3339 form as the SDK's timestamps.
fn report_date(row: Option<&HashMap<String, String>>, column: &str) -> Value {
    match report_text(row, column) {
        Value::String(text) => match chrono::DateTime::parse_from_rfc3339(&text) {
            Ok(date) => {
                Value::String(date.with_timezone(&chrono::Utc).to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true))
            }
            Err(_) => Value::String(text),
        },
        other => other,
    }
}

fn report_bool(row: Option<&HashMap<String, String>>, column: &str) -> Option<bool> {
    match row.and_then(|r| r.get(column)).map(String::as_str) {
        Some("true") => Some(true),
        Some("false") => Some(false),
        _ => None,
    }
}

/// What only per-user calls tell: device serials, key ids, and (for a user newer than the
/// credential report) whether a console password is set.
#[derive(Debug, Default)]
struct UserCredentials {
    mfa_devices: Vec<String>,
    access_keys: Vec<Value>,
    login_profile: Option<bool>,
}

async fn users(
    iam: &aws_sdk_iam::Client,
    details: &[aws_sdk_iam::types::UserDetail],
    report: &CredentialReport,
) -> Result<Vec<ResourceConfig>, AwsError> {
    let names: Vec<(String, bool)> = details
        .iter()
        .filter_map(|u| u.user_name())
        .map(|name| (name.to_owned(), !report.rows.contains_key(name)))
        .collect();
    let credentials = all_user_credentials(iam, names).await?;
    Ok(details
        .iter()
        .filter_map(|user| {
            let name = user.user_name()?;
            // None: the user was deleted while we were reading; it is gone, so it is left out.
            let credentials = credentials.get(name)?.as_ref()?;
            user_config(user, credentials, report.rows.get(name), &report.generated_at)
        })
        .collect())
}

async fn all_user_credentials(
    iam: &aws_sdk_iam::Client,
    users: Vec<(String, bool)>,
) -> Result<HashMap<String, Option<UserCredentials>>, AwsError> {
    let mut pending = users.into_iter();
    let mut running = tokio::task::JoinSet::new();
    let mut done = HashMap::new();
    loop {
        while running.len() < USER_CALLS_IN_FLIGHT {
            let Some((name, with_login_profile)) = pending.next() else { break };
            let iam = iam.clone();
            running.spawn(async move {
                let result = user_credentials(&iam, &name, with_login_profile).await;
                (name, result)
            });
        }
        let Some(joined) = running.join_next().await else { break };
        let (name, result) = match joined {
            Ok(joined) => joined,
            Err(error) => match error.try_into_panic() {
                Ok(panic) => std::panic::resume_unwind(panic),
                Err(error) => {
                    return Err(AwsError {
                        operation: "iam:ListMFADevices",
                        region: GLOBAL_REGION.to_owned(),
                        kind: AwsErrorKind::Other,
                        code: None,
                        message: format!("the call was cancelled: {error}"),
                    });
                }
            },
        };
        // Returning drops the set, which aborts the calls still running.
        done.insert(name, result?);
    }
    Ok(done)
}

fn is_no_such_entity(error: &AwsError) -> bool {
    error.code.as_deref() == Some("NoSuchEntity")
}

/// `Ok(None)` when the user no longer exists.
async fn user_credentials(
    iam: &aws_sdk_iam::Client,
    user: &str,
    with_login_profile: bool,
) -> Result<Option<UserCredentials>, AwsError> {
    let mut credentials = UserCredentials::default();

    let mut devices = iam.list_mfa_devices().user_name(user).into_paginator().items().send();
    while let Some(device) = devices.next().await {
        match device.map_err(|e| AwsError::from_sdk("iam:ListMFADevices", GLOBAL_REGION, e)) {
            Ok(device) => credentials.mfa_devices.push(device.serial_number().to_owned()),
            Err(error) if is_no_such_entity(&error) => return Ok(None),
            Err(error) => return Err(error),
        }
    }
    credentials.mfa_devices.sort();

    let mut keys = iam.list_access_keys().user_name(user).into_paginator().items().send();
    while let Some(key) = keys.next().await {
        match key.map_err(|e| AwsError::from_sdk("iam:ListAccessKeys", GLOBAL_REGION, e)) {
            Ok(key) => credentials.access_keys.push(json!({
                "access_key_id": key.access_key_id(),
                "status": key.status().map(|s| s.as_str()),
                "create_date": time(key.create_date()),
            })),
            Err(error) if is_no_such_entity(&error) => return Ok(None),
            Err(error) => return Err(error),
        }
    }
    sort_values(&mut credentials.access_keys);

    if with_login_profile {
        credentials.login_profile = match iam.get_login_profile().user_name(user).send().await {
            Ok(_) => Some(true),
            Err(error) => {
                let error = AwsError::from_sdk("iam:GetLoginProfile", GLOBAL_REGION, error);
                // NoSuchEntity here means the user has no console password.
                if !is_no_such_entity(&error) {
                    return Err(error);
                }
                Some(false)
            }
        };
    }
    Ok(Some(credentials))
}

/// `mfa_active` comes from the devices listed now rather than the report, which can be four hours
/// old; the password flag comes from the report, or GetLoginProfile for a user it does not list.
fn user_config(
    user: &aws_sdk_iam::types::UserDetail,
    credentials: &UserCredentials,
    report_row: Option<&HashMap<String, String>>,
    report_generated_at: &Value,
) -> Option<ResourceConfig> {
    let name = user.user_name()?;
    let password_enabled = match report_row {
        Some(_) => report_bool(report_row, "password_enabled"),
        None => credentials.login_profile,
    };
    let config = json!({
        "user_name": name,
        "user_id": user.user_id(),
        "arn": user.arn(),
        "path": user.path(),
        "create_date": time(user.create_date()),
        "attached_policies": attached_policy_arns(user.attached_managed_policies()),
        "inline_policies": inline_policies(user.user_policy_list()),
        "groups": sorted_strings(user.group_list().iter().map(String::as_str)),
        "permissions_boundary": user.permissions_boundary().and_then(|b| b.permissions_boundary_arn()),
        "tags": iam_tags(user.tags()),
        "mfa_devices": credentials.mfa_devices,
        "mfa_active": !credentials.mfa_devices.is_empty(),
        "password_enabled": password_enabled,
        "access_keys": credentials.access_keys,
        "observed": {
            "credential_report_generated_at": report_generated_at,
            "password_last_used": report_date(report_row, "password_last_used"),
            "password_last_changed": report_date(report_row, "password_last_changed"),
            "access_key_1_last_used_date": report_date(report_row, "access_key_1_last_used_date"),
            "access_key_1_last_used_region": report_text(report_row, "access_key_1_last_used_region"),
            "access_key_1_last_used_service": report_text(report_row, "access_key_1_last_used_service"),
            "access_key_2_last_used_date": report_date(report_row, "access_key_2_last_used_date"),
            "access_key_2_last_used_region": report_text(report_row, "access_key_2_last_used_region"),
            "access_key_2_last_used_service": report_text(report_row, "access_key_2_last_used_service"),
        },
    });
    Some(ResourceConfig {
        resource_type: IAM_USER,
        resource_id: name.to_owned(),
        region: GLOBAL_REGION.to_owned(),
        arn: user.arn().map(str::to_owned),
        name: Some(name.to_owned()),
        config,
    })
}

fn attached_policy_arns(policies: &[aws_sdk_iam::types::AttachedPolicy]) -> Value {
    sorted_strings(policies.iter().filter_map(|p| p.policy_arn()))
}

fn inline_policies(policies: &[aws_sdk_iam::types::PolicyDetail]) -> Value {
    let mut map = Map::new();
    for policy in policies {
        if let Some(name) = policy.policy_name() {
            map.insert(name.to_owned(), policy_document(policy.policy_document()));
        }
    }
    Value::Object(map)
}

/// A policy document as JSON. IAM returns documents URL-encoded; one that does not parse is kept
/// as its decoded text rather than dropped.
fn policy_document(raw: Option<&str>) -> Value {
    let Some(raw) = raw else { return Value::Null };
    // Already plain JSON (an encoded document starts with `%7B`, never parses as JSON).
    if let Ok(document) = serde_json::from_str(raw) {
        return document;
    }
    let decoded = percent_decode(raw);
    serde_json::from_str(&decoded).unwrap_or_else(|error| {
        tracing::debug!(%error, "a policy document is not JSON; kept as text");
        Value::String(decoded)
    })
}

/// RFC 3986 percent-decoding (`+` stays `+`, as IAM encodes spaces as `%20`). A `%` not followed
/// by two hex digits is kept as it is.
fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && let (Some(high), Some(low)) =
                (bytes.get(i + 1).and_then(|b| hex_value(*b)), bytes.get(i + 2).and_then(|b| hex_value(*b)))
        {
            out.push(high << 4 | low);
            i += 3;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8(out).unwrap_or_else(|error| String::from_utf8_lossy(error.as_bytes()).into_owned())
}

fn hex_value(byte: u8) -> Option<u8> {
    match byte {
        b'0'..=b'9' => Some(byte - b'0'),
        b'a'..=b'f' => Some(byte - b'a' + 10),
        b'A'..=b'F' => Some(byte - b'A' + 10),
        _ => None,
    }
}

// ---------------------------------------------------------------------------------------------
// Shared helpers

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

#[cfg(test)]
mod tests {
    use aws_sdk_ec2::types::{
        GroupIdentifier, Instance, InstanceState, InstanceStateName, IpPermission, IpRange, Ipv6Range, PrefixListId,
        Reservation, SecurityGroup, UserIdGroupPair,
    };
    use aws_sdk_iam::types::{AttachedPolicy, ManagedPolicyDetail, PolicyDetail, PolicyVersion, UserDetail};

    use super::*;

    const ENCODED_POLICY: &str = "%7B%22Version%22%3A%222012-10-17%22%2C%22Statement%22%3A%5B%7B%22Effect%22%3A%22Allow%22%2C%22Action%22%3A%22s3%3AGetObject%22%2C%22Resource%22%3A%22arn%3Aaws%3As3%3A%3A%3Amy%20bucket%2F%2A%22%7D%5D%7D";

    fn ssh_and_all_permissions() -> Vec<IpPermission> {
        vec![
            IpPermission::builder()
                .ip_protocol("tcp")
                .from_port(22)
                .to_port(22)
                .ip_ranges(IpRange::builder().cidr_ip("0.0.0.0/0").description("ssh").build())
                .ip_ranges(IpRange::builder().cidr_ip("10.0.0.0/8").build())
                .ipv6_ranges(Ipv6Range::builder().cidr_ipv6("::/0").build())
                .build(),
            IpPermission::builder()
                .ip_protocol("-1")
                .user_id_group_pairs(UserIdGroupPair::builder().group_id("sg-2").user_id("111122223333").build())
                .prefix_list_ids(PrefixListId::builder().prefix_list_id("pl-1").build())
                .build(),
        ]
    }

    #[test]
    fn rules_are_flattened_one_per_source() {
        let rules = flatten_rules(&ssh_and_all_permissions());
        assert_eq!(rules.len(), 5, "{rules:#?}");
        assert!(rules.contains(&json!({
            "protocol": "tcp", "from_port": 22, "to_port": 22, "cidr_ipv4": "0.0.0.0/0", "description": "ssh"
        })));
        assert!(rules.contains(&json!({
            "protocol": "tcp", "from_port": 22, "to_port": 22, "cidr_ipv6": "::/0", "description": null
        })));
        assert!(rules.contains(&json!({
            "protocol": "all", "from_port": null, "to_port": null, "source_group_id": "sg-2",
            "source_group_owner_id": "111122223333", "vpc_peering_connection_id": null, "description": null
        })));
        assert!(rules.contains(&json!({
            "protocol": "all", "from_port": null, "to_port": null, "prefix_list_id": "pl-1", "description": null
        })));
    }

    #[test]
    fn rule_order_does_not_change_the_value() {
        let mut reversed = ssh_and_all_permissions();
        reversed.reverse();
        assert_eq!(flatten_rules(&ssh_and_all_permissions()), flatten_rules(&reversed));
    }

    #[test]
    fn a_permission_without_sources_is_kept() {
        let permission = IpPermission::builder().ip_protocol("udp").from_port(53).to_port(53).build();
        assert_eq!(
            flatten_rules(&[permission]),
            vec![json!({"protocol": "udp", "from_port": 53, "to_port": 53, "description": null})]
        );
    }

    #[test]
    fn security_group_config_builds_its_arn_and_tags() {
        let group = SecurityGroup::builder()
            .group_id("sg-1")
            .group_name("web")
            .owner_id("111122223333")
            .tags(aws_sdk_ec2::types::Tag::builder().key("env").value("prod").build())
            .set_ip_permissions(Some(ssh_and_all_permissions()))
            .build();
        let resource = security_group_config(&group, "eu-west-1").expect("a group with an id");
        assert_eq!(resource.resource_id, "sg-1");
        assert_eq!(resource.arn.as_deref(), Some("arn:aws:ec2:eu-west-1:111122223333:security-group/sg-1"));
        assert_eq!(resource.config["tags"], json!({"env": "prod"}));
        assert_eq!(resource.config["vpc_id"], Value::Null);
        assert_eq!(resource.config["egress"], json!([]));
        assert_eq!(resource.config["ingress"].as_array().map(Vec::len), Some(5));
    }

    #[test]
    fn instance_config_sorts_groups_and_puts_state_under_observed() {
        let instance = Instance::builder()
            .instance_id("i-1")
            .security_groups(GroupIdentifier::builder().group_id("sg-b").build())
            .security_groups(GroupIdentifier::builder().group_id("sg-a").build())
            .state(InstanceState::builder().name(InstanceStateName::Running).build())
            .launch_time(DateTime::from_secs(1_700_000_000))
            .build();
        let reservation = Reservation::builder().owner_id("111122223333").instances(instance).build();
        let resource = instance_config(&reservation.instances()[0], reservation.owner_id(), "cn-north-1")
            .expect("a running instance");
        assert_eq!(resource.config["security_group_ids"], json!(["sg-a", "sg-b"]));
        assert_eq!(resource.config["observed"]["state"], json!("running"));
        assert_eq!(resource.config["observed"]["launch_time"], json!("2023-11-14T22:13:20Z"));
        assert_eq!(resource.config["metadata_options"], Value::Null);
        assert_eq!(resource.arn.as_deref(), Some("arn:aws-cn:ec2:cn-north-1:111122223333:instance/i-1"));

        let terminated = Instance::builder()
            .instance_id("i-2")
            .state(InstanceState::builder().name(InstanceStateName::Terminated).build())
            .build();
        assert!(instance_config(&terminated, None, "us-east-1").is_none());
    }

    #[test]
    fn percent_decoding_handles_utf8_plus_and_stray_percent_signs() {
        assert_eq!(percent_decode("a%20b+c"), "a b+c");
        assert_eq!(percent_decode("caf%C3%A9"), "café");
        assert_eq!(percent_decode("100%"), "100%");
        assert_eq!(percent_decode("%zz%4"), "%zz%4");
        assert_eq!(percent_decode("%7b%7D"), "{}");
    }

    #[test]
    fn policy_documents_are_decoded_to_json() {
        let document = policy_document(Some(ENCODED_POLICY));
        assert_eq!(document["Statement"][0]["Resource"], json!("arn:aws:s3:::my bucket/*"));
        assert_eq!(policy_document(Some(r#"{"Version":"2012-10-17"}"#)), json!({"Version": "2012-10-17"}));
        assert_eq!(policy_document(Some("not%20json")), json!("not json"));
        assert_eq!(policy_document(None), Value::Null);
    }

    const REPORT: &str = "user,arn,user_creation_time,password_enabled,password_last_used,password_last_changed,password_next_rotation,mfa_active,access_key_1_active,access_key_1_last_rotated,access_key_1_last_used_date,access_key_1_last_used_region,access_key_1_last_used_service,access_key_2_active,access_key_2_last_rotated,access_key_2_last_used_date,access_key_2_last_used_region,access_key_2_last_used_service,cert_1_active,cert_1_last_rotated,cert_2_active,cert_2_last_rotated\r\n\
<root_account>,arn:aws:iam::111122223333:root,2020-01-01T00:00:00+00:00,not_supported,2024-05-01T10:00:00+00:00,not_supported,not_supported,true,false,N/A,N/A,N/A,N/A,false,N/A,N/A,N/A,N/A,false,N/A,false,N/A\r\n\
alice,arn:aws:iam::111122223333:user/alice,2021-02-03T04:05:06+00:00,true,no_information,2021-02-03T04:06:00+00:00,N/A,false,true,2021-02-03T04:05:30+00:00,2024-06-01T12:00:00+00:00,eu-west-1,s3,false,N/A,N/A,N/A,N/A,false,N/A,false,N/A\r\n";

    #[test]
    fn credential_report_rows_are_keyed_by_user_and_column() {
        let rows = parse_credential_report(REPORT);
        assert_eq!(rows.len(), 2);
        let alice = rows.get("alice");
        assert_eq!(report_bool(alice, "password_enabled"), Some(true));
        assert_eq!(report_text(alice, "access_key_1_last_used_service"), json!("s3"));
        assert_eq!(report_text(alice, "cert_2_last_rotated"), Value::Null);
        assert_eq!(report_date(alice, "access_key_1_last_used_date"), json!("2024-06-01T12:00:00Z"));
        assert_eq!(report_date(alice, "password_last_used"), Value::Null);
        assert_eq!(report_bool(rows.get("<root_account>"), "password_enabled"), None);
        assert_eq!(report_text(rows.get("bob"), "user"), Value::Null);
        assert!(parse_credential_report("").is_empty());
    }

    #[test]
    fn user_config_merges_details_report_and_credentials() {
        let user = UserDetail::builder()
            .user_name("alice")
            .arn("arn:aws:iam::111122223333:user/alice")
            .group_list("ops")
            .group_list("dev")
            .attached_managed_policies(AttachedPolicy::builder().policy_arn("arn:aws:iam::aws:policy/b").build())
            .attached_managed_policies(AttachedPolicy::builder().policy_arn("arn:aws:iam::aws:policy/a").build())
            .user_policy_list(PolicyDetail::builder().policy_name("read").policy_document(ENCODED_POLICY).build())
            .build();
        let credentials = UserCredentials {
            mfa_devices: vec!["arn:aws:iam::111122223333:mfa/alice".into()],
            access_keys: vec![json!({"access_key_id": "AKIA1", "status": "Active", "create_date": null})],
            login_profile: None,
        };
        let rows = parse_credential_report(REPORT);
        let resource =
            user_config(&user, &credentials, rows.get("alice"), &json!("2024-06-02T00:00:00Z")).expect("a named user");
        let config = &resource.config;
        assert_eq!(resource.resource_id, "alice");
        assert_eq!(config["groups"], json!(["dev", "ops"]));
        assert_eq!(config["attached_policies"], json!(["arn:aws:iam::aws:policy/a", "arn:aws:iam::aws:policy/b"]));
        assert_eq!(config["inline_policies"]["read"]["Version"], json!("2012-10-17"));
        assert_eq!(config["mfa_active"], json!(true));
        assert_eq!(config["password_enabled"], json!(true));
        assert_eq!(config["permissions_boundary"], Value::Null);
        assert_eq!(config["observed"]["access_key_1_last_used_region"], json!("eu-west-1"));

        // A user newer than the report takes its password flag from GetLoginProfile.
        let fresh = UserCredentials { login_profile: Some(false), ..Default::default() };
        let resource = user_config(&user, &fresh, None, &Value::Null).expect("a named user");
        assert_eq!(resource.config["password_enabled"], json!(false));
        assert_eq!(resource.config["mfa_active"], json!(false));
        assert_eq!(resource.config["observed"]["password_last_used"], Value::Null);
    }

    #[test]
    fn policy_config_takes_the_default_version_document() {
        let policy = ManagedPolicyDetail::builder()
            .policy_name("deploy")
            .arn("arn:aws:iam::111122223333:policy/deploy")
            .default_version_id("v2")
            .attachment_count(1)
            .is_attachable(true)
            .policy_version_list(PolicyVersion::builder().version_id("v1").document("%7B%7D").build())
            .policy_version_list(
                PolicyVersion::builder().version_id("v2").is_default_version(true).document(ENCODED_POLICY).build(),
            )
            .build();
        let resource = policy_config(&policy).expect("a policy with an ARN");
        assert_eq!(resource.resource_id, "arn:aws:iam::111122223333:policy/deploy");
        assert_eq!(resource.name.as_deref(), Some("deploy"));
        assert_eq!(resource.config["document"]["Statement"][0]["Action"], json!("s3:GetObject"));
        assert_eq!(resource.config["observed"]["update_date"], Value::Null);
    }

    #[test]
    fn trail_config_splits_status_into_config_and_observed() {
        use aws_sdk_cloudtrail::operation::get_event_selectors::GetEventSelectorsOutput;
        use aws_sdk_cloudtrail::operation::get_trail_status::GetTrailStatusOutput;
        use aws_sdk_cloudtrail::types::{AdvancedEventSelector, AdvancedFieldSelector, Trail};

        let trail = Trail::builder()
            .name("main")
            .trail_arn("arn:aws:cloudtrail:us-east-1:111122223333:trail/main")
            .home_region("us-east-1")
            .is_multi_region_trail(true)
            .build();
        let status = GetTrailStatusOutput::builder()
            .is_logging(true)
            .latest_delivery_time(DateTime::from_secs(1_700_000_000))
            .build();
        let selector = AdvancedEventSelector::builder()
            .name("management")
            .field_selectors(
                AdvancedFieldSelector::builder()
                    .field("eventCategory")
                    .equals("Management")
                    .build()
                    .expect("field is set"),
            )
            .build()
            .expect("field selectors are set");
        let selectors = event_selectors(&GetEventSelectorsOutput::builder().advanced_event_selectors(selector).build());
        let resource = trail_config(&trail, &status, selectors, "us-east-1").expect("a trail with an ARN");
        assert_eq!(resource.resource_id, "arn:aws:cloudtrail:us-east-1:111122223333:trail/main");
        assert_eq!(resource.config["is_logging"], json!(true));
        assert_eq!(resource.config["kms_key_id"], Value::Null);
        assert_eq!(resource.config["observed"]["latest_delivery_time"], json!("2023-11-14T22:13:20Z"));
        assert_eq!(
            resource.config["event_selectors"]["advanced_event_selectors"][0]["field_selectors"][0]["equals"],
            json!(["Management"])
        );
    }

    #[test]
    fn tags_become_an_object() {
        let tags = [
            aws_sdk_ec2::types::Tag::builder().key("b").value("2").build(),
            aws_sdk_ec2::types::Tag::builder().key("a").build(),
            aws_sdk_ec2::types::Tag::builder().value("no key").build(),
        ];
        assert_eq!(ec2_tags(&tags), json!({"a": "", "b": "2"}));
        let iam = [aws_sdk_iam::types::Tag::builder().key("team").value("sec").build().expect("key and value")];
        assert_eq!(iam_tags(&iam), json!({"team": "sec"}));
    }

    #[test]
    fn arns_use_the_region_partition() {
        assert_eq!(partition("us-gov-west-1"), "aws-us-gov");
        assert_eq!(partition("us-isob-east-1"), "aws-iso-b");
        assert_eq!(partition("eu-central-1"), "aws");
        assert_eq!(ec2_arn("us-east-1", None, "vpc", "vpc-1"), None);
    }
}
