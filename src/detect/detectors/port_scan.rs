//! `aws-flow-port-scan`: one source address reaching many distinct destination ports (a port
//! scan) or hosts (a sweep) within a window, most of it refused or unanswered. An address of the
//! VPC scanning (an instance looking around for lateral movement) is one alert per scanner; an
//! outside address scanning in (the internet scans every public address, all day) is off by
//! default, and when on is one alert per target interface and day that lists the top scanners.
//!
//! Windows are fixed (aligned to the Unix epoch) and counted in SQL over the stored flow
//! records, so the verdict does not depend on the order records arrive in. Only windows that got
//! new records are counted again. The refused share keeps busy servers out: a server answering
//! many clients reaches many ports (the clients' ephemeral ones), but its traffic is accepted.
//!
//! The share is of connection *attempts* (destination address and port), not of records: inside a
//! VPC one probe leaves two records, an ACCEPT where it left the scanner and a REJECT where the
//! target's security group dropped it. An attempt is refused when any of its records is a REJECT,
//! or when all of them look unanswered, which is all the scanner's own interface shows where the
//! targets log no flows (another VPC, a subnet without flow logs). A TCP record looks unanswered
//! when it is a probe and no reply of its connection is logged (the reverse addresses and ports,
//! within 15 minutes, accepted, not a reset alone). A probe: with TCP flags (version 3 and
//! later), SYN alone in at most 3 small packets (a known 0 is a connection's later interval,
//! never a probe); without them, a record of the opening side (`flow-direction` egress, else the
//! destination port not above the source port) with no payload (at most 3 packets of at most 64
//! bytes: SYN and its retries). UDP and ICMP records look unanswered only without a reply. A
//! connection still opening at an interval's end (its SYN alone) has its answer logged, and its
//! later intervals carry other flags, so it is not refused. Addresses are the packet's own
//! (`pkt-srcaddr`, `pkt-dstaddr`) where logged.
//!
//! Only the scanner's interface is an alert's resource (the targets' interfaces are in its
//! details: as resources they would pull the victims into the intruder's incident). It is the
//! interface that logged the scanner's traffic leaving (`flow-direction` egress); without that
//! field, the one that saw it reach more than one address; else one where all of it was
//! accepted (a target's security group refuses a scan).
//!
//! A run reports at most [`MAX_SOURCES`] scanning sources (windows in time order, a day's worth
//! at a time); the hours of the windows beyond are left in the detector's backlog for the next
//! run, and detection health says so.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use chrono::{DateTime, Duration, DurationRound, TimeZone, Utc};
use serde::Deserialize;
use sqlx::PgPool;
use sqlx::types::ipnetwork::IpNetwork;

use super::{Detectors, PORT_SCAN};
use crate::detect::health;
use crate::model::{Finding, Mitre, Severity};
use crate::net::is_internal;

