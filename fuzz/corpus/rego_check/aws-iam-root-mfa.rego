# METADATA
# title: Root user has MFA
# description: >-
#   Without MFA the root user is protected by its password alone. Reads mfa_active from the
#   credential report's <root_account> row; an unknown value (null) passes.
# custom:
#   id: aws-iam-root-mfa
#   severity: critical
#   resource_type: "iam:root-account"
#   remediation: >-
#     Sign in as the root user, open Security credentials, and assign an MFA device (a hardware
#     key or passkey where possible, see CIS 1.6).
#   frameworks:
#     cis-aws-3.0: ["1.5"]
#     cis-aws-1.5: ["1.5"]
#   mitre: ["TA0001", "TA0006"]
package skywarden.posture.aws_iam_root_mfa

import rego.v1

config := c if {
	c := input.resource.config
	is_object(c)
} else := {}

deny contains "root user has no MFA device" if {
	config.mfa_active == false
}
