//! Behavioural detectors in Rust, configured by `detectors.yaml` of the policies. They need state
//! (login baselines, sliding windows) or address arithmetic that Sigma rules do not have.
//!
//! - `aws-security-group-ingress-opened`: a rule opened to the internet or a public address.
//! - `aws-account-hijacking-attempt`, `aws-impossible-travel`, `aws-excessive-login-failures`,
//!   `aws-password-spray`: console logins, evaluated in event-time order.
//! - `aws-reconnaissance-burst`: refused calls of one principal, in event-time order.
//! - `aws-flow-exfiltration-volume`: bytes from the VPC to one external address per hour.
//! - `aws-instance-credentials-used-outside`, `aws-login-from-anonymizing-network`: the network
//!   a call came from ([`network`]).
//! - `aws-rare-sensitive-api`: a principal's first sensitive write call in its baseline
//!   ([`rare_api`]).
//! - `aws-flow-port-scan`, `aws-flow-suspicious-destination`: flow records of scans, and of
//!   instances talking to Tor exits or to an open incident's addresses ([`port_scan`],
//!   [`flow_destinations`]).

pub mod exfiltration;
mod failures;
pub mod flow_destinations;
pub mod logins;
pub mod network;
pub mod port_scan;
pub mod rare_api;
pub mod recon;
pub mod security_group;

use std::collections::BTreeSet;
use std::path::PathBuf;

use chrono::Duration;
use serde::Deserialize;

use super::{PolicyEvent, PolicyKind, PolicyMeta, PolicyProblem, Subject};
use crate::model::{Finding, Mitre, Severity};
use crate::policy_files::{Origin, PolicyFile, PolicyFiles};

pub const HIJACK: &str = "aws-account-hijacking-attempt";
pub const IMPOSSIBLE_TRAVEL: &str = "aws-impossible-travel";
pub const LOGIN_FAILURES: &str = "aws-excessive-login-failures";
pub const PASSWORD_SPRAY: &str = "aws-password-spray";
pub const RECON_BURST: &str = "aws-reconnaissance-burst";
pub const SG_INGRESS: &str = "aws-security-group-ingress-opened";
pub const EXFILTRATION: &str = "aws-flow-exfiltration-volume";
pub const INSTANCE_CREDENTIALS: &str = "aws-instance-credentials-used-outside";
pub const ANONYMIZING_NETWORK: &str = "aws-login-from-anonymizing-network";
pub const RARE_SENSITIVE_API: &str = "aws-rare-sensitive-api";
pub const PORT_SCAN: &str = "aws-flow-port-scan";
pub const SUSPICIOUS_DESTINATION: &str = "aws-flow-suspicious-destination";

/// The longest span in days a setting may name (ten years): longer ones are refused at load
/// (they would overflow time arithmetic) and the default applies.
pub const MAX_DAYS: i64 = 3_650;
/// The longest window in minutes a setting may name (a day).
pub const MAX_WINDOW_MINUTES: i64 = 1_440;

/// Everything `detectors.yaml` can set; every field has a default.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DetectorSettings {
    pub account_hijacking: HijackSettings,
    pub impossible_travel: TravelSettings,
    pub login_failures: FailureSettings,
    pub password_spray: SpraySettings,
    pub reconnaissance: ReconSettings,
    pub security_group_ingress: IngressSettings,
    pub flow_exfiltration: ExfiltrationSettings,
    pub instance_credentials: InstanceCredentialSettings,
    pub anonymizing_network: AnonymizingSettings,
    pub rare_sensitive_api: rare_api::RareApiSettings,
    pub flow_port_scan: port_scan::PortScanSettings,
    pub flow_suspicious_destination: flow_destinations::DestinationSettings,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HijackSettings {
    pub enabled: bool,
    /// How far back a principal's successful logins make its baseline of countries.
    pub baseline_days: i64,
    /// No alert while a principal has fewer earlier logins than this (no baseline yet).
    pub min_prior_logins: usize,
    pub allow_countries: Vec<String>,
    pub allow_cidrs: Vec<String>,
    pub allow_principals: Vec<String>,
    /// Also alert on API calls (not only console logins) from a country outside the
    /// principal's baseline of logins and calls.
    pub include_api_activity: bool,
    pub severity: Severity,
}

