//! `skywarden-bench flows`: the per-record lookups of the flow detectors on a large flow table.
//!
//! Fills a scratch database with generated VPC flow records of TCP connections as interfaces
//! log them (the opener's SYN and the answer's SYN-ACK in the first interval, data later, a FIN
//! at the end), over two days, on many instance interfaces and one busy NAT gateway interface
//! that carries half the connections (the interface where a lookup that reads the interface's
//! day would show). Then it times, per record, on the same sample of later-interval records:
//!
//! - `skywarden_flow_opened` (migration 0033), whose handshake lookup those records need;
//! - the port-scan reply check (`port_scan`'s `NOT EXISTS` for a reply of the connection);
//! - the baseline: each record looked up by its primary key.
//!
//! Both lookups are timed again with the handshake index of migration 0041 dropped (inside a
//! transaction that is rolled back), so the index's effect is measured in the same run.

use std::time::{Duration, Instant};

use chrono::{DateTime, TimeZone, Utc};
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{ConnectOptions, Connection, PgConnection};

use skywarden::db::MIGRATOR;

const DATABASE: &str = "skywarden_bench_flows";
/// Records per connection: SYN, SYN-ACK, a data interval each way, the FIN.
const PER_CONNECTION: i64 = 5;
/// Connections inserted per statement.
const CHUNK: i64 = 100_000;

#[derive(Debug, thiserror::Error)]
pub enum FlowBenchError {
    #[error("database error")]
    Db(#[from] sqlx::Error),
    #[error("migration failed")]
    Migrate(#[from] sqlx::migrate::MigrateError),
}

/// Per-record times of one lookup over the sample.
pub struct Timing {
    pub per_record: Duration,
    /// Records of the sample the lookup said yes for (a check that it did its work).
    pub yes: i64,
}

pub struct FlowBenchReport {
    pub records: i64,
    pub busy_interface_records: i64,
    pub sample: i64,
    pub generate_seconds: f64,
    pub baseline: Timing,
    pub opened: Timing,
    pub opened_without_index: Timing,
    pub reply: Timing,
    pub reply_without_index: Timing,
    /// The plan of the handshake lookup for one record of the busy interface (with the index).
    pub opened_plan: String,
    /// The plan of the reply check over the sample.
    pub reply_plan: String,
}

impl std::fmt::Display for FlowBenchReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let us = |d: Duration| d.as_secs_f64() * 1e6;
        let ratio = |t: &Timing| t.per_record.as_secs_f64() / self.baseline.per_record.as_secs_f64().max(1e-12);
        writeln!(f, "flow records:                          {}", self.records)?;
        writeln!(f, "  of them on the busy NAT interface:   {}", self.busy_interface_records)?;
        writeln!(f, "generated in:                          {:.1} s", self.generate_seconds)?;
        writeln!(f, "sample (later-interval records):       {}", self.sample)?;
        writeln!(f, "{:<46} {:>12} {:>12} {:>6}", "per record", "µs", "x baseline", "yes")?;
        for (name, t) in [
            ("baseline: lookup by primary key", &self.baseline),
            ("skywarden_flow_opened", &self.opened),
            ("skywarden_flow_opened, handshake index dropped", &self.opened_without_index),
            ("port-scan reply check", &self.reply),
            ("port-scan reply check, handshake index dropped", &self.reply_without_index),
        ] {
            writeln!(f, "{name:<46} {:>12.1} {:>12.1} {:>6}", us(t.per_record), ratio(t), t.yes)?;
        }
        writeln!(f, "plan of the handshake lookup (busy interface):\n{}", self.opened_plan)?;
        write!(f, "plan of the reply check:\n{}", self.reply_plan)
    }
}

