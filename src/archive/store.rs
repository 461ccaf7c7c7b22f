//! What the archive reads from and records in PostgreSQL: the months it may archive, their rows
//! (streamed in file order), the ids the verification compares, and the run and month states.

use chrono::{DateTime, Utc};
use futures_util::stream::{BoxStream, StreamExt};
use sqlx::PgPool;
use xxhash_rust::xxh3::xxh3_64;

use super::columns::Value;
use super::ocsf::{AlertRow, CloudTrailRow, FlowRow, hex};

/// What the lake holds, one OCSF class each.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Source {
    CloudTrail,
    Flows,
    Alerts,
}

impl Source {
    pub const ALL: [Source; 3] = [Source::CloudTrail, Source::Flows, Source::Alerts];

    /// The table rows come from (and the `source` of `archive_partitions`).
    pub fn table(self) -> &'static str {
        match self {
            Source::CloudTrail => "cloudtrail_events",
            Source::Flows => "flow_records",
            Source::Alerts => "alerts",
        }
    }

    /// The custom source's name under `ext/` (Security Lake allows at most 20 characters).
    pub fn lake_name(self) -> &'static str {
        match self {
            Source::CloudTrail => "skywarden-api",
            Source::Flows => "skywarden-network",
            Source::Alerts => "skywarden-finding",
        }
    }

    /// Whether its months are partitions, dropped once archived (alerts are only copied:
    /// incidents refer to them).
    pub fn drops(self) -> bool {
        self != Source::Alerts
    }

    /// Its code in `archive_ledger` (0: never dropped, so never in the ledger).
    pub fn ledger_code(self) -> i16 {
        match self {
            Source::CloudTrail => 1,
            Source::Flows => 2,
            Source::Alerts => 0,
        }
    }
}

/// Order-independent checksum over rows' `account/id`: a wrapping sum of xxh3, so the database
/// and the objects can be summed in any order and a duplicate changes it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Tally {
    pub rows: i64,
    pub checksum: i64,
}

impl Tally {
    pub fn add(&mut self, account: &str, id: &str) {
        self.add_hash(xxh3_64(format!("{account}/{id}").as_bytes()));
    }

    /// Adds a row by the hash of its parts (each followed by a NUL, so `ab`+`c` ≠ `a`+`bc`).
    pub fn add_parts(&mut self, parts: &[&str]) {
        let mut hasher = xxhash_rust::xxh3::Xxh3::new();
        for part in parts {
            hasher.update(part.as_bytes());
            hasher.update(&[0]);
        }
        self.add_hash(hasher.digest());
    }

    /// A row's key: account, id and time in microseconds (a key tally compares which rows a
    /// month holds, whatever their content).
    pub fn add_key(&mut self, account: &str, id: &str, time: DateTime<Utc>) {
        self.add_parts(&[account, id, &time.timestamp_micros().to_string()]);
    }

    fn add_hash(&mut self, hash: u64) {
        self.rows += 1;
        self.checksum = self.checksum.wrapping_add(i64::from_ne_bytes(hash.to_ne_bytes()));
    }

    pub fn merge(&mut self, other: Tally) {
        self.rows += other.rows;
        self.checksum = self.checksum.wrapping_add(other.checksum);
    }
}

/// A row ready for a file: the file it goes to, its id, and its OCSF values.
pub struct LakeRow {
    pub region: Option<String>,
    pub account: String,
    pub time: DateTime<Utc>,
    pub id: String,
    pub values: Vec<Value>,
}

