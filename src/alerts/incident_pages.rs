//! Incidents a page at a time, one incident with its history, and the analyst's changes to one
//! (status, owner). The engine ([`incidents`](super::incidents)) decides what belongs together;
//! this reads it.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sqlx::PgPool;

use super::incidents::{self, IncidentStatus};
use super::pages::mitre_label;
use super::store::AlertStoreError;
use crate::model::{Severity, tactic_name};

/// Alerts in the timeline of one incident, at most (the first, in time order).
pub const MAX_TIMELINE: i64 = 500;

/// Alerts of one intrusion, linked by the engine.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct IncidentView {
    pub id: String,
    /// The account of its first alert.
    pub account_id: String,
    pub status: IncidentStatus,
    /// The analyst who owns it.
    pub owner: Option<String>,
    /// Its first alert's principal and address (the others are on its alerts).
    pub principal: Option<String>,
    pub source_ip: Option<String>,
    pub first_seen: DateTime<Utc>,
    pub last_seen: DateTime<Utc>,
    /// The worst severity of its alerts.
    pub severity: Severity,
    /// The ATT&CK tactics of its alerts in the order the intrusion reached them.
    pub tactics: Vec<TacticStep>,
    /// The alerts in the order they started: the story.
    pub timeline: Vec<IncidentStep>,
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct IncidentStep {
    pub time: DateTime<Utc>,
    pub alert_id: String,
    pub policy_id: String,
    pub severity: Severity,
    pub title: String,
    pub mitre: Vec<String>,
    /// Why the alert joined the incident ("same session", "address 198.51.100.7", ...).
    pub link_reason: Option<String>,
}

/// One tactic of the chain: its ATT&CK id and name, and when the intrusion first reached it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct TacticStep {
    pub id: String,
    pub name: String,
    pub first_seen: DateTime<Utc>,
}

/// ATT&CK Enterprise tactics in kill-chain order: how tactics first reached at the same time
/// are ordered.
const KILL_CHAIN: [&str; 14] = [
    "TA0043", "TA0042", "TA0001", "TA0002", "TA0003", "TA0004", "TA0005", "TA0006", "TA0007", "TA0008", "TA0009",
    "TA0011", "TA0010", "TA0040",
];

/// The tactics of a timeline, each once, in the order first reached (ties in kill-chain order).
pub fn tactic_chain(timeline: &[IncidentStep]) -> Vec<TacticStep> {
    let mut chain: Vec<TacticStep> = Vec::new();
    for step in timeline {
        for label in &step.mitre {
            let id = label.split('/').next().unwrap_or_default();
            match chain.iter_mut().find(|t| t.id == id) {
                Some(seen) => seen.first_seen = seen.first_seen.min(step.time),
                None if id.starts_with("TA") => {
                    let name = tactic_name(id).unwrap_or(id).to_string();
                    chain.push(TacticStep { id: id.to_string(), name, first_seen: step.time });
                }
                None => {}
            }
        }
    }
    let rank = |id: &str| KILL_CHAIN.iter().position(|t| *t == id).unwrap_or(KILL_CHAIN.len());
    chain.sort_by_key(|t| (t.first_seen, rank(&t.id)));
    chain
}

/// An incident's position in the newest-first order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IncidentKey {
    pub first_seen: DateTime<Utc>,
    pub incident_id: String,
}

/// An incident of a page: the incident, its position, and how many alerts it has.
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
    /// Only this incident (whatever its size).
    pub id: Option<String>,
    /// Only incidents not resolved or dismissed.
    pub open_only: bool,
}

/// The incident an id names now: itself, or the one it was merged into.
pub async fn resolve_id(pool: &PgPool, id: &str) -> Result<Option<String>, AlertStoreError> {
    incidents::link_pending(pool).await?;
    Ok(sqlx::query_scalar!(
        "SELECT coalesce(m.incident_id, i.incident_id) AS \"id!\"
         FROM incidents i LEFT JOIN incidents m ON m.incident_id = i.merged_into
         WHERE i.incident_id = $1",
        id
    )
    .fetch_optional(pool)
    .await?)
}

