# METADATA
# title: CloudTrail delivers to CloudWatch Logs
# description: >-
#   A trail that sends no events to a CloudWatch Logs group, or whose last delivery there is more
#   than a day old. CIS v1.5 3.4; CIS v3.0.0 dropped it as a control, but its monitoring section
#   (4.1-4.15, metric filters and alarms) needs this delivery to exist.
# custom:
#   id: aws-cloudtrail-cloudwatch-logs
#   severity: low
#   resource_type: "cloudtrail:trail"
#   remediation: >-
#     aws cloudtrail update-trail --name <trail> --cloud-watch-logs-log-group-arn <group arn>
#     --cloud-watch-logs-role-arn <role arn>, with a role CloudTrail can assume to write to the
#     group.
#   frameworks:
#     cis-aws-3.0: []
#     cis-aws-1.5: ["3.4"]
#   mitre: ["TA0005"]
package skywarden.posture.aws_cloudtrail_cloudwatch_logs

import rego.v1

config := c if {
	c := input.resource.config
	is_object(c)
} else := {}

observed := o if {
	o := config.observed
	is_object(o)
} else := {}

deny contains "trail does not deliver to CloudWatch Logs" if {
	object.get(config, "cloud_watch_logs_log_group_arn", "not collected") == null
}

deny contains msg if {
	is_string(config.cloud_watch_logs_log_group_arn)
	delivered := observed.latest_cloud_watch_logs_delivery_time
	is_string(delivered)
	is_string(input.now)
	time.parse_rfc3339_ns(input.now) - time.parse_rfc3339_ns(delivered) > 86400000000000
	msg := sprintf("last delivery to CloudWatch Logs was on %s, more than a day ago", [delivered])
}
