//! Detectors on the network an API call came from (the context ingest stored, see
//! docs/network-context.md):
//!
//! - `aws-instance-credentials-used-outside`: the credentials of a role session issued to an
//!   EC2 instance (session name `i-…`) used from a public address that is not AWS's (not in
//!   AWS's ASNs nor its published ranges) and not one of the account's own instances (that last
//!   check is the runner's: it reads the inventory). GuardDuty's
//!   `InstanceCredentialExfiltration.OutsideAWS`.
//! - `aws-login-from-anonymizing-network`: a console login or API call from a Tor exit, a VPN or
//!   a hosting provider by a principal that never used one in its baseline (the runner reads
//!   the baseline from stored events).
//!
//! Both are pure over one event here; the runner adds what needs the database.

use serde_json::json;

use super::{ANONYMIZING_NETWORK, Detectors, INSTANCE_CREDENTIALS};
use crate::detect::PolicyEvent;
use crate::model::Finding;
use crate::net::is_public;

/// AWS's own autonomous systems: AMAZON-02 (16509, EC2 and most services), AMAZON-AES
/// (14618, us-east-1), and the regional ones AWS announces its ranges from (8987 Ireland,
/// 7224 AMAZON-AS, 38895 AP, 10124 and 9059 Tokyo, 17493 Singapore, 135630 Ningxia).
pub const AWS_ASNS: &[u32] = &[16509, 14618, 8987, 7224, 38895, 10124, 9059, 17493, 135630];

/// The instance a role session was issued to: `arn:aws:sts::…:assumed-role/ROLE/i-0abc…`.
pub fn instance_session(arn: &str) -> Option<(&str, &str)> {
    let rest = arn.split_once(":assumed-role/")?.1;
    let (role, session) = rest.rsplit_once('/')?;
    let hex = session.strip_prefix("i-")?;
    let is_instance = (8..=17).contains(&hex.len()) && hex.bytes().all(|b| b.is_ascii_hexdigit());
    is_instance.then_some((role, session))
}

/// Whether the source address is AWS's: in its published ranges, or announced by one of its ASNs.
fn from_aws(detectors: &Detectors, event: &PolicyEvent) -> Option<bool> {
    if event.network.is_aws == Some(true) {
        return Some(true);
    }
    let aws_asns = &detectors.settings.instance_credentials.aws_asns;
    match event.geo_asn.and_then(|asn| u32::try_from(asn).ok()) {
        Some(asn) => Some(aws_asns.contains(&asn)),
        // Without an AS, only a ranges file can say the address is not AWS's.
        None => event.network.is_aws,
    }
}

fn allowed_network(allowed: &super::NetworkAllowlist, event: &PolicyEvent) -> bool {
    let Some(ip) = event.source_ip else { return false };
    allowed.cidrs.iter().any(|cidr| cidr.contains(ip))
        || event.geo_asn.and_then(|asn| u32::try_from(asn).ok()).is_some_and(|asn| allowed.asns.contains(&asn))
}

/// An instance's role credentials used from a public address that is known not to be AWS's.
/// The runner then leaves out the account's own addresses.
pub fn instance_credentials_candidate(detectors: &Detectors, event: &PolicyEvent) -> bool {
    let settings = &detectors.settings.instance_credentials;
    settings.enabled
        && event.principal_type.as_deref() == Some("AssumedRole")
        && event.principal_arn.as_deref().and_then(instance_session).is_some()
        // A service name (`ec2.amazonaws.com`) or an anonymised value has no `source_ip`.
        && event.source_ip.is_some_and(is_public)
        && from_aws(detectors, event) == Some(false)
        && !allowed_network(&detectors.instance_allowed, event)
}

/// The finding for a candidate the runner found outside the account's own addresses.
pub fn instance_credentials_finding(detectors: &Detectors, event: &PolicyEvent) -> Option<Finding> {
    let (role, instance) = instance_session(event.principal_arn.as_deref()?)?;
    let meta = detectors.meta(INSTANCE_CREDENTIALS);
    let title = format!(
        "Credentials of instance {instance} (role {role}) used outside AWS from {}{}",
        event.source_ip_text.as_deref().unwrap_or("?"),
        network_label(event)
    );
    let mut finding = meta.finding_for(event, detectors.settings.instance_credentials.severity, title);
    finding.details = json!({
        "instance_id": instance, "role": role,
        "event": event.event_name, "network": event.network_details(),
    });
    Some(finding)
}

