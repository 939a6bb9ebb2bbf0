"""Every API dialect through the same flow (issue 7): Anthropic /v1/messages with the official
Anthropic SDK, OpenAI /v1/responses and /v1/embeddings with the OpenAI SDK, Azure deployments;
errors in each API's own shape; request hygiene (what reaches the provider) and SSRF checks on
provider base URLs."""

import json
import socket

import anthropic
import openai
import pytest

from helpers import header, marker, mock_requests_with, wait_mock_request
from lkstack import AZURE_MODEL, CLAUDE_MODEL, MODEL, http


def _msg(text):
    return [{"role": "user", "content": text}]


def _audit(stack, rid):
    return stack.wait_closing_audit(rid)


# ---------------------------------------------------------------- Anthropic messages

def test_anthropic_message_not_streamed(stack):
    m = marker()
    raw = stack.anthropic().messages.with_raw_response.create(
        model=CLAUDE_MODEL, max_tokens=64, messages=_msg(f"hi {m}"))
    msg = raw.parse()
    assert msg.type == "message" and msg.content[0].type == "text"
    assert msg.content[0].text == "Hello from lumkey-mock"
    assert msg.usage.input_tokens > 0 and msg.usage.output_tokens > 0
    assert msg._request_id == raw.headers["x-request-id"]  # the SDK reads request-id
    row = _audit(stack, raw.headers["x-request-id"])
    assert row["endpoint"] == "messages" and row["http_status"] == 200
    assert row["prompt_tokens"] == msg.usage.input_tokens
    assert row["completion_tokens"] == msg.usage.output_tokens
    assert row["total_tokens"] == msg.usage.input_tokens + msg.usage.output_tokens
    req = wait_mock_request(stack, m)
    assert req["path"] == "/v1/messages"


def test_anthropic_stream_text_and_usage(stack):
    m = marker()
    client = stack.anthropic()
    with client.messages.stream(model=CLAUDE_MODEL, max_tokens=64,
                                messages=_msg(f"[[mock chunks=5]] {m}")) as s:
        texts = list(s.text_stream)
        final = s.get_final_message()
        rid = s.response.headers["x-request-id"]
    assert len(texts) == 5
    assert "".join(texts) == "Hello from lumkey-mock. This"
    assert final.stop_reason == "end_turn"
    row = _audit(stack, rid)
    assert row["stream"] is True and row["http_status"] == 200
    assert row["prompt_tokens"] == final.usage.input_tokens
    assert row["completion_tokens"] == final.usage.output_tokens


def test_anthropic_stream_tool_use(stack):
    client = stack.anthropic()
    tools = [{"name": "get_weather", "description": "weather", "input_schema": {
        "type": "object", "properties": {"city": {"type": "string"}}}}]
    with client.messages.stream(model=CLAUDE_MODEL, max_tokens=64, tools=tools,
                                messages=_msg(f"[[mock tool=get_weather chunks=4]] {marker()}")) as s:
        kinds = [e.type for e in s]
        final = s.get_final_message()
    assert "input_json" in kinds or "content_block_delta" in kinds
    assert final.stop_reason == "tool_use"
    block = final.content[0]
    assert block.type == "tool_use" and block.name == "get_weather" and block.input == {"city": "Paris"}


def test_anthropic_tool_use_not_streamed(stack):
    msg = stack.anthropic().messages.create(model=CLAUDE_MODEL, max_tokens=64,
                                            messages=_msg(f"[[mock tool=lookup]] {marker()}"))
    assert msg.stop_reason == "tool_use" and msg.content[0].input == {"city": "Paris"}


def test_anthropic_bearer_auth_token(stack):
    import anthropic as a
    c = a.Anthropic(base_url=stack.api_base, auth_token=stack.key, api_key=None, max_retries=0)
    msg = c.messages.create(model=CLAUDE_MODEL, max_tokens=16, messages=_msg("hi"))
    assert msg.content[0].text


def test_anthropic_401_is_authentication_error_not_retried(stack):
    with pytest.raises(anthropic.AuthenticationError) as ei:
        stack.anthropic(api_key="lk_live_notarealkey", max_retries=2).messages.create(
            model=CLAUDE_MODEL, max_tokens=16, messages=_msg("hi"))
    r = ei.value.response
    assert r.status_code == 401
    body = r.json()
    assert body["type"] == "error" and body["error"]["type"] == "authentication_error"
    assert body["error"]["message"]
    assert r.headers.get("x-should-retry") == "false"
    assert r.headers.get("request-id")


