//! `skywarden accounts add|add-log-archive|list|remove|test|status|poll-now|configure|template`.

use std::process::ExitCode;

use aws_types::SdkConfig;
use skywarden::accounts::log_archive::NewLogArchive;
use skywarden::accounts::organization::{self, NewOrganization};
use skywarden::accounts::{self, AccountChange, AccountKind, LogSources, NewAccount, PollIntervals};
use skywarden::aws::{AwsSettings, RoleArn};
use skywarden::db::{Database, DbOptions};
use skywarden::pollers::{Source, jobs};

use super::aws_credentials;
use super::with_db;
use crate::cli::{AccountAddArgs, AccountsAction, LogArchiveArgs};

/// How to go on when Skywarden has no AWS credentials of its own.
const ADD_WITHOUT_CREDENTIALS: &str =
    "nothing was stored; give Skywarden credentials, or add it with --skip-test to check later";

/// Skywarden's AWS configuration with its credentials checked, unless --skip-test.
async fn aws_unless_skipped(skip_test: bool) -> anyhow::Result<Option<(AwsSettings, SdkConfig)>> {
    if skip_test {
        return Ok(None);
    }
    Ok(Some(aws_credentials::load_checked(ADD_WITHOUT_CREDENTIALS).await?))
}

/// A role ARN that cannot be one is named before anything else is checked.
fn check_role_arn(role_arn: &str) -> anyhow::Result<()> {
    RoleArn::parse(role_arn)?;
    Ok(())
}

pub(crate) async fn run(db_options: &DbOptions, action: AccountsAction) -> anyhow::Result<ExitCode> {
    if let AccountsAction::Template = action {
        print!("{}", accounts::ROLE_TEMPLATE);
        return Ok(ExitCode::SUCCESS);
    }
    with_db(db_options, async |db| match action {
        AccountsAction::Add(args) if args.organization => add_organization(db, *args).await,
        AccountsAction::Add(args) => add(db, *args).await,
        AccountsAction::AddLogArchive(args) => add_log_archive(db, *args).await,
        AccountsAction::List { json } => list(db, json).await,
        AccountsAction::Remove { account_id } => {
            accounts::remove(&db.pool, &account_id).await?;
            println!("account {account_id} removed; its stored events, resources and alerts are kept");
            Ok(ExitCode::SUCCESS)
        }
        AccountsAction::Test { account_id, json } => test(db, &account_id, json).await,
        AccountsAction::Status { account_id, json } => status(db, account_id.as_deref(), json).await,
        AccountsAction::PollNow { account, source, json } => {
            poll_now(db, account.as_deref(), source.as_deref(), json).await
        }
        AccountsAction::Configure {
            account_id,
            regions,
            all_regions,
            poll_intervals,
            default_intervals,
            trail_queue_url,
            flow_queue_url,
            guardduty_findings,
            security_hub_findings,
            json,
        } => {
            let regions = if all_regions { Some(Vec::new()) } else { regions };
            let intervals = match (default_intervals, poll_intervals.is_empty()) {
                (true, _) => Some(PollIntervals::default()),
                (false, true) => None,
                (false, false) => Some(intervals_from(&poll_intervals)?),
            };
            let change = AccountChange {
                regions,
                intervals,
                trail_queue_url,
                flow_queue_url,
                guardduty_findings,
                security_hub_findings,
            };
            configure(db, &account_id, change, json).await
        }
        AccountsAction::Template => unreachable!("handled above"),
        AccountsAction::Responder { action } => super::respond::responder(db, action).await,
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
                "{}  {:<20}  {}  {}  {state}",
                account.account_id,
                account.name.as_deref().unwrap_or("-"),
                account.role_arn,
                what_is_polled(account)
            );
        }
    }
    if accounts.is_empty() && !json {
        println!("no accounts onboarded (skywarden accounts add --role-arn …)");
    }
    Ok(ExitCode::SUCCESS)
}

