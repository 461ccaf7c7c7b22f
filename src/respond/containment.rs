//! The automatic containment job: follows new alerts, judges each once against
//! `policies/response.yaml` ([`super::auto`]), and acts (or, in dry-run mode, records what it
//! would do) through the same path as a person, as actor `automatic`. Every automatic action
//! is told to the alert's routes through the notification outbox.

use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use sqlx::PgPool;

use super::auto::{AutoRules, Rule};
use super::record::{self, NewAction};
use super::run::{self, AUTOMATIC_ACTOR, ApplyRequest, ResponseContext};
use super::{Action, RespondError, Undo};
use crate::model::Severity;
use crate::notify::message::{ActionOutcome, AutomaticAction};

/// How often the job looks for new alerts.
const INTERVAL: Duration = Duration::from_secs(30);
/// Alerts judged per step, at most (the rest wait for the next).
const ALERTS_PER_STEP: i64 = 200;
/// Actions per alert and rule, at most.
const ACTIONS_PER_ALERT: usize = 5;
/// Errors of an action not run (rate limit, no responder role) start so; they do not count
/// against the rate limit.
const NOT_RUN: &str = "not run: ";
/// How long judged decisions are kept: longer than any sensible `max_alert_age_minutes`, and
/// fixed, so that lowering it never makes old alerts look new.
const JUDGED_KEPT_DAYS: i32 = 8;
/// Steps in a row that found the step lock taken before a warning (10 minutes at 30 seconds).
const LOCKED_OUT_WARN: u32 = 20;
/// Steps in a row that found the step lock held by another process.
static LOCKED_OUT: AtomicU32 = AtomicU32::new(0);
/// The most bytes of an automatic action's reason (as `run::check_reason` allows).
const REASON_MAX_BYTES: usize = 2000;

/// One new alert, as the rules read it.
#[derive(Debug)]
struct NewAlert {
    account_id: String,
    alert_id: String,
    policy_id: String,
    severity: Severity,
    principal: Option<String>,
    title: String,
    details: Value,
}

/// What one step did, for logs and tests.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct StepReport {
    pub judged: usize,
    pub applied: usize,
    pub dry_runs: usize,
    pub not_run: usize,
    pub failed: usize,
}

/// The job: the rules and what actions need.
pub struct Containment {
    pub rules: AutoRules,
    pub ctx: ResponseContext,
}

impl Containment {
    /// Runs a step every [`INTERVAL`] until `shutdown`; a panic in a step is logged and the
    /// loop goes on.
    pub async fn run(self, shutdown: impl std::future::Future<Output = ()>) {
        tokio::pin!(shutdown);
        tracing::info!(enabled = self.rules.enabled, dry_run = self.rules.dry_run, "automatic containment started");
        loop {
            match crate::supervise::catch_panic(self.step()).await {
                Ok(Ok(report)) if report != StepReport::default() => tracing::info!(?report, "automatic containment"),
                Ok(Ok(_)) => {}
                Ok(Err(error)) => tracing::error!(error = %error, "automatic containment step failed"),
                Err(panic) => tracing::error!(panic = %panic, "automatic containment step panicked"),
            }
            tokio::select! {
                () = &mut shutdown => return,
                () = tokio::time::sleep(INTERVAL) => {}
            }
        }
    }

