//! The HTTP client every notification goes through: it resolves names itself and connects only
//! to addresses the [`NetworkPolicy`] accepts (so a DNS answer cannot point a webhook at the
//! metadata service), follows no redirects, uses no proxy from the environment, times out every
//! call and reads at most [`MAX_RESPONSE_BYTES`] of an answer.

use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::connect::dns::Name;
use hyper_util::rt::TokioExecutor;

use super::network::{NetworkPolicy, Refused};

/// Receivers' answers are read up to this size; the rest is dropped.
pub const MAX_RESPONSE_BYTES: usize = 64 * 1024;
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
const REQUEST_TIMEOUT: Duration = Duration::from_secs(15);

/// A request to a receiver. Its `Debug` shows the method and host only: URLs and headers carry
/// secrets (Slack webhook paths, authorization).
#[derive(Clone)]
pub struct OutgoingRequest {
    pub method: http::Method,
    pub url: String,
    pub headers: Vec<(http::HeaderName, String)>,
    pub body: Vec<u8>,
}

impl std::fmt::Debug for OutgoingRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let host = url::Url::parse(&self.url).ok().and_then(|u| u.host_str().map(str::to_string));
        f.debug_struct("OutgoingRequest")
            .field("method", &self.method)
            .field("host", &host)
            .field("body_bytes", &self.body.len())
            .finish()
    }
}

impl OutgoingRequest {
    pub fn post_json(url: impl Into<String>, body: &serde_json::Value) -> Self {
        Self {
            method: http::Method::POST,
            url: url.into(),
            headers: vec![(http::header::CONTENT_TYPE, "application/json".into())],
            body: serde_json::to_vec(body).expect("a JSON value serialises"),
        }
    }

    pub fn get(url: impl Into<String>) -> Self {
        Self { method: http::Method::GET, url: url.into(), headers: Vec::new(), body: Vec::new() }
    }

    pub fn with_header(mut self, name: http::HeaderName, value: impl Into<String>) -> Self {
        self.headers.push((name, value.into()));
        self
    }

    /// The header's value, if set.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n.as_str().eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }
}

/// A receiver's answer, its body cut at [`MAX_RESPONSE_BYTES`].
#[derive(Clone, Debug)]
pub struct Reply {
    pub status: u16,
    /// `Retry-After`, in seconds (its date form is read too).
    pub retry_after: Option<Duration>,
    pub body: Vec<u8>,
}

impl Reply {
    pub fn body_text(&self) -> String {
        let text = String::from_utf8_lossy(&self.body);
        text.chars().take(300).collect()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    #[error("refused target: {0}")]
    Refused(Refused),
    #[error("bad target URL: {0}")]
    BadUrl(String),
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    #[error("cannot reach the receiver: {0}")]
    Unreachable(String),
}

/// Resolves host names and keeps only acceptable addresses; any refused address refuses the
/// name, since a mix of public and private answers is a DNS rebinding trick.
#[derive(Clone)]
struct CheckedResolver {
    policy: Arc<NetworkPolicy>,
}

type ResolveFuture = Pin<Box<dyn Future<Output = Result<std::vec::IntoIter<SocketAddr>, std::io::Error>> + Send>>;

impl tower_service::Service<Name> for CheckedResolver {
    type Response = std::vec::IntoIter<SocketAddr>;
    type Error = std::io::Error;
    type Future = ResolveFuture;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, name: Name) -> Self::Future {
        let policy = self.policy.clone();
        Box::pin(async move {
            let addresses: Vec<SocketAddr> = tokio::net::lookup_host((name.as_str(), 0)).await?.collect();
            for address in &addresses {
                policy
                    .check(address.ip())
                    .map_err(|refused| std::io::Error::new(std::io::ErrorKind::PermissionDenied, refused))?;
            }
            if addresses.is_empty() {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::NotFound,
                    format!("{} has no address", name.as_str()),
                ));
            }
            Ok(addresses.into_iter())
        })
    }
}

type HttpsConnector = hyper_rustls::HttpsConnector<HttpConnector<CheckedResolver>>;

/// The notification HTTP client.
#[derive(Clone)]
pub struct SafeHttpClient {
    client: Client<HttpsConnector, Full<Bytes>>,
    policy: Arc<NetworkPolicy>,
    timeout: Duration,
}

impl std::fmt::Debug for SafeHttpClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SafeHttpClient").field("policy", &self.policy.to_string()).finish()
    }
}

