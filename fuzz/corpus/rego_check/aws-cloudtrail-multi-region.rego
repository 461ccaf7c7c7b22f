# METADATA
# title: A multi-region trail logs all management events
# description: >-
#   Account-level check: at least one trail (the account's own or an organization trail) is
#   multi-region, is logging, and records read and write management events, by a basic selector
#   (IncludeManagementEvents true, ReadWriteType All) or an advanced selector on
#   eventCategory Management without a readOnly filter. An organization trail whose selectors a
#   member account may not read (event_selectors null) is taken as recording them. Not judged
#   when the account's trails were not collected.
# custom:
#   id: aws-cloudtrail-multi-region
#   severity: high
#   resource_type: "aws:account"
#   remediation: >-
#     Create or update a trail with --is-multi-region-trail, start it (aws cloudtrail
#     start-logging), and make sure its event selectors record management events of both read
#     and write type.
#   frameworks:
#     cis-aws-3.0: ["3.1"]
#     cis-aws-1.5: ["3.1"]
#   mitre: ["TA0005"]
#   depends_on: ["cloudtrail:trail"]
package skywarden.posture.aws_cloudtrail_multi_region

import rego.v1

# The value if it is an array or an object, else []: regorus fails on `some x in null` where OPA
# would leave the expression undefined.
items(value) := value if {
	is_array(value)
} else := value if {
	is_object(value)
} else := []

trails := t if {
	t := input.account.resources["cloudtrail:trail"]
	is_array(t)
}

records_management_events(selectors) if selectors == null

records_management_events(selectors) if {
	some selector in items(selectors.event_selectors)
	selector.include_management_events == true
	selector.read_write_type == "All"
}

records_management_events(selectors) if {
	some selector in items(selectors.advanced_event_selectors)
	some field in items(selector.field_selectors)
	field.field == "eventCategory"
	"Management" in items(field.equals)
	not filters_read_only(selector)
}

filters_read_only(selector) if {
	some field in items(selector.field_selectors)
	field.field == "readOnly"
}

compliant(trail) if {
	trail.config.is_multi_region == true
	trail.config.is_logging == true
	records_management_events(trail.config.event_selectors)
}

deny contains "no multi-region trail is logging read and write management events" if {
	is_array(trails)
	not any_compliant
}

any_compliant if {
	some trail in trails
	compliant(trail)
}
