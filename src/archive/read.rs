//! Reading archived months back for the audit trail. A search whose time range (and account)
//! touches months the archive dropped loads what it needs from the lake into `lake_events`, an
//! UNLOGGED cache table (migration 0038), and the search reads `audit_events`, the hot table
//! and the cache as one: the same filters, order, cursors, counts and text matches, each event
//! marked `archived`.
//!
//! Only what the range needs is read: objects whose path's `accountId` and `eventDay` match,
//! and in each object only the row groups whose `time` statistics overlap the range (the
//! footer is read first; a folder is read by offset, S3 by ranged GETs). Loads are bounded per
//! request (days, bytes counted before each GET, time), across requests (two objects load at
//! once), and the cache by rows (least recently used row groups go first; a full cache of
//! groups in use refuses new loads). One row group is decoded and inserted at a time, and no
//! database connection is held while the lake is read. Single flight: one load of an object
//! at a time in this process, and each group inserted under an advisory lock after checking it
//! is not there yet. A read that fails is named in the answer and counted in `/metrics`; the
//! answer then says it is incomplete, never silently shorter, and a page stops at the gap.
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
use super::store::{self, PartitionLink, Source};
use crate::aws::AwsSettings;

/// The bounds of reading the lake.
#[derive(Clone, Debug)]
pub struct LakeLimits {
    /// Archived days (one account's day, every region) one request may load.
    pub max_days_per_request: usize,
    /// Parquet bytes one request may read (footers and row groups), checked before each read.
    pub max_bytes_per_request: u64,
    /// Rows the cache holds before the least recently used row groups are evicted; a cache
    /// this full of groups in use loads nothing more.
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

/// Row groups used this recently (seconds, by the database's clock) are never evicted: a
/// request may be reading them.
const EVICT_AFTER_SECS: f64 = 60.0;
/// Objects loading at once, across all requests.
const LOADS_AT_ONCE: usize = 2;
/// A destination that failed is not asked again for this long.
const FAILING_FOR: Duration = Duration::from_secs(60);
/// Errors an answer lists; the rest are counted.
const ERRORS_LISTED: usize = 10;
/// Bytes read from the end of an object to find its footer in one request.
const FOOTER_GUESS: u64 = 64 << 10;
/// Bytes of footers (metadata and group statistics) kept in memory; past it the map starts again.
const FOOTER_BYTES_KEPT: usize = 16 << 20;
/// Row groups closer than this in a file are fetched in one range (the gap costs less than a request).
const MERGE_GAP: u64 = 1 << 20;
/// A merged range stops growing at this size (what one load holds in memory).
const MERGE_MAX: u64 = 32 << 20;
/// Rows per INSERT into the cache (and per batch the decoder hands over)…
const INSERT_ROWS: usize = 500;
/// …and raw event bytes: a batch of large events is cut sooner.
const INSERT_BYTES: usize = 4 << 20;
/// A row group larger than this is refused (one load holds its bytes in memory).
const MAX_GROUP_BYTES: u64 = 128 << 20;

#[derive(Debug, thiserror::Error)]
pub enum LakeError {
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
    /// The object could not be read (missing, not Parquet, a row that does not parse).
    #[error("{0}")]
    Read(String),
    /// The destination could not be reached (bucket, endpoint or folder): its other objects
    /// would fail the same way.
    #[error("{0}")]
    Unreachable(String),
    /// Reading on would pass a per-request bound (its name and value).
    #[error("{0}")]
    Limit(String),
}

/// The reader: its bounds, and what it keeps between requests (open destinations, footers,
/// failing destinations, the loads under way and the row groups exports hold).
pub struct Lake {
    limits: LakeLimits,
    destinations: tokio::sync::Mutex<HashMap<String, Arc<Destination>>>,
    footers: Mutex<FooterCache>,
    loads: tokio::sync::Semaphore,
    /// Destination → when it failed and why.
    failing: Mutex<HashMap<String, (Instant, String)>>,
    /// Object → its load's lock (single flight within the process).
    loading: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    /// Bytes asked of the lake, counted before each read (what the byte bound must stop).
    requested: AtomicU64,
}

/// Footers by object key, and their bytes.
#[derive(Default)]
struct FooterCache {
    footers: HashMap<String, Arc<Footer>>,
    bytes: usize,
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
    /// reached (`limit`), an object could not be read (`errors`), or a month is being archived
    /// (neither in PostgreSQL nor readable yet). A page then ends at the first day it could not
    /// read; its `next_cursor` (when given) starts there.
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
    /// What could not be read, each with its cause (object names for administrators only), at
    /// most 10.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub errors: Vec<String>,
    /// Errors past the 10 listed.
    #[serde(skip_serializing_if = "is_zero")]
    pub more_errors: u64,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
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
    /// Why the day cannot be read now (its month is being archived), if so.
    unreadable: Option<String>,
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

/// An object's footer: its length, its metadata (with the 8 closing bytes) and where they
/// start, and its row groups.
#[derive(Debug)]
struct Footer {
    len: u64,
    meta_start: u64,
    meta: Bytes,
    groups: Vec<GroupStat>,
}

impl Footer {
    /// What it holds in memory.
    fn size(&self) -> usize {
        self.meta.len() + self.groups.len() * std::mem::size_of::<GroupStat>()
    }

    fn wanted(&self, span: &Span) -> Vec<i32> {
        (0..self.groups.len()).filter(|g| self.groups[*g].overlaps(span)).map(group_number).collect()
    }
}

fn group_number(index: usize) -> i32 {
    i32::try_from(index).unwrap_or(i32::MAX)
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

/// What an object's load may spend and must mark: the request's report, its byte bound, the
/// lake's count of bytes asked, and the hold the groups it uses go into (an export's).
struct LoadCtx<'r> {
    read: &'r mut LakeRead,
    max_bytes: u64,
    requested: &'r AtomicU64,
    hold: Option<i64>,
    max_rows: i64,
}

/// One thing the answer lacks: what anyone may see, and the details (object and cause) for
/// administrators and the log.
struct Fault {
    public: String,
    detail: String,
}

/// How one day's reading went.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum DayRead {
    /// Everything the span needs of it is cached.
    Read,
    /// Some of it could not be read; other days may be.
    Gap,
    /// A bound stopped the reading here.
    Stop,
}

impl Lake {
    pub fn new(limits: LakeLimits) -> Self {
        Self {
            limits,
            destinations: Default::default(),
            footers: Default::default(),
            loads: tokio::sync::Semaphore::new(LOADS_AT_ONCE),
            failing: Default::default(),
            loading: Default::default(),
            requested: AtomicU64::new(0),
        }
    }

