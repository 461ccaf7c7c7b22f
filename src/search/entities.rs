//! What the investigation pages show of one entity: an event with its raw record and the alerts
//! it is evidence of, a principal's activity (first and last seen, logins, where from, alerts)
//! and an address's (where it is, who used it, what it sent, alerts).

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::PgPool;

use super::principal_columns;

/// An alert as the entity pages list it.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct AlertRef {
    pub account_id: String,
    pub alert_id: String,
    pub policy_id: String,
    pub title: String,
    pub severity: String,
    pub status: String,
    pub first_seen: DateTime<Utc>,
    pub last_seen: DateTime<Utc>,
}

/// One CloudTrail event, every stored field, its raw record and the alerts it is evidence of.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct EventDetail {
    pub account_id: String,
    pub event_id: String,
    pub event_time: DateTime<Utc>,
    pub region: Option<String>,
    pub event_source: Option<String>,
    pub event_name: Option<String>,
    pub event_type: Option<String>,
    pub principal_arn: Option<String>,
    pub principal_type: Option<String>,
    pub user_name: Option<String>,
    pub access_key_id: Option<String>,
    pub source_ip: Option<String>,
    pub user_agent: Option<String>,
    pub error_code: Option<String>,
    pub error_message: Option<String>,
    pub read_only: Option<bool>,
    pub resource_ids: Vec<String>,
    pub country: Option<String>,
    pub city: Option<String>,
    pub asn: Option<i64>,
    pub as_org: Option<String>,
    /// Tor exit, VPN, hosting provider, in AWS's published ranges: as known when stored
    /// (`null`: nothing loaded could say).
    pub is_tor: Option<bool>,
    pub is_vpn: Option<bool>,
    pub is_hosting: Option<bool>,
    pub is_aws: Option<bool>,
    /// The event as CloudTrail wrote it.
    #[schema(value_type = Object)]
    pub raw: serde_json::Value,
    pub ingested_at: DateTime<Utc>,
    /// Read from the open lake (an archived month), not from the hot tables.
    pub archived: bool,
    pub alerts: Vec<AlertRef>,
}

/// The event with this id (in `account` when given; the newest when ids repeat across accounts),
/// hot or archived and loaded from the lake (the caller loads the lake's day first).
pub async fn event(db: &PgPool, event_id: &str, account: Option<&str>) -> Result<Option<EventDetail>, sqlx::Error> {
    let found = sqlx::query!(
        r#"SELECT account_id AS "account_id!", event_id AS "event_id!", event_time AS "event_time!", region,
                  event_source, event_name, event_type, principal_arn, principal_type, user_name, access_key_id,
                  source_ip_text, user_agent, error_code, error_message, read_only, resource_ids AS "resource_ids!",
                  geo_country, geo_city, geo_asn, geo_as_org, raw AS "raw!", ingested_at AS "ingested_at!",
                  source_is_tor, source_is_vpn, source_is_hosting, source_is_aws, archived AS "archived!"
           FROM audit_events WHERE event_id = $1 AND ($2::text IS NULL OR account_id = $2)
           ORDER BY event_time DESC LIMIT 1"#,
        event_id,
        account,
    )
    .fetch_optional(db)
    .await?;
    let Some(r) = found else { return Ok(None) };
    let alerts = sqlx::query_as!(
        AlertRef,
        r#"SELECT a.account_id, a.alert_id::text AS "alert_id!", a.policy_id, a.title, a.severity::text AS "severity!",
                  a.status::text AS "status!", a.first_seen, a.last_seen
           FROM alert_evidence e JOIN alerts a USING (account_id, alert_id)
           WHERE e.account_id = $1 AND e.event_id = $2
           ORDER BY a.last_seen DESC LIMIT 100"#,
        r.account_id,
        r.event_id,
    )
    .fetch_all(db)
    .await?;
    Ok(Some(EventDetail {
        account_id: r.account_id,
        event_id: r.event_id,
        event_time: r.event_time,
        region: r.region,
        event_source: r.event_source,
        event_name: r.event_name,
        event_type: r.event_type,
        principal_arn: r.principal_arn,
        principal_type: r.principal_type,
        user_name: r.user_name,
        access_key_id: r.access_key_id,
        source_ip: r.source_ip_text,
        user_agent: r.user_agent,
        error_code: r.error_code,
        error_message: r.error_message,
        read_only: r.read_only,
        resource_ids: r.resource_ids,
        country: r.geo_country,
        city: r.geo_city,
        asn: r.geo_asn,
        as_org: r.geo_as_org,
        is_tor: r.source_is_tor,
        is_vpn: r.source_is_vpn,
        is_hosting: r.source_is_hosting,
        is_aws: r.source_is_aws,
        raw: r.raw,
        ingested_at: r.ingested_at,
        archived: r.archived,
        alerts,
    }))
}

