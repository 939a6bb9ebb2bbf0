"""The audit trail: full-context events, the per-tenant hash chain and its verifier (tamper
tests), signed checkpoints, the query API with filters and paging, lumkeyctl audit
query/tail/export, content and fail-open settings, retention."""

import csv
import hashlib
import io
import json
import subprocess
import time

import pytest

from helpers import marker, mock_requests_with
from lkstack import MODEL, MODEL_ALT, Proc, Stack, StackError, binary, http


@pytest.fixture(scope="session")
def stack():
    """This file's stack: a longer hop deadline, since verify and retention over a few thousand
    events run inside one admin call (on a loaded CI machine, more than the default 1 s)."""
    s = Stack(hop_timeout_ms=5000)
    try:
        s.start()
    except StackError as e:
        pytest.fail(f"could not start the Lumkey stack: {e}", pytrace=False)
    try:
        yield s
    finally:
        s.stop()
        if not s.sanitizer_reports():
            s.cleanup_dir()


def admin(stack, method, path, body=None):
    h = {"authorization": f"Bearer {stack.admin_token}", "content-type": "application/json"}
    st, _, raw = http(method, stack.admin_base + path, json.dumps(body).encode() if body is not None else None, h)
    return st, json.loads(raw) if raw else None


def ask(stack, text=None, model=MODEL, headers=None):
    body = {"model": model, "messages": [{"role": "user", "content": text or marker()}]}
    raw = json.dumps(body).encode()
    st, h, ans = stack.chat_raw(raw, headers=headers)
    return st, h["x-request-id"], raw, ans


def verify(stack):
    p = stack.ctl("audit", "verify", "--format", "json", check=False)
    return p.returncode, json.loads(p.stdout)


def chain_rows(stack):
    with stack.db().cursor() as cur:
        cur.execute("SELECT chain, chain_seq FROM audit_events WHERE chain = 'default' ORDER BY chain_seq")
        return cur.fetchall()


def settle(stack, rid):
    stack.wait_closing_audit(rid)


# ------------------------------------------------------------------ fields


def test_events_carry_full_context(stack):
    tp = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    st, rid, raw, ans = ask(stack, headers={"traceparent": tp, "user-agent": "agent-x/1.0"})
    assert st == 200
    acc = stack.wait_audit(rid, "request.accepted")
    done = stack.wait_audit(rid, "request.completed")
    for row in (acc, done):
        assert row["trace_id"] == "0af7651916cd43dd8448eb211c80319c"
        assert row["agent"] == "agent-x/1.0"
        assert bytes(row["request_sha256"]).hex() == hashlib.sha256(raw).hexdigest()
        assert row["key_id"] == stack.key_id and row["tenant_id"] == "default"
        assert row["source_ip"] and row["provider_id"] and row["model"] == MODEL
        assert row["chain"] == "default" and row["chain_seq"] > 0 and len(bytes(row["row_hash"])) == 32
        assert row["request_body"] is None, "content is stored only when the tenant asks"
    assert bytes(done["answer_sha256"]).hex() == hashlib.sha256(ans).hexdigest()
    assert done["http_status"] == 200 and done["upstream_status"] == 200 and done["latency_us"] > 0
    assert done["chain_seq"] > acc["chain_seq"]
    assert done["prev_hash"] is not None


def test_streamed_answer_digest_is_of_the_bytes_relayed(stack):
    """The streamed answer's SHA-256 (fed event by event as they are relayed) is the digest of
    exactly the SSE bytes the client received; an empty-looking or partial digest would differ."""
    body = {"model": MODEL, "stream": True,
            "messages": [{"role": "user", "content": marker() + " [[mock chunks=7]]"}]}
    st, h, ans = stack.chat_raw(json.dumps(body).encode())
    assert st == 200 and b"data: [DONE]" in ans
    done = stack.wait_audit(h["x-request-id"], "request.completed")
    assert done["stream"] is True
    assert bytes(done["answer_sha256"]).hex() == hashlib.sha256(ans).hexdigest()


