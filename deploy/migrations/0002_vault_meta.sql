-- 0002_vault_meta: facts the vault records about itself, e.g. the key-check
-- value of the master key (a keyed hash of a constant: tells a wrong master
-- key at start, reveals nothing about the key).
CREATE TABLE vault_meta (
    name        text PRIMARY KEY,
    value       text NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now()
);

-- Lookups on the request path.
CREATE INDEX providers_tenant ON providers (tenant_id, created_at);
