-- 0018_hdp_issuers: the trusted HDP (Human Delegation Provenance) issuers of a
-- tenant. lumkey-policy verifies an agent's HDP-Token against the issuer whose
-- kid the token's signature names (docs/hdp.md). Public keys only: Lumkey never
-- holds an issuer's private key. Revoking keeps the row (audit trail); a new
-- issuer may then reuse the kid.

CREATE TABLE hdp_issuers (
    id          text PRIMARY KEY,                    -- "hdpi_" + 20 base62
    tenant_id   text NOT NULL REFERENCES tenants(id),
    kid         text NOT NULL CHECK (length(kid) BETWEEN 1 AND 128),
    name        text NOT NULL CHECK (length(name) BETWEEN 1 AND 128),
    public_key  bytea NOT NULL CHECK (octet_length(public_key) = 32), -- raw Ed25519
    created_by  text NOT NULL DEFAULT '',            -- admin token id
    created_at  timestamptz NOT NULL DEFAULT now(),
    revoked_at  timestamptz
);
CREATE UNIQUE INDEX hdp_issuers_active_kid ON hdp_issuers (tenant_id, kid) WHERE revoked_at IS NULL;
CREATE INDEX hdp_issuers_tenant ON hdp_issuers (tenant_id, kid, created_at DESC);
