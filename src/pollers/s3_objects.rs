//! Trail files and flow log files delivered to S3.
//!
//! - The bucket is read in its own region, found once with HeadBucket (its answer names the
//!   region even when it refuses or redirects; the Rust SDK does not follow S3's redirects).
//! - Listing is bounded: a job's first run lists from a lookback window (keys sort by day under
//!   `…/REGION/YYYY/MM/DD/` or, Hive-compatible, `…/year=YYYY/month=MM/day=DD/`), later runs
//!   resume with StartAfter from the checkpoint: after the last key read while a backlog lasts,
//!   else from the day before the newest key, because the files of one day do not arrive in
//!   key order. Pages are of at most a run's worth of keys, and only a page's keys are checked
//!   against `ingested_objects`, so a run's work does not grow with the backlog.
//! - Objects are streamed into the parser (gzip or not), never held whole; Parquet is copied
//!   to an unlinked temporary file, as it must be read at random. Objects over a size limit
//!   fail.
//! - An object that fails (unreadable, corrupt, too large, access denied) is recorded in
//!   `s3_object_failures` and retried with a growing back-off; after the last try it stays there
//!   as failed (see [`failed_objects`], the metrics), never recorded as read.
//!
//! Each object's records, its `ingested_objects` row and the checkpoint commit together.

use std::collections::{BTreeMap, HashMap};
use std::io::{self, Read};
use std::path::PathBuf;
use std::sync::{Arc, LazyLock, Mutex};
use std::time::Duration;

use chrono::{DateTime, Duration as ChronoDuration, Utc};
use hyper::body::Bytes;
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;

use super::{Job, PollContext, PollError, RunOutcome, Source};
use crate::accounts::Account;
use crate::aws::{AccountSession, AwsError, AwsErrorKind, GLOBAL_REGION, Service};
use crate::geo::GeoCache;
use crate::ingest::flowlogs::layout::{self, KeyLayout};
use crate::ingest::{ParseContext, parse_content, source};
use crate::pollers::rows::PageRows;

/// Knobs of the S3 poller. The defaults suit AWS; each can be set in the environment of
/// `serve` and `worker`.
#[derive(Clone, Debug)]
pub struct S3Options {
    /// How far back a job's first run lists (`SKYWARDEN_S3_LOOKBACK_DAYS`, default 7).
    pub lookback: Duration,
    /// Largest object read (`SKYWARDEN_S3_MAX_OBJECT_MB`, default 1024); a larger one fails.
    pub max_object_bytes: u64,
    /// Tries of a failing object before it is given up (`SKYWARDEN_S3_MAX_ATTEMPTS`, default 5).
    pub max_attempts: i32,
    /// Wait before the second try (`SKYWARDEN_S3_RETRY_SECONDS`, default 60); each further
    /// try waits four times longer, at most six hours.
    pub retry_after: Duration,
}

impl Default for S3Options {
    fn default() -> Self {
        Self {
            lookback: Duration::from_secs(7 * 24 * 3600),
            max_object_bytes: 1 << 30,
            max_attempts: 5,
            retry_after: Duration::from_secs(60),
        }
    }
}

impl S3Options {
    pub fn from_env() -> Self {
        let number = |name: &str| std::env::var(name).ok().and_then(|v| v.trim().parse::<u64>().ok());
        let default = Self::default();
        Self {
            lookback: number("SKYWARDEN_S3_LOOKBACK_DAYS")
                .map_or(default.lookback, |d| Duration::from_secs(d * 86_400)),
            max_object_bytes: number("SKYWARDEN_S3_MAX_OBJECT_MB").map_or(default.max_object_bytes, |mb| mb << 20),
            max_attempts: number("SKYWARDEN_S3_MAX_ATTEMPTS").map_or(default.max_attempts, |n| n.clamp(1, 100) as i32),
            retry_after: number("SKYWARDEN_S3_RETRY_SECONDS").map_or(default.retry_after, Duration::from_secs),
        }
    }
}

static OPTIONS: LazyLock<S3Options> = LazyLock::new(S3Options::from_env);

/// Listing pages one run reads at most (a long re-listing goes on in the next run).
const MAX_LIST_PAGES: usize = 10;
/// The longest wait between two tries of an object.
const MAX_RETRY_WAIT: Duration = Duration::from_secs(6 * 3600);
/// Parquet is decompressed to disk when delivered gzip-wrapped: at most this many times the
/// object size limit.
const SPOOL_FACTOR: u64 = 4;

/// Where listing stands under one prefix.
#[derive(Debug, Default, Clone, Serialize, Deserialize, PartialEq)]
struct Cursor {
    /// The newest key read: listing restarts the day before its day, for late files.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    last_key: Option<String>,
    /// The last key handled by a listing not finished yet (a backlog): the next run goes on
    /// after it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    resume_after: Option<String>,
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct Checkpoint {
    /// The job's prefix, in the classic layout (at the top level, as earlier releases saved it).
    #[serde(flatten)]
    classic: Cursor,
    /// The Hive-compatible prefix of the same flow logs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    hive: Option<Cursor>,
    /// A log archive's prefixes, one per account and region, by prefix.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    prefixes: BTreeMap<String, Cursor>,
}

impl Checkpoint {
    fn cursor(&mut self, listing: &Listing) -> &mut Cursor {
        if listing.own_cursor {
            return self.prefixes.entry(listing.prefix.clone()).or_default();
        }
        match listing.layout {
            KeyLayout::Classic => &mut self.classic,
            KeyLayout::Hive => self.hive.get_or_insert_with(Cursor::default),
        }
    }

