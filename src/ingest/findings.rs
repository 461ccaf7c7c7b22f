//! Findings of AWS's own detectors, GuardDuty and Security Hub (ASFF), as Skywarden alert
//! findings: pure conversions of the JSON the services send (a `GetFindings` answer, or a file
//! saved from one), no AWS calls. `pollers::findings` fetches them; `alerts` folds them in like
//! any other finding, so they get the same lifecycle, routing and incident linking.
//!
//! One alert per AWS finding: the subject is the finding's id and the alert's time its creation
//! (which never changes), so a finding updated again folds into the alert it raised.

use std::net::IpAddr;

use chrono::{DateTime, Duration, Utc};
use serde_json::{Map, Value, json};

use crate::model::{Finding, Mitre, Severity};

/// Policy ids of imported findings: `aws-guardduty:<finding type>`.
pub const GUARDDUTY_POLICY_PREFIX: &str = "aws-guardduty:";
/// `aws-securityhub:<security control id, else generator id>`.
pub const SECURITY_HUB_POLICY_PREFIX: &str = "aws-securityhub:";
/// The finding kept in an alert's details is at most this large; larger ones keep their
/// smaller fields and name the ones left out.
pub const MAX_DETAILS_BYTES: usize = 64 * 1024;
/// Longest title and policy id kept (ASFF allows 256 and 512 characters).
const MAX_TITLE_CHARS: usize = 300;
const MAX_POLICY_CHARS: usize = 200;
/// At most this many resources from one finding.
const MAX_RESOURCES: usize = 50;

#[derive(Debug, thiserror::Error)]
pub enum FindingError {
    #[error("finding {id}: field `{field}`: {reason}")]
    Field { id: String, field: &'static str, reason: String },
}

/// A finding of AWS's own services, ready to fold into alerts.
#[derive(Clone, Debug)]
pub struct ExternalFinding {
    pub finding: Finding,
    /// The service's id of the finding (GuardDuty's `id`, ASFF's `Id`).
    pub id: String,
    pub updated_at: DateTime<Utc>,
    /// Not archived, resolved or suppressed: only an active finding raises an alert; an
    /// inactive one updates the alert it raised before and closes it if open. The alert's
    /// details keep it (`active`), so a finding active again is told from one still active.
    pub active: bool,
    /// Active but for a compliance status Security Hub could not determine (`NOT_AVAILABLE`,
    /// as during an AWS Config outage): no change to the alert's status either way.
    pub undetermined: bool,
}

impl ExternalFinding {
    /// The finding's state besides its `updatedAt`: ASFF's `RecordState`, `Workflow.Status` and
    /// `Compliance.Status`, GuardDuty's `archived`. Security Hub's `BatchUpdateFindings` (how
    /// the console sets a workflow status) changes these without changing `UpdatedAt`, so two
    /// versions at one instant are told apart by it. The same text as `concat_ws('|', ...)` of
    /// [`VERSION_STATE_FIELDS`] in SQL.
    pub fn version_state(&self) -> String {
        version_state_of(&self.finding.details)
    }
}

/// The fields of an alert's details that make up a finding's [`ExternalFinding::version_state`].
pub const VERSION_STATE_FIELDS: [&str; 4] = ["record_state", "workflow_status", "compliance_status", "archived"];

/// [`ExternalFinding::version_state`] of the details an alert keeps (absent fields left out,
/// as SQL's `concat_ws` leaves out NULLs).
pub fn version_state_of(details: &Value) -> String {
    let parts: Vec<String> = VERSION_STATE_FIELDS
        .iter()
        .filter_map(|field| match &details[*field] {
            Value::String(s) => Some(s.clone()),
            Value::Bool(b) => Some(b.to_string()),
            _ => None,
        })
        .collect();
    parts.join("|")
}

/// Which service a finding comes from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FindingSource {
    GuardDuty,
    SecurityHub,
}

impl FindingSource {
    pub fn as_str(self) -> &'static str {
        match self {
            FindingSource::GuardDuty => "guardduty",
            FindingSource::SecurityHub => "securityhub",
        }
    }

    pub fn convert(self, value: &Value) -> Result<ExternalFinding, FindingError> {
        match self {
            FindingSource::GuardDuty => from_guardduty(value),
            FindingSource::SecurityHub => from_security_hub(value),
        }
    }
}

/// `value[name]`, by the wire name (`accountId`) or the AWS CLI's (`AccountId`): the CLI prints
/// GuardDuty's members capitalised, the service sends them camel-cased.
fn get<'v>(value: &'v Value, name: &str) -> Option<&'v Value> {
    let map = value.as_object()?;
    map.get(name).or_else(|| {
        let mut chars = name.chars();
        let first = chars.next()?;
        let flipped = if first.is_ascii_lowercase() { first.to_ascii_uppercase() } else { first.to_ascii_lowercase() };
        map.get(&format!("{flipped}{}", chars.as_str()))
    })
}

fn at<'v>(value: &'v Value, path: &[&str]) -> Option<&'v Value> {
    path.iter().try_fold(value, |v, name| get(v, name))
}

