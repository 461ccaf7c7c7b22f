//! Reading archived months back for the audit trail. A search whose time range (and account)
//! touches months the archive dropped loads what it needs from the lake into `lake_events`, an
//! UNLOGGED cache table (migration 0038), and the search reads `audit_events`, the hot table
//! and the cache as one: the same filters, order, cursors, counts and text matches, each event
//! marked `archived`.
//!
//! Only what the range needs is read: objects whose path's `accountId` and `eventDay` match,
//! and in each object only the row groups whose `time` statistics overlap the range (the
//! footer is read first; a folder is read by offset, S3 by ranged GETs). Loads are bounded per
//! request (days, bytes, time), the cache by rows (least recently used row groups go first),
//! and single-flight: a loader holds an advisory lock on the object, so concurrent requests
//! never load a row group twice. A read that fails is named in the answer and counted in
//! `/metrics`; the answer then says it is incomplete, never silently shorter.
//! docs/archive.md ("Reading archived months") tells the bounds.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::{Buf, Bytes};
use chrono::{DateTime, NaiveDate, Utc};
use parquet::errors::ParquetError;
use parquet::file::reader::{ChunkReader, FileReader, Length};
use parquet::file::serialized_reader::SerializedFileReader;
use parquet::file::statistics::Statistics;
use parquet::record::{Field, Row};
use serde::Serialize;
use serde_json::{Value as Json, json};
use sqlx::PgPool;

use super::destination::{Destination, chain};
use super::store::Source;
use crate::aws::AwsSettings;

/// The bounds of reading the lake.
#[derive(Clone, Debug)]
pub struct LakeLimits {
    /// Archived days (one account's day, every region) one request may load.
    pub max_days_per_request: usize,
    /// Parquet bytes one request may read (footers and row groups).
    pub max_bytes_per_request: u64,
    /// Rows the cache holds before the least recently used row groups are evicted.
    pub cache_max_rows: i64,
    /// Time one request may spend reading the lake.
    pub read_timeout: Duration,
}

impl Default for LakeLimits {
    fn default() -> Self {
        Self {
            max_days_per_request: 31,
            max_bytes_per_request: 512 << 20,
            cache_max_rows: 2_000_000,
            read_timeout: Duration::from_secs(20),
        }
    }
}

/// Row groups used this recently are never evicted: a request may be reading them.
const EVICT_AFTER: Duration = Duration::from_secs(60);
/// Bytes read from the end of an object to find its footer in one request.
const FOOTER_GUESS: u64 = 64 << 10;
/// Footers kept in memory (each a few KiB); past it the map starts again.
const FOOTERS_KEPT: usize = 4096;
/// Row groups closer than this in a file are fetched in one range (the gap costs less than a request).
const MERGE_GAP: u64 = 1 << 20;
/// Rows per INSERT into the cache.
const INSERT_ROWS: usize = 500;

#[derive(Debug, thiserror::Error)]
pub enum LakeError {
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
    #[error("{0}")]
    Read(String),
}

/// The reader: its bounds, and what it keeps between requests (open destinations, footers).
pub struct Lake {
    limits: LakeLimits,
    destinations: tokio::sync::Mutex<HashMap<String, Arc<Destination>>>,
    footers: Mutex<HashMap<String, Arc<Footer>>>,
}

impl Default for Lake {
    fn default() -> Self {
        Self::new(LakeLimits::default())
    }
}

/// The time range and account a search reads.
#[derive(Clone, Debug, Default)]
pub struct Span {
    pub since: Option<DateTime<Utc>>,
    pub until: Option<DateTime<Utc>>,
    pub account: Option<String>,
}

impl Span {
    /// Whether an event at `time` (microseconds) can be in the span.
    fn overlaps_micros(&self, first: i64, last: i64) -> bool {
        self.since.is_none_or(|s| last >= s.timestamp_micros())
            && self.until.is_none_or(|u| first < u.timestamp_micros())
    }
}

/// Which way a page reads: newest first (the audit trail, `cursor`) or oldest first (`before`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Direction {
    NewestFirst,
    OldestFirst,
}

/// What reading the lake did for one answer: the API's `archive` object.
#[derive(Clone, Debug, Default, Serialize, utoipa::ToSchema)]
pub struct LakeRead {
    /// False when archived events in the range may be missing from the answer: a bound was
    /// reached (`limit`) or an object could not be read (`errors`).
    pub complete: bool,
    /// Archived days (an account's day) the range touches.
    pub archived_days: usize,
    /// Days this request loaded from the lake (the others were cached or not needed).
    pub days_loaded: usize,
    /// Objects whose footer or row groups this request read.
    pub objects_read: u64,
    /// Row groups loaded, and row groups skipped because their `time` statistics lie outside the range.
    pub row_groups_read: u64,
    pub row_groups_skipped: u64,
    pub rows_loaded: u64,
    pub bytes_read: u64,
    /// The bound that stopped the reading, and how to stay within it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub limit: Option<String>,
    /// Objects that could not be read, each with its cause.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub errors: Vec<String>,
}

/// One archived object of `cloudtrail_events`, from `archive_partitions`.
#[derive(Clone, Debug)]
struct LakeObject {
    destination: String,
    key: String,
    /// From the path (`accountId=`), or None when the path holds a digest (an odd account).
    account: Option<String>,
    day: NaiveDate,
}

/// One account's archived day: the unit of the per-request bound.
#[derive(Clone, Debug)]
pub struct LakeDay {
    pub account: String,
    pub day: NaiveDate,
    objects: Vec<LakeObject>,
}

