//! `skywarden-bench latency`: from a trail file written to S3 to the alert it raises, through
//! an SQS queue that S3 event notifications fill (the near-real-time path), against the bucket
//! listing alone (the baseline), both measured in the same run against a moto server.
//!
//! Each object holds a console login without MFA by a user of its own, so each raises its own
//! alert; objects are written one at a time at a random moment, and the latency is the alert's
//! `created_at` minus the moment PutObject returned (one clock: moto, PostgreSQL and this
//! process run on one machine). A worker runs the account's jobs as `skywarden worker` would.

use std::sync::Arc;
use std::time::{Duration, Instant};

use aws_sdk_s3::types::{Event, NotificationConfiguration, QueueConfiguration};
use aws_sdk_sqs::types::QueueAttributeName;
use chrono::{DateTime, Utc};
use serde_json::json;
use skywarden::accounts::{self, LogSources, NewAccount, PollIntervals};
use skywarden::aws::{AccountSession, AssumeRoleTarget, AwsSettings, RoleArn};
use skywarden::db::MIGRATOR;
use skywarden::db::partitions::PartitionCache;
use skywarden::detect::PolicySet;
use skywarden::pollers::worker::Worker;
use skywarden::pollers::{PollContext, PollOptions, Source};
use sqlx::PgPool;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};

const DATABASE: &str = "skywarden_bench_latency";
/// Near-real-time target: the 95th percentile under a minute (aim: ten seconds).
const TARGET_P95: Duration = Duration::from_secs(60);

#[derive(Debug, thiserror::Error)]
pub enum LatencyBenchError {
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
    #[error("migration failed")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("{0}")]
    Setup(String),
}

fn setup_error(error: impl std::fmt::Display) -> LatencyBenchError {
    LatencyBenchError::Setup(error.to_string())
}

/// How a phase reads the bucket.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Path {
    Queue,
    Listing,
}

pub struct Settings {
    pub objects: usize,
    pub moto_url: String,
    /// The listing job's interval in the baseline (the product's default is 300 s).
    pub listing_interval: Duration,
}

pub struct LatencyReport {
    objects: usize,
    listing_interval: Duration,
    queue: Vec<Duration>,
    listing: Vec<Duration>,
}

impl std::fmt::Display for LatencyReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let (q50, q95) = (percentile(&self.queue, 50), percentile(&self.queue, 95));
        let (l50, l95) = (percentile(&self.listing, 50), percentile(&self.listing, 95));
        let secs = |d: Duration| d.as_secs_f64();
        writeln!(f, "object written -> alert raised, {} objects per path, against moto S3 + SQS", self.objects)?;
        writeln!(f, "  queue (S3 notification -> SQS):  p50 {:>7.2} s  p95 {:>7.2} s", secs(q50), secs(q95))?;
        writeln!(
            f,
            "  listing every {:>4} s (baseline): p50 {:>7.2} s  p95 {:>7.2} s",
            self.listing_interval.as_secs(),
            secs(l50),
            secs(l95)
        )?;
        let ratio = |a: Duration, b: Duration| if a.is_zero() { f64::INFINITY } else { secs(b) / secs(a) };
        writeln!(f, "  queue is {:.1}x faster at p50, {:.1}x at p95", ratio(q50, l50), ratio(q95, l95))?;
        let verdict = if q95 < TARGET_P95 { "met" } else { "MISSED" };
        write!(f, "  target p95 < {} s (aim 10 s): {verdict}", TARGET_P95.as_secs())
    }
}

fn percentile(values: &[Duration], p: usize) -> Duration {
    let mut sorted = values.to_vec();
    sorted.sort();
    let index = (sorted.len() * p).div_ceil(100).saturating_sub(1).min(sorted.len().saturating_sub(1));
    sorted.get(index).copied().unwrap_or_default()
}