fn text<'v>(value: &'v Value, path: &[&str]) -> Option<&'v str> {
    at(value, path).and_then(Value::as_str).filter(|s| !s.is_empty())
}

fn bounded(text: &str, max: usize) -> String {
    text.chars().take(max).collect()
}

fn required<'v>(value: &'v Value, id: &str, field: &'static str) -> Result<&'v str, FindingError> {
    text(value, &[field]).ok_or_else(|| FindingError::Field {
        id: id.to_owned(),
        field,
        reason: "missing or not a string".into(),
    })
}

/// The finding's account: an AWS account id is 12 digits (a finding saved from elsewhere, or
/// edited by hand, must not raise an alert on an account that cannot exist).
fn account_id<'v>(value: &'v Value, id: &str, field: &'static str) -> Result<&'v str, FindingError> {
    let account = required(value, id, field)?;
    if account.len() == 12 && account.bytes().all(|b| b.is_ascii_digit()) {
        Ok(account)
    } else {
        Err(FindingError::Field {
            id: id.to_owned(),
            field,
            reason: format!("`{account}` is not a 12-digit AWS account id"),
        })
    }
}

fn time(value: &Value, id: &str, field: &'static str) -> Result<DateTime<Utc>, FindingError> {
    let raw = required(value, id, field)?;
    parse_time(raw).map_err(|error| FindingError::Field {
        id: id.to_owned(),
        field,
        reason: format!("`{raw}` is not an ISO 8601 time: {error}"),
    })
}

/// A finding's time in any form ASFF documents: RFC 3339, an offset without its colon
/// (`2024-01-04T15:25:10-1759`) or without minutes (`+05`), and `Z` or `z`.
pub fn parse_time(raw: &str) -> Result<DateTime<Utc>, chrono::ParseError> {
    let rfc3339 = DateTime::parse_from_rfc3339(raw);
    if let Ok(at) = rfc3339 {
        return Ok(at.with_timezone(&Utc));
    }
    if let Ok(at) = DateTime::parse_from_str(raw, "%Y-%m-%dT%H:%M:%S%.f%#z") {
        return Ok(at.with_timezone(&Utc));
    }
    match raw.strip_suffix(['Z', 'z']) {
        Some(local) => {
            chrono::NaiveDateTime::parse_from_str(local, "%Y-%m-%dT%H:%M:%S%.f").map(|naive| naive.and_utc())
        }
        None => rfc3339.map(|at| at.with_timezone(&Utc)),
    }
}

/// GuardDuty's numeric severity: 1.0–3.9 low, 4.0–6.9 medium, 7.0–8.9 high, 9.0–10.0 critical.
pub fn guardduty_severity(score: f64) -> Severity {
    match score {
        s if s >= 9.0 => Severity::Critical,
        s if s >= 7.0 => Severity::High,
        s if s >= 4.0 => Severity::Medium,
        s if s >= 1.0 => Severity::Low,
        _ => Severity::Info,
    }
}

/// ASFF's `Severity.Label`, else its `Normalized` score (0–100).
pub fn asff_severity(severity: Option<&Value>) -> Severity {
    let label = severity.and_then(|s| text(s, &["Label"])).and_then(|l| l.parse::<Severity>().ok());
    let normalized = || severity.and_then(|s| at(s, &["Normalized"])).and_then(Value::as_f64);
    label.unwrap_or_else(|| match normalized() {
        Some(n) if n >= 90.0 => Severity::Critical,
        Some(n) if n >= 70.0 => Severity::High,
        Some(n) if n >= 40.0 => Severity::Medium,
        Some(n) if n >= 1.0 => Severity::Low,
        _ => Severity::Info,
    })
}

/// The ATT&CK tactic of a GuardDuty finding type's threat purpose (`CredentialAccess:IAMUser/…`);
/// none for purposes that are not a tactic (`Policy`, `Behavior`, `Pentest`).
pub fn guardduty_tactic(finding_type: &str) -> Option<Mitre> {
    let purpose = finding_type.split(':').next()?;
    let (tactic, technique) = match purpose {
        "Backdoor" | "Trojan" => ("TA0011", ""),
        "CredentialAccess" => ("TA0006", ""),
        "Cryptocurrency" => ("TA0040", "T1496"),
        "DefenseEvasion" | "Stealth" => ("TA0005", ""),
        "Discovery" => ("TA0007", ""),
        "Execution" => ("TA0002", ""),
        "Exfiltration" => ("TA0010", ""),
        "Impact" => ("TA0040", ""),
        "InitialAccess" | "UnauthorizedAccess" => ("TA0001", ""),
        "Persistence" => ("TA0003", ""),
        "PrivilegeEscalation" => ("TA0004", ""),
        "Recon" => ("TA0043", ""),
        _ => return None,
    };
    Some(Mitre::new(tactic, technique))
}

