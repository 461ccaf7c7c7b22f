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
use super::error::ApiError;
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
    "limit",
    "cursor",
];

pub fn router() -> Router<ApiContext> {
    Router::new().route("/api/v1/events", get(list)).route("/api/v1/events/{account}/{event_id}", get(one))
}

#[derive(Debug, Default)]
struct EventFilter {
    account: Option<String>,
    principal: Option<String>,
    event_name: Option<String>,
    event_source: Option<String>,
    resource: Option<String>,
    source_ip: Option<String>,
    country: Option<String>,
    since: Option<DateTime<Utc>>,
    until: Option<DateTime<Utc>>,
    failed: Option<bool>,
    read_only: Option<bool>,
    limit: i64,
    after: Option<(DateTime<Utc>, String, String)>,
}

impl EventFilter {
    /// Parses the query string, naming the field of the first bad value.
    fn parse(query: &HashMap<String, String>) -> Result<Self, ApiError> {
        let params = Params::new(query, FILTERS)?;
        let text = |name: &str| params.text(name);
        let limit = params.limit(DEFAULT_LIMIT, MAX_LIMIT)?;
        let source_ip = text("source_ip");
        if let Some(ip) = &source_ip {
            ip.parse::<crate::policy::detectors::security_group::Cidr>()
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

#[derive(Debug, Serialize)]
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

#[derive(Debug, Serialize)]
pub struct EventPage {
    pub events: Vec<EventSummary>,
    pub next_cursor: Option<String>,
}

async fn list(
    caller: Caller,
    State(context): State<ApiContext>,
    Query(query): Query<HashMap<String, String>>,
) -> Result<Json<EventPage>, ApiError> {
    let filter = EventFilter::parse(&query)?;
    tracing::debug!(token = %caller.token_id, ?filter, "event search");
    let (after_time, after_account, after_id) = match filter.after.clone() {
        Some((t, a, i)) => (Some(t), Some(a), Some(i)),
        None => (None, None, None),
    };
    let events = sqlx::query_as!(
        EventSummary,
        r#"SELECT account_id, event_id, event_time, region, event_source, event_name, principal_arn, user_name,
                  source_ip_text AS source_ip, user_agent, error_code, read_only, resource_ids,
                  geo_country AS country, geo_city AS city
           FROM cloudtrail_events
           WHERE ($1::text IS NULL OR account_id = $1)
             AND ($2::text IS NULL OR principal_arn = $2 OR user_name = $2)
             AND ($3::text IS NULL OR event_name = $3)
             AND ($4::text IS NULL OR event_source = $4)
             AND ($5::text IS NULL OR resource_ids @> ARRAY[$5::text])
             AND ($6::text IS NULL OR source_ip <<= $6::text::inet)
             AND ($7::text IS NULL OR geo_country = $7)
             AND ($8::timestamptz IS NULL OR event_time >= $8)
             AND ($9::timestamptz IS NULL OR event_time < $9)
             AND ($10::bool IS NULL OR (error_code IS NOT NULL OR error_message IS NOT NULL) = $10)
             AND ($11::bool IS NULL OR read_only = $11)
             AND ($12::timestamptz IS NULL OR (event_time, account_id, event_id) < ($12, $13::text, $14::text))
           ORDER BY event_time DESC, account_id DESC, event_id DESC
           LIMIT $15"#,
        filter.account,
        filter.principal,
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
    )
    .fetch_all(&context.db)
    .await?;
    let next_cursor = (events.len() as i64 == filter.limit)
        .then(|| events.last().map(|e| encode_cursor(e.event_time, &e.account_id, &e.event_id)))
        .flatten();
    Ok(Json(EventPage { events, next_cursor }))
}

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
    fn cursors_round_trip_and_reject_garbage() {
        let time: DateTime<Utc> = "2026-11-12T03:17:42.123456Z".parse().unwrap();
        let cursor = encode_cursor(time, "111122223333", "e-1");
        assert_eq!(decode_cursor(&cursor), Some((time, "111122223333".into(), "e-1".into())));
        for bad in ["zz", "abc", "", "00", &"a".repeat(5000)] {
            assert_eq!(decode_cursor(bad), None, "{bad}");
        }
    }
}
