-- 0005_audit_chain: the audit trail proper (issue 6).
--   * per-tenant audit settings on tenants;
--   * audit_events becomes a table partitioned by month on `time`, with a
--     per-tenant hash chain (chain, chain_seq, prev_hash, row_hash) and the
--     new event fields (agent, approver, cost, digests, optional content);
--   * audit_chain: the head of each tenant's chain (locked per append, so the
--     chain is assigned correctly under group commit and with many replicas);
--   * audit_checkpoints: Ed25519-signed chain heads (signed by lumkey-audit);
--   * audit_outbox: events still to be produced to Kafka, written in the same
--     transaction as the event.
-- The canonical encoding hashed into row_hash is audit_canonical() below; the
-- verifier in lumkey-audit (services/audit/audit_verify.c) recomputes it in C.

ALTER TABLE tenants
    ADD COLUMN audit_content     boolean  NOT NULL DEFAULT false,  -- store prompt/answer text (default: digests only)
    ADD COLUMN audit_fail_open   boolean  NOT NULL DEFAULT false,  -- forward even when audit cannot record (loud metric)
    ADD COLUMN audit_retention   interval NOT NULL DEFAULT interval '400 days',
    ADD COLUMN audit_siem_format text     NOT NULL DEFAULT 'ocsf' CHECK (audit_siem_format IN ('ocsf', 'ecs'));

ALTER TABLE audit_events RENAME TO audit_events_v1;
ALTER INDEX audit_events_request RENAME TO audit_events_v1_request;
ALTER INDEX audit_events_key_time RENAME TO audit_events_v1_key_time;

CREATE SEQUENCE audit_events_seq;

CREATE TABLE audit_events (
    seq                bigint NOT NULL DEFAULT nextval('audit_events_seq'), -- global order (paging cursor)
    event_id           uuid NOT NULL,
    kind               text NOT NULL,
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
    agent              text,      -- User-Agent of the caller
    approver           text,      -- who approved / rejected a held request
    cost_micros        bigint,    -- cost in millionths of a US dollar
    request_sha256     bytea,     -- SHA-256 of the request body
    answer_sha256      bytea,     -- SHA-256 of the answer body as relayed
    request_body       text,      -- only when the tenant's audit_content is on (not hashed)
    answer_body        text,      -- idem
    fallback_provider_id     text, -- the second route, when the first failed (issue 7)
    fallback_upstream_model  text,
    chain              text NOT NULL,   -- the hash chain: tenant id, '' for unauthenticated calls
    chain_seq          bigint NOT NULL, -- 1, 2, 3, ... within the chain
    prev_hash          bytea NOT NULL,  -- row_hash of chain_seq - 1 (32 zero bytes for 1)
    row_hash           bytea NOT NULL,  -- sha256(prev_hash || audit_canonical(row))
    recorded_at        timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (seq, time)
) PARTITION BY RANGE (time);
CREATE INDEX audit_events_event_id ON audit_events (event_id);
CREATE INDEX audit_events_request ON audit_events (request_id);
CREATE INDEX audit_events_chain ON audit_events (chain, chain_seq);
CREATE INDEX audit_events_key_time ON audit_events (key_id, time);

CREATE TABLE audit_chain (
    chain          text PRIMARY KEY,
    last_seq       bigint NOT NULL DEFAULT 0,
    last_hash      bytea NOT NULL DEFAULT '\x0000000000000000000000000000000000000000000000000000000000000000',
    retained_from  bigint NOT NULL DEFAULT 1   -- lowest chain_seq kept after retention
);

CREATE TABLE audit_checkpoints (
    chain         text NOT NULL,
    chain_seq     bigint NOT NULL,
    row_hash      bytea NOT NULL,
    signed_at_ms  bigint NOT NULL,
    key_id        text NOT NULL,     -- first 16 hex of the public key
    signature     bytea NOT NULL,    -- Ed25519 over audit checkpoint message (proto/audit.md)
    PRIMARY KEY (chain, chain_seq)
);