/// The ATT&CK tactics an ASFF finding's `Types` name (`TTPs/Credential Access/…`).
pub fn asff_tactics(types: Option<&Value>) -> Vec<Mitre> {
    const TACTICS: &[(&str, &str)] = &[
        ("Reconnaissance", "TA0043"),
        ("Initial Access", "TA0001"),
        ("Execution", "TA0002"),
        ("Persistence", "TA0003"),
        ("Privilege Escalation", "TA0004"),
        ("Defense Evasion", "TA0005"),
        ("Credential Access", "TA0006"),
        ("Discovery", "TA0007"),
        ("Lateral Movement", "TA0008"),
        ("Collection", "TA0009"),
        ("Command and Control", "TA0011"),
        ("Exfiltration", "TA0010"),
        ("Impact", "TA0040"),
    ];
    let mut tactics: Vec<Mitre> = types
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .filter_map(|t| t.strip_prefix("TTPs/"))
        .filter_map(|rest| TACTICS.iter().find(|(name, _)| rest.split('/').next() == Some(*name)))
        .map(|(_, id)| Mitre::new(id, ""))
        .collect();
    tactics.dedup();
    tactics
}

/// The finding as an alert keeps it: whole when small, else its fields that fit, with the names
/// of those left out.
pub fn bounded_details(finding: &Value) -> Value {
    let size = |v: &Value| serde_json::to_vec(v).map(|b| b.len()).unwrap_or(usize::MAX);
    if size(finding) <= MAX_DETAILS_BYTES {
        return finding.clone();
    }
    let Some(map) = finding.as_object() else { return json!({"truncated": true}) };
    let mut kept = Map::new();
    let mut left_out = Vec::new();
    let mut used = 0;
    for (key, value) in map {
        let bytes = size(value);
        if used + bytes + key.len() <= MAX_DETAILS_BYTES / 2 {
            used += bytes + key.len();
            kept.insert(key.clone(), value.clone());
        } else {
            left_out.push(key.clone());
        }
    }
    kept.insert("_left_out".into(), json!(left_out));
    Value::Object(kept)
}

fn ip(value: Option<&str>) -> Option<IpAddr> {
    value.and_then(|v| v.parse().ok())
}

/// The remote address of a GuardDuty finding's action, its country code, and what GuardDuty
/// says of its network (`remoteIpDetails`).
fn guardduty_remote(service: &Value) -> (Option<IpAddr>, Option<String>, Option<&Value>) {
    let action = at(service, &["action"]).unwrap_or(&Value::Null);
    let candidates = [
        at(action, &["awsApiCallAction", "remoteIpDetails"]),
        at(action, &["networkConnectionAction", "remoteIpDetails"]),
        at(action, &["kubernetesApiCallAction", "remoteIpDetails"]),
        at(action, &["rdsLoginAttemptAction", "remoteIpDetails"]),
        at(action, &["portProbeAction", "portProbeDetails"])
            .and_then(Value::as_array)
            .and_then(|probes| probes.first())
            .and_then(|probe| at(probe, &["remoteIpDetails"])),
    ];
    for details in candidates.into_iter().flatten() {
        let address = ip(text(details, &["ipAddressV4"])).or_else(|| ip(text(details, &["ipAddressV6"])));
        if address.is_some() {
            return (address, text(details, &["country", "countryCode"]).map(str::to_owned), Some(details));
        }
    }
    (None, None, None)
}

/// Finding types whose remote address is a Tor node (`UnauthorizedAccess:IAMUser/TorIPCaller`,
/// `…:EC2/TorClient`, `…/TorRelay`; in ASFF `…:IAMUser-TorIPCaller`).
const TOR_FINDING_NAMES: [&str; 3] = ["TorIPCaller", "TorClient", "TorRelay"];

/// Whether a finding type says its remote address is a Tor node.
fn names_tor(finding_type: &str) -> bool {
    finding_type.split(['/', '-', ':', '.', '!']).any(|part| TOR_FINDING_NAMES.contains(&part))
}

/// An AS number as a finding gives it (GuardDuty: a string, ASFF: a number).
fn asn_of(value: Option<&Value>) -> Option<u64> {
    let value = value?;
    value.as_u64().or_else(|| value.as_str()?.trim().trim_start_matches("AS").parse().ok())
}

/// The finding's address network as an alert on an event records it (`details.network`: `asn`,
/// `as_org`, `is_tor`), so linking treats the address as it treats a CloudTrail event's: the AS
/// from the finding's own `organization` and a Tor finding type flagging a Tor address. `None`
/// when it says neither.
fn finding_network(remote: Option<&Value>, organization: &[&str], tor: bool) -> Option<Value> {
    let org = remote.and_then(|r| at(r, organization));
    let asn = asn_of(org.and_then(|o| get(o, "asn")));
    if asn.is_none() && !tor {
        return None;
    }
    let as_org = org.and_then(|o| text(o, &["asnOrg"]).or_else(|| text(o, &["org"])));
    // A type that names no Tor node says nothing of the address: unknown, not false.
    Some(json!({"asn": asn, "as_org": as_org, "is_tor": tor.then_some(true)}))
}

