"""Bad input and failing providers: the right error in OpenAI's shape, an audit row for every
request, and no process harmed."""

import json

import openai
import pytest

from helpers import error_body, marker, mock_requests_with, sdk_error_parts
from lkstack import DEAD_MODEL, MODEL, http

try:  # the transport errors the SDK lets through while a stream is read
    import httpx2 as _httpx
except ImportError:  # older SDKs
    import httpx as _httpx

STREAM_ERRORS = (openai.APIError, _httpx.HTTPError, ValueError)


def _alive_and_serving(stack):
    dead = stack.dead_processes()
    assert not dead, f"processes died: {dead}"
    ok = stack.client().chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "still there?"}])
    assert ok.choices[0].message.content


def test_upstream_500_is_relayed_and_audited(stack):
    with pytest.raises(openai.InternalServerError) as ei:
        stack.client().chat.completions.create(
            model=MODEL, messages=[{"role": "user", "content": f"[[mock status=500]] {marker()}"}])
    status, headers, body = sdk_error_parts(ei.value)
    assert status == 500
    error_body(body)
    row = stack.wait_closing_audit(headers["x-request-id"])
    assert row["kind"] == "request.completed"
    assert row["upstream_status"] == 500
    assert row["http_status"] == 500
    assert row["error_code"]


def test_upstream_429_is_a_rate_limit_error(stack):
    with pytest.raises(openai.RateLimitError) as ei:
        stack.client().chat.completions.create(
            model=MODEL, messages=[{"role": "user", "content": f"[[mock status=429]] {marker()}"}])
    status, headers, body = sdk_error_parts(ei.value)
    assert status == 429
    error_body(body)
    row = stack.wait_closing_audit(headers["x-request-id"])
    assert row["upstream_status"] == 429


def test_malformed_json_is_400(stack):
    m = marker()
    st, headers, body = stack.chat_raw(b'{"model": "' + MODEL.encode() + b'", "messages": [' + m.encode())
    assert st == 400
    err = error_body(body)
    assert err["type"] == "invalid_request_error"
    assert headers.get("x-should-retry") == "false"
    row = stack.wait_closing_audit(headers["x-request-id"])
    assert row["kind"] == "request.denied" and row["http_status"] == 400
    assert not mock_requests_with(stack, m)


@pytest.mark.parametrize("body", [
    b"[]", b'"just a string"', b'{"messages": [{"role": "user", "content": "no model"}]}',
    b'{"model": 42, "messages": []}', b"",
])
def test_json_that_is_not_a_chat_request_is_400(stack, body):
    st, headers, resp = stack.chat_raw(body)
    assert st == 400, f"{body!r} answered {st}"
    error_body(resp)
    stack.wait_closing_audit(headers["x-request-id"])


def test_body_over_limit_is_413(stack):
    big = "x" * (stack.max_body_bytes + 1024)
    m = marker()
    st, headers, body = stack.chat_raw({"model": MODEL, "messages": [{"role": "user", "content": m + big}]})
    assert st == 413
    error_body(body)
    rid = headers.get("x-request-id")
    assert rid
    row = stack.wait_closing_audit(rid)
    assert row["http_status"] == 413
    assert not mock_requests_with(stack, m)


def test_unknown_model_is_404(stack):
    m = marker()
    with pytest.raises(openai.NotFoundError) as ei:
        stack.client().chat.completions.create(model="no-such-model", messages=[{"role": "user", "content": m}])
    status, headers, body = sdk_error_parts(ei.value)
    assert status == 404
    assert headers.get("x-should-retry") == "false"
    error_body(body)
    row = stack.wait_closing_audit(headers["x-request-id"])
    assert row["kind"] == "request.denied" and row["http_status"] == 404
    assert row["model"] == "no-such-model"
    assert not mock_requests_with(stack, m)


def test_unreachable_upstream_is_a_gateway_error(stack):
    with pytest.raises(openai.APIStatusError) as ei:
        stack.client().chat.completions.create(model=DEAD_MODEL, messages=[{"role": "user", "content": "hello?"}])
    status, headers, body = sdk_error_parts(ei.value)
    assert status in (502, 503, 504), f"unreachable provider answered {status}"
    error_body(body)
    row = stack.wait_closing_audit(headers["x-request-id"])
    assert row["http_status"] == status
    assert row["model"] == DEAD_MODEL
    assert row["error_code"]
    # the dead provider's credential never shows in the answer
    leaked = any(s in body.decode(errors="replace") for s in stack.secrets())
    assert not leaked


