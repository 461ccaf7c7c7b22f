//! GuardDuty and Security Hub findings of one account and region, imported as alerts (the
//! `guardduty-findings` and `securityhub-findings` jobs). The conversion is `ingest::findings`;
//! this module pages through the services and folds each page into alerts with its checkpoint,
//! in one transaction, so a crash never loses or repeats a page.
//!
//! Each run lists the findings updated since the last listing began (less an overlap, for
//! findings the service indexes late), oldest update first, in bounded pages, resuming at the
//! page token a run stopped at. A region where the service is not enabled (no GuardDuty
//! detector; Security Hub answering that the account is not subscribed) is a state the job
//! records (`state: not-enabled` in its checkpoint and status), not an error.
//!
//! The findings are read from the answer's JSON as the service sent it (captured after the SDK
//! read it): the alert keeps the finding as AWS wrote it, and a file saved from the same call
//! converts the same way.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};

use aws_smithy_runtime_api::box_error::BoxError;
use aws_smithy_runtime_api::client::interceptors::Intercept;
use aws_smithy_runtime_api::client::interceptors::context::AfterDeserializationInterceptorContextRef;
use aws_smithy_runtime_api::client::runtime_components::RuntimeComponents;
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
const MAX_PAGE_BYTES: usize = 32 << 20;
/// The checkpoint's state for a region where the service is not enabled.
pub const NOT_ENABLED: &str = "not-enabled";
pub const ENABLED: &str = "enabled";

/// Where a job's listing is: the findings updated since `from_ms` (epoch milliseconds), at
/// `next_token` when a run stopped between pages; `started_ms` is when the listing began, from
/// which the next one starts (less the overlap) once this one ends.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
struct Listing {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    from_ms: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    started_ms: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    next_token: Option<String>,
    /// `enabled` or `not-enabled`, for `accounts status`.
    #[serde(default)]
    state: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    detector_id: Option<String>,
}

impl Listing {
    fn load(checkpoint: &Value, ctx: &PollContext, now: DateTime<Utc>) -> Self {
        let mut listing: Listing = serde_json::from_value(checkpoint.clone()).unwrap_or_default();
        let lookback = chrono::Duration::from_std(ctx.options.lookback).unwrap_or(chrono::Duration::days(90));
        listing.from_ms.get_or_insert((now - lookback).timestamp_millis());
        if listing.next_token.is_none() {
            listing.started_ms = Some(now.timestamp_millis());
        }
        listing
    }

    fn since_ms(&self) -> i64 {
        self.from_ms.unwrap_or_default()
    }

    /// The checkpoint after a page: the next page's token, or, at the end of the listing, the
    /// next listing's start; and how far the findings are covered (when the listing ended).
    fn after_page(&mut self, next_token: Option<String>, ctx: &PollContext) -> (Value, Option<DateTime<Utc>>) {
        self.state = ENABLED.into();
        let covered = match &next_token {
            Some(_) => None,
            None => {
                let started = self.started_ms.unwrap_or_else(|| Utc::now().timestamp_millis());
                let overlap = ctx.options.overlap.as_millis() as i64;
                self.from_ms = Some(self.since_ms().max(started - overlap));
                DateTime::from_timestamp_millis(started)
            }
        };
        self.next_token = next_token;
        (serde_json::to_value(&*self).unwrap_or_default(), covered)
    }
}

/// Captures the body of an answer as the SDK read it, so the findings are kept as AWS sent them.
#[derive(Clone, Debug, Default)]
struct RawBody(Arc<Mutex<Option<Vec<u8>>>>);

impl Intercept for RawBody {
    fn name(&self) -> &'static str {
        "skywarden-raw-findings"
    }

    fn read_after_deserialization(
        &self,
        context: &AfterDeserializationInterceptorContextRef<'_>,
        _components: &RuntimeComponents,
        _cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        let body = context.response().body().bytes().map(<[u8]>::to_vec);
        *self.0.lock().unwrap_or_else(|poisoned| poisoned.into_inner()) = body;
        Ok(())
    }
}

impl RawBody {
    /// The findings array of the captured answer, bounded in size.
    fn findings(&self, operation: &str) -> Result<Vec<Value>, PollError> {
        let body = self.0.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).take().unwrap_or_default();
        if body.len() > MAX_PAGE_BYTES {
            return Err(PollError::Target(format!(
                "{operation}: an answer of {} bytes is larger than the {MAX_PAGE_BYTES} allowed",
                body.len()
            )));
        }
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

/// One GuardDuty run: the region's detector, then its findings updated since the last listing.
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
        let (ids, next_token) = list_guardduty_page(&client, job, &detector, &listing).await?;
        let findings =
            if ids.is_empty() { Vec::new() } else { get_guardduty_findings(&client, job, &detector, ids).await? };
        let more = next_token.is_some();
        outcome.stored += store_page(ctx, job, FindingSource::GuardDuty, &findings, &mut listing, next_token).await?;
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
) -> Result<(Vec<String>, Option<String>), PollError> {
    use aws_sdk_guardduty::types::{Condition, FindingCriteria, OrderBy, SortCriteria};
    let criteria = FindingCriteria::builder()
        .criterion("updatedAt", Condition::builder().greater_than_or_equal(listing.since_ms()).build())
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
    on_large_stack(call.send())
        .await?
        .map_err(|error| AwsError::from_sdk("guardduty:GetFindings", &job.region, error))?;
    raw.findings("guardduty:GetFindings")
}