/// A count of events per value (a country, an address, a principal).
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ValueCount {
    pub value: Option<String>,
    pub events: i64,
}

/// A console login: when, from where, and whether it worked.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Login {
    pub account_id: String,
    pub event_id: String,
    pub event_time: DateTime<Utc>,
    pub principal: Option<String>,
    pub source_ip: Option<String>,
    pub country: Option<String>,
    pub city: Option<String>,
    /// `Success` or `Failure`, as CloudTrail says.
    pub outcome: Option<String>,
    pub mfa_used: Option<String>,
}

/// A principal's activity: when it was first and last seen, how much it did, from where, its
/// console logins and the alerts about it.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct PrincipalActivity {
    pub principal: String,
    /// The counts and lists cover [`ACTIVITY_WINDOW_DAYS`] up to the last event: from here to
    /// `last_seen` (none when no event names it).
    pub window_start: Option<DateTime<Utc>>,
    pub first_seen: Option<DateTime<Utc>>,
    pub last_seen: Option<DateTime<Utc>>,
    pub events: i64,
    pub failed: i64,
    /// The ARNs and user names seen for it.
    pub identities: Vec<String>,
    pub countries: Vec<ValueCount>,
    pub addresses: Vec<ValueCount>,
    pub logins: Vec<Login>,
    pub alerts: Vec<AlertRef>,
}

/// How far back from an entity's last event its page looks: a busy principal or address has
/// years of events, and the page must answer within the API's statement timeout. Relative to
/// the last event, not to now, so an incident imported long after it happened still shows.
pub const ACTIVITY_WINDOW_DAYS: i64 = 90;

/// The window ending at `last` (or an empty one at now when there is nothing).
fn window(last: Option<DateTime<Utc>>) -> (DateTime<Utc>, DateTime<Utc>) {
    let until = last.unwrap_or_else(Utc::now);
    (until - chrono::Duration::days(ACTIVITY_WINDOW_DAYS), until)
}

/// Everything the principal page shows of `principal` (an ARN or a user name, any case).
pub async fn principal(db: &PgPool, principal: &str) -> Result<PrincipalActivity, sqlx::Error> {
    let (arn, user) = principal_columns(principal);
    let last = sqlx::query_scalar!(
        r#"SELECT max(event_time) FROM cloudtrail_events
           WHERE ($1::text IS NULL OR lower(principal_arn) = $1) AND ($2::text IS NULL OR lower(user_name) = $2)"#,
        arn,
        user,
    )
    .fetch_one(db)
    .await?;
    let (since, until) = window(last);
    let totals = sqlx::query!(
        r#"SELECT min(event_time) AS first_seen, max(event_time) AS last_seen, count(*) AS "events!",
                  count(*) FILTER (WHERE error_code IS NOT NULL OR error_message IS NOT NULL) AS "failed!",
                  coalesce((array_agg(DISTINCT principal_arn) FILTER (WHERE principal_arn IS NOT NULL))[1:20], '{}') AS "arns!",
                  coalesce((array_agg(DISTINCT user_name) FILTER (WHERE user_name IS NOT NULL))[1:20], '{}') AS "users!"
           FROM cloudtrail_events
           WHERE ($1::text IS NULL OR lower(principal_arn) = $1) AND ($2::text IS NULL OR lower(user_name) = $2)
             AND event_time >= $3 AND event_time <= $4"#,
        arn,
        user,
        since,
        until,
    )
    .fetch_one(db)
    .await?;
    let countries = sqlx::query_as!(
        ValueCount,
        r#"SELECT geo_country AS value, count(*) AS "events!" FROM cloudtrail_events
           WHERE ($1::text IS NULL OR lower(principal_arn) = $1) AND ($2::text IS NULL OR lower(user_name) = $2)
             AND event_time >= $3 AND event_time <= $4
           GROUP BY 1 ORDER BY 2 DESC LIMIT 50"#,
        arn,
        user,
        since,
        until,
    )
    .fetch_all(db)
    .await?;
    let addresses = sqlx::query_as!(
        ValueCount,
        r#"SELECT source_ip_text AS value, count(*) AS "events!" FROM cloudtrail_events
           WHERE ($1::text IS NULL OR lower(principal_arn) = $1) AND ($2::text IS NULL OR lower(user_name) = $2)
             AND event_time >= $3 AND event_time <= $4
           GROUP BY 1 ORDER BY 2 DESC LIMIT 50"#,
        arn,
        user,
        since,
        until,
    )
    .fetch_all(db)
    .await?;
    let logins = principal_logins(db, (arn.as_deref(), user.as_deref()), (since, until)).await?;
    let mut identities = totals.arns;
    identities.extend(totals.users);
    let alerts = principal_alerts(db, &identities).await?;
    Ok(PrincipalActivity {
        principal: principal.to_owned(),
        window_start: last.map(|_| since),
        first_seen: totals.first_seen,
        last_seen: totals.last_seen,
        events: totals.events,
        failed: totals.failed,
        identities,
        countries,
        addresses,
        logins,
        alerts,
    })
}

