//! Onboarded AWS accounts: the role Skywarden assumes in each, the external ID it generated for
//! it, where its logs are, and the poll jobs that follow from that.
//!
//! Imports `aws` (to try the role) and `db`; [`schedule`] says which poll jobs an account has,
//! `pollers` runs them. Accounts never import `pollers`.

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sqlx::PgPool;

use crate::aws::{AccountSession, ArnError, AssumeRoleTarget, AwsError, AwsSettings, GLOBAL_REGION, RoleArn};

pub mod schedule;

use schedule::{JobSpec, Source};

pub mod template;

pub use template::ROLE_TEMPLATE;

#[derive(Debug, thiserror::Error)]
pub enum AccountError {
    #[error(transparent)]
    Arn(#[from] ArnError),
    #[error("account {0} is already onboarded (role {1}); remove it first to onboard it again")]
    AlreadyOnboarded(String, String),
    #[error("account {0} is not onboarded")]
    NotOnboarded(String),
    #[error("`{0}` is not an AWS region name")]
    Region(String),
    #[error("{field}: {reason}")]
    Invalid { field: &'static str, reason: String },
    #[error("cannot assume the role: {0}")]
    AssumeRole(#[source] AwsError),
    #[error("cannot generate an external ID: {0}")]
    Random(String),
    #[error(transparent)]
    Database(#[from] sqlx::Error),
}

/// Where an account's trail files and flow logs are, besides LookupEvents and snapshots.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, utoipa::ToSchema)]
pub struct LogSources {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trail_bucket: Option<String>,
    /// The trail's S3 key prefix (before `AWSLogs/`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trail_prefix: Option<String>,
    /// For an organization trail: the organization id (`o-…`), which AWS puts after `AWSLogs/`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub organization_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub flow_bucket: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub flow_prefix: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub flow_log_groups: Vec<String>,
    /// Region of the buckets, when it is not the job's region.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bucket_region: Option<String>,
}

/// What a user gives to onboard an account.
#[derive(Clone, Debug, Default)]
pub struct NewAccount {
    pub role_arn: String,
    pub name: Option<String>,
    pub regions: Vec<String>,
    pub endpoint_url: Option<String>,
    pub sources: LogSources,
}

/// An onboarded account.
#[derive(Clone, Serialize, utoipa::ToSchema)]
pub struct Account {
    pub account_id: String,
    pub name: Option<String>,
    #[serde(serialize_with = "serialize_display")]
    #[schema(value_type = String)]
    pub role_arn: RoleArn,
    #[serde(skip)]
    pub external_id: String,
    pub regions: Vec<String>,
    pub endpoint_url: Option<String>,
    pub sources: LogSources,
    pub enabled: bool,
    pub verified_at: Option<DateTime<Utc>>,
    pub verify_error: Option<String>,
    pub created_at: DateTime<Utc>,
}

fn serialize_display<S: serde::Serializer>(value: &RoleArn, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.serialize_str(value.as_str())
}

impl std::fmt::Debug for Account {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Account")
            .field("account_id", &self.account_id)
            .field("role_arn", &self.role_arn.as_str())
            .field("regions", &self.regions)
            .finish_non_exhaustive()
    }
}

impl Account {
    pub fn assume_target(&self) -> AssumeRoleTarget<'_> {
        AssumeRoleTarget {
            role_arn: &self.role_arn,
            external_id: &self.external_id,
            endpoint_url: self.endpoint_url.as_deref(),
        }
    }

    /// The poll jobs this account needs.
    pub fn job_specs(&self, intervals: &PollIntervals) -> Vec<JobSpec> {
        let mut specs = Vec::new();
        let spec = |region: &str, source, target: String, interval| JobSpec {
            region: region.to_owned(),
            source,
            target,
            interval,
        };
        specs.push(spec(GLOBAL_REGION, Source::ConfigSnapshot, String::new(), intervals.snapshot));
        for region in &self.regions {
            specs.push(spec(region, Source::CloudTrailLookup, String::new(), intervals.lookup));
            specs.push(spec(region, Source::ConfigSnapshot, String::new(), intervals.snapshot));
            if let Some(bucket) = &self.sources.trail_bucket {
                let organization = self.sources.organization_id.as_deref().map(|o| format!("{o}/")).unwrap_or_default();
                let prefix = format!(
                    "{}AWSLogs/{organization}{}/CloudTrail/{region}/",
                    normalise_prefix(self.sources.trail_prefix.as_deref()),
                    self.account_id
                );
                specs.push(spec(region, Source::CloudTrailS3, format!("s3://{bucket}/{prefix}"), intervals.s3));
            }
            if let Some(bucket) = &self.sources.flow_bucket {
                let prefix = format!(
                    "{}AWSLogs/{}/vpcflowlogs/{region}/",
                    normalise_prefix(self.sources.flow_prefix.as_deref()),
                    self.account_id
                );
                specs.push(spec(region, Source::FlowLogsS3, format!("s3://{bucket}/{prefix}"), intervals.s3));
            }
            for group in &self.sources.flow_log_groups {
                specs.push(spec(region, Source::FlowLogsCloudWatch, group.clone(), intervals.logs));
            }
        }
        specs
    }
}

fn normalise_prefix(prefix: Option<&str>) -> String {
    match prefix.map(|p| p.trim_matches('/')) {
        Some(p) if !p.is_empty() => format!("{p}/"),
        _ => String::new(),
    }
}

/// How often each kind of job runs.
#[derive(Clone, Debug)]
pub struct PollIntervals {
    pub lookup: Duration,
    pub snapshot: Duration,
    pub s3: Duration,
    pub logs: Duration,
}

impl Default for PollIntervals {
    fn default() -> Self {
        Self {
            lookup: Duration::from_secs(300),
            snapshot: Duration::from_secs(900),
            s3: Duration::from_secs(300),
            logs: Duration::from_secs(300),
        }
    }
}

/// A random external ID: 160 bits, so it cannot be guessed by another customer of ours (the
/// confused-deputy problem the external ID exists to stop).
pub fn generate_external_id() -> Result<String, AccountError> {
    let mut bytes = [0u8; 20];
    getrandom::fill(&mut bytes).map_err(|e| AccountError::Random(e.to_string()))?;
    let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    Ok(format!("skywarden-{hex}"))
}

fn validate_region(region: &str) -> Result<(), AccountError> {
    // e.g. us-east-1, ap-southeast-4, us-gov-west-1, eu-isoe-west-1
    let parts: Vec<&str> = region.split('-').collect();
    let ok = parts.len() >= 3
        && parts.iter().all(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit()))
        && parts.last().is_some_and(|p| p.bytes().all(|b| b.is_ascii_digit()));
    if ok { Ok(()) } else { Err(AccountError::Region(region.to_owned())) }
}

fn validate_new(new: &NewAccount) -> Result<RoleArn, AccountError> {
    let role_arn = RoleArn::parse(&new.role_arn)?;
    if new.name.as_ref().is_some_and(|n| n.chars().any(char::is_control) || n.len() > 256) {
        return Err(AccountError::Invalid {
            field: "name",
            reason: "a name is at most 256 characters, without control characters".into(),
        });
    }
    for group in &new.sources.flow_log_groups {
        if group.is_empty() || group.len() > 512 || group.chars().any(char::is_control) {
            return Err(AccountError::Invalid {
                field: "sources",
                reason: format!("`{group}` is not a log group name"),
            });
        }
    }
    for prefix in [&new.sources.trail_prefix, &new.sources.flow_prefix].into_iter().flatten() {
        if prefix.len() > 512 || prefix.chars().any(char::is_control) {
            return Err(AccountError::Invalid {
                field: "sources",
                reason: "a prefix is at most 512 characters, without control characters".into(),
            });
        }
    }
    if new.regions.is_empty() {
        return Err(AccountError::Invalid { field: "regions", reason: "name at least one region".into() });
    }
    for region in new.regions.iter().chain(&new.sources.bucket_region) {
        validate_region(region)?;
    }
    if let Some(organization) = &new.sources.organization_id {
        let ok = organization.len() >= 12
            && organization.len() <= 34
            && organization.starts_with("o-")
            && organization[2..].bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit());
        if !ok {
            return Err(AccountError::Invalid {
                field: "sources",
                reason: format!("`{organization}` is not an organization id (o-…)"),
            });
        }
    }
    let unique = |items: &[String]| items.iter().collect::<std::collections::HashSet<_>>().len() == items.len();
    if !unique(&new.regions) {
        return Err(AccountError::Invalid { field: "regions", reason: "a region is named twice".into() });
    }
    if !unique(&new.sources.flow_log_groups) {
        return Err(AccountError::Invalid { field: "sources", reason: "a log group is named twice".into() });
    }
    if let Some(url) = &new.endpoint_url {
        if !(url.starts_with("http://") || url.starts_with("https://")) {
            return Err(AccountError::Invalid {
                field: "endpoint_url",
                reason: format!("`{url}` is not an http(s) URL"),
            });
        }
    }
    for (field, bucket) in [("trail_bucket", &new.sources.trail_bucket), ("flow_bucket", &new.sources.flow_bucket)] {
        if let Some(bucket) = bucket {
            let ok = (3..=63).contains(&bucket.len())
                && bucket.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.');
            if !ok {
                return Err(AccountError::Invalid { field, reason: format!("`{bucket}` is not an S3 bucket name") });
            }
        }
    }
    Ok(role_arn)
}

