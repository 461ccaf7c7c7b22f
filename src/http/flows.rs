//! Network investigation: `GET /api/v1/flows/top` ranks who talked to whom by bytes, with the
//! peer's country, filtered by time, account, interface, instance or address.

use std::collections::HashMap;

use axum::Json;
use axum::Router;
use axum::extract::{Query, State};
use axum::routing::get;
use chrono::{DateTime, Utc};
use serde::Serialize;

use super::ApiContext;
use super::error::{ApiError, ErrorBody};
use super::extractor::Caller;
use super::params::Params;

const FILTERS: &[&str] = &["account", "interface", "instance", "address", "since", "until", "limit"];

pub fn router() -> Router<ApiContext> {
    Router::new().route("/api/v1/flows/top", get(top)).route("/api/v1/flows/timeline", get(timeline))
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Talker {
    pub account_id: String,
    pub source: String,
    pub destination: String,
    pub destination_country: Option<String>,
    pub bytes: i64,
    pub packets: i64,
    pub records: i64,
    pub first_seen: DateTime<Utc>,
    pub last_seen: DateTime<Utc>,
}

#[utoipa::path(get, path = "/api/v1/flows/top", tag = "network", params(("account" = Option<String>, Query, description = ""), ("interface" = Option<String>, Query, description = ""), ("instance" = Option<String>, Query, description = ""), ("address" = Option<String>, Query, description = "an IP address"), ("since" = Option<String>, Query, description = ""), ("until" = Option<String>, Query, description = ""), ("limit" = Option<i64>, Query, description = "")), responses((status = 200, description = "OK", body = Vec<Talker>), (status = 400, description = "A bad parameter; `field` names it", body = ErrorBody), (status = 401, description = "No valid token or session", body = ErrorBody)), security(("bearer" = []), ("session" = [])))]
async fn top(
    _caller: Caller,
    State(context): State<ApiContext>,
    Query(query): Query<HashMap<String, String>>,
) -> Result<Json<Vec<Talker>>, ApiError> {
    let params = Params::new(&query, FILTERS)?;
    let text = |name: &str| params.text(name);
    let limit = params.limit(20, 1000)?;
    let address = text("address");
    if let Some(a) = &address {
        a.parse::<std::net::IpAddr>().map_err(|_| ApiError::bad("address", "address must be an IP address"))?;
    }
    let talkers = sqlx::query_as!(
        Talker,
        r#"SELECT account_id, host(srcaddr) AS "source!", host(dstaddr) AS "destination!",
                  max(dst_country) AS destination_country,
                  coalesce(sum(bytes), 0)::bigint AS "bytes!", coalesce(sum(packets), 0)::bigint AS "packets!",
                  count(*) AS "records!", min(bucket_time) AS "first_seen!", max(bucket_time) AS "last_seen!"
           FROM flow_records
           WHERE srcaddr IS NOT NULL AND dstaddr IS NOT NULL
             AND ($1::text IS NULL OR account_id = $1)
             AND ($2::text IS NULL OR interface_id = $2)
             AND ($3::text IS NULL OR instance_id = $3)
             AND ($4::text IS NULL OR srcaddr = $4::text::inet OR dstaddr = $4::text::inet)
             AND ($5::timestamptz IS NULL OR bucket_time >= $5)
             AND ($6::timestamptz IS NULL OR bucket_time < $6)
           GROUP BY account_id, srcaddr, dstaddr
           ORDER BY 5 DESC, 2, 3
           LIMIT $7"#,
        text("account"),
        text("interface"),
        text("instance"),
        address,
        params.time("since")?,
        params.time("until")?,
        limit,
    )
    .fetch_all(&context.db)
    .await?;
    Ok(Json(talkers))
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct HourlyBytes {
    pub hour: DateTime<Utc>,
    pub bytes: i64,
    pub records: i64,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct CountryBytes {
    pub country: Option<String>,
    pub bytes: i64,
}

/// Bytes sent to one destination country in one hour.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct CountryHour {
    pub hour: DateTime<Utc>,
    pub country: Option<String>,
    pub bytes: i64,
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
#[utoipa::path(get, path = "/api/v1/flows/timeline", tag = "network", params(("account" = Option<String>, Query, description = ""), ("interface" = Option<String>, Query, description = ""), ("instance" = Option<String>, Query, description = ""), ("address" = Option<String>, Query, description = ""), ("since" = Option<String>, Query, description = ""), ("until" = Option<String>, Query, description = "")), responses((status = 200, description = "OK", body = Timeline), (status = 400, description = "A bad parameter; `field` names it", body = ErrorBody), (status = 401, description = "No valid token or session", body = ErrorBody)), security(("bearer" = []), ("session" = [])))]
async fn timeline(
    _caller: Caller,
    State(context): State<ApiContext>,
    Query(query): Query<HashMap<String, String>>,
) -> Result<Json<Timeline>, ApiError> {
    let params = Params::new(&query, &["account", "interface", "instance", "address", "since", "until"])?;
    let address = params.text("address");
    if let Some(a) = &address {
        a.parse::<std::net::IpAddr>().map_err(|_| ApiError::bad("address", "address must be an IP address"))?;
    }
    let (since, until) = (params.time("since")?, params.time("until")?);
    let hours = sqlx::query_as!(
        HourlyBytes,
        r#"SELECT date_trunc('hour', bucket_time) AS "hour!", coalesce(sum(bytes), 0)::bigint AS "bytes!",
                  count(*) AS "records!"
           FROM flow_records
           WHERE ($1::text IS NULL OR account_id = $1)
             AND ($2::text IS NULL OR interface_id = $2)
             AND ($3::text IS NULL OR instance_id = $3)
             AND ($4::text IS NULL OR srcaddr = $4::text::inet OR dstaddr = $4::text::inet)
             AND ($5::timestamptz IS NULL OR bucket_time >= $5)
             AND ($6::timestamptz IS NULL OR bucket_time < $6)
           GROUP BY 1 ORDER BY 1 DESC
           LIMIT 5000"#,
        params.text("account"),
        params.text("interface"),
        params.text("instance"),
        address,
        since,
        until,
    )
    .fetch_all(&context.db)
    .await?;
    let destinations = sqlx::query_as!(
        CountryBytes,
        r#"SELECT dst_country AS country, coalesce(sum(bytes), 0)::bigint AS "bytes!"
           FROM flow_records
           WHERE ($1::text IS NULL OR account_id = $1)
             AND ($2::text IS NULL OR interface_id = $2)
             AND ($3::text IS NULL OR instance_id = $3)
             AND ($4::text IS NULL OR srcaddr = $4::text::inet OR dstaddr = $4::text::inet)
             AND ($5::timestamptz IS NULL OR bucket_time >= $5)
             AND ($6::timestamptz IS NULL OR bucket_time < $6)
           GROUP BY 1 ORDER BY 2 DESC
           LIMIT 50"#,
        params.text("account"),
        params.text("interface"),
        params.text("instance"),
        address,
        since,
        until,
    )
    .fetch_all(&context.db)
    .await?;
    let country_hours = sqlx::query_as!(
        CountryHour,
        r#"SELECT date_trunc('hour', bucket_time) AS "hour!", dst_country AS country,
                  coalesce(sum(bytes), 0)::bigint AS "bytes!"
           FROM flow_records
           WHERE dst_country IS NOT NULL
             AND ($1::text IS NULL OR account_id = $1)
             AND ($2::text IS NULL OR interface_id = $2)
             AND ($3::text IS NULL OR instance_id = $3)
             AND ($4::text IS NULL OR srcaddr = $4::text::inet OR dstaddr = $4::text::inet)
             AND ($5::timestamptz IS NULL OR bucket_time >= $5)
             AND ($6::timestamptz IS NULL OR bucket_time < $6)
           GROUP BY 1, 2 ORDER BY 1 DESC, 2
           LIMIT 20000"#,
        params.text("account"),
        params.text("interface"),
        params.text("instance"),
        address,
        since,
        until,
    )
    .fetch_all(&context.db)
    .await?;
    // The newest hours were kept when the limits cut; the chart reads oldest first.
    let (mut hours, mut country_hours) = (hours, country_hours);
    hours.reverse();
    country_hours.reverse();
    Ok(Json(Timeline { hours, country_hours, destinations }))
}
