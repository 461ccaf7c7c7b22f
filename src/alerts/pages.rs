//! Alerts, their evidence and incidents a page at a time, for the API: keyset pages (the sort key
//! of the previous page's last row, never an offset), each alert with a bounded sample of its
//! evidence ids, and incidents grouped in SQL in one pass over the alerts.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sqlx::PgPool;

use super::store::{AlertStoreError, AlertView, IncidentStep, IncidentView, incident_id};
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
    session_key: Option<String>,
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
                incident_id: self.session_key.map(|key| incident_id(&self.account_id, &key)),
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
                  a.mitre, a.session_key, a.details, 0 AS "rank!",
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
                  k.last_seen AS "last_seen!", k.event_count AS "event_count!", k.mitre AS "mitre!", k.session_key,
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
    /// Alerts still open (a snooze that ran out counts as open).
    pub open_count: i64,
}

/// Which incidents a page holds.
#[derive(Debug, Clone, Default)]
pub struct IncidentFilter {
    /// Only the incident of this (account, session key).
    pub session: Option<(String, String)>,
    /// Only incidents with at least one open alert.
    pub open_only: bool,
}

/// The (account, session key) of the incident with this id, if there is one.
pub async fn incident_session(pool: &PgPool, id: &str) -> Result<Option<(String, String)>, AlertStoreError> {
    // The id is a hash of the session: hash the sessions there are (one row each, from an index).
    let sessions = sqlx::query!(
        r#"SELECT DISTINCT account_id, session_key AS "session_key!" FROM alerts WHERE session_key IS NOT NULL"#
    )
    .fetch_all(pool)
    .await?;
    Ok(sessions
        .into_iter()
        .find(|s| incident_id(&s.account_id, &s.session_key) == id)
        .map(|s| (s.account_id, s.session_key)))
}

/// Incidents (alerts of at least two policies in one session, and the flows from its address
/// within a day of it), newest first, after `after`, at most `limit`. One query: sessions are
/// grouped, sessionless alerts joined to the first session of their address, incidents paged,
/// then the page's steps read in order.
pub async fn incidents(
    pool: &PgPool,
    filter: &IncidentFilter,
    after: Option<&IncidentKey>,
    limit: i64,
) -> Result<Vec<IncidentEntry>, AlertStoreError> {
    let rows = sqlx::query_as!(
        IncidentRow,
        r#"WITH sessions AS (
               SELECT account_id, session_key, min(first_seen) AS first_seen, max(last_seen) AS last_seen,
                      (array_agg(host(source_ip) ORDER BY first_seen, policy_id, alert_id))[1] AS source_ip,
                      (array_agg(principal ORDER BY first_seen, policy_id, alert_id))[1] AS principal
               FROM alerts WHERE session_key IS NOT NULL GROUP BY account_id, session_key),
           members AS (
               SELECT a.account_id, a.session_key, a.alert_id, a.policy_id, a.severity, a.title, a.mitre,
                      a.first_seen, a.last_seen, a.status, a.snoozed_until
               FROM alerts a WHERE a.session_key IS NOT NULL
               UNION ALL
               -- Alerts with no session (flows) join the first session of their address, if close in time.
               SELECT * FROM (
                   SELECT DISTINCT ON (a.account_id, a.alert_id)
                          s.account_id, s.session_key, a.alert_id, a.policy_id, a.severity, a.title, a.mitre,
                          a.first_seen, a.last_seen, a.status, a.snoozed_until
                   FROM alerts a JOIN sessions s ON s.account_id = a.account_id AND s.source_ip = host(a.source_ip)
                   WHERE a.session_key IS NULL
                     AND a.first_seen >= s.first_seen - interval '1 day' AND a.first_seen <= s.last_seen + interval '1 day'
                   ORDER BY a.account_id, a.alert_id, s.first_seen, s.session_key) flows),
           incidents AS (
               SELECT m.account_id, m.session_key, md5(m.session_key) AS session_hash, min(m.first_seen) AS first_seen,
                      max(m.last_seen) AS last_seen, max(m.severity) AS severity,
                      count(*) AS alert_count,
                      count(*) FILTER (WHERE m.status = 'open' OR (m.status = 'snoozed' AND m.snoozed_until <= now()))
                          AS open_count
               FROM members m
               WHERE $6::text IS NULL OR (m.account_id = $6 AND m.session_key = $7)
               GROUP BY m.account_id, m.session_key
               -- One policy firing again and again is not an intrusion story.
               HAVING count(DISTINCT m.policy_id) > 1),
           page AS (
               SELECT i.*, s.source_ip, s.principal FROM incidents i JOIN sessions s USING (account_id, session_key)
               WHERE ($1::timestamptz IS NULL
                      OR (i.first_seen < $1) OR (i.first_seen = $1 AND (i.account_id, i.session_hash) > ($2::text, $3::text)))
                 AND (NOT $8 OR i.open_count > 0)
               ORDER BY i.first_seen DESC, i.account_id, i.session_hash
               LIMIT $4)
           SELECT p.account_id AS "account_id!", p.session_key AS "session_key!", p.session_hash AS "session_hash!",
                  p.first_seen AS "first_seen!", p.last_seen AS "last_seen!", p.severity AS "severity!: Severity",
                  p.alert_count AS "alert_count!", p.open_count AS "open_count!", p.source_ip, p.principal,
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
        filter.session.as_ref().map(|(account, _)| account.as_str()),
        filter.session.as_ref().map(|(_, session)| session.as_str()),
        filter.open_only,
    )
    .fetch_all(pool)
    .await?;
    Ok(grouped(rows))
}

/// A row of the incidents query: an incident and one of its steps.
struct IncidentRow {
    account_id: String,
    session_key: String,
    session_hash: String,
    first_seen: DateTime<Utc>,
    last_seen: DateTime<Utc>,
    severity: Severity,
    alert_count: i64,
    open_count: i64,
    source_ip: Option<String>,
    principal: Option<String>,
    step_alert_id: String,
    step_time: DateTime<Utc>,
    step_policy: String,
    step_severity: Severity,
    step_title: String,
    step_mitre: Vec<String>,
}

/// Rows come incident by incident: one linear pass groups them.
fn grouped(rows: Vec<IncidentRow>) -> Vec<IncidentEntry> {
    let mut entries: Vec<IncidentEntry> = Vec::new();
    for r in rows {
        let step = IncidentStep {
            time: r.step_time,
            alert_id: r.step_alert_id,
            policy_id: r.step_policy,
            severity: r.step_severity,
            title: r.step_title,
            mitre: r.step_mitre.into_iter().map(mitre_label).collect(),
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
                open_count: r.open_count,
            }),
        }
    }
    entries
}
