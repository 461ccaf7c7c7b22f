//! The responder role's template against the code: every SDK call the actions make has its
//! permission, and every permission the template allows is used by a call (or implied by one).

use std::collections::BTreeSet;

use yaml_serde::{Mapping, Value};

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

/// One policy statement of the template, and whether it sits in the `!If [GrantingUndo, …]`
/// of the opt-in undos.
struct Statement<'a> {
    body: &'a Mapping,
    opt_in: bool,
}

impl Statement<'_> {
    fn allows(&self) -> bool {
        self.body.get("Effect").and_then(Value::as_str) == Some("Allow")
    }

    fn actions(&self) -> Vec<String> {
        match self.body.get("Action") {
            Some(Value::String(one)) => vec![one.clone()],
            Some(Value::Sequence(items)) => items.iter().filter_map(Value::as_str).map(str::to_owned).collect(),
            _ => Vec::new(),
        }
    }

    /// The `iam:PolicyARN` an `ArnEquals` condition pins, as written (`!Sub …`).
    fn pinned_policy(&self) -> Option<String> {
        let pinned = &self.body.get("Condition")?.get("ArnEquals")?.get("iam:PolicyARN")?;
        match pinned {
            Value::Tagged(tagged) => tagged.value.as_str().map(str::to_owned),
            other => other.as_str().map(str::to_owned),
        }
    }
}

fn is_tag(tagged: &yaml_serde::value::TaggedValue, name: &str) -> bool {
    tagged.tag.to_string().trim_start_matches('!') == name
}

/// The statements under `value`, inside `!If`s too (`opt_in` under `!If [GrantingUndo, …]`).
fn statements(value: &Value, opt_in: bool) -> Vec<Statement<'_>> {
    match value {
        Value::Mapping(body) if body.contains_key("Effect") => vec![Statement { body, opt_in }],
        Value::Mapping(body) => body.values().flat_map(|v| statements(v, opt_in)).collect(),
        Value::Sequence(items) => items.iter().flat_map(|v| statements(v, opt_in)).collect(),
        Value::Tagged(tagged) if is_tag(tagged, "If") => {
            let condition = tagged.value.get(0).and_then(Value::as_str);
            statements(&tagged.value, opt_in || condition == Some("GrantingUndo"))
        }
        Value::Tagged(tagged) => statements(&tagged.value, opt_in),
        _ => Vec::new(),
    }
}

fn template() -> Value {
    yaml_serde::from_str(TEMPLATE).expect("the responder template is YAML")
}

fn role_statements(template: &Value) -> Vec<Statement<'_>> {
    statements(&template["Resources"]["SkywardenResponderRole"]["Properties"]["Policies"], false)
}

/// The actions the template's Allow statements grant, the opt-in ones included.
fn allowed_actions(template: &Value) -> BTreeSet<String> {
    role_statements(template).iter().filter(|s| s.allows()).flat_map(Statement::actions).collect()
}

/// Calls that can grant access: attach or write a policy, open a rule, pass a role.
const GRANTING: &[&str] = &[
    "iam:AttachUserPolicy",
    "iam:AttachRolePolicy",
    "iam:AttachGroupPolicy",
    "iam:PutUserPolicy",
    "iam:PutRolePolicy",
    "iam:PutGroupPolicy",
    "iam:CreatePolicyVersion",
    "iam:SetDefaultPolicyVersion",
    "iam:UpdateAssumeRolePolicy",
    "iam:CreateAccessKey",
    "iam:UpdateAccessKey",
    "ec2:StartInstances",
    "iam:CreateLoginProfile",
    "iam:UpdateLoginProfile",
    "iam:AddUserToGroup",
    "iam:PassRole",
    "ec2:AuthorizeSecurityGroupIngress",
    "ec2:AuthorizeSecurityGroupEgress",
    "ec2:ModifySecurityGroupRules",
    "ec2:AssociateIamInstanceProfile",
    "ec2:ReplaceIamInstanceProfileAssociation",
];

/// Granting calls IAM cannot pin, allowed without the opt-in, and how each is held back:
/// UpdateAccessKey (Active or Inactive alike) by the code, which refuses the undo of a
/// deactivated key without the opt-in; StartInstances by the tag a stop leaves.
const GATED: &[(&str, &str)] =
    &[("iam:UpdateAccessKey", "code"), ("ec2:StartInstances", "aws:ResourceTag/skywarden:stopped-by-response")];

/// The undo calls that have to grant, behind AllowGrantingUndo (the kinds whose
/// `Action::undo_grants` is true).
const OPT_IN_UNDO: &[&str] =
    &["ec2:AuthorizeSecurityGroupIngress", "iam:AttachRolePolicy", "ec2:AssociateIamInstanceProfile", "iam:PassRole"];