def _stream_must_fail(stack, directive):
    raw = stack.client().chat.completions.with_raw_response.create(
        model=MODEL, stream=True, messages=[{"role": "user", "content": f"{directive} {marker()}"}])
    rid = raw.headers.get("x-request-id")
    assert rid, "no x-request-id on a stream"
    got = []
    with pytest.raises(STREAM_ERRORS):
        for chunk in raw.parse():
            got.append(chunk)
    return rid, got


def test_malformed_sse_from_provider_raises_in_sdk(stack):
    rid, _ = _stream_must_fail(stack, "[[mock malformed_sse=1 chunks=4]]")
    row = stack.wait_closing_audit(rid)
    assert row["upstream_status"] == 200
    assert row["error_code"], "a broken stream was audited as a clean success"
    _alive_and_serving(stack)


def test_stream_cut_mid_way_raises_in_sdk(stack):
    rid, got = _stream_must_fail(stack, "[[mock chunks=6 interval_ms=20 close_after=2]]")
    assert len(got) <= 2, f"{len(got)} chunks arrived though the provider sent 2"
    row = stack.wait_closing_audit(rid)
    assert row["error_code"], "a cut stream was audited as a clean success"
    _alive_and_serving(stack)


def test_upstream_error_before_stream_is_an_sdk_status_error(stack):
    with pytest.raises(openai.InternalServerError) as ei:
        s = stack.client().chat.completions.create(
            model=MODEL, stream=True, messages=[{"role": "user", "content": f"[[mock status=503]] {marker()}"}])
        for _ in s:
            pass
    status, headers, body = sdk_error_parts(ei.value)
    assert status == 503
    error_body(body)
    row = stack.wait_closing_audit(headers["x-request-id"])
    assert row["upstream_status"] == 503


def test_wrong_method_and_path(stack):
    st, headers, body = http("GET", stack.openai_base_url + "/chat/completions",
                             headers={"authorization": f"Bearer {stack.key}"})
    assert st in (404, 405)
    error_body(body)
    st, headers, body = http("POST", stack.api_base + "/v1/no/such/endpoint", b"{}",
                             {"authorization": f"Bearer {stack.key}", "content-type": "application/json"})
    assert st == 404
    error_body(body)
    assert headers.get("x-request-id")


def test_health_endpoints(stack):
    for base in (stack.api_base, stack.admin_base):
        for path in ("/livez", "/readyz", "/healthz"):
            st, headers, _ = http("GET", base + path)
            assert st == 200, f"{base}{path} answered {st}"
            assert headers.get("x-request-id"), f"{path} has no x-request-id"


def test_every_request_has_a_distinct_request_id(stack):
    ids = set()
    for _ in range(5):
        raw = stack.client().chat.completions.with_raw_response.create(
            model=MODEL, messages=[{"role": "user", "content": "id?"}])
        ids.add(raw.headers["x-request-id"])
    assert len(ids) == 5


def _raw_http(stack, request: bytes, timeout: float = 10.0) -> bytes:
    """Sends raw bytes to the agent listener; returns what came back until close or timeout."""
    import socket
    host, port = stack.api_addr.split(":")
    with socket.create_connection((host, int(port)), timeout=timeout) as c:
        c.sendall(request)
        data = b""
        try:
            while True:
                b = c.recv(65536)
                if not b:
                    break
                data += b
        except socket.timeout:
            pass
    return data


def _status_line(resp: bytes) -> bytes:
    return resp.split(b"\r\n", 1)[0]


def _status_of(resp: bytes) -> int:
    line = resp.split(b"\r\n", 1)[0].split()
    return int(line[1]) if len(line) > 1 and line[1].isdigit() else 0


def test_chunked_request_body_is_accepted(stack):
    m = marker()
    body = json.dumps({"model": MODEL, "messages": [{"role": "user", "content": m}]}).encode()
    req = (b"POST /v1/chat/completions HTTP/1.1\r\nHost: lumkey\r\nAuthorization: Bearer " + stack.key.encode()
           + b"\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
           + b"%x\r\n" % len(body) + body + b"\r\n0\r\n\r\n")
    resp = _raw_http(stack, req)
    assert _status_of(resp) == 200, f"chunked request answered {_status_line(resp)!r}"
    assert mock_requests_with(stack, m)


