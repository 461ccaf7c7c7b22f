//! A Security Hub endpoint for the findings poller. moto 5 serves `GetFindings` but ignores its
//! `Filters` and `SortCriteria` and has no `BatchUpdateFindings`, so a poller that asked for the
//! wrong window, or lost a finding at a window's edge, passed against it. This fake speaks
//! Security Hub's REST-JSON protocol for the calls the poller and its tests make:
//!
//! - `POST /findings` (GetFindings) with `Filters`, `SortCriteria`, `MaxResults` (1 to 100) and
//!   `NextToken`, answering `{"Findings": [...], "NextToken"}` (no token on the last page). The
//!   filters are applied as AWS documents them: string filters (`EQUALS`, `PREFIX`, `CONTAINS`
//!   joined by OR, `NOT_EQUALS`, `PREFIX_NOT_EQUALS`, `NOT_CONTAINS` by AND) on `Id`,
//!   `AwsAccountId`, `Region`, `ProductName`, `ProductArn`, `GeneratorId`, `RecordState`,
//!   `WorkflowStatus`, `ComplianceStatus`, `SeverityLabel`, `Title`; date filters (`Start` and
//!   `End`, both inclusive, or `DateRange` in days) on `UpdatedAt`, `CreatedAt`,
//!   `FirstObservedAt`, `LastObservedAt`; sorting by `UpdatedAt`, `CreatedAt` or `Id` (ties keep
//!   the order the findings were put in). A filter or sort field it does not implement is
//!   refused, never ignored.
//! - `PATCH /findings/batchupdate` (BatchUpdateFindings): sets `Workflow.Status` (and `Note`)
//!   and leaves `UpdatedAt` as it was, as Security Hub does.
//!
//! It refuses what Security Hub refuses, with `x-amzn-ErrorType` and a JSON `Message`:
//! `InvalidInputException` (400) for `MaxResults` outside 1..=100, more than 10 filter fields or
//! 20 values in one, a `DateFilter` with `Start` and no `End` (or the reverse), a timestamp
//! outside the documented forms, `EQUALS` with `NOT_EQUALS` on one field, `CONTAINS` with
//! another comparison, and a `NextToken` it did not give or gave for another request body;
//! `InvalidAccessException` (401, "Account <id> is not subscribed to AWS Security Hub") in a
//! region where it is not enabled. Page tokens are opaque and name an offset into the listing as
//! it is when the token is used (the hostile case: a finding leaving the listing between two
//! pages makes the next skip one). [`FakeSecurityHub::limit_values_per_field`] lowers the 20 (an
//! API whose limits moved), [`FakeSecurityHub::refuse_listings`] refuses every GetFindings with a
//! given error (with the HTTP status AWS documents for its type: 400, 401, 403, 429, 500),
//! [`FakeSecurityHub::expire_tokens`] forgets the tokens given, and
//! [`FakeSecurityHub::shuffle_ties`] reorders ties per request. `put_finding` (a provider's
//! BatchImportFindings) keeps the customer's fields and applies Security Hub's workflow resets.
//!
//! Findings live in memory, in the shape GetFindings answers them; each region (the SigV4
//! credential scope) sees the findings whose `Region` is its own. Every call is logged for the
//! tests to assert what was asked. docs/aws-findings.md says what it stands in for.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{patch, post};
use chrono::{DateTime, Utc};
use serde_json::{Value, json};

/// Security Hub's documented bounds of GetFindings.
const MAX_RESULTS: u64 = 100;
const MAX_FIELDS: usize = 10;
const MAX_VALUES_PER_FIELD: usize = 20;
const MAX_BATCH_UPDATE: usize = 100;

/// One call the fake answered (or refused).
#[derive(Clone, Debug)]
pub struct HubCall {
    /// `GetFindings` or `BatchUpdateFindings`.
    pub operation: &'static str,
    /// The region the request was signed for.
    pub region: String,
    /// The request body as sent.
    pub body: Value,
    /// How many findings the answer held, or the refusal's error type.
    pub answer: Result<usize, String>,
    /// The page token the answer gave, if any.
    pub next_token: Option<String>,
    /// The `Id`s of the findings answered, in order.
    pub ids: Vec<String>,
}

impl HubCall {
    /// The `Start` of the request's first `UpdatedAt` filter, if it has one.
    pub fn updated_since(&self) -> Option<DateTime<Utc>> {
        self.body["Filters"]["UpdatedAt"][0]["Start"].as_str().and_then(parse_time)
    }