CREATE TABLE audit_outbox (
    id          bigserial PRIMARY KEY,
    event_seq   bigint NOT NULL,
    event_time  timestamptz NOT NULL,
    chain       text NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now()
);

-- One field of the canonical encoding: byte length ':' value, or '-' for NULL.
CREATE FUNCTION audit_f(v text) RETURNS text LANGUAGE sql IMMUTABLE AS
$$ SELECT coalesce(octet_length(v)::text || ':' || v, '-') $$;

-- The canonical encoding of an event (what row_hash covers). Content columns
-- are not covered (their digests are), so content can be purged without
-- breaking the chain.
CREATE FUNCTION audit_canonical(e audit_events) RETURNS text LANGUAGE sql IMMUTABLE AS $$
SELECT 'lk1|' || concat_ws('|',
    audit_f(e.chain), e.chain_seq::text, audit_f(e.event_id::text), audit_f(e.kind), audit_f(e.request_id),
    ((extract(epoch FROM e.time) * 1000000)::bigint)::text,
    audit_f(e.tenant_id), audit_f(e.key_id), audit_f(e.user_id), audit_f(e.source_ip), audit_f(e.endpoint),
    audit_f(e.provider_id), audit_f(e.model), audit_f(e.upstream_model), audit_f(e.decision),
    audit_f(e.policy_id), audit_f(e.policy_version::text), audit_f(e.rule_id), audit_f(e.http_status::text),
    audit_f(e.upstream_status::text), audit_f(e.latency_us::text), audit_f(e.prompt_tokens::text),
    audit_f(e.completion_tokens::text), audit_f(e.total_tokens::text), audit_f(e.error_code),
    audit_f(e.trace_id), audit_f(e.stream::text), audit_f(e.agent), audit_f(e.approver),
    audit_f(e.cost_micros::text), audit_f(encode(e.request_sha256, 'hex')), audit_f(encode(e.answer_sha256, 'hex')),
    audit_f(e.fallback_provider_id), audit_f(e.fallback_upstream_model))
$$;

-- Monthly partitions from the month of p_from, p_months ahead. Safe to run
-- from several replicas at once. Returns how many were created.
CREATE FUNCTION audit_ensure_partitions(p_from timestamptz, p_months int) RETURNS int LANGUAGE plpgsql AS $$
DECLARE
    m date := date_trunc('month', p_from AT TIME ZONE 'UTC')::date;
    n int := 0;
    name text;
BEGIN
    FOR i IN 0..p_months LOOP
        name := 'audit_events_' || to_char(m, 'YYYYMM');
        IF to_regclass(name) IS NULL THEN
            BEGIN
                EXECUTE format('CREATE TABLE %I PARTITION OF audit_events FOR VALUES FROM (%L) TO (%L)', name,
                               m::text || ' 00:00:00+00', (m + interval '1 month')::date::text || ' 00:00:00+00');
                n := n + 1;
            EXCEPTION WHEN duplicate_table OR unique_violation THEN
                NULL;
            END;
        END IF;
        m := (m + interval '1 month')::date;
    END LOOP;
    RETURN n;
END $$;

-- Appends one event to its tenant's chain, once (idempotent on event_id).
-- Returns the event's global seq, its chain_seq and the tenant's fail-open
-- setting. p_outbox: also queue it for Kafka.
CREATE FUNCTION audit_append(
    p_event_id uuid, p_kind text, p_request_id text, p_time_ms bigint, p_tenant text, p_key text,
    p_user text, p_ip text, p_ep text, p_prov text, p_model text, p_umodel text, p_dec text, p_pol text,
    p_pver bigint, p_rule text, p_http int, p_ups int, p_lat bigint, p_ptok bigint, p_ctok bigint,
    p_ttok bigint, p_code text, p_trace text, p_stream boolean, p_agent text, p_approver text,
    p_cost bigint, p_req_sha bytea, p_ans_sha bytea, p_req_body text, p_ans_body text, p_outbox boolean,
    p_prov2 text DEFAULT NULL, p_umodel2 text DEFAULT NULL,
    OUT o_seq bigint, OUT o_chain_seq bigint, OUT o_fail_open boolean)
