-- API tokens: shown once when created, stored as a SHA-256 hash of their secret part.
CREATE TYPE api_role AS ENUM ('viewer', 'analyst', 'admin');

CREATE TABLE api_tokens (
    token_id      text         PRIMARY KEY,
    name          text         NOT NULL,
    role          api_role     NOT NULL,
    secret_hash   bytea        NOT NULL,
    created_at    timestamptz  NOT NULL DEFAULT now(),
    last_used_at  timestamptz,
    revoked_at    timestamptz
);
