# METADATA
# title: CloudTrail logs are encrypted with a KMS key
# description: >-
#   A trail without a KMS key (kms_key_id null) leaves its log files under the bucket's default
#   encryption only, so anyone who can read the bucket can read the logs.
# custom:
#   id: aws-cloudtrail-kms-encryption
#   severity: medium
#   resource_type: "cloudtrail:trail"
#   remediation: >-
#     Create a KMS key whose policy lets CloudTrail encrypt and the log readers decrypt, then
#     aws cloudtrail update-trail --name <trail> --kms-key-id <key arn>
#   frameworks:
#     cis-aws-3.0: ["3.5"]
#     cis-aws-1.5: ["3.7"]
#   mitre: []
package skywarden.posture.aws_cloudtrail_kms_encryption

import rego.v1

config := c if {
	c := input.resource.config
	is_object(c)
} else := {}

# Present and null: AWS returned no key (a missing member means not collected).
deny contains "log files are not encrypted with a KMS key" if {
	object.get(config, "kms_key_id", "not collected") == null
}
