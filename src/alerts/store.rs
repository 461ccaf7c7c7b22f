//! Alerts in PostgreSQL: folding findings in, listing, and status changes with their history.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
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
    #[error("{0:?} is not an enabled dashboard user: an incident's owner must be one")]
    UnknownOwner(String),
    /// The detection lease (migration 0044) is not held by the owner a write was made under:
    /// another process took it over, and its pass decides.
    #[error("the detection lease is no longer held by {0}")]
    LeaseNotHeld(String),
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

/// How many evidence events a burst keeps at each end: the first and the last this many.
pub const BURST_SAMPLE: usize = 10;

/// Many events of one alert folded into one finding (a burst of failed logins, say): the true
/// count, the span, and a bounded sample of the events for the analyst to open. A finding carries
/// it in its `details` ([`Burst::attach`]); the store keeps the count on the alert and only the
/// sample as evidence rows.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Burst {
    pub count: i64,
    pub first: DateTime<Utc>,
    pub last: DateTime<Utc>,
    /// (event id, event time) of the first and the last [`BURST_SAMPLE`] events, in time order.
    pub sample: Vec<(String, DateTime<Utc>)>,
}

impl Burst {
    const KEY: &'static str = "burst";

    /// A burst about to receive its first event, at `first`.
    pub fn starting(first: DateTime<Utc>) -> Self {
        Self { count: 0, first, last: first, sample: Vec::new() }
    }

    /// The next event of the burst (in time order): counted, and kept while it is among the
    /// first or the last [`BURST_SAMPLE`].
    pub fn push(&mut self, event_id: String, time: DateTime<Utc>) {
        self.count += 1;
        self.last = time;
        if self.sample.len() == 2 * BURST_SAMPLE {
            self.sample.remove(BURST_SAMPLE);
        }
        self.sample.push((event_id, time));
    }

    /// Puts the burst into the finding, for [`record_in`] to fold as one.
    pub fn attach(&self, finding: &mut Finding) {
        let value = serde_json::to_value(self).unwrap_or_default();
        match &mut finding.details {
            serde_json::Value::Object(map) => {
                map.insert(Self::KEY.into(), value);
            }
            details => *details = serde_json::json!({ Self::KEY: value }),
        }
    }

    /// The burst a finding carries, if any, and its details without it.
    pub fn of(finding: &Finding) -> Option<(Burst, serde_json::Value)> {
        let burst = serde_json::from_value(finding.details.get(Self::KEY)?.clone()).ok()?;
        let mut details = finding.details.clone();
        if let serde_json::Value::Object(map) = &mut details {
            map.remove(Self::KEY);
        }
        Some((burst, details))
    }
}

/// At most this many resources on one alert (the first in sort order): an alert over thousands
/// of events must not rewrite a list of thousands on every fold.
pub const MAX_ALERT_RESOURCES: usize = 100;

/// Folds findings into alerts inside the caller's transaction. Idempotent: a finding whose
/// evidence is already recorded changes nothing, and the first-seen details come from the
/// earliest evidence whatever the order. The findings of one alert fold in one write (as if one
/// at a time: the same alert and the same changes); a finding with a [`Burst`] folds as a whole.
pub async fn record_in(tx: &mut sqlx::PgConnection, findings: &[Finding]) -> Result<RecordOutcome, AlertStoreError> {
    let mut outcome = RecordOutcome::default();
    let mut changes: Vec<(usize, AlertChange)> = Vec::new();
    for (alert_id, group) in by_alert(findings) {
        let mut plain = Vec::new();
        for (index, finding) in group {
            let Some((burst, details)) = Burst::of(finding) else {
                plain.push((index, finding));
                continue;
            };
            let upserted = upsert_burst(tx, finding, &alert_id, &burst, details).await?;
            outcome.new_alerts += u64::from(upserted.inserted);
            outcome.new_evidence += upserted.new_evidence;
            changes.extend(raised(&alert_id, &[(index, finding)], &upserted));
        }
        if plain.is_empty() {
            continue;
        }
        let upserted = upsert_alert(tx, &Folded::of(&plain), &alert_id).await?;
        outcome.new_alerts += u64::from(upserted.inserted);
        changes.extend(raised(&alert_id, &plain, &upserted));
        outcome.new_evidence += add_evidence(tx, &alert_id, &plain).await?;
    }
    // In the order of the findings, as one-at-a-time folding would give them.
    changes.sort_by_key(|(index, _)| *index);
    outcome.changes = changes.into_iter().map(|(_, change)| change).collect();
    Ok(outcome)
}

