//! The commands behind the `skywarden` binary, one file per command group: each opens what it
//! needs (database, GeoIP, policies), calls the library, and prints for a person or, with
//! `--json`, for a program (one JSON object per line).

pub(crate) mod accounts;
pub(crate) mod alerts;
pub(crate) mod archive;
pub(crate) mod auth;
pub(crate) mod aws_credentials;
pub(crate) mod collect;
pub(crate) mod db;
pub(crate) mod demo;
pub(crate) mod import;
pub(crate) mod incidents;
pub(crate) mod notifications;
pub(crate) mod policies;
pub(crate) mod posture;
pub(crate) mod respond;
pub(crate) mod serve;
pub(crate) mod worker;

use std::sync::Arc;

use skywarden::db::{Database, DbOptions};
use skywarden::detect::PolicySet;
use skywarden::geo::GeoDb;
use skywarden::policy_files::PolicyFiles;
use skywarden::posture::checks::{CheckProblem, CheckSet};
use skywarden::respond::auto::{AutoRules, RulesError};

use crate::cli::{GeoArgs, PolicyArgs};

/// Exit code when a command finished but some of its work failed (files, records, jobs).
pub(crate) const EXIT_PARTIAL: u8 = 2;

/// Opens the database, runs `work`, and closes the database whatever `work` returned, so an
/// error never leaves the embedded cluster running.
pub(crate) async fn with_db<T>(
    options: &DbOptions,
    work: impl AsyncFnOnce(&Database) -> anyhow::Result<T>,
) -> anyhow::Result<T> {
    let db = Database::open(options).await?;
    let result = work(&db).await;
    let closed = db.close().await;
    let value = result?;
    closed?;
    Ok(value)
}

/// The policy files: the built-in ones, with `--policies` laid over them. A `--policies` folder
/// that is not there is an error.
pub(crate) fn policy_files(args: &PolicyArgs) -> anyhow::Result<PolicyFiles> {
    Ok(PolicyFiles::builtin_with(args.policies.as_deref())?)
}

/// Loads the detection policies for a command that runs them. Broken policy files stop it (each
/// problem printed with its file), unless `--allow-broken-policies`: then each is logged as a
/// warning and the rest run.
pub(crate) fn load_policies(args: &PolicyArgs) -> anyhow::Result<PolicySet> {
    let policies = PolicySet::from_files(&policy_files(args)?);
    let problems: Vec<String> = policies.problems.iter().map(ToString::to_string).collect();
    allow_problems(args, "policy", &problems)?;
    tracing::info!(
        policies = policies.list().len(),
        sigma_rules = policies.sigma.enabled_count(),
        overrides = ?args.policies,
        "detection policies loaded"
    );
    Ok(policies)
}

/// Loads the posture checks for a command that evaluates them: broken ones as for
/// [`load_policies`], and no check at all is an error whatever the flag says.
/// The automatic-containment rules (response.yaml) of `files`, each naming a detection policy
/// of `policies` (any, when detection is off) or a posture check of `checks`: a rule naming
/// neither would silently never act.
pub(crate) fn load_containment(
    files: &PolicyFiles,
    policies: Option<&PolicySet>,
    checks: &CheckSet,
) -> Result<AutoRules, RulesError> {
    let rules = AutoRules::from_files(files)?;
    rules.check_policies(|id| match id.strip_prefix("posture:") {
        Some(check) => checks.checks.iter().any(|c| c.meta.id == check),
        None => policies.is_none_or(|p| p.knows(id)),
    })?;
    Ok(rules)
}

pub(crate) fn load_checks(args: &PolicyArgs) -> anyhow::Result<CheckSet> {
    let checks = CheckSet::from_files(&policy_files(args)?);
    let problems: Vec<String> = checks.problems.iter().map(check_problem).collect();
    allow_problems(args, "posture check", &problems)?;
    anyhow::ensure!(!checks.checks.is_empty(), "no posture checks loaded: posture would evaluate nothing");
    tracing::info!(checks = checks.checks.len(), overrides = ?args.policies, "posture checks loaded");
    Ok(checks)
}

/// `file: check: message`, as `policies lint` prints it.
pub(crate) fn check_problem(problem: &CheckProblem) -> String {
    format!("{}: {}: {}", problem.file, problem.check.as_deref().unwrap_or("?"), problem.message)
}

/// Prints each problem and fails, or with `--allow-broken-policies` logs each as a warning.
fn allow_problems(args: &PolicyArgs, what: &str, problems: &[String]) -> anyhow::Result<()> {
    if problems.is_empty() {
        return Ok(());
    }
    if args.allow_broken_policies {
        for problem in problems {
            tracing::warn!(%problem, "{what} not loaded (--allow-broken-policies)");
        }
        return Ok(());
    }
    for problem in problems {
        eprintln!("{what} problem: {problem}");
    }
    anyhow::bail!(
        "{} {what} problems; fix the files (`skywarden policies lint` lists them) or start with \
         --allow-broken-policies to run without the broken ones",
        problems.len()
    )
}

pub(crate) fn open_geo(args: &GeoArgs) -> anyhow::Result<Option<Arc<GeoDb>>> {
    let lists = skywarden::geo::NetworkLists::open(
        args.tor_exits.as_deref(),
        args.vpn_ranges.as_deref(),
        args.hosting_ranges.as_deref(),
        args.aws_ip_ranges.as_deref(),
    )?;
    if args.geoip.is_empty() && lists.is_empty() {
        return Ok(None);
    }
    Ok(Some(Arc::new(GeoDb::open_with(&args.geoip, lists)?)))
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

/// Who runs a CLI command, for the audit log.
pub(crate) fn cli_actor() -> String {
    format!("cli:{}", std::env::var("USER").unwrap_or_else(|_| "unknown".into()))
}