    fn to_value(&self) -> serde_json::Value {
        serde_json::to_value(self).expect("checkpoint serialises")
    }
}

/// A job target: `s3://BUCKET/PREFIX`.
pub fn parse_target(target: &str) -> Result<(&str, &str), PollError> {
    let rest =
        target.strip_prefix("s3://").ok_or_else(|| PollError::Target(format!("`{target}` is not an s3:// URL")))?;
    let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
    if bucket.is_empty() {
        return Err(PollError::Target(format!("`{target}` names no bucket")));
    }
    Ok((bucket, prefix))
}

/// A prefix the job lists, and how its keys are laid out.
pub(crate) struct Listing {
    pub(crate) layout: KeyLayout,
    pub(crate) prefix: String,
    /// Its cursor is its own, by prefix (a log archive lists one prefix per account and region).
    pub(crate) own_cursor: bool,
}

/// The job's prefix, and for flow logs the Hive-compatible prefix of the same account and
/// region (a flow log writes one or the other; both are listed, an empty one costs a request).
fn listings(job: &Job, prefix: &str) -> Vec<Listing> {
    let mut listings = vec![Listing { layout: KeyLayout::Classic, prefix: prefix.to_owned(), own_cursor: false }];
    if job.source == Source::FlowLogsS3
        && let Some(hive) = layout::hive_prefix(prefix)
    {
        listings.push(Listing { layout: KeyLayout::Hive, prefix: hive, own_cursor: false });
    }
    listings
}

/// Where a listing starts: after the key a backlog stopped at; else the day before the newest
/// key's day; else (a first run) the lookback window's first day.
fn start_after(listing: &Listing, cursor: &Cursor, now: DateTime<Utc>, lookback: Duration) -> Option<String> {
    if let Some(resume) = &cursor.resume_after {
        return Some(resume.clone());
    }
    if let Some(last) = &cursor.last_key {
        let day = last.strip_prefix(&listing.prefix).and_then(|rest| layout::day_of(listing.layout, rest));
        return Some(match day {
            Some(day) => layout::day_position(listing.layout, &listing.prefix, day - ChronoDuration::days(1)),
            // Keys not partitioned by day: resume after the last one.
            None => last.clone(),
        });
    }
    let first_day = (now - ChronoDuration::from_std(lookback).unwrap_or(ChronoDuration::days(7))).date_naive();
    Some(layout::day_position(listing.layout, &listing.prefix, first_day))
}

/// An object to read: listed, or announced by a queue (`pollers::sqs`).
#[derive(Clone, Debug)]
pub(crate) struct Listed {
    pub(crate) key: String,
    pub(crate) etag: String,
    pub(crate) size: i64,
    pub(crate) modified: Option<DateTime<Utc>>,
}

/// The bucket a job reads, with a client in its region.
pub(crate) struct Bucket {
    pub(crate) client: aws_sdk_s3::Client,
    pub(crate) name: String,
    pub(crate) region: String,
    /// Its entry in the region cache.
    cache_key: String,
}

/// What one run has left and has done.
struct RunState {
    checkpoint: Checkpoint,
    /// Objects this run may still read.
    budget: usize,
    outcome: RunOutcome,
}

pub async fn run(
    ctx: &PollContext,
    session: &AccountSession,
    account: &Account,
    job: &mut Job,
) -> Result<RunOutcome, PollError> {
    let (name, prefix) = parse_target(&job.target)?;
    let (name, prefix) = (name.to_owned(), prefix.to_owned());
    let bucket = open_bucket(ctx, session, account, job, &name).await?;
    let listings = listings(job, &prefix);
    read_listings(ctx, job, &bucket, listings).await
}

/// Retries the job's failed objects that are due, then lists each prefix from its cursor and
/// reads what is new, within one run's budget.
pub(crate) async fn read_listings(
    ctx: &PollContext,
    job: &mut Job,
    bucket: &Bucket,
    listings: Vec<Listing>,
) -> Result<RunOutcome, PollError> {
    let mut state = RunState {
        checkpoint: serde_json::from_value(job.checkpoint.clone()).unwrap_or_default(),
        budget: ctx.options.max_pages_per_run.max(1),
        outcome: RunOutcome::default(),
    };
    retry_due(ctx, job, bucket, &mut state).await?;
    for listing in listings {
        if state.budget == 0 {
            state.outcome.more_pending = true;
            break;
        }
        scan(ctx, job, bucket, &listing, &mut state).await?;
    }
    Ok(state.outcome)
}

// ---------------------------------------------------------------------------------------------
// The bucket's region

/// Bucket regions found, by endpoint and bucket name: a bucket does not move.
static BUCKET_REGIONS: LazyLock<Mutex<HashMap<String, String>>> = LazyLock::new(Default::default);

pub(crate) async fn open_bucket(
    ctx: &PollContext,
    session: &AccountSession,
    account: &Account,
    job: &Job,
    name: &str,
) -> Result<Bucket, PollError> {
    let endpoint = account.endpoint_url.as_deref().or(ctx.settings.endpoint_for(Service::S3)).unwrap_or("aws");
    let cache_key = format!("{endpoint}|{name}");
    let region = match &account.sources.bucket_region {
        Some(region) => region.clone(),
        None => {
            let cached = BUCKET_REGIONS.lock().expect("region cache").get(&cache_key).cloned();
            match cached {
                Some(region) => region,
                None => {
                    // A job of no region (a log archive's) asks in the home region.
                    let probe = if job.region == GLOBAL_REGION { ctx.settings.home_region() } else { &job.region };
                    let region = discover_region(session, probe, name).await?;
                    tracing::info!(bucket = name, region, "bucket region found");
                    BUCKET_REGIONS.lock().expect("region cache").insert(cache_key.clone(), region.clone());
                    region
                }
            }
        }
    };
    Ok(Bucket { client: session.s3(&region), name: name.to_owned(), region, cache_key })
}

/// Asks S3 where a bucket lives. HeadBucket (allowed by `s3:ListBucket`) answers from any
/// region with `x-amz-bucket-region`, also when it redirects (301) or refuses (403); the role's
/// prefix condition refuses it, so without that header GetBucketLocation (granted on its own)
/// decides.
async fn discover_region(session: &AccountSession, probe_region: &str, bucket: &str) -> Result<String, AwsError> {
    match session.s3(probe_region).head_bucket().bucket(bucket).send().await {
        Ok(head) => Ok(head.bucket_region().unwrap_or(probe_region).to_owned()),
        Err(error) => {
            let header = error.raw_response().and_then(|r| r.headers().get("x-amz-bucket-region"));
            match header {
                Some(region) if !region.is_empty() => Ok(region.to_owned()),
                _ => bucket_location(session, bucket).await,
            }
        }
    }
}

/// GetBucketLocation, asked in us-east-1 (which answers for every bucket); no constraint means
/// us-east-1 and the legacy `EU` means eu-west-1.
async fn bucket_location(session: &AccountSession, bucket: &str) -> Result<String, AwsError> {
    const GLOBAL_ENDPOINT_REGION: &str = "us-east-1";
    let answer = session
        .s3(GLOBAL_ENDPOINT_REGION)
        .get_bucket_location()
        .bucket(bucket)
        .send()
        .await
        .map_err(|e| AwsError::from_sdk("s3:GetBucketLocation", GLOBAL_ENDPOINT_REGION, e))?;
    Ok(match answer.location_constraint().map(|c| c.as_str()) {
        None | Some("") => GLOBAL_ENDPOINT_REGION.to_owned(),
        Some("EU") => "eu-west-1".to_owned(),
        Some(region) => region.to_owned(),
    })
}

/// Forgets a bucket's region when S3 says the request went to the wrong one.
pub(crate) fn forget_region_if_moved(bucket: &Bucket, error: &AwsError) {
    const WRONG_REGION: &[&str] =
        &["PermanentRedirect", "AuthorizationHeaderMalformed", "IllegalLocationConstraintException"];
    if error.code.as_deref().is_some_and(|c| WRONG_REGION.contains(&c)) {
        BUCKET_REGIONS.lock().expect("region cache").remove(&bucket.cache_key);
    }
}

// ---------------------------------------------------------------------------------------------
// Listing

/// One page of a listing.
struct Page {
    /// The log files on the page: no folders, no digest files.
    objects: Vec<Listed>,
    /// The page's last key, whatever it was.
    last_key: Option<String>,
    next_token: Option<String>,
}

async fn list_page(
    bucket: &Bucket,
    prefix: &str,
    start_after: Option<&str>,
    token: Option<String>,
    max_keys: i32,
) -> Result<Page, PollError> {
    let page = bucket
        .client
        .list_objects_v2()
        .bucket(&bucket.name)
        .prefix(prefix)
        .max_keys(max_keys)
        .set_start_after(start_after.map(str::to_owned))
        .set_continuation_token(token)
        .send()
        .await
        .map_err(|e| {
            let error = AwsError::from_sdk("s3:ListBucket", &bucket.region, e);
            forget_region_if_moved(bucket, &error);
            error
        })?;
    let mut objects = Vec::new();
    for object in page.contents() {
        let Some(key) = object.key() else { continue };
        if !is_log_file(key) {
            continue;
        }
        objects.push(Listed {
            key: key.to_owned(),
            etag: object.e_tag().unwrap_or_default().trim_matches('"').to_owned(),
            size: object.size().unwrap_or(0),
            modified: object.last_modified().and_then(|t| DateTime::from_timestamp_millis(t.to_millis().ok()?)),
        });
    }
    let next_token =
        if page.is_truncated() == Some(true) { page.next_continuation_token().map(str::to_owned) } else { None };
    Ok(Page { objects, last_key: page.contents().last().and_then(|o| o.key()).map(str::to_owned), next_token })
}

/// Whether a key names a log file: not a folder, not a CloudTrail digest.
pub(crate) fn is_log_file(key: &str) -> bool {
    !key.ends_with('/') && !key.contains("/CloudTrail-Digest/")
}

/// Lists one prefix from its cursor and reads what is new, within the run's budget.
async fn scan(
    ctx: &PollContext,
    job: &mut Job,
    bucket: &Bucket,
    listing: &Listing,
    state: &mut RunState,
) -> Result<(), PollError> {
    let start = start_after(listing, state.checkpoint.cursor(listing), Utc::now(), OPTIONS.lookback);
    let max_keys = ctx.options.max_pages_per_run.clamp(1, 1000) as i32;
    let mut token = None;
    for _ in 0..MAX_LIST_PAGES {
        if state.budget == 0 {
            state.outcome.more_pending = true;
            return Ok(());
        }
        let page = list_page(bucket, &listing.prefix, start.as_deref(), token.take(), max_keys).await?;
        for object in not_done(ctx, &job.account_id, &bucket.name, page.objects).await? {
            if state.budget == 0 {
                // Resume after the last object read (the cursor says so already).
                state.outcome.more_pending = true;
                return Ok(());
            }
            state.budget -= 1;
            let cursor = state.checkpoint.cursor(listing);
            if cursor.last_key.as_ref().is_none_or(|last| *last < object.key) {
                cursor.last_key = Some(object.key.clone());
            }
            cursor.resume_after = Some(object.key.clone());
            read_object(ctx, job, bucket, &object, state).await?;
        }
        match page.next_token {
            Some(next) => token = Some(next),
            None => return save_position(ctx, job, state, listing, None).await,
        }
        if let Some(last) = page.last_key {
            state.checkpoint.cursor(listing).resume_after = Some(last);
        }
    }
    // A long listing: the next run goes on from the last key listed.
    state.outcome.more_pending = true;
    let resume = state.checkpoint.cursor(listing).resume_after.clone();
    save_position(ctx, job, state, listing, resume).await
}

/// Saves where the listing stands, when that changed.
async fn save_position(
    ctx: &PollContext,
    job: &mut Job,
    state: &mut RunState,
    listing: &Listing,
    resume_after: Option<String>,
) -> Result<(), PollError> {
    state.checkpoint.cursor(listing).resume_after = resume_after;
    let checkpoint = state.checkpoint.to_value();
    if checkpoint == job.checkpoint {
        return Ok(());
    }
    let mut tx = crate::db::begin(&ctx.pool).await?;
    job.save_checkpoint(&mut tx, checkpoint, None, 0).await?;
    tx.commit().await?;
    Ok(())
}

/// The listed objects not read yet and not failing (a new ETag is a new object), in key
/// order. One query for one page's keys.
async fn not_done(
    ctx: &PollContext,
    account_id: &str,
    bucket: &str,
    mut listed: Vec<Listed>,
) -> Result<Vec<Listed>, sqlx::Error> {
    if listed.is_empty() {
        return Ok(listed);
    }
    let keys: Vec<String> = listed.iter().map(|o| o.key.clone()).collect();
    let done = sqlx::query!(
        r#"SELECT object_key AS "object_key!", etag AS "etag!" FROM ingested_objects
           WHERE account_id = $1 AND bucket = $2 AND object_key = ANY($3)
           UNION ALL
           SELECT object_key, etag FROM s3_object_failures
           WHERE account_id = $1 AND bucket = $2 AND object_key = ANY($3)"#,
        account_id,
        bucket,
        &keys
    )
    .fetch_all(&ctx.pool)
    .await?;
    let done: std::collections::HashSet<(String, String)> = done.into_iter().map(|r| (r.object_key, r.etag)).collect();
    listed.retain(|o| !done.contains(&(o.key.clone(), o.etag.clone())));
    listed.sort_by(|a, b| a.key.cmp(&b.key));
    Ok(listed)
}

// ---------------------------------------------------------------------------------------------
// Reading an object

/// Why an object was not read.
enum ObjectError {
    /// The object itself: recorded, retried, given up after the last try.
    Failed(String),
    /// It was deleted since it was listed.
    Gone,
    /// Not the object's fault (throttling, an unreachable endpoint, the database): the run fails
    /// and the job retries.
    Run(PollError),
}

impl From<sqlx::Error> for ObjectError {
    fn from(error: sqlx::Error) -> Self {
        Self::Run(error.into())
    }
}

/// Reads one object and stores its records, or records why it could not be read.
async fn read_object(
    ctx: &PollContext,
    job: &mut Job,
    bucket: &Bucket,
    object: &Listed,
    state: &mut RunState,
) -> Result<(), PollError> {
    let checkpoint = state.checkpoint.to_value();
    if let ObjectRead::Stored(stored) = ingest_object(ctx, job, bucket, object, checkpoint).await? {
        state.outcome.stored += stored;
    }
    Ok(())
}

/// What became of an object read.
#[derive(Debug, PartialEq)]
pub(crate) enum ObjectRead {
    /// Its records are stored (this many), it is recorded as read.
    Stored(u64),
    /// It was deleted meanwhile.
    Gone,
    /// It could not be read: recorded in `s3_object_failures`.
    Failed,
}

/// Reads one object and, in one transaction with `checkpoint`, stores its records and marks it
/// read, or records why it could not be read (or that it is gone).
pub(crate) async fn ingest_object(
    ctx: &PollContext,
    job: &mut Job,
    bucket: &Bucket,
    object: &Listed,
    checkpoint: serde_json::Value,
) -> Result<ObjectRead, PollError> {
    match fetch_and_parse(ctx, bucket, default_account(job, &object.key), object).await {
        Ok((rows, errors)) => {
            Ok(ObjectRead::Stored(store_object(ctx, job, &bucket.name, object, rows, errors, checkpoint).await?))
        }
        Err(ObjectError::Gone) => {
            tracing::info!(job_id = job.job_id, bucket = %bucket.name, key = %object.key, "object deleted since listed");
            let mut tx = crate::db::begin(&ctx.pool).await?;
            forget_failures(&mut tx, &job.account_id, &bucket.name, &object.key).await?;
            job.save_checkpoint(&mut tx, checkpoint, None, 0).await?;
            tx.commit().await?;
            Ok(ObjectRead::Gone)
        }
        Err(ObjectError::Failed(reason)) => {
            record_failure(ctx, job, &bucket.name, object, &reason, checkpoint).await?;
            Ok(ObjectRead::Failed)
        }
        Err(ObjectError::Run(error)) => Err(error),
    }
}

/// Where an object stands: the same test the listing makes, for one object.
#[derive(Debug, PartialEq)]
pub(crate) enum ObjectState {
    New,
    /// Read already (this ETag).
    Read,
    /// Failed, to be tried again.
    Retrying,
    /// Failed on its last try.
    GivenUp,
}

pub(crate) async fn object_state(
    ctx: &PollContext,
    account_id: &str,
    bucket: &str,
    object: &Listed,
) -> Result<ObjectState, sqlx::Error> {
    let row = sqlx::query!(
        r#"SELECT EXISTS (SELECT 1 FROM ingested_objects
                          WHERE account_id = $1 AND bucket = $2 AND object_key = $3 AND etag = $4) AS "read!",
                  (SELECT next_attempt_at IS NULL FROM s3_object_failures
                   WHERE account_id = $1 AND bucket = $2 AND object_key = $3 AND etag = $4) AS given_up"#,
        account_id,
        bucket,
        object.key,
        object.etag
    )
    .fetch_one(&ctx.pool)
    .await?;
    Ok(match (row.read, row.given_up) {
        (true, _) => ObjectState::Read,
        (false, Some(true)) => ObjectState::GivenUp,
        (false, Some(false)) => ObjectState::Retrying,
        (false, None) => ObjectState::New,
    })
}

