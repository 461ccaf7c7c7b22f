//! `skywarden bench-import`: import speed against the raw speed of PostgreSQL COPY.
//!
//! Generates realistic CloudTrail events into an S3-shaped file, imports it with the real
//! importer, then loads the very same rows with plain COPY on the same number of connections
//! into the same schema (no parsing, no deduplication). Both run in one process against a
//! scratch database, twice each, alternating, and the best of each is compared.

use std::io::Write;
use std::path::Path;
use std::time::{Duration, Instant};

use chrono::{TimeZone, Utc};
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{ConnectOptions, PgPool};

use crate::db::MIGRATOR;
use crate::db::copy::CopyBuffer;
use crate::db::partitions::{PartitionCache, PartitionedTable, month_start};
use crate::ingest::cloudtrail::CloudTrailEvent;
use crate::ingest::{self, ImportOptions};

const BENCH_DATABASE: &str = "skywarden_bench";
const STREAMS: usize = 2;
const ROUNDS: usize = 2;

#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    #[error("database error")]
    Db(#[from] sqlx::Error),
    #[error("migration failed")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("import failed")]
    Import(#[from] ingest::ImportError),
    #[error("writing the generated file")]
    Io(#[from] std::io::Error),
    #[error("the import reported errors: {0}")]
    ImportErrors(String),
}

#[derive(Debug)]
pub struct BenchReport {
    pub events: usize,
    pub average_event_bytes: usize,
    pub import_rate: f64,
    pub copy_rate: f64,
}

impl BenchReport {
    pub fn ratio(&self) -> f64 {
        self.import_rate / self.copy_rate
    }
}

impl std::fmt::Display for BenchReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(f, "events:               {} (~{} bytes each)", self.events, self.average_event_bytes)?;
        writeln!(f, "raw COPY ({STREAMS} streams):   {:>10.0} events/s", self.copy_rate)?;
        writeln!(f, "skywarden import:     {:>10.0} events/s", self.import_rate)?;
        write!(f, "ratio import/COPY:    {:>10.2}", self.ratio())
    }
}

/// Runs the benchmark on a scratch database next to `server` (dropped afterwards).
pub async fn run(server: &PgConnectOptions, events: usize, work_dir: &Path) -> Result<BenchReport, BenchError> {
    let admin = server.clone().database("postgres");
    let mut admin_conn = admin.connect().await?;
    sqlx::raw_sql(&format!("DROP DATABASE IF EXISTS {BENCH_DATABASE} WITH (FORCE)")).execute(&mut admin_conn).await?;
    sqlx::raw_sql(&format!("CREATE DATABASE {BENCH_DATABASE}")).execute(&mut admin_conn).await?;
    let pool = PgPoolOptions::new()
        .max_connections(STREAMS as u32 + 1)
        .connect_with(server.clone().database(BENCH_DATABASE))
        .await?;
    MIGRATOR.run(&pool).await?;

    let file = work_dir.join("bench-cloudtrail.json");
    let bytes = generate_events(&file, events)?;
    let rows = encode_rows(&file)?;

    let mut best_import = Duration::MAX;
    let mut best_copy = Duration::MAX;
    for round in 0..ROUNDS {
        reset(&pool).await?;
        let copy = time_raw_copy(&pool, &rows).await?;
        reset(&pool).await?;
        let import = time_import(&pool, &file, events).await?;
        tracing::info!(round, copy_ms = copy.as_millis() as u64, import_ms = import.as_millis() as u64, "bench round");
        best_copy = best_copy.min(copy);
        best_import = best_import.min(import);
    }
    pool.close().await;
    sqlx::raw_sql(&format!("DROP DATABASE IF EXISTS {BENCH_DATABASE} WITH (FORCE)")).execute(&mut admin_conn).await?;
    let _ = std::fs::remove_file(&file);

    Ok(BenchReport {
        events,
        average_event_bytes: bytes / events.max(1),
        import_rate: events as f64 / best_import.as_secs_f64(),
        copy_rate: events as f64 / best_copy.as_secs_f64(),
    })
}

async fn reset(pool: &PgPool) -> Result<(), sqlx::Error> {
    sqlx::raw_sql("TRUNCATE cloudtrail_events, accounts; CHECKPOINT").execute(pool).await?;
    Ok(())
}

