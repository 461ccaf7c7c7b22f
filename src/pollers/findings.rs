//! GuardDuty and Security Hub findings of one account and region, imported as alerts (the
//! `guardduty-findings` and `securityhub-findings` jobs). The conversion is `ingest::findings`;
//! this module pages through the services and folds each page into alerts with its checkpoint,
//! in one transaction, so a crash never loses or repeats a page.
//!
//! Each listing reads the findings updated since a keyset cursor (the latest `updatedAt` folded,
//! and the ids folded at that instant), oldest update first, in bounded pages. Each page after
//! one that moved the cursor is a new listing from the cursor, so a finding updated while a
//! listing is under way (which moves to its end and shifts the others) is never skipped; a page
//! token is followed only through findings that share one instant. A saved token the service no
//! longer accepts restarts the listing at the cursor, with a warning and a count in the job's
//! state. A region where the service is not enabled (no GuardDuty detector; Security Hub
//! answering that the account is not subscribed) is a state the job records (`state:
//! not-enabled` in its checkpoint and status), not an error.
//!
//! The findings are read from the answer's JSON as the service sent it (captured after the SDK
//! read it): the alert keeps the finding as AWS wrote it, and a file saved from the same call
//! converts the same way.

use std::sync::{Arc, Mutex};

use aws_smithy_runtime_api::box_error::BoxError;
use aws_smithy_runtime_api::client::interceptors::Intercept;
use aws_smithy_runtime_api::client::interceptors::context::{
    AfterDeserializationInterceptorContextRef, BeforeDeserializationInterceptorContextMut,
};
use aws_smithy_runtime_api::client::runtime_components::RuntimeComponents;
use aws_smithy_types::body::SdkBody;
use aws_smithy_types::config_bag::ConfigBag;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::{Job, PollContext, PollError, RunOutcome};
use crate::accounts::schedule::WITHOUT_GUARDDUTY_TARGET;
use crate::aws::{AccountSession, AwsError};
use crate::ingest::findings::{ExternalFinding, FindingSource, findings_of};

/// Finding ids per GuardDuty page (ListFindings and GetFindings take at most 50).
const GUARDDUTY_PAGE: i32 = 50;
/// Findings per Security Hub page (GetFindings allows 100).
const SECURITY_HUB_PAGE: i32 = 100;
/// The largest answer one page may be: 100 findings of the largest kind fit well within it.
pub const MAX_PAGE_BYTES: usize = 32 << 20;
/// The checkpoint's state for a region where the service is not enabled.
pub const NOT_ENABLED: &str = "not-enabled";
pub const ENABLED: &str = "enabled";

/// Where a job's listing is: the keyset cursor `from_ms` (epoch milliseconds) and the ids
/// already folded whose update is at `from_ms` exactly; `next_token` only while the listing
/// walks findings that share one instant; `started_ms` is when the listing began, from which
/// the next one starts (less the overlap) once this one ends.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
struct Listing {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    from_ms: Option<i64>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    seen_at_from: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    started_ms: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    next_token: Option<String>,
    /// The lower bound of the listing `next_token` belongs to: a token goes on only with the
    /// request that gave it (the services refuse it with other filters).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    token_from_ms: Option<i64>,
    /// `enabled` or `not-enabled`, for `accounts status` (with the token restarts, if any).
    #[serde(default)]
    state: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    detector_id: Option<String>,
    /// Saved page tokens the service refused (expired), each restarting the listing at the cursor.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    token_restarts: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    token_restarted_at: Option<DateTime<Utc>>,
}

/// What one page changed in the listing: how many findings were new to it, whether more pages
/// follow, and how far the findings are covered (when the listing ended).
struct PageStep {
    checkpoint: Value,
    fresh: u64,
    more: bool,
    covered: Option<DateTime<Utc>>,
}

