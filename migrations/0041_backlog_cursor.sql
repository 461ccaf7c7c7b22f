-- Paged work a detector leaves for a later run (`aws-rare-sensitive-api`: the principals of an
-- account beyond its per-run bound): the piece spans `hour` to `until` and resumes after
-- `cursor` (the last item judged, in the detector's order; '' when none was). Rows without
-- `until` are clock hours, as before.
ALTER TABLE detection_backlog ADD COLUMN until timestamptz, ADD COLUMN cursor text;

-- Work a detector dropped unevaluated (backlog pieces past their age, or the backlog of a detector
-- switched off), apart from the skips: a later run with nothing left clears a skip, not this.
ALTER TABLE detection_skips ADD COLUMN last_dropped_at timestamptz, ADD COLUMN last_dropped bigint NOT NULL DEFAULT 0,
    ADD COLUMN dropped_total bigint NOT NULL DEFAULT 0, ADD COLUMN dropped_note text;

-- Flows by the packet's own destination (`pkt-dstaddr`) where it is not the record's (a NAT
-- gateway's or load balancer's interface): `aws-flow-suspicious-destination` looks up the flows
-- to an open incident's addresses by either destination. Partial: the records whose two
-- destinations agree are found by `flow_records_dst_idx`.
CREATE INDEX IF NOT EXISTS flow_records_pkt_dst_idx ON flow_records (pkt_dstaddr, bucket_time) WHERE pkt_dstaddr <> dstaddr;

-- The handshake lookup of `skywarden_flow_opened` (migration 0033): a connection's SYN or
-- SYN-ACK on the interface, by its addresses and ports, each direction a probe of its own (one
-- condition with OR could only use the interface and time, reading every handshake of a busy
-- interface's day; `skywarden-bench flows` measures it). Partial: only records with a SYN.
CREATE INDEX IF NOT EXISTS flow_records_handshake_idx ON flow_records (interface_id, srcaddr, srcport, dstaddr, dstport, bucket_time)
    WHERE protocol = 6 AND tcp_flags & 2 = 2;

-- The same verdicts as migration 0033's, the two directions looked up apart (each by the index
-- above). A connection with itself (same address and port both ends) is found once, as ours.
CREATE OR REPLACE FUNCTION skywarden_flow_opened(p_interface text, p_time timestamptz, p_src inet, p_sport integer,
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
                SELECT bool_or(opened) FROM (
                    SELECT o.tcp_flags & 18 = 2 AS opened
                    FROM flow_records o
                    WHERE o.interface_id = p_interface AND o.srcaddr = p_src AND o.srcport = p_sport
                      AND o.dstaddr = p_dst AND o.dstport = p_dport
                      AND o.bucket_time >= p_time - interval '1 day' AND o.bucket_time <= p_time + interval '1 hour'
                      AND o.protocol = 6 AND o.tcp_flags & 2 = 2
                    UNION ALL
                    SELECT o.tcp_flags & 18 <> 2
                    FROM flow_records o
                    WHERE o.interface_id = p_interface AND o.srcaddr = p_dst AND o.srcport = p_dport
                      AND o.dstaddr = p_src AND o.dstport = p_sport
                      AND o.bucket_time >= p_time - interval '1 day' AND o.bucket_time <= p_time + interval '1 hour'
                      AND o.protocol = 6 AND o.tcp_flags & 2 = 2
                      AND NOT (p_src = p_dst AND p_sport = p_dport)
                ) AS handshake)
            END,
            p_sport IS NULL OR p_dport IS NULL OR p_dport <= p_sport)
    END
$$;

-- The reply check of `aws-flow-port-scan` (an attempt is answered when an accepted record runs
-- back between the same addresses and ports within 15 minutes): one probe per record, whatever
-- the address's traffic (by `flow_records_dst_idx` it read every record to a NAT's address in
-- the window). Ports by coalesce(-1) so a record without ports is found too; flow logs carry no
-- negative port. `skywarden-bench flows` measures the lookup and its cost to COPY.
-- The three indexes here are plain CREATE INDEX (writes to flow_records wait until the migration
-- commits; CONCURRENTLY cannot run in a migration): on a large table build them beforehand as
-- docs/network-context.md says (upgrading to migration 0041), which IF NOT EXISTS then skips.
CREATE INDEX IF NOT EXISTS flow_records_reply_idx ON flow_records (srcaddr, dstaddr, coalesce(srcport, -1), coalesce(dstport, -1), bucket_time)
    WHERE action = 'ACCEPT';