def test_anthropic_missing_key_is_authentication_error(stack):
    st, _, body = http("POST", stack.api_base + "/v1/messages", json.dumps(
        {"model": CLAUDE_MODEL, "max_tokens": 8, "messages": _msg("hi")}).encode(),
        {"content-type": "application/json", "anthropic-version": "2023-06-01"})
    assert st == 401
    assert json.loads(body)["error"]["type"] == "authentication_error"


def test_anthropic_404_unknown_model(stack):
    with pytest.raises(anthropic.NotFoundError) as ei:
        stack.anthropic().messages.create(model="claude-nope", max_tokens=16, messages=_msg("hi"))
    assert ei.value.response.json()["error"]["type"] == "not_found_error"


def test_anthropic_403_model_not_allowed(stack):
    k = json.loads(stack.ctl("keys", "create", "--name", "only-gpt", "--models", MODEL,
                             "--format", "json").stdout)["key"]
    with pytest.raises(anthropic.PermissionDeniedError) as ei:
        stack.anthropic(api_key=k).messages.create(model=CLAUDE_MODEL, max_tokens=16, messages=_msg("hi"))
    assert ei.value.response.json()["error"]["type"] == "permission_error"
    assert ei.value.response.headers.get("x-should-retry") == "false"


def test_anthropic_upstream_500_in_anthropic_shape(stack):
    with pytest.raises(anthropic.InternalServerError) as ei:
        stack.anthropic().messages.create(model=CLAUDE_MODEL, max_tokens=16,
                                          messages=_msg(f"[[mock status=500]] {marker()}"))
    body = ei.value.response.json()
    assert body["type"] == "error" and body["error"]["type"] == "api_error"


def test_anthropic_request_to_openai_provider_refused_in_anthropic_shape(stack):
    m = marker()
    with pytest.raises(anthropic.BadRequestError) as ei:
        stack.anthropic().messages.create(model=MODEL, max_tokens=16, messages=_msg(m))
    body = ei.value.response.json()
    assert body["error"]["type"] == "invalid_request_error" and "does not offer" in body["error"]["message"]
    assert not mock_requests_with(stack, m)


def test_chat_request_to_anthropic_provider_refused_in_openai_shape(stack):
    m = marker()
    with pytest.raises(openai.BadRequestError) as ei:
        stack.client().chat.completions.create(model=CLAUDE_MODEL, messages=_msg(m))
    assert ei.value.response.json()["error"]["code"] == "provider_api_mismatch"
    assert not mock_requests_with(stack, m)


def test_anthropic_headers_upstream(stack):
    """Only the provider credential and the allowlisted headers reach the provider."""
    m = marker()
    body = json.dumps({"model": CLAUDE_MODEL, "max_tokens": 8, "messages": _msg(m)}).encode()
    st, _, _ = http("POST", stack.api_base + "/v1/messages", body, {
        "content-type": "application/json", "x-api-key": stack.key, "anthropic-version": "2023-06-01",
        "anthropic-beta": "tools-2024-04-04", "cookie": "session=client-cookie",
        "api-key": "client-azure-key", "x-forwarded-host": "evil.example",
        "traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
        "tracestate": "vendor=1", "openai-beta": "assistants=v2"})
    assert st == 200
    req = wait_mock_request(stack, m)
    hdrs = {k.lower() for k in req["headers"]}
    presented_ok = header(req, "x-api-key") == stack.provider_credential
    assert presented_ok, "the provider credential is not the x-api-key upstream"
    assert header(req, "anthropic-version") == "2023-06-01"
    assert header(req, "anthropic-beta") == "tools-2024-04-04"
    assert header(req, "tracestate") == "vendor=1"
    assert header(req, "traceparent") == "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    for forbidden in ("authorization", "cookie", "api-key", "x-forwarded-host", "openai-beta"):
        assert forbidden not in hdrs, f"{forbidden} reached the provider"
    assert header(req, "host") == stack.mock_addr


def test_traceparent_generated_and_audited(stack):
    m = marker()
    raw = stack.client().chat.completions.with_raw_response.create(model=MODEL, messages=_msg(m))
    req = wait_mock_request(stack, m)
    tp = header(req, "traceparent")
    assert tp and len(tp) == 55 and tp.startswith("00-")
    assert header(req, "authorization") != f"Bearer {stack.key}"  # the Lumkey key never goes upstream
    row = _audit(stack, raw.headers["x-request-id"])
    assert row["trace_id"] == tp[3:35]


