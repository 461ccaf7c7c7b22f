//! The audit trail: `GET /api/v1/events` with filters and keyset pagination, and one event with
//! its raw JSON at `GET /api/v1/events/{account}/{event_id}`.

use std::collections::HashMap;

use axum::Json;
use axum::Router;
use axum::extract::{Path, Query, State};
use axum::routing::get;
use chrono::{DateTime, Utc};
use serde::Serialize;

use super::ApiContext;
use super::error::{ApiError, ErrorBody};
use super::extractor::Caller;
use super::params::Params;

pub const MAX_LIMIT: i64 = 1000;
const DEFAULT_LIMIT: i64 = 100;
const FILTERS: &[&str] = &[
    "account",
    "principal",
    "event_name",
    "event_source",
    "resource",
    "source_ip",
    "country",
    "since",
    "until",
    "failed",
    "read_only",
    "q",
    "limit",
    "cursor",
];
/// Rows one export may hold.
pub const EXPORT_MAX: i64 = 100_000;

pub fn router() -> Router<ApiContext> {
    Router::new()
        .route("/api/v1/events", get(list))
        .route("/api/v1/events/export", get(export))
        .route("/api/v1/events/{account}/{event_id}", get(one))
}

/// An audit-trail search (the query string of `GET /api/v1/events`, parsed).
#[derive(Debug, Default, Clone)]
pub struct EventFilter {
    pub account: Option<String>,
    pub principal: Option<String>,
    pub event_name: Option<String>,
    pub event_source: Option<String>,
    pub resource: Option<String>,
    pub source_ip: Option<String>,
    pub country: Option<String>,
    pub since: Option<DateTime<Utc>>,
    pub until: Option<DateTime<Utc>>,
    pub failed: Option<bool>,
    pub read_only: Option<bool>,
    /// Text anywhere in the raw event (a scan: the last resort when no field filter fits).
    pub text: Option<String>,
    pub limit: i64,
    pub after: Option<(DateTime<Utc>, String, String)>,
}

impl EventFilter {
    /// Parses the query string, naming the field of the first bad value.
    fn parse(query: &HashMap<String, String>) -> Result<Self, ApiError> {
        Self::parse_with(query, FILTERS, DEFAULT_LIMIT, MAX_LIMIT)
    }

