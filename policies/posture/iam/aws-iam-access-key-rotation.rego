# METADATA
# title: Access keys are rotated every 90 days or less
# description: >-
#   An active access key of an IAM user created more than 90 days ago. A key's create_date is
#   the date it was issued; rotating means issuing a new key and deleting the old one.
# custom:
#   id: aws-iam-access-key-rotation
#   severity: medium
#   resource_type: "iam:user"
#   remediation: >-
#     Create a second key (aws iam create-access-key), move every client to it, then deactivate
#     and delete the old key; better, replace the user's keys with a role and temporary
#     credentials.
#   frameworks:
#     cis-aws-3.0: ["1.14"]
#     cis-aws-1.5: ["1.14"]
#   mitre: ["TA0001", "TA0006"]
package skywarden.posture.aws_iam_access_key_rotation

import rego.v1

# The value if it is an array or an object, else []: regorus fails on `some x in null` where OPA
# would leave the expression undefined.
items(value) := value if {
	is_array(value)
} else := value if {
	is_object(value)
} else := []

max_days := 90

config := c if {
	c := input.resource.config
	is_object(c)
} else := {}

days_since(timestamp) := days if {
	is_string(timestamp)
	is_string(input.now)
	days := (time.parse_rfc3339_ns(input.now) - time.parse_rfc3339_ns(timestamp)) / 86400000000000
}

deny contains msg if {
	some key in items(config.access_keys)
	key.status == "Active"
	days_since(key.create_date) > max_days
	msg := sprintf("access key %s is active and was created on %s, more than %d days ago", [key.access_key_id, key.create_date, max_days])
}
