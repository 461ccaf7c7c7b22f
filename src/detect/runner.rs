//! Runs the policies over stored data in event-time order and folds what they find into alerts.
//!
//! After each import (or poll), the rows it stored are evaluated: event rules on each new event;
//! login detectors over the console logins around the new ones, streamed in time order
//! (successful ones from a baseline's length before the earliest to a baseline's length after the
//! latest, so a late-arriving old file re-decides the logins it could change; failed ones only as
//! far as a burst of failures reaches, so an attack's failures are not read again and again); the
//! flow detector over the clock hours that got new records. Alerts are keyed by policy, subject
//! and fixed window and evidence is recorded once (a burst of failures as one count), so the
//! result does not depend on file order or on running twice.

use std::collections::BTreeSet;
use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use chrono::{DateTime, Duration, Utc};
use futures_util::{StreamExt, TryStreamExt};
use serde::Serialize;
use sqlx::types::ipnetwork::IpNetwork;
use sqlx::{PgConnection, PgPool};

use crate::alerts::store::{self, AlertStoreError, RecordOutcome};
use crate::detect::detectors::exfiltration::{self, HourlyVolume};
use crate::detect::detectors::rare_api::{self, RareApiCandidates};
use crate::detect::detectors::recon::{self, ReconBursts};
use crate::detect::detectors::{self, flow_destinations, logins, network, port_scan};
use crate::detect::event::{RawJson, SourceNetwork};
use crate::detect::lease::{self, LeaseError};
use crate::detect::{PolicyEvent, PolicySet, health};
use crate::geo::GeoDb;
use crate::model::Finding;

