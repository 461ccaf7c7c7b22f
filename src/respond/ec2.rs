//! EC2 actions: revoke a security-group ingress rule, disassociate an instance profile, snapshot
//! and stop an instance; each with the read its dry run shows and the undo that restores the
//! recorded state.

use aws_sdk_ec2::types::{
    Filter, IamInstanceProfileSpecification, IpPermission, IpRange, Ipv6Range, PrefixListId, ResourceType, Tag,
    TagSpecification, UserIdGroupPair,
};
use serde_json::{Value, json};

use super::{ApiCall, CallLog, Observed, RespondError, is_protected};
use crate::aws::AwsError;

type Client = aws_sdk_ec2::Client;

fn not_found(error: &AwsError) -> bool {
    error.code.as_deref().is_some_and(|code| code.contains("NotFound") || code.contains("Malformed"))
}

/// How the refusal of an egress rule ends (revoke-principal-ingress tells it from other errors).
pub(super) const EGRESS: &str = " is an egress rule";

/// The rule as recorded: everything AuthorizeSecurityGroupIngress needs to re-create it.
pub(super) async fn observe_rule(ec2: &Client, region: &str, rule_id: &str) -> Result<Observed, RespondError> {
    let answer = ec2.describe_security_group_rules().security_group_rule_ids(rule_id).send().await;
    let rules = match answer {
        Ok(answer) => answer.security_group_rules().to_vec(),
        Err(error) => {
            let error = AwsError::from_sdk("ec2:DescribeSecurityGroupRules", region, error);
            if not_found(&error) { Vec::new() } else { return Err(error.into()) }
        }
    };
    let Some(rule) = rules.into_iter().find(|r| r.security_group_rule_id() == Some(rule_id)) else {
        return Ok(Observed { state: json!({"exists": false, "rule_id": rule_id}), protected: false, changes: false });
    };
    if rule.is_egress() == Some(true) {
        return Err(RespondError::Invalid { field: "target", reason: format!("{rule_id}{EGRESS}") });
    }
    let group_id = rule.group_id().unwrap_or_default().to_owned();
    let groups = ec2
        .describe_security_groups()
        .group_ids(&group_id)
        .send()
        .await
        .map_err(|e| AwsError::from_sdk("ec2:DescribeSecurityGroups", region, e))?;
    let group_tags = groups.security_groups().iter().flat_map(|g| g.tags()).filter_map(|t| t.key());
    let protected = is_protected(group_tags.chain(rule.tags().iter().filter_map(|t| t.key())));
    let referenced = rule.referenced_group_info();
    let state = json!({
        "exists": true,
        "rule_id": rule_id,
        "group_id": group_id,
        "ip_protocol": rule.ip_protocol(),
        "from_port": rule.from_port(),
        "to_port": rule.to_port(),
        "cidr_ipv4": rule.cidr_ipv4(),
        "cidr_ipv6": rule.cidr_ipv6(),
        "prefix_list_id": rule.prefix_list_id(),
        "referenced_group_id": referenced.and_then(|r| r.group_id()),
        "referenced_user_id": referenced.and_then(|r| r.user_id()),
        "description": rule.description(),
    });
    Ok(Observed { state, protected, changes: true })
}

/// Whether a security group is tagged `skywarden:protected` (checked again by the undo of a
/// revoke: the rule itself is gone).
pub(super) async fn group_protected(ec2: &Client, region: &str, group_id: &str) -> Result<bool, RespondError> {
    let groups = ec2
        .describe_security_groups()
        .group_ids(group_id)
        .send()
        .await
        .map_err(|e| AwsError::from_sdk("ec2:DescribeSecurityGroups", region, e))?;
    Ok(is_protected(groups.security_groups().iter().flat_map(|g| g.tags()).filter_map(|t| t.key())))
}

pub(super) fn revoke_call(state: &Value) -> ApiCall {
    ApiCall::new(
        "ec2:RevokeSecurityGroupIngress",
        json!({"GroupId": state["group_id"], "SecurityGroupRuleIds": [state["rule_id"]]}),
    )
}

