//! Posture findings: a finding opens when a check fails on a resource, stays open (its messages
//! and last-seen time updated) while it keeps failing, resolves when a later evaluation passes or
//! the resource is gone, and reopens if it fails again; each step is kept in its history.
//! Suppressions (with a reason and an expiry) take a finding out of the score and the alerts
//! without hiding it. New findings at or above a severity raise alerts, routed like any other.

use std::collections::{HashMap, HashSet};

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::PgPool;

use super::checks::CheckMeta;
use super::evaluate::AccountEvaluation;
use crate::model::{AlertStatus, Finding, Mitre, Severity};

#[derive(Debug, thiserror::Error)]
pub enum FindingsError {
    #[error("database error")]
    Db(#[from] sqlx::Error),
    #[error("raising alerts")]
    Alerts(#[from] crate::alerts::store::AlertStoreError),
    #[error("{0}")]
    Invalid(String),
    #[error("no {0}")]
    NotFound(String),
}

/// What recording one evaluation did.
#[derive(Debug, Default, Clone, Copy, Serialize, PartialEq, Eq)]
pub struct RecordOutcome {
    pub evaluated: u64,
    pub passed: u64,
    pub failed: u64,
    pub opened: u64,
    pub reopened: u64,
    pub resolved: u64,
    pub alerts: u64,
}

/// Stores the checks' metadata for the API and dashboard.
pub async fn save_checks(pool: &PgPool, checks: &[CheckMeta]) -> Result<(), sqlx::Error> {
    let mut tx = pool.begin().await?;
    for check in checks {
        sqlx::query!(
            "INSERT INTO posture_checks (id, title, description, section, severity, resource_type, remediation, frameworks, mitre, updated_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, now())
             ON CONFLICT (id) DO UPDATE SET title = EXCLUDED.title, description = EXCLUDED.description, section = EXCLUDED.section,
                 severity = EXCLUDED.severity, resource_type = EXCLUDED.resource_type, remediation = EXCLUDED.remediation,
                 frameworks = EXCLUDED.frameworks, mitre = EXCLUDED.mitre, updated_at = now()",
            check.id,
            check.title,
            check.description,
            check.section,
            check.severity as Severity,
            check.resource_type,
            check.remediation,
            serde_json::to_value(&check.frameworks).expect("frameworks serialise"),
            &check.mitre,
        )
        .execute(&mut *tx)
        .await?;
    }
    tx.commit().await?;
    Ok(())
}

/// Applies one account's evaluation to its findings, records the score, and raises alerts for
/// new findings at or above `alert_at` that no suppression covers.
pub async fn record(
    pool: &PgPool,
    evaluation: &AccountEvaluation,
    checks: &[CheckMeta],
    now: DateTime<Utc>,
    alert_at: Option<Severity>,
) -> Result<RecordOutcome, FindingsError> {
    let meta: HashMap<&str, &CheckMeta> = checks.iter().map(|c| (c.id.as_str(), c)).collect();
    let account = evaluation.account_id.as_str();
    let mut outcome = RecordOutcome::default();
    let mut tx = pool.begin().await?;
    // One evaluation of an account at a time (worker, API, CLI): rows not yet inserted cannot
    // be locked with FOR UPDATE.
    sqlx::query!("SELECT pg_advisory_xact_lock(hashtext('skywarden posture ' || $1))", account)
        .execute(&mut *tx)
        .await?;
    let existing = sqlx::query!(
        "SELECT id, check_id, resource_type, resource_id, status, messages FROM posture_findings WHERE account_id = $1 FOR UPDATE",
        account
    )
    .fetch_all(&mut *tx)
    .await?;
    let mut by_key: HashMap<(String, String, String), (i64, String, Vec<String>)> = existing
        .into_iter()
        .map(|r| ((r.check_id, r.resource_type, r.resource_id), (r.id, r.status, r.messages)))
        .collect();
    let suppressions = active_suppressions(&mut tx, account).await?;
    // Changes newer than those the previous evaluation saw can explain a new failure; at the
    // first evaluation every failure is the baseline, with no cause.
    let seen_changes = sqlx::query!(
        "SELECT max_change_id FROM posture_evaluations WHERE account_id = $1 ORDER BY evaluated_at DESC LIMIT 1",
        account
    )
    .fetch_optional(&mut *tx)
    .await?;
    let newest_change = sqlx::query_scalar!("SELECT max(change_id) FROM config_changes WHERE account_id = $1", account)
        .fetch_one(&mut *tx)
        .await?;
    let causes_after: Option<i64> = seen_changes.map(|row| row.max_change_id.unwrap_or(0));
    let mut newly_failing: Vec<(i64, &str, &str, &str, &[String])> = Vec::new();
    let mut scores: HashMap<String, (i32, i32, i32)> = HashMap::new();

    for result in &evaluation.results {
        outcome.evaluated += 1;
        let Some(check) = meta.get(result.check_id.as_str()) else { continue };
        let key = (result.check_id.clone(), result.resource_type.clone(), result.resource_id.clone());
        let section = scores.entry(check.section.clone()).or_default();
        let suppressed = suppressions.iter().any(|s| s.covers(&result.check_id, &result.resource_id));
        if result.messages.is_empty() {
            outcome.passed += 1;
            section.0 += 1;
            if let Some((id, status, _)) = by_key.remove(&key)
                && status == "open"
            {
                resolve(&mut tx, id, now).await?;
                outcome.resolved += 1;
            }
            continue;
        }
        outcome.failed += 1;
        if suppressed {
            section.2 += 1;
        } else {
            section.1 += 1;
        }
        match by_key.remove(&key) {
            None => {
                let change_id = cause_of(&mut tx, check, result, causes_after).await?;
                let id = sqlx::query_scalar!(
                    "INSERT INTO posture_findings (account_id, check_id, resource_type, resource_id, region, severity, status,
                                                   messages, first_failed_at, last_seen_at, change_id)
                     VALUES ($1, $2, $3, $4, $5, $6, 'open', $7, $8, $8, $9) RETURNING id",
                    account,
                    result.check_id,
                    result.resource_type,
                    result.resource_id,
                    result.region,
                    check.severity as Severity,
                    &result.messages,
                    now,
                    change_id,
                )
                .fetch_one(&mut *tx)
                .await?;
                history(&mut tx, id, "opened", &result.messages, now).await?;
                outcome.opened += 1;
                if !suppressed {
                    newly_failing.push((
                        id,
                        &result.check_id,
                        &result.resource_id,
                        &result.resource_type,
                        &result.messages,
                    ));
                }
            }
            Some((id, status, _)) if status == "resolved" => {
                let change_id = cause_of(&mut tx, check, result, causes_after).await?;
                sqlx::query!(
                    "UPDATE posture_findings SET status = 'open', messages = $2, first_failed_at = $3, last_seen_at = $3,
                            resolved_at = NULL, change_id = $4, alert_id = NULL, severity = $5
                     WHERE id = $1",
                    id,
                    &result.messages,
                    now,
                    change_id,
                    check.severity as Severity,
                )
                .execute(&mut *tx)
                .await?;
                history(&mut tx, id, "reopened", &result.messages, now).await?;
                outcome.reopened += 1;
                if !suppressed {
                    newly_failing.push((
                        id,
                        &result.check_id,
                        &result.resource_id,
                        &result.resource_type,
                        &result.messages,
                    ));
                }
            }
            Some((id, _, messages)) => {
                sqlx::query!(
                    "UPDATE posture_findings SET messages = $2, last_seen_at = $3, severity = $4 WHERE id = $1",
                    id,
                    &result.messages,
                    now,
                    check.severity as Severity,
                )
                .execute(&mut *tx)
                .await?;
                if messages != result.messages {
                    history(&mut tx, id, "changed", &result.messages, now).await?;
                }
            }
        }
    }
    // Open findings of checks that ran, on resources that were not evaluated: the resource is
    // gone (or no longer of the check's type). A check that errored on a resource keeps it.
    let ran: HashSet<&str> = evaluation.checks_run.iter().map(String::as_str).collect();
    let errored: HashSet<&(String, String, String)> = evaluation.not_evaluated.iter().collect();
    for (key, (id, status, _)) in by_key {
        if status == "open" && ran.contains(key.0.as_str()) && !errored.contains(&key) {
            resolve(&mut tx, id, now).await?;
            outcome.resolved += 1;
        }
    }
    sqlx::query!(
        "INSERT INTO posture_evaluations (account_id, evaluated_at, max_change_id) VALUES ($1, $2, $3)
         ON CONFLICT (account_id, evaluated_at) DO UPDATE SET max_change_id = EXCLUDED.max_change_id",
        account,
        now,
        newest_change,
    )
    .execute(&mut *tx)
    .await?;
    for (section, (passed, failed, suppressed)) in &scores {
        sqlx::query!(
            "INSERT INTO posture_scores (evaluated_at, account_id, section, passed, failed, suppressed) VALUES ($1, $2, $3, $4, $5, $6)
             ON CONFLICT (account_id, section, evaluated_at) DO UPDATE SET passed = EXCLUDED.passed, failed = EXCLUDED.failed,
                 suppressed = EXCLUDED.suppressed",
            now,
            account,
            section,
            passed,
            failed,
            suppressed,
        )
        .execute(&mut *tx)
        .await?;
    }
    // Alerts go through the alert store (which queues their notifications) in this same
    // transaction: a finding is never left open without the alert it called for.
    if let Some(threshold) = alert_at {
        let mut findings = Vec::new();
        let mut ids = Vec::new();
        for (id, check_id, resource_id, resource_type, messages) in newly_failing {
            let Some(check) = meta.get(check_id) else { continue };
            if check.severity < threshold {
                continue;
            }
            let finding = Finding {
                policy_id: format!("posture:{check_id}"),
                title: format!("{} ({resource_id})", check.title),
                severity: check.severity,
                account_id: account.to_string(),
                // One alert per failing period: a reopened finding has a new start, so a new alert.
                subject: format!("{resource_type}/{resource_id}@{}", now.timestamp()),
                dedup_window: chrono::Duration::days(3650),
                principal: None,
                source_ip: None,
                country: None,
                resources: vec![resource_id.to_string()],
                evidence_id: format!("posture-finding-{id}@{}", now.timestamp()),
                time: now,
                mitre: check.mitre.iter().map(|tactic| Mitre::new(tactic, "")).collect(),
                session_key: None,
                details: serde_json::json!({
                    "posture_finding": id,
                    "check": check_id,
                    "resource_type": resource_type,
                    "messages": messages,
                    "remediation": check.remediation,
                    "frameworks": check.frameworks,
                }),
            };
            ids.push((id, finding.alert_id()));
            findings.push(finding);
        }
        if !findings.is_empty() {
            let recorded = crate::alerts::store::record_in(&mut tx, &findings).await?;
            crate::notify::outbox::enqueue(&mut tx, &recorded.changes).await?;
            outcome.alerts = recorded.new_alerts;
            for (id, alert_id) in ids {
                sqlx::query!("UPDATE posture_findings SET alert_id = $2::text::uuid WHERE id = $1", id, alert_id)
                    .execute(&mut *tx)
                    .await?;
            }
        }
    }
    tx.commit().await?;
    Ok(outcome)
}

/// Resolves a finding, and the alert it raised if nobody closed it yet (so PagerDuty resolves
/// and tickets get their comment).
async fn resolve(tx: &mut sqlx::PgConnection, id: i64, now: DateTime<Utc>) -> Result<(), FindingsError> {
    let alert = sqlx::query_scalar!(
        "UPDATE posture_findings SET status = 'resolved', resolved_at = $2, last_seen_at = $2 WHERE id = $1
         RETURNING alert_id::text",
        id,
        now
    )
    .fetch_one(&mut *tx)
    .await?;
    history(tx, id, "resolved", &[], now).await?;
    if let Some(alert_id) = alert {
        let open = sqlx::query_scalar!(
            "SELECT count(*) AS \"n!\" FROM alerts WHERE alert_id = $1::text::uuid AND status IN ('open', 'acknowledged')",
            alert_id
        )
        .fetch_one(&mut *tx)
        .await?;
        if open > 0 {
            let resolved = crate::alerts::store::set_status_in(
                tx,
                &alert_id,
                AlertStatus::Resolved,
                None,
                "posture",
                "the check passes again",
            )
            .await?;
            crate::notify::outbox::enqueue(tx, resolved.change.as_slice()).await?;
        }
    }
    Ok(())
}

async fn history(
    tx: &mut sqlx::PgConnection,
    id: i64,
    event: &str,
    messages: &[String],
    at: DateTime<Utc>,
) -> Result<(), sqlx::Error> {
    sqlx::query!(
        "INSERT INTO posture_finding_events (finding_id, at, event, messages) VALUES ($1, $2, $3, $4)",
        id,
        at,
        event,
        messages
    )
    .execute(&mut *tx)
    .await?;
    Ok(())
}

/// What made `result` fail: the resource's latest change, or for an account-level check the
/// latest change of the types it depends on, since the previous evaluation.
async fn cause_of(
    tx: &mut sqlx::PgConnection,
    check: &CheckMeta,
    result: &super::evaluate::CheckResult,
    after: Option<i64>,
) -> Result<Option<i64>, sqlx::Error> {
    if result.resource_type != super::evaluate::ACCOUNT_TYPE {
        return latest_change(tx, &result.account_id, &result.resource_type, &result.resource_id, after).await;
    }
    let Some(after) = after else { return Ok(None) };
    sqlx::query_scalar!(
        "SELECT change_id FROM config_changes WHERE account_id = $1 AND resource_type = ANY($2) AND change_id > $3
         ORDER BY change_id DESC LIMIT 1",
        result.account_id,
        &check.depends_on,
        after,
    )
    .fetch_optional(&mut *tx)
    .await
}

/// The resource's most recent configuration change since the previous evaluation (`after`):
/// what broke the check. `None` after: the first evaluation, a baseline without causes.
async fn latest_change(
    tx: &mut sqlx::PgConnection,
    account: &str,
    resource_type: &str,
    resource_id: &str,
    after: Option<i64>,
) -> Result<Option<i64>, sqlx::Error> {
    let Some(after) = after else { return Ok(None) };
    sqlx::query_scalar!(
        "SELECT change_id FROM config_changes WHERE account_id = $1 AND resource_type = $2 AND resource_id = $3
           AND change_id > $4
         ORDER BY version DESC LIMIT 1",
        account,
        resource_type,
        resource_id,
        after,
    )
    .fetch_optional(&mut *tx)
    .await
}

/// An accepted failure: a check on one resource, or on every resource of an account (or of all
/// accounts), until it expires.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Suppression {
    pub id: i64,
    pub check_id: String,
    pub account_id: Option<String>,
    pub resource_id: Option<String>,
    pub reason: String,
    pub expires_at: Option<DateTime<Utc>>,
    pub created_by: String,
    pub created_at: DateTime<Utc>,
}

