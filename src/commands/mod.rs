//! The commands behind the `skywarden` binary: each opens what it needs (database, GeoIP,
//! policies), calls the library, and prints for a person or, with `--json`, for a program.

pub(crate) mod accounts;
pub(crate) mod notifications;
pub(crate) mod posture;

use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;
use sqlx::postgres::PgConnectOptions;

use serde::Serialize;
use skywarden::alerts::store::{self as alert_store, AlertFilter};
use skywarden::auth::audit;
use skywarden::cli::{
    AlertsAction, AlertsArgs, BenchArgs, DbAction, DemoArgs, GeoArgs, ImportArgs, PolicyAction, PolicyArgs, ServeArgs,
    TokenAction, UserAction,
};
use skywarden::db::{Database, DbOptions, EmbeddedPostgres};
use skywarden::detect::{self, DetectionSummary, Scope};
use skywarden::geo::GeoDb;
use skywarden::ingest::flowlogs::FlowFormat;
use skywarden::ingest::{self, ImportOptions, ImportSummary};
use skywarden::policy::PolicySet;
use skywarden::{bench, demo, http};

/// Exit code when an import finished but some files or records could not be imported.
const EXIT_PARTIAL_IMPORT: u8 = 2;

/// Loads the policies; problems are logged, and a missing folder turns detection off.
pub(crate) fn load_policies(args: &PolicyArgs) -> Option<PolicySet> {
    if !args.policies.is_dir() {
        tracing::warn!(folder = %args.policies.display(), "no policies folder: detection is off (set --policies)");
        return None;
    }
    let policies = PolicySet::load(&args.policies);
    for problem in &policies.problems {
        tracing::warn!(%problem, "policy not loaded");
    }
    Some(policies)
}

/// Runs detection over what an import stored.
pub(crate) async fn detect_after_import(
    pool: &sqlx::PgPool,
    policies: Option<&PolicySet>,
    since: chrono::DateTime<chrono::Utc>,
) -> anyhow::Result<Option<DetectionSummary>> {
    let Some(policies) = policies else { return Ok(None) };
    Ok(Some(detect::run(pool, policies, Scope::IngestedSince(since)).await.context("detection")?))
}

#[derive(Serialize)]
struct ImportReport<'a> {
    #[serde(flatten)]
    import: &'a ImportSummary,
    detection: Option<&'a DetectionSummary>,
}

pub(crate) fn open_geo(args: &GeoArgs) -> anyhow::Result<Option<Arc<GeoDb>>> {
    if args.geoip.is_empty() {
        return Ok(None);
    }
    Ok(Some(Arc::new(GeoDb::open(&args.geoip)?)))
}

pub(crate) async fn import(db_options: &DbOptions, args: ImportArgs) -> anyhow::Result<ExitCode> {
    let geo = open_geo(&args.geo)?;
    let flow_format = args.flow_format.as_deref().map(FlowFormat::parse).transpose().context("--flow-format")?;
    let policies = if args.no_detect { None } else { load_policies(&args.policies) };
    let db = Database::open(db_options).await?;
    let started = detect::database_now(&db.pool).await?;
    let options = ImportOptions {
        geo,
        default_account: args.account,
        flow_format,
        parsers: args.parsers,
        writers: args.writers,
        show_progress: !args.json,
        ..ImportOptions::new(args.paths)
    };
    let summary = ingest::import(&db.pool, options).await;
    let detection = match &summary {
        Ok(_) => detect_after_import(&db.pool, policies.as_ref(), started).await,
        Err(_) => Ok(None),
    };
    db.close().await?;
    let summary = summary?;
    let detection = detection?;
    if args.json {
        println!("{}", serde_json::to_string(&ImportReport { import: &summary, detection: detection.as_ref() })?);
    } else {
        print_summary(&summary);
        if let Some(detection) = &detection {
            print_detection(detection);
        }
    }
    Ok(if summary.errors.is_empty() { ExitCode::SUCCESS } else { ExitCode::from(EXIT_PARTIAL_IMPORT) })
}

pub(crate) fn print_summary(summary: &ImportSummary) {
    println!(
        "Imported {} files in {:.1}s: {} new CloudTrail events, {} new flow records, {} duplicates skipped{}.",
        summary.files,
        summary.elapsed_ms as f64 / 1000.0,
        summary.cloudtrail_events,
        summary.flow_records,
        summary.duplicates,
        if summary.skipped > 0 { format!(", {} non-log records skipped", summary.skipped) } else { String::new() },
    );
    if !summary.errors.is_empty() {
        println!("{} problems:", summary.errors.len());
        for error in &summary.errors {
            println!("  {}: {}", error.file, error.error);
        }
    }
}

