//! Trail files and flow log files delivered to S3.
//!
//! Keys sort by day under `AWSLogs/ACCOUNT/{CloudTrail,vpcflowlogs}/REGION/YYYY/MM/DD/`, but
//! files of one day do not arrive in key order. So each run lists from the day before the last
//! key it saw and skips the objects it already stored (`ingested_objects`, written in the
//! transaction that stores the object's records): late files are found and nothing is read
//! twice.

use std::path::PathBuf;
use std::sync::Arc;

use chrono::{DateTime, Duration as ChronoDuration, NaiveDate, Utc};
use serde::{Deserialize, Serialize};

use super::{Job, PollContext, PollError, RunOutcome};
use crate::accounts::Account;
use crate::aws::{AccountSession, AwsError};
use crate::geo::GeoCache;
use crate::ingest::{ParseContext, parse_content, source};
use crate::pollers::rows::PageRows;

#[derive(Debug, Default, Serialize, Deserialize)]
struct Checkpoint {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    last_key: Option<String>,
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

/// The listing start for a checkpoint: the day before the last key's day, so files delivered
/// late for that day are still listed.
fn list_start(prefix: &str, last_key: Option<&str>) -> Option<String> {
    let rest = last_key?.strip_prefix(prefix)?;
    let day = rest.get(..10)?;
    let date = NaiveDate::parse_from_str(day, "%Y/%m/%d").ok()?;
    let before = date - ChronoDuration::days(1);
    Some(format!("{prefix}{}", before.format("%Y/%m/%d")))
}

struct Listed {
    key: String,
    etag: String,
    size: i64,
    modified: Option<DateTime<Utc>>,
}

/// The bucket a job reads, with its client and region.
struct Bucket {
    client: aws_sdk_s3::Client,
    name: String,
    region: String,
}

pub async fn run(
    ctx: &PollContext,
    session: &AccountSession,
    account: &Account,
    job: &mut Job,
) -> Result<RunOutcome, PollError> {
    let (bucket, prefix) = parse_target(&job.target)?;
    let (bucket, prefix) = (bucket.to_owned(), prefix.to_owned());
    let region = account.sources.bucket_region.clone().unwrap_or_else(|| job.region.clone());
    let bucket = Bucket { client: session.s3(&region), name: bucket, region };
    let checkpoint: Checkpoint = serde_json::from_value(job.checkpoint.clone()).unwrap_or_default();
    let mut last_key = checkpoint.last_key;

    let listed = list_objects(&bucket, &prefix, list_start(&prefix, last_key.as_deref())).await?;
    let mut pending = not_ingested(ctx, &job.account_id, &bucket.name, listed).await?;
    let mut outcome = RunOutcome::default();
    let limit = ctx.options.max_pages_per_run.max(1);
    if pending.len() > limit {
        outcome.more_pending = true;
        pending.truncate(limit);
    }
    for object in pending {
        let (rows, errors) = fetch_and_parse(ctx, &bucket, &job.account_id, &object).await?;
        last_key = Some(match last_key {
            Some(previous) if previous > object.key => previous,
            _ => object.key.clone(),
        });
        outcome.stored += store_object(ctx, job, &bucket.name, &object, rows, errors, last_key.clone()).await?;
    }
    Ok(outcome)
}

/// The log files under `prefix` after `start_after`: no folders, no digest files.
async fn list_objects(bucket: &Bucket, prefix: &str, start_after: Option<String>) -> Result<Vec<Listed>, PollError> {
    let mut listed = Vec::new();
    let mut pages = bucket
        .client
        .list_objects_v2()
        .bucket(&bucket.name)
        .prefix(prefix)
        .set_start_after(start_after)
        .into_paginator()
        .send();
    while let Some(page) = pages.next().await {
        let page = page.map_err(|e| AwsError::from_sdk("s3:ListBucket", &bucket.region, e))?;
        for object in page.contents() {
            let Some(key) = object.key() else { continue };
            if key.ends_with('/') || key.contains("/CloudTrail-Digest/") {
                continue;
            }
            listed.push(Listed {
                key: key.to_owned(),
                etag: object.e_tag().unwrap_or_default().trim_matches('"').to_owned(),
                size: object.size().unwrap_or(0),
                modified: object.last_modified().and_then(|t| DateTime::from_timestamp_millis(t.to_millis().ok()?)),
            });
        }
    }
    Ok(listed)
}

/// The listed objects not stored yet (a new ETag is a new object), in key order.
async fn not_ingested(
    ctx: &PollContext,
    account_id: &str,
    bucket: &str,
    listed: Vec<Listed>,
) -> Result<Vec<Listed>, sqlx::Error> {
    let keys: Vec<String> = listed.iter().map(|o| o.key.clone()).collect();
    let done = sqlx::query!(
        "SELECT object_key, etag FROM ingested_objects WHERE account_id = $1 AND bucket = $2 AND object_key = ANY($3)",
        account_id,
        bucket,
        &keys
    )
    .fetch_all(&ctx.pool)
    .await?;
    let done: std::collections::HashSet<(String, String)> = done.into_iter().map(|r| (r.object_key, r.etag)).collect();
    let mut pending: Vec<Listed> =
        listed.into_iter().filter(|o| !done.contains(&(o.key.clone(), o.etag.clone()))).collect();
    pending.sort_by(|a, b| a.key.cmp(&b.key));
    Ok(pending)
}

/// Downloads one object and parses it (on a blocking thread): its rows and record errors.
async fn fetch_and_parse(
    ctx: &PollContext,
    bucket: &Bucket,
    account_id: &str,
    object: &Listed,
) -> Result<(PageRows, Vec<String>), PollError> {
    let name = &bucket.name;
    let response = bucket
        .client
        .get_object()
        .bucket(name)
        .key(&object.key)
        .send()
        .await
        .map_err(|e| AwsError::from_sdk("s3:GetObject", &bucket.region, e))?;
    let body = response
        .body
        .collect()
        .await
        .map_err(|e| PollError::Target(format!("s3://{name}/{}: reading the object failed: {e}", object.key)))?;
    let bytes = body.into_bytes();
    let label = Arc::new(PathBuf::from(format!("s3://{name}/{}", object.key)));
    let account_id = account_id.to_owned();
    let geo = ctx.geo.clone();
    tokio::task::spawn_blocking(move || parse_object(bytes.to_vec(), label, account_id, geo))
        .await
        .map_err(|e| PollError::Target(format!("parsing failed: {e}")))
}

/// Stores one object's rows, marks it ingested and moves the checkpoint to `last_key`, in one
/// transaction. Returns how many rows were stored.
async fn store_object(
    ctx: &PollContext,
    job: &mut Job,
    bucket: &str,
    object: &Listed,
    mut rows: PageRows,
    errors: Vec<String>,
    last_key: Option<String>,
) -> Result<u64, PollError> {
    let checkpoint = serde_json::to_value(Checkpoint { last_key }).expect("checkpoint serialises");
    rows.prepare(ctx).await?;
    let mut tx = ctx.pool.begin().await?;
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
    job.save_checkpoint(&mut tx, checkpoint, object.modified, stored).await?;
    tx.commit().await?;
    for error in &all_errors {
        tracing::warn!(job_id = job.job_id, bucket, key = %object.key, error, "object record not stored");
    }
    Ok(stored)
}

/// Parses one object with the importer's parser: the same formats as `skywarden import`.
fn parse_object(
    bytes: Vec<u8>,
    label: Arc<PathBuf>,
    account_id: String,
    geo: Option<Arc<crate::geo::GeoDb>>,
) -> (PageRows, Vec<String>) {
    let mut rows = PageRows::default();
    let opened = match source::open_reader(std::io::Cursor::new(bytes)) {
        Ok(opened) => opened,
        Err(error) => return (rows, vec![format!("{}: cannot read: {error}", label.display())]),
    };
    let context = ParseContext { default_account: Some(account_id.clone()), flow_format: None, batch_rows: 10_000 };
    let mut geo = GeoCache::new(geo);
    let default_account = source::account_from_file_name(&label).or(Some(account_id));
    let report = parse_content(opened, label.clone(), default_account, &context, &mut geo, &mut |batch| {
        rows.add_batch(batch);
        true
    });
    let errors = report.errors.into_iter().map(|e| format!("{}: {e}", label.display())).collect();
    (rows, errors)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listing_restarts_the_day_before_the_last_key() {
        let prefix = "AWSLogs/111122223333/CloudTrail/us-east-1/";
        let key = format!("{prefix}2026/03/01/111122223333_CloudTrail_us-east-1_20260301T0005Z_abc.json.gz");
        assert_eq!(
            list_start(prefix, Some(&key)).as_deref(),
            Some("AWSLogs/111122223333/CloudTrail/us-east-1/2026/02/28")
        );
        assert_eq!(list_start(prefix, None), None);
        assert_eq!(list_start(prefix, Some("elsewhere/x")), None);
    }

    #[test]
    fn targets_are_bucket_and_prefix() {
        assert_eq!(parse_target("s3://logs/AWSLogs/1/").unwrap(), ("logs", "AWSLogs/1/"));
        assert!(parse_target("logs/AWSLogs").is_err());
        assert!(parse_target("s3:///x").is_err());
    }
}
