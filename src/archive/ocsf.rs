//! Stored rows as OCSF 1.1.0 classes: a CloudTrail event as API Activity (6003), a flow record
//! as Network Activity (4001), a closed alert as Detection Finding (2004). Each class keeps the
//! whole stored row in `raw_data` (the CloudTrail event as delivered; a flow record or alert as
//! the JSON of its columns), so nothing dropped from PostgreSQL is lost to the mapping.
//! docs/archive.md has the field table.

use chrono::{DateTime, Utc};
use serde_json::json;

use super::columns::{Kind, Value};

pub const OCSF_VERSION: &str = "1.1.0";

const BASE: &[(&str, Kind)] = &[
    ("activity_id", Kind::Int32),
    ("activity_name", Kind::Utf8),
    ("category_uid", Kind::Int32),
    ("category_name", Kind::Utf8),
    ("class_uid", Kind::Int32),
    ("class_name", Kind::Utf8),
    ("type_uid", Kind::Int64),
    ("type_name", Kind::Utf8),
    ("severity_id", Kind::Int32),
    ("severity", Kind::Utf8),
    ("time", Kind::Int64),
    // OCSF `time` is milliseconds; the `datetime` profile's `time_dt` keeps the stored
    // microseconds (RFC 3339), so a read-back orders and matches events as PostgreSQL does.
    ("time_dt", Kind::Utf8),
];

/// API Activity: the base leaves, then the class's.
pub const API_ACTIVITY: &[(&str, Kind)] = &concat_leaves::<{ BASE.len() + 37 }>(
    BASE,
    &[
        ("status_id", Kind::Int32),
        ("status", Kind::Utf8),
        ("status_code", Kind::Utf8),
        ("status_detail", Kind::Utf8),
        ("metadata.uid", Kind::Utf8),
        ("metadata.version", Kind::Utf8),
        ("metadata.product.name", Kind::Utf8),
        ("metadata.product.vendor_name", Kind::Utf8),
        ("api.operation", Kind::Utf8),
        ("api.service.name", Kind::Utf8),
        ("actor.user.uid", Kind::Utf8),
        ("actor.user.uid_alt", Kind::Utf8),
        ("actor.user.name", Kind::Utf8),
        ("actor.user.type", Kind::Utf8),
        ("actor.user.credential_uid", Kind::Utf8),
        ("src_endpoint.ip", Kind::Utf8),
        ("src_endpoint.name", Kind::Utf8),
        ("src_endpoint.svc_name", Kind::Utf8),
        ("src_endpoint.location.country", Kind::Utf8),
        ("src_endpoint.location.city", Kind::Utf8),
        ("http_request.user_agent", Kind::Utf8),
        ("raw_data", Kind::Utf8),
        ("cloud.provider", Kind::Utf8),
        ("cloud.region", Kind::Utf8),
        ("cloud.account.uid", Kind::Utf8),
        // What ingest derived and OCSF 1.1.0 has no field for (`autonomous_system` came in
        // 1.2.0; `coordinates` and `resources` are lists), under the stored columns' names.
        ("unmapped.read_only", Kind::Bool),
        ("unmapped.resource_ids", Kind::Utf8),
        ("unmapped.source_asn", Kind::Int64),
        ("unmapped.source_as_org", Kind::Utf8),
        ("unmapped.source_is_tor", Kind::Bool),
        ("unmapped.source_is_vpn", Kind::Bool),
        ("unmapped.source_is_hosting", Kind::Bool),
        ("unmapped.source_is_aws", Kind::Bool),
        ("unmapped.geo_latitude", Kind::Double),
        ("unmapped.geo_longitude", Kind::Double),
        // What the audit trail shows of an archived event and no other field keeps exactly
        // (archive::read puts the stored row back together from these).
        ("unmapped.event_type", Kind::Utf8),
        ("unmapped.ingested_at", Kind::Utf8),
    ],
);

