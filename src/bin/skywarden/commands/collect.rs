//! `posture run --collect`: a fresh configuration snapshot of accounts, taken by running their
//! config-snapshot poll jobs here and now with the pollers' own collection
//! (`pollers::snapshot`), so the resource versions, change records and job checkpoints are
//! those a worker would have written. A job another worker is running is left to it.

use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;
use skywarden::accounts::{self, Account, AccountKind};
use skywarden::aws::AccountSession;
use skywarden::db::Database;
use skywarden::db::partitions::PartitionCache;
use skywarden::pollers::worker::Worker;
use skywarden::pollers::{Job, PollContext, PollOptions, Source, snapshot};

use super::aws_credentials;

/// What collecting one snapshot job did.
#[derive(Debug, Serialize)]
pub(crate) struct Collected {
    pub(crate) account_id: String,
    /// The job's region, or `global` (IAM and trails); empty when the account failed as a whole.
    pub(crate) region: String,
    /// Resource versions stored (new or changed resources, deletions).
    pub(crate) stored: u64,
    pub(crate) error: Option<String>,
}

/// Snapshots `named` accounts (every polled account when empty), each of its snapshot jobs in
/// turn. Failures are reported per job, never stop the others.
pub(crate) async fn collect(db: &Database, named: &[String]) -> anyhow::Result<Vec<Collected>> {
    let (settings, base) = aws_credentials::load_checked(
        "`posture run --collect` reads AWS with them; without --collect it evaluates the stored snapshots",
    )
    .await?;
    let ctx = PollContext {
        pool: db.pool.clone(),
        base,
        settings,
        options: PollOptions::default(),
        geo: None,
        partitions: Arc::new(PartitionCache::default()),
    };
    let owner = format!("{}-posture-collect", Worker::default_id());
    let mut collected = Vec::new();
    for account in accounts_to_collect(db, named).await? {
        let failed = |error: String| Collected {
            account_id: account.account_id.clone(),
            region: String::new(),
            stored: 0,
            error: Some(error),
        };
        let session = match AccountSession::assume(&ctx.base, &ctx.settings, &account.assume_target()).await {
            Ok(session) => session,
            Err(error) => {
                collected.push(failed(error.to_string()));
                continue;
            }
        };
        let jobs = lease_snapshot_jobs(db, &account.account_id, &owner, ctx.options.lease).await?;
        if jobs.is_empty() {
            collected
                .push(failed("no config-snapshot job free: each is running on a worker, parked or retired".into()));
        }
        for mut job in jobs {
            let result = snapshot::run(&ctx, &session, &account, &mut job).await;
            job.finish(&ctx.pool, &result).await?;
            collected.push(Collected {
                account_id: job.account_id,
                region: job.region,
                stored: result.as_ref().map_or(0, |outcome| outcome.stored),
                error: result.err().map(|error| error.to_string()),
            });
        }
    }
    Ok(collected)
}

/// The accounts named (each must be an AWS account, not an organization or log archive), or
/// every enabled account that is polled.
async fn accounts_to_collect(db: &Database, named: &[String]) -> anyhow::Result<Vec<Account>> {
    if named.is_empty() {
        let all = accounts::list(&db.pool).await?;
        return Ok(all
            .into_iter()
            .filter(|a| a.kind == AccountKind::Account && a.enabled && a.is_active_member())
            .collect());
    }
    let mut chosen = Vec::new();
    for id in named {
        let account = accounts::load(&db.pool, id).await?;
        anyhow::ensure!(
            account.kind == AccountKind::Account,
            "--account {id}: an organization or log archive has no configuration to snapshot; name its member accounts"
        );
        chosen.push(account);
    }
    Ok(chosen)
}

/// Leases the account's config-snapshot jobs that no worker holds, as a worker's claim does
/// (the lease makes any worker skip them until they finish here).
async fn lease_snapshot_jobs(
    db: &Database,
    account_id: &str,
    owner: &str,
    lease: Duration,
) -> anyhow::Result<Vec<Job>> {
    let rows = sqlx::query!(
        r#"UPDATE poll_jobs SET lease_owner = $1, lease_expires_at = now() + make_interval(secs => $2),
                last_started_at = now()
           WHERE account_id = $3 AND source = $4 AND enabled AND parked_at IS NULL
             AND (lease_expires_at IS NULL OR lease_expires_at < now())
           RETURNING job_id, region, target, interval_seconds, checkpoint"#,
        owner,
        lease.as_secs_f64(),
        account_id,
        Source::ConfigSnapshot.as_str(),
    )
    .fetch_all(&db.pool)
    .await?;
    Ok(rows
        .into_iter()
        .map(|row| Job {
            job_id: row.job_id,
            account_id: account_id.to_owned(),
            region: row.region,
            source: Source::ConfigSnapshot,
            target: row.target,
            interval: Duration::from_secs(row.interval_seconds.max(1) as u64),
            checkpoint: row.checkpoint,
            owner: owner.to_owned(),
            lease,
            throttled: 0,
        })
        .collect())
}
