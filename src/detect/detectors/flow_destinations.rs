//! `aws-flow-suspicious-destination`: an instance (its network interface) opens a connection,
//! accepted, to a Tor exit or to an outside address that is already part of an open incident:
//! command and control, or the intruder's machine the instance now talks to.
//!
//! Flow records carry no network context (ingest stores none for them), so Tor exits are looked
//! up here, in the clock hours with new records, in the network context detection was given
//! ([`super::Detectors::set_geo`]); without one, only the incident half works, and the run says
//! so. An incident's addresses are those its alerts came from, flow alerts left out (an
//! exfiltration's destination would otherwise make its own flows suspicious); read only. Every
//! run looks up the flows to those addresses within `incident_reach_days` of the alerts, new or
//! not, so the verdict does not depend on whether the flows or the intrusion's events arrived
//! first. A record counts as the instance's own connection when its destination port is not
//! above its source port (a reply from a server on the instance goes to the client's higher,
//! ephemeral port). One alert per interface and address per day; each clock hour with such
//! traffic is one piece of evidence, so re-running detection adds nothing.

use std::collections::{HashMap, HashSet};
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, Ordering};

use chrono::{DateTime, Duration, Utc};
use futures_util::TryStreamExt;
use serde::Deserialize;
use sqlx::PgPool;

use super::{Detectors, SUSPICIOUS_DESTINATION};
use crate::alerts::link_keys::is_linkable;
use crate::model::{Finding, Mitre, Severity};

/// Open incidents' addresses read per run, at most.
const MAX_INCIDENT_ADDRESSES: i64 = 5_000;
/// Findings per run, at most (each is an interface, an address and an hour).
const MAX_FINDINGS: usize = 10_000;

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DestinationSettings {
    pub enabled: bool,
    /// Connections to Tor exits (needs `--tor-exits` or an Anonymous-IP database).
    pub include_tor: bool,
    /// Connections to addresses of open incidents (open, investigating or contained) ...
    pub include_incident_addresses: bool,
    /// ... within this many days of the incident's alerts from the address.
    pub incident_reach_days: i64,
    /// Destinations never alerted on.
    pub allow_cidrs: Vec<String>,
    pub severity: Severity,
}

impl Default for DestinationSettings {
    fn default() -> Self {
        Self {
            enabled: true,
            include_tor: true,
            include_incident_addresses: true,
            incident_reach_days: 7,
            allow_cidrs: vec![],
            severity: Severity::High,
        }
    }
}

/// Accepted traffic an interface started to one outside address in one clock hour.
#[derive(Clone, Debug)]
pub struct Connection {
    pub account_id: String,
    pub interface: String,
    pub instance: Option<String>,
    pub destination: IpAddr,
    pub hour: DateTime<Utc>,
    pub first: DateTime<Utc>,
    pub records: i64,
    pub bytes: i64,
    pub ports: Vec<i32>,
    pub sources: Vec<String>,
    pub destination_country: Option<String>,
}

/// Why a destination is suspicious.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Verdict {
    pub tor: bool,
    /// The open incidents the address belongs to.
    pub incidents: Vec<String>,
}

/// Whether the run has said that Tor exits cannot be looked for (once per process).
static SAID_NO_TOR: AtomicBool = AtomicBool::new(false);

/// Connections to a Tor exit in the clock hours `hours`, and to an open incident's address
/// around its alerts; with `since` (the database time a run's new data begins), only the
/// connections stored since, or to addresses whose alerts or incident changed since (a poll
/// does not fold the same connections again and again).
pub async fn findings(
    pool: &PgPool,
    detectors: &Detectors,
    hours: &[DateTime<Utc>],
    since: Option<DateTime<Utc>>,
) -> Result<Vec<Finding>, sqlx::Error> {
    let settings = &detectors.settings.flow_suspicious_destination;
    if !settings.enabled {
        return Ok(Vec::new());
    }
    let tor = settings.include_tor && detectors.geo.as_ref().is_some_and(|geo| geo.knows_tor_exits());
    if settings.include_tor && !tor && !SAID_NO_TOR.swap(true, Ordering::Relaxed) {
        tracing::warn!(
            "aws-flow-suspicious-destination: no network context (--tor-exits, Anonymous-IP) given to detection; \
             flows to Tor exits are not looked for"
        );
    }
    let incidents = if settings.include_incident_addresses { incident_addresses(pool).await? } else { Vec::new() };
    let by_address: HashMap<String, Vec<String>> =
        incidents.iter().map(|a| (a.address.clone(), a.incidents.clone())).collect();
    let mut found = Found::default();
    if tor && !hours.is_empty() {
        found.extend(detectors, &by_address, connections_in(pool, hours)).await?;
    }
    if !incidents.is_empty() {
        let reach = Duration::days(settings.incident_reach_days.max(0));
        found.extend(detectors, &by_address, connections_to(pool, &incidents, reach, since)).await?;
    }
    Ok(found.findings)
}

