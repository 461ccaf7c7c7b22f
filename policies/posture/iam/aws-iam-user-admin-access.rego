# METADATA
# title: No IAM user holds administrator access directly
# description: >-
#   An IAM user with the AWS managed AdministratorAccess policy attached, or an inline policy
#   that allows every action on every resource. Such a user is a full takeover of the account
#   the moment its password or keys leak, and attackers create one to stay (a "backup" admin).
#   aws-iam-user-direct-policies flags any direct attachment at low severity; this check rates
#   the administrator case on its own.
# custom:
#   id: aws-iam-user-admin-access
#   severity: high
#   resource_type: "iam:user"
#   remediation: >-
#     Confirm who created the user and why (the finding names the change and its CloudTrail
#     event). If it is not known, disable its console password and access keys at once. Grant
#     administration through a group or a role assumed with MFA, then detach the policy (aws iam
#     detach-user-policy --policy-arn arn:aws:iam::aws:policy/AdministratorAccess) and delete
#     inline policies allowing "*:*" (aws iam delete-user-policy).
#   frameworks:
#     cis-aws-3.0: ["1.15"]
#     cis-aws-1.5: ["1.15"]
#   mitre: ["TA0003", "TA0004"]
package skywarden.posture.aws_iam_user_admin_access

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

admin_policies := {
	"arn:aws:iam::aws:policy/AdministratorAccess",
	"arn:aws-us-gov:iam::aws:policy/AdministratorAccess",
	"arn:aws-cn:iam::aws:policy/AdministratorAccess",
}

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
	some arn in items(config.attached_policies)
	arn in admin_policies
	msg := sprintf("%s is attached to the user", [arn])
}

deny contains msg if {
	some name, document in items(config.inline_policies)
	is_object(document)
	some statement in statements(document)
	allows_everything(statement)
	msg := sprintf("inline policy %s allows all actions on all resources", [name])
}
