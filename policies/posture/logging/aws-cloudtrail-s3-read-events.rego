# METADATA
# title: S3 object-level read events are logged
# description: >-
#   Account-level check: a logging multi-region trail records S3 data events of read (GetObject, ...)
#   type for all buckets, by a basic selector (data resource AWS::S3::Object with the
#   all-buckets value arn:aws:s3 or arn:aws:s3:::, read/write type All or ReadOnly) or an advanced
#   selector (eventCategory Data, resources.type AWS::S3::Object, no filter but readOnly
#   true or an all-buckets resources.ARN prefix). Buckets are not collected, so selectors
#   naming single buckets cannot be matched against the bucket list and do not count. Not judged
#   when the account's trails were not collected.
# custom:
#   id: aws-cloudtrail-s3-read-events
#   severity: low
#   resource_type: "aws:account"
#   remediation: >-
#     Add S3 data events to a multi-region trail, e.g. aws cloudtrail put-event-selectors
#     --trail-name <trail> --advanced-event-selectors with eventCategory = Data and
#     resources.type = AWS::S3::Object (data events are billed per event).
#   frameworks:
#     cis-aws-3.0: ["3.9"]
#     cis-aws-1.5: ["3.11"]
#   mitre: ["TA0009", "TA0010"]
#   depends_on: ["cloudtrail:trail"]
package skywarden.posture.aws_cloudtrail_s3_read_events

import rego.v1

# The value if it is an array or an object, else []: regorus fails on `some x in null` where OPA
# would leave the expression undefined.
items(value) := value if {
	is_array(value)
} else := value if {
	is_object(value)
} else := []

read_write_types := {"All", "ReadOnly"}

read_only_value := "true"

trails := t if {
	t := input.account.resources["cloudtrail:trail"]
	is_array(t)
}

# arn:aws:s3 or arn:aws:s3::: (in any partition) stands for every bucket.
all_buckets(value) if {
	is_string(value)
	startswith(value, "arn:")
	some suffix in [":s3", ":s3:::"]
	endswith(value, suffix)
}

records_objects(selectors) if {
	some selector in items(selectors.event_selectors)
	selector.read_write_type in read_write_types
	some resource in items(selector.data_resources)
	resource.type == "AWS::S3::Object"
	some value in items(resource.values)
	all_buckets(value)
}

records_objects(selectors) if {
	some selector in items(selectors.advanced_event_selectors)
	some category in items(selector.field_selectors)
	category.field == "eventCategory"
	category.equals == ["Data"]
	some type in items(selector.field_selectors)
	type.field == "resources.type"
	type.equals == ["AWS::S3::Object"]
	every field in items(selector.field_selectors) {
		keeps_all_objects(field)
	}
}

keeps_all_objects(field) if field.field in {"eventCategory", "resources.type"}

keeps_all_objects(field) if {
	field.field == "readOnly"
	field.equals == [read_only_value]
}

keeps_all_objects(field) if {
	field.field == "resources.ARN"
	count(items(field.starts_with)) > 0
	every prefix in items(field.starts_with) {
		all_buckets(prefix)
	}
	every other in ["equals", "ends_with", "not_equals", "not_starts_with", "not_ends_with"] {
		count(items(object.get(field, other, []))) == 0
	}
}

any_recording if {
	some trail in trails
	trail.config.is_multi_region == true
	trail.config.is_logging == true
	records_objects(trail.config.event_selectors)
}

deny contains "no logging multi-region trail records S3 object-level read events for all buckets" if {
	is_array(trails)
	not any_recording
}