pub(crate) fn print_detection(detection: &DetectionSummary) {
    println!(
        "Detection: {} events and {} console logins evaluated, {} findings, {} new alerts.",
        detection.events_evaluated, detection.logins_evaluated, detection.findings, detection.new_alerts
    );
}

pub(crate) async fn serve(db_options: &DbOptions, args: ServeArgs) -> anyhow::Result<ExitCode> {
    let db = Database::open(db_options).await?;
    let listener =
        tokio::net::TcpListener::bind(args.listen).await.with_context(|| format!("binding {}", args.listen))?;
    let aws_settings = skywarden::aws::AwsSettings::from_env();
    let aws_base = aws_settings.load().await;
    let (key, sender) = notifications::set_up(db_options, &db, &args.notify, Some(args.listen)).await?;
    let checks =
        skywarden::posture::checks::CheckSet::load(&skywarden::posture::checks_dir(&args.worker.policies.policies));
    let context = http::ApiContext::new(db.pool.clone())
        .with_aws(aws_settings, aws_base)
        .with_notify(key, sender.clone())
        .with_posture(checks, args.worker.posture.alert_severity.0);
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
        let worker = accounts::build_worker(&db, &args.worker).await?;
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

/// Completes on SIGINT or SIGTERM.
pub(crate) async fn shutdown_signal() {
    let interrupt = tokio::signal::ctrl_c();
    let mut terminate =
        tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).expect("installing SIGTERM handler");
    tokio::select! {
        _ = interrupt => {},
        _ = terminate.recv() => {},
    }
    tracing::info!("shutting down");
}

