//! The audit-trail search with `q`: the events whose searchable fields contain the text, from
//! the trigram index of `event_search` for what the indexer has copied, UNION ALL the tail it has
//! not (stored since `skywarden_event_search_tail_start()` and not in `event_search`), matched
//! by computing the same projection. Within one statement an event is in exactly one of the two,
//! so pages and counts are exact whether the indexer has run or not. The account, time and page
//! bounds are repeated in both branches so each reads only its range; every other filter applies
//! to the matched events. Archived events loaded from the lake (`audit_events.archived`) are
//! never in `event_search` (dropping a month forgets its entries): they always take the
//! computed branch.

use super::{EventFilter, EventKey, EventSummary};

/// [`super::search`] with text.
pub(super) async fn search(db: &sqlx::PgPool, filter: &EventFilter) -> Result<Vec<EventSummary>, sqlx::Error> {
    let (after_time, after_account, after_id) = match filter.after.clone() {
        Some((t, a, i)) => (Some(t), Some(a), Some(i)),
        None => (None, None, None),
    };
    let (principal_arn, user_name) = filter.principal_columns();
    let tail_start = crate::search::index::tail_start(db).await?;
    sqlx::query_as!(
        EventSummary,
        r#"WITH matched AS (
               SELECT s.account_id, s.event_time, s.event_id
               FROM event_search s
               WHERE s.search_text ILIKE $16
                 AND ($1::text IS NULL OR s.account_id = $1)
                 AND ($8::timestamptz IS NULL OR s.event_time >= $8)
                 AND ($9::timestamptz IS NULL OR s.event_time < $9)
                 AND ($12::timestamptz IS NULL OR (s.event_time, s.account_id, s.event_id) < ($12, $13::text, $14::text))
               UNION ALL
               SELECT t.account_id, t.event_time, t.event_id
               -- The fence: the costly projection only for events not in the index.
               FROM (SELECT t.account_id, t.event_time, t.event_id, t.raw
               FROM audit_events t
               WHERE (t.archived OR t.ingested_at >= $18)
                 AND ($1::text IS NULL OR t.account_id = $1)
                 AND ($8::timestamptz IS NULL OR t.event_time >= $8)
                 AND ($9::timestamptz IS NULL OR t.event_time < $9)
                 AND ($12::timestamptz IS NULL OR (t.event_time, t.account_id, t.event_id) < ($12, $13::text, $14::text))
                 AND NOT EXISTS (SELECT 1 FROM event_search s
                                 WHERE s.account_id = t.account_id AND s.event_time = t.event_time
                                   AND s.event_id = t.event_id)
               OFFSET 0) t
               WHERE skywarden_event_search_text(t.raw) ILIKE $16),
           page AS (
               SELECT c.account_id, c.event_time, c.event_id
               FROM audit_events c JOIN matched m USING (account_id, event_time, event_id)
               WHERE ($2::text IS NULL OR lower(c.principal_arn) = $2)
                 AND ($17::text IS NULL OR lower(c.user_name) = $17)
                 AND ($3::text IS NULL OR lower(c.event_name) = $3)
                 AND ($4::text IS NULL OR c.event_source = $4)
                 AND ($5::text IS NULL OR c.resource_ids @> ARRAY[$5::text])
                 AND ($6::text IS NULL OR c.source_ip <<= $6::text::inet)
                 AND ($7::text IS NULL OR c.geo_country = $7)
                 AND ($10::bool IS NULL OR (c.error_code IS NOT NULL OR c.error_message IS NOT NULL) = $10)
                 AND ($11::bool IS NULL OR c.read_only = $11)
               ORDER BY c.event_time DESC, c.account_id DESC, c.event_id DESC
               LIMIT $15)
           SELECT c.account_id AS "account_id!", c.event_id AS "event_id!", c.event_time AS "event_time!", c.region,
                  c.event_source, c.event_name, c.principal_arn, c.user_name, c.source_ip_text AS source_ip, c.user_agent,
                  c.error_code, c.read_only, c.resource_ids AS "resource_ids!", c.geo_country AS country,
                  c.geo_city AS city, c.geo_asn AS asn, c.geo_as_org AS as_org, c.source_is_tor AS is_tor,
                  c.source_is_vpn AS is_vpn, c.source_is_hosting AS is_hosting, c.archived AS "archived!"
           FROM audit_events c JOIN page USING (account_id, event_time, event_id)
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
        tail_start,
    )
    .fetch_all(db)
    .await
}

