"""Admin sign-in through OpenID Connect (issue 11): the authorization code flow with PKCE against
our own OpenID provider (tests/oidcmock), ID-token refusals, the session cookie, CSRF, roles,
audit with the acting identity, and deactivation by SCIM ending a session at once.

Redirects are followed by hand and cookies sent by hand (tests/oidcmock/ssokit.py): `requests`
would not send a Secure cookie over http://, and the cookie attributes are asserted on.
"""

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "oidcmock"))

from ssokit import assert_healthy, module_stack, parse_set_cookies, query, wait_for  # noqa: E402

import requests  # noqa: E402

PATCH = "urn:ietf:params:scim:api:messages:2.0:PatchOp"


@pytest.fixture(scope="module")
def sso():
    yield from module_stack(teardown=lambda k: k.configure(mode="ok"))


@pytest.fixture(autouse=True)
def _still_healthy(sso):
    """After every test: no process of the stack died, no sanitizer report (ASan builds)."""
    yield
    assert_healthy(sso)


_n = [0]


def person(sso, role, **kw):
    """A provisioned user of role (or None) and the claims the mock will sign for them."""
    _n[0] += 1
    name = f"{role or 'norole'}{_n[0]}@example.com"
    sub = f"00u-{role or 'none'}-{_n[0]}"
    user = sso.provision(name, role, sub=sub, **kw)
    return user, {"sub": sub, "email": name, "preferred_username": name, "name": "Test"}


def sessions_count(sso) -> int:
    with sso.stack.db().cursor() as cur:
        cur.execute("SELECT count(*) AS n FROM sso_sessions")
        return cur.fetchone()["n"]


def error_code(resp) -> str:
    try:
        return resp.json()["error"]["code"]
    except Exception:  # noqa: BLE001
        return f"<{resp.status_code} {resp.text[:200]}>"


def test_code_flow_with_pkce_sets_a_strict_httponly_session(sso):
    user, claims = person(sso, "admin")
    si = sso.sign_in(claims)
    # /auth/login: a 302 to the provider with S256 PKCE, state and nonce, and a sealed pre-auth cookie
    assert si.login.status_code == 302
    q = query(si.authorize_url)
    assert si.authorize_url.startswith(sso.issuer + "/authorize?")
    assert q["response_type"] == "code" and q["client_id"] == sso.client_id
    assert q["code_challenge_method"] == "S256" and len(q["code_challenge"]) == 43
    assert len(q["state"]) >= 43 and len(q["nonce"]) >= 43 and q["state"] != q["nonce"]
    assert q["redirect_uri"] == f"{sso.admin_base}/auth/callback"
    assert "openid" in q["scope"].split()
    pre = si.preauth["attrs"]
    assert pre.get("httponly") and pre.get("secure") and pre.get("samesite") == "Lax" and pre.get("path") == "/auth/"
    # neither the verifier nor the state is readable in the pre-auth cookie (sealed)
    assert q["state"] not in si.preauth["value"]
    # /auth/callback: code exchanged with the verifier and client authentication, then the session
    assert si.callback.status_code == 302, si.callback.text
    assert si.callback.headers["Location"] == "/console/"
    c = si.cookies["lk_session"]
    assert si.session and si.session.startswith("lks_")
    a = c["attrs"]
    assert a.get("httponly") and a.get("secure") and a.get("samesite") == "Strict" and a.get("path") == "/"
    assert int(a["max-age"]) <= 8 * 3600
    assert si.cookies["lk_oidc"]["attrs"].get("max-age") == "0"  # the pre-auth cookie is cleared
    assert si.session not in si.callback.text
    last = sso.mock_log()[-1]
    assert last == {"client_auth": "basic", "client_ok": True, "code_ok": True, "pkce_ok": True}
    # /auth/session: who, role, CSRF token, expiry
    r = si.session_info()
    assert r.status_code == 200, r.text
    j = r.json()
    assert j["user"]["id"] == user["id"] and j["user"]["user_name"] == claims["email"]
    assert j["tenant"] == "default" and j["role"] == "admin"
    assert len(j["csrf_token"]) >= 32 and j["expires_at"].endswith("Z")
    assert si.session not in r.text
    # only a keyed hash of the session token is stored
    with sso.stack.db().cursor() as cur:
        cur.execute("SELECT id, hash, csrf FROM sso_sessions WHERE user_id = %s", (user["id"],))
        rows = cur.fetchall()
    assert len(rows) == 1 and len(bytes(rows[0]["hash"])) == 32
    assert si.session.encode() not in bytes(rows[0]["hash"]) and rows[0]["id"] != si.session
    # the session works on the admin API in place of a Bearer token
    r = si.get("/admin/v1/keys")
    assert r.status_code == 200 and "data" in r.json()


