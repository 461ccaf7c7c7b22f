# METADATA
# title: No security group admits ::/0 to remote administration ports
# description: >-
#   An ingress rule open to ::/0 that covers SSH (22) or RDP (3389) over TCP, UDP or all
#   protocols. Rules from other security groups, prefix lists and narrower ranges pass.
# custom:
#   id: aws-ec2-sg-admin-ports-ipv6
#   severity: high
#   resource_type: "ec2:security-group"
#   remediation: >-
#     Revoke the rule (aws ec2 revoke-security-group-ingress) and reach instances through
#     Systems Manager Session Manager, a VPN or a bastion admitted from known ranges only.
#   frameworks:
#     cis-aws-3.0: ["5.3"]
#     cis-aws-1.5: ["5.3"]
#   mitre: ["TA0001", "TA0008"]
package skywarden.posture.aws_ec2_sg_admin_ports_ipv6

import rego.v1

# The value if it is an array or an object, else []: regorus fails on `some x in null` where OPA
# would leave the expression undefined.
items(value) := value if {
	is_array(value)
} else := value if {
	is_object(value)
} else := []

open_source := "::/0"

admin_ports := [22, 3389]

config := c if {
	c := input.resource.config
	is_object(c)
} else := {}

# The collector writes "all" for protocol -1; numbers are accepted as IAM-style fallbacks.
all_protocols := {"all", "-1"}

port_protocols := {"tcp", "udp", "6", "17"}

reaches_admin_port(rule) if rule.protocol in all_protocols

reaches_admin_port(rule) if {
	rule.protocol in port_protocols
	some port in admin_ports
	rule.from_port <= port
	port <= rule.to_port
}

traffic(rule) := "all traffic" if {
	rule.protocol in all_protocols
} else := sprintf("%s %d-%d", [rule.protocol, rule.from_port, rule.to_port])

deny contains msg if {
	some rule in items(config.ingress)
	rule.cidr_ipv6 == open_source
	reaches_admin_port(rule)
	msg := sprintf("ingress %s from %s", [traffic(rule), open_source])
}
