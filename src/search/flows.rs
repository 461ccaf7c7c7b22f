//! The network investigation: who talked to whom by bytes, and bytes by hour and by
//! destination country, over stored flow records with the same filters.

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::PgPool;

/// Which flow records count; every filter is optional.
#[derive(Debug, Default, Clone)]
pub struct FlowFilter {
    pub account: Option<String>,
    pub interface: Option<String>,
    pub instance: Option<String>,
    /// Either end of the flow: an IP address, as text PostgreSQL reads as `inet`.
    pub address: Option<String>,
    pub since: Option<DateTime<Utc>>,
    pub until: Option<DateTime<Utc>>,
}

/// One pair of addresses and what flowed from the first to the second.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Talker {
    pub account_id: String,
    pub source: String,
    pub destination: String,
    pub source_country: Option<String>,
    pub destination_country: Option<String>,
    /// Destination ports of the pair (the ten lowest).
    pub ports: Vec<i32>,
    /// IANA protocol numbers (6 TCP, 17 UDP, 1 ICMP).
    pub protocols: Vec<i16>,
    /// Records the security groups and network ACLs let through, and those they refused.
    pub accepted: i64,
    pub rejected: i64,
    pub bytes: i64,
    pub packets: i64,
    pub records: i64,
    pub first_seen: DateTime<Utc>,
    pub last_seen: DateTime<Utc>,
}