/// Whether the finding's resource is the target of traffic from outside (a port probe, an SSH or
/// RDP brute force against the instance): the internet does that to any exposed instance all
/// day, so the instance ties the alert to no intrusion (incident linking reads
/// `links_resources`).
fn is_inbound_to_target(service: &Value) -> bool {
    let target = text(service, &["resourceRole"]).is_some_and(|r| r.eq_ignore_ascii_case("TARGET"));
    let action = at(service, &["action"]).unwrap_or(&Value::Null);
    let inbound = match text(action, &["actionType"]) {
        Some("PORT_PROBE") => true,
        Some("NETWORK_CONNECTION") => {
            text(action, &["networkConnectionAction", "connectionDirection"]) == Some("INBOUND")
        }
        _ => false,
    };
    target && inbound
}

/// The principal of a GuardDuty finding's access key, as CloudTrail names it (an ARN), so the
/// alert links with Skywarden's own alerts on that principal.
fn guardduty_principal(finding: &Value, account: &str) -> Option<String> {
    let key = at(finding, &["resource", "accessKeyDetails"])?;
    let partition = text(finding, &["partition"]).unwrap_or("aws");
    let name = text(key, &["userName"])?;
    Some(match text(key, &["userType"]) {
        Some("IAMUser") => format!("arn:{partition}:iam::{account}:user/{name}"),
        Some("Root") => format!("arn:{partition}:iam::{account}:root"),
        Some("AssumedRole") => match text(key, &["principalId"]).and_then(|p| p.split_once(':')) {
            Some((_, session)) => format!("arn:{partition}:sts::{account}:assumed-role/{name}/{session}"),
            None => format!("arn:{partition}:iam::{account}:role/{name}"),
        },
        _ => name.to_owned(),
    })
}

fn guardduty_resources(resource: &Value) -> Vec<String> {
    let mut resources = Vec::new();
    let mut push = |value: Option<&str>| resources.extend(value.map(str::to_owned));
    push(text(resource, &["accessKeyDetails", "accessKeyId"]));
    push(text(resource, &["instanceDetails", "instanceId"]));
    for eni in at(resource, &["instanceDetails", "networkInterfaces"]).and_then(Value::as_array).into_iter().flatten() {
        push(text(eni, &["networkInterfaceId"]));
    }
    for bucket in at(resource, &["s3BucketDetails"]).and_then(Value::as_array).into_iter().flatten() {
        push(text(bucket, &["name"]));
    }
    push(text(resource, &["eksClusterDetails", "name"]));
    push(text(resource, &["rdsDbInstanceDetails", "dbInstanceIdentifier"]));
    push(text(resource, &["lambdaDetails", "functionName"]));
    push(text(resource, &["ecsClusterDetails", "name"]));
    finish_resources(resources)
}

fn finish_resources(mut resources: Vec<String>) -> Vec<String> {
    resources.sort();
    resources.dedup();
    resources.truncate(MAX_RESOURCES);
    resources
}

/// The session key Skywarden's own alerts carry for the same session (see
/// `detect::event::Event::session_key`): temporary credentials by their key, else principal
/// and address.
fn session_key(access_key: Option<&str>, principal: Option<&str>, source_ip: Option<IpAddr>) -> Option<String> {
    match access_key {
        Some(key) if key.starts_with("ASIA") => Some(format!("key:{key}")),
        _ => Some(format!("{}|{}", principal?, source_ip?)),
    }
}

/// A GuardDuty finding (`GetFindings`' `findings[]`, or the CLI's `Findings[]`).
pub fn from_guardduty(value: &Value) -> Result<ExternalFinding, FindingError> {
    let id = required(value, "?", "id")?.to_owned();
    let account = account_id(value, &id, "accountId")?;
    let finding_type = required(value, &id, "type")?;
    let created = time(value, &id, "createdAt")?;
    let updated = time(value, &id, "updatedAt")?;
    let score = get(value, "severity").and_then(Value::as_f64).ok_or_else(|| FindingError::Field {
        id: id.clone(),
        field: "severity",
        reason: "missing or not a number".into(),
    })?;
    let service = get(value, "service").unwrap_or(&Value::Null);
    let archived = text(service, &["archived"]).is_some_and(|a| a == "true")
        || at(service, &["archived"]).and_then(Value::as_bool).unwrap_or(false);
    let (source_ip, country, remote) = guardduty_remote(service);
    let network = source_ip.and_then(|_| finding_network(remote, &["organization"], names_tor(finding_type)));
    let principal = guardduty_principal(value, account);
    let resource = get(value, "resource").unwrap_or(&Value::Null);
    let access_key = text(resource, &["accessKeyDetails", "accessKeyId"]);
    let mut details = json!({
        "source": FindingSource::GuardDuty.as_str(),
        "finding_id": id,
        "type": finding_type,
        "region": text(value, &["region"]),
        "updated_at": updated,
        "active": !archived,
        "archived": archived,
        "count": at(service, &["count"]),
        "links_resources": !is_inbound_to_target(service),
        "finding": bounded_details(value),
    });
    // Absent, not null, when unknown: detection fills in what it can of an absent one.
    if let Some(network) = network {
        details["network"] = network;
    }
    let finding = Finding {
        policy_id: bounded(&format!("{GUARDDUTY_POLICY_PREFIX}{finding_type}"), MAX_POLICY_CHARS),
        title: bounded(text(value, &["title"]).unwrap_or(finding_type), MAX_TITLE_CHARS),
        severity: guardduty_severity(score),
        account_id: account.to_owned(),
        subject: format!("guardduty-finding:{id}"),
        dedup_window: Duration::days(3650),
        session_key: session_key(access_key, principal.as_deref(), source_ip),
        principal,
        source_ip,
        country,
        resources: guardduty_resources(resource),
        evidence_id: id.clone(),
        time: created,
        mitre: guardduty_tactic(finding_type).into_iter().collect(),
        details,
    };
    Ok(ExternalFinding { finding, id, updated_at: updated, active: !archived, undetermined: false })
}

