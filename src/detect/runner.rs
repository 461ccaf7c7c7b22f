//! Runs the policies over stored data in event-time order and folds what they find into alerts.
//!
//! After each import (or poll), the rows it stored are evaluated: event rules on each new event;
//! login detectors over every console login around the new ones (from a baseline's length before
//! the earliest to a baseline's length after the latest, so a late-arriving old file re-decides
//! the logins it could change); the flow detector over the clock hours that got new records.
//! Alerts are keyed by policy, subject and fixed window and evidence is recorded once, so the
//! result does not depend on file order or on running twice.

use std::collections::BTreeSet;
use std::net::IpAddr;

use chrono::{DateTime, Duration, Utc};
use futures_util::TryStreamExt;
use serde::Serialize;
use sqlx::PgPool;

use crate::alerts::store::{self, AlertStoreError, RecordOutcome};
use crate::detect::detectors::exfiltration::{self, HourlyVolume};
use crate::detect::detectors::logins;
use crate::detect::event::RawJson;
use crate::detect::{PolicyEvent, PolicySet};
use crate::model::Finding;

#[derive(Debug, thiserror::Error)]
pub enum DetectError {
    #[error("reading events for detection")]
    Db(#[from] sqlx::Error),
    #[error("storing alerts")]
    Store(#[from] AlertStoreError),
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
}

/// Policies whose verdict on a login depends on other logins.
const LOGIN_POLICIES: &[&str] = &[
    crate::detect::detectors::HIJACK,
    crate::detect::detectors::IMPOSSIBLE_TRAVEL,
    crate::detect::detectors::LOGIN_FAILURES,
];

/// The database's clock, so "ingested since" compares like with like.
pub async fn database_now(pool: &PgPool) -> Result<DateTime<Utc>, sqlx::Error> {
    sqlx::query_scalar!(r#"SELECT now() AS "now!""#).fetch_one(pool).await
}

/// Evaluates `scope` and stores the findings as alerts.
pub async fn run(pool: &PgPool, policies: &PolicySet, scope: Scope) -> Result<DetectionSummary, DetectError> {
    let (findings, mut summary) = evaluate(pool, policies, scope, None).await?;
    let RecordOutcome { new_evidence, new_alerts, .. } = crate::notify::outbox::record_alerts(pool, &findings).await?;
    summary.new_alerts = new_alerts;
    summary.new_evidence = new_evidence;
    if let Some((from, to)) = summary.login_range {
        // The login detectors re-decided every console login in this range: evidence they no
        // longer find (an older file showed the "new" country was not new) is withdrawn.
        let keep: Vec<(String, String)> = findings
            .iter()
            .filter(|f| LOGIN_POLICIES.contains(&f.policy_id.as_str()))
            .map(|f| (f.alert_id(), f.evidence_id.clone()))
            .collect();
        summary.retracted_evidence = store::retract_login_evidence(pool, LOGIN_POLICIES, from, to, &keep).await?;
    }
    tracing::info!(
        events = summary.events_evaluated,
        logins = summary.logins_evaluated,
        flow_hours = summary.flow_hours_evaluated,
        findings = summary.findings,
        new_alerts,
        "detection finished"
    );
    Ok(summary)
}

/// Evaluates `scope` (all policies, or one) and returns the findings without storing them.
pub async fn evaluate(
    pool: &PgPool,
    policies: &PolicySet,
    scope: Scope,
    only_policy: Option<&str>,
) -> Result<(Vec<Finding>, DetectionSummary), DetectError> {
    let mut summary = DetectionSummary::default();
    let scanned = scan_events(pool, policies, scope, only_policy).await?;
    summary.events_evaluated = scanned.events;
    let mut findings = scanned.findings;
    findings.extend(api_activity_findings(pool, policies, &scanned.first_calls).await?);
    if let Some(span) = scanned.login_span {
        findings.extend(login_findings(pool, policies, span, only_policy, &mut summary).await?);
    }
    if only_policy.is_none_or(|p| p == crate::detect::detectors::EXFILTRATION) {
        findings.extend(flow_findings(pool, policies, scope, &mut summary).await?);
    }
    summary.findings = findings.len() as u64;
    Ok((findings, summary))
}

/// What one pass over the events in scope found, and what the later steps need from it.
#[derive(Default)]
struct EventScan {
    events: u64,
    /// What event rules and the stateless detectors found.
    findings: Vec<Finding>,
    /// The time span of new console logins.
    login_span: Option<(DateTime<Utc>, DateTime<Utc>)>,
    /// The first call of each principal from each country, for the API-activity baseline (only
    /// when that option is on).
    first_calls: Vec<PolicyEvent>,
}

/// Runs the event rules over every event in scope, in event-time order.
async fn scan_events(
    pool: &PgPool,
    policies: &PolicySet,
    scope: Scope,
    only_policy: Option<&str>,
) -> Result<EventScan, DetectError> {
    let mut scan = EventScan::default();
    let api_activity = policies.detectors.settings.account_hijacking.include_api_activity
        && policies.detectors.settings.account_hijacking.enabled
        && only_policy.is_none_or(|p| p == crate::detect::detectors::HIJACK);
    let mut seen_calls: std::collections::HashSet<(String, Option<String>, Option<String>)> = Default::default();
    let mut rows = match scope {
        Scope::IngestedSince(since) => events_ingested_since(pool, since),
        Scope::EventsSince(since) => events_since(pool, since),
    };
    while let Some(event) = rows.try_next().await? {
        scan.events += 1;
        if event.is_console_login() {
            scan.login_span = Some(match scan.login_span {
                None => (event.event_time, event.event_time),
                Some((first, last)) => (first.min(event.event_time), last.max(event.event_time)),
            });
        }
        scan.findings.extend(policies.sigma.evaluate(&event, only_policy));
        scan.findings.extend(policies.detectors.evaluate_event(&event, only_policy));
        if api_activity && !event.is_console_login() && event.source_ip.is_some() && event.geo_country.is_some() {
            let key = (event.account_id.clone(), event.principal().map(str::to_string), event.geo_country.clone());
            if seen_calls.insert(key) {
                scan.first_calls.push(event);
            }
        }
    }
    Ok(scan)
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

/// The login detectors over every console login within reach of the new ones (`first`..`last`).
async fn login_findings(
    pool: &PgPool,
    policies: &PolicySet,
    (first, last): (DateTime<Utc>, DateTime<Utc>),
    only_policy: Option<&str>,
    summary: &mut DetectionSummary,
) -> Result<Vec<Finding>, DetectError> {
    let settings = &policies.detectors.settings;
    let reach = Duration::days(settings.account_hijacking.baseline_days)
        .max(Duration::minutes(settings.login_failures.window_minutes))
        .max(Duration::days(1));
    let logins = console_logins(pool, first - reach, last + reach).await?;
    summary.logins_evaluated = logins.len() as u64;
    summary.login_range = Some((first, last + reach));
    Ok(logins::evaluate(&policies.detectors, &logins, first, only_policy))
}

/// The exfiltration detector over the clock hours with new flow records.
async fn flow_findings(
    pool: &PgPool,
    policies: &PolicySet,
    scope: Scope,
    summary: &mut DetectionSummary,
) -> Result<Vec<Finding>, DetectError> {
    let hours = flow_hours(pool, scope).await?;
    summary.flow_hours_evaluated = hours.len() as u64;
    if hours.is_empty() {
        return Ok(Vec::new());
    }
    let volumes = hourly_volumes(pool, &hours, policies.detectors.settings.flow_exfiltration.bytes_per_hour).await?;
    Ok(exfiltration::evaluate(&policies.detectors, &volumes))
}

macro_rules! policy_event_query {
    ($pool:expr, $filter:literal, $($arg:expr),*) => {
        sqlx::query!(
            r#"SELECT account_id, event_id, event_time, event_source, event_name, principal_arn, principal_type,
                      user_name, access_key_id, host(source_ip) AS source_ip, source_ip_text, user_agent, error_code,
                      resource_ids, geo_country, geo_city, geo_latitude, geo_longitude, geo_asn, raw::text AS "raw!"
               FROM cloudtrail_events "# + $filter + r#" ORDER BY event_time, event_id"#,
            $($arg),*
        )
        .fetch($pool)
        .map_ok(|r| PolicyEvent {
            account_id: r.account_id,
            event_id: r.event_id,
            event_time: r.event_time,
            event_source: r.event_source,
            event_name: r.event_name,
            principal_arn: r.principal_arn,
            principal_type: r.principal_type,
            user_name: r.user_name,
            access_key_id: r.access_key_id,
            source_ip: r.source_ip.and_then(|ip| ip.parse::<IpAddr>().ok()),
            source_ip_text: r.source_ip_text,
            user_agent: r.user_agent,
            error_code: r.error_code,
            resource_ids: r.resource_ids,
            geo_country: r.geo_country,
            geo_city: r.geo_city,
            geo_latitude: r.geo_latitude,
            geo_longitude: r.geo_longitude,
            geo_asn: r.geo_asn,
            console_session: None,
            raw: RawJson::new(r.raw),
        })
    };
}

type EventStream<'a> = futures_util::stream::BoxStream<'a, Result<PolicyEvent, sqlx::Error>>;

fn events_ingested_since(pool: &PgPool, since: DateTime<Utc>) -> EventStream<'_> {
    Box::pin(policy_event_query!(pool, "WHERE ingested_at >= $1", since))
}

fn events_since(pool: &PgPool, since: DateTime<Utc>) -> EventStream<'_> {
    Box::pin(policy_event_query!(pool, "WHERE event_time >= $1", since))
}

async fn console_logins(
    pool: &PgPool,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
) -> Result<Vec<PolicyEvent>, sqlx::Error> {
    policy_event_query!(pool, "WHERE event_name = 'ConsoleLogin' AND event_time >= $1 AND event_time <= $2", from, to)
        .try_collect()
        .await
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
