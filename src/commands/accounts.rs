//! `skywarden accounts …` and `skywarden worker`.

use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;

use skywarden::accounts::{self, LogSources, NewAccount, PollIntervals};
use skywarden::aws::AwsSettings;
use skywarden::cli::{AccountAddArgs, AccountsAction, PollerArgs, WorkerArgs};
use skywarden::db::partitions::PartitionCache;
use skywarden::db::{Database, DbOptions};
use skywarden::pollers::jobs;
use skywarden::pollers::worker::Worker;
use skywarden::pollers::{PollContext, PollOptions};

use super::{load_policies, open_geo, shutdown_signal};

pub(crate) async fn run(db_options: &DbOptions, action: AccountsAction) -> anyhow::Result<ExitCode> {
    if let AccountsAction::Template = action {
        print!("{}", accounts::ROLE_TEMPLATE);
        return Ok(ExitCode::SUCCESS);
    }
    let db = Database::open(db_options).await?;
    let code = match action {
        AccountsAction::Add(args) => add(&db, args).await?,
        AccountsAction::List { json } => {
            let accounts = accounts::list(&db.pool).await?;
            for account in &accounts {
                if json {
                    println!("{}", serde_json::to_string(account)?);
                } else {
                    let state = match (&account.verified_at, &account.verify_error) {
                        (_, Some(error)) => format!("role check failed: {error}"),
                        (Some(at), None) => format!("role verified {}", at.format("%Y-%m-%d %H:%M UTC")),
                        (None, None) => "role not verified yet".into(),
                    };
                    println!(
                        "{}  {:<20}  {}  regions={}  {state}",
                        account.account_id,
                        account.name.as_deref().unwrap_or("-"),
                        account.role_arn,
                        account.regions.join(",")
                    );
                }
            }
            if accounts.is_empty() && !json {
                println!("no accounts onboarded (skywarden accounts add --role-arn …)");
            }
            ExitCode::SUCCESS
        }
        AccountsAction::Remove { account_id } => {
            accounts::remove(&db.pool, &account_id).await?;
            println!("account {account_id} removed; its stored events, resources and alerts are kept");
            ExitCode::SUCCESS
        }
        AccountsAction::Test { account_id, json } => {
            let settings = AwsSettings::from_env();
            let base = settings.load().await;
            let result = accounts::test(&db.pool, &base, &settings, &account_id).await?;
            if json {
                println!("{}", serde_json::to_string(&result)?);
            } else if result.ok {
                println!("ok: assumed {}", result.assumed_arn.as_deref().unwrap_or("the role"));
            } else {
                println!("failed: {}", result.error.as_deref().unwrap_or("unknown error"));
            }
            if result.ok { ExitCode::SUCCESS } else { ExitCode::FAILURE }
        }
        AccountsAction::Status { account_id, json } => {
            let statuses = jobs::statuses(&db.pool, account_id.as_deref()).await?;
            for status in &statuses {
                if json {
                    println!("{}", serde_json::to_string(status)?);
                    continue;
                }
                let lag = status.lag_seconds.map(|s| format!("{:.0}s", s.max(0.0))).unwrap_or_else(|| "-".into());
                let last = status
                    .last_success_at
                    .map(|t| t.format("%Y-%m-%d %H:%M:%S").to_string())
                    .unwrap_or_else(|| "never".into());
                let target = if status.target.is_empty() { String::new() } else { format!(" {}", status.target) };
                println!(
                    "{} {:<14} {:<20}{target}  last success {last}  lag {lag}  items {}{}{}",
                    status.account_id,
                    status.region,
                    status.source,
                    status.items_total,
                    status.running_on.as_deref().map(|w| format!("  running on {w}")).unwrap_or_default(),
                    status
                        .last_error
                        .as_deref()
                        .map(|e| format!("\n    last error ({} in a row): {e}", status.consecutive_failures))
                        .unwrap_or_default(),
                );
            }
            ExitCode::SUCCESS
        }
        AccountsAction::Template => unreachable!("handled above"),
    };
    db.close().await?;
    Ok(code)
}

