-- 0015_holds: requests (or model answers' tool calls) held for a human
-- decision. Owned by lumkey-approval; the edge polls a hold's outcome with
-- HOLD_WAIT (proto/approval.md). Rows live here, not in the worker, so a
-- restarted worker (or a second replica) answers the next poll.

CREATE TABLE holds (
    id              text PRIMARY KEY,                 -- "hold_" + random
    tenant_id       text NOT NULL REFERENCES tenants(id),
    key_id          text NOT NULL,
    digest          bytea NOT NULL CHECK (length(digest) = 32), -- BLAKE2b-256 of the canonical request
    policy_id       text NOT NULL DEFAULT '',
    policy_version  bigint NOT NULL DEFAULT 0,
    kind            text NOT NULL DEFAULT 'request' CHECK (kind IN ('request', 'answer')),
    rule_id         text NOT NULL DEFAULT '',
    reason          text NOT NULL DEFAULT '',         -- why policy held it (never a secret)
    requester       text NOT NULL DEFAULT '',         -- the key's user: may not approve it
    agent           text NOT NULL DEFAULT '',
    model           text NOT NULL DEFAULT '',
    tool            text NOT NULL DEFAULT '',         -- kind 'answer': the held tool call
    excerpt         text NOT NULL DEFAULT '',         -- redacted, shown to approvers
    status          text NOT NULL DEFAULT 'pending'
                    CHECK (status IN ('pending', 'approved', 'rejected', 'timed_out', 'abandoned')),
    created_at      timestamptz NOT NULL DEFAULT now(),
    expires_at      timestamptz NOT NULL,             -- an approval expires with the hold
    last_poll_at    timestamptz NOT NULL DEFAULT now(), -- the waiter's last HOLD / HOLD_WAIT
    decided_at      timestamptz,
    decided_by      text NOT NULL DEFAULT '',         -- "adm_...", "slack:U...", "link", "" (timeout)
    decision_reason text NOT NULL DEFAULT ''
);
-- One open hold per (tenant, key, digest, policy version, kind): a retry joins it.
CREATE UNIQUE INDEX holds_open ON holds (tenant_id, key_id, digest, policy_id, policy_version, kind)
    WHERE status = 'pending';
CREATE INDEX holds_pending_exp ON holds (expires_at) WHERE status = 'pending';
CREATE INDEX holds_tenant_created ON holds (tenant_id, created_at DESC);
