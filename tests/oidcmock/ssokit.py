"""ssokit - a Lumkey stack with single sign-on, for tests/e2e/test_sso.py and test_scim.py
(and lk-console's browser tests).

start_sso_stack(): oidcmock on a free loopback port, a Lumkey stack (tests/e2e/lkstack.py)
whose edge is restarted with LUMKEY_OIDC_* pointing at the mock and
LUMKEY_OIDC_REDIRECT_URI at the edge's own admin listener, and a SCIM token
(admin token of role scim). Cookies are handled by hand: `requests` does not
send Secure cookies over http://, and the tests assert on the attributes.
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import subprocess
import sys
import time
import urllib.parse
from pathlib import Path

import requests

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "e2e"))

from lkstack import Stack, _set_pdeathsig  # noqa: E402

ROLE_GROUPS = {"admin": "Lumkey Admins", "approver": "Lumkey Approvers", "auditor": "Lumkey Auditors"}
SCIM_JSON = "application/scim+json"


def start_oidcmock(client_id: str, client_secret: str, workdir: Path):
    secret_file = workdir / "oidc-client-secret"
    secret_file.write_text(client_secret)
    os.chmod(secret_file, 0o600)
    log = open(workdir / "oidcmock.log", "wb")
    proc = subprocess.Popen([sys.executable, str(HERE / "oidcmock.py"), "--client-id", client_id,
                             "--client-secret-file", str(secret_file)],
                            stdout=subprocess.PIPE, stderr=log, start_new_session=True,
                            preexec_fn=_set_pdeathsig)
    line = proc.stdout.readline().decode()
    if not line:
        raise RuntimeError("oidcmock did not start: " + (workdir / "oidcmock.log").read_text())
    info = json.loads(line)
    return proc, info["issuer"]


class SsoStack:
    """host: the admin host name browsers use ("localhost" for Chromium: Secure cookies are
    accepted on http://localhost); the redirect URI is built with it."""

    def __init__(self, host: str = "127.0.0.1", **stack_kwargs):
        self.host = host
        self.client_id = "lumkey-console"
        self._client_secret = "cs-" + secrets.token_urlsafe(24)
        self.stack = Stack(**stack_kwargs)
        self.mock = None
        self.issuer = ""
        self._scim_token = ""

    # -- lifecycle
    def start(self) -> "SsoStack":
        s = self.stack
        s.start()
        try:
            self.mock, self.issuer = start_oidcmock(self.client_id, self._client_secret, s.dir)
            edge_env = {
                "LUMKEY_OIDC_ISSUER": self.issuer,
                "LUMKEY_OIDC_CLIENT_ID": self.client_id,
                "LUMKEY_OIDC_CLIENT_SECRET_FILE": str(s.dir / "oidc-client-secret"),
                "LUMKEY_OIDC_REDIRECT_URI": f"{self.admin_base}/auth/callback",
                "LUMKEY_ADMIN_ORIGIN": self.admin_base,
            }
            s.service_env.setdefault("edge", {}).update(edge_env)
            s.kill_service("edge", signal.SIGTERM)
            s.start_service("edge")
            r = requests.post(f"{s.admin_base}/admin/v1/tokens", json={"name": "idp-scim", "role": "scim"},
                              headers={"Authorization": f"Bearer {s.admin_token}"}, timeout=10)
            assert r.status_code == 201, s.redact(r.text)
            self._scim_token = r.json()["token"]
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self):
        if self.mock:
            try:
                os.killpg(self.mock.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
            self.mock.wait(timeout=10)
            self.mock = None
        self.stack.stop()

    @property
    def admin_base(self) -> str:
        """The admin listener as browsers reach it (http://<host>:<port>)."""
        port = self.stack.admin_addr.rsplit(":", 1)[1]
        return f"http://{self.host}:{port}"

    def secrets(self) -> list[str]:
        return [self._scim_token, self._client_secret] + self.stack.secrets()

    def redact(self, text) -> str:
        text = self.stack.redact(text)
        for sec in (self._scim_token, self._client_secret):
            if sec:
                text = text.replace(sec, "[REDACTED]")
        return text

    # -- the mock
    def configure(self, **cfg):
        r = requests.post(f"{self.issuer}/_mock/config", json=cfg, timeout=10)
        assert r.status_code == 200, r.text

    def mock_log(self) -> list[dict]:
        return requests.get(f"{self.issuer}/_mock/log", timeout=10).json()["token_requests"]

    def jwks_fetches(self) -> int:
        return requests.get(f"{self.issuer}/_mock/log", timeout=10).json()["jwks_fetches"]

    # -- SCIM
    def scim(self, method: str, path: str, body=None, token: str | None = None, params=None):
        headers = {"Authorization": f"Bearer {token if token is not None else self._scim_token}",
                   "Accept": SCIM_JSON}
        data = None
        if body is not None:
            data = json.dumps(body)
            headers["Content-Type"] = SCIM_JSON
        return requests.request(method, f"{self.admin_base}/scim/v2{path}", data=data, headers=headers,
                                params=params, timeout=15)

    def provision(self, user_name: str, role: str | None, sub: str | None = None, email: str | None = None,
                  display: str = "Test User") -> dict:
        """A SCIM user (Okta-shaped create) in the role's group (created on first use). Returns the user."""
        body = {"schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"], "userName": user_name,
                "name": {"givenName": "Test", "familyName": "User"}, "displayName": display,
                "emails": [{"primary": True, "value": email or user_name, "type": "work"}], "active": True}
        if sub:
            body["externalId"] = sub
        r = self.scim("POST", "/Users", body)
        assert r.status_code == 201, self.redact(r.text)
        user = r.json()
        if role:
            self.add_to_group(ROLE_GROUPS[role], user["id"])
        return user

    def group_id(self, name: str) -> str:
        r = self.scim("GET", "/Groups", params={"filter": f'displayName eq "{name}"'})
        assert r.status_code == 200, r.text
        res = r.json()["Resources"]
        if res:
            return res[0]["id"]
        r = self.scim("POST", "/Groups", {"schemas": ["urn:ietf:params:scim:schemas:core:2.0:Group"],
                                          "displayName": name, "members": []})
        assert r.status_code == 201, r.text
        return r.json()["id"]

    def add_to_group(self, name: str, user_id: str):
        gid = self.group_id(name)
        r = self.scim("PATCH", f"/Groups/{gid}", {"schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"],
                                                  "Operations": [{"op": "Add", "path": "members",
                                                                  "value": [{"value": user_id}]}]})
        assert r.status_code == 200, r.text

    # -- sign-in
    def sign_in(self, user: dict | None = None, return_to: str = "/console/"):
        """The whole authorization code flow, redirects followed by hand. Returns a SignIn."""
        if user is not None:
            self.configure(user=user)
        return SignIn(self, return_to)