    /// Ends abandoned actions, then judges the new alerts once each. One step at a time over
    /// all processes (an advisory lock), so the rate limit holds; a second one returns at once.
    /// The lock is a transaction's: it ends with the transaction, also when a step panics and
    /// its connection goes back to the pool.
    pub async fn step(&self) -> Result<StepReport, RespondError> {
        record::sweep_abandoned(&self.ctx.pool).await?;
        let mut report = StepReport::default();
        if !self.rules.enabled {
            return Ok(report);
        }
        let mut lock = crate::db::begin(&self.ctx.pool).await?;
        let locked: bool =
            sqlx::query_scalar!(r#"SELECT pg_try_advisory_xact_lock(hashtext('skywarden-respond-auto')) AS "l!""#)
                .fetch_one(&mut *lock)
                .await?;
        if !locked {
            let missed = LOCKED_OUT.fetch_add(1, Ordering::Relaxed) + 1;
            if missed.is_multiple_of(LOCKED_OUT_WARN) {
                tracing::warn!(
                    steps = missed,
                    "automatic containment: another process has held the step lock for many steps in a row; this one judges nothing"
                );
            }
            return Ok(report);
        }
        LOCKED_OUT.store(0, Ordering::Relaxed);
        let result = self.judge_new(&mut report).await;
        lock.commit().await?;
        result.map(|()| report)
    }

    async fn judge_new(&self, report: &mut StepReport) -> Result<(), RespondError> {
        // Decisions on alerts too old to be judged again are of no further use.
        sqlx::query!(
            "DELETE FROM response_auto_judged WHERE judged_at < now() - make_interval(days => $1)",
            JUDGED_KEPT_DAYS
        )
        .execute(&self.ctx.pool)
        .await?;
        for alert in new_alerts(&self.ctx.pool, self.rules.max_alert_age_minutes).await? {
            let outcome = self.judge(&alert, report).await?;
            sqlx::query!(
                "INSERT INTO response_auto_judged (alert_id, account_id, outcome) VALUES ($1::text::uuid, $2, $3)
                 ON CONFLICT (alert_id) DO NOTHING",
                alert.alert_id,
                alert.account_id,
                outcome
            )
            .execute(&self.ctx.pool)
            .await?;
            report.judged += 1;
        }
        Ok(())
    }

    /// The rules that match the alert, and their actions; what was decided, in a few words.
    async fn judge(&self, alert: &NewAlert, report: &mut StepReport) -> Result<String, RespondError> {
        let mut matched = Vec::new();
        for rule in self.rules.rules.iter() {
            if matches(&self.ctx.pool, rule, alert).await? {
                matched.push(rule);
            }
        }
        if matched.is_empty() {
            return Ok("no rule matched".into());
        }
        if !self.rules.allows_account(&alert.account_id) {
            tracing::info!(alert_id = %alert.alert_id, account_id = %alert.account_id, "automatic containment: account not on the allow-list");
            return Ok("rules matched; the account is not on the allow-list".into());
        }
        let suggested = super::suggest::for_alert(&self.ctx.pool, &alert.alert_id, &self.ctx.trusted_cidrs).await?;
        let suggestions = suggested.map(|s| s.actions).unwrap_or_default();
        let mut done = Vec::new();
        for rule in matched {
            let actions = suggestions.iter().filter(|s| s.kind == rule.action.0).take(ACTIONS_PER_ALERT);
            for suggestion in actions {
                // One action's error is logged and noted; the others run and the alert is judged.
                let label = format!("{} {}", suggestion.kind, suggestion.target);
                let status = match Action::parse(suggestion.kind, &suggestion.target, suggestion.region.as_deref()) {
                    Ok(action) => self.act(rule, alert, &action, report).await,
                    Err(error) => Err(error),
                };
                let status = status.unwrap_or_else(|error| {
                    tracing::error!(alert_id = %alert.alert_id, action = %label, error = %error, "automatic containment: the action could not be run");
                    report.failed += 1;
                    format!("error: {error}")
                });
                done.push(format!("{label} {status}"));
            }
        }
        Ok(if done.is_empty() {
            "rules matched; the alert's events suggest no such action".into()
        } else {
            done.join("; ")
        })
    }

    /// One action: over the rate limit it is recorded as not run; else applied (or its dry run
    /// recorded). Told to the alert's routes either way. Returns the recorded status.
    async fn act(
        &self,
        rule: &Rule,
        alert: &NewAlert,
        action: &Action,
        report: &mut StepReport,
    ) -> Result<String, RespondError> {
        let key = idempotency_key(&alert.alert_id, action, self.rules.dry_run);
        // Judged again (a step that died): the earlier record stands, counted and told once.
        if let Some(earlier) = record::get_by_key(&self.ctx.pool, &key).await? {
            return Ok(earlier.status);
        }
        let reason = bounded_reason(&format!("automatic containment (rule {}): {}", rule.id, alert.title));
        let new = NewAction {
            account_id: &alert.account_id,
            action,
            alert_id: Some(&alert.alert_id),
            actor: AUTOMATIC_ACTOR,
            reason: &reason,
            idempotency_key: &key,
            lease_owner: "",
            awaiting_approval: false,
            automatic_rule: Some(&rule.id),
        };
        let outcome = self.act_recorded(&new, action, report).await;
        // Told to the alert's routes even when recording the outcome failed.
        let note = match &outcome {
            Ok((_, note)) => note.clone(),
            Err(error) => format!("FAILED: {} {}: {error}", action.kind(), action.target()),
        };
        let note = format!("Skywarden automatic containment (rule {}): {note}. {}", rule.id, reason_suffix(&key));
        let recorded = record::get_by_key(&self.ctx.pool, &key).await.ok().flatten();
        let notice = notice(rule, &alert.account_id, action, recorded.as_ref(), outcome.as_ref().err());
        let told = crate::notify::outbox::enqueue_automatic_action(
            &self.ctx.pool,
            &alert.alert_id,
            AUTOMATIC_ACTOR,
            &note,
            &notice,
        )
        .await;
        let (status, _) = outcome?;
        told?;
        Ok(status)
    }

    /// The rate limit, then the dry run or the apply: the recorded status and the note telling it.
    async fn act_recorded(
        &self,
        new: &NewAction<'_>,
        action: &Action,
        report: &mut StepReport,
    ) -> Result<(String, String), RespondError> {
        if let Some(limit) = self.over_limit(new.account_id).await? {
            report.not_run += 1;
            let error = format!("{NOT_RUN}{limit}");
            record::record_unrun(&self.ctx.pool, new, "failed", None, &json!([]), Some(&error)).await?;
            return Ok(("failed".to_owned(), format!("NOT run ({limit}): {} {}", action.kind(), action.target())));
        }
        if self.rules.dry_run {
            report.dry_runs += 1;
            self.dry_run(new).await?;
            let note = format!("dry run, nothing changed: would {} {}", action.kind(), action.target());
            return Ok(("dry_run".to_owned(), note));
        }
        self.apply(new, action, report).await
    }

    async fn apply(
        &self,
        new: &NewAction<'_>,
        action: &Action,
        report: &mut StepReport,
    ) -> Result<(String, String), RespondError> {
        let request = ApplyRequest {
            account_id: new.account_id.to_owned(),
            action: action.clone(),
            actor: AUTOMATIC_ACTOR.to_owned(),
            reason: new.reason.to_owned(),
            idempotency_key: new.idempotency_key.to_owned(),
            alert_id: new.alert_id.map(str::to_owned),
            automatic_rule: new.automatic_rule.map(str::to_owned),
        };
        let label = format!("{} {}", action.kind(), action.target());
        match run::apply(&self.ctx, &request).await {
            Ok(record) => {
                if record.status == "applied" {
                    report.applied += 1;
                }
                Ok((record.status.clone(), format!("{} ({})", label, record.status)))
            }
            Err(RespondError::Database(error)) => Err(RespondError::Database(error)),
            Err(error @ RespondError::NotEnabled { .. }) => {
                // Nothing was recorded: record why it did not run.
                report.not_run += 1;
                let message = format!("{NOT_RUN}{error}");
                record::record_unrun(&self.ctx.pool, new, "failed", None, &json!([]), Some(&message)).await?;
                Ok(("failed".to_owned(), format!("NOT run (response not enabled): {label}")))
            }
            Err(error) => {
                report.failed += 1;
                Ok(("failed".to_owned(), format!("FAILED: {label}: {error}")))
            }
        }
    }

    /// Records what apply would do: the state read with the responder role and the calls.
    async fn dry_run(&self, new: &NewAction<'_>) -> Result<(), RespondError> {
        match run::plan(&self.ctx, new.account_id, new.action).await {
            Ok(plan) => {
                let calls = serde_json::to_value(&plan.calls).unwrap_or_default();
                let error = if plan.protected {
                    Some("the resource is tagged skywarden:protected: apply would refuse".to_owned())
                } else {
                    plan.will_fail.as_ref().map(|why| format!("apply would fail: {why}"))
                };
                record::record_unrun(&self.ctx.pool, new, "dry_run", Some(&plan.current), &calls, error.as_deref())
                    .await?;
            }
            Err(RespondError::Database(error)) => return Err(RespondError::Database(error)),
            Err(error) => {
                let message = format!("the dry run could not read the state: {error}");
                record::record_unrun(&self.ctx.pool, new, "dry_run", None, &json!([]), Some(&message)).await?;
            }
        }
        Ok(())
    }

    /// The limit the next automatic action would pass, if any (dry runs count: they show what
    /// live mode would do).
    async fn over_limit(&self, account_id: &str) -> Result<Option<String>, RespondError> {
        let counts = sqlx::query!(
            r#"SELECT count(*) FILTER (WHERE account_id = $1) AS "account!", count(*) AS "all!"
               FROM response_actions
               WHERE actor = $2 AND created_at > now() - interval '1 hour'
                 AND (error IS NULL OR error NOT LIKE $3 || '%')"#,
            account_id,
            AUTOMATIC_ACTOR,
            NOT_RUN
        )
        .fetch_one(&self.ctx.pool)
        .await?;
        let limit = self.rules.rate_limit;
        Ok(if counts.account >= i64::from(limit.per_account_per_hour) {
            Some(format!(
                "rate limit of {} automatic actions per hour on account {account_id} reached",
                limit.per_account_per_hour
            ))
        } else if counts.all >= i64::from(limit.global_per_hour) {
            Some(format!("rate limit of {} automatic actions per hour reached", limit.global_per_hour))
        } else {
            None
        })
    }
}

/// A reason `run::check_reason` accepts whatever the alert's title holds: control characters
/// (newlines) become spaces, and it is cut to [`REASON_MAX_BYTES`] on a character boundary.
fn bounded_reason(text: &str) -> String {
    let mut reason = String::with_capacity(text.len().min(REASON_MAX_BYTES));
    for c in text.chars().map(|c| if c.is_control() { ' ' } else { c }) {
        if reason.len() + c.len_utf8() > REASON_MAX_BYTES {
            break;
        }
        reason.push(c);
    }
    reason
}

/// What receivers are told of an automatic action: from its record (what was done, the result,
/// how to undo it), or from the error when not even that was recorded.
fn notice(
    rule: &Rule,
    account_id: &str,
    action: &Action,
    recorded: Option<&record::ResponseRecord>,
    error: Option<&RespondError>,
) -> AutomaticAction {
    let status = recorded.map_or("failed", |r| r.status.as_str());
    let recorded_error = recorded.and_then(|r| r.error.as_deref());
    let outcome = match status {
        "applied" => ActionOutcome::Taken,
        "awaiting_approval" => ActionOutcome::AwaitingApproval,
        "dry_run" => ActionOutcome::DryRun,
        "failed" if recorded_error.is_some_and(|e| e.starts_with(NOT_RUN)) => ActionOutcome::NotRun,
        _ => ActionOutcome::Failed,
    };
    let error = recorded_error.map(str::to_owned).or_else(|| error.map(ToString::to_string));
    let result = match (outcome, error) {
        (ActionOutcome::Taken, _) if recorded.is_some_and(|r| r.calls.as_array().is_some_and(Vec::is_empty)) => {
            "applied: it was already contained, nothing was called".to_owned()
        }
        (ActionOutcome::Taken, _) => "applied".to_owned(),
        (ActionOutcome::AwaitingApproval, _) => {
            "waits for a second person's approval: nothing runs until an analyst approves it on the alert page"
                .to_owned()
        }
        (ActionOutcome::DryRun, Some(error)) => format!("dry run, nothing changed; {error}"),
        (ActionOutcome::DryRun, None) => "dry run, nothing changed".to_owned(),
        (_, Some(error)) => format!("{status}: {error}"),
        (_, None) => status.to_owned(),
    };
    let action_id = recorded.map(|r| r.id.clone());
    let (undo, undo_command) = undo_of(outcome, action, action_id.as_deref());
    AutomaticAction {
        outcome,
        kind: action.kind().to_owned(),
        resource: action.target(),
        account_id: account_id.to_owned(),
        region: action.region().to_owned(),
        rule: rule.id.clone(),
        result,
        action_id,
        undo,
        undo_command,
        at: recorded.map(|r| r.applied_at.unwrap_or(r.created_at)),
        incident_id: None,
        incident_url: None,
    }
}

/// How to undo an automatic action: the command (and the alert page's Undo) for one applied,
/// else why there is nothing to undo.
fn undo_of(outcome: ActionOutcome, action: &Action, id: Option<&str>) -> (String, Option<String>) {
    match (outcome, action.undo(), id) {
        (ActionOutcome::Taken, Undo::Possible(how), Some(id)) => {
            let command = format!("skywarden respond undo {id} --reason \"REASON\"");
            (format!("{command}, or Undo on the alert page ({how})"), Some(command))
        }
        (ActionOutcome::Taken, Undo::Impossible(why), _) => (format!("cannot be undone: {why}"), None),
        (ActionOutcome::Failed, _, Some(id)) => (
            format!(
                "nothing to undo unless it changed something before failing: see action {id} (skywarden respond list)"
            ),
            None,
        ),
        (ActionOutcome::AwaitingApproval, _, _) => {
            ("nothing to undo: nothing ran; refuse it by leaving it unapproved".to_owned(), None)
        }
        _ => ("nothing to undo: nothing was changed".to_owned(), None),
    }
}

fn reason_suffix(key: &str) -> String {
    format!("Record: `skywarden respond list` (key {key}).")
}

/// From the alert and the action alone: judged again after a crash, the same action finds its
/// earlier record and runs nothing twice.
fn idempotency_key(alert_id: &str, action: &Action, dry_run: bool) -> String {
    let digest = Sha256::digest(format!("{}\n{}\n{}", action.kind(), action.target(), action.region()));
    let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
    format!("{}:{alert_id}:{hex}", if dry_run { "auto-dry" } else { "auto" })
}

/// Whether a rule matches the alert.
async fn matches(pool: &PgPool, rule: &Rule, alert: &NewAlert) -> Result<bool, RespondError> {
    if rule.policy != alert.policy_id || alert.severity < rule.min_severity {
        return Ok(false);
    }
    if rule.when.details.iter().any(|(key, value)| alert.details.get(key) != Some(value)) {
        return Ok(false);
    }
    if rule.when.principal_has_open_alert.is_empty() {
        return Ok(true);
    }
    let Some(principal) = alert.principal.as_deref() else { return Ok(false) };
    let found = sqlx::query_scalar!(
        r#"SELECT EXISTS (SELECT 1 FROM alerts
                          WHERE account_id = $1 AND principal = $2 AND status = 'open' AND policy_id = ANY($3)
                            AND alert_id <> $4::text::uuid) AS "found!""#,
        alert.account_id,
        principal,
        &rule.when.principal_has_open_alert,
        alert.alert_id
    )
    .fetch_one(pool)
    .await?;
    Ok(found)
}

