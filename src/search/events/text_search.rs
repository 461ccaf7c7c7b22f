//! The audit-trail search with `q`: the events whose searchable fields contain the text, from
//! three sources in one statement. Indexed hot events match through the trigram index of
//! `event_search`, asked for the pattern's selective part, or through its token index for the
//! word that part lies in or for words whose trigrams are all common ([`index_query`],
//! migrations 0051 and 0055); cached archived events
//! (`archived`, the lake cache) through the trigram index of the search text stored with them
//! when loaded (migration 0046); the hot tail the indexer has not copied yet (stored since
//! `skywarden_event_search_tail_start()` and not in `event_search`) by computing the same
//! projection. All three hold `skywarden_event_search_text(raw)`, and within one statement a hot
//! event is indexed or tail, never both, so pages and counts are exact whether the indexer has
//! run or not. The account, time and page bounds are repeated in each branch so each reads only
//! its range (beside an index asked for a selective part, after it: the part is rare in the whole
//! table); every other filter applies to the matched events. The matches are a `MATERIALIZED`
//! CTE: computed once, whatever plan the join back to the events gets (inlined, a generic plan
//! could recompute the projection for each event).
//!
//! A page first tries a window (issue 18, docs/scaling.md "Common words"): the index rows and
//! cached rows of the range nearest the cursor, read by time alone and filtered, without the
//! trigram indexes. A word most events hold fills a page from a few thousand rows, where the
//! trigram path joins every match of the range to its event before sorting. The window's page is
//! used only when it is exact (an exact empty page too); otherwise (a rarer word) the trigram
//! query answers. A count first counts over a window too, up to its cap ([`count`]). The lake
//! cache may hold an event twice (no unique key): each key is matched, counted and read back
//! once, and an archived copy of an event the hot table holds again is left out.

use chrono::{DateTime, Utc};

use super::{EventFilter, EventKey, EventSummary, SummaryRow};

/// Index rows a window reads: enough for a page of a word one event in twenty holds.
fn window_rows(limit: i64) -> i64 {
    limit.saturating_mul(20).clamp(2_000, 20_000)
}

/// Rows (of each side) a count's first window reads: it tells a common word (counted to the cap
/// by a longer window) from a rare one (counted through the trigram indexes), at little cost to
/// the rare one.
const COUNT_PROBE_ROWS: i64 = 2_000;

/// The longest window a count reads: about what the trigram path costs for a word that fills it.
const COUNT_WINDOW_MAX: i64 = 100_000;

/// The window expected to hold `cap` matches when `read` rows held `found` (1.5× the
/// proportion, for the word's uneven spread), or `None` when it would be longer than
/// [`COUNT_WINDOW_MAX`] (a rarer word: the trigram path answers).
fn count_window_rows(found: i64, read: i64, cap: i64) -> Option<i64> {
    if found <= 0 {
        return None;
    }
    let rows = cap.saturating_mul(read).saturating_mul(3) / found.saturating_mul(2);
    (rows <= COUNT_WINDOW_MAX).then_some(rows.max(COUNT_PROBE_ROWS * 2))
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

/// One way of counting a text search, for tests and benchmarks that compare them: a window of
/// `rows` (`None` when its count would not be exact), or the trigram path (`rows` `None`).
pub async fn count_by(
    db: &sqlx::PgPool,
    filter: &EventFilter,
    cap: i64,
    rows: Option<i64>,
) -> Result<Option<i64>, sqlx::Error> {
    let tail_start = crate::search::index::tail_start(db).await?;
    let mut tx = without_jit(db).await?;
    let found = match rows {
        Some(rows) => {
            let window = count_by_window(&mut tx, filter, cap, rows, tail_start).await?;
            window.exact.then_some(window.found)
        }
        None => Some(count_by_trigrams(&mut tx, filter, cap, tail_start).await?),
    };
    tx.commit().await?;
    Ok(found)
}

/// A transaction whose statements are not JIT-compiled. A count's plan is estimated as costly
/// (every row of its range), so PostgreSQL compiles it (0.2 to 0.5 s on the development machine)
/// although the cap stops it after a fraction of that: measured in docs/scaling.md.
async fn without_jit(db: &sqlx::PgPool) -> Result<sqlx::Transaction<'static, sqlx::Postgres>, sqlx::Error> {
    let mut tx = crate::db::begin(db).await?;
    sqlx::query_scalar!("SELECT set_config('jit', 'off', true)").fetch_one(&mut *tx).await?;
    Ok(tx)
}

