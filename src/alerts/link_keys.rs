//! What can tie an alert to an intrusion: its keys. An alert's own keys (its session, its
//! principal at its address, its address, the access keys and resources it names), the keys of
//! its evidence events, and the keys its session *derived*: the role sessions it assumed, the
//! users and access keys it created, the instances and security groups it changed and their
//! network interfaces. Each key is valid for a time: an address links alerts a day apart, an
//! access key the intruder created links for a month.
//!
//! Keys are strings with a kind prefix: `s:` session, `pi:` principal at an address, `ip:`
//! address, `sip:` an address shared by strangers (Tor, VPN, hosting, AWS), `n24:` its /24 (or
//! /48) network, `asn:` its autonomous system, `k:` access key, `p:` principal, `r:` resource,
//! `sid:` source identity.

use std::net::IpAddr;

use chrono::{DateTime, Duration, Utc};
use sqlx::PgConnection;

use crate::net::is_internal;

/// Whether an address can tie alerts together: any address outside the VPC's own ranges,
/// loopback, link-local and multicast. Documentation ranges count (test and sample data use
/// them as the internet).
pub fn is_linkable(ip: IpAddr) -> bool {
    let special = match ip {
        IpAddr::V4(v4) => v4.is_loopback() || v4.is_link_local() || v4.is_unspecified() || v4.is_multicast(),
        IpAddr::V6(v6) => v6.is_loopback() || v6.is_unspecified() || v6.is_multicast() || v6.is_unicast_link_local(),
    };
    !special && !is_internal(ip)
}

/// How one key may link.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Strength {
    /// Enough on its own.
    Strong,
    /// A network interface: links a flow alert only together with a [`Strength::Network`] key of
    /// the same incident (the interface talked to the intruder's network).
    Interface,
    /// A /24 or an autonomous system: links only with an interface (a whole network is too
    /// wide alone).
    Network,
}

/// One key of an alert, and while it links.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LinkKey {
    pub key: String,
    pub valid_from: DateTime<Utc>,
    pub valid_until: DateTime<Utc>,
    pub strength: Strength,
    /// Whether the incident keeps the key: a principal alone is only looked up (a principal's
    /// own alerts a day apart are not one intrusion unless something else ties them), but a
    /// principal the intruder created or assumed is kept.
    pub kept: bool,
}

/// An alert as the engine sees it.
#[derive(Clone, Debug)]
pub struct LinkedAlert {
    pub account_id: String,
    pub alert_id: String,
    pub policy_id: String,
    pub principal: Option<String>,
    pub source_ip: Option<IpAddr>,
    pub resources: Vec<String>,
    pub session_key: Option<String>,
    pub first_seen: DateTime<Utc>,
    pub last_seen: DateTime<Utc>,
    /// The autonomous system of `source_ip`, as the alert recorded it (`details.network`).
    pub network: Option<AddressNetwork>,
    /// `source_ip` is shared by strangers (a Tor exit, a VPN, a hosting provider, AWS, as
    /// `details.network` flagged it): the address alone is no tie.
    pub shared_address: bool,
    /// Whether the alert's resources tie it (not when they are the target of traffic from
    /// outside, as in a GuardDuty port probe: `details.links_resources: false`).
    pub links_resources: bool,
}

/// The autonomous system an address belongs to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AddressNetwork {
    pub asn: u32,
    pub org: Option<String>,
    /// In AWS's published ranges (`--aws-ip-ranges`).
    pub is_aws: bool,
}

/// Whether `details.network` flags the address as shared by strangers: Tor, a VPN, a hosting
/// provider, AWS, or an AS that never links ([`SHARED_ASNS`]).
pub fn is_shared_address(network: &serde_json::Value) -> bool {
    let flag = |name: &str| network.get(name).and_then(serde_json::Value::as_bool) == Some(true);
    ["is_tor", "is_vpn", "is_hosting", "is_aws"].into_iter().any(flag)
        || AddressNetwork::from_details(network).is_some_and(|n| !n.links())
}

impl AddressNetwork {
    /// From an alert's `details.network` (`asn`, `as_org`, `is_aws`).
    pub fn from_details(network: &serde_json::Value) -> Option<Self> {
        let asn = u32::try_from(network.get("asn")?.as_u64()?).ok()?;
        let org = network.get("as_org").and_then(|o| o.as_str()).map(str::to_owned);
        let is_aws = network.get("is_aws").and_then(serde_json::Value::as_bool).unwrap_or(false);
        Some(Self { asn, org, is_aws })
    }

