//! The audit trail: `GET /api/v1/events` with filters, a match count and keyset pagination both
//! ways, the same search as a file at `GET /api/v1/events/export` (JSON lines carry the raw
//! event; a cut file says so), and one event with its raw JSON at `GET /api/v1/events/{event_id}`
//! (with the alerts it is evidence of) or `GET /api/v1/events/{account}/{event_id}`. The
//! investigation pages' summaries of a principal (`GET /api/v1/principals/activity`) and of an
//! address (`GET /api/v1/addresses/{address}`) live here too. The queries are
//! [`crate::search::events`] and [`crate::search::entities`].

use std::collections::HashMap;

use axum::Json;
use axum::Router;
use axum::extract::{Path, State};
use axum::routing::get;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::ApiContext;
use super::error::{ApiError, ErrorBody};
use super::extractor::Caller;
use super::query::{Limit, TypedQuery, checked, time};
use crate::archive::read::{Direction, Hold, LakeDay, LakeError, LakeRead, Reading, Span};
use crate::auth::Role;
use crate::net::Cidr;
use crate::search::contains_pattern;
use crate::search::entities::{self, AddressActivity, EventDetail, PrincipalActivity};
use crate::search::events::{self as event_search, EventFilter, EventKey, EventSummary, search};

pub const MAX_LIMIT: i64 = 1000;
const DEFAULT_LIMIT: i64 = 100;
/// Rows one export may hold.
pub const EXPORT_MAX: i64 = 100_000;
type PageLimit = Limit<MAX_LIMIT, DEFAULT_LIMIT>;
type ExportLimit = Limit<EXPORT_MAX, EXPORT_MAX>;

pub fn router() -> Router<ApiContext> {
    Router::new()
        .route("/api/v1/events", get(list))
        .route("/api/v1/events/export", get(export))
        .route("/api/v1/events/{event_id}", get(detail))
        .route("/api/v1/events/{account}/{event_id}", get(one))
        .route("/api/v1/principals/activity", get(principal_activity))
        .route("/api/v1/addresses/{address}", get(address_activity))
}

/// Matches counted at most: past this the audit trail says "more than".
pub const COUNT_CAP: i64 = 10_000;

/// The filters of `GET /api/v1/events`; they combine (AND).
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
struct EventQuery {
    /// A 12-digit account id.
    account: Option<String>,
    /// An ARN (`arn:…`) or a user name.
    principal: Option<String>,
    /// e.g. `ConsoleLogin`.
    event_name: Option<String>,
    /// e.g. `ec2.amazonaws.com`.
    event_source: Option<String>,
    /// A resource id such as `sg-…` or `i-…`.
    resource: Option<String>,
    /// An address or CIDR.
    #[serde(default, deserialize_with = "checked::<_, Cidr>")]
    source_ip: Option<String>,
    /// ISO 3166 alpha-2, either case (`UA`).
    #[serde(default, deserialize_with = "country_code")]
    country: Option<String>,
    /// From this time on (RFC 3339).
    #[serde(default, deserialize_with = "time")]
    since: Option<DateTime<Utc>>,
    /// Before this time (RFC 3339).
    #[serde(default, deserialize_with = "time")]
    until: Option<DateTime<Utc>>,
    /// Only events that failed (an error code or message), or only those that did not.
    failed: Option<bool>,
    /// Only reads, or only changes.
    read_only: Option<bool>,
    /// Text, 3 to 200 characters, any case, anywhere in the event's searchable fields: event name
    /// and source, event and request ids, access key id, principal ARN, id and user name (and the
    /// session issuer's ARN), source address, user agent, error code and
    /// message, resource ARNs, request, response and additional-data values (each free-form
    /// block up to its first 1,500 characters or less; not JSON keys). Indexed shortly after
    /// import; events not indexed yet are scanned.
    #[serde(default, deserialize_with = "full_text")]
    q: Option<String>,
    /// Events per page.
    #[serde(default)]
    #[param(inline)]
    limit: PageLimit,
    /// `next_cursor` of the previous page: the page of older events.
    #[serde(default, deserialize_with = "cursor")]
    #[param(value_type = Option<String>)]
    cursor: Option<EventKey>,
    /// `previous_cursor` of a page: the page of newer events before it.
    #[serde(default, deserialize_with = "cursor")]
    #[param(value_type = Option<String>)]
    before: Option<EventKey>,
}