def test_es256_id_token_is_accepted(sso):
    _, claims = person(sso, "auditor")
    sso.configure(alg="ES256")
    try:
        si = sso.sign_in(claims)
    finally:
        sso.configure(alg="RS256")
    assert si.callback.status_code == 302 and si.session, si.callback.text
    assert si.session_info().json()["role"] == "auditor"


BAD = [
    ("wrong_key", "bad_signature"),
    ("bad_signature", "bad_signature"),
    ("unknown_kid", "unknown_key"),
    ("wrong_iss", "wrong_issuer"),
    ("expired", "token_expired"),
    ("not_yet", "token_not_yet_valid"),
    ("wrong_aud", "wrong_audience"),
    ("multi_aud_no_azp", "wrong_azp"),
    ("alg_none", "unsupported_alg"),
    ("hs256", "unsupported_alg"),
    ("wrong_nonce", "wrong_nonce"),
]


@pytest.mark.parametrize("mode,reason", BAD)
def test_bad_id_tokens_are_refused_without_a_session(sso, mode, reason):
    _, claims = person(sso, "admin")
    sso.sign_in(claims)  # JWKS cached by a good sign-in first
    before, fetches = sessions_count(sso), sso.jwks_fetches()
    sso.configure(mode=mode)
    try:
        si = sso.sign_in()
    finally:
        sso.configure(mode="ok")
    assert si.callback.status_code == 401, si.callback.text
    assert error_code(si.callback) == "invalid_id_token"
    assert reason in si.callback.json()["error"]["message"]
    assert "lk_session" not in si.cookies and si.session is None
    assert sessions_count(sso) == before
    # an unknown kid refetches the JWKS at most once a minute (the good sign-in just fetched it)
    assert sso.jwks_fetches() - fetches <= (1 if mode == "unknown_kid" else 0)


@pytest.mark.parametrize("mode", ["token_error", "no_id_token"])
def test_failed_code_exchange_is_refused(sso, mode):
    _, claims = person(sso, "admin")
    sso.configure(user=claims, mode=mode)
    try:
        si = sso.sign_in()
    finally:
        sso.configure(mode="ok")
    assert si.callback.status_code == 401 and error_code(si.callback) == "code_exchange_failed"
    assert si.session is None


def test_callback_needs_the_matching_state_cookie(sso):
    _, claims = person(sso, "admin")
    sso.configure(user=claims)
    login = requests.get(f"{sso.admin_base}/auth/login", allow_redirects=False, timeout=10)
    pre = parse_set_cookies(login)["lk_oidc"]["value"]
    auth = requests.get(login.headers["Location"], allow_redirects=False, timeout=10)
    cb = auth.headers["Location"]
    # no pre-auth cookie (e.g. a callback forged for someone else's browser)
    r = requests.get(cb, allow_redirects=False, timeout=10)
    assert r.status_code == 400 and error_code(r) == "invalid_state"
    # a tampered cookie
    bad = pre[:-2] + ("A" if pre[-2] != "A" else "B") + pre[-1]
    r = requests.get(cb, headers={"Cookie": f"lk_oidc={bad}"}, allow_redirects=False, timeout=10)
    assert r.status_code == 400 and error_code(r) == "invalid_state"
    # another state
    q = query(cb)
    st = q["state"]
    other_state = ("x" if st[0] != "x" else "y") + st[1:]  # always another state (1 in 64 starts with x)
    other = f"{sso.admin_base}/auth/callback?code={q['code']}&state={other_state}"
    r = requests.get(other, headers={"Cookie": f"lk_oidc={pre}"}, allow_redirects=False, timeout=10)
    assert r.status_code == 400 and error_code(r) == "invalid_state"
    assert "lk_session" not in parse_set_cookies(r)
    # the provider's error answer
    r = requests.get(f"{sso.admin_base}/auth/callback?error=access_denied&state={q['state']}",
                     headers={"Cookie": f"lk_oidc={pre}"}, allow_redirects=False, timeout=10)
    assert r.status_code == 401 and error_code(r) == "idp_refused"