def test_default_anthropic_version_sent(stack):
    m = marker()
    body = json.dumps({"model": CLAUDE_MODEL, "max_tokens": 8, "messages": _msg(m)}).encode()
    st, _, _ = http("POST", stack.api_base + "/v1/messages", body,
                    {"content-type": "application/json", "authorization": f"Bearer {stack.key}"})
    assert st == 200
    assert header(wait_mock_request(stack, m), "anthropic-version") == "2023-06-01"


# ---------------------------------------------------------------- OpenAI Responses, embeddings

def test_responses_not_streamed(stack):
    m = marker()
    raw = stack.client().responses.with_raw_response.create(model=MODEL, input=f"hi {m}")
    r = raw.parse()
    assert r.output_text == "Hello from lumkey-mock"
    row = _audit(stack, raw.headers["x-request-id"])
    assert row["endpoint"] == "responses"
    assert row["prompt_tokens"] == r.usage.input_tokens and row["total_tokens"] == r.usage.total_tokens
    assert wait_mock_request(stack, m)["path"] == "/v1/responses"


def test_responses_streamed_typed_events(stack):
    raw = stack.client().responses.with_raw_response.create(
        model=MODEL, input=f"[[mock chunks=4]] {marker()}", stream=True)
    events = list(raw.parse())
    types = [e.type for e in events]
    assert types[0] == "response.created" and types[-1] == "response.completed"
    assert types.count("response.output_text.delta") == 4
    assert [e.sequence_number for e in events] == list(range(len(events)))
    text = "".join(e.delta for e in events if e.type == "response.output_text.delta")
    assert text == "Hello from lumkey-mock."
    row = _audit(stack, raw.headers["x-request-id"])
    assert row["stream"] is True
    assert row["total_tokens"] == events[-1].response.usage.total_tokens


def test_responses_function_call_stream(stack):
    events = list(stack.client().responses.create(
        model=MODEL, input=f"[[mock tool=get_weather]] {marker()}", stream=True))
    args = "".join(e.delta for e in events if e.type == "response.function_call_arguments.delta")
    assert json.loads(args) == {"city": "Paris"}
    assert events[-1].response.output[0].name == "get_weather"


def test_embeddings(stack):
    raw = stack.client().embeddings.with_raw_response.create(model=MODEL, input=["a", "b"])
    e = raw.parse()
    assert len(e.data) == 2 and len(e.data[0].embedding) == 8
    row = _audit(stack, raw.headers["x-request-id"])
    assert row["endpoint"] == "embeddings" and row["prompt_tokens"] == e.usage.prompt_tokens


def test_responses_refusal_in_openai_shape(stack):
    with pytest.raises(openai.AuthenticationError) as ei:
        stack.client(api_key="lk_live_bad").responses.create(model=MODEL, input="x")
    assert ei.value.response.headers.get("x-should-retry") == "false"


# ---------------------------------------------------------------- Azure deployments

def test_azure_deployment_path_and_api_key_header(stack):
    m = marker()
    out = stack.client().chat.completions.create(model=AZURE_MODEL, messages=_msg(m))
    assert out.choices[0].message.content
    req = wait_mock_request(stack, m)
    assert req["path"].startswith(f"/openai/deployments/{AZURE_MODEL}/chat/completions?api-version=")
    ok = header(req, "api-key") == stack.provider_credential
    assert ok and header(req, "authorization") is None


def test_azure_embeddings(stack):
    e = stack.client().embeddings.create(model=AZURE_MODEL, input="hi")
    assert len(e.data) == 1


# ---------------------------------------------------------------- upstream redirects

def test_upstream_redirect_not_followed(stack):
    m = marker()
    with pytest.raises(openai.APIStatusError) as ei:
        stack.client().chat.completions.create(model=MODEL, messages=_msg(f"[[mock status=302]] {m}"))
    assert ei.value.status_code == 502
    assert ei.value.response.json()["error"]["code"] == "upstream_redirect"
    assert len(mock_requests_with(stack, m)) == 1


# ---------------------------------------------------------------- smuggling, raw sockets

def _raw(stack, head: bytes, body: bytes = b"") -> tuple[int, bytes]:
    host, port = stack.api_addr.rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=10) as s:
        s.sendall(head + body)
        data = b""
        while True:
            try:
                chunk = s.recv(65536)
            except socket.timeout:
                break
            if not chunk:
                break
            data += chunk
            if b"\r\n\r\n" in data:
                h, _, rest = data.partition(b"\r\n\r\n")
                cl = [ln for ln in h.split(b"\r\n") if ln.lower().startswith(b"content-length:")]
                if cl and len(rest) >= int(cl[0].split(b":")[1]):
                    break
    status = int(data.split(b" ", 2)[1]) if data.startswith(b"HTTP/") else 0
    return status, data


