"""Canary sweep: secrets never surface anywhere.

Canary provider credentials are planted, then every error path is driven:
malformed / unknown / missing / expired / revoked / out-of-scope keys, provider 4xx and
5xx, a provider that refuses the stored credential and echoes it back in full,
an unreachable provider, broken streams, bad JSON, oversize bodies, admin API
errors. Afterwards the canaries (and the stack's own secrets: admin token,
Lumkey key, provider credential) must appear in no response body or header, no
log line of any process (PostgreSQL's included), and nowhere in a pg_dump.
"""

import json
import secrets
import shutil
import subprocess
import time

import pytest

from lkstack import MODEL, MODEL_ALT, free_port, http

pytestmark = pytest.mark.skipif(shutil.which("pg_dump") is None, reason="pg_dump comes with PostgreSQL")


def test_canaries_never_surface(stack):
    echo_canary = "sk-canary-echo-" + secrets.token_hex(16)     # refused by the provider, which echoes it
    dead_canary = "sk-canary-dead-" + secrets.token_hex(16)     # provider unreachable
    stack.ctl("providers", "create", "--name", "canary-echo", "--kind", "openai-compatible", "--base-url",
              stack.mock_base + "/v1", "--allow-private", "--api-key-stdin", "--models", "canary-echo-model",
              input=echo_canary.encode())
    stack.ctl("providers", "create", "--name", "canary-dead", "--kind", "openai-compatible", "--base-url",
              f"http://127.0.0.1:{free_port()}/v1", "--allow-private", "--api-key-stdin", "--models",
              "canary-dead-model",
              input=dead_canary.encode())
    scoped = json.loads(stack.ctl("keys", "create", "--name", "scoped", "--models", MODEL,
                                  "--format", "json").stdout)
    expiring = json.loads(stack.ctl("keys", "create", "--name", "expiring", "--expires-at",
                                    str(int(time.time()) + 2), "--format", "json").stdout)
    revoked = json.loads(stack.ctl("keys", "create", "--name", "revoked", "--format", "json").stdout)
    stack.ctl("keys", "revoke", revoked["id"])
    watch = [echo_canary, dead_canary, scoped["key"], expiring["key"], revoked["key"], *stack.secrets()]

    seen = []  # every (status, headers, body) the clients got back

    def chat(body, **kw):
        r = stack.chat_raw(body, **kw)
        seen.append(r)
        return r[0]

    def msg(text, model=MODEL, **extra):
        return {"model": model, "messages": [{"role": "user", "content": text}], **extra}

    # keys
    assert chat(msg("hi"), api_key="lk_live_" + "A" * 65) == 401                  # bad checksum
    assert chat(msg("hi"), api_key=stack.key[:-1]) == 401                          # truncated
    assert chat(msg("hi"), use_key=False) == 401                                   # missing
    assert chat(msg("hi"), api_key=stack.admin_token) == 401                       # admin token as a key
    assert chat(msg("hi", model=MODEL_ALT), api_key=scoped["key"]) == 403          # model out of scope
    time.sleep(2.5)
    assert chat(msg("hi"), api_key=expiring["key"]) == 401                         # expired
    assert chat(msg("hi"), api_key=revoked["key"]) == 401                          # revoked
    # the provider side
    for st in (400, 404, 429, 500, 503):
        assert chat(msg(f"[[mock status={st}]]")) == st
    assert chat(msg("hi", model="canary-echo-model")) == 502                       # provider refuses + echoes
    assert chat(msg("hi", model="canary-dead-model")) == 502                       # unreachable
    assert chat(msg("[[mock malformed_sse=1 chunks=3]]", stream=True)) == 200      # error event mid-stream
    assert chat(msg("[[mock close_after=1 chunks=4]]", stream=True)) == 200        # cut stream
    # the request itself
    assert chat(b"{not json") == 400
    assert chat(msg("x" * (stack.max_body_bytes + 10))) == 413
    assert chat(msg("hi", model="no-such-model")) == 404
    # the admin API
    auth = {"authorization": f"Bearer {stack.admin_token}", "content-type": "application/json"}
    for body in ({"name": "bad", "kind": "openai", "base_url": "ftp://x", "api_key": echo_canary},
                 {"name": "bad2", "kind": "nope", "base_url": "https://x.example", "api_key": echo_canary},
                 {"name": "canary-echo", "kind": "openai-compatible", "base_url": stack.mock_base + "/v1",
                  "allow_private": True, "api_key": echo_canary},                   # duplicate name
                 {"name": "bad3", "kind": "openai", "base_url": "https://x.example", "api_key": echo_canary,
                  "ciphertext": "AAAA"}):                                           # forbidden field
        r = http("POST", stack.admin_base + "/admin/v1/providers", json.dumps(body).encode(), auth)
        seen.append(r)
        assert r[0] in (400, 409), f"admin create answered {r[0]}"
    r = http("POST", stack.admin_base + "/admin/v1/providers", b'{"api_key":"' + echo_canary.encode(),
             {"authorization": "Bearer lk_adm_" + "B" * 65})
    seen.append(r)
    assert r[0] == 401
    for path in ("/admin/v1/providers", "/admin/v1/keys"):
        r = http("GET", stack.admin_base + path, headers=auth)
        seen.append(r)
        assert r[0] == 200

    # the provider really saw the canary and refused it: the path was exercised
    refused = [q for q in stack.mock_requests() if (q.get("headers") or {}).get("authorization")
               == f"Bearer {echo_canary}"]
    assert refused, "the echoing provider was never called with the canary credential"

    def leaks(text: str) -> list[int]:
        return [i for i, s in enumerate(watch) if s and s in text]

    for i, (status, headers, body) in enumerate(seen):
        where = leaks(body.decode(errors="replace") + json.dumps(headers))
        assert not where, f"answer #{i} (HTTP {status}) contains secret #{where}"
    time.sleep(0.5)  # let the last audit events land
    assert not leaks(stack.all_logs_text()), f"a log contains secret #{leaks(stack.all_logs_text())}"
    dump = subprocess.run(["pg_dump", "-d", stack.conninfo], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          timeout=60)
    assert dump.returncode == 0, dump.stderr.decode(errors="replace")[:500]
    text = dump.stdout.decode(errors="replace")
    assert "credentials" in text and "api_keys" in text, "pg_dump did not dump the tables"
    assert not leaks(text), f"pg_dump contains secret #{leaks(text)}"
