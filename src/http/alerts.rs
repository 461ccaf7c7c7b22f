//! Alerts: `GET /api/v1/alerts` (viewers; filtered, sorted, a page at a time, each alert with a
//! bounded sample of its evidence), one alert with its evidence events (paged at
//! `/api/v1/alerts/{id}/evidence`), its principal's activity around it, its flows, resources and
//! triage history; and status changes
//! (analysts) for one alert or many at once, each recorded with who, when and why.

use axum::Json;
use axum::Router;
use axum::extract::{Path, State};
use axum::routing::{get, post};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::ApiContext;
use super::error::{ApiError, ErrorBody};
use super::extractor::{Caller, RequireRole};
use super::query::{Cursor, CursorKey, Limit, QueryValue, TypedQuery, page, parsed};
use crate::alerts::investigate::{self, EventWindow, FlowSummary, StatusChangeView, TouchedResource, WindowEvent};
use crate::alerts::pages::{self, AlertKey, AlertListFilter, AlertSort, EvidenceEvent, EvidenceKey};
use crate::alerts::store::{AlertStoreError, AlertView};
use crate::auth::Role;
use crate::model::{AlertStatus, Severity};

pub fn router() -> Router<ApiContext> {
    Router::new()
        .route("/api/v1/alerts", get(list))
        .route("/api/v1/alerts/{id}", get(one))
        .route("/api/v1/alerts/{id}/evidence", get(evidence))
        .route("/api/v1/alerts/{id}/status", post(set_status))
        .route("/api/v1/alerts/status", post(set_statuses))
}

fn status_of(text: &str) -> Option<AlertStatus> {
    text.parse().ok()
}

pub(super) fn internal(error: AlertStoreError) -> ApiError {
    ApiError::Internal(error.into())
}

impl CursorKey for AlertKey {
    const KIND: &'static str = "alerts";

    /// The id is cast to a uuid and the time added to the epoch in SQL: both must be in range.
    fn is_plausible(&self) -> bool {
        // Within ±10,000 years of 1970, negated for the oldest-first order.
        const MAX_MICROS: i64 = 10_000 * 366 * 86_400 * 1_000_000;
        crate::model::is_alert_id(&self.alert_id) && self.micros.abs() <= MAX_MICROS
    }
}

impl QueryValue for Severity {
    const EXPECTED: &'static str = "info, low, medium, high or critical";
}

impl CursorKey for EvidenceKey {
    const KIND: &'static str = "evidence";
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
    /// Only alerts of this severity.
    #[serde(default, deserialize_with = "parsed::<_, Severity>")]
    #[param(value_type = Option<Severity>)]
    severity: Option<Severity>,
    /// Only alerts of this account (12 digits).
    account: Option<String>,
    /// Only alerts of this principal (an ARN, or a user name).
    principal: Option<String>,
    /// The order: `newest` (first seen, the default), `oldest`, `severity` (then newest) or
    /// `last_seen` (most recently seen first).
    #[serde(default)]
    sort: AlertSort,
    /// Alerts per page.
    #[serde(default)]
    #[param(inline)]
    limit: Limit<500, 100>,
    /// `next_cursor` of the previous page (of the same `sort`).
    #[serde(default)]
    #[param(value_type = Option<String>)]
    cursor: Option<Cursor<AlertKey>>,
}

/// A page of alerts, in the order asked for. Each alert carries its first evidence ids only (`event_count`
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
    check_text("principal", query.principal.as_deref())?;
    if let Some(account) = &query.account
        && !(account.len() == 12 && account.bytes().all(|b| b.is_ascii_digit()))
    {
        return Err(ApiError::bad("account", "account must be an AWS account id (12 digits)"));
    }
    let after = query.cursor.map(|c| c.0);
    if after.as_ref().is_some_and(|key| key.sort != query.sort) {
        return Err(ApiError::bad("cursor", "this cursor belongs to another sort order"));
    }
    let filter = AlertListFilter {
        status: query.status,
        policy_id: query.policy,
        severity: query.severity,
        account_id: query.account,
        principal: query.principal,
        alert_id: None,
        sort: query.sort,
    };
    let rows = pages::alerts(&context.db, &filter, after.as_ref(), query.limit.0 + 1).await.map_err(internal)?;
    let (rows, next_cursor) = page(rows, query.limit.0, |listed| listed.key.clone());
    Ok(Json(AlertPage { alerts: rows.into_iter().map(|listed| listed.alert).collect(), next_cursor }))
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

