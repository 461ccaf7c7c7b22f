-- The open security lake (docs/archive.md): each archive run, and the state of each month it
-- copies to Parquet. A month of events or flows is dropped from PostgreSQL only once its
-- objects are written and verified; a killed run finds its months here and resumes.
CREATE TABLE archive_runs (
    run_id       bigserial   PRIMARY KEY,
    destination  text        NOT NULL,
    older_than_days integer  NOT NULL,
    dry_run      boolean     NOT NULL,
    started_at   timestamptz NOT NULL DEFAULT now(),
    finished_at  timestamptz,
    -- running, done, failed
    status       text        NOT NULL DEFAULT 'running' CHECK (status IN ('running', 'done', 'failed')),
    error        text,
    partitions   integer     NOT NULL DEFAULT 0,
    objects      integer     NOT NULL DEFAULT 0,
    rows_archived bigint     NOT NULL DEFAULT 0
);

-- One month of one source (cloudtrail_events, flow_records, alerts), at the destination it
-- was last written to.
-- generation counts how often the month was dropped and came back (late events re-create a
-- dropped partition); it is part of every object name, so a later generation never
-- overwrites the objects of an earlier one.
CREATE TABLE archive_partitions (
    source       text        NOT NULL,
    month_start  timestamptz NOT NULL,
    generation   integer     NOT NULL,
    destination  text        NOT NULL,
    state        text        NOT NULL CHECK (state IN ('writing', 'verified', 'dropped')),
    run_id       bigint      NOT NULL REFERENCES archive_runs (run_id),
    objects      text[]      NOT NULL DEFAULT '{}',
    row_count    bigint      NOT NULL DEFAULT 0,
    -- Wrapping sum of xxh3 over each row's account and id, as read back from the objects.
    checksum     bigint      NOT NULL DEFAULT 0,
    error        text,
    updated_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (source, month_start, generation)
);
