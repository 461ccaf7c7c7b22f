# METADATA
# title: Default security groups restrict all traffic
# description: >-
#   The default security group of a VPC has any ingress or egress rule. Resources launched
#   without a group land in it, so it should admit nothing and let nothing out.
# custom:
#   id: aws-ec2-default-sg-traffic
#   severity: medium
#   resource_type: "ec2:security-group"
#   remediation: >-
#     Move the resources that use the default group to purpose-made groups, then remove every
#     rule from it (aws ec2 revoke-security-group-ingress and revoke-security-group-egress).
#   frameworks:
#     cis-aws-3.0: ["5.4"]
#     cis-aws-1.5: ["5.4"]
#   mitre: ["TA0008"]
package skywarden.posture.aws_ec2_default_sg_traffic

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

is_default if {
	config.group_name == "default"
	is_string(config.vpc_id)
}

traffic(rule) := "all traffic" if {
	rule.protocol in {"all", "-1"}
} else := sprintf("%s %d-%d", [rule.protocol, rule.from_port, rule.to_port]) if {
	rule.protocol in {"tcp", "udp", "6", "17"}
	is_number(rule.from_port)
	is_number(rule.to_port)
} else := sprintf("%s", [rule.protocol])

# The one source a flattened rule carries.
peer(rule) := rule.cidr_ipv4 if {
	is_string(rule.cidr_ipv4)
} else := rule.cidr_ipv6 if {
	is_string(rule.cidr_ipv6)
} else := rule.source_group_id if {
	is_string(rule.source_group_id)
} else := rule.prefix_list_id if {
	is_string(rule.prefix_list_id)
} else := "no source"

deny contains msg if {
	is_default
	some rule in items(config.ingress)
	is_object(rule)
	msg := sprintf("ingress %s from %s", [traffic(rule), peer(rule)])
}

deny contains msg if {
	is_default
	some rule in items(config.egress)
	is_object(rule)
	msg := sprintf("egress %s to %s", [traffic(rule), peer(rule)])
}
