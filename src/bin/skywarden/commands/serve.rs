//! `skywarden serve`: the API and dashboard, with pollers and the notification sender unless
//! they are turned off.

use std::process::ExitCode;

use anyhow::Context;
use skywarden::db::{Database, DbOptions};
use skywarden::http;

use super::worker::{self, WorkerPolicies};
use super::{notifications, shutdown_signal};
use crate::cli::ServeArgs;

pub(crate) async fn serve(db_options: &DbOptions, args: ServeArgs) -> anyhow::Result<ExitCode> {
    // Before anything starts: broken policies stop the command.
    let loaded = WorkerPolicies::load(&args.worker)?;
    let db = Database::open(db_options).await?;
    let listener =
        tokio::net::TcpListener::bind(args.listen).await.with_context(|| format!("binding {}", args.listen))?;
    let aws_settings = skywarden::aws::AwsSettings::from_env();
    let aws_base = aws_settings.load().await;
    let (key, sender) = notifications::set_up(db_options, &db, &args.notify, Some(args.listen)).await?;
    let context = http::ApiContext::new(db.pool.clone())
        .with_aws(aws_settings, aws_base)
        .with_notify(key, sender.clone())
        .with_posture(loaded.checks.clone(), args.worker.posture.alert_severity.0);
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
    http::serve(context, listener, until_stopped(stopped)).await?;
    if let Some(notifications) = notifications {
        notifications.await?;
    }
    if let Some(metrics) = metrics {
        metrics.await??;
    }
    if let Some(pollers) = pollers {
        pollers.await?;
    }
    db.close().await?;
    Ok(ExitCode::SUCCESS)
}
