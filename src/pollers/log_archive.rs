//! The `cloudtrail-archive` job: a central log archive's trail files, read once for every
//! account under it. Each run finds the accounts and regions under `…/AWSLogs/[o-…/]` (two
//! levels of delimited listing), then lists and reads each `<account>/CloudTrail/<region>/`
//! prefix from its own cursor with the S3 poller's code: the same bounded listing, streaming,
//! retries and failures (`pollers::s3_objects`). Each event is stored under its own
//! `recipientAccountId`, whether that account is onboarded or not.

use super::s3_objects::{self, Bucket, Listing};
use super::{Job, PollContext, PollError, RunOutcome};
use crate::accounts::Account;
use crate::aws::{AccountSession, AwsError};
use crate::ingest::flowlogs::layout::KeyLayout;

/// Delimited listing pages read at most per level (1000 names each).
const MAX_DIRECTORY_PAGES: usize = 100;

pub async fn run(
    ctx: &PollContext,
    session: &AccountSession,
    account: &Account,
    job: &mut Job,
) -> Result<RunOutcome, PollError> {
    let (name, base) = s3_objects::parse_target(&job.target)?;
    let (name, base) = (name.to_owned(), base.to_owned());
    let bucket = s3_objects::open_bucket(ctx, session, account, job, &name).await?;
    let listings = trail_prefixes(&bucket, &base).await?;
    tracing::debug!(job_id = job.job_id, prefixes = listings.len(), "log archive prefixes");
    s3_objects::read_listings(ctx, job, &bucket, listings).await
}

/// Every `<base><account>/CloudTrail/<region>/` prefix in the bucket.
async fn trail_prefixes(bucket: &Bucket, base: &str) -> Result<Vec<Listing>, PollError> {
    let mut listings = Vec::new();
    for account_dir in directories(bucket, base).await? {
        let account = account_dir.trim_start_matches(base).trim_end_matches('/');
        if !(account.len() == 12 && account.bytes().all(|b| b.is_ascii_digit())) {
            continue;
        }
        for region_dir in directories(bucket, &format!("{account_dir}CloudTrail/")).await? {
            listings.push(Listing { layout: KeyLayout::Classic, prefix: region_dir, own_cursor: true });
        }
    }
    Ok(listings)
}

/// The "directories" right under `prefix` (ListObjectsV2 with a `/` delimiter).
async fn directories(bucket: &Bucket, prefix: &str) -> Result<Vec<String>, PollError> {
    let mut found = Vec::new();
    let mut token = None;
    for _ in 0..MAX_DIRECTORY_PAGES {
        let page = bucket
            .client
            .list_objects_v2()
            .bucket(&bucket.name)
            .prefix(prefix)
            .delimiter("/")
            .set_continuation_token(token)
            .send()
            .await
            .map_err(|e| {
                let error = AwsError::from_sdk("s3:ListBucket", &bucket.region, e);
                s3_objects::forget_region_if_moved(bucket, &error);
                error
            })?;
        found.extend(page.common_prefixes().iter().filter_map(|p| p.prefix()).map(str::to_owned));
        token = page.next_continuation_token().map(str::to_owned).filter(|_| page.is_truncated() == Some(true));
        if token.is_none() {
            break;
        }
    }
    Ok(found)
}
