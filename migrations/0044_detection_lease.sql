-- Issue 16: one detection pass at a time over every process (`serve` and each `skywarden worker`).
-- The whole pass is leased, not each detector: one scan of the new events feeds every detector,
-- the watermark (`detection_watermark`) is one mark for all of them, and the login detectors
-- withdraw evidence their pass did not find, which a pass running beside them could just have
-- recorded. A lease, not an advisory lock, so it holds through a pooler in transaction mode and
-- a dead process's lease expires by itself.
CREATE TABLE detection_lease (
    only_row        boolean     PRIMARY KEY DEFAULT true CHECK (only_row),
    owner           text,
    expires_at      timestamptz NOT NULL DEFAULT '-infinity',
    taken_at        timestamptz,
    -- Callers that found the lease held, passes that finished, passes that failed or were cut
    -- short, and leases taken from an expired holder.
    skips_total     bigint      NOT NULL DEFAULT 0,
    passes_total    bigint      NOT NULL DEFAULT 0,
    passes_failed_total bigint  NOT NULL DEFAULT 0,
    takeovers_total bigint      NOT NULL DEFAULT 0
);
INSERT INTO detection_lease DEFAULT VALUES;

-- What callers stored and ask detection for: rows ingested from `since`, all committed by
-- `stored_by` (database clock). Every caller leaves one before it tries the lease; a pass that
-- reads from at most `since` and began reading after `stored_by` covers it, and deletes it only
-- when it succeeds, in the transaction that moves the watermark: a holder that dies, panics or
-- loses the lease leaves it to the next pass, whichever process runs it.
CREATE TABLE detection_requests (
    id        bigserial   PRIMARY KEY,
    since     timestamptz NOT NULL,
    stored_by timestamptz NOT NULL DEFAULT clock_timestamp()
);
