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
//! first. Who opened a connection is decided by its handshake where the records show it (the
//! opener's SYN alone, the answering side's SYN-ACK, in any record of the connection on the
//! interface; `skywarden_flow_opened`, migration 0033): a server's replies leave its interface
//! as `egress` too, and only their first interval carries the SYN-ACK. Without a handshake the
//! record must not be ingress and its destination port not above its source port (a reply goes
//! to the client's higher, ephemeral port). Both halves read the packet's own addresses
//! (`pkt-srcaddr`, `pkt-dstaddr`) where logged: behind a NAT gateway the record's destination is
//! the gateway's interface, the packet's the outside address.
//! One alert per interface and address per day; each clock hour with such traffic is one piece
//! of evidence, so re-running detection adds nothing.
//!
//! Bounds: the open incidents' addresses are read a page at a time, all of them. Each half
//! reports at most [`MAX_FINDINGS`] connections a run, stopping at the end of a clock hour; the
//! hours left (the Tor half) or the hour to resume from and the scope (the incident half) wait
//! in the detector's backlog for the next run, and detection health says so.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, Ordering};

use chrono::{DateTime, Duration, Utc};
use futures_util::TryStreamExt;
use serde::Deserialize;
use sqlx::PgPool;
use sqlx::types::ipnetwork::IpNetwork;

use super::{Detectors, SUSPICIOUS_DESTINATION};
use crate::alerts::link_keys::is_linkable;
use crate::detect::health;
use crate::model::{Finding, Mitre, Severity};

/// Open incidents' addresses read per query (all are read, a page at a time).
const INCIDENT_ADDRESS_PAGE: i64 = 5_000;
/// Findings per half and run, at most (each is an interface, an address and an hour); the
/// rest waits in the backlog.
pub const MAX_FINDINGS: usize = 10_000;
/// The backlog key of the incident half (the Tor half's is the policy id).
const INCIDENT_BACKLOG: &str = "aws-flow-suspicious-destination#incidents";

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
    state: &mut health::StateChanges,
) -> Result<Vec<Finding>, sqlx::Error> {
    findings_into(pool, detectors, hours, since, MAX_FINDINGS, state).await
}

/// [`findings`] with the bound on findings per half and run given, its state changes written at
/// once (tests reach the bound cheaply).
pub async fn findings_bounded(
    pool: &PgPool,
    detectors: &Detectors,
    hours: &[DateTime<Utc>],
    since: Option<DateTime<Utc>>,
    max_findings: usize,
) -> Result<Vec<Finding>, sqlx::Error> {
    let mut state = health::StateChanges::default();
    let found = findings_into(pool, detectors, hours, since, max_findings, &mut state).await?;
    state.apply(pool).await?;
    Ok(found)
}

async fn findings_into(
    pool: &PgPool,
    detectors: &Detectors,
    hours: &[DateTime<Utc>],
    since: Option<DateTime<Utc>>,
    max_findings: usize,
    state: &mut health::StateChanges,
) -> Result<Vec<Finding>, sqlx::Error> {
    let settings = &detectors.settings.flow_suspicious_destination;
    let tor =
        settings.enabled && settings.include_tor && detectors.geo.as_ref().is_some_and(|geo| geo.knows_tor_exits());
    if settings.enabled && settings.include_tor && !tor && !SAID_NO_TOR.swap(true, Ordering::Relaxed) {
        tracing::warn!(
            "aws-flow-suspicious-destination: no network context (--tor-exits, Anonymous-IP) given to detection; \
             flows to Tor exits are not looked for"
        );
    }
    let incidents = if settings.enabled && settings.include_incident_addresses {
        incident_addresses(pool).await?
    } else {
        Vec::new()
    };
    let by_address: HashMap<String, Vec<String>> =
        incidents.iter().map(|a| (a.address.clone(), a.incidents.clone())).collect();
    let mut found = Found { max: max_findings, ..Found::default() };
    let mut skipped = 0;
    if tor {
        skipped += tor_half(pool, detectors, &by_address, hours, &mut found, state).await?;
    } else {
        // No Tor list (any more), or the half is off: the hours left for it wait for nothing.
        drop_backlog(pool, SUSPICIOUS_DESTINATION, state).await?;
    }
    if !incidents.is_empty() {
        skipped += incident_half(pool, detectors, &by_address, &incidents, since, &mut found, state).await?;
    } else {
        // No open incident: nothing to resume.
        drop_backlog(pool, INCIDENT_BACKLOG, state).await?;
    }
    if skipped == 0 {
        state.clear_skip(SUSPICIOUS_DESTINATION);
    }
    state.expire(SUSPICIOUS_DESTINATION, SUSPICIOUS_DESTINATION);
    state.expire(INCIDENT_BACKLOG, SUSPICIOUS_DESTINATION);
    Ok(found.findings)
}