/// Stores a new account with a fresh external ID and creates its poll jobs. The role is not
/// checked here: the user creates it with the external ID this returns, then `test`s it.
pub async fn onboard(pool: &PgPool, new: &NewAccount, intervals: &PollIntervals) -> Result<Account, AccountError> {
    let role_arn = validate_new(new)?;
    let account_id = role_arn.account().to_string();
    let external_id = generate_external_id()?;
    let mut tx = pool.begin().await?;
    // Two onboardings of one new account at once: the second waits, then finds the first.
    sqlx::query!("SELECT pg_advisory_xact_lock(hashtext('skywarden-onboard:' || $1))", account_id)
        .fetch_one(&mut *tx)
        .await?;
    let existing = sqlx::query_scalar!("SELECT role_arn FROM accounts WHERE account_id = $1 FOR UPDATE", account_id)
        .fetch_optional(&mut *tx)
        .await?;
    if let Some(Some(existing)) = existing {
        return Err(AccountError::AlreadyOnboarded(account_id, existing));
    }
    let sources = serde_json::to_value(&new.sources)
        .map_err(|e| AccountError::Invalid { field: "sources", reason: e.to_string() })?;
    sqlx::query!(
        "INSERT INTO accounts (account_id, name, role_arn, external_id, regions, endpoint_url, sources, enabled)
         VALUES ($1, $2, $3, $4, $5, $6, $7, true)
         ON CONFLICT (account_id) DO UPDATE SET name = COALESCE(EXCLUDED.name, accounts.name),
             role_arn = EXCLUDED.role_arn, external_id = EXCLUDED.external_id, regions = EXCLUDED.regions,
             endpoint_url = EXCLUDED.endpoint_url, sources = EXCLUDED.sources, enabled = true,
             verified_at = NULL, verify_error = NULL",
        account_id,
        new.name,
        role_arn.as_str(),
        external_id,
        &new.regions,
        new.endpoint_url,
        sources
    )
    .execute(&mut *tx)
    .await?;
    let account = load_in(&mut tx, &account_id).await?;
    schedule::sync_jobs(&mut tx, &account_id, &account.job_specs(intervals)).await?;
    tx.commit().await?;
    tracing::info!(account_id, role_arn = %role_arn, regions = ?new.regions, "account onboarded");
    Ok(account)
}

