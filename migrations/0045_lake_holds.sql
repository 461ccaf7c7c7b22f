-- Reading archived months (docs/archive.md): what an export holds in the lake cache, and the
-- row groups' time statistics, so any server can tell what a range needs. UNLOGGED like the
-- cache they describe (0038): a crash empties them together.

-- Row groups an export reads page by page: eviction spares a group while any hold on it is
-- live (`until` in the future). Each export has its own `hold_id`, renews its `until` as it
-- goes, and deletes its rows when it ends; a server that dies leaves holds that lapse.
CREATE UNLOGGED TABLE lake_group_holds (
    hold_id     bigint      NOT NULL,
    lake_object text        NOT NULL,
    row_group   integer     NOT NULL,
    until       timestamptz NOT NULL,
    PRIMARY KEY (hold_id, lake_object, row_group)
);
CREATE INDEX lake_group_holds_group_idx ON lake_group_holds (lake_object, row_group, until);

-- Every row group of each object whose footer was read (loaded or not): its `time`
-- statistics (milliseconds; NULL when the writer left none) and rows.
CREATE UNLOGGED TABLE lake_object_groups (
    lake_object text    NOT NULL,
    row_group   integer NOT NULL,
    rows        bigint  NOT NULL,
    min_ms      bigint,
    max_ms      bigint,
    PRIMARY KEY (lake_object, row_group)
);
