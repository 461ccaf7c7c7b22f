-- Incident linking reads, for each new alert, what its principal changed around it from the
-- same address or key (`alerts::link_keys::derived_keys`): successful writes only. Through the
-- principal index it read every call of the principal in the window and dropped the reads: 48 ms
-- and 5,700 heap pages for one busy principal, 4.3 s of a 200,000-event import's detection pass
-- (docs/scaling.md). Writes are a small part of a trail, so this index is small and costs
-- nothing to insert a read.
CREATE INDEX cloudtrail_events_principal_writes_idx ON cloudtrail_events (account_id, lower(principal_arn), event_time)
    WHERE error_code IS NULL AND read_only IS NOT TRUE;