/// How many ports, hosts, interfaces and scanners an alert names.
const NAMED: i32 = 25;
/// Scanning sources (per window) reported per run, at most; the rest wait in the backlog.
pub const MAX_SOURCES: usize = 5_000;
/// Windows counted per query.
const WINDOWS_PER_QUERY: usize = 24;

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
    /// Outside addresses scanning in: one alert per target interface and day (off by default:
    /// every public address is scanned all day).
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
            include_inbound: false,
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

    fn window_minutes_i32(&self) -> i32 {
        i32::try_from(self.window_minutes.clamp(1, 1440)).unwrap_or(60)
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
    /// Attempts with a REJECT record (at either end) or a probe that got no answer.
    pub refused: i64,
    pub sample_ports: Vec<i32>,
    pub sample_hosts: Vec<String>,
    /// Every interface that logged the source's traffic (scanner's and targets').
    pub interfaces: Vec<String>,
    /// The scanner's own interface(s), when the records tell (internal scans).
    pub scanner_interfaces: Vec<String>,
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

/// The clock hours `windows` cover (what the backlog keeps).
fn hours_of(settings: &PortScanSettings, windows: &[DateTime<Utc>]) -> Vec<DateTime<Utc>> {
    let mut hours = BTreeSet::new();
    for window in windows {
        let mut at = window.duration_trunc(Duration::hours(1)).unwrap_or(*window);
        while at < *window + settings.window() {
            hours.insert(at);
            at += Duration::hours(1);
        }
    }
    hours.into_iter().collect()
}

/// The scans in the windows holding `hours` and the hours an earlier run left in the backlog;
/// the backlog and skips it changes go to `state`, written once its findings are stored.
pub async fn findings(
    pool: &PgPool,
    detectors: &Detectors,
    hours: &[DateTime<Utc>],
    state: &mut health::StateChanges,
) -> Result<Vec<Finding>, sqlx::Error> {
    findings_into(pool, detectors, hours, MAX_SOURCES, state).await
}

/// [`findings`] with the bound on scanning sources per run given, its state changes written at
/// once (tests reach the bound cheaply).
pub async fn findings_bounded(
    pool: &PgPool,
    detectors: &Detectors,
    hours: &[DateTime<Utc>],
    max_sources: usize,
) -> Result<Vec<Finding>, sqlx::Error> {
    let mut state = health::StateChanges::default();
    let found = findings_into(pool, detectors, hours, max_sources, &mut state).await?;
    state.apply(pool).await?;
    Ok(found)
}

async fn findings_into(
    pool: &PgPool,
    detectors: &Detectors,
    hours: &[DateTime<Utc>],
    max_sources: usize,
    state: &mut health::StateChanges,
) -> Result<Vec<Finding>, sqlx::Error> {
    let settings = &detectors.settings.flow_port_scan;
    let left: Vec<DateTime<Utc>> = health::backlog(pool, PORT_SCAN).await?.into_iter().map(|(h, _)| h).collect();
    if !settings.enabled || !(settings.include_inbound || settings.include_internal) {
        // Switched off: what an earlier run left waits for nothing.
        state.done(PORT_SCAN, &left);
        state.clear_skip(PORT_SCAN);
        return Ok(Vec::new());
    }
    let all: Vec<DateTime<Utc>> = hours.iter().chain(&left).copied().collect::<BTreeSet<_>>().into_iter().collect();
    if all.is_empty() {
        return Ok(Vec::new());
    }
    let mut findings = Vec::new();
    let mut deferred = Vec::new();
    if settings.include_internal {
        let (found, rest) = internal_scans(pool, detectors, &windows_of(settings, &all), max_sources).await?;
        findings.extend(found);
        deferred = rest;
    }
    let mut dropped = 0;
    if settings.include_inbound {
        let (found, skipped) = inbound_scans(pool, detectors, &all, max_sources).await?;
        findings.extend(found);
        dropped = skipped;
    }
    let deferred_hours = hours_of(settings, &deferred);
    let done: Vec<DateTime<Utc>> = left.iter().filter(|h| !deferred_hours.contains(h)).copied().collect();
    state.done(PORT_SCAN, &done);
    if deferred.is_empty() && dropped == 0 {
        state.clear_skip(PORT_SCAN);
    } else {
        state.defer(PORT_SCAN, &deferred_hours, None);
        let note = format!(
            "more than {max_sources} scanning sources in one run: {} windows ({} hours) left for the next run; \
             {dropped} inbound scanner windows beyond the bound not reported",
            deferred.len(),
            deferred_hours.len()
        );
        let new = deferred_hours.iter().filter(|h| !left.contains(h)).count() as i64 + dropped;
        state.record_skip(PORT_SCAN, deferred_hours.len() as i64 + dropped, new, note);
    }
    state.expire(PORT_SCAN, PORT_SCAN);
    Ok(findings)
}

/// Scans from the VPC's own addresses, windows in time order, until [`MAX_SOURCES`] scanning
/// sources are found; the windows not counted are returned for the backlog.
async fn internal_scans(
    pool: &PgPool,
    detectors: &Detectors,
    windows: &[DateTime<Utc>],
    max_sources: usize,
) -> Result<(Vec<Finding>, Vec<DateTime<Utc>>), sqlx::Error> {
    let mut findings = Vec::new();
    let mut counted = 0;
    let length = detectors.settings.flow_port_scan.window();
    for (offset, chunk) in query_chunks(windows, length) {
        let mut scans = source_windows(pool, detectors, chunk, true, i64::MAX).await?;
        scans.retain(|w| qualifies(detectors, w));
        attach_scanner_interfaces(pool, detectors, &mut scans).await?;
        // Whole windows, in time order (the query's), until the bound.
        for (i, window) in chunk.iter().enumerate() {
            let of_window: Vec<&SourceWindow> = scans.iter().filter(|w| w.window_start == *window).collect();
            counted += of_window.len();
            findings.extend(of_window.into_iter().filter_map(|w| finding(detectors, w)));
            if counted >= max_sources {
                let rest = windows[offset + i + 1..].to_vec();
                return Ok((findings, rest));
            }
        }
    }
    Ok((findings, Vec::new()))
}

/// `windows` (sorted) as the queries count them: at most [`WINDOWS_PER_QUERY`] each, never
/// across a gap (an old backlog window beside new ones would scan the days between), each with
/// the index of its first window.
fn query_chunks(windows: &[DateTime<Utc>], length: Duration) -> Vec<(usize, &[DateTime<Utc>])> {
    let mut chunks = Vec::new();
    let mut start = 0;
    for i in 1..=windows.len() {
        if i == windows.len() || windows[i] - windows[i - 1] > length || i - start == WINDOWS_PER_QUERY {
            chunks.push((start, &windows[start..i]));
            start = i;
        }
    }
    chunks
}

/// Scans from outside in the days of `hours` (whole days: one alert per target interface and
/// day), and how many scanner windows beyond [`MAX_SOURCES`] went unreported.
async fn inbound_scans(
    pool: &PgPool,
    detectors: &Detectors,
    hours: &[DateTime<Utc>],
    max_sources: usize,
) -> Result<(Vec<Finding>, i64), sqlx::Error> {
    let settings = &detectors.settings.flow_port_scan;
    let days: BTreeSet<DateTime<Utc>> = hours.iter().filter_map(|h| h.duration_trunc(Duration::days(1)).ok()).collect();
    let day_hours: Vec<DateTime<Utc>> =
        days.iter().flat_map(|d| (0..24).map(move |h| *d + Duration::hours(h))).collect();
    let limit = i64::try_from(max_sources).unwrap_or(i64::MAX).saturating_add(1);
    let mut scans = source_windows(pool, detectors, &windows_of(settings, &day_hours), false, limit).await?;
    let dropped = i64::try_from(scans.len().saturating_sub(max_sources)).unwrap_or(0);
    scans.truncate(max_sources);
    scans.retain(|w| qualifies(detectors, w));
    let targets = scan_targets(pool, settings, &scans).await?;
    Ok((inbound_findings(detectors, &scans, &targets), dropped))
}

/// Per scanner window: the interfaces it reached, with ports and hosts there.
type Targets = BTreeMap<(String, IpAddr, DateTime<Utc>), Vec<(String, i64, i64)>>;

async fn source_windows(
    pool: &PgPool,
    detectors: &Detectors,
    windows: &[DateTime<Utc>],
    internal: bool,
    limit: i64,
) -> Result<Vec<SourceWindow>, sqlx::Error> {
    let settings = &detectors.settings.flow_port_scan;
    let (Some(first), Some(last)) = (windows.first(), windows.last()) else { return Ok(Vec::new()) };
    let allowed: Vec<IpNetwork> =
        detectors.port_scan_allowed.cidrs.iter().filter_map(|c| IpNetwork::new(c.address, c.prefix).ok()).collect();
    let rows = sqlx::query_as!(
        SourceRow,
        r#"WITH records AS (
               SELECT account_id, coalesce(pkt_srcaddr, srcaddr) AS src, coalesce(pkt_dstaddr, dstaddr) AS dst, dstport,
                      interface_id, bucket_time, src_country, action = 'REJECT' AS rejected,
                      date_bin(make_interval(mins => $3::int), bucket_time, timestamptz '1970-01-01 00:00:00+00') AS window_start,
                      -- Unanswered: see the module's notes. A known 0 (a connection's later interval) never is.
                      CASE WHEN action = 'REJECT' THEN true
                           WHEN CASE WHEN protocol = 6 AND tcp_flags IS NOT NULL
                                         THEN tcp_flags = 2 AND packets <= 3 AND bytes <= 64 * packets
                                     WHEN protocol = 6
                                         THEN flow_direction IS DISTINCT FROM 'ingress'
                                              AND (flow_direction = 'egress' OR srcport IS NULL OR dstport IS NULL OR dstport <= srcport)
                                              AND packets <= 3 AND bytes <= 64 * packets
                                     ELSE true END
                           THEN NOT EXISTS (
                               SELECT FROM flow_records r
                               WHERE r.srcaddr = f.dstaddr AND r.dstaddr = f.srcaddr AND r.protocol = f.protocol
                                 -- Flow logs carry no negative port, so coalesce(-1) equals IS NOT
                                 -- DISTINCT FROM, in the form `flow_records_reply_idx` (migration 0041) serves.
                                 AND coalesce(r.srcport, -1) = coalesce(f.dstport, -1)
                                 AND coalesce(r.dstport, -1) = coalesce(f.srcport, -1)
                                 AND r.bucket_time >= f.bucket_time - interval '15 minutes'
                                 AND r.bucket_time <= f.bucket_time + interval '15 minutes'
                                 -- A reset alone is a refusal, not an answer.
                                 AND r.action = 'ACCEPT' AND coalesce(r.tcp_flags, 0) & 20 <> 4)
                           ELSE false END AS unanswered
               FROM flow_records f
               WHERE bucket_time >= $1::timestamptz AND bucket_time < $2::timestamptz + make_interval(mins => $3::int)
                 AND date_bin(make_interval(mins => $3::int), bucket_time, timestamptz '1970-01-01 00:00:00+00') = ANY($4)
                 AND srcaddr IS NOT NULL AND dstaddr IS NOT NULL AND NOT coalesce(pkt_srcaddr, srcaddr) <<= ANY($5::inet[])
                 AND (coalesce(pkt_srcaddr, srcaddr) <<= ANY($11::inet[])) = $12
           ),
           -- Per attempt (destination and port): refused when any record is a REJECT or all look unanswered.
           attempts AS (
               SELECT *, bool_or(rejected) OVER attempt OR bool_and(unanswered) OVER attempt AS refused
               FROM records WINDOW attempt AS (PARTITION BY account_id, src, window_start, dst, dstport)
           )
           SELECT account_id, host(src) AS "source!", window_start AS "window_start!",
                  count(DISTINCT dstport) AS "ports!", count(DISTINCT dst) AS "hosts!",
                  count(DISTINCT host(dst) || ':' || coalesce(dstport, -1)) AS "attempts!",
                  count(DISTINCT host(dst) || ':' || coalesce(dstport, -1)) FILTER (WHERE refused) AS "refused!",
                  (array_agg(DISTINCT dstport) FILTER (WHERE dstport IS NOT NULL))[1:$7] AS "sample_ports!: Vec<i32>",
                  (array_agg(DISTINCT host(dst)))[1:$7] AS "sample_hosts!: Vec<String>",
                  (array_agg(DISTINCT interface_id) FILTER (WHERE interface_id IS NOT NULL))[1:$7] AS "interfaces!: Vec<String>",
                  min(bucket_time) AS "first!", max(bucket_time) AS "last!", max(src_country) AS source_country
           FROM attempts
           GROUP BY account_id, src, window_start
           HAVING (count(DISTINCT dstport) >= $6 OR count(DISTINCT dst) >= $8)
              AND count(DISTINCT host(dst) || ':' || coalesce(dstport, -1)) FILTER (WHERE refused)
                  >= $9::float8 * count(DISTINCT host(dst) || ':' || coalesce(dstport, -1))
           ORDER BY 3, count(DISTINCT dstport) + count(DISTINCT dst) DESC, 1, 2
           LIMIT $10"#,
        first,
        last,
        settings.window_minutes_i32(),
        windows,
        &allowed,
        settings.min_ports,
        NAMED,
        settings.min_hosts,
        settings.min_reject_ratio,
        limit,
        &crate::net::internal_networks(),
        internal,
    )
    .fetch_all(pool)
    .await?;
    Ok(rows.into_iter().filter_map(SourceRow::into_window).collect())
}

