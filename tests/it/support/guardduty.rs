//! A GuardDuty endpoint for the findings poller: moto 5 emulates detectors but not findings
//! (no ListFindings, GetFindings or CreateSampleFindings), so this fake serves the three calls
//! the poller makes over GuardDuty's REST-JSON protocol as AWS does:
//!
//! - `GET /detector` → `{"detectorIds": [...]}` (one detector per region at most);
//! - `POST /detector/{id}/findings` (ListFindings) with `findingCriteria.criterion`
//!   (`updatedAt.greaterThanOrEqual` in epoch milliseconds, `accountId.equals`), `sortCriteria`
//!   and `maxResults` (at most 50), answering `{"findingIds", "nextToken"}`;
//! - `POST /detector/{id}/findings/get` (GetFindings) → `{"findings": [...]}` in the wire's
//!   camel case.
//!
//! Errors are GuardDuty's: `x-amzn-ErrorType` with a JSON `message` (`AccessDeniedException`
//! 403, `BadRequestException` 400 for an unknown detector, or a page token it no longer accepts
//! or sent with other criteria: [`FakeGuardDuty::expire_tokens`] forgets the tokens it gave). A test can also make
//! GetFindings answer more than the poller reads ([`FakeGuardDuty::answer_oversized`]), or update
//! a finding between the ListFindings that names it and the GetFindings that reads it, stamped
//! with the time of the update as GuardDuty does ([`FakeGuardDuty::update_between_list_and_get`]).
//! [`FakeGuardDuty::answer_extra`] adds findings not asked for to every GetFindings answer.
//! Answers carry a `Date` header (axum's server adds it), as AWS's do.
//! Each region (the SigV4 credential scope) has its own detector and findings. docs/aws-findings.md says what it stands in for.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::{Value, json};

#[derive(Default)]
struct GuardDutyState {
    /// Detector id by region.
    detectors: HashMap<String, String>,
    /// Findings by id, in the wire's shape (their `region` says where they are).
    findings: Vec<Value>,
    /// Regions whose calls are refused with AccessDeniedException.
    denied: HashSet<String>,
    /// ListFindings requests: (region, updatedAt lower bound, next token).
    listings: Vec<(String, Option<i64>, Option<String>)>,
    /// Page tokens given out and still accepted, with the `updatedAt` bound of their listing (a
    /// token goes on only with the criteria that gave it, as GuardDuty's do).
    tokens: HashMap<String, Option<i64>>,
    /// GetFindings answers with a body of this many bytes (not JSON), when set.
    oversized: Option<usize>,
    /// Updates GuardDuty makes when the next GetFindings arrives, after the listing that
    /// named the finding: each replaces its finding, stamped `updatedAt` at that moment.
    updates_before_get: Vec<Value>,
    /// Findings added to every GetFindings answer, asked for or not (an administrator answering
    /// for a member, an endpoint answering more than asked).
    extra: Vec<Value>,
    /// How far GuardDuty's clock is from ours: ListFindings' `Date` header tells its time.
    clock_offset: Option<chrono::Duration>,
}

#[derive(Clone)]
pub struct FakeGuardDuty {
    pub url: String,
    state: Arc<Mutex<GuardDutyState>>,
}

const MAX_PAGE: usize = 50;

