//! The audit-trail search with `q`: the events whose searchable fields contain the text, from
//! the trigram index of `event_search` for what the indexer has copied, UNION ALL the tail it has
//! not (stored since `skywarden_event_search_tail_start()` and not in `event_search`), matched
//! by computing the same projection. Within one statement an event is in exactly one of the two,
//! so pages and counts are exact whether the indexer has run or not. The account, time and page
//! bounds are repeated in both branches so each reads only its range; every other filter applies
//! to the matched events. Archived events loaded from the lake (`archived`) are never in
//! `event_search` (dropping a month forgets its entries): they always take the computed branch.
//! The matches are a `MATERIALIZED` CTE: computed once, whatever plan the join back to the
//! events gets (inlined, a generic plan could recompute the projection for each event).
//!
//! A page first tries a window (issue 18, docs/scaling.md "Common words"): the index rows of the
//! range nearest the cursor, read by time alone and filtered, without the trigram index. A word
//! most events hold fills a page from a few thousand rows, where the trigram path joins every
//! match of the range to its event before sorting. The window's page is used only when it is
//! exact (an exact empty page too); otherwise (a rarer word) the trigram query answers. Counts
//! always take the trigram path. The lake cache may hold an event twice (no unique key): each
//! key is matched, counted and read back once.

use chrono::{DateTime, Utc};

use super::{EventFilter, EventKey, EventSummary};

/// Index rows a window reads: enough for a page of a word one event in twenty holds.
fn window_rows(limit: i64) -> i64 {
    limit.saturating_mul(20).clamp(2_000, 20_000)
}

