//! Alerts in PostgreSQL: folding findings in, listing, and status changes with their history.

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::PgPool;

use crate::model::{AlertStatus, Finding, Severity};

#[derive(Debug, thiserror::Error)]
pub enum AlertStoreError {
    #[error("database error")]
    Db(#[from] sqlx::Error),
    #[error("no alert with id {0}")]
    NotFound(String),
    #[error("alert id {0:?} is not a UUID")]
    BadId(String),
    #[error("a snoozed alert needs --until (a time in the future)")]
    SnoozeWithoutUntil,
}

/// What folding a set of findings did.
#[derive(Debug, Default, Clone, PartialEq, Eq, Serialize)]
pub struct RecordOutcome {
    /// Findings whose evidence was not yet on its alert.
    pub new_evidence: u64,
    /// Alerts that did not exist before.
    pub new_alerts: u64,
    /// What routes must hear of, for the caller to queue in the same transaction.
    #[serde(skip)]
    pub changes: Vec<AlertChange>,
}

/// A change to an alert that notification routes care about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AlertChange {
    /// A new alert, or one whose severity rose (`escalated_from`).
    Raised {
        account_id: String,
        alert_id: String,
        policy_id: String,
        severity: Severity,
        mitre: Vec<String>,
        escalated_from: Option<Severity>,
    },
    /// An analyst (or posture) moved the alert to another status.
    StatusChanged { account_id: String, alert_id: String, status: AlertStatus, actor: String, reason: String },
}

/// Folds findings into alerts inside the caller's transaction. Idempotent: a finding whose
/// evidence is already recorded changes nothing, and the first-seen details come from the
/// earliest evidence whatever the order.
pub async fn record_in(tx: &mut sqlx::PgConnection, findings: &[Finding]) -> Result<RecordOutcome, AlertStoreError> {
    let mut outcome = RecordOutcome::default();
    for finding in findings {
        let alert_id = finding.alert_id();
        let mitre: Vec<String> = finding.mitre.iter().map(|m| m.label()).collect();
        let upserted = upsert_alert(tx, finding, &alert_id, &mitre).await?;
        let escalated_from = upserted.old_severity.filter(|old| *old < upserted.severity);
        if upserted.inserted || escalated_from.is_some() {
            outcome.new_alerts += u64::from(upserted.inserted);
            outcome.changes.push(AlertChange::Raised {
                account_id: finding.account_id.clone(),
                alert_id: alert_id.clone(),
                policy_id: finding.policy_id.clone(),
                severity: upserted.severity,
                mitre: mitre.clone(),
                escalated_from,
            });
        }
        if add_evidence(tx, finding, &alert_id).await? {
            outcome.new_evidence += 1;
        }
    }
    Ok(outcome)
}

/// What upserting an alert found and left.
struct Upserted {
    inserted: bool,
    /// The severity before, if the alert existed.
    old_severity: Option<Severity>,
    severity: Severity,
}

