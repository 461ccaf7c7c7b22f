# METADATA
# title: AWSCloudShellFullAccess is not attached
# description: >-
#   Account-level check: users, groups and roles with the AWS managed policy
#   AWSCloudShellFullAccess, which lets them upload and download files through CloudShell, a
#   path around data-egress controls. CIS marks 1.22 manual; the attachment itself is automated
#   here, the judgement of who may keep it is not.
# custom:
#   id: aws-iam-cloudshell-full-access
#   severity: medium
#   resource_type: "aws:account"
#   remediation: >-
#     Detach AWSCloudShellFullAccess (aws iam detach-user-policy, detach-group-policy,
#     detach-role-policy) and grant a policy that denies cloudshell:GetFileUploadUrls and
#     cloudshell:GetFileDownloadUrls where CloudShell is still needed.
#   frameworks:
#     cis-aws-3.0: ["1.22"]
#   mitre: ["TA0002", "TA0010"]
#   depends_on: ["iam:user", "iam:group", "iam:role"]
package skywarden.posture.aws_iam_cloudshell_full_access

import rego.v1

# The value if it is an array or an object, else []: regorus fails on `some x in null` where OPA
# would leave the expression undefined.
items(value) := value if {
	is_array(value)
} else := value if {
	is_object(value)
} else := []

kinds := {"iam:user": "user", "iam:group": "group", "iam:role": "role"}

cloudshell_policy(arn) if {
	is_string(arn)
	startswith(arn, "arn:")
	endswith(arn, ":iam::aws:policy/AWSCloudShellFullAccess")
}

deny contains msg if {
	some type, kind in kinds
	some entity in items(input.account.resources[type])
	some arn in items(entity.config.attached_policies)
	cloudshell_policy(arn)
	msg := sprintf("%s %s has AWSCloudShellFullAccess attached", [kind, entity.id])
}