@pytest.mark.parametrize("ret", ["//evil.example/x", "https://evil.example/", "/\\evil.example", "console",
                                 "/\r\nSet-Cookie:x=y"])
def test_open_redirect_refused(sso, ret):
    r = requests.get(f"{sso.admin_base}/auth/login", params={"return": ret}, allow_redirects=False, timeout=10)
    assert r.status_code == 400 and error_code(r) == "invalid_return"
    assert "Location" not in r.headers


def test_return_path_is_kept(sso):
    _, claims = person(sso, "admin")
    si = sso.sign_in(claims, return_to="/console/holds?x=1")
    assert si.callback.status_code == 302 and si.callback.headers["Location"] == "/console/holds?x=1"


def test_users_not_provisioned_inactive_or_without_role_cannot_sign_in(sso):
    si = sso.sign_in({"sub": "00u-nobody", "email": "nobody@example.com"})
    assert si.callback.status_code == 403 and error_code(si.callback) == "unknown_user"
    _, claims = person(sso, None)
    si = sso.sign_in(claims)
    assert si.callback.status_code == 403 and error_code(si.callback) == "no_role"
    user, claims = person(sso, "admin")
    r = sso.scim("PATCH", f"/Users/{user['id']}", {"schemas": [PATCH], "Operations": [
        {"op": "replace", "value": {"active": False}}]})
    assert r.status_code == 200 and r.json()["active"] is False
    si = sso.sign_in(claims)
    assert si.callback.status_code == 403 and error_code(si.callback) == "user_inactive"
    assert si.session is None


def test_csrf_on_state_changing_requests(sso):
    _, claims = person(sso, "admin")
    si = sso.sign_in(claims)
    csrf = si.session_info().json()["csrf_token"]
    body = {"name": "csrf-test", "role": "auditor"}
    r = si.send("POST", "/admin/v1/tokens", json=body)
    assert r.status_code == 403 and error_code(r) == "csrf_failed"
    r = si.send("POST", "/admin/v1/tokens", csrf=csrf[:-1] + ("a" if csrf[-1] != "a" else "b"), json=body)
    assert r.status_code == 403 and error_code(r) == "csrf_failed"
    r = si.send("POST", "/admin/v1/tokens", csrf=csrf, origin="http://evil.example", json=body)
    assert r.status_code == 403 and error_code(r) == "csrf_failed"
    r = si.send("POST", "/admin/v1/tokens", csrf=csrf, origin="null", json=body)
    assert r.status_code == 403 and error_code(r) == "csrf_failed"
    # the right token, from the admin listener's own origin (or no Origin at all)
    r = si.send("POST", "/admin/v1/tokens", csrf=csrf, origin=sso.admin_base, json=body)
    assert r.status_code == 201, r.text
    r = si.send("POST", "/admin/v1/tokens", csrf=csrf, json=body)
    assert r.status_code == 201, r.text
    # GETs need no CSRF token; Bearer requests need none either
    assert si.get("/admin/v1/tokens").status_code == 200
    r = requests.post(f"{sso.admin_base}/admin/v1/tokens", json=body,
                      headers={"Authorization": f"Bearer {sso.stack.admin_token}"}, timeout=10)
    assert r.status_code == 201


