//! AWS Organizations: an organization is onboarded through a role in its management (or
//! delegated-admin) account, which may list its accounts. Its `organization` job, daily, lists
//! them (`organizations:ListAccounts`) and onboards each ACTIVE member with the member role
//! (`arn:<partition>:iam::<member>:role/<member role name>`) and the organization's one external
//! ID; members suspended, closed or gone from the organization stop polling (their jobs are
//! disabled with their checkpoints, their data stays), and resume if they come back.
//!
//! The management account itself is not onboarded: service-managed StackSets do not deploy to
//! it (onboard it with `accounts add` if it runs workloads). An account onboarded on its own
//! before is left as it is.

use std::collections::HashMap;

use serde::Serialize;
use sqlx::{PgConnection, PgPool};

use super::{
    Account, AccountError, AccountKind, NewAccount, PollIntervals, generate_external_id, load, load_in, schedule,
    validate_new,
};
use crate::aws::{AccountSession, AwsError, AwsSettings, RoleArn};

/// The entry id of an organization: this prefix and the account its role is in.
pub const ENTRY_PREFIX: &str = "organization:";
/// The status of a member that is polled.
pub const ACTIVE: &str = "ACTIVE";
/// The status recorded for a member no longer listed by its organization.
pub const REMOVED: &str = "REMOVED";

/// What a user gives to onboard an organization.
#[derive(Clone, Debug, Default)]
pub struct NewOrganization {
    /// The role in the management or delegated-admin account that may list the accounts.
    pub role_arn: String,
    /// The role every member has (deployed by the StackSet), e.g. `SkywardenReadOnly`.
    pub member_role_name: String,
    pub name: Option<String>,
    pub endpoint_url: Option<String>,
}

/// An account as ListAccounts gives it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Member {
    pub account_id: String,
    pub name: Option<String>,
    /// ACTIVE, SUSPENDED, PENDING_CLOSURE, CLOSED, PENDING_ACTIVATION (its `State`, else its
    /// `Status`).
    pub status: String,
}

/// The organization as its management account sees it.
#[derive(Clone, Debug, Default)]
pub struct Listing {
    pub organization_id: Option<String>,
    pub management_account_id: Option<String>,
    pub accounts: Vec<Member>,
}

/// What a member listing changed.
#[derive(Clone, Debug, Default, Serialize, PartialEq, utoipa::ToSchema)]
pub struct MemberChange {
    pub organization_id: Option<String>,
    pub management_account_id: Option<String>,
    /// Active members polled (onboarded by the organization).
    pub active: Vec<String>,
    /// Members onboarded by this listing.
    pub onboarded: Vec<String>,
    /// Members active again, polled again.
    pub resumed: Vec<String>,
    /// Members suspended, closed or gone: no longer polled (their data stays).
    pub stopped: Vec<String>,
    /// Members onboarded on their own before (`accounts add`), left as they are.
    pub separate: Vec<String>,
    /// Members a user removed (`accounts remove`): not onboarded again (`accounts add` does).
    pub excluded: Vec<String>,
}

/// An IAM role name (a path is not part of the name the StackSet gives).
fn validate_role_name(name: &str) -> Result<(), AccountError> {
    let ok =
        (1..=64).contains(&name.len()) && name.bytes().all(|b| b.is_ascii_alphanumeric() || b"+=,.@_-".contains(&b));
    if ok {
        Ok(())
    } else {
        Err(AccountError::Invalid { field: "member_role_name", reason: format!("`{name}` is not an IAM role name") })
    }
}

