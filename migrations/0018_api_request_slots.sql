-- Request slots of rate-limited AWS APIs (FilterLogEvents: 5 per second per account and region),
-- shared by every worker process: each request takes the next free slot of its API, account and
-- region, so all workers together stay within the quota.
CREATE TABLE api_request_slots (
    api        text        NOT NULL,
    account_id text        NOT NULL,
    region     text        NOT NULL,
    -- The first free slot.
    next_slot  timestamptz NOT NULL,
    PRIMARY KEY (api, account_id, region)
);