def parse_set_cookies(resp) -> dict[str, dict]:
    """name -> {"value", "attrs": {lower-name: value or True}} from every Set-Cookie header."""
    out = {}
    for raw in resp.raw.headers.getlist("Set-Cookie"):
        parts = [p.strip() for p in raw.split(";")]
        name, _, value = parts[0].partition("=")
        attrs = {}
        for p in parts[1:]:
            k, eq, v = p.partition("=")
            attrs[k.lower()] = v if eq else True
        out[name] = {"value": value, "attrs": attrs}
    return out


class SignIn:
    """One run of the flow. steps: the responses; session: the lk_session value (or None)."""

    def __init__(self, kit: SsoStack, return_to: str):
        self.kit = kit
        base = kit.admin_base
        self.login = requests.get(f"{base}/auth/login", params={"return": return_to}, allow_redirects=False,
                                  timeout=10)
        self.preauth = parse_set_cookies(self.login).get("lk_oidc")
        self.authorize = self.callback = None
        self.session = None
        self.cookies = {}
        if self.login.status_code != 302:
            return
        loc = self.login.headers["Location"]
        self.authorize_url = loc
        self.authorize = requests.get(loc, allow_redirects=False, timeout=10)
        if self.authorize.status_code != 302:
            return
        cb = self.authorize.headers["Location"]
        self.callback_url = cb
        assert cb.startswith(base + "/auth/callback?"), cb
        headers = {"Cookie": f"lk_oidc={self.preauth['value']}"} if self.preauth else {}
        self.callback = requests.get(cb, headers=headers, allow_redirects=False, timeout=15)
        self.cookies = parse_set_cookies(self.callback)
        c = self.cookies.get("lk_session")
        if c and c["value"]:
            self.session = c["value"]

    def cookie_header(self) -> dict:
        return {"Cookie": f"lk_session={self.session}"}

    def get(self, path: str, **kw):
        h = dict(self.cookie_header())
        h.update(kw.pop("headers", {}))
        return requests.get(f"{self.kit.admin_base}{path}", headers=h, timeout=15, **kw)

    def session_info(self):
        return self.get("/auth/session")

    def send(self, method: str, path: str, csrf: str | None = None, origin: str | None = None, **kw):
        h = dict(self.cookie_header())
        if csrf is not None:
            h["X-CSRF-Token"] = csrf
        if origin is not None:
            h["Origin"] = origin
        h.update(kw.pop("headers", {}))
        return requests.request(method, f"{self.kit.admin_base}{path}", headers=h, timeout=15, **kw)


