//! AWS without AWS: a moto server (PyPI `moto[server]`) for the services it emulates, and small
//! protocol-faithful fakes for what it cannot do: CloudTrail LookupEvents (moto answers 500),
//! an STS that refuses AssumeRole the way AWS does (moto never checks trust policies or
//! external IDs), and EC2 DescribeRegions with an account's own opt-in regions (moto lists the
//! same regions for every account, ignores `AllRegions`, never says `opted-in` and cannot
//! fail). The real `aws-sdk-*` clients talk to all of them over loopback. docs/aws.md lists
//! what these fakes stand in for.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Bytes;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use serde_json::{Value, json};
use tokio::sync::OnceCell;

use skywarden::aws::{AwsSettings, Service};

static MOTO: OnceCell<String> = OnceCell::const_new();

/// The moto server's URL: `SKYWARDEN_TEST_MOTO_URL` when `make test` started one, else one this
/// test process starts (and that stops when the process ends).
pub async fn moto_url() -> &'static str {
    MOTO.get_or_init(|| async {
        if let Ok(url) = std::env::var("SKYWARDEN_TEST_MOTO_URL") {
            wait_for_port(&url).await;
            return url;
        }
        let binary = std::env::var("SKYWARDEN_TEST_MOTO_BIN").unwrap_or_else(|_| "moto_server".into());
        let port = free_port();
        // A shell watches this test process and stops moto when it is gone. AWS's managed
        // policies loaded, as `make test` starts it: quarantine attaches `AWSDenyAll`.
        let script = r#"
            MOTO_IAM_LOAD_MANAGED_POLICIES=true "$1" -H 127.0.0.1 -p "$2" >/dev/null 2>&1 & moto=$!
            while kill -0 "$3" 2>/dev/null && kill -0 "$moto" 2>/dev/null; do sleep 1; done
            kill "$moto" 2>/dev/null"#;
        let mut watcher = Command::new("sh")
            .args(["-c", script, "sh", &binary, &port.to_string(), &std::process::id().to_string()])
            .stdin(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {binary} (install it with `pip install 'moto[server]'`): {e}"));
        // Reaped when it ends (with moto), so it leaves no zombie behind.
        std::thread::spawn(move || watcher.wait());
        let url = format!("http://127.0.0.1:{port}");
        wait_for_port(&url).await;
        url
    })
    .await
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map(|a| a.port()).expect("a free port")
}

