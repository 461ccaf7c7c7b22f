//! Network investigation: `GET /api/v1/flows/top` ranks who talked to whom by bytes, with the
//! peer's country, and `GET /api/v1/flows/timeline` shows bytes by hour and by destination
//! country, both filtered by time, account, interface, instance or address. The queries are
//! [`crate::search::flows`].

use std::net::IpAddr;

use axum::Json;
use axum::Router;
use axum::extract::State;
use axum::routing::get;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::ApiContext;
use super::error::{ApiError, ErrorBody};
use super::extractor::Caller;
use super::query::{Limit, TypedQuery, checked, time};
use crate::search::flows::{self, CountryBytes, CountryHour, FlowFilter, FlowRecordView, HourlyBytes, Talker};

/// Pairs of addresses `top` ranks.
type TopLimit = Limit<1000, 20>;

pub fn router() -> Router<ApiContext> {
    Router::new()
        .route("/api/v1/flows/top", get(top))
        .route("/api/v1/flows/timeline", get(timeline))
        .route("/api/v1/flows/records", get(records))
}

/// Flow records `records` lists.
type RecordLimit = Limit<1000, 100>;

/// The filters of `GET /api/v1/flows/records`: those of `top`.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
struct RecordQuery {
    /// A 12-digit account id.
    account: Option<String>,
    /// A network interface id (`eni-…`).
    interface: Option<String>,
    /// An instance id (`i-…`).
    instance: Option<String>,
    /// An IP address, at either end of the flow.
    #[serde(default, deserialize_with = "checked::<_, IpAddr>")]
    address: Option<String>,
    /// From this time on (RFC 3339).
    #[serde(default, deserialize_with = "time")]
    since: Option<DateTime<Utc>>,
    /// Before this time (RFC 3339).
    #[serde(default, deserialize_with = "time")]
    until: Option<DateTime<Utc>>,
    /// How many records, newest first.
    #[serde(default)]
    #[param(inline)]
    limit: RecordLimit,
}

/// The newest flow records: both ends with their ports and countries, protocol, ACCEPT or
/// REJECT, bytes.
#[utoipa::path(get, path = "/api/v1/flows/records", tag = "network", params(RecordQuery), responses((status = 200, description = "OK", body = Vec<FlowRecordView>), (status = 400, description = "A bad parameter; `field` names it", body = ErrorBody), (status = 401, description = "No valid token or session", body = ErrorBody)), security(("bearer" = []), ("session" = [])))]
async fn records(
    _caller: Caller,
    State(context): State<ApiContext>,
    TypedQuery(query): TypedQuery<RecordQuery>,
) -> Result<Json<Vec<FlowRecordView>>, ApiError> {
    let RecordQuery { account, interface, instance, address, since, until, limit } = query;
    let filter = FlowFilter { account, interface, instance, address, since, until };
    Ok(Json(flows::records(&context.db, &filter, limit.0).await?))
}

/// The filters of `GET /api/v1/flows/top`; they combine (AND).
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
struct TopQuery {
    /// A 12-digit account id.
    account: Option<String>,
    /// A network interface id (`eni-…`).
    interface: Option<String>,
    /// An instance id (`i-…`).
    instance: Option<String>,
    /// An IP address, at either end of the flow.
    #[serde(default, deserialize_with = "checked::<_, IpAddr>")]
    address: Option<String>,
    /// From this time on (RFC 3339).
    #[serde(default, deserialize_with = "time")]
    since: Option<DateTime<Utc>>,
    /// Before this time (RFC 3339).
    #[serde(default, deserialize_with = "time")]
    until: Option<DateTime<Utc>>,
    /// How many pairs, most bytes first.
    #[serde(default)]
    #[param(inline)]
    limit: TopLimit,
}

/// The filters of `GET /api/v1/flows/timeline`: those of `top`, without its limit.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
struct TimelineQuery {
    /// A 12-digit account id.
    account: Option<String>,
    /// A network interface id (`eni-…`).
    interface: Option<String>,
    /// An instance id (`i-…`).
    instance: Option<String>,
    /// An IP address, at either end of the flow.
    #[serde(default, deserialize_with = "checked::<_, IpAddr>")]
    address: Option<String>,
    /// From this time on (RFC 3339).
    #[serde(default, deserialize_with = "time")]
    since: Option<DateTime<Utc>>,
    /// Before this time (RFC 3339).
    #[serde(default, deserialize_with = "time")]
    until: Option<DateTime<Utc>>,
}

impl From<TimelineQuery> for FlowFilter {
    fn from(query: TimelineQuery) -> Self {
        let TimelineQuery { account, interface, instance, address, since, until } = query;
        Self { account, interface, instance, address, since, until }
    }
}

#[utoipa::path(get, path = "/api/v1/flows/top", tag = "network", params(TopQuery), responses((status = 200, description = "OK", body = Vec<Talker>), (status = 400, description = "A bad parameter; `field` names it", body = ErrorBody), (status = 401, description = "No valid token or session", body = ErrorBody)), security(("bearer" = []), ("session" = [])))]
async fn top(
    _caller: Caller,
    State(context): State<ApiContext>,
    TypedQuery(query): TypedQuery<TopQuery>,
) -> Result<Json<Vec<Talker>>, ApiError> {
    let TopQuery { account, interface, instance, address, since, until, limit } = query;
    let filter = FlowFilter { account, interface, instance, address, since, until };
    Ok(Json(flows::top_talkers(&context.db, &filter, limit.0).await?))
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Timeline {
    pub hours: Vec<HourlyBytes>,
    /// Bytes per destination country and hour (public peers only), for a chart over time.
    pub country_hours: Vec<CountryHour>,
    /// Bytes sent to each destination country (private and unknown peers under `null`).
    pub destinations: Vec<CountryBytes>,
}

/// Bytes by hour, and by destination country, for the same filters as `top`.
#[utoipa::path(get, path = "/api/v1/flows/timeline", tag = "network", params(TimelineQuery), responses((status = 200, description = "OK", body = Timeline), (status = 400, description = "A bad parameter; `field` names it", body = ErrorBody), (status = 401, description = "No valid token or session", body = ErrorBody)), security(("bearer" = []), ("session" = [])))]
async fn timeline(
    _caller: Caller,
    State(context): State<ApiContext>,
    TypedQuery(query): TypedQuery<TimelineQuery>,
) -> Result<Json<Timeline>, ApiError> {
    let filter = FlowFilter::from(query);
    let mut hours = flows::hourly_bytes(&context.db, &filter).await?;
    let destinations = flows::destination_bytes(&context.db, &filter).await?;
    let mut country_hours = flows::country_hours(&context.db, &filter).await?;
    // The newest hours were kept when the limits cut; the chart reads oldest first.
    hours.reverse();
    country_hours.reverse();
    Ok(Json(Timeline { hours, country_hours, destinations }))
}
