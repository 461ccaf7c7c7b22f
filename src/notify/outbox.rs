//! The outbox: notifications still to send, written in the transaction that raises or changes
//! the alert, so none is lost to a crash between the two. Senders claim rows with a lease
//! (`FOR UPDATE SKIP LOCKED`); a sender that dies leaves its rows to be claimed again when the
//! lease runs out, which makes delivery at least once, with a stable dedup key per alert.

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::{PgConnection, PgPool};

use super::message::AutomaticAction;
use crate::alerts::incidents;
use crate::alerts::store::{self as alert_store, AlertChange, AlertStoreError, RecordOutcome};
use crate::model::{AlertStatus, Finding, Severity};

/// Unlinked alerts linked into incidents per recording, at most (more wait for the next).
const INCIDENT_LINKS_PER_RECORD: i64 = 2_000;

/// Folds findings into alerts, links them into incidents and queues what routes must hear of, in one transaction: a crash
/// cannot keep an alert and lose its notification.
pub async fn record_alerts(pool: &PgPool, findings: &[Finding]) -> Result<RecordOutcome, AlertStoreError> {
    let mut tx = crate::db::begin(pool).await?;
    // The linking lock first: taken after the alert rows it could wait on a linker that waits
    // on those rows.
    incidents::lock_linking(&mut tx).await?;
    let outcome = alert_store::record_in(&mut tx, findings).await?;
    incidents::link_pending_in(&mut tx, INCIDENT_LINKS_PER_RECORD).await?;
    enqueue(&mut tx, &outcome.changes).await?;
    tx.commit().await?;
    Ok(outcome)
}

/// Changes an alert's status (who, when, why) and queues the status messages, in one
/// transaction. Returns the status before.
pub async fn set_alert_status(
    pool: &PgPool,
    alert_id: &str,
    status: AlertStatus,
    snoozed_until: Option<DateTime<Utc>>,
    actor: &str,
    reason: &str,
) -> Result<AlertStatus, AlertStoreError> {
    let snoozed_until = alert_store::check_status_change(alert_id, status, snoozed_until)?;
    let mut tx = crate::db::begin(pool).await?;
    let outcome = alert_store::set_status_in(&mut tx, alert_id, status, snoozed_until, actor, reason).await?;
    enqueue(&mut tx, outcome.change.as_slice()).await?;
    tx.commit().await?;
    Ok(outcome.old)
}

/// Queues the notifications for what an alert write changed, inside its transaction.
pub async fn enqueue(tx: &mut PgConnection, changes: &[AlertChange]) -> Result<(), sqlx::Error> {
    for change in changes {
        match change {
            AlertChange::Raised { account_id, alert_id, policy_id, severity, mitre, escalated_from } => {
                enqueue_new_alert(tx, account_id, alert_id, policy_id, *severity, mitre, *escalated_from).await?
            }
            AlertChange::StatusChanged { account_id, alert_id, status, actor, reason } => {
                enqueue_status_change(tx, account_id, alert_id, *status, actor, reason).await?;
            }
        }
    }
    Ok(())
}

