-- Onboarded accounts, the poll jobs that keep them current, and the inventory with its history.

ALTER TABLE accounts
    ADD COLUMN role_arn          text,
    -- Sent on every AssumeRole; AWS does not treat it as a secret, but we show it only on
    -- onboarding and to admins.
    ADD COLUMN external_id       text,
    ADD COLUMN regions           text[]  NOT NULL DEFAULT '{}',
    -- Overrides the AWS endpoint for this account (emulators, VPC endpoints).
    ADD COLUMN endpoint_url      text,
    -- Where trail files and flow logs are: trail_bucket, trail_prefix, flow_bucket,
    -- flow_prefix, flow_log_groups.
    ADD COLUMN sources           jsonb   NOT NULL DEFAULT '{}',
    ADD COLUMN enabled           boolean NOT NULL DEFAULT true,
    ADD COLUMN verified_at       timestamptz,
    ADD COLUMN verify_error      text;

-- One job per (account, region, source, target). Workers lease due jobs with
-- FOR UPDATE SKIP LOCKED; a lease that expires (a dead worker) makes the job due again.
CREATE TABLE poll_jobs (
    job_id               bigserial PRIMARY KEY,
    account_id           text        NOT NULL REFERENCES accounts ON DELETE CASCADE,
    region               text        NOT NULL,
    source               text        NOT NULL,
    -- Bucket and prefix, or log group; '' when the source has none.
    target               text        NOT NULL DEFAULT '',
    interval_seconds     integer     NOT NULL,
    enabled              boolean     NOT NULL DEFAULT true,
    next_run_at          timestamptz NOT NULL DEFAULT now(),
    lease_owner          text,
    lease_expires_at     timestamptz,
    -- Updated in the same transaction as the data it covers.
    checkpoint           jsonb       NOT NULL DEFAULT '{}',
    last_started_at      timestamptz,
    last_success_at      timestamptz,
    last_error           text,
    last_error_at        timestamptz,
    consecutive_failures integer     NOT NULL DEFAULT 0,
    -- Time of the newest data covered by the checkpoint.
    covered_until        timestamptz,
    items_total          bigint      NOT NULL DEFAULT 0,
    throttled_total      bigint      NOT NULL DEFAULT 0,
    created_at           timestamptz NOT NULL DEFAULT now(),
    updated_at           timestamptz NOT NULL DEFAULT now(),
    UNIQUE (account_id, region, source, target)
);
CREATE INDEX poll_jobs_due_idx ON poll_jobs (next_run_at) WHERE enabled;
CREATE TRIGGER poll_jobs_updated_at BEFORE UPDATE ON poll_jobs
    FOR EACH ROW EXECUTE FUNCTION skywarden_touch_updated_at();

-- S3 objects already ingested, recorded in the transaction that stored their records.
CREATE TABLE ingested_objects (
    account_id   text        NOT NULL,
    bucket       text        NOT NULL,
    object_key   text        NOT NULL,
    etag         text        NOT NULL,
    size         bigint      NOT NULL,
    records      bigint      NOT NULL,
    errors       text[]      NOT NULL DEFAULT '{}',
    ingested_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (account_id, bucket, object_key, etag)
);

-- Replaced by resources + resource_versions; never written by an earlier release.
DROP TABLE resource_snapshots;

-- The current state of every resource seen by a snapshot.
CREATE TABLE resources (
    account_id     text        NOT NULL,
    resource_type  text        NOT NULL,
    resource_id    text        NOT NULL,
    region         text        NOT NULL,
    arn            text,
    name           text,
    version        integer     NOT NULL,
    config         jsonb       NOT NULL,
    config_hash    bytea       NOT NULL,
    first_seen     timestamptz NOT NULL,
    last_seen      timestamptz NOT NULL,
    last_changed   timestamptz NOT NULL,
    deleted_at     timestamptz,
    PRIMARY KEY (account_id, resource_type, resource_id)
);
CREATE INDEX resources_id_idx ON resources (resource_id);
CREATE INDEX resources_region_idx ON resources (account_id, region, resource_type);

-- Every configuration a resource has had; config is NULL for the version that records its deletion.
CREATE TABLE resource_versions (
    account_id     text        NOT NULL,
    resource_type  text        NOT NULL,
    resource_id    text        NOT NULL,
    version        integer     NOT NULL,
    captured_at    timestamptz NOT NULL,
    config         jsonb,
    config_hash    bytea,
    PRIMARY KEY (account_id, resource_type, resource_id, version)
);

CREATE TYPE config_change_kind AS ENUM ('created', 'modified', 'deleted');

-- One change between two versions, with the CloudTrail event that explains it when one is found.
CREATE TABLE config_changes (
    change_id      bigserial PRIMARY KEY,
    account_id     text               NOT NULL,
    resource_type  text               NOT NULL,
    resource_id    text               NOT NULL,
    region         text               NOT NULL,
    version        integer            NOT NULL,
    kind           config_change_kind NOT NULL,
    detected_at    timestamptz        NOT NULL,
    -- The previous version's capture time: the cause happened between the two.
    previous_at    timestamptz,
    diff           jsonb              NOT NULL,
    event_time     timestamptz,
    event_id       text,
    event_name     text,
    principal_arn  text,
    source_ip      text,
    UNIQUE (account_id, resource_type, resource_id, version)
);
CREATE INDEX config_changes_resource_idx ON config_changes (account_id, resource_id, detected_at);
CREATE INDEX config_changes_time_idx ON config_changes (detected_at);
CREATE INDEX config_changes_unlinked_idx ON config_changes (detected_at) WHERE event_id IS NULL;