/// The onboarded account, or `NotOnboarded`.
pub async fn load(pool: &PgPool, account_id: &str) -> Result<Account, AccountError> {
    let mut conn = pool.acquire().await?;
    load_in(&mut conn, account_id).await
}

async fn load_in(conn: &mut sqlx::PgConnection, account_id: &str) -> Result<Account, AccountError> {
    let row = sqlx::query!(
        "SELECT account_id, name, role_arn, external_id, regions, endpoint_url, sources, enabled, verified_at,
                verify_error, created_at
         FROM accounts WHERE account_id = $1 AND role_arn IS NOT NULL",
        account_id
    )
    .fetch_optional(&mut *conn)
    .await?
    .ok_or_else(|| AccountError::NotOnboarded(account_id.to_owned()))?;
    Ok(Account {
        account_id: row.account_id,
        name: row.name,
        role_arn: RoleArn::parse(row.role_arn.as_deref().unwrap_or_default())?,
        external_id: row.external_id.unwrap_or_default(),
        regions: row.regions,
        endpoint_url: row.endpoint_url,
        sources: serde_json::from_value(row.sources).unwrap_or_default(),
        enabled: row.enabled,
        verified_at: row.verified_at,
        verify_error: row.verify_error,
        created_at: row.created_at,
    })
}

pub async fn list(pool: &PgPool) -> Result<Vec<Account>, AccountError> {
    let ids = sqlx::query_scalar!("SELECT account_id FROM accounts WHERE role_arn IS NOT NULL ORDER BY account_id")
        .fetch_all(pool)
        .await?;
    let mut accounts = Vec::with_capacity(ids.len());
    for id in ids {
        accounts.push(load(pool, &id).await?);
    }
    Ok(accounts)
}

/// Stops polling an account and forgets its role and external ID. Its events, flows, resources
/// and alerts stay: they are the audit record.
pub async fn remove(pool: &PgPool, account_id: &str) -> Result<(), AccountError> {
    let mut tx = pool.begin().await?;
    let updated = sqlx::query!(
        "UPDATE accounts SET role_arn = NULL, external_id = NULL, enabled = false, verified_at = NULL
         WHERE account_id = $1 AND role_arn IS NOT NULL",
        account_id
    )
    .execute(&mut *tx)
    .await?
    .rows_affected();
    if updated == 0 {
        return Err(AccountError::NotOnboarded(account_id.to_owned()));
    }
    sqlx::query!("DELETE FROM poll_jobs WHERE account_id = $1", account_id).execute(&mut *tx).await?;
    tx.commit().await?;
    tracing::info!(account_id, "account removed");
    Ok(())
}

