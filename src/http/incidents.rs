//! Incidents: `GET /api/v1/incidents` (viewers; newest first, a page at a time), one incident
//! with its whole story (alerts, events, configuration changes, flows, resources, history), and
//! analysts' changes to its status and owner, each recorded with who, when and why.

use std::collections::BTreeSet;

use axum::extract::{Path, State};
use axum::routing::get;
use axum::{Json, Router};
use serde::{Deserialize, Serialize};

use super::ApiContext;
use super::alerts::{check_reason, internal, placed_event};
use super::error::{ApiError, ErrorBody};
use super::extractor::{Caller, RequireRole};
use super::query::{Cursor, CursorKey, Limit, TypedQuery, page};
use crate::alerts::incident_pages::{
    self, IncidentChangeView, IncidentEntry, IncidentFilter, IncidentKey, IncidentUpdate, IncidentView,
};
use crate::alerts::incidents::{IncidentStatus, is_incident_id};
use crate::alerts::investigate::{self, EventWindow, FlowSummary, IncidentConfigChange, TouchedResource, WindowEvent};
use crate::alerts::pages;
use crate::alerts::store::{AlertStoreError, AlertView};
use crate::auth::Role;

pub fn router() -> Router<ApiContext> {
    Router::new()
        .route("/api/v1/incidents", get(incidents))
        .route("/api/v1/incidents/{id}", get(incident).patch(update))
}

impl CursorKey for IncidentKey {
    const KIND: &'static str = "incidents";

    fn is_plausible(&self) -> bool {
        is_incident_id(&self.incident_id)
    }
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
struct IncidentQuery {
    /// `true`: only incidents not resolved or dismissed.
    open: Option<bool>,
    /// Incidents per page, newest first.
    #[serde(default)]
    #[param(inline)]
    limit: Limit<200, 50>,
    /// `next_cursor` of the previous page.
    #[serde(default)]
    #[param(value_type = Option<String>)]
    cursor: Option<Cursor<IncidentKey>>,
}

/// An incident, with how many alerts it has (`timeline` holds the first 500).
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct IncidentSummary {
    #[serde(flatten)]
    pub incident: IncidentView,
    pub alert_count: i64,
    /// Its alerts still open (a snooze that ran out counts as open).
    pub open_count: i64,
}

/// A page of incidents, newest first.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct IncidentPage {
    pub incidents: Vec<IncidentSummary>,
    /// The next page's `cursor`; absent on the last page.
    pub next_cursor: Option<String>,
}

/// Incidents (alerts of at least two policies linked into one intrusion), newest first.
#[utoipa::path(get, path = "/api/v1/incidents", tag = "incidents", params(IncidentQuery), responses((status = 200, description = "OK", body = IncidentPage), (status = 400, description = "A bad parameter; `field` names it", body = ErrorBody), (status = 401, description = "No valid token or session", body = ErrorBody)), security(("bearer" = []), ("session" = [])))]
async fn incidents(
    _caller: Caller,
    State(context): State<ApiContext>,
    TypedQuery(query): TypedQuery<IncidentQuery>,
) -> Result<Json<IncidentPage>, ApiError> {
    let after = query.cursor.map(|c| c.0);
    let filter = IncidentFilter { id: None, open_only: query.open.unwrap_or(false) };
    let rows =
        incident_pages::incidents(&context.db, &filter, after.as_ref(), query.limit.0 + 1).await.map_err(internal)?;
    let (entries, next_cursor) = page(rows, query.limit.0, |e: &IncidentEntry| e.key.clone());
    Ok(Json(IncidentPage { incidents: entries.into_iter().map(summary).collect(), next_cursor }))
}

fn summary(entry: IncidentEntry) -> IncidentSummary {
    IncidentSummary { incident: entry.incident, alert_count: entry.alert_count, open_count: entry.open_count }
}

/// One incident and its story.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct IncidentDetail {
    #[serde(flatten)]
    pub summary: IncidentSummary,
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
    /// The flows to or from its public addresses while it lasted, largest first.
    pub flows: Vec<FlowSummary>,
    /// The resources its alerts and changes name, as the latest configuration snapshot has them.
    pub resources: Vec<TouchedResource>,
    /// Who changed its status or owner, and the engine's merges and reopenings, oldest first.
    pub history: Vec<IncidentChangeView>,
}