def test_content_stored_only_when_the_tenant_asks(stack):
    st, doc = admin(stack, "PATCH", "/admin/v1/audit/settings", {"content": True})
    assert st == 200 and doc["content"] is True
    try:
        m = marker()
        st, rid, raw, ans = ask(stack, m)
        assert st == 200
        acc = stack.wait_audit(rid, "request.accepted")
        done = stack.wait_audit(rid, "request.completed")
        assert m in acc["request_body"]
        assert done["answer_body"] == ans.decode()
    finally:
        admin(stack, "PATCH", "/admin/v1/audit/settings", {"content": False})


# ------------------------------------------------------------ chain, verify


def test_verify_ok_and_checkpoints_signed(stack):
    for _ in range(3):
        settle(stack, ask(stack)[1])
    rc, doc = verify(stack)
    assert rc == 0 and doc["ok"], doc
    assert doc["first_bad_seq"] is None and doc["events_checked"] >= 6
    assert doc["checkpoints_checked"] >= 1 and len(doc["public_key"]) == 64
    with stack.db().cursor() as cur:
        cur.execute("SELECT count(*) AS n FROM audit_checkpoints WHERE chain = 'default'")
        assert cur.fetchone()["n"] >= 1
    st, status = admin(stack, "GET", "/admin/v1/audit/status")
    assert st == 200 and status["public_key"] == doc["public_key"]


def _middle_seq(stack):
    for _ in range(4):
        settle(stack, ask(stack)[1])
    rows = chain_rows(stack)
    return rows[-4]["chain_seq"]


def test_edited_row_is_named(stack):
    k = _middle_seq(stack)
    with stack.db().cursor() as cur:
        cur.execute("SELECT model FROM audit_events WHERE chain = 'default' AND chain_seq = %s", (k,))
        old = cur.fetchone()["model"]
        cur.execute("UPDATE audit_events SET model = 'evil-model' WHERE chain = 'default' AND chain_seq = %s", (k,))
    try:
        rc, doc = verify(stack)
        assert rc == 1 and not doc["ok"]
        assert doc["first_bad_seq"] == k, doc
        text = stack.ctl("audit", "verify", check=False).stdout.decode()
        assert f"BROKEN at sequence {k}" in text
    finally:
        with stack.db().cursor() as cur:
            cur.execute("UPDATE audit_events SET model = %s WHERE chain = 'default' AND chain_seq = %s", (old, k))
    assert verify(stack)[0] == 0


def test_deleted_row_is_named(stack):
    k = _middle_seq(stack)
    with stack.db().cursor() as cur:
        cur.execute("CREATE TEMP TABLE saved_row AS SELECT * FROM audit_events WHERE chain = 'default' "
                    "AND chain_seq = %s", (k,))
        cur.execute("DELETE FROM audit_events WHERE chain = 'default' AND chain_seq = %s", (k,))
    try:
        rc, doc = verify(stack)
        assert rc == 1 and doc["first_bad_seq"] == k, doc
    finally:
        with stack.db().cursor() as cur:
            cur.execute("INSERT INTO audit_events SELECT * FROM saved_row")
            cur.execute("DROP TABLE saved_row")
    assert verify(stack)[0] == 0


def test_deleted_and_renumbered_rows_are_named(stack):
    """Deleting a row and renumbering the rest to hide the gap still breaks at that sequence."""
    k = _middle_seq(stack)
    with stack.db().cursor() as cur:
        cur.execute("CREATE TEMP TABLE saved_rows AS SELECT * FROM audit_events WHERE chain = 'default' "
                    "AND chain_seq >= %s", (k,))
        cur.execute("DELETE FROM audit_events WHERE chain = 'default' AND chain_seq = %s", (k,))
        cur.execute("UPDATE audit_events SET chain_seq = chain_seq - 1 WHERE chain = 'default' AND chain_seq > %s",
                    (k,))
    try:
        rc, doc = verify(stack)
        assert rc == 1 and doc["first_bad_seq"] == k, doc
    finally:
        with stack.db().cursor() as cur:
            cur.execute("DELETE FROM audit_events WHERE seq IN (SELECT seq FROM saved_rows)")
            cur.execute("INSERT INTO audit_events SELECT * FROM saved_rows")
            cur.execute("DROP TABLE saved_rows")
    assert verify(stack)[0] == 0


