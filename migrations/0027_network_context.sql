-- Network context of an event's source address, as known when it was stored (point-in-time
-- facts: a Tor exit today may not have been one then). NULL: nothing loaded could say.
-- Nullable columns without a default: PostgreSQL adds them to the partitioned table and its
-- partitions in the catalogue only, without rewriting a row.
ALTER TABLE cloudtrail_events
    ADD COLUMN source_is_tor boolean,
    ADD COLUMN source_is_vpn boolean,
    ADD COLUMN source_is_hosting boolean,
    ADD COLUMN source_is_aws boolean;