impl From<EventQuery> for EventFilter {
    fn from(query: EventQuery) -> Self {
        // `before` is read by the handler; a filter pages one way.
        Self {
            account: query.account,
            principal: query.principal,
            event_name: query.event_name,
            event_source: query.event_source,
            resource: query.resource,
            source_ip: query.source_ip,
            country: query.country.map(|c| c.to_ascii_uppercase()),
            since: query.since,
            until: query.until,
            failed: query.failed,
            read_only: query.read_only,
            text: query.q.as_deref().map(contains_pattern),
            limit: query.limit.0,
            after: query.cursor,
        }
    }
}

/// What an export is written as.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
enum ExportFormat {
    /// For spreadsheets.
    #[default]
    Csv,
    /// One JSON object a line, for tools.
    Jsonl,
}

impl ExportFormat {
    fn extension(self) -> &'static str {
        match self {
            Self::Csv => "csv",
            Self::Jsonl => "jsonl",
        }
    }
}

/// The filters of `GET /api/v1/events/export`: those of the audit trail without its paging,
/// and the file format.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
struct ExportQuery {
    /// `csv` (the default) or `jsonl`.
    #[serde(default)]
    #[param(inline)]
    format: ExportFormat,
    /// A 12-digit account id.
    account: Option<String>,
    /// An ARN (`arn:…`) or a user name.
    principal: Option<String>,
    /// e.g. `ConsoleLogin`.
    event_name: Option<String>,
    /// e.g. `ec2.amazonaws.com`.
    event_source: Option<String>,
    /// A resource id such as `sg-…` or `i-…`.
    resource: Option<String>,
    /// An address or CIDR.
    #[serde(default, deserialize_with = "checked::<_, Cidr>")]
    source_ip: Option<String>,
    /// ISO 3166 alpha-2, either case (`UA`).
    #[serde(default, deserialize_with = "country_code")]
    country: Option<String>,
    /// From this time on (RFC 3339).
    #[serde(default, deserialize_with = "time")]
    since: Option<DateTime<Utc>>,
    /// Before this time (RFC 3339).
    #[serde(default, deserialize_with = "time")]
    until: Option<DateTime<Utc>>,
    /// Only events that failed (an error code or message), or only those that did not.
    failed: Option<bool>,
    /// Only reads, or only changes.
    read_only: Option<bool>,
    /// Text, 3 to 200 characters, any case, anywhere in the event's searchable fields: event name
    /// and source, event and request ids, access key id, principal ARN, id and user name (and the
    /// session issuer's ARN), source address, user agent, error code and
    /// message, resource ARNs, request, response and additional-data values (each free-form
    /// block up to its first 1,500 characters or less; not JSON keys). Indexed shortly after
    /// import; events not indexed yet are scanned.
    #[serde(default, deserialize_with = "full_text")]
    q: Option<String>,
    /// Events in the file, newest first.
    #[serde(default)]
    #[param(inline)]
    limit: ExportLimit,
}

impl From<ExportQuery> for EventFilter {
    fn from(query: ExportQuery) -> Self {
        Self {
            account: query.account,
            principal: query.principal,
            event_name: query.event_name,
            event_source: query.event_source,
            resource: query.resource,
            source_ip: query.source_ip,
            country: query.country.map(|c| c.to_ascii_uppercase()),
            since: query.since,
            until: query.until,
            failed: query.failed,
            read_only: query.read_only,
            text: query.q.as_deref().map(contains_pattern),
            limit: query.limit.0,
            after: None,
        }
    }
}

/// `country`: two letters, upper-cased.
fn country_code<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<Option<String>, D::Error> {
    let text = String::deserialize(deserializer)?;
    if text.len() != 2 || !text.bytes().all(|b| b.is_ascii_alphabetic()) {
        return Err(serde::de::Error::invalid_value(
            serde::de::Unexpected::Str(&text),
            &"an ISO 3166 alpha-2 country code such as UA",
        ));
    }
    Ok(Some(text.to_ascii_uppercase()))
}

/// `q`: 3 to 200 characters.
fn full_text<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<Option<String>, D::Error> {
    let text = String::deserialize(deserializer)?;
    if text.chars().count() < 3 || text.len() > 200 {
        return Err(serde::de::Error::invalid_value(serde::de::Unexpected::Str(&text), &"3 to 200 characters"));
    }
    Ok(Some(text))
}

fn cursor<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<Option<EventKey>, D::Error> {
    let text = String::deserialize(deserializer)?;
    decode_cursor(&text).map(Some).ok_or_else(|| serde::de::Error::custom("cursor is not one this API gave"))
}