/// The principal's latest console logins (200 at most) within the window, newest first.
async fn principal_logins(
    db: &PgPool,
    (arn, user): (Option<&str>, Option<&str>),
    (since, until): (DateTime<Utc>, DateTime<Utc>),
) -> Result<Vec<Login>, sqlx::Error> {
    sqlx::query_as!(
        Login,
        r#"SELECT account_id, event_id, event_time, coalesce(user_name, principal_arn) AS principal,
                  source_ip_text AS source_ip, geo_country AS country, geo_city AS city,
                  raw #>> '{responseElements,ConsoleLogin}' AS outcome, raw #>> '{additionalEventData,MFAUsed}' AS mfa_used
           FROM cloudtrail_events
           WHERE lower(event_name) = 'consolelogin' AND event_name = 'ConsoleLogin'
             AND ($1::text IS NULL OR lower(principal_arn) = $1) AND ($2::text IS NULL OR lower(user_name) = $2)
             AND event_time >= $3 AND event_time <= $4
           ORDER BY event_time DESC LIMIT 200"#,
        arn,
        user,
        since,
        until,
    )
    .fetch_all(db)
    .await
}

/// Alerts whose subject is one of these ARNs or user names (any case).
async fn principal_alerts(db: &PgPool, identities: &[String]) -> Result<Vec<AlertRef>, sqlx::Error> {
    let lower: Vec<String> = identities.iter().map(|i| i.to_lowercase()).collect();
    sqlx::query_as!(
        AlertRef,
        r#"SELECT account_id, alert_id::text AS "alert_id!", policy_id, title, severity::text AS "severity!",
                  status::text AS "status!", first_seen, last_seen
           FROM alerts WHERE lower(principal) = ANY($1)
           ORDER BY last_seen DESC LIMIT 200"#,
        &lower,
    )
    .fetch_all(db)
    .await
}

/// An address: where it is, when it was seen, who used it in CloudTrail, its flows, its alerts.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct AddressActivity {
    pub address: String,
    /// The counts and lists cover [`ACTIVITY_WINDOW_DAYS`] up to the last event or flow: from
    /// here to `last_seen` (none when nothing names it).
    pub window_start: Option<DateTime<Utc>>,
    pub country: Option<String>,
    pub city: Option<String>,
    pub asn: Option<i64>,
    pub as_org: Option<String>,
    /// Whether any event from it was stored as from a Tor exit, a VPN, a hosting provider.
    pub is_tor: Option<bool>,
    pub is_vpn: Option<bool>,
    pub is_hosting: Option<bool>,
    pub first_seen: Option<DateTime<Utc>>,
    pub last_seen: Option<DateTime<Utc>>,
    pub events: i64,
    pub failed: i64,
    /// Principals that called AWS from it, with their event counts.
    pub principals: Vec<ValueCount>,
    pub bytes_sent: i64,
    pub bytes_received: i64,
    pub flows: i64,
    pub alerts: Vec<AlertRef>,
}

