"""A worker dies: the edge answers 503 in OpenAI's shape within the hop deadline, fails closed
when audit is gone, and serves again once the worker is back, without an edge restart."""

import time

import openai
import pytest

from helpers import error_body, marker, mock_requests_with, sdk_error_parts
from lkstack import MODEL


def _ask(stack, text, **kw):
    return stack.client(**kw).chat.completions.create(model=MODEL, messages=[{"role": "user", "content": text}])


def _down_then_back(stack, service):
    edge_pid = stack.procs["edge"].pid
    _ask(stack, "warm up")  # the path works before
    stack.kill_service(service)
    try:
        m = marker()
        t0 = time.monotonic()
        with pytest.raises(openai.APIStatusError) as ei:
            _ask(stack, f"while {service} is down {m}")
        elapsed = time.monotonic() - t0
        status, headers, body = sdk_error_parts(ei.value)
        assert status == 503, f"with {service} down the edge answered {status}"
        err = error_body(body)
        assert err["type"] == "api_error" or err["code"] == "service_unavailable"
        assert headers.get("x-request-id")
        # one hop deadline (plus room for a slow machine), never the SDK's 60 s timeout
        bound = stack.hop_timeout_ms / 1000 * 2 + 3
        assert elapsed < bound, f"503 took {elapsed:.2f}s (hop deadline {stack.hop_timeout_ms} ms)"
        assert not mock_requests_with(stack, m), f"with {service} down the request still reached the provider"
        rid = headers["x-request-id"]
        # /readyz notices too (and then a fresh "up" can only come from the new process)
        stack.wait_service_down(service)
        st, _ = stack.readiness()
        assert st == 503, f"/readyz answered {st} with {service} down"
    finally:
        stack.start_service(service, wait=False)
    stack.wait_ready(timeout=30)
    ok = _ask(stack, f"after {service} is back {marker()}")
    assert ok.choices[0].message.content
    assert stack.procs["edge"].pid == edge_pid and stack.procs["edge"].alive(), "the edge was restarted"
    return rid


def test_policy_down_gives_503_then_recovers(stack):
    rid = _down_then_back(stack, "policy")
    # audit was up the whole time: the refusal is on record
    row = stack.wait_closing_audit(rid)
    assert row["http_status"] == 503


def test_vault_down_gives_503_then_recovers(stack):
    rid = _down_then_back(stack, "vault")
    row = stack.wait_closing_audit(rid)
    assert row["http_status"] == 503


def test_audit_down_fails_closed_then_recovers(stack):
    """Audit cannot record the accept event: the request must not be forwarded (fail closed)."""
    _down_then_back(stack, "audit")
    # and once audit is back, requests are recorded again
    raw = stack.client().chat.completions.with_raw_response.create(
        model=MODEL, messages=[{"role": "user", "content": "recorded again?"}])
    row = stack.wait_audit(raw.headers["x-request-id"], "request.completed")
    assert row["http_status"] == 200


def test_streams_survive_a_worker_restart_elsewhere(stack):
    """A stream in flight does not depend on policy once accepted: kill policy mid-stream."""
    stream = stack.client().chat.completions.create(
        model=MODEL, stream=True,
        messages=[{"role": "user", "content": f"[[mock chunks=6 interval_ms=150]] {marker()}"}])
    it = iter(stream)
    first = next(it)
    assert first is not None
    stack.kill_service("policy")
    try:
        rest = list(it)
        content = "".join(ch.delta.content or "" for c in [first, *rest] for ch in c.choices if ch.delta)
        assert content
        assert any(ch.finish_reason == "stop" for c in rest for ch in c.choices)
        stack.wait_service_down("policy")
    finally:
        stack.start_service("policy", wait=False)
    stack.wait_ready(timeout=30)
    assert _ask(stack, "policy is back").choices[0].message.content



def test_livez_does_not_depend_on_workers(stack):
    from lkstack import http
    stack.kill_service("approval")
    try:
        stack.wait_service_down("approval")
        st, _ = stack.readiness()
        assert st == 503
        st, _, _ = http("GET", stack.api_base + "/livez")
        assert st == 200, "/livez should not depend on workers"
    finally:
        stack.start_service("approval", wait=False)
    stack.wait_ready(timeout=30)