impl Default for HijackSettings {
    fn default() -> Self {
        Self {
            enabled: true,
            baseline_days: 30,
            min_prior_logins: 3,
            allow_countries: vec![],
            allow_cidrs: vec![],
            allow_principals: vec![],
            include_api_activity: false,
            severity: Severity::High,
        }
    }
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TravelSettings {
    pub enabled: bool,
    pub max_speed_kmh: f64,
    /// Shorter hops are GeoIP noise, not travel.
    pub min_distance_km: f64,
    pub severity: Severity,
}

impl Default for TravelSettings {
    fn default() -> Self {
        Self { enabled: true, max_speed_kmh: 900.0, min_distance_km: 500.0, severity: Severity::High }
    }
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FailureSettings {
    pub enabled: bool,
    pub threshold: usize,
    pub window_minutes: i64,
    pub severity: Severity,
}

impl Default for FailureSettings {
    fn default() -> Self {
        Self { enabled: true, threshold: 10, window_minutes: 10, severity: Severity::Medium }
    }
}

/// Failed console logins from one source address (or one AS) against many principals.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SpraySettings {
    pub enabled: bool,
    /// Distinct principals whose logins failed from one address within the window.
    pub min_principals: usize,
    pub window_minutes: i64,
    pub severity: Severity,
    /// Also group the failures by the source's AS (a spray spread over an AS's addresses).
    pub by_asn: bool,
    /// Distinct principals whose logins failed from one AS within the window ...
    pub asn_min_principals: usize,
    /// ... from this many of its addresses at least.
    pub asn_min_addresses: usize,
    /// AS numbers never grouped into an AS spray (the corporate VPN's or proxy's AS, whose many
    /// users mistype from a few shared addresses).
    pub allow_asns: Vec<u32>,
}

impl Default for SpraySettings {
    fn default() -> Self {
        Self {
            enabled: true,
            min_principals: 5,
            window_minutes: 30,
            severity: Severity::High,
            by_asn: true,
            asn_min_principals: 8,
            asn_min_addresses: 3,
            allow_asns: vec![],
        }
    }
}

/// Calls of one principal refused on many distinct APIs.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ReconSettings {
    pub enabled: bool,
    /// Distinct APIs (service and call) refused to one principal within the window.
    pub min_apis: usize,
    pub window_minutes: i64,
    pub severity: Severity,
}

impl Default for ReconSettings {
    fn default() -> Self {
        Self { enabled: true, min_apis: 10, window_minutes: 10, severity: Severity::Medium }
    }
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct IngressSettings {
    pub enabled: bool,
    /// Public ranges that are ours (offices, VPN exits): opening to them is not exposure.
    pub trusted_cidrs: Vec<String>,
    pub admin_ports: Vec<u16>,
    /// Countries the organisation works from; a source elsewhere is foreign (high severity).
    pub home_countries: Vec<String>,
}

impl Default for IngressSettings {
    fn default() -> Self {
        Self {
            enabled: true,
            trusted_cidrs: vec![],
            admin_ports: vec![22, 3389, 5985, 5986, 23, 21, 445],
            home_countries: vec![],
        }
    }
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ExfiltrationSettings {
    pub enabled: bool,
    pub bytes_per_hour: i64,
    pub severity: Severity,
}

impl Default for ExfiltrationSettings {
    fn default() -> Self {
        Self { enabled: true, bytes_per_hour: 1_000_000_000, severity: Severity::High }
    }
}

/// An EC2 instance's role credentials used from outside AWS and the account.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct InstanceCredentialSettings {
    pub enabled: bool,
    /// AS numbers whose addresses are AWS's (besides the ranges of `--aws-ip-ranges`).
    pub aws_asns: Vec<u32>,
    /// Public ranges of the account's own (NAT gateways, Elastic IPs, offices): never alerted on.
    pub allow_cidrs: Vec<String>,
    pub allow_asns: Vec<u32>,
    pub severity: Severity,
}

impl Default for InstanceCredentialSettings {
    fn default() -> Self {
        Self {
            enabled: true,
            aws_asns: network::AWS_ASNS.to_vec(),
            allow_cidrs: vec![],
            allow_asns: vec![],
            severity: Severity::High,
        }
    }
}

/// A principal's first call or login from Tor, a VPN or a hosting provider.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AnonymizingSettings {
    pub enabled: bool,
    /// How far back a principal's earlier use of such networks is looked for.
    pub baseline_days: i64,
    pub include_tor: bool,
    pub include_vpn: bool,
    pub include_hosting: bool,
    /// User names or ARNs never alerted on.
    pub allow_principals: Vec<String>,
    /// Source ranges and AS numbers never alerted on (the company's own VPN provider).
    pub allow_cidrs: Vec<String>,
    pub allow_asns: Vec<u32>,
    pub severity: Severity,
    /// The severity when the source is a Tor exit.
    pub tor_severity: Severity,
}

