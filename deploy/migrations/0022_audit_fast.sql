-- 0022_audit_fast: the audit append's fast path (issue 9), on top of 0017.
--
-- audit_canonical() (0005, redefined by later migrations when the chain covers
-- new fields) is a LANGUAGE sql function that PostgreSQL cannot inline (it takes
-- a whole row). audit_append() calls it from PL/pgSQL, whose simple-expression
-- state lives for one transaction only, so PostgreSQL parsed and planned the
-- SQL function's body again in every transaction: ~0.3 ms of the ~0.56 ms an
-- event cost when it was committed alone (measured with pgbench, one
-- audit_append per transaction; docs/benchmarks.md, lead notes).
--
-- The same body as a PL/pgSQL RETURN expression (the SQL body `SELECT x` becomes
-- `RETURN x`, which PL/pgSQL evaluates as that same SELECT) is planned once per
-- connection, its plan kept, and run as a simple expression (no executor per
-- call): ~10 us a call instead of ~33 us for RETURN (SELECT x). The encoding is
-- the same text, byte for byte: the body is taken from the function as it
-- stands, so this works on whatever definition the previous migrations left
-- (e.g. one that appends new fields), and the chain still verifies (the C
-- verifier in services/audit/audit_admin.c is unchanged). tests/e2e/
-- test_audit_fast.py compares it with the last LANGUAGE sql definition in
-- deploy/migrations on varied rows. A migration that redefines audit_canonical()
-- later must keep it PL/pgSQL (or repeat this block).
DO $migrate$
DECLARE
    body text;
    lang text;
BEGIN
    SELECT p.prosrc, l.lanname INTO body, lang
      FROM pg_proc p JOIN pg_language l ON l.oid = p.prolang
     WHERE p.oid = 'audit_canonical(audit_events)'::regprocedure;
    IF lang = 'plpgsql' THEN
        RETURN; -- already fast
    END IF;
    IF lang <> 'sql' THEN
        RAISE EXCEPTION 'audit_canonical is LANGUAGE %, expected sql', lang;
    END IF;
    body := rtrim(btrim(body, E' \t\r\n'), E'; \t\r\n');
    IF body !~* '^select\s' THEN
        RAISE EXCEPTION 'audit_canonical body does not start with SELECT';
    END IF;
    body := regexp_replace(body, '^select\s+', '', 'i');
    EXECUTE format('CREATE OR REPLACE FUNCTION audit_canonical(e audit_events) RETURNS text '
                   'LANGUAGE plpgsql IMMUTABLE AS %L',
                   E'BEGIN\n    RETURN ' || body || E';\nEND');
END
$migrate$;

-- audit_append() as in 0017 (same signature, same rows, same chain), with two
-- statements fewer per event (~25% of its time, pgbench, one event per
-- transaction):
--   * the event-id lookup before the chain lock is gone: the one under the lock
--     (which must stay: another replica may have stored the event meanwhile)
--     answers a retry as well, at the price of taking the lock for it;
--   * the chain head row is locked first and inserted only when missing (the
--     INSERT ... ON CONFLICT DO NOTHING ran for every event).
-- This replaces 0017's definition (as of lk-anomaly's plumbing commit): a change
-- to the append in an earlier migration must be carried here too, and a later
-- migration that redefines it should start from this one.
CREATE OR REPLACE FUNCTION audit_append(
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
    SELECT * INTO h FROM audit_chain WHERE chain = c FOR UPDATE;
    IF NOT FOUND THEN
        INSERT INTO audit_chain (chain) VALUES (c) ON CONFLICT DO NOTHING;
        SELECT * INTO h FROM audit_chain WHERE chain = c FOR UPDATE;
    END IF;
    -- under the lock: a retry, or another replica that stored the same event
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
