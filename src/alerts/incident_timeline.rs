//! One incident's merged timeline: its alerts, the events that changed something or are
//! evidence, the configuration changes, the flows of its addresses and the response actions
//! taken on its alerts, in time order; and the outside addresses it came from or talked to,
//! placed on the map where a country or city is known.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::PgPool;

use super::incident_pages::IncidentView;
use super::investigate::{FlowSummary, IncidentConfigChange, WindowEvent};
use super::link_keys::is_linkable;
use super::store::AlertView;

/// Timeline entries kept, at most: alerts, responses and configuration changes first, then
/// flows, then events (see [`merge`]).
pub const MAX_TIMELINE: usize = 1000;
/// Response actions read per incident, at most (the newest).
pub const MAX_RESPONSES: i64 = 200;
/// Outside addresses placed per incident, at most.
pub const MAX_PLACES: usize = 100;

/// A response action taken on one of the incident's alerts.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct IncidentResponse {
    pub id: String,
    pub alert_id: Option<String>,
    pub account_id: String,
    pub region: String,
    pub kind: String,
    pub target: String,
    /// awaiting_approval, planned, applied, failed, undone, undo_awaiting_approval or dry_run
    /// (what automatic containment would have done).
    pub status: String,
    /// Who asked for it (`automatic` for automatic containment), and why.
    pub actor: String,
    pub reason: String,
    pub error: Option<String>,
    pub approved_by: Option<String>,
    pub approval_reason: Option<String>,
    pub approved_at: Option<DateTime<Utc>>,
    pub undone_by: Option<String>,
    pub undo_reason: Option<String>,
    pub undo_error: Option<String>,
    pub undo_requested_by: Option<String>,
    pub undo_request_reason: Option<String>,
    pub undo_requested_at: Option<DateTime<Utc>>,
    pub undo_approved_by: Option<String>,
    pub undo_approved_at: Option<DateTime<Utc>>,
    /// When its apply or undo was found abandoned (its lease ran out with no outcome).
    pub abandoned_at: Option<DateTime<Utc>>,
    /// The rule of policies/response.yaml behind an automatic action.
    pub automatic_rule: Option<String>,
    pub created_at: DateTime<Utc>,
    pub applied_at: Option<DateTime<Utc>>,
    pub undone_at: Option<DateTime<Utc>>,
    /// Its last change (when it failed, or its undo did).
    pub updated_at: DateTime<Utc>,
}

/// One line of the merged timeline.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct TimelineEntry {
    pub time: DateTime<Utc>,
    /// alert, event, config_change, flow or response.
    pub kind: String,
    /// alert: its severity; event: success or failure; config_change: created, changed or
    /// deleted; flow: ACCEPT or REJECT; response: requested, awaiting_approval, dry_run,
    /// approved, applied, failed, undo_requested, undo_approved, undone, undo_failed or
    /// abandoned.
    pub status: Option<String>,
    pub title: String,
    /// Who: the principal of an event or change, the person behind a response.
    pub actor: Option<String>,
    /// Why a response was asked for (or approved, or undone), why an alert joined, what an
    /// event asked for, or its error.
    pub detail: Option<String>,
    /// What it is about: an alert, event or response action id, a resource id, an interface.
    pub ref_id: Option<String>,
}

/// The merged timeline, oldest first, and how many entries there were before it was cut.
#[derive(Debug, Clone, Default, Serialize, utoipa::ToSchema)]
pub struct MergedTimeline {
    pub entries: Vec<TimelineEntry>,
    /// Entries before the cut at [`MAX_TIMELINE`].
    pub total: usize,
    /// True when `entries` holds fewer than `total` (events, then flows, were left out).
    pub truncated: bool,
}

/// An outside address of the incident, and where it is when known.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct IncidentPlace {
    pub address: String,
    pub country: Option<String>,
    pub city: Option<String>,
    /// A city's coordinates, or the country's centroid; none when neither is known.
    pub latitude: Option<f64>,
    pub longitude: Option<f64>,
    /// Where the incident names it: alerts, events, flows.
    pub seen_in: Vec<String>,
    /// Its network, as its alerts carry it (`details.network`, from the ASN data and the Tor,
    /// VPN and hosting lists at detection); none when no alert of the incident names it.
    pub asn: Option<i64>,
    pub as_org: Option<String>,
    pub is_tor: Option<bool>,
    pub is_vpn: Option<bool>,
    pub is_hosting: Option<bool>,
}

