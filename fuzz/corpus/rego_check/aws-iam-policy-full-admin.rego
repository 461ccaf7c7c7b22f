# METADATA
# title: No attached customer managed policy allows "*:*"
# description: >-
#   A customer managed policy whose default version allows every action on every resource, and
#   that is attached to at least one user, group or role. Unattached policies pass, as in the
#   CIS audit. AWS managed policies (AdministratorAccess) are not collected as iam:policy
#   resources and are not judged here. Conditions on the statement are not weighed.
# custom:
#   id: aws-iam-policy-full-admin
#   severity: high
#   resource_type: "iam:policy"
#   remediation: >-
#     Replace the policy with one that grants the actions and resources the principals need,
#     or detach it (aws iam list-entities-for-policy, then detach-user-policy,
#     detach-group-policy, detach-role-policy).
#   frameworks:
#     cis-aws-3.0: ["1.16"]
#     cis-aws-1.5: ["1.16"]
#   mitre: ["TA0004"]
package skywarden.posture.aws_iam_policy_full_admin

import rego.v1

config := c if {
	c := input.resource.config
	is_object(c)
} else := {}

# IAM accepts a single statement object or a list of them, and a string or a list for Action
# and Resource.
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

# The statement's Sid, or its position (from 1) when it has none.
label(statement, index) := sprintf("statement %s", [statement.Sid]) if {
	is_string(statement.Sid)
	statement.Sid != ""
} else := sprintf("statement #%d", [index + 1])

deny contains msg if {
	config.attachment_count > 0
	some index, statement in statements(config.document)
	allows_everything(statement)
	msg := sprintf("%s allows all actions on all resources", [label(statement, index)])
}
