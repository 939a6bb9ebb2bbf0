"""Held requests end to end with the official OpenAI SDK: a policy `hold`
keeps the SDK's call open (streams get keep-alive comments) until a human
decides: approved through a correctly signed Slack click → the SDK gets the
answer and the provider is called only then; rejected → a non-retried 403
with the reviewer's reason; nobody decides → denied at the timeout. An SDK
retry of the same request joins the same hold."""

import json
import os
import signal
import secrets
import sys
import threading
import time
import urllib.parse
from pathlib import Path

import openai
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "slackmock"))

from helpers import marker, mock_requests_with  # noqa: E402
from lkstack import MODEL, Stack, StackError, http  # noqa: E402
from slackmock import SlackMock, slack_signature  # noqa: E402

BOT_TOKEN = "xoxb-hold-" + secrets.token_hex(12)
SIGNING_SECRET = secrets.token_hex(16)
CHANNEL = "C0HOLDS"
HOLD_TIMEOUT_MS = 6000

POLICY = {"rules": [{"id": "wire-transfers", "when": {"text": {"regex": ["(?i)wire transfer"]}},
                     "action": "hold", "message": "Payments need a human."},
                    {"id": "hold-deletes", "on": "answer", "when": {"tool": {"name": ["delete_*"]}},
                     "action": "hold", "message": "Destructive tool calls need a human."}]}


@pytest.fixture(scope="module")
def slack():
    s = SlackMock(BOT_TOKEN, CHANNEL).start()
    yield s
    s.stop()


@pytest.fixture(scope="module")
def stack(slack, tmp_path_factory):
    d = tmp_path_factory.mktemp("holdsecrets")
    files = {}
    for name, value in (("bot", BOT_TOKEN), ("signing", SIGNING_SECRET), ("link", secrets.token_hex(32))):
        f = d / name
        f.write_text(value + "\n")
        f.chmod(0o600)
        files[name] = str(f)
    s = Stack(extra_env={
        "LUMKEY_SLACK_API_BASE": slack.api_base,
        "LUMKEY_SLACK_BOT_TOKEN_FILE": files["bot"],
        "LUMKEY_SLACK_CHANNEL": CHANNEL,
        "LUMKEY_SLACK_SIGNING_SECRET_FILE": files["signing"],
        "LUMKEY_APPROVAL_LINK_KEY_FILE": files["link"],
        "LUMKEY_HOLD_TIMEOUT_MS": str(HOLD_TIMEOUT_MS),
    })
    try:
        s.start()
    except StackError as e:
        pytest.fail(f"could not start the Lumkey stack: {e}", pytrace=False)
    yield s
    logs = s.all_logs_text()
    s.stop()
    assert BOT_TOKEN not in logs and SIGNING_SECRET not in logs, "a Slack secret reached a log"
    s.cleanup_dir()


@pytest.fixture(scope="module")
def held_key(stack, tmp_path_factory):
    f = tmp_path_factory.mktemp("pol") / "hold.json"
    f.write_text(json.dumps(POLICY))
    pol = json.loads(stack.ctl("policy", "create", "--name", "holds", "--file", str(f), "--format", "json").stdout)
    return json.loads(stack.ctl("keys", "create", "--name", "payer", "--user", "alice", "--policy", pol["id"],
                                "--format", "json").stdout)


def pending_holds(stack):
    return [h for h in json.loads(stack.ctl("holds", "list", "--format", "json").stdout)["data"]
            if h["status"] == "pending"]


def wait_for(pred, timeout=15.0, what="condition"):
    end = time.time() + timeout
    while time.time() < end:
        v = pred()
        if v:
            return v
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def click(stack, hold_id, action="lumkey_approve"):
    payload = {"type": "block_actions", "user": {"id": "U0BOB", "username": "bob", "team_id": "T1"},
               "actions": [{"action_id": action, "value": hold_id, "type": "button"}],
               "container": {"message_ts": "1.1", "channel_id": CHANNEL}}
    body = urllib.parse.urlencode({"payload": json.dumps(payload)}).encode()
    ts = str(int(time.time()))
    return http("POST", stack.api_base + "/slack/interactivity", body,
                {"Content-Type": "application/x-www-form-urlencoded", "X-Slack-Request-Timestamp": ts,
                 "X-Slack-Signature": slack_signature(SIGNING_SECRET, ts, body)})


