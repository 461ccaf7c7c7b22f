//! Posture: Rego checks (`posture/` of the policy files, built into the binary) over the
//! configuration snapshots store, mapped to the CIS AWS Foundations Benchmark and ATT&CK
//! tactics, with findings that open, resolve and reopen as snapshots change.
//!
//! [`checks`] loads and lints the Rego files, [`evaluate`] runs them over one account's current
//! resources (pure), [`findings`] keeps the findings' lifecycle, suppressions and scores.

pub mod checks;
pub mod evaluate;
pub mod findings;

use std::path::Path;

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::PgPool;

use crate::model::Severity;
use checks::{CheckProblem, CheckSet};
use evaluate::AccountResources;
use findings::{FindingsError, RecordOutcome};

use crate::inventory::dump::{DumpError, SnapshotDump};

/// The posture checks folder inside a policies folder (for [`CheckSet::load`] of a folder alone).
pub fn checks_dir(policies: &Path) -> std::path::PathBuf {
    policies.join("posture")
}

/// What one posture run did, per account.
#[derive(Debug, Clone, Serialize)]
pub struct RunReport {
    pub evaluated_at: DateTime<Utc>,
    pub checks: usize,
    pub accounts: Vec<(String, RecordOutcome)>,
    pub problems: Vec<CheckProblem>,
}

/// Evaluates every check over `accounts` (all accounts with a snapshot when empty) and records
/// the findings; new findings at or above `alert_at` raise alerts.
pub async fn run(
    pool: &PgPool,
    checks: &mut CheckSet,
    accounts: &[String],
    alert_at: Option<Severity>,
) -> Result<RunReport, FindingsError> {
    let evaluated_at = crate::db::now(pool).await?;
    let metas = checks.metas();
    findings::save_checks(pool, &metas).await?;
    let accounts = if accounts.is_empty() { AccountResources::accounts(pool).await? } else { accounts.to_vec() };
    let mut report =
        RunReport { evaluated_at, checks: metas.len(), accounts: Vec::new(), problems: checks.problems.clone() };
    // A panic can leave a check's Rego engine unusable (regorus 0.14 keeps the rule it was in
    // as active, so every later evaluation of it reports a cycle): after an evaluation that met
    // any problem, the checks go on as they were before it.
    let pristine = checks.clone();
    for account in accounts {
        let evaluated_at = snapshot_time(pool, &account, evaluated_at).await?;
        let resources = AccountResources::load(pool, &account).await?;
        // Rego is CPU work: off the async workers, which serve the API meanwhile. The checks
        // come back even when the evaluation panics: posture never loses them.
        let mut owned = std::mem::take(checks);
        let joined = tokio::task::spawn_blocking(move || {
            let evaluation = crate::supervise::catch_panic_blocking(|| {
                evaluate::evaluate_account(&mut owned, &resources, evaluated_at)
            });
            (owned, evaluation)
        })
        .await;
        let evaluation = match joined {
            Ok((owned, evaluation)) => {
                *checks = owned;
                evaluation
            }
            Err(error) => {
                *checks = pristine;
                return Err(FindingsError::Invalid(format!("posture evaluation stopped: {error}")));
            }
        };
        if !matches!(&evaluation, Ok(evaluation) if evaluation.problems.is_empty()) {
            *checks = pristine.clone();
        }
        let evaluation = match evaluation {
            Ok(evaluation) => evaluation,
            Err(panic) => {
                // Nothing is recorded for the account: an empty evaluation would resolve its findings.
                tracing::error!(account_id = %account, %panic, "posture evaluation panicked; the account's findings are kept as they were");
                report.problems.push(CheckProblem {
                    file: String::new(),
                    check: None,
                    message: format!("evaluating account {account} panicked: {panic}"),
                });
                continue;
            }
        };
        report.problems.extend(evaluation.problems.iter().cloned());
        let outcome = findings::record(pool, &evaluation, &metas, evaluated_at, alert_at).await?;
        tracing::info!(account_id = %account, ?outcome, "posture evaluated");
        report.accounts.push((account, outcome));
    }
    Ok(report)
}

/// When an account's evaluation happened, as findings and scores record it: the time of the
/// snapshot it judges (so replayed snapshots give a trend over their own times, and a finding
/// first failed when its snapshot was taken), or `now` when that snapshot was already evaluated
/// (a re-run after a change of checks or suppressions is a point of its own).
async fn snapshot_time(pool: &PgPool, account: &str, now: DateTime<Utc>) -> Result<DateTime<Utc>, sqlx::Error> {
    let times = sqlx::query!(
        r#"SELECT (SELECT max(collected_at) FROM resource_collections WHERE account_id = $1) AS snapshot,
                  (SELECT max(evaluated_at) FROM posture_evaluations WHERE account_id = $1) AS evaluated"#,
        account
    )
    .fetch_one(pool)
    .await?;
    Ok(match (times.snapshot, times.evaluated) {
        (Some(snapshot), Some(evaluated)) if snapshot > evaluated && snapshot <= now => snapshot,
        (Some(snapshot), None) if snapshot <= now => snapshot,
        _ => now,
    })
}

/// Why a snapshot dump could not be replayed.
#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    #[error(transparent)]
    Dump(#[from] DumpError),
    #[error(transparent)]
    Findings(#[from] FindingsError),
    #[error("the dump holds no snapshot")]
    Empty,
}

/// Records a dump's snapshots one by one with a posture evaluation after each, as polling
/// would: a finding that a later snapshot causes names the change (and event) behind it.
/// Returns the last evaluation's report.
pub async fn import_dump(
    pool: &PgPool,
    dump: &SnapshotDump,
    checks: &mut CheckSet,
    alert_at: Option<Severity>,
) -> Result<RunReport, ImportError> {
    let mut last = None;
    for index in 0..dump.snapshots.len() {
        dump.record_one(pool, index).await?;
        last = Some(run(pool, checks, std::slice::from_ref(&dump.account_id), alert_at).await?);
    }
    last.ok_or(ImportError::Empty)
}
