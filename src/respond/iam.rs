//! IAM actions: deactivate an access key, delete a console password, quarantine a user or role
//! with a deny-all inline policy, detach a role policy; each with the read its dry run shows and
//! the undo that restores the recorded state.

use aws_sdk_iam::types::StatusType;
use serde_json::{Value, json};

use super::action::{Principal, QUARANTINE_POLICY, QUARANTINE_POLICY_NAME};
use super::{ApiCall, CallLog, Observed, RespondError, is_protected};
use crate::aws::{AwsError, GLOBAL_REGION};

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

/// IAM returns policy documents URL-encoded (RFC 3986); emulators sometimes do not.
fn policy_json(document: &str) -> Option<Value> {
    serde_json::from_str(document).ok().or_else(|| serde_json::from_str(&percent_decode(document)).ok())
}

fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = bytes
            .get(i + 1..i + 3)
            .and_then(|h| std::str::from_utf8(h).ok())
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match (bytes[i], hex) {
            (b'%', Some(byte)) => {
                out.push(byte);
                i += 3;
            }
            (b'+', _) => {
                out.push(b' ');
                i += 1;
            }
            (byte, _) => {
                out.push(byte);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The quarantine policy the principal holds now, if any (by its name).
async fn quarantine_document(iam: &Client, principal: &Principal) -> Result<Option<Value>, RespondError> {
    let answer = match principal {
        Principal::User(name) => iam
            .get_user_policy()
            .user_name(name)
            .policy_name(QUARANTINE_POLICY_NAME)
            .send()
            .await
            .map(|a| a.policy_document().to_owned())
            .map_err(|e| AwsError::from_sdk("iam:GetUserPolicy", GLOBAL_REGION, e)),
        Principal::Role(name) => iam
            .get_role_policy()
            .role_name(name)
            .policy_name(QUARANTINE_POLICY_NAME)
            .send()
            .await
            .map(|a| a.policy_document().to_owned())
            .map_err(|e| AwsError::from_sdk("iam:GetRolePolicy", GLOBAL_REGION, e)),
    };
    match answer {
        Ok(document) => Ok(Some(policy_json(&document).unwrap_or(Value::String(document)))),
        Err(error) if no_such_entity(&error) => Ok(None),
        Err(error) => Err(error.into()),
    }
}

fn ours() -> Value {
    serde_json::from_str(QUARANTINE_POLICY).unwrap_or_default()
}

pub(super) async fn observe_quarantine(iam: &Client, principal: &Principal) -> Result<Observed, RespondError> {
    let protected = principal_protected(iam, principal).await?;
    let existing = quarantine_document(iam, principal).await?;
    if existing.as_ref().is_some_and(|document| *document != ours()) {
        return Err(RespondError::Conflict(format!(
            "{} already has an inline policy named {QUARANTINE_POLICY_NAME} that is not Skywarden's; rename it first",
            principal.label()
        )));
    }
    let state =
        json!({"principal": principal.label(), "policy_name": QUARANTINE_POLICY_NAME, "attached": existing.is_some()});
    Ok(Observed { changes: existing.is_none(), state, protected })
}

pub(super) fn quarantine_call(principal: &Principal) -> ApiCall {
    match principal {
        Principal::User(name) => ApiCall::new(
            "iam:PutUserPolicy",
            json!({"UserName": name, "PolicyName": QUARANTINE_POLICY_NAME, "PolicyDocument": ours()}),
        ),
        Principal::Role(name) => ApiCall::new(
            "iam:PutRolePolicy",
            json!({"RoleName": name, "PolicyName": QUARANTINE_POLICY_NAME, "PolicyDocument": ours()}),
        ),
    }
}

pub(super) async fn quarantine(iam: &Client, principal: &Principal, log: &mut CallLog) -> Result<Value, RespondError> {
    let call = quarantine_call(principal);
    let answer = match principal {
        Principal::User(name) => iam
            .put_user_policy()
            .user_name(name)
            .policy_name(QUARANTINE_POLICY_NAME)
            .policy_document(QUARANTINE_POLICY)
            .send()
            .await
            .map(|_| ())
            .map_err(|e| AwsError::from_sdk("iam:PutUserPolicy", GLOBAL_REGION, e)),
        Principal::Role(name) => iam
            .put_role_policy()
            .role_name(name)
            .policy_name(QUARANTINE_POLICY_NAME)
            .policy_document(QUARANTINE_POLICY)
            .send()
            .await
            .map(|_| ())
            .map_err(|e| AwsError::from_sdk("iam:PutRolePolicy", GLOBAL_REGION, e)),
    };
    answer.inspect_err(|error| log.failed(&call, error))?;
    log.ok(&call, json!({}));
    Ok(json!({"principal": principal.label(), "policy_name": QUARANTINE_POLICY_NAME, "attached": true}))
}

/// Removes exactly the quarantine policy, and only if it is still Skywarden's document.
pub(super) async fn release(iam: &Client, principal: &Principal, log: &mut CallLog) -> Result<Value, RespondError> {
    if quarantine_document(iam, principal).await?.is_some_and(|document| document != ours()) {
        return Err(RespondError::Conflict(format!(
            "the {QUARANTINE_POLICY_NAME} policy of {} was changed since; it was left as it is",
            principal.label()
        )));
    }
    let (operation, params) = match principal {
        Principal::User(name) => {
            ("iam:DeleteUserPolicy", json!({"UserName": name, "PolicyName": QUARANTINE_POLICY_NAME}))
        }
        Principal::Role(name) => {
            ("iam:DeleteRolePolicy", json!({"RoleName": name, "PolicyName": QUARANTINE_POLICY_NAME}))
        }
    };
    let call = ApiCall::new(operation, params);
    let answer = match principal {
        Principal::User(name) => iam
            .delete_user_policy()
            .user_name(name)
            .policy_name(QUARANTINE_POLICY_NAME)
            .send()
            .await
            .map(|_| ())
            .map_err(|e| AwsError::from_sdk("iam:DeleteUserPolicy", GLOBAL_REGION, e)),
        Principal::Role(name) => iam
            .delete_role_policy()
            .role_name(name)
            .policy_name(QUARANTINE_POLICY_NAME)
            .send()
            .await
            .map(|_| ())
            .map_err(|e| AwsError::from_sdk("iam:DeleteRolePolicy", GLOBAL_REGION, e)),
    };
    answer.inspect_err(|error| log.failed(&call, error))?;
    log.ok(&call, json!({}));
    Ok(json!({"principal": principal.label(), "attached": false}))
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn url_encoded_policy_documents_are_read() {
        let encoded = "%7B%22Version%22%3A%222012-10-17%22%2C%22Statement%22%3A%5B%5D%7D";
        assert_eq!(policy_json(encoded).unwrap(), json!({"Version": "2012-10-17", "Statement": []}));
        assert_eq!(policy_json(QUARANTINE_POLICY).unwrap(), ours());
    }
}