    /// Bytes this lake asked of its destinations, counted before each read (for tests).
    pub fn bytes_requested(&self) -> u64 {
        self.requested.load(Ordering::Relaxed)
    }

    pub fn limits(&self) -> &LakeLimits {
        &self.limits
    }

    /// The archived days `span` touches, newest first, or None when it touches none (the
    /// common case: no lake involved, no `archive` in the answer). A month being archived
    /// (detached from PostgreSQL, not dropped yet) gives days that cannot be read.
    pub async fn days(&self, pool: &PgPool, span: &Span) -> Result<Option<Vec<LakeDay>>, LakeError> {
        let objects = archived_objects(pool, span).await?;
        let mut days: BTreeMap<(NaiveDate, String), LakeDay> = BTreeMap::new();
        for object in objects {
            let account = object.account.clone().unwrap_or_default();
            let day = object.day;
            days.entry((day, account.clone()))
                .or_insert_with(|| LakeDay { account, day, objects: Vec::new(), unreadable: None })
                .objects
                .push(object);
        }
        for day in months_being_archived(pool, span).await? {
            days.entry((day.day, day.account.clone())).or_insert(day);
        }
        if days.is_empty() {
            return Ok(None);
        }
        Ok(Some(days.into_values().rev().collect()))
    }

    /// Starts a request's reading.
    pub fn begin(&self, days: &[LakeDay]) -> Reading<'_> {
        Reading {
            lake: self,
            deadline: Instant::now() + self.limits.read_timeout,
            read: LakeRead { complete: true, archived_days: days.len(), ..LakeRead::default() },
            faults: Vec::new(),
            done: HashMap::new(),
            failed_days: HashMap::new(),
            loaded: HashSet::new(),
            failed_here: HashSet::new(),
            hold: None,
        }
    }

    /// Starts a reading whose row groups stay in the cache while the [`Hold`] it finishes with
    /// is kept and renewed (an export reads them page by page, for longer than eviction
    /// waits). Each group goes into the hold as soon as it is used; dropping the reading (a
    /// client gone mid-load) releases it.
    pub fn begin_held(&self, days: &[LakeDay], pool: &PgPool) -> Reading<'_> {
        Reading { hold: Some(Hold::new(pool.clone())), ..self.begin(days) }
    }

    /// Evicts what the cache holds past its bound (after each request; public for tests).
    pub async fn evict(&self, pool: &PgPool) -> Result<u64, sqlx::Error> {
        evict(pool, self.limits.cache_max_rows).await
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
        .map_err(|e| LakeError::Unreachable(e.to_string()))?;
        let destination = Arc::new(destination);
        open.insert(text.to_owned(), destination.clone());
        Ok(destination)
    }

    /// Why `destination` is skipped, when it failed less than `FAILING_FOR` ago.
    fn failing(&self, destination: &str) -> Option<String> {
        let mut failing = self.failing.lock().ok()?;
        match failing.get(destination) {
            Some((at, why)) if at.elapsed() < FAILING_FOR => Some(why.clone()),
            Some(_) => {
                failing.remove(destination);
                None
            }
            None => None,
        }
    }

    fn mark_failing(&self, destination: &str, why: &str) {
        if let Ok(mut failing) = self.failing.lock() {
            failing.insert(destination.to_owned(), (Instant::now(), why.to_owned()));
        }
    }

    /// The lock one load of `key` holds (another request for the object waits, then finds its
    /// groups cached).
    fn flight(&self, key: &str) -> Arc<tokio::sync::Mutex<()>> {
        let Ok(mut loading) = self.loading.lock() else { return Arc::default() };
        loading.retain(|_, lock| Arc::strong_count(lock) > 1);
        loading.entry(key.to_owned()).or_default().clone()
    }

    fn cached_footer(&self, key: &str) -> Option<Arc<Footer>> {
        self.footers.lock().ok()?.footers.get(key).cloned()
    }

    fn keep_footer(&self, key: &str, footer: Arc<Footer>) {
        if let Ok(mut cache) = self.footers.lock() {
            if cache.bytes + footer.size() > FOOTER_BYTES_KEPT {
                *cache = FooterCache::default();
            }
            cache.bytes += footer.size();
            if let Some(old) = cache.footers.insert(key.to_owned(), footer) {
                cache.bytes -= old.size();
            }
        }
    }
}

/// How long a hold lasts unless renewed (SQL interval): an export renews it with every page.
const HOLD_FOR: &str = "5 minutes";

/// The row groups an export reads, kept in the cache while a hold on them is live
/// (`lake_group_holds`, migration 0045): across servers, each export its own rows. Renewed by
/// the export as it goes; dropped, it deletes its rows (a server that dies leaves holds that
/// lapse within `HOLD_FOR`).
pub struct Hold {
    id: i64,
    pool: PgPool,
}

impl Hold {
    fn new(pool: PgPool) -> Self {
        // A random id (std's hasher keys are random): unique across servers for practical purposes.
        use std::hash::{BuildHasher, Hasher};
        let id = std::collections::hash_map::RandomState::new().build_hasher().finish() as i64;
        Self { id, pool }
    }

    /// Extends the hold; false when a group it held was evicted meanwhile (the export would be
    /// missing its rows).
    pub async fn renew(&self) -> Result<bool, sqlx::Error> {
        let gone = sqlx::query_scalar!(
            r#"WITH renewed AS (
                   UPDATE lake_group_holds SET until = now() + $2::text::interval
                   WHERE hold_id = $1 RETURNING lake_object, row_group)
               SELECT count(*) AS "gone!" FROM renewed r
               WHERE NOT EXISTS (SELECT FROM lake_loaded_groups g
                                 WHERE g.lake_object = r.lake_object AND g.row_group = r.row_group)"#,
            self.id,
            HOLD_FOR
        )
        .fetch_one(&self.pool)
        .await?;
        Ok(gone == 0)
    }

    /// Rows of live holds, all servers' (for tests).
    pub async fn live(pool: &PgPool) -> Result<i64, sqlx::Error> {
        sqlx::query_scalar!(r#"SELECT count(*) AS "n!" FROM lake_group_holds WHERE until > now()"#)
            .fetch_one(pool)
            .await
    }
}

impl Drop for Hold {
    fn drop(&mut self) {
        let (id, pool) = (self.id, self.pool.clone());
        let release = async move {
            // Twice: a statement in flight when the reading was dropped may still add a group.
            for wait in [0, 2] {
                tokio::time::sleep(Duration::from_secs(wait)).await;
                let released = sqlx::query!("DELETE FROM lake_group_holds WHERE hold_id = $1", id).execute(&pool).await;
                if let Err(error) = released {
                    tracing::warn!(%error, "releasing an export's lake row groups failed (they lapse in {HOLD_FOR})");
                    return;
                }
            }
        };
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(release);
        }
    }
}

