-- Source-address searches (an attacker's network) match thousands of events that must be sorted
-- by time before the newest page is known: carrying the key in the index lets PostgreSQL sort
-- them without reading each row.
DROP INDEX cloudtrail_events_source_ip_idx;
CREATE INDEX cloudtrail_events_source_ip_idx ON cloudtrail_events (source_ip) INCLUDE (event_time, account_id, event_id);