/// The months of `source` stored in PostgreSQL that end at or before `cutoff`, oldest first.
pub async fn months(pool: &PgPool, source: Source, cutoff: DateTime<Utc>) -> Result<Vec<DateTime<Utc>>, sqlx::Error> {
    if source == Source::Alerts {
        return sqlx::query_scalar!(
            r#"SELECT DISTINCT date_trunc('month', last_seen, 'UTC') AS "month!" FROM alerts
               WHERE status IN ('resolved', 'dismissed') AND date_trunc('month', last_seen, 'UTC') + interval '1 month' <= $1
               ORDER BY 1"#,
            cutoff
        )
        .fetch_all(pool)
        .await;
    }
    // Partitions, and month tables a killed run left detached (not yet dropped): the schema
    // the parent lives in, tables named as partitions are.
    let names = sqlx::query_scalar!(
        r#"SELECT c.relname::text AS "name!" FROM pg_class c
           WHERE c.relkind = 'r' AND c.relnamespace = (SELECT relnamespace FROM pg_class WHERE oid = to_regclass($1))
             AND starts_with(c.relname::text, $1 || '_p')
           ORDER BY 1"#,
        source.table()
    )
    .fetch_all(pool)
    .await?;
    Ok(names
        .iter()
        .filter_map(|name| partition_month(source, name))
        .filter(|month| next_month(*month) <= cutoff)
        .collect())
}

/// `cloudtrail_events_p202401` → 2024-01-01; another name (not ours) → None.
pub fn partition_month(source: Source, name: &str) -> Option<DateTime<Utc>> {
    let digits = name.strip_prefix(source.table())?.strip_prefix("_p")?;
    if digits.len() != 6 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let (year, month) = (digits[..4].parse().ok()?, digits[4..].parse().ok()?);
    chrono::TimeZone::with_ymd_and_hms(&Utc, year, month, 1, 0, 0, 0).single()
}

pub fn partition_name(source: Source, month: DateTime<Utc>) -> String {
    format!("{}_p{}", source.table(), month.format("%Y%m"))
}

pub fn next_month(month: DateTime<Utc>) -> DateTime<Utc> {
    month.checked_add_months(chrono::Months::new(1)).unwrap_or(month)
}

/// The month's rows in file order (account, region, time), streamed.
pub fn rows<'a>(pool: &'a PgPool, source: Source, month: DateTime<Utc>) -> BoxStream<'a, Result<LakeRow, sqlx::Error>> {
    let end = next_month(month);
    match source {
        Source::CloudTrail => sqlx::query_as!(
            CloudTrailRow,
            r#"SELECT account_id, event_time, event_id, region, event_source, event_name, principal_arn, principal_type,
                    principal_id, user_name, access_key_id, source_ip_text, user_agent, error_code, error_message,
                    geo_country, geo_city, raw::text AS "raw!", read_only, resource_ids, geo_asn, geo_as_org, source_is_tor,
                    source_is_vpn, source_is_hosting, source_is_aws, geo_latitude, geo_longitude, event_type, ingested_at
             FROM cloudtrail_events e WHERE event_time >= $1 AND event_time < $2
               AND NOT EXISTS (SELECT FROM archive_ledger l WHERE l.source = 1 AND l.month_start = $1
                                 AND l.key = skywarden_archive_key(e.account_id, e.event_id, e.event_time))
             ORDER BY account_id, NULLIF(region, ''), event_time, event_id"#,
            month,
            end
        )
        .fetch(pool)
        .map(|row| {
            row.map(|r| LakeRow {
                region: r.region.clone(),
                account: r.account_id.clone(),
                time: r.event_time,
                id: r.event_id.clone(),
                values: r.values(),
            })
        })
        .boxed(),
        Source::Flows => flow_rows(pool, month, end),
        Source::Alerts => alert_rows(pool, month, end),
    }
}

