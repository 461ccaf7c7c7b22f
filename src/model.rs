//! The types every stage shares: how urgent something is, where an alert is in triage, and a
//! policy match ([`Finding`]) as detection and posture hand it to `alerts`.
//!
//! This module imports nothing from the crate: everything else may import it.

use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

use chrono::{DateTime, Duration, Utc};
use serde::{Deserialize, Serialize};

/// How urgent an alert is. Ordered: `Info < Low < ... < Critical`.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, sqlx::Type, utoipa::ToSchema,
)]
#[sqlx(type_name = "alert_severity", rename_all = "lowercase")]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    #[serde(alias = "informational")]
    Info,
    Low,
    Medium,
    High,
    Critical,
}

impl Severity {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Info => "info",
            Self::Low => "low",
            Self::Medium => "medium",
            Self::High => "high",
            Self::Critical => "critical",
        }
    }
}

impl fmt::Display for Severity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(self.as_str())
    }
}

impl FromStr for Severity {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "info" | "informational" => Ok(Self::Info),
            "low" => Ok(Self::Low),
            "medium" => Ok(Self::Medium),
            "high" => Ok(Self::High),
            "critical" => Ok(Self::Critical),
            other => Err(format!("unknown severity {other:?} (info, low, medium, high, critical)")),
        }
    }
}

/// Where an alert is in triage.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, sqlx::Type, utoipa::ToSchema)]
#[sqlx(type_name = "alert_status", rename_all = "lowercase")]
#[serde(rename_all = "lowercase")]
pub enum AlertStatus {
    Open,
    Acknowledged,
    Resolved,
    Dismissed,
    Snoozed,
}

impl AlertStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Open => "open",
            Self::Acknowledged => "acknowledged",
            Self::Resolved => "resolved",
            Self::Dismissed => "dismissed",
            Self::Snoozed => "snoozed",
        }
    }
}

impl FromStr for AlertStatus {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "open" => Ok(Self::Open),
            "acknowledged" => Ok(Self::Acknowledged),
            "resolved" => Ok(Self::Resolved),
            "dismissed" => Ok(Self::Dismissed),
            "snoozed" => Ok(Self::Snoozed),
            other => Err(format!("unknown status {other:?} (open, acknowledged, resolved, dismissed, snoozed)")),
        }
    }
}

impl fmt::Display for AlertStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(self.as_str())
    }
}

/// A MITRE ATT&CK tactic and technique, e.g. `TA0001` / `T1078.004`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Mitre {
    pub tactic: String,
    pub technique: String,
}

impl Mitre {
    pub fn new(tactic: &str, technique: &str) -> Self {
        Self { tactic: tactic.to_string(), technique: technique.to_string() }
    }

    /// `tactic/technique`, as stored.
    pub fn label(&self) -> String {
        format!("{}/{}", self.tactic, self.technique)
    }
}

/// The name of an ATT&CK Enterprise tactic, by id (`TA0001` → "Initial Access").
pub fn tactic_name(id: &str) -> Option<&'static str> {
    Some(match id {
        "TA0043" => "Reconnaissance",
        "TA0042" => "Resource Development",
        "TA0001" => "Initial Access",
        "TA0002" => "Execution",
        "TA0003" => "Persistence",
        "TA0004" => "Privilege Escalation",
        "TA0005" => "Defense Evasion",
        "TA0006" => "Credential Access",
        "TA0007" => "Discovery",
        "TA0008" => "Lateral Movement",
        "TA0009" => "Collection",
        "TA0011" => "Command and Control",
        "TA0010" => "Exfiltration",
        "TA0040" => "Impact",
        _ => return None,
    })
}

/// One policy match: an event (or an observation over flows) that a policy flags.
#[derive(Clone, Debug, Serialize)]
pub struct Finding {
    pub policy_id: String,
    pub title: String,
    pub severity: Severity,
    pub account_id: String,
    /// What the alert is about, for deduplication: a principal, a resource or an address.
    pub subject: String,
    /// Findings on the same subject within this window fold into one alert.
    #[serde(skip)]
    pub dedup_window: Duration,
    pub principal: Option<String>,
    pub source_ip: Option<IpAddr>,
    pub country: Option<String>,
    pub resources: Vec<String>,
    /// The event (or record) behind the finding, and its time.
    pub evidence_id: String,
    pub time: DateTime<Utc>,
    pub mitre: Vec<Mitre>,
    /// The console or role session the event belongs to, to link alerts into incidents.
    pub session_key: Option<String>,
    /// Policy-specific facts for the analyst (baseline countries, speed, bytes ...).
    pub details: serde_json::Value,
}

impl Finding {
    /// The dedup key: the subject and the start of its window (fixed windows, so the key does
    /// not depend on the order events arrive in).
    pub fn dedup_key(&self) -> String {
        let window = self.dedup_window.num_seconds().max(1);
        let bucket = self.time.timestamp().div_euclid(window) * window;
        format!("{}@{}", self.subject, bucket)
    }

    /// A stable alert id derived from what identifies the alert.
    pub fn alert_id(&self) -> String {
        let key = format!("{}\u{1f}{}\u{1f}{}", self.account_id, self.policy_id, self.dedup_key());
        let hash = xxhash_rust::xxh3::xxh3_128(key.as_bytes());
        let hex = format!("{hash:032x}");
        format!("{}-{}-{}-{}-{}", &hex[0..8], &hex[8..12], &hex[12..16], &hex[16..20], &hex[20..32])
    }
}

/// Whether `text` has the shape of an alert id (a UUID).
pub fn is_alert_id(text: &str) -> bool {
    text.len() == 36
        && text.char_indices().all(|(i, c)| if [8, 13, 18, 23].contains(&i) { c == '-' } else { c.is_ascii_hexdigit() })
}

/// The region name Skywarden uses for global services (IAM).
pub const GLOBAL_REGION: &str = "global";

#[cfg(test)]
mod tests {
    use super::*;

    fn finding(time: &str) -> Finding {
        Finding {
            policy_id: "p".into(),
            title: "t".into(),
            severity: Severity::High,
            account_id: "111122223333".into(),
            subject: "alice".into(),
            dedup_window: Duration::hours(24),
            principal: None,
            source_ip: None,
            country: None,
            resources: vec![],
            evidence_id: "e".into(),
            time: time.parse().unwrap(),
            mitre: vec![],
            session_key: None,
            details: serde_json::Value::Null,
        }
    }

    #[test]
    fn dedup_uses_fixed_windows() {
        let morning = finding("2026-11-12T03:00:00Z");
        let evening = finding("2026-11-12T23:00:00Z");
        let next_day = finding("2026-11-13T01:00:00Z");
        assert_eq!(morning.dedup_key(), evening.dedup_key());
        assert_eq!(morning.alert_id(), evening.alert_id());
        assert_ne!(morning.alert_id(), next_day.alert_id());
        assert_eq!(morning.alert_id().len(), 36);
    }

    #[test]
    fn alert_ids_are_uuids() {
        assert!(is_alert_id(&finding("2026-11-12T03:00:00Z").alert_id()));
        assert!(!is_alert_id("not-a-uuid"));
        assert!(!is_alert_id("00000000-0000-0000-0000-00000000000g"));
        assert!(!is_alert_id("000000000000000000000000000000000000"));
    }

    #[test]
    fn severities_order_and_parse() {
        assert!(Severity::Critical > Severity::High && Severity::Low > Severity::Info);
        assert_eq!("informational".parse::<Severity>(), Ok(Severity::Info));
        assert!("urgent".parse::<Severity>().is_err());
    }
}
