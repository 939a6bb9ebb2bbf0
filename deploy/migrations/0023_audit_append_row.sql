-- 0023_audit_append_row: audit_append() builds its row in one expression (issue 9).
--
-- Measured with pg_stat_statements + track_functions at 1,000 chat requests/s
-- (docs/benchmarks.md, 2026-11-27 lead's notes): audit_append() took 176 us a
-- call, of which only 62 us were its five statements and 31 us the canonical
-- encoding; the rest, ~80 us, was PL/pgSQL evaluating forty one-field
-- assignments (r.kind := p_kind; ...), each a separate expression. Here the row
-- is one ROW(...)::audit_events, evaluated once.
--
-- Same signature, same rows, same chain as 0022 (tests/e2e/test_audit_fast.py
-- compares the stored rows and hashes, tests/e2e/test_audit.py verifies the
-- chain). ROW() depends on audit_events' column order: the block below refuses
-- to install it on a table whose columns differ, and a migration that adds a
-- column must redefine this function (start from this one).
DO $check$
DECLARE
    cols text;
BEGIN
    SELECT string_agg(a.attname, ',' ORDER BY a.attnum) INTO cols
      FROM pg_attribute a
     WHERE a.attrelid = 'audit_events'::regclass AND a.attnum > 0 AND NOT a.attisdropped;
    IF cols <> 'seq,event_id,kind,request_id,time,tenant_id,key_id,user_id,source_ip,endpoint,provider_id,'
              'model,upstream_model,decision,policy_id,policy_version,rule_id,http_status,upstream_status,'
              'latency_us,prompt_tokens,completion_tokens,total_tokens,error_code,trace_id,stream,agent,'
              'approver,cost_micros,request_sha256,answer_sha256,request_body,answer_body,'
              'fallback_provider_id,fallback_upstream_model,chain,chain_seq,prev_hash,row_hash,recorded_at,'
              'anomaly,hdp' THEN
        RAISE EXCEPTION 'audit_events columns are not the ones audit_append() (0023) was written for: %', cols;
    END IF;
END
$check$;

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
    ts timestamptz := CASE WHEN p_time_ms > 0 THEN timestamptz 'epoch' + p_time_ms * interval '1 millisecond'
                           ELSE date_trunc('milliseconds', now()) END;
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
    -- (whatever time it carries: every partition is searched)
    SELECT e.seq, e.chain_seq INTO o_seq, o_chain_seq FROM audit_events e WHERE e.event_id = p_event_id LIMIT 1;
    IF FOUND THEN RETURN; END IF;
    r := ROW(nextval('audit_events_seq'), p_event_id, p_kind, p_request_id, ts, p_tenant, p_key, p_user, p_ip,
             p_ep, p_prov, p_model, p_umodel, p_dec, p_pol, p_pver, p_rule, p_http, p_ups, p_lat, p_ptok,
             p_ctok, p_ttok, p_code, p_trace, p_stream, p_agent, p_approver, p_cost, p_req_sha, p_ans_sha,
             CASE WHEN content THEN p_req_body END, CASE WHEN content THEN p_ans_body END, p_prov2, p_umodel2,
             c, h.last_seq + 1, h.last_hash, NULL::bytea, now(), p_anom, p_hdp)::audit_events;
    r.row_hash := sha256(r.prev_hash || convert_to(audit_canonical(r), 'UTF8'));
    INSERT INTO audit_events SELECT r.*;
    UPDATE audit_chain SET last_seq = r.chain_seq, last_hash = r.row_hash WHERE chain = c;
    IF p_outbox THEN
        INSERT INTO audit_outbox (event_seq, event_time, chain) VALUES (r.seq, r.time, c);
    END IF;
    o_seq := r.seq; o_chain_seq := r.chain_seq;
END $$;