impl SafeHttpClient {
    pub fn new(policy: NetworkPolicy) -> Self {
        let policy = Arc::new(policy);
        let mut http = HttpConnector::new_with_resolver(CheckedResolver { policy: policy.clone() });
        http.enforce_http(false);
        http.set_connect_timeout(Some(CONNECT_TIMEOUT));
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let tls = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("ring supports the default TLS versions");
        let tls = hyper_rustls::ConfigBuilderExt::with_native_roots(tls)
            .unwrap_or_else(|error| {
                tracing::warn!(%error, "no system CA certificates: HTTPS notifications will fail");
                rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
                    .with_safe_default_protocol_versions()
                    .expect("ring supports the default TLS versions")
                    .with_root_certificates(rustls::RootCertStore::empty())
            })
            .with_no_client_auth();
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_or_http()
            .enable_http1()
            .wrap_connector(http);
        let client = Client::builder(TokioExecutor::new()).pool_idle_timeout(Duration::from_secs(30)).build(connector);
        Self { client, policy, timeout: REQUEST_TIMEOUT }
    }

    pub fn policy(&self) -> &NetworkPolicy {
        &self.policy
    }

    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// Caps every call (connect, request, reading the answer) at `timeout`.
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Checks a target URL before it is stored: http(s), a host, and not a refused literal
    /// address. Plain HTTP only to networks an admin allowed. Names are checked again at send
    /// time, when they are resolved.
    pub fn check_url(&self, text: &str) -> Result<url::Url, HttpError> {
        check_url(&self.policy, text)
    }

    pub async fn send(&self, request: &OutgoingRequest) -> Result<Reply, HttpError> {
        let url = self.check_url(&request.url)?;
        let mut builder = http::Request::builder().method(request.method.clone()).uri(url.as_str());
        for (name, value) in &request.headers {
            builder = builder.header(name, value);
        }
        let outgoing = builder
            .header(http::header::USER_AGENT, concat!("Skywarden/", env!("CARGO_PKG_VERSION")))
            .body(Full::new(Bytes::from(request.body.clone())))
            .map_err(|e| HttpError::BadUrl(e.to_string()))?;
        let exchange = async {
            let response = self.client.request(outgoing).await.map_err(connect_error)?;
            let status = response.status().as_u16();
            let retry_after = response
                .headers()
                .get(http::header::RETRY_AFTER)
                .and_then(|v| v.to_str().ok())
                .and_then(parse_retry_after);
            let mut body = response.into_body();
            let mut bytes = Vec::new();
            while bytes.len() < MAX_RESPONSE_BYTES {
                match body.frame().await {
                    Some(Ok(frame)) => {
                        if let Some(data) = frame.data_ref() {
                            let room = MAX_RESPONSE_BYTES - bytes.len();
                            bytes.extend_from_slice(&data[..data.len().min(room)]);
                        }
                    }
                    // A broken body after the status line still tells the status.
                    Some(Err(_)) | None => break,
                }
            }
            Ok(Reply { status, retry_after, body: bytes })
        };
        tokio::time::timeout(self.timeout, exchange).await.map_err(|_| HttpError::Timeout(self.timeout))?
    }
}

/// See [`SafeHttpClient::check_url`].
pub fn check_url(policy: &NetworkPolicy, text: &str) -> Result<url::Url, HttpError> {
    let url = url::Url::parse(text.trim()).map_err(|e| HttpError::BadUrl(format!("not a URL ({e})")))?;
    let literal: Option<IpAddr> = match url.host() {
        Some(url::Host::Ipv4(v4)) => Some(IpAddr::V4(v4)),
        Some(url::Host::Ipv6(v6)) => Some(IpAddr::V6(v6)),
        Some(url::Host::Domain(domain)) => {
            let domain = domain.trim_end_matches('.').to_ascii_lowercase();
            // Names that always mean this machine or the metadata service, refused before DNS.
            if domain == "localhost" || domain.ends_with(".localhost") {
                Some(IpAddr::from([127, 0, 0, 1]))
            } else if domain == "metadata.google.internal"
                || domain == "instance-data"
                || domain == "instance-data.ec2.internal"
            {
                Some(IpAddr::from([169, 254, 169, 254]))
            } else {
                None
            }
        }
        None => return Err(HttpError::BadUrl("the URL has no host".into())),
    };
    if let Some(address) = literal {
        policy.check(address).map_err(HttpError::Refused)?;
    }
    match url.scheme() {
        "https" => {}
        "http" if literal.is_some_and(|a| policy.is_allowed(a)) => {}
        "http" => {
            return Err(HttpError::BadUrl(
                "plain http is only for networks allowed in SKYWARDEN_NOTIFY_ALLOW_NETWORKS; use https".into(),
            ));
        }
        other => return Err(HttpError::BadUrl(format!("the scheme must be https, not {other}"))),
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(HttpError::BadUrl("credentials do not belong in the URL".into()));
    }
    Ok(url)
}

