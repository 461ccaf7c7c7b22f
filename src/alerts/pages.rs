//! Alerts, their evidence and incidents a page at a time, for the API: keyset pages (the sort key
//! of the previous page's last row, never an offset), each alert with a bounded sample of its
//! evidence ids, and incidents grouped in SQL in one pass over the alerts.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sqlx::PgPool;

use super::store::{AlertFilter, AlertStoreError, AlertView, IncidentStep, IncidentView, incident_id};
use crate::model::{AlertStatus, Severity};

/// Evidence ids an alert of a list carries (the first, in time order); `event_count` says how
/// many events there are, and [`evidence`] pages them all.
pub const EVIDENCE_IDS: i64 = 20;

/// Alerts in the steps of one incident, at most (the first, in time order).
pub const MAX_TIMELINE: i64 = 500;

/// An alert's position in the newest-first order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AlertKey {
    pub first_seen: DateTime<Utc>,
    pub alert_id: String,
}

impl AlertKey {
    pub fn of(alert: &AlertView) -> Self {
        Self { first_seen: alert.first_seen, alert_id: alert.id.clone() }
    }
}

/// Alerts matching `filter`, newest first (by first seen), after `after`, at most `limit`.
pub async fn alerts(
    pool: &PgPool,
    filter: &AlertFilter,
    after: Option<&AlertKey>,
    limit: i64,
) -> Result<Vec<AlertView>, AlertStoreError> {
    let rows = sqlx::query!(
        r#"SELECT a.alert_id::text AS "id!", a.policy_id, a.title, a.severity AS "severity: Severity",
                  -- A snooze that has run out shows the alert as open again.
                  (CASE WHEN a.status = 'snoozed' AND a.snoozed_until <= now() THEN 'open' ELSE a.status END)
                      AS "status!: AlertStatus",
                  a.snoozed_until, a.account_id, a.principal,
                  host(a.source_ip) AS source_ip, a.country, a.resources, a.first_seen, a.last_seen, a.event_count,
                  a.mitre, a.session_key, a.details,
                  ARRAY(SELECT e.event_id FROM alert_evidence e WHERE e.account_id = a.account_id AND e.alert_id = a.alert_id
                        ORDER BY e.event_time, e.event_id LIMIT $7) AS "evidence!"
           FROM alerts a
           WHERE ($1::alert_status IS NULL
                  OR (CASE WHEN a.status = 'snoozed' AND a.snoozed_until <= now() THEN 'open' ELSE a.status END) = $1)
             AND ($2::text IS NULL OR a.policy_id = $2)
             AND ($3::text IS NULL OR a.alert_id = $3::text::uuid)
             AND ($4::timestamptz IS NULL OR (a.first_seen, a.alert_id) < ($4, $5::text::uuid))
           ORDER BY a.first_seen DESC, a.alert_id DESC
           LIMIT $6"#,
        filter.status as Option<AlertStatus>,
        filter.policy_id,
        filter.alert_id,
        after.map(|k| k.first_seen),
        after.map(|k| k.alert_id.as_str()),
        limit,
        EVIDENCE_IDS,
    )
    .fetch_all(pool)
    .await?;
    Ok(rows
        .into_iter()
        .map(|r| AlertView {
            incident_id: r.session_key.map(|key| incident_id(&r.account_id, &key)),
            id: r.id,
            policy_id: r.policy_id,
            title: r.title,
            severity: r.severity,
            status: r.status,
            snoozed_until: r.snoozed_until,
            account_id: r.account_id,
            principal: r.principal,
            source_ip: r.source_ip,
            country: r.country,
            resources: r.resources,
            first_seen: r.first_seen,
            last_seen: r.last_seen,
            event_count: r.event_count,
            evidence: r.evidence,
            mitre: r.mitre,
            details: r.details,
        })
        .collect())
}

/// One alert (its id checked with [`is_alert_id`](crate::model::is_alert_id) first).
pub async fn alert(pool: &PgPool, alert_id: &str) -> Result<Option<AlertView>, AlertStoreError> {
    let filter = AlertFilter { alert_id: Some(alert_id.to_string()), ..Default::default() };
    Ok(alerts(pool, &filter, None, 1).await?.into_iter().next())
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
    pub error_code: Option<String>,
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
                  c.user_agent, c.error_code, c.resource_ids
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

/// An incident's position in the newest-first order (its session as a hash: a session key
/// can hold an access key id, which a cursor must not show).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IncidentKey {
    pub first_seen: DateTime<Utc>,
    pub account_id: String,
    pub session_hash: String,
}

/// An incident of a page: the incident, its position, and how many alerts it has (its
/// timeline holds the first [`MAX_TIMELINE`]).
#[derive(Debug, Clone)]
pub struct IncidentEntry {
    pub incident: IncidentView,
    pub key: IncidentKey,
    pub alert_count: i64,
}