impl Default for AnonymizingSettings {
    fn default() -> Self {
        Self {
            enabled: true,
            baseline_days: 90,
            include_tor: true,
            include_vpn: true,
            include_hosting: true,
            allow_principals: vec![],
            allow_cidrs: vec![],
            allow_asns: vec![],
            severity: Severity::Medium,
            tor_severity: Severity::High,
        }
    }
}

/// Source ranges and AS numbers a detector never alerts on.
#[derive(Clone, Debug, Default)]
pub(crate) struct NetworkAllowlist {
    pub(crate) cidrs: Vec<crate::net::Cidr>,
    pub(crate) asns: Vec<u32>,
}

impl NetworkAllowlist {
    pub(crate) fn contains(&self, ip: std::net::IpAddr) -> bool {
        self.cidrs.iter().any(|cidr| cidr.contains(ip))
    }
}

impl Declaration {
    fn meta(&self, settings: &DetectorSettings, file: &PolicyFile) -> PolicyMeta {
        PolicyMeta {
            id: self.id.to_string(),
            title: self.title.to_string(),
            severity: settings.severity(self.id),
            kind: PolicyKind::Detector,
            file: PathBuf::from(&file.path),
            origin: file.origin.clone(),
            enabled: settings.enabled(self.id),
            mitre: vec![Mitre::new(self.mitre.0, self.mitre.1)],
            description: None,
            subject: self.subject,
            dedup_window: Duration::hours(self.window_hours),
        }
    }
}

/// The ranges of a settings list; each one that does not parse is a problem of `field`.
fn parse_cidrs(
    list: &[String],
    field: &str,
    file: &PolicyFile,
    problems: &mut Vec<PolicyProblem>,
) -> Vec<crate::net::Cidr> {
    list.iter()
        .filter_map(|text| match text.parse() {
            Ok(cidr) => Some(cidr),
            Err(error) => {
                problems.push(PolicyProblem { file: file.location(), problem: format!("{field}: {error}") });
                None
            }
        })
        .collect()
}

/// The detectors, configured.
pub struct Detectors {
    pub settings: DetectorSettings,
    metas: Vec<PolicyMeta>,
    pub(crate) trusted: Vec<crate::net::Cidr>,
    pub(crate) hijack_allowed: Vec<crate::net::Cidr>,
    pub(crate) instance_allowed: NetworkAllowlist,
    pub(crate) anonymizing_allowed: NetworkAllowlist,
    pub(crate) port_scan_allowed: NetworkAllowlist,
    pub(crate) destination_allowed: NetworkAllowlist,
    /// The network context (Tor exits) for flow destinations, which ingest does not store.
    pub(crate) geo: Option<std::sync::Arc<crate::geo::GeoDb>>,
}

/// What each detector declares, but its severity and whether it is on (from the settings).
struct Declaration {
    id: &'static str,
    title: &'static str,
    subject: Subject,
    window_hours: i64,
    /// ATT&CK tactic and technique.
    mitre: (&'static str, &'static str),
}