impl LakeDay {
    /// Midnight UTC opening the day.
    pub fn start(&self) -> DateTime<Utc> {
        self.day.and_hms_opt(0, 0, 0).map_or(DateTime::<Utc>::MIN_UTC, |t| t.and_utc())
    }

    /// Midnight UTC closing the day (exclusive).
    pub fn end(&self) -> DateTime<Utc> {
        self.start() + chrono::Duration::days(1)
    }
}

/// A row group's place and `time` statistics.
#[derive(Clone, Debug)]
struct GroupStat {
    rows: i64,
    /// Milliseconds (OCSF `time`); None when the writer left no statistics.
    min_ms: Option<i64>,
    max_ms: Option<i64>,
    start: u64,
    end: u64,
}

impl GroupStat {
    fn overlaps(&self, span: &Span) -> bool {
        match (self.min_ms, self.max_ms) {
            // `time` is the event time cut to milliseconds: the events lie in [min, max + 999 µs].
            (Some(min), Some(max)) => span.overlaps_micros(min.saturating_mul(1000), max.saturating_mul(1000) + 999),
            _ => true,
        }
    }
}

/// An object's footer: its length, the bytes read from its end, and its row groups.
#[derive(Debug)]
struct Footer {
    len: u64,
    tail_start: u64,
    tail: Bytes,
    groups: Vec<GroupStat>,
}

// Process-wide counters for `/metrics`.
static OBJECTS_READ: AtomicU64 = AtomicU64::new(0);
static GROUPS_READ: AtomicU64 = AtomicU64::new(0);
static GROUPS_SKIPPED: AtomicU64 = AtomicU64::new(0);
static ROWS_LOADED: AtomicU64 = AtomicU64::new(0);
static BYTES_READ: AtomicU64 = AtomicU64::new(0);
static READ_ERRORS: AtomicU64 = AtomicU64::new(0);
static LIMITED: AtomicU64 = AtomicU64::new(0);
static EVICTED: AtomicU64 = AtomicU64::new(0);

/// A request's reading under way: its bounds spent so far and what it did.
struct Budget {
    deadline: Instant,
    read: LakeRead,
}

impl Lake {
    pub fn new(limits: LakeLimits) -> Self {
        Self { limits, destinations: Default::default(), footers: Default::default() }
    }

    pub fn limits(&self) -> &LakeLimits {
        &self.limits
    }

    /// The archived days `span` touches, newest first, or None when it touches none (the
    /// common case: no lake involved, no `archive` in the answer).
    pub async fn days(&self, pool: &PgPool, span: &Span) -> Result<Option<Vec<LakeDay>>, LakeError> {
        let objects = archived_objects(pool, span).await?;
        let mut days: BTreeMap<(NaiveDate, String), Vec<LakeObject>> = BTreeMap::new();
        for object in objects {
            let account = object.account.clone().unwrap_or_default();
            days.entry((object.day, account)).or_default().push(object);
        }
        if days.is_empty() {
            return Ok(None);
        }
        Ok(Some(days.into_iter().rev().map(|((day, account), objects)| LakeDay { account, day, objects }).collect()))
    }

    /// Starts a request's reading.
    pub fn begin(&self, days: &[LakeDay]) -> Reading<'_> {
        let budget = Budget {
            deadline: Instant::now() + self.limits.read_timeout,
            read: LakeRead { complete: true, archived_days: days.len(), ..LakeRead::default() },
        };
        Reading { lake: self, budget, done: HashSet::new(), loaded: HashSet::new() }
    }

    async fn destination(&self, text: &str, settings: &AwsSettings) -> Result<Arc<Destination>, LakeError> {
        let mut open = self.destinations.lock().await;
        if let Some(destination) = open.get(text) {
            return Ok(destination.clone());
        }
        let destination = match text.strip_prefix("s3://") {
            Some(_) => Destination::open(text, settings).await,
            // Never create a folder that is gone: reading it must fail, visibly.
            None if std::path::Path::new(text).is_dir() => Ok(Destination::Folder(text.into())),
            None => Err(super::ArchiveError::Destination(format!("{text}: the lake folder is missing"))),
        }
        .map_err(|e| LakeError::Read(e.to_string()))?;
        let destination = Arc::new(destination);
        open.insert(text.to_owned(), destination.clone());
        Ok(destination)
    }

    fn cached_footer(&self, key: &str) -> Option<Arc<Footer>> {
        self.footers.lock().ok()?.get(key).cloned()
    }

    fn keep_footer(&self, key: &str, footer: Arc<Footer>) {
        if let Ok(mut footers) = self.footers.lock() {
            if footers.len() >= FOOTERS_KEPT {
                footers.clear();
            }
            footers.insert(key.to_owned(), footer);
        }
    }
}

/// One request's reading of the lake: which days it made sure of, and its bounds.
pub struct Reading<'a> {
    lake: &'a Lake,
    budget: Budget,
    /// Days already made sure of, with the span they were made sure of for (a page's span is
    /// narrower than its count's: the cursor's day was read only up to the cursor).
    done: HashSet<(String, NaiveDate, Option<i64>, Option<i64>)>,
    /// Days this request loaded anything of (the per-request bound counts them once).
    loaded: HashSet<(String, NaiveDate)>,
}