LANGUAGE plpgsql AS $$
DECLARE
    c text := coalesce(p_tenant, '');
    h audit_chain;
    r audit_events;
    content boolean := false;
BEGIN
    SELECT coalesce(t.audit_fail_open, false), coalesce(t.audit_content, false)
      INTO o_fail_open, content FROM tenants t WHERE t.id = c;
    o_fail_open := coalesce(o_fail_open, false);
    SELECT e.seq, e.chain_seq INTO o_seq, o_chain_seq FROM audit_events e WHERE e.event_id = p_event_id LIMIT 1;
    IF FOUND THEN RETURN; END IF;
    INSERT INTO audit_chain (chain) VALUES (c) ON CONFLICT DO NOTHING;
    SELECT * INTO h FROM audit_chain WHERE chain = c FOR UPDATE;
    -- under the lock: another replica may have stored the same event meanwhile
    SELECT e.seq, e.chain_seq INTO o_seq, o_chain_seq FROM audit_events e WHERE e.event_id = p_event_id LIMIT 1;
    IF FOUND THEN RETURN; END IF;
    r.seq := nextval('audit_events_seq');
    r.event_id := p_event_id; r.kind := p_kind; r.request_id := p_request_id;
    r.time := CASE WHEN p_time_ms > 0 THEN timestamptz 'epoch' + p_time_ms * interval '1 millisecond'
                   ELSE date_trunc('milliseconds', now()) END;
    r.tenant_id := p_tenant; r.key_id := p_key; r.user_id := p_user; r.source_ip := p_ip;
    r.endpoint := p_ep; r.provider_id := p_prov; r.model := p_model; r.upstream_model := p_umodel;
    r.decision := p_dec; r.policy_id := p_pol; r.policy_version := p_pver; r.rule_id := p_rule;
    r.http_status := p_http; r.upstream_status := p_ups; r.latency_us := p_lat; r.prompt_tokens := p_ptok;
    r.completion_tokens := p_ctok; r.total_tokens := p_ttok; r.error_code := p_code; r.trace_id := p_trace;
    r.stream := p_stream; r.agent := p_agent; r.approver := p_approver; r.cost_micros := p_cost;
    r.request_sha256 := p_req_sha; r.answer_sha256 := p_ans_sha;
    r.fallback_provider_id := p_prov2; r.fallback_upstream_model := p_umodel2;
    IF content THEN r.request_body := p_req_body; r.answer_body := p_ans_body; END IF;
    r.chain := c; r.chain_seq := h.last_seq + 1; r.prev_hash := h.last_hash;
    r.row_hash := sha256(r.prev_hash || convert_to(audit_canonical(r), 'UTF8'));
    r.recorded_at := now();
    INSERT INTO audit_events SELECT r.*;
    UPDATE audit_chain SET last_seq = r.chain_seq, last_hash = r.row_hash WHERE chain = c;
    IF p_outbox THEN
        INSERT INTO audit_outbox (event_seq, event_time, chain) VALUES (r.seq, r.time, c);
    END IF;
    o_seq := r.seq; o_chain_seq := r.chain_seq;
END $$;

-- Retention: per chain, deletes the oldest events (a prefix of the chain, so
-- what remains still verifies from its first row) older than the tenant's
-- audit_retention, then drops partitions left empty that lie wholly in the
-- past. Returns the number of events deleted.
CREATE FUNCTION audit_retention_run() RETURNS bigint LANGUAGE plpgsql AS $$
DECLARE
    ch record;
    upto bigint;
    n bigint;
    total bigint := 0;
    p record;
    empty boolean;