const DECLARATIONS: &[Declaration] = &[
    Declaration {
        id: HIJACK,
        title: "Account hijacking attempt: console login from a new country",
        subject: Subject::Principal,
        window_hours: 24,
        mitre: ("TA0001", "T1078.004"),
    },
    Declaration {
        id: IMPOSSIBLE_TRAVEL,
        title: "Impossible travel between console logins",
        subject: Subject::Principal,
        window_hours: 24,
        mitre: ("TA0001", "T1078.004"),
    },
    Declaration {
        id: LOGIN_FAILURES,
        title: "Excessive console login failures",
        subject: Subject::Principal,
        window_hours: 1,
        mitre: ("TA0006", "T1110.001"),
    },
    Declaration {
        id: PASSWORD_SPRAY,
        title: "Password spray: failed console logins for many principals from one address",
        subject: Subject::SourceIp,
        window_hours: 1,
        mitre: ("TA0006", "T1110.003"),
    },
    Declaration {
        id: RECON_BURST,
        title: "Reconnaissance: one principal refused on many different APIs",
        subject: Subject::Principal,
        window_hours: 1,
        mitre: ("TA0007", "T1526"),
    },
    Declaration {
        id: SG_INGRESS,
        title: "Security group opened to the internet or a public address",
        subject: Subject::Resource,
        window_hours: 24,
        mitre: ("TA0005", "T1562.007"),
    },
    Declaration {
        id: EXFILTRATION,
        title: "Large data transfer from the VPC to one external address",
        subject: Subject::SourceIp,
        window_hours: 24,
        mitre: ("TA0010", "T1048"),
    },
    Declaration {
        id: INSTANCE_CREDENTIALS,
        title: "EC2 instance credentials used from outside AWS",
        subject: Subject::Principal,
        window_hours: 24,
        // Unsecured credentials: cloud instance metadata API.
        mitre: ("TA0006", "T1552.005"),
    },
    Declaration {
        id: ANONYMIZING_NETWORK,
        title: "Login or API call from an anonymising network (Tor, VPN, hosting) new for the principal",
        subject: Subject::Principal,
        window_hours: 24,
        mitre: ("TA0001", "T1078.004"),
    },
    Declaration {
        id: RARE_SENSITIVE_API,
        title: "Sensitive write API (IAM, KMS, bucket policy, logging, security services) new for the principal",
        subject: Subject::Principal,
        window_hours: 24,
        // Account manipulation; each finding adds the technique of the services it names.
        mitre: ("TA0003", "T1098"),
    },
    Declaration {
        id: PORT_SCAN,
        title: "Port scan or host sweep in flow logs: many ports or hosts, mostly rejected",
        subject: Subject::SourceIp,
        window_hours: 24,
        // Network service discovery (an inbound scan is reconnaissance, T1595, per finding).
        mitre: ("TA0007", "T1046"),
    },
    Declaration {
        id: SUSPICIOUS_DESTINATION,
        title: "Instance connected to a Tor exit or to an address of an open incident",
        subject: Subject::Resource,
        window_hours: 24,
        // Command and control (Tor: multi-hop proxy, T1090.003, per finding).
        mitre: ("TA0011", "T1071"),
    },
];

impl DetectorSettings {
    /// Checks every span of days and window of minutes against its bounds; one out of bounds is
    /// a problem naming its field and is replaced by its default (a detector never computes
    /// with it).
    pub fn bound_spans(&mut self) -> Vec<String> {
        let defaults = DetectorSettings::default();
        let mut problems = Vec::new();
        let mut check = |field: &str, value: &mut i64, (low, high): (i64, i64), default: i64, unit: &str| {
            if !(low..=high).contains(value) {
                problems.push(format!("{field}: {value} is not between {low} and {high} {unit}"));
                *value = default;
            }
        };
        let days = (1, MAX_DAYS);
        let minutes = (1, MAX_WINDOW_MINUTES);
        check(
            "account_hijacking.baseline_days",
            &mut self.account_hijacking.baseline_days,
            days,
            defaults.account_hijacking.baseline_days,
            "days",
        );
        check(
            "anonymizing_network.baseline_days",
            &mut self.anonymizing_network.baseline_days,
            days,
            defaults.anonymizing_network.baseline_days,
            "days",
        );
        check(
            "rare_sensitive_api.baseline_days",
            &mut self.rare_sensitive_api.baseline_days,
            days,
            defaults.rare_sensitive_api.baseline_days,
            "days",
        );
        check(
            "rare_sensitive_api.min_history_days",
            &mut self.rare_sensitive_api.min_history_days,
            (0, MAX_DAYS),
            defaults.rare_sensitive_api.min_history_days.min(self.rare_sensitive_api.baseline_days),
            "days",
        );
        check(
            "flow_suspicious_destination.incident_reach_days",
            &mut self.flow_suspicious_destination.incident_reach_days,
            (0, MAX_DAYS),
            defaults.flow_suspicious_destination.incident_reach_days,
            "days",
        );
        check(
            "login_failures.window_minutes",
            &mut self.login_failures.window_minutes,
            minutes,
            defaults.login_failures.window_minutes,
            "minutes",
        );
        check(
            "password_spray.window_minutes",
            &mut self.password_spray.window_minutes,
            minutes,
            defaults.password_spray.window_minutes,
            "minutes",
        );
        check(
            "reconnaissance.window_minutes",
            &mut self.reconnaissance.window_minutes,
            minutes,
            defaults.reconnaissance.window_minutes,
            "minutes",
        );
        check(
            "flow_port_scan.window_minutes",
            &mut self.flow_port_scan.window_minutes,
            minutes,
            defaults.flow_port_scan.window_minutes,
            "minutes",
        );
        problems
    }

