//! Alerts: `GET /api/v1/alerts` (viewers) and `POST /api/v1/alerts/{id}/status` (analysts),
//! which records who changed the status and why.

use std::collections::HashMap;

use axum::Json;
use axum::Router;
use axum::extract::{Path, Query, State};
use axum::routing::{get, post};
use chrono::{DateTime, Utc};
use serde::Deserialize;

use super::ApiContext;
use super::error::ApiError;
use super::extractor::{Caller, RequireRole};
use crate::alerts::AlertStatus;
use crate::alerts::store::{self, AlertFilter, AlertStoreError, AlertView};
use crate::auth::Role;

pub fn router() -> Router<ApiContext> {
    Router::new()
        .route("/api/v1/alerts", get(list))
        .route("/api/v1/alerts/{id}/status", post(set_status))
        .route("/api/v1/incidents", get(incidents))
}

fn status_of(text: &str) -> Option<AlertStatus> {
    <AlertStatus as clap::ValueEnum>::from_str(text, true).ok()
}

async fn list(
    _caller: Caller,
    State(context): State<ApiContext>,
    Query(query): Query<HashMap<String, String>>,
) -> Result<Json<Vec<AlertView>>, ApiError> {
    if let Some(unknown) = query.keys().find(|k| !["status", "policy"].contains(&k.as_str())) {
        return Err(ApiError::bad("query", format!("unknown filter {unknown:?}; known: status, policy")));
    }
    let status = query
        .get("status")
        .map(|s| {
            status_of(s).ok_or_else(|| {
                ApiError::bad("status", "status must be open, acknowledged, resolved, dismissed or snoozed")
            })
        })
        .transpose()?;
    let filter = AlertFilter { status, policy_id: query.get("policy").cloned() };
    let alerts = store::list(&context.db, &filter).await.map_err(|e| ApiError::Internal(e.into()))?;
    Ok(Json(alerts))
}

/// Alerts of one session as timelines, newest incident first.
async fn incidents(
    _caller: Caller,
    State(context): State<ApiContext>,
) -> Result<Json<Vec<store::IncidentView>>, ApiError> {
    Ok(Json(store::incidents(&context.db).await.map_err(|e| ApiError::Internal(e.into()))?))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct StatusChange {
    status: String,
    reason: String,
    until: Option<DateTime<Utc>>,
}

async fn set_status(
    caller: Caller,
    State(context): State<ApiContext>,
    Path(id): Path<String>,
    body: Result<Json<StatusChange>, axum::extract::rejection::JsonRejection>,
) -> Result<Json<serde_json::Value>, ApiError> {
    caller.require(Role::Analyst)?;
    let Json(change) = body.map_err(|e| ApiError::bad("body", e.body_text()))?;
    let status = status_of(&change.status).ok_or_else(|| ApiError::bad("status", "unknown status"))?;
    if change.reason.trim().is_empty() {
        return Err(ApiError::bad("reason", "say why the status changes"));
    }
    let actor = format!("token:{} ({})", caller.token_id, caller.name);
    let old =
        store::set_status(&context.db, &id, status, change.until, &actor, &change.reason).await.map_err(
            |e| match e {
                AlertStoreError::NotFound(_) => ApiError::NotFound,
                AlertStoreError::BadId(_) => ApiError::bad("id", "an alert id is a UUID"),
                AlertStoreError::SnoozeWithoutUntil => ApiError::bad("until", "snoozing needs a future `until`"),
                other => ApiError::Internal(other.into()),
            },
        )?;
    Ok(Json(serde_json::json!({"id": id, "old_status": old, "status": status})))
}