async fn test(db: &Database, account_id: &str, json: bool) -> anyhow::Result<ExitCode> {
    accounts::load(&db.pool, account_id).await?;
    let (settings, base) = aws_credentials::load_checked("the role cannot be tried without them").await?;
    let result = accounts::test(&db.pool, &base, &settings, account_id).await?;
    if json {
        println!("{}", serde_json::to_string(&result)?);
    } else if result.ok {
        println!("ok: assumed {}", result.assumed_arn.as_deref().unwrap_or("the role"));
        print_regions(&result);
    } else {
        println!("failed: {}", result.error.as_deref().unwrap_or("unknown error"));
    }
    Ok(if result.ok { ExitCode::SUCCESS } else { ExitCode::FAILURE })
}

async fn status(db: &Database, account_id: Option<&str>, json: bool) -> anyhow::Result<ExitCode> {
    let statuses = jobs::statuses(&db.pool, account_id).await?;
    let now = chrono::Utc::now();
    let detection = skywarden::detect::health::read(&db.pool).await?;
    if json {
        println!("{}", serde_json::json!({ "detection": detection }));
    } else {
        println!("{}", detection_line(&detection));
    }
    for status in &statuses {
        if json {
            println!("{}", serde_json::to_string(status)?);
            continue;
        }
        let lag = status.lag_seconds.map(|s| human(s.max(0.0) as i64)).unwrap_or_else(|| "-".into());
        let last =
            status.last_success_at.map(|t| t.format("%Y-%m-%d %H:%M:%S").to_string()).unwrap_or_else(|| "never".into());
        let next = match (&status.running_on, (status.next_run_at - now).num_seconds()) {
            _ if !status.enabled => "retired".to_owned(),
            (Some(worker), _) => format!("running on {worker}"),
            _ if status.parked_at.is_some() => "never: PARKED (poll-now runs it again)".to_owned(),
            (None, wait) if wait <= 0 => "due now".to_owned(),
            (None, wait) => format!("in {}", human(wait)),
        };
        let target = if status.target.is_empty() { String::new() } else { format!(" {}", status.target) };
        println!(
            "{} {:<14} {:<20}{target}  every {}  last success {last}  next run {next}  lag {lag}  items {}{}",
            status.account_id,
            status.region,
            status.source,
            human(i64::from(status.interval_seconds)),
            status.items_total,
            status
                .last_error
                .as_deref()
                .map(|e| format!("\n    last error ({} in a row): {e}", status.consecutive_failures))
                .unwrap_or_default(),
        );
        if status.state.as_deref() == Some(skywarden::pollers::findings::NOT_ENABLED) {
            println!("    not enabled in this region: nothing to import (not an error)");
        } else if let Some(note) = status.state.as_deref().and_then(|s| s.strip_prefix("enabled; ")) {
            // What the listing had to work around (e.g. expired page tokens), never silent.
            println!("    {note}");
        }
        if let Some(at) = status.parked_at {
            println!(
                "    parked {} after {} panics in a row: `skywarden accounts poll-now --account {} --source {}` runs it again",
                at.format("%Y-%m-%d %H:%M:%S UTC"),
                status.consecutive_panics,
                status.account_id,
                status.source
            );
        }
        if let Some(line) = failed_objects_line(status) {
            println!("    {line}");
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Whether detection after imports and polls keeps up, on one line: a failing detection stores
/// events that raise no alert until a run succeeds.
fn detection_line(health: &skywarden::detect::health::DetectionHealth) -> String {
    let at = |time: Option<chrono::DateTime<chrono::Utc>>| {
        time.map(|t| t.format("%Y-%m-%d %H:%M:%S UTC").to_string()).unwrap_or_else(|| "never".into())
    };
    let mut line = if health.failing() {
        format!(
            "detection: FAILING since {} ({} runs in a row; last success {}): {}\n    events are stored but raise no \
             alert until a run succeeds; the next import or poll retries them",
            at(health.failing_since),
            health.consecutive_failures,
            at(health.last_success_at),
            health.last_error.as_deref().unwrap_or("unknown error").replace('\n', " ")
        )
    } else {
        format!("detection: ok, last run {}", at(health.last_success_at))
    };
    // Work a detector left at a per-run bound: said until a later run catches up.
    for skip in health.skips.iter().filter(|s| s.outstanding) {
        line.push_str(&format!(
            "\n    {} behind since {}: {}",
            skip.policy_id,
            at(Some(skip.last_skipped_at)),
            skip.note
        ));
    }
    line
}

/// The S3 objects a job could not read, for the line under it: `2 objects failed after 5 tries,
/// 1 retrying; newest: s3://bucket/key: error`. None when every object was read.
fn failed_objects_line(status: &jobs::JobStatus) -> Option<String> {
    let objects = |n: i64| if n == 1 { "1 object".to_owned() } else { format!("{n} objects") };
    let mut parts = Vec::new();
    if status.objects_failed > 0 {
        let tries = status.objects_failed_tries.map(|t| format!(" after {t} tries")).unwrap_or_default();
        parts.push(format!("{} failed{tries}", objects(status.objects_failed)));
    }
    if status.objects_retrying > 0 {
        let retrying =
            if parts.is_empty() { objects(status.objects_retrying) } else { status.objects_retrying.to_string() };
        parts.push(format!("{retrying} retrying"));
    }
    if parts.is_empty() {
        return None;
    }
    let newest = match (&status.newest_failure_object, &status.newest_failure_error) {
        // Errors of reading an object often begin with its name already.
        (Some(object), Some(error)) => {
            let error = error.strip_prefix(&format!("{object}: ")).unwrap_or(error).replace('\n', " ");
            format!("; newest: {object}: {error}")
        }
        _ => String::new(),
    };
    Some(format!("{}{newest}", parts.join(", ")))
}

/// What the role check found of the account's regions.
fn print_regions(result: &accounts::TestResult) {
    if let Some(enabled) = &result.enabled_regions {
        println!("enabled regions: {}", enabled.join(","));
    }
    if let Some(error) = &result.regions_error {
        println!(
            "warning: {error}
  the account keeps the regions it had; the role needs ec2:DescribeRegions"
        );
    }
}

/// `45s`, `12m`, `3h`, `2d`: a duration read at a glance (rounded to the unit shown).
fn human(seconds: i64) -> String {
    match seconds {
        s if s < 120 => format!("{s}s"),
        s if s < 7200 => format!("{}m", (s + 30) / 60),
        s if s < 2 * 86_400 => format!("{}h", (s + 1800) / 3600),
        s => format!("{}d", (s + 43_200) / 86_400),
    }
}

/// For `accounts list`: an account's regions (and its member status), an organization's
/// member role, a log archive's files.
fn what_is_polled(account: &accounts::Account) -> String {
    match account.kind {
        AccountKind::Organization => {
            format!("organization, member role {}", account.member_role_name.as_deref().unwrap_or("-"))
        }
        AccountKind::LogArchive => format!(
            "log archive s3://{}/{}",
            account.sources.trail_bucket.as_deref().unwrap_or_default(),
            account.sources.organization_id.as_deref().unwrap_or_default()
        ),
        AccountKind::Account => {
            let member = match (&account.organization, &account.member_status) {
                (Some(organization), Some(status)) if !account.is_active_member() => {
                    format!("  {} in {organization}: not polled, data kept", status.to_lowercase())
                }
                (Some(organization), _) => format!("  member of {organization}"),
                _ => String::new(),
            };
            format!("regions={}{member}", regions_text(account))
        }
    }
}

/// The regions polled, and whether a restriction chose them.
fn regions_text(account: &accounts::Account) -> String {
    let polled =
        if account.polled_regions.is_empty() { "none yet".to_owned() } else { account.polled_regions.join(",") };
    if account.regions.is_empty() {
        format!("{polled} (every enabled region)")
    } else {
        format!("{polled} (restricted)")
    }
}

fn intervals_from(settings: &[String]) -> anyhow::Result<PollIntervals> {
    let mut intervals = PollIntervals::default();
    for setting in settings {
        intervals.set_from_text(setting)?;
    }
    Ok(intervals)
}

async fn poll_now(db: &Database, account: Option<&str>, source: Option<&str>, json: bool) -> anyhow::Result<ExitCode> {
    let source = match source {
        Some(name) => Some(Source::parse(name).ok_or_else(|| {
            let known: Vec<&str> = Source::ALL.iter().map(|s| s.as_str()).collect();
            anyhow::anyhow!("`{name}` is not a poll source (one of {})", known.join(", "))
        })?),
        None => None,
    };
    if let Some(account) = account {
        accounts::load(&db.pool, account).await?;
    }
    let count = jobs::poll_now(&db.pool, account, source).await?;
    if json {
        let answer = serde_json::json!({"account_id": account, "source": source.map(Source::as_str), "jobs": count});
        println!("{answer}");
    } else if count == 0 {
        println!("no enabled job matches; nothing to poll");
    } else {
        println!(
            "{count} job(s) due now; a running `skywarden serve` or `skywarden worker` picks them up within seconds"
        );
    }
    Ok(if count == 0 { ExitCode::FAILURE } else { ExitCode::SUCCESS })
}

async fn configure(db: &Database, account_id: &str, change: AccountChange, json: bool) -> anyhow::Result<ExitCode> {
    if change.regions.is_none() && change.intervals.is_none() {
        anyhow::bail!("nothing to change: give --regions, --all-regions, --poll-interval or --default-intervals");
    }
    let account = accounts::configure(&db.pool, account_id, &change).await?;
    if json {
        println!("{}", serde_json::to_string(&account)?);
    } else {
        println!("account {account_id}: regions {}", regions_text(&account));
        let chosen: Vec<String> = account
            .intervals
            .chosen()
            .map(|(source, every)| format!("{}={}", source.as_str(), human(every.as_secs() as i64)))
            .collect();
        println!("  intervals: {}", if chosen.is_empty() { "the defaults".to_owned() } else { chosen.join(", ") });
    }
    Ok(ExitCode::SUCCESS)
}

async fn add(db: &Database, args: AccountAddArgs) -> anyhow::Result<ExitCode> {
    check_role_arn(&args.role_arn)?;
    // Before anything is stored: without credentials the role check could only fail.
    let aws = aws_unless_skipped(args.skip_test).await?;
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
            trail_queue_url: args.trail_queue_url,
            flow_queue_url: args.flow_queue_url,
            guardduty_findings: args.guardduty_findings,
            security_hub_findings: args.security_hub_findings,
        },
    };
    let account = accounts::onboard(&db.pool, &new, &intervals_from(&args.poll_intervals)?).await?;
    let test = match &aws {
        Some((settings, base)) => Some(accounts::test(&db.pool, base, settings, &account.account_id).await?),
        None => None,
    };
    if args.json {
        let mut value = serde_json::to_value(&account)?;
        value["external_id"] = serde_json::Value::String(account.external_id.clone());
        value["test"] = serde_json::to_value(&test)?;
        println!("{value}");
    } else {
        let regions = if account.regions.is_empty() {
            "every enabled region, discovered with the role".to_owned()
        } else {
            format!("only {}", account.regions.join(","))
        };
        println!("account {} onboarded (regions: {regions})", account.account_id);
        println!("external ID (shown only now): {}", account.external_id);
        println!("create the role with: skywarden accounts template > role.yaml, then deploy it with");
        println!("  ExternalId={} and SkywardenPrincipalArn=<the principal Skywarden runs as>", account.external_id);
        match &test {
            Some(result) if result.ok => {
                println!("role check: ok ({})", result.assumed_arn.as_deref().unwrap_or(""));
                print_regions(result);
            }
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

/// `accounts add --organization`: the organization's entry and external ID, then (unless
/// --no-test) its members, listed and onboarded at once.
async fn add_organization(db: &Database, args: AccountAddArgs) -> anyhow::Result<ExitCode> {
    check_role_arn(&args.role_arn)?;
    let aws = aws_unless_skipped(args.skip_test).await?;
    let new = NewOrganization {
        role_arn: args.role_arn,
        member_role_name: args.member_role_name,
        name: args.name,
        endpoint_url: args.endpoint_url,
    };
    let entry = organization::onboard(&db.pool, &new, &intervals_from(&args.poll_intervals)?).await?;
    let members = match &aws {
        Some((settings, base)) => {
            Some(organization::sync(&db.pool, base, settings, &entry.account_id).await.map_err(|e| e.to_string()))
        }
        None => None,
    };
    if args.json {
        let mut value = serde_json::to_value(&entry)?;
        value["external_id"] = serde_json::Value::String(entry.external_id.clone());
        value["members"] = match &members {
            Some(Ok(change)) => serde_json::to_value(change)?,
            Some(Err(error)) => serde_json::json!({"error": error}),
            None => serde_json::Value::Null,
        };
        println!("{value}");
        return Ok(ExitCode::SUCCESS);
    }
    println!("organization {} onboarded (member role {})", entry.account_id, new.member_role_name);
    println!("external ID for the management role and every member role (shown only now): {}", entry.external_id);
    println!(
        "deploy deploy/skywarden-readonly-stackset.yaml in the management account with it (docs/organizations.md)"
    );
    match members {
        Some(Ok(change)) => {
            println!("members polled: {}", change.active.len());
            for (what, ids) in
                [("onboarded", &change.onboarded), ("onboarded on their own, left as they are", &change.separate)]
            {
                if !ids.is_empty() {
                    println!("  {what}: {}", ids.join(","));
                }
            }
        }
        Some(Err(error)) => println!(
            "listing the members failed: {error}\n  the organization job retries daily; once the roles exist run\n  \
             `skywarden accounts poll-now --account {} --source organization`",
            entry.account_id
        ),
        None => println!(
            "members not listed yet; once the roles exist run `skywarden accounts poll-now --account {} --source organization`",
            entry.account_id
        ),
    }
    Ok(ExitCode::SUCCESS)
}

/// `accounts add-log-archive`: the archive's entry, external ID and job; the accounts whose own
/// trail-file jobs it replaces.
async fn add_log_archive(db: &Database, args: LogArchiveArgs) -> anyhow::Result<ExitCode> {
    check_role_arn(&args.role_arn)?;
    let aws = aws_unless_skipped(args.skip_test).await?;
    let new = NewLogArchive {
        role_arn: args.role_arn,
        bucket: args.bucket,
        prefix: args.prefix,
        organization_id: args.organization_id,
        bucket_region: args.bucket_region,
        name: args.name,
        endpoint_url: args.endpoint_url,
    };
    let added = accounts::log_archive::add(&db.pool, &new, &intervals_from(&args.poll_intervals)?).await?;
    let entry = &added.archive;
    let test = match &aws {
        Some((settings, base)) => Some(accounts::test(&db.pool, base, settings, &entry.account_id).await?),
        None => None,
    };
    if args.json {
        let mut value = serde_json::to_value(entry)?;
        value["external_id"] = serde_json::Value::String(entry.external_id.clone());
        value["replaced"] = serde_json::to_value(&added.replaced)?;
        value["test"] = serde_json::to_value(&test)?;
        println!("{value}");
        return Ok(ExitCode::SUCCESS);
    }
    println!("log archive {} added: every account's trail files under it are read once", entry.account_id);
    println!("external ID (shown only now): {}", entry.external_id);
    println!("deploy the read-only role (skywarden accounts template) in the bucket's account with this external ID");
    println!("  and TrailBucketName={}", new.bucket);
    if !added.replaced.is_empty() {
        println!("these accounts no longer read the bucket themselves: {}", added.replaced.join(","));
    }
    match &test {
        Some(result) if result.ok => println!("role check: ok ({})", result.assumed_arn.as_deref().unwrap_or("")),
        Some(result) => println!("role check: failed: {}", result.error.as_deref().unwrap_or("")),
        None => println!("role check skipped; run `skywarden accounts test {}` once the role exists", entry.account_id),
    }
    Ok(ExitCode::SUCCESS)
}
