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
use crate::detect;
use crate::detect::PolicySet;
use crate::inventory::store as snapshot_store;
use crate::model::Severity;
use crate::posture::checks::CheckSet;
use crate::supervise::catch_panic;

/// Assumed-role sessions are reused for this long (their credentials last an hour).
const SESSION_REUSE: Duration = Duration::from_secs(45 * 60);
/// The longest an idle worker waits before looking for due jobs again (jobs made due by "poll
/// now" or onboarding wait this long at most); it wakes sooner when a job's slot comes first.
const IDLE_POLL: Duration = Duration::from_secs(5);
/// The shortest idle wait: a due job another worker holds locked this instant is not polled for
/// in a busy loop.
const MIN_IDLE_POLL: Duration = Duration::from_millis(50);
/// The longest pause of a loop whose steps keep panicking outside any job.
const MAX_PANIC_PAUSE: Duration = Duration::from_secs(300);
/// Accounts whose config changes one run links to the events it stored (an organization's
/// archive may hold thousands); any others are linked by their account's next snapshot.
const MAX_LINKED_ACCOUNTS: i64 = 5000;
/// How soon a worker runs detection again after its own failed, and how often it looks for
/// detection requests nobody runs (their holder died or stopped at its limit of passes).
const DETECTION_RETRY: Duration = Duration::from_secs(15);
/// A waiting request counts as nobody's once it has waited this long with the lease free (its
/// caller takes the lease right after leaving it).
const UNATTENDED_AFTER: Duration = Duration::from_secs(10);

/// Sources that store CloudTrail events, which may explain config changes seen before them.
fn links_changes(source: Source) -> bool {
    matches!(
        source,
        Source::CloudTrailLookup | Source::CloudTrailS3 | Source::CloudTrailSqs | Source::CloudTrailArchive
    )
}

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

/// Runs at the start of every job run; see [`Worker::with_job_hook`].
pub type JobHook = Arc<dyn Fn(&Job) + Send + Sync>;

/// Posture checks a worker evaluates over an account after each of its snapshots.
struct Posture {
    /// The checks as loaded: a fresh copy replaces the working one after an evaluation that
    /// went wrong, so a panic never leaves posture without its checks or with a broken engine.
    loaded: CheckSet,
    checks: Mutex<CheckSet>,
    /// The severity from which new findings raise alerts.
    alert_at: Option<Severity>,
}

pub struct Worker {
    ctx: PollContext,
    id: String,
    policies: Option<Arc<PolicySet>>,
    posture: Option<Posture>,
    sessions: Mutex<HashMap<String, (Instant, String, AccountSession)>>,
    job_hook: Option<JobHook>,
    detection_retry: std::sync::Mutex<DetectionRetry>,
}

/// When the worker next looks for detection left undone, and what its own failed detection
/// asked for (retried then).
struct DetectionRetry {
    next_check: Instant,
    failed_since: Option<chrono::DateTime<chrono::Utc>>,
}

impl Worker {
    /// `id` names the worker in leases (`accounts status` shows where a job runs).
    pub fn new(ctx: PollContext, id: impl Into<String>, policies: Option<Arc<PolicySet>>) -> Self {
        let detection_retry = DetectionRetry { next_check: Instant::now(), failed_since: None };
        Self {
            ctx,
            id: id.into(),
            policies,
            posture: None,
            sessions: Mutex::new(HashMap::new()),
            job_hook: None,
            detection_retry: std::sync::Mutex::new(detection_retry),
        }
    }

    /// Evaluates `checks` over an account after each snapshot of it.
    pub fn with_posture(mut self, checks: CheckSet, alert_at: Option<Severity>) -> Self {
        self.posture = Some(Posture { checks: Mutex::new(checks.clone()), loaded: checks, alert_at });
        self
    }

