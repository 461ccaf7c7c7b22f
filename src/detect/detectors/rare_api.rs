//! `aws-rare-sensitive-api`: a principal makes a sensitive write call (IAM, KMS, bucket policies
//! and ACLs, CloudTrail, Organizations, GuardDuty, Config) that it has not made in its baseline
//! window: a stolen identity doing what its owner never does.
//!
//! The baseline is the rollup `api_call_days` (per identity, API and UTC day, the first and last
//! successful write call; per identity and day, the first and last event of any kind), filled
//! at ingest ([`crate::ingest::api_rollup`]) and, for events stored before it existed,
//! backfilled a month a detection run (no alert until that is done; detection health says so):
//! no scan of the events. The scan of new events notes the span of each principal's new events;
//! [`findings`] then finds the UTC days with sensitive writes of that principal from the span's start to a
//! baseline after its end (new events can give later calls their history or baseline), reads
//! each such day's first call of each sensitive API back from the events (by name and day) and
//! asks the rollup whether the principal made the same call in the `baseline_days` before it. So
//! re-running detection gives the same alert, and importing older data after newer data judges
//! the newer calls again, as if imported in order: a call the older data puts in the baseline
//! raises nothing new. An alert already raised for it stays (an analyst may have acted on it);
//! its evidence is not withdrawn.
//! A principal with no event older than `min_history_days` is not judged (no baseline yet).
//! Role sessions share their role's baseline, except those of IAM Identity Center permission
//! sets (`AWSReservedSSO_…`): one role for everyone given the set, so each session (the human)
//! has its own. All the new APIs of one principal and day fold into one alert that lists them (a
//! new admin's busy first day is one alert, not forty).

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::net::IpAddr;

use chrono::{DateTime, Duration, Utc};
use serde::Deserialize;
use sqlx::PgPool;

use super::{Detectors, RARE_SENSITIVE_API};
use crate::alerts::store::Burst;
use crate::detect::event::{RawJson, SourceNetwork};
use crate::detect::{PolicyEvent, health};
use crate::ingest::api_rollup;
use crate::model::{Finding, Mitre, Severity};

/// How many APIs an alert's details name.
const NAMED: usize = 50;
/// Distinct APIs read back per principal and day, at most.
const MAX_APIS_PER_DAY: i64 = 2_000;

/// A principal's first call of a sensitive write API within its baseline.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RareApiSettings {
    pub enabled: bool,
    /// How far back a principal's earlier calls make its baseline.
    pub baseline_days: i64,
    /// No alert for a principal whose oldest stored event in the baseline is younger than this.
    pub min_history_days: i64,
    /// `service:Call` patterns (`iam:*`, `s3:PutBucketPolicy`; `*` matches any run of characters).
    pub apis: Vec<String>,
    /// Patterns never counted (crypto operations of KMS are data access, not administration).
    pub ignore_apis: Vec<String>,
    /// Calls whose name starts so are reads, when the event does not say (`readOnly`).
    pub read_prefixes: Vec<String>,
    /// ARNs or user names never alerted on (`*` matches any run of characters).
    pub allow_principals: Vec<String>,
    pub severity: Severity,
}

impl Default for RareApiSettings {
    fn default() -> Self {
        let strings = |list: &[&str]| list.iter().map(|s| s.to_string()).collect();
        Self {
            enabled: true,
            baseline_days: 30,
            min_history_days: 7,
            apis: strings(&[
                "iam:*",
                "kms:*",
                "s3:PutBucketPolicy",
                "s3:DeleteBucketPolicy",
                "s3:PutBucketAcl",
                "s3:PutObjectAcl",
                "s3:PutBucketPublicAccessBlock",
                "s3:DeleteBucketPublicAccessBlock",
                "cloudtrail:*",
                "organizations:*",
                "guardduty:*",
                "config:*",
            ]),
            ignore_apis: strings(&[
                "kms:Decrypt",
                "kms:Encrypt",
                "kms:GenerateDataKey*",
                "kms:ReEncrypt*",
                "kms:Sign",
                "kms:Verify*",
                "kms:GenerateMac",
                "kms:GenerateRandom",
                "config:PutEvaluations",
                // Restoring visibility is the response to an attack, not one.
                "cloudtrail:StartLogging",
                "config:StartConfigurationRecorder",
            ]),
            read_prefixes: strings(&["Get", "List", "Describe", "Lookup", "Search", "BatchGet", "Head", "Simulate"]),
            allow_principals: strings(&["arn:aws:sts::*:assumed-role/AWSServiceRoleFor*"]),
            severity: Severity::Medium,
        }
    }
}

impl RareApiSettings {
    /// What is wrong with the settings, each naming its field.
    pub fn problems(&self) -> Vec<String> {
        let mut problems = Vec::new();
        if self.baseline_days < 1 {
            problems.push(format!("baseline_days: {} is not a number of days (1 or more)", self.baseline_days));
        }
        if !(0..=self.baseline_days).contains(&self.min_history_days) {
            problems.push(format!(
                "min_history_days: {} must lie between 0 and baseline_days ({})",
                self.min_history_days, self.baseline_days
            ));
        }
        for (field, list) in [("apis", &self.apis), ("ignore_apis", &self.ignore_apis)] {
            for pattern in list.iter().filter(|p| p.split_once(':').is_none_or(|(s, c)| s.is_empty() || c.is_empty())) {
                problems.push(format!("{field}: {pattern:?} is not service:Call (e.g. iam:CreateUser or iam:*)"));
            }
        }
        problems
    }

