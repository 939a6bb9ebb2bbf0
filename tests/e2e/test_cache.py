"""The policy and vault caches (issue 9): a known key needs no SQL in policy or
vault, and every change that DECIDE or CRED_GET depends on applies to the next
request, on every policy replica, because PostgreSQL NOTIFYs it (migration
0021) - also after the LISTEN connection was killed.

This file's stack runs two policy replicas behind the edge (its DEALER
alternates between them) and a cache age of 60 s: a change seen here within a
test was applied by the invalidation, never by the age limit.

Secrets never go into assertion messages.
"""

import json
import re
import shutil
import tempfile
import time

import pytest

from helpers import marker
from lkstack import MODEL, MODEL_ALT, Proc, Stack, StackError, http

CACHE_AGE_MS = 60000
ROUNDS = 6  # requests per check: three per replica


@pytest.fixture(scope="module")
def stack():
    ep_dir = tempfile.mkdtemp(prefix="lkc")  # short: ipc paths are limited to ~107 bytes
    p1, p2 = f"ipc://{ep_dir}/policy1.ipc", f"ipc://{ep_dir}/policy2.ipc"
    s = Stack(extra_env={"LUMKEY_CACHE_MAX_AGE_MS": str(CACHE_AGE_MS)},
              service_env={"policy": {"LUMKEY_POLICY_BIND": p1},
                           "edge": {"LUMKEY_POLICY_ENDPOINT": f"{p1},{p2}"}})
    try:
        s.start()
        p = Proc("policy2", s.service_argv("policy"), s.env(LUMKEY_POLICY_BIND=p2), s.dir / "logs" / "policy2.log")
        p.start(s.dir / "pgids")
        s.procs["policy2"] = p
        _wait_policy_replicas(s, 2)
        _wait_both_replicas_decide(s)
    except StackError as e:
        s.stop()
        pytest.fail(f"could not start the stack: {e}", pytrace=False)
    yield s
    s.stop()
    reports = s.sanitizer_reports()
    if not reports:
        s.cleanup_dir()
    shutil.rmtree(ep_dir, ignore_errors=True)
    if reports:
        pytest.fail("sanitizer reports at teardown:\n" + s.redact(
            "\n".join(f"=== {name}\n{text[:4000]}" for name, text in reports)), pytrace=False)


def _wait_policy_replicas(s, n, timeout=30.0):
    deadline = time.monotonic() + timeout
    while True:
        st, _, body = http("GET", s.admin_base + "/metrics")
        m = re.search(r'^lumkey_edge_worker_replicas\{service="policy"\} (\d+)', body.decode(), re.M)
        if st == 200 and m and int(m.group(1)) == n:
            return
        if time.monotonic() > deadline:
            raise StackError(f"the edge does not see {n} policy replicas")
        time.sleep(0.1)


def _wait_both_replicas_decide(s, timeout=30.0):
    """Until the edge's DEALER has reached replica 2 too: both have run a DECIDE."""
    deadline = time.monotonic() + timeout
    while True:
        s.chat_raw({"model": MODEL, "messages": [{"role": "user", "content": "warm"}]}, timeout=15)
        if len([q for _, q in backends(s, "lumkey-policy").values() if "FROM api_keys k" in q]) == 2:
            return
        if time.monotonic() > deadline:
            raise StackError("policy replica 2 never decided a request")
        time.sleep(0.1)


# ------------------------------------------------------------------ helpers

def admin(stack, method, path, body=None):
    data = None if body is None else json.dumps(body).encode()
    h = {"authorization": f"Bearer {stack.admin_token}"}
    if data is not None:
        h["content-type"] = "application/json"
    st, _, raw = http(method, stack.admin_base + path, data, h)
    return st, (json.loads(raw) if raw else None)


def new_key(stack, **fields):
    body = {"name": "c-" + marker()}
    body.update(fields)
    st, doc = admin(stack, "POST", "/admin/v1/keys", body)
    assert st == 201, f"keys.create answered {st}"
    return doc["id"], doc["key"]


def ask(stack, key, model=MODEL):
    """(status, error code or None) of one chat request."""
    st, _, body = stack.chat_raw({"model": model, "messages": [{"role": "user", "content": marker()}]},
                                 api_key=key, timeout=15)
    code = None
    if st != 200:
        try:
            code = json.loads(body)["error"]["code"]
        except (ValueError, KeyError, TypeError):
            code = "?"
    return st, code


def asks(stack, key, n=ROUNDS, model=MODEL):
    return [ask(stack, key, model) for _ in range(n)]