/// One request's reading of the lake: which days it made sure of, and its bounds.
pub struct Reading<'a> {
    lake: &'a Lake,
    deadline: Instant,
    read: LakeRead,
    faults: Vec<Fault>,
    /// Days already made sure of, with the span they were made sure of for (a page's span is
    /// narrower than its count's: the cursor's day was read only up to the cursor).
    done: HashMap<(String, NaiveDate, Option<i64>, Option<i64>), DayRead>,
    /// Days that could not be read, whatever the span: not tried again in this request.
    failed_days: HashMap<(String, NaiveDate), DayRead>,
    /// Days this request loaded anything of (the per-request bound counts them once).
    loaded: HashSet<(String, NaiveDate)>,
    /// Destinations that failed during this request: skipped for the rest of it.
    failed_here: HashSet<String>,
    /// The hold the groups used go into (an export's); released when the reading is dropped
    /// unless [`Reading::finish_held`] hands it on.
    hold: Option<Hold>,
}

impl Reading<'_> {
    /// Ends the reading: the report (errors naming objects only for an administrator), after
    /// evicting what the cache holds past its bound.
    pub async fn finish(self, pool: &PgPool, admin: bool) -> LakeRead {
        self.finish_held(pool, admin).await.0
    }

    /// As [`Reading::finish`], and for a reading begun with [`Lake::begin_held`], the hold on
    /// the row groups it used.
    pub async fn finish_held(self, pool: &PgPool, admin: bool) -> (LakeRead, Option<Hold>) {
        if let Err(error) = evict(pool, self.lake.limits.cache_max_rows).await {
            tracing::warn!(%error, "evicting the lake cache failed");
        }
        let mut read = self.read;
        if !read.complete {
            LIMITED.fetch_add(u64::from(read.limit.is_some()), Ordering::Relaxed);
        }
        let listed = self.faults.len().min(ERRORS_LISTED);
        read.more_errors = (self.faults.len() - listed) as u64;
        read.errors = self.faults.into_iter().take(listed).map(|f| if admin { f.detail } else { f.public }).collect();
        (read, self.hold)
    }

    /// Makes sure every day of `days` is loaded for `span`, unless more than the per-request
    /// bound of them is not cached at all (estimated from the cache's days): then nothing is
    /// loaded and the answer says so (counting a wide range of the lake is refused, not done by
    /// halves).
    pub async fn ensure_all(&mut self, pool: &PgPool, settings: &AwsSettings, span: &Span, days: &[LakeDay]) {
        let uncached = match uncached_days(pool, days).await {
            Ok(n) => n,
            Err(error) => {
                self.fault("archived events unreadable (lake cache)".into(), format!("lake cache: {error}"));
                return;
            }
        };
        let max = self.lake.limits.max_days_per_request;
        if uncached > max.saturating_sub(self.loaded.len()) {
            self.limit_reached(format!(
                "max_days_per_request={max}: the range touches {uncached} archived days not loaded yet; narrow since/until or give an account"
            ));
            return;
        }
        for day in days {
            if self.ensure_day(pool, settings, span, day).await == DayRead::Stop {
                return;
            }
        }
    }

    /// A page over `days` in `direction`: days are loaded in batches of 1, 2, 4… until the
    /// page is full. `search(bound)` gives the page of events on the loaded side of `bound`
    /// (newest first: at or after it; oldest first: before it; None: all) and, when the page is
    /// full, it is the answer: the events past the bound cannot come first. A day that cannot
    /// be read ends the page at it (the events beyond are not shown as if none were missing):
    /// then the second value is that edge, where the next page starts.
    pub async fn ensure_page<T, F, Fut>(
        &mut self,
        pool: &PgPool,
        settings: &AwsSettings,
        span: &Span,
        days: &[LakeDay],
        direction: Direction,
        mut search: F,
    ) -> Result<(Vec<T>, Option<DateTime<Utc>>), sqlx::Error>
    where
        F: FnMut(Option<DateTime<Utc>>) -> Fut,
        Fut: std::future::Future<Output = Result<(Vec<T>, bool), sqlx::Error>>,
    {
        let mut ordered: Vec<&LakeDay> = days.iter().collect();
        if direction == Direction::OldestFirst {
            ordered.reverse();
        }
        // The loaded side of a day: newest first, what lies after it; oldest first, before it.
        let edge = |day: &LakeDay| match direction {
            Direction::NewestFirst => span.until.map_or(day.end(), |u| u.min(day.end())),
            Direction::OldestFirst => span.since.map_or(day.start(), |s| s.max(day.start())),
        };
        let (mut index, mut batch) = (0, 1usize);
        loop {
            let (page, full) = search(ordered.get(index).map(|d| edge(d))).await?;
            if full || index == ordered.len() {
                return Ok((page, None));
            }
            for _ in 0..batch {
                let Some(day) = ordered.get(index) else { break };
                if self.ensure_day(pool, settings, span, day).await != DayRead::Read {
                    let gap = edge(day);
                    return Ok((search(Some(gap)).await?.0, Some(gap)));
                }
                index += 1;
            }
            batch *= 2;
        }
    }

    /// Loads what `span` needs of one day.
    async fn ensure_day(&mut self, pool: &PgPool, settings: &AwsSettings, span: &Span, day: &LakeDay) -> DayRead {
        let key = (
            day.account.clone(),
            day.day,
            span.since.map(|t| t.timestamp_micros()),
            span.until.map(|t| t.timestamp_micros()),
        );
        if let Some(done) = self.done.get(&key).or_else(|| self.failed_days.get(&(key.0.clone(), key.1))) {
            return *done;
        }
        let outcome = self.read_day(pool, settings, span, day).await;
        if outcome != DayRead::Read {
            self.failed_days.insert((key.0.clone(), key.1), outcome);
        }
        self.done.insert(key, outcome);
        outcome
    }

    async fn read_day(&mut self, pool: &PgPool, settings: &AwsSettings, span: &Span, day: &LakeDay) -> DayRead {
        if let Some(why) = &day.unreadable {
            self.fault(format!("{}: {why}", day.day), format!("{} (account {}): {why}", day.day, day.account));
            return DayRead::Gap;
        }
        // Days already cached answer whatever bound this request has reached.
        match self.cached_already(pool, span, day).await {
            Ok(true) => return DayRead::Read,
            Ok(false) => {}
            Err(error) => {
                self.fault(unreadable(day), format!("lake cache: {error}"));
                return DayRead::Gap;
            }
        }
        if let Some(bound) = self.bound_reached(day) {
            self.limit_reached(format!(
                "{bound}: archived days from {} back were not read; narrow since/until or give an account, or follow next_cursor",
                day.day
            ));
            return DayRead::Stop;
        }
        let mut outcome = DayRead::Read;
        for object in &day.objects {
            match self.read_object(pool, settings, span, day, object).await {
                DayRead::Read => {}
                DayRead::Gap => outcome = DayRead::Gap,
                DayRead::Stop => return DayRead::Stop,
            }
        }
        outcome
    }

    /// Loads one object of `day`, within the request's time and the lake's concurrent loads.
    async fn read_object(
        &mut self,
        pool: &PgPool,
        settings: &AwsSettings,
        span: &Span,
        day: &LakeDay,
        object: &LakeObject,
    ) -> DayRead {
        let lake = self.lake;
        if self.failed_here.contains(&object.destination) {
            return DayRead::Gap;
        }
        if let Some(why) = lake.failing(&object.destination) {
            self.failed_here.insert(object.destination.clone());
            self.fault(
                unreadable(day),
                format!(
                    "{}: failed less than {}s ago ({why}); not asked again yet",
                    object.destination,
                    FAILING_FOR.as_secs()
                ),
            );
            return DayRead::Gap;
        }
        let left = self.deadline.saturating_duration_since(Instant::now());
        let mut ctx = LoadCtx {
            read: &mut self.read,
            max_bytes: lake.limits.max_bytes_per_request,
            requested: &lake.requested,
            hold: self.hold.as_ref().map(|h| h.id),
            max_rows: lake.limits.cache_max_rows,
        };
        let load = async {
            let _permit = lake.loads.acquire().await.map_err(|e| LakeError::Read(e.to_string()))?;
            load_object(lake, pool, settings, object, span, &mut ctx).await
        };
        let result = tokio::time::timeout(left, load).await;
        match result {
            Ok(Ok(loaded)) => {
                if loaded {
                    self.loaded.insert((day.account.clone(), day.day));
                    self.read.days_loaded = self.loaded.len();
                }
                DayRead::Read
            }
            Ok(Err(LakeError::Limit(bound))) => {
                self.limit_reached(format!(
                    "{bound}: archived days from {} back were not all read; narrow since/until or give an account, or follow next_cursor",
                    day.day
                ));
                DayRead::Stop
            }
            Ok(Err(LakeError::Unreachable(why))) => {
                lake.mark_failing(&object.destination, &why);
                self.failed_here.insert(object.destination.clone());
                self.fault(
                    unreadable(day),
                    format!(
                        "{}: {why}; its other objects are skipped for {}s",
                        object_name(object),
                        FAILING_FOR.as_secs()
                    ),
                );
                DayRead::Gap
            }
            Ok(Err(error)) => {
                self.fault(unreadable(day), format!("{}: {error}", object_name(object)));
                DayRead::Gap
            }
            Err(_) => {
                let timeout = lake.limits.read_timeout.as_secs();
                self.fault(
                    format!("{}: the lake read took longer than read_timeout={timeout}s", day.day),
                    format!("{}: the lake read took longer than read_timeout={timeout}s", object_name(object)),
                );
                DayRead::Stop
            }
        }
    }

    /// Whether everything `span` needs of `day` is cached, marking it used in the same
    /// statement (so eviction, which spares what was used lately, leaves it). Only objects
    /// whose footer some server read (their groups' statistics are stored) can be; the others
    /// are read.
    async fn cached_already(&mut self, pool: &PgPool, span: &Span, day: &LakeDay) -> Result<bool, sqlx::Error> {
        let keys: Vec<String> = day.objects.iter().map(|o| o.key.clone()).collect();
        let known = known_groups(pool, &keys).await?;
        let (mut objects, mut groups) = (Vec::new(), Vec::new());
        for key in keys {
            let Some(stats) = known.get(&key) else { return Ok(false) };
            for (group, _) in stats.iter().filter(|(_, stat)| stat.overlaps(span)) {
                objects.push(key.clone());
                groups.push(*group);
            }
        }
        let hold = self.hold.as_ref().map(|h| h.id);
        Ok(touch(pool, &objects, &groups, hold).await?.len() == objects.len())
    }

    /// The bound loading `day` would pass, if any: days, bytes or time (the cache's rows are
    /// checked before each row group).
    fn bound_reached(&self, day: &LakeDay) -> Option<String> {
        let limits = &self.lake.limits;
        if self.read.days_loaded >= limits.max_days_per_request
            && !self.loaded.contains(&(day.account.clone(), day.day))
        {
            return Some(format!("max_days_per_request={}", limits.max_days_per_request));
        }
        if self.read.bytes_read >= limits.max_bytes_per_request {
            return Some(format!("max_bytes_per_request={}", limits.max_bytes_per_request));
        }
        if Instant::now() >= self.deadline {
            return Some(format!("read_timeout={}s", limits.read_timeout.as_secs()));
        }
        None
    }

    fn fault(&mut self, public: String, detail: String) {
        tracing::warn!(error = %detail, "reading the lake failed");
        READ_ERRORS.fetch_add(1, Ordering::Relaxed);
        self.read.complete = false;
        self.faults.push(Fault { public, detail });
    }

    fn limit_reached(&mut self, limit: String) {
        tracing::info!(%limit, "a lake read stopped at its bound");
        self.read.complete = false;
        self.read.limit.get_or_insert(limit);
    }
}

