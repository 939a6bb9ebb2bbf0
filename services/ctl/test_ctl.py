#!/usr/bin/env python3
"""test_ctl - runs lumkeyctl against a small stand-in for the edge's admin API.

usage: test_ctl.py PATH/TO/lumkeyctl

The stand-in (python3 http.server) implements /readyz and the
/admin/v1/providers and /admin/v1/keys endpoints with the documented shapes,
records every request, and lets each check look at what lumkeyctl sent: the
provider key comes from stdin or a file (never argv), the token only from the
environment or a file, and neither is ever printed.
"""
import json
import os
import socket
import subprocess
import sys
import tempfile
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

CTL = sys.argv[1] if len(sys.argv) > 1 else "lumkeyctl"
TOKEN = "lk_adm_TESTTOKEN0000000secretsecretsecretsecretsecret000000"
PROVIDER_SECRET = "sk-provider-very-secret-123"
NEW_KEY = "lk_live_0123456789abcdefNEWKEYSECRETxxxxxxxxxxxxxxxxxxxxxxxxxxxxx00000"
ROTATED_KEY = "lk_live_fedcba9876543210ROTATEDKEYxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx00000"
NEW_ADMIN_TOKEN = "lk_adm_0123456789abcdefNEWADMINTOKENxxxxxxxxxxxxxxxxxxxxxxxxxxxxx00000"
FAILS = []


def check(cond, what):
    print(("ok   " if cond else "FAIL ") + what, flush=True)
    if not cond:
        FAILS.append(what)


class State:
    def __init__(self):
        self.requests = []
        self.providers = []
        self.keys = []
        self.tokens = []
        self.ready = True
        self.fail_with = None  # (status, raw body) for the next admin call


STATE = State()