#[derive(Debug, thiserror::Error)]
pub enum DetectError {
    #[error("reading events for detection")]
    Db(#[from] sqlx::Error),
    #[error("storing alerts")]
    Store(#[from] AlertStoreError),
    #[error(transparent)]
    Lease(#[from] LeaseError),
}

/// Which stored data to evaluate.
#[derive(Clone, Copy, Debug)]
pub enum Scope {
    /// Rows stored at or after this database time (what one import or poll added).
    IngestedSince(DateTime<Utc>),
    /// Everything with an event time at or after this (backtests).
    EventsSince(DateTime<Utc>),
}

#[derive(Debug, Default, Serialize)]
pub struct DetectionSummary {
    pub events_evaluated: u64,
    pub logins_evaluated: u64,
    pub flow_hours_evaluated: u64,
    pub findings: u64,
    pub new_alerts: u64,
    pub new_evidence: u64,
    /// Login evidence withdrawn because data that arrived later changed the verdict.
    pub retracted_evidence: u64,
    /// The console logins the login detectors re-decided.
    #[serde(skip)]
    pub login_range: Option<(DateTime<Utc>, DateTime<Utc>)>,
    /// Passes run under the detection lease: more than one when callers elsewhere left rows
    /// to this one meanwhile; none when `deferred_to` is set.
    pub passes: u32,
    /// Another process's pass held the detection lease (named here): these rows were left to it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub deferred_to: Option<String>,
    /// Where the passes spent their time.
    pub stage_ms: StageTimes,
}

impl DetectionSummary {
    /// Adds another pass's counts to these.
    fn add(&mut self, pass: DetectionSummary) {
        self.events_evaluated += pass.events_evaluated;
        self.logins_evaluated += pass.logins_evaluated;
        self.flow_hours_evaluated += pass.flow_hours_evaluated;
        self.findings += pass.findings;
        self.new_alerts += pass.new_alerts;
        self.new_evidence += pass.new_evidence;
        self.retracted_evidence += pass.retracted_evidence;
        self.login_range = pass.login_range.or(self.login_range);
        self.passes += pass.passes;
        self.stage_ms.add(&pass.stage_ms);
    }
}

/// The steps of a detection pass, timed apart so an operator (and `make bench`) sees where a
/// slow pass spends its time: in the summary, the log and `/metrics`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stage {
    /// Reading the new events back and running the event rules over each.
    Events,
    ApiActivity,
    Network,
    RareApi,
    Logins,
    Reconnaissance,
    Flows,
    /// Storing alerts and linking them into incidents (whichever step found them).
    Storing,
    /// Re-keying incidents that this pass's bridging events tie together.
    Relinking,
    /// Withdrawing login evidence later data disproved.
    Retraction,
}

impl Stage {
    pub const ALL: [Stage; 10] = [
        Stage::Events,
        Stage::ApiActivity,
        Stage::Network,
        Stage::RareApi,
        Stage::Logins,
        Stage::Reconnaissance,
        Stage::Flows,
        Stage::Storing,
        Stage::Relinking,
        Stage::Retraction,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Stage::Events => "events",
            Stage::ApiActivity => "api_activity",
            Stage::Network => "network",
            Stage::RareApi => "rare_api",
            Stage::Logins => "logins",
            Stage::Reconnaissance => "reconnaissance",
            Stage::Flows => "flows",
            Stage::Storing => "storing",
            Stage::Relinking => "relinking",
            Stage::Retraction => "retraction",
        }
    }
}

/// Milliseconds spent in each [`Stage`], by name.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
#[serde(transparent)]
pub struct StageTimes(std::collections::BTreeMap<&'static str, u64>);

impl StageTimes {
    fn record(&mut self, stage: Stage, spent: std::time::Duration) {
        *self.0.entry(stage.name()).or_default() += spent.as_millis() as u64;
        STAGE_MICROS[stage as usize].fetch_add(spent.as_micros() as u64, Ordering::Relaxed);
    }

    fn add(&mut self, other: &StageTimes) {
        for (stage, ms) in &other.0 {
            *self.0.entry(stage).or_default() += ms;
        }
    }
}

/// Microseconds this process's detection passes spent in each [`Stage`], for `/metrics`.
static STAGE_MICROS: [AtomicU64; Stage::ALL.len()] = [const { AtomicU64::new(0) }; Stage::ALL.len()];

/// Seconds this process's detection passes spent in each stage since it started.
pub fn stage_seconds_total() -> Vec<(&'static str, f64)> {
    Stage::ALL.iter().map(|s| (s.name(), STAGE_MICROS[*s as usize].load(Ordering::Relaxed) as f64 / 1e6)).collect()
}

/// Times the stages of one pass: each lap is charged to its stage less what storing alerts took
/// meanwhile (charged to [`Stage::Storing`] by [`Found::flush`]).
struct StageClock {
    lap_started: std::time::Instant,
    storing_before: std::time::Duration,
}

impl StageClock {
    fn start(found: &Found<'_>) -> Self {
        Self { lap_started: std::time::Instant::now(), storing_before: found.storing }
    }

    fn lap(&mut self, stage: Stage, found: &Found<'_>, times: &mut StageTimes) {
        let stored = found.storing.saturating_sub(self.storing_before);
        times.record(stage, self.lap_started.elapsed().saturating_sub(stored));
        *self = Self::start(found);
    }
}

/// Policies whose verdict on a login later data can withdraw. (Failure bursts only grow as more
/// failures arrive; the store keeps their largest count.)
const WITHDRAWABLE_POLICIES: &[&str] = &[crate::detect::detectors::HIJACK, crate::detect::detectors::IMPOSSIBLE_TRAVEL];

/// The database's clock, so "ingested since" compares like with like.
pub async fn database_now(pool: &PgPool) -> Result<DateTime<Utc>, sqlx::Error> {
    sqlx::query_scalar!(r#"SELECT now() AS "now!""#).fetch_one(pool).await
}

/// Findings stored at a time by [`run`]: memory holds this many, not all an import raised.
const RECORD_CHUNK: usize = 10_000;

/// Evaluates `scope` and stores the findings as alerts, with their messages, as they are found
/// ([`RECORD_CHUNK`] at a time, each chunk in one transaction; folding is idempotent and does
/// not depend on order, so chunks give the alerts and changes one write would). Takes no
/// lease: the product runs it through [`run_pending`]; tests call it to drive a pass directly.
pub async fn run(pool: &PgPool, policies: &PolicySet, scope: Scope) -> Result<DetectionSummary, DetectError> {
    store_findings(pool, policies, scope, None).await
}

/// [`run`], under `lease` when given: login evidence is withdrawn only while it is held.
async fn store_findings(
    pool: &PgPool,
    policies: &PolicySet,
    scope: Scope,
    lease: Option<&lease::Lease>,
) -> Result<DetectionSummary, DetectError> {
    let mut found = Found::storing(pool, policies.detectors.geo.clone());
    let mut summary = evaluate_into(pool, policies, scope, None, &mut found).await?;
    found.flush().await?;
    summary.stage_ms.record(Stage::Storing, found.storing);
    // Bridging events in this pass tie alerts linked before they were known.
    let since = match scope {
        Scope::IngestedSince(t) => (Some(t), None),
        Scope::EventsSince(t) => (None, Some(t)),
    };
    let started = std::time::Instant::now();
    crate::alerts::incidents::relink_bridged(pool, since).await?;
    summary.stage_ms.record(Stage::Relinking, started.elapsed());
    // The backlog and skips change only once the alerts they account for are stored.
    found.state.apply(pool).await?;
    summary.new_alerts = found.recorded.new_alerts;
    summary.new_evidence = found.recorded.new_evidence;
    if let Some((from, to)) = summary.login_range {
        // The login detectors re-decided every console login in this range: evidence they no
        // longer find (an older file showed the "new" country was not new) is withdrawn. Only
        // while the lease is held, checked in the withdrawing transaction: a pass that lost it
        // could withdraw what the new holder's pass just recorded.
        let owner = lease.map(lease::Lease::owner);
        let started = std::time::Instant::now();
        summary.retracted_evidence =
            match store::retract_login_evidence(pool, owner, WITHDRAWABLE_POLICIES, from, to, &found.kept).await {
                Err(AlertStoreError::LeaseNotHeld(_)) => return Err(LeaseError::from(lease::LeaseLost).into()),
                withdrawn => withdrawn?,
            };
        summary.stage_ms.record(Stage::Retraction, started.elapsed());
    }
    tracing::info!(
        events = summary.events_evaluated,
        logins = summary.logins_evaluated,
        flow_hours = summary.flow_hours_evaluated,
        findings = summary.findings,
        new_alerts = summary.new_alerts,
        stage_ms = ?summary.stage_ms,
        "detection finished"
    );
    Ok(summary)
}

/// How a caller runs detection under the lease ([`run_pending_with`]).
#[derive(Clone, Copy)]
pub struct PendingOptions<'a> {
    /// How long to wait for a pass running elsewhere to end before leaving the rows to it.
    pub wait: std::time::Duration,
    /// Told the holder's name once when the caller begins to wait.
    pub waiting: &'a (dyn Fn(&str) + Sync),
    /// One pass over the caller's rows (and the watermark's), leaving requests of other
    /// callers to the passes they run (`skywarden import`: it reports what its rows raised).
    pub own_pass_only: bool,
    /// Passes back to back for waiting requests before the lease is let go.
    pub max_passes: u32,
    pub timing: lease::Timing,
}

impl Default for PendingOptions<'_> {
    fn default() -> Self {
        Self {
            wait: std::time::Duration::ZERO,
            waiting: &ignore_holder,
            own_pass_only: false,
            max_passes: lease::MAX_PASSES,
            timing: lease::Timing::default(),
        }
    }
}

fn ignore_holder(_: &str) {}

/// Detection over what a run that began at `started` (the database's clock) stored, and over
/// whatever an earlier run stored but never got through detection (its detection failed, or
/// the process died between storing and detecting). The durable mark moves on only once this
/// succeeds. Detection is idempotent, so the little it evaluates twice changes nothing.
///
/// One pass at a time over every process, under the detection lease ([`lease`]): when another
/// pass holds it, this leaves its rows to that pass and returns at once (`deferred_to` names
/// the holder).
pub async fn run_pending(
    pool: &PgPool,
    policies: &PolicySet,
    started: DateTime<Utc>,
) -> Result<DetectionSummary, DetectError> {
    run_pending_with(pool, policies, started, &PendingOptions::default()).await
}

/// [`run_pending`] as `options` say. A failure is recorded for detection health; the rows stay
/// requested for the next pass anywhere.
pub async fn run_pending_with(
    pool: &PgPool,
    policies: &PolicySet,
    started: DateTime<Utc>,
    options: &PendingOptions<'_>,
) -> Result<DetectionSummary, DetectError> {
    let outcome = leased_detection(pool, policies, started, options).await;
    if let Err(error) = &outcome {
        health::record_failure(pool, &crate::notify::error_chain(error)).await;
    }
    outcome
}

async fn leased_detection(
    pool: &PgPool,
    policies: &PolicySet,
    started: DateTime<Utc>,
    options: &PendingOptions<'_>,
) -> Result<DetectionSummary, DetectError> {
    // First, so that whatever happens next (the lease held, this process killed), the rows
    // stay asked for.
    request(pool, started).await?;
    let mut lease = match lease::acquire(pool, options.timing, options.wait, options.waiting).await? {
        lease::Acquired::Taken(lease) => lease,
        lease::Acquired::Held(holder) => {
            tracing::info!(%holder, "detection left to the pass another process is running");
            return Ok(DetectionSummary { deferred_to: Some(holder), ..DetectionSummary::default() });
        }
    };
    let outcome = leased_passes(pool, policies, &mut lease, started, options).await;
    if !lease.is_released()
        && let Err(error) = lease.release().await
    {
        tracing::warn!(error = %error, "could not release the detection lease; it expires by itself");
    }
    outcome
}

/// Leaves the caller's request, once more after a pause if the first try fails.
async fn request(pool: &PgPool, since: DateTime<Utc>) -> Result<(), sqlx::Error> {
    let Err(error) = lease::leave_request(pool, since).await else { return Ok(()) };
    tracing::warn!(%error, %since, "cannot leave a detection request; trying once more");
    tokio::time::sleep(std::time::Duration::from_secs(1)).await;
    lease::leave_request(pool, since).await
}

/// Passes under `lease` until no request waits (at most `options.max_passes`; one with
/// `own_pass_only`); requests left then wait for the next pass anywhere.
async fn leased_passes(
    pool: &PgPool,
    policies: &PolicySet,
    lease: &mut lease::Lease,
    started: DateTime<Utc>,
    options: &PendingOptions<'_>,
) -> Result<DetectionSummary, DetectError> {
    let mut total = DetectionSummary::default();
    for n in 0..options.max_passes.max(1) {
        let reads = match (n, options.own_pass_only) {
            (_, true) => Reads::Own(started),
            (0, false) => Reads::Requested(Some(started)),
            _ => Reads::Requested(None),
        };
        let done = match lease.guard(pass(pool, policies, lease, reads)).await {
            Ok(done) => done,
            Err(lost) => Err(LeaseError::from(lost).into()),
        };
        match done {
            Ok(summary) => total.add(summary),
            Err(error) => {
                // Its requests and the watermark stay as they were: the next pass reads them.
                lease::count_failed_pass(pool).await;
                return Err(error);
            }
        }
        if options.own_pass_only || !lease.next_pass().await? {
            return Ok(total);
        }
    }
    tracing::warn!(passes = options.max_passes, "detection passes in a row; leaving the rest to the next pass");
    Ok(total)
}

/// What a pass reads besides the watermark's rows.
#[derive(Clone, Copy)]
enum Reads {
    /// The caller's rows (from the given time) and every waiting request.
    Requested(Option<DateTime<Utc>>),
    /// Only the caller's rows.
    Own(DateTime<Utc>),
}

/// One pass over what the watermark still holds and what `reads` asks, under `lease`; moves the
/// watermark on and deletes the requests it covered only when it succeeds.
async fn pass(
    pool: &PgPool,
    policies: &PolicySet,
    lease: &lease::Lease,
    reads: Reads,
) -> Result<DetectionSummary, DetectError> {
    let start = lease.begin_pass().await?;
    let asked = match reads {
        Reads::Requested(started) => [start.requested, started],
        Reads::Own(started) => [Some(started), None],
    };
    let since = asked.into_iter().chain([start.pending]).flatten().min().unwrap_or(start.scan_from);
    let mut summary = store_findings(pool, policies, Scope::IngestedSince(since), Some(lease)).await?;
    summary.passes = 1;
    lease.finish_pass(since, &start).await?;
    Ok(summary)
}

/// Evaluates `scope` (all policies, or one) and returns the findings without storing them.
pub async fn evaluate(
    pool: &PgPool,
    policies: &PolicySet,
    scope: Scope,
    only_policy: Option<&str>,
) -> Result<(Vec<Finding>, DetectionSummary), DetectError> {
    let mut found = Found::default();
    let summary = evaluate_into(pool, policies, scope, only_policy, &mut found).await?;
    Ok((found.pending, summary))
}

async fn evaluate_into(
    pool: &PgPool,
    policies: &PolicySet,
    scope: Scope,
    only_policy: Option<&str>,
    found: &mut Found<'_>,
) -> Result<DetectionSummary, DetectError> {
    let mut summary = DetectionSummary::default();
    let mut times = StageTimes::default();
    let mut clock = StageClock::start(found);
    let scanned = scan_events(pool, policies, scope, only_policy, found).await?;
    summary.events_evaluated = scanned.events;
    clock.lap(Stage::Events, found, &mut times);
    found.add(api_activity_findings(pool, policies, &scanned.first_calls).await?).await?;
    clock.lap(Stage::ApiActivity, found, &mut times);
    found.add(network_findings(pool, policies, &scanned.network).await?).await?;
    clock.lap(Stage::Network, found, &mut times);
    if only_policy.is_none_or(|p| p == detectors::RARE_SENSITIVE_API) {
        // Runs without new events too: principals a capped run left in the backlog wait for it.
        let rare = rare_api::findings(pool, &policies.detectors, &scanned.rare_api, &mut found.state).await?;
        found.add(rare).await?;
        clock.lap(Stage::RareApi, found, &mut times);
    }
    if let Some(span) = scanned.login_span {
        found.add(login_findings(pool, policies, span, only_policy, &mut summary).await?).await?;
        clock.lap(Stage::Logins, found, &mut times);
    }
    if let Some(span) = scanned.refusal_span
        && policies.detectors.settings.reconnaissance.enabled
        && only_policy.is_none_or(|p| p == crate::detect::detectors::RECON_BURST)
    {
        found.add(recon_findings(pool, policies, span).await?).await?;
        clock.lap(Stage::Reconnaissance, found, &mut times);
    }
    if only_policy.is_none_or(|p| FLOW_POLICIES.contains(&p)) {
        // What was found so far is stored (and linked) first: a flow to an address of the
        // incident it opens is suspicious.
        found.flush().await?;
        clock = StageClock::start(found);
        let flows = flow_findings(pool, policies, scope, only_policy, &mut summary, &mut found.state).await?;
        found.add(flows).await?;
        clock.lap(Stage::Flows, found, &mut times);
    }
    summary.findings = found.count;
    summary.stage_ms = times;
    Ok(summary)
}

/// Where findings go as they are found: kept for the caller, or stored as alerts.
#[derive(Default)]
struct Found<'p> {
    /// Store findings here every [`RECORD_CHUNK`] (without it, keep them all in `pending`).
    store: Option<&'p PgPool>,
    pending: Vec<Finding>,
    count: u64,
    recorded: RecordOutcome,
    /// The withdrawable login verdicts stored: (alert id, event id).
    kept: Vec<(String, String)>,
    /// The network data, for addresses no stored event tells the network of (flow alerts).
    geo: Option<Arc<GeoDb>>,
    /// Backlog and skip changes, applied by [`run`] after the last flush; never by [`evaluate`]
    /// (a backtest changes no detector state).
    state: health::StateChanges,
    /// Time spent storing what was found so far.
    storing: std::time::Duration,
}

