//! Figures for the dashboard: the overview (open alerts by severity, events per hour, console
//! logins by country) and where a principal usually logs in from, for the alert map.

use axum::Json;
use axum::Router;
use axum::extract::State;
use axum::routing::get;
use chrono::{DateTime, Duration, Utc};
use serde::{Deserialize, Serialize};

use super::ApiContext;
use super::error::{ApiError, ErrorBody};
use super::extractor::Caller;
use super::query::{TypedQuery, time};
use crate::geo::centroids::country_centroid;

pub fn router() -> Router<ApiContext> {
    Router::new()
        .route("/api/v1/stats/overview", get(overview))
        .route("/api/v1/stats/login-locations", get(login_locations))
        .route("/api/v1/detection/health", get(detection_health))
}

/// The longest period the overview covers.
const MAX_OVERVIEW_DAYS: i64 = 92;

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct SeverityCount {
    pub severity: String,
    pub count: i64,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct HourCount {
    pub hour: DateTime<Utc>,
    pub events: i64,
    pub failed: i64,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct CountryLogins {
    pub country: Option<String>,
    pub logins: i64,
    pub failed: i64,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Overview {
    /// The period shown: the 7 days up to the newest event, unless `since`/`until` say otherwise
    /// (an imported incident is shown as it was, not as an empty "last 7 days").
    pub since: DateTime<Utc>,
    pub until: DateTime<Utc>,
    pub open_alerts: Vec<SeverityCount>,
    pub events_per_hour: Vec<HourCount>,
    pub logins_by_country: Vec<CountryLogins>,
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
struct OverviewQuery {
    /// The start of the period (RFC 3339); 7 days before `until` when absent. At most 92 days
    /// before `until`.
    #[serde(default, deserialize_with = "time")]
    since: Option<DateTime<Utc>>,
    /// The end of the period (RFC 3339); just after the newest event when absent.
    #[serde(default, deserialize_with = "time")]
    until: Option<DateTime<Utc>>,
}

#[utoipa::path(get, path = "/api/v1/stats/overview", tag = "overview", params(OverviewQuery), responses((status = 200, description = "OK", body = Overview), (status = 400, description = "A bad parameter; `field` names it", body = ErrorBody), (status = 401, description = "No valid token or session", body = ErrorBody)), security(("bearer" = []), ("session" = [])))]
async fn overview(
    _caller: Caller,
    State(context): State<ApiContext>,
    TypedQuery(query): TypedQuery<OverviewQuery>,
) -> Result<Json<Overview>, ApiError> {
    let newest = sqlx::query_scalar!("SELECT max(event_time) FROM cloudtrail_events").fetch_one(&context.db).await?;
    let until = query.until.or(newest.map(|t| t + Duration::seconds(1))).unwrap_or_else(Utc::now);
    let since = match query.since {
        Some(since) => since,
        None => until.checked_sub_signed(Duration::days(7)).unwrap_or(until),
    };
    if since >= until {
        return Err(ApiError::bad("since", "since must be before until"));
    }
    // One bar per hour, empty hours included: the period is bounded.
    if until - since > Duration::days(MAX_OVERVIEW_DAYS) {
        return Err(ApiError::bad("since", format!("the period is at most {MAX_OVERVIEW_DAYS} days")));
    }
    let open_alerts = sqlx::query_as!(
        SeverityCount,
        r#"SELECT severity::text AS "severity!", count(*) AS "count!" FROM alerts
           WHERE status = 'open' OR (status = 'snoozed' AND snoozed_until <= now())
           GROUP BY severity ORDER BY severity DESC"#
    )
    .fetch_all(&context.db)
    .await?;
    // Every hour of the period, those without events as zero: a gap (logging stopped) shows.
    let events_per_hour = sqlx::query_as!(
        HourCount,
        r#"WITH counted AS (
               SELECT date_trunc('hour', event_time) AS hour, count(*) AS events,
                      count(*) FILTER (WHERE error_code IS NOT NULL OR error_message IS NOT NULL
                                       OR (event_name = 'ConsoleLogin'
                                           AND raw->'responseElements'->>'ConsoleLogin' = 'Failure')) AS failed
               FROM cloudtrail_events WHERE event_time >= $1 AND event_time < $2
               GROUP BY 1)
           SELECT h.hour AS "hour!", coalesce(c.events, 0) AS "events!", coalesce(c.failed, 0) AS "failed!"
           FROM generate_series(date_trunc('hour', $1::timestamptz), $2::timestamptz - interval '1 microsecond',
                                interval '1 hour') AS h(hour)
           LEFT JOIN counted c ON c.hour = h.hour
           ORDER BY 1"#,
        since,
        until
    )
    .fetch_all(&context.db)
    .await?;
    let logins_by_country = sqlx::query_as!(
        CountryLogins,
        r#"SELECT geo_country AS country, count(*) AS "logins!",
                  count(*) FILTER (WHERE error_code IS NOT NULL OR error_message IS NOT NULL
                                   OR raw->'responseElements'->>'ConsoleLogin' = 'Failure') AS "failed!"
           FROM cloudtrail_events
           WHERE lower(event_name) = 'consolelogin' AND event_name = 'ConsoleLogin' AND event_time >= $1 AND event_time < $2
           GROUP BY 1 ORDER BY 2 DESC LIMIT 50"#,
        since,
        until
    )
    .fetch_all(&context.db)
    .await?;
    Ok(Json(Overview { since, until, open_alerts, events_per_hour, logins_by_country }))
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct LoginLocation {
    pub country: Option<String>,
    pub city: Option<String>,
    /// The city's coordinates, or the country's centroid when only the country is known.
    pub latitude: Option<f64>,
    pub longitude: Option<f64>,
    pub logins: i64,
    pub failed: i64,
    pub first_seen: DateTime<Utc>,
    pub last_seen: DateTime<Utc>,
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
struct LoginLocationQuery {
    /// An ARN or a user name.
    principal: String,
    /// Only this account (12 digits).
    account: Option<String>,
    /// From this time on (RFC 3339).
    #[serde(default, deserialize_with = "time")]
    since: Option<DateTime<Utc>>,
    /// Before this time (RFC 3339).
    #[serde(default, deserialize_with = "time")]
    until: Option<DateTime<Utc>>,
}

/// Where a principal (ARN or user name) has logged in from to the console.
#[utoipa::path(get, path = "/api/v1/stats/login-locations", tag = "overview", params(LoginLocationQuery), responses((status = 200, description = "OK", body = Vec<LoginLocation>), (status = 400, description = "A bad parameter; `field` names it", body = ErrorBody), (status = 401, description = "No valid token or session", body = ErrorBody)), security(("bearer" = []), ("session" = [])))]
async fn login_locations(
    _caller: Caller,
    State(context): State<ApiContext>,
    TypedQuery(query): TypedQuery<LoginLocationQuery>,
) -> Result<Json<Vec<LoginLocation>>, ApiError> {
    let mut rows = sqlx::query_as!(
        LoginLocation,
        r#"SELECT geo_country AS country, geo_city AS city, avg(geo_latitude) AS latitude, avg(geo_longitude) AS longitude,
                  count(*) AS "logins!",
                  count(*) FILTER (WHERE error_code IS NOT NULL OR error_message IS NOT NULL) AS "failed!",
                  min(event_time) AS "first_seen!", max(event_time) AS "last_seen!"
           FROM cloudtrail_events
           WHERE lower(event_name) = 'consolelogin' AND event_name = 'ConsoleLogin' AND (principal_arn = $1 OR user_name = $1)
             AND ($2::text IS NULL OR account_id = $2)
             AND ($3::timestamptz IS NULL OR event_time >= $3)
             AND ($4::timestamptz IS NULL OR event_time < $4)
           GROUP BY 1, 2 ORDER BY 5 DESC LIMIT 200"#,
        query.principal,
        query.account,
        query.since,
        query.until
    )
    .fetch_all(&context.db)
    .await?;
    for row in &mut rows {
        if row.latitude.is_none()
            && let Some((lat, lon)) = row.country.as_deref().and_then(country_centroid)
        {
            (row.latitude, row.longitude) = (Some(lat), Some(lon));
        }
    }
    Ok(Json(rows))
}

/// Whether detection after imports and polls keeps up: when a run last succeeded, and since when
/// and how often runs have failed, with the last error. While it fails, events are stored but
/// raise no alert.
#[utoipa::path(get, path = "/api/v1/detection/health", tag = "stats", responses((status = 200, description = "OK", body = crate::detect::health::DetectionHealth), (status = 401, description = "No valid token or session", body = ErrorBody)), security(("bearer" = []), ("session" = [])))]
async fn detection_health(
    _caller: Caller,
    State(context): State<ApiContext>,
) -> Result<Json<crate::detect::health::DetectionHealth>, ApiError> {
    Ok(Json(crate::detect::health::read(&context.db).await?))
}
