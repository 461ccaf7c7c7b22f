-- Issue 18 review: the full-text indexer's one-run-at-a-time guard is a lease on the watermark
-- row, not a session advisory lock, so it works through a pooler in transaction mode (PgBouncer)
-- and a lock left on a pooled server connection can no longer lock every later run out for
-- ever. A run takes the lease when it is free or expired, renews it with every chunk it commits
-- and releases it when it ends (or when its task is dropped); a process that dies leaves it to
-- expire.
ALTER TABLE event_search_watermark
    ADD COLUMN lease_owner text,
    ADD COLUMN lease_until timestamptz NOT NULL DEFAULT '-infinity';
