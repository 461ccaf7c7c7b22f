-- Issue 18: `skywarden import` leaves the full-text index to a live scheduled indexer (`serve`
-- or a worker) rather than indexing at its end, which was most of its time. Each scheduled
-- indexer notes, before every run, that it is alive and who it is; a stopping one clears it.
ALTER TABLE event_search_watermark
    ADD COLUMN scheduled_at timestamptz,
    ADD COLUMN scheduled_by text;
