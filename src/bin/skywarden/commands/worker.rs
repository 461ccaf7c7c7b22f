//! `skywarden worker`: the pollers without the API; start several to share the work.

use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;
use skywarden::aws::AwsSettings;
use skywarden::db::partitions::PartitionCache;
use skywarden::db::{Database, DbOptions};
use skywarden::detect::PolicySet;
use skywarden::pollers::worker::Worker;
use skywarden::pollers::{PollContext, PollOptions};
use skywarden::posture::checks::CheckSet;

use super::{EXIT_PARTIAL, load_checks, load_policies, open_geo, shutdown_signal, with_db};
use crate::cli::{PollerArgs, WorkerArgs};

/// What a worker evaluates: detection policies (none with `--no-detect`) and posture checks,
/// loaded before anything starts so broken ones stop the command.
pub(crate) struct WorkerPolicies {
    pub(crate) policies: Option<Arc<PolicySet>>,
    pub(crate) checks: CheckSet,
}

impl WorkerPolicies {
    pub(crate) fn load(args: &PollerArgs) -> anyhow::Result<Self> {
        let policies = if args.no_detect { None } else { Some(Arc::new(load_policies(&args.policies)?)) };
        Ok(Self { policies, checks: load_checks(&args.policies)? })
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
    let geo = open_geo(&args.geo)?;
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

/// Runs the pollers until stopped, or (`--once`) every due job once with a JSON line per job;
/// exits 2 when a job failed.
pub(crate) async fn worker(db_options: &DbOptions, args: WorkerArgs) -> anyhow::Result<ExitCode> {
    let loaded = WorkerPolicies::load(&args.poller)?;
    with_db(db_options, async |db| {
        let worker = build_worker(db, &args.poller, loaded).await?;
        if args.once {
            let reports = worker.run_once().await.context("running due jobs")?;
            let failed = reports.iter().filter(|r| r.error.is_some()).count();
            for report in &reports {
                println!("{}", serde_json::to_string(report)?);
            }
            return Ok(if failed > 0 { ExitCode::from(EXIT_PARTIAL) } else { ExitCode::SUCCESS });
        }
        tracing::info!(worker = %worker.id(), concurrency = args.poller.poll_concurrency, "worker started");
        worker.run(args.poller.poll_concurrency, shutdown_signal()).await;
        Ok(ExitCode::SUCCESS)
    })
    .await
}
