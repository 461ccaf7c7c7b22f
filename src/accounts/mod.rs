//! Onboarded AWS accounts: the role Skywarden assumes in each, the external ID it generated for
//! it, where its logs are, and the poll jobs that follow from that.
//!
//! Imports `aws` (to try the role) and `db`; [`schedule`] says which poll jobs an account has,
//! `pollers` runs them. Accounts never import `pollers`.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sqlx::PgPool;

use crate::aws::{
    AccountSession, ArnError, AssumeRoleTarget, AwsError, AwsSettings, GLOBAL_REGION, RoleArn, global_events_region,
    is_region_name,
};

pub mod intervals;
pub mod log_archive;
pub mod organization;
pub mod regions;
pub mod responder;
pub mod schedule;

pub use intervals::PollIntervals;
use schedule::{GLOBAL_SERVICES_TARGET, JobSpec, Source};

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
    #[error("ec2:DescribeRegions named no enabled region; the account's regions were left as they were")]
    NoRegions,
    #[error("cannot discover the account's regions: {0}")]
    DescribeRegions(#[source] AwsError),
    #[error("cannot list the organization's accounts: {0}")]
    Organizations(#[source] AwsError),
    #[error("organizations:ListAccounts named no account; the organization's members were left as they were")]
    NoMembers,
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
    /// SQS queue that S3 event notifications (or an EventBridge rule) fill with new trail files:
    /// read within seconds, the bucket listing stays as the safety net.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trail_queue_url: Option<String>,
    /// SQS queue announcing new flow log files.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub flow_queue_url: Option<String>,
    /// Import GuardDuty findings of every polled region as alerts (`pollers::findings`).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub guardduty_findings: bool,
    /// Import Security Hub findings of every polled region as alerts; with GuardDuty's own
    /// import on too, the GuardDuty findings Security Hub relays are left out (read once).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub security_hub_findings: bool,
}

/// What a user gives to onboard an account.
#[derive(Clone, Debug, Default)]
pub struct NewAccount {
    pub role_arn: String,
    pub name: Option<String>,
    /// Regions to poll, if not every enabled one (empty: every region the account enabled).
    pub regions: Vec<String>,
    pub endpoint_url: Option<String>,
    pub sources: LogSources,
}

/// What an entry of the accounts list stands for.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "kebab-case")]
pub enum AccountKind {
    /// An AWS account, polled with its role.
    #[default]
    Account,
    /// An organization, through a role in its management or delegated-admin account: its job
    /// onboards the members and stops polling those no longer active.
    Organization,
    /// A central trail bucket, through a role in the account holding it: its one job reads
    /// every member's trail files.
    LogArchive,
}

impl AccountKind {
    pub fn as_str(self) -> &'static str {
        match self {
            AccountKind::Account => "account",
            AccountKind::Organization => "organization",
            AccountKind::LogArchive => "log-archive",
        }
    }

    fn parse(value: &str) -> Self {
        match value {
            "organization" => AccountKind::Organization,
            "log-archive" => AccountKind::LogArchive,
            _ => AccountKind::Account,
        }
    }
}

/// An onboarded account.
#[derive(Clone, Serialize, utoipa::ToSchema)]
pub struct Account {
    /// The AWS account id; `organization:<account>` for an organization, `log-archive:<bucket>`
    /// for a log archive.
    pub account_id: String,
    pub kind: AccountKind,
    pub name: Option<String>,
    #[serde(serialize_with = "serialize_display")]
    #[schema(value_type = String)]
    pub role_arn: RoleArn,
    #[serde(skip)]
    pub external_id: String,
    /// The regions the user restricted polling to; empty: every enabled region.
    pub regions: Vec<String>,
    /// The regions the account has enabled, from its last discovery (absent before the first).
    pub enabled_regions: Option<Vec<String>>,
    pub regions_discovered_at: Option<DateTime<Utc>>,
    /// The regions its regional jobs poll: the enabled ones within the restriction (before the
    /// first discovery: the restriction).
    pub polled_regions: Vec<String>,
    /// Poll intervals the account chose, in seconds by source; other sources use the defaults.
    #[schema(value_type = std::collections::BTreeMap<String, u64>)]
    pub intervals: PollIntervals,
    pub endpoint_url: Option<String>,
    pub sources: LogSources,
    /// An organization's member role name, the same in every member.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub member_role_name: Option<String>,
    /// A member onboarded from an organization: the organization's entry.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub organization: Option<String>,
    /// A member's status as ListAccounts last gave it (ACTIVE, SUSPENDED, PENDING_CLOSURE,
    /// CLOSED, or REMOVED when no longer listed); a member not ACTIVE is not polled.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub member_status: Option<String>,
    pub enabled: bool,
    pub verified_at: Option<DateTime<Utc>>,
    pub verify_error: Option<String>,
    pub created_at: DateTime<Utc>,
}