/// The account of records that name none: the job's, or in a log archive the account the key
/// is under (`…/<account>/CloudTrail/…`). Events name theirs (`recipientAccountId`), which wins.
fn default_account<'a>(job: &'a Job, key: &'a str) -> &'a str {
    if job.source != Source::CloudTrailArchive {
        return &job.account_id;
    }
    let parts: Vec<&str> = key.split('/').collect();
    parts
        .windows(2)
        .find(|pair| pair[1] == "CloudTrail" && pair[0].len() == 12 && pair[0].bytes().all(|b| b.is_ascii_digit()))
        .map_or(&job.account_id, |pair| pair[0])
}

/// Downloads one object, streaming it into the parser on a blocking thread: its rows and
/// record errors.
async fn fetch_and_parse(
    ctx: &PollContext,
    bucket: &Bucket,
    account_id: &str,
    object: &Listed,
) -> Result<(PageRows, Vec<String>), ObjectError> {
    let limit = OPTIONS.max_object_bytes;
    let label = format!("s3://{}/{}", bucket.name, object.key);
    if object.size as u64 > limit {
        return Err(ObjectError::Failed(too_large(&label, object.size as u64, limit)));
    }
    let sent = bucket.client.get_object().bucket(&bucket.name).key(&object.key).send().await;
    let response = match sent {
        Ok(response) => response,
        Err(error) => return Err(object_error(AwsError::from_sdk("s3:GetObject", &bucket.region, error), &label)),
    };
    if let Some(length) = response.content_length().filter(|l| *l as u64 > limit) {
        return Err(ObjectError::Failed(too_large(&label, length as u64, limit)));
    }
    let (chunks, body) = mpsc::channel(4);
    let pump = tokio::spawn(pump_body(response.body, chunks, limit));
    let (account_id, geo, path) = (account_id.to_owned(), ctx.geo.clone(), Arc::new(PathBuf::from(&label)));
    let reader = BodyReader { chunks: body, current: Bytes::new() };
    let parsed = tokio::task::spawn_blocking(move || parse_object(reader, path, account_id, geo, limit)).await;
    pump.abort();
    match parsed {
        Ok(Ok(parsed)) => Ok(parsed),
        Ok(Err(failure)) => Err(ObjectError::Failed(format!("{label}: {failure}"))),
        Err(error) => Err(ObjectError::Failed(format!("{label}: the parser stopped: {error}"))),
    }
}