def test_roles_are_enforced_for_sessions(sso):
    _, claims = person(sso, "approver")
    ap = sso.sign_in(claims)
    csrf = ap.session_info().json()["csrf_token"]
    assert ap.get("/admin/v1/holds").status_code == 200
    r = ap.send("POST", "/admin/v1/holds/hold_doesnotexist1/approve", csrf=csrf, json={"reason": "x"})
    assert r.status_code == 404  # allowed to decide (the hold does not exist)
    r = ap.send("POST", "/admin/v1/keys", csrf=csrf, json={"name": "nope"})
    assert r.status_code == 403 and error_code(r) == "insufficient_role"
    assert ap.get("/admin/v1/audit/events").status_code == 403
    _, claims = person(sso, "auditor")
    au = sso.sign_in(claims)
    csrf = au.session_info().json()["csrf_token"]
    assert au.get("/admin/v1/audit/events").status_code == 200
    r = au.get("/admin/v1/audit/export", params={"from": "2020-01-01T00:00:00Z", "to": "2099-01-01T00:00:00Z"})
    assert r.status_code == 200
    assert au.send("POST", "/admin/v1/audit/verify", csrf=csrf, json={}).status_code == 200
    r = au.send("POST", "/admin/v1/keys", csrf=csrf, json={"name": "nope"})
    assert r.status_code == 403 and error_code(r) == "insufficient_role"
    r = au.send("PATCH", "/admin/v1/audit/settings", csrf=csrf, json={})
    assert r.status_code == 403
    assert au.get("/admin/v1/holds").status_code == 403


def test_admin_actions_are_audited_with_the_acting_identity(sso):
    user, claims = person(sso, "admin")
    si = sso.sign_in(claims)
    login_rid = si.callback.headers["x-request-id"]
    row = sso.stack.wait_audit(login_rid, "admin.sso.login")
    assert row["key_id"] == user["id"] and row["user_id"] == claims["email"] and row["http_status"] == 302
    csrf = si.session_info().json()["csrf_token"]
    r = si.send("POST", "/admin/v1/tokens", csrf=csrf, json={"name": "audited", "role": "auditor"})
    assert r.status_code == 201
    row = sso.stack.wait_audit(r.headers["x-request-id"], "admin.tokens.create")
    assert row["key_id"] == user["id"] and row["user_id"] == claims["email"] and row["decision"] == "allow"
    assert row["rule_id"] == r.json()["id"]
    r = si.send("POST", "/admin/v1/keys", json={"name": "x"})  # refused (no CSRF token): audited too
    row = sso.stack.wait_audit(r.headers["x-request-id"], "admin.keys.create")
    assert row["http_status"] == 403 and row["error_code"] == "csrf_failed"
    # a refused sign-in is audited with its reason
    sso.configure(mode="expired")
    try:
        bad = sso.sign_in(claims)
    finally:
        sso.configure(mode="ok")
    row = sso.stack.wait_audit(bad.callback.headers["x-request-id"], "admin.sso.login")
    assert row["http_status"] == 401 and row["error_code"] == "invalid_id_token"


def test_deactivation_by_scim_ends_the_session_at_once(sso):
    user, claims = person(sso, "admin")
    si = sso.sign_in(claims)
    assert si.get("/admin/v1/keys").status_code == 200
    # Entra ID's shape: capitalised op, string boolean
    r = sso.scim("PATCH", f"/Users/{user['id']}", {"schemas": [PATCH], "Operations": [
        {"op": "Replace", "path": "active", "value": "False"}]})
    assert r.status_code == 200 and r.json()["active"] is False
    r = si.get("/admin/v1/keys")
    assert r.status_code == 401 and error_code(r) == "not_signed_in"
    assert si.session_info().status_code == 401
    # reactivated: the old session stays dead (deleted), a new sign-in works
    r = sso.scim("PATCH", f"/Users/{user['id']}", {"schemas": [PATCH], "Operations": [
        {"op": "replace", "value": {"active": True}}]})
    assert r.status_code == 200 and r.json()["active"] is True
    assert si.get("/admin/v1/keys").status_code == 401
    assert sso.sign_in(claims).session


def test_removal_from_the_role_group_or_delete_ends_the_session(sso):
    user, claims = person(sso, "admin")
    si = sso.sign_in(claims)
    assert si.session_info().json()["role"] == "admin"
    gid = sso.group_id("Lumkey Admins")
    r = sso.scim("PATCH", f"/Groups/{gid}", {"schemas": [PATCH], "Operations": [
        {"op": "remove", "path": f'members[value eq "{user["id"]}"]'}]})
    assert r.status_code == 200
    assert si.session_info().status_code == 401
    # in another role's group: the same session would get that role; a new one does
    sso.add_to_group("Lumkey Auditors", user["id"])
    si2 = sso.sign_in(claims)
    assert si2.session_info().json()["role"] == "auditor"
    assert sso.scim("DELETE", f"/Users/{user['id']}").status_code == 204
    assert si2.session_info().status_code == 401


