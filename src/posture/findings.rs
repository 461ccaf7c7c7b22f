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
use super::evaluate::{AccountEvaluation, CheckResult};
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
    let mut tx = crate::db::begin(pool).await?;
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

/// A finding as it stood before this evaluation.
struct Current {
    id: i64,
    status: String,
    messages: Vec<String>,
}

/// What a finding is about: (check, resource type, resource id).
type FindingKey = (String, String, String);

/// What one evaluation result does to the finding of its check on its resource.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Transition {
    /// Passes, with no open finding.
    StillPassing,
    /// Passes: its open finding resolves.
    Resolve(i64),
    /// Fails, with no finding yet.
    Open,
    /// Fails again after its finding resolved.
    Reopen(i64),
    /// Keeps failing: the finding stays open, its messages and last-seen time updated.
    StillFailing { id: i64, messages_changed: bool },
}

impl Transition {
    fn of(result: &CheckResult, current: Option<Current>) -> Transition {
        match (result.messages.is_empty(), current) {
            (true, Some(finding)) if finding.status == "open" => Transition::Resolve(finding.id),
            (true, _) => Transition::StillPassing,
            (false, None) => Transition::Open,
            (false, Some(finding)) if finding.status == "resolved" => Transition::Reopen(finding.id),
            (false, Some(finding)) => {
                Transition::StillFailing { id: finding.id, messages_changed: finding.messages != result.messages }
            }
        }
    }

    fn passes(self) -> bool {
        matches!(self, Transition::StillPassing | Transition::Resolve(_))
    }
}

/// One evaluation result of a known check, and what it does.
struct Step<'a> {
    check: &'a CheckMeta,
    result: &'a CheckResult,
    /// A suppression covers it: out of the score's failures and of the alerts.
    suppressed: bool,
    transition: Transition,
}

/// A finding that opened or reopened in this evaluation, with no suppression: it may raise an
/// alert.
struct NewFailure<'a> {
    id: i64,
    check: &'a CheckMeta,
    result: &'a CheckResult,
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
    let account = evaluation.account_id.as_str();
    let mut tx = crate::db::begin(pool).await?;
    lock_account(&mut tx, account).await?;
    let mut current = current_findings(&mut tx, account).await?;
    let suppressions = active_suppressions(&mut tx, account).await?;
    let (causes_after, newest_change) = change_window(&mut tx, account).await?;

    let steps = classify(evaluation, checks, &suppressions, &mut current);
    let gone = gone_findings(evaluation, current);
    let mut outcome = count(evaluation, &steps, &gone);
    let mut new_failures = Vec::new();
    for step in &steps {
        if let Some(id) = apply(&mut tx, account, step, causes_after, now).await?
            && !step.suppressed
        {
            new_failures.push(NewFailure { id, check: step.check, result: step.result });
        }
    }
    for &id in &gone {
        resolve(&mut tx, id, now).await?;
    }
    save_scores(&mut tx, account, now, newest_change, &section_scores(&steps)).await?;
    if let Some(threshold) = alert_at {
        outcome.alerts = raise_alerts(&mut tx, account, &new_failures, threshold, now).await?;
    }
    tx.commit().await?;
    Ok(outcome)
}

/// One evaluation of an account at a time (worker, API, CLI): rows not yet inserted cannot be
/// locked with FOR UPDATE.
async fn lock_account(tx: &mut sqlx::PgConnection, account: &str) -> Result<(), sqlx::Error> {
    sqlx::query!("SELECT pg_advisory_xact_lock(hashtext('skywarden posture ' || $1))", account)
        .execute(&mut *tx)
        .await?;
    Ok(())
}

async fn current_findings(
    tx: &mut sqlx::PgConnection,
    account: &str,
) -> Result<HashMap<FindingKey, Current>, sqlx::Error> {
    let existing = sqlx::query!(
        "SELECT id, check_id, resource_type, resource_id, status, messages FROM posture_findings WHERE account_id = $1 FOR UPDATE",
        account
    )
    .fetch_all(&mut *tx)
    .await?;
    Ok(existing
        .into_iter()
        .map(|r| {
            ((r.check_id, r.resource_type, r.resource_id), Current { id: r.id, status: r.status, messages: r.messages })
        })
        .collect())
}