/// When `address` was last seen in an event or a flow.
async fn last_seen_address(db: &PgPool, address: &str) -> Result<Option<DateTime<Utc>>, sqlx::Error> {
    let last = sqlx::query!(
        r#"SELECT (SELECT max(event_time) FROM cloudtrail_events WHERE source_ip = $1::text::inet) AS event,
                  (SELECT max(bucket_time) FROM flow_records WHERE srcaddr = $1::text::inet) AS sent,
                  (SELECT max(bucket_time) FROM flow_records WHERE dstaddr = $1::text::inet) AS received"#,
        address,
    )
    .fetch_one(db)
    .await?;
    Ok([last.event, last.sent, last.received].into_iter().flatten().max())
}

/// Everything the address page shows of `address` (an IP address, checked by the caller).
pub async fn address(db: &PgPool, address: &str) -> Result<AddressActivity, sqlx::Error> {
    let last = last_seen_address(db, address).await?;
    let (since, until) = window(last);
    let events = sqlx::query!(
        r#"SELECT min(event_time) AS first_seen, max(event_time) AS last_seen, count(*) AS "events!",
                  count(*) FILTER (WHERE error_code IS NOT NULL OR error_message IS NOT NULL) AS "failed!",
                  max(geo_country) AS country, max(geo_city) AS city, max(geo_asn) AS asn, max(geo_as_org) AS as_org,
                  bool_or(source_is_tor) AS is_tor, bool_or(source_is_vpn) AS is_vpn, bool_or(source_is_hosting) AS is_hosting
           FROM cloudtrail_events WHERE source_ip = $1::text::inet AND event_time >= $2 AND event_time <= $3"#,
        address,
        since,
        until,
    )
    .fetch_one(db)
    .await?;
    let principals = sqlx::query_as!(
        ValueCount,
        r#"SELECT coalesce(user_name, principal_arn) AS value, count(*) AS "events!" FROM cloudtrail_events
           WHERE source_ip = $1::text::inet AND event_time >= $2 AND event_time <= $3
           GROUP BY 1 ORDER BY 2 DESC LIMIT 50"#,
        address,
        since,
        until,
    )
    .fetch_all(db)
    .await?;
    let flows = sqlx::query!(
        r#"SELECT coalesce(sum(bytes) FILTER (WHERE srcaddr = $1::text::inet), 0)::bigint AS "sent!",
                  coalesce(sum(bytes) FILTER (WHERE dstaddr = $1::text::inet), 0)::bigint AS "received!",
                  count(*) AS "records!", min(bucket_time) AS first_seen, max(bucket_time) AS last_seen,
                  max(CASE WHEN srcaddr = $1::text::inet THEN src_country ELSE dst_country END) AS country
           FROM flow_records
           WHERE (srcaddr = $1::text::inet OR dstaddr = $1::text::inet) AND bucket_time >= $2 AND bucket_time <= $3"#,
        address,
        since,
        until,
    )
    .fetch_one(db)
    .await?;
    let alerts = sqlx::query_as!(
        AlertRef,
        r#"SELECT account_id, alert_id::text AS "alert_id!", policy_id, title, severity::text AS "severity!",
                  status::text AS "status!", first_seen, last_seen
           FROM alerts
           WHERE (source_ip = $1::text::inet OR details::text LIKE '%"' || $1 || '"%') AND last_seen >= $2
           ORDER BY last_seen DESC LIMIT 200"#,
        address,
        since,
    )
    .fetch_all(db)
    .await?;
    let first_seen = [events.first_seen, flows.first_seen].into_iter().flatten().min();
    let last_seen = [events.last_seen, flows.last_seen].into_iter().flatten().max();
    Ok(AddressActivity {
        address: address.to_owned(),
        window_start: last.map(|_| since),
        country: events.country.or(flows.country),
        city: events.city,
        asn: events.asn,
        as_org: events.as_org,
        is_tor: events.is_tor,
        is_vpn: events.is_vpn,
        is_hosting: events.is_hosting,
        first_seen,
        last_seen,
        events: events.events,
        failed: events.failed,
        principals,
        bytes_sent: flows.sent,
        bytes_received: flows.received,
        flows: flows.records,
        alerts,
    })
}
