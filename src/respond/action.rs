//! The containment actions: what each changes, named the way the CLI and API take it
//! (`KIND TARGET [REGION]`), parsed once so that holding an [`Action`] means it is well formed.

use serde::{Deserialize, Serialize};

use super::RespondError;
use crate::aws::{GLOBAL_REGION, is_region_name};

/// One containment action on one resource.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum Action {
    /// Revoke one security-group ingress rule, by its rule id (with its group, `sg-…:sgr-…`, the
    /// group is checked). The lease is the rule's, however it is named.
    RevokeIngressRule {
        region: String,
        rule_id: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        group_id: Option<String>,
    },
    /// Make an access key inactive.
    DeactivateAccessKey { user_name: String, access_key_id: String },
    /// Delete a user's console password.
    DeleteLoginProfile { user_name: String },
    /// Attach AWS's managed AWSDenyAll policy to a user or role.
    Quarantine { principal: Principal },
    /// Detach a managed policy from a role.
    DetachRolePolicy { role_name: String, policy_arn: String },
    /// Take the instance profile (and so the role's credentials) away from an instance.
    DisassociateInstanceProfile { region: String, instance_id: String },
    /// Snapshot every EBS volume of an instance, then stop (never terminate) it.
    StopInstance { region: String, instance_id: String },
    /// Restart the logging of a trail that StopLogging stopped.
    StartLogging { region: String, trail: String },
    /// Revoke every ingress rule a principal authorised that still exists (one
    /// `revoke-ingress-rule` per rule, recorded each, leased per rule).
    RevokePrincipalIngress { principal: Principal },
}

/// A user or a role, by name.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", content = "name", rename_all = "lowercase")]
pub enum Principal {
    User(String),
    Role(String),
}

impl Principal {
    /// `user/NAME` or `role/NAME`.
    pub fn parse(target: &str) -> Result<Self, RespondError> {
        match target.split_once('/') {
            Some(("user", name)) => Ok(Principal::User(check_iam_name("target", name)?)),
            Some(("role", name)) => Ok(Principal::Role(check_iam_name("target", name)?)),
            _ => Err(invalid("target", format!("expected user/NAME or role/NAME, got `{target}`"))),
        }
    }

    pub fn label(&self) -> String {
        match self {
            Principal::User(name) => format!("user/{name}"),
            Principal::Role(name) => format!("role/{name}"),
        }
    }
}

/// Every kind, as the CLI and API name it.
pub const KINDS: [&str; 9] = [
    "revoke-ingress-rule",
    "deactivate-access-key",
    "delete-login-profile",
    "quarantine",
    "detach-role-policy",
    "disassociate-instance-profile",
    "stop-instance",
    "start-logging",
    "revoke-principal-ingress",
];

/// The name of AWS's managed policy that denies everything, which quarantine attaches (and the
/// only policy the responder role may attach).
pub const DENY_ALL_POLICY_NAME: &str = "AWSDenyAll";

/// Its ARN in a partition (`aws`, `aws-cn`, `aws-us-gov`).
pub fn deny_all_arn(partition: &str) -> String {
    format!("arn:{partition}:iam::aws:policy/{DENY_ALL_POLICY_NAME}")
}

fn invalid(field: &'static str, reason: impl Into<String>) -> RespondError {
    RespondError::Invalid { field, reason: reason.into() }
}

/// `PREFIX-` followed by 8 to 32 lowercase hex digits (`sgr-…`, `i-…`).
fn check_aws_id(field: &'static str, value: &str, prefix: &str) -> Result<String, RespondError> {
    let ok = value
        .strip_prefix(prefix)
        .is_some_and(|hex| (8..=32).contains(&hex.len()) && hex.bytes().all(|b| b.is_ascii_hexdigit()));
    if ok { Ok(value.to_owned()) } else { Err(invalid(field, format!("`{value}` is not a {prefix}… id"))) }
}

/// An IAM user or role name: 1 to 64 characters of `[\w+=,.@-]`.
fn check_iam_name(field: &'static str, value: &str) -> Result<String, RespondError> {
    let ok =
        (1..=64).contains(&value.len()) && value.bytes().all(|b| b.is_ascii_alphanumeric() || b"+=,.@_-".contains(&b));
    if ok { Ok(value.to_owned()) } else { Err(invalid(field, format!("`{value}` is not an IAM user or role name"))) }
}

