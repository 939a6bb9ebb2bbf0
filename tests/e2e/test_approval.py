"""Approvals end to end (issue 5): holds opened with the approval protocol
(tests/unit/services/lkhold speaks HOLD / HOLD_WAIT as the edge will), Slack
notifications to a stand-in (tests/slackmock), decisions through the edge's
Slack interactivity endpoint (signature checked), Standard Webhooks with
retries, one-time links served by the edge, and the holds admin API /
lumkeyctl. The edge's chat flow is not wired to holds yet: that part is
the lead's, over the same protocol.
"""

import base64
import json
import os
import secrets
import subprocess
import sys
import time
import urllib.parse
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "slackmock"))

from lkstack import Stack, StackError, http  # noqa: E402
from slackmock import SlackMock, WebhookReceiver, slack_signature, verify_standard_webhook  # noqa: E402

BOT_TOKEN = "xoxb-e2e-" + secrets.token_hex(12)
SIGNING_SECRET = secrets.token_hex(16)
WEBHOOK_SECRET = "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode()
CHANNEL = "C0APPROVALS"
SECRETS = [BOT_TOKEN, SIGNING_SECRET, WEBHOOK_SECRET, WEBHOOK_SECRET.removeprefix("whsec_")]


@pytest.fixture(scope="module")
def env():
    slack = SlackMock(BOT_TOKEN, CHANNEL).start()
    hooks = WebhookReceiver(fail_first=2).start()
    tmp = Path(os.environ.get("TMPDIR", "/tmp")) / f"lk-appr-{os.getpid()}"
    tmp.mkdir(exist_ok=True)
    files = {}
    for name, value in (("bot", BOT_TOKEN), ("signing", SIGNING_SECRET), ("webhook", WEBHOOK_SECRET),
                        ("link", secrets.token_hex(32))):
        f = tmp / name
        f.write_text(value + "\n")
        f.chmod(0o600)
        files[name] = str(f)
    yield slack, hooks, files
    slack.stop()
    hooks.stop()
    for f in tmp.iterdir():
        f.unlink()
    tmp.rmdir()


@pytest.fixture(scope="module")
def stack(env):
    slack, hooks, files = env
    s = Stack(extra_env={
        "LUMKEY_SLACK_API_BASE": slack.api_base,
        "LUMKEY_SLACK_BOT_TOKEN_FILE": files["bot"],
        "LUMKEY_SLACK_CHANNEL": CHANNEL,
        "LUMKEY_SLACK_SIGNING_SECRET_FILE": files["signing"],
        "LUMKEY_APPROVAL_WEBHOOK_URL": hooks.base + "/hooks/lumkey",
        "LUMKEY_APPROVAL_WEBHOOK_SECRET_FILE": files["webhook"],
        "LUMKEY_APPROVAL_LINK_KEY_FILE": files["link"],
        "LUMKEY_APPROVAL_LINK_BASE": "http://lumkey.invalid",
        "LUMKEY_APPROVAL_RETRY_BASE_MS": "200",
        "LUMKEY_APPROVAL_ABANDON_MS": "600000",
    })
    try:
        s.start()
    except StackError as e:
        pytest.fail(f"could not start the Lumkey stack: {e}", pytrace=False)
    yield s
    logs = s.all_logs_text()
    s.stop()
    leaked = [i for i, sec in enumerate(SECRETS) if sec in logs]
    assert not leaked, f"secret #{leaked} found in the logs"
    s.cleanup_dir()


def lkhold(stack, *args) -> list[str]:
    exe = stack.build_dir / "tests" / "unit" / "services" / "lkhold"
    ep = f"ipc://{stack.dir}/run/approval.ipc"
    p = subprocess.run([str(exe), args[0], ep, *args[1:]], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                       timeout=20)
    assert p.returncode == 0, p.stdout.decode() + p.stderr.decode()
    return p.stdout.decode().split()


def open_hold(stack, user="alice", tmo=120000, excerpt="") -> str:
    hid, outcome, exp = lkhold(stack, "open", "key_e2e", secrets.token_hex(32), user, str(tmo), excerpt)
    assert outcome == "pending" and hid.startswith("hold_")
    assert int(exp) > time.time() * 1000 + tmo - 5000
    return hid


def wait_for(pred, timeout=15.0, what="condition"):
    end = time.time() + timeout
    while time.time() < end:
        v = pred()
        if v:
            return v
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def post_slack(stack, payload: dict, ts: str | None = None, secret: str = SIGNING_SECRET, sig: str | None = None):
    body = urllib.parse.urlencode({"payload": json.dumps(payload)}).encode()
    ts = ts or str(int(time.time()))
    headers = {"Content-Type": "application/x-www-form-urlencoded", "X-Slack-Request-Timestamp": ts,
               "X-Slack-Signature": sig or slack_signature(secret, ts, body)}
    return http("POST", stack.api_base + "/slack/interactivity", body, headers)


