-- Alert deduplication, evidence and triage history.

-- One alert per policy, account and dedup key (the principal or resource, and the time window).
CREATE UNIQUE INDEX alerts_dedup_unique ON alerts (account_id, policy_id, dedup_key);
DROP INDEX alerts_dedup_idx;

-- The events behind an alert. Counting rows here (not incrementing a counter) keeps
-- re-evaluation of the same events idempotent.
CREATE TABLE alert_evidence (
    account_id  text        NOT NULL,
    alert_id    uuid        NOT NULL,
    event_id    text        NOT NULL,
    event_time  timestamptz NOT NULL,
    PRIMARY KEY (account_id, alert_id, event_id),
    FOREIGN KEY (account_id, alert_id) REFERENCES alerts (account_id, alert_id) ON DELETE CASCADE
);

-- Who changed an alert's status, when and why.
CREATE TABLE alert_status_changes (
    account_id     text         NOT NULL,
    alert_id       uuid         NOT NULL,
    changed_at     timestamptz  NOT NULL DEFAULT now(),
    old_status     alert_status NOT NULL,
    new_status     alert_status NOT NULL,
    snoozed_until  timestamptz,
    actor          text         NOT NULL,
    reason         text         NOT NULL,
    FOREIGN KEY (account_id, alert_id) REFERENCES alerts (account_id, alert_id) ON DELETE CASCADE
);
CREATE INDEX alert_status_changes_alert_idx ON alert_status_changes (account_id, alert_id, changed_at);

ALTER TABLE alerts ADD COLUMN title_detail text;
ALTER TABLE alerts ADD COLUMN session_key text;
CREATE INDEX alerts_session_idx ON alerts (account_id, session_key) WHERE session_key IS NOT NULL;

-- Detection evaluates what each import or poll stored.
CREATE INDEX cloudtrail_events_ingested_idx ON cloudtrail_events (ingested_at);
CREATE INDEX flow_records_ingested_idx ON flow_records (ingested_at);