/// Public addresses of one incident whose flows are read, at most.
const MAX_FLOW_ADDRESSES: usize = 10;

/// One incident: its timeline of alerts, the events behind it, the configuration changes and
/// flows, the resources it touched with their latest snapshot, and its history. A merged id
/// answers with the incident it was merged into.
#[utoipa::path(get, path = "/api/v1/incidents/{id}", tag = "incidents", params(("id" = String, Path, description = "an incident id (`inc-` and 16 hex digits)")), responses((status = 200, description = "OK", body = IncidentDetail), (status = 400, description = "A bad parameter; `field` names it", body = ErrorBody), (status = 401, description = "No valid token or session", body = ErrorBody), (status = 404, description = "Not found", body = ErrorBody)), security(("bearer" = []), ("session" = [])))]
async fn incident(
    _caller: Caller,
    State(context): State<ApiContext>,
    Path(id): Path<String>,
) -> Result<Json<IncidentDetail>, ApiError> {
    let (entry, merged_from) = find(&context, &id).await?;
    let db = &context.db;
    let incident = &entry.incident;
    let ids: Vec<String> = incident.timeline.iter().map(|s| s.alert_id.clone()).collect();
    let alerts = pages::alerts_by_id(db, &ids).await.map_err(internal)?;
    let (events, events_truncated) = story_events(&context, incident, &ids).await?;
    let flows = incident_flows(&context, incident, &alerts).await?;
    let mut named: BTreeSet<String> = alerts.iter().flat_map(|a| a.resources.iter().cloned()).collect();
    named.extend(events.iter().filter(|e| e.read_only == Some(false)).flat_map(|e| e.resource_ids.iter().cloned()));
    let named: Vec<String> = named.into_iter().collect();
    let (since, until) =
        (incident.first_seen - chrono::Duration::hours(1), incident.last_seen + chrono::Duration::days(1));
    let config_changes =
        investigate::config_changes(db, &incident.account_id, &named, since, until).await.map_err(internal)?;
    let resources = investigate::touched_resources(db, &incident.account_id, &named).await.map_err(internal)?;
    let history = incident_pages::history(db, &incident.id).await.map_err(internal)?;
    Ok(Json(IncidentDetail {
        summary: summary(entry),
        merged_from,
        alerts,
        events,
        events_truncated,
        config_changes,
        flows,
        resources,
        history,
    }))
}

/// The incident an id names (or was merged into), and the id asked for if it was merged.
async fn find(context: &ApiContext, id: &str) -> Result<(IncidentEntry, Option<String>), ApiError> {
    if !is_incident_id(id) {
        return Err(ApiError::bad("id", "an incident id is `inc-` and 16 hex digits"));
    }
    let current = incident_pages::resolve_id(&context.db, id).await.map_err(internal)?.ok_or(ApiError::NotFound)?;
    let filter = IncidentFilter { id: Some(current.clone()), open_only: false };
    let entry = incident_pages::incidents(&context.db, &filter, None, 1)
        .await
        .map_err(internal)?
        .pop()
        .ok_or(ApiError::NotFound)?;
    Ok((entry, (current != id).then(|| id.to_string())))
}

/// The events of the incident's first address (or its principal) while it lasted, and every
/// alert's evidence.
async fn story_events(
    context: &ApiContext,
    incident: &IncidentView,
    alert_ids: &[String],
) -> Result<(Vec<WindowEvent>, bool), ApiError> {
    let window = EventWindow {
        account_id: &incident.account_id,
        since: incident.first_seen,
        until: incident.last_seen,
        principal: if incident.source_ip.is_none() { incident.principal.as_deref() } else { None },
        source_ip: incident.source_ip.as_deref(),
        alert_ids,
        limit: investigate::MAX_WINDOW_EVENTS + 1,
    };
    let mut events: Vec<WindowEvent> = investigate::window_events(&context.db, &window)
        .await
        .map_err(internal)?
        .into_iter()
        .map(placed_event)
        .collect();
    let truncated = events.len() as i64 > investigate::MAX_WINDOW_EVENTS;
    events.truncate(investigate::MAX_WINDOW_EVENTS as usize);
    Ok((events, truncated))
}