/// The findings of a run, each once (both halves can see one connection).
#[derive(Default)]
struct Found {
    findings: Vec<Finding>,
    evidence: HashSet<String>,
}

impl Found {
    async fn extend(
        &mut self,
        detectors: &Detectors,
        incidents: &HashMap<String, Vec<String>>,
        mut rows: ConnectionStream<'_>,
    ) -> Result<(), sqlx::Error> {
        while let Some(connection) = rows.try_next().await? {
            if self.findings.len() >= MAX_FINDINGS {
                tracing::warn!(
                    max = MAX_FINDINGS,
                    "aws-flow-suspicious-destination: more connections than one run reports"
                );
                break;
            }
            let verdict = verdict(detectors, incidents, connection.destination);
            if let Some(finding) = finding(detectors, &connection, &verdict)
                && self.evidence.insert(finding.evidence_id.clone())
            {
                self.findings.push(finding);
            }
        }
        Ok(())
    }
}

/// What makes `destination` suspicious, from the network context and the open incidents.
pub fn verdict(detectors: &Detectors, incidents: &HashMap<String, Vec<String>>, destination: IpAddr) -> Verdict {
    let settings = &detectors.settings.flow_suspicious_destination;
    if detectors.destination_allowed.contains(destination) {
        return Verdict::default();
    }
    let tor =
        settings.include_tor && detectors.geo.as_ref().is_some_and(|geo| geo.lookup(destination).is_tor == Some(true));
    let incidents = if settings.include_incident_addresses {
        incidents.get(&destination.to_string()).cloned().unwrap_or_default()
    } else {
        Vec::new()
    };
    Verdict { tor, incidents }
}

/// An address an open incident's alerts came from.
#[derive(Clone, Debug)]
pub struct IncidentAddress {
    pub address: String,
    pub incidents: Vec<String>,
    pub first: DateTime<Utc>,
    pub last: DateTime<Utc>,
    /// When an alert from the address, or its incident, last changed.
    pub changed: DateTime<Utc>,
}

/// The addresses the alerts of open incidents came from (flow alerts left out), each with its
/// incidents and when.
async fn incident_addresses(pool: &PgPool) -> Result<Vec<IncidentAddress>, sqlx::Error> {
    let flow_policies: Vec<String> =
        [super::EXFILTRATION, super::PORT_SCAN, SUSPICIOUS_DESTINATION].iter().map(|p| p.to_string()).collect();
    let rows = sqlx::query!(
        r#"SELECT host(a.source_ip) AS "address!", array_agg(DISTINCT a.incident_id ORDER BY a.incident_id) AS "incidents!: Vec<String>",
                  min(a.first_seen) AS "first!", max(a.last_seen) AS "last!",
                  greatest(max(a.updated_at), max(i.updated_at)) AS "changed!"
           FROM alerts a JOIN incidents i ON i.incident_id = a.incident_id
           WHERE a.source_ip IS NOT NULL AND a.policy_id <> ALL($1) AND i.merged_into IS NULL
             AND i.status IN ('open', 'investigating', 'contained')
           GROUP BY 1 ORDER BY 1 LIMIT $2"#,
        &flow_policies,
        MAX_INCIDENT_ADDRESSES
    )
    .fetch_all(pool)
    .await?;
    Ok(rows
        .into_iter()
        .filter(|r| r.address.parse::<IpAddr>().is_ok_and(is_linkable))
        .map(|r| IncidentAddress {
            address: r.address,
            incidents: r.incidents,
            first: r.first,
            last: r.last,
            changed: r.changed,
        })
        .collect())
}

type ConnectionStream<'a> = futures_util::stream::BoxStream<'a, Result<Connection, sqlx::Error>>;

