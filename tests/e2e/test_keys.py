"""The key lifecycle through the admin API and lumkeyctl: get, update, rotate, revoke; providers get.

Secrets never go into assertion messages: new keys are compared into booleans first.
"""

import calendar
import json
import time

import openai
import pytest

from helpers import error_body, marker, sdk_error_parts
from lkstack import MODEL, MODEL_ALT, Proc, binary, free_port, http


# ------------------------------------------------------------------ helpers

def admin(stack, method, path, body=None, base=None):
    """(status, parsed body or None, raw body) of one admin call."""
    data = None if body is None else (body if isinstance(body, bytes) else json.dumps(body).encode())
    h = {"authorization": f"Bearer {stack.admin_token}"}
    if data is not None:
        h["content-type"] = "application/json"
    st, _, raw = http(method, (base or stack.admin_base) + path, data, h)
    try:
        doc = json.loads(raw) if raw else None
    except ValueError:
        doc = None
    return st, doc, raw


def new_key(stack, **fields):
    """A fresh key: (id, secret)."""
    body = {"name": "k-" + marker()}
    body.update(fields)
    st, doc, _ = admin(stack, "POST", "/admin/v1/keys", body)
    assert st == 201, f"keys.create answered {st}"
    return doc["id"], doc["key"]


def chat(stack, key, model=MODEL, base_url=None):
    kw = {"base_url": base_url} if base_url else {}
    client = stack.client(api_key=key, **kw)
    return client.chat.completions.create(model=model, messages=[{"role": "user", "content": marker()}])


def chat_status(stack, key, api_base=None):
    """HTTP status of one plain chat request (no SDK, no retries)."""
    h = {"content-type": "application/json", "authorization": f"Bearer {key}"}
    body = json.dumps({"model": MODEL, "messages": [{"role": "user", "content": marker()}]}).encode()
    st, _, _ = http("POST", (api_base or stack.api_base) + "/v1/chat/completions", body, h, timeout=10)
    return st


def assert_no_secret(raw: bytes, *secrets):
    text = raw.decode(errors="replace")
    leaked = [i for i, s in enumerate(secrets) if s and s in text]
    assert not leaked, f"an answer shows secret number {leaked} (redacted)"
    assert "lk_live_" not in text and "lk_test_" not in text, "an answer holds something shaped like a key"


def assert_vault_error(st, doc, want_status, code=None):
    assert st == want_status, f"status {st}, wanted {want_status}: {doc}"
    assert isinstance(doc, dict) and isinstance(doc.get("error"), dict), f"not the error shape: {doc}"
    if code:
        assert doc["error"].get("code") == code, doc


KEY_FIELDS = {"id", "name", "user", "env", "models", "expires_at", "metadata", "created_at", "revoked_at",
              "status", "allowed_ips", "policy"}


# -------------------------------------------------------------------- get

def test_get_and_list_show_no_secret(stack):
    kid, secret = new_key(stack, user="alice", models=[MODEL], metadata={"team": "a"})
    st, doc, raw = admin(stack, "GET", f"/admin/v1/keys/{kid}")
    assert st == 200
    assert set(doc) == KEY_FIELDS, f"unexpected fields {sorted(doc)}"
    assert doc["id"] == kid and doc["user"] == "alice" and doc["models"] == [MODEL]
    assert doc["metadata"] == {"team": "a"}
    assert doc["status"] == "active" and doc["revoked_at"] is None
    assert_no_secret(raw, secret, stack.key)
    st, doc, raw = admin(stack, "GET", "/admin/v1/keys")
    assert st == 200
    rows = {r["id"]: r for r in doc["data"]}
    assert kid in rows and stack.key_id in rows
    for r in rows.values():
        assert set(r) == KEY_FIELDS and "hash" not in r and "key" not in r
        assert r["status"] == "active"
    assert_no_secret(raw, secret, stack.key)