/// Open alerts created in the last `max_age` minutes and not judged yet, oldest first.
async fn new_alerts(pool: &PgPool, max_age: u32) -> Result<Vec<NewAlert>, sqlx::Error> {
    let rows = sqlx::query!(
        r#"SELECT a.account_id, a.alert_id::text AS "alert_id!", a.policy_id, a.severity AS "severity: Severity",
                  a.principal, a.title, a.details
           FROM alerts a
           WHERE a.created_at > now() - make_interval(mins => $1) AND a.status = 'open'
             AND NOT EXISTS (SELECT 1 FROM response_auto_judged j WHERE j.alert_id = a.alert_id)
           ORDER BY a.created_at, a.alert_id
           LIMIT $2"#,
        i32::try_from(max_age).unwrap_or(i32::MAX),
        ALERTS_PER_STEP
    )
    .fetch_all(pool)
    .await?;
    Ok(rows
        .into_iter()
        .map(|r| NewAlert {
            account_id: r.account_id,
            alert_id: r.alert_id,
            policy_id: r.policy_id,
            severity: r.severity,
            principal: r.principal,
            title: r.title,
            details: r.details,
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_title_of_emoji_and_newlines_becomes_a_valid_reason() {
        let title = format!("line one\nline two\t\u{7}{}", "🔥".repeat(1000));
        let reason = bounded_reason(&format!("automatic containment (rule r): {title}"));
        assert!(reason.len() <= REASON_MAX_BYTES && reason.len() > REASON_MAX_BYTES - 4, "{}", reason.len());
        assert!(reason.contains("line one line two"), "{reason}");
        run::check_reason(&reason).unwrap();
        assert_eq!(bounded_reason("short"), "short");
    }
}
