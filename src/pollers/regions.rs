//! The `regions` job: one per account, in the global region, daily. It discovers the account's
//! enabled regions and creates and retires its regional jobs to match (`accounts::regions`).
//! A failure is the job's error, shown like any other job's; it changes no job.

use chrono::Utc;
use serde_json::json;

use super::{Job, PollContext, PollError, RunOutcome};
use crate::accounts::regions;
use crate::aws::AccountSession;

pub async fn run(ctx: &PollContext, session: &AccountSession, job: &mut Job) -> Result<RunOutcome, PollError> {
    // DescribeRegions answers for the whole account in any enabled region; the home region is
    // enabled in every account of its partition.
    let enabled = regions::discover(session, ctx.settings.home_region()).await?;
    let mut tx = crate::db::begin(&ctx.pool).await?;
    let change = regions::record(&mut tx, &job.account_id, &enabled).await?;
    let checkpoint = json!({"enabled_regions": change.enabled, "added": change.added, "retired": change.retired});
    // Covered until now: the job's lag is the age of the account's region list.
    job.save_checkpoint(&mut tx, checkpoint, Some(Utc::now()), 0).await?;
    tx.commit().await?;
    tracing::info!(
        job_id = job.job_id,
        account_id = %job.account_id,
        enabled = change.enabled.len(),
        added = ?change.added,
        retired = ?change.retired,
        "regions discovered"
    );
    // Nothing stored for detection; the jobs it created are due at once.
    Ok(RunOutcome::default())
}