/// What `test` found.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct TestResult {
    pub account_id: String,
    pub ok: bool,
    /// The identity the assumed role has (`sts:GetCallerIdentity`).
    pub assumed_arn: Option<String>,
    pub error: Option<String>,
}

/// Assumes the account's role and asks STS who we are; records the outcome on the account.
pub async fn test(
    pool: &PgPool,
    base: &aws_types::SdkConfig,
    settings: &AwsSettings,
    account_id: &str,
) -> Result<TestResult, AccountError> {
    let account = load(pool, account_id).await?;
    let outcome = match AccountSession::assume(base, settings, &account.assume_target()).await {
        Ok(session) => session
            .sts()
            .get_caller_identity()
            .send()
            .await
            .map(|identity| identity.arn().map(str::to_owned))
            .map_err(|e| AwsError::from_sdk("sts:GetCallerIdentity", settings.home_region(), e)),
        Err(error) => Err(error),
    };
    let result = match outcome {
        Ok(arn) => TestResult { account_id: account_id.to_owned(), ok: true, assumed_arn: arn, error: None },
        Err(error) => TestResult {
            account_id: account_id.to_owned(),
            ok: false,
            assumed_arn: None,
            error: Some(error.to_string()),
        },
    };
    sqlx::query!(
        "UPDATE accounts SET verified_at = CASE WHEN $2 THEN now() ELSE verified_at END, verify_error = $3
         WHERE account_id = $1",
        account_id,
        result.ok,
        result.error
    )
    .execute(pool)
    .await?;
    Ok(result)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn account(sources: LogSources) -> Account {
        Account {
            account_id: "111122223333".into(),
            name: None,
            role_arn: RoleArn::parse("arn:aws:iam::111122223333:role/SkywardenReadOnly").unwrap(),
            external_id: "x".into(),
            regions: vec!["us-east-1".into(), "eu-west-1".into()],
            endpoint_url: None,
            sources,
            enabled: true,
            verified_at: None,
            verify_error: None,
            created_at: Utc::now(),
        }
    }

    #[test]
    fn jobs_follow_regions_and_sources() {
        let plain = account(LogSources::default()).job_specs(&PollIntervals::default());
        assert_eq!(plain.len(), 5, "global snapshot + (lookup, snapshot) per region: {plain:?}");
        let sources = LogSources {
            trail_bucket: Some("org-trail".into()),
            trail_prefix: Some("/ct/".into()),
            organization_id: Some("o-abc123def4".into()),
            flow_bucket: Some("flows".into()),
            flow_log_groups: vec!["vpc-flows".into()],
            ..Default::default()
        };
        let specs = account(sources).job_specs(&PollIntervals::default());
        assert_eq!(specs.len(), 11);
        assert!(specs.iter().any(|s| s.source == Source::CloudTrailS3
            && s.target == "s3://org-trail/ct/AWSLogs/o-abc123def4/111122223333/CloudTrail/eu-west-1/"));
        assert!(
            specs.iter().any(|s| s.source == Source::FlowLogsS3
                && s.target == "s3://flows/AWSLogs/111122223333/vpcflowlogs/us-east-1/")
        );
    }

    #[test]
    fn external_ids_are_random_and_well_formed() {
        let (a, b) = (generate_external_id().unwrap(), generate_external_id().unwrap());
        assert_ne!(a, b);
        assert_eq!(a.len(), "skywarden-".len() + 40);
    }

    #[test]
    fn bad_onboarding_input_names_the_field() {
        let mut new = NewAccount {
            role_arn: "arn:aws:iam::111122223333:role/x".into(),
            regions: vec!["us-east-1".into()],
            ..Default::default()
        };
        assert!(validate_new(&new).is_ok());
        new.regions = vec!["mars".into()];
        assert!(validate_new(&new).unwrap_err().to_string().contains("mars"));
        new.regions = vec![];
        assert!(validate_new(&new).unwrap_err().to_string().starts_with("regions"));
        new.regions = vec!["us-east-1".into()];
        new.sources.trail_bucket = Some("Bad_Bucket".into());
        assert!(validate_new(&new).unwrap_err().to_string().starts_with("trail_bucket"));
        new.sources.trail_bucket = None;
        new.role_arn = "arn:aws:iam::111122223333:user/x".into();
        assert!(matches!(validate_new(&new), Err(AccountError::Arn(_))));
    }
}