impl Listing {
    fn load(checkpoint: &Value, ctx: &PollContext, now: DateTime<Utc>) -> Self {
        let mut listing: Listing = serde_json::from_value(checkpoint.clone()).unwrap_or_default();
        let lookback = chrono::Duration::from_std(ctx.options.lookback).unwrap_or(chrono::Duration::days(90));
        listing.from_ms.get_or_insert((now - lookback).timestamp_millis());
        listing.started_ms.get_or_insert(now.timestamp_millis());
        listing
    }

    fn since_ms(&self) -> i64 {
        self.from_ms.unwrap_or_default()
    }

    /// The lower bound of the next request: the cursor, or the bound of the listing whose token
    /// it follows.
    fn request_since_ms(&self) -> i64 {
        match (&self.next_token, self.token_from_ms) {
            (Some(_), Some(from)) => from,
            _ => self.since_ms(),
        }
    }

    /// Whether a finding is new to this listing: not below the cursor (a server that ignores
    /// the filter sends those too) and not already folded at the cursor's instant.
    fn is_fresh(&self, finding: &ExternalFinding) -> bool {
        let at = finding.updated_at.timestamp_millis();
        at > self.since_ms() || (at == self.since_ms() && !self.seen_at_from.contains(&finding.id))
    }

    /// The saved token was refused: the listing goes on from the cursor, and says so.
    fn restart_at_cursor(&mut self, job: &Job, error: &AwsError) {
        self.next_token = None;
        self.token_restarts = Some(self.token_restarts.unwrap_or(0) + 1);
        self.token_restarted_at = Some(Utc::now());
        tracing::warn!(job_id = job.job_id, account_id = %job.account_id, region = %job.region,
            source = job.source.as_str(), %error, "the saved page token was refused; listing again from the cursor");
    }

    fn state_line(&self) -> String {
        match (self.token_restarts, self.token_restarted_at) {
            (Some(n), Some(at)) => format!(
                "{ENABLED}; {n} expired page token(s), the listing restarted at its cursor (last {})",
                at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
            ),
            _ => ENABLED.into(),
        }
    }

    /// Moves the cursor past a page: `page` holds every finding the page converted, `fresh`
    /// those new to the listing. The next page follows the token only when a listing from the
    /// cursor would return this page again (it stayed on one instant, or brought nothing new).
    fn after_page(
        &mut self,
        page: &[&ExternalFinding],
        fresh: &[&ExternalFinding],
        next_token: Option<String>,
        ctx: &PollContext,
    ) -> PageStep {
        self.state = self.state_line();
        let requested = self.request_since_ms();
        if let Some(newest) = fresh.iter().map(|f| f.updated_at.timestamp_millis()).max() {
            if newest > self.since_ms() {
                self.from_ms = Some(newest);
                self.seen_at_from.clear();
            }
            let at_cursor = fresh.iter().filter(|f| f.updated_at.timestamp_millis() == newest);
            self.seen_at_from.extend(at_cursor.map(|f| f.id.clone()));
        }
        let spans = page.iter().any(|f| f.updated_at.timestamp_millis() < self.since_ms());
        let (more, covered) = match next_token {
            Some(token) => {
                self.next_token = (!spans || fresh.is_empty()).then_some(token);
                self.token_from_ms = self.next_token.as_ref().map(|_| requested);
                (true, None)
            }
            None => {
                let started = self.started_ms.take().unwrap_or_else(|| Utc::now().timestamp_millis());
                let overlap = ctx.options.overlap.as_millis() as i64;
                self.from_ms = Some(started - overlap);
                self.seen_at_from.clear();
                self.next_token = None;
                self.token_from_ms = None;
                (false, DateTime::from_timestamp_millis(started))
            }
        };
        let checkpoint = serde_json::to_value(&*self).unwrap_or_default();
        PageStep { checkpoint, fresh: fresh.len() as u64, more, covered }
    }
}