    /// A test seam, not a setting: `hook` runs at the start of every job run, inside the run's
    /// supervision, so a test can make one job panic and watch it recorded and parked while the
    /// others run. Nothing outside tests sets one (no flag or variable reaches it).
    pub fn with_job_hook(mut self, hook: impl Fn(&Job) + Send + Sync + 'static) -> Self {
        self.job_hook = Some(Arc::new(hook));
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
            self.detect(started).await;
        }
        Ok(reports)
    }

    /// Runs jobs until `shutdown` completes, `concurrency` at a time. Each loop survives a
    /// panic anywhere in its step: a job's panic is that job's failure (see `run_claimed`), any
    /// other is logged and the loop pauses longer after each one in a row, then goes on.
    pub async fn run(self: Arc<Self>, concurrency: usize, shutdown: impl std::future::Future<Output = ()> + Send) {
        let (stop, stopped) = tokio::sync::watch::channel(false);
        let mut loops = Vec::new();
        for index in 0..concurrency.max(1) {
            let (worker, stopped) = (self.clone(), stopped.clone());
            loops.push(tokio::spawn(async move { worker.run_loop(index, stopped).await }));
        }
        shutdown.await;
        let _ = stop.send(true);
        for handle in loops {
            if let Err(error) = handle.await {
                tracing::error!(worker = %self.id, %error, "a poll loop ended abnormally");
            }
        }
        tracing::info!(worker = %self.id, "worker stopped");
    }

    async fn run_loop(&self, index: usize, mut stopped: tokio::sync::watch::Receiver<bool>) {
        let mut panics_in_a_row = 0u32;
        loop {
            // Boxed: the step's future nests every stage a job drives, too deep to lay out inline.
            let pause = match catch_panic(Box::pin(self.step())).await {
                Ok(Ok(ran)) => {
                    panics_in_a_row = 0;
                    if ran { Duration::ZERO } else { self.idle_pause().await }
                }
                Ok(Err(error)) => {
                    tracing::warn!(error = %error, "worker could not reach the database");
                    IDLE_POLL
                }
                Err(panic) => {
                    panics_in_a_row += 1;
                    let pause = IDLE_POLL.saturating_mul(1 << panics_in_a_row.min(6)).min(MAX_PANIC_PAUSE);
                    tracing::error!(worker = %self.id, poll_loop = index, %panic, panics_in_a_row, ?pause, "poll loop step panicked; going on after a pause");
                    pause
                }
            };
            if pause.is_zero() {
                if *stopped.borrow() {
                    return;
                }
                continue;
            }
            tokio::select! {
                _ = tokio::time::sleep(pause) => {}
                _ = stopped.changed() => return,
            }
        }
    }

    /// How long an idle loop waits: until the next job's slot, within [`MIN_IDLE_POLL`] and
    /// [`IDLE_POLL`] (a fixed poll alone made every run start up to `IDLE_POLL` late).
    async fn idle_pause(&self) -> Duration {
        match jobs::next_due_in(&self.ctx.pool).await {
            Ok(Some(due_in)) => due_in.clamp(MIN_IDLE_POLL, IDLE_POLL),
            Ok(None) => IDLE_POLL,
            Err(error) => {
                tracing::warn!(error = %error, "worker could not reach the database");
                IDLE_POLL
            }
        }
    }

    /// Claims and runs one due job; false when none was due.
    async fn step(&self) -> Result<bool, sqlx::Error> {
        self.detect_left_undone().await;
        let Some(job) = jobs::claim_due(&self.ctx.pool, &self.id, self.ctx.options.lease).await? else {
            return Ok(false);
        };
        let started = crate::db::now(&self.ctx.pool).await?;
        let report = self.run_claimed(job).await?;
        if report.outcome.as_ref().is_some_and(|o| o.stored > 0) {
            self.detect(started).await;
        }
        Ok(true)
    }

    async fn run_claimed(&self, mut job: Job) -> Result<JobReport, sqlx::Error> {
        let span = tracing::info_span!("poll", job_id = job.job_id, account_id = %job.account_id, region = %job.region, source = job.source.as_str());
        let started = Instant::now();
        // When the run began by the database's clock: the events it stores are ingested after.
        let db_started = if links_changes(job.source) { Some(crate::db::now(&self.ctx.pool).await?) } else { None };
        let heartbeat = self.heartbeat(&job);
        // A panic in the run is this job's failure: recorded like any other, so its lease is
        // released and the loop that ran it goes on to the next job.
        let run = catch_panic(self.run_hooked(&mut job)).instrument(span).await;
        heartbeat.abort();
        let result = match run {
            Ok(mut result) => {
                if let Ok(outcome) = &result
                    && outcome.stored > 0
                    && let Some(since) = db_started
                    && let Err(error) = self.link_late_events(job.job_id, since).await
                {
                    result = Err(error.into());
                }
                job.finish(&self.ctx.pool, &result).await?;
                result.map_err(|error| error.to_string())
            }
            Err(panic) => Err(self.record_panic(&job, &panic).await?),
        };
        // After a failed snapshot too: it stored the types it could read, and a sibling job that
        // keeps failing must not hold the account's evaluation back.
        if job.source == Source::ConfigSnapshot {
            self.evaluate_posture(&job.account_id).await;
        }
        log_run(&job, &result, started.elapsed().as_millis() as u64);
        let (outcome, error) = match result {
            Ok(outcome) => (Some(outcome), None),
            Err(error) => (None, Some(error)),
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

    /// Renews the job's lease while the run lasts, so a long run (a large IAM snapshot, a
    /// backfill) is not taken over by another worker; a dead worker stops renewing and its job
    /// frees up.
    fn heartbeat(&self, job: &Job) -> tokio::task::JoinHandle<()> {
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
    }

    async fn run_hooked(&self, job: &mut Job) -> Result<RunOutcome, PollError> {
        if let Some(hook) = &self.job_hook {
            hook(job);
        }
        self.run_job(job).await
    }

    /// Records a run that panicked as the job's failure (parking it after
    /// [`jobs::PARK_AFTER_PANICS`] in a row) and returns the error text it shows.
    async fn record_panic(&self, job: &Job, panic: &str) -> Result<String, sqlx::Error> {
        let error = format!("the run panicked (a bug; please report it): {panic}");
        let parked = job.finish_panicked(&self.ctx.pool, &error).await?;
        tracing::error!(
            job_id = job.job_id,
            account_id = %job.account_id,
            region = %job.region,
            source = job.source.as_str(),
            %panic,
            parked,
            "poll job panicked"
        );
        if parked {
            tracing::error!(
                job_id = job.job_id,
                account_id = %job.account_id,
                source = job.source.as_str(),
                "poll job parked after {} panics in a row; `skywarden accounts poll-now` runs it again",
                jobs::PARK_AFTER_PANICS
            );
        }
        Ok(error)
    }

    /// New events may explain config changes a snapshot saw before they arrived: links the
    /// changes of every account this run stored events for (a log archive or an organization
    /// queue stores each event under its own account), at most [`MAX_LINKED_ACCOUNTS`] that
    /// still have changes without a cause.
    async fn link_late_events(&self, job_id: i64, since: chrono::DateTime<chrono::Utc>) -> Result<(), sqlx::Error> {
        let mut conn = self.ctx.pool.acquire().await?;
        let accounts = sqlx::query_scalar!(
            r#"SELECT DISTINCT e.account_id AS "account_id!" FROM cloudtrail_events e
               WHERE e.ingested_at >= $1
                 AND EXISTS (SELECT 1 FROM config_changes c
                             WHERE c.account_id = e.account_id AND c.event_id IS NULL
                               AND c.detected_at > now() - interval '2 days')
               LIMIT $2"#,
            since,
            MAX_LINKED_ACCOUNTS
        )
        .fetch_all(&mut *conn)
        .await?;
        if accounts.len() as i64 == MAX_LINKED_ACCOUNTS {
            tracing::warn!(job_id, max = MAX_LINKED_ACCOUNTS, "more accounts got events than are linked in one run");
        }
        for account_id in &accounts {
            let linked = snapshot_store::link_changes(&mut conn, account_id).await?;
            tracing::debug!(job_id, account_id, linked, "config changes linked to late events");
        }
        Ok(())
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
            Source::GuardDutyFindings => super::findings::run_guardduty(&self.ctx, &session, job).await,
            Source::SecurityHubFindings => super::findings::run_security_hub(&self.ctx, &session, job).await,
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
        let Some(posture) = &self.posture else { return };
        // One evaluation per snapshot cycle: while another snapshot job of the account (another
        // region, IAM) runs or is due, the last of them evaluates. Jobs finish before they
        // check, so the last to check always sees the others done. A parked job does not run,
        // so it does not count.
        let others = sqlx::query_scalar!(
            r#"SELECT count(*) AS "n!" FROM poll_jobs
               WHERE account_id = $1 AND source = $2 AND enabled AND parked_at IS NULL
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
        let mut checks = posture.checks.lock().await;
        let loading_problems = checks.problems.len();
        let accounts = [account_id.to_string()];
        let problems =
            match catch_panic(crate::posture::run(&self.ctx.pool, &mut checks, &accounts, posture.alert_at)).await {
                Ok(Ok(report)) => {
                    tracing::debug!(account_id, ?report.accounts, "posture after snapshot");
                    report.problems.iter().skip(loading_problems).map(describe).collect()
                }
                Ok(Err(error)) => vec![format!("the evaluation failed: {error}")],
                Err(panic) => vec![format!("the evaluation panicked: {panic}")],
            };
        // Whatever went wrong, the next evaluation starts from the checks as loaded.
        if !problems.is_empty() || checks.checks.len() != posture.loaded.checks.len() {
            *checks = posture.loaded.clone();
        }
        drop(checks);
        for problem in &problems {
            tracing::warn!(account_id, %problem, "posture evaluation after snapshot met a problem");
        }
        self.record_posture_problems(account_id, &problems).await;
    }

    /// Keeps the count of the last evaluation's problems for `/metrics`.
    async fn record_posture_problems(&self, account_id: &str, problems: &[String]) {
        let recorded = sqlx::query!(
            "INSERT INTO posture_evaluation_problems (account_id, evaluated_at, problems, first_problem)
             VALUES ($1, now(), $2, $3)
             ON CONFLICT (account_id) DO UPDATE
             SET evaluated_at = now(), problems = $2, first_problem = $3",
            account_id,
            problems.len() as i32,
            problems.first(),
        )
        .execute(&self.ctx.pool)
        .await;
        if let Err(error) = recorded {
            tracing::warn!(account_id, %error, problems = problems.len(), "cannot record the posture evaluation's problems");
        }
    }

    /// Detection over what the runs since `started` stored (and anything stored earlier whose
    /// detection never finished: see [`detect::run_pending`]). A failure is retried soon.
    async fn detect(&self, started: chrono::DateTime<chrono::Utc>) {
        let Some(policies) = &self.policies else { return };
        let failed = match catch_panic(detect::run_pending(&self.ctx.pool, policies, started)).await {
            // Another process's pass held the detection lease: these rows were left to it.
            Ok(Ok(summary)) if summary.deferred_to.is_some() => {
                tracing::debug!(
                    holder = summary.deferred_to.as_deref(),
                    "detection after polling left to the running pass"
                );
                false
            }
            Ok(Ok(summary)) => {
                tracing::info!(new_alerts = summary.new_alerts, "detection after polling");
                false
            }
            // Recorded by `run_pending` for `accounts status`, the API and `/metrics`.
            Ok(Err(error)) => {
                tracing::warn!(error = %crate::notify::error_chain(&error), "detection after polling failed");
                true
            }
            // The events stay stored and requested; the retry or the next pass anywhere covers them.
            Err(panic) => {
                tracing::error!(%panic, "detection after polling panicked");
                detect::health::record_failure(&self.ctx.pool, &format!("detection panicked: {panic}")).await;
                true
            }
        };
        if failed {
            let mut retry = self.detection_retry.lock().unwrap_or_else(|e| e.into_inner());
            retry.failed_since = Some(retry.failed_since.map_or(started, |since| since.min(started)));
            retry.next_check = Instant::now() + DETECTION_RETRY;
        }
    }

    /// Every [`DETECTION_RETRY`]: detection again after this worker's failed, or for requests
    /// waiting with nobody holding the detection lease (a holder killed or stopped at its limit).
    async fn detect_left_undone(&self) {
        if self.policies.is_none() {
            return;
        }
        let failed_since = {
            let mut retry = self.detection_retry.lock().unwrap_or_else(|e| e.into_inner());
            if Instant::now() < retry.next_check {
                return;
            }
            retry.next_check = Instant::now() + DETECTION_RETRY;
            retry.failed_since.take()
        };
        let since = match failed_since {
            Some(since) => Some(since),
            None => detect::lease::unattended(&self.ctx.pool, UNATTENDED_AFTER).await.unwrap_or_else(|error| {
                tracing::warn!(%error, "cannot look for detection requests left waiting");
                None
            }),
        };
        if let Some(since) = since {
            tracing::info!(%since, "detection for rows left waiting");
            self.detect(since).await;
        }
    }
}

/// One posture problem on one line: which check, where, what.
fn describe(problem: &crate::posture::checks::CheckProblem) -> String {
    match &problem.check {
        Some(check) => format!("{check}: {}", problem.message),
        None => problem.message.clone(),
    }
}

fn log_run(job: &Job, result: &Result<RunOutcome, String>, elapsed_ms: u64) {
    match result {
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
}
