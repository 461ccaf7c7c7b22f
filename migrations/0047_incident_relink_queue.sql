-- Bridged alerts waiting to be re-keyed (see src/alerts/incidents.rs, `relink_bridged`). A
-- detection pass queues every linked alert its bridging events (AssumeRole, CreateAccessKey,
-- AssociateIamInstanceProfile, ...) tie, then works through the queue in small transactions;
-- what a pass's cap leaves stays here for the next pass (the watermark moves on regardless).
CREATE TABLE incident_relink_queue (
    account_id  text        NOT NULL,
    alert_id    uuid        NOT NULL,
    -- The alert is the bridging caller's own: re-keyed first, so its incident keeps what the
    -- bridge derived before the other side looks it up.
    caller      boolean     NOT NULL,
    first_seen  timestamptz NOT NULL,
    queued_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (account_id, alert_id)
);
CREATE INDEX incident_relink_queue_order_idx ON incident_relink_queue (caller DESC, first_seen, alert_id);

-- The probes that find a bridge's alerts: by principal (the caller, the role session or user
-- it assumed or created), by the link resources they name, by the instance a role session is.
CREATE INDEX alerts_principal_idx ON alerts (account_id, principal, last_seen) WHERE principal IS NOT NULL;
CREATE INDEX alerts_resources_idx ON alerts USING gin (resources);
-- `arn:aws:sts::ACCOUNT:assumed-role/ROLE/i-0abc`: the session name is the third '/' part.
CREATE INDEX alerts_instance_session_idx ON alerts (account_id, split_part(principal, '/', 3), last_seen)
    WHERE principal LIKE 'arn:%:sts::%:assumed-role/%/i-%';

-- Passes that stopped at their cap (the queue's length is the backlog): a metric to watch.
CREATE TABLE incident_relink_state (
    only_row         boolean     PRIMARY KEY DEFAULT true CHECK (only_row),
    cap_hits_total   bigint      NOT NULL DEFAULT 0,
    last_cap_hit_at  timestamptz
);
