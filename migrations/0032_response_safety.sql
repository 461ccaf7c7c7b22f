-- Response, made safe: the responder role's opt-in to the undos that grant access, undos that
-- wait for a second person, actions abandoned by a process that died, and automatic containment
-- (its dry-run records and the alerts it has judged).

-- Deployed with AllowGrantingUndo=true (deploy/skywarden-responder-role.yaml): without it the
-- undos that would grant are refused up front.
ALTER TABLE accounts ADD COLUMN responder_granting_undo boolean NOT NULL DEFAULT false;

ALTER TABLE response_actions DROP CONSTRAINT response_actions_status_check;
-- undo_awaiting_approval: applied, its undo asked for and waiting for a second person.
-- dry_run: what automatic containment would have done, in dry-run mode; nothing was called.
ALTER TABLE response_actions ADD CONSTRAINT response_actions_status_check
    CHECK (status IN ('awaiting_approval', 'planned', 'applied', 'failed', 'undone', 'undo_awaiting_approval', 'dry_run'));

ALTER TABLE response_actions
    ADD COLUMN undo_requested_by   text,
    ADD COLUMN undo_request_reason text,
    ADD COLUMN undo_requested_at   timestamptz,
    ADD COLUMN undo_approved_by    text,
    ADD COLUMN undo_approval_reason text,
    ADD COLUMN undo_approved_at    timestamptz,
    -- Set when the lease of an apply or undo ran out without its outcome being recorded.
    ADD COLUMN abandoned_at        timestamptz,
    -- The rule of policies/response.yaml behind an automatic action.
    ADD COLUMN automatic_rule      text;

CREATE INDEX response_actions_expired_leases ON response_actions (lease_expires_at) WHERE lease_owner IS NOT NULL;
CREATE INDEX response_actions_automatic ON response_actions (created_at) WHERE actor = 'automatic';

-- The alerts automatic containment has judged, each once, with what it decided.
CREATE TABLE response_auto_judged (
    alert_id    uuid        PRIMARY KEY,
    account_id  text        NOT NULL,
    judged_at   timestamptz NOT NULL DEFAULT now(),
    outcome     text        NOT NULL
);
