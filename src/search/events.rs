//! The audit-trail search: CloudTrail events by account, principal, name, source, resource,
//! address, country, time, outcome and raw text, a page at a time (keyset pagination, both
//! ways), how many events match (up to a cap), and the raw records of a page for exports.
//! Principals and event names match in any case.

use chrono::{DateTime, Utc};
use serde::Serialize;

use super::principal_columns;

pub mod text_search;

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
    /// An `ILIKE` pattern ([`super::contains_pattern`]) over the event's searchable fields
    /// (`skywarden_event_search_text`, migration 0036): through the trigram index of
    /// `event_search` for what the indexer has copied ([`super::index`]), computed for the rest.
    pub text: Option<String>,
    pub limit: i64,
    /// Where the previous page ended.
    pub after: Option<EventKey>,
}

impl EventFilter {
    /// A principal is an ARN or a user name, never both: one condition each lets the planner
    /// walk one index in time order (an OR of two columns cannot). Lower-cased, as indexed.
    fn principal_columns(&self) -> (Option<String>, Option<String>) {
        self.principal.as_deref().map_or((None, None), principal_columns)
    }

    fn event_name_lower(&self) -> Option<String> {
        self.event_name.as_deref().map(str::to_lowercase)
    }
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
    /// The source's network, as known when the event was stored (see docs/network-context.md);
    /// left out where unknown, so exports of events without context do not grow.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub asn: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub as_org: Option<String>,
    /// Tor exit, VPN, hosting provider: absent where nothing loaded could say.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub is_tor: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub is_vpn: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub is_hosting: Option<bool>,
    /// Read from the open lake (an archived month loaded for this search), not from the hot
    /// tables: the same fields, exactly as stored before archiving (docs/archive.md).
    pub archived: bool,
}

/// A result row as the page statements read it back (`audit_event_summaries`, migration 0046,
/// whose columns these fields are named after): every column may be NULL to the compiler (a
/// view), and `exact` is the window's verdict (`text_search`; the other statements are always
/// exact). Shared by every page statement, so each reads the columns back with `c.*`.
pub(super) struct SummaryRow {
    exact: Option<bool>,
    account_id: Option<String>,
    event_id: Option<String>,
    event_time: Option<DateTime<Utc>>,
    region: Option<String>,
    event_source: Option<String>,
    event_name: Option<String>,
    principal_arn: Option<String>,
    user_name: Option<String>,
    source_ip: Option<String>,
    user_agent: Option<String>,
    error_code: Option<String>,
    read_only: Option<bool>,
    resource_ids: Option<Vec<String>>,
    country: Option<String>,
    city: Option<String>,
    asn: Option<i64>,
    as_org: Option<String>,
    is_tor: Option<bool>,
    is_vpn: Option<bool>,
    is_hosting: Option<bool>,
    archived: Option<bool>,
}

impl SummaryRow {
    /// The events of a page's rows (a row without a key holds no event).
    fn events(rows: Vec<Self>) -> Vec<EventSummary> {
        rows.into_iter().filter_map(Self::event).collect()
    }

    /// A window's page, `None` when not exact; an exact empty page is final.
    fn window_page(rows: Vec<Self>) -> Option<Vec<EventSummary>> {
        let exact = rows.first().and_then(|r| r.exact).unwrap_or(false);
        exact.then(|| Self::events(rows))
    }

    fn event(self) -> Option<EventSummary> {
        Some(EventSummary {
            account_id: self.account_id?,
            event_id: self.event_id?,
            event_time: self.event_time?,
            region: self.region,
            event_source: self.event_source,
            event_name: self.event_name,
            principal_arn: self.principal_arn,
            user_name: self.user_name,
            source_ip: self.source_ip,
            user_agent: self.user_agent,
            error_code: self.error_code,
            read_only: self.read_only,
            resource_ids: self.resource_ids.unwrap_or_default(),
            country: self.country,
            city: self.city,
            asn: self.asn,
            as_org: self.as_org,
            is_tor: self.is_tor,
            is_vpn: self.is_vpn,
            is_hosting: self.is_hosting,
            archived: self.archived?,
        })
    }
}