/// Creates the finding's alert, or folds the finding into it.
async fn upsert_alert(
    tx: &mut sqlx::PgConnection,
    finding: &Finding,
    alert_id: &str,
    mitre: &[String],
) -> Result<Upserted, sqlx::Error> {
    let source_ip = finding.source_ip.map(|ip| ip.to_string());
    let mut details = finding.details.clone();
    if let serde_json::Value::Object(map) = &mut details {
        map.insert("first_evidence".into(), finding.evidence_id.clone().into());
    } else {
        details = serde_json::json!({ "first_evidence": finding.evidence_id });
    }
    // `before` reads the row as it was before this statement: an escalation is seen.
    let row = sqlx::query!(
        r#"WITH before AS (SELECT severity FROM alerts WHERE account_id = $1 AND policy_id = $3 AND dedup_key = $4)
               INSERT INTO alerts (account_id, alert_id, policy_id, dedup_key, title, severity, principal, source_ip,
                                   country, resources, first_seen, last_seen, event_count, mitre, details, session_key)
               VALUES ($1, $2::text::uuid, $3, $4, $5, $6, $7, $8::text::inet, $9, $10, $11, $11, 0, $12, $13, $14)
               ON CONFLICT (account_id, policy_id, dedup_key) DO UPDATE SET
                   severity = greatest(alerts.severity, EXCLUDED.severity),
                   resources = ARRAY(SELECT DISTINCT r FROM unnest(alerts.resources || EXCLUDED.resources) AS r ORDER BY r),
                   mitre = ARRAY(SELECT DISTINCT m FROM unnest(alerts.mitre || EXCLUDED.mitre) AS m ORDER BY m),
                   last_seen = greatest(alerts.last_seen, EXCLUDED.last_seen),
                   -- The alert describes its earliest evidence, whatever order evidence arrives in.
                   title = CASE WHEN (EXCLUDED.first_seen, EXCLUDED.details->>'first_evidence') < (alerts.first_seen, alerts.details->>'first_evidence')
                                THEN EXCLUDED.title ELSE alerts.title END,
                   principal = CASE WHEN (EXCLUDED.first_seen, EXCLUDED.details->>'first_evidence') < (alerts.first_seen, alerts.details->>'first_evidence')
                                THEN EXCLUDED.principal ELSE alerts.principal END,
                   source_ip = CASE WHEN (EXCLUDED.first_seen, EXCLUDED.details->>'first_evidence') < (alerts.first_seen, alerts.details->>'first_evidence')
                                THEN EXCLUDED.source_ip ELSE alerts.source_ip END,
                   country = CASE WHEN (EXCLUDED.first_seen, EXCLUDED.details->>'first_evidence') < (alerts.first_seen, alerts.details->>'first_evidence')
                                THEN EXCLUDED.country ELSE alerts.country END,
                   session_key = CASE WHEN (EXCLUDED.first_seen, EXCLUDED.details->>'first_evidence') < (alerts.first_seen, alerts.details->>'first_evidence')
                                THEN EXCLUDED.session_key ELSE coalesce(alerts.session_key, EXCLUDED.session_key) END,
                   details = CASE WHEN (EXCLUDED.first_seen, EXCLUDED.details->>'first_evidence') < (alerts.first_seen, alerts.details->>'first_evidence')
                                THEN EXCLUDED.details ELSE alerts.details END,
                   first_seen = least(alerts.first_seen, EXCLUDED.first_seen)
               RETURNING (xmax = 0) AS "inserted!", (SELECT severity FROM before) AS "old_severity?: Severity",
                         severity AS "severity!: Severity""#,
        finding.account_id,
        alert_id,
        finding.policy_id,
        finding.dedup_key(),
        finding.title,
        finding.severity as Severity,
        finding.principal,
        source_ip,
        finding.country,
        &finding.resources,
        finding.time,
        mitre,
        details,
        finding.session_key,
    )
    .fetch_one(&mut *tx)
    .await?;
    Ok(Upserted { inserted: row.inserted, old_severity: row.old_severity, severity: row.severity })
}

/// Adds the finding's evidence to its alert and recounts it; false if it was there already.
async fn add_evidence(tx: &mut sqlx::PgConnection, finding: &Finding, alert_id: &str) -> Result<bool, sqlx::Error> {
    let evidence = sqlx::query!(
        "INSERT INTO alert_evidence (account_id, alert_id, event_id, event_time) VALUES ($1, $2::text::uuid, $3, $4)
             ON CONFLICT DO NOTHING",
        finding.account_id,
        alert_id,
        finding.evidence_id,
        finding.time,
    )
    .execute(&mut *tx)
    .await?;
    if evidence.rows_affected() == 0 {
        return Ok(false);
    }
    sqlx::query!(
        "UPDATE alerts SET event_count = (SELECT count(*) FROM alert_evidence e
                                                   WHERE e.account_id = $1 AND e.alert_id = $2::text::uuid)
                 WHERE account_id = $1 AND alert_id = $2::text::uuid",
        finding.account_id,
        alert_id,
    )
    .execute(&mut *tx)
    .await?;
    Ok(true)
}

