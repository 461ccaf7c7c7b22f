# METADATA
# title: Security groups admit the internet only where meant to
# description: >-
#   Every ingress rule open to 0.0.0.0/0 or ::/0, whatever the port: the account's attack
#   surface from the internet. A web server's 443 belongs here too, so the finding is low
#   severity; suppress it for groups that are meant to be public, with the reason.
# custom:
#   id: aws-ec2-sg-open-to-internet
#   severity: low
#   resource_type: "ec2:security-group"
#   remediation: >-
#     Narrow the rule to the addresses that need it, or put the service behind a load balancer
#     or CloudFront and admit only those; suppress the finding for groups that must be public.
#   frameworks:
#     cis-aws-3.0: []
#   mitre: ["TA0001"]
package skywarden.posture.aws_ec2_sg_open_to_internet

import rego.v1

# The value if it is an array or an object, else []: regorus fails on `some x in null`.
items(value) := value if {
	is_array(value)
} else := value if {
	is_object(value)
} else := []

config := c if {
	c := input.resource.config
	is_object(c)
} else := {}

all_protocols := {"all", "-1"}

traffic(rule) := "all traffic" if {
	rule.protocol in all_protocols
} else := sprintf("%s %d-%d", [rule.protocol, rule.from_port, rule.to_port]) if {
	is_number(rule.from_port)
	is_number(rule.to_port)
} else := sprintf("%v", [rule.protocol])

open_source(rule) := rule.cidr_ipv4 if rule.cidr_ipv4 == "0.0.0.0/0"

open_source(rule) := rule.cidr_ipv6 if rule.cidr_ipv6 == "::/0"

deny contains msg if {
	some rule in items(config.ingress)
	source := open_source(rule)
	msg := sprintf("ingress %s from %s", [traffic(rule), source])
}