/// Forgets what an earlier run left under `key`.
async fn drop_backlog(pool: &PgPool, key: &str, state: &mut health::StateChanges) -> Result<(), sqlx::Error> {
    let left: Vec<DateTime<Utc>> = health::backlog(pool, key).await?.into_iter().map(|(h, _)| h).collect();
    state.done(key, &left);
    Ok(())
}

/// Connections to Tor exits in `hours` and the hours an earlier run left; returns how many hours
/// this run leaves (recorded in the backlog and detection health).
async fn tor_half(
    pool: &PgPool,
    detectors: &Detectors,
    by_address: &HashMap<String, Vec<String>>,
    hours: &[DateTime<Utc>],
    found: &mut Found,
    state: &mut health::StateChanges,
) -> Result<i64, sqlx::Error> {
    let left: Vec<DateTime<Utc>> =
        health::backlog(pool, SUSPICIOUS_DESTINATION).await?.into_iter().map(|(h, _)| h).collect();
    let all: Vec<DateTime<Utc>> = hours.iter().chain(&left).copied().collect::<BTreeSet<_>>().into_iter().collect();
    if all.is_empty() {
        return Ok(0);
    }
    // Contiguous runs of hours, each its own range: an old backlog hour beside new ones does not
    // scan the days between.
    let start = found.findings.len();
    let mut stopped = None;
    for run in contiguous_hours(&all) {
        let room = found.max.saturating_sub(found.findings.len() - start);
        if room == 0 {
            stopped = Some(run[0]);
            break;
        }
        if let Some(at) = found.extend_up_to(detectors, by_address, connections_in(pool, run), room).await? {
            stopped = Some(at);
            break;
        }
    }
    let deferred: Vec<DateTime<Utc>> =
        stopped.map_or_else(Vec::new, |at| all.iter().filter(|h| **h >= at).copied().collect());
    let done: Vec<DateTime<Utc>> = left.iter().filter(|h| !deferred.contains(h)).copied().collect();
    state.done(SUSPICIOUS_DESTINATION, &done);
    if deferred.is_empty() {
        return Ok(0);
    }
    state.defer(SUSPICIOUS_DESTINATION, &deferred, None);
    let note = format!(
        "more than {} connections to Tor exits in one run: {} clock hours left for the next run",
        found.max,
        deferred.len()
    );
    let new = deferred.iter().filter(|h| !left.contains(h)).count() as i64;
    state.record_skip(SUSPICIOUS_DESTINATION, deferred.len() as i64, new, note);
    Ok(deferred.len() as i64)
}