/// Accepted connections the VPC started to outside addresses in `hours`, per interface, address
/// and hour.
fn connections_in<'a>(pool: &'a PgPool, hours: &'a [DateTime<Utc>]) -> ConnectionStream<'a> {
    let (first, last) = (hours[0], hours[hours.len() - 1] + Duration::hours(1));
    Box::pin(
        sqlx::query_as!(
            ConnectionRow,
            r#"SELECT account_id, interface_id AS "interface!", max(instance_id) AS instance, host(dstaddr) AS "destination!",
                      date_trunc('hour', bucket_time) AS "hour!", min(bucket_time) AS "first!", count(*) AS "records!",
                      coalesce(sum(bytes), 0)::bigint AS "bytes!",
                      (array_agg(DISTINCT dstport) FILTER (WHERE dstport IS NOT NULL))[1:10] AS "ports!: Vec<i32>",
                      (array_agg(DISTINCT host(srcaddr)))[1:10] AS "sources!: Vec<String>",
                      max(dst_country) AS destination_country
               FROM flow_records
               WHERE bucket_time >= $1 AND bucket_time < $2 AND date_trunc('hour', bucket_time) = ANY($3)
                 AND action = 'ACCEPT' AND interface_id IS NOT NULL AND dstaddr IS NOT NULL
                 AND srcaddr <<= ANY($4::inet[]) AND NOT dstaddr <<= ANY($4::inet[])
                 AND (srcport IS NULL OR dstport IS NULL OR dstport <= srcport)
               GROUP BY account_id, interface_id, dstaddr, date_trunc('hour', bucket_time)
               ORDER BY 5, 1, 2, 4"#,
            first,
            last,
            hours,
            &crate::net::internal_networks(),
        )
        .fetch(pool)
        .map_ok(ConnectionRow::into_connection)
        // Outside the VPC as incidents see it (documentation ranges included: incidents hold them).
        .try_filter(|c| std::future::ready(is_linkable(c.destination))),
    )
}

/// Accepted connections the VPC started to the incidents' addresses, within `reach` of their
/// alerts, per interface, address and hour (by the destination index).
fn connections_to<'a>(
    pool: &'a PgPool,
    incidents: &[IncidentAddress],
    reach: Duration,
    since: Option<DateTime<Utc>>,
) -> ConnectionStream<'a> {
    let addresses: Vec<String> = incidents.iter().map(|a| a.address.clone()).collect();
    let from: Vec<DateTime<Utc>> = incidents.iter().map(|a| a.first - reach).collect();
    let until: Vec<DateTime<Utc>> = incidents.iter().map(|a| a.last + reach).collect();
    let changed: Vec<DateTime<Utc>> = incidents.iter().map(|a| a.changed).collect();
    Box::pin(
        sqlx::query_as!(
            ConnectionRow,
            r#"SELECT f.account_id, f.interface_id AS "interface!", max(f.instance_id) AS instance,
                      host(f.dstaddr) AS "destination!", date_trunc('hour', f.bucket_time) AS "hour!",
                      min(f.bucket_time) AS "first!", count(*) AS "records!", coalesce(sum(f.bytes), 0)::bigint AS "bytes!",
                      (array_agg(DISTINCT f.dstport) FILTER (WHERE f.dstport IS NOT NULL))[1:10] AS "ports!: Vec<i32>",
                      (array_agg(DISTINCT host(f.srcaddr)))[1:10] AS "sources!: Vec<String>",
                      max(f.dst_country) AS destination_country
               FROM unnest($1::text[], $2::timestamptz[], $3::timestamptz[], $5::timestamptz[]) AS t(address, since, until, changed)
               JOIN flow_records f ON f.dstaddr = t.address::inet AND f.bucket_time >= t.since AND f.bucket_time <= t.until
               WHERE f.action = 'ACCEPT' AND f.interface_id IS NOT NULL AND f.srcaddr <<= ANY($4::inet[])
                 AND ($6::timestamptz IS NULL OR t.changed >= $6 OR f.ingested_at >= $6)
                 AND (f.srcport IS NULL OR f.dstport IS NULL OR f.dstport <= f.srcport)
               GROUP BY f.account_id, f.interface_id, f.dstaddr, date_trunc('hour', f.bucket_time)
               ORDER BY 5, 1, 2, 4"#,
            &addresses,
            &from,
            &until,
            &crate::net::internal_networks(),
            &changed,
            since,
        )
        .fetch(pool)
        .map_ok(ConnectionRow::into_connection),
    )
}

struct ConnectionRow {
    account_id: String,
    interface: String,
    instance: Option<String>,
    destination: String,
    hour: DateTime<Utc>,
    first: DateTime<Utc>,
    records: i64,
    bytes: i64,
    ports: Vec<i32>,
    sources: Vec<String>,
    destination_country: Option<String>,
}

impl ConnectionRow {
    fn into_connection(self) -> Connection {
        Connection {
            account_id: self.account_id,
            interface: self.interface,
            instance: self.instance,
            destination: self.destination.parse().unwrap_or(IpAddr::from([0, 0, 0, 0])),
            hour: self.hour,
            first: self.first,
            records: self.records,
            bytes: self.bytes,
            ports: self.ports,
            sources: self.sources,
            destination_country: self.destination_country,
        }
    }
}