/// What a caller who is not an administrator reads of a failure: no bucket, prefix or path.
fn unreadable(day: &LakeDay) -> String {
    format!("{}: archived object unreadable", day.day)
}

fn object_name(object: &LakeObject) -> String {
    format!("{}/{}", object.destination.trim_end_matches('/'), object.key)
}

/// Marks the row groups (`objects[i]`, `groups[i]`) used now, puts them in `hold` (an
/// export's) and returns those the cache holds: one statement, so what it says is cached is
/// also marked and held, and eviction (which re-checks the mark) leaves it.
async fn touch<'e>(
    db: impl sqlx::PgExecutor<'e>,
    objects: &[String],
    groups: &[i32],
    hold: Option<i64>,
) -> Result<Vec<(String, i32)>, sqlx::Error> {
    if objects.is_empty() {
        return Ok(Vec::new());
    }
    let rows = sqlx::query!(
        r#"WITH used AS (
               UPDATE lake_loaded_groups g SET used_at = now()
               FROM unnest($1::text[], $2::int[]) AS w(lake_object, row_group)
               WHERE g.lake_object = w.lake_object AND g.row_group = w.row_group
               RETURNING g.lake_object, g.row_group),
           held AS (
               INSERT INTO lake_group_holds (hold_id, lake_object, row_group, until)
               SELECT $3::bigint, lake_object, row_group, now() + $4::text::interval FROM used
               WHERE $3::bigint IS NOT NULL
               ON CONFLICT (hold_id, lake_object, row_group) DO UPDATE SET until = excluded.until)
           SELECT lake_object AS "lake_object!", row_group AS "row_group!" FROM used"#,
        objects,
        groups,
        hold,
        HOLD_FOR
    )
    .fetch_all(db)
    .await?;
    Ok(rows.into_iter().map(|r| (r.lake_object, r.row_group)).collect())
}