impl Suppression {
    fn covers(&self, check_id: &str, resource_id: &str) -> bool {
        self.check_id == check_id && self.resource_id.as_deref().is_none_or(|r| r == resource_id)
    }
}

async fn active_suppressions(tx: &mut sqlx::PgConnection, account: &str) -> Result<Vec<Suppression>, sqlx::Error> {
    sqlx::query_as!(
        Suppression,
        "SELECT id, check_id, account_id, resource_id, reason, expires_at, created_by, created_at FROM posture_suppressions
         WHERE (account_id IS NULL OR account_id = $1) AND (expires_at IS NULL OR expires_at > now())",
        account
    )
    .fetch_all(&mut *tx)
    .await
}

pub async fn suppress(
    pool: &PgPool,
    check_id: &str,
    account_id: Option<&str>,
    resource_id: Option<&str>,
    reason: &str,
    expires_at: Option<DateTime<Utc>>,
    actor: &str,
) -> Result<Suppression, FindingsError> {
    if reason.trim().is_empty() {
        return Err(FindingsError::Invalid("a suppression needs a reason".into()));
    }
    if expires_at.is_some_and(|t| t <= Utc::now()) {
        return Err(FindingsError::Invalid("the expiry must be in the future".into()));
    }
    let known = sqlx::query_scalar!("SELECT count(*) AS \"n!\" FROM posture_checks WHERE id = $1", check_id)
        .fetch_one(pool)
        .await?;
    if known == 0 {
        return Err(FindingsError::NotFound(format!("posture check {check_id}")));
    }
    Ok(sqlx::query_as!(
        Suppression,
        "INSERT INTO posture_suppressions (check_id, account_id, resource_id, reason, expires_at, created_by)
         VALUES ($1, $2, $3, $4, $5, $6)
         RETURNING id, check_id, account_id, resource_id, reason, expires_at, created_by, created_at",
        check_id,
        account_id,
        resource_id,
        reason.trim(),
        expires_at,
        actor,
    )
    .fetch_one(pool)
    .await?)
}