/// The flows to or from every outside address of the incident's alerts, largest first.
async fn incident_flows(
    context: &ApiContext,
    incident: &IncidentView,
    alerts: &[AlertView],
) -> Result<Vec<FlowSummary>, ApiError> {
    let addresses: BTreeSet<&str> = alerts
        .iter()
        .filter_map(|a| a.source_ip.as_deref())
        .filter(|ip| ip.parse().is_ok_and(crate::alerts::link_keys::is_linkable))
        .collect();
    let until = incident.last_seen + chrono::Duration::hours(1);
    let mut flows = Vec::new();
    for address in addresses.into_iter().take(MAX_FLOW_ADDRESSES) {
        let found = investigate::address_flows(&context.db, &incident.account_id, address, incident.first_seen, until)
            .await
            .map_err(internal)?;
        flows.extend(found);
    }
    flows.sort_by(|a, b| b.bytes.cmp(&a.bytes));
    flows.truncate(investigate::MAX_FLOWS as usize);
    Ok(flows)
}

/// An analyst's change to an incident: its status, its owner, or both, and why.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct IncidentChange {
    /// open, investigating, contained, resolved or dismissed.
    status: Option<String>,
    /// A dashboard user's name; an empty string clears the owner.
    owner: Option<String>,
    /// Why (kept in the incident's history).
    reason: String,
}

/// Changes an incident's status or owner (analysts). The change is kept in the incident's
/// history and in Skywarden's audit log.
#[utoipa::path(patch, path = "/api/v1/incidents/{id}", tag = "incidents", params(("id" = String, Path)), request_body = IncidentChange, responses((status = 200, description = "OK", body = IncidentSummary), (status = 400, description = "A bad parameter; `field` names it", body = ErrorBody), (status = 401, description = "No valid token or session", body = ErrorBody), (status = 403, description = "The role is too low, or the CSRF token is missing", body = ErrorBody), (status = 404, description = "Not found", body = ErrorBody)), security(("bearer" = []), ("session" = [])))]
async fn update(
    caller: Caller,
    State(context): State<ApiContext>,
    Path(id): Path<String>,
    body: Result<Json<IncidentChange>, axum::extract::rejection::JsonRejection>,
) -> Result<Json<IncidentSummary>, ApiError> {
    caller.require(Role::Analyst)?;
    let Json(change) = body.map_err(|e| ApiError::bad("body", e.body_text()))?;
    check_reason(&change.reason)?;
    let (entry, merged_from) = find(&context, &id).await?;
    if merged_from.is_some() {
        return Err(ApiError::Conflict(format!("{id} was merged into {}: change that one", entry.incident.id)));
    }
    // An empty owner clears it.
    let owner = change.owner.as_deref().map(str::trim).map(|name| (!name.is_empty()).then(|| name.to_string()));
    let update = IncidentUpdate { status: change.status.as_deref().map(settable_status).transpose()?, owner };
    if update.status.is_none() && update.owner.is_none() {
        return Err(ApiError::bad("body", "say what changes: status, owner or both"));
    }
    let actor = format!("{} ({})", caller.actor(), caller.name);
    let found =
        incident_pages::update(&context.db, &id, &update, &actor, &change.reason).await.map_err(|e| match e {
            AlertStoreError::UnknownOwner(_) => ApiError::bad("owner", "the owner must be an enabled dashboard user"),
            other => internal(other),
        })?;
    if !found {
        return Err(ApiError::NotFound);
    }
    crate::auth::audit::record(
        &context.db,
        &caller.actor(),
        "incident.update",
        Some(&id),
        None,
        serde_json::json!({"status": update.status, "owner": update.owner, "reason": change.reason}),
    )
    .await;
    let (entry, _) = find(&context, &id).await?;
    Ok(Json(summary(entry)))
}

fn settable_status(text: &str) -> Result<IncidentStatus, ApiError> {
    IncidentStatus::parse(text).filter(|s| IncidentStatus::SETTABLE.contains(s)).ok_or_else(|| {
        ApiError::bad("status", "the status is one of open, investigating, contained, resolved, dismissed")
    })
}
