//! The `organization` job: one per organization, daily, with the role in its management (or
//! delegated-admin) account. It lists the accounts and onboards the new active members, and
//! stops polling those suspended, closed or gone (`accounts::organization`). A failed listing
//! changes nothing and is the job's error, shown like any other job's.

use chrono::Utc;
use serde_json::json;

use super::{Job, PollContext, PollError, RunOutcome};
use crate::accounts::organization;
use crate::aws::AccountSession;

pub async fn run(ctx: &PollContext, session: &AccountSession, job: &mut Job) -> Result<RunOutcome, PollError> {
    let listing = organization::list(session, ctx.settings.home_region()).await?;
    let mut tx = crate::db::begin(&ctx.pool).await?;
    let change = organization::record(&mut tx, &job.account_id, &listing).await?;
    let checkpoint = json!({
        "organization_id": change.organization_id,
        "management_account_id": change.management_account_id,
        "active": change.active.len(),
        "onboarded": change.onboarded,
        "resumed": change.resumed,
        "stopped": change.stopped,
        "separate": change.separate,
        "excluded": change.excluded,
    });
    // Covered until now: the job's lag is the age of the member list.
    job.save_checkpoint(&mut tx, checkpoint, Some(Utc::now()), 0).await?;
    tx.commit().await?;
    tracing::info!(
        job_id = job.job_id,
        organization = %job.account_id,
        active = change.active.len(),
        onboarded = ?change.onboarded,
        stopped = ?change.stopped,
        "organization listed"
    );
    // Nothing stored for detection; the members' jobs it created are due at once.
    Ok(RunOutcome::default())
}
