//! `skywarden serve`: the API and dashboard, with pollers and the notification sender unless
//! they are turned off.

use std::process::ExitCode;

use anyhow::Context;
use skywarden::db::{Database, DbOptions, PoolSettings};
use skywarden::http;

use super::worker::{self, WorkerPolicies};
use super::{notifications, shutdown_signal};
use crate::cli::{ApiArgs, ServeArgs};

/// The API's own pool: the background pool (`db.pool`) stays for pollers, the sender and
/// posture, and API queries are cancelled at the statement timeout.
fn api_pool(db: &Database, args: &ApiArgs) -> sqlx::PgPool {
    let statement_timeout = Some(args.api_statement_timeout).filter(|t| !t.is_zero());
    if statement_timeout.is_none_or(|t| t >= args.request_timeout) {
        tracing::warn!(
            statement_timeout = ?args.api_statement_timeout,
            request_timeout = ?args.request_timeout,
            "the API statement timeout is not below the request timeout: a slow query ends as a request timeout"
        );
    }
    db.pool_with(&PoolSettings {
        connections: args.api_db_connections,
        // Waiting longer than a request may take is pointless.
        acquire_timeout: args.request_timeout.min(std::time::Duration::from_secs(10)),
        statement_timeout,
    })
}

fn api_limits(args: &ApiArgs) -> http::limits::ApiLimits {
    http::limits::ApiLimits {
        request_timeout: args.request_timeout,
        max_concurrent: usize::try_from(args.max_concurrent_requests).unwrap_or(usize::MAX),
    }
}

pub(crate) async fn serve(db_options: &DbOptions, args: ServeArgs) -> anyhow::Result<ExitCode> {
    // Before anything starts: broken policies stop the command.
    let loaded = WorkerPolicies::load(&args.worker)?;
    let db = Database::open(db_options).await?;
    let listener =
        tokio::net::TcpListener::bind(args.listen).await.with_context(|| format!("binding {}", args.listen))?;
    let aws_settings = skywarden::aws::AwsSettings::from_env();
    let aws_base = aws_settings.load().await;
    let (key, sender) = notifications::set_up(db_options, &db, &args.notify, Some(args.listen)).await?;
    let api_db = api_pool(&db, &args.api);
    let containment = loaded.containment(&db).await;
    let context = http::ApiContext::new(api_db.clone())
        .with_limits(api_limits(&args.api))
        .with_aws(aws_settings, aws_base)
        .with_notify(key, sender.clone())
        .with_posture(loaded.checks.clone(), args.worker.posture.alert_severity.0)
        .with_trusted_cidrs(loaded.trusted_cidrs.clone());
    // One signal stops both listeners.
    let (stop, stopped) = tokio::sync::watch::channel(false);
    tokio::spawn(async move {
        shutdown_signal().await;
        let _ = stop.send(true);
    });
    let until_stopped = |mut receiver: tokio::sync::watch::Receiver<bool>| async move {
        let _ = receiver.wait_for(|stop| *stop).await;
    };
    let metrics = match args.metrics_listen {
        Some(address) => {
            let metrics_listener =
                tokio::net::TcpListener::bind(address).await.with_context(|| format!("binding {address}"))?;
            Some(tokio::spawn(http::serve_metrics(context.clone(), metrics_listener, until_stopped(stopped.clone()))))
        }
        None => None,
    };
    let pollers = if args.no_pollers {
        None
    } else {
        let worker = worker::build_worker(&db, &args.worker, loaded).await?;
        tracing::info!(worker = %worker.id(), concurrency = args.worker.poll_concurrency, "pollers started");
        Some(tokio::spawn(worker.run(args.worker.poll_concurrency, until_stopped(stopped.clone()))))
    };
    let notifications = if args.notify.no_notifications {
        None
    } else {
        Some(tokio::spawn(sender.run(until_stopped(stopped.clone()))))
    };
    // Automatic containment beside the pollers (off by its file unless enabled; it also ends
    // response actions abandoned mid-way).
    let containment = (!args.no_pollers).then(|| tokio::spawn(containment.run(until_stopped(stopped.clone()))));
    // The lake, when configured (`--archive-after-days`, `--archive-to`).
    let archive = match (args.archive.archive_after_days, args.archive.archive_to.clone()) {
        (Some(days), Some(to)) => Some(tokio::spawn(super::archive::schedule(
            db.pool.clone(),
            args.archive.clone(),
            days,
            to,
            until_stopped(stopped.clone()),
        ))),
        _ => None,
    };
    // The full-text index, filled after the fact (searches are exact before it catches up).
    let search_index =
        tokio::spawn(skywarden::search::index::schedule(db.pool.clone(), until_stopped(stopped.clone())));
    http::serve(context, listener, until_stopped(stopped)).await?;
    search_index.await?;
    if let Some(archive) = archive {
        archive.await?;
    }
    if let Some(containment) = containment {
        containment.await?;
    }
    if let Some(notifications) = notifications {
        notifications.await?;
    }
    if let Some(metrics) = metrics {
        metrics.await??;
    }
    if let Some(pollers) = pollers {
        pollers.await?;
    }
    api_db.close().await;
    db.close().await?;
    Ok(ExitCode::SUCCESS)
}
