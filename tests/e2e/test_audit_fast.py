"""The audit append's fast path (migration 0022, issue 9) keeps the chain exactly as it was.

- audit_canonical() is PL/pgSQL now, and gives the same text, byte for byte, as the last
  LANGUAGE sql definition in deploy/migrations (recreated here under another name) on rows with
  every field set, NULLs, non-ASCII text, anomaly / hdp JSON;
- audit_append() with two statements fewer: a retried event id answers the stored row (same seq,
  no second row), on an existing and on a new chain (whose head row it creates);
- the C verifier (lumkeyctl audit verify) accepts the chains written through it;
- audit_append() builds its row in one ROW(...) expression (migration 0023): every argument lands
  in its own column (two text fields swapped would still verify, so each column is compared).
"""

import json
import re
import uuid
from pathlib import Path

from lkstack import MODEL, SOURCE_DIR

APPEND = ("SELECT o_seq, o_chain_seq FROM audit_append(%s::uuid, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, "
          "%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, false, %s, %s, "
          "%s::jsonb, %s::jsonb)")


def last_sql_canonical() -> str:
    """The body of the last `audit_canonical ... LANGUAGE sql` definition in deploy/migrations."""
    body = None
    for f in sorted((SOURCE_DIR / "deploy" / "migrations").glob("*.sql")):
        text = f.read_text()
        for m in re.finditer(r"FUNCTION audit_canonical\(e audit_events\) RETURNS text LANGUAGE sql IMMUTABLE "
                             r"AS \$\$(.*?)\$\$;", text, re.S):
            body = m.group(1)
    assert body, "no LANGUAGE sql definition of audit_canonical in deploy/migrations"
    return body


def append(cur, event_id, tenant="default", full=False, text="plain", anomaly=None, hdp=None):
    rid = "req_fast" + uuid.uuid4().hex[:16]
    sha = bytes(range(32))
    if full:
        args = [event_id, "request.completed", rid, 1795000000123, tenant, "key_1", f"user {text}", "10.0.0.1",
                "chat.completions", "prov_1", MODEL, "gpt-up", "redact", "pol_1", 7, "rule|1", 200, 201,
                123456, 10, 20, 30, "", "trace-1", True, f"agent {text}", "ops@example.com", 42, sha, sha,
                None, None, "prov_2", "gpt-up-2", anomaly, hdp]
    else:
        args = [event_id, "request.accepted", rid, 0, tenant] + [None] * 19 + [False] + [None] * 7 + \
               [None, None, anomaly, hdp]
    cur.execute(APPEND, args)
    return cur.fetchone()


def test_canonical_is_plpgsql_and_matches_the_sql_definition(stack):
    with stack.db().cursor() as cur:
        cur.execute("SELECT l.lanname FROM pg_proc p JOIN pg_language l ON l.oid = p.prolang "
                    "WHERE p.oid = 'audit_canonical(audit_events)'::regprocedure")
        assert cur.fetchone()["lanname"] == "plpgsql", "0022 did not make audit_canonical PL/pgSQL"
        cur.execute("CREATE OR REPLACE FUNCTION lk_test_canonical_sql(e audit_events) RETURNS text "
                    "LANGUAGE sql IMMUTABLE AS $body$" + last_sql_canonical() + "$body$")
        rows = [
            append(cur, str(uuid.uuid4())),
            append(cur, str(uuid.uuid4()), full=True),
            append(cur, str(uuid.uuid4()), full=True, text="Grüße, 東京 🚀 \"quoted\" | pipe"),
            append(cur, str(uuid.uuid4()), anomaly=json.dumps({"score": 0.25, "reasons": ["rate"]})),
            append(cur, str(uuid.uuid4()), full=True, anomaly=json.dumps({"score": 1}),
                   hdp=json.dumps({"ok": True, "principal": "alice"})),
            append(cur, str(uuid.uuid4()), tenant=None),
        ]
        assert all(r["o_seq"] for r in rows)
        cur.execute("SELECT count(*) AS n, count(*) FILTER (WHERE audit_canonical(e) IS DISTINCT FROM "
                    "lk_test_canonical_sql(e)) AS differ, count(*) FILTER (WHERE e.anomaly IS NOT NULL) AS anom "
                    "FROM audit_events e")
        got = cur.fetchone()
        cur.execute("DROP FUNCTION lk_test_canonical_sql(audit_events)")
    assert got["n"] >= 6 and got["anom"] >= 2
    assert got["differ"] == 0, f"{got['differ']} rows encode differently from the SQL definition"


