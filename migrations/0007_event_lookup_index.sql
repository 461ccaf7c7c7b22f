-- One event by its id (`GET /api/v1/events/{account}/{event_id}`, alert evidence): the primary
-- key leads with the event time, so without this the lookup walks all of an account's events.
CREATE INDEX cloudtrail_events_event_id_idx ON cloudtrail_events (event_id);