def in_thread(fn):
    out = {}

    def run():
        try:
            out["value"] = fn()
        except Exception as e:  # noqa: BLE001 - handed to the test
            out["error"] = e

    t = threading.Thread(target=run)
    t.start()
    return t, out


def test_held_call_waits_until_approved_in_slack(stack, slack, held_key):
    m = marker()
    client = stack.client(api_key=held_key["key"], max_retries=0, timeout=30)
    t, out = in_thread(lambda: client.chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": f"{m} please send a wire transfer of $900"}]))
    hold = wait_for(lambda: [h for h in pending_holds(stack)], what="a pending hold")[0]
    post = wait_for(lambda: [c for c in slack.calls if c["method"] == "chat.postMessage"
                             and hold["id"] in json.dumps(c["body"])], what="the Slack message")[0]
    assert not post["problems"], post["problems"]
    time.sleep(1.0)
    assert t.is_alive(), "the SDK call returned while held"
    assert mock_requests_with(stack, m) == [], "a held request reached the provider"
    st, _, body = click(stack, hold["id"])
    assert st == 200, body
    t.join(20)
    assert "error" not in out, out.get("error")
    assert out["value"].choices[0].message.content
    assert mock_requests_with(stack, m), "the approved request never reached the provider"
    rid = out["value"]._request_id
    row = stack.wait_closing_audit(rid)
    assert row["decision"] == "approved" and row["rule_id"] == "wire-transfers"


def test_rejected_is_a_non_retried_403_with_the_reason(stack, held_key):
    m = marker()
    client = stack.client(api_key=held_key["key"], max_retries=2, timeout=30)
    t, out = in_thread(lambda: client.chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": f"{m} wire transfer to the Caymans"}]))
    hold = wait_for(lambda: pending_holds(stack), what="a pending hold")[0]
    stack.ctl("holds", "reject", hold["id"], "--reason", "not on my watch")
    t.join(20)
    err = out.get("error")
    assert isinstance(err, openai.PermissionDeniedError), out
    body = err.response.json()["error"]
    assert body["code"] == "request_rejected" and "not on my watch" in body["message"]
    time.sleep(0.5)
    assert mock_requests_with(stack, m) == []
    assert not pending_holds(stack), "the SDK retried a rejected request"


def test_nobody_decides_the_timeout_denies(stack, held_key):
    client = stack.client(api_key=held_key["key"], max_retries=0, timeout=30)
    t0 = time.monotonic()
    with pytest.raises(openai.PermissionDeniedError) as ei:
        client.chat.completions.create(model=MODEL,
                                       messages=[{"role": "user", "content": f"{marker()} wire transfer, quick"}])
    waited = time.monotonic() - t0
    assert ei.value.response.json()["error"]["code"] == "approval_timed_out"
    assert HOLD_TIMEOUT_MS / 1000 - 1 <= waited < HOLD_TIMEOUT_MS / 1000 + 10, waited


def test_a_retry_joins_the_hold_and_streams_get_keepalives(stack, held_key):
    m = marker()
    content = f"{m} wire transfer for the retry test"
    client = stack.client(api_key=held_key["key"], max_retries=0, timeout=30)
    t1, out1 = in_thread(lambda: client.chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": content}]))
    wait_for(lambda: pending_holds(stack), what="a pending hold")
    t2, out2 = in_thread(lambda: client.chat.completions.create(   # the same payload again: joins
        model=MODEL, messages=[{"role": "user", "content": content}]))
    time.sleep(1.0)
    holds = pending_holds(stack)
    assert len(holds) == 1, f"a retry opened a second hold: {holds}"
    # a streamed held request answers 200 at once with keep-alive comments, then the stream after approval
    raw = {}

    def stream_raw():
        import http.client
        host, port = stack.api_addr.split(":")
        c = http.client.HTTPConnection(host, int(port), timeout=30)
        c.request("POST", "/v1/chat/completions", json.dumps(
            {"model": MODEL, "stream": True, "messages": [{"role": "user", "content": f"{m} wire transfer, streamed"}]}),
            {"Authorization": f"Bearer {held_key['key']}", "Content-Type": "application/json"})
        r = c.getresponse()
        raw["status"] = r.status
        raw["body"] = r.read().decode()
    t3 = threading.Thread(target=stream_raw)
    t3.start()
    wait_for(lambda: len(pending_holds(stack)) == 2, what="the streamed request's hold")
    for h in pending_holds(stack):
        stack.ctl("holds", "approve", h["id"])
    for t in (t1, t2, t3):
        t.join(20)
    assert "error" not in out1 and "error" not in out2, (out1, out2)
    assert raw["status"] == 200 and raw["body"].startswith(": held for approval")
    assert "data: [DONE]" in raw["body"]


def decide_when_pending(stack, action, reason=None, kind="answer"):
    hold = wait_for(lambda: [h for h in pending_holds(stack) if h.get("kind", kind) == kind],
                    what=f"a pending {kind} hold")[0]
    args = ["holds", action, hold["id"]] + (["--reason", reason] if reason else [])
    stack.ctl(*args)
    return hold


@pytest.mark.parametrize("stream", [True, False])
def test_held_tool_call_in_the_answer_approved(stack, held_key, stream):
    client = stack.client(api_key=held_key["key"], max_retries=0, timeout=30)

    def call():
        r = client.chat.completions.create(model=MODEL, stream=stream, messages=[
            {"role": "user", "content": f"[[mock tool=delete_user chunks=3]] {marker()} remove bob"}])
        if not stream:
            return [tc.function.name for tc in r.choices[0].message.tool_calls or []]
        return [tc.function.name for ch in r for c in ch.choices for tc in (c.delta.tool_calls or []) if tc.function]
    t, out = in_thread(call)
    hold = decide_when_pending(stack, "approve")
    assert hold.get("tool") in (None, "delete_user")
    t.join(20)
    assert "error" not in out, out.get("error")
    assert "delete_user" in out["value"]


@pytest.mark.parametrize("stream", [True, False])
def test_held_tool_call_in_the_answer_rejected(stack, held_key, stream):
    client = stack.client(api_key=held_key["key"], max_retries=0, timeout=30)
    seen = []

    def call():
        r = client.chat.completions.create(model=MODEL, stream=stream, messages=[
            {"role": "user", "content": f"[[mock tool=delete_table chunks=3]] {marker()} drop it"}])
        for ch in (r if stream else []):
            seen.extend(tc for c in ch.choices for tc in (c.delta.tool_calls or []))
        return r
    t, out = in_thread(call)
    decide_when_pending(stack, "reject", reason="never on prod")
    t.join(20)
    err = out.get("error")
    assert isinstance(err, openai.APIError), out
    assert "never on prod" in str(err) or "never on prod" in (err.body and json.dumps(err.body) or "")
    assert not seen, "a rejected tool call reached the agent"


def test_approval_worker_restarted_while_holding(stack, held_key):
    m = marker()
    client = stack.client(api_key=held_key["key"], max_retries=0, timeout=40)
    t, out = in_thread(lambda: client.chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": f"{m} wire transfer during a restart"}]))
    hold = wait_for(lambda: pending_holds(stack), what="a pending hold")[0]
    stack.kill_service("approval")
    time.sleep(1.5)            # the edge keeps polling; its polls fail meanwhile
    assert t.is_alive()
    stack.start_service("approval")
    wait_for(lambda: stack.ctl("holds", "approve", hold["id"], check=False).returncode == 0,
             what="the restarted approval worker to take the decision")
    t.join(30)
    assert "error" not in out, out.get("error")
    assert out["value"].choices[0].message.content
    assert mock_requests_with(stack, m)


def test_sigterm_releases_held_requests_with_a_retryable_503(stack, held_key):
    """Last in this file: it stops the edge (and starts it again)."""
    client = stack.client(api_key=held_key["key"], max_retries=0, timeout=30)
    t, out = in_thread(lambda: client.chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": f"{marker()} wire transfer at shutdown"}]))
    wait_for(lambda: pending_holds(stack), what="a pending hold")
    edge = stack.procs["edge"]
    edge.expected_dead = True
    os.kill(edge.pid, signal.SIGTERM)
    t.join(20)
    err = out.get("error")
    assert isinstance(err, openai.InternalServerError) and err.status_code == 503, out
    assert err.response.json()["error"]["code"] == "shutting_down"
    assert err.response.headers.get("x-should-retry") != "false"
    assert edge.popen.wait(timeout=40) == 0
    stack.start_service("edge")