/// A queue URL: http(s), with a host and a path (`https://sqs.REGION.amazonaws.com/ACCOUNT/NAME`).
fn validate_queue_url(url: &str) -> Result<(), AccountError> {
    let rest = url.strip_prefix("https://").or_else(|| url.strip_prefix("http://"));
    let ok = rest.and_then(|r| r.split_once('/')).is_some_and(|(host, path)| !host.is_empty() && !path.is_empty())
        && url.len() <= 1024
        && !url.chars().any(|c| c.is_whitespace() || c.is_control());
    if ok {
        Ok(())
    } else {
        Err(AccountError::Invalid { field: "sources", reason: format!("`{url}` is not an SQS queue URL") })
    }
}

/// The queue URLs a change sets (a string) or removes (null), and the findings imports it turns
/// on or off, as a JSON object to merge into the account's sources; none when it changes none.
fn queue_changes(change: &AccountChange) -> Result<Option<serde_json::Value>, AccountError> {
    let mut merged = serde_json::Map::new();
    for (name, url) in [("trail_queue_url", &change.trail_queue_url), ("flow_queue_url", &change.flow_queue_url)] {
        match url.as_deref() {
            None => {}
            Some("") => {
                merged.insert(name.to_owned(), serde_json::Value::Null);
            }
            Some(url) => {
                validate_queue_url(url)?;
                merged.insert(name.to_owned(), url.into());
            }
        }
    }
    // Findings imports: on is stored, off is removed (the default).
    let findings =
        [("guardduty_findings", change.guardduty_findings), ("security_hub_findings", change.security_hub_findings)];
    for (name, on) in findings {
        if let Some(on) = on {
            merged.insert(name.to_owned(), if on { true.into() } else { serde_json::Value::Null });
        }
    }
    Ok((!merged.is_empty()).then_some(serde_json::Value::Object(merged)))
}