fn flow_rows<'a>(
    pool: &'a PgPool,
    month: DateTime<Utc>,
    end: DateTime<Utc>,
) -> BoxStream<'a, Result<LakeRow, sqlx::Error>> {
    sqlx::query_as!(
        FlowRow,
        r#"SELECT account_id, bucket_time, record_hash, version, interface_id, host(srcaddr) AS srcaddr,
                  host(dstaddr) AS dstaddr, srcport, dstport, protocol, packets, bytes, start_time, end_time, action,
                  log_status, vpc_id, subnet_id, instance_id, tcp_flags, traffic_type, host(pkt_srcaddr) AS pkt_srcaddr,
                  host(pkt_dstaddr) AS pkt_dstaddr, region, az_id, flow_direction, traffic_path, pkt_src_aws_service,
                  pkt_dst_aws_service, src_country, dst_country, extra
           FROM flow_records f WHERE bucket_time >= $1 AND bucket_time < $2
             AND NOT EXISTS (SELECT FROM archive_ledger l WHERE l.source = 2 AND l.month_start = $1
                               AND l.key = skywarden_archive_key(f.account_id, encode(f.record_hash, 'hex'), f.bucket_time))
           ORDER BY account_id, NULLIF(region, ''), bucket_time, record_hash"#,
        month,
        end
    )
    .fetch(pool)
    .map(|row| {
        row.map(|r| LakeRow {
            region: r.region.clone(),
            account: r.account_id.clone(),
            time: r.bucket_time,
            id: hex(&r.record_hash),
            values: r.values(),
        })
    })
    .boxed()
}

fn alert_rows<'a>(
    pool: &'a PgPool,
    month: DateTime<Utc>,
    end: DateTime<Utc>,
) -> BoxStream<'a, Result<LakeRow, sqlx::Error>> {
    sqlx::query_as!(
        AlertRow,
        r#"SELECT account_id, alert_id::text AS "alert_id!", policy_id, dedup_key, title, severity::text AS "severity!",
                  status::text AS "status!", principal, host(source_ip) AS source_ip, country, resources, first_seen,
                  last_seen, event_count, evidence, mitre, details, created_at, updated_at
           FROM alerts WHERE status IN ('resolved', 'dismissed') AND last_seen >= $1 AND last_seen < $2
           ORDER BY account_id, last_seen, alert_id"#,
        month,
        end
    )
    .fetch(pool)
    .map(|row| {
        row.map(|r| LakeRow {
            region: None,
            account: r.account_id.clone(),
            time: r.last_seen,
            id: r.alert_id.clone(),
            values: r.values(),
        })
    })
    .boxed()
}

/// Rows of the month in PostgreSQL (what a dry run reports).
pub async fn count(pool: &PgPool, source: Source, month: DateTime<Utc>) -> Result<i64, sqlx::Error> {
    let end = next_month(month);
    match source {
        Source::CloudTrail => {
            sqlx::query_scalar!(
                r#"SELECT count(*) AS "n!" FROM cloudtrail_events WHERE event_time >= $1 AND event_time < $2"#,
                month,
                end
            )
            .fetch_one(pool)
            .await
        }
        Source::Flows => {
            sqlx::query_scalar!(
                r#"SELECT count(*) AS "n!" FROM flow_records WHERE bucket_time >= $1 AND bucket_time < $2"#,
                month,
                end
            )
            .fetch_one(pool)
            .await
        }
        Source::Alerts => {
            sqlx::query_scalar!(
                r#"SELECT count(*) AS "n!" FROM alerts
                   WHERE status IN ('resolved', 'dismissed') AND last_seen >= $1 AND last_seen < $2"#,
                month,
                end
            )
            .fetch_one(pool)
            .await
        }
    }
}

/// A month's archive state, as last recorded.
#[derive(Clone, Debug)]
pub struct MonthState {
    pub generation: i32,
    pub destination: String,
    pub state: String,
    pub objects: Vec<String>,
    /// Rows and content checksum of the objects, as read back.
    pub tally: Tally,
    /// Rows and key checksum of what was written (see [`Tally::add_key`]).
    pub keys: Tally,
}