const fn concat_leaves<const N: usize>(
    a: &'static [(&'static str, Kind)],
    b: &'static [(&'static str, Kind)],
) -> [(&'static str, Kind); N] {
    let mut out = [("", Kind::Utf8); N];
    let mut i = 0;
    while i < a.len() {
        out[i] = a[i];
        i += 1;
    }
    let mut j = 0;
    while j < b.len() {
        out[i + j] = b[j];
        j += 1;
    }
    out
}

/// Milliseconds since the epoch (OCSF `timestamp_t`).
pub fn millis(time: DateTime<Utc>) -> Value {
    Value::I64(time.timestamp_millis())
}

/// RFC 3339 with microseconds, PostgreSQL's precision (OCSF `datetime_t`).
pub fn micros_text(time: DateTime<Utc>) -> Value {
    Value::Str(time.to_rfc3339_opts(chrono::SecondsFormat::Micros, true))
}

fn base(
    class: (i32, &str, i32, &str),
    activity: (i32, &str),
    severity: (i32, &str),
    time: DateTime<Utc>,
) -> Vec<Value> {
    let (class_uid, class_name, category_uid, category_name) = class;
    vec![
        Value::I32(activity.0),
        activity.1.into(),
        Value::I32(category_uid),
        category_name.into(),
        Value::I32(class_uid),
        class_name.into(),
        Value::I64(i64::from(class_uid) * 100 + i64::from(activity.0)),
        format!("{class_name}: {}", activity.1).as_str().into(),
        Value::I32(severity.0),
        severity.1.into(),
        millis(time),
        micros_text(time),
    ]
}

/// One stored CloudTrail event.
pub struct CloudTrailRow {
    pub account_id: String,
    pub event_time: DateTime<Utc>,
    pub event_id: String,
    pub region: Option<String>,
    pub event_source: Option<String>,
    pub event_name: Option<String>,
    pub principal_arn: Option<String>,
    pub principal_type: Option<String>,
    pub principal_id: Option<String>,
    pub user_name: Option<String>,
    pub access_key_id: Option<String>,
    pub source_ip_text: Option<String>,
    pub user_agent: Option<String>,
    pub error_code: Option<String>,
    pub error_message: Option<String>,
    pub geo_country: Option<String>,
    pub geo_city: Option<String>,
    /// `raw::text`: the event exactly as PostgreSQL renders it, so `raw_data` reads back as the
    /// same JSON byte for byte (and verification can compare it).
    pub raw: String,
    pub read_only: Option<bool>,
    pub resource_ids: Vec<String>,
    pub geo_asn: Option<i64>,
    pub geo_as_org: Option<String>,
    pub source_is_tor: Option<bool>,
    pub source_is_vpn: Option<bool>,
    pub source_is_hosting: Option<bool>,
    pub source_is_aws: Option<bool>,
    pub geo_latitude: Option<f64>,
    pub geo_longitude: Option<f64>,
    pub event_type: Option<String>,
    pub ingested_at: DateTime<Utc>,
}

/// OCSF API Activity's activity from the call's verb: Create 1, Read 2, Update 3, Delete 4.
pub fn api_activity(event_name: &str) -> (i32, &'static str) {
    const VERBS: &[(&[&str], i32, &str)] = &[
        (&["Create", "Run", "Allocate", "Register", "Import", "Add"], 1, "Create"),
        (&["Get", "Describe", "List", "Head", "Lookup", "Search", "Select", "Scan", "Query", "BatchGet"], 2, "Read"),
        (&["Update", "Put", "Modify", "Set", "Attach", "Tag", "Enable", "Replace", "Change", "Associate"], 3, "Update"),
        (
            &["Delete", "Remove", "Terminate", "Detach", "Untag", "Disable", "Deregister", "Revoke", "Release"],
            4,
            "Delete",
        ),
    ];
    VERBS
        .iter()
        .find(|(prefixes, _, _)| prefixes.iter().any(|p| event_name.starts_with(p)))
        .map_or((99, "Other"), |(_, id, name)| (*id, *name))
}

impl CloudTrailRow {
    pub fn values(self) -> Vec<Value> {
        let activity = api_activity(self.event_name.as_deref().unwrap_or(""));
        let mut row =
            base((6003, "API Activity", 6, "Application Activity"), activity, (1, "Informational"), self.event_time);
        let (status_id, status) = if self.error_code.is_some() { (2, "Failure") } else { (1, "Success") };
        // sourceIPAddress is an address, or an AWS service calling on a principal's behalf;
        // OCSF needs an endpoint to say something (`unknown` when CloudTrail said nothing).
        let (ip, name, service) = match self.source_ip_text {
            Some(text) if text.parse::<std::net::IpAddr>().is_ok() => (Some(text), None, None),
            Some(text) if text.ends_with(".amazonaws.com") => (None, None, Some(text)),
            Some(text) if !text.is_empty() => (None, Some(text), None),
            _ => (None, Some("unknown".to_owned()), None),
        };
        row.extend([
            Value::I32(status_id),
            status.into(),
            self.error_code.into(),
            self.error_message.into(),
            self.event_id.as_str().into(),
            OCSF_VERSION.into(),
            "CloudTrail".into(),
            "AWS".into(),
            // API Activity requires the operation: an event without a name keeps an empty one.
            Value::Str(self.event_name.unwrap_or_default()),
            self.event_source.into(),
            self.principal_id.into(),
            self.principal_arn.into(),
            self.user_name.into(),
            self.principal_type.into(),
            self.access_key_id.into(),
            ip.into(),
            name.into(),
            service.into(),
            self.geo_country.into(),
            self.geo_city.into(),
            self.user_agent.into(),
            Value::Str(self.raw),
            "AWS".into(),
            self.region.into(),
            self.account_id.into(),
            flag(self.read_only),
            // A JSON array: exact, whatever the ids hold.
            Value::Str(serde_json::to_string(&self.resource_ids).unwrap_or_default()),
            self.geo_asn.map_or(Value::Null, Value::I64),
            self.geo_as_org.into(),
            flag(self.source_is_tor),
            flag(self.source_is_vpn),
            flag(self.source_is_hosting),
            flag(self.source_is_aws),
            self.geo_latitude.map_or(Value::Null, Value::F64),
            self.geo_longitude.map_or(Value::Null, Value::F64),
            self.event_type.into(),
            micros_text(self.ingested_at),
        ]);
        row
    }
}

fn flag(value: Option<bool>) -> Value {
    value.map_or(Value::Null, Value::Bool)
}

/// Network Activity leaves.
pub const NETWORK_ACTIVITY: &[(&str, Kind)] = &concat_leaves::<{ BASE.len() + 28 }>(
    BASE,
    &[
        ("start_time", Kind::Int64),
        ("end_time", Kind::Int64),
        ("status_code", Kind::Utf8),
        ("metadata.uid", Kind::Utf8),
        ("metadata.version", Kind::Utf8),
        ("metadata.product.name", Kind::Utf8),
        ("metadata.product.vendor_name", Kind::Utf8),
        ("src_endpoint.ip", Kind::Utf8),
        ("src_endpoint.port", Kind::Int32),
        ("src_endpoint.interface_uid", Kind::Utf8),
        ("src_endpoint.vpc_uid", Kind::Utf8),
        ("src_endpoint.subnet_uid", Kind::Utf8),
        ("src_endpoint.instance_uid", Kind::Utf8),
        ("src_endpoint.location.country", Kind::Utf8),
        ("dst_endpoint.ip", Kind::Utf8),
        ("dst_endpoint.port", Kind::Int32),
        ("dst_endpoint.name", Kind::Utf8),
        ("dst_endpoint.location.country", Kind::Utf8),
        ("connection_info.protocol_num", Kind::Int32),
        ("connection_info.direction_id", Kind::Int32),
        ("connection_info.direction", Kind::Utf8),
        ("connection_info.tcp_flags", Kind::Int32),
        ("traffic.packets", Kind::Int64),
        ("traffic.bytes", Kind::Int64),
        ("raw_data", Kind::Utf8),
        ("cloud.provider", Kind::Utf8),
        ("cloud.region", Kind::Utf8),
        ("cloud.account.uid", Kind::Utf8),
    ],
);

/// One stored flow record (addresses as text).
pub struct FlowRow {
    pub account_id: String,
    pub bucket_time: DateTime<Utc>,
    pub record_hash: Vec<u8>,
    pub version: Option<i16>,
    pub interface_id: Option<String>,
    pub srcaddr: Option<String>,
    pub dstaddr: Option<String>,
    pub srcport: Option<i32>,
    pub dstport: Option<i32>,
    pub protocol: Option<i16>,
    pub packets: Option<i64>,
    pub bytes: Option<i64>,
    pub start_time: Option<DateTime<Utc>>,
    pub end_time: Option<DateTime<Utc>>,
    pub action: Option<String>,
    pub log_status: Option<String>,
    pub vpc_id: Option<String>,
    pub subnet_id: Option<String>,
    pub instance_id: Option<String>,
    pub tcp_flags: Option<i32>,
    pub traffic_type: Option<String>,
    pub pkt_srcaddr: Option<String>,
    pub pkt_dstaddr: Option<String>,
    pub region: Option<String>,
    pub az_id: Option<String>,
    pub flow_direction: Option<String>,
    pub traffic_path: Option<i16>,
    pub pkt_src_aws_service: Option<String>,
    pub pkt_dst_aws_service: Option<String>,
    pub src_country: Option<String>,
    pub dst_country: Option<String>,
    pub extra: Option<serde_json::Value>,
}

pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

impl FlowRow {
    /// The stored columns as JSON (what `raw_data` keeps).
    fn json(&self) -> serde_json::Value {
        json!({
            "account_id": self.account_id, "bucket_time": self.bucket_time, "record_hash": hex(&self.record_hash),
            "version": self.version, "interface_id": self.interface_id, "srcaddr": self.srcaddr,
            "dstaddr": self.dstaddr, "srcport": self.srcport, "dstport": self.dstport, "protocol": self.protocol,
            "packets": self.packets, "bytes": self.bytes, "start_time": self.start_time, "end_time": self.end_time,
            "action": self.action, "log_status": self.log_status, "vpc_id": self.vpc_id, "subnet_id": self.subnet_id,
            "instance_id": self.instance_id, "tcp_flags": self.tcp_flags, "traffic_type": self.traffic_type,
            "pkt_srcaddr": self.pkt_srcaddr, "pkt_dstaddr": self.pkt_dstaddr, "region": self.region,
            "az_id": self.az_id, "flow_direction": self.flow_direction, "traffic_path": self.traffic_path,
            "pkt_src_aws_service": self.pkt_src_aws_service, "pkt_dst_aws_service": self.pkt_dst_aws_service,
            "src_country": self.src_country, "dst_country": self.dst_country, "extra": self.extra,
        })
    }

    pub fn values(self) -> Vec<Value> {
        // Traffic 6 for what was let through (or not said), Refuse 5 for a REJECT.
        let activity = if self.action.as_deref() == Some("REJECT") { (5, "Refuse") } else { (6, "Traffic") };
        let time = self.start_time.unwrap_or(self.bucket_time);
        let mut row = base((4001, "Network Activity", 4, "Network Activity"), activity, (1, "Informational"), time);
        let (direction_id, direction) = match self.flow_direction.as_deref() {
            Some("ingress") => (1, "Inbound"),
            Some("egress") => (2, "Outbound"),
            _ => (0, "Unknown"),
        };
        let raw = self.json().to_string();
        // A record without addresses (NODATA, SKIPDATA) still needs a destination in OCSF.
        let dst_name = self.dstaddr.is_none().then(|| "unknown".to_owned());
        row.extend([
            self.start_time.map_or(Value::Null, millis),
            self.end_time.map_or(Value::Null, millis),
            self.log_status.into(),
            Value::Str(hex(&self.record_hash)),
            OCSF_VERSION.into(),
            "Amazon VPC Flow Logs".into(),
            "AWS".into(),
            self.srcaddr.into(),
            self.srcport.map_or(Value::Null, Value::I32),
            self.interface_id.into(),
            self.vpc_id.into(),
            self.subnet_id.into(),
            self.instance_id.into(),
            self.src_country.into(),
            self.dstaddr.into(),
            self.dstport.map_or(Value::Null, Value::I32),
            dst_name.into(),
            self.dst_country.into(),
            self.protocol.map_or(Value::Null, |p| Value::I32(i32::from(p))),
            Value::I32(direction_id),
            direction.into(),
            self.tcp_flags.map_or(Value::Null, Value::I32),
            self.packets.map_or(Value::Null, Value::I64),
            self.bytes.map_or(Value::Null, Value::I64),
            Value::Str(raw),
            "AWS".into(),
            self.region.into(),
            self.account_id.into(),
        ]);
        row
    }
}

/// Detection Finding leaves.
pub const DETECTION_FINDING: &[(&str, Kind)] = &concat_leaves::<{ BASE.len() + 22 }>(
    BASE,
    &[
        ("start_time", Kind::Int64),
        ("end_time", Kind::Int64),
        ("count", Kind::Int32),
        ("status_id", Kind::Int32),
        ("status", Kind::Utf8),
        ("message", Kind::Utf8),
        ("metadata.uid", Kind::Utf8),
        ("metadata.version", Kind::Utf8),
        ("metadata.product.name", Kind::Utf8),
        ("metadata.product.vendor_name", Kind::Utf8),
        ("finding_info.uid", Kind::Utf8),
        ("finding_info.title", Kind::Utf8),
        ("finding_info.first_seen_time", Kind::Int64),
        ("finding_info.last_seen_time", Kind::Int64),
        ("finding_info.created_time", Kind::Int64),
        ("finding_info.analytic.uid", Kind::Utf8),
        ("finding_info.analytic.type_id", Kind::Int32),
        ("finding_info.analytic.type", Kind::Utf8),
        ("raw_data", Kind::Utf8),
        ("cloud.provider", Kind::Utf8),
        ("cloud.region", Kind::Utf8),
        ("cloud.account.uid", Kind::Utf8),
    ],
);

/// One closed alert (enums, address and id as text).
pub struct AlertRow {
    pub account_id: String,
    pub alert_id: String,
    pub policy_id: String,
    pub dedup_key: String,
    pub title: String,
    pub severity: String,
    pub status: String,
    pub principal: Option<String>,
    pub source_ip: Option<String>,
    pub country: Option<String>,
    pub resources: Vec<String>,
    pub first_seen: DateTime<Utc>,
    pub last_seen: DateTime<Utc>,
    pub event_count: i64,
    pub evidence: Vec<String>,
    pub mitre: Vec<String>,
    pub details: serde_json::Value,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// OCSF severity of an alert severity.
pub fn severity(severity: &str) -> (i32, &'static str) {
    match severity {
        "info" => (1, "Informational"),
        "low" => (2, "Low"),
        "medium" => (3, "Medium"),
        "high" => (4, "High"),
        "critical" => (5, "Critical"),
        _ => (0, "Unknown"),
    }
}

impl AlertRow {
    fn json(&self) -> serde_json::Value {
        json!({
            "account_id": self.account_id, "alert_id": self.alert_id, "policy_id": self.policy_id,
            "dedup_key": self.dedup_key, "title": self.title, "severity": self.severity, "status": self.status,
            "principal": self.principal, "source_ip": self.source_ip, "country": self.country,
            "resources": self.resources, "first_seen": self.first_seen, "last_seen": self.last_seen,
            "event_count": self.event_count, "evidence": self.evidence, "mitre": self.mitre,
            "details": self.details, "created_at": self.created_at, "updated_at": self.updated_at,
        })
    }

    pub fn values(self) -> Vec<Value> {
        let mut row =
            base((2004, "Detection Finding", 2, "Findings"), (3, "Close"), severity(&self.severity), self.last_seen);
        // Only closed alerts are archived: resolved is Resolved, dismissed is Suppressed.
        let (status_id, status) = if self.status == "dismissed" { (3, "Suppressed") } else { (4, "Resolved") };
        let raw = self.json().to_string();
        row.extend([
            millis(self.first_seen),
            millis(self.last_seen),
            Value::I32(i32::try_from(self.event_count).unwrap_or(i32::MAX)),
            Value::I32(status_id),
            status.into(),
            self.title.as_str().into(),
            self.alert_id.as_str().into(),
            OCSF_VERSION.into(),
            "Skywarden".into(),
            "Skywarden".into(),
            Value::Str(self.alert_id),
            Value::Str(self.title),
            millis(self.first_seen),
            millis(self.last_seen),
            millis(self.created_at),
            Value::Str(self.policy_id),
            Value::I32(1),
            "Rule".into(),
            Value::Str(raw),
            "AWS".into(),
            // Alerts belong to an account, not a region.
            Value::Null,
            self.account_id.into(),
        ]);
        row
    }
}
