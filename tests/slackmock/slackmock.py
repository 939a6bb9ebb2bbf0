"""slackmock - a Slack Web API stand-in and a webhook receiver on loopback, for tests.

SlackMock serves POST /api/chat.postMessage and /api/chat.update like Slack
(answers {"ok": true, "channel", "ts"}), records every call, and checks each
call's shape: the bot token in `Authorization: Bearer`, a JSON body, the
expected channel, a fallback `text`, Block Kit `blocks`; a postMessage must
carry an actions block with exactly two buttons (lumkey_approve primary,
lumkey_reject danger) whose `value` is the hold id; an update must name the
ts of the posted message and carry no buttons. Shape problems are collected
in `problems` (and answered ok:false, as Slack would).

WebhookReceiver records every delivery (headers, raw body) and answers 500
to the first `fail_first` requests of each webhook-id, 200 after.
`verify_standard_webhook` checks a delivery with the Standard Webhooks
algorithm (https://www.standardwebhooks.com).
"""

import base64
import hashlib
import hmac
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class _Server:
    def __init__(self, handler_cls):
        self.lock = threading.Lock()
        owner = self

        class H(handler_cls):
            server_owner = owner

            def log_message(self, *a):  # quiet
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), H)
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}"

    def start(self):
        self.thread.start()
        return self

    def stop(self):
        self.httpd.shutdown()
        self.httpd.server_close()


class _SlackHandler(BaseHTTPRequestHandler):
    def do_POST(self):
        o = self.server_owner
        n = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(n)
        method = self.path.rsplit("/", 1)[-1]
        problems = []
        if self.headers.get("Authorization") != f"Bearer {o.token}":
            problems.append("bad or missing bot token")
        if not (self.headers.get("Content-Type") or "").startswith("application/json"):
            problems.append("not JSON")
        try:
            body = json.loads(raw)
        except ValueError:
            body = {}
            problems.append("body is not JSON")
        problems += o.check(method, body)
        with o.lock:
            o.calls.append({"method": method, "body": body, "problems": problems})
            o.problems += [f"{method}: {p}" for p in problems]
            ts = f"{int(time.time())}.{len(o.calls):06d}"
        if method not in ("chat.postMessage", "chat.update"):
            answer = {"ok": False, "error": "unknown_method"}
        elif problems:
            answer = {"ok": False, "error": "invalid_arguments"}
        else:
            answer = {"ok": True, "channel": body.get("channel"), "ts": body.get("ts") or ts}
        data = json.dumps(answer).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


class SlackMock(_Server):
    def __init__(self, token: str, channel: str):
        super().__init__(_SlackHandler)
        self.token, self.channel = token, channel
        self.calls: list[dict] = []
        self.problems: list[str] = []

    @property
    def api_base(self) -> str:
        return self.base + "/api"

    def check(self, method: str, b: dict) -> list[str]:
        p = []
        if b.get("channel") != self.channel and method == "chat.postMessage":
            p.append("wrong channel")
        if not isinstance(b.get("text"), str) or not b.get("text"):
            p.append("no fallback text")
        blocks = b.get("blocks")
        if not isinstance(blocks, list) or not blocks:
            return p + ["no blocks"]
        for blk in blocks:
            if not isinstance(blk, dict) or blk.get("type") not in ("section", "context", "actions", "divider",
                                                                     "header"):
                p.append("unknown block type")
        actions = [blk for blk in blocks if blk.get("type") == "actions"]
        if method == "chat.postMessage":
            if len(actions) != 1:
                return p + ["no actions block"]
            els = actions[0].get("elements") or []
            if len(els) != 2 or any(e.get("type") != "button" for e in els):
                p.append("not two buttons")
            else:
                ids = {e.get("action_id"): e for e in els}
                if set(ids) != {"lumkey_approve", "lumkey_reject"}:
                    p.append("wrong action ids")
                elif ids["lumkey_approve"].get("style") != "primary" or ids["lumkey_reject"].get("style") != "danger":
                    p.append("wrong button styles")
                vals = {e.get("value") for e in els}
                if len(vals) != 1 or not str(next(iter(vals))).startswith("hold_"):
                    p.append("buttons do not carry the hold id")
                for e in els:
                    t = e.get("text") or {}
                    if t.get("type") != "plain_text" or not t.get("text"):
                        p.append("button text is not plain_text")
        elif method == "chat.update":
            if not b.get("ts"):
                p.append("update without ts")
            if actions:
                p.append("decided message still has buttons")
        return p


class _HookHandler(BaseHTTPRequestHandler):
    def do_POST(self):
        o = self.server_owner
        n = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(n)
        wid = self.headers.get("webhook-id", "")
        with o.lock:
            o.deliveries.append({"headers": {k.lower(): v for k, v in self.headers.items()}, "body": raw,
                                 "at": time.time()})
            o.seen[wid] = o.seen.get(wid, 0) + 1
            fail = o.seen[wid] <= o.fail_first
        self.send_response(500 if fail else 200)
        self.send_header("Content-Length", "0")
        self.end_headers()


class WebhookReceiver(_Server):
    def __init__(self, fail_first: int = 0):
        super().__init__(_HookHandler)
        self.fail_first = fail_first
        self.deliveries: list[dict] = []
        self.seen: dict[str, int] = {}


def verify_standard_webhook(secret: str, headers: dict, body: bytes, tolerance_s: int = 300) -> bool:
    """The Standard Webhooks check: v1 = base64(HMAC-SHA256(base64-decoded whsec_ secret, id.ts.body))."""
    wid, ts, sigs = headers.get("webhook-id"), headers.get("webhook-timestamp"), headers.get("webhook-signature")
    if not (wid and ts and sigs):
        return False
    if abs(time.time() - int(ts)) > tolerance_s:
        return False
    key = base64.b64decode(secret.removeprefix("whsec_"))
    want = base64.b64encode(hmac.new(key, f"{wid}.{ts}.".encode() + body, hashlib.sha256).digest()).decode()
    return any(s.startswith("v1,") and hmac.compare_digest(s[3:], want) for s in sigs.split(" "))


def slack_signature(signing_secret: str, ts: str, body: bytes) -> str:
    """X-Slack-Signature for body sent at ts."""
    base = b"v0:" + ts.encode() + b":" + body
    return "v0=" + hmac.new(signing_secret.encode(), base, hashlib.sha256).hexdigest()