/// Makes room for `rows` more rows in the cache: evicts what it may when they would pass
/// `max_rows`, and refuses (a bound reached) when the cache is still too full.
async fn reserve(pool: &PgPool, max_rows: i64, rows: i64) -> Result<(), LakeError> {
    if cached_rows(pool).await?.saturating_add(rows) <= max_rows {
        return Ok(());
    }
    evict(pool, max_rows.saturating_sub(rows)).await?;
    if cached_rows(pool).await?.saturating_add(rows) <= max_rows {
        return Ok(());
    }
    Err(LakeError::Limit(format!(
        "cache_max_rows={max_rows}: the lake cache is full of row groups in use; try again in a minute"
    )))
}

/// The stored row group statistics of `keys`, by object (objects never read have none).
async fn known_groups(pool: &PgPool, keys: &[String]) -> Result<HashMap<String, Vec<(i32, GroupStat)>>, sqlx::Error> {
    let rows = sqlx::query!(
        "SELECT lake_object, row_group, rows, min_ms, max_ms FROM lake_object_groups WHERE lake_object = ANY($1)",
        keys
    )
    .fetch_all(pool)
    .await?;
    let mut known: HashMap<String, Vec<(i32, GroupStat)>> = HashMap::new();
    for r in rows {
        let stat = GroupStat { rows: r.rows, min_ms: r.min_ms, max_ms: r.max_ms, start: 0, end: 0 };
        known.entry(r.lake_object).or_default().push((r.row_group, stat));
    }
    Ok(known)
}

/// Stores the row groups' statistics of a footer just read (any server then knows what a
/// range needs of the object).
async fn store_groups(pool: &PgPool, key: &str, footer: &Footer) -> Result<(), sqlx::Error> {
    let numbers: Vec<i32> = (0..footer.groups.len()).map(group_number).collect();
    let rows: Vec<i64> = footer.groups.iter().map(|g| g.rows).collect();
    let mins: Vec<Option<i64>> = footer.groups.iter().map(|g| g.min_ms).collect();
    let maxes: Vec<Option<i64>> = footer.groups.iter().map(|g| g.max_ms).collect();
    sqlx::query!(
        "INSERT INTO lake_object_groups (lake_object, row_group, rows, min_ms, max_ms)
         SELECT $1, * FROM unnest($2::int[], $3::bigint[], $4::bigint[], $5::bigint[])
         ON CONFLICT (lake_object, row_group) DO NOTHING",
        key,
        &numbers,
        &rows,
        &mins as &[Option<i64>],
        &maxes as &[Option<i64>]
    )
    .execute(pool)
    .await?;
    Ok(())
}

