//! Config snapshots: collect the current resources of one region (or IAM, for `global`) and
//! record what changed since the last snapshot.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::{Job, PollContext, PollError, RunOutcome};
use crate::aws::AccountSession;
use crate::inventory::collect::{self, Collected};
use crate::inventory::{GLOBAL_REGION, ResourceConfig, store};

#[derive(Debug, Default, Serialize, Deserialize)]
struct Checkpoint {
    #[serde(default)]
    snapshots: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    last_captured_at: Option<DateTime<Utc>>,
}

pub async fn run(ctx: &PollContext, session: &AccountSession, job: &mut Job) -> Result<RunOutcome, PollError> {
    let collected: Vec<Collected> = if job.region == GLOBAL_REGION {
        collect::collect_global(&session.iam(), &job.account_id).await
    } else {
        collect::collect_regional(&session.ec2(&job.region), &session.cloudtrail(&job.region), &job.region).await
    };
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
    let mut tx = ctx.pool.begin().await?;
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
