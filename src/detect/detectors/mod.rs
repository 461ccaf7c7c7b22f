//! Behavioural detectors in Rust, configured by `policies/detectors.yaml`. They need state
//! (login baselines, sliding windows) or address arithmetic that Sigma rules do not have.
//!
//! - `aws-security-group-ingress-opened`: a rule opened to the internet or a public address.
//! - `aws-account-hijacking-attempt`, `aws-impossible-travel`, `aws-excessive-login-failures`:
//!   console logins, evaluated in event-time order.
//! - `aws-flow-exfiltration-volume`: bytes from the VPC to one external address per hour.

pub mod exfiltration;
pub mod logins;
pub mod security_group;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use chrono::Duration;
use serde::Deserialize;

use super::{PolicyEvent, PolicyKind, PolicyMeta, PolicyProblem, Subject};
use crate::model::{Finding, Mitre, Severity};

pub const HIJACK: &str = "aws-account-hijacking-attempt";
pub const IMPOSSIBLE_TRAVEL: &str = "aws-impossible-travel";
pub const LOGIN_FAILURES: &str = "aws-excessive-login-failures";
pub const SG_INGRESS: &str = "aws-security-group-ingress-opened";
pub const EXFILTRATION: &str = "aws-flow-exfiltration-volume";

/// Everything `detectors.yaml` can set; every field has a default.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DetectorSettings {
    pub account_hijacking: HijackSettings,
    pub impossible_travel: TravelSettings,
    pub login_failures: FailureSettings,
    pub security_group_ingress: IngressSettings,
    pub flow_exfiltration: ExfiltrationSettings,
}

impl Default for DetectorSettings {
    fn default() -> Self {
        Self {
            account_hijacking: HijackSettings::default(),
            impossible_travel: TravelSettings::default(),
            login_failures: FailureSettings::default(),
            security_group_ingress: IngressSettings::default(),
            flow_exfiltration: ExfiltrationSettings::default(),
        }
    }
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

/// The detectors, configured.
pub struct Detectors {
    pub settings: DetectorSettings,
    metas: Vec<PolicyMeta>,
    pub(crate) trusted: Vec<crate::net::Cidr>,
    pub(crate) hijack_allowed: Vec<crate::net::Cidr>,
}

impl Detectors {
    pub fn load(file: &Path, disable: &BTreeSet<String>, problems: &mut Vec<PolicyProblem>) -> Self {
        let settings = match std::fs::read_to_string(file) {
            Ok(text) => yaml_serde::from_str(&text).unwrap_or_else(|error| {
                problems.push(PolicyProblem { file: file.display().to_string(), problem: error.to_string() });
                DetectorSettings::default()
            }),
            Err(_) => DetectorSettings::default(),
        };
        Self::new(settings, file, disable, problems)
    }

    pub fn new(
        mut settings: DetectorSettings,
        file: &Path,
        disable: &BTreeSet<String>,
        problems: &mut Vec<PolicyProblem>,
    ) -> Self {
        let mut cidrs = |list: &[String], field: &str| -> Vec<crate::net::Cidr> {
            list.iter()
                .filter_map(|text| match text.parse() {
                    Ok(cidr) => Some(cidr),
                    Err(error) => {
                        problems.push(PolicyProblem {
                            file: file.display().to_string(),
                            problem: format!("{field}: {error}"),
                        });
                        None
                    }
                })
                .collect()
        };
        let trusted = cidrs(&settings.security_group_ingress.trusted_cidrs, "security_group_ingress.trusted_cidrs");
        let hijack_allowed = cidrs(&settings.account_hijacking.allow_cidrs, "account_hijacking.allow_cidrs");
        settings.account_hijacking.enabled &= !disable.contains(HIJACK);
        settings.impossible_travel.enabled &= !disable.contains(IMPOSSIBLE_TRAVEL);
        settings.login_failures.enabled &= !disable.contains(LOGIN_FAILURES);
        settings.security_group_ingress.enabled &= !disable.contains(SG_INGRESS);
        settings.flow_exfiltration.enabled &= !disable.contains(EXFILTRATION);
        let meta =
            |id: &str, title: &str, severity, enabled, subject, window: Duration, mitre: Vec<Mitre>| PolicyMeta {
                id: id.to_string(),
                title: title.to_string(),
                severity,
                kind: PolicyKind::Detector,
                file: PathBuf::from(file),
                enabled,
                mitre,
                description: None,
                subject,
                dedup_window: window,
            };
        let s = &settings;
        let metas = vec![
            meta(
                HIJACK,
                "Account hijacking attempt: console login from a new country",
                s.account_hijacking.severity,
                s.account_hijacking.enabled,
                Subject::Principal,
                Duration::hours(24),
                vec![Mitre::new("TA0001", "T1078.004")],
            ),
            meta(
                IMPOSSIBLE_TRAVEL,
                "Impossible travel between console logins",
                s.impossible_travel.severity,
                s.impossible_travel.enabled,
                Subject::Principal,
                Duration::hours(24),
                vec![Mitre::new("TA0001", "T1078.004")],
            ),
            meta(
                LOGIN_FAILURES,
                "Excessive console login failures",
                s.login_failures.severity,
                s.login_failures.enabled,
                Subject::Principal,
                Duration::hours(1),
                vec![Mitre::new("TA0006", "T1110.001")],
            ),
            meta(
                SG_INGRESS,
                "Security group opened to the internet or a public address",
                Severity::Medium,
                s.security_group_ingress.enabled,
                Subject::Resource,
                Duration::hours(24),
                vec![Mitre::new("TA0005", "T1562.007")],
            ),
            meta(
                EXFILTRATION,
                "Large data transfer from the VPC to one external address",
                s.flow_exfiltration.severity,
                s.flow_exfiltration.enabled,
                Subject::SourceIp,
                Duration::hours(24),
                vec![Mitre::new("TA0010", "T1048")],
            ),
        ];
        Self { settings, metas, trusted, hijack_allowed }
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
