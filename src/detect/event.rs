//! The view of a stored CloudTrail event that policies evaluate: the typed columns the importer
//! filled (geo included) and the raw event for rules that look deeper.

use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};

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
    /// The rest of the source address's network context, stored at ingest.
    pub network: SourceNetwork,
    /// `sessionCredentialFromConsole`, when known without parsing the raw event.
    pub console_session: Option<bool>,
    pub raw: RawJson,
}

/// What ingest knew of the source address's network besides its AS number: point-in-time
/// facts, `None` where nothing loaded could say (see docs/network-context.md).
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize)]
pub struct SourceNetwork {
    pub as_org: Option<String>,
    pub is_tor: Option<bool>,
    pub is_vpn: Option<bool>,
    pub is_hosting: Option<bool>,
    /// In AWS's published `ip-ranges.json` (when one was given).
    pub is_aws: Option<bool>,
}

impl SourceNetwork {
    pub fn from_geo(geo: Option<&GeoInfo>) -> Self {
        Self {
            as_org: geo.and_then(|g| g.as_org.clone()),
            is_tor: geo.and_then(|g| g.is_tor),
            is_vpn: geo.and_then(|g| g.is_vpn),
            is_hosting: geo.and_then(|g| g.is_hosting),
            is_aws: geo.and_then(|g| g.is_aws),
        }
    }

    /// A Tor exit, VPN or hosting address.
    pub fn is_anonymising(&self) -> bool {
        [self.is_tor, self.is_vpn, self.is_hosting].contains(&Some(true))
    }
}

/// The event fields policies can test that are no part of the raw CloudTrail record: the
/// source address's network context, from the columns ingest filled. Sigma rules name them
/// like any field (`source_is_tor: true`); `policies lint` knows them.
pub const NETWORK_FIELDS: &[&str] =
    &["source_asn", "source_as_org", "source_is_tor", "source_is_vpn", "source_is_hosting", "source_is_aws"];

/// The value of a network field (`None`: unknown, or not a network field).
pub enum NetworkValue<'a> {
    Number(i64),
    Text(&'a str),
    Flag(bool),
}

/// The raw event as text, parsed into a JSON value only when a policy looks past the typed
/// fields (most events never are: rules reject them on `eventSource`/`eventName`).
///
/// Detection's scan reads events without it ([`RawJson::absent`]): an absent raw event reads
/// as `null` and remembers it was asked for, so the scan fetches the few events whose rules
/// looked deeper ([`RawJson::fill`]) and evaluates those again. Clones share the text: filling
/// one fills every copy kept meanwhile.
#[derive(Clone, Debug)]
pub struct RawJson(Arc<RawText>);

#[derive(Debug, Default)]
struct RawText {
    text: OnceLock<String>,
    value: OnceLock<serde_json::Value>,
    /// Read while absent: whatever was decided then did not see the event.
    asked: AtomicBool,
}

impl RawJson {
    pub fn new(text: String) -> Self {
        Self(Arc::new(RawText { text: OnceLock::from(text), ..RawText::default() }))
    }

    /// Not read yet: [`RawJson::fill`] gives it.
    pub fn absent() -> Self {
        Self(Arc::new(RawText::default()))
    }

    /// Gives an absent raw event its text (no change if it has one).
    pub fn fill(&self, text: String) {
        let _ = self.0.text.set(text);
    }

    pub fn is_absent(&self) -> bool {
        self.0.text.get().is_none()
    }

    /// Whether anything read it while it was absent.
    pub fn was_asked_while_absent(&self) -> bool {
        self.0.asked.load(Ordering::Relaxed)
    }

    fn present_text(&self) -> Option<&str> {
        let text = self.0.text.get().map(String::as_str);
        if text.is_none() {
            self.0.asked.store(true, Ordering::Relaxed);
        }
        text
    }

    /// The text (empty while absent).
    pub fn text(&self) -> &str {
        self.present_text().unwrap_or_default()
    }