/// Runs a search: the query behind the audit trail (and its benchmark), newest first.
pub async fn search(db: &sqlx::PgPool, filter: &EventFilter) -> Result<Vec<EventSummary>, sqlx::Error> {
    if filter.text.is_some() {
        return text_search::search(db, filter).await;
    }
    let (after_time, after_account, after_id) = match filter.after.clone() {
        Some((t, a, i)) => (Some(t), Some(a), Some(i)),
        None => (None, None, None),
    };
    let (principal_arn, user_name) = filter.principal_columns();
    let rows = sqlx::query_as!(
        SummaryRow,
        // The page's keys first, from the narrowest rows the indexes give, then its columns:
        // sorting thousands of matches by time needs only their keys.
        r#"WITH page AS (
               SELECT account_id, event_time, event_id, archived
               FROM audit_event_copies e
               WHERE ($1::text IS NULL OR account_id = $1)
                 AND ($2::text IS NULL OR lower(principal_arn) = $2)
                 AND ($17::text IS NULL OR lower(user_name) = $17)
                 AND ($3::text IS NULL OR lower(event_name) = $3)
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
                 -- Text searches take `text_search` instead.
                 AND $16::text IS NULL
                 -- Each key once, without a sort of the range: an archived copy is left out when
                 -- the hot table holds the event again, or the cache holds it twice (loaded from two
                 -- objects) and this is not the first copy.
                 AND NOT (archived AND (EXISTS (SELECT 1 FROM cloudtrail_events h
                                                WHERE h.account_id = e.account_id AND h.event_time = e.event_time
                                                  AND h.event_id = e.event_id)
                                        OR EXISTS (SELECT 1 FROM lake_events d
                                                   WHERE d.account_id = e.account_id AND d.event_time = e.event_time
                                                     AND d.event_id = e.event_id
                                                     AND (d.lake_object, d.lake_row_group) < (e.lake_object, e.lake_row_group))))
               ORDER BY event_time DESC, account_id DESC, event_id DESC
               LIMIT $15)
           -- One copy per key: the cache may hold an event twice (loaded from two objects).
           SELECT true AS exact, c.*
           FROM page p CROSS JOIN LATERAL (
               SELECT * FROM audit_event_summaries c
               WHERE c.account_id = p.account_id AND c.event_time = p.event_time AND c.event_id = p.event_id
                 AND c.archived = p.archived
               LIMIT 1) c
           ORDER BY c.event_time DESC, c.account_id DESC, c.event_id DESC"#,
        filter.account,
        principal_arn,
        filter.event_name_lower(),
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
    .await?;
    Ok(SummaryRow::events(rows))
}

/// The page of events just newer than `before` (the first event of the page shown), newest
/// first, as [`search`] would show them: the audit trail's "newer" link.
pub async fn search_newer(
    db: &sqlx::PgPool,
    filter: &EventFilter,
    before: &EventKey,
) -> Result<Vec<EventSummary>, sqlx::Error> {
    if filter.text.is_some() {
        return text_search::search_newer(db, filter, before).await;
    }
    let (principal_arn, user_name) = filter.principal_columns();
    let (before_time, before_account, before_id) = before.clone();
    let rows = sqlx::query_as!(
        SummaryRow,
        r#"WITH page AS (
               SELECT account_id, event_time, event_id, archived
               FROM audit_event_copies e
               WHERE ($1::text IS NULL OR account_id = $1)
                 AND ($2::text IS NULL OR lower(principal_arn) = $2)
                 AND ($16::text IS NULL OR lower(user_name) = $16)
                 AND ($3::text IS NULL OR lower(event_name) = $3)
                 AND ($4::text IS NULL OR event_source = $4)
                 AND ($5::text IS NULL OR resource_ids @> ARRAY[$5::text])
                 AND ($6::text IS NULL OR (source_ip <<= $6::text::inet
                      -- As in `search`: the same as a range, which the planner can estimate.
                      AND source_ip >= set_masklen(network($6::text::inet), CASE family($6::text::inet) WHEN 4 THEN 32 ELSE 128 END)
                      AND source_ip <= set_masklen(broadcast($6::text::inet), CASE family($6::text::inet) WHEN 4 THEN 32 ELSE 128 END)))
                 AND ($7::text IS NULL OR geo_country = $7)
                 AND ($8::timestamptz IS NULL OR event_time >= $8)
                 AND ($9::timestamptz IS NULL OR event_time < $9)
                 AND ($10::bool IS NULL OR (error_code IS NOT NULL OR error_message IS NOT NULL) = $10)
                 AND ($11::bool IS NULL OR read_only = $11)
                 AND (event_time, account_id, event_id) > ($12, $13::text, $14::text)
                 AND $15::text IS NULL
                 -- Each key once, without a sort of the range: an archived copy is left out when
                 -- the hot table holds the event again, or the cache holds it twice (loaded from two
                 -- objects) and this is not the first copy.
                 AND NOT (archived AND (EXISTS (SELECT 1 FROM cloudtrail_events h
                                                WHERE h.account_id = e.account_id AND h.event_time = e.event_time
                                                  AND h.event_id = e.event_id)
                                        OR EXISTS (SELECT 1 FROM lake_events d
                                                   WHERE d.account_id = e.account_id AND d.event_time = e.event_time
                                                     AND d.event_id = e.event_id
                                                     AND (d.lake_object, d.lake_row_group) < (e.lake_object, e.lake_row_group))))
               ORDER BY event_time, account_id, event_id
               LIMIT $17)
           -- One copy per key: the cache may hold an event twice (loaded from two objects).
           SELECT true AS exact, c.*
           FROM page p CROSS JOIN LATERAL (
               SELECT * FROM audit_event_summaries c
               WHERE c.account_id = p.account_id AND c.event_time = p.event_time AND c.event_id = p.event_id
                 AND c.archived = p.archived
               LIMIT 1) c
           ORDER BY c.event_time, c.account_id, c.event_id"#,
        filter.account,
        principal_arn,
        filter.event_name_lower(),
        filter.event_source,
        filter.resource,
        filter.source_ip,
        filter.country,
        filter.since,
        filter.until,
        filter.failed,
        filter.read_only,
        before_time,
        before_account,
        before_id,
        filter.text,
        user_name,
        filter.limit,
    )
    .fetch_all(db)
    .await?;
    let mut events = SummaryRow::events(rows);
    events.reverse();
    Ok(events)
}