def test_unknown_and_malformed_ids_are_404(stack):
    kid, _ = new_key(stack)
    unknown = "key_" + "A" * 16
    st, doc, _ = admin(stack, "GET", f"/admin/v1/keys/{unknown}")
    assert_vault_error(st, doc, 404, "not_found")
    for bad in ("key_abc-def", "prov_" + kid[4:], "key_", "key_" + "a" * 100, "KEY_abc", "key_a%20b",
                "key_abc.def"):
        st, _, body = admin(stack, "GET", f"/admin/v1/keys/{bad}")
        assert st == 404, f"GET /admin/v1/keys/{bad} answered {st}"
        error_body(body)
    for path in (f"/admin/v1/keys/{kid}/bogus", f"/admin/v1/keys/{kid}/rotate/x", f"/admin/v1/keys/{kid}/"):
        st, _, body = admin(stack, "POST", path, {})
        assert st == 404, f"POST {path} answered {st}"
        error_body(body)
    for method, path in (("DELETE", f"/admin/v1/keys/{kid}"), ("GET", f"/admin/v1/keys/{kid}/rotate"),
                         ("PUT", f"/admin/v1/keys/{kid}/revoke"), ("POST", f"/admin/v1/providers/{stack.provider_id}")):
        st, _, body = admin(stack, method, path)
        assert st == 405, f"{method} {path} answered {st}"
        assert error_body(body)["code"] == "method_not_allowed"
    st, _, body = admin(stack, "GET", "/admin/v1/providers/prov_" + "Z" * 20)
    assert st == 404
    # no admin token: 401 before anything else
    st, _, _ = http("GET", f"{stack.admin_base}/admin/v1/keys/{kid}")
    assert st == 401


def test_providers_get(stack):
    st, doc, raw = admin(stack, "GET", f"/admin/v1/providers/{stack.provider_id}")
    assert st == 200
    assert doc["id"] == stack.provider_id and doc["name"] == "mock"
    assert set(doc["models"]) == {MODEL, MODEL_ALT}
    assert doc["credential"]["id"].startswith("cred_")
    assert "api_key" not in doc
    leaked = stack.provider_credential in raw.decode(errors="replace")
    assert not leaked, "providers.get shows the provider credential"
    _, lst, _ = admin(stack, "GET", "/admin/v1/providers")
    assert [p for p in lst["data"] if p["id"] == stack.provider_id] == [doc]


# ----------------------------------------------------------------- update

def test_update_changes_scopes_and_the_edge_honours_them(stack):
    kid, secret = new_key(stack, user="bob")
    chat(stack, secret, MODEL_ALT)
    exp = int(time.time()) + 3600
    st, doc, raw = admin(stack, "PATCH", f"/admin/v1/keys/{kid}",
                         {"models": [MODEL], "name": "renamed", "user": "carol", "metadata": {"x": "1"},
                          "expires_at": exp})
    assert st == 200, doc
    assert_no_secret(raw, secret)
    assert doc["models"] == [MODEL] and doc["name"] == "renamed" and doc["user"] == "carol"
    assert doc["metadata"] == {"x": "1"} and doc["expires_at"] is not None
    assert doc["status"] == "active"
    _, got, _ = admin(stack, "GET", f"/admin/v1/keys/{kid}")
    assert got == doc
    with pytest.raises(openai.PermissionDeniedError) as ei:
        chat(stack, secret, MODEL_ALT)
    assert sdk_error_parts(ei.value)[0] == 403
    chat(stack, secret, MODEL)
    # fields left out stay; models [] lifts the restriction; expires_at null clears the expiry
    st, doc, _ = admin(stack, "PATCH", f"/admin/v1/keys/{kid}", {"models": [], "expires_at": None})
    assert st == 200
    assert doc["name"] == "renamed" and doc["user"] == "carol" and doc["metadata"] == {"x": "1"}
    assert doc["models"] == [] and doc["expires_at"] is None
    chat(stack, secret, MODEL_ALT)