/// Runs the benchmark in a scratch database next to `server` with about `records` records.
pub async fn run(server: &PgConnectOptions, records: i64, sample: i64) -> Result<FlowBenchReport, FlowBenchError> {
    let mut admin = server.clone().database("postgres").connect().await?;
    sqlx::raw_sql(&format!("DROP DATABASE IF EXISTS {DATABASE} WITH (FORCE)")).execute(&mut admin).await?;
    sqlx::raw_sql(&format!("CREATE DATABASE {DATABASE}")).execute(&mut admin).await?;
    let pool = PgPoolOptions::new().max_connections(2).connect_with(server.clone().database(DATABASE)).await?;
    MIGRATOR.run(&pool).await?;
    let start = Utc.with_ymd_and_hms(2026, 9, 14, 0, 0, 0).single().expect("a valid date");
    let connections = (records / PER_CONNECTION).max(20);
    let started = Instant::now();
    generate(&pool, start, connections).await?;
    let generate_seconds = started.elapsed().as_secs_f64();
    let mut conn = pool.acquire().await?;
    let report = measure(&mut conn, sample.max(10), generate_seconds).await;
    drop(conn);
    pool.close().await;
    let _ = sqlx::raw_sql(&format!("DROP DATABASE IF EXISTS {DATABASE} WITH (FORCE)")).execute(&mut admin).await;
    report
}

async fn generate(pool: &sqlx::PgPool, start: DateTime<Utc>, connections: i64) -> Result<(), sqlx::Error> {
    sqlx::query("SELECT skywarden_ensure_month_partition('flow_records', $1)").bind(start).execute(pool).await?;
    let mut next = 1;
    while next <= connections {
        let last = (next + CHUNK - 1).min(connections);
        sqlx::query(GENERATE_SQL).bind(next).bind(last).bind(connections).bind(start).execute(pool).await?;
        next = last + 1;
    }
    sqlx::raw_sql("VACUUM (ANALYZE) flow_records").execute(pool).await?;
    Ok(())
}

/// Connection g of N, spread over two days: every other one through the NAT gateway's
/// interface (a busy interface), the rest on one of 200 instance interfaces; each to one of
/// 5,000 outside addresses from an ephemeral port.
const GENERATE_SQL: &str = r#"
INSERT INTO flow_records (account_id, bucket_time, record_hash, version, interface_id, srcaddr, dstaddr, srcport,
                          dstport, protocol, packets, bytes, start_time, end_time, action, log_status, tcp_flags,
                          flow_direction)
SELECT '111122223333', t, decode(md5(g || '/' || part), 'hex'), 5, eni, src, dst, sport, dport, 6, packets, bytes,
       t, t + interval '50 seconds', 'ACCEPT', 'OK', flags, direction
FROM (
    SELECT g, c.part, c.eni,
           c.t0 + c.later * interval '1 minute' AS t,
           CASE WHEN c.outbound THEN c.inst ELSE c.peer END AS src,
           CASE WHEN c.outbound THEN c.peer ELSE c.inst END AS dst,
           CASE WHEN c.outbound THEN c.eph ELSE 443 END AS sport,
           CASE WHEN c.outbound THEN 443 ELSE c.eph END AS dport,
           c.flags, CASE WHEN c.outbound THEN 'egress' ELSE 'ingress' END AS direction,
           CASE WHEN c.flags & 2 = 2 THEN 1 ELSE 40 END AS packets,
           CASE WHEN c.flags & 2 = 2 THEN 60 ELSE 48000 END AS bytes
    FROM generate_series($1::bigint, $2::bigint) AS g,
    LATERAL (
        SELECT part, outbound, flags, later,
               CASE WHEN g % 2 = 0 THEN 'eni-0nat000000000001' ELSE 'eni-' || lpad(to_hex(g % 200), 17, '0') END AS eni,
               CASE WHEN g % 2 = 0 THEN inet '10.0.0.5' ELSE ('10.0.1.' || (g % 200) + 1)::inet END AS inst,
               ('198.' || (18 + (g * 7) % 2) || '.' || ((g * 13) % 250) || '.' || ((g * 31) % 10 + 1))::inet AS peer,
               (1024 + (g * 104729) % 64000)::int AS eph,
               $4::timestamptz + (g::float8 / $3::float8) * interval '2 days' AS t0
        FROM (VALUES (1, true, 2, 0), (2, false, 18, 0), (3, true, 0, 10), (4, false, 0, 10), (5, true, 1, 20))
             AS parts(part, outbound, flags, later)
    ) c
) r
"#;

