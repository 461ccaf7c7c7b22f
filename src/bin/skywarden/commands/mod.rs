//! The commands behind the `skywarden` binary, one file per command group: each opens what it
//! needs (database, GeoIP, policies), calls the library, and prints for a person or, with
//! `--json`, for a program (one JSON object per line).

pub(crate) mod accounts;
pub(crate) mod alerts;
pub(crate) mod auth;
pub(crate) mod db;
pub(crate) mod demo;
pub(crate) mod import;
pub(crate) mod notifications;
pub(crate) mod policies;
pub(crate) mod posture;
pub(crate) mod serve;
pub(crate) mod worker;

use std::sync::Arc;

use skywarden::db::{Database, DbOptions};
use skywarden::detect::PolicySet;
use skywarden::geo::GeoDb;

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

pub(crate) fn open_geo(args: &GeoArgs) -> anyhow::Result<Option<Arc<GeoDb>>> {
    if args.geoip.is_empty() {
        return Ok(None);
    }
    Ok(Some(Arc::new(GeoDb::open(&args.geoip)?)))
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