    /// Whether the AS can tie alerts (with an interface): not AWS's, whose endpoints every
    /// instance talks to, nor a cloud or CDN that fronts a large part of the internet.
    pub fn links(&self) -> bool {
        !self.is_aws && !SHARED_ASNS.contains(&self.asn)
    }
}

/// Autonomous systems that never link: AWS's (the regions, CloudFront, Global Accelerator; the
/// same list as the instance-credentials detector's) and the large clouds and CDNs whose
/// addresses serve countless unrelated sites (Google, Microsoft, Cloudflare, Akamai, Fastly).
pub const SHARED_ASNS: &[u32] = &[
    16509, 14618, 8987, 7224, 38895, 10124, 9059, 17493, 135630, // AWS
    15169, 396982, 19527, // Google
    8075, 8068, 8069,  // Microsoft
    13335, // Cloudflare
    20940, 16625, 16702, 12222, // Akamai
    54113, // Fastly
];

/// How long each kind of key links after (and before) it was seen.
pub fn window(kind: &str, value: &str) -> Duration {
    match kind {
        // Temporary keys live hours (36 at most).
        "k" if value.starts_with("ASIA") => Duration::hours(36),
        // What the intruder created lasts: a backdoor user or key can be used weeks later.
        "k" | "p" => Duration::days(30),
        "r" => Duration::days(7),
        _ => Duration::hours(24),
    }
}

fn key(kind: &str, value: &str, from: DateTime<Utc>, until: DateTime<Utc>, strength: Strength) -> LinkKey {
    let w = window(kind, value);
    LinkKey { key: format!("{kind}:{value}"), valid_from: from - w, valid_until: until + w, strength, kept: true }
}

/// The /24 of an IPv4 address, the /48 of an IPv6 one.
pub fn network_of(ip: IpAddr) -> String {
    match ip {
        IpAddr::V4(v4) => {
            let [a, b, c, _] = v4.octets();
            format!("{a}.{b}.{c}.0/24")
        }
        IpAddr::V6(v6) => {
            let s = v6.segments();
            format!("{:x}:{:x}:{:x}::/48", s[0], s[1], s[2])
        }
    }
}

/// Resources that identify what an intruder touched: instances, interfaces, security groups,
/// access keys. (Buckets and roles are shared by too much benign work to tie alerts alone.)
pub fn is_link_resource(id: &str) -> bool {
    ["i-", "eni-", "sg-", "AKIA", "ASIA"].iter().any(|p| id.starts_with(p))
}

fn resource_key(id: &str, from: DateTime<Utc>, until: DateTime<Utc>) -> LinkKey {
    if id.starts_with("AKIA") || id.starts_with("ASIA") {
        key("k", id, from, until, Strength::Strong)
    } else if id.starts_with("eni-") {
        key("r", id, from, until, Strength::Interface)
    } else {
        key("r", id, from, until, Strength::Strong)
    }
}

/// The instance whose credentials a role session is (`…:assumed-role/ROLE/i-0abc…`).
pub fn session_instance(principal: &str) -> Option<&str> {
    let session = principal.rsplit('/').next()?;
    (principal.contains(":assumed-role/") && session.starts_with("i-")).then_some(session)
}

/// The keys of an outside address. Strangers share a Tor exit or a VPN's address: such an
/// address is stored as `sip:`, which ties only a flow (with an interface), whoever looks it up;
/// any other as `ip:`, enough alone. Each alert also looks the other kind up in the weaker role,
/// so the decision is the storing alert's, made when it is stored: an alert that knows nothing
/// of the address (a finding, a process started without the lists) never turns a stored shared
/// address into a tie, and a flow still finds either.
fn address_keys(ip: IpAddr, shared: bool, from: DateTime<Utc>, until: DateTime<Utc>) -> [LinkKey; 2] {
    let ip = ip.to_string();
    let (kept, looked_up) = if shared {
        (key("sip", &ip, from, until, Strength::Network), key("ip", &ip, from, until, Strength::Network))
    } else {
        (key("ip", &ip, from, until, Strength::Strong), key("sip", &ip, from, until, Strength::Network))
    };
    [kept, LinkKey { kept: false, ..looked_up }]
}

