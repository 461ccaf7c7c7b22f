//! A worker runs due poll jobs. Any number of workers, in one process or on many machines,
//! share the jobs through leases in PostgreSQL; a job never runs in two places at once.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Serialize;
use tokio::sync::Mutex;
use tracing::Instrument;

use super::{
    Job, PollContext, PollError, RunOutcome, Source, cloudwatch_logs, jobs, lookup_events, regions, s3_objects,
    snapshot, sqs,
};
use crate::accounts::{self, Account};
use crate::aws::AccountSession;
use crate::detect::PolicySet;
use crate::detect::{self, Scope};
use crate::inventory::store as snapshot_store;

/// Assumed-role sessions are reused for this long (their credentials last an hour).
const SESSION_REUSE: Duration = Duration::from_secs(45 * 60);
/// How often an idle worker looks for due jobs.
const IDLE_POLL: Duration = Duration::from_secs(5);

/// What one job run did, for logs, tests and `skywarden worker --once`.
#[derive(Clone, Debug, Serialize)]
pub struct JobReport {
    pub job_id: i64,
    pub account_id: String,
    pub region: String,
    pub source: &'static str,
    pub target: String,
    pub outcome: Option<RunOutcome>,
    pub error: Option<String>,
}

pub struct Worker {
    ctx: PollContext,
    id: String,
    policies: Option<Arc<PolicySet>>,
    /// Posture checks, evaluated over an account after each of its snapshots, and the severity
    /// from which new findings raise alerts.
    posture: Option<(Mutex<crate::posture::checks::CheckSet>, Option<crate::model::Severity>)>,
    sessions: Mutex<HashMap<String, (Instant, String, AccountSession)>>,
}

impl Worker {
    /// `id` names the worker in leases (`accounts status` shows where a job runs).
    pub fn new(ctx: PollContext, id: impl Into<String>, policies: Option<Arc<PolicySet>>) -> Self {
        Self { ctx, id: id.into(), policies, posture: None, sessions: Mutex::new(HashMap::new()) }
    }

    /// Evaluates `checks` over an account after each snapshot of it.
    pub fn with_posture(
        mut self,
        checks: crate::posture::checks::CheckSet,
        alert_at: Option<crate::model::Severity>,
    ) -> Self {
        self.posture = Some((Mutex::new(checks), alert_at));
        self
    }