async fn time_import(pool: &PgPool, file: &Path, events: usize) -> Result<Duration, BenchError> {
    let started = Instant::now();
    let summary = ingest::import(pool, ImportOptions::new(vec![file.to_path_buf()])).await?;
    let elapsed = started.elapsed();
    if !summary.errors.is_empty() || summary.cloudtrail_events != events as u64 {
        return Err(BenchError::ImportErrors(format!("{:?}, stored {}", summary.errors, summary.cloudtrail_events)));
    }
    Ok(elapsed)
}

/// The same rows the importer stores, as COPY text, split into one buffer per stream.
fn encode_rows(file: &Path) -> Result<Vec<(CopyBuffer, Vec<chrono::DateTime<Utc>>)>, BenchError> {
    #[derive(serde::Deserialize)]
    struct Document {
        #[serde(rename = "Records")]
        records: Vec<Box<serde_json::value::RawValue>>,
    }
    let document: Document =
        serde_json::from_reader(std::io::BufReader::new(std::fs::File::open(file)?)).map_err(std::io::Error::other)?;
    let per_stream = document.records.len().div_ceil(STREAMS);
    let mut streams = Vec::new();
    for chunk in document.records.chunks(per_stream.max(1)) {
        let mut buffer = CopyBuffer::with_capacity(chunk.len() * 2048);
        let mut months = Vec::new();
        for raw in chunk {
            let event = CloudTrailEvent::parse(raw.get(), None).map_err(std::io::Error::other)?;
            months.push(month_start(event.event_time));
            event.write_row(None, &mut buffer);
        }
        months.sort();
        months.dedup();
        streams.push((buffer, months));
    }
    Ok(streams)
}

/// Plain COPY of pre-encoded rows on parallel connections, in batches of the importer's size.
async fn time_raw_copy(
    pool: &PgPool,
    streams: &[(CopyBuffer, Vec<chrono::DateTime<Utc>>)],
) -> Result<Duration, BenchError> {
    let partitions = PartitionCache::default();
    let mut conn = pool.acquire().await?;
    for (_, months) in streams {
        partitions.ensure(&mut conn, PartitionedTable::CloudTrailEvents, months.clone()).await?;
    }
    drop(conn);
    let started = Instant::now();
    let mut tasks = Vec::new();
    for (buffer, _) in streams {
        let pool = pool.clone();
        let data = buffer.as_bytes().to_vec();
        tasks.push(tokio::spawn(async move {
            for chunk in split_rows(&data, 2_000) {
                ingest::store::copy_raw(&pool, PartitionedTable::CloudTrailEvents, chunk).await?;
            }
            Ok::<(), sqlx::Error>(())
        }));
    }
    for task in tasks {
        task.await.map_err(std::io::Error::other)??;
    }
    Ok(started.elapsed())
}

/// Splits COPY text into chunks of `rows` lines.
fn split_rows(data: &[u8], rows: usize) -> Vec<&[u8]> {
    let mut chunks = Vec::new();
    let (mut start, mut count) = (0, 0);
    for (i, byte) in data.iter().enumerate() {
        if *byte == b'\n' {
            count += 1;
            if count == rows {
                chunks.push(&data[start..=i]);
                start = i + 1;
                count = 0;
            }
        }
    }
    if start < data.len() {
        chunks.push(&data[start..]);
    }
    chunks
}

