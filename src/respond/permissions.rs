//! The responder role's template against the code: every SDK call the actions make has its
//! permission, and every permission the template allows is used by a call (or implied by one).

use std::collections::BTreeSet;

const TEMPLATE: &str = include_str!("../../deploy/skywarden-responder-role.yaml");

/// The source files that call AWS with the responder role.
const SOURCES: &[&str] = &[include_str!("ec2.rs"), include_str!("iam.rs"), include_str!("trail.rs")];

/// Permissions a call needs besides its own action name.
const IMPLIED: &[(&str, &str)] = &[
    // Associating a profile passes its role to EC2.
    ("iam:PassRole", "ec2:AssociateIamInstanceProfile"),
    // Snapshots are tagged with the action's id when they are created.
    ("ec2:CreateTags", "ec2:CreateSnapshot"),
];

/// `client.method(` on the clients named `ec2`, `iam` and `cloudtrail`, as `service:Operation`.
fn sdk_calls(source: &str) -> BTreeSet<String> {
    let compact: String = source.chars().filter(|c| !c.is_whitespace()).collect();
    let mut calls = BTreeSet::new();
    for service in ["ec2", "iam", "cloudtrail"] {
        let needle = format!("{service}.");
        for (at, _) in compact.match_indices(&needle) {
            let before = compact[..at].chars().last();
            if before.is_some_and(|c| c.is_alphanumeric() || c == '_' || c == '.' || c == ':' || c == '"') {
                continue;
            }
            let rest = &compact[at + needle.len()..];
            let method: String = rest.chars().take_while(|c| c.is_ascii_lowercase() || *c == '_').collect();
            if method.is_empty() || !rest[method.len()..].starts_with("()") {
                continue;
            }
            let pascal: String = method.split('_').map(|word| word[..1].to_ascii_uppercase() + &word[1..]).collect();
            calls.insert(format!("{service}:{pascal}"));
        }
    }
    calls
}

/// The operations named in `AwsError::from_sdk("service:Operation", …)`.
fn named_operations(source: &str) -> BTreeSet<String> {
    source
        .match_indices("from_sdk(\"")
        .map(|(at, _)| source[at + 10..].split('"').next().unwrap_or_default().to_owned())
        .collect()
}

/// The actions the template's Allow statements list (`- service:Action` items under `Action:`);
/// the Deny statements use one-line wildcards (`Action: "iam:*"`).
fn allowed_actions(template: &str) -> BTreeSet<String> {
    let mut allowed = BTreeSet::new();
    let mut effect_allow = false;
    let mut in_actions = false;
    for line in template.lines() {
        let trimmed = line.trim();
        if let Some(effect) = trimmed.strip_prefix("Effect:") {
            effect_allow = effect.trim() == "Allow";
        }
        if trimmed == "Action:" {
            in_actions = true;
            continue;
        }
        if trimmed.starts_with('#') {
            continue;
        }
        match trimmed.strip_prefix("- ") {
            Some(item) if in_actions => {
                assert!(effect_allow, "an action list outside an Allow statement: {item}");
                allowed.insert(item.trim().to_owned());
            }
            _ => in_actions = false,
        }
    }
    allowed
}

#[test]
fn the_template_allows_exactly_the_calls_the_actions_make() {
    let calls: BTreeSet<String> = SOURCES.iter().flat_map(|s| sdk_calls(s)).collect();
    let named: BTreeSet<String> = SOURCES.iter().flat_map(|s| named_operations(s)).collect();
    assert_eq!(calls, named, "every SDK call names its own operation in its error");
    assert!(calls.contains("ec2:RevokeSecurityGroupIngress") && calls.contains("cloudtrail:StartLogging"));
    assert!(calls.len() >= 25, "{calls:?}");

    let allowed = allowed_actions(TEMPLATE);
    let missing: Vec<&String> = calls.iter().filter(|c| !allowed.contains(*c)).collect();
    assert!(missing.is_empty(), "calls the template does not allow: {missing:?}");
    let unused: Vec<&String> = allowed
        .iter()
        .filter(|a| !calls.contains(*a) && !IMPLIED.iter().any(|(p, by)| p == a && calls.contains(*by)))
        .collect();
    assert!(unused.is_empty(), "permissions no call needs: {unused:?}");
}

#[test]
fn the_template_denies_skywardens_own_roles_and_protected_resources() {
    for needle in [
        "role/${RoleName}",
        "role/${ReadOnlyRoleName}",
        "aws:ResourceTag/skywarden:protected",
        "iam:ResourceTag/skywarden:protected",
        "sts:ExternalId: !Ref ExternalId",
    ] {
        assert!(TEMPLATE.contains(needle), "{needle}");
    }
    assert_eq!(TEMPLATE.matches("Effect: Deny").count(), 4);
    assert!(!TEMPLATE.contains("TerminateInstances") && !TEMPLATE.contains("StopLogging"));
}

#[test]
fn the_scanner_reads_calls_across_lines() {
    let source = "let a = ec2\n    .describe_instances()\n    .send();\nsession.ec2(region); \"ec2.amazonaws.com\"";
    assert_eq!(sdk_calls(source), BTreeSet::from(["ec2:DescribeInstances".to_owned()]));
}
