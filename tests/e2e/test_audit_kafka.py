"""Audit export to a real Apache Kafka broker (KRaft, from Maven Central's org.apache.kafka
artifacts), read back with kcat: every event arrives once per event id, in OCSF (or ECS) shape,
keyed by tenant; a broker outage under load and a kill -9 of the audit worker under load lose
nothing and keep per-tenant order with no gaps."""

import json
import threading
import time

import pytest

from kafka import KafkaBroker, KafkaError
from lkstack import MODEL, Stack, StackError, http

TOPIC = "lumkey.audit.test"


@pytest.fixture(scope="session")
def kafka():
    try:
        k = KafkaBroker()
        k.start()
    except (KafkaError, OSError) as e:
        pytest.fail(f"could not start the Kafka broker: {e}", pytrace=False)
    try:
        yield k
    finally:
        k.stop()


@pytest.fixture(scope="session")
def stack(kafka):
    s = Stack(extra_env={"LUMKEY_KAFKA_BROKERS": kafka.brokers, "LUMKEY_KAFKA_TOPIC": TOPIC})
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
    st, _, raw = http(method, stack.admin_base + path, json.dumps(body).encode() if body is not None else None, h,
                      timeout=10)
    return st, json.loads(raw) if raw else None


def ask(stack):
    body = json.dumps({"model": MODEL, "messages": [{"role": "user", "content": "hello"}]}).encode()
    try:
        st, h, _ = stack.chat_raw(body, timeout=10)
        return st, h.get("x-request-id")
    except OSError:
        return 0, None


def drained(stack, timeout=90.0):
    """Until the outbox is empty and nothing is in flight."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        try:
            st, doc = admin(stack, "GET", "/admin/v1/audit/status")
            last = doc
            if st == 200 and doc["outbox_backlog"] == 0 and doc["kafka"]["in_flight"] == 0:
                return doc
        except OSError:
            pass
        time.sleep(0.2)
    raise AssertionError(f"the outbox did not drain in {timeout}s: {last}")


def metric_backlog(stack, timeout=6.0):
    """lumkey_edge_audit_outbox_backlog from the edge's /metrics (refreshed on scrape, every 2 s)."""
    deadline = time.monotonic() + timeout
    while True:
        _, _, body = http("GET", stack.admin_base + "/metrics")
        for line in body.decode().splitlines():
            if line.startswith("lumkey_edge_audit_outbox_backlog "):
                v = int(float(line.split()[1]))
                if v > 0 or time.monotonic() > deadline:
                    return v
        if time.monotonic() > deadline:
            return -1
        time.sleep(0.5)


def db_events(stack):
    with stack.db().cursor() as cur:
        cur.execute("SELECT event_id::text AS eid, chain, chain_seq, kind, request_id FROM audit_events")
        return cur.fetchall()


class Load:
    """Requests in a few threads until stopped; remembers (status, request id)."""

    def __init__(self, stack, threads=3):
        self.stack, self.results, self.stop_flag = stack, [], threading.Event()
        self.threads = [threading.Thread(target=self.run, daemon=True) for _ in range(threads)]

    def run(self):
        while not self.stop_flag.is_set():
            self.results.append(ask(self.stack))

    def __enter__(self):
        for t in self.threads:
            t.start()
        return self

    def __exit__(self, *exc):
        self.stop_flag.set()
        for t in self.threads:
            t.join(timeout=30)


def uid_seq(body):
    """(event id, chain sequence) of an OCSF or ECS message."""
    if "metadata" in body:
        return body["metadata"]["uid"], body["metadata"]["sequence"]
    return body["event"]["id"], body["event"]["sequence"]