#[test]
fn the_template_allows_exactly_the_calls_the_actions_make() {
    let calls: BTreeSet<String> = SOURCES.iter().flat_map(|s| sdk_calls(s)).collect();
    let named: BTreeSet<String> = SOURCES.iter().flat_map(|s| named_operations(s)).collect();
    assert_eq!(calls, named, "every SDK call names its own operation in its error");
    assert!(calls.contains("ec2:RevokeSecurityGroupIngress") && calls.contains("cloudtrail:StartLogging"));
    assert!(calls.len() >= 25, "{calls:?}");

    let template = template();
    let allowed = allowed_actions(&template);
    let missing: Vec<&String> = calls.iter().filter(|c| !allowed.contains(*c)).collect();
    assert!(missing.is_empty(), "calls the template does not allow: {missing:?}");
    let unused: Vec<&String> = allowed
        .iter()
        .filter(|a| !calls.contains(*a) && !IMPLIED.iter().any(|(p, by)| p == a && calls.contains(*by)))
        .collect();
    assert!(unused.is_empty(), "permissions no call needs: {unused:?}");
}

/// Without the opt-in, every call that could grant is pinned to AWSDenyAll by an
/// `iam:PolicyARN` condition or is one of the [`GATED`] residual powers (docs/response.md);
/// the AllowGrantingUndo opt-in holds exactly the undo calls that grant.
#[test]
fn every_granting_call_is_pinned_gated_or_behind_the_opt_in() {
    let template = template();
    let deny_all = "arn:${AWS::Partition}:iam::aws:policy/AWSDenyAll";
    let mut opted = BTreeSet::new();
    for statement in role_statements(&template).iter().filter(|s| s.allows()) {
        for action in statement.actions() {
            assert!(!action.starts_with("iam:Put"), "{action}: an inline policy can say anything");
            if statement.opt_in {
                opted.insert(action);
            } else if let Some((_, gate)) = GATED.iter().find(|(a, _)| *a == action) {
                let condition = statement.body.get("Condition").map(|c| format!("{c:?}")).unwrap_or_default();
                assert!(*gate == "code" || condition.contains(gate), "{action} is not conditioned on {gate}");
            } else if GRANTING.contains(&action.as_str()) {
                assert_eq!(
                    statement.pinned_policy().as_deref(),
                    Some(deny_all),
                    "{action} is not pinned to AWSDenyAll"
                );
            }
        }
    }
    assert_eq!(opted, OPT_IN_UNDO.iter().map(|a| (*a).to_owned()).collect(), "the opt-in statements");
    assert!(TEMPLATE.contains("GrantingUndo: !Equals [!Ref AllowGrantingUndo, \"true\"]"));
    let parameter = &template["Parameters"]["AllowGrantingUndo"];
    assert_eq!(parameter["Default"].as_str(), Some("false"), "{parameter:?}");
    assert_eq!(parameter["AllowedValues"], Value::Sequence(vec!["false".into(), "true".into()]));
    // The code refuses those undos up front unless the account records the opt-in.
    let sample = [
        super::Action::parse("revoke-ingress-rule", "sgr-0123456789abcdef0", Some("us-east-1")).unwrap(),
        super::Action::parse("deactivate-access-key", "alice:AKIAIOSFODNN7EXAMPLE", None).unwrap(),
        super::Action::parse("detach-role-policy", "r:arn:aws:iam::aws:policy/ReadOnlyAccess", None).unwrap(),
        super::Action::parse("disassociate-instance-profile", "i-0123456789abcdef0", Some("us-east-1")).unwrap(),
        super::Action::parse("quarantine", "user/alice", None).unwrap(),
        super::Action::parse("stop-instance", "i-0123456789abcdef0", Some("us-east-1")).unwrap(),
    ];
    let grants: Vec<&str> = sample.iter().filter(|a| a.undo_grants()).map(|a| a.kind()).collect();
    assert_eq!(
        grants,
        ["revoke-ingress-rule", "deactivate-access-key", "detach-role-policy", "disassociate-instance-profile"]
    );
    // StartInstances only on what a stop tagged, and CreateTags on instances only of that key.
    let starts = role_statements(&template)
        .into_iter()
        .filter(|s| s.allows() && s.actions().iter().any(|a| a == "ec2:StartInstances"))
        .count();
    assert_eq!(starts, 1);
    let instance_tags: Vec<String> = role_statements(&template)
        .iter()
        .filter(|s| s.allows() && s.actions().iter().any(|a| a == "ec2:CreateTags"))
        .map(|s| format!("{:?}", s.body.get("Condition")))
        .collect();
    assert!(instance_tags.iter().all(|c| c.contains("ec2:CreateAction") || c.contains(super::ec2::STOPPED_TAG)));
}