    /// Only `requestParameters`, parsed without building the rest of the event.
    pub fn request_parameters(&self) -> serde_json::Value {
        #[derive(serde::Deserialize)]
        struct Request {
            #[serde(rename = "requestParameters", default)]
            parameters: serde_json::Value,
        }
        if let Some(value) = self.0.value.get() {
            return value["requestParameters"].clone();
        }
        let Some(text) = self.present_text() else { return serde_json::Value::Null };
        serde_json::from_str::<Request>(text).map(|r| r.parameters).unwrap_or_default()
    }

    /// The parsed event (`null` if the text is not JSON, which the importer never stores, or
    /// while absent).
    pub fn value(&self) -> &serde_json::Value {
        static ABSENT: serde_json::Value = serde_json::Value::Null;
        let Some(text) = self.present_text() else { return &ABSENT };
        self.0.value.get_or_init(|| serde_json::from_str(text).unwrap_or(serde_json::Value::Null))
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
            network: SourceNetwork::from_geo(geo),
            console_session: Some(event.console_session),
            raw: RawJson::new(event.raw),
        }
    }

    /// One of [`NETWORK_FIELDS`].
    pub fn network_field(&self, name: &str) -> Option<NetworkValue<'_>> {
        let n = &self.network;
        match name {
            "source_asn" => self.geo_asn.map(NetworkValue::Number),
            "source_as_org" => n.as_org.as_deref().map(NetworkValue::Text),
            "source_is_tor" => n.is_tor.map(NetworkValue::Flag),
            "source_is_vpn" => n.is_vpn.map(NetworkValue::Flag),
            "source_is_hosting" => n.is_hosting.map(NetworkValue::Flag),
            "source_is_aws" => n.is_aws.map(NetworkValue::Flag),
            _ => None,
        }
    }

    /// The network context alerts carry in their details (`None` when nothing is known).
    pub fn network_details(&self) -> Option<serde_json::Value> {
        let n = &self.network;
        if self.geo_asn.is_none() && *n == SourceNetwork::default() {
            return None;
        }
        Some(serde_json::json!({
            "asn": self.geo_asn, "as_org": n.as_org, "is_tor": n.is_tor,
            "is_vpn": n.is_vpn, "is_hosting": n.is_hosting, "is_aws": n.is_aws,
        }))
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::detect::PolicySet;
    use crate::policy_files::{Origin, PolicyFile, PolicyFiles};

    const RULE: &str = "title: Console login from Tor or a hosting AS\nid: 7d0c1c52-2f77-4d1e-9a57-0c61a7b1f001\n\
        name: test-network-fields\nlogsource: {product: aws, service: cloudtrail}\ndetection:\n  \
        login: {eventName: ConsoleLogin}\n  tor: {source_is_tor: true}\n  hosting: {source_asn: [14061, 16276]}\n  \
        org: {source_as_org|contains: 'Hosting'}\n  condition: login and (tor or hosting or org)\nlevel: high\n";

    fn login(geo: GeoInfo) -> PolicyEvent {
        let raw = r#"{"eventTime":"2026-11-12T05:00:00Z","eventSource":"signin.amazonaws.com","eventName":"ConsoleLogin",
            "userIdentity":{"type":"IAMUser","arn":"arn:aws:iam::111122223333:user/alice","userName":"alice"},
            "sourceIPAddress":"185.220.101.4","responseElements":{"ConsoleLogin":"Success"},"eventID":"e1"}"#;
        PolicyEvent::from_parsed(CloudTrailEvent::parse(raw, None).unwrap(), Some(&geo))
    }

    fn matches(set: &PolicySet, geo: GeoInfo) -> bool {
        set.sigma.evaluate(&login(geo), Some("test-network-fields")).len() == 1
    }

    #[test]
    fn sigma_rules_read_the_network_fields() {
        let mut top = PolicyFiles::default();
        top.insert(PolicyFile::new("sigma/mine/network.yml", RULE.to_string(), Origin::Builtin));
        let set = PolicySet::from_files(&PolicyFiles::builtin().overlay(top));
        assert!(set.problems.is_empty(), "{:?}", set.problems);
        assert!(matches(&set, GeoInfo { is_tor: Some(true), ..Default::default() }));
        assert!(matches(&set, GeoInfo { asn: Some(14061), ..Default::default() }));
        assert!(matches(
            &set,
            GeoInfo { asn: Some(1), as_org: Some("Example Hosting Ltd".into()), ..Default::default() }
        ));
        assert!(!matches(&set, GeoInfo { is_tor: Some(false), asn: Some(3320), ..Default::default() }));
        assert!(!matches(&set, GeoInfo::default()), "unknown is no match");
        // The fields are the columns', never the raw record's.
        let lint = crate::detect::lint::object_fields(
            set.sigma.rule_fields(),
            &[login(GeoInfo::default()).raw.value().clone()],
        );
        assert!(lint.is_empty(), "{lint:?}");
    }

    #[test]
    fn network_details_only_when_something_is_known() {
        assert_eq!(login(GeoInfo::default()).network_details(), None);
        let details =
            login(GeoInfo { asn: Some(60729), is_tor: Some(true), ..Default::default() }).network_details().unwrap();
        assert_eq!(
            (details["asn"].as_i64(), details["is_tor"].as_bool(), details["is_vpn"].as_bool()),
            (Some(60729), Some(true), None)
        );
    }

    fn without_raw(event: &PolicyEvent) -> PolicyEvent {
        PolicyEvent { raw: RawJson::absent(), ..event.clone() }
    }

    #[test]
    fn an_absent_raw_event_reads_as_null_until_filled_and_every_copy_sees_it() {
        let full = login(GeoInfo::default());
        let absent = without_raw(&full);
        let kept = absent.clone();
        assert!(!absent.raw.was_asked_while_absent());
        assert_eq!(absent.raw.value(), &serde_json::Value::Null);
        assert_eq!((absent.raw.text(), absent.raw.request_parameters()), ("", serde_json::Value::Null));
        assert!(kept.raw.was_asked_while_absent(), "asked through a copy");
        absent.raw.fill(full.raw.text().to_string());
        assert!(!kept.raw.is_absent());
        assert_eq!(kept.raw.value(), full.raw.value());
        assert_eq!(kept.login_succeeded(), Some(true));
    }

    #[test]
    fn rules_reject_most_events_without_their_raw_record() {
        let set = PolicySet::builtin();
        let reads = [
            ("s3.amazonaws.com", "GetObject"),
            ("ec2.amazonaws.com", "DescribeInstances"),
            ("ec2.amazonaws.com", "DescribeSecurityGroups"),
            ("sts.amazonaws.com", "AssumeRole"),
            ("iam.amazonaws.com", "GetRole"),
        ];
        for (source, name) in reads {
            let text = format!(
                r#"{{"eventTime":"2026-11-12T05:00:00Z","eventSource":"{source}","eventName":"{name}",
                "userIdentity":{{"type":"AssumedRole","arn":"arn:aws:sts::111122223333:assumed-role/app/i-1"}},
                "sourceIPAddress":"10.0.0.1","requestParameters":{{"bucketName":"b"}},"eventID":"e2"}}"#
            );
            let read = PolicyEvent::from_parsed(CloudTrailEvent::parse(&text, None).unwrap(), None);
            let absent = without_raw(&read);
            assert!(set.sigma.evaluate(&absent, None).is_empty());
            assert!(set.detectors.evaluate_event(&absent, None).is_empty());
            // Detection's scan fetches the raw record only for events whose rules ask for it.
            assert!(!absent.raw.was_asked_while_absent(), "{name} is decided on its typed fields");
        }
        // One whose rules look deeper asks, and with its record gets what the full event gets.
        let text = login(GeoInfo::default())
            .raw
            .text()
            .replace(r#""eventID""#, r#""additionalEventData":{"MFAUsed":"No"},"eventID""#);
        let full = PolicyEvent::from_parsed(CloudTrailEvent::parse(&text, None).unwrap(), None);
        let absent = without_raw(&full);
        set.sigma.evaluate(&absent, None);
        assert!(absent.raw.was_asked_while_absent());
        absent.raw.fill(full.raw.text().to_string());
        let titles =
            |event: &PolicyEvent| set.sigma.evaluate(event, None).into_iter().map(|f| f.title).collect::<Vec<_>>();
        assert_eq!(titles(&absent), titles(&full));
        assert!(!titles(&full).is_empty(), "a console login without MFA is found");
    }
}