impl Reading<'_> {
    /// What the reading did so far.
    pub fn report(&self) -> &LakeRead {
        &self.budget.read
    }

    /// Ends the reading: the report, after evicting what the cache holds past its bound.
    pub async fn finish(self, pool: &PgPool) -> LakeRead {
        if let Err(error) = evict(pool, self.lake.limits.cache_max_rows).await {
            tracing::warn!(%error, "evicting the lake cache failed");
        }
        let read = self.budget.read;
        if !read.complete {
            LIMITED.fetch_add(u64::from(read.limit.is_some()), Ordering::Relaxed);
        }
        read
    }

    /// Makes sure every day of `days` is loaded for `span`, unless more than the per-request
    /// bound of them is not cached at all: then nothing is loaded and the answer says so
    /// (counting a wide range of the lake is refused, not done by halves).
    pub async fn ensure_all(&mut self, pool: &PgPool, settings: &AwsSettings, span: &Span, days: &[LakeDay]) {
        let uncached = match uncached_days(pool, days).await {
            Ok(n) => n,
            Err(error) => {
                self.failed(format!("lake cache: {error}"));
                return;
            }
        };
        if uncached > self.lake.limits.max_days_per_request {
            self.limit_reached(format!(
                "max_days_per_request={}: the range touches {uncached} archived days not loaded yet; narrow since/until or give an account",
                self.lake.limits.max_days_per_request
            ));
            return;
        }
        for day in days {
            if !self.ensure_day(pool, settings, span, day).await {
                return;
            }
        }
    }

    /// Makes sure of the days, in `direction`, until `satisfied` says the page needs no day past
    /// the one given (its start, or end, as the direction reads) or a bound is reached. `search`
    /// is run again after each batch of loaded days.
    pub async fn ensure_page<T, F, Fut>(
        &mut self,
        pool: &PgPool,
        settings: &AwsSettings,
        span: &Span,
        days: &[LakeDay],
        direction: Direction,
        mut search: F,
    ) -> Result<Vec<T>, sqlx::Error>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Result<(Vec<T>, Option<DateTime<Utc>>), sqlx::Error>>,
    {
        let mut ordered: Vec<&LakeDay> = days.iter().collect();
        if direction == Direction::OldestFirst {
            ordered.reverse();
        }
        let (mut page, mut edge) = search().await?;
        let mut batch = 1usize;
        let mut index = 0;
        while index < ordered.len() {
            // The page is full and ends before this day: no later day can change it.
            let beyond = |day: &LakeDay| match (direction, edge) {
                (Direction::NewestFirst, Some(oldest)) => oldest >= day.end(),
                (Direction::OldestFirst, Some(newest)) => newest < day.start(),
                (_, None) => false,
            };
            if beyond(ordered[index]) {
                return Ok(page);
            }
            let mut loaded = 0;
            while index < ordered.len() && loaded < batch {
                if !self.ensure_day(pool, settings, span, ordered[index]).await {
                    return Ok(search().await?.0);
                }
                index += 1;
                loaded += 1;
            }
            batch *= 2;
            (page, edge) = search().await?;
        }
        Ok(page)
    }

    /// Loads what `span` needs of one day; false when a bound stops the reading.
    async fn ensure_day(&mut self, pool: &PgPool, settings: &AwsSettings, span: &Span, day: &LakeDay) -> bool {
        let key = (
            day.account.clone(),
            day.day,
            span.since.map(|t| t.timestamp_micros()),
            span.until.map(|t| t.timestamp_micros()),
        );
        if !self.done.insert(key) {
            return true;
        }
        let limits = &self.lake.limits;
        let spent_days = self.budget.read.days_loaded >= limits.max_days_per_request
            && !self.loaded.contains(&(day.account.clone(), day.day));
        let spent_bytes = self.budget.read.bytes_read >= limits.max_bytes_per_request;
        if spent_days || spent_bytes {
            let which = if spent_days {
                format!("max_days_per_request={}", limits.max_days_per_request)
            } else {
                format!("max_bytes_per_request={}", limits.max_bytes_per_request)
            };
            self.limit_reached(format!(
                "{which}: archived days older than {} were not read; narrow since/until or give an account",
                day.end().format("%Y-%m-%d")
            ));
            return false;
        }
        let mut loaded_any = false;
        for object in &day.objects {
            let left = self.budget.deadline.saturating_duration_since(Instant::now());
            let load = load_object(self.lake, pool, settings, object, span, &mut self.budget.read);
            match tokio::time::timeout(left, load).await {
                Ok(Ok(loaded)) => loaded_any |= loaded,
                Ok(Err(error)) => self.failed(format!("{}: {error}", object_name(object))),
                Err(_) => {
                    self.failed(format!(
                        "{}: the lake read took longer than read_timeout={}s",
                        object_name(object),
                        limits.read_timeout.as_secs()
                    ));
                    return false;
                }
            }
        }
        if loaded_any {
            self.loaded.insert((day.account.clone(), day.day));
            self.budget.read.days_loaded = self.loaded.len();
        }
        true
    }

    fn failed(&mut self, error: String) {
        tracing::warn!(%error, "reading the lake failed");
        READ_ERRORS.fetch_add(1, Ordering::Relaxed);
        self.budget.read.complete = false;
        self.budget.read.errors.push(error);
    }

    fn limit_reached(&mut self, limit: String) {
        tracing::info!(%limit, "a lake read stopped at its bound");
        self.budget.read.complete = false;
        self.budget.read.limit.get_or_insert(limit);
    }
}

fn object_name(object: &LakeObject) -> String {
    format!("{}/{}", object.destination.trim_end_matches('/'), object.key)
}

