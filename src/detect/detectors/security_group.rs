//! `aws-security-group-ingress-opened`: `AuthorizeSecurityGroupIngress` or
//! `ModifySecurityGroupRules` that lets in the whole internet (`0.0.0.0/0`, `::/0`, any `/0`) or
//! a public address outside the trusted ranges. Private ranges are never exposure. Severity is
//! high for admin ports (or all ports) and for a source in a foreign country.

use serde_json::Value;

use super::{Detectors, SG_INGRESS};
use crate::detect::PolicyEvent;
use crate::model::{Finding, Severity};
use crate::net::{Cidr, range_non_public_reason};

/// One permission the call adds.
#[derive(Debug, PartialEq)]
struct Opening {
    cidr: Cidr,
    protocol: String,
    from_port: Option<i64>,
    to_port: Option<i64>,
}

impl Opening {
    fn covers_port(&self, port: u16) -> bool {
        let all_protocols = self.protocol == "-1" || self.protocol.eq_ignore_ascii_case("all");
        let port = i64::from(port);
        all_protocols
            || match (self.from_port, self.to_port) {
                (Some(from), Some(to)) => (from == -1 && to == -1) || (from <= port && port <= to),
                _ => false,
            }
    }

    fn ports(&self) -> String {
        match (self.protocol.as_str(), self.from_port, self.to_port) {
            ("-1", _, _) => "all traffic".to_string(),
            (p, Some(from), Some(to)) if from == to => format!("{p}/{from}"),
            (p, Some(from), Some(to)) => format!("{p}/{from}-{to}"),
            (p, _, _) => p.to_string(),
        }
    }
}

fn number(value: &Value) -> Option<i64> {
    value.as_i64().or_else(|| value.as_str()?.parse().ok())
}

fn items(value: &Value) -> Vec<&Value> {
    match value {
        Value::Array(items) => items.iter().collect(),
        Value::Object(map) => match map.get("items") {
            Some(Value::Array(items)) => items.iter().collect(),
            _ => vec![value],
        },
        _ => vec![],
    }
}

/// The address ranges an ingress call opens, from both API shapes.
fn openings(event: &PolicyEvent, params: &Value) -> Vec<Opening> {
    let mut found = Vec::new();
    match event.event_name.as_deref() {
        Some("AuthorizeSecurityGroupIngress") => {
            // Old single-rule form: cidrIp with ipProtocol/fromPort/toPort at the top.
            if let Some(cidr) = params["cidrIp"].as_str().and_then(|c| c.parse().ok()) {
                found.push(Opening {
                    cidr,
                    protocol: params["ipProtocol"].as_str().unwrap_or("-1").to_string(),
                    from_port: number(&params["fromPort"]),
                    to_port: number(&params["toPort"]),
                });
            }
            for permission in items(&params["ipPermissions"]) {
                let protocol = permission["ipProtocol"].as_str().unwrap_or("-1").to_string();
                let ranges = items(&permission["ipRanges"]).into_iter().filter_map(|r| r["cidrIp"].as_str());
                let ranges6 = items(&permission["ipv6Ranges"]).into_iter().filter_map(|r| r["cidrIpv6"].as_str());
                for cidr in ranges.chain(ranges6).filter_map(|c| c.parse().ok()) {
                    found.push(Opening {
                        cidr,
                        protocol: protocol.clone(),
                        from_port: number(&permission["fromPort"]),
                        to_port: number(&permission["toPort"]),
                    });
                }
            }
        }
        Some("ModifySecurityGroupRules") => {
            let request = &params["ModifySecurityGroupRulesRequest"];
            for rule in items(&request["SecurityGroupRule"]) {
                let rule = &rule["SecurityGroupRule"];
                let cidr = rule["CidrIpv4"].as_str().or(rule["CidrIpv6"].as_str()).and_then(|c| c.parse().ok());
                if let Some(cidr) = cidr {
                    found.push(Opening {
                        cidr,
                        protocol: rule["IpProtocol"].as_str().unwrap_or("-1").to_string(),
                        from_port: number(&rule["FromPort"]),
                        to_port: number(&rule["ToPort"]),
                    });
                }
            }
        }
        _ => {}
    }
    found
}

/// Whether a source range lets in the internet: all of it (any `/0`), or a range that does not
/// lie entirely within one non-public range or one trusted range (judged by its first address,
/// `0.0.0.0/1` would pass as unspecified).
fn exposed(cidr: &Cidr, trusted: &[Cidr]) -> bool {
    cidr.is_world() || (range_non_public_reason(*cidr).is_none() && !trusted.iter().any(|t| cidr.within(t)))
}