async fn cached_rows(pool: &PgPool) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar!(r#"SELECT coalesce(sum(rows_loaded), 0)::bigint AS "rows!" FROM lake_loaded_groups"#)
        .fetch_one(pool)
        .await
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
    let (first_day, last_day) = day_range(span);
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

/// The first and last day `span` touches (`until` is exclusive: at midnight it does not touch
/// that day).
fn day_range(span: &Span) -> (Option<NaiveDate>, Option<NaiveDate>) {
    let first_day = span.since.map(|s| s.date_naive());
    let last_day = span.until.map(|u| (u - chrono::Duration::microseconds(1)).date_naive());
    (first_day, last_day)
}

/// The days of `span` in months of `cloudtrail_events` an archive run has detached and not
/// dropped yet (or is detaching): their rows are neither in the table nor readable in the lake.
async fn months_being_archived(pool: &PgPool, span: &Span) -> Result<Vec<LakeDay>, sqlx::Error> {
    let months = sqlx::query_scalar!(
        r#"SELECT DISTINCT month_start FROM archive_partitions
           WHERE source = $1 AND state <> 'dropped'
             AND ($2::timestamptz IS NULL OR month_start + interval '1 month' > $2)
             AND ($3::timestamptz IS NULL OR month_start < $3)"#,
        Source::CloudTrail.table(),
        span.since,
        span.until,
    )
    .fetch_all(pool)
    .await?;
    let (first_day, last_day) = day_range(span);
    let mut days = Vec::new();
    for month in months {
        let link = store::partition_link(pool, Source::CloudTrail, month).await?;
        if !matches!(link, PartitionLink::Detached | PartitionLink::DetachPending) {
            continue;
        }
        let why = format!("the month {} is being archived; try again when the archive run ends", month.format("%Y-%m"));
        let mut day = month.date_naive();
        while day < store::next_month(month).date_naive() {
            if first_day.is_none_or(|d| day >= d) && last_day.is_none_or(|d| day <= d) {
                let account = span.account.clone().unwrap_or_default();
                days.push(LakeDay { account, day, objects: Vec::new(), unreadable: Some(why.clone()) });
            }
            day = day.succ_opt().unwrap_or(NaiveDate::MAX);
        }
    }
    Ok(days)
}

/// `accountId` (None for a digest) and `eventDay` of an object key.
fn path_keys(key: &str) -> Option<(Option<String>, NaiveDate)> {
    let segment = |name: &str| key.split('/').find_map(|s| s.strip_prefix(name));
    let account = segment("accountId=")?;
    let day = NaiveDate::parse_from_str(segment("eventDay=")?, "%Y%m%d").ok()?;
    let account = (!account.starts_with("invalid-")).then(|| account.to_owned());
    Some((account, day))
}

/// Readable days of `days` the cache holds nothing of (by the days of the groups it holds).
async fn uncached_days(pool: &PgPool, days: &[LakeDay]) -> Result<usize, sqlx::Error> {
    let readable: Vec<&LakeDay> = days.iter().filter(|d| d.unreadable.is_none()).collect();
    let accounts: Vec<String> = readable.iter().map(|d| d.account.clone()).collect();
    let dates: Vec<NaiveDate> = readable.iter().map(|d| d.day).collect();
    let cached = sqlx::query_scalar!(
        r#"SELECT count(*) AS "n!" FROM unnest($1::text[], $2::date[]) AS d(account_id, event_day)
           WHERE EXISTS (SELECT FROM lake_loaded_groups g
                         WHERE g.account_id = d.account_id AND g.event_day = d.event_day)"#,
        &accounts,
        &dates
    )
    .fetch_one(pool)
    .await?;
    Ok(readable.len().saturating_sub(usize::try_from(cached).unwrap_or(0)))
}

/// Loads the row groups of `object` that `span` needs and the cache lacks: whether it loaded
/// any. One load of an object at a time in this process; no connection is held while the lake
/// is read.
async fn load_object(
    lake: &Lake,
    pool: &PgPool,
    settings: &AwsSettings,
    object: &LakeObject,
    span: &Span,
    ctx: &mut LoadCtx<'_>,
) -> Result<bool, LakeError> {
    let destination = lake.destination(&object.destination, settings).await?;
    let flight = lake.flight(&object.key);
    let _flight = flight.lock().await;
    // A footer just read comes with the bytes read from the object's end (a small object's groups).
    let (footer, tail) = match lake.cached_footer(&object.key) {
        Some(footer) => (footer, None),
        None => {
            let (footer, tail) = read_footer(&destination, &object.key, ctx).await?;
            let footer = Arc::new(footer);
            store_groups(pool, &object.key, &footer).await?;
            lake.keep_footer(&object.key, footer.clone());
            (footer, Some(tail))
        }
    };
    let wanted = footer.wanted(span);
    let skipped = (footer.groups.len() - wanted.len()) as u64;
    ctx.read.row_groups_skipped += skipped;
    GROUPS_SKIPPED.fetch_add(skipped, Ordering::Relaxed);
    let keys = vec![object.key.clone(); wanted.len()];
    let cached: HashSet<i32> = touch(pool, &keys, &wanted, ctx.hold).await?.into_iter().map(|(_, g)| g).collect();
    let missing: Vec<usize> =
        wanted.iter().filter(|g| !cached.contains(g)).filter_map(|g| usize::try_from(*g).ok()).collect();
    for group in &missing {
        let bytes = footer.groups[*group].end - footer.groups[*group].start;
        if bytes > MAX_GROUP_BYTES {
            return Err(LakeError::Read(format!(
                "row group {group} is {bytes} bytes, more than the {MAX_GROUP_BYTES} one load may hold; rewrite the object with smaller row groups"
            )));
        }
    }
    let tail_start = tail.as_ref().map_or(footer.meta_start, |(start, _)| *start);
    let mut loaded = false;
    for (range, groups) in fetch_spans(&footer, tail_start, &missing) {
        let mut chunks = vec![(footer.meta_start, footer.meta.clone())];
        chunks.extend(tail.clone());
        if let Some((start, end)) = range {
            chunks.push((start, read_range(&destination, &object.key, start, end - start, ctx).await?));
        }
        let sparse = Sparse { len: footer.len, chunks };
        for group in groups {
            reserve(pool, ctx.max_rows, footer.groups[group].rows).await?;
            loaded |= load_group(pool, object, &footer, &sparse, group, ctx).await?;
        }
    }
    Ok(loaded)
}

/// Decodes one row group and inserts it, a batch of rows at a time, in one transaction under
/// an advisory lock on the object (a process that loaded it meanwhile wins; this one skips it).
async fn load_group(
    pool: &PgPool,
    object: &LakeObject,
    footer: &Footer,
    sparse: &Sparse,
    group: usize,
    ctx: &mut LoadCtx<'_>,
) -> Result<bool, LakeError> {
    let number = group_number(group);
    let mut tx = crate::db::begin(pool).await?;
    sqlx::query!("SELECT pg_advisory_xact_lock(hashtextextended('skywarden lake ' || $1, 0))", object.key)
        .execute(&mut *tx)
        .await?;
    if !touch(&mut *tx, std::slice::from_ref(&object.key), &[number], ctx.hold).await?.is_empty() {
        tx.commit().await?;
        return Ok(false);
    }
    let stat = &footer.groups[group];
    let (sender, mut batches) = tokio::sync::mpsc::channel(2);
    let (source, key, expected) = (sparse.clone(), object.key.clone(), stat.rows);
    // Decoding and GZIP are CPU work: off the async threads, handing over a batch at a time.
    let decoder = tokio::task::spawn_blocking(move || decode_group(source, &key, group, expected, &sender));
    let mut count = 0u64;
    while let Some(batch) = batches.recv().await {
        let batch = batch?;
        count += batch.len() as u64;
        insert_rows(&mut tx, batch).await?;
    }
    decoder.await.map_err(|e| LakeError::Read(format!("decoding: {e}")))?;
    sqlx::query!(
        "INSERT INTO lake_loaded_groups (lake_object, row_group, account_id, event_day, rows_loaded, bytes_read)
         VALUES ($1, $2, $3, $4, $5, $6)",
        object.key,
        number,
        object.account.clone().unwrap_or_default(),
        object.day,
        i64::try_from(count).unwrap_or(i64::MAX),
        i64::try_from(stat.end - stat.start).unwrap_or(i64::MAX),
    )
    .execute(&mut *tx)
    .await?;
    if let Some(hold) = ctx.hold {
        sqlx::query!(
            "INSERT INTO lake_group_holds (hold_id, lake_object, row_group, until)
             VALUES ($1, $2, $3, now() + $4::text::interval) ON CONFLICT DO NOTHING",
            hold,
            object.key,
            number,
            HOLD_FOR
        )
        .execute(&mut *tx)
        .await?;
    }
    tx.commit().await?;
    ctx.read.rows_loaded += count;
    ctx.read.row_groups_read += 1;
    ROWS_LOADED.fetch_add(count, Ordering::Relaxed);
    GROUPS_READ.fetch_add(1, Ordering::Relaxed);
    Ok(true)
}

/// Inserts records into the cache. `raw` is the event's text, cast in SQL: a JSON number such
/// as 2.50 or 12345678901234567890 stays as the hot table stored it. What `q` matches
/// (`search_text`, migration 0046) is computed here from that same `jsonb`, by the function the
/// hot events' index holds, so a cached event matches exactly as it did before archiving.
async fn insert_rows(tx: &mut sqlx::PgConnection, rows: Vec<Json>) -> Result<(), sqlx::Error> {
    sqlx::query!(
        "INSERT INTO lake_events
         SELECT * FROM jsonb_populate_recordset(NULL::lake_events,
             (SELECT jsonb_agg(e || jsonb_build_object('raw', r.raw, 'search_text', skywarden_event_search_text(r.raw)))
              -- OFFSET 0: the event's text is cast once, not once per use.
              FROM jsonb_array_elements($1) e CROSS JOIN LATERAL (SELECT (e->>'raw')::jsonb AS raw OFFSET 0) r))",
        Json::Array(rows)
    )
    .execute(tx)
    .await?;
    Ok(())
}

/// The object's footer, read from the last `FOOTER_GUESS` bytes (more when the metadata is
/// longer), and those bytes with where they start.
async fn read_footer(
    destination: &Destination,
    key: &str,
    ctx: &mut LoadCtx<'_>,
) -> Result<(Footer, (u64, Bytes)), LakeError> {
    ctx.read.objects_read += 1;
    OBJECTS_READ.fetch_add(1, Ordering::Relaxed);
    let len = object_len(destination, key).await?;
    if len < 12 {
        return Err(LakeError::Read(format!("{len} bytes: not a Parquet file")));
    }
    let mut tail_start = len.saturating_sub(FOOTER_GUESS);
    let mut tail = read_range(destination, key, tail_start, len - tail_start, ctx).await?;
    let footer_len = u64::from(u32::from_le_bytes(tail[tail.len() - 8..tail.len() - 4].try_into().unwrap_or([0; 4])));
    if &tail[tail.len() - 4..] != b"PAR1" || footer_len + 8 > len {
        return Err(LakeError::Read("not a Parquet file (no footer)".into()));
    }
    if footer_len + 8 > len - tail_start {
        tail_start = len - footer_len - 8;
        tail = read_range(destination, key, tail_start, footer_len + 8, ctx).await?;
    }
    // Its own copy: the footer is kept, the rest of the tail is not.
    let meta_start = len - footer_len - 8;
    let meta = Bytes::copy_from_slice(&tail[usize::try_from(meta_start - tail_start).unwrap_or(0)..]);
    let sparse = Sparse { len, chunks: vec![(meta_start, meta.clone())] };
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
    Ok((Footer { len, meta_start, meta, groups }, (tail_start, tail)))
}

/// A byte range to fetch (None: the groups are in the footer's tail) and the row groups in it.
type FetchSpan = (Option<(u64, u64)>, Vec<usize>);

/// The byte ranges to fetch for the row groups `wanted`, each with its groups: none for groups
/// inside the bytes at hand from `tail_start` (a small object is read whole with its footer),
/// and neighbours less than `MERGE_GAP` apart merged up to `MERGE_MAX`, so an object costs one
/// GET for its groups, not one per group.
fn fetch_spans(footer: &Footer, tail_start: u64, wanted: &[usize]) -> Vec<FetchSpan> {
    let (mut inside, mut outside): (Vec<usize>, Vec<usize>) =
        wanted.iter().copied().partition(|g| footer.groups[*g].start >= tail_start);
    outside.sort_by_key(|g| footer.groups[*g].start);
    let mut spans: Vec<FetchSpan> = Vec::new();
    for index in outside {
        let group = &footer.groups[index];
        match spans.last_mut() {
            Some((Some(last), groups))
                if group.start <= last.1 + MERGE_GAP && group.end.max(last.1) - last.0 <= MERGE_MAX =>
            {
                last.1 = last.1.max(group.end);
                groups.push(index);
            }
            _ => spans.push((Some((group.start, group.end)), vec![index])),
        }
    }
    if !inside.is_empty() {
        inside.sort_unstable();
        spans.push((None, inside));
    }
    spans
}

type Batch = Result<Vec<Json>, LakeError>;

/// Decodes row group `group` into `lake_events` records, sending them in batches of
/// `INSERT_ROWS`; an error (or a row count other than the footer's) is the last message.
fn decode_group(sparse: Sparse, key: &str, group: usize, expected: i64, out: &tokio::sync::mpsc::Sender<Batch>) {
    let result = (|| {
        let parquet = |e: ParquetError| LakeError::Read(format!("Parquet: {e}"));
        let reader = SerializedFileReader::new(sparse).map_err(parquet)?;
        let rows = reader.get_row_group(group).map_err(parquet)?;
        let (mut batch, mut count, mut bytes) = (Vec::with_capacity(INSERT_ROWS), 0i64, 0usize);
        for (index, row) in rows.get_row_iter(None).map_err(parquet)?.enumerate() {
            let row = row.map_err(parquet)?;
            let record = lake_record(&row, key, group)
                .map_err(|e| LakeError::Read(format!("row group {group} row {index}: {e}")))?;
            bytes += record["raw"].as_str().map_or(0, str::len);
            batch.push(record);
            count += 1;
            if batch.len() == INSERT_ROWS || bytes >= INSERT_BYTES {
                bytes = 0;
                if out.blocking_send(Ok(std::mem::take(&mut batch))).is_err() {
                    return Ok(());
                }
            }
        }
        if count != expected {
            return Err(LakeError::Read(format!("row group {group}: {count} rows read, the footer says {expected}")));
        }
        if !batch.is_empty() {
            let _ = out.blocking_send(Ok(batch));
        }
        Ok(())
    })();
    if let Err(error) = result {
        let _ = out.blocking_send(Err(error));
    }
}

/// An API Activity row as the `cloudtrail_events` row it was archived from (the columns of
/// `lake_events`). Each stored column comes from the leaf the writer put it in (ocsf.rs);
/// where the mapping folds two stored values into one (an empty `api.operation` for a missing
/// name; `src_endpoint.name` `unknown` for a missing address), the raw event decides, as ingest
/// derived the column from it. `raw` is the event's text as archived (cast to jsonb on insert).
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
    // Parsed for the few fields it decides; stored as its text (see `insert_rows`).
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
        "raw": raw_text,
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
            let metadata = tokio::fs::metadata(root.join(key)).await.map_err(|e| folder_error(root, &e))?;
            Ok(metadata.len())
        }
        Destination::S3 { client, bucket, prefix, .. } => {
            let head = match client.head_object().bucket(bucket).key(s3_key(prefix, key)).send().await {
                Ok(head) => head,
                Err(error) => return Err(s3_error(client, bucket, &error).await),
            };
            Ok(head.content_length().and_then(|n| u64::try_from(n).ok()).unwrap_or(0))
        }
    }
}