async fn measure(
    conn: &mut PgConnection,
    sample: i64,
    generate_seconds: f64,
) -> Result<FlowBenchReport, FlowBenchError> {
    let records: i64 = sqlx::query_scalar("SELECT count(*) FROM flow_records").fetch_one(&mut *conn).await?;
    let busy: i64 = sqlx::query_scalar("SELECT count(*) FROM flow_records WHERE interface_id = 'eni-0nat000000000001'")
        .fetch_one(&mut *conn)
        .await?;
    // The sample: later-interval outbound records (no flags of their own to decide by), half of
    // them on the busy interface; kept in a temporary table so every lookup reads the same rows.
    sqlx::raw_sql("DROP TABLE IF EXISTS bench_sample").execute(&mut *conn).await?;
    sqlx::query(
        "CREATE TEMP TABLE bench_sample AS
         SELECT account_id, bucket_time, record_hash, interface_id, srcaddr, srcport, dstaddr, dstport, protocol,
                tcp_flags, flow_direction
         FROM flow_records WHERE tcp_flags = 0 AND flow_direction = 'egress'
         ORDER BY md5(record_hash::text) LIMIT $1",
    )
    .bind(sample)
    .execute(&mut *conn)
    .await?;
    sqlx::raw_sql("ANALYZE bench_sample").execute(&mut *conn).await?;
    let sample: i64 = sqlx::query_scalar("SELECT count(*) FROM bench_sample").fetch_one(&mut *conn).await?;
    let baseline = timed(conn, BASELINE_SQL, sample).await?;
    let opened = timed(conn, OPENED_SQL, sample).await?;
    let reply = timed(conn, REPLY_SQL, sample).await?;
    let plan = handshake_plan(conn).await?;
    let explain = format!("EXPLAIN (ANALYZE, COSTS OFF, TIMING OFF, SUMMARY OFF) {REPLY_SQL}");
    let reply_plan: Vec<String> = sqlx::query_scalar(&explain).fetch_all(&mut *conn).await?;
    let mut tx = conn.begin().await?;
    sqlx::raw_sql("DROP INDEX IF EXISTS flow_records_handshake_idx").execute(&mut *tx).await?;
    let opened_without_index = timed(&mut tx, OPENED_SQL, sample).await?;
    let reply_without_index = timed(&mut tx, REPLY_SQL, sample).await?;
    tx.rollback().await?;
    Ok(FlowBenchReport {
        records,
        busy_interface_records: busy,
        sample,
        generate_seconds,
        baseline,
        opened,
        opened_without_index,
        reply,
        reply_without_index,
        opened_plan: plan,
        reply_plan: reply_plan.join("\n"),
    })
}

/// Runs `sql` (one count over the sample) twice and keeps the faster: time per sample record.
async fn timed(conn: &mut PgConnection, sql: &str, sample: i64) -> Result<Timing, sqlx::Error> {
    let mut best = Duration::MAX;
    let mut yes = 0;
    for _ in 0..2 {
        let started = Instant::now();
        yes = sqlx::query_scalar::<_, i64>(sql).fetch_one(&mut *conn).await?;
        best = best.min(started.elapsed());
    }
    Ok(Timing { per_record: best / u32::try_from(sample.max(1)).unwrap_or(u32::MAX), yes })
}

/// Each sample record found again by its primary key.
const BASELINE_SQL: &str = "SELECT count(*) FILTER (WHERE EXISTS (
    SELECT FROM flow_records f WHERE f.account_id = s.account_id AND f.bucket_time = s.bucket_time
                                 AND f.record_hash = s.record_hash)) FROM bench_sample s";