fn check_access_key(value: &str) -> Result<String, RespondError> {
    let ok = (16..=128).contains(&value.len()) && value.bytes().all(|b| b.is_ascii_uppercase() || b.is_ascii_digit());
    if ok { Ok(value.to_owned()) } else { Err(invalid("target", format!("`{value}` is not an access key id"))) }
}

/// A managed policy ARN: `arn:PARTITION:iam::ACCOUNT|aws:policy/[PATH/]NAME`.
fn check_policy_arn(value: &str) -> Result<String, RespondError> {
    let parts: Vec<&str> = value.splitn(6, ':').collect();
    let ok = parts.len() == 6
        && parts[0] == "arn"
        && parts[1].starts_with("aws")
        && parts[2] == "iam"
        && parts[3].is_empty()
        && (parts[4] == "aws" || (parts[4].len() == 12 && parts[4].bytes().all(|b| b.is_ascii_digit())))
        && parts[5].strip_prefix("policy/").is_some_and(|name| {
            (1..=512).contains(&name.len())
                && name.bytes().all(|b| b.is_ascii_alphanumeric() || b"+=,.@_-/".contains(&b))
        });
    if ok { Ok(value.to_owned()) } else { Err(invalid("target", format!("`{value}` is not a managed policy ARN"))) }
}

/// A trail name (3 to 128 of `[A-Za-z0-9._-]`) or a trail ARN.
fn check_trail(value: &str) -> Result<String, RespondError> {
    let name_ok = |name: &str| {
        (3..=128).contains(&name.len()) && name.bytes().all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
    };
    let ok = match value.strip_prefix("arn:") {
        Some(rest) => rest.contains(":cloudtrail:") && rest.split_once(":trail/").is_some_and(|(_, n)| name_ok(n)),
        None => name_ok(value),
    };
    if ok { Ok(value.to_owned()) } else { Err(invalid("target", format!("`{value}` is not a trail name or ARN"))) }
}

fn check_region(region: Option<&str>, kind: &str) -> Result<String, RespondError> {
    match region {
        Some(region) if is_region_name(region) => Ok(region.to_owned()),
        Some(region) => Err(invalid("region", format!("`{region}` is not an AWS region name"))),
        None => Err(invalid("region", format!("{kind} needs the region of its resource"))),
    }
}

/// Splits `A:B` at the first `:` (IAM names never hold one).
fn pair<'a>(target: &'a str, shape: &str) -> Result<(&'a str, &'a str), RespondError> {
    target.split_once(':').ok_or_else(|| invalid("target", format!("expected {shape}, got `{target}`")))
}

impl Action {
    /// Parses `KIND TARGET [REGION]`; the target's shape depends on the kind (see [`KINDS`]
    /// and docs/response.md).
    pub fn parse(kind: &str, target: &str, region: Option<&str>) -> Result<Self, RespondError> {
        let target = target.trim();
        Ok(match kind {
            "revoke-ingress-rule" => {
                let (group_id, rule_id) = match target.split_once(':') {
                    Some((group, rule)) => (Some(check_aws_id("target", group, "sg-")?), rule),
                    None => (None, target),
                };
                Action::RevokeIngressRule {
                    region: check_region(region, kind)?,
                    rule_id: check_aws_id("target", rule_id, "sgr-")?,
                    group_id,
                }
            }
            "deactivate-access-key" => {
                let (user, key) = pair(target, "USER:ACCESS_KEY_ID")?;
                Action::DeactivateAccessKey {
                    user_name: check_iam_name("target", user)?,
                    access_key_id: check_access_key(key)?,
                }
            }
            "delete-login-profile" => Action::DeleteLoginProfile { user_name: check_iam_name("target", target)? },
            "quarantine" => Action::Quarantine { principal: Principal::parse(target)? },
            "revoke-principal-ingress" => Action::RevokePrincipalIngress { principal: Principal::parse(target)? },
            "detach-role-policy" => {
                let (role, policy) = pair(target, "ROLE:POLICY_ARN")?;
                if policy.ends_with(&format!(":policy/{DENY_ALL_POLICY_NAME}")) {
                    return Err(invalid(
                        "target",
                        "detaching AWSDenyAll lifts a quarantine: undo the quarantine action instead",
                    ));
                }
                Action::DetachRolePolicy {
                    role_name: check_iam_name("target", role)?,
                    policy_arn: check_policy_arn(policy)?,
                }
            }
            "disassociate-instance-profile" => Action::DisassociateInstanceProfile {
                region: check_region(region, kind)?,
                instance_id: check_aws_id("target", target, "i-")?,
            },
            "stop-instance" => Action::StopInstance {
                region: check_region(region, kind)?,
                instance_id: check_aws_id("target", target, "i-")?,
            },
            "start-logging" => {
                Action::StartLogging { region: check_region(region, kind)?, trail: check_trail(target)? }
            }
            other => return Err(invalid("kind", format!("`{other}` is not an action (one of {})", KINDS.join(", ")))),
        })
    }

