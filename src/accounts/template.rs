//! The read-only role Skywarden assumes in each account, as a CloudFormation template
//! (`skywarden accounts template`), and the tests that keep it in step with the code's calls.
//! docs/role.md explains each statement and parameter.

/// The read-only role, as a CloudFormation template.
pub const ROLE_TEMPLATE: &str = include_str!("../../deploy/skywarden-readonly-role.yaml");

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;
    use std::path::{Path, PathBuf};

    use yaml_serde::{Mapping, Value};

    use super::*;

    /// Calls the code makes that the role's permissions need not grant, and why.
    const CALLED_NOT_GRANTED: &[(&str, &str)] = &[
        ("sts:AssumeRole", "made with Skywarden's own credentials; the role's trust policy is what allows it"),
        ("sts:GetCallerIdentity", "needs no permission"),
    ];

    /// Actions the role grants that no `from_sdk` call names, and why.
    const GRANTED_NOT_CALLED: &[(&str, &str)] =
        &[("kms:Decrypt", "S3, CloudWatch Logs and SQS call it on Skywarden's behalf to read encrypted logs")];

    fn rust_files(dir: &Path, files: &mut Vec<PathBuf>) {
        for entry in std::fs::read_dir(dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
            let path = entry.expect("directory entry").path();
            if path.is_dir() {
                rust_files(&path, files);
            } else if path.extension().is_some_and(|e| e == "rs") {
                files.push(path);
            }
        }
    }

    /// Every `service:Action` named as the first argument of an `AwsError::from_sdk` call
    /// anywhere under src/, read at test time so a call added in any file is caught.
    fn called_actions() -> BTreeSet<String> {
        let mut files = Vec::new();
        rust_files(&Path::new(env!("CARGO_MANIFEST_DIR")).join("src"), &mut files);
        let mut called = BTreeSet::new();
        // The responder's writes are the responder role's (its own template and test), never the
        // read-only role's.
        let responder = Path::new(env!("CARGO_MANIFEST_DIR")).join("src/respond");
        for file in files.into_iter().filter(|f| !f.starts_with(&responder)) {
            let source = std::fs::read_to_string(&file).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
            for piece in source.split("from_sdk(\"").skip(1) {
                let action = piece.split('"').next().unwrap_or_default();
                assert!(is_action(action), "{}: `{action}` is not service:Action", file.display());
                called.insert(action.to_owned());
            }
        }
        called
    }

    /// `service:Action`, with no wildcard.
    fn is_action(text: &str) -> bool {
        text.split_once(':').is_some_and(|(service, action)| {
            !service.is_empty()
                && service.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
                && action.starts_with(|c: char| c.is_ascii_uppercase())
                && action.bytes().all(|b| b.is_ascii_alphanumeric())
        })
    }

    fn template() -> Value {
        yaml_serde::from_str(ROLE_TEMPLATE).expect("the role template is YAML")
    }

    fn role_property<'a>(template: &'a Value, name: &str) -> &'a Value {
        &template["Resources"]["SkywardenReadOnlyRole"]["Properties"][name]
    }

    /// The policy statements (mappings with an `Effect`) under `value`, inside `!If`s too.
    fn statements(value: &Value) -> Vec<&Mapping> {
        match value {
            Value::Mapping(mapping) if mapping.contains_key("Effect") => vec![mapping],
            Value::Mapping(mapping) => mapping.values().flat_map(statements).collect(),
            Value::Sequence(items) => items.iter().flat_map(statements).collect(),
            Value::Tagged(tagged) => statements(&tagged.value),
            _ => Vec::new(),
        }
    }

    /// Every string scalar under `value`, inside intrinsic functions too.
    fn strings(value: &Value) -> Vec<&str> {
        match value {
            Value::String(text) => vec![text.as_str()],
            Value::Mapping(mapping) => mapping.values().flat_map(strings).collect(),
            Value::Sequence(items) => items.iter().flat_map(strings).collect(),
            Value::Tagged(tagged) => strings(&tagged.value),
            _ => Vec::new(),
        }
    }

    fn actions(statement: &Mapping) -> Vec<&str> {
        statement.get("Action").map(strings).unwrap_or_default()
    }

    fn granted_actions() -> BTreeSet<String> {
        let template = template();
        let granted: BTreeSet<String> = statements(role_property(&template, "Policies"))
            .into_iter()
            .flat_map(actions)
            .inspect(|action| assert!(is_action(action), "`{action}` is not service:Action"))
            .map(str::to_owned)
            .collect();
        granted
    }

    /// The calls made with the organization role (deploy/skywarden-readonly-stackset.yaml), not
    /// with the member role.
    fn is_organization_call(action: &str) -> bool {
        action.starts_with("organizations:")
    }

    const STACKSET_TEMPLATE: &str = include_str!("../../deploy/skywarden-readonly-stackset.yaml");

    /// Every AWS call the code makes (named in its `AwsError::from_sdk`) is allowed by the role,
    /// and the role allows nothing the code does not call, but for the listed exceptions.
    #[test]
    fn the_role_template_allows_exactly_the_calls_the_code_makes() {
        let called: BTreeSet<String> = called_actions().into_iter().filter(|a| !is_organization_call(a)).collect();
        assert!(called.len() >= 15, "{called:?}");
        let granted = granted_actions();
        let missing: Vec<_> = called
            .difference(&granted)
            .filter(|action| !CALLED_NOT_GRANTED.iter().any(|(name, _)| name == action))
            .collect();
        assert!(missing.is_empty(), "the role does not allow {missing:?}");
        let unused: Vec<_> = granted
            .difference(&called)
            .filter(|action| !GRANTED_NOT_CALLED.iter().any(|(name, _)| name == action))
            .collect();
        assert!(unused.is_empty(), "the role allows calls Skywarden never makes: {unused:?}");
        for (action, _) in GRANTED_NOT_CALLED {
            assert!(granted.contains(*action), "stale exception: the role no longer grants {action}");
        }
    }

    /// The organization role allows exactly the Organizations calls the code makes, trusts only
    /// the named principal with the external ID, and the StackSet deploys the one role template
    /// with parameters it has.
    #[test]
    fn the_organization_role_allows_exactly_the_organization_calls() {
        let stackset: Value = yaml_serde::from_str(STACKSET_TEMPLATE).expect("the StackSet template is YAML");
        let role = &stackset["Resources"]["SkywardenOrganizationRole"]["Properties"];
        let granted: BTreeSet<String> = statements(&role["Policies"])
            .into_iter()
            .flat_map(actions)
            .inspect(|action| assert!(is_action(action), "`{action}` is not service:Action"))
            .map(str::to_owned)
            .collect();
        let called: BTreeSet<String> = called_actions().into_iter().filter(|a| is_organization_call(a)).collect();
        assert!(called.contains("organizations:ListAccounts"), "{called:?}");
        assert_eq!(granted, called, "the organization role grants exactly what the code calls");
        let trust = statements(&role["AssumeRolePolicyDocument"]);
        assert_eq!(trust.len(), 1);
        assert_eq!(strings(&trust[0]["Principal"]["AWS"]), ["SkywardenPrincipalArn"]);
        assert_eq!(strings(&trust[0]["Condition"]["StringEquals"]["sts:ExternalId"]), ["ExternalId"]);
        let role_parameters = &template()["Parameters"];
        let stackset = &stackset["Resources"]["SkywardenMemberRoles"]["Properties"];
        assert_eq!(stackset["PermissionModel"], "SERVICE_MANAGED");
        assert_eq!(strings(&stackset["TemplateURL"]), ["MemberRoleTemplateURL"], "the role template, not a copy");
        let Value::Sequence(passed) = &stackset["Parameters"] else { panic!("no StackSet parameters") };
        for parameter in passed {
            let key = parameter["ParameterKey"].as_str().expect("a parameter key");
            assert!(!role_parameters[key].is_null(), "the role template has no parameter {key}");
        }
    }

    /// Log groups, objects and keys are reachable only as far as the parameters name them.
    #[test]
    fn the_role_scopes_log_groups_objects_and_keys_to_what_is_named() {
        let template = template();
        let all = statements(role_property(&template, "Policies"));
        let with = |action: &str| -> Vec<&Mapping> {
            let found: Vec<_> = all.iter().copied().filter(|s| actions(s).contains(&action)).collect();
            assert!(!found.is_empty(), "no statement grants {action}");
            found
        };
        for statement in with("logs:FilterLogEvents") {
            let resources = strings(&statement["Resource"]);
            assert!(resources.iter().any(|r| r.contains(":log-group:")), "{resources:?}");
            assert!(!resources.iter().any(|r| *r == "*" || r.contains("log-group:*")), "{resources:?}");
        }
        for statement in with("s3:GetObject") {
            let arns: Vec<_> = strings(&statement["Resource"]).into_iter().filter(|r| r.contains(":s3:::")).collect();
            assert!(!arns.is_empty() && arns.iter().all(|r| r.ends_with("/AWSLogs/*")), "{arns:?}");
        }
        for statement in with("s3:ListBucket") {
            let prefixes = strings(&statement["Condition"]["StringLike"]["s3:prefix"]);
            assert!(prefixes.iter().any(|p| p.ends_with("AWSLogs/*")), "{prefixes:?}");
        }
        let mut services = BTreeSet::new();
        for statement in with("kms:Decrypt") {
            assert_eq!(strings(&statement["Resource"]), ["LogKmsKeyArns"], "only the keys named");
            let via = strings(&statement["Condition"]["StringLike"]["kms:ViaService"]);
            assert!(!via.is_empty(), "kms:Decrypt without kms:ViaService");
            services.extend(via.iter().filter_map(|v| v.split_once('.')).map(|(service, _)| service.to_owned()));
        }
        assert_eq!(services, BTreeSet::from(["logs".to_owned(), "s3".to_owned(), "sqs".to_owned()]));
        for statement in &all {
            let star = strings(&statement["Resource"]) == ["*"];
            let scoped = actions(statement)
                .iter()
                .any(|a| ["s3:", "logs:", "kms:", "sqs:"].iter().any(|service| a.starts_with(service)));
            assert!(!(star && scoped), "{:?} on every resource", actions(statement));
        }
    }

    /// The role trusts only the principal the customer names, with the external ID.
    #[test]
    fn the_role_trusts_an_explicit_iam_principal_with_the_external_id() {
        let template = template();
        let pattern = template["Parameters"]["SkywardenPrincipalArn"]["AllowedPattern"].as_str().expect("a pattern");
        assert!(pattern.starts_with("^arn:aws") && pattern.ends_with('$'), "{pattern}");
        assert!(pattern.contains(":iam::[0-9]{12}:") && !pattern.contains("sts"), "{pattern}");
        assert!(["(root|", "role", "user"].iter().all(|kind| pattern.contains(kind)), "{pattern}");
        let trust = statements(role_property(&template, "AssumeRolePolicyDocument"));
        assert_eq!(trust.len(), 1);
        assert_eq!(strings(&trust[0]["Principal"]["AWS"]), ["SkywardenPrincipalArn"]);
        assert_eq!(strings(&trust[0]["Condition"]["StringEquals"]["sts:ExternalId"]), ["ExternalId"]);
    }

    /// SecurityAudit is attached only when `AttachSecurityAudit` is true.
    #[test]
    fn security_audit_is_attached_only_on_request() {
        let template = template();
        let parameter = &template["Parameters"]["AttachSecurityAudit"];
        assert_eq!(parameter["Default"], "false");
        assert_eq!(strings(&parameter["AllowedValues"]), ["true", "false"]);
        let Value::Tagged(managed) = role_property(&template, "ManagedPolicyArns") else { panic!("not an !If") };
        assert!(managed.tag == "If", "{:?}", managed.tag);
        assert_eq!(managed.value[0], "AttachSecurityAuditPolicy");
        assert_eq!(strings(&managed.value[1]), ["arn:${AWS::Partition}:iam::aws:policy/SecurityAudit"]);
        assert_eq!(strings(&template["Conditions"]["AttachSecurityAuditPolicy"]), ["AttachSecurityAudit", "true"]);
    }

    /// `skywarden accounts template` and `GET /api/v1/accounts/template` give the file as it is.
    #[test]
    fn the_cli_and_the_api_print_the_file_unchanged() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR"));
        let file = std::fs::read_to_string(root.join("deploy/skywarden-readonly-role.yaml")).expect("template file");
        assert_eq!(ROLE_TEMPLATE, file);
        let cli = std::fs::read_to_string(root.join("src/bin/skywarden/commands/accounts.rs")).expect("CLI source");
        assert!(
            cli.contains("print!(\"{}\", accounts::ROLE_TEMPLATE)"),
            "the CLI no longer prints the template verbatim"
        );
        let api = std::fs::read_to_string(root.join("src/http/accounts.rs")).expect("API source");
        assert!(api.contains("accounts::ROLE_TEMPLATE)"), "the API no longer serves the template verbatim");
    }
}