    /// The event sources (`iam.amazonaws.com`) the API patterns name.
    fn event_sources(&self) -> Vec<String> {
        let services: BTreeSet<&str> = self.apis.iter().filter_map(|p| p.split_once(':')).map(|(s, _)| s).collect();
        services.into_iter().map(|s| format!("{s}.amazonaws.com")).collect()
    }

    /// Whether `api` (`iam:CreateUser`) is a sensitive write; `read_only` is the event's own say.
    pub fn is_sensitive_write(&self, api: &str, read_only: Option<bool>) -> bool {
        let call = api.split_once(':').map_or(api, |(_, call)| call);
        let write = read_only.map_or_else(|| !self.read_prefixes.iter().any(|p| call.starts_with(p.as_str())), |r| !r);
        write && self.apis.iter().any(|p| glob(p, api)) && !self.ignore_apis.iter().any(|p| glob(p, api))
    }

    fn allowed(&self, event: &PolicyEvent) -> bool {
        let names = [event.principal_arn.as_deref(), event.user_name.as_deref()];
        self.allow_principals.iter().any(|p| names.iter().flatten().any(|name| glob(p, name)))
    }
}

/// `pattern` with `*` matching any run of characters, against the whole of `text`.
pub fn glob(pattern: &str, text: &str) -> bool {
    let mut parts = pattern.split('*');
    let first = parts.next().unwrap_or("");
    let Some(mut rest) = text.strip_prefix(first) else { return false };
    let middle: Vec<&str> = parts.collect();
    let Some((last, middle)) = middle.split_last() else { return rest.is_empty() };
    for part in middle {
        match rest.find(part) {
            Some(at) => rest = &rest[at + part.len()..],
            None => return false,
        }
    }
    rest.len() >= last.len() && rest.ends_with(last)
}

/// `iam:CreateUser` for an event of `iam.amazonaws.com`.
pub fn api_name(event_source: &str, event_name: &str) -> String {
    let service = event_source.strip_suffix(".amazonaws.com").unwrap_or(event_source);
    format!("{service}:{event_name}")
}

/// Whom a baseline belongs to: the principal, or for a role session its role
/// (`arn:aws:sts::…:assumed-role/ROLE`), so every session of a role shares one; the sessions of
/// an SSO permission set (`AWSReservedSSO_…`, one role for many humans) each have their own.
pub fn identity(principal: &str) -> &str {
    crate::ingest::api_rollup::baseline_identity(principal)
}

/// The `LIKE` pattern of an identity's events: a role's matches each of its sessions.
fn like_pattern(identity: &str) -> String {
    let escaped = identity.replace('\\', "\\\\").replace('%', "\\%").replace('_', "\\_");
    let is_role = identity.split_once(":assumed-role/").is_some_and(|(_, role)| !role.contains('/'));
    if is_role { format!("{escaped}/%") } else { escaped }
}

/// Whether one stored call is one the detector judges: a successful sensitive write by a
/// principal that is not allowed (what `first_calls` selects, for one event).
pub fn is_candidate(detectors: &Detectors, event: &PolicyEvent) -> bool {
    let settings = &detectors.settings.rare_sensitive_api;
    let (Some(source), Some(name)) = (event.event_source.as_deref(), event.event_name.as_deref()) else {
        return false;
    };
    settings.enabled
        && event.error_code.is_none()
        && event.principal_type.as_deref() != Some("AWSService")
        && event.principal().is_some()
        && !made_by_a_service(event)
        && settings
            .apis
            .iter()
            .any(|p| p.split_once(':').is_some_and(|(s, _)| source.strip_prefix(s) == Some(".amazonaws.com")))
        && settings.is_sensitive_write(&api_name(source, name), read_only(&event.raw))
        && !settings.allowed(event)
}

/// A call an AWS service made on the principal's behalf (EBS creating a KMS grant, a service
/// creating its service-linked role): `invokedBy`, or a service name as the source address. Not
/// the principal's own administration; `first_calls` leaves the same calls out.
fn made_by_a_service(event: &PolicyEvent) -> bool {
    event.raw.value().pointer("/userIdentity/invokedBy").is_some_and(|v| !v.is_null())
        || event.source_ip_text.as_deref().is_some_and(|s| s.ends_with(".amazonaws.com"))
}

fn read_only(raw: &RawJson) -> Option<bool> {
    let value = raw.value().get("readOnly")?;
    value.as_bool().or_else(|| value.as_str().and_then(|s| s.parse().ok()))
}

/// The principals whose new events can change a verdict, with the span of those events, noted
/// during the scan. Past [`RareApiCandidates::MAX`] principals, only each account's span is
/// kept, and [`findings`] pages through the identities the rollup holds for that span: at most
/// the bound a run, the rest left in the detector's backlog (a cursor per account and span) for
/// the next runs, and detection health says so until it is drained.
pub struct RareApiCandidates {
    /// (account, identity) → (earliest, latest) new event.
    spans: BTreeMap<(String, String), (DateTime<Utc>, DateTime<Utc>)>,
    /// account → (earliest, latest) new event of principals beyond the bound.
    overflow: BTreeMap<String, (DateTime<Utc>, DateTime<Utc>)>,
    max: usize,
}