#[test]
fn the_template_denies_skywardens_own_roles_and_protected_resources() {
    for needle in [
        "role/${RoleName}\"",
        "role/*/${RoleName}\"",
        "role/${ReadOnlyRoleName}\"",
        "role/*/${ReadOnlyRoleName}\"",
        "- !Ref SkywardenPrincipalArn",
        "- Key: skywarden:protected",
        "aws:ResourceTag/skywarden:protected",
        "iam:ResourceTag/skywarden:protected",
        "sts:ExternalId: !Ref ExternalId",
    ] {
        assert!(TEMPLATE.contains(needle), "{needle}");
    }
    assert_eq!(TEMPLATE.matches("Effect: Deny").count(), 4);
    assert!(TEMPLATE.contains("iam:PolicyARN: !Sub \"arn:${AWS::Partition}:iam::aws:policy/AWSDenyAll\""));
    assert!(!TEMPLATE.contains("TerminateInstances") && !TEMPLATE.contains("StopLogging"));
}

#[test]
fn the_scanner_reads_calls_across_lines() {
    let source = "let a = ec2\n    .describe_instances()\n    .send();\nsession.ec2(region); \"ec2.amazonaws.com\"";
    assert_eq!(sdk_calls(source), BTreeSet::from(["ec2:DescribeInstances".to_owned()]));
}

/// Condition keys IAM documents, with the services whose actions may use them (`aws:` keys are
/// global). Moto enforces no IAM policy, so a misspelt key (which IAM would simply never match,
/// silently widening a Deny's gap or closing an Allow) can only be caught here.
const CONDITION_KEYS: &[(&str, &[&str])] = &[
    ("iam:PolicyARN", &["iam"]),
    ("iam:PassedToService", &["iam"]),
    ("iam:ResourceTag/", &["iam"]),
    ("ec2:ResourceTag/", &["ec2"]),
    ("ec2:CreateAction", &["ec2"]),
    ("aws:ResourceTag/", &["ec2", "iam", "cloudtrail"]),
    ("aws:RequestTag/", &["ec2", "iam", "cloudtrail"]),
    ("aws:TagKeys", &["ec2", "iam", "cloudtrail"]),
    ("sts:ExternalId", &["sts"]),
];

/// Condition operators IAM documents, as the template may use them.
const OPERATORS: &[&str] = &[
    "StringEquals",
    "StringNotEquals",
    "StringLike",
    "StringNotLike",
    "ArnEquals",
    "ArnNotEquals",
    "ArnLike",
    "ArnNotLike",
    "Null",
    "Bool",
    "ForAllValues:StringEquals",
    "ForAnyValue:StringEquals",
];

/// The tag keys Skywarden's conditions may name.
const TAG_KEYS: &[&str] = &[super::PROTECTED_TAG, super::ec2::STOPPED_TAG];

/// A condition's values as written (`!Sub` bodies as their text).
fn condition_values(value: &Value) -> Vec<String> {
    match value {
        Value::String(one) => vec![one.clone()],
        Value::Bool(one) => vec![one.to_string()],
        Value::Sequence(items) => items.iter().flat_map(condition_values).collect(),
        Value::Tagged(tagged) => condition_values(&tagged.value),
        _ => Vec::new(),
    }
}

/// Every (operator, key, values, services of the statement's actions) of the template: the
/// role's policies and its trust policy.
fn conditions(template: &Value) -> Vec<(String, String, Vec<String>, BTreeSet<String>)> {
    let role = &template["Resources"]["SkywardenResponderRole"]["Properties"];
    let all: Vec<Statement<'_>> = statements(&role["Policies"], false)
        .into_iter()
        .chain(statements(&role["AssumeRolePolicyDocument"], false))
        .collect();
    let mut found = Vec::new();
    for statement in all {
        let services: BTreeSet<String> =
            statement.actions().iter().filter_map(|a| a.split_once(':')).map(|(s, _)| s.to_owned()).collect();
        let Some(Value::Mapping(condition)) = statement.body.get("Condition") else { continue };
        for (operator, keys) in condition {
            let operator = operator.as_str().expect("an operator is a string").to_owned();
            let Value::Mapping(keys) = keys else { panic!("{operator}: keys are a mapping") };
            for (key, value) in keys {
                let key = key.as_str().expect("a condition key is a string").to_owned();
                found.push((operator.clone(), key, condition_values(value), services.clone()));
            }
        }
    }
    found
}

