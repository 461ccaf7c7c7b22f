//! Alerts: `GET /api/v1/alerts` (viewers; a page at a time, each alert with a bounded sample of
//! its evidence), one alert with its evidence events (paged at `/api/v1/alerts/{id}/evidence`),
//! incidents (paged), and `POST /api/v1/alerts/{id}/status` (analysts), which records who
//! changed the status and why.

use axum::Json;
use axum::Router;
use axum::extract::{Path, State};
use axum::routing::{get, post};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::ApiContext;
use super::error::{ApiError, ErrorBody};
use super::extractor::{Caller, RequireRole};
use super::query::{Cursor, CursorKey, Limit, TypedQuery, page, parsed};
use crate::alerts::pages::{self, AlertKey, EvidenceEvent, EvidenceKey, IncidentEntry, IncidentKey};
use crate::alerts::store::{AlertFilter, AlertStoreError, AlertView, IncidentView};
use crate::auth::Role;
use crate::model::AlertStatus;

pub fn router() -> Router<ApiContext> {
    Router::new()
        .route("/api/v1/alerts", get(list))
        .route("/api/v1/alerts/{id}", get(one))
        .route("/api/v1/alerts/{id}/evidence", get(evidence))
        .route("/api/v1/alerts/{id}/status", post(set_status))
        .route("/api/v1/incidents", get(incidents))
}

fn status_of(text: &str) -> Option<AlertStatus> {
    text.parse().ok()
}

fn internal(error: AlertStoreError) -> ApiError {
    ApiError::Internal(error.into())
}

impl CursorKey for AlertKey {
    const KIND: &'static str = "alerts";
}

impl CursorKey for EvidenceKey {
    const KIND: &'static str = "evidence";
}