@pytest.mark.parametrize("field", ["hash", "key", "id", "tenant", "tenant_id", "revoked_at", "key_hash"])
def test_update_refuses_identity_and_secret_fields(stack, field):
    kid, secret = new_key(stack)
    st, doc, raw = admin(stack, "PATCH", f"/admin/v1/keys/{kid}", {"name": "x", field: "AAAA"})
    assert_vault_error(st, doc, 400, "field_not_settable")
    assert f"`{field}`" in doc["error"]["message"], doc
    _, got, _ = admin(stack, "GET", f"/admin/v1/keys/{kid}")
    assert got["name"] != "x", "a refused update changed the key"
    chat(stack, secret)


def test_update_refuses_unknown_fields_and_bad_values(stack):
    kid, _ = new_key(stack)
    st, doc, _ = admin(stack, "PATCH", f"/admin/v1/keys/{kid}", {"colour": "red"})
    assert_vault_error(st, doc, 400, "unknown_field")
    assert "`colour`" in doc["error"]["message"]
    for body in ({"env": "test"}, {"models": "all"}, {"expires_at": 1}, {"metadata": [1]}, {"name": None}):
        st, doc, _ = admin(stack, "PATCH", f"/admin/v1/keys/{kid}", body)
        assert st == 400, f"PATCH {list(body)} answered {st}"
    st, doc, _ = admin(stack, "PATCH", "/admin/v1/keys/key_" + "B" * 16, {"name": "x"})
    assert_vault_error(st, doc, 404, "not_found")


# ----------------------------------------------------------------- rotate

def test_rotate_keeps_both_keys_during_the_overlap(stack):
    kid, old = new_key(stack, models=[MODEL], user="dora")
    before = time.time()
    st, doc, _ = admin(stack, "POST", f"/admin/v1/keys/{kid}/rotate", {})
    assert st == 201, doc
    new = doc["key"]["key"]
    fresh = isinstance(new, str) and new.startswith("lk_live_") and new != old
    assert fresh, "rotate did not return a new key"
    assert doc["key"]["id"] != kid and doc["key"]["id"].startswith("key_")
    assert doc["key"]["models"] == [MODEL] and doc["key"]["user"] == "dora" and doc["key"]["status"] == "active"
    assert doc["previous"]["id"] == kid
    prev_exp = calendar.timegm(time.strptime(doc["previous"]["expires_at"], "%Y-%m-%dT%H:%M:%SZ"))
    assert before + 86400 - 5 <= prev_exp <= time.time() + 86400 + 5, "default overlap is not a day"
    chat(stack, old)
    chat(stack, new)
    with pytest.raises(openai.PermissionDeniedError):
        chat(stack, new, MODEL_ALT)  # same scopes
    # the new key is shown once: get and list never show it
    st, got, raw = admin(stack, "GET", f"/admin/v1/keys/{doc['key']['id']}")
    assert st == 200
    assert_no_secret(raw, new, old)
    _, _, raw = admin(stack, "GET", "/admin/v1/keys")
    assert_no_secret(raw, new, old)
    # an earlier expiry is kept
    st, doc2, _ = admin(stack, "POST", f"/admin/v1/keys/{kid}/rotate", {"overlap_seconds": 30 * 86400})
    assert st == 201
    assert doc2["previous"]["expires_at"] == doc["previous"]["expires_at"]


def test_rotate_with_a_short_overlap_retires_the_old_key(stack):
    kid, old = new_key(stack)
    st, doc, _ = admin(stack, "POST", f"/admin/v1/keys/{kid}/rotate", {"overlap_seconds": 3})
    assert st == 201
    new = doc["key"]["key"]
    assert chat_status(stack, old) == 200, "the old key stopped before the overlap ended"
    deadline = time.monotonic() + 30
    while True:
        st = chat_status(stack, old)
        if st == 401:
            break
        assert st == 200, f"old key answered {st} during the overlap"
        assert time.monotonic() < deadline, "the old key still works 30 s after a 3 s overlap"
        time.sleep(0.25)
    with pytest.raises(openai.AuthenticationError):
        chat(stack, old)
    chat(stack, new)
    _, got, _ = admin(stack, "GET", f"/admin/v1/keys/{kid}")
    assert got["status"] == "expired"
    # only an active key can be rotated
    st, doc, _ = admin(stack, "POST", f"/admin/v1/keys/{kid}/rotate", {})
    assert_vault_error(st, doc, 409, "key_not_active")