/// Queues the opening message of a new alert for every route it matches (one per channel), or
/// adds it to the digests of matching digest routes. With `escalated_from`, only routes whose
/// minimum severity the alert has just reached (channels told before are not told again).
async fn enqueue_new_alert(
    tx: &mut PgConnection,
    account_id: &str,
    alert_id: &str,
    policy_id: &str,
    severity: Severity,
    mitre: &[String],
    escalated_from: Option<Severity>,
) -> Result<(), sqlx::Error> {
    sqlx::query!(
        r#"WITH matching AS (
               SELECT r.id, r.channel_id, r.digest_minutes
               FROM notification_routes r JOIN notification_channels c ON c.id = r.channel_id
               WHERE r.enabled AND c.enabled
                 AND $4 >= r.min_severity
                 AND ($6::alert_severity IS NULL OR $6 < r.min_severity)
                 AND (cardinality(r.account_ids) = 0 OR $1 = ANY(r.account_ids))
                 -- Policy patterns: `*` is the only wildcard; LIKE's own are escaped.
                 AND (cardinality(r.policy_ids) = 0 OR EXISTS (
                        SELECT 1 FROM unnest(r.policy_ids) AS p
                        WHERE $3 LIKE replace(replace(replace(replace(p, '\', '\\'), '%', '\%'), '_', '\_'), '*', '%')))
                 -- Tags: a tactic (TA0001) or technique (T1078, or T1078.004) of the alert.
                 AND (cardinality(r.tags) = 0 OR EXISTS (
                        SELECT 1 FROM unnest($5::text[]) AS m, unnest(r.tags) AS t
                        WHERE upper(split_part(m, '/', 1)) = t OR upper(split_part(m, '/', 2)) = t
                           OR upper(split_part(m, '/', 2)) LIKE t || '.%'))
           ),
           opened AS (
               INSERT INTO notification_outbox (channel_id, route_id, event, account_id, alert_id, dedup_key)
               SELECT DISTINCT ON (channel_id) channel_id, id, 'alert.opened', $1, $2::text::uuid, 'skywarden-' || $2
               FROM matching WHERE digest_minutes IS NULL
               ORDER BY channel_id, id
               ON CONFLICT DO NOTHING
               RETURNING 1
           )
           INSERT INTO notification_digest_items (route_id, account_id, alert_id)
           SELECT id, $1, $2::text::uuid FROM matching WHERE digest_minutes IS NOT NULL
           ON CONFLICT DO NOTHING"#,
        account_id,
        alert_id,
        policy_id,
        severity as Severity,
        mitre,
        escalated_from as Option<Severity>,
    )
    .execute(&mut *tx)
    .await?;
    Ok(())
}

/// Tells every channel that heard of an alert what was done about it (automatic containment):
/// a status message with the alert's current status, `actor` and `note`, as a status change
/// goes (routes that asked for no status updates are skipped). Returns how many were queued.
pub async fn enqueue_alert_note(
    pool: &PgPool,
    account_id: &str,
    alert_id: &str,
    actor: &str,
    note: &str,
) -> Result<u64, sqlx::Error> {
    let mut tx = crate::db::begin(pool).await?;
    let status = sqlx::query_scalar!(
        r#"SELECT status AS "status: AlertStatus" FROM alerts WHERE account_id = $1 AND alert_id = $2::text::uuid"#,
        account_id,
        alert_id
    )
    .fetch_optional(&mut *tx)
    .await?;
    let Some(status) = status else { return Ok(0) };
    let queued = enqueue_status_change(&mut tx, account_id, alert_id, status, actor, note).await?;
    tx.commit().await?;
    Ok(queued)
}

/// Tells what automatic containment did about an alert (event `alert.automatic_action`: the
/// action itself, rendered by every receiver as what was done, to what, where, the result and
/// how to undo it; `note` is its one-line summary in the deliveries list) to every channel of
/// every enabled route the alert matches now, whatever the route's status-update or digest
/// setting, and to every channel told of the alert before; one message per channel. Returns how
/// many were queued.
pub async fn enqueue_automatic_action(
    pool: &PgPool,
    alert_id: &str,
    actor: &str,
    note: &str,
    action: &AutomaticAction,
) -> Result<u64, sqlx::Error> {
    let account_id = action.account_id.as_str();
    let action = serde_json::to_value(action).map_err(|e| sqlx::Error::Encode(Box::new(e)))?;
    let queued = sqlx::query!(
        r#"WITH alert AS (
               SELECT account_id, alert_id, policy_id, severity, mitre, status FROM alerts
               WHERE account_id = $1 AND alert_id = $2::text::uuid
           ),
           matching AS (
               SELECT r.channel_id, r.id AS route_id
               FROM alert a, notification_routes r JOIN notification_channels c ON c.id = r.channel_id
               WHERE r.enabled AND c.enabled
                 AND a.severity >= r.min_severity
                 AND (cardinality(r.account_ids) = 0 OR a.account_id = ANY(r.account_ids))
                 AND (cardinality(r.policy_ids) = 0 OR EXISTS (
                        SELECT 1 FROM unnest(r.policy_ids) AS p
                        WHERE a.policy_id LIKE replace(replace(replace(replace(p, '\', '\\'), '%', '\%'), '_', '\_'), '*', '%')))
                 AND (cardinality(r.tags) = 0 OR EXISTS (
                        SELECT 1 FROM unnest(a.mitre) AS m, unnest(r.tags) AS t
                        WHERE upper(split_part(m, '/', 1)) = t OR upper(split_part(m, '/', 2)) = t
                           OR upper(split_part(m, '/', 2)) LIKE t || '.%'))
               UNION ALL
               SELECT o.channel_id, o.route_id
               FROM notification_outbox o JOIN notification_channels c ON c.id = o.channel_id
               WHERE o.event = 'alert.opened' AND o.account_id = $1 AND o.alert_id = $2::text::uuid AND c.enabled
           )
           INSERT INTO notification_outbox (channel_id, route_id, event, account_id, alert_id, alert_status, status_actor,
                                            status_reason, dedup_key, automatic_action)
           SELECT DISTINCT ON (m.channel_id) m.channel_id, m.route_id, 'alert.automatic_action', a.account_id, a.alert_id,
                  a.status, $3, $4, 'skywarden-' || $2, $5
           FROM matching m, alert a
           ORDER BY m.channel_id, m.route_id"#,
        account_id,
        alert_id,
        actor,
        note,
        action,
    )
    .execute(pool)
    .await?;
    Ok(queued.rows_affected())
}

/// Queues a status change for every channel that was told about the alert, unless its route
/// asked for no status updates.
async fn enqueue_status_change(
    tx: &mut PgConnection,
    account_id: &str,
    alert_id: &str,
    status: AlertStatus,
    actor: &str,
    reason: &str,
) -> Result<u64, sqlx::Error> {
    let queued = sqlx::query!(
        r#"INSERT INTO notification_outbox (channel_id, route_id, event, account_id, alert_id, alert_status, status_actor,
                                           status_reason, dedup_key)
           SELECT o.channel_id, o.route_id, 'alert.status_changed', o.account_id, o.alert_id, $3, $4, $5, o.dedup_key
           FROM notification_outbox o
           LEFT JOIN notification_routes r ON r.id = o.route_id
           JOIN notification_channels c ON c.id = o.channel_id
           WHERE o.event = 'alert.opened' AND o.account_id = $1 AND o.alert_id = $2::text::uuid
             AND c.enabled AND coalesce(r.status_updates, true)"#,
        account_id,
        alert_id,
        status as AlertStatus,
        actor,
        reason,
    )
    .execute(&mut *tx)
    .await?;
    Ok(queued.rows_affected())
}

/// Turns the waiting items of each digest route whose period has passed into one outbox row.
pub async fn flush_digests(pool: &PgPool) -> Result<u64, sqlx::Error> {
    let mut tx = crate::db::begin(pool).await?;
    let flushed = sqlx::query!(
        r#"WITH due AS (
               SELECT i.route_id
               FROM notification_digest_items i
               JOIN notification_routes r ON r.id = i.route_id
               JOIN notification_channels c ON c.id = r.channel_id
               -- A disabled route or channel keeps its items until it is enabled again.
               WHERE r.enabled AND c.enabled
               GROUP BY i.route_id, r.digest_minutes
               HAVING min(i.added_at) <= now() - make_interval(mins => coalesce(r.digest_minutes, 0))
           ),
           taken AS (
               DELETE FROM notification_digest_items i USING due WHERE i.route_id = due.route_id
               RETURNING i.route_id, i.alert_id, i.added_at
           )
           INSERT INTO notification_outbox (channel_id, route_id, event, digest_alerts, dedup_key)
           SELECT r.channel_id, r.id, 'digest', array_agg(t.alert_id ORDER BY t.added_at, t.alert_id),
                  'skywarden-digest-' || r.id || '-' || extract(epoch FROM max(t.added_at))::bigint
           FROM taken t JOIN notification_routes r ON r.id = t.route_id
           GROUP BY r.id, r.channel_id"#
    )
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(flushed.rows_affected())
}

/// One claimed outbox row.
#[derive(Debug, Clone)]
pub struct Claimed {
    pub id: i64,
    pub channel_id: i64,
    pub route_id: Option<i64>,
    pub event: String,
    pub account_id: Option<String>,
    pub alert_id: Option<String>,
    pub alert_status: Option<AlertStatus>,
    pub status_actor: Option<String>,
    pub status_reason: Option<String>,
    pub digest_alerts: Vec<String>,
    pub dedup_key: String,
    /// Including this one.
    pub attempts: i32,
    /// What automatic containment did (`alert.automatic_action`; absent in rows queued before
    /// it was stored, which are sent as status messages).
    pub automatic_action: Option<AutomaticAction>,
}

/// Claims up to `limit` due rows for `lease_seconds`. A row waits while an earlier row for the
/// same alert and channel is unsent, so a resolve never overtakes its trigger.
pub async fn claim(pool: &PgPool, limit: i64, lease_seconds: f64) -> Result<Vec<Claimed>, sqlx::Error> {
    let rows = sqlx::query!(
        r#"UPDATE notification_outbox o
           SET state = 'sending', attempts = o.attempts + 1, lease_until = now() + make_interval(secs => $2)
           WHERE o.id IN (
               SELECT d.id FROM notification_outbox d
               WHERE ((d.state = 'pending' AND d.next_attempt_at <= now()) OR (d.state = 'sending' AND d.lease_until < now()))
                 AND NOT EXISTS (SELECT 1 FROM notification_outbox e
                                 WHERE e.channel_id = d.channel_id AND e.account_id = d.account_id AND e.alert_id = d.alert_id
                                   AND e.id < d.id AND e.state IN ('pending', 'sending'))
               ORDER BY d.id
               LIMIT $1
               FOR UPDATE SKIP LOCKED)
           RETURNING o.id, o.channel_id, o.route_id, o.event, o.account_id, o.alert_id::text AS alert_id,
                     o.alert_status AS "alert_status: AlertStatus", o.status_actor, o.status_reason,
                     ARRAY(SELECT a::text FROM unnest(o.digest_alerts) AS a) AS "digest_alerts!", o.dedup_key, o.attempts,
                     o.automatic_action"#,
        limit,
        lease_seconds,
    )
    .fetch_all(pool)
    .await?;
    let mut claimed: Vec<Claimed> = rows
        .into_iter()
        .map(|r| Claimed {
            id: r.id,
            channel_id: r.channel_id,
            route_id: r.route_id,
            event: r.event,
            account_id: r.account_id,
            alert_id: r.alert_id,
            alert_status: r.alert_status,
            status_actor: r.status_actor,
            status_reason: r.status_reason,
            digest_alerts: r.digest_alerts,
            dedup_key: r.dedup_key,
            attempts: r.attempts,
            automatic_action: r.automatic_action.and_then(|value| parse_action(r.id, value)),
        })
        .collect();
    claimed.sort_by_key(|c| c.id);
    Ok(claimed)
}

/// A stored automatic action; one that does not read (written by a later release) is logged
/// and sent as the status message it also is.
fn parse_action(id: i64, value: serde_json::Value) -> Option<AutomaticAction> {
    serde_json::from_value(value)
        .map_err(|error| tracing::warn!(delivery = id, %error, "an automatic action that does not read; sent as a status message"))
        .ok()
}

/// The receiver took it.
pub async fn mark_delivered(
    pool: &PgPool,
    row: &Claimed,
    http_status: Option<u16>,
    remote_ref: Option<&str>,
    note: Option<&str>,
) -> Result<(), sqlx::Error> {
    sqlx::query!(
        "UPDATE notification_outbox SET state = 'delivered', delivered_at = now(), lease_until = NULL,
                last_http_status = $3, remote_ref = $4, last_error = $5
         WHERE id = $1 AND attempts = $2",
        row.id,
        row.attempts,
        http_status.map(i32::from),
        remote_ref,
        note,
    )
    .execute(pool)
    .await?;
    Ok(())
}

/// The attempt failed: try again after `retry_in`, or give up (dead letter) when `retry_in` is
/// `None`.
pub async fn mark_failed(
    pool: &PgPool,
    row: &Claimed,
    http_status: Option<u16>,
    error: &str,
    retry_in: Option<std::time::Duration>,
) -> Result<(), sqlx::Error> {
    let state = if retry_in.is_some() { "pending" } else { "dead" };
    let seconds = retry_in.map(|d| d.as_secs_f64()).unwrap_or(0.0);
    sqlx::query!(
        "UPDATE notification_outbox SET state = $3, lease_until = NULL, last_http_status = $4, last_error = $5,
                next_attempt_at = now() + make_interval(secs => $6)
         WHERE id = $1 AND attempts = $2",
        row.id,
        row.attempts,
        state,
        http_status.map(i32::from),
        error,
        seconds,
    )
    .execute(pool)
    .await?;
    Ok(())
}

/// What an earlier delivery to this channel called the alert (a Jira key, a ServiceNow sys_id).
pub async fn remote_ref(
    pool: &PgPool,
    channel_id: i64,
    account_id: &str,
    alert_id: &str,
) -> Result<Option<String>, sqlx::Error> {
    Ok(sqlx::query_scalar!(
        "SELECT remote_ref FROM notification_outbox
         WHERE channel_id = $1 AND account_id = $2 AND alert_id = $3::text::uuid AND event = 'alert.opened'",
        channel_id,
        account_id,
        alert_id,
    )
    .fetch_optional(pool)
    .await?
    .flatten())
}

/// A delivery as the API and dashboard show it.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct DeliveryView {
    pub id: i64,
    pub channel_id: i64,
    pub channel: String,
    pub route: Option<String>,
    pub event: String,
    pub account_id: Option<String>,
    pub alert_id: Option<String>,
    pub alert_title: Option<String>,
    pub alert_status: Option<AlertStatus>,
    pub digest_alerts: Vec<String>,
    pub dedup_key: String,
    /// pending, sending, delivered or dead (gave up; retry it from here).
    pub state: String,
    pub attempts: i32,
    pub next_attempt_at: DateTime<Utc>,
    pub last_error: Option<String>,
    pub last_http_status: Option<i32>,
    pub remote_ref: Option<String>,
    pub created_at: DateTime<Utc>,
    pub delivered_at: Option<DateTime<Utc>>,
}

#[derive(Debug, Default, Clone)]
pub struct DeliveryFilter {
    pub state: Option<String>,
    pub channel_id: Option<i64>,
    pub alert_id: Option<String>,
    pub limit: i64,
}

pub async fn list(pool: &PgPool, filter: &DeliveryFilter) -> Result<Vec<DeliveryView>, sqlx::Error> {
    list_before(pool, filter, None).await
}

/// Deliveries matching `filter`, newest first, older than the delivery `before` (a page's
/// last), at most `filter.limit`.
pub async fn list_before(
    pool: &PgPool,
    filter: &DeliveryFilter,
    before: Option<i64>,
) -> Result<Vec<DeliveryView>, sqlx::Error> {
    let rows = sqlx::query!(
        r#"SELECT o.id, o.channel_id, c.name AS channel, r.name AS "route?", o.event, o.account_id,
                  o.alert_id::text AS alert_id, a.title AS "alert_title?", o.alert_status AS "alert_status: AlertStatus",
                  ARRAY(SELECT x::text FROM unnest(o.digest_alerts) AS x) AS "digest_alerts!", o.dedup_key, o.state,
                  o.attempts, o.next_attempt_at, o.last_error, o.last_http_status, o.remote_ref, o.created_at, o.delivered_at
           FROM notification_outbox o
           JOIN notification_channels c ON c.id = o.channel_id
           LEFT JOIN notification_routes r ON r.id = o.route_id
           LEFT JOIN alerts a ON a.account_id = o.account_id AND a.alert_id = o.alert_id
           WHERE ($1::text IS NULL OR o.state = $1)
             AND ($2::bigint IS NULL OR o.channel_id = $2)
             AND ($3::text IS NULL OR o.alert_id = $3::text::uuid)
             AND ($5::bigint IS NULL OR o.id < $5)
           ORDER BY o.id DESC
           LIMIT $4"#,
        filter.state,
        filter.channel_id,
        filter.alert_id,
        filter.limit.clamp(1, 1001),
        before,
    )
    .fetch_all(pool)
    .await?;
    Ok(rows
        .into_iter()
        .map(|r| DeliveryView {
            id: r.id,
            channel_id: r.channel_id,
            channel: r.channel,
            route: r.route,
            event: r.event,
            account_id: r.account_id,
            alert_id: r.alert_id,
            alert_title: r.alert_title,
            alert_status: r.alert_status,
            digest_alerts: r.digest_alerts,
            dedup_key: r.dedup_key,
            state: r.state,
            attempts: r.attempts,
            next_attempt_at: r.next_attempt_at,
            last_error: r.last_error,
            last_http_status: r.last_http_status,
            remote_ref: r.remote_ref,
            created_at: r.created_at,
            delivered_at: r.delivered_at,
        })
        .collect())
}

/// Counts per state, for the dashboard and metrics.
pub async fn counts(pool: &PgPool) -> Result<Vec<(String, i64)>, sqlx::Error> {
    let rows =
        sqlx::query!(r#"SELECT state, count(*) AS "count!" FROM notification_outbox GROUP BY state ORDER BY state"#)
            .fetch_all(pool)
            .await?;
    Ok(rows.into_iter().map(|r| (r.state, r.count)).collect())
}

/// What asking to retry a delivery did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Retry {
    Retrying,
    /// No dead delivery has this id.
    NotDead,
    /// A later status change of the alert already reached this channel: sending the opening
    /// message now would reopen what was resolved (a PagerDuty trigger after its resolve).
    Superseded,
}

/// Sends a dead delivery again from scratch.
pub async fn retry(pool: &PgPool, id: i64) -> Result<Retry, sqlx::Error> {
    let updated = sqlx::query!(
        "UPDATE notification_outbox o SET state = 'pending', attempts = 0, next_attempt_at = now(), last_error = NULL
         WHERE o.id = $1 AND o.state = 'dead'
           AND NOT EXISTS (SELECT 1 FROM notification_outbox l
                           WHERE l.channel_id = o.channel_id AND l.account_id = o.account_id AND l.alert_id = o.alert_id
                             AND l.id > o.id AND l.state = 'delivered')",
        id
    )
    .execute(pool)
    .await?;
    if updated.rows_affected() == 1 {
        return Ok(Retry::Retrying);
    }
    let dead =
        sqlx::query_scalar!("SELECT count(*) AS \"n!\" FROM notification_outbox WHERE id = $1 AND state = 'dead'", id)
            .fetch_one(pool)
            .await?;
    Ok(if dead > 0 { Retry::Superseded } else { Retry::NotDead })
}