/// Stores a new organization with a fresh external ID (the same for its role and every member
/// role) and creates its `organization` job, due at once. Members are onboarded by [`sync`] or
/// by that job, once the roles exist.
pub async fn onboard(pool: &PgPool, new: &NewOrganization, intervals: &PollIntervals) -> Result<Account, AccountError> {
    let as_account = NewAccount {
        role_arn: new.role_arn.clone(),
        name: new.name.clone(),
        endpoint_url: new.endpoint_url.clone(),
        ..Default::default()
    };
    let role_arn = validate_new(&as_account)?;
    validate_role_name(&new.member_role_name)?;
    let entry = format!("{ENTRY_PREFIX}{}", role_arn.account());
    let external_id = generate_external_id()?;
    let mut tx = crate::db::begin(pool).await?;
    let existing = sqlx::query_scalar!("SELECT role_arn FROM accounts WHERE account_id = $1 FOR UPDATE", entry)
        .fetch_optional(&mut *tx)
        .await?;
    if let Some(Some(existing)) = existing {
        return Err(AccountError::AlreadyOnboarded(entry, existing));
    }
    sqlx::query!(
        "INSERT INTO accounts (account_id, name, role_arn, external_id, endpoint_url, poll_intervals, enabled, kind,
                               member_role_name)
         VALUES ($1, $2, $3, $4, $5, $6, true, 'organization', $7)
         ON CONFLICT (account_id) DO UPDATE SET name = COALESCE(EXCLUDED.name, accounts.name),
             role_arn = EXCLUDED.role_arn, external_id = EXCLUDED.external_id, endpoint_url = EXCLUDED.endpoint_url,
             poll_intervals = EXCLUDED.poll_intervals, enabled = true, kind = 'organization',
             member_role_name = EXCLUDED.member_role_name, verified_at = NULL, verify_error = NULL",
        entry,
        new.name,
        role_arn.as_str(),
        external_id,
        new.endpoint_url,
        intervals.to_stored(),
        new.member_role_name
    )
    .execute(&mut *tx)
    .await?;
    let organization = load_in(&mut tx, &entry).await?;
    schedule::sync_jobs(&mut tx, &entry, &organization.job_specs()).await?;
    tx.commit().await?;
    tracing::info!(organization = entry, role_arn = %role_arn, "organization onboarded");
    Ok(organization)
}

/// The organization's id, management account and every account, all pages of ListAccounts.
pub async fn list(session: &AccountSession, region: &str) -> Result<Listing, AwsError> {
    let client = session.organizations();
    let described = client
        .describe_organization()
        .send()
        .await
        .map_err(|e| AwsError::from_sdk("organizations:DescribeOrganization", region, e))?;
    let organization = described.organization();
    let mut listing = Listing {
        organization_id: organization.and_then(|o| o.id()).map(str::to_owned),
        management_account_id: organization.and_then(|o| o.master_account_id()).map(str::to_owned),
        accounts: Vec::new(),
    };
    let mut token = None;
    loop {
        let page = client
            .list_accounts()
            .set_next_token(token)
            .send()
            .await
            .map_err(|e| AwsError::from_sdk("organizations:ListAccounts", region, e))?;
        for account in page.accounts() {
            let Some(id) = account.id() else { continue };
            // `State` supersedes `Status` (which cannot say CLOSED); older answers have only `Status`.
            let status = account
                .state()
                .map(|s| s.as_str().to_owned())
                .or_else(|| account.status().map(|s| s.as_str().to_owned()))
                .unwrap_or_default();
            listing.accounts.push(Member {
                account_id: id.to_owned(),
                name: account.name().map(str::to_owned),
                status,
            });
        }
        token = page.next_token().map(str::to_owned);
        if token.is_none() {
            return Ok(listing);
        }
    }
}

/// Lists the organization with its role and records the members (see [`record`]).
pub async fn sync(
    pool: &PgPool,
    base: &aws_types::SdkConfig,
    settings: &AwsSettings,
    entry: &str,
) -> Result<MemberChange, AccountError> {
    let organization = load(pool, entry).await?;
    if organization.kind != AccountKind::Organization {
        return Err(AccountError::Invalid { field: "account", reason: format!("{entry} is not an organization") });
    }
    let session = AccountSession::assume(base, settings, &organization.assume_target())
        .await
        .map_err(AccountError::AssumeRole)?;
    let listing = list(&session, settings.home_region()).await.map_err(AccountError::Organizations)?;
    let mut tx = crate::db::begin(pool).await?;
    let change = record(&mut tx, entry, &listing).await?;
    tx.commit().await?;
    Ok(change)
}

