//! `skywarden-bench queries`: audit-trail query latency at scale.
//!
//! Fills a scratch database with generated events (default 10 million, over 90 days, 50
//! accounts, 500 principals, 200 event names, 70,000 resource ids, 10 countries), then runs each
//! kind of audit-trail filter many times with varied values through the API's own search
//! function, and prints p50 and p95 per filter. The baseline, measured in the same run, is the
//! lookup of one event by its key (`GET /api/v1/events/{account}/{event_id}`).

use std::time::{Duration, Instant};

use chrono::{DateTime, TimeZone, Utc};
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{ConnectOptions, PgPool};

use skywarden::db::MIGRATOR;
use skywarden::search::events::{EventFilter, search, text_search};

pub const DATABASE: &str = "skywarden_bench_queries";
const CHUNK: i64 = 500_000;
const DAYS: i64 = 90;
/// Events stored at one instant, and the time between instants: what `skywarden import` gives
/// (a batch of 2,000 rows a transaction, ~27k events/s). One instant per 500k-row statement made
/// every page of the full-text indexer read the whole instant (docs/scaling.md).
const ROWS_PER_INSTANT: i64 = 2_000;
const MILLIS_BETWEEN_INSTANTS: i64 = 74;

#[derive(Debug, thiserror::Error)]
pub enum QueryBenchError {
    #[error("database error")]
    Db(#[from] sqlx::Error),
    #[error("migration failed")]
    Migrate(#[from] sqlx::migrate::MigrateError),
}

/// One filter's latencies.
pub struct FilterTiming {
    pub name: &'static str,
    pub p50: Duration,
    pub p95: Duration,
    pub rows: usize,
}

pub struct QueryBenchReport {
    pub events: i64,
    pub generate_seconds: Option<f64>,
    pub baseline_p50: Duration,
    pub timings: Vec<FilterTiming>,
    /// The full-text index built after the filters above ran without it (they scanned).
    pub full_text: Option<FullTextFigures>,
}

/// Full text over 30 days, the same searches as a scan of the unindexed tail and through the
/// index, and what building the index took (not part of any import figure).
pub struct FullTextFigures {
    /// `None` with `--keep-index`: the earlier run's index was kept, nothing scanned.
    pub scan: Option<FilterTiming>,
    pub indexed: FilterTiming,
    /// A word one event in five holds (`ec2`), 30 days: the whole request (page and count), the
    /// page as searches answer it (from a window of the newest index rows) and through the
    /// trigram index alone, same searches.
    pub common: FilterTiming,
    pub common_trigrams: FilterTiming,
    /// An IPv4 address (`176.36.a.b`), 30 days: dotted-number tokens (migration 0056), and
    /// the tail scan of the same searches (`None` with `--keep-index`).
    pub address: FilterTiming,
    pub address_scan: Option<FilterTiming>,
    pub indexed_events: u64,
    pub index_seconds: f64,
}

impl std::fmt::Display for QueryBenchReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(f, "events in the table:  {}", self.events)?;
        if let Some(seconds) = self.generate_seconds {
            writeln!(f, "generated in:         {seconds:.0} s")?;
        }
        writeln!(f, "baseline (one event by key) p50: {:.2} ms", ms(self.baseline_p50))?;
        writeln!(f, "{:<34} {:>9} {:>9} {:>10} {:>6}", "filter", "p50 ms", "p95 ms", "p95/base", "rows")?;
        for t in &self.timings {
            writeln!(
                f,
                "{:<34} {:>9.2} {:>9.2} {:>10.1} {:>6}",
                t.name,
                ms(t.p50),
                ms(t.p95),
                t.p95.as_secs_f64() / self.baseline_p50.as_secs_f64().max(1e-9),
                t.rows
            )?;
        }
        if let Some(ft) = &self.full_text {
            for t in ft
                .scan
                .iter()
                .chain([&ft.indexed, &ft.common, &ft.common_trigrams])
                .chain(&ft.address_scan)
                .chain([&ft.address])
            {
                writeln!(f, "{:<34} {:>9.2} {:>9.2} {:>10} {:>6}", t.name, ms(t.p50), ms(t.p95), "", t.rows)?;
            }
            match &ft.scan {
                Some(scan) => writeln!(
                    f,
                    "full text, 30 days: index p95 {:.2} ms vs tail scan p95 {:.2} ms ({:.1}x faster, same run, same searches)",
                    ms(ft.indexed.p95),
                    ms(scan.p95),
                    scan.p95.as_secs_f64() / ft.indexed.p95.as_secs_f64().max(1e-9)
                )?,
                None => writeln!(
                    f,
                    "full text, 30 days: index p95 {:.2} ms (--keep-index: an earlier run's index, no tail scan this run)",
                    ms(ft.indexed.p95)
                )?,
            }
            writeln!(
                f,
                "full text, common word, 30 days, page + count: window p95 {:.2} ms vs trigram path p95 {:.2} ms ({:.1}x faster, same run)",
                ms(ft.common.p95),
                ms(ft.common_trigrams.p95),
                ft.common_trigrams.p95.as_secs_f64() / ft.common.p95.as_secs_f64().max(1e-9)
            )?;
            if let Some(scan) = &ft.address_scan {
                writeln!(
                    f,
                    "full text, an address, 30 days: index p95 {:.2} ms vs tail scan p95 {:.2} ms ({:.1}x faster, same run, same searches)",
                    ms(ft.address.p95),
                    ms(scan.p95),
                    scan.p95.as_secs_f64() / ft.address.p95.as_secs_f64().max(1e-9)
                )?;
            }
            writeln!(
                f,
                "full-text indexing (off the import path{}): {} events in {:.1} s ({:.0} events/s)",
                if ft.scan.is_none() { "; --keep-index: only what the kept index lacked" } else { "" },
                ft.indexed_events,
                ft.index_seconds,
                ft.indexed_events as f64 / ft.index_seconds.max(1e-9)
            )?;
        }
        Ok(())
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// How a run treats an earlier run's scratch database.
#[derive(Clone, Copy, Debug, Default)]
pub struct Reuse {
    /// An existing scratch database with at least the events asked for is used as it is
    /// (generation takes minutes).
    pub database: bool,
    /// Its full-text index too (caught up, not rebuilt): no tail-scan baseline, no re-indexing
    /// (both take most of an hour at 10M events), only the indexed searches.
    pub index: bool,
}

/// Runs the benchmark in a scratch database next to `server`.
pub async fn run(
    server: &PgConnectOptions,
    events: i64,
    samples: usize,
    reuse: Reuse,
) -> Result<QueryBenchReport, QueryBenchError> {
    let mut admin = server.clone().database("postgres").connect().await?;
    let exists: bool = sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)")
        .bind(DATABASE)
        .fetch_one(&mut admin)
        .await?;
    if !(reuse.database && exists) {
        sqlx::raw_sql(&format!("DROP DATABASE IF EXISTS {DATABASE} WITH (FORCE)")).execute(&mut admin).await?;
        sqlx::raw_sql(&format!("CREATE DATABASE {DATABASE}")).execute(&mut admin).await?;
    }
    // The same connection settings as Skywarden's own pool.
    let pool = PgPoolOptions::new().max_connections(2).connect_with(server.clone().database(DATABASE)).await?;
    MIGRATOR.run(&pool).await?;
    let start = Utc.with_ymd_and_hms(2026, 8, 1, 0, 0, 0).single().expect("a valid date");
    let stored: i64 = sqlx::query_scalar("SELECT count(*) FROM cloudtrail_events").fetch_one(&pool).await?;
    let generate_seconds = if stored < events {
        let started = Instant::now();
        generate(&pool, start, stored, events).await?;
        Some(started.elapsed().as_secs_f64())
    } else {
        None
    };
    let total: i64 = sqlx::query_scalar("SELECT count(*) FROM cloudtrail_events").fetch_one(&pool).await?;
    let report = measure(&pool, start, total, samples.max(5), reuse.index).await?;
    pool.close().await;
    Ok(QueryBenchReport { events: total, generate_seconds, ..report })
}

/// Inserts events `from+1 ..= to` in chunks. Secondary indexes are dropped first and rebuilt
/// after (much faster than maintaining them row by row), from their own stored definitions.
pub async fn generate(pool: &PgPool, start: DateTime<Utc>, from: i64, to: i64) -> Result<(), sqlx::Error> {
    for month in 0..4 {
        let first = start + chrono::Months::new(month);
        sqlx::query("SELECT skywarden_ensure_month_partition('cloudtrail_events', $1)")
            .bind(first)
            .execute(pool)
            .await?;
    }
    let indexes: Vec<(String, String)> = sqlx::query_as(
        "SELECT indexname, indexdef FROM pg_indexes WHERE tablename = 'cloudtrail_events' AND indexname NOT LIKE '%pkey'",
    )
    .fetch_all(pool)
    .await?;
    for (name, _) in &indexes {
        sqlx::raw_sql(&format!("DROP INDEX IF EXISTS {name}")).execute(pool).await?;
    }
    // Stored before now, as import stores them, so that the indexer's watermark passes them.
    let instants = (to - from) / ROWS_PER_INSTANT + 1;
    let stored_from = Utc::now() - chrono::Duration::milliseconds(instants * MILLIS_BETWEEN_INSTANTS);
    // Rows stamped before an earlier run's watermark would be neither indexed nor scanned as
    // the tail: the index of a database being filled up starts again.
    let below_watermark: bool =
        sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM event_search_watermark WHERE indexed_until > $1)")
            .bind(stored_from)
            .fetch_one(pool)
            .await?;
    if below_watermark {
        tracing::info!("bench-queries: the full-text index is rebuilt (events are added below its watermark)");
        empty_index(pool).await?;
    }
    let mut next = from + 1;
    while next <= to {
        let last = (next + CHUNK - 1).min(to);
        sqlx::query(GENERATE_SQL)
            .bind(next)
            .bind(last)
            .bind(to)
            .bind(start)
            .bind(from)
            .bind(stored_from)
            .bind(ROWS_PER_INSTANT)
            .bind(MILLIS_BETWEEN_INSTANTS)
            .execute(pool)
            .await?;
        tracing::info!(generated = last, of = to, "bench-queries: events generated");
        next = last + 1;
    }
    for (name, definition) in &indexes {
        tracing::info!(index = %name, "bench-queries: building index");
        // pg_indexes shows a partitioned table's index as `ON ONLY`, which would build it for
        // the parent alone; without ONLY it is built on every partition.
        sqlx::raw_sql(&definition.replace(" ON ONLY ", " ON ")).execute(pool).await?;
    }
    // VACUUM too, as autovacuum would after such inserts: it sets the visibility map that lets
    // the covering source-address index answer without reading the table.
    sqlx::raw_sql("VACUUM (ANALYZE) cloudtrail_events").execute(pool).await?;
    Ok(())
}