    /// The values of the request's `field` string filters.
    pub fn values(&self, field: &str) -> Vec<String> {
        let filters = self.body["Filters"][field].as_array().cloned().unwrap_or_default();
        filters.iter().filter_map(|f| f["Value"].as_str().map(str::to_owned)).collect()
    }

    pub fn token(&self) -> Option<&str> {
        self.body["NextToken"].as_str()
    }
}

#[derive(Default)]
struct HubState {
    /// The findings, in the order they were first put (the order ties keep when sorted).
    findings: Vec<Value>,
    /// Regions where Security Hub is not enabled.
    disabled: HashSet<String>,
    calls: Vec<HubCall>,
    /// Page tokens given out: the request they continue (filters and sort) and the offset.
    tokens: HashMap<String, (Value, usize)>,
    issued: u64,
    values_per_field: Option<usize>,
    /// Every GetFindings refused with (error type, message) while set.
    refuse: Option<(String, String)>,
    /// Findings equal in every sort key asked for are put in another order for each request.
    shuffle: Option<u64>,
}

#[derive(Clone)]
pub struct FakeSecurityHub {
    pub url: String,
    state: Arc<Mutex<HubState>>,
}

impl FakeSecurityHub {
    pub async fn start() -> Self {
        let state = Arc::new(Mutex::new(HubState::default()));
        let app = Router::new()
            .route("/findings", post(get_findings))
            .route("/findings/batchupdate", patch(batch_update_findings))
            .with_state(state.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("binding the fake Security Hub");
        let address: SocketAddr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await });
        Self { url: format!("http://{address}"), state }
    }

    /// Adds a finding, or replaces the one with its `Id` in place (a provider updating it with
    /// BatchImportFindings): `UpdatedAt` is whatever the finding says, as the provider sets it.
    /// As Security Hub does, an update keeps the customer's fields (`Workflow`, `Note`,
    /// `UserDefinedFields`, `VerificationState`) as they are, except that a `NOTIFIED` or
    /// `RESOLVED` workflow goes back to `NEW` when `RecordState` goes from `ARCHIVED` to `ACTIVE`
    /// or `Compliance.Status` from `PASSED` to `FAILED`, `WARNING` or `NOT_AVAILABLE`. A new
    /// finding keeps what it is given (tests start findings in any workflow status).
    pub fn put_finding(&self, mut finding: Value) {
        let mut state = self.state.lock().unwrap();
        let Some(held) = state.findings.iter_mut().find(|f| f["Id"] == finding["Id"]) else {
            state.findings.push(finding);
            return;
        };
        for field in ["Workflow", "Note", "UserDefinedFields", "VerificationState"] {
            match held.get(field) {
                Some(kept) => finding[field] = kept.clone(),
                None => {
                    if let Some(fields) = finding.as_object_mut() {
                        fields.remove(field);
                    }
                }
            }
        }
        let unarchived = held["RecordState"] == "ARCHIVED" && finding["RecordState"] == "ACTIVE";
        let failing = held["Compliance"]["Status"] == "PASSED"
            && ["FAILED", "WARNING", "NOT_AVAILABLE"].iter().any(|s| finding["Compliance"]["Status"] == *s);
        let workflow = finding["Workflow"]["Status"].as_str().unwrap_or("NEW");
        if (unarchived || failing) && ["NOTIFIED", "RESOLVED"].contains(&workflow) {
            finding["Workflow"]["Status"] = json!("NEW");
        }
        *held = finding;
    }

    /// Forgets every page token given so far: the next request with one is refused, as Security
    /// Hub refuses an expired token.
    pub fn expire_tokens(&self) {
        self.state.lock().unwrap().tokens.clear();
    }

    /// With a seed, findings equal in every sort key a request asks for come in another order
    /// for each request (Security Hub documents no order for ties); `None` keeps the order they
    /// were put in.
    pub fn shuffle_ties(&self, seed: Option<u64>) {
        self.state.lock().unwrap().shuffle = seed;
    }

    /// The finding with this `Id` as the fake holds it now.
    pub fn finding(&self, id: &str) -> Option<Value> {
        self.state.lock().unwrap().findings.iter().find(|f| f["Id"] == id).cloned()
    }

    /// Security Hub not enabled in `region`: GetFindings answers "not subscribed".
    pub fn disable(&self, region: &str) {
        self.state.lock().unwrap().disabled.insert(region.to_owned());
    }

    /// Refuses more than `limit` values for one filter field (Security Hub's limit is 20).
    pub fn limit_values_per_field(&self, limit: Option<usize>) {
        self.state.lock().unwrap().values_per_field = limit;
    }

    /// Refuses every GetFindings with `error` (type, message) until called with `None`.
    pub fn refuse_listings(&self, error: Option<(&str, &str)>) {
        self.state.lock().unwrap().refuse = error.map(|(kind, message)| (kind.to_owned(), message.to_owned()));
    }

    pub fn calls(&self) -> Vec<HubCall> {
        self.state.lock().unwrap().calls.clone()
    }

    /// The GetFindings calls, in order.
    pub fn get_findings_calls(&self) -> Vec<HubCall> {
        self.calls().into_iter().filter(|c| c.operation == "GetFindings").collect()
    }
}

