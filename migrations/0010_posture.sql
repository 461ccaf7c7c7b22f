-- Posture: which resource types each snapshot collected (so "no trail" means none, not "never
-- looked"), posture findings with their history and suppressions, and scores per run for trends.

CREATE TABLE resource_collections (
    account_id    text        NOT NULL,
    region        text        NOT NULL,
    resource_type text        NOT NULL,
    collected_at  timestamptz NOT NULL,
    PRIMARY KEY (account_id, region, resource_type)
);

-- One row per check and resource: open while the check fails, resolved when a later evaluation
-- passes (or the resource is gone), open again if it fails again.
CREATE TABLE posture_findings (
    id               bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    account_id       text           NOT NULL,
    check_id         text           NOT NULL,
    resource_type    text           NOT NULL,
    resource_id      text           NOT NULL,
    region           text           NOT NULL,
    severity         alert_severity NOT NULL,
    status           text           NOT NULL CHECK (status IN ('open', 'resolved')),
    -- What is wrong, as the check says it.
    messages         text[]         NOT NULL,
    first_failed_at  timestamptz    NOT NULL,
    last_seen_at     timestamptz    NOT NULL,
    resolved_at      timestamptz,
    -- The configuration change (and so the CloudTrail event) that made the check fail, if known.
    change_id        bigint,
    -- The alert this finding raised, if its severity called for one.
    alert_id         uuid,
    UNIQUE (account_id, check_id, resource_type, resource_id)
);
CREATE INDEX posture_findings_status_idx ON posture_findings (status, account_id);

-- Opened, resolved, reopened: the history of each finding.
CREATE TABLE posture_finding_events (
    finding_id  bigint      NOT NULL REFERENCES posture_findings (id) ON DELETE CASCADE,
    at          timestamptz NOT NULL DEFAULT now(),
    event       text        NOT NULL CHECK (event IN ('opened', 'resolved', 'reopened', 'changed')),
    messages    text[]      NOT NULL DEFAULT '{}'
);
CREATE INDEX posture_finding_events_idx ON posture_finding_events (finding_id, at);

-- A check accepted as failing, for a resource (or every resource of an account when
-- resource_id is NULL), with a reason, until it expires.
CREATE TABLE posture_suppressions (
    id           bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    check_id     text        NOT NULL,
    account_id   text,
    resource_id  text,
    reason       text        NOT NULL,
    expires_at   timestamptz,
    created_by   text        NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT now()
);

-- Pass and fail counts per account, section and evaluation: the compliance trend.
CREATE TABLE posture_scores (
    evaluated_at timestamptz NOT NULL,
    account_id   text        NOT NULL,
    section      text        NOT NULL,
    passed       integer     NOT NULL,
    failed       integer     NOT NULL,
    suppressed   integer     NOT NULL,
    PRIMARY KEY (account_id, section, evaluated_at)
);

-- The checks as last loaded, so the API and dashboard can show titles, remediation and framework
-- controls without reading the policy files.
CREATE TABLE posture_checks (
    id            text           PRIMARY KEY,
    title         text           NOT NULL,
    description   text           NOT NULL,
    section       text           NOT NULL,
    severity      alert_severity NOT NULL,
    resource_type text           NOT NULL,
    remediation   text           NOT NULL,
    frameworks    jsonb          NOT NULL,
    mitre         text[]         NOT NULL,
    updated_at    timestamptz    NOT NULL DEFAULT now()
);
