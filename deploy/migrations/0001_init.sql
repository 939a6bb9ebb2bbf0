-- 0001_init: tenants, admin tokens, providers and their encrypted credentials,
-- Lumkey keys (hashes only) and the audit event table.

CREATE TABLE tenants (
    id          text PRIMARY KEY,
    name        text NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now()
);
INSERT INTO tenants (id, name) VALUES ('default', 'Default tenant');

-- Admin tokens: same format as keys (lk_adm_...), stored only as keyed BLAKE2b.
CREATE TABLE admin_tokens (
    id          text PRIMARY KEY,                 -- "adm_" + public id of the token
    tenant_id   text NOT NULL REFERENCES tenants(id),
    hash        bytea NOT NULL UNIQUE,            -- keyed BLAKE2b-256, pepper held by the vault
    role        text NOT NULL CHECK (role IN ('admin', 'approver', 'auditor')),
    name        text NOT NULL DEFAULT '',
    created_at  timestamptz NOT NULL DEFAULT now(),
    revoked_at  timestamptz
);

-- Providers: the admin allowlist of upstream base URLs.
CREATE TABLE providers (
    id          text PRIMARY KEY,                 -- "prov_" + random
    tenant_id   text NOT NULL REFERENCES tenants(id),
    name        text NOT NULL,
    kind        text NOT NULL CHECK (kind IN ('openai', 'anthropic', 'openai-compatible')),
    base_url    text NOT NULL,                    -- e.g. https://api.openai.com/v1
    models      text[] NOT NULL DEFAULT '{}',     -- models served; empty = any model
    created_at  timestamptz NOT NULL DEFAULT now(),
    UNIQUE (tenant_id, name)
);

-- Provider credentials, envelope-encrypted by the vault. The newest row of a
-- provider is its current credential.
CREATE TABLE credentials (
    id              text PRIMARY KEY,             -- "cred_" + random
    tenant_id       text NOT NULL REFERENCES tenants(id),
    provider_id     text NOT NULL REFERENCES providers(id),
    format_version  int NOT NULL,
    kek_id          text NOT NULL,
    kek_version     int NOT NULL,
    wrapped_dek     bytea NOT NULL,               -- nonce || AEAD(DEK) under the KEK
    nonce           bytea NOT NULL,               -- XChaCha20-Poly1305 nonce of the secret
    ciphertext      bytea NOT NULL,               -- AEAD(secret) under the DEK, AD binds the row
    fingerprint     text NOT NULL,                -- last four characters, for display
    created_at      timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX credentials_provider ON credentials (provider_id, created_at DESC);

-- Lumkey keys given to agents: only the keyed hash is stored.
CREATE TABLE api_keys (
    id              text PRIMARY KEY,             -- "key_" + public id of the key
    tenant_id       text NOT NULL REFERENCES tenants(id),
    hash            bytea NOT NULL UNIQUE,
    env             text NOT NULL CHECK (env IN ('live', 'test')),
    name            text NOT NULL DEFAULT '',
    user_id         text NOT NULL DEFAULT '',
    metadata        jsonb NOT NULL DEFAULT '{}',
    allowed_models  text[] NOT NULL DEFAULT '{}', -- empty = any model
    expires_at      timestamptz,
    revoked_at      timestamptz,
    created_at      timestamptz NOT NULL DEFAULT now()
);

-- Audit events. Written only by lumkey-audit. event_id makes retries idempotent.
CREATE TABLE audit_events (
    seq                bigserial PRIMARY KEY,
    event_id           uuid NOT NULL UNIQUE,
    kind               text NOT NULL,             -- request.accepted | request.completed | request.denied
    request_id         text NOT NULL,
    time               timestamptz NOT NULL,
    tenant_id          text,
    key_id             text,
    user_id            text,
    source_ip          text,
    endpoint           text,
    provider_id        text,
    model              text,
    upstream_model     text,
    decision           text,
    policy_id          text,
    policy_version     bigint,
    rule_id            text,
    http_status        int,
    upstream_status    int,
    latency_us         bigint,
    prompt_tokens      bigint,
    completion_tokens  bigint,
    total_tokens       bigint,
    error_code         text,
    trace_id           text,
    stream             boolean,
    recorded_at        timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX audit_events_request ON audit_events (request_id);
CREATE INDEX audit_events_key_time ON audit_events (key_id, time);