    fn enabled(&self, id: &str) -> bool {
        match id {
            HIJACK => self.account_hijacking.enabled,
            IMPOSSIBLE_TRAVEL => self.impossible_travel.enabled,
            LOGIN_FAILURES => self.login_failures.enabled,
            PASSWORD_SPRAY => self.password_spray.enabled,
            RECON_BURST => self.reconnaissance.enabled,
            SG_INGRESS => self.security_group_ingress.enabled,
            EXFILTRATION => self.flow_exfiltration.enabled,
            INSTANCE_CREDENTIALS => self.instance_credentials.enabled,
            ANONYMIZING_NETWORK => self.anonymizing_network.enabled,
            RARE_SENSITIVE_API => self.rare_sensitive_api.enabled,
            PORT_SCAN => self.flow_port_scan.enabled,
            SUSPICIOUS_DESTINATION => self.flow_suspicious_destination.enabled,
            _ => false,
        }
    }

    fn switch_off(&mut self, id: &str) {
        match id {
            HIJACK => self.account_hijacking.enabled = false,
            IMPOSSIBLE_TRAVEL => self.impossible_travel.enabled = false,
            LOGIN_FAILURES => self.login_failures.enabled = false,
            PASSWORD_SPRAY => self.password_spray.enabled = false,
            RECON_BURST => self.reconnaissance.enabled = false,
            SG_INGRESS => self.security_group_ingress.enabled = false,
            EXFILTRATION => self.flow_exfiltration.enabled = false,
            INSTANCE_CREDENTIALS => self.instance_credentials.enabled = false,
            ANONYMIZING_NETWORK => self.anonymizing_network.enabled = false,
            RARE_SENSITIVE_API => self.rare_sensitive_api.enabled = false,
            PORT_SCAN => self.flow_port_scan.enabled = false,
            SUSPICIOUS_DESTINATION => self.flow_suspicious_destination.enabled = false,
            _ => {}
        }
    }

    /// The severity of detector `id`'s findings (the security group detector decides per
    /// finding; medium is what it declares).
    fn severity(&self, id: &str) -> Severity {
        match id {
            HIJACK => self.account_hijacking.severity,
            IMPOSSIBLE_TRAVEL => self.impossible_travel.severity,
            LOGIN_FAILURES => self.login_failures.severity,
            PASSWORD_SPRAY => self.password_spray.severity,
            RECON_BURST => self.reconnaissance.severity,
            EXFILTRATION => self.flow_exfiltration.severity,
            INSTANCE_CREDENTIALS => self.instance_credentials.severity,
            ANONYMIZING_NETWORK => self.anonymizing_network.severity,
            RARE_SENSITIVE_API => self.rare_sensitive_api.severity,
            PORT_SCAN => self.flow_port_scan.internal_severity,
            SUSPICIOUS_DESTINATION => self.flow_suspicious_destination.severity,
            _ => Severity::Medium,
        }
    }
}