/// `" (AS64500 Example Hosting, Tor)"`, or nothing when nothing is known.
fn network_label(event: &PolicyEvent) -> String {
    let mut parts = Vec::new();
    if let Some(asn) = event.geo_asn {
        parts.push(format!("AS{asn} {}", event.network.as_org.as_deref().unwrap_or("")).trim().to_string());
    }
    parts.extend(anonymising_kinds(event).iter().map(|kind| kind.to_string()));
    if parts.is_empty() { String::new() } else { format!(" ({})", parts.join(", ")) }
}

/// What the source address is: `Tor`, `VPN`, `hosting`.
fn anonymising_kinds(event: &PolicyEvent) -> Vec<&'static str> {
    let n = &event.network;
    [(n.is_tor, "Tor"), (n.is_vpn, "VPN"), (n.is_hosting, "hosting")]
        .into_iter()
        .filter(|(flag, _)| *flag == Some(true))
        .map(|(_, kind)| kind)
        .collect()
}

/// A call or login from an anonymising network that is not allowed: the runner then checks the
/// principal's baseline.
pub fn anonymizing_candidate(detectors: &Detectors, event: &PolicyEvent) -> bool {
    let settings = &detectors.settings.anonymizing_network;
    let n = &event.network;
    let kinds =
        [(n.is_tor, settings.include_tor), (n.is_vpn, settings.include_vpn), (n.is_hosting, settings.include_hosting)];
    settings.enabled
        && event.source_ip.is_some_and(is_public)
        && kinds.iter().any(|(flag, on)| *on && *flag == Some(true))
        // AWS's own addresses are hosting too: an instance or Lambda calling is not anonymising.
        && from_aws(detectors, event) != Some(true)
        && event.principal_type.as_deref() != Some("AWSService")
        && !allowed_network(&detectors.anonymizing_allowed, event)
        && !settings.allow_principals.iter().any(|p| {
            Some(p.as_str()) == event.principal_arn.as_deref() || Some(p.as_str()) == event.user_name.as_deref()
        })
        && event.principal().is_some()
}

/// What a principal's baseline is kept by: its ARN, or for a role session every session of
/// the role (`arn:aws:sts::…:assumed-role/ROLE/`), as a `LIKE` pattern.
pub fn baseline_pattern(event: &PolicyEvent) -> Option<String> {
    let principal = event.principal()?;
    let escaped = principal.replace('\\', "\\\\").replace('%', "\\%").replace('_', "\\_");
    match principal.split_once(":assumed-role/").and_then(|(_, rest)| rest.rsplit_once('/')) {
        Some((_, session)) => Some(format!("{}%", &escaped[..escaped.len() - escape_len(session)])),
        None => Some(escaped),
    }
}

fn escape_len(text: &str) -> usize {
    text.len() + text.bytes().filter(|b| matches!(b, b'\\' | b'%' | b'_')).count()
}

/// The finding for a candidate whose principal never used an anonymising network before.
pub fn anonymizing_finding(detectors: &Detectors, event: &PolicyEvent) -> Finding {
    let settings = &detectors.settings.anonymizing_network;
    let meta = detectors.meta(ANONYMIZING_NETWORK);
    let what = if event.is_console_login() { "Console login" } else { "API call" };
    let who = event.user_name.as_deref().or(event.principal()).unwrap_or("?");
    let title = format!(
        "{what} by {who} from an anonymising network, a first for this principal: {}{}",
        event.source_ip_text.as_deref().unwrap_or("?"),
        network_label(event)
    );
    let severity = if event.network.is_tor == Some(true) { settings.tor_severity } else { settings.severity };
    let mut finding = meta.finding_for(event, severity, title);
    finding.details = json!({
        "kinds": anonymising_kinds(event), "event": event.event_name,
        "baseline_days": settings.baseline_days, "network": event.network_details(),
    });
    finding
}

#[cfg(test)]
#[path = "network_tests.rs"]
mod tests;