/// Changes newer than those the previous evaluation saw can explain a new failure (`None`: the
/// first evaluation, where every failure is the baseline, with no cause); and the newest change,
/// which this evaluation has seen.
async fn change_window(tx: &mut sqlx::PgConnection, account: &str) -> Result<(Option<i64>, Option<i64>), sqlx::Error> {
    let seen_changes = sqlx::query!(
        "SELECT max_change_id FROM posture_evaluations WHERE account_id = $1 ORDER BY evaluated_at DESC LIMIT 1",
        account
    )
    .fetch_optional(&mut *tx)
    .await?;
    let newest_change = sqlx::query_scalar!("SELECT max(change_id) FROM config_changes WHERE account_id = $1", account)
        .fetch_one(&mut *tx)
        .await?;
    Ok((seen_changes.map(|row| row.max_change_id.unwrap_or(0)), newest_change))
}

/// What each result of a known check does, in the evaluation's order. The findings it matches
/// are taken out of `current`, which is left with those no result matched.
fn classify<'a>(
    evaluation: &'a AccountEvaluation,
    checks: &'a [CheckMeta],
    suppressions: &[Suppression],
    current: &mut HashMap<FindingKey, Current>,
) -> Vec<Step<'a>> {
    let meta: HashMap<&str, &CheckMeta> = checks.iter().map(|c| (c.id.as_str(), c)).collect();
    evaluation
        .results
        .iter()
        .filter_map(|result| {
            let check = *meta.get(result.check_id.as_str())?;
            let key = (result.check_id.clone(), result.resource_type.clone(), result.resource_id.clone());
            Some(Step {
                check,
                result,
                suppressed: suppressions.iter().any(|s| s.covers(&result.check_id, &result.resource_id)),
                transition: Transition::of(result, current.remove(&key)),
            })
        })
        .collect()
}

/// Open findings of checks that ran, on resources that were not evaluated: the resource is
/// gone (or no longer of the check's type). A check that errored on a resource keeps it.
fn gone_findings(evaluation: &AccountEvaluation, unmatched: HashMap<FindingKey, Current>) -> Vec<i64> {
    let ran: HashSet<&str> = evaluation.checks_run.iter().map(String::as_str).collect();
    let errored: HashSet<&FindingKey> = evaluation.not_evaluated.iter().collect();
    unmatched
        .into_iter()
        .filter(|(key, finding)| finding.status == "open" && ran.contains(key.0.as_str()) && !errored.contains(key))
        .map(|(_, finding)| finding.id)
        .collect()
}

/// The outcome's counts (all but alerts) of `steps` and of the `gone` findings resolved.
fn count(evaluation: &AccountEvaluation, steps: &[Step], gone: &[i64]) -> RecordOutcome {
    let mut outcome = RecordOutcome {
        evaluated: evaluation.results.len() as u64,
        resolved: gone.len() as u64,
        ..RecordOutcome::default()
    };
    for step in steps {
        if step.transition.passes() {
            outcome.passed += 1;
        } else {
            outcome.failed += 1;
        }
        match step.transition {
            Transition::Resolve(_) => outcome.resolved += 1,
            Transition::Open => outcome.opened += 1,
            Transition::Reopen(_) => outcome.reopened += 1,
            Transition::StillPassing | Transition::StillFailing { .. } => {}
        }
    }
    outcome
}

