//! `skywarden accounts add|list|remove|test|status|template`.

use std::process::ExitCode;

use skywarden::accounts::{self, LogSources, NewAccount, PollIntervals};
use skywarden::aws::AwsSettings;
use skywarden::db::{Database, DbOptions};
use skywarden::pollers::jobs;

use super::with_db;
use crate::cli::{AccountAddArgs, AccountsAction};

pub(crate) async fn run(db_options: &DbOptions, action: AccountsAction) -> anyhow::Result<ExitCode> {
    if let AccountsAction::Template = action {
        print!("{}", accounts::ROLE_TEMPLATE);
        return Ok(ExitCode::SUCCESS);
    }
    with_db(db_options, async |db| match action {
        AccountsAction::Add(args) => add(db, *args).await,
        AccountsAction::List { json } => list(db, json).await,
        AccountsAction::Remove { account_id } => {
            accounts::remove(&db.pool, &account_id).await?;
            println!("account {account_id} removed; its stored events, resources and alerts are kept");
            Ok(ExitCode::SUCCESS)
        }
        AccountsAction::Test { account_id, json } => test(db, &account_id, json).await,
        AccountsAction::Status { account_id, json } => status(db, account_id.as_deref(), json).await,
        AccountsAction::Template => unreachable!("handled above"),
    })
    .await
}

async fn list(db: &Database, json: bool) -> anyhow::Result<ExitCode> {
    let accounts = accounts::list(&db.pool).await?;
    for account in &accounts {
        if json {
            println!("{}", serde_json::to_string(account)?);
        } else {
            let state = match (&account.verified_at, &account.verify_error) {
                (_, Some(error)) => format!("role check failed: {error}"),
                (Some(at), None) => format!("role verified {}", at.format("%Y-%m-%d %H:%M UTC")),
                (None, None) => "role not verified yet".into(),
            };
            println!(
                "{}  {:<20}  {}  regions={}  {state}",
                account.account_id,
                account.name.as_deref().unwrap_or("-"),
                account.role_arn,
                account.regions.join(",")
            );
        }
    }
    if accounts.is_empty() && !json {
        println!("no accounts onboarded (skywarden accounts add --role-arn …)");
    }
    Ok(ExitCode::SUCCESS)
}

async fn test(db: &Database, account_id: &str, json: bool) -> anyhow::Result<ExitCode> {
    let settings = AwsSettings::from_env();
    let base = settings.load().await;
    let result = accounts::test(&db.pool, &base, &settings, account_id).await?;
    if json {
        println!("{}", serde_json::to_string(&result)?);
    } else if result.ok {
        println!("ok: assumed {}", result.assumed_arn.as_deref().unwrap_or("the role"));
    } else {
        println!("failed: {}", result.error.as_deref().unwrap_or("unknown error"));
    }
    Ok(if result.ok { ExitCode::SUCCESS } else { ExitCode::FAILURE })
}

async fn status(db: &Database, account_id: Option<&str>, json: bool) -> anyhow::Result<ExitCode> {
    let statuses = jobs::statuses(&db.pool, account_id).await?;
    for status in &statuses {
        if json {
            println!("{}", serde_json::to_string(status)?);
            continue;
        }
        let lag = status.lag_seconds.map(|s| format!("{:.0}s", s.max(0.0))).unwrap_or_else(|| "-".into());
        let last =
            status.last_success_at.map(|t| t.format("%Y-%m-%d %H:%M:%S").to_string()).unwrap_or_else(|| "never".into());
        let target = if status.target.is_empty() { String::new() } else { format!(" {}", status.target) };
        println!(
            "{} {:<14} {:<20}{target}  last success {last}  lag {lag}  items {}{}{}",
            status.account_id,
            status.region,
            status.source,
            status.items_total,
            status.running_on.as_deref().map(|w| format!("  running on {w}")).unwrap_or_default(),
            status
                .last_error
                .as_deref()
                .map(|e| format!("\n    last error ({} in a row): {e}", status.consecutive_failures))
                .unwrap_or_default(),
        );
    }
    Ok(ExitCode::SUCCESS)
}

async fn add(db: &Database, args: AccountAddArgs) -> anyhow::Result<ExitCode> {
    let new = NewAccount {
        role_arn: args.role_arn,
        name: args.name,
        regions: args.regions,
        endpoint_url: args.endpoint_url,
        sources: LogSources {
            trail_bucket: args.trail_bucket,
            trail_prefix: args.trail_prefix,
            organization_id: args.organization_id,
            flow_bucket: args.flow_bucket,
            flow_prefix: args.flow_prefix,
            flow_log_groups: args.flow_log_groups,
            bucket_region: args.bucket_region,
        },
    };
    let account = accounts::onboard(&db.pool, &new, &PollIntervals::default()).await?;
    let test = if args.no_test {
        None
    } else {
        let settings = AwsSettings::from_env();
        let base = settings.load().await;
        Some(accounts::test(&db.pool, &base, &settings, &account.account_id).await?)
    };
    if args.json {
        let mut value = serde_json::to_value(&account)?;
        value["external_id"] = serde_json::Value::String(account.external_id.clone());
        value["test"] = serde_json::to_value(&test)?;
        println!("{value}");
    } else {
        println!("account {} onboarded (regions {})", account.account_id, account.regions.join(","));
        println!("external ID (shown only now): {}", account.external_id);
        println!("create the role with: skywarden accounts template > role.yaml, then deploy it with");
        println!("  ExternalId={} and SkywardenPrincipalArn=<the principal Skywarden runs as>", account.external_id);
        match &test {
            Some(result) if result.ok => println!("role check: ok ({})", result.assumed_arn.as_deref().unwrap_or("")),
            Some(result) => println!(
                "role check: failed: {}\n  polling starts once the role can be assumed; re-check with `skywarden accounts test {}`",
                result.error.as_deref().unwrap_or(""),
                account.account_id
            ),
            None => println!(
                "role check skipped; run `skywarden accounts test {}` once the role exists",
                account.account_id
            ),
        }
    }
    Ok(ExitCode::SUCCESS)
}