/// The calls [`openings`] reads: any other EC2 call is passed over without parsing its request.
const OPENING_CALLS: &[&str] = &["AuthorizeSecurityGroupIngress", "ModifySecurityGroupRules"];

pub(super) fn evaluate(detectors: &Detectors, event: &PolicyEvent) -> Vec<Finding> {
    if event.error_code.is_some()
        || event.event_source.as_deref() != Some("ec2.amazonaws.com")
        || !event.event_name.as_deref().is_some_and(|name| OPENING_CALLS.contains(&name))
    {
        return vec![];
    }
    let settings = &detectors.settings.security_group_ingress;
    let params = event.raw.request_parameters();
    let exposed: Vec<Opening> =
        openings(event, &params).into_iter().filter(|o| exposed(&o.cidr, &detectors.trusted)).collect();
    if exposed.is_empty() {
        return vec![];
    }
    let admin_ports: Vec<u16> =
        settings.admin_ports.iter().copied().filter(|p| exposed.iter().any(|o| o.covers_port(*p))).collect();
    // A single address is judged by where it is; the country of a /0 means nothing.
    let source_country = exposed
        .iter()
        .find(|o| !o.cidr.is_world())
        .and(event.geo_country.as_deref())
        .filter(|_| exposed.iter().any(|o| !o.cidr.is_world() && Some(o.cidr.address) == event.source_ip));
    let foreign = source_country
        .is_some_and(|c| !settings.home_countries.is_empty() && !settings.home_countries.iter().any(|h| h == c));
    let world = exposed.iter().any(|o| o.cidr.is_world());
    let severity = if !admin_ports.is_empty() || foreign { Severity::High } else { Severity::Medium };
    let group = params["groupId"]
        .as_str()
        .or_else(|| params["ModifySecurityGroupRulesRequest"]["GroupId"].as_str())
        .or(event.resource_ids.first().map(String::as_str))
        .unwrap_or("a security group")
        .to_string();
    let ranges: Vec<String> =
        exposed.iter().map(|o| format!("{}/{} ({})", o.cidr.address, o.cidr.prefix, o.ports())).collect();
    let title = if world {
        format!("{group} opened to the internet: {}", ranges.join(", "))
    } else {
        format!("{group} opened to a public address: {}", ranges.join(", "))
    };
    let meta = detectors.meta(SG_INGRESS);
    let mut finding = meta.finding_for(event, severity, title);
    finding.subject = group.clone();
    if !finding.resources.contains(&group) {
        finding.resources.insert(0, group);
    }
    finding.details = serde_json::json!({
        "ranges": ranges,
        "open_to_world": world,
        "admin_ports": admin_ports,
        "foreign_source": foreign,
    });
    vec![finding]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cidrs() {
        let net: Cidr = "10.0.0.0/8".parse().unwrap();
        assert!(net.contains("10.1.2.3".parse().unwrap()));
        assert!(!net.contains("11.0.0.1".parse().unwrap()));
        assert!("10.1.0.0/16".parse::<Cidr>().unwrap().within(&net));
        assert!("208.236.235.254/0".parse::<Cidr>().unwrap().is_world());
        assert!("::/0".parse::<Cidr>().unwrap().is_world());
        assert!("10.0.0.0/33".parse::<Cidr>().is_err());
        assert_eq!("176.36.10.20".parse::<Cidr>().unwrap().prefix, 32);
    }

    #[test]
    fn a_wide_range_starting_at_a_non_public_address_is_exposed() {
        let cidr = |text: &str| text.parse::<Cidr>().unwrap();
        assert!(exposed(&cidr("0.0.0.0/1"), &[]), "0.0.0.0 is unspecified, the /1 is half the internet");
        assert!(exposed(&cidr("192.0.0.0/2"), &[]), "192.0.0.0/24 is reserved, the /2 is not");
        assert!(!exposed(&cidr("10.0.0.0/8"), &[]) && !exposed(&cidr("192.168.4.0/24"), &[]));
        let trusted = [cidr("81.2.69.0/24")];
        assert!(!exposed(&cidr("81.2.69.160/32"), &trusted));
        assert!(exposed(&cidr("81.2.0.0/16"), &trusted), "wider than the trusted range");
        assert!(exposed(&cidr("0.0.0.0/0"), &[cidr("0.0.0.0/0")]), "the world is never trusted");
    }
}
