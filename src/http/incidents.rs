//! Incidents: `GET /api/v1/incidents` (viewers; newest first, a page at a time), one incident
//! with its whole story (alerts, events, configuration changes, flows, resources, history), and
//! analysts' changes to its status and owner, each recorded with who, when and why.

use axum::extract::{Path, State};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::{Json, Router};
use serde::{Deserialize, Serialize};

use super::ApiContext;
use super::alerts::{check_reason, internal, placed_event};
use super::error::{ApiError, ErrorBody};
use super::extractor::{Caller, RequireRole};
use super::query::{Cursor, CursorKey, Limit, TypedQuery, page};
use crate::alerts::incident_pages::{self, IncidentEntry, IncidentFilter, IncidentKey, IncidentUpdate, IncidentView};
use crate::alerts::incident_story::{self, IncidentStory};
use crate::alerts::incidents::{IncidentStatus, is_incident_id};
use crate::alerts::store::AlertStoreError;
use crate::auth::Role;
use crate::report::ReportFormat;

pub fn router() -> Router<ApiContext> {
    Router::new()
        .route("/api/v1/incidents", get(incidents))
        .route("/api/v1/incidents/{id}", get(incident).patch(update))
        .route("/api/v1/incidents/{id}/report", get(report))
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

/// Incidents (alerts of at least two policies linked into one intrusion, or one high or critical
/// detection that is not a posture finding), newest first.
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

/// One incident: its timeline of alerts, the events behind it, the configuration changes and
/// flows, the resources it touched with their latest snapshot, the response actions taken on its
/// alerts, all of these merged into one timeline (`merged_timeline`, at most 1000 entries), its
/// outside addresses with their places (`places`), and its history. A merged id answers with
/// the incident it was merged into.
#[utoipa::path(get, path = "/api/v1/incidents/{id}", tag = "incidents", params(("id" = String, Path, description = "an incident id (`inc-` and 16 hex digits)")), responses((status = 200, description = "OK", body = IncidentStory), (status = 400, description = "A bad parameter; `field` names it", body = ErrorBody), (status = 401, description = "No valid token or session", body = ErrorBody), (status = 404, description = "Not found", body = ErrorBody)), security(("bearer" = []), ("session" = [])))]
async fn incident(
    _caller: Caller,
    State(context): State<ApiContext>,
    Path(id): Path<String>,
) -> Result<Json<IncidentStory>, ApiError> {
    checked_id(&id)?;
    let mut story = incident_story::story(&context.db, &id).await.map_err(internal)?.ok_or(ApiError::NotFound)?;
    story.events = std::mem::take(&mut story.events).into_iter().map(placed_event).collect();
    Ok(Json(story))
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
struct ReportQuery {
    /// `html` (a self-contained page: timeline, map, evidence, diffs, flows, history) or `ocsf`
    /// (OCSF 1.1.0: an Incident Finding and a Detection Finding per alert). Default `html`.
    format: Option<String>,
}

/// The incident as a report to hand over, downloaded as a file.
#[utoipa::path(get, path = "/api/v1/incidents/{id}/report", tag = "incidents", params(("id" = String, Path), ReportQuery), responses((status = 200, description = "The report (text/html or application/json)", body = String), (status = 400, description = "A bad parameter; `field` names it", body = ErrorBody), (status = 401, description = "No valid token or session", body = ErrorBody), (status = 404, description = "Not found", body = ErrorBody)), security(("bearer" = []), ("session" = [])))]
async fn report(
    caller: Caller,
    State(context): State<ApiContext>,
    Path(id): Path<String>,
    TypedQuery(query): TypedQuery<ReportQuery>,
) -> Result<axum::response::Response, ApiError> {
    let format = ReportFormat::parse(query.format.as_deref().unwrap_or("html"))
        .ok_or_else(|| ApiError::bad("format", "the format is html or ocsf"))?;
    checked_id(&id)?;
    let mut story = incident_story::story(&context.db, &id).await.map_err(internal)?.ok_or(ApiError::NotFound)?;
    story.events = std::mem::take(&mut story.events).into_iter().map(placed_event).collect();
    let now = chrono::Utc::now();
    let body = match format {
        ReportFormat::Html => crate::report::html::report(&story, now),
        ReportFormat::Ocsf => {
            let public_url = std::env::var("SKYWARDEN_PUBLIC_URL").unwrap_or_default();
            crate::report::ocsf::incident_findings(&story, &public_url, now).to_string()
        }
    };
    crate::auth::audit::record(
        &context.db,
        &caller.actor(),
        "incident.report",
        Some(&story.incident.id),
        None,
        serde_json::json!({"format": format.extension()}),
    )
    .await;
    let disposition = format!("attachment; filename=\"{}.{}\"", story.incident.id, format.extension());
    Ok((
        [
            (axum::http::header::CONTENT_TYPE, format.content_type().to_string()),
            (axum::http::header::CONTENT_DISPOSITION, disposition),
        ],
        body,
    )
        .into_response())
}

fn checked_id(id: &str) -> Result<(), ApiError> {
    if is_incident_id(id) { Ok(()) } else { Err(ApiError::bad("id", "an incident id is `inc-` and 16 hex digits")) }
}

/// The incident an id names (or was merged into), and the id asked for if it was merged.
async fn find(context: &ApiContext, id: &str) -> Result<(IncidentEntry, Option<String>), ApiError> {
    checked_id(id)?;
    incident_story::find(&context.db, id).await.map_err(internal)?.ok_or(ApiError::NotFound)
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
