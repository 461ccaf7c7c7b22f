//! `skywarden notifications deliver|status|deliveries|retry|apply`, and the notification set-up
//! `serve`, `worker` and `demo` share: the secret key, the network policy, the config file, the
//! sender.

use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::Arc;

use crate::cli::{NotificationsAction, NotifyArgs};
use anyhow::Context;
use skywarden::auth::audit;
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
    super::with_db(db_options, async |db| match action {
        NotificationsAction::Deliver { once, notify } => deliver(db_options, db, once, &notify).await,
        NotificationsAction::Status { json } => status(db, json).await,
        NotificationsAction::Deliveries { status, alert, limit, json } => {
            let filter = DeliveryFilter { state: status, alert_id: alert, limit, ..Default::default() };
            deliveries(db, &filter, json).await
        }
        NotificationsAction::Retry { delivery_id } => retry(db, delivery_id).await,
        NotificationsAction::Apply { file, mut notify } => {
            // The positional file wins over --notifications and SKYWARDEN_NOTIFICATIONS.
            notify.notifications = file.or(notify.notifications);
            let Some(path) = notify.notifications.clone() else {
                anyhow::bail!("give the file: `notifications apply FILE` (or --notifications, SKYWARDEN_NOTIFICATIONS)")
            };
            set_up(db_options, db, &notify, None).await?;
            println!("applied {}", path.display());
            Ok(ExitCode::SUCCESS)
        }
    })
    .await
}

async fn deliver(db_options: &DbOptions, db: &Database, once: bool, notify: &NotifyArgs) -> anyhow::Result<ExitCode> {
    let (_, sender) = set_up(db_options, db, notify, None).await?;
    if once {
        let report = sender.deliver_due().await?;
        println!(
            "{} delivered, {} to retry, {} dead, {} digests made",
            report.delivered, report.retrying, report.dead, report.digests
        );
    } else {
        sender.run(super::shutdown_signal()).await;
    }
    Ok(ExitCode::SUCCESS)
}

/// Counts by state and the latest dead letters; `--json`: one object with both.
async fn status(db: &Database, json: bool) -> anyhow::Result<ExitCode> {
    let counts = outbox::counts(&db.pool).await?;
    let filter = DeliveryFilter { state: Some("dead".into()), limit: 50, ..Default::default() };
    let dead = outbox::list(&db.pool, &filter).await?;
    if json {
        let counts: serde_json::Map<String, serde_json::Value> =
            counts.into_iter().map(|(state, n)| (state, n.into())).collect();
        println!("{}", serde_json::json!({"counts": counts, "dead": dead}));
        return Ok(ExitCode::SUCCESS);
    }
    for (state, n) in &counts {
        println!("{state:<10} {n}");
    }
    for delivery in &dead {
        print_delivery(delivery);
    }
    if !dead.is_empty() {
        println!("retry one with `skywarden notifications retry ID`");
    }
    Ok(ExitCode::SUCCESS)
}

/// The deliveries the API's `GET /api/v1/deliveries` lists, newest first.
async fn deliveries(db: &Database, filter: &DeliveryFilter, json: bool) -> anyhow::Result<ExitCode> {
    if let Some(alert) = &filter.alert_id {
        anyhow::ensure!(skywarden::model::is_alert_id(alert), "--alert: an alert id is a UUID, not {alert:?}");
    }
    for delivery in outbox::list(&db.pool, filter).await? {
        if json {
            println!("{}", serde_json::to_string(&delivery)?);
        } else {
            print_delivery(&delivery);
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn print_delivery(delivery: &outbox::DeliveryView) {
    println!(
        "{} #{} to {} ({}), {} attempts{}",
        delivery.state,
        delivery.id,
        delivery.channel,
        delivery.event,
        delivery.attempts,
        delivery.last_error.as_deref().map(|e| format!(": {e}")).unwrap_or_default()
    );
}

/// A dead letter back to pending, as the dashboard's retry does (`outbox::retry`), audit-logged.
async fn retry(db: &Database, id: i64) -> anyhow::Result<ExitCode> {
    match outbox::retry(&db.pool, id).await? {
        outbox::Retry::Retrying => {}
        outbox::Retry::NotDead => {
            anyhow::bail!("no dead delivery #{id} (`skywarden notifications deliveries --status dead` lists them)")
        }
        outbox::Retry::Superseded => anyhow::bail!(
            "delivery #{id} is not retried: a later status change of its alert was already delivered to this \
             channel, and sending this now would reopen it"
        ),
    }
    audit::record(&db.pool, &super::cli_actor(), "delivery.retry", Some(&id.to_string()), None, serde_json::json!({}))
        .await;
    println!("delivery #{id} is pending again; a running sender (serve, worker, notifications deliver) sends it");
    Ok(ExitCode::SUCCESS)
}