/// The alert's own keys: nothing read from the database.
pub fn own_keys(alert: &LinkedAlert) -> Vec<LinkKey> {
    let (from, until) = (alert.first_seen, alert.last_seen);
    let mut keys = Vec::new();
    if let Some(session) = &alert.session_key {
        keys.push(key("s", &format!("{}|{session}", alert.account_id), from, until, Strength::Strong));
        if let Some(access_key) = session.strip_prefix("key:") {
            keys.push(key("k", access_key, from, until, Strength::Strong));
        }
    }
    let public = alert.source_ip.filter(|ip| is_linkable(*ip));
    if let Some(ip) = public {
        keys.extend(address_keys(ip, alert.shared_address, from, until));
        keys.push(key("n24", &network_of(ip), from, until, Strength::Network));
        if let Some(network) = alert.network.as_ref().filter(|n| n.links()) {
            keys.push(key("asn", &network.asn.to_string(), from, until, Strength::Network));
        }
    }
    if let Some(principal) = &alert.principal {
        if let Some(ip) = public {
            keys.push(key("pi", &format!("{principal}|{ip}"), from, until, Strength::Strong));
        }
        keys.push(LinkKey { kept: false, ..key("p", principal, from, until, Strength::Strong) });
        // Kept: whoever later hands the instance a profile or enters it (a bridge imported late)
        // finds the incident of its credentials' use. Two uses of one instance's credentials are
        // one intrusion chain; such an alert alone is no listed incident.
        if let Some(instance) = session_instance(principal) {
            keys.push(key("r", instance, from, until, Strength::Strong));
        }
    }
    for resource in alert.resources.iter().filter(|r| alert.links_resources && is_link_resource(r)) {
        keys.push(resource_key(resource, from, until));
    }
    keys
}

/// The inventory's type of an EC2 instance (`inventory::resource_types::INSTANCE`, which this
/// layer may not import).
const INSTANCE_TYPE: &str = "ec2:instance";

/// Events read per alert, at most (an alert's evidence, or its session's changes).
const MAX_EVENTS: i64 = 500;

/// Keys of the alert's evidence events: the access keys they were signed with, the source
/// identity a role chain carries (looked up only: it is free text, often the user's name in every
/// account, so only the `AssumeRole` that set it is kept, by [`derived_keys`]); and of the
/// principals it names besides its own
/// ([`named_principal_keys`]).
pub async fn evidence_keys(tx: &mut PgConnection, alert: &LinkedAlert) -> Result<Vec<LinkKey>, sqlx::Error> {
    let rows = sqlx::query!(
        r#"SELECT c.event_time, c.access_key_id,
                  c.raw #>> '{userIdentity,sessionContext,sourceIdentity}' AS source_identity
           FROM alert_evidence e
           JOIN cloudtrail_events c ON c.account_id = e.account_id AND c.event_time = e.event_time AND c.event_id = e.event_id
           WHERE e.account_id = $1 AND e.alert_id = $2::text::uuid
           LIMIT $3"#,
        alert.account_id,
        alert.alert_id,
        MAX_EVENTS,
    )
    .fetch_all(&mut *tx)
    .await?;
    let mut keys = Vec::new();
    for row in rows {
        if let Some(access_key) = row.access_key_id.filter(|k| !k.is_empty()) {
            keys.push(key("k", &access_key, row.event_time, row.event_time, Strength::Strong));
        }
        if let Some(identity) = row.source_identity.filter(|s| !s.is_empty()) {
            let sid = key("sid", &identity, row.event_time, row.event_time, Strength::Strong);
            keys.push(LinkKey { kept: false, ..sid });
        }
    }
    keys.extend(named_principal_keys(tx, alert).await?);
    Ok(keys)
}

/// The most principals an alert names for linking that are read.
const MAX_NAMED_PRINCIPALS: i64 = 5_000;

