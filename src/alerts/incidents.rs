//! The incident engine: every alert joins exactly one incident, the one of the intrusion it is
//! part of. An alert joins the incidents whose keys ([`link_keys`](super::link_keys)) it shares
//! while they are valid; if it ties several, they were one intrusion all along and are merged
//! into the oldest (the others keep answering, pointing there). Alerts are linked in the order
//! they started, under one lock, so re-running detection changes nothing (an alert is linked
//! once) and importing older data can merge incidents but never split one.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sqlx::{PgConnection, PgPool};

use super::link_keys::{self, AddressNetwork, LinkKey, LinkedAlert, Strength};
use super::store::AlertStoreError;

/// Alerts linked per transaction.
const LINK_CHUNK: i64 = 200;

/// The advisory lock that makes one writer link at a time (two workers recording alerts at once
/// would otherwise open two incidents for one intrusion).
const LINK_LOCK: i64 = 0x736b_7977_696e_6331;

/// The advisory lock held by whatever writes the relink queue's rows: two passes queueing an
/// overlapping set, or one queueing while another deletes what it re-keyed, would otherwise lock
/// the same rows in different orders and deadlock. Taken after [`LINK_LOCK`] when both are held.
const RELINK_QUEUE_LOCK: i64 = 0x736b_7977_7271_7565;

/// Where an incident stands, as an analyst sets it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum IncidentStatus {
    Open,
    Investigating,
    Contained,
    Resolved,
    Dismissed,
    /// Folded into another incident (set by the engine only).
    Merged,
}

impl IncidentStatus {
    pub const SETTABLE: [IncidentStatus; 5] =
        [Self::Open, Self::Investigating, Self::Contained, Self::Resolved, Self::Dismissed];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Open => "open",
            Self::Investigating => "investigating",
            Self::Contained => "contained",
            Self::Resolved => "resolved",
            Self::Dismissed => "dismissed",
            Self::Merged => "merged",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        [Self::Open, Self::Investigating, Self::Contained, Self::Resolved, Self::Dismissed, Self::Merged]
            .into_iter()
            .find(|s| s.as_str() == text)
    }

    /// Whether the incident is closed (a new alert reopens it).
    pub fn is_closed(self) -> bool {
        matches!(self, Self::Resolved | Self::Dismissed)
    }
}

/// The incident id of an alert that opens one: stable, so the same alerts give the same ids.
pub fn incident_id_for(alert_id: &str) -> String {
    format!("inc-{:016x}", xxhash_rust::xxh3::xxh3_64(alert_id.as_bytes()))
}

/// Whether `text` has the shape of an incident id.
pub fn is_incident_id(text: &str) -> bool {
    text.len() == 20 && text.starts_with("inc-") && text[4..].bytes().all(|b| b.is_ascii_hexdigit())
}

/// What a linking run did.
#[derive(Debug, Default, Clone, PartialEq, Eq, Serialize)]
pub struct LinkOutcome {
    pub linked: u64,
    pub opened: u64,
    pub merged: u64,
    pub reopened: u64,
}

/// Links every alert not yet in an incident, in chunks of its own transactions.
pub async fn link_pending(pool: &PgPool) -> Result<LinkOutcome, AlertStoreError> {
    let mut total = LinkOutcome::default();
    loop {
        let mut tx = crate::db::begin(pool).await?;
        let outcome = link_pending_in(&mut tx, LINK_CHUNK).await?;
        tx.commit().await?;
        let done = outcome.linked < LINK_CHUNK as u64;
        total.linked += outcome.linked;
        total.opened += outcome.opened;
        total.merged += outcome.merged;
        total.reopened += outcome.reopened;
        if done {
            return Ok(total);
        }
    }
}

/// Links up to `limit` unlinked alerts, oldest first, inside the caller's transaction (the one
/// that recorded them, so an alert is never seen without its incident for long).
pub async fn link_pending_in(tx: &mut PgConnection, limit: i64) -> Result<LinkOutcome, AlertStoreError> {
    lock_linking(tx).await?;
    let rows = sqlx::query_as!(
        AlertRow,
        r#"SELECT account_id, alert_id::text AS "alert_id!", policy_id, principal, source_ip, resources,
                  session_key, first_seen, last_seen, details -> 'network' AS network,
                  details -> 'links_resources' AS links_resources
           FROM alerts WHERE incident_id IS NULL ORDER BY first_seen, alert_id LIMIT $1"#,
        limit
    )
    .fetch_all(&mut *tx)
    .await?;
    let mut outcome = LinkOutcome::default();
    for row in rows {
        link_one(tx, &linked_alert(row), &mut outcome).await?;
    }
    Ok(outcome)
}

