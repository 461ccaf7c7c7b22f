//! `skywarden policies lint|list|backtest`.

use std::process::ExitCode;

use skywarden::db::{Database, DbOptions};
use skywarden::detect::{self, PolicySet, Scope};

use crate::cli::{PolicyAction, PolicyArgs};

pub(crate) async fn run(
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
