# METADATA
# title: IAM users receive permissions only through groups
# description: >-
#   A managed policy attached to an IAM user, or an inline policy defined on it. Permissions
#   granted through groups are easier to review and to take away.
# custom:
#   id: aws-iam-user-direct-policies
#   severity: low
#   resource_type: "iam:user"
#   remediation: >-
#     Put the user in a group that carries the permissions, then detach the managed policy
#     (aws iam detach-user-policy) and delete the inline policy (aws iam delete-user-policy).
#   frameworks:
#     cis-aws-3.0: ["1.15"]
#     cis-aws-1.5: ["1.15"]
#   mitre: []
package skywarden.posture.aws_iam_user_direct_policies

import rego.v1

# The value if it is an array or an object, else []: regorus fails on `some x in null` where OPA
# would leave the expression undefined.
items(value) := value if {
	is_array(value)
} else := value if {
	is_object(value)
} else := []

config := c if {
	c := input.resource.config
	is_object(c)
} else := {}

deny contains msg if {
	some arn in items(config.attached_policies)
	msg := sprintf("managed policy %s is attached to the user", [arn])
}

deny contains msg if {
	some name, _ in items(config.inline_policies)
	msg := sprintf("inline policy %s is defined on the user", [name])
}
