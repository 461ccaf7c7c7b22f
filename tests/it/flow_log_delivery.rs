//! Flow logs as AWS delivers them, against moto with the real SDK clients: Parquet in
//! Hive-compatible per-hour prefixes (written with pyarrow) in a bucket of another region than
//! the job's, stored once and exactly as the same records in text; a corrupt object retried
//! then shown as failed (`accounts status`, the API, the dashboard) and retried on demand; a large backlog listed in bounded pages; CloudWatch Logs lines in a
//! custom format read with their flow log's `LogFormat`, in the group's own region.
//!
//! A small proxy stands between the pollers and moto, to see the requests and to answer as AWS
//! does where moto does not: a request signed for another region than the bucket's gets a 301
//! PermanentRedirect with `x-amz-bucket-region`.

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};

use serde_json::{Value, json};
use skywarden::accounts::{self, LogSources, NewAccount, PollIntervals};
use skywarden::auth::{self, Role};
use skywarden::aws::{AccountSession, AwsSettings, Service};
use skywarden::db::partitions::PartitionCache;
use skywarden::pollers::worker::{JobReport, Worker};
use skywarden::pollers::{PollContext, PollOptions, Source, jobs, s3_objects};

use crate::api::call;
use crate::support::aws::{self as fake, FakeCloudTrail};
use crate::support::browser::{Browser, artifacts_dir};
use crate::support::{KillOnDrop, TestDb, dashboard};

/// One request the proxy saw.
#[derive(Clone, Debug)]
struct Seen {
    method: String,
    path: String,
    query: HashMap<String, String>,
    signing_region: Option<String>,
    /// `X-Amz-Target` (JSON protocols: CloudWatch Logs).
    target: Option<String>,
    /// Keys a listing answered with.
    keys_listed: Option<usize>,
    status: u16,
}

#[derive(Default)]
struct ProxyState {
    upstream: String,
    bucket_regions: HashMap<String, String>,
    seen: Vec<Seen>,
}

/// Forwards everything to moto, except what AWS would redirect; remembers every request.
#[derive(Clone)]
struct AwsProxy {
    url: String,
    state: Arc<Mutex<ProxyState>>,
}

impl AwsProxy {
    async fn start(upstream: &str) -> Self {
        let state = Arc::new(Mutex::new(ProxyState { upstream: upstream.to_owned(), ..Default::default() }));
        let app = axum::Router::new().fallback(proxy).with_state(state.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await });
        Self { url, state }
    }

    fn bucket_in(&self, bucket: &str, region: &str) {
        self.state.lock().unwrap().bucket_regions.insert(bucket.to_owned(), region.to_owned());
    }

    /// The requests seen on `bucket`'s path, in order.
    fn on_bucket(&self, bucket: &str) -> Vec<Seen> {
        let prefix = format!("/{bucket}");
        let seen = self.state.lock().unwrap().seen.clone();
        seen.into_iter().filter(|s| s.path == prefix || s.path.starts_with(&format!("{prefix}/"))).collect()
    }

    fn seen(&self) -> Vec<Seen> {
        self.state.lock().unwrap().seen.clone()
    }
}

fn signing_region(headers: &HeaderMap) -> Option<String> {
    let authorization = headers.get("authorization")?.to_str().ok()?;
    let credential = authorization.split("Credential=").nth(1)?;
    credential.split('/').nth(2).map(str::to_owned)
}

fn query_map(query: Option<&str>) -> HashMap<String, String> {
    let decode =
        |text: &str| url::form_urlencoded::parse(format!("x={text}").as_bytes()).next().map(|(_, v)| v.into_owned());
    query
        .unwrap_or_default()
        .split('&')
        .filter(|pair| !pair.is_empty())
        .map(|pair| {
            let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
            (name.to_owned(), decode(value).unwrap_or_default())
        })
        .collect()
}

async fn proxy(State(state): State<Arc<Mutex<ProxyState>>>, request: Request) -> Response {
    let (parts, body) = request.into_parts();
    let body = axum::body::to_bytes(body, usize::MAX).await.unwrap_or_default();
    let path = parts.uri.path().to_owned();
    let mut seen = Seen {
        method: parts.method.to_string(),
        path: path.clone(),
        query: query_map(parts.uri.query()),
        signing_region: signing_region(&parts.headers),
        target: parts.headers.get("x-amz-target").and_then(|v| v.to_str().ok()).map(str::to_owned),
        keys_listed: None,
        status: 0,
    };
    let bucket = path.trim_start_matches('/').split('/').next().unwrap_or_default().to_owned();
    let (upstream, home) = {
        let state = state.lock().unwrap();
        (state.upstream.clone(), state.bucket_regions.get(&bucket).cloned())
    };
    let response = match home {
        Some(home) if seen.signing_region.as_deref() != Some(home.as_str()) => redirect(&parts.method, &bucket, &home),
        _ => forward(&upstream, &parts, body).await,
    };
    let (response, body) = response;
    seen.status = response.status.as_u16();
    if seen.query.contains_key("list-type") {
        seen.keys_listed = Some(String::from_utf8_lossy(&body).matches("<Key>").count());
    }
    state.lock().unwrap().seen.push(seen);
    Response::from_parts(response, Body::from(body))
}

