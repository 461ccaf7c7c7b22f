-- Reading archived months (docs/archive.md, "Reading archived months"): the audit trail loads
-- the row groups of the lake it needs into a bounded cache, and searches hot and cached rows as
-- one. Both tables are UNLOGGED: a cache, emptied together by a crash and refilled on demand.

-- Archived CloudTrail events, as `cloudtrail_events` stored them, and the row group they came
-- from (what eviction removes at once).
CREATE UNLOGGED TABLE lake_events (
    account_id        text        NOT NULL,
    event_time        timestamptz NOT NULL,
    event_id          text        NOT NULL,
    region            text,
    event_source      text,
    event_name        text,
    event_type        text,
    principal_arn     text,
    principal_type    text,
    principal_id      text,
    user_name         text,
    access_key_id     text,
    source_ip         inet,
    source_ip_text    text,
    user_agent        text,
    error_code        text,
    error_message     text,
    read_only         boolean,
    resource_ids      text[]      NOT NULL DEFAULT '{}',
    geo_country       text,
    geo_city          text,
    geo_latitude      double precision,
    geo_longitude     double precision,
    geo_asn           bigint,
    geo_as_org        text,
    raw               jsonb       NOT NULL,
    ingested_at       timestamptz NOT NULL,
    source_is_tor     boolean,
    source_is_vpn     boolean,
    source_is_hosting boolean,
    source_is_aws     boolean,
    lake_object       text        NOT NULL,
    lake_row_group    integer     NOT NULL
);
-- The same access paths as the hot table's, so a search runs the same plan over both.
CREATE INDEX lake_events_key_idx ON lake_events (account_id, event_time, event_id);
CREATE INDEX lake_events_time_idx ON lake_events (event_time);
CREATE INDEX lake_events_event_id_idx ON lake_events (event_id);
CREATE INDEX lake_events_principal_lower_idx ON lake_events (lower(principal_arn), event_time);
CREATE INDEX lake_events_user_lower_idx ON lake_events (lower(user_name), event_time);
CREATE INDEX lake_events_name_lower_idx ON lake_events (lower(event_name), event_time);
CREATE INDEX lake_events_group_idx ON lake_events (lake_object, lake_row_group);

-- Which row groups of which lake objects are loaded: the single-flight key (a loader holds an
-- advisory lock on the object and looks here first) and the LRU order of eviction (used_at).
CREATE UNLOGGED TABLE lake_loaded_groups (
    lake_object  text        NOT NULL,
    row_group    integer     NOT NULL,
    account_id   text        NOT NULL,
    event_day    date        NOT NULL,
    rows_loaded  bigint      NOT NULL,
    bytes_read   bigint      NOT NULL,
    loaded_at    timestamptz NOT NULL DEFAULT now(),
    used_at      timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (lake_object, row_group)
);
CREATE INDEX lake_loaded_groups_used_idx ON lake_loaded_groups (used_at);

-- The audit trail's rows: the hot events and the archived ones loaded, marked. A UNION ALL
-- view is flattened by the planner into one append, so every filter and the time order reach
-- each side's indexes.
CREATE VIEW audit_events AS
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
    FROM lake_events;
