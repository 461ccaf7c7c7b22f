-- Core tables. Every key starts with account_id so the schema can later be distributed
-- by account (e.g. Citus) without a redesign. Events and flows are partitioned by month
-- so retention drops whole partitions.

CREATE TABLE accounts (
    account_id  text PRIMARY KEY,
    name        text,
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now()
);
CREATE TRIGGER accounts_updated_at BEFORE UPDATE ON accounts
    FOR EACH ROW EXECUTE FUNCTION skywarden_touch_updated_at();

CREATE TABLE cloudtrail_events (
    account_id       text        NOT NULL,
    event_time       timestamptz NOT NULL,
    event_id         text        NOT NULL,
    region           text,
    event_source     text,
    event_name       text,
    event_type       text,
    principal_arn    text,
    principal_type   text,
    principal_id     text,
    user_name        text,
    access_key_id    text,
    -- source_ip is set when sourceIPAddress is an address; the original text is always kept
    -- (it may be a service name such as config.amazonaws.com or an anonymised value).
    source_ip        inet,
    source_ip_text   text,
    user_agent       text,
    error_code       text,
    error_message    text,
    read_only        boolean,
    resource_ids     text[]      NOT NULL DEFAULT '{}',
    geo_country      text,
    geo_city         text,
    geo_latitude     double precision,
    geo_longitude    double precision,
    geo_asn          bigint,
    geo_as_org       text,
    raw              jsonb       NOT NULL,
    ingested_at      timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (account_id, event_time, event_id)
) PARTITION BY RANGE (event_time);

CREATE INDEX cloudtrail_events_time_idx      ON cloudtrail_events (event_time);
CREATE INDEX cloudtrail_events_name_idx      ON cloudtrail_events (event_name, event_time);
CREATE INDEX cloudtrail_events_principal_idx ON cloudtrail_events (principal_arn, event_time);
CREATE INDEX cloudtrail_events_user_idx      ON cloudtrail_events (user_name, event_time);
CREATE INDEX cloudtrail_events_source_ip_idx ON cloudtrail_events (source_ip);
CREATE INDEX cloudtrail_events_resources_idx ON cloudtrail_events USING gin (resource_ids);

CREATE TABLE flow_records (
    account_id          text        NOT NULL,
    -- Partition key: the record's start time, else its end time, else the time of the
    -- CloudWatch Logs event that carried it, else the Unix epoch (formats without times).
    bucket_time         timestamptz NOT NULL,
    -- Hash of the record's named fields, so the same record stored twice is stored once.
    record_hash         bytea       NOT NULL,
    version             smallint,
    interface_id        text,
    srcaddr             inet,
    dstaddr             inet,
    srcport             integer,
    dstport             integer,
    protocol            smallint,
    packets             bigint,
    bytes               bigint,
    start_time          timestamptz,
    end_time            timestamptz,
    action              text,
    log_status          text,
    vpc_id              text,
    subnet_id           text,
    instance_id         text,
    tcp_flags           integer,
    traffic_type        text,
    pkt_srcaddr         inet,
    pkt_dstaddr         inet,
    region              text,
    az_id               text,
    flow_direction      text,
    traffic_path        smallint,
    pkt_src_aws_service text,
    pkt_dst_aws_service text,
    src_country         text,
    dst_country         text,
    -- Fields with no column of their own (sublocation, ECS, transit gateway ...).
    extra               jsonb,
    ingested_at         timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (account_id, bucket_time, record_hash)
) PARTITION BY RANGE (bucket_time);

CREATE INDEX flow_records_time_idx    ON flow_records (bucket_time);
CREATE INDEX flow_records_src_idx     ON flow_records (srcaddr, bucket_time);
CREATE INDEX flow_records_dst_idx     ON flow_records (dstaddr, bucket_time);
CREATE INDEX flow_records_iface_idx   ON flow_records (interface_id, bucket_time);

-- Point-in-time configuration of one resource (security group, instance, role ...).
CREATE TABLE resource_snapshots (
    account_id     text        NOT NULL,
    resource_type  text        NOT NULL,
    resource_id    text        NOT NULL,
    captured_at    timestamptz NOT NULL,
    region         text,
    config_hash    bytea       NOT NULL,
    config         jsonb       NOT NULL,
    PRIMARY KEY (account_id, resource_type, resource_id, captured_at)
);
CREATE INDEX resource_snapshots_type_idx ON resource_snapshots (resource_type, captured_at);

CREATE TYPE alert_status AS ENUM ('open', 'acknowledged', 'resolved', 'dismissed', 'snoozed');
CREATE TYPE alert_severity AS ENUM ('info', 'low', 'medium', 'high', 'critical');

CREATE TABLE alerts (
    account_id     text           NOT NULL,
    alert_id       uuid           NOT NULL,
    policy_id      text           NOT NULL,
    dedup_key      text           NOT NULL,
    title          text           NOT NULL,
    severity       alert_severity NOT NULL,
    status         alert_status   NOT NULL DEFAULT 'open',
    snoozed_until  timestamptz,
    principal      text,
    source_ip      inet,
    country        text,
    resources      text[]         NOT NULL DEFAULT '{}',
    first_seen     timestamptz    NOT NULL,
    last_seen      timestamptz    NOT NULL,
    event_count    bigint         NOT NULL DEFAULT 1,
    evidence       text[]         NOT NULL DEFAULT '{}',
    mitre          text[]         NOT NULL DEFAULT '{}',
    details        jsonb          NOT NULL DEFAULT '{}',
    created_at     timestamptz    NOT NULL DEFAULT now(),
    updated_at     timestamptz    NOT NULL DEFAULT now(),
    PRIMARY KEY (account_id, alert_id)
);
CREATE INDEX alerts_status_idx ON alerts (status, last_seen);
CREATE INDEX alerts_dedup_idx  ON alerts (account_id, policy_id, dedup_key, last_seen);
CREATE TRIGGER alerts_updated_at BEFORE UPDATE ON alerts
    FOR EACH ROW EXECUTE FUNCTION skywarden_touch_updated_at();