/// The findings per alert, with their positions, in the order alerts first appear.
fn by_alert(findings: &[Finding]) -> Vec<(String, Vec<(usize, &Finding)>)> {
    let mut groups: Vec<(String, Vec<(usize, &Finding)>)> = Vec::new();
    let mut position: std::collections::HashMap<String, usize> = Default::default();
    for (index, finding) in findings.iter().enumerate() {
        let alert_id = finding.alert_id();
        match position.get(&alert_id) {
            Some(&at) => groups[at].1.push((index, finding)),
            None => {
                position.insert(alert_id.clone(), groups.len());
                groups.push((alert_id, vec![(index, finding)]));
            }
        }
    }
    groups
}

/// What routes hear of for `group` folded into its alert, as if folded one at a time: a new
/// alert, then each rise in severity.
fn raised(alert_id: &str, group: &[(usize, &Finding)], upserted: &Upserted) -> Vec<(usize, AlertChange)> {
    let mut severity = if upserted.inserted { None } else { upserted.old_severity };
    let mut changes = Vec::new();
    for (index, finding) in group {
        let now = severity.map_or(finding.severity, |before| before.max(finding.severity));
        if severity.is_none_or(|before| now > before) {
            changes.push((
                *index,
                AlertChange::Raised {
                    account_id: finding.account_id.clone(),
                    alert_id: alert_id.to_string(),
                    policy_id: finding.policy_id.clone(),
                    severity: now,
                    mitre: finding.mitre.iter().map(|m| m.label()).collect(),
                    escalated_from: severity,
                },
            ));
        }
        severity = Some(now);
    }
    changes
}

/// What upserting an alert found.
struct Upserted {
    inserted: bool,
    /// The severity before, if the alert existed.
    old_severity: Option<Severity>,
    /// Evidence the upsert itself added (a burst's growth).
    new_evidence: u64,
}

/// The findings of one alert as one: what folding them in one at a time would leave.
struct Folded<'f> {
    /// The earliest evidence (the first of equals): the alert describes it.
    first: &'f Finding,
    severity: Severity,
    resources: Vec<String>,
    mitre: Vec<String>,
    last_seen: DateTime<Utc>,
    /// The session key when `first` is the alert's earliest evidence ...
    session_key: Option<String>,
    /// ... and what fills an empty one otherwise.
    any_session_key: Option<String>,
}

