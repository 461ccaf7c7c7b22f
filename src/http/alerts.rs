//! Alerts: `GET /api/v1/alerts` (viewers) and `POST /api/v1/alerts/{id}/status` (analysts),
//! which records who changed the status and why.

use axum::Json;
use axum::Router;
use axum::extract::{Path, State};
use axum::routing::{get, post};
use chrono::{DateTime, Utc};
use serde::Deserialize;

use super::ApiContext;
use super::error::{ApiError, ErrorBody};
use super::extractor::{Caller, RequireRole};
use super::query::{TypedQuery, parsed};
use crate::alerts::store::{self, AlertFilter, AlertStoreError, AlertView, IncidentView};
use crate::auth::Role;
use crate::model::AlertStatus;

pub fn router() -> Router<ApiContext> {
    Router::new()
        .route("/api/v1/alerts", get(list))
        .route("/api/v1/alerts/{id}", get(one))
        .route("/api/v1/alerts/{id}/status", post(set_status))
        .route("/api/v1/incidents", get(incidents))
}

fn status_of(text: &str) -> Option<AlertStatus> {
    text.parse().ok()
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
}

#[utoipa::path(get, path = "/api/v1/alerts", tag = "alerts", params(AlertQuery), responses((status = 200, description = "OK", body = Vec<AlertView>), (status = 400, description = "A bad parameter; `field` names it", body = ErrorBody), (status = 401, description = "No valid token or session", body = ErrorBody)), security(("bearer" = []), ("session" = [])))]
async fn list(
    _caller: Caller,
    State(context): State<ApiContext>,
    TypedQuery(query): TypedQuery<AlertQuery>,
) -> Result<Json<Vec<AlertView>>, ApiError> {
    let filter = AlertFilter { status: query.status, policy_id: query.policy, alert_id: None };
    let alerts = store::list(&context.db, &filter).await.map_err(|e| ApiError::Internal(e.into()))?;
    Ok(Json(alerts))
}

/// One alert with the CloudTrail events behind it, in time order.
#[utoipa::path(get, path = "/api/v1/alerts/{id}", tag = "alerts", params(("id" = String, Path, description = "a UUID")), responses((status = 200, description = "OK", body = Object), (status = 400, description = "A bad parameter; `field` names it", body = ErrorBody), (status = 401, description = "No valid token or session", body = ErrorBody), (status = 404, description = "Not found", body = ErrorBody)), security(("bearer" = []), ("session" = [])))]
async fn one(
    _caller: Caller,
    State(context): State<ApiContext>,
    Path(id): Path<String>,
) -> Result<Json<serde_json::Value>, ApiError> {
    if !crate::model::is_alert_id(&id) {
        return Err(ApiError::bad("id", "an alert id is a UUID"));
    }
    let filter = AlertFilter { alert_id: Some(id.clone()), ..Default::default() };
    let alert = store::list(&context.db, &filter)
        .await
        .map_err(|e| ApiError::Internal(e.into()))?
        .into_iter()
        .next()
        .ok_or(ApiError::NotFound)?;
    let evidence = sqlx::query!(
        r#"SELECT c.event_id, c.event_time, c.event_name, c.user_name, c.principal_arn, c.source_ip_text,
                  c.geo_country, c.geo_city, c.geo_latitude, c.geo_longitude, c.user_agent, c.error_code, c.resource_ids
           FROM alert_evidence e
           JOIN cloudtrail_events c ON c.account_id = e.account_id AND c.event_id = e.event_id AND c.event_time = e.event_time
           WHERE e.account_id = $1 AND e.alert_id = $2::text::uuid
           ORDER BY c.event_time, c.event_id"#,
        alert.account_id,
        id
    )
    .fetch_all(&context.db)
    .await?;
    let events: Vec<serde_json::Value> = evidence
        .into_iter()
        .map(|e| {
            // Only the country known: place the point at the country's centroid.
            let (latitude, longitude) = match (e.geo_latitude, e.geo_longitude) {
                (Some(lat), Some(lon)) => (Some(lat), Some(lon)),
                _ => e
                    .geo_country
                    .as_deref()
                    .and_then(crate::geo::centroids::country_centroid)
                    .map_or((None, None), |(a, b)| (Some(a), Some(b))),
            };
            serde_json::json!({"event_id": e.event_id, "event_time": e.event_time, "event_name": e.event_name,
                "user_name": e.user_name, "principal_arn": e.principal_arn, "source_ip": e.source_ip_text,
                "country": e.geo_country, "city": e.geo_city, "latitude": latitude, "longitude": longitude,
                "user_agent": e.user_agent, "error_code": e.error_code, "resource_ids": e.resource_ids})
        })
        .collect();
    Ok(Json(serde_json::json!({"alert": alert, "evidence_events": events})))
}

/// Alerts of one session as timelines, newest incident first.
#[utoipa::path(get, path = "/api/v1/incidents", tag = "alerts", responses((status = 200, description = "OK", body = Vec<IncidentView>), (status = 400, description = "A bad parameter; `field` names it", body = ErrorBody), (status = 401, description = "No valid token or session", body = ErrorBody)), security(("bearer" = []), ("session" = [])))]
async fn incidents(_caller: Caller, State(context): State<ApiContext>) -> Result<Json<Vec<IncidentView>>, ApiError> {
    Ok(Json(store::incidents(&context.db).await.map_err(|e| ApiError::Internal(e.into()))?))
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
