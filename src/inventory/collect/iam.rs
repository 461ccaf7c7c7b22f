//! IAM (global): groups, roles, instance profiles and managed policies, and the policy
//! documents they hold.

use super::*;

#[derive(Default)]
pub(super) struct AuthorizationDetails {
    pub(super) users: Vec<aws_sdk_iam::types::UserDetail>,
    pub(super) groups: Vec<aws_sdk_iam::types::GroupDetail>,
    pub(super) roles: Vec<aws_sdk_iam::types::RoleDetail>,
    pub(super) policies: Vec<aws_sdk_iam::types::ManagedPolicyDetail>,
}

pub(super) async fn authorization_details(iam: &aws_sdk_iam::Client) -> Result<AuthorizationDetails, AwsError> {
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
pub(super) struct RoleSettings {
    pub(super) max_session_duration: Option<i32>,
    pub(super) description: Option<String>,
}

pub(super) async fn role_settings(iam: &aws_sdk_iam::Client) -> Result<HashMap<String, RoleSettings>, AwsError> {
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
pub(super) async fn instance_profiles(iam: &aws_sdk_iam::Client) -> Result<Vec<ResourceConfig>, AwsError> {
    let mut found = Vec::new();
    let mut profiles = iam.list_instance_profiles().into_paginator().items().send();
    while let Some(profile) = profiles.next().await {
        let profile = profile.map_err(|e| AwsError::from_sdk("iam:ListInstanceProfiles", GLOBAL_REGION, e))?;
        found.push(instance_profile_config(&profile));
    }
    Ok(found)
}

pub(super) fn instance_profile_config(profile: &aws_sdk_iam::types::InstanceProfile) -> ResourceConfig {
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

pub(super) fn group_config(group: &aws_sdk_iam::types::GroupDetail) -> Option<ResourceConfig> {
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

pub(super) fn role_config(
    role: &aws_sdk_iam::types::RoleDetail,
    settings: Option<&RoleSettings>,
) -> Option<ResourceConfig> {
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

pub(super) fn policy_config(policy: &aws_sdk_iam::types::ManagedPolicyDetail) -> Option<ResourceConfig> {
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

pub(super) fn attached_policy_arns(policies: &[aws_sdk_iam::types::AttachedPolicy]) -> Value {
    sorted_strings(policies.iter().filter_map(|p| p.policy_arn()))
}

pub(super) fn inline_policies(policies: &[aws_sdk_iam::types::PolicyDetail]) -> Value {
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
pub(super) fn policy_document(raw: Option<&str>) -> Value {
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
pub(super) fn percent_decode(text: &str) -> String {
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

pub(super) fn hex_value(byte: u8) -> Option<u8> {
    match byte {
        b'0'..=b'9' => Some(byte - b'0'),
        b'a'..=b'f' => Some(byte - b'a' + 10),
        b'A'..=b'F' => Some(byte - b'A' + 10),
        _ => None,
    }
}

// ---------------------------------------------------------------------------------------------
// Shared helpers