impl<'f> Folded<'f> {
    fn of(group: &[(usize, &'f Finding)]) -> Self {
        let earliest = |f: &Finding| (f.time, f.evidence_id.clone());
        let (at, first) = group
            .iter()
            .map(|(_, finding)| *finding)
            .enumerate()
            .min_by_key(|(_, finding)| earliest(finding))
            .expect("a group has findings");
        let session_key = |from: usize| group[from..].iter().find_map(|(_, f)| f.session_key.clone());
        let labels = |f: &Finding| f.mitre.iter().map(|m| m.label()).collect::<Vec<_>>();
        // One finding is stored as it is; more merge sorted, as the upsert merges them.
        let (resources, mitre) = match group {
            [(_, only)] => (only.resources.clone(), labels(only)),
            _ => {
                let mut resources: Vec<String> = group.iter().flat_map(|(_, f)| f.resources.clone()).collect();
                resources.sort();
                resources.dedup();
                resources.truncate(MAX_ALERT_RESOURCES);
                let mut mitre: Vec<String> = group.iter().flat_map(|(_, f)| labels(f)).collect();
                mitre.sort();
                mitre.dedup();
                (resources, mitre)
            }
        };
        Self {
            first,
            severity: group.iter().map(|(_, f)| f.severity).max().unwrap_or(first.severity),
            resources,
            mitre,
            last_seen: group.iter().map(|(_, f)| f.time).max().unwrap_or(first.time),
            session_key: first.session_key.clone().or_else(|| session_key(at + 1)),
            any_session_key: session_key(0),
        }
    }
}

/// Creates the alert of `folded`, or folds it into the alert.
async fn upsert_alert(
    tx: &mut sqlx::PgConnection,
    folded: &Folded<'_>,
    alert_id: &str,
) -> Result<Upserted, sqlx::Error> {
    let finding = folded.first;
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
               VALUES ($1, $2::text::uuid, $3, $4, $5, $6, $7, $8::text::inet, $9, $10, $11, $15, 0, $12, $13, $14)
               ON CONFLICT (account_id, policy_id, dedup_key) DO UPDATE SET
                   severity = greatest(alerts.severity, EXCLUDED.severity),
                   resources = ARRAY(SELECT DISTINCT r FROM unnest(alerts.resources || EXCLUDED.resources) AS r
                                     ORDER BY r LIMIT $16),
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
                                THEN EXCLUDED.session_key ELSE coalesce(alerts.session_key, $17) END,
                   details = CASE WHEN (EXCLUDED.first_seen, EXCLUDED.details->>'first_evidence') < (alerts.first_seen, alerts.details->>'first_evidence')
                                THEN EXCLUDED.details ELSE alerts.details END,
                   first_seen = least(alerts.first_seen, EXCLUDED.first_seen)
               RETURNING (xmax = 0) AS "inserted!", (SELECT severity FROM before) AS "old_severity?: Severity""#,
        finding.account_id,
        alert_id,
        finding.policy_id,
        finding.dedup_key(),
        finding.title,
        folded.severity as Severity,
        finding.principal,
        source_ip,
        finding.country,
        &folded.resources,
        finding.time,
        &folded.mitre,
        details,
        folded.session_key,
        folded.last_seen,
        MAX_ALERT_RESOURCES as i64,
        folded.any_session_key,
    )
    .fetch_one(&mut *tx)
    .await?;
    Ok(Upserted { inserted: row.inserted, old_severity: row.old_severity, new_evidence: 0 })
}

/// Folds a burst into its alert. A burst only grows as more of its events arrive, so the alert
/// keeps the largest count seen, the widest span and the description of the fullest burst,
/// whatever order evaluations come in; its evidence rows are the first and last
/// [`BURST_SAMPLE`] of all the samples folded in.
async fn upsert_burst(
    tx: &mut sqlx::PgConnection,
    finding: &Finding,
    alert_id: &str,
    burst: &Burst,
    details: serde_json::Value,
) -> Result<Upserted, sqlx::Error> {
    let source_ip = finding.source_ip.map(|ip| ip.to_string());
    let mitre: Vec<String> = finding.mitre.iter().map(|m| m.label()).collect();
    let row = sqlx::query!(
        r#"WITH before AS (SELECT severity, event_count FROM alerts
                           WHERE account_id = $1 AND policy_id = $3 AND dedup_key = $4)
               INSERT INTO alerts (account_id, alert_id, policy_id, dedup_key, title, severity, principal, source_ip,
                                   country, resources, first_seen, last_seen, event_count, mitre, details, session_key)
               VALUES ($1, $2::text::uuid, $3, $4, $5, $6, $7, $8::text::inet, $9, $10, $11, $12, $13, $14, $15, $16)
               ON CONFLICT (account_id, policy_id, dedup_key) DO UPDATE SET
                   severity = greatest(alerts.severity, EXCLUDED.severity),
                   resources = ARRAY(SELECT DISTINCT r FROM unnest(alerts.resources || EXCLUDED.resources) AS r
                                     ORDER BY r LIMIT $17),
                   mitre = ARRAY(SELECT DISTINCT m FROM unnest(alerts.mitre || EXCLUDED.mitre) AS m ORDER BY m),
                   title = CASE WHEN EXCLUDED.event_count >= alerts.event_count THEN EXCLUDED.title ELSE alerts.title END,
                   principal = CASE WHEN EXCLUDED.event_count >= alerts.event_count THEN EXCLUDED.principal ELSE alerts.principal END,
                   source_ip = CASE WHEN EXCLUDED.event_count >= alerts.event_count THEN EXCLUDED.source_ip ELSE alerts.source_ip END,
                   country = CASE WHEN EXCLUDED.event_count >= alerts.event_count THEN EXCLUDED.country ELSE alerts.country END,
                   session_key = CASE WHEN EXCLUDED.event_count >= alerts.event_count
                                      THEN coalesce(EXCLUDED.session_key, alerts.session_key) ELSE alerts.session_key END,
                   details = CASE WHEN EXCLUDED.event_count >= alerts.event_count THEN EXCLUDED.details ELSE alerts.details END,
                   event_count = greatest(alerts.event_count, EXCLUDED.event_count),
                   first_seen = least(alerts.first_seen, EXCLUDED.first_seen),
                   last_seen = greatest(alerts.last_seen, EXCLUDED.last_seen)
               RETURNING (xmax = 0) AS "inserted!", (SELECT severity FROM before) AS "old_severity?: Severity",
                         (SELECT event_count FROM before) AS "old_count?""#,
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
        burst.first,
        burst.last,
        burst.count,
        &mitre,
        details,
        finding.session_key,
        MAX_ALERT_RESOURCES as i64,
    )
    .fetch_one(&mut *tx)
    .await?;
    keep_sample(tx, &finding.account_id, alert_id, &burst.sample).await?;
    let new_evidence = (burst.count - row.old_count.unwrap_or(0)).max(0) as u64;
    Ok(Upserted { inserted: row.inserted, old_severity: row.old_severity, new_evidence })
}