impl Default for RareApiCandidates {
    fn default() -> Self {
        Self::with_max(Self::MAX)
    }
}

impl RareApiCandidates {
    /// Principals one run notes and judges, at most.
    pub const MAX: usize = 10_000;

    /// Candidates that keep, and a run that judges, at most `max` identities (tests reach the
    /// bound cheaply).
    pub fn with_max(max: usize) -> Self {
        Self { spans: BTreeMap::new(), overflow: BTreeMap::new(), max: max.max(1) }
    }

    pub fn note(&mut self, detectors: &Detectors, event: &PolicyEvent) {
        let settings = &detectors.settings.rare_sensitive_api;
        if !settings.enabled || event.principal_type.as_deref() == Some("AWSService") {
            return;
        }
        let Some(principal) = event.principal() else { return };
        let key = (event.account_id.clone(), identity(principal).to_string());
        let time = event.event_time;
        let span = if let Some(span) = self.spans.get_mut(&key) {
            span
        } else if self.spans.len() < self.max {
            self.spans.entry(key).or_insert((time, time))
        } else {
            self.overflow.entry(event.account_id.clone()).or_insert((time, time))
        };
        *span = (span.0.min(time), span.1.max(time));
    }

    pub fn is_empty(&self) -> bool {
        self.spans.is_empty() && self.overflow.is_empty()
    }

    /// Whether principals beyond the bound were noted (their accounts' spans only).
    pub fn overflowed(&self) -> bool {
        !self.overflow.is_empty()
    }
}

/// The first call of one API by a principal on one day.
#[derive(Clone, Debug)]
pub struct FirstCall {
    pub api: String,
    pub event_source: String,
    pub event_name: String,
    pub event: PolicyEvent,
}

/// The backlog keys of the principals left for later runs start so (then the account).
const BACKLOG_PREFIX: &str = "aws-rare-sensitive-api#principals/";

/// Identities read per query while paging.
const PAGE: usize = 1_000;

/// The alerts of the noted principals and days: per principal and day, the APIs it called that
/// its baseline does not hold. At most the candidates' bound of principals is judged a run: the
/// noted ones first, then the principals beyond the bound that earlier runs and this one left
/// (per account and span), a page at a time; what is left waits in the backlog. The backlog and
/// skip changes go to `state`, written once the findings are stored.
pub async fn findings(
    pool: &PgPool,
    detectors: &Detectors,
    candidates: &RareApiCandidates,
    state: &mut health::StateChanges,
) -> Result<Vec<Finding>, sqlx::Error> {
    let left = health::cursors(pool, BACKLOG_PREFIX).await?;
    if !detectors.settings.rare_sensitive_api.enabled {
        // Switched off: the principals left wait for nothing; detection health says how many.
        drop_pieces(pool, &left, state, "the detector is disabled").await?;
        return Ok(Vec::new());
    }
    // The baseline of events stored before the rollup existed is built a month a run; until it
    // is, every call would look new: no one is judged, and detection health says why.
    if let api_rollup::Backfill::Building { months_done, next_month } = api_rollup::backfill_step(pool).await? {
        let note = format!(
            "baseline still being built from the events stored before the upgrade: {months_done} months done, \
             {next_month} next; no rare-API alerts until it is done"
        );
        let principals = candidates.spans.len() as i64;
        state.record_skip(RARE_SENSITIVE_API, principals, principals, note);
        // The noted principals too, not only those beyond the bound: judged once it is built.
        let accounts = account_spans(candidates.spans.iter().map(|((account, _), span)| (account, *span)));
        let accounts = merge_spans(accounts, candidates.overflow.iter().map(|(account, span)| (account, *span)));
        accounts.iter().for_each(|(account, span)| state.leave(overflow_cursor(account, *span)));
        return Ok(Vec::new());
    }
    // Pieces left longer than the expiry are dropped (counted in principals); the rest resume.
    let cutoff = Utc::now() - Duration::days(i64::from(health::BACKLOG_MAX_DAYS));
    let (expired, left): (Vec<_>, Vec<_>) = left.into_iter().partition(|c| c.added_at < cutoff);
    let reason = format!("left in the backlog for more than {} days", health::BACKLOG_MAX_DAYS);
    drop_pieces(pool, &expired, state, &reason).await?;
    // With a backlog, half the bound is kept for it: noted principals alone must not starve it
    // under sustained import. The noted ones that do not fit are left as their accounts' spans.
    let reserve = if left.is_empty() { 0 } else { candidates.max / 2 };
    let judge_now = candidates.max.saturating_sub(reserve);
    let mut findings = Vec::new();
    for ((account, identity), span) in candidates.spans.iter().take(judge_now) {
        findings.extend(judge_identity(pool, detectors, account, identity, *span).await?);
    }
    let later = account_spans(candidates.spans.iter().skip(judge_now).map(|((account, _), span)| (account, *span)));
    let later = merge_spans(later, candidates.overflow.iter().map(|(account, span)| (account, *span)));
    let mut budget = candidates.max.saturating_sub(candidates.spans.len().min(judge_now));
    // The work earlier runs left first (oldest first), then this run's.
    let mut work: Vec<(health::Cursor, bool)> = left.into_iter().map(|c| (c, false)).collect();
    work.extend(later.iter().map(|(account, span)| (overflow_cursor(account, *span), true)));
    let (mut remaining, mut new_remaining) = (0, 0);
    for (cursor, is_new) in &work {
        let (cursor, is_new) = (cursor, *is_new);
        let stopped = page_through(pool, detectors, cursor, &mut budget, &mut findings).await?;
        match (is_new, &stopped) {
            (false, Some(after)) if *after == cursor.after => {}
            (false, _) => state.resume(cursor, stopped.clone()),
            (true, Some(after)) => state.leave(health::Cursor { after: after.clone(), ..cursor.clone() }),
            (true, None) => {}
        }
        if let Some(after) = stopped {
            let count = identities_left(pool, cursor, &after).await?;
            remaining += count;
            new_remaining += if is_new { count } else { 0 };
        }
    }
    if remaining == 0 {
        state.clear_skip(RARE_SENSITIVE_API);
    } else {
        let note = format!(
            "more than {} principals to judge in one run: {remaining} left in the backlog for the next runs",
            candidates.max
        );
        state.record_skip(RARE_SENSITIVE_API, remaining, new_remaining, note);
    }
    Ok(findings)
}

