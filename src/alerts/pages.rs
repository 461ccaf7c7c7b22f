//! Alerts and their evidence a page at a time, for the API: keyset pages (the sort key
//! of the previous page's last row, never an offset), each alert with a bounded sample of its
//! evidence ids.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sqlx::PgPool;

use super::store::{AlertStoreError, AlertView};
use crate::model::{AlertStatus, Severity};

/// Evidence ids an alert of a list carries (the first, in time order); `event_count` says how
/// many events there are, and [`evidence`] pages them all.
pub const EVIDENCE_IDS: i64 = 20;

/// Alerts in the steps of one incident, at most (the first, in time order).
pub const MAX_TIMELINE: i64 = 500;

/// How a list of alerts is ordered.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum AlertSort {
    /// Newest first (by first seen).
    #[default]
    Newest,
    /// Oldest first (by first seen).
    Oldest,
    /// Most severe first, then newest.
    Severity,
    /// Most recently seen first (by last seen).
    LastSeen,
}

impl AlertSort {
    fn as_str(self) -> &'static str {
        match self {
            Self::Newest => "newest",
            Self::Oldest => "oldest",
            Self::Severity => "severity",
            Self::LastSeen => "last_seen",
        }
    }
}

/// Which alerts a list holds, and in which order.
#[derive(Debug, Default, Clone)]
pub struct AlertListFilter {
    pub status: Option<AlertStatus>,
    pub policy_id: Option<String>,
    pub severity: Option<Severity>,
    pub account_id: Option<String>,
    /// An ARN, or a user name (the end of the ARN).
    pub principal: Option<String>,
    /// One alert, by id (a UUID; check with [`is_alert_id`](crate::model::is_alert_id) first).
    pub alert_id: Option<String>,
    pub sort: AlertSort,
}

/// An alert's position in its list's order: every order is "descending by (rank, micros, id)"
/// (rank is the severity when sorting by severity, micros the sort time, negated for oldest
/// first), so one keyset condition pages them all.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AlertKey {
    pub sort: AlertSort,
    pub rank: i32,
    pub micros: i64,
    pub alert_id: String,
}

/// An alert of a list with its position.
#[derive(Debug, Clone)]
pub struct ListedAlert {
    pub alert: AlertView,
    pub key: AlertKey,
}

/// `TA0001/` (a tactic with no technique, as posture checks give) reads `TA0001`.
pub fn mitre_label(label: String) -> String {
    match label.strip_suffix('/') {
        Some(tactic) => tactic.to_string(),
        None => label,
    }
}

/// An alert row of a list query, with its sort key.
struct AlertRow {
    id: String,
    policy_id: String,
    title: String,
    severity: Severity,
    status: AlertStatus,
    snoozed_until: Option<DateTime<Utc>>,
    account_id: String,
    principal: Option<String>,
    source_ip: Option<String>,
    country: Option<String>,
    resources: Vec<String>,
    first_seen: DateTime<Utc>,
    last_seen: DateTime<Utc>,
    event_count: i64,
    mitre: Vec<String>,
    incident_id: Option<String>,
    details: serde_json::Value,
    rank: i32,
    micros: i64,
    evidence: Vec<String>,
}

impl AlertRow {
    fn listed(self, sort: AlertSort) -> ListedAlert {
        ListedAlert {
            key: AlertKey { sort, rank: self.rank, micros: self.micros, alert_id: self.id.clone() },
            alert: AlertView {
                incident_id: self.incident_id,
                id: self.id,
                policy_id: self.policy_id,
                title: self.title,
                severity: self.severity,
                status: self.status,
                snoozed_until: self.snoozed_until,
                account_id: self.account_id,
                principal: self.principal,
                source_ip: self.source_ip,
                country: self.country,
                resources: self.resources,
                first_seen: self.first_seen,
                last_seen: self.last_seen,
                event_count: self.event_count,
                evidence: self.evidence,
                mitre: self.mitre.into_iter().map(mitre_label).collect(),
                details: self.details,
            },
        }
    }
}

/// Alerts matching `filter`, in its order, after `after`, at most `limit`.
pub async fn alerts(
    pool: &PgPool,
    filter: &AlertListFilter,
    after: Option<&AlertKey>,
    limit: i64,
) -> Result<Vec<ListedAlert>, AlertStoreError> {
    let rows = match filter.sort {
        AlertSort::Newest => newest_alerts(pool, filter, after, limit).await?,
        _ => sorted_alerts(pool, filter, after, limit).await?,
    };
    Ok(rows.into_iter().map(|row| row.listed(filter.sort)).collect())
}

