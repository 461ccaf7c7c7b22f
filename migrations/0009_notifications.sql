-- Alert routing: channels (where messages go), routes (which alerts go where) and the outbox
-- (what is still to be sent, written in the same transaction as the alert or status change).

CREATE TABLE notification_channels (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    name        text        NOT NULL UNIQUE,
    kind        text        NOT NULL CHECK (kind IN ('slack', 'teams', 'pagerduty', 'webhook', 'jira', 'servicenow', 'email')),
    -- Everything but secrets, as the API shows it.
    settings    jsonb       NOT NULL DEFAULT '{}',
    -- Secrets sealed with Skywarden's secret key (AES-256-GCM): version, nonce, ciphertext.
    sealed_secrets bytea,
    -- Secrets named by reference (env:NAME or file:/path), for channels from the config file.
    secret_refs jsonb       NOT NULL DEFAULT '{}',
    -- The names of the secrets set, sealed or referenced: what the API may show.
    secret_names text[]     NOT NULL DEFAULT '{}',
    -- 'api' (changed through the API) or 'file' (owned by the notifications config file).
    managed_by  text        NOT NULL DEFAULT 'api' CHECK (managed_by IN ('api', 'file')),
    enabled     boolean     NOT NULL DEFAULT true,
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now()
);
CREATE TRIGGER notification_channels_updated_at BEFORE UPDATE ON notification_channels
    FOR EACH ROW EXECUTE FUNCTION skywarden_touch_updated_at();

CREATE TABLE notification_routes (
    id             bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    name           text           NOT NULL UNIQUE,
    channel_id     bigint         NOT NULL REFERENCES notification_channels (id) ON DELETE CASCADE,
    -- Empty arrays match everything.
    policy_ids     text[]         NOT NULL DEFAULT '{}',
    account_ids    text[]         NOT NULL DEFAULT '{}',
    -- MITRE ATT&CK tactic or technique ids (TA0001, T1078); the alert must carry one of them.
    tags           text[]         NOT NULL DEFAULT '{}',
    min_severity   alert_severity NOT NULL DEFAULT 'info',
    -- NULL: one message per alert; otherwise one message listing the alerts of each period.
    digest_minutes integer        CHECK (digest_minutes BETWEEN 1 AND 10080),
    -- Send acknowledgements and resolutions too (PagerDuty resolve, Jira comment, ...).
    status_updates boolean        NOT NULL DEFAULT true,
    managed_by     text           NOT NULL DEFAULT 'api' CHECK (managed_by IN ('api', 'file')),
    enabled        boolean        NOT NULL DEFAULT true,
    created_at     timestamptz    NOT NULL DEFAULT now(),
    updated_at     timestamptz    NOT NULL DEFAULT now()
);
CREATE INDEX notification_routes_channel_idx ON notification_routes (channel_id);
CREATE TRIGGER notification_routes_updated_at BEFORE UPDATE ON notification_routes
    FOR EACH ROW EXECUTE FUNCTION skywarden_touch_updated_at();

CREATE TABLE notification_outbox (
    id              bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    channel_id      bigint      NOT NULL REFERENCES notification_channels (id) ON DELETE CASCADE,
    route_id        bigint      REFERENCES notification_routes (id) ON DELETE SET NULL,
    event           text        NOT NULL CHECK (event IN ('alert.opened', 'alert.status_changed', 'digest')),
    account_id      text,
    alert_id        uuid,
    -- The status an alert.status_changed message announces, who set it and why.
    alert_status    alert_status,
    status_actor    text,
    status_reason   text,
    -- The alerts a digest lists.
    digest_alerts   uuid[]      NOT NULL DEFAULT '{}',
    -- Stable per alert: receivers drop repeats of an at-least-once delivery with it.
    dedup_key       text        NOT NULL,
    state           text        NOT NULL DEFAULT 'pending' CHECK (state IN ('pending', 'sending', 'delivered', 'dead')),
    attempts        integer     NOT NULL DEFAULT 0,
    next_attempt_at timestamptz NOT NULL DEFAULT now(),
    -- A sender holds a row until then; a sender that died lets it go when it passes.
    lease_until     timestamptz,
    last_error      text,
    last_http_status integer,
    -- What the receiver called the message: a Jira issue key, a ServiceNow sys_id.
    remote_ref      text,
    created_at      timestamptz NOT NULL DEFAULT now(),
    delivered_at    timestamptz,
    FOREIGN KEY (account_id, alert_id) REFERENCES alerts (account_id, alert_id) ON DELETE CASCADE
);
-- One opening message per alert and channel, however many routes lead there.
CREATE UNIQUE INDEX notification_outbox_opened_unique ON notification_outbox (channel_id, account_id, alert_id)
    WHERE event = 'alert.opened';
CREATE INDEX notification_outbox_due_idx ON notification_outbox (next_attempt_at) WHERE state IN ('pending', 'sending');
CREATE INDEX notification_outbox_alert_idx ON notification_outbox (account_id, alert_id);
CREATE INDEX notification_outbox_state_idx ON notification_outbox (state, created_at);

-- Alerts waiting for their route's next digest.
CREATE TABLE notification_digest_items (
    route_id   bigint      NOT NULL REFERENCES notification_routes (id) ON DELETE CASCADE,
    account_id text        NOT NULL,
    alert_id   uuid        NOT NULL,
    added_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (route_id, account_id, alert_id),
    FOREIGN KEY (account_id, alert_id) REFERENCES alerts (account_id, alert_id) ON DELETE CASCADE
);
