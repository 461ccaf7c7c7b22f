//! Config snapshots: collect the current resources of one region (or IAM and the account's
//! trails, for `global`) and record what changed since the last snapshot.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::{Job, PollContext, PollError, RunOutcome};
use crate::accounts::Account;
use crate::aws::AccountSession;
use crate::inventory::collect::{self, Collected};
use crate::inventory::{GLOBAL_REGION, ResourceConfig, store};

/// What one snapshot job reads: a region's resources, or IAM and the account's trails.
async fn collect(session: &AccountSession, account: &Account, job: &Job) -> Vec<Collected> {
    if job.region != GLOBAL_REGION {
        return collect::collect_regional(&session.ec2(&job.region), &job.region).await;
    }
    let (iam, trail_regions) = (session.iam(), account.trail_regions());
    let client_for = |region: &str| session.cloudtrail(region);
    let (mut global, trails) = tokio::join!(
        collect::collect_global(&iam, &job.account_id),
        collect::collect_trails(&client_for, &trail_regions)
    );
    global.push(trails);
    global
}

/// Trails are the account-wide snapshot's: those an earlier release recorded under their home
/// region (or a snapshot dump imported there) move to `global`, so this snapshot compares them
/// with what it saw instead of recording them anew.
async fn adopt_trails(tx: &mut sqlx::PgConnection, account_id: &str) -> Result<(), sqlx::Error> {
    sqlx::query!(
        "UPDATE resources SET region = $2 WHERE account_id = $1 AND resource_type = $3 AND region <> $2",
        account_id,
        GLOBAL_REGION,
        collect::TRAIL
    )
    .execute(&mut *tx)
    .await?;
    Ok(())
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct Checkpoint {
    #[serde(default)]
    snapshots: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    last_captured_at: Option<DateTime<Utc>>,
}

pub async fn run(
    ctx: &PollContext,
    session: &AccountSession,
    account: &Account,
    job: &mut Job,
) -> Result<RunOutcome, PollError> {
    let collected = collect(session, account, job).await;
    let mut types = Vec::new();
    let mut resources: Vec<ResourceConfig> = Vec::new();
    let mut errors = Vec::new();
    for item in collected {
        match item.result {
            Ok(found) => {
                types.push(item.resource_type);
                resources.extend(found);
            }
            // A type that failed keeps its stored resources: not seeing them is not a deletion.
            Err(error) => errors.push(error),
        }
    }

    let checkpoint: Checkpoint = serde_json::from_value(job.checkpoint.clone()).unwrap_or_default();
    let mut tx = crate::db::begin(&ctx.pool).await?;
    if types.contains(&collect::TRAIL) {
        adopt_trails(&mut tx, &job.account_id).await?;
    }
    let recorded = store::record_snapshot(
        &mut tx,
        &job.account_id,
        &job.region,
        &types,
        &resources,
        checkpoint.snapshots == 0,
        checkpoint.last_captured_at,
    )
    .await?;
    let linked = store::link_changes(&mut tx, &job.account_id).await?;
    let now = Utc::now();
    let next = Checkpoint { snapshots: checkpoint.snapshots + 1, last_captured_at: Some(now) };
    job.save_checkpoint(
        &mut tx,
        serde_json::to_value(&next).expect("checkpoint serialises"),
        Some(now),
        recorded.versions(),
    )
    .await?;
    tx.commit().await?;
    tracing::info!(
        job_id = job.job_id,
        account_id = %job.account_id,
        region = %job.region,
        resources = recorded.resources,
        created = recorded.created,
        modified = recorded.modified,
        deleted = recorded.deleted,
        linked,
        "snapshot recorded"
    );
    match errors.into_iter().next() {
        // The types that could be read are stored; the job still reports the failure.
        Some(error) => Err(error.into()),
        None => Ok(RunOutcome { stored: recorded.versions(), ..Default::default() }),
    }
}