def test_logout_needs_csrf_and_ends_the_session(sso):
    _, claims = person(sso, "admin")
    si = sso.sign_in(claims)
    csrf = si.session_info().json()["csrf_token"]
    r = si.send("POST", "/auth/logout")
    assert r.status_code == 403 and error_code(r) == "csrf_failed"
    assert si.session_info().status_code == 200
    r = si.send("POST", "/auth/logout", csrf=csrf)
    assert r.status_code == 200
    cleared = parse_set_cookies(r)["lk_session"]
    assert cleared["value"] == "" and cleared["attrs"]["max-age"] == "0"
    assert si.session_info().status_code == 401
    assert si.get("/admin/v1/keys").status_code == 401


def test_malformed_session_cookies_and_no_session(sso):
    r = requests.get(f"{sso.admin_base}/auth/session", timeout=10)
    assert r.status_code == 401 and error_code(r) == "not_signed_in"
    for v in ["lks_" + "A" * 43, "lks_short", "x" * 5000, "lks_" + "A" * 42 + "!"]:
        r = requests.get(f"{sso.admin_base}/auth/session", headers={"Cookie": f"lk_session={v}"}, timeout=10)
        assert r.status_code == 401
        r = requests.get(f"{sso.admin_base}/admin/v1/keys", headers={"Cookie": f"lk_session={v}"}, timeout=10)
        assert r.status_code == 401
    # SCIM never accepts a session cookie
    _, claims = person(sso, "admin")
    si = sso.sign_in(claims)
    r = si.get("/scim/v2/Users")
    assert r.status_code == 401 and r.headers["Content-Type"].startswith("application/scim+json")


def test_no_secret_in_logs(sso):
    _, claims = person(sso, "admin")
    si = sso.sign_in(claims)
    csrf = si.session_info().json()["csrf_token"]
    secrets = [si.session, csrf, sso._client_secret, sso._scim_token]
    logs = "".join(p.read_text(errors="replace") for p in (sso.stack.dir / "logs").glob("*.log"))
    logs += (sso.stack.dir / "oidcmock.log").read_text(errors="replace")
    leaked = [i for i, s in enumerate(secrets) if s and s in logs]
    assert leaked == [], f"secrets #{leaked} appear in the logs"


def test_idle_and_absolute_expiry(sso):
    user, claims = person(sso, "admin")
    idle = sso.sign_in(claims)
    absolute = sso.sign_in(claims)
    assert idle.session_info().status_code == 200 and absolute.session_info().status_code == 200
    ids = {}
    for si in (idle, absolute):
        ids[si] = si.session_info().json()["csrf_token"]
    with sso.stack.db().cursor() as cur:
        # 31 minutes without a request (idle timeout 30 min), and past the 8 h lifetime
        cur.execute("UPDATE sso_sessions SET last_seen_at = now() - interval '31 minutes' WHERE csrf = %s",
                    (ids[idle],))
        cur.execute("UPDATE sso_sessions SET expires_at = now() - interval '1 second' WHERE csrf = %s",
                    (ids[absolute],))
    assert idle.session_info().status_code == 401
    assert absolute.get("/admin/v1/keys").status_code == 401
    # a session in use stays valid: each request moves last_seen_at
    fresh = sso.sign_in(claims)
    csrf = fresh.session_info().json()["csrf_token"]
    with sso.stack.db().cursor() as cur:
        cur.execute("UPDATE sso_sessions SET last_seen_at = now() - interval '29 minutes' WHERE csrf = %s", (csrf,))
    assert fresh.session_info().status_code == 200
    with sso.stack.db().cursor() as cur:
        cur.execute("SELECT last_seen_at > now() - interval '1 minute' AS moved FROM sso_sessions WHERE csrf = %s",
                    (csrf,))
        assert cur.fetchone()["moved"] is True


HOLD_POLICY = {"rules": [{"id": "wire-transfers", "when": {"text": {"regex": ["(?i)wire transfer"]}},
                          "action": "hold", "message": "Payments need a human."}]}