/// The short id of an ASFF resource AWS names by ARN: an instance, ENI or bucket name, as
/// Skywarden's own alerts name them.
fn asff_resource_ids(resource: &Value) -> Vec<String> {
    let Some(id) = text(resource, &["Id"]) else { return Vec::new() };
    let mut ids = vec![id.to_owned()];
    let short = match text(resource, &["Type"]) {
        Some("AwsEc2Instance" | "AwsEc2NetworkInterface" | "AwsEc2SecurityGroup" | "AwsEc2Vpc") => {
            id.rsplit('/').next().filter(|s| *s != id)
        }
        Some("AwsS3Bucket") => {
            id.strip_prefix("arn:aws:s3:::").or_else(|| id.rsplit(":::").next().filter(|s| *s != id))
        }
        Some("AwsIamAccessKey") => text(resource, &["Details", "AwsIamAccessKey", "AccessKeyId"]),
        _ => None,
    };
    ids.extend(short.map(str::to_owned));
    ids
}

/// An ASFF finding's principal: an IAM user or role resource (by ARN), else an access key's
/// principal name.
fn asff_principal(resources: &[Value]) -> Option<String> {
    let by_type =
        |wanted: &str| resources.iter().find(|r| text(r, &["Type"]) == Some(wanted)).and_then(|r| text(r, &["Id"]));
    by_type("AwsIamUser").or_else(|| by_type("AwsIamRole")).map(str::to_owned).or_else(|| {
        resources.iter().find_map(|r| {
            text(r, &["Details", "AwsIamAccessKey", "PrincipalName"])
                .or_else(|| text(r, &["Details", "AwsIamAccessKey", "UserName"]))
                .map(str::to_owned)
        })
    })
}

fn asff_remote(value: &Value) -> (Option<IpAddr>, Option<String>, Option<&Value>) {
    let action = get(value, "Action").unwrap_or(&Value::Null);
    let details = [
        at(action, &["AwsApiCallAction", "RemoteIpDetails"]),
        at(action, &["NetworkConnectionAction", "RemoteIpDetails"]),
        at(action, &["PortProbeAction", "PortProbeDetails"])
            .and_then(Value::as_array)
            .and_then(|p| p.first())
            .and_then(|p| at(p, &["RemoteIpDetails"])),
    ];
    for details in details.into_iter().flatten() {
        if let Some(address) = ip(text(details, &["IpAddressV4"])) {
            return (Some(address), text(details, &["Country", "CountryCode"]).map(str::to_owned), Some(details));
        }
    }
    let network = ip(text(value, &["Network", "SourceIpV4"])).or_else(|| ip(text(value, &["Network", "SourceIpV6"])));
    (network, None, None)
}

/// The policy an ASFF finding stands for: its security control (`S3.1`), else its generator.
fn asff_policy(value: &Value, id: &str) -> Result<String, FindingError> {
    let control = text(value, &["Compliance", "SecurityControlId"])
        .or_else(|| text(value, &["ProductFields", "ControlId"]))
        .or_else(|| text(value, &["GeneratorId"]))
        .ok_or_else(|| FindingError::Field {
            id: id.to_owned(),
            field: "GeneratorId",
            reason: "missing or not a string".into(),
        })?;
    Ok(bounded(&format!("{SECURITY_HUB_POLICY_PREFIX}{control}"), MAX_POLICY_CHARS))
}