/// Writes `count` realistic events (console logins, role sessions, EC2 and IAM calls, each
/// about 1.7 KB like real CloudTrail records) as an S3 delivery document. Returns its size.
pub fn generate_events(path: &Path, count: usize) -> std::io::Result<usize> {
    let mut out = std::io::BufWriter::new(std::fs::File::create(path)?);
    let start = Utc.with_ymd_and_hms(2026, 10, 20, 0, 0, 0).single().expect("valid date");
    let mut written = 0;
    out.write_all(b"{\"Records\":[")?;
    for i in 0..count {
        if i > 0 {
            out.write_all(b",")?;
        }
        let time = start + chrono::Duration::seconds((i as i64 * 14 * 86_400) / count.max(1) as i64);
        let user = ["alice", "bob", "carol", "deploy-bot", "dave"][i % 5];
        let ip = format!("{}.{}.{}.{}", 20 + i % 200, (i / 7) % 250, (i / 13) % 250, 1 + i % 250);
        let (source, name, request) = match i % 6 {
            0 => (
                "ec2.amazonaws.com",
                "DescribeInstances",
                format!(r#"{{"instancesSet":{{"items":[{{"instanceId":"i-{:017x}"}}]}},"filterSet":{{}}}}"#, i),
            ),
            1 => (
                "ec2.amazonaws.com",
                "AuthorizeSecurityGroupIngress",
                format!(
                    r#"{{"groupId":"sg-{:017x}","ipPermissions":{{"items":[{{"ipProtocol":"tcp","fromPort":443,"toPort":443,"groups":{{}},"ipRanges":{{"items":[{{"cidrIp":"10.0.0.0/16"}}]}}}}]}}}}"#,
                    i % 97
                ),
            ),
            2 => (
                "iam.amazonaws.com",
                "AttachRolePolicy",
                format!(r#"{{"roleName":"app-role-{}","policyArn":"arn:aws:iam::aws:policy/ReadOnlyAccess"}}"#, i % 31),
            ),
            3 => (
                "s3.amazonaws.com",
                "GetObject",
                format!(
                    r#"{{"bucketName":"logs-{}","key":"2026/10/{}/part-{}.json","Host":"logs.s3.amazonaws.com"}}"#,
                    i % 11,
                    i % 28,
                    i
                ),
            ),
            4 => (
                "sts.amazonaws.com",
                "AssumeRole",
                format!(
                    r#"{{"roleArn":"arn:aws:iam::111122223333:role/app-role-{}","roleSessionName":"session-{}","durationSeconds":3600}}"#,
                    i % 31,
                    i
                ),
            ),
            _ => (
                "ec2.amazonaws.com",
                "DescribeSecurityGroups",
                r#"{"securityGroupSet":{},"ipPermissionsSet":{},"filterSet":{}}"#.to_string(),
            ),
        };
        let event = format!(
            concat!(
                r#"{{"eventVersion":"1.08","userIdentity":{{"type":"IAMUser","principalId":"AIDA{id:016X}","arn":"arn:aws:iam::111122223333:user/{user}","#,
                r#""accountId":"111122223333","accessKeyId":"AKIA{key:016X}","userName":"{user}","sessionContext":{{"sessionIssuer":{{}},"webIdFederationData":{{}},"#,
                r#""attributes":{{"creationDate":"{time}","mfaAuthenticated":"false"}}}}}},"eventTime":"{time}","eventSource":"{source}","eventName":"{name}","#,
                r#""awsRegion":"eu-west-1","sourceIPAddress":"{ip}","userAgent":"aws-cli/2.15.30 Python/3.11.8 Linux/6.5.0-1016-aws exe/x86_64.ubuntu.22 prompt/off command/{name}","#,
                r#""requestParameters":{request},"responseElements":null,"requestID":"{rid:08x}-5f4a-4202-b1ea-{rid:012x}","eventID":"{eid:08x}-98f8-4744-bd45-{eid:012x}","#,
                r#""readOnly":{ro},"eventType":"AwsApiCall","managementEvent":true,"recipientAccountId":"111122223333","eventCategory":"Management","#,
                r#""tlsDetails":{{"tlsVersion":"TLSv1.3","cipherSuite":"TLS_AES_128_GCM_SHA256","clientProvidedHostHeader":"{host}"}},"#,
                r#""additionalEventData":{{"SignatureVersion":"SigV4","CipherSuite":"ECDHE-RSA-AES128-GCM-SHA256","bytesTransferredIn":0,"AuthenticationMethod":"AuthHeader","x-amz-id-2":"{amz_id}"}},"#,
                r#""resources":[{{"accountId":"111122223333","type":"AWS::EC2::Instance","ARN":"arn:aws:ec2:eu-west-1:111122223333:instance/i-{rid:017x}"}},"#,
                r#"{{"accountId":"111122223333","type":"AWS::IAM::Role","ARN":"arn:aws:iam::111122223333:role/app-role-{role}"}}],"#,
                r#""sessionCredentialFromConsole":"false","vpcEndpointId":"vpce-{rid:017x}","vpcEndpointAccountId":"111122223333"}}"#
            ),
            id = i % 5,
            key = i % 9,
            user = user,
            time = time.format("%Y-%m-%dT%H:%M:%SZ"),
            source = source,
            name = name,
            ip = ip,
            request = request,
            rid = i,
            eid = i,
            ro = matches!(i % 6, 0 | 3 | 5),
            host = source,
            role = i % 31,
            amz_id = "Xk2pL9qRv7TtYw3Zb8Nc1Md6Fe4Gh0Jj5Kk7Ll9Mm2Nn4Oo6Pp8Qq0Rr2Ss4Tt6Uu8Vv0Ww2Xx4Yy6Zz8=",
        );
        written += event.len();
        out.write_all(event.as_bytes())?;
    }
    out.write_all(b"]}\n")?;
    out.flush()?;
    Ok(written)
}

/// What `bench-detect` measured.
#[derive(Debug)]
pub struct DetectBenchReport {
    pub events: usize,
    pub rules: usize,
    pub parse_rate: f64,
    pub detect_rate: f64,
    /// Parse + rules + detectors with the scanner feeding one worker per core.
    pub detect_rate_parallel: f64,
    pub workers: usize,
    pub findings: usize,
}

impl std::fmt::Display for DetectBenchReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(f, "events:                        {}", self.events)?;
        writeln!(f, "Sigma rules enabled:           {}", self.rules)?;
        writeln!(f, "parse only (baseline):         {:>10.0} events/s", self.parse_rate)?;
        writeln!(f, "parse + rules + detectors:     {:>10.0} events/s", self.detect_rate)?;
        writeln!(f, "ratio to parse only:           {:>10.2}", self.detect_rate / self.parse_rate)?;
        writeln!(f, "the same on {} workers:         {:>10.0} events/s", self.workers, self.detect_rate_parallel)?;
        write!(f, "findings:                      {}", self.findings)
    }
}