class Admin(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def reply(self, status, body, ctype="application/json"):
        raw = body if isinstance(body, bytes) else json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(raw)))
        self.end_headers()
        self.wfile.write(raw)

    def error(self, status, message, code):
        self.reply(status, {"error": {"message": message, "type": "invalid_request_error", "code": code}})

    def handle_any(self, method):
        n = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(n) if n else b""
        STATE.requests.append({"method": method, "path": self.path, "headers": dict(self.headers.items()),
                               "body": raw.decode("utf-8", "replace")})
        if self.path == "/readyz" and method == "GET":
            return self.reply(200 if STATE.ready else 503, {"status": "ready" if STATE.ready else "draining"})
        if not self.path.startswith("/admin/v1/"):
            return self.error(404, "not found", "not_found")
        if self.headers.get("Authorization") != "Bearer " + TOKEN:
            return self.error(401, "invalid admin token", "unauthorized")
        if STATE.fail_with:
            status, body = STATE.fail_with
            STATE.fail_with = None
            return self.reply(status, body, "text/plain")
        try:
            body = json.loads(raw) if raw else None
        except ValueError:
            return self.error(400, "body is not JSON", "bad_json")
        if self.path == "/admin/v1/providers" and method == "POST":
            for f in ("name", "kind", "base_url", "api_key"):
                if not isinstance(body.get(f), str) or not body[f]:
                    return self.error(400, "missing " + f, "missing_field")
            if any(p["name"] == body["name"] for p in STATE.providers):
                return self.error(409, "provider %s already exists" % body["name"], "conflict")
            p = {"id": "prv_%04d" % (len(STATE.providers) + 1), "name": body["name"], "kind": body["kind"],
                 "base_url": body["base_url"], "models": body.get("models", []),
                 "credential": {"id": "cred_%04d" % (len(STATE.providers) + 1), "fingerprint": "sha256:ab12cd34"},
                 "created_at": 1764195000}
            STATE.providers.append(p)
            return self.reply(201, p)
        if self.path == "/admin/v1/providers" and method == "GET":
            return self.reply(200, {"data": STATE.providers})
        if self.path == "/admin/v1/keys" and method == "POST":
            if not isinstance(body.get("name"), str):
                return self.error(400, "missing name", "missing_field")
            k = {"id": "key_%016d" % (len(STATE.keys) + 1), "key": NEW_KEY, "name": body["name"],
                 "user": body.get("user"), "env": body.get("env", "live"), "models": body.get("models", []),
                 "expires_at": body.get("expires_at"), "metadata": body.get("metadata", {}),
                 "created_at": 1764195000}
            STATE.keys.append(k)
            return self.reply(201, k)
        if self.path == "/admin/v1/keys" and method == "GET":
            return self.reply(200, {"data": [{f: v for f, v in k.items() if f != "key"} for k in STATE.keys]})
        if self.path == "/admin/v1/tokens" and method == "POST":
            t = {"id": "adm_%016d" % (len(STATE.tokens) + 1), "token": NEW_ADMIN_TOKEN, "name": body.get("name"),
                 "role": body.get("role"), "created_at": 1764195000, "revoked_at": None, "status": "active"}
            STATE.tokens.append(t)
            return self.reply(201, t)
        if self.path == "/admin/v1/tokens" and method == "GET":
            return self.reply(200, {"data": [{f: v for f, v in t.items() if f != "token"} for t in STATE.tokens]})
        parts = self.path.split("/")  # "", admin, v1, keys, ID[, verb]
        if len(parts) == 6 and parts[3] == "tokens" and parts[5] == "revoke" and method == "POST":
            found = [t for t in STATE.tokens if t["id"] == parts[4]]
            if not found:
                return self.error(404, "No such object.", "not_found")
            found[0].update(revoked_at=1764195100, status="revoked")
            return self.reply(200, {f: v for f, v in found[0].items() if f != "token"})
        if len(parts) in (5, 6) and parts[3] in ("keys", "providers"):
            coll = STATE.keys if parts[3] == "keys" else STATE.providers
            found = [o for o in coll if o["id"] == parts[4]]
            if not found:
                return self.error(404, "No such object.", "not_found")
            obj = {f: v for f, v in found[0].items() if f != "key"}
            verb = parts[5] if len(parts) == 6 else None
            if verb is None and method == "GET":
                return self.reply(200, obj)
            if verb is None and method == "PATCH" and parts[3] == "keys":
                found[0].update(body)
                obj.update(body)
                return self.reply(200, obj)
            if verb == "revoke" and method == "POST":
                found[0]["revoked_at"] = 1764195100
                found[0]["status"] = "revoked"
                return self.reply(200, {f: v for f, v in found[0].items() if f != "key"})
            if verb == "rotate" and method == "POST":
                nk = dict(obj, id="key_%016d" % (len(STATE.keys) + 1), key=ROTATED_KEY)
                STATE.keys.append(nk)
                return self.reply(201, {"key": nk, "previous": {"id": obj["id"], "expires_at": 1764281500}})
        return self.error(404, "no route", "not_found")

    def do_GET(self):
        self.handle_any("GET")

    def do_POST(self):
        self.handle_any("POST")

    def do_PATCH(self):
        self.handle_any("PATCH")


def run(args, stdin=None, env_extra=None, token=True, addr=None):
    env = {k: v for k, v in os.environ.items() if not k.startswith("LUMKEY_")}
    if token:
        env["LUMKEY_TOKEN"] = TOKEN
    env["LUMKEY_ADDR"] = addr or ADDR
    env.update(env_extra or {})
    p = subprocess.run([CTL, *args], input=stdin, capture_output=True, text=True, env=env, timeout=30)
    leaked = TOKEN in p.stdout or TOKEN in p.stderr or PROVIDER_SECRET in p.stdout or PROVIDER_SECRET in p.stderr
    if leaked:
        check(False, "secret printed by: lumkeyctl " + " ".join(args))
    if "Sanitizer" in p.stderr or "runtime error" in p.stderr:
        check(False, "sanitizer report from: lumkeyctl " + " ".join(args))
        print(p.stderr[-3000:])
    return p


