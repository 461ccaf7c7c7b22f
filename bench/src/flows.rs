//! `skywarden-bench flows`: the per-record lookups of the flow detectors on a large flow table.
//!
//! Fills a scratch database with generated VPC flow records of TCP connections as interfaces
//! log them (the opener's SYN and the answer's SYN-ACK in the first interval, data later, a FIN
//! at the end), over two days, on many instance interfaces and one busy NAT gateway interface
//! that carries half the connections (the interface where a lookup that reads the interface's
//! day would show), which also sends UDP queries (port 53) that are answered. Then it times, per
//! record:
//!
//! - `skywarden_flow_opened` (migration 0033), on later-interval egress records (no flags of
//!   their own: they need the handshake lookup), with and without the handshake index;
//! - the port-scan reply check (`port_scan`'s `NOT EXISTS` for a reply of the connection), on
//!   the records port_scan checks: SYN-only TCP records and UDP records, half of them the NAT's,
//!   with and without the reply index (`flow_records_reply_idx`);
//! - the baseline: each record looked up by its primary key;
//! - COPY of flow records with and without the reply index (its cost to ingest).
//!
//! An index is dropped inside a transaction that is rolled back, so each effect is measured in
//! the same run.

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
    /// Records of the reply-check sample (SYN-only TCP and UDP).
    pub reply_sample: i64,
    pub reply: Timing,
    pub reply_without_index: Timing,
    /// Rows copied to time COPY, and its time per row with and without the reply index.
    pub copy_rows: i64,
    pub copy_with_index: Duration,
    pub copy_without_index: Duration,
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
        writeln!(f, "reply sample (SYN-only TCP and UDP):   {}", self.reply_sample)?;
        writeln!(f, "{:<46} {:>12} {:>12} {:>6}", "per record", "µs", "x baseline", "yes")?;
        for (name, t) in [
            ("baseline: lookup by primary key", &self.baseline),
            ("skywarden_flow_opened", &self.opened),
            ("skywarden_flow_opened, handshake index dropped", &self.opened_without_index),
            ("port-scan reply check", &self.reply),
            ("port-scan reply check, reply index dropped", &self.reply_without_index),
        ] {
            writeln!(f, "{name:<46} {:>12.1} {:>12.1} {:>6}", us(t.per_record), ratio(t), t.yes)?;
        }
        let per_row = |d: Duration| us(d) / self.copy_rows.max(1) as f64;
        writeln!(f, "COPY of {} flow records, µs per row:", self.copy_rows)?;
        writeln!(f, "  with the reply index:                {:.2}", per_row(self.copy_with_index))?;
        writeln!(f, "  without it:                          {:.2}", per_row(self.copy_without_index))?;
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
/// 5,000 outside addresses from an ephemeral port. The NAT's also send a UDP query (port 53)
/// that is answered.
const GENERATE_SQL: &str = r#"
INSERT INTO flow_records (account_id, bucket_time, record_hash, version, interface_id, srcaddr, dstaddr, srcport,
                          dstport, protocol, packets, bytes, start_time, end_time, action, log_status, tcp_flags,
                          flow_direction)
SELECT '111122223333', t, decode(md5(g || '/' || part), 'hex'), 5, eni, src, dst, sport, dport, proto, packets, bytes,
       t, t + interval '50 seconds', 'ACCEPT', 'OK', flags, direction