/// Streams `file` through the parser alone, then through parser, Sigma rules and the event and
/// login detectors (one thread each, best of two rounds), and reports both rates.
pub fn detection(policies: &crate::policy::PolicySet, file: &Path) -> Result<DetectBenchReport, BenchError> {
    use crate::ingest::json_stream::{self, JsonSink};
    use crate::policy::PolicyEvent;

    struct Sink<'p> {
        policies: Option<&'p crate::policy::PolicySet>,
        events: usize,
        findings: usize,
        logins: Vec<PolicyEvent>,
    }
    impl JsonSink for Sink<'_> {
        fn event(&mut self, raw: &str) {
            let Ok(event) = CloudTrailEvent::parse(raw, None) else { return };
            self.events += 1;
            let Some(policies) = self.policies else { return };
            let event = PolicyEvent::from_parsed(event, None);
            self.findings += policies.sigma.evaluate(&event, None).len();
            self.findings += policies.detectors.evaluate_event(&event, None).len();
            if event.is_console_login() {
                self.logins.push(event);
            }
        }
        fn log_message(&mut self, _: &str, _: Option<i64>, _: Option<&str>) {}
        fn skipped(&mut self, _: &'static str) {}
        fn unrecognised(&mut self, _: String) {}
    }

    let run = |policies: Option<&crate::policy::PolicySet>| -> Result<(Duration, usize, usize), BenchError> {
        let started = Instant::now();
        let reader = std::io::BufReader::with_capacity(256 * 1024, std::fs::File::open(file)?);
        let mut sink = Sink { policies, events: 0, findings: 0, logins: Vec::new() };
        json_stream::walk(reader, &mut sink).map_err(std::io::Error::other)?;
        if let Some(policies) = policies {
            sink.logins.sort_by_key(|e| e.event_time);
            let from = chrono::DateTime::UNIX_EPOCH;
            sink.findings +=
                crate::policy::detectors::logins::evaluate(&policies.detectors, &sink.logins, from, None).len();
        }
        Ok((started.elapsed(), sink.events, sink.findings))
    };
    let workers = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1).max(1);
    let mut parse_best = Duration::MAX;
    let mut detect_best = Duration::MAX;
    let mut parallel_best = Duration::MAX;
    let (mut events, mut findings) = (0, 0);
    for _ in 0..ROUNDS {
        let (elapsed, n, _) = run(None)?;
        parse_best = parse_best.min(elapsed);
        events = n;
        let (elapsed, _, found) = run(Some(policies))?;
        detect_best = detect_best.min(elapsed);
        findings = found;
        let (elapsed, parallel_findings) = detection_parallel(policies, file, workers)?;
        if parallel_findings != found {
            return Err(BenchError::ImportErrors(format!("parallel run found {parallel_findings}, serial {found}")));
        }
        parallel_best = parallel_best.min(elapsed);
    }
    Ok(DetectBenchReport {
        events,
        rules: policies.sigma.enabled_count(),
        parse_rate: events as f64 / parse_best.as_secs_f64(),
        detect_rate: events as f64 / detect_best.as_secs_f64(),
        detect_rate_parallel: events as f64 / parallel_best.as_secs_f64(),
        workers,
        findings,
    })
}

