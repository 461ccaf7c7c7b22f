-- Incidents as stored objects: one per intrusion, with a status, an owner and a history. Alerts
-- are linked to one by the keys they share (session, principal and address, access keys, the
-- resources the intruder touched); see src/alerts/incidents.rs. The old grouping (one incident
-- per session key, computed at read time) split an intrusion whenever the intruder changed
-- credentials or address.
CREATE TABLE incidents (
    incident_id  text        PRIMARY KEY,
    -- The account of its first alert (an intrusion can reach others: its alerts say which).
    account_id   text        NOT NULL,
    status       text        NOT NULL DEFAULT 'open'
                             CHECK (status IN ('open', 'investigating', 'contained', 'resolved', 'dismissed', 'merged')),
    owner        text,
    -- Set when a later alert showed two incidents were one intrusion: this one was folded into
    -- that one (its id still answers, pointing there).
    merged_into  text        REFERENCES incidents (incident_id),
    first_seen   timestamptz NOT NULL,
    last_seen    timestamptz NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT now(),
    updated_at   timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX incidents_page_idx ON incidents (first_seen DESC, incident_id) WHERE merged_into IS NULL;
CREATE TRIGGER incidents_updated_at BEFORE UPDATE ON incidents
    FOR EACH ROW EXECUTE FUNCTION skywarden_touch_updated_at();

-- What links alerts to an incident, and while when: an alert within [valid_from, valid_until]
-- of one of an incident's keys joins it.
CREATE TABLE incident_keys (
    link_key     text        NOT NULL,
    incident_id  text        NOT NULL REFERENCES incidents (incident_id) ON DELETE CASCADE,
    valid_from   timestamptz NOT NULL,
    valid_until  timestamptz NOT NULL,
    PRIMARY KEY (link_key, incident_id)
);
CREATE INDEX incident_keys_incident_idx ON incident_keys (incident_id);

-- Who changed an incident's status or owner, when and why (and the engine's own changes:
-- a merge, a reopening by a new alert).
CREATE TABLE incident_changes (
    change_id    bigserial   PRIMARY KEY,
    incident_id  text        NOT NULL REFERENCES incidents (incident_id) ON DELETE CASCADE,
    changed_at   timestamptz NOT NULL DEFAULT now(),
    actor        text        NOT NULL,
    field        text        NOT NULL,
    old_value    text,
    new_value    text,
    reason       text        NOT NULL
);
CREATE INDEX incident_changes_incident_idx ON incident_changes (incident_id, change_id);

ALTER TABLE alerts
    ADD COLUMN incident_id text,
    -- Why the alert joined its incident ("session", "address 198.51.100.7", ...).
    ADD COLUMN link_reason text;
CREATE INDEX alerts_incident_idx ON alerts (incident_id, first_seen);
-- Alerts not linked yet: the engine's work queue.
CREATE INDEX alerts_unlinked_idx ON alerts (first_seen, alert_id) WHERE incident_id IS NULL;