/// The dropped objects of `cloudtrail_events` whose path's account and day fall in `span`.
async fn archived_objects(pool: &PgPool, span: &Span) -> Result<Vec<LakeObject>, sqlx::Error> {
    let rows = sqlx::query!(
        r#"SELECT p.destination, o.key AS "key!"
           FROM archive_partitions p CROSS JOIN LATERAL unnest(p.objects) AS o(key)
           WHERE p.source = $1 AND p.state = 'dropped'
             AND ($2::timestamptz IS NULL OR p.month_start + interval '1 month' > $2)
             AND ($3::timestamptz IS NULL OR p.month_start < $3)
           ORDER BY o.key"#,
        Source::CloudTrail.table(),
        span.since,
        span.until,
    )
    .fetch_all(pool)
    .await?;
    let first_day = span.since.map(|s| s.date_naive());
    // `until` is exclusive: an until at midnight does not touch that day.
    let last_day = span.until.map(|u| (u - chrono::Duration::microseconds(1)).date_naive());
    Ok(rows
        .into_iter()
        .filter_map(|r| {
            let (account, day) = path_keys(&r.key)?;
            Some(LakeObject { destination: r.destination, key: r.key, account, day })
        })
        .filter(|o| first_day.is_none_or(|d| o.day >= d) && last_day.is_none_or(|d| o.day <= d))
        // An account that is not 12 digits has a digest in the path: such objects are read.
        .filter(|o| match (&span.account, &o.account) {
            (Some(wanted), Some(account)) => wanted == account,
            _ => true,
        })
        .collect())
}

/// `accountId` (None for a digest) and `eventDay` of an object key.
fn path_keys(key: &str) -> Option<(Option<String>, NaiveDate)> {
    let segment = |name: &str| key.split('/').find_map(|s| s.strip_prefix(name));
    let account = segment("accountId=")?;
    let day = NaiveDate::parse_from_str(segment("eventDay=")?, "%Y%m%d").ok()?;
    let account = (!account.starts_with("invalid-")).then(|| account.to_owned());
    Some((account, day))
}

/// Days of `days` with nothing cached at all.
async fn uncached_days(pool: &PgPool, days: &[LakeDay]) -> Result<usize, sqlx::Error> {
    let objects: Vec<String> = days.iter().flat_map(|d| d.objects.iter().map(|o| o.key.clone())).collect();
    let cached: HashSet<String> = sqlx::query_scalar!(
        "SELECT DISTINCT lake_object FROM lake_loaded_groups WHERE lake_object = ANY($1)",
        &objects
    )
    .fetch_all(pool)
    .await?
    .into_iter()
    .collect();
    Ok(days.iter().filter(|d| !d.objects.iter().any(|o| cached.contains(&o.key))).count())
}

/// Loads the row groups of `object` that `span` needs and the cache lacks; true when it loaded
/// any. Under a transaction-scoped advisory lock on the object: a second request for it waits,
/// then finds the groups loaded.
async fn load_object(
    lake: &Lake,
    pool: &PgPool,
    settings: &AwsSettings,
    object: &LakeObject,
    span: &Span,
    read: &mut LakeRead,
) -> Result<bool, LakeError> {
    let destination = lake.destination(&object.destination, settings).await?;
    let footer = match lake.cached_footer(&object.key) {
        Some(footer) => footer,
        None => {
            let footer = Arc::new(read_footer(&destination, &object.key, read).await?);
            lake.keep_footer(&object.key, footer.clone());
            footer
        }
    };
    let wanted: Vec<usize> = (0..footer.groups.len()).filter(|g| footer.groups[*g].overlaps(span)).collect();
    let skipped = (footer.groups.len() - wanted.len()) as u64;
    read.row_groups_skipped += skipped;
    GROUPS_SKIPPED.fetch_add(skipped, Ordering::Relaxed);
    if wanted.is_empty() {
        return Ok(false);
    }
    let mut tx = pool.begin().await?;
    sqlx::query!("SELECT pg_advisory_xact_lock(hashtextextended('skywarden lake ' || $1, 0))", object.key)
        .execute(&mut *tx)
        .await?;
    let loaded: HashSet<i32> =
        sqlx::query_scalar!("SELECT row_group FROM lake_loaded_groups WHERE lake_object = $1", object.key)
            .fetch_all(&mut *tx)
            .await?
            .into_iter()
            .collect();
    let missing: Vec<usize> =
        wanted.iter().copied().filter(|g| !loaded.contains(&i32::try_from(*g).unwrap_or(i32::MAX))).collect();
    let wanted_groups: Vec<i32> = wanted.iter().map(|g| i32::try_from(*g).unwrap_or(i32::MAX)).collect();
    sqlx::query!(
        "UPDATE lake_loaded_groups SET used_at = now() WHERE lake_object = $1 AND row_group = ANY($2)",
        object.key,
        &wanted_groups
    )
    .execute(&mut *tx)
    .await?;
    if missing.is_empty() {
        tx.commit().await?;
        return Ok(false);
    }
    let rows = read_groups(&destination, object, &footer, &missing, read).await?;
    for (group, rows) in missing.iter().zip(rows) {
        let count = rows.len();
        for chunk in rows.chunks(INSERT_ROWS) {
            sqlx::query!(
                "INSERT INTO lake_events SELECT * FROM jsonb_populate_recordset(NULL::lake_events, $1)",
                Json::Array(chunk.to_vec())
            )
            .execute(&mut *tx)
            .await?;
        }
        let stat = &footer.groups[*group];
        sqlx::query!(
            "INSERT INTO lake_loaded_groups (lake_object, row_group, account_id, event_day, rows_loaded, bytes_read)
             VALUES ($1, $2, $3, $4, $5, $6)",
            object.key,
            i32::try_from(*group).unwrap_or(i32::MAX),
            object.account.clone().unwrap_or_default(),
            object.day,
            count as i64,
            i64::try_from(stat.end - stat.start).unwrap_or(i64::MAX),
        )
        .execute(&mut *tx)
        .await?;
        read.rows_loaded += count as u64;
        ROWS_LOADED.fetch_add(count as u64, Ordering::Relaxed);
    }
    tx.commit().await?;
    read.row_groups_read += missing.len() as u64;
    GROUPS_READ.fetch_add(missing.len() as u64, Ordering::Relaxed);
    Ok(true)
}

