//! IAM actions: deactivate an access key, delete a console password, quarantine a user or role
//! by attaching AWS's managed AWSDenyAll policy, detach a role policy; each with the read its dry run shows and
//! the undo that restores the recorded state.

use aws_sdk_iam::types::StatusType;
use serde_json::{Value, json};

use super::action::Principal;
use super::{ApiCall, CallLog, Observed, RespondError, is_protected};
use crate::aws::{AwsError, AwsErrorKind, GLOBAL_REGION};

type Client = aws_sdk_iam::Client;

fn no_such_entity(error: &AwsError) -> bool {
    error.code.as_deref() == Some("NoSuchEntity")
}

fn missing(what: String) -> impl FnOnce(AwsError) -> RespondError {
    move |error| if no_such_entity(&error) { RespondError::NotFound(what) } else { RespondError::Aws(error) }
}

/// Whether the user or role carries the protected tag.
async fn principal_protected(iam: &Client, principal: &Principal) -> Result<bool, RespondError> {
    let label = principal.label();
    let keys: Vec<String> = match principal {
        Principal::User(name) => iam
            .list_user_tags()
            .user_name(name)
            .send()
            .await
            .map_err(|e| AwsError::from_sdk("iam:ListUserTags", GLOBAL_REGION, e))
            .map_err(missing(format!("no IAM {label}")))?
            .tags()
            .iter()
            .map(|t| t.key().to_owned())
            .collect(),
        Principal::Role(name) => iam
            .list_role_tags()
            .role_name(name)
            .send()
            .await
            .map_err(|e| AwsError::from_sdk("iam:ListRoleTags", GLOBAL_REGION, e))
            .map_err(missing(format!("no IAM {label}")))?
            .tags()
            .iter()
            .map(|t| t.key().to_owned())
            .collect(),
    };
    Ok(is_protected(keys.iter().map(String::as_str)))
}

pub(super) async fn observe_key(iam: &Client, user: &str, key_id: &str) -> Result<Observed, RespondError> {
    let protected = principal_protected(iam, &Principal::User(user.to_owned())).await?;
    let keys = iam
        .list_access_keys()
        .user_name(user)
        .send()
        .await
        .map_err(|e| AwsError::from_sdk("iam:ListAccessKeys", GLOBAL_REGION, e))?;
    let key = keys.access_key_metadata().iter().find(|k| k.access_key_id() == Some(key_id));
    let Some(key) = key else {
        return Err(RespondError::NotFound(format!("user {user} has no access key {key_id}")));
    };
    let status = key.status().map(|s| s.as_str().to_owned());
    let state = json!({"user_name": user, "access_key_id": key_id, "status": status});
    Ok(Observed { changes: status.as_deref() == Some("Active"), state, protected })
}

pub(super) fn key_call(state: &Value, status: &str) -> ApiCall {
    ApiCall::new(
        "iam:UpdateAccessKey",
        json!({"UserName": state["user_name"], "AccessKeyId": state["access_key_id"], "Status": status}),
    )
}

/// Sets the key's status (Inactive to contain; the recorded one to undo).
pub(super) async fn set_key_status(
    iam: &Client,
    state: &Value,
    status: &str,
    log: &mut CallLog,
) -> Result<Value, RespondError> {
    let call = key_call(state, status);
    iam.update_access_key()
        .user_name(state["user_name"].as_str().unwrap_or_default())
        .access_key_id(state["access_key_id"].as_str().unwrap_or_default())
        .status(StatusType::from(status))
        .send()
        .await
        .map_err(|e| AwsError::from_sdk("iam:UpdateAccessKey", GLOBAL_REGION, e))
        .inspect_err(|error| log.failed(&call, error))?;
    log.ok(&call, json!({}));
    Ok(json!({"user_name": state["user_name"], "access_key_id": state["access_key_id"], "status": status}))
}