/// Whether the service refused a request because of its page token (expired, or from another
/// listing): a client error to a request that carried one.
fn refuses_token(error: &AwsError) -> bool {
    let refusal = matches!(
        error.code.as_deref(),
        Some("BadRequestException" | "InvalidInputException" | "ValidationException" | "InvalidNextTokenException")
    );
    let message = error.message.to_ascii_lowercase();
    // Not "the security token included in the request is expired": that is the credentials.
    refusal || ["nexttoken", "next token", "pagination token"].iter().any(|t| message.contains(t))
}

/// Captures the body of an answer as the SDK read it, so the findings are kept as AWS sent them,
/// and bounds the answer before the SDK parses it.
#[derive(Clone, Debug, Default)]
struct RawBody(Arc<Mutex<Captured>>);

#[derive(Debug, Default)]
struct Captured {
    body: Option<Vec<u8>>,
    /// The length an answer announced beyond [`MAX_PAGE_BYTES`]: refused unread.
    too_large: Option<u64>,
}

impl Intercept for RawBody {
    fn name(&self) -> &'static str {
        "skywarden-raw-findings"
    }

    /// Refuses an answer announced larger than [`MAX_PAGE_BYTES`], and caps one that does not
    /// announce its length, before anything reads it.
    fn modify_before_deserialization(
        &self,
        context: &mut BeforeDeserializationInterceptorContextMut<'_>,
        _components: &RuntimeComponents,
        _cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        let response = context.response_mut();
        let announced = response.headers().get("content-length").and_then(|v| v.trim().parse::<u64>().ok());
        if let Some(length) = announced.filter(|length| *length > MAX_PAGE_BYTES as u64) {
            self.lock().too_large = Some(length);
            return Err(format!("an answer of {length} bytes is larger than the {MAX_PAGE_BYTES} allowed").into());
        }
        let body = std::mem::replace(response.body_mut(), SdkBody::taken());
        *response.body_mut() =
            body.map(|inner| SdkBody::from_body_1_x(http_body_util::Limited::new(inner, MAX_PAGE_BYTES)));
        Ok(())
    }

    fn read_after_deserialization(
        &self,
        context: &AfterDeserializationInterceptorContextRef<'_>,
        _components: &RuntimeComponents,
        _cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        let body = context.response().body().bytes().map(<[u8]>::to_vec);
        self.lock().body = body;
        Ok(())
    }
}

impl RawBody {
    fn lock(&self) -> std::sync::MutexGuard<'_, Captured> {
        self.0.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The refusal of an answer too large to read, if that is why the call failed.
    fn refusal(&self, operation: &str) -> Option<PollError> {
        let length = self.lock().too_large?;
        Some(PollError::Target(format!(
            "{operation}: an answer of {length} bytes is larger than the {MAX_PAGE_BYTES} allowed; not read"
        )))
    }

    /// The findings array of the captured answer.
    fn findings(&self, operation: &str) -> Result<Vec<Value>, PollError> {
        let body = self.lock().body.take().unwrap_or_default();
        let document: Value = serde_json::from_slice(&body)
            .map_err(|error| PollError::Target(format!("{operation}: the answer is not JSON: {error}")))?;
        Ok(findings_of(&document).cloned().unwrap_or_default())
    }
}

/// Stack for the threads that read findings answers: the SDK's typed deserializers of a
/// finding (ASFF's resource details nest hundreds of types) need more than a runtime thread's
/// 2 MiB in debug builds. Only the pages touched are ever committed.
const FINDINGS_STACK_BYTES: usize = 64 << 20;

/// Runs an SDK call on the findings runtime, whose threads have [`FINDINGS_STACK_BYTES`] of
/// stack. It lives as long as the process, so the connections its calls open stay usable.
async fn on_large_stack<F>(call: F) -> Result<F::Output, PollError>
where
    F: std::future::Future + Send + 'static,
    F::Output: Send + 'static,
{
    static RUNTIME: std::sync::OnceLock<Result<tokio::runtime::Runtime, String>> = std::sync::OnceLock::new();
    let runtime = RUNTIME.get_or_init(|| {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("skywarden-findings")
            .thread_stack_size(FINDINGS_STACK_BYTES)
            .enable_all()
            .build()
            .map_err(|error| error.to_string())
    });
    let runtime =
        runtime.as_ref().map_err(|error| PollError::Target(format!("cannot start the findings runtime: {error}")))?;
    runtime.spawn(call).await.map_err(|error| PollError::Target(format!("the findings call failed: {error}")))
}

