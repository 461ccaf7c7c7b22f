# METADATA
# title: A support role exists
# description: >-
#   Account-level check: at least one IAM role has the AWS managed policy AWSSupportAccess
#   attached, so incidents can be raised with AWS Support without the root user. Not judged
#   when the account's roles were not collected.
# custom:
#   id: aws-iam-support-role
#   severity: low
#   resource_type: "aws:account"
#   remediation: >-
#     Create a role that the incident responders can assume and attach AWSSupportAccess, e.g.
#     aws iam create-role --role-name aws-support --assume-role-policy-document file://trust.json
#     then aws iam attach-role-policy --role-name aws-support
#     --policy-arn arn:aws:iam::aws:policy/AWSSupportAccess
#   frameworks:
#     cis-aws-3.0: ["1.17"]
#     cis-aws-1.5: ["1.17"]
#   mitre: []
#   depends_on: ["iam:role"]
package skywarden.posture.aws_iam_support_role

import rego.v1

# The value if it is an array or an object, else []: regorus fails on `some x in null` where OPA
# would leave the expression undefined.
items(value) := value if {
	is_array(value)
} else := value if {
	is_object(value)
} else := []

roles := r if {
	r := input.account.resources["iam:role"]
	is_array(r)
}

# Any partition: arn:aws:…, arn:aws-cn:…, arn:aws-us-gov:….
support_policy(arn) if {
	is_string(arn)
	startswith(arn, "arn:")
	endswith(arn, ":iam::aws:policy/AWSSupportAccess")
}

has_support_role if {
	some role in roles
	some arn in items(role.config.attached_policies)
	support_policy(arn)
}

deny contains "no IAM role has the AWSSupportAccess policy attached" if {
	is_array(roles)
	not has_support_role
}
