//! The audit-trail search: CloudTrail events by account, principal, name, source, resource,
//! address, country, time, outcome and raw text, a page at a time (keyset pagination).

use chrono::{DateTime, Utc};
use serde::Serialize;

/// An audit-trail search: every filter is optional; `limit` is the page size and `after` the
/// position of the previous page's last event (newest first).
#[derive(Debug, Default, Clone)]
pub struct EventFilter {
    pub account: Option<String>,
    /// An ARN (`arn:…`) or a user name.
    pub principal: Option<String>,
    pub event_name: Option<String>,
    pub event_source: Option<String>,
    pub resource: Option<String>,
    /// An address or CIDR, as text PostgreSQL reads as `inet`.
    pub source_ip: Option<String>,
    /// ISO 3166 alpha-2, upper case.
    pub country: Option<String>,
    pub since: Option<DateTime<Utc>>,
    pub until: Option<DateTime<Utc>>,
    pub failed: Option<bool>,
    pub read_only: Option<bool>,
    /// An `ILIKE` pattern over the raw event ([`super::contains_pattern`]); a scan, the last
    /// resort when no field filter fits.
    pub text: Option<String>,
    pub limit: i64,
    /// Where the previous page ended.
    pub after: Option<EventKey>,
}

/// An event's position in the newest-first order: `(event_time, account_id, event_id)`.
pub type EventKey = (DateTime<Utc>, String, String);

/// One event of a result page: its key and the fields people filter and read by.
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

/// Runs a search: the query behind the audit trail (and its benchmark), newest first.
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