fn error(status: StatusCode, kind: &str, message: &str) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "application/json"), (header::HeaderName::from_static("x-amzn-errortype"), kind)],
        json!({"Code": kind, "Message": message}).to_string(),
    )
        .into_response()
}

/// The HTTP status Security Hub answers with each error type (its API reference).
fn status_of(kind: &str) -> StatusCode {
    match kind {
        "InvalidAccessException" => StatusCode::UNAUTHORIZED,
        "AccessDeniedException" => StatusCode::FORBIDDEN,
        "LimitExceededException" => StatusCode::TOO_MANY_REQUESTS,
        "InternalException" => StatusCode::INTERNAL_SERVER_ERROR,
        _ => StatusCode::BAD_REQUEST,
    }
}

fn invalid(message: impl Into<String>) -> Refusal {
    Refusal { status: StatusCode::BAD_REQUEST, kind: "InvalidInputException".into(), message: message.into() }
}

struct Refusal {
    status: StatusCode,
    kind: String,
    message: String,
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

/// A timestamp in one of the forms Security Hub documents: RFC 3339 with `Z` or an offset, the
/// offset also without a colon (`-1759`), at most 9 fractional digits.
fn parse_time(raw: &str) -> Option<DateTime<Utc>> {
    let fraction = raw.split_once('.').map(|(_, rest)| rest.chars().take_while(char::is_ascii_digit).count());
    if fraction.is_some_and(|digits| digits == 0 || digits > 9) {
        return None;
    }
    DateTime::parse_from_rfc3339(raw)
        .or_else(|_| DateTime::parse_from_str(raw, "%Y-%m-%dT%H:%M:%S%.f%z"))
        .ok()
        .map(|t| t.with_timezone(&Utc))
}

/// Where a string filter field is in a finding.
fn string_field<'f>(finding: &'f Value, field: &str) -> Option<&'f str> {
    let value = match field {
        "Id" | "AwsAccountId" | "Region" | "ProductName" | "ProductArn" | "GeneratorId" | "RecordState" | "Title" => {
            &finding[field]
        }
        "WorkflowStatus" => &finding["Workflow"]["Status"],
        "ComplianceStatus" => &finding["Compliance"]["Status"],
        "SeverityLabel" => &finding["Severity"]["Label"],
        _ => return None,
    };
    value.as_str()
}

const STRING_FIELDS: [&str; 11] = [
    "Id",
    "AwsAccountId",
    "Region",
    "ProductName",
    "ProductArn",
    "GeneratorId",
    "RecordState",
    "Title",
    "WorkflowStatus",
    "ComplianceStatus",
    "SeverityLabel",
];
const DATE_FIELDS: [&str; 4] = ["UpdatedAt", "CreatedAt", "FirstObservedAt", "LastObservedAt"];
const SORT_FIELDS: [&str; 3] = ["UpdatedAt", "CreatedAt", "Id"];

/// One field's string filters, checked: `(comparison, value)` pairs.
fn string_filters(field: &str, filters: &[Value]) -> Result<Vec<(String, String)>, Refusal> {
    let mut parsed = Vec::new();
    for filter in filters {
        let (Some(comparison), Some(value)) = (filter["Comparison"].as_str(), filter["Value"].as_str()) else {
            return Err(invalid(format!("Invalid filter for {field}: Comparison and Value are required")));
        };
        if !["EQUALS", "PREFIX", "NOT_EQUALS", "PREFIX_NOT_EQUALS", "CONTAINS", "NOT_CONTAINS"].contains(&comparison) {
            return Err(invalid(format!("Invalid comparison {comparison} for {field}")));
        }
        parsed.push((comparison.to_owned(), value.to_owned()));
    }
    let has = |c: &str| parsed.iter().any(|(comparison, _)| comparison == c);
    let conflict = (has("EQUALS") && (has("NOT_EQUALS") || has("PREFIX_NOT_EQUALS")))
        || (has("CONTAINS") && parsed.iter().any(|(c, _)| c != "CONTAINS"))
        || (has("NOT_CONTAINS") && parsed.iter().any(|(c, _)| c != "NOT_CONTAINS"));
    if conflict {
        return Err(invalid(format!("Invalid combination of comparisons for {field}")));
    }
    Ok(parsed)
}

