-- AWS Organizations and central log archives. Both are entries of `accounts`, so their jobs,
-- roles, external IDs, status and "poll now" work as an account's do:
--   'organization': the role in the management (or delegated-admin) account that lists the
--     members (account_id `organization:<that account>`); its job onboards and suspends them;
--   'log-archive': the role in the account holding an organization's trail bucket (account_id
--     `log-archive:<bucket>`); its one job reads every member's trail files.
ALTER TABLE accounts
    ADD COLUMN kind             text NOT NULL DEFAULT 'account'
        CHECK (kind IN ('account', 'organization', 'log-archive')),
    -- An organization's member role name (SkywardenReadOnly), the same in every member.
    ADD COLUMN member_role_name text,
    -- A member onboarded from an organization: the organization's entry, and the member's
    -- status as ListAccounts last gave it (ACTIVE, SUSPENDED, PENDING_CLOSURE, or REMOVED when
    -- no longer listed). A member not ACTIVE is not polled; its data stays.
    ADD COLUMN organization     text,
    ADD COLUMN member_status    text;

CREATE INDEX accounts_organization ON accounts (organization) WHERE organization IS NOT NULL;