/// Event g of N: spread evenly over the 90 days, with values drawn from fixed vocabularies by
/// cheap hashes of g so that every filter has many matches and many non-matches; stored in
/// instants of $7 events, $8 ms apart from $6 (events after $5).
const GENERATE_SQL: &str = r#"
INSERT INTO cloudtrail_events (account_id, event_time, event_id, region, event_source, event_name, event_type,
    principal_arn, principal_type, user_name, source_ip, source_ip_text, user_agent, error_code, read_only,
    resource_ids, geo_country, raw, ingested_at)
SELECT account, time, 'evt-' || g, region, source, name, 'AwsApiCall',
       'arn:aws:iam::' || account || ':user/' || principal, 'IAMUser', principal, ip::inet, ip, 'aws-cli/2.15.0',
       CASE WHEN g % 40 = 0 THEN 'AccessDenied' END, g % 3 <> 0,
       ARRAY['sg-' || lpad(to_hex((g * 7) % 20000), 17, '0'), 'i-' || lpad(to_hex((g * 11) % 50000), 17, '0')],
       country,
       jsonb_build_object('eventID', 'evt-' || g, 'eventName', name, 'eventSource', source, 'awsRegion', region,
                          'sourceIPAddress', ip, 'userAgent', 'aws-cli/2.15.0',
                          'userIdentity', jsonb_build_object('type', 'IAMUser', 'userName', principal),
                          'requestParameters', jsonb_build_object('groupId', 'sg-' || lpad(to_hex((g * 7) % 20000), 17, '0'))),
       $6::timestamptz + ((g - $5::bigint - 1) / $7::bigint) * $8::bigint * interval '1 millisecond'
