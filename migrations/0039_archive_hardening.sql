-- Hardening of the open security lake (docs/archive.md, "Safety").

-- The verified figures a resumed run re-checks before a drop: `checksum` covers each row's
-- content as read back (id, account, time, raw_data); `key_checksum` only the rows' keys,
-- what the drop compares with the detached partition (rows are never updated, only added).
-- `already_archived`: rows of a month that came back which an earlier generation holds.
ALTER TABLE archive_partitions
    ADD COLUMN key_checksum     bigint NOT NULL DEFAULT 0,
    ADD COLUMN already_archived bigint NOT NULL DEFAULT 0;

-- A row's identity as the ledger stores it: 64 bits of PostgreSQL's own stable hash (the one
-- hash partitioning relies on) over account, id and the time in microseconds. Account and id
-- are each preceded by their length, so no two (account, id) pairs give the same text
-- (('1/2', '3') and ('1', '2/3') did with a bare separator); the time, last, is digits only.
-- Distinct keys still share a hash by chance with odds about rows²/2^65 (docs/archive.md).
CREATE FUNCTION skywarden_archive_key(account text, id text, at timestamptz) RETURNS bigint
LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE
AS $$ SELECT hashtextextended(
    length(account)::text || ':' || account || length(id)::text || ':' || id
        || (extract(epoch FROM at) * 1000000)::bigint::text, 0) $$;

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

-- The partition creator of 0001, now also sure that the table it finds under the partition's
-- name is an attached partition of `parent`. `skywarden archive` holds the same advisory lock
-- (hashtext of the partition's name) from before it detaches a month until the month is dropped
-- or attached again, so a writer that needs the month waits here and then creates it anew (the
-- late rows become the month's next generation). A table of that name that is not an attached
-- partition (a run killed between detach and drop) is an error naming it, where before every
-- insert failed with "no partition of relation found for row".
CREATE OR REPLACE FUNCTION skywarden_ensure_month_partition(parent text, ts timestamptz)
RETURNS text
LANGUAGE plpgsql AS $$
DECLARE
    month_start timestamptz := date_trunc('month', ts AT TIME ZONE 'UTC') AT TIME ZONE 'UTC';
    month_end   timestamptz := month_start + interval '1 month';
    part_name   text := parent || '_p' || to_char(month_start AT TIME ZONE 'UTC', 'YYYYMM');
BEGIN
    PERFORM pg_advisory_xact_lock(hashtext(part_name));
    -- Checked only now, under the lock: an archive run may have just dropped it.
    IF to_regclass(part_name) IS NULL THEN
        EXECUTE format(
            'CREATE TABLE %I PARTITION OF %I FOR VALUES FROM (%L) TO (%L)',
            part_name, parent, month_start, month_end);
    ELSIF NOT EXISTS (
        SELECT FROM pg_inherits
        WHERE inhrelid = to_regclass(part_name) AND inhparent = to_regclass(parent) AND NOT inhdetachpending
    ) THEN
        RAISE EXCEPTION 'table % exists but is not an attached partition of %', part_name, parent
            USING ERRCODE = 'object_not_in_prerequisite_state',
                  HINT = 'skywarden archive detached it and did not finish (killed?): run skywarden archive again to drop or re-attach it';
    END IF;
    RETURN part_name;
END;
$$;