BEGIN
    FOR ch IN SELECT a.chain, coalesce(t.audit_retention, interval '400 days') AS keep
                FROM audit_chain a LEFT JOIN tenants t ON t.id = a.chain LOOP
        SELECT max(chain_seq) INTO upto FROM audit_events WHERE chain = ch.chain AND time < now() - ch.keep;
        CONTINUE WHEN upto IS NULL;
        DELETE FROM audit_events WHERE chain = ch.chain AND chain_seq <= upto;
        GET DIAGNOSTICS n = ROW_COUNT;
        total := total + n;
        UPDATE audit_chain SET retained_from = greatest(retained_from, upto + 1) WHERE chain = ch.chain;
    END LOOP;
    FOR p IN SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
               WHERE i.inhparent = 'audit_events'::regclass AND c.relname ~ '^audit_events_[0-9]{6}$'
                 AND to_date(substring(c.relname FROM 14), 'YYYYMM') + interval '1 month'
                     < (now() AT TIME ZONE 'UTC') - interval '1 month' LOOP
        EXECUTE format('SELECT NOT EXISTS (SELECT 1 FROM %I)', p.relname) INTO empty;
        IF empty THEN EXECUTE format('DROP TABLE %I', p.relname); END IF;
    END LOOP;
    RETURN total;
END $$;

-- SIEM shapes of one event (what lumkey-audit produces to Kafka, one per
-- message): OCSF API Activity (class 6003) by default, ECS as a tenant setting.
CREATE FUNCTION audit_allowed(e audit_events) RETURNS boolean LANGUAGE sql IMMUTABLE AS $$
SELECT e.kind <> 'request.denied' AND coalesce(e.decision, 'allow') IN ('allow', 'log', 'redact', 'approved')
$$;

CREATE FUNCTION audit_ocsf(e audit_events) RETURNS text LANGUAGE sql STABLE AS $$
SELECT jsonb_strip_nulls(jsonb_build_object(
    'class_uid', 6003, 'class_name', 'API Activity', 'category_uid', 6, 'category_name', 'Application Activity',
    'activity_id', a.id, 'activity_name', a.name, 'type_uid', 600300 + a.id,
    'time', (extract(epoch FROM e.time) * 1000)::bigint,
    'severity_id', CASE WHEN audit_allowed(e) THEN 1 ELSE 3 END,
    'status_id', CASE WHEN audit_allowed(e) AND coalesce(e.http_status, 200) < 400 THEN 1 ELSE 2 END,
    'status_code', e.http_status::text,
    'actor', jsonb_build_object('user', jsonb_build_object('uid', e.user_id, 'credential_uid', e.key_id),
                                'app_name', e.agent),
    'api', jsonb_build_object('operation', coalesce(e.endpoint, e.kind),
                              'request', jsonb_build_object('uid', e.request_id),
                              'response', jsonb_build_object('code', e.http_status)),
    'src_endpoint', jsonb_build_object('ip', e.source_ip),
    'http_request', jsonb_build_object('user_agent', e.agent, 'uid', e.request_id),
    'ai_model', jsonb_build_object('model_name', coalesce(e.upstream_model, e.model), 'ai_provider', e.provider_id),
    'metadata', jsonb_build_object('version', '1.3.0', 'uid', e.event_id, 'correlation_uid', e.request_id,
                                   'sequence', e.chain_seq, 'tenant_uid', e.tenant_id,
                                   'product', jsonb_build_object('name', 'Lumkey', 'vendor_name', 'Lumkey')),
    'unmapped', jsonb_build_object('event_uid', e.event_id, 'kind', e.kind, 'decision', e.decision,
        'policy_id', e.policy_id, 'policy_version', e.policy_version, 'rule_id', e.rule_id,
        'requested_model', e.model, 'upstream_status', e.upstream_status, 'latency_us', e.latency_us,
        'prompt_tokens', e.prompt_tokens, 'completion_tokens', e.completion_tokens, 'total_tokens', e.total_tokens,
        'cost_micros', e.cost_micros, 'error_code', e.error_code, 'trace_id', e.trace_id, 'stream', e.stream,
        'approver', e.approver, 'request_sha256', encode(e.request_sha256, 'hex'),
        'answer_sha256', encode(e.answer_sha256, 'hex'), 'chain_seq', e.chain_seq,
        'row_hash', encode(e.row_hash, 'hex'))))::text