def last_request():
    return STATE.requests[-1]


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def main():
    global ADDR
    server = ThreadingHTTPServer(("127.0.0.1", 0), Admin)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    ADDR = "http://127.0.0.1:%d" % server.server_address[1]
    tmp = tempfile.mkdtemp(prefix="ctl_test.")
    try:
        tests(tmp)
    finally:
        server.shutdown()
    if FAILS:
        print("%d check(s) failed" % len(FAILS))
        sys.exit(1)
    print("all checks passed")


def tests(tmp):
    # --- help and usage
    p = run(["help"])
    check(p.returncode == 0 and "providers create" in p.stdout, "help: exit 0, lists commands")
    p = run([])
    check(p.returncode == 2, "no command: exit 2")
    p = run(["frobnicate"])
    check(p.returncode == 2 and "unknown command" in p.stderr, "unknown command: exit 2")
    p = run(["keys", "list", "--token", "abc"])
    check(p.returncode == 2 and "LUMKEY_TOKEN" in p.stderr and "ps" in p.stderr, "--token on argv refused")
    p = run(["providers", "create", "--name", "x", "--kind", "openai", "--base-url", "u", "--api-key", "sk"])
    check(p.returncode == 2 and "--api-key-stdin" in p.stderr, "--api-key on argv refused")
    p = run(["keys", "list", "--format", "yaml"])
    check(p.returncode == 2, "--format yaml: exit 2")

    # --- status
    p = run(["status"], token=False)
    check(p.returncode == 0 and "ready" in p.stdout and ADDR in p.stdout, "status: ready")
    check("Authorization" not in last_request()["headers"], "status: no token sent to /readyz")
    p = run(["status", "--format", "json"])
    check(p.returncode == 0 and json.loads(p.stdout)["ready"] is True, "status: json")
    STATE.ready = False
    p = run(["status"])
    check(p.returncode == 1 and "not ready" in p.stdout and "503" in p.stdout, "status: not ready -> exit 1")
    STATE.ready = True

    # --- providers create: key from stdin, never from argv
    n = len(STATE.requests)
    p = run(["providers", "create", "--name", "openai-main", "--kind", "openai", "--base-url",
             "https://api.openai.com/v1", "--models", "gpt-4o-mini, gpt-4o", "--api-key-stdin"],
            stdin=PROVIDER_SECRET + "\n")
    check(p.returncode == 0, "providers create (stdin): exit 0 [%s]" % p.stderr.strip())
    req = last_request()
    body = json.loads(req["body"])
    check(len(STATE.requests) == n + 1 and req["method"] == "POST" and req["path"] == "/admin/v1/providers",
          "providers create: POST /admin/v1/providers")
    check(req["headers"].get("Authorization") == "Bearer " + TOKEN, "providers create: Bearer admin token")
    check(req["headers"].get("Content-Type") == "application/json", "providers create: JSON content type")
    check(body == {"name": "openai-main", "kind": "openai", "base_url": "https://api.openai.com/v1",
                   "api_key": PROVIDER_SECRET, "models": ["gpt-4o-mini", "gpt-4o"]},
          "providers create: body (key from stdin, newline trimmed, models split)")
    check("prv_0001" in p.stdout and "credential.fingerprint" in p.stdout and "sha256:ab12cd34" in p.stdout,
          "providers create: table shows id and fingerprint")

    keyfile = os.path.join(tmp, "anthropic.key")
    with open(keyfile, "w") as f:
        f.write("sk-ant-from-file\n")
    os.chmod(keyfile, 0o600)
    p = run(["providers", "create", "--name", "claude", "--kind", "anthropic", "--base-url",
             "https://api.anthropic.com", "--api-key-file", keyfile, "--format", "json"])
    body = json.loads(last_request()["body"])
    check(p.returncode == 0 and body["api_key"] == "sk-ant-from-file" and "models" not in body,
          "providers create (file): key read from the file")
    check(p.returncode == 0 and json.loads(p.stdout)["id"] == "prv_0002", "providers create: --format json")
    check("sk-ant-from-file" not in p.stdout + p.stderr, "providers create: file key not printed")

    n = len(STATE.requests)
    p = run(["providers", "create", "--name", "x", "--kind", "bedrock", "--base-url", "u", "--api-key-stdin"],
            stdin="k\n")
    check(p.returncode == 2 and len(STATE.requests) == n, "providers create: bad --kind -> exit 2, nothing sent")
    p = run(["providers", "create", "--name", "x", "--kind", "openai", "--base-url", "u"])
    check(p.returncode == 2 and "--api-key-stdin" in p.stderr, "providers create: key source required")
    p = run(["providers", "create", "--kind", "openai", "--base-url", "u", "--api-key-stdin"], stdin="k\n")
    check(p.returncode == 2 and "--name" in p.stderr, "providers create: missing --name -> exit 2")
    p = run(["providers", "create", "--name", "y", "--kind", "openai", "--base-url", "u", "--api-key-stdin"],
            stdin="\n")
    check(p.returncode == 1 and "empty" in p.stderr, "providers create: empty key refused")
    p = run(["providers", "create", "--name", "openai-main", "--kind", "openai", "--base-url", "u",
             "--api-key-stdin"], stdin="k\n")
    check(p.returncode == 1 and "already exists" in p.stderr and "409" in p.stderr,
          "providers create: server 409 message, exit 1")

    # --- providers list
    p = run(["providers", "list"])
    lines = p.stdout.splitlines()
    check(p.returncode == 0 and len(lines) == 3 and lines[0].split()[:3] == ["ID", "NAME", "KIND"],
          "providers list: header + 2 rows")
    col = lines[0].index("KIND")
    check(all(len(l) > col and l[col - 2:col] == "  " and l[col] != " " for l in lines[1:]),
          "providers list: columns aligned")
    check("openai-main" in lines[1] and "gpt-4o-mini,gpt-4o" in lines[1] and "2025-11-26T22:10:00Z" in lines[1],
          "providers list: values (models joined, time in UTC)")
    p = run(["providers", "list", "--format", "json"])
    check(p.returncode == 0 and json.loads(p.stdout) == {"data": STATE.providers}, "providers list: json = server's")

    # --- keys create
    p = run(["keys", "create", "--name", "ci-bot", "--user", "alice", "--env", "test", "--models", "gpt-4o-mini",
             "--expires-at", "1900000000", "--meta", "team=ml", "--meta", "cost_center=42"])
    check(p.returncode == 0, "keys create: exit 0 [%s]" % p.stderr.strip())
    body = json.loads(last_request()["body"])
    check(body == {"name": "ci-bot", "user": "alice", "env": "test", "models": ["gpt-4o-mini"],
                   "expires_at": 1900000000, "metadata": {"team": "ml", "cost_center": "42"}},
          "keys create: body")
    check(NEW_KEY in p.stdout and "shown once" in p.stdout, "keys create: key printed once with the warning")
    check(p.stdout.count(NEW_KEY) == 1, "keys create: key appears exactly once")
    check("2030-03-17T17:46:40Z" in p.stdout and '"team":"ml"' in p.stdout, "keys create: expiry and metadata shown")
    p = run(["keys", "create", "--name", "plain", "--format", "json"])
    check(p.returncode == 0 and json.loads(p.stdout)["key"] == NEW_KEY and json.loads(last_request()["body"]) ==
          {"name": "plain"}, "keys create: json output, minimal body")
    n = len(STATE.requests)
    for bad in (["--env", "prod"], ["--expires-at", "tomorrow"], ["--meta", "novalue"], ["--colour", "red"]):
        p = run(["keys", "create", "--name", "x", *bad])
        check(p.returncode == 2 and len(STATE.requests) == n, "keys create %s: exit 2, nothing sent" % bad[0])

    # --- keys list
    p = run(["keys", "list"])
    lines = p.stdout.splitlines()
    check(p.returncode == 0 and lines[0].split()[:4] == ["ID", "NAME", "USER", "ENV"] and len(lines) == 3,
          "keys list: table")
    check("ci-bot" in p.stdout and "never" in lines[2] and NEW_KEY not in p.stdout, "keys list: rows, no secrets")
    p = run(["keys", "list", "--format=json"])
    check(p.returncode == 0 and len(json.loads(p.stdout)["data"]) == 2, "keys list: json")

    # --- one key: get, update, rotate, revoke; one provider: get
    kid = STATE.keys[0]["id"]
    p = run(["keys", "get", kid])
    req = last_request()
    check(p.returncode == 0 and req["method"] == "GET" and req["path"] == "/admin/v1/keys/" + kid and
          "ci-bot" in p.stdout and NEW_KEY not in p.stdout, "keys get: GET /admin/v1/keys/ID, no secret")
    p = run(["keys", "update", kid, "--name", "renamed", "--models", "a,b", "--meta", "k=v", "--format", "json"])
    req = last_request()
    check(p.returncode == 0 and req["method"] == "PATCH" and req["path"] == "/admin/v1/keys/" + kid and
          json.loads(req["body"]) == {"name": "renamed", "models": ["a", "b"], "metadata": {"k": "v"}} and
          json.loads(p.stdout)["name"] == "renamed", "keys update: PATCH with only the given fields")
    n = len(STATE.requests)
    for bad in (["keys", "update", kid], ["keys", "update", kid, "--env", "test"], ["keys", "get"],
                ["keys", "get", "key_../../x"], ["keys", "revoke", "prv_0001"], ["providers", "get", kid],
                ["keys", "rotate", kid, "--overlap", "-5"], ["keys", "get", kid, "extra"]):
        p = run(bad)
        check(p.returncode == 2 and len(STATE.requests) == n, "%s: exit 2, nothing sent" % " ".join(bad[:3]))
    p = run(["keys", "rotate", kid, "--overlap", "120"])
    req = last_request()
    check(p.returncode == 0 and req["method"] == "POST" and req["path"] == "/admin/v1/keys/%s/rotate" % kid and
          json.loads(req["body"]) == {"overlap_seconds": 120}, "keys rotate: POST .../rotate with the overlap")
    check(p.stdout.count(ROTATED_KEY) == 1 and "NEW API key" in p.stdout and "shown once" in p.stdout and
          "Previous key" in p.stdout and kid in p.stdout, "keys rotate: new key printed once, clearly marked")
    p = run(["keys", "rotate", kid, "--format", "json"])
    check(p.returncode == 0 and json.loads(p.stdout)["key"]["key"] == ROTATED_KEY and
          json.loads(last_request()["body"]) == {}, "keys rotate: json output, default overlap")
    p = run(["keys", "revoke", kid])
    req = last_request()
    check(p.returncode == 0 and req["method"] == "POST" and req["path"] == "/admin/v1/keys/%s/revoke" % kid and
          "revoked" in p.stdout, "keys revoke: POST .../revoke")
    p = run(["keys", "get", "key_9999999999999999"])
    check(p.returncode == 1 and "404" in p.stderr, "keys get unknown: exit 1 with the 404")
    p = run(["providers", "get", "prv_0001"])
    check(p.returncode == 2, "providers get: the id must start with prov_")
    STATE.providers[0]["id"] = "prov_0001"
    p = run(["providers", "get", "prov_0001", "--format", "json"])
    check(p.returncode == 0 and json.loads(p.stdout)["name"] == "openai-main" and
          last_request()["path"] == "/admin/v1/providers/prov_0001", "providers get: GET /admin/v1/providers/ID")

    # --- admin tokens: create (shown once), list (never the token), revoke
    p = run(["tokens", "create", "--name", "ops", "--role", "approver"])
    req = last_request()
    check(p.returncode == 0 and req["method"] == "POST" and req["path"] == "/admin/v1/tokens" and
          json.loads(req["body"]) == {"name": "ops", "role": "approver"}, "tokens create: POST name and role")
    check(p.stdout.count(NEW_ADMIN_TOKEN) == 1 and "shown once" in p.stdout and "approver" in p.stdout,
          "tokens create: the token printed once, clearly marked")
    p = run(["tokens", "create", "--name", "ops2", "--role", "auditor", "--format", "json"])
    check(p.returncode == 0 and json.loads(p.stdout)["token"] == NEW_ADMIN_TOKEN, "tokens create: json")
    p = run(["tokens", "list"])
    check(p.returncode == 0 and "ops" in p.stdout and "auditor" in p.stdout and NEW_ADMIN_TOKEN not in p.stdout,
          "tokens list: rows, no token")
    tid = STATE.tokens[0]["id"]
    p = run(["tokens", "revoke", tid])
    req = last_request()
    check(p.returncode == 0 and req["path"] == "/admin/v1/tokens/%s/revoke" % tid and "revoked" in p.stdout,
          "tokens revoke: POST .../revoke")
    n = len(STATE.requests)
    for bad in (["tokens", "create", "--name", "x"], ["tokens", "create", "--name", "x", "--role", "root"],
                ["tokens", "create", "--role", "admin"], ["tokens", "revoke", "key_0001"], ["tokens", "revoke"],
                ["tokens"], ["tokens", "get", tid]):
        p = run(bad)
        check(p.returncode == 2 and len(STATE.requests) == n, "%s: exit 2, nothing sent" % " ".join(bad[:3]))

    # --- token handling and errors
    p = run(["keys", "list"], token=False)
    check(p.returncode == 2 and "LUMKEY_TOKEN" in p.stderr, "no token: exit 2 with a hint")
    p = run(["keys", "list"], token=False, env_extra={"LUMKEY_TOKEN": "lk_adm_wrong"})
    check(p.returncode == 1 and "invalid admin token" in p.stderr and "401" in p.stderr,
          "401: server message, exit 1")
    check("lk_adm_wrong" not in p.stdout + p.stderr, "401: token not echoed")
    tokfile = os.path.join(tmp, "token")
    with open(tokfile, "w") as f:
        f.write(TOKEN + "\n")
    os.chmod(tokfile, 0o600)
    p = run(["keys", "list", "--token-file", tokfile], token=False)
    check(p.returncode == 0 and last_request()["headers"].get("Authorization") == "Bearer " + TOKEN,
          "--token-file: used, newline trimmed")
    p = run(["keys", "list", "--token-file", os.path.join(tmp, "missing")], token=False)
    check(p.returncode == 1 and "missing" in p.stderr, "--token-file missing: exit 1")
    STATE.fail_with = (500, b"upstream exploded\n")
    p = run(["keys", "list"])
    check(p.returncode == 1 and "HTTP 500" in p.stderr and "upstream exploded" in p.stderr,
          "non-JSON 500: status and body snippet, exit 1")
    STATE.fail_with = (502, b"\x1b[31mred\x1b[0m")
    p = run(["keys", "list"])
    check(p.returncode == 1 and "\x1b" not in p.stderr, "error bodies: terminal escapes neutralised")

    # --- address handling
    dead = "http://127.0.0.1:%d" % free_port()
    p = run(["keys", "list"], addr=dead)
    check(p.returncode == 1 and dead in p.stderr and "LUMKEY_ADDR" in p.stderr,
          "connection refused: exit 1, names the address")
    p = run(["status", "--addr", ADDR + "/"], addr=dead)
    check(p.returncode == 0, "--addr overrides LUMKEY_ADDR (trailing slash ok)")
    p = run(["status", "--addr", "ftp://x"])
    check(p.returncode == 2, "--addr must be http(s)")

    # --- the secrets never reached argv: lumkeyctl got them only via stdin/env/file
    argvs = [r for r in STATE.requests if PROVIDER_SECRET in r["body"]]
    check(len(argvs) == 1, "provider key sent exactly once (the stdin run)")


if __name__ == "__main__":
    main()