# What answers each shape: h2o's HTTP/1 parser refuses some before any handler runs (plain-text 400:
# it cannot be put in an API's shape without patching h2o), the edge's raw-head check
# (edge_http_framing_error) refuses the rest in the API's own error shape. Either way: 400, nothing
# reaches the provider.
SMUGGLING = {
    # h2o decodes the chunked body first (TE wins), and our JSON body is not chunked
    "cl_and_te": (b"Content-Length: {n}\r\nTransfer-Encoding: chunked\r\n", False, "h2o"),
    # a well-formed chunked body with a Content-Length too: h2o accepts it, the edge refuses
    "cl_and_te_valid_chunks": (b"Content-Length: {n}\r\nTransfer-Encoding: chunked\r\n", True, "edge"),
    "dup_cl": (b"Content-Length: {n}\r\nContent-Length: {n}\r\n", False, "edge"),
    "conflicting_cl": (b"Content-Length: {n}\r\nContent-Length: 5\r\n", False, "edge"),
    "te_chunkedx": (b"Transfer-Encoding: chunkedx\r\nContent-Length: {n}\r\n", False, "h2o"),
    "te_chunkedx_only": (b"Transfer-Encoding: chunkedx\r\n", False, "h2o"),
    "te_gzip_chunked_and_cl": (b"Transfer-Encoding: gzip, chunked\r\nContent-Length: {n}\r\n", False, "h2o"),
    "cr_in_value": (b"Content-Length: {n}\r\nX-Test: a\rb\r\n", False, "h2o"),
    "nul_in_value": (b"Content-Length: {n}\r\nX-Test: a\x00b\r\n", False, "h2o"),
    "lf_only_in_value": (b"Content-Length: {n}\r\nX-Test: a\nTransfer-Encoding: chunked\r\n", False, "h2o"),
    "te_dup": (b"Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n", True, "edge"),
}


@pytest.mark.parametrize("case", sorted(SMUGGLING))
@pytest.mark.parametrize("path", ["/v1/messages", "/v1/chat/completions"])
def test_smuggling_shapes_refused(stack, case, path):
    m = marker()
    model = CLAUDE_MODEL if path == "/v1/messages" else MODEL
    body = json.dumps({"model": model, "max_tokens": 8, "messages": _msg(m)}).encode()
    extra, chunked, who = SMUGGLING[case]
    if chunked:
        body = b"%x\r\n" % len(body) + body + b"\r\n0\r\n\r\n"
    extra = extra.replace(b"{n}", str(len(body)).encode())
    head = (f"POST {path} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {stack.key}\r\n"
            "Content-Type: application/json\r\nanthropic-version: 2023-06-01\r\n").encode() + extra + b"\r\n"
    status, data = _raw(stack, head, body)
    assert status == 400, f"{case}: answered {status}"
    _, _, rest = data.partition(b"\r\n\r\n")
    if who == "edge":
        doc = json.loads(rest)
        if path == "/v1/messages":
            assert doc["type"] == "error" and doc["error"]["type"] == "invalid_request_error"
        else:
            assert doc["error"]["code"] == "malformed_request"
    else:
        assert not rest.startswith(b"{"), f"{case}: expected h2o's own refusal, got {rest[:80]!r}"
    assert not mock_requests_with(stack, m), f"{case}: the provider received the request"


# ---------------------------------------------------------------- SSRF

SSRF_REFUSED_ALWAYS = [
    "http://169.254.169.254/v1", "http://[fd00:ec2::254]/v1", "http://[::ffff:127.0.0.1]/v1",
    "http://2130706433/v1", "http://0x7f.1/v1", "http://017700000001/v1", "http://127.1/v1",
    "http://evil@127.0.0.1/v1", "ftp://api.example.com/v1", "file:///etc/passwd", "gopher://127.0.0.1/",
    "http://0.0.0.0/v1", "http://[::1]/v1", "http://[fe80::1]/v1",
]
SSRF_PRIVATE = ["http://127.0.0.1:9/v1", "http://10.1.2.3/v1", "http://192.168.1.1/v1", "http://172.16.0.1/v1",
                "http://localhost/v1", "http://[fd12::1]/v1", "http://100.64.0.1/v1"]


def _create_provider(stack, url, allow_private=False):
    body = {"name": "ssrf-" + marker(), "kind": "openai", "base_url": url, "api_key": "sk-ssrf-test"}
    if allow_private:
        body["allow_private"] = True
    st, _, out = http("POST", stack.admin_base + "/admin/v1/providers", json.dumps(body).encode(),
                      {"authorization": f"Bearer {stack.admin_token}", "content-type": "application/json"})
    return st, out