/// The `limit` pairs that sent the most bytes.
pub async fn top_talkers(db: &PgPool, filter: &FlowFilter, limit: i64) -> Result<Vec<Talker>, sqlx::Error> {
    sqlx::query_as!(
        Talker,
        r#"SELECT account_id, host(srcaddr) AS "source!", host(dstaddr) AS "destination!",
                  max(src_country) AS source_country, max(dst_country) AS destination_country,
                  coalesce((array_agg(DISTINCT dstport) FILTER (WHERE dstport IS NOT NULL))[1:10], '{}') AS "ports!",
                  coalesce(array_agg(DISTINCT protocol) FILTER (WHERE protocol IS NOT NULL), '{}') AS "protocols!",
                  count(*) FILTER (WHERE action = 'ACCEPT') AS "accepted!", count(*) FILTER (WHERE action = 'REJECT') AS "rejected!",
                  coalesce(sum(bytes), 0)::bigint AS "bytes!", coalesce(sum(packets), 0)::bigint AS "packets!",
                  count(*) AS "records!", min(bucket_time) AS "first_seen!", max(bucket_time) AS "last_seen!"
           FROM flow_records
           WHERE srcaddr IS NOT NULL AND dstaddr IS NOT NULL
             AND ($1::text IS NULL OR account_id = $1)
             AND ($2::text IS NULL OR interface_id = $2)
             AND ($3::text IS NULL OR instance_id = $3)
             AND ($4::text IS NULL OR srcaddr = $4::text::inet OR dstaddr = $4::text::inet)
             AND ($5::timestamptz IS NULL OR bucket_time >= $5)
             AND ($6::timestamptz IS NULL OR bucket_time < $6)
           GROUP BY account_id, srcaddr, dstaddr
           ORDER BY "bytes!" DESC, 2, 3
           LIMIT $7"#,
        filter.account,
        filter.interface,
        filter.instance,
        filter.address,
        filter.since,
        filter.until,
        limit,
    )
    .fetch_all(db)
    .await
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct HourlyBytes {
    pub hour: DateTime<Utc>,
    pub bytes: i64,
    pub records: i64,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct CountryBytes {
    pub country: Option<String>,
    pub bytes: i64,
}

/// Bytes sent to one destination country in one hour.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct CountryHour {
    pub hour: DateTime<Utc>,
    pub country: Option<String>,
    pub bytes: i64,
}

/// Bytes per hour, newest first (the newest 5000 hours).
pub async fn hourly_bytes(db: &PgPool, filter: &FlowFilter) -> Result<Vec<HourlyBytes>, sqlx::Error> {
    sqlx::query_as!(
        HourlyBytes,
        r#"SELECT date_trunc('hour', bucket_time) AS "hour!", coalesce(sum(bytes), 0)::bigint AS "bytes!",
                  count(*) AS "records!"
           FROM flow_records
           WHERE ($1::text IS NULL OR account_id = $1)
             AND ($2::text IS NULL OR interface_id = $2)
             AND ($3::text IS NULL OR instance_id = $3)
             AND ($4::text IS NULL OR srcaddr = $4::text::inet OR dstaddr = $4::text::inet)
             AND ($5::timestamptz IS NULL OR bucket_time >= $5)
             AND ($6::timestamptz IS NULL OR bucket_time < $6)
           GROUP BY 1 ORDER BY 1 DESC
           LIMIT 5000"#,
        filter.account,
        filter.interface,
        filter.instance,
        filter.address,
        filter.since,
        filter.until,
    )
    .fetch_all(db)
    .await
}

/// Bytes per destination country, most first (the top 50; private and unknown peers under `None`).
pub async fn destination_bytes(db: &PgPool, filter: &FlowFilter) -> Result<Vec<CountryBytes>, sqlx::Error> {
    sqlx::query_as!(
        CountryBytes,
        r#"SELECT dst_country AS country, coalesce(sum(bytes), 0)::bigint AS "bytes!"
           FROM flow_records
           WHERE ($1::text IS NULL OR account_id = $1)
             AND ($2::text IS NULL OR interface_id = $2)
             AND ($3::text IS NULL OR instance_id = $3)
             AND ($4::text IS NULL OR srcaddr = $4::text::inet OR dstaddr = $4::text::inet)
             AND ($5::timestamptz IS NULL OR bucket_time >= $5)
             AND ($6::timestamptz IS NULL OR bucket_time < $6)
           GROUP BY 1 ORDER BY 2 DESC
           LIMIT 50"#,
        filter.account,
        filter.interface,
        filter.instance,
        filter.address,
        filter.since,
        filter.until,
    )
    .fetch_all(db)
    .await
}

/// Bytes per hour and destination country (public peers only), newest hour first (at most 20000 rows).
pub async fn country_hours(db: &PgPool, filter: &FlowFilter) -> Result<Vec<CountryHour>, sqlx::Error> {
    sqlx::query_as!(
        CountryHour,
        r#"SELECT date_trunc('hour', bucket_time) AS "hour!", dst_country AS country,
                  coalesce(sum(bytes), 0)::bigint AS "bytes!"
           FROM flow_records
           WHERE dst_country IS NOT NULL
             AND ($1::text IS NULL OR account_id = $1)
             AND ($2::text IS NULL OR interface_id = $2)
             AND ($3::text IS NULL OR instance_id = $3)
             AND ($4::text IS NULL OR srcaddr = $4::text::inet OR dstaddr = $4::text::inet)
             AND ($5::timestamptz IS NULL OR bucket_time >= $5)
             AND ($6::timestamptz IS NULL OR bucket_time < $6)
           GROUP BY 1, 2 ORDER BY 1 DESC, 2
           LIMIT 20000"#,
        filter.account,
        filter.interface,
        filter.instance,
        filter.address,
        filter.since,
        filter.until,
    )
    .fetch_all(db)
    .await
}

/// One flow record as the network and address pages list it.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct FlowRecordView {
    pub account_id: String,
    pub start_time: Option<DateTime<Utc>>,
    pub interface_id: Option<String>,
    pub source: Option<String>,
    pub source_port: Option<i32>,
    pub source_country: Option<String>,
    pub destination: Option<String>,
    pub destination_port: Option<i32>,
    pub destination_country: Option<String>,
    /// IANA protocol number (6 TCP, 17 UDP, 1 ICMP).
    pub protocol: Option<i16>,
    /// `ACCEPT` or `REJECT`.
    pub action: Option<String>,
    pub bytes: Option<i64>,
    pub packets: Option<i64>,
}

/// The newest `limit` flow records that match, with their ports, protocol and outcome.
pub async fn records(db: &PgPool, filter: &FlowFilter, limit: i64) -> Result<Vec<FlowRecordView>, sqlx::Error> {
    sqlx::query_as!(
        FlowRecordView,
        r#"SELECT account_id, coalesce(start_time, bucket_time) AS start_time, interface_id, host(srcaddr) AS source,
                  srcport AS source_port, src_country AS source_country, host(dstaddr) AS destination,
                  dstport AS destination_port, dst_country AS destination_country, protocol, action, bytes, packets
           FROM flow_records
           WHERE ($1::text IS NULL OR account_id = $1)
             AND ($2::text IS NULL OR interface_id = $2)
             AND ($3::text IS NULL OR instance_id = $3)
             AND ($4::text IS NULL OR srcaddr = $4::text::inet OR dstaddr = $4::text::inet)
             AND ($5::timestamptz IS NULL OR bucket_time >= $5)
             AND ($6::timestamptz IS NULL OR bucket_time < $6)
           ORDER BY bucket_time DESC, record_hash
           LIMIT $7"#,
        filter.account,
        filter.interface,
        filter.instance,
        filter.address,
        filter.since,
        filter.until,
        limit,
    )
    .fetch_all(db)
    .await
}