/// Runs both paths in a scratch database next to `server` (dropped afterwards).
pub async fn run(server: &PgConnectOptions, settings: &Settings) -> Result<LatencyReport, LatencyBenchError> {
    let mut admin = sqlx::ConnectOptions::connect(&server.clone().database("postgres")).await?;
    sqlx::raw_sql(&format!("DROP DATABASE IF EXISTS {DATABASE} WITH (FORCE)")).execute(&mut admin).await?;
    sqlx::raw_sql(&format!("CREATE DATABASE {DATABASE}")).execute(&mut admin).await?;
    let pool = PgPoolOptions::new().max_connections(8).connect_with(server.clone().database(DATABASE)).await?;
    MIGRATOR.run(&pool).await?;
    let queue = measure(&pool, settings, Path::Queue).await;
    let listing = match &queue {
        Ok(_) => measure(&pool, settings, Path::Listing).await,
        Err(_) => Ok(Vec::new()),
    };
    pool.close().await;
    sqlx::raw_sql(&format!("DROP DATABASE IF EXISTS {DATABASE} WITH (FORCE)")).execute(&mut admin).await?;
    Ok(LatencyReport {
        objects: settings.objects,
        listing_interval: settings.listing_interval,
        queue: queue?,
        listing: listing?,
    })
}

/// One path: a fresh account in moto, a worker running its jobs, the objects' latencies.
async fn measure(pool: &PgPool, settings: &Settings, path: Path) -> Result<Vec<Duration>, LatencyBenchError> {
    let aws = AwsSettings {
        endpoint_url: Some(settings.moto_url.clone()),
        static_credentials: Some(aws_credential_types::Credentials::new("AKIDBENCH", "secret", None, None, "bench")),
        ..Default::default()
    };
    let ctx = PollContext {
        pool: pool.clone(),
        base: aws.load().await,
        settings: aws,
        options: PollOptions::default(),
        geo: None,
        partitions: Arc::new(PartitionCache::default()),
    };
    let account = Account::create(&ctx, settings, path).await?;
    let worker = Arc::new(Worker::new(ctx.clone(), format!("bench-{path:?}"), Some(Arc::new(PolicySet::builtin()))));
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let running = tokio::spawn(worker.run(4, async move {
        let _ = stopped.await;
    }));
    // Let the first runs of every job (snapshots, the first listing) pass.
    tokio::time::sleep(Duration::from_secs(5)).await;
    let timeout = settings.listing_interval + Duration::from_secs(120);
    let mut latencies = Vec::new();
    for i in 0..settings.objects {
        // A random moment within the listing interval, so the listing's phase is not fixed.
        let spread = settings.listing_interval.min(Duration::from_secs(10));
        tokio::time::sleep(spread.mul_f64(random_fraction())).await;
        latencies.push(account.one_object(pool, i, timeout).await?);
    }
    let _ = stop.send(());
    let _ = running.await;
    Ok(latencies)
}

fn random_fraction() -> f64 {
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default().subsec_nanos();
    f64::from(nanos % 1000) / 1000.0
}

/// The benchmark's account in moto: its bucket (and queue, notified by S3).
struct Account {
    id: String,
    bucket: String,
    s3: aws_sdk_s3::Client,
}

impl Account {
    async fn create(ctx: &PollContext, settings: &Settings, path: Path) -> Result<Self, LatencyBenchError> {
        let nanos = Utc::now().timestamp_nanos_opt().unwrap_or_default().unsigned_abs();
        let id = format!("{:012}", nanos % 900_000_000_000 + 100_000_000_000);
        let role = RoleArn::parse(&format!("arn:aws:iam::{id}:role/SkywardenReadOnly")).map_err(setup_error)?;
        let target = AssumeRoleTarget { role_arn: &role, external_id: "bench", endpoint_url: None };
        let owner = AccountSession::assume(&ctx.base, &ctx.settings, &target).await.map_err(setup_error)?;
        let bucket = format!("bench-trail-{id}");
        let s3 = owner.s3("us-east-1");
        s3.create_bucket().bucket(&bucket).send().await.map_err(setup_error)?;
        let mut sources = LogSources { trail_bucket: Some(bucket.clone()), ..Default::default() };
        let mut intervals = PollIntervals::default();
        match path {
            Path::Queue => sources.trail_queue_url = Some(notify_queue(&owner, &s3, &bucket, settings).await?),
            Path::Listing => intervals.set(Source::CloudTrailS3, settings.listing_interval).map_err(setup_error)?,
        }
        let new = NewAccount {
            role_arn: role.as_str().to_owned(),
            regions: vec!["us-east-1".into()],
            sources,
            ..Default::default()
        };
        accounts::onboard(&ctx.pool, &new, &intervals).await.map_err(setup_error)?;
        Ok(Self { id, bucket, s3 })
    }

