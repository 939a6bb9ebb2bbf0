#!/usr/bin/env python3
"""mock_smoke - starts lumkey-mock on free ports and checks what tests rely on.

usage: mock_smoke.py PATH/TO/lumkey-mock

JSON and SSE shapes, stream pacing, tool calls, simulated errors, the
--expect-key check, the request log, and HTTPS with a throwaway certificate.
Standard library only (plus the openssl CLI for the certificate).
"""
import http.client
import json
import os
import shutil
import socket
import ssl
import subprocess
import sys
import tempfile
import time

MOCK = sys.argv[1] if len(sys.argv) > 1 else "lumkey-mock"
FAILS = []
PROCS = []


def check(cond, what):
    print(("ok   " if cond else "FAIL ") + what, flush=True)
    if not cond:
        FAILS.append(what)


def start(*args, env=None):
    """Starts the mock on 127.0.0.1:0 and returns (proc, port)."""
    err = tempfile.TemporaryFile(mode="w+")
    p = subprocess.Popen([MOCK, "--listen", "127.0.0.1:0", *args], stdout=subprocess.PIPE,
                         stderr=err, text=True, env=env)
    PROCS.append((p, err))
    line = p.stdout.readline()
    if "listening on http://" not in line:
        err.seek(0)
        raise SystemExit("mock did not start: %r %s" % (line, err.read()))
    return p, int(line.rsplit(":", 1)[1])


def conn(port, tls_ctx=None, timeout=10):
    if tls_ctx:
        return http.client.HTTPSConnection("localhost", port, context=tls_ctx, timeout=timeout)
    return http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)


def call(port, method, path, body=None, headers=None, tls_ctx=None, timeout=10):
    c = conn(port, tls_ctx, timeout)
    data = json.dumps(body).encode() if isinstance(body, (dict, list)) else body
    h = {"content-type": "application/json"}
    h.update(headers or {})
    c.request(method, path, body=data, headers=h)
    r = c.getresponse()
    raw = r.read()
    c.close()
    return r.status, dict((k.lower(), v) for k, v in r.getheaders()), raw


def chat(content, **extra):
    body = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": content}]}
    body.update(extra)
    return body


def sse_events(raw):
    """Splits an SSE body into the data payloads of its events."""
    out = []
    for block in raw.decode().split("\n\n"):
        if block.strip():
            out.append(block[len("data: "):] if block.startswith("data: ") else block)
    return out


def is_error_shape(raw, status_type=None):
    try:
        e = json.loads(raw)["error"]
    except Exception:
        return False
    ok = all(k in e for k in ("message", "type", "param", "code"))
    return ok and (status_type is None or e["type"] == status_type)


def main():
    tmp = tempfile.mkdtemp(prefix="mock_smoke.")
    try:
        run(tmp)
    finally:
        for p, _ in PROCS:
            check(p.poll() is None, "mock pid %d still running at the end" % p.pid)
            p.terminate()
        for p, err in PROCS:
            try:
                p.wait(timeout=5)
            except subprocess.TimeoutExpired:
                p.kill()
            err.seek(0)
            log = err.read()
            check("Sanitizer" not in log and "runtime error" not in log, "no sanitizer report from pid %d" % p.pid)
            if "Sanitizer" in log or "runtime error" in log:
                print(log[-4000:])
        shutil.rmtree(tmp, ignore_errors=True)
    if FAILS:
        print("%d check(s) failed" % len(FAILS))
        sys.exit(1)
    print("all checks passed")