/// The object's length and footer: the last `FOOTER_GUESS` bytes, more when the metadata is longer.
async fn read_footer(destination: &Destination, key: &str, read: &mut LakeRead) -> Result<Footer, LakeError> {
    read.objects_read += 1;
    OBJECTS_READ.fetch_add(1, Ordering::Relaxed);
    let len = object_len(destination, key).await?;
    if len < 12 {
        return Err(LakeError::Read(format!("{len} bytes: not a Parquet file")));
    }
    let mut tail_start = len.saturating_sub(FOOTER_GUESS);
    let mut tail = read_range(destination, key, tail_start, len - tail_start, read).await?;
    let footer_len = u64::from(u32::from_le_bytes(tail[tail.len() - 8..tail.len() - 4].try_into().unwrap_or([0; 4])));
    if &tail[tail.len() - 4..] != b"PAR1" || footer_len + 8 > len {
        return Err(LakeError::Read("not a Parquet file (no footer)".into()));
    }
    if footer_len + 8 > len - tail_start {
        tail_start = len - footer_len - 8;
        tail = read_range(destination, key, tail_start, footer_len + 8, read).await?;
    }
    let sparse = Sparse { len, chunks: vec![(tail_start, tail.clone())] };
    let reader = SerializedFileReader::new(sparse).map_err(|e| LakeError::Read(format!("Parquet footer: {e}")))?;
    let metadata = reader.metadata();
    let time_column =
        metadata.file_metadata().schema_descr().columns().iter().position(|c| c.path().string() == "time");
    let groups = metadata
        .row_groups()
        .iter()
        .map(|group| {
            let (min_ms, max_ms) = match time_column.and_then(|c| group.column(c).statistics()) {
                Some(Statistics::Int64(s)) => (s.min_opt().copied(), s.max_opt().copied()),
                _ => (None, None),
            };
            let ranges = group.columns().iter().map(|c| c.byte_range());
            let start = ranges.clone().map(|(s, _)| s).min().unwrap_or(0);
            let end = ranges.map(|(s, l)| s + l).max().unwrap_or(0);
            GroupStat { rows: group.num_rows(), min_ms, max_ms, start, end }
        })
        .collect();
    Ok(Footer { len, tail_start, tail, groups })
}

/// The rows of the row groups `wanted`, as `lake_events` records (JSON), one list per group.
async fn read_groups(
    destination: &Destination,
    object: &LakeObject,
    footer: &Footer,
    wanted: &[usize],
    read: &mut LakeRead,
) -> Result<Vec<Vec<Json>>, LakeError> {
    let mut chunks = vec![(footer.tail_start, footer.tail.clone())];
    for (start, end) in fetch_spans(footer, wanted) {
        chunks.push((start, read_range(destination, &object.key, start, end - start, read).await?));
    }
    let sparse = Sparse { len: footer.len, chunks };
    let (key, wanted, expected) =
        (object.key.clone(), wanted.to_vec(), wanted.iter().map(|g| footer.groups[*g].rows).collect::<Vec<_>>());
    // Decoding and GZIP are CPU work: off the async threads.
    tokio::task::spawn_blocking(move || decode_groups(sparse, &key, &wanted, &expected))
        .await
        .map_err(|e| LakeError::Read(format!("decoding: {e}")))?
}

/// The byte ranges to fetch for the row groups `wanted`: none for a group inside the footer's
/// tail (a small object is read whole with its footer), and neighbours less than `MERGE_GAP`
/// apart merged, so an object costs one GET for its groups, not one per group.
fn fetch_spans(footer: &Footer, wanted: &[usize]) -> Vec<(u64, u64)> {
    let mut groups: Vec<&GroupStat> =
        wanted.iter().map(|g| &footer.groups[*g]).filter(|g| g.start < footer.tail_start).collect();
    groups.sort_by_key(|g| g.start);
    let mut spans: Vec<(u64, u64)> = Vec::new();
    for group in groups {
        match spans.last_mut() {
            Some(last) if group.start <= last.1 + MERGE_GAP => last.1 = last.1.max(group.end),
            _ => spans.push((group.start, group.end)),
        }
    }
    spans
}

fn decode_groups(sparse: Sparse, key: &str, wanted: &[usize], expected: &[i64]) -> Result<Vec<Vec<Json>>, LakeError> {
    let parquet = |e: ParquetError| LakeError::Read(format!("Parquet: {e}"));
    let reader = SerializedFileReader::new(sparse).map_err(parquet)?;
    let mut out = Vec::with_capacity(wanted.len());
    for (group, expected) in wanted.iter().zip(expected) {
        let rows = reader.get_row_group(*group).map_err(parquet)?;
        let mut records = Vec::new();
        for (index, row) in rows.get_row_iter(None).map_err(parquet)?.enumerate() {
            let row = row.map_err(parquet)?;
            let record = lake_record(&row, key, *group)
                .map_err(|e| LakeError::Read(format!("row group {group} row {index}: {e}")))?;
            records.push(record);
        }
        if records.len() as i64 != *expected {
            return Err(LakeError::Read(format!(
                "row group {group}: {} rows read, the footer says {expected}",
                records.len()
            )));
        }
        out.push(records);
    }
    Ok(out)
}