/// Cursors are opaque to clients: the position of the last event returned, hex-encoded.
fn encode_cursor(time: DateTime<Utc>, account: &str, event_id: &str) -> String {
    format!("{}\u{1f}{account}\u{1f}{event_id}", time.to_rfc3339_opts(chrono::SecondsFormat::Micros, true))
        .bytes()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn decode_cursor(cursor: &str) -> Option<EventKey> {
    if !cursor.len().is_multiple_of(2) || cursor.len() > 2048 {
        return None;
    }
    let bytes: Option<Vec<u8>> =
        (0..cursor.len()).step_by(2).map(|i| u8::from_str_radix(cursor.get(i..i + 2)?, 16).ok()).collect();
    let text = String::from_utf8(bytes?).ok()?;
    let mut parts = text.split('\u{1f}');
    let time = parts.next()?.parse().ok()?;
    let account = parts.next()?.to_string();
    let event_id = parts.next()?.to_string();
    parts.next().is_none().then_some((time, account, event_id))
}

/// A page of events, newest first.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct EventPage {
    pub events: Vec<EventSummary>,
    /// The `cursor` of the page of older events; absent on the oldest page.
    pub next_cursor: Option<String>,
    /// The `before` of the page of newer events; absent on the newest page.
    pub previous_cursor: Option<String>,
    /// Events matching the filters, counted up to `COUNT_CAP` (10,000).
    pub total: i64,
    /// True when there are more matches than `total` (or archived days in the range were not
    /// counted: `archive.complete` is then false).
    pub total_is_lower_bound: bool,
    /// Present when the range touches archived months: what was read from the lake for this
    /// answer, and whether it is complete (a bound reached or an object unreadable says which).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub archive: Option<LakeRead>,
}

fn key_cursor(event: &EventSummary) -> String {
    encode_cursor(event.event_time, &event.account_id, &event.event_id)
}

#[utoipa::path(get, path = "/api/v1/events", tag = "audit trail", params(EventQuery), responses((status = 200, description = "OK", body = EventPage), (status = 400, description = "A bad parameter; `field` names it", body = ErrorBody), (status = 401, description = "No valid token or session", body = ErrorBody)), security(("bearer" = []), ("session" = [])))]
async fn list(
    caller: Caller,
    State(context): State<ApiContext>,
    TypedQuery(query): TypedQuery<EventQuery>,
) -> Result<Json<EventPage>, ApiError> {
    if query.cursor.is_some() && query.before.is_some() {
        return Err(ApiError::bad("before", "give cursor (older) or before (newer), not both"));
    }
    let before = query.before.clone();
    let mut filter = EventFilter::from(query);
    tracing::debug!(token = %caller.token_id, ?filter, "event search");
    let settings = aws_settings(&context);
    let span = Span { since: filter.since, until: filter.until, account: filter.account.clone() };
    let days = context.lake.days(&context.db, &span).await.map_err(lake_error)?;
    let mut reading = days.as_ref().map(|days| context.lake.begin(days));
    let lake = (&mut reading, days.as_deref(), &settings);
    let (events, next_cursor, previous_cursor) = match &before {
        Some(key) => newer_page(&context.db, lake, &filter, &span, key).await?,
        None => older_page(&context.db, lake, &filter, &span).await?,
    };
    filter.after = None;
    let db = &context.db;
    if let (Some(reading), Some(days)) = (&mut reading, &days) {
        reading.ensure_all(db, &settings, &span, days).await;
    }
    let counted = event_search::count(db, &filter, COUNT_CAP + 1).await?;
    let archive = match reading {
        Some(reading) => Some(reading.finish(db, caller.role >= Role::Admin).await),
        None => None,
    };
    let uncounted = archive.as_ref().is_some_and(|a| !a.complete);
    Ok(Json(EventPage {
        events,
        next_cursor,
        previous_cursor,
        total: counted.min(COUNT_CAP),
        total_is_lower_bound: counted > COUNT_CAP || uncounted,
        archive,
    }))
}

/// A page, its `next_cursor` and its `previous_cursor`.
type Paged = (Vec<EventSummary>, Option<String>, Option<String>);
/// A request's reading of the lake (when its range touches archived days) and its settings.
type LakeArgs<'r, 'l> = (&'r mut Option<Reading<'l>>, Option<&'r [LakeDay]>, &'r crate::aws::AwsSettings);

