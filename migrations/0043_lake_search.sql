-- Searching archived events (issue 18; docs/archive.md, "Reading archived months").

-- An archived event can come back into the hot table (old log files imported again after their
-- month was archived) while its archived copy is cached. The hot row is the one shown.
--
-- `audit_events`: each event once. The cached copy of an event the hot table holds is left out,
-- found through the hot table's primary key (OFFSET 0 keeps it a probe per cached row, never a
-- scan of the hot range). PostgreSQL pulls a UNION ALL member with a WHERE clause up into the
-- append only as a subquery, so its indexes' time order is lost and a key cannot be looked up
-- in it from a join: fine for lookups by id (event detail), not for searches.
CREATE OR REPLACE VIEW audit_events AS
    SELECT account_id, event_time, event_id, region, event_source, event_name, event_type, principal_arn,
           principal_type, principal_id, user_name, access_key_id, source_ip, source_ip_text, user_agent,
           error_code, error_message, read_only, resource_ids, geo_country, geo_city, geo_latitude, geo_longitude,
           geo_asn, geo_as_org, raw, ingested_at, source_is_tor, source_is_vpn, source_is_hosting, source_is_aws,
           false AS archived
    FROM cloudtrail_events
    UNION ALL
    SELECT account_id, event_time, event_id, region, event_source, event_name, event_type, principal_arn,
           principal_type, principal_id, user_name, access_key_id, source_ip, source_ip_text, user_agent,
           error_code, error_message, read_only, resource_ids, geo_country, geo_city, geo_latitude, geo_longitude,
           geo_asn, geo_as_org, raw, ingested_at, source_is_tor, source_is_vpn, source_is_hosting, source_is_aws,
           true AS archived
    FROM lake_events l
    WHERE NOT EXISTS (SELECT 1 FROM cloudtrail_events h
                      WHERE h.account_id = l.account_id AND h.event_time = l.event_time AND h.event_id = l.event_id
                      OFFSET 0);

-- `audit_event_copies`: every copy, marked (0038's view, flattened into one append). Searches
-- read it with `NOT (archived AND EXISTS (… hot key or an earlier cached copy …))`, which the
-- planner folds per member
-- (nothing for the hot side, a primary-key probe per cached row), so both sides keep their
-- indexes and time order; they read rows back by key and `archived`, one copy each.
CREATE VIEW audit_event_copies AS
    SELECT account_id, event_time, event_id, region, event_source, event_name, event_type, principal_arn,
           principal_type, principal_id, user_name, access_key_id, source_ip, source_ip_text, user_agent,
           error_code, error_message, read_only, resource_ids, geo_country, geo_city, geo_latitude, geo_longitude,
           geo_asn, geo_as_org, raw, ingested_at, source_is_tor, source_is_vpn, source_is_hosting, source_is_aws,
           false AS archived, NULL::text AS lake_object, NULL::integer AS lake_row_group
    FROM cloudtrail_events
    UNION ALL
    SELECT account_id, event_time, event_id, region, event_source, event_name, event_type, principal_arn,
           principal_type, principal_id, user_name, access_key_id, source_ip, source_ip_text, user_agent,
           error_code, error_message, read_only, resource_ids, geo_country, geo_city, geo_latitude, geo_longitude,
           geo_asn, geo_as_org, raw, ingested_at, source_is_tor, source_is_vpn, source_is_hosting, source_is_aws,
           true AS archived, lake_object, lake_row_group
    FROM lake_events;

-- The hot table's access paths for resource and address filters, so a filtered search over a
-- large cache does not scan it: the GIN index on resource ids, and the covering address index
-- the CIDR filter reads as a range (migration 0008).
CREATE INDEX lake_events_resources_idx ON lake_events USING gin (resource_ids);
CREATE INDEX lake_events_source_ip_idx ON lake_events (source_ip) INCLUDE (event_time, account_id, event_id);