pub async fn unsuppress(pool: &PgPool, id: i64) -> Result<bool, sqlx::Error> {
    Ok(sqlx::query!("DELETE FROM posture_suppressions WHERE id = $1", id).execute(pool).await?.rows_affected() == 1)
}

pub async fn suppressions(pool: &PgPool) -> Result<Vec<Suppression>, sqlx::Error> {
    sqlx::query_as!(
        Suppression,
        "SELECT id, check_id, account_id, resource_id, reason, expires_at, created_by, created_at FROM posture_suppressions
         ORDER BY id"
    )
    .fetch_all(pool)
    .await
}

/// A finding as the CLI, API and dashboard show it.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct FindingView {
    pub id: i64,
    pub account_id: String,
    pub check_id: String,
    pub title: String,
    pub section: String,
    pub severity: Severity,
    /// open or resolved.
    pub status: String,
    pub suppressed: bool,
    pub suppression: Option<String>,
    pub resource_type: String,
    pub resource_id: String,
    pub region: String,
    pub messages: Vec<String>,
    pub first_failed_at: DateTime<Utc>,
    pub last_seen_at: DateTime<Utc>,
    pub resolved_at: Option<DateTime<Utc>>,
    pub remediation: String,
    #[schema(value_type = Object)]
    pub frameworks: serde_json::Value,
    pub mitre: Vec<String>,
    /// The configuration change that made the check fail: when, by which event, who, from where.
    #[schema(value_type = Option<Object>)]
    pub cause: Option<serde_json::Value>,
    /// The alert this finding raised.
    pub alert_id: Option<String>,
    /// Event alerts on the same resource around the change: the same story seen at once.
    pub related_alerts: Vec<String>,
}