impl FakeGuardDuty {
    pub async fn start() -> Self {
        let state = Arc::new(Mutex::new(GuardDutyState::default()));
        let app = Router::new()
            .route("/detector", get(list_detectors))
            .route("/detector/{id}/findings", post(list_findings))
            .route("/detector/{id}/findings/get", post(get_findings))
            .with_state(state.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("binding the fake GuardDuty");
        let address: SocketAddr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await });
        Self { url: format!("http://{address}"), state }
    }

    /// Enables GuardDuty in `region`: a detector there.
    pub fn enable(&self, region: &str, detector_id: &str) {
        self.state.lock().unwrap().detectors.insert(region.to_owned(), detector_id.to_owned());
    }

    pub fn deny(&self, region: &str) {
        self.state.lock().unwrap().denied.insert(region.to_owned());
    }

    /// Adds a finding, or replaces the one with its id (GuardDuty updating it).
    pub fn put_finding(&self, finding: Value) {
        let mut state = self.state.lock().unwrap();
        state.findings.retain(|f| f["id"] != finding["id"]);
        state.findings.push(finding);
    }

    /// Updates `finding` (replacing the one with its id) when the next GetFindings arrives, with
    /// `updatedAt` set to that moment: GuardDuty updating a finding between the ListFindings
    /// that named it and the GetFindings that reads it.
    pub fn update_between_list_and_get(&self, finding: Value) {
        self.state.lock().unwrap().updates_before_get.push(finding);
    }

    /// Forgets every page token given out: a later request carrying one is refused, as GuardDuty
    /// refuses an expired token.
    pub fn expire_tokens(&self) {
        self.state.lock().unwrap().tokens.clear();
    }

    /// Makes GetFindings answer `bytes` bytes (that are not JSON), announced in Content-Length.
    pub fn answer_oversized(&self, bytes: usize) {
        self.state.lock().unwrap().oversized = Some(bytes);
    }

    /// Sets GuardDuty's clock `offset` from ours, as ListFindings' `Date` header tells it.
    pub fn clock_offset(&self, offset: chrono::Duration) {
        self.state.lock().unwrap().clock_offset = Some(offset);
    }

    /// Adds `finding` to every GetFindings answer, whatever ids were asked for.
    pub fn answer_extra(&self, finding: Value) {
        self.state.lock().unwrap().extra.push(finding);
    }

    pub fn listings(&self) -> Vec<(String, Option<i64>, Option<String>)> {
        self.state.lock().unwrap().listings.clone()
    }
}

fn error(status: StatusCode, kind: &str, message: &str) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "application/json"), (header::HeaderName::from_static("x-amzn-errortype"), kind)],
        json!({"message": message, "__type": kind}).to_string(),
    )
        .into_response()
}

fn json_ok(body: Value) -> Response {
    ([(header::CONTENT_TYPE, "application/json")], body.to_string()).into_response()
}

fn json_ok_bytes(body: Vec<u8>) -> Response {
    ([(header::CONTENT_TYPE, "application/json")], body).into_response()
}

/// The region a SigV4 request was signed for (its credential scope).
fn signed_region(headers: &HeaderMap) -> String {
    headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|a| a.split("Credential=").nth(1))
        .and_then(|c| c.split(',').next())
        .and_then(|c| c.split('/').nth(2))
        .unwrap_or_default()
        .to_owned()
}

fn denied(state: &GuardDutyState, region: &str) -> Option<Response> {
    state.denied.contains(region).then(|| {
        error(
            StatusCode::FORBIDDEN,
            "AccessDeniedException",
            "User is not authorized to perform: guardduty:ListDetectors",
        )
    })
}

async fn list_detectors(State(state): State<Arc<Mutex<GuardDutyState>>>, headers: HeaderMap) -> Response {
    let region = signed_region(&headers);
    let state = state.lock().unwrap();
    if let Some(refused) = denied(&state, &region) {
        return refused;
    }
    json_ok(json!({"detectorIds": state.detectors.get(&region).into_iter().collect::<Vec<_>>()}))
}

fn updated_ms(finding: &Value) -> i64 {
    finding["updatedAt"]
        .as_str()
        .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
        .map(|t| t.timestamp_millis())
        .unwrap_or_default()
}

/// GuardDuty's refusal of a call on detector `id` in `region`, if it refuses it: access denied,
/// or a detector it does not know.
fn refusal(state: &GuardDutyState, region: &str, id: &str) -> Option<Response> {
    if let Some(refused) = denied(state, region) {
        return Some(refused);
    }
    match state.detectors.get(region) {
        Some(known) if known == id => None,
        _ => Some(error(
            StatusCode::BAD_REQUEST,
            "BadRequestException",
            "The request is rejected because the input detectorId is not owned by the current account.",
        )),
    }
}

