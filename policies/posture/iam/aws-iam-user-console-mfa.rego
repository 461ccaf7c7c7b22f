# METADATA
# title: IAM users with a console password have MFA
# description: >-
#   A user who can sign in to the console with a password alone. password_enabled comes from the
#   credential report (or GetLoginProfile for a user newer than the report); mfa_active from the
#   user's MFA devices listed at collection time.
# custom:
#   id: aws-iam-user-console-mfa
#   severity: high
#   resource_type: "iam:user"
#   remediation: >-
#     Have the user assign an MFA device (IAM console, Security credentials, Assign MFA device),
#     and attach a policy that denies everything but MFA self-service while
#     aws:MultiFactorAuthPresent is false; or remove the console password if it is not needed.
#   frameworks:
#     cis-aws-3.0: ["1.10"]
#     cis-aws-1.5: ["1.10"]
#   mitre: ["TA0001", "TA0006"]
package skywarden.posture.aws_iam_user_console_mfa

import rego.v1

config := c if {
	c := input.resource.config
	is_object(c)
} else := {}

deny contains "console password enabled without an MFA device" if {
	config.password_enabled == true
	config.mfa_active == false
}