/// How many events match the filter (its paging aside), counting no further than `cap`.
pub async fn count(db: &sqlx::PgPool, filter: &EventFilter, cap: i64) -> Result<i64, sqlx::Error> {
    if filter.text.is_some() {
        return text_search::count(db, filter, cap).await;
    }
    let (principal_arn, user_name) = filter.principal_columns();
    sqlx::query_scalar!(
        r#"WITH f AS NOT MATERIALIZED (
               SELECT account_id, event_time, event_id, archived FROM audit_event_copies e
               WHERE ($1::text IS NULL OR account_id = $1)
                 AND ($2::text IS NULL OR lower(principal_arn) = $2)
                 AND ($13::text IS NULL OR lower(user_name) = $13)
                 AND ($3::text IS NULL OR lower(event_name) = $3)
                 AND ($4::text IS NULL OR event_source = $4)
                 AND ($5::text IS NULL OR resource_ids @> ARRAY[$5::text])
                 AND ($6::text IS NULL OR (source_ip <<= $6::text::inet
                      -- As in `search`: the same as a range, which the planner can estimate.
                      AND source_ip >= set_masklen(network($6::text::inet), CASE family($6::text::inet) WHEN 4 THEN 32 ELSE 128 END)
                      AND source_ip <= set_masklen(broadcast($6::text::inet), CASE family($6::text::inet) WHEN 4 THEN 32 ELSE 128 END)))
                 AND ($7::text IS NULL OR geo_country = $7)
                 AND ($8::timestamptz IS NULL OR event_time >= $8)
                 AND ($9::timestamptz IS NULL OR event_time < $9)
                 AND ($10::bool IS NULL OR (error_code IS NOT NULL OR error_message IS NOT NULL) = $10)
                 AND ($11::bool IS NULL OR read_only = $11)
                 AND $12::text IS NULL)
           -- Hot keys are unique, so only the cache's copies need de-duplicating: the hot side
           -- keeps any plan (and the cap stops it), never a sort of the whole range.
           SELECT count(*) AS "count!" FROM (
               SELECT 1 FROM f WHERE NOT archived
               UNION ALL
               SELECT 1 FROM (
                   SELECT DISTINCT account_id, event_time, event_id FROM f
                   WHERE archived
                     -- An archived copy of an event the hot table holds again is not shown twice.
                     AND NOT EXISTS (SELECT 1 FROM cloudtrail_events h
                                     WHERE h.account_id = f.account_id AND h.event_time = f.event_time
                                       AND h.event_id = f.event_id)) copies
               LIMIT $14) matching"#,
        filter.account,
        principal_arn,
        filter.event_name_lower(),
        filter.event_source,
        filter.resource,
        filter.source_ip,
        filter.country,
        filter.since,
        filter.until,
        filter.failed,
        filter.read_only,
        filter.text,
        user_name,
        cap,
    )
    .fetch_one(db)
    .await
}

/// The raw records of `events`, keyed by `(account_id, event_id)`: what an export adds to each
/// line.
pub async fn raw_records(
    db: &sqlx::PgPool,
    events: &[EventSummary],
) -> Result<std::collections::HashMap<(String, String), serde_json::Value>, sqlx::Error> {
    let accounts: Vec<String> = events.iter().map(|e| e.account_id.clone()).collect();
    let times: Vec<DateTime<Utc>> = events.iter().map(|e| e.event_time).collect();
    let ids: Vec<String> = events.iter().map(|e| e.event_id.clone()).collect();
    let archived: Vec<bool> = events.iter().map(|e| e.archived).collect();
    // The copy each event of the page came from (a key alone may name a hot and a cached one).
    let rows = sqlx::query!(
        r#"SELECT c.account_id AS "account_id!", c.event_id AS "event_id!", c.raw AS "raw!"
           FROM unnest($1::text[], $2::timestamptz[], $3::text[], $4::bool[]) AS k(account_id, event_time, event_id, archived)
           JOIN audit_event_copies c USING (account_id, event_time, event_id, archived)"#,
        &accounts,
        &times,
        &ids,
        &archived,
    )
    .fetch_all(db)
    .await?;
    Ok(rows.into_iter().map(|r| ((r.account_id, r.event_id), r.raw)).collect())
}