def test_reordered_rows_are_named(stack):
    k = _middle_seq(stack)
    swap = ("UPDATE audit_events SET chain_seq = CASE WHEN chain_seq = %s THEN %s ELSE %s END "
            "WHERE chain = 'default' AND chain_seq IN (%s, %s)")
    with stack.db().cursor() as cur:
        cur.execute(swap, (k, k + 1, k, k, k + 1))
    try:
        rc, doc = verify(stack)
        assert rc == 1 and doc["first_bad_seq"] == k, doc
    finally:
        with stack.db().cursor() as cur:
            cur.execute(swap, (k, k + 1, k, k, k + 1))
    assert verify(stack)[0] == 0


def test_forged_checkpoint_signature_is_detected(stack):
    settle(stack, ask(stack)[1])
    assert verify(stack)[0] == 0  # signs a checkpoint of the head
    with stack.db().cursor() as cur:
        cur.execute("SELECT max(chain_seq) AS s FROM audit_checkpoints WHERE chain = 'default'")
        s = cur.fetchone()["s"]
        flip = ("UPDATE audit_checkpoints SET signature = set_byte(signature, 5, get_byte(signature, 5) # 1) "
                "WHERE chain = 'default' AND chain_seq = %s")
        cur.execute(flip, (s,))
    try:
        rc, doc = verify(stack)
        assert rc == 1 and not doc["ok"]
        assert [c["seq"] for c in doc["bad_checkpoints"]] == [s], doc
    finally:
        with stack.db().cursor() as cur:
            cur.execute(flip, (s,))
    assert verify(stack)[0] == 0


def test_chain_is_right_with_concurrent_writers(stack):
    """Several audit replicas append to one tenant's chain at once (each its own connection, events
    in group-commit transactions): audit_append locks the chain head, so sequence numbers stay
    contiguous and the chain verifies."""
    import threading
    import uuid

    import psycopg

    errors = []

    def writer(n_tx, per_tx):
        try:
            with psycopg.connect(stack.conninfo) as conn:
                for _ in range(n_tx):
                    with conn.transaction():
                        for _ in range(per_tx):
                            conn.execute(
                                "SELECT * FROM audit_append(%s::uuid, 'request.accepted', %s, 0, 'default', "
                                "'key_replica', NULL, NULL, 'chat.completions', NULL, 'm', NULL, 'allow', NULL, "
                                "NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, false, NULL, NULL, "
                                "NULL, NULL, NULL, NULL, NULL, false)", (str(uuid.uuid4()), "req_replica"))
        except Exception as e:  # noqa: BLE001
            errors.append(repr(e))

    threads = [threading.Thread(target=writer, args=(15, 8)) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    seqs = [r["chain_seq"] for r in chain_rows(stack)]
    assert seqs == list(range(seqs[0], seqs[0] + len(seqs))), "chain sequence numbers have gaps or repeats"
    rc, doc = verify(stack)
    assert rc == 0 and doc["ok"], doc


def test_partitions_are_created_ahead(stack):
    with stack.db().cursor() as cur:
        cur.execute("SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
                    "WHERE i.inhparent = 'audit_events'::regclass")
        names = {r["relname"] for r in cur.fetchall()}
        cur.execute("SELECT to_char(now() AT TIME ZONE 'UTC' + interval '2 months', 'YYYYMM') AS m")
        ahead = cur.fetchone()["m"]
    assert f"audit_events_{ahead}" in names, names


# ---------------------------------------------------------- query and CLI


def test_query_filters_and_cursor_paging(stack):
    t0 = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() - 1))
    rids = []
    for i in range(5):
        st, rid, _, _ = ask(stack, model=MODEL_ALT if i % 2 else MODEL)
        assert st == 200
        rids.append(rid)
    for rid in rids:
        settle(stack, rid)
    st, doc = admin(stack, "GET", f"/admin/v1/audit/events?model={MODEL_ALT}&from={t0}&limit=1000")
    assert st == 200
    assert doc["events"] and all(e["model"] == MODEL_ALT for e in doc["events"])
    assert {e["request_id"] for e in doc["events"]} >= {rids[1], rids[3]}
    st, doc = admin(stack, "GET", f"/admin/v1/audit/events?key={stack.key_id}&decision=allow&from={t0}&limit=1000")
    assert st == 200 and all(e["key_id"] == stack.key_id and e["decision"] == "allow" for e in doc["events"])
    want = [e["seq"] for e in doc["events"]]
    assert len(want) >= 10
    # the same events, 3 at a time
    got, cursor = [], None
    while True:
        path = f"/admin/v1/audit/events?key={stack.key_id}&decision=allow&from={t0}&limit=3"
        st, page = admin(stack, "GET", path + (f"&cursor={cursor}" if cursor else ""))
        assert st == 200 and len(page["events"]) <= 3
        got += [e["seq"] for e in page["events"]]
        cursor = page["next_cursor"]
        if not page["has_more"]:
            break
    assert got[:len(want)] == want
    # nothing later than `to`
    st, doc = admin(stack, "GET", f"/admin/v1/audit/events?to={t0}&from=2000-01-01&limit=5")
    assert st == 200 and all(e["time"] < t0 for e in doc["events"])
    st, _ = admin(stack, "GET", "/admin/v1/audit/events?limit=0")
    assert st == 400