async fn wait_for_port(url: &str) {
    let address = url.trim_start_matches("http://").trim_end_matches('/').to_owned();
    let deadline = Instant::now() + Duration::from_secs(60);
    while tokio::net::TcpStream::connect(&address).await.is_err() {
        assert!(
            Instant::now() < deadline,
            "moto server at {url} did not start within 60 s (is `moto_server` installed?)"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A fresh random account id, so tests sharing one moto server never see each other's state.
pub fn random_account_id() -> String {
    let mut bytes = [0u8; 8];
    getrandom::fill(&mut bytes).expect("random bytes");
    format!("{:012}", u64::from_le_bytes(bytes) % 900_000_000_000 + 100_000_000_000)
}

/// Settings that point every service at `url`, with static test credentials.
pub fn settings_for(url: &str) -> AwsSettings {
    AwsSettings {
        endpoint_url: Some(url.to_owned()),
        static_credentials: Some(aws_credential_types::Credentials::new(
            "AKIDSKYWARDENTEST",
            "secret",
            None,
            None,
            "test",
        )),
        ..Default::default()
    }
}

/// Like `settings_for(moto)`, with CloudTrail sent to `cloudtrail`.
pub fn settings_with_cloudtrail(moto: &str, cloudtrail: &str) -> AwsSettings {
    let mut settings = settings_for(moto);
    settings.service_endpoints.insert(Service::CloudTrail, cloudtrail.to_owned());
    settings
}

/// Like `settings_with_cloudtrail`, with EC2 sent to `ec2` too.
pub fn settings_with_fakes(moto: &str, cloudtrail: &str, ec2: &str) -> AwsSettings {
    let mut settings = settings_with_cloudtrail(moto, cloudtrail);
    settings.service_endpoints.insert(Service::Ec2, ec2.to_owned());
    settings
}

/// The region a SigV4-signed request was signed for (its credential scope), as AWS routes it.
fn signed_region(headers: &HeaderMap) -> Option<String> {
    let authorization = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let credential = authorization.split("Credential=").nth(1)?.split(',').next()?;
    credential.split('/').nth(2).map(str::to_owned)
}

/// Environment for a `skywarden` subprocess that talks to `url`.
pub fn aws_env(url: &str) -> Vec<(&'static str, String)> {
    vec![
        ("SKYWARDEN_AWS_ENDPOINT_URL", url.to_owned()),
        ("AWS_ACCESS_KEY_ID", "AKIDSKYWARDENTEST".into()),
        ("AWS_SECRET_ACCESS_KEY", "secret".into()),
        ("AWS_REGION", "us-east-1".into()),
        ("AWS_EC2_METADATA_DISABLED", "true".into()),
        ("AWS_CONFIG_FILE", "/dev/null".into()),
        ("AWS_SHARED_CREDENTIALS_FILE", "/dev/null".into()),
    ]
}

/// A CloudTrail event as CloudTrail writes it.
pub fn cloudtrail_event(
    account: &str,
    id: &str,
    time: chrono::DateTime<chrono::Utc>,
    name: &str,
    request: Value,
) -> Value {
    json!({
        "eventVersion": "1.08",
        "userIdentity": {"type": "IAMUser", "principalId": "AIDAEXAMPLE", "arn": format!("arn:aws:iam::{account}:user/alice"),
                          "accountId": account, "userName": "alice"},
        "eventTime": time.format("%Y-%m-%dT%H:%M:%SZ").to_string(),
        "eventSource": "ec2.amazonaws.com",
        "eventName": name,
        "awsRegion": "us-east-1",
        "sourceIPAddress": "203.0.113.7",
        "userAgent": "aws-cli/2.15.0",
        "requestParameters": request,
        "responseElements": null,
        "requestID": format!("req-{id}"),
        "eventID": id,
        "readOnly": false,
        "eventType": "AwsApiCall",
        "managementEvent": true,
        "recipientAccountId": account,
        "eventCategory": "Management"
    })
}

/// What the fake CloudTrail was asked.
#[derive(Clone, Debug)]
pub struct LookupRequest {
    pub at: Instant,
    pub next_token: Option<String>,
    pub start_time: Option<f64>,
    pub end_time: Option<f64>,
    /// The region the request was signed for.
    pub region: Option<String>,
    /// The answer: "ok", "throttled" or "failed".
    pub answer: &'static str,
}

#[derive(Default)]
struct LookupState {
    /// Where the operations other than LookupEvents go (moto).
    forward_to: String,
    /// Raw events, any order; served newest first.
    events: Vec<Value>,
    throttle_next: u32,
    /// Fail (HTTP 500) the request for this page number (1-based) once.
    fail_page_once: Option<usize>,
    /// Answer the request for this page number only after this long.
    delay_page: Option<(usize, Duration)>,
    requests: Vec<LookupRequest>,
}

/// A CloudTrail endpoint that serves LookupEvents over the JSON 1.1 protocol, as AWS does:
/// `X-Amz-Target: CloudTrail_20131101.LookupEvents`, epoch
/// seconds for times, `NextToken` pages of at most `MaxResults` (50), and
/// `ThrottlingException` answers when told to throttle. Each region shows the events recorded
/// in it (`awsRegion`), as in AWS: global services' events only in us-east-1.
#[derive(Clone)]
pub struct FakeCloudTrail {
    pub url: String,
    state: Arc<Mutex<LookupState>>,
}

const PAGE_SIZE: usize = 50;

impl FakeCloudTrail {
    /// Serves LookupEvents and forwards every other CloudTrail operation to `moto`.
    pub async fn start(moto: &str) -> Self {
        let state = Arc::new(Mutex::new(LookupState { forward_to: moto.to_owned(), ..Default::default() }));
        let app = Router::new().route("/", post(lookup_events)).with_state(state.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("binding the fake CloudTrail");
        let address: SocketAddr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await });
        Self { url: format!("http://{address}"), state }
    }

    pub fn add_events(&self, events: impl IntoIterator<Item = Value>) {
        self.state.lock().unwrap().events.extend(events);
    }

    pub fn throttle_next(&self, count: u32) {
        self.state.lock().unwrap().throttle_next = count;
    }

    pub fn fail_page_once(&self, page: usize) {
        self.state.lock().unwrap().fail_page_once = Some(page);
    }

    pub fn delay_page(&self, page: usize, delay: Duration) {
        self.state.lock().unwrap().delay_page = Some((page, delay));
    }

    pub fn requests(&self) -> Vec<LookupRequest> {
        self.state.lock().unwrap().requests.clone()
    }
}

fn aws_json_error(status: StatusCode, kind: &str, message: &str) -> Response {
    (
        status,
        [
            (header::CONTENT_TYPE, "application/x-amz-json-1.1"),
            (header::HeaderName::from_static("x-amzn-errortype"), kind),
        ],
        json!({"__type": kind, "message": message}).to_string(),
    )
        .into_response()
}

fn epoch_seconds(event: &Value) -> f64 {
    event["eventTime"]
        .as_str()
        .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
        .map(|t| t.timestamp() as f64)
        .unwrap_or(0.0)
}

async fn lookup_events(
    axum::extract::State(state): axum::extract::State<Arc<Mutex<LookupState>>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let target = headers.get("x-amz-target").and_then(|v| v.to_str().ok()).unwrap_or_default();
    // Older SDKs prefix the target with the namespace.
    if !target.ends_with("CloudTrail_20131101.LookupEvents") {
        let forward_to = state.lock().unwrap().forward_to.clone();
        return forward(&forward_to, headers, body).await;
    }
    let request: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let next_token = request["NextToken"].as_str().map(str::to_owned);
    let (start, end) = (request["StartTime"].as_f64(), request["EndTime"].as_f64());
    let region = signed_region(&headers);
    let max = request["MaxResults"].as_u64().map(|m| m as usize).unwrap_or(PAGE_SIZE).min(PAGE_SIZE);
    let offset: usize =
        next_token.as_deref().and_then(|t| t.strip_prefix("page-")).and_then(|t| t.parse().ok()).unwrap_or(0);
    let page_number = offset / max.max(1) + 1;
    // Record the request as it arrives, so a test sees a request that is still being answered.
    let (index, delay) = {
        let mut state = state.lock().unwrap();
        let record = LookupRequest {
            at: Instant::now(),
            next_token: next_token.clone(),
            start_time: start,
            end_time: end,
            region: region.clone(),
            answer: "ok",
        };
        state.requests.push(record);
        (state.requests.len() - 1, state.delay_page.filter(|(page, _)| *page == page_number).map(|(_, delay)| delay))
    };
    if let Some(delay) = delay {
        tokio::time::sleep(delay).await;
    }
    let mut state = state.lock().unwrap();
    if state.throttle_next > 0 {
        state.throttle_next -= 1;
        state.requests[index].answer = "throttled";
        return aws_json_error(StatusCode::BAD_REQUEST, "ThrottlingException", "Rate exceeded");
    }
    if state.fail_page_once == Some(page_number) {
        state.fail_page_once = None;
        state.requests[index].answer = "failed";
        return aws_json_error(StatusCode::INTERNAL_SERVER_ERROR, "InternalFailure", "injected failure");
    }
    let mut matching: Vec<&Value> = state
        .events
        .iter()
        .filter(|e| {
            let t = epoch_seconds(e);
            let here = region.as_deref().is_none_or(|r| e["awsRegion"].as_str() == Some(r));
            here && start.is_none_or(|s| t >= s) && end.is_none_or(|e| t <= e)
        })
        .collect();
    matching.sort_by(|a, b| {
        epoch_seconds(b).total_cmp(&epoch_seconds(a)).then_with(|| b["eventID"].as_str().cmp(&a["eventID"].as_str()))
    });
    let page: Vec<Value> = matching
        .iter()
        .skip(offset)
        .take(max)
        .map(|event| {
            json!({
                "EventId": event["eventID"],
                "EventName": event["eventName"],
                "ReadOnly": event["readOnly"].to_string(),
                "EventTime": epoch_seconds(event),
                "EventSource": event["eventSource"],
                "Username": event["userIdentity"]["userName"],
                "Resources": [],
                "CloudTrailEvent": event.to_string(),
            })
        })
        .collect();
    let mut response = json!({"Events": page});
    if offset + max < matching.len() {
        response["NextToken"] = json!(format!("page-{}", offset + max));
    }
    ([(header::CONTENT_TYPE, "application/x-amz-json-1.1")], response.to_string()).into_response()
}

/// Sends a request on to moto unchanged (its signature names the service) and returns its answer.
async fn forward(base: &str, headers: HeaderMap, body: Bytes) -> Response {
    use http_body_util::{BodyExt, Full};
    use hyper_util::client::legacy::Client;
    use hyper_util::rt::TokioExecutor;
    let client: Client<_, Full<Bytes>> = Client::builder(TokioExecutor::new()).build_http();
    let mut request = axum::http::Request::post(format!("{base}/"));
    for (name, value) in headers.iter().filter(|(name, _)| *name != header::HOST) {
        request = request.header(name, value);
    }
    let response = match client.request(request.body(Full::new(body)).unwrap()).await {
        Ok(response) => response,
        Err(error) => return aws_json_error(StatusCode::BAD_GATEWAY, "InternalFailure", &format!("moto: {error}")),
    };
    let (parts, body) = response.into_parts();
    let bytes = body.collect().await.map(|b| b.to_bytes()).unwrap_or_default();
    Response::from_parts(parts, axum::body::Body::from(bytes))
}

/// An STS that knows some roles and their external IDs and answers AssumeRole as AWS does:
/// credentials in the Query protocol's XML when the role exists and the external ID matches,
/// `AccessDenied` otherwise.
pub struct FakeSts {
    pub url: String,
}

impl FakeSts {
    pub async fn start(roles: HashMap<String, String>) -> Self {
        let roles = Arc::new(roles);
        let app = Router::new().route("/", post(assume_role)).with_state(roles);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("binding the fake STS");
        let address = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await });
        Self { url: format!("http://{address}") }
    }
}