fn too_large(label: &str, size: u64, limit: u64) -> String {
    format!("{label}: {size} bytes, more than the {limit} allowed (SKYWARDEN_S3_MAX_OBJECT_MB)")
}

/// What a refused GetObject means for the object.
fn object_error(error: AwsError, label: &str) -> ObjectError {
    match error.kind {
        _ if error.code.as_deref() == Some("NoSuchKey") => ObjectError::Gone,
        AwsErrorKind::AccessDenied | AwsErrorKind::Rejected => ObjectError::Failed(format!("{label}: {error}")),
        _ => ObjectError::Run(error.into()),
    }
}

/// Feeds an object's body to the parser chunk by chunk, a few chunks ahead at most; past
/// `limit` bytes it sends an error instead.
async fn pump_body(mut body: aws_sdk_s3::primitives::ByteStream, chunks: mpsc::Sender<io::Result<Bytes>>, limit: u64) {
    let mut total: u64 = 0;
    loop {
        let next = match body.try_next().await {
            Ok(Some(chunk)) => {
                total += chunk.len() as u64;
                if total > limit {
                    Err(io::Error::other(format!("more than the {limit} bytes allowed (SKYWARDEN_S3_MAX_OBJECT_MB)")))
                } else {
                    Ok(chunk)
                }
            }
            Ok(None) => return,
            Err(error) => Err(io::Error::other(error)),
        };
        let last = next.is_err();
        if chunks.send(next).await.is_err() || last {
            return;
        }
    }
}