FROM (
    SELECT g,
           '1111222233' || lpad((g % 50)::text, 2, '0') AS account,
           $4::timestamptz + (g::float8 / $3::float8) * interval '90 days' AS time,
           (ARRAY['us-east-1', 'eu-west-1', 'us-west-2', 'ap-southeast-1'])[1 + g % 4] AS region,
           (ARRAY['ec2.amazonaws.com', 'iam.amazonaws.com', 's3.amazonaws.com', 'sts.amazonaws.com', 'signin.amazonaws.com'])[1 + (g / 7) % 5] AS source,
           'Event' || ((g * 7919) % 200) AS name,
           'user' || ((g * 31) % 500) AS principal,
           (ARRAY['81.2.', '176.36.', '24.5.', '203.0.', '91.198.', '5.188.'])[1 + (g * 13) % 6] || ((g * 17) % 256) || '.' || ((g * 19) % 256) AS ip,
           (ARRAY['US', 'GB', 'DE', 'FR', 'UA', 'CN', 'BR', 'IN', 'JP', 'CA'])[1 + (g * 3) % 10] AS country
    FROM generate_series($1::bigint, $2::bigint) AS g
) e
"#;

/// Empties the full-text index and moves its watermark back to the start: the next run indexes
/// every event.
async fn empty_index(pool: &PgPool) -> Result<(), sqlx::Error> {
    sqlx::raw_sql("TRUNCATE event_search; UPDATE event_search_watermark SET indexed_until = '-infinity'")
        .execute(pool)
        .await?;
    Ok(())
}