def backends(stack, app):
    """{pid: (query_start, query)} of the database connections named app."""
    with stack.db().cursor() as cur:
        cur.execute("SELECT pid, query_start, query FROM pg_stat_activity WHERE application_name = %s", (app,))
        return {r["pid"]: (r["query_start"], r["query"]) for r in cur.fetchall()}


def all_ok(results):
    return all(st == 200 for st, _ in results)


def until(probe, want, within=2.0):
    """For a change made with SQL behind Lumkey's back: PostgreSQL delivers its
    NOTIFY asynchronously, so the first request may still race it. Asks until
    probe() == want (within 2 s: far below this stack's 60 s cache age, so only
    the invalidation can make it happen), then ROUNDS more must agree."""
    deadline = time.monotonic() + within
    while (got := probe()) != want:
        assert time.monotonic() < deadline, f"still {got} after {within} s, want {want}"
        time.sleep(0.01)
    assert [probe() for _ in range(ROUNDS)] == [want] * ROUNDS


# -------------------------------------------------------------------- tests

def test_known_key_needs_no_sql_in_policy_or_vault(stack):
    _, key = new_key(stack)
    assert all_ok(asks(stack, key)), "a fresh key works"  # fills both replicas' caches and the vault's
    policy = backends(stack, "lumkey-policy")
    assert len(policy) == 2, "two policy replicas, one database connection each"
    assert all("FROM api_keys k" in q for _, q in policy.values()), \
        f"both replicas decided requests: {[q[:80] for _, q in policy.values()]}"
    vault = backends(stack, "lumkey-vault")
    assert all_ok(asks(stack, key, 10))
    # the last statement of every policy and vault connection is still the one from before
    assert backends(stack, "lumkey-policy") == policy, "DECIDE of a known key went to PostgreSQL"
    assert backends(stack, "lumkey-vault") == vault, "CRED_GET of a known credential went to PostgreSQL"
    # and each worker holds a LISTEN connection
    assert len(backends(stack, "lumkey-policy-listen")) == 2
    assert len(backends(stack, "lumkey-vault-listen")) == 1


def test_revoked_key_is_refused_by_the_next_request_on_every_replica(stack):
    kid, key = new_key(stack)
    assert all_ok(asks(stack, key)), "cached on both replicas"
    st, _ = admin(stack, "POST", f"/admin/v1/keys/{kid}/revoke", {})
    assert st == 200
    assert asks(stack, key) == [(401, "key_revoked")] * ROUNDS


def test_key_scope_change_applies_to_the_next_request(stack):
    kid, key = new_key(stack)
    assert all_ok(asks(stack, key)) and all_ok(asks(stack, key, model=MODEL_ALT))
    st, _ = admin(stack, "PATCH", f"/admin/v1/keys/{kid}", {"models": [MODEL]})
    assert st == 200
    assert asks(stack, key, model=MODEL_ALT) == [(403, "model_not_allowed")] * ROUNDS
    assert all_ok(asks(stack, key))
    st, _ = admin(stack, "PATCH", f"/admin/v1/keys/{kid}", {"models": []})
    assert st == 200
    assert all_ok(asks(stack, key, model=MODEL_ALT))


def test_cached_row_lives_no_longer_than_the_key(stack):
    _, key = new_key(stack, expires_at=int(time.time()) + 3)
    assert all_ok(asks(stack, key, 2)), "cached on both replicas, well before the expiry"
    deadline = time.time() + 6
    while time.time() < deadline and ask(stack, key) == (200, None):
        time.sleep(0.2)
    # expired by now (the cache age is 60 s): every replica refuses it
    assert asks(stack, key) == [(401, "key_expired")] * ROUNDS


def test_policy_change_applies_to_the_next_request(stack, tmp_path):
    word = marker()
    doc = {"rules": [{"id": "no-word", "when": {"text": {"regex": [word]}}, "action": "block"}]}
    f = tmp_path / "p.json"
    f.write_text(json.dumps({"rules": [{"id": "noop", "action": "log"}]}))
    pol = json.loads(stack.ctl("policy", "create", "--name", marker(), "--file", str(f), "--format", "json").stdout)
    key = json.loads(stack.ctl("keys", "create", "--name", marker(), "--policy", pol["id"],
                               "--format", "json").stdout)["key"]
    body = {"model": MODEL, "messages": [{"role": "user", "content": f"say {word}"}]}
    assert all(stack.chat_raw(body, api_key=key)[0] == 200 for _ in range(ROUNDS)), "cached with version 1"
    f.write_text(json.dumps(doc))
    stack.ctl("policy", "update", pol["id"], "--file", str(f))
    assert [stack.chat_raw(body, api_key=key)[0] for _ in range(ROUNDS)] == [403] * ROUNDS