/// A member account already in the accounts table.
struct Known {
    organization: Option<String>,
    status: Option<String>,
    onboarded: bool,
}

/// Onboards the listed ACTIVE members not onboarded yet, and sets every member of the
/// organization polled or not by its status (not listed: REMOVED). Refuses an empty listing
/// (an organization always lists its management account).
pub async fn record(conn: &mut PgConnection, entry: &str, listing: &Listing) -> Result<MemberChange, AccountError> {
    if listing.accounts.is_empty() {
        return Err(AccountError::NoMembers);
    }
    // One listing at a time per organization (the daily job and `accounts add`).
    let organization = {
        sqlx::query!("SELECT account_id FROM accounts WHERE account_id = $1 FOR UPDATE", entry)
            .fetch_optional(&mut *conn)
            .await?;
        load_in(conn, entry).await?
    };
    let mut change = MemberChange {
        organization_id: listing.organization_id.clone(),
        management_account_id: listing.management_account_id.clone(),
        ..Default::default()
    };
    let known = known_members(conn, entry, listing).await?;
    let mut listed = std::collections::HashSet::new();
    for member in &listing.accounts {
        if Some(&member.account_id) == listing.management_account_id.as_ref() || !is_account_id(&member.account_id) {
            continue;
        }
        listed.insert(member.account_id.clone());
        let active = member.status == ACTIVE;
        match known.get(&member.account_id) {
            Some(k) if k.onboarded && k.organization.as_deref() != Some(entry) => {
                change.separate.push(member.account_id.clone())
            }
            Some(k) if k.onboarded => {
                set_status(conn, &member.account_id, &member.status, k.status.as_deref(), &mut change).await?
            }
            Some(k) if k.organization.as_deref() == Some(entry) => change.excluded.push(member.account_id.clone()),
            _ if active => {
                onboard_member(conn, &organization, member).await?;
                change.onboarded.push(member.account_id.clone());
            }
            _ => {}
        }
        let counted = change.separate.contains(&member.account_id) || change.excluded.contains(&member.account_id);
        if active && !counted {
            change.active.push(member.account_id.clone());
        }
    }
    for (account_id, k) in &known {
        if k.onboarded && k.organization.as_deref() == Some(entry) && !listed.contains(account_id) {
            set_status(conn, account_id, REMOVED, k.status.as_deref(), &mut change).await?;
        }
    }
    log_change(entry, &change);
    Ok(change)
}

fn is_account_id(id: &str) -> bool {
    id.len() == 12 && id.bytes().all(|b| b.is_ascii_digit())
}

/// The listed accounts and the organization's members already in the accounts table.
async fn known_members(
    conn: &mut PgConnection,
    entry: &str,
    listing: &Listing,
) -> Result<HashMap<String, Known>, sqlx::Error> {
    let ids: Vec<String> = listing.accounts.iter().map(|m| m.account_id.clone()).collect();
    let rows = sqlx::query!(
        r#"SELECT account_id, organization, member_status, role_arn IS NOT NULL AS "onboarded!"
           FROM accounts WHERE kind = 'account' AND (account_id = ANY($1) OR organization = $2)"#,
        &ids,
        entry
    )
    .fetch_all(&mut *conn)
    .await?;
    Ok(rows
        .into_iter()
        .map(|r| {
            (r.account_id, Known { organization: r.organization, status: r.member_status, onboarded: r.onboarded })
        })
        .collect())
}

