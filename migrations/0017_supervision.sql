-- Supervision of the pollers: a job whose run panics (a bug, or an input nothing expected)
-- counts the panics in a row; at `jobs::PARK_AFTER_PANICS` (3) it is parked: no worker claims it
-- until someone asks ("poll now"), so one bad job cannot keep crashing runs. A success or an
-- ordinary failure ends the run of panics.
ALTER TABLE poll_jobs
    ADD COLUMN consecutive_panics integer NOT NULL DEFAULT 0,
    -- When it was parked; NULL while it runs as usual. "Poll now" un-parks it for one more try
    -- (the count of panics is kept, so one more panic parks it again).
    ADD COLUMN parked_at          timestamptz;

-- What the last posture evaluation a worker ran after a snapshot could not do, by account:
-- checks that failed or panicked on a resource, or an evaluation that stopped. Read by
-- /metrics (`skywarden_posture_check_problems`); 0 problems once an evaluation is clean again.
CREATE TABLE posture_evaluation_problems (
    account_id     text        PRIMARY KEY,
    evaluated_at   timestamptz NOT NULL,
    problems       integer     NOT NULL,
    -- The first problem's text, for a glance; the worker's log has every one.
    first_problem  text
);