@pytest.mark.parametrize("body", [{"overlap_seconds": -1}, {"overlap_seconds": 30 * 86400 + 1},
                                  {"overlap_seconds": "60"}, {"overlap": 60}, {"key": "x"}])
def test_rotate_refuses_bad_bodies(stack, body):
    kid, old = new_key(stack)
    st, doc, _ = admin(stack, "POST", f"/admin/v1/keys/{kid}/rotate", body)
    assert_vault_error(st, doc, 400)
    _, lst, _ = admin(stack, "GET", "/admin/v1/keys")
    assert [r for r in lst["data"] if r["id"] == kid][0]["expires_at"] is None, "a refused rotate changed the key"


# ----------------------------------------------------------------- revoke

def test_revoke_is_immediate_and_idempotent(stack):
    kid, secret = new_key(stack)
    chat(stack, secret)
    st, doc, raw = admin(stack, "POST", f"/admin/v1/keys/{kid}/revoke")
    assert st == 200, doc
    assert_no_secret(raw, secret)
    assert doc["id"] == kid and doc["status"] == "revoked" and doc["revoked_at"]
    with pytest.raises(openai.AuthenticationError) as ei:
        chat(stack, secret)
    assert sdk_error_parts(ei.value)[0] == 401
    st, again, _ = admin(stack, "POST", f"/admin/v1/keys/{kid}/revoke", {})
    assert st == 200 and again["revoked_at"] == doc["revoked_at"], "a second revoke changed revoked_at"
    st, err, _ = admin(stack, "POST", f"/admin/v1/keys/{kid}/rotate", {})
    assert_vault_error(st, err, 409, "key_not_active")
    st, err, _ = admin(stack, "POST", "/admin/v1/keys/key_" + "C" * 16 + "/revoke")
    assert_vault_error(st, err, 404, "not_found")
    chat(stack, stack.key)  # other keys are untouched


def test_revocation_reaches_two_edges_within_a_second(stack):
    api2, adm2 = f"127.0.0.1:{free_port()}", f"127.0.0.1:{free_port()}"
    edge2 = Proc("edge2", [str(binary("edge", stack.build_dir))],
                 stack.env(LUMKEY_LISTEN=api2, LUMKEY_ADMIN_LISTEN=adm2), stack.dir / "logs" / "edge2.log")
    edge2.start(stack.dir / "pgids")
    try:
        deadline = time.monotonic() + 30
        while True:
            assert edge2.alive(), "the second edge exited"
            try:
                if http("GET", f"http://{api2}/readyz", timeout=2)[0] == 200:
                    break
            except OSError:
                pass
            assert time.monotonic() < deadline, "the second edge never became ready"
            time.sleep(0.05)
        kid, secret = new_key(stack)
        # both edges have seen (and may remember) the key
        for _ in range(2):
            assert chat_status(stack, secret) == 200
            assert chat_status(stack, secret, f"http://{api2}") == 200
        st, doc, _ = admin(stack, "POST", f"/admin/v1/keys/{kid}/revoke", base=f"http://{adm2}")
        assert st == 200 and doc["status"] == "revoked"
        t0 = time.monotonic()
        seen = {}
        while len(seen) < 2 and time.monotonic() - t0 < 5:
            for name, base in (("edge1", stack.api_base), ("edge2", f"http://{api2}")):
                if name not in seen and chat_status(stack, secret, base) == 401:
                    seen[name] = time.monotonic() - t0
        assert set(seen) == {"edge1", "edge2"}, f"edges still accept a revoked key after 5 s: {seen}"
        slowest = max(seen.values())
        assert slowest < 1.0, f"revocation took {slowest:.3f}s to reach both edges: {seen}"
        assert chat_status(stack, stack.key, f"http://{api2}") == 200
    finally:
        edge2.stop()


