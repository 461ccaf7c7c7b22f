//! IAM credentials (global): the credential report (root user), the password policy, and each
//! user's keys, MFA devices and policies.

use super::*;

/// The credential report: one row per user, keyed by user name, each row keyed by column.
pub(super) struct CredentialReport {
    pub(super) generated_at: Value,
    pub(super) rows: HashMap<String, HashMap<String, String>>,
}

pub(super) async fn credential_report(iam: &aws_sdk_iam::Client) -> Result<CredentialReport, AwsError> {
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
pub(super) fn root_account(report: &CredentialReport, account_id: &str) -> Option<ResourceConfig> {
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
pub(super) async fn password_policy(
    iam: &aws_sdk_iam::Client,
    account_id: &str,
) -> Result<Vec<ResourceConfig>, AwsError> {
    let output = match iam.get_account_password_policy().send().await {
        Ok(output) => output,
        Err(error) => {
            let error = AwsError::from_sdk("iam:GetAccountPasswordPolicy", GLOBAL_REGION, error);
            return if is_no_such_entity(&error) { Ok(Vec::new()) } else { Err(error) };
        }
    };
    Ok(output.password_policy().map(|policy| password_policy_config(policy, account_id)).into_iter().collect())
}

pub(super) fn password_policy_config(policy: &aws_sdk_iam::types::PasswordPolicy, account_id: &str) -> ResourceConfig {
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
pub(super) fn parse_credential_report(content: &str) -> HashMap<String, HashMap<String, String>> {
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
pub(super) fn report_text(row: Option<&HashMap<String, String>>, column: &str) -> Value {
    match row.and_then(|r| r.get(column)).map(String::as_str) {
        None | Some("" | "N/A" | "no_information" | "not_supported") => Value::Null,
        Some(value) => Value::String(value.to_owned()),
    }
}

/// A report date in the same RFC 3339 form as the SDK's timestamps.
pub(super) fn report_date(row: Option<&HashMap<String, String>>, column: &str) -> Value {
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

pub(super) fn report_bool(row: Option<&HashMap<String, String>>, column: &str) -> Option<bool> {
    match row.and_then(|r| r.get(column)).map(String::as_str) {
        Some("true") => Some(true),
        Some("false") => Some(false),
        _ => None,
    }
}

/// What only per-user calls tell: device serials, key ids, and (for a user newer than the
/// credential report) whether a console password is set.
#[derive(Debug, Default)]
pub(super) struct UserCredentials {
    pub(super) mfa_devices: Vec<String>,
    pub(super) access_keys: Vec<Value>,
    pub(super) login_profile: Option<bool>,
}

pub(super) async fn users(
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

pub(super) async fn all_user_credentials(
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

pub(super) fn is_no_such_entity(error: &AwsError) -> bool {
    error.code.as_deref() == Some("NoSuchEntity")
}

/// `Ok(None)` when the user no longer exists.
pub(super) async fn user_credentials(
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
pub(super) fn user_config(
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