#[derive(Debug, Default, Clone)]
pub struct FindingFilter {
    pub status: Option<String>,
    pub account_id: Option<String>,
    pub check_id: Option<String>,
    pub section: Option<String>,
    pub resource_id: Option<String>,
    pub id: Option<i64>,
}

pub async fn list(pool: &PgPool, filter: &FindingFilter) -> Result<Vec<FindingView>, sqlx::Error> {
    let rows = sqlx::query!(
        r#"SELECT f.id, f.account_id, f.check_id, coalesce(c.title, f.check_id) AS "title!", coalesce(c.section, '') AS "section!",
                  f.severity AS "severity: Severity", f.status, f.resource_type, f.resource_id, f.region, f.messages,
                  f.first_failed_at, f.last_seen_at, f.resolved_at, coalesce(c.remediation, '') AS "remediation!",
                  coalesce(c.frameworks, '{}') AS "frameworks!", coalesce(c.mitre, '{}') AS "mitre!", f.alert_id::text AS alert_id,
                  (SELECT s.reason FROM posture_suppressions s
                   WHERE s.check_id = f.check_id AND (s.account_id IS NULL OR s.account_id = f.account_id)
                     AND (s.resource_id IS NULL OR s.resource_id = f.resource_id) AND (s.expires_at IS NULL OR s.expires_at > now())
                   ORDER BY s.id LIMIT 1) AS suppression,
                  (SELECT jsonb_build_object('change_id', ch.change_id, 'detected_at', ch.detected_at, 'kind', ch.kind,
                                             'event_time', ch.event_time, 'event_id', ch.event_id, 'event_name', ch.event_name,
                                             'principal_arn', ch.principal_arn, 'source_ip', ch.source_ip, 'diff', ch.diff)
                   FROM config_changes ch WHERE ch.change_id = f.change_id) AS cause,
                  ARRAY(SELECT a.alert_id::text FROM alerts a
                        WHERE a.account_id = f.account_id AND a.policy_id NOT LIKE 'posture:%'
                          AND (f.resource_id = ANY(a.resources)
                               OR (SELECT ch.resource_id FROM config_changes ch WHERE ch.change_id = f.change_id) = ANY(a.resources))
                          AND a.first_seen >= coalesce((SELECT coalesce(ch.event_time, ch.detected_at) FROM config_changes ch
                                                        WHERE ch.change_id = f.change_id), f.first_failed_at) - interval '1 day'
                          AND a.first_seen <= f.first_failed_at + interval '1 hour'
                        ORDER BY a.first_seen) AS "related_alerts!"
           FROM posture_findings f LEFT JOIN posture_checks c ON c.id = f.check_id
           WHERE ($1::text IS NULL OR f.status = $1)
             AND ($2::text IS NULL OR f.account_id = $2)
             AND ($3::text IS NULL OR f.check_id = $3)
             AND ($4::text IS NULL OR c.section = $4)
             AND ($5::text IS NULL OR f.resource_id = $5)
             AND ($6::bigint IS NULL OR f.id = $6)
           ORDER BY f.severity DESC, f.check_id, f.resource_id"#,
        filter.status,
        filter.account_id,
        filter.check_id,
        filter.section,
        filter.resource_id,
        filter.id,
    )
    .fetch_all(pool)
    .await?;
    Ok(rows
        .into_iter()
        .map(|r| FindingView {
            id: r.id,
            account_id: r.account_id,
            check_id: r.check_id,
            title: r.title,
            section: r.section,
            severity: r.severity,
            status: r.status,
            suppressed: r.suppression.is_some(),
            suppression: r.suppression,
            resource_type: r.resource_type,
            resource_id: r.resource_id,
            region: r.region,
            messages: r.messages,
            first_failed_at: r.first_failed_at,
            last_seen_at: r.last_seen_at,
            resolved_at: r.resolved_at,
            remediation: r.remediation,
            frameworks: r.frameworks,
            mitre: r.mitre,
            cause: r.cause,
            alert_id: r.alert_id,
            related_alerts: r.related_alerts,
        })
        .collect())
}

