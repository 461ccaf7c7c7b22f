//! Inventory and config history: `GET /api/v1/resources` (filter by account, type, region, id or
//! name), one resource with every version, the diff of each change and the CloudTrail events
//! that touched it, and `GET /api/v1/changes`, the newest config changes with who made them.
//! A resource's configuration is as of its last snapshot (`as_of`, the snapshot's own time): the
//! changes CloudTrail recorded after it (`changed_since`) are listed beside it, with the posture
//! findings and alerts on the resource.

use axum::Json;
use axum::Router;
use axum::extract::{Path, State};
use axum::routing::get;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::ApiContext;
use super::error::{ApiError, ErrorBody};
use super::extractor::Caller;
use super::query::{Cursor, CursorKey, Limit, TypedQuery, page, time};
use crate::search::contains_pattern;

type ResourceLimit = Limit<5000, 200>;
type ChangeLimit = Limit<1000, 100>;

/// Versions and changes one resource's answer holds (the newest); `/api/v1/changes` pages them.
const HISTORY_SHOWN: i64 = 100;

/// A resource's position: its key, in the list's order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct ResourceKey(String, String, String);

impl CursorKey for ResourceKey {
    const KIND: &'static str = "resources";
}

/// A change's position in the newest-first order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct ChangeKey(DateTime<Utc>, i64);

impl CursorKey for ChangeKey {
    const KIND: &'static str = "changes";
}

pub fn router() -> Router<ApiContext> {
    Router::new()
        .route("/api/v1/resources", get(list))
        .route("/api/v1/resources/{account}/{resource_type}/{*resource_id}", get(one))
        .route("/api/v1/changes", get(changes))
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ResourceSummary {
    pub account_id: String,
    pub resource_type: String,
    pub resource_id: String,
    pub region: String,
    pub name: Option<String>,
    pub arn: Option<String>,
    pub version: i32,
    pub first_seen: DateTime<Utc>,
    pub last_seen: DateTime<Utc>,
    pub last_changed: DateTime<Utc>,
    pub deleted_at: Option<DateTime<Utc>>,
}

/// The filters of `GET /api/v1/resources`; they combine (AND).
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
struct ResourceQuery {
    /// A 12-digit account id.
    account: Option<String>,
    /// A resource type, e.g. `ec2:security-group`.
    #[serde(rename = "type")]
    resource_type: Option<String>,
    /// e.g. `eu-west-1`.
    region: Option<String>,
    /// Part of an id, name or ARN.
    q: Option<String>,
    /// Only deleted resources, or only those that still exist.
    deleted: Option<bool>,
    /// Resources per page, in account, type and id order.
    #[serde(default)]
    #[param(inline)]
    limit: ResourceLimit,
    /// `next_cursor` of the previous page.
    #[serde(default)]
    #[param(value_type = Option<String>)]
    cursor: Option<Cursor<ResourceKey>>,
}

/// A page of resources, in account, type and id order.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ResourcePage {
    pub resources: Vec<ResourceSummary>,
    /// The next page's `cursor`; absent on the last page.
    pub next_cursor: Option<String>,
}

#[utoipa::path(get, path = "/api/v1/resources", tag = "inventory", params(ResourceQuery), responses((status = 200, description = "OK", body = ResourcePage), (status = 400, description = "A bad parameter; `field` names it", body = ErrorBody), (status = 401, description = "No valid token or session", body = ErrorBody)), security(("bearer" = []), ("session" = [])))]
async fn list(
    _caller: Caller,
    State(context): State<ApiContext>,
    TypedQuery(query): TypedQuery<ResourceQuery>,
) -> Result<Json<ResourcePage>, ApiError> {
    let search = query.q.as_deref().map(contains_pattern);
    let ResourceKey(after_account, after_type, after_id) =
        query.cursor.map_or_else(|| ResourceKey(String::new(), String::new(), String::new()), |c| c.0);
    let rows = sqlx::query_as!(
        ResourceSummary,
        r#"SELECT account_id, resource_type, resource_id, region, name, arn, version, first_seen, last_seen,
                  last_changed, deleted_at
           FROM resources
           WHERE ($1::text IS NULL OR account_id = $1)
             AND ($2::text IS NULL OR resource_type = $2)
             AND ($3::text IS NULL OR region = $3)
             AND ($4::text IS NULL OR resource_id ILIKE $4 OR name ILIKE $4 OR arn ILIKE $4)
             AND ($5::bool IS NULL OR (deleted_at IS NOT NULL) = $5)
             AND (account_id, resource_type, resource_id) > ($7, $8, $9)
           ORDER BY account_id, resource_type, resource_id
           LIMIT $6"#,
        query.account,
        query.resource_type,
        query.region,
        search,
        query.deleted,
        query.limit.0 + 1,
        after_account,
        after_type,
        after_id,
    )
    .fetch_all(&context.db)
    .await?;
    let (resources, next_cursor) = page(rows, query.limit.0, |r: &ResourceSummary| {
        ResourceKey(r.account_id.clone(), r.resource_type.clone(), r.resource_id.clone())
    });
    Ok(Json(ResourcePage { resources, next_cursor }))
}