/// One GuardDuty run: the region's detector, then its findings updated since the cursor.
pub async fn run_guardduty(
    ctx: &PollContext,
    session: &AccountSession,
    job: &mut Job,
) -> Result<RunOutcome, PollError> {
    let client = session.guardduty(&job.region);
    let mut listing = Listing::load(&job.checkpoint, ctx, Utc::now());
    let detectors = client
        .list_detectors()
        .max_results(50)
        .send()
        .await
        .map_err(|error| AwsError::from_sdk("guardduty:ListDetectors", &job.region, error))?;
    // GuardDuty has at most one detector per account and region.
    let Some(detector) = detectors.detector_ids().first().cloned() else {
        return record_not_enabled(ctx, job, listing).await;
    };
    if listing.detector_id.as_deref() != Some(detector.as_str()) {
        listing.next_token = None;
    }
    listing.detector_id = Some(detector.clone());
    let mut outcome = RunOutcome::default();
    for _ in 0..ctx.options.max_pages_per_run.max(1) {
        let (ids, next_token) = match list_guardduty_page(&client, job, &detector, &listing).await {
            Err(error) if listing.next_token.is_some() && refuses_token(&error) => {
                listing.restart_at_cursor(job, &error);
                list_guardduty_page(&client, job, &detector, &listing).await?
            }
            listed => listed?,
        };
        let findings =
            if ids.is_empty() { Vec::new() } else { get_guardduty_findings(&client, job, &detector, ids).await? };
        let (stored, more) =
            store_page(ctx, job, FindingSource::GuardDuty, &findings, &mut listing, next_token).await?;
        outcome.stored += stored;
        if !more {
            return Ok(outcome);
        }
    }
    outcome.more_pending = true;
    Ok(outcome)
}

async fn list_guardduty_page(
    client: &aws_sdk_guardduty::Client,
    job: &Job,
    detector: &str,
    listing: &Listing,
) -> Result<(Vec<String>, Option<String>), AwsError> {
    use aws_sdk_guardduty::types::{Condition, FindingCriteria, OrderBy, SortCriteria};
    let criteria = FindingCriteria::builder()
        .criterion("updatedAt", Condition::builder().greater_than_or_equal(listing.request_since_ms()).build())
        // A GuardDuty administrator account sees its members' findings too: each is its own account's.
        .criterion("accountId", Condition::builder().equals(&job.account_id).build())
        .build();
    let page = client
        .list_findings()
        .detector_id(detector)
        .finding_criteria(criteria)
        .sort_criteria(SortCriteria::builder().attribute_name("updatedAt").order_by(OrderBy::Asc).build())
        .max_results(GUARDDUTY_PAGE)
        .set_next_token(listing.next_token.clone())
        .send()
        .await
        .map_err(|error| AwsError::from_sdk("guardduty:ListFindings", &job.region, error))?;
    let next = page.next_token().filter(|t| !t.is_empty()).map(str::to_owned);
    Ok((page.finding_ids().to_vec(), next))
}

async fn get_guardduty_findings(
    client: &aws_sdk_guardduty::Client,
    job: &Job,
    detector: &str,
    ids: Vec<String>,
) -> Result<Vec<Value>, PollError> {
    let raw = RawBody::default();
    let call =
        client.get_findings().detector_id(detector).set_finding_ids(Some(ids)).customize().interceptor(raw.clone());
    match on_large_stack(call.send()).await? {
        Ok(_) => raw.findings("guardduty:GetFindings"),
        Err(error) => Err(raw
            .refusal("guardduty:GetFindings")
            .unwrap_or_else(|| AwsError::from_sdk("guardduty:GetFindings", &job.region, error).into())),
    }
}

