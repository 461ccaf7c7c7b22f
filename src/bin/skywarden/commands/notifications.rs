//! `skywarden notifications deliver|status|apply`, and the notification set-up `serve` and
//! `demo` share: the secret key, the network policy, the config file, the sender.

use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::Arc;

use crate::cli::{NotificationsAction, NotifyArgs};
use anyhow::Context;
use skywarden::db::{Database, DbOptions};
use skywarden::notify::config::NotificationsFile;
use skywarden::notify::http_client::SafeHttpClient;
use skywarden::notify::network::NetworkPolicy;
use skywarden::notify::outbox::{self, DeliveryFilter};
use skywarden::notify::secrets::SecretKey;
use skywarden::notify::sender::{Sender, SenderOptions};

/// Opens the secret key, applies the config file if any, and builds the sender.
pub(crate) async fn set_up(
    db_options: &DbOptions,
    db: &Database,
    args: &NotifyArgs,
    listen: Option<SocketAddr>,
) -> anyhow::Result<(Arc<SecretKey>, Sender)> {
    let key =
        Arc::new(SecretKey::load(&db_options.data_dir()).context("opening the key that seals notification secrets")?);
    let policy = NetworkPolicy::allowing(&args.notify_allow_networks)?;
    if let Some(path) = &args.notifications {
        let file = NotificationsFile::load(path)?;
        let (channels, routes) = file.apply(&path.display().to_string(), &db.pool, &key, &policy).await?;
        tracing::info!(path = %path.display(), channels, routes, "notifications config applied");
    }
    let public_url = args
        .public_url
        .clone()
        .or_else(|| listen.map(|address| format!("http://{address}")))
        .unwrap_or_else(|| SenderOptions::default().public_url);
    if args.public_url.is_none() {
        tracing::warn!(%public_url, "SKYWARDEN_PUBLIC_URL is not set: links in notifications point at the listen address");
    }
    let options = SenderOptions {
        public_url,
        max_attempts: args.notify_max_attempts,
        retry_base: args.notify_retry_base,
        lease: args.notify_lease,
        ..Default::default()
    };
    // A call never outlives its lease, or a second sender could take the row while it runs.
    let timeout = (args.notify_lease / 2).min(std::time::Duration::from_secs(15));
    let sender = Sender::new(db.pool.clone(), key.clone(), SafeHttpClient::new(policy).with_timeout(timeout), options);
    Ok((key, sender))
}

pub(crate) async fn run(db_options: &DbOptions, action: NotificationsAction) -> anyhow::Result<ExitCode> {
    let db = Database::open(db_options).await?;
    match action {
        NotificationsAction::Deliver { once, notify } => {
            let (_, sender) = set_up(db_options, &db, &notify, None).await?;
            if once {
                let report = sender.deliver_due().await?;
                println!(
                    "{} delivered, {} to retry, {} dead, {} digests made",
                    report.delivered, report.retrying, report.dead, report.digests
                );
            } else {
                sender.run(super::shutdown_signal()).await;
            }
        }
        NotificationsAction::Status { json } => {
            let counts = outbox::counts(&db.pool).await?;
            let filter = DeliveryFilter { state: Some("dead".into()), limit: 50, ..Default::default() };
            let dead = outbox::list(&db.pool, &filter).await?;
            if json {
                let counts: serde_json::Map<String, serde_json::Value> =
                    counts.into_iter().map(|(state, n)| (state, n.into())).collect();
                println!("{}", serde_json::to_string_pretty(&serde_json::json!({"counts": counts, "dead": dead}))?);
            } else {
                for (state, n) in &counts {
                    println!("{state:<10} {n}");
                }
                for delivery in &dead {
                    println!(
                        "dead #{} to {} ({}), {} attempts: {}",
                        delivery.id,
                        delivery.channel,
                        delivery.event,
                        delivery.attempts,
                        delivery.last_error.as_deref().unwrap_or("-")
                    );
                }
            }
        }
        NotificationsAction::Apply { notify } => {
            anyhow::ensure!(
                notify.notifications.is_some(),
                "give the file with --notifications or SKYWARDEN_NOTIFICATIONS"
            );
            set_up(db_options, &db, &notify, None).await?;
            println!("applied {}", notify.notifications.as_ref().map(|p| p.display().to_string()).unwrap_or_default());
        }
    }
    db.close().await?;
    Ok(ExitCode::SUCCESS)
}
