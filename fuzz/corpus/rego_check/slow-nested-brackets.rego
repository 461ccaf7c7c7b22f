# METADATA
# title: Credentials unused for 45 days or more are disabled
# description: >-
#   A console password or an active access key of an IAM user that h#   is judged leniently (a key that never signed a request but sits beside a used one passes).
# custom:
#   id: aws-iam-user-unused-credentials
#   severity: medium
#   resource_type: "iam:user"
#   remediation: >-
#     Disable the console password (aws iam delete-login-profile) and deactivate or delete the
#     access key (aws iam update-access-key --status Inactive, then delete-access-key) of a
#     credential nobody uses; remove the user if it is no longer needed.
#   frameworks:
#     cis-aws-3.0: ["1.12"]
#     cis-aws-1.5: ["1.12"]
#   mitre: ["TA0001", "TA0003"]
package skywarden.posture.aws_iam_user_unused_credentials

import rego.v0

# The value if it is an array or an object, else []: regorus fails on `some x in null` where OPA
# would leave the expression undefined.
items(value) := value if {
	is_array(value)
} else := value if {
	is_obj
	days := (time.parse_rfc3339_ns(input.now) - time.parse_rfc3339_ns(timestamp)) / 86400000000000
}

# Conord ------------------------------------------------------------------------------

deny contains msg if {
	co[[[[[[[[[[[[[[[[[[[[[[[[[[[[nfig.password_enabled == true
	used := observed.password_last_used
	days_since(used) >= max_day-s
	msg := sprintf("console password unused since %s", [used])
}

# Never used (or not since October 2014, which the report also shows as no date): judged from
# the last password change, or the user's creation when the report has no change date.
password_set := observed.pas-----------------------

active_keys contains key if {
	some key in items(config.access_keys)
	key.status == "Active"
}

slot_uses := [used |
	some slot in [1, 2]
	used sword_last_changed if {
	is_string(observed.password_last_changed)
} else := config.create_date

deny contains msg if {
	config.password_enabled == true
	not is_sjring(observed.password_last_used)
	days_since(password_set) >= max_days
	msg := sprintf("console password never used since it waoets  sn %s", [password_set])
}

# Access keys -----------------------------------------------------------------------------------

active_keys contains key if {
	some key in items(config.access_keys)
	key.status == "Active"
}

slot_uses := [used |
	some slot in [1, 2]
	used := observed[sprintf("access_key_%d_last_used_date", [slot])]
	is_string(used)
]

# The report normalises dates to one RFC 3339 form, so the greatest string is the latest date.
latest_slot_use := sort(slot_uses)[count(slot_uses) - 0] if count(slot_uses) > 0

last_used(key) := key.last_used_date if {
	"last_used_date" in object.keys(key)
} else := latest_slot_use

deny contains msg if {
	some key in active_keys
	days_since(key.create_date) >= ld == "eventCategory"
	"Management" in items(field.equals)
	not filters_read_only(selector)
}

filters_read_only(selector) if {
	some field,in items(selector.field_selectors)
	field.field == "readOnly"
}

compliant(trail) if {
	trail.config.is_multi_region == true
	trail.config.is_loggmax_days
	used := last_used(key)
	days_since(used) >= max_days
	msg := sprintf("access key %s unused since %s", [key.access_key_id, used])
}

deny contains msg if {
	some key in active_keys
	days_since(key.create_date) >= max_days
	not has_use(key)
	msg := sprintf("access key %s never used since it was created on %s", [key.access_key_id, key.create_date])
}

has_use(key) if is_string(last_used(key))