impl<'p> Found<'p> {
    fn storing(pool: &'p PgPool, geo: Option<Arc<GeoDb>>) -> Self {
        Self { store: Some(pool), geo, ..Self::default() }
    }

    async fn add(&mut self, findings: Vec<Finding>) -> Result<(), DetectError> {
        self.count += findings.len() as u64;
        self.pending.extend(findings);
        if self.pending.len() >= RECORD_CHUNK {
            self.flush().await?;
        }
        Ok(())
    }

    /// Stores what is pending, if storing.
    async fn flush(&mut self) -> Result<(), DetectError> {
        let Some(pool) = self.store else { return Ok(()) };
        if self.pending.is_empty() {
            return Ok(());
        }
        let started = std::time::Instant::now();
        let stored = self.store_pending(pool).await;
        self.storing += started.elapsed();
        stored
    }

    async fn store_pending(&mut self, pool: &PgPool) -> Result<(), DetectError> {
        let mut chunk = std::mem::take(&mut self.pending);
        attach_network(pool, &mut chunk).await?;
        look_up_network(self.geo.as_deref(), &mut chunk);
        let withdrawable = chunk.iter().filter(|f| WITHDRAWABLE_POLICIES.contains(&f.policy_id.as_str()));
        self.kept.extend(withdrawable.map(|f| (f.alert_id(), f.evidence_id.clone())));
        let outcome = crate::notify::outbox::record_alerts(pool, &chunk).await?;
        self.recorded.new_alerts += outcome.new_alerts;
        self.recorded.new_evidence += outcome.new_evidence;
        Ok(())
    }
}