/// A row of [`source_windows`]' query.
struct SourceRow {
    account_id: String,
    source: String,
    window_start: DateTime<Utc>,
    ports: i64,
    hosts: i64,
    attempts: i64,
    refused: i64,
    sample_ports: Vec<i32>,
    sample_hosts: Vec<String>,
    interfaces: Vec<String>,
    first: DateTime<Utc>,
    last: DateTime<Utc>,
    source_country: Option<String>,
}

impl SourceRow {
    fn into_window(self) -> Option<SourceWindow> {
        Some(SourceWindow {
            account_id: self.account_id,
            source: self.source.parse().ok()?,
            window_start: self.window_start,
            ports: self.ports,
            hosts: self.hosts,
            attempts: self.attempts,
            refused: self.refused,
            sample_ports: self.sample_ports,
            sample_hosts: self.sample_hosts,
            interfaces: self.interfaces,
            scanner_interfaces: Vec::new(),
            first: self.first,
            last: self.last,
            source_country: self.source_country,
        })
    }
}

/// Per interface that logged a scanner window's traffic: whether it logged it leaving, how many
/// addresses it saw it reach, whether all of it was accepted.
struct InterfaceView {
    interface: String,
    egress: bool,
    destinations: i64,
    all_accepted: bool,
}

/// Finds each scan's own interface(s) among those that logged it (see the module's notes).
async fn attach_scanner_interfaces(
    pool: &PgPool,
    detectors: &Detectors,
    scans: &mut [SourceWindow],
) -> Result<(), sqlx::Error> {
    if scans.is_empty() {
        return Ok(());
    }
    let settings = &detectors.settings.flow_port_scan;
    let accounts: Vec<String> = scans.iter().map(|w| w.account_id.clone()).collect();
    let sources: Vec<IpNetwork> = scans.iter().map(|w| IpNetwork::from(w.source)).collect();
    let starts: Vec<DateTime<Utc>> = scans.iter().map(|w| w.window_start).collect();
    let rows = sqlx::query!(
        r#"SELECT t.account AS "account!", host(t.source) AS "source!", t.start AS "start!", f.interface_id AS "interface!",
                  coalesce(bool_or(f.flow_direction = 'egress'), false) AS "egress!",
                  count(DISTINCT f.dstaddr) AS "destinations!", bool_and(f.action = 'ACCEPT') AS "all_accepted!"
           FROM unnest($1::text[], $2::inet[], $3::timestamptz[]) AS t(account, source, start)
           JOIN flow_records f ON f.account_id = t.account AND coalesce(f.pkt_srcaddr, f.srcaddr) = t.source
                AND f.bucket_time >= t.start AND f.bucket_time < t.start + make_interval(mins => $4::int)
           WHERE f.interface_id IS NOT NULL
           GROUP BY 1, 2, 3, 4
           ORDER BY 1, 2, 3, 4"#,
        &accounts,
        &sources,
        &starts,
        settings.window_minutes_i32(),
    )
    .fetch_all(pool)
    .await?;
    let mut views: BTreeMap<(String, String, DateTime<Utc>), Vec<InterfaceView>> = BTreeMap::new();
    for r in rows {
        views.entry((r.account, r.source, r.start)).or_default().push(InterfaceView {
            interface: r.interface,
            egress: r.egress,
            destinations: r.destinations,
            all_accepted: r.all_accepted,
        });
    }
    for scan in scans.iter_mut() {
        let key = (scan.account_id.clone(), scan.source.to_string(), scan.window_start);
        scan.scanner_interfaces = views.get(&key).map(|v| scanner_interfaces(v)).unwrap_or_default();
    }
    Ok(())
}