def test_ctl_export_jsonl_and_csv_with_progress(stack):
    t0 = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() - 1))
    for _ in range(3):
        settle(stack, ask(stack)[1])
    t1 = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() + 2))
    p = stack.ctl("audit", "export", "--from", t0, "--to", t1, "--format", "jsonl")
    lines = [json.loads(x) for x in p.stdout.decode().splitlines()]
    assert len(lines) >= 6 and "exported" in p.stderr.decode()
    assert all("event_id" in e and "row_hash" in e for e in lines)
    seqs = [e["seq"] for e in lines]
    assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs)
    p = stack.ctl("audit", "export", "--from", t0, "--to", t1, "--format", "csv")
    rows = list(csv.DictReader(io.StringIO(p.stdout.decode())))
    assert [int(r["seq"]) for r in rows][:len(seqs)] == seqs
    assert "export done" in p.stderr.decode()


def test_ctl_tail_and_follow(stack):
    settle(stack, ask(stack)[1])
    p = stack.ctl("audit", "tail", "-n", "3", "--format", "json")
    assert len(p.stdout.decode().splitlines()) == 3
    env = stack._tool_env(LUMKEY_ADDR=stack.admin_base, LUMKEY_TOKEN=stack.admin_token)
    proc = subprocess.Popen([str(binary("ctl", stack.build_dir)), "audit", "tail", "-n", "1", "--follow",
                             "--interval", "0.2", "--format", "json"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, env=env)
    try:
        time.sleep(0.5)
        st, rid, _, _ = ask(stack)
        deadline = time.monotonic() + 10
        seen = set()
        while time.monotonic() < deadline and not {"request.accepted", "request.completed"} <= seen:
            line = proc.stdout.readline()
            if not line:
                break
            e = json.loads(line)
            if e["request_id"] == rid:
                seen.add(e["kind"])
        assert {"request.accepted", "request.completed"} <= seen
    finally:
        proc.terminate()
        proc.wait(timeout=5)


def test_admin_export_streams_large_ranges(stack):
    """GET /admin/v1/audit/export streams page after page (1000 events each), chunked."""
    t0 = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() - 1))
    with stack.db().cursor() as cur:
        cur.execute("""
            SELECT count(*) FROM (SELECT audit_append(gen_random_uuid(), 'request.accepted', 'req_export_' || i,
              0, 'default', 'key_export', NULL, NULL, 'chat.completions', NULL, 'm', NULL, 'allow', NULL, NULL,
              NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, false, NULL, NULL, NULL, NULL, NULL, NULL,
              NULL, false) FROM generate_series(1, 2500) i) x""")
    t1 = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() + 2))
    h = {"authorization": f"Bearer {stack.admin_token}"}
    q = f"from={t0}&to={t1}&key=key_export"
    st, hdrs, body = http("GET", f"{stack.admin_base}/admin/v1/audit/export?{q}&format=jsonl", None, h)
    assert st == 200, body[:300]
    hdrs = {k.lower(): v for k, v in dict(hdrs).items()}
    assert hdrs.get("transfer-encoding") == "chunked" and "ndjson" in hdrs.get("content-type", "")
    lines = [json.loads(x) for x in body.decode().splitlines()]
    assert len(lines) == 2500 and len({e["event_id"] for e in lines}) == 2500
    assert [e["seq"] for e in lines] == sorted(e["seq"] for e in lines)
    st, hdrs, body = http("GET", f"{stack.admin_base}/admin/v1/audit/export?{q}&format=csv", None, h)
    rows = list(csv.DictReader(io.StringIO(body.decode())))
    assert st == 200 and len(rows) == 2500 and rows[0]["key_id"] == "key_export"
    st, _, _ = http("GET", f"{stack.admin_base}/admin/v1/audit/export?format=csv", None, h)
    assert st == 400
    assert verify(stack)[0] == 0