/// One Security Hub page: the findings of this account and region updated since the cursor,
/// and the next page's token.
async fn security_hub_page(
    client: &aws_sdk_securityhub::Client,
    job: &Job,
    listing: &Listing,
) -> Result<(Vec<Value>, Option<String>), PollError> {
    let raw = RawBody::default();
    let sent = client
        .get_findings()
        .filters(security_hub_filters(job, listing))
        .sort_criteria(
            aws_sdk_securityhub::types::SortCriterion::builder()
                .field("UpdatedAt")
                .sort_order(aws_sdk_securityhub::types::SortOrder::Ascending)
                .build(),
        )
        .max_results(SECURITY_HUB_PAGE)
        .set_next_token(listing.next_token.clone())
        .customize()
        .interceptor(raw.clone());
    let page = match on_large_stack(sent.send()).await? {
        Ok(page) => page,
        Err(error) => {
            let refused = raw.refusal("securityhub:GetFindings");
            return Err(
                refused.unwrap_or_else(|| AwsError::from_sdk("securityhub:GetFindings", &job.region, error).into())
            );
        }
    };
    let next_token = page.next_token().filter(|t| !t.is_empty()).map(str::to_owned);
    // The filters again, here: an aggregation region answers for its linked regions, an
    // administrator for its members, and not every endpoint honours every filter.
    let excluded = job.target == WITHOUT_GUARDDUTY_TARGET;
    let findings: Vec<Value> = raw
        .findings("securityhub:GetFindings")?
        .into_iter()
        .filter(|f| f["AwsAccountId"] == job.account_id.as_str() && f["Region"] == job.region.as_str())
        .filter(|f| !(excluded && f["ProductName"] == "GuardDuty"))
        .collect();
    Ok((findings, next_token))
}

/// One Security Hub run: the findings of this account and region updated since the cursor
/// (without those GuardDuty relays when the account imports GuardDuty's own).
pub async fn run_security_hub(
    ctx: &PollContext,
    session: &AccountSession,
    job: &mut Job,
) -> Result<RunOutcome, PollError> {
    let client = session.securityhub(&job.region);
    let mut listing = Listing::load(&job.checkpoint, ctx, Utc::now());
    let mut outcome = RunOutcome::default();
    for _ in 0..ctx.options.max_pages_per_run.max(1) {
        let page = match security_hub_page(&client, job, &listing).await {
            Err(PollError::Aws(error)) if listing.next_token.is_some() && refuses_token(&error) => {
                listing.restart_at_cursor(job, &error);
                security_hub_page(&client, job, &listing).await
            }
            page => page,
        };
        let (findings, next_token) = match page {
            Ok(page) => page,
            Err(PollError::Aws(error)) if is_not_subscribed(&error) => {
                return record_not_enabled(ctx, job, listing).await;
            }
            Err(error) => return Err(error),
        };
        let (stored, more) =
            store_page(ctx, job, FindingSource::SecurityHub, &findings, &mut listing, next_token).await?;
        outcome.stored += stored;
        if !more {
            return Ok(outcome);
        }
    }
    outcome.more_pending = true;
    Ok(outcome)
}

fn security_hub_filters(job: &Job, listing: &Listing) -> aws_sdk_securityhub::types::AwsSecurityFindingFilters {
    use aws_sdk_securityhub::types::{AwsSecurityFindingFilters, DateFilter, StringFilter, StringFilterComparison};
    let equals = |value: &str| StringFilter::builder().value(value).comparison(StringFilterComparison::Equals).build();
    let from = DateTime::from_timestamp_millis(listing.request_since_ms()).unwrap_or_default();
    let mut filters = AwsSecurityFindingFilters::builder()
        // Security Hub refuses a date range without its end: a fixed far one keeps every page's
        // request the same.
        .updated_at(
            DateFilter::builder()
                .start(from.to_rfc3339_opts(chrono::SecondsFormat::Millis, true))
                .end("2999-12-31T23:59:59.999Z")
                .build(),
        )
        .aws_account_id(equals(&job.account_id))
        .region(equals(&job.region));
    if job.target == WITHOUT_GUARDDUTY_TARGET {
        filters = filters.product_name(
            StringFilter::builder().value("GuardDuty").comparison(StringFilterComparison::NotEquals).build(),
        );
    }
    filters.build()
}