async fn list_findings(
    State(state): State<Arc<Mutex<GuardDutyState>>>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let region = signed_region(&headers);
    let request: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let mut state = state.lock().unwrap();
    if let Some(refused) = refusal(&state, &region, &id) {
        return refused;
    }
    let criterion = &request["findingCriteria"]["criterion"];
    let since = criterion["updatedAt"]["greaterThanOrEqual"].as_i64();
    let accounts: Vec<&str> =
        criterion["accountId"]["equals"].as_array().into_iter().flatten().filter_map(Value::as_str).collect();
    let max = request["maxResults"].as_u64().map(|m| m as usize).unwrap_or(MAX_PAGE);
    if !(1..=MAX_PAGE).contains(&max) {
        return error(StatusCode::BAD_REQUEST, "BadRequestException", "maxResults must be between 1 and 50");
    }
    let token = request["nextToken"].as_str().filter(|t| !t.is_empty()).map(str::to_owned);
    state.listings.push((region.clone(), since, token.clone()));
    if token.as_ref().is_some_and(|t| state.tokens.get(t) != Some(&since)) {
        return error(
            StatusCode::BAD_REQUEST,
            "BadRequestException",
            "The request is rejected because the input nextToken is not valid or has expired.",
        );
    }
    let offset: usize =
        token.as_deref().and_then(|t| t.strip_prefix("offset-")).and_then(|t| t.parse().ok()).unwrap_or(0);
    let mut matching: Vec<&Value> = state
        .findings
        .iter()
        .filter(|f| f["region"] == region.as_str())
        .filter(|f| since.is_none_or(|s| updated_ms(f) >= s))
        .filter(|f| accounts.is_empty() || accounts.iter().any(|a| f["accountId"] == *a))
        .collect();
    if request["sortCriteria"]["attributeName"] == "updatedAt" {
        matching.sort_by_key(|f| updated_ms(f));
        if request["sortCriteria"]["orderBy"] == "DESC" {
            matching.reverse();
        }
    }
    let ids: Vec<Value> = matching.iter().skip(offset).take(max).map(|f| f["id"].clone()).collect();
    let total = matching.len();
    // GuardDuty ends a listing with an empty token.
    let next = if offset + max < total { format!("offset-{}", offset + max) } else { String::new() };
    if !next.is_empty() {
        state.tokens.insert(next.clone(), since);
    }
    let body = json!({"findingIds": ids, "nextToken": next}).to_string();
    match state.clock_offset {
        Some(offset) => {
            let date = (chrono::Utc::now() + offset).format("%a, %d %b %Y %H:%M:%S GMT").to_string();
            ([(header::CONTENT_TYPE, "application/json".to_owned()), (header::DATE, date)], body).into_response()
        }
        None => json_ok_bytes(body.into_bytes()),
    }
}

async fn get_findings(
    State(state): State<Arc<Mutex<GuardDutyState>>>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let region = signed_region(&headers);
    let request: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let mut state = state.lock().unwrap();
    if let Some(refused) = refusal(&state, &region, &id) {
        return refused;
    }
    for mut update in std::mem::take(&mut state.updates_before_get) {
        update["updatedAt"] = json!(chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true));
        state.findings.retain(|f| f["id"] != update["id"]);
        state.findings.push(update);
    }
    if let Some(bytes) = state.oversized {
        return json_ok_bytes(vec![b' '; bytes]);
    }
    let Some(ids) = request["findingIds"].as_array() else {
        return error(StatusCode::BAD_REQUEST, "BadRequestException", "findingIds is required");
    };
    if ids.len() > MAX_PAGE {
        return error(StatusCode::BAD_REQUEST, "BadRequestException", "at most 50 findingIds");
    }
    let mut findings: Vec<&Value> =
        state.findings.iter().filter(|f| f["region"] == region.as_str() && ids.contains(&f["id"])).collect();
    findings.extend(state.extra.iter());
    json_ok(json!({"findings": findings}))
}