/// A cheap deterministic sequence of varied values (no dependency on a random source).
fn pick(i: usize, modulo: usize) -> usize {
    (i.wrapping_mul(2_654_435_761) >> 7) % modulo
}

async fn measure(
    pool: &PgPool,
    start: DateTime<Utc>,
    total: i64,
    samples: usize,
    keep_index: bool,
) -> Result<QueryBenchReport, QueryBenchError> {
    // Warm up the caches the same way for every filter.
    search(pool, &EventFilter { limit: 100, ..Default::default() }).await?;
    let baseline_p50 = measure_baseline(pool, total, samples).await?;
    let mut timings = Vec::new();
    for (name, make) in filters(start) {
        timings.push(time_filter(pool, name, &make, samples).await?);
    }
    let full_text = Some(measure_full_text(pool, start, samples, keep_index).await?);
    Ok(QueryBenchReport { events: total, generate_seconds: None, baseline_p50, timings, full_text })
}

/// Samples of the full-text scan baseline.
const SCAN_SAMPLES: usize = 5;

/// Full text over 30 days: first with nothing indexed (every event in the tail: the scan `q`
/// was before the index), then indexed, over the same searches. With `keep_index`, an earlier
/// run's index is caught up and kept, and nothing is scanned.
async fn measure_full_text(
    pool: &PgPool,
    start: DateTime<Utc>,
    samples: usize,
    keep_index: bool,
) -> Result<FullTextFigures, QueryBenchError> {
    if !keep_index {
        // A reused database may be indexed from an earlier run: start from nothing.
        empty_index(pool).await?;
    }
    let make: Make = Box::new(move |i| {
        let since = start + chrono::Duration::days(pick(i, (DAYS - 30) as usize) as i64);
        EventFilter {
            text: Some(format!("%sg-{:017x}%", pick(i, 20000))),
            since: Some(since),
            until: Some(since + chrono::Duration::days(30)),
            ..page()
        }
    });
    // An address the generated events use (GENERATE_SQL: event g has `176.36.` when g % 6 is 1,
    // then (g * 17) % 256 and (g * 19) % 256): g % 256 odd, about 4,000 events in 30 days.
    let address: Make = Box::new(move |i| {
        let since = start + chrono::Duration::days(pick(i, (DAYS - 30) as usize) as i64);
        let g = 2 * pick(i, 128) + 1;
        EventFilter {
            text: Some(format!("%176.36.{}.{}%", (g * 17) % 256, (g * 19) % 256)),
            since: Some(since),
            until: Some(since + chrono::Duration::days(30)),
            ..page()
        }
    });
    // The scan is the baseline, seconds a sample at 10M events: a few samples tell it.
    let (scan, address_scan) = match keep_index {
        true => (None, None),
        false => (
            Some(time_filter(pool, "full text, 30 days (tail scan)", &make, samples.min(SCAN_SAMPLES)).await?),
            Some(time_filter(pool, "address, 30 days (tail scan)", &address, samples.min(SCAN_SAMPLES)).await?),
        ),
    };
    let started = Instant::now();
    let run = skywarden::search::index::run(pool).await?;
    let index_seconds = started.elapsed().as_secs_f64();
    // As autovacuum would after the indexer's inserts.
    sqlx::raw_sql("VACUUM (ANALYZE) event_search").execute(pool).await?;
    let indexed = time_filter(pool, "full text, 30 days", &make, samples).await?;
    let common: Make = Box::new(move |i| {
        let since = start + chrono::Duration::days(pick(i, (DAYS - 30) as usize) as i64);
        EventFilter {
            text: Some("%ec2%".into()),
            since: Some(since),
            until: Some(since + chrono::Duration::days(30)),
            ..page()
        }
    });
    let (common, common_trigrams) = time_common_word(pool, &common, samples).await?;
    let address = time_filter(pool, "full text, an address, 30 days", &address, samples).await?;
    Ok(FullTextFigures {
        scan,
        indexed,
        common,
        common_trigrams,
        address,
        address_scan,
        indexed_events: run.indexed,
        index_seconds,
    })
}

