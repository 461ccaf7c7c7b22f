//! Alert routing over HTTP: channels (admins change them; secrets go in and never come out),
//! routes, the test button, and deliveries with their dead letters (analysts retry them).

use std::collections::{BTreeMap, HashMap};

use axum::Json;
use axum::Router;
use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::routing::{get, post, put};
use serde::Deserialize;
use serde_json::{Value, json};

use super::ApiContext;
use super::error::{ApiError, ErrorBody};
use super::extractor::{Caller, RequireRole};
use super::params::Params;
use crate::auth::{Role, audit};
use crate::notify::channels::{self, ChannelError, ChannelKind, ChannelSpec, ChannelUpdate, ChannelView, SecretInput};
use crate::notify::outbox::{self, DeliveryFilter, DeliveryView};
use crate::notify::routes::{self, RouteSpec, RouteView};
use crate::notify::secrets::Secret;
use crate::notify::sender::Attempt;

pub fn router() -> Router<ApiContext> {
    Router::new()
        .route("/api/v1/channels", get(list_channels).post(create_channel))
        .route("/api/v1/channels/{id}", axum::routing::patch(update_channel).delete(delete_channel))
        .route("/api/v1/channels/{id}/test", post(test_channel))
        .route("/api/v1/routes", get(list_routes).post(create_route))
        .route("/api/v1/routes/{id}", put(replace_route).delete(delete_route))
        .route("/api/v1/deliveries", get(list_deliveries))
        .route("/api/v1/deliveries/counts", get(delivery_counts))
        .route("/api/v1/deliveries/{id}/retry", post(retry_delivery))
}

fn channel_error(error: ChannelError) -> ApiError {
    match error {
        ChannelError::Invalid { field, message } => {
            // Field names are dynamic (`secrets.webhook_url`); the error body carries them in the text.
            ApiError::bad("body", format!("{field}: {message}"))
        }
        ChannelError::NotFound(_) => ApiError::NotFound,
        ChannelError::Conflict(message) => ApiError::Conflict(message),
        // Two requests racing for one name: the loser hears what a lone request would have.
        ChannelError::Db(sqlx::Error::Database(error)) if error.code().as_deref() == Some("23505") => {
            ApiError::Conflict("a channel or route with this name exists".into())
        }
        other => ApiError::Internal(other.into()),
    }
}

fn notifier(context: &ApiContext) -> Result<&crate::http::NotifyContext, ApiError> {
    context
        .notify
        .as_deref()
        .ok_or_else(|| ApiError::Conflict("notifications are not configured in this process".into()))
}