/// Connections to the incidents' addresses, resuming where an earlier run stopped; returns 1
/// when this run stops early in turn (the hour it stopped at is kept to resume from).
async fn incident_half(
    pool: &PgPool,
    detectors: &Detectors,
    by_address: &HashMap<String, Vec<String>>,
    incidents: &[IncidentAddress],
    since: Option<DateTime<Utc>>,
    found: &mut Found,
    state: &mut health::StateChanges,
) -> Result<i64, sqlx::Error> {
    let reach =
        Duration::days(detectors.settings.flow_suspicious_destination.incident_reach_days.clamp(0, super::MAX_DAYS));
    // One resume point at most: the earliest hour, from the widest scope.
    let left = health::backlog(pool, INCIDENT_BACKLOG).await?;
    let resume = left.first().map(|(hour, _)| (*hour, left.iter().map(|(_, s)| *s).min().flatten()));
    let resume = resume.map(|(hour, s)| (hour, if left.iter().any(|(_, s)| s.is_none()) { None } else { s }));
    let stopped = found.extend(detectors, by_address, connections_to(pool, incidents, reach, since, resume)).await?;
    let old: Vec<DateTime<Utc>> = left.iter().map(|(h, _)| *h).collect();
    state.done(INCIDENT_BACKLOG, &old);
    let Some(at) = stopped else { return Ok(0) };
    // What is left: the hours from `at` on, of this run's scope and of the one resumed.
    let scope = match (since, resume) {
        (None, _) | (_, Some((_, None))) => None,
        (Some(since), Some((_, Some(earlier)))) => Some(since.min(earlier)),
        (Some(since), None) => Some(since),
    };
    state.defer(INCIDENT_BACKLOG, &[at], scope);
    let note = format!(
        "more than {} connections to open incidents' addresses in one run: the hours from {at} wait for the next run",
        found.max
    );
    state.record_skip(SUSPICIOUS_DESTINATION, 1, i64::from(old.is_empty()), note);
    Ok(1)
}

/// The findings of a run, each once (both halves can see one connection).
#[derive(Default)]
struct Found {
    findings: Vec<Finding>,
    evidence: HashSet<String>,
    /// New findings per half before it stops at the next hour.
    max: usize,
}

impl Found {
    /// Adds the findings of `rows` (in hour order); past `max` new findings, stops at
    /// the next clock hour and returns it.
    async fn extend(
        &mut self,
        detectors: &Detectors,
        incidents: &HashMap<String, Vec<String>>,
        rows: ConnectionStream<'_>,
    ) -> Result<Option<DateTime<Utc>>, sqlx::Error> {
        self.extend_up_to(detectors, incidents, rows, self.max).await
    }