/// The region in an SQS queue URL (`https://sqs.REGION.amazonaws.com/…`, a VPC endpoint's
/// `https://vpce-….sqs.REGION.vpce.amazonaws.com/…`, or the legacy
/// `https://REGION.queue.amazonaws.com/…`); none for an emulator's URL.
pub fn queue_region(url: &str) -> Option<&str> {
    let host = url.split("://").nth(1)?.split(['/', ':']).next()?;
    let labels: Vec<&str> = host.split('.').collect();
    let after_sqs = labels.iter().position(|l| *l == "sqs").and_then(|i| labels.get(i + 1));
    let region = after_sqs.or_else(|| labels.first().filter(|_| labels.get(1) == Some(&"queue")))?;
    is_region_name(region).then_some(*region)
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

    /// A member whose organization no longer lists it as active is not polled.
    pub fn is_active_member(&self) -> bool {
        self.member_status.as_deref().is_none_or(|status| status == organization::ACTIVE)
    }

    fn spec(&self, region: &str, source: Source, target: String) -> JobSpec {
        JobSpec { region: region.to_owned(), source, target, interval: self.intervals.get(source) }
    }

    /// The poll jobs this entry needs: an organization's member listing, a log archive's
    /// reading, or an account's own jobs (none for a member no longer active).
    pub fn job_specs(&self) -> Vec<JobSpec> {
        match self.kind {
            AccountKind::Organization => vec![self.spec(GLOBAL_REGION, Source::Organization, String::new())],
            AccountKind::LogArchive => log_archive::job_specs(self),
            AccountKind::Account if !self.is_active_member() => Vec::new(),
            AccountKind::Account => self.account_job_specs(),
        }
    }

    /// An account's jobs: its regions job and IAM-and-trails snapshot, each polled region's
    /// jobs, and the global services' events from their region if it is not polled.
    fn account_job_specs(&self) -> Vec<JobSpec> {
        let spec = |region: &str, source: Source, target: String| JobSpec {
            region: region.to_owned(),
            source,
            target,
            interval: self.intervals.get(source),
        };
        let mut specs = vec![
            spec(GLOBAL_REGION, Source::Regions, String::new()),
            spec(GLOBAL_REGION, Source::ConfigSnapshot, String::new()),
        ];
        for region in &self.polled_regions {
            specs.push(spec(region, Source::CloudTrailLookup, String::new()));
            specs.push(spec(region, Source::ConfigSnapshot, String::new()));
            for (source, target) in self.log_targets(region) {
                specs.push(spec(region, source, target));
            }
            for (source, target) in self.findings_targets() {
                specs.push(spec(region, source, target));
            }
        }
        if let Some(region) = self.global_events_job_region() {
            specs.push(spec(region, Source::CloudTrailLookup, GLOBAL_SERVICES_TARGET.to_owned()));
        }
        // One job per queue, in the queue's region (S3 notifies queues of its own region).
        let queues = [
            (Source::CloudTrailSqs, &self.sources.trail_queue_url),
            (Source::FlowLogsSqs, &self.sources.flow_queue_url),
        ];
        for (source, url) in queues {
            if let Some(url) = url {
                specs.push(spec(queue_region(url).unwrap_or(crate::aws::DEFAULT_HOME_REGION), source, url.clone()));
            }
        }
        specs
    }

    /// The findings imports of each polled region (see `pollers::findings` for the targets).
    fn findings_targets(&self) -> Vec<(Source, String)> {
        let mut targets = Vec::new();
        if self.sources.guardduty_findings {
            targets.push((Source::GuardDutyFindings, String::new()));
        }
        if self.sources.security_hub_findings {
            let target = if self.sources.guardduty_findings { schedule::WITHOUT_GUARDDUTY_TARGET } else { "" };
            targets.push((Source::SecurityHubFindings, target.to_owned()));
        }
        targets
    }

    /// The trail files, flow-log files and log groups of one region.
    fn log_targets(&self, region: &str) -> Vec<(Source, String)> {
        let mut targets = Vec::new();
        if let Some(bucket) = &self.sources.trail_bucket {
            let organization = self.sources.organization_id.as_deref().map(|o| format!("{o}/")).unwrap_or_default();
            let prefix = format!(
                "{}AWSLogs/{organization}{}/CloudTrail/{region}/",
                normalise_prefix(self.sources.trail_prefix.as_deref()),
                self.account_id
            );
            targets.push((Source::CloudTrailS3, format!("s3://{bucket}/{prefix}")));
        }
        if let Some(bucket) = &self.sources.flow_bucket {
            let prefix = format!(
                "{}AWSLogs/{}/vpcflowlogs/{region}/",
                normalise_prefix(self.sources.flow_prefix.as_deref()),
                self.account_id
            );
            targets.push((Source::FlowLogsS3, format!("s3://{bucket}/{prefix}")));
        }
        for group in &self.sources.flow_log_groups {
            targets.push((Source::FlowLogsCloudWatch, group.clone()));
        }
        targets
    }

    /// The region where CloudTrail shows global services' events (us-east-1), when the account
    /// does not poll it: a job there reads those events only. None before the account's regions
    /// are known (the first discovery decides), or when the region is polled anyway.
    fn global_events_job_region(&self) -> Option<&'static str> {
        let region = global_events_region(self.role_arn.partition())?;
        let known = self.enabled_regions.is_some() || !self.regions.is_empty();
        (known && !self.polled_regions.iter().any(|r| r == region)).then_some(region)
    }

    /// The regions whose trails the account-wide snapshot reads: the polled ones and the
    /// global-events region (where every multi-region trail shows, whatever its home region).
    pub fn trail_regions(&self) -> Vec<String> {
        let mut regions = self.polled_regions.clone();
        regions.extend(global_events_region(self.role_arn.partition()).map(str::to_owned));
        regions.sort();
        regions.dedup();
        regions
    }
}