impl IncidentPlace {
    /// `AS60729 Stiftung Erneuerbare Freiheit · Tor exit`, or none when nothing is known.
    pub fn network_label(&self) -> Option<String> {
        let mut parts: Vec<String> = Vec::new();
        match (self.asn, self.as_org.as_deref()) {
            (Some(asn), Some(org)) => parts.push(format!("AS{asn} {org}")),
            (Some(asn), None) => parts.push(format!("AS{asn}")),
            (None, Some(org)) => parts.push(org.to_owned()),
            (None, None) => {}
        }
        parts.extend(self.flags().into_iter().map(str::to_owned));
        (!parts.is_empty()).then(|| parts.join(" · "))
    }

    /// The anonymising flags set: `Tor exit`, `VPN`, `hosting`.
    pub fn flags(&self) -> Vec<&'static str> {
        [(self.is_tor, "Tor exit"), (self.is_vpn, "VPN"), (self.is_hosting, "hosting")]
            .into_iter()
            .filter_map(|(flag, name)| (flag == Some(true)).then_some(name))
            .collect()
    }

    /// Takes the network an alert carries, where the place has none yet.
    fn set_network(&mut self, network: &serde_json::Value) {
        if self.asn.is_some() || self.as_org.is_some() || self.is_tor.is_some() {
            return;
        }
        self.asn = network.get("asn").and_then(serde_json::Value::as_i64);
        self.as_org = network.get("as_org").and_then(serde_json::Value::as_str).map(str::to_owned);
        let flag = |name: &str| network.get(name).and_then(serde_json::Value::as_bool);
        (self.is_tor, self.is_vpn, self.is_hosting) = (flag("is_tor"), flag("is_vpn"), flag("is_hosting"));
    }
}

/// The response actions of these alerts, oldest first (the newest [`MAX_RESPONSES`]), and
/// whether there were more.
pub async fn responses(pool: &PgPool, alert_ids: &[String]) -> Result<(Vec<IncidentResponse>, bool), sqlx::Error> {
    let ids: Vec<String> = alert_ids.iter().filter(|id| crate::model::is_alert_id(id)).cloned().collect();
    let mut found = sqlx::query_as!(
        IncidentResponse,
        r#"SELECT id::text AS "id!", alert_id::text AS alert_id, account_id, region, kind, target, status, actor, reason,
                  error, approved_by, approval_reason, approved_at, undone_by, undo_reason, undo_error,
                  undo_requested_by, undo_request_reason, undo_requested_at, undo_approved_by, undo_approved_at,
                  abandoned_at, automatic_rule, created_at, applied_at, undone_at, updated_at
           FROM response_actions WHERE alert_id = ANY($1::text[]::uuid[])
           ORDER BY created_at DESC, id LIMIT $2"#,
        &ids,
        MAX_RESPONSES + 1
    )
    .fetch_all(pool)
    .await?;
    let truncated = found.len() as i64 > MAX_RESPONSES;
    found.truncate(MAX_RESPONSES as usize);
    found.reverse();
    Ok((found, truncated))
}

/// What the story holds, for the timeline.
pub struct Parts<'a> {
    pub incident: &'a IncidentView,
    pub alerts: &'a [AlertView],
    pub events: &'a [WindowEvent],
    pub config_changes: &'a [IncidentConfigChange],
    pub flows: &'a [FlowSummary],
    pub responses: &'a [IncidentResponse],
}

fn entry(time: DateTime<Utc>, kind: &str, status: Option<&str>, title: String) -> TimelineEntry {
    TimelineEntry {
        time,
        kind: kind.to_owned(),
        status: status.map(str::to_owned),
        title,
        actor: None,
        detail: None,
        ref_id: None,
    }
}

fn alert_entries(parts: &Parts<'_>) -> Vec<TimelineEntry> {
    parts
        .alerts
        .iter()
        .map(|a| {
            let step = parts.incident.timeline.iter().find(|s| s.alert_id == a.id);
            TimelineEntry {
                actor: a.principal.clone(),
                detail: step.and_then(|s| s.link_reason.clone()),
                ref_id: Some(a.id.clone()),
                ..entry(a.first_seen, "alert", Some(&a.severity.to_string()), a.title.clone())
            }
        })
        .collect()
}