/// An API Activity row as the `cloudtrail_events` row it was archived from (the columns of
/// `lake_events`). Each stored column comes from the leaf the writer put it in (ocsf.rs);
/// where the mapping folds two stored values into one (an empty `api.operation` for a missing
/// name; `src_endpoint.name` `unknown` for a missing address), the raw event decides, as ingest
/// derived the column from it.
pub fn lake_record(row: &Row, object: &str, group: usize) -> Result<Json, String> {
    let mut fields = HashMap::new();
    flatten(row, "", &mut fields);
    let text = |path: &str| match fields.get(path) {
        Some(Field::Str(s)) => Some(s.clone()),
        _ => None,
    };
    let flag = |path: &str| match fields.get(path) {
        Some(Field::Bool(b)) => Some(*b),
        _ => None,
    };
    let float = |path: &str| match fields.get(path) {
        Some(Field::Double(f)) => Some(*f),
        _ => None,
    };
    let raw_text = text("raw_data").ok_or("no raw_data")?;
    let raw: Json = serde_json::from_str(&raw_text).map_err(|e| format!("raw_data is not JSON: {e}"))?;
    let raw_text_of = |name: &str| raw.get(name).and_then(Json::as_str).map(str::to_owned);
    let event_time = event_time(&fields)?;
    let event_name = match text("api.operation") {
        Some(name) if !name.is_empty() => Some(name),
        _ => raw_text_of("eventName"),
    };
    let source_ip_text =
        text("src_endpoint.ip").or_else(|| text("src_endpoint.svc_name")).or_else(|| match text("src_endpoint.name") {
            Some(name) if name == "unknown" => raw_text_of("sourceIPAddress"),
            other => other,
        });
    let source_ip = source_ip_text.as_deref().and_then(|s| s.parse::<std::net::IpAddr>().ok()).map(|ip| ip.to_string());
    let resource_ids: Vec<String> = match text("unmapped.resource_ids") {
        Some(list) => serde_json::from_str(&list).map_err(|e| format!("unmapped.resource_ids: {e}"))?,
        None => Vec::new(),
    };
    // Written since the writer kept them; an older object lacks the leaves (then: the raw
    // event's eventType, and the event time for ingested_at).
    let event_type = match fields.get("unmapped.event_type") {
        Some(Field::Str(s)) => Some(s.clone()),
        Some(_) => None,
        None => raw_text_of("eventType"),
    };
    let ingested_at = match text("unmapped.ingested_at") {
        Some(t) => DateTime::parse_from_rfc3339(&t).map_err(|e| format!("ingested_at {t}: {e}"))?.to_utc(),
        None => event_time,
    };
    let micros = |t: DateTime<Utc>| t.to_rfc3339_opts(chrono::SecondsFormat::Micros, true);
    Ok(json!({
        "account_id": text("cloud.account.uid").ok_or("no cloud.account.uid")?,
        "event_time": micros(event_time),
        "event_id": text("metadata.uid").ok_or("no metadata.uid")?,
        "region": text("cloud.region"),
        "event_source": text("api.service.name"),
        "event_name": event_name,
        "event_type": event_type,
        "principal_arn": text("actor.user.uid_alt"),
        "principal_type": text("actor.user.type"),
        "principal_id": text("actor.user.uid"),
        "user_name": text("actor.user.name"),
        "access_key_id": text("actor.user.credential_uid"),
        "source_ip": source_ip,
        "source_ip_text": source_ip_text,
        "user_agent": text("http_request.user_agent"),
        "error_code": text("status_code"),
        "error_message": text("status_detail"),
        "read_only": flag("unmapped.read_only"),
        "resource_ids": resource_ids,
        "geo_country": text("src_endpoint.location.country"),
        "geo_city": text("src_endpoint.location.city"),
        "geo_latitude": float("unmapped.geo_latitude"),
        "geo_longitude": float("unmapped.geo_longitude"),
        "geo_asn": match fields.get("unmapped.source_asn") { Some(Field::Long(n)) => Some(*n), _ => None },
        "geo_as_org": text("unmapped.source_as_org"),
        "raw": raw,
        "ingested_at": micros(ingested_at),
        "source_is_tor": flag("unmapped.source_is_tor"),
        "source_is_vpn": flag("unmapped.source_is_vpn"),
        "source_is_hosting": flag("unmapped.source_is_hosting"),
        "source_is_aws": flag("unmapped.source_is_aws"),
        "lake_object": object,
        "lake_row_group": group,
    }))
}

/// `time_dt` (microseconds), else `time` (milliseconds).
fn event_time(fields: &HashMap<String, &Field>) -> Result<DateTime<Utc>, String> {
    match (fields.get("time_dt"), fields.get("time")) {
        (Some(Field::Str(t)), _) => {
            Ok(DateTime::parse_from_rfc3339(t).map_err(|e| format!("time_dt {t}: {e}"))?.to_utc())
        }
        (_, Some(Field::Long(ms))) => DateTime::from_timestamp_millis(*ms).ok_or_else(|| "time out of range".into()),
        _ => Err("no time".into()),
    }
}