/// Withdraws console-login evidence of `policies` in `[from, to]` that is not in `keep`
/// (alert id, event id), then removes alerts left with no evidence that nobody has triaged, and
/// recounts the rest. Returns how much evidence was withdrawn.
pub async fn retract_login_evidence(
    pool: &PgPool,
    policies: &[&str],
    from: DateTime<Utc>,
    to: DateTime<Utc>,
    keep: &[(String, String)],
) -> Result<u64, AlertStoreError> {
    let policies: Vec<String> = policies.iter().map(|p| p.to_string()).collect();
    let (keep_alerts, keep_events): (Vec<String>, Vec<String>) = keep.iter().cloned().unzip();
    let mut tx = pool.begin().await?;
    let withdrawn = sqlx::query!(
        r#"DELETE FROM alert_evidence e
           USING alerts a, cloudtrail_events c
           WHERE a.account_id = e.account_id AND a.alert_id = e.alert_id AND a.policy_id = ANY($1)
             AND c.account_id = e.account_id AND c.event_id = e.event_id AND c.event_time = e.event_time
             AND c.event_name = 'ConsoleLogin'
             AND e.event_time >= $2 AND e.event_time <= $3
             AND NOT EXISTS (SELECT 1 FROM unnest($4::text[], $5::text[]) AS k(alert_id, event_id)
                             WHERE k.alert_id::uuid = e.alert_id AND k.event_id = e.event_id)
           RETURNING e.account_id, e.alert_id::text AS "alert_id!""#,
        &policies,
        from,
        to,
        &keep_alerts,
        &keep_events,
    )
    .fetch_all(&mut *tx)
    .await?;
    for row in &withdrawn {
        sqlx::query!(
            r#"DELETE FROM alerts a
               WHERE a.account_id = $1 AND a.alert_id = $2::text::uuid AND a.status = 'open'
                 AND NOT EXISTS (SELECT 1 FROM alert_evidence e WHERE e.account_id = a.account_id AND e.alert_id = a.alert_id)
                 AND NOT EXISTS (SELECT 1 FROM alert_status_changes s WHERE s.account_id = a.account_id AND s.alert_id = a.alert_id)"#,
            row.account_id,
            row.alert_id,
        )
        .execute(&mut *tx)
        .await?;
        sqlx::query!(
            r#"UPDATE alerts a SET
                   event_count = (SELECT count(*) FROM alert_evidence e WHERE e.account_id = a.account_id AND e.alert_id = a.alert_id),
                   first_seen = coalesce((SELECT min(e.event_time) FROM alert_evidence e
                                          WHERE e.account_id = a.account_id AND e.alert_id = a.alert_id), a.first_seen),
                   last_seen = coalesce((SELECT max(e.event_time) FROM alert_evidence e
                                         WHERE e.account_id = a.account_id AND e.alert_id = a.alert_id), a.last_seen)
               WHERE a.account_id = $1 AND a.alert_id = $2::text::uuid"#,
            row.account_id,
            row.alert_id,
        )
        .execute(&mut *tx)
        .await?;
    }
    tx.commit().await?;
    if !withdrawn.is_empty() {
        tracing::info!(evidence = withdrawn.len(), "login evidence withdrawn after re-evaluation");
    }
    Ok(withdrawn.len() as u64)
}

/// An alert as the CLI and API show it.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct AlertView {
    pub id: String,
    pub policy_id: String,
    pub title: String,
    pub severity: Severity,
    pub status: AlertStatus,
    pub snoozed_until: Option<DateTime<Utc>>,
    pub account_id: String,
    pub principal: Option<String>,
    pub source_ip: Option<String>,
    pub country: Option<String>,
    pub resources: Vec<String>,
    pub first_seen: DateTime<Utc>,
    pub last_seen: DateTime<Utc>,
    pub event_count: i64,
    pub evidence: Vec<String>,
    pub mitre: Vec<String>,
    pub incident_id: Option<String>,
    pub details: serde_json::Value,
}