/// Each response action as what happened to it: asked for (or only dry-run by automatic
/// containment), approved, applied or failed, its undo asked for, approved, done or failed,
/// abandoned.
fn response_entries(responses: &[IncidentResponse]) -> Vec<TimelineEntry> {
    let mut found = Vec::new();
    for r in responses {
        let what = format!("{} {}", r.kind, r.target);
        let line = |time, status: &str, actor: Option<&str>, detail: Option<&str>| TimelineEntry {
            actor: actor.map(str::to_owned),
            detail: detail.map(str::to_owned),
            ref_id: Some(r.id.clone()),
            ..entry(time, "response", Some(status), what.clone())
        };
        // An action that needed a second person waited for them, approved since or not.
        let asked = match r.status.as_str() {
            "dry_run" => "dry_run",
            _ if r.status == "awaiting_approval" || r.approved_at.is_some() => "awaiting_approval",
            _ => "requested",
        };
        let why = match &r.automatic_rule {
            Some(rule) => format!("{} (rule {rule})", r.reason),
            None => r.reason.clone(),
        };
        found.push(line(r.created_at, asked, Some(&r.actor), Some(&why)));
        let mut push = |time: Option<DateTime<Utc>>, status: &str, actor: Option<&str>, detail: Option<&str>| {
            if let Some(time) = time {
                found.push(line(time, status, actor, detail));
            }
        };
        push(r.approved_at, "approved", r.approved_by.as_deref(), r.approval_reason.as_deref());
        let applied_by = r.approved_by.as_deref().unwrap_or(&r.actor);
        push(r.applied_at, "applied", Some(applied_by), None);
        let failed = (r.status == "failed").then_some(r.updated_at);
        push(failed, "failed", Some(applied_by), r.error.as_deref());
        let undo_asked = r.undo_requested_by.as_deref();
        push(r.undo_requested_at, "undo_requested", undo_asked, r.undo_request_reason.as_deref());
        push(r.undo_approved_at, "undo_approved", r.undo_approved_by.as_deref(), None);
        push(r.undone_at, "undone", r.undone_by.as_deref(), r.undo_reason.as_deref());
        let undo_failed = r.undo_error.as_ref().map(|_| r.updated_at);
        push(undo_failed, "undo_failed", r.undone_by.as_deref().or(undo_asked), r.undo_error.as_deref());
        push(r.abandoned_at, "abandoned", None, Some("its lease ran out with no outcome recorded"));
    }
    found
}

fn change_entries(changes: &[IncidentConfigChange]) -> Vec<TimelineEntry> {
    changes
        .iter()
        .map(|c| TimelineEntry {
            actor: c.principal_arn.clone(),
            detail: c.event_name.clone(),
            ref_id: Some(c.resource_id.clone()),
            ..entry(
                c.event_time.unwrap_or(c.detected_at),
                "config_change",
                Some(&c.kind),
                format!("{} {}", c.resource_type, c.resource_id),
            )
        })
        .collect()
}

fn flow_entries(flows: &[FlowSummary]) -> Vec<TimelineEntry> {
    flows
        .iter()
        .filter_map(|f| {
            let time = f.first_seen?;
            let port = f.dstport.map(|p| format!(" port {p}")).unwrap_or_default();
            let from = f.srcaddr.as_deref().unwrap_or("?");
            let to = f.dstaddr.as_deref().unwrap_or("?");
            let title = format!("{from} → {to}{port}: {} bytes in {} records", f.bytes, f.records);
            Some(TimelineEntry { ref_id: f.interface_id.clone(), ..entry(time, "flow", f.action.as_deref(), title) })
        })
        .collect()
}

/// Events that changed something, failed, or are an alert's evidence: reads that succeeded
/// and no alert names are left to the events table.
fn event_entries(events: &[WindowEvent]) -> Vec<TimelineEntry> {
    events
        .iter()
        .filter(|e| e.read_only != Some(true) || e.outcome == "failure" || !e.alert_ids.is_empty())
        .map(|e| {
            let name = e.event_name.clone().unwrap_or_else(|| e.event_id.clone());
            let detail = e.error_code.clone().or_else(|| e.request.clone());
            TimelineEntry {
                actor: e.principal_arn.clone().or_else(|| e.user_name.clone()),
                detail,
                ref_id: Some(e.event_id.clone()),
                ..entry(e.event_time, "event", Some(&e.outcome), name)
            }
        })
        .collect()
}