    /// Checks a stored or deserialized action as `parse` would.
    pub fn validated(self) -> Result<Self, RespondError> {
        let region = self.region();
        let region = (region != GLOBAL_REGION).then_some(region);
        Self::parse(self.kind(), &self.target(), region)
    }

    pub fn kind(&self) -> &'static str {
        match self {
            Action::RevokeIngressRule { .. } => KINDS[0],
            Action::DeactivateAccessKey { .. } => KINDS[1],
            Action::DeleteLoginProfile { .. } => KINDS[2],
            Action::Quarantine { .. } => KINDS[3],
            Action::DetachRolePolicy { .. } => KINDS[4],
            Action::DisassociateInstanceProfile { .. } => KINDS[5],
            Action::StopInstance { .. } => KINDS[6],
            Action::StartLogging { .. } => KINDS[7],
            Action::RevokePrincipalIngress { .. } => KINDS[8],
        }
    }

    /// The target as `parse` takes it.
    pub fn target(&self) -> String {
        match self {
            Action::RevokeIngressRule { rule_id, group_id: None, .. } => rule_id.clone(),
            Action::RevokeIngressRule { rule_id, group_id: Some(group), .. } => format!("{group}:{rule_id}"),
            Action::DeactivateAccessKey { user_name, access_key_id } => format!("{user_name}:{access_key_id}"),
            Action::DeleteLoginProfile { user_name } => user_name.clone(),
            Action::Quarantine { principal } | Action::RevokePrincipalIngress { principal } => principal.label(),
            Action::DetachRolePolicy { role_name, policy_arn } => format!("{role_name}:{policy_arn}"),
            Action::DisassociateInstanceProfile { instance_id, .. } | Action::StopInstance { instance_id, .. } => {
                instance_id.clone()
            }
            Action::StartLogging { trail, .. } => trail.clone(),
        }
    }

    /// The region of its resource; `global` for IAM.
    pub fn region(&self) -> &str {
        match self {
            Action::RevokeIngressRule { region, .. }
            | Action::DisassociateInstanceProfile { region, .. }
            | Action::StopInstance { region, .. }
            | Action::StartLogging { region, .. } => region,
            _ => GLOBAL_REGION,
        }
    }

    /// The resource its lease covers: two actions on one user, role or instance never run at
    /// once, whatever their kinds.
    /// IAM names are case-insensitive (`Bob` is `bob`) and a trail is one by name or ARN, so
    /// they are reduced to one spelling.
    pub fn resource(&self) -> String {
        match self {
            // By the rule id, however it is spelled (`sg-…:sgr-…` or `sgr-…`): one rule, one lease.
            Action::RevokeIngressRule { region, rule_id, .. } => format!("{region}/{rule_id}"),
            Action::DeactivateAccessKey { user_name, .. } | Action::DeleteLoginProfile { user_name } => {
                format!("iam/user/{}", user_name.to_ascii_lowercase())
            }
            Action::Quarantine { principal } => format!("iam/{}", principal.label().to_ascii_lowercase()),
            // Its own lease: each rule it revokes takes that rule's lease in turn.
            Action::RevokePrincipalIngress { principal } => {
                format!("ingress-of/iam/{}", principal.label().to_ascii_lowercase())
            }
            Action::DetachRolePolicy { role_name, .. } => format!("iam/role/{}", role_name.to_ascii_lowercase()),
            Action::DisassociateInstanceProfile { region, instance_id }
            | Action::StopInstance { region, instance_id } => format!("{region}/{instance_id}"),
            Action::StartLogging { region, trail } => {
                let name = trail.rsplit_once(":trail/").map_or(trail.as_str(), |(_, name)| name);
                format!("{region}/trail/{name}")
            }
        }
    }

    /// What undo does, or why there is none.
    pub fn undo(&self) -> Undo {
        match self {
            Action::RevokeIngressRule { .. } => Undo::Possible(
                "re-authorizes the rule as it was live just before the revoke: a rule a modification widened comes back widened",
            ),
            Action::DeactivateAccessKey { .. } => Undo::Possible("makes the key active again"),
            Action::DeleteLoginProfile { .. } => Undo::Impossible(
                "a console password cannot be restored without knowing it; the user needs a new one from an administrator",
            ),
            Action::Quarantine { .. } => Undo::Possible("detaches the AWSDenyAll policy Skywarden attached"),
            Action::DetachRolePolicy { .. } => Undo::Possible("re-attaches the detached policy"),
            Action::DisassociateInstanceProfile { .. } => Undo::Possible("re-associates the recorded instance profile"),
            Action::StopInstance { .. } => {
                Undo::Possible("starts the instance again if it was running (the snapshots are kept)")
            }
            Action::StartLogging { .. } => {
                Undo::Impossible("Skywarden never stops logging; stop it yourself if it must be off")
            }
            Action::RevokePrincipalIngress { .. } => Undo::Possible(
                "re-authorizes each rule as it was live just before the revoke: a rule a modification widened comes back widened",
            ),
        }
    }
}