fn string_matches(actual: Option<&str>, filters: &[(String, String)]) -> bool {
    let test = |comparison: &str, value: &str| match (comparison, actual) {
        ("EQUALS", Some(a)) => a == value,
        ("PREFIX", Some(a)) => a.starts_with(value),
        ("CONTAINS", Some(a)) => a.contains(value),
        ("NOT_EQUALS", a) => a != Some(value),
        ("PREFIX_NOT_EQUALS", a) => !a.is_some_and(|a| a.starts_with(value)),
        ("NOT_CONTAINS", a) => !a.is_some_and(|a| a.contains(value)),
        _ => false,
    };
    let negative = |c: &str| matches!(c, "NOT_EQUALS" | "PREFIX_NOT_EQUALS" | "NOT_CONTAINS");
    let (negative, positive): (Vec<_>, Vec<_>) = filters.iter().partition(|(c, _)| negative(c));
    (positive.is_empty() || positive.iter().any(|(c, v)| test(c, v))) && negative.iter().all(|(c, v)| test(c, v))
}

/// An inclusive `(start, end)` range of a date filter.
type Range = (DateTime<Utc>, DateTime<Utc>);

/// One field's date filters, checked.
fn date_filters(field: &str, filters: &[Value]) -> Result<Vec<Range>, Refusal> {
    let mut ranges = Vec::new();
    for filter in filters {
        let time = |name: &str| -> Result<Option<DateTime<Utc>>, Refusal> {
            match filter.get(name) {
                None | Some(Value::Null) => Ok(None),
                Some(raw) => raw
                    .as_str()
                    .and_then(parse_time)
                    .map(Some)
                    .ok_or_else(|| invalid(format!("Invalid timestamp {raw} for {field}.{name}"))),
            }
        };
        let range = filter.get("DateRange").filter(|r| !r.is_null());
        ranges.push(match (time("Start")?, time("End")?, range) {
            (Some(start), Some(end), None) => (start, end),
            (None, None, Some(range)) => {
                let days = range["Value"].as_i64().filter(|d| *d > 0);
                match (days, range["Unit"].as_str()) {
                    (Some(days), Some("DAYS")) => (Utc::now() - chrono::Duration::days(days), Utc::now()),
                    _ => return Err(invalid(format!("Invalid DateRange for {field}"))),
                }
            }
            _ => return Err(invalid(format!("Invalid date filter for {field}: give Start and End, or DateRange"))),
        });
    }
    Ok(ranges)
}

/// A checked filter of the request: a finding passes when it passes each.
enum Filter {
    Strings(String, Vec<(String, String)>),
    Dates(String, Vec<Range>),
}

impl Filter {
    fn matches(&self, finding: &Value) -> bool {
        match self {
            Filter::Strings(field, filters) => string_matches(string_field(finding, field), filters),
            Filter::Dates(field, ranges) => {
                let at = finding[field.as_str()].as_str().and_then(parse_time);
                at.is_some_and(|at| ranges.iter().any(|(start, end)| *start <= at && at <= *end))
            }
        }
    }
}

fn checked_filters(request: &Value, values_per_field: usize) -> Result<Vec<Filter>, Refusal> {
    let Some(fields) = request.get("Filters").and_then(Value::as_object) else { return Ok(Vec::new()) };
    if fields.len() > MAX_FIELDS {
        return Err(invalid(format!("Filters: at most {MAX_FIELDS} finding attributes")));
    }
    let mut checked = Vec::new();
    for (field, filters) in fields {
        let filters = filters.as_array().ok_or_else(|| invalid(format!("Filters.{field} must be a list")))?;
        if filters.len() > values_per_field {
            return Err(invalid(format!("Filters.{field}: at most {values_per_field} values")));
        }
        if STRING_FIELDS.contains(&field.as_str()) {
            checked.push(Filter::Strings(field.clone(), string_filters(field, filters)?));
        } else if DATE_FIELDS.contains(&field.as_str()) {
            checked.push(Filter::Dates(field.clone(), date_filters(field, filters)?));
        } else {
            // Not Security Hub's answer: the fake says plainly what it does not implement.
            return Err(invalid(format!("the fake Security Hub does not implement the filter {field}")));
        }
    }
    Ok(checked)
}