/// Where a page that stopped at an unread day goes on: a key at the gap's time whose empty
/// account and id sort before every stored key at that time (event ids are never empty), so
/// the next page is exactly the events past it.
fn gap_key(gap: DateTime<Utc>) -> EventKey {
    (gap, String::new(), String::new())
}

/// The page of older events (`cursor`, or the newest page).
async fn older_page(
    db: &sqlx::PgPool,
    lake: LakeArgs<'_, '_>,
    filter: &EventFilter,
    span: &Span,
) -> Result<Paged, ApiError> {
    // One more than the page: a cursor only when an event follows, so the last page has none.
    let page_size = usize::try_from(filter.limit).unwrap_or(0);
    let full = page_size + 1;
    let older = |floor: Option<DateTime<Utc>>| {
        let mut filter = EventFilter { limit: filter.limit + 1, ..filter.clone() };
        filter.since = floor.map_or(filter.since, |f| Some(filter.since.map_or(f, |s| s.max(f))));
        async move {
            let events = search(db, &filter).await?;
            let filled = events.len() >= full;
            Ok((events, filled))
        }
    };
    // The cursor's own time may still hold events after it (the key goes on with the account
    // and id): one microsecond past it.
    let after = match &filter.after {
        Some(key) => Some(
            key.0
                .checked_add_signed(chrono::Duration::microseconds(1))
                .ok_or_else(|| ApiError::bad("cursor", "the cursor's time is out of range"))?,
        ),
        None => None,
    };
    let page_span = Span { until: after.map(|a| span.until.map_or(a, |u| u.min(a))).or(span.until), ..span.clone() };
    let (mut events, gap) = with_lake(db, lake, &page_span, Direction::NewestFirst, older).await?;
    let more = events.len() > page_size;
    events.truncate(page_size);
    let next = match (more, gap.map(gap_key)) {
        (true, _) => events.last().map(key_cursor),
        // Stopped at a day not read: the next page starts there, if that is past this one.
        (false, Some(gap)) => {
            // Past the last event shown, else past where the page started.
            let shown = events.last().map(|e| (e.event_time, e.account_id.clone(), e.event_id.clone()));
            let start = shown.or_else(|| filter.after.clone()).or_else(|| span.until.map(gap_key));
            let past = start.is_none_or(|k| gap < k);
            past.then(|| encode_cursor(gap.0, &gap.1, &gap.2))
        }
        (false, None) => None,
    };
    let previous = filter.after.is_some().then(|| events.first().map(key_cursor)).flatten();
    Ok((events, next, previous))
}

/// The page of newer events before `key` (`before`).
async fn newer_page(
    db: &sqlx::PgPool,
    lake: LakeArgs<'_, '_>,
    filter: &EventFilter,
    span: &Span,
    key: &EventKey,
) -> Result<Paged, ApiError> {
    let page_size = usize::try_from(filter.limit).unwrap_or(0);
    let full = page_size + 1;
    let newer = |ceiling: Option<DateTime<Utc>>| {
        let mut filter = EventFilter { limit: filter.limit + 1, ..filter.clone() };
        filter.until = ceiling.map_or(filter.until, |c| Some(filter.until.map_or(c, |u| u.min(c))));
        async move {
            let events = event_search::search_newer(db, &filter, key).await?;
            let filled = events.len() >= full;
            Ok((events, filled))
        }
    };
    let page_span = Span { since: Some(span.since.map_or(key.0, |s| s.max(key.0))), ..span.clone() };
    let (mut events, gap) = with_lake(db, lake, &page_span, Direction::OldestFirst, newer).await?;
    let more = events.len() > page_size;
    if more {
        events.remove(0);
    }
    let previous = match (more, gap.map(gap_key)) {
        (true, _) => events.first().map(key_cursor),
        // Stopped at a day not read: the page of newer events starts there, if past this one.
        (false, Some(gap)) => {
            let shown = events.first().map(|e| (e.event_time, e.account_id.clone(), e.event_id.clone()));
            let past = gap > shown.unwrap_or_else(|| key.clone());
            past.then(|| encode_cursor(gap.0, &gap.1, &gap.2))
        }
        (false, None) => None,
    };
    let next = events.last().map(key_cursor);
    Ok((events, next, previous))
}

/// Skywarden's own AWS settings, for a lake in S3.
fn aws_settings(context: &ApiContext) -> crate::aws::AwsSettings {
    context.aws.as_ref().map_or_else(crate::aws::AwsSettings::from_env, |aws| aws.0.clone())
}

