-- Full text (`q`) over the lake cache (issue 18; figures in docs/scaling.md, "Archived events
-- and `q`").

-- What `q` matches in a cached archived event, stored when it is loaded (archive/read.rs,
-- `insert_rows`, by the same `skywarden_event_search_text` the hot side's index holds, so both
-- match alike), with the trigram index `event_search` has: a search no longer computes the
-- projection for every cached event of its range (540k cached events took over 30 s for a rare
-- word). The cache is emptied first rather than backfilled: it is a cache (UNLOGGED, emptied by
-- any crash, refilled on demand by the next search of an archived range), and a backfill would
-- compute the projection for every cached row inside this migration. Its list of loaded row
-- groups goes with it, so nothing counts as loaded that is not there; the groups' statistics
-- (`lake_object_groups`) and export holds stay valid without rows.
TRUNCATE lake_events, lake_loaded_groups;
ALTER TABLE lake_events ADD COLUMN search_text text NOT NULL;
CREATE INDEX lake_events_search_text_idx ON lake_events USING gin (search_text gin_trgm_ops);

-- The columns of an audit-trail result row (`search::events::SummaryRow`), named as the API
-- names them, for every copy of `audit_event_copies`. Each page statement reads its page back
-- through it, one copy per key (`LATERAL … LIMIT 1`); a plain view of a view, flattened by the
-- planner, so the lookups by key keep each side's primary key or key index.
CREATE VIEW audit_event_summaries AS
    SELECT account_id, event_time, event_id, archived, region, event_source, event_name, principal_arn, user_name,
           source_ip_text AS source_ip, user_agent, error_code, read_only, resource_ids, geo_country AS country,
           geo_city AS city, geo_asn AS asn, geo_as_org AS as_org, source_is_tor AS is_tor, source_is_vpn AS is_vpn,
           source_is_hosting AS is_hosting
    FROM audit_event_copies;