/// An object's body as a blocking reader, fed by [`pump_body`].
struct BodyReader {
    chunks: mpsc::Receiver<io::Result<Bytes>>,
    current: Bytes,
}

impl Read for BodyReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while self.current.is_empty() {
            match self.chunks.blocking_recv() {
                Some(Ok(chunk)) => self.current = chunk,
                Some(Err(error)) => return Err(error),
                None => return Ok(0),
            }
        }
        let n = buf.len().min(self.current.len());
        buf[..n].copy_from_slice(&self.current[..n]);
        self.current = self.current.slice(n..);
        Ok(n)
    }
}

/// Parses one object with the importer's parser (the same formats as `skywarden import`):
/// its rows and record errors, or why it could not be read as a whole.
fn parse_object(
    reader: BodyReader,
    label: Arc<PathBuf>,
    account_id: String,
    geo: Option<Arc<crate::geo::GeoDb>>,
    limit: u64,
) -> Result<(PageRows, Vec<String>), String> {
    let mut rows = PageRows::default();
    let opened = source::open_reader(reader).map_err(|error| format!("cannot read: {error}"))?;
    let context = ParseContext::for_account(&account_id, Vec::new(), limit.saturating_mul(SPOOL_FACTOR));
    let mut geo = GeoCache::new(geo);
    let default_account = source::account_from_file_name(&label).or(Some(account_id));
    let report = parse_content(opened, label.clone(), default_account, &context, &mut geo, &mut |batch| {
        rows.add_batch(batch);
        true
    });
    if let Some(failure) = report.failure {
        return Err(failure);
    }
    let errors = report.errors.into_iter().map(|e| format!("{}: {e}", label.display())).collect();
    Ok((rows, errors))
}

