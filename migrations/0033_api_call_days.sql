-- The baseline of `aws-rare-sensitive-api` as a rollup: per account, identity (a role session's
-- role; an SSO permission set's session, which is one human), API and UTC day, the first and
-- last successful call (read-only calls left out). A row with empty event_source and event_name
-- marks a day with any event of the identity at all (its history). Filled at ingest, one upsert
-- per distinct key and batch; first/last are idempotent, so a re-import changes nothing.
CREATE TABLE api_call_days (
    account_id   text        NOT NULL,
    identity     text        NOT NULL,
    day          date        NOT NULL,
    event_source text        NOT NULL,
    event_name   text        NOT NULL,
    first_seen   timestamptz NOT NULL,
    last_seen    timestamptz NOT NULL,
    PRIMARY KEY (account_id, identity, day, event_source, event_name)
);

-- Whom a baseline belongs to, as `rare_api::identity` decides in Rust (the backfill only).
CREATE FUNCTION skywarden_baseline_identity(principal text) RETURNS text
LANGUAGE sql IMMUTABLE AS $$
    SELECT CASE
        WHEN principal ~ ':assumed-role/[^/]+/[^/]*$' AND principal !~ ':assumed-role/AWSReservedSSO_'
            THEN regexp_replace(principal, '/[^/]*$', '')
        ELSE principal
    END
$$;

-- The backfill from events stored before this migration runs in detection runs, a month at a
-- time (`api_rollup::backfill_step`), not here: one statement over every event would hold the
-- upgrade for hours on a large install. Until it is done, `aws-rare-sensitive-api` judges no
-- one and detection health says why. `next_month`: the month to do next (NULL: the earliest);
-- `started_at`: rows ingested from then on (by workers of the old version during the upgrade
-- too) are rolled up again at the end. Nothing to backfill: done at once.
CREATE TABLE api_call_days_backfill (
    only_row   boolean     PRIMARY KEY DEFAULT true CHECK (only_row),
    started_at timestamptz NOT NULL DEFAULT now(),
    next_month date,
    months_done integer    NOT NULL DEFAULT 0,
    done_at    timestamptz
);
INSERT INTO api_call_days_backfill (done_at)
SELECT CASE WHEN EXISTS (SELECT FROM cloudtrail_events) THEN NULL ELSE now() END;

-- Work a detector left for a later run (a per-run bound reached), by clock hour: the run that
-- finds a row here evaluates that hour again. `since`: the scope the work was left from.
CREATE TABLE detection_backlog (
    policy_id text        NOT NULL,
    hour      timestamptz NOT NULL,
    since     timestamptz,
    added_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (policy_id, hour)
);

-- What detectors skipped or deferred (a per-run bound reached), so detection health shows it:
-- the latest time and amount, and a running total for /metrics. `cleared_at`: a later run of
-- the detector had nothing left over.
CREATE TABLE detection_skips (
    policy_id       text        PRIMARY KEY,
    last_skipped_at timestamptz NOT NULL,
    last_skipped    bigint      NOT NULL,
    skipped_total   bigint      NOT NULL,
    note            text        NOT NULL,
    cleared_at      timestamptz
);

-- Whether a flow record is traffic its interface's side opened (`aws-flow-suspicious-destination`).
-- The connection's handshake decides where the records show it: the opener's SYN alone, the
-- answering side's SYN-ACK, in this record or in another of the connection (either direction,
-- the same interface, from a day before to an hour after). Only without one (the handshake not
-- logged, or not TCP) do the direction and ports decide: not ingress, and the destination port
-- not above the source port (a server's reply goes to the client's higher, ephemeral port).
-- `egress` alone never does: a server's replies leave its interface too.
CREATE FUNCTION skywarden_flow_opened(p_interface text, p_time timestamptz, p_src inet, p_sport integer,
                                      p_dst inet, p_dport integer, p_protocol smallint, p_flags integer,
                                      p_direction text)
RETURNS boolean LANGUAGE sql STABLE COST 1000 AS $$
    SELECT CASE
        WHEN p_direction = 'ingress' THEN false
        WHEN p_protocol = 6 AND p_flags & 18 = 2 THEN true
        WHEN p_protocol = 6 AND p_flags & 18 = 18 THEN false
        ELSE coalesce(
            CASE WHEN p_protocol = 6 AND p_flags IS NOT NULL AND p_sport IS NOT NULL AND p_dport IS NOT NULL THEN (
                -- Our SYN alone, or the peer's SYN-ACK: we opened it; the reverse: the peer did.
                SELECT bool_or((o.srcaddr = p_src AND o.srcport = p_sport) = (o.tcp_flags & 18 = 2))
                FROM flow_records o
                WHERE o.interface_id = p_interface
                  AND o.bucket_time >= p_time - interval '1 day' AND o.bucket_time <= p_time + interval '1 hour'
                  AND o.protocol = 6 AND o.tcp_flags & 2 = 2
                  AND ((o.srcaddr = p_src AND o.srcport = p_sport AND o.dstaddr = p_dst AND o.dstport = p_dport)
                       OR (o.srcaddr = p_dst AND o.srcport = p_dport AND o.dstaddr = p_src AND o.dstport = p_sport)))
            END,
            p_sport IS NULL OR p_dport IS NULL OR p_dport <= p_sport)
    END
$$;