fn lake_error(error: LakeError) -> ApiError {
    match error {
        LakeError::Database(error) => error.into(),
        other => ApiError::Internal(anyhow::anyhow!(other.to_string())),
    }
}

/// A page from `search`, the archived days of `span` loaded first as the page needs them when
/// the search's range touches any; with the edge where it stopped at a day it could not read.
async fn with_lake<F, Fut>(
    db: &sqlx::PgPool,
    (reading, days, settings): LakeArgs<'_, '_>,
    span: &Span,
    direction: Direction,
    mut search: F,
) -> Result<(Vec<EventSummary>, Option<DateTime<Utc>>), sqlx::Error>
where
    F: FnMut(Option<DateTime<Utc>>) -> Fut,
    Fut: std::future::Future<Output = Result<(Vec<EventSummary>, bool), sqlx::Error>>,
{
    match (reading, days) {
        (Some(reading), Some(days)) => {
            reading.ensure_page(db, settings, span, &days_in(days, span), direction, search).await
        }
        _ => Ok((search(None).await?.0, None)),
    }
}

/// The days of `days` that `span` reaches.
fn days_in(days: &[LakeDay], span: &Span) -> Vec<LakeDay> {
    days.iter()
        .filter(|d| span.since.is_none_or(|s| d.end() > s) && span.until.is_none_or(|u| d.start() < u))
        .cloned()
        .collect()
}

/// Loads every archived day `filter`'s range touches, for an answer that must hold all of them
/// (an export, one event): a range the bounds do not allow, or an unreadable object, is a 400
/// naming the bound (and, for an administrator, the object), never a shorter answer. With
/// `hold`, the row groups read stay cached until the returned hold is dropped (an export reads
/// them page by page).
async fn load_all(
    context: &ApiContext,
    caller: &Caller,
    filter: &EventFilter,
    hold: bool,
) -> Result<Option<Hold>, ApiError> {
    let span = Span { since: filter.since, until: filter.until, account: filter.account.clone() };
    let Some(days) = context.lake.days(&context.db, &span).await.map_err(lake_error)? else { return Ok(None) };
    // A held reading puts each row group in its hold as it uses it; dropped midway (the client
    // gone), the reading releases the hold.
    let mut reading = if hold { context.lake.begin_held(&days, &context.db) } else { context.lake.begin(&days) };
    reading.ensure_all(&context.db, &aws_settings(context), &span, &days).await;
    let admin = caller.role >= Role::Admin;
    let (read, held) = reading.finish_held(&context.db, admin).await;
    if read.complete {
        return Ok(held);
    }
    let why = read.limit.into_iter().chain(read.errors).collect::<Vec<_>>().join("; ");
    Err(ApiError::bad("since", format!("archived months in the range could not all be read from the lake: {why}")))
}

/// Events an export reads from the database at a time: its memory is one such page, whatever
/// the export's size.
const EXPORT_PAGE: i64 = 1000;

/// The search as a file: `format=csv` (for spreadsheets) or `format=jsonl` (for tools), up to
/// `EXPORT_MAX` events, newest first. Streamed a page at a time; a failure after the first page
/// aborts the transfer (the client sees an incomplete download, never a short file).
#[utoipa::path(get, path = "/api/v1/events/export", tag = "audit trail", params(ExportQuery), responses((status = 200, description = "OK", body = String), (status = 400, description = "A bad parameter; `field` names it", body = ErrorBody), (status = 401, description = "No valid token or session", body = ErrorBody)), security(("bearer" = []), ("session" = [])))]
async fn export(
    caller: Caller,
    State(context): State<ApiContext>,
    TypedQuery(query): TypedQuery<ExportQuery>,
) -> Result<axum::response::Response, ApiError> {
    use axum::response::IntoResponse;
    let format = query.format;
    let mut filter = EventFilter::from(query);
    let total = filter.limit;
    filter.limit = EXPORT_PAGE.min(total);
    let hold = load_all(&context, &caller, &filter, true).await?;
    // The first page before the answer starts, so a bad filter or a timeout is a proper error.
    let first = search(&context.db, &filter).await?;
    tracing::info!(token = %caller.token_id, format = format.extension(), "event export");
    let export = Export { db: context.db.clone(), filter, format, total, sent: 0, first: true, hold };
    let steps = futures_util::stream::unfold(Some(ExportStep::Page(Box::new(export), first)), next_chunk);
    let body = axum::body::Body::from_stream(steps);
    let content_type = match format {
        ExportFormat::Csv => "text/csv; charset=utf-8",
        ExportFormat::Jsonl => "application/x-ndjson",
    };
    let disposition = format!("attachment; filename=\"skywarden-events.{}\"", format.extension());
    Ok((
        [
            (axum::http::header::CONTENT_TYPE, content_type.to_owned()),
            (axum::http::header::CONTENT_DISPOSITION, disposition),
        ],
        body,
    )
        .into_response())
}