/// The scanner's interface(s): those that logged its traffic leaving; else those that saw it
/// reach several addresses (a target's interface sees only its own); else those where all of it
/// was accepted (a target refuses a scan).
fn scanner_interfaces(views: &[InterfaceView]) -> Vec<String> {
    let tiers: [&dyn Fn(&InterfaceView) -> bool; 3] = [&|v| v.egress, &|v| v.destinations > 1, &|v| v.all_accepted];
    for tier in tiers {
        let chosen: Vec<String> = views.iter().filter(|v| tier(v)).map(|v| v.interface.clone()).collect();
        if !chosen.is_empty() {
            return chosen;
        }
    }
    Vec::new()
}

/// Per outside scanner window, the interfaces it reached (the targets', where they log flows).
async fn scan_targets(
    pool: &PgPool,
    settings: &PortScanSettings,
    scans: &[SourceWindow],
) -> Result<Targets, sqlx::Error> {
    let accounts: Vec<String> = scans.iter().map(|w| w.account_id.clone()).collect();
    let sources: Vec<IpNetwork> = scans.iter().map(|w| IpNetwork::from(w.source)).collect();
    let starts: Vec<DateTime<Utc>> = scans.iter().map(|w| w.window_start).collect();
    let rows = sqlx::query!(
        r#"SELECT t.account AS "account!", host(t.source) AS "source!", t.start AS "start!", f.interface_id AS "interface!",
                  count(DISTINCT f.dstport) AS "ports!", count(DISTINCT f.dstaddr) AS "hosts!"
           FROM unnest($1::text[], $2::inet[], $3::timestamptz[]) AS t(account, source, start)
           JOIN flow_records f ON f.account_id = t.account AND coalesce(f.pkt_srcaddr, f.srcaddr) = t.source
                AND f.bucket_time >= t.start AND f.bucket_time < t.start + make_interval(mins => $4::int)
           WHERE f.interface_id IS NOT NULL
           GROUP BY 1, 2, 3, 4"#,
        &accounts,
        &sources,
        &starts,
        settings.window_minutes_i32(),
    )
    .fetch_all(pool)
    .await?;
    let mut targets = Targets::new();
    for r in rows {
        let Ok(source) = r.source.parse() else { continue };
        targets.entry((r.account, source, r.start)).or_default().push((r.interface, r.ports, r.hosts));
    }
    Ok(targets)
}