/// Whether a key and its values are IAM's as documented and spelled right: a key of the
/// statement's service (or a global `aws:` one) with a tag key Skywarden uses, and values of the
/// key's kind.
fn check_condition(operator: &str, key: &str, values: &[String], services: &BTreeSet<String>) -> Result<(), String> {
    if !OPERATORS.contains(&operator) {
        return Err(format!("`{operator}` is not an IAM condition operator"));
    }
    // Condition key names are case-insensitive in IAM (`iam:PolicyArn` is `iam:PolicyARN`).
    let lower = key.to_ascii_lowercase();
    let Some((documented, allowed)) = CONDITION_KEYS.iter().find(|(k, _)| {
        let k = k.to_ascii_lowercase();
        if k.ends_with('/') { lower.starts_with(&k) } else { lower == k }
    }) else {
        return Err(format!("`{key}` is not a documented IAM condition key"));
    };
    if let Some(tag) = documented.ends_with('/').then(|| &key[documented.len()..])
        && !TAG_KEYS.contains(&tag)
    {
        return Err(format!("`{key}`: `{tag}` is not a tag Skywarden uses ({TAG_KEYS:?})"));
    }
    if let Some(service) = services.iter().find(|s| !allowed.contains(&s.as_str())) {
        return Err(format!("`{key}` does not apply to {service} actions"));
    }
    if values.is_empty() {
        return Err(format!("`{key}` has no value"));
    }
    for value in values {
        let ok = match (operator, *documented) {
            ("Null", _) => value == "true" || value == "false",
            (_, "iam:PolicyARN") => value.starts_with("arn:${AWS::Partition}:iam::aws:policy/"),
            (_, "iam:PassedToService") => value.ends_with(".amazonaws.com") && !value.contains('*'),
            (_, "ec2:CreateAction") => SOURCES.iter().any(|s| sdk_calls(s).contains(&format!("ec2:{value}"))),
            (_, "aws:TagKeys") => TAG_KEYS.contains(&value.as_str()),
            (_, "sts:ExternalId") => value == "ExternalId",
            ("StringLike", _) => value == "*",
            _ => !value.is_empty(),
        };
        if !ok {
            return Err(format!("{operator} `{key}`: `{value}` is not a value of its kind"));
        }
    }
    Ok(())
}

#[test]
fn every_condition_key_and_value_is_iams_as_documented() {
    let template = template();
    let found = conditions(&template);
    for (operator, key, values, services) in &found {
        if let Err(problem) = check_condition(operator, key, values, services) {
            panic!("{problem}");
        }
    }
    let keys: BTreeSet<&str> = found.iter().map(|(_, k, _, _)| k.as_str()).collect();
    for expected in [
        "iam:PolicyARN",
        "iam:PassedToService",
        "aws:TagKeys",
        "ec2:CreateAction",
        "sts:ExternalId",
        "aws:ResourceTag/skywarden:protected",
        "iam:ResourceTag/skywarden:protected",
        "aws:ResourceTag/skywarden:stopped-by-response",
    ] {
        assert!(keys.contains(expected), "{expected} is not in the template's conditions: {keys:?}");
    }
    // The checker itself catches the misspellings IAM would silently never match (not a case).
    let iam: BTreeSet<String> = ["iam".to_owned()].into();
    let ec2: BTreeSet<String> = ["ec2".to_owned()].into();
    let arn = vec!["arn:${AWS::Partition}:iam::aws:policy/AWSDenyAll".to_owned()];
    assert!(check_condition("ArnEquals", "iam:PolicyARN", &arn, &iam).is_ok());
    assert!(check_condition("ArnEquals", "iam:PolicyArn", &arn, &iam).is_ok(), "key names are case-insensitive");
    assert!(check_condition("ArnEquals", "iam:PolicyArns", &arn, &iam).is_err());
    assert!(check_condition("ArnEqual", "iam:PolicyARN", &arn, &iam).is_err());
    assert!(check_condition("ArnEquals", "iam:PolicyARN", &arn, &ec2).is_err());
    let any = vec!["*".to_owned()];
    assert!(check_condition("StringLike", "aws:ResourceTag/skywarden:protect", &any, &ec2).is_err());
    assert!(check_condition("StringLike", "ec2:ResourceTags/skywarden:protected", &any, &ec2).is_err());
    assert!(check_condition("Null", "aws:TagKeys", &["False".to_owned()], &ec2).is_err());
    assert!(check_condition("StringEquals", "ec2:CreateAction", &["CreateSnapshots".to_owned()], &ec2).is_err());
}