/// An alert's row as linking reads it.
struct AlertRow {
    account_id: String,
    alert_id: String,
    policy_id: String,
    principal: Option<String>,
    source_ip: Option<sqlx::types::ipnetwork::IpNetwork>,
    resources: Vec<String>,
    session_key: Option<String>,
    first_seen: DateTime<Utc>,
    last_seen: DateTime<Utc>,
    network: Option<serde_json::Value>,
    links_resources: Option<serde_json::Value>,
}

fn linked_alert(r: AlertRow) -> LinkedAlert {
    let source_ip = r.source_ip.map(|net| net.ip());
    LinkedAlert {
        network: address_network(r.network.as_ref(), source_ip),
        shared_address: r.network.as_ref().is_some_and(link_keys::is_shared_address),
        links_resources: r.links_resources.and_then(|v| v.as_bool()).unwrap_or(true),
        account_id: r.account_id,
        alert_id: r.alert_id,
        policy_id: r.policy_id,
        principal: r.principal,
        source_ip,
        resources: r.resources,
        session_key: r.session_key,
        first_seen: r.first_seen,
        last_seen: r.last_seen,
    }
}

/// The AS of the alert's address, as the alert recorded it: from its evidence event (stored at
/// ingest), or for a flow alert from the network data when detection raised it. Never looked up
/// here: linking gives the same answer in every process.
fn address_network(details: Option<&serde_json::Value>, ip: Option<std::net::IpAddr>) -> Option<AddressNetwork> {
    ip.filter(|ip| link_keys::is_linkable(*ip))?;
    details.and_then(AddressNetwork::from_details)
}

/// Takes the linking lock until the transaction ends (taking it twice is harmless).
pub async fn lock_linking(tx: &mut PgConnection) -> Result<(), sqlx::Error> {
    sqlx::query!("SELECT pg_advisory_xact_lock($1)", LINK_LOCK).execute(&mut *tx).await?;
    Ok(())
}

/// Takes [`RELINK_QUEUE_LOCK`] until the transaction ends.
async fn lock_relink_queue(tx: &mut PgConnection) -> Result<(), sqlx::Error> {
    sqlx::query!("SELECT pg_advisory_xact_lock($1)", RELINK_QUEUE_LOCK).execute(&mut *tx).await?;
    Ok(())
}

/// Every key of an alert: its own, its evidence's, its session's, and the interfaces of the
/// instances among them.
async fn all_keys(tx: &mut PgConnection, alert: &LinkedAlert) -> Result<Vec<LinkKey>, sqlx::Error> {
    let mut keys = link_keys::own_keys(alert);
    keys.extend(link_keys::evidence_keys(tx, alert).await?);
    keys.extend(link_keys::derived_keys(tx, alert).await?);
    let interfaces = link_keys::interface_keys(tx, &alert.account_id, &keys).await?;
    keys.extend(interfaces);
    Ok(merge_windows(keys))
}

/// One entry per key, valid over the union of its windows (strongest use wins; kept if any use
/// keeps it).
fn merge_windows(keys: Vec<LinkKey>) -> Vec<LinkKey> {
    let mut by_key: BTreeMap<String, LinkKey> = BTreeMap::new();
    for k in keys {
        match by_key.get_mut(&k.key) {
            Some(seen) => {
                seen.valid_from = seen.valid_from.min(k.valid_from);
                seen.valid_until = seen.valid_until.max(k.valid_until);
                seen.kept |= k.kept;
                if k.strength == Strength::Strong {
                    seen.strength = Strength::Strong;
                }
            }
            None => {
                by_key.insert(k.key.clone(), k);
            }
        }
    }
    by_key.into_values().collect()
}

/// An incident one of the alert's keys found, and the key.
struct KeyMatch {
    incident_id: String,
    first_seen: DateTime<Utc>,
    link_key: String,
}

/// The incidents the alert belongs to, with why: a strong key, or an interface together with
/// the network it talked to.
async fn matching(
    tx: &mut PgConnection,
    alert: &LinkedAlert,
    keys: &[LinkKey],
) -> Result<BTreeMap<String, (DateTime<Utc>, String)>, sqlx::Error> {
    let names: Vec<String> = keys.iter().map(|k| k.key.clone()).collect();
    let found = sqlx::query_as!(
        KeyMatch,
        r#"SELECT k.incident_id, i.first_seen, k.link_key
           FROM incident_keys k JOIN incidents i ON i.incident_id = k.incident_id
           WHERE k.link_key = ANY($1) AND k.valid_from <= $3 AND k.valid_until >= $2 AND i.merged_into IS NULL
           ORDER BY i.first_seen, k.incident_id, k.link_key"#,
        &names,
        alert.first_seen,
        alert.last_seen,
    )
    .fetch_all(&mut *tx)
    .await?;
    let strength = |name: &str| keys.iter().find(|k| k.key == name).map(|k| k.strength);
    let mut incidents: BTreeMap<String, (DateTime<Utc>, String)> = BTreeMap::new();
    for m in &found {
        let accepted = match strength(&m.link_key) {
            Some(Strength::Strong) => Some(reason(&m.link_key)),
            Some(Strength::Interface) => {
                // The narrowest network wins the reason: the /24 before the AS.
                let network = found
                    .iter()
                    .filter(|o| o.incident_id == m.incident_id && strength(&o.link_key) == Some(Strength::Network))
                    .map(|o| o.link_key.as_str())
                    .min_by_key(|k| !k.starts_with("n24:"));
                network.map(|network| interface_reason(&m.link_key, network, alert))
            }
            _ => None,
        };
        if let Some(why) = accepted {
            incidents.entry(m.incident_id.clone()).or_insert((m.first_seen, why));
        }
    }
    Ok(incidents)
}

