-- Detection after an import or a poll can fail (the database refuses a write, a policy panics)
-- while polling goes on: the failure must show in `accounts status`, the API and `/metrics`,
-- not only in a worker's log.
ALTER TABLE detection_watermark
    ADD COLUMN last_success_at      timestamptz,
    ADD COLUMN failing_since        timestamptz,
    ADD COLUMN consecutive_failures integer NOT NULL DEFAULT 0,
    ADD COLUMN last_error           text;
