-- Import speed (issue 18; figures in docs/scaling.md, "Storage: where
-- import time goes").

-- The audit trail matches principals, user names and event names in any case, through the
-- lower-cased indexes of 0023. The exact-case twins of 0002 cost every imported row three more
-- index insertions; the few exact-case queries that need an index path (console logins by
-- time) name the lower-cased value too, and the rest are led by the account and time of the
-- primary key.
DROP INDEX cloudtrail_events_name_idx;
DROP INDEX cloudtrail_events_principal_idx;
DROP INDEX cloudtrail_events_user_idx;

-- `ingested_at` is the time of the insert, so it grows with the physical order of each
-- partition: a BRIN summary answers "stored since the watermark" (detection, late-event links)
-- as a B-tree did, at a fraction of the insert cost. Block ranges not yet summarised are always
-- read, so what was just stored is never missed.
DROP INDEX cloudtrail_events_ingested_idx;
CREATE INDEX cloudtrail_events_ingested_idx ON cloudtrail_events USING brin (ingested_at)
    WITH (pages_per_range = 32, autosummarize = on);
DROP INDEX flow_records_ingested_idx;
CREATE INDEX flow_records_ingested_idx ON flow_records USING brin (ingested_at)
    WITH (pages_per_range = 32, autosummarize = on);

-- The raw event (about 2 KB) is TOAST-compressed on insert: lz4 compresses it several times
-- faster than the default pglz, to about the same size. Set on the parent for partitions
-- created from now on, and on each existing partition (ALTER TABLE does not recurse for this);
-- rows already stored keep their compression. A server built without lz4 keeps pglz.
DO $$
DECLARE
    target record;
BEGIN
    FOR target IN
        SELECT c.oid::regclass AS rel, a.attname AS col
        FROM pg_class c
        JOIN pg_attribute a ON a.attrelid = c.oid
        WHERE ((a.attname = 'raw' AND (c.relname = 'cloudtrail_events'
                                       OR c.oid IN (SELECT inhrelid FROM pg_inherits
                                                    WHERE inhparent = 'cloudtrail_events'::regclass)))
            OR (a.attname = 'extra' AND (c.relname = 'flow_records'
                                         OR c.oid IN (SELECT inhrelid FROM pg_inherits
                                                      WHERE inhparent = 'flow_records'::regclass))))
          AND NOT a.attisdropped
    LOOP
        EXECUTE format('ALTER TABLE %s ALTER COLUMN %I SET COMPRESSION lz4', target.rel, target.col);
    END LOOP;
EXCEPTION WHEN feature_not_supported THEN
    RAISE WARNING 'this PostgreSQL has no lz4 support: raw events stay pglz-compressed (slower imports)';
END
$$;

-- Full-text search (`q`), indexed OFF the import path (issue 18; figures in docs/scaling.md,
-- "Full text"): a trigram index maintained with each imported row cost ~90 µs a row and cut the
-- storage side of import from ~22,000 to ~6,000 rows/s. The indexer (`search/index.rs`) copies
-- what was stored since its watermark into `event_search` after the fact; the search matches
-- the indexed rows through the trigram index and the few not indexed yet (the tail) by
-- computing the same projection, so results are exact either way.
CREATE EXTENSION IF NOT EXISTS pg_trgm;

-- What `q` matches: the fields people search an event by, not the whole raw JSON (a fifth of
-- its size: fewer trigrams to index). Bounded, so one huge event cannot make a huge entry; the
-- tail is matched through this same function, so the bound is the same on both sides.
CREATE FUNCTION skywarden_event_search_text(raw jsonb) RETURNS text
LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE
-- Costly enough that plans compute it after a LIMIT, not for every row they sort.
COST 1000
AS $$
    -- The bounded identifying fields first, the resources next, then each free-form block cut
    -- on its own: a large policy document must not push an ARN or an id past the final cut.
    SELECT left(concat_ws(' ',
        raw ->> 'eventName',
        raw ->> 'eventSource',
        raw ->> 'eventID',
        raw ->> 'requestID',
        raw ->> 'sharedEventID',
        raw ->> 'recipientAccountId',
        raw ->> 'awsRegion',
        raw #>> '{userIdentity,accessKeyId}',
        raw #>> '{userIdentity,principalId}',
        raw #>> '{userIdentity,arn}',
        raw #>> '{userIdentity,userName}',
        raw #>> '{userIdentity,sessionContext,sessionIssuer,arn}',
        raw ->> 'sourceIPAddress',
        left(raw ->> 'userAgent', 256),
        raw ->> 'errorCode',
        left(raw ->> 'errorMessage', 512),
        (SELECT left(string_agg(r ->> 'ARN', ' '), 1024)
         FROM jsonb_path_query(raw -> 'resources', 'lax $[*]') r),
        (SELECT left(string_agg(v #>> '{}', ' '), 1500)
         FROM jsonb_path_query(raw -> 'requestParameters', 'strict $.**') v
         WHERE jsonb_typeof(v) IN ('string', 'number', 'boolean')),
        (SELECT left(string_agg(v #>> '{}', ' '), 1500)
         FROM jsonb_path_query(raw -> 'responseElements', 'strict $.**') v
         WHERE jsonb_typeof(v) IN ('string', 'number', 'boolean')),
        (SELECT left(string_agg(v #>> '{}', ' '), 512)
         FROM jsonb_path_query(raw -> 'additionalEventData', 'strict $.**') v
         WHERE jsonb_typeof(v) IN ('string', 'number', 'boolean'))
    ), 6144)
$$;

-- One row per indexed event, keyed as `cloudtrail_events` is. Not partitioned: the archive
-- drops a month of it with `search::index::forget_range` when it drops a month of events.
CREATE TABLE event_search (
    account_id  text        NOT NULL,
    event_time  timestamptz NOT NULL,
    event_id    text        NOT NULL,
    search_text text        NOT NULL,
    PRIMARY KEY (account_id, event_time, event_id)
);
CREATE INDEX event_search_text_idx ON event_search USING gin (search_text gin_trgm_ops);
-- Newest-first pages of a common word, and dropping a month.
CREATE INDEX event_search_time_idx ON event_search (event_time);

-- Every event stored (`ingested_at`) before `indexed_until` is in `event_search`. The indexer
-- moves it forward only past what no open transaction can still add (see search/index.rs).
CREATE TABLE event_search_watermark (
    only_row      boolean     PRIMARY KEY DEFAULT true CHECK (only_row),
    indexed_until timestamptz NOT NULL,
    last_run_at   timestamptz,
    last_indexed  bigint      NOT NULL DEFAULT 0
);
-- Nothing is indexed yet: the first run indexes every stored event; until then every search
-- is a tail search (a scan, as before).
INSERT INTO event_search_watermark (indexed_until) VALUES ('-infinity');

-- Where the tail starts: the watermark, minus a short overlap (the watermark already stays
-- behind every open transaction: see search/index.rs). Short, because every search re-checks
-- each event of the overlap against the index. Used by the indexer and the search alike.
CREATE FUNCTION skywarden_event_search_tail_start() RETURNS timestamptz
LANGUAGE sql STABLE PARALLEL SAFE
AS $$ SELECT indexed_until - interval '10 seconds' FROM event_search_watermark $$;
