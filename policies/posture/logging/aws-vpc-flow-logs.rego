# METADATA
# title: VPC flow logging is enabled
# description: >-
#   A VPC without an active flow log of its own (resource_id = the VPC id, in the same region)
#   that records rejected traffic (traffic_type ALL or REJECT). Flow logs on subnets or network
#   interfaces do not count. Not judged when the account's flow logs were not collected.
# custom:
#   id: aws-vpc-flow-logs
#   severity: medium
#   resource_type: "ec2:vpc"
#   remediation: >-
#     aws ec2 create-flow-logs --resource-type VPC --resource-ids <vpc id> --traffic-type ALL
#     --log-destination-type s3 --log-destination <bucket arn> (or cloud-watch-logs with a
#     delivery role).
#   frameworks:
#     cis-aws-3.0: ["3.7"]
#     cis-aws-1.5: ["3.9"]
#   mitre: ["TA0010", "TA0011"]
package skywarden.posture.aws_vpc_flow_logs

import rego.v1

flow_logs := f if {
	f := input.account.resources["ec2:flow-log"]
	is_array(f)
}

vpc_id := input.resource.id

vpc_logs contains log if {
	some log in flow_logs
	log.config.resource_id == vpc_id
	log.region == input.resource.region
}

records_rejects(log) if {
	log.config.flow_log_status == "ACTIVE"
	log.config.traffic_type in {"ALL", "REJECT"}
}

deny contains "no flow log is attached to the VPC" if {
	is_array(flow_logs)
	count(vpc_logs) == 0
}

# The VPC has flow logs, but none records rejected traffic: say what is wrong with each.
deny contains msg if {
	not any_records_rejects
	some log in vpc_logs
	log.config.flow_log_status != "ACTIVE"
	msg := sprintf("flow log %s is %s, not ACTIVE", [log.id, log.config.flow_log_status])
}

deny contains msg if {
	not any_records_rejects
	some log in vpc_logs
	log.config.traffic_type == "ACCEPT"
	msg := sprintf("flow log %s records %s traffic only", [log.id, log.config.traffic_type])
}

any_records_rejects if {
	some log in vpc_logs
	records_rejects(log)
}
