# METADATA
# title: Root user has no access keys
# description: >-
#   The root user cannot be restricted by IAM policies, so an access key of the root user is a
#   long-lived credential with unlimited power over the account. Reads the credential report's
#   <root_account> row.
# custom:
#   id: aws-iam-root-access-keys
#   severity: critical
#   resource_type: "iam:root-account"
#   remediation: >-
#     Sign in as the root user, open Security credentials, and delete (not only deactivate) both
#     access keys; give automation an IAM role instead.
#   frameworks:
#     cis-aws-3.0: ["1.4"]
#     cis-aws-1.5: ["1.4"]
#   mitre: ["TA0001", "TA0003", "TA0004"]
package skywarden.posture.aws_iam_root_access_keys

import rego.v1

config := c if {
	c := input.resource.config
	is_object(c)
} else := {}

# The report names the two key slots access_key_1 and access_key_2.
deny contains msg if {
	some slot in [1, 2]
	config[sprintf("access_key_%d_active", [slot])] == true
	msg := sprintf("root user access key %d is active", [slot])
}
