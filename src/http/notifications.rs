//! Alert routing over HTTP: channels (admins change them; secrets go in and never come out),
//! routes, the test button, and deliveries with their dead letters (analysts retry them).

use std::collections::BTreeMap;

use axum::Json;
use axum::Router;
use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::{get, post, put};
use serde::Deserialize;
use serde_json::{Value, json};

use super::ApiContext;
use super::error::{ApiError, ErrorBody};
use super::extractor::{Caller, RequireRole};
use super::query::{Cursor, CursorKey, Limit, TypedQuery, page};
use crate::auth::{Role, audit};
use crate::notify::channel_schema::{self, ChannelSchema};
use crate::notify::channels::{self, ChannelError, ChannelKind, ChannelSpec, ChannelUpdate, ChannelView, SecretInput};
use crate::notify::outbox::{self, DeliveryFilter, DeliveryView};
use crate::notify::routes::{self, RouteSpec, RouteView};
use crate::notify::secrets::Secret;
use crate::notify::sender::Attempt;

pub fn router() -> Router<ApiContext> {
    Router::new()
        .route("/api/v1/channels", get(list_channels).post(create_channel))
        // Static, so it is never taken for a channel id.
        .route("/api/v1/channels/schema", get(channel_form))
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
            // Field names are dynamic (`secrets.webhook_url`): `field` is the request member they
            // are in, and the text names them in full.
            ApiError::bad(request_member(&field), format!("{field}: {message}"))
        }
        ChannelError::NotFound(_) => ApiError::NotFound,
        ChannelError::Conflict(message) => ApiError::Conflict(message),
        // Two requests racing for one name: the loser hears what a lone request would have.
        ChannelError::Db(sqlx::Error::Database(error)) if error.code().as_deref() == Some("23505") => {
            ApiError::Conflict("a channel or route with this name exists".into())
        }
        ChannelError::Db(error) => ApiError::from(error),
        other => ApiError::Internal(other.into()),
    }
}

/// The member of a channel or route request that a dynamic field name (`settings.base_url`)
/// is in; `body` for anything else.
fn request_member(field: &str) -> &'static str {
    const MEMBERS: [&str; 12] = [
        "name",
        "kind",
        "settings",
        "secrets",
        "enabled",
        "channel",
        "policies",
        "accounts",
        "tags",
        "min_severity",
        "digest_minutes",
        "status_updates",
    ];
    let top = field.split('.').next().unwrap_or_default();
    MEMBERS.into_iter().find(|member| *member == top).unwrap_or("body")
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

/// The form of each channel kind: its settings and secrets, how to ask for each, their choices,
/// defaults and hints (the dashboard builds its channel form from it).
#[utoipa::path(get, path = "/api/v1/channels/schema", tag = "notifications", responses((status = 200, body = ChannelSchema), (status = 401, body = ErrorBody)), security(("bearer" = []), ("session" = [])))]
async fn channel_form(_caller: Caller) -> Json<ChannelSchema> {
    Json(channel_schema::schema())
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

/// Where a delivery is.
#[derive(Debug, Clone, Copy, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
enum DeliveryState {
    Pending,
    Sending,
    Delivered,
    /// Gave up.
    Dead,
}

impl DeliveryState {
    fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Sending => "sending",
            Self::Delivered => "delivered",
            Self::Dead => "dead",
        }
    }
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
struct DeliveryQuery {
    /// Only deliveries in this state.
    #[param(inline)]
    state: Option<DeliveryState>,
    /// Only deliveries to this channel (its id).
    channel: Option<i64>,
    /// Only deliveries of this alert (its id, a UUID).
    #[serde(default, deserialize_with = "alert_id")]
    alert: Option<String>,
    /// Deliveries per page, newest first.
    #[serde(default)]
    #[param(inline)]
    limit: DeliveryLimit,
    /// `next_cursor` of the previous page.
    #[serde(default)]
    #[param(value_type = Option<String>)]
    cursor: Option<Cursor<DeliveryKey>>,
}

type DeliveryLimit = Limit<1000, 200>;

/// A delivery's position: its id (newest first).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, Deserialize)]
struct DeliveryKey(i64);

impl CursorKey for DeliveryKey {
    const KIND: &'static str = "deliveries";
}

/// A page of deliveries, newest first.
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub struct DeliveryPage {
    pub deliveries: Vec<DeliveryView>,
    /// The next page's `cursor`; absent on the last page.
    pub next_cursor: Option<String>,
}

fn alert_id<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<Option<String>, D::Error> {
    let id = String::deserialize(deserializer)?;
    if !crate::model::is_alert_id(&id) {
        return Err(serde::de::Error::custom("an alert id is a UUID"));
    }
    Ok(Some(id))
}

/// Deliveries, newest first; `state=dead` lists what gave up.
#[utoipa::path(get, path = "/api/v1/deliveries", tag = "notifications", params(DeliveryQuery), responses((status = 200, body = DeliveryPage), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody)), security(("bearer" = []), ("session" = [])))]
async fn list_deliveries(
    caller: Caller,
    State(context): State<ApiContext>,
    query: Result<TypedQuery<DeliveryQuery>, ApiError>,
) -> Result<Json<DeliveryPage>, ApiError> {
    caller.require(Role::Analyst)?;
    let TypedQuery(query) = query?;
    let filter = DeliveryFilter {
        state: query.state.map(|s| s.as_str().to_owned()),
        channel_id: query.channel,
        alert_id: query.alert,
        limit: query.limit.0 + 1,
    };
    let before = query.cursor.map(|c| c.0.0);
    let rows = outbox::list_before(&context.db, &filter, before).await?;
    let (deliveries, next_cursor) = page(rows, query.limit.0, |d: &DeliveryView| DeliveryKey(d.id));
    Ok(Json(DeliveryPage { deliveries, next_cursor }))
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