/// One resource: its current configuration, its newest 100 versions and changes (each with its
/// diff and the event that caused it; `/api/v1/changes?resource=` pages them all), and the
/// latest 200 CloudTrail events that named it.
#[utoipa::path(get, path = "/api/v1/resources/{account}/{resource_type}/{resource_id}", tag = "inventory", params(("account" = String, Path), ("resource_type" = String, Path), ("resource_id" = String, Path)), responses((status = 200, description = "OK", body = Object), (status = 400, description = "A bad parameter; `field` names it", body = ErrorBody), (status = 401, description = "No valid token or session", body = ErrorBody), (status = 404, description = "Not found", body = ErrorBody)), security(("bearer" = []), ("session" = [])))]
async fn one(
    _caller: Caller,
    State(context): State<ApiContext>,
    Path((account, resource_type, resource_id)): Path<(String, String, String)>,
) -> Result<Json<Value>, ApiError> {
    let current = sqlx::query!(
        "SELECT region, name, arn, version, config, first_seen, last_seen, last_changed, deleted_at
         FROM resources WHERE account_id = $1 AND resource_type = $2 AND resource_id = $3",
        account,
        resource_type,
        resource_id
    )
    .fetch_optional(&context.db)
    .await?
    .ok_or(ApiError::NotFound)?;
    let versions = sqlx::query!(
        "SELECT version, captured_at, config FROM resource_versions
         WHERE account_id = $1 AND resource_type = $2 AND resource_id = $3 ORDER BY version DESC LIMIT $4",
        account,
        resource_type,
        resource_id,
        HISTORY_SHOWN
    )
    .fetch_all(&context.db)
    .await?;
    let changes = sqlx::query!(
        r#"SELECT version, kind::text AS "kind!", detected_at, previous_at, diff, event_time, event_id, event_name,
                  principal_arn, source_ip
           FROM config_changes WHERE account_id = $1 AND resource_type = $2 AND resource_id = $3
           ORDER BY version DESC LIMIT $4"#,
        account,
        resource_type,
        resource_id,
        HISTORY_SHOWN
    )
    .fetch_all(&context.db)
    .await?;
    let events = events_naming(&context, &account, &resource_id).await?;
    let names = [Some(resource_id.clone()), current.arn.clone(), current.name.clone()];
    let since = changed_since(&context, &account, &names, current.last_seen).await?;
    let related = related_findings_and_alerts(&context, &account, &resource_type, &resource_id).await?;
    Ok(Json(json!({
        "as_of": current.last_seen,
        "changed_since": since,
        "findings": related.0,
        "alerts": related.1,
        "account_id": account,
        "resource_type": resource_type,
        "resource_id": resource_id,
        "region": current.region,
        "name": current.name,
        "arn": current.arn,
        "version": current.version,
        "config": current.config,
        "first_seen": current.first_seen,
        "last_seen": current.last_seen,
        "last_changed": current.last_changed,
        "deleted_at": current.deleted_at,
        "versions": versions.into_iter().map(|v| json!({"version": v.version, "captured_at": v.captured_at, "config": v.config})).collect::<Vec<_>>(),
        "changes": changes.into_iter().map(|c| json!({
            "version": c.version, "kind": c.kind, "detected_at": c.detected_at, "previous_at": c.previous_at,
            "diff": c.diff, "event": c.event_id.as_ref().map(|id| json!({"event_id": id, "event_time": c.event_time,
                "event_name": c.event_name, "principal_arn": c.principal_arn, "source_ip": c.source_ip}))
        })).collect::<Vec<_>>(),
        "events": events,
    })))
}

