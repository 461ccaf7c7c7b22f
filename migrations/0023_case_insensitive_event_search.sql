-- The audit trail matches principals and event names in any case ("Alice", "consolelogin"):
-- indexes on the lower-cased columns, in time order, so those filters still walk an index.
CREATE INDEX cloudtrail_events_principal_lower_idx ON cloudtrail_events (lower(principal_arn), event_time);
CREATE INDEX cloudtrail_events_user_lower_idx ON cloudtrail_events (lower(user_name), event_time);
CREATE INDEX cloudtrail_events_name_lower_idx ON cloudtrail_events (lower(event_name), event_time);
