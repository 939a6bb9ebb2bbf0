"""Admin tokens with roles, the audit of every admin action, and tenancy of the admin API.

Secrets (admin tokens, keys) never go into assertion messages: they are compared
into booleans first, and any other text passes through stack.redact().
"""

import json
import re
import time

import pytest

from helpers import marker
from lkstack import http

TOKEN_RE = re.compile(r"lk_(?:live|test|adm)_[0-9A-Za-z]{20,}")


# ------------------------------------------------------------------ helpers

def call(stack, method, path, body=None, token=None, use_token=True):
    """(status, parsed body or None, raw body, request id) of one admin call."""
    data = None if body is None else json.dumps(body).encode()
    h = {}
    if use_token:
        h["authorization"] = f"Bearer {token or stack.admin_token}"
    if data is not None:
        h["content-type"] = "application/json"
    st, hdrs, raw = http(method, stack.admin_base + path, data, h)
    try:
        doc = json.loads(raw) if raw else None
    except ValueError:
        doc = None
    return st, doc, raw, hdrs.get("x-request-id", "")


def new_token(stack, role, token=None):
    """A fresh admin token: (id, secret, raw answer)."""
    st, doc, raw, _ = call(stack, "POST", "/admin/v1/tokens", {"name": "t-" + marker(), "role": role},
                           token=token)
    assert st == 201, f"tokens.create answered {st}: {stack.redact(raw[:300])}"
    assert doc["role"] == role and doc["id"].startswith("adm_")
    assert doc["token"].startswith("lk_adm_"), "tokens.create did not show an lk_adm_ token"
    return doc["id"], doc["token"], raw


def admin_rows(stack, request_id, timeout=10.0):
    """The admin.* audit rows of one request, polling until at least one is recorded."""
    deadline = time.monotonic() + timeout
    while True:
        rows = [r for r in stack.audit_rows(request_id) if r["kind"].startswith("admin.")]
        if rows or time.monotonic() > deadline:
            return rows
        time.sleep(0.05)


def one_admin_row(stack, request_id):
    assert request_id, "the answer had no x-request-id"
    rows = admin_rows(stack, request_id)
    assert len(rows) == 1, f"expected one admin audit row for {request_id}, got {len(rows)}"
    return rows[0]


def assert_clean_row(stack, row):
    """No audit column holds anything shaped like a secret or the stack's secrets."""
    text = json.dumps({k: str(v) for k, v in row.items()})
    leaked = TOKEN_RE.search(text) is not None or any(s and s in text for s in stack.secrets())
    assert not leaked, "an audit row holds something shaped like a secret (redacted)"


def my_token_id(stack):
    """The id of the stack's bootstrap admin token (from the audit of a harmless call)."""
    st, _, _, rid = call(stack, "GET", "/admin/v1/tokens")
    assert st == 200
    return one_admin_row(stack, rid)["key_id"]


# -------------------------------------------------------------------- tokens

def test_tokens_create_list_revoke(stack):
    tid, secret, raw = new_token(stack, "admin")
    # the new token works
    st, doc, raw_list, _ = call(stack, "GET", "/admin/v1/tokens", token=secret)
    assert st == 200
    ids = [t["id"] for t in doc["data"]]
    assert tid in ids
    # the list never shows a token or a hash
    text = raw_list.decode()
    shown = secret in text or "lk_adm_" in text
    assert not shown, "tokens.list shows an admin token (redacted)"
    for t in doc["data"]:
        assert set(t) == {"id", "name", "role", "created_at", "revoked_at", "status"}, sorted(t)
    row = next(t for t in doc["data"] if t["id"] == tid)
    assert row["status"] == "active" and row["revoked_at"] is None

    # revoke: at once refused, idempotent
    st, rdoc, _, _ = call(stack, "POST", f"/admin/v1/tokens/{tid}/revoke")
    assert st == 200 and rdoc["status"] == "revoked" and rdoc["revoked_at"]
    st, _, _, _ = call(stack, "GET", "/admin/v1/keys", token=secret)
    assert st == 401, f"a revoked admin token got {st}"
    st, doc2, _, _ = call(stack, "POST", f"/admin/v1/tokens/{tid}/revoke")
    assert st == 200 and doc2["revoked_at"] == rdoc["revoked_at"], "revoke is not idempotent"
    # unknown / malformed ids
    st, _, _, _ = call(stack, "POST", "/admin/v1/tokens/adm_doesnotexist0000/revoke")
    assert st == 404
    st, _, _, _ = call(stack, "POST", "/admin/v1/tokens/key_abc/revoke")
    assert st == 404
    # bad bodies
    st, doc, _, _ = call(stack, "POST", "/admin/v1/tokens", {"name": "x", "role": "root"})
    assert st == 400 and doc["error"]["code"] == "invalid_field"
    st, doc, _, _ = call(stack, "POST", "/admin/v1/tokens", {"name": "x", "role": "admin", "hash": "00"})
    assert st == 400 and doc["error"]["code"] == "field_not_settable"


