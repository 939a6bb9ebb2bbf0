"""Anomaly scoring end to end (issue 10) with the official OpenAI SDK:

- every audit event of a request carries the policy worker's score and reasons;
- a policy `anomaly: {score_gte: 0.7} -> hold` lets a key's ordinary traffic through and stops
  the SDK call that suddenly declares an unseen destructive tool until an admin approves it;
- the baselines live in PostgreSQL (anomaly_baselines): a policy worker killed with SIGKILL and
  restarted scores against what it had learnt (flushed from its tick);
- two policy replicas share baselines eventually: a second replica that already had the key in
  memory picks up what the first learnt (merged from the first's row on its refresh);
- failed answers (read back from the audit trail) raise the score with reason error_rate;
- with a tiny memory limit, baselines leave the worker's memory and come back from their rows.
"""

import csv
import io
import json
import signal
import sys
import threading
import time
from pathlib import Path

import openai
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from lkstack import MODEL, MODEL_ALT, Proc, Stack, StackError, http  # noqa: E402

HOLD_AT = 0.7
POLICY = {"rules": [
    {"id": "anomaly-hold", "when": {"anomaly": {"score_gte": HOLD_AT}}, "action": "hold",
     "message": "Unusual request for this key: a human must approve it."},
]}
WARM = 130  # ordinary requests before the unusual one (maturity n / (n + 20) = 0.87)

TOOLS = [{"type": "function", "function": {"name": "search_docs", "description": "Search the docs.",
                                           "parameters": {"type": "object", "properties": {}}}}]
DESTRUCTIVE = [{"type": "function", "function": {"name": "delete_database", "description": "Drop it all.",
                                                 "parameters": {"type": "object", "properties": {}}}}]


MAX_SUBJECTS = 2  # tiny on purpose: baselines leave the policy worker's memory and come back from their rows


@pytest.fixture(scope="module")
def stack():
    s = Stack(service_env={"policy": {"LUMKEY_ANOMALY_MAX_SUBJECTS": str(MAX_SUBJECTS)}})
    try:
        s.start()
    except StackError as e:
        pytest.fail(f"could not start the Lumkey stack: {e}", pytrace=False)
    yield s
    s.stop()
    reports = s.sanitizer_reports()
    assert not reports, s.redact("\n".join(f"=== {n}\n{t[:4000]}" for n, t in reports))
    s.cleanup_dir()


def wait_for(pred, timeout=20.0, what="condition"):
    end = time.time() + timeout
    while time.time() < end:
        v = pred()
        if v:
            return v
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def anomaly_of(stack, rid, kind="request.accepted"):
    row = stack.wait_audit(rid, kind)
    a = row["anomaly"]
    assert isinstance(a, dict), f"audit row {kind} of {rid} has no anomaly object: {a!r}"
    return a


def ordinary(stack, client, tools=TOOLS, model=MODEL):
    r = client.chat.completions.with_raw_response.create(
        model=model, messages=[{"role": "user", "content": "Find the refund policy."}], tools=tools)
    return r.headers["x-request-id"]


def key_with_policy(stack, tmp_path, name):
    f = tmp_path / f"{name}.json"
    f.write_text(json.dumps(POLICY))
    pol = json.loads(stack.ctl("policy", "create", "--name", name, "--file", str(f), "--format", "json").stdout)
    return json.loads(stack.ctl("keys", "create", "--name", name, "--user", "alice", "--policy", pol["id"],
                                "--format", "json").stdout)


def baseline_rows(stack, key_id):
    with stack.db().cursor() as cur:
        cur.execute("SELECT replica, n FROM anomaly_baselines WHERE subject = %s ORDER BY replica",
                    ("k:" + key_id,))
        return cur.fetchall()


def test_every_audit_event_carries_the_score(stack):
    client = stack.client()
    rid = ordinary(stack, client)
    acc = anomaly_of(stack, rid, "request.accepted")
    done = stack.wait_closing_audit(rid)
    assert done["kind"] == "request.completed" and done["anomaly"] == acc
    assert 0.0 <= acc["score"] <= 1.0 and isinstance(acc["reasons"], list) and isinstance(acc["cold"], bool)
    assert acc["subj"] == "key" and isinstance(acc["n"], int)
    # a new key is cold, and not anomalous for being new
    assert acc["cold"] is True and acc["score"] < HOLD_AT
    # the chain still verifies with the new fields in it
    v = json.loads(stack.ctl("audit", "verify", "--format", "json").stdout)
    assert v["ok"] is True, v
    # and the query API returns them
    q = json.loads(stack.ctl("audit", "query", "--key", stack.key_id, "--format", "json").stdout)
    assert any(isinstance(e.get("anomaly"), dict) and e["request_id"] == rid for e in q["events"]), q