/// Stores one object's rows, marks it read (and no longer failing) and saves the checkpoint,
/// in one transaction. Returns how many rows were stored.
async fn store_object(
    ctx: &PollContext,
    job: &mut Job,
    bucket: &str,
    object: &Listed,
    mut rows: PageRows,
    errors: Vec<String>,
    checkpoint: serde_json::Value,
) -> Result<u64, PollError> {
    rows.prepare(ctx).await?;
    let mut tx = crate::db::begin(&ctx.pool).await?;
    let stored = rows.store(&mut tx).await?;
    let mut all_errors = errors;
    all_errors.extend(rows.rejected.iter().cloned());
    sqlx::query!(
        "INSERT INTO ingested_objects (account_id, bucket, object_key, etag, size, records, errors)
             VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT DO NOTHING",
        job.account_id,
        bucket,
        object.key,
        object.etag,
        object.size,
        rows.len() as i64,
        &all_errors
    )
    .execute(&mut *tx)
    .await?;
    forget_failures(&mut tx, &job.account_id, bucket, &object.key).await?;
    job.save_checkpoint(&mut tx, checkpoint, object.modified, stored).await?;
    tx.commit().await?;
    for error in &all_errors {
        tracing::warn!(job_id = job.job_id, bucket, key = %object.key, error, "object record not stored");
    }
    Ok(stored)
}

// ---------------------------------------------------------------------------------------------
// Failed objects

/// Records a failed try of an object (and moves the checkpoint past it), in one transaction.
async fn record_failure(
    ctx: &PollContext,
    job: &mut Job,
    bucket: &str,
    object: &Listed,
    reason: &str,
    checkpoint: serde_json::Value,
) -> Result<(), PollError> {
    let options = &*OPTIONS;
    let mut tx = crate::db::begin(&ctx.pool).await?;
    let row = sqlx::query!(
        r#"INSERT INTO s3_object_failures (account_id, bucket, object_key, etag, size, job_id, source, last_error,
                                           next_attempt_at)
           VALUES ($1, $2, $3, $4, $5, $6, $7, $8,
                   CASE WHEN $9 > 1 THEN now() + make_interval(secs => $10) END)
           ON CONFLICT (account_id, bucket, object_key, etag) DO UPDATE SET
               attempts = s3_object_failures.attempts + 1, last_error = EXCLUDED.last_error,
               last_failed_at = now(), job_id = EXCLUDED.job_id,
               next_attempt_at = CASE WHEN s3_object_failures.attempts + 1 < $9
                   THEN now() + make_interval(secs => LEAST($10 * power(4, s3_object_failures.attempts), $11)) END
           RETURNING attempts, next_attempt_at"#,
        job.account_id,
        bucket,
        object.key,
        object.etag,
        object.size,
        job.job_id,
        job.source.as_str(),
        reason,
        options.max_attempts,
        options.retry_after.as_secs_f64(),
        MAX_RETRY_WAIT.as_secs_f64(),
    )
    .fetch_one(&mut *tx)
    .await?;
    job.save_checkpoint(&mut tx, checkpoint, None, 0).await?;
    tx.commit().await?;
    match row.next_attempt_at {
        Some(next) => tracing::warn!(job_id = job.job_id, attempt = row.attempts, max = options.max_attempts,
            retry_at = %next, reason, "S3 object could not be read; it will be tried again"),
        None => tracing::error!(
            job_id = job.job_id,
            attempts = row.attempts,
            reason,
            "S3 object could not be read and is given up; see `accounts status` and the metrics"
        ),
    }
    Ok(())
}

async fn forget_failures(
    tx: &mut sqlx::PgConnection,
    account_id: &str,
    bucket: &str,
    key: &str,
) -> Result<(), sqlx::Error> {
    sqlx::query!(
        "DELETE FROM s3_object_failures WHERE account_id = $1 AND bucket = $2 AND object_key = $3",
        account_id,
        bucket,
        key
    )
    .execute(&mut *tx)
    .await?;
    Ok(())
}