/// Every entry, oldest first, at most [`MAX_TIMELINE`]: alerts, responses and configuration
/// changes are kept first, then flows, then events, so a busy address never hides what the
/// analysts did.
pub fn merge(parts: &Parts<'_>) -> MergedTimeline {
    let groups =
        [alert_entries(parts), response_entries(parts.responses), change_entries(parts.config_changes)].concat();
    let total = groups.len() + flow_entries(parts.flows).len() + event_entries(parts.events).len();
    let mut entries = groups;
    for more in [flow_entries(parts.flows), event_entries(parts.events)] {
        let room = MAX_TIMELINE.saturating_sub(entries.len());
        entries.extend(more.into_iter().take(room));
    }
    entries.truncate(MAX_TIMELINE);
    // Stable: at one instant, an alert before the response it led to.
    entries.sort_by_key(|e| e.time);
    MergedTimeline { truncated: entries.len() < total, total, entries }
}

fn is_outside(address: &str) -> bool {
    address.parse().is_ok_and(is_linkable)
}

/// The place of an outside address, added on first sight; none for an inside address or
/// once [`MAX_PLACES`] are known.
fn note<'m>(
    found: &'m mut BTreeMap<String, IncidentPlace>,
    address: &str,
    source: &str,
) -> Option<&'m mut IncidentPlace> {
    if !is_outside(address) || (found.len() >= MAX_PLACES && !found.contains_key(address)) {
        return None;
    }
    let place = found.entry(address.to_owned()).or_insert_with(|| IncidentPlace {
        address: address.to_owned(),
        country: None,
        city: None,
        latitude: None,
        longitude: None,
        seen_in: Vec::new(),
        asn: None,
        as_org: None,
        is_tor: None,
        is_vpn: None,
        is_hosting: None,
    });
    if !place.seen_in.iter().any(|s| s == source) {
        place.seen_in.push(source.to_owned());
    }
    Some(place)
}