pub async fn month_state(
    pool: &PgPool,
    source: Source,
    month: DateTime<Utc>,
) -> Result<Option<MonthState>, sqlx::Error> {
    let row = sqlx::query!(
        "SELECT generation, destination, state, objects, row_count, checksum, key_checksum FROM archive_partitions
         WHERE source = $1 AND month_start = $2 ORDER BY generation DESC LIMIT 1",
        source.table(),
        month
    )
    .fetch_optional(pool)
    .await?;
    Ok(row.map(|r| MonthState {
        generation: r.generation,
        destination: r.destination,
        state: r.state,
        objects: r.objects,
        tally: Tally { rows: r.row_count, checksum: r.checksum },
        keys: Tally { rows: r.row_count, checksum: r.key_checksum },
    }))
}

/// Records the month as being written (a new generation, or the same one resumed).
pub async fn set_writing(
    pool: &PgPool,
    source: Source,
    month: DateTime<Utc>,
    generation: i32,
    destination: &str,
    run_id: i64,
) -> Result<(), sqlx::Error> {
    sqlx::query!(
        "INSERT INTO archive_partitions (source, month_start, generation, destination, state, run_id)
         VALUES ($1, $2, $3, $4, 'writing', $5)
         ON CONFLICT (source, month_start, generation) DO UPDATE
         SET destination = EXCLUDED.destination, state = 'writing', run_id = EXCLUDED.run_id, error = NULL,
             updated_at = now()",
        source.table(),
        month,
        generation,
        destination,
        run_id
    )
    .execute(pool)
    .await?;
    Ok(())
}

/// Records the objects written (before verification, so a resumed run knows them).
pub async fn set_objects(
    pool: &PgPool,
    source: Source,
    month: DateTime<Utc>,
    generation: i32,
    objects: &[String],
) -> Result<(), sqlx::Error> {
    sqlx::query!(
        "UPDATE archive_partitions SET objects = $4, updated_at = now()
         WHERE source = $1 AND month_start = $2 AND generation = $3",
        source.table(),
        month,
        generation,
        objects
    )
    .execute(pool)
    .await?;
    Ok(())
}

/// Adds one object to the month's list as soon as it is written, so a run killed mid-month
/// leaves the next one every name to overwrite or delete.
pub async fn add_object(
    pool: &PgPool,
    source: Source,
    month: DateTime<Utc>,
    generation: i32,
    object: &str,
) -> Result<(), sqlx::Error> {
    sqlx::query!(
        "UPDATE archive_partitions
         SET objects = CASE WHEN $4 = ANY (objects) THEN objects ELSE array_append(objects, $4) END, updated_at = now()
         WHERE source = $1 AND month_start = $2 AND generation = $3",
        source.table(),
        month,
        generation,
        object
    )
    .execute(pool)
    .await?;
    Ok(())
}

pub async fn set_verified(
    pool: &PgPool,
    source: Source,
    month: DateTime<Utc>,
    generation: i32,
    tally: Tally,
    keys: Tally,
) -> Result<(), sqlx::Error> {
    sqlx::query!(
        "UPDATE archive_partitions SET state = 'verified', row_count = $4, checksum = $5, key_checksum = $6,
                error = NULL, updated_at = now()
         WHERE source = $1 AND month_start = $2 AND generation = $3",
        source.table(),
        month,
        generation,
        tally.rows,
        tally.checksum,
        keys.checksum
    )
    .execute(pool)
    .await?;
    Ok(())
}

pub async fn set_error(
    pool: &PgPool,
    source: Source,
    month: DateTime<Utc>,
    generation: i32,
    error: &str,
) -> Result<(), sqlx::Error> {
    sqlx::query!(
        "UPDATE archive_partitions SET error = $4, updated_at = now()
         WHERE source = $1 AND month_start = $2 AND generation = $3",
        source.table(),
        month,
        generation,
        error
    )
    .execute(pool)
    .await?;
    Ok(())
}

/// Where a month's partition stands between the parent table and the drop.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PartitionLink {
    Attached,
    /// `DETACH … CONCURRENTLY` was interrupted (killed, cancelled, timed out): queries no
    /// longer see it, inserts into the month fail until it is finalized.
    DetachPending,
    /// A table of its own: nothing reaches it through the parent any more.
    Detached,
    Absent,
}

