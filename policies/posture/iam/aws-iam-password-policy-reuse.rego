# METADATA
# title: Password policy prevents password reuse
# description: >-
#   Account-level check over the iam:password-policy resource (GetAccountPasswordPolicy): the
#   policy must remember the last 24 passwords. password_reuse_prevention null means AWS left
#   the setting out, i.e. reuse is allowed. An account without a password policy fails; one
#   whose policy was not collected is not judged.
# custom:
#   id: aws-iam-password-policy-reuse
#   severity: low
#   resource_type: "aws:account"
#   remediation: >-
#     Set the password policy's reuse prevention to 24, e.g.
#     aws iam update-account-password-policy --password-reuse-prevention 24
#     --minimum-password-length 14 (the call replaces the whole policy).
#   frameworks:
#     cis-aws-3.0: ["1.9"]
#     cis-aws-1.5: ["1.9"]
#   mitre: ["TA0006"]
#   depends_on: ["iam:password-policy"]
package skywarden.posture.aws_iam_password_policy_reuse

import rego.v1

remembered := 24

policies := p if {
	p := input.account.resources["iam:password-policy"]
	is_array(p)
}

deny contains "no IAM password policy is set" if {
	count(policies) == 0
}

# The member is present and null: the policy does not set reuse prevention.
deny contains "password policy does not prevent password reuse" if {
	some policy in policies
	is_object(policy.config)
	object.get(policy.config, "password_reuse_prevention", "not collected") == null
}

deny contains msg if {
	some policy in policies
	n := policy.config.password_reuse_prevention
	is_number(n)
	n < remembered
	msg := sprintf("password policy remembers %d previous passwords, fewer than %d", [n, remembered])
}
