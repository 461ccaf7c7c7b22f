//! `skywarden worker`: the pollers and the notification sender, without the API; start several
//! to share the work (jobs and outbox rows are both leased in PostgreSQL).

use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;
use skywarden::aws::AwsSettings;
use skywarden::db::partitions::PartitionCache;
use skywarden::db::{Database, DbOptions};
use skywarden::detect::PolicySet;
use skywarden::geo::GeoDb;
use skywarden::notify::sender::Sender;
use skywarden::pollers::worker::Worker;
use skywarden::pollers::{PollContext, PollOptions};
use skywarden::posture::checks::CheckSet;
use skywarden::respond::auto::AutoRules;
use skywarden::respond::containment::Containment;
use skywarden::respond::run::ResponseContext;

use super::{EXIT_PARTIAL, load_checks, load_policies, notifications, open_geo, shutdown_signal, with_db};
use crate::cli::{NotifyArgs, PollerArgs, WorkerArgs};

/// What a worker evaluates: detection policies (none with `--no-detect`), posture checks and
/// the automatic-containment rules, loaded before anything starts so broken ones stop the
/// command.
pub(crate) struct WorkerPolicies {
    /// The network data (--geoip and the lists), opened once: enrichment at ingest and the flow
    /// detectors' Tor lookups share it.
    pub(crate) geo: Option<Arc<GeoDb>>,
    pub(crate) policies: Option<Arc<PolicySet>>,
    pub(crate) checks: CheckSet,
    pub(crate) containment: AutoRules,
    /// The detector's trusted ranges, which response judges rules by (it cannot read them).
    pub(crate) trusted_cidrs: Vec<skywarden::net::Cidr>,
}

impl WorkerPolicies {
    pub(crate) fn load(args: &PollerArgs) -> anyhow::Result<Self> {
        let geo = open_geo(&args.geo)?;
        let policies =
            if args.no_detect { None } else { Some(Arc::new(load_policies(&args.policies)?.with_geo(geo.clone()))) };
        let checks = load_checks(&args.policies)?;
        // A broken response.yaml stops the command too, naming its file and line; a rule naming
        // no policy would silently never act.
        let files = super::policy_files(&args.policies)?;
        let containment = super::load_containment(&files, policies.as_deref(), &checks)?;
        let trusted_cidrs = super::respond::load_trusted_cidrs(&files)?;
        Ok(Self { geo, policies, checks, containment, trusted_cidrs })
    }

    /// The automatic-containment job (it also ends response actions abandoned mid-way). Safe in
    /// every process: its steps take one lock in PostgreSQL, so `serve` and workers share it.
    pub(crate) async fn containment(&self, db: &Database) -> Containment {
        let settings = AwsSettings::from_env();
        let base = settings.load().await;
        let ctx = ResponseContext { pool: db.pool.clone(), settings, base, trusted_cidrs: self.trusted_cidrs.clone() };
        Containment { rules: self.containment.clone(), ctx }
    }
}

/// Builds a worker from the command line's poller settings.
pub(crate) async fn build_worker(
    db: &Database,
    args: &PollerArgs,
    loaded: WorkerPolicies,
) -> anyhow::Result<Arc<Worker>> {
    let settings = AwsSettings::from_env();
    let base = settings.load().await;
    let geo = loaded.geo.clone();
    let context = PollContext {
        pool: db.pool.clone(),
        base,
        settings,
        options: PollOptions::default(),
        geo,
        partitions: Arc::new(PartitionCache::default()),
    };
    let worker = Worker::new(context, Worker::default_id(), loaded.policies)
        .with_posture(loaded.checks, args.posture.alert_severity.0);
    Ok(Arc::new(worker))
}

/// Runs the pollers and the notification sender until stopped, or (`--once`) every due job
/// once with a JSON line per job, then the notifications due; exits 2 when a job failed.
pub(crate) async fn worker(db_options: &DbOptions, args: WorkerArgs) -> anyhow::Result<ExitCode> {
    let loaded = WorkerPolicies::load(&args.poller)?;
    with_db(db_options, async |db| {
        let containment = loaded.containment(db).await;
        let worker = build_worker(db, &args.poller, loaded).await?;
        let sender = sender(db_options, db, &args.notify).await?;
        if args.once {
            return run_once(&worker, sender.as_ref()).await;
        }
        tracing::info!(
            worker = %worker.id(),
            concurrency = args.poller.poll_concurrency,
            notifications = sender.is_some(),
            "worker started"
        );
        // One signal stops the pollers and the sender.
        let (stop, stopped) = tokio::sync::watch::channel(false);
        let sending = sender.map(|sender| {
            let mut stopped = stopped.clone();
            tokio::spawn(sender.run(async move {
                let _ = stopped.wait_for(|stop| *stop).await;
            }))
        });
        let shutdown = async move {
            shutdown_signal().await;
            let _ = stop.send(true);
        };
        let mut stopped_containment = stopped.clone();
        let containing = tokio::spawn(containment.run(async move {
            let _ = stopped_containment.wait_for(|stop| *stop).await;
        }));
        // The full-text index, filled after the fact (searches are exact before it catches up).
        let mut stopped_index = stopped.clone();
        let indexing = tokio::spawn(skywarden::search::index::schedule(db.pool.clone(), async move {
            let _ = stopped_index.wait_for(|stop| *stop).await;
        }));
        worker.run(args.poller.poll_concurrency, shutdown).await;
        containing.await?;
        indexing.await?;
        if let Some(sending) = sending {
            sending.await?;
        }
        Ok(ExitCode::SUCCESS)
    })
    .await
}

/// The notification sender, unless --no-notifications. A worker never makes a secret key: one
/// made here could open none of the channels' secrets, sealed with the key of `serve` (or of
/// `notifications apply`), and every delivery it took would end as a dead letter, now or once
/// channels are added. Without a key it sends nothing and says why.
async fn sender(db_options: &DbOptions, db: &Database, args: &NotifyArgs) -> anyhow::Result<Option<Sender>> {
    if args.no_notifications {
        return Ok(None);
    }
    let key_file = std::env::var_os("SKYWARDEN_SECRET_KEY_FILE")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| db_options.data_dir().join("secret.key"));
    if std::env::var_os("SKYWARDEN_SECRET_KEY").is_none() && !key_file.exists() {
        tracing::warn!(
            key_file = %key_file.display(),
            "this worker sends no notifications: it has no secret key, and one made here could not open the \
             channels' secrets; give it the key `serve` uses (SKYWARDEN_SECRET_KEY, SKYWARDEN_SECRET_KEY_FILE or \
             the data dir's secret.key), or start it with --no-notifications to silence this"
        );
        return Ok(None);
    }
    Ok(Some(notifications::set_up(db_options, db, args, None).await?.1))
}

/// `worker --once`: the due jobs (a JSON line each), then the notifications due.
async fn run_once(worker: &Worker, sender: Option<&Sender>) -> anyhow::Result<ExitCode> {
    let reports = worker.run_once().await.context("running due jobs")?;
    let failed = reports.iter().filter(|r| r.error.is_some()).count();
    for report in &reports {
        println!("{}", serde_json::to_string(report)?);
    }
    if let Some(sender) = sender {
        let sent = sender.deliver_due().await.context("sending due notifications")?;
        tracing::info!(?sent, "notifications");
    }
    Ok(if failed > 0 { ExitCode::from(EXIT_PARTIAL) } else { ExitCode::SUCCESS })
}
