//! CloudTrail events: the typed view of one raw event that the audit trail filters on, and its
//! row in `cloudtrail_events`. Pure: no I/O here.

use std::borrow::Cow;
use std::net::IpAddr;

use chrono::{DateTime, NaiveDateTime, Utc};
use serde::Deserialize;
use serde_json::value::RawValue;

use crate::db::copy::CopyBuffer;
use crate::geo::GeoInfo;

/// Columns written by [`CloudTrailEvent::write_row`], in order.
pub const COLUMNS: &str = "account_id, event_time, event_id, region, event_source, event_name, event_type, \
    principal_arn, principal_type, principal_id, user_name, access_key_id, source_ip, source_ip_text, \
    user_agent, error_code, error_message, read_only, resource_ids, geo_country, geo_city, \
    geo_latitude, geo_longitude, geo_asn, geo_as_org, source_is_tor, source_is_vpn, source_is_hosting, \
    source_is_aws, raw";

/// Account id used when neither the event nor its file names one.
pub const UNKNOWN_ACCOUNT: &str = "unknown";

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum EventError {
    #[error("malformed event: {0}")]
    Malformed(String),
    #[error("no eventTime (nor @timestamp)")]
    MissingTime,
    #[error("unreadable time {value:?} in {field}")]
    BadTime { field: &'static str, value: String },
    #[error("neither eventName nor eventSource: not a CloudTrail event")]
    NotAnEvent,
}

/// The fields of a CloudTrail record that Skywarden reads. Unknown fields are ignored here and
/// kept in the raw JSON.
#[derive(Deserialize, Default)]
#[serde(default)]
struct EventFields<'a> {
    #[serde(rename = "eventID", borrow)]
    event_id: Option<Cow<'a, str>>,
    #[serde(rename = "eventTime", borrow)]
    event_time: Option<Cow<'a, str>>,
    #[serde(rename = "@timestamp", borrow)]
    at_timestamp: Option<Cow<'a, str>>,
    #[serde(rename = "eventSource", borrow)]
    event_source: Option<Cow<'a, str>>,
    #[serde(rename = "eventName", borrow)]
    event_name: Option<Cow<'a, str>>,
    #[serde(rename = "eventType", borrow)]
    event_type: Option<Cow<'a, str>>,
    #[serde(rename = "awsRegion", borrow)]
    region: Option<Cow<'a, str>>,
    #[serde(rename = "sourceIPAddress", borrow)]
    source_ip: Option<Cow<'a, str>>,
    #[serde(rename = "userAgent", borrow)]
    user_agent: Option<Cow<'a, str>>,
    #[serde(rename = "errorCode", borrow)]
    error_code: Option<Cow<'a, str>>,
    #[serde(rename = "errorMessage", borrow)]
    error_message: Option<Cow<'a, str>>,
    #[serde(rename = "readOnly")]
    read_only: Option<serde_json::Value>,
    #[serde(rename = "recipientAccountId", borrow)]
    recipient_account_id: Option<Cow<'a, str>>,
    #[serde(rename = "userIdentity", borrow)]
    user_identity: Option<UserIdentity<'a>>,
    #[serde(rename = "requestParameters", borrow)]
    request_parameters: Option<&'a RawValue>,
    #[serde(rename = "responseElements", borrow)]
    response_elements: Option<&'a RawValue>,
    /// Read leniently: hand-made events sometimes carry a string here.
    #[serde(borrow)]
    resources: Option<&'a RawValue>,
    /// A string in real events, a boolean in some hand-made ones: read either.
    #[serde(rename = "sessionCredentialFromConsole", borrow)]
    console_session: Option<&'a RawValue>,
    /// Set on a LookupEvents item (`{"EventId": …, "CloudTrailEvent": "<event JSON>"}`).
    #[serde(rename = "CloudTrailEvent", borrow)]
    lookup_event_json: Option<Cow<'a, str>>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct UserIdentity<'a> {
    #[serde(rename = "type", borrow)]
    kind: Option<Cow<'a, str>>,
    #[serde(borrow)]
    arn: Option<Cow<'a, str>>,
    #[serde(rename = "principalId", borrow)]
    principal_id: Option<Cow<'a, str>>,
    #[serde(rename = "accountId", borrow)]
    account_id: Option<Cow<'a, str>>,
    #[serde(rename = "userName", borrow)]
    user_name: Option<Cow<'a, str>>,
    #[serde(rename = "accessKeyId", borrow)]
    access_key_id: Option<Cow<'a, str>>,
    #[serde(rename = "sessionContext", borrow)]
    session_context: Option<SessionContext<'a>>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct SessionContext<'a> {
    #[serde(rename = "sessionIssuer", borrow)]
    session_issuer: Option<SessionIssuer<'a>>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct SessionIssuer<'a> {
    #[serde(rename = "userName", borrow)]
    user_name: Option<Cow<'a, str>>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct EventResource<'a> {
    #[serde(rename = "ARN", borrow)]
    arn: Option<Cow<'a, str>>,
}

impl EventFields<'_> {
    /// `eventTime`, else `@timestamp`.
    fn time(&self) -> Result<DateTime<Utc>, EventError> {
        match (&self.event_time, &self.at_timestamp) {
            (Some(t), _) => {
                parse_time(t).ok_or_else(|| EventError::BadTime { field: "eventTime", value: t.to_string() })
            }
            (None, Some(t)) => {
                parse_time(t).ok_or_else(|| EventError::BadTime { field: "@timestamp", value: t.to_string() })
            }
            (None, None) => Err(EventError::MissingTime),
        }
    }

    /// Events without an id (hand-made samples) get a stable one from their content, so a
    /// re-import still deduplicates.
    fn id(&self, raw: &str) -> String {
        match self.event_id.as_deref().filter(|id| !id.is_empty()) {
            Some(id) => id.to_string(),
            None => format!("sw-{:032x}", xxhash_rust::xxh3::xxh3_128(raw.as_bytes())),
        }
    }

    /// `readOnly` as a boolean or a string, else guessed from the event name.
    fn read_only(&self) -> Option<bool> {
        match &self.read_only {
            Some(serde_json::Value::Bool(b)) => Some(*b),
            Some(serde_json::Value::String(s)) => s.parse::<bool>().ok(),
            _ => self.event_name.as_deref().map(is_read_only_name),
        }
    }

    /// The resources the call named: in its parameters, its response (unless it only read)
    /// and its `resources` list.
    fn resource_ids(&self, read_only: Option<bool>) -> Vec<String> {
        let mut resource_ids = Vec::new();
        if let Some(params) = self.request_parameters {
            collect_resource_ids(params, &mut resource_ids);
        }
        // A read call's response lists what it read, not what it touched.
        if read_only != Some(true)
            && let Some(response) = self.response_elements
        {
            collect_resource_ids(response, &mut resource_ids);
        }
        let resources: Vec<EventResource<'_>> =
            self.resources.and_then(|r| serde_json::from_str(r.get()).ok()).unwrap_or_default();
        for resource in &resources {
            if let Some(arn) = resource.arn.as_deref() {
                push_unique(&mut resource_ids, arn);
            }
        }
        resource_ids.truncate(MAX_RESOURCE_IDS);
        resource_ids
    }
}

impl UserIdentity<'_> {
    /// The user name, else the role a session was issued by, else "root" for the root user.
    fn display_name(&self) -> Option<String> {
        self.user_name
            .as_deref()
            .or_else(|| self.session_context.as_ref()?.session_issuer.as_ref()?.user_name.as_deref())
            .or_else(|| (self.kind.as_deref() == Some("Root")).then_some("root"))
            .map(str::to_string)
    }
}

/// One CloudTrail event, ready to store.
#[derive(Debug, Clone)]
pub struct CloudTrailEvent {
    pub account_id: String,
    pub event_time: DateTime<Utc>,
    pub event_id: String,
    pub region: Option<String>,
    pub event_source: Option<String>,
    pub event_name: Option<String>,
    pub event_type: Option<String>,
    pub principal_arn: Option<String>,
    pub principal_type: Option<String>,
    pub principal_id: Option<String>,
    pub user_name: Option<String>,
    pub access_key_id: Option<String>,
    /// `sourceIPAddress` when it is an address.
    pub source_ip: Option<IpAddr>,
    /// `sourceIPAddress` as written (a service name, an anonymised value ...).
    pub source_ip_text: Option<String>,
    pub user_agent: Option<String>,
    pub error_code: Option<String>,
    pub error_message: Option<String>,
    pub read_only: Option<bool>,
    pub resource_ids: Vec<String>,
    /// Whether the call was made from a console session (`sessionCredentialFromConsole`).
    pub console_session: bool,
    /// The event JSON as received (the inner event for LookupEvents items).
    pub raw: String,
}

impl CloudTrailEvent {
    /// Parses one raw event. `default_account` is used when the event names no account (for
    /// example the account in an S3 object key).
    pub fn parse(raw: &str, default_account: Option<&str>) -> Result<Self, EventError> {
        let mut fields: EventFields<'_> =
            serde_json::from_str(raw).map_err(|e| EventError::Malformed(e.to_string()))?;
        if let Some(inner) = fields.lookup_event_json.as_deref()
            && fields.event_name.is_none()
        {
            return Self::parse(inner, default_account);
        }
        if fields.event_name.is_none() && fields.event_source.is_none() {
            return Err(EventError::NotAnEvent);
        }
        let event_time = fields.time()?;
        let identity = fields.user_identity.take().unwrap_or_default();
        let account_id = fields
            .recipient_account_id
            .as_deref()
            .or(identity.account_id.as_deref())
            .filter(|a| !a.is_empty())
            .or(default_account)
            .unwrap_or(UNKNOWN_ACCOUNT)
            .to_string();
        let event_id = fields.id(raw);
        let user_name = identity.display_name();
        let read_only = fields.read_only();
        let resource_ids = fields.resource_ids(read_only);
        Ok(Self {
            account_id,
            event_time,
            event_id,
            region: fields.region.map(Cow::into_owned),
            event_source: fields.event_source.map(Cow::into_owned),
            event_name: fields.event_name.map(Cow::into_owned),
            event_type: fields.event_type.map(Cow::into_owned),
            principal_arn: identity.arn.map(Cow::into_owned),
            principal_type: identity.kind.map(Cow::into_owned),
            principal_id: identity.principal_id.map(Cow::into_owned),
            user_name,
            access_key_id: identity.access_key_id.map(Cow::into_owned),
            source_ip: fields.source_ip.as_deref().and_then(|s| s.parse::<IpAddr>().ok()),
            source_ip_text: fields.source_ip.map(Cow::into_owned),
            user_agent: fields.user_agent.map(Cow::into_owned),
            error_code: fields.error_code.map(Cow::into_owned),
            error_message: fields.error_message.map(Cow::into_owned),
            read_only,
            resource_ids,
            console_session: fields.console_session.is_some_and(|v| matches!(v.get(), "\"true\"" | "true")),
            raw: raw.to_string(),
        })
    }

    /// Appends this event as one COPY row in [`COLUMNS`] order.
    pub fn write_row(&self, geo: Option<&GeoInfo>, out: &mut CopyBuffer) {
        out.text(&self.account_id);
        out.raw(&self.event_time.to_rfc3339_opts(chrono::SecondsFormat::Micros, true));
        out.text(&self.event_id);
        out.opt_text(self.region.as_deref());
        out.opt_text(self.event_source.as_deref());
        out.opt_text(self.event_name.as_deref());
        out.opt_text(self.event_type.as_deref());
        out.opt_text(self.principal_arn.as_deref());
        out.opt_text(self.principal_type.as_deref());
        out.opt_text(self.principal_id.as_deref());
        out.opt_text(self.user_name.as_deref());
        out.opt_text(self.access_key_id.as_deref());
        out.opt_display(self.source_ip);
        out.opt_text(self.source_ip_text.as_deref());
        out.opt_text(self.user_agent.as_deref());
        out.opt_text(self.error_code.as_deref());
        out.opt_text(self.error_message.as_deref());
        out.bool(self.read_only);
        out.text_array(self.resource_ids.iter().map(String::as_str));
        out.opt_text(geo.and_then(|g| g.country.as_deref()));
        out.opt_text(geo.and_then(|g| g.city.as_deref()));
        out.opt_display(geo.and_then(|g| g.latitude));
        out.opt_display(geo.and_then(|g| g.longitude));
        out.opt_display(geo.and_then(|g| g.asn));
        out.opt_text(geo.and_then(|g| g.as_org.as_deref()));
        out.bool(geo.and_then(|g| g.is_tor));
        out.bool(geo.and_then(|g| g.is_vpn));
        out.bool(geo.and_then(|g| g.is_hosting));
        out.bool(geo.and_then(|g| g.is_aws));
        out.text(&jsonb_safe(&self.raw));
        out.end_row();
    }
}

const MAX_RESOURCE_IDS: usize = 64;

/// Parameter names whose string values name a resource (IAM entities, buckets, trails ...).
const RESOURCE_NAME_KEYS: &[&str] = &[
    "roleName",
    "userName",
    "groupName",
    "policyArn",
    "instanceProfileName",
    "bucketName",
    "trailName",
    "functionName",
    "secretId",
    "keyId",
    "roleArn",
    "instanceProfileArn",
    "snapshotId",
    "dBInstanceIdentifier",
];

/// Prefixes of EC2-style ids (`sg-0123abcd`, `i-0abc...`).
const ID_PREFIXES: &[&str] = &[
    "sg",
    "sgr",
    "i",
    "vpc",
    "subnet",
    "eni",
    "ami",
    "vol",
    "snap",
    "igw",
    "nat",
    "rtb",
    "acl",
    "vpce",
    "pcx",
    "tgw",
    "tgw-attach",
    "eipalloc",
    "eipassoc",
    "lt",
    "fl",
    "iip-assoc",
    "key",
    "dopt",
    "cgw",
    "vgw",
];

fn is_ec2_style_id(value: &str) -> bool {
    let Some(dash) = value.rfind('-') else { return false };
    let (prefix, hex) = (&value[..dash], &value[dash + 1..]);
    (8..=17).contains(&hex.len()) && hex.bytes().all(|b| b.is_ascii_hexdigit()) && ID_PREFIXES.contains(&prefix)
}

fn push_unique(ids: &mut Vec<String>, value: &str) {
    if !value.is_empty() && ids.len() < MAX_RESOURCE_IDS && !ids.iter().any(|v| v == value) {
        ids.push(value.to_string());
    }
}

/// Collects resource ids and names from a request or response object, in document order.
/// A token scan of the (already validated) JSON text: no value tree is built, since this runs
/// for every event imported.
fn collect_resource_ids(raw: &RawValue, ids: &mut Vec<String>) {
    let text = raw.get();
    let bytes = text.as_bytes();
    let mut last_key: Option<Cow<'_, str>> = None;
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] != b'"' {
            i += 1;
            continue;
        }
        // Find the closing quote, stepping over escapes.
        let mut end = i + 1;
        let mut escaped = false;
        while end < bytes.len() {
            match bytes[end] {
                b'\\' => {
                    escaped = true;
                    end += 2;
                }
                b'"' => break,
                _ => end += 1,
            }
        }
        if end >= bytes.len() {
            return;
        }
        let value: Cow<'_, str> = if escaped {
            match serde_json::from_str::<String>(&text[i..=end]) {
                Ok(decoded) => Cow::Owned(decoded),
                Err(_) => Cow::Borrowed(""),
            }
        } else {
            Cow::Borrowed(&text[i + 1..end])
        };
        let mut next = end + 1;
        while next < bytes.len() && bytes[next].is_ascii_whitespace() {
            next += 1;
        }
        if bytes.get(next) == Some(&b':') {
            last_key = Some(value);
        } else if is_ec2_style_id(&value)
            || value.starts_with("arn:aws")
            || last_key.as_deref().is_some_and(|k| RESOURCE_NAME_KEYS.contains(&k))
        {
            push_unique(ids, &value);
        }
        i = end + 1;
    }
}