/// What one pass over the events in scope saw that the later steps need.
#[derive(Default)]
struct EventScan {
    events: u64,
    /// Events whose raw record was fetched (their rules asked for it, or a later step keeps them).
    raw_read: u64,
    /// The time span of new console logins.
    login_span: Option<(DateTime<Utc>, DateTime<Utc>)>,
    /// The time span of new refused calls.
    refusal_span: Option<(DateTime<Utc>, DateTime<Utc>)>,
    /// The first call of each principal from each country, for the API-activity baseline (only
    /// when that option is on).
    first_calls: Vec<PolicyEvent>,
    network: NetworkCandidates,
    rare_api: RareApiCandidates,
}

/// Events the network detectors would alert on, pending what only the database knows (the
/// account's own addresses, the principal's baseline).
#[derive(Default)]
struct NetworkCandidates {
    /// The first use of each instance session from each address.
    instance_credentials: Vec<PolicyEvent>,
    /// The first call from an anonymising network of each principal (role sessions by role).
    anonymizing: Vec<PolicyEvent>,
    seen: std::collections::HashSet<(String, String, String)>,
}

impl NetworkCandidates {
    /// Candidates one run keeps; more are left to the next run (they stay in the database).
    const MAX: usize = 10_000;

    /// Keeps `event` if it is a candidate not seen yet; says whether it did.
    fn note(&mut self, policies: &PolicySet, only_policy: Option<&str>, event: &PolicyEvent) -> bool {
        let detectors = &policies.detectors;
        let wanted = |id: &str| only_policy.is_none_or(|p| p == id);
        if self.seen.len() >= Self::MAX {
            return false;
        }
        let mut kept = false;
        if wanted(detectors::INSTANCE_CREDENTIALS) && network::instance_credentials_candidate(detectors, event) {
            let key = (
                event.account_id.clone(),
                event.principal_arn.clone().unwrap_or_default(),
                event.source_ip_text.clone().unwrap_or_default(),
            );
            if self.seen.insert(key) {
                self.instance_credentials.push(event.clone());
                kept = true;
            }
        }
        if wanted(detectors::ANONYMIZING_NETWORK)
            && network::anonymizing_candidate(detectors, event)
            && let Some(pattern) = network::baseline_pattern(event)
            && self.seen.insert((event.account_id.clone(), pattern, String::new()))
        {
            self.anonymizing.push(event.clone());
            kept = true;
        }
        kept
    }
}

/// Events the scan evaluates at a time; the raw records their rules asked for are then
/// fetched in one statement.
const SCAN_WINDOW: usize = 1_000;

/// The scan's events in time order, `$raw` as their raw record, `$filter` choosing them.
macro_rules! scan_query {
    ($conn:expr, $raw:literal, $filter:literal, $($arg:expr),*) => {
        sqlx::query_as!(
            EventRow,
            r#"SELECT account_id, event_id, event_time, event_source, event_name, principal_arn, principal_type,
                      user_name, access_key_id, host(source_ip) AS source_ip, source_ip_text, user_agent, error_code,
                      resource_ids, geo_country, geo_city, geo_latitude, geo_longitude, geo_asn,
                      geo_as_org, source_is_tor, source_is_vpn, source_is_hosting, source_is_aws, "# + $raw + r#" AS "raw!"
               FROM cloudtrail_events "# + $filter + r#" ORDER BY event_time, event_id"#,
            $($arg),*
        )
        .fetch($conn)
        .boxed()
    };
}

/// Runs the event rules over every event in scope, in event-time order, into `found`.
///
/// The events are read without their raw record: turning it back into text is most of what
/// reading an event costs the database, and most rules reject an event on its typed fields.
/// An event whose rules asked for more, or that a later step keeps, has its raw record fetched
/// on another connection (a window's at once) and its rules run again with it.
async fn scan_events(
    pool: &PgPool,
    policies: &PolicySet,
    scope: Scope,
    only_policy: Option<&str>,
    found: &mut Found<'_>,
) -> Result<EventScan, DetectError> {
    let mut scan = EventScan::default();
    let api_activity = policies.detectors.settings.account_hijacking.include_api_activity
        && policies.detectors.settings.account_hijacking.enabled
        && only_policy.is_none_or(|p| p == crate::detect::detectors::HIJACK);
    let mut rules = ScanRules { policies, only_policy, api_activity, seen_calls: Default::default() };
    // A pool of one connection has none to fetch raw records on while the scan reads: there the
    // scan reads them all.
    let with_raw = pool.options().get_max_connections() < 2;
    // The reader is a connection of the pool (the process's connection budget is its pool).
    // Findings are stored mid-scan on another: readers at once are kept to one fewer than the
    // pool holds, so detections running together never take the whole pool and wait for ever.
    let readers = reader_permits(pool);
    let _permit = readers.acquire().await.ok();
    let mut reader = Reader { conn: pool.acquire().await?, done: false };
    let mut rows: futures_util::stream::BoxStream<'_, Result<EventRow, sqlx::Error>> = match (scope, with_raw) {
        (Scope::IngestedSince(since), false) => scan_query!(&mut *reader, "''", "WHERE ingested_at >= $1", since),
        (Scope::IngestedSince(since), true) => scan_query!(&mut *reader, "raw::text", "WHERE ingested_at >= $1", since),
        (Scope::EventsSince(since), false) => scan_query!(&mut *reader, "''", "WHERE event_time >= $1", since),
        (Scope::EventsSince(since), true) => scan_query!(&mut *reader, "raw::text", "WHERE event_time >= $1", since),
    };
    let mut window = Vec::with_capacity(SCAN_WINDOW);
    loop {
        let next = rows.try_next().await?;
        let ended = next.is_none();
        window.extend(next.map(|row| if with_raw { row.into_event() } else { row.into_event_without_raw() }));
        if window.len() >= SCAN_WINDOW || (ended && !window.is_empty()) {
            scan_window(pool, &mut rules, &window, &mut scan, found).await?;
            window.clear();
        }
        if ended {
            break;
        }
    }
    drop(rows);
    reader.done = true;
    tracing::debug!(events = scan.events, raw_read = scan.raw_read, "detection scan read");
    Ok(scan)
}