def test_cannot_revoke_own_token(stack):
    tid, secret, _ = new_token(stack, "admin")
    st, doc, _, _ = call(stack, "POST", f"/admin/v1/tokens/{tid}/revoke", token=secret)
    assert st == 409 and doc["error"]["code"] == "cannot_revoke_own_token"
    st, _, _, _ = call(stack, "GET", "/admin/v1/tokens", token=secret)
    assert st == 200, "refusing to revoke itself must leave the token working"
    st, _, _, _ = call(stack, "POST", f"/admin/v1/tokens/{tid}/revoke")  # another admin may
    assert st == 200
    st, _, _, _ = call(stack, "GET", "/admin/v1/tokens", token=secret)
    assert st == 401


@pytest.mark.parametrize("role", ["approver", "auditor"])
def test_non_admin_roles_get_403(stack, role):
    tid, secret, _ = new_token(stack, role)
    routes = [
        ("GET", "/admin/v1/keys", None),
        ("POST", "/admin/v1/keys", {"name": "nope"}),
        ("POST", "/admin/v1/keys/key_abc123/revoke", None),
        ("GET", "/admin/v1/providers", None),
        ("GET", "/admin/v1/providers/prov_abc123", None),
        ("GET", "/admin/v1/tokens", None),
        ("POST", "/admin/v1/tokens", {"name": "nope", "role": "admin"}),
        ("POST", f"/admin/v1/tokens/{tid}/revoke", None),
    ]
    for method, path, body in routes:
        st, doc, _, rid = call(stack, method, path, body, token=secret)
        assert st == 403, f"{role} got {st} on {method} {path}"
        assert doc["error"]["code"] == "insufficient_role"
        row = one_admin_row(stack, rid)
        assert row["decision"] == "deny" and row["http_status"] == 403 and row["key_id"] == tid
    # nothing was created by the refused POSTs
    st, doc, _, _ = call(stack, "GET", "/admin/v1/keys")
    assert st == 200 and not [k for k in doc["data"] if k["name"] == "nope"]


# --------------------------------------------------------------------- audit

def test_admin_actions_are_audited(stack):
    me = my_token_id(stack)
    assert me.startswith("adm_")

    # a create: the new object's id is recorded, never the token
    st, doc, raw, rid = call(stack, "POST", "/admin/v1/tokens", {"name": "a-" + marker(), "role": "auditor"})
    assert st == 201
    new_id = doc["id"]
    row = one_admin_row(stack, rid)
    assert row["kind"] == "admin.tokens.create" and row["endpoint"] == "tokens.create"
    assert row["decision"] == "allow" and row["http_status"] == 201 and row["key_id"] == me
    assert row["rule_id"] == new_id and row["tenant_id"] == "default" and row["source_ip"]
    assert row["time"] is not None
    assert_clean_row(stack, row)

    # a key create and revoke
    st, kdoc, _, rid = call(stack, "POST", "/admin/v1/keys", {"name": "audited-" + marker()})
    assert st == 201
    row = one_admin_row(stack, rid)
    assert row["kind"] == "admin.keys.create" and row["rule_id"] == kdoc["id"] and row["key_id"] == me
    assert_clean_row(stack, row)
    st, _, _, rid = call(stack, "POST", f"/admin/v1/keys/{kdoc['id']}/revoke")
    assert st == 200
    row = one_admin_row(stack, rid)
    assert row["kind"] == "admin.keys.revoke" and row["endpoint"] == "keys.revoke"
    assert row["decision"] == "allow" and row["http_status"] == 200
    assert row["rule_id"] == kdoc["id"] and row["key_id"] == me
    assert_clean_row(stack, row)

    # a 403 (the auditor token)
    _, auditor, _ = new_token(stack, "auditor")
    st, _, _, rid = call(stack, "POST", "/admin/v1/keys", {"name": "x"}, token=auditor)
    assert st == 403
    row = one_admin_row(stack, rid)
    assert row["kind"] == "admin.keys.create" and row["decision"] == "deny" and row["http_status"] == 403
    assert row["error_code"] == "insufficient_role" and row["key_id"].startswith("adm_")
    assert_clean_row(stack, row)

    # a 401: no token at all, and an unknown token
    st, _, _, rid = call(stack, "GET", "/admin/v1/keys", use_token=False)
    assert st == 401
    row = one_admin_row(stack, rid)
    assert row["kind"] == "admin.keys.list" and row["decision"] == "deny" and row["http_status"] == 401
    assert not row["key_id"] and row["error_code"] == "invalid_admin_token"
    tid, secret, _ = new_token(stack, "admin")
    call(stack, "POST", f"/admin/v1/tokens/{tid}/revoke")
    st, _, _, rid = call(stack, "POST", "/admin/v1/keys/key_abc123/revoke", token=secret)
    assert st == 401
    row = one_admin_row(stack, rid)
    assert row["kind"] == "admin.keys.revoke" and row["http_status"] == 401 and not row["key_id"]
    assert row["rule_id"] == "key_abc123"
    assert_clean_row(stack, row)

    # a 404 on an unknown id and a 409 are audited as deny too
    st, _, _, rid = call(stack, "GET", "/admin/v1/keys/key_doesnotexist123")
    assert st == 404
    row = one_admin_row(stack, rid)
    assert row["decision"] == "deny" and row["http_status"] == 404 and row["error_code"] == "not_found"
    st, _, _, rid = call(stack, "POST", f"/admin/v1/tokens/{me}/revoke")
    assert st == 409
    row = one_admin_row(stack, rid)
    assert row["kind"] == "admin.tokens.revoke" and row["http_status"] == 409 and row["rule_id"] == me