pub(super) async fn observe_login_profile(iam: &Client, user: &str) -> Result<Observed, RespondError> {
    let protected = principal_protected(iam, &Principal::User(user.to_owned())).await?;
    let answer = iam.get_login_profile().user_name(user).send().await;
    let state = match answer {
        Ok(answer) => {
            let profile = answer.login_profile();
            json!({
                "user_name": user,
                "exists": profile.is_some(),
                "created": profile.map(|p| p.create_date().to_string()),
                "password_reset_required": profile.map(|p| p.password_reset_required()),
            })
        }
        Err(error) => {
            let error = AwsError::from_sdk("iam:GetLoginProfile", GLOBAL_REGION, error);
            if !no_such_entity(&error) {
                return Err(error.into());
            }
            json!({"user_name": user, "exists": false})
        }
    };
    Ok(Observed { changes: state["exists"] == json!(true), state, protected })
}

pub(super) fn delete_login_call(user: &str) -> ApiCall {
    ApiCall::new("iam:DeleteLoginProfile", json!({"UserName": user}))
}

pub(super) async fn delete_login_profile(iam: &Client, user: &str, log: &mut CallLog) -> Result<Value, RespondError> {
    let call = delete_login_call(user);
    iam.delete_login_profile()
        .user_name(user)
        .send()
        .await
        .map_err(|e| AwsError::from_sdk("iam:DeleteLoginProfile", GLOBAL_REGION, e))
        .inspect_err(|error| log.failed(&call, error))?;
    log.ok(&call, json!({}));
    Ok(json!({"user_name": user, "exists": false}))
}

/// The managed policies attached to the user or role now.
async fn attached_policies(iam: &Client, principal: &Principal) -> Result<Vec<String>, RespondError> {
    let arns = |policies: &[aws_sdk_iam::types::AttachedPolicy]| {
        policies.iter().filter_map(|p| p.policy_arn()).map(str::to_owned).collect::<Vec<_>>()
    };
    match principal {
        Principal::User(name) => iam
            .list_attached_user_policies()
            .user_name(name)
            .max_items(1000)
            .send()
            .await
            .map(|a| arns(a.attached_policies()))
            .map_err(|e| AwsError::from_sdk("iam:ListAttachedUserPolicies", GLOBAL_REGION, e))
            .map_err(missing(format!("no IAM {}", principal.label()))),
        Principal::Role(name) => iam
            .list_attached_role_policies()
            .role_name(name)
            .max_items(1000)
            .send()
            .await
            .map(|a| arns(a.attached_policies()))
            .map_err(|e| AwsError::from_sdk("iam:ListAttachedRolePolicies", GLOBAL_REGION, e))
            .map_err(missing(format!("no IAM {}", principal.label()))),
    }
}

fn quarantine_state(principal: &Principal, deny_all: &str, attached: bool) -> Value {
    json!({"principal": principal.label(), "policy_arn": deny_all, "attached": attached})
}

/// Whether AWS's managed deny-all policy (`deny_all`, in the account's partition) is attached.
pub(super) async fn observe_quarantine(
    iam: &Client,
    principal: &Principal,
    deny_all: &str,
) -> Result<Observed, RespondError> {
    let protected = principal_protected(iam, principal).await?;
    let policies = attached_policies(iam, principal).await?;
    let attached = policies.iter().any(|arn| arn == deny_all);
    let mut state = quarantine_state(principal, deny_all, attached);
    if !attached {
        let (quota, known) = attached_quota(iam, principal).await?;
        state["attached_count"] = json!(policies.len());
        state["attached_quota"] = json!(quota);
        if !known {
            state["attached_quota_unknown"] = json!(QUOTA_UNKNOWN);
        }
        if policies.len() >= quota {
            // AWS would refuse the attach (LimitExceeded): said in the dry run, refused before any call.
            state[WILL_FAIL] = json!(format!(
                "{} already has {} managed policies attached and the account's quota is {quota}: AWS refuses a \
                 further one (LimitExceeded), so AWSDenyAll cannot be attached. Detach a policy from it first \
                 (or contain it otherwise: deactivate its keys, revoke its sessions), or raise the IAM quota",
                principal.label(),
                policies.len()
            ));
        }
    }
    Ok(Observed { changes: !attached, state, protected })
}