def test_exports_carry_the_score(stack):
    t0 = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() - 1))
    rid = ordinary(stack, stack.client())
    stack.wait_closing_audit(rid)
    t1 = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() + 2))
    # lumkeyctl: JSON lines and CSV (the object as JSON text in one cell)
    p = stack.ctl("audit", "export", "--from", t0, "--to", t1, "--format", "jsonl", "--key", stack.key_id)
    lines = [json.loads(x) for x in p.stdout.decode().splitlines() if json.loads(x)["request_id"] == rid]
    assert len(lines) == 2 and all(isinstance(e["anomaly"], dict) and "score" in e["anomaly"] for e in lines)
    p = stack.ctl("audit", "export", "--from", t0, "--to", t1, "--format", "csv", "--key", stack.key_id)
    rows = [r for r in csv.DictReader(io.StringIO(p.stdout.decode())) if r["request_id"] == rid]
    assert len(rows) == 2 and all(json.loads(r["anomaly"]) == lines[0]["anomaly"] for r in rows), rows
    assert all(r["hdp"] == "" for r in rows)
    # the edge's export endpoint
    h = {"authorization": f"Bearer {stack.admin_token}"}
    st, _, body = http("GET", f"{stack.admin_base}/admin/v1/audit/export?from={t0}&to={t1}&key={stack.key_id}"
                       "&format=csv", None, h)
    rows = [r for r in csv.DictReader(io.StringIO(body.decode())) if r["request_id"] == rid]
    assert st == 200 and len(rows) == 2 and all(json.loads(r["anomaly"])["score"] >= 0 for r in rows), rows


def test_hold_on_score_stops_the_sdk_call_until_approved(stack, tmp_path):
    k = key_with_policy(stack, tmp_path, "anomalous")
    client = stack.client(api_key=k["key"], timeout=120)
    scores = []
    for _ in range(WARM):
        rid = ordinary(stack, client)  # a hold here would block the loop: the test would time out
        time.sleep(0.03)
        scores.append(anomaly_of(stack, rid)["score"])
    assert max(scores) < HOLD_AT, f"ordinary traffic scored {max(scores)}"
    last = anomaly_of(stack, rid)
    assert last["cold"] is False and last["n"] >= WARM - 1

    out = {}

    def call():
        try:
            r = client.chat.completions.with_raw_response.create(
                model=MODEL, messages=[{"role": "user", "content": "Find the refund policy."}],
                tools=TOOLS + DESTRUCTIVE)
            out["rid"] = r.headers["x-request-id"]
            out["status"] = r.http_response.status_code
        except Exception as e:  # noqa: BLE001 - reported by the test
            out["error"] = e

    t = threading.Thread(target=call)
    t.start()
    holds = wait_for(lambda: [h for h in json.loads(stack.ctl("holds", "list", "--format", "json").stdout)["data"]
                              if h["status"] == "pending" and h["key_id"] == k["id"]], what="a pending hold")
    time.sleep(1.0)
    assert t.is_alive() and not out, f"the SDK call was not held: {out}"
    stack.ctl("holds", "approve", holds[0]["id"])
    t.join(60)
    assert not t.is_alive() and "error" not in out, out.get("error")
    assert out["status"] == 200
    row = stack.wait_closing_audit(out["rid"])
    assert row["decision"] == "approved" and row["rule_id"] == "anomaly-hold"
    a = row["anomaly"]
    assert a["score"] >= HOLD_AT and a["reasons"][0]["k"] == "tool" and a["reasons"][0]["v"] == "delete_database"


def test_baselines_survive_a_policy_restart(stack, tmp_path):
    k = json.loads(stack.ctl("keys", "create", "--name", "restart", "--format", "json").stdout)
    client = stack.client(api_key=k["key"])
    for _ in range(60):
        rid = ordinary(stack, client, model=MODEL_ALT)
    assert anomaly_of(stack, rid)["n"] == 59
    # flushed from the tick (about every second), not only at a clean stop
    wait_for(lambda: sum(r["n"] for r in baseline_rows(stack, k["id"])) >= 60, what="the baseline row")
    stack.kill_service("policy", signal.SIGKILL)
    stack.start_service("policy")
    rid = wait_for(lambda: _try(lambda: ordinary(stack, client, model=MODEL_ALT)), what="policy back")
    a = anomaly_of(stack, rid)
    assert a["n"] >= 60 and a["cold"] is False, a
    # and the learnt model mix is still there: the usual model is not a reason
    assert all(r["k"] != "model" for r in a["reasons"]), a


