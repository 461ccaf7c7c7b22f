//! What an analyst reads around an alert or an incident: the events of the principal or the
//! address in a window (each marked with the alerts it is evidence of), the flows of an address,
//! the resources touched (with their latest configuration snapshot) and an alert's triage history.

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::PgPool;

use super::store::AlertStoreError;
use crate::model::AlertStatus;

/// Events one window answer holds, at most.
pub const MAX_WINDOW_EVENTS: i64 = 500;

/// A CloudTrail event in an investigation window: who, what, where, when, the outcome, and the
/// alerts (of those asked about) it is evidence of.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct WindowEvent {
    pub account_id: String,
    pub event_id: String,
    pub event_time: DateTime<Utc>,
    pub event_name: Option<String>,
    pub event_source: Option<String>,
    pub user_name: Option<String>,
    pub principal_arn: Option<String>,
    pub source_ip: Option<String>,
    pub country: Option<String>,
    pub city: Option<String>,
    pub latitude: Option<f64>,
    pub longitude: Option<f64>,
    /// `success` or `failure` (an error, or a console login that says `Failure`).
    pub outcome: String,
    pub error_code: Option<String>,
    pub error_message: Option<String>,
    pub read_only: Option<bool>,
    pub resource_ids: Vec<String>,
    /// What the request asked for, in a line (`tcp 22 from 176.36.10.20/32`).
    pub request: Option<String>,
    /// The alerts of the question this event is evidence of (by event id).
    pub alert_ids: Vec<String>,
}

/// Which events a window holds: those of the principal or from the address in
/// `[since, until]`, plus the evidence of `alert_ids` in that time.
#[derive(Debug, Clone)]
pub struct EventWindow<'a> {
    pub account_id: &'a str,
    pub since: DateTime<Utc>,
    pub until: DateTime<Utc>,
    /// An ARN or a user name.
    pub principal: Option<&'a str>,
    /// An address, as PostgreSQL reads `inet`.
    pub source_ip: Option<&'a str>,
    pub alert_ids: &'a [String],
    pub limit: i64,
}

/// The events of `window`, oldest first.
pub async fn window_events(pool: &PgPool, window: &EventWindow<'_>) -> Result<Vec<WindowEvent>, AlertStoreError> {
    let rows = sqlx::query!(
        r#"SELECT c.account_id, c.event_id, c.event_time, c.event_name, c.event_source, c.user_name, c.principal_arn,
                  c.source_ip_text AS source_ip, c.geo_country AS country, c.geo_city AS city,
                  c.geo_latitude AS latitude, c.geo_longitude AS longitude,
                  (CASE WHEN c.error_code IS NOT NULL OR c.error_message IS NOT NULL
                             OR (c.event_name = 'ConsoleLogin' AND c.raw->'responseElements'->>'ConsoleLogin' = 'Failure')
                        THEN 'failure' ELSE 'success' END) AS "outcome!",
                  c.error_code, c.error_message, c.read_only, c.resource_ids, c.raw->'requestParameters' AS request,
                  ARRAY(SELECT e.alert_id::text FROM alert_evidence e
                        WHERE e.account_id = c.account_id AND e.event_id = c.event_id AND e.event_time = c.event_time
                          AND e.alert_id = ANY($6::text[]::uuid[])
                        ORDER BY 1) AS "alert_ids!"
           FROM cloudtrail_events c
           WHERE c.account_id = $1 AND c.event_time >= $2 AND c.event_time <= $3
             AND (($4::text IS NOT NULL AND (c.principal_arn = $4 OR c.user_name = $4))
                  OR ($5::text IS NOT NULL AND c.source_ip = $5::text::inet)
                  OR EXISTS (SELECT 1 FROM alert_evidence e
                             WHERE e.account_id = c.account_id AND e.event_id = c.event_id AND e.event_time = c.event_time
                               AND e.alert_id = ANY($6::text[]::uuid[])))
           ORDER BY c.event_time, c.event_id
           LIMIT $7"#,
        window.account_id,
        window.since,
        window.until,
        window.principal,
        window.source_ip,
        window.alert_ids,
        window.limit,
    )
    .fetch_all(pool)
    .await?;
    Ok(rows
        .into_iter()
        .map(|r| WindowEvent {
            request: r.request.as_ref().and_then(request_line),
            account_id: r.account_id,
            event_id: r.event_id,
            event_time: r.event_time,
            event_name: r.event_name,
            event_source: r.event_source,
            user_name: r.user_name,
            principal_arn: r.principal_arn,
            source_ip: r.source_ip,
            country: r.country,
            city: r.city,
            latitude: r.latitude,
            longitude: r.longitude,
            outcome: r.outcome,
            error_code: r.error_code,
            error_message: r.error_message,
            read_only: r.read_only,
            resource_ids: r.resource_ids,
            alert_ids: r.alert_ids,
        })
        .collect())
}

/// The longest request line kept.
const MAX_REQUEST_LINE: usize = 300;