/// Keys of every principal the alert stands for besides its own, each at its address
/// (`details.link_principals`: a password spray's principals, of which its sampled evidence holds
/// only some): each one's own alerts from that address (a login from an anonymising network,
/// whose address alone ties nothing) join the spray.
async fn named_principal_keys(tx: &mut PgConnection, alert: &LinkedAlert) -> Result<Vec<LinkKey>, sqlx::Error> {
    let rows = sqlx::query!(
        r#"SELECT p ->> 'principal' AS principal, p ->> 'address' AS address
           FROM alerts a
           CROSS JOIN LATERAL jsonb_array_elements(CASE WHEN jsonb_typeof(a.details -> 'link_principals') = 'array'
                                                       THEN a.details -> 'link_principals' ELSE '[]' END) p
           WHERE a.account_id = $1 AND a.alert_id = $2::text::uuid
           LIMIT $3"#,
        alert.account_id,
        alert.alert_id,
        MAX_NAMED_PRINCIPALS,
    )
    .fetch_all(&mut *tx)
    .await?;
    Ok(rows
        .into_iter()
        .filter_map(|row| Some((row.principal?, row.address?.parse::<IpAddr>().ok()?)))
        .filter(|(_, ip)| is_linkable(*ip))
        .map(|(principal, ip)| {
            key("pi", &format!("{principal}|{ip}"), alert.first_seen, alert.last_seen, Strength::Strong)
        })
        .collect())
}

/// Keys the alert's session derived: what the same principal, from the same address (or with
/// the same temporary key), created, assumed or changed around the alert. The principal's own
/// work from elsewhere is not the intruder's.
pub async fn derived_keys(tx: &mut PgConnection, alert: &LinkedAlert) -> Result<Vec<LinkKey>, sqlx::Error> {
    let session_key = alert.session_key.as_deref().and_then(|s| s.strip_prefix("key:"));
    let public = alert.source_ip.filter(|ip| is_linkable(*ip));
    if alert.principal.is_none() || (public.is_none() && session_key.is_none()) {
        return Ok(Vec::new());
    }
    let around = Duration::hours(24);
    let rows = sqlx::query!(
        r#"SELECT event_time, event_name, resource_ids,
                  raw #>> '{responseElements,accessKey,accessKeyId}' AS created_key,
                  raw #>> '{responseElements,credentials,accessKeyId}' AS assumed_key,
                  raw #>> '{responseElements,assumedRoleUser,arn}' AS assumed_arn,
                  raw #>> '{requestParameters,userName}' AS user_name,
                  raw #>> '{requestParameters,sourceIdentity}' AS source_identity
           FROM cloudtrail_events
           WHERE account_id = $1 AND principal_arn = $2 AND event_time BETWEEN $3 AND $4
             -- The same rows: walks the principal's successful writes (migration 0052).
             AND lower(principal_arn) = lower($2)
             AND error_code IS NULL AND read_only IS NOT TRUE
             AND (source_ip = $5::text::inet OR access_key_id = $6)
           ORDER BY event_time
           LIMIT $7"#,
        alert.account_id,
        alert.principal,
        alert.first_seen - around,
        alert.last_seen + around,
        public.map(|ip| ip.to_string()),
        session_key,
        MAX_EVENTS,
    )
    .fetch_all(&mut *tx)
    .await?;
    let mut keys = Vec::new();
    for row in rows {
        let at = row.event_time;
        for resource in row.resource_ids.iter().filter(|r| is_link_resource(r)) {
            keys.push(resource_key(resource, at, at));
        }
        for access_key in [row.created_key, row.assumed_key].into_iter().flatten() {
            keys.push(key("k", &access_key, at, at, Strength::Strong));
        }
        if let Some(arn) = row.assumed_arn {
            keys.push(key("p", &arn, at, at, Strength::Strong));
        }
        // The identity set on AssumeRole follows every role the session chains into.
        if let Some(identity) = row.source_identity.filter(|s| !s.is_empty()) {
            keys.push(key("sid", &identity, at, at, Strength::Strong));
        }
        let creates_user = matches!(
            row.event_name.as_deref(),
            Some("CreateUser" | "CreateLoginProfile" | "UpdateLoginProfile" | "CreateAccessKey")
        );
        if let (true, Some(user)) = (creates_user, row.user_name) {
            keys.push(key("p", &format!("arn:aws:iam::{}:user/{user}", alert.account_id), at, at, Strength::Strong));
        }
    }
    Ok(keys)
}

