//! A central log archive: one trail bucket, often in another account and region, holding the
//! trail files of every account of an organization (`AWSLogs/o-…/<account>/CloudTrail/…`) or
//! of several accounts (`AWSLogs/<account>/CloudTrail/…`). It is read once, by one
//! `cloudtrail-archive` job with a role in the account that holds the bucket; each event is
//! stored under its own account (`recipientAccountId`), onboarded or not.
//!
//! No account reads the archive's files on its own as well: accounts whose trail settings name
//! the archive's files lose them when the archive is added (their S3 trail jobs are disabled,
//! checkpoints kept), and such settings are refused afterwards.

use sqlx::{PgConnection, PgPool};

use super::{
    Account, AccountError, LogSources, NewAccount, PollIntervals, generate_external_id, load_in, normalise_prefix,
    schedule, validate_new,
};
use crate::aws::GLOBAL_REGION;

/// The entry id of a log archive: this prefix and its bucket.
pub const ENTRY_PREFIX: &str = "log-archive:";

/// What a user gives to add a log archive.
#[derive(Clone, Debug, Default)]
pub struct NewLogArchive {
    /// The role in the account holding the bucket (the read-only role, deployed there with
    /// `TrailBucketName`).
    pub role_arn: String,
    pub bucket: String,
    /// The trail's S3 key prefix (before `AWSLogs/`).
    pub prefix: Option<String>,
    /// An organization trail's organization id (`o-…`), which AWS puts after `AWSLogs/`.
    pub organization_id: Option<String>,
    /// The bucket's region, when known (else found once with HeadBucket or GetBucketLocation).
    pub bucket_region: Option<String>,
    pub name: Option<String>,
    pub endpoint_url: Option<String>,
}

/// A log archive added, and the accounts whose own trail-file jobs it replaced.
#[derive(Debug)]
pub struct ArchiveAdded {
    pub archive: Account,
    pub replaced: Vec<String>,
}

fn sources(new: &NewLogArchive) -> LogSources {
    LogSources {
        trail_bucket: Some(new.bucket.clone()),
        trail_prefix: new.prefix.clone(),
        organization_id: new.organization_id.clone(),
        bucket_region: new.bucket_region.clone(),
        ..Default::default()
    }
}

/// The files a log archive reads and an account's trail settings would read too: the same
/// bucket, prefix and organization.
fn same_files(a: &LogSources, b: &LogSources) -> bool {
    a.trail_bucket.is_some()
        && a.trail_bucket == b.trail_bucket
        && normalise_prefix(a.trail_prefix.as_deref()) == normalise_prefix(b.trail_prefix.as_deref())
        && a.organization_id == b.organization_id
}

/// The archive's one job: in the bucket's region when given (else the region is found on its
/// first run), listing `PREFIX/AWSLogs/[o-…/]` for every account and region under it.
pub fn job_specs(archive: &Account) -> Vec<schedule::JobSpec> {
    let Some(bucket) = &archive.sources.trail_bucket else { return Vec::new() };
    let organization = archive.sources.organization_id.as_deref().map(|o| format!("{o}/")).unwrap_or_default();
    let target =
        format!("s3://{bucket}/{}AWSLogs/{organization}", normalise_prefix(archive.sources.trail_prefix.as_deref()));
    let region = archive.sources.bucket_region.as_deref().unwrap_or(GLOBAL_REGION);
    vec![archive.spec(region, schedule::Source::CloudTrailArchive, target)]
}

