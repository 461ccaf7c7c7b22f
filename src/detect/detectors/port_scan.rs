//! `aws-flow-port-scan`: one source address reaching many distinct destination ports (a port
//! scan) or hosts (a sweep) within a window, most of it rejected. Both directions: an outside
//! address scanning the VPC in (reconnaissance), and an address of the VPC scanning (an instance
//! looking around for lateral movement, which is the more serious).
//!
//! Windows are fixed (aligned to the Unix epoch) and counted in SQL over the stored flow
//! records, so the verdict does not depend on the order records arrive in. Only windows that got
//! new records are counted again. The REJECT share keeps busy servers out: a server answering
//! many clients reaches many ports (the clients' ephemeral ones), but its traffic is accepted.
//!
//! The share is of connection *attempts* (destination address and port), not of records: inside a
//! VPC one probe leaves two records, an ACCEPT where it left the scanner and a REJECT where the
//! target's security group dropped it. An attempt with any REJECT record was refused.

use std::collections::BTreeSet;
use std::net::IpAddr;

use chrono::{DateTime, Duration, TimeZone, Utc};
use serde::Deserialize;
use sqlx::PgPool;
use sqlx::types::ipnetwork::IpNetwork;

use super::{Detectors, PORT_SCAN};
use crate::model::{Finding, Mitre, Severity};
use crate::net::is_internal;

/// How many ports, hosts and interfaces an alert names.
const NAMED: i32 = 25;
/// Scanning sources reported per run, at most (the busiest first).
const MAX_SOURCES: i64 = 5_000;

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PortScanSettings {
    pub enabled: bool,
    /// The window, in minutes (fixed windows aligned to midnight UTC; 1 to 1440).
    pub window_minutes: i64,
    /// Distinct destination ports from one source within a window ...
    pub min_ports: i64,
    /// ... or distinct destination hosts (a sweep) ...
    pub min_hosts: i64,
    /// ... with at least this share of its attempts (destination and port) refused (0 to 1).
    pub min_reject_ratio: f64,
    /// Outside addresses scanning in.
    pub include_inbound: bool,
    /// Addresses of the VPC scanning (internal reconnaissance, lateral movement).
    pub include_internal: bool,
    /// Sources never alerted on (the vulnerability scanner the team runs).
    pub allow_cidrs: Vec<String>,
    /// Severity of a scan from outside (the internet scans everyone, all the time).
    pub inbound_severity: Severity,
    /// Severity of a scan from inside the VPC.
    pub internal_severity: Severity,
}

impl Default for PortScanSettings {
    fn default() -> Self {
        Self {
            enabled: true,
            window_minutes: 60,
            min_ports: 25,
            min_hosts: 25,
            min_reject_ratio: 0.7,
            include_inbound: true,
            include_internal: true,
            allow_cidrs: vec![],
            inbound_severity: Severity::Low,
            internal_severity: Severity::High,
        }
    }
}

impl PortScanSettings {
    /// What is wrong with the settings, each naming its field.
    pub fn problems(&self) -> Vec<String> {
        let mut problems = Vec::new();
        if !(1..=1440).contains(&self.window_minutes) {
            problems.push(format!("window_minutes: {} is not between 1 and 1440", self.window_minutes));
        }
        if self.min_ports < 2 || self.min_hosts < 2 {
            problems.push(format!("min_ports, min_hosts: {} and {} must be 2 or more", self.min_ports, self.min_hosts));
        }
        if !(0.0..=1.0).contains(&self.min_reject_ratio) {
            problems.push(format!("min_reject_ratio: {} is not between 0 and 1", self.min_reject_ratio));
        }
        problems
    }

    fn window(&self) -> Duration {
        Duration::minutes(self.window_minutes.clamp(1, 1440))
    }
}