def check_every_event_once_in_order(stack, kafka, allow_duplicates):
    drained(stack)
    msgs = kafka.read(TOPIC)
    events = db_events(stack)
    by_eid = {}
    for m in msgs:
        eid = m["headers"].get("lumkey-event-id")
        assert eid and eid == uid_seq(m["body"])[0], "the event UUID is in a header and in the body"
        by_eid.setdefault(eid, []).append(m)
    want = {e["eid"] for e in events}
    missing = want - set(by_eid)
    assert not missing, f"{len(missing)} of {len(want)} events never reached Kafka"
    dups = [e for e, ms in by_eid.items() if len(ms) > 1]
    if not allow_duplicates:
        assert not dups, f"{len(dups)} events were delivered more than once"
    # per key (tenant): chain order, no gaps, once duplicates are dropped
    seen, per_key = set(), {}
    for m in msgs:  # one partition per key: kcat gives offset order
        eid = m["headers"]["lumkey-event-id"]
        if eid in seen:
            continue
        seen.add(eid)
        per_key.setdefault(m["key"], []).append(uid_seq(m["body"])[1])
    for key, seqs in per_key.items():
        assert seqs == sorted(seqs), f"events of {key!r} out of order"
        assert seqs == list(range(seqs[0], seqs[0] + len(seqs))), f"gap in the events of {key!r}"
    return msgs


def test_every_event_arrives_once_in_ocsf(stack, kafka):
    rids = [ask(stack)[1] for _ in range(20)]
    for rid in rids:
        stack.wait_closing_audit(rid)
    msgs = check_every_event_once_in_order(stack, kafka, allow_duplicates=False)
    mine = [m for m in msgs if m["body"].get("api", {}).get("request", {}).get("uid") == rids[0]]
    assert sorted(m["body"]["unmapped"]["kind"] for m in mine) == ["request.accepted", "request.completed"]
    ev = mine[0]["body"]
    assert ev["class_uid"] == 6003 and ev["category_uid"] == 6 and ev["type_uid"] == 600300 + ev["activity_id"]
    assert ev["metadata"]["product"]["name"] == "Lumkey" and isinstance(ev["time"], int)
    assert ev["ai_model"]["model_name"] and ev["actor"]["user"]["credential_uid"] == stack.key_id
    assert mine[0]["key"] == "default", "messages are keyed by tenant"


def test_ecs_is_a_tenant_setting(stack, kafka):
    st, _ = admin(stack, "PATCH", "/admin/v1/audit/settings", {"siem_format": "ecs"})
    assert st == 200
    try:
        st, rid = ask(stack)
        stack.wait_closing_audit(rid)
        drained(stack)
        ecs = [m["body"] for m in kafka.read(TOPIC) if m["body"].get("http", {}).get("request", {}).get("id") == rid]
        assert len(ecs) == 2
        for b in ecs:
            assert b["event"]["category"] == ["api"] and b["event"]["type"] == ["allowed"]
            assert b["@timestamp"].endswith("Z") and b["gen_ai"]["request"]["model"] == MODEL
    finally:
        admin(stack, "PATCH", "/admin/v1/audit/settings", {"siem_format": "ocsf"})


def test_broker_outage_under_load_loses_nothing(stack, kafka):
    with Load(stack) as load:
        time.sleep(1.0)
        kafka.stop()
        time.sleep(4.0)  # events pile up in the outbox
        st, doc = admin(stack, "GET", "/admin/v1/audit/status")
        assert st == 200 and doc["outbox_backlog"] > 0
        assert metric_backlog(stack) > 0, "the edge's /metrics shows the backlog"
        kafka.start()
        time.sleep(1.0)
    ok = [rid for st, rid in load.results if st == 200]
    assert len(ok) > 20, "the load did not get through"
    for rid in ok[-5:]:
        stack.wait_closing_audit(rid)
    check_every_event_once_in_order(stack, kafka, allow_duplicates=True)


def test_audit_kill9_under_load_loses_nothing(stack, kafka):
    with Load(stack) as load:
        time.sleep(1.0)
        stack.kill_service("audit")
        time.sleep(1.0)
        stack.start_service("audit", wait=False)
        time.sleep(2.0)
    stack.wait_ready(timeout=30)
    ok = [rid for st, rid in load.results if st == 200]
    assert len(ok) > 20
    for rid in ok:
        rows = {r["kind"] for r in stack.audit_rows(rid)}
        if not {"request.accepted", "request.completed"} <= rows:
            stack.wait_audit(rid, "request.accepted", timeout=20)
            stack.wait_audit(rid, "request.completed", timeout=20)
    check_every_event_once_in_order(stack, kafka, allow_duplicates=True)
    st, doc = admin(stack, "POST", "/admin/v1/audit/verify")
    assert st == 200 and doc["ok"], doc
