//! `skywarden alerts` (list, set-status).

use std::process::ExitCode;

use skywarden::alerts::store::{self as alert_store, AlertFilter};
use skywarden::db::DbOptions;

use super::with_db;
use crate::cli::{AlertsAction, AlertsArgs};

pub(crate) async fn alerts(db_options: &DbOptions, args: AlertsArgs) -> anyhow::Result<ExitCode> {
    with_db(db_options, async |db| match args.action {
        Some(AlertsAction::SetStatus { id, status, reason, until, actor }) => {
            let old =
                skywarden::notify::outbox::set_alert_status(&db.pool, &id, status, until, &actor, &reason).await?;
            println!("alert {id}: {old} -> {status}");
            Ok(ExitCode::SUCCESS)
        }
        None => {
            let filter = AlertFilter { status: args.status, policy_id: args.policy, alert_id: None };
            alert_store::list(&db.pool, &filter).await.map(|alerts| {
                for alert in alerts {
                    if args.json {
                        println!("{}", serde_json::to_string(&alert).unwrap_or_default());
                    } else {
                        println!(
                            "{}  {:<8} {:<12} {}  {}  [{} events, {} .. {}]",
                            alert.id,
                            alert.severity,
                            alert.status,
                            alert.policy_id,
                            alert.title,
                            alert.event_count,
                            alert.first_seen.format("%Y-%m-%d %H:%M"),
                            alert.last_seen.format("%Y-%m-%d %H:%M"),
                        );
                    }
                }
            })?;
            Ok(ExitCode::SUCCESS)
        }
    })
    .await
}