/// A Security Hub finding in ASFF (`GetFindings`' `Findings[]`).
pub fn from_security_hub(value: &Value) -> Result<ExternalFinding, FindingError> {
    let id = required(value, "?", "Id")?.to_owned();
    let account = account_id(value, &id, "AwsAccountId")?;
    let created = time(value, &id, "CreatedAt")?;
    let updated = time(value, &id, "UpdatedAt")?;
    let record_state = text(value, &["RecordState"]).unwrap_or("ACTIVE");
    let workflow = text(value, &["Workflow", "Status"]).or_else(|| text(value, &["WorkflowState"])).unwrap_or("NEW");
    // A control that passes (or could not be checked) is no finding to act on.
    let compliance = text(value, &["Compliance", "Status"]);
    let failing = compliance.is_none_or(|status| matches!(status, "FAILED" | "WARNING"));
    let open = record_state == "ACTIVE" && !matches!(workflow, "RESOLVED" | "SUPPRESSED");
    let active = open && failing;
    let undetermined = open && compliance == Some("NOT_AVAILABLE");
    let resources: Vec<Value> = get(value, "Resources").and_then(Value::as_array).cloned().unwrap_or_default();
    let principal = asff_principal(&resources);
    let (source_ip, country, remote) = asff_remote(value);
    let types = get(value, "Types").and_then(Value::as_array).into_iter().flatten().filter_map(Value::as_str);
    let tor = types.into_iter().any(names_tor);
    let network = source_ip.and_then(|_| finding_network(remote, &["Organization"], tor));
    let access_key =
        resources.iter().find_map(|r| text(r, &["Details", "AwsIamAccessKey", "AccessKeyId"])).map(str::to_owned);
    let policy_id = asff_policy(value, &id)?;
    let mut details = json!({
        "source": FindingSource::SecurityHub.as_str(),
        "finding_id": id,
        "product": text(value, &["ProductName"]),
        "generator_id": text(value, &["GeneratorId"]),
        "region": text(value, &["Region"]),
        "updated_at": updated,
        "active": active,
        "record_state": record_state,
        "workflow_status": workflow,
        "compliance_status": text(value, &["Compliance", "Status"]),
        "finding": bounded_details(value),
    });
    if let Some(network) = network {
        details["network"] = network;
    }
    let finding = Finding {
        policy_id,
        title: bounded(text(value, &["Title"]).unwrap_or(&id), MAX_TITLE_CHARS),
        severity: asff_severity(get(value, "Severity")),
        account_id: account.to_owned(),
        subject: format!("securityhub-finding:{id}"),
        dedup_window: Duration::days(3650),
        session_key: session_key(access_key.as_deref(), principal.as_deref(), source_ip),
        principal,
        source_ip,
        country,
        resources: finish_resources(resources.iter().flat_map(asff_resource_ids).collect()),
        evidence_id: id.clone(),
        time: created,
        mitre: asff_tactics(get(value, "Types")),
        details,
    };
    Ok(ExternalFinding { finding, id, updated_at: updated, active, undetermined })
}

