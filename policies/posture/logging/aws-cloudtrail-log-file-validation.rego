# METADATA
# title: CloudTrail log file validation is enabled
# description: >-
#   Without digest files, a log file changed or deleted after delivery cannot be told from an
#   untouched one.
# custom:
#   id: aws-cloudtrail-log-file-validation
#   severity: medium
#   resource_type: "cloudtrail:trail"
#   remediation: >-
#     aws cloudtrail update-trail --name <trail> --enable-log-file-validation
#   frameworks:
#     cis-aws-3.0: ["3.2"]
#     cis-aws-1.5: ["3.2"]
#   mitre: ["TA0005"]
package skywarden.posture.aws_cloudtrail_log_file_validation

import rego.v1

config := c if {
	c := input.resource.config
	is_object(c)
} else := {}

deny contains "log file validation is disabled" if {
	config.log_file_validation == false
}