/// Drops backlog pieces unjudged (each only if no other run moved it meanwhile), recording how
/// many principals they still held as dropped work.
async fn drop_pieces(
    pool: &PgPool,
    pieces: &[health::Cursor],
    state: &mut health::StateChanges,
    reason: &str,
) -> Result<(), sqlx::Error> {
    let mut dropped = 0;
    for piece in pieces {
        dropped += identities_left(pool, piece, &piece.after).await?;
        state.resume(piece, None);
    }
    if !pieces.is_empty() {
        let note = format!("{dropped} principals dropped unevaluated from the backlog: {reason}");
        state.record_dropped(RARE_SENSITIVE_API, dropped, note);
    }
    Ok(())
}

/// Per account, the span from the earliest to the latest of `spans`.
fn account_spans<'a>(
    spans: impl Iterator<Item = (&'a String, (DateTime<Utc>, DateTime<Utc>))>,
) -> BTreeMap<String, (DateTime<Utc>, DateTime<Utc>)> {
    merge_spans(BTreeMap::new(), spans)
}

/// `into` with each of `spans` merged into its account's span.
fn merge_spans<'a>(
    mut into: BTreeMap<String, (DateTime<Utc>, DateTime<Utc>)>,
    spans: impl Iterator<Item = (&'a String, (DateTime<Utc>, DateTime<Utc>))>,
) -> BTreeMap<String, (DateTime<Utc>, DateTime<Utc>)> {
    for (account, (first, last)) in spans {
        let span = into.entry(account.clone()).or_insert((first, last));
        *span = (span.0.min(first), span.1.max(last));
    }
    into
}

/// The paged work of an account's principals beyond the bound, from its start.
fn overflow_cursor(account: &str, (first, last): (DateTime<Utc>, DateTime<Utc>)) -> health::Cursor {
    health::Cursor {
        key: format!("{BACKLOG_PREFIX}{account}"),
        from: first,
        until: last,
        after: String::new(),
        added_at: Utc::now(),
    }
}

/// Judges the identities of `cursor`'s account active in its span, after its cursor, while the
/// budget lasts; returns the last one judged when some are left (`None`: none are).
async fn page_through(
    pool: &PgPool,
    detectors: &Detectors,
    cursor: &health::Cursor,
    budget: &mut usize,
    findings: &mut Vec<Finding>,
) -> Result<Option<String>, sqlx::Error> {
    let account = cursor.key.strip_prefix(BACKLOG_PREFIX).unwrap_or(&cursor.key);
    let span = (cursor.from, cursor.until);
    let mut after = cursor.after.clone();
    loop {
        // One more than the budget allows: whether any are left after it.
        let page = identities_active(pool, account, span, &after, (*budget).min(PAGE) + 1).await?;
        if page.is_empty() {
            return Ok(None);
        }
        if *budget == 0 {
            return Ok(Some(after));
        }
        tracing::info!(account, identities = page.len(), "aws-rare-sensitive-api: judging principals beyond the bound");
        for identity in page.iter().take(*budget) {
            findings.extend(judge_identity(pool, detectors, account, identity, span).await?);
            after.clone_from(identity);
            *budget -= 1;
        }
    }
}

/// One identity's days with sensitive writes from its new events' start to a baseline after
/// their end (new events can give later calls their history or baseline), each judged.
async fn judge_identity(
    pool: &PgPool,
    detectors: &Detectors,
    account: &str,
    identity: &str,
    (first, last): (DateTime<Utc>, DateTime<Utc>),
) -> Result<Vec<Finding>, sqlx::Error> {
    let settings = &detectors.settings.rare_sensitive_api;
    let reach = (first, last + Duration::days(settings.baseline_days));
    let mut findings = Vec::new();
    for day in days_with_writes(pool, settings, account, identity, reach).await? {
        findings.extend(judge_day(pool, detectors, account, identity, day).await?);
    }
    Ok(findings)
}

