-- 0017_anomaly: issue 10 (anomaly scoring, HDP provenance).
--   * audit_events gets `anomaly` (the policy worker's score and reasons) and
--     `hdp` (the verified Human Delegation Provenance result), both JSON
--     objects copied by the edge from DECIDE_REP into the request's events;
--   * both are covered by row_hash: audit_canonical() appends them only when
--     at least one is present, so every row written before this migration
--     (both NULL) keeps its hash and still verifies. The C verifier
--     (services/audit/audit_admin.c) does the same; keep them in lockstep;
--   * audit_append() gains p_anom / p_hdp (DEFAULT NULL, at the end);
--   * the OCSF renderer puts them under unmapped.anomaly / unmapped.hdp, ECS
--     under lumkey.anomaly / lumkey.hdp;
--   * anomaly_baselines: the policy workers' online baselines (one row per
--     subject per replica; docs/policy.md "Anomaly scoring").

ALTER TABLE audit_events
    ADD COLUMN anomaly jsonb,  -- {"score":0.12,"reasons":[...],"cold":false,"n":42} (docs/policy.md)
    ADD COLUMN hdp     jsonb;  -- HDP verification result (issue 10b)

-- The canonical encoding (0005) + '|' anomaly '|' hdp when either is present.
-- jsonb::text is PostgreSQL's normalized rendering, which the C verifier reads back as is.
CREATE OR REPLACE FUNCTION audit_canonical(e audit_events) RETURNS text LANGUAGE sql IMMUTABLE AS $$
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
    || CASE WHEN e.anomaly IS NULL AND e.hdp IS NULL THEN ''
            ELSE '|' || audit_f(e.anomaly::text) || '|' || audit_f(e.hdp::text) END
$$;

DROP FUNCTION audit_append(uuid, text, text, bigint, text, text, text, text, text, text, text, text, text, text,
                           bigint, text, int, int, bigint, bigint, bigint, bigint, text, text, boolean, text, text,
                           bigint, bytea, bytea, text, text, boolean, text, text);

-- As in 0005, plus p_anom / p_hdp (JSON object text, NULL: none).
CREATE FUNCTION audit_append(
    p_event_id uuid, p_kind text, p_request_id text, p_time_ms bigint, p_tenant text, p_key text,
    p_user text, p_ip text, p_ep text, p_prov text, p_model text, p_umodel text, p_dec text, p_pol text,
    p_pver bigint, p_rule text, p_http int, p_ups int, p_lat bigint, p_ptok bigint, p_ctok bigint,
    p_ttok bigint, p_code text, p_trace text, p_stream boolean, p_agent text, p_approver text,
    p_cost bigint, p_req_sha bytea, p_ans_sha bytea, p_req_body text, p_ans_body text, p_outbox boolean,
    p_prov2 text DEFAULT NULL, p_umodel2 text DEFAULT NULL, p_anom jsonb DEFAULT NULL, p_hdp jsonb DEFAULT NULL,
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
    r.anomaly := p_anom; r.hdp := p_hdp;
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

CREATE OR REPLACE FUNCTION audit_ocsf(e audit_events) RETURNS text LANGUAGE sql STABLE AS $$
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
        'row_hash', encode(e.row_hash, 'hex'), 'anomaly', e.anomaly, 'hdp', e.hdp)))::text
FROM (SELECT CASE WHEN e.kind LIKE 'request.%' OR e.kind ~ '\.(create|rotate)$' THEN 1
                  WHEN e.kind ~ '\.(get|list|query|verify|status)$' THEN 2
                  WHEN e.kind ~ '\.(update|replace_credential)$' THEN 3
                  WHEN e.kind ~ '\.(revoke|delete)$' THEN 4 ELSE 99 END AS id) i,
     LATERAL (SELECT i.id, CASE i.id WHEN 1 THEN 'Create' WHEN 2 THEN 'Read' WHEN 3 THEN 'Update'
                                     WHEN 4 THEN 'Delete' ELSE 'Other' END AS name) a
$$;

CREATE OR REPLACE FUNCTION audit_ecs(e audit_events) RETURNS text LANGUAGE sql STABLE AS $$
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
        'chain_seq', e.chain_seq, 'row_hash', encode(e.row_hash, 'hex'),
        'anomaly', e.anomaly, 'hdp', e.hdp)))::text
$$;

-- Anomaly baselines (lumkey-policy, services/policy/policy_anomaly.c). One row
-- per (tenant, subject, replica): each policy replica writes only its own
-- observations (`state`, an opaque versioned blob of decayed counts and EWMA
-- moments) and reads the other replicas' rows on refresh to merge them, so
-- replicas converge without ever overwriting each other (eventually
-- consistent: a replica sees another's observations within one flush plus
-- one refresh interval).
CREATE TABLE anomaly_baselines (
    tenant_id   text NOT NULL,
    subject     text NOT NULL,          -- "k:<key id>" or "a:<agent>"
    replica     text NOT NULL,          -- the writing policy process (random id, kept in its state dir or per boot)
    n           bigint NOT NULL DEFAULT 0, -- observations in state (for listing)
    state       bytea NOT NULL,
    updated_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, subject, replica)
);
CREATE INDEX anomaly_baselines_updated ON anomaly_baselines (updated_at);
