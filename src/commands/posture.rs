//! `skywarden posture run|findings|suppress|scores`.

use std::process::ExitCode;

use skywarden::cli::{PolicyArgs, PostureAction};
use skywarden::db::{Database, DbOptions};
use skywarden::ingest::snapshots::dump::SnapshotDump;
use skywarden::posture::{self, checks::CheckSet, findings};

/// Records a dump's snapshots one by one with a posture evaluation after each, as polling
/// would: a finding that a later snapshot causes names the change (and event) behind it.
pub(crate) async fn import_and_evaluate(
    pool: &sqlx::PgPool,
    dump: &SnapshotDump,
    checks: &mut CheckSet,
    alert_at: Option<skywarden::alerts::Severity>,
) -> anyhow::Result<posture::RunReport> {
    let mut last = None;
    for index in 0..dump.snapshots.len() {
        dump.record_one(pool, index).await?;
        last = Some(posture::run(pool, checks, std::slice::from_ref(&dump.account_id), alert_at).await?);
    }
    last.ok_or_else(|| anyhow::anyhow!("the dump holds no snapshot"))
}

pub(crate) async fn run(
    db_options: &DbOptions,
    policies: &PolicyArgs,
    action: PostureAction,
) -> anyhow::Result<ExitCode> {
    let db = Database::open(db_options).await?;
    let code = match action {
        PostureAction::Run { accounts, alerts, json } => {
            let dir = posture::checks_dir(&policies.policies);
            let mut checks = CheckSet::load(&dir);
            anyhow::ensure!(
                !checks.checks.is_empty() || !checks.problems.is_empty(),
                "no posture checks in {}",
                dir.display()
            );
            let report = posture::run(&db.pool, &mut checks, &accounts, alerts.alert_severity.0).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&report)?);
            } else {
                for problem in &report.problems {
                    println!(
                        "problem: {}: {}: {}",
                        problem.file,
                        problem.check.as_deref().unwrap_or("?"),
                        problem.message
                    );
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
            if report.problems.is_empty() { ExitCode::SUCCESS } else { ExitCode::from(2) }
        }
        PostureAction::Findings { status, account, check, json } => {
            let status = match status.as_str() {
                "all" => None,
                "open" | "resolved" => Some(status),
                other => anyhow::bail!("--status is open, resolved or all, not {other:?}"),
            };
            let filter = findings::FindingFilter { status, account_id: account, check_id: check, ..Default::default() };
            let list = findings::list(&db.pool, &filter).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&list)?);
            } else {
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
            }
            ExitCode::SUCCESS
        }
        PostureAction::Suppress { check, account, resource, reason, until, actor } => {
            let suppression =
                findings::suppress(&db.pool, &check, account.as_deref(), resource.as_deref(), &reason, until, &actor)
                    .await?;
            println!("suppression {} of {} recorded", suppression.id, suppression.check_id);
            ExitCode::SUCCESS
        }
        PostureAction::Import { file, alerts } => {
            let dump = SnapshotDump::load(&file)?;
            let mut checks = CheckSet::load(&posture::checks_dir(&policies.policies));
            let report = import_and_evaluate(&db.pool, &dump, &mut checks, alerts.alert_severity.0).await?;
            let open = findings::list(
                &db.pool,
                &findings::FindingFilter {
                    status: Some("open".into()),
                    account_id: Some(dump.account_id.clone()),
                    ..Default::default()
                },
            )
            .await?;
            println!(
                "{}: {} snapshots recorded; {} checks; {} findings open",
                file.display(),
                dump.snapshots.len(),
                report.checks,
                open.len()
            );
            ExitCode::SUCCESS
        }
        PostureAction::Scores { json } => {
            let scores = findings::scores(&db.pool, None, true).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&scores)?);
            } else {
                for s in &scores {
                    println!(
                        "{} {:<12} {:>5.1}%  {} passed, {} failed, {} suppressed",
                        s.account_id, s.section, s.score, s.passed, s.failed, s.suppressed
                    );
                }
            }
            ExitCode::SUCCESS
        }
    };
    db.close().await?;
    Ok(code)
}

pub(crate) async fn bench(
    resources: usize,
    snapshot: &std::path::Path,
    policies: &PolicyArgs,
) -> anyhow::Result<ExitCode> {
    let dump = SnapshotDump::load(snapshot)?;
    let account = posture::bench::account(&dump, resources)?;
    let mut checks = CheckSet::load(&posture::checks_dir(&policies.policies));
    anyhow::ensure!(checks.problems.is_empty(), "posture checks with problems; run `skywarden policies lint`");
    let report = tokio::task::spawn_blocking(move || posture::bench::run(&mut checks, &account)).await?;
    println!("{report}");
    Ok(ExitCode::SUCCESS)
}