/// Incidents newest first, after `after`, at most `limit`. A list shows incidents with alerts
/// of at least two policies of activity, or with a high or critical alert of activity: one
/// detector that sees a whole intrusion (instance credentials used outside) is one, while one
/// low or medium policy firing again and again, or posture findings (misconfigurations, not an
/// intrusion: the posture page lists those; Security Hub's control findings, which carry a
/// compliance status, are posture too, however many fail on one resource), are not an
/// intrusion story. Asked by id, any incident. Alerts
/// not linked yet are linked first.
///
/// Whether an incident is listed is stored on it (`incidents.listed`, kept by triggers on
/// `alerts`: migration 0049), so a page reads the listed incidents through an index of the page
/// order and sums only their alerts (by `alerts_incident_idx`): a page costs its own incidents,
/// however few of all qualify.
pub async fn incidents(
    pool: &PgPool,
    filter: &IncidentFilter,
    after: Option<&IncidentKey>,
    limit: i64,
) -> Result<Vec<IncidentEntry>, AlertStoreError> {
    incidents::link_pending(pool).await?;
    let rows = sqlx::query_as!(
        IncidentRow,
        r#"WITH candidates AS (
               -- One branch runs, by the parameters: the listed incidents through the index of
               -- the page order (all, or the open ones), or the one incident asked for.
               (SELECT i.incident_id FROM incidents i
                WHERE $5::text IS NULL AND NOT $6 AND i.listed AND i.merged_into IS NULL
                  AND (i.first_seen, i.incident_id) < (coalesce($1::timestamptz, 'infinity'), coalesce($2::text, ''))
                ORDER BY i.first_seen DESC, i.incident_id DESC
                LIMIT $3)
               UNION ALL
               (SELECT i.incident_id FROM incidents i
                WHERE $5::text IS NULL AND $6 AND i.listed AND i.merged_into IS NULL
                  AND i.status IN ('open', 'investigating', 'contained')
                  AND (i.first_seen, i.incident_id) < (coalesce($1::timestamptz, 'infinity'), coalesce($2::text, ''))
                ORDER BY i.first_seen DESC, i.incident_id DESC
                LIMIT $3)
               UNION ALL
               SELECT i.incident_id FROM incidents i
               WHERE i.incident_id = $5 AND i.merged_into IS NULL
                 AND (NOT $6 OR i.status IN ('open', 'investigating', 'contained'))
                 AND (i.first_seen, i.incident_id) < (coalesce($1::timestamptz, 'infinity'), coalesce($2::text, ''))),
           page AS (
               SELECT i.incident_id, i.account_id, i.status, i.owner, i.first_seen, i.last_seen, s.alert_count,
                      s.severity, s.open_count, s.source_ip, s.principal
               FROM candidates c
               JOIN incidents i ON i.incident_id = c.incident_id
               CROSS JOIN LATERAL (
                   SELECT count(*) AS alert_count, max(a.severity) AS severity,
                          count(*) FILTER (WHERE a.status = 'open'
                                           OR (a.status = 'snoozed' AND a.snoozed_until <= now())) AS open_count,
                          (array_agg(host(a.source_ip) ORDER BY a.first_seen, a.policy_id, a.alert_id)
                              FILTER (WHERE a.source_ip IS NOT NULL))[1] AS source_ip,
                          (array_agg(a.principal ORDER BY a.first_seen, a.policy_id, a.alert_id)
                              FILTER (WHERE a.principal IS NOT NULL))[1] AS principal
                   FROM alerts a
                   WHERE a.incident_id = i.incident_id) s
               WHERE s.alert_count > 0)
           SELECT p.incident_id AS "incident_id!", p.account_id AS "account_id!", p.status AS "status!",
                  p.owner, p.first_seen AS "first_seen!", p.last_seen AS "last_seen!",
                  p.severity AS "severity!: Severity", p.alert_count AS "alert_count!", p.open_count AS "open_count!",
                  p.source_ip, p.principal,
                  m.alert_id::text AS "step_alert_id!", m.first_seen AS "step_time!", m.policy_id AS "step_policy!",
                  m.severity AS "step_severity!: Severity", m.title AS "step_title!", m.mitre AS "step_mitre!",
                  m.link_reason AS step_reason
           FROM page p
           JOIN LATERAL (SELECT * FROM alerts m WHERE m.incident_id = p.incident_id
                         ORDER BY m.first_seen, m.policy_id, m.alert_id LIMIT $4) m ON true
           ORDER BY p.first_seen DESC, p.incident_id DESC, m.first_seen, m.policy_id, m.alert_id"#,
        after.map(|k| k.first_seen),
        after.map(|k| k.incident_id.as_str()),
        limit,
        MAX_TIMELINE,
        filter.id.as_deref(),
        filter.open_only,
    )
    .fetch_all(pool)
    .await?;
    Ok(grouped(rows))
}

/// A row of the incidents query: an incident and one of its steps.
struct IncidentRow {
    incident_id: String,
    account_id: String,
    status: String,
    owner: Option<String>,
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
    step_reason: Option<String>,
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
            link_reason: r.step_reason,
        };
        match entries.last_mut() {
            Some(entry) if entry.incident.id == r.incident_id => entry.incident.timeline.push(step),
            _ => entries.push(IncidentEntry {
                incident: IncidentView {
                    id: r.incident_id.clone(),
                    account_id: r.account_id,
                    status: IncidentStatus::parse(&r.status).unwrap_or(IncidentStatus::Open),
                    owner: r.owner,
                    principal: r.principal,
                    source_ip: r.source_ip,
                    first_seen: r.first_seen,
                    last_seen: r.last_seen,
                    severity: r.severity,
                    tactics: Vec::new(),
                    timeline: vec![step],
                },
                key: IncidentKey { first_seen: r.first_seen, incident_id: r.incident_id },
                alert_count: r.alert_count,
                open_count: r.open_count,
            }),
        }
    }
    for entry in &mut entries {
        entry.incident.tactics = tactic_chain(&entry.incident.timeline);
    }
    entries
}