/// The default order, newest first: a walk down `alerts_page_idx`.
async fn newest_alerts(
    pool: &PgPool,
    filter: &AlertListFilter,
    after: Option<&AlertKey>,
    limit: i64,
) -> Result<Vec<AlertRow>, sqlx::Error> {
    sqlx::query_as!(
        AlertRow,
        r#"SELECT a.alert_id::text AS "id!", a.policy_id, a.title, a.severity AS "severity: Severity",
                  -- A snooze that has run out shows the alert as open again.
                  (CASE WHEN a.status = 'snoozed' AND a.snoozed_until <= now() THEN 'open' ELSE a.status END)
                      AS "status!: AlertStatus",
                  a.snoozed_until, a.account_id, a.principal,
                  host(a.source_ip) AS source_ip, a.country, a.resources, a.first_seen, a.last_seen, a.event_count,
                  a.mitre, a.incident_id, a.details, 0 AS "rank!",
                  (extract(epoch FROM a.first_seen) * 1000000)::bigint AS "micros!",
                  ARRAY(SELECT e.event_id FROM alert_evidence e WHERE e.account_id = a.account_id AND e.alert_id = a.alert_id
                        ORDER BY e.event_time, e.event_id LIMIT $7) AS "evidence!"
           FROM alerts a
           WHERE ($1::alert_status IS NULL
                  OR (CASE WHEN a.status = 'snoozed' AND a.snoozed_until <= now() THEN 'open' ELSE a.status END) = $1)
             AND ($2::text IS NULL OR a.policy_id = $2)
             AND ($3::text IS NULL OR a.alert_id = $3::text::uuid)
             AND ($4::bigint IS NULL
                  OR (a.first_seen, a.alert_id) < ('epoch'::timestamptz + $4 * interval '1 microsecond', $5::text::uuid))
             AND ($8::alert_severity IS NULL OR a.severity = $8)
             AND ($9::text IS NULL OR a.account_id = $9)
             AND ($10::text IS NULL OR a.principal = $10 OR right(a.principal, length($10) + 1) = '/' || $10)
           ORDER BY a.first_seen DESC, a.alert_id DESC
           LIMIT $6"#,
        filter.status as Option<AlertStatus>,
        filter.policy_id,
        filter.alert_id,
        after.map(|k| k.micros),
        after.map(|k| k.alert_id.as_str()),
        limit,
        EVIDENCE_IDS,
        filter.severity as Option<Severity>,
        filter.account_id,
        filter.principal,
    )
    .fetch_all(pool)
    .await
}

/// The other orders, as "descending by (rank, micros, id)" over keys computed per row.
async fn sorted_alerts(
    pool: &PgPool,
    filter: &AlertListFilter,
    after: Option<&AlertKey>,
    limit: i64,
) -> Result<Vec<AlertRow>, sqlx::Error> {
    sqlx::query_as!(
        AlertRow,
        r#"WITH keyed AS (
               SELECT a.*,
                      (CASE WHEN a.status = 'snoozed' AND a.snoozed_until <= now() THEN 'open' ELSE a.status END)
                          AS shown_status,
                      (CASE WHEN $8 = 'severity' THEN array_position(enum_range(NULL::alert_severity), a.severity)
                            ELSE 0 END) AS rank,
                      (CASE WHEN $8 = 'oldest' THEN -1 ELSE 1 END)
                          * (extract(epoch FROM CASE WHEN $8 = 'last_seen' THEN a.last_seen ELSE a.first_seen END)
                             * 1000000)::bigint AS micros
               FROM alerts a
               WHERE ($2::text IS NULL OR a.policy_id = $2)
                 AND ($3::text IS NULL OR a.alert_id = $3::text::uuid)
                 AND ($9::alert_severity IS NULL OR a.severity = $9)
                 AND ($10::text IS NULL OR a.account_id = $10)
                 AND ($11::text IS NULL OR a.principal = $11 OR right(a.principal, length($11) + 1) = '/' || $11))
           SELECT k.alert_id::text AS "id!", k.policy_id AS "policy_id!", k.title AS "title!",
                  k.severity AS "severity!: Severity", k.shown_status AS "status!: AlertStatus",
                  k.snoozed_until, k.account_id AS "account_id!", k.principal,
                  host(k.source_ip) AS source_ip, k.country, k.resources AS "resources!", k.first_seen AS "first_seen!",
                  k.last_seen AS "last_seen!", k.event_count AS "event_count!", k.mitre AS "mitre!", k.incident_id,
                  k.details AS "details!", k.rank AS "rank!", k.micros AS "micros!",
                  ARRAY(SELECT e.event_id FROM alert_evidence e WHERE e.account_id = k.account_id AND e.alert_id = k.alert_id
                        ORDER BY e.event_time, e.event_id LIMIT $7) AS "evidence!"
           FROM keyed k
           WHERE ($1::alert_status IS NULL OR k.shown_status = $1)
             AND ($4::int IS NULL OR (k.rank, k.micros, k.alert_id) < ($4, $5::bigint, $6::text::uuid))
           ORDER BY k.rank DESC, k.micros DESC, k.alert_id DESC
           LIMIT $12"#,
        filter.status as Option<AlertStatus>,
        filter.policy_id,
        filter.alert_id,
        after.map(|k| k.rank),
        after.map(|k| k.micros),
        after.map(|k| k.alert_id.as_str()),
        EVIDENCE_IDS,
        filter.sort.as_str(),
        filter.severity as Option<Severity>,
        filter.account_id,
        filter.principal,
        limit,
    )
    .fetch_all(pool)
    .await
}