impl CursorKey for IncidentKey {
    const KIND: &'static str = "incidents";
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
struct AlertQuery {
    /// Only alerts in this status (either case).
    #[serde(default, deserialize_with = "parsed::<_, AlertStatus>")]
    status: Option<AlertStatus>,
    /// Only alerts of this policy (its id).
    policy: Option<String>,
    /// Alerts per page, newest first.
    #[serde(default)]
    #[param(inline)]
    limit: Limit<500, 100>,
    /// `next_cursor` of the previous page.
    #[serde(default)]
    #[param(value_type = Option<String>)]
    cursor: Option<Cursor<AlertKey>>,
}

/// A page of alerts, newest first. Each alert carries its first evidence ids only (`event_count`
/// says how many events there are; `/api/v1/alerts/{id}/evidence` pages them all).
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct AlertPage {
    pub alerts: Vec<AlertView>,
    /// The next page's `cursor`; absent on the last page.
    pub next_cursor: Option<String>,
}

#[utoipa::path(get, path = "/api/v1/alerts", tag = "alerts", params(AlertQuery), responses((status = 200, description = "OK", body = AlertPage), (status = 400, description = "A bad parameter; `field` names it", body = ErrorBody), (status = 401, description = "No valid token or session", body = ErrorBody)), security(("bearer" = []), ("session" = [])))]
async fn list(
    _caller: Caller,
    State(context): State<ApiContext>,
    TypedQuery(query): TypedQuery<AlertQuery>,
) -> Result<Json<AlertPage>, ApiError> {
    check_text("policy", query.policy.as_deref())?;
    let filter = AlertFilter { status: query.status, policy_id: query.policy, alert_id: None };
    let after = query.cursor.map(|c| c.0);
    let rows = pages::alerts(&context.db, &filter, after.as_ref(), query.limit.0 + 1).await.map_err(internal)?;
    let (alerts, next_cursor) = page(rows, query.limit.0, AlertKey::of);
    Ok(Json(AlertPage { alerts, next_cursor }))
}

/// A filter value: bounded, and without control characters.
fn check_text(field: &'static str, value: Option<&str>) -> Result<(), ApiError> {
    match value {
        Some(value) if value.len() > 512 || value.chars().any(char::is_control) => {
            Err(ApiError::bad(field, format!("{field} is at most 512 characters, without control characters")))
        }
        _ => Ok(()),
    }
}

/// Evidence events the one-alert answer holds; the rest are a page away.
const EVIDENCE_FIRST: i64 = 100;

/// One alert with the first CloudTrail events behind it, in time order (`evidence_next_cursor`
/// continues them at `/api/v1/alerts/{id}/evidence`).
#[utoipa::path(get, path = "/api/v1/alerts/{id}", tag = "alerts", params(("id" = String, Path, description = "a UUID")), responses((status = 200, description = "`alert`, `evidence_events` (the first 100) and `evidence_next_cursor`", body = Object), (status = 400, description = "A bad parameter; `field` names it", body = ErrorBody), (status = 401, description = "No valid token or session", body = ErrorBody), (status = 404, description = "Not found", body = ErrorBody)), security(("bearer" = []), ("session" = [])))]
async fn one(
    _caller: Caller,
    State(context): State<ApiContext>,
    Path(id): Path<String>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let alert = find(&context, &id).await?;
    let rows =
        pages::evidence(&context.db, &alert.account_id, &id, None, EVIDENCE_FIRST + 1).await.map_err(internal)?;
    let (events, next_cursor) = page(rows, EVIDENCE_FIRST, EvidenceEvent::key);
    let events: Vec<EvidenceEvent> = events.into_iter().map(placed).collect();
    Ok(Json(serde_json::json!({"alert": alert, "evidence_events": events, "evidence_next_cursor": next_cursor})))
}

async fn find(context: &ApiContext, id: &str) -> Result<AlertView, ApiError> {
    if !crate::model::is_alert_id(id) {
        return Err(ApiError::bad("id", "an alert id is a UUID"));
    }
    pages::alert(&context.db, id).await.map_err(internal)?.ok_or(ApiError::NotFound)
}

/// Only the country known: the point at the country's centroid.
fn placed(mut event: EvidenceEvent) -> EvidenceEvent {
    if event.latitude.is_none() || event.longitude.is_none() {
        let centroid = event.country.as_deref().and_then(crate::geo::centroids::country_centroid);
        (event.latitude, event.longitude) = centroid.map_or((None, None), |(a, b)| (Some(a), Some(b)));
    }
    event
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
struct EvidenceQuery {
    /// Events per page, oldest first.
    #[serde(default)]
    #[param(inline)]
    limit: Limit<1000, 100>,
    /// `next_cursor` of the previous page (or the alert's `evidence_next_cursor`).
    #[serde(default)]
    #[param(value_type = Option<String>)]
    cursor: Option<Cursor<EvidenceKey>>,
}

/// A page of the CloudTrail events behind an alert, oldest first.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct EvidencePage {
    pub events: Vec<EvidenceEvent>,
    /// The next page's `cursor`; absent on the last page.
    pub next_cursor: Option<String>,
}

#[utoipa::path(get, path = "/api/v1/alerts/{id}/evidence", tag = "alerts", params(("id" = String, Path, description = "a UUID"), EvidenceQuery), responses((status = 200, description = "OK", body = EvidencePage), (status = 400, description = "A bad parameter; `field` names it", body = ErrorBody), (status = 401, description = "No valid token or session", body = ErrorBody), (status = 404, description = "Not found", body = ErrorBody)), security(("bearer" = []), ("session" = [])))]
async fn evidence(
    _caller: Caller,
    State(context): State<ApiContext>,
    Path(id): Path<String>,
    TypedQuery(query): TypedQuery<EvidenceQuery>,
) -> Result<Json<EvidencePage>, ApiError> {
    let alert = find(&context, &id).await?;
    let after = query.cursor.map(|c| c.0);
    let rows = pages::evidence(&context.db, &alert.account_id, &id, after.as_ref(), query.limit.0 + 1)
        .await
        .map_err(internal)?;
    let (events, next_cursor) = page(rows, query.limit.0, EvidenceEvent::key);
    Ok(Json(EvidencePage { events: events.into_iter().map(placed).collect(), next_cursor }))
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
struct IncidentQuery {
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
}

/// A page of incidents, newest first.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct IncidentPage {
    pub incidents: Vec<IncidentSummary>,
    /// The next page's `cursor`; absent on the last page.
    pub next_cursor: Option<String>,
}

/// Alerts of one session as timelines, newest incident first.
#[utoipa::path(get, path = "/api/v1/incidents", tag = "alerts", params(IncidentQuery), responses((status = 200, description = "OK", body = IncidentPage), (status = 400, description = "A bad parameter; `field` names it", body = ErrorBody), (status = 401, description = "No valid token or session", body = ErrorBody)), security(("bearer" = []), ("session" = [])))]
async fn incidents(
    _caller: Caller,
    State(context): State<ApiContext>,
    TypedQuery(query): TypedQuery<IncidentQuery>,
) -> Result<Json<IncidentPage>, ApiError> {
    let after = query.cursor.map(|c| c.0);
    let rows = pages::incidents(&context.db, after.as_ref(), query.limit.0 + 1).await.map_err(internal)?;
    let (entries, next_cursor) = page(rows, query.limit.0, |e: &IncidentEntry| e.key.clone());
    let incidents =
        entries.into_iter().map(|e| IncidentSummary { incident: e.incident, alert_count: e.alert_count }).collect();
    Ok(Json(IncidentPage { incidents, next_cursor }))
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct StatusChange {
    status: String,
    reason: String,
    until: Option<DateTime<Utc>>,
}

#[utoipa::path(post, path = "/api/v1/alerts/{id}/status", tag = "alerts", params(("id" = String, Path)), request_body = StatusChange, responses((status = 200, description = "OK", body = Object), (status = 400, description = "A bad parameter; `field` names it", body = ErrorBody), (status = 401, description = "No valid token or session", body = ErrorBody), (status = 403, description = "The role is too low, or the CSRF token is missing", body = ErrorBody), (status = 404, description = "Not found", body = ErrorBody)), security(("bearer" = []), ("session" = [])))]
async fn set_status(
    caller: Caller,
    State(context): State<ApiContext>,
    Path(id): Path<String>,
    body: Result<Json<StatusChange>, axum::extract::rejection::JsonRejection>,
) -> Result<Json<serde_json::Value>, ApiError> {
    caller.require(Role::Analyst)?;
    let Json(change) = body.map_err(|e| ApiError::bad("body", e.body_text()))?;
    let status = status_of(&change.status).ok_or_else(|| ApiError::bad("status", "unknown status"))?;
    if change.reason.contains('\0') || change.reason.len() > 2000 {
        return Err(ApiError::bad("reason", "the reason must be text of at most 2000 bytes"));
    }
    if change.reason.trim().is_empty() {
        return Err(ApiError::bad("reason", "say why the status changes"));
    }
    let actor = format!("{} ({})", caller.actor(), caller.name);
    let old = crate::notify::outbox::set_alert_status(&context.db, &id, status, change.until, &actor, &change.reason)
        .await
        .map_err(|e| match e {
            AlertStoreError::NotFound(_) => ApiError::NotFound,
            AlertStoreError::BadId(_) => ApiError::bad("id", "an alert id is a UUID"),
            AlertStoreError::SnoozeWithoutUntil => ApiError::bad("until", "snoozing needs a future `until`"),
            other => ApiError::Internal(other.into()),
        })?;
    crate::auth::audit::record(
        &context.db,
        &caller.actor(),
        "alert.status",
        Some(&id),
        None,
        serde_json::json!({"from": old, "to": status, "reason": change.reason}),
    )
    .await;
    Ok(Json(serde_json::json!({"id": id, "old_status": old, "status": status})))
}