/// One finding's history: opened, changed, resolved, reopened.
pub async fn history_of(pool: &PgPool, id: i64) -> Result<Vec<serde_json::Value>, sqlx::Error> {
    let rows = sqlx::query!(
        "SELECT at, event, messages FROM posture_finding_events WHERE finding_id = $1 ORDER BY at, event",
        id
    )
    .fetch_all(pool)
    .await?;
    Ok(rows.into_iter().map(|r| serde_json::json!({"at": r.at, "event": r.event, "messages": r.messages})).collect())
}

/// The compliance score per account and section at the latest evaluation, and the trend.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct ScoreView {
    pub account_id: String,
    pub section: String,
    pub evaluated_at: DateTime<Utc>,
    pub passed: i32,
    pub failed: i32,
    pub suppressed: i32,
    /// Passed (and suppressed) over evaluated, in percent.
    pub score: f64,
}

pub async fn scores(pool: &PgPool, account_id: Option<&str>, latest_only: bool) -> Result<Vec<ScoreView>, sqlx::Error> {
    let rows = sqlx::query!(
        r#"SELECT s.account_id, s.section, s.evaluated_at, s.passed, s.failed, s.suppressed
           FROM posture_scores s
           WHERE ($1::text IS NULL OR s.account_id = $1)
             AND (NOT $2 OR s.evaluated_at = (SELECT max(l.evaluated_at) FROM posture_scores l
                                             WHERE l.account_id = s.account_id AND l.section = s.section))
           ORDER BY s.account_id, s.section, s.evaluated_at"#,
        account_id,
        latest_only,
    )
    .fetch_all(pool)
    .await?;
    Ok(rows
        .into_iter()
        .map(|r| {
            let total = r.passed + r.failed + r.suppressed;
            ScoreView {
                score: if total == 0 { 100.0 } else { f64::from(r.passed + r.suppressed) * 100.0 / f64::from(total) },
                account_id: r.account_id,
                section: r.section,
                evaluated_at: r.evaluated_at,
                passed: r.passed,
                failed: r.failed,
                suppressed: r.suppressed,
            }
        })
        .collect())
}

/// Loaded checks as stored by the last run.
pub async fn stored_checks(pool: &PgPool) -> Result<Vec<serde_json::Value>, sqlx::Error> {
    let rows = sqlx::query!(
        r#"SELECT id, title, description, section, severity AS "severity: Severity", resource_type, remediation, frameworks, mitre
           FROM posture_checks ORDER BY section, id"#
    )
    .fetch_all(pool)
    .await?;
    Ok(rows
        .into_iter()
        .map(|r| {
            serde_json::json!({"id": r.id, "title": r.title, "description": r.description, "section": r.section,
                               "severity": r.severity, "resource_type": r.resource_type, "remediation": r.remediation,
                               "frameworks": r.frameworks, "mitre": r.mitre})
        })
        .collect())
}