/// Finds a refusal from the resolver in a client error's causes.
fn connect_error(error: hyper_util::client::legacy::Error) -> HttpError {
    let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(&error);
    while let Some(current) = cause {
        if let Some(io) = current.downcast_ref::<std::io::Error>()
            && let Some(refused) = io.get_ref().and_then(|inner| inner.downcast_ref::<Refused>())
        {
            return HttpError::Refused(refused.clone());
        }
        if let Some(refused) = current.downcast_ref::<Refused>() {
            return HttpError::Refused(refused.clone());
        }
        cause = current.source();
    }
    HttpError::Unreachable(super::error_chain(&error))
}

/// `Retry-After`: seconds, or an HTTP date.
pub fn parse_retry_after(value: &str) -> Option<Duration> {
    let value = value.trim();
    if let Ok(seconds) = value.parse::<u64>() {
        return Some(Duration::from_secs(seconds));
    }
    let date = chrono::DateTime::parse_from_rfc2822(value).ok()?;
    let wait = date.with_timezone(&chrono::Utc) - chrono::Utc::now();
    Some(wait.to_std().unwrap_or(Duration::ZERO))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_checked_before_they_are_stored() {
        let public = NetworkPolicy::public_only();
        assert!(check_url(&public, "https://hooks.slack.com/services/T/B/X").is_ok());
        for refused in [
            "http://169.254.169.254/latest/meta-data/",
            "https://127.0.0.1:8443/hook",
            "https://[::1]/hook",
            "https://localhost/hook",
            "https://api.localhost/hook",
            "https://metadata.google.internal/computeMetadata/v1/",
            "https://10.0.0.5/hook",
            "https://[fec0::1]/hook",
            "https://[2001:0:4136:e378:8000:63bf:3fff:fdd2]/hook",
            "https://[64:ff9b:1::a9fe:a9fe]/hook",
            "https://[5f00::1]/hook",
        ] {
            assert!(matches!(check_url(&public, refused), Err(HttpError::Refused(_))), "{refused}");
        }
        assert!(matches!(check_url(&public, "http://hooks.example.com/"), Err(HttpError::BadUrl(_))));
        assert!(matches!(check_url(&public, "ftp://hooks.example.com/"), Err(HttpError::BadUrl(_))));
        assert!(matches!(check_url(&public, "https://user:pw@hooks.example.com/"), Err(HttpError::BadUrl(_))));
        assert!(matches!(check_url(&public, "not a url"), Err(HttpError::BadUrl(_))));

        let loopback = NetworkPolicy::allowing("127.0.0.1/32").unwrap();
        assert!(check_url(&loopback, "http://127.0.0.1:9000/hook").is_ok());
        assert!(check_url(&loopback, "http://localhost:9000/hook").is_ok());
        assert!(check_url(&loopback, "http://169.254.169.254/").is_err());
    }

    #[test]
    fn retry_after_reads_seconds_and_dates() {
        assert_eq!(parse_retry_after("30"), Some(Duration::from_secs(30)));
        assert_eq!(parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT"), Some(Duration::ZERO));
        assert_eq!(parse_retry_after("soon"), None);
    }

    #[test]
    fn requests_do_not_print_their_secrets() {
        let request =
            OutgoingRequest::post_json("https://hooks.slack.com/services/T1/B2/SECRET", &serde_json::json!({}))
                .with_header(http::header::AUTHORIZATION, "Basic c2VjcmV0");
        let shown = format!("{request:?}");
        assert!(!shown.contains("SECRET") && !shown.contains("c2VjcmV0"), "{shown}");
        assert!(shown.contains("hooks.slack.com"));
    }

    #[tokio::test]
    async fn names_resolving_to_refused_addresses_are_refused() {
        use std::str::FromStr;
        use tower_service::Service;
        // The URL check stops `localhost` before DNS; the resolver must stop it too, for any
        // name whose answer is loopback.
        let mut resolver = CheckedResolver { policy: Arc::new(NetworkPolicy::public_only()) };
        let error = resolver.call(Name::from_str("localhost").unwrap()).await.unwrap_err();
        let refused = error.get_ref().and_then(|e| e.downcast_ref::<Refused>()).expect("a refusal");
        assert!(refused.reason.contains("loopback"), "{refused}");

        let mut allowing =
            CheckedResolver { policy: Arc::new(NetworkPolicy::allowing("127.0.0.0/8,::1/128").unwrap()) };
        let found: Vec<SocketAddr> = allowing.call(Name::from_str("localhost").unwrap()).await.unwrap().collect();
        assert!(found.iter().all(|a| a.ip().is_loopback()) && !found.is_empty());
    }
}