/// Security Hub's answer in a region where the account has not enabled it.
fn is_not_subscribed(error: &AwsError) -> bool {
    error.code.as_deref() == Some("InvalidAccessException") && error.message.contains("not subscribed")
}

/// The service is not enabled in this region: a state, recorded with the job's checkpoint
/// (the listing is kept, so enabling it later resumes where it was).
async fn record_not_enabled(ctx: &PollContext, job: &mut Job, mut listing: Listing) -> Result<RunOutcome, PollError> {
    listing.state = NOT_ENABLED.into();
    listing.detector_id = None;
    listing.next_token = None;
    let checkpoint = serde_json::to_value(&listing).unwrap_or_default();
    let mut tx = ctx.pool.begin().await?;
    job.save_checkpoint(&mut tx, checkpoint, Some(Utc::now()), 0).await?;
    tx.commit().await?;
    tracing::info!(job_id = job.job_id, account_id = %job.account_id, region = %job.region,
        source = job.source.as_str(), "not enabled in this region; nothing to import");
    Ok(RunOutcome::default())
}

/// Folds the findings of a page new to the listing into alerts and saves the checkpoint, in
/// one transaction. Returns how many findings raised or updated an alert, and whether more
/// pages follow.
async fn store_page(
    ctx: &PollContext,
    job: &mut Job,
    source: FindingSource,
    raw: &[Value],
    listing: &mut Listing,
    next_token: Option<String>,
) -> Result<(u64, bool), PollError> {
    let mut converted = Vec::with_capacity(raw.len());
    for value in raw {
        match source.convert(value) {
            Ok(finding) => converted.push(finding),
            // One malformed finding must not hold back the rest: logged and skipped.
            Err(error) => tracing::warn!(job_id = job.job_id, %error, "finding skipped"),
        }
    }
    let page: Vec<&ExternalFinding> = converted.iter().collect();
    let fresh: Vec<&ExternalFinding> = converted.iter().filter(|f| listing.is_fresh(f)).collect();
    let to_fold: Vec<ExternalFinding> = fresh.iter().map(|f| (*f).clone()).collect();
    let step = listing.after_page(&page, &fresh, next_token, ctx);
    let mut tx = ctx.pool.begin().await?;
    let folded = fold_findings(&mut tx, &to_fold).await?;
    job.save_checkpoint(&mut tx, step.checkpoint, step.covered, step.fresh).await?;
    tx.commit().await?;
    Ok((folded, step.more))
}

/// Folds findings into alerts inside `tx`. An active finding raises or updates its alert (a
/// rise in severity is routed). An inactive one (archived, resolved, suppressed) raises
/// nothing and notifies no one: it updates the alert it raised before and closes it if it is
/// still open; an analyst's resolved or dismissed alert stays as it is. The alert is the
/// finding's, whatever policy the finding names now (Security Hub can change it).
pub async fn fold_findings(tx: &mut sqlx::PgConnection, converted: &[ExternalFinding]) -> Result<u64, PollError> {
    let mut converted = converted.to_vec();
    keep_alert_identity(tx, &mut converted).await?;
    let (active, inactive): (Vec<&ExternalFinding>, Vec<&ExternalFinding>) = converted.iter().partition(|f| f.active);
    let findings: Vec<_> = active.iter().map(|f| f.finding.clone()).collect();
    let recorded = crate::alerts::store::record_in(tx, &findings).await.map_err(store_error)?;
    crate::notify::outbox::enqueue(tx, &recorded.changes).await?;
    let mut folded = 0;
    for external in active {
        refresh_alert(tx, external, &external.finding.alert_id()).await?;
        folded += 1;
    }
    for external in inactive {
        let alert_id = external.finding.alert_id();
        if refresh_alert(tx, external, &alert_id).await? {
            close_alert(tx, external, &alert_id).await?;
            folded += 1;
        }
    }
    Ok(folded)
}