pub(crate) async fn embedded(db_options: &DbOptions, action: DbAction) -> anyhow::Result<ExitCode> {
    anyhow::ensure!(
        db_options.database_url.is_none(),
        "`skywarden db` manages the embedded cluster; unset DATABASE_URL to use it"
    );
    let mut server = EmbeddedPostgres::new(&db_options.data_dir())?;
    match action {
        DbAction::Start => {
            server.ensure_running().await?;
            let mut db = Database::open(db_options).await?;
            db.detach_embedded();
            println!("{}", server.database_url(skywarden::db::embedded::DATABASE));
        }
        DbAction::Stop => server.stop().await?,
        DbAction::Status => {
            let running = server.is_running().await?;
            println!("{}", if running { "running" } else { "stopped" });
            if !running {
                return Ok(ExitCode::from(3));
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// The sample's configuration snapshots (`<samples>.config.json`), recorded after its logs so
/// their changes link to the CloudTrail events, then the posture checks over them.
async fn demo_posture(db: &Database, args: &DemoArgs) -> anyhow::Result<()> {
    let file = args.samples.with_extension("config.json");
    if !file.exists() {
        return Ok(());
    }
    let dump = skywarden::ingest::snapshots::dump::SnapshotDump::load(&file)?;
    let mut checks =
        skywarden::posture::checks::CheckSet::load(&skywarden::posture::checks_dir(&args.policies.policies));
    let high = Some(skywarden::alerts::Severity::High);
    let report = posture::import_and_evaluate(&db.pool, &dump, &mut checks, high).await?;
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

pub(crate) async fn run_demo(db_options: &DbOptions, args: DemoArgs) -> anyhow::Result<ExitCode> {
    let geo = open_geo(&args.geo)?;
    let policies = load_policies(&args.policies);
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
                    match demo_posture(&db, &args).await {
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
        // A fresh password for the demo's analyst at every run, shown only here.
        let password = format!("demo-{}", skywarden::auth::random_secret(12)?);
        skywarden::auth::users::upsert(&db.pool, "analyst", &password, skywarden::auth::Role::Admin).await?;
        let listener =
            tokio::net::TcpListener::bind(args.listen).await.with_context(|| format!("binding {}", args.listen))?;
        println!("\nDashboard: http://{}/  (user: analyst, password: {password})", args.listen);
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

pub(crate) async fn bench_import(db_options: &DbOptions, args: BenchArgs) -> anyhow::Result<ExitCode> {
    // The benchmark works in a scratch database on the same server, never in Skywarden's own.
    let db = Database::open(db_options).await?;
    let server: PgConnectOptions = db.pool.connect_options().as_ref().clone();
    let work_dir = match args.work_dir {
        Some(dir) => dir,
        None => std::env::temp_dir(),
    };
    let report = bench::run(&server, args.events, &work_dir).await;
    db.close().await?;
    println!("{}", report?);
    Ok(ExitCode::SUCCESS)
}

pub(crate) async fn bench_queries(
    db_options: &DbOptions,
    events: i64,
    samples: usize,
    reuse: bool,
) -> anyhow::Result<ExitCode> {
    // Works in its own scratch database on the same server, never in Skywarden's own.
    let db = Database::open(db_options).await?;
    let server: PgConnectOptions = db.pool.connect_options().as_ref().clone();
    let report = skywarden::bench_queries::run(&server, events, samples, reuse).await;
    db.close().await?;
    println!("{}", report?);
    Ok(ExitCode::SUCCESS)
}

/// A private scratch folder under the system temp dir.
pub(crate) fn tempfile_dir() -> anyhow::Result<std::path::PathBuf> {
    let dir = std::env::temp_dir().join(format!("skywarden-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}

pub(crate) async fn alerts(db_options: &DbOptions, args: AlertsArgs) -> anyhow::Result<ExitCode> {
    let db = Database::open(db_options).await?;
    let result = match args.action {
        Some(AlertsAction::SetStatus { id, status, reason, until, actor }) => {
            alert_store::set_status(&db.pool, &id, status, until, &actor, &reason).await.map(|old| {
                println!("alert {id}: {old} -> {status}");
            })
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
            })
        }
    };
    db.close().await?;
    result?;
    Ok(ExitCode::SUCCESS)
}

pub(crate) async fn policies_command(
    db_options: &DbOptions,
    args: &PolicyArgs,
    action: PolicyAction,
) -> anyhow::Result<ExitCode> {
    anyhow::ensure!(args.policies.is_dir(), "no policies folder at {}", args.policies.display());
    let policies = PolicySet::load(&args.policies);
    match action {
        PolicyAction::Lint => {
            for problem in &policies.problems {
                println!("{problem}");
            }
            let listed = policies.list();
            let enabled = listed.iter().filter(|p| p.enabled).count();
            println!("{} policies ({} enabled), {} problems", listed.len(), enabled, policies.problems.len());
            // Posture checks: each broken one named; the others still load.
            let checks = skywarden::posture::checks::CheckSet::load(&skywarden::posture::checks_dir(&args.policies));
            for problem in &checks.problems {
                println!("{}: {}: {}", problem.file, problem.check.as_deref().unwrap_or("?"), problem.message);
            }
            println!("{} posture checks, {} problems", checks.checks.len(), checks.problems.len());
            let clean = policies.problems.is_empty() && checks.problems.is_empty();
            Ok(if clean { ExitCode::SUCCESS } else { ExitCode::FAILURE })
        }
        PolicyAction::List { json } => {
            for policy in policies.list() {
                if json {
                    println!("{}", serde_json::to_string(&policy)?);
                } else {
                    let mitre: Vec<String> = policy.mitre.iter().map(|m| m.label()).collect();
                    println!(
                        "{:<45} {:<8} {:<8} {:<9} {}  [{}]",
                        policy.id,
                        policy.severity,
                        if policy.enabled { "enabled" } else { "disabled" },
                        format!("{:?}", policy.kind).to_lowercase(),
                        policy.title,
                        mitre.join(" ")
                    );
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        PolicyAction::Backtest { id, since, json } => {
            anyhow::ensure!(policies.knows(&id), "no policy with id {id}; see `skywarden policies list`");
            let db = Database::open(db_options).await?;
            let result = detect::evaluate(&db.pool, &policies, Scope::EventsSince(since), Some(&id)).await;
            db.close().await?;
            let (findings, summary) = result?;
            // Fold findings the way the alert store would, to say how many alerts they make.
            let mut alerts: std::collections::BTreeMap<String, (String, usize)> = Default::default();
            for finding in &findings {
                alerts.entry(finding.alert_id()).or_insert_with(|| (finding.title.clone(), 0)).1 += 1;
            }
            if json {
                println!(
                    "{}",
                    serde_json::json!({"policy_id": id, "since": since, "events_evaluated": summary.events_evaluated,
                        "findings": findings.len(), "alerts": alerts.len(),
                        "titles": alerts.values().map(|(t, n)| serde_json::json!({"title": t, "findings": n})).collect::<Vec<_>>()})
                );
            } else {
                println!("{id} since {since}: {} findings in {} alerts", findings.len(), alerts.len());
                for (title, count) in alerts.values() {
                    println!("  {title} ({count} findings)");
                }
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// Who runs a CLI command, for the audit log.
fn cli_actor() -> String {
    format!("cli:{}", std::env::var("USER").unwrap_or_else(|_| "unknown".into()))
}

pub(crate) async fn users(db_options: &DbOptions, action: UserAction) -> anyhow::Result<ExitCode> {
    let UserAction::Create { username, role } = action;
    let password = match std::env::var("SKYWARDEN_USER_PASSWORD") {
        Ok(password) => password,
        Err(_) => {
            eprintln!("password for {username}:");
            let mut line = String::new();
            std::io::stdin().read_line(&mut line).context("reading the password from standard input")?;
            line.trim_end_matches(['\r', '\n']).to_owned()
        }
    };
    let db = Database::open(db_options).await?;
    skywarden::auth::users::create(&db.pool, &username, &password, role).await?;
    audit::record(&db.pool, &cli_actor(), "user.create", Some(&username), None, serde_json::json!({"role": role}))
        .await;
    println!("user {username} ({role}) created");
    db.close().await?;
    Ok(ExitCode::SUCCESS)
}

pub(crate) async fn tokens(db_options: &DbOptions, action: TokenAction) -> anyhow::Result<ExitCode> {
    let db = Database::open(db_options).await?;
    let result = match action {
        TokenAction::Create { name, role } => match skywarden::auth::create(&db.pool, &name, role).await {
            Ok((id, token)) => {
                let details = serde_json::json!({"name": name, "role": role});
                audit::record(&db.pool, &cli_actor(), "token.create", Some(&id), None, details).await;
                eprintln!("token {id} ({role}) created; it is shown only now:");
                println!("{token}");
                Ok(())
            }
            Err(error) => Err(error),
        },
        TokenAction::List => skywarden::auth::list(&db.pool).await.map(|tokens| {
            for t in tokens {
                let state = if t.revoked_at.is_some() { "revoked" } else { "active" };
                println!(
                    "{}  {:<8} {:<8} {}  created {}",
                    t.token_id,
                    t.role,
                    state,
                    t.name,
                    t.created_at.format("%Y-%m-%d")
                );
            }
        }),
        TokenAction::Revoke { id } => match skywarden::auth::revoke(&db.pool, &id).await {
            Ok(()) => {
                audit::record(&db.pool, &cli_actor(), "token.revoke", Some(&id), None, serde_json::json!({})).await;
                println!("token {id} revoked");
                Ok(())
            }
            Err(error) => Err(error),
        },
    };
    db.close().await?;
    result?;
    Ok(ExitCode::SUCCESS)
}

pub(crate) async fn incidents(db_options: &DbOptions, json: bool) -> anyhow::Result<ExitCode> {
    let db = Database::open(db_options).await?;
    let incidents = alert_store::incidents(&db.pool).await;
    db.close().await?;
    for incident in incidents? {
        if json {
            println!("{}", serde_json::to_string(&incident)?);
            continue;
        }
        println!(
            "{}  {}  {} from {}  {} .. {}",
            incident.id,
            incident.severity,
            incident.principal.as_deref().unwrap_or("?"),
            incident.source_ip.as_deref().unwrap_or("?"),
            incident.first_seen.format("%Y-%m-%d %H:%M"),
            incident.last_seen.format("%Y-%m-%d %H:%M")
        );
        for step in &incident.timeline {
            println!("    {}  {:<8} {}", step.time.format("%Y-%m-%d %H:%M:%S"), step.severity, step.title);
        }
    }
    Ok(ExitCode::SUCCESS)
}

pub(crate) async fn bench_detect(events: usize, policies: &PolicyArgs) -> anyhow::Result<ExitCode> {
    anyhow::ensure!(policies.policies.is_dir(), "no policies folder at {}", policies.policies.display());
    let set = PolicySet::load_with(&policies.policies, true);
    let dir = tempfile_dir()?;
    let file = dir.join("bench-detect-cloudtrail.json");
    bench::generate_events(&file, events)?;
    let report = tokio::task::spawn_blocking(move || bench::detection(&set, &file)).await?;
    let _ = std::fs::remove_dir_all(&dir);
    println!("{}", report?);
    Ok(ExitCode::SUCCESS)
}