    /// A worker id unique to this process: host, process id and a random suffix.
    pub fn default_id() -> String {
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|h| h.trim().to_owned())
            .unwrap_or_else(|_| "host".into());
        let mut bytes = [0u8; 3];
        let _ = getrandom::fill(&mut bytes);
        format!("{host}-{}-{:02x}{:02x}{:02x}", std::process::id(), bytes[0], bytes[1], bytes[2])
    }

    pub fn id(&self) -> &str {
        &self.id
    }

    /// Runs due jobs until none is due, then runs detection over what they stored. Public so
    /// tests drive pollers without sleeping.
    pub async fn run_once(&self) -> Result<Vec<JobReport>, sqlx::Error> {
        let started = crate::db::now(&self.ctx.pool).await?;
        let mut reports = Vec::new();
        while let Some(job) = jobs::claim_due(&self.ctx.pool, &self.id, self.ctx.options.lease).await? {
            reports.push(self.run_claimed(job).await?);
        }
        let stored: u64 = reports.iter().filter_map(|r| r.outcome.as_ref()).map(|o| o.stored).sum();
        if stored > 0 {
            self.detect(Scope::IngestedSince(started)).await;
        }
        Ok(reports)
    }

    /// Runs jobs until `shutdown` completes, `concurrency` at a time.
    pub async fn run(self: Arc<Self>, concurrency: usize, shutdown: impl std::future::Future<Output = ()> + Send) {
        let (stop, stopped) = tokio::sync::watch::channel(false);
        let mut loops = Vec::new();
        for _ in 0..concurrency.max(1) {
            let (worker, mut stopped) = (self.clone(), stopped.clone());
            loops.push(tokio::spawn(async move {
                loop {
                    let idle = match worker.step().await {
                        Ok(ran) => !ran,
                        Err(error) => {
                            tracing::warn!(error = %error, "worker could not reach the database");
                            true
                        }
                    };
                    if idle {
                        tokio::select! {
                            _ = tokio::time::sleep(IDLE_POLL) => {}
                            _ = stopped.changed() => return,
                        }
                    } else if *stopped.borrow() {
                        return;
                    }
                }
            }));
        }
        shutdown.await;
        let _ = stop.send(true);
        for handle in loops {
            let _ = handle.await;
        }
        tracing::info!(worker = %self.id, "worker stopped");
    }

    /// Claims and runs one due job; false when none was due.
    async fn step(&self) -> Result<bool, sqlx::Error> {
        let Some(job) = jobs::claim_due(&self.ctx.pool, &self.id, self.ctx.options.lease).await? else {
            return Ok(false);
        };
        let started = crate::db::now(&self.ctx.pool).await?;
        let report = self.run_claimed(job).await?;
        if report.outcome.as_ref().is_some_and(|o| o.stored > 0) {
            self.detect(Scope::IngestedSince(started)).await;
        }
        Ok(true)
    }

    async fn run_claimed(&self, mut job: Job) -> Result<JobReport, sqlx::Error> {
        let span = tracing::info_span!("poll", job_id = job.job_id, account_id = %job.account_id, region = %job.region, source = job.source.as_str());
        let started = Instant::now();
        // Renew the lease while the run lasts, so a long run (a large IAM snapshot, a backfill)
        // is not taken over by another worker; a dead worker stops renewing and its job frees up.
        let heartbeat = {
            let (pool, job_id, owner, lease) = (self.ctx.pool.clone(), job.job_id, job.owner.clone(), job.lease);
            tokio::spawn(async move {
                loop {
                    tokio::time::sleep(lease / 3).await;
                    match jobs::renew_lease(&pool, job_id, &owner, lease).await {
                        Ok(true) => {}
                        Ok(false) => return tracing::warn!(job_id, "lease lost"),
                        Err(error) => tracing::warn!(job_id, error = %error, "lease renewal failed"),
                    }
                }
            })
        };
        let mut result = self.run_job(&mut job).instrument(span).await;
        heartbeat.abort();
        if let Ok(outcome) = &result
            && outcome.stored > 0
            && matches!(job.source, Source::CloudTrailLookup | Source::CloudTrailS3 | Source::CloudTrailSqs)
        {
            // New events may explain config changes a snapshot saw before they arrived.
            let mut conn = self.ctx.pool.acquire().await?;
            if let Err(error) = snapshot_store::link_changes(&mut conn, &job.account_id).await {
                result = Err(error.into());
            }
        }
        job.finish(&self.ctx.pool, &result).await?;
        // After a failed snapshot too: it stored the types it could read, and a sibling job that
        // keeps failing must not hold the account's evaluation back.
        if job.source == Source::ConfigSnapshot {
            self.evaluate_posture(&job.account_id).await;
        }
        let elapsed_ms = started.elapsed().as_millis() as u64;
        match &result {
            Ok(outcome) => tracing::info!(
                job_id = job.job_id,
                account_id = %job.account_id,
                region = %job.region,
                source = job.source.as_str(),
                stored = outcome.stored,
                more_pending = outcome.more_pending,
                throttled = outcome.throttled,
                elapsed_ms,
                "poll job finished"
            ),
            Err(error) => tracing::warn!(
                job_id = job.job_id,
                account_id = %job.account_id,
                region = %job.region,
                source = job.source.as_str(),
                error = %error,
                elapsed_ms,
                "poll job failed"
            ),
        }
        let (outcome, error) = match result {
            Ok(outcome) => (Some(outcome), None),
            Err(error) => (None, Some(error.to_string())),
        };
        Ok(JobReport {
            job_id: job.job_id,
            account_id: job.account_id,
            region: job.region,
            source: job.source.as_str(),
            target: job.target,
            outcome,
            error,
        })
    }

    async fn run_job(&self, job: &mut Job) -> Result<RunOutcome, PollError> {
        let account = accounts::load(&self.ctx.pool, &job.account_id).await?;
        let session = self.session(&account).await?;
        match job.source {
            Source::CloudTrailLookup => lookup_events::run(&self.ctx, &session, job).await,
            Source::CloudTrailS3 | Source::FlowLogsS3 => s3_objects::run(&self.ctx, &session, &account, job).await,
            Source::FlowLogsCloudWatch => cloudwatch_logs::run(&self.ctx, &session, job).await,
            Source::ConfigSnapshot => snapshot::run(&self.ctx, &session, &account, job).await,
            Source::Regions => regions::run(&self.ctx, &session, job).await,
            Source::CloudTrailSqs | Source::FlowLogsSqs => sqs::run(&self.ctx, &session, &account, job).await,
            Source::Organization => super::organization::run(&self.ctx, &session, job).await,
            Source::CloudTrailArchive => super::log_archive::run(&self.ctx, &session, &account, job).await,
        }
    }

    /// The account's assumed-role session, reused while fresh and while the account's role,
    /// external ID and endpoint are unchanged.
    async fn session(&self, account: &Account) -> Result<AccountSession, PollError> {
        let key =
            format!("{}|{}|{}", account.role_arn, account.external_id, account.endpoint_url.as_deref().unwrap_or(""));
        if let Some((created, cached_key, session)) = self.sessions.lock().await.get(&account.account_id)
            && *cached_key == key
            && created.elapsed() < SESSION_REUSE
        {
            return Ok(session.clone());
        }
        // Not under the lock: a slow STS for one account must not hold up the others.
        let session = AccountSession::assume(&self.ctx.base, &self.ctx.settings, &account.assume_target()).await?;
        self.sessions.lock().await.insert(account.account_id.clone(), (Instant::now(), key, session.clone()));
        Ok(session)
    }

    /// Posture findings follow the snapshot they judge: a broken check shows up at once.
    async fn evaluate_posture(&self, account_id: &str) {
        let Some((checks, alert_at)) = &self.posture else { return };
        // One evaluation per snapshot cycle: while another snapshot job of the account (another
        // region, IAM) runs or is due, the last of them evaluates. Jobs finish before they
        // check, so the last to check always sees the others done.
        let others = sqlx::query_scalar!(
            r#"SELECT count(*) AS "n!" FROM poll_jobs
               WHERE account_id = $1 AND source = $2 AND enabled
                 AND ((lease_owner IS NOT NULL AND lease_expires_at > now()) OR next_run_at <= now())"#,
            account_id,
            Source::ConfigSnapshot.as_str(),
        )
        .fetch_one(&self.ctx.pool)
        .await;
        match others {
            Ok(0) => {}
            Ok(_) => return tracing::debug!(account_id, "posture waits for the account's other snapshots"),
            Err(error) => {
                tracing::warn!(account_id, %error, "cannot see the account's other snapshot jobs; evaluating")
            }
        }
        let mut checks = checks.lock().await;
        match crate::posture::run(&self.ctx.pool, &mut checks, &[account_id.to_string()], *alert_at).await {
            Ok(report) => tracing::debug!(account_id, ?report.accounts, "posture after snapshot"),
            Err(error) => tracing::warn!(account_id, %error, "posture evaluation after snapshot failed"),
        }
    }

    async fn detect(&self, scope: Scope) {
        let Some(policies) = &self.policies else { return };
        match detect::run(&self.ctx.pool, policies, scope).await {
            Ok(summary) => tracing::info!(new_alerts = summary.new_alerts, "detection after polling"),
            Err(error) => tracing::warn!(error = %error, "detection after polling failed"),
        }
    }
}