fn store_error(error: crate::alerts::store::AlertStoreError) -> PollError {
    match error {
        crate::alerts::store::AlertStoreError::Db(error) => PollError::Database(error),
        other => PollError::Target(other.to_string()),
    }
}

/// Gives each finding the policy of the alert it raised before, so its alert id (which the
/// policy is part of) stays the finding's: the subject (the finding id) and the creation time
/// identify it, and Security Hub may rename a finding's control or generator later.
async fn keep_alert_identity(tx: &mut sqlx::PgConnection, findings: &mut [ExternalFinding]) -> Result<(), sqlx::Error> {
    let accounts: Vec<String> = findings.iter().map(|f| f.finding.account_id.clone()).collect();
    let keys: Vec<String> = findings.iter().map(|f| f.finding.dedup_key()).collect();
    let known = sqlx::query!(
        r#"SELECT a.account_id, a.dedup_key, min(a.policy_id) AS "policy_id!"
           FROM alerts a JOIN unnest($1::text[], $2::text[]) AS k(account_id, dedup_key)
             ON a.account_id = k.account_id AND a.dedup_key = k.dedup_key
           GROUP BY a.account_id, a.dedup_key"#,
        &accounts,
        &keys,
    )
    .fetch_all(&mut *tx)
    .await?;
    for finding in findings.iter_mut() {
        let key = finding.finding.dedup_key();
        let earlier = known.iter().find(|k| k.account_id == finding.finding.account_id && k.dedup_key == key);
        if let Some(earlier) = earlier.filter(|k| k.policy_id != finding.finding.policy_id) {
            finding.finding.policy_id = earlier.policy_id.clone();
        }
    }
    Ok(())
}

/// The alert follows the finding's latest update: its details (the finding as AWS last wrote
/// it), title and last-seen time; an older update arriving late changes nothing. Whether the
/// alert exists and took the update.
async fn refresh_alert(
    tx: &mut sqlx::PgConnection,
    external: &ExternalFinding,
    alert_id: &str,
) -> Result<bool, sqlx::Error> {
    let finding = &external.finding;
    let updated = sqlx::query!(
        r#"UPDATE alerts SET details = $3::jsonb || jsonb_build_object('first_evidence', details->'first_evidence'),
                  title = $4, last_seen = greatest(last_seen, $5)
           WHERE account_id = $1 AND alert_id = $2::text::uuid
             AND coalesce((details->>'updated_at')::timestamptz, '-infinity') <= $5"#,
        finding.account_id,
        alert_id,
        finding.details,
        finding.title,
        external.updated_at,
    )
    .execute(&mut *tx)
    .await?;
    Ok(updated.rows_affected() > 0)
}

/// AWS closed the finding: its alert, if still open (open, acknowledged or snoozed), is
/// resolved, recorded as the service's change; no route hears of it.
async fn close_alert(tx: &mut sqlx::PgConnection, external: &ExternalFinding, alert_id: &str) -> Result<(), PollError> {
    let open = sqlx::query_scalar!(
        r#"SELECT status::text AS "status!" FROM alerts WHERE account_id = $1 AND alert_id = $2::text::uuid"#,
        external.finding.account_id,
        alert_id,
    )
    .fetch_optional(&mut *tx)
    .await?
    .is_some_and(|status| matches!(status.as_str(), "open" | "acknowledged" | "snoozed"));
    if !open {
        return Ok(());
    }
    let source = external.finding.details["source"].as_str().unwrap_or("aws");
    let reason = format!("{source} no longer reports finding {} as active", external.id);
    crate::alerts::store::set_status_in(tx, alert_id, crate::model::AlertStatus::Resolved, None, source, &reason)
        .await
        .map_err(store_error)?;
    Ok(())
}