/// Incidents (alerts of at least two policies in one session, and the flows from its address
/// within a day of it), newest first, after `after`, at most `limit`. One query: sessions are
/// grouped, sessionless alerts joined to the first session of their address, incidents paged,
/// then the page's steps read in order.
pub async fn incidents(
    pool: &PgPool,
    after: Option<&IncidentKey>,
    limit: i64,
) -> Result<Vec<IncidentEntry>, AlertStoreError> {
    let rows = sqlx::query!(
        r#"WITH sessions AS (
               SELECT account_id, session_key, min(first_seen) AS first_seen, max(last_seen) AS last_seen,
                      (array_agg(host(source_ip) ORDER BY first_seen, policy_id, alert_id))[1] AS source_ip,
                      (array_agg(principal ORDER BY first_seen, policy_id, alert_id))[1] AS principal
               FROM alerts WHERE session_key IS NOT NULL GROUP BY account_id, session_key),
           members AS (
               SELECT a.account_id, a.session_key, a.alert_id, a.policy_id, a.severity, a.title, a.mitre,
                      a.first_seen, a.last_seen
               FROM alerts a WHERE a.session_key IS NOT NULL
               UNION ALL
               -- Alerts with no session (flows) join the first session of their address, if close in time.
               SELECT * FROM (
                   SELECT DISTINCT ON (a.account_id, a.alert_id)
                          s.account_id, s.session_key, a.alert_id, a.policy_id, a.severity, a.title, a.mitre,
                          a.first_seen, a.last_seen
                   FROM alerts a JOIN sessions s ON s.account_id = a.account_id AND s.source_ip = host(a.source_ip)
                   WHERE a.session_key IS NULL
                     AND a.first_seen >= s.first_seen - interval '1 day' AND a.first_seen <= s.last_seen + interval '1 day'
                   ORDER BY a.account_id, a.alert_id, s.first_seen, s.session_key) flows),
           incidents AS (
               SELECT m.account_id, m.session_key, md5(m.session_key) AS session_hash, min(m.first_seen) AS first_seen,
                      max(m.last_seen) AS last_seen, max(m.severity) AS severity,
                      count(*) AS alert_count
               FROM members m GROUP BY m.account_id, m.session_key
               -- One policy firing again and again is not an intrusion story.
               HAVING count(DISTINCT m.policy_id) > 1),
           page AS (
               SELECT i.*, s.source_ip, s.principal FROM incidents i JOIN sessions s USING (account_id, session_key)
               WHERE $1::timestamptz IS NULL
                  OR (i.first_seen < $1) OR (i.first_seen = $1 AND (i.account_id, i.session_hash) > ($2::text, $3::text))
               ORDER BY i.first_seen DESC, i.account_id, i.session_hash
               LIMIT $4)
           SELECT p.account_id AS "account_id!", p.session_key AS "session_key!", p.session_hash AS "session_hash!",
                  p.first_seen AS "first_seen!", p.last_seen AS "last_seen!", p.severity AS "severity!: Severity",
                  p.alert_count AS "alert_count!", p.source_ip, p.principal,
                  m.alert_id::text AS "step_alert_id!", m.first_seen AS "step_time!", m.policy_id AS "step_policy!",
                  m.severity AS "step_severity!: Severity", m.title AS "step_title!", m.mitre AS "step_mitre!"
           FROM page p
           JOIN LATERAL (SELECT * FROM members m WHERE m.account_id = p.account_id AND m.session_key = p.session_key
                         ORDER BY m.first_seen, m.policy_id, m.alert_id LIMIT $5) m ON true
           ORDER BY p.first_seen DESC, p.account_id, p.session_hash, m.first_seen, m.policy_id, m.alert_id"#,
        after.map(|k| k.first_seen),
        after.map(|k| k.account_id.as_str()),
        after.map(|k| k.session_hash.as_str()),
        limit,
        MAX_TIMELINE,
    )
    .fetch_all(pool)
    .await?;
    // Rows come incident by incident: one linear pass groups them.
    let mut entries: Vec<IncidentEntry> = Vec::new();
    for r in rows {
        let step = IncidentStep {
            time: r.step_time,
            alert_id: r.step_alert_id,
            policy_id: r.step_policy,
            severity: r.step_severity,
            title: r.step_title,
            mitre: r.step_mitre,
        };
        match entries.last_mut() {
            Some(entry) if entry.incident.account_id == r.account_id && entry.key.session_hash == r.session_hash => {
                entry.incident.timeline.push(step)
            }
            _ => entries.push(IncidentEntry {
                incident: IncidentView {
                    id: incident_id(&r.account_id, &r.session_key),
                    account_id: r.account_id.clone(),
                    principal: r.principal,
                    source_ip: r.source_ip,
                    first_seen: r.first_seen,
                    last_seen: r.last_seen,
                    severity: r.severity,
                    timeline: vec![step],
                },
                key: IncidentKey { first_seen: r.first_seen, account_id: r.account_id, session_hash: r.session_hash },
                alert_count: r.alert_count,
            }),
        }
    }
    Ok(entries)
}