/// The whole request of the audit trail (its page, then its count up to the API's cap) for a
/// common word: the page and count as searches answer them (windows first) and through the
/// trigram index alone (what they cost before the windows), each sample by both, alternating
/// which runs first so neither always finds the other's pages cached. Both must give the same
/// events and count.
async fn time_common_word(
    pool: &PgPool,
    make: &Make,
    samples: usize,
) -> Result<(FilterTiming, FilterTiming), QueryBenchError> {
    const CAP: i64 = 10_001;
    let (mut window, mut trigrams) = (Vec::new(), Vec::new());
    let mut rows = 0;
    for i in 0..samples {
        let filter = make(i);
        let (mut pages, mut counts) = (Vec::new(), Vec::new());
        for by_window in [i % 2 == 0, i % 2 != 0] {
            let started = Instant::now();
            let page = match by_window {
                true => search(pool, &filter).await?,
                false => text_search::page_by(pool, &filter, None, false).await?.unwrap_or_default(),
            };
            let count = match by_window {
                true => skywarden::search::events::count(pool, &filter, CAP).await?,
                false => text_search::count_by(pool, &filter, CAP, None).await?.unwrap_or_default(),
            };
            counts.push(count);
            let elapsed = started.elapsed();
            if by_window {
                window.push(elapsed)
            } else {
                trigrams.push(elapsed)
            }
            pages.push(page.iter().map(|e| (e.event_time, e.event_id.clone(), e.archived)).collect::<Vec<_>>());
        }
        assert_eq!(pages[0], pages[1], "both paths give the same page: {filter:?}");
        assert_eq!(counts[0], counts[1], "both paths give the same count: {filter:?}");
        rows = rows.max(pages[0].len());
    }
    let timing = |name, times: &mut Vec<Duration>| FilterTiming {
        name,
        p50: percentile(times, 50),
        p95: percentile(times, 95),
        rows,
    };
    Ok((timing("full text, common word + count", &mut window), timing("common word + count (trigrams)", &mut trigrams)))
}

/// The p50 of looking up one event by its key.
async fn measure_baseline(pool: &PgPool, total: i64, samples: usize) -> Result<Duration, QueryBenchError> {
    let mut baseline = Vec::new();
    for i in 0..samples {
        let id = format!("evt-{}", 1 + pick(i, total.max(1) as usize));
        let g: i64 = id[4..].parse().unwrap_or(1);
        let account = format!("1111222233{:02}", g % 50);
        let started = Instant::now();
        sqlx::query("SELECT raw FROM cloudtrail_events WHERE account_id = $1 AND event_id = $2 LIMIT 1")
            .bind(&account)
            .bind(&id)
            .fetch_optional(pool)
            .await?;
        baseline.push(started.elapsed());
    }
    Ok(percentile(&mut baseline, 50))
}

/// Makes the `i`th sample of a filter.
type Make = Box<dyn Fn(usize) -> EventFilter>;

/// One page of the newest events: what every filter adds to.
fn page() -> EventFilter {
    EventFilter { limit: 100, ..Default::default() }
}