#[derive(Debug, Default, Clone)]
pub struct AlertFilter {
    pub status: Option<AlertStatus>,
    pub policy_id: Option<String>,
    /// One alert, by id (a UUID; check with [`is_alert_id`](crate::model::is_alert_id) first).
    pub alert_id: Option<String>,
}

pub async fn list(pool: &PgPool, filter: &AlertFilter) -> Result<Vec<AlertView>, AlertStoreError> {
    let rows = sqlx::query!(
        r#"SELECT a.alert_id::text AS "id!", a.policy_id, a.title, a.severity AS "severity: Severity",
                  -- A snooze that has run out shows the alert as open again.
                  (CASE WHEN a.status = 'snoozed' AND a.snoozed_until <= now() THEN 'open' ELSE a.status END)
                      AS "status!: AlertStatus",
                  a.snoozed_until, a.account_id, a.principal,
                  host(a.source_ip) AS source_ip, a.country, a.resources, a.first_seen, a.last_seen, a.event_count,
                  a.mitre, a.session_key, a.details,
                  ARRAY(SELECT e.event_id FROM alert_evidence e WHERE e.account_id = a.account_id AND e.alert_id = a.alert_id
                        ORDER BY e.event_time, e.event_id) AS "evidence!"
           FROM alerts a
           WHERE ($1::alert_status IS NULL
                  OR (CASE WHEN a.status = 'snoozed' AND a.snoozed_until <= now() THEN 'open' ELSE a.status END) = $1)
             AND ($2::text IS NULL OR a.policy_id = $2)
             AND ($3::text IS NULL OR a.alert_id = $3::text::uuid)
           ORDER BY a.first_seen, a.policy_id, a.alert_id"#,
        filter.status as Option<AlertStatus>,
        filter.policy_id,
        filter.alert_id,
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

/// Alerts sharing a console or role session form one incident; its id derives from the session.
pub fn incident_id(account_id: &str, session_key: &str) -> String {
    let hash = xxhash_rust::xxh3::xxh3_64(format!("{account_id}\u{1f}{session_key}").as_bytes());
    format!("inc-{hash:016x}")
}

/// Checks a status change before it is applied: a well-formed id, and a future time for a
/// snooze. Returns the snooze time to store (none unless snoozed).
pub fn check_status_change(
    alert_id: &str,
    status: AlertStatus,
    snoozed_until: Option<DateTime<Utc>>,
) -> Result<Option<DateTime<Utc>>, AlertStoreError> {
    if !crate::model::is_alert_id(alert_id) {
        return Err(AlertStoreError::BadId(alert_id.to_string()));
    }
    if status == AlertStatus::Snoozed && snoozed_until.is_none_or(|t| t <= Utc::now()) {
        return Err(AlertStoreError::SnoozeWithoutUntil);
    }
    Ok(if status == AlertStatus::Snoozed { snoozed_until } else { None })
}

/// What a status change did: the status before, and the change routes must hear of (none when
/// the status stayed the same).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatusOutcome {
    pub old: AlertStatus,
    pub change: Option<AlertChange>,
}

/// Changes an alert's status inside the caller's transaction and records who did it, when and
/// why; the id must already be checked ([`check_status_change`]).
pub async fn set_status_in(
    tx: &mut sqlx::PgConnection,
    alert_id: &str,
    status: AlertStatus,
    snoozed_until: Option<DateTime<Utc>>,
    actor: &str,
    reason: &str,
) -> Result<StatusOutcome, AlertStoreError> {
    let old = sqlx::query!(
        r#"SELECT account_id, status AS "status: AlertStatus" FROM alerts WHERE alert_id = $1::text::uuid FOR UPDATE"#,
        alert_id
    )
    .fetch_optional(&mut *tx)
    .await?
    .ok_or_else(|| AlertStoreError::NotFound(alert_id.to_string()))?;
    sqlx::query!(
        "UPDATE alerts SET status = $3, snoozed_until = $4 WHERE account_id = $1 AND alert_id = $2::text::uuid",
        old.account_id,
        alert_id,
        status as AlertStatus,
        snoozed_until,
    )
    .execute(&mut *tx)
    .await?;
    sqlx::query!(
        "INSERT INTO alert_status_changes (account_id, alert_id, old_status, new_status, snoozed_until, actor, reason)
         VALUES ($1, $2::text::uuid, $3, $4, $5, $6, $7)",
        old.account_id,
        alert_id,
        old.status as AlertStatus,
        status as AlertStatus,
        snoozed_until,
        actor,
        reason,
    )
    .execute(&mut *tx)
    .await?;
    let change = (old.status != status).then(|| AlertChange::StatusChanged {
        account_id: old.account_id,
        alert_id: alert_id.to_string(),
        status,
        actor: actor.to_string(),
        reason: reason.to_string(),
    });
    Ok(StatusOutcome { old: old.status, change })
}

/// Alerts of one intrusion: those raised in one console or role session, plus alerts on the
/// session's source address (flow exfiltration, say) within a day of it.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct IncidentView {
    pub id: String,
    pub account_id: String,
    pub principal: Option<String>,
    pub source_ip: Option<String>,
    pub first_seen: DateTime<Utc>,
    pub last_seen: DateTime<Utc>,
    pub severity: Severity,
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
}