/// Writes one step. Returns the finding's id when it starts failing (opened or reopened).
async fn apply(
    tx: &mut sqlx::PgConnection,
    account: &str,
    step: &Step<'_>,
    causes_after: Option<i64>,
    now: DateTime<Utc>,
) -> Result<Option<i64>, FindingsError> {
    let Step { check, result, .. } = *step;
    match step.transition {
        Transition::StillPassing => Ok(None),
        Transition::Resolve(id) => {
            resolve(tx, id, now).await?;
            Ok(None)
        }
        Transition::Open => {
            let change_id = cause_of(tx, check, result, causes_after).await?;
            let id = open(tx, account, check, result, change_id, now).await?;
            history(tx, id, "opened", &result.messages, now).await?;
            Ok(Some(id))
        }
        Transition::Reopen(id) => {
            let change_id = cause_of(tx, check, result, causes_after).await?;
            reopen(tx, id, check, result, change_id, now).await?;
            history(tx, id, "reopened", &result.messages, now).await?;
            Ok(Some(id))
        }
        Transition::StillFailing { id, messages_changed } => {
            sqlx::query!(
                "UPDATE posture_findings SET messages = $2, last_seen_at = $3, severity = $4 WHERE id = $1",
                id,
                &result.messages,
                now,
                check.severity as Severity,
            )
            .execute(&mut *tx)
            .await?;
            if messages_changed {
                history(tx, id, "changed", &result.messages, now).await?;
            }
            Ok(None)
        }
    }
}

async fn open(
    tx: &mut sqlx::PgConnection,
    account: &str,
    check: &CheckMeta,
    result: &CheckResult,
    change_id: Option<i64>,
    now: DateTime<Utc>,
) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar!(
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
    .await
}

/// A new failing period of a resolved finding: a new start, cause and alert.
async fn reopen(
    tx: &mut sqlx::PgConnection,
    id: i64,
    check: &CheckMeta,
    result: &CheckResult,
    change_id: Option<i64>,
    now: DateTime<Utc>,
) -> Result<(), sqlx::Error> {
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
    Ok(())
}

/// (passed, failed, suppressed) per section.
fn section_scores<'a>(steps: &[Step<'a>]) -> HashMap<&'a str, (i32, i32, i32)> {
    let mut scores: HashMap<&str, (i32, i32, i32)> = HashMap::new();
    for step in steps {
        let section = scores.entry(step.check.section.as_str()).or_default();
        if step.transition.passes() {
            section.0 += 1;
        } else if step.suppressed {
            section.2 += 1;
        } else {
            section.1 += 1;
        }
    }
    scores
}

