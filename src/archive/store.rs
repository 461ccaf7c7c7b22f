//! What the archive reads from and records in PostgreSQL: the months it may archive, their rows
//! (streamed in file order), the ids the verification compares, and the run and month states.

use chrono::{DateTime, Utc};
use futures_util::stream::{BoxStream, StreamExt};
use sqlx::{PgConnection, PgPool};
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
        self.rows += 1;
        let hash = xxh3_64(format!("{account}/{id}").as_bytes());
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
    let names = sqlx::query_scalar!(
        r#"SELECT c.relname::text AS "name!" FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
           WHERE i.inhparent = to_regclass($1) ORDER BY 1"#,
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
            "SELECT account_id, event_time, event_id, region, event_source, event_name, principal_arn, principal_type,
                    principal_id, user_name, access_key_id, source_ip_text, user_agent, error_code, error_message,
                    geo_country, geo_city, raw, read_only, resource_ids, geo_asn, geo_as_org, source_is_tor,
                    source_is_vpn, source_is_hosting, source_is_aws, geo_latitude, geo_longitude
             FROM cloudtrail_events WHERE event_time >= $1 AND event_time < $2
             ORDER BY account_id, NULLIF(region, ''), event_time, event_id",
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
           FROM flow_records WHERE bucket_time >= $1 AND bucket_time < $2
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

/// Count and checksum of the month's rows in PostgreSQL (on `conn`, so a caller holding a lock
/// counts what it locked).
pub async fn tally(conn: &mut PgConnection, source: Source, month: DateTime<Utc>) -> Result<Tally, sqlx::Error> {
    let end = next_month(month);
    let mut tally = Tally::default();
    let mut ids = match source {
        Source::CloudTrail => sqlx::query_as!(
            Id,
            r#"SELECT account_id AS "account!", event_id AS "id!" FROM cloudtrail_events
               WHERE event_time >= $1 AND event_time < $2"#,
            month,
            end
        )
        .fetch(&mut *conn),
        Source::Flows => sqlx::query_as!(
            Id,
            r#"SELECT account_id AS "account!", encode(record_hash, 'hex') AS "id!" FROM flow_records
               WHERE bucket_time >= $1 AND bucket_time < $2"#,
            month,
            end
        )
        .fetch(&mut *conn),
        Source::Alerts => sqlx::query_as!(
            Id,
            r#"SELECT account_id AS "account!", alert_id::text AS "id!" FROM alerts
               WHERE status IN ('resolved', 'dismissed') AND last_seen >= $1 AND last_seen < $2"#,
            month,
            end
        )
        .fetch(&mut *conn),
    };
    while let Some(id) = ids.next().await {
        let id = id?;
        tally.add(&id.account, &id.id);
    }
    Ok(tally)
}

struct Id {
    account: String,
    id: String,
}

/// A month's archive state, as last recorded.
#[derive(Clone, Debug)]
pub struct MonthState {
    pub generation: i32,
    pub destination: String,
    pub state: String,
    pub objects: Vec<String>,
    pub tally: Tally,
}

pub async fn month_state(
    pool: &PgPool,
    source: Source,
    month: DateTime<Utc>,
) -> Result<Option<MonthState>, sqlx::Error> {
    let row = sqlx::query!(
        "SELECT generation, destination, state, objects, row_count, checksum FROM archive_partitions
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

pub async fn set_verified(
    pool: &PgPool,
    source: Source,
    month: DateTime<Utc>,
    generation: i32,
    tally: Tally,
) -> Result<(), sqlx::Error> {
    sqlx::query!(
        "UPDATE archive_partitions SET state = 'verified', row_count = $4, checksum = $5, error = NULL, updated_at = now()
         WHERE source = $1 AND month_start = $2 AND generation = $3",
        source.table(),
        month,
        generation,
        tally.rows,
        tally.checksum
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

/// Drops the month's partition if it still holds exactly the verified rows, in one transaction
/// with the state change: the parent table is locked while the rows are counted again, so no
/// row can arrive between the count and the drop. False (nothing dropped) when rows changed.
pub async fn drop_if_unchanged(
    pool: &PgPool,
    source: Source,
    month: DateTime<Utc>,
    generation: i32,
    verified: Tally,
) -> Result<bool, sqlx::Error> {
    let mut tx = pool.begin().await?;
    sqlx::query("SET LOCAL lock_timeout = '30s'").execute(&mut *tx).await?;
    // Table names are ours (Source::table and partition_name), never outside input.
    sqlx::query(&format!("LOCK TABLE {} IN ACCESS EXCLUSIVE MODE", source.table())).execute(&mut *tx).await?;
    let now = tally(&mut tx, source, month).await?;
    if now != verified {
        tx.rollback().await?;
        return Ok(false);
    }
    sqlx::query(&format!("DROP TABLE {}", partition_name(source, month))).execute(&mut *tx).await?;
    if source == Source::CloudTrail {
        // The full-text index entries of the month go with it: searches join back to the events.
        crate::search::index::forget_range(&mut tx, month, next_month(month)).await?;
    }
    sqlx::query!(
        "UPDATE archive_partitions SET state = 'dropped', updated_at = now()
         WHERE source = $1 AND month_start = $2 AND generation = $3",
        source.table(),
        month,
        generation
    )
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(true)
}