/// Adds `sample` to the alert's evidence, then keeps only the first and last [`BURST_SAMPLE`].
async fn keep_sample(
    tx: &mut sqlx::PgConnection,
    account_id: &str,
    alert_id: &str,
    sample: &[(String, DateTime<Utc>)],
) -> Result<(), sqlx::Error> {
    let (ids, times): (Vec<String>, Vec<DateTime<Utc>>) = sample.iter().cloned().unzip();
    sqlx::query!(
        "INSERT INTO alert_evidence (account_id, alert_id, event_id, event_time)
         SELECT $1, $2::text::uuid, e.id, e.time FROM unnest($3::text[], $4::timestamptz[]) AS e(id, time)
         ON CONFLICT DO NOTHING",
        account_id,
        alert_id,
        &ids,
        &times,
    )
    .execute(&mut *tx)
    .await?;
    sqlx::query!(
        r#"DELETE FROM alert_evidence e
           USING (SELECT event_id, row_number() OVER (ORDER BY event_time, event_id) AS position,
                         count(*) OVER () AS total
                  FROM alert_evidence WHERE account_id = $1 AND alert_id = $2::text::uuid) ranked
           WHERE e.account_id = $1 AND e.alert_id = $2::text::uuid AND e.event_id = ranked.event_id
             AND ranked.position > $3 AND ranked.position <= ranked.total - $3"#,
        account_id,
        alert_id,
        BURST_SAMPLE as i64,
    )
    .execute(&mut *tx)
    .await?;
    Ok(())
}

/// Adds the group's evidence to its alert and counts what was not there already.
async fn add_evidence(
    tx: &mut sqlx::PgConnection,
    alert_id: &str,
    group: &[(usize, &Finding)],
) -> Result<u64, sqlx::Error> {
    let account_id = &group[0].1.account_id;
    let (ids, times): (Vec<String>, Vec<DateTime<Utc>>) =
        group.iter().map(|(_, f)| (f.evidence_id.clone(), f.time)).unzip();
    // The count grows by the rows added (counting them all again would be quadratic).
    let added = sqlx::query_scalar!(
        r#"WITH added AS (
               INSERT INTO alert_evidence (account_id, alert_id, event_id, event_time)
               SELECT $1, $2::text::uuid, e.id, e.time FROM unnest($3::text[], $4::timestamptz[]) AS e(id, time)
               ON CONFLICT DO NOTHING RETURNING 1)
           UPDATE alerts SET event_count = event_count + (SELECT count(*) FROM added)
           WHERE account_id = $1 AND alert_id = $2::text::uuid AND EXISTS (SELECT 1 FROM added)
           RETURNING (SELECT count(*) FROM added) AS "added!""#,
        account_id,
        alert_id,
        &ids,
        &times,
    )
    .fetch_optional(&mut *tx)
    .await?;
    Ok(added.unwrap_or(0) as u64)
}

/// Withdraws console-login evidence of `policies` in `[from, to]` that is not in `keep`
/// (alert id, event id), then removes alerts left with no evidence that nobody has triaged, and
/// recounts the rest. Returns how much evidence was withdrawn.
///
/// With `lease_owner`, only while that owner holds the live detection lease, checked in the same
/// transaction ([`AlertStoreError::LeaseNotHeld`] otherwise, nothing withdrawn): a pass that lost
/// the lease could withdraw what the new holder's pass just recorded.
pub async fn retract_login_evidence(
    pool: &PgPool,
    lease_owner: Option<&str>,
    policies: &[&str],
    from: DateTime<Utc>,
    to: DateTime<Utc>,
    keep: &[(String, String)],
) -> Result<u64, AlertStoreError> {
    let policies: Vec<String> = policies.iter().map(|p| p.to_string()).collect();
    let (keep_alerts, keep_events): (Vec<String>, Vec<String>) = keep.iter().cloned().unzip();
    let mut tx = crate::db::begin(pool).await?;
    if let Some(owner) = lease_owner {
        hold_lease(&mut tx, owner).await?;
    }
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

/// Checks that `owner` holds the live detection lease and keeps it held until the transaction
/// ends: `FOR KEY SHARE` blocks a takeover (which locks the row `FOR UPDATE`) but not the
/// holder's own renewals (plain updates of other columns). Rolls back when it is not held.
async fn hold_lease(tx: &mut sqlx::PgConnection, owner: &str) -> Result<(), AlertStoreError> {
    let held = sqlx::query_scalar!(
        "SELECT 1 FROM detection_lease WHERE owner = $1 AND expires_at >= clock_timestamp() FOR KEY SHARE",
        owner,
    )
    .fetch_optional(&mut *tx)
    .await?;
    match held {
        Some(_) => Ok(()),
        None => Err(AlertStoreError::LeaseNotHeld(owner.to_string())),
    }
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
                  a.mitre, a.incident_id, a.details,
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
            incident_id: r.incident_id,
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
            mitre: r.mitre.into_iter().map(super::pages::mitre_label).collect(),
            details: r.details,
        })
        .collect())
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
