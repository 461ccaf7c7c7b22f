# METADATA
# title: EC2 instances use an IAM role
# description: >-
#   An instance without an instance profile can reach AWS APIs only with keys stored on it.
#   CIS 1.18 asks that instances use roles; this check automates the visible half (the instance
#   has a profile), not whether keys are also present on the instance.
# custom:
#   id: aws-ec2-instance-role
#   severity: low
#   resource_type: "ec2:instance"
#   remediation: >-
#     Create an instance profile with a role scoped to what the workload needs and associate it
#     (aws ec2 associate-iam-instance-profile); then remove any access keys from the instance.
#   frameworks:
#     cis-aws-3.0: ["1.18"]
#     cis-aws-1.5: ["1.18"]
#   mitre: ["TA0006"]
package skywarden.posture.aws_ec2_instance_role

import rego.v1

config := c if {
	c := input.resource.config
	is_object(c)
} else := {}

# Present and null: the instance has no profile (a missing member means not collected).
deny contains "instance has no IAM instance profile" if {
	object.get(config, "iam_instance_profile_arn", "not collected") == null
}