def test_duplicate_content_length_is_rejected(stack):
    """Request smuggling: two different Content-Length values must be refused (RFC 9112 6.3), not
    resolved by picking one (a proxy in front could pick the other)."""
    m = marker()
    body = json.dumps({"model": MODEL, "messages": [{"role": "user", "content": m}]}).encode()
    req = (b"POST /v1/chat/completions HTTP/1.1\r\nHost: lumkey\r\nAuthorization: Bearer " + stack.key.encode()
           + b"\r\nContent-Type: application/json\r\nContent-Length: %d\r\nContent-Length: %d\r\n"
           % (len(body), len(body) + 5) + b"Connection: close\r\n\r\n" + body)
    resp = _raw_http(stack, req, timeout=5)
    status = _status_of(resp)
    assert status == 400 or (status == 0 and not resp), \
        f"two different Content-Length values were accepted: {_status_line(resp)!r}"
    assert not mock_requests_with(stack, m), "a request with two Content-Length values reached the provider"


@pytest.mark.parametrize("shape", ["cl+te", "te+te", "folded"])
def test_ambiguous_framing_is_rejected(stack, shape):
    """Request smuggling shapes h2o alone would resolve silently: refused with 400, nothing forwarded."""
    m = marker()
    body = json.dumps({"model": MODEL, "messages": [{"role": "user", "content": m}]}).encode()
    chunked = b"%x\r\n" % len(body) + body + b"\r\n0\r\n\r\n"
    head = (b"POST /v1/chat/completions HTTP/1.1\r\nHost: lumkey\r\nAuthorization: Bearer " + stack.key.encode()
            + b"\r\nContent-Type: application/json\r\n")
    if shape == "cl+te":
        req = head + b"Content-Length: %d\r\nTransfer-Encoding: chunked\r\n\r\n" % len(chunked) + chunked
    elif shape == "te+te":
        req = head + b"Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n" + chunked
    else:
        req = head + b"X-Note: a\r\n folded\r\nContent-Length: %d\r\n\r\n" % len(body) + body
    resp = _raw_http(stack, req, timeout=5)
    status = _status_of(resp)
    assert status == 400 or (status == 0 and not resp), f"{shape} was accepted: {_status_line(resp)!r}"
    assert not mock_requests_with(stack, m), f"a request with {shape} framing reached the provider"


def test_body_cannot_redirect_the_provider(stack):
    """base_url / api_base in the body are not honoured: the call goes to the registered provider only."""
    import socket
    trap = socket.socket()
    trap.bind(("127.0.0.1", 0))
    trap.listen(8)
    trap.setblocking(False)
    try:
        url = "http://127.0.0.1:%d/v1" % trap.getsockname()[1]
        m = marker()
        st, _, _ = stack.chat_raw({"model": MODEL, "base_url": url, "api_base": url, "api_key": "sk-from-body",
                                   "messages": [{"role": "user", "content": m}]})
        assert st == 200
        assert mock_requests_with(stack, m), "the request did not reach the registered provider"
        try:
            conn, _ = trap.accept()
            conn.close()
            raise AssertionError("the edge connected to a base_url taken from the request body")
        except BlockingIOError:
            pass
    finally:
        trap.close()


def test_client_disconnect_mid_stream_is_audited(stack):
    raw = stack.client().chat.completions.with_raw_response.create(
        model=MODEL, stream=True,
        messages=[{"role": "user", "content": f"[[mock chunks=100 interval_ms=100]] {marker()}"}])
    rid = raw.headers["x-request-id"]
    it = iter(raw.parse())
    next(it)
    next(it)
    raw.http_response.close()  # the agent goes away mid-stream
    row = stack.wait_closing_audit(rid, timeout=15)
    assert row["kind"] == "request.completed"
    assert row["error_code"] == "client_closed"
    # well before the 10 s the provider would have streamed for
    assert row["latency_us"] < 5_000_000, f"latency {row['latency_us']} us: the stream ran on after the client left"
    _alive_and_serving(stack)


def test_secrets_absent_from_error_paths(stack):
    """The canary sweep: after the error paths above, no Lumkey log holds a secret."""
    for name in ("edge", "policy", "vault", "approval", "audit"):
        text = (stack.dir / "logs" / f"{name}.log").read_text(errors="replace")
        found = [i for i, s in enumerate(stack.secrets()) if s in text]
        assert not found, f"a secret appears in the {name} log"
    with stack.db().cursor() as cur:
        cur.execute("SELECT t::text AS row FROM audit_events t")
        dump = "\n".join(r["row"] for r in cur.fetchall())
    found = [i for i, s in enumerate(stack.secrets()) if s in dump]
    assert not found, "a secret is stored in audit_events"
    assert json.dumps(stack.mock_requests())  # the mock is still answering