/// Onboards one member with the member role and the organization's external ID, endpoint and
/// intervals; an account removed earlier (`accounts remove`) comes back.
async fn onboard_member(conn: &mut PgConnection, organization: &Account, member: &Member) -> Result<(), AccountError> {
    let role_name = organization.member_role_name.as_deref().unwrap_or("SkywardenReadOnly");
    let role_arn = RoleArn::parse(&format!(
        "arn:{}:iam::{}:role/{role_name}",
        organization.role_arn.partition(),
        member.account_id
    ))?;
    let name = member.name.as_ref().filter(|n| n.len() <= 256 && !n.chars().any(char::is_control));
    sqlx::query!(
        "INSERT INTO accounts (account_id, name, role_arn, external_id, endpoint_url, poll_intervals, enabled, kind,
                               organization, member_status)
         VALUES ($1, $2, $3, $4, $5, $6, true, 'account', $7, $8)
         ON CONFLICT (account_id) DO UPDATE SET name = COALESCE(EXCLUDED.name, accounts.name),
             role_arn = EXCLUDED.role_arn, external_id = EXCLUDED.external_id, regions = '{}',
             endpoint_url = EXCLUDED.endpoint_url, sources = '{}', poll_intervals = EXCLUDED.poll_intervals,
             enabled = true, kind = 'account', member_role_name = NULL, organization = EXCLUDED.organization,
             member_status = EXCLUDED.member_status, verified_at = NULL, verify_error = NULL,
             enabled_regions = NULL, regions_discovered_at = NULL
         WHERE accounts.role_arn IS NULL",
        member.account_id,
        name,
        role_arn.as_str(),
        organization.external_id,
        organization.endpoint_url,
        organization.intervals.to_stored(),
        organization.account_id,
        ACTIVE
    )
    .execute(&mut *conn)
    .await?;
    let account = load_in(conn, &member.account_id).await?;
    schedule::sync_jobs(conn, &member.account_id, &account.job_specs()).await?;
    Ok(())
}

/// Records a member's status; one no longer ACTIVE has its jobs disabled, one ACTIVE again
/// has them back (resuming from their checkpoints).
async fn set_status(
    conn: &mut PgConnection,
    account_id: &str,
    status: &str,
    before: Option<&str>,
    change: &mut MemberChange,
) -> Result<(), AccountError> {
    let (was_active, active) = (before.is_none_or(|s| s == ACTIVE), status == ACTIVE);
    sqlx::query!(
        "UPDATE accounts SET member_status = $2, enabled = $3 WHERE account_id = $1",
        account_id,
        status,
        active
    )
    .execute(&mut *conn)
    .await?;
    let account = load_in(conn, account_id).await?;
    schedule::sync_jobs(conn, account_id, &account.job_specs()).await?;
    match (was_active, active) {
        (true, false) => change.stopped.push(account_id.to_owned()),
        (false, true) => change.resumed.push(account_id.to_owned()),
        _ => {}
    }
    Ok(())
}

fn log_change(entry: &str, change: &MemberChange) {
    if !change.onboarded.is_empty() || !change.resumed.is_empty() || !change.stopped.is_empty() {
        tracing::info!(
            organization = entry,
            onboarded = ?change.onboarded,
            resumed = ?change.resumed,
            stopped = ?change.stopped,
            "the organization's members changed"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn member_role_names_are_iam_role_names() {
        assert!(validate_role_name("SkywardenReadOnly").is_ok());
        assert!(validate_role_name("a+b=c,d.e@f_g-h").is_ok());
        for bad in ["", "with/slash", "with space", &"x".repeat(65)] {
            assert!(validate_role_name(bad).unwrap_err().to_string().starts_with("member_role_name"), "{bad}");
        }
    }

    #[test]
    fn only_twelve_digit_ids_are_accounts() {
        assert!(is_account_id("111122223333"));
        assert!(!is_account_id("11112222333") && !is_account_id("11112222333a"));
    }
}