/// Tries again the failed objects of a job that reads no listing (a queue job), in one bucket,
/// whose back-off is over: their messages may have gone to the dead-letter queue.
pub(crate) async fn retry_failed(
    ctx: &PollContext,
    session: &AccountSession,
    account: &Account,
    job: &mut Job,
    bucket: &str,
) -> Result<RunOutcome, PollError> {
    let bucket = open_bucket(ctx, session, account, job, bucket).await?;
    let mut outcome = RunOutcome::default();
    for object in due_failures(ctx, job, &bucket, ctx.options.max_pages_per_run.max(1)).await? {
        let checkpoint = job.checkpoint.clone();
        if let ObjectRead::Stored(stored) = ingest_object(ctx, job, &bucket, &object, checkpoint).await? {
            outcome.stored += stored;
        }
    }
    Ok(outcome)
}

/// Tries again the job's failed objects whose back-off is over, within the run's budget.
async fn retry_due(ctx: &PollContext, job: &mut Job, bucket: &Bucket, state: &mut RunState) -> Result<(), PollError> {
    for object in due_failures(ctx, job, bucket, state.budget).await? {
        state.budget -= 1;
        read_object(ctx, job, bucket, &object, state).await?;
    }
    Ok(())
}

/// The job's failed objects in `bucket` whose back-off is over, at most `limit`.
async fn due_failures(ctx: &PollContext, job: &Job, bucket: &Bucket, limit: usize) -> Result<Vec<Listed>, sqlx::Error> {
    let due = sqlx::query!(
        "SELECT object_key, etag, size FROM s3_object_failures
         WHERE job_id = $1 AND bucket = $2 AND next_attempt_at <= now()
         ORDER BY next_attempt_at LIMIT $3",
        job.job_id,
        bucket.name,
        limit as i64
    )
    .fetch_all(&ctx.pool)
    .await?;
    Ok(due.into_iter().map(|r| Listed { key: r.object_key, etag: r.etag, size: r.size, modified: None }).collect())
}

/// An object that could not be read: being retried, or given up.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct FailedObject {
    pub account_id: String,
    pub job_id: i64,
    pub source: String,
    pub bucket: String,
    pub key: String,
    pub size: i64,
    pub attempts: i32,
    pub last_error: String,
    pub first_failed_at: DateTime<Utc>,
    pub last_failed_at: DateTime<Utc>,
    /// When it is tried again; none once given up.
    pub next_attempt_at: Option<DateTime<Utc>>,
}

/// The objects that failed, of one account or all, at most `limit`: given up first, then the
/// next due; the newest failure first within each.
pub async fn failed_objects(
    pool: &sqlx::PgPool,
    account_id: Option<&str>,
    limit: i64,
) -> Result<Vec<FailedObject>, sqlx::Error> {
    sqlx::query_as!(
        FailedObject,
        r#"SELECT account_id, job_id, source, bucket, object_key AS key, size, attempts, last_error, first_failed_at,
                  last_failed_at, next_attempt_at
           FROM s3_object_failures WHERE $1::text IS NULL OR account_id = $1
           ORDER BY next_attempt_at NULLS FIRST, last_failed_at DESC, bucket, object_key
           LIMIT $2"#,
        account_id,
        limit
    )
    .fetch_all(pool)
    .await
}

/// "Retry now": makes an account's given-up objects (all, those of a bucket, or one) due for
/// one more try, and their jobs due now. Each keeps its count of tries, so one more failure
/// gives it up again. Objects of a retired job stay given up. Returns how many were made due.
pub async fn retry_now(
    pool: &sqlx::PgPool,
    account_id: &str,
    bucket: Option<&str>,
    key: Option<&str>,
) -> Result<u64, sqlx::Error> {
    let retried = sqlx::query_scalar!(
        r#"WITH retried AS (
               UPDATE s3_object_failures SET next_attempt_at = now()
               WHERE account_id = $1 AND next_attempt_at IS NULL
                 AND ($2::text IS NULL OR bucket = $2) AND ($3::text IS NULL OR object_key = $3)
                 AND job_id IN (SELECT job_id FROM poll_jobs WHERE enabled)
               RETURNING job_id),
           due AS (
               UPDATE poll_jobs SET next_run_at = now(), run_requested_at = now()
               WHERE job_id IN (SELECT job_id FROM retried))
           SELECT count(*) AS "retried!" FROM retried"#,
        account_id,
        bucket,
        key
    )
    .fetch_one(pool)
    .await?;
    Ok(retried as u64)
}

