# METADATA
# title: EC2 instances require IMDSv2
# description: >-
#   An instance whose metadata service answers IMDSv1 requests (http_tokens optional), which a
#   server-side request forgery can use to read the role's credentials. Instances with the
#   endpoint disabled, or whose metadata options were not returned, pass.
# custom:
#   id: aws-ec2-imdsv2
#   severity: medium
#   resource_type: "ec2:instance"
#   remediation: >-
#     aws ec2 modify-instance-metadata-options --instance-id <id> --http-tokens required
#     --http-endpoint enabled (check first that the software on the instance uses IMDSv2:
#     the MetadataNoToken CloudWatch metric counts IMDSv1 calls).
#   frameworks:
#     cis-aws-3.0: ["5.6"]
#   mitre: ["TA0006"]
package skywarden.posture.aws_ec2_imdsv2

import rego.v1

config := c if {
	c := input.resource.config
	is_object(c)
} else := {}

deny contains "instance metadata service accepts IMDSv1 (http_tokens is optional)" if {
	options := config.metadata_options
	options.http_tokens == "optional"
	options.http_endpoint != "disabled"
}