/// The incident's outside addresses (of its alerts, events and flows), with a city's
/// coordinates or the country's centroid when known and the network its alerts name, at most
/// [`MAX_PLACES`].
pub fn places(alerts: &[AlertView], events: &[WindowEvent], flows: &[FlowSummary]) -> Vec<IncidentPlace> {
    let mut found: BTreeMap<String, IncidentPlace> = BTreeMap::new();
    for e in events {
        let Some(ip) = e.source_ip.as_deref() else { continue };
        let Some(place) = note(&mut found, ip, "events") else { continue };
        if place.latitude.is_none() && e.latitude.is_some() {
            (place.latitude, place.longitude, place.city) = (e.latitude, e.longitude, e.city.clone());
        }
        place.country = place.country.take().or_else(|| e.country.clone());
    }
    for a in alerts {
        let Some(ip) = a.source_ip.as_deref() else { continue };
        let Some(place) = note(&mut found, ip, "alerts") else { continue };
        place.country = place.country.take().or_else(|| a.country.clone());
        if let Some(network) = a.details.get("network") {
            place.set_network(network);
        }
    }
    for f in flows {
        for address in [f.srcaddr.as_deref(), f.dstaddr.as_deref()].into_iter().flatten() {
            note(&mut found, address, "flows");
        }
    }
    let mut places: Vec<IncidentPlace> = found.into_values().collect();
    for place in &mut places {
        if place.latitude.is_none() {
            let centroid = place.country.as_deref().and_then(crate::geo::centroids::country_centroid);
            (place.latitude, place.longitude) = centroid.map_or((None, None), |(a, b)| (Some(a), Some(b)));
        }
    }
    places
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn at(minute: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 11, 12, 4, minute, 0).unwrap()
    }

    fn response(status: &str) -> IncidentResponse {
        IncidentResponse {
            id: "7d0f1c2e-0000-4000-8000-000000000001".into(),
            alert_id: None,
            account_id: "111122223333".into(),
            region: "us-east-1".into(),
            kind: "start-logging".into(),
            target: "management-trail".into(),
            status: status.into(),
            actor: "user:oncall".into(),
            reason: "the trail was stopped by the intruder".into(),
            error: None,
            approved_by: Some("user:lead".into()),
            approval_reason: Some("confirmed".into()),
            approved_at: Some(at(12)),
            undone_by: None,
            undo_reason: None,
            undo_error: None,
            undo_requested_by: None,
            undo_request_reason: None,
            undo_requested_at: None,
            undo_approved_by: None,
            undo_approved_at: None,
            abandoned_at: None,
            automatic_rule: None,
            created_at: at(10),
            applied_at: Some(at(13)),
            undone_at: None,
            updated_at: at(13),
        }
    }

    #[test]
    fn an_approved_action_reads_asked_approved_applied_each_with_its_person() {
        let lines: Vec<(String, Option<String>, Option<String>)> = response_entries(&[response("applied")])
            .into_iter()
            .map(|e| (e.status.unwrap(), e.actor, e.detail))
            .collect();
        assert_eq!(
            lines,
            [
                (
                    "awaiting_approval".into(),
                    Some("user:oncall".into()),
                    Some("the trail was stopped by the intruder".into())
                ),
                ("approved".into(), Some("user:lead".into()), Some("confirmed".into())),
                ("applied".into(), Some("user:lead".into()), None),
            ]
        );
        let mut failed = response("failed");
        (failed.applied_at, failed.error) = (None, Some("AccessDenied".into()));
        let last = response_entries(&[failed]).pop().unwrap();
        assert_eq!((last.status.as_deref(), last.detail.as_deref()), (Some("failed"), Some("AccessDenied")));
    }

    fn event(ip: &str, country: Option<&str>, lat: Option<f64>) -> WindowEvent {
        WindowEvent {
            account_id: "111122223333".into(),
            event_id: format!("e-{ip}"),
            event_time: at(1),
            event_name: Some("ConsoleLogin".into()),
            event_source: None,
            user_name: None,
            principal_arn: None,
            source_ip: Some(ip.into()),
            country: country.map(str::to_owned),
            city: lat.map(|_| "Kyiv".to_owned()),
            latitude: lat,
            longitude: lat.map(|_| 30.5),
            outcome: "success".into(),
            error_code: None,
            error_message: None,
            read_only: Some(false),
            resource_ids: vec![],
            request: None,
            alert_ids: vec![],
        }
    }

    #[test]
    fn a_busy_timeline_is_cut_keeping_what_analysts_did_and_says_so() {
        let incident = IncidentView {
            id: "inc-0123456789abcdef".into(),
            account_id: "111122223333".into(),
            status: super::super::incidents::IncidentStatus::Open,
            owner: None,
            principal: None,
            source_ip: None,
            first_seen: at(0),
            last_seen: at(30),
            severity: crate::model::Severity::High,
            tactics: vec![],
            timeline: vec![],
        };
        // Reads that no alert names are left to the events table; changes are kept.
        let mut read = event("176.36.10.20", None, None);
        read.read_only = Some(true);
        let mut events: Vec<WindowEvent> = (0..MAX_TIMELINE + 50).map(|_| event("176.36.10.20", None, None)).collect();
        events.push(read);
        let responses = [response("applied")];
        let parts = Parts {
            incident: &incident,
            alerts: &[],
            events: &events,
            config_changes: &[],
            flows: &[],
            responses: &responses,
        };
        let merged = merge(&parts);
        assert_eq!((merged.entries.len(), merged.total, merged.truncated), (MAX_TIMELINE, MAX_TIMELINE + 53, true));
        let kept: Vec<&str> =
            merged.entries.iter().filter_map(|e| e.status.as_deref()).filter(|s| *s != "success").collect();
        assert_eq!(kept, ["awaiting_approval", "approved", "applied"], "every response line is kept");
        assert!(merged.entries.windows(2).all(|w| w[0].time <= w[1].time), "oldest first");
    }

    #[test]
    fn places_are_outside_addresses_once_each_placed_by_city_or_country() {
        let events = [
            event("176.36.10.20", Some("UA"), Some(50.45)),
            event("176.36.10.20", Some("UA"), None),
            event("10.0.1.5", None, None),
            event("81.2.69.160", Some("GB"), None),
        ];
        let found = places(&[], &events, &[]);
        let addresses: Vec<&str> = found.iter().map(|p| p.address.as_str()).collect();
        assert_eq!(addresses, ["176.36.10.20", "81.2.69.160"], "a private address is not outside");
        assert_eq!((found[0].latitude, found[0].city.as_deref()), (Some(50.45), Some("Kyiv")));
        assert!(found[1].latitude.is_some(), "a country alone places it at the centroid");
        assert_eq!(found[1].seen_in, ["events"]);
        assert_eq!(found[1].network_label(), None, "no alert named its network");
    }

    #[test]
    fn a_place_takes_the_network_its_alert_carries() {
        let mut place = places(&[], &[event("185.220.101.4", None, None)], &[]).pop().unwrap();
        let network = serde_json::json!({"asn": 60729, "as_org": "Stiftung Erneuerbare Freiheit",
                                         "is_tor": true, "is_vpn": false, "is_hosting": false});
        place.set_network(&network);
        place.set_network(&serde_json::json!({"asn": 1, "is_tor": false}));
        assert_eq!(place.network_label().as_deref(), Some("AS60729 Stiftung Erneuerbare Freiheit · Tor exit"));
        assert_eq!(place.flags(), ["Tor exit"], "the first alert's network stays");
    }
}
