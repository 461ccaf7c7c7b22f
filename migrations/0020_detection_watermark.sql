-- Rows ingested at or after `pending_since` may not have been through detection: a run whose
-- detection failed, or an import killed half-way, stored them and never evaluated them. Each
-- detection after an import or a poll starts from here (or from its own start, if earlier) and
-- moves the mark to where its scan began only when it succeeds.
CREATE TABLE detection_watermark (
    only_row      boolean     PRIMARY KEY DEFAULT true CHECK (only_row),
    pending_since timestamptz NOT NULL
);
-- What is stored already was evaluated by the release that stored it.
INSERT INTO detection_watermark (pending_since) VALUES (now());