def test_route_and_credential_changes_apply_to_the_next_request(stack):
    _, key = new_key(stack)
    alias = "alias-" + marker()
    assert asks(stack, key, model=alias) == [(404, "model_not_found")] * ROUNDS, "an unknown model, cached"
    r = json.loads(stack.ctl("routes", "create", "--alias", alias, "--provider", stack.provider_id,
                             "--upstream-model", MODEL, "--format", "json").stdout)
    assert all_ok(asks(stack, key, model=alias)), "the new route is used at once"
    stack.ctl("routes", "delete", r["id"])
    assert asks(stack, key, model=alias) == [(404, "model_not_found")] * ROUNDS

    # a new credential for the provider (one the mock refuses), then the right one again
    assert all_ok(asks(stack, key))
    try:
        stack.ctl("providers", "replace-credential", stack.provider_id, "--api-key-stdin",
                  input=b"sk-wrong-" + marker().encode())
        assert all(st != 200 for st, _ in asks(stack, key)), "the replaced credential was still used"
    finally:
        stack.ctl("providers", "replace-credential", stack.provider_id, "--api-key-stdin",
                  input=stack.provider_credential.encode())
    assert all_ok(asks(stack, key))


def test_credential_row_changed_in_place_is_not_served_from_the_vault_cache(stack):
    """Same credential id, new row content (e.g. a KEK rewrap; here another row's
    sealed secret, which must not open): the vault drops its copy."""
    _, key = new_key(stack)
    assert all_ok(asks(stack, key))
    with stack.db().cursor() as cur:
        cur.execute("SELECT c.id, c.ciphertext, c.nonce, c.wrapped_dek FROM credentials c "
                    "WHERE c.provider_id = %s ORDER BY c.created_at DESC, c.id DESC LIMIT 1", (stack.provider_id,))
        mine = cur.fetchone()
        cur.execute("UPDATE credentials c SET ciphertext = o.ciphertext, nonce = o.nonce, wrapped_dek = o.wrapped_dek "
                    "FROM credentials o WHERE c.id = %s AND o.provider_id <> %s AND o.id = "
                    "(SELECT id FROM credentials WHERE provider_id <> %s ORDER BY created_at LIMIT 1)",
                    (mine["id"], stack.provider_id, stack.provider_id))
        assert cur.rowcount == 1
    try:
        until(lambda: ask(stack, key), (500, "credential_integrity_failed"))
    finally:
        with stack.db().cursor() as cur:
            cur.execute("UPDATE credentials SET ciphertext = %s, nonce = %s, wrapped_dek = %s WHERE id = %s",
                        (mine["ciphertext"], mine["nonce"], mine["wrapped_dek"], mine["id"]))
    assert all_ok(asks(stack, key))


def test_killed_listen_connection_bypasses_then_refills_the_cache(stack):
    kid, key = new_key(stack)
    assert all_ok(asks(stack, key)), "cached on both replicas"
    with stack.db().cursor() as cur:
        cur.execute("SELECT pg_terminate_backend(pid, 10000) AS gone FROM pg_stat_activity "
                    "WHERE application_name IN ('lumkey-policy-listen', 'lumkey-vault-listen')")
        assert [r["gone"] for r in cur.fetchall()] == [True] * 3
        # nobody listens now: this change is announced to no one
        cur.execute("UPDATE api_keys SET revoked_at = now() WHERE id = %s", (kid,))
    # the workers saw their LISTEN connection go: caches dropped, the next DECIDE asks PostgreSQL
    assert asks(stack, key) == [(401, "key_revoked")] * ROUNDS
    # the workers listen again, and known keys are served from the cache again
    deadline = time.monotonic() + 15
    while len(backends(stack, "lumkey-policy-listen")) < 2 or len(backends(stack, "lumkey-vault-listen")) < 1:
        assert time.monotonic() < deadline, "the LISTEN connections did not come back"
        time.sleep(0.1)
    _, key2 = new_key(stack)
    assert all_ok(asks(stack, key2))
    policy = backends(stack, "lumkey-policy")
    assert all_ok(asks(stack, key2))
    assert backends(stack, "lumkey-policy") == policy
    logs = stack.all_logs_text()
    assert "database listen connection lost" in logs and "database listen connection restored" in logs
