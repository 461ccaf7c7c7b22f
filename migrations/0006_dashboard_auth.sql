-- Dashboard users and sessions, failed-login accounting, and Skywarden's own audit log.

CREATE TABLE users (
    username       text        PRIMARY KEY,
    -- Argon2id, PHC string format.
    password_hash  text        NOT NULL,
    role           api_role    NOT NULL,
    created_at     timestamptz NOT NULL DEFAULT now(),
    disabled_at    timestamptz
);

-- A session is found by the SHA-256 of its cookie value: the table never holds a usable cookie.
CREATE TABLE sessions (
    session_hash   bytea       PRIMARY KEY,
    -- `user:NAME` or `token:ID` (a dashboard login with an API token).
    principal      text        NOT NULL,
    display_name   text        NOT NULL,
    role           api_role    NOT NULL,
    csrf_token     text        NOT NULL,
    created_at     timestamptz NOT NULL DEFAULT now(),
    expires_at     timestamptz NOT NULL,
    last_seen_at   timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX sessions_expiry_idx ON sessions (expires_at);

-- Failed logins, per user name and per client address, for rate limiting.
CREATE TABLE login_failures (
    id          bigserial   PRIMARY KEY,
    username    text        NOT NULL,
    client      text        NOT NULL,
    at          timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX login_failures_user_idx ON login_failures (username, at);
CREATE INDEX login_failures_client_idx ON login_failures (client, at);

-- What people did to Skywarden itself: logins, tokens, users, accounts, alert triage.
CREATE TABLE audit_log (
    id          bigserial   PRIMARY KEY,
    at          timestamptz NOT NULL DEFAULT now(),
    actor       text        NOT NULL,
    action      text        NOT NULL,
    target      text,
    client      text,
    details     jsonb       NOT NULL DEFAULT '{}'
);
CREATE INDEX audit_log_at_idx ON audit_log (at);
