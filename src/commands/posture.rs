//! `skywarden posture run|findings|suppress|scores`.

use std::process::ExitCode;

use skywarden::cli::{PolicyArgs, PostureAction};
use skywarden::db::{Database, DbOptions};
use skywarden::posture::{self, checks::CheckSet, findings};

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