async fn assume_role(
    axum::extract::State(roles): axum::extract::State<Arc<HashMap<String, String>>>,
    body: String,
) -> Response {
    let form: HashMap<String, String> = body
        .split('&')
        .filter_map(|pair| pair.split_once('='))
        .map(|(k, v)| (k.to_owned(), percent_decode(v)))
        .collect();
    let role = form.get("RoleArn").cloned().unwrap_or_default();
    let external_id = form.get("ExternalId").cloned().unwrap_or_default();
    let xml = |status: StatusCode, body: String| (status, [(header::CONTENT_TYPE, "text/xml")], body).into_response();
    if form.get("Action").map(String::as_str) != Some("AssumeRole") || roles.get(&role) != Some(&external_id) {
        return xml(
            StatusCode::FORBIDDEN,
            format!(
                "<ErrorResponse xmlns=\"https://sts.amazonaws.com/doc/2011-06-15/\"><Error><Type>Sender</Type>\
                 <Code>AccessDenied</Code><Message>User: arn:aws:iam::123456789012:user/skywarden is not authorized to \
                 perform: sts:AssumeRole on resource: {role}</Message></Error><RequestId>fake-1</RequestId></ErrorResponse>"
            ),
        );
    }
    let expiry = (chrono::Utc::now() + chrono::Duration::hours(1)).format("%Y-%m-%dT%H:%M:%SZ");
    xml(
        StatusCode::OK,
        format!(
            "<AssumeRoleResponse xmlns=\"https://sts.amazonaws.com/doc/2011-06-15/\"><AssumeRoleResult>\
             <Credentials><AccessKeyId>ASIAFAKE</AccessKeyId><SecretAccessKey>secret</SecretAccessKey>\
             <SessionToken>token</SessionToken><Expiration>{expiry}</Expiration></Credentials>\
             <AssumedRoleUser><AssumedRoleId>AROAFAKE:skywarden</AssumedRoleId><Arn>{role}</Arn></AssumedRoleUser>\
             </AssumeRoleResult><ResponseMetadata><RequestId>fake-2</RequestId></ResponseMetadata></AssumeRoleResponse>"
        ),
    )
}