/// The latest 200 CloudTrail events that named the resource by its id.
async fn events_naming(context: &ApiContext, account: &str, resource_id: &str) -> Result<Vec<Value>, ApiError> {
    let events = sqlx::query!(
        r#"SELECT event_id, event_time, event_name, event_source, principal_arn, user_name, source_ip_text,
                  geo_country, error_code, read_only
           FROM cloudtrail_events WHERE account_id = $1 AND resource_ids @> ARRAY[$2]
           ORDER BY event_time DESC LIMIT 200"#,
        account,
        resource_id
    )
    .fetch_all(&context.db)
    .await?;
    Ok(events
        .into_iter()
        .map(|e| {
            json!({"event_id": e.event_id, "event_time": e.event_time, "event_name": e.event_name,
                   "event_source": e.event_source, "principal_arn": e.principal_arn, "user_name": e.user_name,
                   "source_ip": e.source_ip_text, "country": e.geo_country, "error_code": e.error_code,
                   "read_only": e.read_only})
        })
        .collect())
}

/// The changes CloudTrail recorded on a resource (by id, ARN or name) after `as_of`, its last
/// snapshot: what its shown configuration does not include yet. The oldest 50, failed calls
/// left out.
async fn changed_since(
    context: &ApiContext,
    account: &str,
    names: &[Option<String>],
    as_of: DateTime<Utc>,
) -> Result<Vec<Value>, ApiError> {
    let names: Vec<String> = names.iter().flatten().cloned().collect();
    let rows = sqlx::query!(
        r#"SELECT event_id, event_time, event_name, principal_arn, user_name, source_ip_text
           FROM cloudtrail_events
           WHERE account_id = $1 AND resource_ids && $2::text[] AND event_time > $3
             AND read_only IS NOT TRUE AND error_code IS NULL
           ORDER BY event_time LIMIT 50"#,
        account,
        &names,
        as_of,
    )
    .fetch_all(&context.db)
    .await?;
    Ok(rows
        .into_iter()
        .map(|e| {
            json!({"event_id": e.event_id, "event_time": e.event_time, "event_name": e.event_name,
                   "principal_arn": e.principal_arn, "user_name": e.user_name, "source_ip": e.source_ip_text})
        })
        .collect())
}

