# METADATA
# title: No IAM role has an inline policy allowing "*:*"
# description: >-
#   An inline policy of an IAM role that allows every action on every resource. CIS 1.16 audits
#   customer managed policies only; an inline policy grants the same power without showing up
#   in that audit, so it is judged here under the same control.
# custom:
#   id: aws-iam-role-inline-full-admin
#   severity: high
#   resource_type: "iam:role"
#   remediation: >-
#     Replace the inline policy with one scoped to the actions and resources the role needs
#     (aws iam put-role-policy), or delete it (aws iam delete-role-policy).
#   frameworks:
#     cis-aws-3.0: ["1.16"]
#     cis-aws-1.5: ["1.16"]
#   mitre: ["TA0004"]
package skywarden.posture.aws_iam_role_inline_full_admin

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

statements(document) := [document.Statement] if is_object(document.Statement)

statements(document) := document.Statement if is_array(document.Statement)

as_list(value) := [value] if is_string(value)

as_list(value) := value if is_array(value)

allows_everything(statement) if {
	statement.Effect == "Allow"
	some action in as_list(statement.Action)
	action in {"*", "*:*"}
	some resource in as_list(statement.Resource)
	resource == "*"
}

deny contains msg if {
	some name, document in items(config.inline_policies)
	some statement in statements(document)
	allows_everything(statement)
	msg := sprintf("inline policy %s allows all actions on all resources", [name])
}