    /// Writes object `i` and waits for its alert: the time between.
    async fn one_object(&self, pool: &PgPool, i: usize, timeout: Duration) -> Result<Duration, LatencyBenchError> {
        let user = format!("bench-user-{i}");
        let (key, body) = trail_file(&self.id, &user, i);
        self.s3.put_object().bucket(&self.bucket).key(key).body(body.into()).send().await.map_err(setup_error)?;
        let written = Utc::now();
        let deadline = Instant::now() + timeout;
        loop {
            let raised: Option<DateTime<Utc>> = sqlx::query_scalar(
                "SELECT min(created_at) FROM alerts
                 WHERE account_id = $1 AND policy_id = 'aws-console-login-without-mfa' AND principal LIKE $2",
            )
            .bind(&self.id)
            .bind(format!("%{user}"))
            .fetch_one(pool)
            .await?;
            if let Some(raised) = raised {
                return Ok((raised - written).to_std().unwrap_or_default());
            }
            if Instant::now() > deadline {
                return Err(LatencyBenchError::Setup(format!("no alert for object {i} within {timeout:?}")));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

/// A queue (with a dead-letter queue) that S3 notifies of every object created in `bucket`.
async fn notify_queue(
    owner: &AccountSession,
    s3: &aws_sdk_s3::Client,
    bucket: &str,
    settings: &Settings,
) -> Result<String, LatencyBenchError> {
    let sqs = owner.sqs("us-east-1", &settings.moto_url);
    let created = sqs.create_queue().queue_name(format!("{bucket}-files")).send().await.map_err(setup_error)?;
    let url = created.queue_url.ok_or_else(|| setup_error("CreateQueue returned no URL"))?;
    let attributes = sqs
        .get_queue_attributes()
        .queue_url(&url)
        .attribute_names(QueueAttributeName::QueueArn)
        .send()
        .await
        .map_err(setup_error)?;
    let arn = attributes.attributes.and_then(|mut a| a.remove(&QueueAttributeName::QueueArn));
    let queue = QueueConfiguration::builder()
        .set_queue_arn(arn)
        .events(Event::from("s3:ObjectCreated:*"))
        .build()
        .map_err(setup_error)?;
    let configuration = NotificationConfiguration::builder().queue_configurations(queue).build();
    s3.put_bucket_notification_configuration()
        .bucket(bucket)
        .notification_configuration(configuration)
        .send()
        .await
        .map_err(setup_error)?;
    Ok(url)
}

/// A gzipped trail file with one console login without MFA by `user`.
fn trail_file(account: &str, user: &str, i: usize) -> (String, Vec<u8>) {
    let now = Utc::now();
    let login = json!({
        "eventVersion": "1.09",
        "userIdentity": {"type": "IAMUser", "principalId": format!("AIDA{i}"),
                         "arn": format!("arn:aws:iam::{account}:user/{user}"), "accountId": account, "userName": user},
        "eventTime": now.format("%Y-%m-%dT%H:%M:%SZ").to_string(),
        "eventSource": "signin.amazonaws.com", "eventName": "ConsoleLogin", "awsRegion": "us-east-1",
        "sourceIPAddress": "198.51.100.7", "userAgent": "Mozilla/5.0", "requestParameters": null,
        "responseElements": {"ConsoleLogin": "Success"}, "additionalEventData": {"MFAUsed": "No"},
        "eventID": format!("bench-login-{account}-{i}"), "readOnly": false, "eventType": "AwsConsoleSignIn",
        "managementEvent": true, "recipientAccountId": account, "eventCategory": "Management"
    });
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    std::io::Write::write_all(&mut encoder, json!({"Records": [login]}).to_string().as_bytes())
        .expect("writing to memory");
    let key = format!(
        "AWSLogs/{account}/CloudTrail/us-east-1/{}/{account}_CloudTrail_us-east-1_{}_{i:05}.json.gz",
        now.format("%Y/%m/%d"),
        now.format("%Y%m%dT%H%MZ")
    );
    (key, encoder.finish().expect("gzip in memory"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_take_the_rank_at_or_above() {
        let values: Vec<Duration> = (1..=20).map(Duration::from_secs).collect();
        assert_eq!(percentile(&values, 50), Duration::from_secs(10));
        assert_eq!(percentile(&values, 95), Duration::from_secs(19));
        assert_eq!(percentile(&[], 95), Duration::ZERO);
    }
}