impl Detectors {
    /// Configures the detectors from the settings file at `path` in `files`; without one, the
    /// defaults (a broken one is a problem, and the defaults apply).
    pub fn from_files(
        files: &PolicyFiles,
        path: &str,
        disable: &BTreeSet<String>,
        problems: &mut Vec<PolicyProblem>,
    ) -> Self {
        let Some(file) = files.get(path) else {
            let defaults = PolicyFile::new(path, "", Origin::Builtin);
            return Self::new(DetectorSettings::default(), &defaults, disable, problems);
        };
        let settings = yaml_serde::from_str(&file.text).unwrap_or_else(|error| {
            problems.push(PolicyProblem { file: file.location(), problem: error.to_string() });
            DetectorSettings::default()
        });
        Self::new(settings, file, disable, problems)
    }

    /// The detectors with `settings` (read from `file`), less those `disable` names.
    pub fn new(
        mut settings: DetectorSettings,
        file: &PolicyFile,
        disable: &BTreeSet<String>,
        problems: &mut Vec<PolicyProblem>,
    ) -> Self {
        let mut cidrs = |list: &[String], field: &str| parse_cidrs(list, field, file, problems);
        let trusted = cidrs(&settings.security_group_ingress.trusted_cidrs, "security_group_ingress.trusted_cidrs");
        let hijack_allowed = cidrs(&settings.account_hijacking.allow_cidrs, "account_hijacking.allow_cidrs");
        let instance_allowed = NetworkAllowlist {
            cidrs: cidrs(&settings.instance_credentials.allow_cidrs, "instance_credentials.allow_cidrs"),
            asns: settings.instance_credentials.allow_asns.clone(),
        };
        let anonymizing_allowed = NetworkAllowlist {
            cidrs: cidrs(&settings.anonymizing_network.allow_cidrs, "anonymizing_network.allow_cidrs"),
            asns: settings.anonymizing_network.allow_asns.clone(),
        };
        let port_scan_allowed = NetworkAllowlist {
            cidrs: cidrs(&settings.flow_port_scan.allow_cidrs, "flow_port_scan.allow_cidrs"),
            asns: vec![],
        };
        let destination_allowed = NetworkAllowlist {
            cidrs: cidrs(&settings.flow_suspicious_destination.allow_cidrs, "flow_suspicious_destination.allow_cidrs"),
            asns: vec![],
        };
        for problem in settings.bound_spans() {
            problems.push(PolicyProblem { file: file.location(), problem });
        }
        problems.extend(
            settings.rare_sensitive_api.problems().into_iter().map(|problem| PolicyProblem {
                file: file.location(),
                problem: format!("rare_sensitive_api.{problem}"),
            }),
        );
        problems.extend(
            settings
                .flow_port_scan
                .problems()
                .into_iter()
                .map(|problem| PolicyProblem { file: file.location(), problem: format!("flow_port_scan.{problem}") }),
        );
        for declaration in DECLARATIONS.iter().filter(|d| disable.contains(d.id)) {
            settings.switch_off(declaration.id);
        }
        let metas = DECLARATIONS.iter().map(|declaration| declaration.meta(&settings, file)).collect();
        Self {
            settings,
            metas,
            trusted,
            hijack_allowed,
            instance_allowed,
            anonymizing_allowed,
            port_scan_allowed,
            destination_allowed,
            geo: None,
        }
    }

    /// Gives the flow detectors the network context (the Tor exits of `--tor-exits` or an
    /// Anonymous-IP database): flow records store none.
    pub fn set_geo(&mut self, geo: Option<std::sync::Arc<crate::geo::GeoDb>>) {
        self.geo = geo;
    }

    pub fn metas(&self) -> impl Iterator<Item = &PolicyMeta> {
        self.metas.iter()
    }

    pub(crate) fn meta(&self, id: &str) -> &PolicyMeta {
        self.metas.iter().find(|m| m.id == id).expect("every detector has metadata")
    }

    /// Stateless detectors over one event.
    pub fn evaluate_event(&self, event: &PolicyEvent, only_policy: Option<&str>) -> Vec<Finding> {
        let mut findings = Vec::new();
        if self.settings.security_group_ingress.enabled && only_policy.is_none_or(|p| p == SG_INGRESS) {
            findings.extend(security_group::evaluate(self, event));
        }
        findings
    }
}
