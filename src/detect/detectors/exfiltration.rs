//! `aws-flow-exfiltration-volume`: bytes sent from inside the VPC to one external address in
//! one clock hour, above a threshold. Hours are fixed windows, so the result does not depend on
//! the order flow records arrive in.

use std::net::IpAddr;

use chrono::{DateTime, Utc};

use super::{Detectors, EXFILTRATION};
use crate::model::{Finding, Severity};
use crate::net::is_public;

/// Accepted bytes from private addresses to one destination in one hour (summed in SQL).
#[derive(Clone, Debug)]
pub struct HourlyVolume {
    pub account_id: String,
    pub destination: IpAddr,
    pub hour: DateTime<Utc>,
    pub bytes: i64,
    pub records: i64,
    pub sources: Vec<String>,
    pub interfaces: Vec<String>,
    pub destination_country: Option<String>,
}

pub fn evaluate(detectors: &Detectors, volumes: &[HourlyVolume]) -> Vec<Finding> {
    let settings = &detectors.settings.flow_exfiltration;
    if !settings.enabled {
        return vec![];
    }
    let meta = detectors.meta(EXFILTRATION);
    volumes
        .iter()
        .filter(|v| is_public(v.destination) && v.bytes >= settings.bytes_per_hour)
        .map(|v| {
            let gigabytes = v.bytes as f64 / 1e9;
            let severity = if v.bytes >= settings.bytes_per_hour * 10 { Severity::Critical } else { settings.severity };
            let destination = v.destination.to_string();
            Finding {
                policy_id: meta.id.clone(),
                title: format!(
                    "{gigabytes:.2} GB sent from {} to {destination} ({}) in one hour",
                    v.sources.join(", "),
                    v.destination_country.as_deref().unwrap_or("unknown country")
                ),
                severity,
                account_id: v.account_id.clone(),
                subject: destination.clone(),
                dedup_window: meta.dedup_window,
                principal: None,
                source_ip: Some(v.destination),
                country: v.destination_country.clone(),
                resources: v.interfaces.clone(),
                evidence_id: format!("flows:{destination}@{}", v.hour.to_rfc3339()),
                time: v.hour,
                mitre: meta.mitre.clone(),
                session_key: None,
                details: serde_json::json!({
                    "bytes": v.bytes,
                    "records": v.records,
                    "hour": v.hour,
                    "sources": v.sources,
                    "threshold_bytes_per_hour": settings.bytes_per_hour,
                }),
            }
        })
        .collect()
}