def test_an_approver_session_decides_a_held_sdk_call_but_not_its_own(sso, tmp_path):
    """An official-SDK call is held; its own user (an approver) cannot approve it (403 self_approval);
    another approver approves through the session, with CSRF: the SDK gets its answer; audited."""
    import json
    import threading

    s = sso.stack
    requester, rclaims = person(sso, "approver")
    approver, aclaims = person(sso, "approver")
    f = tmp_path / "hold.json"
    f.write_text(json.dumps(HOLD_POLICY))
    pol = json.loads(s.ctl("policy", "create", "--name", "sso-holds", "--file", str(f), "--format", "json").stdout)
    key = json.loads(s.ctl("keys", "create", "--name", "payer", "--user", rclaims["email"], "--policy", pol["id"],
                           "--format", "json").stdout)
    out = {}

    def call():
        try:
            c = s.client(api_key=key["key"], max_retries=0, timeout=60)
            out["value"] = c.chat.completions.create(
                model="mock-gpt", messages=[{"role": "user", "content": "please send a wire transfer of $900"}])
        except Exception as e:  # noqa: BLE001
            out["error"] = e

    t = threading.Thread(target=call)
    t.start()
    mine = sso.sign_in(rclaims)
    other = sso.sign_in(aclaims)

    def pending():
        r = other.get("/admin/v1/holds")
        assert r.status_code == 200
        return [h for h in r.json()["data"] if h["status"] == "pending"]

    holds = wait_for(pending, timeout=20)
    assert holds, "no pending hold"
    hid = holds[0]["id"]
    assert t.is_alive(), "the SDK call returned while held"
    csrf_mine = mine.session_info().json()["csrf_token"]
    r = mine.send("POST", f"/admin/v1/holds/{hid}/approve", csrf=csrf_mine, json={"reason": "mine"})
    assert r.status_code == 403, r.text
    csrf = other.session_info().json()["csrf_token"]
    r = other.send("POST", f"/admin/v1/holds/{hid}/approve", json={"reason": "ok"})  # no CSRF token
    assert r.status_code == 403 and error_code(r) == "csrf_failed"
    r = other.send("POST", f"/admin/v1/holds/{hid}/approve", csrf=csrf, origin=sso.admin_base, json={"reason": "ok"})
    assert r.status_code == 200, r.text
    t.join(30)
    assert "error" not in out, out.get("error")
    assert out["value"].choices[0].message.content
    row = s.wait_audit(r.headers["x-request-id"], "admin.holds.approve")
    assert row["key_id"] == approver["id"] and row["user_id"] == aclaims["email"] and row["rule_id"] == hid


def test_sso_status_and_users_for_admins(sso):
    import json

    user, claims = person(sso, "auditor")
    si = sso.sign_in(claims)
    r = requests.get(f"{sso.admin_base}/admin/v1/sso/status",
                     headers={"Authorization": f"Bearer {sso.stack.admin_token}"}, timeout=10)
    assert r.status_code == 200, r.text
    j = r.json()
    assert j["oidc"]["enabled"] is True and j["oidc"]["issuer"] == sso.issuer
    assert j["oidc"]["client_id"] == sso.client_id and j["oidc"]["jwks_keys"] == 2
    assert j["group_roles"] == {"Lumkey Admins": "admin", "Lumkey Approvers": "approver",
                                "Lumkey Auditors": "auditor"}
    assert j["session_ttl_s"] == 8 * 3600 and j["session_idle_s"] == 1800
    assert j["active_sessions"] >= 1 and j["users"] >= j["active_users"] >= 1
    assert sso._client_secret not in r.text
    out = sso.stack.ctl("sso", "users", "--format", "json").stdout.decode()
    rows = {u["id"]: u for u in json.loads(out)["data"]}
    assert rows[user["id"]]["role"] == "auditor" and rows[user["id"]]["active_sessions"] == 1
    assert si.session not in out
    text = sso.stack.ctl("sso", "status").stdout.decode()
    assert sso.issuer in text and "Lumkey Approvers" in text
    # admins only
    assert si.get("/admin/v1/sso/users").status_code == 403