/// Records the evaluation (with the newest change it saw) and its score per section.
async fn save_scores(
    tx: &mut sqlx::PgConnection,
    account: &str,
    now: DateTime<Utc>,
    newest_change: Option<i64>,
    scores: &HashMap<&str, (i32, i32, i32)>,
) -> Result<(), sqlx::Error> {
    sqlx::query!(
        "INSERT INTO posture_evaluations (account_id, evaluated_at, max_change_id) VALUES ($1, $2, $3)
         ON CONFLICT (account_id, evaluated_at) DO UPDATE SET max_change_id = EXCLUDED.max_change_id",
        account,
        now,
        newest_change,
    )
    .execute(&mut *tx)
    .await?;
    for (section, (passed, failed, suppressed)) in scores {
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
    Ok(())
}

/// Raises alerts for the new failures at or above `threshold`; returns how many alerts are new.
/// They go through the alert store (which queues their notifications) in the caller's
/// transaction: a finding is never left open without the alert it called for.
async fn raise_alerts(
    tx: &mut sqlx::PgConnection,
    account: &str,
    new_failures: &[NewFailure<'_>],
    threshold: Severity,
    now: DateTime<Utc>,
) -> Result<u64, FindingsError> {
    let (ids, findings): (Vec<_>, Vec<_>) = new_failures
        .iter()
        .filter(|failure| failure.check.severity >= threshold)
        .map(|failure| {
            let finding = alert_finding(account, failure, now);
            ((failure.id, finding.alert_id()), finding)
        })
        .unzip();
    if findings.is_empty() {
        return Ok(0);
    }
    let recorded = crate::alerts::store::record_in(tx, &findings).await?;
    crate::notify::outbox::enqueue(tx, &recorded.changes).await?;
    for (id, alert_id) in ids {
        sqlx::query!("UPDATE posture_findings SET alert_id = $2::text::uuid WHERE id = $1", id, alert_id)
            .execute(&mut *tx)
            .await?;
    }
    Ok(recorded.new_alerts)
}

/// The alert finding of a posture finding that started failing.
fn alert_finding(account: &str, failure: &NewFailure, now: DateTime<Utc>) -> Finding {
    let NewFailure { id, check, result } = *failure;
    let CheckResult { check_id, resource_type, resource_id, messages, .. } = result;
    Finding {
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
    }
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
    result: &CheckResult,
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

/// Every finding `filter` selects, in the order of [`page`] (the command line lists them all).
pub async fn list(pool: &PgPool, filter: &FindingFilter) -> Result<Vec<FindingView>, sqlx::Error> {
    page(pool, filter, None, i64::MAX).await
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

/// A finding's position in the list order: highest severity first, then check, resource, id.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct FindingPageKey {
    pub severity: Severity,
    pub check_id: String,
    pub resource_id: String,
    pub id: i64,
}

impl FindingPageKey {
    pub fn of(finding: &FindingView) -> Self {
        Self {
            severity: finding.severity,
            check_id: finding.check_id.clone(),
            resource_id: finding.resource_id.clone(),
            id: finding.id,
        }
    }
}

/// Findings matching `filter` after `after` (in [`FindingPageKey`] order), at most `limit`: the
/// page's ids first, then their cause and related alerts for those rows only.
pub async fn page(
    pool: &PgPool,
    filter: &FindingFilter,
    after: Option<&FindingPageKey>,
    limit: i64,
) -> Result<Vec<FindingView>, sqlx::Error> {
    let rows = sqlx::query!(
        r#"WITH page AS (
               SELECT f.id FROM posture_findings f LEFT JOIN posture_checks c ON c.id = f.check_id
               WHERE ($1::text IS NULL OR f.status = $1)
                 AND ($2::text IS NULL OR f.account_id = $2)
                 AND ($3::text IS NULL OR f.check_id = $3)
                 AND ($4::text IS NULL OR c.section = $4)
                 AND ($5::text IS NULL OR f.resource_id = $5)
                 AND ($11::bigint IS NULL OR f.id = $11)
                 AND ($6::alert_severity IS NULL OR f.severity < $6
                      OR (f.severity = $6 AND (f.check_id, f.resource_id, f.id) > ($7::text, $8::text, $9::bigint)))
               ORDER BY f.severity DESC, f.check_id, f.resource_id, f.id
               LIMIT $10)
           SELECT f.id, f.account_id, f.check_id, coalesce(c.title, f.check_id) AS "title!", coalesce(c.section, '') AS "section!",
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
                        ORDER BY a.first_seen LIMIT 100) AS "related_alerts!"
           FROM page JOIN posture_findings f USING (id) LEFT JOIN posture_checks c ON c.id = f.check_id
           ORDER BY f.severity DESC, f.check_id, f.resource_id, f.id"#,
        filter.status,
        filter.account_id,
        filter.check_id,
        filter.section,
        filter.resource_id,
        after.map(|k| k.severity) as Option<Severity>,
        after.map(|k| k.check_id.as_str()),
        after.map(|k| k.resource_id.as_str()),
        after.map(|k| k.id),
        limit,
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

/// A score's position: account, section, evaluation time (the table's key).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct ScoreKey {
    pub account_id: String,
    pub section: String,
    pub evaluated_at: DateTime<Utc>,
}

impl ScoreKey {
    pub fn of(score: &ScoreView) -> Self {
        Self { account_id: score.account_id.clone(), section: score.section.clone(), evaluated_at: score.evaluated_at }
    }
}

/// Scores as [`scores`] gives them, after `after`, at most `limit`.
pub async fn scores_page(
    pool: &PgPool,
    account_id: Option<&str>,
    latest_only: bool,
    after: Option<&ScoreKey>,
    limit: i64,
) -> Result<Vec<ScoreView>, sqlx::Error> {
    let rows = sqlx::query!(
        r#"SELECT s.account_id, s.section, s.evaluated_at, s.passed, s.failed, s.suppressed
           FROM posture_scores s
           WHERE ($1::text IS NULL OR s.account_id = $1)
             AND (NOT $2 OR s.evaluated_at = (SELECT max(l.evaluated_at) FROM posture_scores l
                                             WHERE l.account_id = s.account_id AND l.section = s.section))
             AND ($3::text IS NULL OR (s.account_id, s.section, s.evaluated_at) > ($3, $4::text, $5::timestamptz))
           ORDER BY s.account_id, s.section, s.evaluated_at
           LIMIT $6"#,
        account_id,
        latest_only,
        after.map(|k| k.account_id.as_str()),
        after.map(|k| k.section.as_str()),
        after.map(|k| k.evaluated_at),
        limit,
    )
    .fetch_all(pool)
    .await?;
    Ok(rows
        .into_iter()
        .map(|r| score_view(r.account_id, r.section, r.evaluated_at, (r.passed, r.failed, r.suppressed)))
        .collect())
}

/// A score row with its percentage: (passed + suppressed) over evaluated.
fn score_view(account_id: String, section: String, evaluated_at: DateTime<Utc>, counts: (i32, i32, i32)) -> ScoreView {
    let (passed, failed, suppressed) = counts;
    let total = passed + failed + suppressed;
    let score = if total == 0 { 100.0 } else { f64::from(passed + suppressed) * 100.0 / f64::from(total) };
    ScoreView { account_id, section, evaluated_at, passed, failed, suppressed, score }
}

/// Suppressions (of one check, if given) after the id `after`, in id order, at most `limit`.
pub async fn suppressions_page(
    pool: &PgPool,
    check_id: Option<&str>,
    after: Option<i64>,
    limit: i64,
) -> Result<Vec<Suppression>, sqlx::Error> {
    sqlx::query_as!(
        Suppression,
        "SELECT id, check_id, account_id, resource_id, reason, expires_at, created_by, created_at FROM posture_suppressions
         WHERE ($1::text IS NULL OR check_id = $1) AND ($2::bigint IS NULL OR id > $2)
         ORDER BY id LIMIT $3",
        check_id,
        after,
        limit,
    )
    .fetch_all(pool)
    .await
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

#[cfg(test)]
mod tests {
    use super::*;

    fn result(messages: &[&str]) -> CheckResult {
        CheckResult {
            check_id: "c".into(),
            account_id: "111122223333".into(),
            resource_type: "t".into(),
            resource_id: "r".into(),
            region: "eu-west-1".into(),
            messages: messages.iter().map(|m| m.to_string()).collect(),
        }
    }

    fn current(status: &str, messages: &[&str]) -> Option<Current> {
        Some(Current { id: 7, status: status.into(), messages: messages.iter().map(|m| m.to_string()).collect() })
    }

    #[test]
    fn each_result_moves_its_finding() {
        assert_eq!(Transition::of(&result(&[]), None), Transition::StillPassing);
        assert_eq!(Transition::of(&result(&[]), current("resolved", &[])), Transition::StillPassing);
        assert_eq!(Transition::of(&result(&[]), current("open", &["x"])), Transition::Resolve(7));
        assert_eq!(Transition::of(&result(&["x"]), None), Transition::Open);
        assert_eq!(Transition::of(&result(&["x"]), current("resolved", &[])), Transition::Reopen(7));
        assert_eq!(
            Transition::of(&result(&["x"]), current("open", &["x"])),
            Transition::StillFailing { id: 7, messages_changed: false }
        );
        assert_eq!(
            Transition::of(&result(&["y"]), current("open", &["x"])),
            Transition::StillFailing { id: 7, messages_changed: true }
        );
    }

    #[test]
    fn unmatched_open_findings_of_checks_that_ran_are_gone() {
        let evaluation = AccountEvaluation {
            checks_run: vec!["ran".into()],
            not_evaluated: vec![("ran".into(), "t".into(), "errored".into())],
            ..Default::default()
        };
        let key = |check: &str, id: &str| (check.to_string(), "t".to_string(), id.to_string());
        let finding = |id, status: &str| Current { id, status: status.into(), messages: vec![] };
        let unmatched = HashMap::from([
            (key("ran", "deleted"), finding(1, "open")),
            (key("ran", "errored"), finding(2, "open")),
            (key("ran", "old"), finding(3, "resolved")),
            (key("other", "deleted"), finding(4, "open")),
        ]);
        assert_eq!(gone_findings(&evaluation, unmatched), [1]);
    }
}
