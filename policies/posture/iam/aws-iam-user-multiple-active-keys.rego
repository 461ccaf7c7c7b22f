# METADATA
# title: IAM users have at most one active access key
# description: >-
#   Two active keys are expected only for the short overlap of a rotation; kept longer, the
#   second key is an extra long-lived credential to lose.
# custom:
#   id: aws-iam-user-multiple-active-keys
#   severity: low
#   resource_type: "iam:user"
#   remediation: >-
#     Finish the rotation: move every client to one key, then deactivate and delete the other
#     (aws iam update-access-key --status Inactive, then aws iam delete-access-key).
#   frameworks:
#     cis-aws-3.0: ["1.13"]
#     cis-aws-1.5: ["1.13"]
#   mitre: ["TA0003"]
package skywarden.posture.aws_iam_user_multiple_active_keys

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

active := sort([id |
	some key in items(config.access_keys)
	key.status == "Active"
	id := key.access_key_id
	is_string(id)
])

deny contains msg if {
	count(active) > 1
	msg := sprintf("%d access keys are active: %s", [count(active), concat(", ", active)])
}