impl Action {
    /// Whether its undo has to grant access (re-open a rule, re-attach a policy, pass a role):
    /// allowed only where the responder role was deployed with AllowGrantingUndo=true.
    /// Re-activating an access key counts: the key deactivated may be a stolen one.
    pub fn undo_grants(&self) -> bool {
        matches!(
            self,
            Action::RevokeIngressRule { .. }
                | Action::RevokePrincipalIngress { .. }
                | Action::DeactivateAccessKey { .. }
                | Action::DetachRolePolicy { .. }
                | Action::DisassociateInstanceProfile { .. }
        )
    }
}

/// Whether an action can be undone.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(tag = "undo", content = "how", rename_all = "lowercase")]
pub enum Undo {
    Possible(&'static str),
    Impossible(&'static str),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kind_parses_its_target_and_prints_it_back() {
        let cases = [
            ("revoke-ingress-rule", "sgr-0123456789abcdef0", Some("eu-west-1")),
            ("deactivate-access-key", "alice:AKIAIOSFODNN7EXAMPLE", None),
            ("delete-login-profile", "alice", None),
            ("quarantine", "role/admin-2", None),
            ("detach-role-policy", "ci:arn:aws:iam::aws:policy/AdministratorAccess", None),
            ("disassociate-instance-profile", "i-0123456789abcdef0", Some("us-east-1")),
            ("stop-instance", "i-0123456789abcdef0", Some("us-east-1")),
            ("start-logging", "arn:aws:cloudtrail:us-east-1:111122223333:trail/main", Some("us-east-1")),
            ("revoke-principal-ingress", "user/alice", None),
        ];
        for (kind, target, region) in cases {
            let action = Action::parse(kind, target, region).unwrap();
            assert_eq!((action.kind(), action.target()), (kind, target.to_owned()));
            let stored = serde_json::to_value(&action).unwrap();
            let back: Action = serde_json::from_value(stored).unwrap();
            assert_eq!(back.clone().validated().unwrap(), action);
        }
        assert_eq!(KINDS.len(), cases.len());
    }

    #[test]
    fn bad_targets_name_the_field() {
        let field = |kind, target, region| match Action::parse(kind, target, region) {
            Err(RespondError::Invalid { field, .. }) => field,
            other => panic!("{other:?}"),
        };
        assert_eq!(field("revoke-ingress-rule", "sg-0123456789abcdef0", Some("us-east-1")), "target");
        assert_eq!(field("revoke-ingress-rule", "sgr-0123456789abcdef0", None), "region");
        assert_eq!(field("quarantine", "group/x", None), "target");
        assert_eq!(field("deactivate-access-key", "alice", None), "target");
        assert_eq!(field("detach-role-policy", "ci:arn:aws:s3:::bucket", None), "target");
        assert_eq!(field("terminate-instance", "i-0123456789abcdef0", Some("us-east-1")), "kind");
        assert_eq!(field("quarantine", "user/al ice", None), "target");
        assert_eq!(field("detach-role-policy", "ci:arn:aws:iam::aws:policy/AWSDenyAll", None), "target");
    }

    #[test]
    fn one_principal_or_instance_is_one_leased_resource_whatever_the_action() {
        let key = Action::parse("deactivate-access-key", "bob:AKIAIOSFODNN7EXAMPLE", None).unwrap();
        let quarantine = Action::parse("quarantine", "user/bob", None).unwrap();
        assert_eq!(key.resource(), quarantine.resource());
        let stop = Action::parse("stop-instance", "i-0123456789abcdef0", Some("us-east-1")).unwrap();
        let profile = Action::parse("disassociate-instance-profile", "i-0123456789abcdef0", Some("us-east-1")).unwrap();
        assert_eq!(stop.resource(), profile.resource());
        // IAM names are case-insensitive; a trail is the same by name or ARN.
        let upper = Action::parse("quarantine", "user/Bob", None).unwrap();
        assert_eq!(upper.resource(), quarantine.resource());
        let role = Action::parse("quarantine", "role/CI-Deploy", None).unwrap();
        let detach =
            Action::parse("detach-role-policy", "ci-deploy:arn:aws:iam::aws:policy/ReadOnlyAccess", None).unwrap();
        assert_eq!(role.resource(), detach.resource());
        let by_name = Action::parse("start-logging", "main", Some("us-east-1")).unwrap();
        let by_arn =
            Action::parse("start-logging", "arn:aws:cloudtrail:us-east-1:111122223333:trail/main", Some("us-east-1"))
                .unwrap();
        assert_eq!(by_name.resource(), by_arn.resource());
        assert_ne!(by_name.resource(), Action::parse("start-logging", "other", Some("us-east-1")).unwrap().resource());
    }

    #[test]
    fn a_rule_is_leased_by_its_id_however_it_is_named() {
        let one = Action::parse("revoke-ingress-rule", "sg-0123456789abcdef0:sgr-0123456789abcdef0", Some("us-east-1"))
            .unwrap();
        let bare = Action::parse("revoke-ingress-rule", "sgr-0123456789abcdef0", Some("us-east-1")).unwrap();
        assert_eq!(one.resource(), bare.resource(), "two spellings of one rule share one lease");
        let two = Action::parse("revoke-ingress-rule", "sg-0123456789abcdef0:sgr-00000000000000001", Some("us-east-1"))
            .unwrap();
        assert_ne!(one.resource(), two.resource(), "another rule of the group is another lease");
        assert_eq!(one.resource(), "us-east-1/sgr-0123456789abcdef0");
        assert_eq!(one.target(), "sg-0123456789abcdef0:sgr-0123456789abcdef0");
        let stored: Action = serde_json::from_value(serde_json::to_value(&one).unwrap()).unwrap();
        assert_eq!(stored.validated().unwrap(), one);
        // Rows stored before the group was recorded still read.
        let old = serde_json::json!({"kind": "revoke-ingress-rule", "region": "us-east-1", "rule_id": "sgr-0123456789abcdef0"});
        let old: Action = serde_json::from_value(old).unwrap();
        assert_eq!(old.resource(), "us-east-1/sgr-0123456789abcdef0");
        let principal = Action::parse("revoke-principal-ingress", "user/Alice", None).unwrap();
        assert_ne!(principal.resource(), Action::parse("quarantine", "user/alice", None).unwrap().resource());
        assert!(principal.undo_grants());
    }
}