fn percent_decode(value: &str) -> String {
    let bytes = value.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => {
                match u8::from_str_radix(std::str::from_utf8(&bytes[i + 1..i + 3]).unwrap_or("zz"), 16) {
                    Ok(byte) => {
                        out.push(byte);
                        i += 2;
                    }
                    Err(_) => out.push(b'%'),
                }
            }
            other => out.push(other),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// How the fake EC2 answers DescribeRegions.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RegionsAnswer {
    /// The regions as set, with their opt-in status.
    Regions,
    /// `UnauthorizedOperation` (HTTP 403), as for a role without `ec2:DescribeRegions`.
    Denied,
    /// `Unavailable` (HTTP 503), the service failing.
    Failed,
    /// A well-formed answer naming no region.
    Empty,
}

struct RegionsState {
    forward_to: String,
    /// (region, opt-in status) as DescribeRegions with AllRegions lists them.
    regions: Vec<(String, String)>,
    answer: RegionsAnswer,
    /// The DescribeRegions requests, as (signed region, form).
    requests: Vec<(Option<String>, HashMap<String, String>)>,
}

/// An EC2 endpoint that answers DescribeRegions in the EC2 Query protocol as AWS does (XML,
/// `regionInfo` items with `optInStatus`; with `AllRegions=true` every region, otherwise the
/// enabled ones only), from regions and statuses a test sets, or fails it as told. Every other
/// EC2 call goes on to moto.
#[derive(Clone)]
pub struct FakeEc2 {
    pub url: String,
    state: Arc<Mutex<RegionsState>>,
}

