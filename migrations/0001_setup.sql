-- Shared helpers for every later migration.
-- Applied migrations are never edited: change the schema with a new file.

-- Creates the monthly range partition of `parent` that holds `ts`, if it is missing.
-- Two importers may ask for the same month at once, so creation is serialised by an
-- advisory lock on the partition name.
CREATE FUNCTION skywarden_ensure_month_partition(parent text, ts timestamptz)
RETURNS text
LANGUAGE plpgsql AS $$
DECLARE
    month_start timestamptz := date_trunc('month', ts AT TIME ZONE 'UTC') AT TIME ZONE 'UTC';
    month_end   timestamptz := month_start + interval '1 month';
    part_name   text := parent || '_p' || to_char(month_start AT TIME ZONE 'UTC', 'YYYYMM');
BEGIN
    PERFORM pg_advisory_xact_lock(hashtext(part_name));
    IF to_regclass(part_name) IS NULL THEN
        EXECUTE format(
            'CREATE TABLE %I PARTITION OF %I FOR VALUES FROM (%L) TO (%L)',
            part_name, parent, month_start, month_end);
    END IF;
    RETURN part_name;
END;
$$;

CREATE FUNCTION skywarden_touch_updated_at()
RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    NEW.updated_at := now();
    RETURN NEW;
END;
$$;