/// Why a flow alert joined: its interface, of an instance the intrusion touched, talked to the
/// intruder's network (`network 185.193.88.0/24 of address …`, `network AS64501 Org of address …`).
fn interface_reason(interface_key: &str, network_key: &str, alert: &LinkedAlert) -> String {
    let interface = interface_key.strip_prefix("r:").unwrap_or(interface_key);
    let address = alert.source_ip.map(|ip| ip.to_string()).unwrap_or_default();
    let network = match network_key.split_once(':') {
        Some(("asn", number)) => {
            let org =
                alert.network.as_ref().and_then(|n| n.org.as_deref()).map(|o| format!(" {o}")).unwrap_or_default();
            format!("AS{number}{org}")
        }
        _ => network_key.split_once(':').map_or(network_key, |(_, net)| net).to_string(),
    };
    format!("interface {interface} of a resource touched in the intrusion, to network {network} of address {address}")
}

/// Why an alert joined, from the key that tied it, for the analyst.
fn reason(link_key: &str) -> String {
    let (kind, value) = link_key.split_once(':').unwrap_or(("", link_key));
    let what = match kind {
        "s" => return "same session".to_string(),
        "pi" => "same principal and address",
        "ip" => "address",
        "k" => "access key",
        "p" => "principal created or assumed in the intrusion",
        "r" => "resource touched in the intrusion",
        "sid" => "source identity",
        _ => "key",
    };
    let shown = value.rsplit('|').next().unwrap_or(value);
    format!("{what} {shown}")
}

/// Merges the incidents an alert matched into the oldest (which survives: ids shown never
/// change). Returns it and why the alert joined it; `None` when nothing matched.
async fn fold(
    tx: &mut PgConnection,
    found: &BTreeMap<String, (DateTime<Utc>, String)>,
    alert: &LinkedAlert,
    outcome: &mut LinkOutcome,
) -> Result<Option<(String, String)>, sqlx::Error> {
    let mut ordered: Vec<(&String, &(DateTime<Utc>, String))> = found.iter().collect();
    ordered.sort_by(|a, b| (a.1.0, a.0).cmp(&(b.1.0, b.0)));
    let Some((survivor, (_, why))) = ordered.first() else { return Ok(None) };
    for (absorbed, _) in ordered.iter().skip(1) {
        merge(tx, survivor, absorbed, alert).await?;
        outcome.merged += 1;
    }
    Ok(Some(((*survivor).clone(), why.clone())))
}

/// Links one alert: into the incident(s) it matches (merging them), else a new one.
async fn link_one(tx: &mut PgConnection, alert: &LinkedAlert, outcome: &mut LinkOutcome) -> Result<(), sqlx::Error> {
    let keys = all_keys(tx, alert).await?;
    let found = matching(tx, alert, &keys).await?;
    let (incident_id, link_reason) = match fold(tx, &found, alert, outcome).await? {
        Some(joined) => joined,
        None => {
            let id = incident_id_for(&alert.alert_id);
            open_incident(tx, &id, alert).await?;
            outcome.opened += 1;
            (id, "first alert".to_string())
        }
    };
    sqlx::query!(
        "UPDATE alerts SET incident_id = $3, link_reason = $4 WHERE account_id = $1 AND alert_id = $2::text::uuid",
        alert.account_id,
        alert.alert_id,
        incident_id,
        link_reason,
    )
    .execute(&mut *tx)
    .await?;
    keep_keys(tx, &incident_id, &keys).await?;
    if widen_and_reopen(tx, &incident_id, alert).await? {
        outcome.reopened += 1;
    }
    outcome.linked += 1;
    Ok(())
}

/// Events that tie one principal's work to another's (a role session, a user or key created, an
/// instance handed a profile or entered), whose alerts were linked before the event was known.
const BRIDGE_EVENTS: &[&str] = &[
    "AssumeRole",
    "AssumeRoleWithSAML",
    "AssumeRoleWithWebIdentity",
    "CreateAccessKey",
    "CreateUser",
    "CreateLoginProfile",
    "AssociateIamInstanceProfile",
    "ReplaceIamInstanceProfileAssociation",
    "StartSession",
];