# ------------------------------------------------------------- lumkeyctl

def _ctl_json(stack, *args):
    p = stack.ctl(*args, "--format", "json")
    return json.loads(p.stdout)


def test_ctl_round_trip(stack):
    kid, secret = new_key(stack, models=[MODEL])
    got = _ctl_json(stack, "keys", "get", kid)
    assert got["id"] == kid and got["status"] == "active"
    table = stack.ctl("keys", "get", kid).stdout.decode()
    assert kid in table and "active" in table
    assert_no_secret(table.encode(), secret)

    upd = _ctl_json(stack, "keys", "update", kid, "--name", "ctl-renamed", "--user", "erin", "--models",
                    f"{MODEL},{MODEL_ALT}", "--meta", "team=blue", "--expires-at", str(int(time.time()) + 7200))
    assert upd["name"] == "ctl-renamed" and upd["user"] == "erin"
    assert upd["models"] == [MODEL, MODEL_ALT] and upd["metadata"] == {"team": "blue"} and upd["expires_at"]
    chat(stack, secret, MODEL_ALT)
    p = stack.ctl("keys", "update", kid, check=False)
    assert p.returncode == 2, "update with nothing to change should be a usage error"
    p = stack.ctl("keys", "update", kid, "--env", "test", check=False)
    assert p.returncode == 2

    out = stack.ctl("keys", "rotate", kid, "--overlap", "60").stdout.decode()
    marked = "shown once" in out and "NEW API key" in out and "Previous key" in out and kid in out
    assert marked, "rotate's table output does not mark the new key"
    lines = [ln.strip() for ln in out.splitlines() if ln.strip().startswith("lk_live_")]
    once = len(lines) == 1 and out.count(lines[0]) == 1
    assert once, "the new key should be printed exactly once"
    new = lines[0]
    differs = new != secret
    assert differs
    chat(stack, new)
    chat(stack, secret)  # still inside the overlap
    rot = _ctl_json(stack, "keys", "rotate", kid, "--overlap", "30")
    is_key = rot["key"]["key"].startswith("lk_live_")
    assert rot["previous"]["id"] == kid and is_key

    rev = _ctl_json(stack, "keys", "revoke", kid)
    assert rev["status"] == "revoked" and rev["revoked_at"]
    with pytest.raises(openai.AuthenticationError):
        chat(stack, secret)
    out = stack.ctl("keys", "revoke", kid).stdout.decode()
    assert "revoked" in out

    prov = _ctl_json(stack, "providers", "get", stack.provider_id)
    assert prov["id"] == stack.provider_id and prov["name"] == "mock"
    out = stack.ctl("providers", "get", stack.provider_id).stdout.decode()
    assert stack.provider_id in out
    leaked = stack.provider_credential in out
    assert not leaked

    lst = stack.ctl("keys", "list").stdout.decode()
    assert "STATUS" in lst and "revoked" in lst
    assert_no_secret(lst.encode(), secret, new)

    for args in (("keys", "get"), ("keys", "get", "key_../x"), ("keys", "revoke", "prov_abc"),
                 ("providers", "get", "key_abc"), ("keys", "rotate", kid, "--overlap", "soon")):
        p = stack.ctl(*args, check=False)
        assert p.returncode == 2, f"lumkeyctl {' '.join(args[:2])} ... exited {p.returncode}"
    p = stack.ctl("keys", "get", "key_" + "D" * 16, check=False)
    assert p.returncode == 1 and b"HTTP 404" in p.stderr