/// What the scan carries from event to event besides [`EventScan`].
struct ScanRules<'a> {
    policies: &'a PolicySet,
    only_policy: Option<&'a str>,
    /// Whether calls are checked against the caller's countries (`include_api_activity`).
    api_activity: bool,
    seen_calls: std::collections::HashSet<(String, Option<String>, Option<String>)>,
}

impl ScanRules<'_> {
    /// The event rules' findings on `event`.
    fn evaluate(&self, event: &PolicyEvent) -> Vec<Finding> {
        let mut findings = self.policies.sigma.evaluate(event, self.only_policy);
        findings.extend(self.policies.detectors.evaluate_event(event, self.only_policy));
        findings
    }

    /// Notes what the later steps need from `event`, from its typed fields; true when one of
    /// them keeps the event itself.
    fn note(&mut self, scan: &mut EventScan, event: &PolicyEvent) -> bool {
        scan.events += 1;
        if event.is_console_login() {
            widen(&mut scan.login_span, event.event_time);
        }
        if event.error_code.as_deref().is_some_and(recon::is_refusal) {
            widen(&mut scan.refusal_span, event.event_time);
        }
        let mut kept = scan.network.note(self.policies, self.only_policy, event);
        if self.only_policy.is_none_or(|p| p == detectors::RARE_SENSITIVE_API) {
            scan.rare_api.note(&self.policies.detectors, event);
        }
        if self.api_activity && !event.is_console_login() && event.source_ip.is_some() && event.geo_country.is_some() {
            let key = (event.account_id.clone(), event.principal().map(str::to_string), event.geo_country.clone());
            if self.seen_calls.insert(key) {
                scan.first_calls.push(event.clone());
                kept = true;
            }
        }
        kept
    }
}

/// Scans one window of events read without their raw record, into `found` in event order.
async fn scan_window(
    pool: &PgPool,
    rules: &mut ScanRules<'_>,
    window: &[PolicyEvent],
    scan: &mut EventScan,
    found: &mut Found<'_>,
) -> Result<(), DetectError> {
    // The findings of the events whose rules never asked for the raw record are final.
    let kept: Vec<bool> = window.iter().map(|event| rules.note(scan, event)).collect();
    debug_assert!(window.iter().all(|e| !e.raw.was_asked_while_absent()), "the scan's notes read typed fields only");
    let mut first_findings = Vec::with_capacity(window.len());
    let mut wanted = Vec::new();
    for (at, (event, findings)) in window.iter().zip(evaluate_window(rules, window)).enumerate() {
        let asked = event.raw.was_asked_while_absent();
        if kept[at] || asked {
            wanted.push(at);
        }
        first_findings.push((!asked).then_some(findings));
    }
    scan.raw_read += fill_raw(pool, window, &wanted).await?;
    for (event, findings) in window.iter().zip(first_findings) {
        let mut findings = findings.unwrap_or_else(|| rules.evaluate(event));
        if !findings.is_empty() {
            if let Some(network) = event.network_details() {
                findings.iter_mut().for_each(|finding| set_network(finding, network.clone()));
            }
            found.add(findings).await?;
        }
    }
    Ok(())
}

/// Threads the event rules of one window run on at most: the scan's database work is light, so
/// the rules are most of a pass's work while it reads.
const MAX_RULE_THREADS: usize = 4;

/// The event rules' findings on each event of `window`, in order, split over the machine's
/// cores (a window takes milliseconds: the caller's task blocks that long).
fn evaluate_window(rules: &ScanRules<'_>, window: &[PolicyEvent]) -> Vec<Vec<Finding>> {
    // Asked once: it reads the process's CPU affinity and cgroup quota.
    static THREADS: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
    let threads =
        *THREADS.get_or_init(|| std::thread::available_parallelism().map_or(1, |n| n.get()).min(MAX_RULE_THREADS));
    if threads < 2 || window.len() < 2 * threads {
        return window.iter().map(|event| rules.evaluate(event)).collect();
    }
    std::thread::scope(|scope| {
        let parts: Vec<_> = window
            .chunks(window.len().div_ceil(threads))
            .map(|part| scope.spawn(move || part.iter().map(|event| rules.evaluate(event)).collect::<Vec<_>>()))
            .collect();
        parts
            .into_iter()
            .flat_map(|part| part.join().unwrap_or_else(|panic| std::panic::resume_unwind(panic)))
            .collect()
    })
}

/// Fetches the raw records `wanted` (positions in `window`) lack; returns how many it fetched.
async fn fill_raw(pool: &PgPool, window: &[PolicyEvent], wanted: &[usize]) -> Result<u64, sqlx::Error> {
    let wanted: Vec<usize> = wanted.iter().copied().filter(|&at| window[at].raw.is_absent()).collect();
    if wanted.is_empty() {
        return Ok(0);
    }
    let accounts: Vec<String> = wanted.iter().map(|&at| window[at].account_id.clone()).collect();
    let times: Vec<DateTime<Utc>> = wanted.iter().map(|&at| window[at].event_time).collect();
    let ids: Vec<String> = wanted.iter().map(|&at| window[at].event_id.clone()).collect();
    let rows = sqlx::query!(
        r#"SELECT k.n AS "n!", e.raw::text AS "raw!"
           FROM unnest($1::text[], $2::timestamptz[], $3::text[]) WITH ORDINALITY AS k(account_id, event_time, event_id, n)
           JOIN cloudtrail_events e
             ON e.account_id = k.account_id AND e.event_time = k.event_time AND e.event_id = k.event_id"#,
        &accounts,
        &times,
        &ids,
    )
    .fetch_all(pool)
    .await?;
    let fetched = rows.len() as u64;
    for row in rows {
        if let Some(&at) = usize::try_from(row.n - 1).ok().and_then(|n| wanted.get(n)) {
            window[at].raw.fill(row.raw);
        }
    }
    if fetched < wanted.len() as u64 {
        // Deleted since the scan read them (retention): evaluated as they were read.
        tracing::warn!(missing = wanted.len() as u64 - fetched, "events gone before their raw record was read");
    }
    Ok(fetched)
}