/// The scanner hands batches of event texts to `workers` threads that parse and evaluate them;
/// login detectors run once at the end over the logins the workers kept, in time order.
fn detection_parallel(
    policies: &crate::policy::PolicySet,
    file: &Path,
    workers: usize,
) -> Result<(Duration, usize), BenchError> {
    use crate::ingest::json_stream::{self, JsonSink};
    use crate::policy::PolicyEvent;
    use std::sync::{Mutex, mpsc};

    const BATCH: usize = 512;
    struct Feeder {
        batch: Vec<String>,
        out: mpsc::SyncSender<Vec<String>>,
    }
    impl JsonSink for Feeder {
        fn event(&mut self, raw: &str) {
            self.batch.push(raw.to_string());
            if self.batch.len() == BATCH {
                let _ = self.out.send(std::mem::replace(&mut self.batch, Vec::with_capacity(BATCH)));
            }
        }
        fn log_message(&mut self, _: &str, _: Option<i64>, _: Option<&str>) {}
        fn skipped(&mut self, _: &'static str) {}
        fn unrecognised(&mut self, _: String) {}
    }

    let started = Instant::now();
    let (sender, receiver) = mpsc::sync_channel::<Vec<String>>(workers * 2);
    let receiver = Mutex::new(receiver);
    let (findings, mut logins) = std::thread::scope(|scope| -> Result<(usize, Vec<PolicyEvent>), BenchError> {
        let handles: Vec<_> = (0..workers)
            .map(|_| {
                scope.spawn(|| {
                    let (mut findings, mut logins) = (0, Vec::new());
                    loop {
                        let batch = receiver.lock().expect("receiver").recv();
                        let Ok(batch) = batch else { return (findings, logins) };
                        for raw in batch {
                            let Ok(event) = CloudTrailEvent::parse(&raw, None) else { continue };
                            let event = PolicyEvent::from_parsed(event, None);
                            findings += policies.sigma.evaluate(&event, None).len();
                            findings += policies.detectors.evaluate_event(&event, None).len();
                            if event.is_console_login() {
                                logins.push(event);
                            }
                        }
                    }
                })
            })
            .collect();
        let reader = std::io::BufReader::with_capacity(256 * 1024, std::fs::File::open(file)?);
        let mut feeder = Feeder { batch: Vec::with_capacity(BATCH), out: sender };
        json_stream::walk(reader, &mut feeder).map_err(std::io::Error::other)?;
        let Feeder { batch, out } = feeder;
        let _ = out.send(batch);
        drop(out);
        let mut total = (0, Vec::new());
        for handle in handles {
            let (findings, logins) = handle.join().map_err(|_| std::io::Error::other("worker panicked"))?;
            total.0 += findings;
            total.1.extend(logins);
        }
        Ok(total)
    })?;
    logins.sort_by_key(|e| e.event_time);
    let from = chrono::DateTime::UNIX_EPOCH;
    let findings =
        findings + crate::policy::detectors::logins::evaluate(&policies.detectors, &logins, from, None).len();
    Ok((started.elapsed(), findings))
}
