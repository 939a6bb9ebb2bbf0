"""The audit append's fast path (migration 0022, issue 9) keeps the chain exactly as it was.

- audit_canonical() is PL/pgSQL now, and gives the same text, byte for byte, as the last
  LANGUAGE sql definition in deploy/migrations (recreated here under another name) on rows with
  every field set, NULLs, non-ASCII text, anomaly / hdp JSON;
- audit_append() with two statements fewer: a retried event id answers the stored row (same seq,
  no second row), on an existing and on a new chain (whose head row it creates);
- the C verifier (lumkeyctl audit verify) accepts the chains written through it.
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