@pytest.mark.parametrize("url", SSRF_REFUSED_ALWAYS)
def test_ssrf_base_url_refused_even_when_private_allowed(stack, url):
    for allow in (False, True):
        st, out = _create_provider(stack, url, allow)
        assert st == 400, f"{url} allow_private={allow}: {st} {out[:200]!r}"


@pytest.mark.parametrize("url", SSRF_PRIVATE)
def test_ssrf_private_base_url_needs_allow_private(stack, url):
    st, _ = _create_provider(stack, url)
    assert st == 400
    st, _ = _create_provider(stack, url, allow_private=True)
    assert st in (200, 201)


def test_base_url_in_body_or_header_is_ignored(stack):
    """A client cannot point the provider key elsewhere: api_base / base_url are not read."""
    m = marker()
    st, _, _ = stack.chat_raw({"model": MODEL, "messages": _msg(m), "api_base": "http://169.254.169.254/",
                               "base_url": "http://127.0.0.1:1/"},
                              headers={"x-base-url": "http://127.0.0.1:1/", "x-api-base": "http://127.0.0.1:1/"})
    assert st == 200
    req = wait_mock_request(stack, m)
    assert req["path"] == "/v1/chat/completions"
    assert header(req, "x-base-url") is None and header(req, "x-api-base") is None


# ---------------------------------------------------------------- mid-stream errors, each API's shape

def test_anthropic_stream_cut_ends_with_error_event(stack):
    m = marker()
    raw = stack.anthropic().messages.with_raw_response.create(
        model=CLAUDE_MODEL, max_tokens=16, messages=_msg(f"[[mock close_after=4]] {m}"), stream=True)
    seen = []
    with pytest.raises(anthropic.APIError) as ei:
        for ev in raw.parse():
            seen.append(ev.type)
    assert seen[:2] == ["message_start", "content_block_start"]
    assert "message_stop" not in seen
    assert any(w in str(ei.value) for w in ("closed the stream", "failed", "cut off"))
    row = stack.wait_closing_audit(raw.headers["x-request-id"])
    assert row["error_code"] in ("upstream_stream_truncated", "upstream_stream_error", "upstream_malformed_stream")


def test_responses_stream_cut_ends_with_error_event(stack):
    raw = stack.client().responses.with_raw_response.create(
        model=MODEL, input=f"[[mock close_after=3]] {marker()}", stream=True)
    seen = []
    with pytest.raises(openai.APIError):
        for ev in raw.parse():
            seen.append(ev.type)
    assert seen and seen[0] == "response.created" and "response.completed" not in seen
    row = stack.wait_closing_audit(raw.headers["x-request-id"])
    assert row["error_code"] in ("upstream_stream_truncated", "upstream_stream_error", "upstream_malformed_stream")


def test_anthropic_stream_error_event_raw_shape(stack):
    """The last event is `event: error` with Anthropic's error object."""
    body = json.dumps({"model": CLAUDE_MODEL, "max_tokens": 8, "stream": True,
                       "messages": _msg(f"[[mock close_after=2]] {marker()}")}).encode()
    st, _, data = http("POST", stack.api_base + "/v1/messages", body,
                       {"content-type": "application/json", "x-api-key": stack.key,
                        "anthropic-version": "2023-06-01"})
    assert st == 200
    events = [e for e in data.decode().split("\n\n") if e.strip()]
    last = events[-1].split("\n")
    assert last[0] == "event: error"
    err = json.loads(last[1][len("data: "):])
    assert err["type"] == "error" and err["error"]["type"] == "api_error" and err["error"]["message"]


# ---------------------------------------------------------------- relayed as they arrive

@pytest.mark.parametrize("api", ["messages", "responses"])
def test_typed_stream_events_relayed_as_they_arrive(stack, api):
    """The mock paces its events 300 ms apart; the client sees them spread out, not in one burst."""
    import time
    directive = f"[[mock chunks=3 interval_ms=300]] {marker()}"
    stamps = []
    if api == "messages":
        with stack.anthropic().messages.stream(model=CLAUDE_MODEL, max_tokens=16, messages=_msg(directive)) as s:
            for ev in s:
                if ev.type == "content_block_delta":
                    stamps.append(time.monotonic())
    else:
        for ev in stack.client().responses.create(model=MODEL, input=directive, stream=True):
            if ev.type == "response.output_text.delta":
                stamps.append(time.monotonic())
    assert len(stamps) == 3
    assert stamps[-1] - stamps[0] >= 0.45, f"deltas arrived within {stamps[-1] - stamps[0]:.3f}s"