async fn add(db: &Database, args: AccountAddArgs) -> anyhow::Result<ExitCode> {
    let new = NewAccount {
        role_arn: args.role_arn,
        name: args.name,
        regions: args.regions,
        endpoint_url: args.endpoint_url,
        sources: LogSources {
            trail_bucket: args.trail_bucket,
            trail_prefix: args.trail_prefix,
            organization_id: args.organization_id,
            flow_bucket: args.flow_bucket,
            flow_prefix: args.flow_prefix,
            flow_log_groups: args.flow_log_groups,
            bucket_region: args.bucket_region,
        },
    };
    let account = accounts::onboard(&db.pool, &new, &PollIntervals::default()).await?;
    let test = if args.no_test {
        None
    } else {
        let settings = AwsSettings::from_env();
        let base = settings.load().await;
        Some(accounts::test(&db.pool, &base, &settings, &account.account_id).await?)
    };
    if args.json {
        let mut value = serde_json::to_value(&account)?;
        value["external_id"] = serde_json::Value::String(account.external_id.clone());
        value["test"] = serde_json::to_value(&test)?;
        println!("{value}");
    } else {
        println!("account {} onboarded (regions {})", account.account_id, account.regions.join(","));
        println!("external ID (shown only now): {}", account.external_id);
        println!("create the role with: skywarden accounts template > role.yaml, then deploy it with");
        println!("  ExternalId={} and SkywardenPrincipalArn=<the principal Skywarden runs as>", account.external_id);
        match &test {
            Some(result) if result.ok => println!("role check: ok ({})", result.assumed_arn.as_deref().unwrap_or("")),
            Some(result) => println!(
                "role check: failed: {}\n  polling starts once the role can be assumed; re-check with `skywarden accounts test {}`",
                result.error.as_deref().unwrap_or(""),
                account.account_id
            ),
            None => println!(
                "role check skipped; run `skywarden accounts test {}` once the role exists",
                account.account_id
            ),
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Builds a worker from the command line's poller settings.
pub(crate) async fn build_worker(db: &Database, args: &PollerArgs) -> anyhow::Result<Arc<Worker>> {
    let settings = AwsSettings::from_env();
    let base = settings.load().await;
    let geo = open_geo(&args.geo)?;
    let policies = if args.no_detect { None } else { load_policies(&args.policies).map(Arc::new) };
    let context = PollContext {
        pool: db.pool.clone(),
        base,
        settings,
        options: PollOptions::default(),
        geo,
        partitions: Arc::new(PartitionCache::default()),
    };
    let checks = skywarden::posture::checks::CheckSet::load(&skywarden::posture::checks_dir(&args.policies.policies));
    for problem in &checks.problems {
        tracing::warn!(file = %problem.file, check = ?problem.check, problem = %problem.message, "posture check not loaded");
    }
    let worker =
        Worker::new(context, Worker::default_id(), policies).with_posture(checks, args.posture.alert_severity.0);
    Ok(Arc::new(worker))
}

pub(crate) async fn worker(db_options: &DbOptions, args: WorkerArgs) -> anyhow::Result<ExitCode> {
    let db = Database::open(db_options).await?;
    let worker = build_worker(&db, &args.poller).await?;
    if args.once {
        let reports = worker.run_once().await.context("running due jobs")?;
        let failed = reports.iter().filter(|r| r.error.is_some()).count();
        for report in &reports {
            println!("{}", serde_json::to_string(report)?);
        }
        db.close().await?;
        return Ok(if failed > 0 { ExitCode::from(super::EXIT_PARTIAL_IMPORT) } else { ExitCode::SUCCESS });
    }
    tracing::info!(worker = %worker.id(), concurrency = args.poller.poll_concurrency, "worker started");
    worker.run(args.poller.poll_concurrency, shutdown_signal()).await;
    db.close().await?;
    Ok(ExitCode::SUCCESS)
}