/// Bridged alerts re-keyed per transaction: each chunk takes the linking lock on its own, so
/// recording alerts and the API's incident reads wait for one chunk at most, never a whole pass.
pub const RELINK_CHUNK: i64 = 200;

/// Bridged alerts re-keyed per pass, at most: a pass's work stays bounded, and what it leaves
/// stays queued (`incident_relink_queue`) for the next pass, never lost.
pub const RELINKS_PER_PASS: i64 = 20_000;

/// How far from a bridging event the alerts it ties can be.
const BRIDGE_REACH_HOURS: i32 = 24;

/// How a pass re-keys bridged alerts: per transaction, and in all.
#[derive(Clone, Copy, Debug)]
pub struct RelinkLimits {
    pub chunk: i64,
    pub per_pass: i64,
}

impl Default for RelinkLimits {
    fn default() -> Self {
        Self { chunk: RELINK_CHUNK, per_pass: RELINKS_PER_PASS }
    }
}

/// Re-links the already-linked alerts a bridging event stored since `since` ties together (the
/// `(ingested, event time)` bound of a detection pass): an alert's derived keys were computed
/// when it was linked, so a role assumption imported after the alerts of both its caller and its
/// session would otherwise leave one intrusion split. The caller's alerts are re-keyed first
/// (they keep what the bridge derived), then the other side's, and what they match is merged.
pub async fn relink_bridged(
    pool: &PgPool,
    since: (Option<DateTime<Utc>>, Option<DateTime<Utc>>),
) -> Result<LinkOutcome, AlertStoreError> {
    relink_bridged_within(pool, since, RelinkLimits::default()).await
}

/// [`relink_bridged`] within `limits`: queues what the pass's bridging events tie, then works
/// through the queue (what earlier passes left included) a chunk per transaction, up to
/// `limits.per_pass` alerts; the rest waits for the next pass, with a warning.
pub async fn relink_bridged_within(
    pool: &PgPool,
    since: (Option<DateTime<Utc>>, Option<DateTime<Utc>>),
    limits: RelinkLimits,
) -> Result<LinkOutcome, AlertStoreError> {
    queue_bridged(pool, since).await?;
    let mut outcome = LinkOutcome::default();
    let mut done = 0;
    while done < limits.per_pass {
        let chunk = limits.chunk.min(limits.per_pass - done);
        let relinked = relink_queued(pool, chunk, &mut outcome).await?;
        done += relinked;
        if relinked < chunk {
            break;
        }
    }
    if done >= limits.per_pass {
        let left = cap_reached(pool).await?;
        if left > 0 {
            tracing::warn!(left, cap = limits.per_pass, "bridged alerts past this pass's cap wait for the next pass");
        }
    }
    if outcome.merged > 0 {
        tracing::info!(merged = outcome.merged, "bridging events tied incidents together");
    }
    Ok(outcome)
}

/// Bridged alerts queued for re-keying, and how many passes stopped at their cap (for metrics).
pub async fn relink_backlog(pool: &PgPool) -> Result<(i64, i64), AlertStoreError> {
    let row = sqlx::query!(
        r#"SELECT (SELECT count(*) FROM incident_relink_queue) AS "queued!",
                  coalesce((SELECT cap_hits_total FROM incident_relink_state), 0) AS "cap_hits!""#
    )
    .fetch_one(pool)
    .await?;
    Ok((row.queued, row.cap_hits))
}