/// [`super::search_newer`] with text.
pub(super) async fn search_newer(
    db: &sqlx::PgPool,
    filter: &EventFilter,
    before: &EventKey,
) -> Result<Vec<EventSummary>, sqlx::Error> {
    let (principal_arn, user_name) = filter.principal_columns();
    let tail_start = crate::search::index::tail_start(db).await?;
    let (before_time, before_account, before_id) = before.clone();
    let mut events = sqlx::query_as!(
        EventSummary,
        r#"WITH matched AS (
               SELECT s.account_id, s.event_time, s.event_id
               FROM event_search s
               WHERE s.search_text ILIKE $15
                 AND ($1::text IS NULL OR s.account_id = $1)
                 AND ($8::timestamptz IS NULL OR s.event_time >= $8)
                 AND ($9::timestamptz IS NULL OR s.event_time < $9)
                 AND (s.event_time, s.account_id, s.event_id) > ($12, $13::text, $14::text)
               UNION ALL
               SELECT t.account_id, t.event_time, t.event_id
               -- The fence: the costly projection only for events not in the index.
               FROM (SELECT t.account_id, t.event_time, t.event_id, t.raw
               FROM audit_events t
               WHERE (t.archived OR t.ingested_at >= $18)
                 AND ($1::text IS NULL OR t.account_id = $1)
                 AND ($8::timestamptz IS NULL OR t.event_time >= $8)
                 AND ($9::timestamptz IS NULL OR t.event_time < $9)
                 AND (t.event_time, t.account_id, t.event_id) > ($12, $13::text, $14::text)
                 AND NOT EXISTS (SELECT 1 FROM event_search s
                                 WHERE s.account_id = t.account_id AND s.event_time = t.event_time
                                   AND s.event_id = t.event_id)
               OFFSET 0) t
               WHERE skywarden_event_search_text(t.raw) ILIKE $15),
           page AS (
               SELECT c.account_id, c.event_time, c.event_id
               FROM audit_events c JOIN matched m USING (account_id, event_time, event_id)
               WHERE ($2::text IS NULL OR lower(c.principal_arn) = $2)
                 AND ($16::text IS NULL OR lower(c.user_name) = $16)
                 AND ($3::text IS NULL OR lower(c.event_name) = $3)
                 AND ($4::text IS NULL OR c.event_source = $4)
                 AND ($5::text IS NULL OR c.resource_ids @> ARRAY[$5::text])
                 AND ($6::text IS NULL OR c.source_ip <<= $6::text::inet)
                 AND ($7::text IS NULL OR c.geo_country = $7)
                 AND ($10::bool IS NULL OR (c.error_code IS NOT NULL OR c.error_message IS NOT NULL) = $10)
                 AND ($11::bool IS NULL OR c.read_only = $11)
               ORDER BY c.event_time, c.account_id, c.event_id
               LIMIT $17)
           SELECT c.account_id AS "account_id!", c.event_id AS "event_id!", c.event_time AS "event_time!", c.region,
                  c.event_source, c.event_name, c.principal_arn, c.user_name, c.source_ip_text AS source_ip, c.user_agent,
                  c.error_code, c.read_only, c.resource_ids AS "resource_ids!", c.geo_country AS country,
                  c.geo_city AS city, c.geo_asn AS asn, c.geo_as_org AS as_org, c.source_is_tor AS is_tor,
                  c.source_is_vpn AS is_vpn, c.source_is_hosting AS is_hosting, c.archived AS "archived!"
           FROM audit_events c JOIN page USING (account_id, event_time, event_id)
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
        tail_start,
    )
    .fetch_all(db)
    .await?;
    events.reverse();
    Ok(events)
}

/// [`super::count`] with text.
pub(super) async fn count(db: &sqlx::PgPool, filter: &EventFilter, cap: i64) -> Result<i64, sqlx::Error> {
    let (principal_arn, user_name) = filter.principal_columns();
    let tail_start = crate::search::index::tail_start(db).await?;
    sqlx::query_scalar!(
        r#"SELECT count(*) AS "count!" FROM (
               SELECT 1
               FROM audit_events c
               JOIN (SELECT s.account_id, s.event_time, s.event_id
                     FROM event_search s
                     WHERE s.search_text ILIKE $12
                       AND ($1::text IS NULL OR s.account_id = $1)
                       AND ($8::timestamptz IS NULL OR s.event_time >= $8)
                       AND ($9::timestamptz IS NULL OR s.event_time < $9)
                     UNION ALL
                     SELECT t.account_id, t.event_time, t.event_id
                     FROM (SELECT t.account_id, t.event_time, t.event_id, t.raw
                     FROM audit_events t
                     WHERE (t.archived OR t.ingested_at >= $15)
                       AND ($1::text IS NULL OR t.account_id = $1)
                       AND ($8::timestamptz IS NULL OR t.event_time >= $8)
                       AND ($9::timestamptz IS NULL OR t.event_time < $9)
                       AND NOT EXISTS (SELECT 1 FROM event_search s
                                       WHERE s.account_id = t.account_id AND s.event_time = t.event_time
                                         AND s.event_id = t.event_id)
                     OFFSET 0) t
                     WHERE skywarden_event_search_text(t.raw) ILIKE $12) m
                 USING (account_id, event_time, event_id)
               WHERE ($2::text IS NULL OR lower(c.principal_arn) = $2)
                 AND ($13::text IS NULL OR lower(c.user_name) = $13)
                 AND ($3::text IS NULL OR lower(c.event_name) = $3)
                 AND ($4::text IS NULL OR c.event_source = $4)
                 AND ($5::text IS NULL OR c.resource_ids @> ARRAY[$5::text])
                 AND ($6::text IS NULL OR c.source_ip <<= $6::text::inet)
                 AND ($7::text IS NULL OR c.geo_country = $7)
                 AND ($10::bool IS NULL OR (c.error_code IS NOT NULL OR c.error_message IS NOT NULL) = $10)
                 AND ($11::bool IS NULL OR c.read_only = $11)
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
        tail_start,
    )
    .fetch_one(db)
    .await
}