/// The sort keys of a finding for a request's criteria, to tell ties apart.
fn sort_key(finding: &Value, request: &Value) -> Vec<String> {
    let criteria = request.get("SortCriteria").and_then(Value::as_array).cloned().unwrap_or_default();
    criteria.iter().map(|c| finding[c["Field"].as_str().unwrap_or_default()].to_string()).collect()
}

/// Puts each run of findings equal in every sort key in another order (a seeded xorshift).
fn shuffle_ties(findings: &mut [&Value], request: &Value, seed: u64) {
    let mut state = seed | 1;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let mut start = 0;
    while start < findings.len() {
        let key = sort_key(findings[start], request);
        let end = (start..findings.len()).find(|&i| sort_key(findings[i], request) != key).unwrap_or(findings.len());
        for i in (start + 1..end).rev() {
            let j = start + (next() as usize) % (i - start + 1);
            findings.swap(i, j);
        }
        start = end;
    }
}

fn sort(findings: &mut [&Value], request: &Value) -> Result<(), Refusal> {
    let criteria = request.get("SortCriteria").and_then(Value::as_array).cloned().unwrap_or_default();
    // Applied last first, each sort stable: the first criterion decides, the next breaks ties.
    for criterion in criteria.iter().rev() {
        let field = criterion["Field"].as_str().unwrap_or_default();
        if !SORT_FIELDS.contains(&field) {
            return Err(invalid(format!("the fake Security Hub does not sort by {field:?}")));
        }
        let descending = match criterion["SortOrder"].as_str() {
            None | Some("asc") => false,
            Some("desc") => true,
            Some(other) => return Err(invalid(format!("Invalid SortOrder {other}"))),
        };
        let key = |f: &Value| -> (Option<DateTime<Utc>>, String) {
            let raw = f[field].as_str().unwrap_or_default();
            if field == "Id" { (None, raw.to_owned()) } else { (parse_time(raw), String::new()) }
        };
        findings.sort_by(|a, b| if descending { key(b).cmp(&key(a)) } else { key(a).cmp(&key(b)) });
    }
    Ok(())
}

/// What a page token continues: the request's filters and sort (Security Hub refuses a token
/// sent with another request body).
fn listing_of(request: &Value) -> Value {
    json!({"Filters": request.get("Filters"), "SortCriteria": request.get("SortCriteria")})
}

fn page(state: &mut HubState, region: &str, request: &Value) -> Result<(Vec<Value>, Option<String>), Refusal> {
    if let Some((kind, message)) = state.refuse.clone() {
        return Err(Refusal { status: status_of(&kind), kind, message });
    }
    if state.disabled.contains(region) {
        let account = request["Filters"]["AwsAccountId"][0]["Value"].as_str().unwrap_or("123456789012");
        return Err(Refusal {
            status: status_of("InvalidAccessException"),
            kind: "InvalidAccessException".into(),
            message: format!("Account {account} is not subscribed to AWS Security Hub"),
        });
    }
    let max = request.get("MaxResults").map(|m| m.as_u64().unwrap_or(0)).unwrap_or(MAX_RESULTS);
    if !(1..=MAX_RESULTS).contains(&max) {
        return Err(invalid(format!("MaxResults must be between 1 and {MAX_RESULTS}")));
    }
    let filters = checked_filters(request, state.values_per_field.unwrap_or(MAX_VALUES_PER_FIELD))?;
    let offset = match request.get("NextToken").and_then(Value::as_str).filter(|t| !t.is_empty()) {
        None => 0,
        Some(token) => match state.tokens.get(token) {
            Some((listing, offset)) if *listing == listing_of(request) => *offset,
            _ => return Err(invalid("The NextToken is invalid or was given for another request")),
        },
    };
    let mut matching: Vec<&Value> = state
        .findings
        .iter()
        .filter(|f| f["Region"] == region)
        .filter(|f| filters.iter().all(|filter| filter.matches(f)))
        .collect();
    sort(&mut matching, request)?;
    if let Some(seed) = state.shuffle {
        shuffle_ties(&mut matching, request, seed.wrapping_add(state.calls.len() as u64).wrapping_mul(0x9e37_79b9));
    }
    let max = max as usize;
    let findings: Vec<Value> = matching.iter().skip(offset).take(max).map(|f| (*f).clone()).collect();
    let next = (offset + max < matching.len()).then(|| {
        state.issued += 1;
        format!("{:016x}{:08x}", state.issued.wrapping_mul(0x9e37_79b9_7f4a_7c15), offset + max)
    });
    if let Some(token) = &next {
        state.tokens.insert(token.clone(), (listing_of(request), offset + max));
    }
    Ok((findings, next))
}