/// An export under way: where it is, and what is left.
struct Export {
    db: sqlx::PgPool,
    filter: EventFilter,
    format: ExportFormat,
    /// Events asked for, and events written.
    total: i64,
    sent: i64,
    first: bool,
    /// The archived row groups it reads, kept in the cache while it goes on (renewed with
    /// each page) and released when it ends.
    hold: Option<Hold>,
}

type ExportChunk = Result<axum::body::Bytes, std::io::Error>;

/// Where an export stream is: a page to write (and the export, to read the next), or a failed
/// read to report.
enum ExportStep {
    Page(Box<Export>, Vec<EventSummary>),
    Failed,
}

/// Writes a page as one chunk and reads the next page, until the search or the limit ends.
async fn next_chunk(step: Option<ExportStep>) -> Option<(ExportChunk, Option<ExportStep>)> {
    let (mut export, page) = match step? {
        ExportStep::Page(export, page) => (export, page),
        // Already answering 200: an error cuts the transfer, which the client sees.
        ExportStep::Failed => {
            return Some((Err(std::io::Error::other("the export stopped on a database error")), None));
        }
    };
    let mut chunk = match export.format {
        ExportFormat::Csv => events_csv(&page, export.first),
        ExportFormat::Jsonl => match event_search::raw_records(&export.db, &page).await {
            Ok(raw) => events_jsonl(&page, &raw),
            Err(error) => {
                tracing::warn!(%error, rows = export.sent, "event export stopped");
                return Some((Err(std::io::Error::other("the export stopped on a database error")), None));
            }
        },
    };
    export.first = false;
    export.sent += page.len() as i64;
    let done = (page.len() as i64) < export.filter.limit || export.sent >= export.total;
    let Some(last) = page.last().filter(|_| !done) else {
        // Only the server's own bound is a silent cut: a smaller limit is what the caller asked.
        if let Some(last) = page.last().filter(|_| export.sent >= export.total && export.total == EXPORT_MAX) {
            chunk.push_str(&truncation_note(&export, last).await);
        }
        tracing::info!(rows = export.sent, "event export finished");
        return Some((Ok(chunk.into()), None));
    };
    export.filter.after = Some((last.event_time, last.account_id.clone(), last.event_id.clone()));
    export.filter.limit = EXPORT_PAGE.min(export.total - export.sent);
    if let Some(hold) = &export.hold {
        match hold.renew().await {
            Ok(true) => {}
            // Rows the export reads were evicted (it stalled past its hold): a shorter file
            // must not pass for the whole search.
            Ok(false) => {
                tracing::warn!(rows = export.sent, "event export stopped: its archived row groups were evicted");
                return Some((Ok(chunk.into()), Some(ExportStep::Failed)));
            }
            Err(error) => {
                tracing::warn!(%error, rows = export.sent, "event export stopped");
                return Some((Ok(chunk.into()), Some(ExportStep::Failed)));
            }
        }
    }
    match search(&export.db, &export.filter).await {
        Ok(next) => Some((Ok(chunk.into()), Some(ExportStep::Page(export, next)))),
        Err(error) => {
            tracing::warn!(%error, rows = export.sent, "event export stopped");
            Some((Ok(chunk.into()), Some(ExportStep::Failed)))
        }
    }
}

const CSV_HEADER: &str = "event_time,account_id,region,event_source,event_name,principal_arn,user_name,source_ip,country,city,user_agent,error_code,read_only,resource_ids,event_id";

/// The last line of an export `EXPORT_MAX` cut while events were left: it says so, in the file's
/// own format, so a cut file is never mistaken for the whole search. Empty when nothing was left.
async fn truncation_note(export: &Export, last: &EventSummary) -> String {
    let mut probe = export.filter.clone();
    probe.after = Some((last.event_time, last.account_id.clone(), last.event_id.clone()));
    probe.limit = 1;
    // A failed probe says "may": the file is still cut at the limit.
    let left = search(&export.db, &probe).await.map(|rows| !rows.is_empty()).unwrap_or(true);
    if !left {
        return String::new();
    }
    let message = format!(
        "truncated: this export stops at {} events and more match; narrow the filters (a shorter time range) for the rest",
        export.sent
    );
    match export.format {
        ExportFormat::Csv => format!("# {message}\n"),
        ExportFormat::Jsonl => {
            format!("{}\n", serde_json::json!({"truncated": true, "events": export.sent, "message": message}))
        }
    }
}

