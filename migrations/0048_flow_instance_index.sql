-- Incident linking reads the interfaces an instance's flow records name (src/alerts/link_keys.rs,
-- `interface_keys`: instance → its ENIs → the flows to the intruder). Without an index it read
-- every flow record of the account over the instance key's window (78 ms over 600k records in
-- 3 accounts, growing with the table), once per alert naming an instance. Partial: only custom
-- formats with `instance-id` fill it, so AWS's default v2 records (no instance id) cost nothing
-- to insert.
CREATE INDEX flow_records_instance_idx ON flow_records (account_id, instance_id, bucket_time)
    WHERE instance_id IS NOT NULL;
