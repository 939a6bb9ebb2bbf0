"""The agent API over HTTP/2 (h2c with prior knowledge, and Upgrade: h2c), with
curl as the client: plain answers and SSE streams arrive intact."""

import json
import shutil
import subprocess

import pytest

from helpers import marker
from lkstack import MODEL

pytestmark = pytest.mark.skipif(shutil.which("curl") is None, reason="curl is installed by scripts/deps.sh")


def curl(stack, body: dict, *flags: str) -> tuple[str, int, str]:
    """(http version, status, body) of a POST /v1/chat/completions."""
    p = subprocess.run(
        ["curl", "-sS", "-N", *flags, "-o", "-", "-w", "\n%{http_version} %{http_code}",
         "-H", "content-type: application/json", "-H", "@-",
         "--data-binary", json.dumps(body), stack.openai_base_url + "/chat/completions"],
        input=f"authorization: Bearer {stack.key}\n".encode(),  # the key via stdin, not argv
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=60)
    assert p.returncode == 0, stack.redact(p.stderr.decode(errors="replace"))
    out = p.stdout.decode()
    text, _, tail = out.rpartition("\n")
    version, code = tail.split()
    return version, int(code), text


@pytest.mark.parametrize("flag", ["--http2-prior-knowledge", "--http2"])
def test_http2_completion(stack, flag):
    m = marker()
    version, code, text = curl(stack, {"model": MODEL, "messages": [{"role": "user", "content": m}]}, flag)
    assert version == "2", f"answered over HTTP/{version}"
    assert code == 200
    assert json.loads(text)["choices"][0]["message"]["content"]


def test_http2_stream(stack):
    version, code, text = curl(stack, {"model": MODEL, "stream": True,
                                       "messages": [{"role": "user", "content": "[[mock chunks=4]]"}]},
                               "--http2-prior-knowledge")
    assert version == "2" and code == 200
    events = [line[6:] for line in text.splitlines() if line.startswith("data: ")]
    assert events[-1] == "[DONE]"
    chunks = [json.loads(e) for e in events[:-1]]
    assert all(c["object"] == "chat.completion.chunk" for c in chunks)
    content = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"])
    assert content, "no content streamed over HTTP/2"