/// One JSON object a line: the event's fields and, under `raw`, the record CloudTrail wrote.
fn events_jsonl(events: &[EventSummary], raw: &HashMap<(String, String), serde_json::Value>) -> String {
    let mut out = String::with_capacity(events.len() * 1024);
    for event in events {
        // A summary is plain data: serialising it cannot fail.
        let mut line = serde_json::to_value(event).unwrap_or_default();
        let record = raw.get(&(event.account_id.clone(), event.event_id.clone())).cloned();
        line["raw"] = record.unwrap_or(serde_json::Value::Null);
        out.push_str(&line.to_string());
        out.push('\n');
    }
    out
}

fn events_csv(events: &[EventSummary], header: bool) -> String {
    let mut out = String::with_capacity(events.len() * 256 + CSV_HEADER.len() + 1);
    if header {
        out.push_str(CSV_HEADER);
        out.push('\n');
    }
    for e in events {
        let time = e.event_time.to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
        let read_only = e.read_only.map(|r| r.to_string());
        let resources = e.resource_ids.join(";");
        let fields: [Option<&str>; 15] = [
            Some(&time),
            Some(&e.account_id),
            e.region.as_deref(),
            e.event_source.as_deref(),
            e.event_name.as_deref(),
            e.principal_arn.as_deref(),
            e.user_name.as_deref(),
            e.source_ip.as_deref(),
            e.country.as_deref(),
            e.city.as_deref(),
            e.user_agent.as_deref(),
            e.error_code.as_deref(),
            read_only.as_deref(),
            Some(&resources),
            Some(&e.event_id),
        ];
        for (i, field) in fields.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            csv_field(field.unwrap_or(""), &mut out);
        }
        out.push('\n');
    }
    out
}

/// Quotes a CSV field when needed, and defuses values a spreadsheet would run as a formula
/// (attacker-controlled text such as a user agent must never become one).
fn csv_field(value: &str, out: &mut String) {
    let formula = value.starts_with(['=', '+', '-', '@', '\t', '\r']);
    let quote = formula || value.contains([',', '"', '\n', '\r']);
    if !quote {
        out.push_str(value);
        return;
    }
    out.push('"');
    if formula {
        out.push('\'');
    }
    out.push_str(&value.replace('"', "\"\""));
    out.push('"');
}

#[utoipa::path(get, path = "/api/v1/events/{account}/{event_id}", tag = "audit trail", params(("account" = String, Path), ("event_id" = String, Path)), responses((status = 200, description = "OK", body = Object), (status = 400, description = "A bad parameter; `field` names it", body = ErrorBody), (status = 401, description = "No valid token or session", body = ErrorBody), (status = 404, description = "Not found", body = ErrorBody)), security(("bearer" = []), ("session" = [])))]
async fn one(
    _caller: Caller,
    State(context): State<ApiContext>,
    Path((account, event_id)): Path<(String, String)>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let row = sqlx::query!(
        r#"SELECT event_time AS "event_time!", event_name, raw AS "raw!" FROM audit_events
           WHERE account_id = $1 AND event_id = $2 LIMIT 1"#,
        account,
        event_id
    )
    .fetch_optional(&context.db)
    .await?
    .ok_or(ApiError::NotFound)?;
    Ok(Json(serde_json::json!({
        "account_id": account, "event_id": event_id, "event_time": row.event_time,
        "event_name": row.event_name, "raw": row.raw,
    })))
}

/// The filters of `GET /api/v1/events/{event_id}`.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
struct DetailQuery {
    /// The account, when an event id repeats across accounts (else the newest such event).
    account: Option<String>,
    /// The event's time (RFC 3339), for an event of an archived month: its day is read from
    /// the lake first (the audit trail's links give it; without it, only archived events
    /// already loaded are found).
    #[serde(default, deserialize_with = "time")]
    time: Option<DateTime<Utc>>,
}

