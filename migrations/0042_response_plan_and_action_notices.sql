-- What automatic containment did, as receivers render it (docs/response.md): the action, its
-- resource, account and region, the result and how to undo it, beside the outbox row.
ALTER TABLE notification_outbox ADD COLUMN automatic_action jsonb;

-- The plan of a revoke-principal-ingress action fixed when it is asked for (the rule ids, their
-- events, group, protocol, ports and source): approval runs exactly what the approver saw.
ALTER TABLE response_actions ADD COLUMN plan jsonb;
