-- Automatic containment tells every route an alert matches of what it did: its own event,
-- which routes receive whatever their status-update and digest settings (docs/response.md).
ALTER TABLE notification_outbox DROP CONSTRAINT notification_outbox_event_check;
ALTER TABLE notification_outbox ADD CONSTRAINT notification_outbox_event_check
    CHECK (event IN ('alert.opened', 'alert.status_changed', 'digest', 'alert.automatic_action'));