async fn get_findings(State(state): State<Arc<Mutex<HubState>>>, headers: HeaderMap, body: Bytes) -> Response {
    let region = signed_region(&headers);
    let request: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let mut state = state.lock().unwrap();
    let answer = page(&mut state, &region, &request);
    let call = |answer, next_token, ids| HubCall {
        operation: "GetFindings",
        region: region.clone(),
        body: request.clone(),
        answer,
        next_token,
        ids,
    };
    match answer {
        Ok((findings, next)) => {
            let ids = findings.iter().filter_map(|f| f["Id"].as_str().map(str::to_owned)).collect();
            state.calls.push(call(Ok(findings.len()), next.clone(), ids));
            let mut body = json!({"Findings": findings});
            if let Some(token) = next {
                body["NextToken"] = json!(token);
            }
            ([(header::CONTENT_TYPE, "application/json")], body.to_string()).into_response()
        }
        Err(refusal) => {
            state.calls.push(call(Err(refusal.kind.clone()), None, Vec::new()));
            error(refusal.status, &refusal.kind, &refusal.message)
        }
    }
}

/// BatchUpdateFindings: the customer's workflow status (and note) on findings named by `Id` and
/// `ProductArn`; `UpdatedAt` is left as it was.
fn batch_update(state: &mut HubState, request: &Value) -> Result<Value, Refusal> {
    let identifiers = request["FindingIdentifiers"].as_array().cloned().unwrap_or_default();
    if identifiers.is_empty() || identifiers.len() > MAX_BATCH_UPDATE {
        return Err(invalid(format!("FindingIdentifiers: 1 to {MAX_BATCH_UPDATE} findings")));
    }
    let implemented = ["FindingIdentifiers", "Workflow", "Note"];
    if let Some(other) =
        request.as_object().into_iter().flatten().map(|(k, _)| k).find(|k| !implemented.contains(&k.as_str()))
    {
        return Err(invalid(format!("the fake Security Hub does not implement BatchUpdateFindings.{other}")));
    }
    let status = request["Workflow"]["Status"].as_str();
    if status.is_some_and(|s| !["NEW", "NOTIFIED", "RESOLVED", "SUPPRESSED"].contains(&s)) {
        return Err(invalid("Invalid Workflow.Status"));
    }
    let (mut processed, mut unprocessed) = (Vec::new(), Vec::new());
    for identifier in identifiers {
        let held = state
            .findings
            .iter_mut()
            .find(|f| f["Id"] == identifier["Id"] && f["ProductArn"] == identifier["ProductArn"]);
        let Some(finding) = held else {
            unprocessed.push(json!({"FindingIdentifier": identifier, "ErrorCode": "FindingNotFound",
                                    "ErrorMessage": "Finding Not Found"}));
            continue;
        };
        if let Some(status) = status {
            finding["Workflow"] = json!({"Status": status});
        }
        if let Some(note) = request.get("Note") {
            finding["Note"] = json!({"Text": note["Text"], "UpdatedBy": note["UpdatedBy"],
                                     "UpdatedAt": Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true)});
        }
        processed.push(identifier);
    }
    Ok(json!({"ProcessedFindings": processed, "UnprocessedFindings": unprocessed}))
}

async fn batch_update_findings(State(state): State<Arc<Mutex<HubState>>>, headers: HeaderMap, body: Bytes) -> Response {
    let region = signed_region(&headers);
    let request: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let mut state = state.lock().unwrap();
    let answer = batch_update(&mut state, &request);
    let logged =
        answer.as_ref().map(|a| a["ProcessedFindings"].as_array().map_or(0, Vec::len)).map_err(|r| r.kind.clone());
    state.calls.push(HubCall {
        operation: "BatchUpdateFindings",
        region,
        body: request,
        answer: logged,
        next_token: None,
        ids: Vec::new(),
    });
    match answer {
        Ok(body) => ([(header::CONTENT_TYPE, "application/json")], body.to_string()).into_response(),
        Err(refusal) => error(refusal.status, &refusal.kind, &refusal.message),
    }
}