/// The finding for a connection with a suspicious destination (`None` otherwise).
pub fn finding(detectors: &Detectors, c: &Connection, verdict: &Verdict) -> Option<Finding> {
    if !verdict.tor && verdict.incidents.is_empty() {
        return None;
    }
    let meta = detectors.meta(SUSPICIOUS_DESTINATION);
    let destination = c.destination.to_string();
    let who = c.instance.as_ref().map_or_else(|| c.interface.clone(), |i| format!("{i} ({})", c.interface));
    let mut why = Vec::new();
    let mut mitre = Vec::new();
    if verdict.tor {
        why.push("a Tor exit".to_string());
        mitre.push(Mitre::new("TA0011", "T1090.003"));
    }
    if !verdict.incidents.is_empty() {
        why.push(format!("an address of open incident {}", verdict.incidents.join(", ")));
        mitre.push(Mitre::new("TA0011", "T1071"));
    }
    let mut resources = vec![c.interface.clone()];
    resources.extend(c.instance.clone());
    Some(Finding {
        policy_id: meta.id.clone(),
        title: format!("{who} connected to {destination}, {}", why.join(" and ")),
        severity: detectors.settings.flow_suspicious_destination.severity,
        account_id: c.account_id.clone(),
        subject: format!("{}>{destination}", c.interface),
        dedup_window: meta.dedup_window,
        principal: None,
        source_ip: Some(c.destination),
        country: c.destination_country.clone(),
        resources,
        evidence_id: format!("flows:{}>{destination}@{}", c.interface, c.hour.to_rfc3339()),
        time: c.first,
        mitre,
        session_key: None,
        details: serde_json::json!({
            "tor": verdict.tor, "incidents": verdict.incidents, "interface": c.interface, "instance": c.instance,
            "hour": c.hour, "records": c.records, "bytes": c.bytes, "ports": c.ports, "sources": c.sources,
        }),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::detect::PolicySet;

    fn connection(destination: &str) -> Connection {
        let hour: DateTime<Utc> = "2026-11-12T05:00:00Z".parse().unwrap();
        Connection {
            account_id: "111122223333".into(),
            interface: "eni-0a1b2c3d4e5f60718".into(),
            instance: Some("i-0a1b2c3d4e5f60718".into()),
            destination: destination.parse().unwrap(),
            hour,
            first: hour + Duration::minutes(7),
            records: 3,
            bytes: 48_213,
            ports: vec![9001],
            sources: vec!["10.0.1.25".into()],
            destination_country: Some("DE".into()),
        }
    }

    #[test]
    fn an_open_incident_address_is_suspicious_and_others_are_not() {
        let set = PolicySet::builtin();
        let incidents = HashMap::from([("203.0.113.50".to_string(), vec!["inc-00000000000000aa".to_string()])]);
        let verdict = verdict(&set.detectors, &incidents, "203.0.113.50".parse().unwrap());
        assert_eq!(verdict, Verdict { tor: false, incidents: vec!["inc-00000000000000aa".into()] });
        let found = finding(&set.detectors, &connection("203.0.113.50"), &verdict).unwrap();
        assert_eq!(found.subject, "eni-0a1b2c3d4e5f60718>203.0.113.50");
        assert_eq!(found.resources, ["eni-0a1b2c3d4e5f60718", "i-0a1b2c3d4e5f60718"]);
        assert_eq!(
            found.title,
            "i-0a1b2c3d4e5f60718 (eni-0a1b2c3d4e5f60718) connected to 203.0.113.50, an address of open incident inc-00000000000000aa"
        );
        assert_eq!(found.mitre, [Mitre::new("TA0011", "T1071")]);
        let other = self::verdict(&set.detectors, &incidents, "198.51.100.9".parse().unwrap());
        assert!(finding(&set.detectors, &connection("198.51.100.9"), &other).is_none());
    }

    #[test]
    fn tor_exits_come_from_the_network_context_given() {
        let dir = std::env::temp_dir().join(format!("skywarden-flowdest-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let tor = dir.join("tor.txt");
        std::fs::write(&tor, "185.220.101.4\n").unwrap();
        let lists = crate::geo::NetworkLists::open(Some(&tor), None, None, None).unwrap();
        let geo = std::sync::Arc::new(crate::geo::GeoDb::open_with(&[], lists).unwrap());
        // Without a Tor source the flows are not searched for Tor at all.
        assert!(geo.knows_tor_exits());
        assert!(!crate::geo::GeoDb::open(&[]).unwrap().knows_tor_exits());
        let without = PolicySet::builtin();
        let with = PolicySet::builtin().with_geo(Some(geo));
        let exit: IpAddr = "185.220.101.4".parse().unwrap();
        assert!(!verdict(&without.detectors, &HashMap::new(), exit).tor, "no context, no Tor");
        let verdict = verdict(&with.detectors, &HashMap::new(), exit);
        assert!(verdict.tor);
        let found = finding(&with.detectors, &connection("185.220.101.4"), &verdict).unwrap();
        assert_eq!((found.severity, found.mitre[0].technique.as_str()), (Severity::High, "T1090.003"));
        assert!(!self::verdict(&with.detectors, &HashMap::new(), "185.220.101.5".parse().unwrap()).tor);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
