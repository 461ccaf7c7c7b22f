-- Response: the responder role of an account (optional, separate from the read-only role), and
-- every containment action Skywarden plans, applies or undoes, with the state it found before
-- and left after.

ALTER TABLE accounts
    ADD COLUMN responder_role_arn    text,
    ADD COLUMN responder_external_id text,
    ADD COLUMN responder_set_at      timestamptz;

CREATE TABLE response_actions (
    id               uuid        PRIMARY KEY DEFAULT gen_random_uuid(),
    account_id       text        NOT NULL,
    region           text        NOT NULL,
    kind             text        NOT NULL,
    target           text        NOT NULL,
    -- The resource the lease covers: two actions on one resource never run at once.
    resource         text        NOT NULL,
    params           jsonb       NOT NULL,
    alert_id         uuid,
    -- planned: recorded before the first write call; applied; failed (state_after holds what
    -- it changed before failing); undone.
    -- awaiting_approval: its kind needs a second person's approval (response_approval_kinds).
    status           text        NOT NULL
                                 CHECK (status IN ('awaiting_approval', 'planned', 'applied', 'failed', 'undone')),
    state_before     jsonb,
    state_after      jsonb,
    -- Every AWS call made for it, with its answer (no secrets).
    calls            jsonb       NOT NULL DEFAULT '[]',
    error            text,
    actor            text        NOT NULL,
    reason           text        NOT NULL,
    idempotency_key  text        NOT NULL UNIQUE,
    lease_owner      text,
    lease_expires_at timestamptz,
    approved_by      text,
    approval_reason  text,
    approved_at      timestamptz,
    undo_state       jsonb,
    undone_by        text,
    undo_reason      text,
    undo_error       text,
    created_at       timestamptz NOT NULL DEFAULT now(),
    applied_at       timestamptz,
    undone_at        timestamptz,
    updated_at       timestamptz NOT NULL DEFAULT now()
);

CREATE INDEX response_actions_account ON response_actions (account_id, created_at DESC);
CREATE INDEX response_actions_resource ON response_actions (account_id, resource) WHERE lease_owner IS NOT NULL;
CREATE INDEX response_actions_alert ON response_actions (alert_id) WHERE alert_id IS NOT NULL;

CREATE TRIGGER response_actions_updated_at BEFORE UPDATE ON response_actions
    FOR EACH ROW EXECUTE FUNCTION skywarden_touch_updated_at();

-- The kinds of action that need a second person's approval before they run.
CREATE TABLE response_approval_kinds (
    kind    text        PRIMARY KEY,
    set_by  text        NOT NULL,
    set_at  timestamptz NOT NULL DEFAULT now()
);