/// One source's traffic in one window, counted in SQL.
#[derive(Clone, Debug)]
pub struct SourceWindow {
    pub account_id: String,
    pub source: IpAddr,
    pub window_start: DateTime<Utc>,
    pub ports: i64,
    pub hosts: i64,
    /// Distinct (destination address, port) pairs tried.
    pub attempts: i64,
    /// Attempts with a REJECT record (at either end).
    pub refused: i64,
    pub sample_ports: Vec<i32>,
    pub sample_hosts: Vec<String>,
    pub interfaces: Vec<String>,
    pub first: DateTime<Utc>,
    pub last: DateTime<Utc>,
    pub source_country: Option<String>,
}

/// The windows that hold any of `hours` (clock hours with new flow records).
pub fn windows_of(settings: &PortScanSettings, hours: &[DateTime<Utc>]) -> Vec<DateTime<Utc>> {
    let length = settings.window().num_seconds();
    let mut windows = BTreeSet::new();
    for hour in hours {
        let (start, end) = (hour.timestamp(), hour.timestamp() + 3_600);
        let mut at = start.div_euclid(length) * length;
        while at < end {
            windows.extend(Utc.timestamp_opt(at, 0).single());
            at += length;
        }
    }
    windows.into_iter().collect()
}

/// The scans in the windows holding `hours`.
pub async fn findings(
    pool: &PgPool,
    detectors: &Detectors,
    hours: &[DateTime<Utc>],
) -> Result<Vec<Finding>, sqlx::Error> {
    let settings = &detectors.settings.flow_port_scan;
    if !settings.enabled || !(settings.include_inbound || settings.include_internal) || hours.is_empty() {
        return Ok(Vec::new());
    }
    let windows = windows_of(settings, hours);
    let counted = source_windows(pool, detectors, &windows).await?;
    Ok(counted.iter().filter_map(|w| finding(detectors, w)).collect())
}

async fn source_windows(
    pool: &PgPool,
    detectors: &Detectors,
    windows: &[DateTime<Utc>],
) -> Result<Vec<SourceWindow>, sqlx::Error> {
    let settings = &detectors.settings.flow_port_scan;
    let (Some(first), Some(last)) = (windows.first(), windows.last()) else { return Ok(Vec::new()) };
    let allowed: Vec<IpNetwork> =
        detectors.port_scan_allowed.cidrs.iter().filter_map(|c| IpNetwork::new(c.address, c.prefix).ok()).collect();
    let rows = sqlx::query!(
        r#"SELECT account_id, host(srcaddr) AS "source!",
                  date_bin(make_interval(mins => $3::int), bucket_time, timestamptz '1970-01-01 00:00:00+00') AS "window_start!",
                  count(DISTINCT dstport) AS "ports!", count(DISTINCT dstaddr) AS "hosts!",
                  count(DISTINCT host(dstaddr) || ':' || coalesce(dstport, -1)) AS "attempts!",
                  count(DISTINCT host(dstaddr) || ':' || coalesce(dstport, -1)) FILTER (WHERE action = 'REJECT') AS "refused!",
                  (array_agg(DISTINCT dstport) FILTER (WHERE dstport IS NOT NULL))[1:$7] AS "sample_ports!: Vec<i32>",
                  (array_agg(DISTINCT host(dstaddr)))[1:$7] AS "sample_hosts!: Vec<String>",
                  (array_agg(DISTINCT interface_id) FILTER (WHERE interface_id IS NOT NULL))[1:$7] AS "interfaces!: Vec<String>",
                  min(bucket_time) AS "first!", max(bucket_time) AS "last!", max(src_country) AS source_country
           FROM flow_records
           WHERE bucket_time >= $1::timestamptz AND bucket_time < $2::timestamptz + make_interval(mins => $3::int)
             AND date_bin(make_interval(mins => $3::int), bucket_time, timestamptz '1970-01-01 00:00:00+00') = ANY($4)
             AND srcaddr IS NOT NULL AND dstaddr IS NOT NULL AND NOT srcaddr <<= ANY($5::inet[])
           GROUP BY account_id, srcaddr, 3
           HAVING (count(DISTINCT dstport) >= $6 OR count(DISTINCT dstaddr) >= $8)
              AND count(DISTINCT host(dstaddr) || ':' || coalesce(dstport, -1)) FILTER (WHERE action = 'REJECT')
                  >= $9::float8 * count(DISTINCT host(dstaddr) || ':' || coalesce(dstport, -1))
           ORDER BY count(DISTINCT dstport) + count(DISTINCT dstaddr) DESC, 1, 2, 3
           LIMIT $10"#,
        first,
        last,
        i32::try_from(settings.window_minutes.clamp(1, 1440)).unwrap_or(60),
        windows,
        &allowed,
        settings.min_ports,
        NAMED,
        settings.min_hosts,
        settings.min_reject_ratio,
        MAX_SOURCES,
    )
    .fetch_all(pool)
    .await?;
    Ok(rows
        .into_iter()
        .filter_map(|r| {
            Some(SourceWindow {
                account_id: r.account_id,
                source: r.source.parse().ok()?,
                window_start: r.window_start,
                ports: r.ports,
                hosts: r.hosts,
                attempts: r.attempts,
                refused: r.refused,
                sample_ports: r.sample_ports,
                sample_hosts: r.sample_hosts,
                interfaces: r.interfaces,
                first: r.first,
                last: r.last,
                source_country: r.source_country,
            })
        })
        .collect())
}