fn is_read_only_name(name: &str) -> bool {
    ["Describe", "List", "Get", "Lookup", "Head", "Search", "Scan", "Query", "BatchGet"]
        .iter()
        .any(|prefix| name.starts_with(prefix))
}

/// Parses the timestamps found in CloudTrail exports: RFC 3339 (`2020-09-14T01:19:40Z`) and the
/// space-separated form some pipelines write (`2024-01-01 00:00:00.000000000`, UTC).
pub fn parse_time(value: &str) -> Option<DateTime<Utc>> {
    if let Ok(t) = DateTime::parse_from_rfc3339(value) {
        return Some(t.with_timezone(&Utc));
    }
    ["%Y-%m-%d %H:%M:%S%.f", "%Y-%m-%dT%H:%M:%S%.f"]
        .iter()
        .find_map(|format| NaiveDateTime::parse_from_str(value, format).ok())
        .map(|naive| naive.and_utc())
}

/// PostgreSQL's jsonb rejects the `\u0000` escape; replace it (only where it is an escape, not
/// an escaped backslash followed by `u0000`) with U+FFFD.
fn jsonb_safe(raw: &str) -> Cow<'_, str> {
    if !raw.contains("\\u0000") {
        return Cow::Borrowed(raw);
    }
    let bytes = raw.as_bytes();
    let mut out = String::with_capacity(raw.len());
    let mut i = 0;
    let mut last = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\' {
            if raw[i..].starts_with("\\u0000") {
                out.push_str(&raw[last..i]);
                out.push_str("\\ufffd");
                i += 6;
                last = i;
                continue;
            }
            i += 2; // skip the escaped character, which may itself be a backslash
            continue;
        }
        i += 1;
    }
    out.push_str(&raw[last.min(raw.len())..]);
    Cow::Owned(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    const CONSOLE_LOGIN: &str = r#"{"eventVersion":"1.05","userIdentity":{"type":"IAMUser","principalId":"AIDAEXAMPLE","arn":"arn:aws:iam::111122223333:user/alice","accountId":"111122223333","userName":"alice"},"eventTime":"2026-11-02T08:15:00Z","eventSource":"signin.amazonaws.com","eventName":"ConsoleLogin","awsRegion":"us-east-1","sourceIPAddress":"81.2.69.142","userAgent":"Mozilla/5.0","requestParameters":null,"responseElements":{"ConsoleLogin":"Success"},"additionalEventData":{"MFAUsed":"No"},"eventID":"e-1","eventType":"AwsConsoleSignIn","recipientAccountId":"111122223333"}"#;

    #[test]
    fn parses_console_login() {
        let event = CloudTrailEvent::parse(CONSOLE_LOGIN, None).unwrap();
        assert_eq!(event.account_id, "111122223333");
        assert_eq!(event.event_id, "e-1");
        assert_eq!(event.event_name.as_deref(), Some("ConsoleLogin"));
        assert_eq!(event.user_name.as_deref(), Some("alice"));
        assert_eq!(event.source_ip, Some("81.2.69.142".parse().unwrap()));
        assert_eq!(event.event_time.to_rfc3339(), "2026-11-02T08:15:00+00:00");
        assert_eq!(event.read_only, Some(false));
    }

    #[test]
    fn keeps_service_and_anonymised_source_addresses_as_text() {
        for source in ["config.amazonaws.com", "08.1.250.216"] {
            let raw = CONSOLE_LOGIN.replace("81.2.69.142", source);
            let event = CloudTrailEvent::parse(&raw, None).unwrap();
            assert_eq!(event.source_ip, None);
            assert_eq!(event.source_ip_text.as_deref(), Some(source));
        }
    }

    #[test]
    fn uses_at_timestamp_and_space_separated_times() {
        let raw = r#"{"@timestamp":"2020-09-14T01:19:40.123Z","eventName":"ListBuckets","eventSource":"s3.amazonaws.com","eventID":"x"}"#;
        let event = CloudTrailEvent::parse(raw, Some("123456789012")).unwrap();
        assert_eq!(event.event_time.timestamp_millis(), 1_600_046_380_123);
        assert_eq!(event.account_id, "123456789012");
        assert_eq!(event.read_only, Some(true));
        let raw = r#"{"eventTime":"2024-01-01 00:00:00.000000000","eventName":"StopLogging","eventSource":"cloudtrail.amazonaws.com"}"#;
        let event = CloudTrailEvent::parse(raw, None).unwrap();
        assert_eq!(event.event_time.timestamp(), 1_704_067_200);
        assert!(event.event_id.starts_with("sw-"), "a stable id is derived: {}", event.event_id);
        assert_eq!(CloudTrailEvent::parse(raw, None).unwrap().event_id, event.event_id);
    }

    #[test]
    fn reads_console_session_flags_of_either_type() {
        for (flag, expected) in [("\"true\"", true), ("true", true), ("\"false\"", false), ("null", false)] {
            let raw =
                CONSOLE_LOGIN.replace("\"eventID\"", &format!("\"sessionCredentialFromConsole\":{flag},\"eventID\""));
            assert_eq!(CloudTrailEvent::parse(&raw, None).unwrap().console_session, expected, "{flag}");
        }
    }

    #[test]
    fn rejects_records_that_are_not_events() {
        assert_eq!(CloudTrailEvent::parse(r#"{"eventName":"X"}"#, None).unwrap_err(), EventError::MissingTime);
        assert_eq!(CloudTrailEvent::parse(r#"{"foo":1}"#, None).unwrap_err(), EventError::NotAnEvent);
        assert!(matches!(CloudTrailEvent::parse("[1]", None), Err(EventError::Malformed(_))));
        assert!(matches!(
            CloudTrailEvent::parse(r#"{"eventName":"X","eventTime":"yesterday"}"#, None),
            Err(EventError::BadTime { field: "eventTime", .. })
        ));
    }

    #[test]
    fn unwraps_lookup_events_items() {
        let item = serde_json::json!({"EventId": "e-1", "EventName": "ConsoleLogin", "CloudTrailEvent": CONSOLE_LOGIN});
        let event = CloudTrailEvent::parse(&item.to_string(), None).unwrap();
        assert_eq!(event.event_id, "e-1");
        assert_eq!(event.raw, CONSOLE_LOGIN);
    }

    #[test]
    fn collects_touched_resources() {
        let raw = r#"{"eventTime":"2026-11-02T09:00:00Z","eventSource":"ec2.amazonaws.com","eventName":"AuthorizeSecurityGroupIngress","readOnly":false,
            "requestParameters":{"groupId":"sg-0a1b2c3d4e5f60718","ipPermissions":{"items":[{"ipProtocol":"tcp","fromPort":22,"toPort":22,"ipRanges":{"items":[{"cidrIp":"2a02:d300::1/128"}]}}]}},
            "responseElements":{"securityGroupRuleSet":{"items":[{"securityGroupRuleId":"sgr-0123456789abcdef0","groupId":"sg-0a1b2c3d4e5f60718"}]}}}"#;
        let event = CloudTrailEvent::parse(raw, None).unwrap();
        assert_eq!(event.resource_ids, vec!["sg-0a1b2c3d4e5f60718", "sgr-0123456789abcdef0"]);
        let raw = r#"{"eventTime":"2026-11-02T09:00:00Z","eventSource":"iam.amazonaws.com","eventName":"AttachRolePolicy","requestParameters":{"roleName":"ssm-quick-setup","policyArn":"arn:aws:iam::aws:policy/AmazonSSMManagedInstanceCore"}}"#;
        let event = CloudTrailEvent::parse(raw, None).unwrap();
        assert_eq!(event.resource_ids, vec!["ssm-quick-setup", "arn:aws:iam::aws:policy/AmazonSSMManagedInstanceCore"]);
        let raw = r#"{"eventTime":"2026-11-02T09:00:00Z","eventSource":"iam.amazonaws.com","eventName":"CreateUser","requestParameters":{"userName":"back\u0075p-admin","tags":[{"key":"team","value":"ops"}]}}"#;
        let event = CloudTrailEvent::parse(raw, None).unwrap();
        assert_eq!(event.resource_ids, vec!["backup-admin"], "escaped names are decoded");
        let raw = r#"{"eventTime":"2026-11-12T05:40:17Z","eventSource":"cloudtrail.amazonaws.com","eventName":"StopLogging","requestParameters":{"name":"arn:aws:cloudtrail:us-east-1:111122223333:trail/management-trail"}}"#;
        let event = CloudTrailEvent::parse(raw, None).unwrap();
        assert_eq!(event.resource_ids, vec!["arn:aws:cloudtrail:us-east-1:111122223333:trail/management-trail"]);
    }

    #[test]
    fn jsonb_safe_replaces_only_real_nul_escapes() {
        assert_eq!(jsonb_safe(r#"{"a":"x\u0000y"}"#), r#"{"a":"x\ufffdy"}"#);
        assert_eq!(jsonb_safe(r#"{"a":"x\\u0000y"}"#), r#"{"a":"x\\u0000y"}"#);
        assert_eq!(jsonb_safe(r#"{"a":"plain"}"#), r#"{"a":"plain"}"#);
    }
}