/// The member of a dry run's state that says why apply would fail, before any call.
pub(super) const WILL_FAIL: &str = "will_fail";

/// AWS's default quota of managed policies per user or role, when the account summary has none.
const DEFAULT_ATTACHED_QUOTA: usize = 10;

/// Said in the dry run when the responder role may not read the account summary.
const QUOTA_UNKNOWN: &str = "the responder role may not call iam:GetAccountSummary (deployed from a template before \
     it was added): AWS's default quota of 10 is assumed; redeploy the role to read the account's own quota";

/// The account's quota of managed policies attached to one user or role (10 unless raised), and
/// whether it was read: a role deployed before iam:GetAccountSummary was added assumes the default.
async fn attached_quota(iam: &Client, principal: &Principal) -> Result<(usize, bool), RespondError> {
    let answer = iam.get_account_summary().send().await;
    let answer = match answer {
        Ok(answer) => answer,
        Err(error) => {
            let error = AwsError::from_sdk("iam:GetAccountSummary", GLOBAL_REGION, error);
            if error.kind != AwsErrorKind::AccessDenied {
                return Err(error.into());
            }
            tracing::warn!(error = %error, "quarantine: the account's policy quota is unknown; the default 10 is assumed");
            return Ok((DEFAULT_ATTACHED_QUOTA, false));
        }
    };
    let key = match principal {
        Principal::User(_) => aws_sdk_iam::types::SummaryKeyType::AttachedPoliciesPerUserQuota,
        Principal::Role(_) => aws_sdk_iam::types::SummaryKeyType::AttachedPoliciesPerRoleQuota,
    };
    let quota = answer.summary_map().and_then(|map| map.get(&key)).and_then(|q| usize::try_from(*q).ok());
    Ok((quota.unwrap_or(DEFAULT_ATTACHED_QUOTA), true))
}

fn principal_policy_call(operation: &'static str, principal: &Principal, deny_all: &str) -> ApiCall {
    match principal {
        Principal::User(name) => ApiCall::new(operation, json!({"UserName": name, "PolicyArn": deny_all})),
        Principal::Role(name) => ApiCall::new(operation, json!({"RoleName": name, "PolicyArn": deny_all})),
    }
}

pub(super) fn quarantine_call(principal: &Principal, deny_all: &str) -> ApiCall {
    let operation = match principal {
        Principal::User(_) => "iam:AttachUserPolicy",
        Principal::Role(_) => "iam:AttachRolePolicy",
    };
    principal_policy_call(operation, principal, deny_all)
}

/// Attaches AWSDenyAll: an explicit deny of everything, which wins over every allow at once,
/// also for sessions already open. The responder role may attach no other policy.
pub(super) async fn quarantine(
    iam: &Client,
    principal: &Principal,
    deny_all: &str,
    log: &mut CallLog,
) -> Result<Value, RespondError> {
    let call = quarantine_call(principal, deny_all);
    let answer = match principal {
        Principal::User(name) => iam
            .attach_user_policy()
            .user_name(name)
            .policy_arn(deny_all)
            .send()
            .await
            .map(|_| ())
            .map_err(|e| AwsError::from_sdk("iam:AttachUserPolicy", GLOBAL_REGION, e)),
        Principal::Role(name) => iam
            .attach_role_policy()
            .role_name(name)
            .policy_arn(deny_all)
            .send()
            .await
            .map(|_| ())
            .map_err(|e| AwsError::from_sdk("iam:AttachRolePolicy", GLOBAL_REGION, e)),
    };
    answer.inspect_err(|error| log.failed(&call, error))?;
    log.ok(&call, json!({}));
    Ok(quarantine_state(principal, deny_all, true))
}

