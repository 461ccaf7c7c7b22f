//! `skywarden demo`: the sample incident imported, its story printed, the dashboard served.

use std::process::ExitCode;

use anyhow::Context;
use skywarden::auth::Role;
use skywarden::db::{Database, DbOptions};
use skywarden::detect;
use skywarden::ingest::{self, ImportOptions};
use skywarden::posture::checks::CheckSet;
use skywarden::{demo, http};

use super::import::{detect_after_import, print_detection, print_summary};
use super::{load_checks, load_policies, notifications, open_geo, shutdown_signal};
use crate::cli::DemoArgs;

/// The sample's configuration snapshots (`<samples>.config.json`), recorded after its logs so
/// their changes link to the CloudTrail events, then the posture checks over them.
async fn demo_posture(db: &Database, args: &DemoArgs, mut checks: CheckSet) -> anyhow::Result<()> {
    let file = args.samples.with_extension("config.json");
    if !file.exists() {
        return Ok(());
    }
    let dump = skywarden::inventory::dump::SnapshotDump::load(&file)?;
    let high = Some(skywarden::model::Severity::High);
    let report = skywarden::posture::import_dump(&db.pool, &dump, &mut checks, high).await?;
    for (account, outcome) in &report.accounts {
        println!(
            "Posture of {account} after {} snapshots: {} checks on {} resources; {} failing ({} raised alerts).",
            dump.snapshots.len(),
            report.checks,
            outcome.evaluated,
            outcome.failed,
            outcome.alerts
        );
    }
    Ok(())
}

/// A demo user with a fresh password at every run, shown only when the dashboard starts.
async fn demo_user(db: &Database, username: &str, role: Role) -> anyhow::Result<String> {
    let password = format!("demo-{}", skywarden::auth::random_secret(12)?);
    skywarden::auth::users::upsert(&db.pool, username, &password, role).await?;
    Ok(password)
}

pub(crate) async fn run_demo(db_options: &DbOptions, args: DemoArgs) -> anyhow::Result<ExitCode> {
    let geo = open_geo(&args.geo)?;
    let policies = Some(load_policies(&args.policies)?.with_geo(geo.clone()));
    let checks = load_checks(&args.policies)?;
    let db = Database::open(db_options).await?;
    // Before the import: routes from a notifications config file apply to the sample's alerts.
    let (key, sender) = notifications::set_up(db_options, &db, &args.notify, Some(args.listen)).await?;
    let started = detect::database_now(&db.pool).await?;
    let options = ImportOptions { geo, show_progress: true, ..ImportOptions::new(vec![args.samples.clone()]) };
    let summary = ingest::import(&db.pool, options).await;
    let result = match summary {
        Ok(summary) => {
            print_summary(&summary);
            match detect_after_import(&db.pool, policies.as_ref(), started).await {
                Ok(detection) => {
                    detection.iter().for_each(print_detection);
                    match demo_posture(&db, &args, checks).await {
                        Ok(()) => demo::print_story(&db.pool).await.map_err(anyhow::Error::from),
                        Err(error) => Err(error),
                    }
                }
                Err(error) => Err(error),
            }
        }
        Err(error) => Err(error.into()),
    };
    if let Err(error) = result {
        db.close().await?;
        return Err(error);
    }
    if !args.no_dashboard {
        let analyst = demo_user(&db, "analyst", Role::Analyst).await?;
        let admin = demo_user(&db, "admin", Role::Admin).await?;
        let listener =
            tokio::net::TcpListener::bind(args.listen).await.with_context(|| format!("binding {}", args.listen))?;
        println!("\nDashboard: http://{}/  (user: analyst, password: {analyst})", args.listen);
        println!("  for channels, routes, tokens, users and the audit log: (user: admin, password: {admin})");
        println!("Press Ctrl-C to stop.");
        let (stop, stopped) = tokio::sync::watch::channel(false);
        let notifications = (!args.notify.no_notifications).then(|| {
            let mut stopped = stopped.clone();
            tokio::spawn(sender.clone().run(async move {
                let _ = stopped.wait_for(|stop| *stop).await;
            }))
        });
        let context = http::ApiContext::new(db.pool.clone()).with_notify(key, sender);
        http::serve(context, listener, async move {
            shutdown_signal().await;
            let _ = stop.send(true);
        })
        .await?;
        if let Some(notifications) = notifications {
            notifications.await?;
        }
    }
    db.close().await?;
    let data_dir = db_options.data_dir();
    println!("\nWhere to look next:");
    if db_options.database_url.is_none() {
        println!("  skywarden --data-dir {} db start     # prints the URL to use with psql", data_dir.display());
    }
    println!("  tables: cloudtrail_events (audit trail, raw event in `raw`), flow_records, accounts");
    if let Some(story) = args.samples.parent().map(|dir| dir.join("README.md")).filter(|p| p.exists()) {
        println!("  the story behind the data: {}", story.display());
    }
    Ok(ExitCode::SUCCESS)
}