/// A request's parameters in a line: the rules of a security-group change as
/// `tcp 22 from 1.2.3.4/32`, else its short text values as `name: value`.
pub fn request_line(parameters: &serde_json::Value) -> Option<String> {
    let mut parts = Vec::new();
    if let Some(items) = parameters.pointer("/ipPermissions/items").and_then(|v| v.as_array()) {
        parts.extend(items.iter().map(permission_line));
    }
    if parts.is_empty() {
        collect_values(parameters, 0, &mut parts);
    }
    let mut line = parts.join(", ");
    if line.len() > MAX_REQUEST_LINE {
        let mut end = MAX_REQUEST_LINE;
        while !line.is_char_boundary(end) {
            end -= 1;
        }
        line.truncate(end);
        line.push('…');
    }
    (!line.is_empty()).then_some(line)
}

/// One permission of `ipPermissions`: protocol, ports and where from.
fn permission_line(item: &serde_json::Value) -> String {
    let text = |pointer: &str| item.pointer(pointer).map(|v| v.as_str().map_or_else(|| v.to_string(), str::to_string));
    let protocol = text("/ipProtocol").map(|p| if p == "-1" { "all".to_string() } else { p }).unwrap_or_default();
    let ports = match (text("/fromPort"), text("/toPort")) {
        (Some(from), Some(to)) if from == to => format!(" {from}"),
        (Some(from), Some(to)) => format!(" {from}-{to}"),
        _ => String::new(),
    };
    let ranges = |path: &str, key: &str| -> Vec<String> {
        item.pointer(path)
            .and_then(|v| v.as_array())
            .map(|a| a.iter().filter_map(|r| r.get(key)?.as_str().map(str::to_string)).collect())
            .unwrap_or_default()
    };
    let mut sources = ranges("/ipRanges/items", "cidrIp");
    sources.extend(ranges("/ipv6Ranges/items", "cidrIpv6"));
    sources.extend(ranges("/groups/items", "groupId"));
    sources.extend(ranges("/prefixListIds/items", "prefixListId"));
    format!("{protocol}{ports} from {}", if sources.is_empty() { "—".to_string() } else { sources.join(" ") })
}

/// Short scalar values of an object, two levels deep, as `name: value`.
fn collect_values(value: &serde_json::Value, depth: usize, parts: &mut Vec<String>) {
    let Some(object) = value.as_object() else { return };
    for (name, value) in object {
        match value {
            serde_json::Value::String(text) if text.len() <= 120 => parts.push(format!("{name}: {text}")),
            serde_json::Value::Number(n) => parts.push(format!("{name}: {n}")),
            serde_json::Value::Bool(b) => parts.push(format!("{name}: {b}")),
            serde_json::Value::Object(_) if depth < 2 => collect_values(value, depth + 1, parts),
            _ => {}
        }
    }
}

/// Flow records of one conversation, added up.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct FlowSummary {
    pub interface_id: Option<String>,
    pub srcaddr: Option<String>,
    pub dstaddr: Option<String>,
    pub dstport: Option<i32>,
    pub protocol: Option<i16>,
    pub action: Option<String>,
    pub bytes: i64,
    pub packets: i64,
    pub records: i64,
    pub first_seen: Option<DateTime<Utc>>,
    pub last_seen: Option<DateTime<Utc>>,
}

/// Conversations at most one answer holds (the largest).
pub const MAX_FLOWS: i64 = 100;

/// The flows to or from `address` in `[since, until]`, largest first, at most [`MAX_FLOWS`].
pub async fn address_flows(
    pool: &PgPool,
    account_id: &str,
    address: &str,
    since: DateTime<Utc>,
    until: DateTime<Utc>,
) -> Result<Vec<FlowSummary>, AlertStoreError> {
    Ok(sqlx::query_as!(
        FlowSummary,
        r#"SELECT interface_id, host(srcaddr) AS srcaddr, host(dstaddr) AS dstaddr, dstport, protocol, action,
                  coalesce(sum(bytes), 0)::bigint AS "bytes!", coalesce(sum(packets), 0)::bigint AS "packets!",
                  count(*) AS "records!", min(start_time) AS first_seen, max(end_time) AS last_seen
           FROM flow_records
           WHERE account_id = $1 AND (srcaddr = $2::text::inet OR dstaddr = $2::text::inet)
             AND bucket_time >= $3 AND bucket_time <= $4
           GROUP BY 1, 2, 3, 4, 5, 6
           ORDER BY 7 DESC, 2, 3, 4
           LIMIT $5"#,
        account_id,
        address,
        since,
        until,
        MAX_FLOWS,
    )
    .fetch_all(pool)
    .await?)
}

/// A resource an alert or incident names, as its latest configuration snapshot has it.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct TouchedResource {
    pub account_id: String,
    pub resource_type: String,
    pub resource_id: String,
    pub region: String,
    pub arn: Option<String>,
    pub name: Option<String>,
    pub version: i32,
    /// The latest configuration (of the latest snapshot that saw the resource).
    pub config: serde_json::Value,
    /// When the latest snapshot saw it.
    pub snapshot_at: DateTime<Utc>,
    pub last_changed: DateTime<Utc>,
    /// When a snapshot found it gone.
    pub deleted_at: Option<DateTime<Utc>>,
}