/// `len` bytes of the object from `start`, counted against the request: refused before the
/// read when it would pass `max_bytes_per_request`.
async fn read_range(
    destination: &Destination,
    key: &str,
    start: u64,
    len: u64,
    ctx: &mut LoadCtx<'_>,
) -> Result<Bytes, LakeError> {
    if len == 0 {
        return Ok(Bytes::new());
    }
    if ctx.read.bytes_read.saturating_add(len) > ctx.max_bytes {
        return Err(LakeError::Limit(format!("max_bytes_per_request={}", ctx.max_bytes)));
    }
    ctx.requested.fetch_add(len, Ordering::Relaxed);
    let bytes = match destination {
        Destination::Folder(root) => {
            use tokio::io::{AsyncReadExt, AsyncSeekExt};
            let io = |e: std::io::Error| folder_error(root, &e);
            let mut file = tokio::fs::File::open(root.join(key)).await.map_err(io)?;
            file.seek(std::io::SeekFrom::Start(start)).await.map_err(io)?;
            let mut buffer = vec![0; usize::try_from(len).map_err(|_| LakeError::Read("range too large".into()))?];
            file.read_exact(&mut buffer).await.map_err(io)?;
            Bytes::from(buffer)
        }
        Destination::S3 { client, bucket, prefix, .. } => {
            let range = format!("bytes={start}-{}", start + len - 1);
            let object = match client.get_object().bucket(bucket).key(s3_key(prefix, key)).range(range).send().await {
                Ok(object) => object,
                Err(error) => return Err(s3_error(client, bucket, &error).await),
            };
            let body = object.body.collect().await.map_err(|e| LakeError::Unreachable(e.to_string()))?.into_bytes();
            if body.len() as u64 != len {
                return Err(LakeError::Read(format!("asked for {len} bytes at {start}, got {}", body.len())));
            }
            body
        }
    };
    ctx.read.bytes_read += len;
    BYTES_READ.fetch_add(len, Ordering::Relaxed);
    Ok(bytes)
}