impl FakeEc2 {
    pub async fn start(moto: &str, regions: &[(&str, &str)]) -> Self {
        let state = Arc::new(Mutex::new(RegionsState {
            forward_to: moto.to_owned(),
            regions: Vec::new(),
            answer: RegionsAnswer::Regions,
            requests: Vec::new(),
        }));
        let app = Router::new().route("/", post(ec2_request)).with_state(state.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("binding the fake EC2");
        let address = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await });
        let fake = Self { url: format!("http://{address}"), state };
        fake.set_regions(regions);
        fake
    }

    /// The regions and their opt-in status (`opt-in-not-required`, `opted-in`, `not-opted-in`).
    pub fn set_regions(&self, regions: &[(&str, &str)]) {
        self.state.lock().unwrap().regions = regions.iter().map(|(r, s)| ((*r).to_owned(), (*s).to_owned())).collect();
    }

    pub fn answer(&self, answer: RegionsAnswer) {
        self.state.lock().unwrap().answer = answer;
    }

    /// The DescribeRegions requests: the region each was signed for, and its parameters.
    pub fn requests(&self) -> Vec<(Option<String>, HashMap<String, String>)> {
        self.state.lock().unwrap().requests.clone()
    }
}

fn ec2_error(status: StatusCode, code: &str, message: &str) -> Response {
    let body = format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Response><Errors><Error><Code>{code}</Code><Message>{message}</Message>\
         </Error></Errors><RequestID>fake-ec2-error</RequestID></Response>"
    );
    (status, [(header::CONTENT_TYPE, "text/xml;charset=UTF-8")], body).into_response()
}

async fn ec2_request(
    axum::extract::State(state): axum::extract::State<Arc<Mutex<RegionsState>>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let form: HashMap<String, String> = String::from_utf8_lossy(&body)
        .split('&')
        .filter_map(|pair| pair.split_once('='))
        .map(|(k, v)| (k.to_owned(), percent_decode(v)))
        .collect();
    if form.get("Action").map(String::as_str) != Some("DescribeRegions") {
        let forward_to = state.lock().unwrap().forward_to.clone();
        return forward(&forward_to, headers, body).await;
    }
    let (answer, regions) = {
        let mut state = state.lock().unwrap();
        state.requests.push((signed_region(&headers), form.clone()));
        (state.answer, state.regions.clone())
    };
    match answer {
        RegionsAnswer::Denied => {
            return ec2_error(
                StatusCode::FORBIDDEN,
                "UnauthorizedOperation",
                "You are not authorized to perform this operation. User: arn:aws:sts::123456789012:assumed-role/\
                 SkywardenReadOnly/skywarden is not authorized to perform: ec2:DescribeRegions",
            );
        }
        RegionsAnswer::Failed => {
            return ec2_error(StatusCode::SERVICE_UNAVAILABLE, "Unavailable", "The service is unavailable.");
        }
        RegionsAnswer::Regions | RegionsAnswer::Empty => {}
    }
    let all = form.get("AllRegions").is_some_and(|v| v == "true");
    let items: String = regions
        .iter()
        .filter(|_| answer == RegionsAnswer::Regions)
        .filter(|(_, status)| all || status != "not-opted-in")
        .map(|(name, status)| {
            format!(
                "<item><regionName>{name}</regionName><regionEndpoint>ec2.{name}.amazonaws.com</regionEndpoint>\
                 <optInStatus>{status}</optInStatus></item>"
            )
        })
        .collect();
    let body = format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<DescribeRegionsResponse xmlns=\"http://ec2.amazonaws.com/doc/2016-11-15/\">\
         <requestId>fake-ec2-regions</requestId><regionInfo>{items}</regionInfo></DescribeRegionsResponse>"
    );
    ([(header::CONTENT_TYPE, "text/xml;charset=UTF-8")], body).into_response()
}