/// The finding for a window that qualifies in its direction (`None` for one that does not).
pub fn finding(detectors: &Detectors, w: &SourceWindow) -> Option<Finding> {
    let settings = &detectors.settings.flow_port_scan;
    let internal = is_internal(w.source);
    let qualifies = (w.ports >= settings.min_ports || w.hosts >= settings.min_hosts)
        && w.attempts > 0
        && w.refused as f64 >= settings.min_reject_ratio * w.attempts as f64
        && if internal { settings.include_internal } else { settings.include_inbound };
    if !settings.enabled || !qualifies || detectors.port_scan_allowed.contains(w.source) {
        return None;
    }
    let meta = detectors.meta(PORT_SCAN);
    let source = w.source.to_string();
    let (what, severity, mitre) = if internal {
        ("from inside the VPC", settings.internal_severity, Mitre::new("TA0007", "T1046"))
    } else {
        ("from outside", settings.inbound_severity, Mitre::new("TA0043", "T1595.001"))
    };
    let title = format!(
        "Port scan {what}: {source} reached {} ports on {} hosts in {} minutes, {}% refused",
        w.ports,
        w.hosts,
        settings.window_minutes,
        w.refused * 100 / w.attempts
    );
    Some(Finding {
        policy_id: meta.id.clone(),
        title,
        severity,
        account_id: w.account_id.clone(),
        subject: source.clone(),
        dedup_window: meta.dedup_window,
        principal: None,
        // An outside scanner is an address an incident can link on; an inside one is ours.
        source_ip: Some(w.source),
        country: w.source_country.clone(),
        // An inside scanner's interface is what the intruder may hold. An outside scanner's
        // targets are only where it knocked: as link resources they would pull every scanner of
        // the intruder's network into the intrusion, so they stay in the details.
        resources: if internal { w.interfaces.clone() } else { Vec::new() },
        evidence_id: format!("flows:scan:{source}@{}", w.window_start.to_rfc3339()),
        time: w.first,
        mitre: vec![mitre],
        session_key: None,
        details: serde_json::json!({
            "direction": if internal { "internal" } else { "inbound" },
            "interfaces": w.interfaces,
            "window_start": w.window_start, "window_minutes": settings.window_minutes,
            "first_record": w.first, "last_record": w.last,
            "ports": w.ports, "hosts": w.hosts, "attempts": w.attempts, "refused": w.refused,
            "sample_ports": w.sample_ports, "sample_hosts": w.sample_hosts,
            "thresholds": {"min_ports": settings.min_ports, "min_hosts": settings.min_hosts,
                           "min_reject_ratio": settings.min_reject_ratio},
        }),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::detect::PolicySet;

    fn window(source: &str, ports: i64, hosts: i64, attempts: i64, refused: i64) -> SourceWindow {
        let start: DateTime<Utc> = "2026-11-12T05:00:00Z".parse().unwrap();
        SourceWindow {
            account_id: "111122223333".into(),
            source: source.parse().unwrap(),
            window_start: start,
            ports,
            hosts,
            attempts,
            refused,
            sample_ports: vec![22, 23, 80],
            sample_hosts: vec!["10.0.1.5".into()],
            interfaces: vec!["eni-0a1b2c3d4e5f60718".into()],
            first: start + Duration::minutes(3),
            last: start + Duration::minutes(9),
            source_country: None,
        }
    }

    #[test]
    fn scans_in_both_directions_with_their_own_severity_and_technique() {
        let set = PolicySet::builtin();
        let inbound = finding(&set.detectors, &window("198.51.100.23", 300, 1, 300, 297)).unwrap();
        assert_eq!((inbound.severity, inbound.mitre[0].technique.as_str()), (Severity::Low, "T1595.001"));
        assert_eq!(inbound.details["direction"], "inbound");
        // Where it knocked is told, but links nothing: every scanner of the intruder's network
        // would otherwise join the intrusion.
        assert!(inbound.resources.is_empty());
        assert_eq!(inbound.details["interfaces"], serde_json::json!(["eni-0a1b2c3d4e5f60718"]));
        assert!(
            inbound.title.starts_with("Port scan from outside: 198.51.100.23 reached 300 ports on 1 hosts"),
            "{}",
            inbound.title
        );
        let sweep = finding(&set.detectors, &window("10.0.1.25", 2, 40, 80, 70)).unwrap();
        assert_eq!((sweep.severity, sweep.mitre[0].technique.as_str()), (Severity::High, "T1046"));
        assert_eq!(sweep.subject, "10.0.1.25");
        assert_eq!(sweep.resources, ["eni-0a1b2c3d4e5f60718"]);
    }

    #[test]
    fn busy_servers_few_ports_and_allowed_scanners_are_not_scans() {
        let set = PolicySet::builtin();
        // A web server answering clients: many (ephemeral) ports, all accepted.
        assert!(finding(&set.detectors, &window("10.0.1.5", 4_000, 900, 9_000, 3)).is_none());
        // Rejected, but only a handful of ports and hosts.
        assert!(finding(&set.detectors, &window("198.51.100.23", 6, 2, 40, 40)).is_none());
        let yaml = "flow_port_scan:\n  allow_cidrs: [198.51.100.0/24]\n  include_internal: false\n";
        let file = crate::policy_files::PolicyFile::new("detectors.yaml", yaml, crate::policy_files::Origin::Builtin);
        let mut problems = Vec::new();
        let settings = yaml_serde::from_str(yaml).unwrap();
        let detectors = Detectors::new(settings, &file, &Default::default(), &mut problems);
        assert!(problems.is_empty(), "{problems:?}");
        assert!(finding(&detectors, &window("198.51.100.23", 300, 1, 300, 297)).is_none());
        assert!(finding(&detectors, &window("10.0.1.25", 2, 40, 80, 70)).is_none());
    }

    #[test]
    fn windows_cover_the_new_hours() {
        let settings = PortScanSettings { window_minutes: 20, ..Default::default() };
        let hour: DateTime<Utc> = "2026-11-12T05:00:00Z".parse().unwrap();
        let windows = windows_of(&settings, &[hour]);
        assert_eq!(windows.len(), 3);
        assert_eq!(windows[2], hour + Duration::minutes(40));
        let day = PortScanSettings { window_minutes: 1440, ..Default::default() };
        assert_eq!(
            windows_of(&day, &[hour, hour + Duration::hours(1)]),
            vec!["2026-11-12T00:00:00Z".parse::<DateTime<Utc>>().unwrap()]
        );
        assert!(!PortScanSettings { window_minutes: 0, ..Default::default() }.problems().is_empty());
    }
}