/// Stores a log archive with a fresh external ID and its job, and stops the accounts' own jobs
/// reading the same files.
pub async fn add(pool: &PgPool, new: &NewLogArchive, intervals: &PollIntervals) -> Result<ArchiveAdded, AccountError> {
    let as_account = NewAccount {
        role_arn: new.role_arn.clone(),
        name: new.name.clone(),
        endpoint_url: new.endpoint_url.clone(),
        sources: sources(new),
        ..Default::default()
    };
    let role_arn = validate_new(&as_account)?;
    let entry = format!("{ENTRY_PREFIX}{}", new.bucket);
    let external_id = generate_external_id()?;
    let stored = serde_json::to_value(&as_account.sources)
        .map_err(|e| AccountError::Invalid { field: "sources", reason: e.to_string() })?;
    let mut tx = crate::db::begin(pool).await?;
    let existing = sqlx::query_scalar!("SELECT role_arn FROM accounts WHERE account_id = $1 FOR UPDATE", entry)
        .fetch_optional(&mut *tx)
        .await?;
    if let Some(Some(existing)) = existing {
        return Err(AccountError::AlreadyOnboarded(entry, existing));
    }
    sqlx::query!(
        "INSERT INTO accounts (account_id, name, role_arn, external_id, endpoint_url, sources, poll_intervals, enabled,
                               kind)
         VALUES ($1, $2, $3, $4, $5, $6, $7, true, 'log-archive')
         ON CONFLICT (account_id) DO UPDATE SET name = COALESCE(EXCLUDED.name, accounts.name),
             role_arn = EXCLUDED.role_arn, external_id = EXCLUDED.external_id, endpoint_url = EXCLUDED.endpoint_url,
             sources = EXCLUDED.sources, poll_intervals = EXCLUDED.poll_intervals, enabled = true,
             kind = 'log-archive', verified_at = NULL, verify_error = NULL",
        entry,
        new.name,
        role_arn.as_str(),
        external_id,
        new.endpoint_url,
        stored,
        intervals.to_stored()
    )
    .execute(&mut *tx)
    .await?;
    let archive = load_in(&mut tx, &entry).await?;
    schedule::sync_jobs(&mut tx, &entry, &archive.job_specs()).await?;
    let replaced = replace_own_readers(&mut tx, &archive.sources).await?;
    tx.commit().await?;
    tracing::info!(archive = entry, role_arn = %role_arn, replaced = ?replaced, "log archive added");
    Ok(ArchiveAdded { archive, replaced })
}

/// Accounts (of kind `account`) whose trail settings name a bucket, with those settings.
async fn trail_readers(
    conn: &mut PgConnection,
    bucket: &str,
) -> Result<Vec<(String, String, LogSources)>, sqlx::Error> {
    let rows = sqlx::query!(
        "SELECT account_id, kind, sources FROM accounts
         WHERE role_arn IS NOT NULL AND sources ->> 'trail_bucket' = $1",
        bucket
    )
    .fetch_all(&mut *conn)
    .await?;
    Ok(rows
        .into_iter()
        .map(|r| (r.account_id, r.kind, serde_json::from_value(r.sources).unwrap_or_default()))
        .collect())
}

/// Drops the trail settings of the accounts reading the archive's files, and so their S3 trail
/// jobs (disabled, checkpoints kept): the archive reads those files now.
async fn replace_own_readers(conn: &mut PgConnection, archive: &LogSources) -> Result<Vec<String>, AccountError> {
    let bucket = archive.trail_bucket.as_deref().unwrap_or_default();
    let mut replaced = Vec::new();
    for (account_id, kind, sources) in trail_readers(conn, bucket).await? {
        if kind != "account" || !same_files(&sources, archive) {
            continue;
        }
        sqlx::query!(
            "UPDATE accounts SET sources = sources - 'trail_bucket' - 'trail_prefix' - 'organization_id'
             WHERE account_id = $1",
            account_id
        )
        .execute(&mut *conn)
        .await?;
        let account = load_in(conn, &account_id).await?;
        schedule::sync_jobs(conn, &account_id, &account.job_specs()).await?;
        replaced.push(account_id);
    }
    Ok(replaced)
}

/// Refuses an account's trail settings that name files a log archive reads already.
pub async fn refuse_double_reading(conn: &mut PgConnection, sources: &LogSources) -> Result<(), AccountError> {
    let Some(bucket) = sources.trail_bucket.as_deref() else { return Ok(()) };
    for (archive, kind, archived) in trail_readers(conn, bucket).await? {
        if kind == "log-archive" && same_files(&archived, sources) {
            return Err(AccountError::Invalid {
                field: "trail_bucket",
                reason: format!(
                    "{archive} reads these trail files for every account already; leave the trail bucket out"
                ),
            });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_same_files_are_the_same_bucket_prefix_and_organization() {
        let archive = LogSources {
            trail_bucket: Some("org-trail".into()),
            trail_prefix: Some("ct".into()),
            organization_id: Some("o-abc123def4".into()),
            ..Default::default()
        };
        let mut member = archive.clone();
        member.trail_prefix = Some("/ct/".into());
        assert!(same_files(&member, &archive));
        member.organization_id = None;
        assert!(!same_files(&member, &archive), "the account's own trail, not the organization's");
        assert!(!same_files(&LogSources::default(), &LogSources::default()));
    }
}