/// The enabled regions within the restriction; before the first discovery, the restriction.
fn polled_regions(restriction: &[String], enabled: Option<&[String]>) -> Vec<String> {
    match enabled {
        Some(enabled) if restriction.is_empty() => enabled.to_vec(),
        Some(enabled) => restriction.iter().filter(|r| enabled.contains(r)).cloned().collect(),
        None => restriction.to_vec(),
    }
}

fn normalise_prefix(prefix: Option<&str>) -> String {
    match prefix.map(|p| p.trim_matches('/')) {
        Some(p) if !p.is_empty() => format!("{p}/"),
        _ => String::new(),
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
    if is_region_name(region) { Ok(()) } else { Err(AccountError::Region(region.to_owned())) }
}

fn unique(items: &[String]) -> bool {
    items.iter().collect::<std::collections::HashSet<_>>().len() == items.len()
}

/// A restriction to some regions: region names, each once (empty: no restriction).
fn validate_regions(regions: &[String]) -> Result<(), AccountError> {
    for region in regions {
        validate_region(region)?;
    }
    if !unique(regions) {
        return Err(AccountError::Invalid { field: "regions", reason: "a region is named twice".into() });
    }
    Ok(())
}

fn validate_new(new: &NewAccount) -> Result<RoleArn, AccountError> {
    let role_arn = RoleArn::parse(&new.role_arn)?;
    for url in [&new.sources.trail_queue_url, &new.sources.flow_queue_url].into_iter().flatten() {
        validate_queue_url(url)?;
    }
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
    validate_regions(&new.regions)?;
    if let Some(region) = &new.sources.bucket_region {
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
    if !unique(&new.sources.flow_log_groups) {
        return Err(AccountError::Invalid { field: "sources", reason: "a log group is named twice".into() });
    }
    if let Some(url) = &new.endpoint_url
        && !(url.starts_with("http://") || url.starts_with("https://"))
    {
        return Err(AccountError::Invalid { field: "endpoint_url", reason: format!("`{url}` is not an http(s) URL") });
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
    let mut tx = crate::db::begin(pool).await?;
    log_archive::refuse_double_reading(&mut tx, &new.sources).await?;
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
    // Regions found for an earlier onboarding of this account are forgotten: the new role
    // discovers them again.
    sqlx::query!(
        "INSERT INTO accounts (account_id, name, role_arn, external_id, regions, endpoint_url, sources, poll_intervals,
                               enabled)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, true)
         ON CONFLICT (account_id) DO UPDATE SET name = COALESCE(EXCLUDED.name, accounts.name),
             role_arn = EXCLUDED.role_arn, external_id = EXCLUDED.external_id, regions = EXCLUDED.regions,
             endpoint_url = EXCLUDED.endpoint_url, sources = EXCLUDED.sources,
             poll_intervals = EXCLUDED.poll_intervals, enabled = true, verified_at = NULL, verify_error = NULL,
             enabled_regions = NULL, regions_discovered_at = NULL, kind = 'account', member_role_name = NULL,
             organization = NULL, member_status = NULL",
        account_id,
        new.name,
        role_arn.as_str(),
        external_id,
        &new.regions,
        new.endpoint_url,
        sources,
        intervals.to_stored()
    )
    .execute(&mut *tx)
    .await?;
    let account = load_in(&mut tx, &account_id).await?;
    schedule::sync_jobs(&mut tx, &account_id, &account.job_specs()).await?;
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
        "SELECT account_id, name, role_arn, external_id, regions, enabled_regions, regions_discovered_at,
                poll_intervals, endpoint_url, sources, enabled, verified_at, verify_error, created_at, kind,
                member_role_name, organization, member_status
         FROM accounts WHERE account_id = $1 AND role_arn IS NOT NULL",
        account_id
    )
    .fetch_optional(&mut *conn)
    .await?
    .ok_or_else(|| AccountError::NotOnboarded(account_id.to_owned()))?;
    Ok(Account {
        account_id: row.account_id,
        kind: AccountKind::parse(&row.kind),
        name: row.name,
        role_arn: RoleArn::parse(row.role_arn.as_deref().unwrap_or_default())?,
        external_id: row.external_id.unwrap_or_default(),
        polled_regions: polled_regions(&row.regions, row.enabled_regions.as_deref()),
        regions: row.regions,
        enabled_regions: row.enabled_regions,
        regions_discovered_at: row.regions_discovered_at,
        intervals: PollIntervals::from_stored(row.poll_intervals),
        endpoint_url: row.endpoint_url,
        sources: serde_json::from_value(row.sources).unwrap_or_default(),
        member_role_name: row.member_role_name,
        organization: row.organization,
        member_status: row.member_status,
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
    let mut tx = crate::db::begin(pool).await?;
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
    /// The account's enabled regions, discovered with the role (when it could be assumed).
    pub enabled_regions: Option<Vec<String>>,
    /// Why the regions could not be discovered (a role without `ec2:DescribeRegions`); the
    /// account keeps the regions it had.
    pub regions_error: Option<String>,
}

/// Assumes the account's role and asks STS who we are; records the outcome on the account. With
/// a working role, also discovers the account's enabled regions and sets its jobs to match.
pub async fn test(
    pool: &PgPool,
    base: &aws_types::SdkConfig,
    settings: &AwsSettings,
    account_id: &str,
) -> Result<TestResult, AccountError> {
    let account = load(pool, account_id).await?;
    let (outcome, session) = match AccountSession::assume(base, settings, &account.assume_target()).await {
        Ok(session) => (caller_arn(&session, settings).await, Some(session)),
        Err(error) => (Err(error), None),
    };
    let mut result = TestResult {
        account_id: account_id.to_owned(),
        ok: outcome.is_ok(),
        assumed_arn: None,
        error: None,
        enabled_regions: None,
        regions_error: None,
    };
    match outcome {
        Ok(arn) => result.assumed_arn = arn,
        Err(error) => result.error = Some(error.to_string()),
    }
    sqlx::query!(
        "UPDATE accounts SET verified_at = CASE WHEN $2 THEN now() ELSE verified_at END, verify_error = $3
         WHERE account_id = $1",
        account_id,
        result.ok,
        result.error
    )
    .execute(pool)
    .await?;
    // Only an account has regions: an organization's or a log archive's role reads no EC2.
    if let (true, Some(session), AccountKind::Account) = (result.ok, session, account.kind) {
        match regions::discover_and_record(pool, &session, settings.home_region(), account_id).await {
            Ok(change) => result.enabled_regions = Some(change.enabled),
            Err(error @ (AccountError::DescribeRegions(_) | AccountError::NoRegions)) => {
                result.regions_error = Some(error.to_string())
            }
            Err(error) => return Err(error),
        }
    }
    Ok(result)
}

async fn caller_arn(session: &AccountSession, settings: &AwsSettings) -> Result<Option<String>, AwsError> {
    let identity = session
        .sts()
        .get_caller_identity()
        .send()
        .await
        .map_err(|e| AwsError::from_sdk("sts:GetCallerIdentity", settings.home_region(), e))?;
    Ok(identity.arn().map(str::to_owned))
}

/// What an account's settings change may change: its region restriction and poll intervals.
#[derive(Clone, Debug, Default)]
pub struct AccountChange {
    /// The new restriction; `Some(vec![])` lifts it (every enabled region).
    pub regions: Option<Vec<String>>,
    /// The new intervals (replacing the account's choices).
    pub intervals: Option<PollIntervals>,
    /// The queue announcing trail files; `Some("")` removes it.
    pub trail_queue_url: Option<String>,
    /// The queue announcing flow log files; `Some("")` removes it.
    pub flow_queue_url: Option<String>,
    /// Turns the GuardDuty findings import on or off.
    pub guardduty_findings: Option<bool>,
    /// Turns the Security Hub findings import on or off.
    pub security_hub_findings: Option<bool>,
}

/// Changes an onboarded account's regions or intervals, and its jobs to match (jobs no longer
/// wanted are disabled with their checkpoints kept).
pub async fn configure(pool: &PgPool, account_id: &str, change: &AccountChange) -> Result<Account, AccountError> {
    if let Some(regions) = &change.regions {
        validate_regions(regions)?;
    }
    let queues = queue_changes(change)?;
    let mut tx = crate::db::begin(pool).await?;
    let updated = sqlx::query!(
        "UPDATE accounts SET regions = COALESCE($2, regions), poll_intervals = COALESCE($3, poll_intervals)
         WHERE account_id = $1 AND role_arn IS NOT NULL",
        account_id,
        change.regions.as_deref(),
        change.intervals.as_ref().map(PollIntervals::to_stored)
    )
    .execute(&mut *tx)
    .await?
    .rows_affected();
    if updated == 0 {
        return Err(AccountError::NotOnboarded(account_id.to_owned()));
    }
    if let Some(queues) = queues {
        sqlx::query!(
            "UPDATE accounts SET sources = jsonb_strip_nulls(sources || $2) WHERE account_id = $1",
            account_id,
            queues
        )
        .execute(&mut *tx)
        .await?;
    }
    let account = load_in(&mut tx, account_id).await?;
    schedule::sync_jobs(&mut tx, account_id, &account.job_specs()).await?;
    tx.commit().await?;
    tracing::info!(account_id, regions = ?account.regions, intervals = ?account.intervals, "account settings changed");
    Ok(account)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn account(sources: LogSources) -> Account {
        let regions: Vec<String> = vec!["us-east-1".into(), "eu-west-1".into()];
        Account {
            account_id: "111122223333".into(),
            kind: AccountKind::Account,
            name: None,
            role_arn: RoleArn::parse("arn:aws:iam::111122223333:role/SkywardenReadOnly").unwrap(),
            external_id: "x".into(),
            polled_regions: regions.clone(),
            regions,
            enabled_regions: None,
            regions_discovered_at: None,
            intervals: PollIntervals::default(),
            endpoint_url: None,
            sources,
            member_role_name: None,
            organization: None,
            member_status: None,
            enabled: true,
            verified_at: None,
            verify_error: None,
            created_at: Utc::now(),
        }
    }

    /// The account after a discovery found `enabled`.
    fn discovered(mut account: Account, enabled: &[&str]) -> Account {
        let enabled: Vec<String> = enabled.iter().map(|r| (*r).to_owned()).collect();
        account.polled_regions = polled_regions(&account.regions, Some(&enabled));
        account.enabled_regions = Some(enabled);
        account
    }

    fn regions_of(specs: &[JobSpec], source: Source) -> Vec<(&str, &str)> {
        specs.iter().filter(|s| s.source == source).map(|s| (s.region.as_str(), s.target.as_str())).collect()
    }

    #[test]
    fn jobs_follow_regions_and_sources() {
        let plain = account(LogSources::default()).job_specs();
        assert_eq!(plain.len(), 6, "regions + global snapshot + (lookup, snapshot) per region: {plain:?}");
        let sources = LogSources {
            trail_bucket: Some("org-trail".into()),
            trail_prefix: Some("/ct/".into()),
            organization_id: Some("o-abc123def4".into()),
            flow_bucket: Some("flows".into()),
            flow_log_groups: vec!["vpc-flows".into()],
            ..Default::default()
        };
        let specs = account(sources).job_specs();
        assert_eq!(specs.len(), 12);
        assert!(specs.iter().any(|s| s.source == Source::CloudTrailS3
            && s.target == "s3://org-trail/ct/AWSLogs/o-abc123def4/111122223333/CloudTrail/eu-west-1/"));
        assert!(
            specs.iter().any(|s| s.source == Source::FlowLogsS3
                && s.target == "s3://flows/AWSLogs/111122223333/vpcflowlogs/us-east-1/")
        );
    }

    #[test]
    fn without_a_restriction_every_enabled_region_is_polled_once_discovered() {
        let mut open = account(LogSources::default());
        open.regions.clear();
        open.polled_regions.clear();
        let before = open.job_specs();
        let sources: Vec<(&str, Source)> = before.iter().map(|s| (s.region.as_str(), s.source)).collect();
        assert_eq!(sources, [(GLOBAL_REGION, Source::Regions), (GLOBAL_REGION, Source::ConfigSnapshot)]);
        assert_eq!(open.trail_regions(), ["us-east-1"]);
        let after = discovered(open, &["ap-east-1", "eu-west-1", "us-east-1"]).job_specs();
        assert_eq!(
            regions_of(&after, Source::CloudTrailLookup),
            [("ap-east-1", ""), ("eu-west-1", ""), ("us-east-1", "")],
            "us-east-1 is polled whole, so it needs no job for global services"
        );
        assert_eq!(after.iter().find(|s| s.source == Source::Regions).unwrap().interval.as_secs(), 86_400);
    }

    #[test]
    fn a_restriction_keeps_the_global_services_events_and_drops_regions_not_enabled() {
        let mut restricted = account(LogSources::default());
        restricted.regions = vec!["eu-west-1".into(), "me-south-1".into()];
        restricted.polled_regions = restricted.regions.clone();
        restricted.intervals.set(Source::CloudTrailLookup, std::time::Duration::from_secs(60)).unwrap();
        let before = restricted.job_specs();
        assert_eq!(
            regions_of(&before, Source::CloudTrailLookup),
            [("eu-west-1", ""), ("me-south-1", ""), ("us-east-1", GLOBAL_SERVICES_TARGET)]
        );
        assert!(before.iter().filter(|s| s.source == Source::CloudTrailLookup).all(|s| s.interval.as_secs() == 60));
        let after = discovered(restricted, &["eu-west-1", "us-east-1"]);
        assert_eq!(after.polled_regions, ["eu-west-1"]);
        assert_eq!(
            regions_of(&after.job_specs(), Source::CloudTrailLookup),
            [("eu-west-1", ""), ("us-east-1", GLOBAL_SERVICES_TARGET)]
        );
        assert_eq!(regions_of(&after.job_specs(), Source::ConfigSnapshot), [(GLOBAL_REGION, ""), ("eu-west-1", "")]);
        assert_eq!(after.trail_regions(), ["eu-west-1", "us-east-1"]);
    }

    #[test]
    fn organizations_list_members_archives_read_once_and_stopped_members_poll_nothing() {
        let mut organization = account(LogSources::default());
        organization.kind = AccountKind::Organization;
        let specs = organization.job_specs();
        assert_eq!(regions_of(&specs, Source::Organization), [(GLOBAL_REGION, "")]);
        assert_eq!(specs.len(), 1);
        assert_eq!(specs[0].interval.as_secs(), 86_400);

        let mut archive = account(LogSources {
            trail_bucket: Some("org-trail".into()),
            trail_prefix: Some("ct".into()),
            organization_id: Some("o-abc123def4".into()),
            ..Default::default()
        });
        archive.kind = AccountKind::LogArchive;
        assert_eq!(
            regions_of(&archive.job_specs(), Source::CloudTrailArchive),
            [(GLOBAL_REGION, "s3://org-trail/ct/AWSLogs/o-abc123def4/")],
            "one job for every account under the prefix"
        );
        archive.sources.bucket_region = Some("eu-west-1".into());
        assert_eq!(archive.job_specs()[0].region, "eu-west-1");

        let mut member = account(LogSources::default());
        member.organization = Some("organization:999988887777".into());
        member.member_status = Some("ACTIVE".into());
        assert!(!member.job_specs().is_empty());
        member.member_status = Some("SUSPENDED".into());
        assert!(member.job_specs().is_empty(), "a suspended member is not polled");
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
        assert!(validate_new(&new).is_ok(), "no restriction: every enabled region");
        new.regions = vec!["eu-west-1".into(), "eu-west-1".into()];
        assert!(validate_new(&new).unwrap_err().to_string().starts_with("regions"));
        new.regions = vec!["us-east-1".into()];
        new.sources.trail_bucket = Some("Bad_Bucket".into());
        assert!(validate_new(&new).unwrap_err().to_string().starts_with("trail_bucket"));
        new.sources.trail_bucket = None;
        new.role_arn = "arn:aws:iam::111122223333:user/x".into();
        assert!(matches!(validate_new(&new), Err(AccountError::Arn(_))));
    }
}