/// Failed objects by account and source: (account, source, retrying, given up).
pub async fn failure_counts(pool: &sqlx::PgPool) -> Result<Vec<(String, String, i64, i64)>, sqlx::Error> {
    let rows = sqlx::query!(
        r#"SELECT account_id, source, count(*) FILTER (WHERE next_attempt_at IS NOT NULL) AS "retrying!",
                  count(*) FILTER (WHERE next_attempt_at IS NULL) AS "failed!"
           FROM s3_object_failures GROUP BY account_id, source ORDER BY account_id, source"#
    )
    .fetch_all(pool)
    .await?;
    Ok(rows.into_iter().map(|r| (r.account_id, r.source, r.retrying, r.failed)).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn now() -> DateTime<Utc> {
        "2026-11-30T13:00:00Z".parse().unwrap()
    }

    #[test]
    fn listing_restarts_the_day_before_the_last_key() {
        let listing = Listing {
            layout: KeyLayout::Classic,
            prefix: "AWSLogs/111122223333/CloudTrail/us-east-1/".into(),
            own_cursor: false,
        };
        let key = format!("{}2026/03/01/111122223333_CloudTrail_us-east-1_20260301T0005Z_abc.json.gz", listing.prefix);
        let cursor = Cursor { last_key: Some(key.clone()), resume_after: None };
        let week = Duration::from_secs(7 * 86_400);
        assert_eq!(
            start_after(&listing, &cursor, now(), week).as_deref(),
            Some("AWSLogs/111122223333/CloudTrail/us-east-1/2026/02/28")
        );
        let backlog = Cursor { resume_after: Some(key.clone()), ..cursor };
        assert_eq!(start_after(&listing, &backlog, now(), week), Some(key));
    }

    #[test]
    fn a_first_run_lists_from_the_lookback_window_in_either_layout() {
        let week = Duration::from_secs(7 * 86_400);
        let classic = Listing {
            layout: KeyLayout::Classic,
            prefix: "AWSLogs/1/vpcflowlogs/us-east-1/".into(),
            own_cursor: false,
        };
        assert_eq!(
            start_after(&classic, &Cursor::default(), now(), week).as_deref(),
            Some("AWSLogs/1/vpcflowlogs/us-east-1/2026/11/23")
        );
        let hive = Listing {
            layout: KeyLayout::Hive,
            prefix: "AWSLogs/aws-account-id=1/aws-service=vpcflowlogs/aws-region=us-east-1/".into(),
            own_cursor: false,
        };
        assert_eq!(
            start_after(&hive, &Cursor::default(), now(), week).as_deref(),
            Some("AWSLogs/aws-account-id=1/aws-service=vpcflowlogs/aws-region=us-east-1/year=2026/month=11/day=23")
        );
        let hive_key = format!("{}year=2026/month=11/day=30/hour=12/f.log.parquet", hive.prefix);
        let cursor = Cursor { last_key: Some(hive_key), resume_after: None };
        assert!(start_after(&hive, &cursor, now(), week).unwrap().ends_with("year=2026/month=11/day=29"));
    }

    #[test]
    fn checkpoints_of_earlier_releases_are_the_classic_cursor() {
        let old: Checkpoint = serde_json::from_value(serde_json::json!({"last_key": "k"})).unwrap();
        assert_eq!(old.classic.last_key.as_deref(), Some("k"));
        assert!(old.hive.is_none());
        let mut new = Checkpoint::default();
        let hive = Listing { layout: KeyLayout::Hive, prefix: "p/".into(), own_cursor: false };
        new.cursor(&hive).resume_after = Some("h".into());
        assert_eq!(new.to_value(), serde_json::json!({"hive": {"resume_after": "h"}}));
    }

    #[tokio::test]
    async fn bodies_are_streamed_and_cut_at_the_size_limit() {
        for (limit, whole) in [(10, true), (9, false)] {
            let (chunks, body) = mpsc::channel(1);
            let stream = aws_sdk_s3::primitives::ByteStream::from(b"0123456789".to_vec());
            let pump = tokio::spawn(pump_body(stream, chunks, limit));
            let read = tokio::task::spawn_blocking(move || {
                let mut out = Vec::new();
                BodyReader { chunks: body, current: Bytes::new() }.read_to_end(&mut out).map(|_| out)
            })
            .await
            .unwrap();
            pump.await.unwrap();
            match read {
                Ok(out) => assert!(whole && out == b"0123456789"),
                Err(error) => assert!(!whole && error.to_string().contains("more than the 9 bytes allowed"), "{error}"),
            }
        }
    }

    #[test]
    fn a_log_archive_keeps_a_cursor_per_prefix_and_files_records_under_the_key_account() {
        let mut checkpoint = Checkpoint::default();
        let prefix = |account: &str| format!("AWSLogs/o-abc123def4/{account}/CloudTrail/eu-west-1/");
        let alpha = Listing { layout: KeyLayout::Classic, prefix: prefix("111122223333"), own_cursor: true };
        let beta = Listing { layout: KeyLayout::Classic, prefix: prefix("444455556666"), own_cursor: true };
        checkpoint.cursor(&alpha).last_key = Some("a".into());
        checkpoint.cursor(&beta).resume_after = Some("b".into());
        assert_eq!(checkpoint.cursor(&alpha).last_key.as_deref(), Some("a"));
        assert_eq!(checkpoint.classic, Cursor::default(), "the job's own cursor is not touched");
        let saved: Checkpoint = serde_json::from_value(checkpoint.to_value()).unwrap();
        assert_eq!(saved.prefixes.len(), 2);

        let mut job = Job {
            job_id: 1,
            account_id: "log-archive:org-trail".into(),
            region: "eu-west-1".into(),
            source: Source::CloudTrailArchive,
            target: "s3://org-trail/AWSLogs/o-abc123def4/".into(),
            interval: Duration::from_secs(300),
            checkpoint: serde_json::Value::Null,
            owner: String::new(),
            lease: Duration::from_secs(300),
            throttled: 0,
        };
        let key = format!("{}2026/11/30/111122223333_CloudTrail_eu-west-1_x.json.gz", alpha.prefix);
        assert_eq!(default_account(&job, &key), "111122223333");
        assert_eq!(default_account(&job, "AWSLogs/o-abc123def4/not-an-account/CloudTrail/x"), "log-archive:org-trail");
        job.source = Source::CloudTrailS3;
        assert_eq!(default_account(&job, &key), "log-archive:org-trail", "an account's own job: its account");
    }

    #[test]
    fn targets_are_bucket_and_prefix() {
        assert_eq!(parse_target("s3://logs/AWSLogs/1/").unwrap(), ("logs", "AWSLogs/1/"));
        assert!(parse_target("logs/AWSLogs").is_err());
        assert!(parse_target("s3:///x").is_err());
    }
}
