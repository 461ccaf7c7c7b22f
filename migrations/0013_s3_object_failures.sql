-- S3 objects that could not be read (unreadable, corrupt, too large, access denied): retried
-- with a growing back-off, then given up and shown, never recorded in ingested_objects as read.
CREATE TABLE s3_object_failures (
    account_id      text        NOT NULL,
    bucket          text        NOT NULL,
    object_key      text        NOT NULL,
    etag            text        NOT NULL,
    size            bigint      NOT NULL,
    -- The job that reads it, and its source, for `accounts status`, the API and the metrics.
    job_id          bigint      NOT NULL REFERENCES poll_jobs ON DELETE CASCADE,
    source          text        NOT NULL,
    attempts        integer     NOT NULL DEFAULT 1,
    last_error      text        NOT NULL,
    first_failed_at timestamptz NOT NULL DEFAULT now(),
    last_failed_at  timestamptz NOT NULL DEFAULT now(),
    -- When the next try is due; NULL once the object is given up (failed for good).
    next_attempt_at timestamptz,
    PRIMARY KEY (account_id, bucket, object_key, etag)
);
CREATE INDEX s3_object_failures_due_idx ON s3_object_failures (job_id, next_attempt_at);
