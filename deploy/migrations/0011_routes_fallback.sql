-- 0011: model routes (alias -> provider + upstream model, optional fallback) and the audit fields
-- that name a fallback when it was used (proto/audit.md `prov2` / `umodel2`).
CREATE TABLE routes (
    id                       text PRIMARY KEY,
    tenant_id                text NOT NULL REFERENCES tenants (id),
    alias                    text NOT NULL,
    provider_id              text NOT NULL REFERENCES providers (id),
    upstream_model           text NOT NULL,
    fallback_provider_id     text REFERENCES providers (id),
    fallback_upstream_model  text,
    created_at               timestamptz NOT NULL DEFAULT now(),
    UNIQUE (tenant_id, alias),
    CHECK ((fallback_provider_id IS NULL) = (fallback_upstream_model IS NULL))
);

-- The audit columns for a used fallback (fallback_provider_id,
-- fallback_upstream_model) are part of audit_events and its hash chain
-- (0005_audit_chain.sql).