# ------------------------------------------------------ fail closed / open


def _break_audit_writes(stack):
    with stack.db().cursor() as cur:
        cur.execute("ALTER TABLE audit_chain ADD CONSTRAINT lk_test_read_only CHECK (last_seq < 0) NOT VALID")


def _repair_audit_writes(stack):
    with stack.db().cursor() as cur:
        cur.execute("ALTER TABLE audit_chain DROP CONSTRAINT IF EXISTS lk_test_read_only")


def _fail_open_total(stack):
    st, _, body = http("GET", stack.admin_base + "/metrics")
    for line in body.decode().splitlines():
        if line.startswith("lumkey_edge_audit_fail_open_total "):
            return int(float(line.split()[1]))
    raise AssertionError("lumkey_edge_audit_fail_open_total is missing from /metrics")


def test_fail_closed_then_fail_open_tenant(stack):
    settle(stack, ask(stack)[1])
    _break_audit_writes(stack)
    try:
        m = marker()
        st, rid, _, body = ask(stack, m)
        assert st == 503 and b"audit_unavailable" in body
        assert not mock_requests_with(stack, m), "fail closed: the provider must receive nothing"
    finally:
        _repair_audit_writes(stack)
    st, doc = admin(stack, "PATCH", "/admin/v1/audit/settings", {"fail_open": True})
    assert st == 200 and doc["fail_open"] is True
    try:
        settle(stack, ask(stack)[1])  # the edge learns the tenant's choice from audit's answer
        before = _fail_open_total(stack)
        _break_audit_writes(stack)
        try:
            m = marker()
            st, rid, _, _ = ask(stack, m)
            assert st == 200, "a fail-open tenant's request goes through"
            assert mock_requests_with(stack, m)
            assert _fail_open_total(stack) == before + 1
        finally:
            _repair_audit_writes(stack)
        # the closing event was kept by the edge and is recorded once audit can write again
        row = stack.wait_audit(rid, "request.completed", timeout=15)
        assert row["http_status"] == 200
        assert "AUDIT FAIL-OPEN" in (stack.dir / "logs" / "edge.log").read_text()
    finally:
        admin(stack, "PATCH", "/admin/v1/audit/settings", {"fail_open": False})
    assert verify(stack)[0] == 0


