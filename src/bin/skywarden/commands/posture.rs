//! `skywarden posture run|findings|suppress|import|scores`.

use std::path::Path;
use std::process::ExitCode;

use skywarden::db::{Database, DbOptions};
use skywarden::inventory::dump::SnapshotDump;
use skywarden::model::Severity;
use skywarden::posture::{self, RunReport, checks::CheckSet, findings};

use super::collect::{self, Collected};
use super::{EXIT_PARTIAL, check_problem, load_checks, with_db};
use crate::cli::{PolicyArgs, PostureAction};

pub(crate) async fn run(
    db_options: &DbOptions,
    policies: &PolicyArgs,
    action: PostureAction,
) -> anyhow::Result<ExitCode> {
    // The commands that evaluate checks load them first: a broken or missing check stops them
    // before they touch the database.
    let checks = match &action {
        PostureAction::Run { .. } | PostureAction::Import { .. } => load_checks(policies)?,
        _ => CheckSet::default(),
    };
    with_db(db_options, async |db| match action {
        PostureAction::Run { accounts, collect, alerts, json } => {
            let collected = if collect { Some(collect::collect(db, &accounts).await?) } else { None };
            evaluate(db, checks, &accounts, alerts.alert_severity.0, collected, json).await
        }
        PostureAction::Findings { status, account, check, json } => {
            list_findings(db, status, account, check, json).await
        }
        PostureAction::Suppress { check, account, resource, reason, until, actor } => {
            let suppression =
                findings::suppress(&db.pool, &check, account.as_deref(), resource.as_deref(), &reason, until, &actor)
                    .await?;
            println!("suppression {} of {} recorded", suppression.id, suppression.check_id);
            Ok(ExitCode::SUCCESS)
        }
        PostureAction::Import { file, alerts } => import(db, checks, &file, alerts.alert_severity.0).await,
        PostureAction::Scores { json } => scores(db, json).await,
    })
    .await
}

/// `posture run --json`: the evaluation, and with --collect what each snapshot job did.
#[derive(serde::Serialize)]
struct RunOutput<'a> {
    #[serde(flatten)]
    report: &'a RunReport,
    #[serde(skip_serializing_if = "Option::is_none")]
    collected: Option<&'a [Collected]>,
}

/// Evaluates the stored snapshots (after collecting fresh ones with --collect); exits 2 when a
/// check or a collection failed.
async fn evaluate(
    db: &Database,
    mut checks: CheckSet,
    accounts: &[String],
    alert_at: Option<Severity>,
    collected: Option<Vec<Collected>>,
    json: bool,
) -> anyhow::Result<ExitCode> {
    let report = posture::run(&db.pool, &mut checks, accounts, alert_at).await?;
    let collected = collected.as_deref();
    if json {
        println!("{}", serde_json::to_string(&RunOutput { report: &report, collected })?);
    } else {
        collected.into_iter().flatten().for_each(print_collected);
        print_report(&report);
    }
    let collect_failed = collected.is_some_and(|c| c.iter().any(|job| job.error.is_some()));
    Ok(if report.problems.is_empty() && !collect_failed { ExitCode::SUCCESS } else { ExitCode::from(EXIT_PARTIAL) })
}

fn print_collected(job: &Collected) {
    let region = if job.region.is_empty() { String::new() } else { format!(" {}", job.region) };
    match &job.error {
        None => println!("snapshot {}{region}: {} resource versions stored", job.account_id, job.stored),
        Some(error) => println!("snapshot {}{region} failed: {error}", job.account_id),
    }
}

fn print_report(report: &RunReport) {
    for problem in &report.problems {
        println!("problem: {}", check_problem(problem));
    }
    for (account, outcome) in &report.accounts {
        println!(
            "{account}: {} evaluations, {} passed, {} failed; {} opened, {} reopened, {} resolved; {} alerts",
            outcome.evaluated,
            outcome.passed,
            outcome.failed,
            outcome.opened,
            outcome.reopened,
            outcome.resolved,
            outcome.alerts
        );
    }
    println!("{} checks over {} accounts", report.checks, report.accounts.len());
}

async fn list_findings(
    db: &Database,
    status: String,
    account: Option<String>,
    check: Option<String>,
    json: bool,
) -> anyhow::Result<ExitCode> {
    let status = match status.as_str() {
        "all" => None,
        "open" | "resolved" => Some(status),
        other => anyhow::bail!("--status is open, resolved or all, not {other:?}"),
    };
    let filter = findings::FindingFilter { status, account_id: account, check_id: check, ..Default::default() };
    let list = findings::list(&db.pool, &filter).await?;
    if json {
        for finding in &list {
            println!("{}", serde_json::to_string(finding)?);
        }
        return Ok(ExitCode::SUCCESS);
    }
    for f in &list {
        println!(
            "{:<8} {:<9} {:<40} {} {}{}: {}",
            f.severity,
            f.status,
            f.check_id,
            f.account_id,
            f.resource_id,
            if f.suppressed { " (suppressed)" } else { "" },
            f.messages.join("; ")
        );
    }
    println!("{} findings", list.len());
    Ok(ExitCode::SUCCESS)
}

async fn import(
    db: &Database,
    mut checks: CheckSet,
    file: &Path,
    alert_at: Option<Severity>,
) -> anyhow::Result<ExitCode> {
    let dump = SnapshotDump::load(file)?;
    let report = posture::import_dump(&db.pool, &dump, &mut checks, alert_at).await?;
    let filter = findings::FindingFilter {
        status: Some("open".into()),
        account_id: Some(dump.account_id.clone()),
        ..Default::default()
    };
    let open = findings::list(&db.pool, &filter).await?;
    println!(
        "{}: {} snapshots recorded; {} checks; {} findings open",
        file.display(),
        dump.snapshots.len(),
        report.checks,
        open.len()
    );
    Ok(ExitCode::SUCCESS)
}

async fn scores(db: &Database, json: bool) -> anyhow::Result<ExitCode> {
    let scores = findings::scores(&db.pool, None, true).await?;
    if json {
        for score in &scores {
            println!("{}", serde_json::to_string(score)?);
        }
        return Ok(ExitCode::SUCCESS);
    }
    for s in &scores {
        println!(
            "{} {:<12} {:>5.1}%  {} passed, {} failed, {} suppressed",
            s.account_id, s.section, s.score, s.passed, s.failed, s.suppressed
        );
    }
    Ok(ExitCode::SUCCESS)
}
