-- When each account was last evaluated, and the newest configuration change it had seen: a
-- finding's cause is a change made since the evaluation before it (none at the first).
CREATE TABLE posture_evaluations (
    account_id     text        NOT NULL,
    evaluated_at   timestamptz NOT NULL,
    max_change_id  bigint,
    PRIMARY KEY (account_id, evaluated_at)
);