pub async fn partition_link(pool: &PgPool, source: Source, month: DateTime<Utc>) -> Result<PartitionLink, sqlx::Error> {
    let row = sqlx::query!(
        r#"SELECT c.relispartition AS "attached!", coalesce(i.inhdetachpending, false) AS "pending!"
           FROM pg_class c LEFT JOIN pg_inherits i ON i.inhrelid = c.oid WHERE c.oid = to_regclass($1)"#,
        partition_name(source, month)
    )
    .fetch_optional(pool)
    .await?;
    Ok(match row {
        None => PartitionLink::Absent,
        Some(r) if r.pending => PartitionLink::DetachPending,
        Some(r) if r.attached => PartitionLink::Attached,
        Some(_) => PartitionLink::Detached,
    })
}

/// One DDL statement alone, outside any transaction block (`DETACH … CONCURRENTLY` and
/// `FINALIZE` refuse one), on a connection of its own so its lock timeout goes with it.
async fn ddl_alone(pool: &PgPool, statement: &str) -> Result<(), sqlx::Error> {
    // Counted by the pool while in use, closed (not returned) afterwards so its lock timeout
    // goes with it.
    let mut conn = pool.acquire().await?;
    conn.close_on_drop();
    // The detach waits for every transaction that may still see the partition; bounded, it
    // fails instead and leaves the detach pending, which the next attempt finalizes.
    sqlx::query("SET lock_timeout = '5min'").execute(&mut *conn).await?;
    sqlx::query(statement).execute(&mut *conn).await.map(|_| ())
}

/// Holds (on `conn`, for its session) the advisory lock `skywarden_ensure_month_partition`
/// takes for the month's partition: from before the detach until the drop or the re-attach has
/// committed, a writer that needs the month waits instead of failing on a partition it cannot
/// see, then creates it anew.
pub async fn lock_month(
    conn: &mut sqlx::PgConnection,
    source: Source,
    month: DateTime<Utc>,
) -> Result<(), sqlx::Error> {
    // The same key as migrations/0001 (and 0039): hashtext of the partition's name.
    sqlx::query("SELECT pg_advisory_lock(hashtext($1))").bind(partition_name(source, month)).execute(conn).await?;
    Ok(())
}

pub async fn unlock_month(
    conn: &mut sqlx::PgConnection,
    source: Source,
    month: DateTime<Utc>,
) -> Result<(), sqlx::Error> {
    sqlx::query("SELECT pg_advisory_unlock(hashtext($1))").bind(partition_name(source, month)).execute(conn).await?;
    Ok(())
}

/// Completes every detach left pending on the parent of `source` (a run killed or timed out
/// mid-detach): PostgreSQL allows one pending detach per parent, so a later month's detach
/// would fail after all its writing. The month is then a table of its own, finished by its
/// own turn (in this run when it is old enough).
pub async fn finalize_pending(pool: &PgPool, source: Source) -> Result<(), sqlx::Error> {
    let pending = sqlx::query_scalar!(
        r#"SELECT c.relname::text AS "name!" FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
           WHERE i.inhparent = to_regclass($1) AND i.inhdetachpending"#,
        source.table()
    )
    .fetch_all(pool)
    .await?;
    for partition in pending {
        tracing::warn!(partition, "finalizing a detach an earlier run left pending");
        ddl_alone(pool, &format!("ALTER TABLE {} DETACH PARTITION {partition} FINALIZE", source.table())).await?;
    }
    Ok(())
}

