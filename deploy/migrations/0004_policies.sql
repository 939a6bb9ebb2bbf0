-- 0004_policies: versioned policy documents, their attachment to keys and
-- tenants, and the budget and rate-limit ledger.

-- A policy is a name; its content lives in immutable versions. The newest
-- version is the active one (current_version), so a change is one UPDATE that
-- every worker sees on its next decision.
CREATE TABLE policies (
    id               text PRIMARY KEY,            -- "pol_" + random
    tenant_id        text NOT NULL REFERENCES tenants(id),
    name             text NOT NULL,
    current_version  int NOT NULL,
    created_at       timestamptz NOT NULL DEFAULT now(),
    updated_at       timestamptz NOT NULL DEFAULT now(),
    UNIQUE (tenant_id, name)
);

CREATE TABLE policy_versions (
    policy_id   text NOT NULL REFERENCES policies(id),
    version     int NOT NULL,
    document    text NOT NULL,                    -- the JSON document as submitted (validated before insert)
    digest      text NOT NULL,                    -- sha256 hex of document
    diff        jsonb NOT NULL DEFAULT '{}',      -- against the previous version: rules added / removed / changed, settings changed
    created_by  text NOT NULL,                    -- acting admin token id
    created_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (policy_id, version)
);

ALTER TABLE api_keys ADD COLUMN policy_id text REFERENCES policies(id);
ALTER TABLE tenants ADD COLUMN default_policy_id text REFERENCES policies(id);

-- Budgets and rate limits: one counter per (scope, kind, window). A request
-- reserves its maximum first (an UPDATE that only succeeds while the counter
-- stays within the limit: row locks make concurrent reservations from any
-- number of policy workers exact), then settles to the real usage.
--   scope: "key:<key id>" or "team:<tenant>/<team>"
--   kind:  "req" (requests/minute), "tok" (tokens/minute), "usd_day", "usd_month" (micro-USD)
CREATE TABLE budget_counters (
    scope         text NOT NULL,
    kind          text NOT NULL,
    window_start  timestamptz NOT NULL,
    used          bigint NOT NULL DEFAULT 0,
    PRIMARY KEY (scope, kind, window_start)
);

-- What each request reserved, so that settling knows what to give back. A
-- reservation never settled (edge died) keeps its maximum: budgets err on the
-- side of not overshooting.
CREATE TABLE budget_reservations (
    request_id    text PRIMARY KEY,
    scope         text NOT NULL,
    tok_window    timestamptz,
    day_window    timestamptz,
    month_window  timestamptz,
    tokens        bigint NOT NULL DEFAULT 0,      -- reserved tokens (tokens/minute)
    microusd      bigint NOT NULL DEFAULT 0,      -- reserved cost (day and month)
    model         text NOT NULL DEFAULT '',
    price_in      double precision,                -- USD per million input tokens (NULL: no price)
    price_out     double precision,                -- USD per million output tokens
    settled_at    timestamptz,
    created_at    timestamptz NOT NULL DEFAULT now()
);
