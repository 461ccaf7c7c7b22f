//! The view of a stored CloudTrail event that policies evaluate: the typed columns the importer
//! filled (geo included) and the raw event for rules that look deeper.

use std::net::IpAddr;
use std::sync::OnceLock;

use chrono::{DateTime, Utc};

use crate::geo::GeoInfo;
use crate::ingest::cloudtrail::CloudTrailEvent;

#[derive(Clone, Debug)]
pub struct PolicyEvent {
    pub account_id: String,
    pub event_id: String,
    pub event_time: DateTime<Utc>,
    pub event_source: Option<String>,
    pub event_name: Option<String>,
    pub principal_arn: Option<String>,
    pub principal_type: Option<String>,
    pub user_name: Option<String>,
    pub access_key_id: Option<String>,
    pub source_ip: Option<IpAddr>,
    pub source_ip_text: Option<String>,
    pub user_agent: Option<String>,
    pub error_code: Option<String>,
    pub resource_ids: Vec<String>,
    pub geo_country: Option<String>,
    pub geo_city: Option<String>,
    pub geo_latitude: Option<f64>,
    pub geo_longitude: Option<f64>,
    pub geo_asn: Option<i64>,
    /// `sessionCredentialFromConsole`, when known without parsing the raw event.
    pub console_session: Option<bool>,
    pub raw: RawJson,
}

/// The raw event as text, parsed into a JSON value only when a policy looks past the typed
/// fields (most events never are: rules reject them on `eventSource`/`eventName`).
#[derive(Clone, Debug)]
pub struct RawJson {
    text: String,
    value: OnceLock<serde_json::Value>,
}

impl RawJson {
    pub fn new(text: String) -> Self {
        Self { text, value: OnceLock::new() }
    }

    pub fn text(&self) -> &str {
        &self.text
    }

    /// Only `requestParameters`, parsed without building the rest of the event.
    pub fn request_parameters(&self) -> serde_json::Value {
        #[derive(serde::Deserialize)]
        struct Request {
            #[serde(rename = "requestParameters", default)]
            parameters: serde_json::Value,
        }
        match self.value.get() {
            Some(value) => value["requestParameters"].clone(),
            None => serde_json::from_str::<Request>(&self.text).map(|r| r.parameters).unwrap_or_default(),
        }
    }

    /// The parsed event (`null` if the text is not JSON, which the importer never stores).
    pub fn value(&self) -> &serde_json::Value {
        self.value.get_or_init(|| serde_json::from_str(&self.text).unwrap_or(serde_json::Value::Null))
    }
}

impl PolicyEvent {
    /// The same view, built from a freshly parsed event (benchmarks and tests, which skip the
    /// database).
    pub fn from_parsed(event: CloudTrailEvent, geo: Option<&GeoInfo>) -> Self {
        Self {
            account_id: event.account_id,
            event_id: event.event_id,
            event_time: event.event_time,
            event_source: event.event_source,
            event_name: event.event_name,
            principal_arn: event.principal_arn,
            principal_type: event.principal_type,
            user_name: event.user_name,
            access_key_id: event.access_key_id,
            source_ip: event.source_ip,
            source_ip_text: event.source_ip_text,
            user_agent: event.user_agent,
            error_code: event.error_code,
            resource_ids: event.resource_ids,
            geo_country: geo.and_then(|g| g.country.clone()),
            geo_city: geo.and_then(|g| g.city.clone()),
            geo_latitude: geo.and_then(|g| g.latitude),
            geo_longitude: geo.and_then(|g| g.longitude),
            geo_asn: geo.and_then(|g| g.asn.map(i64::from)),
            console_session: Some(event.console_session),
            raw: RawJson::new(event.raw),
        }
    }

    /// The acting principal as the event names it: its ARN, else its user name.
    pub fn principal(&self) -> Option<&str> {
        self.principal_arn.as_deref().or(self.user_name.as_deref())
    }

    pub fn is_console_login(&self) -> bool {
        self.event_name.as_deref() == Some("ConsoleLogin")
    }

    /// `Success` / `Failure` of a console login.
    pub fn login_succeeded(&self) -> Option<bool> {
        if !self.is_console_login() {
            return None;
        }
        match self.raw.value().pointer("/responseElements/ConsoleLogin").and_then(|v| v.as_str()) {
            Some("Success") => Some(true),
            Some("Failure") => Some(false),
            _ => Some(self.error_code.is_none() && self.raw.value().get("errorMessage").is_none()),
        }
    }

    /// The session an event belongs to, so alerts of one intrusion link into an incident:
    /// console sessions (the login and the calls made from the console) by principal and
    /// source address; other temporary credentials by their access key.
    pub fn session_key(&self) -> Option<String> {
        let from_console = self.is_console_login()
            || self.console_session.unwrap_or_else(|| {
                self.raw.value().get("sessionCredentialFromConsole").and_then(|v| v.as_str()) == Some("true")
            });
        match (&self.access_key_id, from_console) {
            (Some(key), false) if key.starts_with("ASIA") => Some(format!("key:{key}")),
            _ => Some(format!("{}|{}", self.principal()?, self.source_ip_text.as_deref()?)),
        }
    }
}