/// The handshake lookup, as the suspicious-destination detector calls it.
const OPENED_SQL: &str = "SELECT count(*) FILTER (WHERE skywarden_flow_opened(interface_id, bucket_time, srcaddr,
    srcport, dstaddr, dstport, protocol, tcp_flags, flow_direction)) FROM bench_sample";

/// The handshake lookup of `skywarden_flow_opened` (migration 0041) as a statement of its own,
/// with parameters: a copy, for its plan.
const HANDSHAKE_SQL: &str = "PREPARE bench_handshake(text, timestamptz, inet, integer, inet, integer) AS
    SELECT bool_or(opened) FROM (
        SELECT o.tcp_flags & 18 = 2 AS opened FROM flow_records o
        WHERE o.interface_id = $1 AND o.srcaddr = $3 AND o.srcport = $4 AND o.dstaddr = $5 AND o.dstport = $6
          AND o.bucket_time >= $2 - interval '1 day' AND o.bucket_time <= $2 + interval '1 hour'
          AND o.protocol = 6 AND o.tcp_flags & 2 = 2
        UNION ALL
        SELECT o.tcp_flags & 18 <> 2 FROM flow_records o
        WHERE o.interface_id = $1 AND o.srcaddr = $5 AND o.srcport = $6 AND o.dstaddr = $3 AND o.dstport = $4
          AND o.bucket_time >= $2 - interval '1 day' AND o.bucket_time <= $2 + interval '1 hour'
          AND o.protocol = 6 AND o.tcp_flags & 2 = 2
          AND NOT ($3 = $5 AND $4 = $6)
    ) AS handshake";

/// The generic plan (what a function body gets) of the handshake lookup for a record of the
/// busy interface.
async fn handshake_plan(conn: &mut PgConnection) -> Result<String, sqlx::Error> {
    sqlx::raw_sql(HANDSHAKE_SQL).execute(&mut *conn).await?;
    sqlx::raw_sql("SET plan_cache_mode = force_generic_plan").execute(&mut *conn).await?;
    let row: Option<(DateTime<Utc>, String, i32, String, i32)> = sqlx::query_as(
        "SELECT bucket_time, host(srcaddr), srcport, host(dstaddr), dstport FROM bench_sample
         WHERE interface_id = 'eni-0nat000000000001' LIMIT 1",
    )
    .fetch_optional(&mut *conn)
    .await?;
    let Some((at, src, sport, dst, dport)) = row else { return Ok("(no sample on the busy interface)".into()) };
    let explain = format!(
        "EXPLAIN (ANALYZE, COSTS OFF, TIMING OFF, SUMMARY OFF) EXECUTE bench_handshake('eni-0nat000000000001', \
         '{}', '{src}', {sport}, '{dst}', {dport})",
        at.to_rfc3339()
    );
    let plan: Vec<String> = sqlx::query_scalar(&explain).fetch_all(&mut *conn).await?;
    sqlx::raw_sql("RESET plan_cache_mode; DEALLOCATE bench_handshake").execute(&mut *conn).await?;
    Ok(plan.join("\n"))
}

/// The port-scan detector's reply check (`port_scan::source_windows`): an answer of the
/// connection within 15 minutes.
const REPLY_SQL: &str = "SELECT count(*) FILTER (WHERE EXISTS (
    SELECT FROM flow_records r
    WHERE r.srcaddr = f.dstaddr AND r.dstaddr = f.srcaddr AND r.protocol = f.protocol
      AND r.srcport IS NOT DISTINCT FROM f.dstport AND r.dstport IS NOT DISTINCT FROM f.srcport
      AND r.bucket_time >= f.bucket_time - interval '15 minutes'
      AND r.bucket_time <= f.bucket_time + interval '15 minutes'
      AND r.action = 'ACCEPT' AND coalesce(r.tcp_flags, 0) & 20 <> 4)) FROM bench_sample f";