/// Identities after `after` (in order) with any event in `span` in the rollup, a page's worth.
async fn identities_active(
    pool: &PgPool,
    account: &str,
    (first, last): (DateTime<Utc>, DateTime<Utc>),
    after: &str,
    limit: usize,
) -> Result<Vec<String>, sqlx::Error> {
    sqlx::query_scalar!(
        r#"SELECT DISTINCT identity FROM api_call_days
           WHERE account_id = $1 AND day >= $2::date AND day <= $3::date AND event_source = '' AND event_name = ''
             AND last_seen >= $4 AND first_seen <= $5 AND identity > $6
           ORDER BY identity LIMIT $7"#,
        account,
        first.date_naive(),
        last.date_naive(),
        first,
        last,
        after,
        limit as i64,
    )
    .fetch_all(pool)
    .await
}

/// The most principals counted in one backlog piece (what health shows is then a lower bound):
/// counting a busy account's whole span every run would cost more than judging a page.
const LEFT_COUNTED_MAX: i64 = 100_000;

/// How many identities `cursor`'s paging has left after `after` (what detection health shows),
/// at most [`LEFT_COUNTED_MAX`].
async fn identities_left(pool: &PgPool, cursor: &health::Cursor, after: &str) -> Result<i64, sqlx::Error> {
    let account = cursor.key.strip_prefix(BACKLOG_PREFIX).unwrap_or(&cursor.key);
    sqlx::query_scalar!(
        r#"SELECT count(*) AS "n!" FROM (
               SELECT DISTINCT identity FROM api_call_days
               WHERE account_id = $1 AND day >= $2::date AND day <= $3::date AND event_source = '' AND event_name = ''
                 AND last_seen >= $4 AND first_seen <= $5 AND identity > $6
               LIMIT $7) AS left_over"#,
        account,
        cursor.from.date_naive(),
        cursor.until.date_naive(),
        cursor.from,
        cursor.until,
        after,
        LEFT_COUNTED_MAX,
    )
    .fetch_one(pool)
    .await
}

/// The UTC days in `from..=until` on which the identity made a successful write call to one of
/// the services the patterns name (from the rollup).
async fn days_with_writes(
    pool: &PgPool,
    settings: &RareApiSettings,
    account: &str,
    identity: &str,
    (from, until): (DateTime<Utc>, DateTime<Utc>),
) -> Result<Vec<DateTime<Utc>>, sqlx::Error> {
    let days = sqlx::query_scalar!(
        r#"SELECT DISTINCT day FROM api_call_days
           WHERE account_id = $1 AND identity = $2 AND day >= $3::date AND day <= $4::date
             AND event_source = ANY($5) AND last_seen >= $6 AND first_seen <= $7
           ORDER BY 1"#,
        account,
        identity,
        from.date_naive(),
        until.date_naive(),
        &settings.event_sources(),
        from,
        until,
    )
    .fetch_all(pool)
    .await?;
    Ok(days.into_iter().filter_map(|d| d.and_hms_opt(0, 0, 0)).map(|d| d.and_utc()).collect())
}

/// The finding of one identity's day, if it called sensitive APIs its baseline does not hold.
async fn judge_day(
    pool: &PgPool,
    detectors: &Detectors,
    account: &str,
    identity: &str,
    day: DateTime<Utc>,
) -> Result<Option<Finding>, sqlx::Error> {
    let settings = &detectors.settings.rare_sensitive_api;
    let names = day_apis(pool, settings, account, identity, day).await?;
    if names.is_empty() {
        return Ok(None);
    }
    let calls = first_calls(pool, settings, account, identity, day, &names).await?;
    let Some(earliest) = calls.iter().map(|c| c.event.event_time).min() else { return Ok(None) };
    if !has_history(pool, settings, account, identity, earliest).await? {
        return Ok(None);
    }
    let seen = called_before(pool, settings, account, identity, &calls).await?;
    let new: Vec<FirstCall> = calls.into_iter().filter(|c| !seen.contains(&c.api)).collect();
    Ok(finding(detectors, identity, new))
}

/// The names of the day's sensitive write APIs of the identity (from the rollup).
async fn day_apis(
    pool: &PgPool,
    settings: &RareApiSettings,
    account: &str,
    identity: &str,
    day: DateTime<Utc>,
) -> Result<Vec<String>, sqlx::Error> {
    let rows = sqlx::query!(
        r#"SELECT event_source, event_name FROM api_call_days
           WHERE account_id = $1 AND identity = $2 AND day = $3::date AND event_source = ANY($4)
           ORDER BY first_seen LIMIT $5"#,
        account,
        identity,
        day.date_naive(),
        &settings.event_sources(),
        MAX_APIS_PER_DAY,
    )
    .fetch_all(pool)
    .await?;
    // Whether the call is a write is the event's to say (readOnly); the name decides no more.
    Ok(rows
        .into_iter()
        .filter(|r| settings.is_sensitive_write(&api_name(&r.event_source, &r.event_name), Some(false)))
        .map(|r| r.event_name)
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect())
}