def module_stack(teardown=None):
    """The body of a module-scoped pytest fixture (`yield from module_stack()`): an SsoStack
    started, yielded, then (after teardown(kit), if given) stopped; a sanitizer report at
    teardown fails the module, and the stack's directory is kept for it."""
    import pytest
    k = SsoStack()
    try:
        k.start()
    except Exception as e:  # noqa: BLE001
        pytest.fail(f"could not start the SSO stack: {e}", pytrace=False)
    reports = []
    try:
        yield k
    finally:
        if teardown:
            teardown(k)
        k.stop()
        reports = k.stack.sanitizer_reports()
        if not reports:
            k.stack.cleanup_dir()
    if reports:
        pytest.fail("sanitizer reports at teardown:\n" + k.redact(
            "\n".join(f"=== {name}\n{text[:4000]}" for name, text in reports)), pytrace=False)


def assert_healthy(k: "SsoStack") -> None:
    """No process of the stack died, no new sanitizer report (ASan builds)."""
    dead = k.stack.dead_processes()
    reports = k.stack.sanitizer_reports(mark_seen=True)
    assert not dead, f"processes died: {dead}"
    assert not reports, k.redact("\n".join(f"=== {n}\n{t[:4000]}" for n, t in reports))


def wait_for(pred, timeout: float = 10.0, interval: float = 0.2):
    deadline = time.monotonic() + timeout
    while True:
        v = pred()
        if v or time.monotonic() > deadline:
            return v
        time.sleep(interval)


def query(url: str) -> dict:
    return dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(url).query))


def main() -> int:
    """python tests/oidcmock/ssokit.py [--host localhost] [--user NAME:ROLE ...]

    Starts oidcmock and a Lumkey stack with SSO, provisions the users (SCIM; role admin, approver,
    auditor or none), prints one JSON line (admin_base, issuer, api_base, openai_base_url, the
    users' claims, and secrets for the test process: admin_token, scim_token, key) and keeps
    running until stdin closes (or SIGTERM). For browser tests (lk-console's Playwright suite):
    POST {issuer}/_mock/config {"user": <claims>} picks who the next sign-in is."""
    import argparse

    ap = argparse.ArgumentParser()
    ap.add_argument("--host", default="localhost")
    ap.add_argument("--user", action="append", default=[], help="user_name:role")
    a = ap.parse_args()
    kit = SsoStack(host=a.host)
    kit.start()
    try:
        users = {}
        for spec in a.user or ["admin@example.com:admin", "approver@example.com:approver",
                               "auditor@example.com:auditor"]:
            name, _, role = spec.rpartition(":")
            sub = "00u-" + name.split("@")[0]
            u = kit.provision(name, role if role != "none" else None, sub=sub)
            users[name] = {"id": u["id"], "role": role,
                           "claims": {"sub": sub, "email": name, "preferred_username": name, "name": name}}
        if users:
            kit.configure(user=next(iter(users.values()))["claims"])
        s = kit.stack
        print(json.dumps({"admin_base": kit.admin_base, "issuer": kit.issuer, "api_base": s.api_base,
                          "openai_base_url": s.openai_base_url, "users": users, "admin_token": s.admin_token,
                          "scim_token": kit._scim_token, "key": s.key, "dir": str(s.dir)}), flush=True)
        signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
        sys.stdin.read()
    finally:
        kit.stop()
        kit.stack.cleanup_dir()
    return 0


if __name__ == "__main__":
    sys.exit(main())
