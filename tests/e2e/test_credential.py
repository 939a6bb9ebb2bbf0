"""Replacing a provider's credential: the new secret is taken once (stdin),
used from the next request on, never shown again; bad requests are refused."""

import json
import secrets

import openai
import pytest

from lkstack import http


def test_replace_credential(stack):
    wrong = "sk-wrong-" + secrets.token_hex(12)
    prov = json.loads(stack.ctl("providers", "create", "--name", "replaceable", "--kind", "openai-compatible",
                                "--base-url", stack.mock_base + "/v1", "--allow-private", "--api-key-stdin",
                                "--models",
                                "replace-model", "--format", "json", input=wrong.encode()).stdout)
    client = stack.client()
    msg = [{"role": "user", "content": "hi"}]
    with pytest.raises(openai.APIStatusError) as ei:       # the provider refuses the wrong credential
        client.chat.completions.create(model="replace-model", messages=msg)
    assert ei.value.status_code == 502 and ei.value.response.json()["error"]["code"] == "upstream_auth_failed"

    p = stack.ctl("providers", "replace-credential", prov["id"], "--api-key-stdin", "--format", "json",
                  input=stack.provider_credential.encode())
    out = json.loads(p.stdout)
    assert out["id"] == prov["id"]
    assert out["credential"]["id"] != prov["credential"]["id"], "no new credential row"
    assert out["credential"]["fingerprint"].endswith(stack.provider_credential[-4:])
    shown = stack.provider_credential in p.stdout.decode() + p.stderr.decode()
    assert not shown, "the replaced secret was shown back"

    # the very next request uses the new credential
    assert client.chat.completions.create(model="replace-model", messages=msg).choices[0].message.content
    got = json.loads(stack.ctl("providers", "get", prov["id"], "--format", "json").stdout)
    assert got["credential"]["id"] == out["credential"]["id"]
    logs = stack.all_logs_text()
    assert wrong not in logs and stack.provider_credential not in logs


@pytest.mark.parametrize("path,body,status", [
    ("/admin/v1/providers/prov_doesnotexist0000/credential", {"api_key": "sk-x-123456789"}, 404),
    ("PROVIDER", {"api_key": "sk-x-123456789", "ciphertext": "AAAA"}, 400),
    ("PROVIDER", {}, 400),
    ("PROVIDER", {"api_key": "has space"}, 400),
])
def test_replace_credential_refusals(stack, path, body, status):
    if path == "PROVIDER":
        path = f"/admin/v1/providers/{stack.provider_id}/credential"
    auth = {"authorization": f"Bearer {stack.admin_token}", "content-type": "application/json"}
    st, _, out = http("PUT", stack.admin_base + path, json.dumps(body).encode(), auth)
    assert st == status, out[:300]
    assert b"sk-x-123456789" not in out