/// Leaves by dotted path (`src_endpoint.location.country`); a null group's leaves are absent.
fn flatten<'a>(row: &'a Row, prefix: &str, out: &mut HashMap<String, &'a Field>) {
    for (name, field) in row.get_column_iter() {
        let path = if prefix.is_empty() { name.clone() } else { format!("{prefix}.{name}") };
        match field {
            Field::Group(group) => flatten(group, &path, out),
            other => {
                out.insert(path, other);
            }
        }
    }
}

/// Object size in bytes.
async fn object_len(destination: &Destination, key: &str) -> Result<u64, LakeError> {
    match destination {
        Destination::Folder(root) => {
            let path = root.join(key);
            let metadata = tokio::fs::metadata(&path).await.map_err(|e| LakeError::Read(format!("{e}")))?;
            Ok(metadata.len())
        }
        Destination::S3 { client, bucket, prefix, .. } => {
            let head = client.head_object().bucket(bucket).key(s3_key(prefix, key)).send().await;
            let head = head.map_err(|e| LakeError::Read(chain(&e)))?;
            Ok(head.content_length().and_then(|n| u64::try_from(n).ok()).unwrap_or(0))
        }
    }
}

/// `len` bytes of the object from `start`, counted against the request.
async fn read_range(
    destination: &Destination,
    key: &str,
    start: u64,
    len: u64,
    read: &mut LakeRead,
) -> Result<Bytes, LakeError> {
    if len == 0 {
        return Ok(Bytes::new());
    }
    let bytes = match destination {
        Destination::Folder(root) => {
            use tokio::io::{AsyncReadExt, AsyncSeekExt};
            let path = root.join(key);
            let io = |e: std::io::Error| LakeError::Read(e.to_string());
            let mut file = tokio::fs::File::open(&path).await.map_err(io)?;
            file.seek(std::io::SeekFrom::Start(start)).await.map_err(io)?;
            let mut buffer = vec![0; usize::try_from(len).map_err(|_| LakeError::Read("range too large".into()))?];
            file.read_exact(&mut buffer).await.map_err(io)?;
            Bytes::from(buffer)
        }
        Destination::S3 { client, bucket, prefix, .. } => {
            let range = format!("bytes={start}-{}", start + len - 1);
            let object = client.get_object().bucket(bucket).key(s3_key(prefix, key)).range(range).send().await;
            let object = object.map_err(|e| LakeError::Read(chain(&e)))?;
            let body = object.body.collect().await.map_err(|e| LakeError::Read(e.to_string()))?.into_bytes();
            if body.len() as u64 != len {
                return Err(LakeError::Read(format!("asked for {len} bytes at {start}, got {}", body.len())));
            }
            body
        }
    };
    read.bytes_read += len;
    BYTES_READ.fetch_add(len, Ordering::Relaxed);
    Ok(bytes)
}

fn s3_key(prefix: &str, key: &str) -> String {
    if prefix.is_empty() { key.to_owned() } else { format!("{prefix}/{key}") }
}

/// The parts of an object read so far (the footer, the row groups wanted), as the Parquet
/// reader's source: asking for a byte not fetched is an error, never a silent zero.
struct Sparse {
    len: u64,
    chunks: Vec<(u64, Bytes)>,
}

impl Sparse {
    fn slice(&self, start: u64, length: Option<usize>) -> Result<Bytes, ParquetError> {
        for (offset, bytes) in &self.chunks {
            if start >= *offset && start < offset + bytes.len() as u64 {
                let from = usize::try_from(start - offset).unwrap_or(usize::MAX);
                let to = length.map_or(bytes.len(), |l| from + l);
                if to <= bytes.len() {
                    return Ok(bytes.slice(from..to));
                }
            }
        }
        Err(ParquetError::General(format!("bytes at {start} were not fetched")))
    }
}

impl Length for Sparse {
    fn len(&self) -> u64 {
        self.len
    }
}

impl ChunkReader for Sparse {
    type T = bytes::buf::Reader<Bytes>;

    fn get_read(&self, start: u64) -> Result<Self::T, ParquetError> {
        Ok(self.slice(start, None)?.reader())
    }

    fn get_bytes(&self, start: u64, length: usize) -> Result<Bytes, ParquetError> {
        self.slice(start, Some(length))
    }
}

/// Drops the least recently used row groups while the cache holds more than `max_rows`, never
/// one used in the last `EVICT_AFTER` (a request may be reading it).
async fn evict(pool: &PgPool, max_rows: i64) -> Result<(), sqlx::Error> {
    let total =
        sqlx::query_scalar!(r#"SELECT coalesce(sum(rows_loaded), 0)::bigint AS "rows!" FROM lake_loaded_groups"#)
            .fetch_one(pool)
            .await?;
    if total <= max_rows {
        return Ok(());
    }
    let cutoff = Utc::now() - chrono::Duration::from_std(EVICT_AFTER).unwrap_or_default();
    let evicted = sqlx::query_scalar!(
        r#"WITH candidates AS (
               -- Rows of the groups used before each one: a group goes while they do not yet
               -- bring the cache down to its bound.
               SELECT lake_object, row_group,
                      sum(rows_loaded) OVER (ORDER BY used_at, lake_object, row_group) - rows_loaded AS before
               FROM lake_loaded_groups WHERE used_at < $2),
           gone AS (
               DELETE FROM lake_loaded_groups g USING candidates c
               WHERE g.lake_object = c.lake_object AND g.row_group = c.row_group AND c.before < $3::bigint - $1::bigint
               RETURNING g.lake_object, g.row_group),
           rows AS (
               DELETE FROM lake_events e USING gone
               WHERE e.lake_object = gone.lake_object AND e.lake_row_group = gone.row_group)
           SELECT count(*) AS "groups!" FROM gone"#,
        max_rows,
        cutoff,
        total,
    )
    .fetch_one(pool)
    .await?;
    EVICTED.fetch_add(u64::try_from(evicted).unwrap_or(0), Ordering::Relaxed);
    tracing::info!(evicted, total, max_rows, "lake cache evicted its least recently used row groups");
    Ok(())
}