def run(tmp):
    _, port = start("--threads", "2")

    # --- non-streaming JSON shape
    st, hdrs, raw = call(port, "POST", "/v1/chat/completions", chat("hello there"))
    j = json.loads(raw)
    check(st == 200 and hdrs.get("content-type") == "application/json", "chat: 200 application/json")
    check(j["id"].startswith("chatcmpl-") and j["object"] == "chat.completion" and isinstance(j["created"], int),
          "chat: id/object/created")
    check(j["model"] == "gpt-4o-mini", "chat: model echoed")
    ch = j["choices"][0]
    check(ch["message"]["role"] == "assistant" and ch["message"]["content"] == "Hello from lumkey-mock"
          and ch["finish_reason"] == "stop", "chat: message and finish_reason")
    u = j["usage"]
    check(u["prompt_tokens"] > 0 and u["completion_tokens"] > 0
          and u["total_tokens"] == u["prompt_tokens"] + u["completion_tokens"], "chat: usage")

    # --- SSE shape: 3 content chunks, a finish chunk, a usage chunk, [DONE]
    st, hdrs, raw = call(port, "POST", "/v1/chat/completions",
                         chat("hi", stream=True, stream_options={"include_usage": True}))
    ev = sse_events(raw)
    check(st == 200 and hdrs.get("content-type", "").startswith("text/event-stream"), "sse: text/event-stream")
    check(ev[-1] == "[DONE]" and raw.decode().endswith("data: [DONE]\n\n"), "sse: ends with data: [DONE]")
    chunks = [json.loads(e) for e in ev[:-1]]
    content = [c for c in chunks if c["choices"] and "content" in c["choices"][0]["delta"]]
    check(len(content) == 3, "sse: 3 content chunks (got %d)" % len(content))
    check(len({c["id"] for c in chunks}) == 1 and len({c["created"] for c in chunks}) == 1,
          "sse: same id/created on every chunk")
    check(all(c["object"] == "chat.completion.chunk" for c in chunks), "sse: object chat.completion.chunk")
    check(content[0]["choices"][0]["delta"].get("role") == "assistant", "sse: first delta has role")
    check("".join(c["choices"][0]["delta"]["content"] for c in content) == "Hello from lumkey-mock",
          "sse: pieces join to the answer")
    check(chunks[-2]["choices"][0]["finish_reason"] == "stop"
          and all(c["choices"][0]["finish_reason"] is None for c in content), "sse: finish_reason only at the end")
    check(chunks[-1]["choices"] == [] and chunks[-1]["usage"]["total_tokens"] > 0, "sse: usage chunk")
    st, _, raw = call(port, "POST", "/v1/chat/completions", chat("hi", stream=True))
    check(all("usage" not in json.loads(e) for e in sse_events(raw)[:-1]), "sse: no usage chunk unless asked")

    # --- interval honoured: events arrive one by one
    c = conn(port)
    t0 = time.monotonic()
    c.request("POST", "/v1/chat/completions",
              body=json.dumps(chat("pace [[mock interval_ms=200 chunks=3]]", stream=True)),
              headers={"content-type": "application/json"})
    r = c.getresponse()
    times = []
    while True:
        line = r.readline()
        if not line:
            break
        if line.startswith(b"data: "):
            times.append(time.monotonic() - t0)
    c.close()
    check(len(times) == 5, "pace: 3 content + finish + [DONE] events (got %d)" % len(times))
    check(times and times[0] < 0.15, "pace: first chunk at once (%.3fs)" % (times[0] if times else -1))
    check(times and times[-1] - times[0] >= 0.7, "pace: last chunk ~800ms after the first (%.3fs)"
          % (times[-1] - times[0] if times else -1))

    # --- latency
    t0 = time.monotonic()
    st, _, _ = call(port, "POST", "/v1/chat/completions", chat("slow"), headers={"x-mock": "latency_ms=300"})
    check(st == 200 and time.monotonic() - t0 >= 0.28, "latency_ms via x-mock header")

    # --- tool call, JSON and stream
    st, _, raw = call(port, "POST", "/v1/chat/completions", chat("weather? [[mock tool=get_weather]]"))
    ch = json.loads(raw)["choices"][0]
    tc = ch["message"].get("tool_calls") or [{}]
    check(ch["finish_reason"] == "tool_calls" and tc[0].get("id", "").startswith("call_")
          and tc[0].get("type") == "function" and tc[0]["function"]["name"] == "get_weather"
          and json.loads(tc[0]["function"]["arguments"]) == {"city": "Paris"}, "tool: message.tool_calls shape")
    st, _, raw = call(port, "POST", "/v1/chat/completions", chat("weather? [[mock tool=get_weather]]", stream=True))
    chunks = [json.loads(e) for e in sse_events(raw)[:-1]]
    deltas = [c["choices"][0]["delta"].get("tool_calls") for c in chunks if c["choices"]]
    first = deltas[0][0]
    args = "".join(d[0]["function"]["arguments"] for d in deltas if d)
    check(first["index"] == 0 and first["id"].startswith("call_") and first["type"] == "function"
          and first["function"]["name"] == "get_weather", "tool stream: first delta has index/id/type/name")
    check(len([d for d in deltas if d]) >= 3 and json.loads(args) == {"city": "Paris"},
          "tool stream: arguments in pieces")
    check(chunks[-1]["choices"][0]["finish_reason"] == "tool_calls", "tool stream: finish_reason tool_calls")
    body = {"model": "m", "messages": [
        {"role": "user", "content": "weather? [[mock tool=get_weather]]"},
        {"role": "assistant", "content": None, "tool_calls": [tc[0]]},
        {"role": "tool", "tool_call_id": tc[0].get("id"), "content": "sunny"}]}
    st, _, raw = call(port, "POST", "/v1/chat/completions", body)
    check(json.loads(raw)["choices"][0]["finish_reason"] == "stop", "tool: answers in text after the tool result")

    # --- simulated errors, bad input
    st, _, raw = call(port, "POST", "/v1/chat/completions", chat("[[mock status=500]]"))
    check(st == 500 and is_error_shape(raw, "server_error"), "status=500: OpenAI error shape")
    st, _, raw = call(port, "POST", "/v1/chat/completions", chat("x"), headers={"x-mock": "status=429"})
    check(st == 429 and is_error_shape(raw, "rate_limit_error"), "status=429 via header")
    st, _, raw = call(port, "POST", "/v1/chat/completions", b"{not json")
    check(st == 400 and is_error_shape(raw, "invalid_request_error"), "invalid JSON: 400 error shape")
    st, _, raw = call(port, "POST", "/v1/chat/completions", chat("[[mock nonsense=1]]"))
    check(st == 400 and "nonsense" in json.loads(raw)["error"]["message"], "unknown directive: 400")
    st, _, raw = call(port, "GET", "/v1/nowhere")
    check(st == 404 and is_error_shape(raw), "unknown path: 404 error shape")

    # --- echo (UTF-8 kept whole across pieces), bytes
    text = "héllo wörld ✓ [[mock echo=1 chunks=7]]"
    st, _, raw = call(port, "POST", "/v1/chat/completions", chat(text, stream=True))
    pieces = [json.loads(e)["choices"][0]["delta"].get("content", "") for e in sse_events(raw)[:-1]]
    check("".join(p or "" for p in pieces) == text, "echo=1: last user message verbatim, streamed")
    st, _, raw = call(port, "POST", "/v1/chat/completions", chat("[[mock bytes=1000]]"))
    check(len(json.loads(raw)["choices"][0]["message"]["content"].encode()) == 1000, "bytes=1000")

    # --- broken streams
    st, _, raw = call(port, "POST", "/v1/chat/completions", chat("[[mock malformed_sse=1]]", stream=True))
    ev = sse_events(raw)
    bad = 0
    for e in ev[1:-1]:
        try:
            json.loads(e)
        except ValueError:
            bad += 1
    check(json.loads(ev[0])["object"] == "chat.completion.chunk" and bad >= 1, "malformed_sse=1: garbage after chunk 1")
    s = socket.create_connection(("127.0.0.1", port), timeout=5)
    body = json.dumps(chat("[[mock close_after=2]]", stream=True)).encode()
    s.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
              b"Content-Length: %d\r\n\r\n" % len(body) + body)
    got = b""
    while True:
        b = s.recv(65536)
        if not b:
            break
        got += b
    s.close()
    check(got.count(b"data: {") == 2 and b"[DONE]" not in got and b"finish_reason\":\"stop" not in got
          and not got.endswith(b"0\r\n\r\n"), "close_after=2: two chunks then the connection drops")
    t0 = time.monotonic()
    try:
        call(port, "POST", "/v1/chat/completions", chat("[[mock hang=1]]"), timeout=0.5)
        hung = False
    except (socket.timeout, TimeoutError):
        hung = True
    check(hung and time.monotonic() - t0 < 2, "hang=1: no answer until the client gives up")

    # --- embeddings, models
    st, _, raw = call(port, "POST", "/v1/embeddings", {"model": "text-embedding-3-small", "input": ["a", "b"]})
    j = json.loads(raw)
    check(st == 200 and j["object"] == "list" and len(j["data"]) == 2 and j["data"][1]["index"] == 1
          and len(j["data"][0]["embedding"]) == 8 and j["usage"]["prompt_tokens"] > 0, "embeddings shape")
    st, _, raw = call(port, "GET", "/v1/models")
    j = json.loads(raw)
    check(st == 200 and j["object"] == "list" and all(m["object"] == "model" for m in j["data"]), "models shape")

    # --- request log and stats
    st, _, raw = call(port, "DELETE", "/_mock/requests")
    call(port, "POST", "/v1/chat/completions", chat("logged"), headers={"authorization": "Bearer sk-seen-1"})
    call(port, "GET", "/v1/models", headers={"x-extra": "2"})
    st, _, raw = call(port, "GET", "/_mock/requests")
    log = json.loads(raw)["data"]
    check(len(log) == 2 and log[0]["method"] == "POST" and log[0]["path"] == "/v1/chat/completions"
          and log[1]["path"] == "/v1/models", "request log: most recent last")
    check(log[0]["headers"].get("authorization") == "Bearer sk-seen-1", "request log: records Authorization")
    check(json.loads(log[0]["body"])["messages"][0]["content"] == "logged", "request log: records the body")
    st, _, raw = call(port, "GET", "/_mock/stats")
    check(st == 200 and json.loads(raw)["requests"] >= 20, "stats: request total")

    # --- --expect-key (flag and env)
    _, kport = start("--expect-key", "sk-real-42")
    st, _, raw = call(kport, "POST", "/v1/chat/completions", chat("x"))
    e = json.loads(raw).get("error", {})
    check(st == 401 and e.get("code") == "invalid_api_key" and is_error_shape(raw), "expect-key: 401 without key")
    st, _, raw = call(kport, "POST", "/v1/chat/completions", chat("x"), headers={"authorization": "Bearer sk-wrong"})
    # echoed in full on purpose (OpenAI echoes a masked form): gateways must not pass it on
    check(st == 401 and b"sk-wrong" in raw and b"sk-real-42" not in raw,
          "expect-key: 401 with a wrong key names the refused key, never the expected one")
    st, _, _ = call(kport, "POST", "/v1/chat/completions", chat("x"), headers={"authorization": "Bearer sk-real-42"})
    check(st == 200, "expect-key: 200 with the key")
    env = dict(os.environ, MOCK_EXPECT_KEY="sk-env-7")
    _, eport = start("--record", "0", env=env)
    st, _, _ = call(eport, "GET", "/v1/models", headers={"authorization": "Bearer sk-env-7"})
    st2, _, _ = call(eport, "GET", "/v1/models")
    check(st == 200 and st2 == 401, "expect-key: from MOCK_EXPECT_KEY")
    st, _, raw = call(eport, "GET", "/_mock/requests")
    check(json.loads(raw)["data"] == [], "--record 0: nothing recorded")

    # --- HTTPS (and plain HTTP on the same port) with a throwaway certificate
    crt, key = os.path.join(tmp, "mock.crt"), os.path.join(tmp, "mock.key")
    r = subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", key, "-out", crt,
                        "-days", "1", "-subj", "/CN=localhost",
                        "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1"], capture_output=True)
    check(r.returncode == 0, "openssl: self-signed certificate")
    _, tport = start("--tls-cert", crt, "--tls-key", key)
    ctx = ssl.create_default_context(cafile=crt)
    st, _, raw = call(tport, "POST", "/v1/chat/completions", chat("over tls"), tls_ctx=ctx)
    check(st == 200 and json.loads(raw)["object"] == "chat.completion", "https: chat completion (verified cert)")
    st, _, raw = call(tport, "POST", "/v1/chat/completions", chat("tls", stream=True), tls_ctx=ctx)
    check(st == 200 and sse_events(raw)[-1] == "[DONE]", "https: stream")
    st, _, _ = call(tport, "GET", "/v1/models")
    check(st == 200, "http still served on the https port")


if __name__ == "__main__":
    main()