/// A file missing is the object's failure; a folder gone is the destination's.
fn folder_error(root: &std::path::Path, error: &std::io::Error) -> LakeError {
    if root.is_dir() {
        LakeError::Read(error.to_string())
    } else {
        LakeError::Unreachable(format!("the lake folder is missing: {error}"))
    }
}

/// A missing key is the object's failure; anything else (no bucket, access denied to it, the
/// endpoint unreachable, a server error) is the destination's. A missing key answers 404, or
/// 403 without s3:ListBucket, and a HEAD's 404 has no body to tell a missing bucket: for
/// those the bucket itself is asked.
async fn s3_error<E: std::error::Error + 'static>(
    client: &aws_sdk_s3::Client,
    bucket: &str,
    error: &aws_sdk_s3::error::SdkError<E, aws_sdk_s3::config::http::HttpResponse>,
) -> LakeError {
    let message = chain(error);
    let status = error.raw_response().map(|r| r.status().as_u16());
    if !matches!(status, Some(403 | 404)) || message.contains("NoSuchBucket") {
        return LakeError::Unreachable(message);
    }
    match client.head_bucket().bucket(bucket).send().await {
        Ok(_) => LakeError::Read(message),
        Err(bucket_error) => LakeError::Unreachable(format!("{message}; the bucket: {}", chain(&bucket_error))),
    }
}

fn s3_key(prefix: &str, key: &str) -> String {
    if prefix.is_empty() { key.to_owned() } else { format!("{prefix}/{key}") }
}

/// The parts of an object read so far (the footer, the row groups wanted), as the Parquet
/// reader's source: asking for a byte not fetched is an error, never a silent zero.
#[derive(Clone)]
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
/// one used in the last `EVICT_AFTER_SECS` (a request may be reading it) nor one a live hold
/// keeps (an export reads it). Times are the database's. The DELETE checks the mark again: a
/// group a request marked (or held, which marks it) after the candidates were chosen stays.
async fn evict(pool: &PgPool, max_rows: i64) -> Result<u64, sqlx::Error> {
    let total = cached_rows(pool).await?;
    if total <= max_rows {
        return Ok(0);
    }
    let evicted = sqlx::query_scalar!(
        r#"WITH candidates AS (
               -- Rows of the groups used before each one: a group goes while they do not yet
               -- bring the cache down to its bound.
               SELECT lake_object, row_group,
                      sum(rows_loaded) OVER (ORDER BY used_at, lake_object, row_group) - rows_loaded AS before
               FROM lake_loaded_groups l
               WHERE used_at < now() - make_interval(secs => $2)
                 AND NOT EXISTS (SELECT FROM lake_group_holds h WHERE h.lake_object = l.lake_object
                                 AND h.row_group = l.row_group AND h.until > now())),
           gone AS (
               DELETE FROM lake_loaded_groups g USING candidates c
               WHERE g.lake_object = c.lake_object AND g.row_group = c.row_group AND c.before < $3::bigint - $1::bigint
                 AND g.used_at < now() - make_interval(secs => $2)
               RETURNING g.lake_object, g.row_group),
           rows AS (
               DELETE FROM lake_events e USING gone
               WHERE e.lake_object = gone.lake_object AND e.lake_row_group = gone.row_group)
           SELECT count(*) AS "groups!" FROM gone"#,
        max_rows,
        EVICT_AFTER_SECS,
        total,
    )
    .fetch_one(pool)
    .await?;
    let evicted = u64::try_from(evicted).unwrap_or(0);
    EVICTED.fetch_add(evicted, Ordering::Relaxed);
    // Holds lapsed a day ago are no export's any more (a renewal finds its rows meanwhile).
    sqlx::query!("DELETE FROM lake_group_holds WHERE until < now() - interval '1 day'").execute(pool).await?;
    tracing::info!(evicted, total, max_rows, "lake cache evicted its least recently used row groups");
    Ok(evicted)
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
            meta_start: far + 200,
            meta: Bytes::new(),
            groups: vec![group(4, 50), group(50, 90), group(far, far + 100), group(far + 100, far + 200)],
        };
        let tail = far + 100;
        assert_eq!(
            fetch_spans(&footer, tail, &[0, 1, 2, 3]),
            [(Some((4, 90)), vec![0, 1]), (Some((far, far + 100)), vec![2]), (None, vec![3])],
            "the last is in the tail"
        );
        assert_eq!(fetch_spans(&footer, tail, &[1]), [(Some((50, 90)), vec![1])]);
        assert_eq!(fetch_spans(&footer, tail, &[3]), [(None, vec![3])]);
        assert_eq!(
            fetch_spans(&footer, footer.meta_start, &[3]),
            [(Some((far + 100, far + 200)), vec![3])],
            "a cached footer has no tail: fetched"
        );
        let big = |start| group(start, start + MERGE_MAX / 2 + 1);
        let footer = Footer {
            len: far + 300,
            meta_start: far,
            meta: Bytes::new(),
            groups: vec![big(0), big(MERGE_MAX / 2 + 1)],
        };
        assert_eq!(fetch_spans(&footer, far, &[0, 1]).len(), 2, "a merged range stops at MERGE_MAX");
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