/// Resources at most one answer holds.
pub const MAX_RESOURCES: i64 = 100;

/// The inventory's resources of `account_id` whose id or ARN is one of `ids`.
pub async fn touched_resources(
    pool: &PgPool,
    account_id: &str,
    ids: &[String],
) -> Result<Vec<TouchedResource>, AlertStoreError> {
    Ok(sqlx::query_as!(
        TouchedResource,
        r#"SELECT account_id, resource_type, resource_id, region, arn, name, version, config,
                  last_seen AS snapshot_at, last_changed, deleted_at
           FROM resources
           WHERE account_id = $1 AND (resource_id = ANY($2) OR arn = ANY($2))
           ORDER BY resource_type, resource_id
           LIMIT $3"#,
        account_id,
        ids,
        MAX_RESOURCES,
    )
    .fetch_all(pool)
    .await?)
}

/// One status change of an alert: who, when, from what to what, and why.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct StatusChangeView {
    pub changed_at: DateTime<Utc>,
    pub actor: String,
    pub old_status: AlertStatus,
    pub new_status: AlertStatus,
    pub snoozed_until: Option<DateTime<Utc>>,
    pub reason: String,
}

/// Status changes one answer holds (the newest).
pub const MAX_HISTORY: i64 = 200;

/// An alert's status changes, newest first.
pub async fn status_history(
    pool: &PgPool,
    account_id: &str,
    alert_id: &str,
) -> Result<Vec<StatusChangeView>, AlertStoreError> {
    Ok(sqlx::query_as!(
        StatusChangeView,
        r#"SELECT changed_at, actor, old_status AS "old_status: AlertStatus", new_status AS "new_status: AlertStatus",
                  snoozed_until, reason
           FROM alert_status_changes
           WHERE account_id = $1 AND alert_id = $2::text::uuid
           ORDER BY changed_at DESC
           LIMIT $3"#,
        account_id,
        alert_id,
        MAX_HISTORY,
    )
    .fetch_all(pool)
    .await?)
}

#[cfg(test)]
mod tests {
    use super::request_line;
    use serde_json::json;

    #[test]
    fn a_security_group_change_reads_as_protocol_port_and_source() {
        let parameters = json!({"groupId": "sg-1", "ipPermissions": {"items": [
            {"ipProtocol": "tcp", "fromPort": 22, "toPort": 22, "ipRanges": {"items": [{"cidrIp": "176.36.10.20/32"}]}},
            {"ipProtocol": "-1", "ipv6Ranges": {"items": [{"cidrIpv6": "::/0"}]}},
            {"ipProtocol": "tcp", "fromPort": 8000, "toPort": 8080, "ipRanges": {}}]}});
        assert_eq!(
            request_line(&parameters).as_deref(),
            Some("tcp 22 from 176.36.10.20/32, all from ::/0, tcp 8000-8080 from —")
        );
    }

    #[test]
    fn other_requests_read_as_their_short_values_and_are_bounded() {
        let parameters = json!({"AssociateIamInstanceProfileRequest": {"InstanceId": "i-1",
            "IamInstanceProfile": {"Name": "ssm"}}, "policyDocument": "x".repeat(500)});
        assert_eq!(request_line(&parameters).as_deref(), Some("Name: ssm, InstanceId: i-1"));
        let long = json!({"a": "é".repeat(60), "b": "é".repeat(60), "c": "é".repeat(60)});
        let line = request_line(&long).unwrap();
        assert!(line.len() <= 300 + '…'.len_utf8() && line.ends_with('…'), "{line}");
        assert_eq!(request_line(&json!(null)), None);
    }
}

/// A configuration change of a resource an incident touched, with the call that caused it when
/// CloudTrail named one.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct IncidentConfigChange {
    pub resource_type: String,
    pub resource_id: String,
    pub version: i32,
    pub kind: String,
    pub detected_at: DateTime<Utc>,
    pub diff: serde_json::Value,
    pub event_time: Option<DateTime<Utc>>,
    pub event_id: Option<String>,
    pub event_name: Option<String>,
    pub principal_arn: Option<String>,
}

/// Changes at most one answer holds (the first).
pub const MAX_CONFIG_CHANGES: i64 = 100;

/// Configuration changes of `ids` (resource ids) detected or caused in `[since, until]`, oldest
/// first.
pub async fn config_changes(
    pool: &PgPool,
    account_id: &str,
    ids: &[String],
    since: DateTime<Utc>,
    until: DateTime<Utc>,
) -> Result<Vec<IncidentConfigChange>, AlertStoreError> {
    Ok(sqlx::query_as!(
        IncidentConfigChange,
        r#"SELECT resource_type, resource_id, version, kind::text AS "kind!", detected_at, diff, event_time, event_id,
                  event_name, principal_arn
           FROM config_changes
           WHERE account_id = $1 AND resource_id = ANY($2)
             AND coalesce(event_time, detected_at) BETWEEN $3 AND $4
           ORDER BY coalesce(event_time, detected_at), change_id
           LIMIT $5"#,
        account_id,
        ids,
        since,
        until,
        MAX_CONFIG_CHANGES,
    )
    .fetch_all(pool)
    .await?)
}
