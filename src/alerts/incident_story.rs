//! One incident's whole story, as the API, the CLI and the report show it: its alerts (with why
//! each joined), the events of its first address and every alert's evidence, the configuration
//! changes of what it touched, the flows of its addresses, the resources with their latest
//! snapshot, and its history.

use std::collections::BTreeSet;

use chrono::Duration;
use serde::Serialize;
use sqlx::PgPool;

use super::incident_pages::{self, IncidentChangeView, IncidentEntry, IncidentFilter, IncidentView};
use super::incident_timeline::{self, IncidentPlace, IncidentResponse, MergedTimeline};
use super::investigate::{self, EventWindow, FlowSummary, IncidentConfigChange, TouchedResource, WindowEvent};
use super::link_keys::is_linkable;
use super::pages;
use super::store::{AlertStoreError, AlertView};

/// One incident and its story.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct IncidentStory {
    #[serde(flatten)]
    pub incident: IncidentView,
    pub alert_count: i64,
    /// Its alerts still open (a snooze that ran out counts as open).
    pub open_count: i64,
    /// The id asked for, when it was merged into this incident.
    pub merged_from: Option<String>,
    /// Its alerts (those of the timeline) as they are now: status, principal, address, resources.
    pub alerts: Vec<AlertView>,
    /// The events of its first address (or principal) while it lasted, plus its alerts'
    /// evidence, oldest first; `alert_ids` names the alerts each event is evidence of.
    pub events: Vec<WindowEvent>,
    /// True when there were more than the 500 events shown.
    pub events_truncated: bool,
    /// Configuration changes of the resources it touched while it lasted (and a day after).
    pub config_changes: Vec<IncidentConfigChange>,
    /// The flows to or from its outside addresses while it lasted, largest first.
    pub flows: Vec<FlowSummary>,
    /// The resources its alerts and changes name, as the latest configuration snapshot has them.
    pub resources: Vec<TouchedResource>,
    /// Who changed its status or owner, and the engine's merges and reopenings, oldest first.
    pub history: Vec<IncidentChangeView>,
    /// Response actions taken on its alerts (asked for, approved, applied, failed, undone),
    /// oldest first: the newest 200.
    pub responses: Vec<IncidentResponse>,
    /// True when there were more than the 200 responses shown.
    pub responses_truncated: bool,
    /// Alerts, events that changed something (or failed, or are evidence), configuration
    /// changes, flows and responses in one list, oldest first, at most 1000 entries (`total`
    /// says how many there were; events, then flows, are left out first).
    pub merged_timeline: MergedTimeline,
    /// Its outside addresses (of alerts, events, flows) and where they are, when known (at
    /// most 100).
    pub places: Vec<IncidentPlace>,
}

/// Outside addresses of one incident whose flows are read, at most.
const MAX_FLOW_ADDRESSES: usize = 10;

/// The incident an id names (or was merged into), and the id asked for if it was merged.
pub async fn find(pool: &PgPool, id: &str) -> Result<Option<(IncidentEntry, Option<String>)>, AlertStoreError> {
    let Some(current) = incident_pages::resolve_id(pool, id).await? else { return Ok(None) };
    let filter = IncidentFilter { id: Some(current.clone()), open_only: false };
    let entry = incident_pages::incidents(pool, &filter, None, 1).await?.pop();
    Ok(entry.map(|e| (e, (current != id).then(|| id.to_string()))))
}

/// The story of the incident an id names (or was merged into); `None` if there is none.
pub async fn story(pool: &PgPool, id: &str) -> Result<Option<IncidentStory>, AlertStoreError> {
    let Some((entry, merged_from)) = find(pool, id).await? else { return Ok(None) };
    let incident = entry.incident;
    let ids: Vec<String> = incident.timeline.iter().map(|s| s.alert_id.clone()).collect();
    let alerts = pages::alerts_by_id(pool, &ids).await?;
    let (events, events_truncated) = events(pool, &incident, &ids).await?;
    let flows = flows(pool, &incident, &alerts).await?;
    let mut named: BTreeSet<String> = alerts.iter().flat_map(|a| a.resources.iter().cloned()).collect();
    named.extend(events.iter().filter(|e| e.read_only == Some(false)).flat_map(|e| e.resource_ids.iter().cloned()));
    let named: Vec<String> = named.into_iter().collect();
    let (since, until) = (incident.first_seen - Duration::hours(1), incident.last_seen + Duration::days(1));
    let config_changes = investigate::config_changes(pool, &incident.account_id, &named, since, until).await?;
    let resources = investigate::touched_resources(pool, &incident.account_id, &named).await?;
    let history = incident_pages::history(pool, &incident.id).await?;
    let (responses, responses_truncated) = incident_timeline::responses(pool, &ids).await?;
    let parts = incident_timeline::Parts {
        incident: &incident,
        alerts: &alerts,
        events: &events,
        config_changes: &config_changes,
        flows: &flows,
        responses: &responses,
    };
    let merged_timeline = incident_timeline::merge(&parts);
    let places = incident_timeline::places(&alerts, &events, &flows);
    Ok(Some(IncidentStory {
        incident,
        alert_count: entry.alert_count,
        open_count: entry.open_count,
        merged_from,
        alerts,
        events,
        events_truncated,
        config_changes,
        flows,
        resources,
        history,
        responses,
        responses_truncated,
        merged_timeline,
        places,
    }))
}

/// The events of the incident's first address (or its principal) while it lasted, and every
/// alert's evidence; and whether there were more than shown.
async fn events(
    pool: &PgPool,
    incident: &IncidentView,
    alert_ids: &[String],
) -> Result<(Vec<WindowEvent>, bool), AlertStoreError> {
    let window = EventWindow {
        account_id: &incident.account_id,
        since: incident.first_seen,
        until: incident.last_seen,
        principal: if incident.source_ip.is_none() { incident.principal.as_deref() } else { None },
        source_ip: incident.source_ip.as_deref(),
        alert_ids,
        limit: investigate::MAX_WINDOW_EVENTS + 1,
    };
    let mut events = investigate::window_events(pool, &window).await?;
    let truncated = events.len() as i64 > investigate::MAX_WINDOW_EVENTS;
    events.truncate(investigate::MAX_WINDOW_EVENTS as usize);
    Ok((events, truncated))
}

/// The flows to or from every outside address of the incident's alerts, largest first.
async fn flows(
    pool: &PgPool,
    incident: &IncidentView,
    alerts: &[AlertView],
) -> Result<Vec<FlowSummary>, AlertStoreError> {
    let addresses: BTreeSet<&str> =
        alerts.iter().filter_map(|a| a.source_ip.as_deref()).filter(|ip| ip.parse().is_ok_and(is_linkable)).collect();
    let until = incident.last_seen + Duration::hours(1);
    let mut flows = Vec::new();
    for address in addresses.into_iter().take(MAX_FLOW_ADDRESSES) {
        flows
            .extend(investigate::address_flows(pool, &incident.account_id, address, incident.first_seen, until).await?);
    }
    flows.sort_by_key(|f| std::cmp::Reverse(f.bytes));
    flows.truncate(investigate::MAX_FLOWS as usize);
    Ok(flows)
}