/// What the indexes are asked for a text search (`skywarden_search_index`, migrations 0051, 0054,
/// 0055 and 0056): a pattern for the trigram indexes (the selective part of the search's pattern,
/// or the pattern itself) or else a query of the token index of `event_search`: the word that
/// selective part lies in, when it starts a token, words whose trigrams are all common
/// (`sg-0000000000000000e`), or dotted numbers (`176.36.17.19`); and the selective part for the
/// lake cache, which has no token index. Each is implied by the pattern, which every trigram statement then matches on the
/// rows found: results are those of the pattern alone. Computed before the statement, so a
/// custom plan sees the values (a function call in the statement would be estimated blind).
struct IndexQuery {
    trigrams: Option<String>,
    tokens: Option<String>,
    /// The stretch for the lake cache's trigram index (it has no token index), whichever way
    /// `event_search` is asked.
    lake: Option<String>,
}

async fn index_query<'e, E: sqlx::PgExecutor<'e>>(db: E, text: Option<&str>) -> Result<IndexQuery, sqlx::Error> {
    sqlx::query_as!(
        IndexQuery,
        r#"SELECT trigram_pattern AS trigrams, token_query::text AS tokens, lake_pattern AS lake FROM skywarden_search_index($1)"#,
        text
    )
    .fetch_one(db)
    .await
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
        SummaryRow,
        r#"WITH recent AS MATERIALIZED (
               -- The window: the index rows and cached archived rows of the range nearest the
               -- cursor, by time alone (the account too is matched later, so a generic plan reads
               -- exactly $19 rows), and whether each holds the text (its text is not kept).
               -- Each side's newest rows in key order first (its time index, and a sort of the rows
               -- of one instant), then the newest of both: a sort of the union would read the whole
               -- range.
               SELECT w.account_id, w.event_time, w.event_id, w.archived, w.hit
               FROM ((SELECT s.account_id, s.event_time, s.event_id, false AS archived, s.search_text ILIKE $16 AS hit
                      FROM event_search s
                      -- Bounds the time index reads as a range in a generic plan too (`$8 IS NULL
                      -- OR …` would make it walk from the end of the table to the range).
                      WHERE s.event_time >= coalesce($8::timestamptz, '-infinity')
                        AND s.event_time < coalesce($9::timestamptz, 'infinity')
                        AND s.event_time <= coalesce($12::timestamptz, 'infinity')
                        AND ($12::timestamptz IS NULL OR (s.event_time, s.account_id, s.event_id) < ($12, $13::text, $14::text))
                      ORDER BY s.event_time DESC, s.account_id DESC, s.event_id DESC
                      LIMIT $19)
                     UNION ALL
                     (SELECT l.account_id, l.event_time, l.event_id, true, l.search_text ILIKE $16
                      FROM lake_events l
                      WHERE l.event_time >= coalesce($8::timestamptz, '-infinity')
                        AND l.event_time < coalesce($9::timestamptz, 'infinity')
                        AND l.event_time <= coalesce($12::timestamptz, 'infinity')
                        AND ($12::timestamptz IS NULL OR (l.event_time, l.account_id, l.event_id) < ($12, $13::text, $14::text))
                      ORDER BY l.event_time DESC, l.account_id DESC, l.event_id DESC
                      LIMIT $19)) w
               ORDER BY w.event_time DESC, w.account_id DESC, w.event_id DESC
               LIMIT $19),
           edge AS MATERIALIZED (
               -- W: the oldest row of a full window (older rows were not read), else the start of
               -- time (the window holds every index and cached row of the range).
               SELECT coalesce(w.event_time, '-infinity') AS event_time, coalesce(w.account_id, '') AS account_id,
                      coalesce(w.event_id, '') AS event_id
               FROM (SELECT) one LEFT JOIN (
                   SELECT r.event_time, r.account_id, r.event_id FROM recent r
                   WHERE (SELECT count(*) FROM recent) = $19
                   ORDER BY r.event_time, r.account_id, r.event_id LIMIT 1) w ON true),
           matched AS MATERIALIZED (
               SELECT r.account_id, r.event_time, r.event_id, false AS archived
               FROM recent r
               WHERE r.hit AND NOT r.archived AND ($1::text IS NULL OR r.account_id = $1)
               UNION ALL
               -- DISTINCT: the cache may hold an event twice (loaded from two objects).
               SELECT DISTINCT r.account_id, r.event_time, r.event_id, true
               FROM recent r
               WHERE r.hit AND r.archived AND ($1::text IS NULL OR r.account_id = $1)
                 AND NOT EXISTS (SELECT 1 FROM cloudtrail_events h
                                 WHERE h.account_id = r.account_id AND h.event_time = r.event_time
                                   AND h.event_id = r.event_id)
               UNION ALL
               -- The hot tail, read whole: it is small, and a bound on time would lead a generic
               -- plan down the time index instead of the `ingested_at` one.
               SELECT t.account_id, t.event_time, t.event_id, false
               -- The fence: the costly projection only for events not in the index.
               FROM (SELECT t.account_id, t.event_time, t.event_id, t.raw
               FROM cloudtrail_events t
               WHERE t.ingested_at >= $18
                 AND ($1::text IS NULL OR t.account_id = $1)
                 AND ($8::timestamptz IS NULL OR t.event_time >= $8)
                 AND ($9::timestamptz IS NULL OR t.event_time < $9)
                 AND ($12::timestamptz IS NULL OR (t.event_time, t.account_id, t.event_id) < ($12, $13::text, $14::text))
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
               -- Every match up to W is in `matched` (the window holds the index and cached rows
               -- up to it, the tail is read whole): exact when the window held the whole range,
               -- or when the page is full and reaches no further than W (every match left out
               -- lies beyond it, after the page).
               SELECT (SELECT count(*) FROM recent) < $19
                   OR ((SELECT count(*) FROM page) = $15
                       AND NOT EXISTS (SELECT 1 FROM page p, edge e
                                       WHERE (p.event_time, p.account_id, p.event_id) < (e.event_time, e.account_id, e.event_id))) AS exact)
           -- The verdict always, and the page's events when it is exact, one copy per key.
           SELECT v.exact, c.*
           FROM verdict v LEFT JOIN (
               page p CROSS JOIN LATERAL (
                   SELECT * FROM audit_event_summaries c
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
    Ok(SummaryRow::window_page(rows))
}

/// The page after the cursor through the trigram indexes.
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
    let index = index_query(db, filter.text.as_deref()).await?;
    let (principal_arn, user_name) = filter.principal_columns();
    let rows = sqlx::query_as!(
        SummaryRow,
        r#"WITH matched AS MATERIALIZED (
               SELECT s.account_id, s.event_time, s.event_id, false AS archived
               -- The fence (migration 0051): the trigram index alone reads the pattern's
               -- selective part ($19), or the token index its words ($20); a bound on time or
               -- account beside them would lead the planner to AND in the range's index (3.3M
               -- entries read for 169 matches at 10M events). With neither, the pattern beside the
               -- bounds, as before. The pattern itself and the bounds are matched on what they find.
               FROM (SELECT s.account_id, s.event_time, s.event_id, s.search_text
                     FROM event_search s
                     WHERE s.search_text ILIKE $19::text
                     UNION ALL
                     SELECT s.account_id, s.event_time, s.event_id, s.search_text
                     FROM event_search s
                     WHERE skywarden_search_tokens(s.search_text) @@ $20::text::tsquery
                     UNION ALL
                     -- Neither (no selective part): the pattern beside the bounds, as before.
                     SELECT s.account_id, s.event_time, s.event_id, s.search_text
                     FROM event_search s
                     WHERE $19::text IS NULL AND $20::text IS NULL AND s.search_text ILIKE $16
                       AND ($1::text IS NULL OR s.account_id = $1)
                       AND ($8::timestamptz IS NULL OR s.event_time >= $8)
                       AND ($9::timestamptz IS NULL OR s.event_time < $9)
                       AND ($12::timestamptz IS NULL OR (s.event_time, s.account_id, s.event_id) < ($12, $13::text, $14::text))
                     OFFSET 0) s
               WHERE s.search_text ILIKE $16
                 AND ($1::text IS NULL OR s.account_id = $1)
                 AND ($8::timestamptz IS NULL OR s.event_time >= $8)
                 AND ($9::timestamptz IS NULL OR s.event_time < $9)
                 AND ($12::timestamptz IS NULL OR (s.event_time, s.account_id, s.event_id) < ($12, $13::text, $14::text))
               UNION ALL
               -- The cache's stored text, through its trigram index. DISTINCT: the cache may hold
               -- an event twice (loaded from two objects).
               SELECT DISTINCT l.account_id, l.event_time, l.event_id, true
               -- Fenced as the index rows are: the selective part, else the pattern and bounds.
               FROM (SELECT l.account_id, l.event_time, l.event_id, l.lake_object, l.lake_row_group, l.search_text
               FROM lake_events l
               WHERE l.search_text ILIKE $21::text
               UNION ALL
               SELECT l.account_id, l.event_time, l.event_id, l.lake_object, l.lake_row_group, l.search_text
               FROM lake_events l
               WHERE $21::text IS NULL AND l.search_text ILIKE $16
                 AND ($1::text IS NULL OR l.account_id = $1)
                 AND ($8::timestamptz IS NULL OR l.event_time >= $8)
                 AND ($9::timestamptz IS NULL OR l.event_time < $9)
                 AND ($12::timestamptz IS NULL OR (l.event_time, l.account_id, l.event_id) < ($12, $13::text, $14::text))
               OFFSET 0) l
               WHERE l.search_text ILIKE $16
                 AND ($1::text IS NULL OR l.account_id = $1)
                 AND ($8::timestamptz IS NULL OR l.event_time >= $8)
                 AND ($9::timestamptz IS NULL OR l.event_time < $9)
                 AND ($12::timestamptz IS NULL OR (l.event_time, l.account_id, l.event_id) < ($12, $13::text, $14::text))
                 AND NOT EXISTS (SELECT 1 FROM cloudtrail_events h
                                 WHERE h.account_id = l.account_id AND h.event_time = l.event_time
                                   AND h.event_id = l.event_id)
               UNION ALL
               SELECT t.account_id, t.event_time, t.event_id, false
               -- The fence: the costly projection only for events not in the index.
               FROM (SELECT t.account_id, t.event_time, t.event_id, t.raw
               FROM cloudtrail_events t
               WHERE t.ingested_at >= $18
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
           -- One copy per key (the cache may hold an event twice). A trigram page is exact.
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
        tail_start,
        index.trigrams,
        index.tokens,
        index.lake,
    )
    .fetch_all(db)
    .await?;
    Ok(SummaryRow::events(rows))
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
        SummaryRow,
        r#"WITH recent AS MATERIALIZED (
               -- The window, as in `older_by_window`, the other way.
               SELECT w.account_id, w.event_time, w.event_id, w.archived, w.hit
               FROM ((SELECT s.account_id, s.event_time, s.event_id, false AS archived, s.search_text ILIKE $15 AS hit
                      FROM event_search s
                      WHERE s.event_time >= coalesce($8::timestamptz, '-infinity')
                        AND s.event_time < coalesce($9::timestamptz, 'infinity')
                        AND s.event_time >= $12::timestamptz
                        AND (s.event_time, s.account_id, s.event_id) > ($12, $13::text, $14::text)
                      ORDER BY s.event_time, s.account_id, s.event_id
                      LIMIT $19)
                     UNION ALL
                     (SELECT l.account_id, l.event_time, l.event_id, true, l.search_text ILIKE $15
                      FROM lake_events l
                      WHERE l.event_time >= coalesce($8::timestamptz, '-infinity')
                        AND l.event_time < coalesce($9::timestamptz, 'infinity')
                        AND l.event_time >= $12::timestamptz
                        AND (l.event_time, l.account_id, l.event_id) > ($12, $13::text, $14::text)
                      ORDER BY l.event_time, l.account_id, l.event_id
                      LIMIT $19)) w
               ORDER BY w.event_time, w.account_id, w.event_id
               LIMIT $19),
           edge AS MATERIALIZED (
               -- W: the newest row of a full window (newer rows were not read), else the end of
               -- time (the window holds every index and cached row of the range).
               SELECT coalesce(w.event_time, 'infinity') AS event_time, coalesce(w.account_id, '') AS account_id,
                      coalesce(w.event_id, '') AS event_id
               FROM (SELECT) one LEFT JOIN (
                   SELECT r.event_time, r.account_id, r.event_id FROM recent r
                   WHERE (SELECT count(*) FROM recent) = $19
                   ORDER BY r.event_time DESC, r.account_id DESC, r.event_id DESC LIMIT 1) w ON true),
           matched AS MATERIALIZED (
               SELECT r.account_id, r.event_time, r.event_id, false AS archived
               FROM recent r
               WHERE r.hit AND NOT r.archived AND ($1::text IS NULL OR r.account_id = $1)
               UNION ALL
               -- DISTINCT: the cache may hold an event twice (loaded from two objects).
               SELECT DISTINCT r.account_id, r.event_time, r.event_id, true
               FROM recent r
               WHERE r.hit AND r.archived AND ($1::text IS NULL OR r.account_id = $1)
                 AND NOT EXISTS (SELECT 1 FROM cloudtrail_events h
                                 WHERE h.account_id = r.account_id AND h.event_time = r.event_time
                                   AND h.event_id = r.event_id)
               UNION ALL
               -- The hot tail, read whole, as in `older_by_window`.
               SELECT t.account_id, t.event_time, t.event_id, false
               FROM (SELECT t.account_id, t.event_time, t.event_id, t.raw
               FROM cloudtrail_events t
               WHERE t.ingested_at >= $18
                 AND ($1::text IS NULL OR t.account_id = $1)
                 AND ($8::timestamptz IS NULL OR t.event_time >= $8)
                 AND ($9::timestamptz IS NULL OR t.event_time < $9)
                 AND (t.event_time, t.account_id, t.event_id) > ($12, $13::text, $14::text)
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
               -- As in `older_by_window`, the other way.
               SELECT (SELECT count(*) FROM recent) < $19
                   OR ((SELECT count(*) FROM page) = $17
                       AND NOT EXISTS (SELECT 1 FROM page p, edge e
                                       WHERE (p.event_time, p.account_id, p.event_id) > (e.event_time, e.account_id, e.event_id))) AS exact)
           -- The verdict always, and the page's events when it is exact, one copy per key.
           SELECT v.exact, c.*
           FROM verdict v LEFT JOIN (
               page p CROSS JOIN LATERAL (
                   SELECT * FROM audit_event_summaries c
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
    Ok(SummaryRow::window_page(rows))
}

/// The page just newer than `before` through the trigram indexes, oldest first.
// One statement: its lines are the SQL.
#[allow(clippy::too_many_lines)]
async fn newer_by_trigrams(
    db: &sqlx::PgPool,
    filter: &EventFilter,
    before: &EventKey,
    tail_start: DateTime<Utc>,
) -> Result<Vec<EventSummary>, sqlx::Error> {
    let index = index_query(db, filter.text.as_deref()).await?;
    let (principal_arn, user_name) = filter.principal_columns();
    let (before_time, before_account, before_id) = before.clone();
    let rows = sqlx::query_as!(
        SummaryRow,
        r#"WITH matched AS MATERIALIZED (
               SELECT s.account_id, s.event_time, s.event_id, false AS archived
               -- The fence (migration 0051): the trigram index alone reads the pattern's
               -- selective part ($19), or the token index its words ($20); a bound on time or
               -- account beside them would lead the planner to AND in the range's index (3.3M
               -- entries read for 169 matches at 10M events). With neither, the pattern beside the
               -- bounds, as before. The pattern itself and the bounds are matched on what they find.
               FROM (SELECT s.account_id, s.event_time, s.event_id, s.search_text
                     FROM event_search s
                     WHERE s.search_text ILIKE $19::text
                     UNION ALL
                     SELECT s.account_id, s.event_time, s.event_id, s.search_text
                     FROM event_search s
                     WHERE skywarden_search_tokens(s.search_text) @@ $20::text::tsquery
                     UNION ALL
                     -- Neither (no selective part): the pattern beside the bounds, as before.
                     SELECT s.account_id, s.event_time, s.event_id, s.search_text
                     FROM event_search s
                     WHERE $19::text IS NULL AND $20::text IS NULL AND s.search_text ILIKE $15
                       AND ($1::text IS NULL OR s.account_id = $1)
                       AND ($8::timestamptz IS NULL OR s.event_time >= $8)
                       AND ($9::timestamptz IS NULL OR s.event_time < $9)
                       AND (s.event_time, s.account_id, s.event_id) > ($12, $13::text, $14::text)
                     OFFSET 0) s
               WHERE s.search_text ILIKE $15
                 AND ($1::text IS NULL OR s.account_id = $1)
                 AND ($8::timestamptz IS NULL OR s.event_time >= $8)
                 AND ($9::timestamptz IS NULL OR s.event_time < $9)
                 AND (s.event_time, s.account_id, s.event_id) > ($12, $13::text, $14::text)
               UNION ALL
               -- As in `older_by_trigrams`.
               SELECT DISTINCT l.account_id, l.event_time, l.event_id, true
               -- Fenced as the index rows are: the selective part, else the pattern and bounds.
               FROM (SELECT l.account_id, l.event_time, l.event_id, l.lake_object, l.lake_row_group, l.search_text
               FROM lake_events l
               WHERE l.search_text ILIKE $21::text
               UNION ALL
               SELECT l.account_id, l.event_time, l.event_id, l.lake_object, l.lake_row_group, l.search_text
               FROM lake_events l
               WHERE $21::text IS NULL AND l.search_text ILIKE $15
                 AND ($1::text IS NULL OR l.account_id = $1)
                 AND ($8::timestamptz IS NULL OR l.event_time >= $8)
                 AND ($9::timestamptz IS NULL OR l.event_time < $9)
                 AND (l.event_time, l.account_id, l.event_id) > ($12, $13::text, $14::text)
               OFFSET 0) l
               WHERE l.search_text ILIKE $15
                 AND ($1::text IS NULL OR l.account_id = $1)
                 AND ($8::timestamptz IS NULL OR l.event_time >= $8)
                 AND ($9::timestamptz IS NULL OR l.event_time < $9)
                 AND (l.event_time, l.account_id, l.event_id) > ($12, $13::text, $14::text)
                 AND NOT EXISTS (SELECT 1 FROM cloudtrail_events h
                                 WHERE h.account_id = l.account_id AND h.event_time = l.event_time
                                   AND h.event_id = l.event_id)
               UNION ALL
               SELECT t.account_id, t.event_time, t.event_id, false
               FROM (SELECT t.account_id, t.event_time, t.event_id, t.raw
               FROM cloudtrail_events t
               WHERE t.ingested_at >= $18
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
           -- One copy per key (the cache may hold an event twice). A trigram page is exact.
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
        tail_start,
        index.trigrams,
        index.tokens,
        index.lake,
    )
    .fetch_all(db)
    .await?;
    Ok(SummaryRow::events(rows))
}

/// [`super::count`] with text. A word many events hold is counted over a window of the newest
/// rows of the range, read by time alone ([`count_by_window`]): it answers when it finds `cap`
/// matches or holds the whole range. A short window first (the probe) tells how long a window
/// the cap needs; when that is too long (a rarer word), or the window falls short, the trigram
/// path counts (in a generic plan its bitmap holds every match of the word in the table before
/// the cap can stop it: 0.25 to 0.3 s for a word every one of a million events holds; figures in
/// docs/scaling.md, "Archived events and `q`, and the capped count").
pub(super) async fn count(db: &sqlx::PgPool, filter: &EventFilter, cap: i64) -> Result<i64, sqlx::Error> {
    let tail_start = crate::search::index::tail_start(db).await?;
    let mut tx = without_jit(db).await?;
    let probe = count_by_window(&mut tx, filter, cap, COUNT_PROBE_ROWS, tail_start).await?;
    let mut counted = probe.exact.then_some(probe.found);
    if counted.is_none()
        && let Some(rows) = count_window_rows(probe.found, probe.read, cap)
    {
        let window = count_by_window(&mut tx, filter, cap, rows, tail_start).await?;
        counted = window.exact.then_some(window.found);
    }
    let counted = match counted {
        Some(counted) => counted,
        None => count_by_trigrams(&mut tx, filter, cap, tail_start).await?,
    };
    tx.commit().await?;
    Ok(counted)
}

/// What a count's window found: matches up to the cap, whether that is the count, and how many
/// rows it read (when it did not reach the cap).
struct WindowCount {
    found: i64,
    exact: bool,
    read: i64,
}

/// The matches among the newest `rows` index and cached rows of the range, plus the hot tail,
/// counted up to `cap`, and whether that is the count: `cap` reached (there are at least as
/// many) or the window held the whole range. Read lazily, newest first: the cap stops the
/// window (and the tail after it) as soon as it is reached.
// One statement: its lines are the SQL.
#[allow(clippy::too_many_lines)]
async fn count_by_window(
    db: &mut sqlx::PgConnection,
    filter: &EventFilter,
    cap: i64,
    rows: i64,
    tail_start: DateTime<Utc>,
) -> Result<WindowCount, sqlx::Error> {
    let (principal_arn, user_name) = filter.principal_columns();
    sqlx::query_as!(
        WindowCount,
        r#"WITH recent AS MATERIALIZED (
               -- The newest $16 index rows and the newest $16 cached rows of the range, each side
               -- by its time index, one side after the other: a count needs no order, and a
               -- sort would read every row before the first match. A cached copy keeps its origin.
               (SELECT s.account_id, s.event_time, s.event_id, false AS archived, NULL::text AS lake_object,
                       NULL::integer AS lake_row_group, s.search_text ILIKE $12 AS hit
                FROM event_search s
                WHERE s.event_time >= coalesce($8::timestamptz, '-infinity')
                  AND s.event_time < coalesce($9::timestamptz, 'infinity')
                ORDER BY s.event_time DESC
                LIMIT $16)
               UNION ALL
               (SELECT l.account_id, l.event_time, l.event_id, true, l.lake_object, l.lake_row_group,
                       l.search_text ILIKE $12
                FROM lake_events l
                WHERE l.event_time >= coalesce($8::timestamptz, '-infinity')
                  AND l.event_time < coalesce($9::timestamptz, 'infinity')
                ORDER BY l.event_time DESC
                LIMIT $16)),
           counted AS MATERIALIZED (
               SELECT 1
               FROM (SELECT r.account_id, r.event_time, r.event_id, r.archived
                     FROM recent r
                     WHERE r.hit AND ($1::text IS NULL OR r.account_id = $1)
                       -- Each key once, without a sort (the cap must stop the scan): an archived
                       -- copy is left out when the hot table holds the event again, or when it is
                       -- not the first copy the cache holds.
                       AND NOT (r.archived AND (EXISTS (SELECT 1 FROM cloudtrail_events h
                                                        WHERE h.account_id = r.account_id AND h.event_time = r.event_time
                                                          AND h.event_id = r.event_id)
                                                OR EXISTS (SELECT 1 FROM lake_events d
                                                           WHERE d.account_id = r.account_id AND d.event_time = r.event_time
                                                             AND d.event_id = r.event_id
                                                             AND (d.lake_object, d.lake_row_group) < (r.lake_object, r.lake_row_group))))
                     UNION ALL
                     -- The hot tail, read whole unless the window reached the cap.
                     SELECT t.account_id, t.event_time, t.event_id, false
                     FROM (SELECT t.account_id, t.event_time, t.event_id, t.raw
                     FROM cloudtrail_events t
                     WHERE t.ingested_at >= $15
                       AND ($1::text IS NULL OR t.account_id = $1)
                       AND ($8::timestamptz IS NULL OR t.event_time >= $8)
                       AND ($9::timestamptz IS NULL OR t.event_time < $9)
                       AND NOT EXISTS (SELECT 1 FROM event_search s
                                       WHERE s.account_id = t.account_id AND s.event_time = t.event_time
                                         AND s.event_id = t.event_id)
                     OFFSET 0) t
                     WHERE skywarden_event_search_text(t.raw) ILIKE $12) m
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
               LIMIT $14)
           -- The window's rows are counted only when the cap was not reached (it was read whole
           -- then): exact when neither side filled its share.
           SELECT f.found AS "found!",
                  CASE WHEN f.found >= $14 THEN true
                       ELSE (SELECT count(*) FILTER (WHERE archived) < $16 AND count(*) FILTER (WHERE NOT archived) < $16
                             FROM recent) END AS "exact!",
                  CASE WHEN f.found >= $14 THEN 0 ELSE (SELECT count(*) FROM recent) END AS "read!"
           FROM (SELECT count(*) AS found FROM counted) f"#,
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
        rows,
    )
    .fetch_one(db)
    .await
}

/// The count through the trigram indexes, up to `cap`.
// One statement: its lines are the SQL.
#[allow(clippy::too_many_lines)]
async fn count_by_trigrams(
    db: &mut sqlx::PgConnection,
    filter: &EventFilter,
    cap: i64,
    tail_start: DateTime<Utc>,
) -> Result<i64, sqlx::Error> {
    let index = index_query(&mut *db, filter.text.as_deref()).await?;
    let (principal_arn, user_name) = filter.principal_columns();
    sqlx::query_scalar!(
        r#"WITH matched AS MATERIALIZED (
               SELECT s.account_id, s.event_time, s.event_id, false AS archived
               -- The fence (migration 0051): the trigram index alone reads the pattern's
               -- selective part ($16), or the token index its words ($17); a bound on time or
               -- account beside them would lead the planner to AND in the range's index (3.3M
               -- entries read for 169 matches at 10M events). With neither, the pattern beside the
               -- bounds, as before. The pattern itself and the bounds are matched on what they find.
               FROM (SELECT s.account_id, s.event_time, s.event_id, s.search_text
                     FROM event_search s
                     WHERE s.search_text ILIKE $16::text
                     UNION ALL
                     SELECT s.account_id, s.event_time, s.event_id, s.search_text
                     FROM event_search s
                     WHERE skywarden_search_tokens(s.search_text) @@ $17::text::tsquery
                     UNION ALL
                     -- Neither (no selective part): the pattern beside the bounds, as before.
                     SELECT s.account_id, s.event_time, s.event_id, s.search_text
                     FROM event_search s
                     WHERE $16::text IS NULL AND $17::text IS NULL AND s.search_text ILIKE $12
                       AND ($1::text IS NULL OR s.account_id = $1)
                       AND ($8::timestamptz IS NULL OR s.event_time >= $8)
                       AND ($9::timestamptz IS NULL OR s.event_time < $9)
                     OFFSET 0) s
               WHERE s.search_text ILIKE $12
                 AND ($1::text IS NULL OR s.account_id = $1)
                 AND ($8::timestamptz IS NULL OR s.event_time >= $8)
                 AND ($9::timestamptz IS NULL OR s.event_time < $9)
               UNION ALL
               -- The cache's stored text, through its trigram index. Each key once without a
               -- DISTINCT (which would read every match before the cap): an archived copy is left
               -- out when the hot table holds the event again, or when it is not the first copy.
               SELECT l.account_id, l.event_time, l.event_id, true
               -- Fenced as the index rows are: the selective part, else the pattern and bounds.
               FROM (SELECT l.account_id, l.event_time, l.event_id, l.lake_object, l.lake_row_group, l.search_text
               FROM lake_events l
               WHERE l.search_text ILIKE $18::text
               UNION ALL
               SELECT l.account_id, l.event_time, l.event_id, l.lake_object, l.lake_row_group, l.search_text
               FROM lake_events l
               WHERE $18::text IS NULL AND l.search_text ILIKE $12
                 AND ($1::text IS NULL OR l.account_id = $1)
                 AND ($8::timestamptz IS NULL OR l.event_time >= $8)
                 AND ($9::timestamptz IS NULL OR l.event_time < $9)
               OFFSET 0) l
               WHERE l.search_text ILIKE $12
                 AND ($1::text IS NULL OR l.account_id = $1)
                 AND ($8::timestamptz IS NULL OR l.event_time >= $8)
                 AND ($9::timestamptz IS NULL OR l.event_time < $9)
                 AND NOT EXISTS (SELECT 1 FROM cloudtrail_events h
                                 WHERE h.account_id = l.account_id AND h.event_time = l.event_time
                                   AND h.event_id = l.event_id)
                 AND NOT EXISTS (SELECT 1 FROM lake_events d
                                 WHERE d.account_id = l.account_id AND d.event_time = l.event_time
                                   AND d.event_id = l.event_id
                                   AND (d.lake_object, d.lake_row_group) < (l.lake_object, l.lake_row_group))
               UNION ALL
               SELECT t.account_id, t.event_time, t.event_id, false
               FROM (SELECT t.account_id, t.event_time, t.event_id, t.raw
               FROM cloudtrail_events t
               WHERE t.ingested_at >= $15
                 AND ($1::text IS NULL OR t.account_id = $1)
                 AND ($8::timestamptz IS NULL OR t.event_time >= $8)
                 AND ($9::timestamptz IS NULL OR t.event_time < $9)
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
        index.trigrams,
        index.tokens,
        index.lake,
    )
    .fetch_one(db)
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_count_window_is_sized_for_the_cap_or_not_read() {
        // Every row read a match: 1.5 × the cap, at least twice the probe.
        assert_eq!(count_window_rows(2_000, 2_000, 10_001), Some(15_001));
        assert_eq!(count_window_rows(2_000, 2_000, 100), Some(COUNT_PROBE_ROWS * 2));
        // One in five: 75,000 rows; one in ten would need 150,000.
        assert_eq!(count_window_rows(400, 2_000, 10_001), Some(75_007));
        assert_eq!(count_window_rows(200, 2_000, 10_001), None);
        assert_eq!(count_window_rows(0, 2_000, 10_001), None);
    }
}