fn account(i: usize) -> String {
    format!("1111222233{:02}", pick(i, 50))
}

fn day(start: DateTime<Utc>, i: usize) -> DateTime<Utc> {
    start + chrono::Duration::days(pick(i, DAYS as usize) as i64)
}

/// Each kind of audit-trail filter, by name.
fn filters(start: DateTime<Utc>) -> Vec<(&'static str, Make)> {
    let days = move |i: usize, n: i64| (Some(day(start, i)), Some(day(start, i) + chrono::Duration::days(n)));
    vec![
        ("newest page (no filter)", Box::new(|_| page())),
        ("account", Box::new(|i| EventFilter { account: Some(account(i)), ..page() })),
        (
            "principal (user name)",
            Box::new(|i| EventFilter { principal: Some(format!("user{}", pick(i, 500))), ..page() }),
        ),
        ("event name", Box::new(|i| EventFilter { event_name: Some(format!("Event{}", pick(i, 200))), ..page() })),
        (
            "resource id (sg-…)",
            Box::new(|i| EventFilter { resource: Some(format!("sg-{:017x}", pick(i, 20000))), ..page() }),
        ),
        (
            "source ip CIDR /24",
            Box::new(|i| EventFilter { source_ip: Some(format!("176.36.{}.0/24", pick(i, 256))), ..page() }),
        ),
        (
            "country",
            Box::new(|i| EventFilter { country: Some(["US", "UA", "CN", "BR", "JP"][pick(i, 5)].into()), ..page() }),
        ),
        (
            "one day",
            Box::new(move |i| {
                let (since, until) = days(i, 1);
                EventFilter { since, until, ..page() }
            }),
        ),
        ("failed only", Box::new(|_| EventFilter { failed: Some(true), ..page() })),
        (
            "principal + writes only",
            Box::new(|i| EventFilter {
                principal: Some(format!("user{}", pick(i, 500))),
                read_only: Some(false),
                ..page()
            }),
        ),
        (
            "account + event name + 7 days",
            Box::new(move |i| {
                let (since, until) = days(i, 7);
                EventFilter {
                    account: Some(account(i)),
                    event_name: Some(format!("Event{}", pick(i + 7, 200))),
                    since,
                    until,
                    ..page()
                }
            }),
        ),
        (
            "resource + failed (rare)",
            Box::new(|i| EventFilter {
                resource: Some(format!("i-{:017x}", pick(i, 50000))),
                failed: Some(true),
                ..page()
            }),
        ),
        (
            "full text, one day (scan)",
            Box::new(move |i| {
                let (since, until) = days(i, 1);
                EventFilter { text: Some(format!("%sg-{:017x}%", pick(i, 20000))), since, until, ..page() }
            }),
        ),
    ]
}

/// Runs `samples` searches of one filter; the first also fetches its next page, through the
/// cursor.
async fn time_filter(
    pool: &PgPool,
    name: &'static str,
    make: &Make,
    samples: usize,
) -> Result<FilterTiming, QueryBenchError> {
    let mut times = Vec::new();
    let mut rows = 0;
    for i in 0..samples {
        let filter = make(i);
        let started = Instant::now();
        let found = search(pool, &filter).await?;
        times.push(started.elapsed());
        rows = rows.max(found.len());
        if i == 0
            && let Some(last) = found.last()
        {
            let next = EventFilter {
                after: Some((last.event_time, last.account_id.clone(), last.event_id.clone())),
                ..filter.clone()
            };
            search(pool, &next).await?;
        }
    }
    let p50 = percentile(&mut times, 50);
    let p95 = percentile(&mut times, 95);
    Ok(FilterTiming { name, p50, p95, rows })
}

fn percentile(values: &mut [Duration], p: usize) -> Duration {
    values.sort();
    let index = ((values.len() * p).div_ceil(100)).saturating_sub(1).min(values.len().saturating_sub(1));
    values.get(index).copied().unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_pick_the_right_rank() {
        let mut values: Vec<Duration> = (1..=100).map(Duration::from_millis).collect();
        assert_eq!(percentile(&mut values, 50), Duration::from_millis(50));
        assert_eq!(percentile(&mut values, 95), Duration::from_millis(95));
        assert_eq!(percentile(&mut [Duration::from_millis(3)], 95), Duration::from_millis(3));
    }
}