/// One Security Hub run: the findings of this account and region updated since the last
/// listing (without those GuardDuty relays when the account imports GuardDuty's own).
pub async fn run_security_hub(
    ctx: &PollContext,
    session: &AccountSession,
    job: &mut Job,
) -> Result<RunOutcome, PollError> {
    let client = session.securityhub(&job.region);
    let mut listing = Listing::load(&job.checkpoint, ctx, Utc::now());
    let mut outcome = RunOutcome::default();
    for _ in 0..ctx.options.max_pages_per_run.max(1) {
        let raw = RawBody::default();
        let sent = client
            .get_findings()
            .filters(security_hub_filters(job, &listing))
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
                let error = AwsError::from_sdk("securityhub:GetFindings", &job.region, error);
                if is_not_subscribed(&error) {
                    return record_not_enabled(ctx, job, listing).await;
                }
                return Err(error.into());
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
        let more = next_token.is_some();
        outcome.stored += store_page(ctx, job, FindingSource::SecurityHub, &findings, &mut listing, next_token).await?;
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
    let from = DateTime::from_timestamp_millis(listing.since_ms()).unwrap_or_default();
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

/// Folds a page of findings into alerts and saves the checkpoint, in one transaction. Returns
/// how many findings raised or updated an alert.
async fn store_page(
    ctx: &PollContext,
    job: &mut Job,
    source: FindingSource,
    raw: &[Value],
    listing: &mut Listing,
    next_token: Option<String>,
) -> Result<u64, PollError> {
    let mut converted = Vec::with_capacity(raw.len());
    for value in raw {
        match source.convert(value) {
            Ok(finding) => converted.push(finding),
            // One malformed finding must not hold back the rest: logged and skipped.
            Err(error) => tracing::warn!(job_id = job.job_id, %error, "finding skipped"),
        }
    }
    let (checkpoint, covered) = listing.after_page(next_token, ctx);
    let mut tx = ctx.pool.begin().await?;
    let folded = fold_findings(&mut tx, &converted).await?;
    job.save_checkpoint(&mut tx, checkpoint, covered, raw.len() as u64).await?;
    tx.commit().await?;
    Ok(folded)
}

/// Folds findings into alerts inside `tx`: an active finding raises or updates its alert; an
/// inactive one (archived, resolved, suppressed) only updates an alert it raised before. The
/// alert's status is never touched: an archived finding does not reopen a closed alert, and an
/// analyst's choice stands when AWS updates the finding.
pub async fn fold_findings(tx: &mut sqlx::PgConnection, converted: &[ExternalFinding]) -> Result<u64, PollError> {
    let alert_ids: Vec<String> = converted.iter().map(|f| f.finding.alert_id()).collect();
    let existing: HashSet<String> = sqlx::query_scalar!(
        r#"SELECT alert_id::text AS "id!" FROM alerts WHERE alert_id = ANY($1::text[]::uuid[])"#,
        &alert_ids
    )
    .fetch_all(&mut *tx)
    .await?
    .into_iter()
    .collect();
    let kept: Vec<(&ExternalFinding, &String)> =
        converted.iter().zip(&alert_ids).filter(|(f, id)| f.active || existing.contains(*id)).collect();
    let findings: Vec<_> = kept.iter().map(|(f, _)| f.finding.clone()).collect();
    let recorded = crate::alerts::store::record_in(tx, &findings).await.map_err(|error| match error {
        crate::alerts::store::AlertStoreError::Db(error) => PollError::Database(error),
        other => PollError::Target(other.to_string()),
    })?;
    crate::notify::outbox::enqueue(tx, &recorded.changes).await?;
    for (external, alert_id) in &kept {
        refresh_alert(tx, external, alert_id).await?;
    }
    Ok(kept.len() as u64)
}

/// The alert follows the finding's latest update: its details (the finding as AWS last wrote
/// it), title and last-seen time; an older update arriving late changes nothing.
async fn refresh_alert(
    tx: &mut sqlx::PgConnection,
    external: &ExternalFinding,
    alert_id: &str,
) -> Result<(), sqlx::Error> {
    let finding = &external.finding;
    sqlx::query!(
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