/// Prometheus lines: what reading the lake did since the process started, and the cache's size.
pub async fn write_metrics(out: &mut String, pool: &PgPool) {
    let counters: [(&str, &str, &AtomicU64); 8] = [
        ("objects_read", "Lake objects whose footer the audit trail read.", &OBJECTS_READ),
        ("row_groups_read", "Row groups loaded from the lake into the cache.", &GROUPS_READ),
        ("row_groups_skipped", "Row groups skipped on their time statistics.", &GROUPS_SKIPPED),
        ("rows_loaded", "Archived events loaded into the cache.", &ROWS_LOADED),
        ("bytes_read", "Parquet bytes read from the lake.", &BYTES_READ),
        ("errors", "Lake reads that failed (the answer named the object and said it was incomplete).", &READ_ERRORS),
        ("limited", "Answers cut by a per-request lake bound (they said so).", &LIMITED),
        ("evicted_row_groups", "Row groups evicted from the cache (least recently used).", &EVICTED),
    ];
    for (name, help, counter) in counters {
        let _ = writeln!(out, "# HELP skywarden_lake_read_{name}_total {help}");
        let _ = writeln!(out, "# TYPE skywarden_lake_read_{name}_total counter");
        let _ = writeln!(out, "skywarden_lake_read_{name}_total {}", counter.load(Ordering::Relaxed));
    }
    let cached =
        sqlx::query_scalar!(r#"SELECT coalesce(sum(rows_loaded), 0)::bigint AS "rows!" FROM lake_loaded_groups"#)
            .fetch_one(pool)
            .await;
    if let Ok(rows) = cached {
        out.push_str("# HELP skywarden_lake_cache_rows Archived events held in the lake cache.\n");
        out.push_str("# TYPE skywarden_lake_cache_rows gauge\n");
        let _ = writeln!(out, "skywarden_lake_cache_rows {rows}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn object_paths_give_account_and_day() {
        let key = "ext/skywarden-api/region=us-east-1/accountId=111111111111/eventDay=20240103/cloudtrail_events-202401-g0.parquet";
        assert_eq!(path_keys(key), Some((Some("111111111111".into()), NaiveDate::from_ymd_opt(2024, 1, 3).unwrap())));
        let odd = "ext/skywarden-api/region=global/accountId=invalid-00ff/eventDay=20240103/x.parquet";
        assert_eq!(path_keys(odd).unwrap().0, None);
        assert_eq!(path_keys("ext/skywarden-api/x.parquet"), None);
    }

    #[test]
    fn row_groups_overlap_on_their_time_statistics() {
        let at = |s: &str| Some(s.parse::<DateTime<Utc>>().unwrap());
        let ms = |s: &str| at(s).unwrap().timestamp_millis();
        let group = GroupStat {
            rows: 1,
            min_ms: Some(ms("2024-01-03T10:00:00Z")),
            max_ms: Some(ms("2024-01-03T11:00:00.123Z")),
            start: 4,
            end: 5,
        };
        let span = |since, until| Span { since, until, account: None };
        assert!(group.overlaps(&span(None, None)));
        assert!(group.overlaps(&span(at("2024-01-03T11:00:00.123500Z"), None)), "the max's own millisecond");
        assert!(!group.overlaps(&span(at("2024-01-03T11:00:00.124Z"), None)));
        assert!(!group.overlaps(&span(None, at("2024-01-03T10:00:00Z"))), "until is exclusive");
        assert!(group.overlaps(&span(None, at("2024-01-03T10:00:00.000001Z"))));
        let unknown = GroupStat { min_ms: None, max_ms: None, ..group };
        assert!(unknown.overlaps(&span(at("2030-01-01T00:00:00Z"), None)), "no statistics: read");
    }

    #[test]
    fn neighbouring_row_groups_are_fetched_in_one_range() {
        let group = |start, end| GroupStat { rows: 1, min_ms: None, max_ms: None, start, end };
        let far = 10 << 20;
        let footer = Footer {
            len: far + 300,
            tail_start: far + 100,
            tail: Bytes::new(),
            groups: vec![group(4, 50), group(50, 90), group(far, far + 100), group(far + 100, far + 200)],
        };
        assert_eq!(fetch_spans(&footer, &[0, 1, 2, 3]), [(4, 90), (far, far + 100)], "the last is in the tail");
        assert_eq!(fetch_spans(&footer, &[1]), [(50, 90)]);
        assert!(fetch_spans(&footer, &[3]).is_empty());
    }

    #[test]
    fn a_sparse_source_refuses_bytes_not_fetched() {
        let sparse = Sparse { len: 100, chunks: vec![(10, Bytes::from_static(b"abcdef"))] };
        assert_eq!(sparse.get_bytes(12, 3).unwrap(), Bytes::from_static(b"cde"));
        assert!(sparse.get_bytes(14, 4).is_err());
        assert!(sparse.get_bytes(2, 1).is_err());
        assert_eq!(sparse.len(), 100);
    }
}