/// Largest findings file `skywarden import --findings` reads (a GetFindings answer is far smaller).
pub const MAX_FINDINGS_FILE_BYTES: u64 = 256 << 20;
/// Findings folded per transaction when importing a file.
const IMPORT_CHUNK: usize = 100;

/// What importing saved findings did.
#[derive(Debug, Default, Serialize)]
pub struct FindingsImport {
    pub files: u64,
    /// Findings read.
    pub findings: u64,
    /// Findings that raised or updated an alert (inactive ones without an alert do neither).
    pub folded: u64,
    /// `{file}: {problem}` for each file or finding skipped.
    pub errors: Vec<String>,
}

/// Which service wrote a finding: ASFF names `AwsAccountId`, GuardDuty `accountId`.
fn source_of(finding: &Value) -> FindingSource {
    if finding.get("AwsAccountId").is_some() { FindingSource::SecurityHub } else { FindingSource::GuardDuty }
}

/// Imports findings saved from GuardDuty's or Security Hub's `GetFindings` (`{"findings": [...]}`,
/// `{"Findings": [...]}` or a list) as alerts, like the pollers do. A bad file or finding is
/// listed in `errors` and skipped; only a database failure stops the import.
pub async fn import_files(pool: &sqlx::PgPool, paths: &[std::path::PathBuf]) -> Result<FindingsImport, PollError> {
    let mut summary = FindingsImport::default();
    for path in paths {
        let shown = path.display();
        let document = match read_bounded(path) {
            Ok(document) => document,
            Err(problem) => {
                summary.errors.push(format!("{shown}: {problem}"));
                continue;
            }
        };
        let Some(findings) = findings_of(&document) else {
            summary.errors.push(format!("{shown}: no `findings` or `Findings` list"));
            continue;
        };
        summary.files += 1;
        let mut converted = Vec::new();
        for (index, value) in findings.iter().enumerate() {
            summary.findings += 1;
            match source_of(value).convert(value) {
                Ok(finding) => converted.push(finding),
                Err(error) => summary.errors.push(format!("{shown}: finding {index}: {error}")),
            }
        }
        for chunk in converted.chunks(IMPORT_CHUNK) {
            let mut tx = pool.begin().await?;
            summary.folded += fold_findings(&mut tx, chunk).await?;
            tx.commit().await?;
        }
    }
    Ok(summary)
}

fn read_bounded(path: &std::path::Path) -> Result<Value, String> {
    let size = std::fs::metadata(path).map_err(|e| e.to_string())?.len();
    if size > MAX_FINDINGS_FILE_BYTES {
        return Err(format!("{size} bytes is more than the {MAX_FINDINGS_FILE_BYTES} a findings file may be"));
    }
    let bytes = std::fs::read(path).map_err(|e| e.to_string())?;
    serde_json::from_slice(&bytes).map_err(|e| format!("not JSON: {e} (line {}, column {})", e.line(), e.column()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::aws::AwsErrorKind;

    fn refused(code: &str, message: &str) -> AwsError {
        let code = Some(code.to_owned()).filter(|c| !c.is_empty());
        AwsError {
            operation: "guardduty:ListFindings",
            region: "us-east-1".into(),
            kind: AwsErrorKind::Rejected,
            code,
            message: message.into(),
        }
    }

    #[test]
    fn a_refused_page_token_is_told_from_refused_credentials() {
        assert!(refuses_token(&refused("BadRequestException", "The input nextToken is not valid.")));
        assert!(refuses_token(&refused("InvalidInputException", "Invalid parameter")));
        assert!(refuses_token(&refused("", "the NextToken has expired")));
        assert!(!refuses_token(&refused(
            "ExpiredTokenException",
            "The security token included in the request is expired"
        )));
        assert!(!refuses_token(&refused("AccessDeniedException", "not authorized")));
    }
}