FROM (SELECT CASE WHEN e.kind LIKE 'request.%' OR e.kind ~ '\.(create|rotate)$' THEN 1
                  WHEN e.kind ~ '\.(get|list|query|verify|status)$' THEN 2
                  WHEN e.kind ~ '\.(update|replace_credential)$' THEN 3
                  WHEN e.kind ~ '\.(revoke|delete)$' THEN 4 ELSE 99 END AS id) i,
     LATERAL (SELECT i.id, CASE i.id WHEN 1 THEN 'Create' WHEN 2 THEN 'Read' WHEN 3 THEN 'Update'
                                     WHEN 4 THEN 'Delete' ELSE 'Other' END AS name) a
$$;

CREATE FUNCTION audit_ecs(e audit_events) RETURNS text LANGUAGE sql STABLE AS $$
SELECT jsonb_strip_nulls(jsonb_build_object(
    '@timestamp', to_char(e.time AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"'),
    'event', jsonb_build_object('id', e.event_id, 'kind', 'event', 'category', jsonb_build_array('api'),
        'type', jsonb_build_array(CASE WHEN audit_allowed(e) THEN 'allowed' ELSE 'denied' END),
        'action', e.kind, 'sequence', e.chain_seq,
        'outcome', CASE WHEN e.http_status IS NULL THEN 'unknown' WHEN e.http_status < 400 THEN 'success'
                        ELSE 'failure' END,
        'duration', e.latency_us * 1000),
    'user', jsonb_build_object('id', e.user_id), 'source', jsonb_build_object('ip', e.source_ip),
    'user_agent', jsonb_build_object('original', e.agent), 'trace', jsonb_build_object('id', e.trace_id),
    'http', jsonb_build_object('request', jsonb_build_object('id', e.request_id),
                               'response', jsonb_build_object('status_code', e.http_status)),
    'gen_ai', jsonb_build_object('system', e.provider_id,
        'request', jsonb_build_object('model', e.model), 'response', jsonb_build_object('model', e.upstream_model),
        'usage', jsonb_build_object('input_tokens', e.prompt_tokens, 'output_tokens', e.completion_tokens)),
    'lumkey', jsonb_build_object('tenant', e.tenant_id, 'key_id', e.key_id, 'decision', e.decision,
        'policy_id', e.policy_id, 'policy_version', e.policy_version, 'rule_id', e.rule_id,
        'approver', e.approver, 'cost_micros', e.cost_micros, 'error_code', e.error_code,
        'request_sha256', encode(e.request_sha256, 'hex'), 'answer_sha256', encode(e.answer_sha256, 'hex'),
        'chain_seq', e.chain_seq, 'row_hash', encode(e.row_hash, 'hex'))))::text
$$;

-- Move what was recorded before this migration into the chained table.
DO $$
DECLARE
    e record;
BEGIN
    PERFORM audit_ensure_partitions(coalesce((SELECT min(time) FROM audit_events_v1), now()) - interval '1 month',
        (SELECT (extract(year FROM age(now(), coalesce(min(time), now()))) * 12 +
                 extract(month FROM age(now(), coalesce(min(time), now()))))::int + 4 FROM audit_events_v1));
    FOR e IN SELECT * FROM audit_events_v1 ORDER BY seq LOOP
        PERFORM audit_append(e.event_id, e.kind, e.request_id,
            (extract(epoch FROM e.time) * 1000)::bigint, e.tenant_id, e.key_id, e.user_id, e.source_ip,
            e.endpoint, e.provider_id, e.model, e.upstream_model, e.decision, e.policy_id, e.policy_version,
            e.rule_id, e.http_status, e.upstream_status, e.latency_us, e.prompt_tokens, e.completion_tokens,
            e.total_tokens, e.error_code, e.trace_id, e.stream, NULL, NULL, NULL, NULL, NULL, NULL, NULL, false);
    END LOOP;
END $$;
DROP TABLE audit_events_v1;
