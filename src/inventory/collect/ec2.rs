//! EC2: security groups, instances, VPCs and flow-log settings, one region at a time.

use super::*;

pub(super) async fn security_groups(ec2: &aws_sdk_ec2::Client, region: &str) -> Result<Vec<ResourceConfig>, AwsError> {
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
pub(super) fn flatten_rules(permissions: &[aws_sdk_ec2::types::IpPermission]) -> Vec<Value> {
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

pub(super) async fn instances(ec2: &aws_sdk_ec2::Client, region: &str) -> Result<Vec<ResourceConfig>, AwsError> {
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

pub(super) async fn vpcs(ec2: &aws_sdk_ec2::Client, region: &str) -> Result<Vec<ResourceConfig>, AwsError> {
    let mut found = Vec::new();
    let mut vpcs = ec2.describe_vpcs().max_results(EC2_PAGE_SIZE).into_paginator().items().send();
    while let Some(vpc) = vpcs.next().await {
        let vpc = vpc.map_err(|e| AwsError::from_sdk("ec2:DescribeVpcs", region, e))?;
        found.extend(vpc_config(&vpc, region));
    }
    Ok(found)
}

pub(super) fn vpc_config(vpc: &aws_sdk_ec2::types::Vpc, region: &str) -> Option<ResourceConfig> {
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

pub(super) async fn flow_logs(ec2: &aws_sdk_ec2::Client, region: &str) -> Result<Vec<ResourceConfig>, AwsError> {
    let mut found = Vec::new();
    let mut logs = ec2.describe_flow_logs().max_results(EC2_PAGE_SIZE).into_paginator().items().send();
    while let Some(log) = logs.next().await {
        let log = log.map_err(|e| AwsError::from_sdk("ec2:DescribeFlowLogs", region, e))?;
        found.extend(flow_log_config(&log, region));
    }
    Ok(found)
}

pub(super) fn flow_log_config(log: &aws_sdk_ec2::types::FlowLog, region: &str) -> Option<ResourceConfig> {
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