/// `names` as the database's `lower` makes them (what the index on `lower(event_name)` holds):
/// asked of it, since its collation decides (Turkish lower-cases `I` to a dotless `ı`).
async fn lowered_names(pool: &PgPool, names: &[String]) -> Result<Vec<String>, sqlx::Error> {
    sqlx::query_scalar!(r#"SELECT lower(name) AS "name!" FROM unnest($1::text[]) AS name"#, names).fetch_all(pool).await
}

/// The day's first successful call of each sensitive write API (named in `names`) by the
/// identity, in time order.
async fn first_calls(
    pool: &PgPool,
    settings: &RareApiSettings,
    account: &str,
    identity: &str,
    day: DateTime<Utc>,
    names: &[String],
) -> Result<Vec<FirstCall>, sqlx::Error> {
    let rows = sqlx::query!(
        r#"SELECT * FROM (
               SELECT DISTINCT ON (event_source, event_name)
                      event_source AS "event_source!", event_name AS "event_name!", read_only, event_id, event_time,
                      principal_arn, principal_type, user_name, access_key_id, host(source_ip) AS source_ip,
                      source_ip_text, user_agent, resource_ids, geo_country, geo_asn, geo_as_org,
                      source_is_tor, source_is_vpn, source_is_hosting, source_is_aws,
                      raw->>'sessionCredentialFromConsole' = 'true' AS console_session
               FROM cloudtrail_events
               WHERE event_name = ANY($6) AND event_time >= $3 AND event_time < $3 + interval '1 day'
                 -- Implied by the line above; lets the (account, lower(name), time) index answer
                 -- instead of every event of the account's day.
                 AND lower(event_name) = ANY($7)
                 AND account_id = $1 AND coalesce(principal_arn, user_name) LIKE $2
                 AND error_code IS NULL AND event_source = ANY($4)
                 -- made_by_a_service, in SQL: a service's call on the principal's behalf is not theirs.
                 AND raw->'userIdentity'->>'invokedBy' IS NULL AND coalesce(source_ip_text, '') NOT LIKE '%.amazonaws.com'
               ORDER BY event_source, event_name, event_time, event_id
               LIMIT $5) AS firsts
           ORDER BY event_time, event_id"#,
        account,
        like_pattern(identity),
        day,
        &settings.event_sources(),
        MAX_APIS_PER_DAY,
        names,
        &lowered_names(pool, names).await?,
    )
    .fetch_all(pool)
    .await?;
    Ok(rows
        .into_iter()
        .filter(|r| settings.is_sensitive_write(&api_name(&r.event_source, &r.event_name), r.read_only))
        .map(|r| FirstCall {
            api: api_name(&r.event_source, &r.event_name),
            event: PolicyEvent {
                account_id: account.to_string(),
                event_id: r.event_id,
                event_time: r.event_time,
                event_source: Some(r.event_source.clone()),
                event_name: Some(r.event_name.clone()),
                principal_arn: r.principal_arn,
                principal_type: r.principal_type,
                user_name: r.user_name,
                access_key_id: r.access_key_id,
                source_ip: r.source_ip.and_then(|ip| ip.parse::<IpAddr>().ok()),
                source_ip_text: r.source_ip_text,
                user_agent: r.user_agent,
                error_code: None,
                resource_ids: r.resource_ids,
                geo_country: r.geo_country,
                geo_city: None,
                geo_latitude: None,
                geo_longitude: None,
                geo_asn: r.geo_asn,
                network: SourceNetwork {
                    as_org: r.geo_as_org,
                    is_tor: r.source_is_tor,
                    is_vpn: r.source_is_vpn,
                    is_hosting: r.source_is_hosting,
                    is_aws: r.source_is_aws,
                },
                console_session: Some(r.console_session.unwrap_or(false)),
                raw: RawJson::new(String::new()),
            },
            event_source: r.event_source,
            event_name: r.event_name,
        })
        .filter(|call| !settings.allowed(&call.event))
        .collect())
}

/// Whether the identity has an event older than `min_history_days` within its baseline (from
/// the rollup's any-event rows: a day's first or last event in the range is one).
async fn has_history(
    pool: &PgPool,
    settings: &RareApiSettings,
    account: &str,
    identity: &str,
    at: DateTime<Utc>,
) -> Result<bool, sqlx::Error> {
    let (from, until) = (at - Duration::days(settings.baseline_days), at - Duration::days(settings.min_history_days));
    sqlx::query_scalar!(
        r#"SELECT EXISTS (SELECT 1 FROM api_call_days
                          WHERE account_id = $1 AND identity = $2 AND event_source = '' AND event_name = ''
                            AND day >= $3::date AND day <= $4::date
                            AND ((first_seen >= $5 AND first_seen < $6) OR (last_seen >= $5 AND last_seen < $6))) AS "history!""#,
        account,
        identity,
        from.date_naive(),
        until.date_naive(),
        from,
        until,
    )
    .fetch_one(pool)
    .await
}

/// The APIs of `calls` the identity also called (and was not refused) in the baseline before,
/// from the rollup: a day holds a call in `[at - baseline, at)` exactly when its first call is
/// before `at` and its last at or after `at - baseline` (a day is shorter than a baseline).
async fn called_before(
    pool: &PgPool,
    settings: &RareApiSettings,
    account: &str,
    identity: &str,
    calls: &[FirstCall],
) -> Result<HashSet<String>, sqlx::Error> {
    let sources: Vec<String> = calls.iter().map(|c| c.event_source.clone()).collect();
    let names: Vec<String> = calls.iter().map(|c| c.event_name.clone()).collect();
    let times: Vec<DateTime<Utc>> = calls.iter().map(|c| c.event.event_time).collect();
    let rows = sqlx::query!(
        r#"SELECT f.source AS "source!", f.name AS "name!"
           FROM unnest($3::text[], $4::text[], $5::timestamptz[]) AS f(source, name, at)
           WHERE EXISTS (
               SELECT 1 FROM api_call_days d
               WHERE d.account_id = $1 AND d.identity = $2 AND d.event_source = f.source AND d.event_name = f.name
                 AND d.day >= ((f.at - make_interval(days => $6::int)) AT TIME ZONE 'UTC')::date
                 AND d.day <= (f.at AT TIME ZONE 'UTC')::date
                 -- Only a call that succeeded is baseline (the rollup holds no other): a deliberately
                 -- failing one a second earlier must not make the real call familiar.
                 AND d.first_seen < f.at AND d.last_seen >= f.at - make_interval(days => $6::int))"#,
        account,
        identity,
        &sources,
        &names,
        &times,
        i32::try_from(settings.baseline_days).unwrap_or(i32::MAX),
    )
    .fetch_all(pool)
    .await?;
    Ok(rows.into_iter().map(|r| api_name(&r.source, &r.name)).collect())
}

