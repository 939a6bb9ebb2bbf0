"""LUMKEY_AUDIT_MODE=off: the benchmark-only comparison setting (issue 9).

- refused (the edge does not start) unless LUMKEY_I_UNDERSTAND_AUDIT_IS_OFF=1 is set too, and any
  other mode value is refused;
- with the acknowledgement, the edge says so loudly (log, /metrics lumkey_edge_audit_mode), requests
  pass without any audit event — even with lumkey-audit stopped, so no audit call is made — and no
  audit row is written for them (checked against a control request with the audit on, whose rows
  appear);
- back to the default, the same requests are audited again.
"""

import json
import signal
import subprocess
import time
import uuid

from lkstack import MODEL, binary, free_port, http

OFF = {"LUMKEY_AUDIT_MODE": "off", "LUMKEY_I_UNDERSTAND_AUDIT_IS_OFF": "1"}


def ask(stack):
    body = {"model": MODEL, "messages": [{"role": "user", "content": f"audit off {uuid.uuid4()}"}]}
    st, h, raw = stack.chat_raw(json.dumps(body).encode())
    return st, h.get("x-request-id"), raw


def metrics(stack) -> str:
    st, _, body = http("GET", stack.admin_base + "/metrics")
    assert st == 200
    return body.decode()


def metric_value(text: str, name: str) -> float:
    for line in text.splitlines():
        if line.startswith(name + " ") or line.startswith(name + "{"):
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"{name} missing from /metrics")


def run_edge(stack, **env):
    """Starts a second edge on free ports with env added; returns (exit status or None if still up, log)."""
    e = stack.env(LUMKEY_LISTEN=f"127.0.0.1:{free_port()}", LUMKEY_ADMIN_LISTEN=f"127.0.0.1:{free_port()}", **env)
    p = subprocess.Popen([str(binary("edge", stack.build_dir))], env=e, stdout=subprocess.PIPE,
                         stderr=subprocess.STDOUT)
    try:
        out, _ = p.communicate(timeout=10)
        return p.returncode, out.decode(errors="replace")
    except subprocess.TimeoutExpired:
        p.send_signal(signal.SIGTERM)
        out, _ = p.communicate(timeout=30)
        return None, out.decode(errors="replace")


def test_off_is_refused_without_the_acknowledgement(stack):
    rc, log = run_edge(stack, LUMKEY_AUDIT_MODE="off")
    assert rc not in (None, 0), f"the edge started with the audit off and no acknowledgement:\n{stack.redact(log)}"
    assert "LUMKEY_I_UNDERSTAND_AUDIT_IS_OFF" in log, stack.redact(log)
    rc, log = run_edge(stack, LUMKEY_AUDIT_MODE="off", LUMKEY_I_UNDERSTAND_AUDIT_IS_OFF="yes")
    assert rc not in (None, 0), "only LUMKEY_I_UNDERSTAND_AUDIT_IS_OFF=1 acknowledges"
    rc, log = run_edge(stack, LUMKEY_AUDIT_MODE="sometimes")
    assert rc not in (None, 0) and "LUMKEY_AUDIT_MODE must be on or off" in log, stack.redact(log)


def test_default_mode_is_on_and_audits(stack):
    text = metrics(stack)
    assert 'lumkey_edge_audit_mode{mode="on"} 1' in text
    st, rid, _ = ask(stack)
    assert st == 200
    row = stack.wait_closing_audit(rid)
    assert row["kind"] == "request.completed"
    assert {r["kind"] for r in stack.audit_rows(rid)} == {"request.accepted", "request.completed"}


def test_off_with_the_acknowledgement_forwards_without_audit(stack):
    stack.kill_service("edge", sig=signal.SIGTERM)
    stack.service_env["edge"] = dict(OFF)
    try:
        stack.start_service("edge")
        log = (stack.dir / "logs" / "edge.log").read_text(errors="replace")
        assert "AUDIT IS OFF" in log, "the edge says loudly at start that the audit is off"
        text = metrics(stack)
        assert 'lumkey_edge_audit_mode{mode="off"} 1' in text
        before = metric_value(text, "lumkey_edge_audit_off_requests_total")
        rids = []
        for _ in range(3):
            st, rid, raw = ask(stack)
            assert st == 200, stack.redact(raw)
            rids.append(rid)
        # no audit call at all: requests pass with lumkey-audit stopped
        stack.kill_service("audit")
        st, rid, raw = ask(stack)
        assert st == 200, stack.redact(raw)
        rids.append(rid)
        assert metric_value(metrics(stack), "lumkey_edge_audit_off_requests_total") - before == 4
        # closing events are sent after the answer: give them time to (not) arrive
        stack.start_service("audit", wait=True)
        time.sleep(1.5)
        for rid in rids:
            assert stack.audit_rows(rid) == [], f"audit rows written for {rid} with the audit off"
    finally:
        stack.service_env.pop("edge", None)
        if not stack.procs["audit"].alive():
            stack.start_service("audit", wait=False)
        stack.kill_service("edge", sig=signal.SIGTERM)
        stack.start_service("edge")
    # back to the default: audited again
    assert 'lumkey_edge_audit_mode{mode="on"} 1' in metrics(stack)
    st, rid, _ = ask(stack)
    assert st == 200
    assert stack.wait_closing_audit(rid)["kind"] == "request.completed"