/// The posture findings on a resource and the alerts that name it (the newest 100 each).
async fn related_findings_and_alerts(
    context: &ApiContext,
    account: &str,
    resource_type: &str,
    resource_id: &str,
) -> Result<(Vec<Value>, Vec<Value>), ApiError> {
    let findings = sqlx::query!(
        r#"SELECT id, check_id, severity::text AS "severity!", status, messages, first_failed_at, resolved_at
           FROM posture_findings WHERE account_id = $1 AND resource_type = $2 AND resource_id = $3
           ORDER BY (status = 'open') DESC, id DESC LIMIT 100"#,
        account,
        resource_type,
        resource_id,
    )
    .fetch_all(&context.db)
    .await?;
    let alerts = sqlx::query!(
        r#"SELECT alert_id::text AS "alert_id!", policy_id, title, severity::text AS "severity!", status::text AS "status!",
                  last_seen
           FROM alerts WHERE account_id = $1 AND resources @> ARRAY[$2]
           ORDER BY last_seen DESC LIMIT 100"#,
        account,
        resource_id,
    )
    .fetch_all(&context.db)
    .await?;
    let findings = findings
        .into_iter()
        .map(|f| {
            json!({"id": f.id, "check_id": f.check_id, "severity": f.severity, "status": f.status,
                   "messages": f.messages, "first_failed_at": f.first_failed_at, "resolved_at": f.resolved_at})
        })
        .collect();
    let alerts = alerts
        .into_iter()
        .map(|a| {
            json!({"alert_id": a.alert_id, "policy_id": a.policy_id, "title": a.title, "severity": a.severity,
                   "status": a.status, "last_seen": a.last_seen})
        })
        .collect();
    Ok((findings, alerts))
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ChangeView {
    pub account_id: String,
    pub resource_type: String,
    pub resource_id: String,
    pub region: String,
    pub version: i32,
    pub kind: String,
    pub detected_at: DateTime<Utc>,
    pub diff: Value,
    pub event_id: Option<String>,
    pub event_time: Option<DateTime<Utc>>,
    pub event_name: Option<String>,
    pub principal_arn: Option<String>,
    pub source_ip: Option<String>,
}

/// The filters of `GET /api/v1/changes`; they combine (AND).
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
struct ChangeQuery {
    /// A 12-digit account id.
    account: Option<String>,
    /// A resource type, e.g. `ec2:security-group`.
    #[serde(rename = "type")]
    resource_type: Option<String>,
    /// A resource id.
    resource: Option<String>,
    /// Detected from this time on (RFC 3339).
    #[serde(default, deserialize_with = "time")]
    since: Option<DateTime<Utc>>,
    /// Detected before this time (RFC 3339).
    #[serde(default, deserialize_with = "time")]
    until: Option<DateTime<Utc>>,
    /// Changes per page, newest first.
    #[serde(default)]
    #[param(inline)]
    limit: ChangeLimit,
    /// `next_cursor` of the previous page.
    #[serde(default)]
    #[param(value_type = Option<String>)]
    cursor: Option<Cursor<ChangeKey>>,
}

/// A page of config changes, newest first.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ChangePage {
    pub changes: Vec<ChangeView>,
    /// The next page's `cursor`; absent on the last page.
    pub next_cursor: Option<String>,
}

/// The newest config changes, optionally of one account, type or resource, in a time range.
#[utoipa::path(get, path = "/api/v1/changes", tag = "inventory", params(ChangeQuery), responses((status = 200, description = "OK", body = ChangePage), (status = 400, description = "A bad parameter; `field` names it", body = ErrorBody), (status = 401, description = "No valid token or session", body = ErrorBody)), security(("bearer" = []), ("session" = [])))]
async fn changes(
    _caller: Caller,
    State(context): State<ApiContext>,
    TypedQuery(query): TypedQuery<ChangeQuery>,
) -> Result<Json<ChangePage>, ApiError> {
    let after = query.cursor.map(|c| c.0);
    let rows = sqlx::query!(
        r#"SELECT change_id, account_id, resource_type, resource_id, region, version, kind::text AS "kind!", detected_at,
                  diff, event_id, event_time, event_name, principal_arn, source_ip
           FROM config_changes
           WHERE ($1::text IS NULL OR account_id = $1)
             AND ($2::text IS NULL OR resource_type = $2)
             AND ($3::text IS NULL OR resource_id = $3)
             AND ($4::timestamptz IS NULL OR detected_at >= $4)
             AND ($5::timestamptz IS NULL OR detected_at < $5)
             AND ($7::timestamptz IS NULL OR (detected_at, change_id) < ($7, $8::bigint))
           ORDER BY detected_at DESC, change_id DESC
           LIMIT $6"#,
        query.account,
        query.resource_type,
        query.resource,
        query.since,
        query.until,
        query.limit.0 + 1,
        after.as_ref().map(|k| k.0),
        after.as_ref().map(|k| k.1),
    )
    .fetch_all(&context.db)
    .await?;
    let (rows, next_cursor) = page(rows, query.limit.0, |r| ChangeKey(r.detected_at, r.change_id));
    let changes = rows
        .into_iter()
        .map(|r| ChangeView {
            account_id: r.account_id,
            resource_type: r.resource_type,
            resource_id: r.resource_id,
            region: r.region,
            version: r.version,
            kind: r.kind,
            detected_at: r.detected_at,
            diff: r.diff,
            event_id: r.event_id,
            event_time: r.event_time,
            event_name: r.event_name,
            principal_arn: r.principal_arn,
            source_ip: r.source_ip,
        })
        .collect();
    Ok(Json(ChangePage { changes, next_cursor }))
}
