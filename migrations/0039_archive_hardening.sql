-- Hardening of the open security lake (docs/archive.md, "Safety").

-- The verified figures a resumed run re-checks before a drop: `checksum` covers each row's
-- content as read back (id, account, time, raw_data); `key_checksum` only the rows' keys,
-- what the drop compares with the detached partition (rows are never updated, only added).
-- `already_archived`: rows of a month that came back which an earlier generation holds.
ALTER TABLE archive_partitions
    ADD COLUMN key_checksum     bigint NOT NULL DEFAULT 0,
    ADD COLUMN already_archived bigint NOT NULL DEFAULT 0;

-- A row's identity as the ledger stores it: 64 bits of PostgreSQL's own stable hash (the one
-- hash partitioning relies on) over account, id and the time in microseconds.
CREATE FUNCTION skywarden_archive_key(account text, id text, at timestamptz) RETURNS bigint
LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE
AS $$ SELECT hashtextextended(account || '/' || id || '/' || (extract(epoch FROM at) * 1000000)::bigint::text, 0) $$;

-- Every row a dropped month held, by key: a month that comes back (a file imported again)
-- writes only the rows not listed here, and drops the others as already archived. About 70
-- bytes a row (heap and index), against a kilobyte or more for the event itself.
-- source: 1 cloudtrail_events, 2 flow_records.
CREATE TABLE archive_ledger (
    key         bigint      NOT NULL,
    month_start timestamptz NOT NULL,
    source      smallint    NOT NULL,
    PRIMARY KEY (source, month_start, key)
);