def test_retried_event_answers_the_stored_row(stack):
    with stack.db().cursor() as cur:
        for tenant in ("default", "t_fast_" + uuid.uuid4().hex[:8]):  # an existing chain, then a new one
            eid = str(uuid.uuid4())
            first = append(cur, eid, tenant=tenant, full=True)
            again = append(cur, eid, tenant=tenant, full=True)
            assert again["o_seq"] == first["o_seq"] and again["o_chain_seq"] == first["o_chain_seq"]
            cur.execute("SELECT count(*) AS n FROM audit_events WHERE event_id = %s::uuid", (eid,))
            assert cur.fetchone()["n"] == 1
            cur.execute("SELECT last_seq FROM audit_chain WHERE chain = %s", (tenant,))
            assert cur.fetchone()["last_seq"] == first["o_chain_seq"]


def test_chains_written_through_the_fast_path_verify(stack):
    body = json.dumps({"model": MODEL, "messages": [{"role": "user", "content": "fast path"}]}).encode()
    for _ in range(3):
        st, h, _ = stack.chat_raw(body)
        assert st == 200
        stack.wait_closing_audit(h["x-request-id"])
    p = stack.ctl("audit", "verify", "--format", "json", check=False)
    doc = json.loads(p.stdout)
    assert p.returncode == 0 and doc["ok"], stack.redact(p.stdout)
    assert doc["events_checked"] >= 6 + 6 + 4


def test_every_argument_lands_in_its_own_column(stack):
    """0023 builds the row positionally: a swapped pair of same-typed fields must show here."""
    tenant = "t_cols_" + uuid.uuid4().hex[:8]
    with stack.db().cursor() as cur:
        cur.execute("INSERT INTO tenants (id, name, audit_content) VALUES (%s, %s, true)", (tenant, tenant))
        eid = str(uuid.uuid4())
        want = {
            "event_id": uuid.UUID(eid), "kind": "request.completed", "request_id": "req_cols_" + eid[:8],
            "tenant_id": tenant, "key_id": "key_c1", "user_id": "user_c2", "source_ip": "10.9.8.7",
            "endpoint": "chat.c3", "provider_id": "prov_c4", "model": "model_c5", "upstream_model": "up_c6",
            "decision": "redact", "policy_id": "pol_c7", "policy_version": 8, "rule_id": "rule_c9",
            "http_status": 210, "upstream_status": 211, "latency_us": 12345, "prompt_tokens": 13,
            "completion_tokens": 14, "total_tokens": 27, "error_code": "err_c10", "trace_id": "trace_c11",
            "stream": True, "agent": "agent_c12", "approver": "appr_c13", "cost_micros": 1414,
            "request_sha256": bytes(range(32)), "answer_sha256": bytes(range(1, 33)),
            "request_body": "req body c15", "answer_body": "ans body c16",
            "fallback_provider_id": "prov_c17", "fallback_upstream_model": "up_c18",
            "anomaly": {"score": 0.5}, "hdp": {"ok": True},
        }
        w = want
        cur.execute(APPEND, [eid, w["kind"], w["request_id"], 1795000000123, tenant, w["key_id"], w["user_id"],
                             w["source_ip"], w["endpoint"], w["provider_id"], w["model"], w["upstream_model"],
                             w["decision"], w["policy_id"], w["policy_version"], w["rule_id"], w["http_status"],
                             w["upstream_status"], w["latency_us"], w["prompt_tokens"], w["completion_tokens"],
                             w["total_tokens"], w["error_code"], w["trace_id"], w["stream"], w["agent"],
                             w["approver"], w["cost_micros"], w["request_sha256"], w["answer_sha256"],
                             w["request_body"], w["answer_body"], w["fallback_provider_id"],
                             w["fallback_upstream_model"], json.dumps(w["anomaly"]), json.dumps(w["hdp"])])
        got_seq = cur.fetchone()
        cur.execute("SELECT * FROM audit_events WHERE event_id = %s::uuid", (eid,))
        row = cur.fetchone()
        cur.execute("SELECT last_seq, last_hash FROM audit_chain WHERE chain = %s", (tenant,))
        head = cur.fetchone()
    wrong = {k: (row[k], v) for k, v in want.items() if (bytes(row[k]) if isinstance(v, bytes) else row[k]) != v}
    assert not wrong, f"columns holding another argument's value: {wrong}"
    assert row["seq"] == got_seq["o_seq"] and row["chain"] == tenant and row["chain_seq"] == 1
    assert int(row["time"].timestamp() * 1000) == 1795000000123
    assert bytes(row["prev_hash"]) == bytes(32) and bytes(row["row_hash"]) == bytes(head["last_hash"])
    assert head["last_seq"] == 1 and row["recorded_at"] is not None