/// What S3 answers a request sent to the wrong region.
fn redirect(method: &axum::http::Method, bucket: &str, home: &str) -> (axum::http::response::Parts, Bytes) {
    let body = if method == axum::http::Method::HEAD {
        String::new()
    } else {
        format!(
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><Code>PermanentRedirect</Code><Message>The bucket you \
             are attempting to access must be addressed using the specified endpoint.</Message><Endpoint>{bucket}.s3.\
             {home}.amazonaws.com</Endpoint><Bucket>{bucket}</Bucket><RequestId>proxy</RequestId></Error>"
        )
    };
    let response = (
        StatusCode::MOVED_PERMANENTLY,
        [("x-amz-bucket-region", home.to_owned()), ("content-type", "application/xml".to_owned())],
        body.clone(),
    )
        .into_response();
    (response.into_parts().0, Bytes::from(body))
}

async fn forward(
    upstream: &str,
    parts: &axum::http::request::Parts,
    body: Bytes,
) -> (axum::http::response::Parts, Bytes) {
    use http_body_util::{BodyExt, Full};
    use hyper_util::client::legacy::Client;
    use hyper_util::rt::TokioExecutor;
    let client: Client<_, Full<Bytes>> = Client::builder(TokioExecutor::new()).build_http();
    let uri = format!("{upstream}{}", parts.uri.path_and_query().map(|p| p.as_str()).unwrap_or("/"));
    let mut request = axum::http::Request::builder().method(parts.method.clone()).uri(uri);
    for (name, value) in parts.headers.iter().filter(|(name, _)| *name != axum::http::header::HOST) {
        request = request.header(name, value);
    }
    let response = client.request(request.body(Full::new(body)).unwrap()).await.expect("moto answers");
    let (parts, body) = response.into_parts();
    (parts, body.collect().await.map(|b| b.to_bytes()).unwrap_or_default())
}

// ---------------------------------------------------------------------------------------------
// Set-up

struct Setup {
    db: TestDb,
    ctx: PollContext,
    proxy: AwsProxy,
    account: accounts::Account,
    /// Clients of the account's owner, straight to moto.
    owner: AccountSession,
    _cloudtrail: FakeCloudTrail,
}

/// An onboarded account whose S3 and CloudWatch Logs calls go through the proxy, with only the
/// jobs of `sources` enabled (the others would only slow the test down).
async fn setup(regions: &[&str], sources: LogSources, enabled: &[Source], max_per_run: usize) -> Setup {
    let db = TestDb::new().await;
    let moto = fake::moto_url().await;
    let cloudtrail = FakeCloudTrail::start(moto).await;
    let proxy = AwsProxy::start(moto).await;
    let mut settings: AwsSettings = fake::settings_with_cloudtrail(moto, &cloudtrail.url);
    settings.service_endpoints.insert(Service::S3, proxy.url.clone());
    settings.service_endpoints.insert(Service::Logs, proxy.url.clone());
    let ctx = PollContext {
        pool: db.pool.clone(),
        base: settings.load().await,
        settings,
        options: PollOptions {
            throttle_backoff: Duration::from_millis(20),
            max_pages_per_run: max_per_run,
            ..PollOptions::default()
        },
        geo: None,
        partitions: Arc::new(PartitionCache::default()),
    };
    let account_id = fake::random_account_id();
    let new = NewAccount {
        role_arn: format!("arn:aws:iam::{account_id}:role/SkywardenReadOnly"),
        name: None,
        regions: regions.iter().map(|r| r.to_string()).collect(),
        endpoint_url: None,
        sources,
    };
    let account = accounts::onboard(&db.pool, &new, &PollIntervals::default()).await.expect("onboarding");
    let enabled: Vec<String> = enabled.iter().map(|s| s.as_str().to_owned()).collect();
    sqlx::query("UPDATE poll_jobs SET enabled = source = ANY($2) WHERE account_id = $1")
        .bind(&account_id)
        .bind(&enabled)
        .execute(&db.pool)
        .await
        .unwrap();
    let direct = fake::settings_for(moto);
    let owner = AccountSession::assume(&direct.load().await, &direct, &account.assume_target()).await.unwrap();
    Setup { db, ctx, proxy, account, owner, _cloudtrail: cloudtrail }
}

impl Setup {
    fn id(&self) -> &str {
        &self.account.account_id
    }

    async fn create_bucket(&self, bucket: &str, region: &str) {
        use aws_sdk_s3::types::{BucketLocationConstraint, CreateBucketConfiguration};
        let mut create = self.owner.s3(region).create_bucket().bucket(bucket);
        if region != "us-east-1" {
            let location = CreateBucketConfiguration::builder()
                .location_constraint(BucketLocationConstraint::from(region))
                .build();
            create = create.create_bucket_configuration(location);
        }
        create.send().await.unwrap();
        self.proxy.bucket_in(bucket, region);
    }

    async fn put(&self, bucket: &str, region: &str, key: &str, body: Vec<u8>) {
        self.owner.s3(region).put_object().bucket(bucket).key(key).body(body.into()).send().await.unwrap();
    }

    /// Runs the due jobs (all of them, made due) and returns the reports of `source`'s.
    async fn poll(&self, source: Source) -> Vec<JobReport> {
        jobs::run_now(&self.db.pool, self.id(), None).await.unwrap();
        let reports = Worker::new(self.ctx.clone(), "worker-a", None).run_once().await.unwrap();
        reports.into_iter().filter(|r| r.source == source.as_str()).collect()
    }

