# METADATA
# title: Password policy requires 14 characters or more
# description: >-
#   Account-level check over the iam:password-policy resource (GetAccountPasswordPolicy). An
#   account without a password policy fails; an account whose password policy was not collected
#   (no "iam:password-policy" member in input.account.resources) is not judged.
# custom:
#   id: aws-iam-password-policy-length
#   severity: medium
#   resource_type: "aws:account"
#   remediation: >-
#     Set a password policy with a minimum length of at least 14, e.g.
#     aws iam update-account-password-policy --minimum-password-length 14
#     --password-reuse-prevention 24 (update-account-password-policy replaces the whole policy,
#     so pass every setting you want to keep).
#   frameworks:
#     cis-aws-3.0: ["1.8"]
#     cis-aws-1.5: ["1.8"]
#   mitre: ["TA0006"]
#   depends_on: ["iam:password-policy"]
package skywarden.posture.aws_iam_password_policy_length

import rego.v1

minimum := 14

# Present (possibly empty) only when the account's password policy was collected.
policies := p if {
	p := input.account.resources["iam:password-policy"]
	is_array(p)
}

deny contains "no IAM password policy is set" if {
	count(policies) == 0
}

deny contains msg if {
	some policy in policies
	length := policy.config.minimum_password_length
	is_number(length)
	length < minimum
	msg := sprintf("password policy minimum length is %d, less than %d", [length, minimum])
}