/// Counts a pass that stopped at its cap; returns what it left queued.
async fn cap_reached(pool: &PgPool) -> Result<i64, AlertStoreError> {
    let left = sqlx::query_scalar!(r#"SELECT count(*) AS "left!" FROM incident_relink_queue"#).fetch_one(pool).await?;
    if left > 0 {
        sqlx::query!(
            "INSERT INTO incident_relink_state (cap_hits_total, last_cap_hit_at) VALUES (1, now())
             ON CONFLICT (only_row) DO UPDATE
             SET cap_hits_total = incident_relink_state.cap_hits_total + 1, last_cap_hit_at = now()"
        )
        .execute(pool)
        .await?;
    }
    Ok(left)
}

/// Queues the linked alerts the bridging events stored since `since` tie: the caller's own
/// (same principal, same address or key), the role session or user it assumed or created, the
/// keys it received or created, the alerts naming what it touched (link resources only: a role
/// ARN names every service's routine assumption), and the instance credentials of an instance
/// it touched. AWS services' own calls bridge nothing. Each probe is its own indexed lookup
/// (migration 0047); no linking lock is held.
async fn queue_bridged(
    pool: &PgPool,
    since: (Option<DateTime<Utc>>, Option<DateTime<Utc>>),
) -> Result<(), AlertStoreError> {
    let mut tx = crate::db::begin(pool).await?;
    // A few hundred index probes: compiling the plan (its estimate is large) took 0.6 s of 0.7.
    sqlx::query_scalar!("SELECT set_config('jit', 'off', true)").fetch_one(&mut *tx).await?;
    lock_relink_queue(&mut tx).await?;
    sqlx::query!(
        r#"WITH bridges AS MATERIALIZED (
               SELECT account_id, event_time, principal_arn, source_ip, 'key:' || access_key_id AS session_key,
                      array_remove(ARRAY[raw #>> '{responseElements,assumedRoleUser,arn}',
                                         'arn:aws:iam::' || account_id || ':user/' || (raw #>> '{requestParameters,userName}')],
                                   NULL) AS principals,
                      array_remove(ARRAY['key:' || (raw #>> '{responseElements,credentials,accessKeyId}'),
                                         'key:' || (raw #>> '{responseElements,accessKey,accessKeyId}')], NULL) AS keys,
                      ARRAY(SELECT r FROM unnest(resource_ids) r
                            WHERE r LIKE 'i-%' OR r LIKE 'eni-%' OR r LIKE 'sg-%' OR r LIKE 'AKIA%' OR r LIKE 'ASIA%')
                          AS link_ids,
                      ARRAY(SELECT r FROM unnest(resource_ids) r WHERE r LIKE 'i-%') AS instances,
                      event_time - make_interval(hours => $4) AS reach_from,
                      event_time + make_interval(hours => $4) AS reach_until
               FROM cloudtrail_events
               WHERE event_name = ANY($1) AND error_code IS NULL
                 AND principal_arn IS NOT NULL AND principal_type IS DISTINCT FROM 'AWSService'
                 AND ingested_at >= coalesce($2::timestamptz, '-infinity')
                 AND event_time >= coalesce($3::timestamptz, '-infinity')),
           tied AS (
               SELECT a.* FROM bridges b CROSS JOIN LATERAL (
                   SELECT a.account_id, a.alert_id, true AS caller, a.first_seen FROM alerts a
                   WHERE a.account_id = b.account_id AND a.principal = b.principal_arn
                     AND a.last_seen >= b.reach_from AND a.first_seen <= b.reach_until AND a.incident_id IS NOT NULL
                     AND (a.source_ip = b.source_ip OR a.session_key = b.session_key)
                   UNION ALL
                   -- Each branch only for bridges that name what it matches: an empty array
                   -- still costs a probe (a pass over 33k AssumeRole events without an assumed
                   -- ARN spent 3.4 of its 5.4 s there).
                   SELECT a.account_id, a.alert_id, false, a.first_seen FROM alerts a
                   WHERE cardinality(b.principals) > 0 AND a.account_id = b.account_id AND a.principal = ANY(b.principals)
                     AND a.last_seen >= b.reach_from AND a.first_seen <= b.reach_until AND a.incident_id IS NOT NULL
                   UNION ALL
                   SELECT a.account_id, a.alert_id, false, a.first_seen FROM alerts a
                   WHERE cardinality(b.keys) > 0 AND a.account_id = b.account_id AND a.session_key IS NOT NULL
                     AND a.session_key = ANY(b.keys)
                     AND a.last_seen >= b.reach_from AND a.first_seen <= b.reach_until AND a.incident_id IS NOT NULL
                   UNION ALL
                   SELECT a.account_id, a.alert_id, false, a.first_seen FROM alerts a
                   WHERE cardinality(b.link_ids) > 0 AND a.resources && b.link_ids AND a.account_id = b.account_id
                     AND a.last_seen >= b.reach_from AND a.first_seen <= b.reach_until AND a.incident_id IS NOT NULL
                   UNION ALL
                   SELECT a.account_id, a.alert_id, false, a.first_seen FROM alerts a
                   WHERE cardinality(b.instances) > 0 AND a.account_id = b.account_id
                     AND a.principal LIKE 'arn:%:sts::%:assumed-role/%/i-%'
                     AND split_part(a.principal, '/', 3) = ANY(b.instances)
                     AND a.last_seen >= b.reach_from AND a.first_seen <= b.reach_until AND a.incident_id IS NOT NULL
                   -- Planned once per bridge with its values: each branch an index probe.
                   OFFSET 0) a)
           INSERT INTO incident_relink_queue (account_id, alert_id, caller, first_seen)
           SELECT account_id, alert_id, bool_or(caller), min(first_seen) FROM tied
           GROUP BY account_id, alert_id
           ON CONFLICT (account_id, alert_id) DO UPDATE
           SET caller = incident_relink_queue.caller OR EXCLUDED.caller"#,
        BRIDGE_EVENTS as &[&str],
        since.0,
        since.1,
        BRIDGE_REACH_HOURS,
    )
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(())
}

/// Re-keys up to `limit` queued alerts, the callers' first, in one transaction under the
/// linking lock, and takes them off the queue. Returns how many it took.
async fn relink_queued(pool: &PgPool, limit: i64, outcome: &mut LinkOutcome) -> Result<i64, AlertStoreError> {
    let mut tx = crate::db::begin(pool).await?;
    lock_linking(&mut tx).await?;
    let queued = sqlx::query!(
        r#"SELECT account_id, alert_id::text AS "alert_id!" FROM incident_relink_queue
           ORDER BY caller DESC, first_seen, alert_id LIMIT $1"#,
        limit
    )
    .fetch_all(&mut *tx)
    .await?;
    for row in &queued {
        if let Some((alert, incident_id)) = linked_row(&mut tx, &row.account_id, &row.alert_id).await? {
            relink_one(&mut tx, &alert, &incident_id, outcome).await?;
        }
    }
    let accounts: Vec<String> = queued.iter().map(|r| r.account_id.clone()).collect();
    let alerts: Vec<String> = queued.iter().map(|r| r.alert_id.clone()).collect();
    lock_relink_queue(&mut tx).await?;
    sqlx::query!(
        "DELETE FROM incident_relink_queue q USING unnest($1::text[], $2::text[]) AS t(account_id, alert_id)
         WHERE q.account_id = t.account_id AND q.alert_id = t.alert_id::uuid",
        &accounts,
        &alerts,
    )
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(queued.len() as i64)
}

/// A linked alert as linking reads it, and its incident now (merges move it).
async fn linked_row(
    tx: &mut PgConnection,
    account_id: &str,
    alert_id: &str,
) -> Result<Option<(LinkedAlert, String)>, sqlx::Error> {
    let row = sqlx::query!(
        r#"SELECT account_id, alert_id::text AS "alert_id!", policy_id, principal, source_ip, resources,
                  session_key, first_seen, last_seen, details -> 'network' AS network,
                  details -> 'links_resources' AS links_resources, incident_id AS "incident_id!"
           FROM alerts WHERE account_id = $1 AND alert_id = $2::text::uuid AND incident_id IS NOT NULL"#,
        account_id,
        alert_id,
    )
    .fetch_optional(&mut *tx)
    .await?;
    Ok(row.map(|r| {
        let alert = linked_alert(AlertRow {
            account_id: r.account_id,
            alert_id: r.alert_id,
            policy_id: r.policy_id,
            principal: r.principal,
            source_ip: r.source_ip,
            resources: r.resources,
            session_key: r.session_key,
            first_seen: r.first_seen,
            last_seen: r.last_seen,
            network: r.network,
            links_resources: r.links_resources,
        });
        (alert, r.incident_id)
    }))
}

/// Re-keys a linked alert: its incident keeps the keys the alert has now, and the incidents
/// they match are merged with it.
async fn relink_one(
    tx: &mut PgConnection,
    alert: &LinkedAlert,
    incident_id: &str,
    outcome: &mut LinkOutcome,
) -> Result<(), sqlx::Error> {
    let keys = all_keys(tx, alert).await?;
    let mut found = matching(tx, alert, &keys).await?;
    if !found.contains_key(incident_id) {
        let first_seen = sqlx::query_scalar!("SELECT first_seen FROM incidents WHERE incident_id = $1", incident_id)
            .fetch_one(&mut *tx)
            .await?;
        found.insert(incident_id.to_string(), (first_seen, String::new()));
    }
    let survivor = fold(tx, &found, alert, outcome).await?.map_or_else(|| incident_id.to_string(), |(id, _)| id);
    keep_keys(tx, &survivor, &keys).await
}

async fn open_incident(tx: &mut PgConnection, id: &str, alert: &LinkedAlert) -> Result<(), sqlx::Error> {
    sqlx::query!(
        "INSERT INTO incidents (incident_id, account_id, first_seen, last_seen) VALUES ($1, $2, $3, $4)
         ON CONFLICT (incident_id) DO NOTHING",
        id,
        alert.account_id,
        alert.first_seen,
        alert.last_seen,
    )
    .execute(&mut *tx)
    .await?;
    Ok(())
}

/// Stores the keys the incident keeps (widening the windows of keys it has).
async fn keep_keys(tx: &mut PgConnection, incident_id: &str, keys: &[LinkKey]) -> Result<(), sqlx::Error> {
    let kept: Vec<&LinkKey> = keys.iter().filter(|k| k.kept).collect();
    let names: Vec<String> = kept.iter().map(|k| k.key.clone()).collect();
    let from: Vec<DateTime<Utc>> = kept.iter().map(|k| k.valid_from).collect();
    let until: Vec<DateTime<Utc>> = kept.iter().map(|k| k.valid_until).collect();
    sqlx::query!(
        "INSERT INTO incident_keys (link_key, incident_id, valid_from, valid_until)
         SELECT k, $1, f, u FROM unnest($2::text[], $3::timestamptz[], $4::timestamptz[]) AS t(k, f, u)
         ON CONFLICT (link_key, incident_id) DO UPDATE
         SET valid_from = LEAST(incident_keys.valid_from, EXCLUDED.valid_from),
             valid_until = GREATEST(incident_keys.valid_until, EXCLUDED.valid_until)",
        incident_id,
        &names,
        &from,
        &until,
    )
    .execute(&mut *tx)
    .await?;
    Ok(())
}

/// Widens the incident to the alert's time; a closed incident that gets a new alert is open
/// again (the intrusion goes on), and its history says why.
async fn widen_and_reopen(tx: &mut PgConnection, incident_id: &str, alert: &LinkedAlert) -> Result<bool, sqlx::Error> {
    let old = sqlx::query_scalar!(
        "UPDATE incidents i SET first_seen = LEAST(i.first_seen, $2), last_seen = GREATEST(i.last_seen, $3),
                status = CASE WHEN i.status IN ('resolved', 'dismissed') THEN 'open' ELSE i.status END
         FROM incidents before WHERE before.incident_id = i.incident_id AND i.incident_id = $1
         RETURNING before.status",
        incident_id,
        alert.first_seen,
        alert.last_seen,
    )
    .fetch_one(&mut *tx)
    .await?;
    let reopened = IncidentStatus::parse(&old).is_some_and(IncidentStatus::is_closed);
    if reopened {
        let why = format!("new alert {} ({})", alert.alert_id, alert.policy_id);
        record_change(tx, incident_id, "skywarden", "status", Some(&old), Some("open"), &why).await?;
    }
    Ok(reopened)
}

/// Folds `absorbed` into `survivor`: its alerts, keys, owner (if the survivor has none) and
/// status (if further along).
async fn merge(tx: &mut PgConnection, survivor: &str, absorbed: &str, alert: &LinkedAlert) -> Result<(), sqlx::Error> {
    // An analyst's change (`incident_pages::update`, which locks its row) either lands before
    // the statuses are read here or waits for the merge: never lost, nor recorded from a stale
    // value. Both rows in id order, as any other locker of two would.
    sqlx::query!(
        "SELECT incident_id FROM incidents WHERE incident_id IN ($1, $2) ORDER BY incident_id FOR UPDATE",
        survivor,
        absorbed,
    )
    .fetch_all(&mut *tx)
    .await?;
    keep_status(tx, survivor, absorbed).await?;
    // Listed no more (it will have no alerts): each alert that leaves it is then a loss the
    // trigger of migration 0049 stops at, not a new reading of the rule over what remains.
    sqlx::query!("UPDATE incidents SET listed = false WHERE incident_id = $1 AND listed", absorbed)
        .execute(&mut *tx)
        .await?;
    sqlx::query!("UPDATE alerts SET incident_id = $1 WHERE incident_id = $2", survivor, absorbed)
        .execute(&mut *tx)
        .await?;
    sqlx::query!(
        "INSERT INTO incident_keys (link_key, incident_id, valid_from, valid_until)
         SELECT link_key, $1, valid_from, valid_until FROM incident_keys WHERE incident_id = $2
         ON CONFLICT (link_key, incident_id) DO UPDATE
         SET valid_from = LEAST(incident_keys.valid_from, EXCLUDED.valid_from),
             valid_until = GREATEST(incident_keys.valid_until, EXCLUDED.valid_until)",
        survivor,
        absorbed,
    )
    .execute(&mut *tx)
    .await?;
    sqlx::query!("DELETE FROM incident_keys WHERE incident_id = $1", absorbed).execute(&mut *tx).await?;
    sqlx::query!(
        "UPDATE incidents s SET first_seen = LEAST(s.first_seen, a.first_seen), last_seen = GREATEST(s.last_seen, a.last_seen),
                owner = coalesce(s.owner, a.owner)
         FROM incidents a WHERE s.incident_id = $1 AND a.incident_id = $2",
        survivor,
        absorbed,
    )
    .execute(&mut *tx)
    .await?;
    sqlx::query!(
        "UPDATE incidents SET merged_into = $1, status = 'merged' WHERE incident_id = $2 OR merged_into = $2",
        survivor,
        absorbed,
    )
    .execute(&mut *tx)
    .await?;
    let why = format!("alert {} ({}) tied it to {survivor}", alert.alert_id, alert.policy_id);
    record_change(tx, absorbed, "skywarden", "merged_into", None, Some(survivor), &why).await?;
    let why = format!("alert {} ({}) tied {absorbed} to it", alert.alert_id, alert.policy_id);
    record_change(tx, survivor, "skywarden", "merged", None, Some(absorbed), &why).await
}

/// Where a merged incident stands: the further along of the two open statuses (an analyst
/// investigating either part still is), else the survivor's (a new alert reopens it anyway).
fn merged_status(survivor: IncidentStatus, absorbed: IncidentStatus) -> IncidentStatus {
    let rank = |status| match status {
        IncidentStatus::Open => 1,
        IncidentStatus::Investigating => 2,
        IncidentStatus::Contained => 3,
        _ => 0,
    };
    if rank(absorbed) > rank(survivor) { absorbed } else { survivor }
}

/// Gives the survivor of a merge the absorbed incident's status when further along, and says
/// so in its history.
async fn keep_status(tx: &mut PgConnection, survivor: &str, absorbed: &str) -> Result<(), sqlx::Error> {
    let row = sqlx::query!(
        "SELECT s.status AS survivor, a.status AS absorbed FROM incidents s, incidents a
         WHERE s.incident_id = $1 AND a.incident_id = $2",
        survivor,
        absorbed,
    )
    .fetch_one(&mut *tx)
    .await?;
    let (Some(old), Some(theirs)) = (IncidentStatus::parse(&row.survivor), IncidentStatus::parse(&row.absorbed)) else {
        return Ok(());
    };
    let new = merged_status(old, theirs);
    if new == old {
        return Ok(());
    }
    sqlx::query!("UPDATE incidents SET status = $2 WHERE incident_id = $1", survivor, new.as_str())
        .execute(&mut *tx)
        .await?;
    let why = format!("merged with {absorbed}, which was {}", theirs.as_str());
    record_change(tx, survivor, "skywarden", "status", Some(old.as_str()), Some(new.as_str()), &why).await
}

/// Records a change of an incident: who, which field, from what to what, why.
pub async fn record_change(
    tx: &mut PgConnection,
    incident_id: &str,
    actor: &str,
    field: &str,
    old: Option<&str>,
    new: Option<&str>,
    reason: &str,
) -> Result<(), sqlx::Error> {
    sqlx::query!(
        "INSERT INTO incident_changes (incident_id, actor, field, old_value, new_value, reason)
         VALUES ($1, $2, $3, $4, $5, $6)",
        incident_id,
        actor,
        field,
        old,
        new,
        reason,
    )
    .execute(&mut *tx)
    .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_read_back_and_ids_are_stable() {
        for status in IncidentStatus::SETTABLE {
            assert_eq!(IncidentStatus::parse(status.as_str()), Some(status));
        }
        assert_eq!(IncidentStatus::parse("closed"), None);
        let id = incident_id_for("3f2b1c4e-0000-0000-0000-000000000001");
        assert!(is_incident_id(&id), "{id}");
        assert_eq!(id, incident_id_for("3f2b1c4e-0000-0000-0000-000000000001"));
        assert!(!is_incident_id("inc-xyz"));
    }

    #[test]
    fn a_merge_keeps_the_status_furthest_along() {
        use IncidentStatus::*;
        assert_eq!(merged_status(Open, Investigating), Investigating);
        assert_eq!(merged_status(Contained, Investigating), Contained);
        assert_eq!(merged_status(Resolved, Investigating), Investigating, "the open part wins");
        assert_eq!(merged_status(Open, Dismissed), Open);
        assert_eq!(merged_status(Resolved, Dismissed), Resolved);
    }

    #[test]
    fn reasons_name_what_tied_the_alert() {
        assert_eq!(reason("ip:198.51.100.7"), "address 198.51.100.7");
        assert_eq!(reason("s:111122223333|alice|198.51.100.7"), "same session");
        assert_eq!(reason("pi:arn:aws:iam::1:user/alice|198.51.100.7"), "same principal and address 198.51.100.7");
        let at: DateTime<Utc> = "2026-03-01T10:00:00Z".parse().unwrap();
        let flow = LinkedAlert {
            account_id: "111122223333".into(),
            alert_id: "00000000-0000-0000-0000-000000000002".into(),
            policy_id: "aws-flow-exfiltration-volume".into(),
            principal: None,
            source_ip: "1.2.3.4".parse().ok(),
            resources: vec!["eni-1".into()],
            session_key: None,
            first_seen: at,
            last_seen: at,
            network: Some(AddressNetwork { asn: 12345, org: Some("Example Org".into()), is_aws: false }),
            shared_address: false,
            links_resources: true,
        };
        let why = interface_reason("r:eni-1", "asn:12345", &flow);
        assert!(why.contains("eni-1") && why.ends_with("network AS12345 Example Org of address 1.2.3.4"), "{why}");
        let why = interface_reason("r:eni-1", "n24:1.2.3.0/24", &flow);
        assert!(why.ends_with("network 1.2.3.0/24 of address 1.2.3.4"), "{why}");
    }
}