/// One alert (its id checked with [`is_alert_id`](crate::model::is_alert_id) first).
pub async fn alert(pool: &PgPool, alert_id: &str) -> Result<Option<AlertView>, AlertStoreError> {
    let filter = AlertListFilter { alert_id: Some(alert_id.to_string()), ..Default::default() };
    Ok(alerts(pool, &filter, None, 1).await?.into_iter().next().map(|listed| listed.alert))
}

/// The alerts with these ids (UUIDs), in time order; at most [`MAX_TIMELINE`].
pub async fn alerts_by_id(pool: &PgPool, ids: &[String]) -> Result<Vec<AlertView>, AlertStoreError> {
    let mut found = Vec::with_capacity(ids.len());
    // One indexed lookup each: an incident's timeline is bounded.
    for id in ids.iter().take(MAX_TIMELINE as usize) {
        found.extend(alert(pool, id).await?);
    }
    found.sort_by(|a, b| (a.first_seen, &a.policy_id, &a.id).cmp(&(b.first_seen, &b.policy_id, &b.id)));
    Ok(found)
}

/// An evidence event's position in time order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EvidenceKey {
    pub event_time: DateTime<Utc>,
    pub event_id: String,
}

/// A CloudTrail event behind an alert, with where it came from.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct EvidenceEvent {
    pub event_id: String,
    pub event_time: DateTime<Utc>,
    pub event_name: Option<String>,
    pub user_name: Option<String>,
    pub principal_arn: Option<String>,
    pub source_ip: Option<String>,
    pub country: Option<String>,
    pub city: Option<String>,
    pub latitude: Option<f64>,
    pub longitude: Option<f64>,
    pub user_agent: Option<String>,
    /// `success` or `failure` (an error, or a console login that says `Failure`).
    pub outcome: String,
    pub error_code: Option<String>,
    pub error_message: Option<String>,
    pub resource_ids: Vec<String>,
}

impl EvidenceEvent {
    pub fn key(&self) -> EvidenceKey {
        EvidenceKey { event_time: self.event_time, event_id: self.event_id.clone() }
    }
}

/// The events behind an alert of `account_id`, in time order, after `after`, at most `limit`.
pub async fn evidence(
    pool: &PgPool,
    account_id: &str,
    alert_id: &str,
    after: Option<&EvidenceKey>,
    limit: i64,
) -> Result<Vec<EvidenceEvent>, AlertStoreError> {
    Ok(sqlx::query_as!(
        EvidenceEvent,
        r#"SELECT c.event_id, c.event_time, c.event_name, c.user_name, c.principal_arn, c.source_ip_text AS source_ip,
                  c.geo_country AS country, c.geo_city AS city, c.geo_latitude AS latitude, c.geo_longitude AS longitude,
                  c.user_agent, c.error_code, c.error_message, c.resource_ids,
                  (CASE WHEN c.error_code IS NOT NULL OR c.error_message IS NOT NULL
                             OR (c.event_name = 'ConsoleLogin' AND c.raw->'responseElements'->>'ConsoleLogin' = 'Failure')
                        THEN 'failure' ELSE 'success' END) AS "outcome!"
           FROM alert_evidence e
           JOIN cloudtrail_events c ON c.account_id = e.account_id AND c.event_id = e.event_id AND c.event_time = e.event_time
           WHERE e.account_id = $1 AND e.alert_id = $2::text::uuid
             AND ($3::timestamptz IS NULL OR (e.event_time, e.event_id) > ($3, $4::text))
           ORDER BY e.event_time, e.event_id
           LIMIT $5"#,
        account_id,
        alert_id,
        after.map(|k| k.event_time),
        after.map(|k| k.event_id.as_str()),
        limit,
    )
    .fetch_all(pool)
    .await?)
}