/// The findings of a saved answer: `{"findings": [...]}` / `{"Findings": [...]}` or a bare list.
pub fn findings_of(document: &Value) -> Option<&Vec<Value>> {
    get(document, "findings").and_then(Value::as_array).or_else(|| document.as_array())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn guardduty_sample() -> Value {
        json!({
            "accountId": "111122223333",
            "arn": "arn:aws:guardduty:us-east-1:111122223333:detector/d1/finding/f1",
            "createdAt": "2026-11-20T10:00:00.000Z",
            "updatedAt": "2026-11-20T12:00:00.000Z",
            "id": "f1",
            "partition": "aws",
            "region": "us-east-1",
            "type": "UnauthorizedAccess:IAMUser/InstanceCredentialExfiltration.OutsideAWS",
            "title": "Credentials for instance role web used from external IP address.",
            "severity": 8.0,
            "resource": {
                "resourceType": "AccessKey",
                "accessKeyDetails": {"accessKeyId": "ASIAEXAMPLEKEY", "principalId": "AROAEXAMPLE:i-0abc",
                                      "userName": "web", "userType": "AssumedRole"},
                "instanceDetails": {"instanceId": "i-0abc", "networkInterfaces": [{"networkInterfaceId": "eni-1"}]}
            },
            "service": {
                "archived": false, "count": 2, "serviceName": "guardduty",
                "action": {"actionType": "AWS_API_CALL", "awsApiCallAction": {
                    "api": "ListBuckets", "serviceName": "s3.amazonaws.com",
                    "remoteIpDetails": {"ipAddressV4": "198.51.100.7", "country": {"countryCode": "NL"}}}}
            }
        })
    }

    #[test]
    fn a_guardduty_finding_becomes_an_alert_finding() {
        let external = from_guardduty(&guardduty_sample()).unwrap();
        let f = &external.finding;
        assert_eq!(f.policy_id, "aws-guardduty:UnauthorizedAccess:IAMUser/InstanceCredentialExfiltration.OutsideAWS");
        assert_eq!(f.severity, Severity::High);
        assert_eq!(f.principal.as_deref(), Some("arn:aws:sts::111122223333:assumed-role/web/i-0abc"));
        assert_eq!(f.source_ip, Some("198.51.100.7".parse().unwrap()));
        assert_eq!(f.country.as_deref(), Some("NL"));
        assert_eq!(f.resources, ["ASIAEXAMPLEKEY", "eni-1", "i-0abc"]);
        assert_eq!(f.session_key.as_deref(), Some("key:ASIAEXAMPLEKEY"));
        assert_eq!(f.mitre, [Mitre::new("TA0001", "")]);
        assert_eq!(f.evidence_id, "f1");
        assert!(external.active);
        assert_eq!(f.details["finding"]["id"], "f1");
    }

    #[test]
    fn a_finding_carries_the_network_of_its_address() {
        let plain = from_guardduty(&guardduty_sample()).unwrap().finding;
        assert!(plain.details.get("network").is_none(), "nothing known, nothing recorded");
        let mut tor = guardduty_sample();
        tor["type"] = json!("UnauthorizedAccess:IAMUser/TorIPCaller");
        tor["service"]["action"]["awsApiCallAction"]["remoteIpDetails"]["organization"] =
            json!({"asn": "60729", "asnOrg": "Stiftung Erneuerbare Freiheit", "isp": "Tor", "org": "Tor"});
        let network = from_guardduty(&tor).unwrap().finding.details["network"].clone();
        assert_eq!(network, json!({"asn": 60729, "as_org": "Stiftung Erneuerbare Freiheit", "is_tor": true}));
        let mut hosted = guardduty_sample();
        hosted["service"]["action"]["awsApiCallAction"]["remoteIpDetails"]["organization"] =
            json!({"asn": "64501", "asnOrg": "Example Hosting"});
        let network = from_guardduty(&hosted).unwrap().finding.details["network"].clone();
        assert_eq!(network, json!({"asn": 64501, "as_org": "Example Hosting", "is_tor": null}));
        for (name, tor) in [
            ("UnauthorizedAccess:EC2/TorClient", true),
            ("Recon:IAMUser/TorIPCaller", true),
            ("TTPs/Command and Control/UnauthorizedAccess:IAMUser-TorIPCaller", true),
            ("UnauthorizedAccess:IAMUser/MaliciousIPCaller.Custom", false),
            ("Recon:IAMUser/TorIPCallerish", false),
        ] {
            assert_eq!(names_tor(name), tor, "{name}");
        }
    }

    #[test]
    fn an_inbound_probe_of_an_instance_does_not_link_by_the_instance() {
        let links = |service: Value| {
            let mut finding = guardduty_sample();
            finding["service"] = service;
            from_guardduty(&finding).unwrap().finding.details["links_resources"].clone()
        };
        let probe = json!({"resourceRole": "TARGET", "action": {"actionType": "PORT_PROBE", "portProbeAction": {}}});
        assert_eq!(links(probe), json!(false));
        let brute_force = json!({"resourceRole": "TARGET", "action": {"actionType": "NETWORK_CONNECTION",
            "networkConnectionAction": {"connectionDirection": "INBOUND"}}});
        assert_eq!(links(brute_force), json!(false));
        let outbound = json!({"resourceRole": "ACTOR", "action": {"actionType": "NETWORK_CONNECTION",
            "networkConnectionAction": {"connectionDirection": "OUTBOUND"}}});
        assert_eq!(links(outbound), json!(true), "the instance does it: it links");
        assert_eq!(links(guardduty_sample()["service"].clone()), json!(true), "an API call with its credentials");
    }

    #[test]
    fn the_same_finding_updated_keeps_its_alert_id() {
        let mut later = guardduty_sample();
        later["updatedAt"] = json!("2026-11-25T12:00:00Z");
        later["service"]["count"] = json!(9);
        later["service"]["archived"] = json!(true);
        let (first, second) = (from_guardduty(&guardduty_sample()).unwrap(), from_guardduty(&later).unwrap());
        assert_eq!(first.finding.alert_id(), second.finding.alert_id());
        assert!(!second.active);
    }

    #[test]
    fn the_cli_spelling_of_guardduty_fields_reads_the_same() {
        fn capitalise(value: &Value) -> Value {
            match value {
                Value::Object(map) => Value::Object(
                    map.iter().map(|(k, v)| (format!("{}{}", k[..1].to_uppercase(), &k[1..]), capitalise(v))).collect(),
                ),
                Value::Array(items) => Value::Array(items.iter().map(capitalise).collect()),
                other => other.clone(),
            }
        }
        let cli = from_guardduty(&capitalise(&guardduty_sample())).unwrap();
        let wire = from_guardduty(&guardduty_sample()).unwrap();
        assert_eq!(cli.finding.alert_id(), wire.finding.alert_id());
        assert_eq!(cli.finding.principal, wire.finding.principal);
        assert_eq!(cli.finding.source_ip, wire.finding.source_ip);
    }

    #[test]
    fn severities_map_at_the_documented_bounds() {
        assert_eq!(guardduty_severity(0.5), Severity::Info);
        assert_eq!(guardduty_severity(3.9), Severity::Low);
        assert_eq!(guardduty_severity(4.0), Severity::Medium);
        assert_eq!(guardduty_severity(8.9), Severity::High);
        assert_eq!(guardduty_severity(9.0), Severity::Critical);
        assert_eq!(asff_severity(Some(&json!({"Label": "INFORMATIONAL"}))), Severity::Info);
        assert_eq!(asff_severity(Some(&json!({"Normalized": 75}))), Severity::High);
        assert_eq!(asff_severity(None), Severity::Info);
    }

    #[test]
    fn bad_fields_are_named() {
        let mut bad = guardduty_sample();
        bad["createdAt"] = json!("yesterday");
        let error = from_guardduty(&bad).unwrap_err().to_string();
        assert!(error.contains("f1") && error.contains("createdAt") && error.contains("yesterday"), "{error}");
        bad["createdAt"] = json!("2026-11-20T10:00:00Z");
        bad.as_object_mut().unwrap().remove("severity");
        assert!(from_guardduty(&bad).unwrap_err().to_string().contains("severity"));
    }

    #[test]
    fn an_account_id_that_is_not_twelve_digits_is_named() {
        for bad in ["12345", "11112222333a", "1111222233334"] {
            let mut finding = guardduty_sample();
            finding["accountId"] = json!(bad);
            let error = from_guardduty(&finding).unwrap_err().to_string();
            assert!(error.contains("accountId") && error.contains(bad) && error.contains("12-digit"), "{error}");
        }
    }

    #[test]
    fn an_asff_finding_becomes_an_alert_finding() {
        let asff = json!({
            "SchemaVersion": "2018-10-08",
            "Id": "arn:aws:securityhub:us-east-1:111122223333:finding/abc",
            "ProductArn": "arn:aws:securityhub:us-east-1::product/aws/securityhub",
            "ProductName": "Security Hub",
            "GeneratorId": "security-control/S3.8",
            "AwsAccountId": "111122223333",
            "Region": "us-east-1",
            "Types": ["Software and Configuration Checks/Industry and Regulatory Standards", "TTPs/Exfiltration"],
            "CreatedAt": "2026-11-20T10:00:00Z",
            "UpdatedAt": "2026-11-21T10:00:00Z",
            "Severity": {"Label": "HIGH", "Normalized": 70},
            "Title": "S3 general purpose buckets should block public access",
            "Compliance": {"Status": "FAILED", "SecurityControlId": "S3.8"},
            "Resources": [{"Type": "AwsS3Bucket", "Id": "arn:aws:s3:::data-bucket"}],
            "Workflow": {"Status": "RESOLVED"},
            "RecordState": "ACTIVE"
        });
        let external = from_security_hub(&asff).unwrap();
        let f = &external.finding;
        assert_eq!(f.policy_id, "aws-securityhub:S3.8");
        assert_eq!(f.severity, Severity::High);
        assert_eq!(f.resources, ["arn:aws:s3:::data-bucket", "data-bucket"]);
        assert_eq!(f.mitre, [Mitre::new("TA0010", "")]);
        assert!(!external.active, "a resolved finding raises no alert");
        let mut open = asff.clone();
        open["Workflow"]["Status"] = json!("NEW");
        assert!(from_security_hub(&open).unwrap().active, "a failing control is a finding");
        for status in ["PASSED", "NOT_AVAILABLE"] {
            let mut passing = open.clone();
            passing["Compliance"]["Status"] = json!(status);
            assert!(!from_security_hub(&passing).unwrap().active, "a control {status} is none");
        }
        open.as_object_mut().unwrap().remove("Compliance");
        assert!(from_security_hub(&open).unwrap().active, "a threat finding has no compliance");
    }

    #[test]
    fn asff_times_parse_in_every_documented_form() {
        // The examples of ASFF's timestamp formats in Security Hub's documentation.
        let documented = [
            ("2024-01-04T15:25:10Z", "2024-01-04T15:25:10Z"),
            ("2024-01-04T15:25:10.123456789Z", "2024-01-04T15:25:10.123456789Z"),
            ("2024-01-04T15:25:10+17:59", "2024-01-03T21:26:10Z"),
            ("2024-01-04T15:25:10-1759", "2024-01-05T09:24:10Z"),
            ("2024-01-04T15:25:10.123456789+17:59", "2024-01-03T21:26:10.123456789Z"),
            ("2024-01-04T15:25:10+05", "2024-01-04T10:25:10Z"),
            ("2024-01-04T15:25:10z", "2024-01-04T15:25:10Z"),
        ];
        for (raw, utc) in documented {
            let expected = DateTime::parse_from_rfc3339(utc).unwrap().with_timezone(&Utc);
            assert_eq!(parse_time(raw).map_err(|e| format!("{raw}: {e}")), Ok(expected), "{raw}");
        }
        for bad in ["yesterday", "2024-01-04", "2024-01-04T15:25:10+1"] {
            assert!(parse_time(bad).is_err(), "{bad}");
        }
        let mut asff = json!({"Id": "x", "AwsAccountId": "111122223333", "GeneratorId": "g",
            "CreatedAt": "2024-01-04T15:25:10-1759", "UpdatedAt": "2024-01-04T15:25:10.123456789+17:59"});
        assert!(from_security_hub(&asff).is_ok());
        asff["Compliance"] = json!({"Status": "NOT_AVAILABLE"});
        let undetermined = from_security_hub(&asff).unwrap();
        assert!(!undetermined.active && undetermined.undetermined);
        assert_eq!(undetermined.version_state(), "ACTIVE|NEW|NOT_AVAILABLE");
    }

    #[test]
    fn large_findings_are_bounded() {
        let mut big = guardduty_sample();
        big["service"]["additionalInfo"] = json!({"blob": "x".repeat(MAX_DETAILS_BYTES * 2)});
        let details = bounded_details(&big);
        assert!(serde_json::to_vec(&details).unwrap().len() <= MAX_DETAILS_BYTES);
        assert_eq!(details["_left_out"], json!(["service"]));
        assert_eq!(details["id"], "f1");
    }
}