def click(hold_id: str, action="lumkey_approve", user="U0BOB"):
    return {"type": "block_actions", "user": {"id": user, "username": "bob", "team_id": "T1"},
            "actions": [{"action_id": action, "value": hold_id, "type": "button"}],
            "container": {"message_ts": "1.1", "channel_id": CHANNEL}, "response_url": "http://127.0.0.1:9/x"}


def test_slack_message_and_signed_decision(stack, env):
    slack, _, _ = env
    hid = open_hold(stack, excerpt="mail alice@example.com, key sk-abcdefghij0123456789xyz")
    post = wait_for(lambda: [c for c in slack.calls if c["method"] == "chat.postMessage" and
                             hid in json.dumps(c["body"])], what="chat.postMessage")[0]
    assert not post["problems"], post["problems"]
    text = json.dumps(post["body"])
    assert "alice@example.com" not in text and "sk-abcdefghij" not in text  # redacted excerpt
    assert "key_e2e" in text and "needs_human" in text and "mock-gpt" in text and "alice" in text

    # a wrong signature, a stale (but correctly signed) timestamp, no signature: 401, nothing decided
    st, _, _ = post_slack(stack, click(hid), secret="not-the-secret")
    assert st == 401
    st, _, _ = post_slack(stack, click(hid), ts=str(int(time.time()) - 600))
    assert st == 401
    st, _, _ = http("POST", stack.api_base + "/slack/interactivity", b"payload=%7B%7D",
                    {"Content-Type": "application/x-www-form-urlencoded"})
    assert st == 401
    assert lkhold(stack, "wait", hid) == ["pending"]

    # correctly signed: decided, with the Slack user as approver
    st, _, body = post_slack(stack, click(hid))
    assert st == 200, body
    assert lkhold(stack, "wait", hid) == ["approved", "slack:U0BOB"]
    upd = wait_for(lambda: [c for c in slack.calls if c["method"] == "chat.update" and
                            hid in json.dumps(c["body"])], what="chat.update")[0]
    assert not upd["problems"], upd["problems"]
    assert "Approved" in json.dumps(upd["body"]) and "slack:U0BOB" in json.dumps(upd["body"])
    # audited like the admin API: the approver as actor, the hold as object; the refused signatures too
    def audit_rows():
        with stack.db().cursor() as cur:
            cur.execute("SELECT user_id, decision, http_status, error_code FROM audit_events "
                        "WHERE kind = 'admin.holds.decide' AND (rule_id = %s OR user_id = 'slack') "
                        "ORDER BY time", (hid,))
            return cur.fetchall()
    rows = wait_for(lambda: [r for r in audit_rows() if r["http_status"] == 200] and audit_rows(),
                    what="audit of the Slack decision")
    assert {"user_id": "slack:U0BOB", "decision": "allow", "http_status": 200, "error_code": None} in rows
    assert sum(1 for r in rows if r["http_status"] == 401 and r["error_code"] == "invalid_signature") >= 3
    # a replayed click changes nothing
    st, _, body = post_slack(stack, click(hid, "lumkey_reject"))
    assert st == 200 and b"already decided" in body
    assert lkhold(stack, "wait", hid) == ["approved", "slack:U0BOB"]
    # the requester cannot approve their own request from Slack either
    hid2 = open_hold(stack, user="carol")
    payload = click(hid2, user="U0CAROL")
    payload["user"]["username"] = "carol"
    st, _, body = post_slack(stack, payload)
    assert st == 200 and b"cannot decide" in body
    assert lkhold(stack, "wait", hid2) == ["pending"]
    assert not slack.problems, slack.problems


def test_webhook_signed_retried_same_id(stack, env):
    _, hooks, _ = env
    hid = open_hold(stack)

    def mine():
        return [d for d in hooks.deliveries if hid.encode() in d["body"] and b"hold.created" in d["body"]]

    got = wait_for(lambda: len(mine()) >= 3 and mine(), timeout=30, what="3 webhook attempts")
    ids = {d["headers"]["webhook-id"] for d in got}
    assert len(ids) == 1 and next(iter(ids)).startswith("msg_")  # stable across retries
    for d in got:
        assert verify_standard_webhook(WEBHOOK_SECRET, d["headers"], d["body"])
        assert not verify_standard_webhook("whsec_" + base64.b64encode(b"x" * 32).decode(), d["headers"], d["body"])
    assert got[1]["at"] - got[0]["at"] >= 0.15 and got[2]["at"] - got[1]["at"] >= 0.3  # backoff
    ev = json.loads(got[-1]["body"])
    assert ev["type"] == "hold.created" and ev["data"]["id"] == hid and ev["data"]["status"] == "pending"
    time.sleep(1.0)
    assert len(mine()) == 3  # delivered: no more attempts