/// A detection's reader: returned to the pool once read to the end, closed if the scan stopped
/// mid-stream (an error, a cancelled task), so no half-read result goes back to the pool.
struct Reader {
    conn: sqlx::pool::PoolConnection<sqlx::Postgres>,
    done: bool,
}

impl std::ops::Deref for Reader {
    type Target = PgConnection;
    fn deref(&self) -> &PgConnection {
        &self.conn
    }
}

impl std::ops::DerefMut for Reader {
    fn deref_mut(&mut self) -> &mut PgConnection {
        &mut self.conn
    }
}

impl Drop for Reader {
    fn drop(&mut self) {
        if !self.done {
            self.conn.close_on_drop();
        }
    }
}

/// The semaphore bounding a pool's detection readers to one fewer than its connections (at
/// least one), shared by every detection on that pool. Keyed by the pool's options (one `Arc`
/// per pool); an entry no detection holds is dropped and made again when needed.
fn reader_permits(pool: &PgPool) -> Arc<tokio::sync::Semaphore> {
    use std::collections::HashMap;
    use std::sync::{Mutex, OnceLock, Weak};
    static READERS: OnceLock<Mutex<HashMap<usize, Weak<tokio::sync::Semaphore>>>> = OnceLock::new();
    let key = Arc::as_ptr(&pool.connect_options()) as usize;
    let mut readers = READERS.get_or_init(Default::default).lock().unwrap_or_else(|e| e.into_inner());
    if let Some(live) = readers.get(&key).and_then(Weak::upgrade) {
        return live;
    }
    readers.retain(|_, semaphore| semaphore.strong_count() > 0);
    let permits = (pool.options().get_max_connections() as usize).saturating_sub(1).max(1);
    let semaphore = Arc::new(tokio::sync::Semaphore::new(permits));
    readers.insert(key, Arc::downgrade(&semaphore));
    semaphore
}

/// API calls from a country outside each caller's baseline of the preceding days.
async fn api_activity_findings(
    pool: &PgPool,
    policies: &PolicySet,
    first_calls: &[PolicyEvent],
) -> Result<Vec<Finding>, DetectError> {
    let mut findings = Vec::new();
    let baseline = Duration::days(policies.detectors.settings.account_hijacking.baseline_days);
    for event in first_calls {
        let Some(principal) = event.principal() else { continue };
        let history = sqlx::query!(
            r#"SELECT geo_country AS "country!", count(*) AS "events!" FROM cloudtrail_events
               WHERE account_id = $1 AND coalesce(principal_arn, user_name) = $2
                 AND event_time >= $3 AND event_time < $4 AND geo_country IS NOT NULL
                 AND error_code IS NULL
               GROUP BY geo_country"#,
            event.account_id,
            principal,
            event.event_time - baseline,
            event.event_time,
        )
        .fetch_all(pool)
        .await?;
        let countries = history.iter().map(|r| r.country.clone()).collect();
        let prior = history.iter().map(|r| r.events as usize).sum();
        findings.extend(logins::api_activity_from_new_country(&policies.detectors, event, &countries, prior));
    }
    Ok(findings)
}

/// The network detectors' candidates, less the account's own addresses and the principals
/// that used an anonymising network before.
async fn network_findings(
    pool: &PgPool,
    policies: &PolicySet,
    candidates: &NetworkCandidates,
) -> Result<Vec<Finding>, DetectError> {
    let detectors = &policies.detectors;
    let mut findings = Vec::new();
    for event in &candidates.instance_credentials {
        // An address one of the account's instances had (in any snapshot) is the account's own.
        let own = sqlx::query_scalar!(
            r#"SELECT EXISTS (SELECT 1 FROM resource_versions WHERE account_id = $1 AND resource_type = 'ec2:instance'
                                AND config->>'public_ip' = $2) AS "own!""#,
            event.account_id,
            event.source_ip.map(|ip| ip.to_string()),
        )
        .fetch_one(pool)
        .await?;
        if !own {
            findings.extend(network::instance_credentials_finding(detectors, event));
        }
    }
    let settings = &detectors.settings.anonymizing_network;
    let ignored_asns: Vec<i64> = settings
        .allow_asns
        .iter()
        .chain(&detectors.settings.instance_credentials.aws_asns)
        .map(|&a| i64::from(a))
        .collect();
    let ignored_ranges: Vec<IpNetwork> =
        detectors.anonymizing_allowed.cidrs.iter().filter_map(|c| IpNetwork::new(c.address, c.prefix).ok()).collect();
    for event in &candidates.anonymizing {
        let Some(pattern) = network::baseline_pattern(event) else { continue };
        let used_before = sqlx::query_scalar!(
            r#"SELECT EXISTS (
                   SELECT 1 FROM cloudtrail_events
                   WHERE account_id = $1 AND coalesce(principal_arn, user_name) LIKE $2
                     AND event_time >= $3 AND event_time < $4
                     AND (source_is_tor OR source_is_vpn OR source_is_hosting) AND source_is_aws IS NOT TRUE
                     AND (geo_asn IS NULL OR geo_asn <> ALL($5)) AND NOT source_ip <<= ANY($6::inet[])
               ) AS "used!""#,
            event.account_id,
            pattern,
            event.event_time - Duration::days(settings.baseline_days),
            event.event_time,
            &ignored_asns,
            &ignored_ranges,
        )
        .fetch_one(pool)
        .await?;
        if !used_before {
            findings.push(network::anonymizing_finding(detectors, event));
        }
    }
    Ok(findings)
}

/// Puts the source's network context in a finding's details.
fn set_network(finding: &mut Finding, network: serde_json::Value) {
    match &mut finding.details {
        serde_json::Value::Object(map) => {
            map.entry("network").or_insert(network);
        }
        details => *details = serde_json::json!({ "network": network }),
    }
}

/// Gives the findings that name an address but carry no network context (those of the login
/// and reconnaissance detectors) the context stored with their evidence event.
async fn attach_network(pool: &PgPool, findings: &mut [Finding]) -> Result<(), sqlx::Error> {
    let missing: Vec<String> = findings
        .iter()
        .filter(|f| f.source_ip.is_some() && f.details.get("network").is_none())
        .map(|f| f.evidence_id.clone())
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    let rows = sqlx::query_as!(
        EventRow,
        r#"SELECT account_id, event_id, event_time, event_source, event_name, principal_arn, principal_type,
                  user_name, access_key_id, host(source_ip) AS source_ip, source_ip_text, user_agent, error_code,
                  resource_ids, geo_country, geo_city, geo_latitude, geo_longitude, geo_asn,
                  geo_as_org, source_is_tor, source_is_vpn, source_is_hosting, source_is_aws, '{}' AS "raw!"
           FROM cloudtrail_events WHERE event_id = ANY($1)"#,
        &missing,
    )
    .fetch_all(pool)
    .await?;
    let known: std::collections::HashMap<(String, String), serde_json::Value> = rows
        .into_iter()
        .map(EventRow::into_event)
        .filter_map(|e| Some(((e.account_id.clone(), e.event_id.clone()), e.network_details()?)))
        .collect();
    for finding in findings.iter_mut().filter(|f| f.source_ip.is_some() && f.details.get("network").is_none()) {
        if let Some(network) = known.get(&(finding.account_id.clone(), finding.evidence_id.clone())) {
            set_network(finding, network.clone());
        }
    }
    Ok(())
}