    fn parse_with(
        query: &HashMap<String, String>,
        known: &[&'static str],
        default_limit: i64,
        max_limit: i64,
    ) -> Result<Self, ApiError> {
        let params = Params::new(query, known)?;
        let text = |name: &str| params.text(name);
        let limit = params.limit(default_limit, max_limit)?;
        let full_text = text("q");
        if full_text.as_ref().is_some_and(|q| q.chars().count() < 3 || q.len() > 200) {
            return Err(ApiError::bad("q", "q must be 3 to 200 characters"));
        }
        let source_ip = text("source_ip");
        if let Some(ip) = &source_ip {
            ip.parse::<crate::net::Cidr>()
                .map_err(|_| ApiError::bad("source_ip", "source_ip must be an address or CIDR"))?;
        }
        let after = text("cursor")
            .map(|c| decode_cursor(&c).ok_or_else(|| ApiError::bad("cursor", "cursor is not one this API gave")))
            .transpose()?;
        Ok(Self {
            account: text("account"),
            principal: text("principal"),
            event_name: text("event_name"),
            event_source: text("event_source"),
            resource: text("resource"),
            source_ip,
            country: text("country").map(|c| c.to_ascii_uppercase()),
            since: params.time("since")?,
            until: params.time("until")?,
            failed: params.flag("failed")?,
            read_only: params.flag("read_only")?,
            text: full_text.map(|q| format!("%{}%", q.replace('\\', "\\\\").replace('%', "\\%").replace('_', "\\_"))),
            limit,
            after,
        })
    }
}

/// Cursors are opaque to clients: the position of the last event returned, hex-encoded.
fn encode_cursor(time: DateTime<Utc>, account: &str, event_id: &str) -> String {
    format!("{}\u{1f}{account}\u{1f}{event_id}", time.to_rfc3339_opts(chrono::SecondsFormat::Micros, true))
        .bytes()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn decode_cursor(cursor: &str) -> Option<(DateTime<Utc>, String, String)> {
    if cursor.len() % 2 != 0 || cursor.len() > 2048 {
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

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct EventSummary {
    pub account_id: String,
    pub event_id: String,
    pub event_time: DateTime<Utc>,
    pub region: Option<String>,
    pub event_source: Option<String>,
    pub event_name: Option<String>,
    pub principal_arn: Option<String>,
    pub user_name: Option<String>,
    pub source_ip: Option<String>,
    pub user_agent: Option<String>,
    pub error_code: Option<String>,
    pub read_only: Option<bool>,
    pub resource_ids: Vec<String>,
    pub country: Option<String>,
    pub city: Option<String>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct EventPage {
    pub events: Vec<EventSummary>,
    pub next_cursor: Option<String>,
}

#[utoipa::path(get, path = "/api/v1/events", tag = "audit trail", params(("account" = Option<String>, Query, description = ""), ("principal" = Option<String>, Query, description = "ARN or user name"), ("event_name" = Option<String>, Query, description = ""), ("event_source" = Option<String>, Query, description = ""), ("resource" = Option<String>, Query, description = "a resource id such as sg-… or i-…"), ("source_ip" = Option<String>, Query, description = "address or CIDR"), ("country" = Option<String>, Query, description = "ISO 3166 alpha-2"), ("since" = Option<String>, Query, description = "RFC 3339"), ("until" = Option<String>, Query, description = "RFC 3339"), ("failed" = Option<bool>, Query, description = ""), ("read_only" = Option<bool>, Query, description = ""), ("q" = Option<String>, Query, description = "text anywhere in the raw event, 3 to 200 characters"), ("limit" = Option<i64>, Query, description = "1 to 1000"), ("cursor" = Option<String>, Query, description = "next_cursor of the previous page")), responses((status = 200, description = "OK", body = EventPage), (status = 400, description = "A bad parameter; `field` names it", body = ErrorBody), (status = 401, description = "No valid token or session", body = ErrorBody)), security(("bearer" = []), ("session" = [])))]
async fn list(
    caller: Caller,
    State(context): State<ApiContext>,
    Query(query): Query<HashMap<String, String>>,
) -> Result<Json<EventPage>, ApiError> {
    let filter = EventFilter::parse(&query)?;
    tracing::debug!(token = %caller.token_id, ?filter, "event search");
    let events = search(&context.db, &filter).await?;
    let next_cursor = (events.len() as i64 == filter.limit)
        .then(|| events.last().map(|e| encode_cursor(e.event_time, &e.account_id, &e.event_id)))
        .flatten();
    Ok(Json(EventPage { events, next_cursor }))
}

/// Runs a search: the query behind the audit trail (and its benchmark).
pub async fn search(db: &sqlx::PgPool, filter: &EventFilter) -> Result<Vec<EventSummary>, sqlx::Error> {
    let (after_time, after_account, after_id) = match filter.after.clone() {
        Some((t, a, i)) => (Some(t), Some(a), Some(i)),
        None => (None, None, None),
    };
    // A principal is an ARN or a user name, never both: one condition each lets the planner
    // walk one index in time order (an OR of two columns cannot).
    let (principal_arn, user_name) = match &filter.principal {
        Some(p) if p.starts_with("arn:") => (Some(p.as_str()), None),
        Some(p) => (None, Some(p.as_str())),
        None => (None, None),
    };
    sqlx::query_as!(
        EventSummary,
        // The page's keys first, from the narrowest rows the indexes give, then its columns:
        // sorting thousands of matches by time needs only their keys.
        r#"WITH page AS (
               SELECT account_id, event_time, event_id
               FROM cloudtrail_events
               WHERE ($1::text IS NULL OR account_id = $1)
                 AND ($2::text IS NULL OR principal_arn = $2)
                 AND ($17::text IS NULL OR user_name = $17)
                 AND ($3::text IS NULL OR event_name = $3)
                 AND ($4::text IS NULL OR event_source = $4)
                 AND ($5::text IS NULL OR resource_ids @> ARRAY[$5::text])
                 AND ($6::text IS NULL OR (source_ip <<= $6::text::inet
                      -- The same as a range, which the planner can estimate from its statistics (it
                      -- cannot for <<=): an address nobody used is then found absent at once.
                      AND source_ip >= set_masklen(network($6::text::inet), CASE family($6::text::inet) WHEN 4 THEN 32 ELSE 128 END)
                      AND source_ip <= set_masklen(broadcast($6::text::inet), CASE family($6::text::inet) WHEN 4 THEN 32 ELSE 128 END)))
                 AND ($7::text IS NULL OR geo_country = $7)
                 AND ($8::timestamptz IS NULL OR event_time >= $8)
                 AND ($9::timestamptz IS NULL OR event_time < $9)
                 AND ($10::bool IS NULL OR (error_code IS NOT NULL OR error_message IS NOT NULL) = $10)
                 AND ($11::bool IS NULL OR read_only = $11)
                 AND ($12::timestamptz IS NULL OR (event_time, account_id, event_id) < ($12, $13::text, $14::text))
                 AND ($16::text IS NULL OR raw::text ILIKE $16)
               ORDER BY event_time DESC, account_id DESC, event_id DESC
               LIMIT $15)
           SELECT c.account_id, c.event_id, c.event_time, c.region, c.event_source, c.event_name, c.principal_arn,
                  c.user_name, c.source_ip_text AS source_ip, c.user_agent, c.error_code, c.read_only, c.resource_ids,
                  c.geo_country AS country, c.geo_city AS city
           FROM cloudtrail_events c JOIN page USING (account_id, event_time, event_id)
           ORDER BY c.event_time DESC, c.account_id DESC, c.event_id DESC"#,
        filter.account,
        principal_arn,
        filter.event_name,
        filter.event_source,
        filter.resource,
        filter.source_ip,
        filter.country,
        filter.since,
        filter.until,
        filter.failed,
        filter.read_only,
        after_time,
        after_account,
        after_id,
        filter.limit,
        filter.text,
        user_name,
    )
    .fetch_all(db)
    .await
}

/// The search as a file: `format=csv` (for spreadsheets) or `format=jsonl` (for tools), up to
/// `EXPORT_MAX` events, newest first.
#[utoipa::path(get, path = "/api/v1/events/export", tag = "audit trail", params(("format" = Option<String>, Query, description = "csv or jsonl"), ("account" = Option<String>, Query, description = ""), ("principal" = Option<String>, Query, description = ""), ("event_name" = Option<String>, Query, description = ""), ("event_source" = Option<String>, Query, description = ""), ("resource" = Option<String>, Query, description = ""), ("source_ip" = Option<String>, Query, description = ""), ("country" = Option<String>, Query, description = ""), ("since" = Option<String>, Query, description = ""), ("until" = Option<String>, Query, description = ""), ("failed" = Option<bool>, Query, description = ""), ("read_only" = Option<bool>, Query, description = ""), ("q" = Option<String>, Query, description = ""), ("limit" = Option<i64>, Query, description = "1 to 100000")), responses((status = 200, description = "OK", body = String), (status = 400, description = "A bad parameter; `field` names it", body = ErrorBody), (status = 401, description = "No valid token or session", body = ErrorBody)), security(("bearer" = []), ("session" = [])))]
async fn export(
    caller: Caller,
    State(context): State<ApiContext>,
    Query(mut query): Query<HashMap<String, String>>,
) -> Result<axum::response::Response, ApiError> {
    use axum::response::IntoResponse;
    let format = query.remove("format").unwrap_or_else(|| "csv".into());
    if format != "csv" && format != "jsonl" {
        return Err(ApiError::bad("format", "format must be csv or jsonl"));
    }
    let known: Vec<&'static str> = FILTERS.iter().copied().filter(|f| *f != "cursor").collect();
    let filter = EventFilter::parse_with(&query, &known, EXPORT_MAX, EXPORT_MAX)?;
    let events = search(&context.db, &filter).await?;
    tracing::info!(token = %caller.token_id, rows = events.len(), format, "event export");
    let (content_type, body) = if format == "csv" {
        ("text/csv; charset=utf-8", events_csv(&events))
    } else {
        let mut body = String::new();
        for event in &events {
            body.push_str(&serde_json::to_string(event).map_err(|e| ApiError::Internal(e.into()))?);
            body.push('\n');
        }
        ("application/x-ndjson", body)
    };
    let disposition = format!("attachment; filename=\"skywarden-events.{format}\"");
    Ok((
        [
            (axum::http::header::CONTENT_TYPE, content_type.to_owned()),
            (axum::http::header::CONTENT_DISPOSITION, disposition),
        ],
        body,
    )
        .into_response())
}

const CSV_HEADER: &str = "event_time,account_id,region,event_source,event_name,principal_arn,user_name,source_ip,country,city,user_agent,error_code,read_only,resource_ids,event_id";

fn events_csv(events: &[EventSummary]) -> String {
    let mut out = String::with_capacity(events.len() * 256 + CSV_HEADER.len() + 1);
    out.push_str(CSV_HEADER);
    out.push('\n');
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
        r#"SELECT event_time, event_name, raw FROM cloudtrail_events WHERE account_id = $1 AND event_id = $2 LIMIT 1"#,
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