def test_failed_answers_raise_the_score(stack):
    k = json.loads(stack.ctl("keys", "create", "--name", "failing", "--format", "json").stdout)
    client = stack.client(api_key=k["key"])
    for _ in range(4):  # windows of healthy answers (the policy reads closing events every 2 s)
        for _ in range(25):
            rid = ordinary(stack, client)
        stack.wait_closing_audit(rid)
        time.sleep(2.5)
    a = anomaly_of(stack, ordinary(stack, client))
    assert a["score"] < 0.5 and all(r["k"] != "error_rate" for r in a["reasons"]), a
    for _ in range(15):  # then the provider fails every answer
        with pytest.raises(openai.InternalServerError):
            client.chat.completions.create(model=MODEL,
                                           messages=[{"role": "user", "content": "[[mock status=500]] refund?"}])
    time.sleep(3.0)
    a = anomaly_of(stack, ordinary(stack, client))
    assert a["score"] >= 0.8 and a["reasons"][0]["k"] == "error_rate", a


def test_baselines_leave_memory_and_come_back(stack):
    k = json.loads(stack.ctl("keys", "create", "--name", "evicted", "--format", "json").stdout)
    client = stack.client(api_key=k["key"])
    for _ in range(60):
        rid = ordinary(stack, client)
    assert anomaly_of(stack, rid)["n"] == 59
    for i in range(3):  # other subjects push it out (it is the least recently used)
        other = json.loads(stack.ctl("keys", "create", "--name", f"other{i}", "--format", "json").stdout)
        ordinary(stack, stack.client(api_key=other["key"]))
    log = stack.dir / "logs" / "policy.log"
    wait_for(lambda: "subjects left memory" in log.read_text(errors="replace"), what="an eviction")
    time.sleep(2.5)  # a few more ticks: the worker is back under its limit
    rid = ordinary(stack, client)
    a = anomaly_of(stack, rid)
    assert a["n"] == 60 and a["cold"] is False, a  # its own row, read back


def _try(fn):
    try:
        return fn()
    except Exception:  # noqa: BLE001 - retried
        return None


def _edge_to(stack, endpoint):
    stack.kill_service("edge", signal.SIGTERM)
    env = dict(stack.service_env.get("edge", {}))
    if endpoint:
        env["LUMKEY_POLICY_ENDPOINT"] = endpoint
    else:
        env.pop("LUMKEY_POLICY_ENDPOINT", None)
    stack.service_env["edge"] = env
    stack.start_service("edge")


def test_two_policy_replicas_share_baselines(stack, tmp_path):
    ep_b = f"ipc://{stack.dir}/run/policy-b.ipc"
    b = Proc("policy-b", stack.service_argv("policy"),
             stack.env(LUMKEY_POLICY_ENDPOINT=ep_b, LUMKEY_POLICY_REPLICA_ID="replica-b"),
             stack.dir / "logs" / "policy-b.log")
    b.start(stack.dir / "pgids")
    stack.procs["policy-b"] = b
    try:
        k = json.loads(stack.ctl("keys", "create", "--name", "shared", "--format", "json").stdout)
        client = stack.client(api_key=k["key"])
        # replica B meets the key first (and keeps it in memory)
        _edge_to(stack, ep_b)
        rid = wait_for(lambda: _try(lambda: ordinary(stack, client)), what="edge via replica B")
        assert anomaly_of(stack, rid)["n"] == 0
        # replica A (the stack's policy) learns 60 requests, with a model B never saw
        _edge_to(stack, None)
        for _ in range(60):
            rid = ordinary(stack, client, model=MODEL_ALT)
        # its 59 earlier ones + B's one (B's row, read when A met the key)
        assert anomaly_of(stack, rid)["n"] == 60
        wait_for(lambda: any(r["replica"] != "replica-b" and r["n"] >= 60 for r in baseline_rows(stack, k["id"])),
                 what="replica A's row")
        time.sleep(3.0)  # B's refresh (every 2 s)
        # back on B: it counts A's observations, and A's model is no longer new to it
        _edge_to(stack, ep_b)
        rid = wait_for(lambda: _try(lambda: ordinary(stack, client, model=MODEL_ALT)), what="edge via replica B")
        a = anomaly_of(stack, rid)
        assert a["n"] >= 61, a
        assert all(r["k"] != "model" for r in a["reasons"]), a
        rows = baseline_rows(stack, k["id"])
        assert {r["replica"] for r in rows} >= {"replica-b"} and len(rows) == 2, rows
    finally:
        _edge_to(stack, None)
        b.stop(signal.SIGTERM)
        stack.procs.pop("policy-b", None)