    /// [`Self::extend`] with `max` new findings.
    async fn extend_up_to(
        &mut self,
        detectors: &Detectors,
        incidents: &HashMap<String, Vec<String>>,
        mut rows: ConnectionStream<'_>,
        max: usize,
    ) -> Result<Option<DateTime<Utc>>, sqlx::Error> {
        let start = self.findings.len();
        let mut last_hour = None;
        while let Some(connection) = rows.try_next().await? {
            if self.findings.len() - start >= max && last_hour.is_some_and(|h| connection.hour > h) {
                return Ok(Some(connection.hour));
            }
            last_hour = Some(connection.hour);
            let verdict = verdict(detectors, incidents, connection.destination);
            if let Some(finding) = finding(detectors, &connection, &verdict)
                && self.evidence.insert(finding.evidence_id.clone())
            {
                self.findings.push(finding);
            }
        }
        Ok(None)
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
/// incidents and when: all of them, read a page at a time.
async fn incident_addresses(pool: &PgPool) -> Result<Vec<IncidentAddress>, sqlx::Error> {
    let flow_policies: Vec<String> =
        [super::EXFILTRATION, super::PORT_SCAN, SUSPICIOUS_DESTINATION].iter().map(|p| p.to_string()).collect();
    let mut addresses = Vec::new();
    let mut after: Option<IpNetwork> = None;
    loop {
        let rows = sqlx::query!(
            r#"SELECT a.source_ip AS "ip!: IpNetwork", host(a.source_ip) AS "address!",
                      array_agg(DISTINCT a.incident_id ORDER BY a.incident_id) AS "incidents!: Vec<String>",
                      min(a.first_seen) AS "first!", max(a.last_seen) AS "last!",
                      greatest(max(a.updated_at), max(i.updated_at)) AS "changed!"
               FROM alerts a JOIN incidents i ON i.incident_id = a.incident_id
               WHERE a.source_ip IS NOT NULL AND a.policy_id <> ALL($1) AND i.merged_into IS NULL
                 AND i.status IN ('open', 'investigating', 'contained')
                 AND ($3::inet IS NULL OR a.source_ip > $3)
               GROUP BY a.source_ip ORDER BY a.source_ip LIMIT $2"#,
            &flow_policies,
            INCIDENT_ADDRESS_PAGE,
            after,
        )
        .fetch_all(pool)
        .await?;
        let Some(last) = rows.last() else { break };
        after = Some(last.ip);
        let full = rows.len() as i64 == INCIDENT_ADDRESS_PAGE;
        addresses.extend(rows.into_iter().filter(|r| r.address.parse::<IpAddr>().is_ok_and(is_linkable)).map(|r| {
            IncidentAddress {
                address: r.address,
                incidents: r.incidents,
                first: r.first,
                last: r.last,
                changed: r.changed,
            }
        }));
        if !full {
            break;
        }
    }
    Ok(addresses)
}

type ConnectionStream<'a> = futures_util::stream::BoxStream<'a, Result<Connection, sqlx::Error>>;

/// `hours` (sorted) cut where one hour does not follow the last.
fn contiguous_hours(hours: &[DateTime<Utc>]) -> Vec<&[DateTime<Utc>]> {
    let mut runs = Vec::new();
    let mut start = 0;
    for i in 1..=hours.len() {
        if i == hours.len() || hours[i] - hours[i - 1] > Duration::hours(1) {
            runs.push(&hours[start..i]);
            start = i;
        }
    }
    runs
}

/// Accepted connections the VPC started to outside addresses in `hours`, per interface, address
/// and hour.
fn connections_in<'a>(pool: &'a PgPool, hours: &'a [DateTime<Utc>]) -> ConnectionStream<'a> {
    let (first, last) = (hours[0], hours[hours.len() - 1] + Duration::hours(1));
    Box::pin(
        sqlx::query_as!(
            ConnectionRow,
            r#"SELECT account_id, interface_id AS "interface!", max(instance_id) AS instance,
                      host(coalesce(pkt_dstaddr, dstaddr)) AS "destination!",
                      date_trunc('hour', bucket_time) AS "hour!", min(bucket_time) AS "first!", count(*) AS "records!",
                      coalesce(sum(bytes), 0)::bigint AS "bytes!",
                      (array_agg(DISTINCT dstport) FILTER (WHERE dstport IS NOT NULL))[1:10] AS "ports!: Vec<i32>",
                      (array_agg(DISTINCT host(coalesce(pkt_srcaddr, srcaddr))))[1:10] AS "sources!: Vec<String>",
                      max(dst_country) AS destination_country
               FROM flow_records
               WHERE bucket_time >= $1 AND bucket_time < $2 AND date_trunc('hour', bucket_time) = ANY($3)
                 AND action = 'ACCEPT' AND interface_id IS NOT NULL AND dstaddr IS NOT NULL
                 -- The packet's own addresses where logged (behind a NAT gateway, a load balancer).
                 AND coalesce(pkt_srcaddr, srcaddr) <<= ANY($4::inet[])
                 AND NOT coalesce(pkt_dstaddr, dstaddr) <<= ANY($4::inet[])
                 -- The instance's own connection: see the module's notes (migration 0033).
                 AND skywarden_flow_opened(interface_id, bucket_time, srcaddr, srcport, dstaddr, dstport, protocol,
                                           tcp_flags, flow_direction)
               GROUP BY account_id, interface_id, coalesce(pkt_dstaddr, dstaddr), date_trunc('hour', bucket_time)
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
    resume: Option<(DateTime<Utc>, Option<DateTime<Utc>>)>,
) -> ConnectionStream<'a> {
    let addresses: Vec<String> = incidents.iter().map(|a| a.address.clone()).collect();
    let from: Vec<DateTime<Utc>> = incidents.iter().map(|a| a.first - reach).collect();
    let until: Vec<DateTime<Utc>> = incidents.iter().map(|a| a.last + reach).collect();
    let changed: Vec<DateTime<Utc>> = incidents.iter().map(|a| a.changed).collect();
    Box::pin(
        sqlx::query_as!(
            ConnectionRow,
            r#"SELECT f.account_id AS "account_id!", f.interface_id AS "interface!", max(f.instance_id) AS instance,
                      host(coalesce(f.pkt_dstaddr, f.dstaddr)) AS "destination!", date_trunc('hour', f.bucket_time) AS "hour!",
                      -- One direction per interface: on a NAT gateway's the instance's packet in
                      -- (`forwarded`) and the gateway's out are one connection; the first names the
                      -- instance, so where the hour has it, the gateway's own records are not counted.
                      CASE WHEN bool_or(f.forwarded) THEN min(f.bucket_time) FILTER (WHERE f.forwarded)
                           ELSE min(f.bucket_time) END AS "first!",
                      CASE WHEN bool_or(f.forwarded) THEN count(*) FILTER (WHERE f.forwarded) ELSE count(*) END AS "records!",
                      coalesce(CASE WHEN bool_or(f.forwarded) THEN sum(f.bytes) FILTER (WHERE f.forwarded)
                                    ELSE sum(f.bytes) END, 0)::bigint AS "bytes!",
                      (CASE WHEN bool_or(f.forwarded)
                            THEN array_agg(DISTINCT f.dstport) FILTER (WHERE f.forwarded AND f.dstport IS NOT NULL)
                            ELSE array_agg(DISTINCT f.dstport) FILTER (WHERE f.dstport IS NOT NULL) END)[1:10]
                          AS "ports!: Vec<i32>",
                      (CASE WHEN bool_or(f.forwarded)
                            THEN array_agg(DISTINCT host(coalesce(f.pkt_srcaddr, f.srcaddr))) FILTER (WHERE f.forwarded)
                            ELSE array_agg(DISTINCT host(coalesce(f.pkt_srcaddr, f.srcaddr))) END)[1:10]
                          AS "sources!: Vec<String>",
                      max(f.dst_country) AS destination_country
               FROM unnest($1::text[], $2::timestamptz[], $3::timestamptz[], $5::timestamptz[]) AS t(address, since, until, changed)
               -- The packet's own destination where logged (`pkt-dstaddr`: behind a NAT gateway the
               -- record's is the gateway's interface), else the record's: two arms, each by its index
               -- (the second partial, migration 0041: only records whose two destinations differ).
               JOIN LATERAL (
                   SELECT r.*, false AS forwarded FROM flow_records r
                   WHERE r.dstaddr = t.address::inet AND r.bucket_time >= t.since AND r.bucket_time <= t.until
                     AND (r.pkt_dstaddr IS NULL OR r.pkt_dstaddr = r.dstaddr)
                   UNION ALL
                   SELECT r.*, true FROM flow_records r
                   WHERE r.pkt_dstaddr = t.address::inet AND r.pkt_dstaddr <> r.dstaddr
                     AND r.bucket_time >= t.since AND r.bucket_time <= t.until
               ) f ON true
               WHERE f.action = 'ACCEPT' AND f.interface_id IS NOT NULL AND coalesce(f.pkt_srcaddr, f.srcaddr) <<= ANY($4::inet[])
                 AND ($6::timestamptz IS NULL OR t.changed >= $6 OR f.ingested_at >= $6
                      -- Where an earlier run stopped: its hours from there on, in its scope.
                      OR (f.bucket_time >= $7::timestamptz
                          AND ($8::timestamptz IS NULL OR t.changed >= $8 OR f.ingested_at >= $8)))
                 AND skywarden_flow_opened(f.interface_id, f.bucket_time, f.srcaddr, f.srcport, f.dstaddr, f.dstport,
                                           f.protocol, f.tcp_flags, f.flow_direction)
               GROUP BY f.account_id, f.interface_id, coalesce(f.pkt_dstaddr, f.dstaddr), date_trunc('hour', f.bucket_time)
               ORDER BY 5, 1, 2, 4"#,
            &addresses,
            &from,
            &until,
            &crate::net::internal_networks(),
            &changed,
            since,
            resume.map(|(hour, _)| hour),
            resume.and_then(|(_, scope)| scope),
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
    fn hours_are_cut_into_contiguous_runs() {
        let at = |h: i64| "2026-11-12T00:00:00Z".parse::<DateTime<Utc>>().unwrap() + Duration::hours(h);
        let hours = [at(0), at(1), at(2), at(240), at(241)];
        assert_eq!(contiguous_hours(&hours), [&hours[..3], &hours[3..]]);
        assert!(contiguous_hours(&[]).is_empty());
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
