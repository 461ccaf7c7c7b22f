-- Regions are discovered (ec2:DescribeRegions) instead of listed; `regions` becomes an optional
-- restriction (empty: every enabled region). Poll intervals per source, and "poll now".

ALTER TABLE accounts
    -- The regions the account has enabled, from its last discovery; NULL before the first.
    ADD COLUMN enabled_regions       text[],
    ADD COLUMN regions_discovered_at timestamptz,
    -- Intervals the account chose, in seconds by source ({"cloudtrail-lookup": 60}); sources
    -- not named use the defaults.
    ADD COLUMN poll_intervals        jsonb NOT NULL DEFAULT '{}';

-- When a user asked for a run: a job asked for while it runs runs again as soon as it ends.
ALTER TABLE poll_jobs ADD COLUMN run_requested_at timestamptz;

-- Every onboarded account gets its regions job, which creates the jobs of the regions found.
-- Accounts onboarded earlier keep their list of regions, now as a restriction.
INSERT INTO poll_jobs (account_id, region, source, target, interval_seconds)
SELECT account_id, 'global', 'regions', '', 86400 FROM accounts WHERE role_arn IS NOT NULL
ON CONFLICT (account_id, region, source, target) DO NOTHING;

-- Trails are recorded by the account-wide (global) snapshot now, one resource per trail; those
-- stored under a region by an earlier release move to `global` at the account's next snapshot.