    async fn flows(&self) -> i64 {
        self.db.count(&format!("SELECT count(*) FROM flow_records WHERE account_id = '{}'", self.id())).await
    }
}

fn no_errors(reports: &[JobReport]) {
    assert!(!reports.is_empty(), "the job ran");
    assert!(reports.iter().all(|r| r.error.is_none()), "{reports:?}");
}

// ---------------------------------------------------------------------------------------------
// Flow log records and files

/// The flow log fields of versions 2 to 5 as S3 text files name them, and one newer field.
const FIELDS: &str = "version account-id interface-id srcaddr dstaddr srcport dstport protocol packets bytes start end \
    action log-status vpc-id subnet-id instance-id tcp-flags type pkt-srcaddr pkt-dstaddr region az-id sublocation-type \
    sublocation-id pkt-src-aws-service pkt-dst-aws-service flow-direction traffic-path reject-reason";

/// `count` records as text lines (in FIELDS order) starting at `start`, some with no data.
fn records(account: &str, start: DateTime<Utc>, first: usize, count: usize) -> Vec<String> {
    (first..first + count)
        .map(|i| {
            let (begin, end) = (start.timestamp() + i as i64, start.timestamp() + 60 + i as i64);
            if i % 5 == 4 {
                format!("5 {account} eni-{i:04} - - - - - - - {begin} {end} - NODATA vpc-1 subnet-1 - - - - - us-east-1 use1-az1 - - - - - - -")
            } else {
                let (port, reject) = (40_000 + i, if i % 3 == 0 { "BPA" } else { "-" });
                format!(
                    "5 {account} eni-{i:04} 10.0.1.{} 198.51.100.{} {port} 443 6 {} {} {begin} {end} ACCEPT OK vpc-1 \
                     subnet-1 i-0abc{i:04} 19 IPv4 10.0.1.{} 52.94.0.{} us-east-1 use1-az1 - - - S3 egress 8 {reject}",
                    i % 250,
                    i % 200,
                    10 + i,
                    1000 * (i + 1),
                    i % 250,
                    i % 200
                )
            }
        })
        .collect()
}

fn python() -> String {
    std::env::var("SKYWARDEN_TEST_PYARROW_PYTHON")
        .unwrap_or_else(|_| concat!(env!("CARGO_MANIFEST_DIR"), "/.cache/test-venv/bin/python").to_owned())
}

/// Writes the records as AWS's Parquet flow log files: one column per field, named with
/// underscores, integers as INT32/INT64, GZIP-compressed.
const WRITE_PARQUET: &str = r#"
import json, sys
import pyarrow as pa, pyarrow.parquet as pq
spec = json.load(sys.stdin)
int32 = {"version", "srcport", "dstport", "protocol", "tcp-flags", "traffic-path"}
int64 = {"packets", "bytes", "start", "end"}
columns = {}
for i, name in enumerate(spec["fields"]):
    values = [None if row[i] == "-" else row[i] for row in spec["rows"]]
    if name in int32 or name in int64:
        kind = pa.int32() if name in int32 else pa.int64()
        columns[name.replace("-", "_")] = pa.array([None if v is None else int(v) for v in values], type=kind)
    else:
        columns[name.replace("-", "_")] = pa.array(values, type=pa.string())
pq.write_table(pa.table(columns), spec["path"], compression="gzip")
"#;

