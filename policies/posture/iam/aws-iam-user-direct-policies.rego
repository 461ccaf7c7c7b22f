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

config := c if {
	c := input.resource.config
	is_object(c)
} else := {}

deny contains sprintf("managed policy %s is attached to the user", [arn]) if {
	some arn in config.attached_policies
}

deny contains sprintf("inline policy %s is defined on the user", [name]) if {
	some name, _ in config.inline_policies
}
