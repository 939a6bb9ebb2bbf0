-- 0019_identity: SSO identities provisioned by SCIM 2.0 (users, groups,
-- memberships), browser sessions, and the admin token role `scim`.
-- Written only by lumkey-vault (services/vault/vault_identity.c).

ALTER TABLE admin_tokens DROP CONSTRAINT IF EXISTS admin_tokens_role_check;
ALTER TABLE admin_tokens ADD CONSTRAINT admin_tokens_role_check
    CHECK (role IN ('admin', 'approver', 'auditor', 'scim'));

CREATE TABLE scim_users (
    id            text PRIMARY KEY,                       -- "usr_" + random
    tenant_id     text NOT NULL REFERENCES tenants(id),
    user_name     text NOT NULL,
    external_id   text,
    display_name  text NOT NULL DEFAULT '',
    email         text NOT NULL DEFAULT '',               -- primary (or first) email, as given
    active        boolean NOT NULL DEFAULT true,
    resource      jsonb NOT NULL DEFAULT '{}',            -- name, emails, ... as the IdP sent them
    version       bigint NOT NULL DEFAULT 1,
    created_at    timestamptz NOT NULL DEFAULT now(),
    updated_at    timestamptz NOT NULL DEFAULT now()
);
CREATE UNIQUE INDEX scim_users_name ON scim_users (tenant_id, lower(user_name));
CREATE INDEX scim_users_email ON scim_users (lower(email));
CREATE INDEX scim_users_external ON scim_users (tenant_id, external_id);

CREATE TABLE scim_groups (
    id            text PRIMARY KEY,                       -- "grp_" + random
    tenant_id     text NOT NULL REFERENCES tenants(id),
    display_name  text NOT NULL,
    external_id   text,
    version       bigint NOT NULL DEFAULT 1,
    created_at    timestamptz NOT NULL DEFAULT now(),
    updated_at    timestamptz NOT NULL DEFAULT now()
);
CREATE UNIQUE INDEX scim_groups_name ON scim_groups (tenant_id, lower(display_name));

CREATE TABLE scim_group_members (
    group_id  text NOT NULL REFERENCES scim_groups(id) ON DELETE CASCADE,
    user_id   text NOT NULL REFERENCES scim_users(id) ON DELETE CASCADE,
    PRIMARY KEY (group_id, user_id)
);
CREATE INDEX scim_group_members_user ON scim_group_members (user_id);

-- Browser sessions of SSO users: only the keyed BLAKE2b of the session token
-- is stored (pepper held by the vault). Every use joins the user row.
CREATE TABLE sso_sessions (
    id            text PRIMARY KEY,                       -- "ses_" + random
    hash          bytea NOT NULL UNIQUE,
    tenant_id     text NOT NULL REFERENCES tenants(id),
    user_id       text NOT NULL REFERENCES scim_users(id) ON DELETE CASCADE,
    csrf          text NOT NULL,
    idle_s        int NOT NULL,
    created_at    timestamptz NOT NULL DEFAULT now(),
    last_seen_at  timestamptz NOT NULL DEFAULT now(),
    expires_at    timestamptz NOT NULL
);
CREATE INDEX sso_sessions_user ON sso_sessions (user_id);
CREATE INDEX sso_sessions_expiry ON sso_sessions (expires_at);