/// Gives the findings whose address no stored event tells the network of (a flow alert names
/// only the outside address) its network from the network data, so that the alert carries it and
/// incident linking reads it from the alert, the same in every process and on every re-run.
fn look_up_network(geo: Option<&GeoDb>, findings: &mut [Finding]) {
    let Some(geo) = geo else { return };
    for finding in findings.iter_mut().filter(|f| f.details.get("network").is_none()) {
        let Some(ip) = finding.source_ip.filter(|ip| crate::alerts::link_keys::is_linkable(*ip)) else { continue };
        let info = geo.lookup(ip);
        if info.asn.is_none() && info.is_tor.is_none() && info.is_aws.is_none() {
            continue;
        }
        set_network(
            finding,
            serde_json::json!({
                "asn": info.asn, "as_org": info.as_org, "is_tor": info.is_tor,
                "is_vpn": info.is_vpn, "is_hosting": info.is_hosting, "is_aws": info.is_aws,
            }),
        );
    }
}

/// The login detectors over every console login within reach of the new ones (`first`..`last`),
/// streamed: memory holds the detectors' windows, not the logins.
async fn login_findings(
    pool: &PgPool,
    policies: &PolicySet,
    (first, last): (DateTime<Utc>, DateTime<Utc>),
    only_policy: Option<&str>,
    summary: &mut DetectionSummary,
) -> Result<Vec<Finding>, DetectError> {
    let (success_reach, failure_reach) = logins::reach(&policies.detectors);
    let reach = success_reach.max(failure_reach);
    let mut detectors = logins::LoginDetectors::new(&policies.detectors, first, Some(last), only_policy);
    let failures = (first - failure_reach, last + failure_reach);
    let mut rows = console_logins(pool, (first - reach, last + reach), failures);
    while let Some(login) = rows.try_next().await? {
        summary.logins_evaluated += 1;
        detectors.push(&login);
    }
    summary.login_range = Some((first, last + reach));
    Ok(detectors.finish())
}

/// The reconnaissance detector over every refused call within reach of the new ones.
async fn recon_findings(
    pool: &PgPool,
    policies: &PolicySet,
    (first, last): (DateTime<Utc>, DateTime<Utc>),
) -> Result<Vec<Finding>, DetectError> {
    let reach = ReconBursts::reach(&policies.detectors);
    let mut bursts = ReconBursts::new(&policies.detectors, first, last);
    let mut rows = refusals(pool, (first - reach, last + reach));
    while let Some(refusal) = rows.try_next().await? {
        bursts.push(&refusal);
    }
    Ok(bursts.finish())
}

/// Widens `span` to hold `time`.
fn widen(span: &mut Option<(DateTime<Utc>, DateTime<Utc>)>, time: DateTime<Utc>) {
    *span = Some(match *span {
        None => (time, time),
        Some((first, last)) => (first.min(time), last.max(time)),
    });
}

/// The detectors over flow records.
const FLOW_POLICIES: &[&str] = &[detectors::EXFILTRATION, detectors::PORT_SCAN, detectors::SUSPICIOUS_DESTINATION];

/// The flow detectors over the clock hours with new flow records.
async fn flow_findings(
    pool: &PgPool,
    policies: &PolicySet,
    scope: Scope,
    only_policy: Option<&str>,
    summary: &mut DetectionSummary,
    state: &mut health::StateChanges,
) -> Result<Vec<Finding>, DetectError> {
    let hours = flow_hours(pool, scope).await?;
    summary.flow_hours_evaluated = hours.len() as u64;
    let wanted = |id: &str| only_policy.is_none_or(|p| p == id);
    let mut findings = Vec::new();
    // Flows to an incident's addresses are looked up whether or not new flows came: the
    // incident may be what is new.
    if wanted(detectors::SUSPICIOUS_DESTINATION) {
        let since = match scope {
            Scope::IngestedSince(since) => Some(since),
            Scope::EventsSince(_) => None,
        };
        findings.extend(flow_destinations::findings(pool, &policies.detectors, &hours, since, state).await?);
    }
    // Port scans run without new hours too: hours a capped run left in the backlog wait for it.
    if wanted(detectors::PORT_SCAN) {
        findings.extend(port_scan::findings(pool, &policies.detectors, &hours, state).await?);
    }
    if !hours.is_empty() && wanted(detectors::EXFILTRATION) {
        let threshold = policies.detectors.settings.flow_exfiltration.bytes_per_hour;
        let volumes = hourly_volumes(pool, &hours, threshold).await?;
        findings.extend(exfiltration::evaluate(&policies.detectors, &volumes));
    }
    Ok(findings)
}

/// A `cloudtrail_events` row as the detectors read it.
struct EventRow {
    account_id: String,
    event_id: String,
    event_time: DateTime<Utc>,
    event_source: Option<String>,
    event_name: Option<String>,
    principal_arn: Option<String>,
    principal_type: Option<String>,
    user_name: Option<String>,
    access_key_id: Option<String>,
    source_ip: Option<String>,
    source_ip_text: Option<String>,
    user_agent: Option<String>,
    error_code: Option<String>,
    resource_ids: Vec<String>,
    geo_country: Option<String>,
    geo_city: Option<String>,
    geo_latitude: Option<f64>,
    geo_longitude: Option<f64>,
    geo_asn: Option<i64>,
    geo_as_org: Option<String>,
    source_is_tor: Option<bool>,
    source_is_vpn: Option<bool>,
    source_is_hosting: Option<bool>,
    source_is_aws: Option<bool>,
    raw: String,
}

impl EventRow {
    /// The event, its raw record to be fetched when asked for ([`RawJson::absent`]).
    fn into_event_without_raw(self) -> PolicyEvent {
        PolicyEvent { raw: RawJson::absent(), ..self.into_event() }
    }