/// The ATT&CK technique a sensitive call of `api`'s service stands for.
fn mitre_of(api: &str) -> Mitre {
    match api.split_once(':').map_or(api, |(service, _)| service) {
        "cloudtrail" | "config" => Mitre::new("TA0005", "T1562.008"),
        "guardduty" => Mitre::new("TA0005", "T1562.001"),
        "kms" => Mitre::new("TA0040", "T1486"),
        _ => Mitre::new("TA0003", "T1098"),
    }
}

/// One finding for a principal's new APIs of one day (none without any), as a burst: the count
/// is the number of new APIs, the evidence their first calls.
pub fn finding(detectors: &Detectors, identity: &str, new: Vec<FirstCall>) -> Option<Finding> {
    let first = new.first()?;
    let settings = &detectors.settings.rare_sensitive_api;
    let meta = detectors.meta(RARE_SENSITIVE_API);
    let who = first.event.user_name.as_deref().unwrap_or(identity);
    let mut names: Vec<&str> = new.iter().map(|c| c.api.as_str()).collect();
    let more = names.len().saturating_sub(8);
    names.truncate(8);
    let title = format!(
        "{who} made {} sensitive write call{} new for this principal (none in {} days): {}{}",
        new.len(),
        if new.len() == 1 { "" } else { "s" },
        settings.baseline_days,
        names.join(", "),
        if more > 0 { format!(" and {more} more") } else { String::new() }
    );
    let mut finding = meta.finding_for(&first.event, settings.severity, title);
    finding.subject = identity.to_string();
    // The alert stays TA0003/T1098 (it is dated by its first call: a logging call hours later
    // must not put defence evasion first in the incident's chain); each API names its own.
    let mut burst = Burst::starting(first.event.event_time);
    let mut resources: BTreeSet<String> = BTreeSet::new();
    for call in &new {
        burst.push(call.event.event_id.clone(), call.event.event_time);
        resources.extend(call.event.resource_ids.iter().cloned());
    }
    finding.resources = resources.into_iter().take(crate::alerts::store::MAX_ALERT_RESOURCES).collect();
    let apis: Vec<serde_json::Value> = new
        .iter()
        .take(NAMED)
        .map(|c| {
            let technique = mitre_of(&c.api);
            serde_json::json!({
                "api": c.api, "first_call": c.event.event_time, "event_id": c.event.event_id,
                "mitre": technique.label(),
            })
        })
        .collect();
    finding.details = serde_json::json!({
        "identity": identity, "apis": apis, "api_count": new.len(),
        "baseline_days": settings.baseline_days, "min_history_days": settings.min_history_days,
    });
    if let Some(network) = first.event.network_details() {
        finding.details["network"] = network;
    }
    burst.attach(&mut finding);
    Some(finding)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::detect::PolicySet;
    use crate::ingest::cloudtrail::CloudTrailEvent;

    fn call(arn: &str, kind: &str, source: &str, name: &str, read_only: bool, error: Option<&str>) -> PolicyEvent {
        let error = error.map_or(String::new(), |e| format!(r#""errorCode":"{e}","errorMessage":"no","#));
        let raw = format!(
            r#"{{"eventVersion":"1.08","userIdentity":{{"type":"{kind}","arn":"{arn}","accountId":"111122223333",
            "userName":"alice"}},"eventTime":"2026-11-12T05:00:00Z","eventSource":"{source}","eventName":"{name}",
            "awsRegion":"us-east-1","sourceIPAddress":"198.51.100.7","userAgent":"aws-cli/2.15.0",{error}
            "requestParameters":{{}},"responseElements":null,"eventID":"e-{name}","readOnly":{read_only},
            "eventType":"AwsApiCall","recipientAccountId":"111122223333"}}"#
        );
        PolicyEvent::from_parsed(CloudTrailEvent::parse(&raw, None).unwrap(), None)
    }

    const ALICE: &str = "arn:aws:iam::111122223333:user/alice";

    #[test]
    fn globs_match_the_whole_text() {
        assert!(glob("iam:*", "iam:CreateUser"));
        assert!(glob("kms:GenerateDataKey*", "kms:GenerateDataKeyWithoutPlaintext"));
        assert!(glob(
            "arn:aws:sts::*:assumed-role/AWSServiceRoleFor*",
            "arn:aws:sts::1:assumed-role/AWSServiceRoleForConfig/x"
        ));
        assert!(glob("a*b*c", "a-b-b-c"));
        assert!(!glob("iam:*", "kms:CreateKey"));
        assert!(!glob("s3:PutBucketPolicy", "s3:PutBucketPolicyStatus"));
        assert!(!glob("a*bc", "abc-"));
    }

    #[test]
    fn sensitive_writes_are_candidates_and_reads_refusals_and_services_are_not() {
        let set = PolicySet::builtin();
        let d = &set.detectors;
        let iam = "iam.amazonaws.com";
        assert!(is_candidate(d, &call(ALICE, "IAMUser", iam, "CreateUser", false, None)));
        assert!(is_candidate(d, &call(ALICE, "IAMUser", "s3.amazonaws.com", "PutBucketPolicy", false, None)));
        assert!(is_candidate(d, &call(ALICE, "IAMUser", "cloudtrail.amazonaws.com", "StopLogging", false, None)));
        assert!(!is_candidate(d, &call(ALICE, "IAMUser", iam, "ListUsers", true, None)), "a read");
        assert!(!is_candidate(d, &call(ALICE, "IAMUser", "kms.amazonaws.com", "Decrypt", false, None)), "data access");
        assert!(!is_candidate(d, &call(ALICE, "IAMUser", "s3.amazonaws.com", "PutObject", false, None)), "not listed");
        assert!(!is_candidate(d, &call(ALICE, "IAMUser", iam, "CreateUser", false, Some("AccessDenied"))), "refused");
        let linked = "arn:aws:sts::111122223333:assumed-role/AWSServiceRoleForConfig/AWSConfig-Describe";
        assert!(!is_candidate(d, &call(linked, "AssumedRole", iam, "CreateServiceLinkedRole", false, None)));
        assert!(!is_candidate(d, &call("config.amazonaws.com", "AWSService", iam, "CreateRole", false, None)));
        // EBS creating a KMS grant on alice's behalf is not alice administering KMS.
        let mut grant = call(ALICE, "IAMUser", "kms.amazonaws.com", "CreateGrant", false, None);
        assert!(is_candidate(d, &grant), "her own grant is a candidate");
        grant.source_ip_text = Some("ec2.amazonaws.com".into());
        assert!(!is_candidate(d, &grant), "a service's call on her behalf");
    }

    #[test]
    fn role_sessions_share_their_role_and_patterns_escape() {
        let session = "arn:aws:sts::111122223333:assumed-role/ci_deploy/i-0a1b2c3d4e5f60718";
        assert_eq!(identity(session), "arn:aws:sts::111122223333:assumed-role/ci_deploy");
        assert_eq!(identity(ALICE), ALICE);
        assert_eq!(like_pattern(identity(session)), "arn:aws:sts::111122223333:assumed-role/ci\\_deploy/%");
        assert_eq!(like_pattern(ALICE), ALICE);
    }

    #[test]
    fn a_day_of_new_apis_is_one_finding_listing_them() {
        let set = PolicySet::builtin();
        let names = ["CreateUser", "CreateAccessKey", "AttachUserPolicy", "PutRolePolicy", "CreateLoginProfile"];
        let mut calls: Vec<FirstCall> = names
            .iter()
            .enumerate()
            .map(|(i, name)| {
                let mut event = call(ALICE, "IAMUser", "iam.amazonaws.com", name, false, None);
                event.event_time += Duration::minutes(i as i64);
                FirstCall {
                    api: format!("iam:{name}"),
                    event_source: "iam.amazonaws.com".into(),
                    event_name: name.to_string(),
                    event,
                }
            })
            .collect();
        let mut trail = call(ALICE, "IAMUser", "cloudtrail.amazonaws.com", "StopLogging", false, None);
        trail.event_time += Duration::minutes(10);
        calls.push(FirstCall {
            api: "cloudtrail:StopLogging".into(),
            event_source: String::new(),
            event_name: String::new(),
            event: trail,
        });
        let finding = finding(&set.detectors, ALICE, calls).unwrap();
        assert_eq!(finding.policy_id, RARE_SENSITIVE_API);
        assert_eq!(finding.subject, ALICE);
        assert!(finding.title.starts_with("alice made 6 sensitive write calls new for this principal (none in 30 days): iam:CreateUser, iam:CreateAccessKey"), "{}", finding.title);
        assert_eq!(finding.details["api_count"], 6);
        let (burst, _) = Burst::of(&finding).unwrap();
        assert_eq!(burst.count, 6);
        assert_eq!(finding.mitre, [Mitre::new("TA0003", "T1098")]);
        assert_eq!(finding.details["apis"][5]["mitre"], "TA0005/T1562.008", "StopLogging");
        assert_eq!(finding.details["apis"][0]["mitre"], "TA0003/T1098");
        assert!(self::finding(&set.detectors, ALICE, Vec::new()).is_none());
    }

    #[test]
    fn settings_problems_name_the_field() {
        let settings = RareApiSettings { baseline_days: 0, apis: vec!["iam".into()], ..Default::default() };
        let problems = settings.problems();
        assert!(problems.iter().any(|p| p.starts_with("baseline_days:")), "{problems:?}");
        assert!(problems.iter().any(|p| p.starts_with("min_history_days:")), "{problems:?}");
        assert!(problems.iter().any(|p| p.starts_with("apis: \"iam\"")), "{problems:?}");
        assert!(RareApiSettings::default().problems().is_empty());
    }
}