/// Sessions of this database whose transaction, older than `age`, holds a lock on the parent
/// of `source` (pg_dump, a forgotten `BEGIN`): a detach now would wait for them until its lock
/// timeout and leave the month pending. "pid N since T" each.
pub async fn old_lock_holders(
    pool: &PgPool,
    source: Source,
    age: std::time::Duration,
) -> Result<Vec<String>, sqlx::Error> {
    let age_ms = i64::try_from(age.as_millis()).unwrap_or(i64::MAX);
    sqlx::query_scalar!(
        r#"SELECT DISTINCT format('pid %s since %s', a.pid, a.xact_start) AS "holder!"
           FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid
           WHERE l.locktype = 'relation' AND l.relation = to_regclass($1)
             AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())
             AND l.pid <> pg_backend_pid()
             AND a.xact_start < statement_timestamp() - make_interval(secs => ($2::bigint / 1000.0)::float8)"#,
        source.table(),
        age_ms
    )
    .fetch_all(pool)
    .await
}

/// Takes the month's partition out of its parent without locking the parent against reads
/// or writes (`DETACH PARTITION … CONCURRENTLY`, SHARE UPDATE EXCLUSIVE), or completes a detach
/// a killed run left pending (`FINALIZE`).
pub async fn detach(pool: &PgPool, source: Source, month: DateTime<Utc>) -> Result<PartitionLink, sqlx::Error> {
    // Table names are ours (Source::table and partition_name), never outside input.
    let (parent, partition) = (source.table(), partition_name(source, month));
    match partition_link(pool, source, month).await? {
        PartitionLink::Attached => {
            ddl_alone(pool, &format!("ALTER TABLE {parent} DETACH PARTITION {partition} CONCURRENTLY")).await?;
        }
        PartitionLink::DetachPending => {
            tracing::warn!(partition, "finalizing a detach an earlier run left pending");
            ddl_alone(pool, &format!("ALTER TABLE {parent} DETACH PARTITION {partition} FINALIZE")).await?;
        }
        PartitionLink::Detached | PartitionLink::Absent => {}
    }
    partition_link(pool, source, month).await
}

/// Puts a month taken out by [`detach`] back under its parent (before it is written again:
/// the rows are read through the parent).
pub async fn ensure_attached(pool: &PgPool, source: Source, month: DateTime<Utc>) -> Result<(), sqlx::Error> {
    let link = partition_link(pool, source, month).await?;
    if link == PartitionLink::DetachPending {
        detach(pool, source, month).await?;
    }
    if matches!(link, PartitionLink::DetachPending | PartitionLink::Detached) {
        tracing::warn!(source = source.table(), month = %month.format("%Y-%m"), "attaching a detached month again");
        let mut conn = pool.acquire().await?;
        sqlx::query(&attach_statement(source, month)).execute(&mut *conn).await?;
        index_reattached(&mut conn, source, month).await?;
    }
    Ok(())
}

/// Indexes for full-text search the rows of a month attached again: while it was detached the
/// indexer's watermark moved past them, so neither a later run nor the search's unindexed tail
/// would see them.
async fn index_reattached(
    conn: &mut sqlx::PgConnection,
    source: Source,
    month: DateTime<Utc>,
) -> Result<(), sqlx::Error> {
    if source == Source::CloudTrail {
        let indexed = crate::search::index::index_partition(conn, &partition_name(source, month)).await?;
        tracing::debug!(month = %month.format("%Y-%m"), indexed, "re-attached month indexed for search");
    }
    Ok(())
}

fn attach_statement(source: Source, month: DateTime<Utc>) -> String {
    format!(
        "ALTER TABLE {} ATTACH PARTITION {} FOR VALUES FROM ('{}') TO ('{}')",
        source.table(),
        partition_name(source, month),
        month.to_rfc3339(),
        next_month(month).to_rfc3339()
    )
}

/// The key columns of a source's table and the ledger filter, for SQL on a detached month
/// (a table name the compile-time checked queries cannot take).
fn key_columns(source: Source) -> (&'static str, &'static str, &'static str) {
    match source {
        Source::Flows => ("account_id", "encode(record_hash, 'hex')", "bucket_time"),
        _ => ("account_id", "event_id", "event_time"),
    }
}