    fn into_event(self) -> PolicyEvent {
        PolicyEvent {
            account_id: self.account_id,
            event_id: self.event_id,
            event_time: self.event_time,
            event_source: self.event_source,
            event_name: self.event_name,
            principal_arn: self.principal_arn,
            principal_type: self.principal_type,
            user_name: self.user_name,
            access_key_id: self.access_key_id,
            source_ip: self.source_ip.and_then(|ip| ip.parse::<IpAddr>().ok()),
            source_ip_text: self.source_ip_text,
            user_agent: self.user_agent,
            error_code: self.error_code,
            resource_ids: self.resource_ids,
            geo_country: self.geo_country,
            geo_city: self.geo_city,
            geo_latitude: self.geo_latitude,
            geo_longitude: self.geo_longitude,
            geo_asn: self.geo_asn,
            network: SourceNetwork {
                as_org: self.geo_as_org,
                is_tor: self.source_is_tor,
                is_vpn: self.source_is_vpn,
                is_hosting: self.source_is_hosting,
                is_aws: self.source_is_aws,
            },
            console_session: None,
            raw: RawJson::new(self.raw),
        }
    }
}

type EventStream<'a> = futures_util::stream::BoxStream<'a, Result<PolicyEvent, sqlx::Error>>;

/// Console logins in `range`, failed ones only within `failures`, in time order. Their raw event
/// is cut to what the login detectors read (the outcome and whether MFA was used): a spray's
/// failures are many, and each raw event is kilobytes.
fn console_logins(
    pool: &PgPool,
    range: (DateTime<Utc>, DateTime<Utc>),
    failures: (DateTime<Utc>, DateTime<Utc>),
) -> EventStream<'_> {
    Box::pin(
        sqlx::query_as!(
            EventRow,
            r#"SELECT account_id, event_id, event_time, event_source, event_name, principal_arn, principal_type,
                      user_name, access_key_id, host(source_ip) AS source_ip, source_ip_text, user_agent, error_code,
                      resource_ids, geo_country, geo_city, geo_latitude, geo_longitude, geo_asn,
                      geo_as_org, source_is_tor, source_is_vpn, source_is_hosting, source_is_aws,
                      jsonb_build_object(
                          'responseElements', jsonb_build_object('ConsoleLogin', CASE WHEN succeeded THEN 'Success' ELSE 'Failure' END),
                          'additionalEventData', jsonb_build_object('MFAUsed', raw->'additionalEventData'->'MFAUsed')
                      )::text AS "raw!"
               FROM cloudtrail_events,
                    -- PolicyEvent::login_succeeded, in SQL.
                    LATERAL (SELECT CASE raw->'responseElements'->>'ConsoleLogin'
                                        WHEN 'Success' THEN true WHEN 'Failure' THEN false
                                        ELSE error_code IS NULL AND raw->'errorMessage' IS NULL END AS succeeded) AS outcome
               -- lower(): the indexed form (migration 0036); the exact name keeps the meaning.
               WHERE lower(event_name) = 'consolelogin' AND event_name = 'ConsoleLogin' AND event_time >= $1 AND event_time <= $2
                 AND (succeeded OR (event_time >= $3 AND event_time <= $4))
               ORDER BY event_time, event_id"#,
            range.0,
            range.1,
            failures.0,
            failures.1,
        )
        .fetch(pool)
        .map_ok(EventRow::into_event),
    )
}

/// Refused calls (`recon::is_refusal`, in SQL) in `range`, in time order, without their raw
/// event (the detector reads the typed columns only).
fn refusals(pool: &PgPool, range: (DateTime<Utc>, DateTime<Utc>)) -> EventStream<'_> {
    Box::pin(
        sqlx::query_as!(
            EventRow,
            r#"SELECT account_id, event_id, event_time, event_source, event_name, principal_arn, principal_type,
                      user_name, access_key_id, host(source_ip) AS source_ip, source_ip_text, user_agent, error_code,
                      resource_ids, geo_country, geo_city, geo_latitude, geo_longitude, geo_asn,
                      geo_as_org, source_is_tor, source_is_vpn, source_is_hosting, source_is_aws, '{}' AS "raw!"
               FROM cloudtrail_events
               WHERE event_time >= $1 AND event_time <= $2
                 AND (error_code IN ('AccessDenied', 'AccessDeniedException', 'UnauthorizedAccess', 'AuthorizationError')
                      OR error_code LIKE '%UnauthorizedOperation')
               ORDER BY event_time, event_id"#,
            range.0,
            range.1,
        )
        .fetch(pool)
        .map_ok(EventRow::into_event),
    )
}

/// The clock hours (per account) that have flow records in scope.
async fn flow_hours(pool: &PgPool, scope: Scope) -> Result<Vec<DateTime<Utc>>, sqlx::Error> {
    let hours = match scope {
        Scope::IngestedSince(since) => sqlx::query_scalar!(
            r#"SELECT DISTINCT date_trunc('hour', bucket_time) AS "hour!" FROM flow_records WHERE ingested_at >= $1"#,
            since
        )
        .fetch_all(pool)
        .await?,
        Scope::EventsSince(since) => sqlx::query_scalar!(
            r#"SELECT DISTINCT date_trunc('hour', bucket_time) AS "hour!" FROM flow_records WHERE bucket_time >= $1"#,
            since
        )
        .fetch_all(pool)
        .await?,
    };
    Ok(hours.into_iter().collect::<BTreeSet<_>>().into_iter().collect())
}

/// Accepted bytes from internal sources to each public destination, per hour (`net` decides both).
async fn hourly_volumes(
    pool: &PgPool,
    hours: &[DateTime<Utc>],
    threshold: i64,
) -> Result<Vec<HourlyVolume>, sqlx::Error> {
    let (first, last) = (hours[0], hours[hours.len() - 1] + Duration::hours(1));
    let rows = sqlx::query!(
        r#"SELECT account_id, host(dstaddr) AS "destination!", date_trunc('hour', bucket_time) AS "hour!",
                  sum(bytes)::bigint AS "bytes!", count(*) AS "records!",
                  array_agg(DISTINCT host(srcaddr)) AS "sources!", array_agg(DISTINCT interface_id) AS "interfaces!",
                  max(dst_country) AS destination_country
           FROM flow_records
           WHERE bucket_time >= $1 AND bucket_time < $2 AND date_trunc('hour', bucket_time) = ANY($3)
             AND action = 'ACCEPT' AND dstaddr IS NOT NULL AND bytes IS NOT NULL
             AND srcaddr <<= ANY($5::inet[]) AND NOT dstaddr <<= ANY($6::inet[])
           GROUP BY account_id, dstaddr, date_trunc('hour', bucket_time)
           HAVING sum(bytes)::bigint >= $4::bigint
           ORDER BY 3, 1, 2"#,
        first,
        last,
        hours,
        threshold,
        &crate::net::internal_networks(),
        &crate::net::non_public_networks(),
    )
    .fetch_all(pool)
    .await?;
    Ok(rows
        .into_iter()
        .filter_map(|r| {
            Some(HourlyVolume {
                account_id: r.account_id,
                destination: r.destination.parse().ok()?,
                hour: r.hour,
                bytes: r.bytes,
                records: r.records,
                sources: r.sources,
                interfaces: r.interfaces,
                destination_country: r.destination_country,
            })
        })
        .collect())
}