pub(super) async fn revoke_rule(
    ec2: &Client,
    region: &str,
    before: &Value,
    log: &mut CallLog,
) -> Result<Value, RespondError> {
    let call = revoke_call(before);
    let answer = ec2
        .revoke_security_group_ingress()
        .group_id(str_of(before, "group_id"))
        .security_group_rule_ids(str_of(before, "rule_id"))
        .send()
        .await
        .map_err(|e| AwsError::from_sdk("ec2:RevokeSecurityGroupIngress", region, e));
    match answer {
        Ok(answer) => {
            log.ok(&call, json!({"Return": answer.r#return()}));
            Ok(json!({"exists": false, "rule_id": before["rule_id"]}))
        }
        Err(error) => {
            log.failed(&call, &error);
            Err(error.into())
        }
    }
}

fn str_of<'a>(state: &'a Value, key: &str) -> &'a str {
    state[key].as_str().unwrap_or_default()
}

/// The recorded rule as one IpPermission: one source (a CIDR, an IPv6 CIDR, a prefix list or a
/// group), as a rule id stands for.
fn permission(state: &Value) -> IpPermission {
    let text = |key: &str| state[key].as_str().map(str::to_owned);
    let port = |key: &str| state[key].as_i64().and_then(|p| i32::try_from(p).ok());
    let mut permission = IpPermission::builder()
        .set_ip_protocol(text("ip_protocol"))
        .set_from_port(port("from_port"))
        .set_to_port(port("to_port"));
    let description = text("description");
    if let Some(cidr) = text("cidr_ipv4") {
        permission = permission.ip_ranges(IpRange::builder().cidr_ip(cidr).set_description(description).build());
    } else if let Some(cidr) = text("cidr_ipv6") {
        permission = permission.ipv6_ranges(Ipv6Range::builder().cidr_ipv6(cidr).set_description(description).build());
    } else if let Some(list) = text("prefix_list_id") {
        permission = permission
            .prefix_list_ids(PrefixListId::builder().prefix_list_id(list).set_description(description).build());
    } else if let Some(group) = text("referenced_group_id") {
        let pair = UserIdGroupPair::builder().group_id(group).set_user_id(text("referenced_user_id"));
        permission = permission.user_id_group_pairs(pair.set_description(description).build());
    }
    permission.build()
}

/// Re-authorizes exactly the recorded rule (it gets a new rule id, which the undo records).
pub(super) async fn restore_rule(
    ec2: &Client,
    region: &str,
    before: &Value,
    log: &mut CallLog,
) -> Result<Value, RespondError> {
    if before["exists"] != json!(true) {
        return Ok(json!({"exists": false, "unchanged": true}));
    }
    let params = json!({"GroupId": before["group_id"], "IpPermissions": [before]});
    let call = ApiCall::new("ec2:AuthorizeSecurityGroupIngress", params);
    let answer = ec2
        .authorize_security_group_ingress()
        .group_id(str_of(before, "group_id"))
        .ip_permissions(permission(before))
        .send()
        .await
        .map_err(|e| AwsError::from_sdk("ec2:AuthorizeSecurityGroupIngress", region, e));
    match answer {
        Ok(answer) => {
            let ids: Vec<&str> =
                answer.security_group_rules().iter().filter_map(|r| r.security_group_rule_id()).collect();
            log.ok(&call, json!({"SecurityGroupRuleIds": ids}));
            Ok(json!({"exists": true, "rule_ids": ids}))
        }
        Err(error) => {
            log.failed(&call, &error);
            Err(error.into())
        }
    }
}

/// An instance's state, volumes, tags and instance-profile association.
pub(super) async fn observe_instance(
    ec2: &Client,
    region: &str,
    instance_id: &str,
) -> Result<(Value, bool), RespondError> {
    let answer = ec2.describe_instances().instance_ids(instance_id).send().await;
    let answer = match answer {
        Ok(answer) => answer,
        Err(error) => {
            let error = AwsError::from_sdk("ec2:DescribeInstances", region, error);
            if not_found(&error) {
                return Err(RespondError::NotFound(format!("no instance {instance_id} in {region}")));
            }
            return Err(error.into());
        }
    };
    let instance =
        answer.reservations().iter().flat_map(|r| r.instances()).find(|i| i.instance_id() == Some(instance_id));
    let Some(instance) = instance else {
        return Err(RespondError::NotFound(format!("no instance {instance_id} in {region}")));
    };
    let volumes: Vec<&str> =
        instance.block_device_mappings().iter().filter_map(|m| m.ebs().and_then(|e| e.volume_id())).collect();
    let state = json!({
        "instance_id": instance_id,
        "state": instance.state().and_then(|s| s.name()).map(|n| n.as_str()),
        "volumes": volumes,
    });
    Ok((state, is_protected(instance.tags().iter().filter_map(|t| t.key()))))
}

pub(super) async fn observe_stop(ec2: &Client, region: &str, instance_id: &str) -> Result<Observed, RespondError> {
    let (state, protected) = observe_instance(ec2, region, instance_id).await?;
    let changes = matches!(state["state"].as_str(), Some("running" | "pending"));
    Ok(Observed { state, protected, changes })
}

pub(super) fn stop_calls(state: &Value) -> Vec<ApiCall> {
    let mut calls: Vec<ApiCall> = state["volumes"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|volume| ApiCall::new("ec2:CreateSnapshot", json!({"VolumeId": volume})))
        .collect();
    calls.push(ApiCall::new("ec2:StopInstances", json!({"InstanceIds": [state["instance_id"]]})));
    calls.push(tag_stopped_call(&state["instance_id"], &json!("ACTION_ID")));
    calls
}

/// The tag a stop leaves on the instance: the responder role may start only instances that
/// carry it (the undo of a stop), and may create no other tag on an instance.
pub const STOPPED_TAG: &str = "skywarden:stopped-by-response";

fn tag_stopped_call(instance_id: &Value, action_id: &Value) -> ApiCall {
    ApiCall::new(
        "ec2:CreateTags",
        json!({"Resources": [instance_id], "Tags": [{"Key": STOPPED_TAG, "Value": action_id}]}),
    )
}

/// Tags the instance with [`STOPPED_TAG`] (the action's id) once it is stopping.
async fn tag_stopped(
    ec2: &Client,
    region: &str,
    instance_id: &str,
    action_id: &str,
    log: &mut CallLog,
) -> Result<(), RespondError> {
    let call = tag_stopped_call(&json!(instance_id), &json!(action_id));
    ec2.create_tags()
        .resources(instance_id)
        .tags(Tag::builder().key(STOPPED_TAG).value(action_id).build())
        .send()
        .await
        .map_err(|e| AwsError::from_sdk("ec2:CreateTags", region, e))
        .inspect_err(|error| log.failed(&call, error))?;
    log.ok(&call, json!({}));
    Ok(())
}

/// Snapshots each volume (tagged with the action's id, for the forensic record), stops the
/// instance, then tags it [`STOPPED_TAG`] (what lets the undo start it): only after the stop,
/// so no refused stop leaves a tag claiming one on a running instance. A failure half-way
/// leaves the snapshots taken so far (and the state, once stopped) in `after`.
pub(super) async fn stop_instance(
    ec2: &Client,
    region: &str,
    action_id: &str,
    before: &Value,
    log: &mut CallLog,
    after: &mut Value,
) -> Result<(), RespondError> {
    let instance_id = str_of(before, "instance_id");
    *after = json!({"snapshots": [], "state": before["state"]});
    for volume in before["volumes"].as_array().into_iter().flatten().filter_map(Value::as_str) {
        let call = ApiCall::new("ec2:CreateSnapshot", json!({"VolumeId": volume}));
        let tags = TagSpecification::builder()
            .resource_type(ResourceType::Snapshot)
            .tags(Tag::builder().key("skywarden:response-action").value(action_id).build())
            .build();
        let answer = ec2
            .create_snapshot()
            .volume_id(volume)
            .description(format!("Skywarden forensic snapshot of {instance_id} before stopping it"))
            .tag_specifications(tags)
            .send()
            .await
            .map_err(|e| AwsError::from_sdk("ec2:CreateSnapshot", region, e));
        let answer = answer.inspect_err(|error| log.failed(&call, error))?;
        log.ok(&call, json!({"SnapshotId": answer.snapshot_id()}));
        if let Some(snapshots) = after["snapshots"].as_array_mut() {
            snapshots.push(json!({"volume_id": volume, "snapshot_id": answer.snapshot_id()}));
        }
    }
    let call = ApiCall::new("ec2:StopInstances", json!({"InstanceIds": [instance_id]}));
    let answer = ec2
        .stop_instances()
        .instance_ids(instance_id)
        .send()
        .await
        .map_err(|e| AwsError::from_sdk("ec2:StopInstances", region, e))
        .inspect_err(|error| log.failed(&call, error))?;
    let now =
        answer.stopping_instances().first().and_then(|s| s.current_state()).and_then(|s| s.name()).map(|n| n.as_str());
    log.ok(&call, json!({"CurrentState": now}));
    after["state"] = json!(now);
    tag_stopped(ec2, region, instance_id, action_id, log).await?;
    after["tagged"] = json!(STOPPED_TAG);
    Ok(())
}

/// Starts the instance again if it was running when Skywarden stopped it.
pub(super) async fn restore_instance(
    ec2: &Client,
    region: &str,
    before: &Value,
    log: &mut CallLog,
) -> Result<Value, RespondError> {
    if !matches!(before["state"].as_str(), Some("running" | "pending")) {
        return Ok(json!({"unchanged": true}));
    }
    let instance_id = str_of(before, "instance_id");
    let call = ApiCall::new("ec2:StartInstances", json!({"InstanceIds": [instance_id]}));
    let answer = ec2
        .start_instances()
        .instance_ids(instance_id)
        .send()
        .await
        .map_err(|e| AwsError::from_sdk("ec2:StartInstances", region, e))
        .inspect_err(|error| log.failed(&call, error))?;
    let now =
        answer.starting_instances().first().and_then(|s| s.current_state()).and_then(|s| s.name()).map(|n| n.as_str());
    log.ok(&call, json!({"CurrentState": now}));
    Ok(json!({"state": now}))
}

/// The instance's current profile association, if any.
pub(super) async fn observe_profile(ec2: &Client, region: &str, instance_id: &str) -> Result<Observed, RespondError> {
    let (instance, protected) = observe_instance(ec2, region, instance_id).await?;
    let answer = ec2
        .describe_iam_instance_profile_associations()
        .filters(Filter::builder().name("instance-id").values(instance_id).build())
        .send()
        .await
        .map_err(|e| AwsError::from_sdk("ec2:DescribeIamInstanceProfileAssociations", region, e))?;
    let association = answer.iam_instance_profile_associations().iter().find(|a| {
        a.instance_id() == Some(instance_id)
            && a.state().is_some_and(|s| matches!(s.as_str(), "associated" | "associating"))
    });
    let state = json!({
        "instance_id": instance_id,
        "instance_state": instance["state"],
        "association_id": association.and_then(|a| a.association_id()),
        "profile_arn": association.and_then(|a| a.iam_instance_profile()).and_then(|p| p.arn()),
    });
    Ok(Observed { changes: association.is_some(), state, protected })
}

pub(super) fn disassociate_call(state: &Value) -> ApiCall {
    ApiCall::new("ec2:DisassociateIamInstanceProfile", json!({"AssociationId": state["association_id"]}))
}

pub(super) async fn disassociate_profile(
    ec2: &Client,
    region: &str,
    before: &Value,
    log: &mut CallLog,
) -> Result<Value, RespondError> {
    let call = disassociate_call(before);
    ec2.disassociate_iam_instance_profile()
        .association_id(str_of(before, "association_id"))
        .send()
        .await
        .map_err(|e| AwsError::from_sdk("ec2:DisassociateIamInstanceProfile", region, e))
        .inspect_err(|error| log.failed(&call, error))?;
    log.ok(&call, json!({"disassociated": before["association_id"]}));
    Ok(json!({"instance_id": before["instance_id"], "association_id": null, "profile_arn": null}))
}

/// Re-associates exactly the recorded profile (by ARN).
pub(super) async fn restore_profile(
    ec2: &Client,
    region: &str,
    before: &Value,
    log: &mut CallLog,
) -> Result<Value, RespondError> {
    let Some(arn) = before["profile_arn"].as_str() else { return Ok(json!({"unchanged": true})) };
    let instance_id = str_of(before, "instance_id");
    let call = ApiCall::new(
        "ec2:AssociateIamInstanceProfile",
        json!({"InstanceId": instance_id, "IamInstanceProfile": {"Arn": arn}}),
    );
    let answer = ec2
        .associate_iam_instance_profile()
        .instance_id(instance_id)
        .iam_instance_profile(IamInstanceProfileSpecification::builder().arn(arn).build())
        .send()
        .await
        .map_err(|e| AwsError::from_sdk("ec2:AssociateIamInstanceProfile", region, e))
        .inspect_err(|error| log.failed(&call, error))?;
    let association = answer.iam_instance_profile_association().and_then(|a| a.association_id());
    log.ok(&call, json!({"AssociationId": association}));
    Ok(json!({"instance_id": instance_id, "association_id": association, "profile_arn": arn}))
}