def test_one_time_links(stack, env):
    _, hooks, _ = env
    hid = open_hold(stack)
    d = wait_for(lambda: [x for x in hooks.deliveries if hid.encode() in x["body"] and
                          hooks.seen.get(x["headers"]["webhook-id"], 0) >= 3], timeout=30, what="webhook")[-1]
    data = json.loads(d["body"])["data"]
    approve = urllib.parse.urlparse(data["approve_url"]).path
    reject = urllib.parse.urlparse(data["reject_url"]).path
    assert approve.startswith("/approvals/v1/links/" + hid + ".approve.")
    # GET shows a form and decides nothing (link previews)
    st, _, body = http("GET", stack.api_base + approve)
    assert st == 200 and b"<form" in body
    assert lkhold(stack, "wait", hid) == ["pending"]
    # a tampered link is refused
    st, _, _ = http("POST", stack.api_base + approve[:-2] + ("AA" if not approve.endswith("AA") else "BB"), b"")
    assert st == 403
    assert lkhold(stack, "wait", hid) == ["pending"]
    # the link works once
    st, _, body = http("POST", stack.api_base + approve, b"")
    assert st == 200, body
    assert lkhold(stack, "wait", hid) == ["approved", "link"]
    st, _, _ = http("POST", stack.api_base + approve, b"")
    assert st == 409
    st, _, _ = http("POST", stack.api_base + reject, b"")
    assert st == 409
    assert lkhold(stack, "wait", hid) == ["approved", "link"]
    with stack.db().cursor() as cur:
        cur.execute("SELECT http_status FROM audit_events WHERE kind = 'admin.holds.redeem_link' AND rule_id = %s",
                    (hid,))
        assert sorted(r["http_status"] for r in cur.fetchall()) == [200, 403, 409, 409]


def test_admin_api_and_ctl(stack):
    hid = open_hold(stack, user="dave")
    p = stack.ctl("holds", "list", "--status", "pending", "--format", "json")
    rows = json.loads(p.stdout)["data"]
    assert hid in [r["id"] for r in rows] and all(r["status"] == "pending" for r in rows)
    p = stack.ctl("holds", "show", hid)
    assert hid in p.stdout.decode() and "dave" in p.stdout.decode()
    p = stack.ctl("holds", "reject", hid, check=False)
    assert p.returncode == 2  # --reason is required
    p = stack.ctl("holds", "reject", hid, "--reason", "not today")
    assert "rejected" in p.stdout.decode()
    assert lkhold(stack, "wait", hid)[0] == "rejected"
    p = stack.ctl("holds", "approve", hid, check=False)
    assert p.returncode == 1 and b"409" in p.stderr  # decided once
    # the admin API needs a token
    st, _, _ = http("GET", stack.admin_base + "/admin/v1/holds")
    assert st == 401


def test_outbox_survives_worker_restart(stack, env):
    """A webhook that could not be delivered yet is delivered by the restarted worker, same webhook-id."""
    _, hooks, _ = env
    hooks.fail_first = 1000
    try:
        hid = open_hold(stack)

        def mine():
            return [d for d in hooks.deliveries if hid.encode() in d["body"] and b"hold.created" in d["body"]]

        wait_for(lambda: len(mine()) >= 2, timeout=20, what="two failed attempts")
        stack.kill_service("approval")  # kill -9, mid-retries
    finally:
        hooks.fail_first = 0
    before = len(mine())
    stack.start_service("approval")
    assert lkhold(stack, "wait", hid) == ["pending"]  # the hold survived too
    got = wait_for(lambda: len(mine()) > before and mine(), timeout=30, what="delivery after restart")
    assert len({d["headers"]["webhook-id"] for d in got}) == 1
    assert verify_standard_webhook(WEBHOOK_SECRET, got[-1]["headers"], got[-1]["body"])
    q = ("SELECT status FROM hold_deliveries WHERE hold_id = %s AND channel = 'webhook' "
         "AND event = 'hold.created'")
    with stack.db().cursor() as cur:
        wait_for(lambda: cur.execute(q, (hid,)).fetchone()["status"] == "delivered", what="the row delivered")


def test_ctl_watch(stack):
    """holds list --watch redraws until interrupted."""
    from lkstack import binary
    env = stack._tool_env(LUMKEY_ADDR=stack.admin_base, LUMKEY_TOKEN=stack.admin_token)
    p = subprocess.Popen([str(binary("ctl", stack.build_dir)), "holds", "list", "--watch"], env=env,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    time.sleep(3.0)
    p.terminate()
    out, _ = p.communicate(timeout=10)
    assert out.decode().count("--- holds at ") >= 2 and "STATUS" in out.decode()