/// Detaches exactly the AWSDenyAll policy the quarantine attached (the caller checked it was
/// not attached before).
pub(super) async fn release(
    iam: &Client,
    principal: &Principal,
    deny_all: &str,
    log: &mut CallLog,
) -> Result<Value, RespondError> {
    if !attached_policies(iam, principal).await?.iter().any(|arn| arn == deny_all) {
        return Ok(json!({"principal": principal.label(), "attached": false, "unchanged": true}));
    }
    let operation = match principal {
        Principal::User(_) => "iam:DetachUserPolicy",
        Principal::Role(_) => "iam:DetachRolePolicy",
    };
    let call = principal_policy_call(operation, principal, deny_all);
    let answer = match principal {
        Principal::User(name) => iam
            .detach_user_policy()
            .user_name(name)
            .policy_arn(deny_all)
            .send()
            .await
            .map(|_| ())
            .map_err(|e| AwsError::from_sdk("iam:DetachUserPolicy", GLOBAL_REGION, e)),
        Principal::Role(name) => iam
            .detach_role_policy()
            .role_name(name)
            .policy_arn(deny_all)
            .send()
            .await
            .map(|_| ())
            .map_err(|e| AwsError::from_sdk("iam:DetachRolePolicy", GLOBAL_REGION, e)),
    };
    answer.inspect_err(|error| log.failed(&call, error))?;
    log.ok(&call, json!({}));
    Ok(quarantine_state(principal, deny_all, false))
}

pub(super) async fn observe_role_policy(iam: &Client, role: &str, policy_arn: &str) -> Result<Observed, RespondError> {
    let protected = principal_protected(iam, &Principal::Role(role.to_owned())).await?;
    let answer = iam
        .list_attached_role_policies()
        .role_name(role)
        .max_items(1000)
        .send()
        .await
        .map_err(|e| AwsError::from_sdk("iam:ListAttachedRolePolicies", GLOBAL_REGION, e))?;
    let attached = answer.attached_policies().iter().any(|p| p.policy_arn() == Some(policy_arn));
    let state = json!({"role_name": role, "policy_arn": policy_arn, "attached": attached});
    Ok(Observed { changes: attached, state, protected })
}

pub(super) fn role_policy_call(operation: &'static str, role: &str, policy_arn: &str) -> ApiCall {
    ApiCall::new(operation, json!({"RoleName": role, "PolicyArn": policy_arn}))
}

pub(super) async fn detach(
    iam: &Client,
    role: &str,
    policy_arn: &str,
    log: &mut CallLog,
) -> Result<Value, RespondError> {
    let call = role_policy_call("iam:DetachRolePolicy", role, policy_arn);
    iam.detach_role_policy()
        .role_name(role)
        .policy_arn(policy_arn)
        .send()
        .await
        .map_err(|e| AwsError::from_sdk("iam:DetachRolePolicy", GLOBAL_REGION, e))
        .inspect_err(|error| log.failed(&call, error))?;
    log.ok(&call, json!({}));
    Ok(json!({"role_name": role, "policy_arn": policy_arn, "attached": false}))
}

/// Re-attaches the policy Skywarden detached (only if it was attached before).
pub(super) async fn reattach(iam: &Client, before: &Value, log: &mut CallLog) -> Result<Value, RespondError> {
    if before["attached"] != json!(true) {
        return Ok(json!({"unchanged": true}));
    }
    let (role, policy_arn) =
        (before["role_name"].as_str().unwrap_or_default(), before["policy_arn"].as_str().unwrap_or_default());
    let call = role_policy_call("iam:AttachRolePolicy", role, policy_arn);
    iam.attach_role_policy()
        .role_name(role)
        .policy_arn(policy_arn)
        .send()
        .await
        .map_err(|e| AwsError::from_sdk("iam:AttachRolePolicy", GLOBAL_REGION, e))
        .inspect_err(|error| log.failed(&call, error))?;
    log.ok(&call, json!({}));
    Ok(json!({"role_name": role, "policy_arn": policy_arn, "attached": true}))
}