/// The network interfaces of the instances among `keys`, from the inventory (every version, so a
/// terminated instance's too) and from flow records that name their instance (only custom
/// formats do), as interface keys valid while the instance key is.
pub async fn interface_keys(
    tx: &mut PgConnection,
    account_id: &str,
    keys: &[LinkKey],
) -> Result<Vec<LinkKey>, sqlx::Error> {
    let instances: Vec<&LinkKey> = keys.iter().filter(|k| k.key.starts_with("r:i-")).collect();
    if instances.is_empty() {
        return Ok(Vec::new());
    }
    let ids: Vec<String> = instances.iter().map(|k| k.key[2..].to_string()).collect();
    let from = instances.iter().map(|k| k.valid_from).min().unwrap_or_default();
    let until = instances.iter().map(|k| k.valid_until).max().unwrap_or_default();
    let rows = sqlx::query!(
        r#"SELECT DISTINCT instance AS "instance!", interface AS "interface!" FROM (
               SELECT r.resource_id AS instance, n AS interface
               FROM resources r, jsonb_array_elements_text(coalesce(r.config -> 'network_interface_ids', '[]')) n
               WHERE r.account_id = $1 AND r.resource_type = $6 AND r.resource_id = ANY($2)
               UNION
               SELECT v.resource_id, n
               FROM resource_versions v, jsonb_array_elements_text(coalesce(v.config -> 'network_interface_ids', '[]')) n
               WHERE v.account_id = $1 AND v.resource_type = $6 AND v.resource_id = ANY($2)
               UNION
               SELECT instance_id, interface_id FROM flow_records
               WHERE account_id = $1 AND instance_id = ANY($2) AND bucket_time BETWEEN $3 AND $4) found
           WHERE interface LIKE 'eni-%'
           LIMIT $5"#,
        account_id,
        &ids,
        from,
        until,
        MAX_EVENTS,
        INSTANCE_TYPE,
    )
    .fetch_all(&mut *tx)
    .await?;
    Ok(rows
        .into_iter()
        .filter_map(|row| {
            let instance = instances.iter().find(|k| k.key[2..] == row.instance)?;
            Some(LinkKey {
                key: format!("r:{}", row.interface),
                valid_from: instance.valid_from,
                valid_until: instance.valid_until,
                strength: Strength::Interface,
                kept: true,
            })
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn alert(principal: &str, ip: &str, session: Option<&str>, resources: &[&str]) -> LinkedAlert {
        let at: DateTime<Utc> = "2026-03-01T10:00:00Z".parse().unwrap();
        LinkedAlert {
            account_id: "111122223333".into(),
            alert_id: "00000000-0000-0000-0000-000000000001".into(),
            policy_id: "p".into(),
            principal: Some(principal.into()),
            source_ip: ip.parse().ok(),
            resources: resources.iter().map(|r| r.to_string()).collect(),
            session_key: session.map(str::to_string),
            first_seen: at,
            last_seen: at,
            network: None,
            shared_address: false,
            links_resources: true,
        }
    }

    fn names(keys: &[LinkKey]) -> Vec<(&str, Strength, bool)> {
        keys.iter().map(|k| (k.key.as_str(), k.strength, k.kept)).collect()
    }

    #[test]
    fn a_console_alert_keys_its_session_address_and_principal() {
        let user = "arn:aws:iam::111122223333:user/alice";
        let a = alert(user, "198.51.100.7", Some("key:ASIAEXAMPLE"), &["sg-0abc", "my-bucket", "eni-1"]);
        let keys = own_keys(&a);
        assert_eq!(
            names(&keys),
            [
                ("s:111122223333|key:ASIAEXAMPLE", Strength::Strong, true),
                ("k:ASIAEXAMPLE", Strength::Strong, true),
                ("ip:198.51.100.7", Strength::Strong, true),
                ("sip:198.51.100.7", Strength::Network, false),
                ("n24:198.51.100.0/24", Strength::Network, true),
                ("pi:arn:aws:iam::111122223333:user/alice|198.51.100.7", Strength::Strong, true),
                ("p:arn:aws:iam::111122223333:user/alice", Strength::Strong, false),
                ("r:sg-0abc", Strength::Strong, true),
                ("r:eni-1", Strength::Interface, true),
            ]
        );
        // An address links a day either side; what the intruder touched, a week.
        let ip = keys.iter().find(|k| k.key.starts_with("ip:")).unwrap();
        assert_eq!(ip.valid_until - ip.valid_from, Duration::hours(48));
        let sg = keys.iter().find(|k| k.key == "r:sg-0abc").unwrap();
        assert_eq!(sg.valid_until - a.last_seen, Duration::days(7));
    }

    #[test]
    fn private_addresses_and_instance_sessions() {
        let role = "arn:aws:sts::111122223333:assumed-role/app/i-0123456789abcdef0";
        let keys = own_keys(&alert(role, "10.0.1.5", None, &[]));
        assert_eq!(
            names(&keys),
            [
                ("p:arn:aws:sts::111122223333:assumed-role/app/i-0123456789abcdef0", Strength::Strong, false),
                ("r:i-0123456789abcdef0", Strength::Strong, true),
            ],
            "a private address ties nothing; an instance's credentials point at the instance (kept)"
        );
        assert_eq!(session_instance("arn:aws:sts::1:assumed-role/app/alice"), None);
        assert_eq!(network_of("2001:db8:1:2::5".parse().unwrap()), "2001:db8:1::/48");
    }

    #[test]
    fn a_shared_address_ties_only_a_flow_and_probed_resources_tie_nothing() {
        let user = "arn:aws:iam::111122223333:user/alice";
        // The address key the alert stores, and how it looks up the other kind.
        let address = |a: &LinkedAlert| -> Vec<(String, Strength, bool)> {
            own_keys(a)
                .into_iter()
                .filter(|k| k.key.starts_with("ip:") || k.key.starts_with("sip:"))
                .map(|k| (k.key, k.strength, k.kept))
                .collect()
        };
        let (ip, sip) = ("ip:185.220.101.4".to_string(), "sip:185.220.101.4".to_string());
        for network in [
            serde_json::json!({"asn": 60729, "is_tor": true}),
            serde_json::json!({"asn": null, "is_vpn": true}),
            serde_json::json!({"asn": 64501, "is_hosting": true}),
            serde_json::json!({"asn": 16509}),
        ] {
            let shared =
                LinkedAlert { shared_address: is_shared_address(&network), ..alert(user, "185.220.101.4", None, &[]) };
            assert_eq!(
                address(&shared),
                [(sip.clone(), Strength::Network, true), (ip.clone(), Strength::Network, false)],
                "{network}"
            );
        }
        let plain = serde_json::json!({"asn": 64501, "is_tor": false, "is_vpn": false, "is_hosting": false});
        assert!(!is_shared_address(&plain));
        assert_eq!(
            address(&alert(user, "185.220.101.4", None, &[])),
            [(ip, Strength::Strong, true), (sip, Strength::Network, false)],
            "an alert that knows nothing of the address stores it as a tie, and finds a shared one only as a network"
        );
        let probed = LinkedAlert { links_resources: false, ..alert(user, "198.51.100.7", None, &["i-0abc", "eni-1"]) };
        assert!(own_keys(&probed).iter().all(|k| !k.key.starts_with("r:")), "{:?}", names(&own_keys(&probed)));
    }

    #[test]
    fn an_address_keys_its_autonomous_system_unless_it_is_shared() {
        let user = "arn:aws:iam::111122223333:user/alice";
        let with = |details: serde_json::Value, ip: &str| LinkedAlert {
            network: AddressNetwork::from_details(&details),
            ..alert(user, ip, None, &[])
        };
        let asn_keys = |a: &LinkedAlert| -> Vec<(String, Strength)> {
            own_keys(a).into_iter().filter(|k| k.key.starts_with("asn:")).map(|k| (k.key, k.strength)).collect()
        };
        let hosting = with(serde_json::json!({"asn": 64501, "as_org": "Example Hosting"}), "198.51.100.7");
        assert_eq!(asn_keys(&hosting), [("asn:64501".to_string(), Strength::Network)]);
        assert!(asn_keys(&with(serde_json::json!({"asn": 16509}), "198.51.100.7")).is_empty(), "AWS's AS");
        assert!(asn_keys(&with(serde_json::json!({"asn": 64501, "is_aws": true}), "198.51.100.7")).is_empty());
        assert!(asn_keys(&with(serde_json::json!({"asn": 64501}), "10.0.1.5")).is_empty(), "a private address");
        assert!(asn_keys(&with(serde_json::json!({"asn": null}), "198.51.100.7")).is_empty());
    }
}