fn parquet(dir: &Path, name: &str, lines: &[String]) -> Vec<u8> {
    let path = dir.join(name);
    let rows: Vec<Vec<&str>> = lines.iter().map(|l| l.split(' ').collect()).collect();
    let fields: Vec<&str> = FIELDS.split_whitespace().collect();
    let spec = serde_json::json!({"path": path, "fields": fields, "rows": rows});
    let mut child = std::process::Command::new(python())
        .args(["-c", WRITE_PARQUET])
        .stdin(std::process::Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {} (make test-tools installs pyarrow): {e}", python()));
    std::io::Write::write_all(child.stdin.as_mut().unwrap(), spec.to_string().as_bytes()).unwrap();
    drop(child.stdin.take());
    assert!(child.wait().unwrap().success(), "pyarrow could not write {name}");
    std::fs::read(&path).unwrap()
}

/// A text flow log file as S3 delivery writes it: a header line, then the records, gzipped.
fn text_file(lines: &[String]) -> Vec<u8> {
    let text = format!("{}\n{}\n", FIELDS.split_whitespace().collect::<Vec<_>>().join(" "), lines.join("\n"));
    let mut gzip = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    std::io::Write::write_all(&mut gzip, text.as_bytes()).unwrap();
    gzip.finish().unwrap()
}

/// Every stored flow record of `account`, every column but the derived countries, in order.
async fn stored_rows(db: &TestDb, account: &str) -> Vec<String> {
    let columns = "record_hash, account_id, bucket_time, version, interface_id, srcaddr, dstaddr, \
        srcport, dstport, protocol, packets, bytes, start_time, end_time, action, log_status, vpc_id, subnet_id, \
        instance_id, tcp_flags, traffic_type, pkt_srcaddr, pkt_dstaddr, region, az_id, flow_direction, traffic_path, \
        pkt_src_aws_service, pkt_dst_aws_service, extra";
    let row =
        columns.split(", ").map(|c| format!("coalesce(({c})::text, '∅')")).collect::<Vec<_>>().join(" || '|' || ");
    let sql = format!("SELECT {row} FROM flow_records WHERE account_id = $1 ORDER BY 1");
    sqlx::query_scalar::<_, String>(&sql).bind(account).fetch_all(&db.pool).await.unwrap()
}

fn hive_prefix(account: &str, region: &str) -> String {
    format!("AWSLogs/aws-account-id={account}/aws-service=vpcflowlogs/aws-region={region}/")
}

fn hive_key(account: &str, at: DateTime<Utc>, name: &str) -> String {
    format!(
        "{}{}/{account}_vpcflowlogs_us-east-1_fl-0123456789abcdef0_{}_{name}.log.parquet",
        hive_prefix(account, "us-east-1"),
        at.format("year=%Y/month=%m/day=%d/hour=%H"),
        at.format("%Y%m%dT%H%MZ")
    )
}

// ---------------------------------------------------------------------------------------------
// Tests

#[tokio::test]
async fn parquet_flow_logs_in_hive_prefixes_of_a_bucket_elsewhere_are_stored_once_as_their_text() {
    let bucket_sources = |bucket: &str| LogSources { flow_bucket: Some(bucket.to_owned()), ..Default::default() };
    let probe = fake::random_account_id();
    let bucket = format!("flows-{probe}");
    let s = setup(&["us-east-1"], bucket_sources(&bucket), &[Source::FlowLogsS3], 200).await;
    let (id, dir) = (s.id().to_owned(), tempfile::tempdir().unwrap());
    s.create_bucket(&bucket, "eu-west-1").await;
    let now = Utc::now();
    let (hour_ago, old) = (now - chrono::Duration::hours(1), now - chrono::Duration::days(10));
    let batches = [records(&id, hour_ago, 0, 6), records(&id, now, 6, 7), records(&id, old, 13, 3)];
    s.put(&bucket, "eu-west-1", &hive_key(&id, hour_ago, "a"), parquet(dir.path(), "a.parquet", &batches[0])).await;
    s.put(&bucket, "eu-west-1", &hive_key(&id, now, "b"), parquet(dir.path(), "b.parquet", &batches[1])).await;
    s.put(&bucket, "eu-west-1", &hive_key(&id, old, "old"), parquet(dir.path(), "old.parquet", &batches[2])).await;
    // The classic layout of the same flow logs is read by the same job.
    let classic = records(&id, now, 20, 4);
    let classic_key = format!(
        "AWSLogs/{id}/vpcflowlogs/us-east-1/{}/{id}_vpcflowlogs_us-east-1_fl-1_{}_c.log.gz",
        now.format("%Y/%m/%d"),
        now.format("%Y%m%dT%H%MZ")
    );
    s.put(&bucket, "eu-west-1", &classic_key, text_file(&classic)).await;

    no_errors(&s.poll(Source::FlowLogsS3).await);
    assert_eq!(s.flows().await, 6 + 7 + 4, "every record within the lookback window, once");

    // The bucket's region was found once, from the redirect; every other request went there.
    let requests = s.proxy.on_bucket(&bucket);
    let heads: Vec<&Seen> = requests.iter().filter(|r| r.method == "HEAD").collect();
    assert_eq!(heads.len(), 1, "{heads:?}");
    assert_eq!((heads[0].status, heads[0].signing_region.as_deref()), (301, Some("us-east-1")));
    assert!(requests.iter().filter(|r| r.method != "HEAD").all(|r| r.status == 200), "{requests:?}");
    let listings: Vec<&Seen> = requests.iter().filter(|r| r.keys_listed.is_some()).collect();
    let hive_listing = listings.iter().find(|r| r.query["prefix"] == hive_prefix(&id, "us-east-1")).unwrap();
    let week_ago = (now - chrono::Duration::days(7)).format("year=%Y/month=%m/day=%d");
    assert_eq!(hive_listing.query["start-after"], format!("{}{week_ago}", hive_prefix(&id, "us-east-1")));

    // The same records imported as text: the same rows, the same identities.
    let text_dir = tempfile::tempdir().unwrap();
    let text_path = text_dir.path().join("as-text.log.gz");
    std::fs::write(&text_path, text_file(&[batches[0].clone(), batches[1].clone(), classic].concat())).unwrap();
    let text_db = TestDb::new().await;
    let (code, summary) = text_db.import_json(&[&text_path]);
    assert_eq!((code, summary["flow_records"].as_i64()), (0, Some(17)), "{summary}");
    let (from_s3, from_text) = (stored_rows(&s.db, &id).await, stored_rows(&text_db, &id).await);
    assert_eq!(from_s3, from_text);
    assert!(from_s3.iter().any(|r| r.contains(r#"{"reject-reason": "BPA"}"#)), "unknown fields kept: {from_s3:?}");
    assert!(from_s3.iter().any(|r| r.contains("|egress|8|∅|S3|")), "v5 fields: {from_s3:?}");
    // `skywarden import` reads the Parquet files too, as the same records.
    let parquet_files = [dir.path().join("a.parquet"), dir.path().join("b.parquet")];
    let (code, summary) = text_db.import_json(&[&parquet_files[0], &parquet_files[1]]);
    assert_eq!((code, summary["flow_records"].as_i64(), summary["duplicates"].as_i64()), (0, Some(0), Some(13)));
    // And imported into the poller's database, the text adds nothing.
    let (_, again) = s.db.import_json(&[&text_path]);
    assert_eq!((again["flow_records"].as_i64(), again["duplicates"].as_i64()), (Some(0), Some(17)), "{again}");

    // A second run reads nothing again, and asks for the region no more.
    let before = s.proxy.on_bucket(&bucket).len();
    no_errors(&s.poll(Source::FlowLogsS3).await);
    let later = &s.proxy.on_bucket(&bucket)[before..];
    assert!(later.iter().all(|r| r.method == "GET" && r.keys_listed.is_some()), "only listings: {later:?}");
    assert_eq!(s.flows().await, 17);
}

#[tokio::test]
async fn a_corrupt_parquet_object_is_retried_then_shown_as_failed_while_the_good_ones_are_stored() {
    let probe = fake::random_account_id();
    let bucket = format!("flows-{probe}");
    let sources = LogSources { flow_bucket: Some(bucket.clone()), ..Default::default() };
    let s = setup(&["us-east-1"], sources, &[Source::FlowLogsS3], 200).await;
    let (id, dir) = (s.id().to_owned(), tempfile::tempdir().unwrap());
    s.create_bucket(&bucket, "us-east-1").await;
    let now = Utc::now();
    let good = parquet(dir.path(), "good.parquet", &records(&id, now, 0, 5));
    let corrupt_key = hive_key(&id, now, "corrupt");
    s.put(&bucket, "us-east-1", &hive_key(&id, now, "good"), good.clone()).await;
    s.put(&bucket, "us-east-1", &corrupt_key, good[..good.len() / 2].to_vec()).await;

    no_errors(&s.poll(Source::FlowLogsS3).await);
    assert_eq!(s.flows().await, 5, "the good object is stored");
    let gets = |s: &Setup| {
        s.proxy
            .on_bucket(&bucket)
            .iter()
            .filter(|r| r.method == "GET" && r.path.ends_with("_corrupt.log.parquet"))
            .count()
    };
    assert_eq!(gets(&s), 1);
    let (_, viewer) = auth::create(&s.db.pool, "wall-screen", Role::Viewer).await.unwrap();
    let status_uri = format!("/api/v1/accounts/{id}/status");
    let flow_job = |statuses: &Value| {
        let job = statuses.as_array().unwrap().iter().find(|j| j["source"] == "flowlogs-s3").cloned();
        job.unwrap_or_else(|| panic!("the flow log job: {statuses}"))
    };
    let (_, statuses) = call(&s.db, "GET", &status_uri, Some(&viewer), None).await;
    let job = flow_job(&statuses);
    assert_eq!((job["objects_failed"].as_i64(), job["objects_retrying"].as_i64()), (Some(0), Some(1)), "{job}");
    for attempt in 2..=5 {
        // Time passes: the back-off is over.
        sqlx::query("UPDATE s3_object_failures SET next_attempt_at = now() WHERE next_attempt_at IS NOT NULL")
            .execute(&s.db.pool)
            .await
            .unwrap();
        no_errors(&s.poll(Source::FlowLogsS3).await);
        assert_eq!(gets(&s), attempt, "tried again after its back-off");
    }
    let failed = s3_objects::failed_objects(&s.db.pool, Some(&id), 10).await.unwrap();
    assert_eq!(failed.len(), 1, "{failed:?}");
    assert_eq!((failed[0].key.as_str(), failed[0].attempts), (corrupt_key.as_str(), 5));
    assert_eq!(failed[0].next_attempt_at, None, "given up");
    assert!(failed[0].last_error.contains("not a readable Parquet file"), "{}", failed[0].last_error);
    assert_eq!(failed[0].source, "flowlogs-s3");
    let counts = s3_objects::failure_counts(&s.db.pool).await.unwrap();
    assert_eq!(counts, vec![(id.clone(), "flowlogs-s3".to_owned(), 0, 1)]);
    let marked = format!("SELECT count(*) FROM ingested_objects WHERE object_key = '{corrupt_key}'");
    assert_eq!(s.db.count(&marked).await, 0, "never recorded as read");

    // Given up: not tried again, and the rest goes on.
    no_errors(&s.poll(Source::FlowLogsS3).await);
    assert_eq!(gets(&s), 5);
    assert_eq!(s.flows().await, 5);

    // Shown as failed: `accounts status`, in JSON and in words, under the job.
    let object = format!("s3://{bucket}/{corrupt_key}");
    let output = s.db.skywarden(&["accounts", "status", &id, "--json"]);
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let lines: Vec<Value> =
        String::from_utf8_lossy(&output.stdout).lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    let job = flow_job(&Value::Array(lines));
    assert_failed_once(&job, &object, 5);
    let output = s.db.skywarden(&["accounts", "status", &id]);
    let text = String::from_utf8_lossy(&output.stdout).into_owned();
    let line = format!("\n    1 object failed after 5 tries; newest: {object}: not a readable Parquet file");
    assert!(text.contains(&line) && text.matches(&object).count() == 1, "{text}");
    let job_line = text.lines().position(|l| l.contains("flowlogs-s3")).unwrap();
    assert!(text.lines().nth(job_line + 1).unwrap().contains("1 object failed"), "under its job: {text}");

    // The API: the job's status and the account's failed objects, bounded, for token holders.
    let (status, statuses) = call(&s.db, "GET", &status_uri, Some(&viewer), None).await;
    assert_eq!(status, StatusCode::OK, "{statuses}");
    assert_failed_once(&flow_job(&statuses), &object, 5);
    let failed_uri = format!("/api/v1/accounts/{id}/failed-objects");
    let (status, listed) = call(&s.db, "GET", &failed_uri, Some(&viewer), None).await;
    assert_eq!(status, StatusCode::OK, "{listed}");
    assert_eq!(listed.as_array().unwrap().len(), 1, "{listed}");
    let listed = &listed[0];
    assert_eq!(
        (listed["bucket"].as_str(), listed["key"].as_str()),
        (Some(bucket.as_str()), Some(corrupt_key.as_str()))
    );
    assert_eq!((listed["attempts"].as_i64(), listed["next_attempt_at"].clone()), (Some(5), Value::Null), "{listed}");
    assert!(listed["last_error"].as_str().unwrap().contains("not a readable Parquet file"), "{listed}");
    for uri in [&failed_uri, &status_uri] {
        assert_eq!(call(&s.db, "GET", uri, None, None).await.0, StatusCode::UNAUTHORIZED, "{uri}");
    }
    for (query, field) in [("limit=0", "limit"), ("limit=1001", "limit"), ("state=dead", "query")] {
        let (status, body) = call(&s.db, "GET", &format!("{failed_uri}?{query}"), Some(&viewer), None).await;
        assert_eq!((status, body["field"].as_str()), (StatusCode::BAD_REQUEST, Some(field)), "{query}: {body}");
    }
    let missing = "/api/v1/accounts/999999999999/failed-objects";
    assert_eq!(call(&s.db, "GET", missing, Some(&viewer), None).await.0, StatusCode::NOT_FOUND);

    // "Retry": analysts give a given-up object one more try, audit-logged.
    let (analyst_id, analyst) = auth::create(&s.db.pool, "tier-1", Role::Analyst).await.unwrap();
    let retry_uri = format!("{failed_uri}/retry");
    let this_one = json!({"bucket": bucket, "key": corrupt_key});
    assert_eq!(call(&s.db, "POST", &retry_uri, None, None).await.0, StatusCode::UNAUTHORIZED);
    let (status, _) = call(&s.db, "POST", &retry_uri, Some(&viewer), Some(this_one.clone())).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, body) = call(&s.db, "POST", &retry_uri, Some(&analyst), Some(json!({"key": corrupt_key}))).await;
    assert_eq!((status, body["field"].as_str()), (StatusCode::BAD_REQUEST, Some("bucket")), "{body}");
    let other = json!({"bucket": bucket, "key": "AWSLogs/not-failed.log.gz"});
    assert_eq!(call(&s.db, "POST", &retry_uri, Some(&analyst), Some(other)).await.0, StatusCode::NOT_FOUND);
    let (status, body) = call(&s.db, "POST", &retry_uri, Some(&analyst), Some(this_one)).await;
    assert_eq!((status, body["objects"].as_u64()), (StatusCode::OK, Some(1)), "{body}");
    let log = auth::audit::list(&s.db.pool, None, Some("account.retry_failed_objects"), 10).await.unwrap();
    assert_eq!(log.len(), 1, "{log:?}");
    let actor = format!("token:{analyst_id}");
    assert_eq!((log[0].actor.as_str(), log[0].target.as_deref()), (actor.as_str(), Some(id.as_str())));
    let (_, statuses) = call(&s.db, "GET", &status_uri, Some(&viewer), None).await;
    let job = flow_job(&statuses);
    assert_eq!((job["objects_failed"].as_i64(), job["objects_retrying"].as_i64()), (Some(0), Some(1)), "{job}");
    assert!(job["run_requested_at"].is_string(), "its job is made due: {job}");
    // One more try, still corrupt: given up again, its tries counted on.
    let reports = Worker::new(s.ctx.clone(), "worker-a", None).run_once().await.unwrap();
    no_errors(&reports.into_iter().filter(|r| r.source == "flowlogs-s3").collect::<Vec<_>>());
    assert_eq!(gets(&s), 6);
    let (_, statuses) = call(&s.db, "GET", &status_uri, Some(&viewer), None).await;
    assert_failed_once(&flow_job(&statuses), &object, 6);

    // The dashboard shows it under the account, with its error; analysts retry it there.
    let dashboard = Dashboard::start(&s.db).await;
    dashboard.sign_in(&s.db, "vic", "viewer").await;
    let browser = &dashboard.browser;
    let jobs_table = format!("div[data-account='{id}'] .jobs table");
    let jobs = browser.wait_for_text(&jobs_table, "1 object failed after 6 tries").await;
    let newest = format!("newest: {object}: not a readable Parquet file");
    assert!(jobs.contains(&newest) && jobs.matches(&object).count() == 1, "{jobs}");
    let listed = browser.text(&format!(".failed-objects[data-account='{id}'] table")).await;
    assert!(listed.contains(&object) && listed.contains("given up"), "{listed}");
    assert!(listed.contains("not a readable Parquet file") && listed.matches(&object).count() == 1, "{listed}");
    assert_eq!(browser.count(&format!("div[data-account='{id}'] .objects-not-read.error")).await, 1, "as an error");
    assert_eq!(browser.count("button.retry-object").await, 0, "viewers cannot retry");
    browser.screenshot("accounts-failed-object").await;
    dashboard.sign_in(&s.db, "ana", "analyst").await;
    browser.click(&format!("button.retry-object[data-key='{corrupt_key}']")).await;
    browser.wait_for_text(&jobs_table, "1 object retrying").await;
    let log = auth::audit::list(&s.db.pool, None, Some("account.retry_failed_objects"), 10).await.unwrap();
    assert!(log.len() == 2 && log[0].actor.contains("ana"), "{log:?}");
}

/// The given-up object's tries, as the job's status names them.
fn assert_failed_once(job: &Value, object: &str, tries: i64) {
    assert_eq!((job["objects_failed"].as_i64(), job["objects_retrying"].as_i64()), (Some(1), Some(0)), "{job}");
    assert_eq!(job["objects_failed_tries"].as_i64(), Some(tries), "{job}");
    assert_eq!(job["newest_failure_object"].as_str(), Some(object), "{job}");
    assert!(job["newest_failure_error"].as_str().unwrap().contains("not a readable Parquet file"), "{job}");
    assert!(job["newest_failure_at"].is_string(), "{job}");
}

/// `skywarden serve` over a test database (no pollers), and a browser on it.
struct Dashboard {
    browser: Browser,
    base: String,
    _server: KillOnDrop,
    _dir: tempfile::TempDir,
}

impl Dashboard {
    async fn start(db: &TestDb) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let (server, base) = dashboard::serve(db, |serve| {
            serve.arg("--no-pollers").env("SKYWARDEN_SECRET_KEY_FILE", dir.path().join("secret.key"));
        })
        .await;
        let browser = Browser::start(artifacts_dir("flow-log-delivery")).await;
        Self { browser, base, _server: server, _dir: dir }
    }

    /// Creates the user, signs in as them and opens the accounts page.
    async fn sign_in(&self, db: &TestDb, user: &str, role: &str) {
        dashboard::add_user(db, user, role);
        dashboard::sign_in(&self.browser, &self.base, user).await;
        self.browser.wait_for_text("main h1", "Overview").await;
        self.browser.goto(&format!("{}/#/accounts", self.base)).await;
    }
}

#[tokio::test]
async fn a_large_backlog_is_listed_in_bounded_pages_from_the_lookback_window() {
    const OBJECTS: usize = 95;
    let probe = fake::random_account_id();
    let bucket = format!("flows-{probe}");
    let sources = LogSources { flow_bucket: Some(bucket.clone()), ..Default::default() };
    // Ten objects a run: pages of ten keys.
    let s = setup(&["us-east-1"], sources, &[Source::FlowLogsS3], 10).await;
    let id = s.id().to_owned();
    s.create_bucket(&bucket, "us-east-1").await;
    let prefix = format!("AWSLogs/{id}/vpcflowlogs/us-east-1/");
    let now = Utc::now();
    let puts = (0..OBJECTS + 5).map(|i| {
        // The first five are older than the lookback window.
        let at = if i < 5 { now - chrono::Duration::days(12) } else { now - chrono::Duration::minutes(i as i64) };
        let key = format!(
            "{prefix}{}/{id}_vpcflowlogs_us-east-1_fl-1_{}_{i:03}.log.gz",
            at.format("%Y/%m/%d"),
            at.format("%Y%m%dT%H%MZ")
        );
        let body = text_file(&records(&id, at, i, 1));
        let s = &s;
        let bucket = bucket.clone();
        async move { s.put(&bucket, "us-east-1", &key, body).await }
    });
    futures_util::future::join_all(puts).await;

    no_errors(&s.poll(Source::FlowLogsS3).await);
    assert_eq!(s.flows().await, OBJECTS as i64);
    let listed = |s: &Setup| -> Vec<Seen> {
        s.proxy
            .on_bucket(&bucket)
            .into_iter()
            .filter(|r| r.keys_listed.is_some() && r.query["prefix"] == prefix)
            .collect()
    };
    let first = listed(&s);
    assert!(first.iter().all(|r| r.query["max-keys"] == "10"), "{first:?}");
    assert!(first.iter().all(|r| r.query.contains_key("start-after")), "never from the start of the bucket");
    assert_eq!(first.len(), OBJECTS.div_ceil(10), "one page a run: {first:?}");
    let keys: usize = first.iter().map(|r| r.keys_listed.unwrap()).sum();
    assert_eq!(keys, OBJECTS, "each key listed once, the old ones never");
    assert_eq!(s.db.count("SELECT count(*) FROM ingested_objects").await, OBJECTS as i64);

    // Later runs list again from the day before the newest key, still a page at a time, and
    // read nothing twice.
    no_errors(&s.poll(Source::FlowLogsS3).await);
    let second = &listed(&s)[first.len()..];
    assert!(second.iter().all(|r| r.query["max-keys"] == "10" && r.keys_listed.unwrap() <= 10), "{second:?}");
    let gets = s.proxy.on_bucket(&bucket).iter().filter(|r| r.method == "GET" && r.keys_listed.is_none()).count();
    assert_eq!(gets, OBJECTS, "no object read twice");
    assert_eq!(s.flows().await, OBJECTS as i64);
}

#[tokio::test]
async fn cloudwatch_flow_logs_in_a_custom_format_are_read_with_their_log_format_in_their_region() {
    const FORMAT: &str = "${interface-id} ${srcaddr} ${dstaddr} ${srcport} ${dstport} ${protocol} ${packets} ${bytes} \
        ${start} ${end} ${action} ${tcp-flags} ${flow-direction}";
    let group = "custom-flows";
    let sources = LogSources { flow_log_groups: vec![group.into()], ..Default::default() };
    let s = setup(&["us-east-1", "eu-west-1"], sources, &[Source::FlowLogsCloudWatch], 200).await;
    let id = s.id().to_owned();
    let (logs, ec2) = (s.owner.logs("eu-west-1"), s.owner.ec2("eu-west-1"));
    logs.create_log_group().log_group_name(group).send().await.unwrap();
    logs.create_log_stream().log_group_name(group).log_stream_name("eni-1-all").send().await.unwrap();
    let vpc = ec2.create_vpc().cidr_block("10.9.0.0/16").send().await.unwrap().vpc.unwrap().vpc_id.unwrap();
    ec2.create_flow_logs()
        .resource_type(aws_sdk_ec2::types::FlowLogsResourceType::Vpc)
        .resource_ids(vpc)
        .traffic_type(aws_sdk_ec2::types::TrafficType::All)
        .log_destination_type(aws_sdk_ec2::types::LogDestinationType::CloudWatchLogs)
        .log_group_name(group)
        .deliver_logs_permission_arn(format!("arn:aws:iam::{id}:role/flow-logs"))
        .log_format(FORMAT)
        .send()
        .await
        .unwrap();
    let now = Utc::now();
    let lines: Vec<String> = (0..4)
        .map(|i| {
            let (start, end) = (now.timestamp() - 120, now.timestamp() - 60);
            format!(
                "eni-1 10.9.0.{i} 203.0.113.{i} 5000{i} 443 6 {} {} {start} {end} ACCEPT 19 egress",
                10 + i,
                900 * (i + 1)
            )
        })
        .collect();
    let events = lines.iter().map(|line| {
        aws_sdk_cloudwatchlogs::types::InputLogEvent::builder()
            .timestamp(now.timestamp_millis() - 60_000)
            .message(line)
            .build()
            .unwrap()
    });
    logs.put_log_events()
        .log_group_name(group)
        .log_stream_name("eni-1-all")
        .set_log_events(Some(events.collect()))
        .send()
        .await
        .unwrap();

    // Before the snapshot has seen the flow log, its lines are of unknown layout: they wait
    // rather than being stored as errors. The group is not known in us-east-1 yet either.
    let first = s.poll(Source::FlowLogsCloudWatch).await;
    assert_eq!(s.flows().await, 0);
    fn in_region<'r>(reports: &'r [JobReport], region: &str) -> &'r JobReport {
        reports.iter().find(|r| r.region == region).unwrap()
    }
    let waiting = in_region(&first, "eu-west-1");
    assert_eq!((waiting.error.as_deref(), waiting.outcome.as_ref().map(|o| o.stored)), (None, Some(0)));
    let unknown = in_region(&first, "us-east-1").error.as_deref().unwrap_or_default();
    assert!(unknown.contains("ResourceNotFoundException"), "{unknown}");
    let only = |sources: &'static [&'static str]| {
        sqlx::query("UPDATE poll_jobs SET enabled = source = ANY($2) WHERE account_id = $1")
            .bind(id.clone())
            .bind(sources)
    };
    only(&["config-snapshot"]).execute(&s.db.pool).await.unwrap();
    no_errors(&s.poll(Source::ConfigSnapshot).await);
    only(&["flowlogs-cloudwatch"]).execute(&s.db.pool).await.unwrap();
    let before = s.proxy.seen().len();
    let reports = s.poll(Source::FlowLogsCloudWatch).await;
    no_errors(&reports);
    assert_eq!(s.flows().await, 4);
    let format = skywarden::ingest::flowlogs::FlowFormat::parse(FORMAT).unwrap();
    for line in &lines {
        let record = skywarden::ingest::flowlogs::FlowRecord::parse(line, &format).unwrap();
        let sql = format!(
            "SELECT count(*) FROM flow_records WHERE record_hash = '\\x{}' AND account_id = '{id}' AND tcp_flags = 19 \
             AND flow_direction = 'egress' AND dstport = 443",
            record.hash.iter().map(|b| format!("{b:02x}")).collect::<String>()
        );
        assert_eq!(s.db.count(&sql).await, 1, "{line}");
    }
    // The group lives in eu-west-1: the us-east-1 job does not ask for it.
    let filters: Vec<Seen> = s.proxy.seen()[before..]
        .iter()
        .filter(|r| r.target.as_deref().is_some_and(|t| t.ends_with("FilterLogEvents")))
        .cloned()
        .collect();
    assert!(
        !filters.is_empty() && filters.iter().all(|r| r.signing_region.as_deref() == Some("eu-west-1")),
        "{filters:?}"
    );
    assert_eq!(in_region(&reports, "us-east-1").outcome.as_ref().map(|o| o.stored), Some(0));
}