/// One alert and what an analyst reads around it.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct AlertDetail {
    pub alert: AlertView,
    /// The first 100 CloudTrail events behind it, in time order.
    pub evidence_events: Vec<EvidenceEvent>,
    /// Continues them at `/api/v1/alerts/{id}/evidence`; absent when they are all here.
    pub evidence_next_cursor: Option<String>,
    /// Its principal's events (or, with no principal, its address's) from two hours before it to
    /// two hours after, oldest first, at most 500; `alert_ids` holds this alert's id on the
    /// events that are its evidence.
    pub activity: Vec<WindowEvent>,
    /// The flows to or from its address while it lasted (flow alerts), largest first.
    pub flows: Vec<FlowSummary>,
    /// The resources it names, as the latest configuration snapshot has them.
    pub resources: Vec<TouchedResource>,
    /// Its status changes, newest first.
    pub history: Vec<StatusChangeView>,
}

/// One alert with the first CloudTrail events behind it, in time order (`evidence_next_cursor`
/// continues them at `/api/v1/alerts/{id}/evidence`), the activity around it, its flows,
/// resources and triage history.
#[utoipa::path(get, path = "/api/v1/alerts/{id}", tag = "alerts", params(("id" = String, Path, description = "a UUID")), responses((status = 200, description = "OK", body = AlertDetail), (status = 400, description = "A bad parameter; `field` names it", body = ErrorBody), (status = 401, description = "No valid token or session", body = ErrorBody), (status = 404, description = "Not found", body = ErrorBody)), security(("bearer" = []), ("session" = [])))]
async fn one(
    _caller: Caller,
    State(context): State<ApiContext>,
    Path(id): Path<String>,
) -> Result<Json<AlertDetail>, ApiError> {
    let alert = find(&context, &id).await?;
    let db = &context.db;
    let rows = pages::evidence(db, &alert.account_id, &id, None, EVIDENCE_FIRST + 1).await.map_err(internal)?;
    let (events, evidence_next_cursor) = page(rows, EVIDENCE_FIRST, EvidenceEvent::key);
    let around = chrono::Duration::hours(2);
    let ids = [id.clone()];
    let window = EventWindow {
        account_id: &alert.account_id,
        since: alert.first_seen - around,
        until: alert.last_seen + around,
        principal: alert.principal.as_deref(),
        source_ip: if alert.principal.is_none() { alert.source_ip.as_deref() } else { None },
        alert_ids: &ids,
        limit: investigate::MAX_WINDOW_EVENTS,
    };
    let activity =
        investigate::window_events(db, &window).await.map_err(internal)?.into_iter().map(placed_event).collect();
    let flows = match (&alert.source_ip, alert.evidence.iter().any(|e| e.starts_with("flows:"))) {
        // Flow evidence is a clock hour of flows: the hour after the last one belongs to it.
        (Some(address), true) => investigate::address_flows(
            db,
            &alert.account_id,
            address,
            alert.first_seen,
            alert.last_seen + chrono::Duration::hours(1),
        )
        .await
        .map_err(internal)?,
        _ => Vec::new(),
    };
    let resources = investigate::touched_resources(db, &alert.account_id, &alert.resources).await.map_err(internal)?;
    let history = investigate::status_history(db, &alert.account_id, &id).await.map_err(internal)?;
    Ok(Json(AlertDetail {
        evidence_events: events.into_iter().map(placed).collect(),
        evidence_next_cursor,
        activity,
        flows,
        resources,
        history,
        alert,
    }))
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

/// The same for an event of a window.
pub(super) fn placed_event(mut event: WindowEvent) -> WindowEvent {
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

/// Alerts one status change may name at once.
const MAX_BULK: usize = 500;

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct BulkStatusChange {
    /// The alerts (UUIDs), 1 to 500.
    ids: Vec<String>,
    /// open, acknowledged, resolved, dismissed or snoozed.
    status: String,
    /// Why (kept in each alert's history).
    reason: String,
    /// Until when a snooze lasts (required for `snoozed`, in the future).
    until: Option<DateTime<Utc>>,
}

/// One alert's part of a status change.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct StatusChanged {
    pub id: String,
    pub old_status: AlertStatus,
    pub status: AlertStatus,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct BulkStatusChanged {
    pub changed: Vec<StatusChanged>,
}

/// Sets the status of several alerts with one reason, all or none (analysts). Each alert keeps
/// the change in its history and in Skywarden's audit log, and routes hear of it as of a single
/// change.
#[utoipa::path(post, path = "/api/v1/alerts/status", tag = "alerts", request_body = BulkStatusChange, responses((status = 200, description = "OK", body = BulkStatusChanged), (status = 400, description = "A bad parameter; `field` names it", body = ErrorBody), (status = 401, description = "No valid token or session", body = ErrorBody), (status = 403, description = "The role is too low, or the CSRF token is missing", body = ErrorBody)), security(("bearer" = []), ("session" = [])))]
async fn set_statuses(
    caller: Caller,
    State(context): State<ApiContext>,
    body: Result<Json<BulkStatusChange>, axum::extract::rejection::JsonRejection>,
) -> Result<Json<BulkStatusChanged>, ApiError> {
    caller.require(Role::Analyst)?;
    let Json(change) = body.map_err(|e| ApiError::bad("body", e.body_text()))?;
    let status = status_of(&change.status).ok_or_else(|| ApiError::bad("status", "unknown status"))?;
    check_reason(&change.reason)?;
    let mut ids = change.ids;
    if ids.is_empty() || ids.len() > MAX_BULK {
        return Err(ApiError::bad("ids", format!("ids must name 1 to {MAX_BULK} alerts")));
    }
    ids.sort();
    ids.dedup();
    let mut snoozed_until = None;
    for id in &ids {
        snoozed_until = crate::alerts::store::check_status_change(id, status, change.until).map_err(status_error)?;
    }
    let actor = format!("{} ({})", caller.actor(), caller.name);
    let mut tx = crate::db::begin(&context.db).await?;
    let mut changed = Vec::with_capacity(ids.len());
    for id in &ids {
        let outcome = crate::alerts::store::set_status_in(&mut tx, id, status, snoozed_until, &actor, &change.reason)
            .await
            .map_err(status_error)?;
        crate::notify::outbox::enqueue(&mut tx, outcome.change.as_slice()).await?;
        changed.push(StatusChanged { id: id.clone(), old_status: outcome.old, status });
    }
    tx.commit().await?;
    for one in &changed {
        let details =
            serde_json::json!({"from": one.old_status, "to": status, "reason": change.reason, "bulk": ids.len()});
        crate::auth::audit::record(&context.db, &caller.actor(), "alert.status", Some(&one.id), None, details).await;
    }
    Ok(Json(BulkStatusChanged { changed }))
}

pub(super) fn check_reason(reason: &str) -> Result<(), ApiError> {
    if reason.contains('\0') || reason.len() > 2000 {
        return Err(ApiError::bad("reason", "the reason must be text of at most 2000 bytes"));
    }
    if reason.trim().is_empty() {
        return Err(ApiError::bad("reason", "say why the status changes"));
    }
    Ok(())
}

/// A refused status change as the API says it (the ids of a bulk change are named in `ids`).
fn status_error(error: AlertStoreError) -> ApiError {
    match error {
        AlertStoreError::NotFound(id) => ApiError::bad("ids", format!("no alert with id {id}")),
        AlertStoreError::BadId(id) => ApiError::bad("ids", format!("alert id {id:?} is not a UUID")),
        AlertStoreError::SnoozeWithoutUntil => ApiError::bad("until", "snoozing needs a future `until`"),
        other => ApiError::Internal(other.into()),
    }
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
    check_reason(&change.reason)?;
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