/// Whether a window is a scan by the thresholds, from a source not allowed.
fn qualifies(detectors: &Detectors, w: &SourceWindow) -> bool {
    let settings = &detectors.settings.flow_port_scan;
    (w.ports >= settings.min_ports || w.hosts >= settings.min_hosts)
        && w.attempts > 0
        && w.refused as f64 >= settings.min_reject_ratio * w.attempts as f64
        && !detectors.port_scan_allowed.contains(w.source)
}

/// The finding for a scan from inside the VPC (`None` for a window that does not qualify).
pub fn finding(detectors: &Detectors, w: &SourceWindow) -> Option<Finding> {
    let settings = &detectors.settings.flow_port_scan;
    if !settings.enabled || !settings.include_internal || !is_internal(w.source) || !qualifies(detectors, w) {
        return None;
    }
    let meta = detectors.meta(PORT_SCAN);
    let source = w.source.to_string();
    let title = format!(
        "Port scan from inside the VPC: {source} reached {} ports on {} hosts in {} minutes, {}% refused or unanswered",
        w.ports,
        w.hosts,
        settings.window_minutes,
        w.refused * 100 / w.attempts
    );
    let targets: Vec<&String> = w.interfaces.iter().filter(|i| !w.scanner_interfaces.contains(i)).collect();
    Some(Finding {
        policy_id: meta.id.clone(),
        title,
        severity: settings.internal_severity,
        account_id: w.account_id.clone(),
        subject: source.clone(),
        dedup_window: meta.dedup_window,
        principal: None,
        source_ip: Some(w.source),
        country: w.source_country.clone(),
        // The scanner's interface is what the intruder may hold; the targets' are victims, and
        // as resources would pull them into the intruder's incident.
        resources: w.scanner_interfaces.clone(),
        evidence_id: format!("flows:scan:{source}@{}", w.window_start.to_rfc3339()),
        time: w.first,
        mitre: vec![Mitre::new("TA0007", "T1046")],
        session_key: None,
        details: serde_json::json!({
            "direction": "internal",
            "scanner_interfaces": w.scanner_interfaces, "target_interfaces": targets,
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

/// One scanner of a target interface's day, for the inbound alert.
struct Scanner<'a> {
    window: &'a SourceWindow,
    ports: i64,
    hosts: i64,
}

/// One finding per target interface and day with outside scanners, listing the busiest.
pub fn inbound_findings(detectors: &Detectors, scans: &[SourceWindow], targets: &Targets) -> Vec<Finding> {
    let settings = &detectors.settings.flow_port_scan;
    if !settings.enabled || !settings.include_inbound {
        return Vec::new();
    }
    let mut by_target: BTreeMap<(String, String, DateTime<Utc>), Vec<Scanner>> = BTreeMap::new();
    for w in scans.iter().filter(|w| !is_internal(w.source) && qualifies(detectors, w)) {
        let Some(reached) = targets.get(&(w.account_id.clone(), w.source, w.window_start)) else { continue };
        let day = w.window_start.duration_trunc(Duration::days(1)).unwrap_or(w.window_start);
        for (interface, ports, hosts) in reached {
            let key = (w.account_id.clone(), interface.clone(), day);
            by_target.entry(key).or_default().push(Scanner { window: w, ports: *ports, hosts: *hosts });
        }
    }
    by_target
        .into_iter()
        .map(|((account, interface, day), scanners)| inbound_finding(detectors, &account, &interface, day, scanners))
        .collect()
}

fn inbound_finding(
    detectors: &Detectors,
    account: &str,
    interface: &str,
    day: DateTime<Utc>,
    mut scanners: Vec<Scanner>,
) -> Finding {
    let settings = &detectors.settings.flow_port_scan;
    let meta = detectors.meta(PORT_SCAN);
    // The busiest first; ties by address, then window, so the list does not depend on order.
    scanners.sort_by(|a, b| {
        (b.ports + b.hosts)
            .cmp(&(a.ports + a.hosts))
            .then(a.window.source.cmp(&b.window.source))
            .then(a.window.window_start.cmp(&b.window.window_start))
    });
    let addresses: BTreeSet<IpAddr> = scanners.iter().map(|s| s.window.source).collect();
    let top = scanners[0].window;
    let first = scanners.iter().map(|s| s.window.first).min().unwrap_or(day);
    let mut named = BTreeSet::new();
    let listed: Vec<serde_json::Value> = scanners
        .iter()
        .filter(|s| named.insert(s.window.source))
        .take(NAMED as usize)
        .map(|s| {
            serde_json::json!({
                "source": s.window.source.to_string(), "country": s.window.source_country,
                "window_start": s.window.window_start, "ports": s.ports, "hosts": s.hosts,
                "refused": s.window.refused, "attempts": s.window.attempts,
            })
        })
        .collect();
    Finding {
        policy_id: meta.id.clone(),
        title: format!(
            "Port scans from outside: {} address{} scanned {interface} on {} (busiest {}: {} ports)",
            addresses.len(),
            if addresses.len() == 1 { "" } else { "es" },
            day.format("%Y-%m-%d"),
            top.source,
            scanners[0].ports
        ),
        severity: settings.inbound_severity,
        account_id: account.to_string(),
        subject: format!("inbound:{interface}"),
        dedup_window: meta.dedup_window,
        principal: None,
        // The busiest scanner, for the record; the others are in the details.
        source_ip: Some(top.source),
        country: top.source_country.clone(),
        // Where it knocked is told, but links nothing: every scanner of the intruder's network
        // would otherwise join the intrusion.
        resources: Vec::new(),
        evidence_id: format!("flows:inbound-scan:{interface}@{}", day.format("%Y-%m-%d")),
        time: first,
        mitre: vec![Mitre::new("TA0043", "T1595.001")],
        session_key: None,
        details: serde_json::json!({
            "direction": "inbound", "interface": interface, "day": day.format("%Y-%m-%d").to_string(),
            "scanner_count": addresses.len(), "scanners": listed,
            "window_minutes": settings.window_minutes,
            "thresholds": {"min_ports": settings.min_ports, "min_hosts": settings.min_hosts,
                           "min_reject_ratio": settings.min_reject_ratio},
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::detect::PolicySet;

    const SCANNER_ENI: &str = "eni-0a1b2c3d4e5f60718";
    const TARGET_ENI: &str = "eni-0ffff000000000001";

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
            interfaces: vec![SCANNER_ENI.into(), TARGET_ENI.into()],
            scanner_interfaces: vec![SCANNER_ENI.into()],
            first: start + Duration::minutes(3),
            last: start + Duration::minutes(9),
            source_country: None,
        }
    }

    fn detectors(yaml: &'static str) -> Detectors {
        let file = crate::policy_files::PolicyFile::new("detectors.yaml", yaml, crate::policy_files::Origin::Builtin);
        let mut problems = Vec::new();
        let settings = yaml_serde::from_str(yaml).unwrap();
        let detectors = Detectors::new(settings, &file, &Default::default(), &mut problems);
        assert!(problems.is_empty(), "{problems:?}");
        detectors
    }

    #[test]
    fn an_internal_scan_links_only_the_scanner_s_interface() {
        let set = PolicySet::builtin();
        let sweep = finding(&set.detectors, &window("10.0.1.25", 2, 40, 80, 70)).unwrap();
        assert_eq!((sweep.severity, sweep.mitre[0].technique.as_str()), (Severity::High, "T1046"));
        assert_eq!(sweep.subject, "10.0.1.25");
        // The victims' interfaces are told, not linked: they would join the intruder's incident.
        assert_eq!(sweep.resources, [SCANNER_ENI]);
        assert_eq!(sweep.details["target_interfaces"], serde_json::json!([TARGET_ENI]));
    }

    #[test]
    fn the_scanner_s_interface_is_the_one_its_traffic_left_by() {
        let view = |interface: &str, egress, destinations, all_accepted| InterfaceView {
            interface: interface.into(),
            egress,
            destinations,
            all_accepted,
        };
        // Version 5: the direction says.
        let v5 = [view("eni-scanner", true, 1, true), view("eni-target", false, 1, true)];
        assert_eq!(scanner_interfaces(&v5), ["eni-scanner"]);
        // A sweep: the scanner's interface saw many addresses, a target's (even one that
        // answered, all accepted) only its own.
        let sweep = [view("eni-target", false, 1, true), view("eni-scanner", false, 60, true)];
        assert_eq!(scanner_interfaces(&sweep), ["eni-scanner"]);
        // One host's ports: the target refused, the scanner's egress was accepted.
        let ports = [view("eni-scanner", false, 1, true), view("eni-target", false, 1, false)];
        assert_eq!(scanner_interfaces(&ports), ["eni-scanner"]);
    }

    #[test]
    fn inbound_scans_are_off_by_default_and_one_alert_per_target_and_day_when_on() {
        let set = PolicySet::builtin();
        assert!(!set.detectors.settings.flow_port_scan.include_inbound);
        let scans: Vec<SourceWindow> = (1..=30)
            .map(|i| {
                let mut w = window(&format!("198.51.100.{i}"), 30 + i, 1, 40, 39);
                w.interfaces = vec![TARGET_ENI.into()];
                w
            })
            .collect();
        let targets: Targets = scans
            .iter()
            .map(|w| ((w.account_id.clone(), w.source, w.window_start), vec![(TARGET_ENI.to_string(), w.ports, 1)]))
            .collect();
        assert!(inbound_findings(&set.detectors, &scans, &targets).is_empty(), "off by default");
        let on = detectors("flow_port_scan:\n  include_inbound: true\n");
        let found = inbound_findings(&on, &scans, &targets);
        assert_eq!(found.len(), 1, "{found:?}");
        let alert = &found[0];
        assert_eq!(alert.subject, format!("inbound:{TARGET_ENI}"));
        assert_eq!((alert.severity, alert.mitre[0].technique.as_str()), (Severity::Low, "T1595.001"));
        assert!(alert.resources.is_empty());
        assert_eq!(alert.details["scanner_count"], 30);
        assert_eq!(alert.details["scanners"].as_array().unwrap().len(), NAMED as usize);
        assert_eq!(alert.details["scanners"][0]["source"], "198.51.100.30", "the busiest first");
        assert_eq!(alert.source_ip, Some("198.51.100.30".parse().unwrap()));
        // An inside source is never an inbound scan, an outside one never an internal scan.
        assert!(finding(&on, &scans[0]).is_none());
    }

    #[test]
    fn busy_servers_few_ports_and_allowed_scanners_are_not_scans() {
        let set = PolicySet::builtin();
        // A web server answering clients: many (ephemeral) ports, all accepted.
        assert!(finding(&set.detectors, &window("10.0.1.5", 4_000, 900, 9_000, 3)).is_none());
        // Refused, but only a handful of ports and hosts.
        assert!(finding(&set.detectors, &window("10.0.1.7", 6, 2, 40, 40)).is_none());
        let detectors = detectors("flow_port_scan:\n  allow_cidrs: [10.0.1.0/24]\n");
        assert!(finding(&detectors, &window("10.0.1.25", 2, 40, 80, 70)).is_none());
        let off = self::detectors("flow_port_scan:\n  include_internal: false\n");
        assert!(finding(&off, &window("10.0.1.25", 2, 40, 80, 70)).is_none());
    }

    #[test]
    fn queries_never_span_a_gap_between_windows() {
        let at = |m: i64| "2026-11-12T00:00:00Z".parse::<DateTime<Utc>>().unwrap() + Duration::minutes(m);
        let mut windows: Vec<DateTime<Utc>> = (0..30).map(|i| at(i * 60)).collect();
        windows.push(at(60 * 24 * 9));
        let chunks = query_chunks(&windows, Duration::minutes(60));
        let shape: Vec<(usize, usize)> = chunks.iter().map(|(at, c)| (*at, c.len())).collect();
        assert_eq!(shape, [(0, WINDOWS_PER_QUERY), (WINDOWS_PER_QUERY, 30 - WINDOWS_PER_QUERY), (30, 1)]);
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