FROM (
    SELECT g, c.part, c.eni,
           c.t0 + c.later * interval '1 minute' AS t,
           CASE WHEN c.outbound THEN c.inst ELSE c.peer END AS src,
           CASE WHEN c.outbound THEN c.peer ELSE c.inst END AS dst,
           CASE WHEN c.outbound THEN c.eph ELSE c.port END AS sport,
           CASE WHEN c.outbound THEN c.port ELSE c.eph END AS dport, c.proto,
           c.flags, CASE WHEN c.outbound THEN 'egress' ELSE 'ingress' END AS direction,
           CASE WHEN c.proto = 17 OR c.flags & 2 = 2 THEN 1 ELSE 40 END AS packets,
           CASE WHEN c.proto = 17 OR c.flags & 2 = 2 THEN 60 ELSE 48000 END AS bytes
    FROM generate_series($1::bigint, $2::bigint) AS g,
    LATERAL (
        SELECT part, outbound, flags, later, proto, port,
               CASE WHEN g % 2 = 0 THEN 'eni-0nat000000000001' ELSE 'eni-' || lpad(to_hex(g % 200), 17, '0') END AS eni,
               CASE WHEN g % 2 = 0 THEN inet '10.0.0.5' ELSE ('10.0.1.' || (g % 200) + 1)::inet END AS inst,
               ('198.' || (18 + (g * 7) % 2) || '.' || ((g * 13) % 250) || '.' || ((g * 31) % 10 + 1))::inet AS peer,
               (1024 + (g * 104729) % 64000)::int AS eph,
               $4::timestamptz + (g::float8 / $3::float8) * interval '2 days' AS t0
        FROM (VALUES (1, true, 2, 0, 6, 443), (2, false, 18, 0, 6, 443), (3, true, 0, 10, 6, 443),
                     (4, false, 0, 10, 6, 443), (5, true, 1, 20, 6, 443),
                     (6, true, NULL, 0, 17, 53), (7, false, NULL, 0, 17, 53))
             AS parts(part, outbound, flags, later, proto, port)
        WHERE part <= 5 OR g % 2 = 0
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
    // The reply check's sample: what port_scan checks (SYN-only TCP, every UDP record), half
    // SYNs and half UDP, of every interface (the NAT's UDP to its busy address among them).
    sqlx::raw_sql("DROP TABLE IF EXISTS bench_reply_sample").execute(&mut *conn).await?;
    sqlx::query(
        "CREATE TEMP TABLE bench_reply_sample AS
         (SELECT srcaddr, srcport, dstaddr, dstport, protocol, bucket_time FROM flow_records
          WHERE protocol = 6 AND tcp_flags = 2 ORDER BY md5(record_hash::text) LIMIT $1)
         UNION ALL
         (SELECT srcaddr, srcport, dstaddr, dstport, protocol, bucket_time FROM flow_records
          WHERE protocol = 17 ORDER BY md5(record_hash::text) LIMIT $1)",
    )
    .bind(sample / 2)
    .execute(&mut *conn)
    .await?;
    sqlx::raw_sql("ANALYZE bench_reply_sample").execute(&mut *conn).await?;
    let reply_sample: i64 = sqlx::query_scalar("SELECT count(*) FROM bench_reply_sample").fetch_one(&mut *conn).await?;
    let baseline = timed(conn, BASELINE_SQL, sample).await?;
    let opened = timed(conn, OPENED_SQL, sample).await?;
    let reply = timed(conn, REPLY_SQL, reply_sample).await?;
    let plan = handshake_plan(conn).await?;
    let explain = format!("EXPLAIN (ANALYZE, COSTS OFF, TIMING OFF, SUMMARY OFF) {REPLY_SQL}");
    let reply_plan: Vec<String> = sqlx::query_scalar(&explain).fetch_all(&mut *conn).await?;
    // The benchmark's own connection: nothing cancels it mid-way.
    #[allow(clippy::disallowed_methods)]
    let mut tx = conn.begin().await?;
    sqlx::raw_sql("DROP INDEX IF EXISTS flow_records_handshake_idx").execute(&mut *tx).await?;
    let opened_without_index = timed(&mut tx, OPENED_SQL, sample).await?;
    tx.rollback().await?;
    // The benchmark's own connection: nothing cancels it mid-way.
    #[allow(clippy::disallowed_methods)]
    let mut tx = conn.begin().await?;
    sqlx::raw_sql("DROP INDEX IF EXISTS flow_records_reply_idx").execute(&mut *tx).await?;
    let reply_without_index = timed(&mut tx, REPLY_SQL, reply_sample).await?;
    tx.rollback().await?;
    let (copy_rows, copy_with_index, copy_without_index) = copy_cost(conn, records.min(200_000)).await?;
    Ok(FlowBenchReport {
        records,
        busy_interface_records: busy,
        sample,
        generate_seconds,
        baseline,
        opened,
        opened_without_index,
        reply_sample,
        reply,
        reply_without_index,
        copy_rows,
        copy_with_index,
        copy_without_index,
        opened_plan: plan,
        reply_plan: reply_plan.join("\n"),
    })
}

/// The columns the generator fills (and COPY writes).
const COPY_COLUMNS: &str = "account_id, bucket_time, record_hash, version, interface_id, srcaddr, dstaddr, srcport, \
    dstport, protocol, packets, bytes, start_time, end_time, action, log_status, tcp_flags, flow_direction";

/// COPY of `rows` flow records (copies of stored ones, a day later) with every index, and with
/// the reply index dropped, each in a transaction rolled back: the best of two each, alternated.
async fn copy_cost(conn: &mut PgConnection, rows: i64) -> Result<(i64, Duration, Duration), sqlx::Error> {
    let out = format!(
        "COPY (SELECT {} FROM flow_records ORDER BY bucket_time LIMIT {rows}) TO STDOUT",
        COPY_COLUMNS.replace("bucket_time,", "bucket_time + interval '1 day',")
    );
    let mut data = Vec::new();
    let mut stream = conn.copy_out_raw(&out).await?;
    while let Some(chunk) = futures_util::TryStreamExt::try_next(&mut stream).await? {
        data.extend_from_slice(&chunk);
    }
    drop(stream);
    let (mut with, mut without) = (Duration::MAX, Duration::MAX);
    for _ in 0..2 {
        for drop_index in [false, true] {
            // The benchmark's own connection: nothing cancels it mid-way.
            #[allow(clippy::disallowed_methods)]
            let mut tx = conn.begin().await?;
            if drop_index {
                sqlx::raw_sql("DROP INDEX flow_records_reply_idx").execute(&mut *tx).await?;
            }
            let started = Instant::now();
            let mut copy = tx.copy_in_raw(&format!("COPY flow_records ({COPY_COLUMNS}) FROM STDIN")).await?;
            copy.send(data.as_slice()).await?;
            copy.finish().await?;
            let took = started.elapsed();
            tx.rollback().await?;
            let best = if drop_index { &mut without } else { &mut with };
            *best = (*best).min(took);
        }
    }
    Ok((rows, with, without))
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
      AND coalesce(r.srcport, -1) = coalesce(f.dstport, -1) AND coalesce(r.dstport, -1) = coalesce(f.srcport, -1)
      AND r.bucket_time >= f.bucket_time - interval '15 minutes'
      AND r.bucket_time <= f.bucket_time + interval '15 minutes'
      AND r.action = 'ACCEPT' AND coalesce(r.tcp_flags, 0) & 20 <> 4)) FROM bench_reply_sample f";
