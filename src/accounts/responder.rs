//! The optional responder role of an account: a second role, with its own external ID, that
//! may make the few changes `respond` contains an intrusion with. Without one, Skywarden never
//! writes to the account.

use std::fmt;

use sqlx::PgPool;

use super::{AccountError, generate_external_id};
use crate::aws::{AssumeRoleTarget, RoleArn};

/// The responder role recorded for an account.
#[derive(Clone)]
pub struct Responder {
    pub account_id: String,
    pub role_arn: RoleArn,
    pub external_id: String,
    /// The account's endpoint override (an emulator, a VPC endpoint), as for its read-only role.
    pub endpoint_url: Option<String>,
    /// Deployed with AllowGrantingUndo=true: the undos that grant access may run.
    pub granting_undo: bool,
}

impl fmt::Debug for Responder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Responder")
            .field("account_id", &self.account_id)
            .field("role_arn", &self.role_arn.as_str())
            .field("granting_undo", &self.granting_undo)
            .finish_non_exhaustive()
    }
}

impl Responder {
    pub fn assume_target(&self) -> AssumeRoleTarget<'_> {
        AssumeRoleTarget {
            role_arn: &self.role_arn,
            external_id: &self.external_id,
            endpoint_url: self.endpoint_url.as_deref(),
        }
    }
}

/// The command that enables response for an account, as "not enabled" messages show it.
pub fn enable_command(account_id: &str) -> String {
    format!(
        "deploy deploy/skywarden-responder-role.yaml in account {account_id}, then run \
         `skywarden accounts responder set {account_id} --role-arn arn:aws:iam::{account_id}:role/SkywardenResponder`"
    )
}

/// Records the responder role of an onboarded account. The role must be in that account. With
/// no external ID given, a fresh one is generated; the one stored is returned (shown once).
pub async fn set(
    pool: &PgPool,
    account_id: &str,
    role_arn: &str,
    external_id: Option<&str>,
) -> Result<String, AccountError> {
    let role_arn = RoleArn::parse(role_arn)?;
    if role_arn.account().to_string() != account_id {
        return Err(AccountError::Invalid {
            field: "role_arn",
            reason: format!("the responder role {role_arn} is not in account {account_id}"),
        });
    }
    let external_id = match external_id {
        Some(id) => validate_external_id(id)?,
        None => generate_external_id()?,
    };
    let updated = sqlx::query!(
        "UPDATE accounts SET responder_role_arn = $2, responder_external_id = $3, responder_set_at = now()
         WHERE account_id = $1 AND role_arn IS NOT NULL AND kind = 'account'",
        account_id,
        role_arn.as_str(),
        external_id
    )
    .execute(pool)
    .await?
    .rows_affected();
    if updated == 0 {
        return Err(AccountError::NotOnboarded(account_id.to_owned()));
    }
    tracing::info!(account_id, role_arn = %role_arn, "responder role recorded");
    Ok(external_id)
}

/// Records whether the responder role was deployed with AllowGrantingUndo=true (the undos
/// that grant access); false for an account without a responder role.
pub async fn set_granting_undo(pool: &PgPool, account_id: &str, allowed: bool) -> Result<bool, AccountError> {
    let updated = sqlx::query!(
        "UPDATE accounts SET responder_granting_undo = $2 WHERE account_id = $1 AND responder_role_arn IS NOT NULL",
        account_id,
        allowed
    )
    .execute(pool)
    .await?
    .rows_affected();
    Ok(updated > 0)
}

/// Forgets the responder role: no action runs on the account any more.
pub async fn clear(pool: &PgPool, account_id: &str) -> Result<bool, AccountError> {
    let updated = sqlx::query!(
        "UPDATE accounts SET responder_role_arn = NULL, responder_external_id = NULL, responder_set_at = NULL,
                responder_granting_undo = false
         WHERE account_id = $1 AND responder_role_arn IS NOT NULL",
        account_id
    )
    .execute(pool)
    .await?
    .rows_affected();
    Ok(updated > 0)
}

/// The account's responder role, if one is recorded (none for an account not onboarded).
pub async fn load(pool: &PgPool, account_id: &str) -> Result<Option<Responder>, AccountError> {
    let row = sqlx::query!(
        "SELECT responder_role_arn, responder_external_id, endpoint_url, responder_granting_undo FROM accounts
         WHERE account_id = $1 AND role_arn IS NOT NULL",
        account_id
    )
    .fetch_optional(pool)
    .await?;
    let Some(row) = row else { return Ok(None) };
    let (Some(role_arn), Some(external_id)) = (row.responder_role_arn, row.responder_external_id) else {
        return Ok(None);
    };
    Ok(Some(Responder {
        account_id: account_id.to_owned(),
        role_arn: RoleArn::parse(&role_arn)?,
        external_id,
        endpoint_url: row.endpoint_url,
        granting_undo: row.responder_granting_undo,
    }))
}

/// An external ID as STS takes it: 2 to 1224 characters of `[\w+=,.@:/-]`; Skywarden asks
/// for 16 at least, so it cannot be guessed.
fn validate_external_id(id: &str) -> Result<String, AccountError> {
    let ok =
        (16..=1224).contains(&id.len()) && id.bytes().all(|b| b.is_ascii_alphanumeric() || b"+=,.@:/_-".contains(&b));
    if ok {
        Ok(id.to_owned())
    } else {
        Err(AccountError::Invalid {
            field: "external_id",
            reason: "an external ID is 16 to 1224 characters of letters, digits and +=,.@:/_-".into(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn external_ids_are_long_enough_and_of_stss_alphabet() {
        assert!(validate_external_id("short").is_err());
        assert!(validate_external_id("sixteen-chars-ok").is_ok());
        assert!(validate_external_id("sixteen chars no").is_err());
        assert!(enable_command("111122223333").contains("accounts responder set 111122223333"));
    }
}