/// What the drop found in the detached month.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DropOutcome {
    /// Dropped; this many of its rows were already in the lake (an earlier generation).
    Dropped { already_archived: i64 },
    /// Its rows are not the verified ones: attached again, nothing dropped.
    Changed,
}

/// Drops a detached month if its rows not already archived are exactly the verified ones, in
/// one transaction with the ledger and the state: only the detached table is locked (nothing
/// reaches it through the parent any more), so ingest and search go on. `pause` runs while the
/// lock is held (tests). A month whose rows changed is attached again.
pub async fn drop_detached(
    pool: &PgPool,
    source: Source,
    month: DateTime<Utc>,
    generation: i32,
    verified_keys: Tally,
    pause: futures_util::future::BoxFuture<'static, ()>,
) -> Result<DropOutcome, sqlx::Error> {
    let partition = partition_name(source, month);
    let (account, id, time) = key_columns(source);
    let mut tx = crate::db::begin(pool).await?;
    sqlx::query("SET LOCAL lock_timeout = '30s'").execute(&mut *tx).await?;
    sqlx::query(&format!("LOCK TABLE {partition} IN ACCESS EXCLUSIVE MODE")).execute(&mut *tx).await?;
    pause.await;
    let not_archived = format!(
        "NOT EXISTS (SELECT FROM archive_ledger l WHERE l.source = $1 AND l.month_start = $2
                     AND l.key = skywarden_archive_key({account}, {id}, {time}))"
    );
    let sql = format!("SELECT {account}, {id}, {time} FROM {partition} WHERE {not_archived}");
    let keys = key_tally(&mut tx, &sql, source, month).await?;
    if keys != verified_keys {
        sqlx::query(&attach_statement(source, month)).execute(&mut *tx).await?;
        index_reattached(&mut tx, source, month).await?;
        tx.commit().await?;
        return Ok(DropOutcome::Changed);
    }
    let ledgered = sqlx::query(&format!(
        "INSERT INTO archive_ledger (key, month_start, source)
         SELECT skywarden_archive_key({account}, {id}, {time}), $2, $1 FROM {partition} ON CONFLICT DO NOTHING"
    ))
    .bind(source.ledger_code())
    .bind(month)
    .execute(&mut *tx)
    .await?;
    let total: i64 = sqlx::query_scalar(&format!("SELECT count(*) FROM {partition}")).fetch_one(&mut *tx).await?;
    let already_archived = total - keys.rows;
    tracing::debug!(partition, ledgered = ledgered.rows_affected(), already_archived, "ledger updated");
    if source == Source::CloudTrail {
        // The full-text index entries of the month go with it: searches join back to the events.
        crate::search::index::forget_range(&mut tx, month, next_month(month)).await?;
    }
    sqlx::query!(
        "UPDATE archive_partitions SET state = 'dropped', already_archived = $4, updated_at = now()
         WHERE source = $1 AND month_start = $2 AND generation = $3",
        source.table(),
        month,
        generation,
        already_archived
    )
    .execute(&mut *tx)
    .await?;
    // A table of its own now: dropping it locks nothing else.
    sqlx::query(&format!("DROP TABLE {partition}")).execute(&mut *tx).await?;
    tx.commit().await?;
    Ok(DropOutcome::Dropped { already_archived })
}

/// The key tally of the rows `sql` selects (account, id, time; bound to the ledger code and
/// month), streamed.
async fn key_tally(
    conn: &mut sqlx::PgConnection,
    sql: &str,
    source: Source,
    month: DateTime<Utc>,
) -> Result<Tally, sqlx::Error> {
    let mut keys = Tally::default();
    let mut rows =
        sqlx::query_as::<_, (String, String, DateTime<Utc>)>(sql).bind(source.ledger_code()).bind(month).fetch(conn);
    while let Some(row) = rows.next().await {
        let (account, id, time) = row?;
        keys.add_key(&account, &id, time);
    }
    Ok(keys)
}
