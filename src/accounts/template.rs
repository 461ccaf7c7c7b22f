//! The read-only role Skywarden assumes in each account, as a CloudFormation template
//! (`skywarden accounts template`), and the test that keeps it in step with the code's calls.

/// The read-only role, as a CloudFormation template.
pub const ROLE_TEMPLATE: &str = include_str!("../../deploy/skywarden-readonly-role.yaml");

#[cfg(test)]
mod tests {
    use super::*;

    /// Every AWS call the code makes (named in its `AwsError::from_sdk`) is allowed by the role,
    /// and the role allows nothing the code does not call.
    #[test]
    fn the_role_template_allows_exactly_the_calls_the_pollers_make() {
        let sources = [
            include_str!("../inventory/collect/mod.rs"),
            include_str!("../inventory/collect/cloudtrail.rs"),
            include_str!("../inventory/collect/credentials.rs"),
            include_str!("../inventory/collect/ec2.rs"),
            include_str!("../inventory/collect/iam.rs"),
            include_str!("../pollers/lookup_events.rs"),
            include_str!("../pollers/s3_objects.rs"),
            include_str!("../pollers/cloudwatch_logs.rs"),
        ];
        let mut called = std::collections::BTreeSet::new();
        for source in sources {
            for piece in source.split("from_sdk(\"").skip(1) {
                let action = piece.split('"').next().unwrap_or_default();
                called.insert(action.to_owned());
            }
        }
        assert!(called.len() >= 15, "{called:?}");
        let allowed: std::collections::BTreeSet<String> = ROLE_TEMPLATE
            .lines()
            .filter_map(|line| line.trim().strip_prefix("- "))
            .filter(|item| item.contains(':') && !item.contains(' ') && !item.starts_with("sts:"))
            .map(str::to_owned)
            .chain(ROLE_TEMPLATE.lines().filter_map(|l| l.trim().strip_prefix("Action: ")).map(str::to_owned))
            .filter(|action| action != "sts:AssumeRole")
            .collect();
        let missing: Vec<_> = called.difference(&allowed).collect();
        assert!(missing.is_empty(), "the role does not allow {missing:?}");
        let unused: Vec<_> = allowed.difference(&called).filter(|a| a.as_str() != "kms:Decrypt").collect();
        assert!(unused.is_empty(), "the role allows calls Skywarden never makes: {unused:?}");
        assert!(!ROLE_TEMPLATE.contains("*:*") && !ROLE_TEMPLATE.contains("Action: \"*\""));
    }
}