/// Incidents with alerts of at least two policies, newest first.
pub async fn incidents(pool: &PgPool) -> Result<Vec<IncidentView>, AlertStoreError> {
    let alerts = list(pool, &AlertFilter::default()).await?;
    let mut incidents: Vec<IncidentView> = Vec::new();
    let step = |a: &AlertView| IncidentStep {
        time: a.first_seen,
        alert_id: a.id.clone(),
        policy_id: a.policy_id.clone(),
        severity: a.severity,
        title: a.title.clone(),
        mitre: a.mitre.clone(),
    };
    for alert in alerts.iter().filter(|a| a.incident_id.is_some()) {
        let id = alert.incident_id.clone().unwrap_or_default();
        match incidents.iter_mut().find(|i| i.id == id) {
            Some(incident) => incident.timeline.push(step(alert)),
            None => incidents.push(IncidentView {
                id,
                account_id: alert.account_id.clone(),
                principal: alert.principal.clone(),
                source_ip: alert.source_ip.clone(),
                first_seen: alert.first_seen,
                last_seen: alert.last_seen,
                severity: alert.severity,
                timeline: vec![step(alert)],
            }),
        }
    }
    // Alerts with no session (flows) join the incident of their address, if close in time.
    for alert in alerts.iter().filter(|a| a.incident_id.is_none() && a.source_ip.is_some()) {
        let near = |i: &&mut IncidentView| {
            i.account_id == alert.account_id
                && i.source_ip == alert.source_ip
                && alert.first_seen >= i.first_seen - chrono::Duration::days(1)
                && alert.first_seen <= i.last_seen + chrono::Duration::days(1)
        };
        if let Some(incident) = incidents.iter_mut().find(near) {
            incident.timeline.push(step(alert));
        }
    }
    // One policy firing again and again is not an intrusion story.
    incidents.retain(|i| i.timeline.iter().any(|s| s.policy_id != i.timeline[0].policy_id));
    for incident in &mut incidents {
        incident.timeline.sort_by(|a, b| a.time.cmp(&b.time).then(a.policy_id.cmp(&b.policy_id)));
        incident.first_seen = incident.timeline.iter().map(|s| s.time).min().unwrap_or(incident.first_seen);
        incident.last_seen =
            incident.timeline.iter().map(|s| s.time).max().unwrap_or(incident.last_seen).max(incident.last_seen);
        incident.severity = incident.timeline.iter().map(|s| s.severity).max().unwrap_or(incident.severity);
    }
    incidents.sort_by_key(|incident| std::cmp::Reverse(incident.first_seen));
    Ok(incidents)
}