/// One event: every stored field, its raw record and the alerts it is evidence of.
#[utoipa::path(get, path = "/api/v1/events/{event_id}", tag = "audit trail", params(("event_id" = String, Path, description = "CloudTrail's eventID"), DetailQuery), responses((status = 200, description = "OK", body = EventDetail), (status = 400, description = "A bad parameter; `field` names it", body = ErrorBody), (status = 401, description = "No valid token or session", body = ErrorBody), (status = 404, description = "Not found", body = ErrorBody)), security(("bearer" = []), ("session" = [])))]
async fn detail(
    caller: Caller,
    State(context): State<ApiContext>,
    Path(event_id): Path<String>,
    TypedQuery(query): TypedQuery<DetailQuery>,
) -> Result<Json<EventDetail>, ApiError> {
    bounded_text("event_id", &event_id)?;
    if let Some(account) = &query.account {
        bounded_text("account", account)?;
    }
    if let Some(time) = query.time {
        let filter = EventFilter {
            account: query.account.clone(),
            since: Some(time),
            until: Some(
                time.checked_add_signed(chrono::Duration::microseconds(1))
                    .ok_or_else(|| ApiError::bad("time", "time is out of range"))?,
            ),
            ..EventFilter::default()
        };
        load_all(&context, &caller, &filter, false).await?;
    }
    let event = entities::event(&context.db, &event_id, query.account.as_deref()).await?;
    Ok(Json(event.ok_or(ApiError::NotFound)?))
}

/// A value from the path or query: at most 512 characters, without control characters.
fn bounded_text(field: &'static str, value: &str) -> Result<(), ApiError> {
    if value.is_empty() || value.len() > 512 || value.chars().any(char::is_control) {
        return Err(ApiError::bad(field, format!("{field} must be 1 to 512 characters, without control characters")));
    }
    Ok(())
}

/// The parameter of `GET /api/v1/principals/activity`.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
struct PrincipalQuery {
    /// An ARN (`arn:…`) or a user name, in any case.
    #[param(min_length = 1, max_length = 512)]
    principal: String,
}

/// A principal's activity: first and last seen, events, failures, countries, addresses, console
/// logins (with outcome and country) and the alerts about it.
#[utoipa::path(get, path = "/api/v1/principals/activity", tag = "audit trail", params(PrincipalQuery), responses((status = 200, description = "OK", body = PrincipalActivity), (status = 400, description = "A bad parameter; `field` names it", body = ErrorBody), (status = 401, description = "No valid token or session", body = ErrorBody)), security(("bearer" = []), ("session" = [])))]
async fn principal_activity(
    _caller: Caller,
    State(context): State<ApiContext>,
    TypedQuery(query): TypedQuery<PrincipalQuery>,
) -> Result<Json<PrincipalActivity>, ApiError> {
    bounded_text("principal", &query.principal)?;
    Ok(Json(entities::principal(&context.db, &query.principal).await?))
}

/// An address's activity: its country, city and network (ASN), first and last seen, who called
/// AWS from it, the bytes of its flows, and the alerts about it.
#[utoipa::path(get, path = "/api/v1/addresses/{address}", tag = "network", params(("address" = String, Path, description = "An IP address")), responses((status = 200, description = "OK", body = AddressActivity), (status = 400, description = "A bad parameter; `field` names it", body = ErrorBody), (status = 401, description = "No valid token or session", body = ErrorBody)), security(("bearer" = []), ("session" = [])))]
async fn address_activity(
    _caller: Caller,
    State(context): State<ApiContext>,
    Path(address): Path<String>,
) -> Result<Json<AddressActivity>, ApiError> {
    let ip: std::net::IpAddr =
        address.parse().map_err(|_| ApiError::bad("address", "address must be an IP address"))?;
    Ok(Json(entities::address(&context.db, &ip.to_string()).await?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_fields_are_quoted_and_formulas_defused() {
        let mut out = String::new();
        csv_field("plain", &mut out);
        out.push('|');
        csv_field("a,b \"c\"", &mut out);
        out.push('|');
        csv_field("=HYPERLINK(\"http://x\")", &mut out);
        assert_eq!(out, "plain|\"a,b \"\"c\"\"\"|\"'=HYPERLINK(\"\"http://x\"\")\"");
    }

    #[test]
    fn cursors_round_trip_and_reject_garbage() {
        let time: DateTime<Utc> = "2026-11-12T03:17:42.123456Z".parse().unwrap();
        let cursor = encode_cursor(time, "111122223333", "e-1");
        assert_eq!(decode_cursor(&cursor), Some((time, "111122223333".into(), "e-1".into())));
        for bad in ["zz", "abc", "", "00", &"a".repeat(5000)] {
            assert_eq!(decode_cursor(bad), None, "{bad}");
        }
    }
}