/// One change of an incident: who, when, which field, from what to what, and why.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct IncidentChangeView {
    pub changed_at: DateTime<Utc>,
    pub actor: String,
    pub field: String,
    pub old_value: Option<String>,
    pub new_value: Option<String>,
    pub reason: String,
}

/// Changes kept per incident answer, at most (the newest).
pub const MAX_CHANGES: i64 = 200;

/// The incident's history, oldest first (the newest [`MAX_CHANGES`]).
pub async fn history(pool: &PgPool, incident_id: &str) -> Result<Vec<IncidentChangeView>, AlertStoreError> {
    let mut changes = sqlx::query_as!(
        IncidentChangeView,
        "SELECT changed_at, actor, field, old_value, new_value, reason FROM incident_changes
         WHERE incident_id = $1 ORDER BY change_id DESC LIMIT $2",
        incident_id,
        MAX_CHANGES,
    )
    .fetch_all(pool)
    .await?;
    changes.reverse();
    Ok(changes)
}

/// An analyst's change to an incident.
#[derive(Debug, Clone, Default)]
pub struct IncidentUpdate {
    pub status: Option<IncidentStatus>,
    /// `Some(None)` clears the owner.
    pub owner: Option<Option<String>>,
}

/// Applies an analyst's change (status and/or owner, an enabled dashboard user) with who and
/// why, in one transaction; the id must name an incident that is not merged. Returns false when there is no such incident.
pub async fn update(
    pool: &PgPool,
    incident_id: &str,
    update: &IncidentUpdate,
    actor: &str,
    reason: &str,
) -> Result<bool, AlertStoreError> {
    if let Some(Some(name)) = &update.owner {
        let known = sqlx::query_scalar!("SELECT username FROM users WHERE username = $1 AND disabled_at IS NULL", name)
            .fetch_optional(pool)
            .await?;
        if known.is_none() {
            return Err(AlertStoreError::UnknownOwner(name.clone()));
        }
    }
    let mut tx = crate::db::begin(pool).await?;
    let Some(old) = sqlx::query!(
        "SELECT status, owner FROM incidents WHERE incident_id = $1 AND merged_into IS NULL FOR UPDATE",
        incident_id
    )
    .fetch_optional(&mut *tx)
    .await?
    else {
        return Ok(false);
    };
    if let Some(status) = update.status.filter(|s| s.as_str() != old.status) {
        sqlx::query!("UPDATE incidents SET status = $2 WHERE incident_id = $1", incident_id, status.as_str())
            .execute(&mut *tx)
            .await?;
        let new = Some(status.as_str());
        incidents::record_change(&mut tx, incident_id, actor, "status", Some(&old.status), new, reason).await?;
    }
    if let Some(owner) = update.owner.as_ref().filter(|o| **o != old.owner) {
        sqlx::query!("UPDATE incidents SET owner = $2 WHERE incident_id = $1", incident_id, owner.as_deref())
            .execute(&mut *tx)
            .await?;
        let (old_owner, new_owner) = (old.owner.as_deref(), owner.as_deref());
        incidents::record_change(&mut tx, incident_id, actor, "owner", old_owner, new_owner, reason).await?;
    }
    tx.commit().await?;
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn step(minute: u32, mitre: &[&str]) -> IncidentStep {
        IncidentStep {
            time: format!("2026-03-01T10:{minute:02}:00Z").parse().unwrap(),
            alert_id: format!("a{minute}"),
            policy_id: "p".into(),
            severity: Severity::High,
            title: "t".into(),
            mitre: mitre.iter().map(|m| m.to_string()).collect(),
            link_reason: None,
        }
    }

    #[test]
    fn tactics_chain_in_the_order_first_reached() {
        let timeline = [
            step(1, &["TA0001/T1078.004"]),
            step(2, &["TA0004/T1098", "TA0003/T1098"]),
            step(3, &["TA0001/T1078"]),
            step(4, &["T1560"]),
            step(5, &["TA0010/T1537"]),
        ];
        let chain: Vec<(String, String, u32)> = tactic_chain(&timeline)
            .into_iter()
            .map(|t| (t.id, t.name, chrono::Timelike::minute(&t.first_seen)))
            .collect();
        let expected = [
            ("TA0001", "Initial Access", 1),
            ("TA0003", "Persistence", 2),
            ("TA0004", "Privilege Escalation", 2),
            ("TA0010", "Exfiltration", 5),
        ];
        assert_eq!(chain, expected.map(|(a, b, c)| (a.to_string(), b.to_string(), c)));
    }
}