def test_two_audit_replicas_under_load_keep_one_chain(stack):
    """Two lumkey-audit replicas behind one edge (its DEALER spreads events over both), each group-
    committing: the tenant's chain stays contiguous and verifies, and no answered request lacks
    its events."""
    import threading

    run = stack.dir / "run"
    both = f"ipc://{run}/audit.ipc,ipc://{run}/audit2.ipc"
    second = Proc("audit2", stack.service_argv("audit"), stack.env(LUMKEY_AUDIT_ENDPOINT=f"ipc://{run}/audit2.ipc"),
                  stack.dir / "logs" / "audit2.log")
    second.start(stack.dir / "pgids")
    stack.procs["audit2"] = second

    def edge_with(endpoints):
        stack.kill_service("edge", sig=15)
        env = stack.env(**({"LUMKEY_AUDIT_ENDPOINT": endpoints} if endpoints else {}))
        edge = Proc("edge", stack.service_argv("edge"), env, stack.dir / "logs" / "edge.log")
        edge.start(stack.dir / "pgids")
        stack.procs["edge"] = edge
        stack.wait_ready(timeout=30)

    edge_with(both)
    try:
        results, stop = [], threading.Event()

        def load():
            while not stop.is_set():
                st, rid, _, _ = ask(stack)
                results.append((st, rid))

        threads = [threading.Thread(target=load) for _ in range(4)]
        for t in threads:
            t.start()
        time.sleep(2.5)
        stop.set()
        for t in threads:
            t.join()
        ok = [rid for st, rid in results if st == 200]
        assert len(ok) > 20
        for rid in ok:
            kinds = {r["kind"] for r in stack.audit_rows(rid)}
            if kinds != {"request.accepted", "request.completed"}:
                stack.wait_audit(rid, "request.completed")
        assert "ready" in (stack.dir / "logs" / "audit2.log").read_text()
        seqs = [r["chain_seq"] for r in chain_rows(stack)]
        assert seqs == list(range(seqs[0], seqs[0] + len(seqs)))
        rc, doc = verify(stack)
        assert rc == 0 and doc["ok"], doc
    finally:
        edge_with(None)
        stack.kill_service("audit2", sig=15)
    log = (stack.dir / "logs" / "audit2.log").read_text()
    import re
    m = re.search(r"audit stopping: (\d+) events appended", log)
    assert m and int(m.group(1)) > 0, "the second replica recorded nothing"


# --------------------------------------------------------------- retention


def test_retention_keeps_a_verifiable_suffix(stack):
    for _ in range(3):
        settle(stack, ask(stack)[1])
    time.sleep(3.5)
    keep = []
    for _ in range(3):
        rid = ask(stack)[1]
        settle(stack, rid)
        keep.append(rid)
    st, doc = admin(stack, "PATCH", "/admin/v1/audit/settings", {"retention": "3 seconds"})
    assert st == 200
    try:
        st, doc = admin(stack, "POST", "/admin/v1/audit/retention")
        assert st == 200 and doc["deleted"] >= 6, stack.redact(stack.log_tails())
        for rid in keep:
            assert stack.audit_rows(rid), "recent events are kept"
        rc, v = verify(stack)
        assert rc == 0 and v["ok"], v
        assert v["retained_from"] > 1 and v["first_seq"] == v["retained_from"]
    finally:
        admin(stack, "PATCH", "/admin/v1/audit/settings", {"retention": "400 days"})


# ------------------------------------------------- last: leaves a forged chain


def test_rewritten_chain_is_caught_by_a_checkpoint(stack):
    """An attacker who edits a row and recomputes every hash after it (with the database's own
    function) still fails against the signed checkpoint. Runs last: the chain stays forged."""
    k = _middle_seq(stack)
    assert verify(stack)[0] == 0  # a checkpoint now covers k
    with stack.db().cursor() as cur:
        cur.execute("UPDATE audit_events SET model = 'evil' WHERE chain = 'default' AND chain_seq = %s", (k,))
        cur.execute("""
            DO $$ DECLARE r audit_events; prev bytea; BEGIN
              SELECT prev_hash INTO prev FROM audit_events WHERE chain = 'default' AND chain_seq = %s;
              FOR r IN SELECT * FROM audit_events WHERE chain = 'default' AND chain_seq >= %s ORDER BY chain_seq LOOP
                r.prev_hash := prev;
                r.row_hash := sha256(prev || convert_to(audit_canonical(r), 'UTF8'));
                UPDATE audit_events SET prev_hash = r.prev_hash, row_hash = r.row_hash
                  WHERE chain = 'default' AND chain_seq = r.chain_seq;
                prev := r.row_hash;
              END LOOP;
              UPDATE audit_chain SET last_hash = prev WHERE chain = 'default';
            END $$""" % (k, k))
    rc, doc = verify(stack)
    assert rc == 1 and not doc["ok"], doc
    assert doc["first_bad_seq"] is not None and doc["first_bad_seq"] >= k
