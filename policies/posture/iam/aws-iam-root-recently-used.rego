# METADATA
# title: Root user not used for daily tasks
# description: >-
#   Flags a root password sign-in or root access key use within the last 30 days, from the
#   credential report's <root_account> row. CIS 1.7 is a manual control; this automates its
#   evidence, not the judgement whether the use was one of the tasks only root can do.
# custom:
#   id: aws-iam-root-recently-used
#   severity: medium
#   resource_type: "iam:root-account"
#   remediation: >-
#     Find out who used the root user and why (CloudTrail events with userIdentity.type Root);
#     give that person an IAM Identity Center or IAM identity for daily work and keep root for
#     the tasks that require it.
#   frameworks:
#     cis-aws-3.0: ["1.7"]
#     cis-aws-1.5: ["1.7"]
#   mitre: ["TA0001", "TA0004"]
package skywarden.posture.aws_iam_root_recently_used

import rego.v1

window_days := 30

config := c if {
	c := input.resource.config
	is_object(c)
} else := {}

observed := o if {
	o := config.observed
	is_object(o)
} else := {}

days_since(timestamp) := days if {
	is_string(timestamp)
	is_string(input.now)
	days := (time.parse_rfc3339_ns(input.now) - time.parse_rfc3339_ns(timestamp)) / 86400000000000
}

# Messages name the date rather than an age, so they do not change from one run to the next.
deny contains msg if {
	used := observed.password_last_used
	days_since(used) < window_days
	msg := sprintf("root password used on %s, within the last %d days", [used, window_days])
}

deny contains msg if {
	some slot in [1, 2]
	used := observed[sprintf("access_key_%d_last_used_date", [slot])]
	days_since(used) < window_days
	msg := sprintf("root access key %d used on %s, within the last %d days", [slot, used, window_days])
}