/// A row of a window's answer: whether its page is exact, and then one event of the page (none
/// when the page is empty or not exact).
struct WindowRow {
    exact: bool,
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

impl WindowRow {
    /// The page, `None` when not exact; an exact empty page is final.
    fn page(rows: Vec<Self>) -> Option<Vec<EventSummary>> {
        if !rows.first().is_some_and(|r| r.exact) {
            return None;
        }
        Some(rows.into_iter().filter_map(Self::event).collect())
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

/// [`super::search`] with text.
pub(super) async fn search(db: &sqlx::PgPool, filter: &EventFilter) -> Result<Vec<EventSummary>, sqlx::Error> {
    let tail_start = crate::search::index::tail_start(db).await?;
    match older_by_window(db, filter, tail_start).await? {
        Some(page) => Ok(page),
        None => older_by_trigrams(db, filter, tail_start).await,
    }
}

/// [`super::search_newer`] with text.
pub(super) async fn search_newer(
    db: &sqlx::PgPool,
    filter: &EventFilter,
    before: &EventKey,
) -> Result<Vec<EventSummary>, sqlx::Error> {
    let tail_start = crate::search::index::tail_start(db).await?;
    let mut events = match newer_by_window(db, filter, before, tail_start).await? {
        Some(page) => page,
        None => newer_by_trigrams(db, filter, before, tail_start).await?,
    };
    events.reverse();
    Ok(events)
}

/// One way of answering a text search's page, for tests that compare them: `None` from the
/// window when its page would not be exact.
pub async fn page_by(
    db: &sqlx::PgPool,
    filter: &EventFilter,
    before: Option<&EventKey>,
    window: bool,
) -> Result<Option<Vec<EventSummary>>, sqlx::Error> {
    let tail_start = crate::search::index::tail_start(db).await?;
    let mut page = match (before, window) {
        (None, true) => older_by_window(db, filter, tail_start).await?,
        (None, false) => Some(older_by_trigrams(db, filter, tail_start).await?),
        (Some(before), true) => newer_by_window(db, filter, before, tail_start).await?,
        (Some(before), false) => Some(newer_by_trigrams(db, filter, before, tail_start).await?),
    };
    if before.is_some() {
        page.iter_mut().for_each(|p| p.reverse());
    }
    Ok(page)
}

/// The page after the cursor from the window: `None` when it would not be exact.
// One statement: its lines are the SQL.
#[allow(clippy::too_many_lines)]
async fn older_by_window(
    db: &sqlx::PgPool,
    filter: &EventFilter,
    tail_start: DateTime<Utc>,
) -> Result<Option<Vec<EventSummary>>, sqlx::Error> {
    let (after_time, after_account, after_id) = match filter.after.clone() {
        Some((t, a, i)) => (Some(t), Some(a), Some(i)),
        None => (None, None, None),
    };
    let (principal_arn, user_name) = filter.principal_columns();
    let rows = sqlx::query_as!(
        WindowRow,
        r#"WITH recent AS MATERIALIZED (
               -- The window: the index rows of the range nearest the cursor, by time alone (the
               -- account too is matched later, so a generic plan reads exactly $19 rows), and
               -- whether each holds the text (its search text is not kept).
               SELECT s.account_id, s.event_time, s.event_id, s.search_text ILIKE $16 AS hit
               FROM event_search s
               -- Bounds the time index reads as a range in a generic plan too (`$8 IS NULL OR …`
               -- would make it walk from the end of the table to the range).
               WHERE s.event_time >= coalesce($8::timestamptz, '-infinity')
                 AND s.event_time < coalesce($9::timestamptz, 'infinity')
                 AND s.event_time <= coalesce($12::timestamptz, 'infinity')
                 AND ($12::timestamptz IS NULL OR (s.event_time, s.account_id, s.event_id) < ($12, $13::text, $14::text))
               ORDER BY s.event_time DESC, s.account_id DESC, s.event_id DESC
               LIMIT $19),
           edge AS MATERIALIZED (
               -- W: the oldest row of a full window (older index rows were not read), else the
               -- start of time (the window holds every index row of the range).
               SELECT coalesce(w.event_time, '-infinity') AS event_time, coalesce(w.account_id, '') AS account_id,
                      coalesce(w.event_id, '') AS event_id
               FROM (SELECT) one LEFT JOIN (
                   SELECT r.event_time, r.account_id, r.event_id FROM recent r
                   WHERE (SELECT count(*) FROM recent) = $19
                   ORDER BY r.event_time, r.account_id, r.event_id LIMIT 1) w ON true),
           matched AS MATERIALIZED (
               SELECT r.account_id, r.event_time, r.event_id, false AS archived
               FROM recent r
               WHERE r.hit AND ($1::text IS NULL OR r.account_id = $1)
               UNION ALL
               -- DISTINCT: the cache may hold an event twice (loaded from two objects).
               SELECT DISTINCT t.account_id, t.event_time, t.event_id, t.archived
               -- The fence: the costly projection only for events not in the index.
               FROM (SELECT t.account_id, t.event_time, t.event_id, t.archived, t.raw
               FROM audit_event_copies t
               WHERE (t.archived OR t.ingested_at >= $18)
                 AND ($1::text IS NULL OR t.account_id = $1)
                 AND ($8::timestamptz IS NULL OR t.event_time >= $8)
                 AND ($9::timestamptz IS NULL OR t.event_time < $9)
                 AND ($12::timestamptz IS NULL OR (t.event_time, t.account_id, t.event_id) < ($12, $13::text, $14::text))
                 -- Archived copies no further than W (beyond it the page would not be exact). The
                 -- hot tail is read whole: it is small, and a bound on time would lead a generic
                 -- plan down the time index instead of the `ingested_at` one.
                 AND (NOT t.archived
                      OR (t.event_time, t.account_id, t.event_id) >= (SELECT e.event_time, e.account_id, e.event_id FROM edge e))
                 AND NOT (t.archived AND EXISTS (SELECT 1 FROM cloudtrail_events h
                                                 WHERE h.account_id = t.account_id AND h.event_time = t.event_time
                                                   AND h.event_id = t.event_id))
                 AND NOT EXISTS (SELECT 1 FROM event_search s
                                 WHERE s.account_id = t.account_id AND s.event_time = t.event_time
                                   AND s.event_id = t.event_id)
               OFFSET 0) t
               WHERE skywarden_event_search_text(t.raw) ILIKE $16),
           page AS MATERIALIZED (
               SELECT m.account_id, m.event_time, m.event_id, m.archived
               FROM matched m
               -- A semi-join: a key the cache holds twice is one match.
               WHERE EXISTS (SELECT 1 FROM audit_event_copies c
               WHERE c.account_id = m.account_id AND c.event_time = m.event_time AND c.event_id = m.event_id
                 AND c.archived = m.archived
                 AND ($2::text IS NULL OR lower(c.principal_arn) = $2)
                 AND ($17::text IS NULL OR lower(c.user_name) = $17)
                 AND ($3::text IS NULL OR lower(c.event_name) = $3)
                 AND ($4::text IS NULL OR c.event_source = $4)
                 AND ($5::text IS NULL OR c.resource_ids @> ARRAY[$5::text])
                 AND ($6::text IS NULL OR c.source_ip <<= $6::text::inet)
                 AND ($7::text IS NULL OR c.geo_country = $7)
                 AND ($10::bool IS NULL OR (c.error_code IS NOT NULL OR c.error_message IS NOT NULL) = $10)
                 AND ($11::bool IS NULL OR c.read_only = $11))
               ORDER BY m.event_time DESC, m.account_id DESC, m.event_id DESC
               LIMIT $15),
           verdict AS (
               -- Every match up to W is in `matched` (the window holds the index rows up to it,
               -- the tail is read at least up to it): exact when the window held the whole range,
               -- or when the page is full and reaches no further than W (every match left out
               -- lies beyond it, after the page).
               SELECT (SELECT count(*) FROM recent) < $19
                   OR ((SELECT count(*) FROM page) = $15
                       AND NOT EXISTS (SELECT 1 FROM page p, edge e
                                       WHERE (p.event_time, p.account_id, p.event_id) < (e.event_time, e.account_id, e.event_id))) AS exact)
           -- The verdict always, and the page's events when it is exact.
           SELECT v.exact AS "exact!", c.account_id AS "account_id?", c.event_id AS "event_id?",
                  c.event_time AS "event_time?", c.region, c.event_source, c.event_name, c.principal_arn, c.user_name,
                  c.source_ip_text AS source_ip, c.user_agent, c.error_code, c.read_only, c.resource_ids AS "resource_ids?",
                  c.geo_country AS country, c.geo_city AS city, c.geo_asn AS asn, c.geo_as_org AS as_org,
                  c.source_is_tor AS is_tor, c.source_is_vpn AS is_vpn, c.source_is_hosting AS is_hosting,
                  c.archived AS "archived?"
           FROM verdict v LEFT JOIN (
               -- One copy per key (the cache may hold an event twice).
               page p CROSS JOIN LATERAL (
                   SELECT * FROM audit_event_copies c
                   WHERE c.account_id = p.account_id AND c.event_time = p.event_time AND c.event_id = p.event_id
                     AND c.archived = p.archived
                   LIMIT 1) c) ON v.exact
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
        window_rows(filter.limit),
    )
    .fetch_all(db)
    .await?;
    Ok(WindowRow::page(rows))
}

/// The page after the cursor through the trigram index.
// One statement: its lines are the SQL.
#[allow(clippy::too_many_lines)]
async fn older_by_trigrams(
    db: &sqlx::PgPool,
    filter: &EventFilter,
    tail_start: DateTime<Utc>,
) -> Result<Vec<EventSummary>, sqlx::Error> {
    let (after_time, after_account, after_id) = match filter.after.clone() {
        Some((t, a, i)) => (Some(t), Some(a), Some(i)),
        None => (None, None, None),
    };
    let (principal_arn, user_name) = filter.principal_columns();
    sqlx::query_as!(
        EventSummary,
        r#"WITH matched AS MATERIALIZED (
               SELECT s.account_id, s.event_time, s.event_id, false AS archived
               FROM event_search s
               WHERE s.search_text ILIKE $16
                 AND ($1::text IS NULL OR s.account_id = $1)
                 AND ($8::timestamptz IS NULL OR s.event_time >= $8)
                 AND ($9::timestamptz IS NULL OR s.event_time < $9)
                 AND ($12::timestamptz IS NULL OR (s.event_time, s.account_id, s.event_id) < ($12, $13::text, $14::text))
               UNION ALL
               -- DISTINCT: the cache may hold an event twice (loaded from two objects).
               SELECT DISTINCT t.account_id, t.event_time, t.event_id, t.archived
               -- The fence: the costly projection only for events not in the index.
               FROM (SELECT t.account_id, t.event_time, t.event_id, t.archived, t.raw
               FROM audit_event_copies t
               WHERE (t.archived OR t.ingested_at >= $18)
                 AND ($1::text IS NULL OR t.account_id = $1)
                 AND ($8::timestamptz IS NULL OR t.event_time >= $8)
                 AND ($9::timestamptz IS NULL OR t.event_time < $9)
                 AND ($12::timestamptz IS NULL OR (t.event_time, t.account_id, t.event_id) < ($12, $13::text, $14::text))
                 AND NOT (t.archived AND EXISTS (SELECT 1 FROM cloudtrail_events h
                                                 WHERE h.account_id = t.account_id AND h.event_time = t.event_time
                                                   AND h.event_id = t.event_id))
                 AND NOT EXISTS (SELECT 1 FROM event_search s
                                 WHERE s.account_id = t.account_id AND s.event_time = t.event_time
                                   AND s.event_id = t.event_id)
               OFFSET 0) t
               WHERE skywarden_event_search_text(t.raw) ILIKE $16),
           page AS (
               SELECT m.account_id, m.event_time, m.event_id, m.archived
               FROM matched m
               -- A semi-join: a key the cache holds twice is still one match.
               WHERE EXISTS (SELECT 1 FROM audit_event_copies c
               WHERE c.account_id = m.account_id AND c.event_time = m.event_time AND c.event_id = m.event_id
                 AND c.archived = m.archived
                 AND ($2::text IS NULL OR lower(c.principal_arn) = $2)
                 AND ($17::text IS NULL OR lower(c.user_name) = $17)
                 AND ($3::text IS NULL OR lower(c.event_name) = $3)
                 AND ($4::text IS NULL OR c.event_source = $4)
                 AND ($5::text IS NULL OR c.resource_ids @> ARRAY[$5::text])
                 AND ($6::text IS NULL OR c.source_ip <<= $6::text::inet)
                 AND ($7::text IS NULL OR c.geo_country = $7)
                 AND ($10::bool IS NULL OR (c.error_code IS NOT NULL OR c.error_message IS NOT NULL) = $10)
                 AND ($11::bool IS NULL OR c.read_only = $11))
               ORDER BY m.event_time DESC, m.account_id DESC, m.event_id DESC
               LIMIT $15)
           SELECT c.account_id AS "account_id!", c.event_id AS "event_id!", c.event_time AS "event_time!", c.region,
                  c.event_source, c.event_name, c.principal_arn, c.user_name, c.source_ip_text AS source_ip, c.user_agent,
                  c.error_code, c.read_only, c.resource_ids AS "resource_ids!", c.geo_country AS country,
                  c.geo_city AS city, c.geo_asn AS asn, c.geo_as_org AS as_org, c.source_is_tor AS is_tor,
                  c.source_is_vpn AS is_vpn, c.source_is_hosting AS is_hosting, c.archived AS "archived!"
           -- One copy per key (the cache may hold an event twice).
           FROM page p CROSS JOIN LATERAL (
               SELECT * FROM audit_event_copies c
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
        tail_start,
    )
    .fetch_all(db)
    .await
}

/// The page just newer than `before` from the window, oldest first: `None` when it would not
/// be exact.
// One statement: its lines are the SQL.
#[allow(clippy::too_many_lines)]
async fn newer_by_window(
    db: &sqlx::PgPool,
    filter: &EventFilter,
    before: &EventKey,
    tail_start: DateTime<Utc>,
) -> Result<Option<Vec<EventSummary>>, sqlx::Error> {
    let (principal_arn, user_name) = filter.principal_columns();
    let (before_time, before_account, before_id) = before.clone();
    let rows = sqlx::query_as!(
        WindowRow,
        r#"WITH recent AS MATERIALIZED (
               -- The window: the index rows of the range nearest the cursor, by time alone (the
               -- account too is matched later, so a generic plan reads exactly $19 rows), and
               -- whether each holds the text (its search text is not kept).
               SELECT s.account_id, s.event_time, s.event_id, s.search_text ILIKE $15 AS hit
               FROM event_search s
               -- Bounds the time index reads as a range in a generic plan too (`$8 IS NULL OR …`
               -- would make it walk from the end of the table to the range).
               WHERE s.event_time >= coalesce($8::timestamptz, '-infinity')
                 AND s.event_time < coalesce($9::timestamptz, 'infinity')
                 AND s.event_time >= $12::timestamptz
                 AND (s.event_time, s.account_id, s.event_id) > ($12, $13::text, $14::text)
               ORDER BY s.event_time, s.account_id, s.event_id
               LIMIT $19),
           edge AS MATERIALIZED (
               -- W: the newest row of a full window (newer index rows were not read), else the
               -- end of time (the window holds every index row of the range).
               SELECT coalesce(w.event_time, 'infinity') AS event_time, coalesce(w.account_id, '') AS account_id,
                      coalesce(w.event_id, '') AS event_id
               FROM (SELECT) one LEFT JOIN (
                   SELECT r.event_time, r.account_id, r.event_id FROM recent r
                   WHERE (SELECT count(*) FROM recent) = $19
                   ORDER BY r.event_time DESC, r.account_id DESC, r.event_id DESC LIMIT 1) w ON true),
           matched AS MATERIALIZED (
               SELECT r.account_id, r.event_time, r.event_id, false AS archived
               FROM recent r
               WHERE r.hit AND ($1::text IS NULL OR r.account_id = $1)
               UNION ALL
               -- DISTINCT: the cache may hold an event twice (loaded from two objects).
               SELECT DISTINCT t.account_id, t.event_time, t.event_id, t.archived
               -- The fence: the costly projection only for events not in the index.
               FROM (SELECT t.account_id, t.event_time, t.event_id, t.archived, t.raw
               FROM audit_event_copies t
               WHERE (t.archived OR t.ingested_at >= $18)
                 AND ($1::text IS NULL OR t.account_id = $1)
                 AND ($8::timestamptz IS NULL OR t.event_time >= $8)
                 AND ($9::timestamptz IS NULL OR t.event_time < $9)
                 AND (t.event_time, t.account_id, t.event_id) > ($12, $13::text, $14::text)
                 -- Archived copies no further than W, as in `older_by_window`.
                 AND (NOT t.archived
                      OR (t.event_time, t.account_id, t.event_id) <= (SELECT e.event_time, e.account_id, e.event_id FROM edge e))
                 AND NOT (t.archived AND EXISTS (SELECT 1 FROM cloudtrail_events h
                                                 WHERE h.account_id = t.account_id AND h.event_time = t.event_time
                                                   AND h.event_id = t.event_id))
                 AND NOT EXISTS (SELECT 1 FROM event_search s
                                 WHERE s.account_id = t.account_id AND s.event_time = t.event_time
                                   AND s.event_id = t.event_id)
               OFFSET 0) t
               WHERE skywarden_event_search_text(t.raw) ILIKE $15),
           page AS MATERIALIZED (
               SELECT m.account_id, m.event_time, m.event_id, m.archived
               FROM matched m
               -- A semi-join: a key the cache holds twice is one match.
               WHERE EXISTS (SELECT 1 FROM audit_event_copies c
               WHERE c.account_id = m.account_id AND c.event_time = m.event_time AND c.event_id = m.event_id
                 AND c.archived = m.archived
                 AND ($2::text IS NULL OR lower(c.principal_arn) = $2)
                 AND ($16::text IS NULL OR lower(c.user_name) = $16)
                 AND ($3::text IS NULL OR lower(c.event_name) = $3)
                 AND ($4::text IS NULL OR c.event_source = $4)
                 AND ($5::text IS NULL OR c.resource_ids @> ARRAY[$5::text])
                 AND ($6::text IS NULL OR c.source_ip <<= $6::text::inet)
                 AND ($7::text IS NULL OR c.geo_country = $7)
                 AND ($10::bool IS NULL OR (c.error_code IS NOT NULL OR c.error_message IS NOT NULL) = $10)
                 AND ($11::bool IS NULL OR c.read_only = $11))
               ORDER BY m.event_time, m.account_id, m.event_id
               LIMIT $17),
           verdict AS (
               -- Every match up to W is in `matched` (the window holds the index rows up to it,
               -- the tail is read at least up to it): exact when the window held the whole range,
               -- or when the page is full and reaches no further than W (every match left out
               -- lies beyond it, after the page).
               SELECT (SELECT count(*) FROM recent) < $19
                   OR ((SELECT count(*) FROM page) = $17
                       AND NOT EXISTS (SELECT 1 FROM page p, edge e
                                       WHERE (p.event_time, p.account_id, p.event_id) > (e.event_time, e.account_id, e.event_id))) AS exact)
           -- The verdict always, and the page's events when it is exact.
           SELECT v.exact AS "exact!", c.account_id AS "account_id?", c.event_id AS "event_id?",
                  c.event_time AS "event_time?", c.region, c.event_source, c.event_name, c.principal_arn, c.user_name,
                  c.source_ip_text AS source_ip, c.user_agent, c.error_code, c.read_only, c.resource_ids AS "resource_ids?",
                  c.geo_country AS country, c.geo_city AS city, c.geo_asn AS asn, c.geo_as_org AS as_org,
                  c.source_is_tor AS is_tor, c.source_is_vpn AS is_vpn, c.source_is_hosting AS is_hosting,
                  c.archived AS "archived?"
           FROM verdict v LEFT JOIN (
               -- One copy per key (the cache may hold an event twice).
               page p CROSS JOIN LATERAL (
                   SELECT * FROM audit_event_copies c
                   WHERE c.account_id = p.account_id AND c.event_time = p.event_time AND c.event_id = p.event_id
                     AND c.archived = p.archived
                   LIMIT 1) c) ON v.exact
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
        window_rows(filter.limit),
    )
    .fetch_all(db)
    .await?;
    Ok(WindowRow::page(rows))
}

/// The page just newer than `before` through the trigram index, oldest first.
// One statement: its lines are the SQL.
#[allow(clippy::too_many_lines)]
async fn newer_by_trigrams(
    db: &sqlx::PgPool,
    filter: &EventFilter,
    before: &EventKey,
    tail_start: DateTime<Utc>,
) -> Result<Vec<EventSummary>, sqlx::Error> {
    let (principal_arn, user_name) = filter.principal_columns();
    let (before_time, before_account, before_id) = before.clone();
    sqlx::query_as!(
        EventSummary,
        r#"WITH matched AS MATERIALIZED (
               SELECT s.account_id, s.event_time, s.event_id, false AS archived
               FROM event_search s
               WHERE s.search_text ILIKE $15
                 AND ($1::text IS NULL OR s.account_id = $1)
                 AND ($8::timestamptz IS NULL OR s.event_time >= $8)
                 AND ($9::timestamptz IS NULL OR s.event_time < $9)
                 AND (s.event_time, s.account_id, s.event_id) > ($12, $13::text, $14::text)
               UNION ALL
               -- DISTINCT: the cache may hold an event twice (loaded from two objects).
               SELECT DISTINCT t.account_id, t.event_time, t.event_id, t.archived
               -- The fence: the costly projection only for events not in the index.
               FROM (SELECT t.account_id, t.event_time, t.event_id, t.archived, t.raw
               FROM audit_event_copies t
               WHERE (t.archived OR t.ingested_at >= $18)
                 AND ($1::text IS NULL OR t.account_id = $1)
                 AND ($8::timestamptz IS NULL OR t.event_time >= $8)
                 AND ($9::timestamptz IS NULL OR t.event_time < $9)
                 AND (t.event_time, t.account_id, t.event_id) > ($12, $13::text, $14::text)
                 AND NOT (t.archived AND EXISTS (SELECT 1 FROM cloudtrail_events h
                                                 WHERE h.account_id = t.account_id AND h.event_time = t.event_time
                                                   AND h.event_id = t.event_id))
                 AND NOT EXISTS (SELECT 1 FROM event_search s
                                 WHERE s.account_id = t.account_id AND s.event_time = t.event_time
                                   AND s.event_id = t.event_id)
               OFFSET 0) t
               WHERE skywarden_event_search_text(t.raw) ILIKE $15),
           page AS (
               SELECT m.account_id, m.event_time, m.event_id, m.archived
               FROM matched m
               -- A semi-join: a key the cache holds twice is still one match.
               WHERE EXISTS (SELECT 1 FROM audit_event_copies c
               WHERE c.account_id = m.account_id AND c.event_time = m.event_time AND c.event_id = m.event_id
                 AND c.archived = m.archived
                 AND ($2::text IS NULL OR lower(c.principal_arn) = $2)
                 AND ($16::text IS NULL OR lower(c.user_name) = $16)
                 AND ($3::text IS NULL OR lower(c.event_name) = $3)
                 AND ($4::text IS NULL OR c.event_source = $4)
                 AND ($5::text IS NULL OR c.resource_ids @> ARRAY[$5::text])
                 AND ($6::text IS NULL OR c.source_ip <<= $6::text::inet)
                 AND ($7::text IS NULL OR c.geo_country = $7)
                 AND ($10::bool IS NULL OR (c.error_code IS NOT NULL OR c.error_message IS NOT NULL) = $10)
                 AND ($11::bool IS NULL OR c.read_only = $11))
               ORDER BY m.event_time, m.account_id, m.event_id
               LIMIT $17)
           SELECT c.account_id AS "account_id!", c.event_id AS "event_id!", c.event_time AS "event_time!", c.region,
                  c.event_source, c.event_name, c.principal_arn, c.user_name, c.source_ip_text AS source_ip, c.user_agent,
                  c.error_code, c.read_only, c.resource_ids AS "resource_ids!", c.geo_country AS country,
                  c.geo_city AS city, c.geo_asn AS asn, c.geo_as_org AS as_org, c.source_is_tor AS is_tor,
                  c.source_is_vpn AS is_vpn, c.source_is_hosting AS is_hosting, c.archived AS "archived!"
           -- One copy per key (the cache may hold an event twice).
           FROM page p CROSS JOIN LATERAL (
               SELECT * FROM audit_event_copies c
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
        tail_start,
    )
    .fetch_all(db)
    .await
}

/// [`super::count`] with text.
pub(super) async fn count(db: &sqlx::PgPool, filter: &EventFilter, cap: i64) -> Result<i64, sqlx::Error> {
    let (principal_arn, user_name) = filter.principal_columns();
    let tail_start = crate::search::index::tail_start(db).await?;
    sqlx::query_scalar!(
        r#"WITH matched AS MATERIALIZED (
               SELECT s.account_id, s.event_time, s.event_id, false AS archived
               FROM event_search s
               WHERE s.search_text ILIKE $12
                 AND ($1::text IS NULL OR s.account_id = $1)
                 AND ($8::timestamptz IS NULL OR s.event_time >= $8)
                 AND ($9::timestamptz IS NULL OR s.event_time < $9)
               UNION ALL
               -- DISTINCT: the cache may hold an event twice (loaded from two objects).
               SELECT DISTINCT t.account_id, t.event_time, t.event_id, t.archived
               -- The fence: the costly projection only for events not in the index.
               FROM (SELECT t.account_id, t.event_time, t.event_id, t.archived, t.raw
               FROM audit_event_copies t
               WHERE (t.archived OR t.ingested_at >= $15)
                 AND ($1::text IS NULL OR t.account_id = $1)
                 AND ($8::timestamptz IS NULL OR t.event_time >= $8)
                 AND ($9::timestamptz IS NULL OR t.event_time < $9)
                 AND NOT (t.archived AND EXISTS (SELECT 1 FROM cloudtrail_events h
                                                 WHERE h.account_id = t.account_id AND h.event_time = t.event_time
                                                   AND h.event_id = t.event_id))
                 AND NOT EXISTS (SELECT 1 FROM event_search s
                                 WHERE s.account_id = t.account_id AND s.event_time = t.event_time
                                   AND s.event_id = t.event_id)
               OFFSET 0) t
               WHERE skywarden_event_search_text(t.raw) ILIKE $12)
           SELECT count(*) AS "count!" FROM (
               SELECT 1
               FROM matched m
               -- A semi-join: a key the cache holds twice is one match.
               WHERE EXISTS (SELECT 1 FROM audit_event_copies c
               WHERE c.account_id = m.account_id AND c.event_time = m.event_time AND c.event_id = m.event_id
                 AND c.archived = m.archived
                 AND ($2::text IS NULL OR lower(c.principal_arn) = $2)
                 AND ($13::text IS NULL OR lower(c.user_name) = $13)
                 AND ($3::text IS NULL OR lower(c.event_name) = $3)
                 AND ($4::text IS NULL OR c.event_source = $4)
                 AND ($5::text IS NULL OR c.resource_ids @> ARRAY[$5::text])
                 AND ($6::text IS NULL OR c.source_ip <<= $6::text::inet)
                 AND ($7::text IS NULL OR c.geo_country = $7)
                 AND ($10::bool IS NULL OR (c.error_code IS NOT NULL OR c.error_message IS NOT NULL) = $10)
                 AND ($11::bool IS NULL OR c.read_only = $11))
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