fn path_id(text: &str) -> Result<i64, ApiError> {
    text.parse::<i64>().ok().filter(|id| *id > 0).ok_or_else(|| ApiError::bad("id", "an id is a positive integer"))
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct NewChannel {
    name: String,
    kind: ChannelKind,
    /// Kind-specific settings (see the README's notifications section).
    #[serde(default)]
    #[schema(value_type = Object)]
    settings: Value,
    /// Secret values by name (`webhook_url`, `routing_key`, `signing_secret`, `api_token`,
    /// `password`); stored sealed, never shown again.
    #[serde(default)]
    #[schema(value_type = BTreeMap<String, String>)]
    secrets: BTreeMap<String, Secret>,
    #[serde(default = "yes")]
    enabled: bool,
}

fn yes() -> bool {
    true
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct ChannelChange {
    name: Option<String>,
    #[schema(value_type = Option<Object>)]
    settings: Option<Value>,
    /// Secrets to replace; those not named stay as they are.
    #[serde(default)]
    #[schema(value_type = BTreeMap<String, String>)]
    secrets: BTreeMap<String, Secret>,
    enabled: Option<bool>,
}

fn secret_values(secrets: BTreeMap<String, Secret>) -> BTreeMap<String, SecretInput> {
    secrets.into_iter().map(|(k, v)| (k, SecretInput::Value(v))).collect()
}

#[utoipa::path(get, path = "/api/v1/channels", tag = "notifications", responses((status = 200, body = Vec<ChannelView>), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody)), security(("bearer" = []), ("session" = [])))]
async fn list_channels(caller: Caller, State(context): State<ApiContext>) -> Result<Json<Vec<ChannelView>>, ApiError> {
    caller.require(Role::Analyst)?;
    Ok(Json(channels::list(&context.db).await.map_err(channel_error)?))
}

#[utoipa::path(post, path = "/api/v1/channels", tag = "notifications", request_body = NewChannel, responses((status = 201, body = ChannelView), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 409, body = ErrorBody)), security(("bearer" = []), ("session" = [])))]
async fn create_channel(
    caller: Caller,
    State(context): State<ApiContext>,
    body: Result<Json<NewChannel>, JsonRejection>,
) -> Result<(StatusCode, Json<ChannelView>), ApiError> {
    caller.require(Role::Admin)?;
    let Json(request) = body.map_err(|e| ApiError::bad("body", e.body_text()))?;
    let notify = notifier(&context)?;
    let spec = ChannelSpec {
        name: request.name,
        kind: request.kind,
        settings: request.settings,
        secrets: secret_values(request.secrets),
        enabled: request.enabled,
    };
    let view =
        channels::create(&context.db, &spec, &notify.key, notify.sender_policy()).await.map_err(channel_error)?;
    audit::record(
        &context.db,
        &caller.actor(),
        "channel.create",
        Some(&view.id.to_string()),
        None,
        json!({"name": view.name, "kind": view.kind, "settings": view.settings, "secrets": view.secrets}),
    )
    .await;
    Ok((StatusCode::CREATED, Json(view)))
}

#[utoipa::path(patch, path = "/api/v1/channels/{id}", tag = "notifications", params(("id" = i64, Path)), request_body = ChannelChange, responses((status = 200, body = ChannelView), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)), security(("bearer" = []), ("session" = [])))]
async fn update_channel(
    caller: Caller,
    State(context): State<ApiContext>,
    Path(id): Path<String>,
    body: Result<Json<ChannelChange>, JsonRejection>,
) -> Result<Json<ChannelView>, ApiError> {
    caller.require(Role::Admin)?;
    let id = path_id(&id)?;
    let Json(request) = body.map_err(|e| ApiError::bad("body", e.body_text()))?;
    let notify = notifier(&context)?;
    let changed_secrets: Vec<String> = request.secrets.keys().cloned().collect();
    let change = ChannelUpdate {
        name: request.name,
        settings: request.settings,
        secrets: secret_values(request.secrets),
        enabled: request.enabled,
    };
    let view =
        channels::update(&context.db, id, &change, &notify.key, notify.sender_policy()).await.map_err(channel_error)?;
    audit::record(
        &context.db,
        &caller.actor(),
        "channel.update",
        Some(&id.to_string()),
        None,
        json!({"name": view.name, "settings": view.settings, "enabled": view.enabled, "secrets_replaced": changed_secrets}),
    )
    .await;
    Ok(Json(view))
}

#[utoipa::path(delete, path = "/api/v1/channels/{id}", tag = "notifications", params(("id" = i64, Path)), responses((status = 200, body = Object), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)), security(("bearer" = []), ("session" = [])))]
async fn delete_channel(
    caller: Caller,
    State(context): State<ApiContext>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    caller.require(Role::Admin)?;
    let id = path_id(&id)?;
    let name = channels::delete(&context.db, id).await.map_err(channel_error)?;
    audit::record(&context.db, &caller.actor(), "channel.delete", Some(&id.to_string()), None, json!({"name": name}))
        .await;
    Ok(Json(json!({"deleted": id, "name": name})))
}

/// Sends a sample alert to the channel now and says how the receiver answered.
#[utoipa::path(post, path = "/api/v1/channels/{id}/test", tag = "notifications", params(("id" = i64, Path)), responses((status = 200, description = "`delivered` says whether the receiver took it; `error` says why not", body = Object), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)), security(("bearer" = []), ("session" = [])))]
async fn test_channel(
    caller: Caller,
    State(context): State<ApiContext>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    caller.require(Role::Admin)?;
    let id = path_id(&id)?;
    let notify = notifier(&context)?;
    let attempt = notify.sender.send_test(id).await.map_err(channel_error)?;
    let answer = match attempt {
        Attempt::Delivered { http_status, note, .. } => {
            json!({"delivered": true, "http_status": http_status, "note": note})
        }
        Attempt::Failed { http_status, error, .. } | Attempt::Rejected { http_status, error } => {
            json!({"delivered": false, "http_status": http_status, "error": error})
        }
    };
    audit::record(&context.db, &caller.actor(), "channel.test", Some(&id.to_string()), None, answer.clone()).await;
    Ok(Json(answer))
}

#[utoipa::path(get, path = "/api/v1/routes", tag = "notifications", responses((status = 200, body = Vec<RouteView>), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody)), security(("bearer" = []), ("session" = [])))]
async fn list_routes(caller: Caller, State(context): State<ApiContext>) -> Result<Json<Vec<RouteView>>, ApiError> {
    caller.require(Role::Analyst)?;
    Ok(Json(routes::list(&context.db).await.map_err(channel_error)?))
}

#[utoipa::path(post, path = "/api/v1/routes", tag = "notifications", request_body = RouteSpec, responses((status = 201, body = RouteView), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 409, body = ErrorBody)), security(("bearer" = []), ("session" = [])))]
async fn create_route(
    caller: Caller,
    State(context): State<ApiContext>,
    body: Result<Json<RouteSpec>, JsonRejection>,
) -> Result<(StatusCode, Json<RouteView>), ApiError> {
    caller.require(Role::Admin)?;
    let Json(spec) = body.map_err(|e| ApiError::bad("body", e.body_text()))?;
    let view = routes::create(&context.db, &spec).await.map_err(channel_error)?;
    audit::record(&context.db, &caller.actor(), "route.create", Some(&view.id.to_string()), None, json!(view)).await;
    Ok((StatusCode::CREATED, Json(view)))
}

#[utoipa::path(put, path = "/api/v1/routes/{id}", tag = "notifications", params(("id" = i64, Path)), request_body = RouteSpec, responses((status = 200, body = RouteView), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)), security(("bearer" = []), ("session" = [])))]
async fn replace_route(
    caller: Caller,
    State(context): State<ApiContext>,
    Path(id): Path<String>,
    body: Result<Json<RouteSpec>, JsonRejection>,
) -> Result<Json<RouteView>, ApiError> {
    caller.require(Role::Admin)?;
    let id = path_id(&id)?;
    let Json(spec) = body.map_err(|e| ApiError::bad("body", e.body_text()))?;
    let view = routes::replace(&context.db, id, &spec).await.map_err(channel_error)?;
    audit::record(&context.db, &caller.actor(), "route.update", Some(&id.to_string()), None, json!(view)).await;
    Ok(Json(view))
}

#[utoipa::path(delete, path = "/api/v1/routes/{id}", tag = "notifications", params(("id" = i64, Path)), responses((status = 200, body = Object), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)), security(("bearer" = []), ("session" = [])))]
async fn delete_route(
    caller: Caller,
    State(context): State<ApiContext>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    caller.require(Role::Admin)?;
    let id = path_id(&id)?;
    let name = routes::delete(&context.db, id).await.map_err(channel_error)?;
    audit::record(&context.db, &caller.actor(), "route.delete", Some(&id.to_string()), None, json!({"name": name}))
        .await;
    Ok(Json(json!({"deleted": id, "name": name})))
}

/// Deliveries, newest first; `state=dead` lists what gave up.
#[utoipa::path(get, path = "/api/v1/deliveries", tag = "notifications", params(("state" = Option<String>, Query, description = "pending, sending, delivered or dead"), ("channel" = Option<i64>, Query), ("alert" = Option<String>, Query, description = "an alert id"), ("limit" = Option<i64>, Query, description = "1 to 1000, default 200")), responses((status = 200, body = Vec<DeliveryView>), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody)), security(("bearer" = []), ("session" = [])))]
async fn list_deliveries(
    caller: Caller,
    State(context): State<ApiContext>,
    Query(query): Query<HashMap<String, String>>,
) -> Result<Json<Vec<DeliveryView>>, ApiError> {
    caller.require(Role::Analyst)?;
    let params = Params::new(&query, &["state", "channel", "alert", "limit"])?;
    let state = params.text("state");
    if let Some(state) = &state
        && !["pending", "sending", "delivered", "dead"].contains(&state.as_str())
    {
        return Err(ApiError::bad("state", "state is pending, sending, delivered or dead"));
    }
    let channel_id = params
        .text("channel")
        .map(|c| c.parse::<i64>().map_err(|_| ApiError::bad("channel", "a channel id is an integer")))
        .transpose()?;
    let alert_id = params.text("alert");
    if let Some(alert) = &alert_id
        && !crate::model::is_alert_id(alert)
    {
        return Err(ApiError::bad("alert", "an alert id is a UUID"));
    }
    let limit = params
        .text("limit")
        .map(|l| {
            l.parse::<i64>()
                .ok()
                .filter(|l| (1..=1000).contains(l))
                .ok_or_else(|| ApiError::bad("limit", "limit is 1 to 1000"))
        })
        .transpose()?
        .unwrap_or(200);
    let filter = DeliveryFilter { state, channel_id, alert_id, limit };
    Ok(Json(outbox::list(&context.db, &filter).await.map_err(|e| ApiError::Internal(e.into()))?))
}

/// How many deliveries are in each state (dead: gave up).
#[utoipa::path(get, path = "/api/v1/deliveries/counts", tag = "notifications", responses((status = 200, description = "pending, sending, delivered and dead counts", body = Object), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody)), security(("bearer" = []), ("session" = [])))]
async fn delivery_counts(caller: Caller, State(context): State<ApiContext>) -> Result<Json<Value>, ApiError> {
    caller.require(Role::Analyst)?;
    let counts = outbox::counts(&context.db).await.map_err(|e| ApiError::Internal(e.into()))?;
    let mut answer = json!({"pending": 0, "sending": 0, "delivered": 0, "dead": 0});
    for (state, count) in counts {
        answer[state] = json!(count);
    }
    Ok(Json(answer))
}

#[utoipa::path(post, path = "/api/v1/deliveries/{id}/retry", tag = "notifications", params(("id" = i64, Path)), responses((status = 200, body = Object), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, description = "No dead delivery with this id", body = ErrorBody), (status = 409, description = "A later status change was already delivered", body = ErrorBody)), security(("bearer" = []), ("session" = [])))]
async fn retry_delivery(
    caller: Caller,
    State(context): State<ApiContext>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    caller.require(Role::Analyst)?;
    let id = path_id(&id)?;
    match outbox::retry(&context.db, id).await.map_err(|e| ApiError::Internal(e.into()))? {
        outbox::Retry::Retrying => {}
        outbox::Retry::NotDead => return Err(ApiError::NotFound),
        outbox::Retry::Superseded => {
            return Err(ApiError::Conflict(
                "a later status change of this alert was already delivered to this channel; sending this now would reopen it"
                    .into(),
            ));
        }
    }
    audit::record(&context.db, &caller.actor(), "delivery.retry", Some(&id.to_string()), None, json!({})).await;
    Ok(Json(json!({"retrying": id})))
}