# ------------------------------------------------------------------- tenancy

def test_cross_tenant_is_404_and_audited(stack):
    tenant = "t" + marker().replace("-", "")[:12].lower()
    p = stack.run_tool("vault", ["--bootstrap-admin", "--tenant", tenant])
    lines = p.stdout.decode().strip().splitlines()
    b_token = lines[-1].strip() if lines else ""
    assert b_token.startswith("lk_adm_"), "bootstrap did not print an admin token"
    leaked = TOKEN_RE.search(p.stderr.decode(errors="replace")) is not None
    assert not leaked, "bootstrap wrote something shaped like a token on stderr"
    with stack.db().cursor() as cur:
        cur.execute("SELECT id FROM tenants WHERE id = %s", (tenant,))
        assert cur.fetchone(), "bootstrap did not create the tenant"
    # a second bootstrap of the same tenant is refused
    again = stack.run_tool("vault", ["--bootstrap-admin", "--tenant", tenant], check=False)
    assert again.returncode == 3 and not TOKEN_RE.search(again.stdout.decode(errors="replace"))

    st, kdoc, _, _ = call(stack, "POST", "/admin/v1/keys", {"name": "b-" + marker()}, token=b_token)
    assert st == 201
    b_key = kdoc["id"]
    st, doc, _, _ = call(stack, "GET", "/admin/v1/providers", token=b_token)
    assert st == 200 and doc["data"] == [], "tenant B sees another tenant's providers"
    st, doc, _, _ = call(stack, "GET", "/admin/v1/keys", token=b_token)
    assert [k["id"] for k in doc["data"]] == [b_key]

    me = my_token_id(stack)
    # tenant A cannot see, change or revoke B's key, nor B's tokens
    for method, path in [("GET", f"/admin/v1/keys/{b_key}"), ("POST", f"/admin/v1/keys/{b_key}/revoke"),
                         ("POST", f"/admin/v1/keys/{b_key}/rotate")]:
        st, doc, _, rid = call(stack, method, path)
        assert st == 404, f"tenant A got {st} on {method} {path}"
        row = one_admin_row(stack, rid)
        assert row["decision"] == "deny" and row["http_status"] == 404
        assert row["key_id"] == me and row["tenant_id"] == "default" and row["rule_id"] == b_key
    st, _, _, rid = call(stack, "GET", "/admin/v1/tokens", token=b_token)
    b_tok_id = one_admin_row(stack, rid)["key_id"]
    st, _, _, rid = call(stack, "POST", f"/admin/v1/tokens/{b_tok_id}/revoke")
    assert st == 404
    row = one_admin_row(stack, rid)
    assert row["decision"] == "deny" and row["tenant_id"] == "default"
    # tenant A's provider is invisible to B
    st, _, _, rid = call(stack, "GET", f"/admin/v1/providers/{stack.provider_id}", token=b_token)
    assert st == 404
    row = one_admin_row(stack, rid)
    assert row["tenant_id"] == tenant and row["decision"] == "deny" and row["http_status"] == 404
    # B's key still works for B
    st, doc, _, _ = call(stack, "GET", f"/admin/v1/keys/{b_key}", token=b_token)
    assert st == 200 and doc["status"] == "active"


# ------------------------------------------------------------------- secrets

def test_ctl_tokens(stack):
    out = stack.ctl("tokens", "create", "--name", "ctl-" + marker(), "--role", "approver", "--format", "json")
    doc = json.loads(out.stdout)
    assert doc["role"] == "approver" and doc["token"].startswith("lk_adm_")
    lst = stack.ctl("tokens", "list")
    shown = doc["token"] in lst.stdout.decode() or "lk_adm_" in lst.stdout.decode()
    assert not shown, "tokens list shows a token (redacted)"
    assert doc["id"] in lst.stdout.decode()
    rv = stack.ctl("tokens", "revoke", doc["id"])
    assert "revoked" in rv.stdout.decode()
    bad = stack.ctl("tokens", "create", "--name", "x", "--role", "root", check=False)
    assert bad.returncode == 2


def test_no_secret_in_logs_or_audit(stack):
    _, secret, _ = new_token(stack, "admin")
    call(stack, "GET", "/admin/v1/tokens", token=secret)
    logs = stack.all_logs_text()
    leaked = secret in logs or stack.admin_token in logs
    assert not leaked, "an admin token appears in a log (redacted)"
    with stack.db().cursor() as cur:
        cur.execute("SELECT * FROM audit_events WHERE kind LIKE 'admin.%%'")
        rows = cur.fetchall()
    assert rows
    for row in rows:
        assert_clean_row(stack, row)
